//! The admin API's contract: every request body, query and response body, as serde types.
//!
//! The server answers with these types, the CLI and any other client decode them, and
//! `docs/openapi.json` is generated from them: a renamed field fails to compile in the CLI
//! and shows as a diff of the OpenAPI file, instead of printing an empty string.
//!
//! These types are the wire format, not the archive's records: they hold plain strings,
//! numbers and RFC 3339 times, and the server converts the core's records into them
//! (`crate::server::convert`), so a change of an on-disk record does not change the API
//! unnoticed.

mod archive;
mod audit;
mod error;
mod lifecycle;
mod patients;
mod policy;
mod pulls;
mod retention;

pub use archive::*;
pub use audit::*;
pub use error::*;
pub use lifecycle::*;
pub use patients::*;
pub use policy::*;
pub use pulls::*;
pub use retention::*;

/// A body that carries only the reason of an action (recorded in the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why (recorded in the audit trail).
    pub reason: String,
}

/// A patient identity: Patient ID with its issuer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientIdentity {
    /// Patient ID (0010,0020).
    pub patient_id: String,
    /// Issuer of Patient ID (0010,0021), empty when unknown.
    #[serde(default)]
    pub issuer: String,
}

impl PatientIdentity {
    /// Parses the CLI's spelling `ID` or `ID^^^ISSUER`.
    pub fn parse(raw: &str) -> Self {
        let (id, issuer) = raw.split_once("^^^").unwrap_or((raw, ""));
        Self { patient_id: id.to_string(), issuer: issuer.to_string() }
    }
}

impl std::fmt::Display for PatientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.issuer.is_empty() {
            write!(f, "{}", self.patient_id)
        } else {
            write!(f, "{}^^^{}", self.patient_id, self.issuer)
        }
    }
}

/// A count of studies and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Totals {
    /// Studies.
    pub studies: u64,
    /// Bytes.
    pub bytes: u64,
}
