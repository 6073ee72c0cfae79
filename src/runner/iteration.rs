//! One iteration: the agent's steps, the scripts they produce run in the sandbox, the runner's
//! own score. An iteration never commits or changes the run's state: it returns what happened
//! ([`Finished`]) and the run's dispatcher records it, in iteration order.
//!
//! Everything a script leaves is untrusted. The iteration's directory holds a `work/` that the
//! script sees as `/work`; the runner's own files (the agent's answers, the scripts as written)
//! live beside it, out of the script's reach, and the runner's copies are what get committed.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::StopReason;
use super::ask::{Accumulator, StepFailure, ask};
use super::shared::{Shared, SplitState};
use super::split;
use crate::guest_fs::GuestDir;
use crate::journal::{Event, IterationRecord, OutcomeBrief};
use crate::policy::{self, Script, ScriptKind};
use crate::sandbox::Outcome;
use crate::scoring::{Predicted, Scored, parse_predictions, read_prediction_bytes, score_predicted};
use crate::search::Operation;
use crate::steps::{
    AnalyzeOutput, ArchitectureOutput, ExploreOutput, Failure, PlanOutput, RepresentOutput, ScriptOutput,
    SplitOutput, Step, StepContext, TrainOutput, ValidationBrief, rules,
};

/// An iteration to run.
pub(super) struct Job {
    pub n: u32,
    /// What the agent is told: the task, and the iterations this one may know of.
    pub context: StepContext,
    pub cancel: CancellationToken,
    /// What the search decided this iteration does.
    pub decision: crate::search::Decision,
}

/// How an iteration went.
#[derive(Debug)]
pub(super) struct Finished {
    pub n: u32,
    pub record: IterationRecord,
    /// Set when the loop must stop (budget, interrupt, spend cap, unusable agent).
    pub stop: Option<StopReason>,
    /// The scripts as the runner wrote and ran them, by file name.
    pub scripts: Vec<(String, String)>,
    /// Seconds its scripts ran (the rest of its wall time is the runner's and the agent's).
    pub script_seconds: f64,
    /// Exploration findings it made.
    pub findings: Vec<String>,
    /// Its validation predictions, when it was scored (kept for ensembles).
    pub predicted: Option<Arc<Predicted>>,
    /// The training rows its model was trained on, when not the run's `data/train.csv`.
    pub train_data: Option<PathBuf>,
}

impl Finished {
    /// An iteration the runner made without the agent (an ensemble, a refit): no stop, no
    /// findings, no predictions kept for later ensembles.
    pub fn by_runner(
        n: u32,
        record: IterationRecord,
        scripts: Vec<(String, String)>,
        script_seconds: f64,
        train_data: Option<PathBuf>,
    ) -> Self {
        Self { n, record, stop: None, scripts, script_seconds, findings: vec![], predicted: None, train_data }
    }
}

/// What the validation predictions scored.
pub(super) struct Done {
    pub scored: Scored,
    pub predicted: Predicted,
    pub predictions_sha256: String,
    pub model_files: Vec<(String, String)>,
    /// Seconds the scored inference runs took (every fold's under cross-validation).
    pub infer_seconds: f64,
}

/// Runs iteration `job.n` to its end. `Err` only for failures of the runner itself.
pub(super) async fn run(shared: Arc<Shared>, job: Job) -> anyhow::Result<Finished> {
    let started = Instant::now();
    let n = job.n;
    let dir = shared.dir.iteration(n);
    if dir.exists() {
        fs_err::remove_dir_all(&dir)?;
    }
    let work = shared.dir.work(n);
    fs_err::create_dir_all(&work)?;
    fs_err::create_dir_all(dir.join("steps"))?;
    let mut acc = Accumulator::default();
    let mut scripts_seconds = 0.0;
    let mut it = Iteration {
        shared: &shared,
        n,
        dir: &dir,
        work: &work,
        cancel: &job.cancel,
        script_seconds: &mut scripts_seconds,
        after_loop: false,
    };
    let mut ctx = job.context;
    let outcome = it.build(&mut ctx, &mut acc).await;
    let (mut status, mut stop, done) = match outcome {
        Ok(done) => ("succeeded".to_string(), None, Some(done)),
        Err(StepFailure::Stop(reason, why)) => (format!("cut: {why}"), Some(reason), None),
        Err(StepFailure::Failed(step, why)) => (format!("failed at {step}: {why}"), None, None),
        Err(StepFailure::Internal(e)) => return Err(e),
    };
    // Analysis comes after the score: whatever happens to it, a scored model is kept.
    let mut next_ideas = Vec::new();
    let mut analysis_error = None;
    if let Some(done) = &done {
        ctx.validation =
            Some(ValidationBrief { score: done.scored.score, details: done.scored.details.clone() });
        match ask::<AnalyzeOutput>(
            &shared,
            Step::Analyze,
            &mut ctx,
            &|_| vec![],
            &dir.join("steps"),
            &mut acc,
        )
        .await
        {
            Ok(analysis) => next_ideas = analysis.next_ideas,
            Err(StepFailure::Stop(reason, why)) => {
                analysis_error = Some(format!("cut: {why}"));
                stop = Some(reason);
            }
            Err(StepFailure::Failed(_, why)) => analysis_error = Some(why),
            Err(StepFailure::Internal(e)) => return Err(e),
        }
    }
    if done.is_none() && status == "succeeded" {
        status = "failed".into();
    }
    if done.is_none()
        && let Some(failure) = &acc.failure
    {
        // What a later debug operation is shown.
        fs_err::write(dir.join("steps").join("failure.json"), serde_json::to_string_pretty(failure)?)?;
    }
    // What ran: the training answer names the model its script trains (a fix may have changed
    // it); before any training answer, the architecture step's choice.
    let (family, hyperparameters) = match (&acc.train, &acc.architecture) {
        (Some(t), _) => (t.family.clone(), t.hyperparameters.clone()),
        (None, Some(a)) => (a.family.clone(), a.hyperparameters.clone()),
        (None, None) => ("-".into(), vec![]),
    };
    let predicted = done.as_ref().map(|d| Arc::new(d.predicted.clone()));
    let infer_seconds = done.as_ref().map(|d| d.infer_seconds);
    let record = IterationRecord {
        iteration: n,
        parent: ctx.current.plan.as_ref().and_then(|p| p.builds_on).or(job.decision.parent),
        operation: job.decision.operation,
        status,
        family,
        hyperparameters,
        representation: acc.represent.clone(),
        split_id: shared.split().id,
        validation_score: done.as_ref().map(|d| d.scored.score),
        validation_tiebreak: done.as_ref().and_then(|d| d.scored.tiebreak),
        next_ideas,
        predictions_sha256: done.as_ref().map(|d| d.predictions_sha256.clone()),
        model_files: done.map(|d| d.model_files).unwrap_or_default(),
        seconds: started.elapsed().as_secs_f64(),
        cost_usd: acc.cost,
        step_seconds: acc.step_seconds.clone(),
        analysis_error,
        script_seconds: scripts_seconds,
        infer_seconds,
    };
    Ok(Finished {
        n,
        record,
        stop,
        scripts: acc.scripts,
        script_seconds: scripts_seconds,
        findings: acc.findings,
        predicted,
        train_data: None,
    })
}

/// An iteration's scripts as they run: where, under which token, and their time so far.
pub(super) struct Iteration<'a> {
    pub shared: &'a Shared,
    pub n: u32,
    pub dir: &'a Path,
    pub work: &'a Path,
    pub cancel: &'a CancellationToken,
    pub script_seconds: &'a mut f64,
    /// Made after the loop (the final model): its scripts may use the time kept back for it,
    /// not past the reserve for the test evaluation.
    pub after_loop: bool,
}

impl Iteration<'_> {
    fn steps_dir(&self) -> std::path::PathBuf {
        self.dir.join("steps")
    }

    /// Plan to scored validation predictions. A draft asks every step; an improve or a debug
    /// skips exploration and the split (a debug's training step starts from its parent's
    /// failure).
    async fn build(&mut self, ctx: &mut StepContext, acc: &mut Accumulator) -> Result<Done, StepFailure> {
        let shared = self.shared;
        let steps_dir = self.steps_dir();
        let operation = ctx.operation;
        let bases: Vec<u32> = ctx
            .history
            .iter()
            .filter(|h| h.status == "succeeded" && h.score.is_some())
            .filter(|h| !matches!(h.operation, Operation::Ensemble | Operation::Refit))
            .map(|h| h.iteration)
            .collect();
        let parent = ctx.parent.as_ref().map(|p| p.iteration);
        let rule = move |a: &PlanOutput| rules::plan(a, operation, parent, &bases);
        let plan: PlanOutput = ask(shared, Step::Plan, ctx, &rule, &steps_dir, acc).await?;
        // An improve that builds on another model than the one named is shown that one's code
        // from here on, and recorded as its child.
        if let Some(base) = plan.builds_on
            && ctx.parent.as_ref().is_none_or(|p| p.iteration != base)
            && let Some(brief) = ctx.history.iter().find(|h| h.iteration == base)
        {
            ctx.parent = Some(super::next::parent_brief(brief, &shared.dir));
        }
        ctx.current.plan = Some(plan);
        if operation == Operation::Draft {
            self.explore(ctx, acc).await?;
            self.split(ctx, acc).await?;
        }
        let represent: RepresentOutput = {
            let features: Vec<String> = ctx.profile.features.iter().map(|c| c.name.clone()).collect();
            let target = ctx.task.target.clone();
            let rule = move |a: &RepresentOutput| rules::represent(a, &features, &target);
            ask(shared, Step::Represent, ctx, &rule, &steps_dir, acc).await?
        };
        acc.represent = Some(represent.clone());
        ctx.current.represent = Some(represent);
        let architecture: ArchitectureOutput =
            ask(shared, Step::Architecture, ctx, &rules::architecture, &steps_dir, acc).await?;
        acc.architecture = Some(architecture.clone());
        ctx.current.architecture = Some(architecture);
        self.scripts(ctx, acc).await
    }

    /// The exploration step, and its script's output as a finding.
    async fn explore(&mut self, ctx: &mut StepContext, acc: &mut Accumulator) -> Result<(), StepFailure> {
        let shared = self.shared;
        let steps_dir = self.steps_dir();
        let explore: ExploreOutput =
            ask(shared, Step::Explore, ctx, &rules::explore, &steps_dir, acc).await?;
        if !explore.script.trim().is_empty() {
            let outcome = self.run_script(ScriptKind::Explore, &explore.script, acc).await?;
            let mut text = tail(&outcome.stdout.text, 3000);
            if !outcome.success() {
                text.push_str(&format!(
                    "\n(explore.py: {})\n{}",
                    outcome.summary(),
                    tail(&outcome.stderr.text, 1000)
                ));
            }
            let finding = format!("iteration {}: {}", self.n, text.trim());
            shared
                .log(Event::Finding { iteration: self.n, text: finding.clone() })
                .map_err(StepFailure::internal)?;
            ctx.findings.push(finding.clone());
            acc.findings.push(finding);
        }
        ctx.current.explore = Some(explore);
        Ok(())
    }

    /// The split step, while the split is open; a new split is checked, written and journaled
    /// before anything uses it.
    async fn split(&mut self, ctx: &mut StepContext, acc: &mut Accumulator) -> Result<(), StepFailure> {
        if !ctx.split_open {
            return Ok(());
        }
        let shared = self.shared;
        let target = &shared.inputs.target;
        let rows = shared.inputs.profile.rows;
        let labels = shared.pool_labels.clone();
        let rule = move |s: &SplitOutput| split::problems(s, target, labels.as_deref(), rows);
        let answer: SplitOutput = ask(shared, Step::Split, ctx, &rule, &self.steps_dir(), acc).await?;
        let current = shared.split();
        if !split::same(&answer, &current.split) {
            let id = current.id + 1;
            let (state, train_rows, validation_rows) =
                split::materialize(&shared.dir, target, &answer, id, None).map_err(StepFailure::Internal)?;
            *shared.split.lock().unwrap_or_else(|p| p.into_inner()) = state;
            shared
                .log(Event::SplitMade {
                    split_id: id,
                    validation_fraction: answer.validation_fraction,
                    stratify: answer.stratify,
                    seed: answer.seed,
                    train_rows,
                    validation_rows,
                    rationale: answer.rationale.clone(),
                    folds: None,
                })
                .map_err(StepFailure::internal)?;
            // Scores on the earlier split do not compare with this one.
            ctx.best = None;
        }
        ctx.split = Some(shared.split().split);
        Ok(())
    }

    /// train.py and inference.py, each with bounded fixes; the runner scores the predictions.
    /// With cross-validation the fixes happen on the first fold, the other folds run the
    /// scripts as fixed, and train.py then trains the committed model on every training row.
    async fn scripts(&mut self, ctx: &mut StepContext, acc: &mut Accumulator) -> Result<Done, StepFailure> {
        let split = self.shared.split();
        let Some(folds) = split.folds.clone() else {
            let home = self.home(&split);
            let first = self.fixable(ctx, acc, &home, &split).await?;
            return Ok(Done {
                scored: first.scored,
                predicted: first.predicted,
                predictions_sha256: crate::fsx::sha256_bytes(&first.bytes),
                model_files: first.model_files,
                infer_seconds: first.infer_seconds,
            });
        };
        let place = self.fold_place(&folds, 0).map_err(StepFailure::internal)?;
        let first = self.fixable(ctx, acc, &place, &split).await?;
        self.cross_validate(ctx, acc, &split, &folds, first).await
    }

    /// train.py then inference.py at `place`, each fixed by the agent up to the configured
    /// number of attempts. A debug starts from its parent's failure (at training or at
    /// inference).
    async fn fixable(
        &mut self,
        ctx: &mut StepContext,
        acc: &mut Accumulator,
        place: &Place,
        split: &SplitState,
    ) -> Result<FoldRun, StepFailure> {
        let shared = self.shared;
        let steps_dir = self.steps_dir();
        let fix_attempts = shared.inputs.config.loop_.fix_attempts;
        let guest = GuestDir::open(&place.work).map_err(StepFailure::internal)?;
        let inherited =
            ctx.parent.as_ref().filter(|_| ctx.operation == Operation::Debug).and_then(|p| p.failure.clone());
        let (mut failure, mut infer_failure) = match inherited {
            Some(f) if f.step == "infer" => (None, Some(f)),
            other => (other, None),
        };
        let mut model_files: Vec<(String, String)> = Vec::new();
        for attempt in 0..=fix_attempts {
            ctx.failure = failure.take();
            let train: TrainOutput = ask(shared, Step::Train, ctx, &rules::train, &steps_dir, acc).await?;
            ctx.failure = None;
            guest.remove("model").map_err(StepFailure::internal)?;
            acc.train = Some(train.clone());
            let outcome = self.run_script_at(place, ScriptKind::Train, &train.script, acc).await?;
            model_files = crate::policy::model_files(&outcome);
            let problem = trained(&outcome, &model_files).err();
            ctx.current.train = Some(train.clone());
            let Some(summary) = problem.map(|p| place.say(p)) else { break };
            let f = failure_of("train", train.script, summary.clone(), &outcome);
            acc.failure = Some(f.clone());
            if attempt == fix_attempts {
                return Err(StepFailure::Failed("train".into(), summary));
            }
            failure = Some(f);
        }
        failure = infer_failure.take();

        // Infer on the held-out features, with bounded fixes; the runner scores.
        let truth = split.truth.slice(place.rows.clone());
        for attempt in 0..=fix_attempts {
            ctx.failure = failure.take();
            let infer: ScriptOutput = ask(shared, Step::Infer, ctx, &rules::infer, &steps_dir, acc).await?;
            ctx.failure = None;
            guest.remove("predictions.csv").map_err(StepFailure::internal)?;
            let outcome = self.run_script_at(place, ScriptKind::Infer, &infer.script, acc).await?;
            ctx.current.infer = Some(infer.clone());
            let read = predicted(&outcome, &model_files, &guest, &shared.inputs.target, place.rows.len());
            let problem = read.and_then(|(bytes, p)| {
                score_predicted(&p, &shared.inputs.target, &truth).map(|scored| (bytes, p, scored))
            });
            let summary = match problem {
                Ok((bytes, predicted, scored)) => {
                    let infer_seconds = outcome.wall.as_secs_f64();
                    return Ok(FoldRun { scored, predicted, bytes, model_files, infer_seconds });
                }
                Err(summary) => place.say(summary),
            };
            let f = failure_of("infer", infer.script, summary.clone(), &outcome);
            acc.failure = Some(f.clone());
            if attempt == fix_attempts {
                return Err(StepFailure::Failed("infer".into(), summary));
            }
            failure = Some(f);
        }
        unreachable!("the loop either scores or returns")
    }

    /// Where the iteration's own scripts run: its work dir, the training rows, the validation
    /// features of the split in force.
    pub(super) fn home(&self, split: &SplitState) -> Place {
        Place {
            work: self.work.to_path_buf(),
            data: self.shared.dir.data(),
            input: self.shared.dir.validation_inputs(split.id),
            rows: 0..split.truth.len(),
            label: String::new(),
        }
    }

    /// Puts `text` in place as the script of `kind` and runs it within what is left of the
    /// loop's budget.
    pub(super) async fn run_script(
        &mut self,
        kind: ScriptKind,
        text: &str,
        acc: &mut Accumulator,
    ) -> Result<Outcome, StepFailure> {
        let home = self.home(&self.shared.split());
        self.run_script_at(&home, kind, text, acc).await
    }

    /// [`Self::run_script`] at `place`.
    pub(super) async fn run_script_at(
        &mut self,
        place: &Place,
        kind: ScriptKind,
        text: &str,
        acc: &mut Accumulator,
    ) -> Result<Outcome, StepFailure> {
        let shared = self.shared;
        // Replaced, never written through: the last script may have left a link by this name.
        GuestDir::open(&place.work)
            .and_then(|g| g.replace(kind.script(), text.as_bytes()))
            .map_err(StepFailure::internal)?;
        acc.keep_script(kind.script(), text);
        let visible = if kind.learns() { &place.data } else { &place.input };
        let mut spec = policy::spec(
            &Script { kind, work: &place.work, visible },
            &shared.inputs.config.sandbox,
            shared.inputs.config.loop_.seed,
            &shared.private(),
        );
        let left = if self.after_loop { shared.budget.final_model_left() } else { shared.budget.loop_left() };
        if let Some(left) = left {
            if left < Duration::from_secs(1) {
                return Err(StepFailure::Stop(
                    shared.stop_reason(),
                    format!("no time left to run {}", kind.name()),
                ));
            }
            spec.limits.wall = spec.limits.wall.min(left);
        }
        shared.reporter.report(super::progress::Progress::Step {
            iteration: self.n,
            step: format!("{} (running)", kind.name()),
        });
        let script = spec.script.clone();
        // A script that cannot be run at all (the sandbox refused a private directory, the
        // runtime broke) is nothing the agent can fix.
        let outcome = shared.sandbox_run(spec, self.cancel.clone()).await.map_err(StepFailure::internal)?;
        *self.script_seconds += outcome.wall.as_secs_f64();
        shared
            .log(Event::ScriptRun {
                iteration: self.n,
                step: kind.name().into(),
                script: script.clone(),
                outcome: OutcomeBrief::from(&outcome),
            })
            .map_err(StepFailure::internal)?;
        keep_output(&shared.dir.iteration(self.n), kind.name(), &script, &outcome);
        if self.cancel.is_cancelled() && !outcome.success() {
            let reason = shared.stop_reason();
            let when = match reason {
                StopReason::Interrupted => "when the run was interrupted",
                _ => "at the end of the budget",
            };
            return Err(StepFailure::Stop(reason, format!("{} stopped {when}", kind.name())));
        }
        Ok(outcome)
    }
}

/// Where a train.py and inference.py pair runs: the work dir mounted at `/work`, the training
/// rows train.py sees, the features inference.py predicts.
#[derive(Debug, Clone)]
pub(super) struct Place {
    pub work: PathBuf,
    pub data: PathBuf,
    pub input: PathBuf,
    /// Where the input's rows sit among the split's validation labels.
    pub rows: Range<usize>,
    /// "on fold 2 of 5", for messages; empty for a held-out split.
    pub label: String,
}

impl Place {
    /// `problem`, said of this place.
    pub fn say(&self, problem: String) -> String {
        if self.label.is_empty() { problem } else { format!("{}: {problem}", self.label) }
    }
}

/// One train.py and inference.py pair run and scored.
pub(super) struct FoldRun {
    pub scored: Scored,
    pub predicted: Predicted,
    /// The predictions file as the script wrote it.
    pub bytes: Vec<u8>,
    pub model_files: Vec<(String, String)>,
    /// Seconds its inference run took.
    pub infer_seconds: f64,
}

/// Whether a training run left a model.
pub(super) fn trained(outcome: &Outcome, model_files: &[(String, String)]) -> Result<(), String> {
    if !outcome.success() {
        Err(outcome.summary())
    } else if model_files.is_empty() {
        Err("train.py exited 0 but wrote nothing under model/".to_string())
    } else {
        Ok(())
    }
}

/// The predictions an inference run left (its bytes and as read), for `rows` input rows.
pub(super) fn predicted(
    outcome: &Outcome,
    model_files: &[(String, String)],
    guest: &GuestDir,
    target: &crate::data::TargetInfo,
    rows: usize,
) -> Result<(Vec<u8>, Predicted), String> {
    if !outcome.success() {
        return Err(outcome.summary());
    }
    if crate::policy::model_files(outcome) != model_files {
        return Err("inference.py changed files under model/; it must only read them".to_string());
    }
    let bytes = read_prediction_bytes(guest, "predictions.csv")?;
    let parsed = parse_predictions(bytes.clone(), "predictions.csv", target, rows)?;
    Ok((bytes, parsed))
}

/// A failed script as the agent sees it when asked to fix it.
pub(super) fn failure_of(step: &str, script: String, summary: String, outcome: &Outcome) -> Failure {
    Failure {
        step: step.into(),
        script,
        summary,
        stderr_tail: tail(&outcome.stderr.text, 4000),
        stdout_tail: tail(&outcome.stdout.text, 1000),
    }
}

/// The tails of a script's output, beside the iteration (`logs/NN-<step>.json`, in the order
/// the scripts ran), for the iteration's page in `serve`. Agent output: shown as text, never
/// trusted. Not part of the journal or the snapshot, so a write that fails costs only this.
fn keep_output(dir: &std::path::Path, step: &str, script: &str, outcome: &Outcome) {
    let logs = dir.join("logs");
    let written = std::fs::create_dir_all(&logs).and_then(|()| {
        let n = std::fs::read_dir(&logs)?.count() + 1;
        let text = serde_json::json!({
            "step": step,
            "script": script,
            "stdout_tail": tail(&outcome.stdout.text, 4000),
            "stderr_tail": tail(&outcome.stderr.text, 4000),
        });
        std::fs::write(logs.join(format!("{n:02}-{step}.json")), text.to_string())
    });
    if let Err(e) = written {
        tracing::warn!("keeping the output of {script}: {e}");
    }
}

/// The last `max` bytes of `text`, on a character boundary.
pub(super) fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}
