//! The tape tier: the conformance suite (read through recalls), every trait rule checked on
//! the tier itself, volume rollover, batches on one volume, the robot's reading order,
//! staging expiry, reopening, damaged volumes and the registry entry.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::checksum::Checksum;
use archive_core::tier::{
    bytes_stream, collect_stream, conformance, Availability, ByteStream, GetOpts, GetResult, ObjectKey, ObjectMeta,
    PutOpts, RecallStatus, Tier, TierCapabilities, TierError, TierExt, TierName,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tier_plugins::registry::TierSpec;
use tier_plugins::tape::{RecallOutcome, TapeConfig, TapeTier, VolumeState, VOLUME_LABEL_LEN};

/// Each volume starts with its label: objects start after it.
const L: u64 = VOLUME_LABEL_LEN;

fn config(root: &std::path::Path, volume_bytes: u64) -> TapeConfig {
    TapeConfig {
        root: root.to_path_buf(),
        volume_bytes,
        mount_delay: Duration::ZERO,
        staging_ttl: Duration::from_secs(3600),
    }
}

fn open(root: &std::path::Path, volume_bytes: u64) -> TapeTier {
    TapeTier::open(TierName::new("tape").unwrap(), config(root, volume_bytes)).unwrap()
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

fn data(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

/// Polls `recall` until the object is staged (or the recall fails).
async fn recall_ready(tier: &dyn Tier, key: &ObjectKey) -> Result<(), TierError> {
    for _ in 0..30_000 {
        if tier.recall(key).await? == RecallStatus::Ready {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("recall of {key} did not finish");
}

async fn read_all(tier: &TapeTier, key: &ObjectKey) -> Result<Bytes, TierError> {
    collect_stream(tier.get(key, GetOpts::default()).await?.body).await
}

/// The read path of the core (`open_recalling`) as a tier: a get that needs a recall asks
/// for it and waits. Everything else goes straight to the tape tier, so the conformance
/// suite checks the tier's own put, head, delete, list and error rules, and reads through
/// its recall queue and staging area.
#[derive(Debug)]
struct RecallingReads {
    tier: TapeTier,
    recalls: AtomicUsize,
}

#[async_trait]
impl Tier for RecallingReads {
    fn name(&self) -> &TierName {
        self.tier.name()
    }
    fn capabilities(&self) -> TierCapabilities {
        self.tier.capabilities()
    }
    async fn put(&self, key: &ObjectKey, body: ByteStream, opts: PutOpts) -> Result<ObjectMeta, TierError> {
        self.tier.put(key, body, opts).await
    }
    async fn put_many(&self, items: Vec<(ObjectKey, ByteStream, PutOpts)>) -> Result<Vec<ObjectMeta>, TierError> {
        self.tier.put_many(items).await
    }
    async fn get(&self, key: &ObjectKey, opts: GetOpts) -> Result<GetResult, TierError> {
        match self.tier.get(key, opts.clone()).await {
            Err(TierError::NeedsRecall(_)) => {
                self.recalls.fetch_add(1, Ordering::Relaxed);
                recall_ready(&self.tier, key).await?;
                self.tier.get(key, opts).await
            }
            other => other,
        }
    }
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, TierError> {
        self.tier.head(key).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), TierError> {
        self.tier.delete(key).await
    }
    async fn recall(&self, key: &ObjectKey) -> Result<RecallStatus, TierError> {
        self.tier.recall(key).await
    }
    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>, TierError> {
        self.tier.list(prefix).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tape_tier_passes_the_conformance_suite_through_recalls() {
    let dir = tempfile::tempdir().unwrap();
    let reads = RecallingReads { tier: open(dir.path(), 1 << 30), recalls: AtomicUsize::new(0) };
    conformance::run_all(&reads).await;
    // The suite's second run on the same tier cleans up after the first.
    conformance::run_all(&reads).await;
    assert!(reads.recalls.load(Ordering::Relaxed) > 30, "reads went through recalls");
    assert_eq!(reads.tier.recall_queue_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tape_tier_passes_the_conformance_suite_with_small_volumes() {
    // 6 MiB volumes: the suite's 5 MiB object and the rest roll over several volumes.
    let dir = tempfile::tempdir().unwrap();
    let reads = RecallingReads { tier: open(dir.path(), 6 << 20), recalls: AtomicUsize::new(0) };
    conformance::run_all(&reads).await;
    let volumes = reads.tier.volumes().unwrap();
    assert!(volumes.len() >= 2, "volumes roll over: {volumes:?}");
    assert!(volumes.iter().all(|v| v.used <= v.capacity), "{volumes:?}");
}

#[tokio::test]
async fn objects_are_offline_until_recalled_then_read_whole_or_by_range() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), 1 << 20);
    let caps = tier.capabilities();
    assert_eq!(caps.availability, Availability::Offline);
    assert!(caps.needs_recall && caps.ranged_reads);
    assert_eq!(caps.batch_bytes, Some(1 << 20));
    assert_eq!(caps.max_object_size, Some(1 << 20));

    let k = key("1.2/3.4/5.6.dcm");
    let bytes = data(300_001, 7);
    let meta = tier.put_bytes(&k, bytes.clone(), PutOpts::default()).await.unwrap();
    assert_eq!(meta, ObjectMeta { key: k.clone(), size: bytes.len() as u64, checksum: Checksum::of(&bytes) });
    // head and list answer from the catalog, without a recall.
    assert_eq!(tier.head(&k).await.unwrap(), meta);
    assert_eq!(tier.list(Some("1.2/")).await.unwrap(), vec![meta.clone()]);
    assert!(matches!(tier.get(&k, GetOpts::default()).await, Err(TierError::NeedsRecall(ref x)) if *x == k));
    assert!(matches!(tier.get(&k, GetOpts { range: Some(0..10) }).await, Err(TierError::NeedsRecall(_))));
    // Errors that need no recall come first.
    assert!(matches!(tier.get(&key("missing"), GetOpts::default()).await, Err(TierError::NotFound(_))));
    assert!(matches!(tier.recall(&key("missing")).await, Err(TierError::NotFound(_))));
    assert!(matches!(
        tier.get(&k, GetOpts { range: Some(0..300_002) }).await,
        Err(TierError::InvalidRange { size: 300_001, .. })
    ));

    recall_ready(&tier, &k).await.unwrap();
    assert_eq!(tier.recall(&k).await.unwrap(), RecallStatus::Ready);
    let got = tier.get(&k, GetOpts::default()).await.unwrap();
    assert_eq!(got.meta, meta);
    assert!(collect_stream(got.body).await.unwrap() == bytes);
    for range in [0..1, 5..5, 1000..250_000, 300_000..300_001, 0..300_001] {
        let got = tier.get(&k, GetOpts { range: Some(range.clone()) }).await.unwrap();
        assert_eq!(got.meta, meta);
        let body = collect_stream(got.body).await.unwrap();
        assert!(body == bytes.slice(range.start as usize..range.end as usize), "range {range:?}");
    }
    assert_eq!(tier.recall_stats().served, 1);
    assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 1);
}

#[tokio::test]
async fn taken_keys_overwrites_checksums_and_failing_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), 1 << 20);
    let k = key("a/b");
    let first = data(1000, 1);
    let second = data(700, 2);
    tier.put_bytes(&k, first.clone(), PutOpts::default()).await.unwrap();
    recall_ready(&tier, &k).await.unwrap();

    let err = tier.put_bytes(&k, second.clone(), PutOpts::default()).await.unwrap_err();
    assert!(matches!(err, TierError::AlreadyExists(ref x) if *x == k), "{err:?}");
    assert!(read_all(&tier, &k).await.unwrap() == first);

    // An overwrite replaces the object; the staged copy of the old one is dropped.
    let overwrite = PutOpts { overwrite: true, ..PutOpts::default() };
    tier.put_bytes(&k, second.clone(), overwrite.clone()).await.unwrap();
    assert_eq!(tier.head(&k).await.unwrap().checksum, Checksum::of(&second));
    assert!(matches!(tier.get(&k, GetOpts::default()).await, Err(TierError::NeedsRecall(_))));
    recall_ready(&tier, &k).await.unwrap();
    assert!(read_all(&tier, &k).await.unwrap() == second);

    // A wrong expected checksum stores nothing.
    let bad = key("a/mismatch");
    let wrong = Checksum::of(b"other");
    let opts = PutOpts { expected_checksum: Some(wrong), ..PutOpts::default() };
    let err = tier.put_bytes(&bad, first.clone(), opts).await.unwrap_err();
    assert!(
        matches!(err, TierError::ChecksumMismatch { expected, actual, .. } if expected == wrong && actual == Checksum::of(&first))
    );
    assert!(matches!(tier.head(&bad).await, Err(TierError::NotFound(_))));

    // A failing body stores nothing, and a failed overwrite keeps the previous object.
    let failing = || -> ByteStream {
        futures::stream::iter([Ok(data(5000, 3)), Err(TierError::Body("client went away".into()))]).boxed()
    };
    let broken = key("a/broken");
    assert!(matches!(tier.put(&broken, failing(), PutOpts::default()).await, Err(TierError::Body(_))));
    assert!(matches!(tier.head(&broken).await, Err(TierError::NotFound(_))));
    assert!(tier.put(&k, failing(), overwrite).await.is_err());
    assert!(read_all(&tier, &k).await.unwrap() == second);

    assert_eq!(tier.list(None).await.unwrap().len(), 1);
    assert_eq!(std::fs::read_dir(dir.path().join("spool")).unwrap().count(), 0, "spool files are removed");
    // Live bytes count only the current version.
    let volumes = tier.volumes().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!((volumes[0].objects, volumes[0].live_objects, volumes[0].live_bytes), (2, 1, 700));
}

#[tokio::test]
async fn deletes_are_idempotent_drop_staged_copies_and_lower_live_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), 1 << 20);
    let a = key("s/a");
    let b = key("s/b");
    tier.put_bytes(&a, data(4000, 1), PutOpts::default()).await.unwrap();
    tier.put_bytes(&b, data(6000, 2), PutOpts::default()).await.unwrap();
    recall_ready(&tier, &a).await.unwrap();
    assert_eq!(tier.volumes().unwrap()[0].live_bytes, 10_000);

    tier.delete(&a).await.unwrap();
    tier.delete(&a).await.unwrap();
    tier.delete(&key("never/written")).await.unwrap();
    assert!(matches!(tier.head(&a).await, Err(TierError::NotFound(_))));
    assert!(matches!(tier.get(&a, GetOpts::default()).await, Err(TierError::NotFound(_))));
    assert!(matches!(tier.recall(&a).await, Err(TierError::NotFound(_))));
    assert_eq!(tier.list(Some("s/")).await.unwrap().iter().map(|m| m.key.clone()).collect::<Vec<_>>(), vec![b]);
    assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0, "staged copy removed");
    let v = &tier.volumes().unwrap()[0];
    assert_eq!((v.objects, v.live_objects, v.live_bytes, v.used), (2, 1, 6000, L + 10_000));

    // The key can be written again without overwrite.
    tier.put_bytes(&a, data(10, 3), PutOpts::default()).await.unwrap();
    recall_ready(&tier, &a).await.unwrap();
    assert!(read_all(&tier, &a).await.unwrap() == data(10, 3));
}

#[tokio::test]
async fn volumes_roll_over_when_the_next_object_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), 1000);
    for i in 0..5u8 {
        tier.put_bytes(&key(&format!("o/{i}")), data(300, i), PutOpts::default()).await.unwrap();
    }
    let volumes = tier.volumes().unwrap();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    assert_eq!(
        (volumes[0].id, volumes[0].state, volumes[0].used, volumes[0].objects),
        (1, VolumeState::Full, L + 900, 3)
    );
    assert_eq!(
        (volumes[1].id, volumes[1].state, volumes[1].used, volumes[1].objects),
        (2, VolumeState::Open, L + 600, 2)
    );
    assert_eq!(volumes[0].label(), "V000001");
    assert_eq!(std::fs::metadata(dir.path().join("volumes/V000001.vol")).unwrap().len(), L + 900);
    assert_eq!(std::fs::metadata(dir.path().join("volumes/V000002.vol")).unwrap().len(), L + 600);
    let e = tier.catalog_entry(&key("o/3")).unwrap().unwrap();
    assert_eq!((e.volume, e.offset, e.len), (2, L, 300));

    // An object larger than a volume is refused and stores nothing.
    let err = tier.put_bytes(&key("o/huge"), data(1001, 9), PutOpts::default()).await.unwrap_err();
    assert!(matches!(err, TierError::InsufficientSpace { .. }), "{err:?}");
    assert!(matches!(tier.head(&key("o/huge")).await, Err(TierError::NotFound(_))));
    // So is one that does not fit beside the label.
    let err = tier.put_bytes(&key("o/huge"), data(1000 - L as usize + 1, 9), PutOpts::default()).await.unwrap_err();
    assert!(matches!(err, TierError::InsufficientSpace { .. }), "{err:?}");
    // An object of exactly a volume's room (its capacity less its label) fills a new one.
    tier.put_bytes(&key("o/full"), data(1000 - L as usize, 8), PutOpts::default()).await.unwrap();
    assert_eq!(tier.catalog_entry(&key("o/full")).unwrap().unwrap().volume, 3);

    for i in 0..5u8 {
        let k = key(&format!("o/{i}"));
        recall_ready(&tier, &k).await.unwrap();
        assert!(read_all(&tier, &k).await.unwrap() == data(300, i));
    }
}

fn batch(prefix: &str, sizes: &[usize]) -> Vec<(ObjectKey, ByteStream, PutOpts)> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (key(&format!("{prefix}/{i}")), bytes_stream(data(n, i as u8)), PutOpts::default()))
        .collect()
}

#[tokio::test]
async fn a_batch_is_written_contiguously_on_one_volume() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), 1000);
    tier.put_bytes(&key("first"), data(300, 0), PutOpts::default()).await.unwrap();
    // 750 bytes do not fit in the 700 left: the whole batch goes onto a new volume.
    let metas = tier.put_many(batch("study", &[250, 250, 250])).await.unwrap();
    assert_eq!(metas.len(), 3);
    let placed: Vec<(u64, u64)> = (0..3)
        .map(|i| {
            let e = tier.catalog_entry(&key(&format!("study/{i}"))).unwrap().unwrap();
            (e.volume, e.offset)
        })
        .collect();
    assert_eq!(placed, vec![(2, L), (2, L + 250), (2, L + 500)]);
    assert_eq!(tier.volumes().unwrap()[0].state, VolumeState::Full);

    // A batch that fits what is left stays on the open volume.
    tier.put_many(batch("small", &[100, 100])).await.unwrap();
    assert_eq!(tier.catalog_entry(&key("small/1")).unwrap().unwrap().offset, L + 850);

    // A batch larger than a volume spans volumes, each object whole on one.
    tier.put_many(batch("big", &[400, 400, 400, 400])).await.unwrap();
    let placed: Vec<(u64, u64)> = (0..4)
        .map(|i| {
            let e = tier.catalog_entry(&key(&format!("big/{i}"))).unwrap().unwrap();
            (e.volume, e.offset)
        })
        .collect();
    assert_eq!(placed, vec![(3, L), (3, L + 400), (4, L), (4, L + 400)]);

    // A batch with a taken key stores none of its objects.
    let mut items = batch("fresh", &[10, 10]);
    items.push((key("first"), bytes_stream(data(10, 1)), PutOpts::default()));
    assert!(matches!(tier.put_many(items).await, Err(TierError::AlreadyExists(_))));
    assert!(tier.list(Some("fresh/")).await.unwrap().is_empty());
    // So does a batch whose last body fails.
    let mut items = batch("broken", &[10, 10]);
    let failing = futures::stream::iter([Err(TierError::Body("gone".into()))]).boxed();
    items.push((key("broken/last"), failing, PutOpts::default()));
    assert!(tier.put_many(items).await.is_err());
    assert!(tier.list(Some("broken/")).await.unwrap().is_empty());
    for i in 0..4 {
        let k = key(&format!("big/{i}"));
        recall_ready(&tier, &k).await.unwrap();
        assert!(read_all(&tier, &k).await.unwrap() == data(400, i as u8));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_robot_reads_volume_by_volume_in_offset_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1000);
    cfg.mount_delay = Duration::from_millis(30);
    let tier = TapeTier::open(TierName::new("tape").unwrap(), cfg).unwrap();
    // Volume 1: v1/a at L, v1/b at L + 400; volume 2: v2/a at L, v2/b at L + 400.
    for name in ["v1/a", "v1/b", "v2/a", "v2/b"] {
        tier.put_bytes(&key(name), data(400, name.len() as u8), PutOpts::default()).await.unwrap();
    }
    assert_eq!(tier.catalog_entry(&key("v2/a")).unwrap().unwrap().volume, 2);

    tier.pause_recalls();
    for name in ["v2/b", "v1/b", "v2/a", "v1/a"] {
        assert_eq!(tier.recall(&key(name)).await.unwrap(), RecallStatus::InProgress);
    }
    // Asking again queues nothing more.
    for name in ["v2/b", "v1/b"] {
        assert_eq!(tier.recall(&key(name)).await.unwrap(), RecallStatus::InProgress);
    }
    assert_eq!(tier.recall_queue_len(), 4);
    assert!(tier.recall_stats().paused);
    tier.resume_recalls();
    for name in ["v2/b", "v1/b", "v2/a", "v1/a"] {
        recall_ready(&tier, &key(name)).await.unwrap();
    }
    let served: Vec<(String, u64, u64)> =
        tier.recall_log().into_iter().map(|e| (e.key.to_string(), e.volume, e.offset)).collect();
    assert_eq!(
        served,
        vec![
            ("v1/a".to_string(), 1, L),
            ("v1/b".to_string(), 1, L + 400),
            ("v2/a".to_string(), 2, L),
            ("v2/b".to_string(), 2, L + 400)
        ]
    );
    let stats = tier.recall_stats();
    assert_eq!((stats.mounts, stats.mounted, stats.served, stats.queued), (2, Some(2), 4, 0));
    // Recalling an object of the mounted volume needs no new mount.
    tier.put_bytes(&key("v2/c"), data(100, 1), PutOpts::default()).await.unwrap();
    recall_ready(&tier, &key("v2/c")).await.unwrap();
    assert_eq!(tier.recall_stats().mounts, 2);
}

#[tokio::test]
async fn recalled_copies_expire_after_the_staging_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1 << 20);
    cfg.staging_ttl = Duration::from_millis(200);
    let tier = TapeTier::open(TierName::new("tape").unwrap(), cfg).unwrap();
    let k = key("x");
    tier.put_bytes(&k, data(100, 1), PutOpts::default()).await.unwrap();
    recall_ready(&tier, &k).await.unwrap();
    assert!(read_all(&tier, &k).await.unwrap() == data(100, 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(tier.get(&k, GetOpts::default()).await, Err(TierError::NeedsRecall(_))));
    assert_eq!(tier.recall_stats().staged, 0);
    assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
    // A new recall stages it again.
    recall_ready(&tier, &k).await.unwrap();
    assert!(read_all(&tier, &k).await.unwrap() == data(100, 1));
}

#[tokio::test]
async fn catalog_and_volumes_survive_reopening_after_unreferenced_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<ObjectKey> = (0..4).map(|i| key(&format!("r/{i}"))).collect();
    {
        let tier = open(dir.path(), 1000);
        for (i, k) in keys.iter().enumerate() {
            tier.put_bytes(k, data(300, i as u8), PutOpts::default()).await.unwrap();
        }
        recall_ready(&tier, &keys[0]).await.unwrap();
    }
    // A crash after appending bytes but before cataloguing them leaves them unreferenced.
    let open_volume = dir.path().join("volumes/V000002.vol");
    let f = std::fs::OpenOptions::new().append(true).open(&open_volume).unwrap();
    f.write_all_at(&[0xee; 50], L + 300).unwrap();
    drop(f);

    let tier = open(dir.path(), 1000);
    assert_eq!(tier.list(Some("r/")).await.unwrap().len(), 4);
    // Staged state is dropped on reopening: reads need a recall again.
    assert!(matches!(tier.get(&keys[0], GetOpts::default()).await, Err(TierError::NeedsRecall(_))));
    let volumes = tier.volumes().unwrap();
    assert_eq!((volumes[1].state, volumes[1].used, volumes[1].live_bytes), (VolumeState::Open, L + 350, 300));
    // New writes go after the unreferenced bytes; everything reads back.
    tier.put_bytes(&key("r/new"), data(200, 9), PutOpts::default()).await.unwrap();
    assert_eq!(tier.catalog_entry(&key("r/new")).unwrap().unwrap().offset, L + 350);
    for (i, k) in keys.iter().enumerate() {
        recall_ready(&tier, k).await.unwrap();
        assert!(read_all(&tier, k).await.unwrap() == data(300, i as u8));
    }
    recall_ready(&tier, &key("r/new")).await.unwrap();
    assert!(read_all(&tier, &key("r/new")).await.unwrap() == data(200, 9));
}

#[tokio::test]
async fn a_flipped_byte_on_a_volume_fails_the_recall_with_a_checksum_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1 << 20);
    cfg.staging_ttl = Duration::from_millis(300);
    let tier = TapeTier::open(TierName::new("tape").unwrap(), cfg).unwrap();
    let victim = key("c/victim");
    let neighbour = key("c/neighbour");
    let meta = tier.put_bytes(&victim, data(50_000, 1), PutOpts::default()).await.unwrap();
    tier.put_bytes(&neighbour, data(20_000, 2), PutOpts::default()).await.unwrap();

    let e = tier.catalog_entry(&victim).unwrap().unwrap();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(tier.volume_path(e.volume)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, e.offset + e.len / 2).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, e.offset + e.len / 2).unwrap();
    drop(f);

    // head answers from the catalog with the original checksum.
    assert_eq!(tier.head(&victim).await.unwrap(), meta);
    let err = recall_ready(&tier, &victim).await.unwrap_err();
    assert!(
        matches!(err, TierError::ChecksumMismatch { ref key, expected, actual }
            if *key == victim && expected == meta.checksum && actual != meta.checksum),
        "{err:?}"
    );
    // The failure sticks for the staging time: recall and get report it, nothing is staged.
    assert!(matches!(tier.recall(&victim).await, Err(TierError::ChecksumMismatch { .. })));
    assert!(matches!(tier.get(&victim, GetOpts::default()).await, Err(TierError::ChecksumMismatch { .. })));
    let log = tier.recall_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, RecallOutcome::ChecksumMismatch);
    assert_eq!(tier.recall_stats().failed, 1);
    assert_eq!(tier.recall_stats().staged, 0);
    // Its neighbour on the same volume is fine.
    recall_ready(&tier, &neighbour).await.unwrap();
    assert!(read_all(&tier, &neighbour).await.unwrap() == data(20_000, 2));
    // After the staging time a recall reads the volume again (and fails again).
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(tier.recall(&victim).await.unwrap(), RecallStatus::InProgress);
    assert!(matches!(recall_ready(&tier, &victim).await, Err(TierError::ChecksumMismatch { .. })));
    assert_eq!(tier.recall_stats().failed, 2);
}

#[tokio::test]
async fn a_damaged_staged_copy_is_caught_on_a_full_read() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), 1 << 20);
    let k = key("d/x");
    let meta = tier.put_bytes(&k, data(10_000, 4), PutOpts::default()).await.unwrap();
    recall_ready(&tier, &k).await.unwrap();
    let staged = std::fs::read_dir(dir.path().join("staging")).unwrap().next().unwrap().unwrap().path();
    let f = std::fs::OpenOptions::new().write(true).open(&staged).unwrap();
    f.write_all_at(&[0u8; 3], 100).unwrap();
    drop(f);
    let err = read_all(&tier, &k).await.unwrap_err();
    assert!(matches!(err, TierError::ChecksumMismatch { expected, .. } if expected == meta.checksum), "{err:?}");
}

#[tokio::test]
async fn the_registry_builds_a_tape_tier_with_strict_options() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |toml: &str| -> TierSpec { toml::from_str(toml).unwrap() };
    let tier = tier_plugins::registry::build(
        "tape",
        &spec("kind = \"tape\"\nvolume_mb = 1\nmount_ms = 0\nstaging_hours = 2"),
        dir.path(),
    )
    .await
    .unwrap();
    let caps = tier.capabilities();
    assert!(caps.needs_recall);
    assert_eq!(caps.batch_bytes, Some(1 << 20));
    let k = key("reg/x");
    tier.put_bytes(&k, data(10, 1), PutOpts::default()).await.unwrap();
    recall_ready(tier.as_ref(), &k).await.unwrap();
    assert!(tier.get_bytes(&k).await.unwrap() == data(10, 1));
    assert!(dir.path().join("tiers/tape/volumes/V000001.vol").exists());
    drop(tier);

    let err = tier_plugins::registry::build("t2", &spec("kind = \"tape\"\nvolume_gb = 1"), dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("volume_gb"), "{err}");
    let err = tier_plugins::registry::build("t3", &spec("kind = \"tape\"\nvolume_mb = 0"), dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("volume_mb"), "{err}");
    let path = dir.path().join("elsewhere");
    let toml = format!("kind = \"tape\"\npath = {:?}", path.to_str().unwrap());
    tier_plugins::registry::build("t4", &spec(&toml), dir.path()).await.unwrap();
    assert!(path.join("volumes/V000001.vol").exists());
}

#[tokio::test]
async fn a_second_instance_on_the_same_root_is_refused_and_harms_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), 1 << 20);
    let k = key("only/one");
    tier.put_bytes(&k, data(1000, 5), PutOpts::default()).await.unwrap();
    recall_ready(&tier, &k).await.unwrap();
    assert!(TapeTier::open(TierName::new("tape").unwrap(), config(dir.path(), 1 << 20)).is_err());
    assert!(read_all(&tier, &k).await.unwrap() == data(1000, 5));
}
