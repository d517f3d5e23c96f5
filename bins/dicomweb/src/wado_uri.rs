//! WADO-URI (PS3.18 §9): `GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..`
//! with `contentType=application/dicom` (vna does not render images), optionally
//! `transferSyntax=<uid>` (uncompressed syntaxes are converted).

use crate::error::ApiError;
use crate::wado::{records, Target};
use crate::{instance_uid, series_uid, study_uid, AppState};
use archive_core::transcode::{can_convert, transcode_part10};
use archive_core::uid::TransferSyntaxUid;
use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use futures::StreamExt;
use std::collections::HashMap;

/// Answers a WADO-URI request.
pub async fn wado(
    state: AppState,
    raw_query: Option<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw_query.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    let params: HashMap<String, String> = pairs.into_iter().collect();
    let get = |name: &str| params.get(name).map(String::as_str);
    if get("requestType") != Some("WADO") {
        return Err(ApiError::bad_request("requestType=WADO is required"));
    }
    let need = |name: &str| get(name).ok_or_else(|| ApiError::bad_request(format!("{name} is required")));
    let study = study_uid(need("studyUID")?)?;
    let series = series_uid(need("seriesUID")?)?;
    let instance = instance_uid(need("objectUID")?)?;
    let content_type = get("contentType").unwrap_or("image/jpeg");
    let wants_dicom = content_type
        .split(',')
        .filter_map(crate::media::parse_one)
        .any(|m| m.essence == "application/dicom" || m.essence == "*/*");
    if !wants_dicom {
        return Err(ApiError::not_acceptable(format!(
            "contentType {content_type:?} is not served: vna returns objects as contentType=application/dicom and does not render images"
        )));
    }
    let wanted = match get("transferSyntax") {
        None | Some("*") => None,
        Some(ts) => Some(
            TransferSyntaxUid::new(ts)
                .map_err(|e| ApiError::bad_request(format!("transferSyntax {ts:?} is not a UID: {e}")))?,
        ),
    };
    let record = records(&state, &Target::Instance(study, series, instance))
        .await?
        .into_iter()
        .next()
        .expect("records() never returns none");
    state.archive.audit_retrieve("WADO-URI", &crate::peer_of(&headers), std::slice::from_ref(&record), "WADO-URI");
    let retrieve = state.archive.retrieve();
    let body = match wanted {
        Some(ts) if ts != record.transfer_syntax => {
            if !can_convert(record.transfer_syntax.as_str(), ts.as_str()) {
                return Err(ApiError::not_acceptable(format!(
                    "the object is stored in {} and cannot be converted to {ts}",
                    record.transfer_syntax
                )));
            }
            let (record, bytes) = retrieve.read(record).await?;
            let out = tokio::task::spawn_blocking(move || {
                transcode_part10(&bytes, record.transfer_syntax.as_str(), &ts, &record.sop_class, &record.uid)
                    .map_err(|e| ApiError::not_acceptable(format!("the object cannot be given in {ts}: {e}")))
            })
            .await??;
            Body::from(out)
        }
        _ => {
            let obj = retrieve.open(record).await?;
            Body::from_stream(obj.body.map(|r| r.map_err(std::io::Error::other)))
        }
    };
    let mut rsp = Response::new(body);
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/dicom"));
    Ok(rsp)
}
