//! Refit: after the loop, the selected iteration made into the run's final model from every
//! training row, committed as an iteration of its own (operation `refit`, parent the selected
//! one). Under a held-out split its train.py is trained once more on the training and validation
//! rows together. Under cross-validation (whose models have already seen every row) it is a
//! bag: the selected scripts trained once per fold, on the rows that fold trained on, their
//! predictions averaged (`guest/bag_train.py`, and the ensemble's inference). The models its
//! cross-validation trained are those very models, so they are what the bag is made of when
//! the run still keeps them (for an ensemble, each member's); only otherwise is it trained.
//! Either way its `train.py` trains it again with plain Python, and `audit --retrain` checks
//! that this gives the same bytes. It has no validation score: nothing is left to score it on.
//! Both it and the selected iteration are scored on the test split; the refit is the run's
//! final model.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::ask::Accumulator;
use super::ensemble::MEMBERS;
use super::iteration::{Finished, Iteration, Place, trained};
use super::shared::Shared;
use crate::guest_fs::GuestDir;
use crate::journal::IterationRecord;
use crate::policy::ScriptKind;
use crate::search::Operation;
use crate::snapshot::{Workspace, tag_name};

/// What a snapshot's train.py needs besides the data: its scripts, an ensemble's members and
/// selection.
const TRAINING_FILES: [&str; 4] = ["train.py", "inference.py", MEMBERS, "steps"];
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
                workspace.materialize_only(commit, &work.join(MEMBERS).join(name), &TRAINING_FILES)?;
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
            let guest = GuestDir::open(&work)?;
            guest.replace("train.py", BAG_TRAIN.as_bytes())?;
            guest.replace("inference.py", BAG_INFER.as_bytes())?;
            let from = match kept_models(&shared, best, members.len()) {
                Some(kept) => {
                    assemble(&work, &kept, &members, &text)?;
                    "its cross-validation models"
                }
                None => "trained again",
            };
            hyperparameters.push(crate::steps::Hyperparameter {
                name: "bagged".into(),
                value: format!("{} folds of iteration {} ({from})", members.len(), best.iteration),
            });
            (BAG_TRAIN.to_string(), BAG_INFER.to_string())
        }
    };
    let assembled = kind == Kind::Bag && work.join("model").join("ensemble.json").is_file();
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
    if assembled {
        acc.keep_script("train.py", &train);
        acc.keep_script("inference.py", &infer);
        let model_files = model_files_in(&work)?;
        let record = record(n, best, "succeeded".into(), hyperparameters, model_files, started, 0.0);
        return Ok(Finished::by_runner(n, record, acc.scripts, 0.0, Some(data.join("train.csv"))));
    }
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
    let record = record(n, best, status, hyperparameters, model_files, started, script_seconds);
    Ok(Finished::by_runner(n, record, acc.scripts, script_seconds, Some(data.join("train.csv"))))
}

/// The refit's record: an iteration of its own, child of the selected one, with no validation
/// score.
fn record(
    n: u32,
    best: &IterationRecord,
    status: String,
    hyperparameters: Vec<crate::steps::Hyperparameter>,
    model_files: Vec<(String, String)>,
    started: Instant,
    script_seconds: f64,
) -> IterationRecord {
    IterationRecord {
        iteration: n,
        parent: Some(best.iteration),
        operation: Operation::Refit,
        status,
        family: best.family.clone(),
        hyperparameters,
        representation: best.representation.clone(),
        split_id: best.split_id,
        validation_score: None,
        validation_tiebreak: None,
        next_ideas: vec![],
        predictions_sha256: None,
        model_files,
        seconds: started.elapsed().as_secs_f64(),
        cost_usd: 0.0,
        step_seconds: Default::default(),
        analysis_error: None,
        script_seconds,
        infer_seconds: None,
    }
}

/// The iterations whose fold models a bag of `best` is made of: itself, or an ensemble's
/// members.
pub(super) fn bagged_iterations(best: &IterationRecord) -> Vec<u32> {
    if best.operation == Operation::Ensemble {
        super::ensemble::member_iterations(&best.hyperparameters)
    } else {
        vec![best.iteration]
    }
}

/// Where a bag of `best` over `folds` folds takes each model from, when the run still keeps
/// every one: `(its place in the bag's work dir, the kept fold model)`.
fn kept_models(shared: &Shared, best: &IterationRecord, folds: usize) -> Option<Vec<(String, PathBuf)>> {
    let iterations = bagged_iterations(best);
    let mut kept = Vec::new();
    for f in 1..=folds {
        for &k in &iterations {
            let from = super::cv::kept_model(&shared.dir.iteration(k), f);
            let to = if best.operation == Operation::Ensemble {
                format!("{MEMBERS}/fold-{f}/{MEMBERS}/{}/model", tag_name(k))
            } else {
                format!("{MEMBERS}/fold-{f}/model")
            };
            kept.push((to, from));
        }
    }
    let whole = !iterations.is_empty() && kept.iter().all(|(_, from)| from.is_dir());
    whole.then_some(kept)
}

/// Lays out in `work` what `bag_train.py` would leave there: each fold member's models (the
/// kept ones, read like any script output: regular files only, no link followed), an
/// ensemble member's `model/ensemble.json`, and the bag's own `model/ensemble.json` (`spec`).
fn assemble(work: &Path, kept: &[(String, PathBuf)], members: &[String], spec: &str) -> anyhow::Result<()> {
    let guest = GuestDir::open(work)?;
    for (to, from) in kept {
        guest.remove(to)?;
        let source = GuestDir::open(from)?;
        let (files, passed) = source.walk(Default::default());
        if !passed.is_empty() {
            tracing::debug!(from = %from.display(), ?passed, "left out of a kept fold model");
        }
        for file in files {
            let path = work.join(to).join(&file.rel);
            fs_err::create_dir_all(path.parent().expect("a file has a parent"))?;
            // Nothing runs in a kept model's directory any more, so the file the walk found is
            // the one linked (a hard link shares it without copying; a copy where it cannot).
            if std::fs::hard_link(from.join(&file.rel), &path).is_err() {
                fs_err::write(&path, source.read(&file.rel, u64::MAX)?)?;
            }
        }
    }
    for member in members {
        let dir = work.join(MEMBERS).join(member);
        let selection = dir.join("steps").join("ensemble.json");
        if selection.is_file() {
            fs_err::create_dir_all(dir.join("model"))?;
            fs_err::copy(selection, dir.join("model").join("ensemble.json"))?;
        }
    }
    fs_err::create_dir_all(work.join("model"))?;
    fs_err::write(work.join("model").join("ensemble.json"), spec)?;
    Ok(())
}

/// `(path, sha256)` of the model files under `work`, named as a script's outputs are.
fn model_files_in(work: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let guest = GuestDir::open(work)?;
    let (files, _) = guest.walk(Default::default());
    let mut out = Vec::new();
    for file in files {
        let path = format!("/work/{}", file.rel);
        if crate::policy::is_model_file(&path) {
            out.push((path, guest.sha256(&file.rel, u64::MAX)?.1));
        }
    }
    Ok(out)
}
