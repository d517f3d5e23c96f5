//! Deletion records and deletion certificates.

use crate::checksum::Checksum;
use crate::model::PatientKey;
use crate::uid::{SopInstanceUid, StudyUid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use time::OffsetDateTime;

/// Current version of the deletion record format.
pub const DELETION_RECORD_VERSION: u32 = 1;

crate::first_format!(Deletion, "deletion record", DELETION_RECORD_VERSION);

/// Identifies a deletion (unique, increasing: microseconds since the epoch at creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeletionId(pub u64);

impl fmt::Display for DeletionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for DeletionId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(DeletionId)
    }
}

/// Where a deletion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionState {
    /// Marked: visible until `hide_at`, undoable until the purge starts.
    Marked,
    /// Being purged: hidden, its instances are leaving the catalog and every tier.
    Purging,
    /// Done: the data is gone; the certificate stays.
    Purged,
    /// Undone before the purge (by a person, or by a legal hold).
    Cancelled,
}

/// Why a deletion was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeletionCause {
    /// A retention rule.
    Rule {
        /// The rule's name.
        name: String,
        /// The rule's version.
        version: u32,
        /// The rule file's digest.
        rules_digest: String,
    },
    /// An administrator's request.
    Request,
    /// An IHE IOCM rejection note (a Key Object Selection).
    Rejection {
        /// The rejection note's SOP Instance UID.
        note: SopInstanceUid,
        /// The note's title code meaning, e.g. "Rejected for Quality Reasons".
        title: String,
    },
}

impl fmt::Display for DeletionCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeletionCause::Rule { name, version, .. } => write!(f, "rule {name} v{version}"),
            DeletionCause::Request => write!(f, "request"),
            DeletionCause::Rejection { title, note } => write!(f, "rejection note {note} ({title})"),
        }
    }
}

/// One deleted instance, as the certificate lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedInstance {
    /// SOP Instance UID.
    pub sop_instance: SopInstanceUid,
    /// SOP Class UID.
    pub sop_class: String,
    /// Series Instance UID.
    pub series: String,
    /// Bytes.
    pub size: u64,
    /// BLAKE3 of the object.
    pub checksum: Checksum,
    /// Tiers its copies were on.
    pub tiers: Vec<String>,
    /// The audit record of the batch that removed it.
    pub audit_seq: u64,
}

/// What a deletion removed, kept after the data is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The instances removed.
    pub instances: Vec<CertifiedInstance>,
    /// Their bytes.
    pub total_bytes: u64,
    /// Copies removed per tier.
    pub copies_per_tier: BTreeMap<String, u64>,
    /// Copies whose tier delete failed at first (removed later by intent recovery).
    pub deferred_object_deletes: u64,
}

/// A deletion: a study (or some of its instances) on its way out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// Format version.
    pub v: u32,
    /// Identifier.
    pub id: DeletionId,
    /// The study.
    pub study: StudyUid,
    /// Only these instances (an IOCM rejection); `None` for the whole study.
    pub instances: Option<Vec<SopInstanceUid>>,
    /// The study's patient.
    pub patient: PatientKey,
    /// The study's accession number.
    pub accession: Option<String>,
    /// Who asked (user, `policy`, AE title of a rejection note's sender).
    pub requested_by: String,
    /// From where (network address).
    pub requested_from: String,
    /// Why, in words.
    pub reason: String,
    /// What caused it.
    pub cause: DeletionCause,
    /// Where it stands.
    pub state: DeletionState,
    /// When it was marked.
    #[serde(with = "time::serde::rfc3339")]
    pub marked_at: OffsetDateTime,
    /// When it becomes hidden and may be purged (the end of the grace period).
    #[serde(with = "time::serde::rfc3339")]
    pub hide_at: OffsetDateTime,
    /// Hidden from the moment it is marked (IOCM rejections), not only after `hide_at`.
    #[serde(default)]
    pub hide_immediately: bool,
    /// Instances received after this time are not part of the deletion.
    #[serde(with = "time::serde::rfc3339")]
    pub covers_received_until: OffsetDateTime,
    /// When the purge started.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub purge_started_at: Option<OffsetDateTime>,
    /// When it finished (purged) or was cancelled.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub finished_at: Option<OffsetDateTime>,
    /// Who cancelled it and why.
    #[serde(default)]
    pub cancelled: Option<String>,
    /// Audit records of this deletion (marking, each purge batch, completion or cancellation).
    #[serde(default)]
    pub audit_seqs: Vec<u64>,
    /// What was removed so far.
    #[serde(default)]
    pub certificate: Certificate,
}

impl Deletion {
    /// Whether the deletion hides its study (or instances) from queries and retrieves at `now`.
    pub fn hides_at(&self, now: OffsetDateTime) -> bool {
        match self.state {
            DeletionState::Marked => self.hide_immediately || now >= self.hide_at,
            DeletionState::Purging => true,
            DeletionState::Purged | DeletionState::Cancelled => false,
        }
    }
    /// Whether it is still under way (marked or purging).
    pub fn is_active(&self) -> bool {
        matches!(self.state, DeletionState::Marked | DeletionState::Purging)
    }
    /// Whether it covers an instance.
    pub fn covers_instance(&self, sop: &str) -> bool {
        match &self.instances {
            None => true,
            Some(list) => list.iter().any(|u| u.as_str() == sop),
        }
    }
}
