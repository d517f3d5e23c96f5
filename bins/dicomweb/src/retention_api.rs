//! The admin API of retention: deletions, legal holds, the rules, simulation, explanation and
//! the audit trail. Every route needs a bearer token (see [`crate::auth`]).
//!
//! | route | role | |
//! |---|---|---|
//! | `POST /api/studies/{study}/delete` `{"reason": "...", "grace_minutes": 0}` | admin | 202, the deletion |
//! | `GET /api/deletions`, `GET /api/deletions/{id}` | auditor | deletions and their state |
//! | `POST /api/deletions/{id}/undo` `{"reason": "..."}` | admin | 200; 409 once the purge started |
//! | `GET /api/deletions/{id}/certificate` | auditor | the certificate with its audit records |
//! | `GET /api/holds`, `POST /api/holds` `{"study"|"accession"|"patient_id"+"issuer", "reason"}` | auditor / admin | |
//! | `POST /api/holds/{id}/release` `{"reason": "..."}` | admin | |
//! | `GET /api/policy` | reader | the rules in force and the last pass |
//! | `PUT /api/policy` (TOML body) | admin | 200, or 422 naming the lines; the running rules stay |
//! | `POST /api/policy/reload`, `POST /api/policy/evaluate` | admin | re-read the file; run a pass now |
//! | `GET /api/policy/simulate?at=DATE&limit=N`, `POST` with a TOML body | reader | what-if, changes nothing |
//! | `GET /api/policy/explain/{study}?at=DATE` | reader | one study's decision and facts |
//! | `GET /api/audit?since&until&patient&study&action&format=json\|csv&limit` | auditor | export (itself audited) |
//! | `GET /api/audit/verify` | auditor | the hash chain's verdict |

use crate::auth::{require, Caller};
use crate::error::ApiError;
use crate::{study_uid, AppState};
use archive_core::audit::{AuditAction, AuditEvent, AuditOutcome, AuditQuery};
use archive_core::catalog::Catalog;
use archive_core::config::Role;
use archive_core::deletion::{DeletionCause, DeletionError, DeletionId, DeletionRequest};
use archive_core::hold::{HoldId, HoldScope};
use archive_core::model::PatientKey;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use policy::scheduler::{PolicyEngine, PolicyError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use time::OffsetDateTime;

impl From<DeletionError> for ApiError {
    fn from(e: DeletionError) -> Self {
        let status = match &e {
            DeletionError::StudyNotFound(_)
            | DeletionError::NotFound(_)
            | DeletionError::HoldNotFound(_)
            | DeletionError::InstanceNotFound(_) => StatusCode::NOT_FOUND,
            DeletionError::Held { .. } | DeletionError::AlreadyMarked { .. } | DeletionError::NotUndoable { .. } => {
                StatusCode::CONFLICT
            }
            DeletionError::Invalid(_) => StatusCode::BAD_REQUEST,
            DeletionError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        let status = match &e {
            PolicyError::Rules(_) => StatusCode::UNPROCESSABLE_ENTITY,
            PolicyError::NoRuleFile => StatusCode::CONFLICT,
            PolicyError::File { .. } | PolicyError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes, example: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body must be JSON like {example}: {e}")))
}

fn with_location(status: StatusCode, body: Value, location: String) -> Response {
    let mut rsp = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        rsp.headers_mut().insert(header::LOCATION, v);
    }
    rsp
}

fn policy_engine(state: &AppState) -> Result<PolicyEngine, ApiError> {
    state
        .policy
        .clone()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the policy engine is not running"))
}

fn parse_time(field: &str, raw: &str) -> Result<OffsetDateTime, ApiError> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(raw, &fmt)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| ApiError::bad_request(format!("{field}: {raw:?} is not a date (YYYY-MM-DD) nor an RFC 3339 time")))
}

fn query_map(raw: Option<String>) -> Result<HashMap<String, String>, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    reason: String,
    #[serde(default)]
    grace_minutes: Option<u64>,
}

/// `POST /api/studies/{study}/delete`.
pub async fn delete_study(
    state: AppState,
    study: String,
    peer: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = require(&state, &headers, &peer, Role::Admin)?;
    let study = study_uid(&study)?;
    let b: DeleteBody = json_body(&body, r#"{"reason": "duplicate of study X"}"#)?;
    let d = state
        .archive
        .deleter()
        .request(DeletionRequest {
            study,
            instances: None,
            requested_by: caller.name,
            requested_from: caller.address,
            reason: b.reason,
            cause: DeletionCause::Request,
            grace: b.grace_minutes.map(|m| std::time::Duration::from_secs(m.saturating_mul(60))),
            hide_immediately: false,
        })
        .await?;
    Ok(with_location(StatusCode::ACCEPTED, deletion_json(&d, false), format!("/api/deletions/{}", d.id)))
}

fn deletion_json(d: &archive_core::deletion::Deletion, with_certificate: bool) -> Value {
    let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
    if !with_certificate {
        if let Some(obj) = v.as_object_mut() {
            let n = d.certificate.instances.len();
            obj.insert("certificate".into(), json!({ "instances": n, "total_bytes": d.certificate.total_bytes }));
        }
    }
    v
}

fn deletion_id(raw: &str) -> Result<DeletionId, ApiError> {
    raw.parse().map_err(|_| ApiError::bad_request(format!("{raw:?} is not a deletion id")))
}

/// `GET /api/deletions`.
pub async fn deletions(state: AppState, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require(&state, &headers, &peer, Role::Auditor)?;
    let list = state.archive.deleter().deletions()?;
    Ok(Json(json!({ "deletions": list.iter().map(|d| deletion_json(d, false)).collect::<Vec<_>>() })))
}

/// `GET /api/deletions/{id}`.
pub async fn deletion(state: AppState, id: String, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require(&state, &headers, &peer, Role::Auditor)?;
    let d = state.archive.deleter().deletion(deletion_id(&id)?)?;
    Ok(Json(deletion_json(&d, false)))
}

/// `GET /api/deletions/{id}/certificate`: the deletion, every instance removed, and its audit records.
pub async fn certificate(
    state: AppState,
    id: String,
    peer: String,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = require(&state, &headers, &peer, Role::Auditor)?;
    let d = state.archive.deleter().deletion(deletion_id(&id)?)?;
    let archive = state.archive.clone();
    let seqs = d.audit_seqs.clone();
    let records = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        for seq in seqs {
            if let Some(Ok(r)) = archive.catalog().audit_page(seq, 1)?.into_iter().next() {
                if r.seq == seq {
                    out.push(serde_json::to_value(&r).unwrap_or(Value::Null));
                }
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    audit_read(&state, &caller, format!("deletion certificate {}", d.id)).await?;
    Ok(Json(json!({
        "deletion": deletion_json(&d, true),
        "complete": d.state == archive_core::deletion::DeletionState::Purged,
        "audit_records": records,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

/// `POST /api/deletions/{id}/undo`.
pub async fn undo(
    state: AppState,
    id: String,
    peer: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = require(&state, &headers, &peer, Role::Admin)?;
    let b: ReasonBody = json_body(&body, r#"{"reason": "deleted by mistake"}"#)?;
    let d = state.archive.deleter().undo(deletion_id(&id)?, &caller.name, &caller.address, &b.reason).await?;
    Ok(Json(deletion_json(&d, false)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    #[serde(default)]
    study: Option<String>,
    #[serde(default)]
    accession: Option<String>,
    #[serde(default)]
    patient_id: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    reason: String,
}

/// `GET /api/holds`.
pub async fn holds(state: AppState, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require(&state, &headers, &peer, Role::Auditor)?;
    Ok(Json(json!({ "holds": state.archive.deleter().holds()? })))
}

/// `POST /api/holds`.
pub async fn set_hold(state: AppState, peer: String, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let caller = require(&state, &headers, &peer, Role::Admin)?;
    let b: HoldBody = json_body(&body, r#"{"patient_id": "P1", "issuer": "HOSP", "reason": "litigation 2026-17"}"#)?;
    let scope = match (b.study, b.accession, b.patient_id) {
        (Some(s), None, None) => HoldScope::Study { study: study_uid(&s)? },
        (None, Some(a), None) if !a.trim().is_empty() => HoldScope::Accession { accession: a.trim().to_string() },
        (None, None, Some(p)) if !p.trim().is_empty() => {
            HoldScope::Patient { patient: PatientKey::new(b.issuer.unwrap_or_default(), p.trim()) }
        }
        _ => return Err(ApiError::bad_request("name exactly one of study, accession or patient_id (with issuer)")),
    };
    let hold = state.archive.deleter().set_hold(scope, &b.reason, &caller.name, &caller.address).await?;
    Ok(with_location(
        StatusCode::CREATED,
        serde_json::to_value(&hold).unwrap_or(Value::Null),
        format!("/api/holds/{}", hold.id),
    ))
}

/// `POST /api/holds/{id}/release`.
pub async fn release_hold(
    state: AppState,
    id: String,
    peer: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = require(&state, &headers, &peer, Role::Admin)?;
    let b: ReasonBody = json_body(&body, r#"{"reason": "case closed"}"#)?;
    let id: u64 = id.parse().map_err(|_| ApiError::bad_request(format!("{id:?} is not a hold id")))?;
    let hold = state.archive.deleter().release_hold(HoldId(id), &caller.name, &caller.address, &b.reason).await?;
    Ok(Json(json!({ "released": hold })))
}

/// `GET /api/policy`.
pub async fn policy(state: AppState, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require(&state, &headers, &peer, Role::Reader)?;
    let engine = policy_engine(&state)?;
    Ok(Json(json!({
        "rules_file": state.archive.config().retention.rules_file,
        "rules": *engine.rules(),
        "tiers": engine.known_tiers(),
        "last_pass": engine.last_pass(),
    })))
}

/// `PUT /api/policy`: a new rule file (TOML).
pub async fn put_policy(
    state: AppState,
    peer: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = require(&state, &headers, &peer, Role::Admin)?;
    let engine = policy_engine(&state)?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the rule file must be UTF-8 TOML"))?;
    let rules = engine.replace_rules(text, &caller.name, &caller.address).await?;
    Ok(Json(
        json!({ "accepted": true, "digest": rules.digest, "rules": rules.rules.len(), "floors": rules.floors.len() }),
    ))
}

/// `POST /api/policy/reload`.
pub async fn reload_policy(state: AppState, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let caller = require(&state, &headers, &peer, Role::Admin)?;
    let rules = policy_engine(&state)?.reload(&caller.name, &caller.address).await?;
    Ok(Json(json!({ "digest": rules.digest, "rules": rules.rules.len(), "floors": rules.floors.len() })))
}

/// `POST /api/policy/evaluate`: a pass now.
pub async fn evaluate_now(state: AppState, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require(&state, &headers, &peer, Role::Admin)?;
    let report = policy_engine(&state)?.run_pass().await;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}

/// `GET|POST /api/policy/simulate?at=DATE&limit=N` (POST: simulate the TOML body instead of the rules in force).
pub async fn simulate(
    state: AppState,
    raw: Option<String>,
    peer: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require(&state, &headers, &peer, Role::Reader)?;
    let engine = policy_engine(&state)?;
    let q = query_map(raw)?;
    let at = match q.get("at") {
        Some(v) => parse_time("at", v)?,
        None => OffsetDateTime::now_utc(),
    };
    let limit: usize = match q.get("limit") {
        Some(v) => v.parse().map_err(|_| ApiError::bad_request("limit must be a number"))?,
        None => 100,
    };
    let candidate = if body.is_empty() {
        None
    } else {
        let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the rule file must be UTF-8 TOML"))?;
        Some(policy::parse_rules(text, engine.known_tiers()).map_err(PolicyError::from)?)
    };
    let report = tokio::task::spawn_blocking(move || engine.simulate(candidate.as_ref(), at, limit))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
}

/// `GET /api/policy/explain/{study}?at=DATE`.
pub async fn explain(
    state: AppState,
    study: String,
    raw: Option<String>,
    peer: String,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require(&state, &headers, &peer, Role::Reader)?;
    let engine = policy_engine(&state)?;
    let uid = study_uid(&study)?;
    let q = query_map(raw)?;
    let at = match q.get("at") {
        Some(v) => parse_time("at", v)?,
        None => OffsetDateTime::now_utc(),
    };
    let found = tokio::task::spawn_blocking(move || engine.explain(&uid, at))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let Some((facts, decision)) = found else {
        return Err(ApiError::not_found(format!("study {study} is not in the archive")));
    };
    Ok(Json(json!({ "facts": facts, "decision": decision })))
}

async fn audit_read(state: &AppState, caller: &Caller, what: String) -> Result<(), ApiError> {
    state
        .archive
        .catalog()
        .append_audit(AuditEvent {
            time: OffsetDateTime::now_utc(),
            action: AuditAction::AuditExported,
            actor: caller.name.clone(),
            actor_address: caller.address.clone(),
            objects: vec![],
            reason: None,
            outcome: AuditOutcome::Success,
            detail: Some(what),
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Parses the export filter of `/api/audit` (shared with the CLI's spelling).
fn audit_query(q: &HashMap<String, String>) -> Result<AuditQuery, ApiError> {
    let action = match q.get("action") {
        Some(a) => Some(
            serde_json::from_value::<AuditAction>(Value::String(a.clone()))
                .map_err(|_| ApiError::bad_request(format!("unknown audit action {a:?}")))?,
        ),
        None => None,
    };
    Ok(AuditQuery {
        since: q.get("since").map(|v| parse_time("since", v)).transpose()?,
        until: q.get("until").map(|v| parse_time("until", v)).transpose()?,
        patient: q.get("patient").cloned(),
        study: q.get("study").cloned(),
        action,
    })
}

/// `GET /api/audit`: records matching the filter, as JSON or CSV; the export is itself audited.
pub async fn audit(
    state: AppState,
    raw: Option<String>,
    peer: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = require(&state, &headers, &peer, Role::Auditor)?;
    let q = query_map(raw.clone())?;
    let filter = audit_query(&q)?;
    let limit: usize = match q.get("limit") {
        Some(v) => v.parse().map_err(|_| ApiError::bad_request("limit must be a number"))?,
        None => 10_000,
    };
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::bad_request(format!("format {other:?}: use json or csv"))),
    };
    let archive = state.archive.clone();
    let records = tokio::task::spawn_blocking(move || -> Result<Vec<archive_core::audit::AuditRecord>, ApiError> {
        // Page through the trail; only matching records are kept, up to the limit.
        let mut out = Vec::new();
        let mut from = 1u64;
        loop {
            let page = archive.catalog().audit_page(from, 10_000)?;
            let Some(last) = page.iter().rev().find_map(|r| r.as_ref().ok().map(|r| r.seq)) else { break };
            let n = page.len();
            out.extend(page.into_iter().flatten().filter(|r| filter.matches(r)));
            if out.len() >= limit || n < 10_000 {
                break;
            }
            from = last + 1;
        }
        out.truncate(limit);
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    audit_read(&state, &caller, format!("audit export of {} records ({})", records.len(), raw.unwrap_or_default()))
        .await?;
    if csv {
        let mut text = String::from(archive_core::audit::CSV_HEADER);
        text.push('\n');
        for r in &records {
            text.push_str(&archive_core::audit::csv_row(r));
            text.push('\n');
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response());
    }
    Ok(Json(json!({ "records": records })).into_response())
}

/// `GET /api/audit/verify`.
pub async fn verify(state: AppState, peer: String, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    require(&state, &headers, &peer, Role::Auditor)?;
    let archive = state.archive.clone();
    let verdict = tokio::task::spawn_blocking(move || archive.catalog().verify_audit())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Json(match verdict {
        Ok(n) => json!({ "intact": true, "records": n }),
        Err(e) => json!({ "intact": false, "error": e.to_string() }),
    }))
}
