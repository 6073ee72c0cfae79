//! `report/audits.jsonl`: one line per `audit`, so the result can be shown later (the run's page
//! in `serve`) without re-running it. Appended, never rewritten; a damaged line is skipped.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::Check;
use crate::run_dir::RunDir;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub at: String,
    pub rev: String,
    pub retrain: bool,
    pub passed: bool,
    pub checks: Vec<RecordedCheck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedCheck {
    pub what: String,
    pub recorded: String,
    pub now: String,
    pub ok: bool,
}

impl RunDir {
    pub fn audits(&self) -> std::path::PathBuf {
        self.report().join("audits.jsonl")
    }
}

/// Appends the outcome of one audit.
pub fn record(dir: &RunDir, rev: &str, retrain: bool, checks: &[Check]) -> std::io::Result<()> {
    let record = AuditRecord {
        at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        rev: rev.into(),
        retrain,
        passed: checks.iter().all(|c| c.ok),
        checks: checks
            .iter()
            .map(|c| RecordedCheck {
                what: c.what.clone(),
                recorded: c.recorded.clone(),
                now: c.now.clone(),
                ok: c.ok,
            })
            .collect(),
    };
    let mut line = serde_json::to_vec(&record).expect("records serialize");
    line.push(b'\n');
    let mut file = fs_err::OpenOptions::new().create(true).append(true).open(dir.audits())?;
    file.write_all(&line)?;
    file.sync_all()
}

/// Every recorded audit, oldest first.
pub fn records(dir: &RunDir) -> Vec<AuditRecord> {
    std::fs::read_to_string(dir.audits())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}
