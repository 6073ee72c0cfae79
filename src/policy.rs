//! What each kind of script may see: its mounts, arguments and limits, decided in one place.
//!
//! The loop, `audit` and `predict` all build their sandbox requests here; nothing else builds
//! mounts. The rule that guards the labels is simple and lives only here: a script that
//! predicts (inference on validation or test features, an audit's re-run, `predict`) sees its
//! own work directory and the features to predict, never training rows or labels; a script
//! that learns (exploration, training) sees the training rows, never features it will be scored
//! on. Neither ever sees the run's `holdout/`: every request names it as private, and the
//! sandbox refuses any mount that would expose it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::SandboxConfig;
use crate::sandbox::{Limits, Mount, RunSpec};

/// The kinds of scripts loop-runner runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    /// `explore.py` on the training rows; its output becomes findings.
    Explore,
    /// `train.py` on the training rows, writing `model/`.
    Train,
    /// `inference.py` on the validation features.
    Infer,
    /// `inference.py` of the chosen snapshot on the test features.
    FinalTest,
    /// `train.py` of a snapshot, re-run by `audit --retrain`.
    AuditTrain,
    /// `inference.py` of a snapshot, re-run by `audit`.
    AuditInfer,
    /// `inference.py` of a snapshot on a user's file (`predict`).
    Predict,
}

/// Where the training rows are mounted for scripts that learn.
pub const DATA_GUEST: &str = "/work/data";
/// Where the features to predict are mounted for scripts that predict.
pub const INPUT_GUEST: &str = "/work/input";
/// Exploration is meant to be quick.
const EXPLORE_WALL: Duration = Duration::from_secs(120);

impl ScriptKind {
    pub fn script(self) -> &'static str {
        match self {
            ScriptKind::Explore => "explore.py",
            ScriptKind::Train | ScriptKind::AuditTrain => "train.py",
            ScriptKind::Infer | ScriptKind::FinalTest | ScriptKind::AuditInfer | ScriptKind::Predict => {
                "inference.py"
            }
        }
    }

    /// Whether it sees the training rows (else only the features it predicts).
    pub fn learns(self) -> bool {
        matches!(self, ScriptKind::Explore | ScriptKind::Train | ScriptKind::AuditTrain)
    }

    /// The predictions file it must write, relative to its work dir.
    pub fn predictions(self) -> Option<&'static str> {
        match self {
            ScriptKind::Infer | ScriptKind::AuditInfer | ScriptKind::Predict => Some("predictions.csv"),
            ScriptKind::FinalTest => Some("test_predictions.csv"),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScriptKind::Explore => "explore",
            ScriptKind::Train => "train",
            ScriptKind::Infer => "infer",
            ScriptKind::FinalTest => "final test",
            ScriptKind::AuditTrain => "audit train",
            ScriptKind::AuditInfer => "audit infer",
            ScriptKind::Predict => "predict",
        }
    }
}

/// One script to run: its kind, its writable work dir, and the one data directory it may read
/// (the training rows for scripts that learn, the features for scripts that predict).
#[derive(Debug, Clone)]
pub struct Script<'a> {
    pub kind: ScriptKind,
    pub work: &'a Path,
    pub visible: &'a Path,
}

/// The sandbox request for `script`: mounts by its kind, the configured limits, the run's seed,
/// and the run's private directories (`holdout/`), which the sandbox must refuse to expose.
pub fn spec(script: &Script<'_>, sandbox: &SandboxConfig, seed: u64, private: &[PathBuf]) -> RunSpec {
    let kind = script.kind;
    let visible = if kind.learns() {
        Mount::read_only(script.visible, DATA_GUEST)
    } else {
        Mount::read_only(script.visible, INPUT_GUEST)
    };
    let mut spec = RunSpec::new(
        format!("/work/{}", kind.script()),
        vec![Mount::read_write(script.work, "/work"), visible],
    );
    if let Some(out) = kind.predictions() {
        spec.args = vec!["--input".into(), "input/features.csv".into(), "--output".into(), out.into()];
    }
    let wall = if kind == ScriptKind::Explore {
        sandbox.script_timeout.min(EXPLORE_WALL)
    } else {
        sandbox.script_timeout
    };
    spec.limits = Limits {
        wall,
        memory_bytes: sandbox.memory_bytes,
        disk_bytes: sandbox.disk_bytes,
        ..Limits::default()
    };
    spec.seed = seed;
    spec.private = private.to_vec();
    spec
}

/// `(path, sha256)` of the model files: under `/work/model/`, and an ensemble's or a bag's
/// members' under `/work/members/<member>/model/` (members of a bag of an ensemble one level
/// further down); sorted.
pub fn model_files(outcome: &crate::sandbox::Outcome) -> Vec<(String, String)> {
    outcome
        .files
        .iter()
        .filter(|f| is_model_file(&f.path))
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect()
}

/// Whether a script's output `path` (under `/work/`) is a model file, as [`model_files`] says.
pub fn is_model_file(path: &str) -> bool {
    fn member_model(rest: &str) -> bool {
        rest.split_once('/').is_some_and(|(_, inside)| {
            inside.starts_with("model/") || inside.strip_prefix("members/").is_some_and(member_model)
        })
    }
    path.starts_with("/work/model/") || path.strip_prefix("/work/members/").is_some_and(member_model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SandboxConfig {
        crate::config::RunConfig::resolve(&Default::default(), &Default::default()).unwrap().sandbox
    }

    #[test]
    fn predicting_scripts_never_see_training_rows_and_learning_scripts_never_see_features() {
        let (work, data, input) = (Path::new("/w"), Path::new("/run/data"), Path::new("/run/in"));
        let private = [PathBuf::from("/run/holdout")];
        for kind in [
            ScriptKind::Explore,
            ScriptKind::Train,
            ScriptKind::Infer,
            ScriptKind::FinalTest,
            ScriptKind::AuditTrain,
            ScriptKind::AuditInfer,
            ScriptKind::Predict,
        ] {
            let visible = if kind.learns() { data } else { input };
            let spec = spec(&Script { kind, work, visible }, &config(), 3, &private);
            let guests: Vec<&str> = spec.mounts.iter().map(|m| m.guest.as_str()).collect();
            if kind.learns() {
                assert_eq!(guests, ["/work", DATA_GUEST], "{kind:?}");
                assert!(spec.args.is_empty());
            } else {
                assert_eq!(guests, ["/work", INPUT_GUEST], "{kind:?}");
                assert_eq!(spec.args[1], "input/features.csv");
            }
            assert_eq!(
                spec.mounts.iter().filter(|m| m.access == crate::sandbox::Access::ReadWrite).count(),
                1
            );
            assert_eq!(spec.private, private);
            assert_eq!(spec.seed, 3);
        }
        let explore = spec(&Script { kind: ScriptKind::Explore, work, visible: data }, &config(), 0, &[]);
        assert_eq!(explore.limits.wall, EXPLORE_WALL);
    }
}
