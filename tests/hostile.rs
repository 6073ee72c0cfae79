//! Hostile agent code, bad answers and crashes, run through the real loop (not only `sandbox
//! run`) on both sandboxes: nothing a script leaves behind bends the host, reaches the labels or
//! ends the run; a scored model is never lost; the budget and the books stay exact.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::llm::{Behaviour, Server};
use common::scripted::{PENGUINS_INFER, PENGUINS_TRAIN, answer, step_of};
use common::{BACKENDS, bin, fixtures, records, run_dir_of, stderr};
use loop_runner::journal::{self, Event};
use serde_json::{Value, json};

const SECRET: &str = "SECRET-HOST-FILE-7f3a9c";

fn summary(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report/summary.json")).unwrap()).unwrap()
}

/// `loop-runner run` with the scripted server on `backend`, one iteration on a held-out split
/// unless `extra` says otherwise.
fn run_loop(backend: &str, server: &Server, task: &Path, runs: &Path, extra: &[&str]) -> Command {
    let mut cmd = bin();
    cmd.args(["run", "--agent", "openai", "--base-url", &server.base_url(), "--sandbox", backend, "--task"])
        .arg(task)
        .arg("--runs-dir")
        .arg(runs)
        .args(extra);
    if !extra.contains(&"--iterations") && !extra.contains(&"--budget") {
        cmd.args(["--iterations", "1"]);
    }
    // Scripts that fail once and then succeed rely on the fix loop, which a held-out split
    // gives every script run; cross-validation has its own test.
    if !extra.contains(&"--validation") {
        cmd.args(["--validation", "holdout"]);
    }
    cmd
}

/// Every regular file under `dir` (links not followed), with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().filter_map(Result::ok) {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push((entry.path(), std::fs::read(entry.path()).unwrap_or_default()));
            }
        }
    }
    out
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A relative link target that climbs from anywhere to `/` and then down to `host`: WASI
/// guests may only create relative links, and `..` above `/` stays at `/`.
fn climb_to(host: &Path) -> String {
    format!("{}{}", "../".repeat(40), host.display().to_string().trim_start_matches('/'))
}

#[test]
fn links_and_files_planted_by_scripts_never_bend_the_host() {
    for backend in BACKENDS {
        let victim = tempfile::tempdir().unwrap();
        let secret = victim.path().join("secret.csv");
        let secret_text = format!("prediction,proba_Adelie,proba_Chinstrap,proba_Gentoo\n{SECRET},1,0,0\n");
        std::fs::write(&secret, &secret_text).unwrap();
        // train.py trains, then plants: links to host files and directories where the runner
        // writes and reads, and its own versions of files the runner supplies.
        let train = format!(
            r#"{PENGUINS_TRAIN}
os.symlink({secret:?}, "inference.py")
os.symlink({environ:?}, "model/environ")
os.symlink({dir:?}, "model/hostdir")
os.makedirs("steps", exist_ok=True)
open("steps/plan.json", "w").write('{{"forged": true}}')
open("metrics.json", "w").write('{{"validation_score": 1.0}}')
open("README.md", "w").write("forged")
os.makedirs("input", exist_ok=True)
open("input/features.csv", "w").write("forged\n")
"#,
            secret = climb_to(&secret),
            environ = climb_to(Path::new("/proc/self/environ")),
            dir = climb_to(victim.path()),
        );
        // inference.py's first run leaves its predictions as a link to the host file (which would
        // score perfectly if read); the fixed run predicts for real.
        let infer = format!(
            r#"import os, sys
if not os.path.exists("tried"):
    open("tried", "w").write("1")
    out = sys.argv[sys.argv.index("--output") + 1]
    os.symlink({secret:?}, out)
    raise SystemExit(0)
{PENGUINS_INFER}"#,
            secret = climb_to(&secret)
        );
        let server = Server::start(vec![]);
        server.set_fallback(Behaviour::Compute(Box::new(move |req| answer(req, &train, &infer))));
        let runs = tempfile::tempdir().unwrap();
        let output = run_loop(backend, &server, &fixtures().join("penguins/task.toml"), runs.path(), &[])
            .output()
            .unwrap();
        assert!(output.status.success(), "{backend}: {}", stderr(&output));
        let dir = run_dir_of(&output);
        assert!(summary(&dir)["test_score"].as_f64().is_some(), "{backend}");
        // The host file was neither written through nor read.
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            secret_text,
            "{backend}: written through a link"
        );
        assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 1, "{backend}");
        for (path, bytes) in files_under(&dir) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(SECRET),
                "{backend}: the host file's content reached {}",
                path.display()
            );
        }
        let transcript = std::fs::read_to_string(dir.join("transcript.jsonl")).unwrap();
        assert!(transcript.contains("symbolic link"), "{backend}: the agent was told why");
        // The snapshot holds the runner's files, not the script's.
        let ws = dir.join("workspace");
        let listed = git(&ws, &["ls-tree", "-r", "--name-only", "iter-0001"]);
        assert!(
            listed.lines().all(|l| !l.starts_with("model/environ") && !l.starts_with("model/hostdir")),
            "{backend}: {listed}"
        );
        assert!(!git(&ws, &["show", "iter-0001:steps/plan.json"]).contains("forged"), "{backend}");
        assert!(!git(&ws, &["show", "iter-0001:README.md"]).contains("forged"), "{backend}");
        let metrics: Value = serde_json::from_str(&git(&ws, &["show", "iter-0001:metrics.json"])).unwrap();
        assert_eq!(metrics["status"], "succeeded", "{backend}");
        let split = metrics["split"]["id"].as_u64().unwrap();
        let features =
            std::fs::read_to_string(dir.join(format!("inputs/validation-{split}/features.csv"))).unwrap();
        assert_eq!(git(&ws, &["show", "iter-0001:input/features.csv"]), features, "{backend}");
        assert!(git(&ws, &["show", "iter-0001:inference.py"]).contains("argparse"), "{backend}");
    }
}

#[test]
fn a_script_cannot_forge_a_failure_of_the_jail() {
    // Exit 125 with the helper's own words on stderr: once a set-up failure that ended the run.
    let forged = format!(
        "import os, sys\nif not os.path.exists('tried'):\n    open('tried', 'w').write('1')\n    sys.stderr.write('loop-runner sandbox: cannot start `/usr/bin/python3`: layer seccomp\\n')\n    sys.exit(125)\n{PENGUINS_TRAIN}"
    );
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(move |req| answer(req, &forged, PENGUINS_INFER))));
    let runs = tempfile::tempdir().unwrap();
    let output = run_loop("process", &server, &fixtures().join("penguins/task.toml"), runs.path(), &[])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    assert!(summary(&dir)["test_score"].as_f64().is_some());
    let exits: Vec<_> = journal::read(&dir.join("journal.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            Event::ScriptRun { step, outcome, .. } if step == "train" => Some(outcome.exit),
            _ => None,
        })
        .collect();
    assert_eq!(exits[0], loop_runner::sandbox::Exit::Code(125), "{exits:?}");
}

#[test]
fn pythonpath_in_the_runners_environment_exposes_nothing() {
    // A project directory holding its runs, with PYTHONPATH=. (common): the interpreter's
    // sys.path must not bring the project, and so the runs' labels, into the jail.
    let project = tempfile::tempdir().unwrap();
    let snoop = r#"import argparse, os, sys
import pandas as pd
p = argparse.ArgumentParser(); p.add_argument("--input"); p.add_argument("--output"); a = p.parse_args()
X = pd.read_csv(a.input)
found = None
for root in list(sys.path) + ["/", "/tmp", "/work"]:
    if not root or not os.path.isdir(root):
        continue
    for d, dirs, files in os.walk(root):
        if d.count(os.sep) > 12:
            dirs[:] = []
        for f in files:
            if f.endswith(".csv") and "holdout" in d:
                try:
                    df = pd.read_csv(os.path.join(d, f))
                    if "species" in df.columns and len(df) == len(X):
                        found = df["species"]
                except Exception:
                    pass
print("FOUND LABELS:", found is not None)
pred = list(found) if found is not None else ["Adelie"] * len(X)
out = pd.DataFrame({"prediction": pred})
for c in ["Adelie", "Chinstrap", "Gentoo"]:
    out["proba_" + c] = [1.0 if v == c else 0.0 for v in pred]
out.to_csv(a.output, index=False)
"#;
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(move |req| answer(req, PENGUINS_TRAIN, snoop))));
    let output = run_loop("process", &server, &fixtures().join("penguins/task.toml"), Path::new("runs"), &[])
        .current_dir(project.path())
        .env("PYTHONPATH", ".")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = project.path().join(run_dir_of(&output));
    let test = std::fs::read_to_string(fixtures().join("penguins/test.csv")).unwrap();
    let adelie = test.lines().filter(|l| l.starts_with("Adelie")).count() as f64;
    let rows = (test.lines().count() - 1) as f64;
    let score = summary(&dir)["test_score"].as_f64().unwrap();
    assert!((score - adelie / rows).abs() < 1e-9, "test accuracy {score}: the labels were reachable");
}

#[test]
fn a_scored_model_is_kept_when_its_analysis_fails() {
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(|req| {
        if step_of(req) == "analyze" {
            "this is not JSON".into()
        } else {
            answer(req, PENGUINS_TRAIN, PENGUINS_INFER)
        }
    })));
    let runs = tempfile::tempdir().unwrap();
    let output =
        run_loop("wasi", &server, &fixtures().join("penguins/task.toml"), runs.path(), &[]).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let s = summary(&dir);
    assert_eq!(s["best_iteration"], 1);
    assert!(s["test_score"].as_f64().is_some());
    let record = records(&dir).remove(0);
    assert_eq!(record.status, "succeeded");
    assert!(record.analysis_error.as_deref().unwrap_or_default().contains("no valid answer"), "{record:?}");
}

/// A binary task whose positive class is rare: a random validation split easily misses it.
fn rare_class_task(dir: &Path) -> PathBuf {
    let mut csv = String::from("x1,x2,label\n");
    for i in 0..400 {
        let label = if i % 130 == 7 { "b" } else { "a" };
        csv.push_str(&format!("{},{},{label}\n", i % 17, (i * 7) % 23));
    }
    std::fs::write(dir.join("rare.csv"), csv).unwrap();
    std::fs::write(
        dir.join("task.toml"),
        "name = \"rare\"\ndata = \"rare.csv\"\ntarget = \"label\"\ntask = \"binary\"\nmetric = \"roc_auc\"\npositive = \"b\"\n",
    )
    .unwrap();
    dir.join("task.toml")
}

const RARE_TRAIN: &str = r#"import os, pickle
import pandas as pd
from sklearn.linear_model import LogisticRegression
df = pd.read_csv("data/train.csv")
y = df.pop("label")
os.makedirs("model", exist_ok=True)
pickle.dump(LogisticRegression().fit(df, y), open("model/m.pkl", "wb"))
"#;

const RARE_INFER: &str = r#"import argparse, pickle
import pandas as pd
p = argparse.ArgumentParser(); p.add_argument("--input"); p.add_argument("--output"); a = p.parse_args()
m = pickle.load(open("model/m.pkl", "rb"))
X = pd.read_csv(a.input)
out = pd.DataFrame({"prediction": m.predict(X)})
for i, c in enumerate(m.classes_):
    out["proba_" + c] = m.predict_proba(X)[:, i]
out.to_csv(a.output, index=False)
"#;

#[test]
fn a_split_that_leaves_a_class_out_of_validation_goes_back_to_the_agent() {
    let data = tempfile::tempdir().unwrap();
    let task = rare_class_task(data.path());
    // The agent proposes random (unstratified) 10% splits, a new seed per attempt, until told
    // why they do not work; then a stratified one.
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(|req| {
        if step_of(req) != "split" {
            return answer(req, RARE_TRAIN, RARE_INFER);
        }
        let rejections =
            req["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "assistant").count();
        let stratify = rejections >= 3;
        json!({"validation_fraction": 0.1, "stratify": stratify, "seed": rejections, "rationale": "try"})
            .to_string()
    })));
    let runs = tempfile::tempdir().unwrap();
    let output = run_loop("wasi", &server, &task, runs.path(), &[]).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let split_requests: Vec<Value> =
        server.requests().into_iter().map(|r| r.body).filter(|b| step_of(b) == "split").collect();
    let told = split_requests.iter().any(|b| b.to_string().contains("no row of class `b`"));
    assert!(told, "no split was refused: the test data no longer makes the point");
    let dir = run_dir_of(&output);
    assert!(summary(&dir)["test_score"].as_f64().is_some());
}

#[test]
fn the_record_names_the_model_that_actually_ran() {
    // The architecture step says logistic regression; the first train.py fails, and the fix
    // trains something else and says so.
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(|req| {
        if step_of(req) != "train" {
            return answer(req, PENGUINS_TRAIN, PENGUINS_INFER);
        }
        let is_fix = req.to_string().contains("Your train.py failed");
        let script = if is_fix { PENGUINS_TRAIN.to_string() } else { "raise SystemExit('train.csv model: no')".into() };
        let family = if is_fix { "random_forest" } else { "logistic_regression" };
        json!({"script": script, "family": family, "hyperparameters": [{"name": "n_estimators", "value": "10"}], "notes": ""})
            .to_string()
    })));
    let runs = tempfile::tempdir().unwrap();
    let output =
        run_loop("wasi", &server, &fixtures().join("penguins/task.toml"), runs.path(), &[]).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let record = records(&dir).remove(0);
    assert_eq!(record.family, "random_forest");
    assert_eq!(record.hyperparameters[0].name, "n_estimators");
}

#[test]
fn an_older_snapshot_audits_against_the_split_it_was_scored_on() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("loop-runner.toml"), "[loop]\nsplit_iterations = 2\n").unwrap();
    for f in ["penguins.csv", "train.csv", "test.csv", "task.toml"] {
        std::fs::copy(fixtures().join("penguins").join(f), data.path().join(f)).unwrap();
    }
    // Iteration 1 keeps the first split; iteration 2 holds out a different share.
    let server = Server::start(vec![]);
    let splits_asked = std::sync::atomic::AtomicUsize::new(0);
    server.set_fallback(Behaviour::Compute(Box::new(move |req| {
        if step_of(req) != "split" {
            return answer(req, PENGUINS_TRAIN, PENGUINS_INFER);
        }
        let second = splits_asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0;
        let fraction = if second { 0.3 } else { 0.2 };
        json!({"validation_fraction": fraction, "stratify": true, "seed": 0, "rationale": "x"}).to_string()
    })));
    let runs = tempfile::tempdir().unwrap();
    let output =
        run_loop("wasi", &server, &data.path().join("task.toml"), runs.path(), &["--iterations", "2"])
            .output()
            .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let splits = journal::read(&dir.join("journal.jsonl"))
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.event, Event::SplitMade { .. }))
        .count();
    assert_eq!(splits, 2, "the second iteration changed the split");
    for rev in ["iter-0001", "iter-0002"] {
        let o = bin().arg("audit").arg(&dir).arg(rev).output().unwrap();
        assert!(o.status.success(), "{rev}: {}", String::from_utf8_lossy(&o.stdout));
    }
}

#[test]
fn the_budget_counts_from_the_moment_the_command_starts() {
    // A large table takes seconds to load and split before the loop starts; a final evaluation
    // that never ends is stopped when the budget ends. The whole command fits the budget.
    let data = tempfile::tempdir().unwrap();
    let mut csv = String::from("a,b,c,d,e,f,g,h,label\n");
    for i in 0..3_000_000u64 {
        let v = |k: u64| (i.wrapping_mul(2654435761).wrapping_add(k * 40503)) % 1000;
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            v(1),
            v(2),
            v(3),
            v(4),
            v(5),
            v(6),
            v(7),
            v(8),
            i % 2
        ));
    }
    std::fs::write(data.path().join("big.csv"), csv).unwrap();
    std::fs::write(
        data.path().join("task.toml"),
        "name = \"big\"\ndata = \"big.csv\"\ntarget = \"label\"\ntask = \"binary\"\nmetric = \"accuracy\"\n",
    )
    .unwrap();
    let train = "import os\n# reads nothing from data/train.csv: a constant model\nos.makedirs('model', exist_ok=True)\nopen('model/c.txt', 'w').write('0')\n";
    let infer = r#"import argparse, time
p = argparse.ArgumentParser(); p.add_argument("--input"); p.add_argument("--output"); a = p.parse_args()
if a.output.endswith("test_predictions.csv"):
    time.sleep(3600)
n = sum(1 for _ in open(a.input)) - 1
with open(a.output, "w") as f:
    f.write("prediction\n" + "0\n" * n)
"#;
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(move |req| answer(req, train, infer))));
    let runs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = run_loop("wasi", &server, &data.path().join("task.toml"), runs.path(), &["--budget", "30s"])
        .output()
        .unwrap();
    let took = started.elapsed();
    let dir = run_dir_of(&output);
    let entries = journal::read(&dir.join("journal.jsonl")).unwrap();
    let Event::Session { started_at, .. } = &entries[1].event else { panic!("no session entry") };
    let session_start = humantime::parse_rfc3339_weak(started_at).unwrap();
    let first_entry = humantime::parse_rfc3339_weak(&entries[0].at).unwrap();
    let setup = first_entry.duration_since(session_start).unwrap_or_default();
    eprintln!("set-up before the run was created: {setup:?}; whole command: {took:?}");
    assert!(
        setup > Duration::from_millis(800),
        "set-up took only {setup:?}: the test no longer makes the point"
    );
    let tail: Vec<String> =
        entries.iter().rev().take(12).rev().map(|e| format!("{} {:?}", e.at, e.event)).collect();
    assert!(
        took < Duration::from_millis(30_600),
        "a 30 s budget took {took:?} (set-up {setup:?}); journal:\n{}",
        tail.join("\n")
    );
    // It is stopped short of the end by what the report needs (2 s of the 6 s reserve).
    assert!(
        took > Duration::from_secs(27),
        "the final evaluation used the budget to its end, less the report's time: {took:?}\n{}",
        stderr(&output)
    );
}

#[test]
fn a_run_killed_during_a_long_script_is_charged_for_that_time() {
    let slow = format!("import time\ntime.sleep(50)\n{PENGUINS_TRAIN}");
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(move |req| answer(req, &slow, PENGUINS_INFER))));
    let runs = tempfile::tempdir().unwrap();
    let mut child =
        run_loop("wasi", &server, &fixtures().join("penguins/task.toml"), runs.path(), &["--budget", "10m"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_secs(42));
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let dir = run_dir_of(&output);
    let recovered = loop_runner::runner::recover(&journal::read(&dir.join("journal.jsonl")).unwrap());
    assert!(
        recovered.elapsed > Duration::from_secs(30),
        "resume would count {:?} of the 42 s before the kill",
        recovered.elapsed
    );
}

#[test]
fn failed_steps_are_paid_for_and_unpriced_models_are_said() {
    let task = fixtures().join("penguins/task.toml");
    // Every plan answer is rejected: the calls cost money all the same.
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(|req| {
        if step_of(req) == "plan" {
            "{\"nope\": 1}".into()
        } else {
            answer(req, PENGUINS_TRAIN, PENGUINS_INFER)
        }
    })));
    let config = tempfile::tempdir().unwrap();
    let priced = config.path().join("priced.toml");
    std::fs::write(
        &priced,
        "[agent]\nmodel = \"m\"\nmax_attempts = 2\n[agent.prices.m]\ninput_per_million = 1000.0\noutput_per_million = 1000.0\n",
    )
    .unwrap();
    let runs = tempfile::tempdir().unwrap();
    let output = run_loop("wasi", &server, &task, runs.path(), &["--config", priced.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    let entries = journal::read(&dir.join("journal.jsonl")).unwrap();
    let failed = entries
        .iter()
        .find_map(|e| match &e.event {
            Event::StepFinished { ok: false, cost_usd, prompt_tokens, calls, .. } => {
                Some((*cost_usd, *prompt_tokens, *calls))
            }
            _ => None,
        })
        .unwrap();
    assert!(failed.0 > 0.0 && failed.1 > 0 && failed.2 == Some(2), "{failed:?}");
    assert!((loop_runner::runner::recover(&entries).spend.cost_usd - failed.0).abs() < 1e-12);

    // A model without a price: said at the start and in `status`; a spend cap is refused.
    let unpriced = config.path().join("unpriced.toml");
    std::fs::write(&unpriced, "[agent]\nmodel = \"free-lunch\"\n").unwrap();
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(|req| answer(req, PENGUINS_TRAIN, PENGUINS_INFER))));
    let output = run_loop("wasi", &server, &task, runs.path(), &["--config", unpriced.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("`free-lunch` has no price"), "{}", stderr(&output));
    let status = bin().arg("status").arg(run_dir_of(&output)).output().unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("unpriced"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    std::fs::write(&unpriced, "[agent]\nmodel = \"free-lunch\"\nspend_cap_usd = 1.0\n").unwrap();
    let output = run_loop("wasi", &server, &task, runs.path(), &["--config", unpriced.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("cannot hold") && stderr(&output).contains("[agent.prices"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_undefined_test_score_is_reported_with_its_reason() {
    // The test file holds one class only: its AUC is undefined, not NaN.
    let data = tempfile::tempdir().unwrap();
    let mut train = String::from("x,label\n");
    for i in 0..60 {
        train.push_str(&format!("{i},{}\n", if i % 2 == 0 { "a" } else { "b" }));
    }
    std::fs::write(data.path().join("train.csv"), train).unwrap();
    std::fs::write(data.path().join("test.csv"), "x,label\n1,a\n2,a\n3,a\n").unwrap();
    std::fs::write(
        data.path().join("task.toml"),
        "name = \"one\"\ntrain = \"train.csv\"\ntest = \"test.csv\"\ntarget = \"label\"\ntask = \"binary\"\nmetric = \"roc_auc\"\n",
    )
    .unwrap();
    let runs = tempfile::tempdir().unwrap();
    let output = bin()
        .args(["run", "--iterations", "1", "--task"])
        .arg(data.path().join("task.toml"))
        .arg("--runs-dir")
        .arg(runs.path())
        .output()
        .unwrap();
    let dir = run_dir_of(&output);
    let s = summary(&dir);
    assert!(s["test_score"].is_null(), "{s}");
    let detail = journal::read(&dir.join("journal.jsonl"))
        .unwrap()
        .into_iter()
        .find_map(|e| match e.event {
            Event::FinalEvaluation { detail, .. } => Some(detail),
            _ => None,
        })
        .unwrap();
    assert!(detail.contains("undefined") && detail.contains("only class `a`"), "{detail}");
    // The console says why too, in a line.
    let console = stderr(&output);
    assert!(console.contains("could not be scored on the test split: test score undefined"), "{console}");
    let report = std::fs::read_to_string(dir.join("report/REPORT.md")).unwrap();
    assert!(report.contains("only class `a`") && !report.contains("NaN"), "{report}");
}

#[test]
fn the_api_key_leaves_the_runners_environment_once_read() {
    const KEY: &str = "sk-scrub-me-0123456789abcdef";
    let server = Server::start(vec![Behaviour::Hang(Duration::from_secs(4))]);
    let mut child = bin()
        .args(["agent", "check", "--base-url", &server.base_url(), "--model", "m", "--timeout", "3s"])
        .env("OPENAI_API_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The request is in flight (the server received it) when the environment is looked at.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.requests().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(!server.requests().is_empty(), "agent check never called the server");
    assert!(server.requests()[0].headers.contains(KEY), "the key was still sent");
    assert!(!String::from_utf8_lossy(&environ).contains(KEY), "the key is still in /proc/<pid>/environ");
}

#[test]
fn waived_sandbox_layers_are_named_in_the_summary_and_the_report() {
    // As an unprivileged user the pids cgroup cannot be made; the user waives it, and the run
    // says what that leaves unprotected.
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let binary = home.path().join("loop-runner");
    std::fs::copy(env!("CARGO_BIN_EXE_loop-runner"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut csv = String::from("x,label\n");
    for i in 0..60 {
        csv.push_str(&format!("{i},{}\n", if i % 3 == 0 { "a" } else { "b" }));
    }
    std::fs::write(home.path().join("d.csv"), csv).unwrap();
    std::fs::write(
        home.path().join("task.toml"),
        "name = \"d\"\ndata = \"d.csv\"\ntarget = \"label\"\ntask = \"binary\"\nmetric = \"accuracy\"\n",
    )
    .unwrap();
    let train = "import csv, json, os\nrows = list(csv.DictReader(open('data/train.csv')))\nlabels = [r['label'] for r in rows]\nos.makedirs('model', exist_ok=True)\njson.dump({'top': max(set(labels), key=labels.count), 'classes': sorted(set(labels))}, open('model/m.json', 'w'))\n";
    let infer = "import argparse, csv, json\np = argparse.ArgumentParser(); p.add_argument('--input'); p.add_argument('--output'); a = p.parse_args()\nm = json.load(open('model/m.json'))\nn = sum(1 for _ in csv.DictReader(open(a.input)))\nwith open(a.output, 'w') as f:\n    f.write('prediction,' + ','.join('proba_' + c for c in m['classes']) + '\\n')\n    for _ in range(n):\n        f.write(m['top'] + ',' + ','.join('1' if c == m['top'] else '0' for c in m['classes']) + '\\n')\n";
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(move |req| answer(req, train, infer))));
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .env_clear()
        .env("HOME", home.path())
        .env("LOOP_RUNNER_HOME", home.path())
        .args(["run", "--agent", "openai", "--base-url", &server.base_url(), "--iterations", "1"])
        .args([
            "--sandbox",
            "process",
            "--python",
            "/usr/bin/python3",
            "--allow-weaker-sandbox",
            "cgroup-pids",
        ])
        .arg("--task")
        .arg(home.path().join("task.toml"))
        .arg("--runs-dir")
        .arg(home.path().join("runs"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("sandbox protection off: cgroup-pids"), "{}", stderr(&output));
    let dir = run_dir_of(&output);
    // The bag (the final model) needs pandas, which this interpreter lacks: it gives way to
    // the selected iteration rather than leave the run without a test score.
    assert_eq!(summary(&dir)["final_iteration"], 1);
    let waived = summary(&dir)["sandbox_waived"].clone();
    assert!(
        waived
            .as_array()
            .is_some_and(|w| w.len() == 1 && w[0].as_str().unwrap().starts_with("cgroup-pids: ")),
        "{waived}"
    );
    let report = std::fs::read_to_string(dir.join("report/REPORT.md")).unwrap();
    assert!(report.contains("Sandbox protections that were off") && report.contains("fork bomb"), "{report}");
}

/// Writes the labels of every row in data/train.csv, keyed by the rest of the row, to `paths`.
const STASH_LABELS: &str = r#"import os
import pandas as pd
df = pd.read_csv("data/train.csv")
y = df.pop("species")
keys = df.apply(lambda r: ",".join(map(str, r)), axis=1)
for path in ["stash.csv", "model/stash.csv", "/tmp/stash.csv"]:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        pd.DataFrame({"key": keys, "label": y}).to_csv(path, index=False, mode="a", header=not os.path.exists(path))
    except OSError:
        pass
"#;

/// Predicts from any stash it finds, else a constant class.
const PREDICT_FROM_STASH: &str = r#"import argparse, os
import pandas as pd
p = argparse.ArgumentParser(); p.add_argument("--input"); p.add_argument("--output"); a = p.parse_args()
X = pd.read_csv(a.input)
keys = X.apply(lambda r: ",".join(map(str, r)), axis=1)
known = {}
for path in ["stash.csv", "model/stash.csv", "/tmp/stash.csv", "../stash.csv", "../../work/stash.csv"]:
    try:
        s = pd.read_csv(path)
        known.update(zip(s["key"], s["label"]))
    except (OSError, ValueError):
        pass
pred = [known.get(k, "Adelie") for k in keys]
out = pd.DataFrame({"prediction": pred})
for c in ["Adelie", "Chinstrap", "Gentoo"]:
    out["proba_" + c] = [1.0 if p == c else 0.0 for p in pred]
out.to_csv(a.output, index=False)
"#;

#[test]
fn labels_stashed_by_one_script_never_reach_a_folds_inference() {
    for backend in BACKENDS {
        // explore.py sees every training row; it and train.py stash the labels wherever they can
        // write; inference.py predicts from any stash it can read, else the commonest class.
        let train = format!("{STASH_LABELS}\nopen('model/done', 'w').write('1')\n");
        let server = Server::start(vec![]);
        server.set_fallback(Behaviour::Compute(Box::new(move |req| {
            if step_of(req) == "explore" {
                return json!({"notes": "stashed", "script": STASH_LABELS}).to_string();
            }
            answer(req, &train, PREDICT_FROM_STASH)
        })));
        let runs = tempfile::tempdir().unwrap();
        let task = fixtures().join("penguins/task.toml");
        let output =
            run_loop(backend, &server, &task, runs.path(), &["--validation", "cv"]).output().unwrap();
        assert!(output.status.success(), "{backend}: {}", stderr(&output));
        let dir = run_dir_of(&output);
        let record = records(&dir).remove(0);
        // The commonest class's share, as predicting it everywhere scores.
        let score = record.validation_score.unwrap_or_else(|| panic!("{backend}: {record:?}"));
        assert!(score < 0.5, "{backend}: a fold's inference read stashed labels (accuracy {score})");
        assert!(
            dir.join("iterations/iter-0001/work/stash.csv").exists(),
            "{backend}: the stash was not made: the test no longer makes the point"
        );
    }
}

#[test]
fn links_left_in_a_folds_model_never_reach_the_bag_made_of_it() {
    for backend in BACKENDS {
        let victim = tempfile::tempdir().unwrap();
        let secret = victim.path().join("secret.txt");
        std::fs::write(&secret, SECRET).unwrap();
        // Every fold's train.py leaves, beside its model, links to a host file and directory and
        // a named pipe: the fold models are kept after the fold and the bag is made of them.
        let train = format!(
            r#"{PENGUINS_TRAIN}
os.symlink({secret:?}, "model/secret.txt")
os.symlink({dir:?}, "model/hostdir")
try:
    os.mkfifo("model/pipe")  # not in WASI
except (AttributeError, OSError):
    pass
"#,
            secret = climb_to(&secret),
            dir = climb_to(victim.path()),
        );
        let server = Server::start(vec![]);
        server.set_fallback(Behaviour::Compute(Box::new(move |req| answer(req, &train, PENGUINS_INFER))));
        let runs = tempfile::tempdir().unwrap();
        let task = fixtures().join("penguins/task.toml");
        let output =
            run_loop(backend, &server, &task, runs.path(), &["--validation", "cv"]).output().unwrap();
        assert!(output.status.success(), "{backend}: {}", stderr(&output));
        let dir = run_dir_of(&output);
        let bag = records(&dir).pop().unwrap();
        assert_eq!(bag.operation, loop_runner::search::Operation::Refit, "{backend}");
        assert!(
            bag.hyperparameters.iter().any(|h| h.value.contains("its cross-validation models")),
            "{backend}: the bag was trained again, so the kept models were not used: {:?}",
            bag.hyperparameters
        );
        assert!(summary(&dir)["test_score"].as_f64().is_some(), "{backend}");
        assert_eq!(summary(&dir)["final_iteration"], bag.iteration, "{backend}");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), SECRET, "{backend}");
        assert_eq!(std::fs::read_dir(victim.path()).unwrap().count(), 1, "{backend}");
        for (path, bytes) in files_under(&dir) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(SECRET),
                "{backend}: the host file's content reached {}",
                path.display()
            );
        }
        let listed = git(
            &dir.join("workspace"),
            &["ls-tree", "-r", "--name-only", &format!("iter-{:04}", bag.iteration)],
        );
        assert!(listed.contains("members/fold-5/model/model.pkl"), "{backend}: {listed}");
        assert!(
            listed
                .lines()
                .all(|l| !l.ends_with("secret.txt") && !l.contains("hostdir") && !l.ends_with("pipe")),
            "{backend}: {listed}"
        );
    }
}

/// `cmd` run in a mount namespace of its own where `mount` is a tmpfs of `size` (`unshare`, as
/// an unprivileged user too). After it, the shell copies the run's journal, summary and git log
/// to `out` and prints the filesystem's free bytes: the tmpfs is gone when the namespace ends.
fn on_a_small_filesystem(cmd: &Command, mount: &Path, size: &str, out: &Path) -> Command {
    const SHELL: &str = r#"m="$1"; size="$2"; out="$3"; shift 3
mount -t tmpfs -o size="$size" none "$m" || exit 97
"$@"; rc=$?
for d in "$m"/runs/*/; do
  cp "$d/journal.jsonl" "$out/"; cp "$d/report/summary.json" "$out/" 2>/dev/null
  git -C "$d/workspace" log --format=%s iterations > "$out/log.txt"
done
echo "free bytes: $(( $(stat -f -c %a "$m") * $(stat -f -c %S "$m") ))"
exit $rc"#;
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", SHELL, "sh"])
        .arg(mount)
        .arg(size)
        .arg(out)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

#[test]
fn a_script_filling_the_disk_stops_the_loop_before_a_commit_fails() {
    // Each iteration leaves 24 MiB that do not compress (its files, and their copy in git):
    // on a 256 MiB filesystem the run must stop starting iterations while the end of the run
    // still fits, instead of failing a commit with ENOSPC and ending without a final model.
    let train = format!("{PENGUINS_TRAIN}open('model/pad.bin', 'wb').write(os.urandom(24 << 20))\n");
    let server = Server::start(vec![]);
    server.set_fallback(Behaviour::Compute(Box::new(move |req| answer(req, &train, PENGUINS_INFER))));
    let mount = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let min_free = 32u64 << 20;
    let run = run_loop(
        "wasi",
        &server,
        &fixtures().join("penguins/task.toml"),
        &mount.path().join("runs"),
        &["--iterations", "10", "--jobs", "1", "--min-free-disk", "32MiB"],
    );
    let output = on_a_small_filesystem(&run, mount.path(), "256m", out.path()).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), stderr(&output));
    assert_ne!(output.status.code(), Some(97), "no tmpfs could be mounted (unshare --user --mount): {text}");
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("disk nearly full"), "{text}");
    let free: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("free bytes: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no free space reported: {text}"));
    assert!(free >= min_free, "the run left only {free} bytes free, under --min-free-disk: {text}");

    // The shell copied the journal out of the run directory, which went with the tmpfs.
    let finished: Vec<u32> = records(out.path()).iter().map(|r| r.iteration).collect();
    let entries = journal::read(&out.path().join("journal.jsonl")).unwrap();
    let Some(Event::RunFinished { reason, test_score, final_iteration, .. }) =
        entries.last().map(|e| &e.event)
    else {
        panic!("the run did not finish: {text}")
    };
    assert!(reason.starts_with("disk nearly full"), "{reason}");
    assert!(test_score.is_some() && final_iteration.is_some(), "no scored final model: {text}");
    // The loop ran while there was room (some of the ten asked for), and every iteration it finished,
    // the refit included, is committed.
    assert!((3..10).contains(&finished.len()), "{finished:?}: {text}");
    eprintln!("iterations {finished:?}, {free} bytes free at the end; {reason}");
    let log = std::fs::read_to_string(out.path().join("log.txt")).unwrap();
    for n in &finished {
        assert!(log.contains(&format!("iteration {n}:")), "iteration {n} is not committed:\n{log}");
    }
}

#[test]
fn a_run_on_a_disk_without_room_starts_no_iteration_and_says_why() {
    let runs = tempfile::tempdir().unwrap();
    let output = bin()
        .args(["run", "--iterations", "3", "--min-free-disk", "1000TiB", "--task"])
        .arg(fixtures().join("penguins/task.toml"))
        .arg("--runs-dir")
        .arg(runs.path())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), stderr(&output));
    assert_eq!(output.status.code(), Some(1), "no model was made: {text}");
    assert!(text.contains("disk nearly full") && text.contains("min_free_disk 1000.0 TiB"), "{text}");
    let dir = run_dir_of(&output);
    let entries = journal::read(&dir.join("journal.jsonl")).unwrap();
    assert!(!entries.iter().any(|e| matches!(e.event, Event::IterationStarted { .. })));
    let Some(Event::RunFinished { reason, .. }) = entries.last().map(|e| &e.event) else {
        panic!("the run did not finish: {text}")
    };
    assert!(reason.starts_with("disk nearly full"), "{reason}");
    assert!(dir.join("report/REPORT.md").is_file());
}

/// Pids of the process sandbox's helpers whose plan lies under `dir`.
fn sandbox_helpers_under(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("__sandbox-exec") && cmdline.contains(&needle)
        })
        .collect()
}

/// The entries of `dir` whose names start with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

#[test]
fn a_script_and_its_scratch_space_go_with_a_runner_killed_by_sigkill() {
    // A script fills its /tmp and sleeps; the runner is killed with SIGKILL, so nothing of it
    // cleans up. The script dies with it, and the next loop-runner to open the sandbox removes
    // what the dead one left.
    let train = format!(
        "{PENGUINS_TRAIN}import time\nopen('/tmp/junk', 'wb').write(os.urandom(8 << 20))\nopen('started', 'w').write('1')\ntime.sleep(300)\n"
    );
    for (backend, prefix) in [("wasi", "loop-runner-tmp-"), ("process", "loop-runner-jail-")] {
        let temp = tempfile::tempdir().unwrap();
        let server = Server::start(vec![]);
        let train = train.clone();
        server.set_fallback(Behaviour::Compute(Box::new(move |req| answer(req, &train, PENGUINS_INFER))));
        let runs = tempfile::tempdir().unwrap();
        let mut child = run_loop(backend, &server, &fixtures().join("penguins/task.toml"), runs.path(), &[])
            .env("TMPDIR", temp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(runs.path().join("stderr.txt")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !files_under(runs.path()).iter().any(|(p, _)| p.ends_with("work/started")) {
            let said = || std::fs::read_to_string(runs.path().join("stderr.txt")).unwrap_or_default();
            assert!(child.try_wait().unwrap().is_none(), "{backend}: the run ended: {}", said());
            assert!(Instant::now() < deadline, "{backend}: train.py never started: {}", said());
            std::thread::sleep(Duration::from_millis(100));
        }
        let helpers = sandbox_helpers_under(temp.path());
        assert_eq!(helpers.is_empty(), backend == "wasi", "{backend}: helper processes {helpers:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        // The script dies with its runner: nothing of it runs on unwatched, beside a resumed run.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sandbox_helpers_under(temp.path()).is_empty() {
            assert!(Instant::now() < deadline, "{backend}: the jail outlived its runner: {helpers:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = named(temp.path(), prefix);
        assert_eq!(left.len(), 1, "{backend}: the killed run's scratch directory: {left:?}");
        if backend == "wasi" {
            let junk = std::fs::metadata(left[0].join("tmp/junk")).unwrap();
            assert_eq!(junk.len(), 8 << 20, "the script's /tmp is what was left");
        }

        let work = tempfile::tempdir().unwrap();
        let next = {
            std::fs::write(work.path().join("main.py"), "print('hello')\n").unwrap();
            let mut cmd = bin();
            cmd.args(["sandbox", "run", "--json", "--sandbox", backend, "--work"])
                .arg(work.path())
                .arg(work.path().join("main.py"))
                .env("TMPDIR", temp.path());
            cmd.output().unwrap()
        };
        assert!(next.status.success(), "{backend}: {}", stderr(&next));
        assert!(
            !left[0].exists(),
            "{backend}: the dead run's scratch directory is still there: {:?}",
            named(temp.path(), prefix)
        );
        assert!(named(temp.path(), prefix).is_empty(), "{backend}: the next run cleaned up after itself too");
    }
}
