//! The storage tier abstraction: one trait that every object store implements.
//!
//! `archive-core` knows no implementation: the hot, warm, S3 and tape tiers live in
//! `tier-plugins`. An in-memory tier ([`memory::MemoryTier`]) serves unit tests, and
//! [`conformance`] is the one test suite every implementation runs.
//!
//! # Contract shared by all tiers
//! - An object is named by an [`ObjectKey`] and is immutable once written.
//! - Every object carries a BLAKE3 [`Checksum`] computed while it is written; a full
//!   read verifies it and ends the stream with [`TierError::ChecksumMismatch`] on a difference.
//! - A successful [`Tier::put`] means the object is durable (on local disks: fsynced
//!   data and directory entry).
//! - A failed put leaves no object behind under the key.

pub mod conformance;
pub mod memory;
mod set;

pub use set::{effective_availability, TierSet, TierSetError};

use crate::checksum::Checksum;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;

/// The name of a configured tier instance (`hot`, `warm`, `s3-glacier`...).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TierName(String);

/// A tier name that is empty, too long or holds characters other than `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid tier name {0:?}: use 1 to 64 characters of letters, digits, '-' and '_'")]
pub struct TierNameError(String);

impl TierName {
    /// Validates a tier name.
    pub fn new(s: impl Into<String>) -> Result<Self, TierNameError> {
        let s = s.into();
        let ok = !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(Self(s))
        } else {
            Err(TierNameError(s))
        }
    }
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for TierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for TierName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TierName({})", self.0)
    }
}
impl TryFrom<String> for TierName {
    type Error = TierNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}
impl From<TierName> for String {
    fn from(t: TierName) -> String {
        t.0
    }
}

/// The name of an object inside a tier: a relative path of `/`-separated segments.
///
/// Each segment is 1 to 128 characters of `[A-Za-z0-9._~-]`, and is neither `.` nor
/// `..`; the whole key is at most 512 characters. A key can therefore never escape a
/// tier's root directory or bucket prefix.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectKey(String);

/// Why a string is not a valid [`ObjectKey`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid object key {key:?}: {reason}")]
pub struct ObjectKeyError {
    key: String,
    reason: &'static str,
}

impl ObjectKey {
    /// Validates an object key.
    pub fn new(s: impl Into<String>) -> Result<Self, ObjectKeyError> {
        let key = s.into();
        let err = |reason| ObjectKeyError { key: key.clone(), reason };
        if key.is_empty() || key.len() > 512 {
            return Err(err("length must be 1 to 512"));
        }
        for seg in key.split('/') {
            if seg.is_empty() || seg.len() > 128 {
                return Err(err("each segment must be 1 to 128 characters"));
            }
            if seg == "." || seg == ".." {
                return Err(err("segments '.' and '..' are not allowed"));
            }
            if !seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~')) {
                return Err(err("only letters, digits and . _ - ~ are allowed"));
            }
        }
        Ok(Self(key))
    }
    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The segments of the key.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}
impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({})", self.0)
    }
}
impl TryFrom<String> for ObjectKey {
    type Error = ObjectKeyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}
impl From<ObjectKey> for String {
    fn from(k: ObjectKey) -> String {
        k.0
    }
}

/// How quickly a tier can hand out its objects; reported by C-FIND and QIDO-RS as
/// Instance Availability (0008,0056).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Availability {
    /// Readable at once.
    Online,
    /// Readable after a delay measured in seconds to minutes (e.g. a robot mounts a tape).
    Nearline,
    /// Needs an explicit recall before it can be read (archive storage classes).
    Offline,
}

impl Availability {
    /// The DICOM code string.
    pub fn as_dicom(&self) -> &'static str {
        match self {
            Availability::Online => "ONLINE",
            Availability::Nearline => "NEARLINE",
            Availability::Offline => "OFFLINE",
        }
    }
}

/// What a tier can do, as data: lifecycle code branches on these, never on tier kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierCapabilities {
    /// How quickly objects can be read.
    pub availability: Availability,
    /// Whether [`GetOpts::range`] is served without reading the whole object.
    pub ranged_reads: bool,
    /// Whether objects must be recalled before they can be read.
    pub needs_recall: bool,
    /// The largest object the tier accepts, if limited.
    pub max_object_size: Option<u64>,
    /// When set, the tier packs objects written together by [`Tier::put_many`] into one
    /// stored unit (an S3 bundle) of up to this many bytes; migrations batch accordingly.
    pub batch_bytes: Option<u64>,
}

/// Errors of tier operations, with kinds callers can act on.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// No object under this key.
    #[error("object {0} not found")]
    NotFound(ObjectKey),
    /// An object already exists under this key and overwriting was not asked for.
    #[error("object {0} already exists")]
    AlreadyExists(ObjectKey),
    /// The bytes read or written do not match the expected checksum.
    #[error("checksum mismatch for {key}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The object.
        key: ObjectKey,
        /// What the object should hash to.
        expected: Checksum,
        /// What its bytes hash to.
        actual: Checksum,
    },
    /// The tier has no room for the object.
    #[error("tier {tier} is out of space: {detail}{}", cause(.source))]
    InsufficientSpace {
        /// The tier.
        tier: TierName,
        /// What ran out (or what was being done when the disk filled up).
        detail: String,
        /// The I/O error (`ENOSPC`, `EDQUOT`) that said so, when there is one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// The requested range lies outside the object.
    #[error("range {start}..{end} is outside object {key} of {size} bytes")]
    InvalidRange {
        /// The object.
        key: ObjectKey,
        /// Range start.
        start: u64,
        /// Range end (exclusive).
        end: u64,
        /// Object size.
        size: u64,
    },
    /// The object exists but must be recalled before it can be read.
    #[error("object {0} must be recalled before it can be read")]
    NeedsRecall(ObjectKey),
    /// The operation is not supported by this tier.
    #[error("operation not supported by tier {tier}: {operation}")]
    NotSupported {
        /// The tier.
        tier: TierName,
        /// The operation.
        operation: &'static str,
    },
    /// A failure of the body stream handed to `put` (the client went away, or the tier the
    /// bytes come from failed while they streamed).
    #[error("body stream failed: {0}")]
    Body(#[source] BoxError),
    /// A transient failure (timeout, throttling, 5xx, a connection that broke): retrying may
    /// succeed.
    #[error("transient failure: {what}{}", cause(.source))]
    Transient {
        /// What was being done (`tier s3: reading bundle B`).
        what: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A local I/O error.
    #[error("tier {tier}: i/o error on {context}: {source}")]
    Io {
        /// The tier.
        tier: TierName,
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The tier's own index (a RocksDB database: the warm index, the S3 local index, the
    /// tape volume catalog) failed to open, read or write.
    #[error("tier {tier}: {what}: {source}")]
    Index {
        /// The tier.
        tier: TierName,
        /// What was being done (`opening the index`, `index write`).
        what: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// Stored data (an index entry, a bundle, a spool file, a checksum attribute) is damaged
    /// or inconsistent with what names it. Permanent: the tier's data needs attention.
    #[error("tier {tier}: {what}{}", cause(.source))]
    Corrupt {
        /// The tier.
        tier: TierName,
        /// What is damaged, as a phrase (`bundle B is shorter than its index says`).
        what: String,
        /// The underlying error (say a JSON decoding error), when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The remote store (an S3 service) refused the operation, permanently: access denied,
    /// no such bucket, an invalid request.
    #[error("tier {tier}: {what}: {source}")]
    Remote {
        /// The tier.
        tier: TierName,
        /// What was being done (`reading a bundle`).
        what: String,
        /// The store's error.
        #[source]
        source: BoxError,
    },
    /// The tier's storage is held by another process (another `vna serve` on the same root).
    #[error("tier {tier} at {} is in use by another process (is `vna serve` running?)", .path.display())]
    InUse {
        /// The tier.
        tier: TierName,
        /// The root or lock file that is held.
        path: std::path::PathBuf,
    },
    /// The key cannot be stored in this tier (a reserved name, or one that collides with the
    /// directory structure of other keys).
    #[error("tier {tier}: object {key} cannot be stored: {reason}")]
    InvalidKey {
        /// The tier.
        tier: TierName,
        /// The key.
        key: ObjectKey,
        /// Why not.
        reason: String,
    },
    /// The tier's configuration or environment does not let it work: an invalid option, a
    /// filesystem without the features it needs, no async runtime. Permanent until fixed.
    #[error("tier {tier}: {what}{}", cause(.source))]
    Config {
        /// The tier.
        tier: TierName,
        /// What is wrong.
        what: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The tier was closed (dropped) while the operation ran.
    #[error("tier {tier} is closed")]
    Closed {
        /// The tier.
        tier: TierName,
    },
    /// A background task running the operation failed (panicked or was cancelled).
    #[error("{what}: worker task failed: {source}")]
    Worker {
        /// What the task was doing (`tier warm: index scan`).
        what: String,
        /// The join error.
        #[source]
        source: BoxError,
    },
    /// A failure shared by several objects read or verified together (one bundle read for
    /// many members): the same error, for another object.
    #[error("object {key}: {source}")]
    Shared {
        /// The object this answer is about.
        key: ObjectKey,
        /// The failure of the whole read.
        #[source]
        source: std::sync::Arc<TierError>,
    },
    /// Stored data (a segment, a volume, an index) is in a format this tier does not read:
    /// written by a newer vna ([`crate::format::FormatError::UnsupportedVersion`]), or unknown.
    /// The tier refuses to open rather than guess.
    #[error("tier {tier}: {what}: {source}")]
    Format {
        /// The tier.
        tier: TierName,
        /// What was read (`segment PATH`, `its index`, `volume V000001`).
        what: String,
        /// What is wrong with its format.
        #[source]
        source: crate::format::FormatError,
    },
    /// A failure with no underlying error and no kind of its own: a broken internal
    /// invariant (a tier answered fewer results than asked), or a failure injected by a
    /// test. Permanent.
    #[error("{0}")]
    Other(String),
}

/// A boxed error that can cross threads: the source of tier errors whose cause is some other
/// library's error (RocksDB, the S3 SDK, serde_json, a tokio join error).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `": cause"` for an optional source, `""` without one (for `Display` messages).
fn cause<E: fmt::Display>(source: &Option<E>) -> String {
    source.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
}

impl TierError {
    /// Whether retrying the same operation may succeed: transient failures, I/O timeouts and
    /// interruptions, and shared failures of such. Every retry decision (lifecycle copies,
    /// scrub, S3 batch reads, HTTP 503 answers) asks this, so it is decided here only.
    pub fn is_transient(&self) -> bool {
        match self {
            TierError::Transient { .. } => true,
            TierError::Io { source, .. } => {
                matches!(source.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted)
            }
            TierError::Shared { source, .. } => source.is_transient(),
            _ => false,
        }
    }
    /// Whether retrying the same operation cannot help: the opposite of
    /// [`is_transient`](Self::is_transient).
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }
    /// A transient failure of `what`, keeping its cause.
    pub fn transient(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        TierError::Transient { what: what.into(), source: Some(source.into()) }
    }
    /// A transient failure without an underlying error.
    pub fn transient_msg(what: impl Into<String>) -> Self {
        TierError::Transient { what: what.into(), source: None }
    }
    /// A failure of the tier's index while doing `what`.
    pub fn index(tier: &TierName, what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        TierError::Index { tier: tier.clone(), what: what.into(), source: source.into() }
    }
    /// Damaged stored data, without an underlying error.
    pub fn corrupt(tier: &TierName, what: impl Into<String>) -> Self {
        TierError::Corrupt { tier: tier.clone(), what: what.into(), source: None }
    }
    /// Damaged stored data, with the error that found it (say a decoding error).
    pub fn corrupt_by(tier: &TierName, what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        TierError::Corrupt { tier: tier.clone(), what: what.into(), source: Some(source.into()) }
    }
    /// A configuration or environment the tier cannot work with.
    pub fn config(tier: &TierName, what: impl Into<String>, source: Option<BoxError>) -> Self {
        TierError::Config { tier: tier.clone(), what: what.into(), source }
    }
    /// A failed background task doing `what`.
    pub fn worker(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        TierError::Worker { what: what.into(), source: source.into() }
    }
    /// The error a `put` reports when its body stream failed with `self`: a `Body` error
    /// stays as it is, any other becomes the source of one.
    pub fn into_body(self) -> Self {
        match self {
            TierError::Body(_) => self,
            other => TierError::Body(Box::new(other)),
        }
    }
    /// The same failure for another object of a batch: `NotFound` and `NeedsRecall` name
    /// `key`, any other failure becomes [`TierError::Shared`] with `shared` as its source.
    pub fn for_key(shared: &std::sync::Arc<TierError>, key: &ObjectKey) -> Self {
        match shared.as_ref() {
            TierError::NotFound(_) => TierError::NotFound(key.clone()),
            TierError::NeedsRecall(_) => TierError::NeedsRecall(key.clone()),
            _ => TierError::Shared { key: key.clone(), source: shared.clone() },
        }
    }
    /// Wraps an I/O error with what was being done; a full disk becomes `InsufficientSpace`.
    pub fn io(tier: &TierName, context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC) || source.raw_os_error() == Some(libc::EDQUOT) {
            return TierError::InsufficientSpace { tier: tier.clone(), detail: context, source: Some(source) };
        }
        TierError::Io { tier: tier.clone(), context, source }
    }
}

/// A stream of byte chunks: request and response bodies.
pub type ByteStream = BoxStream<'static, Result<Bytes, TierError>>;

/// Size and checksum of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: ObjectKey,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the whole object.
    pub checksum: Checksum,
}

/// Options of [`Tier::put`].
#[derive(Debug, Clone, Default)]
pub struct PutOpts {
    /// When set, the put fails with `ChecksumMismatch` (storing nothing) unless the body hashes to it.
    pub expected_checksum: Option<Checksum>,
    /// Replace an existing object instead of failing with `AlreadyExists`.
    pub overwrite: bool,
    /// A hint of what the object is, e.g. the DICOM Modality (`CT`, `SR`...); tiers may use
    /// it to pick a compression dictionary. It never changes the bytes stored or read back.
    pub content_class: Option<String>,
}

/// Options of [`Tier::get`].
#[derive(Debug, Clone, Default)]
pub struct GetOpts {
    /// Read only these bytes (end exclusive). Ranged reads are not checksum-verified.
    pub range: Option<Range<u64>>,
}

/// The answer of [`Tier::get`].
pub struct GetResult {
    /// Size and checksum of the whole object.
    pub meta: ObjectMeta,
    /// The requested bytes.
    pub body: ByteStream,
}

impl fmt::Debug for GetResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetResult").field("meta", &self.meta).finish_non_exhaustive()
    }
}

/// Where a recall of an object stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecallStatus {
    /// The object can be read now.
    Ready,
    /// The recall was asked for (now or earlier) and has not finished; ask again later.
    InProgress,
}

/// An object store that holds archived DICOM objects.
#[async_trait]
pub trait Tier: Send + Sync + fmt::Debug {
    /// The configured name of this tier instance.
    fn name(&self) -> &TierName;

    /// What this tier can do.
    fn capabilities(&self) -> TierCapabilities;

    /// Stores an object.
    ///
    /// # Behavior
    /// - Returns only when the object is durable; the returned meta holds the checksum computed from the body.
    /// - Fails with `AlreadyExists` if the key is taken and `opts.overwrite` is false.
    /// - Fails with `ChecksumMismatch` if `opts.expected_checksum` is set and differs; nothing is stored.
    /// - A failing body stream or any error leaves no object (and no partial object) under the key.
    async fn put(&self, key: &ObjectKey, body: ByteStream, opts: PutOpts) -> Result<ObjectMeta, TierError>;

    /// Stores several objects together: all durable, or (on error) none listed.
    ///
    /// # Behavior
    /// - Like [`Tier::put`] for each item; tiers with `batch_bytes` store them as one unit.
    /// - The default writes them one by one and deletes those written when one fails.
    async fn put_many(&self, items: Vec<(ObjectKey, ByteStream, PutOpts)>) -> Result<Vec<ObjectMeta>, TierError> {
        let mut done: Vec<ObjectMeta> = Vec::with_capacity(items.len());
        for (key, body, opts) in items {
            match self.put(&key, body, opts).await {
                Ok(meta) => done.push(meta),
                Err(e) => {
                    for m in &done {
                        let _ = self.delete(&m.key).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Reads an object, or a range of it.
    ///
    /// # Behavior
    /// - `NotFound` for a missing key; `InvalidRange` for a range past the end.
    /// - A full read verifies the checksum as the bytes stream and ends with `ChecksumMismatch` on a difference.
    /// - `NeedsRecall` on tiers whose objects are not readable until recalled.
    async fn get(&self, key: &ObjectKey, opts: GetOpts) -> Result<GetResult, TierError>;

    /// Size and checksum of an object without reading it; `NotFound` for a missing key.
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, TierError>;

    /// Deletes an object.
    ///
    /// # Behavior
    /// - Deleting a missing key succeeds (deletes are idempotent).
    /// - Durable on return.
    async fn delete(&self, key: &ObjectKey) -> Result<(), TierError>;

    /// Deletes several objects.
    ///
    /// # Behavior
    /// - Like [`Tier::delete`] for each key: missing keys (and keys named twice) succeed, and
    ///   every object deleted is durably gone on return.
    /// - `Err` when some delete failed; others may be gone already. Calling again with the
    ///   same keys is safe (deletes are idempotent).
    /// - The default runs [`Tier::delete`] for each key, up to 16 at a time, and reports the
    ///   first failure after trying them all. Tiers that pack objects into stored units (S3
    ///   bundles) override it to rewrite each unit once and remove whole units in one request.
    async fn delete_many(&self, keys: Vec<ObjectKey>) -> Result<(), TierError> {
        let results: Vec<Result<(), TierError>> = futures::stream::iter(keys)
            .map(|key| async move { self.delete(&key).await })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    }

    /// Reads several whole objects into memory, each verified against its stored checksum.
    ///
    /// # Behavior
    /// - One answer per key, in order: the object's metadata and bytes, or that object's
    ///   error (`NotFound`, `ChecksumMismatch`, `NeedsRecall`...).
    /// - `Err` when the call failed as a whole (say a transient failure: asking again may work).
    /// - Callers bound the total size: every object is held in memory at once.
    /// - The default reads each object with [`Tier::get`]. Tiers that pack objects override it
    ///   to read each stored unit once (one S3 GET per run of a bundle instead of one per object).
    async fn get_many(&self, keys: Vec<ObjectKey>) -> Result<Vec<Result<(ObjectMeta, Bytes), TierError>>, TierError> {
        let mut answers = Vec::with_capacity(keys.len());
        for key in keys {
            let answer = match self.get(&key, GetOpts::default()).await {
                Ok(got) => collect_stream_sized(got.body, got.meta.size).await.map(|bytes| (got.meta, bytes)),
                Err(e) => Err(e),
            };
            answers.push(answer);
        }
        Ok(answers)
    }

    /// Reads objects back from the store and checks that their bytes hash to the given
    /// checksums (the read-back that makes a fresh copy trusted).
    ///
    /// # Behavior
    /// - One answer per item, in order: `Ok(())` only when the object's bytes were read from
    ///   the store and hash to the checksum; otherwise that item's error (`NotFound`,
    ///   `ChecksumMismatch`, `NeedsRecall` on tiers whose objects need a recall first...).
    /// - `Err` when the call failed as a whole (say a transient failure: asking again may work).
    /// - The default reads each object in full with [`Tier::get`], which verifies as it
    ///   streams. Tiers that pack objects override it to read each stored unit once (one
    ///   S3 GET per bundle instead of one per object).
    async fn verify_many(&self, items: Vec<(ObjectKey, Checksum)>) -> Result<Vec<Result<(), TierError>>, TierError> {
        let mut answers = Vec::with_capacity(items.len());
        for (key, expected) in items {
            answers.push(verify_by_get(self, &key, expected).await);
        }
        Ok(answers)
    }

    /// Makes an object readable on a tier that needs recalls (archive storage classes).
    ///
    /// # Behavior
    /// - `Ready` when the object can be read now (always, on tiers without recalls).
    /// - Otherwise starts the recall if none is under way and answers `InProgress`; callers
    ///   poll again later. Asking again never starts a second recall.
    /// - `NotFound` for a missing key.
    async fn recall(&self, key: &ObjectKey) -> Result<RecallStatus, TierError> {
        self.head(key).await.map(|_| RecallStatus::Ready)
    }

    /// Lists the objects whose keys start with `prefix` (all objects for `None`), sorted by key.
    ///
    /// # Behavior
    /// - The prefix is a string prefix of whole keys, not only of segments.
    /// - Objects being written (not yet durable) are not listed.
    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>, TierError>;
}

/// Helpers over [`Tier`] for callers that hold whole objects in memory.
#[async_trait]
pub trait TierExt: Tier {
    /// Stores a byte buffer as one object.
    async fn put_bytes(&self, key: &ObjectKey, bytes: Bytes, opts: PutOpts) -> Result<ObjectMeta, TierError> {
        self.put(key, bytes_stream(bytes), opts).await
    }
    /// Reads a whole object into memory, verifying its checksum.
    async fn get_bytes(&self, key: &ObjectKey) -> Result<Bytes, TierError> {
        let res = self.get(key, GetOpts::default()).await?;
        collect_stream(res.body).await
    }
}
impl<T: Tier + ?Sized> TierExt for T {}

/// Reads an object in full and checks it against `expected`: the checksum the tier keeps
/// must be `expected`, and the bytes (verified by the tier's `get` as they stream) must hash
/// to it. The per-object check of [`Tier::verify_many`]'s default.
pub async fn verify_by_get<T: Tier + ?Sized>(tier: &T, key: &ObjectKey, expected: Checksum) -> Result<(), TierError> {
    let got = tier.get(key, GetOpts::default()).await?;
    if got.meta.checksum != expected {
        return Err(TierError::ChecksumMismatch { key: key.clone(), expected, actual: got.meta.checksum });
    }
    let mut body = got.body;
    while let Some(chunk) = body.next().await {
        chunk?;
    }
    Ok(())
}

/// A body stream of one buffer.
pub fn bytes_stream(bytes: Bytes) -> ByteStream {
    futures::stream::once(async move { Ok(bytes) }).boxed()
}

/// Collects a body stream into one buffer.
pub async fn collect_stream(body: ByteStream) -> Result<Bytes, TierError> {
    collect_stream_sized(body, 0).await
}

/// Largest buffer [`collect_stream_sized`] reserves up front.
const MAX_PREALLOCATION: u64 = 256 * 1024 * 1024;

/// Collects a body stream of about `expected_len` bytes into one buffer: a body of one chunk
/// is returned as it is, and a longer one is gathered without growing the buffer repeatedly.
pub async fn collect_stream_sized(mut body: ByteStream, expected_len: u64) -> Result<Bytes, TierError> {
    let Some(first) = body.next().await else { return Ok(Bytes::new()) };
    let first = first?;
    let Some(second) = body.next().await else { return Ok(first) };
    let second = second?;
    let reserve = expected_len.min(MAX_PREALLOCATION) as usize;
    let mut out = bytes::BytesMut::with_capacity(reserve.max(first.len() + second.len()));
    out.extend_from_slice(&first);
    out.extend_from_slice(&second);
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.freeze())
}

/// Wraps a full-object stream so that its last item is a `ChecksumMismatch` error when
/// the bytes do not hash to `expected`.
pub fn verify_stream(key: ObjectKey, expected: Checksum, body: ByteStream) -> ByteStream {
    use crate::checksum::ChecksumHasher;
    let state = (body, ChecksumHasher::new(), Some((key, expected)));
    futures::stream::unfold(state, |(mut body, mut hasher, pending)| async move {
        let pending = pending?;
        match body.next().await {
            Some(Ok(chunk)) => {
                hasher.update(&chunk);
                Some((Ok(chunk), (body, hasher, Some(pending))))
            }
            Some(Err(e)) => Some((Err(e), (body, hasher, None))),
            None => {
                let actual = hasher.finish();
                let (key, expected) = pending;
                if actual == expected {
                    None
                } else {
                    Some((Err(TierError::ChecksumMismatch { key, expected, actual }), (body, hasher, None)))
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::io;
    use std::sync::Arc;

    fn tier() -> TierName {
        TierName::new("t").expect("a tier name")
    }

    #[test]
    fn only_transient_failures_are_worth_retrying() {
        let k = ObjectKey::new("a/b").expect("a key");
        let transient = [
            TierError::transient_msg("throttled"),
            TierError::transient("reading", io::Error::other("connection reset")),
            TierError::io(&tier(), "reading", io::Error::from(io::ErrorKind::TimedOut)),
            TierError::io(&tier(), "reading", io::Error::from(io::ErrorKind::Interrupted)),
            TierError::for_key(&Arc::new(TierError::transient_msg("bundle read")), &k),
        ];
        for e in &transient {
            assert!(e.is_transient() && !e.is_permanent(), "{e:?}");
        }
        let permanent = [
            TierError::NotFound(k.clone()),
            TierError::NeedsRecall(k.clone()),
            TierError::ChecksumMismatch { key: k.clone(), expected: Checksum::of(b"a"), actual: Checksum::of(b"b") },
            TierError::io(&tier(), "reading", io::Error::from(io::ErrorKind::PermissionDenied)),
            TierError::index(&tier(), "index read", io::Error::other("rocksdb said no")),
            TierError::corrupt(&tier(), "bundle b is shorter than its index says"),
            TierError::Remote { tier: tier(), what: "reading".into(), source: "AccessDenied".into() },
            TierError::InUse { tier: tier(), path: "/data/hot".into() },
            TierError::Closed { tier: tier() },
            TierError::for_key(&Arc::new(TierError::corrupt(&tier(), "short")), &k),
            TierError::Body("client went away".into()),
        ];
        for e in &permanent {
            assert!(e.is_permanent() && !e.is_transient(), "{e:?}");
        }
    }

    #[test]
    fn an_io_errors_cause_is_reachable_through_source() {
        let e = TierError::io(&tier(), "reading /x", io::Error::new(io::ErrorKind::PermissionDenied, "no access"));
        assert_eq!(e.to_string(), "tier t: i/o error on reading /x: no access");
        let source = e.source().expect("a source");
        let io = source.downcast_ref::<io::Error>().expect("the io::Error itself");
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn a_full_disk_is_insufficient_space_with_its_io_error_as_source() {
        let e = TierError::io(&tier(), "writing /x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, TierError::InsufficientSpace { .. }), "{e:?}");
        assert!(e.to_string().starts_with("tier t is out of space: writing /x: "), "{e}");
        let io = e.source().and_then(|s| s.downcast_ref::<io::Error>()).expect("the io::Error");
        assert_eq!(io.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn boxed_causes_keep_their_type_and_their_text() {
        let json = serde_json::from_slice::<u64>(b"{").expect_err("bad json");
        let e = TierError::corrupt_by(&tier(), "local index entry of k is corrupt", json);
        assert!(e.to_string().starts_with("tier t: local index entry of k is corrupt: "), "{e}");
        assert!(e.source().and_then(|s| s.downcast_ref::<serde_json::Error>()).is_some());
        let plain = TierError::corrupt(&tier(), "the spool of k is short");
        assert_eq!(plain.to_string(), "tier t: the spool of k is short");
        assert!(plain.source().is_none());
        let t = TierError::transient("tier t: reading", io::Error::other("reset"));
        assert_eq!(t.to_string(), "transient failure: tier t: reading: reset");
        assert_eq!(TierError::transient_msg("busy").to_string(), "transient failure: busy");
    }

    #[test]
    fn shared_failures_name_their_object_and_keep_the_original() {
        let (a, b) = (ObjectKey::new("a").expect("key"), ObjectKey::new("b").expect("key"));
        let missing = Arc::new(TierError::NotFound(a.clone()));
        assert!(matches!(TierError::for_key(&missing, &b), TierError::NotFound(k) if k == b));
        let short = Arc::new(TierError::corrupt(&tier(), "bundle x is shorter than its index says"));
        let e = TierError::for_key(&short, &b);
        assert_eq!(e.to_string(), "object b: tier t: bundle x is shorter than its index says");
        let original = e.source().and_then(|s| s.downcast_ref::<Arc<TierError>>()).expect("the shared error");
        assert!(matches!(original.as_ref(), TierError::Corrupt { .. }));
    }

    #[test]
    fn a_body_failure_is_wrapped_once() {
        let body = TierError::Body("client went away".into());
        assert_eq!(body.into_body().to_string(), "body stream failed: client went away");
        let read = TierError::transient_msg("source tier timed out").into_body();
        assert!(matches!(read, TierError::Body(_)));
        let inner = read.source().and_then(|s| s.downcast_ref::<TierError>()).expect("the tier error");
        assert!(inner.is_transient());
    }

    #[test]
    fn object_keys_reject_path_tricks() {
        for bad in ["", "/abs", "a//b", "a/../b", "..", ".", "a/./b", "a\\b", "a b", "a/b/", "%2e%2e"] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["1.2.3/4.5/6.7.dcm", "a", "x_y-z~1"] {
            assert!(ObjectKey::new(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn tier_names() {
        assert!(TierName::new("hot").is_ok());
        assert!(TierName::new("s3-glacier_2").is_ok());
        assert!(TierName::new("").is_err());
        assert!(TierName::new("a/b").is_err());
    }
}
