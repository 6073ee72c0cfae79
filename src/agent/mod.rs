//! Agents: who writes the scripts. One [`Backend`] trait (LLM over an OpenAI-compatible API,
//! the built-in offline agent, or a replayed transcript) under one [`Agent`] that validates
//! every answer against its Rust type's JSON Schema, retries, records a transcript and counts
//! spend.
//!
//! Nothing here runs scripts or knows about experiments: steps hand in a prompt and a type.

mod ask;
mod backend;
mod openai;
mod replay;
mod schema;
mod secret;
mod spend;
mod tokens;
mod transcript;

pub use ask::{Agent, AgentError, AgentSettings, Answer, Ask, AskError, Spent, StructuredOutput};
pub use backend::{
    Backend, BackendError, BoxFuture, HistoryJson, Message, OutputMode, Reply, Request, Role, Usage,
};
pub use openai::OpenAiBackend;
pub use replay::{ReplayBackend, first_difference};
pub use schema::{DROPPABLE, StepOutput, check, extract_json, schema_of, strict_problems, without};
pub use secret::{Redactor, Secret};
pub use spend::{Price, Spend};
pub use tokens::{Counter, context_tokens};
pub use transcript::{Record, RecordedError, Transcript, Verdict, read as read_transcript};
