//! The catalog: what the archive holds and where each object lives.
//!
//! [`Catalog`] is the seam for other engines (PostgreSQL for scale-out comes later);
//! [`rocks::RocksCatalog`] is the embedded engine on RocksDB.
//!
//! # Ordering rules
//! - An object is written to its tier (durably) *before* the catalog entry that names it.
//! - Before the write, ingest records an *intent* naming the object; the commit that
//!   names the object removes the intent in the same atomic batch. On start, every
//!   remaining intent is resolved against the catalog: an object no record names is
//!   deleted, so a crash between the two steps leaves no orphan.
//! - A commit returns only after the write-ahead log is synced; concurrent commits
//!   share one sync (group commit).

mod hidden_view;
pub mod keys;
pub mod rocks;
mod writer;

use crate::attribute::AttrMap;
use crate::audit::{AuditAction, AuditRecord, ChainVerdict};
use crate::checksum::Checksum;
#[cfg(doc)]
use crate::format::FormatError;
use crate::matching::MatchOptions;
use crate::model::{InstanceRecord, Location, PatientKey, PatientRecord, SeriesRecord, StudyRecord};
use crate::query::{Query, QueryPage};
use crate::tier::{ObjectKey, TierName};
use crate::uid::{SeriesUid, SopInstanceUid, StudyUid};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// What to do when an instance arrives under a SOP Instance UID already stored with different bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// Refuse the new object (the default).
    #[default]
    Reject,
    /// Replace the stored object, keeping an audit record of the replaced checksum.
    Replace,
}

/// An instance to add to the catalog, with the attributes of every level as received.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// The instance record, with the location just written.
    pub instance: InstanceRecord,
    /// The patient identity.
    pub patient: PatientKey,
    /// Patient-level attributes.
    pub patient_attrs: AttrMap,
    /// Study-level attributes.
    pub study_attrs: AttrMap,
    /// Series-level attributes.
    pub series_attrs: AttrMap,
    /// What to do on a conflict.
    pub policy: ConflictPolicy,
    /// The instance's DICOM JSON without bulk data (see [`crate::metadata`]), when it could be built.
    pub metadata: Option<String>,
}

/// What an insert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The instance is new and now stored.
    Stored,
    /// The same bytes were already stored under this SOP Instance UID; nothing changed.
    AlreadyStored {
        /// The record already in the catalog.
        existing: Box<InstanceRecord>,
    },
    /// Different bytes were stored under this UID and were replaced (policy `replace`).
    Replaced {
        /// The record that was replaced; its object copies are no longer referenced.
        previous: Box<InstanceRecord>,
    },
}

/// Objects and bytes one tier holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierUsage {
    /// Object copies.
    pub objects: u64,
    /// Bytes of those copies.
    pub bytes: u64,
}

/// Counts of what the catalog holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogStats {
    /// Patients.
    pub patients: u64,
    /// Studies.
    pub studies: u64,
    /// Series.
    pub series: u64,
    /// Instances.
    pub instances: u64,
    /// Bytes of all instances.
    pub bytes: u64,
    /// Copies and bytes per tier, by tier name.
    #[serde(default)]
    pub tiers: std::collections::BTreeMap<String, TierUsage>,
}

/// A write that was started and may not have been committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteIntent {
    /// The tier written to.
    pub tier: TierName,
    /// The object written.
    pub key: ObjectKey,
    /// The instance the object belongs to.
    pub sop_instance: SopInstanceUid,
}

/// One instance's change of copies: verified copies to add and copies to drop.
#[derive(Debug, Clone)]
pub struct InstanceRelocation {
    /// The instance.
    pub sop_instance: SopInstanceUid,
    /// The checksum of the object the copies hold; the change is refused if the catalog's differs
    /// (the instance was replaced while its copy was being made).
    pub checksum: Checksum,
    /// New copies, already written and verified; their write intents are removed in the same batch.
    pub add: Vec<Location>,
    /// Copies to drop (by tier and key); each becomes a write intent in the same batch, so the
    /// caller deletes the object afterwards and recovery does after a crash.
    pub remove: Vec<(TierName, ObjectKey)>,
}

/// A set of copy changes committed in one batch, with one audit record.
#[derive(Debug, Clone)]
pub struct Relocation {
    /// The instances.
    pub items: Vec<InstanceRelocation>,
    /// The number of copies no instance may drop below (an instance that already has fewer may
    /// gain copies but never lose one).
    pub min_copies: usize,
    /// What the audit record says happened.
    pub action: AuditAction,
    /// Who asked (user, rule, `lifecycle`).
    pub actor: String,
    /// Why (rule and version, request reason).
    pub reason: Option<String>,
    /// Free text for the audit record (e.g. `hot -> warm`).
    pub detail: String,
}

/// A copy whose bytes were just read back and matched the instance's checksum.
#[derive(Debug, Clone)]
pub struct VerifiedCopy {
    /// The instance.
    pub sop_instance: SopInstanceUid,
    /// The checksum the copy matched (ignored if the instance now holds other content).
    pub checksum: Checksum,
    /// The copy's tier.
    pub tier: TierName,
    /// The copy's key.
    pub key: ObjectKey,
}

/// A study re-filed under another patient identity.
#[derive(Debug, Clone)]
pub struct StudyMove {
    /// The study.
    pub study: StudyUid,
    /// The identity it goes to.
    pub to: PatientKey,
    /// The patient-level attributes it takes.
    pub patient_attrs: AttrMap,
}

/// One batch of a purge: instances of a purging deletion to remove from the catalog.
#[derive(Debug, Clone)]
pub struct PurgeRequest {
    /// The deletion (must be purging).
    pub deletion: crate::deletion::DeletionId,
    /// The instances; those gone, of another study, outside the deletion, or received after
    /// it was marked are skipped.
    pub instances: Vec<SopInstanceUid>,
    /// Who runs the purge (for the audit record).
    pub actor: String,
    /// From where.
    pub address: String,
    /// Why (the deletion's reason).
    pub reason: String,
}

/// Catalog errors.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Different bytes are already stored under this SOP Instance UID and the policy is `reject`.
    #[error("sop instance {sop_instance} is already stored with different content (checksum {existing})")]
    Conflict {
        /// The instance.
        sop_instance: SopInstanceUid,
        /// Checksum of the stored object.
        existing: Checksum,
    },
    /// The query cannot be run.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The storage engine (RocksDB) failed.
    #[error("catalog storage error: {0}")]
    Engine(#[source] rocksdb::Error),
    /// A record could not be encoded for storage.
    #[error("catalog storage error: cannot encode {what}: {source}")]
    Encode {
        /// What was being encoded (`a job`, `a write intent`).
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The catalog's own bookkeeping went wrong without an engine error (an answer of the
    /// committer that does not fit the request, a deletion in the wrong state).
    #[error("catalog storage error: {0}")]
    Storage(String),
    /// Another process (or another open in this one) holds the catalog's lock: one catalog
    /// directory serves one `vna` at a time.
    #[error("the catalog at {} is in use by another vna process (is `vna serve` running?)", .path.display())]
    InUse {
        /// The catalog directory.
        path: std::path::PathBuf,
        /// RocksDB's report about its LOCK file.
        #[source]
        source: rocksdb::Error,
    },
    /// A stored record cannot be decoded.
    #[error("corrupt catalog record {key}: {message}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Decoder message.
        message: String,
    },
    /// A stored record (or the catalog's format marker) is in a format this vna does not
    /// read: written by a newer vna ([`FormatError::UnsupportedVersion`]), or unknown.
    #[error("catalog record {key}: {source}")]
    Format {
        /// The record's key (`schema_version` for the catalog's marker).
        key: String,
        /// What is wrong with its format.
        #[source]
        source: crate::format::FormatError,
    },
    /// The catalog is shutting down.
    #[error("catalog is closed")]
    Closed,
    /// The instance is no longer in the catalog.
    #[error("instance {0} is no longer in the catalog")]
    InstanceGone(SopInstanceUid),
    /// The instance now holds other content than the copy was made of.
    #[error("instance {0} was replaced while its copy was being made")]
    InstanceChanged(SopInstanceUid),
    /// The change would leave an instance with fewer verified copies than required.
    #[error("instance {sop_instance} would keep {copies} verified copies; at least {required} are required")]
    CopyInvariant {
        /// The instance.
        sop_instance: SopInstanceUid,
        /// Copies after the change.
        copies: usize,
        /// The configured minimum.
        required: usize,
    },
    /// The instance already has a copy on the tier.
    #[error("instance {sop_instance} already has a copy on tier {tier}")]
    DuplicateCopy {
        /// The instance.
        sop_instance: SopInstanceUid,
        /// The tier.
        tier: TierName,
    },
}

impl From<rocksdb::Error> for CatalogError {
    fn from(e: rocksdb::Error) -> Self {
        CatalogError::Engine(e)
    }
}

/// The archive's index of patients, studies, series and instances.
///
/// Reads are synchronous and fast (point lookups and prefix scans); callers on an async
/// runtime run large queries on a blocking thread. Writes go through one committer.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Adds an instance (or resolves it as a duplicate or replacement), durably.
    ///
    /// # Behavior
    /// - Identical data set checksum under an existing SOP Instance UID: `AlreadyStored`, nothing changes.
    /// - Different data set checksum: `Conflict` error under `Reject`; `Replaced` under `Replace`.
    /// - Removes the write intent of the new instance's location in the same batch.
    /// - Appends an audit record in the same batch.
    /// - Returns after the write-ahead log is synced.
    async fn insert_instance(&self, new: NewInstance) -> Result<InsertOutcome, CatalogError>;

    /// Changes the copies of instances (adds verified copies, drops others), durably, with one
    /// audit record; answers each item on its own.
    ///
    /// # Behavior
    /// - An item whose instance is gone, was replaced, would drop below `min_copies`, or would
    ///   get a second copy on one tier is refused with its error and changes nothing.
    /// - Dropped copies become write intents in the same batch; added copies' intents are removed.
    /// - Returns after the write-ahead log is synced.
    async fn relocate(&self, relocation: Relocation)
        -> Result<Vec<Result<InstanceRecord, CatalogError>>, CatalogError>;

    /// Sets `verified_at` of copies the integrity scrub read back intact (copies gone or
    /// replaced since are skipped). Synced; no audit record (nothing about the data changed).
    async fn mark_verified(&self, copies: Vec<VerifiedCopy>, at: time::OffsetDateTime) -> Result<(), CatalogError>;

    /// Records a read of a study (its `last_access`); cheap, for retrieves to call.
    async fn record_access(&self, study: &StudyUid, at: time::OffsetDateTime) -> Result<(), CatalogError>;

    /// Appends an audit record on its own (events that change no record: scrub results, exports).
    async fn append_audit(&self, event: crate::audit::AuditEvent) -> Result<(), CatalogError>;

    /// Saves a deletion record (synced), with an audit record in the same batch whose sequence
    /// number is appended to the saved record's `audit_seqs`; returns the record as saved.
    async fn save_deletion(
        &self,
        deletion: crate::deletion::Deletion,
        event: Option<crate::audit::AuditEvent>,
    ) -> Result<crate::deletion::Deletion, CatalogError>;

    /// Removes a batch of a purging deletion's instances from the catalog.
    ///
    /// # Behavior
    /// - Removes each instance's records, index entries and counts; empty series, studies and
    ///   patients go too. Each copy becomes a write intent in the same batch: the caller deletes
    ///   the objects and clears the intents, or recovery does after a crash.
    /// - Adds the removed instances to the deletion's certificate and appends one audit record
    ///   listing them (with checksums), all in one synced batch.
    /// - Returns the deletion as saved and the removed records.
    async fn purge(&self, req: PurgeRequest) -> Result<(crate::deletion::Deletion, Vec<InstanceRecord>), CatalogError>;

    /// Every deletion, oldest first.
    fn deletions(&self) -> Result<Vec<crate::deletion::Deletion>, CatalogError>;
    /// The deletions still under way (marked or purging), without their certificates; kept in
    /// memory, so cheap however long the history of finished deletions grows.
    fn active_deletions(&self) -> Vec<crate::deletion::Deletion>;
    /// A deletion by id.
    fn deletion(&self, id: crate::deletion::DeletionId) -> Result<Option<crate::deletion::Deletion>, CatalogError>;
    /// Whether a study (or one of its instances) is hidden by a deletion at `now`.
    fn is_hidden(&self, study: &StudyUid, instance: Option<&SopInstanceUid>, now: time::OffsetDateTime) -> bool;

    /// Saves a legal hold (or removes it, for `None`) with its audit record, synced.
    async fn put_hold(
        &self,
        id: crate::hold::HoldId,
        hold: Option<crate::hold::LegalHold>,
        event: crate::audit::AuditEvent,
    ) -> Result<(), CatalogError>;
    /// Re-files studies under other patient identities (counts, indexes and patient records
    /// follow) and saves the link record, with its audit record, in one synced batch.
    async fn relink(
        &self,
        moves: Vec<StudyMove>,
        link: crate::patient_link::PatientLink,
        event: crate::audit::AuditEvent,
    ) -> Result<(), CatalogError>;
    /// Every patient link, oldest first.
    fn links(&self) -> Result<Vec<crate::patient_link::PatientLink>, CatalogError>;
    /// The patient attributes retrieved objects of a study take because of a standing link.
    fn patient_rewrite(&self, study: &StudyUid) -> Option<(crate::patient_link::LinkId, AttrMap)>;

    /// Every legal hold standing.
    fn holds(&self) -> Result<Vec<crate::hold::LegalHold>, CatalogError>;

    /// Saves a lifecycle job (synced).
    fn save_job(&self, job: &crate::lifecycle::job::Job) -> Result<(), CatalogError>;
    /// Every saved lifecycle job, oldest first.
    fn jobs(&self) -> Result<Vec<crate::lifecycle::job::Job>, CatalogError>;
    /// Forgets a lifecycle job.
    fn remove_job(&self, id: crate::lifecycle::job::JobId) -> Result<(), CatalogError>;

    /// Records that an object is about to be written (synced before it returns).
    fn begin_write(&self, intent: &WriteIntent) -> Result<(), CatalogError>;
    /// Forgets a write intent (after the object was removed or is known to be referenced).
    fn end_write(&self, intent: &WriteIntent) -> Result<(), CatalogError>;
    /// Write intents left by earlier runs.
    fn pending_writes(&self) -> Result<Vec<WriteIntent>, CatalogError>;

    /// An instance by SOP Instance UID.
    fn instance(&self, uid: &SopInstanceUid) -> Result<Option<InstanceRecord>, CatalogError>;
    /// A series by Series Instance UID.
    fn series(&self, uid: &SeriesUid) -> Result<Option<SeriesRecord>, CatalogError>;
    /// A study by Study Instance UID.
    fn study(&self, uid: &StudyUid) -> Result<Option<StudyRecord>, CatalogError>;
    /// Study UIDs in key order after `after` (from the first for `None`), at most `limit`.
    fn study_uids(&self, after: Option<&StudyUid>, limit: usize) -> Result<Vec<StudyUid>, CatalogError>;
    /// A patient by identity.
    fn patient(&self, key: &PatientKey) -> Result<Option<PatientRecord>, CatalogError>;
    /// The series of a study, by UID order.
    fn series_of_study(&self, study: &StudyUid) -> Result<Vec<SeriesRecord>, CatalogError>;
    /// The instances of a series, by UID order.
    fn instances_of_series(&self, study: &StudyUid, series: &SeriesUid) -> Result<Vec<InstanceRecord>, CatalogError>;
    /// The instances of a study, by series then instance UID.
    fn instances_of_study(&self, study: &StudyUid) -> Result<Vec<InstanceRecord>, CatalogError>;

    /// The stored DICOM JSON metadata of instances, in the order given; `None` for an
    /// instance stored without (its metadata must then be built from the object).
    fn instance_metadata(&self, records: &[InstanceRecord]) -> Result<Vec<Option<Vec<u8>>>, CatalogError>;

    /// Runs a query.
    fn query(&self, query: &Query, opts: MatchOptions) -> Result<QueryPage, CatalogError>;

    /// Counts of what the catalog holds.
    fn stats(&self) -> Result<CatalogStats, CatalogError>;

    /// The audit records in order, from `from_seq` (1 for all).
    fn audit_records(&self, from_seq: u64) -> Result<Vec<Result<AuditRecord, String>>, CatalogError>;
    /// At most `limit` audit records in order from `from_seq` (for paging through a long trail).
    fn audit_page(&self, from_seq: u64, limit: usize) -> Result<Vec<Result<AuditRecord, String>>, CatalogError>;
    /// Verifies the audit chain: intact (with the number of records checked) or broken (with
    /// the first broken link); `Err` only when the catalog cannot be read.
    fn verify_audit(&self) -> Result<ChainVerdict, CatalogError> {
        Ok(crate::audit::verify_chain(self.audit_records(1)?).into())
    }
}
