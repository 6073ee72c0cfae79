//! Local sweeps through the binary: a batch runs N at a time, a crashed batch resumes where each
//! run stopped, Ctrl-C or SIGTERM stops it cleanly (a single task's SIGTERM leaves its run to be
//! resumed), and the report tabulates it; the Kubernetes Job's shape.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{bin, fixtures, stderr};
use loop_runner::journal::{self, Event};

/// Writes a sweep file of penguins and breast_cancer × seeds 1, 2 into `dir`.
fn sweep_file(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "tasks = [\"{0}/penguins/task.toml\", \"{0}/breast_cancer/task.toml\"]\nseeds = [1, 2]\nvalidation = \"holdout\"\n{extra}",
            fixtures().display()
        ),
    )
    .unwrap();
    path
}

fn events(run: &Path) -> Vec<Event> {
    journal::read(&run.join("journal.jsonl")).unwrap().into_iter().map(|e| e.event).collect()
}

fn manifest_runs(manifest: &Path) -> Vec<PathBuf> {
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
    m["runs"].as_array().unwrap().iter().map(|r| PathBuf::from(r["run_dir"].as_str().unwrap())).collect()
}

#[test]
fn a_crashed_sweep_resumes_each_run_where_it_stopped_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let file = sweep_file(dir.path(), "night", "budget = \"3m\"\niterations = 3\n");
    let runs = dir.path().join("runs");
    // Every run crashes at its 10th journal entry (after its first iteration).
    let o = bin()
        .args(["sweep", "--jobs", "2", "--runs-dir"])
        .arg(&runs)
        .arg(&file)
        .env("LOOP_RUNNER_FAULT", "journal:10")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let manifest = runs.join("night-manifest.json");
    assert!(manifest.is_file(), "the manifest is written before anything runs");
    let dirs = manifest_runs(&manifest);
    assert_eq!(dirs.len(), 4);
    for run in &dirs {
        let ev = events(run);
        assert!(ev.iter().any(|e| matches!(e, Event::RunStarted { .. })), "{}", run.display());
        assert!(!ev.iter().any(|e| matches!(e, Event::RunFinished { .. })), "{}", run.display());
    }
    let status = String::from_utf8_lossy(&bin().arg("sweep-status").arg(&manifest).output().unwrap().stdout)
        .to_string();
    assert_eq!(status.matches("unfinished").count(), 4, "{status}");

    // The same command again resumes every run; a third time finds nothing to do.
    let o = bin().args(["sweep", "--jobs", "2", "--runs-dir"]).arg(&runs).arg(&file).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for run in &dirs {
        let ev = events(run);
        let sessions = ev.iter().filter(|e| matches!(e, Event::Session { .. })).count();
        assert_eq!(sessions, 2, "{}: started, then resumed", run.display());
        assert!(ev.iter().any(|e| matches!(e, Event::RunFinished { .. })));
        assert!(run.join("report/summary.json").is_file());
    }
    let o = bin().args(["sweep", "--jobs", "2", "--runs-dir"]).arg(&runs).arg(&file).output().unwrap();
    assert!(o.status.success());
    assert_eq!(stderr(&o).matches("finished already").count(), 4, "{}", stderr(&o));

    let o = bin().arg("sweep-report").arg(&manifest).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let md = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(md.contains("| penguins | builtin | 2/2 | accuracy |"), "{md}");
    assert!(md.contains("| breast_cancer | builtin | 2/2 | roc_auc |"), "{md}");
    assert!(md.contains(" ± "), "{md}");
    let csv = std::fs::read_to_string(runs.join("night-report.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    for (line, run) in csv.lines().skip(1).zip(&dirs) {
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("report/summary.json")).unwrap()).unwrap();
        let test = line.split(',').nth(9).unwrap();
        assert_eq!(test.parse::<f64>().ok(), summary["test_score"].as_f64(), "{line}");
    }
}

#[test]
fn the_same_sweep_file_changed_is_refused_and_bad_indexes_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let file = sweep_file(dir.path(), "batch", "budget = \"1m\"\n");
    let o = bin().args(["sweep", "--k8s", "--runs-dir"]).arg(&runs).arg(&file).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(
        &file,
        std::fs::read_to_string(&file).unwrap().replace("seeds = [1, 2]", "seeds = [1, 2, 3]"),
    )
    .unwrap();
    let o = bin().args(["sweep", "--k8s", "--runs-dir"]).arg(&runs).arg(&file).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("different batch"), "{}", stderr(&o));
    let o = bin().arg("sweep-run").arg(runs.join("batch-manifest.json")).arg("7").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no run 7"), "{}", stderr(&o));
    let o = bin().arg("sweep-run").arg(runs.join("batch-manifest.json")).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = bin().arg("sweep-status").arg(dir.path().join("missing-manifest.json")).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn the_kubernetes_job_is_an_indexed_job_over_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let file = sweep_file(dir.path(), "k8s_batch", "budget = \"10m\"\n");
    let o = bin()
        .args(["sweep", "--k8s", "--max-parallel", "2", "--claim", "lab-runs", "--runs-dir"])
        .arg(&runs)
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let yaml = runs.join("k8s_batch-k8s.yaml");
    // Parsed by a real YAML parser (PyYAML, which MLflow's virtualenv has).
    let cache = common::test_cache();
    let python = cache.join("mlflow/venv/bin/python");
    assert!(python.is_file(), "run tests/setup.sh");
    let o = std::process::Command::new(python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(&yaml)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let job: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["metadata"]["name"], "loop-runner-k8s-batch", "a DNS-1123 name");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["spec"]["completions"], 4);
    assert_eq!(job["spec"]["parallelism"], 2);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    let manifest = std::fs::canonicalize(&runs).unwrap().join("k8s_batch-manifest.json");
    assert_eq!(
        container["command"],
        serde_json::json!(["loop-runner", "sweep-run", manifest.to_str().unwrap()])
    );
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        std::fs::canonicalize(&runs).unwrap().to_str().unwrap()
    );
    assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"], "lab-runs");
    // The index a pod gets reaches sweep-run: an out-of-range one is refused by name.
    let o = bin().arg("sweep-run").arg(&manifest).env("JOB_COMPLETION_INDEX", "9").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no run 9"), "{}", stderr(&o));
}

#[test]
fn ctrl_c_stops_a_sweep_cleanly_and_the_next_one_goes_on() {
    stopping_a_sweep_is_clean_and_the_next_one_goes_on(rustix::process::Signal::INT);
}

/// A sweep started by hand and stopped with `kill` or `timeout` acts as on Ctrl-C.
#[test]
fn sigterm_stops_a_sweep_as_ctrl_c_does() {
    stopping_a_sweep_is_clean_and_the_next_one_goes_on(rustix::process::Signal::TERM);
}

fn stopping_a_sweep_is_clean_and_the_next_one_goes_on(signal: rustix::process::Signal) {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let file = sweep_file(dir.path(), "stop", "budget = \"10m\"\niterations = 200\n");
    let child = bin()
        .args(["sweep", "--jobs", "2", "--runs-dir"])
        .arg(&runs)
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let manifest = runs.join("stop-manifest.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    // Both first runs have finished an iteration.
    loop {
        assert!(Instant::now() < deadline, "the first runs never finished an iteration");
        if manifest.is_file() {
            let dirs = manifest_runs(&manifest);
            let going = dirs[..2]
                .iter()
                .filter(|d| {
                    d.join("journal.jsonl").is_file()
                        && events(d).iter().any(|e| matches!(e, Event::IterationFinished { .. }))
                })
                .count();
            if going == 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let dirs = manifest_runs(&manifest);
    for run in &dirs[..2] {
        let ev = events(run);
        assert!(
            ev.iter().any(|e| matches!(e, Event::RunFinished { reason, .. } if reason.contains("interrupt"))),
            "{}: evaluated and reported after Ctrl-C",
            run.display()
        );
        assert!(run.join("report/summary.json").is_file());
    }
    for run in &dirs[2..] {
        assert!(!run.join("journal.jsonl").exists(), "nothing new started after Ctrl-C");
    }
}

/// One task of a sweep is what Slurm and Kubernetes run, and their SIGTERM (a preemption, a
/// requeue, an evicted pod) must leave the run unfinished: a run that finished as interrupted
/// would count as done, and the scheduler's next attempt would not resume it.
#[test]
fn a_sweep_task_ended_by_sigterm_stays_unfinished_for_its_next_attempt() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let file = sweep_file(dir.path(), "preempted", "budget = \"10m\"\niterations = 200\n");
    let o = bin().args(["sweep", "--k8s", "--runs-dir"]).arg(&runs).arg(&file).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = runs.join("preempted-manifest.json");
    let run = manifest_runs(&manifest).remove(0);
    let child = bin()
        .arg("sweep-run")
        .arg(&manifest)
        .arg("0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(run.join("journal.jsonl").is_file()
        && events(&run).iter().any(|e| matches!(e, Event::IterationFinished { .. })))
    {
        assert!(Instant::now() < deadline, "the run never finished an iteration");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.signal(), Some(rustix::process::Signal::TERM.as_raw()), "{}", stderr(&o));
    assert!(!events(&run).iter().any(|e| matches!(e, Event::RunFinished { .. })));
    let status = bin().arg("sweep-status").arg(&manifest).output().unwrap();
    let line = String::from_utf8_lossy(&status.stdout).lines().nth(1).unwrap_or_default().to_string();
    assert!(line.contains("unfinished"), "{line}");
}
