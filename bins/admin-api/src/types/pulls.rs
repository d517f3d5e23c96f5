//! Pulls: jobs that bring a legacy PACS's studies into vna (`[[pull.sources]]`),
//! with their progress and reconciliation reports. (Moves of studies between vna's own
//! tiers are tier jobs, see `lifecycle`.)

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// `POST /api/pulls`: pull every study of a source with a StudyDate in the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// The source's name under `[[pull.sources]]`.
    pub source: String,
    /// First study date (YYYY-MM-DD); none: from the beginning.
    #[serde(default)]
    pub since: Option<String>,
    /// Last study date (YYYY-MM-DD), included; none: to the end.
    #[serde(default)]
    pub until: Option<String>,
}

/// How a source is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullSourceKind {
    /// C-FIND to plan, C-MOVE to fetch.
    Dimse,
    /// QIDO-RS to plan, WADO-RS to fetch.
    Dicomweb,
}

/// Where a pull stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullState {
    /// Listing the source's studies.
    Planning,
    /// Fetching.
    Running,
    /// Every study handled.
    Done,
    /// Stopped on an error.
    Failed,
    /// Cancelled by a person.
    Cancelled,
}

impl PullState {
    /// The pull will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, PullState::Done | PullState::Failed | PullState::Cancelled)
    }
}

/// A pull's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullCounters {
    /// Studies planned.
    pub studies_total: u64,
    /// Studies handled (fetched, present or failed).
    pub studies_handled: u64,
    /// Studies fetched.
    pub studies_fetched: u64,
    /// Studies vna already held complete.
    pub studies_present: u64,
    /// Studies that failed.
    pub studies_failed: u64,
    /// Instances the source reported.
    pub instances_remote: u64,
    /// Instances received.
    pub instances_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Fetch attempts.
    pub fetches: u64,
}

/// The study being fetched now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CurrentStudy {
    /// Study Instance UID.
    pub study: String,
    /// Instances the source reported.
    pub remote_instances: Option<u64>,
    /// Instances received so far.
    pub received: u64,
    /// Bytes received so far.
    pub bytes: u64,
}

/// A pull with its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullJob {
    /// Pull id.
    pub id: u64,
    /// The source's name.
    pub source: String,
    /// How the source is read.
    pub kind: PullSourceKind,
    /// First study date.
    pub since: Option<String>,
    /// Last study date.
    pub until: Option<String>,
    /// Who started it.
    pub requested_by: String,
    /// From where.
    pub requested_from: String,
    /// Where it stands.
    pub state: PullState,
    /// When it was started.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Times it was resumed after a restart.
    pub resumes: u32,
    /// The last error.
    pub last_error: Option<String>,
    /// Its counters.
    pub counters: PullCounters,
    /// The study being fetched now.
    pub current: Option<CurrentStudy>,
}

/// `GET /api/pulls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullList {
    /// Every pull, newest first.
    pub pulls: Vec<PullJob>,
}

/// Where one study of a pull stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullStudyState {
    /// Not handled yet.
    Pending,
    /// Being fetched.
    Fetching,
    /// Fetched.
    Done,
    /// vna already held it complete.
    Present,
    /// Failed.
    Failed,
}

/// One study of a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullStudy {
    /// Study Instance UID.
    pub uid: String,
    /// Instances the source reported.
    pub remote_instances: Option<u64>,
    /// Patient ID at the source.
    pub patient_id: String,
    /// Study date at the source.
    pub study_date: String,
    /// Where it stands.
    pub state: PullStudyState,
    /// Instances vna holds.
    pub local_instances: Option<u64>,
    /// Fetch attempts.
    pub fetches: u32,
    /// Instances received.
    pub received: u64,
    /// Bytes received.
    pub bytes: u64,
    /// The last error.
    pub error: Option<String>,
}

/// `GET /api/pulls/{id}/studies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullStudyList {
    /// The pull's studies.
    pub studies: Vec<PullStudy>,
}

/// Studies and instances on one side of a reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Side {
    /// Studies.
    pub studies: u64,
    /// Instances.
    pub instances: u64,
}

/// A study whose instance counts differ between the source and vna.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Mismatch {
    /// Study Instance UID.
    pub study: String,
    /// Patient ID.
    pub patient_id: String,
    /// Instances at the source.
    pub remote_instances: u64,
    /// Instances in vna.
    pub local_instances: u64,
}

/// A study that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Failure {
    /// Study Instance UID.
    pub study: String,
    /// Why.
    pub error: String,
}

/// `GET /api/pulls/{id}/report`: the reconciliation report (a snapshot while it runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullReport {
    /// Pull id.
    pub pull: u64,
    /// The source's name.
    pub source: String,
    /// First study date.
    pub since: Option<String>,
    /// Last study date.
    pub until: Option<String>,
    /// Where the pull stands.
    pub state: PullState,
    /// The pull has ended: this report is final.
    pub r#final: bool,
    /// When the report was made.
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// What the source holds.
    pub remote: Side,
    /// What vna holds of it.
    pub local: Side,
    /// The pull's counters.
    pub counters: PullCounters,
    /// Studies whose counts differ.
    pub mismatches: Vec<Mismatch>,
    /// Studies whose count the source did not report.
    pub unverified: Vec<String>,
    /// Studies that failed.
    pub failures: Vec<Failure>,
    /// Studies not handled yet.
    pub pending: u64,
    /// The pull's error.
    pub error: Option<String>,
    /// Both sides agree.
    pub reconciled: bool,
}
