//! Ingest: from received bytes to a durable, cataloged instance.
//!
//! # Steps, in this order
//! 1. Parse the header (refuse malformed, truncated or UID-less objects; nothing is stored).
//! 2. Check the free-space floors (refuse with "out of resources").
//! 3. Hash the bytes; an identical instance already stored ends here as a duplicate.
//! 4. Record a write intent, then write the object to the ingest tier (durable on return).
//! 5. Commit the catalog entry (WAL synced, shared with concurrent ingests), which
//!    also clears the intent and appends the audit record.
//! 6. Only now report success. A conflicting object is removed again; a replaced
//!    object's old copies are deleted after the commit that unreferenced them.

use crate::attribute::{Attribute, Level};
use crate::catalog::{Catalog, CatalogError, ConflictPolicy, InsertOutcome, NewInstance, WriteIntent};
use crate::checksum::Checksum;
use crate::disk::{DiskGuard, OutOfSpace};
use crate::metrics::Metrics;
use crate::model::{InstanceRecord, Location, PatientKey, Source, RECORD_VERSION};
use crate::parse::{parse_part10, wrap_dataset, ParseError, ParsedObject};
use crate::tier::TierSet;
use crate::tier::{ObjectKey, PutOpts, Tier, TierError, TierExt};
use crate::uid::{SeriesUid, SopClassUid, SopInstanceUid, StudyUid, TransferSyntaxUid};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;

/// What arrived.
#[derive(Debug, Clone)]
pub enum IngestInput {
    /// A Part-10 file (preamble optional).
    Part10(Bytes),
    /// A data set as DIMSE delivers it, with the SOP identity from the command and the
    /// transfer syntax of the presentation context.
    Dataset {
        /// The data set bytes.
        dataset: Bytes,
        /// Transfer syntax of the data set.
        transfer_syntax: TransferSyntaxUid,
        /// Affected SOP Class UID of the command.
        sop_class: SopClassUid,
        /// Affected SOP Instance UID of the command.
        sop_instance: SopInstanceUid,
    },
}

/// What happened to an ingested object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestStatus {
    /// Stored for the first time.
    Stored,
    /// Identical bytes were already stored; nothing changed.
    Duplicate,
    /// Different bytes were stored under the same UID and were replaced.
    Replaced,
}

/// The receipt of a successful ingest: the instance is durable.
#[derive(Debug, Clone)]
pub struct IngestReceipt {
    /// What happened.
    pub status: IngestStatus,
    /// Study Instance UID.
    pub study: StudyUid,
    /// Series Instance UID.
    pub series: SeriesUid,
    /// SOP Instance UID.
    pub sop_instance: SopInstanceUid,
    /// SOP Class UID.
    pub sop_class: SopClassUid,
    /// Transfer syntax as stored.
    pub transfer_syntax: TransferSyntaxUid,
    /// Checksum of the stored object.
    pub checksum: Checksum,
    /// Size of the stored object.
    pub size: u64,
}

/// Why an ingest failed; nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The object cannot be parsed or lacks required attributes.
    #[error(transparent)]
    Invalid(#[from] ParseError),
    /// The data set does not carry the SOP identity its command announced.
    #[error("data set {attribute} {found:?} differs from the command's {expected:?}")]
    IdentityMismatch {
        /// The attribute's keyword.
        attribute: &'static str,
        /// In the command.
        expected: String,
        /// In the data set.
        found: String,
    },
    /// A free-space floor is reached.
    #[error(transparent)]
    OutOfSpace(#[from] OutOfSpace),
    /// Different bytes are already stored under the SOP Instance UID.
    #[error("sop instance {sop_instance} is already stored with different content")]
    Conflict {
        /// The instance.
        sop_instance: SopInstanceUid,
    },
    /// The tier failed.
    #[error("storage tier failed: {0}")]
    Tier(#[from] TierError),
    /// The catalog failed.
    #[error("catalog failed: {0}")]
    Catalog(CatalogError),
    /// The sender's source profile could not be applied (the object cannot be re-encoded).
    #[error(transparent)]
    Coercion(crate::coerce::CoercionError),
}

/// What a protocol should tell its client, independent of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestErrorKind {
    /// The client sent something unacceptable (DIMSE A900/C000, HTTP 400/409 per STOW rules).
    InvalidObject,
    /// The archive is out of room (DIMSE A700, HTTP 507).
    OutOfResources,
    /// A conflicting instance exists (DIMSE A900 "duplicate with different content", HTTP 409).
    Conflict,
    /// The archive failed (DIMSE A700 processing failure, HTTP 500).
    Internal,
}

impl IngestError {
    /// The kind of failure, for mapping to wire statuses.
    pub fn kind(&self) -> IngestErrorKind {
        match self {
            IngestError::Invalid(_) | IngestError::IdentityMismatch { .. } | IngestError::Coercion(_) => {
                IngestErrorKind::InvalidObject
            }
            IngestError::OutOfSpace(_) => IngestErrorKind::OutOfResources,
            IngestError::Tier(TierError::InsufficientSpace { .. }) => IngestErrorKind::OutOfResources,
            IngestError::Conflict { .. } => IngestErrorKind::Conflict,
            IngestError::Tier(_) | IngestError::Catalog(_) => IngestErrorKind::Internal,
        }
    }
    fn metric_label(&self) -> &'static str {
        match self.kind() {
            IngestErrorKind::InvalidObject => "rejected",
            IngestErrorKind::OutOfResources => "out_of_space",
            IngestErrorKind::Conflict => "conflict",
            IngestErrorKind::Internal => "error",
        }
    }
}

/// The ingest service.
#[derive(Clone)]
pub struct Ingest {
    catalog: Arc<dyn Catalog>,
    tiers: Arc<TierSet>,
    disk: DiskGuard,
    policy: ConflictPolicy,
    metrics: Metrics,
    sop_locks: Arc<SopLocks>,
    rate: Arc<crate::rate::RateWindow>,
    /// Studies that received a new instance (for the policy engine's after-ingest evaluation).
    stored: tokio::sync::broadcast::Sender<StudyUid>,
    /// Where IOCM rejection notes send the instances they reject, and whose notes count.
    rejections: Option<(crate::deletion::Deleter, Vec<String>)>,
    /// Source profiles (issuer stamping and coercion) by sender.
    profiles: Arc<crate::coerce::SourceProfiles>,
}

/// Per-SOP-Instance-UID async locks shared by ingest and the deletion engine: a purge deletes a
/// copy only while holding its instance's lock, after checking that no record names it again.
#[derive(Default)]
pub struct SopLocks {
    map: parking_lot::Mutex<std::collections::HashMap<SopInstanceUid, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds the lock of one SOP Instance UID; releases and forgets it on drop.
pub struct SopGuard<'a> {
    locks: &'a SopLocks,
    uid: SopInstanceUid,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SopLocks {
    /// Waits for and takes the lock of one SOP Instance UID.
    pub async fn lock(&self, uid: &SopInstanceUid) -> SopGuard<'_> {
        let mutex = self.map.lock().entry(uid.clone()).or_default().clone();
        let guard = mutex.lock_owned().await;
        SopGuard { locks: self, uid: uid.clone(), guard: Some(guard) }
    }
}

impl Drop for SopGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map.lock();
        if map.get(&self.uid).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.uid);
        }
    }
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").field("policy", &self.policy).finish_non_exhaustive()
    }
}

/// The object key of an instance in the ingest tier: study/series/sop.checksum.dcm.
///
/// The checksum in the name makes every distinct content a distinct object, so a
/// replacement never overwrites the copy the catalog still names.
pub fn object_key(study: &StudyUid, series: &SeriesUid, sop: &SopInstanceUid, checksum: &Checksum) -> ObjectKey {
    ObjectKey::new(format!("{study}/{series}/{sop}.{}.dcm", checksum.short_hex(16)))
        .expect("uids and hex are valid key segments")
}

impl Ingest {
    /// Creates the service.
    pub fn new(
        catalog: Arc<dyn Catalog>,
        tiers: Arc<TierSet>,
        disk: DiskGuard,
        policy: ConflictPolicy,
        metrics: Metrics,
    ) -> Self {
        let (stored, _) = tokio::sync::broadcast::channel(4096);
        Self {
            catalog,
            tiers,
            disk,
            policy,
            metrics,
            sop_locks: Arc::default(),
            rate: Arc::default(),
            stored,
            rejections: None,
            profiles: Arc::default(),
        }
    }

    /// Applies source profiles (issuer of patient ID, coercion rules) to what each sender sends.
    pub fn with_profiles(mut self, profiles: crate::coerce::SourceProfiles) -> Self {
        self.profiles = Arc::new(profiles);
        self
    }

    /// Shares per-SOP locks with another service (the deletion engine).
    pub fn with_sop_locks(mut self, locks: Arc<SopLocks>) -> Self {
        self.sop_locks = locks;
        self
    }

    /// Makes stored IHE IOCM rejection notes (Key Object Selections titled with a rejection
    /// code) hide the instances they reference and schedule their deletion.
    /// Only notes from `allowed` senders (calling AE titles, `STOW-RS`, or `*`) are applied;
    /// others are stored and audited as refused.
    pub fn with_rejections(mut self, deleter: crate::deletion::Deleter, allowed: Vec<String>) -> Self {
        self.rejections = Some((deleter, allowed));
        self
    }

    /// Applies a stored rejection note: per study, the referenced instances the archive holds
    /// are hidden at once and deleted after the grace period. Refusals (a legal hold) are
    /// audited by the deletion engine and logged here; the note itself stays stored.
    async fn apply_rejection(&self, note_uid: &SopInstanceUid, metadata: &str, source: &Source) {
        let Some((deleter, allowed)) = &self.rejections else { return };
        let Some(note) = crate::deletion::rejection::rejection_note(metadata) else { return };
        let actor = source.actor.trim();
        if !allowed.iter().any(|a| a.trim() == "*" || a.trim() == actor) {
            tracing::warn!(note = %note_uid, sender = %actor, "rejection note from a sender not in [retention] rejection_notes_from; not applied");
            let event = crate::audit::AuditEvent {
                time: OffsetDateTime::now_utc(),
                action: crate::audit::AuditAction::DeletionRefused,
                actor: source.actor.clone(),
                actor_address: source.address.clone(),
                objects: note
                    .references
                    .iter()
                    .map(|r| crate::audit::AuditObject {
                        patient: String::new(),
                        study: r.study.clone(),
                        sop_instance: Some(r.sop_instance.clone()),
                        checksum: None,
                    })
                    .collect(),
                reason: Some(note.title.clone()),
                outcome: crate::audit::AuditOutcome::MinorFailure,
                detail: Some(format!("rejection note {note_uid} from {actor}, who may not reject instances")),
            };
            if let Err(e) = self.catalog.append_audit(event).await {
                tracing::error!(error = %e, "auditing a refused rejection note failed");
            }
            return;
        }
        let mut by_study: std::collections::BTreeMap<String, Vec<SopInstanceUid>> = Default::default();
        for r in &note.references {
            let Ok(uid) = SopInstanceUid::new(&r.sop_instance) else { continue };
            match self.catalog.instance(&uid) {
                Ok(Some(rec)) if rec.study.as_str() == r.study => {
                    let pending = self
                        .catalog
                        .active_deletions()
                        .into_iter()
                        .any(|d| d.study == rec.study && d.covers_instance(uid.as_str()));
                    if !pending {
                        by_study.entry(r.study.clone()).or_default().push(uid)
                    }
                }
                _ => {
                    tracing::warn!(note = %note_uid, sop_instance = %r.sop_instance, "rejection note references an instance the archive does not hold")
                }
            }
        }
        for (study, instances) in by_study {
            let Ok(study) = StudyUid::new(&study) else { continue };
            let req = crate::deletion::DeletionRequest {
                study: study.clone(),
                instances: Some(instances),
                requested_by: source.actor.clone(),
                requested_from: source.address.clone(),
                reason: note.title.clone(),
                cause: crate::deletion::DeletionCause::Rejection { note: note_uid.clone(), title: note.title.clone() },
                grace: None,
                hide_immediately: true,
            };
            match deleter.request(req).await {
                Ok(d) => {
                    tracing::info!(note = %note_uid, study = %study, deletion = %d.id, title = %note.title, "instances rejected")
                }
                Err(e) => tracing::warn!(note = %note_uid, study = %study, error = %e, "rejection not applied"),
            }
        }
    }

    /// The studies of newly stored instances, as they are stored (lagging receivers miss some).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StudyUid> {
        self.stored.subscribe()
    }

    /// Objects and bytes stored in the last minute.
    pub fn last_minute(&self) -> (u64, u64) {
        self.rate.last_minute()
    }

    /// Ingests one object; returns after it is durable.
    pub async fn ingest(&self, input: IngestInput, source: Source) -> Result<IngestReceipt, IngestError> {
        let started = Instant::now();
        let result = self.ingest_inner(input, source).await;
        match &result {
            Ok(r) => {
                let label = match r.status {
                    IngestStatus::Stored => "stored",
                    IngestStatus::Duplicate => "duplicate",
                    IngestStatus::Replaced => "replaced",
                };
                self.metrics.ingest_total.with_label_values(&[label]).inc();
                if r.status != IngestStatus::Duplicate {
                    self.metrics.ingest_bytes.inc_by(r.size);
                    self.rate.record(r.size);
                }
                self.metrics.ingest_seconds.observe(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.metrics.ingest_total.with_label_values(&[e.metric_label()]).inc();
                tracing::warn!(error = %e, "ingest refused");
            }
        }
        result
    }

    async fn ingest_inner(&self, input: IngestInput, source: Source) -> Result<IngestReceipt, IngestError> {
        let (bytes, parsed) = prepare(input)?;
        let (bytes, parsed) = match self.profiles.for_source(&source) {
            Some(profile) => {
                match profile
                    .apply(&bytes, parsed.dataset_offset, parsed.transfer_syntax.as_str(), &source)
                    .map_err(IngestError::Coercion)?
                {
                    Some((coerced, what)) => {
                        tracing::debug!(sop_instance = %parsed.sop_instance, profile = %profile.config.name, changed = ?what.changed, "coerced");
                        let parsed = parse_part10(&coerced)?;
                        (Bytes::from(coerced), parsed)
                    }
                    None => (bytes, parsed),
                }
            }
            None => (bytes, parsed),
        };
        self.disk.check()?;
        let metadata = match crate::metadata::instance_metadata(&bytes, &parsed) {
            Ok(json) => Some(json),
            Err(e) => {
                tracing::warn!(sop_instance = %parsed.sop_instance, error = %e, "stored without metadata; it will be built on request");
                None
            }
        };
        let checksum = Checksum::of(&bytes);
        let dataset_checksum = Checksum::of(&bytes[parsed.dataset_offset..]);
        let size = bytes.len() as u64;
        let receipt = |status| IngestReceipt {
            status,
            study: parsed.study.clone(),
            series: parsed.series.clone(),
            sop_instance: parsed.sop_instance.clone(),
            sop_class: parsed.sop_class.clone(),
            transfer_syntax: parsed.transfer_syntax.clone(),
            checksum,
            size,
        };

        // One ingest at a time per SOP Instance UID: a replacement's cleanup can never race
        // another arrival of the same instance.
        let _guard = self.sop_locks.lock(&parsed.sop_instance).await;
        if let Some(existing) = self.catalog.instance(&parsed.sop_instance).map_err(IngestError::Catalog)? {
            if existing.dataset_checksum == dataset_checksum {
                // A rejection note sent again applies again (the first may have been cut short
                // by a crash); instances it already rejected are skipped.
                if existing.sop_class.as_str() == crate::deletion::rejection::KEY_OBJECT_SELECTION {
                    if let Some(json) = &metadata {
                        self.apply_rejection(&existing.uid, json, &source).await;
                    }
                }
                return Ok(receipt(IngestStatus::Duplicate));
            }
        }

        let tier = self.tiers.ingest_tier();
        let key = object_key(&parsed.study, &parsed.series, &parsed.sop_instance, &checksum);
        let intent =
            WriteIntent { tier: tier.name().clone(), key: key.clone(), sop_instance: parsed.sop_instance.clone() };
        self.catalog.begin_write(&intent).map_err(IngestError::Catalog)?;
        if let Err(e) = write_object(tier.as_ref(), &key, bytes, checksum).await {
            let _ = self.catalog.end_write(&intent);
            return Err(e);
        }

        let now = OffsetDateTime::now_utc();
        let record = InstanceRecord {
            v: RECORD_VERSION,
            study: parsed.study.clone(),
            series: parsed.series.clone(),
            uid: parsed.sop_instance.clone(),
            sop_class: parsed.sop_class.clone(),
            transfer_syntax: parsed.transfer_syntax.clone(),
            attrs: parsed.attrs.of_level(Level::Instance),
            size,
            checksum,
            dataset_checksum,
            locations: vec![Location { tier: tier.name().clone(), key: key.clone(), verified_at: now }],
            source,
            received_at: now,
        };
        let new = NewInstance {
            instance: record,
            patient: PatientKey::new(
                parsed.attrs.get(Attribute::IssuerOfPatientID).unwrap_or(""),
                parsed.attrs.get(Attribute::PatientID).unwrap_or(""),
            ),
            patient_attrs: parsed.attrs.of_level(Level::Patient),
            study_attrs: parsed.attrs.of_level(Level::Study),
            series_attrs: parsed.attrs.of_level(Level::Series),
            policy: self.policy,
            metadata,
        };
        let study_uid = new.instance.study.clone();
        let note = (new.instance.sop_class.as_str() == crate::deletion::rejection::KEY_OBJECT_SELECTION)
            .then(|| (new.instance.uid.clone(), new.metadata.clone(), new.instance.source.clone()));
        match self.catalog.insert_instance(new).await {
            Ok(InsertOutcome::Stored) => {
                let _ = self.stored.send(study_uid);
                if let Some((uid, Some(json), source)) = note {
                    self.apply_rejection(&uid, &json, &source).await;
                }
                Ok(receipt(IngestStatus::Stored))
            }
            Ok(InsertOutcome::AlreadyStored { existing }) => {
                if !existing.locations.iter().any(|l| l.tier == *tier.name() && l.key == key) {
                    self.discard(tier.as_ref(), &intent).await;
                }
                Ok(receipt(IngestStatus::Duplicate))
            }
            Ok(InsertOutcome::Replaced { previous }) => {
                self.delete_copies(&previous).await;
                Ok(receipt(IngestStatus::Replaced))
            }
            Err(CatalogError::Conflict { sop_instance, .. }) => {
                self.discard(tier.as_ref(), &intent).await;
                Err(IngestError::Conflict { sop_instance })
            }
            Err(e) => {
                // The commit did not happen: the object is unreferenced.
                self.discard(tier.as_ref(), &intent).await;
                Err(IngestError::Catalog(e))
            }
        }
    }

    /// Deletes an unreferenced object and its intent; on failure the intent stays for recovery.
    async fn discard(&self, tier: &dyn Tier, intent: &WriteIntent) {
        // A concurrent ingest of the same bytes may have committed this very object.
        if let Ok(Some(rec)) = self.catalog.instance(&intent.sop_instance) {
            if rec.locations.iter().any(|l| l.tier == intent.tier && l.key == intent.key) {
                let _ = self.catalog.end_write(intent);
                return;
            }
        }
        match tier.delete(&intent.key).await {
            Ok(()) => {
                let _ = self.catalog.end_write(intent);
            }
            Err(e) => {
                tracing::warn!(key = %intent.key, error = %e, "could not remove an unreferenced object; recovery will")
            }
        }
    }

    /// Deletes the copies of a record the catalog no longer references, clearing the intents
    /// the replacing commit recorded for them; a copy that cannot be deleted keeps its intent
    /// and recovery deletes it at the next start.
    async fn delete_copies(&self, previous: &InstanceRecord) {
        for loc in &previous.locations {
            if let Some(tier) = self.tiers.get(&loc.tier) {
                match tier.delete(&loc.key).await {
                    Ok(()) => {
                        let intent = WriteIntent {
                            tier: loc.tier.clone(),
                            key: loc.key.clone(),
                            sop_instance: previous.uid.clone(),
                        };
                        let _ = self.catalog.end_write(&intent);
                    }
                    Err(e) => {
                        tracing::warn!(tier = %loc.tier, key = %loc.key, error = %e, "could not delete a replaced copy")
                    }
                }
            }
        }
    }

    /// Resolves write intents left by a crash: objects no catalog record names are deleted.
    pub async fn recover(&self) -> Result<RecoveryReport, IngestError> {
        let mut report = RecoveryReport::default();
        for intent in self.catalog.pending_writes().map_err(IngestError::Catalog)? {
            let referenced = self
                .catalog
                .instance(&intent.sop_instance)
                .map_err(IngestError::Catalog)?
                .is_some_and(|r| r.locations.iter().any(|l| l.tier == intent.tier && l.key == intent.key));
            if referenced {
                report.committed += 1;
            } else if let Some(tier) = self.tiers.get(&intent.tier) {
                tier.delete(&intent.key).await?;
                report.removed += 1;
            } else {
                tracing::warn!(tier = %intent.tier, key = %intent.key, "write intent names an unconfigured tier");
                continue;
            }
            self.catalog.end_write(&intent).map_err(IngestError::Catalog)?;
        }
        if report.committed + report.removed > 0 {
            tracing::info!(removed = report.removed, committed = report.committed, "resolved interrupted writes");
        }
        Ok(report)
    }
}

/// What [`Ingest::recover`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Unreferenced objects deleted.
    pub removed: u64,
    /// Intents whose object was committed after all.
    pub committed: u64,
}

/// Turns the input into Part-10 bytes and parses them.
fn prepare(input: IngestInput) -> Result<(Bytes, ParsedObject), IngestError> {
    match input {
        IngestInput::Part10(bytes) => {
            let parsed = parse_part10(&bytes)?;
            Ok((bytes, parsed))
        }
        IngestInput::Dataset { dataset, transfer_syntax, sop_class, sop_instance } => {
            let file = wrap_dataset(&dataset, &transfer_syntax, &sop_class, &sop_instance)?;
            let parsed = parse_part10(&file)?;
            if parsed.sop_instance != sop_instance {
                return Err(IngestError::IdentityMismatch {
                    attribute: "SOPInstanceUID",
                    expected: sop_instance.to_string(),
                    found: parsed.sop_instance.to_string(),
                });
            }
            if parsed.sop_class != sop_class {
                return Err(IngestError::IdentityMismatch {
                    attribute: "SOPClassUID",
                    expected: sop_class.to_string(),
                    found: parsed.sop_class.to_string(),
                });
            }
            Ok((Bytes::from(file), parsed))
        }
    }
}

/// Writes the object; an object already there with the same checksum counts as written.
async fn write_object(tier: &dyn Tier, key: &ObjectKey, bytes: Bytes, checksum: Checksum) -> Result<(), IngestError> {
    // Ingest writes to the hot tier, which stores files as they are: no content class.
    let opts = PutOpts { expected_checksum: Some(checksum), overwrite: false, content_class: None };
    match tier.put_bytes(key, bytes, opts).await {
        Ok(_) => Ok(()),
        Err(TierError::AlreadyExists(_)) => {
            let meta = tier.head(key).await?;
            if meta.checksum == checksum {
                Ok(())
            } else {
                Err(IngestError::Tier(TierError::ChecksumMismatch {
                    key: key.clone(),
                    expected: checksum,
                    actual: meta.checksum,
                }))
            }
        }
        Err(e) => Err(e.into()),
    }
}
