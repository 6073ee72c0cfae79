//! The run journal: append-only JSON lines, each with a sequence number and a checksum. It is
//! the source of truth for `status`, `resume` and the report.
//!
//! Every entry is written before `append` returns, so a killed runner loses none. Entries that
//! record something that cannot be done again (a finished iteration, a commit, a paid agent
//! call, the accounting of time) are also synced to disk; the rest (a script's outcome, a free
//! step, the start of an iteration) belong to an iteration that a machine crash would make
//! `resume` run again, and the next synced entry carries them to disk with it.
//!
//! A crash can leave a torn last line; reading drops it (and counts it). A damaged line before
//! the end means the file was edited: reading refuses it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sandbox::{Exit, LimitKind, Outcome};

/// The journal format this build writes.
pub const FORMAT: u32 = 1;

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        format: u32,
        run_id: String,
        task: String,
        budget_seconds: Option<f64>,
        max_iterations: u32,
        agent: String,
        model: String,
        sandbox: String,
        /// Isolation layers in force (process sandbox) or the WASI target.
        #[serde(default)]
        sandbox_layers: Vec<String>,
        /// Protections that are off because a layer was waived, in words.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        sandbox_waived: Vec<String>,
        /// Models without a price: their calls count as $0 and no spend cap can hold them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unpriced_models: Vec<String>,
        loop_runner_version: String,
        prompts_sha256: String,
        /// sha256 of the step schemas made for this task.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        schemas_sha256: String,
    },
    /// A (re)start of the process driving the run. `started_at` is when the command started
    /// (the budget counts from then).
    Session {
        started_at: String,
        elapsed_before_seconds: f64,
    },
    /// Written when nothing else was for a while, so a run killed during a long script is
    /// charged for that time when it resumes.
    Heartbeat,
    SplitMade {
        split_id: u32,
        validation_fraction: f64,
        stratify: bool,
        seed: u64,
        train_rows: usize,
        validation_rows: usize,
        /// Why the split is as it is (prompts quote it; resume and replay restore it).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        rationale: String,
        /// Cross-validation folds (absent: a held-out split).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        folds: Option<u32>,
    },
    IterationStarted {
        iteration: u32,
        /// The node it builds on, and how (absent in older journals: a draft).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<u32>,
        #[serde(default)]
        operation: crate::search::Operation,
        /// Why the search chose it.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
    },
    /// Something about the agent's server worth recording: a step that fell back to prompt
    /// mode, a schema keyword the server refused, a prompt shortened to fit the context.
    AgentNotice {
        iteration: u32,
        step: String,
        text: String,
    },
    /// What an exploration script printed (kept for later prompts).
    Finding {
        iteration: u32,
        text: String,
    },
    StepFinished {
        iteration: u32,
        step: String,
        seconds: f64,
        attempts: u32,
        /// Backend calls made (retries included); absent in older journals.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        calls: Option<u32>,
        cost_usd: f64,
        prompt_tokens: u64,
        completion_tokens: u64,
        ok: bool,
        detail: String,
    },
    ScriptRun {
        iteration: u32,
        step: String,
        script: String,
        outcome: OutcomeBrief,
    },
    IterationFinished {
        iteration: u32,
        record: IterationRecord,
    },
    SnapshotCommitted {
        iteration: u32,
        commit: String,
        tree: String,
        tag: String,
        best: bool,
    },
    FinalEvaluation {
        iteration: Option<u32>,
        test_score: Option<f64>,
        detail: String,
        outcome: Option<OutcomeBrief>,
    },
    RunFinished {
        reason: String,
        best_iteration: Option<u32>,
        validation_score: Option<f64>,
        /// The final model's test score (the refit's, when there is one).
        test_score: Option<f64>,
        wall_seconds: f64,
        /// The refit that is the final model (absent: the best iteration is).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        final_iteration: Option<u32>,
    },
}

impl Event {
    /// Whether the entry must be on disk before the run goes on (see the module's notes).
    fn durable(&self) -> bool {
        match self {
            Event::ScriptRun { .. }
            | Event::IterationStarted { .. }
            | Event::AgentNotice { .. }
            | Event::Finding { .. } => false,
            Event::StepFinished { cost_usd, prompt_tokens, completion_tokens, .. } => {
                *cost_usd > 0.0 || *prompt_tokens > 0 || *completion_tokens > 0
            }
            _ => true,
        }
    }
}

/// The part of a sandbox outcome worth keeping in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeBrief {
    pub exit: Exit,
    pub limit: Option<LimitKind>,
    pub wall_seconds: f64,
    pub peak_memory_bytes: u64,
    pub stdout_dropped: u64,
    pub stderr_dropped: u64,
}

impl From<&Outcome> for OutcomeBrief {
    fn from(o: &Outcome) -> Self {
        Self {
            exit: o.exit.clone(),
            limit: o.limit,
            wall_seconds: o.wall.as_secs_f64(),
            peak_memory_bytes: o.peak_memory_bytes,
            stdout_dropped: o.stdout.dropped_bytes,
            stderr_dropped: o.stderr.dropped_bytes,
        }
    }
}

/// How an iteration ended. (`Default` is for building records in tests.)
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    pub iteration: u32,
    /// The node it built on (none for a draft) and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    #[serde(default)]
    pub operation: crate::search::Operation,
    /// `succeeded`, or `failed at <step>: <why>`, or `cut: <why>`.
    pub status: String,
    pub family: String,
    pub hyperparameters: Vec<crate::steps::Hyperparameter>,
    pub representation: Option<crate::steps::RepresentOutput>,
    pub split_id: u32,
    pub validation_score: Option<f64>,
    /// What orders equal validation scores ([`crate::metric::Standing`]); absent for metrics
    /// without one and in journals written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_tiebreak: Option<f64>,
    pub next_ideas: Vec<String>,
    /// sha256 of the validation predictions the score was computed from.
    pub predictions_sha256: Option<String>,
    /// `(path, sha256)` of every file the training script left under `model/`.
    pub model_files: Vec<(String, String)>,
    /// Wall seconds from the iteration's start to its snapshot's commit (without the wait for
    /// earlier iterations to be committed first).
    pub seconds: f64,
    pub cost_usd: f64,
    /// Seconds per step.
    pub step_seconds: Vec<(String, f64)>,
    /// Why the analysis of a scored iteration is missing (the score and model still count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_error: Option<String>,
    /// Seconds its scripts ran (the rest of `seconds` went to the agent and the runner).
    #[serde(default)]
    pub script_seconds: f64,
    /// Seconds of those its scored inference took: one run on the validation rows, or every
    /// fold's under cross-validation (what the end of the run expects a test inference to
    /// take, per row). Absent where nothing was scored and in journals written before it was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infer_seconds: Option<f64>,
}

impl IterationRecord {
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded" && self.validation_score.is_some()
    }

    /// How its validation result ranks, if it has one.
    pub fn standing(&self) -> Option<crate::metric::Standing> {
        self.validation_score.map(|s| crate::metric::Standing::new(s, self.validation_tiebreak))
    }

    /// A draft on split 1 that succeeded with `score` (failed without one), for tests.
    #[cfg(test)]
    pub fn for_tests(iteration: u32, score: Option<f64>) -> Self {
        Self {
            iteration,
            status: if score.is_some() { "succeeded" } else { "failed at train: exit 1" }.into(),
            family: "f".into(),
            split_id: 1,
            validation_score: score,
            ..Self::default()
        }
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub at: String,
    pub event: Event,
}

/// The field appended to each entry's JSON object: `{...entry...,"check":"<16 hex>"}`.
const CHECK_FIELD: &str = ",\"check\":\"";

/// The checksum of an entry's JSON text, exactly as written. Computed over the bytes rather than
/// a re-serialization, so entries written before a field was added still verify.
fn checksum(text: &str) -> String {
    crate::fsx::sha256_bytes(text.as_bytes())[..16].to_string()
}

/// One journal line: the entry's JSON with the checksum of that JSON appended as a last field.
fn encode(entry: &Entry) -> String {
    let json = serde_json::to_string(entry).expect("entries serialize");
    let check = checksum(&json);
    format!("{}{CHECK_FIELD}{check}\"}}\n", &json[..json.len() - 1])
}

/// The entry's JSON text and the recorded checksum of a line.
fn split_line(line: &str) -> Option<(String, &str)> {
    let at = line.rfind(CHECK_FIELD)?;
    let check = line[at + CHECK_FIELD.len()..].strip_suffix("\"}")?;
    Some((format!("{}}}", &line[..at]), check))
}

/// An open journal, appending.
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    next_seq: u64,
    last_append: std::time::Instant,
}

impl Journal {
    /// Opens (or creates) the journal, continuing after its last complete entry. A torn tail is
    /// cut off first, so the next entry starts on a line of its own.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let (entries, good_len) = if path.exists() { read_with_len(path)? } else { (Vec::new(), 0) };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(|e| JournalError::Io(path.to_path_buf(), e))?;
        file.set_len(good_len).map_err(|e| JournalError::Io(path.to_path_buf(), e))?;
        let mut journal = Self {
            path: path.to_path_buf(),
            file,
            next_seq: entries.last().map_or(0, |e| e.seq + 1),
            last_append: std::time::Instant::now(),
        };
        use std::io::Seek;
        journal.file.seek(std::io::SeekFrom::End(0)).map_err(|e| JournalError::Io(path.to_path_buf(), e))?;
        Ok(journal)
    }

    /// Appends an event; one that must survive a machine crash is synced before returning.
    pub fn append(&mut self, event: Event) -> Result<Entry, JournalError> {
        let durable = event.durable();
        let entry = Entry {
            seq: self.next_seq,
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            event,
        };
        let text = encode(&entry);
        self.file.write_all(text.as_bytes()).map_err(|e| JournalError::Io(self.path.clone(), e))?;
        if durable {
            self.file.sync_data().map_err(|e| JournalError::Io(self.path.clone(), e))?;
        }
        self.next_seq += 1;
        self.last_append = std::time::Instant::now();
        Ok(entry)
    }

    /// How long since the last entry was written (by this process).
    pub fn idle(&self) -> std::time::Duration {
        self.last_append.elapsed()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal `{0}`")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("journal `{path}` line {line} is damaged ({why}); it was changed after it was written")]
    Damaged { path: PathBuf, line: usize, why: String },
    #[error("journal `{path}` was written by a newer loop-runner (format {found}; this one reads {FORMAT})")]
    Newer { path: PathBuf, found: u32 },
}

/// Reads every complete entry.
pub fn read(path: &Path) -> Result<Vec<Entry>, JournalError> {
    Ok(read_with_len(path)?.0)
}

/// Entries and the byte length of the intact prefix.
fn read_with_len(path: &Path) -> Result<(Vec<Entry>, u64), JournalError> {
    let bytes = fs_err::read(path).map_err(|e| JournalError::Io(path.to_path_buf(), e))?;
    parse(path, &bytes)
}

/// The complete entries written after byte `offset` (the end of an earlier read), and the offset
/// to continue from: for following a journal that is still being written. A line still being
/// written is left for the next read.
pub fn read_after(path: &Path, offset: u64) -> Result<(Vec<Entry>, u64), JournalError> {
    use std::io::{Read, Seek};
    let io = |e| JournalError::Io(path.to_path_buf(), e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    file.seek(std::io::SeekFrom::Start(offset)).map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    let end = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let (entries, len) = parse(path, &bytes[..end])?;
    Ok((entries, offset + len))
}

/// Entries of `bytes` (lines of a journal from its start, or from a line boundary), and how many
/// bytes they took.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<Entry>, u64), JournalError> {
    let mut entries = Vec::new();
    let mut offset = 0usize;
    let mut line_no = 0;
    while offset < bytes.len() {
        line_no += 1;
        let end = bytes[offset..].iter().position(|b| *b == b'\n').map(|i| offset + i);
        let Some(end) = end else {
            // No newline: a torn final write.
            break;
        };
        let text = String::from_utf8_lossy(&bytes[offset..end]);
        let parsed: Result<(Entry, bool), String> = match split_line(&text) {
            None => Err("no checksum".into()),
            Some((json, check)) => serde_json::from_str::<Entry>(&json)
                .map(|e| (e, checksum(&json) == check))
                .map_err(|e| e.to_string()),
        };
        let entry = match parsed {
            Ok((entry, true)) => entry,
            Ok(_) if end + 1 == bytes.len() => break,
            Err(_) if end + 1 == bytes.len() => break,
            Ok(_) => {
                return Err(JournalError::Damaged {
                    path: path.to_path_buf(),
                    line: line_no,
                    why: "checksum mismatch".into(),
                });
            }
            Err(why) => {
                return Err(JournalError::Damaged { path: path.to_path_buf(), line: line_no, why });
            }
        };
        if let Event::RunStarted { format, .. } = &entry.event
            && *format > FORMAT
        {
            return Err(JournalError::Newer { path: path.to_path_buf(), found: *format });
        }
        entries.push(entry);
        offset = end + 1;
    }
    Ok((entries, offset as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(i: u32) -> Event {
        Event::IterationStarted {
            iteration: i,
            parent: None,
            operation: Default::default(),
            reason: String::new(),
        }
    }

    #[test]
    fn append_and_resume_after_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let mut j = Journal::open(&path).unwrap();
        j.append(started(1)).unwrap();
        j.append(started(2)).unwrap();
        drop(j);
        // A crash in the middle of the third write.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"seq\":2,\"at\":\"x\",\"event\":{\"kind\":\"iteration_st");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read(&path).unwrap().len(), 2);
        let mut j = Journal::open(&path).unwrap();
        let e = j.append(started(3)).unwrap();
        assert_eq!(e.seq, 2);
        let entries = read(&path).unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn entries_from_before_a_field_was_added_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        // A run_started entry as an older loop-runner wrote it: no `sandbox_layers`.
        let json = r#"{"seq":0,"at":"2026-01-01T00:00:00.000Z","event":{"kind":"run_started","format":1,"run_id":"r","task":"t","budget_seconds":null,"max_iterations":3,"agent":"builtin","model":"builtin","sandbox":"wasi","loop_runner_version":"0.0.9","prompts_sha256":"x"}}"#;
        let line = format!("{}{CHECK_FIELD}{}\"}}\n", &json[..json.len() - 1], checksum(json));
        std::fs::write(&path, line).unwrap();
        let entries = read(&path).unwrap();
        assert!(
            matches!(&entries[0].event, Event::RunStarted { sandbox_layers, .. } if sandbox_layers.is_empty())
        );
    }

    #[test]
    fn only_what_a_crash_would_have_the_run_redo_goes_unsynced() {
        let step = |cost_usd: f64, prompt_tokens: u64| Event::StepFinished {
            iteration: 1,
            step: "train".into(),
            seconds: 0.1,
            attempts: 1,
            calls: Some(1),
            cost_usd,
            prompt_tokens,
            completion_tokens: 0,
            ok: true,
            detail: String::new(),
        };
        assert!(!started(1).durable());
        assert!(!step(0.0, 0).durable(), "a free step of the built-in agent");
        assert!(step(0.01, 10).durable() && step(0.0, 10).durable(), "a call to a server");
        assert!(Event::Heartbeat.durable(), "the time accounting");
        assert!(
            Event::FinalEvaluation {
                iteration: None,
                test_score: None,
                detail: String::new(),
                outcome: None
            }
            .durable()
        );
    }

    #[test]
    fn an_edited_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let mut j = Journal::open(&path).unwrap();
        j.append(started(1)).unwrap();
        j.append(started(2)).unwrap();
        drop(j);
        let text = std::fs::read_to_string(&path).unwrap().replacen("\"iteration\":1", "\"iteration\":7", 1);
        std::fs::write(&path, text).unwrap();
        assert!(matches!(read(&path), Err(JournalError::Damaged { line: 1, .. })));
    }
}
