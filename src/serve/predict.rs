//! `POST /api/runs/{id}/predict`: new rows in (CSV or Parquet), predictions out (CSV), from a
//! snapshot of the run (`?rev=final` by default: the model scored on the test split) in the sandbox the run recorded.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::launch::upload_rejected;
use super::{ApiError, AppState, run_dir};

#[derive(Deserialize)]
pub(super) struct PredictQuery {
    rev: Option<String>,
}

pub(super) async fn predict(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<PredictQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let dir = run_dir(&state, &id)?;
    let rev = q.rev.unwrap_or_else(|| "final".into());
    // Names of snapshots: `final`, `best`, `iter-0003`, or a commit id.
    if rev.is_empty() || rev.len() > 64 || !rev.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("`{rev}` is not a snapshot name")));
    }
    let body = body.map_err(|e| upload_rejected(&e, state.launch.max_upload))?;
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "send the rows to predict (CSV with a header row) as the body",
        ));
    }
    let _turn = state.predicting.acquire().await.map_err(ApiError::internal)?;
    let open = state.open_sandbox.clone();
    let predictions = tokio::task::spawn_blocking(move || -> anyhow::Result<crate::predict::Predictions> {
        let scratch = tempfile::Builder::new().prefix("loop-runner-serve-").tempdir()?;
        let name = if body.starts_with(b"PAR1") { "rows.parquet" } else { "rows.csv" };
        let input = scratch.path().join(name);
        fs_err::write(&input, &body)?;
        // The scratch file's path means nothing to the caller.
        crate::predict::predict(&dir, &rev, &input, "the request body", |config| open(config))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::from_anyhow(&e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv".to_string()),
            (header::HeaderName::from_static("x-loop-runner-commit"), predictions.commit),
        ],
        predictions.csv,
    )
        .into_response())
}
