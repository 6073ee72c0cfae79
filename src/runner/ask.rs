//! Asking the agent one step of an iteration: render the prompt, ask, journal what it cost
//! (answered or not), and keep the answer in the iteration's `steps/`.

use std::path::Path;
use std::time::Instant;

use super::StopReason;
use super::progress::Progress;
use super::shared::Shared;
use crate::agent::{
    Agent, AgentError, AgentSettings, Answer, Ask, AskError, BackendError, Counter, HistoryJson, StepOutput,
    context_tokens,
};
use crate::journal::Event;
use crate::steps::{
    self, ArchitectureOutput, ContextJson, Extras, RepresentOutput, Step, StepContext, TrainOutput, memory,
};

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
    /// The step context as the agent is asked with it, carried from step to step.
    pub context: ContextJson,
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
    ctx: &mut StepContext,
    rule: &(dyn Fn(&T) -> Vec<String> + Send + Sync),
    steps_dir: &Path,
    acc: &mut Accumulator,
) -> Result<T, StepFailure> {
    shared.reporter.report(Progress::Step { iteration: ctx.iteration, step: step.name().into() });
    let started = Instant::now();
    let context = acc.context.of(ctx);
    let result =
        ask_agent(&shared.agent, shared.schemas.get(step), &shared.sandbox_brief, step, ctx, context, rule)
            .await
            .map_err(StepFailure::Internal)?;
    for notice in shared.agent.take_notices() {
        shared.reporter.report(Progress::Note(notice.text.clone()));
        shared
            .log(Event::AgentNotice { iteration: ctx.iteration, step: notice.step, text: notice.text })
            .map_err(StepFailure::internal)?;
    }
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

/// Renders `step`'s prompts for `ctx` and asks `agent`, with `schema` for the answer and `ctx` as
/// JSON in `context` (see [`ContextJson`]): a step without the journal and the iteration's files
/// around it (what `bench steps` times). The error is a prompt that does not render.
pub(crate) async fn ask_agent<T: StepOutput>(
    agent: &Agent,
    schema: &serde_json::Value,
    sandbox_brief: &str,
    step: Step,
    ctx: &StepContext,
    (context, history_json): (std::sync::Arc<serde_json::Value>, Option<std::sync::Arc<HistoryJson>>),
    rule: &(dyn Fn(&T) -> Vec<String> + Send + Sync),
) -> anyhow::Result<Result<Answer<T>, AskError>> {
    let prompts = Prompts::new(agent.settings(), sandbox_brief, step, ctx);
    let clock_note = clock_note(ctx);
    let (system, prompt) = prompts.render(0, clock_note.as_deref())?;
    let shrink = |level: u32| prompts.render(level, clock_note.as_deref()).ok().map(|(_, p)| p);
    let question = Ask {
        step: step.name(),
        iteration: ctx.iteration,
        system: &system,
        prompt: &prompt,
        schema,
        context,
        history_json,
        clock_note: clock_note.clone(),
        shrink: Some(&shrink),
    };
    Ok(agent.ask::<T>(question, rule).await)
}

/// A step's prompts, rendered to fit the model's context: the memory gets what the fixed
/// parts and the answer leave, and less at each shrink level (none at level 3, where long
/// scripts in the prompt are cut too).
struct Prompts<'a> {
    sandbox: &'a str,
    step: Step,
    ctx: &'a StepContext,
    counter: Counter,
    available: usize,
}

impl<'a> Prompts<'a> {
    fn new(settings: &AgentSettings, sandbox: &'a str, step: Step, ctx: &'a StepContext) -> Self {
        let model = settings.model_for(step.name());
        let context = settings.context_tokens.unwrap_or_else(|| context_tokens(model)) as usize;
        let answer = settings.max_tokens_for(step.name()) as usize;
        // Room for the chat format's own tokens and the counting's error.
        let available = context.saturating_sub(answer).saturating_sub(context / 20 + 64);
        Self { sandbox, step, ctx, counter: Counter::for_model(model), available }
    }

    fn render(&self, level: u32, clock_note: Option<&str>) -> anyhow::Result<(String, String)> {
        let sandbox = self.sandbox;
        let shortened;
        let ctx = if level >= 3 {
            shortened = shorten_scripts(self.ctx, 4000);
            &shortened
        } else {
            self.ctx
        };
        let bare = steps::render(self.step, ctx, Extras { memory: "", sandbox })
            .map_err(|e| anyhow::anyhow!("rendering the {} prompt: {e:#}", self.step.name()))?;
        let fixed = self.counter.count(&bare.0)
            + self.counter.count(&bare.1)
            + clock_note.map_or(0, |c| self.counter.count(c));
        let budget = match level {
            0 => self.available.saturating_sub(fixed),
            1 | 2 => self.available.saturating_sub(fixed) >> level,
            _ => 0,
        };
        let memory = memory::render(ctx, budget, &|t| self.counter.count(t));
        if memory.is_empty() {
            return Ok(bare);
        }
        steps::render(self.step, ctx, Extras { memory: &memory, sandbox })
            .map_err(|e| anyhow::anyhow!("rendering the {} prompt: {e:#}", self.step.name()))
    }
}

/// The context with every script it shows cut to its first and last `max / 2` characters.
fn shorten_scripts(ctx: &StepContext, max: usize) -> StepContext {
    let cut = |text: &mut String| {
        if text.len() > max {
            let head: String = text.chars().take(max / 2).collect();
            let tail: String =
                text.chars().rev().take(max / 2).collect::<Vec<_>>().into_iter().rev().collect();
            *text = format!("{head}\n# ... (shortened to fit the model's context) ...\n{tail}");
        }
    };
    let mut c = ctx.clone();
    if let Some(p) = c.parent.as_mut() {
        if let Some(t) = p.train.as_mut() {
            cut(&mut t.script);
        }
        cut(&mut p.inference_script);
        if let Some(f) = p.failure.as_mut() {
            cut(&mut f.script);
        }
    }
    if let Some(f) = c.failure.as_mut() {
        cut(&mut f.script);
    }
    if let Some(t) = c.current.train.as_mut() {
        cut(&mut t.script);
    }
    c.findings.truncate(1);
    c
}

/// What an LLM is told about time: what is left, and how long earlier scripts ran.
fn clock_note(ctx: &StepContext) -> Option<String> {
    let clock = ctx.clock.as_ref()?;
    let mut note = match clock.time_left_seconds {
        Some(left) => format!(
            "Time: {} left for the whole loop, this iteration included.",
            humantime::format_duration(std::time::Duration::from_secs(left as u64))
        ),
        None => "Time: the run is bounded by its iteration count, not by a clock.".to_string(),
    };
    let recent: Vec<String> =
        clock.runtimes.iter().rev().take(10).map(|(i, s)| format!("iteration {i}: {s:.1} s")).collect();
    if !recent.is_empty() {
        note.push_str(&format!(" Scripts of recent iterations ran for: {}.", recent.join(", ")));
    }
    Some(note)
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
