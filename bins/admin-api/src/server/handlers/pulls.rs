//! Pulls from legacy archives (`[[pull.sources]]`): start, follow, reconcile, cancel.

use super::{created, numeric_id};
use crate::server::auth::{Admin, Authorized, Reader};
use crate::server::error::ApiError;
use crate::server::extract::{JsonBody, PathParam};
use crate::server::AdminState;
use crate::types::{ErrorBody, PullJob, PullList, PullReport, PullRequest, PullStudy, PullStudyList};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use pull::{DateRange, JobId, Pulls};

fn service(state: &AdminState) -> Result<&Pulls, ApiError> {
    state.pulls.as_ref().ok_or_else(|| ApiError::unavailable("pulls are not available on this server"))
}

fn pull_id(raw: &str) -> Result<JobId, ApiError> {
    Ok(JobId(numeric_id("pull", raw)?))
}

/// Start pulling every study of a source with a StudyDate in the range (no range: every study).
#[utoipa::path(post, path = "/api/pulls", tag = "pulls", security(("bearer" = [])),
    request_body = PullRequest,
    responses(
        (status = 202, description = "started; `Location: /api/pulls/{id}`", body = PullJob),
        (status = 400, description = "unknown source or bad dates", body = ErrorBody),
        (status = 409, description = "a pull from the source is running", body = ErrorBody),
    ))]
pub(super) async fn start(a: Authorized<Admin>, JsonBody(req): JsonBody<PullRequest>) -> Result<Response, ApiError> {
    let range = DateRange::parse(req.since.as_deref(), req.until.as_deref())?;
    let job = service(&a.state)?
        .start(pull::PullRequest {
            source: req.source,
            range,
            requested_by: a.caller.name,
            requested_from: a.caller.address,
        })
        .await?;
    Ok(created(StatusCode::ACCEPTED, PullJob::from(&job), format!("/api/pulls/{}", job.header.id)))
}

/// Every pull with its counters, newest first.
#[utoipa::path(get, path = "/api/pulls", tag = "pulls", security(("bearer" = [])),
    responses((status = 200, body = PullList)))]
pub(super) async fn list(a: Authorized<Reader>) -> Result<Json<PullList>, ApiError> {
    Ok(Json(PullList { pulls: service(&a.state)?.jobs().iter().map(PullJob::from).collect() }))
}

/// One pull's progress.
#[utoipa::path(get, path = "/api/pulls/{id}", tag = "pulls", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Pull id")),
    responses((status = 200, body = PullJob), (status = 404, body = ErrorBody)))]
pub(super) async fn show(a: Authorized<Reader>, PathParam(raw): PathParam) -> Result<Json<PullJob>, ApiError> {
    Ok(Json(PullJob::from(&service(&a.state)?.job(pull_id(&raw)?)?)))
}

/// A pull's studies: source and local counts, fetches, errors.
#[utoipa::path(get, path = "/api/pulls/{id}/studies", tag = "pulls", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Pull id")),
    responses((status = 200, body = PullStudyList), (status = 404, body = ErrorBody)))]
pub(super) async fn studies(a: Authorized<Reader>, PathParam(raw): PathParam) -> Result<Json<PullStudyList>, ApiError> {
    let studies = service(&a.state)?.studies(pull_id(&raw)?)?;
    Ok(Json(PullStudyList { studies: studies.iter().map(PullStudy::from).collect() }))
}

/// A pull's reconciliation report (a snapshot while it runs).
#[utoipa::path(get, path = "/api/pulls/{id}/report", tag = "pulls", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Pull id")),
    responses((status = 200, body = PullReport), (status = 404, body = ErrorBody)))]
pub(super) async fn report(a: Authorized<Reader>, PathParam(raw): PathParam) -> Result<Json<PullReport>, ApiError> {
    let report = service(&a.state)?.report(pull_id(&raw)?).await?;
    Ok(Json(PullReport::from(&report)))
}

/// Cancel a pull: it stops before its next study.
#[utoipa::path(post, path = "/api/pulls/{id}/cancel", tag = "pulls", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Pull id")),
    responses((status = 200, body = PullJob), (status = 409, description = "the pull has ended", body = ErrorBody)))]
pub(super) async fn cancel(a: Authorized<Admin>, PathParam(raw): PathParam) -> Result<Json<PullJob>, ApiError> {
    let job = service(&a.state)?.cancel(pull_id(&raw)?).await?;
    tracing::info!(pull = %job.header.id, by = %a.caller.name, "pull cancel requested");
    Ok(Json(PullJob::from(&job)))
}
