//! Lifecycle jobs as persisted in the catalog: what to do to which study, and how far it got.

use crate::tier::TierName;
use crate::uid::StudyUid;
use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;

/// Current version of the job record format.
pub const JOB_VERSION: u32 = 1;

crate::first_format!(Job, "lifecycle job record", JOB_VERSION);

/// A job's identity: microseconds since the Unix epoch when it was created, made unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for JobId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(JobId)
    }
}

/// Why a job exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// A tier move asked for by an administrator or a policy rule (stored as `migrate`, its
    /// name in format 1).
    #[serde(rename = "migrate")]
    Move,
    /// Started by a retrieve of a study with no online copy.
    Recall,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a free slot.
    Queued,
    /// Copying, verifying, committing and deleting.
    Running,
    /// Waiting for a cold tier to make objects readable.
    WaitingForRecall,
    /// Every instance is where the job wanted it.
    Done,
    /// Stopped with instances left undone (see `last_error`); nothing was lost.
    Failed,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// A migration or recall of one study's copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Format version.
    pub v: u32,
    /// Identity.
    pub id: JobId,
    /// Why it exists.
    pub kind: JobKind,
    /// The study.
    pub study: StudyUid,
    /// The tier whose copies are copied (and dropped unless `keep_source`); `None` reads
    /// from the best available copy.
    pub from: Option<TierName>,
    /// The tier the copies go to.
    pub to: TierName,
    /// Keep the source copy (a copy, not a move).
    pub keep_source: bool,
    /// Who asked: user, rule, or `lifecycle` for recalls.
    pub requested_by: String,
    /// Why: the request's reason or the rule and its version.
    pub reason: Option<String>,
    /// Where it stands.
    pub state: JobState,
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
    /// When it last changed state or progress was saved.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}
