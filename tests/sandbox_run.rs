//! `loop-runner sandbox run` on real scripts: the positive path, exit codes, reproducibility, and
//! clear errors when the runtime is missing.

mod common;

use common::{bin, fixtures, run_json, sandbox_run};
use loop_runner::sandbox::Exit;

#[test]
fn trains_a_sklearn_model_on_a_fixture_and_the_host_reads_the_outputs() {
    let work = tempfile::tempdir().unwrap();
    let script = r#"
import json, pickle
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import train_test_split
df = pd.read_csv("/data/train.csv")
y = df.pop("Status")
X = pd.get_dummies(df)
X_tr, X_va, y_tr, y_va = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
model = HistGradientBoostingClassifier(random_state=0).fit(X_tr, y_tr)
with open("model.pkl", "wb") as f:
    pickle.dump(model, f)
with open("metrics.json", "w") as f:
    json.dump({"accuracy": model.score(X_va, y_va), "rows": len(df)}, f)
print("trained")
"#;
    std::fs::write(work.path().join("train.py"), script).unwrap();
    let mut cmd = bin();
    cmd.args(["sandbox", "run", "--json", "--work"])
        .arg(work.path())
        .arg("--mount")
        .arg(format!("{}:/data", fixtures().join("credit").display()))
        .arg(work.path().join("train.py"));
    let run = run_json(cmd);
    let o = &run.outcome;
    assert!(o.success(), "{}\n{}", o.summary(), o.stderr.text);
    assert_eq!(o.stdout.text, "trained\n");
    assert!(run.output.status.success());
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.path().join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["rows"], 3563);
    let accuracy = metrics["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.7 && accuracy < 1.0, "{accuracy}");
    let model = o.file("/work/model.pkl").expect("model listed");
    let on_host = std::fs::read(work.path().join("model.pkl")).unwrap();
    assert_eq!(model.size, on_host.len() as u64);
    assert_eq!(model.sha256, loop_runner::fsx::sha256_bytes(&on_host));
    assert!(o.peak_memory_bytes > 10 << 20);
}

#[test]
fn exit_codes_and_tracebacks_come_back() {
    let run = sandbox_run("import sys\nprint('bye')\nsys.exit(3)\n", &[]);
    assert_eq!(run.outcome.exit, Exit::Code(3));
    assert_eq!(run.outcome.limit, None);
    assert_eq!(run.output.status.code(), Some(1), "a failed script is a failed experiment");

    let run = sandbox_run("def f():\n    raise ValueError('bad column')\nf()\n", &[]);
    assert_eq!(run.outcome.exit, Exit::Code(1));
    assert!(run.outcome.stderr.text.contains("ValueError: bad column"), "{}", run.outcome.stderr.text);
    assert!(run.outcome.stderr.text.contains("main.py"), "{}", run.outcome.stderr.text);
}

#[test]
fn scripts_see_their_arguments_and_work_dir() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("main.py"),
        "import os, sys\nprint(sys.argv)\nprint(os.getcwd())\nopen('rel.txt', 'w').write('x')\n",
    )
    .unwrap();
    let mut cmd = bin();
    cmd.args(["sandbox", "run", "--json", "--work"])
        .arg(work.path())
        .arg(work.path().join("main.py"))
        .args(["--", "--input", "a b.csv"]);
    let run = run_json(cmd);
    assert!(run.outcome.success(), "{}", run.outcome.stderr.text);
    assert_eq!(run.stdout(), "['/work/main.py', '--input', 'a b.csv']\n/work\n");
    assert!(work.path().join("rel.txt").is_file(), "relative paths resolve in the work dir");
}

#[test]
fn same_seed_same_bytes() {
    let script = "import os, random\nimport numpy as np\nprint(os.urandom(8).hex(), random.random(), np.random.default_rng().integers(1 << 30), hash('abc'))\n";
    let a = sandbox_run(script, &["--seed", "7"]);
    let b = sandbox_run(script, &["--seed", "7"]);
    let c = sandbox_run(script, &["--seed", "8"]);
    assert!(a.outcome.success(), "{}", a.outcome.stderr.text);
    assert_eq!(a.stdout(), b.stdout());
    assert_ne!(a.stdout(), c.stdout());
}

#[test]
fn missing_runtime_is_a_clear_setup_error() {
    let empty = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("main.py"), "print(1)\n").unwrap();
    let output = bin()
        .env("LOOP_RUNNER_HOME", empty.path())
        .args(["sandbox", "run"])
        .arg(work.path().join("main.py"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not installed"), "{stderr}");
    assert!(stderr.contains("hint: run `loop-runner setup`"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_mounts_are_usage_errors() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("main.py"), "print(1)\n").unwrap();
    let output = bin()
        .args(["sandbox", "run", "--mount", "/definitely/not/here:/data"])
        .arg(work.path().join("main.py"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/definitely/not/here"), "{stderr}");

    let output = bin()
        .args(["sandbox", "run", "--mount", "a:b:xx"])
        .arg(work.path().join("main.py"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown access"));
}

#[test]
fn the_preimport_snapshot_and_a_fresh_interpreter_compute_the_same_model() {
    // The pre-import snapshot must behave like a freshly started interpreter: same results,
    // its own arguments and environment, nothing left over from the moment it was taken.
    let script = r#"
import hashlib, os, sys
import numpy as np
from sklearn.ensemble import RandomForestClassifier
X = np.random.default_rng(1).normal(size=(200, 5))
y = (X[:, 0] + X[:, 1] > 0).astype(int)
proba = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y).predict_proba(X)
print(hashlib.sha256(proba.tobytes()).hexdigest())
print(sys.argv[1:], os.environ.get("RUN_TAG"), os.getcwd())
"#;
    let outputs: Vec<String> = ["preimport", "snapshot"]
        .iter()
        .map(|flavor| {
            let run = sandbox_run(script, &["--flavor", flavor, "--env", "RUN_TAG=t1", "--", "a1"]);
            assert!(run.outcome.success(), "{flavor}: {}", run.outcome.stderr.text);
            run.stdout().to_string()
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    assert!(outputs[0].ends_with("['a1'] t1 /work\n"), "{}", outputs[0]);
}

#[test]
fn the_process_sandbox_trains_with_native_scikit_learn_and_records_its_layers() {
    let work = tempfile::tempdir().unwrap();
    let mut cmd = bin();
    cmd.args(["sandbox", "run", "--json", "--sandbox", "process", "--work"])
        .arg(work.path())
        .arg("--mount")
        .arg(format!("{}:/data", fixtures().join("credit").display()))
        .arg(fixtures().join("scripts/train_credit.py"));
    let run = run_json(cmd);
    assert!(run.outcome.success(), "{}\n{}", run.outcome.summary(), run.outcome.stderr.text);
    assert!(run.stdout().contains("validation ROC AUC 0.8"), "{}", run.stdout());
    assert!(run.outcome.file("/work/model.pkl").is_some());
    assert!(run.outcome.peak_memory_bytes > 50 << 20);
}

#[test]
fn fuel_bounds_the_instructions_a_guest_may_execute() {
    let run = sandbox_run("x = 0\nwhile True:\n    x += 1\n", &["--fuel", "200000000", "--timeout", "60s"]);
    assert_eq!(run.outcome.exit, Exit::Killed, "{:?}", run.outcome);
    assert_eq!(run.outcome.limit, Some(loop_runner::sandbox::LimitKind::Fuel));
    let run = sandbox_run("print(sum(range(1000)))\n", &["--fuel", "200000000"]);
    assert!(run.outcome.success(), "{}", run.outcome.stderr.text);
    assert_eq!(run.stdout(), "499500\n");
}
