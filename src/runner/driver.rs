//! The experiment loop: iterations of agent steps and sandboxed scripts under a budget, then the
//! held-out test, then the report.
//!
//! Data flows one way: the driver asks the agent (through `steps` prompts and checks), runs
//! scripts in the sandbox, scores predictions itself, journals every event before acting on
//! it, and commits every iteration to the workspace. It never trusts a number an agent reports.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::budget::Budget;
use super::manifest::Manifest;
use super::predictions::{Truth, score};
use super::progress::{Progress, Reporter};
use super::run_dir::RunDir;
use crate::agent::{Agent, AgentError, Ask, Backend, BackendError, Redactor, StepOutput, Transcript};
use crate::config::RunConfig;
use crate::data::{Dataset, Profile, TargetInfo, fingerprint, take, target_labels, write_csv};
use crate::journal::{Event, IterationRecord, Journal, OutcomeBrief};
use crate::sandbox::{
    CancellationToken as SandboxCancel, Limits, Mount, Outcome, RunSpec, Sandbox, SandboxInfo,
};
use crate::snapshot::Workspace;
use crate::steps::{
    self, AnalyzeOutput, ArchitectureOutput, ExploreOutput, Failure, IterationBrief, PlanOutput,
    RepresentOutput, ScriptOutput, SplitOutput, Step, StepContext, TaskBrief, ValidationBrief, rules,
};
use crate::task::Task;

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

/// The machine-readable result of a run (`report/summary.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub task: String,
    pub metric: String,
    pub best_iteration: Option<u32>,
    pub validation_score: Option<f64>,
    pub test_score: Option<f64>,
    pub iterations: u32,
    pub wall_seconds: f64,
    pub agent: String,
    pub sandbox: String,
}

/// What the run knows between iterations (rebuilt from the journal on resume).
#[derive(Debug, Clone, Default)]
pub struct State {
    pub records: Vec<IterationRecord>,
    /// Best iteration and score on the current split.
    pub best: Option<(u32, f64)>,
    pub split: Option<SplitOutput>,
    pub split_id: u32,
    pub findings: Vec<String>,
}

/// The loop's fixed inputs.
pub struct RunInputs {
    pub task: Task,
    pub target: TargetInfo,
    pub profile: Profile,
    pub config: RunConfig,
    pub budget: Option<Duration>,
    /// Stop after this many iterations, without telling agents (replay reproduces a run that
    /// was ended by its budget).
    pub stop_after: Option<u32>,
    /// Crash points for tests of crash safety (`LOOP_RUNNER_FAULT`).
    pub faults: FaultPlan,
}

/// Deliberate crashes, for testing that a killed run resumes correctly. `journal:N` aborts the
/// process right after its N-th journal entry, `commit:N` in the middle of its N-th commit,
/// `committed:N` after that commit but before the journal records it, `sandbox:N` while its
/// N-th script runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub after_journal: Option<u64>,
    pub in_commit: Option<u32>,
    pub after_commit: Option<u32>,
    pub in_sandbox: Option<u32>,
}

impl FaultPlan {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut plan = FaultPlan::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, n) = part.split_once(':').ok_or_else(|| format!("fault `{part}` is not KIND:N"))?;
            let n: u64 = n.parse().map_err(|_| format!("fault `{part}`: `{n}` is not a number"))?;
            match kind {
                "journal" => plan.after_journal = Some(n),
                "commit" => plan.in_commit = Some(n as u32),
                "committed" => plan.after_commit = Some(n as u32),
                "sandbox" => plan.in_sandbox = Some(n as u32),
                other => {
                    return Err(format!(
                        "unknown fault kind `{other}` (journal, commit, committed, sandbox)"
                    ));
                }
            }
        }
        Ok(plan)
    }
}

/// Counters for [`FaultPlan`].
#[derive(Debug, Default)]
pub(super) struct FaultCounters {
    journal: u64,
    commits: u32,
    sandbox: u32,
}

fn crash(point: &str) -> ! {
    eprintln!("loop-runner: deliberate crash ({point})");
    std::process::abort()
}

/// A run in progress.
pub struct Runner {
    pub dir: RunDir,
    pub(super) inputs: RunInputs,
    pub(super) agent: Agent,
    pub(super) sandbox: Arc<dyn Sandbox>,
    pub(super) sandbox_info: SandboxInfo,
    pub(super) journal: Journal,
    pub(super) workspace: Workspace,
    pub(super) reporter: Arc<dyn Reporter>,
    pub(super) state: State,
    pub(super) budget: Budget,
    pub(super) interrupt: CancellationToken,
    /// Cancelled at an interrupt or at the loop's deadline; agent calls and scripts obey it.
    pub(super) loop_cancel: CancellationToken,
    pub(super) validation_truth: Truth,
    pub(super) faults: FaultCounters,
}

const EXPLORE_TIMEOUT: Duration = Duration::from_secs(120);

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
            format: super::manifest::FORMAT,
            task: inputs.task.clone(),
            target: inputs.target.clone(),
            profile: inputs.profile.clone(),
            budget_seconds: inputs.budget.map(|b| b.as_secs_f64()),
            stop_after: inputs.stop_after,
            config: inputs.config.to_file(),
            dropped_rows_without_target: dataset.dropped_rows,
        }
        .write(&dir.run_json())?;
        let transcript = Transcript::open(&dir.transcript(), redactor)?;
        // Agent calls end with the loop: at an interrupt or when the loop's budget is spent.
        let loop_cancel = interrupt.child_token();
        let agent =
            Agent::new(backend, inputs.config.agent.settings.clone(), transcript, loop_cancel.clone());
        let workspace = Workspace::open_or_init(&dir.workspace())?;
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
            loop_runner_version: env!("CARGO_PKG_VERSION").into(),
            prompts_sha256: steps::prompts_hash(),
        })?;
        journal.append(Event::Session {
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            elapsed_before_seconds: 0.0,
        })?;
        let budget = Budget::new(inputs.budget, Duration::ZERO);
        let mut runner = Self {
            dir,
            inputs,
            agent,
            sandbox,
            sandbox_info,
            journal,
            workspace,
            reporter,
            state: State::default(),
            budget,
            interrupt,
            loop_cancel,
            validation_truth: Truth::Classes(vec![]),
            faults: FaultCounters::default(),
        };
        let initial = SplitOutput::initial(
            runner.inputs.target.kind.is_classification(),
            runner.inputs.config.loop_.seed,
        );
        runner.apply_split(&initial)?;
        Ok(runner)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Runs iterations until the budget, the iteration count or an interrupt ends the loop, then
    /// scores the best iteration on the test split and writes the report.
    pub async fn run(&mut self) -> anyhow::Result<Summary> {
        self.reporter.report(Progress::RunStarted {
            run_dir: self.dir.root.display().to_string(),
            agent: if self.agent.backend_name() == "builtin" {
                "built-in agent (offline, no LLM)".into()
            } else {
                format!("{} ({})", self.agent.backend_name(), self.inputs.config.agent.settings.model)
            },
            sandbox: format!("{} {}", self.sandbox_info.kind, self.sandbox_info.interpreter),
            metric: self.inputs.target.metric.name().into(),
            budget_seconds: self.inputs.budget.map(|b| b.as_secs_f64()),
        });
        // The loop's own token: cancelled at the loop deadline, or by an interrupt.
        let loop_cancel = self.loop_cancel.clone();
        if let Some(deadline) = self.budget.loop_deadline() {
            let token = loop_cancel.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline.into()).await;
                token.cancel();
            });
        }
        let reason = loop {
            if self.interrupt.is_cancelled() {
                break StopReason::Interrupted;
            }
            if loop_cancel.is_cancelled() || self.budget.loop_left().is_some_and(|left| left.is_zero()) {
                break StopReason::Budget;
            }
            let next = self.state.records.len() as u32 + 1;
            let limit =
                self.inputs.stop_after.unwrap_or(u32::MAX).min(self.inputs.config.loop_.max_iterations);
            if next > limit {
                break StopReason::Iterations;
            }
            let stop = self.iteration(next, &loop_cancel).await?;
            if let Some(stop) = stop {
                break if self.interrupt.is_cancelled() { StopReason::Interrupted } else { stop };
            }
        };
        tracing::info!(reason = reason.describe(), "loop finished");
        self.finish(reason).await
    }

    /// Final evaluation, report, and the closing journal entry.
    pub async fn finish(&mut self, reason: StopReason) -> anyhow::Result<Summary> {
        let test_score = self.final_evaluation().await?;
        let summary = Summary {
            task: self.inputs.task.name.clone(),
            metric: self.inputs.target.metric.name().into(),
            best_iteration: self.state.best.map(|b| b.0),
            validation_score: self.state.best.map(|b| b.1),
            test_score,
            iterations: self.state.records.len() as u32,
            wall_seconds: self.budget.elapsed().as_secs_f64(),
            agent: self.agent.backend_name().into(),
            sandbox: self.sandbox_info.kind.to_string(),
        };
        self.log(Event::RunFinished {
            reason: reason.describe(),
            best_iteration: summary.best_iteration,
            validation_score: summary.validation_score,
            test_score,
            wall_seconds: summary.wall_seconds,
        })?;
        crate::report::write(&self.dir)?;
        Ok(summary)
    }

    /// One iteration; `Some(reason)` when the loop must stop.
    async fn iteration(&mut self, n: u32, cancel: &CancellationToken) -> anyhow::Result<Option<StopReason>> {
        let started = Instant::now();
        self.log(Event::IterationStarted { iteration: n })?;
        self.reporter.report(Progress::IterationStarted { iteration: n });
        let dir = self.dir.iteration(n);
        if dir.exists() {
            fs_err::remove_dir_all(&dir)?;
        }
        for sub in ["data", "input", "steps"] {
            fs_err::create_dir_all(dir.join(sub))?;
        }
        let mut acc = Accumulator::default();
        let outcome = self.steps(n, &dir, cancel, &mut acc).await;
        let (status, stop, done) = match outcome {
            Ok(done) => ("succeeded".to_string(), None, Some(done)),
            Err(StepFailure::Stop(reason, why)) => (format!("cut: {why}"), Some(reason), None),
            Err(StepFailure::Failed(step, why)) => (format!("failed at {step}: {why}"), None, None),
            Err(StepFailure::Internal(e)) => return Err(e),
        };
        let validation_score = done.as_ref().map(|d| d.score);
        let record = IterationRecord {
            iteration: n,
            status,
            family: acc.architecture.as_ref().map_or_else(|| "-".into(), |a| a.family.clone()),
            hyperparameters: acc.architecture.as_ref().map(|a| a.hyperparameters.clone()).unwrap_or_default(),
            representation: acc.represent.clone(),
            split_id: self.state.split_id,
            validation_score,
            next_ideas: done.as_ref().map(|d| d.next_ideas.clone()).unwrap_or_default(),
            predictions_sha256: done.as_ref().map(|d| d.predictions_sha256.clone()),
            model_files: done.map(|d| d.model_files).unwrap_or_default(),
            seconds: started.elapsed().as_secs_f64(),
            cost_usd: acc.cost,
            step_seconds: acc.step_seconds.clone(),
        };
        let best = record.succeeded()
            && match self.state.best {
                None => true,
                Some((_, best)) => {
                    self.inputs.target.metric.better(record.validation_score.unwrap_or(f64::NAN), best)
                }
            };
        // A cut iteration left nothing worth keeping; everything else is committed.
        if stop.is_none() || record.validation_score.is_some() {
            self.commit(n, &dir, &record, best)?;
        }
        if best {
            self.state.best = Some((n, record.validation_score.unwrap_or(f64::NAN)));
        }
        self.log(Event::IterationFinished { iteration: n, record: record.clone() })?;
        tracing::info!(
            iteration = n,
            status = %record.status,
            family = %record.family,
            score = ?record.validation_score,
            best,
            seconds = record.seconds,
            "iteration finished"
        );
        self.reporter.report(Progress::IterationFinished {
            iteration: n,
            status: record.status.clone(),
            family: record.family.clone(),
            score: record.validation_score,
            best,
        });
        self.report_status();
        self.state.records.push(record);
        Ok(stop)
    }

    /// Appends to the journal (durably) before anything acts on the event.
    pub(super) fn log(
        &mut self,
        event: Event,
    ) -> Result<crate::journal::Entry, crate::journal::JournalError> {
        let entry = self.journal.append(event)?;
        self.faults.journal += 1;
        if self.inputs.faults.after_journal == Some(self.faults.journal) {
            crash("after a journal entry");
        }
        Ok(entry)
    }

    fn report_status(&self) {
        self.reporter.report(Progress::Status {
            best_score: self.state.best.map(|b| b.1),
            metric: self.inputs.target.metric.name().into(),
            left_seconds: self.budget.left().map(|d| d.as_secs_f64()),
            cost_usd: self.agent.spend().cost_usd,
        });
    }

    /// The steps of iteration `n`.
    async fn steps(
        &mut self,
        n: u32,
        dir: &Path,
        cancel: &CancellationToken,
        acc: &mut Accumulator,
    ) -> Result<Done, StepFailure> {
        let mut ctx = self.context(n);
        let plan: PlanOutput = self.ask(Step::Plan, &ctx, &|_| vec![], dir, acc).await?;
        ctx.current.plan = Some(plan);

        let explore: ExploreOutput = self.ask(Step::Explore, &ctx, &rules::explore, dir, acc).await?;
        if !explore.script.trim().is_empty() {
            fs_err::write(dir.join("explore.py"), &explore.script).map_err(StepFailure::io)?;
            let spec = self.spec(dir, "explore.py", vec![], false, Some(EXPLORE_TIMEOUT));
            let outcome = self.run_script(n, "explore", spec, cancel).await?;
            let mut text = tail(&outcome.stdout.text, 3000);
            if !outcome.success() {
                text.push_str(&format!(
                    "\n(explore.py: {})\n{}",
                    outcome.summary(),
                    tail(&outcome.stderr.text, 1000)
                ));
            }
            let finding = format!("iteration {n}: {}", text.trim());
            self.log(Event::Finding { iteration: n, text: finding.clone() })
                .map_err(|e| StepFailure::Internal(e.into()))?;
            self.state.findings.push(finding.clone());
            ctx.findings.push(finding);
        }
        ctx.current.explore = Some(explore);

        if ctx.split_open {
            let split: SplitOutput = self.ask(Step::Split, &ctx, &rules::split, dir, acc).await?;
            if Some(&split) != self.state.split.as_ref() && !same_split(&split, self.state.split.as_ref()) {
                self.apply_split(&split).map_err(StepFailure::Internal)?;
            }
            ctx = self.refresh(ctx);
        }

        let represent: RepresentOutput = {
            let c = ctx.clone();
            self.ask(Step::Represent, &ctx, &move |a: &RepresentOutput| rules::represent(a, &c), dir, acc)
                .await?
        };
        acc.represent = Some(represent.clone());
        ctx.current.represent = Some(represent);
        let architecture: ArchitectureOutput =
            self.ask(Step::Architecture, &ctx, &rules::architecture, dir, acc).await?;
        acc.architecture = Some(architecture.clone());
        ctx.current.architecture = Some(architecture);

        // Train, with bounded fixes.
        let mut failure: Option<Failure> = None;
        let mut model_files: Vec<(String, String)> = Vec::new();
        for attempt in 0..=self.inputs.config.loop_.fix_attempts {
            ctx.failure = failure.take();
            let train: ScriptOutput = self.ask(Step::Train, &ctx, &rules::train, dir, acc).await?;
            ctx.failure = None;
            fs_err::write(dir.join("train.py"), &train.script).map_err(StepFailure::io)?;
            if dir.join("model").exists() {
                fs_err::remove_dir_all(dir.join("model")).map_err(StepFailure::io)?;
            }
            let spec = self.spec(dir, "train.py", vec![], false, None);
            let outcome = self.run_script(n, "train", spec, cancel).await?;
            model_files = model_files_of(&outcome);
            let problem = if !outcome.success() {
                Some(outcome.summary())
            } else if model_files.is_empty() {
                Some("train.py exited 0 but wrote nothing under model/".to_string())
            } else {
                None
            };
            ctx.current.train = Some(train.clone());
            match problem {
                None => break,
                Some(summary) => {
                    if attempt == self.inputs.config.loop_.fix_attempts {
                        return Err(StepFailure::Failed("train".into(), summary));
                    }
                    failure = Some(failure_of(train.script, summary, &outcome));
                }
            }
        }

        // Infer on the validation features, with bounded fixes; the runner scores.
        let mut scored = None;
        for attempt in 0..=self.inputs.config.loop_.fix_attempts {
            ctx.failure = failure.take();
            let infer: ScriptOutput = self.ask(Step::Infer, &ctx, &rules::infer, dir, acc).await?;
            ctx.failure = None;
            fs_err::write(dir.join("inference.py"), &infer.script).map_err(StepFailure::io)?;
            let predictions = dir.join("predictions.csv");
            if predictions.exists() {
                fs_err::remove_file(&predictions).map_err(StepFailure::io)?;
            }
            let args = vec![
                "--input".into(),
                "input/features.csv".into(),
                "--output".into(),
                "predictions.csv".into(),
            ];
            let spec = self.spec(dir, "inference.py", args, true, None);
            let outcome = self.run_script(n, "infer", spec, cancel).await?;
            ctx.current.infer = Some(infer.clone());
            let problem = if !outcome.success() {
                Err(outcome.summary())
            } else if model_files_of(&outcome) != model_files {
                Err("inference.py changed files under model/; it must only read them".to_string())
            } else {
                score(&predictions, &self.inputs.target, &self.validation_truth)
            };
            match problem {
                Ok(s) => {
                    scored = Some(s);
                    break;
                }
                Err(summary) => {
                    if attempt == self.inputs.config.loop_.fix_attempts {
                        return Err(StepFailure::Failed("infer".into(), summary));
                    }
                    failure = Some(failure_of(infer.script, summary, &outcome));
                }
            }
        }
        let scored = scored.expect("the loop either scores or returns");

        // Analyze what the runner measured.
        ctx.validation = Some(ValidationBrief { score: scored.score, details: scored.details.clone() });
        let analysis: AnalyzeOutput = self.ask(Step::Analyze, &ctx, &|_| vec![], dir, acc).await?;
        let predictions_sha256 =
            crate::fsx::sha256_file(&dir.join("predictions.csv")).map_err(StepFailure::io)?;
        Ok(Done { score: scored.score, next_ideas: analysis.next_ideas, predictions_sha256, model_files })
    }

    /// Asks the agent one step, journals it, and keeps the answer in `steps/<step>.json`.
    async fn ask<T: StepOutput>(
        &mut self,
        step: Step,
        ctx: &StepContext,
        rule: &(dyn Fn(&T) -> Vec<String> + Send + Sync),
        dir: &Path,
        acc: &mut Accumulator,
    ) -> Result<T, StepFailure> {
        self.reporter.report(Progress::Step { iteration: ctx.iteration, step: step.name().into() });
        let (system, prompt) = steps::render(step, ctx).map_err(|e| {
            StepFailure::Internal(anyhow::anyhow!("rendering the {} prompt: {e:#}", step.name()))
        })?;
        let started = Instant::now();
        let question = Ask {
            step: step.name(),
            iteration: ctx.iteration,
            system: &system,
            prompt: &prompt,
            context: ctx.to_value(),
        };
        let result = self.agent.ask::<T>(question, rule).await;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            iteration = ctx.iteration,
            step = step.name(),
            seconds,
            ok = result.is_ok(),
            "step finished"
        );
        acc.step_seconds.push((step.name().to_string(), seconds));
        let (ok, detail, attempts, cost, usage) = match &result {
            Ok(a) => (true, String::new(), a.attempts, a.cost_usd, a.usage),
            Err(e) => (false, error_chain(e), 0, 0.0, Default::default()),
        };
        acc.cost += cost;
        self.log(Event::StepFinished {
            iteration: ctx.iteration,
            step: step.name().into(),
            seconds,
            attempts,
            cost_usd: cost,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            ok,
            detail,
        })
        .map_err(|e| StepFailure::Internal(e.into()))?;
        match result {
            Ok(answer) => {
                let json = serde_json::to_string_pretty(&answer.value).expect("answers serialize");
                fs_err::write(dir.join("steps").join(format!("{}.json", step.name())), json)
                    .map_err(StepFailure::io)?;
                Ok(answer.value)
            }
            Err(AgentError::Cancelled) => {
                Err(StepFailure::Stop(self.stop_reason(), format!("{} cancelled", step.name())))
            }
            Err(AgentError::SpendCap { spent, cap }) => Err(StepFailure::Stop(
                StopReason::SpendCap,
                format!("spend cap ${cap:.2} reached (${spent:.4})"),
            )),
            Err(e @ AgentError::Invalid { .. }) => {
                Err(StepFailure::Failed(step.name().into(), e.to_string()))
            }
            Err(AgentError::Backend { source: BackendError::Transient { detail, .. }, .. }) => {
                // The server kept failing: give up on this iteration, not the run.
                Err(StepFailure::Failed(step.name().into(), detail))
            }
            Err(AgentError::Backend { source, .. }) => {
                let why = source.to_string();
                Err(StepFailure::Stop(StopReason::AgentFailed(why.clone()), why))
            }
            Err(e @ AgentError::Transcript(_)) => Err(StepFailure::Internal(e.into())),
        }
    }

    fn stop_reason(&self) -> StopReason {
        if self.interrupt.is_cancelled() { StopReason::Interrupted } else { StopReason::Budget }
    }

    /// A sandbox request for a script in the iteration directory.
    fn spec(
        &self,
        dir: &Path,
        script: &str,
        args: Vec<String>,
        inference: bool,
        cap: Option<Duration>,
    ) -> RunSpec {
        let mut mounts = vec![Mount::read_write(dir, "/work")];
        if inference {
            // Inference sees the model and the features to predict, never the training data.
            mounts.push(Mount::read_only(self.dir.validation_inputs(), "/work/input"));
        } else {
            mounts.push(Mount::read_only(self.dir.data(), "/work/data"));
        }
        let mut spec = RunSpec::new(format!("/work/{script}"), mounts);
        spec.args = args;
        spec.limits = Limits {
            wall: cap
                .unwrap_or(self.inputs.config.sandbox.script_timeout)
                .min(self.inputs.config.sandbox.script_timeout),
            memory_bytes: self.inputs.config.sandbox.memory_bytes,
            disk_bytes: self.inputs.config.sandbox.disk_bytes,
            ..Limits::default()
        };
        spec.seed = self.inputs.config.loop_.seed;
        spec
    }

    /// Runs a script within what is left of the loop's budget.
    async fn run_script(
        &mut self,
        n: u32,
        step: &str,
        mut spec: RunSpec,
        cancel: &CancellationToken,
    ) -> Result<Outcome, StepFailure> {
        if let Some(left) = self.budget.loop_left() {
            if left < Duration::from_secs(1) {
                return Err(StepFailure::Stop(self.stop_reason(), format!("no time left to run {step}")));
            }
            spec.limits.wall = spec.limits.wall.min(left);
        }
        self.reporter.report(Progress::Step { iteration: n, step: format!("{step} (running)") });
        let outcome = self.sandbox_run(spec.clone(), cancel.clone()).await?;
        self.log(Event::ScriptRun {
            iteration: n,
            step: step.into(),
            script: spec.script.clone(),
            outcome: OutcomeBrief::from(&outcome),
        })
        .map_err(|e| StepFailure::Internal(e.into()))?;
        if cancel.is_cancelled() && !outcome.success() {
            return Err(StepFailure::Stop(
                self.stop_reason(),
                format!("{step} stopped at the end of the budget"),
            ));
        }
        Ok(outcome)
    }

    async fn sandbox_run(&mut self, spec: RunSpec, cancel: SandboxCancel) -> Result<Outcome, StepFailure> {
        self.faults.sandbox += 1;
        if self.inputs.faults.in_sandbox == Some(self.faults.sandbox) {
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                crash("during a sandbox run");
            });
        }
        let sandbox = self.sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox.run(&spec, &cancel))
            .await
            .map_err(|e| StepFailure::Internal(anyhow::anyhow!("the sandbox thread failed: {e}")))?
            .map_err(|e| StepFailure::Internal(e.into()))
    }

    /// Writes the split's files: agent-visible training rows, validation features, and the
    /// runner-private validation labels.
    pub(super) fn apply_split(&mut self, split: &SplitOutput) -> anyhow::Result<()> {
        let (train_rows, validation_rows) = self.materialize_split(split)?;
        self.state.split = Some(split.clone());
        self.state.split_id += 1;
        // Scores on another split are not comparable: the best is found again on this one.
        self.state.best = None;
        self.log(Event::SplitMade {
            split_id: self.state.split_id,
            validation_fraction: split.validation_fraction,
            stratify: split.stratify,
            seed: split.seed,
            train_rows,
            validation_rows,
        })?;
        Ok(())
    }

    /// Writes a split's files (deterministic from the pool and the split's parameters) and
    /// loads its validation labels. Returns the rows on each side.
    pub(super) fn materialize_split(&mut self, split: &SplitOutput) -> anyhow::Result<(usize, usize)> {
        let pool = crate::data::read_table(&self.dir.pool_csv())?;
        let target = &self.inputs.target;
        let labels = if split.stratify && target.kind.is_classification() {
            Some(target_labels(&pool, &target.column)?)
        } else {
            None
        };
        let parts =
            crate::data::split(pool.height(), labels.as_deref(), split.validation_fraction, split.seed);
        let train = take(&pool, &parts.kept)?;
        let validation = take(&pool, &parts.held)?;
        write_csv(&train, &self.dir.train_csv())?;
        write_csv(&validation.drop(&target.column)?, &self.dir.validation_inputs().join("features.csv"))?;
        write_csv(&validation, &self.dir.validation_labels())?;
        self.validation_truth =
            Truth::from_csv(&self.dir.validation_labels(), target).map_err(anyhow::Error::msg)?;
        super::predictions::check_metric_applies(target.metric, &self.validation_truth)
            .map_err(anyhow::Error::msg)?;
        Ok((train.height(), validation.height()))
    }

    fn context(&self, n: u32) -> StepContext {
        let history: Vec<IterationBrief> = self.state.records.iter().map(brief).collect();
        let best = self.state.best.and_then(|(i, _)| history.iter().find(|h| h.iteration == i).cloned());
        StepContext {
            task: TaskBrief::new(&self.inputs.task, &self.inputs.target),
            profile_text: self.inputs.profile.render(),
            profile: self.inputs.profile.clone(),
            iteration: n,
            max_iterations: self.inputs.config.loop_.max_iterations,
            history,
            best,
            findings: self.state.findings.clone(),
            split: self.state.split.clone(),
            split_open: n <= self.inputs.config.loop_.split_iterations,
            current: Default::default(),
            failure: None,
            validation: None,
            seed: self.inputs.config.loop_.seed,
        }
    }

    /// The context after a split change (best and split updated).
    fn refresh(&self, ctx: StepContext) -> StepContext {
        let fresh = self.context(ctx.iteration);
        StepContext { current: ctx.current, findings: ctx.findings, ..fresh }
    }

    /// Writes the iteration's metadata files and commits it.
    fn commit(&mut self, n: u32, dir: &Path, record: &IterationRecord, best: bool) -> anyhow::Result<()> {
        let split = self.state.split.clone();
        let metrics = serde_json::json!({
            "iteration": n,
            "metric": self.inputs.target.metric.name(),
            "validation_score": record.validation_score,
            "status": record.status,
            "family": record.family,
            "hyperparameters": record.hyperparameters,
            "split": {
                "id": record.split_id,
                "validation_fraction": split.as_ref().map(|s| s.validation_fraction),
                "stratify": split.as_ref().map(|s| s.stratify),
                "seed": split.as_ref().map(|s| s.seed),
            },
        });
        fs_err::write(dir.join("metrics.json"), serde_json::to_string_pretty(&metrics)?)?;
        fs_err::write(dir.join("environment.json"), serde_json::to_string_pretty(&self.environment())?)?;
        let data = serde_json::json!({
            "train": fingerprint("data/train.csv", &self.dir.train_csv())?,
            "validation_features": fingerprint("input/features.csv", &self.dir.validation_inputs().join("features.csv"))?,
            "validation_labels": fingerprint("holdout/validation.csv", &self.dir.validation_labels())?,
            "target": self.inputs.target,
        });
        fs_err::write(dir.join("data.json"), serde_json::to_string_pretty(&data)?)?;
        fs_err::write(dir.join("README.md"), snapshot_readme(&self.inputs.task, n))?;
        let extra = vec![
            ("data/train.csv".to_string(), self.dir.train_csv()),
            ("input/features.csv".to_string(), self.dir.validation_inputs().join("features.csv")),
        ];
        let score = record
            .validation_score
            .map_or_else(|| "no score".into(), |s| format!("{} {s:.4}", self.inputs.target.metric));
        let message = format!(
            "iteration {n}: {score} ({}, {}){}",
            record.family,
            record.status,
            if best { " [best]" } else { "" }
        );
        self.faults.commits += 1;
        let crash_inside = self.inputs.faults.in_commit == Some(self.faults.commits);
        let committed = self.workspace.commit_iteration(dir, &extra, n, &message, best, &|| {
            if crash_inside {
                crash("in the middle of a commit");
            }
        })?;
        if self.inputs.faults.after_commit == Some(self.faults.commits) {
            crash("after a commit, before the journal records it");
        }
        self.log(Event::SnapshotCommitted {
            iteration: n,
            commit: committed.commit,
            tree: committed.tree,
            tag: committed.tag,
            best,
        })?;
        Ok(())
    }

    /// What the scripts ran on (recorded in every snapshot).
    pub fn environment(&self) -> serde_json::Value {
        let limits = &self.inputs.config.sandbox;
        serde_json::json!({
            "sandbox": self.sandbox_info,
            "limits": { "script_timeout_seconds": limits.script_timeout.as_secs_f64(), "memory_bytes": limits.memory_bytes, "disk_bytes": limits.disk_bytes },
            "seed": self.inputs.config.loop_.seed,
            "loop_runner_version": env!("CARGO_PKG_VERSION"),
            "prompts_sha256": steps::prompts_hash(),
            "agent": { "backend": self.inputs.config.agent.backend.name(), "model": self.inputs.config.agent.settings.model, "models": self.inputs.config.agent.settings.models },
        })
    }

    /// Runs the best iteration's inference on the test features and scores it.
    async fn final_evaluation(&mut self) -> anyhow::Result<Option<f64>> {
        let Some((best, _)) = self.state.best else {
            self.log(Event::FinalEvaluation {
                iteration: None,
                test_score: None,
                detail: "no iteration succeeded".into(),
                outcome: None,
            })?;
            self.reporter.report(Progress::FinalEvaluation { iteration: None, test_score: None });
            return Ok(None);
        };
        self.reporter.report(Progress::Note(format!("scoring iteration {best} on the held-out test split")));
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
        fs_err::create_dir_all(work.join("input"))?;
        let input = final_dir.join("input");
        fs_err::create_dir_all(&input)?;
        let test = crate::data::read_table(&self.dir.test_csv())?;
        write_csv(&test.drop(&self.inputs.target.column)?, &input.join("features.csv"))?;
        let mut spec = RunSpec::new(
            "/work/inference.py",
            vec![Mount::read_write(&work, "/work"), Mount::read_only(&input, "/work/input")],
        );
        spec.args = vec![
            "--input".into(),
            "input/features.csv".into(),
            "--output".into(),
            "test_predictions.csv".into(),
        ];
        spec.limits = Limits {
            wall: self
                .budget
                .left()
                .unwrap_or(self.inputs.config.sandbox.script_timeout)
                .max(Duration::from_secs(5)),
            memory_bytes: self.inputs.config.sandbox.memory_bytes,
            disk_bytes: self.inputs.config.sandbox.disk_bytes,
            ..Limits::default()
        };
        spec.seed = self.inputs.config.loop_.seed;
        // Only a second interrupt (which exits the process) stops the final evaluation.
        let outcome = self.sandbox_run(spec, SandboxCancel::new()).await.map_err(|e| match e {
            StepFailure::Internal(e) => e,
            other => anyhow::anyhow!("{other:?}"),
        })?;
        let truth = Truth::from_csv(&self.dir.test_csv(), &self.inputs.target).map_err(anyhow::Error::msg)?;
        let (test_score, detail) = if outcome.success() {
            match score(&work.join("test_predictions.csv"), &self.inputs.target, &truth) {
                Ok(s) => (Some(s.score), s.details),
                Err(why) => (None, why),
            }
        } else {
            (
                None,
                format!(
                    "inference.py failed on the test features: {} {}",
                    outcome.summary(),
                    tail(&outcome.stderr.text, 500)
                ),
            )
        };
        self.log(Event::FinalEvaluation {
            iteration: Some(best),
            test_score,
            detail,
            outcome: Some(OutcomeBrief::from(&outcome)),
        })?;
        self.reporter.report(Progress::FinalEvaluation { iteration: Some(best), test_score });
        Ok(test_score)
    }
}

fn same_split(a: &SplitOutput, b: Option<&SplitOutput>) -> bool {
    b.is_some_and(|b| {
        a.validation_fraction == b.validation_fraction && a.stratify == b.stratify && a.seed == b.seed
    })
}

fn brief(r: &IterationRecord) -> IterationBrief {
    IterationBrief {
        iteration: r.iteration,
        status: r.status.clone(),
        family: r.family.clone(),
        hyperparameters: r.hyperparameters.clone(),
        representation: r.representation.clone(),
        score: r.validation_score,
        next_ideas: r.next_ideas.clone(),
    }
}

/// An error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// `(path, sha256)` of the files under `/work/model/`, sorted.
fn model_files_of(outcome: &Outcome) -> Vec<(String, String)> {
    outcome
        .files
        .iter()
        .filter(|f| f.path.starts_with("/work/model/"))
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect()
}

/// The last `max` bytes of `text`, on a character boundary.
/// A failed script as the agent sees it when asked to fix it.
fn failure_of(script: String, summary: String, outcome: &Outcome) -> Failure {
    Failure {
        script,
        summary,
        stderr_tail: tail(&outcome.stderr.text, 4000),
        stdout_tail: tail(&outcome.stdout.text, 1000),
    }
}

fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

fn snapshot_readme(task: &Task, n: u32) -> String {
    format!(
        "# {name}: iteration {n}\n\nA loop-runner snapshot. To reproduce it with a Python that has numpy, pandas and scikit-learn:\n\n    python train.py                                   # reads data/train.csv, writes model/\n    python inference.py --input input/features.csv --output predictions.csv\n\n`metrics.json` has the validation score the runner computed; `environment.json` the sandbox it ran in;\n`data.json` the sha256 of every data file; `steps/` the agent's answers.\n",
        name = task.name
    )
}

/// Per-iteration totals.
#[derive(Default)]
struct Accumulator {
    cost: f64,
    step_seconds: Vec<(String, f64)>,
    represent: Option<RepresentOutput>,
    architecture: Option<ArchitectureOutput>,
}

/// A finished iteration's result.
struct Done {
    score: f64,
    next_ideas: Vec<String>,
    predictions_sha256: String,
    model_files: Vec<(String, String)>,
}

/// Why an iteration did not finish.
#[derive(Debug)]
enum StepFailure {
    /// The loop must stop (budget, interrupt, spend cap, agent unusable).
    Stop(StopReason, String),
    /// This iteration failed; the loop goes on.
    Failed(String, String),
    /// A bug or an I/O failure of the runner itself.
    Internal(anyhow::Error),
}

impl StepFailure {
    fn io(e: std::io::Error) -> Self {
        StepFailure::Internal(e.into())
    }
}
