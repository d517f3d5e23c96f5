//! Tier moves of studies (lifecycle jobs) and the integrity scrub.

use super::{created, numeric_id, study_uid};
use crate::server::auth::{Admin, Authorized, Public};
use crate::server::error::ApiError;
use crate::server::extract::{JsonBody, PathParam};
use crate::types::{ErrorBody, MoveRequest, ScrubStatus, TierJob, TierJobList};
use archive_core::lifecycle::{JobId, TierMoveRequest};
use archive_core::tier::TierName;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;

fn tier_name(field: &str, raw: &str) -> Result<TierName, ApiError> {
    TierName::new(raw).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
}

/// Move (or copy, with `keep_source`) a study's copies to a tier; the job runs in the background.
#[utoipa::path(post, path = "/api/studies/{study}/move", tag = "tiers", security(("bearer" = [])),
    params(("study" = String, Path, description = "Study Instance UID")),
    request_body = MoveRequest,
    responses(
        (status = 202, description = "submitted; `Location: /api/jobs/{id}`", body = TierJob),
        (status = 400, description = "unknown tier or bad request", body = ErrorBody),
        (status = 404, description = "unknown study", body = ErrorBody),
        (status = 409, description = "another job works on the study", body = ErrorBody),
    ))]
pub(super) async fn move_study(
    a: Authorized<Admin>,
    PathParam(raw): PathParam,
    JsonBody(req): JsonBody<MoveRequest>,
) -> Result<Response, ApiError> {
    let request = TierMoveRequest {
        study: study_uid(&raw)?,
        to: tier_name("to", &req.to)?,
        from: req.from.as_deref().map(|f| tier_name("from", f)).transpose()?,
        keep_source: req.keep_source,
        requested_by: a.caller.name,
        reason: req.reason,
    };
    let job = a.state.archive.lifecycle().submit(request)?;
    Ok(created(StatusCode::ACCEPTED, TierJob::from(&job), format!("/api/jobs/{}", job.id)))
}

/// Every tier job the archive remembers, with its progress.
#[utoipa::path(get, path = "/api/jobs", tag = "tiers", responses((status = 200, body = TierJobList)))]
pub(super) async fn jobs(Public { state }: Public) -> Json<TierJobList> {
    Json(TierJobList { jobs: state.archive.lifecycle().jobs().iter().map(TierJob::from).collect() })
}

/// One tier job.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "tiers",
    params(("id" = u64, Path, description = "Job id")),
    responses((status = 200, body = TierJob), (status = 404, body = ErrorBody)))]
pub(super) async fn job(Public { state }: Public, PathParam(raw): PathParam) -> Result<Json<TierJob>, ApiError> {
    let id = JobId(numeric_id("job", &raw)?);
    let job = state.archive.lifecycle().job(id).ok_or_else(|| ApiError::not_found(format!("job {id} not found")))?;
    Ok(Json(TierJob::from(&job)))
}

/// Start an integrity pass: re-read every copy and check its checksum.
#[utoipa::path(post, path = "/api/scrub", tag = "tiers", security(("bearer" = [])),
    responses((status = 202, body = ScrubStatus), (status = 409, description = "a pass is running", body = ErrorBody)))]
pub(super) async fn start_scrub(a: Authorized<Admin>) -> Result<(StatusCode, Json<ScrubStatus>), ApiError> {
    let scrubber = a.state.archive.scrubber();
    if !scrubber.start() {
        return Err(ApiError::new(StatusCode::CONFLICT, "an integrity scrub is already running"));
    }
    tracing::info!(by = %a.caller.name, "integrity scrub started");
    Ok((StatusCode::ACCEPTED, Json(scrubber.status().into())))
}

/// The current or last integrity pass.
#[utoipa::path(get, path = "/api/scrub", tag = "tiers", responses((status = 200, body = ScrubStatus)))]
pub(super) async fn scrub_status(Public { state }: Public) -> Json<ScrubStatus> {
    Json(state.archive.scrubber().status().into())
}
