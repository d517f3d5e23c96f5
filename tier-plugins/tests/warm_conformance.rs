//! The warm tier against the tier conformance suite (also after compaction), plus segment
//! rotation and reopening. Compaction itself is tested in `warm_compaction.rs`.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::tier::{conformance, GetOpts, ObjectKey, PutOpts, Tier, TierExt, TierName};
use bytes::Bytes;
use std::os::unix::fs::FileExt;
use tier_plugins::warm::WarmTier;

fn open(root: &std::path::Path, segment_bytes: u64) -> WarmTier {
    WarmTier::open_with(TierName::new("warm").unwrap(), root.to_path_buf(), segment_bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_tier_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(&open(dir.path(), 1 << 30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_tier_passes_the_conformance_suite_with_tiny_segments() {
    // Every object past the first 64 KiB of a segment starts a new one.
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(&open(dir.path(), 64 << 10)).await;
    let segments = std::fs::read_dir(dir.path().join("segments")).unwrap().count();
    assert!(segments > 3, "segments rotate: {segments}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_tier_passes_the_conformance_suite_again_after_compaction() {
    // The suite deletes and overwrites: compaction finds dead bytes in tiny segments.
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), 64 << 10);
    conformance::run_all(&tier).await;
    let report = tier.compact_once().unwrap();
    assert!(report.segments_compacted > 0, "{report:?}");
    conformance::run_all(&tier).await;
    tier.compact_once().unwrap();
    drop(tier);
    conformance::run_all(&open(dir.path(), 64 << 10)).await;
}

#[tokio::test]
async fn warm_tier_detects_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let tier = open(dir.path(), 1 << 30);
    conformance::check_corruption_detected(&tier, |key| {
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
async fn objects_survive_reopening_and_compress() {
    let dir = tempfile::tempdir().unwrap();
    let key = ObjectKey::new("1.2/3.4/5.6.dcm").unwrap();
    // Smooth 16-bit data, like CT pixels: zstd should at least halve it.
    let data: Vec<u8> = (0..400_000u32).flat_map(|i| ((1000 + (i / 7) % 64) as u16).to_le_bytes()).collect();
    {
        let tier = open(dir.path(), 1 << 30);
        tier.put_bytes(&key, Bytes::from(data.clone()), PutOpts::default()).await.unwrap();
        let (_, _, stored) = tier.location_of(&key).unwrap();
        assert!(stored * 2 < data.len() as u64, "stored {stored} of {}", data.len());
    }
    let tier = open(dir.path(), 1 << 30);
    let got = archive_core::tier::collect_stream(tier.get(&key, GetOpts::default()).await.unwrap().body).await.unwrap();
    assert!(got == data);
    // New objects after reopening go to the same or a new segment without harming the old one.
    let other = ObjectKey::new("1.2/3.4/7.8.dcm").unwrap();
    tier.put_bytes(&other, Bytes::from_static(b"second"), PutOpts::default()).await.unwrap();
    let got = archive_core::tier::collect_stream(tier.get(&key, GetOpts::default()).await.unwrap().body).await.unwrap();
    assert!(got == data);
}
