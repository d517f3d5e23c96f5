//! Patient identity links: re-filing one identity's studies under another, and undoing it.

use super::{created, numeric_id};
use crate::server::auth::{Admin, Auditor, Authorized};
use crate::server::error::ApiError;
use crate::server::extract::{JsonBody, PathParam};
use crate::types::{ErrorBody, LinkList, LinkRequest, PatientLink, ReasonRequest};
use archive_core::catalog::Catalog;
use archive_core::model::PatientKey;
use archive_core::patient_link::LinkId;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;

/// Re-file every study of one patient identity under another (reversible).
#[utoipa::path(post, path = "/api/patients/link", tag = "patients", security(("bearer" = [])),
    request_body = LinkRequest,
    responses(
        (status = 201, description = "linked; `Location: /api/patient-links/{id}`", body = PatientLink),
        (status = 400, description = "the same identity twice", body = ErrorBody),
        (status = 404, description = "an identity is unknown", body = ErrorBody),
    ))]
pub(super) async fn link(a: Authorized<Admin>, JsonBody(req): JsonBody<LinkRequest>) -> Result<Response, ApiError> {
    let from = PatientKey::new(req.from.issuer.trim(), req.from.patient_id.trim());
    let to = PatientKey::new(req.to.issuer.trim(), req.to.patient_id.trim());
    let catalog = a.state.archive.catalog();
    let link =
        archive_core::patient_link::link(catalog, from, to, &a.caller.name, &a.caller.address, &req.reason).await?;
    Ok(created(StatusCode::CREATED, PatientLink::from(&link), format!("/api/patient-links/{}", link.id)))
}

/// Every link, standing or undone.
#[utoipa::path(get, path = "/api/patient-links", tag = "patients", security(("bearer" = [])),
    responses((status = 200, body = LinkList)))]
pub(super) async fn links(a: Authorized<Auditor>) -> Result<Json<LinkList>, ApiError> {
    let links = a.state.archive.catalog().links()?;
    Ok(Json(LinkList { links: links.iter().map(PatientLink::from).collect() }))
}

/// Undo a link: its studies go back to the identity they had.
#[utoipa::path(post, path = "/api/patient-links/{id}/undo", tag = "patients", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Link id")),
    request_body = ReasonRequest,
    responses(
        (status = 200, body = PatientLink),
        (status = 409, description = "undone already, or a later link moved the same studies", body = ErrorBody),
    ))]
pub(super) async fn undo_link(
    a: Authorized<Admin>,
    PathParam(raw): PathParam,
    JsonBody(req): JsonBody<ReasonRequest>,
) -> Result<Json<PatientLink>, ApiError> {
    let id = LinkId(numeric_id("link", &raw)?);
    let catalog = a.state.archive.catalog();
    let link = archive_core::patient_link::unlink(catalog, id, &a.caller.name, &a.caller.address, &req.reason).await?;
    Ok(Json(PatientLink::from(&link)))
}
