//! The [`Backend`] trait every agent implements (LLM, built-in, replay), the request it gets and
//! the reply it gives. Validation, retries, transcripts and spend live above it, in
//! [`Agent`](super::Agent), so every backend is held to the same rules.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: Role::System, content: content.into() }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: Role::User, content: content.into() }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self { role: Role::Assistant, content: content.into() }
    }
}

/// How the answer's structure is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// `response_format: json_schema` (strict when the schema allows it).
    JsonSchema { strict: bool },
    /// The schema is written into the prompt and the JSON is extracted from the reply.
    Prompt,
}

/// One call to a backend. Everything that determines the answer is in here, so its hash
/// identifies the call for replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub step: String,
    pub iteration: u32,
    /// Validation attempt, from 1.
    pub attempt: u32,
    pub model: String,
    pub messages: Vec<Message>,
    pub schema_name: String,
    pub schema: serde_json::Value,
    pub mode: OutputMode,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub seed: Option<i64>,
    /// The structured facts the prompt was rendered from (for the built-in agent, which
    /// reasons over data rather than text).
    pub context: serde_json::Value,
    /// Time left and earlier run times, told to an LLM after the prompt. Like the context's
    /// `clock`, it is not part of the request's identity: a replay's timing differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_note: Option<String>,
}

impl Request {
    /// The request without its timing (`clock_note`, `context.clock`, and what the built-in
    /// agent planned for the iterations in flight, which follows the clock): what identifies it.
    pub fn identity(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("requests serialize");
        if let Some(map) = value.as_object_mut() {
            map.remove("clock_note");
            if let Some(context) = map.get_mut("context").and_then(|c| c.as_object_mut()) {
                context.remove("clock");
                for pending in context.get_mut("pending").and_then(|p| p.as_array_mut()).into_iter().flatten()
                {
                    if let Some(p) = pending.as_object_mut() {
                        p.remove("planned");
                    }
                }
            }
        }
        value
    }

    /// sha256 of the canonical JSON of the request's identity.
    pub fn hash(&self) -> String {
        crate::fsx::sha256_bytes(self.identity().to_string().as_bytes())
    }

    /// The request as the transcript keeps it: the context's lists of every earlier iteration
    /// (`history`, `clock.runtimes`) as their length and digest. They grow with the run, and
    /// every call carried them whole: a thousand iterations of the built-in agent wrote a
    /// transcript of gigabytes, each line fsync'd. The journal holds those iterations, and the
    /// request's hash is taken before, over the whole of it, so replay matches as strictly.
    /// Keeping a kept request again changes nothing.
    pub fn kept(mut self) -> Self {
        if let Some(context) = self.context.as_object_mut() {
            digest_list(context.get_mut("history"));
            let clock = context.get_mut("clock").and_then(|c| c.as_object_mut());
            digest_list(clock.and_then(|c| c.get_mut("runtimes")));
        }
        self
    }
}

/// Replaces a JSON list with `{"iterations": its length, "sha256": its digest}`.
fn digest_list(value: Option<&mut serde_json::Value>) {
    let Some(value) = value else { return };
    let Some(list) = value.as_array() else { return };
    let digest = crate::fsx::sha256_bytes(value.to_string().as_bytes());
    *value = serde_json::json!({ "iterations": list.len(), "sha256": digest });
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Self) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

/// A backend's answer: raw text, validated above.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub content: String,
    pub usage: Usage,
    /// The model that answered, as the server names it.
    pub model: String,
    pub finish_reason: Option<String>,
}

/// Where a replayed request first differs from the recorded one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "replay diverged at step `{step}` (iteration {iteration}, attempt {attempt}): `{field}` differs\n  recorded: {recorded}\n  now:      {now}"
)]
pub struct Divergence {
    pub step: String,
    pub iteration: u32,
    pub attempt: u32,
    pub field: String,
    pub recorded: String,
    pub now: String,
}

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// Worth retrying: rate limit, server error, connection failure, timeout, truncated body.
    #[error("{detail}")]
    Transient { detail: String, retry_after: Option<Duration> },
    /// The server rejects `response_format: json_schema` (or one keyword of the schema).
    #[error("the server does not support json_schema output: {detail}")]
    SchemaUnsupported { detail: String },
    /// The prompt (with the answer's room) exceeds the model's context: send less.
    #[error("the request is too long for the model's context: {detail}")]
    ContextTooLong { detail: String },
    /// Not worth retrying (bad key, unknown model, malformed request).
    #[error("{detail}")]
    Fatal { detail: String },
    /// Replay found a request that differs from the recorded one.
    #[error("{0}")]
    ReplayMismatch(Box<Divergence>),
    /// Replay ran out of recorded answers.
    #[error("the transcript has no recorded answer for step `{step}` (iteration {iteration})")]
    ReplayExhausted { step: String, iteration: u32 },
}

impl BackendError {
    /// The same error with secrets removed from its text (servers echo keys in errors).
    pub fn redacted(self, redactor: &super::secret::Redactor) -> Self {
        let r = |s: String| redactor.redact(&s);
        match self {
            BackendError::Transient { detail, retry_after } => {
                BackendError::Transient { detail: r(detail), retry_after }
            }
            BackendError::SchemaUnsupported { detail } => {
                BackendError::SchemaUnsupported { detail: r(detail) }
            }
            BackendError::ContextTooLong { detail } => BackendError::ContextTooLong { detail: r(detail) },
            BackendError::Fatal { detail } => BackendError::Fatal { detail: r(detail) },
            other => other,
        }
    }
}

/// An agent backend.
pub trait Backend: Send + Sync {
    /// `openai`, `builtin`, `replay`.
    fn name(&self) -> &'static str;
    fn complete<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Reply, BackendError>>;
}
