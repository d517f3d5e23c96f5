//! Segment compaction of the warm tier: space comes back, objects stay byte-exact, deletes
//! and overwrites made during a compaction win, and a crash (a hook error in process, or a
//! real abort at a failpoint in a child process) at any step leaves every object readable.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::tier::{ObjectKey, PutOpts, Tier, TierError, TierExt, TierName};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tier_plugins::registry::TierSpec;
use tier_plugins::warm::{WarmConfig, WarmTier};

const SEGMENT: u64 = 64 << 10;
const OBJECT: usize = 20_000;

fn config(segment_bytes: u64) -> WarmConfig {
    WarmConfig { segment_bytes, compact_interval: Duration::ZERO, ..WarmConfig::default() }
}

fn open(root: &Path) -> WarmTier {
    WarmTier::open_config(TierName::new("warm").unwrap(), root.to_path_buf(), config(SEGMENT)).unwrap()
}

/// Incompressible bytes, different for each seed.
fn noise(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn key(i: usize) -> ObjectKey {
    ObjectKey::new(format!("1.2.3/4.5/{i:04}.dcm")).unwrap()
}

/// Segment files on disk: id → length.
fn files(root: &Path) -> BTreeMap<u64, u64> {
    std::fs::read_dir(root.join("segments"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (u64::from_str_radix(name.strip_suffix(".seg").unwrap(), 16).unwrap(), e.metadata().unwrap().len())
        })
        .collect()
}

/// Puts `n` objects of [`OBJECT`] bytes, then deletes those with `i % 3 != 0`; returns
/// what should remain.
async fn fill_and_thin(tier: &WarmTier, n: usize) -> BTreeMap<ObjectKey, Bytes> {
    let mut kept = BTreeMap::new();
    for i in 0..n {
        let data = noise(OBJECT, i as u64);
        tier.put_bytes(&key(i), data.clone(), PutOpts::default()).await.unwrap();
        if i % 3 == 0 {
            kept.insert(key(i), data);
        }
    }
    for i in (0..n).filter(|i| i % 3 != 0) {
        tier.delete(&key(i)).await.unwrap();
    }
    kept
}

/// Every expected object is byte-exact, nothing else is listed, and the segment stats
/// agree with the index and the files.
async fn assert_contents(tier: &WarmTier, expected: &BTreeMap<ObjectKey, Bytes>) {
    for (k, data) in expected {
        let got = tier.get_bytes(k).await.unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(got == *data, "{k} differs");
    }
    let listed: BTreeSet<ObjectKey> = tier.list(None).await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(listed, expected.keys().cloned().collect::<BTreeSet<_>>());
    let segments = tier.segments();
    let objects: u64 = segments.iter().map(|s| s.objects).sum();
    assert_eq!(objects, expected.len() as u64, "{segments:?}");
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    for k in expected.keys() {
        let (path, _, len) = tier.location_of(k).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        *live.entry(u64::from_str_radix(name.strip_suffix(".seg").unwrap(), 16).unwrap()).or_default() += len;
    }
    let on_disk = files(tier.root());
    for s in &segments {
        assert_eq!(s.live_bytes, live.get(&s.id).copied().unwrap_or(0), "live bytes of segment {}", s.id);
        assert!(on_disk.contains_key(&s.id), "segment {} has no file", s.id);
        assert!(s.bytes <= on_disk[&s.id] && s.live_bytes <= s.bytes, "{s:?}");
    }
    for id in on_disk.keys() {
        assert!(segments.iter().any(|s| s.id == *id), "file {id} is not a known segment");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_reclaims_space_and_keeps_objects_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path());
    let kept = fill_and_thin(&tier, 60).await;
    let before = files(dir.path());
    assert!(before.len() > 10, "{before:?}");
    assert_contents(&tier, &kept).await;

    let report = tier.compact_once().unwrap();
    assert!(report.segments_compacted >= 10, "{report:?}");
    assert!(report.objects_moved > 0 && report.bytes_reclaimed > 0, "{report:?}");
    assert_eq!(report.segments_skipped, 0);
    let after = files(dir.path());
    assert!(after.len() < before.len(), "{before:?} → {after:?}");
    let (sum_before, sum_after): (u64, u64) = (before.values().sum(), after.values().sum());
    assert!(sum_after < sum_before, "{sum_before} → {sum_after}");
    assert_eq!(sum_before - sum_after, report.bytes_reclaimed, "{report:?}");
    assert_contents(&tier, &kept).await;

    // The segment that was active when compaction started is sparse too once the copies
    // have moved past it; another round or two leave only dense segments.
    let mut rounds = 0;
    while tier.compact_once().unwrap().segments_compacted > 0 {
        rounds += 1;
        assert!(rounds < 5, "compaction does not settle: {:?}", tier.segments());
    }
    assert_contents(&tier, &kept).await;
    let segments = tier.segments();
    let active = segments.last().unwrap().id;
    for s in segments.iter().filter(|s| s.id != active) {
        assert!(s.objects > 0 && s.live_bytes * 2 >= s.bytes, "{s:?}");
    }

    // Reopening keeps the stats and the objects; new writes and another round work.
    drop(tier);
    let tier = open(dir.path());
    assert_eq!(tier.segments(), segments);
    assert_contents(&tier, &kept).await;
    let mut kept = kept;
    for i in 100..130 {
        let data = noise(OBJECT, i as u64);
        tier.put_bytes(&key(i), data.clone(), PutOpts::default()).await.unwrap();
        kept.insert(key(i), data);
    }
    for i in 100..125 {
        tier.delete(&key(i)).await.unwrap();
        kept.remove(&key(i));
    }
    let report = tier.compact_once().unwrap();
    assert!(report.segments_compacted > 0, "{report:?}");
    assert_contents(&tier, &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_without_live_objects_are_removed_even_when_compaction_is_otherwise_off() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WarmConfig { compact_below: 0.0, ..config(SEGMENT) };
    let tier = WarmTier::open_config(TierName::new("warm").unwrap(), dir.path().to_path_buf(), cfg).unwrap();
    let kept = fill_and_thin(&tier, 30).await;
    // Objects 0..3 share the first segment with two deleted ones: it stays.
    let first = files(dir.path()).into_keys().next().unwrap();
    for i in 30..60 {
        tier.put_bytes(&key(i), noise(OBJECT, i as u64), PutOpts::default()).await.unwrap();
    }
    for i in 30..60 {
        tier.delete(&key(i)).await.unwrap();
    }
    let report = tier.compact_once().unwrap();
    assert!(report.segments_compacted > 0, "{report:?}");
    assert_eq!(report.objects_moved, 0, "{report:?}");
    assert!(files(dir.path()).contains_key(&first));
    assert_contents(&tier, &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_objects_leave_dead_bytes_that_compaction_reclaims() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path());
    let mut expected = BTreeMap::new();
    for i in 0..30 {
        tier.put_bytes(&key(i), noise(OBJECT, i as u64), PutOpts::default()).await.unwrap();
    }
    let old_segments: BTreeSet<u64> = files(dir.path()).into_keys().collect();
    for i in 0..30 {
        let data = noise(OBJECT, 1000 + i as u64);
        tier.put_bytes(&key(i), data.clone(), PutOpts { overwrite: true, ..PutOpts::default() }).await.unwrap();
        expected.insert(key(i), data);
    }
    let before: u64 = files(dir.path()).values().sum();
    assert_contents(&tier, &expected).await;
    let report = tier.compact_once().unwrap();
    assert!(report.segments_compacted >= old_segments.len() as u64 - 1, "{report:?}");
    let after = files(dir.path());
    assert!(after.values().sum::<u64>() * 10 < before * 7, "{before} → {after:?}");
    assert_contents(&tier, &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_or_overwrite_during_compaction_wins() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path());
    let mut kept = fill_and_thin(&tier, 60).await;
    // Objects 0 and 3 live in the first segment, which is compacted.
    let (deleted, overwritten) = (key(0), key(3));
    let new_data = noise(5000, 4242);
    kept.remove(&deleted);
    kept.insert(overwritten.clone(), new_data.clone());

    let handle = tokio::runtime::Handle::current();
    let hooked = tier.clone();
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ran2 = ran.clone();
    tier.set_compaction_hook(Some(Box::new(move |step: &str| {
        if step == "after_copy" && !ran2.swap(true, std::sync::atomic::Ordering::SeqCst) {
            handle.block_on(async {
                hooked.delete(&deleted).await.unwrap();
                let opts = PutOpts { overwrite: true, ..PutOpts::default() };
                hooked.put_bytes(&overwritten, new_data.clone(), opts).await.unwrap();
            });
        }
        Ok(())
    })));
    let t = tier.clone();
    let report = tokio::task::spawn_blocking(move || t.compact_once()).await.unwrap().unwrap();
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    assert!(report.segments_compacted > 0, "{report:?}");
    tier.set_compaction_hook(None);
    assert!(matches!(tier.get_bytes(&key(0)).await, Err(TierError::NotFound(_))));
    assert_contents(&tier, &kept).await;

    drop(tier);
    let tier = open(dir.path());
    assert_contents(&tier, &kept).await;
    // The copies the delete and the overwrite made dead are reclaimed in time.
    tier.compact_once().unwrap();
    assert_contents(&tier, &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_copying_leaves_everything_readable() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path());
    let kept = fill_and_thin(&tier, 60).await;
    let before = files(dir.path());
    tier.set_compaction_hook(Some(Box::new(|step: &str| {
        if step == "after_copy" {
            Err(TierError::Other("simulated crash".into()))
        } else {
            Ok(())
        }
    })));
    let err = tier.compact_once().unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    // Nothing was repointed or removed; the copies are dead bytes at the end.
    for (id, len) in &before {
        assert!(files(dir.path()).get(id).is_some_and(|l| l >= len), "segment {id}");
    }
    assert_contents(&tier, &kept).await;

    drop(tier);
    let tier = open(dir.path());
    assert_contents(&tier, &kept).await;
    let report = tier.compact_once().unwrap();
    assert!(report.segments_compacted > 0, "{report:?}");
    assert_contents(&tier, &kept).await;
    assert!(files(dir.path()).values().sum::<u64>() < before.values().sum::<u64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_repointing_removes_the_old_segments_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path());
    let kept = fill_and_thin(&tier, 60).await;
    let before = files(dir.path());
    tier.set_compaction_hook(Some(Box::new(|step: &str| {
        if step == "after_repoint" {
            Err(TierError::Other("simulated crash".into()))
        } else {
            Ok(())
        }
    })));
    tier.compact_once().unwrap_err();
    // The first candidate is repointed but its file is still there.
    let first = *before.keys().next().unwrap();
    assert!(files(dir.path()).contains_key(&first));
    assert!(!tier.segments().iter().any(|s| s.id == first));
    let moved = tier.location_of(&key(0)).unwrap().0;
    assert!(!moved.ends_with(format!("{first:016x}.seg")), "not repointed: {}", moved.display());
    drop(tier);

    let tier = open(dir.path());
    assert!(!files(dir.path()).contains_key(&first), "the compacted segment is removed on open");
    assert_contents(&tier, &kept).await;
    let report = tier.compact_once().unwrap();
    assert!(report.segments_compacted > 0, "{report:?}");
    assert_contents(&tier, &kept).await;
}

/// Runs only as the child of [`a_process_abort_at_a_compaction_failpoint_loses_nothing`].
#[test]
fn compaction_crash_child() {
    let Ok(root) = std::env::var("VNA_WARM_CRASH_DIR") else { return };
    let tier = open(Path::new(&root));
    let _ = tier.compact_once();
    // Reached only when the failpoint is not armed.
    std::process::exit(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_abort_at_a_compaction_failpoint_loses_nothing() {
    for point in ["warm.compact.after_copy", "warm.compact.after_repoint"] {
        let dir = tempfile::tempdir().unwrap();
        let kept = {
            let tier = open(dir.path());
            fill_and_thin(&tier, 45).await
        };
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["compaction_crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("VNA_WARM_CRASH_DIR", dir.path())
            .env("VNA_FAILPOINTS", point)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{point}: the child did not abort: {status}");
        let tier = open(dir.path());
        assert_contents(&tier, &kept).await;
        let report = tier.compact_once().unwrap();
        assert!(report.segments_compacted > 0, "{point}: {report:?}");
        assert_contents(&tier, &kept).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_segment_is_compacted_away_after_its_lookup_reads_the_new_location() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path());
    let kept = fill_and_thin(&tier, 30).await;
    let (old, _, _) = tier.location_of(&key(0)).unwrap();
    let compactor = tier.clone();
    let compacted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = compacted.clone();
    tier.set_read_hook(Some(Box::new(move || {
        // The first read has looked key 0 up in the old segment: compact it away now.
        if !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let report = compactor.compact_once().unwrap();
            assert!(report.segments_compacted > 0, "{report:?}");
        }
    })));
    let got = tier.get_bytes(&key(0)).await.unwrap();
    tier.set_read_hook(None);
    assert!(compacted.load(std::sync::atomic::Ordering::SeqCst));
    assert!(got == kept[&key(0)]);
    assert!(!old.exists(), "the old segment is gone");
    assert_ne!(tier.location_of(&key(0)).unwrap().0, old);
    assert_contents(&tier, &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_during_compaction_never_fail() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path());
    let kept = Arc::new(fill_and_thin(&tier, 60).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..3 {
        let (tier, kept, stop) = (tier.clone(), kept.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || reads == 0 {
                for (k, data) in kept.iter().skip(r) {
                    let got = tier.get_bytes(k).await.unwrap_or_else(|e| panic!("{k}: {e}"));
                    assert!(got == *data, "{k} differs");
                    reads += 1;
                }
            }
            reads
        }));
    }
    // Several rounds: compact, make more garbage, compact again.
    for round in 0..4 {
        let t = tier.clone();
        tokio::task::spawn_blocking(move || t.compact_once()).await.unwrap().unwrap();
        for i in 0..12 {
            let k = ObjectKey::new(format!("garbage/{round}/{i}")).unwrap();
            tier.put_bytes(&k, noise(OBJECT, 7000 + i), PutOpts::default()).await.unwrap();
            tier.delete(&k).await.unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    assert_contents(&tier, &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compaction_runs_and_stops_with_the_tier() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WarmConfig { compact_interval: Duration::from_millis(50), ..config(SEGMENT) };
    let name = TierName::new("warm").unwrap();
    let tier = WarmTier::open_config(name.clone(), dir.path().to_path_buf(), cfg.clone()).unwrap();
    let kept = fill_and_thin(&tier, 45).await;
    let mut waited = 0;
    loop {
        let segments = tier.segments();
        let active = segments.last().unwrap().id;
        if segments.iter().filter(|s| s.id != active).all(|s| s.objects > 0 && s.live_bytes * 2 >= s.bytes) {
            break;
        }
        waited += 1;
        assert!(waited < 1200, "background compaction did not run: {segments:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_contents(&tier, &kept).await;
    // Once dropped, the task lets go of the index: the tier opens again (a compaction that
    // happened to be running finishes first).
    drop(tier);
    let mut attempts = 0;
    let tier = loop {
        match WarmTier::open_config(name.clone(), dir.path().to_path_buf(), config(SEGMENT)) {
            Ok(t) => break t,
            Err(e) => {
                attempts += 1;
                assert!(attempts < 100, "cannot reopen: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_contents(&tier, &kept).await;
}

#[test]
fn opening_outside_a_runtime_works_without_a_background_task() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WarmConfig { compact_interval: Duration::from_millis(10), ..config(SEGMENT) };
    let tier = WarmTier::open_config(TierName::new("warm").unwrap(), dir.path().to_path_buf(), cfg).unwrap();
    assert_eq!(tier.compact_once().unwrap().segments_compacted, 0);
}

#[tokio::test]
async fn missing_stats_are_rebuilt_and_unreferenced_segment_files_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path());
    let kept = fill_and_thin(&tier, 30).await;
    let live = |t: &WarmTier| t.segments().into_iter().filter(|s| s.objects > 0).collect::<Vec<_>>();
    let segments = live(&tier);
    drop(tier);

    // An index from before compaction existed: no stats records at all.
    {
        let db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path().join("index"), ["default", "meta"]).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        let keys: Vec<Box<[u8]>> = db.iterator_cf(meta, rocksdb::IteratorMode::Start).map(|i| i.unwrap().0).collect();
        assert!(keys.iter().any(|k| k.starts_with(b"segment/")));
        for k in keys {
            db.delete_cf(meta, k).unwrap();
        }
    }
    // A leftover file no entry points at, below the active segment.
    std::fs::write(dir.path().join("segments").join(format!("{:016x}.seg", 0)), b"leftover").unwrap();
    let tier = open(dir.path());
    assert!(!files(dir.path()).contains_key(&0));
    assert_eq!(live(&tier), segments);
    assert_contents(&tier, &kept).await;
    drop(tier);

    // One stats record lost while the others are there: the segment is kept, stats rebuilt.
    let victim = segments.iter().find(|s| s.objects > 0).unwrap().id;
    {
        let db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path().join("index"), ["default", "meta"]).unwrap();
        db.delete_cf(db.cf_handle("meta").unwrap(), format!("segment/{victim:016x}")).unwrap();
    }
    let tier = open(dir.path());
    assert!(files(dir.path()).contains_key(&victim));
    assert_eq!(live(&tier), segments);
    assert_contents(&tier, &kept).await;
}

#[tokio::test]
async fn a_damaged_object_keeps_its_segment_from_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path());
    let kept = fill_and_thin(&tier, 30).await;
    let victim = key(0);
    let (path, offset, len) = tier.location_of(&victim).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset + len / 2).unwrap();
        b[0] ^= 0xff;
        f.write_all_at(&b, offset + len / 2).unwrap();
    }
    let report = tier.compact_once().unwrap();
    assert_eq!(report.segments_skipped, 1, "{report:?}");
    assert!(report.segments_compacted > 0, "{report:?}");
    assert!(path.exists());
    assert_eq!(tier.location_of(&victim).unwrap().0, path);
    let mut rest = kept.clone();
    rest.remove(&victim);
    for (k, data) in &rest {
        assert!(tier.get_bytes(k).await.unwrap() == *data);
    }
    assert!(matches!(tier.get_bytes(&victim).await, Err(TierError::ChecksumMismatch { .. })));
}

#[tokio::test]
async fn the_zstd_level_is_configurable_and_validated() {
    let data: Bytes = (0..200_000u32)
        .flat_map(|i| ((1000 + (i / 7) % 64 + (i % 5)) as u16).to_le_bytes())
        .collect::<Vec<u8>>()
        .into();
    let mut stored = Vec::new();
    for level in [1, 19] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WarmConfig { zstd_level: level, ..config(1 << 30) };
        let tier = WarmTier::open_config(TierName::new("warm").unwrap(), dir.path().to_path_buf(), cfg).unwrap();
        let k = key(1);
        tier.put_bytes(&k, data.clone(), PutOpts::default()).await.unwrap();
        assert!(tier.get_bytes(&k).await.unwrap() == data);
        stored.push(tier.location_of(&k).unwrap().2);
    }
    assert!(stored[1] < stored[0], "level 19 is smaller than level 1: {stored:?}");

    for level in [0, 20, -1] {
        let cfg = WarmConfig { zstd_level: level, ..WarmConfig::default() };
        assert_eq!(cfg.validate().unwrap_err().key, "zstd_level");
        let dir = tempfile::tempdir().unwrap();
        let err = WarmTier::open_config(TierName::new("warm").unwrap(), dir.path().to_path_buf(), cfg).unwrap_err();
        assert!(err.to_string().contains("zstd_level"), "{err}");
    }
    for below in [-0.1, 1.5, f64::NAN] {
        let cfg = WarmConfig { compact_below: below, ..WarmConfig::default() };
        assert_eq!(cfg.validate().unwrap_err().key, "compact_below");
    }
}

fn spec(options: &str) -> TierSpec {
    TierSpec { kind: "warm".into(), options: toml::from_str(options).unwrap() }
}

#[tokio::test]
async fn the_registry_passes_warm_options_through_and_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = spec("segment_mb = 2\nzstd_level = 9\ncompact_below = 0.3\ncompact_interval_secs = 0\n");
    let tier = tier_plugins::registry::build("warm2", &good, dir.path()).await.unwrap();
    assert_eq!(tier.name().as_str(), "warm2");
    assert!(dir.path().join("tiers/warm2/segments").is_dir());
    drop(tier);
    for (bad, word) in [
        ("zstd_level = 25", "zstd_level"),
        ("zstd_level = 0", "zstd_level"),
        ("compact_below = 2.0", "compact_below"),
        ("compact_interval = 5", "compact_interval"),
        ("segment_mb = 0", "segment_mb"),
    ] {
        let err = tier_plugins::registry::build("warm3", &spec(bad), dir.path()).await.unwrap_err();
        assert!(
            matches!(err, tier_plugins::registry::RegistryError::Options { .. }) && err.to_string().contains(word),
            "{bad}: {err}"
        );
    }
}
