//! The transcript: every request to an agent and what came back, one JSON line per call,
//! appended and fsync'd before the answer is used. Secrets are redacted on the way out.
//!
//! It is the source for `replay` and for audits: with the same transcript, the same answers come
//! back in the same order.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::backend::{BackendError, Reply, Request};
use super::secret::Redactor;

/// What became of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The answer passed every check and was used.
    Accepted,
    /// The answer was parsed or validated and rejected; the agent was asked again.
    Rejected,
    /// The call itself failed (HTTP error, timeout, refusal).
    Failed,
    /// The answer was cut off at the token limit; the agent was asked again for a shorter one.
    Truncated,
}

/// A failed call, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedError {
    /// `transient`, `schema_unsupported`, `context_too_long` or `fatal`.
    pub kind: String,
    pub detail: String,
}

impl RecordedError {
    pub fn of(error: &BackendError) -> Self {
        let kind = match error {
            BackendError::Transient { .. } => "transient",
            BackendError::SchemaUnsupported { .. } => "schema_unsupported",
            BackendError::ContextTooLong { .. } => "context_too_long",
            _ => "fatal",
        };
        Self { kind: kind.to_string(), detail: error.to_string() }
    }

    /// The error to give again when replaying.
    pub fn to_error(&self) -> BackendError {
        match self.kind.as_str() {
            "transient" => BackendError::Transient { detail: self.detail.clone(), retry_after: None },
            "schema_unsupported" => BackendError::SchemaUnsupported { detail: self.detail.clone() },
            "context_too_long" => BackendError::ContextTooLong { detail: self.detail.clone() },
            _ => BackendError::Fatal { detail: self.detail.clone() },
        }
    }
}

/// One transcript line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub at: String,
    pub backend: String,
    pub step: String,
    pub iteration: u32,
    pub attempt: u32,
    /// HTTP-level try within the attempt, from 1.
    #[serde(rename = "try")]
    pub try_number: u32,
    pub request_hash: String,
    pub request: Request,
    pub reply: Option<Reply>,
    pub error: Option<RecordedError>,
    pub verdict: Verdict,
    pub problems: Vec<String>,
    pub cost_usd: f64,
    pub latency_ms: u64,
}

/// An append-only transcript file (or a discard sink).
pub struct Transcript {
    path: Option<PathBuf>,
    file: Option<std::fs::File>,
    next_seq: u64,
    redactor: Redactor,
}

impl Transcript {
    /// Opens `path` for appending, continuing its sequence numbers.
    pub fn open(path: &Path, redactor: Redactor) -> std::io::Result<Self> {
        let existing = if path.exists() { read(path)?.len() as u64 } else { 0 };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("opening `{}`: {e}", path.display())))?;
        Ok(Self { path: Some(path.to_path_buf()), file: Some(file), next_seq: existing, redactor })
    }

    /// A transcript that keeps nothing (for one-off checks).
    pub fn discard(redactor: Redactor) -> Self {
        Self { path: None, file: None, next_seq: 0, redactor }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Appends a record (its `seq` is assigned here, its request [kept](Request::kept)) and
    /// makes it durable.
    pub fn append(&mut self, record: Record) -> std::io::Result<()> {
        let mut record = Record { request: record.request.kept(), ..record };
        record.seq = self.next_seq;
        self.next_seq += 1;
        let line = self.redactor.redact(&serde_json::to_string(&record).expect("records serialize"));
        if let Some(file) = &mut self.file {
            file.write_all(line.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_data()?;
        }
        Ok(())
    }
}

/// Reads every complete record. A torn last line (a crash mid-write) is ignored; a damaged line
/// elsewhere is an error.
pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
    let text = fs_err::read_to_string(path)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(record) => records.push(record),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("`{}` line {}: {e}", path.display(), i + 1),
                ));
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::backend::{Message, OutputMode, Usage};
    use crate::agent::secret::Secret;

    pub(crate) fn sample(step: &str, content: &str) -> Record {
        let request = Request {
            step: step.into(),
            iteration: 1,
            attempt: 1,
            model: "m".into(),
            messages: vec![Message::user("hello")],
            schema_name: "S".into(),
            schema: serde_json::json!({"type": "object"}),
            mode: OutputMode::Prompt,
            temperature: None,
            max_tokens: None,
            seed: None,
            context: serde_json::Value::Null.into(),
            history_json: None,
            clock_note: None,
        };
        Record {
            seq: 0,
            at: String::new(),
            backend: "test".into(),
            step: step.into(),
            iteration: 1,
            attempt: 1,
            try_number: 1,
            request_hash: request.hash(),
            request,
            reply: Some(Reply {
                content: content.into(),
                usage: Usage::default(),
                model: "m".into(),
                finish_reason: None,
            }),
            error: None,
            verdict: Verdict::Accepted,
            problems: vec![],
            cost_usd: 0.0,
            latency_ms: 1,
        }
    }

    #[tokio::test]
    async fn the_history_is_kept_as_its_digest_and_replay_still_matches_it() {
        use crate::agent::backend::Backend;
        use crate::agent::replay::ReplayBackend;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transcript.jsonl");
        let brief = |i: u32| serde_json::json!({"iteration": i, "family": "ridge", "score": 53.6});
        let history: Vec<_> = (1..=400).map(brief).collect();
        let mut record = sample("plan", "{}");
        record.request.context = serde_json::json!({
            "iteration": 401,
            "history": history,
            "clock": {"time_left_seconds": 60.0, "runtimes": (1..=400).map(|i| (i, 1.5)).collect::<Vec<_>>()},
        })
        .into();
        record.request_hash = record.request.hash();
        let asked = record.request.clone();
        let mut t = Transcript::open(&path, Redactor::default()).unwrap();
        t.append(record).unwrap();
        drop(t);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 2_000, "one line of {size} bytes: the history went in whole");
        let records = read(&path).unwrap();
        let kept = &records[0].request.context;
        assert_eq!(kept["history"]["iterations"], 400);
        assert_eq!(kept["clock"]["runtimes"]["iterations"], 400);
        assert_eq!(kept["iteration"], 401);
        assert_eq!(records[0].request.clone().kept(), records[0].request, "keeping twice changes nothing");

        // Replay matches the whole request it is asked, and tells where the history departs.
        let replay = ReplayBackend::new(records);
        let mut changed = asked.clone();
        std::sync::Arc::make_mut(&mut changed.context)["history"][399]["score"] = serde_json::json!(53.7);
        let Err(BackendError::ReplayMismatch(divergence)) = replay.complete(&changed).await else {
            panic!("a different history was answered");
        };
        assert!(divergence.field.starts_with("context.history.sha256"), "{}", divergence.field);
        assert_eq!(replay.complete(&asked).await.unwrap().content, "{}");
    }

    #[test]
    fn append_read_and_redact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transcript.jsonl");
        let mut t = Transcript::open(&path, Redactor::new([Secret::new("sk-secret-value-123")])).unwrap();
        t.append(sample("plan", "{}")).unwrap();
        t.append(sample("train", "leaked sk-secret-value-123")).unwrap();
        drop(t);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("sk-secret-value-123"));
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].seq, 1);
        assert_eq!(records[1].reply.as_ref().unwrap().content, "leaked ****");
        // Reopening continues the sequence.
        let mut t = Transcript::open(&path, Redactor::default()).unwrap();
        t.append(sample("infer", "{}")).unwrap();
        assert_eq!(read(&path).unwrap()[2].seq, 2);
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        let line = serde_json::to_string(&sample("plan", "{}")).unwrap();
        std::fs::write(&path, format!("{line}\n{}", &line[..line.len() / 2])).unwrap();
        assert_eq!(read(&path).unwrap().len(), 1);
        std::fs::write(&path, format!("{}\n{line}\n", &line[..10])).unwrap();
        assert!(read(&path).is_err());
    }
}
