//! A run from start to end: create (or resume), dispatch iterations under the budget, commit
//! each in iteration order, then finish (`evaluate`: refit, the test split, the report). What
//! each iteration is and is told comes from `next`.
//!
//! The dispatcher alone changes the run's state, commits, and moves `best`. Up to `jobs`
//! iterations run at once; iteration `n` starts only when the iterations it may know of (see
//! `search::lag`) are committed, and it is told exactly those, so the same seed gives the same
//! run whatever order iterations finish in. The first `split_iterations` iterations, which may
//! change the split, run one at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::budget::Budget;
use super::commit::{commit, environment};
use super::disk::DiskRoom;
use super::iteration::{self, Finished, Job};
use super::progress::{Progress, Reporter};
use super::shared::{FaultCounters, RunInputs, Shared, SplitState};
use super::split;
use crate::agent::{Agent, Backend, Redactor, Transcript};
use crate::data::{Dataset, target_labels, write_csv};
use crate::journal::{Event, IterationRecord, Journal};
use crate::report::Summary;
use crate::run_dir::{Manifest, RunDir, RunLock};
use crate::sandbox::Sandbox;
use crate::search::{Decision, Greedy, Operation, Policy};
use crate::snapshot::Workspace;
use crate::steps::{self, SplitOutput};

/// Why the loop stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Budget,
    Iterations,
    Interrupted,
    SpendCap,
    AgentFailed(String),
    /// Too little room left on the run directory's filesystem (why).
    DiskFull(String),
    /// Every iteration for a while failed (why).
    Stuck(String),
}

impl StopReason {
    pub fn describe(&self) -> String {
        match self {
            StopReason::Budget => "budget spent".into(),
            StopReason::Iterations => "iterations done".into(),
            StopReason::Interrupted => "interrupted".into(),
            StopReason::SpendCap => "spend cap reached".into(),
            StopReason::AgentFailed(why) => format!("agent failed: {why}"),
            StopReason::DiskFull(why) | StopReason::Stuck(why) => why.clone(),
        }
    }
}

/// What the run knows between iterations (rebuilt from the journal on resume).
#[derive(Debug, Clone)]
pub struct State {
    pub records: Vec<IterationRecord>,
    /// The chosen iteration and its score (`choice`'s, kept at hand).
    pub best: Option<(u32, f64)>,
    pub choice: crate::choice::Choice,
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
    pub(super) policy: Box<dyn Policy>,
    /// Pauses the circuit breaker has made for an unreachable agent server.
    breaker_pauses: u32,
    /// The search's decisions for iterations started in this session.
    pub(super) decided: BTreeMap<u32, Decision>,
    /// What the built-in agent is to train in each iteration dispatched this session (see
    /// [`crate::steps::PendingBrief::planned`]).
    pub(super) planned: BTreeMap<u32, crate::steps::Planned>,
    /// What the run needs free on its filesystem to start another iteration.
    disk: DiskRoom,
    /// Held while this process drives the run.
    _lock: RunLock,
}

/// How often the journal is checked for a long silence (a heartbeat is written after 30 s).
const HEARTBEAT_CHECK: Duration = Duration::from_secs(5);
const HEARTBEAT_AFTER: Duration = Duration::from_secs(30);

/// The parts of a run that every start (new or resumed) builds the same way.
pub(super) struct Parts {
    pub dir: RunDir,
    pub lock: RunLock,
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
    /// Fills a new run directory (made by [`RunDir::create`] or [`RunDir::create_at`]) for
    /// `dataset`, and starts the run's journal.
    #[expect(clippy::too_many_arguments, reason = "the run's parts are built by the caller")]
    pub fn create(
        dir: RunDir,
        dataset: &Dataset,
        inputs: RunInputs,
        backend: Arc<dyn Backend>,
        redactor: Redactor,
        sandbox: Arc<dyn Sandbox>,
        reporter: Arc<dyn Reporter>,
        interrupt: CancellationToken,
    ) -> anyhow::Result<Self> {
        let lock = dir.lock()?;
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
        if dataset.dropped_rows > 0 {
            tracing::warn!(
                "{} rows have no target value (empty, or a marker such as `?` in a numeric target): they are left out",
                dataset.dropped_rows
            );
        }
        if !dataset.unseen_classes.is_empty() {
            let unseen: Vec<String> =
                dataset.unseen_classes.iter().map(|(c, n)| format!("`{c}` ({n} rows)")).collect();
            tracing::warn!(
                "the test split has classes the training rows lack, which no model can predict: {}",
                unseen.join(", ")
            );
        }
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
        let (folds, note) =
            split::initial_folds(&inputs.config.validation, &dataset.pool, &inputs.target, initial.seed);
        if let Some(note) = note {
            reporter.report(Progress::Note(note));
        }
        let (split, train_rows, validation_rows) =
            split::materialize(&dir, &inputs.target, &initial, 1, folds)?;
        journal.append(Event::SplitMade {
            split_id: 1,
            validation_fraction: initial.validation_fraction,
            stratify: initial.stratify,
            seed: initial.seed,
            train_rows,
            validation_rows,
            rationale: initial.rationale.clone(),
            folds,
        })?;
        let pool_labels = pool_labels(dataset, &inputs)?;
        let inputs_metric = inputs.target.metric;
        Self::assemble(
            Parts {
                dir,
                lock,
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
            State {
                records: vec![],
                best: None,
                choice: crate::choice::Choice::new(inputs_metric),
                findings: vec![],
                predictions: BTreeMap::new(),
            },
        )
    }

    /// Builds the runner from its parts (shared by create and resume).
    pub(super) fn assemble(parts: Parts, state: State) -> anyhow::Result<Self> {
        let Parts {
            dir,
            lock,
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
        let mut disk = DiskRoom::new(&dir.root, shared.inputs.config.loop_.min_free_disk);
        for record in &state.records {
            disk.observe(&dir.iteration(record.iteration));
        }
        Ok(Self {
            dir,
            shared,
            workspace,
            state,
            policy,
            breaker_pauses: 0,
            decided: BTreeMap::new(),
            planned: BTreeMap::new(),
            disk,
            _lock: lock,
        })
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
        // A resumed run's best is known already.
        self.keep_time_for_the_final_model();
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
        let deadline = super::budget::end_the_loop_on_time(shared.budget.clone(), shared.loop_cancel.clone());
        let heartbeat = spawn_heartbeat(&shared);
        let reason = self.dispatch().await;
        heartbeat.abort();
        deadline.abort();
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
                if (self.state.records.len() as u32) < known || tasks.len() >= config.jobs.max(1) as usize {
                    break;
                }
                if let Some(why) = self.disk.short(tasks.len() + waiting.len()) {
                    // Those in flight finish and are committed: the room is kept for them.
                    shared.reporter.report(Progress::Note(format!("{why}; no further iteration starts")));
                    tracing::info!("{why}");
                    stop = Some(StopReason::DiskFull(why));
                    break;
                }
                // Iterations that ended while an earlier one runs are not committed yet, but their
                // failures would stop the run once it is: nothing more starts on them.
                let ended = waiting.values().map(|f| &f.record);
                if !tasks.is_empty()
                    && super::stuck::may_be_stuck(&self.state.records, ended, config.failures_in_a_row)
                {
                    break;
                }
                if let Some(why) =
                    super::stuck::stuck(&self.state.records, config.failures_in_a_row, &self.dir.iterations())
                {
                    // Those in flight finish and are committed; they may still score.
                    if !tasks.is_empty() {
                        break;
                    }
                    shared.reporter.report(Progress::Note(format!("{why}; the run stops")));
                    tracing::warn!("{why}");
                    stop = Some(StopReason::Stuck(why));
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
                self.decided.insert(next, decision.clone());
                let context = self.context(next, known as usize, &decision);
                if self.plans() && decision.operation != Operation::Ensemble {
                    self.planned.insert(next, crate::builtin::planned(&context));
                }
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

    /// Commits a finished iteration (unless it was cut with nothing to keep) and journals it.
    pub(super) fn record(&mut self, mut finished: Finished) -> anyhow::Result<()> {
        let shared = self.shared.clone();
        self.state.choice.observe(&finished.record);
        let chosen = self.state.choice.best();
        let best = chosen.is_some_and(|(n, _)| n == finished.n);
        if finished.stop.is_none() || finished.record.validation_score.is_some() {
            let committing = std::time::Instant::now();
            commit(&shared, &self.workspace, &finished, best)?;
            // The commit is the iteration's too (storing a large model takes most of the
            // runner's time), though not the wait for earlier iterations to be committed first.
            finished.record.seconds += committing.elapsed().as_secs_f64();
            self.disk.observe(&self.dir.iteration(finished.n));
            if finished.record.operation == Operation::Ensemble {
                // The copies of the members its blend ran on: committed in its snapshot and in
                // the members' own, and nothing reads them again (a forest can be hundreds of
                // megabytes, and an overnight run makes an ensemble every few iterations).
                let members = self.dir.work(finished.n).join(super::ensemble::MEMBERS);
                if let Err(e) = fs_err::remove_dir_all(&members)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!("removing the copies of an ensemble's members: {e}");
                }
            }
        }
        let record = &finished.record;
        if !best
            && let Some((n, _)) = chosen
            && self.state.best.is_none_or(|(b, _)| b != n)
        {
            // A new selection of the ensemble gave the choice back to an earlier iteration.
            self.workspace.set_best(self.workspace.resolve(&crate::snapshot::tag_name(n))?)?;
        }
        let moved = self.state.best.map(|b| b.0) != chosen.map(|c| c.0);
        self.state.best = chosen;
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
            family: match (record.operation, record.parent) {
                (Operation::Refit, Some(parent)) => format!("refit of {parent}"),
                _ => record.family.clone(),
            },
            score: record.validation_score,
            best,
        });
        for finding in &finished.findings {
            self.state.findings.push((finished.n, finding.clone()));
        }
        let predicted = finished.predicted.clone();
        self.state.records.push(finished.record);
        if moved {
            // What it depends on (the choice's own record and the fold models of its members,
            // never pruned while it is chosen) changes only with the choice.
            self.keep_time_for_the_final_model();
        }
        // Only what an ensemble could take, or the final model be made of, is kept.
        let mut keep: Vec<u32> =
            self.ensemble_candidates(self.state.records.len()).iter().map(|(k, _)| *k).collect();
        if let Some(p) = predicted {
            self.state.predictions.insert(finished.n, p);
            self.state.predictions.retain(|k, _| keep.contains(k));
        }
        if shared.split().folds.is_some() {
            if let Some((b, _)) = self.state.best {
                keep.extend(super::refit::bagged_iterations(&self.state.records[b as usize - 1]));
            }
            super::cv::drop_kept_models(&self.dir, self.state.records.iter().map(|r| r.iteration), &|n| {
                keep.contains(&n)
            });
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
