//! `loop-runner serve`: a dashboard and a REST API over a runs directory, made from what runs
//! write (journal, git snapshots, report) each time it is asked, never a copy of it.
//!
//! Loopback by default; any other bind needs a token, checked on every request (the event stream
//! too). Run ids are checked against a strict pattern and must name a run directory directly
//! under the runs directory; nothing under `holdout/` is ever read.

mod api;
mod launch;
mod pages;
mod predict;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::config::SandboxConfig;
use crate::error::UserError;
use crate::run_dir::RunDir;
use crate::sandbox::Sandbox;

/// Opens the sandbox a run recorded (predictions run in it).
pub type SandboxOpener = Arc<dyn Fn(&SandboxConfig) -> anyhow::Result<Arc<dyn Sandbox>> + Send + Sync>;

/// What the server needs.
pub struct ServeConfig {
    pub runs_dir: PathBuf,
    pub bind: SocketAddr,
    /// Required on every request when set.
    pub token: Option<String>,
    pub launch: LaunchConfig,
    pub open_sandbox: SandboxOpener,
}

/// How runs are started from the server: each is `loop-runner run` in a process of its own, so a
/// run that crashes never takes the server with it, and a run started here is the same thing as
/// one started from a shell (`status`, `resume`, `audit` work on both).
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// The `loop-runner` binary.
    pub exe: PathBuf,
    /// A config file every started run gets (`run --config`); which agent and server it uses is
    /// the server's choice, never a request's.
    pub run_config: Option<PathBuf>,
    /// The largest upload (and prediction request) accepted, in bytes.
    pub max_upload: u64,
    /// Runs started here that may go at once.
    pub max_running: usize,
    /// The largest budget a request may ask for.
    pub max_budget: std::time::Duration,
}

pub(crate) struct AppState {
    runs_dir: PathBuf,
    /// sha256 of the token: compared by hash, so the comparison's time says nothing about it.
    token_sha256: Option<String>,
    launch: LaunchConfig,
    /// Runs this server started that are still going: run id → pid.
    started: std::sync::Mutex<std::collections::BTreeMap<String, u32>>,
    /// Runs (and the pid driving them) already sent their SIGINT.
    stopping: std::sync::Mutex<std::collections::BTreeSet<(String, u32)>>,
    open_sandbox: SandboxOpener,
    /// Predictions run one at a time: each is a sandboxed Python with the memory that takes.
    predicting: tokio::sync::Semaphore,
}

/// The router (the server's, and tests').
pub fn router(config: &ServeConfig) -> Router {
    let state = Arc::new(AppState {
        runs_dir: config.runs_dir.clone(),
        token_sha256: config.token.as_deref().map(|t| crate::fsx::sha256_bytes(t.as_bytes())),
        launch: config.launch.clone(),
        started: Default::default(),
        stopping: Default::default(),
        open_sandbox: config.open_sandbox.clone(),
        predicting: tokio::sync::Semaphore::new(1),
    });
    let body_limit = usize::try_from(config.launch.max_upload).unwrap_or(usize::MAX);
    Router::new()
        .route("/", get(pages::runs))
        .route("/new", get(pages::new_run))
        .route("/compare", get(pages::compare))
        .route("/runs/{id}", get(pages::run))
        .route("/runs/{id}/iterations/{n}", get(pages::iteration))
        .route("/openapi.json", get(api::openapi))
        .route("/api/runs", get(api::list_runs).post(launch::start_run))
        .route("/api/runs/{id}", get(api::get_run))
        .route("/api/runs/{id}/stop", post(launch::stop_run))
        .route("/api/runs/{id}/predict", post(predict::predict))
        .route("/api/runs/{id}/iterations/{n}", get(api::get_iteration))
        .route("/api/runs/{id}/events", get(api::events))
        .route("/api/runs/{id}/plot.svg", get(api::plot))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

/// Serves until the process is stopped.
pub async fn serve(config: ServeConfig, ready: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.bind).await.map_err(|e| {
        crate::error::UserError::setup(format!("cannot listen on {}: {e}", config.bind))
            .with_hint("pick another port with --bind 127.0.0.1:PORT")
    })?;
    launch::clean_staging(&config.runs_dir);
    ready(listener.local_addr()?);
    axum::serve(listener, router(&config)).await?;
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

    /// A problem with what was sent (a [`UserError`] anywhere in the chain) is the caller's to
    /// fix: 400 for bad usage, 422 for input that does not work, with the hints; anything else is
    /// the server's.
    pub(crate) fn from_anyhow(e: &anyhow::Error) -> Self {
        let user = e.chain().find_map(|c| c.downcast_ref::<UserError>());
        let Some(user) = user else {
            return Self::internal(format!("{e:#}"));
        };
        let status = if user.exit_code == crate::exit_code::USAGE {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let mut message = user.message.clone();
        for hint in crate::error::hints_for(e) {
            message.push_str(&format!(" (hint: {hint})"));
        }
        Self::new(status, message)
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
        let state = AppState {
            runs_dir: dir.path().into(),
            token_sha256: None,
            launch: LaunchConfig {
                exe: "loop-runner".into(),
                run_config: None,
                max_upload: 1,
                max_running: 1,
                max_budget: std::time::Duration::from_secs(1),
            },
            started: Default::default(),
            stopping: Default::default(),
            open_sandbox: Arc::new(|_| anyhow::bail!("no sandbox in this test")),
            predicting: tokio::sync::Semaphore::new(1),
        };
        assert!(run_dir(&state, "ok-1").is_ok());
        for bad in ["..", "../etc", "a/b", ".hidden", "", "x%2F..", "a\\b"] {
            assert_eq!(run_dir(&state, bad).err().map(|e| e.status), Some(StatusCode::BAD_REQUEST), "{bad}");
        }
        assert_eq!(run_dir(&state, "missing").err().map(|e| e.status), Some(StatusCode::NOT_FOUND));
    }
}
