//! `loop-runner serve`: a dashboard and a REST API over a runs directory, made from what runs
//! write (journal, git snapshots, report) each time it is asked, never a copy of it.
//!
//! Loopback by default; any other bind needs a token, checked on every request (the event stream
//! too). Run ids are checked against a strict pattern and must name a run directory directly
//! under the runs directory; nothing under `holdout/` is ever read.

mod api;
mod pages;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::run_dir::RunDir;

/// What the server needs.
pub struct ServeConfig {
    pub runs_dir: PathBuf,
    pub bind: SocketAddr,
    /// Required on every request when set.
    pub token: Option<String>,
}

pub(crate) struct AppState {
    runs_dir: PathBuf,
    /// sha256 of the token: compared by hash, so the comparison's time says nothing about it.
    token_sha256: Option<String>,
}

/// The router over `runs_dir` (the server's, and tests').
pub fn router(runs_dir: &Path, token: Option<&str>) -> Router {
    let state = Arc::new(AppState {
        runs_dir: runs_dir.to_path_buf(),
        token_sha256: token.map(|t| crate::fsx::sha256_bytes(t.as_bytes())),
    });
    Router::new()
        .route("/", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/iterations/{n}", get(pages::iteration))
        .route("/openapi.json", get(api::openapi))
        .route("/api/runs", get(api::list_runs))
        .route("/api/runs/{id}", get(api::get_run))
        .route("/api/runs/{id}/iterations/{n}", get(api::get_iteration))
        .route("/api/runs/{id}/events", get(api::events))
        .route("/api/runs/{id}/plot.svg", get(api::plot))
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Serves until the process is stopped.
pub async fn serve(config: ServeConfig, ready: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.bind).await.map_err(|e| {
        crate::error::UserError::setup(format!("cannot listen on {}: {e}", config.bind))
            .with_hint("pick another port with --bind 127.0.0.1:PORT")
    })?;
    ready(listener.local_addr()?);
    axum::serve(listener, router(&config.runs_dir, config.token.as_deref())).await?;
    Ok(())
}

/// `Authorization: Bearer <token>`, or `?token=<token>` (what the pages and `EventSource`, which
/// cannot set headers, use).
async fn require_token(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token_sha256 else {
        return next.run(request).await;
    };
    let from_header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let from_query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")).map(str::to_string));
    let given = from_header.or(from_query);
    if given.is_some_and(|t| &crate::fsx::sha256_bytes(t.as_bytes()) == expected) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a token is required: `Authorization: Bearer TOKEN` or `?token=TOKEN` (serve printed it)",
        )
        .into_response()
    }
}

/// An error as JSON: `{"error": "..."}` with its status.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// The run `id` names: letters, digits, `-`, `_`, `.`, not starting with a dot, a directory
/// directly under the runs directory that has a journal.
pub(crate) fn run_dir(state: &AppState, id: &str) -> Result<RunDir, ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("`{id}` is not a run id")));
    }
    let root = state.runs_dir.join(id);
    if !root.join("journal.jsonl").is_file() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no run `{id}`")));
    }
    Ok(RunDir { root })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_cannot_leave_the_runs_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ok-1/")).unwrap();
        std::fs::write(dir.path().join("ok-1/journal.jsonl"), "").unwrap();
        let state = AppState { runs_dir: dir.path().into(), token_sha256: None };
        assert!(run_dir(&state, "ok-1").is_ok());
        for bad in ["..", "../etc", "a/b", ".hidden", "", "x%2F..", "a\\b"] {
            assert_eq!(run_dir(&state, bad).err().map(|e| e.status), Some(StatusCode::BAD_REQUEST), "{bad}");
        }
        assert_eq!(run_dir(&state, "missing").err().map(|e| e.status), Some(StatusCode::NOT_FOUND));
    }
}
