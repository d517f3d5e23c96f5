//! The tape tier: a tape (or optical) library simulated on local disk, for sites that keep
//! an offline copy on sequential media.
//!
//! # Layout
//! - `root/volumes/VNNNNNN.vol`: the volumes ("cartridges"), each of a fixed capacity
//!   ([`TapeConfig::volume_bytes`]). Writes append to the one open volume; when the next
//!   object would not fit, the volume is closed (fsynced, marked [`VolumeState::Full`]) and
//!   the next one opened.
//! - `root/index`: the volume catalog in RocksDB. Column family `objects`: object key →
//!   [`CatalogEntry`] (volume, offset, length, BLAKE3, write time); column family `volumes`:
//!   volume id (big-endian) → [`VolumeInfo`] (capacity, bytes used, state, object counts,
//!   live bytes).
//! - `root/staging/`: recalled copies, readable for [`TapeConfig::staging_ttl`]. Emptied
//!   when the tier opens: staged copies and the recall queue live in memory only, and a
//!   caller that polls [`Tier::recall`] after a restart simply queues its object again.
//! - `root/spool/`: bodies being received, before they are written to a volume. Emptied
//!   when the tier opens.
//!
//! # Format versions
//! The tape tier's format version is [`TAPE_FORMAT_VERSION`] (see `docs/formats.md`):
//! - each volume created by version 2 starts with a 24-byte label: `VNA-VOL\n`, the format
//!   version (u32 LE), 4 zero bytes and the volume number (u64 LE), so that a cartridge says
//!   what it is. Volumes of version 1 have no label and are read as before (entries hold
//!   absolute offsets). The label counts against the volume's capacity;
//! - each [`VolumeInfo`] records its volume's `format` (absent, thus 1, in records of
//!   version 1), so that the catalog knows a volume's format without mounting it;
//! - the catalog holds the marker `format-version` in its default column family, absent in
//!   a version 1 catalog. Opening a version 1 tier writes it and closes a version 1 open
//!   volume (new objects go to a new, labelled one).
//!
//! A recall from a labelled volume first reads its label back: a volume whose label is gone
//! or names another volume or format is not read (the recall fails as a read failure).
//!
//! On open, a marker or a volume record newer than this code knows is refused with
//! [`TierError::Format`] before anything is changed.
//!
//! # Writing
//! A body is spooled to a local file (hashed on the way), then copied onto the open volume
//! under the writer lock, the volume is fdatasynced, and only then the catalog entries are
//! written in one batch with a synced WAL. A crash before the catalog write leaves
//! unreferenced bytes on a volume, never an entry without bytes; the next write goes after
//! them. Objects written together by [`Tier::put_many`] go contiguously onto one volume (a
//! new one if the batch does not fit in what is left of the open one); a batch larger than
//! a whole volume spans consecutive volumes, each object whole on one volume. No object may
//! be larger than a volume.
//!
//! # Reading: recalls
//! Objects are offline: [`Tier::get`] fails with [`TierError::NeedsRecall`] until the object
//! was recalled. [`Tier::recall`] puts the object on the recall queue (once, however often
//! it is asked) and answers [`RecallStatus::InProgress`]; a background task plays the robot:
//! it serves the queue in (volume, offset) order, finishing every queued request for the
//! mounted volume before it mounts another one (each mount costs
//! [`TapeConfig::mount_delay`]), and copies each object into the staging area while checking
//! its BLAKE3. From then on `recall` answers [`RecallStatus::Ready`] and `get` serves the
//! staged copy, whole (checksum-verified as it streams) or by range.
//!
//! # Damaged media
//! When the bytes read from a volume do not hash to the catalogued checksum, nothing is
//! staged and the failure is remembered for as long as a staged copy would be: `recall`
//! and `get` of that object fail with [`TierError::ChecksumMismatch`] (naming the expected
//! and the actual checksum); after [`TapeConfig::staging_ttl`], or when the object is
//! deleted or overwritten, or the tier is reopened, a new recall reads the volume again.
//! Other failures to read a volume (an I/O error, a volume that lost its label or ends inside
//! the object) are remembered the same way and reported as [`TierError::Shared`] around the
//! original [`TierError::Io`] or [`TierError::Corrupt`].
//! `head` answers from the catalog and does not read the volume.
//!
//! # Deleting
//! A delete removes the catalog entry (synced) and any staged copy; the volume's live bytes
//! and live object count go down. Space on a volume is never reused (as on a real tape):
//! reclaiming it means copying the live objects elsewhere and retiring the volume, which is
//! not implemented.

use archive_core::checksum::{Checksum, ChecksumHasher};
use archive_core::format::FormatError;
use archive_core::tier::{
    verify_stream, Availability, ByteStream, GetOpts, GetResult, ObjectKey, ObjectMeta, PutOpts, RecallStatus, Tier,
    TierCapabilities, TierError, TierName,
};
use async_trait::async_trait;
use futures::StreamExt;
use rocksdb::{ColumnFamilyDescriptor, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Notify;

/// Default volume capacity: 10 GiB.
pub const DEFAULT_VOLUME_BYTES: u64 = 10240 << 20;
/// Default time the robot takes to mount a volume.
pub const DEFAULT_MOUNT_DELAY: Duration = Duration::from_secs(2);
/// Default time a recalled copy stays readable.
pub const DEFAULT_STAGING_TTL: Duration = Duration::from_secs(24 * 3600);

/// Format version of the tape tier this code writes: version 2 volumes start with a
/// [volume label](#format-versions); version 1 volumes (written before labels existed) have
/// none and are read as they always were.
pub const TAPE_FORMAT_VERSION: u32 = 2;
/// The oldest tape format this code reads.
pub const OLDEST_TAPE_FORMAT_VERSION: u32 = 1;
/// Length of a volume label.
pub const VOLUME_LABEL_LEN: u64 = 24;
/// A volume label's magic.
const VOLUME_MAGIC: [u8; 8] = *b"VNA-VOL\n";
/// Key of the tier's format marker in the catalog's default column family (its value: the
/// version in decimal). Absent in a catalog written by version 1.
const FORMAT_VERSION_KEY: &[u8] = b"format-version";

const CF_OBJECTS: &str = "objects";
const CF_VOLUMES: &str = "volumes";
/// Bytes copied at a time between spool, volume and staging files.
const COPY_CHUNK: usize = 1 << 20;
/// Chunk size of bodies served from the staging area.
const READ_CHUNK: usize = 256 << 10;
/// How many served recalls [`TapeTier::recall_log`] remembers.
const RECALL_LOG_LEN: usize = 1024;
/// Longest pause between two sweeps of expired staged copies.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// How a tape tier is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapeConfig {
    /// Root directory (volumes, catalog, staging area).
    pub root: PathBuf,
    /// Capacity of each new volume, in bytes; also the largest object the tier takes.
    pub volume_bytes: u64,
    /// Simulated time to mount a volume before reading from it.
    pub mount_delay: Duration,
    /// How long a recalled copy (or a failed recall) is remembered.
    pub staging_ttl: Duration,
}

impl TapeConfig {
    /// A configuration with the default volume size, mount delay and staging time.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            volume_bytes: DEFAULT_VOLUME_BYTES,
            mount_delay: DEFAULT_MOUNT_DELAY,
            staging_ttl: DEFAULT_STAGING_TTL,
        }
    }
}

/// Where one object lives on the volumes: a record of the volume catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// Volume number (the `N` of `VNNNNNN.vol`).
    pub volume: u64,
    /// Offset of the object's first byte in the volume.
    pub offset: u64,
    /// Length of the object in bytes.
    pub len: u64,
    /// BLAKE3 of the object.
    pub checksum: Checksum,
    /// When the object was written, in seconds since the Unix epoch.
    pub written_at: u64,
}

/// Whether a volume still takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeState {
    /// The volume being written.
    Open,
    /// Closed: fsynced, never written again.
    Full,
}

/// One volume as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// Volume number.
    pub id: u64,
    /// Open or full.
    pub state: VolumeState,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Bytes written to the volume (including unreferenced bytes of failed writes).
    pub used: u64,
    /// Objects ever written to the volume.
    pub objects: u64,
    /// Objects on the volume that are still catalogued (not deleted or overwritten).
    pub live_objects: u64,
    /// Bytes of the live objects.
    pub live_bytes: u64,
    /// Format version of the volume: 2 for a volume that starts with its label, 1 (also when
    /// the field is absent, in records written by version 1) for one without.
    #[serde(default = "legacy_volume_format")]
    pub format: u32,
}

fn legacy_volume_format() -> u32 {
    1
}

impl VolumeInfo {
    fn empty(id: u64, capacity: u64) -> Self {
        Self {
            id,
            state: VolumeState::Open,
            capacity,
            used: 0,
            objects: 0,
            live_objects: 0,
            live_bytes: 0,
            format: TAPE_FORMAT_VERSION,
        }
    }

    /// The volume's label, `VNNNNNN`.
    pub fn label(&self) -> String {
        volume_label(self.id)
    }
}

/// What became of one recall request the robot served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecallOutcome {
    /// The object was copied to the staging area and is readable.
    Staged,
    /// The bytes on the volume do not hash to the catalogued checksum; nothing was staged.
    ChecksumMismatch,
    /// The volume could not be read; nothing was staged.
    ReadFailed,
    /// The object was deleted or overwritten while it was being recalled; the copy was dropped.
    Superseded,
}

/// One recall request the robot served, in the order served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecallLogEntry {
    /// The object.
    pub key: ObjectKey,
    /// The volume it was read from.
    pub volume: u64,
    /// Its offset on the volume.
    pub offset: u64,
    /// What came of it.
    pub outcome: RecallOutcome,
}

/// Counters of the recall machinery since the tier was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecallStats {
    /// Requests waiting (including the one being copied).
    pub queued: usize,
    /// Objects readable from the staging area now.
    pub staged: usize,
    /// The volume in the drive, if any.
    pub mounted: Option<u64>,
    /// Volume mounts so far.
    pub mounts: u64,
    /// Recalls that staged their object.
    pub served: u64,
    /// Recalls that failed (damaged or unreadable volume).
    pub failed: u64,
    /// Whether the robot is paused ([`TapeTier::pause_recalls`]).
    pub paused: bool,
}

/// The label a new volume starts with: magic, format version (u32 LE), 4 zero bytes, and the
/// volume number (u64 LE).
fn volume_label_bytes(id: u64) -> [u8; VOLUME_LABEL_LEN as usize] {
    let mut l = [0u8; VOLUME_LABEL_LEN as usize];
    l[0..8].copy_from_slice(&VOLUME_MAGIC);
    l[8..12].copy_from_slice(&TAPE_FORMAT_VERSION.to_le_bytes());
    l[16..24].copy_from_slice(&id.to_le_bytes());
    l
}

/// What the start of a volume file says about its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFormat {
    /// No bytes at all.
    Empty,
    /// Fewer bytes than a label, all of them the start of this volume's label: a creation a
    /// crash interrupted.
    PartialLabel,
    /// A label naming this format version.
    Label(u32),
    /// No label: a version 1 volume (or a label of another volume number).
    Legacy,
}

/// Reads the format of volume `id` from the start of its file.
pub fn volume_format(file: &fs::File, id: u64) -> std::io::Result<VolumeFormat> {
    let mut head = [0u8; VOLUME_LABEL_LEN as usize];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64)? {
            0 => break,
            read => n += read,
        }
    }
    let expected = volume_label_bytes(id);
    Ok(if n == 0 {
        VolumeFormat::Empty
    } else if n == head.len() && head[0..8] == VOLUME_MAGIC && head[16..24] == expected[16..24] {
        VolumeFormat::Label(u32::from_le_bytes([head[8], head[9], head[10], head[11]]))
    } else if n < head.len() && head[..n] == expected[..n] {
        VolumeFormat::PartialLabel
    } else {
        VolumeFormat::Legacy
    })
}

/// Makes `file` (empty or holding the start of its label) a new volume: its label, synced;
/// returns the append position.
fn write_volume_label(file: &fs::File, id: u64) -> std::io::Result<u64> {
    file.set_len(0)?;
    file.write_all_at(&volume_label_bytes(id), 0)?;
    file.sync_data()?;
    Ok(VOLUME_LABEL_LEN)
}

/// Prepares a volume file for appending: labels an empty (or half-labelled) one; returns its
/// format version and append position (its length).
fn prepare_volume(file: &fs::File, id: u64) -> std::io::Result<(u32, u64)> {
    match volume_format(file, id)? {
        VolumeFormat::Empty | VolumeFormat::PartialLabel => Ok((TAPE_FORMAT_VERSION, write_volume_label(file, id)?)),
        VolumeFormat::Label(v) => Ok((v, file.metadata()?.len())),
        VolumeFormat::Legacy => Ok((1, file.metadata()?.len())),
    }
}

/// The label of volume `id`: `V` and six digits.
pub fn volume_label(id: u64) -> String {
    format!("V{id:06}")
}

fn volume_path(root: &Path, id: u64) -> PathBuf {
    root.join("volumes").join(format!("{}.vol", volume_label(id)))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The catalog in RocksDB.
struct Index {
    name: TierName,
    db: DB,
}

impl Index {
    fn err(&self, what: &str, e: impl Into<archive_core::tier::BoxError>) -> TierError {
        TierError::index(&self.name, format!("volume catalog: {what}"), e)
    }

    fn corrupt(&self, what: &str, e: impl Into<archive_core::tier::BoxError>) -> TierError {
        TierError::corrupt_by(&self.name, format!("volume catalog: {what} is corrupt"), e)
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, TierError> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| TierError::corrupt(&self.name, format!("volume catalog: missing column family {name}")))
    }

    fn entry(&self, key: &ObjectKey) -> Result<Option<CatalogEntry>, TierError> {
        match self.db.get_cf(self.cf(CF_OBJECTS)?, key.as_str()) {
            Ok(Some(v)) => {
                serde_json::from_slice(&v).map(Some).map_err(|e| self.corrupt(&format!("entry of {key}"), e))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(self.err("read", e)),
        }
    }

    fn volume(&self, id: u64) -> Result<Option<VolumeInfo>, TierError> {
        match self.db.get_cf(self.cf(CF_VOLUMES)?, id.to_be_bytes()) {
            Ok(Some(v)) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.corrupt(&format!("record of {}", volume_label(id)), e)),
            Ok(None) => Ok(None),
            Err(e) => Err(self.err("read", e)),
        }
    }

    fn volumes(&self) -> Result<Vec<VolumeInfo>, TierError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_VOLUMES)?, rocksdb::IteratorMode::Start) {
            let (_, v) = item.map_err(|e| self.err("scan", e))?;
            out.push(serde_json::from_slice(&v).map_err(|e| self.corrupt("volume record", e))?);
        }
        Ok(out)
    }

    fn put_volume(&self, batch: &mut WriteBatch, v: &VolumeInfo) -> Result<(), TierError> {
        let value = serde_json::to_vec(v).map_err(|e| self.err("encoding a volume record", e))?;
        batch.put_cf(self.cf(CF_VOLUMES)?, v.id.to_be_bytes(), value);
        Ok(())
    }

    fn put_entry(&self, batch: &mut WriteBatch, key: &ObjectKey, e: &CatalogEntry) -> Result<(), TierError> {
        let value = serde_json::to_vec(e).map_err(|e| self.err("encoding an entry", e))?;
        batch.put_cf(self.cf(CF_OBJECTS)?, key.as_str(), value);
        Ok(())
    }

    /// The format marker: `None` when absent (a catalog of version 1); a newer version than
    /// this code reads, or a volume record of one, is refused with [`TierError::Format`].
    fn check_format(&self) -> Result<Option<u32>, TierError> {
        let refuse = |what: String, source| TierError::Format { tier: self.name.clone(), what, source };
        let check = |v| FormatError::check_marker("tape tier", v, OLDEST_TAPE_FORMAT_VERSION, TAPE_FORMAT_VERSION);
        let marker = match self.db.get(FORMAT_VERSION_KEY).map_err(|e| self.err("read", e))? {
            None => None,
            Some(raw) => match std::str::from_utf8(&raw).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
                Some(v) => Some(check(v).map_err(|e| refuse("its volume catalog".into(), e))?),
                None => {
                    return Err(refuse(
                        "its volume catalog".into(),
                        FormatError::UnknownVersion {
                            kind: "tape tier",
                            found: None,
                            oldest: OLDEST_TAPE_FORMAT_VERSION,
                            supported: TAPE_FORMAT_VERSION,
                        },
                    ))
                }
            },
        };
        for v in self.volumes()? {
            check(v.format).map_err(|e| refuse(format!("volume {}", v.label()), e))?;
        }
        Ok(marker)
    }

    /// Writes a batch with a synced WAL.
    fn commit(&self, batch: WriteBatch) -> Result<(), TierError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(|e| self.err("write", e))
    }
}

/// The open volume.
struct Writer {
    id: u64,
    file: fs::File,
    /// Append position: the file's length.
    used: u64,
    capacity: u64,
    /// Where objects start: after the label (0 on a version 1 volume).
    start: u64,
}

impl Writer {
    /// Whether an object was written to the volume (or bytes a crash left).
    fn has_data(&self) -> bool {
        self.used > self.start
    }
}

/// Where objects start on a volume of this format.
fn data_start(format: u32) -> u64 {
    if format >= 2 {
        VOLUME_LABEL_LEN
    } else {
        0
    }
}

/// Why copying an object off a volume failed.
#[derive(Debug, Clone)]
enum StageFailure {
    Mismatch {
        actual: Checksum,
    },
    /// The volume could not be read; the error is shared by every answer given for the object
    /// while the failure is remembered.
    Read(Arc<TierError>),
}

impl StageFailure {
    fn read(e: TierError) -> Self {
        StageFailure::Read(Arc::new(e))
    }
}

struct Staged {
    entry: CatalogEntry,
    path: PathBuf,
    at: Instant,
}

struct Failed {
    entry: CatalogEntry,
    at: Instant,
    failure: StageFailure,
}

/// What the recall state says about one object version.
enum Lookup {
    Ready(PathBuf),
    Failed(TierError),
    Queued,
    Absent,
}

/// The recall queue, the staging area and the robot's state (in memory).
#[derive(Default)]
struct Recalls {
    /// Requests by (volume, offset, key): the robot's reading order.
    queue: BTreeMap<(u64, u64, String), (ObjectKey, CatalogEntry)>,
    /// Where each queued key sits in `queue`.
    queued: HashMap<ObjectKey, (u64, u64)>,
    staged: HashMap<ObjectKey, Staged>,
    failed: HashMap<ObjectKey, Failed>,
    mounted: Option<u64>,
    mounts: u64,
    served: u64,
    failures: u64,
    paused: bool,
    log: VecDeque<RecallLogEntry>,
    last_sweep: Option<Instant>,
}

impl Recalls {
    fn unqueue(&mut self, key: &ObjectKey) {
        if let Some((volume, offset)) = self.queued.remove(key) {
            self.queue.remove(&(volume, offset, key.as_str().to_string()));
        }
    }

    /// Drops everything known about `key`; returns the staged file to remove.
    fn forget(&mut self, key: &ObjectKey) -> Option<PathBuf> {
        self.unqueue(key);
        self.failed.remove(key);
        self.staged.remove(key).map(|s| s.path)
    }

    /// Drops expired staged copies and failures (at most once per interval); returns the
    /// staged files to remove.
    fn sweep(&mut self, ttl: Duration, trash: &mut Vec<PathBuf>) {
        let interval = ttl.min(MAX_SWEEP_INTERVAL);
        if self.last_sweep.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        self.last_sweep = Some(Instant::now());
        let expired: Vec<ObjectKey> =
            self.staged.iter().filter(|(_, s)| s.at.elapsed() >= ttl).map(|(k, _)| k.clone()).collect();
        for key in expired {
            if let Some(s) = self.staged.remove(&key) {
                trash.push(s.path);
            }
        }
        self.failed.retain(|_, f| f.at.elapsed() < ttl);
    }

    /// The state of the catalogued version `entry` of `key`, dropping stale or expired state.
    fn lookup(&mut self, key: &ObjectKey, entry: &CatalogEntry, ttl: Duration, trash: &mut Vec<PathBuf>) -> Lookup {
        self.sweep(ttl, trash);
        if let Some(s) = self.staged.get(key) {
            if s.entry == *entry && s.at.elapsed() < ttl {
                return Lookup::Ready(s.path.clone());
            }
            if let Some(s) = self.staged.remove(key) {
                trash.push(s.path);
            }
        }
        if let Some(f) = self.failed.get(key) {
            if f.entry == *entry && f.at.elapsed() < ttl {
                return Lookup::Failed(failure_error(key, entry, &f.failure));
            }
            self.failed.remove(key);
        }
        if let Some(&(volume, offset)) = self.queued.get(key) {
            let current = self.queue.get(&(volume, offset, key.as_str().to_string())).map(|(_, e)| e);
            if current == Some(entry) {
                return Lookup::Queued;
            }
            self.unqueue(key);
        }
        Lookup::Absent
    }

    fn enqueue(&mut self, key: &ObjectKey, entry: &CatalogEntry) {
        self.queue.insert((entry.volume, entry.offset, key.as_str().to_string()), (key.clone(), entry.clone()));
        self.queued.insert(key.clone(), (entry.volume, entry.offset));
    }

    /// The next request to serve: the first of the mounted volume, else the first overall.
    fn next(&self) -> Option<(ObjectKey, CatalogEntry)> {
        if self.paused {
            return None;
        }
        let on_mounted = self
            .mounted
            .and_then(|v| self.queue.range((v, 0, String::new())..).next().filter(|((volume, _, _), _)| *volume == v));
        on_mounted.or_else(|| self.queue.iter().next()).map(|(_, (k, e))| (k.clone(), e.clone()))
    }

    fn log(&mut self, key: ObjectKey, entry: &CatalogEntry, outcome: RecallOutcome) {
        if self.log.len() >= RECALL_LOG_LEN {
            self.log.pop_front();
        }
        self.log.push_back(RecallLogEntry { key, volume: entry.volume, offset: entry.offset, outcome });
    }
}

fn failure_error(key: &ObjectKey, entry: &CatalogEntry, failure: &StageFailure) -> TierError {
    match failure {
        StageFailure::Mismatch { actual } => {
            TierError::ChecksumMismatch { key: key.clone(), expected: entry.checksum, actual: *actual }
        }
        StageFailure::Read(e) => TierError::for_key(e, key),
    }
}

struct Inner {
    name: TierName,
    root: PathBuf,
    index: Index,
    volume_bytes: u64,
    mount_delay: Duration,
    staging_ttl: Duration,
    writer: parking_lot::Mutex<Writer>,
    recalls: parking_lot::Mutex<Recalls>,
    /// Wakes the robot: new requests, resumed, or the tier dropped.
    wake: Arc<Notify>,
    worker: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Names of spool and staging files.
    seq: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The robot holds only a weak reference while idle: waking it lets it exit.
        self.wake.notify_one();
    }
}

/// The tape tier: see the module documentation.
#[derive(Clone)]
pub struct TapeTier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TapeTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapeTier")
            .field("name", &self.inner.name)
            .field("root", &self.inner.root)
            .field("volume_bytes", &self.inner.volume_bytes)
            .finish_non_exhaustive()
    }
}

/// Removes a directory's contents (the directory itself stays or is created).
fn reset_dir(name: &TierName, dir: &Path) -> Result<(), TierError> {
    let io = |what: String, e| TierError::io(name, what, e);
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| io(format!("emptying {}", dir.display()), e))?;
    }
    fs::create_dir_all(dir).map_err(|e| io(format!("creating {}", dir.display()), e))
}

fn sync_dir(name: &TierName, dir: &Path) -> Result<(), TierError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TierError::io(name, format!("syncing {}", dir.display()), e))
}

/// Files of a put that are removed when it ends, however it ends.
#[derive(Default)]
struct SpoolFiles(Vec<PathBuf>);

impl Drop for SpoolFiles {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

/// A body received into a spool file.
struct Spooled {
    key: ObjectKey,
    path: PathBuf,
    len: u64,
    checksum: Checksum,
    overwrite: bool,
}

impl TapeTier {
    /// Opens (creating if needed) a tape tier.
    ///
    /// Empties the staging and spool areas, and opens the last open volume for appending
    /// (after any unreferenced bytes a crash left), or a new one.
    pub fn open(name: TierName, config: TapeConfig) -> Result<TapeTier, TierError> {
        if config.volume_bytes <= VOLUME_LABEL_LEN {
            return Err(TierError::config(
                &name,
                format!("the volume size must be larger than a volume label ({VOLUME_LABEL_LEN} bytes)"),
                None,
            ));
        }
        let root = config.root;
        let volumes = root.join("volumes");
        fs::create_dir_all(&volumes).map_err(|e| TierError::io(&name, format!("creating {}", volumes.display()), e))?;
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // A newer vna may have added column families: open them too, so that the format
        // marker can refuse the catalog with a clear error.
        let mut families = vec![CF_OBJECTS.to_string(), CF_VOLUMES.to_string()];
        for cf in DB::list_cf(&rocksdb::Options::default(), root.join("index")).unwrap_or_default() {
            if cf != rocksdb::DEFAULT_COLUMN_FAMILY_NAME && !families.contains(&cf) {
                families.push(cf);
            }
        }
        let cfs = families.iter().map(|n| ColumnFamilyDescriptor::new(n, rocksdb::Options::default()));
        let db = DB::open_cf_descriptors(&opts, root.join("index"), cfs)
            .map_err(|e| TierError::index(&name, "cannot open the volume catalog", e))?;
        let index = Index { name: name.clone(), db };
        // Before anything is changed: a tier written by a newer vna is refused.
        let marker = index.check_format()?;
        // Only after the catalog's lock is held: another instance on this root fails above.
        reset_dir(&name, &root.join("staging"))?;
        reset_dir(&name, &root.join("spool"))?;
        let writer = open_writer(&index, &root, config.volume_bytes)?;
        if marker != Some(TAPE_FORMAT_VERSION) {
            // Created now, or upgraded from version 1 (whose volumes stay readable as they are).
            let mut wo = WriteOptions::default();
            wo.set_sync(true);
            index
                .db
                .put_opt(FORMAT_VERSION_KEY, TAPE_FORMAT_VERSION.to_string(), &wo)
                .map_err(|e| index.err("writing the format marker", e))?;
        }
        let inner = Inner {
            name,
            root,
            index,
            volume_bytes: config.volume_bytes,
            mount_delay: config.mount_delay,
            staging_ttl: config.staging_ttl,
            writer: parking_lot::Mutex::new(writer),
            recalls: parking_lot::Mutex::new(Recalls::default()),
            wake: Arc::new(Notify::new()),
            worker: parking_lot::Mutex::new(None),
            seq: AtomicU64::new(0),
        };
        Ok(TapeTier { inner: Arc::new(inner) })
    }

    /// The tier's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The file holding volume `id`.
    pub fn volume_path(&self, id: u64) -> PathBuf {
        volume_path(&self.inner.root, id)
    }

    /// The catalog entry of an object: which volume holds it, where, and its checksum.
    pub fn catalog_entry(&self, key: &ObjectKey) -> Result<Option<CatalogEntry>, TierError> {
        self.inner.index.entry(key)
    }

    /// Every volume with its state, capacity, usage and live contents, by id.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, TierError> {
        self.inner.index.volumes()
    }

    /// Recall requests waiting for the robot (including the one being copied).
    pub fn recall_queue_len(&self) -> usize {
        self.inner.recalls.lock().queue.len()
    }

    /// Counters of the recall machinery.
    pub fn recall_stats(&self) -> RecallStats {
        let r = self.inner.recalls.lock();
        RecallStats {
            queued: r.queue.len(),
            staged: r.staged.len(),
            mounted: r.mounted,
            mounts: r.mounts,
            served: r.served,
            failed: r.failures,
            paused: r.paused,
        }
    }

    /// The last recalls the robot served (up to 1024), oldest first.
    pub fn recall_log(&self) -> Vec<RecallLogEntry> {
        self.inner.recalls.lock().log.iter().cloned().collect()
    }

    /// Stops the robot from starting on further requests (maintenance); requests keep
    /// queueing. The copy under way, if any, finishes.
    pub fn pause_recalls(&self) {
        self.inner.recalls.lock().paused = true;
    }

    /// Lets the robot serve the queue again after [`TapeTier::pause_recalls`].
    pub fn resume_recalls(&self) {
        self.inner.recalls.lock().paused = false;
        self.inner.wake.notify_one();
    }

    /// Receives a body into a spool file, hashing it; refuses bodies larger than a volume.
    async fn spool(&self, key: &ObjectKey, mut body: ByteStream, files: &mut SpoolFiles) -> Result<Spooled, TierError> {
        let inner = &self.inner;
        let path = inner.root.join("spool").join(format!("{}.part", inner.next_seq()));
        files.0.push(path.clone());
        let io = |e| inner.io(format!("spooling {key}"), e);
        let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
        let mut hasher = ChecksumHasher::new();
        let mut len = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(TierError::into_body)?;
            len += chunk.len() as u64;
            if len > inner.volume_bytes {
                return Err(inner.too_large(key, len));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(Spooled { key: key.clone(), path, len, checksum: hasher.finish(), overwrite: false })
    }

    async fn write_objects(&self, items: Vec<(ObjectKey, ByteStream, PutOpts)>) -> Result<Vec<ObjectMeta>, TierError> {
        let mut files = SpoolFiles::default();
        let mut spooled = Vec::with_capacity(items.len());
        for (key, body, opts) in items {
            // Early answer for a taken key; checked again under the writer lock.
            if !opts.overwrite && self.inner.index.entry(&key)?.is_some() {
                return Err(TierError::AlreadyExists(key));
            }
            let mut s = self.spool(&key, body, &mut files).await?;
            if let Some(expected) = opts.expected_checksum {
                if expected != s.checksum {
                    return Err(TierError::ChecksumMismatch { key, expected, actual: s.checksum });
                }
            }
            s.overwrite = opts.overwrite;
            spooled.push(s);
        }
        let inner = self.inner.clone();
        blocking(move || {
            let result = inner.commit(&spooled);
            drop(files);
            result
        })
        .await
    }

    /// Opens the staged copy of `key` for reading, or answers why it cannot be read.
    async fn open_staged(&self, key: &ObjectKey, entry: &CatalogEntry) -> Result<tokio::fs::File, TierError> {
        let inner = &self.inner;
        let mut trash = Vec::new();
        let lookup = inner.recalls.lock().lookup(key, entry, inner.staging_ttl, &mut trash);
        remove_files(trash);
        let path = match lookup {
            Lookup::Ready(path) => path,
            Lookup::Failed(e) => return Err(e),
            Lookup::Queued | Lookup::Absent => return Err(TierError::NeedsRecall(key.clone())),
        };
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            // Expired or dropped meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(TierError::NeedsRecall(key.clone())),
            Err(e) => return Err(inner.io(format!("opening the staged copy of {key}"), e)),
        };
        let len = file.metadata().await.map_err(|e| inner.io(format!("sizing the staged copy of {key}"), e))?.len();
        if len != entry.len {
            tracing::warn!(tier = %inner.name, %key, len, expected = entry.len, "staged copy has the wrong size; dropping it");
            let stale = inner.recalls.lock().forget(key);
            remove_files(stale);
            return Err(TierError::NeedsRecall(key.clone()));
        }
        Ok(file)
    }
}

/// Opens the volume to append to: the last open one, or a new one.
fn open_writer(index: &Index, root: &Path, volume_bytes: u64) -> Result<Writer, TierError> {
    let name = &index.name;
    let dir = root.join("volumes");
    let io = |what: String, e| TierError::io(name, what, e);
    let last_file = fs::read_dir(&dir)
        .map_err(|e| io(format!("listing {}", dir.display()), e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file_name = e.file_name().to_string_lossy().into_owned();
            file_name.strip_prefix('V')?.strip_suffix(".vol")?.parse::<u64>().ok()
        })
        .max();
    let last_record = index.volumes()?.last().map(|v| v.id);
    let mut id = last_file.unwrap_or(0).max(last_record.unwrap_or(0)).max(1);
    loop {
        let record = index.volume(id)?;
        if record.as_ref().is_some_and(|r| r.state == VolumeState::Full) {
            id += 1;
            continue;
        }
        let path = volume_path(root, id);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io(format!("opening {}", path.display()), e))?;
        let mut record = record.unwrap_or_else(|| VolumeInfo::empty(id, volume_bytes));
        let mut batch = WriteBatch::default();
        if record.used == 0 {
            // Nothing catalogued on it: label it (unless it holds unlabelled bytes).
            let (format, _) = prepare_volume(&file, id).map_err(|e| io(format!("labelling {}", path.display()), e))?;
            record.format = format;
        }
        let len = file.metadata().map_err(|e| io(format!("sizing {}", path.display()), e))?.len();
        if record.format < TAPE_FORMAT_VERSION && len > 0 {
            // A version 1 volume has no label to put in front of its data: new objects go to
            // a new, labelled volume.
            record.used = record.used.max(len);
            record.state = VolumeState::Full;
            index.put_volume(&mut batch, &record)?;
            index.commit(batch)?;
            id += 1;
            continue;
        }
        if len < record.used {
            // Bytes the catalog counts are missing: never append over them.
            tracing::error!(tier = %name, volume = %volume_label(id), len, used = record.used, "volume is shorter than its catalog record; closing it");
            record.state = VolumeState::Full;
            index.put_volume(&mut batch, &record)?;
            index.commit(batch)?;
            id += 1;
            continue;
        }
        // Unreferenced bytes a crash left count as used; appends go after them.
        record.used = len;
        sync_dir(name, &dir)?;
        index.put_volume(&mut batch, &record)?;
        // Only one volume is open: an older one left open by a crash is closed.
        for mut older in index.volumes()?.into_iter().filter(|v| v.id < id && v.state == VolumeState::Open) {
            older.state = VolumeState::Full;
            index.put_volume(&mut batch, &older)?;
        }
        index.commit(batch)?;
        return Ok(Writer { id, file, used: len, capacity: record.capacity, start: data_start(record.format) });
    }
}

/// Copies an object's bytes off a volume into `dst`, checking their BLAKE3.
fn copy_out(name: &TierName, src: &fs::File, dst: &Path, entry: &CatalogEntry) -> Result<(), StageFailure> {
    let volume = volume_label(entry.volume);
    let read_err = |what: &str, e: std::io::Error| {
        StageFailure::read(TierError::io(name, format!("recalling from volume {volume}: {what}"), e))
    };
    let mut out = fs::File::create(dst).map_err(|e| read_err("creating the staged copy", e))?;
    let mut hasher = ChecksumHasher::new();
    let mut buf = vec![0u8; COPY_CHUNK.min(entry.len as usize).max(1)];
    let mut copied = 0u64;
    while copied < entry.len {
        let want = buf.len().min((entry.len - copied) as usize);
        let n = src.read_at(&mut buf[..want], entry.offset + copied).map_err(|e| read_err("reading", e))?;
        if n == 0 {
            return Err(StageFailure::read(TierError::corrupt(
                name,
                format!(
                    "volume {volume} ends at byte {} inside the object ({} bytes at {})",
                    entry.offset + copied,
                    entry.len,
                    entry.offset
                ),
            )));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| read_err("writing the staged copy", e))?;
        copied += n as u64;
    }
    let actual = hasher.finish();
    if actual != entry.checksum {
        return Err(StageFailure::Mismatch { actual });
    }
    Ok(())
}

fn remove_files(paths: impl IntoIterator<Item = PathBuf>) {
    for path in paths {
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "removing a staged copy failed");
            }
        }
    }
}

impl Inner {
    fn io(&self, what: String, e: std::io::Error) -> TierError {
        TierError::io(&self.name, what, e)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Bytes of objects a new volume holds (its capacity less its label).
    fn room(&self) -> u64 {
        self.volume_bytes.saturating_sub(VOLUME_LABEL_LEN)
    }

    fn too_large(&self, key: &ObjectKey, len: u64) -> TierError {
        TierError::InsufficientSpace {
            tier: self.name.clone(),
            detail: format!(
                "object {key} ({len}+ bytes) is larger than a volume holds ({} bytes after its label)",
                self.room()
            ),
            source: None,
        }
    }

    /// Closes the open volume (fsync, marked full) and opens the next one.
    fn roll(&self, w: &mut Writer) -> Result<(), TierError> {
        w.file.sync_all().map_err(|e| self.io(format!("closing volume {}", volume_label(w.id)), e))?;
        let mut old = self.index.volume(w.id)?.unwrap_or_else(|| VolumeInfo::empty(w.id, w.capacity));
        old.state = VolumeState::Full;
        old.used = old.used.max(w.used);
        let id = w.id + 1;
        let path = volume_path(&self.root, id);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| self.io(format!("creating {}", path.display()), e))?;
        // A new volume gets its label; a file left by a crash between creating it and
        // cataloguing it keeps its bytes, and appends go after them.
        let (format, used) =
            prepare_volume(&file, id).map_err(|e| self.io(format!("labelling {}", path.display()), e))?;
        sync_dir(&self.name, &self.root.join("volumes"))?;
        let mut new = VolumeInfo::empty(id, self.volume_bytes);
        new.used = used;
        new.format = format;
        let mut batch = WriteBatch::default();
        self.index.put_volume(&mut batch, &old)?;
        self.index.put_volume(&mut batch, &new)?;
        self.index.commit(batch)?;
        tracing::info!(tier = %self.name, closed = %volume_label(w.id), opened = %volume_label(id), "volume full");
        *w = Writer { id, file, used, capacity: self.volume_bytes, start: data_start(format) };
        Ok(())
    }

    /// Appends a spool file to the open volume at its append position.
    fn append(&self, w: &mut Writer, s: &Spooled) -> Result<(), TierError> {
        let mut src = fs::File::open(&s.path).map_err(|e| self.io(format!("reopening the spool of {}", s.key), e))?;
        let mut buf = vec![0u8; COPY_CHUNK.min(s.len as usize).max(1)];
        let mut done = 0u64;
        while done < s.len {
            let want = buf.len().min((s.len - done) as usize);
            let n = src.read(&mut buf[..want]).map_err(|e| self.io(format!("reading the spool of {}", s.key), e))?;
            if n == 0 {
                return Err(TierError::corrupt(&self.name, format!("the spool of {} is short", s.key)));
            }
            w.file
                .write_all_at(&buf[..n], w.used + done)
                .map_err(|e| self.io(format!("writing {} to volume {}", s.key, volume_label(w.id)), e))?;
            done += n as u64;
        }
        Ok(())
    }

    /// Writes spooled objects onto the volumes and catalogues them (see the module docs).
    fn commit(&self, items: &[Spooled]) -> Result<Vec<ObjectMeta>, TierError> {
        let mut w = self.writer.lock();
        let mut seen: HashSet<&ObjectKey> = HashSet::new();
        for s in items {
            if !s.overwrite && (seen.contains(&s.key) || self.index.entry(&s.key)?.is_some()) {
                return Err(TierError::AlreadyExists(s.key.clone()));
            }
            seen.insert(&s.key);
        }
        // A batch that fits on one volume goes onto one volume, contiguously.
        let total = items.iter().fold(0u64, |t, s| t.saturating_add(s.len));
        if w.has_data() && total > w.capacity.saturating_sub(w.used) && total <= self.room() {
            self.roll(&mut w)?;
        }
        let written_at = unix_now();
        let mut placed = Vec::with_capacity(items.len());
        for s in items {
            if w.has_data() && w.used.saturating_add(s.len) > w.capacity {
                self.roll(&mut w)?;
            }
            if w.used.saturating_add(s.len) > w.capacity {
                return Err(self.too_large(&s.key, s.len));
            }
            let offset = w.used;
            if let Err(e) = self.append(&mut w, s) {
                // Whatever was written is unreferenced; later appends go after it.
                w.used = w.file.metadata().map(|m| m.len()).unwrap_or(w.used).max(w.used);
                return Err(e);
            }
            w.used += s.len;
            placed.push(CatalogEntry { volume: w.id, offset, len: s.len, checksum: s.checksum, written_at });
        }
        w.file.sync_data().map_err(|e| self.io(format!("syncing volume {}", volume_label(w.id)), e))?;

        let mut volumes: BTreeMap<u64, VolumeInfo> = BTreeMap::new();
        let mut batch = WriteBatch::default();
        let mut pending: HashMap<&ObjectKey, &CatalogEntry> = HashMap::new();
        for (s, e) in items.iter().zip(&placed) {
            let previous = match pending.get(&s.key) {
                Some(p) => Some((*p).clone()),
                None => self.index.entry(&s.key)?,
            };
            if let Some(p) = previous {
                let v = self.volume_mut(&mut volumes, p.volume)?;
                v.live_objects = v.live_objects.saturating_sub(1);
                v.live_bytes = v.live_bytes.saturating_sub(p.len);
            }
            let v = self.volume_mut(&mut volumes, e.volume)?;
            v.objects += 1;
            v.live_objects += 1;
            v.live_bytes += e.len;
            v.used = v.used.max(e.offset + e.len);
            self.index.put_entry(&mut batch, &s.key, e)?;
            pending.insert(&s.key, e);
        }
        let (open_id, open_used) = (w.id, w.used);
        let v = self.volume_mut(&mut volumes, open_id)?;
        v.used = v.used.max(open_used);
        for v in volumes.values() {
            self.index.put_volume(&mut batch, v)?;
        }
        self.index.commit(batch)?;
        drop(w);

        // Staged copies or queued recalls of replaced versions are stale now.
        let mut trash = Vec::new();
        {
            let mut r = self.recalls.lock();
            for key in &seen {
                trash.extend(r.forget(key));
            }
        }
        remove_files(trash);
        Ok(items.iter().map(|s| ObjectMeta { key: s.key.clone(), size: s.len, checksum: s.checksum }).collect())
    }

    fn volume_mut<'a>(
        &self,
        volumes: &'a mut BTreeMap<u64, VolumeInfo>,
        id: u64,
    ) -> Result<&'a mut VolumeInfo, TierError> {
        match volumes.entry(id) {
            std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                let v = self.index.volume(id)?.unwrap_or_else(|| VolumeInfo::empty(id, self.volume_bytes));
                Ok(e.insert(v))
            }
        }
    }

    /// Removes a catalog entry (synced) and updates its volume's live counts.
    fn remove(&self, key: &ObjectKey) -> Result<(), TierError> {
        let w = self.writer.lock();
        if let Some(e) = self.index.entry(key)? {
            let mut batch = WriteBatch::default();
            batch.delete_cf(self.index.cf(CF_OBJECTS)?, key.as_str());
            if let Some(mut v) = self.index.volume(e.volume)? {
                v.live_objects = v.live_objects.saturating_sub(1);
                v.live_bytes = v.live_bytes.saturating_sub(e.len);
                self.index.put_volume(&mut batch, &v)?;
            }
            self.index.commit(batch)?;
        }
        drop(w);
        let staged = self.recalls.lock().forget(key);
        remove_files(staged);
        Ok(())
    }

    /// Starts the robot unless it runs.
    fn ensure_worker(self: &Arc<Self>) -> Result<(), TierError> {
        let mut worker = self.worker.lock();
        if worker.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| TierError::config(&self.name, "recalls need a tokio runtime", Some(Box::new(e))))?;
        *worker = Some(runtime.spawn(run_robot(Arc::downgrade(self), self.wake.clone())));
        Ok(())
    }

    /// Mounts a volume unless it is in the drive, taking the mount delay.
    async fn mount(&self, volume: u64) {
        if self.recalls.lock().mounted == Some(volume) {
            return;
        }
        tracing::debug!(tier = %self.name, volume = %volume_label(volume), "mounting");
        if !self.mount_delay.is_zero() {
            tokio::time::sleep(self.mount_delay).await;
        }
        let mut r = self.recalls.lock();
        r.mounted = Some(volume);
        r.mounts += 1;
    }

    /// Copies an object off its volume into the staging area, verifying its checksum.
    fn stage(&self, entry: &CatalogEntry) -> Result<PathBuf, StageFailure> {
        let volume = volume_label(entry.volume);
        let read_err = |what: &str, e: std::io::Error| {
            StageFailure::read(TierError::io(&self.name, format!("recalling from volume {volume}: {what}"), e))
        };
        let src = fs::File::open(volume_path(&self.root, entry.volume)).map_err(|e| read_err("opening", e))?;
        // A labelled volume must still say what it is (the right cartridge, the right format).
        let format = self.index.volume(entry.volume).ok().flatten().map_or(1, |v| v.format);
        if format >= 2 {
            match volume_format(&src, entry.volume).map_err(|e| read_err("reading the volume label", e))? {
                VolumeFormat::Label(v) if v == format => {}
                found => {
                    return Err(StageFailure::read(TierError::corrupt(
                        &self.name,
                        format!("volume {volume} has lost its label (expected format {format}, found {found:?})"),
                    )))
                }
            }
        }
        let seq = self.next_seq();
        let part = self.root.join("staging").join(format!("{seq}.part"));
        let done = self.root.join("staging").join(format!("{seq}.obj"));
        let result = copy_out(&self.name, &src, &part, entry)
            .and_then(|()| fs::rename(&part, &done).map_err(|e| read_err("renaming the staged copy", e)));
        match result {
            Ok(()) => Ok(done),
            Err(e) => {
                let _ = fs::remove_file(&part);
                Err(e)
            }
        }
    }

    /// Records the outcome of a served request.
    fn finish(&self, key: ObjectKey, entry: CatalogEntry, result: Result<PathBuf, StageFailure>) {
        let mut trash = Vec::new();
        {
            let mut r = self.recalls.lock();
            r.queue.remove(&(entry.volume, entry.offset, key.as_str().to_string()));
            if r.queued.get(&key) == Some(&(entry.volume, entry.offset)) {
                r.queued.remove(&key);
            }
            let current = match self.index.entry(&key) {
                Ok(current) => current,
                Err(e) => {
                    tracing::warn!(tier = %self.name, %key, error = %e, "catalog read after a recall failed");
                    None
                }
            };
            let outcome = if current.as_ref() != Some(&entry) {
                trash.extend(result.ok());
                RecallOutcome::Superseded
            } else {
                match result {
                    Ok(path) => {
                        r.failed.remove(&key);
                        let staged = Staged { entry: entry.clone(), path, at: Instant::now() };
                        if let Some(old) = r.staged.insert(key.clone(), staged) {
                            trash.push(old.path);
                        }
                        r.served += 1;
                        RecallOutcome::Staged
                    }
                    Err(failure) => {
                        let outcome = match failure {
                            StageFailure::Mismatch { .. } => RecallOutcome::ChecksumMismatch,
                            StageFailure::Read(_) => RecallOutcome::ReadFailed,
                        };
                        let error = failure_error(&key, &entry, &failure);
                        tracing::error!(tier = %self.name, %key, volume = %volume_label(entry.volume), error = %error, "recall failed");
                        r.failed.insert(key.clone(), Failed { entry: entry.clone(), at: Instant::now(), failure });
                        r.failures += 1;
                        outcome
                    }
                }
            };
            r.log(key, &entry, outcome);
            r.sweep(self.staging_ttl, &mut trash);
        }
        remove_files(trash);
    }
}

/// The robot: serves the recall queue until the tier is dropped.
async fn run_robot(tier: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let (next, sweep_every) = match tier.upgrade() {
            Some(inner) => (inner.recalls.lock().next(), inner.staging_ttl.min(MAX_SWEEP_INTERVAL)),
            None => return,
        };
        let Some((key, entry)) = next else {
            // Idle: wait for work, sweeping expired staged copies now and then.
            if tokio::time::timeout(sweep_every.max(Duration::from_millis(10)), wake.notified()).await.is_err() {
                let Some(inner) = tier.upgrade() else { return };
                let mut trash = Vec::new();
                inner.recalls.lock().sweep(inner.staging_ttl, &mut trash);
                remove_files(trash);
            }
            continue;
        };
        let Some(inner) = tier.upgrade() else { return };
        inner.mount(entry.volume).await;
        let copier = inner.clone();
        let copied = entry.clone();
        let result = match tokio::task::spawn_blocking(move || copier.stage(&copied)).await {
            Ok(result) => result,
            Err(e) => Err(StageFailure::read(TierError::worker(
                format!("tier {}: copying {key} off its volume", inner.name),
                e,
            ))),
        };
        inner.finish(key, entry, result);
    }
}

/// Runs file and catalog work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TierError> + Send + 'static,
) -> Result<T, TierError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| TierError::worker("tape tier file and catalog work", e))?
}

#[async_trait]
impl Tier for TapeTier {
    fn name(&self) -> &TierName {
        &self.inner.name
    }

    fn capabilities(&self) -> TierCapabilities {
        TierCapabilities {
            availability: Availability::Offline,
            ranged_reads: true,
            needs_recall: true,
            max_object_size: Some(self.inner.volume_bytes),
            batch_bytes: Some(self.inner.volume_bytes),
        }
    }

    async fn put(&self, key: &ObjectKey, body: ByteStream, opts: PutOpts) -> Result<ObjectMeta, TierError> {
        let mut metas = self.write_objects(vec![(key.clone(), body, opts)]).await?;
        metas.pop().ok_or_else(|| TierError::Other(format!("tier {}: put of {key} stored nothing", self.inner.name)))
    }

    async fn put_many(&self, items: Vec<(ObjectKey, ByteStream, PutOpts)>) -> Result<Vec<ObjectMeta>, TierError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        self.write_objects(items).await
    }

    async fn get(&self, key: &ObjectKey, opts: GetOpts) -> Result<GetResult, TierError> {
        let entry = self.inner.index.entry(key)?.ok_or_else(|| TierError::NotFound(key.clone()))?;
        if let Some(r) = &opts.range {
            if r.start > r.end || r.end > entry.len {
                return Err(TierError::InvalidRange { key: key.clone(), start: r.start, end: r.end, size: entry.len });
            }
        }
        let mut file = self.open_staged(key, &entry).await?;
        let (start, end) = opts.range.as_ref().map_or((0, entry.len), |r| (r.start, r.end));
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start))
                .await
                .map_err(|e| self.inner.io(format!("seeking in the staged copy of {key}"), e))?;
        }
        let name = self.inner.name.clone();
        let what = format!("reading the staged copy of {key}");
        let body = tokio_util::io::ReaderStream::with_capacity(file.take(end - start), READ_CHUNK)
            .map(move |chunk| chunk.map_err(|e| TierError::io(&name, what.clone(), e)))
            .boxed();
        let body = if opts.range.is_none() { verify_stream(key.clone(), entry.checksum, body) } else { body };
        Ok(GetResult { meta: ObjectMeta { key: key.clone(), size: entry.len, checksum: entry.checksum }, body })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, TierError> {
        let entry = self.inner.index.entry(key)?.ok_or_else(|| TierError::NotFound(key.clone()))?;
        Ok(ObjectMeta { key: key.clone(), size: entry.len, checksum: entry.checksum })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), TierError> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || inner.remove(&key)).await
    }

    async fn recall(&self, key: &ObjectKey) -> Result<RecallStatus, TierError> {
        let inner = &self.inner;
        let entry = inner.index.entry(key)?.ok_or_else(|| TierError::NotFound(key.clone()))?;
        let mut trash = Vec::new();
        let lookup = inner.recalls.lock().lookup(key, &entry, inner.staging_ttl, &mut trash);
        remove_files(trash);
        match lookup {
            Lookup::Ready(_) => Ok(RecallStatus::Ready),
            Lookup::Failed(e) => Err(e),
            Lookup::Queued => Ok(RecallStatus::InProgress),
            Lookup::Absent => {
                Inner::ensure_worker(inner)?;
                {
                    let mut r = inner.recalls.lock();
                    // A concurrent recall of the same key may have queued it meanwhile.
                    if !r.queued.contains_key(key) {
                        r.enqueue(key, &entry);
                    }
                }
                inner.wake.notify_one();
                tracing::debug!(tier = %inner.name, %key, volume = %volume_label(entry.volume), "recall queued");
                Ok(RecallStatus::InProgress)
            }
        }
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>, TierError> {
        let inner = self.inner.clone();
        let prefix = prefix.unwrap_or("").to_string();
        blocking(move || {
            let index = &inner.index;
            let mut out = Vec::new();
            let mode = rocksdb::IteratorMode::From(prefix.as_bytes(), rocksdb::Direction::Forward);
            for item in index.db.iterator_cf(index.cf(CF_OBJECTS)?, mode) {
                let (k, v) = item.map_err(|e| index.err("scan", e))?;
                if !k.starts_with(prefix.as_bytes()) {
                    break;
                }
                let key =
                    ObjectKey::new(String::from_utf8_lossy(&k).into_owned()).map_err(|e| index.corrupt("key", e))?;
                let e: CatalogEntry = serde_json::from_slice(&v).map_err(|e| index.corrupt("entry", e))?;
                out.push(ObjectMeta { key, size: e.len, checksum: e.checksum });
            }
            Ok(out)
        })
        .await
    }
}
