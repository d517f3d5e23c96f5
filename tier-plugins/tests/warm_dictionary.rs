//! Compression dictionaries of the warm tier: trained per content class after
//! `dictionary_samples` objects, persisted before use, and needed (by id) on every read,
//! after reopening and after compaction; entries without a dictionary read as before, and a
//! damaged or missing dictionary makes reads fail with an error that names it.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::tier::{
    conformance, ByteStream, GetOpts, GetResult, ObjectKey, ObjectMeta, PutOpts, Tier, TierCapabilities, TierError,
    TierExt, TierName,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;
use tier_plugins::warm::{WarmConfig, WarmTier};

const SMALL_SEGMENTS: u64 = 64 << 10;

fn config(dictionaries: bool, samples: usize, segment_bytes: u64) -> WarmConfig {
    WarmConfig {
        segment_bytes,
        compact_interval: Duration::ZERO,
        dictionaries,
        dictionary_samples: samples,
        ..WarmConfig::default()
    }
}

fn open(root: &Path, config: WarmConfig) -> WarmTier {
    WarmTier::open_config(TierName::new("warm").unwrap(), root.to_path_buf(), config).unwrap()
}

fn key(i: usize) -> ObjectKey {
    ObjectKey::new(format!("1.2.3/4.5/{i:05}.dcm")).unwrap()
}

fn classed(class: &str) -> PutOpts {
    PutOpts { content_class: Some(class.to_string()), ..PutOpts::default() }
}

/// A xorshift byte stream.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A small DICOM-like object of a class: preamble and `DICM`, then a header of about 2 KiB
/// that every object of the class shares (attribute text and a vendor's private block, the
/// latter incompressible on its own) with a few fields that vary (UIDs, numbers, dates),
/// then a Pixel Data element of 512 bytes of varying bits.
fn object(class: &str, i: usize) -> Bytes {
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    let mut element = |tag: [u8; 4], vr: &[u8; 2], value: &[u8]| {
        out.extend_from_slice(&tag);
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    };
    element([2, 0, 1, 0], b"UI", b"1.2.840.10008.5.1.4.1.1.1");
    element([2, 0, 3, 0], b"UI", format!("1.2.826.0.1.3680043.8.498.{}.{}", 7_000_000 + i * 37, i % 13).as_bytes());
    element([2, 0, 0x10, 0], b"UI", b"1.2.840.10008.1.2.1");
    element([8, 0, 0x60, 0], b"CS", class.as_bytes());
    element([8, 0, 0x70, 0], b"LO", b"ACME MEDICAL SYSTEMS");
    element([8, 0, 0x90, 10], b"LO", b"RADIOLOGY DEPARTMENT, GENERAL HOSPITAL");
    element([8, 0, 0x30, 0x10], b"LO", b"CHEST PA AND LATERAL, TWO VIEWS");
    element([8, 0, 0x20, 0], b"DA", format!("2024{:02}{:02}", 1 + i % 12, 1 + i % 28).as_bytes());
    element([8, 0, 0x30, 0], b"TM", format!("{:02}{:02}{:02}.{:06}", i % 24, i % 60, (i * 7) % 60, i * 31).as_bytes());
    element([0x10, 0, 0x10, 0], b"PN", format!("DOE^JANE^{}", i % 97).as_bytes());
    element([0x18, 0, 0x15, 0], b"CS", b"CHEST");
    element([0x20, 0, 0x13, 0], b"IS", format!("{}", i + 1).as_bytes());
    element([0x28, 0, 0x30, 0], b"DS", b"0.139\\0.139");
    // The vendor's private block: the same in every object of the class.
    let seed = class.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    element([0x29, 0, 0x10, 0x10], b"OB", &noise(1536, seed));
    element([0x20, 0, 0x32, 0], b"DS", format!("-{}.5\\{}.25\\{}", 100 + i % 50, 20 + i % 9, i * 3).as_bytes());
    // Pixel Data: smooth values with noisy low bits.
    out.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
    out.extend_from_slice(&512u32.to_le_bytes());
    let low = noise(256, i as u64 + 1);
    for (j, l) in low.iter().enumerate() {
        out.extend_from_slice(&((1000 + j as u16 * 3) ^ (*l as u16 & 0x0f)).to_le_bytes());
    }
    Bytes::from(out)
}

fn stored_len(tier: &WarmTier, key: &ObjectKey) -> u64 {
    tier.location_of(key).unwrap().2
}

async fn assert_reads(tier: &WarmTier, expected: &BTreeMap<ObjectKey, Bytes>) {
    for (k, data) in expected {
        let got = tier.get_bytes(k).await.unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(got == *data, "{k} differs");
        // A ranged read decompresses with the dictionary too.
        let range = 100..300.min(data.len() as u64);
        let got = tier.get(k, GetOpts { range: Some(range.clone()) }).await.unwrap();
        let got = archive_core::tier::collect_stream(got.body).await.unwrap();
        assert_eq!(&got[..], &data[range.start as usize..range.end as usize], "{k} ranged");
    }
}

/// Puts `n` objects of a class with keys `first..first + n`; returns them.
async fn put_objects(tier: &WarmTier, class: &str, first: usize, n: usize) -> BTreeMap<ObjectKey, Bytes> {
    let mut out = BTreeMap::new();
    for i in first..first + n {
        let data = object(class, i);
        tier.put_bytes(&key(i), data.clone(), classed(class)).await.unwrap();
        out.insert(key(i), data);
    }
    out
}

/// The warm tier with every put carrying a content class, for the conformance suite.
#[derive(Debug)]
struct Classed(WarmTier);

#[async_trait]
impl Tier for Classed {
    fn name(&self) -> &TierName {
        self.0.name()
    }
    fn capabilities(&self) -> TierCapabilities {
        self.0.capabilities()
    }
    async fn put(&self, key: &ObjectKey, body: ByteStream, opts: PutOpts) -> Result<ObjectMeta, TierError> {
        self.0.put(key, body, PutOpts { content_class: Some("CT".into()), ..opts }).await
    }
    async fn get(&self, key: &ObjectKey, opts: GetOpts) -> Result<GetResult, TierError> {
        self.0.get(key, opts).await
    }
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, TierError> {
        self.0.head(key).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), TierError> {
        self.0.delete(key).await
    }
    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>, TierError> {
        self.0.list(prefix).await
    }
}

/// Trains the `CT` dictionary with `samples` objects, then deletes them.
async fn train_ct(tier: &WarmTier, samples: usize) {
    let objs = put_objects(tier, "CT", 90_000, samples).await;
    assert_eq!(tier.dictionaries().len(), 1, "{:?}", tier.dictionaries());
    for k in objs.keys() {
        tier.delete(k).await.unwrap();
    }
}

/// How many listed objects were compressed with a dictionary.
async fn with_dictionary(tier: &WarmTier) -> usize {
    let listed = tier.list(None).await.unwrap();
    listed.iter().filter(|m| tier.dictionary_of(&m.key).is_some()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_with_dictionaries_on() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), config(true, 10, SMALL_SEGMENTS));
    train_ct(&tier, 10).await;
    let classed = Classed(tier.clone());
    conformance::run_all(&classed).await;
    assert!(with_dictionary(&tier).await > 0, "the suite's objects use the dictionary");
    let report = tier.compact_once().unwrap();
    assert!(report.segments_compacted > 0 && report.segments_skipped == 0, "{report:?}");
    conformance::run_all(&classed).await;
    drop(classed);
    drop(tier);
    let tier = open(dir.path(), config(true, 10, SMALL_SEGMENTS));
    assert_eq!(tier.dictionaries().len(), 1);
    conformance::run_all(&Classed(tier.clone())).await;
    assert!(with_dictionary(&tier).await > 0);
}

#[tokio::test]
async fn a_flipped_byte_in_a_dictionary_frame_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), config(true, 10, 1 << 30));
    train_ct(&tier, 10).await;
    conformance::check_corruption_detected(&Classed(tier.clone()), |key| {
        assert!(tier.dictionary_of(key).is_some());
        let (path, offset, len) = tier.location_of(key).unwrap();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset + len / 2).unwrap();
        b[0] ^= 0xff;
        f.write_all_at(&b, offset + len / 2).unwrap();
        f.sync_all().unwrap();
    })
    .await;
}

#[tokio::test]
async fn small_objects_of_one_class_compress_better_with_a_dictionary() {
    let (dir_on, dir_off) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let on = open(dir_on.path(), config(true, 200, 1 << 30));
    let off = open(dir_off.path(), config(false, 200, 1 << 30));
    let n = 300;
    let objs = put_objects(&on, "CR", 0, n).await;
    put_objects(&off, "CR", 0, n).await;

    // The first 200 are the samples, stored plain; the dictionary serves the rest.
    let dicts = on.dictionaries();
    assert_eq!(dicts.len(), 1, "{dicts:?}");
    assert_eq!((dicts[0].class.as_str(), dicts[0].damaged.as_ref()), ("CR", None));
    assert!(dicts[0].bytes > 0 && dicts[0].bytes <= 64 << 10, "{dicts:?}");
    assert!((0..200).all(|i| on.dictionary_of(&key(i)).is_none()));
    assert!((200..n).all(|i| on.dictionary_of(&key(i)) == Some(dicts[0].id)));
    assert!((0..n).all(|i| off.dictionary_of(&key(i)).is_none()), "dictionaries off: none used");

    let original: u64 = (200..n).map(|i| objs[&key(i)].len() as u64).sum();
    let with: u64 = (200..n).map(|i| stored_len(&on, &key(i))).sum();
    let without: u64 = (200..n).map(|i| stored_len(&off, &key(i))).sum();
    println!(
        "{} objects of {} bytes: ratio {:.2} without a dictionary, {:.2} with",
        n - 200,
        original / (n as u64 - 200),
        original as f64 / without as f64,
        original as f64 / with as f64
    );
    assert!(with * 10 < without * 6, "with a dictionary {with} bytes, without {without}");
    // Plain frames are the same in both tiers.
    assert_eq!(stored_len(&on, &key(0)), stored_len(&off, &key(0)));
    assert_reads(&on, &objs).await;

    // Objects without a class, or of another class, do not use it.
    let other = ObjectKey::new("other/1").unwrap();
    on.put_bytes(&other, object("CR", 1000), PutOpts::default()).await.unwrap();
    assert_eq!(on.dictionary_of(&other), None);
    on.put_bytes(&other, object("SR", 1000), PutOpts { overwrite: true, ..classed("SR") }).await.unwrap();
    assert_eq!(on.dictionary_of(&other), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictionary_objects_read_back_after_reopening_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || config(true, 20, SMALL_SEGMENTS);
    let mut kept = BTreeMap::new();
    {
        let tier = open(dir.path(), cfg());
        let mr = put_objects(&tier, "MR", 0, 150).await;
        let sr = put_objects(&tier, "SR", 1000, 60).await;
        assert_eq!(tier.dictionaries().len(), 2, "{:?}", tier.dictionaries());
        for (i, (k, data)) in mr.into_iter().chain(sr).enumerate() {
            if i % 3 == 0 {
                kept.insert(k, data);
            } else {
                tier.delete(&k).await.unwrap();
            }
        }
        assert_reads(&tier, &kept).await;
    }
    let before: BTreeMap<ObjectKey, Option<u64>> = {
        let tier = open(dir.path(), cfg());
        assert_eq!(tier.dictionaries().len(), 2, "dictionaries persist");
        assert_reads(&tier, &kept).await;
        let before = kept.keys().map(|k| (k.clone(), tier.dictionary_of(k))).collect::<BTreeMap<_, _>>();
        assert!(before.values().filter(|d| d.is_some()).count() > 20, "{before:?}");
        let locations: Vec<_> = kept.keys().map(|k| tier.location_of(k).unwrap()).collect();
        let report = tier.compact_once().unwrap();
        assert!(report.segments_compacted > 0 && report.objects_moved > 0, "{report:?}");
        assert_eq!(report.segments_skipped, 0, "dictionary frames verify: {report:?}");
        let moved = kept.keys().zip(&locations).filter(|(k, l)| tier.location_of(k).as_ref() != Some(l)).count();
        assert!(moved > 0);
        // Frames were copied as they are: each entry keeps its dictionary.
        for (k, d) in &before {
            assert_eq!(tier.dictionary_of(k), *d, "{k}");
        }
        assert_reads(&tier, &kept).await;
        // New objects of a trained class use its dictionary right away after a reopen.
        let more = put_objects(&tier, "MR", 5000, 3).await;
        assert!(more.keys().all(|k| tier.dictionary_of(k).is_some()));
        kept.extend(more);
        before
    };
    let tier = open(dir.path(), cfg());
    for (k, d) in &before {
        assert_eq!(tier.dictionary_of(k), *d, "{k}");
    }
    assert_reads(&tier, &kept).await;
}

#[tokio::test]
async fn entries_without_a_dictionary_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let plain = {
        let tier = open(dir.path(), config(false, 10, 1 << 30));
        put_objects(&tier, "CT", 0, 30).await
    };
    // The entries are in the format written before dictionaries existed: no new field.
    {
        let db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path().join("index"), ["default", "meta"]).unwrap();
        let raw = db.get(key(0).as_str()).unwrap().unwrap();
        let entry: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let mut fields: Vec<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort();
        assert_eq!(fields, ["checksum", "offset", "segment", "size", "stored_len"]);
    }
    let tier = open(dir.path(), config(true, 10, 1 << 30));
    assert_reads(&tier, &plain).await;
    let trained = put_objects(&tier, "CT", 100, 20).await;
    assert_eq!(tier.dictionaries().len(), 1);
    assert!((110..120).all(|i| tier.dictionary_of(&key(i)).is_some()));
    assert_reads(&tier, &plain).await;
    assert_reads(&tier, &trained).await;
    // Turning dictionaries off again: old and new objects read, new ones are plain.
    drop(tier);
    let tier = open(dir.path(), config(false, 10, 1 << 30));
    assert_reads(&tier, &trained).await;
    let late = put_objects(&tier, "CT", 200, 2).await;
    assert!(late.keys().all(|k| tier.dictionary_of(k).is_none()));
}

#[tokio::test]
async fn a_failed_training_is_retried_after_more_samples() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), config(true, 10, 1 << 30));
    // Ten objects of random bytes: nothing in common for a dictionary to capture.
    let mut all = BTreeMap::new();
    for i in 0..10 {
        let data = Bytes::from(noise(500 + 150 * i, i as u64 + 100));
        tier.put_bytes(&key(i), data.clone(), classed("KO")).await.unwrap();
        all.insert(key(i), data);
    }
    assert!(tier.dictionaries().is_empty(), "{:?}", tier.dictionaries());
    // Puts went on without a dictionary; the next ten samples train one.
    all.extend(put_objects(&tier, "KO", 10, 10).await);
    assert_eq!(tier.dictionaries().len(), 1, "{:?}", tier.dictionaries());
    all.extend(put_objects(&tier, "KO", 20, 2).await);
    assert!(tier.dictionary_of(&key(21)).is_some());
    for (k, data) in &all {
        assert!(tier.get_bytes(k).await.unwrap() == *data, "{k}");
    }
}

/// Flips one bit in the middle of the (only) dictionary record in the closed tier's index.
fn damage_dictionary_record(root: &Path) {
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), root.join("index"), ["default", "meta"]).unwrap();
    let cf = db.cf_handle("meta").unwrap();
    let records: Vec<_> = db
        .iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|item| item.unwrap())
        .filter(|(k, _)| k.starts_with(b"dict/"))
        .collect();
    assert_eq!(records.len(), 1);
    for (k, v) in records {
        let mut v = v.into_vec();
        let mid = v.len() / 2;
        v[mid] ^= 0x01;
        db.put_cf(cf, k, v).unwrap();
    }
    db.flush_cf(cf).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_missing_dictionary_fails_reads_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || config(true, 20, SMALL_SEGMENTS);
    let (plain, compressed, id) = {
        let tier = open(dir.path(), cfg());
        let all = put_objects(&tier, "DX", 0, 90).await;
        let id = tier.dictionaries()[0].id;
        // Thin them out so that compaction has candidates.
        let mut kept = BTreeMap::new();
        for (i, (k, data)) in all.into_iter().enumerate() {
            if i % 3 == 0 {
                kept.insert(k, data);
            } else {
                tier.delete(&k).await.unwrap();
            }
        }
        let (compressed, plain): (BTreeMap<_, _>, BTreeMap<_, _>) =
            kept.into_iter().partition(|(k, _)| tier.dictionary_of(k).is_some());
        assert!(!compressed.is_empty() && !plain.is_empty());
        (plain, compressed, id)
    };

    // One flipped byte in the dictionary bytes of its record.
    damage_dictionary_record(dir.path());
    {
        let tier = open(dir.path(), cfg());
        let dicts = tier.dictionaries();
        assert_eq!(dicts.len(), 1);
        assert_eq!(dicts[0].class, "DX");
        assert!(dicts[0].damaged.as_deref().is_some_and(|d| d.contains("checksum")), "{dicts:?}");
        for k in compressed.keys() {
            let err = tier.get_bytes(k).await.unwrap_err().to_string();
            assert!(err.contains(&format!("dictionary {id}")) && err.contains("damaged"), "{err}");
            let ranged = tier.get(k, GetOpts { range: Some(0..10) }).await.unwrap();
            assert!(archive_core::tier::collect_stream(ranged.body).await.is_err(), "no bytes from a ranged read");
        }
        assert_reads(&tier, &plain).await;
        // Compaction leaves the segments of those objects alone rather than fail.
        let report = tier.compact_once().unwrap();
        assert!(report.segments_skipped > 0, "{report:?}");
        // The class trains a new dictionary, with a new id, and its objects read.
        let fresh = put_objects(&tier, "DX", 1000, 25).await;
        let dicts = tier.dictionaries();
        assert_eq!(dicts.len(), 2, "{dicts:?}");
        assert!(dicts[1].id > id && dicts[1].damaged.is_none(), "{dicts:?}");
        assert!((1020..1025).all(|i| tier.dictionary_of(&key(i)) == Some(dicts[1].id)));
        assert_reads(&tier, &fresh).await;
    }

    // The record gone altogether.
    let db_root = dir.path().to_path_buf();
    {
        let db =
            rocksdb::DB::open_cf(&rocksdb::Options::default(), db_root.join("index"), ["default", "meta"]).unwrap();
        let cf = db.cf_handle("meta").unwrap();
        db.delete_cf(cf, format!("dict/{id:016x}")).unwrap();
        db.flush_cf(cf).unwrap();
    }
    let tier = open(dir.path(), cfg());
    assert_eq!(tier.dictionaries().len(), 1, "{:?}", tier.dictionaries());
    for k in compressed.keys() {
        let err = tier.get_bytes(k).await.unwrap_err().to_string();
        assert!(err.contains(&format!("dictionary {id}")) && err.contains("missing"), "{err}");
    }
    assert_reads(&tier, &plain).await;
}

fn spec(options: &str) -> tier_plugins::registry::TierSpec {
    tier_plugins::registry::TierSpec { kind: "warm".into(), options: toml::from_str(options).unwrap() }
}

#[tokio::test]
async fn the_registry_passes_dictionary_options_through_and_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let good = spec("dictionaries = true\ndictionary_samples = 10\ndictionary_kb = 16\ncompact_interval_secs = 0\n");
    let tier = tier_plugins::registry::build("warm2", &good, dir.path()).await.unwrap();
    let mut objs = BTreeMap::new();
    for i in 0..12 {
        let data = object("US", i);
        tier.put_bytes(&key(i), data.clone(), classed("US")).await.unwrap();
        objs.insert(key(i), data);
    }
    drop(tier);
    let tier = open(&dir.path().join("tiers/warm2"), config(true, 10, 1 << 30));
    let dicts = tier.dictionaries();
    assert_eq!(dicts.len(), 1, "ten samples trained a dictionary: {dicts:?}");
    assert!(dicts[0].bytes <= 16 << 10, "{dicts:?}");
    assert!(tier.dictionary_of(&key(11)).is_some());
    assert_reads(&tier, &objs).await;
    for (bad, word) in [
        ("dictionary_samples = 9", "dictionary_samples"),
        ("dictionary_samples = 100000", "dictionary_samples"),
        ("dictionary_kb = 0", "dictionary_kb"),
        ("dictionary_kb = 4096", "dictionary_kb"),
        ("dictionaries = \"yes\"", "dictionaries"),
        ("dictionary = true", "dictionary"),
    ] {
        let err = tier_plugins::registry::build("warm3", &spec(bad), dir.path()).await.unwrap_err();
        assert!(
            matches!(err, tier_plugins::registry::RegistryError::Options { .. }) && err.to_string().contains(word),
            "{bad}: {err}"
        );
    }
    let defaults = WarmConfig::default();
    assert_eq!((defaults.dictionaries, defaults.dictionary_samples, defaults.dictionary_kb), (false, 200, 64));
}
