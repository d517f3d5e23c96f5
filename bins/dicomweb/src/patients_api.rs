//! The admin API of patient identity: linking (merging) two identities and undoing it.
//!
//! - `POST /api/patients/link` `{"from": {"patient_id": "P1", "issuer": "A"}, "to": {...}, "reason": "..."}`
//!   (admin) → 201 with the link; 404 when an identity is unknown, 400 when they are the same.
//! - `GET /api/patient-links` (auditor): every link, standing or undone.
//! - `POST /api/patient-links/{id}/undo` `{"reason": "..."}` (admin) → 200; 409 when undone
//!   already or when a later link moved the same studies.

use crate::auth::require;
use crate::error::ApiError;
use crate::AppState;
use archive_core::catalog::Catalog;
use archive_core::config::Role;
use archive_core::model::PatientKey;
use archive_core::patient_link::{LinkError, LinkId};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        let status = match &e {
            LinkError::SameIdentity(_) | LinkError::Invalid(_) => StatusCode::BAD_REQUEST,
            LinkError::UnknownPatient(_) | LinkError::NotFound(_) => StatusCode::NOT_FOUND,
            LinkError::NotUndoable { .. } => StatusCode::CONFLICT,
            LinkError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    patient_id: String,
    #[serde(default)]
    issuer: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    from: Identity,
    to: Identity,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

/// `POST /api/patients/link`.
pub async fn link(state: AppState, peer: String, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let caller = require(&state, &headers, &peer, Role::Admin)?;
    let b: LinkBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be JSON like {{\"from\": {{\"patient_id\": \"P1\", \"issuer\": \"A\"}}, \"to\": {{...}}, \"reason\": \"...\"}}: {e}"
        ))
    })?;
    let from = PatientKey::new(b.from.issuer.trim(), b.from.patient_id.trim());
    let to = PatientKey::new(b.to.issuer.trim(), b.to.patient_id.trim());
    let link =
        archive_core::patient_link::link(state.archive.catalog(), from, to, &caller.name, &caller.address, &b.reason)
            .await?;
    let mut rsp = (StatusCode::CREATED, Json(serde_json::to_value(&link).unwrap_or(Value::Null))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/patient-links/{}", link.id)) {
        rsp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(rsp)
}

/// `GET /api/patient-links`.
pub async fn links(state: AppState, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require(&state, &headers, &peer, Role::Auditor)?;
    Ok(Json(json!({ "links": state.archive.catalog().links()? })))
}

/// `POST /api/patient-links/{id}/undo`.
pub async fn undo(
    state: AppState,
    id: String,
    peer: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = require(&state, &headers, &peer, Role::Admin)?;
    let b: ReasonBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body must be JSON like {{\"reason\": \"...\"}}: {e}")))?;
    let id: u64 = id.parse().map_err(|_| ApiError::bad_request(format!("{id:?} is not a link id")))?;
    let link = archive_core::patient_link::unlink(
        state.archive.catalog(),
        LinkId(id),
        &caller.name,
        &caller.address,
        &b.reason,
    )
    .await?;
    Ok(Json(serde_json::to_value(&link).unwrap_or(Value::Null)))
}
