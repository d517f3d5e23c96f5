//! Deletions (two-phase, audited, with certificates) and legal holds.

use super::{created, numeric_id, study_uid};
use crate::server::auth::{Admin, Auditor, Authorized};
use crate::server::convert;
use crate::server::error::ApiError;
use crate::server::extract::{JsonBody, PathParam};
use crate::types::{
    AuditRecord, DeleteRequest, Deletion, DeletionCertificate, DeletionList, ErrorBody, HoldList, HoldReleased,
    HoldRequest, LegalHold, ReasonRequest,
};
use archive_core::audit::{AuditAction, AuditEvent, AuditOutcome};
use archive_core::catalog::Catalog;
use archive_core::deletion::{DeletionCause, DeletionId, DeletionRequest, DeletionState};
use archive_core::hold::{HoldId, HoldScope};
use archive_core::model::PatientKey;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;

/// Records in the audit trail that a compliance record was read.
pub(super) async fn audit_read(
    a: &crate::server::auth::Caller,
    archive: &archive_core::Archive,
    what: String,
) -> Result<(), ApiError> {
    archive
        .catalog()
        .append_audit(AuditEvent {
            time: time::OffsetDateTime::now_utc(),
            action: AuditAction::AuditExported,
            actor: a.name.clone(),
            actor_address: a.address.clone(),
            objects: vec![],
            reason: None,
            outcome: AuditOutcome::Success,
            detail: Some(what),
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Delete a study: it is marked now, hidden and purged after its grace period, and can be undone until then.
#[utoipa::path(post, path = "/api/studies/{study}/delete", tag = "retention", security(("bearer" = [])),
    params(("study" = String, Path, description = "Study Instance UID")),
    request_body = DeleteRequest,
    responses(
        (status = 202, description = "marked; `Location: /api/deletions/{id}`", body = Deletion),
        (status = 404, description = "unknown study", body = ErrorBody),
        (status = 409, description = "held, or already marked", body = ErrorBody),
    ))]
pub(super) async fn delete_study(
    a: Authorized<Admin>,
    PathParam(raw): PathParam,
    JsonBody(req): JsonBody<DeleteRequest>,
) -> Result<Response, ApiError> {
    let d = a
        .state
        .archive
        .deleter()
        .request(DeletionRequest {
            study: study_uid(&raw)?,
            instances: None,
            requested_by: a.caller.name,
            requested_from: a.caller.address,
            reason: req.reason,
            cause: DeletionCause::Request,
            grace: req.grace_minutes.map(|m| std::time::Duration::from_secs(m.saturating_mul(60))),
            hide_immediately: false,
        })
        .await?;
    Ok(created(StatusCode::ACCEPTED, convert::deletion(&d, false), format!("/api/deletions/{}", d.id)))
}

/// Every deletion and its state (certificates summarised).
#[utoipa::path(get, path = "/api/deletions", tag = "retention", security(("bearer" = [])),
    responses((status = 200, body = DeletionList)))]
pub(super) async fn deletions(a: Authorized<Auditor>) -> Result<Json<DeletionList>, ApiError> {
    let list = a.state.archive.deleter().deletions()?;
    Ok(Json(DeletionList { deletions: list.iter().map(|d| convert::deletion(d, false)).collect() }))
}

fn deletion_id(raw: &str) -> Result<DeletionId, ApiError> {
    Ok(DeletionId(numeric_id("deletion", raw)?))
}

/// One deletion (certificate summarised).
#[utoipa::path(get, path = "/api/deletions/{id}", tag = "retention", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Deletion id")),
    responses((status = 200, body = Deletion), (status = 404, body = ErrorBody)))]
pub(super) async fn deletion(a: Authorized<Auditor>, PathParam(raw): PathParam) -> Result<Json<Deletion>, ApiError> {
    let d = a.state.archive.deleter().deletion(deletion_id(&raw)?)?;
    Ok(Json(convert::deletion(&d, false)))
}

/// Undo a deletion before its purge starts.
#[utoipa::path(post, path = "/api/deletions/{id}/undo", tag = "retention", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Deletion id")),
    request_body = ReasonRequest,
    responses((status = 200, body = Deletion), (status = 404, body = ErrorBody), (status = 409, description = "the purge has started", body = ErrorBody)))]
pub(super) async fn undo_deletion(
    a: Authorized<Admin>,
    PathParam(raw): PathParam,
    JsonBody(req): JsonBody<ReasonRequest>,
) -> Result<Json<Deletion>, ApiError> {
    let id = deletion_id(&raw)?;
    let d = a.state.archive.deleter().undo(id, &a.caller.name, &a.caller.address, &req.reason).await?;
    Ok(Json(convert::deletion(&d, false)))
}

/// A deletion's certificate: every instance removed, from which tiers, and its audit records
/// (reading it is itself audited).
#[utoipa::path(get, path = "/api/deletions/{id}/certificate", tag = "retention", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Deletion id")),
    responses((status = 200, body = DeletionCertificate), (status = 404, body = ErrorBody)))]
pub(super) async fn certificate(
    a: Authorized<Auditor>,
    PathParam(raw): PathParam,
) -> Result<Json<DeletionCertificate>, ApiError> {
    let d = a.state.archive.deleter().deletion(deletion_id(&raw)?)?;
    let archive = a.state.archive.clone();
    let seqs = d.audit_seqs.clone();
    let records = tokio::task::spawn_blocking(move || -> Result<Vec<AuditRecord>, ApiError> {
        let mut out = Vec::new();
        for seq in seqs {
            if let Some(Ok(r)) = archive.catalog().audit_page(seq, 1)?.into_iter().next() {
                if r.seq == seq {
                    out.push(AuditRecord::from(&r));
                }
            }
        }
        Ok(out)
    })
    .await??;
    audit_read(&a.caller, &a.state.archive, format!("deletion certificate {}", d.id)).await?;
    Ok(Json(DeletionCertificate {
        deletion: convert::deletion(&d, true),
        complete: d.state == DeletionState::Purged,
        audit_records: records,
    }))
}

/// The legal holds standing.
#[utoipa::path(get, path = "/api/holds", tag = "retention", security(("bearer" = [])),
    responses((status = 200, body = HoldList)))]
pub(super) async fn holds(a: Authorized<Auditor>) -> Result<Json<HoldList>, ApiError> {
    let holds = a.state.archive.deleter().holds()?;
    Ok(Json(HoldList { holds: holds.iter().map(LegalHold::from).collect() }))
}

/// Set a legal hold on a patient, a study or an accession number; marked deletions it covers are cancelled.
#[utoipa::path(post, path = "/api/holds", tag = "retention", security(("bearer" = [])),
    request_body = HoldRequest,
    responses((status = 201, description = "set; `Location: /api/holds/{id}`", body = LegalHold), (status = 400, body = ErrorBody)))]
pub(super) async fn set_hold(a: Authorized<Admin>, JsonBody(req): JsonBody<HoldRequest>) -> Result<Response, ApiError> {
    let scope = match (req.study, req.accession, req.patient_id) {
        (Some(s), None, None) => HoldScope::Study { study: study_uid(&s)? },
        (None, Some(acc), None) if !acc.trim().is_empty() => HoldScope::Accession { accession: acc.trim().to_string() },
        (None, None, Some(p)) if !p.trim().is_empty() => {
            HoldScope::Patient { patient: PatientKey::new(req.issuer.unwrap_or_default(), p.trim()) }
        }
        _ => return Err(ApiError::bad_request("name exactly one of study, accession or patient_id (with issuer)")),
    };
    let hold = a.state.archive.deleter().set_hold(scope, &req.reason, &a.caller.name, &a.caller.address).await?;
    Ok(created(StatusCode::CREATED, LegalHold::from(&hold), format!("/api/holds/{}", hold.id)))
}

/// Release a legal hold.
#[utoipa::path(post, path = "/api/holds/{id}/release", tag = "retention", security(("bearer" = [])),
    params(("id" = u64, Path, description = "Hold id")),
    request_body = ReasonRequest,
    responses((status = 200, body = HoldReleased), (status = 404, body = ErrorBody)))]
pub(super) async fn release_hold(
    a: Authorized<Admin>,
    PathParam(raw): PathParam,
    JsonBody(req): JsonBody<ReasonRequest>,
) -> Result<Json<HoldReleased>, ApiError> {
    let id = HoldId(numeric_id("hold", &raw)?);
    let hold = a.state.archive.deleter().release_hold(id, &a.caller.name, &a.caller.address, &req.reason).await?;
    Ok(Json(HoldReleased { released: LegalHold::from(&hold) }))
}
