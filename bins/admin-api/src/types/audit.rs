//! The audit trail: records, the export filter and the chain's verdict.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// An object an audit record is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditObject {
    /// The patient (ID, or ID^^^ISSUER).
    pub patient: String,
    /// Study Instance UID.
    pub study: String,
    /// SOP Instance UID, when about one instance.
    pub sop_instance: Option<String>,
    /// BLAKE3 of the object, hex.
    pub checksum: Option<String>,
}

/// One record of the hash-chained audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    /// Sequence number (1, 2, ...).
    pub seq: u64,
    /// Hash of the previous record, hex.
    pub prev_hash: String,
    /// This record's hash, hex.
    pub hash: String,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// What happened, e.g. `deletion_completed`, `legal_hold_set`, `instance_stored`.
    pub action: String,
    /// Who: a user, an AE title, a rule.
    pub actor: String,
    /// From where.
    pub actor_address: String,
    /// What it touched.
    pub objects: Vec<AuditObject>,
    /// Why.
    pub reason: Option<String>,
    /// `success` or `failure`.
    pub outcome: String,
    /// More detail.
    pub detail: Option<String>,
}

/// `GET /api/audit` as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// The matching records, oldest first.
    pub records: Vec<AuditRecord>,
}

/// Export format of `GET /api/audit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditFormat {
    /// `{"records": [...]}`.
    #[default]
    Json,
    /// One line per record, with a header line.
    Csv,
}

/// The filter of `GET /api/audit`; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Records at or after (YYYY-MM-DD or RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Records before (YYYY-MM-DD or RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Records touching this patient (ID, or ID^^^ISSUER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// Records touching this study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
    /// Records of one action (e.g. `deletion_completed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `json` (default) or `csv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AuditFormat>,
    /// Most records (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `GET /api/audit/verify`: the hash chain's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerdict {
    /// Every link verified.
    pub intact: bool,
    /// Records verified (when intact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// The first broken link (when not intact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
