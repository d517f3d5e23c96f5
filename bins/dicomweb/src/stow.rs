//! STOW-RS (PS3.18 §10.5): `POST /studies` and `POST /studies/{study}` with
//! `multipart/related; type="application/dicom"`.
//!
//! The whole body is received first, each part spooled (in memory up to a budget, then to
//! unlinked files in the spool directory), so that a broken multipart body stores nothing.
//! Then the parts are ingested, four at a time so that their catalog commits share WAL
//! syncs, and the answer lists each instance as stored (ReferencedSOPSequence) or failed
//! (FailedSOPSequence with its FailureReason). Each instance is durable before the answer.
//! Failure reasons are DICOM storage statuses from the core's one table
//! ([`archive_core::dicom_status`]), the statuses C-STORE answers with.

use crate::dicom_json::{set_seq, set_str, set_us, JsonDataset};
use crate::error::ApiError;
use crate::multipart::{MultipartError, MultipartReader};
use crate::spool::{SpoolWriter, Spooled, REQUEST_MEMORY_BUDGET};
use crate::{media, AppState};
use archive_core::dicom_status::{storage_failure, StorageFailure};
use archive_core::ingest::IngestInput;
use archive_core::model::Source;
use archive_core::parse::parse_part10;
use archive_core::uid::StudyUid;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::Value as Json;
use std::net::SocketAddr;

/// Most parts one request may carry (each spooled part is a memory map).
pub const MAX_PARTS: usize = 10_000;

/// One received part.
enum Part {
    /// An object to ingest.
    Object(Spooled),
    /// A part refused before ingest, with its failure reason.
    Refused(u16, String),
}

/// What happened to one part.
struct Outcome {
    sop_class: Option<String>,
    sop_instance: Option<String>,
    study: Option<String>,
    series: Option<String>,
    failure: Option<(u16, String)>,
    /// The failure is the archive's (full disk, storage failure), not the object's.
    server_fault: bool,
}

/// Handles a STOW-RS request; `study` is set for `POST /studies/{study}`.
pub async fn store(
    state: AppState,
    study: Option<StudyUid>,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let boundary = check_content_type(&headers)?;
    let address = peer.map(|p| p.to_string()).unwrap_or_default();
    // Anonymous uploads are allowed; a bearer token, when sent, must name a user, whose
    // source profile (`[[sources]] http_users`) then applies.
    let source = if headers.contains_key(axum::http::header::AUTHORIZATION) {
        let caller = crate::auth::require(&state, &headers, &address, archive_core::config::Role::Reader)?;
        Source::http_user(&caller.name, address)
    } else {
        Source { actor: "STOW-RS".into(), address }
    };
    let limit = state.settings.max_request_bytes;
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit {
            return Err(too_large(limit));
        }
    }
    state.metrics.stow_in_flight.inc();
    let _in_flight = GaugeGuard(state.metrics.stow_in_flight.clone(), 1);
    let parts = receive(&state, body, &boundary).await?;
    if parts.is_empty() {
        return Err(ApiError::bad_request("the multipart body holds no part"));
    }
    let spooled: i64 = parts.iter().map(|p| if let Part::Object(s) = p { s.bytes.len() as i64 } else { 0 }).sum();
    state.metrics.spool_bytes.add(spooled);
    let _spooled = GaugeGuard(state.metrics.spool_bytes.clone(), spooled);

    let outcomes: Vec<Outcome> = futures::stream::iter(parts)
        .map(|part| {
            let state = state.clone();
            let source = source.clone();
            let study = study.clone();
            async move { ingest_part(&state, part, study.as_ref(), source).await }
        })
        .buffered(4)
        .collect()
        .await;
    Ok(answer(&state, &headers, study.as_ref(), outcomes))
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body exceeds {} MiB", limit >> 20))
}

/// Takes an amount back from a gauge when dropped, also when a client goes away mid-request.
struct GaugeGuard(prometheus::IntGauge, i64);
impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.sub(self.1);
    }
}

/// The boundary of an acceptable Content-Type.
fn check_content_type(headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ct = media::parse_one(raw).ok_or_else(|| {
        ApiError::unsupported_media_type("STOW-RS takes multipart/related; type=\"application/dicom\"")
    })?;
    if ct.essence != "multipart/related" {
        return Err(ApiError::unsupported_media_type(format!(
            "STOW-RS takes multipart/related; type=\"application/dicom\", not {}",
            ct.essence
        )));
    }
    if let Some(t) = ct.param("type") {
        if !t.eq_ignore_ascii_case("application/dicom") {
            return Err(ApiError::unsupported_media_type(format!(
                "parts of type {t} are not accepted; vna stores application/dicom parts"
            )));
        }
    }
    let boundary = ct
        .param("boundary")
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| ApiError::bad_request("the Content-Type has no boundary parameter (1 to 70 characters)"))?;
    Ok(boundary.to_string())
}

/// Receives every part of the body; a malformed body is a 400 and nothing is kept.
async fn receive(state: &AppState, body: Body, boundary: &str) -> Result<Vec<Part>, ApiError> {
    let limit = state.settings.max_request_bytes;
    let max_object = state.settings.max_object_bytes;
    let dir = state.settings.spool_dir.clone();
    let mut received = 0u64;
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| e.to_string())?;
        received += chunk.len() as u64;
        if received > limit {
            return Err("the request body is too large".to_string());
        }
        Ok(chunk)
    });
    let mut reader = MultipartReader::new(Box::pin(stream), boundary);
    let mut memory_left = REQUEST_MEMORY_BUDGET;
    let mut parts = Vec::new();
    let malformed = |e: MultipartError| match e {
        MultipartError::Body(m) if m.contains("too large") => too_large(limit),
        MultipartError::Body(m) => ApiError::bad_request(format!("the request body could not be read: {m}")),
        other => ApiError::bad_request(other.to_string()),
    };
    while let Some(headers) = reader.next_part().await.map_err(malformed)? {
        if parts.len() >= MAX_PARTS {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "more than {MAX_PARTS} parts in one request; nothing was stored, send them in several requests"
                ),
            ));
        }
        let part_type = headers.iter().find(|(n, _)| n == "content-type").map(|(_, v)| v.clone());
        if let Some(t) = &part_type {
            let essence = media::parse_one(t).map(|m| m.essence).unwrap_or_default();
            if essence != "application/dicom" {
                while reader.next_chunk().await.map_err(malformed)?.is_some() {}
                parts.push(Part::Refused(
                    StorageFailure::CannotUnderstand.code(),
                    format!("part of type {t:?} is not application/dicom"),
                ));
                continue;
            }
        }
        let mut writer = SpoolWriter::new();
        let mut oversized = false;
        while let Some(chunk) = reader.next_chunk().await.map_err(malformed)? {
            if oversized || writer.len() + chunk.len() as u64 > max_object {
                oversized = true;
                continue;
            }
            writer.write(&chunk, &dir, &mut memory_left).await.map_err(|e| {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, format!("{e}; nothing of this request was stored"))
            })?;
        }
        if oversized {
            parts.push(Part::Refused(
                StorageFailure::OutOfResources.code(),
                format!("the object exceeds the {} MiB limit of one part", max_object >> 20),
            ));
            continue;
        }
        let spooled =
            writer.finish().await.map_err(|e| ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
        parts.push(Part::Object(spooled));
    }
    Ok(parts)
}

async fn ingest_part(state: &AppState, part: Part, study: Option<&StudyUid>, source: Source) -> Outcome {
    let spooled = match part {
        Part::Refused(code, why) => {
            return Outcome {
                sop_class: None,
                sop_instance: None,
                study: None,
                series: None,
                failure: Some((code, why)),
                server_fault: false,
            }
        }
        Part::Object(s) => s,
    };
    // Identify the object first, so that failures name it and a study mismatch stores nothing.
    let parsed = match parse_part10(&spooled.bytes) {
        Ok(p) => p,
        Err(e) => {
            return Outcome {
                sop_class: None,
                sop_instance: None,
                study: None,
                series: None,
                failure: Some((StorageFailure::CannotUnderstand.code(), e.to_string())),
                server_fault: false,
            }
        }
    };
    let mut outcome = Outcome {
        sop_class: Some(parsed.sop_class.to_string()),
        sop_instance: Some(parsed.sop_instance.to_string()),
        study: Some(parsed.study.to_string()),
        series: Some(parsed.series.to_string()),
        failure: None,
        server_fault: false,
    };
    if let Some(expected) = study {
        if &parsed.study != expected {
            outcome.failure = Some((
                StorageFailure::DataSetDoesNotMatchSopClass.code(),
                format!("the instance belongs to study {}, not {expected}", parsed.study),
            ));
            return outcome;
        }
    }
    match state.archive.ingest().ingest(IngestInput::Part10(spooled.bytes), source).await {
        Ok(_) => {}
        Err(e) => {
            let failure = storage_failure(&e);
            outcome.server_fault = failure.is_server_fault();
            outcome.failure = Some((failure.code(), e.to_string()));
        }
    }
    outcome
}

/// The response: 200 when all parts were stored, 202 when some failed, 409 when none was stored.
fn answer(state: &AppState, headers: &HeaderMap, study: Option<&StudyUid>, outcomes: Vec<Outcome>) -> Response {
    let base = state.base_url(headers);
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    for o in &outcomes {
        let mut item = JsonDataset::new();
        if let Some(c) = &o.sop_class {
            set_str(&mut item, "00081150", "UI", c);
        }
        if let Some(i) = &o.sop_instance {
            set_str(&mut item, "00081155", "UI", i);
        }
        match &o.failure {
            Some((code, why)) => {
                set_us(&mut item, "00081197", *code);
                tracing::info!(reason = format!("{code:04X}"), sop_instance = o.sop_instance.as_deref().unwrap_or("?"), why = %why, "STOW-RS part failed");
                failed.push(item);
            }
            None => {
                let (Some(st), Some(se), Some(i)) = (&o.study, &o.series, &o.sop_instance) else { continue };
                set_str(&mut item, "00081190", "UR", &format!("{base}/studies/{st}/series/{se}/instances/{i}"));
                referenced.push(item);
            }
        }
    }
    let mut ds = JsonDataset::new();
    let studies: std::collections::BTreeSet<&str> =
        outcomes.iter().filter(|o| o.failure.is_none()).filter_map(|o| o.study.as_deref()).collect();
    let study_url = match (study, studies.len()) {
        (Some(s), _) => Some(s.to_string()),
        (None, 1) => studies.iter().next().map(|s| s.to_string()),
        _ => None,
    };
    if let Some(s) = study_url {
        set_str(&mut ds, "00081190", "UR", &format!("{base}/studies/{s}"));
    }
    // Nothing stored only because of the archive (full disk, failed storage): a 503 the client
    // may retry, not a 409 that blames its data.
    let status = match (referenced.is_empty(), failed.is_empty()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, _) if outcomes.iter().all(|o| o.server_fault) => StatusCode::SERVICE_UNAVAILABLE,
        (true, _) => StatusCode::CONFLICT,
    };
    if !failed.is_empty() {
        set_seq(&mut ds, "00081198", failed);
    }
    if !referenced.is_empty() {
        set_seq(&mut ds, "00081199", referenced);
    }
    let mut rsp = (status, Json::Object(ds).to_string()).into_response();
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/dicom+json"));
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn content_types() {
        assert_eq!(
            check_content_type(&ct(r#"multipart/related; type="application/dicom"; boundary=abc"#)).unwrap(),
            "abc"
        );
        assert_eq!(check_content_type(&ct("multipart/related; boundary=\"x y\"")).unwrap(), "x y");
        let status = |v: &str| check_content_type(&ct(v)).unwrap_err().status;
        assert_eq!(status("application/dicom"), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            status(r#"multipart/related; type="application/dicom+json"; boundary=a"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(status(r#"multipart/related; type="application/dicom""#), StatusCode::BAD_REQUEST);
        assert_eq!(check_content_type(&HeaderMap::new()).unwrap_err().status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
