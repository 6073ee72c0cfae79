//! Helpers shared by the integration tests: run the real binary with the installed runtime.
#![allow(dead_code)]

pub mod browser;
pub mod llm;
pub mod scripted;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use loop_runner::env::EnvironmentOptions;
use loop_runner::runtime::Artifacts;
use loop_runner::sandbox::Outcome;

/// The loop-runner home the tests use: `$LOOP_RUNNER_HOME`, else the default. The WASI runtime
/// must be installed there (`loop-runner setup`); `.ci/run` does that first.
pub fn home() -> PathBuf {
    let home = EnvironmentOptions::from_process().default_home().expect("HOME or LOOP_RUNNER_HOME is set");
    if let Err(e) = Artifacts::open(&home) {
        panic!(
            "the WASI runtime is not usable in `{}` ({e}); run `cargo run -- setup` first",
            home.display()
        );
    }
    home
}

/// The binary under test, with a clean environment apart from the home.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loop-runner"));
    cmd.env_clear()
        .env("LOOP_RUNNER_HOME", home())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default());
    cmd
}

/// Where `tests/setup.sh` put the test dependencies (llama.cpp, MLflow):
/// `$LOOP_RUNNER_TEST_CACHE`, else `~/.cache/loop-runner-test`.
pub fn test_cache() -> PathBuf {
    std::env::var_os("LOOP_RUNNER_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/loop-runner-test"))
}

/// A directory for what the tests of one test binary share through a `static`. Statics are
/// never dropped, so a `TempDir` held there stays in the system's temp dir after every run of
/// the tests (two finished runs, 17 MB, each time). This one is under cargo's temp dir for
/// integration tests and is emptied the first time a process asks for it: each run of the
/// tests replaces the last one's.
pub fn shared_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The repository's fixtures dir.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Result of `loop-runner sandbox run --json`.
pub struct SandboxRun {
    pub outcome: Outcome,
    pub output: Output,
}

impl SandboxRun {
    pub fn stdout(&self) -> &str {
        &self.outcome.stdout.text
    }
}

/// Both sandbox backends: every adversarial test runs against each.
pub const BACKENDS: [&str; 2] = ["wasi", "process"];

/// Writes `script` into `work` as `main.py` and runs it with `--work work` plus `args`, in the
/// given backend.
pub fn sandbox_run_with(backend: &str, work: &Path, script: &str, args: &[&str]) -> SandboxRun {
    std::fs::create_dir_all(work).unwrap();
    let path = work.join("main.py");
    std::fs::write(&path, script).unwrap();
    let mut cmd = bin();
    cmd.args(["sandbox", "run", "--json", "--sandbox", backend, "--work"]).arg(work).arg(&path).args(args);
    run_json(cmd)
}

/// [`sandbox_run_with`] in the WASI backend.
pub fn sandbox_run_in(work: &Path, script: &str, args: &[&str]) -> SandboxRun {
    sandbox_run_with("wasi", work, script, args)
}

/// Like [`sandbox_run_in`] in a fresh temporary work dir.
pub fn sandbox_run(script: &str, args: &[&str]) -> SandboxRun {
    let work = tempfile::tempdir().unwrap();
    sandbox_run_in(work.path(), script, args)
}

/// A fresh work dir in `backend`.
pub fn sandbox_run_on(backend: &str, script: &str, args: &[&str]) -> SandboxRun {
    let work = tempfile::tempdir().unwrap();
    sandbox_run_with(backend, work.path(), script, args)
}

pub fn run_json(mut cmd: Command) -> SandboxRun {
    let output = cmd.output().expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let outcome: Outcome = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON outcome ({e}); exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    SandboxRun { outcome, output }
}

/// The run directory a `run` printed on its first line of stdout.
pub fn run_dir_of(output: &Output) -> PathBuf {
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(stdout.lines().next().unwrap_or_else(|| {
        panic!(
            "no run directory printed; stderr:
{}",
            stderr(output)
        )
    }))
}

/// `loop-runner predict RUN --input INPUT`, which must succeed: the predictions it wrote (to
/// `predictions.csv` beside the input).
pub fn predict(run: &Path, input: &Path) -> String {
    let preds = input.with_file_name("predictions.csv");
    let o =
        bin().arg("predict").arg(run).arg("--input").arg(input).arg("--output").arg(&preds).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read_to_string(&preds).unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

/// The iteration records of a run, in the journal's order.
pub fn records(dir: &Path) -> Vec<loop_runner::journal::IterationRecord> {
    loop_runner::journal::read(&dir.join("journal.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            loop_runner::journal::Event::IterationFinished { record, .. } => Some(record),
            _ => None,
        })
        .collect()
}
