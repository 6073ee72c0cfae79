//! Snapshots after a run: they run outside loop-runner, `checkout` and `predict` use them,
//! `audit` reproduces them bit for bit and catches tampering, `replay` reproduces a whole run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{bin, fixtures, shared_dir};

/// One finished run on a held-out split (its snapshots carry their validation predictions), shared
/// by the tests that only read it; tests that tamper copy it first.
fn shared_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let runs = shared_dir("snapshots-run");
        let output = bin()
            .args(["run", "--iterations", "3", "--validation", "holdout", "--task"])
            .arg(fixtures().join("penguins/task.toml"))
            .arg("--runs-dir")
            .arg(&runs)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        PathBuf::from(String::from_utf8_lossy(&output.stdout).lines().next().unwrap())
    })
}

/// A private copy of the shared run.
fn copy_of_run() -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("run");
    let status = Command::new("cp").arg("-a").arg(shared_run()).arg(&dest).status().unwrap();
    assert!(status.success());
    (parent, dest)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn audit(dir: &Path, extra: &[&str]) -> Output {
    bin().arg("audit").arg(dir).args(extra).output().unwrap()
}

#[test]
fn audit_reproduces_a_snapshot_bit_for_bit() {
    let o = audit(shared_run(), &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("audit passed") && stdout(&o).contains("validation predictions sha256"));
    let o = audit(shared_run(), &["iter-0002", "--retrain"]);
    assert!(o.status.success(), "{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("model/model.pkl (retrained)"), "{}", stdout(&o));
}

#[test]
fn audit_catches_a_tampered_model_script_or_data_file() {
    // A model file edited in the checked-out workspace.
    let (_keep, run) = copy_of_run();
    let model = run.join("workspace/model/model.pkl");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&model, bytes).unwrap();
    let o = audit(&run, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("model/model.pkl modified"), "{}", stdout(&o));

    // A script changed in git history: a new commit with another inference.py under the old tag.
    let (_keep, run) = copy_of_run();
    let ws = run.join("workspace");
    let git = |args: &[&str]| {
        let o = Command::new("git").arg("-C").arg(&ws).args(args).output().unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    std::fs::write(ws.join("inference.py"), "print('tampered')\n").unwrap();
    git(&["-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "tamper"]);
    let o = audit(&run, &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("history was rewritten"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The runner's private validation labels (of the split the snapshot was scored on) changed.
    let (_keep, run) = copy_of_run();
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("workspace/metrics.json")).unwrap()).unwrap();
    let split = metrics["split"]["id"].as_u64().unwrap();
    let name = format!("holdout/validation-{split}.csv");
    let labels = run.join(&name);
    let text = std::fs::read_to_string(&labels).unwrap();
    let tampered = text.replacen("Adelie", "Gentoo", 1);
    std::fs::write(&labels, tampered).unwrap();
    let o = audit(&run, &[]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.lines().any(|l| l.starts_with(&format!("data {name}")) && l.contains("MISMATCH")), "{out}");
}

#[test]
fn replay_reproduces_every_snapshot_and_names_a_divergence() {
    let replays = tempfile::tempdir().unwrap();
    let o = bin().arg("replay").arg(shared_run()).arg("--runs-dir").arg(replays.path()).output().unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    // Three iterations and the refit of the best.
    assert!(stdout(&o).contains("replay reproduced all 4 iterations"), "{}", stdout(&o));

    // A run whose recorded inputs no longer produce the recorded requests.
    let (_keep, run) = copy_of_run();
    let manifest_path = run.join("run.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["profile"]["rows"] = serde_json::json!(12345);
    std::fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();
    let o = bin().arg("replay").arg(&run).arg("--runs-dir").arg(replays.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("replay diverged at step `plan` (iteration 1"), "{out}");
    assert!(out.contains("`context.profile.rows` differs") && out.contains("recorded: 275"), "{out}");
}

#[test]
fn checkout_and_predict_use_a_snapshot() {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("iter2");
    let o = bin().arg("checkout").arg(shared_run()).arg("iter-0002").arg(&dest).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["train.py", "inference.py", "model/model.pkl", "metrics.json", "README.md"] {
        assert!(dest.join(f).is_file(), "{f}");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dest.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["iteration"], 2);

    // New data without the target column.
    let test = std::fs::read_to_string(fixtures().join("penguins/test.csv")).unwrap();
    let features: String = test.lines().map(|l| l.split_once(',').unwrap().1).collect::<Vec<_>>().join("\n");
    let input = out.path().join("new.csv");
    std::fs::write(&input, features + "\n").unwrap();
    let written = common::predict(shared_run(), &input);
    assert_eq!(written.lines().count(), test.lines().count());
    assert!(written.starts_with("prediction,"));
}

#[test]
fn a_snapshot_runs_with_an_ordinary_python_outside_loop_runner() {
    let python = std::env::var("LOOP_RUNNER_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_sklearn = Command::new(&python)
        .args(["-c", "import sklearn, pandas"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        has_sklearn,
        "this test runs a snapshot with native `{python}`, which needs scikit-learn and pandas: `{python} -m pip install scikit-learn pandas` (.ci/run does)"
    );
    let clone = tempfile::tempdir().unwrap();
    let dest = clone.path().join("snapshot");
    let o = Command::new("git")
        .arg("clone")
        .arg("-q")
        .arg("-b")
        .arg("best")
        .arg(shared_run().join("workspace"))
        .arg(&dest)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let native = |args: &[&str]| {
        let o =
            Command::new(&python).args(args).current_dir(&dest).env("OMP_NUM_THREADS", "1").output().unwrap();
        assert!(o.status.success(), "{python} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    std::fs::remove_dir_all(dest.join("model")).unwrap();
    native(&["train.py"]);
    native(&["inference.py", "--input", "input/features.csv", "--output", "native.csv"]);
    let native_preds = std::fs::read_to_string(dest.join("native.csv")).unwrap();
    let sandbox_preds = std::fs::read_to_string(dest.join("predictions.csv")).unwrap();
    assert_eq!(native_preds.lines().count(), sandbox_preds.lines().count());
    // The same labels come out (probabilities may differ in the last bits across builds).
    let labels = |text: &str| {
        text.lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect::<Vec<_>>()
    };
    let (a, b) = (labels(&native_preds), labels(&sandbox_preds));
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert!(same * 100 >= a.len() * 95, "{same} of {} predictions agree", a.len());
}
