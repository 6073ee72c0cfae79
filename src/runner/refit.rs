//! Refit: after the loop, the selected iteration's train.py trained once more on every training
//! row (its training and validation rows together), committed as an iteration of its own
//! (operation `refit`, parent the selected one). It has no validation score: nothing is left to
//! score it on. Both it and the selected iteration are scored on the test split; the refit is
//! the run's final model.

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

/// Trains iteration `best`'s scripts on every training row as iteration `n`.
pub(super) async fn run(
    shared: Arc<Shared>,
    workspace: &Workspace,
    best: &IterationRecord,
    n: u32,
) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let dir = shared.dir.iteration(n);
    if dir.exists() {
        fs_err::remove_dir_all(&dir)?;
    }
    let work = shared.dir.work(n);
    let commit = workspace.resolve(&tag_name(best.iteration))?;
    workspace.materialize_only(commit, &work, &TRAINING_FILES)?;
    // The runner's copy of the selected iteration's answers (an ensemble's selection among
    // them) goes into the snapshot; the one in `work/` is what train.py reads.
    let steps = dir.join("steps");
    fs_err::create_dir_all(&steps)?;
    if let Ok(entries) = fs_err::read_dir(shared.dir.iteration(best.iteration).join("steps")) {
        for entry in entries.filter_map(Result::ok) {
            fs_err::copy(entry.path(), steps.join(entry.file_name()))?;
        }
    }
    let train = fs_err::read_to_string(work.join("train.py"))?;
    let infer = fs_err::read_to_string(work.join("inference.py"))?;
    let data = shared.dir.refit_data();
    if !data.join("train.csv").is_file() {
        fs_err::create_dir_all(&data)?;
        fs_err::copy(shared.dir.pool_csv(), data.join("train.csv"))?;
    }
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
        hyperparameters: best.hyperparameters.clone(),
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
    let needed = Duration::from_secs_f64(seconds * 1.5 + 5.0);
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
