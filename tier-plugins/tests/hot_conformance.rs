//! The hot tier against the tier conformance suite, plus its own filesystem behaviour.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::checksum::Checksum;
use archive_core::tier::{conformance, ObjectKey, PutOpts, Tier, TierError, TierExt, TierName};
use bytes::Bytes;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use tier_plugins::hot::HotTier;

fn open(root: &Path) -> HotTier {
    let name = TierName::new("hot").expect("valid tier name");
    HotTier::open(name, root.to_path_buf()).expect("open hot tier")
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).expect("valid key")
}

/// Flips every bit of the byte in the middle of a file, keeping its attributes.
fn flip_middle_byte(path: &Path) {
    let mut file = fs::OpenOptions::new().read(true).write(true).open(path).expect("open object file");
    let len = file.metadata().expect("metadata").len();
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(len / 2)).expect("seek");
    file.read_exact(&mut byte).expect("read byte");
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(len / 2)).expect("seek");
    file.write_all(&byte).expect("write byte");
    file.sync_all().expect("sync");
}

fn tmp_entries(tier: &HotTier) -> Vec<String> {
    let dir = tier.root().join(".tmp");
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read .tmp")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_tier_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = open(dir.path());
    conformance::run_all(&tier).await;
    assert!(tmp_entries(&tier).is_empty(), "temporary files left behind: {:?}", tmp_entries(&tier));
}

#[tokio::test]
async fn hot_tier_passes_the_conformance_suite_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run_all(&open(dir.path())).await;
}

#[tokio::test]
async fn hot_tier_detects_a_flipped_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = open(dir.path());
    conformance::check_corruption_detected(&tier, |key| flip_middle_byte(&tier.path_of(key))).await;
}

#[tokio::test]
async fn leftover_temporary_files_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = open(dir.path());
    drop(tier);
    let leftover = dir.path().join(".tmp").join("put-12345-0.part");
    fs::write(&leftover, b"half an object").expect("write leftover");
    let tier = open(dir.path());
    assert!(!leftover.exists(), "leftover temporary file survived open");
    assert!(tmp_entries(&tier).is_empty());
    assert!(tier.list(None).await.expect("list").is_empty(), "a temporary file was listed");
}

#[test]
fn keys_cannot_escape_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = open(dir.path());
    for bad in ["../x", "a/../../x", "/etc/passwd", "a/./b", "..", "a\\..\\b"] {
        assert!(ObjectKey::new(bad).is_err(), "{bad:?} accepted as a key");
    }
    for odd in ["...", "..../x", "~/x", "a/.../b", ".hidden", "-x/~", ".tmp/x"] {
        let key = key(odd);
        let path = tier.path_of(&key);
        assert!(path.starts_with(tier.root()), "{odd:?} maps outside the root: {}", path.display());
        let depth = path.strip_prefix(tier.root()).expect("under root").components().count();
        assert_eq!(depth, key.segments().count(), "{odd:?} maps to {}", path.display());
    }
}

#[test]
fn a_root_held_by_another_open_tier_is_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path());
    let name = TierName::new("hot").expect("valid tier name");
    let err = HotTier::open(name.clone(), dir.path().to_path_buf()).expect_err("second open");
    match &err {
        TierError::InUse { tier, path } => {
            assert_eq!(tier, &name);
            assert_eq!(path, dir.path());
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(err.to_string().contains("is in use by another process (is `vna serve` running?)"), "{err}");
    drop(first);
    HotTier::open(name, dir.path().to_path_buf()).expect("opens again once released");
}

#[tokio::test]
async fn the_tmp_directory_is_reserved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = open(dir.path());
    let reserved = key(".tmp/x");
    let err = tier.put_bytes(&reserved, Bytes::from_static(b"x"), PutOpts::default()).await.expect_err("reserved put");
    assert!(matches!(err, TierError::InvalidKey { .. }), "{err:?}");
    fs::write(dir.path().join(".tmp/x"), b"x").expect("plant file");
    assert!(matches!(tier.head(&reserved).await, Err(TierError::NotFound(_))));
    assert!(matches!(tier.get_bytes(&reserved).await, Err(TierError::NotFound(_))));
    tier.delete(&reserved).await.expect("delete of reserved key is a no-op");
    assert!(dir.path().join(".tmp/x").exists());
}

#[tokio::test]
async fn objects_are_plain_files_with_a_checksum_attribute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = open(dir.path());
    let k = key("1.2.3/4.5/6.7.dcm");
    let data = Bytes::from_static(b"DICM object bytes");
    tier.put_bytes(&k, data.clone(), PutOpts::default()).await.expect("put");
    let path = tier.path_of(&k);
    assert_eq!(path, dir.path().join("1.2.3").join("4.5").join("6.7.dcm"));
    assert_eq!(fs::read(&path).expect("read file"), data);
    assert_eq!(tier.head(&k).await.expect("head").checksum, Checksum::of(&data));
}

#[tokio::test]
async fn delete_removes_empty_parent_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = open(dir.path());
    let a = key("s/x/1");
    let b = key("s/y/2");
    for k in [&a, &b] {
        tier.put_bytes(k, Bytes::from_static(b"x"), PutOpts::default()).await.expect("put");
    }
    tier.delete(&a).await.expect("delete");
    assert!(!dir.path().join("s/x").exists(), "empty directory s/x kept");
    assert!(dir.path().join("s/y").exists());
    tier.delete(&b).await.expect("delete");
    assert!(!dir.path().join("s").exists(), "empty directory s kept");
    assert!(dir.path().join(".tmp").is_dir());
}

#[tokio::test]
async fn a_key_cannot_be_both_an_object_and_a_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = open(dir.path());
    let one = Bytes::from_static(b"1");
    tier.put_bytes(&key("k/a"), one.clone(), PutOpts::default()).await.expect("put k/a");
    let err = tier.put_bytes(&key("k/a/b"), one.clone(), PutOpts::default()).await.expect_err("k/a/b");
    assert!(matches!(err, TierError::InvalidKey { .. }), "{err:?}");
    let err = tier.put_bytes(&key("k"), one, PutOpts::default()).await.expect_err("k");
    assert!(matches!(err, TierError::InvalidKey { .. }), "{err:?}");
    assert!(matches!(tier.head(&key("k")).await, Err(TierError::NotFound(_))));
    assert!(matches!(tier.head(&key("k/a/b")).await, Err(TierError::NotFound(_))));
    tier.delete(&key("k")).await.expect("deleting a directory-shaped key is a no-op");
    assert!(tmp_entries(&tier).is_empty());
}

#[tokio::test]
async fn a_file_without_checksum_attribute_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = open(dir.path());
    fs::write(dir.path().join("stray"), b"not written by the tier").expect("plant file");
    let err = tier.head(&key("stray")).await.expect_err("head of a file without checksum");
    assert!(err.to_string().contains("user.vna.blake3"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_of_one_key_have_one_winner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = open(dir.path());
    let k = key("race/object");
    let puts = (0..8u8).map(|i| tier.put_bytes(&k, Bytes::from(vec![i; 100_000]), PutOpts::default()));
    let results = futures::future::join_all(puts).await;
    let winners: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for result in &results {
        if let Err(e) = result {
            assert!(matches!(e, TierError::AlreadyExists(_)), "{e:?}");
        }
    }
    let stored = tier.get_bytes(&k).await.expect("get");
    assert_eq!(stored, Bytes::from(vec![winners[0] as u8; 100_000]));
    assert!(tmp_entries(&tier).is_empty(), "temporary files left behind: {:?}", tmp_entries(&tier));
}
