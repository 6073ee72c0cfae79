//! Predictions from a run's snapshot on new rows (`predict`, and `serve`'s predict endpoint):
//! the snapshot's `inference.py` in the sandbox the run recorded, seeing only the new features.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::UserError;
use crate::exit_code;
use crate::guest_fs::GuestDir;
use crate::policy::{self, Script, ScriptKind};
use crate::run_dir::{Manifest, RunDir};
use crate::sandbox::Sandbox;
use crate::snapshot::Workspace;

/// What one prediction produced.
pub struct Predictions {
    /// The commit `rev` named.
    pub commit: String,
    pub rows: usize,
    /// `predictions.csv` as the script wrote it.
    pub csv: Vec<u8>,
}

/// Runs `rev`'s inference on the features in `input` (CSV or Parquet), named `shown` in
/// errors (the caller's name for it: a path, or "the request body"). `open` gives the sandbox
/// for the run's recorded sandbox configuration.
pub fn predict(
    dir: &RunDir,
    rev: &str,
    input: &Path,
    shown: &str,
    open: impl FnOnce(&crate::config::SandboxConfig) -> anyhow::Result<Arc<dyn Sandbox>>,
) -> anyhow::Result<Predictions> {
    let manifest = Manifest::read(&dir.run_json())?;
    let config = crate::config::RunConfig::resolve(&manifest.config, &Default::default())?;
    let features = crate::data::read_table(input).map_err(|mut e| {
        e.message = e.message.replace(&input.display().to_string(), shown);
        e
    })?;
    if features.height() == 0 {
        return Err(UserError::usage(format!("`{shown}` has no rows to predict")).into());
    }
    // Rows that still carry the target column (a labelled file) are predicted without it.
    let has_target = features.column(&manifest.target.column).is_ok();
    let features = if has_target { features.drop(&manifest.target.column)? } else { features };
    let workspace = Workspace::open_or_init(&dir.workspace())?;
    let rev = if rev == "final" { final_rev(dir) } else { rev.to_string() };
    let rev = rev.as_str();
    let commit = workspace.resolve(rev).map_err(|e| {
        UserError::setup(format!("run `{}` has no snapshot `{rev}` to predict with: {e}", dir.id()))
            .with_hint("use `final`, `best`, `iter-NNNN`, or a commit of the run's workspace")
    })?;
    let work = tempfile::Builder::new().prefix("loop-runner-predict-").tempdir()?;
    let root = work.path().join("work");
    workspace.materialize(commit, &root)?;
    // Inference never sees the training data.
    let _ = fs_err::remove_dir_all(root.join("data"));
    let _ = fs_err::remove_dir_all(root.join("input"));
    let input_dir = work.path().join("input");
    fs_err::create_dir_all(&input_dir)?;
    let is_csv =
        !input.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq"));
    if is_csv && !has_target {
        // The caller's bytes, as given.
        fs_err::copy(input, input_dir.join("features.csv"))?;
    } else {
        crate::data::write_csv(&features, &input_dir.join("features.csv"))?;
    }
    let sandbox = open(&config.sandbox)?;
    let kind = ScriptKind::Predict;
    let spec = policy::spec(
        &Script { kind, work: &root, visible: &input_dir },
        &config.sandbox,
        config.loop_.seed,
        &[dir.holdout()],
    );
    let outcome = sandbox.run(&spec, &CancellationToken::new())?;
    if !outcome.success() {
        return Err(UserError::setup(format!(
            "inference.py failed on `{shown}`: {}\n{}",
            outcome.summary(),
            outcome.stderr.text.trim_end()
        ))
        .with_code(exit_code::EXPERIMENT_FAILED)
        .into());
    }
    // What the script left is read without following links, like everything it writes.
    let csv = GuestDir::open(&root)?
        .read(kind.predictions().expect("predict writes predictions"), u64::MAX)
        .map_err(|e| {
            UserError::setup(format!("inference.py left no usable predictions: {e}"))
                .with_code(exit_code::EXPERIMENT_FAILED)
        })?;
    let rows = crate::data::read_csv_bytes(csv.clone(), "predictions.csv").map(|df| df.height()).unwrap_or(0);
    if rows != features.height() {
        return Err(UserError::setup(format!(
            "inference.py wrote {rows} predictions for {} input rows",
            features.height()
        ))
        .with_code(exit_code::EXPERIMENT_FAILED)
        .into());
    }
    Ok(Predictions { commit: commit.to_string(), rows, csv })
}

/// The snapshot the run scored on the test split as its final model (the refit of the best
/// iteration when there is one); `best` before the run has finished.
fn final_rev(dir: &RunDir) -> String {
    std::fs::read_to_string(dir.report().join("summary.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|summary| summary["final_iteration"].as_u64())
        .and_then(|n| u32::try_from(n).ok())
        .map_or_else(|| "best".to_string(), crate::snapshot::tag_name)
}
