//! [`Agent`]: asks a backend for a typed answer and does not accept anything less.
//!
//! Per question: build the request (schema from the Rust type), call the backend (retrying
//! transient failures with jittered exponential backoff that honours `Retry-After`, falling back
//! to prompt mode when the server refuses `json_schema`), check the answer, and on rejection ask
//! again with the problems quoted, up to `max_attempts`. Every call is written to the transcript
//! before its answer is used. Spend is counted per call against the cap; cancellation (Ctrl-C,
//! budget end) stops a call in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, BackendError, Message, OutputMode, Reply, Request, Usage};
use super::schema::{StepOutput, check, feedback, prompt_instructions, schema_of};
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
    pub max_tokens: Option<u32>,
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
}

/// One question.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub step: &'a str,
    pub iteration: u32,
    pub system: &'a str,
    pub prompt: &'a str,
    pub context: serde_json::Value,
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

/// Asks questions of one backend under one set of rules.
pub struct Agent {
    backend: Arc<dyn Backend>,
    settings: AgentSettings,
    transcript: Mutex<Transcript>,
    spend: Mutex<Spend>,
    /// Set once the server refused `json_schema` (auto mode): prompt mode from then on.
    fell_back: AtomicBool,
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
            fell_back: AtomicBool::new(false),
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

    /// Whether answers are requested through the prompt (configured, or after a refusal).
    pub fn prompt_mode(&self) -> bool {
        self.settings.structured == StructuredOutput::Prompt || self.fell_back.load(Ordering::Relaxed)
    }

    /// Asks until an answer of type `T` passes the schema and `validate`.
    pub async fn ask<T: StepOutput>(
        &self,
        ask: Ask<'_>,
        validate: &(dyn Fn(&T) -> Vec<String> + Send + Sync),
    ) -> Result<Answer<T>, AskError> {
        let mut spent = Spent::default();
        self.ask_counting(ask, validate, &mut spent).await.map_err(|error| AskError { error, spent })
    }

    async fn ask_counting<T: StepOutput>(
        &self,
        ask: Ask<'_>,
        validate: &(dyn Fn(&T) -> Vec<String> + Send + Sync),
        spent: &mut Spent,
    ) -> Result<Answer<T>, AgentError> {
        let (schema, strict) = schema_of::<T>();
        let validator = jsonschema::validator_for(&schema).expect("generated schemas compile");
        let schema_name = schema_name::<T>();
        let mut conversation = vec![Message::user(ask.prompt)];
        let mut rejected: Vec<Vec<String>> = Vec::new();
        let started = Instant::now();
        for attempt in 1..=self.settings.max_attempts.max(1) {
            let question = Question { ask: &ask, schema: &schema, strict, schema_name: &schema_name };
            spent.attempts = attempt;
            let (reply, call_cost, record) = self.call(&question, attempt, &conversation, spent).await?;
            spent.usage += reply.usage;
            spent.cost_usd += call_cost;
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
                    conversation.push(Message::assistant(&reply.content));
                    conversation.push(Message::user(feedback(&problems)));
                    rejected.push(problems);
                }
            }
        }
        Err(AgentError::Invalid { step: ask.step.to_string(), attempts: rejected })
    }

    /// One backend call with transient retries and the json_schema fallback. Failed tries are
    /// written to the transcript here; the successful one is returned unwritten, for the
    /// caller to record with its verdict.
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
                        BackendError::SchemaUnsupported { .. }
                            if self.settings.structured == StructuredOutput::Auto && !self.prompt_mode() =>
                        {
                            tracing::warn!(
                                step = ask.step,
                                "the server refused json_schema output; asking through the prompt from now on"
                            );
                            self.fell_back.store(true, Ordering::Relaxed);
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
        let (ask, schema) = (q.ask, q.schema);
        let prompt_mode = self.prompt_mode();
        let mut messages = vec![Message::system(ask.system)];
        for (i, message) in conversation.iter().enumerate() {
            if i == 0 && prompt_mode {
                messages.push(Message::user(format!(
                    "{}\n\n{}",
                    message.content,
                    prompt_instructions(schema)
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
            schema: schema.clone(),
            mode: if prompt_mode { OutputMode::Prompt } else { OutputMode::JsonSchema { strict: q.strict } },
            temperature: self.settings.temperature,
            max_tokens: self.settings.max_tokens,
            seed: self.settings.seed,
            context: ask.context.clone(),
            clock_note: None,
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

/// One question with its schema, as every call of it carries them.
struct Question<'a> {
    ask: &'a Ask<'a>,
    schema: &'a serde_json::Value,
    strict: bool,
    schema_name: &'a str,
}

/// A name for the schema as OpenAI wants it (`[a-zA-Z0-9_-]{1,64}`).
fn schema_name<T: StepOutput>() -> String {
    let name: String =
        T::schema_name().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    name.chars().take(64).collect()
}
