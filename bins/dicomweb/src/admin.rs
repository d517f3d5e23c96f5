//! The admin API under `/api` (described by `docs/openapi.json`, served at
//! `/api/openapi.json`), health checks and the Prometheus exposition.

use crate::error::ApiError;
use crate::{study_uid, AppState};
use archive_core::attribute::Attribute;
use archive_core::catalog::Catalog;
use archive_core::tier::Availability;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The OpenAPI description of the admin API, kept in the repository.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// `GET /readyz`: ready when the catalog answers.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.archive.catalog().stats() {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("catalog unavailable: {e}")).into_response(),
    }
}

/// `GET /metrics`: every metric of the process in Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(stats) = state.archive.catalog().stats() {
        for (tier, usage) in &stats.tiers {
            state.metrics.tier_objects.with_label_values(&[tier]).set(usage.objects as i64);
            state.metrics.tier_bytes.with_label_values(&[tier]).set(usage.bytes as i64);
        }
    }
    state.metrics.commit_queue.set(state.archive.catalog().commit_queue_depth() as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.archive.metrics().render()).into_response()
}

/// `GET /api/openapi.json`.
pub async fn openapi() -> Response {
    let mut rsp = OPENAPI.into_response();
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp
}

/// `GET /api/stats`: what the archive holds, per tier, and the ingest rate.
pub async fn stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let archive = state.archive.clone();
    let stats = tokio::task::spawn_blocking(move || archive.catalog().stats()).await??;
    let (per_minute, bytes_per_minute) = state.archive.ingest().last_minute();
    let tiers: BTreeMap<String, Value> = state
        .archive
        .tiers()
        .iter()
        .map(|t| {
            let usage = stats.tiers.get(t.name().as_str()).copied().unwrap_or_default();
            let caps = t.capabilities();
            (
                t.name().to_string(),
                json!({
                    "objects": usage.objects,
                    "bytes": usage.bytes,
                    "availability": caps.availability.as_dicom(),
                    "needs_recall": caps.needs_recall,
                }),
            )
        })
        .collect();
    Ok(Json(json!({
        "patients": stats.patients,
        "studies": stats.studies,
        "series": stats.series,
        "instances": stats.instances,
        "bytes": stats.bytes,
        "tiers": tiers,
        "ingest": {
            "instances_last_minute": per_minute,
            "bytes_last_minute": bytes_per_minute,
            "instances_per_second": per_minute as f64 / 60.0,
        },
        "catalog_commit_queue": state.archive.catalog().commit_queue_depth(),
    })))
}

/// `GET /api/studies/{study}`: a study's summary with its series, their tiers and availability.
pub async fn study_summary(state: AppState, raw_study: String) -> Result<Json<Value>, ApiError> {
    let uid = study_uid(&raw_study)?;
    let archive = state.archive.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let catalog = archive.catalog();
        let Some(study) = catalog.study(&uid)? else { return Ok(None) };
        let series = catalog.series_of_study(&uid)?;
        let instances = catalog.instances_of_study(&uid)?;
        Ok(Some((study, series, instances)))
    })
    .await??;
    let Some((study, series, instances)) = found else {
        return Err(ApiError::not_found(format!("study {raw_study} is not in the archive")));
    };
    let retrieve = state.archive.retrieve();
    let series_json: Vec<Value> = series
        .iter()
        .map(|s| {
            let mut tiers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            let mut availability = Availability::Online;
            for i in instances.iter().filter(|i| i.series == s.uid) {
                for l in &i.locations {
                    let e = tiers.entry(l.tier.to_string()).or_default();
                    e.0 += 1;
                    e.1 += i.size;
                }
                availability = availability.max(retrieve.availability(i));
            }
            let tiers: BTreeMap<String, Value> =
                tiers.into_iter().map(|(k, (n, b))| (k, json!({"objects": n, "bytes": b}))).collect();
            json!({
                "series_instance_uid": s.uid.as_str(),
                "modality": s.attrs.get(Attribute::Modality),
                "series_number": s.attrs.get(Attribute::SeriesNumber),
                "description": s.attrs.get(Attribute::SeriesDescription),
                "instance_count": s.instance_count,
                "size_bytes": s.size_bytes,
                "source": {"actor": s.source.actor, "address": s.source.address},
                "received_at": s.created_at.format(&time::format_description::well_known::Rfc3339).ok(),
                "tiers": tiers,
                "availability": availability.as_dicom(),
            })
        })
        .collect();
    let rfc3339 = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).ok();
    Ok(Json(json!({
        "study_instance_uid": study.uid.as_str(),
        "patient": {
            "id": study.patient.patient_id,
            "issuer": study.patient.issuer,
            "name": study.attrs.get(Attribute::PatientName),
            "birth_date": study.attrs.get(Attribute::PatientBirthDate),
            "sex": study.attrs.get(Attribute::PatientSex),
        },
        "study_date": study.attrs.get(Attribute::StudyDate),
        "study_time": study.attrs.get(Attribute::StudyTime),
        "accession_number": study.attrs.get(Attribute::AccessionNumber),
        "description": study.attrs.get(Attribute::StudyDescription),
        "modalities": study.modalities,
        "series_count": study.series_count,
        "instance_count": study.instance_count,
        "size_bytes": study.size_bytes,
        "created_at": rfc3339(study.created_at),
        "updated_at": rfc3339(study.updated_at),
        "last_access": study.last_access.and_then(rfc3339),
        "series": series_json,
    })))
}
