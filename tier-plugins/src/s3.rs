//! The cold S3 tier: objects packed into bundle objects in any S3-compatible store.
//!
//! # Layout
//! - `PREFIX/bundles/ID.bundle`: the bytes of one or more objects, back to back.
//! - `PREFIX/bundles/ID.index.json`: the bundle's index ([`BundleIndex`], versioned): each
//!   object's key, offset, size and BLAKE3 checksum.
//! - A local RocksDB index (default `DATA_DIR/tiers/NAME/index`) maps each object key to its
//!   bundle entry so reads need no listing; when it is missing it is rebuilt from the bundle
//!   indexes in the bucket.
//!
//! The prefix belongs to this tier alone: the orphan sweep deletes bundles under it that the
//! local index does not know.
//!
//! A study migrated in one batch ([`Tier::put_many`]) becomes one bundle object: cold storage
//! costs one request per study, not one per instance, and one instance is still read with a
//! ranged GET. Bundles above `multipart_threshold_mb` are sent as multipart uploads. A batch
//! is verified with one GET per bundle ([`Tier::verify_many`]) and deleted with one index
//! rewrite per bundle, or one DeleteObjects for the bundles it empties ([`Tier::delete_many`]).
//!
//! # Ordering rules
//! 1. The bundle is uploaded, then its index object, then the local index entries (synced):
//!    an object is only listed once both S3 objects are durable. A crash before the last step
//!    leaves unlisted garbage in the bucket, never a listed object without bytes; the orphan
//!    sweep ([`S3Tier::sweep_orphans`]) removes that garbage.
//! 2. A delete that leaves objects in a bundle rewrites the bundle's index object first, then
//!    removes the local entries (synced): the bundle's bytes stay, so a crash in between
//!    leaves a listed, readable object that a repeated delete removes.
//! 3. A delete that empties a bundle removes the local entries and the bundle's own entry
//!    first (synced), then deletes both S3 objects: a crash or failure in between leaves an
//!    orphan, which the sweep removes.
//!
//! # Orphan sweep
//! [`S3Tier::sweep_orphans`] lists `PREFIX/bundles/` and deletes the bundles (and index
//! objects) that the local index does not know, are not being written by this process, and
//! are older than a minimum age (their newest `LastModified`). It refuses to run until the
//! local index is complete (built at first open, or rebuilt from the bucket after a loss):
//! after a rebuild, every bundle with an index object is known again, so only bundles whose
//! index object never made it are orphans. The tier runs it in the background at open and then
//! every `orphan_sweep_hours` when a tokio runtime is present.
//!
//! # Integrity and errors
//! Every object's BLAKE3 is computed while it is uploaded and verified on every full read; the
//! SDK also sends a CRC32 of each request body that the store checks. Throttling, 5xx answers,
//! connection resets and timeouts are retried by the SDK's standard retry policy with backoff
//! (`max_attempts`, `timeout_secs`); what still fails is a [`TierError::Transient`].
//!
//! # Archive storage classes
//! With `storage_class = "GLACIER"` or `"DEEP_ARCHIVE"` the tier declares itself OFFLINE and
//! needing recalls: a read of an object that was not restored fails with
//! [`TierError::NeedsRecall`], [`Tier::recall`] sends a RestoreObject for its bundle (once)
//! and reports progress from the `x-amz-restore` header.
//!
//! # Failpoints
//! `s3.after_bundle_upload` and `s3.after_index_upload` (see [`archive_core::failpoint`]) stop
//! the process after the bundle, or its index object, is uploaded and before the local index
//! lists it.

use archive_core::checksum::{Checksum, ChecksumHasher};
use archive_core::tier::{
    verify_stream, Availability, ByteStream, GetOpts, GetResult, ObjectKey, ObjectMeta, PutOpts, RecallStatus, Tier,
    TierCapabilities, TierError, TierName,
};
use async_trait::async_trait;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, GlacierJobParameters, ObjectIdentifier, RestoreRequest,
    StorageClass,
};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use parking_lot::Mutex;
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Options of a `kind = "s3"` tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// A key prefix inside the bucket (e.g. `vna/`).
    #[serde(default)]
    pub prefix: String,
    /// The endpoint URL of an S3-compatible store (MinIO, Ceph); AWS when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Access key id (default: `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key (default: `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Storage class of new bundles: STANDARD, STANDARD_IA, GLACIER_IR, GLACIER, DEEP_ARCHIVE...
    #[serde(default = "default_storage_class")]
    pub storage_class: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores need.
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// Directory of the local index (default `DATA_DIR/tiers/NAME`).
    #[serde(default)]
    pub index_path: Option<PathBuf>,
    /// Bundles at least this large are sent as multipart uploads (MiB).
    #[serde(default = "default_multipart_mb")]
    pub multipart_threshold_mb: u64,
    /// Part size of multipart uploads (MiB, at least 5).
    #[serde(default = "default_part_mb")]
    pub part_size_mb: u64,
    /// Largest bundle a batch is packed into (MiB).
    #[serde(default = "default_bundle_mb")]
    pub bundle_mb: u64,
    /// Days a restored copy of an archive-class bundle stays readable.
    #[serde(default = "default_restore_days")]
    pub restore_days: i32,
    /// Restore speed: Expedited, Standard or Bulk.
    #[serde(default = "default_restore_tier")]
    pub restore_tier: String,
    /// Attempts per request (throttling, 5xx, resets and timeouts are retried with backoff).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Timeout of one attempt (seconds).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Create the bucket at start when it does not exist (for test and lab stores).
    #[serde(default)]
    pub create_bucket: bool,
    /// Hours between orphan sweeps (the first runs at open, in the background); 0 disables them.
    #[serde(default = "default_sweep_hours")]
    pub orphan_sweep_hours: u64,
    /// Minutes an unknown bundle must have existed (by its `LastModified`) before a sweep deletes it.
    #[serde(default = "default_orphan_min_age")]
    pub orphan_min_age_minutes: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_storage_class() -> String {
    "STANDARD".into()
}
fn default_true() -> bool {
    true
}
fn default_multipart_mb() -> u64 {
    64
}
fn default_part_mb() -> u64 {
    16
}
fn default_bundle_mb() -> u64 {
    512
}
fn default_restore_days() -> i32 {
    7
}
fn default_restore_tier() -> String {
    "Standard".into()
}
fn default_attempts() -> u32 {
    8
}
fn default_timeout() -> u64 {
    60
}
fn default_sweep_hours() -> u64 {
    24
}
fn default_orphan_min_age() -> u64 {
    60
}

/// Current version of the bundle index format (its `v`, read on decode: an index object
/// of a newer version is refused with [`TierError::Format`], see [`archive_core::format`]).
pub const BUNDLE_INDEX_VERSION: u32 = 1;

archive_core::first_format!(BundleIndex, "s3 bundle index", BUNDLE_INDEX_VERSION);

/// The index object of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleIndex {
    /// Format version.
    pub v: u32,
    /// The bundle id.
    pub bundle: String,
    /// The objects it holds.
    pub entries: Vec<BundleEntry>,
}

/// One object in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    /// The object's key.
    pub key: ObjectKey,
    /// Where its bytes start in the bundle.
    pub offset: u64,
    /// Its size.
    pub size: u64,
    /// Its BLAKE3.
    pub checksum: Checksum,
}

/// A local index entry: the bundle and the entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Located {
    bundle: String,
    offset: u64,
    size: u64,
    checksum: Checksum,
}

const CF_OBJECTS: &str = "objects";
const CF_BUNDLES: &str = "bundles";
const MARKER: &[u8] = b"\x00rebuilt";
/// Keys per DeleteObjects request (the S3 limit).
const DELETE_OBJECTS_MAX: usize = 1000;
/// Index objects rewritten at once by one `delete_many`.
const REWRITES_IN_FLIGHT: usize = 8;
/// `verify_many` reads the members of a bundle with one GET unless more than this many
/// bytes of other objects lie between two of them (then it starts another GET).
const VERIFY_MAX_GAP: u64 = 8 << 20;
/// `get_many` holds a whole run in memory, gaps included: it reads across at most this many
/// bytes of other objects.
const GET_MANY_MAX_GAP: u64 = 1 << 20;

/// What an orphan sweep found and did ([`S3Tier::sweep_orphans`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Bundles under the prefix that the local index does not know (young ones included).
    pub bundles_found: u64,
    /// Of those, the bundles deleted (old enough), with their index objects.
    pub bundles_deleted: u64,
    /// Bytes deleted (bundles and index objects).
    pub bytes: u64,
}

/// The S3 tier.
pub struct S3Tier {
    name: TierName,
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    storage_class: StorageClass,
    archive_class: bool,
    multipart_threshold: u64,
    part_size: u64,
    bundle_bytes: u64,
    restore_days: i32,
    restore_tier: aws_sdk_s3::types::Tier,
    index: Arc<DB>,
    /// Serializes index updates of bundles (deletes rewrite a bundle's index).
    bundle_lock: tokio::sync::Mutex<()>,
    /// Bundles this process is writing and has not listed yet: never orphans.
    in_flight: Arc<Mutex<HashSet<String>>>,
    /// Dropped with the tier: stops the background sweep.
    stop_sweeps: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for S3Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Tier").field("name", &self.name).field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

impl S3Tier {
    /// Connects to the store, opens (or rebuilds) the local index.
    pub async fn open(name: TierName, o: S3Options, default_dir: PathBuf) -> Result<S3Tier, TierError> {
        let other = |m: String| TierError::config(&name, m, None);
        if o.bucket.trim().is_empty() {
            return Err(other("bucket is required".into()));
        }
        if o.part_size_mb < 5 {
            return Err(other("part_size_mb must be at least 5 (an S3 limit)".into()));
        }
        let key = o.access_key_id.clone().or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok());
        let secret = o.secret_access_key.clone().or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        let (Some(key), Some(secret)) = (key, secret) else {
            return Err(other("credentials are missing: set access_key_id and secret_access_key or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into()));
        };
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(o.timeout_secs.max(1)))
            .build();
        let mut cfg = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(o.region.clone()))
            .credentials_provider(Credentials::new(key, secret, None, None, "vna-config"))
            .force_path_style(o.path_style)
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(o.max_attempts.max(1)))
            .timeout_config(timeouts);
        if let Some(endpoint) = &o.endpoint {
            cfg = cfg.endpoint_url(endpoint);
        }
        let client = aws_sdk_s3::Client::from_conf(cfg.build());
        let storage_class = StorageClass::from(o.storage_class.as_str());
        let archive_class = matches!(storage_class, StorageClass::Glacier | StorageClass::DeepArchive);
        let dir = o.index_path.clone().unwrap_or(default_dir);
        std::fs::create_dir_all(&dir).map_err(|e| TierError::io(&name, format!("creating {}", dir.display()), e))?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        let cfs = [CF_OBJECTS, CF_BUNDLES].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let index = DB::open_cf_descriptors(&db_opts, dir.join("index"), cfs)
            .map_err(|e| TierError::index(&name, "opening the local index", e))?;
        let tier = S3Tier {
            name,
            client,
            bucket: o.bucket.clone(),
            prefix: o.prefix.clone(),
            storage_class,
            archive_class,
            multipart_threshold: o.multipart_threshold_mb.max(5) << 20,
            part_size: o.part_size_mb << 20,
            bundle_bytes: o.bundle_mb.max(1) << 20,
            restore_days: o.restore_days.max(1),
            restore_tier: aws_sdk_s3::types::Tier::from(o.restore_tier.as_str()),
            index: Arc::new(index),
            bundle_lock: tokio::sync::Mutex::new(()),
            in_flight: Arc::default(),
            stop_sweeps: tokio::sync::watch::channel(()).0,
        };
        if o.create_bucket {
            tier.ensure_bucket().await?;
        }
        if tier.index.get_cf(tier.cf(CF_BUNDLES)?, MARKER).map_err(|e| tier.db_err(e))?.is_none() {
            tier.rebuild_index().await?;
        }
        if o.orphan_sweep_hours > 0 {
            let every = Duration::from_secs(o.orphan_sweep_hours.saturating_mul(3600));
            let min_age = Duration::from_secs(o.orphan_min_age_minutes.saturating_mul(60));
            tier.spawn_sweeps(every, min_age);
        }
        Ok(tier)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, TierError> {
        column_family(&self.index, &self.name, name)
    }

    /// What a sweep needs, without keeping the local index open after the tier is dropped.
    fn sweeper(&self) -> Sweeper {
        Sweeper {
            name: self.name.clone(),
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            index: Arc::downgrade(&self.index),
            in_flight: self.in_flight.clone(),
        }
    }

    /// Runs [`S3Tier::sweep_orphans`] now and then every `every` in the background, until the
    /// tier is dropped; does nothing outside a tokio runtime.
    fn spawn_sweeps(&self, every: Duration, min_age: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(tier = %self.name, "no tokio runtime: orphan sweeps run only when asked");
            return;
        };
        let sweeper = self.sweeper();
        let mut stop = self.stop_sweeps.subscribe();
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    swept = sweeper.sweep(min_age) => match swept {
                        Ok(r) if r.bundles_found > 0 => tracing::info!(tier = %sweeper.name, found = r.bundles_found,
                            deleted = r.bundles_deleted, bytes = r.bytes, "orphaned bundles swept"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(tier = %sweeper.name, error = %e, "orphan sweep failed; it runs again later"),
                    },
                    _ = stop.changed() => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }

    /// Deletes the bundles under `PREFIX/bundles/` that the local index does not know and that
    /// are at least `min_age` old, with their index objects.
    ///
    /// # Behavior
    /// - A bundle (or a lone index object) is an orphan when the local index has no entry for
    ///   it and this process is not writing it: a crash between its upload and the local
    ///   commit, or a delete whose DeleteObjects failed. Bundles the local index knows are
    ///   never touched, even when no object of theirs is listed any more.
    /// - Its age is that of its newest object (`LastModified`); younger orphans are counted in
    ///   `bundles_found` and kept (an upload of another process may still be under way).
    /// - Fails, deleting nothing, while the local index is incomplete (a rebuild from the
    ///   bucket did not finish).
    pub async fn sweep_orphans(&self, min_age: Duration) -> Result<SweepReport, TierError> {
        self.sweeper().sweep(min_age).await
    }

    fn db_err(&self, e: rocksdb::Error) -> TierError {
        TierError::index(&self.name, "local index", e)
    }

    fn data_key(&self, bundle: &str) -> String {
        data_key(&self.prefix, bundle)
    }

    fn index_key(&self, bundle: &str) -> String {
        index_key(&self.prefix, bundle)
    }

    /// Maps an SDK error to a tier error kind.
    fn sdk_err<
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    >(
        &self,
        what: &str,
        key: Option<&ObjectKey>,
        e: SdkError<E, R>,
    ) -> TierError {
        sdk_err(&self.name, what, key, e)
    }

    async fn ensure_bucket(&self) -> Result<(), TierError> {
        if self.client.head_bucket().bucket(&self.bucket).send().await.is_ok() {
            return Ok(());
        }
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| self.sdk_err("creating the bucket", None, e))?;
        Ok(())
    }

    /// Rebuilds the local index from the bundle indexes in the bucket; the marker that says
    /// the index is complete is written last.
    async fn rebuild_index(&self) -> Result<(), TierError> {
        let mut token = None;
        let mut bundles = 0;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("{}bundles/", self.prefix))
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| self.sdk_err("listing bundles", None, e))?;
            for obj in page.contents() {
                let Some(k) = obj.key() else { continue };
                if !k.ends_with(".index.json") {
                    continue;
                }
                let got = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(k)
                    .send()
                    .await
                    .map_err(|e| self.sdk_err("reading a bundle index", None, e))?;
                let bytes = got
                    .body
                    .collect()
                    .await
                    .map_err(|e| TierError::transient(format!("tier {}: reading bundle index {k}", self.name), e))?
                    .into_bytes();
                let idx: BundleIndex = archive_core::format::decode(&bytes).map_err(|source| TierError::Format {
                    tier: self.name.clone(),
                    what: format!("bundle index {k}"),
                    source,
                })?;
                self.commit_local(&idx)?;
                bundles += 1;
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        self.index.put_cf_opt(self.cf(CF_BUNDLES)?, MARKER, b"1", &synced()).map_err(|e| self.db_err(e))?;
        if bundles > 0 {
            tracing::info!(tier = %self.name, bundles, "local index rebuilt from the bucket");
        }
        Ok(())
    }

    /// Writes a bundle's entries to the local index (synced).
    fn commit_local(&self, idx: &BundleIndex) -> Result<(), TierError> {
        let mut wb = WriteBatch::default();
        for e in &idx.entries {
            let loc = Located { bundle: idx.bundle.clone(), offset: e.offset, size: e.size, checksum: e.checksum };
            wb.put_cf(self.cf(CF_OBJECTS)?, e.key.as_str(), to_json(&self.name, &loc)?);
        }
        let keys: Vec<&str> = idx.entries.iter().map(|e| e.key.as_str()).collect();
        wb.put_cf(self.cf(CF_BUNDLES)?, idx.bundle.as_bytes(), to_json(&self.name, &keys)?);
        self.index.write_opt(wb, &synced()).map_err(|e| self.db_err(e))
    }

    fn located(&self, key: &ObjectKey) -> Result<Option<Located>, TierError> {
        match self.index.get_cf(self.cf(CF_OBJECTS)?, key.as_str()).map_err(|e| self.db_err(e))? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| TierError::corrupt_by(&self.name, format!("local index entry of {key} is corrupt"), e)),
            None => Ok(None),
        }
    }

    /// Where `key` is, if it is in `bundle`.
    fn located_in(&self, key: &ObjectKey, bundle: &str) -> Result<Option<Located>, TierError> {
        Ok(self.located(key)?.filter(|l| l.bundle == bundle))
    }

    fn bundle_keys(&self, bundle: &str) -> Result<Vec<String>, TierError> {
        match self.index.get_cf(self.cf(CF_BUNDLES)?, bundle.as_bytes()).map_err(|e| self.db_err(e))? {
            Some(v) => serde_json::from_slice(&v)
                .map_err(|e| TierError::corrupt_by(&self.name, format!("bundle list of {bundle} is corrupt"), e)),
            None => Ok(Vec::new()),
        }
    }

    fn new_bundle_id() -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        format!("{now:x}-{:016x}", rand::random::<u64>())
    }

    /// Uploads objects as one bundle and its index, then lists them locally.
    async fn write_bundle(&self, items: Vec<(ObjectKey, ByteStream, PutOpts)>) -> Result<Vec<ObjectMeta>, TierError> {
        for (key, _, opts) in &items {
            if !opts.overwrite && self.located(key)?.is_some() {
                return Err(TierError::AlreadyExists(key.clone()));
            }
        }
        let bundle = Self::new_bundle_id();
        // Registered before anything is uploaded, released after the local commit: a sweep
        // never takes this bundle for an orphan.
        let _in_flight = InFlight::new(&self.in_flight, &bundle);
        let data_key = self.data_key(&bundle);
        let mut upload = Upload::new(self, data_key.clone());
        let mut entries = Vec::with_capacity(items.len());
        let mut failure = None;
        for (key, mut body, opts) in items {
            let offset = upload.written;
            let mut hasher = ChecksumHasher::new();
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        failure = Some(e.into_body());
                        break;
                    }
                };
                hasher.update(&chunk);
                if let Err(e) = upload.write(&chunk).await {
                    failure = Some(e);
                    break;
                }
            }
            if failure.is_some() {
                break;
            }
            let checksum = hasher.finish();
            if let Some(expected) = opts.expected_checksum {
                if expected != checksum {
                    failure = Some(TierError::ChecksumMismatch { key: key.clone(), expected, actual: checksum });
                    break;
                }
            }
            entries.push(BundleEntry { key, offset, size: upload.written - offset, checksum });
        }
        if let Some(e) = failure {
            upload.abort().await;
            return Err(e);
        }
        upload.finish().await?;
        archive_core::failpoint::hit("s3.after_bundle_upload");
        let idx = BundleIndex { v: BUNDLE_INDEX_VERSION, bundle: bundle.clone(), entries };
        let put = match to_json(&self.name, &idx) {
            Ok(json) => self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(self.index_key(&bundle))
                .body(S3Body::from(json))
                .send()
                .await
                .map_err(|e| self.sdk_err("uploading a bundle index", None, e)),
            Err(e) => Err(e),
        };
        if let Err(err) = put {
            let _ = self.client.delete_object().bucket(&self.bucket).key(&data_key).send().await;
            return Err(err);
        }
        archive_core::failpoint::hit("s3.after_index_upload");
        let _guard = self.bundle_lock.lock().await;
        let mut previous: BTreeMap<String, BTreeSet<ObjectKey>> = BTreeMap::new();
        for e in &idx.entries {
            if let Some(old) = self.located(&e.key)? {
                previous.entry(old.bundle).or_default().insert(e.key.clone());
            }
        }
        self.commit_local(&idx)?;
        // Overwritten objects: release them from their old bundles. The new objects are
        // durable and listed already, so a failure here only leaves a stale entry in an old
        // bundle's index (dropped when that bundle is next rewritten).
        if let Err(e) = self.drop_from_bundles(previous).await {
            tracing::warn!(tier = %self.name, error = %e, "releasing overwritten objects from their old bundles failed");
        }
        Ok(idx.entries.into_iter().map(|e| ObjectMeta { key: e.key, size: e.size, checksum: e.checksum }).collect())
    }

    /// Drops keys from bundles: `groups` maps each bundle to the keys that leave it. A key's
    /// local entry is removed only while it still points into that bundle (an overwritten
    /// object points into its new bundle already). The caller holds `bundle_lock`.
    ///
    /// A bundle that keeps objects gets its index object rewritten, then its local entries
    /// updated; the bundles left empty lose their local entries first, then go in
    /// DeleteObjects requests with their index objects. All bundles are tried; the first
    /// failure is returned.
    async fn drop_from_bundles(&self, groups: BTreeMap<String, BTreeSet<ObjectKey>>) -> Result<(), TierError> {
        let mut rewrites: Vec<(String, Vec<BundleEntry>, Vec<ObjectKey>)> = Vec::new();
        let mut emptied: Vec<(String, Vec<ObjectKey>)> = Vec::new();
        for (bundle, leaving) in groups {
            let mut kept = Vec::new();
            for k in self.bundle_keys(&bundle)? {
                let Ok(key) = ObjectKey::new(k) else { continue };
                if leaving.contains(&key) {
                    continue;
                }
                // Keys deleted or overwritten earlier whose list entry stayed are dropped here.
                if let Some(l) = self.located_in(&key, &bundle)? {
                    kept.push(BundleEntry { key, offset: l.offset, size: l.size, checksum: l.checksum });
                }
            }
            let mut gone = Vec::new();
            for key in leaving {
                if self.located_in(&key, &bundle)?.is_some() {
                    gone.push(key);
                }
            }
            if kept.is_empty() {
                emptied.push((bundle, gone));
            } else {
                rewrites.push((bundle, kept, gone));
            }
        }
        let rewritten: Vec<Result<(), TierError>> = futures::stream::iter(rewrites)
            .map(|(bundle, kept, gone)| async move { self.rewrite_bundle_index(bundle, kept, gone).await })
            .buffer_unordered(REWRITES_IN_FLIGHT)
            .collect()
            .await;
        let mut first_err = rewritten.into_iter().find_map(Result::err);
        if !emptied.is_empty() {
            if let Err(e) = self.delete_bundles(emptied).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Rewrites a bundle's index object with the entries it keeps, then removes the local
    /// entries of the keys that left it and updates its list (one synced batch).
    async fn rewrite_bundle_index(
        &self,
        bundle: String,
        kept: Vec<BundleEntry>,
        gone: Vec<ObjectKey>,
    ) -> Result<(), TierError> {
        let keys: Vec<String> = kept.iter().map(|e| e.key.as_str().to_string()).collect();
        let idx = BundleIndex { v: BUNDLE_INDEX_VERSION, bundle: bundle.clone(), entries: kept };
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.index_key(&bundle))
            .body(S3Body::from(to_json(&self.name, &idx)?))
            .send()
            .await
            .map_err(|e| self.sdk_err("rewriting a bundle index", None, e))?;
        let mut wb = WriteBatch::default();
        for key in &gone {
            wb.delete_cf(self.cf(CF_OBJECTS)?, key.as_str());
        }
        wb.put_cf(self.cf(CF_BUNDLES)?, bundle.as_bytes(), to_json(&self.name, &keys)?);
        self.index.write_opt(wb, &synced()).map_err(|e| self.db_err(e))
    }

    /// Removes emptied bundles: their objects' and their own local entries (one synced
    /// batch), then both S3 objects of each, up to 1000 keys per DeleteObjects. Bundles whose
    /// S3 delete fails are orphans the sweep removes later.
    async fn delete_bundles(&self, emptied: Vec<(String, Vec<ObjectKey>)>) -> Result<(), TierError> {
        let mut wb = WriteBatch::default();
        for (bundle, gone) in &emptied {
            for key in gone {
                wb.delete_cf(self.cf(CF_OBJECTS)?, key.as_str());
            }
            wb.delete_cf(self.cf(CF_BUNDLES)?, bundle.as_bytes());
        }
        self.index.write_opt(wb, &synced()).map_err(|e| self.db_err(e))?;
        let keys: Vec<String> =
            emptied.iter().flat_map(|(bundle, _)| [self.index_key(bundle), self.data_key(bundle)]).collect();
        let deleted = delete_objects(&self.client, &self.name, &self.bucket, keys).await;
        if let Err(e) = &deleted {
            tracing::warn!(tier = %self.name, bundles = emptied.len(), error = %e,
                "deleting emptied bundles failed; the orphan sweep removes them");
        }
        deleted
    }

    /// Starts a ranged GET of `range` of a bundle's data object; `doing` and `key` name the
    /// failure.
    async fn read_run(
        &self,
        bundle: &str,
        range: std::ops::Range<u64>,
        doing: &str,
        key: Option<&ObjectKey>,
    ) -> Result<aws_sdk_s3::primitives::ByteStream, TierError> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(self.data_key(bundle))
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map(|got| got.body)
            .map_err(|e| self.sdk_err(doing, key, e))
    }

    /// Reads one run of bundle members with one ranged GET and answers each of their items
    /// with the member's bytes (a slice of the run) once they hash to the index's checksum.
    async fn get_span(
        &self,
        bundle: &str,
        span: &[Member],
        keys: &[ObjectKey],
        located: &[Option<Located>],
        answers: &mut [Option<Result<(ObjectMeta, Bytes), TierError>>],
    ) -> Result<(), TierError> {
        let Some(first) = span.first() else { return Ok(()) };
        let start = first.offset;
        let end = span.iter().map(|m| m.offset + m.size).max().unwrap_or(start);
        let fail = |answers: &mut [Option<Result<(ObjectMeta, Bytes), TierError>>], m: &Member, e: &Arc<TierError>| {
            for &i in &m.items {
                answers[i] = Some(Err(TierError::for_key(e, &keys[i])));
            }
        };
        let body =
            match self.read_run(bundle, start..end, "reading a bundle", first.items.first().map(|&i| &keys[i])).await {
                Ok(body) => body,
                Err(e) => {
                    if e.is_transient() {
                        return Err(e);
                    }
                    let e = Arc::new(e);
                    for m in span {
                        fail(answers, m, &e);
                    }
                    return Ok(());
                }
            };
        let data = body
            .collect()
            .await
            .map_err(|e| TierError::transient(format!("tier {}: reading bundle {bundle}", self.name), e))?
            .into_bytes();
        for m in span {
            let from = (m.offset - start) as usize;
            let to = from + m.size as usize;
            if to > data.len() {
                let e = TierError::corrupt(&self.name, format!("bundle {bundle} is shorter than its index says"));
                fail(answers, m, &Arc::new(e));
                continue;
            }
            let bytes = data.slice(from..to);
            let mut hasher = ChecksumHasher::new();
            hasher.update(&bytes);
            let actual = hasher.finish();
            for &i in &m.items {
                let Some(loc) = &located[i] else { continue };
                let key = keys[i].clone();
                answers[i] = Some(if actual == loc.checksum {
                    Ok((ObjectMeta { key, size: loc.size, checksum: loc.checksum }, bytes.clone()))
                } else {
                    Err(TierError::ChecksumMismatch { key, expected: loc.checksum, actual })
                });
            }
        }
        Ok(())
    }

    /// Reads the members of one bundle that lie in `span` (sorted by offset, disjoint) with one
    /// ranged GET, hashing each as its bytes stream by, and records each member's answer.
    /// `Err` only for a transient failure (the caller's whole call fails).
    async fn verify_span(
        &self,
        bundle: &str,
        span: &[Member],
        items: &[(ObjectKey, Checksum)],
        answers: &mut [Option<Result<(), TierError>>],
    ) -> Result<(), TierError> {
        let (Some(first), Some(last)) = (span.first(), span.last()) else { return Ok(()) };
        let start = first.offset;
        let end = span.iter().map(|m| m.offset + m.size).max().unwrap_or(last.offset + last.size);
        let fail_all = |answers: &mut [Option<Result<(), TierError>>], e: TierError, from: usize| {
            let e = Arc::new(e);
            for m in &span[from..] {
                for &i in &m.items {
                    answers[i] = Some(Err(TierError::for_key(&e, &items[i].0)));
                }
            }
        };
        let key = first.items.first().and_then(|&i| items.get(i)).map(|(k, _)| k);
        let mut body = match self.read_run(bundle, start..end, "reading a bundle to verify it", key).await {
            Ok(body) => body,
            Err(e) => {
                if e.is_transient() {
                    return Err(e);
                }
                fail_all(answers, e, 0);
                return Ok(());
            }
        };
        let mut pos = start;
        let mut next = 0;
        let mut hasher = ChecksumHasher::new();
        while next < span.len() {
            let chunk = match body.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    return Err(TierError::transient(format!("tier {}: reading bundle {bundle}", self.name), e))
                }
                None => {
                    let e = TierError::corrupt(&self.name, format!("bundle {bundle} is shorter than its index says"));
                    fail_all(answers, e, next);
                    return Ok(());
                }
            };
            let mut data: &[u8] = &chunk;
            while !data.is_empty() && next < span.len() {
                let m = &span[next];
                if pos < m.offset {
                    let skip = (m.offset - pos).min(data.len() as u64) as usize;
                    data = &data[skip..];
                    pos += skip as u64;
                    continue;
                }
                let take = (m.offset + m.size - pos).min(data.len() as u64) as usize;
                hasher.update(&data[..take]);
                data = &data[take..];
                pos += take as u64;
                if pos == m.offset + m.size {
                    let actual = hasher.finish();
                    for &i in &m.items {
                        let (key, expected) = &items[i];
                        answers[i] = Some(if actual == *expected {
                            Ok(())
                        } else {
                            Err(TierError::ChecksumMismatch { key: key.clone(), expected: *expected, actual })
                        });
                    }
                    hasher = ChecksumHasher::new();
                    next += 1;
                }
            }
        }
        Ok(())
    }
}

/// One object of a bundle to verify: where it lies and the items that name it.
#[derive(Debug, Clone)]
struct Member {
    offset: u64,
    size: u64,
    items: Vec<usize>,
}

/// Splits members sorted by offset into runs read with one GET each: a new run starts where
/// more than `max_gap` bytes lie between the end of one member and the start of the next.
fn spans(members: &[Member], max_gap: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut end_bytes = 0u64;
    for (i, m) in members.iter().enumerate() {
        if i > start && m.offset.saturating_sub(end_bytes) > max_gap {
            out.push(start..i);
            start = i;
        }
        end_bytes = end_bytes.max(m.offset + m.size);
    }
    if start < members.len() {
        out.push(start..members.len());
    }
    out
}

/// Write options of every local index write: synced.
fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

fn to_json<T: Serialize>(tier: &TierName, value: &T) -> Result<Vec<u8>, TierError> {
    serde_json::to_vec(value).map_err(|e| TierError::index(tier, "serializing an index record", e))
}

fn column_family<'a>(db: &'a DB, tier: &TierName, name: &str) -> Result<&'a rocksdb::ColumnFamily, TierError> {
    db.cf_handle(name).ok_or_else(|| TierError::corrupt(tier, format!("local index lacks column family {name}")))
}

fn data_key(prefix: &str, bundle: &str) -> String {
    format!("{prefix}bundles/{bundle}.bundle")
}

fn index_key(prefix: &str, bundle: &str) -> String {
    format!("{prefix}bundles/{bundle}.index.json")
}

/// The bundle id of a key under `PREFIX/bundles/`, if it names a bundle or an index object.
fn bundle_of<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    let name = key.strip_prefix(prefix)?.strip_prefix("bundles/")?;
    if name.contains('/') {
        return None;
    }
    let id = name.strip_suffix(".bundle").or_else(|| name.strip_suffix(".index.json"))?;
    (!id.is_empty()).then_some(id)
}

/// Maps an SDK error to a tier error kind.
fn sdk_err<
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
>(
    tier: &TierName,
    what: &str,
    key: Option<&ObjectKey>,
    e: SdkError<E, R>,
) -> TierError {
    let transient = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => match (s.err().code(), key) {
            (Some("NoSuchKey" | "NotFound"), Some(k)) => return TierError::NotFound(k.clone()),
            (Some("InvalidObjectState"), Some(k)) => return TierError::NeedsRecall(k.clone()),
            (Some("SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout" | "Throttling"), _) => true,
            _ => false,
        },
        _ => false,
    };
    if transient {
        TierError::transient(format!("tier {tier}: {what}"), SdkFailure(e))
    } else {
        TierError::Remote { tier: tier.clone(), what: what.to_string(), source: Box::new(SdkFailure(e)) }
    }
}

/// An SDK error as the source of a tier error: displayed with its whole context (the
/// service's code and message), as the SDK's own `Display` says only "service error".
struct SdkFailure<E, R>(SdkError<E, R>);

impl<E: std::error::Error + 'static, R: std::fmt::Debug> std::fmt::Display for SdkFailure<E, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", aws_sdk_s3::error::DisplayErrorContext(&self.0))
    }
}

impl<E: std::error::Error + 'static, R: std::fmt::Debug> std::fmt::Debug for SdkFailure<E, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl<E: std::error::Error + 'static, R: std::fmt::Debug + 'static> std::error::Error for SdkFailure<E, R> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A request the SDK could not build (a missing required field): the store never saw it.
fn remote_build(tier: &TierName, e: aws_sdk_s3::error::BuildError) -> TierError {
    TierError::Remote { tier: tier.clone(), what: "building a request".into(), source: Box::new(e) }
}

/// Deletes S3 objects, up to 1000 per DeleteObjects request; deleting a missing key succeeds.
/// Every request is tried; the first failure is returned.
async fn delete_objects(
    client: &aws_sdk_s3::Client,
    tier: &TierName,
    bucket: &str,
    keys: Vec<String>,
) -> Result<(), TierError> {
    let mut first_err = None;
    for chunk in keys.chunks(DELETE_OBJECTS_MAX) {
        let ids = chunk
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| remote_build(tier, e))?;
        let delete = Delete::builder().set_objects(Some(ids)).quiet(true).build().map_err(|e| remote_build(tier, e))?;
        match client.delete_objects().bucket(bucket).delete(delete).send().await {
            Ok(out) => {
                if let Some(failed) = out.errors().first() {
                    let e = TierError::Remote {
                        tier: tier.clone(),
                        what: format!(
                            "deleting {} ({} of {} keys failed)",
                            failed.key().unwrap_or("?"),
                            out.errors().len(),
                            chunk.len()
                        ),
                        source: failed.message().or(failed.code()).unwrap_or("error").into(),
                    };
                    first_err.get_or_insert(e);
                }
            }
            Err(e) => {
                first_err.get_or_insert(sdk_err(tier, "deleting objects", None, e));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Marks a bundle as being written by this process for as long as it lives.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    bundle: String,
}

impl<'a> InFlight<'a> {
    fn new(set: &'a Mutex<HashSet<String>>, bundle: &str) -> Self {
        set.lock().insert(bundle.to_string());
        Self { set, bundle: bundle.to_string() }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set.lock().remove(&self.bundle);
    }
}

/// One bundle id seen by a sweep's listing.
#[derive(Debug, Default)]
struct Seen {
    keys: Vec<String>,
    bytes: u64,
    newest: i64,
}

/// The part of the tier an orphan sweep needs. It holds the local index weakly, so a
/// background sweep never keeps it open after the tier is dropped.
struct Sweeper {
    name: TierName,
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    index: Weak<DB>,
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl Sweeper {
    fn closed(&self) -> TierError {
        TierError::Closed { tier: self.name.clone() }
    }

    /// Whether the local index has an entry for `bundle` (or the rebuild marker); `Err` when
    /// it cannot tell.
    fn known(&self, bundle: &[u8]) -> Result<bool, TierError> {
        let db = self.index.upgrade().ok_or_else(|| self.closed())?;
        let cf = column_family(&db, &self.name, CF_BUNDLES)?;
        db.get_cf(cf, bundle).map(|v| v.is_some()).map_err(|e| TierError::index(&self.name, "local index", e))
    }

    async fn sweep(&self, min_age: Duration) -> Result<SweepReport, TierError> {
        // Without the marker the local index is incomplete (a rebuild did not finish), and
        // bundles it does not know yet are not orphans.
        if !self.known(MARKER)? {
            // A refusal with no underlying error: `Other`.
            return Err(TierError::Other(format!(
                "tier {}: the local index is incomplete (rebuild unfinished): no orphan sweep",
                self.name
            )));
        }
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(format!("{}bundles/", self.prefix))
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| sdk_err(&self.name, "listing bundles", None, e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                let Some(id) = bundle_of(&self.prefix, key) else { continue };
                let entry = seen.entry(id.to_string()).or_default();
                entry.keys.push(key.to_string());
                entry.bytes += obj.size().unwrap_or(0).max(0) as u64;
                entry.newest = entry.newest.max(obj.last_modified().map_or(i64::MAX, |t| t.secs()));
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let min_age = min_age.as_secs().min(i64::MAX as u64) as i64;
        let mut report = SweepReport::default();
        let mut doomed: Vec<String> = Vec::new();
        for (id, found) in seen {
            // In-flight first: a bundle leaves the set only after the local index lists it.
            if self.in_flight.lock().contains(&id) || self.known(id.as_bytes())? {
                continue;
            }
            report.bundles_found += 1;
            if now.saturating_sub(found.newest) < min_age {
                continue;
            }
            tracing::info!(tier = %self.name, bundle = %id, bytes = found.bytes, "deleting an orphaned bundle");
            report.bundles_deleted += 1;
            report.bytes += found.bytes;
            doomed.extend(found.keys);
        }
        if !doomed.is_empty() {
            delete_objects(&self.client, &self.name, &self.bucket, doomed).await?;
        }
        Ok(report)
    }
}

/// A bundle upload: one PutObject when small, a multipart upload once it passes the threshold.
struct Upload<'a> {
    tier: &'a S3Tier,
    key: String,
    buf: BytesMut,
    written: u64,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
}

impl<'a> Upload<'a> {
    fn new(tier: &'a S3Tier, key: String) -> Self {
        Self { tier, key, buf: BytesMut::new(), written: 0, upload_id: None, parts: Vec::new() }
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), TierError> {
        self.buf.extend_from_slice(chunk);
        self.written += chunk.len() as u64;
        let threshold = if self.upload_id.is_some() { self.tier.part_size } else { self.tier.multipart_threshold };
        if self.buf.len() as u64 >= threshold {
            self.send_part().await?;
        }
        Ok(())
    }

    async fn send_part(&mut self) -> Result<(), TierError> {
        let t = self.tier;
        if self.upload_id.is_none() {
            let created = t
                .client
                .create_multipart_upload()
                .bucket(&t.bucket)
                .key(&self.key)
                .storage_class(t.storage_class.clone())
                .send()
                .await
                .map_err(|e| t.sdk_err("starting a multipart upload", None, e))?;
            self.upload_id = created.upload_id().map(str::to_string);
            if self.upload_id.is_none() {
                return Err(TierError::Remote {
                    tier: t.name.clone(),
                    what: "starting a multipart upload".into(),
                    source: "the store returned no upload id".into(),
                });
            }
        }
        let number = self.parts.len() as i32 + 1;
        let body: Bytes = self.buf.split().freeze();
        let sent = t
            .client
            .upload_part()
            .bucket(&t.bucket)
            .key(&self.key)
            .upload_id(self.upload_id.clone().unwrap_or_default())
            .part_number(number)
            .body(S3Body::from(body))
            .send()
            .await
            .map_err(|e| t.sdk_err("uploading a part", None, e))?;
        self.parts
            .push(CompletedPart::builder().part_number(number).set_e_tag(sent.e_tag().map(str::to_string)).build());
        Ok(())
    }

    async fn finish(mut self) -> Result<(), TierError> {
        let t = self.tier;
        match self.upload_id.clone() {
            None => {
                let body = self.buf.split().freeze();
                t.client
                    .put_object()
                    .bucket(&t.bucket)
                    .key(&self.key)
                    .storage_class(t.storage_class.clone())
                    .body(S3Body::from(body))
                    .send()
                    .await
                    .map_err(|e| t.sdk_err("uploading a bundle", None, e))?;
                Ok(())
            }
            Some(id) => {
                if !self.buf.is_empty() {
                    if let Err(e) = self.send_part().await {
                        self.abort().await;
                        return Err(e);
                    }
                }
                let done = CompletedMultipartUpload::builder().set_parts(Some(self.parts.clone())).build();
                let completed = t
                    .client
                    .complete_multipart_upload()
                    .bucket(&t.bucket)
                    .key(&self.key)
                    .upload_id(&id)
                    .multipart_upload(done)
                    .send()
                    .await;
                match completed {
                    Ok(_) => Ok(()),
                    // Some S3-compatible stores answer 200 with a body the SDK cannot parse
                    // (moto names the root element differently): trust the store's object,
                    // checked by length, rather than the body.
                    Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 200 => {
                        let head = t.client.head_object().bucket(&t.bucket).key(&self.key).send().await;
                        match head {
                            Ok(h) if h.content_length() == Some(self.written as i64) => Ok(()),
                            _ => {
                                let what =
                                    format!("tier {}: a multipart upload of {} did not complete", t.name, self.key);
                                self.abort().await;
                                Err(TierError::transient_msg(what))
                            }
                        }
                    }
                    Err(e) => {
                        let err = t.sdk_err("completing a multipart upload", None, e);
                        self.abort().await;
                        Err(err)
                    }
                }
            }
        }
    }

    async fn abort(self) {
        let t = self.tier;
        if let Some(id) = &self.upload_id {
            let _ = t.client.abort_multipart_upload().bucket(&t.bucket).key(&self.key).upload_id(id).send().await;
        }
    }
}

#[async_trait]
impl Tier for S3Tier {
    fn name(&self) -> &TierName {
        &self.name
    }

    fn capabilities(&self) -> TierCapabilities {
        TierCapabilities {
            availability: if self.archive_class { Availability::Offline } else { Availability::Nearline },
            ranged_reads: true,
            needs_recall: self.archive_class,
            max_object_size: Some(5 << 40),
            batch_bytes: Some(self.bundle_bytes),
        }
    }

    async fn put(&self, key: &ObjectKey, body: ByteStream, opts: PutOpts) -> Result<ObjectMeta, TierError> {
        let mut metas = self.write_bundle(vec![(key.clone(), body, opts)]).await?;
        Ok(metas.remove(0))
    }

    async fn put_many(&self, items: Vec<(ObjectKey, ByteStream, PutOpts)>) -> Result<Vec<ObjectMeta>, TierError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.write_bundle(items).await
    }

    async fn get(&self, key: &ObjectKey, opts: GetOpts) -> Result<GetResult, TierError> {
        let loc = self.located(key)?.ok_or_else(|| TierError::NotFound(key.clone()))?;
        let (start, end) = match &opts.range {
            Some(r) => {
                if r.start > r.end || r.end > loc.size {
                    return Err(TierError::InvalidRange {
                        key: key.clone(),
                        start: r.start,
                        end: r.end,
                        size: loc.size,
                    });
                }
                (r.start, r.end)
            }
            None => (0, loc.size),
        };
        let meta = ObjectMeta { key: key.clone(), size: loc.size, checksum: loc.checksum };
        if start == end {
            let body: ByteStream = if opts.range.is_none() {
                verify_stream(key.clone(), loc.checksum, futures::stream::empty().boxed())
            } else {
                futures::stream::empty().boxed()
            };
            return Ok(GetResult { meta, body });
        }
        let range = format!("bytes={}-{}", loc.offset + start, loc.offset + end - 1);
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.data_key(&loc.bundle))
            .range(range)
            .send()
            .await
            .map_err(|e| self.sdk_err("reading a bundle", Some(key), e))?;
        let name = self.name.clone();
        let body = futures::stream::unfold(Some(got.body), move |state| {
            let name = name.clone();
            async move {
                let mut s = state?;
                match s.next().await {
                    Some(Ok(b)) => Some((Ok(b), Some(s))),
                    Some(Err(e)) => Some((Err(TierError::transient(format!("tier {name}: reading"), e)), None)),
                    None => None,
                }
            }
        })
        .boxed();
        let body = if opts.range.is_none() { verify_stream(key.clone(), loc.checksum, body) } else { body };
        Ok(GetResult { meta, body })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, TierError> {
        let loc = self.located(key)?.ok_or_else(|| TierError::NotFound(key.clone()))?;
        // The bundle must really be in the store: a copy is verified through this on archive classes.
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.data_key(&loc.bundle))
            .send()
            .await
            .map_err(|e| self.sdk_err("checking a bundle", Some(key), e))?;
        if head.content_length().is_some_and(|n| (n as u64) < loc.offset + loc.size) {
            return Err(TierError::corrupt(
                &self.name,
                format!("bundle {} is shorter than its index says", loc.bundle),
            ));
        }
        Ok(ObjectMeta { key: key.clone(), size: loc.size, checksum: loc.checksum })
    }

    async fn recall(&self, key: &ObjectKey) -> Result<RecallStatus, TierError> {
        let loc = self.located(key)?.ok_or_else(|| TierError::NotFound(key.clone()))?;
        if !self.archive_class {
            return Ok(RecallStatus::Ready);
        }
        let data_key = self.data_key(&loc.bundle);
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&data_key)
            .send()
            .await
            .map_err(|e| self.sdk_err("checking a restore", Some(key), e))?;
        match head.restore() {
            Some(r) if r.contains("ongoing-request=\"false\"") => return Ok(RecallStatus::Ready),
            Some(r) if r.contains("ongoing-request=\"true\"") => return Ok(RecallStatus::InProgress),
            _ => {}
        }
        let params = GlacierJobParameters::builder()
            .tier(self.restore_tier.clone())
            .build()
            .map_err(|e| remote_build(&self.name, e))?;
        let request = RestoreRequest::builder().days(self.restore_days).glacier_job_parameters(params).build();
        match self.client.restore_object().bucket(&self.bucket).key(&data_key).restore_request(request).send().await {
            Ok(_) => {}
            // Another request started it meanwhile.
            Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("RestoreAlreadyInProgress") => {}
            Err(e) => return Err(self.sdk_err("requesting a restore", Some(key), e)),
        }
        tracing::info!(tier = %self.name, bundle = %loc.bundle, "restore requested");
        Ok(RecallStatus::InProgress)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), TierError> {
        self.delete_many(vec![key.clone()]).await
    }

    /// Groups the keys by bundle: one index rewrite per bundle that keeps objects, and one
    /// DeleteObjects (bundle and index object) per 500 bundles left empty.
    async fn delete_many(&self, keys: Vec<ObjectKey>) -> Result<(), TierError> {
        if keys.is_empty() {
            return Ok(());
        }
        let _guard = self.bundle_lock.lock().await;
        let mut groups: BTreeMap<String, BTreeSet<ObjectKey>> = BTreeMap::new();
        for key in keys {
            if let Some(loc) = self.located(&key)? {
                groups.entry(loc.bundle).or_default().insert(key);
            }
        }
        self.drop_from_bundles(groups).await
    }

    /// Reads each bundle once per run of the members asked for (split where more than
    /// [`GET_MANY_MAX_GAP`] bytes lie between them), and checks each member's BLAKE3.
    async fn get_many(&self, keys: Vec<ObjectKey>) -> Result<Vec<Result<(ObjectMeta, Bytes), TierError>>, TierError> {
        let mut answers: Vec<Option<Result<(ObjectMeta, Bytes), TierError>>> = keys.iter().map(|_| None).collect();
        let mut located: Vec<Option<Located>> = Vec::with_capacity(keys.len());
        let mut bundles: BTreeMap<String, BTreeMap<u64, Member>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            let Some(loc) = self.located(key)? else {
                answers[i] = Some(Err(TierError::NotFound(key.clone())));
                located.push(None);
                continue;
            };
            if loc.size == 0 {
                let actual = ChecksumHasher::new().finish();
                answers[i] = Some(if actual == loc.checksum {
                    Ok((ObjectMeta { key: key.clone(), size: 0, checksum: loc.checksum }, Bytes::new()))
                } else {
                    Err(TierError::ChecksumMismatch { key: key.clone(), expected: loc.checksum, actual })
                });
                located.push(None);
                continue;
            }
            let member = bundles.entry(loc.bundle.clone()).or_default().entry(loc.offset).or_insert_with(|| Member {
                offset: loc.offset,
                size: loc.size,
                items: Vec::new(),
            });
            member.items.push(i);
            located.push(Some(loc));
        }
        for (bundle, members) in bundles {
            let members: Vec<Member> = members.into_values().collect();
            for span in spans(&members, GET_MANY_MAX_GAP) {
                self.get_span(&bundle, &members[span], &keys, &located, &mut answers).await?;
            }
        }
        Ok(answers
            .into_iter()
            .zip(keys)
            .map(|(answer, key)| {
                answer.unwrap_or_else(|| Err(TierError::Other(format!("tier {}: {key} was not read", self.name))))
            })
            .collect())
    }

    /// Reads each bundle once (one ranged GET over the members asked for, split where they lie
    /// far apart), hashing every member as its bytes stream by.
    async fn verify_many(&self, items: Vec<(ObjectKey, Checksum)>) -> Result<Vec<Result<(), TierError>>, TierError> {
        let mut answers: Vec<Option<Result<(), TierError>>> = items.iter().map(|_| None).collect();
        let mut bundles: BTreeMap<String, BTreeMap<u64, Member>> = BTreeMap::new();
        for (i, (key, expected)) in items.iter().enumerate() {
            let Some(loc) = self.located(key)? else {
                answers[i] = Some(Err(TierError::NotFound(key.clone())));
                continue;
            };
            if loc.checksum != *expected {
                let actual = loc.checksum;
                answers[i] = Some(Err(TierError::ChecksumMismatch { key: key.clone(), expected: *expected, actual }));
                continue;
            }
            if loc.size == 0 {
                // Nothing to read, as for a full get of an empty object.
                let actual = ChecksumHasher::new().finish();
                answers[i] = Some(if actual == *expected {
                    Ok(())
                } else {
                    Err(TierError::ChecksumMismatch { key: key.clone(), expected: *expected, actual })
                });
                continue;
            }
            let member = bundles.entry(loc.bundle).or_default().entry(loc.offset).or_insert_with(|| Member {
                offset: loc.offset,
                size: loc.size,
                items: Vec::new(),
            });
            member.items.push(i);
        }
        for (bundle, members) in bundles {
            let members: Vec<Member> = members.into_values().collect();
            for span in spans(&members, VERIFY_MAX_GAP) {
                self.verify_span(&bundle, &members[span], &items, &mut answers).await?;
            }
        }
        Ok(answers
            .into_iter()
            .zip(items)
            .map(|(answer, (key, _))| {
                answer.unwrap_or_else(|| Err(TierError::Other(format!("tier {}: {key} was not verified", self.name))))
            })
            .collect())
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>, TierError> {
        let start = prefix.unwrap_or("");
        let mode = IteratorMode::From(start.as_bytes(), rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.index.iterator_cf(self.cf(CF_OBJECTS)?, mode) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            if !k.starts_with(start.as_bytes()) {
                break;
            }
            let Ok(key) = ObjectKey::new(String::from_utf8_lossy(&k).into_owned()) else { continue };
            let loc: Located =
                serde_json::from_slice(&v).map_err(|e| TierError::corrupt_by(&self.name, "local index corrupt", e))?;
            out.push(ObjectMeta { key, size: loc.size, checksum: loc.checksum });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_error(code: &str) -> SdkError<aws_sdk_s3::operation::get_object::GetObjectError, ()> {
        let meta = aws_sdk_s3::error::ErrorMetadata::builder().code(code).message("the store says no").build();
        SdkError::service_error(aws_sdk_s3::operation::get_object::GetObjectError::generic(meta), ())
    }

    #[test]
    fn sdk_errors_become_kinds_that_decide_retry() {
        use std::error::Error as _;
        let tier = TierName::new("s3").expect("a tier name");
        let key = ObjectKey::new("k").expect("a key");
        for code in ["SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"] {
            let e = sdk_err(&tier, "reading a bundle", Some(&key), service_error(code));
            assert!(e.is_transient(), "{code}: {e:?}");
            assert!(e.to_string().contains(code), "the service's code is in the message: {e}");
        }
        let timeout = SdkError::<aws_sdk_s3::operation::get_object::GetObjectError, ()>::timeout_error("slow");
        assert!(sdk_err(&tier, "reading a bundle", None, timeout).is_transient());
        assert!(matches!(
            sdk_err(&tier, "reading", Some(&key), service_error("NoSuchKey")),
            TierError::NotFound(k) if k == key
        ));
        assert!(matches!(
            sdk_err(&tier, "reading", Some(&key), service_error("InvalidObjectState")),
            TierError::NeedsRecall(_)
        ));
        let denied = sdk_err(&tier, "reading a bundle", Some(&key), service_error("AccessDenied"));
        assert!(matches!(denied, TierError::Remote { .. }) && denied.is_permanent(), "{denied:?}");
        assert!(denied.to_string().starts_with("tier s3: reading a bundle: "), "{denied}");
        assert!(denied.to_string().contains("AccessDenied"), "{denied}");
        // The SDK's own error is reachable below the context wrapper.
        let sdk = denied.source().and_then(|s| s.source()).expect("the SdkError");
        assert!(sdk.downcast_ref::<SdkError<aws_sdk_s3::operation::get_object::GetObjectError, ()>>().is_some());
        let unnamed = sdk_err(&tier, "listing bundles", None, service_error("NoSuchKey"));
        assert!(matches!(unnamed, TierError::Remote { .. }), "a missing key without an object is no NotFound");
    }

    fn member(offset: u64, size: u64) -> Member {
        Member { offset, size, items: vec![0] }
    }

    #[test]
    fn members_far_apart_are_read_with_separate_gets() {
        assert!(spans(&[], 10).is_empty());
        let m = [member(0, 5), member(5, 5), member(12, 3), member(40, 1), member(41, 0), member(60, 2)];
        assert_eq!(spans(&m, 10), vec![0..3, 3..5, 5..6]);
        assert_eq!(spans(&m, 100), vec![0..6]);
        assert_eq!(spans(&m, 0), vec![0..2, 2..3, 3..5, 5..6]);
    }

    #[test]
    fn bundle_ids_come_from_bundle_and_index_keys_only() {
        assert_eq!(bundle_of("p/", "p/bundles/abc-1.bundle"), Some("abc-1"));
        assert_eq!(bundle_of("p/", "p/bundles/abc-1.index.json"), Some("abc-1"));
        assert_eq!(bundle_of("", "bundles/x.bundle"), Some("x"));
        for other in
            ["p/bundles/x.tmp", "p/bundles/a/b.bundle", "q/bundles/x.bundle", "p/bundles/.bundle", "p/x.bundle"]
        {
            assert_eq!(bundle_of("p/", other), None, "{other}");
        }
    }
}
