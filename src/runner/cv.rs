//! Cross-validating one iteration's scripts. Each fold runs in a fresh work dir of its own, so
//! nothing one fold's scripts leave (an exploration's notes, another fold's labels) reaches
//! another fold's inference. The committed model is trained afterwards on every training row,
//! in the iteration's own work dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ask::{Accumulator, StepFailure};
use super::iteration::{Done, FoldRun, Iteration, Place, failure_of, predicted, trained};
use super::shared::{CvFolds, SplitState};
use crate::guest_fs::GuestDir;
use crate::policy::ScriptKind;
use crate::scoring::{Predicted, parse_predictions, read_prediction_bytes, score_folds};
use crate::steps::StepContext;

/// Where iteration `dir` keeps fold `f`'s predictions (1-based), as the script wrote them.
pub(super) fn kept_predictions(dir: &Path, f: usize) -> PathBuf {
    dir.join("out-of-fold").join(format!("fold-{f}.csv"))
}

/// Iteration `dir`'s out-of-fold predictions, read back from the copies it kept.
pub(super) fn read_kept(dir: &Path, folds: &CvFolds, target: &crate::data::TargetInfo) -> Option<Predicted> {
    let guest = GuestDir::open(&dir.join("out-of-fold")).ok()?;
    let parts: Option<Vec<Predicted>> = folds
        .ranges
        .iter()
        .enumerate()
        .map(|(i, range)| {
            let name = format!("fold-{}.csv", i + 1);
            let bytes = read_prediction_bytes(&guest, &name).ok()?;
            parse_predictions(bytes, &name, target, range.len()).ok()
        })
        .collect();
    Predicted::concat(parts?)
}

impl Iteration<'_> {
    /// Fold `i`'s place (0-based): a fresh work dir beside the iteration's own.
    pub(super) fn fold_place(&self, folds: &CvFolds, i: usize) -> std::io::Result<Place> {
        let work = self.dir.join("folds").join(format!("fold-{}", i + 1));
        if work.exists() {
            fs_err::remove_dir_all(&work)?;
        }
        fs_err::create_dir_all(&work)?;
        Ok(Place {
            work,
            data: folds.dirs[i].data.clone(),
            input: folds.dirs[i].input.clone(),
            rows: folds.ranges[i].clone(),
            label: format!("on fold {} of {}", i + 1, folds.ranges.len()),
        })
    }

    /// The folds after the first (whose scripts the agent has fixed), then the committed
    /// model on every training row. A failure here is the iteration's: a later debug sees it.
    pub(super) async fn cross_validate(
        &mut self,
        ctx: &StepContext,
        acc: &mut Accumulator,
        split: &SplitState,
        folds: &Arc<CvFolds>,
        first: FoldRun,
    ) -> Result<Done, StepFailure> {
        let target = &self.shared.inputs.target;
        let (Some(train), Some(infer)) = (ctx.current.train.clone(), ctx.current.infer.clone()) else {
            return Err(StepFailure::Internal(anyhow::anyhow!("cross-validation without both scripts")));
        };
        let mut runs = vec![first];
        self.keep(1, &runs[0].bytes)?;
        let _ = fs_err::remove_dir_all(self.dir.join("folds").join("fold-1"));
        for i in 1..folds.ranges.len() {
            let place = self.fold_place(folds, i).map_err(StepFailure::internal)?;
            let outcome = self.run_script_at(&place, ScriptKind::Train, &train.script, acc).await?;
            let model_files = crate::policy::model_files(&outcome);
            if let Err(problem) = trained(&outcome, &model_files) {
                let summary = place.say(problem);
                acc.failure = Some(failure_of("train", train.script.clone(), summary.clone(), &outcome));
                return Err(StepFailure::Failed("train".into(), summary));
            }
            let outcome = self.run_script_at(&place, ScriptKind::Infer, &infer.script, acc).await?;
            let guest = GuestDir::open(&place.work).map_err(StepFailure::internal)?;
            let scored =
                predicted(&outcome, &model_files, &guest, target, place.rows.len()).and_then(|(bytes, p)| {
                    let truth = split.truth.slice(place.rows.clone());
                    crate::scoring::score_predicted(&p, target, &truth).map(|scored| (bytes, p, scored))
                });
            let (bytes, predicted, scored) = scored.map_err(|problem| {
                let summary = place.say(problem);
                acc.failure = Some(failure_of("infer", infer.script.clone(), summary.clone(), &outcome));
                StepFailure::Failed("infer".into(), summary)
            })?;
            self.keep(i + 1, &bytes)?;
            runs.push(FoldRun { scored, predicted, bytes, model_files });
            fs_err::remove_dir_all(&place.work).map_err(StepFailure::internal)?;
        }

        // The committed model: train.py on every training row, in the iteration's work dir.
        let home = self.home(split);
        GuestDir::open(&home.work).and_then(|g| g.remove("model")).map_err(StepFailure::internal)?;
        let outcome = self.run_script_at(&home, ScriptKind::Train, &train.script, acc).await?;
        let model_files = crate::policy::model_files(&outcome);
        if let Err(problem) = trained(&outcome, &model_files) {
            let summary = format!("on all training rows: {problem}");
            acc.failure = Some(failure_of("train", train.script.clone(), summary.clone(), &outcome));
            return Err(StepFailure::Failed("train".into(), summary));
        }

        let predictions_sha256 = crate::folds::predictions_sha256(runs.iter().map(|r| r.bytes.as_slice()));
        let predicted =
            Predicted::concat(runs.into_iter().map(|r| r.predicted).collect()).ok_or_else(|| {
                StepFailure::Failed(
                    "infer".into(),
                    "the folds' predictions differ in their columns: write the same columns for every input"
                        .into(),
                )
            })?;
        let scored = score_folds(&predicted, target, &split.truth, &folds.ranges)
            .map_err(|why| StepFailure::Failed("infer".into(), why))?;
        Ok(Done { scored, predicted, predictions_sha256, model_files })
    }

    /// Keeps fold `f`'s predictions beside the iteration, out of any script's reach.
    fn keep(&self, f: usize, bytes: &[u8]) -> Result<(), StepFailure> {
        let path = kept_predictions(self.dir, f);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent).map_err(StepFailure::internal)?;
        }
        fs_err::write(path, bytes).map_err(StepFailure::internal)
    }
}
