//! Tier moves of studies (lifecycle jobs) and the integrity scrub.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// `POST /api/studies/{study}/move`: move or copy a study's copies to a tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The target tier.
    pub to: String,
    /// Only copies on this tier (default: the best copy of each instance).
    #[serde(default)]
    pub from: Option<String>,
    /// Keep the source copies (a copy, not a move).
    #[serde(default)]
    pub keep_source: bool,
    /// Why (recorded in the audit trail).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Why a tier job exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TierJobKind {
    /// Asked for by a person or a rule.
    Move,
    /// Started by a retrieve of a study with no online copy.
    Recall,
}

/// Where a tier job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TierJobState {
    /// Waiting for a worker.
    Queued,
    /// Copying.
    Running,
    /// Waiting for its source tier to stage the copies (a recall from cold storage).
    WaitingForRecall,
    /// Every instance is where the job wants it.
    Done,
    /// Stopped on an error it cannot get past.
    Failed,
}

impl TierJobState {
    /// The job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, TierJobState::Done | TierJobState::Failed)
    }
}

/// A move or recall of one study's copies between tiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TierJob {
    /// Job id.
    pub id: u64,
    /// Why it exists.
    pub kind: TierJobKind,
    /// Study Instance UID.
    pub study: String,
    /// The tier whose copies are copied (none: the best copy of each instance).
    pub from: Option<String>,
    /// The tier the copies go to.
    pub to: String,
    /// The source copies are kept.
    pub keep_source: bool,
    /// Who asked: a user, a rule, or `lifecycle` for recalls.
    pub requested_by: String,
    /// Why.
    pub reason: Option<String>,
    /// Where it stands.
    pub state: TierJobState,
    /// Instances of the study when the job last listed them.
    pub instances_total: u64,
    /// Instances already where the job wants them.
    pub instances_done: u64,
    /// Instances that could not be handled.
    pub instances_failed: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// `GET /api/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TierJobList {
    /// Every job the archive remembers.
    pub jobs: Vec<TierJob>,
}

/// The integrity scrub's current or last pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScrubStatus {
    /// A pass is running.
    pub running: bool,
    /// When the current or last pass started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When the last pass ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Studies in the catalog when the pass started.
    pub studies_total: u64,
    /// Studies checked so far.
    pub studies_checked: u64,
    /// Copies read back and found intact.
    pub copies_ok: u64,
    /// Bytes read back.
    pub bytes_checked: u64,
    /// Copies not read because their tier needs a recall first.
    pub copies_skipped: u64,
    /// Copies damaged, missing or unreadable.
    pub copies_failed: u64,
    /// The last failure found.
    pub last_failure: Option<String>,
}
