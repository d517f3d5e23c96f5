//! The catalog's single committer: group commit over a RocksDB write batch.
//!
//! All catalog mutations run on one thread. It takes every request queued while the
//! previous batch was syncing, applies them in order to an overlay of the records they
//! touch (so counts stay right when two instances of one series share a batch), writes
//! records, index entries, the removal of write intents, the audit records and the
//! stats as one `WriteBatch` with a synced WAL, and only then answers the callers.

use super::keys::{
    self, IndexId, CF_AUDIT, CF_IDX, CF_INSTANCES, CF_INSTANCE_BY_UID, CF_INTENTS, CF_META, CF_METADATA,
};
use super::keys::{CF_DELETIONS, CF_HOLDS, CF_LINKS, CF_PATIENTS, CF_SERIES, CF_SERIES_BY_UID, CF_STUDIES};
use super::rocks::{cf, decode, decode_plain, RocksCatalogOptions};
use super::{CatalogError, CatalogStats, ConflictPolicy, InsertOutcome, InstanceRelocation, NewInstance, Relocation};
use super::{PurgeRequest, StudyMove, VerifiedCopy};
use crate::attribute::Attribute;
use crate::audit::{genesis_hash, AuditAction, AuditEvent, AuditObject, AuditOutcome, AuditRecord};
use crate::checksum::Checksum;
use crate::deletion::{CertifiedInstance, Deletion, DeletionState};
use crate::hold::{HoldId, LegalHold};
use crate::matching::{normalize_date, normalize_pn};
use crate::model::{
    InstanceRecord, Location, PatientKey, PatientRecord, Placement, SeriesRecord, StudyRecord, RECORD_VERSION,
};
use crate::patient_link::PatientLink;
use crate::uid::StudyUid;
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

enum Command {
    Insert(Box<NewInstance>, oneshot::Sender<Result<InsertOutcome, CatalogError>>),
    Relocate(Box<Relocation>, oneshot::Sender<Result<RelocateAnswer, CatalogError>>),
    Access(StudyUid, OffsetDateTime, oneshot::Sender<Result<(), CatalogError>>),
    Audit(Box<AuditEvent>, oneshot::Sender<Result<(), CatalogError>>),
    SaveDeletion(Box<(Deletion, Option<AuditEvent>)>, oneshot::Sender<Result<Deletion, CatalogError>>),
    Purge(Box<PurgeRequest>, oneshot::Sender<Result<Purged, CatalogError>>),
    PutHold(Box<(HoldId, Option<LegalHold>, AuditEvent)>, oneshot::Sender<Result<(), CatalogError>>),
    Verified(Box<(Vec<VerifiedCopy>, OffsetDateTime)>, oneshot::Sender<Result<(), CatalogError>>),
    Relink(Box<(Vec<StudyMove>, PatientLink, AuditEvent)>, oneshot::Sender<Result<(), CatalogError>>),
    Flush(oneshot::Sender<()>),
}

/// What one purge batch did: the deletion as saved, and the instance records removed.
pub(crate) type Purged = (Deletion, Vec<InstanceRecord>);

/// The per-item answers of a relocation.
pub(crate) type RelocateAnswer = Vec<Result<InstanceRecord, CatalogError>>;

/// A command's answer before it is sent back.
enum Answer {
    Insert(Result<InsertOutcome, CatalogError>),
    Relocate(RelocateAnswer),
    Deletion(Box<Deletion>),
    Purged(Box<Purged>),
    Done,
}

/// The handle callers use to reach the committer thread. Dropping it waits for the thread
/// to finish its queue and release the database, so that RocksDB is closed before the
/// process exits (RocksDB aborts when its threads outlive the process's static destructors).
pub(crate) struct WriterHandle {
    tx: Option<mpsc::UnboundedSender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl WriterHandle {
    pub(crate) fn spawn(db: Arc<DB>, state: WriterState, opts: RocksCatalogOptions) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("catalog-writer".into())
            .spawn(move || run(db, state, opts, rx))
            .expect("spawning the catalog writer thread");
        Self { tx: Some(tx), thread: Some(thread), in_flight: Arc::default() }
    }

    /// Inserts sent to the committer and not answered yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn send(&self, cmd: Command) -> Result<(), CatalogError> {
        self.tx.as_ref().ok_or(CatalogError::Closed)?.send(cmd).map_err(|_| CatalogError::Closed)
    }

    pub(crate) async fn insert(&self, new: NewInstance) -> Result<InsertOutcome, CatalogError> {
        use std::sync::atomic::Ordering;
        let (tx, rx) = oneshot::channel();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = match self.send(Command::Insert(Box::new(new), tx)) {
            Ok(()) => rx.await.map_err(|_| CatalogError::Closed).and_then(|r| r),
            Err(e) => Err(e),
        };
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CatalogError>>) -> Command,
    ) -> Result<T, CatalogError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| CatalogError::Closed).and_then(|r| r)
    }

    pub(crate) async fn relocate(&self, r: Relocation) -> Result<RelocateAnswer, CatalogError> {
        self.call(|tx| Command::Relocate(Box::new(r), tx)).await
    }

    pub(crate) async fn record_access(&self, study: StudyUid, at: OffsetDateTime) -> Result<(), CatalogError> {
        self.call(|tx| Command::Access(study, at, tx)).await
    }

    pub(crate) async fn append_audit(&self, event: AuditEvent) -> Result<(), CatalogError> {
        self.call(|tx| Command::Audit(Box::new(event), tx)).await
    }

    pub(crate) async fn save_deletion(&self, d: Deletion, event: Option<AuditEvent>) -> Result<Deletion, CatalogError> {
        self.call(|tx| Command::SaveDeletion(Box::new((d, event)), tx)).await
    }

    pub(crate) async fn purge(&self, req: PurgeRequest) -> Result<Purged, CatalogError> {
        self.call(|tx| Command::Purge(Box::new(req), tx)).await
    }

    pub(crate) async fn put_hold(
        &self,
        id: HoldId,
        hold: Option<LegalHold>,
        event: AuditEvent,
    ) -> Result<(), CatalogError> {
        self.call(|tx| Command::PutHold(Box::new((id, hold, event)), tx)).await
    }

    pub(crate) async fn mark_verified(
        &self,
        copies: Vec<VerifiedCopy>,
        at: OffsetDateTime,
    ) -> Result<(), CatalogError> {
        self.call(|tx| Command::Verified(Box::new((copies, at)), tx)).await
    }

    pub(crate) async fn relink(
        &self,
        moves: Vec<StudyMove>,
        link: PatientLink,
        event: AuditEvent,
    ) -> Result<(), CatalogError> {
        self.call(|tx| Command::Relink(Box::new((moves, link, event)), tx)).await
    }

    pub(crate) async fn flush(&self) -> Result<(), CatalogError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Flush(tx))?;
        rx.await.map_err(|_| CatalogError::Closed)
    }
}

/// What the committer keeps between batches.
pub(crate) struct WriterState {
    stats: CatalogStats,
    audit_seq: u64,
    audit_hash: Checksum,
}

impl WriterState {
    pub(crate) fn load(db: &DB) -> Result<Self, CatalogError> {
        let stats = match db.get_cf(cf(db, CF_META), b"stats")? {
            Some(v) => decode_plain(b"stats", &v)?,
            None => CatalogStats::default(),
        };
        let mut iter = db.iterator_cf(cf(db, CF_AUDIT), IteratorMode::End);
        let (audit_seq, audit_hash) = match iter.next() {
            Some(item) => {
                let (k, v) = item?;
                let rec: AuditRecord = decode(&k, &v)?;
                (rec.seq, rec.hash)
            }
            None => (0, genesis_hash()),
        };
        Ok(Self { stats, audit_seq, audit_hash })
    }
}

fn run(db: Arc<DB>, mut state: WriterState, opts: RocksCatalogOptions, mut rx: mpsc::UnboundedReceiver<Command>) {
    while let Some(first) = rx.blocking_recv() {
        let mut commands = vec![first];
        while commands.len() < opts.max_group {
            match rx.try_recv() {
                Ok(c) => commands.push(c),
                Err(_) => break,
            }
        }
        commit_group(&db, &mut state, &opts, commands);
    }
}

/// A command waiting for its batch, with where its answer goes.
enum Pending {
    Insert(Box<NewInstance>, oneshot::Sender<Result<InsertOutcome, CatalogError>>),
    Relocate(Box<Relocation>, oneshot::Sender<Result<RelocateAnswer, CatalogError>>),
    Access(StudyUid, OffsetDateTime, oneshot::Sender<Result<(), CatalogError>>),
    Audit(Box<AuditEvent>, oneshot::Sender<Result<(), CatalogError>>),
    SaveDeletion(Box<(Deletion, Option<AuditEvent>)>, oneshot::Sender<Result<Deletion, CatalogError>>),
    Purge(Box<PurgeRequest>, oneshot::Sender<Result<Purged, CatalogError>>),
    PutHold(Box<(HoldId, Option<LegalHold>, AuditEvent)>, oneshot::Sender<Result<(), CatalogError>>),
    Verified(Box<(Vec<VerifiedCopy>, OffsetDateTime)>, oneshot::Sender<Result<(), CatalogError>>),
    Relink(Box<(Vec<StudyMove>, PatientLink, AuditEvent)>, oneshot::Sender<Result<(), CatalogError>>),
}

impl Pending {
    /// Applies the command to the batch. `Err` is a failure of the whole command (its changes
    /// must be dropped); refusals that are complete answers come back inside `Ok`.
    fn apply(&self, batch: &mut Batch) -> Result<Answer, CatalogError> {
        match self {
            Pending::Insert(new, _) => match batch.insert((**new).clone()) {
                Err(e) if !matches!(e, CatalogError::Conflict { .. }) => Err(e),
                r => Ok(Answer::Insert(r)),
            },
            Pending::Relocate(r, _) => batch.relocate(r).map(Answer::Relocate),
            Pending::Access(study, at, _) => batch.record_access(study, *at).map(|()| Answer::Done),
            Pending::Audit(event, _) => {
                batch.audit((**event).clone());
                Ok(Answer::Done)
            }
            Pending::SaveDeletion(b, _) => {
                let (d, ev) = &**b;
                Ok(Answer::Deletion(Box::new(batch.save_deletion(d.clone(), ev.clone()))))
            }
            Pending::Purge(req, _) => batch.purge(req).map(|p| Answer::Purged(Box::new(p))),
            Pending::PutHold(b, _) => {
                let (id, hold, ev) = &**b;
                batch.put_hold(*id, hold.as_ref(), ev.clone());
                Ok(Answer::Done)
            }
            Pending::Verified(b, _) => {
                let (copies, at) = &**b;
                batch.mark_verified(copies, *at).map(|()| Answer::Done)
            }
            Pending::Relink(b, _) => {
                let (moves, link, ev) = &**b;
                batch.relink(moves, link, ev.clone()).map(|()| Answer::Done)
            }
        }
    }

    fn answer(self, answer: Result<Answer, CatalogError>) {
        fn unit(a: Result<Answer, CatalogError>) -> Result<(), CatalogError> {
            a.map(|_| ())
        }
        match self {
            Pending::Insert(_, tx) => {
                let _ = tx.send(answer.and_then(|a| match a {
                    Answer::Insert(r) => r,
                    _ => Err(CatalogError::Storage("mismatched answer".into())),
                }));
            }
            Pending::Relocate(_, tx) => {
                let _ = tx.send(answer.and_then(|a| match a {
                    Answer::Relocate(r) => Ok(r),
                    _ => Err(CatalogError::Storage("mismatched answer".into())),
                }));
            }
            Pending::Access(_, _, tx)
            | Pending::Audit(_, tx)
            | Pending::PutHold(_, tx)
            | Pending::Verified(_, tx)
            | Pending::Relink(_, tx) => {
                let _ = tx.send(unit(answer));
            }
            Pending::SaveDeletion(_, tx) => {
                let _ = tx.send(answer.and_then(|a| match a {
                    Answer::Deletion(d) => Ok(*d),
                    _ => Err(CatalogError::Storage("mismatched answer".into())),
                }));
            }
            Pending::Purge(_, tx) => {
                let _ = tx.send(answer.and_then(|a| match a {
                    Answer::Purged(p) => Ok(*p),
                    _ => Err(CatalogError::Storage("mismatched answer".into())),
                }));
            }
        }
    }
}

fn commit_group(db: &DB, state: &mut WriterState, opts: &RocksCatalogOptions, commands: Vec<Command>) {
    let mut pending: Vec<Pending> = Vec::new();
    let mut flushes = Vec::new();
    for cmd in commands {
        match cmd {
            Command::Insert(new, reply) => pending.push(Pending::Insert(new, reply)),
            Command::Relocate(r, reply) => pending.push(Pending::Relocate(r, reply)),
            Command::Access(study, at, reply) => pending.push(Pending::Access(study, at, reply)),
            Command::Audit(event, reply) => pending.push(Pending::Audit(event, reply)),
            Command::SaveDeletion(d, reply) => pending.push(Pending::SaveDeletion(d, reply)),
            Command::Purge(r, reply) => pending.push(Pending::Purge(r, reply)),
            Command::PutHold(h, reply) => pending.push(Pending::PutHold(h, reply)),
            Command::Verified(v, reply) => pending.push(Pending::Verified(v, reply)),
            Command::Relink(r, reply) => pending.push(Pending::Relink(r, reply)),
            Command::Flush(reply) => flushes.push(reply),
        }
    }
    // Each command is all or nothing: when one fails half way (a storage error, a corrupt
    // record), the batch is dropped, that command answered with its error, and the others
    // replayed in a fresh batch. Conflicts and refused relocations are complete answers.
    loop {
        let saved = (state.stats.clone(), state.audit_seq, state.audit_hash);
        let mut batch = Batch::new(db, state);
        let mut results = Vec::with_capacity(pending.len());
        let mut failed = None;
        for (i, p) in pending.iter().enumerate() {
            match p.apply(&mut batch) {
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
                Ok(a) => results.push(a),
            }
        }
        if let Some((i, e)) = failed {
            drop(batch);
            (state.stats, state.audit_seq, state.audit_hash) = saved.clone();
            tracing::error!(error = %e, "catalog command failed; replaying the rest of its group");
            pending.remove(i).answer(Err(e));
            continue;
        }
        let written = batch.finish().and_then(|wb| {
            let mut wo = WriteOptions::default();
            wo.set_sync(opts.sync_commits);
            db.write_opt(wb, &wo).map_err(CatalogError::from)
        });
        match written {
            Ok(()) => {
                for (p, a) in pending.into_iter().zip(results) {
                    p.answer(Ok(a));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "catalog commit failed");
                (state.stats, state.audit_seq, state.audit_hash) = saved.clone();
                for p in pending {
                    p.answer(Err(match &e {
                        CatalogError::Engine(source) => CatalogError::Engine(source.clone()),
                        other => CatalogError::Storage(other.to_string()),
                    }));
                }
            }
        }
        break;
    }
    for f in flushes {
        let _ = f.send(());
    }
}

/// A record as it was before the batch, and as the batch leaves it.
struct Slot<T> {
    before: Option<T>,
    after: Option<T>,
}

/// Records touched by one batch, keyed by their catalog key.
struct Overlay<K, T> {
    slots: HashMap<K, Slot<T>>,
}

impl<K: Hash + Eq + Clone, T: Clone + crate::format::Versioned> Overlay<K, T> {
    fn new() -> Self {
        Self { slots: HashMap::new() }
    }
    fn get(&mut self, db: &DB, cf_name: &str, key: &K, raw: &[u8]) -> Result<Option<T>, CatalogError> {
        if let Some(slot) = self.slots.get(key) {
            return Ok(slot.after.clone());
        }
        let before: Option<T> = match db.get_cf(cf(db, cf_name), raw)? {
            Some(v) => Some(decode(raw, &v)?),
            None => None,
        };
        self.slots.insert(key.clone(), Slot { before: before.clone(), after: before.clone() });
        Ok(before)
    }
    fn set(&mut self, key: K, value: Option<T>) {
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.after = value;
        }
    }
}

/// What one instance of a relocation came to.
enum Relocated {
    /// The copies changed as asked; the instance's record as it is now.
    Applied(Box<InstanceRecord>),
    /// Refused, changing nothing (the instance is gone or changed, the tier already holds a
    /// copy, or the copy invariant would break).
    Refused(CatalogError),
}

struct Batch<'a> {
    db: &'a DB,
    state: &'a mut WriterState,
    wb: WriteBatch,
    patients: Overlay<PatientKey, PatientRecord>,
    studies: Overlay<String, StudyRecord>,
    series: Overlay<(String, String), SeriesRecord>,
    instances: Overlay<(String, String, String), InstanceRecord>,
    /// SOP Instance UID → (study, series) as the batch leaves it.
    instance_parents: HashMap<String, Option<(String, String)>>,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("catalog records always serialize")
}

impl<'a> Batch<'a> {
    fn new(db: &'a DB, state: &'a mut WriterState) -> Self {
        Self {
            db,
            state,
            wb: WriteBatch::default(),
            patients: Overlay::new(),
            studies: Overlay::new(),
            series: Overlay::new(),
            instances: Overlay::new(),
            instance_parents: HashMap::new(),
        }
    }

    fn instance_parent(&mut self, sop: &str) -> Result<Option<(String, String)>, CatalogError> {
        if let Some(p) = self.instance_parents.get(sop) {
            return Ok(p.clone());
        }
        let parent = match self.db.get_cf(cf(self.db, CF_INSTANCE_BY_UID), sop)? {
            Some(v) => {
                let s = String::from_utf8_lossy(&v).into_owned();
                s.split_once('\0').map(|(a, b)| (a.to_string(), b.to_string()))
            }
            None => None,
        };
        self.instance_parents.insert(sop.to_string(), parent.clone());
        Ok(parent)
    }

    fn existing_instance(&mut self, sop: &str) -> Result<Option<InstanceRecord>, CatalogError> {
        let Some((study, series)) = self.instance_parent(sop)? else { return Ok(None) };
        let raw = keys::join(&[study.as_bytes(), series.as_bytes(), sop.as_bytes()]);
        self.instances.get(self.db, CF_INSTANCES, &(study, series, sop.to_string()), &raw)
    }

    fn insert(&mut self, new: NewInstance) -> Result<InsertOutcome, CatalogError> {
        let sop = new.instance.uid.as_str().to_string();
        let mut outcome = InsertOutcome::Stored;
        if let Some(existing) = self.existing_instance(&sop)? {
            if existing.dataset_checksum == new.instance.dataset_checksum {
                // The new copy's intent stays unless the stored record names that very object:
                // ingest removes the extra copy, or recovery does after a crash.
                if new.instance.locations.iter().all(|l| has_location(&existing, l)) {
                    self.remove_intent(&new.instance);
                }
                return Ok(InsertOutcome::AlreadyStored { existing: Box::new(existing) });
            }
            if new.policy == ConflictPolicy::Reject {
                self.audit_conflict(&new, &existing);
                return Err(CatalogError::Conflict {
                    sop_instance: new.instance.uid.clone(),
                    existing: existing.checksum,
                });
            }
            self.remove_instance(&existing)?;
            // The replaced copies become write intents in the same batch: ingest deletes them
            // and clears the intents, or recovery does after a crash.
            for loc in &existing.locations {
                self.intend_delete(loc, &existing.uid);
            }
            outcome = InsertOutcome::Replaced { previous: Box::new(existing) };
        }
        self.add_instance(&new)?;
        self.remove_intent(&new.instance);
        self.audit_stored(&new, &outcome);
        Ok(outcome)
    }

    /// Turns a copy the batch stops naming into a write intent, in the same batch: the caller
    /// deletes the object and clears the intent, or recovery does after a crash.
    fn intend_delete(&mut self, loc: &Location, sop: &crate::uid::SopInstanceUid) {
        let intent = super::WriteIntent { tier: loc.tier.clone(), key: loc.key.clone(), sop_instance: sop.clone() };
        let key = keys::join(&[loc.tier.as_str().as_bytes(), loc.key.as_str().as_bytes()]);
        self.wb.put_cf(cf(self.db, CF_INTENTS), key, encode(&intent));
    }

    fn remove_intent(&mut self, inst: &InstanceRecord) {
        for loc in &inst.locations {
            let key = keys::join(&[loc.tier.as_str().as_bytes(), loc.key.as_str().as_bytes()]);
            self.wb.delete_cf(cf(self.db, CF_INTENTS), key);
        }
    }

    fn add_instance(&mut self, new: &NewInstance) -> Result<(), CatalogError> {
        let inst = &new.instance;
        let (study_uid, series_uid, sop) =
            (inst.study.as_str().to_string(), inst.series.as_str().to_string(), inst.uid.as_str().to_string());
        let size = inst.size;
        let now = inst.received_at;

        // Patient: an existing study keeps the patient it was filed under, so that counts stay
        // with one patient even when a later instance carries another identity.
        let existing_study = self.studies.get(self.db, CF_STUDIES, &study_uid, study_uid.as_bytes())?;
        let pkey = match &existing_study {
            Some(s) if s.patient != new.patient => {
                tracing::warn!(study = %study_uid, "instance carries another patient identity than its study; filed under the study's");
                s.patient.clone()
            }
            Some(s) => s.patient.clone(),
            None => new.patient.clone(),
        };
        let mut patient = self.patients.get(self.db, CF_PATIENTS, &pkey, &pkey.encode())?.unwrap_or_else(|| {
            self.state.stats.patients += 1;
            PatientRecord {
                v: RECORD_VERSION,
                key: pkey.clone(),
                attrs: new.patient_attrs.clone(),
                study_count: 0,
                series_count: 0,
                instance_count: 0,
            }
        });

        // Study.
        let mut study = match existing_study {
            Some(s) => s,
            None => {
                self.state.stats.studies += 1;
                patient.study_count += 1;
                let mut attrs = new.patient_attrs.clone();
                attrs.extend(&new.study_attrs);
                StudyRecord {
                    v: RECORD_VERSION,
                    uid: inst.study.clone(),
                    patient: pkey.clone(),
                    attrs,
                    modalities: BTreeSet::new(),
                    sop_classes: BTreeSet::new(),
                    series_count: 0,
                    instance_count: 0,
                    size_bytes: 0,
                    created_at: now,
                    updated_at: now,
                    last_access: None,
                    placement: Placement::default(),
                }
            }
        };

        // Series.
        let skey = (study_uid.clone(), series_uid.clone());
        let raw_series = keys::join(&[study_uid.as_bytes(), series_uid.as_bytes()]);
        let mut series = match self.series.get(self.db, CF_SERIES, &skey, &raw_series)? {
            Some(s) => s,
            None => {
                self.state.stats.series += 1;
                study.series_count += 1;
                patient.series_count += 1;
                SeriesRecord {
                    v: RECORD_VERSION,
                    study: inst.study.clone(),
                    uid: inst.series.clone(),
                    attrs: new.series_attrs.clone(),
                    instance_count: 0,
                    size_bytes: 0,
                    source: inst.source.clone(),
                    created_at: now,
                    placement: Placement::default(),
                }
            }
        };

        if let Some(m) = series.attrs.get(Attribute::Modality) {
            study.modalities.insert(m.to_string());
        }
        study.sop_classes.insert(inst.sop_class.as_str().to_string());
        study.instance_count += 1;
        study.size_bytes += size;
        study.updated_at = now;
        study.placement.add(&inst.locations);
        series.placement.add(&inst.locations);
        series.instance_count += 1;
        series.size_bytes += size;
        patient.instance_count += 1;
        self.state.stats.instances += 1;
        self.state.stats.bytes += size;
        for loc in &inst.locations {
            let usage = self.state.stats.tiers.entry(loc.tier.as_str().to_string()).or_default();
            usage.objects += 1;
            usage.bytes += size;
        }

        self.patients.set(pkey, Some(patient));
        self.studies.set(study_uid.clone(), Some(study));
        self.series.set(skey, Some(series));
        let ikey = (study_uid.clone(), series_uid.clone(), sop.clone());
        let raw_inst = keys::join(&[study_uid.as_bytes(), series_uid.as_bytes(), sop.as_bytes()]);
        self.instances.get(self.db, CF_INSTANCES, &ikey, &raw_inst)?;
        self.instances.set(ikey, Some(inst.clone()));
        match &new.metadata {
            Some(json) => self.wb.put_cf(cf(self.db, CF_METADATA), &raw_inst, json.as_bytes()),
            None => self.wb.delete_cf(cf(self.db, CF_METADATA), &raw_inst),
        }
        self.instance_parents.insert(sop, Some((study_uid, series_uid)));
        Ok(())
    }

    /// Removes an instance and adjusts every count; empty series, studies and patients go too.
    fn remove_instance(&mut self, old: &InstanceRecord) -> Result<(), CatalogError> {
        let (study_uid, series_uid, sop) =
            (old.study.as_str().to_string(), old.series.as_str().to_string(), old.uid.as_str().to_string());
        let size = old.size;
        self.instances.set((study_uid.clone(), series_uid.clone(), sop.clone()), None);
        let raw_inst = keys::join(&[study_uid.as_bytes(), series_uid.as_bytes(), sop.as_bytes()]);
        self.wb.delete_cf(cf(self.db, CF_METADATA), raw_inst);
        self.instance_parents.insert(sop, None);
        self.state.stats.instances -= 1;
        self.state.stats.bytes = self.state.stats.bytes.saturating_sub(size);
        for loc in &old.locations {
            if let Some(usage) = self.state.stats.tiers.get_mut(loc.tier.as_str()) {
                usage.objects = usage.objects.saturating_sub(1);
                usage.bytes = usage.bytes.saturating_sub(size);
            }
        }

        let skey = (study_uid.clone(), series_uid.clone());
        let raw_series = keys::join(&[study_uid.as_bytes(), series_uid.as_bytes()]);
        let mut series_removed = false;
        if let Some(mut series) = self.series.get(self.db, CF_SERIES, &skey, &raw_series)? {
            series.placement.remove(&old.locations);
            series.instance_count = series.instance_count.saturating_sub(1);
            series.size_bytes = series.size_bytes.saturating_sub(size);
            if series.instance_count == 0 {
                self.series.set(skey, None);
                self.state.stats.series -= 1;
                series_removed = true;
            } else {
                self.series.set(skey, Some(series));
            }
        }
        let Some(mut study) = self.studies.get(self.db, CF_STUDIES, &study_uid, study_uid.as_bytes())? else {
            return Ok(());
        };
        study.instance_count = study.instance_count.saturating_sub(1);
        study.size_bytes = study.size_bytes.saturating_sub(size);
        study.placement.remove(&old.locations);
        if series_removed {
            study.series_count = study.series_count.saturating_sub(1);
            study.modalities = self.modalities_of(&study_uid)?;
        }
        let pkey = study.patient.clone();
        let mut patient = self.patients.get(self.db, CF_PATIENTS, &pkey, &pkey.encode())?;
        if let Some(p) = patient.as_mut() {
            p.instance_count = p.instance_count.saturating_sub(1);
            if series_removed {
                p.series_count = p.series_count.saturating_sub(1);
            }
        }
        if study.instance_count == 0 {
            self.studies.set(study_uid, None);
            self.state.stats.studies -= 1;
            if let Some(p) = patient.as_mut() {
                p.study_count = p.study_count.saturating_sub(1);
            }
        } else {
            self.studies.set(study_uid, Some(study));
        }
        match patient {
            Some(p) if p.study_count == 0 => {
                self.patients.set(pkey, None);
                self.state.stats.patients -= 1;
            }
            Some(p) => self.patients.set(pkey, Some(p)),
            None => {}
        }
        Ok(())
    }

    /// Applies a relocation; per-item refusals are answers, storage failures fail it whole.
    fn relocate(&mut self, r: &Relocation) -> Result<RelocateAnswer, CatalogError> {
        let mut answers = Vec::with_capacity(r.items.len());
        let mut moved = Vec::new();
        for item in &r.items {
            let answer = match self.relocate_one(item, r.min_copies)? {
                Relocated::Applied(rec) => Ok(*rec),
                Relocated::Refused(why) => Err(why),
            };
            if let Ok(rec) = &answer {
                moved.push(AuditObject {
                    patient: String::new(),
                    study: rec.study.to_string(),
                    sop_instance: Some(rec.uid.to_string()),
                    checksum: Some(rec.checksum),
                });
            }
            answers.push(answer);
        }
        if !moved.is_empty() {
            if let Some(study) = moved.first().map(|o| o.study.clone()) {
                let patient = self
                    .studies
                    .get(self.db, CF_STUDIES, &study, study.as_bytes())?
                    .map(|s| format!("{}^^^{}", s.patient.patient_id, s.patient.issuer))
                    .unwrap_or_default();
                for o in &mut moved {
                    o.patient = patient.clone();
                }
            }
            self.audit(AuditEvent {
                time: OffsetDateTime::now_utc(),
                action: r.action,
                actor: r.actor.clone(),
                actor_address: String::new(),
                objects: moved,
                reason: r.reason.clone(),
                outcome: AuditOutcome::Success,
                detail: Some(r.detail.clone()),
            });
        }
        Ok(answers)
    }

    /// One instance of a relocation: applied, or refused without a change; `Err` when the
    /// catalog failed.
    fn relocate_one(&mut self, item: &InstanceRelocation, min_copies: usize) -> Result<Relocated, CatalogError> {
        let sop = item.sop_instance.as_str().to_string();
        let Some(existing) = self.existing_instance(&sop)? else {
            return Ok(Relocated::Refused(CatalogError::InstanceGone(item.sop_instance.clone())));
        };
        if existing.checksum != item.checksum {
            return Ok(Relocated::Refused(CatalogError::InstanceChanged(item.sop_instance.clone())));
        }
        let removed = |l: &Location| item.remove.iter().any(|(t, k)| *t == l.tier && *k == l.key);
        let mut locations: Vec<Location> = existing.locations.iter().filter(|l| !removed(l)).cloned().collect();
        let dropped: Vec<Location> = existing.locations.iter().filter(|l| removed(l)).cloned().collect();
        for add in &item.add {
            if locations.iter().any(|l| l.tier == add.tier && l.key == add.key) {
                continue;
            }
            if locations.iter().any(|l| l.tier == add.tier) {
                return Ok(Relocated::Refused(CatalogError::DuplicateCopy {
                    sop_instance: item.sop_instance.clone(),
                    tier: add.tier.clone(),
                }));
            }
            locations.push(add.clone());
        }
        if locations.is_empty() || (locations.len() < existing.locations.len() && locations.len() < min_copies) {
            return Ok(Relocated::Refused(CatalogError::CopyInvariant {
                sop_instance: item.sop_instance.clone(),
                copies: locations.len(),
                required: min_copies.max(1),
            }));
        }

        let mut updated = existing.clone();
        updated.locations = locations;
        let (study_uid, series_uid) = (existing.study.as_str().to_string(), existing.series.as_str().to_string());
        let skey = (study_uid.clone(), series_uid.clone());
        let raw_series = keys::join(&[study_uid.as_bytes(), series_uid.as_bytes()]);
        if let Some(mut series) = self.series.get(self.db, CF_SERIES, &skey, &raw_series)? {
            series.placement.remove(&existing.locations);
            series.placement.add(&updated.locations);
            self.series.set(skey, Some(series));
        }
        if let Some(mut study) = self.studies.get(self.db, CF_STUDIES, &study_uid, study_uid.as_bytes())? {
            study.placement.remove(&existing.locations);
            study.placement.add(&updated.locations);
            self.studies.set(study_uid.clone(), Some(study));
        }
        for l in &dropped {
            if let Some(usage) = self.state.stats.tiers.get_mut(l.tier.as_str()) {
                usage.objects = usage.objects.saturating_sub(1);
                usage.bytes = usage.bytes.saturating_sub(existing.size);
            }
            self.intend_delete(l, &existing.uid);
        }
        for l in updated.locations.iter().filter(|l| !has_location(&existing, l)) {
            let usage = self.state.stats.tiers.entry(l.tier.as_str().to_string()).or_default();
            usage.objects += 1;
            usage.bytes += existing.size;
            let key = keys::join(&[l.tier.as_str().as_bytes(), l.key.as_str().as_bytes()]);
            self.wb.delete_cf(cf(self.db, CF_INTENTS), key);
        }
        let ikey = (study_uid.clone(), series_uid.clone(), sop);
        self.instances.set(ikey, Some(updated.clone()));
        Ok(Relocated::Applied(Box::new(updated)))
    }

    /// Moves a study's `last_access` forward (never back).
    fn record_access(&mut self, study: &StudyUid, at: OffsetDateTime) -> Result<(), CatalogError> {
        let uid = study.as_str().to_string();
        if let Some(mut rec) = self.studies.get(self.db, CF_STUDIES, &uid, uid.as_bytes())? {
            if rec.last_access.is_none_or(|t| t < at) {
                rec.last_access = Some(at);
                self.studies.set(uid, Some(rec));
            }
        }
        Ok(())
    }

    /// Modalities of a study's remaining series, as the batch leaves them.
    fn modalities_of(&mut self, study_uid: &str) -> Result<BTreeSet<String>, CatalogError> {
        let prefix = keys::join(&[study_uid.as_bytes(), b""]);
        let mut series_uids = Vec::new();
        for item in self.db.iterator_cf(cf(self.db, CF_SERIES), IteratorMode::From(&prefix, Direction::Forward)) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            series_uids.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        for ((st, se), _) in self.series.slots.iter() {
            if st == study_uid && !series_uids.contains(se) {
                series_uids.push(se.clone());
            }
        }
        let mut out = BTreeSet::new();
        for se in series_uids {
            let raw = keys::join(&[study_uid.as_bytes(), se.as_bytes()]);
            if let Some(s) = self.series.get(self.db, CF_SERIES, &(study_uid.to_string(), se), &raw)? {
                if let Some(m) = s.attrs.get(Attribute::Modality) {
                    out.insert(m.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Saves a deletion record, with its audit record (whose sequence number it keeps).
    fn save_deletion(&mut self, mut d: Deletion, event: Option<AuditEvent>) -> Deletion {
        if let Some(ev) = event {
            self.audit(ev);
            d.audit_seqs.push(self.state.audit_seq);
        }
        self.wb.put_cf(cf(self.db, CF_DELETIONS), d.id.0.to_be_bytes(), encode(&d));
        d
    }

    /// Removes a batch of a purging deletion's instances: records, counts, index entries; their
    /// copies become write intents; the certificate grows; one audit record lists them.
    fn purge(&mut self, req: &PurgeRequest) -> Result<Purged, CatalogError> {
        let key = req.deletion.0.to_be_bytes();
        let mut d: Deletion = match self.db.get_cf(cf(self.db, CF_DELETIONS), key)? {
            Some(v) => decode(&key, &v)?,
            None => return Err(CatalogError::Storage(format!("deletion {} is not in the catalog", req.deletion))),
        };
        if d.state != DeletionState::Purging {
            return Err(CatalogError::Storage(format!("deletion {} is {:?}, not purging", req.deletion, d.state)));
        }
        let mut removed = Vec::new();
        for sop in &req.instances {
            let Some(existing) = self.existing_instance(sop.as_str())? else { continue };
            if existing.study != d.study
                || !d.covers_instance(sop.as_str())
                || existing.received_at > d.covers_received_until
            {
                continue;
            }
            self.remove_instance(&existing)?;
            for loc in &existing.locations {
                self.intend_delete(loc, &existing.uid);
            }
            removed.push(existing);
        }
        if !removed.is_empty() {
            let patient = format!("{}^^^{}", d.patient.patient_id, d.patient.issuer);
            self.audit(AuditEvent {
                time: OffsetDateTime::now_utc(),
                action: AuditAction::InstancesDeleted,
                actor: req.actor.clone(),
                actor_address: req.address.clone(),
                objects: removed
                    .iter()
                    .map(|r| AuditObject {
                        patient: patient.clone(),
                        study: r.study.to_string(),
                        sop_instance: Some(r.uid.to_string()),
                        checksum: Some(r.checksum),
                    })
                    .collect(),
                reason: Some(req.reason.clone()),
                outcome: AuditOutcome::Success,
                detail: Some(format!("deletion {}: {} instances removed from the catalog", d.id, removed.len())),
            });
            let seq = self.state.audit_seq;
            d.audit_seqs.push(seq);
            for r in &removed {
                let tiers: Vec<String> = r.locations.iter().map(|l| l.tier.as_str().to_string()).collect();
                for t in &tiers {
                    *d.certificate.copies_per_tier.entry(t.clone()).or_default() += 1;
                }
                d.certificate.total_bytes += r.size;
                d.certificate.instances.push(CertifiedInstance {
                    sop_instance: r.uid.clone(),
                    sop_class: r.sop_class.as_str().to_string(),
                    series: r.series.as_str().to_string(),
                    size: r.size,
                    checksum: r.checksum,
                    tiers,
                    audit_seq: seq,
                });
            }
        }
        self.wb.put_cf(cf(self.db, CF_DELETIONS), key, encode(&d));
        Ok((d, removed))
    }

    /// Re-files studies under other patient identities and saves the link record.
    fn relink(&mut self, moves: &[StudyMove], link: &PatientLink, event: AuditEvent) -> Result<(), CatalogError> {
        for m in moves {
            let uid = m.study.as_str().to_string();
            let Some(mut study) = self.studies.get(self.db, CF_STUDIES, &uid, uid.as_bytes())? else { continue };
            let from = study.patient.clone();
            if from != m.to {
                if let Some(mut p) = self.patients.get(self.db, CF_PATIENTS, &from, &from.encode())? {
                    p.study_count = p.study_count.saturating_sub(1);
                    p.series_count = p.series_count.saturating_sub(study.series_count);
                    p.instance_count = p.instance_count.saturating_sub(study.instance_count);
                    if p.study_count == 0 {
                        self.patients.set(from.clone(), None);
                        self.state.stats.patients = self.state.stats.patients.saturating_sub(1);
                    } else {
                        self.patients.set(from.clone(), Some(p));
                    }
                }
                let mut target = match self.patients.get(self.db, CF_PATIENTS, &m.to, &m.to.encode())? {
                    Some(p) => p,
                    None => {
                        self.state.stats.patients += 1;
                        PatientRecord {
                            v: RECORD_VERSION,
                            key: m.to.clone(),
                            attrs: m.patient_attrs.clone(),
                            study_count: 0,
                            series_count: 0,
                            instance_count: 0,
                        }
                    }
                };
                target.study_count += 1;
                target.series_count += study.series_count;
                target.instance_count += study.instance_count;
                self.patients.set(m.to.clone(), Some(target));
            }
            study.patient = m.to.clone();
            study.attrs = crate::patient_link::with_patient(&study.attrs, &m.patient_attrs);
            self.studies.set(uid, Some(study));
        }
        self.wb.put_cf(cf(self.db, CF_LINKS), link.id.0.to_be_bytes(), encode(link));
        self.audit(event);
        Ok(())
    }

    /// Sets `verified_at` of copies read back intact.
    fn mark_verified(&mut self, copies: &[VerifiedCopy], at: OffsetDateTime) -> Result<(), CatalogError> {
        for c in copies {
            let sop = c.sop_instance.as_str();
            let Some(mut rec) = self.existing_instance(sop)? else { continue };
            if rec.checksum != c.checksum {
                continue;
            }
            let mut changed = false;
            for l in rec.locations.iter_mut().filter(|l| l.tier == c.tier && l.key == c.key) {
                if l.verified_at < at {
                    l.verified_at = at;
                    changed = true;
                }
            }
            if changed {
                let key = (rec.study.as_str().to_string(), rec.series.as_str().to_string(), sop.to_string());
                self.instances.set(key, Some(rec));
            }
        }
        Ok(())
    }

    /// Saves (or removes) a legal hold with its audit record.
    fn put_hold(&mut self, id: HoldId, hold: Option<&LegalHold>, event: AuditEvent) {
        match hold {
            Some(h) => self.wb.put_cf(cf(self.db, CF_HOLDS), id.0.to_be_bytes(), encode(h)),
            None => self.wb.delete_cf(cf(self.db, CF_HOLDS), id.0.to_be_bytes()),
        }
        self.audit(event);
    }

    fn audit(&mut self, event: AuditEvent) {
        let seq = self.state.audit_seq + 1;
        let rec = AuditRecord::chain(seq, self.state.audit_hash, event);
        self.wb.put_cf(cf(self.db, CF_AUDIT), keys::audit_key(seq), encode(&rec));
        self.state.audit_seq = seq;
        self.state.audit_hash = rec.hash;
    }

    fn audit_object(new: &NewInstance, checksum: Checksum) -> AuditObject {
        AuditObject {
            patient: format!("{}^^^{}", new.patient.patient_id, new.patient.issuer),
            study: new.instance.study.to_string(),
            sop_instance: Some(new.instance.uid.to_string()),
            checksum: Some(checksum),
        }
    }

    fn audit_stored(&mut self, new: &NewInstance, outcome: &InsertOutcome) {
        let (action, detail) = match outcome {
            InsertOutcome::Replaced { previous } => {
                (AuditAction::InstanceReplaced, Some(format!("replaced checksum {}", previous.checksum)))
            }
            _ => (AuditAction::InstanceStored, None),
        };
        self.audit(AuditEvent {
            time: new.instance.received_at,
            action,
            actor: new.instance.source.actor.clone(),
            actor_address: new.instance.source.address.clone(),
            objects: vec![Self::audit_object(new, new.instance.checksum)],
            reason: None,
            outcome: AuditOutcome::Success,
            detail,
        });
    }

    fn audit_conflict(&mut self, new: &NewInstance, existing: &InstanceRecord) {
        self.audit(AuditEvent {
            time: new.instance.received_at,
            action: AuditAction::InstanceConflictRejected,
            actor: new.instance.source.actor.clone(),
            actor_address: new.instance.source.address.clone(),
            objects: vec![Self::audit_object(new, new.instance.checksum)],
            reason: Some("different content under an existing SOP Instance UID".into()),
            outcome: AuditOutcome::MinorFailure,
            detail: Some(format!("stored checksum {}", existing.checksum)),
        });
    }

    /// Writes every touched record and its index changes into the batch.
    fn finish(mut self) -> Result<WriteBatch, CatalogError> {
        let db = self.db;
        let mut wb = std::mem::take(&mut self.wb);
        let idx = cf(db, CF_IDX);
        for (key, slot) in self.patients.slots.drain() {
            write_slot(&mut wb, cf(db, CF_PATIENTS), &key.encode(), &slot);
            diff_index(&mut wb, idx, patient_index(slot.before.as_ref()), patient_index(slot.after.as_ref()));
        }
        for (key, slot) in self.studies.slots.drain() {
            write_slot(&mut wb, cf(db, CF_STUDIES), key.as_bytes(), &slot);
            diff_index(&mut wb, idx, study_index(slot.before.as_ref()), study_index(slot.after.as_ref()));
        }
        // A series UID maps to the study that has it after the batch: a present slot wins over a
        // removed one, whatever order the slots come in (a replace may move a series between studies).
        let mut series_parent: HashMap<String, Option<String>> = HashMap::new();
        for ((study, series), slot) in self.series.slots.drain() {
            write_slot(&mut wb, cf(db, CF_SERIES), &keys::join(&[study.as_bytes(), series.as_bytes()]), &slot);
            match (&slot.before, &slot.after) {
                (_, Some(_)) => {
                    series_parent.insert(series, Some(study));
                }
                (Some(_), None) => {
                    series_parent.entry(series).or_insert(None);
                }
                (None, None) => {}
            }
        }
        for (series, study) in series_parent {
            match study {
                Some(study) => wb.put_cf(cf(db, CF_SERIES_BY_UID), series.as_bytes(), study.as_bytes()),
                None => wb.delete_cf(cf(db, CF_SERIES_BY_UID), series.as_bytes()),
            }
        }
        for ((study, series, sop), slot) in self.instances.slots.drain() {
            write_slot(
                &mut wb,
                cf(db, CF_INSTANCES),
                &keys::join(&[study.as_bytes(), series.as_bytes(), sop.as_bytes()]),
                &slot,
            );
        }
        for (sop, parent) in self.instance_parents.drain() {
            match parent {
                Some((study, series)) => wb.put_cf(
                    cf(db, CF_INSTANCE_BY_UID),
                    sop.as_bytes(),
                    keys::join(&[study.as_bytes(), series.as_bytes()]),
                ),
                None => wb.delete_cf(cf(db, CF_INSTANCE_BY_UID), sop.as_bytes()),
            }
        }
        wb.put_cf(cf(db, CF_META), b"stats", encode(&self.state.stats));
        Ok(wb)
    }
}

fn write_slot<T: Serialize + PartialEq>(wb: &mut WriteBatch, cf: &rocksdb::ColumnFamily, key: &[u8], slot: &Slot<T>) {
    if slot.before == slot.after {
        return;
    }
    match &slot.after {
        Some(v) => wb.put_cf(cf, key, encode(v)),
        None => wb.delete_cf(cf, key),
    }
}

fn diff_index(wb: &mut WriteBatch, idx: &rocksdb::ColumnFamily, before: BTreeSet<Vec<u8>>, after: BTreeSet<Vec<u8>>) {
    for gone in before.difference(&after) {
        wb.delete_cf(idx, gone);
    }
    for added in after.difference(&before) {
        wb.put_cf(idx, added, b"");
    }
}

/// Index entries of a patient record.
fn patient_index(p: Option<&PatientRecord>) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    if let Some(p) = p {
        let target = p.key.encode();
        out.insert(keys::index_key(IndexId::PatientId, &p.key.patient_id, &target));
        for name in values(p.attrs.get(Attribute::PatientName)) {
            out.insert(keys::index_key(IndexId::PatientName, &normalize_pn(name), &target));
        }
    }
    out
}

/// Index entries of a study record.
fn study_index(s: Option<&StudyRecord>) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    if let Some(s) = s {
        let target = s.uid.as_str().as_bytes();
        out.insert(keys::index_key(IndexId::StudyPatientId, &s.patient.patient_id, target));
        for name in values(s.attrs.get(Attribute::PatientName)) {
            out.insert(keys::index_key(IndexId::StudyPatientName, &normalize_pn(name), target));
        }
        for date in values(s.attrs.get(Attribute::StudyDate)) {
            let d = normalize_date(date).unwrap_or_else(|_| date.to_string());
            out.insert(keys::index_key(IndexId::StudyDate, &d, target));
        }
        for acc in values(s.attrs.get(Attribute::AccessionNumber)) {
            out.insert(keys::index_key(IndexId::StudyAccession, acc, target));
        }
        for m in s.modalities.iter().flat_map(|m| values(Some(m))) {
            out.insert(keys::index_key(IndexId::StudyModality, m, target));
        }
    }
    out
}

/// The values of a possibly multi-valued attribute, trimmed as matching trims them.
pub(crate) fn values(v: Option<&str>) -> impl Iterator<Item = &str> {
    v.into_iter().flat_map(|v| v.split('\\')).map(crate::catalog::keys::trim_value).filter(|v| !v.is_empty())
}

/// Whether a record names the same object (tier and key) as a location.
fn has_location(rec: &InstanceRecord, loc: &crate::model::Location) -> bool {
    rec.locations.iter().any(|l| l.tier == loc.tier && l.key == loc.key)
}
