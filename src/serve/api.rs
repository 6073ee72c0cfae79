//! `/api/...` and `/openapi.json`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, AppState, run_dir};
use crate::journal::{self, Event};
use crate::report::ReportData;
use crate::tables::rows;

pub(super) async fn list_runs(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let runs_dir = state.runs_dir.clone();
    let runs = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<rows::RunRow>> {
        let mut out = Vec::new();
        for dir in crate::tables::find_runs(&[], &runs_dir)? {
            // A run that cannot be read (a damaged journal) is left out of the list, not fatal.
            match rows::read_run(&dir) {
                Ok(r) => out.extend(r.run.map(|mut run| {
                    run.state = super::launch::live_state(&dir, run.state == "finished").into();
                    run
                })),
                Err(e) => tracing::warn!(run = %dir.root.display(), "left out of the list: {e:#}"),
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.started_at));
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(runs).into_response())
}

pub(super) async fn get_run(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let dir = run_dir(&state, &id)?;
    let value = tokio::task::spawn_blocking(move || -> anyhow::Result<serde_json::Value> {
        let entries = journal::read(&dir.journal())?;
        let report = ReportData::from_entries(&dir, &entries);
        let mut rows = rows::from_entries(&dir.id(), &entries, &report);
        if let Some(run) = &mut rows.run {
            run.state = super::launch::live_state(&dir, run.state == "finished").into();
        }
        let current = current_activity(&entries);
        Ok(serde_json::json!({
            "run": rows.run,
            "audits": crate::audit::records(&dir),
            "iterations": rows.iterations,
            "steps": report.steps,
            "tree": report.tree(),
            "current": current,
            "last_seq": entries.last().map(|e| e.seq),
        }))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    Ok(Json(value).into_response())
}

/// What the run is doing, from its last entries: the iteration under way and its last step.
fn current_activity(entries: &[journal::Entry]) -> serde_json::Value {
    let mut current: Option<(u32, String)> = None;
    for e in entries {
        match &e.event {
            Event::IterationStarted { iteration, .. } => current = Some((*iteration, "started".into())),
            Event::StepFinished { iteration, step, .. } | Event::ScriptRun { iteration, step, .. } => {
                current = Some((*iteration, format!("{step} done")));
            }
            Event::IterationFinished { iteration, .. }
                if current.as_ref().is_some_and(|c| c.0 == *iteration) =>
            {
                current = None;
            }
            Event::FinalEvaluation { .. } => current = Some((0, "final evaluation".into())),
            Event::RunFinished { .. } => current = None,
            _ => {}
        }
    }
    match current {
        Some((0, what)) => serde_json::json!({ "what": what }),
        Some((n, what)) => serde_json::json!({ "iteration": n, "what": what }),
        None => serde_json::Value::Null,
    }
}

#[derive(Deserialize)]
pub(super) struct DiffQuery {
    /// `parent` (default) or `best`.
    against: Option<String>,
}

pub(super) async fn get_iteration(
    State(state): State<Arc<AppState>>,
    Path((id, n)): Path<(String, u32)>,
    Query(q): Query<DiffQuery>,
) -> Result<Response, ApiError> {
    let dir = run_dir(&state, &id)?;
    let value = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, ApiError> {
        let entries = journal::read(&dir.journal()).map_err(ApiError::internal)?;
        let report = ReportData::from_entries(&dir, &entries);
        let rows = rows::from_entries(&dir.id(), &entries, &report);
        let Some(row) = rows.iterations.iter().find(|r| r.iteration == i64::from(n)) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("run `{}` has no finished iteration {n}", dir.id()),
            ));
        };
        let scripts: Vec<_> = rows.script_runs.iter().filter(|s| s.iteration == i64::from(n)).collect();
        let steps: Vec<_> = rows.steps.iter().filter(|s| s.iteration == i64::from(n)).collect();
        // The agent's answers, as the runner stored them beside the work dir.
        let mut answers = serde_json::Map::new();
        if let Ok(list) = std::fs::read_dir(dir.iteration(n).join("steps")) {
            for entry in list.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().trim_end_matches(".json").to_string();
                if let Some(value) =
                    std::fs::read_to_string(entry.path()).ok().and_then(|t| serde_json::from_str(&t).ok())
                {
                    answers.insert(name, value);
                }
            }
        }
        // What the scripts printed (their tails), in the order they ran.
        let mut logs: Vec<(String, serde_json::Value)> = std::fs::read_dir(dir.iteration(n).join("logs"))
            .map(|list| {
                list.filter_map(Result::ok)
                    .filter_map(|e| {
                        let text = std::fs::read_to_string(e.path()).ok()?;
                        Some((e.file_name().to_string_lossy().to_string(), serde_json::from_str(&text).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        logs.sort_by(|a, b| a.0.cmp(&b.0));
        let logs: Vec<serde_json::Value> = logs.into_iter().map(|(_, v)| v).collect();
        let workspace = crate::snapshot::Workspace::open(&dir.workspace()).ok();
        let mut files = serde_json::Map::new();
        let mut diff = serde_json::Value::Null;
        if let (Some(w), Some(commit)) = (&workspace, &row.commit) {
            for name in ["train.py", "inference.py", "requirements.txt", "metrics.json"] {
                if let Ok(Some(bytes)) = w.file(commit, name) {
                    files.insert(name.into(), String::from_utf8_lossy(&bytes).into_owned().into());
                }
            }
            let against = match q.against.as_deref() {
                Some("best") => {
                    rows.iterations.iter().find(|r| r.is_best).map(|r| (r.iteration, r.commit.clone()))
                }
                _ => row
                    .parent
                    .and_then(|p| rows.iterations.iter().find(|r| r.iteration == p))
                    .map(|r| (r.iteration, r.commit.clone())),
            };
            if let Some((other, Some(other_commit))) = against {
                let text = w.diff(&other_commit, commit).map_err(ApiError::internal)?;
                diff = serde_json::json!({ "against": other, "patch": text });
            }
        }
        Ok(serde_json::json!({
            "iteration": row,
            "script_runs": scripts,
            "steps": steps,
            "answers": answers,
            "logs": logs,
            "files": files,
            "diff": diff,
        }))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(value).into_response())
}

pub(super) async fn plot(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let dir = run_dir(&state, &id)?;
    let svg =
        tokio::task::spawn_blocking(move || ReportData::load(&dir).map(|d| crate::report::svg_plot(&d)))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], svg).into_response())
}

/// The journal as server-sent events, from the start (or after `Last-Event-ID`), following it as
/// it grows: `event: <kind>`, `id: <seq>`, `data: <the entry's JSON>`.
pub(super) async fn events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let dir = run_dir(&state, &id)?;
    let after: Option<u64> =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let path = dir.journal();
    let stream =
        futures_util::stream::unfold((0u64, Vec::<SseEvent>::new()), move |(mut offset, mut pending)| {
            let path = path.clone();
            async move {
                loop {
                    if let Some(event) = pending.pop() {
                        return Some((Ok::<_, Infallible>(event), (offset, pending)));
                    }
                    match journal::read_after(&path, offset) {
                        Ok((entries, next)) if !entries.is_empty() => {
                            offset = next;
                            pending = entries
                                .into_iter()
                                .filter(|e| after.is_none_or(|a| e.seq > a))
                                .map(|e| {
                                    let kind = serde_json::to_value(&e.event)
                                        .ok()
                                        .and_then(|v| v["kind"].as_str().map(str::to_string))
                                        .unwrap_or_default();
                                    SseEvent::default()
                                        .event(kind)
                                        .id(e.seq.to_string())
                                        .data(serde_json::to_string(&e).expect("entries serialize"))
                                })
                                .rev()
                                .collect();
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("following `{}`: {e}", path.display()),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}
