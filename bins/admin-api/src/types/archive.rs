//! What the archive holds: counts, tiers and one study's summary.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// `GET /api/stats`: what the archive holds, per tier, and the ingest rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Patients.
    pub patients: u64,
    /// Studies.
    pub studies: u64,
    /// Series.
    pub series: u64,
    /// Instances.
    pub instances: u64,
    /// Bytes of all instances (one copy each).
    pub bytes: u64,
    /// Usage of each configured tier, by name.
    pub tiers: BTreeMap<String, TierStats>,
    /// Ingest over the last minute.
    pub ingest: IngestRate,
    /// Catalog commits waiting for the committer.
    pub catalog_commit_queue: u64,
}

/// One tier's usage and capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TierStats {
    /// Copies held.
    pub objects: u64,
    /// Bytes held.
    pub bytes: u64,
    /// DICOM availability of its copies: `ONLINE`, `NEARLINE` or `OFFLINE`.
    pub availability: String,
    /// Copies must be recalled to another tier before they can be read.
    pub needs_recall: bool,
}

/// Ingest over the last minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IngestRate {
    /// Instances stored in the last minute.
    pub instances_last_minute: u64,
    /// Bytes stored in the last minute.
    pub bytes_last_minute: u64,
    /// Instances per second over the last minute.
    pub instances_per_second: f64,
}

/// Copies and bytes on one tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TierUsage {
    /// Copies.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The patient of a study as the archive holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PatientSummary {
    /// Patient ID (0010,0020).
    pub id: String,
    /// Issuer of Patient ID (0010,0021).
    pub issuer: String,
    /// Patient's Name (0010,0010).
    pub name: Option<String>,
    /// Patient's Birth Date (0010,0030), DICOM DA.
    pub birth_date: Option<String>,
    /// Patient's Sex (0010,0040).
    pub sex: Option<String>,
}

/// Who sent a series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SourceSummary {
    /// Calling AE title, or the HTTP user.
    pub actor: String,
    /// Network address.
    pub address: String,
}

/// One series of a study summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeriesSummary {
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Modality (0008,0060).
    pub modality: Option<String>,
    /// Series Number (0020,0011).
    pub series_number: Option<String>,
    /// Series Description (0008,103E).
    pub description: Option<String>,
    /// Instances.
    pub instance_count: u64,
    /// Bytes.
    pub size_bytes: u64,
    /// Who sent it.
    pub source: SourceSummary,
    /// When it was first received.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Copies and bytes per tier.
    pub tiers: BTreeMap<String, TierUsage>,
    /// The series' availability: `ONLINE`, `NEARLINE` or `OFFLINE`.
    pub availability: String,
}

/// `GET /api/studies/{study}`: a study's summary with its series, their tiers and availability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StudySummary {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// The patient.
    pub patient: PatientSummary,
    /// Study Date (0008,0020).
    pub study_date: Option<String>,
    /// Study Time (0008,0030).
    pub study_time: Option<String>,
    /// Accession Number (0008,0050).
    pub accession_number: Option<String>,
    /// Study Description (0008,1030).
    pub description: Option<String>,
    /// Modalities in the study.
    pub modalities: Vec<String>,
    /// Series.
    pub series_count: u64,
    /// Instances.
    pub instance_count: u64,
    /// Bytes.
    pub size_bytes: u64,
    /// When the first instance arrived.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the study last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When it was last retrieved.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_access: Option<OffsetDateTime>,
    /// Its series.
    pub series: Vec<SeriesSummary>,
}
