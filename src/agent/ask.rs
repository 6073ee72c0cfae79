//! [`Agent`]: asks a backend for a typed answer and does not accept anything less.
//!
//! Per question: build the request (schema from the Rust type), call the backend (retrying
//! transient failures with jittered exponential backoff that honours `Retry-After`, falling back
//! to prompt mode when the server refuses `json_schema`), check the answer, and on rejection ask
//! again with the problems quoted, up to `max_attempts`. Every call is written to the transcript
//! before its answer is used. Spend is counted per call against the cap; cancellation (Ctrl-C,
//! budget end) stops a call in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, BackendError, Message, OutputMode, Reply, Request, Usage};
use super::schema::{StepOutput, check, extract_json, feedback, prompt_instructions};
use super::spend::{Price, Spend};
use super::transcript::{Record, RecordedError, Transcript, Verdict};

/// How to ask for structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuredOutput {
    /// `json_schema`, falling back to prompt mode if the server refuses it.
    #[default]
    Auto,
    JsonSchema,
    Prompt,
}

/// Resolved agent settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    pub model: String,
    /// Per-step model overrides (e.g. a cheap planner and a strong coder).
    pub models: BTreeMap<String, String>,
    pub temperature: Option<f32>,
    /// Answer length for every step, unless `step_max_tokens` names the step.
    pub max_tokens: Option<u32>,
    pub step_max_tokens: BTreeMap<String, u32>,
    /// How far `max_tokens` may grow when answers are cut off.
    pub max_tokens_cap: u32,
    /// The model's context length in tokens (prompt and answer together).
    pub context_tokens: Option<u32>,
    pub seed: Option<i64>,
    pub structured: StructuredOutput,
    /// Answers per question before the step fails (validation retries).
    pub max_attempts: u32,
    /// Retries of one call on transient failures.
    pub max_http_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub spend_cap_usd: Option<f64>,
    pub prices: BTreeMap<String, Price>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            model: "builtin".into(),
            models: BTreeMap::new(),
            temperature: None,
            max_tokens: None,
            step_max_tokens: BTreeMap::new(),
            max_tokens_cap: 16_384,
            context_tokens: None,
            seed: None,
            structured: StructuredOutput::Auto,
            max_attempts: 5,
            max_http_retries: 4,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            spend_cap_usd: None,
            prices: BTreeMap::new(),
        }
    }
}

impl AgentSettings {
    pub fn model_for(&self, step: &str) -> &str {
        self.models.get(step).unwrap_or(&self.model)
    }

    /// The answer length asked for in `step`: the configured one, else a default by step (a
    /// script needs more room than a plan), never more than half the model's context.
    pub fn max_tokens_for(&self, step: &str) -> u32 {
        let default = match step {
            "train" | "infer" => 6144,
            "explore" => 2048,
            "split" => 512,
            _ => 1024,
        };
        let chosen = self.step_max_tokens.get(step).copied().or(self.max_tokens).unwrap_or(default);
        match self.context_tokens {
            Some(context) => chosen.min(context / 2).max(64),
            None => chosen,
        }
    }
}

/// One question.
#[derive(Clone)]
pub struct Ask<'a> {
    pub step: &'a str,
    pub iteration: u32,
    pub system: &'a str,
    pub prompt: &'a str,
    /// The JSON Schema the answer must match (made for the task).
    pub schema: &'a serde_json::Value,
    pub context: std::sync::Arc<serde_json::Value>,
    /// `context`'s history as JSON text, made once for several asks (see [`HistoryJson`]).
    pub history_json: Option<std::sync::Arc<super::backend::HistoryJson>>,
    /// Time left and earlier run times, told after the prompt (not part of the request's
    /// identity: a replay's timing differs).
    pub clock_note: Option<String>,
    /// A shorter prompt at level 1, 2, 3... (less history), for a server that says the request
    /// exceeds the model's context.
    pub shrink: Option<&'a (dyn Fn(u32) -> Option<String> + Send + Sync)>,
}

/// What one question cost, whether or not it got an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    /// Answers asked for (validation attempts).
    pub attempts: u32,
    /// Backend calls made, retried tries included.
    pub calls: u32,
    pub usage: Usage,
    pub cost_usd: f64,
}

/// A validated answer and what it cost.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub value: T,
    pub attempts: u32,
    pub usage: Usage,
    pub cost_usd: f64,
    pub latency: Duration,
    pub model: String,
    pub spent: Spent,
}

/// A question that got no answer, and what it cost anyway (paid calls that were rejected or
/// followed by a failure still count against the spend cap).
#[derive(Debug)]
pub struct AskError {
    pub error: AgentError,
    pub spent: Spent,
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for AskError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Why a question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("step `{step}` got no valid answer in {} attempts:{}", attempts.len(), render_attempts(attempts))]
    Invalid { step: String, attempts: Vec<Vec<String>> },
    #[error("step `{step}`: the agent backend failed")]
    Backend {
        step: String,
        #[source]
        source: BackendError,
    },
    #[error("the spend cap of ${cap:.2} is reached (${spent:.4} spent)")]
    SpendCap { spent: f64, cap: f64 },
    #[error("the agent call was cancelled")]
    Cancelled,
    #[error("writing the transcript failed")]
    Transcript(#[source] std::io::Error),
}

fn render_attempts(attempts: &[Vec<String>]) -> String {
    let mut out = String::new();
    for (i, problems) in attempts.iter().enumerate() {
        out.push_str(&format!("\n  attempt {}: {}", i + 1, problems.join("; ")));
    }
    out
}

impl AgentError {
    pub fn hint(&self) -> Option<String> {
        match self {
            AgentError::SpendCap { .. } => {
                Some("raise `spend_cap_usd` in the [agent] config to continue".into())
            }
            AgentError::Backend { source: BackendError::Fatal { .. }, .. } => Some(
                "check `base_url`, `model` and the API key variable named by `api_key_env`; \
                 `loop-runner agent check` tests a server"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// Something about the conversation with the server worth telling the user and recording: a
/// step that fell back to prompt mode, a schema keyword the server refused, a prompt shortened
/// to fit the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub step: String,
    pub text: String,
}

/// How many times the prompt is shortened for a server that says it is too long.
const MAX_SHRINKS: u32 = 3;

/// Asks questions of one backend under one set of rules.
pub struct Agent {
    backend: Arc<dyn Backend>,
    settings: AgentSettings,
    transcript: Mutex<Transcript>,
    spend: Mutex<Spend>,
    /// Steps asked through the prompt from now on (auto mode), with the server's reason.
    prompt_steps: Mutex<BTreeMap<String, String>>,
    /// Schema keywords the server refused: left out of every schema from then on.
    dropped: Mutex<Vec<String>>,
    notices: Mutex<Vec<Notice>>,
    /// Questions in a row that found the server unreachable (retries exhausted), and the last
    /// such failure.
    unreachable: AtomicU32,
    last_unreachable: Mutex<String>,
    cancel: CancellationToken,
}

impl Agent {
    pub fn new(
        backend: Arc<dyn Backend>,
        settings: AgentSettings,
        transcript: Transcript,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            backend,
            settings,
            transcript: Mutex::new(transcript),
            spend: Mutex::new(Spend::default()),
            prompt_steps: Mutex::new(BTreeMap::new()),
            dropped: Mutex::new(Vec::new()),
            notices: Mutex::new(Vec::new()),
            unreachable: AtomicU32::new(0),
            last_unreachable: Mutex::new(String::new()),
            cancel,
        }
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    pub fn settings(&self) -> &AgentSettings {
        &self.settings
    }

    pub fn spend(&self) -> Spend {
        self.spend.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Seeds the totals (resuming a run).
    pub fn restore_spend(&self, spend: Spend) {
        *self.spend.lock().unwrap_or_else(|p| p.into_inner()) = spend;
    }

    /// Whether answers are requested through the prompt (configured, or after a refusal of
    /// every step's schema).
    pub fn prompt_mode(&self) -> bool {
        self.settings.structured == StructuredOutput::Prompt
            || !self.prompt_steps.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// Whether `step` is asked through the prompt.
    pub fn prompt_mode_for(&self, step: &str) -> bool {
        self.settings.structured == StructuredOutput::Prompt
            || self.prompt_steps.lock().unwrap_or_else(|p| p.into_inner()).contains_key(step)
    }

    /// Steps that fell back to prompt mode, with why.
    pub fn fallbacks(&self) -> BTreeMap<String, String> {
        self.prompt_steps.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notices since the last call, oldest first.
    pub fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Questions in a row that found the server unreachable, and the last such failure.
    pub fn unreachable_streak(&self) -> (u32, String) {
        (
            self.unreachable.load(Ordering::Relaxed),
            self.last_unreachable.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        )
    }

    fn notice(&self, step: &str, text: String) {
        tracing::warn!(step, "{text}");
        self.notices.lock().unwrap_or_else(|p| p.into_inner()).push(Notice { step: step.into(), text });
    }

    /// Asks until an answer of type `T` passes the schema and `validate`.
    pub async fn ask<T: StepOutput>(
        &self,
        ask: Ask<'_>,
        validate: &(dyn Fn(&T) -> Vec<String> + Send + Sync),
    ) -> Result<Answer<T>, AskError> {
        let mut spent = Spent::default();
        let result = self.ask_counting(ask, validate, &mut spent).await;
        match &result {
            Ok(_) => self.unreachable.store(0, Ordering::Relaxed),
            Err(AgentError::Backend { source: BackendError::Transient { detail, .. }, .. }) => {
                *self.last_unreachable.lock().unwrap_or_else(|p| p.into_inner()) = detail.clone();
                self.unreachable.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        result.map_err(|error| AskError { error, spent })
    }

    async fn ask_counting<T: StepOutput>(
        &self,
        ask: Ask<'_>,
        validate: &(dyn Fn(&T) -> Vec<String> + Send + Sync),
        spent: &mut Spent,
    ) -> Result<Answer<T>, AgentError> {
        // The full schema validates every answer, whatever the server was sent.
        let validator = jsonschema::validator_for(ask.schema).expect("generated schemas compile");
        let schema_name = schema_name::<T>();
        let mut prompt = ask.prompt.to_string();
        let mut conversation = vec![Message::user(&prompt)];
        let mut rejected: Vec<Vec<String>> = Vec::new();
        let mut max_tokens = self.settings.max_tokens_for(ask.step);
        let mut shrinks = 0;
        let mut ignored_format = 0;
        let started = Instant::now();
        let mut attempt = 0;
        while attempt < self.settings.max_attempts.max(1) {
            attempt += 1;
            spent.attempts = attempt;
            let question = Question { ask: &ask, schema_name: &schema_name, max_tokens };
            let called = self.call(&question, attempt, &conversation, spent).await;
            let (reply, call_cost, record) = match called {
                Ok(r) => r,
                Err(AgentError::Backend { source: BackendError::ContextTooLong { detail }, step }) => {
                    // Shorter memory, same question; it does not count as an attempt.
                    let shorter = ask.shrink.and_then(|shrink| shrink(shrinks + 1));
                    match shorter {
                        Some(text) if shrinks < MAX_SHRINKS => {
                            shrinks += 1;
                            self.notice(ask.step, format!("the prompt was too long for the model ({detail}); asking again with a shorter history ({} of {MAX_SHRINKS})", shrinks));
                            prompt = text;
                            conversation = vec![Message::user(&prompt)];
                            attempt -= 1;
                            continue;
                        }
                        _ => {
                            return Err(AgentError::Backend {
                                step,
                                source: BackendError::ContextTooLong { detail },
                            });
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            spent.usage += reply.usage;
            spent.cost_usd += call_cost;
            if reply.finish_reason.as_deref() == Some("length") {
                let problems = vec![format!(
                    "the answer was cut off at the {max_tokens}-token limit before it was complete"
                )];
                self.write(Record { verdict: Verdict::Truncated, problems: problems.clone(), ..record })?;
                let cap = self.settings.max_tokens_cap.max(max_tokens);
                let next = max_tokens.saturating_mul(2).min(cap);
                tracing::info!(step = ask.step, attempt, max_tokens, next, "answer truncated");
                conversation.push(Message::assistant("(answer cut off)"));
                conversation.push(Message::user(format!(
                    "Your answer was cut off at the {max_tokens}-token limit before the JSON was complete. Reply again with \
                     the whole JSON object, more concisely (shorter texts; no comments or dead code in scripts).{}",
                    if next > max_tokens { format!(" You now have {next} tokens.") } else { String::new() }
                )));
                max_tokens = next;
                rejected.push(problems);
                continue;
            }
            match check::<T>(&reply.content, &validator, validate) {
                Ok(value) => {
                    self.write(Record { verdict: Verdict::Accepted, ..record })?;
                    return Ok(Answer {
                        value,
                        attempts: attempt,
                        usage: spent.usage,
                        cost_usd: spent.cost_usd,
                        latency: started.elapsed(),
                        model: reply.model,
                        spent: *spent,
                    });
                }
                Err(problems) => {
                    self.write(Record { verdict: Verdict::Rejected, problems: problems.clone(), ..record })?;
                    tracing::info!(step = ask.step, attempt, problems = ?problems, "answer rejected");
                    let mut text = feedback(&problems);
                    // Not JSON at all although the schema was sent: the server ignored
                    // `response_format`. The schema goes into the prompt from now on.
                    let not_json = extract_json(&reply.content).is_err();
                    if not_json && !self.prompt_mode_for(ask.step) {
                        ignored_format += 1;
                        text.push_str("\n\n");
                        text.push_str(&prompt_instructions(&self.schema_to_send(ask.schema)));
                        if ignored_format >= 2 && self.settings.structured == StructuredOutput::Auto {
                            self.fall_back(
                                ask.step,
                                "the server answered with free text although it was sent the schema",
                            );
                        }
                    }
                    conversation.push(Message::assistant(&reply.content));
                    conversation.push(Message::user(text));
                    rejected.push(problems);
                }
            }
        }
        Err(AgentError::Invalid { step: ask.step.to_string(), attempts: rejected })
    }

    /// The schema as this server accepts it (without keywords it refused).
    fn schema_to_send(&self, schema: &serde_json::Value) -> serde_json::Value {
        let dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if dropped.is_empty() { schema.clone() } else { super::schema::without(schema, &dropped) }
    }

    fn fall_back(&self, step: &str, why: &str) {
        let mut steps = self.prompt_steps.lock().unwrap_or_else(|p| p.into_inner());
        if !steps.contains_key(step) {
            steps.insert(step.to_string(), why.to_string());
            drop(steps);
            self.notice(step, format!("structured output is off for step `{step}` ({why}); its schema goes into the prompt instead"));
        }
    }

    /// One backend call with transient retries, and what a refused schema calls for: the
    /// refused keyword dropped (structured output stays on), else this step in prompt mode.
    /// Failed tries are written to the transcript here; the successful one is returned
    /// unwritten, for the caller to record with its verdict.
    async fn call(
        &self,
        q: &Question<'_>,
        attempt: u32,
        conversation: &[Message],
        spent: &mut Spent,
    ) -> Result<(Reply, f64, Record), AgentError> {
        let ask = q.ask;
        let mut try_number = 0;
        loop {
            try_number += 1;
            if self.cancel.is_cancelled() {
                return Err(AgentError::Cancelled);
            }
            {
                let spend = self.spend.lock().unwrap_or_else(|p| p.into_inner());
                if spend.over(self.settings.spend_cap_usd) {
                    return Err(AgentError::SpendCap {
                        spent: spend.cost_usd,
                        cap: self.settings.spend_cap_usd.unwrap_or_default(),
                    });
                }
            }
            let request = self.request(q, attempt, conversation);
            spent.calls += 1;
            let started = Instant::now();
            let result = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(AgentError::Cancelled),
                result = self.backend.complete(&request) => result,
            };
            let latency_ms = started.elapsed().as_millis() as u64;
            let mut record = Record {
                seq: 0,
                at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                backend: self.backend.name().to_string(),
                step: ask.step.to_string(),
                iteration: ask.iteration,
                attempt,
                try_number,
                request_hash: request.hash(),
                request,
                reply: None,
                error: None,
                verdict: Verdict::Failed,
                problems: vec![],
                cost_usd: 0.0,
                latency_ms,
            };
            match result {
                Ok(reply) => {
                    let cost = self.spend.lock().unwrap_or_else(|p| p.into_inner()).add(
                        &self.settings.prices,
                        &record.request.model,
                        reply.usage,
                    );
                    record.cost_usd = cost;
                    record.reply = Some(reply.clone());
                    return Ok((reply, cost, record));
                }
                Err(error) => {
                    let error =
                        error.redacted(self.transcript.lock().unwrap_or_else(|p| p.into_inner()).redactor());
                    record.error = Some(RecordedError::of(&error));
                    self.write(record)?;
                    match error {
                        BackendError::SchemaUnsupported { ref detail }
                            if self.settings.structured == StructuredOutput::Auto
                                && !self.prompt_mode_for(ask.step) =>
                        {
                            let keyword = super::schema::DROPPABLE
                                .iter()
                                .find(|k| {
                                    detail.contains(&format!("'{k}'"))
                                        || detail.contains(&format!("`{k}`"))
                                        || detail.contains(&format!("\"{k}\""))
                                })
                                .map(|k| k.to_string());
                            let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
                            match keyword {
                                Some(k) if !dropped.contains(&k) => {
                                    dropped.push(k.clone());
                                    drop(dropped);
                                    self.notice(ask.step, format!("the server refused the schema keyword `{k}`; it is left out of every schema from now on and the runner checks it instead (structured output stays on)"));
                                }
                                _ => {
                                    drop(dropped);
                                    self.fall_back(
                                        ask.step,
                                        &format!("the server refused its schema: {detail}"),
                                    );
                                }
                            }
                            try_number = 0;
                        }
                        BackendError::Transient { retry_after, ref detail }
                            if try_number <= self.settings.max_http_retries =>
                        {
                            let delay = self.backoff(try_number, retry_after);
                            tracing::warn!(step = ask.step, try_number, ?delay, detail = %detail, "agent call failed; retrying");
                            tokio::select! {
                                biased;
                                () = self.cancel.cancelled() => return Err(AgentError::Cancelled),
                                () = tokio::time::sleep(delay) => {}
                            }
                        }
                        source => {
                            return Err(AgentError::Backend { step: ask.step.to_string(), source });
                        }
                    }
                }
            }
        }
    }

    fn request(&self, q: &Question<'_>, attempt: u32, conversation: &[Message]) -> Request {
        let ask = q.ask;
        let prompt_mode = self.prompt_mode_for(ask.step);
        let schema = self.schema_to_send(ask.schema);
        let mut messages = vec![Message::system(ask.system)];
        for (i, message) in conversation.iter().enumerate() {
            if i == 0 && prompt_mode {
                messages.push(Message::user(format!(
                    "{}\n\n{}",
                    message.content,
                    prompt_instructions(&schema)
                )));
            } else {
                messages.push(message.clone());
            }
        }
        Request {
            step: ask.step.to_string(),
            iteration: ask.iteration,
            attempt,
            model: self.settings.model_for(ask.step).to_string(),
            messages,
            schema_name: q.schema_name.to_string(),
            schema,
            mode: if prompt_mode { OutputMode::Prompt } else { OutputMode::JsonSchema { strict: true } },
            temperature: self.settings.temperature,
            max_tokens: Some(q.max_tokens),
            seed: self.settings.seed,
            context: ask.context.clone(),
            history_json: ask.history_json.clone(),
            clock_note: ask.clock_note.clone(),
        }
    }

    /// Exponential backoff with full jitter, or the server's `Retry-After` (plus a little
    /// jitter), capped.
    fn backoff(&self, try_number: u32, retry_after: Option<Duration>) -> Duration {
        let cap = self.settings.backoff_max;
        if let Some(after) = retry_after {
            let jitter = self.settings.backoff_base.mul_f64(fastrand::f64() * 0.1);
            return (after + jitter).min(cap.max(after));
        }
        let exp = self.settings.backoff_base.saturating_mul(1u32 << try_number.min(16).saturating_sub(1));
        exp.min(cap).mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    fn write(&self, record: Record) -> Result<(), AgentError> {
        self.transcript
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(record)
            .map_err(AgentError::Transcript)
    }
}

/// One question as every call of it carries it.
struct Question<'a> {
    ask: &'a Ask<'a>,
    schema_name: &'a str,
    max_tokens: u32,
}

/// A name for the schema as OpenAI wants it (`[a-zA-Z0-9_-]{1,64}`).
fn schema_name<T: StepOutput>() -> String {
    let name: String =
        T::schema_name().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    name.chars().take(64).collect()
}
