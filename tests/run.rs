//! End-to-end runs of the real binary on fixtures: the built-in agent, an OpenAI-compatible
//! server that the test scripts, the budget, bad inputs, and the secrecy of the test labels.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::llm::{Behaviour, Server};
use common::scripted::{PENGUINS_INFER, PENGUINS_TRAIN, answer};
use common::{bin, fixtures, run_dir_of, stderr};
use loop_runner::journal::{self, Event};

const KEY: &str = "sk-e2e-secret-key-0123456789";

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report/summary.json")).unwrap()).unwrap()
}

#[test]
fn builtin_agent_runs_a_fixture_end_to_end() {
    let runs = tempfile::tempdir().unwrap();
    let output = bin()
        .args(["run", "--task"])
        .arg(fixtures().join("penguins/task.toml"))
        .args(["--iterations", "3", "--runs-dir"])
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    assert!(dir.starts_with(runs.path()));
    let s = summary(&dir);
    for key in [
        "task",
        "metric",
        "best_iteration",
        "validation_score",
        "test_score",
        "iterations",
        "wall_seconds",
        "agent",
        "sandbox",
    ] {
        assert!(s.get(key).is_some(), "summary.json lacks {key}: {s}");
    }
    assert_eq!(s["iterations"], 4, "three, and the bag made of the best (the final model)");
    assert_eq!(s["final_iteration"], 4);
    assert_eq!(s["agent"], "builtin");
    assert!(s["test_score"].as_f64().unwrap() > 0.9, "{s}");
    let report = std::fs::read_to_string(dir.join("report/REPORT.md")).unwrap();
    assert!(
        report.contains("built-in agent") && report.contains("no LLM"),
        "the report says what the agent is"
    );
    let html = std::fs::read_to_string(dir.join("report/report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("best"));
    // Every iteration is in git; `best` is checked out and holds runnable scripts.
    let ws = dir.join("workspace");
    for file in [
        "train.py",
        "inference.py",
        "metrics.json",
        "environment.json",
        "data.json",
        "data/train.csv",
        "model/model.pkl",
    ] {
        assert!(ws.join(file).is_file(), "workspace lacks {file}");
    }
    let tags = std::process::Command::new("git").arg("-C").arg(&ws).arg("tag").output().unwrap();
    // Three iterations, and the final model: the bag made of the best.
    assert_eq!(String::from_utf8_lossy(&tags.stdout), "iter-0001\niter-0002\niter-0003\niter-0004\n");
    // The journal tells the same story.
    let events = journal::read(&dir.join("journal.jsonl")).unwrap();
    let finished = events.iter().filter(|e| matches!(e.event, Event::IterationFinished { .. })).count();
    assert_eq!(finished, 4);
    assert!(matches!(events.last().unwrap().event, Event::RunFinished { .. }));
    // status prints the leaderboard.
    let status = bin().arg("status").arg(&dir).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && text.contains("accuracy") && text.contains("hist_gradient_boosting"),
        "{text}"
    );
    // Its reader gone (`status | head -0`), it ends as Unix tools do, without a panic.
    let mut child = bin()
        .arg("status")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let closed = child.wait_with_output().unwrap();
    assert!(!stderr(&closed).contains("panicked"), "{}", stderr(&closed));
}

#[test]
fn the_short_form_runs_task_toml_in_the_current_directory() {
    let work = tempfile::tempdir().unwrap();
    for f in ["train.csv", "test.csv", "task.toml"] {
        std::fs::copy(fixtures().join("penguins").join(f), work.path().join(f)).unwrap();
    }
    let output = bin().current_dir(work.path()).args(["--iterations", "1"]).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    assert!(
        work.path().join(&dir).join("report/summary.json").is_file()
            || dir.join("report/summary.json").is_file()
    );
    // Without any limit, it refuses to start.
    let output = bin().current_dir(work.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--budget"), "{}", stderr(&output));
}

#[test]
fn an_openai_compatible_server_drives_the_loop_and_the_key_stays_secret() {
    let server = Server::start(vec![
        // The first answer is not JSON; the runner re-asks.
        Behaviour::Answer("Let me think about the plan...".into()),
        Behaviour::Status { code: 500, retry_after: None, body: "overloaded".into() },
    ]);
    server.set_fallback(Behaviour::Compute(Box::new(|req| answer(req, PENGUINS_TRAIN, PENGUINS_INFER))));
    let runs = tempfile::tempdir().unwrap();
    let config = runs.path().join("loop-runner.toml");
    std::fs::write(
        &config,
        "[agent]\napi_key_env = \"E2E_KEY\"\nmodel = \"scripted-model\"\nmodels = { train = \"scripted-coder\" }\n[agent.prices.\"scripted-model\"]\ninput_per_million = 1.0\noutput_per_million = 2.0\n",
    )
    .unwrap();
    let output = bin()
        .env("E2E_KEY", KEY)
        .args(["run", "--agent", "openai", "--base-url", &server.base_url(), "--config"])
        .arg(&config)
        .arg("--task")
        .arg(fixtures().join("penguins/task.toml"))
        .args(["--iterations", "2", "--runs-dir"])
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let s = summary(&dir);
    assert_eq!(s["agent"], "openai");
    assert!(s["test_score"].as_f64().unwrap() > 0.9, "{s}");
    let requests = server.requests();
    assert!(requests.iter().any(|r| r.body["model"] == "scripted-coder"), "per-step model");
    assert!(requests.iter().all(|r| r.headers.contains(&format!("Bearer {KEY}"))));
    let report = std::fs::read_to_string(dir.join("report/REPORT.md")).unwrap();
    assert!(report.contains("scripted-model") && !report.contains("no LLM"));
    assert!(!report.contains("$0.0000 |\n\nThe test"), "costs are counted from the price table");
    // The key appears in no file of the run and not in the output.
    assert!(!stderr(&output).contains(KEY));
    for entry in walk(&dir) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(KEY), "the key leaked into {}", entry.display());
    }
    let transcript = std::fs::read_to_string(dir.join("transcript.jsonl")).unwrap();
    assert!(transcript.contains("\"verdict\":\"rejected\"") && transcript.contains("\"verdict\":\"failed\""));
}

#[test]
fn the_budget_holds_even_when_a_script_wants_to_run_longer() {
    let slow_train = format!("import time\ntime.sleep(3600)\n{PENGUINS_TRAIN}");
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(move |req| answer(req, &slow_train, PENGUINS_INFER))));
    let runs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = bin()
        .args(["run", "--agent", "openai", "--base-url", &server.base_url(), "--budget", "20s", "--task"])
        .arg(fixtures().join("penguins/task.toml"))
        .arg("--runs-dir")
        .arg(runs.path())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(24), "a 20 s budget took {took:?}");
    assert!(took >= Duration::from_secs(9), "the loop used its time: {took:?}");
    // Nothing succeeded, so there is nothing to test: an experiment failure, cleanly reported.
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let s = summary(&dir);
    assert!(s["test_score"].is_null());
    let events = journal::read(&dir.join("journal.jsonl")).unwrap();
    let reason = events.iter().find_map(|e| match &e.event {
        Event::RunFinished { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(reason.as_deref(), Some("budget spent"));
}

#[test]
fn agent_code_cannot_find_the_test_labels() {
    // An inference.py that hunts for labels everywhere it can think of, and predicts them if it
    // finds any; otherwise it predicts one class for every row.
    let snoop = r#"import argparse, os
import pandas as pd
p = argparse.ArgumentParser(); p.add_argument("--input"); p.add_argument("--output"); a = p.parse_args()
X = pd.read_csv(a.input)
found = None
places = ["/", "/work", "/work/..", "/work/input", "/tmp", "../holdout", "/holdout", "/work/../holdout",
          "/work/../../holdout", "/work/data", "../data", "../../", "/usr/local/lib"]
seen = []
for place in places:
    try:
        for root, dirs, files in os.walk(place):
            for f in files:
                seen.append(os.path.join(root, f))
    except Exception:
        pass
for path in seen:
    try:
        df = pd.read_csv(path)
        if "species" in df.columns and len(df) == len(X):
            found = df["species"]
    except Exception:
        pass
print("FILES SEEN:", sorted(set(seen)))
print("FOUND LABELS:", found is not None)
pred = found if found is not None else ["Adelie"] * len(X)
out = pd.DataFrame({"prediction": list(pred)})
for c in ["Adelie", "Chinstrap", "Gentoo"]:
    out["proba_" + c] = [1.0 if v == c else 0.0 for v in out["prediction"]]
out.to_csv(a.output, index=False)
"#;
    let (output, _runs) = penguins_with_inference(snoop.to_string());
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let s = summary(&dir);
    // 69 test rows, 32 of them Adelie: predicting "Adelie" everywhere scores 32/69.
    let test = s["test_score"].as_f64().unwrap();
    let adelie = std::fs::read_to_string(fixtures().join("penguins/test.csv"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("Adelie"))
        .count();
    let rows = std::fs::read_to_string(fixtures().join("penguins/test.csv")).unwrap().lines().count() - 1;
    assert!((test - adelie as f64 / rows as f64).abs() < 1e-9, "test accuracy {test}: labels were found");
    let journal_text = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    assert!(!journal_text.contains("holdout/test.csv\""));
}

#[test]
fn bad_task_files_and_data_are_clear_setup_errors() {
    let work = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(work.path().join(name), text).unwrap();
    write("data.csv", "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n9,1,x\n");
    write("dup.csv", "a,a,label\n1,2,x\n");
    let cases = [
        ("name = \"t\"\ndata = \"data.csv\"\ntarget = \"nope\"\n", "target column `nope` is not in"),
        ("name = \"t\"\ndata = \"data.csv\"\ntarget = \"label\"\nmetric = \"f2\"\n", "unknown metric `f2`"),
        ("name = \"t\"\ndata = \"missing.csv\"\ntarget = \"label\"\n", "missing.csv"),
        ("name = \"t\"\ndata = \"dup.csv\"\ntarget = \"label\"\n", "more than once"),
        ("name = \"t\"\ndata = \"data.csv\"\n", "missing field `target`"),
    ];
    for (task, expected) in cases {
        write("task.toml", task);
        let runs = work.path().join("runs");
        let output = bin()
            .args(["run", "--iterations", "1", "--task"])
            .arg(work.path().join("task.toml"))
            .arg("--runs-dir")
            .arg(&runs)
            .output()
            .unwrap();
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{task}: {err}");
        assert!(err.contains(expected), "{task}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!runs.exists(), "no run directory for a task that cannot run");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            out.extend(walk(&entry.path()));
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    out
}

#[test]
fn ctrl_c_ends_with_the_final_evaluation_and_the_report() {
    stopping_ends_with_the_final_evaluation_and_the_report(rustix::process::Signal::INT);
}

/// What `kill`, `timeout` and a stopping container send before they kill.
#[test]
fn sigterm_ends_with_the_final_evaluation_and_the_report() {
    stopping_ends_with_the_final_evaluation_and_the_report(rustix::process::Signal::TERM);
}

fn stopping_ends_with_the_final_evaluation_and_the_report(signal: rustix::process::Signal) {
    let runs = tempfile::tempdir().unwrap();
    let child = bin()
        .args(["run", "--iterations", "1000", "--budget", "10m", "--jobs", "2", "--task"])
        .arg(fixtures().join("penguins/task.toml"))
        .arg("--runs-dir")
        .arg(runs.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for a finished iteration, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(60);
    let journal_path = loop {
        assert!(Instant::now() < deadline, "no iteration finished within a minute");
        let found = std::fs::read_dir(runs.path())
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.path().join("journal.jsonl"));
        if let Some(path) = found
            && std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\"iteration_finished\""))
        {
            break path;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(stderr(&output).contains("finishing with the final evaluation"), "{}", stderr(&output));
    let dir = journal_path.parent().unwrap();
    let s = summary(dir);
    assert!(s["test_score"].as_f64().is_some(), "the best iteration was scored: {s}");
    let events = journal::read(&journal_path).unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.event, Event::RunFinished { reason, .. } if reason == "interrupted"))
    );
    // Every scored model records its inference's share of its scripts' time (what the end of
    // a run is kept back for); a script stopped by the signal says so, not that time ran out.
    for e in &events {
        if let Event::IterationFinished { record, .. } = &e.event {
            assert!(!record.status.contains("budget"), "{}", record.status);
        }
        if let Event::IterationFinished { record, .. } = &e.event
            && record.succeeded()
        {
            let infer = record.infer_seconds.expect("a scored iteration's inference time");
            assert!(infer > 0.0 && infer <= record.script_seconds, "{infer} of {}", record.script_seconds);
        }
    }
}

#[test]
fn the_budget_cancels_an_agent_call_that_never_answers() {
    let server = Server::start(vec![]);
    for _ in 0..50 {
        server.push(Behaviour::Hang(Duration::from_secs(600)));
    }
    let runs = tempfile::tempdir().unwrap();
    let config = runs.path().join("loop-runner.toml");
    // A per-call timeout far beyond the budget: only the budget can end the wait.
    std::fs::write(&config, "[agent]\ntimeout = \"10m\"\n").unwrap();
    let started = Instant::now();
    let output = bin()
        .args(["run", "--agent", "openai", "--base-url", &server.base_url(), "--budget", "15s", "--config"])
        .arg(&config)
        .arg("--task")
        .arg(fixtures().join("penguins/task.toml"))
        .arg("--runs-dir")
        .arg(runs.path())
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(18), "a 15 s budget took {took:?}");
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    assert!(dir.join("report/summary.json").is_file());
}

/// A table as users export them: a comma at the end of every line, money written `$12,345`,
/// one class spelled three ways (`yes`, ` yes`, `yes `), and a class with a single row.
fn untidy_table(rows: std::ops::Range<usize>, rare: bool) -> String {
    let mut csv = String::from("a,b,income,answer,\n");
    for i in rows {
        let (a, b) = ((i * 37 % 100) as f64 / 10.0, (i * 53 % 71) as f64);
        let income = 1000 + i * 977 % 90_000;
        let yes = a + b / 10.0 + (income as f64) / 30_000.0 > 9.0;
        let label = match (yes, i % 5) {
            (true, 1) => " yes",
            (true, 2) => "yes ",
            (true, _) => "yes",
            (false, _) => "no",
        };
        csv.push_str(&format!("{a},{b},\"${},{:03}\",{label},\n", income / 1000, income % 1000));
    }
    if rare {
        csv.push_str("5.0,35,\"$50,000\",maybe,\n");
    }
    csv
}

/// A task of 400 untidy training rows and 100 test rows (`rare`: a third class of one training
/// row), with `extra` lines in its task.toml.
fn untidy_task(rare: bool, extra: &str) -> (tempfile::TempDir, PathBuf) {
    held_out_task(
        untidy_table(0..400, rare),
        untidy_table(400..500, false),
        &format!("name = \"untidy\"\ntarget = \"answer\"\n{extra}"),
    )
}

/// A directory with `train` and `test` as train.csv and test.csv, and a task.toml naming them
/// besides `toml`: the directory (kept while the caller uses it) and the task file.
fn held_out_task(train: String, test: String, toml: &str) -> (tempfile::TempDir, PathBuf) {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("train.csv"), train).unwrap();
    std::fs::write(data.path().join("test.csv"), test).unwrap();
    let task = data.path().join("task.toml");
    std::fs::write(&task, format!("train = \"train.csv\"\ntest = \"test.csv\"\n{toml}")).unwrap();
    (data, task)
}

#[test]
fn an_untidy_table_with_a_one_row_class_trains_every_family() {
    let (_data, task) = untidy_task(true, "");
    let runs = tempfile::tempdir().unwrap();
    // A count, not a budget: under a budget the drafts a loaded machine has no time for are
    // skipped, and which those are would depend on the machine.
    let output = bin()
        .args(["run", "--iterations", "11", "--jobs", "2", "--task"])
        .arg(&task)
        .arg("--runs-dir")
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    // Scripts see the classes the runner scores: one spelling each.
    let train = std::fs::read_to_string(dir.join("data/train.csv")).unwrap();
    let mut labels: Vec<&str> = train.lines().skip(1).filter_map(|l| l.rsplit(',').next()).collect();
    labels.sort();
    labels.dedup();
    assert_eq!(labels, ["maybe", "no", "yes"], "{}", &train[..200]);
    let records = common::records(&dir);
    let failed: Vec<_> =
        records.iter().filter(|r| r.status.starts_with("failed")).map(|r| &r.status).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let trained: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.status == "succeeded" && r.validation_score.is_some())
        .map(|r| r.family.as_str())
        .collect();
    // Every family of the portfolio, and an ensemble of them.
    let families = BTreeSet::from([
        "ensemble",
        "extra_trees",
        "hist_gradient_boosting",
        "knn",
        "logistic_regression",
        "mlp",
        "random_forest",
        "svm",
    ]);
    assert_eq!(trained, families);
    // Boosting with early stopping (held-out rows split by class) trained on the one-row class.
    let early = records.iter().filter(|r| {
        r.validation_score.is_some()
            && r.hyperparameters.iter().any(|h| h.name == "early_stopping" && h.value == "True")
    });
    assert!(early.count() >= 1, "{:?}", records.iter().map(|r| (&r.family, &r.status)).collect::<Vec<_>>());
    // Money is read as numbers.
    let numbers = std::fs::read_to_string(dir.join("iterations/iter-0001/work/train.py")).unwrap();
    assert!(numbers.contains("NUMBERS = [\"income\"]"), "{numbers}");
    assert!(summary(&dir)["test_score"].as_f64().unwrap() > 0.8, "{}", summary(&dir));
}

#[test]
fn a_support_vector_machine_on_two_classes_is_calibrated_on_three_folds() {
    let (data, task) = untidy_task(false, "metric = \"roc_auc\"\npositive = \"yes\"\n");
    // Drafts only: the eighth on two classes and a few hundred rows is the support vector
    // machine.
    let config = data.path().join("config.toml");
    std::fs::write(&config, "[search]\ndrafts = 8\nensemble_every = 0\n").unwrap();
    let config = config.to_str().unwrap();
    let (dir, _runs) = holdout_run(&task, &["--iterations", "8", "--config", config]);
    let records = common::records(&dir);
    let svm = records.iter().find(|r| r.family == "svm").unwrap_or_else(|| {
        panic!("no svm draft: {:?}", records.iter().map(|r| &r.family).collect::<Vec<_>>())
    });
    assert_eq!(svm.status, "succeeded");
    assert!(svm.validation_score.unwrap() > 0.7, "{:?}", svm.validation_score);
    let train =
        std::fs::read_to_string(dir.join(format!("iterations/iter-{:04}/work/train.py", svm.iteration)))
            .unwrap();
    assert!(train.contains("CalibratedClassifierCV(SVC("), "{train}");
    // Its probabilities are what the runner scored: one column per class, each row summing to 1.
    let predictions = std::fs::read_to_string(
        dir.join(format!("iterations/iter-{:04}/work/predictions.csv", svm.iteration)),
    )
    .unwrap();
    let header = predictions.lines().next().unwrap();
    assert!(header.contains("proba_yes") && header.contains("proba_no"), "{header}");
}

#[test]
fn early_stopped_boosting_is_trained_again_on_every_row_for_the_rounds_it_ran() {
    let (data, task) = untidy_task(false, "metric = \"roc_auc\"\npositive = \"yes\"\n");
    // Drafts only: the fourth and fifth on two classes are the early-stopped boosting settings.
    let config = data.path().join("config.toml");
    std::fs::write(&config, "[search]\ndrafts = 5\nensemble_every = 0\n").unwrap();
    let (dir, _runs) = holdout_run(&task, &["--iterations", "5", "--config", config.to_str().unwrap()]);
    let records = common::records(&dir);
    let stopping: Vec<_> = records
        .iter()
        .filter(|r| r.hyperparameters.iter().any(|h| h.name == "early_stopping" && h.value == "True"))
        .collect();
    assert_eq!(stopping.len(), 2, "{:?}", records.iter().map(|r| &r.hyperparameters).collect::<Vec<_>>());
    for r in stopping {
        assert_eq!(r.status, "succeeded");
        let logs = dir.join(format!("iterations/iter-{:04}/logs", r.iteration));
        let train = std::fs::read_dir(&logs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with("-train.json"))
            .unwrap();
        let log: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&train).unwrap()).unwrap();
        let out = log["stdout_tail"].as_str().unwrap();
        let rows = out
            .lines()
            .find_map(|l| l.strip_prefix("trained hist_gradient_boosting on "))
            .and_then(|l| l.split(' ').next())
            .unwrap_or_else(|| panic!("{out}"));
        let rounds = out
            .lines()
            .find_map(|l| l.strip_prefix("early stopping ran "))
            .and_then(|l| l.strip_suffix(&format!(" rounds; trained again on all {rows} rows for as many")))
            .unwrap_or_else(|| panic!("not trained again on all {rows} rows: {out}"));
        let max_iter = r.hyperparameters.iter().find(|h| h.name == "max_iter").unwrap().value.parse::<u32>();
        assert!(rounds.parse::<u32>().unwrap() <= max_iter.unwrap(), "{out}");
    }
}

/// Hourly readings whose timestamps carry the offset of their season (`+01:00` in winter,
/// `+02:00` in summer: pandas refuses such a column as it is), a column with no value at all,
/// a temperature (with a `?` in every tenth row where `marked`), and a target that follows the
/// local hour.
fn dated_table(rows: std::ops::Range<usize>, marked: bool) -> String {
    let mut csv = String::from("seen,empty,temp,load\n");
    for i in rows {
        let (month, day, hour) = (1 + i % 12, 1 + i / 12 % 28, (i * 5 + i / 7) % 24);
        let offset = if (4..=10).contains(&month) { "+02:00" } else { "+01:00" };
        let temp = if marked && i % 10 == 0 { "?".to_string() } else { format!("{}", i % 13) };
        let load = 2.0 * hour as f64 + (i % 7) as f64 / 10.0;
        csv.push_str(&format!("2021-{month:02}-{day:02}T{hour:02}:00:00{offset},,{temp},{load}\n"));
    }
    csv
}

#[test]
fn changing_offsets_an_empty_column_and_markers_only_in_new_rows_break_nothing() {
    let (data, task) = held_out_task(
        dated_table(0..480, false),
        // A marker in a column that has none in the training rows.
        dated_table(480..600, true),
        "name = \"dated\"\ntarget = \"load\"\ntask = \"regression\"\nmetric = \"rmse\"\n",
    );
    let (dir, _runs) = holdout_run(&task, &["--iterations", "4"]);
    // Boosting first (it cannot bin a column without values), then the others: none failed.
    let records = common::records(&dir);
    let statuses: Vec<_> = records.iter().map(|r| (&r.family, &r.status)).collect();
    assert!(records.iter().all(|r| !r.status.starts_with("failed")), "{statuses:?}");
    assert!(records.iter().filter(|r| r.succeeded()).count() >= 3, "{statuses:?}");
    assert_eq!(records[0].family, "hist_gradient_boosting", "{statuses:?}");
    // The local hour is what the target follows (its spread is 14).
    let test = summary(&dir)["test_score"].as_f64().unwrap();
    assert!(test < 3.0, "test rmse {test}");

    // A batch of midnights has an hour (0) like any other, and its numbers may be written as
    // text.
    let input = data.path().join("midnights.csv");
    let midnights: String = (1..=5).map(|d| format!("2021-05-{d:02}T00:00:00+02:00,,\"1,000\"\n")).collect();
    std::fs::write(&input, format!("seen,empty,temp\n{midnights}")).unwrap();
    let written = common::predict(&dir, &input);
    assert_eq!(written.lines().count(), 6, "{written}");
}

/// Reviews whose verdict only their words tell: one of four liked or four disliked words among
/// fillers, a price that says nothing, every 25th review missing (its verdict a coin toss).
fn reviews(rows: std::ops::Range<usize>) -> String {
    const FILLER: [&str; 12] =
        ["the", "box", "arrived", "with", "a", "snack", "bag", "of", "crackers", "for", "my", "kids"];
    const LIKED: [&str; 4] = ["wonderful", "delicious", "fresh", "lovely"];
    const DISLIKED: [&str; 4] = ["awful", "stale", "bland", "terrible"];
    let mut csv = String::from("review,price,verdict\n");
    for i in rows {
        let h = (i as u64).wrapping_mul(2_654_435_761) % (1 << 32);
        let liked = h >> 7 & 1 == 1;
        let mut words: Vec<&str> = (0..3 + h % 5).map(|k| FILLER[((h >> (2 * k)) % 12) as usize]).collect();
        let pick = ((h >> 11) % 4) as usize;
        words.insert(
            ((h >> 13) % words.len() as u64) as usize,
            if liked { LIKED[pick] } else { DISLIKED[pick] },
        );
        let review = if i % 25 == 0 { String::new() } else { format!("\"{} order {i}\"", words.join(" ")) };
        let verdict = if liked { "liked" } else { "disliked" };
        csv.push_str(&format!("{review},{},{verdict}\n", 3 + h % 17));
    }
    csv
}

#[test]
fn free_text_is_read_for_its_words_by_every_model() {
    let (data, task) = held_out_task(
        reviews(0..480),
        reviews(480..600),
        "name = \"reviews\"\ntarget = \"verdict\"\ntask = \"binary\"\nmetric = \"accuracy\"\n",
    );
    let (dir, _runs) = holdout_run(&task, &["--iterations", "4"]);
    // Trees (boosting first) and the others alike: without the words a model is right on half.
    let records = common::records(&dir);
    let scores: Vec<_> = records.iter().map(|r| (&r.family, &r.status, r.validation_score)).collect();
    assert!(records.iter().all(|r| !r.status.starts_with("failed")), "{scores:?}");
    let good = |r: &&loop_runner::journal::IterationRecord| r.validation_score.is_some_and(|s| s > 0.8);
    assert!(records[..1].iter().any(|r| r.family == "hist_gradient_boosting" && good(&r)), "{scores:?}");
    assert!(records.iter().filter(good).any(|r| r.family != "hist_gradient_boosting"), "{scores:?}");
    let test = summary(&dir)["test_score"].as_f64().unwrap();
    assert!(test > 0.85, "test accuracy {test}");

    // New rows: words never seen, no review at all, a review of one word.
    let input = data.path().join("new.csv");
    std::fs::write(
        &input,
        "review,price\n\"a lovely fresh parcel\",4\n\"stale and awful, sadly\",9\n,5\nzzz,3\n",
    )
    .unwrap();
    let written = common::predict(&dir, &input);
    let verdicts: Vec<&str> = written.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(verdicts.len(), 4, "{written}");
    assert_eq!(&verdicts[..2], ["liked", "disliked"], "{written}");
}

#[test]
fn a_final_model_that_fails_on_the_test_split_says_why_on_the_console() {
    // Inference that trips over something only the test features have.
    let infer = PENGUINS_INFER.replace(
        "model, cat = pickle.load",
        "if a.output.endswith(\"test_predictions.csv\"):\n    raise ValueError(\"could not convert string to float: '?'\")\nmodel, cat = pickle.load",
    );
    let (output, _runs) = penguins_with_inference(infer);
    assert!(
        stderr(&output).contains(
            "iteration 1 could not be scored on the test split: inference.py failed on the test features: exit 1 (ValueError: could not convert string to float: '?')"
        ),
        "{}",
        stderr(&output)
    );
}

/// One iteration on penguins by a scripted LLM whose inference script is `infer` (and the runs
/// directory, kept while the caller looks at it).
fn penguins_with_inference(infer: String) -> (std::process::Output, tempfile::TempDir) {
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(move |req| answer(req, PENGUINS_TRAIN, &infer))));
    let runs = tempfile::tempdir().unwrap();
    let output = bin()
        .args(["run", "--agent", "openai", "--base-url", &server.base_url(), "--iterations", "1", "--task"])
        .arg(fixtures().join("penguins/task.toml"))
        .arg("--runs-dir")
        .arg(runs.path())
        .output()
        .unwrap();
    (output, runs)
}

/// A successful run of the built-in agent on `task` with a held-out split, two jobs and `args`:
/// its directory (and the runs directory, kept while the caller looks at it).
fn holdout_run(task: &Path, args: &[&str]) -> (PathBuf, tempfile::TempDir) {
    let runs = tempfile::tempdir().unwrap();
    let output = bin()
        .args(["run", "--jobs", "2", "--validation", "holdout"])
        .args(args)
        .arg("--task")
        .arg(task)
        .arg("--runs-dir")
        .arg(runs.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    (run_dir_of(&output), runs)
}
