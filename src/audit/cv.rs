//! Auditing a cross-validated snapshot: its score came from scripts run on folds of its
//! training rows, so the audit makes the folds again (the same function, the recorded seed) and
//! runs the scripts on each, in fresh directories, as the run did.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Check, format_score, tiebreak_check};
use crate::config::RunConfig;
use crate::data::{TargetInfo, read_table, write_csv};
use crate::folds::Folds;
use crate::guest_fs::GuestDir;
use crate::journal::IterationRecord;
use crate::policy::{self, Script, ScriptKind};
use crate::sandbox::Sandbox;
use crate::scoring::{Predicted, Truth, parse_predictions, read_prediction_bytes, score_folds};
use crate::search::{Candidate, blend_score};

/// What a cross-validation audit works with.
pub(super) struct CvAudit<'a> {
    pub sandbox: &'a Arc<dyn Sandbox>,
    pub config: &'a RunConfig,
    /// The materialized snapshot (scripts, members, metadata; its data moved out).
    pub root: &'a Path,
    /// The snapshot's `data/` and `input/`.
    pub data_dir: &'a Path,
    pub input_dir: &'a Path,
    pub target: &'a TargetInfo,
    /// The run's validation labels for the snapshot's split (out-of-fold order).
    pub labels: &'a Path,
    pub folds: u32,
    pub seed: u64,
    pub record: &'a IterationRecord,
    pub private: &'a [PathBuf],
    /// A scratch directory for the folds.
    pub scratch: &'a Path,
}

impl CvAudit<'_> {
    pub fn checks(&self) -> anyhow::Result<Vec<Check>> {
        let mut checks = Vec::new();
        let pool = read_table(&self.data_dir.join("train.csv"))?;
        let folds =
            crate::folds::write(&pool, self.target, self.folds, self.seed, &self.scratch.join("folds"))?;
        // The folds hold the rows the run scored, in its order, if their features match.
        let rebuilt = self.scratch.join("out-of-fold-features.csv");
        write_csv(&folds.out_of_fold.drop(&self.target.column)?, &rebuilt)?;
        let sha = |p: &Path| crate::fsx::sha256_file(p).unwrap_or_else(|e| format!("unreadable: {e}"));
        checks.push(Check::new(
            format!("{} folds rebuilt from data/train.csv", self.folds),
            sha(&self.input_dir.join("features.csv")),
            sha(&rebuilt),
        ));
        let truth = Truth::from_csv(self.labels, self.target).map_err(anyhow::Error::msg)?;
        let spec = self.root.join("steps").join("ensemble.json");
        let what = format!("validation {} (mean of {} folds)", self.target.metric, self.folds);
        let recorded = self.record.validation_score.map(format_score).unwrap_or_default();
        if self.record.family == "ensemble" && spec.is_file() {
            let spec: serde_json::Value = serde_json::from_str(&fs_err::read_to_string(&spec)?)?;
            let mut candidates = Vec::new();
            let mut weights = Vec::new();
            for m in spec["members"].as_array().into_iter().flatten() {
                let (Some(name), Some(iteration), Some(weight)) =
                    (m["name"].as_str(), m["iteration"].as_u64(), m["weight"].as_u64())
                else {
                    anyhow::bail!("steps/ensemble.json names a member without name, iteration and weight");
                };
                let member = self.root.join("members").join(name);
                let (check, run) = self.run_folds(&member, &folds, &format!("members/{name}/"))?;
                checks.push(check);
                let Some((_, predicted)) = run else { continue };
                candidates.push(Candidate { iteration: iteration as u32, predicted });
                weights.push((iteration as u32, weight as u32));
            }
            let standing = blend_score(&candidates, &weights, self.target, &truth, &folds.ranges);
            let now = standing
                .map(|s| format_score(s.score))
                .unwrap_or_else(|| "(no blend: a member did not run)".into());
            checks.push(Check::new(format!("{what}, blended"), recorded, now));
            checks.extend(tiebreak_check(self.record, standing.and_then(|s| s.tiebreak)));
            return Ok(checks);
        }
        let (check, run) = self.run_folds(self.root, &folds, "")?;
        checks.push(check);
        let Some((files, predicted)) = run else { return Ok(checks) };
        checks.push(Check::new(
            "out-of-fold predictions sha256",
            self.record.predictions_sha256.clone().unwrap_or_default(),
            crate::folds::predictions_sha256(files.iter().map(Vec::as_slice)),
        ));
        let scored = score_folds(&predicted, self.target, &truth, &folds.ranges);
        let now = scored.as_ref().map(|s| format_score(s.score)).unwrap_or_else(|e| e.clone());
        checks.push(Check::new(what, recorded, now));
        checks.extend(tiebreak_check(self.record, scored.ok().and_then(|s| s.tiebreak)));
        Ok(checks)
    }

    /// `scripts`' train.py and inference.py on every fold, each fold in a fresh directory: one
    /// check (the first failure, if any), and the predictions files and out-of-fold
    /// predictions when every fold ran.
    #[expect(clippy::type_complexity, reason = "a check and what the folds produced")]
    fn run_folds(
        &self,
        scripts: &Path,
        folds: &Folds,
        shown: &str,
    ) -> anyhow::Result<(Check, Option<(Vec<Vec<u8>>, Predicted)>)> {
        let scripts_shown =
            if shown.is_empty() { "train.py + inference.py" } else { shown.trim_end_matches('/') };
        let what = format!("{scripts_shown} on {} folds", folds.ranges.len());
        let mut files = Vec::new();
        let mut parts = Vec::new();
        for (i, (dirs, range)) in folds.dirs.iter().zip(&folds.ranges).enumerate() {
            let work = self.scratch.join("work").join(format!("{}fold-{}", shown.replace('/', "-"), i + 1));
            if work.exists() {
                fs_err::remove_dir_all(&work)?;
            }
            fs_err::create_dir_all(&work)?;
            for name in ["train.py", "inference.py"] {
                fs_err::copy(scripts.join(name), work.join(name))?;
            }
            let failed = |step: &str, why: String| {
                Ok((Check::new(&what, "exit 0", format!("fold {}: {step}: {why}", i + 1)), None))
            };
            for (kind, visible) in
                [(ScriptKind::AuditTrain, &dirs.data), (ScriptKind::AuditInfer, &dirs.input)]
            {
                let spec = policy::spec(
                    &Script { kind, work: &work, visible },
                    &self.config.sandbox,
                    self.config.loop_.seed,
                    self.private,
                );
                let outcome = self.sandbox.run(&spec, &CancellationToken::new())?;
                if !outcome.success() {
                    return failed(kind.script(), outcome.summary());
                }
            }
            let guest = GuestDir::open(&work)?;
            let read = read_prediction_bytes(&guest, "predictions.csv").and_then(|bytes| {
                parse_predictions(bytes.clone(), "predictions.csv", self.target, range.len())
                    .map(|p| (bytes, p))
            });
            match read {
                Ok((bytes, predicted)) => {
                    files.push(bytes);
                    parts.push(predicted);
                }
                Err(why) => return failed("predictions.csv", why),
            }
            fs_err::remove_dir_all(&work)?;
        }
        let Some(predicted) = Predicted::concat(parts) else {
            return Ok((Check::new(&what, "exit 0", "the folds' predictions differ in their columns"), None));
        };
        Ok((Check::new(&what, "exit 0", "exit 0"), Some((files, predicted))))
    }
}
