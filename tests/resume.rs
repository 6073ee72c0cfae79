//! Crash safety: a run killed at many different points (after journal writes, in the middle of a
//! git commit, between a commit and its journal entry, during a sandbox run, and with a real
//! SIGKILL) resumes to the same result as a run that was never interrupted.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{bin, fixtures};
use loop_runner::journal::{self, Event};
use loop_runner::snapshot::Workspace;

const ITERATIONS: &str = "3";

fn start(runs: &Path, fault: Option<&str>) -> Output {
    let mut cmd = bin();
    cmd.args(["run", "--iterations", ITERATIONS, "--task"])
        .arg(fixtures().join("penguins/task.toml"))
        .arg("--runs-dir")
        .arg(runs);
    if let Some(fault) = fault {
        cmd.env("LOOP_RUNNER_FAULT", fault);
    }
    cmd.output().unwrap()
}

fn only_run(runs: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.into_iter().next().unwrap()
}

/// Iteration → tree hash, checked for consistency between journal and git.
fn check_consistent(dir: &Path) -> BTreeMap<u32, String> {
    let entries = journal::read(&dir.join("journal.jsonl")).unwrap();
    assert!(matches!(entries.last().unwrap().event, Event::RunFinished { .. }), "the run finished");
    let finished: Vec<u32> = entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::IterationFinished { iteration, .. } => Some(*iteration),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        [1, 2, 3, 4],
        "every iteration (three, and the bag made of the best) finished exactly once, in order"
    );
    // The last recorded commit of each iteration is what git has.
    let mut recorded: BTreeMap<u32, (String, String)> = BTreeMap::new();
    for e in &entries {
        if let Event::SnapshotCommitted { iteration, commit, tree, .. } = &e.event {
            recorded.insert(*iteration, (commit.clone(), tree.clone()));
        }
    }
    let ws = Workspace::open_or_init(&dir.join("workspace")).unwrap();
    let tags = ws.tags().unwrap();
    let expected: Vec<(String, String)> =
        recorded.iter().map(|(n, (c, _))| (format!("iter-{n:04}"), c.clone())).collect();
    assert_eq!(tags, expected, "tags match the journal");
    let history = ws.history().unwrap();
    let commits: Vec<String> = recorded.values().map(|(c, _)| c.clone()).collect();
    assert_eq!(history, commits, "`iterations` holds exactly the recorded commits, in order");
    // `best` is the journal's best iteration, and it is what is checked out.
    let best_iteration = entries.iter().rev().find_map(|e| match &e.event {
        Event::RunFinished { best_iteration, .. } => *best_iteration,
        _ => None,
    });
    let best = ws.best().map(|b| b.to_string());
    assert_eq!(best, best_iteration.map(|n| recorded[&n].0.clone()));
    let files = ws.files(ws.best().unwrap()).unwrap();
    for (path, blob) in files {
        let on_disk = std::fs::read(dir.join("workspace").join(&path)).unwrap();
        let hash = git2::Oid::hash_object(git2::ObjectType::Blob, &on_disk).unwrap().to_string();
        assert_eq!(hash, blob, "{path} in the working tree matches `best`");
    }
    let leftover: Vec<String> = std::fs::read_dir(dir.join("iterations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.as_str() > "iter-0004")
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
    recorded.into_iter().map(|(n, (_, tree))| (n, tree)).collect()
}

#[test]
fn a_run_killed_anywhere_resumes_to_the_same_result() {
    let reference_runs = tempfile::tempdir().unwrap();
    let output = start(reference_runs.path(), None);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let reference = check_consistent(&only_run(reference_runs.path()));

    // Journal entries the runner writes through its fault counter (all but the first three:
    // run_started, session and the initial split_made).
    let written = journal::read(&only_run(reference_runs.path()).join("journal.jsonl")).unwrap().len() - 3;
    let mut faults: Vec<String> =
        [1, written / 10, written / 5, written / 3, written / 2, written * 2 / 3, written * 4 / 5]
            .iter()
            .chain(&[written - 3, written - 2, written - 1])
            .map(|n| format!("journal:{}", n.max(&1)))
            .collect();
    faults.extend(["commit:1", "commit:3", "committed:2", "sandbox:2", "sandbox:6"].map(String::from));
    faults.dedup();
    assert!(faults.len() >= 14, "{faults:?}");
    for fault in &faults {
        let fault = fault.as_str();
        let runs = tempfile::tempdir().unwrap();
        let crashed = start(runs.path(), Some(fault));
        assert!(!crashed.status.success(), "{fault}: the deliberate crash happened");
        let dir = only_run(runs.path());
        let resumed = bin().arg("resume").arg(&dir).output().unwrap();
        assert!(
            resumed.status.success(),
            "{fault}: resume failed:\n{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let trees = check_consistent(&dir);
        assert_eq!(trees, reference, "{fault}: the resumed run's snapshots differ from an uninterrupted run");
        // A finished run is not resumed twice.
        let again = bin().arg("resume").arg(&dir).output().unwrap();
        assert_eq!(again.status.code(), Some(4), "{fault}");
    }
}

#[test]
fn a_real_sigkill_mid_run_resumes() {
    let runs = tempfile::tempdir().unwrap();
    let mut child = bin()
        .args(["run", "--iterations", ITERATIONS, "--task"])
        .arg(fixtures().join("penguins/task.toml"))
        .arg("--runs-dir")
        .arg(runs.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline);
        let ready =
            std::fs::read_dir(runs.path()).ok().and_then(|mut d| d.next()).and_then(|e| e.ok()).is_some_and(
                |e| {
                    std::fs::read_to_string(e.path().join("journal.jsonl"))
                        .is_ok_and(|t| t.matches("script_run").count() >= 3)
                },
            );
        if ready {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let dir = only_run(runs.path());
    let resumed = bin().arg("resume").arg(&dir).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    check_consistent(&dir);
}
