//! Provenance: the five tables of real runs (exported as Parquet, Arrow and CSV and read back),
//! SQL over them, `compare`, the MLflow export read back by the real `mlflow` package, and a
//! snapshot's `requirements.txt` rebuilding its environment in a fresh virtualenv.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{bin, fixtures, records, run_dir_of, shared_dir, stderr};
use polars::prelude::*;

/// Two finished runs in one runs dir: penguins in the WASI sandbox (5 iterations,
/// cross-validated) and breast_cancer in the process sandbox (5 iterations, held-out split).
fn shared_runs() -> &'static (PathBuf, Vec<PathBuf>) {
    static RUNS: OnceLock<(PathBuf, Vec<PathBuf>)> = OnceLock::new();
    RUNS.get_or_init(|| {
        let runs = shared_dir("provenance-runs");
        let mut dirs = Vec::new();
        for (task, extra) in [
            ("penguins", ["--sandbox", "wasi", "--validation", "cv"]),
            ("breast_cancer", ["--sandbox", "process", "--validation", "holdout"]),
        ] {
            let output = bin()
                .args(["run", "--iterations", "5", "--task"])
                .arg(fixtures().join(task).join("task.toml"))
                .args(extra)
                .arg("--runs-dir")
                .arg(&runs)
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", stderr(&output));
            dirs.push(run_dir_of(&output));
        }
        (runs, dirs)
    })
}

fn runs_dir() -> &'static Path {
    &shared_runs().0
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "exit {:?}\n{}", output.status, stderr(&output));
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn query_json(sql: &str) -> Vec<serde_json::Value> {
    let text = ok(bin().args(["query", "--json", "--runs-dir"]).arg(runs_dir()).arg(sql).output().unwrap());
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn export_writes_the_five_tables_in_each_format_and_they_read_back_typed() {
    let dirs = &shared_runs().1;
    let iterations: usize = dirs.iter().map(|d| records(d).len()).sum();
    for format in ["parquet", "arrow", "csv"] {
        let out = tempfile::tempdir().unwrap();
        let listed = ok(bin()
            .args(["export", "--format", format, "--out"])
            .arg(out.path())
            .arg("--runs-dir")
            .arg(runs_dir())
            .output()
            .unwrap());
        assert_eq!(listed.lines().count(), 5, "{listed}");
        let read = |name: &str| -> DataFrame {
            let path = out.path().join(format!("{name}.{format}"));
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            match format {
                "parquet" => ParquetReader::new(file).finish().unwrap(),
                "arrow" => polars_io::ipc::IpcReader::new(file).finish().unwrap(),
                _ => CsvReadOptions::default()
                    .with_has_header(true)
                    .try_into_reader_with_file_path(Some(path.clone()))
                    .unwrap()
                    .finish()
                    .unwrap(),
            }
        };
        let runs = read("runs");
        assert_eq!(runs.height(), 2, "{format}");
        let its = read("iterations");
        assert_eq!(its.height(), iterations, "{format}");
        assert_eq!(its.column("validation_score").unwrap().dtype(), &DataType::Float64, "{format}");
        assert_eq!(its.column("iteration").unwrap().dtype(), &DataType::Int64, "{format}");
        if format != "csv" {
            assert!(
                matches!(
                    its.column("finished_at").unwrap().dtype(),
                    DataType::Datetime(TimeUnit::Milliseconds, _)
                ),
                "{format}"
            );
        }
        let snapshots = read("snapshots");
        assert_eq!(snapshots.height(), iterations, "{format}: one snapshot per iteration");
        assert!(snapshots.column("files").unwrap().null_count() == 0, "git metadata read for every commit");
        assert!(read("steps").height() >= iterations, "{format}");
        assert!(read("script_runs").height() >= 2 * iterations, "{format}: train and inference at least");
        // Nothing half-written is left beside the tables.
        let names: Vec<String> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
    }
}

#[test]
fn tables_hold_what_the_journal_says() {
    let dirs = &shared_runs().1;
    let rows = query_json(
        "SELECT run_id, iteration, parent, operation, status, family, validation_score, validation_tiebreak, commit FROM iterations ORDER BY run_id, iteration",
    );
    let mut expected = Vec::new();
    for dir in dirs {
        let id = dir.file_name().unwrap().to_string_lossy().to_string();
        for r in records(dir) {
            expected.push((
                id.clone(),
                r.iteration as i64,
                r.parent.map(i64::from),
                r.family.clone(),
                r.validation_score,
                r.validation_tiebreak,
            ));
        }
    }
    expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r["run_id"].as_str().unwrap().to_string(),
                r["iteration"].as_i64().unwrap(),
                r["parent"].as_i64(),
                r["family"].as_str().unwrap().to_string(),
                r["validation_score"].as_f64(),
                r["validation_tiebreak"].as_f64(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    // Both tasks are classified by a metric with a tie-break: every scored iteration has one.
    assert!(expected.iter().filter(|e| e.4.is_some()).all(|e| e.5.is_some()), "{expected:?}");
    assert!(rows.iter().all(|r| r["commit"].as_str().is_some_and(|c| c.len() == 40)), "{rows:?}");
    // The run table agrees with each run's summary.
    for dir in dirs {
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report/summary.json")).unwrap()).unwrap();
        let id = dir.file_name().unwrap().to_string_lossy().to_string();
        let run = query_json(&format!("SELECT * FROM runs WHERE run_id = '{id}'"));
        assert_eq!(run.len(), 1);
        assert_eq!(run[0]["test_score"], summary["test_score"], "{id}");
        assert_eq!(run[0]["validation_score"], summary["validation_score"], "{id}");
        assert_eq!(run[0]["state"], "finished");
    }
}

#[test]
fn the_readme_query_of_improvements_over_the_parent_needs_the_parent() {
    // Children that beat their parent by more than `gain`, from the journals and by SQL. With a
    // gain of -1 that is every child of a scored parent (ensembles and improvements), which the
    // built-in agent makes within five iterations.
    for gain in [-1.0, 0.002] {
        let mut expected = Vec::new();
        for dir in &shared_runs().1 {
            let id = dir.file_name().unwrap().to_string_lossy().to_string();
            let recs = records(dir);
            for child in &recs {
                let parent = child.parent.and_then(|p| recs.iter().find(|r| r.iteration == p));
                if let (Some(c), Some(p)) = (child.validation_score, parent.and_then(|p| p.validation_score))
                    && c - p > gain
                {
                    expected.push((id.clone(), child.iteration as i64));
                }
            }
        }
        let rows = query_json(&format!(
            "SELECT c.run_id, c.iteration, c.validation_score - p.validation_score AS gain \
             FROM iterations c JOIN iterations p ON c.run_id = p.run_id AND c.parent = p.iteration \
             WHERE c.validation_score - p.validation_score > {gain}"
        ));
        let mut got: Vec<(String, i64)> = rows
            .iter()
            .map(|r| (r["run_id"].as_str().unwrap().to_string(), r["iteration"].as_i64().unwrap()))
            .collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "gain > {gain}");
        if gain < 0.0 {
            assert!(!expected.is_empty(), "no iteration built on a scored parent");
        }
    }
    // The same as text and as CSV.
    let text =
        ok(run(&["query", "--runs-dir", runs_dir().to_str().unwrap(), "SELECT count(*) AS n FROM steps"]));
    assert!(text.lines().next().unwrap().starts_with('n'), "{text}");
    assert!(text.trim_end().ends_with("(1 row)"), "{text}");
    let csv = ok(run(&[
        "query",
        "--csv",
        "--runs-dir",
        runs_dir().to_str().unwrap(),
        "SELECT agent, sandbox FROM runs ORDER BY sandbox",
    ]));
    assert_eq!(csv, "agent,sandbox\nbuiltin,process\nbuiltin,wasi\n");
}

#[test]
fn compare_puts_runs_side_by_side() {
    let dirs = &shared_runs().1;
    let text = ok(bin().arg("compare").args(dirs).output().unwrap());
    for dir in dirs {
        assert!(text.contains(&*dir.file_name().unwrap().to_string_lossy()), "{text}");
    }
    for label in ["test score", "validation score", "iterations", "spend", "sandbox"] {
        assert!(text.contains(label), "{label}: {text}");
    }
    assert!(text.contains("5-fold cv") && text.contains("holdout"), "{text}");
}

#[test]
fn bad_input_is_a_clear_error_and_nothing_is_written() {
    let dirs = &shared_runs().1;
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("tables");
    let runs = runs_dir().to_str().unwrap();

    let o = run(&["query", "--runs-dir", runs, "SELECT nope FROM iterations"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("the query failed") && stderr(&o).contains("nope"), "{}", stderr(&o));
    let o = run(&["query", "--runs-dir", runs, "SELEC * FROM runs"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = run(&["query", "--runs-dir", runs, "SELECT * FROM models"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("iterations"), "the hint lists the tables: {}", stderr(&o));

    // A foreign file where a journal should be.
    let foreign = out.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("journal.jsonl"), "{\"hello\": 1}\n{\"world\": 2}\n").unwrap();
    for format in ["parquet", "mlflow"] {
        let o = bin()
            .args(["export", "--format", format, "--out"])
            .arg(&target)
            .arg(&dirs[0])
            .arg(&foreign)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3), "{format}: {}", stderr(&o));
        assert!(stderr(&o).contains("foreign"), "names the run: {}", stderr(&o));
        assert!(!target.exists(), "{format}: nothing written");
    }
    // A journal edited after it was written.
    let edited = out.path().join("edited");
    Command::new("cp").arg("-a").arg(&dirs[0]).arg(&edited).status().unwrap();
    let journal = edited.join("journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap().replacen("\"iteration\":1", "\"iteration\":9", 1);
    std::fs::write(&journal, text).unwrap();
    let o = bin().args(["query", "--run"]).arg(&edited).arg("SELECT * FROM runs").output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));
    // A torn last line (a crash mid-write) is what every reader tolerates: the run is unfinished.
    let torn = out.path().join("torn");
    Command::new("cp").arg("-a").arg(&dirs[0]).arg(&torn).status().unwrap();
    let journal = torn.join("journal.jsonl");
    let mut text = std::fs::read_to_string(&journal).unwrap();
    let last = text.trim_end().rfind('\n').unwrap();
    text.truncate(last + 1);
    text.push_str("{\"seq\":999,\"at\":\"x\",\"event\":{\"kind\":\"run_fin");
    std::fs::write(&journal, text).unwrap();
    let state = ok(bin()
        .args(["query", "--csv", "--run"])
        .arg(&torn)
        .arg("SELECT state FROM runs")
        .output()
        .unwrap());
    assert_eq!(state, "state\nunfinished\n");
    // Not a run directory at all.
    let o = bin().args(["compare"]).arg(out.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a loop-runner run directory"), "{}", stderr(&o));
}

fn mlflow_python() -> PathBuf {
    let cache = common::test_cache();
    let python = cache.join("mlflow/venv/bin/python");
    assert!(python.is_file(), "mlflow-skinny is missing under {}: run tests/setup.sh", cache.display());
    python
}

const READ_MLFLOW: &str = r#"
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri="file://" + sys.argv[1])
out = {}
for exp in client.search_experiments():
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    for run in runs:
        d = run.data
        history = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)] for k in d.metrics}
        out[run.info.run_id] = {
            "experiment": exp.name,
            "name": run.info.run_name,
            "status": run.info.status,
            "params": d.params,
            "tags": {k: v for k, v in d.tags.items()},
            "metrics": history,
            "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id)),
        }
print(json.dumps(out))
"#;

#[test]
fn the_mlflow_export_reads_back_with_mlflow() {
    let dirs = &shared_runs().1;
    let out = tempfile::tempdir().unwrap();
    let store = out.path().join("mlruns");
    // Exported twice: the second replaces the first instead of adding copies.
    for _ in 0..2 {
        ok(bin().args(["export", "--format", "mlflow", "--out"]).arg(&store).args(dirs).output().unwrap());
    }
    let o = Command::new(mlflow_python())
        .args(["-c", READ_MLFLOW])
        .arg(&store)
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let runs: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let total: usize = dirs.iter().map(|d| records(d).len()).sum();
    assert_eq!(runs.len(), dirs.len() + total, "one MLflow run per run and per iteration");
    for dir in dirs {
        let id = dir.file_name().unwrap().to_string_lossy().to_string();
        let (parent_id, parent) =
            runs.iter().find(|(_, r)| r["name"] == id.as_str()).expect("the run is there");
        let task = if id.starts_with("penguins") { "penguins" } else { "breast_cancer" };
        assert_eq!(parent["experiment"], task);
        assert_eq!(parent["status"], "FINISHED");
        assert_eq!(parent["tags"]["loop_runner.run_id"], id.as_str());
        assert!(parent["artifacts"].as_array().unwrap().iter().any(|a| a == "journal.jsonl"));
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report/summary.json")).unwrap()).unwrap();
        assert_eq!(parent["metrics"]["test_score"][0][1], summary["test_score"]);
        for record in records(dir) {
            let name = format!("iter-{:04}", record.iteration);
            let child = runs
                .values()
                .find(|r| r["tags"]["mlflow.parentRunId"] == parent_id.as_str() && r["name"] == name.as_str())
                .unwrap_or_else(|| panic!("{id} {name}"));
            assert_eq!(child["params"]["family"], record.family.as_str());
            for h in &record.hyperparameters {
                assert_eq!(child["params"][format!("hp.{}", h.name)], h.value.as_str());
            }
            match record.validation_score {
                Some(score) => assert_eq!(
                    child["metrics"]["validation_score"],
                    serde_json::json!([[record.iteration, score]]),
                    "{name}: step = iteration, the journal's value"
                ),
                None => assert!(child["metrics"].get("validation_score").is_none()),
            }
            let expected_status = match record.status.split([' ', ':']).next().unwrap() {
                "failed" => "FAILED",
                "cut" => "KILLED",
                _ => "FINISHED",
            };
            assert_eq!(child["status"], expected_status, "{name}: {}", record.status);
            let artifacts = child["artifacts"].as_array().unwrap();
            let mut expected_files = vec!["metrics.json", "requirements.txt", "environment.json"];
            if record.succeeded() {
                expected_files.extend(["train.py", "inference.py", "model"]);
            }
            for file in expected_files {
                assert!(artifacts.iter().any(|a| a == file), "{name}: {file} in {artifacts:?}");
            }
            assert_eq!(child["tags"]["loop_runner.commit"].as_str().map(str::len), Some(40));
        }
    }
}

#[test]
fn a_wasi_snapshot_pins_the_versions_built_into_the_runtime() {
    let dir = &shared_runs().1[0];
    let text = std::fs::read_to_string(dir.join("iterations/iter-0001/requirements.txt")).unwrap();
    let pinned: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let manifest: serde_json::Value = {
        let home = common::home();
        let record = std::fs::read_dir(&home)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("artifacts.json"))
            .find(|p| p.is_file())
            .unwrap();
        serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap()
    };
    for name in ["scikit-learn", "pandas", "numpy", "scipy"] {
        let version = manifest["packages"][name].as_str().unwrap();
        assert!(pinned.contains(&format!("{name}=={version}").as_str()), "{name}: {text}");
    }
    assert!(text.contains(&format!("# python {}", manifest["python_version"].as_str().unwrap())), "{text}");
    assert!(!pinned.iter().any(|l| l.starts_with("openblas") || l.starts_with("matplotlib")), "{text}");
    // Every scored snapshot, an ensemble's too (its members' scripts import scikit-learn, its own
    // only pickle and numpy), pins scikit-learn.
    for dir in &shared_runs().1 {
        for record in records(dir).iter().filter(|r| r.succeeded()) {
            let path = dir.join(format!("iterations/iter-{:04}/requirements.txt", record.iteration));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("\nscikit-learn=="), "{}: {text}", path.display());
        }
    }
}

#[test]
fn a_process_snapshot_rebuilds_in_a_fresh_virtualenv_from_its_requirements() {
    let dir = &shared_runs().1[1];
    let work = tempfile::tempdir().unwrap();
    let snapshot = work.path().join("snapshot");
    ok(bin().arg("checkout").arg(dir).arg("best").arg(&snapshot).output().unwrap());
    let venv = work.path().join("venv");
    let o = Command::new("python3").args(["-m", "venv"]).arg(&venv).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let python = venv.join("bin/python");
    let o = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt"])
        .current_dir(&snapshot)
        .output()
        .unwrap();
    assert!(o.status.success(), "pip install -r requirements.txt: {}", stderr(&o));
    // Nothing but the pinned distributions (and pip) in the virtualenv.
    let o = Command::new(&python).args(["-m", "pip", "freeze", "--all"]).output().unwrap();
    let frozen = String::from_utf8_lossy(&o.stdout).to_string();
    let pinned = std::fs::read_to_string(snapshot.join("requirements.txt")).unwrap();
    for line in pinned.lines().filter(|l| !l.starts_with('#')) {
        assert!(frozen.to_lowercase().contains(&line.to_lowercase()), "{line} not installed: {frozen}");
    }
    std::fs::remove_dir_all(snapshot.join("model")).unwrap();
    for args in
        [&["train.py"][..], &["inference.py", "--input", "input/features.csv", "--output", "venv.csv"][..]]
    {
        let o = Command::new(&python)
            .args(args)
            .current_dir(&snapshot)
            .env("OMP_NUM_THREADS", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    // The same interpreter and the same versions as the sandbox: the same predictions.
    let recorded = std::fs::read_to_string(snapshot.join("predictions.csv")).unwrap();
    let rebuilt = std::fs::read_to_string(snapshot.join("venv.csv")).unwrap();
    assert_eq!(rebuilt, recorded);
}

#[test]
fn bench_tables_times_synthetic_runs_written_through_the_journal() {
    let text = ok(run(&["bench", "tables", "--runs", "4", "--iterations", "6", "--repeat", "1"]));
    assert!(text.contains("4 runs x 6 iterations: 24 iteration rows"), "{text}");
    assert!(text.contains("query: improved on the parent by > 0.02"), "{text}");
}
