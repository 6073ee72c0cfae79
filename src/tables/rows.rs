//! One run's journal (and its git snapshots) as rows of the five tables. Pure apart from reading
//! the run directory; [`super::frames`] turns the rows into typed columns.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::journal::{self, Entry, Event, IterationRecord, OutcomeBrief};
use crate::report::ReportData;
use crate::run_dir::RunDir;
use crate::sandbox::Exit;

/// Milliseconds since the Unix epoch, from a journal timestamp.
pub type Millis = i64;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub task: String,
    pub metric: String,
    pub higher_is_better: bool,
    pub agent: String,
    pub model: String,
    pub sandbox: String,
    /// `finished`, or `unfinished` (crashed, killed or still going: `resume` continues it).
    pub state: String,
    pub stop_reason: Option<String>,
    /// `holdout` or `cv`.
    pub validation: String,
    pub folds: Option<i64>,
    pub best_iteration: Option<i64>,
    pub validation_score: Option<f64>,
    pub final_iteration: Option<i64>,
    pub test_score: Option<f64>,
    pub iterations: i64,
    pub failed_iterations: i64,
    pub budget_seconds: Option<f64>,
    pub wall_seconds: f64,
    pub cost_usd: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub loop_runner_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IterationRow {
    pub run_id: String,
    pub iteration: i64,
    pub parent: Option<i64>,
    pub operation: String,
    /// Why the search chose this node and operation.
    pub reason: String,
    /// `succeeded`, `failed`, `cut` (stopped by the budget or Ctrl-C) or `skipped` (an ensemble
    /// with nothing to blend).
    pub status: String,
    /// For a failed iteration: the step it failed at.
    pub failed_step: Option<String>,
    /// Why it failed, was cut or skipped.
    pub status_detail: Option<String>,
    pub family: String,
    /// `{"name": "value", ...}` as the agent wrote the values.
    pub hyperparameters: String,
    pub representation: Option<String>,
    pub numeric: Option<String>,
    pub categorical: Option<String>,
    pub missing: Option<String>,
    /// Comma-separated.
    pub drop_columns: Option<String>,
    pub split_id: i64,
    pub validation_score: Option<f64>,
    /// What orders equal scores (the log loss of the same probabilities; classification only).
    pub validation_tiebreak: Option<f64>,
    /// The best validation score of the run (on its last split).
    pub is_best: bool,
    /// The model scored on the test split: the refit of the best, or the best itself.
    pub is_final: bool,
    /// Scored on the test split only when final (and, with a refit, for the selected one).
    pub test_score: Option<f64>,
    pub seconds: f64,
    pub script_seconds: f64,
    pub runner_seconds: f64,
    pub cost_usd: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub commit: Option<String>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRow {
    pub run_id: String,
    pub iteration: i64,
    pub step: String,
    pub ok: bool,
    pub seconds: f64,
    pub attempts: i64,
    pub calls: Option<i64>,
    pub cost_usd: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub detail: String,
    pub finished_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScriptRunRow {
    pub run_id: String,
    pub iteration: i64,
    pub step: String,
    pub script: String,
    /// `exited`, `killed` or `crashed`.
    pub exit: String,
    pub exit_code: Option<i64>,
    /// Exit code 0 and no limit hit.
    pub ok: bool,
    pub limit_hit: Option<String>,
    pub crash: Option<String>,
    pub wall_seconds: f64,
    pub peak_memory_bytes: i64,
    pub stdout_dropped_bytes: i64,
    pub stderr_dropped_bytes: i64,
    pub finished_at: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotRow {
    pub run_id: String,
    pub iteration: i64,
    pub tag: String,
    pub commit: String,
    pub tree: String,
    /// Whether `best` moved to it when it was committed.
    pub best_when_committed: bool,
    /// Whether git's `best` branch points at it now (the final model).
    pub is_best: bool,
    pub committed_at: Option<Millis>,
    /// From git: the commit message, its number of files and their total size. Absent when the
    /// repository no longer has the commit.
    pub message: Option<String>,
    pub files: Option<i64>,
    pub bytes: Option<i64>,
}

/// The rows one run contributes.
#[derive(Debug, Default)]
pub struct RunRows {
    pub run: Option<RunRow>,
    pub iterations: Vec<IterationRow>,
    pub steps: Vec<StepRow>,
    pub script_runs: Vec<ScriptRunRow>,
    pub snapshots: Vec<SnapshotRow>,
}

/// Reads a run directory into rows: the journal (refusing a damaged one, dropping a torn tail as
/// every reader does) and the commits its snapshots name.
pub fn read_run(dir: &RunDir) -> anyhow::Result<RunRows> {
    let entries = journal::read(&dir.journal())?;
    if !matches!(entries.first().map(|e| &e.event), Some(Event::RunStarted { .. })) {
        anyhow::bail!(
            crate::error::UserError::setup(format!(
                "`{}` does not start with a run_started entry: it is not a loop-runner journal",
                dir.journal().display()
            ))
            .with_hint("pass run directories made by `loop-runner run`")
        );
    }
    let report = ReportData::from_entries(dir, &entries);
    let mut rows = from_entries(&dir.id(), &entries, &report);
    let workspace = crate::snapshot::Workspace::open(&dir.workspace()).ok();
    let best = workspace.as_ref().and_then(|w| w.best()).map(|oid| oid.to_string());
    for snapshot in &mut rows.snapshots {
        snapshot.is_best = best.as_deref() == Some(snapshot.commit.as_str());
        let meta = workspace.as_ref().and_then(|w| w.commit_meta(&snapshot.commit).ok());
        if let Some(meta) = meta {
            snapshot.message = Some(meta.message);
            snapshot.files = Some(meta.files as i64);
            snapshot.bytes = Some(meta.bytes as i64);
        }
    }
    Ok(rows)
}

/// The rows of one run's journal entries (git metadata left empty).
pub fn from_entries(run_id: &str, entries: &[Entry], report: &ReportData) -> RunRows {
    let mut rows = RunRows::default();
    let mut started_at: BTreeMap<u32, Millis> = BTreeMap::new();
    let mut reasons: BTreeMap<u32, String> = BTreeMap::new();
    let mut commits: BTreeMap<u32, String> = BTreeMap::new();
    let mut tokens: BTreeMap<u32, (i64, i64)> = BTreeMap::new();
    let mut folds = None;
    let mut run_started = None;
    let mut run_finished = None;
    let mut stop_reason = None;
    for entry in entries {
        let at = millis(&entry.at);
        match &entry.event {
            Event::RunStarted { .. } => run_started = run_started.or(at),
            Event::SplitMade { folds: f, .. } => folds = f.map(i64::from),
            Event::IterationStarted { iteration, reason, .. } => {
                at.map(|t| started_at.insert(*iteration, t));
                reasons.insert(*iteration, reason.clone());
            }
            Event::StepFinished {
                iteration,
                step,
                seconds,
                attempts,
                calls,
                cost_usd,
                prompt_tokens,
                completion_tokens,
                ok,
                detail,
            } => {
                let t = tokens.entry(*iteration).or_default();
                t.0 += *prompt_tokens as i64;
                t.1 += *completion_tokens as i64;
                rows.steps.push(StepRow {
                    run_id: run_id.to_string(),
                    iteration: (*iteration).into(),
                    step: step.clone(),
                    ok: *ok,
                    seconds: *seconds,
                    attempts: (*attempts).into(),
                    calls: calls.map(i64::from),
                    cost_usd: *cost_usd,
                    prompt_tokens: *prompt_tokens as i64,
                    completion_tokens: *completion_tokens as i64,
                    detail: detail.clone(),
                    finished_at: at,
                });
            }
            Event::ScriptRun { iteration, step, script, outcome } => {
                rows.script_runs.push(script_run(run_id, *iteration, step, script, outcome, at));
            }
            Event::IterationFinished { record, .. } => {
                let n = record.iteration;
                rows.iterations.retain(|r| r.iteration != i64::from(n));
                rows.iterations.push(iteration_row(run_id, record, started_at.get(&n).copied(), at));
            }
            Event::SnapshotCommitted { iteration, commit, tree, tag, best } => {
                commits.insert(*iteration, commit.clone());
                rows.snapshots.retain(|s| s.iteration != i64::from(*iteration));
                rows.snapshots.push(SnapshotRow {
                    run_id: run_id.to_string(),
                    iteration: (*iteration).into(),
                    tag: tag.clone(),
                    commit: commit.clone(),
                    tree: tree.clone(),
                    best_when_committed: *best,
                    is_best: false,
                    committed_at: at,
                    message: None,
                    files: None,
                    bytes: None,
                });
            }
            Event::RunFinished { reason, .. } => {
                run_finished = at;
                stop_reason = Some(reason.clone());
            }
            _ => {}
        }
    }
    let best = report.best_iteration.map(i64::from);
    let last = report.final_iteration.map(i64::from).or(best);
    for row in &mut rows.iterations {
        let n = row.iteration as u32;
        row.reason = reasons.remove(&n).unwrap_or_default();
        row.commit = commits.get(&n).cloned();
        row.is_best = Some(row.iteration) == best;
        row.is_final = Some(row.iteration) == last;
        row.test_score = report.test_scores.get(&n).copied().flatten();
        if let Some((p, c)) = tokens.get(&n) {
            row.prompt_tokens = *p;
            row.completion_tokens = *c;
        }
    }
    let failed = rows.iterations.iter().filter(|r| r.status == "failed").count();
    rows.run = Some(RunRow {
        run_id: run_id.to_string(),
        task: report.task.clone(),
        metric: report.metric.clone(),
        higher_is_better: report.higher_is_better,
        agent: report.agent.clone(),
        model: report.model.clone(),
        sandbox: report.sandbox.clone(),
        state: if stop_reason.is_some() { "finished" } else { "unfinished" }.into(),
        stop_reason,
        validation: if folds.is_some() { "cv" } else { "holdout" }.into(),
        folds,
        best_iteration: report.best_iteration.map(i64::from),
        validation_score: report.validation_score,
        final_iteration: report.final_iteration.or(report.best_iteration).map(i64::from),
        test_score: report.test_score,
        iterations: rows.iterations.len() as i64,
        failed_iterations: failed as i64,
        budget_seconds: report.budget_seconds,
        wall_seconds: report.wall_seconds,
        cost_usd: report.cost_usd,
        prompt_tokens: tokens.values().map(|t| t.0).sum(),
        completion_tokens: tokens.values().map(|t| t.1).sum(),
        started_at: run_started,
        finished_at: run_finished,
        loop_runner_version: report.loop_runner_version.clone(),
    });
    rows
}

fn iteration_row(
    run_id: &str,
    record: &IterationRecord,
    started_at: Option<Millis>,
    finished_at: Option<Millis>,
) -> IterationRow {
    let (status, failed_step, status_detail) = status_parts(&record.status);
    let hyperparameters: serde_json::Map<String, serde_json::Value> = record
        .hyperparameters
        .iter()
        .map(|h| (h.name.clone(), serde_json::Value::String(h.value.clone())))
        .collect();
    let rep = record.representation.as_ref();
    let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
    IterationRow {
        run_id: run_id.to_string(),
        iteration: record.iteration.into(),
        parent: record.parent.map(i64::from),
        operation: record.operation.name().to_string(),
        reason: String::new(),
        status,
        failed_step,
        status_detail,
        family: record.family.clone(),
        hyperparameters: serde_json::Value::Object(hyperparameters).to_string(),
        representation: rep.map(|r| r.description.clone()),
        numeric: rep.map(|r| name(serde_json::json!(r.numeric))),
        categorical: rep.map(|r| name(serde_json::json!(r.categorical))),
        missing: rep.map(|r| name(serde_json::json!(r.missing))),
        drop_columns: rep.map(|r| r.drop_columns.join(",")),
        split_id: record.split_id.into(),
        validation_score: record.validation_score,
        validation_tiebreak: record.validation_tiebreak,
        is_best: false,
        is_final: false,
        test_score: None,
        seconds: record.seconds,
        script_seconds: record.script_seconds,
        runner_seconds: (record.seconds - record.script_seconds).max(0.0),
        cost_usd: record.cost_usd,
        prompt_tokens: 0,
        completion_tokens: 0,
        commit: None,
        started_at,
        finished_at,
    }
}

/// `succeeded`; `failed at <step>: <why>`; `cut: <why>`; `skipped: <why>`.
fn status_parts(status: &str) -> (String, Option<String>, Option<String>) {
    if let Some(rest) = status.strip_prefix("failed at ") {
        let (step, why) = rest.split_once(": ").unwrap_or((rest, ""));
        return ("failed".into(), Some(step.to_string()), Some(why.to_string()));
    }
    match status.split_once(": ") {
        Some((word, why)) if word.chars().all(|c| c.is_ascii_lowercase()) => {
            (word.to_string(), None, Some(why.to_string()))
        }
        _ if status.starts_with("failed") => ("failed".into(), None, Some(status.to_string())),
        _ => (status.to_string(), None, None),
    }
}

fn script_run(
    run_id: &str,
    iteration: u32,
    step: &str,
    script: &str,
    outcome: &OutcomeBrief,
    at: Option<Millis>,
) -> ScriptRunRow {
    let (exit, exit_code, crash) = match &outcome.exit {
        Exit::Code(c) => ("exited", Some(i64::from(*c)), None),
        Exit::Killed => ("killed", None, None),
        Exit::Crashed(why) => ("crashed", None, Some(why.clone())),
    };
    let limit_hit = outcome.limit.map(|l| serde_json::json!(l).as_str().unwrap_or_default().to_string());
    ScriptRunRow {
        run_id: run_id.to_string(),
        iteration: iteration.into(),
        step: step.to_string(),
        script: script.to_string(),
        exit: exit.into(),
        exit_code,
        ok: exit_code == Some(0) && limit_hit.is_none(),
        limit_hit,
        crash,
        wall_seconds: outcome.wall_seconds,
        peak_memory_bytes: outcome.peak_memory_bytes as i64,
        stdout_dropped_bytes: outcome.stdout_dropped as i64,
        stderr_dropped_bytes: outcome.stderr_dropped as i64,
        finished_at: at,
    }
}

fn millis(at: &str) -> Option<Millis> {
    let t = humantime::parse_rfc3339(at).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_split_into_step_and_reason() {
        assert_eq!(
            status_parts("failed at train: exit code 1: ValueError: x: y"),
            ("failed".into(), Some("train".into()), Some("exit code 1: ValueError: x: y".into()))
        );
        assert_eq!(
            status_parts("cut: the budget ended"),
            ("cut".into(), None, Some("the budget ended".into()))
        );
        assert_eq!(status_parts("succeeded"), ("succeeded".into(), None, None));
        assert_eq!(
            status_parts("skipped: the greedy selection kept only iter-0003"),
            ("skipped".into(), None, Some("the greedy selection kept only iter-0003".into()))
        );
    }

    #[test]
    fn journal_timestamps_become_milliseconds() {
        assert_eq!(millis("1970-01-01T00:00:01.250Z"), Some(1250));
        assert_eq!(millis("not a time"), None);
    }
}
