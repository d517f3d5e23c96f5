//! Versioned on-disk formats of the warm and tape tiers: data written by the previous
//! version (`testdata/formats/v1`, written by the code before segment and volume headers
//! existed) opens and reads back byte-exact.
//!
//! `write_fixtures` (ignored) writes the fixtures with the code it is compiled with:
//! `VNA_FORMAT_FIXTURES=testdata/formats/vN cargo test -p tier-plugins --test format_versions
//! -- --ignored write_fixtures` keeps the data of a format version before the next change.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::format::FormatError;
use archive_core::tier::{
    bytes_stream, collect_stream, GetOpts, ObjectKey, PutOpts, RecallStatus, Tier, TierError, TierName,
};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tier_plugins::s3::{BundleIndex, BUNDLE_INDEX_VERSION};
use tier_plugins::tape::{
    volume_format, TapeConfig, TapeTier, VolumeFormat, VolumeState, TAPE_FORMAT_VERSION, VOLUME_LABEL_LEN,
};
use tier_plugins::warm::{
    segment_format, SegmentFormat, WarmConfig, WarmTier, SEGMENT_HEADER_LEN, WARM_FORMAT_VERSION,
};

/// The fixtures of the previous version.
fn v1_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/formats/v1")
}

/// Deterministic content of fixture object `seed`: a DICOM-like header (which objects of a
/// class share, so that a dictionary trains) then bytes that differ per object.
fn content(seed: u32) -> Bytes {
    let mut out = Vec::new();
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    for i in 0..40u32 {
        out.extend_from_slice(format!("(0008,{i:04X}) CT header value {i} shared by the class;").as_bytes());
    }
    let len = 600 + (seed as usize * 97) % 900;
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    out.extend((0..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    out.into()
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

fn warm_config() -> WarmConfig {
    WarmConfig {
        segment_bytes: 2 << 10,
        compact_interval: Duration::ZERO,
        dictionaries: true,
        dictionary_samples: 10,
        ..WarmConfig::default()
    }
}

fn tape_config(root: &Path) -> TapeConfig {
    TapeConfig {
        root: root.to_path_buf(),
        volume_bytes: 8 << 10,
        mount_delay: Duration::ZERO,
        staging_ttl: Duration::from_secs(3600),
    }
}

/// Objects of the warm fixture: key → seed of its content (after the overwrite and delete).
fn warm_objects() -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = (0..14).filter(|i| *i != 3).map(|i| (format!("w/{i:02}"), i)).collect();
    // w/05 was overwritten with the content of seed 105.
    for o in out.iter_mut() {
        if o.0 == "w/05" {
            o.1 = 105;
        }
    }
    out
}

/// Objects of the tape fixture: key → seed.
fn tape_objects() -> Vec<(String, u32)> {
    (0..9).filter(|i| *i != 2).map(|i| (format!("t/{i:02}"), 200 + i)).collect()
}

/// Copies a fixture directory (opening data writes to it).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Removes RocksDB's informational logs (not data) from a fixture directory.
fn strip_logs(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            strip_logs(&e.path());
        } else if name == "LOG" || name.starts_with("LOG.old") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

#[tokio::test]
#[ignore = "writes the format fixtures of the current version (see the module docs)"]
async fn write_fixtures() {
    let out = PathBuf::from(std::env::var("VNA_FORMAT_FIXTURES").expect("set VNA_FORMAT_FIXTURES"));
    let warm_root = out.join("warm");
    let tape_root = out.join("tape");
    for d in [&warm_root, &tape_root] {
        if d.exists() {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
    {
        let warm = WarmTier::open_config(TierName::new("warm").unwrap(), warm_root.clone(), warm_config()).unwrap();
        for i in 0..14u32 {
            let opts = PutOpts { content_class: Some("CT".into()), ..PutOpts::default() };
            warm.put(&key(&format!("w/{i:02}")), bytes_stream(content(i)), opts).await.unwrap();
        }
        let opts = PutOpts { overwrite: true, content_class: Some("CT".into()), ..PutOpts::default() };
        warm.put(&key("w/05"), bytes_stream(content(105)), opts).await.unwrap();
        warm.delete(&key("w/03")).await.unwrap();
        println!("warm: {} segments, {} dictionaries", warm.segments().len(), warm.dictionaries().len());
    }
    {
        let tape = TapeTier::open(TierName::new("tape").unwrap(), tape_config(&tape_root)).unwrap();
        for i in 0..9u32 {
            tape.put(&key(&format!("t/{i:02}")), bytes_stream(content(200 + i)), PutOpts::default()).await.unwrap();
        }
        tape.delete(&key("t/02")).await.unwrap();
        println!("tape: {} volumes", tape.volumes().unwrap().len());
    }
    for d in ["staging", "spool"] {
        let _ = std::fs::remove_dir_all(tape_root.join(d));
    }
    strip_logs(&out);
}

async fn read_warm(tier: &WarmTier, k: &str) -> Result<Bytes, TierError> {
    collect_stream(tier.get(&key(k), GetOpts::default()).await?.body).await
}

/// Polls `recall` until the object is staged, then reads it.
async fn read_tape(tier: &TapeTier, k: &str) -> Result<Bytes, TierError> {
    let k = key(k);
    for _ in 0..30_000 {
        if tier.recall(&k).await? == RecallStatus::Ready {
            return collect_stream(tier.get(&k, GetOpts::default()).await?.body).await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("recall of {k} did not finish");
}

fn segment_files(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(root.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let id = u64::from_str_radix(p.file_name()?.to_str()?.strip_suffix(".seg")?, 16).ok()?;
            Some((id, p))
        })
        .collect();
    out.sort();
    out
}

fn format_of(path: &Path) -> SegmentFormat {
    segment_format(&std::fs::File::open(path).unwrap()).unwrap()
}

/// Opens a RocksDB index with all of its column families (to read or plant markers).
fn raw_db(path: &Path) -> rocksdb::DB {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), path).unwrap();
    rocksdb::DB::open_cf(&rocksdb::Options::default(), path, cfs).unwrap()
}

fn assert_newer_refused(e: TierError, found: u32, supported: u32) {
    match &e {
        TierError::Format { source: FormatError::UnsupportedVersion { found: f, supported: s, .. }, .. } => {
            assert_eq!((*f, *s), (found, supported), "{e}");
        }
        other => panic!("expected a format error, got {other:?}"),
    }
    assert!(e.to_string().contains("newer"), "{e}");
}

#[tokio::test]
async fn warm_data_of_version_1_reads_back_byte_exact_and_new_segments_carry_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("warm");
    copy_dir(&v1_dir().join("warm"), &root);
    let v1_segments = segment_files(&root);
    assert!(v1_segments.len() >= 2, "the fixture spans segments: {v1_segments:?}");
    for (_, p) in &v1_segments {
        assert_eq!(format_of(p), SegmentFormat::Legacy, "{} was written without a header", p.display());
    }
    let name = TierName::new("warm").unwrap();
    {
        let tier = WarmTier::open_config(name.clone(), root.clone(), warm_config()).unwrap();
        assert!(!tier.dictionaries().is_empty(), "the fixture holds a trained dictionary");
        for (k, seed) in warm_objects() {
            assert_eq!(read_warm(&tier, &k).await.unwrap(), content(seed), "{k}");
        }
        assert!(matches!(read_warm(&tier, "w/03").await, Err(TierError::NotFound(_))));
        assert_eq!(tier.list(None).await.unwrap().len(), warm_objects().len());
        // New objects go to a new segment, with a header; the version 1 segments are untouched.
        let opts = PutOpts { content_class: Some("CT".into()), ..PutOpts::default() };
        tier.put(&key("w/new"), bytes_stream(content(999)), opts).await.unwrap();
        let (path, offset, _) = tier.location_of(&key("w/new")).unwrap();
        assert_eq!(format_of(&path), SegmentFormat::Header(WARM_FORMAT_VERSION));
        assert!(offset >= SEGMENT_HEADER_LEN);
        assert!(v1_segments.iter().all(|(_, p)| *p != path));
    }
    for (_, p) in &v1_segments {
        let original = std::fs::read(v1_dir().join("warm/segments").join(p.file_name().unwrap())).unwrap();
        assert_eq!(std::fs::read(p).unwrap(), original, "a version 1 segment was changed");
    }
    // The index now says version 2.
    {
        let db = raw_db(&root.join("index"));
        let marker = db.get_cf(db.cf_handle("meta").unwrap(), b"format-version").unwrap().unwrap();
        assert_eq!(marker, WARM_FORMAT_VERSION.to_string().as_bytes());
    }
    // Reopened, and compacted until nothing old is left: every object still reads back.
    let config = WarmConfig { compact_below: 1.0, ..warm_config() };
    let tier = WarmTier::open_config(name, root.clone(), config).unwrap();
    while tier.compact_once().unwrap().segments_compacted > 0 {}
    for (k, seed) in warm_objects() {
        assert_eq!(read_warm(&tier, &k).await.unwrap(), content(seed), "{k}");
    }
    assert_eq!(read_warm(&tier, "w/new").await.unwrap(), content(999));
    // Segments compaction left alone (all live) are still version 1; every other one is new.
    let v1_ids: Vec<u64> = v1_segments.iter().map(|(id, _)| *id).collect();
    let after = segment_files(&root);
    assert!(after.iter().any(|(id, _)| !v1_ids.contains(id)));
    for (id, p) in after {
        if !v1_ids.contains(&id) {
            assert_eq!(format_of(&p), SegmentFormat::Header(WARM_FORMAT_VERSION), "segment {id}");
        }
    }
}

#[tokio::test]
async fn a_new_warm_tier_writes_its_markers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("warm");
    let config = WarmConfig { segment_bytes: 4 << 10, ..warm_config() };
    {
        let tier = WarmTier::open_config(TierName::new("warm").unwrap(), root.clone(), config).unwrap();
        for i in 0..8 {
            tier.put(&key(&format!("n/{i}")), bytes_stream(content(i)), PutOpts::default()).await.unwrap();
        }
        assert!(tier.segments().len() > 1);
    }
    for (id, p) in segment_files(&root) {
        assert_eq!(format_of(&p), SegmentFormat::Header(WARM_FORMAT_VERSION), "segment {id}");
        // The header is a zstd skippable frame: the segment is still a sequence of zstd frames.
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..4], &[0x50, 0x2A, 0x4D, 0x18]);
        assert!(zstd::stream::decode_all(&bytes[..]).is_ok(), "segment {id} decodes with zstd");
    }
    let db = raw_db(&root.join("index"));
    let marker = db.get_cf(db.cf_handle("meta").unwrap(), b"format-version").unwrap().unwrap();
    assert_eq!(marker, b"2");
}

#[tokio::test]
async fn a_warm_tier_of_a_newer_format_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("warm");
    let name = TierName::new("warm").unwrap();
    {
        let tier = WarmTier::open_config(name.clone(), root.clone(), warm_config()).unwrap();
        tier.put(&key("a"), bytes_stream(content(1)), PutOpts::default()).await.unwrap();
    }
    // A segment whose header says version 3.
    let (_, seg) = segment_files(&root).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[12..16].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    let e = WarmTier::open_config(name.clone(), root.clone(), warm_config()).unwrap_err();
    assert_newer_refused(e, 3, WARM_FORMAT_VERSION);
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "the segment was changed");
    bytes[12..16].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();

    // An index whose marker says version 7 (and that has a column family this code does not know).
    {
        let mut db = raw_db(&root.join("index"));
        db.put_cf(db.cf_handle("meta").unwrap(), b"format-version", b"7").unwrap();
        db.create_cf("added_by_version_7", &rocksdb::Options::default()).unwrap();
    }
    let e = WarmTier::open_config(name.clone(), root.clone(), warm_config()).unwrap_err();
    assert_newer_refused(e, 7, WARM_FORMAT_VERSION);
    let segments_after = segment_files(&root);
    assert_eq!(segments_after.len(), 1, "no segment was added: {segments_after:?}");

    // Back at version 2, it opens and reads.
    {
        let db = raw_db(&root.join("index"));
        db.put_cf(db.cf_handle("meta").unwrap(), b"format-version", b"2").unwrap();
    }
    let tier = WarmTier::open_config(name, root, warm_config()).unwrap();
    assert_eq!(read_warm(&tier, "a").await.unwrap(), content(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tape_data_of_version_1_reads_back_byte_exact_and_new_volumes_carry_a_label() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tape");
    copy_dir(&v1_dir().join("tape"), &root);
    let name = TierName::new("tape").unwrap();
    let v1_volumes: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("volumes")).unwrap().map(|e| e.unwrap().path()).collect();
        v.sort();
        v
    };
    assert!(v1_volumes.len() >= 2, "the fixture spans volumes: {v1_volumes:?}");
    let tier = TapeTier::open(name.clone(), tape_config(&root)).unwrap();
    // The version 1 volumes are closed; the open volume is a new, labelled one.
    let mut volumes = tier.volumes().unwrap();
    let open = volumes.pop().unwrap();
    assert_eq!(volumes.len(), v1_volumes.len());
    assert!(volumes.iter().all(|v| v.format == 1 && v.state == VolumeState::Full), "{volumes:?}");
    assert_eq!((open.format, open.state, open.used), (TAPE_FORMAT_VERSION, VolumeState::Open, VOLUME_LABEL_LEN));
    for (k, seed) in tape_objects() {
        assert_eq!(read_tape(&tier, &k).await.unwrap(), content(seed), "{k}");
    }
    assert!(matches!(tier.head(&key("t/02")).await, Err(TierError::NotFound(_))));
    // New objects go to a new, labelled volume.
    tier.put(&key("t/new"), bytes_stream(content(999)), PutOpts::default()).await.unwrap();
    let entry = tier.catalog_entry(&key("t/new")).unwrap().unwrap();
    assert!(volumes.iter().all(|v| v.id != entry.volume));
    assert_eq!(entry.offset, VOLUME_LABEL_LEN);
    let file = std::fs::File::open(tier.volume_path(entry.volume)).unwrap();
    assert_eq!(volume_format(&file, entry.volume).unwrap(), VolumeFormat::Label(TAPE_FORMAT_VERSION));
    let record = tier.volumes().unwrap().into_iter().find(|v| v.id == entry.volume).unwrap();
    assert_eq!((record.format, record.state), (TAPE_FORMAT_VERSION, VolumeState::Open));
    assert_eq!(read_tape(&tier, "t/new").await.unwrap(), content(999));
    drop(tier);
    for p in &v1_volumes {
        let original = std::fs::read(v1_dir().join("tape/volumes").join(p.file_name().unwrap())).unwrap();
        assert_eq!(std::fs::read(p).unwrap(), original, "a version 1 volume was changed");
    }
    // Reopened: the labelled volume stays the open one.
    let tier = TapeTier::open(name, tape_config(&root)).unwrap();
    for (k, seed) in tape_objects() {
        assert_eq!(read_tape(&tier, &k).await.unwrap(), content(seed), "{k}");
    }
    tier.put(&key("t/new2"), bytes_stream(content(998)), PutOpts::default()).await.unwrap();
    assert_eq!(tier.catalog_entry(&key("t/new2")).unwrap().unwrap().volume, entry.volume);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tape_tier_labels_its_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let tier = TapeTier::open(TierName::new("tape").unwrap(), tape_config(dir.path())).unwrap();
    for i in 0..8 {
        tier.put(&key(&format!("n/{i}")), bytes_stream(content(i)), PutOpts::default()).await.unwrap();
    }
    let volumes = tier.volumes().unwrap();
    assert!(volumes.len() > 1, "{volumes:?}");
    for v in &volumes {
        assert_eq!(v.format, TAPE_FORMAT_VERSION);
        let file = std::fs::File::open(tier.volume_path(v.id)).unwrap();
        assert_eq!(volume_format(&file, v.id).unwrap(), VolumeFormat::Label(TAPE_FORMAT_VERSION), "{v:?}");
        assert!(v.used <= v.capacity, "{v:?}");
    }
    for i in 0..8 {
        assert_eq!(read_tape(&tier, &format!("n/{i}")).await.unwrap(), content(i));
    }
    // A volume that lost its label is not read (a wrong or damaged cartridge).
    drop(tier);
    let tier = TapeTier::open(TierName::new("tape").unwrap(), tape_config(dir.path())).unwrap();
    let entry = tier.catalog_entry(&key("n/0")).unwrap().unwrap();
    let path = tier.volume_path(entry.volume);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] = b'X';
    std::fs::write(&path, &bytes).unwrap();
    let e = read_tape(&tier, "n/0").await.unwrap_err();
    assert!(e.to_string().contains("label"), "{e}");
}

#[tokio::test]
async fn a_tape_tier_of_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let name = TierName::new("tape").unwrap();
    drop(TapeTier::open(name.clone(), tape_config(dir.path())).unwrap());
    {
        let mut db = raw_db(&dir.path().join("index"));
        assert_eq!(db.get(b"format-version").unwrap().unwrap(), b"2");
        db.put(b"format-version", b"5").unwrap();
        db.create_cf("added_by_version_5", &rocksdb::Options::default()).unwrap();
    }
    assert_newer_refused(TapeTier::open(name.clone(), tape_config(dir.path())).unwrap_err(), 5, TAPE_FORMAT_VERSION);
    // A volume record of a newer format.
    {
        let db = raw_db(&dir.path().join("index"));
        db.put(b"format-version", b"2").unwrap();
        let volumes = db.cf_handle("volumes").unwrap();
        let mut record: serde_json::Value =
            serde_json::from_slice(&db.get_cf(volumes, 1u64.to_be_bytes()).unwrap().unwrap()).unwrap();
        record["format"] = 4.into();
        db.put_cf(volumes, 1u64.to_be_bytes(), serde_json::to_vec(&record).unwrap()).unwrap();
    }
    assert_newer_refused(TapeTier::open(name, tape_config(dir.path())).unwrap_err(), 4, TAPE_FORMAT_VERSION);
}

#[test]
fn s3_bundle_indexes_of_version_1_decode_and_newer_ones_are_refused() {
    // As version 1 wrote it (main before format markers were read).
    let v1 = br#"{"v":1,"bundle":"0001","entries":[{"key":"a/b","offset":0,"size":3,"checksum":"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"}]}"#;
    let idx: BundleIndex = archive_core::format::decode(v1).unwrap();
    assert_eq!((idx.v, idx.bundle.as_str(), idx.entries.len()), (BUNDLE_INDEX_VERSION, "0001", 1));
    assert_eq!(idx.entries[0].checksum, archive_core::checksum::Checksum::of(b""));
    assert_eq!(archive_core::format::encode(&idx).unwrap(), v1.to_vec(), "written back byte-exact");
    let newer = br#"{"v":2,"bundle":"0001","entries":[],"sealed":true}"#;
    let e = archive_core::format::decode::<BundleIndex>(newer).unwrap_err();
    assert!(matches!(e, FormatError::UnsupportedVersion { found: 2, supported: 1, .. }), "{e}");
}
