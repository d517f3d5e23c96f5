//! What the archive holds: counts per tier and one study's summary.

use super::study_uid;
use crate::server::auth::Public;
use crate::server::error::ApiError;
use crate::server::extract::PathParam;
use crate::types::{
    ErrorBody, IngestRate, PatientSummary, SeriesSummary, SourceSummary, Stats, StudySummary, TierStats, TierUsage,
};
use archive_core::attribute::Attribute;
use archive_core::catalog::Catalog;
use archive_core::tier::Availability;
use axum::Json;
use std::collections::BTreeMap;

/// What the archive holds, per tier, and the ingest rate.
#[utoipa::path(get, path = "/api/stats", tag = "archive", responses((status = 200, body = Stats)))]
pub(super) async fn stats(Public { state }: Public) -> Result<Json<Stats>, ApiError> {
    let archive = state.archive.clone();
    let stats = tokio::task::spawn_blocking(move || archive.catalog().stats()).await??;
    let (per_minute, bytes_per_minute) = state.archive.ingest().last_minute();
    let tiers = state
        .archive
        .tiers()
        .iter()
        .map(|t| {
            let usage = stats.tiers.get(t.name().as_str()).copied().unwrap_or_default();
            let caps = t.capabilities();
            let entry = TierStats {
                objects: usage.objects,
                bytes: usage.bytes,
                availability: caps.availability.as_dicom().to_string(),
                needs_recall: caps.needs_recall,
            };
            (t.name().to_string(), entry)
        })
        .collect();
    Ok(Json(Stats {
        patients: stats.patients,
        studies: stats.studies,
        series: stats.series,
        instances: stats.instances,
        bytes: stats.bytes,
        tiers,
        ingest: IngestRate {
            instances_last_minute: per_minute,
            bytes_last_minute: bytes_per_minute,
            instances_per_second: per_minute as f64 / 60.0,
        },
        catalog_commit_queue: state.archive.catalog().commit_queue_depth() as u64,
    }))
}

/// A study's summary: patient, study attributes, series with their tiers and availability.
#[utoipa::path(get, path = "/api/studies/{study}", tag = "archive",
    params(("study" = String, Path, description = "Study Instance UID")),
    responses(
        (status = 200, body = StudySummary),
        (status = 400, description = "not a valid UID", body = ErrorBody),
        (status = 404, description = "not in the archive", body = ErrorBody),
    ))]
pub(super) async fn study(Public { state }: Public, PathParam(raw): PathParam) -> Result<Json<StudySummary>, ApiError> {
    let uid = study_uid(&raw)?;
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
        return Err(ApiError::not_found(format!("study {raw} is not in the archive")));
    };
    let retrieve = state.archive.retrieve();
    let text = |v: Option<&str>| v.map(str::to_string);
    let series = series
        .iter()
        .map(|s| {
            let mut tiers: BTreeMap<String, TierUsage> = BTreeMap::new();
            let mut availability = Availability::Online;
            for i in instances.iter().filter(|i| i.series == s.uid) {
                for l in &i.locations {
                    let usage = tiers.entry(l.tier.to_string()).or_default();
                    usage.objects += 1;
                    usage.bytes += i.size;
                }
                availability = availability.max(retrieve.availability(i));
            }
            SeriesSummary {
                series_instance_uid: s.uid.to_string(),
                modality: text(s.attrs.get(Attribute::Modality)),
                series_number: text(s.attrs.get(Attribute::SeriesNumber)),
                description: text(s.attrs.get(Attribute::SeriesDescription)),
                instance_count: s.instance_count,
                size_bytes: s.size_bytes,
                source: SourceSummary { actor: s.source.actor.clone(), address: s.source.address.clone() },
                received_at: s.created_at,
                tiers,
                availability: availability.as_dicom().to_string(),
            }
        })
        .collect();
    Ok(Json(StudySummary {
        study_instance_uid: study.uid.to_string(),
        patient: PatientSummary {
            id: study.patient.patient_id.clone(),
            issuer: study.patient.issuer.clone(),
            name: text(study.attrs.get(Attribute::PatientName)),
            birth_date: text(study.attrs.get(Attribute::PatientBirthDate)),
            sex: text(study.attrs.get(Attribute::PatientSex)),
        },
        study_date: text(study.attrs.get(Attribute::StudyDate)),
        study_time: text(study.attrs.get(Attribute::StudyTime)),
        accession_number: text(study.attrs.get(Attribute::AccessionNumber)),
        description: text(study.attrs.get(Attribute::StudyDescription)),
        modalities: study.modalities.iter().cloned().collect(),
        series_count: study.series_count,
        instance_count: study.instance_count,
        size_bytes: study.size_bytes,
        created_at: study.created_at,
        updated_at: study.updated_at,
        last_access: study.last_access,
        series,
    }))
}
