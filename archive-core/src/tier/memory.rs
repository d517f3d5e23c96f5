//! An in-memory [`Tier`] for unit tests.
//!
//! Objects live in a map behind a mutex and vanish with the tier. It follows the whole
//! [`Tier`] contract (checksums verified on full reads, nothing stored on a failed put)
//! and can damage an object on purpose with [`MemoryTier::corrupt_for_test`].

use super::{
    verify_stream, Availability, ByteStream, GetOpts, GetResult, ObjectKey, ObjectMeta, PutOpts, RecallStatus, Tier,
    TierCapabilities, TierError, TierName,
};
use crate::checksum::{Checksum, ChecksumHasher};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

/// Size of the chunks a [`MemoryTier`] read is delivered in, so that readers see
/// multi-chunk streams as they would from a real tier.
const READ_CHUNK: usize = 64 * 1024;

/// One stored object: its bytes and the checksum computed when it was written.
#[derive(Clone)]
struct Stored {
    bytes: Bytes,
    checksum: Checksum,
}

/// A tier that keeps its objects in memory, for unit tests.
pub struct MemoryTier {
    name: TierName,
    objects: Mutex<BTreeMap<ObjectKey, Stored>>,
    capabilities: TierCapabilities,
    /// Keys whose recall was asked for, with when it was asked.
    recalls: Mutex<BTreeMap<ObjectKey, std::time::Instant>>,
    /// How long a recall takes.
    recall_delay: std::time::Duration,
}

impl MemoryTier {
    /// An empty in-memory tier.
    pub fn new(name: TierName) -> Self {
        let capabilities = TierCapabilities {
            availability: Availability::Online,
            ranged_reads: true,
            needs_recall: false,
            max_object_size: None,
            batch_bytes: None,
        };
        Self {
            name,
            objects: Mutex::new(BTreeMap::new()),
            capabilities,
            recalls: Mutex::new(BTreeMap::new()),
            recall_delay: std::time::Duration::from_millis(500),
        }
    }

    /// An empty in-memory tier that reports other capabilities, to stand in for a cold tier
    /// in unit tests: with `needs_recall`, reads fail with [`TierError::NeedsRecall`].
    pub fn with_capabilities(name: TierName, capabilities: TierCapabilities) -> Self {
        Self { capabilities, ..Self::new(name) }
    }

    /// Whether a recall of `key` was asked for and has had time to finish.
    fn recalled(&self, key: &ObjectKey) -> bool {
        self.recalls.lock().get(key).is_some_and(|t| t.elapsed() >= self.recall_delay)
    }

    /// Damages the stored bytes of `key` without updating its stored checksum, so that
    /// the next full read ends with [`TierError::ChecksumMismatch`].
    ///
    /// Flips every bit of the middle byte (an empty object gains one byte instead).
    /// Returns false if there is no object under the key.
    pub fn corrupt_for_test(&self, key: &ObjectKey) -> bool {
        let mut objects = self.objects.lock();
        let Some(stored) = objects.get_mut(key) else {
            return false;
        };
        let mut bytes = stored.bytes.to_vec();
        if bytes.is_empty() {
            bytes.push(0);
        } else {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
        }
        stored.bytes = Bytes::from(bytes);
        true
    }

    /// The stored object under `key`, or `NotFound`.
    fn lookup(&self, key: &ObjectKey) -> Result<Stored, TierError> {
        self.objects.lock().get(key).cloned().ok_or_else(|| TierError::NotFound(key.clone()))
    }

    /// Fails with `AlreadyExists` if `key` is taken and overwriting was not asked for.
    fn check_vacant(&self, key: &ObjectKey, overwrite: bool) -> Result<(), TierError> {
        if !overwrite && self.objects.lock().contains_key(key) {
            return Err(TierError::AlreadyExists(key.clone()));
        }
        Ok(())
    }
}

impl fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTier").field("name", &self.name).field("objects", &self.objects.lock().len()).finish()
    }
}

/// Reads a whole body stream into memory, hashing it; fails on the first stream error.
async fn read_body(mut body: ByteStream) -> Result<(Bytes, Checksum), TierError> {
    let mut buf = BytesMut::new();
    let mut hasher = ChecksumHasher::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        buf.extend_from_slice(&chunk);
    }
    Ok((buf.freeze(), hasher.finish()))
}

/// `bytes` as a stream of chunks of at most [`READ_CHUNK`] bytes.
fn chunked(bytes: Bytes) -> ByteStream {
    let chunks: Vec<Result<Bytes, TierError>> = (0..bytes.len())
        .step_by(READ_CHUNK)
        .map(|start| Ok(bytes.slice(start..bytes.len().min(start + READ_CHUNK))))
        .collect();
    futures::stream::iter(chunks).boxed()
}

/// Checks that `range` lies inside an object of `size` bytes and converts it to indices.
fn checked_range(key: &ObjectKey, range: &Range<u64>, size: usize) -> Result<Range<usize>, TierError> {
    let invalid =
        || TierError::InvalidRange { key: key.clone(), start: range.start, end: range.end, size: size as u64 };
    if range.start > range.end || range.end > size as u64 {
        return Err(invalid());
    }
    let start = usize::try_from(range.start).map_err(|_| invalid())?;
    let end = usize::try_from(range.end).map_err(|_| invalid())?;
    Ok(start..end)
}

#[async_trait]
impl Tier for MemoryTier {
    fn name(&self) -> &TierName {
        &self.name
    }

    fn capabilities(&self) -> TierCapabilities {
        self.capabilities.clone()
    }

    async fn put(&self, key: &ObjectKey, body: ByteStream, opts: PutOpts) -> Result<ObjectMeta, TierError> {
        self.check_vacant(key, opts.overwrite)?;
        let (bytes, checksum) = read_body(body).await?;
        if let Some(expected) = opts.expected_checksum {
            if expected != checksum {
                return Err(TierError::ChecksumMismatch { key: key.clone(), expected, actual: checksum });
            }
        }
        let meta = ObjectMeta { key: key.clone(), size: bytes.len() as u64, checksum };
        let mut objects = self.objects.lock();
        if !opts.overwrite && objects.contains_key(key) {
            return Err(TierError::AlreadyExists(key.clone()));
        }
        objects.insert(key.clone(), Stored { bytes, checksum });
        Ok(meta)
    }

    async fn get(&self, key: &ObjectKey, opts: GetOpts) -> Result<GetResult, TierError> {
        let stored = self.lookup(key)?;
        if self.capabilities.needs_recall && !self.recalled(key) {
            return Err(TierError::NeedsRecall(key.clone()));
        }
        let meta = ObjectMeta { key: key.clone(), size: stored.bytes.len() as u64, checksum: stored.checksum };
        let body = match opts.range {
            Some(range) => {
                let range = checked_range(key, &range, stored.bytes.len())?;
                chunked(stored.bytes.slice(range))
            }
            None => verify_stream(key.clone(), stored.checksum, chunked(stored.bytes)),
        };
        Ok(GetResult { meta, body })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, TierError> {
        let stored = self.lookup(key)?;
        Ok(ObjectMeta { key: key.clone(), size: stored.bytes.len() as u64, checksum: stored.checksum })
    }

    async fn recall(&self, key: &ObjectKey) -> Result<RecallStatus, TierError> {
        self.lookup(key)?;
        if !self.capabilities.needs_recall {
            return Ok(RecallStatus::Ready);
        }
        // Like an archive class: the object becomes readable a while after the first request.
        self.recalls.lock().entry(key.clone()).or_insert_with(std::time::Instant::now);
        Ok(if self.recalled(key) { RecallStatus::Ready } else { RecallStatus::InProgress })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), TierError> {
        self.objects.lock().remove(key);
        self.recalls.lock().remove(key);
        Ok(())
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>, TierError> {
        let prefix = prefix.unwrap_or("");
        let objects = self.objects.lock();
        let metas = objects
            .iter()
            .filter(|(key, _)| key.as_str().starts_with(prefix))
            .map(|(key, stored)| ObjectMeta {
                key: key.clone(),
                size: stored.bytes.len() as u64,
                checksum: stored.checksum,
            })
            .collect();
        Ok(metas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::conformance;

    fn tier() -> MemoryTier {
        MemoryTier::new(TierName::new("memory").expect("valid tier name"))
    }

    #[tokio::test]
    async fn memory_tier_passes_the_conformance_suite() {
        conformance::run_all(&tier()).await;
    }

    #[tokio::test]
    async fn conformance_suite_can_run_twice_on_one_tier() {
        let tier = tier();
        conformance::run_all(&tier).await;
        conformance::run_all(&tier).await;
    }

    #[tokio::test]
    async fn memory_tier_detects_corruption() {
        let tier = tier();
        conformance::check_corruption_detected(&tier, |key| {
            assert!(tier.corrupt_for_test(key), "corrupt_for_test found no object under {key}");
        })
        .await;
    }

    #[test]
    fn corrupting_a_missing_key_reports_false() {
        let key = ObjectKey::new("missing").expect("valid key");
        assert!(!tier().corrupt_for_test(&key));
    }
}
