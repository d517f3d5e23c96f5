//! The conformance suite every [`Tier`] implementation runs in its tests.
//!
//! Call [`run_all`] on a fresh tier instance from a `#[tokio::test]`, and
//! [`check_corruption_detected`] with a function that damages a stored object behind the
//! tier's back (it checks that `get`, `verify_many` and `get_many` all catch the damage). Each check panics with a message naming the tier and what went wrong.
//!
//! Every check works under its own key prefix (`conformance/<check>/`) and first deletes
//! whatever a previous run left there, so all checks can share one tier instance and the
//! suite can run more than once on it. The suite expects objects to be readable right
//! after `put`: tiers whose objects need a recall cannot run the read checks.

use super::{collect_stream, ByteStream, GetOpts, ObjectKey, ObjectMeta, PutOpts, Tier, TierError};
use crate::checksum::Checksum;
use bytes::Bytes;
use futures::{stream, StreamExt};
use std::fmt::Debug;
use std::ops::Range;

/// Root of all keys the suite writes.
const ROOT: &str = "conformance";

/// Runs every check of the suite, one after the other, on one tier instance.
pub async fn run_all(tier: &dyn Tier) {
    check_round_trip_empty(tier).await;
    check_round_trip_one_byte(tier).await;
    check_round_trip_multi_megabyte(tier).await;
    check_already_exists_and_overwrite(tier).await;
    check_expected_checksum(tier).await;
    check_failing_body_stores_nothing(tier).await;
    check_failed_overwrite_keeps_previous(tier).await;
    check_ranged_reads(tier).await;
    check_not_found(tier).await;
    check_delete(tier).await;
    check_delete_many(tier).await;
    check_verify_many(tier).await;
    check_get_many(tier).await;
    check_list(tier).await;
    check_concurrent_puts(tier).await;
}

/// An empty object round-trips through put, head, get and list.
pub async fn check_round_trip_empty(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "round-trip-empty").await;
    round_trip(tier, &key(&prefix, "empty"), Bytes::new(), 1).await;
}

/// A one-byte object round-trips through put, head, get and list.
pub async fn check_round_trip_one_byte(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "round-trip-one-byte").await;
    round_trip(tier, &key(&prefix, "one"), Bytes::from_static(&[0x5a]), 1).await;
}

/// A multi-megabyte object sent as many small chunks of uneven sizes comes back byte-exact.
pub async fn check_round_trip_multi_megabyte(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "round-trip-large").await;
    let data = test_bytes(5 * 1024 * 1024 + 123, 1);
    round_trip(tier, &key(&prefix, "1.2.840/study/series/large.dcm"), data, 8191).await;
}

/// Without `overwrite` a taken key fails with `AlreadyExists` and keeps its object;
/// with `overwrite` the new object replaces it.
pub async fn check_already_exists_and_overwrite(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "overwrite").await;
    let key = key(&prefix, "object");
    let first = test_bytes(1000, 2);
    let second = test_bytes(700, 3);
    put_ok(tier, &key, &first, PutOpts::default()).await;

    let err = expect_err(
        tier,
        "put on a taken key without overwrite",
        tier.put(&key, chunked(&second, 100), PutOpts::default()).await,
    );
    assert_kind(
        tier,
        "put on a taken key without overwrite",
        &err,
        matches!(err, TierError::AlreadyExists(ref k) if *k == key),
    );
    assert_object(tier, &key, &first).await;

    let opts = PutOpts { overwrite: true, ..PutOpts::default() };
    put_ok(tier, &key, &second, opts).await;
    assert_object(tier, &key, &second).await;
}

/// A put whose body does not hash to `expected_checksum` fails with `ChecksumMismatch`
/// and stores nothing; a matching `expected_checksum` is accepted.
pub async fn check_expected_checksum(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "expected-checksum").await;
    let data = test_bytes(300 * 1024, 4);
    let wrong = Checksum::of(b"something else");
    let bad_key = key(&prefix, "mismatch");
    let opts = PutOpts { expected_checksum: Some(wrong), ..PutOpts::default() };
    let err =
        expect_err(tier, "put with a wrong expected checksum", tier.put(&bad_key, chunked(&data, 4096), opts).await);
    let is_mismatch = matches!(err, TierError::ChecksumMismatch { ref key, expected, actual }
        if *key == bad_key && expected == wrong && actual == Checksum::of(&data));
    assert_kind(tier, "put with a wrong expected checksum", &err, is_mismatch);
    assert_absent(tier, &bad_key).await;

    let good_key = key(&prefix, "match");
    let opts = PutOpts { expected_checksum: Some(Checksum::of(&data)), ..PutOpts::default() };
    put_ok(tier, &good_key, &data, opts).await;
    assert_object(tier, &good_key, &data).await;
}

/// A body stream that yields some chunks and then fails makes the put fail, and leaves
/// nothing under the key (not even a partial object).
pub async fn check_failing_body_stores_nothing(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "failing-body").await;
    let key = key(&prefix, "broken");
    let data = test_bytes(600 * 1024, 5);
    let result = tier.put(&key, failing_stream(&data, 16 * 1024), PutOpts::default()).await;
    expect_err(tier, "put with a failing body stream", result);
    assert_absent(tier, &key).await;

    let result = tier.put(&key, failing_stream(&[], 1), PutOpts::default()).await;
    expect_err(tier, "put with a body stream failing at once", result);
    assert_absent(tier, &key).await;

    put_ok(tier, &key, &data, PutOpts::default()).await;
    assert_object(tier, &key, &data).await;
}

/// An overwrite whose body stream fails leaves the previous object intact.
pub async fn check_failed_overwrite_keeps_previous(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "failed-overwrite").await;
    let key = key(&prefix, "object");
    let data = test_bytes(10_000, 6);
    put_ok(tier, &key, &data, PutOpts::default()).await;
    let opts = PutOpts { overwrite: true, ..PutOpts::default() };
    let result = tier.put(&key, failing_stream(&test_bytes(50_000, 7), 1000), opts).await;
    expect_err(tier, "overwrite with a failing body stream", result);
    assert_object(tier, &key, &data).await;
}

/// Ranged reads return exactly the requested bytes (start, middle, end, empty ranges)
/// with the whole object's meta; ranges past the end fail with `InvalidRange`.
pub async fn check_ranged_reads(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "ranges").await;
    let key = key(&prefix, "object");
    let size = 700 * 1024 + 17;
    let data = test_bytes(size, 8);
    let meta = put_ok(tier, &key, &data, PutOpts::default()).await;
    let size = size as u64;
    let good: [Range<u64>; 8] =
        [0..10, 0..1, 1000..300_000, 262_140..262_150, size - 10..size, 5..5, size..size, 0..size];
    for range in good {
        assert_range(tier, &meta, &data, range).await;
    }
    for range in [
        size - 5..size + 1,
        size + 1..size + 2,
        size + 100..size + 100,
        Range { start: 10, end: 5 }, // reversed
    ] {
        let what = format!("ranged get of {range:?} on an object of {size} bytes");
        let result = tier.get(&key, GetOpts { range: Some(range) }).await;
        let err = expect_err(tier, &what, result);
        let is_invalid =
            matches!(err, TierError::InvalidRange { ref key, size: s, .. } if *key == meta.key && s == size);
        assert_kind(tier, &what, &err, is_invalid);
    }
}

/// `get` and `head` of a missing key fail with `NotFound` naming the key.
pub async fn check_not_found(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "not-found").await;
    assert_absent(tier, &key(&prefix, "never-written")).await;
    assert_absent(tier, &key(&prefix, "deep/never/written.dcm")).await;
    let result = tier.get(&key(&prefix, "ranged"), GetOpts { range: Some(0..1) }).await;
    let err = expect_err(tier, "ranged get of a missing key", result);
    assert_kind(tier, "ranged get of a missing key", &err, matches!(err, TierError::NotFound(_)));
}

/// A deleted object is gone from get, head and list; deleting again, or deleting a key
/// that never existed, succeeds; the key can then be written again without overwrite.
pub async fn check_delete(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "delete").await;
    let key = key(&prefix, "study/series/object.dcm");
    let data = test_bytes(2048, 9);
    put_ok(tier, &key, &data, PutOpts::default()).await;
    delete_ok(tier, &key).await;
    assert_absent(tier, &key).await;
    delete_ok(tier, &key).await;
    delete_ok(tier, &self::key(&prefix, "never/written")).await;
    let second = test_bytes(100, 10);
    put_ok(tier, &key, &second, PutOpts::default()).await;
    assert_object(tier, &key, &second).await;
}

/// `delete_many` deletes exactly the keys named (written together with `put_many` or one by
/// one), tolerates missing and repeated keys, leaves the other objects intact, and can be
/// called again with the same keys; an empty call succeeds.
pub async fn check_delete_many(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "delete-many").await;
    let batch: Vec<(ObjectKey, Bytes)> = (0..6u64)
        .map(|i| (key(&prefix, &format!("batch/{i}.dcm")), test_bytes(3000 + i as usize * 101, 40 + i)))
        .collect();
    put_many_ok(tier, &batch).await;
    let single: Vec<(ObjectKey, Bytes)> =
        (0..2u64).map(|i| (key(&prefix, &format!("single/{i}.dcm")), test_bytes(900 + i as usize, 50 + i))).collect();
    for (key, data) in &single {
        put_ok(tier, key, data, PutOpts::default()).await;
    }
    expect_ok(tier, "delete_many of no keys", tier.delete_many(Vec::new()).await);

    // Part of the batch, one single object, a missing key and a repeated key.
    let first: Vec<ObjectKey> = vec![
        batch[1].0.clone(),
        batch[4].0.clone(),
        single[0].0.clone(),
        key(&prefix, "never/written"),
        batch[1].0.clone(),
    ];
    expect_ok(tier, "delete_many of some keys", tier.delete_many(first.clone()).await);
    for (key, data) in batch.iter().chain(&single) {
        if first.contains(key) {
            assert_absent(tier, key).await;
        } else {
            assert_object(tier, key, data).await;
        }
    }
    expect_ok(tier, "delete_many repeated", tier.delete_many(first).await);

    // The rest: every object of the batch and of the prefix is gone.
    let all: Vec<ObjectKey> = batch.iter().chain(&single).map(|(k, _)| k.clone()).collect();
    expect_ok(tier, "delete_many of the remaining keys", tier.delete_many(all.clone()).await);
    for key in &all {
        assert_absent(tier, key).await;
    }
    assert_list(tier, &prefix, Vec::new()).await;
    // The keys can be written again.
    put_many_ok(tier, &batch[..2]).await;
    for (key, data) in &batch[..2] {
        assert_object(tier, key, data).await;
    }
}

/// `verify_many` answers each item in order: `Ok` for objects whose bytes hash to the given
/// checksum (several objects written together, and an empty one), `ChecksumMismatch` for a
/// wrong checksum and `NotFound` for a missing key; an empty call gives no answers.
pub async fn check_verify_many(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "verify-many").await;
    let (batch, single) = batch_and_single(tier, &prefix, (70_000, 313, 60), (12_345, 70)).await;

    let answers = expect_ok(tier, "verify_many of nothing", tier.verify_many(Vec::new()).await);
    assert!(answers.is_empty(), "[conformance] tier {}: verify_many of nothing answered {answers:?}", tier.name());

    let wrong = Checksum::of(b"not these bytes");
    let missing = key(&prefix, "never/written");
    let mut items: Vec<(ObjectKey, Checksum)> =
        batch.iter().chain([&single]).map(|(k, d)| (k.clone(), Checksum::of(d))).collect();
    items.insert(2, (batch[3].0.clone(), wrong));
    items.push((missing.clone(), Checksum::of(b"")));
    // Out of order and repeated.
    items.push((batch[0].0.clone(), Checksum::of(&batch[0].1)));
    let answers = expect_ok(tier, "verify_many", tier.verify_many(items.clone()).await);
    assert_eq!(
        answers.len(),
        items.len(),
        "[conformance] tier {}: verify_many gave {} answers for {} items",
        tier.name(),
        answers.len(),
        items.len()
    );
    for ((key, expected), answer) in items.iter().zip(answers) {
        let what = format!("verify_many of {key} against {expected}");
        if *key == missing {
            let err = expect_err(tier, &what, answer);
            assert_kind(tier, &what, &err, matches!(err, TierError::NotFound(ref k) if k == key));
        } else if *expected == wrong {
            let err = expect_err(tier, &what, answer);
            let is_mismatch =
                matches!(err, TierError::ChecksumMismatch { key: ref k, expected: e, .. } if k == key && e == wrong);
            assert_kind(tier, &what, &err, is_mismatch);
        } else {
            expect_ok(tier, &what, answer);
        }
    }
}

/// `get_many` answers each key in order with the object's metadata and exact bytes
/// (several objects written together, one written alone, an empty one, a key asked twice),
/// `NotFound` for a missing key; an empty call gives no answers.
pub async fn check_get_many(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "get-many").await;
    let (batch, single) = batch_and_single(tier, &prefix, (50_000, 517, 80), (23_456, 90)).await;

    let answers = expect_ok(tier, "get_many of nothing", tier.get_many(Vec::new()).await);
    assert!(answers.is_empty(), "[conformance] tier {}: get_many of nothing answered something", tier.name());

    let missing = key(&prefix, "never/written");
    // Out of order, with a gap, a repeat and a missing key.
    let mut wanted: Vec<(ObjectKey, Option<Bytes>)> =
        [4usize, 0, 2, 5].iter().map(|&i| (batch[i].0.clone(), Some(batch[i].1.clone()))).collect();
    wanted.push((single.0.clone(), Some(single.1.clone())));
    wanted.push((missing.clone(), None));
    wanted.push((batch[4].0.clone(), Some(batch[4].1.clone())));
    let keys = wanted.iter().map(|(k, _)| k.clone()).collect();
    let answers = expect_ok(tier, "get_many", tier.get_many(keys).await);
    assert_eq!(answers.len(), wanted.len(), "[conformance] tier {}: get_many answer count", tier.name());
    for ((key, expected), answer) in wanted.iter().zip(answers) {
        let what = format!("get_many of {key}");
        match expected {
            None => {
                let err = expect_err(tier, &what, answer);
                assert_kind(tier, &what, &err, matches!(err, TierError::NotFound(ref k) if k == key));
            }
            Some(data) => {
                let (meta, bytes) = expect_ok(tier, &what, answer);
                assert_eq!(&meta.key, key, "[conformance] tier {}: {what} named another key", tier.name());
                assert_eq!(meta.size, data.len() as u64, "[conformance] tier {}: {what} size", tier.name());
                assert_eq!(meta.checksum, Checksum::of(data), "[conformance] tier {}: {what} checksum", tier.name());
                assert!(bytes == *data, "[conformance] tier {}: {what} returned other bytes", tier.name());
            }
        }
    }
}

/// `list` filters by string prefix (not only whole segments), sorts by key, reports
/// size and checksum, and leaves out deleted objects.
pub async fn check_list(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "list").await;
    let names = ["a/1", "a/2", "a-b", "ab", "a.c/d/e", "b/x", "c"];
    let mut metas = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let data = test_bytes(100 + i, 20 + i as u64);
        metas.push(put_ok(tier, &key(&prefix, name), &data, PutOpts::default()).await);
    }
    let under = |wanted: &[&str]| -> Vec<ObjectMeta> {
        let mut out: Vec<ObjectMeta> = metas
            .iter()
            .filter(|m| wanted.iter().any(|w| *m.key.as_str() == format!("{prefix}{w}")))
            .cloned()
            .collect();
        out.sort_by(|x, y| x.key.cmp(&y.key));
        out
    };
    assert_list(tier, &format!("{prefix}a"), under(&["a/1", "a/2", "a-b", "ab", "a.c/d/e"])).await;
    assert_list(tier, &format!("{prefix}a/"), under(&["a/1", "a/2"])).await;
    assert_list(tier, &format!("{prefix}a."), under(&["a.c/d/e"])).await;
    assert_list(tier, &format!("{prefix}a.c/d/"), under(&["a.c/d/e"])).await;
    assert_list(tier, &format!("{prefix}b/x"), under(&["b/x"])).await;
    assert_list(tier, &format!("{prefix}nothing"), Vec::new()).await;
    assert_list(tier, &prefix, under(&names)).await;

    delete_ok(tier, &key(&prefix, "a/2")).await;
    assert_list(tier, &format!("{prefix}a/"), under(&["a/1"])).await;

    let all = list_ok(tier, None).await;
    assert_sorted(tier, &all, "list(None)");
    for meta in under(&["a/1", "a-b", "ab", "a.c/d/e", "b/x", "c"]) {
        assert!(all.contains(&meta), "[conformance] tier {}: list(None) lacks {meta:?}", tier.name());
    }
    assert!(
        all.iter().all(|m| m.key.as_str() != format!("{prefix}a/2")),
        "[conformance] tier {}: list(None) still holds deleted {prefix}a/2",
        tier.name()
    );
}

/// 32 puts of distinct keys (sharing new parent directories) run concurrently; all
/// succeed and every object reads back byte-exact.
pub async fn check_concurrent_puts(tier: &dyn Tier) {
    let prefix = fresh_prefix(tier, "concurrent").await;
    let objects: Vec<(ObjectKey, Bytes)> = (0..32u64)
        .map(|i| {
            (key(&prefix, &format!("shared/dir/{}/{i}.dcm", i % 4)), test_bytes(10_000 + i as usize * 997, 100 + i))
        })
        .collect();
    let puts = objects.iter().map(|(key, data)| tier.put(key, chunked(data, 1024), PutOpts::default()));
    let results = futures::future::join_all(puts).await;
    for ((key, data), result) in objects.iter().zip(results) {
        let meta = expect_ok(tier, &format!("concurrent put of {key}"), result);
        assert_meta(tier, "concurrent put", &meta, key, data);
    }
    for (key, data) in &objects {
        assert_object(tier, key, data).await;
    }
    let listed = list_ok(tier, Some(&prefix)).await;
    assert_eq!(
        listed.len(),
        objects.len(),
        "[conformance] tier {}: list of {prefix} after 32 concurrent puts",
        tier.name()
    );
}

/// Puts an object, lets `corrupt` damage its stored bytes behind the tier's back, and
/// checks that `head` still answers with the original checksum while a full `get` ends
/// with `ChecksumMismatch`.
///
/// `corrupt` must change the object's bytes without updating the checksum the tier
/// keeps for it (e.g. flip a byte of the file holding it).
pub async fn check_corruption_detected(tier: &dyn Tier, corrupt: impl FnOnce(&ObjectKey)) {
    let prefix = fresh_prefix(tier, "corruption").await;
    let key = key(&prefix, "victim.dcm");
    let data = test_bytes(600 * 1024 + 3, 11);
    let meta = put_ok(tier, &key, &data, PutOpts::default()).await;
    corrupt(&key);

    let head = expect_ok(tier, &format!("head of corrupted {key}"), tier.head(&key).await);
    assert_eq!(
        head.checksum,
        meta.checksum,
        "[conformance] tier {}: head of corrupted {key} changed its checksum",
        tier.name()
    );
    let res = expect_ok(tier, &format!("get of corrupted {key}"), tier.get(&key, GetOpts::default()).await);
    let what = format!("full get of corrupted {key}");
    let err = expect_err(tier, &what, collect_stream(res.body).await);
    let is_mismatch = matches!(err, TierError::ChecksumMismatch { key: ref k, expected, actual }
        if *k == key && expected == meta.checksum && actual != meta.checksum);
    assert_kind(tier, &what, &err, is_mismatch);
    let what = format!("verify_many of corrupted {key}");
    let answers = expect_ok(tier, &what, tier.verify_many(vec![(key.clone(), meta.checksum)]).await);
    let err = match answers.into_iter().next() {
        Some(answer) => expect_err(tier, &what, answer),
        None => panic!("[conformance] tier {}: {what} gave no answer", tier.name()),
    };
    let is_mismatch = matches!(err, TierError::ChecksumMismatch { key: ref k, expected, actual }
        if *k == key && expected == meta.checksum && actual != meta.checksum);
    assert_kind(tier, &what, &err, is_mismatch);
    let what = format!("get_many of corrupted {key}");
    let answers = expect_ok(tier, &what, tier.get_many(vec![key.clone()]).await);
    let err = match answers.into_iter().next() {
        Some(answer) => expect_err(tier, &what, answer),
        None => panic!("[conformance] tier {}: {what} gave no answer", tier.name()),
    };
    let is_mismatch = matches!(err, TierError::ChecksumMismatch { key: ref k, expected, actual }
        if *k == key && expected == meta.checksum && actual != meta.checksum);
    assert_kind(tier, &what, &err, is_mismatch);
    delete_ok(tier, &key).await;
}

// ---------------------------------------------------------------------------------------
// Helpers

/// The key prefix of one check, emptied of anything an earlier run left behind.
async fn fresh_prefix(tier: &dyn Tier, check: &str) -> String {
    let prefix = format!("{ROOT}/{check}/");
    for meta in list_ok(tier, Some(&prefix)).await {
        delete_ok(tier, &meta.key).await;
    }
    prefix
}

/// `prefix` + `name` as a key; panics on an invalid key (a bug in the suite).
fn key(prefix: &str, name: &str) -> ObjectKey {
    match ObjectKey::new(format!("{prefix}{name}")) {
        Ok(key) => key,
        Err(e) => panic!("[conformance] bad test key: {e}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), different for each `seed`.
fn test_bytes(len: usize, seed: u64) -> Bytes {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Chunk sizes cycled through by [`chunked`]: tiny, odd and page-sized pieces.
fn chunk_sizes(max: usize) -> impl Iterator<Item = usize> {
    [1usize, 7, 100, 4096, max].into_iter().map(move |s| s.clamp(1, max.max(1))).cycle()
}

/// `data` split into chunks of uneven sizes up to `max` bytes.
fn chunks(data: &Bytes, max: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut sizes = chunk_sizes(max);
    while offset < data.len() {
        let size = sizes.next().unwrap_or(1).min(data.len() - offset);
        out.push(data.slice(offset..offset + size));
        offset += size;
    }
    out
}

/// `data` as a body stream of many chunks of uneven sizes up to `max` bytes.
fn chunked(data: &Bytes, max: usize) -> ByteStream {
    stream::iter(chunks(data, max).into_iter().map(Ok)).boxed()
}

/// A body stream that yields `data` in chunks and then fails with `TierError::Body`.
fn failing_stream(data: &[u8], max: usize) -> ByteStream {
    let failure = stream::once(async { Err(TierError::Body("conformance: client went away".into())) });
    chunked(&Bytes::copy_from_slice(data), max).chain(failure).boxed()
}

/// Unwraps a result, panicking with the tier's name and what was being done.
fn expect_ok<T>(tier: &dyn Tier, what: &str, result: Result<T, TierError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("[conformance] tier {}: {what} failed: {e} ({e:?})", tier.name()),
    }
}

/// Unwraps an expected error, panicking if the operation succeeded.
fn expect_err<T: Debug>(tier: &dyn Tier, what: &str, result: Result<T, TierError>) -> TierError {
    match result {
        Ok(value) => {
            let mut got = format!("{value:?}");
            if got.len() > 200 {
                let cut = (0..=200).rev().find(|&i| got.is_char_boundary(i)).unwrap_or(0);
                got.truncate(cut);
                got.push_str("...");
            }
            panic!("[conformance] tier {}: {what} succeeded but should fail (got {got})", tier.name())
        }
        Err(e) => e,
    }
}

/// Panics unless an error is of the expected kind.
fn assert_kind(tier: &dyn Tier, what: &str, err: &TierError, expected_kind: bool) {
    assert!(expected_kind, "[conformance] tier {}: {what} failed with the wrong error: {err} ({err:?})", tier.name());
}

/// Panics unless `meta` describes `data` under `key`.
fn assert_meta(tier: &dyn Tier, what: &str, meta: &ObjectMeta, key: &ObjectKey, data: &[u8]) {
    let expected = ObjectMeta { key: key.clone(), size: data.len() as u64, checksum: Checksum::of(data) };
    assert_eq!(meta, &expected, "[conformance] tier {}: {what} returned wrong meta", tier.name());
}

/// Panics unless metas are sorted by key without duplicates.
fn assert_sorted(tier: &dyn Tier, metas: &[ObjectMeta], what: &str) {
    let sorted = metas.windows(2).all(|w| w[0].key < w[1].key);
    assert!(sorted, "[conformance] tier {}: {what} is not sorted by key: {metas:?}", tier.name());
}

/// Puts `data` in uneven chunks and checks the returned meta.
/// Writes five objects and an empty one under `prefix/batch/` with one `put_many` (sizes
/// `base + i * step`, seeds `seed + i`), and one more object alone (`single`: size and seed).
async fn batch_and_single(
    tier: &dyn Tier,
    prefix: &str,
    (base, step, seed): (usize, usize, u64),
    single: (usize, u64),
) -> (Vec<(ObjectKey, Bytes)>, (ObjectKey, Bytes)) {
    let mut batch: Vec<(ObjectKey, Bytes)> = (0..5u64)
        .map(|i| (key(prefix, &format!("batch/{i}.dcm")), test_bytes(base + i as usize * step, seed + i)))
        .collect();
    batch.push((key(prefix, "batch/empty.dcm"), Bytes::new()));
    put_many_ok(tier, &batch).await;
    let single = (key(prefix, "single.dcm"), test_bytes(single.0, single.1));
    put_ok(tier, &single.0, &single.1, PutOpts::default()).await;
    (batch, single)
}

async fn put_ok(tier: &dyn Tier, key: &ObjectKey, data: &Bytes, opts: PutOpts) -> ObjectMeta {
    let meta = expect_ok(tier, &format!("put of {key}"), tier.put(key, chunked(data, 64 * 1024), opts).await);
    assert_meta(tier, &format!("put of {key}"), &meta, key, data);
    meta
}

/// Puts objects with one `put_many` and checks the returned metas.
async fn put_many_ok(tier: &dyn Tier, objects: &[(ObjectKey, Bytes)]) {
    let items = objects.iter().map(|(k, d)| (k.clone(), chunked(d, 16 * 1024), PutOpts::default())).collect();
    let what = format!("put_many of {} objects", objects.len());
    let metas = expect_ok(tier, &what, tier.put_many(items).await);
    assert_eq!(metas.len(), objects.len(), "[conformance] tier {}: {what} returned {} metas", tier.name(), metas.len());
    for ((key, data), meta) in objects.iter().zip(&metas) {
        assert_meta(tier, &what, meta, key, data);
    }
}

/// Deletes a key, panicking on failure.
async fn delete_ok(tier: &dyn Tier, key: &ObjectKey) {
    expect_ok(tier, &format!("delete of {key}"), tier.delete(key).await);
}

/// Lists a prefix, panicking on failure or on an unsorted answer.
async fn list_ok(tier: &dyn Tier, prefix: Option<&str>) -> Vec<ObjectMeta> {
    let what = format!("list({prefix:?})");
    let metas = expect_ok(tier, &what, tier.list(prefix).await);
    assert_sorted(tier, &metas, &what);
    metas
}

/// Panics unless listing `prefix` gives exactly `expected`.
async fn assert_list(tier: &dyn Tier, prefix: &str, expected: Vec<ObjectMeta>) {
    let listed = list_ok(tier, Some(prefix)).await;
    assert_eq!(listed, expected, "[conformance] tier {}: list(Some({prefix:?})) is wrong", tier.name());
}

/// Panics unless `key` holds exactly `data`, as seen by head, a full get and list.
async fn assert_object(tier: &dyn Tier, key: &ObjectKey, data: &Bytes) {
    let head = expect_ok(tier, &format!("head of {key}"), tier.head(key).await);
    assert_meta(tier, &format!("head of {key}"), &head, key, data);
    let res = expect_ok(tier, &format!("get of {key}"), tier.get(key, GetOpts::default()).await);
    assert_meta(tier, &format!("get of {key}"), &res.meta, key, data);
    let body = expect_ok(tier, &format!("reading the body of {key}"), collect_stream(res.body).await);
    assert_bytes(tier, &format!("full get of {key}"), &body, data);
    let listed = list_ok(tier, Some(key.as_str())).await;
    assert!(
        listed.contains(&head),
        "[conformance] tier {}: list(Some({key:?})) lacks the object: {listed:?}",
        tier.name()
    );
}

/// Panics unless a ranged get returns exactly `data[range]` and the whole object's meta.
async fn assert_range(tier: &dyn Tier, meta: &ObjectMeta, data: &Bytes, range: Range<u64>) {
    let what = format!("ranged get of {range:?} from {}", meta.key);
    let res = expect_ok(tier, &what, tier.get(&meta.key, GetOpts { range: Some(range.clone()) }).await);
    assert_eq!(&res.meta, meta, "[conformance] tier {}: {what} returned wrong meta", tier.name());
    let body = expect_ok(tier, &what, collect_stream(res.body).await);
    assert_bytes(tier, &what, &body, &data[range.start as usize..range.end as usize]);
}

/// Panics unless `key` is absent from get, head and list.
async fn assert_absent(tier: &dyn Tier, key: &ObjectKey) {
    let what = format!("head of absent {key}");
    let err = expect_err(tier, &what, tier.head(key).await);
    assert_kind(tier, &what, &err, matches!(err, TierError::NotFound(ref k) if k == key));
    let what = format!("get of absent {key}");
    let err = expect_err(tier, &what, tier.get(key, GetOpts::default()).await);
    assert_kind(tier, &what, &err, matches!(err, TierError::NotFound(ref k) if k == key));
    let listed = list_ok(tier, Some(key.as_str())).await;
    assert!(
        listed.iter().all(|m| &m.key != key),
        "[conformance] tier {}: list still holds absent {key}: {listed:?}",
        tier.name()
    );
}

/// Panics unless two byte strings are equal, reporting the first difference.
fn assert_bytes(tier: &dyn Tier, what: &str, got: &[u8], expected: &[u8]) {
    if got == expected {
        return;
    }
    let first_diff = got.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(got.len().min(expected.len()));
    panic!(
        "[conformance] tier {}: {what} returned wrong bytes: {} bytes instead of {}, first difference at offset {first_diff}",
        tier.name(),
        got.len(),
        expected.len()
    );
}

/// Puts `data` in chunks of at most `chunk_max` bytes, then checks it through head, get and list.
async fn round_trip(tier: &dyn Tier, key: &ObjectKey, data: Bytes, chunk_max: usize) {
    let meta =
        expect_ok(tier, &format!("put of {key}"), tier.put(key, chunked(&data, chunk_max), PutOpts::default()).await);
    assert_meta(tier, &format!("put of {key}"), &meta, key, &data);
    assert_object(tier, key, &data).await;
}
