//! The admin API of migrations from legacy archives (`[[migration.sources]]`).
//!
//! | route | role | |
//! |---|---|---|
//! | `POST /api/migrations` `{"source": NAME, "since": "YYYY-MM-DD", "until": "YYYY-MM-DD"}` | admin | 202 with the job and `Location: /api/migrations/{id}`; 400 unknown source or bad dates, 409 when a job already pulls from the source |
//! | `GET /api/migrations` | reader | every job with its counters, newest first |
//! | `GET /api/migrations/{id}` | reader | one job's progress |
//! | `GET /api/migrations/{id}/studies` | reader | its studies: source and local counts, fetches, errors |
//! | `GET /api/migrations/{id}/report` | reader | the reconciliation report (a snapshot while it runs) |
//! | `POST /api/migrations/{id}/cancel` | admin | stops it before its next study; 409 once it has ended |
//!
//! `since` and `until` are optional: without them every study of the source is pulled,
//! including studies without a StudyDate.

use crate::error::ApiError;
use crate::AppState;
use archive_core::config::Role;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use pull::{DateRange, JobId, Migrations, PullError, PullRequest};
use serde::Deserialize;
use serde_json::{json, Value};

impl From<PullError> for ApiError {
    fn from(e: PullError) -> Self {
        let status = match &e {
            PullError::UnknownSource(_) | PullError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            PullError::NotFound(_) => StatusCode::NOT_FOUND,
            PullError::Busy { .. } | PullError::Finished(_) => StatusCode::CONFLICT,
            PullError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            PullError::Network(_) | PullError::Remote(_) => StatusCode::BAD_GATEWAY,
            PullError::Archive(_) | PullError::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullBody {
    source: String,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
}

fn service(state: &AppState) -> Result<&Migrations, ApiError> {
    state
        .migrations
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "migrations are not available on this server"))
}

fn job_id(raw: &str) -> Result<JobId, ApiError> {
    Ok(raw.parse::<JobId>()?)
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `POST /api/migrations`.
pub async fn start(state: AppState, peer: String, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let caller = crate::auth::require(&state, &headers, &peer, Role::Admin)?;
    let migrations = service(&state)?;
    let req: PullBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be JSON like {{\"source\": \"old-pacs\", \"since\": \"2019-01-01\", \"until\": \"2019-12-31\"}}: {e}"
        ))
    })?;
    let range = DateRange::parse(req.since.as_deref(), req.until.as_deref())?;
    let job = migrations
        .start(PullRequest { source: req.source, range, requested_by: caller.name, requested_from: caller.address })
        .await?;
    let mut rsp = (StatusCode::ACCEPTED, Json(to_json(&job))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/migrations/{}", job.header.id)) {
        rsp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(rsp)
}

/// `GET /api/migrations`.
pub async fn list(state: AppState, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    crate::auth::require(&state, &headers, &peer, Role::Reader)?;
    let jobs: Vec<Value> = service(&state)?.jobs().iter().map(to_json).collect();
    Ok(Json(json!({ "migrations": jobs })))
}

/// `GET /api/migrations/{id}`.
pub async fn get(state: AppState, id: String, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    crate::auth::require(&state, &headers, &peer, Role::Reader)?;
    Ok(Json(to_json(&service(&state)?.job(job_id(&id)?)?)))
}

/// `GET /api/migrations/{id}/studies`.
pub async fn studies(state: AppState, id: String, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    crate::auth::require(&state, &headers, &peer, Role::Reader)?;
    let studies = service(&state)?.studies(job_id(&id)?)?;
    Ok(Json(json!({ "studies": to_json(&studies) })))
}

/// `GET /api/migrations/{id}/report`.
pub async fn report(state: AppState, id: String, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    crate::auth::require(&state, &headers, &peer, Role::Reader)?;
    Ok(Json(to_json(&service(&state)?.report(job_id(&id)?).await?)))
}

/// `POST /api/migrations/{id}/cancel`.
pub async fn cancel(state: AppState, id: String, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let caller = crate::auth::require(&state, &headers, &peer, Role::Admin)?;
    let job = service(&state)?.cancel(job_id(&id)?).await?;
    tracing::info!(job = %job.header.id, by = %caller.name, "migration job cancel requested");
    Ok(Json(to_json(&job)))
}
