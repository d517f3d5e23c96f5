//! Deletions (with their certificates) and legal holds.

use super::PatientIdentity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// `POST /api/studies/{study}/delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// Why (recorded in the audit trail and the certificate).
    pub reason: String,
    /// Minutes before the study is hidden and purged (default: `[retention] grace_minutes`).
    #[serde(default)]
    pub grace_minutes: Option<u64>,
}

/// Where a deletion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeletionState {
    /// Marked; hidden once its grace period ends; can be undone.
    Marked,
    /// Copies are being deleted.
    Purging,
    /// Every copy is gone; the certificate is complete.
    Purged,
    /// Undone before its purge.
    Cancelled,
}

/// What decided a deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeletionCause {
    /// A retention rule.
    Rule {
        /// Rule name.
        name: String,
        /// Rule version.
        version: u32,
        /// Digest of the rule file in force.
        rules_digest: String,
    },
    /// A person's request.
    Request,
    /// An IHE IOCM rejection note.
    Rejection {
        /// SOP Instance UID of the note.
        note: String,
        /// Its document title.
        title: String,
    },
}

/// One instance a deletion removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CertifiedInstance {
    /// SOP Instance UID.
    pub sop_instance: String,
    /// SOP Class UID.
    pub sop_class: String,
    /// Series Instance UID.
    pub series: String,
    /// Bytes.
    pub size: u64,
    /// BLAKE3 of the object, hex.
    pub checksum: String,
    /// Tiers its copies were deleted from.
    pub tiers: Vec<String>,
    /// Sequence number of the audit record of its deletion.
    pub audit_seq: u64,
}

/// A deletion's certificate: what was removed, from where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Certificate {
    /// Every instance removed (empty in summaries; see `instance_count`).
    pub instances: Vec<CertifiedInstance>,
    /// Instances removed.
    pub instance_count: u64,
    /// Bytes removed.
    pub total_bytes: u64,
    /// Copies removed per tier.
    pub copies_per_tier: BTreeMap<String, u64>,
    /// Copies whose bytes stay inside a shared container (e.g. an S3 bundle) until it is repacked.
    pub deferred_object_deletes: u64,
}

/// A deletion of a study or of some of its instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Deletion {
    /// Deletion id.
    pub id: u64,
    /// Study Instance UID.
    pub study: String,
    /// The instances, when not the whole study.
    pub instances: Option<Vec<String>>,
    /// The study's patient.
    pub patient: PatientIdentity,
    /// The study's accession number.
    pub accession: Option<String>,
    /// Who asked (a user, or `policy` for rules).
    pub requested_by: String,
    /// From where.
    pub requested_from: String,
    /// Why.
    pub reason: String,
    /// What decided it.
    pub cause: DeletionCause,
    /// Where it stands.
    pub state: DeletionState,
    /// When it was marked.
    #[serde(with = "time::serde::rfc3339")]
    pub marked_at: OffsetDateTime,
    /// When the study is hidden and the purge may start.
    #[serde(with = "time::serde::rfc3339")]
    pub hide_at: OffsetDateTime,
    /// Hidden from the moment it was marked.
    pub hide_immediately: bool,
    /// Instances received up to this time are covered.
    #[serde(with = "time::serde::rfc3339")]
    pub covers_received_until: OffsetDateTime,
    /// When the purge started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub purge_started_at: Option<OffsetDateTime>,
    /// When it was purged or cancelled.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Why it was cancelled.
    pub cancelled: Option<String>,
    /// Audit records of its steps.
    pub audit_seqs: Vec<u64>,
    /// What it removed so far.
    pub certificate: Certificate,
}

/// `GET /api/deletions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeletionList {
    /// Every deletion, with certificate summaries.
    pub deletions: Vec<Deletion>,
}

/// `GET /api/deletions/{id}/certificate`: the deletion, every instance removed and its audit records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeletionCertificate {
    /// The deletion with its full certificate.
    pub deletion: Deletion,
    /// The purge is finished: the certificate is final.
    pub complete: bool,
    /// The audit records of the deletion's steps.
    pub audit_records: Vec<super::AuditRecord>,
}

/// What a legal hold covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HoldScope {
    /// Every study of a patient.
    Patient {
        /// The patient.
        patient: PatientIdentity,
    },
    /// One study.
    Study {
        /// Study Instance UID.
        study: String,
    },
    /// Every study with an accession number.
    Accession {
        /// Accession Number.
        accession: String,
    },
}

impl std::fmt::Display for HoldScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldScope::Patient { patient } => write!(f, "patient {patient}"),
            HoldScope::Study { study } => write!(f, "study {study}"),
            HoldScope::Accession { accession } => write!(f, "accession {accession}"),
        }
    }
}

/// `POST /api/holds`: name exactly one of `study`, `accession` or `patient_id` (with `issuer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// Study Instance UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
    /// Accession Number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accession: Option<String>,
    /// Patient ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    /// Issuer of the Patient ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Why (case number, request).
    pub reason: String,
}

/// A legal hold: no rule or person can delete what it covers while it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LegalHold {
    /// Hold id.
    pub id: u64,
    /// What it covers.
    pub scope: HoldScope,
    /// Why.
    pub reason: String,
    /// Who set it.
    pub set_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub set_at: OffsetDateTime,
}

/// `GET /api/holds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HoldList {
    /// The holds standing.
    pub holds: Vec<LegalHold>,
}

/// `POST /api/holds/{id}/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HoldReleased {
    /// The hold that was released.
    pub released: LegalHold,
}
