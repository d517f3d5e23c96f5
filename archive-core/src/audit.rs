//! The audit trail: append-only, hash-chained records.
//!
//! Each [`AuditRecord`] holds the hash of the record before it, so altering,
//! removing or reordering any record breaks the chain at that point, and
//! [`verify_chain`] names the first broken link. Records are appended by the
//! catalog writer in the same atomic batch as the change they describe, so a
//! change and its audit record are durable together or not at all.
//!
//! Field names follow the DICOM audit message schema (PS3.15 A.5): event,
//! active participant (who), participant objects (what), outcome.

use crate::checksum::Checksum;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Current version of the audit record format.
///
/// Audit records are never rewritten and their hash covers the version they were written
/// with: a future migration of an audit record keeps its stored [`AuditRecord::v`].
pub const AUDIT_RECORD_VERSION: u32 = 1;

crate::first_format!(AuditRecord, "audit record", AUDIT_RECORD_VERSION);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// An instance was stored (PS3.15 "DICOM Instances Transferred", action C).
    InstanceStored,
    /// A stored instance was replaced by different content under the same SOP Instance UID.
    InstanceReplaced,
    /// An instance with different content under an existing SOP Instance UID was refused.
    InstanceConflictRejected,
    /// Copies of instances moved between tiers (a migration).
    InstancesMigrated,
    /// Copies of instances were brought back to an online tier for a retrieve.
    InstancesRecalled,
    /// A stored copy failed its checksum when re-read (integrity scrub or retrieve).
    IntegrityFailure,
    /// A study (or some of its instances) was marked for deletion.
    DeletionRequested,
    /// A marked deletion was undone (by a person or a legal hold).
    DeletionCancelled,
    /// A deletion was refused (legal hold, unknown study) or blocked at purge time.
    DeletionRefused,
    /// Instances were removed from the catalog by a purge (their copies are deleted next).
    InstancesDeleted,
    /// A deletion finished: every instance it covered is gone from every tier.
    DeletionCompleted,
    /// Instances were rejected by an IHE IOCM rejection note.
    InstancesRejected,
    /// A legal hold was set.
    LegalHoldSet,
    /// A legal hold was released.
    LegalHoldReleased,
    /// The retention rules changed.
    PolicyChanged,
    /// A new rule file was refused; the running rules stay.
    PolicyRefused,
    /// Instances were retrieved (C-MOVE, C-GET, WADO).
    InstancesRetrieved,
    /// A query was answered (C-FIND, QIDO-RS).
    Query,
    /// Audit records were read or exported.
    AuditExported,
    /// Studies of one patient identity were re-filed under another (a link or merge).
    PatientLinked,
    /// A patient link was undone.
    PatientUnlinked,
    /// A pull of studies from a legacy archive started or ended (`vna migrate pull`).
    MigrationPull,
}

/// Whether it worked (PS3.15 EventOutcomeIndicator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// 0: success.
    Success,
    /// 4: minor failure.
    MinorFailure,
    /// 8: serious failure.
    SeriousFailure,
}

/// One object an event touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditObject {
    /// Patient ID with its issuer.
    pub patient: String,
    /// Study Instance UID.
    pub study: String,
    /// SOP Instance UID, if the event concerns one instance.
    pub sop_instance: Option<String>,
    /// Checksum of the object's bytes.
    pub checksum: Option<Checksum>,
}

/// The content of an audit record, before chaining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// What happened.
    pub action: AuditAction,
    /// Who: user name or AE title.
    pub actor: String,
    /// From where: network address, file path.
    pub actor_address: String,
    /// What it touched.
    pub objects: Vec<AuditObject>,
    /// Why: rule and version, or the request's reason.
    pub reason: Option<String>,
    /// Outcome.
    pub outcome: AuditOutcome,
    /// Free-form detail (e.g. the replaced checksum).
    pub detail: Option<String>,
}

/// A stored, chained audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Format version.
    pub v: u32,
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Hash of the previous record (all zero for the first).
    pub prev_hash: Checksum,
    /// The event.
    pub event: AuditEvent,
    /// Hash of this record's version, seq, prev_hash and event.
    pub hash: Checksum,
}

/// The hash of the first record's predecessor.
pub fn genesis_hash() -> Checksum {
    Checksum::from_bytes([0u8; 32])
}

fn record_hash(v: u32, seq: u64, prev: &Checksum, event: &AuditEvent) -> Checksum {
    let mut h = crate::checksum::ChecksumHasher::new();
    h.update(&v.to_be_bytes());
    h.update(&seq.to_be_bytes());
    h.update(prev.as_bytes());
    // serde_json of a struct is deterministic: fields in declaration order.
    h.update(&serde_json::to_vec(event).unwrap_or_default());
    h.finish()
}

impl AuditRecord {
    /// Chains an event after the record with `seq - 1` and hash `prev_hash`.
    pub fn chain(seq: u64, prev_hash: Checksum, event: AuditEvent) -> Self {
        let hash = record_hash(AUDIT_RECORD_VERSION, seq, &prev_hash, &event);
        Self { v: AUDIT_RECORD_VERSION, seq, prev_hash, event, hash }
    }
    /// Whether the stored hash matches the content.
    pub fn hash_is_valid(&self) -> bool {
        record_hash(self.v, self.seq, &self.prev_hash, &self.event) == self.hash
    }
}

/// The first problem found in an audit chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A record's content does not match its hash (altered).
    #[error("audit record at position {position} (seq {seq}) was altered: its hash does not match its content")]
    Altered {
        /// Position in storage order, from 1.
        position: u64,
        /// The record's sequence number.
        seq: u64,
    },
    /// A record does not follow its predecessor (removed or reordered).
    #[error("audit record at position {position} (seq {seq}) does not follow seq {expected_seq}: a record was removed or reordered")]
    Broken {
        /// Position in storage order, from 1.
        position: u64,
        /// The record's sequence number.
        seq: u64,
        /// The sequence number expected here.
        expected_seq: u64,
    },
    /// A record cannot be decoded.
    #[error("audit record at position {position} cannot be decoded: {message}")]
    Undecodable {
        /// Position in storage order, from 1.
        position: u64,
        /// Decoder message.
        message: String,
    },
}

/// What verifying an audit chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainVerdict {
    /// Every record matches its hash and follows its predecessor.
    Intact {
        /// How many records were checked.
        records: u64,
    },
    /// The chain is broken; the first broken link.
    Broken(ChainError),
}

impl ChainVerdict {
    /// Whether the chain is intact.
    pub fn is_intact(&self) -> bool {
        matches!(self, ChainVerdict::Intact { .. })
    }
    /// The number of records checked, when the chain is intact.
    pub fn records(&self) -> Option<u64> {
        match self {
            ChainVerdict::Intact { records } => Some(*records),
            ChainVerdict::Broken(_) => None,
        }
    }
}

impl From<Result<u64, ChainError>> for ChainVerdict {
    fn from(r: Result<u64, ChainError>) -> Self {
        match r {
            Ok(records) => ChainVerdict::Intact { records },
            Err(e) => ChainVerdict::Broken(e),
        }
    }
}

/// Verifies records in storage order; returns how many were checked.
pub fn verify_chain<I>(records: I) -> Result<u64, ChainError>
where
    I: IntoIterator<Item = Result<AuditRecord, String>>,
{
    let mut prev = genesis_hash();
    let mut count = 0u64;
    for (i, rec) in records.into_iter().enumerate() {
        let position = i as u64 + 1;
        let rec = rec.map_err(|message| ChainError::Undecodable { position, message })?;
        if !rec.hash_is_valid() {
            return Err(ChainError::Altered { position, seq: rec.seq });
        }
        if rec.seq != position || rec.prev_hash != prev {
            return Err(ChainError::Broken { position, seq: rec.seq, expected_seq: position });
        }
        prev = rec.hash;
        count = position;
    }
    Ok(count)
}

/// A filter over audit records, for exports.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Records at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Records before this time.
    pub until: Option<OffsetDateTime>,
    /// Records touching this patient (`id` or `id^^^issuer`).
    pub patient: Option<String>,
    /// Records touching this study.
    pub study: Option<String>,
    /// Records of this action.
    pub action: Option<AuditAction>,
}

impl AuditQuery {
    /// Whether a record passes the filter.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        let e = &r.event;
        if self.since.is_some_and(|t| e.time < t) || self.until.is_some_and(|t| e.time >= t) {
            return false;
        }
        if self.action.is_some_and(|a| a != e.action) {
            return false;
        }
        if let Some(p) = &self.patient {
            let hit = e.objects.iter().any(|o| o.patient == *p || o.patient.split("^^^").next() == Some(p.as_str()));
            if !hit {
                return false;
            }
        }
        if let Some(s) = &self.study {
            if !e.objects.iter().any(|o| o.study == *s) {
                return false;
            }
        }
        true
    }
}

/// The header of [`csv_row`]'s columns.
pub const CSV_HEADER: &str =
    "seq,time,action,outcome,actor,actor_address,patient,study,instances,reason,detail,hash,prev_hash";

/// One record as a CSV line (RFC 4180 quoting), objects summarised.
pub fn csv_row(r: &AuditRecord) -> String {
    fn q(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    }
    let e = &r.event;
    let uniq = |f: &dyn Fn(&AuditObject) -> &str| {
        let mut v: Vec<&str> = e.objects.iter().map(f).filter(|s| !s.is_empty()).collect();
        v.dedup();
        v.join(" ")
    };
    let action = serde_json::to_value(e.action).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let outcome = serde_json::to_value(e.outcome).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let time = e.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    [
        r.seq.to_string(),
        time,
        action,
        outcome,
        q(&e.actor),
        q(&e.actor_address),
        q(&uniq(&|o| o.patient.as_str())),
        q(&uniq(&|o| o.study.as_str())),
        e.objects.iter().filter(|o| o.sop_instance.is_some()).count().to_string(),
        q(e.reason.as_deref().unwrap_or("")),
        q(e.detail.as_deref().unwrap_or("")),
        r.hash.to_string(),
        r.prev_hash.to_string(),
    ]
    .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u32) -> AuditEvent {
        AuditEvent {
            time: OffsetDateTime::UNIX_EPOCH,
            action: AuditAction::InstanceStored,
            actor: format!("AE{n}"),
            actor_address: "127.0.0.1".into(),
            objects: vec![],
            reason: None,
            outcome: AuditOutcome::Success,
            detail: None,
        }
    }

    fn chain(n: u32) -> Vec<AuditRecord> {
        let mut prev = genesis_hash();
        (1..=n)
            .map(|i| {
                let r = AuditRecord::chain(i as u64, prev, ev(i));
                prev = r.hash;
                r
            })
            .collect()
    }

    #[test]
    fn detects_alteration_removal_reordering() {
        let ok = chain(5);
        assert_eq!(verify_chain(ok.iter().cloned().map(Ok)), Ok(5));

        let mut altered = ok.clone();
        altered[2].event.actor = "MALLORY".into();
        assert_eq!(verify_chain(altered.into_iter().map(Ok)), Err(ChainError::Altered { position: 3, seq: 3 }));

        let mut removed = ok.clone();
        removed.remove(1);
        assert!(matches!(verify_chain(removed.into_iter().map(Ok)), Err(ChainError::Broken { position: 2, .. })));

        let mut reordered = ok.clone();
        reordered.swap(3, 4);
        assert!(matches!(verify_chain(reordered.into_iter().map(Ok)), Err(ChainError::Broken { position: 4, .. })));
    }
}
