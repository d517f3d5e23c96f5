//! The admin API of the lifecycle: migrations, jobs and the integrity scrub.
//!
//! State changes need an admin's bearer token (see [`crate::auth`]).
//!
//! - `POST /api/studies/{study}/migrate` `{"to": "warm", "from": "hot", "keep_source": false, "reason": "..."}`
//!   → 202 with the job and `Location: /api/jobs/{id}`; 400 unknown tier, 404 unknown study,
//!   409 when another job works on the study.
//! - `GET /api/jobs`, `GET /api/jobs/{id}`: jobs with their progress.
//! - `POST /api/scrub` → 202 (409 while a pass runs); `GET /api/scrub`: the current or last pass.

use crate::error::ApiError;
use crate::{study_uid, AppState};
use archive_core::lifecycle::{Job, JobId, LifecycleError, MigrationRequest};
use archive_core::tier::TierName;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

/// The body of a migration request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrateBody {
    to: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    keep_source: bool,
    #[serde(default)]
    reason: Option<String>,
}

fn tier_name(field: &str, raw: &str) -> Result<TierName, ApiError> {
    TierName::new(raw).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        let status = match &e {
            LifecycleError::UnknownTier(_) | LifecycleError::SameTier(_) => StatusCode::BAD_REQUEST,
            LifecycleError::StudyNotFound(_) | LifecycleError::JobNotFound(_) => StatusCode::NOT_FOUND,
            LifecycleError::Busy { .. } => StatusCode::CONFLICT,
            LifecycleError::RecallFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            LifecycleError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

fn job_json(job: &Job) -> Value {
    serde_json::to_value(job).unwrap_or(Value::Null)
}

/// `POST /api/studies/{study}/migrate`.
pub async fn migrate(
    state: AppState,
    study: String,
    peer: String,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = crate::auth::require(&state, &headers, &peer, archive_core::config::Role::Admin)?;
    let study = study_uid(&study)?;
    let req: MigrateBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body must be JSON like {{\"to\": \"warm\"}}: {e}")))?;
    let request = MigrationRequest {
        study,
        to: tier_name("to", &req.to)?,
        from: req.from.as_deref().map(|f| tier_name("from", f)).transpose()?,
        keep_source: req.keep_source,
        requested_by: caller.name,
        reason: req.reason,
    };
    let job = state.archive.lifecycle().submit(request)?;
    let mut rsp = (StatusCode::ACCEPTED, Json(job_json(&job))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/jobs/{}", job.id)) {
        rsp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(rsp)
}

/// `GET /api/jobs`.
pub async fn jobs(State(state): State<AppState>) -> Json<Value> {
    let jobs: Vec<Value> = state.archive.lifecycle().jobs().iter().map(job_json).collect();
    Json(json!({ "jobs": jobs }))
}

/// `GET /api/jobs/{id}`.
pub async fn job(state: AppState, id: String) -> Result<Json<Value>, ApiError> {
    let id: JobId = id.parse().map_err(|_| ApiError::bad_request(format!("{id:?} is not a job id")))?;
    let job = state.archive.lifecycle().job(id).ok_or_else(|| ApiError::not_found(format!("job {id} not found")))?;
    Ok(Json(job_json(&job)))
}

/// `POST /api/scrub`.
pub async fn start_scrub(state: AppState, peer: String, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    crate::auth::require(&state, &headers, &peer, archive_core::config::Role::Admin)?;
    let scrubber = state.archive.scrubber();
    if !scrubber.start() {
        return Err(ApiError::new(StatusCode::CONFLICT, "an integrity scrub is already running"));
    }
    Ok((StatusCode::ACCEPTED, Json(serde_json::to_value(scrubber.status()).unwrap_or(Value::Null))).into_response())
}

/// `GET /api/scrub`.
pub async fn scrub_status(State(state): State<AppState>) -> Json<Value> {
    Json(serde_json::to_value(state.archive.scrubber().status()).unwrap_or(Value::Null))
}
