//! Asking the agent one step of an iteration: render the prompt, ask, journal what it cost
//! (answered or not), and keep the answer in the iteration's `steps/`.

use std::path::Path;
use std::time::Instant;

use super::StopReason;
use super::progress::Progress;
use super::shared::Shared;
use crate::agent::{AgentError, Ask, BackendError, StepOutput};
use crate::journal::Event;
use crate::steps::{self, ArchitectureOutput, RepresentOutput, Step, StepContext, TrainOutput};

/// Why an iteration did not finish.
#[derive(Debug)]
pub(super) enum StepFailure {
    /// The loop must stop (budget, interrupt, spend cap, agent unusable).
    Stop(StopReason, String),
    /// This iteration failed; the loop goes on.
    Failed(String, String),
    /// A bug or an I/O failure of the runner itself.
    Internal(anyhow::Error),
}

impl StepFailure {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        StepFailure::Internal(e.into())
    }
}

/// Per-iteration totals and the answers that describe what ran.
#[derive(Debug, Default)]
pub(super) struct Accumulator {
    pub cost: f64,
    pub step_seconds: Vec<(String, f64)>,
    pub represent: Option<RepresentOutput>,
    pub architecture: Option<ArchitectureOutput>,
    /// The last training answer: its script ran, and it names the model that was trained.
    pub train: Option<TrainOutput>,
    /// Scripts as they were run, by file name (what the snapshot holds).
    pub scripts: Vec<(String, String)>,
    /// Exploration findings made.
    pub findings: Vec<String>,
    /// The last script failure, kept for a later debug operation.
    pub failure: Option<crate::steps::Failure>,
}

impl Accumulator {
    pub fn keep_script(&mut self, name: &str, text: &str) {
        self.scripts.retain(|(n, _)| n != name);
        self.scripts.push((name.to_string(), text.to_string()));
    }
}

/// Asks the agent `step`, journals it, and keeps the answer in `steps_dir/<step>.json`.
pub(super) async fn ask<T: StepOutput>(
    shared: &Shared,
    step: Step,
    ctx: &StepContext,
    rule: &(dyn Fn(&T) -> Vec<String> + Send + Sync),
    steps_dir: &Path,
    acc: &mut Accumulator,
) -> Result<T, StepFailure> {
    shared.reporter.report(Progress::Step { iteration: ctx.iteration, step: step.name().into() });
    let (system, prompt) = steps::render(step, ctx)
        .map_err(|e| StepFailure::Internal(anyhow::anyhow!("rendering the {} prompt: {e:#}", step.name())))?;
    let started = Instant::now();
    let question = Ask {
        step: step.name(),
        iteration: ctx.iteration,
        system: &system,
        prompt: &prompt,
        context: ctx.to_value(),
    };
    let result = shared.agent.ask::<T>(question, rule).await;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        iteration = ctx.iteration,
        step = step.name(),
        seconds,
        ok = result.is_ok(),
        "step finished"
    );
    acc.step_seconds.push((step.name().to_string(), seconds));
    let (ok, detail, spent) = match &result {
        Ok(a) => (true, String::new(), a.spent),
        Err(e) => (false, error_chain(&e.error), e.spent),
    };
    acc.cost += spent.cost_usd;
    // Paid calls count whether or not they produced an answer: resume rebuilds spend from this.
    shared
        .log(Event::StepFinished {
            iteration: ctx.iteration,
            step: step.name().into(),
            seconds,
            attempts: spent.attempts,
            calls: Some(spent.calls),
            cost_usd: spent.cost_usd,
            prompt_tokens: spent.usage.prompt_tokens,
            completion_tokens: spent.usage.completion_tokens,
            ok,
            detail,
        })
        .map_err(StepFailure::internal)?;
    match result {
        Ok(answer) => {
            let json = serde_json::to_string_pretty(&answer.value).expect("answers serialize");
            fs_err::write(steps_dir.join(format!("{}.json", step.name())), json)
                .map_err(StepFailure::internal)?;
            Ok(answer.value)
        }
        Err(e) => Err(match e.error {
            AgentError::Cancelled => {
                StepFailure::Stop(shared.stop_reason(), format!("{} cancelled", step.name()))
            }
            AgentError::SpendCap { spent, cap } => {
                StepFailure::Stop(StopReason::SpendCap, format!("spend cap ${cap:.2} reached (${spent:.4})"))
            }
            e @ AgentError::Invalid { .. } => StepFailure::Failed(step.name().into(), e.to_string()),
            // The server kept failing: give up on this iteration, not the run.
            AgentError::Backend { source: BackendError::Transient { detail, .. }, .. } => {
                StepFailure::Failed(step.name().into(), detail)
            }
            AgentError::Backend { source, .. } => {
                let why = source.to_string();
                StepFailure::Stop(StopReason::AgentFailed(why.clone()), why)
            }
            e @ AgentError::Transcript(_) => StepFailure::Internal(e.into()),
        }),
    }
}

/// An error and its causes on one line.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}
