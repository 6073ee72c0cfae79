//! The [`Backend`] trait every agent implements (LLM, built-in, replay), the request it gets and
//! the reply it gives. Validation, retries, transcripts and spend live above it, in
//! [`Agent`](super::Agent), so every backend is held to the same rules.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
    /// Shared, not copied, by the tries of a call: it holds every earlier iteration.
    pub context: Arc<serde_json::Value>,
    /// The context's `history` as JSON text, when the caller made it once for several requests.
    #[serde(skip)]
    pub history_json: Option<Arc<HistoryJson>>,
    /// Time left and earlier run times, told to an LLM after the prompt. Like the context's
    /// `clock`, it is not part of the request's identity: a replay's timing differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_note: Option<String>,
}

/// A context's `history`, the part that grows with the run, as JSON text with its digest: made
/// once for the steps of an iteration, which share it. A request that carries it hashes and keeps
/// its history from this text instead of writing the list out again for every step. It is only
/// used for a history of its length, and must be made from the context's own.
#[derive(Debug)]
pub struct HistoryJson {
    text: Box<serde_json::value::RawValue>,
    sha256: String,
    len: usize,
}

impl HistoryJson {
    /// The text of `history` (a JSON list; anything else has none).
    pub fn of(history: &serde_json::Value) -> Option<Self> {
        let len = history.as_array()?.len();
        let text = serde_json::value::to_raw_value(history).expect("JSON values serialize");
        let sha256 = crate::fsx::sha256_bytes(text.get().as_bytes());
        Some(Self { text, sha256, len })
    }

    /// Whether this can stand for `history` (made from it, which its user answers for).
    pub fn matches(&self, history: &serde_json::Value) -> bool {
        history.as_array().is_some_and(|h| h.len() == self.len)
    }

    /// The digest of the text.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

impl PartialEq for HistoryJson {
    fn eq(&self, other: &Self) -> bool {
        self.text.get() == other.text.get()
    }
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

    /// sha256 of the canonical JSON of the request's identity: `identity()` written with its
    /// keys sorted. It is written straight into the hash rather than built as a value first:
    /// the context holds every earlier iteration, and copying it for each call cost time in
    /// proportion to the run's length.
    pub fn hash(&self) -> String {
        crate::fsx::sha256_json(&Identity(self))
    }

    /// The request as the transcript keeps it: the context's lists of every earlier iteration
    /// (`history`, `clock.runtimes`) as their length and digest. They grow with the run, and
    /// every call carried them whole: a thousand iterations of the built-in agent wrote a
    /// transcript of gigabytes, each line fsync'd. The journal holds those iterations, and the
    /// request's hash is taken before, over the whole of it, so replay matches as strictly.
    /// Keeping a kept request again changes nothing.
    pub fn kept(mut self) -> Self {
        if let Some(context) = self.context.as_object() {
            // Built anew rather than edited in place: the context is shared with the request's
            // other tries, and copying the history only to replace it would cost what keeping saves.
            let kept = context
                .iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v.as_object()) {
                        ("history", _) => match self.history_json.as_deref().filter(|h| h.matches(v)) {
                            Some(h) => serde_json::json!({ "iterations": h.len, "sha256": h.sha256 }),
                            None => digest_list(v),
                        },
                        ("clock", Some(clock)) => serde_json::Value::Object(
                            clock
                                .iter()
                                .map(|(k, v)| {
                                    (k.clone(), if k == "runtimes" { digest_list(v) } else { v.clone() })
                                })
                                .collect(),
                        ),
                        _ => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            self.context = Arc::new(serde_json::Value::Object(kept));
        }
        self.history_json = None;
        self
    }
}

/// A request serialized as its [`identity`](Request::identity), byte for byte: the keys in the
/// order a JSON value sorts them, the small fields as values (so numbers are written exactly as
/// there), and the context filtered as it is streamed.
struct Identity<'a>(&'a Request);

impl Serialize for Identity<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.0;
        let mut map = serializer.serialize_map(Some(12))?;
        map.serialize_entry("attempt", &r.attempt)?;
        map.serialize_entry("context", &ContextIdentity(&r.context, r.history_json.as_deref()))?;
        map.serialize_entry("iteration", &r.iteration)?;
        map.serialize_entry("max_tokens", &r.max_tokens)?;
        map.serialize_entry("messages", &as_value::<_, S::Error>(&r.messages)?)?;
        map.serialize_entry("mode", &as_value::<_, S::Error>(&r.mode)?)?;
        map.serialize_entry("model", &r.model)?;
        map.serialize_entry("schema", &r.schema)?;
        map.serialize_entry("schema_name", &r.schema_name)?;
        map.serialize_entry("seed", &r.seed)?;
        map.serialize_entry("step", &r.step)?;
        map.serialize_entry("temperature", &as_value::<_, S::Error>(&r.temperature)?)?;
        map.end()
    }
}

/// A field as [`Request::identity`] has it: turned into a JSON value first, which is what keeps
/// an `f32` or a struct's key order the same in both.
fn as_value<T: Serialize, E: serde::ser::Error>(field: &T) -> Result<serde_json::Value, E> {
    serde_json::to_value(field).map_err(E::custom)
}

/// The context without `clock`, and its `pending` iterations without `planned`; its history from
/// its text when there is one.
struct ContextIdentity<'a>(&'a serde_json::Value, Option<&'a HistoryJson>);

impl Serialize for ContextIdentity<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        let Some(context) = self.0.as_object() else { return self.0.serialize(serializer) };
        struct Without<'a>(&'a serde_json::Map<String, serde_json::Value>, &'static str);
        impl Serialize for Without<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                for (k, v) in self.0.iter().filter(|(k, _)| *k != self.1) {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
        struct Pending<'a>(&'a [serde_json::Value]);
        impl Serialize for Pending<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
                for p in self.0 {
                    match p.as_object() {
                        Some(p) => seq.serialize_element(&Without(p, "planned"))?,
                        None => seq.serialize_element(p)?,
                    }
                }
                seq.end()
            }
        }
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in context.iter().filter(|(k, _)| *k != "clock") {
            match (k.as_str(), v.as_array()) {
                ("pending", Some(pending)) => map.serialize_entry(k, &Pending(pending))?,
                ("history", _) if self.1.is_some_and(|h| h.matches(v)) => {
                    map.serialize_entry(k, &*self.1.expect("matched").text)?
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

/// A JSON list as `{"iterations": its length, "sha256": its digest}`; anything else as it is.
fn digest_list(value: &serde_json::Value) -> serde_json::Value {
    match value.as_array() {
        Some(list) => {
            serde_json::json!({ "iterations": list.len(), "sha256": crate::fsx::sha256_json(value) })
        }
        None => value.clone(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(context: serde_json::Value) -> Request {
        Request {
            step: "plan".into(),
            iteration: 7,
            attempt: 2,
            model: "gpt-4o-mini".into(),
            messages: vec![Message::system("sys \u{e9}\"q\"\n"), Message::user("u")],
            schema_name: "Plan".into(),
            schema: json!({"type": "object", "properties": {"b": {}, "a": {"enum": [1.5, "x"]}}}),
            mode: OutputMode::JsonSchema { strict: true },
            temperature: Some(0.2),
            max_tokens: Some(900),
            seed: Some(-3),
            context: Arc::new(context),
            history_json: None,
            clock_note: Some("Time: 2s left".into()),
        }
    }

    /// The hash as it was first defined: over the identity built as a value.
    fn hash_of_identity(r: &Request) -> String {
        crate::fsx::sha256_bytes(r.identity().to_string().as_bytes())
    }

    #[test]
    fn the_streamed_hash_is_the_hash_of_the_identity_value() {
        let mut ctx = crate::steps::sample_context();
        ctx.clock = Some(crate::steps::Clock { time_left_seconds: Some(12.5), runtimes: vec![(1, 0.25)] });
        ctx.pending = vec![crate::steps::PendingBrief {
            iteration: 8,
            operation: crate::search::Operation::Improve,
            parent: Some(3),
            planned: Some(crate::steps::Planned { family: "svm".into(), hyperparameters: vec![] }),
        }];
        ctx.cv_folds = Some(5);
        let contexts = [
            ctx.to_value(),
            serde_json::to_value(crate::steps::sample_context()).unwrap(),
            json!({"pending": [1, {"planned": 2, "z": 0.1}], "clock": {"x": 1}, "history": [{"s": 1e-7}]}),
            json!(null),
            json!([1, 2]),
        ];
        for context in contexts {
            let mut r = request(context);
            assert_eq!(r.hash(), hash_of_identity(&r), "{}", r.context);
            let with_text = Request {
                history_json: r.context.get("history").and_then(HistoryJson::of).map(Arc::new),
                ..r.clone()
            };
            assert_eq!(with_text.hash(), r.hash(), "{}", r.context);
            assert_eq!(with_text.clone().kept(), r.clone().kept(), "{}", r.context);
            r.temperature = None;
            r.max_tokens = None;
            r.seed = None;
            r.mode = OutputMode::Prompt;
            r.clock_note = None;
            assert_eq!(r.hash(), hash_of_identity(&r), "{}", r.context);
        }
    }

    #[test]
    fn timing_does_not_change_the_hash_but_anything_else_does() {
        let mut ctx = crate::steps::sample_context();
        let r = request(ctx.to_value());
        ctx.clock = Some(crate::steps::Clock { time_left_seconds: Some(1.0), runtimes: vec![] });
        let mut timed = request(ctx.to_value());
        timed.clock_note = Some("Time: 1s left".into());
        assert_eq!(r.hash(), timed.hash());
        ctx.seed = 1;
        assert_ne!(r.hash(), request(ctx.to_value()).hash());
    }
}
