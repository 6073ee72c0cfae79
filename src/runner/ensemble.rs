//! An ensemble iteration, made by the runner rather than an agent: greedy selection with
//! replacement over the validation predictions of earlier iterations, then a snapshot like any
//! other. Its `inference.py` (from `guest/`) runs each member's own `inference.py` under
//! `members/` and averages them with the chosen weights; its `train.py` retrains the members.
//! On a held-out split the runner scores it by running it in the sandbox on the validation
//! features, so the score is that of the code that is committed, audited and tested. With
//! cross-validation its score is the blend's over the members' out-of-fold predictions (the
//! members' committed models have seen every training row), and the run only shows it works.

use std::sync::Arc;
use std::time::Instant;

use super::ask::Accumulator;
use super::iteration::{Finished, Iteration, Job};
use super::shared::Shared;
use crate::guest_fs::GuestDir;
use crate::journal::IterationRecord;
use crate::metric::Standing;
use crate::policy::ScriptKind;
use crate::scoring::{Predicted, read_predictions, score};
use crate::search::{self, Candidate, Operation};
use crate::snapshot::{Workspace, tag_name};
use crate::steps::Hyperparameter;

const ENSEMBLE_TRAIN: &str = include_str!("../../guest/ensemble_train.py");
const ENSEMBLE_INFER: &str = include_str!("../../guest/ensemble_inference.py");
/// The member iterations of an ensemble, from its recorded hyperparameters (`iter-N` names).
pub(super) fn member_iterations(hyperparameters: &[Hyperparameter]) -> Vec<u32> {
    hyperparameters.iter().filter_map(|h| h.name.strip_prefix("iter-").and_then(|n| n.parse().ok())).collect()
}

/// Where an ensemble's snapshot holds its members, one directory each (`members/iter-N`).
pub(super) const MEMBERS: &str = "members";

/// What an ensemble holds of each member: what retrains it and what predicts with it.
pub(super) const MEMBER_FILES: [&str; 3] = ["train.py", "inference.py", "model"];

/// Additions the greedy selection makes (AutoGluon uses 25 to 100).
const ROUNDS: usize = 25;

/// Runs ensemble iteration `job.n` over `candidates` (iteration, its validation predictions if
/// the runner still holds them), best first.
/// `earlier` are the ensembles already made (iteration, members as recorded): the same blend is
/// not made twice.
pub(super) async fn run(
    shared: Arc<Shared>,
    job: Job,
    candidates: Vec<(u32, Option<Arc<Predicted>>)>,
    earlier: Vec<(u32, Vec<Hyperparameter>)>,
) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let n = job.n;
    let dir = shared.dir.iteration(n);
    if dir.exists() {
        fs_err::remove_dir_all(&dir)?;
    }
    let work = shared.dir.work(n);
    fs_err::create_dir_all(&work)?;
    fs_err::create_dir_all(dir.join("steps"))?;
    let split = shared.split();
    let target = &shared.inputs.target;
    let usable: Vec<Candidate> = candidates
        .into_iter()
        .filter_map(|(k, held)| {
            let predicted = match (held, &split.folds) {
                (Some(p), _) => (*p).clone(),
                (None, Some(folds)) => super::cv::read_kept(&shared.dir.iteration(k), folds, target)?,
                (None, None) => {
                    let guest = GuestDir::open(&shared.dir.work(k)).ok()?;
                    read_predictions(&guest, "predictions.csv", target, split.truth.len()).ok()?
                }
            };
            Some(Candidate { iteration: k, predicted })
        })
        .collect();
    let members_of = |weights: &[(u32, u32)]| {
        let total: u32 = weights.iter().map(|(_, w)| w).sum();
        let mut m: Vec<Hyperparameter> = weights
            .iter()
            .map(|(k, w)| Hyperparameter { name: tag_name(*k), value: format!("{w}/{total}") })
            .collect();
        m.sort_by(|a, b| a.name.cmp(&b.name));
        m
    };
    let mut acc = Accumulator::default();
    let mut script_seconds = 0.0;
    let record = |status: String,
                  standing: Option<Standing>,
                  weights: &[(u32, u32)],
                  acc: &Accumulator,
                  sha: Option<String>,
                  model_files,
                  script_seconds| {
        IterationRecord {
            iteration: n,
            parent: weights.iter().max_by_key(|(k, w)| (*w, std::cmp::Reverse(*k))).map(|(k, _)| *k),
            operation: Operation::Ensemble,
            status,
            family: "ensemble".into(),
            hyperparameters: members_of(weights),
            representation: None,
            split_id: split.id,
            validation_score: standing.map(|s| s.score),
            validation_tiebreak: standing.and_then(|s| s.tiebreak),
            next_ideas: vec![],
            predictions_sha256: sha,
            model_files,
            seconds: started.elapsed().as_secs_f64(),
            cost_usd: 0.0,
            step_seconds: acc.step_seconds.clone(),
            analysis_error: None,
            script_seconds,
            // Its one script is the blend's inference on every validated row.
            infer_seconds: standing.map(|_| script_seconds),
        }
    };
    let blend =
        search::select(&usable, target, &split.truth, split.ranges(), ROUNDS, &|| job.cancel.is_cancelled());
    if job.cancel.is_cancelled() {
        return Ok(Finished {
            n,
            record: record(
                match shared.stop_reason() {
                    super::StopReason::Interrupted => {
                        "cut: the ensemble selection stopped when the run was interrupted"
                    }
                    _ => "cut: the ensemble selection stopped at the end of the budget",
                }
                .to_string(),
                None,
                &[],
                &acc,
                None,
                vec![],
                0.0,
            ),
            stop: Some(shared.stop_reason()),
            scripts: vec![],
            script_seconds: 0.0,
            findings: vec![],
            predicted: None,
            train_data: None,
        });
    }
    let same_as = blend.as_ref().and_then(|b| {
        let now = members_of(&b.weights);
        earlier.iter().find(|(_, members)| {
            let mut m = members.clone();
            m.sort_by(|a, b| a.name.cmp(&b.name));
            m == now
        })
    });
    let blend = match (blend, same_as) {
        (Some(b), None) if b.members() >= 2 => b,
        (other, same) => {
            // What the selection settled on stays on record (see `crate::choice`).
            let chosen = other.as_ref().map(|b| b.weights.clone()).unwrap_or_default();
            let why = match (other, same) {
                (_, Some((k, _))) => format!("the greedy selection chose the same blend as iteration {k}"),
                (Some(b), None) => format!("the greedy selection kept only {}", tag_name(b.weights[0].0)),
                (None, None) => {
                    format!("{} candidates with usable validation predictions; two are needed", usable.len())
                }
            };
            let finished = Finished {
                n,
                record: record(format!("skipped: {why}"), None, &chosen, &acc, None, vec![], 0.0),
                stop: None,
                scripts: vec![],
                script_seconds: 0.0,
                findings: vec![],
                predicted: None,
                train_data: None,
            };
            return Ok(finished);
        }
    };
    let spec = serde_json::json!({
        "kind": target.kind.name(),
        "metric": target.metric.name(),
        "classes": target.classes,
        "members": blend.weights.iter().map(|(k, w)| serde_json::json!({"name": tag_name(*k), "iteration": k, "weight": w})).collect::<Vec<_>>(),
        "selection": {"method": "greedy selection with replacement (Caruana et al. 2004)", "rounds": ROUNDS, "validation_score": blend.score},
    });
    fs_err::write(dir.join("steps").join("ensemble.json"), serde_json::to_string_pretty(&spec)?)?;
    // The members as they were committed: scripts and trained models.
    let workspace = Workspace::open_or_init(&shared.dir.workspace())?;
    for (k, _) in &blend.weights {
        let to = work.join(MEMBERS).join(tag_name(*k));
        workspace.materialize_only(workspace.resolve(&tag_name(*k))?, &to, &MEMBER_FILES)?;
    }
    fs_err::create_dir_all(work.join("model"))?;
    fs_err::write(work.join("model").join("ensemble.json"), serde_json::to_string_pretty(&spec)?)?;
    GuestDir::open(&work)?.replace("train.py", ENSEMBLE_TRAIN.as_bytes())?;
    acc.keep_script("train.py", ENSEMBLE_TRAIN);
    let mut it = Iteration {
        shared: &shared,
        n,
        dir: &dir,
        work: &work,
        cancel: &job.cancel,
        script_seconds: &mut script_seconds,
        after_loop: false,
    };
    let outcome = match it.run_script(ScriptKind::Infer, ENSEMBLE_INFER, &mut acc).await {
        Ok(outcome) => outcome,
        Err(super::ask::StepFailure::Stop(reason, why)) => {
            let finished = Finished {
                n,
                record: record(
                    format!("cut: {why}"),
                    None,
                    &blend.weights,
                    &acc,
                    None,
                    vec![],
                    script_seconds,
                ),
                stop: Some(reason),
                scripts: acc.scripts.clone(),
                script_seconds,
                findings: vec![],
                predicted: None,
                train_data: None,
            };
            return Ok(finished);
        }
        Err(super::ask::StepFailure::Internal(e)) => return Err(e),
        Err(super::ask::StepFailure::Failed(step, why)) => {
            anyhow::bail!("unexpected failure at {step}: {why}")
        }
    };
    let guest = GuestDir::open(&work)?;
    let scored = match &split.folds {
        _ if !outcome.success() => {
            Err(format!("{}\n{}", outcome.summary(), super::iteration::tail(&outcome.stderr.text, 2000)))
        }
        // Cross-validated: the members' models saw every training row, so the run above only
        // shows the ensemble works; its score is the blend's over the members' out-of-fold
        // predictions, the mean over the folds as for any candidate.
        Some(_) => search::blend_score(&usable, &blend.weights, target, &split.truth, split.ranges())
            .map(|standing| (standing, None))
            .ok_or_else(|| "the blend's out-of-fold score is undefined".to_string()),
        None => score(&guest, "predictions.csv", target, &split.truth).map(|s| {
            let sha = guest.sha256("predictions.csv", u64::MAX).map(|(_, sha)| sha).ok();
            (Standing::new(s.score, s.tiebreak), sha)
        }),
    };
    let (status, validation_score, sha) = match scored {
        Ok((standing, sha)) => ("succeeded".to_string(), Some(standing), sha),
        Err(why) => (format!("failed at ensemble inference: {why}"), None, None),
    };
    let model_files = crate::policy::model_files(&outcome);
    let record = record(status, validation_score, &blend.weights, &acc, sha, model_files, script_seconds);
    Ok(Finished::by_runner(n, record, acc.scripts, script_seconds, None))
}
