//! The warm tier: objects appended, zstd-compressed, to large segment files on local disk,
//! located through an index in RocksDB.
//!
//! # Layout
//! - `root/segments/<id>.seg`: append-only segment files (a new one past `segment_bytes`);
//! - `root/index`: RocksDB, object key → [`Entry`] (segment, offset, lengths, BLAKE3 of the
//!   original bytes).
//!
//! # Durability
//! A put compresses the object, appends it to the active segment and fdatasyncs it, then
//! writes the index entry with a synced WAL; only then does it return. A crash before the
//! index write leaves unreferenced bytes at the end of a segment, never a dangling entry.
//! Puts are serialized on the active segment (compression happens before, in parallel).
//! A delete removes the index entry; the space it held is reclaimed by segment compaction,
//! which is not implemented yet.

use archive_core::checksum::Checksum;
use archive_core::tier::{
    bytes_stream, verify_stream, Availability, ByteStream, GetOpts, GetResult, ObjectKey, ObjectMeta, PutOpts, Tier,
    TierCapabilities, TierError, TierName,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A new segment starts when the active one reaches this size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;
/// zstd level: fast, about 2× on CT pixel data.
const ZSTD_LEVEL: i32 = 3;

/// Where one object lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Segment number.
    pub segment: u64,
    /// Offset of the compressed bytes in the segment.
    pub offset: u64,
    /// Length of the compressed bytes.
    pub stored_len: u64,
    /// Length of the object.
    pub size: u64,
    /// BLAKE3 of the object.
    pub checksum: Checksum,
}

struct Active {
    id: u64,
    file: fs::File,
    len: u64,
}

struct Inner {
    name: TierName,
    root: PathBuf,
    db: rocksdb::DB,
    active: parking_lot::Mutex<Active>,
    segment_bytes: u64,
}

/// The warm tier.
#[derive(Clone)]
pub struct WarmTier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WarmTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmTier").field("name", &self.inner.name).field("root", &self.inner.root).finish()
    }
}

fn segment_path(root: &Path, id: u64) -> PathBuf {
    root.join("segments").join(format!("{id:016x}.seg"))
}

impl WarmTier {
    /// Opens (creating if needed) a warm tier rooted at `root`.
    pub fn open(name: TierName, root: PathBuf) -> Result<WarmTier, TierError> {
        Self::open_with(name, root, DEFAULT_SEGMENT_BYTES)
    }

    /// Opens with a segment size (small sizes exercise segment rotation in tests).
    pub fn open_with(name: TierName, root: PathBuf, segment_bytes: u64) -> Result<WarmTier, TierError> {
        let io = |what: &str, e: std::io::Error| TierError::io(&name, what.to_string(), e);
        let segments = root.join("segments");
        fs::create_dir_all(&segments).map_err(|e| io("creating the segment directory", e))?;
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = rocksdb::DB::open(&opts, root.join("index"))
            .map_err(|e| TierError::Other(format!("tier {name}: cannot open the index: {e}")))?;
        let last = fs::read_dir(&segments)
            .map_err(|e| io("listing segments", e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                u64::from_str_radix(name.strip_suffix(".seg")?, 16).ok()
            })
            .max();
        let id = last.unwrap_or(1);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(segment_path(&root, id))
            .map_err(|e| io("opening the active segment", e))?;
        let len = file.metadata().map_err(|e| io("sizing the active segment", e))?.len();
        fs::File::open(&segments).and_then(|d| d.sync_all()).map_err(|e| io("syncing the segment directory", e))?;
        let inner = Inner { name, root, db, active: parking_lot::Mutex::new(Active { id, file, len }), segment_bytes };
        Ok(WarmTier { inner: Arc::new(inner) })
    }

    /// The tier's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where an object's compressed bytes lie: segment file, offset, length (for tests that
    /// damage them).
    pub fn location_of(&self, key: &ObjectKey) -> Option<(PathBuf, u64, u64)> {
        let e = self.inner.entry(key).ok()??;
        Some((segment_path(&self.inner.root, e.segment), e.offset, e.stored_len))
    }
}

impl Inner {
    fn entry(&self, key: &ObjectKey) -> Result<Option<Entry>, TierError> {
        match self.db.get(key.as_str()) {
            Ok(Some(v)) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| TierError::Other(format!("tier {}: corrupt index entry for {key}: {e}", self.name))),
            Ok(None) => Ok(None),
            Err(e) => Err(TierError::Other(format!("tier {}: index read failed: {e}", self.name))),
        }
    }

    fn io(&self, what: String, e: std::io::Error) -> TierError {
        TierError::io(&self.name, what, e)
    }

    /// Appends compressed bytes and indexes them; refuses a taken key unless `overwrite`.
    fn append(
        &self,
        key: &ObjectKey,
        stored: &[u8],
        size: u64,
        checksum: Checksum,
        overwrite: bool,
    ) -> Result<(), TierError> {
        let mut active = self.active.lock();
        if !overwrite && self.entry(key)?.is_some() {
            return Err(TierError::AlreadyExists(key.clone()));
        }
        if active.len > 0 && active.len + stored.len() as u64 > self.segment_bytes {
            let id = active.id + 1;
            let path = segment_path(&self.root, id);
            let file = fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .read(true)
                .open(&path)
                .map_err(|e| self.io(format!("creating segment {}", path.display()), e))?;
            fs::File::open(self.root.join("segments"))
                .and_then(|d| d.sync_all())
                .map_err(|e| self.io("syncing the segment directory".into(), e))?;
            *active = Active { id, file, len: 0 };
        }
        let offset = active.len;
        let write = active.file.write_all(stored).and_then(|()| active.file.sync_data());
        if let Err(e) = write {
            // Whatever was written is unreferenced; later appends go after it.
            active.len = active.file.metadata().map(|m| m.len()).unwrap_or(active.len);
            return Err(self.io(format!("appending {key}"), e));
        }
        active.len += stored.len() as u64;
        let entry = Entry { segment: active.id, offset, stored_len: stored.len() as u64, size, checksum };
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db
            .put_opt(key.as_str(), serde_json::to_vec(&entry).expect("entries serialize"), &wo)
            .map_err(|e| TierError::Other(format!("tier {}: index write failed: {e}", self.name)))
    }

    /// Reads and decompresses an object; a damaged frame is a checksum mismatch.
    fn read(&self, key: &ObjectKey, e: &Entry) -> Result<Vec<u8>, TierError> {
        let path = segment_path(&self.root, e.segment);
        let file = fs::File::open(&path).map_err(|err| self.io(format!("opening {}", path.display()), err))?;
        let mut raw = vec![0u8; e.stored_len as usize];
        file.read_exact_at(&mut raw, e.offset).map_err(|err| self.io(format!("reading {key}"), err))?;
        match zstd::bulk::decompress(&raw, e.size as usize) {
            Ok(data) if data.len() as u64 == e.size => Ok(data),
            _ => {
                Err(TierError::ChecksumMismatch { key: key.clone(), expected: e.checksum, actual: Checksum::of(&raw) })
            }
        }
    }
}

/// Runs file and index work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TierError> + Send + 'static,
) -> Result<T, TierError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| TierError::Other(format!("worker failed: {e}")))?
}

#[async_trait]
impl Tier for WarmTier {
    fn name(&self) -> &TierName {
        &self.inner.name
    }

    fn capabilities(&self) -> TierCapabilities {
        TierCapabilities {
            availability: Availability::Online,
            ranged_reads: true,
            needs_recall: false,
            max_object_size: Some(self.inner.segment_bytes.max(4 << 30)),
            batch_bytes: None,
        }
    }

    async fn put(&self, key: &ObjectKey, mut body: ByteStream, opts: PutOpts) -> Result<ObjectMeta, TierError> {
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => data.extend_from_slice(&c),
                Err(e) => return Err(TierError::Body(e.to_string())),
            }
        }
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || {
            let checksum = Checksum::of(&data);
            if let Some(expected) = opts.expected_checksum {
                if expected != checksum {
                    return Err(TierError::ChecksumMismatch { key, expected, actual: checksum });
                }
            }
            let stored =
                zstd::bulk::compress(&data, ZSTD_LEVEL).map_err(|e| inner.io(format!("compressing {key}"), e))?;
            inner.append(&key, &stored, data.len() as u64, checksum, opts.overwrite)?;
            Ok(ObjectMeta { key, size: data.len() as u64, checksum })
        })
        .await
    }

    async fn get(&self, key: &ObjectKey, opts: GetOpts) -> Result<GetResult, TierError> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || {
            let e = inner.entry(&key)?.ok_or_else(|| TierError::NotFound(key.clone()))?;
            let meta = ObjectMeta { key: key.clone(), size: e.size, checksum: e.checksum };
            if let Some(r) = &opts.range {
                if r.start > r.end || r.end > e.size {
                    return Err(TierError::InvalidRange { key, start: r.start, end: r.end, size: e.size });
                }
            }
            let body = match inner.read(&key, &e) {
                Ok(data) => {
                    let data = Bytes::from(data);
                    match opts.range {
                        Some(r) => bytes_stream(data.slice(r.start as usize..r.end as usize)),
                        None => verify_stream(key, e.checksum, bytes_stream(data)),
                    }
                }
                Err(err) => futures::stream::once(async move { Err(err) }).boxed(),
            };
            Ok(GetResult { meta, body })
        })
        .await
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, TierError> {
        let e = self.inner.entry(key)?.ok_or_else(|| TierError::NotFound(key.clone()))?;
        Ok(ObjectMeta { key: key.clone(), size: e.size, checksum: e.checksum })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), TierError> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || {
            let _serialized = inner.active.lock();
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            inner
                .db
                .delete_opt(key.as_str(), &wo)
                .map_err(|e| TierError::Other(format!("tier {}: index delete failed: {e}", inner.name)))
        })
        .await
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>, TierError> {
        let inner = self.inner.clone();
        let prefix = prefix.unwrap_or("").to_string();
        blocking(move || {
            let mut out = Vec::new();
            let mode = rocksdb::IteratorMode::From(prefix.as_bytes(), rocksdb::Direction::Forward);
            for item in inner.db.iterator(mode) {
                let (k, v) =
                    item.map_err(|e| TierError::Other(format!("tier {}: index scan failed: {e}", inner.name)))?;
                if !k.starts_with(prefix.as_bytes()) {
                    break;
                }
                let key = ObjectKey::new(String::from_utf8_lossy(&k).into_owned())
                    .map_err(|e| TierError::Other(format!("tier {}: bad key in the index: {e}", inner.name)))?;
                let e: Entry = serde_json::from_slice(&v)
                    .map_err(|e| TierError::Other(format!("tier {}: corrupt index entry: {e}", inner.name)))?;
                out.push(ObjectMeta { key, size: e.size, checksum: e.checksum });
            }
            Ok(out)
        })
        .await
    }
}
