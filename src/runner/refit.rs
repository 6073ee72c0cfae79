//! Refit: after the loop, the selected iteration made into the run's final model from every
//! training row, committed as an iteration of its own (operation `refit`, parent the selected
//! one). Under a held-out split its train.py is trained once more on the training and validation
//! rows together. Under cross-validation (whose models have already seen every row) it is a
//! bag: the selected scripts trained once per fold, on the rows that fold trained on, their
//! predictions averaged (`guest/bag_train.py`, and the ensemble's inference). It has no
//! validation score: nothing is left to score it on. Both it and the selected iteration are
//! scored on the test split; the refit is the run's final model.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::ask::Accumulator;
use super::iteration::{Finished, Iteration, Place, trained};
use super::shared::Shared;
use crate::journal::IterationRecord;
use crate::policy::ScriptKind;
use crate::search::Operation;
use crate::snapshot::{Workspace, tag_name};

/// What a snapshot's train.py needs besides the data: its scripts, an ensemble's members and
/// selection.
const TRAINING_FILES: [&str; 4] = ["train.py", "inference.py", "members", "steps"];
const BAG_TRAIN: &str = include_str!("../../guest/bag_train.py");
const BAG_INFER: &str = include_str!("../../guest/ensemble_inference.py");

/// How the final model is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Trained once on every training row.
    Retrain,
    /// Trained once per cross-validation fold, averaged.
    Bag,
}

/// Trains iteration `best`'s scripts on every training row as iteration `n`.
pub(super) async fn run(
    shared: Arc<Shared>,
    workspace: &Workspace,
    best: &IterationRecord,
    n: u32,
    kind: Kind,
) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let dir = shared.dir.iteration(n);
    if dir.exists() {
        fs_err::remove_dir_all(&dir)?;
    }
    let work = shared.dir.work(n);
    let commit = workspace.resolve(&tag_name(best.iteration))?;
    let data = shared.dir.refit_data();
    if !data.join("train.csv").is_file() {
        fs_err::create_dir_all(&data)?;
        fs_err::copy(shared.dir.pool_csv(), data.join("train.csv"))?;
    }
    let steps = dir.join("steps");
    fs_err::create_dir_all(&steps)?;
    let mut hyperparameters = best.hyperparameters.clone();
    let (train, infer) = match kind {
        Kind::Retrain => {
            workspace.materialize_only(commit, &work, &TRAINING_FILES)?;
            // The runner's copy of the selected iteration's answers (an ensemble's selection
            // among them) goes into the snapshot; the one in `work/` is what train.py reads.
            if let Ok(entries) = fs_err::read_dir(shared.dir.iteration(best.iteration).join("steps")) {
                for entry in entries.filter_map(Result::ok) {
                    fs_err::copy(entry.path(), steps.join(entry.file_name()))?;
                }
            }
            (
                fs_err::read_to_string(work.join("train.py"))?,
                fs_err::read_to_string(work.join("inference.py"))?,
            )
        }
        Kind::Bag => {
            let split = shared.split();
            let k = split.folds.as_ref().map_or(0, |f| f.ranges.len());
            let pool = crate::data::read_table(&data.join("train.csv"))?;
            let held_out = crate::folds::held_out(&pool, &shared.inputs.target, k as u32, split.split.seed)?;
            let members: Vec<String> = (1..=held_out.len()).map(|f| format!("fold-{f}")).collect();
            for name in &members {
                workspace.materialize_only(commit, &work.join("members").join(name), &TRAINING_FILES)?;
            }
            let target = &shared.inputs.target;
            let spec = serde_json::json!({
                "kind": target.kind.name(),
                "metric": target.metric.name(),
                "classes": target.classes,
                "of": best.iteration,
                "members": members.iter().map(|m| serde_json::json!({ "name": m, "weight": 1 })).collect::<Vec<_>>(),
                "held_out": held_out,
            });
            let text = serde_json::to_string(&spec)?;
            fs_err::write(steps.join("bag.json"), &text)?;
            fs_err::create_dir_all(work.join("steps"))?;
            fs_err::write(work.join("steps").join("bag.json"), &text)?;
            let guest = crate::guest_fs::GuestDir::open(&work)?;
            guest.replace("train.py", BAG_TRAIN.as_bytes())?;
            guest.replace("inference.py", BAG_INFER.as_bytes())?;
            hyperparameters.push(crate::steps::Hyperparameter {
                name: "bagged".into(),
                value: format!("{} folds of iteration {}", members.len(), best.iteration),
            });
            (BAG_TRAIN.to_string(), BAG_INFER.to_string())
        }
    };
    let mut acc = Accumulator::default();
    let mut script_seconds = 0.0;
    let cancel = CancellationToken::new();
    let mut it = Iteration {
        shared: &shared,
        n,
        dir: &dir,
        work: &work,
        cancel: &cancel,
        script_seconds: &mut script_seconds,
        after_loop: true,
    };
    let place = Place {
        work: work.clone(),
        data: data.clone(),
        input: shared.dir.validation_inputs(shared.split().id),
        rows: 0..0,
        label: String::new(),
    };
    let outcome = it.run_script_at(&place, ScriptKind::Train, &train, &mut acc).await;
    acc.keep_script("inference.py", &infer);
    let (status, model_files) = match outcome {
        Ok(outcome) => {
            let model_files = crate::policy::model_files(&outcome);
            match trained(&outcome, &model_files) {
                Ok(()) => ("succeeded".to_string(), model_files),
                Err(why) => (format!("failed at refit: {why}"), vec![]),
            }
        }
        Err(super::ask::StepFailure::Internal(e)) => return Err(e),
        Err(super::ask::StepFailure::Stop(_, why)) => (format!("cut: {why}"), vec![]),
        Err(super::ask::StepFailure::Failed(_, why)) => (format!("failed at refit: {why}"), vec![]),
    };
    let record = IterationRecord {
        iteration: n,
        parent: Some(best.iteration),
        operation: Operation::Refit,
        status,
        family: best.family.clone(),
        hyperparameters,
        representation: best.representation.clone(),
        split_id: best.split_id,
        validation_score: None,
        next_ideas: vec![],
        predictions_sha256: None,
        model_files,
        seconds: started.elapsed().as_secs_f64(),
        cost_usd: 0.0,
        step_seconds: Default::default(),
        analysis_error: None,
        script_seconds,
    };
    Ok(Finished::by_runner(n, record, acc.scripts, script_seconds, Some(data.join("train.csv"))))
}

/// Whether the time left holds a refit of `best` and both test evaluations: `seconds` (what
/// training it took), scaled to the larger data, with room to spare. The reason when it does
/// not.
pub(super) fn fits(best: &IterationRecord, seconds: f64, left: Option<Duration>) -> Result<(), String> {
    let Some(left) = left else { return Ok(()) };
    let needed = needed(seconds);
    if left >= needed {
        Ok(())
    } else {
        Err(format!(
            "{:.0} s left; retraining iteration {} on every training row needs about {:.0} s",
            left.as_secs_f64(),
            best.iteration,
            needed.as_secs_f64()
        ))
    }
}

/// The time to keep for a final model whose training took `seconds`, with room to spare.
pub(super) fn needed(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds * 1.5 + 5.0)
}
