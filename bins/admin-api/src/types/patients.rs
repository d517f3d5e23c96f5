//! Patient identity links: re-filing one identity's studies under another.

use super::PatientIdentity;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// `POST /api/patients/link`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The identity whose studies move.
    pub from: PatientIdentity,
    /// The identity they move to.
    pub to: PatientIdentity,
    /// Why (recorded in the audit trail).
    pub reason: String,
}

/// A study a link re-filed, with what it was filed under before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkedStudy {
    /// Study Instance UID.
    pub study: String,
    /// The identity it had.
    pub previous_patient: PatientIdentity,
    /// The patient attributes it had, by DICOM keyword.
    pub previous_attrs: BTreeMap<String, String>,
}

/// A link of two patient identities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PatientLink {
    /// Link id.
    pub id: u64,
    /// The identity whose studies moved.
    pub from: PatientIdentity,
    /// The identity they moved to.
    pub to: PatientIdentity,
    /// The patient attributes of the target identity, by DICOM keyword.
    pub to_attrs: BTreeMap<String, String>,
    /// The studies re-filed.
    pub studies: Vec<LinkedStudy>,
    /// Who linked.
    pub linked_by: String,
    /// Why.
    pub reason: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub linked_at: OffsetDateTime,
    /// Why it was undone, when it was.
    pub undone: Option<String>,
}

/// `GET /api/patient-links`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkList {
    /// Every link, standing or undone.
    pub links: Vec<PatientLink>,
}
