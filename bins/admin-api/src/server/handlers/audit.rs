//! The audit trail: filtered exports (themselves audited) and the hash chain's verdict.

use super::parse_time;
use super::retention::audit_read;
use crate::server::auth::{Auditor, Authorized};
use crate::server::error::ApiError;
use crate::server::extract::QueryParams;
use crate::types::{AuditFilter, AuditFormat, AuditList, AuditRecord, AuditVerdict, ErrorBody};
use archive_core::audit::{AuditAction, AuditQuery, ChainVerdict};
use archive_core::catalog::Catalog;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Records read from the trail per page.
const PAGE: usize = 10_000;

fn audit_query(f: &AuditFilter) -> Result<AuditQuery, ApiError> {
    let action = match &f.action {
        Some(a) => Some(
            serde_json::from_value::<AuditAction>(serde_json::Value::String(a.clone()))
                .map_err(|_| ApiError::bad_request(format!("unknown audit action {a:?}")))?,
        ),
        None => None,
    };
    Ok(AuditQuery {
        since: f.since.as_deref().map(|v| parse_time("since", v)).transpose()?,
        until: f.until.as_deref().map(|v| parse_time("until", v)).transpose()?,
        patient: f.patient.clone(),
        study: f.study.clone(),
        action,
    })
}

/// Records matching the filter, as JSON or CSV; the export is itself audited.
#[utoipa::path(get, path = "/api/audit", tag = "audit", security(("bearer" = [])),
    params(AuditFilter),
    responses(
        (status = 200, description = "JSON, or `text/csv` with `format=csv`", body = AuditList),
        (status = 400, body = ErrorBody),
    ))]
pub(super) async fn export(
    a: Authorized<Auditor>,
    QueryParams(f): QueryParams<AuditFilter>,
) -> Result<Response, ApiError> {
    let filter = audit_query(&f)?;
    let limit = f.limit.unwrap_or(10_000);
    let archive = a.state.archive.clone();
    let records = tokio::task::spawn_blocking(move || -> Result<Vec<archive_core::audit::AuditRecord>, ApiError> {
        // Page through the trail; only matching records are kept, up to the limit.
        let mut out = Vec::new();
        let mut from = 1u64;
        loop {
            let page = archive.catalog().audit_page(from, PAGE)?;
            let Some(last) = page.iter().rev().find_map(|r| r.as_ref().ok().map(|r| r.seq)) else { break };
            let n = page.len();
            out.extend(page.into_iter().flatten().filter(|r| filter.matches(r)));
            if out.len() >= limit || n < PAGE {
                break;
            }
            from = last + 1;
        }
        out.truncate(limit);
        Ok(out)
    })
    .await??;
    let described = serde_urlencoded::to_string(&f).unwrap_or_default();
    audit_read(&a.caller, &a.state.archive, format!("audit export of {} records ({described})", records.len())).await?;
    if f.format == Some(AuditFormat::Csv) {
        let mut text = String::from(archive_core::audit::CSV_HEADER);
        text.push('\n');
        for r in &records {
            text.push_str(&archive_core::audit::csv_row(r));
            text.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response());
    }
    Ok(Json(AuditList { records: records.iter().map(AuditRecord::from).collect() }).into_response())
}

/// Verify the whole hash chain; names the first broken link.
#[utoipa::path(get, path = "/api/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = AuditVerdict)))]
pub(super) async fn verify(a: Authorized<Auditor>) -> Result<Json<AuditVerdict>, ApiError> {
    let archive = a.state.archive.clone();
    let verdict = tokio::task::spawn_blocking(move || archive.catalog().verify_audit()).await??;
    Ok(Json(match verdict {
        ChainVerdict::Intact { records } => AuditVerdict { intact: true, records: Some(records), error: None },
        ChainVerdict::Broken(e) => AuditVerdict { intact: false, records: None, error: Some(e.to_string()) },
    }))
}
