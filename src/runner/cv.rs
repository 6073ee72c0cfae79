//! Cross-validating one iteration's scripts. Each fold runs in a fresh work dir of its own, so
//! nothing one fold's scripts leave (an exploration's notes, another fold's labels) reaches
//! another fold's inference. The committed model is trained afterwards on every training row,
//! in the iteration's own work dir. Each fold's model is kept beside the iteration (while the
//! iteration could be part of the final model), so that the final bag of the selected
//! iteration is made of the very models its cross-validation scored, without training again.

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

/// Where iteration `dir` keeps fold `f`'s model (1-based): the `model/` its train.py left in
/// the fold's work dir, moved out of any script's reach.
pub(super) fn kept_model(dir: &Path, f: usize) -> PathBuf {
    dir.join("fold-models").join(format!("fold-{f}"))
}

/// Whether iteration `dir` still keeps a model for each of `k` folds.
pub(super) fn keeps_models(dir: &Path, k: usize) -> bool {
    k > 0 && (1..=k).all(|f| kept_model(dir, f).is_dir())
}

/// Drops the kept fold models of every iteration in `iterations` that `keep` does not name:
/// only the candidates of an ensemble and the current choice can become part of the final
/// model, and a model set aside once never comes back.
pub(super) fn drop_kept_models(
    run: &crate::run_dir::RunDir,
    iterations: impl Iterator<Item = u32>,
    keep: &dyn Fn(u32) -> bool,
) {
    for n in iterations.filter(|n| !keep(*n)) {
        let kept = run.iteration(n).join("fold-models");
        if kept.exists()
            && let Err(e) = fs_err::remove_dir_all(&kept)
        {
            tracing::warn!("removing the fold models of iteration {n}: {e}");
        }
    }
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
        let first_work = self.dir.join("folds").join("fold-1");
        self.keep_model(&first_work, 1)?;
        let _ = fs_err::remove_dir_all(first_work);
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
            self.keep_model(&place.work, i + 1)?;
            let infer_seconds = outcome.wall.as_secs_f64();
            runs.push(FoldRun { scored, predicted, bytes, model_files, infer_seconds });
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
        let infer_seconds = runs.iter().map(|r| r.infer_seconds).sum();
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
        Ok(Done { scored, predicted, predictions_sha256, model_files, infer_seconds })
    }

    /// Moves fold `f`'s model out of its work dir (`work`), beside the iteration. Only a real
    /// directory is moved, never a link left in its place; what is inside stays untrusted and
    /// is read through [`GuestDir`] when a bag is made of it.
    fn keep_model(&self, work: &Path, f: usize) -> Result<(), StepFailure> {
        let model = work.join("model");
        if !std::fs::symlink_metadata(&model).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        let kept = kept_model(self.dir, f);
        if let Some(parent) = kept.parent() {
            fs_err::create_dir_all(parent).map_err(StepFailure::internal)?;
        }
        if kept.exists() {
            fs_err::remove_dir_all(&kept).map_err(StepFailure::internal)?;
        }
        fs_err::rename(&model, &kept).map_err(StepFailure::internal)
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
