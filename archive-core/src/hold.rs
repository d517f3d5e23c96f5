//! Legal holds: a patient, study or accession number whose data no deletion may touch.
//!
//! A hold stands until it is released; while it stands, deletion requests for what it covers
//! are refused, marked deletions it covers are cancelled, and a purge re-checks the holds just
//! before it starts. Holds are kept in the catalog and every change is audited.

use crate::model::PatientKey;
use crate::uid::StudyUid;
use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;

/// Identifies a legal hold (unique, increasing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HoldId(pub u64);

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a hold covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HoldScope {
    /// Every study of a patient (Patient ID within its issuer's domain).
    Patient {
        /// The patient.
        patient: PatientKey,
    },
    /// One study.
    Study {
        /// The study.
        study: StudyUid,
    },
    /// Every study with this Accession Number.
    Accession {
        /// The accession number.
        accession: String,
    },
}

impl fmt::Display for HoldScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldScope::Patient { patient } => write!(f, "patient {}^^^{}", patient.patient_id, patient.issuer),
            HoldScope::Study { study } => write!(f, "study {study}"),
            HoldScope::Accession { accession } => write!(f, "accession {accession}"),
        }
    }
}

/// Current version of the legal hold record format.
pub const HOLD_VERSION: u32 = 1;

crate::first_format!(LegalHold, "legal hold record", HOLD_VERSION);

/// A legal hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHold {
    /// Format version.
    pub v: u32,
    /// Identifier.
    pub id: HoldId,
    /// What it covers.
    pub scope: HoldScope,
    /// Why (case number, request).
    pub reason: String,
    /// Who set it.
    pub set_by: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub set_at: OffsetDateTime,
}

impl LegalHold {
    /// Whether the hold covers a study of `patient` with `accession`.
    pub fn covers(&self, study: &StudyUid, patient: &PatientKey, accession: Option<&str>) -> bool {
        match &self.scope {
            HoldScope::Patient { patient: p } => p == patient,
            HoldScope::Study { study: s } => s == study,
            HoldScope::Accession { accession: a } => accession.is_some_and(|x| x.trim() == a.trim()),
        }
    }
}

/// The first hold in `holds` that covers the study, if any.
pub fn first_covering<'a>(
    holds: &'a [LegalHold],
    study: &StudyUid,
    patient: &PatientKey,
    accession: Option<&str>,
) -> Option<&'a LegalHold> {
    holds.iter().find(|h| h.covers(study, patient, accession))
}
