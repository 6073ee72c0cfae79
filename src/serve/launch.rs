//! Starting a run from an upload (`POST /api/runs`) and stopping one (`POST /api/runs/{id}/stop`).
//!
//! An upload is checked the way `run` checks a task file and its data before anything is kept:
//! it is staged in a temporary directory under `<runs-dir>/.uploads/`, which is removed on any
//! error. An accepted one becomes `<runs-dir>/.uploads/<run-id>/` (the data and the task file
//! the run records) and the run is `loop-runner run --run-dir <runs-dir>/<run-id>` in a process of
//! its own. `.uploads` starts with a dot, so no run id can name it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, run_dir};
use crate::data::Dataset;
use crate::run_dir::RunDir;
use crate::task::Task;

/// The task fields and run options of `POST /api/runs`, as query parameters; the body is the
/// data (CSV, or Parquet).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StartParams {
    name: String,
    target: String,
    task: Option<String>,
    metric: Option<String>,
    positive: Option<String>,
    description: Option<String>,
    test_fraction: Option<f64>,
    seed: Option<u64>,
    /// `30m`, `6h`, ...
    budget: String,
    iterations: Option<u32>,
    validation: Option<String>,
    jobs: Option<u32>,
    /// `csv` or `parquet` [default: Parquet when the body starts with its magic bytes].
    format: Option<String>,
    /// Sent by the pages along with every request; checked by the token layer already.
    #[serde(rename = "token")]
    _token: Option<String>,
}

/// The task file written for an upload (the same shape `run --task` reads).
#[derive(Serialize)]
struct TaskText<'a> {
    name: &'a str,
    data: &'a str,
    target: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metric: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    positive: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_fraction: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

const UPLOADS: &str = ".uploads";
/// How long a started run has to create its run directory before the request gives up on it.
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) async fn start_run(
    State(state): State<Arc<AppState>>,
    query: Result<Query<StartParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{}; `POST /api/runs` takes the task as query parameters (name, target, budget required; \
                 task, metric, positive, description, test_fraction, seed, iterations, validation, jobs, \
                 format) and the data file as the body",
                e.body_text()
            ),
        )
    })?;
    let body = body.map_err(|e| upload_rejected(&e, state.launch.max_upload))?;
    let options = RunOptions::check(&params, &state)?;
    let format = data_format(&params, &body)?;
    {
        let started = state.started.lock().unwrap_or_else(|p| p.into_inner());
        if started.len() >= state.launch.max_running {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{} run(s) started here are still going (the limit is {}, `serve --max-running`); \
                     stop one or wait for it to finish",
                    started.len(),
                    state.launch.max_running
                ),
            ));
        }
    }
    let runs_dir = state.runs_dir.clone();
    let staged = tokio::task::spawn_blocking(move || stage(&runs_dir, &params, format, &body))
        .await
        .map_err(ApiError::internal)??;
    let (id, upload) = staged;
    let root = state.runs_dir.join(&id);
    let mut command = tokio::process::Command::new(&state.launch.exe);
    command
        .arg("run")
        .arg("--task")
        .arg(upload.join("task.toml"))
        .arg("--run-dir")
        .arg(&root)
        .args(options.args())
        .stdin(std::process::Stdio::null())
        // The run has no business with the server's token.
        .env_remove(crate::env::LOOP_RUNNER_SERVE_TOKEN);
    if let Some(config) = &state.launch.run_config {
        command.arg("--config").arg(config);
    }
    let log = std::fs::File::create(upload.join("output.log")).map_err(ApiError::internal)?;
    command.stdout(log.try_clone().map_err(ApiError::internal)?).stderr(log);
    let mut child = command
        .spawn()
        .map_err(|e| ApiError::internal(format!("cannot start `{}`: {e}", state.launch.exe.display())))?;
    let pid = child.id().unwrap_or(0);
    tracing::info!(run = %id, pid, "started a run from an upload");
    state.started.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), pid);
    // The run appears in the list once its journal exists; a run that fails before that (its
    // sandbox cannot open, say) is reported with what it printed.
    let began = Instant::now();
    let journal = RunDir { root: root.clone() }.journal();
    let early_exit = loop {
        if journal.is_file() {
            break None;
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if began.elapsed() > START_TIMEOUT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if let Some(status) = early_exit {
        state.started.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let output = std::fs::read_to_string(upload.join("output.log")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&upload);
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the run did not start ({status}): {}", tail(&output, 2000)),
        ));
    }
    let reaper = state.clone();
    let reaped = id.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        reaper.started.lock().unwrap_or_else(|p| p.into_inner()).remove(&reaped);
        tracing::info!(run = %reaped, ?status, "a run started here ended");
    });
    let url = format!("/runs/{id}");
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "run_id": id, "url": url, "pid": pid })))
        .into_response())
}

/// What the run is given besides its task.
struct RunOptions {
    budget: String,
    iterations: Option<u32>,
    validation: Option<String>,
    jobs: Option<u32>,
}

impl RunOptions {
    fn check(params: &StartParams, state: &AppState) -> Result<Self, ApiError> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
        let budget = humantime::parse_duration(params.budget.trim())
            .map_err(|e| bad(format!("budget `{}`: {e} (e.g. 30m, 6h)", params.budget)))?;
        if budget.is_zero() {
            return Err(bad("budget: must be more than zero".into()));
        }
        if budget > state.launch.max_budget {
            return Err(bad(format!(
                "budget {} is more than this server allows ({}, `serve --max-budget`)",
                humantime::format_duration(budget),
                humantime::format_duration(state.launch.max_budget)
            )));
        }
        if params.iterations == Some(0) {
            return Err(bad("iterations: must be at least 1".into()));
        }
        if let Some(v) = &params.validation
            && !matches!(v.as_str(), "auto" | "holdout" | "cv")
        {
            return Err(bad(format!("validation `{v}`: use auto, holdout or cv")));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        if let Some(jobs) = params.jobs
            && !(1..=cores).contains(&jobs)
        {
            return Err(bad(format!("jobs {jobs}: this machine has {cores} cores")));
        }
        Ok(Self {
            budget: params.budget.trim().to_string(),
            iterations: params.iterations,
            validation: params.validation.clone(),
            jobs: params.jobs,
        })
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec!["--budget".to_string(), self.budget.clone()];
        if let Some(n) = self.iterations {
            args.extend(["--iterations".into(), n.to_string()]);
        }
        if let Some(v) = &self.validation {
            args.extend(["--validation".into(), v.clone()]);
        }
        if let Some(j) = self.jobs {
            args.extend(["--jobs".into(), j.to_string()]);
        }
        args
    }
}

#[derive(Clone, Copy)]
enum Format {
    Csv,
    Parquet,
}

fn data_format(params: &StartParams, body: &[u8]) -> Result<Format, ApiError> {
    match params.format.as_deref() {
        Some("csv") => Ok(Format::Csv),
        Some("parquet") => Ok(Format::Parquet),
        Some(other) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, format!("format `{other}`: use csv or parquet")))
        }
        None if body.starts_with(b"PAR1") => Ok(Format::Parquet),
        None => Ok(Format::Csv),
    }
}

pub(super) fn upload_rejected(e: &BytesRejection, limit: u64) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the upload is larger than this server accepts ({} MiB, `serve --max-upload`)",
                limit / (1 << 20)
            ),
        )
    } else {
        ApiError::new(e.status(), format!("the request body could not be read: {}", e.body_text()))
    }
}

/// Writes the upload and its task file into a staging directory, checks them as `run` would,
/// and moves them to `.uploads/<run-id>/`. Nothing is left behind on an error.
fn stage(
    runs_dir: &Path,
    params: &StartParams,
    format: Format,
    body: &[u8],
) -> Result<(String, PathBuf), ApiError> {
    if params.name.trim().is_empty() || params.name.len() > 100 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "name: give the task a name of 1 to 100 characters",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body is empty: send the data file as the body",
        ));
    }
    let uploads = runs_dir.join(UPLOADS);
    fs_err::create_dir_all(&uploads).map_err(ApiError::internal)?;
    let staging =
        tempfile::Builder::new().prefix(".staging-").tempdir_in(&uploads).map_err(ApiError::internal)?;
    let data_name = match format {
        Format::Csv => "data.csv",
        Format::Parquet => "data.parquet",
    };
    fs_err::write(staging.path().join(data_name), body).map_err(ApiError::internal)?;
    let text = toml::to_string(&TaskText {
        name: params.name.trim(),
        data: data_name,
        target: &params.target,
        task: params.task.as_deref().filter(|t| !t.is_empty()),
        metric: params.metric.as_deref().filter(|m| !m.is_empty()),
        positive: params.positive.as_deref().filter(|p| !p.is_empty()),
        description: params.description.as_deref().filter(|d| !d.is_empty()),
        test_fraction: params.test_fraction,
        seed: params.seed,
    })
    .map_err(ApiError::internal)?;
    let task_file = staging.path().join("task.toml");
    fs_err::write(&task_file, &text).map_err(ApiError::internal)?;
    // The same checks as `run`: the task's fields, then the data against them (the target
    // column, its kind and metric, rows left after dropping missing targets, the test split).
    let shown = |m: String| m.replace(&staging.path().display().to_string(), "upload");
    let task = Task::parse(&text, &task_file)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, shown(e.to_string())))?;
    Dataset::prepare(&task).map_err(|e| {
        let mut message = shown(e.message.clone());
        if let Some(hint) = &e.hint {
            message.push_str(&format!(" (hint: {hint})"));
        }
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    })?;
    // The run id is taken now: not a run directory, not another upload.
    let root = RunDir::fresh_root(runs_dir, &task.name, |p| {
        p.exists() || p.file_name().is_some_and(|n| uploads.join(n).exists())
    });
    let id = root.file_name().expect("a fresh root has a name").to_string_lossy().to_string();
    let kept = uploads.join(&id);
    let staged = staging.keep();
    fs_err::rename(&staged, &kept).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        ApiError::internal(e)
    })?;
    // The task file names its data relative to itself, so the move keeps it valid.
    Ok((id, kept))
}

/// `POST /api/runs/{id}/stop`: SIGINT to the process driving the run, as Ctrl-C in its terminal
/// would: the loop stops, the best iteration is scored on the test split, the report is written.
pub(super) async fn stop_run(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let dir = run_dir(&state, &id)?;
    let finished = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || crate::journal::read(&dir.journal()))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
            .iter()
            .any(|e| matches!(e.event, crate::journal::Event::RunFinished { .. }))
    };
    if finished {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("run `{id}` has finished")));
    }
    match dir.driver() {
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run `{id}` is not running (it finished, or it was interrupted: `loop-runner resume` continues it)"
            ),
        )),
        Some(0) => {
            Err(ApiError::new(StatusCode::CONFLICT, format!("run `{id}` is just starting; try again")))
        }
        Some(pid) => {
            // A second SIGINT aborts a run at once (Ctrl-C twice), skipping the final evaluation:
            // a repeated stop is answered without one.
            if !state.stopping.lock().unwrap_or_else(|p| p.into_inner()).insert((id.clone(), pid)) {
                return Ok((
                    StatusCode::ACCEPTED,
                    Json(serde_json::json!({ "run_id": id, "stopping": true, "pid": pid })),
                )
                    .into_response());
            }
            let target = rustix::process::Pid::from_raw(pid as i32)
                .ok_or_else(|| ApiError::internal(format!("run `{id}`: bad pid {pid} in its lock file")))?;
            rustix::process::kill_process(target, rustix::process::Signal::INT).map_err(|e| {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("cannot signal process {pid} driving run `{id}`: {e}"),
                )
            })?;
            tracing::info!(run = %id, pid, "asked to stop");
            Ok((
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "run_id": id, "stopping": true, "pid": pid })),
            )
                .into_response())
        }
    }
}

/// The state a page shows: `finished`, `running` (a process holds the run's lock), or
/// `interrupted` (resumable).
pub(super) fn live_state(dir: &RunDir, finished: bool) -> &'static str {
    if finished {
        "finished"
    } else if dir.driver().is_some() {
        "running"
    } else {
        "interrupted"
    }
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    text[start..].trim()
}

/// Removes what a server that stopped mid-upload left in `.uploads/` (staging directories only;
/// kept uploads belong to runs).
pub(super) fn clean_staging(runs_dir: &Path) {
    let Ok(list) = std::fs::read_dir(runs_dir.join(UPLOADS)) else { return };
    for entry in list.filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().starts_with(".staging-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
