//! A run from start to end: create (or resume), dispatch iterations under the budget, commit
//! each in iteration order, score the best on the held-out test split, report.
//!
//! The dispatcher alone changes the run's state, commits, and moves `best`. Up to `jobs`
//! iterations run at once; iteration `n` starts only when the iterations it may know of are
//! committed, and it is told exactly those, so the same seed gives the same run whatever order
//! iterations finish in. The first `split_iterations` iterations, which may change the split,
//! run one at a time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::budget::Budget;
use super::commit::{commit, environment};
use super::iteration::{self, Finished, Job};
use super::progress::{Progress, Reporter};
use super::shared::{FaultCounters, RunInputs, Shared, SplitState};
use super::split;
use crate::agent::{Agent, Backend, Redactor, Transcript};
use crate::data::{Dataset, target_labels, write_csv};
use crate::guest_fs::GuestDir;
use crate::journal::{Event, IterationRecord, Journal, OutcomeBrief};
use crate::policy::{self, Script, ScriptKind};
use crate::report::Summary;
use crate::run_dir::{Manifest, RunDir};
use crate::sandbox::{CancellationToken as SandboxCancel, Sandbox};
use crate::scoring::{Truth, score};
use crate::search::{Decision, Greedy, Node, Operation, Policy, Situation};
use crate::snapshot::Workspace;
use crate::steps::{self, IterationBrief, ParentBrief, SplitOutput, StepContext, TaskBrief};

/// Why the loop stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Budget,
    Iterations,
    Interrupted,
    SpendCap,
    AgentFailed(String),
}

impl StopReason {
    pub fn describe(&self) -> String {
        match self {
            StopReason::Budget => "budget spent".into(),
            StopReason::Iterations => "iterations done".into(),
            StopReason::Interrupted => "interrupted".into(),
            StopReason::SpendCap => "spend cap reached".into(),
            StopReason::AgentFailed(why) => format!("agent failed: {why}"),
        }
    }
}

/// What the run knows between iterations (rebuilt from the journal on resume).
#[derive(Debug, Clone, Default)]
pub struct State {
    pub records: Vec<IterationRecord>,
    /// Best iteration and score on the split of `best_split`.
    pub best: Option<(u32, f64)>,
    pub best_split: u32,
    /// Exploration findings, by the iteration that made them.
    pub findings: Vec<(u32, String)>,
    /// Validation predictions of the best scored iterations, kept for ensembles (others are
    /// read back from disk when needed).
    pub predictions: BTreeMap<u32, Arc<crate::scoring::Predicted>>,
}

/// A run in progress.
pub struct Runner {
    pub dir: RunDir,
    pub(super) shared: Arc<Shared>,
    pub(super) workspace: Workspace,
    pub(super) state: State,
    policy: Box<dyn Policy>,
    /// Pauses the circuit breaker has made for an unreachable agent server.
    breaker_pauses: u32,
}

/// How often the journal is checked for a long silence (a heartbeat is written after 30 s).
const HEARTBEAT_CHECK: Duration = Duration::from_secs(5);
const HEARTBEAT_AFTER: Duration = Duration::from_secs(30);

/// The parts of a run that every start (new or resumed) builds the same way.
pub(super) struct Parts {
    pub dir: RunDir,
    pub inputs: RunInputs,
    pub backend: Arc<dyn Backend>,
    pub redactor: Redactor,
    pub sandbox: Arc<dyn Sandbox>,
    pub reporter: Arc<dyn Reporter>,
    pub interrupt: CancellationToken,
    pub journal: Journal,
    pub elapsed_before: Duration,
    pub split: SplitState,
    pub pool_labels: Option<Arc<[String]>>,
}

impl Runner {
    /// Creates a new run directory for `dataset` and everything in it.
    #[expect(clippy::too_many_arguments, reason = "the run's parts are built by the caller")]
    pub fn create(
        runs_dir: &Path,
        dataset: &Dataset,
        inputs: RunInputs,
        backend: Arc<dyn Backend>,
        redactor: Redactor,
        sandbox: Arc<dyn Sandbox>,
        reporter: Arc<dyn Reporter>,
        interrupt: CancellationToken,
    ) -> anyhow::Result<Self> {
        let dir = RunDir::create(runs_dir, &inputs.task.name)?;
        write_csv(&dataset.pool, &dir.pool_csv())?;
        write_csv(&dataset.test, &dir.test_csv())?;
        Manifest {
            format: crate::run_dir::MANIFEST_FORMAT,
            task: inputs.task.clone(),
            target: inputs.target.clone(),
            profile: inputs.profile.clone(),
            budget_seconds: inputs.budget.map(|b| b.as_secs_f64()),
            stop_after: inputs.stop_after,
            config: inputs.config.to_file(),
            dropped_rows_without_target: dataset.dropped_rows,
        }
        .write(&dir.run_json())?;
        let mut journal = Journal::open(&dir.journal())?;
        let sandbox_info = sandbox.info();
        journal.append(Event::RunStarted {
            format: crate::journal::FORMAT,
            run_id: dir.id(),
            task: inputs.task.name.clone(),
            budget_seconds: inputs.budget.map(|b| b.as_secs_f64()),
            max_iterations: inputs.config.loop_.max_iterations,
            agent: inputs.config.agent.backend.name().into(),
            model: inputs.config.agent.settings.model.clone(),
            sandbox: sandbox_info.kind.to_string(),
            sandbox_layers: sandbox_info.layers.clone(),
            sandbox_waived: sandbox_info.waived.clone(),
            unpriced_models: inputs.config.agent.unpriced_models(),
            loop_runner_version: env!("CARGO_PKG_VERSION").into(),
            prompts_sha256: steps::prompts_hash(),
            schemas_sha256: schemas_for(&inputs, &sandbox_info).hash(),
        })?;
        journal.append(session(&inputs, Duration::ZERO))?;
        let initial = SplitOutput::initial(inputs.target.kind.is_classification(), inputs.config.loop_.seed);
        let (split, train_rows, validation_rows) = split::materialize(&dir, &inputs.target, &initial, 1)?;
        journal.append(Event::SplitMade {
            split_id: 1,
            validation_fraction: initial.validation_fraction,
            stratify: initial.stratify,
            seed: initial.seed,
            train_rows,
            validation_rows,
            rationale: initial.rationale.clone(),
        })?;
        let pool_labels = pool_labels(dataset, &inputs)?;
        Self::assemble(
            Parts {
                dir,
                inputs,
                backend,
                redactor,
                sandbox,
                reporter,
                interrupt,
                journal,
                elapsed_before: Duration::ZERO,
                split,
                pool_labels,
            },
            State { best_split: 1, ..State::default() },
        )
    }

    /// Builds the runner from its parts (shared by create and resume).
    pub(super) fn assemble(parts: Parts, state: State) -> anyhow::Result<Self> {
        let Parts {
            dir,
            inputs,
            backend,
            redactor,
            sandbox,
            reporter,
            interrupt,
            journal,
            elapsed_before,
            split,
            pool_labels,
        } = parts;
        let transcript = Transcript::open(&dir.transcript(), redactor)?;
        // Agent calls end with the loop: at an interrupt or when the loop's budget is spent.
        let loop_cancel = interrupt.child_token();
        let agent =
            Agent::new(backend, inputs.config.agent.settings.clone(), transcript, loop_cancel.clone());
        let workspace = Workspace::open_or_init(&dir.workspace())?;
        let budget = Budget::starting_at(inputs.started, inputs.budget, elapsed_before);
        let sandbox_info = sandbox.info();
        let schemas = schemas_for(&inputs, &sandbox_info);
        let sandbox_brief = sandbox_brief(&sandbox_info, &inputs.config.sandbox);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            inputs,
            agent,
            sandbox,
            sandbox_info,
            journal: Mutex::new(journal),
            reporter,
            budget,
            interrupt,
            loop_cancel,
            faults: FaultCounters::default(),
            split: Mutex::new(split),
            pool_labels,
            schemas,
            sandbox_brief,
            fingerprints: Default::default(),
        });
        let search = &shared.inputs.config.search;
        let policy = Box::new(Greedy { explore: search.explore, debug: search.debug, ..Greedy::default() });
        Ok(Self { dir, shared, workspace, state, policy, breaker_pauses: 0 })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Restores spend totals (resume).
    pub(super) fn agent(&self) -> &Agent {
        &self.shared.agent
    }

    /// What the scripts ran on (recorded in every snapshot).
    pub fn environment(&self) -> serde_json::Value {
        environment(&self.shared)
    }

    /// Runs iterations until the budget, the iteration count or an interrupt ends the loop, then
    /// scores the best iteration on the test split and writes the report.
    pub async fn run(&mut self) -> anyhow::Result<Summary> {
        let shared = self.shared.clone();
        let settings = &shared.inputs.config.agent.settings;
        shared.reporter.report(Progress::RunStarted {
            run_dir: self.dir.root.display().to_string(),
            agent: if shared.agent.backend_name() == "builtin" {
                "built-in agent (offline, no LLM)".into()
            } else {
                format!("{} ({})", shared.agent.backend_name(), settings.model)
            },
            sandbox: format!("{} {}", shared.sandbox_info.kind, shared.sandbox_info.interpreter),
            metric: shared.inputs.target.metric.name().into(),
            budget_seconds: shared.inputs.budget.map(|b| b.as_secs_f64()),
        });
        for waived in &shared.sandbox_info.waived {
            shared.reporter.report(Progress::Note(format!("sandbox protection off: {waived}")));
        }
        for model in shared.inputs.config.agent.unpriced_models() {
            shared.reporter.report(Progress::Note(format!(
                "model `{model}` has no price in [agent.prices]: its calls count as $0 (unpriced)"
            )));
        }
        if let Some(deadline) = shared.budget.loop_deadline() {
            let token = shared.loop_cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline.into()).await;
                token.cancel();
            });
        }
        let heartbeat = spawn_heartbeat(&shared);
        let reason = self.dispatch().await;
        heartbeat.abort();
        let reason = reason?;
        tracing::info!(reason = reason.describe(), "loop finished");
        self.finish(reason).await
    }

    /// Starts iterations as the window allows and records them in order.
    async fn dispatch(&mut self) -> anyhow::Result<StopReason> {
        let shared = self.shared.clone();
        let config = &shared.inputs.config.loop_;
        let limit = shared.inputs.stop_after.unwrap_or(u32::MAX).min(config.max_iterations);
        let mut tasks: JoinSet<anyhow::Result<Finished>> = JoinSet::new();
        let mut waiting: BTreeMap<u32, Finished> = BTreeMap::new();
        let mut next = self.state.records.len() as u32 + 1;
        let mut stop: Option<StopReason> = None;
        loop {
            while stop.is_none() {
                if shared.interrupt.is_cancelled() {
                    stop = Some(StopReason::Interrupted);
                } else if shared.loop_cancel.is_cancelled()
                    || shared.budget.loop_left().is_some_and(|l| l.is_zero())
                {
                    stop = Some(StopReason::Budget);
                } else if next > limit {
                    if tasks.is_empty() {
                        stop = Some(StopReason::Iterations);
                    }
                    break;
                }
                if stop.is_some() {
                    break;
                }
                let known = self.known(next);
                if (self.state.records.len() as u32) < known {
                    break;
                }
                // The circuit breaker: a server that keeps failing gets pauses, then the run stops
                // cleanly instead of committing empty iterations against it.
                let agent = &shared.inputs.config.agent;
                let (streak, last) = shared.agent.unreachable_streak();
                if streak == 0 {
                    self.breaker_pauses = 0;
                }
                if streak >= agent.breaker_failures + self.breaker_pauses {
                    if !tasks.is_empty() {
                        break;
                    }
                    if self.breaker_pauses >= agent.breaker_pauses {
                        stop = Some(StopReason::AgentFailed(format!(
                            "the agent's server failed {streak} questions in a row (last: {last})"
                        )));
                        break;
                    }
                    let pause = agent.breaker_pause * (1 << self.breaker_pauses.min(4));
                    let note = format!(
                        "the agent's server failed {streak} questions in a row (last: {last}); pausing {} before trying again",
                        humantime::format_duration(pause)
                    );
                    shared.reporter.report(Progress::Note(note.clone()));
                    shared.log(Event::AgentNotice { iteration: next, step: "breaker".into(), text: note })?;
                    self.breaker_pauses += 1;
                    tokio::select! {
                        () = shared.loop_cancel.cancelled() => continue,
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                let decision = self.decide(next, known as usize, next == limit);
                let context = self.context(next, known as usize, &decision);
                shared.log(Event::IterationStarted {
                    iteration: next,
                    parent: decision.parent,
                    operation: decision.operation,
                    reason: decision.reason.clone(),
                })?;
                shared.reporter.report(Progress::IterationStarted { iteration: next });
                let job = Job { n: next, context, cancel: shared.loop_cancel.clone(), decision };
                if job.decision.operation == Operation::Ensemble {
                    let candidates = self.ensemble_candidates(known as usize);
                    let earlier: Vec<(u32, Vec<crate::steps::Hyperparameter>)> = self.state.records
                        [..known as usize]
                        .iter()
                        .filter(|r| r.operation == Operation::Ensemble && r.succeeded())
                        .map(|r| (r.iteration, r.hyperparameters.clone()))
                        .collect();
                    let cached: Vec<(u32, Option<Arc<crate::scoring::Predicted>>)> = candidates
                        .iter()
                        .map(|(k, _)| (*k, self.state.predictions.get(k).cloned()))
                        .collect();
                    tasks.spawn(super::ensemble::run(shared.clone(), job, cached, earlier));
                } else {
                    tasks.spawn(iteration::run(shared.clone(), job));
                }
                next += 1;
            }
            let Some(joined) = tasks.join_next().await else { break };
            let finished = match joined {
                Ok(Ok(finished)) => finished,
                Ok(Err(e)) => {
                    shared.loop_cancel.cancel();
                    tasks.abort_all();
                    return Err(e);
                }
                Err(e) => {
                    shared.loop_cancel.cancel();
                    tasks.abort_all();
                    return Err(anyhow::anyhow!("an iteration task failed: {e}"));
                }
            };
            waiting.insert(finished.n, finished);
            let mut committed = self.state.records.len() as u32;
            while let Some(finished) = waiting.remove(&(committed + 1)) {
                if let Some(reason) = &finished.stop
                    && stop.is_none()
                {
                    stop = Some(if shared.interrupt.is_cancelled() {
                        StopReason::Interrupted
                    } else {
                        reason.clone()
                    });
                    // Whatever stopped this iteration stops the others too.
                    shared.loop_cancel.cancel();
                }
                self.record(finished)?;
                committed += 1;
            }
        }
        Ok(stop.unwrap_or(StopReason::Iterations))
    }

    /// How many iterations iteration `n` may know of: all before it when one runs at a time;
    /// with `jobs` at once, those up to `n - jobs` (committed before it can start), and always
    /// every iteration that could change the split.
    fn known(&self, n: u32) -> u32 {
        let config = &self.shared.inputs.config.loop_;
        let jobs = config.jobs.max(1);
        n.saturating_sub(jobs).max(config.split_iterations.min(n - 1))
    }

    /// The search's decision for iteration `n`, from the first `known` iterations (or the one
    /// recorded, when replaying).
    fn decide(&self, n: u32, known: usize, last: bool) -> Decision {
        let shared = &self.shared;
        if let Some(recorded) = shared.inputs.decisions.as_ref().and_then(|d| d.get(n as usize - 1)) {
            return recorded.clone();
        }
        let config = &shared.inputs.config;
        let split = shared.split().id;
        let nodes: Vec<Node> = self.state.records[..known].iter().map(|r| node(r, split)).collect();
        let situation = Situation {
            iteration: n,
            higher_is_better: shared.inputs.target.metric.higher_is_better(),
            time_left: shared.budget.loop_left(),
            seed: config.loop_.seed,
            drafts: config.search.drafts.unwrap_or_else(|| self.default_drafts()),
            ensemble_every: config.search.ensemble_every,
            jobs: config.loop_.jobs,
            perfect: shared
                .inputs
                .target
                .metric
                .perfect()
                .is_some_and(|p| nodes.iter().filter_map(|x| x.score).any(|s| s == p)),
        };
        let mut decision = self.policy.decide(&nodes, &situation);
        let situation = &situation;
        // The last iteration of a counted run is an ensemble of what scored, if one is worth it.
        if last
            && decision.operation != Operation::Ensemble
            && config.search.ensemble_every > 0
            && !situation.perfect
        {
            let last_ensemble =
                nodes.iter().filter(|x| x.operation == Operation::Ensemble).map(|x| x.iteration).max();
            let new_scored = nodes
                .iter()
                .filter(|x| x.score.is_some() && x.operation != Operation::Ensemble)
                .filter(|x| last_ensemble.is_none_or(|e| x.iteration > e))
                .count();
            if new_scored >= 2 {
                decision = Decision::new(
                    Operation::Ensemble,
                    None,
                    "the last iteration: an ensemble of what scored",
                );
            }
        }
        decision
    }

    /// Drafts before improving: the built-in agent drafts each family of its portfolio once; an
    /// LLM five times.
    fn default_drafts(&self) -> u32 {
        let shared = &self.shared;
        if shared.agent.backend_name() == "builtin" {
            crate::builtin::drafts(
                shared.inputs.target.kind == crate::task::TaskKind::Regression,
                shared.inputs.profile.rows,
            )
        } else {
            5
        }
    }

    /// Scored single models among the first `known` iterations on the split in force, best
    /// first.
    fn ensemble_candidates(&self, known: usize) -> Vec<(u32, Option<f64>)> {
        let split = self.shared.split().id;
        let metric = self.shared.inputs.target.metric;
        let mut scored: Vec<(u32, Option<f64>)> = self.state.records[..known]
            .iter()
            .filter(|r| r.succeeded() && r.split_id == split && r.operation != Operation::Ensemble)
            .map(|r| (r.iteration, r.validation_score))
            .collect();
        scored.sort_by(|a, b| {
            let (x, y) = (a.1.unwrap_or(f64::NAN), b.1.unwrap_or(f64::NAN));
            (if metric.higher_is_better() { y.total_cmp(&x) } else { x.total_cmp(&y) }).then(a.0.cmp(&b.0))
        });
        scored.truncate(MAX_ENSEMBLE_CANDIDATES);
        scored
    }

    /// What an improve or debug operation is shown of its parent: the runner's own records of
    /// it (its answers, its scripts as run, how it failed).
    fn parent_brief(&self, parent: u32) -> Option<ParentBrief> {
        let record = self.state.records.get(parent as usize - 1)?;
        let steps = self.dir.iteration(parent).join("steps");
        fn load<T: serde::de::DeserializeOwned>(path: std::path::PathBuf) -> Option<T> {
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
        }
        let analysis: Option<crate::steps::AnalyzeOutput> = load(steps.join("analyze.json"));
        let infer: Option<crate::steps::ScriptOutput> = load(steps.join("infer.json"));
        Some(ParentBrief {
            iteration: parent,
            operation: record.operation,
            status: record.status.clone(),
            family: record.family.clone(),
            hyperparameters: record.hyperparameters.clone(),
            representation: record.representation.clone(),
            architecture: load(steps.join("architecture.json")),
            score: record.validation_score,
            train: load(steps.join("train.json")),
            inference_script: infer.map(|i| i.script).unwrap_or_default(),
            observations: analysis.as_ref().map(|a| a.observations.clone()).unwrap_or_default(),
            next_ideas: analysis.map(|a| a.next_ideas).unwrap_or_default(),
            failure: load(steps.join("failure.json")),
        })
    }

    /// Commits a finished iteration (unless it was cut with nothing to keep) and journals it.
    fn record(&mut self, finished: Finished) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        let record = &finished.record;
        if record.split_id != self.state.best_split {
            // Scores on another split are not comparable: the best is found again on this one.
            self.state.best = None;
            self.state.best_split = record.split_id;
        }
        let metric = shared.inputs.target.metric;
        let best = record.succeeded()
            && self
                .state
                .best
                .is_none_or(|(_, b)| metric.better(record.validation_score.unwrap_or(f64::NAN), b));
        if finished.stop.is_none() || record.validation_score.is_some() {
            commit(&shared, &self.workspace, &finished, best)?;
        }
        if best {
            self.state.best = Some((finished.n, record.validation_score.unwrap_or(f64::NAN)));
        }
        shared.log(Event::IterationFinished { iteration: finished.n, record: record.clone() })?;
        tracing::info!(
            iteration = finished.n,
            status = %record.status,
            family = %record.family,
            score = ?record.validation_score,
            best,
            seconds = record.seconds,
            runner_seconds = record.seconds - finished.script_seconds,
            "iteration finished"
        );
        shared.reporter.report(Progress::IterationFinished {
            iteration: finished.n,
            status: record.status.clone(),
            family: record.family.clone(),
            score: record.validation_score,
            best,
        });
        for finding in &finished.findings {
            self.state.findings.push((finished.n, finding.clone()));
        }
        let predicted = finished.predicted.clone();
        self.state.records.push(finished.record);
        if let Some(p) = predicted {
            self.state.predictions.insert(finished.n, p);
            // Only what an ensemble could take.
            let keep: Vec<u32> =
                self.ensemble_candidates(self.state.records.len()).iter().map(|(k, _)| *k).collect();
            self.state.predictions.retain(|k, _| keep.contains(k));
        }
        self.report_status();
        Ok(())
    }

    fn report_status(&self) {
        let spend = self.shared.agent.spend();
        self.shared.reporter.report(Progress::Status {
            best_score: self.state.best.map(|b| b.1),
            metric: self.shared.inputs.target.metric.name().into(),
            left_seconds: self.shared.budget.left().map(|d| d.as_secs_f64()),
            cost_usd: spend.cost_usd,
            unpriced: !spend.unpriced_models.is_empty(),
        });
    }

    /// The context iteration `n` is asked with: the first `known` iterations, no later ones.
    fn context(&self, n: u32, known: usize, decision: &Decision) -> StepContext {
        let shared = &self.shared;
        let split = shared.split();
        let history: Vec<IterationBrief> = self.state.records[..known].iter().map(brief).collect();
        let metric = shared.inputs.target.metric;
        let best = history
            .iter()
            .filter(|h| {
                h.score.is_some() && self.state.records[(h.iteration - 1) as usize].split_id == split.id
            })
            .filter(|h| h.status == "succeeded")
            .fold(None::<&IterationBrief>, |best, h| match best {
                Some(b) if !metric.better(h.score.unwrap_or(f64::NAN), b.score.unwrap_or(f64::NAN)) => {
                    Some(b)
                }
                _ => Some(h),
            })
            .cloned();
        let config = &shared.inputs.config.loop_;
        StepContext {
            task: TaskBrief::new(&shared.inputs.task, &shared.inputs.target),
            operation: decision.operation,
            parent: decision.parent.and_then(|p| self.parent_brief(p)),
            profile_text: shared.inputs.profile.render(),
            profile: shared.inputs.profile.clone(),
            iteration: n,
            max_iterations: config.max_iterations,
            history,
            best,
            findings: self
                .state
                .findings
                .iter()
                .filter(|(i, _)| *i as usize <= known)
                .map(|(_, t)| t.clone())
                .collect(),
            split: Some(split.split),
            // A split changes only in a draft of the first iterations.
            split_open: n <= config.split_iterations && decision.operation == Operation::Draft,
            current: Default::default(),
            failure: None,
            validation: None,
            seed: config.seed,
            clock: Some(crate::steps::Clock {
                time_left_seconds: shared.budget.loop_left().map(|d| d.as_secs_f64()),
                runtimes: self.state.records[..known]
                    .iter()
                    .map(|r| (r.iteration, r.script_seconds))
                    .collect(),
            }),
        }
    }

    /// Final evaluation, report, and the closing journal entry.
    pub async fn finish(&mut self, reason: StopReason) -> anyhow::Result<Summary> {
        let test_score = self.final_evaluation().await?;
        let shared = &self.shared;
        let summary = Summary {
            task: shared.inputs.task.name.clone(),
            metric: shared.inputs.target.metric.name().into(),
            best_iteration: self.state.best.map(|b| b.0),
            validation_score: self.state.best.map(|b| b.1),
            test_score,
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
        })?;
        crate::report::write(&self.dir)?;
        Ok(summary)
    }

    /// Runs the best iteration's inference on the test features and scores it.
    async fn final_evaluation(&mut self) -> anyhow::Result<Option<f64>> {
        let shared = self.shared.clone();
        let Some((best, _)) = self.state.best else {
            shared.log(Event::FinalEvaluation {
                iteration: None,
                test_score: None,
                detail: "no iteration succeeded".into(),
                outcome: None,
            })?;
            shared.reporter.report(Progress::FinalEvaluation { iteration: None, test_score: None });
            return Ok(None);
        };
        shared
            .reporter
            .report(Progress::Note(format!("scoring iteration {best} on the held-out test split")));
        let final_dir = self.dir.root.join("final");
        if final_dir.exists() {
            fs_err::remove_dir_all(&final_dir)?;
        }
        let work = final_dir.join("work");
        let commit = self.workspace.resolve(&crate::snapshot::tag_name(best))?;
        self.workspace.materialize(commit, &work)?;
        // The snapshot's training data is not needed to predict; keep it out of reach.
        let _ = fs_err::remove_dir_all(work.join("data"));
        let _ = fs_err::remove_dir_all(work.join("input"));
        let input = final_dir.join("input");
        fs_err::create_dir_all(&input)?;
        let test = crate::data::read_table(&self.dir.test_csv())?;
        write_csv(&test.drop(&shared.inputs.target.column)?, &input.join("features.csv"))?;
        let kind = ScriptKind::FinalTest;
        let mut spec = policy::spec(
            &Script { kind, work: &work, visible: &input },
            &shared.inputs.config.sandbox,
            shared.inputs.config.loop_.seed,
            &shared.private(),
        );
        // The budget is a hard limit: the final evaluation gets what is left of it, no more.
        if let Some(left) = shared.budget.left() {
            spec.limits.wall = spec.limits.wall.min(left);
        }
        if spec.limits.wall < Duration::from_millis(500) {
            let detail = "the budget ran out before the final evaluation could run".to_string();
            shared.log(Event::FinalEvaluation {
                iteration: Some(best),
                test_score: None,
                detail,
                outcome: None,
            })?;
            shared.reporter.report(Progress::FinalEvaluation { iteration: Some(best), test_score: None });
            return Ok(None);
        }
        // Only a second interrupt (which exits the process) stops the final evaluation.
        let outcome = shared.sandbox_run(spec, SandboxCancel::new()).await?;
        let truth =
            Truth::from_csv(&self.dir.test_csv(), &shared.inputs.target).map_err(anyhow::Error::msg)?;
        let (test_score, detail) = if outcome.success() {
            let guest = GuestDir::open(&work)?;
            match score(
                &guest,
                kind.predictions().expect("final test predicts"),
                &shared.inputs.target,
                &truth,
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
                    iteration::tail(&outcome.stderr.text, 500)
                ),
            )
        };
        shared.log(Event::FinalEvaluation {
            iteration: Some(best),
            test_score,
            detail,
            outcome: Some(OutcomeBrief::from(&outcome)),
        })?;
        shared.reporter.report(Progress::FinalEvaluation { iteration: Some(best), test_score });
        Ok(test_score)
    }
}

/// The `session` entry of a (re)start: when the command started, and what earlier sessions
/// used.
pub(super) fn session(inputs: &RunInputs, elapsed_before: Duration) -> Event {
    let started = std::time::SystemTime::now() - inputs.started.elapsed();
    Event::Session {
        started_at: humantime::format_rfc3339_millis(started).to_string(),
        elapsed_before_seconds: elapsed_before.as_secs_f64(),
    }
}

/// The step schemas for this task: its feature columns, the families its sandbox offers.
fn schemas_for(inputs: &RunInputs, sandbox: &crate::sandbox::SandboxInfo) -> crate::steps::schemas::Schemas {
    let features = inputs.profile.features.iter().map(|c| c.name.clone()).collect();
    crate::steps::schemas::Schemas::for_task(&crate::steps::schemas::SchemaFacts {
        features,
        packages: sandbox.packages.clone(),
    })
}

/// The sandbox as prompts describe it: the interpreter, the packages that matter for modelling
/// (only those installed), threads, and the limits a script runs under.
pub(super) fn sandbox_brief(
    info: &crate::sandbox::SandboxInfo,
    config: &crate::config::SandboxConfig,
) -> String {
    let relevant = [
        "numpy",
        "pandas",
        "scipy",
        "scikit-learn",
        "statsmodels",
        "xgboost",
        "lightgbm",
        "catboost",
        "torch",
    ];
    let packages: Vec<String> = relevant
        .iter()
        .filter_map(|name| {
            info.packages.iter().find(|(p, _)| p.eq_ignore_ascii_case(name)).map(|(p, v)| format!("{p} {v}"))
        })
        .collect();
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30));
    let limits = format!(
        "memory at most {}, each script at most {}",
        gib(config.memory_bytes),
        humantime::format_duration(config.script_timeout)
    );
    match info.kind {
        crate::sandbox::SandboxKind::Wasi => format!(
            "{} compiled to WebAssembly, with {} and nothing else (no xgboost, lightgbm or torch); one thread (use n_jobs=1); no network, no subprocesses; {limits}. Reading CSV is slow here: read each file once.",
            info.interpreter,
            packages.join(", ")
        ),
        crate::sandbox::SandboxKind::Process => format!(
            "native {} with {} (only these; nothing can be installed); {} thread{} (n_jobs={}); no network; {limits}.",
            info.interpreter,
            packages.join(", "),
            config.threads,
            if config.threads == 1 { "" } else { "s" },
            config.threads
        ),
    }
}

/// The pool's class labels, for checking proposed splits (classification only).
fn pool_labels(dataset: &Dataset, inputs: &RunInputs) -> anyhow::Result<Option<Arc<[String]>>> {
    if !inputs.target.kind.is_classification() {
        return Ok(None);
    }
    Ok(Some(target_labels(&dataset.pool, &inputs.target.column)?.into()))
}

/// Keeps the journal's clock running through long silences (a script of many minutes), so a
/// run killed meanwhile is charged for that time when it resumes.
fn spawn_heartbeat(shared: &Arc<Shared>) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT_CHECK).await;
            let Some(shared) = weak.upgrade() else { return };
            let mut journal = shared.journal.lock().unwrap_or_else(|p| p.into_inner());
            if journal.idle() >= HEARTBEAT_AFTER
                && let Err(e) = journal.append(Event::Heartbeat)
            {
                tracing::warn!(error = %e, "writing a heartbeat to the journal failed");
            }
        }
    })
}

/// Most candidates an ensemble selection looks at (the best ones).
const MAX_ENSEMBLE_CANDIDATES: usize = 20;

/// A record as the search sees it; only scores on the split in force count.
pub(super) fn node(r: &IterationRecord, split: u32) -> Node {
    Node {
        iteration: r.iteration,
        parent: r.parent,
        operation: r.operation,
        score: if r.split_id == split && r.succeeded() { r.validation_score } else { None },
        failed: r.status.starts_with("failed"),
        seconds: r.script_seconds,
    }
}

pub(super) fn brief(r: &IterationRecord) -> IterationBrief {
    IterationBrief {
        iteration: r.iteration,
        parent: r.parent,
        operation: r.operation,
        status: r.status.clone(),
        family: r.family.clone(),
        hyperparameters: r.hyperparameters.clone(),
        representation: r.representation.clone(),
        score: r.validation_score,
        next_ideas: r.next_ideas.clone(),
    }
}
