//! Lifecycle jobs on a real RocksDB catalog with in-memory tiers standing in for hot, warm
//! and an archive class that needs recalls: moves, copies, the copy invariant, recalls
//! shared by concurrent retrieves, placements and the audit trail. The real tiers run the
//! same paths in the tier plugins' and the binary's tests.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::audit::AuditAction;
use archive_core::catalog::rocks::{RocksCatalog, RocksCatalogOptions};
use archive_core::catalog::{Catalog, ConflictPolicy};
use archive_core::checksum::Checksum;
use archive_core::deletion::{Deleter, DeletionCause, DeletionRequest, DeletionSettings, DeletionState};
use archive_core::disk::DiskGuard;
use archive_core::ingest::{Ingest, IngestInput};
use archive_core::lifecycle::scrub::Scrubber;
use archive_core::lifecycle::{
    JobKind, JobState, Lifecycle, LifecycleError, LifecycleSettings, OnlineState, TierMoveRequest,
};
use archive_core::metrics::Metrics;
use archive_core::model::Source;
use archive_core::tier::memory::MemoryTier;
use archive_core::tier::TierSet;
use archive_core::tier::{
    collect_stream, Availability, ByteStream, GetOpts, GetResult, ObjectKey, ObjectMeta, PutOpts, Tier,
    TierCapabilities, TierError, TierName,
};
use archive_core::uid::StudyUid;
use async_trait::async_trait;
use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn object(study: &str, series: &str, sop: &str, payload: usize) -> Bytes {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, v: &str| obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    put(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7");
    put(tags::SOP_INSTANCE_UID, VR::UI, sop);
    put(tags::MODALITY, VR::CS, "OT");
    put(tags::PATIENT_ID, VR::LO, "P1");
    put(tags::STUDY_INSTANCE_UID, VR::UI, study);
    put(tags::SERIES_INSTANCE_UID, VR::UI, series);
    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(vec![7u8; payload])));
    let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1")).unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    Bytes::from(out)
}

struct Fixture {
    _dir: tempfile::TempDir,
    catalog: Arc<RocksCatalog>,
    hot: Arc<MemoryTier>,
    warm: Arc<MemoryTier>,
    cold: Arc<MemoryTier>,
    lifecycle: Lifecycle,
    tiers: Arc<TierSet>,
}

fn name(s: &str) -> TierName {
    TierName::new(s).unwrap()
}

async fn fixture(min_copies: usize, studies: &[(&str, usize)]) -> Fixture {
    fixture_with(min_copies, studies, Vec::new(), |_| {}).await
}

/// A fixture with more tiers and adjusted settings.
async fn fixture_with(
    min_copies: usize,
    studies: &[(&str, usize)],
    extra: Vec<Arc<dyn Tier>>,
    adjust: impl FnOnce(&mut LifecycleSettings),
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(RocksCatalog::open(dir.path(), RocksCatalogOptions::default()).unwrap());
    let hot = Arc::new(MemoryTier::new(name("hot")));
    let warm = Arc::new(MemoryTier::new(name("warm")));
    let cold = Arc::new(MemoryTier::with_capabilities(
        name("cold"),
        TierCapabilities {
            availability: Availability::Offline,
            ranged_reads: true,
            needs_recall: true,
            max_object_size: None,
            batch_bytes: None,
        },
    ));
    let mut all: Vec<Arc<dyn Tier>> = vec![hot.clone(), warm.clone(), cold.clone()];
    all.extend(extra);
    let tiers = Arc::new(TierSet::new(all, name("hot")).unwrap());
    let metrics = Metrics::new();
    let ingest = Ingest::new(catalog.clone(), tiers.clone(), DiskGuard::new(), ConflictPolicy::Reject, metrics.clone());
    for (study, n) in studies {
        for i in 0..*n {
            let bytes = object(study, &format!("{study}.1"), &format!("{study}.1.{i}"), 1000 + i);
            ingest.ingest(IngestInput::Part10(bytes), Source::default()).await.unwrap();
        }
    }
    let mut settings = LifecycleSettings {
        min_copies,
        max_concurrent_jobs: 2,
        bytes_per_sec: 0,
        recall_tier: name("hot"),
        recall_wait: Duration::from_secs(30),
        keep_finished: 100,
        commit_batch: 4,
        batch_objects: 1000,
        attempts: 3,
    };
    adjust(&mut settings);
    let lifecycle = Lifecycle::new(catalog.clone(), tiers.clone(), settings, metrics);
    Fixture { _dir: dir, catalog, hot, warm, cold, lifecycle, tiers }
}

fn request(study: &str, to: &str, from: Option<&str>, keep_source: bool) -> TierMoveRequest {
    TierMoveRequest {
        study: StudyUid::new(study).unwrap(),
        to: name(to),
        from: from.map(name),
        keep_source,
        requested_by: "admin".into(),
        reason: Some("test".into()),
    }
}

async fn run(f: &Fixture, req: TierMoveRequest) -> archive_core::lifecycle::Job {
    let job = f.lifecycle.submit(req).unwrap();
    f.lifecycle.wait(job.id, Duration::from_secs(60)).await.unwrap()
}

#[tokio::test]
async fn a_move_copies_verifies_commits_then_deletes_the_source() {
    let f = fixture(1, &[("1.9.1", 10), ("1.9.2", 3)]).await;
    let job = run(&f, request("1.9.1", "warm", None, false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert_eq!((job.instances_done, job.instances_failed, job.instances_total), (10, 0, 10));

    // Every instance of the study names exactly one copy, on warm, and that copy holds its bytes.
    let study = StudyUid::new("1.9.1").unwrap();
    for rec in f.catalog.instances_of_study(&study).unwrap() {
        assert_eq!(rec.locations.len(), 1);
        assert_eq!(rec.locations[0].tier, name("warm"));
        let meta = f.warm.head(&rec.locations[0].key).await.unwrap();
        assert_eq!(meta.checksum, rec.checksum);
        assert!(f.hot.head(&rec.locations[0].key).await.is_err(), "source copy left on hot");
    }
    // The other study did not move; no intent is left behind.
    assert_eq!(f.hot.list(None).await.unwrap().len(), 3);
    assert_eq!(f.warm.list(None).await.unwrap().len(), 10);
    assert!(f.catalog.pending_writes().unwrap().is_empty());

    // Placement and per-tier stats follow the move.
    let rec = f.catalog.study(&study).unwrap().unwrap();
    assert_eq!(rec.placement.0.get("warm"), Some(&10));
    assert_eq!(rec.placement.0.len(), 1);
    let stats = f.catalog.stats().unwrap();
    assert_eq!(stats.tiers["warm"].objects, 10);
    assert_eq!(stats.tiers["hot"].objects, 3);

    // One audit record per committed batch, and the chain still verifies.
    let migrated: usize = f
        .catalog
        .audit_records(1)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .filter(|r| r.event.action == AuditAction::InstancesMigrated)
        .map(|r| r.event.objects.len())
        .sum();
    assert_eq!(migrated, 10);
    assert!(f.catalog.verify_audit().unwrap().is_intact());
    // A second run finds nothing to do.
    let again = run(&f, request("1.9.1", "warm", None, false)).await;
    assert_eq!((again.state, again.bytes_copied, again.instances_done), (JobState::Done, 0, 10));
}

#[tokio::test]
async fn the_last_verified_copies_are_never_dropped() {
    let f = fixture(2, &[("1.9.3", 4)]).await;
    // Copy to warm: two copies each.
    let job = run(&f, request("1.9.3", "warm", None, true)).await;
    assert_eq!(job.state, JobState::Done);
    // Moving the hot copy onto warm, where a copy already is, would leave one copy: refused.
    let job = run(&f, request("1.9.3", "warm", Some("hot"), false)).await;
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.instances_failed, 4);
    assert!(job.last_error.unwrap().contains("at least 2"), "error names the invariant");
    assert_eq!(f.hot.list(None).await.unwrap().len(), 4, "no hot copy may be deleted");
    assert_eq!(f.warm.list(None).await.unwrap().len(), 4);
    // A move that keeps the count (hot -> cold) is fine.
    let job = run(&f, request("1.9.3", "cold", Some("hot"), false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    for rec in f.catalog.instances_of_study(&StudyUid::new("1.9.3").unwrap()).unwrap() {
        let mut tiers: Vec<_> = rec.locations.iter().map(|l| l.tier.to_string()).collect();
        tiers.sort();
        assert_eq!(tiers, ["cold", "warm"]);
    }
}

#[tokio::test]
async fn one_job_per_study_and_unknown_tiers_are_refused() {
    let f = fixture(1, &[("1.9.4", 2)]).await;
    assert!(matches!(f.lifecycle.submit(request("1.9.4", "tape9", None, false)), Err(LifecycleError::UnknownTier(_))));
    assert!(matches!(
        f.lifecycle.submit(request("1.9.404", "warm", None, false)),
        Err(LifecycleError::StudyNotFound(_))
    ));
    assert!(matches!(
        f.lifecycle.submit(request("1.9.4", "hot", Some("hot"), false)),
        Err(LifecycleError::SameTier(_))
    ));
    let first = f.lifecycle.submit(request("1.9.4", "warm", None, false)).unwrap();
    match f.lifecycle.submit(request("1.9.4", "cold", None, false)) {
        Err(LifecycleError::Busy { job, .. }) => assert_eq!(job, first.id),
        Ok(_) => {
            // The first job may already have finished on a fast machine.
            assert!(f.lifecycle.job(first.id).unwrap().state.is_finished());
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn concurrent_retrieves_share_one_recall_from_an_archive_class() {
    let f = fixture(1, &[("1.9.5", 5)]).await;
    let job = run(&f, request("1.9.5", "cold", None, false)).await;
    assert_eq!(job.state, JobState::Done);
    let study = StudyUid::new("1.9.5").unwrap();
    let placement = f.catalog.study(&study).unwrap().unwrap().placement;
    assert_eq!(f.tiers.availability_of(&placement), Some(Availability::Offline));

    let (a, b) = tokio::join!(
        f.lifecycle.ensure_online(&study, Duration::from_secs(120)),
        f.lifecycle.ensure_online(&study, Duration::from_secs(120)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let (OnlineState::Recalled(ja), OnlineState::Recalled(jb)) = (&a, &b) else { panic!("{a:?} {b:?}") };
    assert_eq!(ja, jb, "both retrieves waited on one recall");
    let recalls = f.lifecycle.jobs().into_iter().filter(|j| j.kind == JobKind::Recall).count();
    assert_eq!(recalls, 1);
    // The recalled study has online copies on hot and keeps its cold ones.
    for rec in f.catalog.instances_of_study(&study).unwrap() {
        assert_eq!(rec.locations.len(), 2);
    }
    assert_eq!(f.hot.list(None).await.unwrap().len(), 5);
    assert_eq!(f.cold.list(None).await.unwrap().len(), 5);
    let placement = f.catalog.study(&study).unwrap().unwrap().placement;
    assert_eq!(f.tiers.availability_of(&placement), Some(Availability::Online));
    assert_eq!(f.lifecycle.ensure_online(&study, Duration::from_secs(1)).await.unwrap(), OnlineState::AlreadyOnline);
}

#[tokio::test]
async fn a_short_wait_reports_a_pending_recall() {
    let f = fixture(1, &[("1.9.6", 2)]).await;
    run(&f, request("1.9.6", "cold", None, false)).await;
    let study = StudyUid::new("1.9.6").unwrap();
    match f.lifecycle.ensure_online(&study, Duration::from_millis(10)).await.unwrap() {
        OnlineState::Pending(id) => {
            let job = f.lifecycle.wait(id, Duration::from_secs(60)).await.unwrap();
            assert_eq!(job.state, JobState::Done);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_scrub_finds_a_damaged_copy_and_audits_it() {
    let f = fixture(1, &[("1.9.7", 3)]).await;
    let recs = f.catalog.instances_of_study(&StudyUid::new("1.9.7").unwrap()).unwrap();
    assert!(f.hot.corrupt_for_test(&recs[1].locations[0].key));
    let scrubber = Scrubber::new(f.catalog.clone(), f.tiers.clone(), Metrics::new(), 0);
    let status = scrubber.pass().await;
    assert_eq!((status.copies_ok, status.copies_failed), (2, 1), "{status:?}");
    assert!(status.last_failure.unwrap().contains(recs[1].uid.as_str()));
    let audited = f
        .catalog
        .audit_records(1)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .filter(|r| r.event.action == AuditAction::IntegrityFailure)
        .count();
    assert_eq!(audited, 1);
    // The intact copies carry the time of this pass; the damaged one keeps its old time.
    let after = f.catalog.instances_of_study(&StudyUid::new("1.9.7").unwrap()).unwrap();
    for (i, (old, new)) in recs.iter().zip(&after).enumerate() {
        let moved = new.locations[0].verified_at > old.locations[0].verified_at;
        assert_eq!(
            moved,
            i != 1,
            "instance {i}: {:?} -> {:?}",
            old.locations[0].verified_at,
            new.locations[0].verified_at
        );
    }
}

#[tokio::test]
async fn jobs_are_saved_and_resumed_by_a_new_engine() {
    let f = fixture(1, &[("1.9.8", 6)]).await;
    let job = run(&f, request("1.9.8", "warm", None, false)).await;
    // A fresh engine over the same catalog knows the finished job.
    let again = Lifecycle::new(f.catalog.clone(), f.tiers.clone(), f.lifecycle.settings().clone(), Metrics::new());
    assert_eq!(again.resume().unwrap(), 0);
    assert_eq!(again.job(job.id).unwrap().state, JobState::Done);
}

/// How a [`BatchTier`] fails.
#[derive(Debug, Default)]
struct Faults {
    /// `put_many` calls that fail with a transient error before they work again.
    transient: AtomicU32,
    /// Every `put` and `put_many` fails with a permanent error.
    broken: AtomicBool,
}

/// A tier that takes batches (like S3 bundles) over a memory tier, recording each
/// `put_many` (its objects and bytes) and each single `put`.
#[derive(Debug)]
struct BatchTier {
    inner: MemoryTier,
    batch_bytes: u64,
    batches: Mutex<Vec<(usize, u64)>>,
    single_puts: AtomicU32,
    faults: Faults,
    /// Items of each `verify_many` call.
    verifies: Mutex<Vec<usize>>,
    /// Keys of each `delete_many` call.
    delete_batches: Mutex<Vec<usize>>,
    /// Damage this object's stored bytes right after the next `put_many` writes it.
    damage_after_put: Mutex<Option<ObjectKey>>,
    /// Make every `delete_many` fail.
    failing_deletes: AtomicBool,
    /// Keys of each `get_many` call.
    get_many_calls: Mutex<Vec<usize>>,
    /// Full-object `get` calls.
    full_gets: AtomicU32,
}

impl BatchTier {
    fn new(batch_bytes: u64) -> Self {
        Self {
            inner: MemoryTier::new(name("batch")),
            batch_bytes,
            batches: Mutex::new(Vec::new()),
            single_puts: AtomicU32::new(0),
            faults: Faults::default(),
            verifies: Mutex::new(Vec::new()),
            delete_batches: Mutex::new(Vec::new()),
            damage_after_put: Mutex::new(None),
            failing_deletes: AtomicBool::new(false),
            get_many_calls: Mutex::new(Vec::new()),
            full_gets: AtomicU32::new(0),
        }
    }

    fn fail(&self) -> Option<TierError> {
        if self.faults.broken.load(Ordering::SeqCst) {
            return Some(TierError::Other("the tier is broken".into()));
        }
        let transient = self.faults.transient.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        transient.is_ok().then(|| TierError::transient_msg("try again"))
    }
}

#[async_trait]
impl Tier for BatchTier {
    fn name(&self) -> &TierName {
        self.inner.name()
    }
    fn capabilities(&self) -> TierCapabilities {
        TierCapabilities { batch_bytes: Some(self.batch_bytes), ..self.inner.capabilities() }
    }
    async fn put(&self, key: &ObjectKey, body: ByteStream, opts: PutOpts) -> Result<ObjectMeta, TierError> {
        self.single_puts.fetch_add(1, Ordering::SeqCst);
        if self.faults.broken.load(Ordering::SeqCst) {
            return Err(TierError::Other("the tier is broken".into()));
        }
        self.inner.put(key, body, opts).await
    }
    async fn put_many(&self, items: Vec<(ObjectKey, ByteStream, PutOpts)>) -> Result<Vec<ObjectMeta>, TierError> {
        if let Some(e) = self.fail() {
            return Err(e);
        }
        let metas = self.inner.put_many(items).await?;
        self.batches.lock().unwrap().push((metas.len(), metas.iter().map(|m| m.size).sum()));
        if let Some(key) = self.damage_after_put.lock().unwrap().take() {
            assert!(self.inner.corrupt_for_test(&key));
        }
        Ok(metas)
    }
    async fn verify_many(&self, items: Vec<(ObjectKey, Checksum)>) -> Result<Vec<Result<(), TierError>>, TierError> {
        self.verifies.lock().unwrap().push(items.len());
        self.inner.verify_many(items).await
    }
    async fn delete_many(&self, keys: Vec<ObjectKey>) -> Result<(), TierError> {
        self.delete_batches.lock().unwrap().push(keys.len());
        if self.failing_deletes.load(Ordering::SeqCst) {
            return Err(TierError::transient_msg("deletes are failing"));
        }
        self.inner.delete_many(keys).await
    }
    async fn get(&self, key: &ObjectKey, opts: GetOpts) -> Result<GetResult, TierError> {
        if opts.range.is_none() {
            self.full_gets.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get(key, opts).await
    }
    async fn get_many(&self, keys: Vec<ObjectKey>) -> Result<Vec<Result<(ObjectMeta, Bytes), TierError>>, TierError> {
        self.get_many_calls.lock().unwrap().push(keys.len());
        self.inner.get_many(keys).await
    }
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, TierError> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), TierError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>, TierError> {
        self.inner.list(prefix).await
    }
}

async fn batch_fixture(batch_bytes: u64, studies: &[(&str, usize)]) -> (Fixture, Arc<BatchTier>) {
    let batch = Arc::new(BatchTier::new(batch_bytes));
    let f = fixture_with(1, studies, vec![batch.clone()], |s| s.attempts = 3).await;
    (f, batch)
}

/// Every instance of the study has exactly one copy, on `tier`.
fn assert_only_on(f: &Fixture, study: &str, tier: &str) {
    for rec in f.catalog.instances_of_study(&StudyUid::new(study).unwrap()).unwrap() {
        let tiers: Vec<_> = rec.locations.iter().map(|l| l.tier.to_string()).collect();
        assert_eq!(tiers, [tier], "{}", rec.uid);
    }
}

#[tokio::test]
async fn a_move_to_a_batching_tier_writes_a_study_with_one_put_many() {
    let (f, batch) = batch_fixture(1 << 20, &[("1.9.20", 10)]).await;
    let job = run(&f, request("1.9.20", "batch", None, false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert_eq!((job.instances_done, job.instances_failed), (10, 0));
    assert_eq!(batch.batches.lock().unwrap().len(), 1, "one put_many for the study");
    assert_eq!(batch.batches.lock().unwrap()[0].0, 10);
    assert_eq!(batch.single_puts.load(Ordering::SeqCst), 0);
    assert_only_on(&f, "1.9.20", "batch");
    assert!(f.hot.list(None).await.unwrap().is_empty(), "sources deleted");
    assert!(f.catalog.pending_writes().unwrap().is_empty());
    // One audit record for the batch.
    let records: Vec<usize> = f
        .catalog
        .audit_records(1)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .filter(|r| r.event.action == AuditAction::InstancesMigrated)
        .map(|r| r.event.objects.len())
        .collect();
    assert_eq!(records, [10]);
    assert!(f.catalog.verify_audit().unwrap().is_intact());
}

#[tokio::test]
async fn batches_hold_at_most_batch_bytes() {
    let limit = 5000;
    let (f, batch) = batch_fixture(limit, &[("1.9.21", 10)]).await;
    let job = run(&f, request("1.9.21", "batch", None, false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let batches = batch.batches.lock().unwrap().clone();
    assert!(batches.len() > 1, "{batches:?}");
    assert_eq!(batches.iter().map(|b| b.0).sum::<usize>(), 10);
    assert!(batches.iter().all(|&(n, bytes)| n == 1 || bytes <= limit), "{batches:?}");
    assert_only_on(&f, "1.9.21", "batch");
    assert!(f.catalog.pending_writes().unwrap().is_empty());
}

#[tokio::test]
async fn batches_hold_at_most_batch_objects() {
    let batch = Arc::new(BatchTier::new(1 << 30));
    let f = fixture_with(1, &[("1.9.22", 7)], vec![batch.clone()], |s| s.batch_objects = 3).await;
    let job = run(&f, request("1.9.22", "batch", None, false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let counts: Vec<usize> = batch.batches.lock().unwrap().iter().map(|b| b.0).collect();
    assert_eq!(counts, [3, 3, 1]);
}

#[tokio::test]
async fn a_transient_put_many_failure_is_retried() {
    let (f, batch) = batch_fixture(1 << 20, &[("1.9.23", 5)]).await;
    batch.faults.transient.store(2, Ordering::SeqCst);
    let job = run(&f, request("1.9.23", "batch", None, false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert_eq!(batch.batches.lock().unwrap().len(), 1);
    assert_eq!(batch.single_puts.load(Ordering::SeqCst), 0);
    assert_only_on(&f, "1.9.23", "batch");
    assert!(f.catalog.pending_writes().unwrap().is_empty());
}

#[tokio::test]
async fn a_failing_put_many_commits_nothing() {
    let (f, batch) = batch_fixture(1 << 20, &[("1.9.24", 4)]).await;
    let before = f.catalog.instances_of_study(&StudyUid::new("1.9.24").unwrap()).unwrap();
    let unchanged = |f: &Fixture| {
        let now = f.catalog.instances_of_study(&StudyUid::new("1.9.24").unwrap()).unwrap();
        assert_eq!(now.len(), before.len());
        for (a, b) in now.iter().zip(&before) {
            assert_eq!(
                a.locations.iter().map(|l| &l.key).collect::<Vec<_>>(),
                b.locations.iter().map(|l| &l.key).collect::<Vec<_>>()
            );
            assert_eq!(a.locations[0].tier, name("hot"));
        }
    };
    // Transient failures that outlast the attempts: every instance fails, nothing moves.
    batch.faults.transient.store(100, Ordering::SeqCst);
    let job = run(&f, request("1.9.24", "batch", None, false)).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert_eq!((job.instances_done, job.instances_failed), (0, 4));
    assert!(job.last_error.unwrap().contains("try again"));
    assert_eq!(batch.single_puts.load(Ordering::SeqCst), 0, "transient failures are not split up");
    unchanged(&f);

    // A tier that refuses for good: the batch is split into single puts, which fail too.
    batch.faults.transient.store(0, Ordering::SeqCst);
    batch.faults.broken.store(true, Ordering::SeqCst);
    let job = run(&f, request("1.9.24", "batch", None, false)).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert_eq!((job.instances_done, job.instances_failed), (0, 4));
    assert_eq!(batch.single_puts.load(Ordering::SeqCst), 4);
    unchanged(&f);
    assert!(batch.list(None).await.unwrap().is_empty(), "nothing left on the target");
    assert_eq!(f.hot.list(None).await.unwrap().len(), 4, "sources kept");
    assert!(f.catalog.pending_writes().unwrap().is_empty(), "no intent left");
    let migrated = f
        .catalog
        .audit_records(1)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .filter(|r| r.event.action == AuditAction::InstancesMigrated)
        .count();
    assert_eq!(migrated, 0);
}

#[tokio::test]
async fn one_unreadable_source_fails_only_itself() {
    let (f, batch) = batch_fixture(1 << 20, &[("1.9.25", 5)]).await;
    let recs = f.catalog.instances_of_study(&StudyUid::new("1.9.25").unwrap()).unwrap();
    assert!(f.hot.corrupt_for_test(&recs[2].locations[0].key));
    let job = run(&f, request("1.9.25", "batch", None, false)).await;
    assert_eq!(job.state, JobState::Failed, "{job:?}");
    assert_eq!((job.instances_done, job.instances_failed), (4, 1));
    assert!(job.last_error.unwrap().contains(recs[2].uid.as_str()));
    for rec in f.catalog.instances_of_study(&StudyUid::new("1.9.25").unwrap()).unwrap() {
        let expected = if rec.uid == recs[2].uid { "hot" } else { "batch" };
        assert_eq!(rec.locations.len(), 1);
        assert_eq!(rec.locations[0].tier, name(expected), "{}", rec.uid);
    }
    assert_eq!(batch.list(None).await.unwrap().len(), 4);
    assert!(f.catalog.pending_writes().unwrap().is_empty());
}

#[tokio::test]
async fn batched_copies_take_from_the_shared_throttle() {
    let batch = Arc::new(BatchTier::new(1 << 20));
    // About 4 KiB at 2 KiB/s: well over a second, however fast the machine.
    let f = fixture_with(1, &[("1.9.26", 3)], vec![batch.clone()], |s| s.bytes_per_sec = 2048).await;
    let started = std::time::Instant::now();
    let job = run(&f, request("1.9.26", "batch", None, false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert!(job.bytes_copied > 3000);
    assert!(started.elapsed() >= Duration::from_millis(1000), "{:?}", started.elapsed());
    assert_eq!(batch.batches.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_batch_from_a_tier_that_needs_recalls_waits_for_them() {
    let (f, batch) = batch_fixture(1 << 20, &[("1.9.27", 4)]).await;
    let job = run(&f, request("1.9.27", "cold", None, false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let job = run(&f, request("1.9.27", "batch", Some("cold"), false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert_eq!(batch.batches.lock().unwrap().len(), 1);
    assert_only_on(&f, "1.9.27", "batch");
    assert!(f.cold.list(None).await.unwrap().is_empty());
    assert!(f.catalog.pending_writes().unwrap().is_empty());
}

#[tokio::test]
async fn a_batch_is_read_back_with_one_verify_many_and_a_damaged_copy_is_copied_again() {
    let (f, batch) = batch_fixture(1 << 20, &[("1.9.28", 6)]).await;
    let recs = f.catalog.instances_of_study(&StudyUid::new("1.9.28").unwrap()).unwrap();
    *batch.damage_after_put.lock().unwrap() = Some(recs[3].locations[0].key.clone());
    let job = run(&f, request("1.9.28", "batch", None, false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert_eq!((job.instances_done, job.instances_failed), (6, 0));
    // One read-back for the batch; the damaged copy failed it, was removed and copied alone.
    assert_eq!(*batch.verifies.lock().unwrap(), [6]);
    assert_eq!(batch.single_puts.load(Ordering::SeqCst), 1);
    assert_only_on(&f, "1.9.28", "batch");
    for rec in f.catalog.instances_of_study(&StudyUid::new("1.9.28").unwrap()).unwrap() {
        let key = &rec.locations[0].key;
        assert_eq!(batch.verify_many(vec![(key.clone(), rec.checksum)]).await.unwrap()[0].as_ref().ok(), Some(&()));
    }
    assert!(f.catalog.pending_writes().unwrap().is_empty());

    // Moving the study back deletes its copies on the batching tier with one delete_many per
    // catalog commit (commit_batch = 4).
    batch.delete_batches.lock().unwrap().clear();
    let job = run(&f, request("1.9.28", "hot", Some("batch"), false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert_eq!(*batch.delete_batches.lock().unwrap(), [4, 2]);
    assert!(batch.list(None).await.unwrap().is_empty());
    assert_only_on(&f, "1.9.28", "hot");
    assert!(f.catalog.pending_writes().unwrap().is_empty());
}

fn deleter(f: &Fixture) -> Deleter {
    let settings = DeletionSettings { grace: Duration::ZERO, purge_batch: 500, delete_concurrency: 4 };
    Deleter::new(f.catalog.clone(), f.tiers.clone(), settings, Metrics::new())
}

async fn purge(f: &Fixture, d: &Deleter, study: &str) -> archive_core::deletion::Deletion {
    let marked = d
        .request(DeletionRequest {
            study: StudyUid::new(study).unwrap(),
            instances: None,
            requested_by: "admin".into(),
            requested_from: "test".into(),
            reason: "test".into(),
            cause: DeletionCause::Request,
            grace: Some(Duration::ZERO),
            hide_immediately: false,
        })
        .await
        .unwrap();
    assert_eq!(d.run_due().unwrap(), 1);
    let done = d.wait(marked.id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.state, DeletionState::Purged, "{done:?}");
    assert!(f.catalog.instances_of_study(&StudyUid::new(study).unwrap()).unwrap().is_empty());
    done
}

#[tokio::test]
async fn a_purge_deletes_the_copies_of_each_tier_with_one_delete_many() {
    let (f, batch) = batch_fixture(1 << 20, &[("1.9.29", 7), ("1.9.30", 5)]).await;
    for study in ["1.9.29", "1.9.30"] {
        let job = run(&f, request(study, "batch", None, true)).await;
        assert_eq!(job.state, JobState::Done, "{job:?}");
    }
    let d = deleter(&f);

    // Copies on hot and on the batching tier: one delete_many for the batching tier's seven.
    let done = purge(&f, &d, "1.9.29").await;
    assert_eq!(done.certificate.deferred_object_deletes, 0);
    assert_eq!(*batch.delete_batches.lock().unwrap(), [7]);
    assert_eq!(batch.list(None).await.unwrap().len(), 5);
    assert_eq!(f.hot.list(None).await.unwrap().len(), 5);
    assert!(f.catalog.pending_writes().unwrap().is_empty());

    // A failing delete_many leaves its copies' intents for recovery and counts them deferred;
    // the other tier's copies are deleted and their intents cleared.
    batch.failing_deletes.store(true, Ordering::SeqCst);
    let done = purge(&f, &d, "1.9.30").await;
    assert_eq!(done.certificate.deferred_object_deletes, 5);
    let pending = f.catalog.pending_writes().unwrap();
    assert_eq!(pending.len(), 5, "{pending:?}");
    assert!(pending.iter().all(|i| i.tier == name("batch")));
    assert!(f.hot.list(None).await.unwrap().is_empty());
    assert_eq!(batch.list(None).await.unwrap().len(), 5);
}

#[tokio::test]
async fn a_study_comes_back_from_a_packing_tier_with_one_get_many_per_chunk() {
    let (f, batch) = batch_fixture(1 << 20, &[("1.9.40", 10)]).await;
    let job = run(&f, request("1.9.40", "batch", None, false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let job = run(&f, request("1.9.40", "hot", Some("batch"), false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    assert_eq!((job.instances_done, job.instances_failed), (10, 0));
    // One get_many per commit chunk (commit_batch = 4), none per instance.
    assert_eq!(*batch.get_many_calls.lock().unwrap(), [4, 4, 2], "the study read with one get_many per chunk");
    assert_eq!(batch.full_gets.load(Ordering::SeqCst), 0, "no instance read on its own");
    assert_only_on(&f, "1.9.40", "hot");
    for rec in f.catalog.instances_of_study(&StudyUid::new("1.9.40").unwrap()).unwrap() {
        let got = f.hot.get(&rec.locations[0].key, GetOpts::default()).await.unwrap();
        assert_eq!(got.meta.checksum, rec.checksum);
        assert_eq!(collect_stream(got.body).await.unwrap().len() as u64, rec.size);
    }
    assert!(f.catalog.pending_writes().unwrap().is_empty());
}

#[tokio::test]
async fn a_damaged_object_read_ahead_fails_only_itself() {
    let (f, batch) = batch_fixture(1 << 20, &[("1.9.41", 6)]).await;
    let job = run(&f, request("1.9.41", "batch", None, false)).await;
    assert_eq!(job.state, JobState::Done, "{job:?}");
    let records = f.catalog.instances_of_study(&StudyUid::new("1.9.41").unwrap()).unwrap();
    let victim = &records[2];
    assert!(batch.inner.corrupt_for_test(&victim.locations[0].key));
    let job = run(&f, request("1.9.41", "hot", Some("batch"), false)).await;
    assert_eq!((job.instances_done, job.instances_failed), (5, 1), "{job:?}");
    assert_eq!(*batch.get_many_calls.lock().unwrap(), [4, 2]);
    assert_eq!(batch.full_gets.load(Ordering::SeqCst), 1, "the damaged one read again on its own");
    let kept = f.catalog.instance(&victim.uid).unwrap().unwrap();
    let tiers: Vec<_> = kept.locations.iter().map(|l| l.tier.to_string()).collect();
    assert_eq!(tiers, ["batch"], "the damaged instance keeps its only copy");
    assert!(f.catalog.pending_writes().unwrap().is_empty());
}
