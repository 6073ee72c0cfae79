//! The end of a run: the refit (when configured), the test evaluation of the final model (and
//! of the selected iteration, when a refit is the final model), the report and the closing
//! journal entry. The test split is read here and nowhere else in the loop.

use std::time::Duration;

use super::lifecycle::{Runner, StopReason};
use super::progress::Progress;
use crate::data::write_csv;
use crate::guest_fs::GuestDir;
use crate::journal::{Event, IterationRecord, OutcomeBrief};
use crate::policy::{self, Script, ScriptKind};
use crate::report::Summary;
use crate::sandbox::CancellationToken as SandboxCancel;
use crate::scoring::{Truth, score};
use crate::search::Operation;
use crate::snapshot::tag_name;

impl Runner {
    /// Refit, final evaluation, report, and the closing journal entry.
    pub async fn finish(&mut self, reason: StopReason) -> anyhow::Result<Summary> {
        let best = self.state.best.map(|b| b.0);
        let mut refit = self.refit(&reason).await?;
        // The selected iteration first: a final model that cannot be scored in the time left
        // must not take the run's only test score with it.
        let mut test = None;
        let mut selected_test_score = match (refit, best) {
            (Some(_), Some(b)) => self.evaluate(Some(b), &mut test).await?,
            _ => None,
        };
        let mut test_score = self.evaluate(refit.or(best), &mut test).await?;
        if let (Some(r), Some(b), None, Some(_)) = (refit, best, test_score, selected_test_score) {
            // A final model that trained but cannot predict the test split (its scripts assume
            // a place they do not run from as members, say) gives way to the selected one.
            let text =
                format!("iteration {r} could not be scored; the final model is iteration {b} as selected");
            self.shared.reporter.report(Progress::Note(text.clone()));
            tracing::warn!("{text}");
            (refit, test_score, selected_test_score) = (None, selected_test_score, None);
        }
        let final_iteration = refit.or(best);
        let shared = &self.shared;
        let summary = Summary {
            task: shared.inputs.task.name.clone(),
            metric: shared.inputs.target.metric.name().into(),
            best_iteration: best,
            validation_score: self.state.best.map(|b| b.1),
            test_score,
            final_iteration,
            selected_test_score: refit.and(selected_test_score),
            iterations: self.state.records.len() as u32,
            wall_seconds: shared.budget.elapsed().as_secs_f64(),
            agent: shared.agent.backend_name().into(),
            sandbox: shared.sandbox_info.kind.to_string(),
            sandbox_waived: shared.sandbox_info.waived.clone(),
        };
        shared.log(Event::RunFinished {
            reason: reason.describe(),
            best_iteration: summary.best_iteration,
            validation_score: summary.validation_score,
            test_score,
            wall_seconds: summary.wall_seconds,
            final_iteration: refit,
        })?;
        crate::report::write(&self.dir)?;
        Ok(summary)
    }

    /// Makes the final model from the selected iteration when configured: retrained on every
    /// training row after a held-out split, bagged over the folds after cross-validation;
    /// unless the run was interrupted or the time left would not hold it. The refit's
    /// iteration, if it succeeded.
    async fn refit(&mut self, reason: &StopReason) -> anyhow::Result<Option<u32>> {
        let shared = self.shared.clone();
        let Some((best, _)) = self.state.best else { return Ok(None) };
        let validation = &shared.inputs.config.validation;
        let kind = match shared.split().folds {
            Some(_) if validation.bag => super::refit::Kind::Bag,
            None if validation.refit => super::refit::Kind::Retrain,
            _ => return Ok(None),
        };
        // A resumed run may have made it already.
        if let Some(done) = self.state.records.iter().rev().find(|r| r.operation == Operation::Refit)
            && done.parent == Some(best)
        {
            return Ok((done.status == "succeeded").then_some(done.iteration));
        }
        let note = |text: String| {
            shared.reporter.report(Progress::Note(text.clone()));
            tracing::info!("{text}");
        };
        if matches!(reason, StopReason::Interrupted) {
            note("refit skipped: the run was interrupted".into());
            return Ok(None);
        }
        let selected = self.state.records[best as usize - 1].clone();
        let needed = self.final_model_time(&selected);
        if let Some(left) = shared.budget.left()
            && left < needed
        {
            note(format!(
                "refit skipped: {:.0} s left; making iteration {best} into the final model and scoring it needs about {:.0} s",
                left.as_secs_f64(),
                needed.as_secs_f64()
            ));
            return Ok(None);
        }
        let n = self.state.records.len() as u32 + 1;
        shared.log(Event::IterationStarted {
            iteration: n,
            parent: Some(best),
            operation: Operation::Refit,
            reason: match kind {
                super::refit::Kind::Retrain => format!("iteration {best} trained on every training row"),
                super::refit::Kind::Bag => format!("iteration {best} bagged over the cross-validation folds"),
            },
        })?;
        shared.reporter.report(Progress::IterationStarted { iteration: n });
        let finished = super::refit::run(shared.clone(), &self.workspace, &selected, n, kind).await?;
        // A refit has no validation score: it succeeded when it trained.
        let succeeded = finished.record.status == "succeeded";
        self.record(finished)?;
        Ok(succeeded.then_some(n))
    }

    /// What making the final model of `selected` and scoring it and `selected` on the test
    /// split are expected to take after the loop, with room to spare: training it (a refit, or
    /// a bag whose fold models are no longer kept), moving a bag's kept models into its
    /// snapshot (linked, committed, checked out again for the test), and the test inference of
    /// both (a bag runs every fold model of what it bags).
    fn final_model_time(&self, selected: &IterationRecord) -> Duration {
        let folds = self.shared.split().folds.as_ref().map(|f| f.ranges.len());
        let kept = folds.and_then(|k| self.kept_bytes(selected, k));
        let train = if kept.is_some() { 0.0 } else { self.training_seconds(selected) };
        // Three passes over the bytes, at well over 50 MB/s each on any disk.
        let io = kept.map_or(0.0, |bytes| bytes as f64 / 50e6);
        let infer = self.test_inference_seconds(selected, folds);
        // A bag runs each fold's model of what it bags: `folds` runs like the selected one's
        // bound it, and so does the cross-validation inference of what it bags; the tighter
        // of the two.
        let final_infer = match folds {
            Some(k) => {
                let as_runs = infer * k as f64;
                self.bag_inference_seconds(selected, k).map_or(as_runs, |b| b.min(as_runs))
            }
            None => infer,
        };
        Duration::from_secs_f64((train + io) * 1.5 + (infer + final_infer) * 1.5 + 5.0)
    }

    /// The test inference of a bag of `selected`, from the cross-validation inference of what
    /// it bags (itself, or an ensemble's members); `None` when a time is not on record.
    fn bag_inference_seconds(&self, selected: &IterationRecord, folds: usize) -> Option<f64> {
        let mut seconds = Vec::new();
        for k in super::refit::bagged_iterations(selected) {
            seconds.push(self.state.records.get((k as usize).checked_sub(1)?)?.infer_seconds?);
        }
        Some(bag_inference(&seconds, folds, self.test_rows_per_validated_row(), self.start_up_seconds(folds)))
    }

    /// What an inference run costs whatever it predicts (the interpreter's start-up, the
    /// imports): three quarters of the quickest single model's run of cross-validation inference
    /// (which loaded and predicted too, but imported only what its model needs, where a bag
    /// imports what all its members do). 0 before any is on record.
    fn start_up_seconds(&self, folds: usize) -> f64 {
        let quickest = self
            .state
            .records
            .iter()
            .filter(|r| !matches!(r.operation, Operation::Ensemble | Operation::Refit))
            .filter_map(|r| r.infer_seconds)
            .fold(f64::INFINITY, f64::min);
        if quickest.is_finite() { 0.75 * quickest / folds.max(1) as f64 } else { 0.0 }
    }

    /// What scoring `selected` alone on the test split is expected to take, with room to spare:
    /// all the end of a run needs when no final model is made of it.
    fn selected_test_time(&self, selected: &IterationRecord) -> Duration {
        let folds = self.shared.split().folds.as_ref().map(|f| f.ranges.len());
        Duration::from_secs_f64(self.test_inference_seconds(selected, folds) * 1.5 + 2.0)
    }

    /// One inference run of `selected` on the test split, from its own inference on the
    /// validation rows: scaled by test rows per validated row (under cross-validation every
    /// pool row was predicted, about four times the test split), and never less than one of
    /// those runs took (a run's fixed cost, the interpreter and the model's loading, does not
    /// shrink with the rows). An ensemble's only script is such an inference. Journals from
    /// before inference times were recorded: a share of all its scripts' time.
    fn test_inference_seconds(&self, selected: &IterationRecord, folds: Option<usize>) -> f64 {
        let ensemble = selected.operation == Operation::Ensemble;
        let inference = selected.infer_seconds.or(ensemble.then_some(selected.script_seconds));
        match inference {
            Some(seconds) => {
                let runs = if ensemble { 1 } else { folds.unwrap_or(1) };
                one_test_inference(seconds, runs, self.test_rows_per_validated_row())
            }
            None => selected.script_seconds / folds.map_or(2, |k| 2 * k + 1) as f64,
        }
    }

    /// How many test rows there are for each row the validation predictions cover, from the
    /// sizes of the runner's own copies of both (same columns, same writer); 1 when unknown.
    fn test_rows_per_validated_row(&self) -> f64 {
        let size = |p: std::path::PathBuf| std::fs::metadata(p).map(|m| m.len() as f64).ok();
        let validated = self.shared.split().truth.len() as f64;
        match (size(self.dir.test_csv()), size(self.dir.pool_csv())) {
            (Some(test), Some(pool)) if pool > 0.0 && validated > 0.0 => {
                let test_rows = test / pool * self.shared.inputs.profile.rows as f64;
                (test_rows / validated).clamp(0.01, 100.0)
            }
            _ => 1.0,
        }
    }

    /// The bytes of the fold models a bag of `selected` would be made of, when every one of
    /// its `folds` is still kept.
    fn kept_bytes(&self, selected: &IterationRecord, folds: usize) -> Option<u64> {
        if !self.shared.inputs.config.validation.bag {
            return None;
        }
        let mut bytes = 0;
        for k in super::refit::bagged_iterations(selected) {
            let dir = self.dir.iteration(k);
            if !super::cv::keeps_models(&dir, folds) {
                return None;
            }
            for f in 1..=folds {
                let kept = crate::guest_fs::GuestDir::open(&super::cv::kept_model(&dir, f)).ok()?;
                bytes += kept.walk(Default::default()).0.iter().map(|e| e.size).sum::<u64>();
            }
        }
        Some(bytes)
    }

    /// What training `selected` again takes: an ensemble's members are trained again (its own
    /// scripts only blend). Under cross-validation that is every fold's training, which is what
    /// a bag repeats.
    fn training_seconds(&self, selected: &IterationRecord) -> f64 {
        if selected.operation == Operation::Ensemble {
            super::ensemble::member_iterations(&selected.hyperparameters)
                .into_iter()
                .filter_map(|m| self.state.records.get((m as usize).checked_sub(1)?))
                .map(|r| r.script_seconds)
                .sum()
        } else {
            selected.script_seconds
        }
    }

    /// Keeps back from the loop the time the end of the run would take with the current best:
    /// making its final model, when one is made, and scoring what is scored on the test split.
    pub(super) fn keep_time_for_the_final_model(&self) {
        let validation = &self.shared.inputs.config.validation;
        let made = if self.shared.split().folds.is_some() { validation.bag } else { validation.refit };
        let selected = self.state.best.and_then(|(best, _)| self.state.records.get(best as usize - 1));
        let (final_model, test_only) = match selected {
            Some(r) => {
                let test_only = self.selected_test_time(r);
                (if made { self.final_model_time(r) } else { test_only }, test_only)
            }
            None => (Duration::ZERO, Duration::ZERO),
        };
        self.shared.budget.keep_for_final_model(final_model, test_only);
    }

    /// The test features, written where final-test scripts read them, and the test labels: read
    /// once for the run's one or two final evaluations (a large test split takes seconds).
    fn test_split(&self) -> anyhow::Result<TestSplit> {
        let input = self.dir.root.join("final").join("input");
        if input.exists() {
            fs_err::remove_dir_all(&input)?;
        }
        fs_err::create_dir_all(&input)?;
        let target = &self.shared.inputs.target;
        let test = crate::data::read_table(&self.dir.test_csv())?;
        write_csv(&test.drop(&target.column)?, &input.join("features.csv"))?;
        let truth = Truth::from_table(&test, target).map_err(anyhow::Error::msg)?;
        Ok(TestSplit { input, truth })
    }

    /// Runs iteration `iteration`'s inference on the test features (`test`, prepared by the
    /// first evaluation) and scores it.
    async fn evaluate(
        &mut self,
        iteration: Option<u32>,
        test: &mut Option<TestSplit>,
    ) -> anyhow::Result<Option<f64>> {
        let shared = self.shared.clone();
        let Some(best) = iteration else {
            shared.log(Event::FinalEvaluation {
                iteration: None,
                test_score: None,
                detail: "no iteration succeeded".into(),
                outcome: None,
            })?;
            shared.reporter.report(Progress::FinalEvaluation {
                iteration: None,
                test_score: None,
                why: None,
            });
            return Ok(None);
        };
        // The budget is a hard limit: the final evaluation gets what is left of it, less what
        // the report needs, and nothing is prepared for it once that is gone (reading and
        // writing a large test split takes seconds).
        let wall_left = || shared.budget.left().map(|left| left.saturating_sub(shared.budget.report_time()));
        let ran_out = || -> anyhow::Result<Option<f64>> {
            let detail = "the budget ran out before the final evaluation could run".to_string();
            shared.log(Event::FinalEvaluation {
                iteration: Some(best),
                test_score: None,
                detail: detail.clone(),
                outcome: None,
            })?;
            shared.reporter.report(Progress::FinalEvaluation {
                iteration: Some(best),
                test_score: None,
                why: Some(detail),
            });
            Ok(None)
        };
        if wall_left().is_some_and(|w| w < MIN_FINAL_WALL) {
            return ran_out();
        }
        shared
            .reporter
            .report(Progress::Note(format!("scoring iteration {best} on the held-out test split")));
        let final_dir = self.dir.root.join("final").join(tag_name(best));
        if final_dir.exists() {
            fs_err::remove_dir_all(&final_dir)?;
        }
        let work = final_dir.join("work");
        let commit = self.workspace.resolve(&tag_name(best))?;
        self.workspace.materialize(commit, &work)?;
        // The snapshot's training data is not needed to predict; keep it out of reach.
        let _ = fs_err::remove_dir_all(work.join("data"));
        let _ = fs_err::remove_dir_all(work.join("input"));
        if test.is_none() {
            *test = Some(self.test_split()?);
        }
        let TestSplit { input, truth } = test.as_ref().expect("prepared above");
        let kind = ScriptKind::FinalTest;
        let mut spec = policy::spec(
            &Script { kind, work: &work, visible: input },
            &shared.inputs.config.sandbox,
            shared.inputs.config.loop_.seed,
            &shared.private(),
        );
        if let Some(wall) = wall_left() {
            spec.limits.wall = spec.limits.wall.min(wall);
        }
        if spec.limits.wall < MIN_FINAL_WALL {
            return ran_out();
        }
        // Only a second interrupt (which exits the process) stops the final evaluation.
        let outcome = shared.sandbox_run(spec, SandboxCancel::new()).await?;
        let (test_score, detail) = if outcome.success() {
            let guest = GuestDir::open(&work)?;
            match score(
                &guest,
                kind.predictions().expect("final test predicts"),
                &shared.inputs.target,
                truth,
            ) {
                Ok(s) => (Some(s.score), s.details),
                Err(why) => (None, format!("test score undefined: {why}")),
            }
        } else {
            (
                None,
                format!(
                    "inference.py failed on the test features: {} {}",
                    outcome.summary(),
                    super::iteration::tail(&outcome.stderr.text, 500)
                ),
            )
        };
        let why = test_score.is_none().then(|| match super::stuck::error_line(&outcome.stderr.text) {
            Some(error) if !outcome.success() => {
                format!("inference.py failed on the test features: {} ({error})", outcome.summary())
            }
            _ => detail.lines().next().unwrap_or_default().to_string(),
        });
        shared.log(Event::FinalEvaluation {
            iteration: Some(best),
            test_score,
            detail,
            outcome: Some(OutcomeBrief::from(&outcome)),
        })?;
        shared.reporter.report(Progress::FinalEvaluation { iteration: Some(best), test_score, why });
        Ok(test_score)
    }
}

/// The test features (`input/features.csv`) and labels of a run's final evaluations.
struct TestSplit {
    input: std::path::PathBuf,
    truth: Truth,
}

/// Less time than this left for a final evaluation and it is not started.
const MIN_FINAL_WALL: Duration = Duration::from_millis(500);

/// One test inference, from `seconds` of inference over all validated rows in `runs` runs,
/// with `ratio` test rows per validated row: never under one of those runs.
fn one_test_inference(seconds: f64, runs: usize, ratio: f64) -> f64 {
    (seconds * ratio).max(seconds / runs.max(1) as f64)
}

/// The test inference of a bag over `folds` folds, from the cross-validation inference
/// `seconds` of each iteration it bags and what an inference run costs whatever it predicts,
/// `start_up`. Each of those ran its `folds` models, each on a fold's rows, in a run of its own;
/// the bag runs the same models, each on the whole test split, in one run: what they took less
/// the start-up of each of their runs, scaled by the test rows per fold row and never less
/// (loading the models does not shrink with the rows), and one start-up. On 25 runs of seven
/// tables (3-12 members, bags of 1-11 s) bags took 0.44-1.00 times the lesser of this and
/// `folds` runs of the selected one's own inference, and 0.37-0.81 times the same without the
/// start-ups taken off, which kept up to 19 s of a 5-minute run from the search (12 members:
/// 60 runs of 0.24 s each).
fn bag_inference(seconds: &[f64], folds: usize, ratio: f64, start_up: f64) -> f64 {
    let models: f64 = seconds.iter().map(|s| (s - folds as f64 * start_up).max(0.0)).sum();
    start_up + models * (ratio * folds as f64).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::{bag_inference, one_test_inference};

    #[test]
    fn a_bag_runs_the_fold_models_of_what_it_bags_on_the_whole_test_split() {
        // Five folds of an ensemble's three members, a test split as large as a fold: as long
        // as their cross-validation inference.
        assert_eq!(bag_inference(&[1.0, 2.0, 3.0], 5, 0.2, 0.0), 6.0);
        // A test split four times the pool: each model sees twenty times its fold's rows.
        assert_eq!(bag_inference(&[2.0], 5, 4.0, 0.0), 40.0);
        // A small test split: never less than loading the models took.
        assert_eq!(bag_inference(&[2.0], 5, 0.01, 0.0), 2.0);
    }

    #[test]
    fn a_bag_pays_the_start_up_of_an_inference_run_once() {
        // Three members whose five runs each started in 0.2 s: fifteen start-ups become one.
        let bag = bag_inference(&[1.5, 2.0, 3.5], 5, 0.2, 0.2);
        assert!((bag - (0.2 + 0.5 + 1.0 + 2.5)).abs() < 1e-9, "{bag}");
        // A test split four times the pool: what is left of each run scales with the rows.
        let bag = bag_inference(&[2.0], 5, 4.0, 0.2);
        assert!((bag - (0.2 + 20.0)).abs() < 1e-9, "{bag}");
        // A start-up on record larger than a member's runs (another interpreter's) takes
        // nothing below zero.
        assert_eq!(bag_inference(&[0.5], 5, 0.2, 0.2), 0.2);
    }

    #[test]
    fn a_test_inference_scales_with_its_rows_and_never_below_one_run() {
        // Holdout of as many rows as the test split: the validation inference itself.
        assert_eq!(one_test_inference(12.0, 1, 1.0), 12.0);
        // Large data: a test split twice the validation rows takes twice as long.
        assert_eq!(one_test_inference(12.0, 1, 2.0), 24.0);
        // Five folds over all pool rows, a test split a quarter of them: no less than one
        // fold's run (its fixed cost does not shrink), however few the rows.
        assert_eq!(one_test_inference(5.0, 5, 0.25), 1.25);
        assert_eq!(one_test_inference(5.0, 5, 0.1), 1.0);
    }
}
