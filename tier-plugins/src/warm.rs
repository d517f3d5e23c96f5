//! The warm tier: objects appended, zstd-compressed, to large segment files on local disk,
//! located through an index in RocksDB, with background segment compaction.
//!
//! # Layout
//! - `root/segments/<id>.seg`: append-only segment files (a new one past `segment_bytes`);
//!   the segment with the highest id is the *active* one, the only one appended to;
//! - `root/index`: RocksDB. The default column family maps object key → [`Entry`] (segment,
//!   offset, lengths, BLAKE3 of the original bytes). The `meta` column family holds one
//!   stats record per segment (`segment/<id>` → bytes, live bytes, objects), the markers of
//!   segment files whose deletion has been decided (`deleting/<id>`), a version key saying
//!   the stats records are complete, and the trained compression dictionaries
//!   (`dict/<id>` → content class and dictionary bytes, see [Dictionaries](#dictionaries)).
//!
//! # Format versions
//! The warm tier's format version is [`WARM_FORMAT_VERSION`] (see `docs/formats.md`):
//! - each segment created by version 2 starts with a 16-byte header, a zstd skippable frame
//!   (magic `50 2A 4D 18`, length 8) holding `VNAW` and the format version (u32 LE), so a
//!   segment is still a plain sequence of zstd frames. Segments of version 1 have no header
//!   (their first bytes are a zstd frame, magic `28 B5 2F FD`) and are read as before:
//!   entries hold absolute offsets, so a header changes nothing for reads;
//! - the index holds the format marker `format-version` in `meta`, absent in a version 1
//!   index. Opening a version 1 tier writes it, and starts a new (headed) segment instead of
//!   appending to the version 1 active one.
//!
//! On open, a marker or a segment header newer than this code knows is refused with
//! [`TierError::Format`] before anything is changed.
//!
//! # Durability
//! A put compresses the object (at [`WarmConfig::zstd_level`]), appends it to the active
//! segment and fdatasyncs it, then writes the index entry *and* the updated stats record of
//! the segment in one WriteBatch with a synced WAL; only then does it return. A crash
//! before the index write leaves unreferenced bytes at the end of a segment, never a
//! dangling entry. Puts, deletes and the repointing step of compaction are serialized by
//! one mutex (the "put mutex", which also guards the active segment); compression happens
//! before, in parallel. A delete removes the entry and releases its bytes in the stats
//! record of its segment, in one synced batch.
//!
//! # Compaction
//! Deleted and overwritten objects leave dead bytes in their segments. A segment other than
//! the active one whose live ratio (`live_bytes / bytes`) falls below
//! [`WarmConfig::compact_below`], or that holds no live object at all, is compacted by
//! [`WarmTier::compact_once`] (run every [`WarmConfig::compact_interval`] by a background
//! task when the tier is opened inside a tokio runtime):
//!
//! 1. one scan of the whole index (cost proportional to the number of objects, once per
//!    run) finds the live entries of every candidate segment. A candidate is not active, so
//!    no put can add entries to it: the scan sees all of them;
//! 2. each live object is read from the old segment and **verified**: its frame is
//!    decompressed and the BLAKE3 of the content compared with the entry's checksum. The
//!    compressed bytes are then appended as they are (no recompression) to the active
//!    segment, under the put mutex, in chunks of a few MiB, each chunk fdatasynced. A
//!    segment holding an object that fails verification (or cannot be read) is left alone
//!    and counted in [`CompactionReport::segments_skipped`]: its evidence stays for the
//!    integrity scrub, and compaction never turns a damaged object into a "verified" copy;
//! 3. under the put mutex, one synced WriteBatch repoints every moved entry *that still
//!    points at its old location* (compare-and-set: a delete or overwrite that happened
//!    meanwhile wins, and its copy is dead bytes), updates the stats records, removes the
//!    old segment's record and writes a `deleting/<id>` marker;
//! 4. the old segment file is removed, the directory fsynced, the marker deleted.
//!
//! ## Crash safety
//! - Crash during or after step 2, before the batch: every entry still points at the old
//!   segment, which is intact; the copies are unreferenced bytes in the active segment
//!   (counted in its `bytes` on the next open or put, so they get compacted in turn). The
//!   next compaction starts over.
//! - Crash after the batch: the entries point at the fsynced copies; the old file is
//!   garbage and its `deleting/<id>` marker (written in the same batch) makes the next open
//!   (or the next compaction) remove it.
//! - On open, a segment file other than the active one that has no stats record is
//!   referenced by no entry (records are written in the same batch as entries): it is the
//!   leftover of an interrupted compaction or rotation. It is removed, after a full index
//!   scan has confirmed that no entry points at it. Stats records missing altogether (an
//!   index written before compaction existed) are rebuilt from the entries on open.
//!
//! ## Concurrent reads
//! A reader that looked an entry up before the repoint reads the old segment: an open file
//! stays readable after it is unlinked, and a reader that finds the segment file gone
//! (removed between its lookup and its open) looks the entry up again (a few times) and
//! reads the new location.
//!
//! # Compression
//! One zstd level ([`WarmConfig::zstd_level`], 1..=19, default 3) applies to every new
//! object; changing it affects new writes only (reads never need the level, and compaction
//! copies frames as they are).
//!
//! ## Dictionaries
//! With [`WarmConfig::dictionaries`] on, objects are compressed with a zstd dictionary
//! trained per *content class*: the [`PutOpts::content_class`] hint, which migrations set to
//! the series' Modality. DICOM objects of one modality share most of their header bytes; a
//! dictionary pays off on the many small objects (CR/DX headers, SR, KOS, small MR), where
//! plain zstd has too little data to learn from, and changes little on large ones, which are
//! dominated by pixel data.
//!
//! - **Sampling.** The first [`WarmConfig::dictionary_samples`] objects of a class are stored
//!   without a dictionary, and the start of each (its bytes up to the Pixel Data element
//!   (7FE0,0010), at most 64 KiB: the header, which is what objects of a class share) is kept
//!   in memory as a training sample. Samples are not persisted: after a restart, sampling
//!   of the classes still without a dictionary starts over. Objects without a class, or of
//!   a class beyond the first 64 seen, never use a dictionary.
//! - **Training.** The put that completes a class's samples trains the dictionary after
//!   storing its own object: `zstd::dict::from_samples` on three samples in four, at most
//!   [`WarmConfig::dictionary_kb`] KiB, kept only if it compresses the held-out fourth at
//!   least 10 % smaller than plain zstd does. This happens once per class and takes well
//!   under a second. A failed training (samples too few, or too unlike each other for a
//!   dictionary to help) is logged, and tried again after another `dictionary_samples`
//!   objects of the class.
//! - **Persistence before use.** A new dictionary is written to the index
//!   (`dict/<id>` in the `meta` column family: format version, class, dictionary bytes, and
//!   a BLAKE3 of all of them) with a synced write *before* any object is compressed with it.
//!   Each [`Entry`] names the dictionary its frame needs ([`Entry::dictionary`], absent for
//!   frames without one, so entries written before dictionaries existed read as they did).
//!   Dictionaries are never deleted: they are small, and an object may need one forever.
//! - **Reads** find the dictionary by id in memory: every dictionary record is loaded and
//!   checked on open (and new ones are added as they are trained), prepared once for
//!   compression and decompression. A record that fails its check is *damaged*: reads of
//!   the objects that need it fail with an error that names the dictionary (never with wrong
//!   bytes, which the object checksum would catch anyway), compaction leaves their segments
//!   alone (as for any object that fails verification), and the class trains a new
//!   dictionary. zstd also records the dictionary's own id in each frame and refuses to
//!   decompress with another one.
//! - **Compaction** copies frames as they are: an entry keeps its dictionary id, and the
//!   verification decompresses with that dictionary. Turning `dictionaries` off affects new
//!   writes only; objects written with a dictionary stay readable.

use archive_core::checksum::Checksum;
use archive_core::format::FormatError;
use archive_core::tier::{
    bytes_stream, verify_stream, Availability, ByteStream, GetOpts, GetResult, ObjectKey, ObjectMeta, PutOpts, Tier,
    TierCapabilities, TierError, TierName,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;
use zstd::zstd_safe;

/// A new segment starts when the active one reaches this size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;
/// Default zstd level: fast, about 2× on CT pixel data.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Default live ratio under which a segment is compacted.
pub const DEFAULT_COMPACT_BELOW: f64 = 0.5;
/// Default period of background compaction.
pub const DEFAULT_COMPACT_INTERVAL: Duration = Duration::from_secs(3600);
/// Default number of objects of a content class sampled before its dictionary is trained.
pub const DEFAULT_DICTIONARY_SAMPLES: usize = 200;
/// Default largest size of a trained dictionary, in KiB.
pub const DEFAULT_DICTIONARY_KB: usize = 64;
/// Fewest samples [`WarmConfig::dictionary_samples`] accepts (zstd needs several to train).
pub const MIN_DICTIONARY_SAMPLES: usize = 10;
/// Most samples [`WarmConfig::dictionary_samples`] accepts (each is kept in memory).
pub const MAX_DICTIONARY_SAMPLES: usize = 10_000;
/// Largest [`WarmConfig::dictionary_kb`].
pub const MAX_DICTIONARY_KB: usize = 1024;

/// Format version of the warm tier this code writes: version 2 segments start with a
/// [segment header](#format-versions); version 1 segments (written before headers existed)
/// have none and are read as they always were.
pub const WARM_FORMAT_VERSION: u32 = 2;
/// The oldest warm format this code reads.
pub const OLDEST_WARM_FORMAT_VERSION: u32 = 1;
/// Length of a segment header.
pub const SEGMENT_HEADER_LEN: u64 = 16;
/// A zstd skippable frame's magic number (little endian): the header is one, so a segment
/// stays a valid sequence of zstd frames.
const SKIPPABLE_FRAME_MAGIC: [u8; 4] = [0x50, 0x2A, 0x4D, 0x18];
/// The header's own magic, inside the skippable frame.
const SEGMENT_MAGIC: [u8; 4] = *b"VNAW";
/// Key of the tier's format marker in the `meta` column family (its value: the version in
/// decimal). Absent in an index written by version 1.
const FORMAT_VERSION_KEY: &[u8] = b"format-version";
/// Column family of the per-segment stats records and markers.
const META_CF: &str = "meta";
/// Present when the stats records cover every segment.
const STATS_VERSION_KEY: &[u8] = b"stats-version";
/// Compaction appends copies under the put mutex in chunks of about this many bytes.
const COPY_CHUNK_BYTES: u64 = 8 << 20;
/// How many times a reader looks an entry up again when its segment file has vanished.
const READ_ATTEMPTS: usize = 4;
/// A training sample is at most this many bytes of the start of an object.
const SAMPLE_BYTES: usize = 64 << 10;
/// Samples shorter than this are not kept.
const MIN_SAMPLE_BYTES: usize = 16;
/// Pixel Data (7FE0,0010) as its tag starts an element in little-endian transfer syntaxes;
/// a sample stops there.
const PIXEL_DATA_TAG: [u8; 4] = [0xE0, 0x7F, 0x10, 0x00];
/// Content classes that get a dictionary, at most (bounds the memory held by samples).
const MAX_CLASSES: usize = 64;
/// Longest content class that gets a dictionary.
const MAX_CLASS_LEN: usize = 64;
/// Key prefix of the dictionary records in the `meta` column family.
const DICT_PREFIX: &[u8] = b"dict/";
/// Format version of a dictionary record.
const DICT_RECORD_VERSION: u8 = 1;
/// A trained dictionary is kept only if it makes the held-out samples at least this much
/// smaller than plain zstd does.
const MIN_DICTIONARY_GAIN: f64 = 0.1;

/// Options of a warm tier.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmConfig {
    /// A new segment starts when the active one would grow past this size.
    pub segment_bytes: u64,
    /// zstd level of new objects, 1..=19.
    pub zstd_level: i32,
    /// A segment (never the active one) whose live bytes fall below this fraction of its
    /// bytes is compacted; 0.0..=1.0. Segments without live objects are always compacted.
    pub compact_below: f64,
    /// Period of background compaction; zero disables it. The task runs only when the
    /// tier is opened inside a tokio runtime (with its time driver), and stops when the
    /// tier is dropped.
    pub compact_interval: Duration,
    /// Compress objects with a zstd dictionary trained per content class (see the module
    /// documentation); affects new writes only.
    pub dictionaries: bool,
    /// Objects of a class stored (and sampled) before its dictionary is trained;
    /// [`MIN_DICTIONARY_SAMPLES`]..=[`MAX_DICTIONARY_SAMPLES`].
    pub dictionary_samples: usize,
    /// Largest size of a trained dictionary in KiB, 1..=[`MAX_DICTIONARY_KB`].
    pub dictionary_kb: usize,
}

impl Default for WarmConfig {
    fn default() -> Self {
        Self {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            compact_below: DEFAULT_COMPACT_BELOW,
            compact_interval: DEFAULT_COMPACT_INTERVAL,
            dictionaries: false,
            dictionary_samples: DEFAULT_DICTIONARY_SAMPLES,
            dictionary_kb: DEFAULT_DICTIONARY_KB,
        }
    }
}

/// An option of [`WarmConfig`] out of its range.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key} {message}")]
pub struct WarmConfigError {
    /// The option's name.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl WarmConfig {
    /// Checks every option's range.
    pub fn validate(&self) -> Result<(), WarmConfigError> {
        if self.segment_bytes == 0 {
            return Err(WarmConfigError { key: "segment_bytes", message: "must be at least 1".into() });
        }
        if !(1..=19).contains(&self.zstd_level) {
            return Err(WarmConfigError {
                key: "zstd_level",
                message: format!("must be 1 to 19, not {}", self.zstd_level),
            });
        }
        if !(0.0..=1.0).contains(&self.compact_below) {
            return Err(WarmConfigError {
                key: "compact_below",
                message: format!("must be 0.0 to 1.0, not {}", self.compact_below),
            });
        }
        if !(MIN_DICTIONARY_SAMPLES..=MAX_DICTIONARY_SAMPLES).contains(&self.dictionary_samples) {
            return Err(WarmConfigError {
                key: "dictionary_samples",
                message: format!(
                    "must be {MIN_DICTIONARY_SAMPLES} to {MAX_DICTIONARY_SAMPLES}, not {}",
                    self.dictionary_samples
                ),
            });
        }
        if !(1..=MAX_DICTIONARY_KB).contains(&self.dictionary_kb) {
            return Err(WarmConfigError {
                key: "dictionary_kb",
                message: format!("must be 1 to {MAX_DICTIONARY_KB}, not {}", self.dictionary_kb),
            });
        }
        Ok(())
    }
}

/// A warm tier's options as configured (`[warm]` for the built-in one, `[tiers.NAME]` with
/// `kind = "warm"` for others): the one definition of these keys, their defaults and ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarmOptions {
    /// Root directory (default: `data_dir/warm` for the built-in tier, `data_dir/tiers/NAME`
    /// for others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<std::path::PathBuf>,
    /// Size at which a new segment file starts, in MiB.
    pub segment_mb: u64,
    /// zstd level of newly written objects, 1..=19.
    pub zstd_level: i32,
    /// A full segment whose live bytes fall below this fraction is compacted, 0.0..=1.0.
    pub compact_below: f64,
    /// Seconds between background compaction passes; 0 disables them.
    pub compact_interval_secs: u64,
    /// Compress new objects with a zstd dictionary trained per content class (modality).
    pub dictionaries: bool,
    /// Objects of a class stored plain (and sampled) before its dictionary is trained.
    pub dictionary_samples: usize,
    /// Largest size of a trained dictionary, in KiB.
    pub dictionary_kb: usize,
}

impl Default for WarmOptions {
    fn default() -> Self {
        Self {
            path: None,
            segment_mb: DEFAULT_SEGMENT_BYTES >> 20,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            compact_below: DEFAULT_COMPACT_BELOW,
            compact_interval_secs: DEFAULT_COMPACT_INTERVAL.as_secs(),
            dictionaries: false,
            dictionary_samples: DEFAULT_DICTIONARY_SAMPLES,
            dictionary_kb: DEFAULT_DICTIONARY_KB,
        }
    }
}

impl WarmOptions {
    /// The tier's settings, every option checked against its range.
    pub fn to_config(&self) -> Result<WarmConfig, WarmConfigError> {
        if self.segment_mb == 0 {
            return Err(WarmConfigError { key: "segment_mb", message: "must be at least 1".into() });
        }
        let segment_bytes = self
            .segment_mb
            .checked_mul(1 << 20)
            .ok_or_else(|| WarmConfigError { key: "segment_mb", message: "is too large".into() })?;
        let config = WarmConfig {
            segment_bytes,
            zstd_level: self.zstd_level,
            compact_below: self.compact_below,
            compact_interval: Duration::from_secs(self.compact_interval_secs),
            dictionaries: self.dictionaries,
            dictionary_samples: self.dictionary_samples,
            dictionary_kb: self.dictionary_kb,
        };
        config.validate()?;
        Ok(config)
    }
}

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
    /// The dictionary the frame was compressed with (a `dict/<id>` record); `None` for
    /// plain frames (and every entry written before dictionaries existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dictionary: Option<u64>,
}

impl Entry {
    /// Whether both name the same stored bytes (each append has its own segment and offset).
    fn same_location(&self, other: &Entry) -> bool {
        self.segment == other.segment && self.offset == other.offset && self.stored_len == other.stored_len
    }
}

/// Stats record of one segment, kept in the index beside the entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SegmentStats {
    /// Bytes appended to the segment (live or dead).
    bytes: u64,
    /// Bytes of the objects the index points at.
    live_bytes: u64,
    /// Objects the index points at.
    objects: u64,
}

impl SegmentStats {
    fn add(&mut self, e: &Entry) {
        self.live_bytes += e.stored_len;
        self.objects += 1;
        self.bytes = self.bytes.max(e.offset + e.stored_len);
    }
    fn release(&mut self, e: &Entry) {
        self.live_bytes = self.live_bytes.saturating_sub(e.stored_len);
        self.objects = self.objects.saturating_sub(1);
    }
    fn compactable(&self, below: f64) -> bool {
        self.objects == 0 || (self.bytes > 0 && (self.live_bytes as f64) < below * self.bytes as f64)
    }
}

/// One segment as [`WarmTier::segments`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment number (the file is `segments/<id as 16 hex digits>.seg`).
    pub id: u64,
    /// Bytes appended to it, live or dead.
    pub bytes: u64,
    /// Bytes of the objects that live in it.
    pub live_bytes: u64,
    /// Objects that live in it.
    pub objects: u64,
}

/// What one [`WarmTier::compact_once`] run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segment files removed.
    pub segments_compacted: u64,
    /// Bytes of the removed segment files minus the bytes copied out of them.
    pub bytes_reclaimed: u64,
    /// Objects repointed to their copies.
    pub objects_moved: u64,
    /// Candidate segments left alone because an object in them failed verification or
    /// could not be read (the integrity scrub reports those objects).
    pub segments_skipped: u64,
}

/// One compression dictionary as [`WarmTier::dictionaries`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DictionaryInfo {
    /// Its id (entries name it in [`Entry::dictionary`]).
    pub id: u64,
    /// The content class it was trained for.
    pub class: String,
    /// Its size in bytes (0 when damaged).
    pub bytes: u64,
    /// Why its record is unusable, when it is (reads of its objects fail).
    pub damaged: Option<String>,
}

/// A trained dictionary, prepared for both directions.
struct Dictionary {
    id: u64,
    class: String,
    len: usize,
    cdict: zstd_safe::CDict<'static>,
    ddict: zstd_safe::DDict<'static>,
}

/// Dictionary state of one content class.
#[derive(Default)]
struct ClassState {
    /// The dictionary new objects of the class are compressed with.
    active: Option<Arc<Dictionary>>,
    /// Training samples (starts of objects) while the class has no dictionary.
    samples: Vec<Vec<u8>>,
    /// A put is training the class's dictionary: no more samples meanwhile.
    training: bool,
}

/// Every dictionary of the tier, and the sampling state of each class.
#[derive(Default)]
struct Dictionaries {
    /// Usable dictionaries by id.
    by_id: HashMap<u64, Arc<Dictionary>>,
    /// Records that failed their check: id → (class if known, why).
    damaged: BTreeMap<u64, (String, String)>,
    /// Per content class.
    classes: HashMap<String, ClassState>,
    /// The id the next dictionary gets (ids are never reused).
    next_id: u64,
}

struct Active {
    id: u64,
    file: fs::File,
    len: u64,
}

/// What the put mutex guards.
struct State {
    active: Active,
    /// Mirror of the stats records in the index; changed only after a batch committed.
    stats: BTreeMap<u64, SegmentStats>,
}

type Hook = Arc<dyn Fn(&str) -> Result<(), TierError> + Send + Sync>;

/// A compaction test hook (see [`WarmTier::set_compaction_hook`]).
#[doc(hidden)]
pub type CompactionHook = Box<dyn Fn(&str) -> Result<(), TierError> + Send + Sync>;

struct Inner {
    name: TierName,
    root: PathBuf,
    db: rocksdb::DB,
    state: parking_lot::Mutex<State>,
    config: WarmConfig,
    /// Compression dictionaries (taken only briefly, never while the put mutex is held).
    dicts: parking_lot::Mutex<Dictionaries>,
    /// One compaction at a time.
    compaction: parking_lot::Mutex<()>,
    /// Test hook called at each compaction step; an error aborts the compaction there.
    hook: parking_lot::Mutex<Option<Hook>>,
    /// Test hook called by reads between the entry lookup and the segment file's open.
    read_hook: parking_lot::Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
    /// Dropped with the tier, which stops the background compaction task.
    _stop: tokio::sync::oneshot::Sender<()>,
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

fn stats_key(id: u64) -> String {
    format!("segment/{id:016x}")
}

fn deleting_key(id: u64) -> String {
    format!("deleting/{id:016x}")
}

fn dict_key(id: u64) -> String {
    format!("dict/{id:016x}")
}

/// A dictionary record: format version, class length (u16 LE), class, dictionary bytes,
/// then the BLAKE3 of everything before it.
fn encode_dict_record(class: &str, dict: &[u8]) -> Vec<u8> {
    let class = &class.as_bytes()[..class.len().min(MAX_CLASS_LEN)];
    let mut out = Vec::with_capacity(3 + class.len() + dict.len() + 32);
    out.push(DICT_RECORD_VERSION);
    out.extend_from_slice(&(class.len() as u16).to_le_bytes());
    out.extend_from_slice(class);
    out.extend_from_slice(dict);
    let hash = blake3::hash(&out);
    out.extend_from_slice(hash.as_bytes());
    out
}

/// The class a dictionary record names (`?` when it cannot be told), and its dictionary
/// bytes or why the record is unusable.
fn decode_dict_record(v: &[u8]) -> (String, Result<&[u8], String>) {
    let Some(split) = v.len().checked_sub(32) else {
        return ("?".into(), Err("its record is truncated".into()));
    };
    let (body, hash) = v.split_at(split);
    let parsed = match body {
        [version, l0, l1, rest @ ..] => {
            let len = u16::from_le_bytes([*l0, *l1]) as usize;
            (len <= rest.len()).then(|| (*version, rest.split_at(len)))
        }
        _ => None,
    };
    let Some((version, (class, dict))) = parsed else {
        return ("?".into(), Err("its record is truncated".into()));
    };
    let class = String::from_utf8_lossy(class).into_owned();
    if blake3::hash(body).as_bytes() != hash {
        return (class, Err("its record fails its checksum".into()));
    }
    if version != DICT_RECORD_VERSION {
        return (class, Err(format!("its record has the unknown format version {version}")));
    }
    (class, Ok(dict))
}

/// Prepares dictionary bytes for compression (at `level`) and decompression.
fn prepare_dictionary(id: u64, class: String, bytes: &[u8], level: i32) -> Result<Dictionary, String> {
    let cdict = zstd_safe::CDict::try_create(bytes, level).ok_or("zstd cannot load it for compression")?;
    let ddict = zstd_safe::DDict::try_create(bytes).ok_or("zstd cannot load it for decompression")?;
    Ok(Dictionary { id, class, len: bytes.len(), cdict, ddict })
}

/// The part of an object kept as a training sample: its start up to the Pixel Data element
/// (the header, which objects of one modality share), at most [`SAMPLE_BYTES`]; `None` when
/// that is too short to be worth keeping.
fn sample_of(data: &[u8]) -> Option<&[u8]> {
    let head = &data[..data.len().min(SAMPLE_BYTES)];
    let end = head.windows(PIXEL_DATA_TAG.len()).position(|w| w == PIXEL_DATA_TAG).unwrap_or(head.len());
    let sample = &head[..end];
    (sample.len() >= MIN_SAMPLE_BYTES).then_some(sample)
}

/// The header a new segment starts with: a zstd skippable frame (magic, content length 8)
/// whose content is `VNAW` and the format version (u32, little endian).
fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..4].copy_from_slice(&SKIPPABLE_FRAME_MAGIC);
    h[4..8].copy_from_slice(&8u32.to_le_bytes());
    h[8..12].copy_from_slice(&SEGMENT_MAGIC);
    h[12..16].copy_from_slice(&WARM_FORMAT_VERSION.to_le_bytes());
    h
}

/// What the start of a segment file says about its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentFormat {
    /// No bytes at all.
    Empty,
    /// Fewer bytes than a header, all of them the start of one: a creation a crash interrupted.
    PartialHeader,
    /// A header naming this format version.
    Header(u32),
    /// No header: a version 1 segment (its first bytes are a zstd frame).
    Legacy,
}

impl SegmentFormat {
    /// The format version of the segment's data (1 for a segment without header).
    pub fn version(self) -> u32 {
        match self {
            SegmentFormat::Header(v) => v,
            _ => 1,
        }
    }
}

/// Reads the format of the segment file `file`.
pub fn segment_format(file: &fs::File) -> std::io::Result<SegmentFormat> {
    let mut head = [0u8; SEGMENT_HEADER_LEN as usize];
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64)? {
            0 => break,
            read => n += read,
        }
    }
    let expected = segment_header();
    Ok(if n == 0 {
        SegmentFormat::Empty
    } else if n == head.len() && head[0..4] == SKIPPABLE_FRAME_MAGIC && head[8..12] == SEGMENT_MAGIC {
        SegmentFormat::Header(u32::from_le_bytes([head[12], head[13], head[14], head[15]]))
    } else if n < head.len() && head[..n] == expected[..n] {
        SegmentFormat::PartialHeader
    } else {
        SegmentFormat::Legacy
    })
}

/// Makes `file` (empty, or holding the start of a header) a new segment: its header, synced.
fn write_segment_header(file: &fs::File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(&segment_header(), 0)?;
    file.sync_data()
}

/// The warm format marker of an index: `None` when absent (an index of version 1).
fn index_format(db: &rocksdb::DB, name: &TierName) -> Result<Option<u32>, TierError> {
    let meta = db
        .cf_handle(META_CF)
        .ok_or_else(|| TierError::corrupt(name, format!("the index has no {META_CF} column family")))?;
    let raw =
        db.get_cf(meta, FORMAT_VERSION_KEY).map_err(|e| TierError::index(name, "reading the format marker", e))?;
    let Some(raw) = raw else { return Ok(None) };
    let found = std::str::from_utf8(&raw).ok().and_then(|s| s.trim().parse::<u32>().ok());
    let source = match found {
        Some(v) => {
            match FormatError::check_marker("warm tier index", v, OLDEST_WARM_FORMAT_VERSION, WARM_FORMAT_VERSION) {
                Ok(v) => return Ok(Some(v)),
                Err(e) => e,
            }
        }
        None => FormatError::UnknownVersion {
            kind: "warm tier index",
            found: None,
            oldest: OLDEST_WARM_FORMAT_VERSION,
            supported: WARM_FORMAT_VERSION,
        },
    };
    Err(TierError::Format { tier: name.clone(), what: "its index".into(), source })
}

/// Segment files on disk: id → length.
fn list_segments(dir: &Path) -> std::io::Result<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".seg").and_then(|h| u64::from_str_radix(h, 16).ok()) else {
            continue;
        };
        out.insert(id, e.metadata()?.len());
    }
    Ok(out)
}

impl WarmTier {
    /// Opens (creating if needed) a warm tier rooted at `root` with the default options.
    pub fn open(name: TierName, root: PathBuf) -> Result<WarmTier, TierError> {
        Self::open_config(name, root, WarmConfig::default())
    }

    /// Opens with a segment size (small sizes exercise segment rotation in tests) and the
    /// default other options.
    pub fn open_with(name: TierName, root: PathBuf, segment_bytes: u64) -> Result<WarmTier, TierError> {
        Self::open_config(name, root, WarmConfig { segment_bytes, ..WarmConfig::default() })
    }

    /// Opens with explicit options.
    ///
    /// Finishes what a crash interrupted: removes segment files whose deletion was decided
    /// and unreferenced leftovers of compactions, and rebuilds missing stats records. Starts
    /// the background compaction task when `config.compact_interval` is not zero and a
    /// tokio runtime is current.
    pub fn open_config(name: TierName, root: PathBuf, config: WarmConfig) -> Result<WarmTier, TierError> {
        config.validate().map_err(|e| TierError::config(&name, format!("invalid option {e}"), None))?;
        let io = |what: &str, e: std::io::Error| TierError::io(&name, what.to_string(), e);
        let segments = root.join("segments");
        fs::create_dir_all(&segments).map_err(|e| io("creating the segment directory", e))?;
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // A newer vna may have added column families: open them too, so that the format
        // marker can refuse the index with a clear error.
        let mut families = vec![rocksdb::DEFAULT_COLUMN_FAMILY_NAME.to_string(), META_CF.to_string()];
        for cf in rocksdb::DB::list_cf(&rocksdb::Options::default(), root.join("index")).unwrap_or_default() {
            if !families.contains(&cf) {
                families.push(cf);
            }
        }
        let db = rocksdb::DB::open_cf(&opts, root.join("index"), &families)
            .map_err(|e| TierError::index(&name, "cannot open the index", e))?;
        // Before anything is changed: a tier written by a newer vna is refused.
        let marker = index_format(&db, &name)?;
        let on_disk = list_segments(&segments).map_err(|e| io("listing segments", e))?;
        let mut active_format = SegmentFormat::Empty;
        for &id in on_disk.keys() {
            let path = segment_path(&root, id);
            let format = fs::File::open(&path)
                .and_then(|f| segment_format(&f))
                .map_err(|e| io(&format!("reading the header of {}", path.display()), e))?;
            if let SegmentFormat::Header(v) = format {
                FormatError::check_marker("warm segment", v, OLDEST_WARM_FORMAT_VERSION, WARM_FORMAT_VERSION).map_err(
                    |source| TierError::Format {
                        tier: name.clone(),
                        what: format!("segment {}", path.display()),
                        source,
                    },
                )?;
            }
            active_format = format;
        }
        let mut id = on_disk.keys().next_back().copied().unwrap_or(1);
        if active_format == SegmentFormat::Legacy {
            // A version 1 segment gets no header in front of its data: new objects go to a
            // new segment, which has one.
            id += 1;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(segment_path(&root, id))
            .map_err(|e| io("opening the active segment", e))?;
        if matches!(
            segment_format(&file).map_err(|e| io("reading the active segment", e))?,
            SegmentFormat::Empty | SegmentFormat::PartialHeader
        ) {
            write_segment_header(&file).map_err(|e| io("writing the header of the active segment", e))?;
        }
        let len = file.metadata().map_err(|e| io("sizing the active segment", e))?.len();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let inner = Inner {
            name,
            root,
            db,
            state: parking_lot::Mutex::new(State { active: Active { id, file, len }, stats: BTreeMap::new() }),
            config,
            dicts: parking_lot::Mutex::new(Dictionaries::default()),
            compaction: parking_lot::Mutex::new(()),
            hook: parking_lot::Mutex::new(None),
            read_hook: parking_lot::Mutex::new(None),
            _stop: stop,
        };
        inner.recover(on_disk)?;
        inner.load_dictionaries()?;
        inner.sync_segment_dir()?;
        if marker != Some(WARM_FORMAT_VERSION) {
            // Created now, or upgraded from version 1 (whose segments stay readable as they are).
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            inner
                .db
                .put_cf_opt(inner.meta()?, FORMAT_VERSION_KEY, WARM_FORMAT_VERSION.to_string(), &wo)
                .map_err(|e| inner.db_err("writing the format marker", e))?;
        }
        let inner = Arc::new(inner);
        if !inner.config.compact_interval.is_zero() {
            spawn_compactor(&inner, stopped);
        }
        Ok(WarmTier { inner })
    }

    /// The tier's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The options the tier was opened with.
    pub fn config(&self) -> &WarmConfig {
        &self.inner.config
    }

    /// Where an object's compressed bytes lie: segment file, offset, length (for tests that
    /// damage them).
    pub fn location_of(&self, key: &ObjectKey) -> Option<(PathBuf, u64, u64)> {
        let e = self.inner.entry(key.as_str().as_bytes()).ok()??;
        Some((segment_path(&self.inner.root, e.segment), e.offset, e.stored_len))
    }

    /// The dictionary an object's frame was compressed with (`None` for a plain frame or a
    /// missing object).
    pub fn dictionary_of(&self, key: &ObjectKey) -> Option<u64> {
        self.inner.entry(key.as_str().as_bytes()).ok()??.dictionary
    }

    /// Every compression dictionary in the index (usable or damaged), by id.
    pub fn dictionaries(&self) -> Vec<DictionaryInfo> {
        let dicts = self.inner.dicts.lock();
        let mut out: BTreeMap<u64, DictionaryInfo> = dicts
            .by_id
            .values()
            .map(|d| (d.id, DictionaryInfo { id: d.id, class: d.class.clone(), bytes: d.len as u64, damaged: None }))
            .collect();
        for (id, (class, why)) in &dicts.damaged {
            out.insert(*id, DictionaryInfo { id: *id, class: class.clone(), bytes: 0, damaged: Some(why.clone()) });
        }
        out.into_values().collect()
    }

    /// Every segment with its stats, by id; the last one is the active segment.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let state = self.inner.state.lock();
        let mut out: BTreeMap<u64, SegmentInfo> = state
            .stats
            .iter()
            .map(|(&id, s)| (id, SegmentInfo { id, bytes: s.bytes, live_bytes: s.live_bytes, objects: s.objects }))
            .collect();
        let active = &state.active;
        let info = out.entry(active.id).or_insert(SegmentInfo { id: active.id, bytes: 0, live_bytes: 0, objects: 0 });
        info.bytes = info.bytes.max(active.len);
        out.into_values().collect()
    }

    /// Compacts every segment (other than the active one) whose live ratio is below
    /// [`WarmConfig::compact_below`] or that holds no live object; see the module
    /// documentation for the steps and why a crash at any of them loses nothing.
    ///
    /// Blocks on file and index I/O (call it from `spawn_blocking` in async code). Only
    /// one compaction runs at a time; puts, gets and deletes go on meanwhile.
    pub fn compact_once(&self) -> Result<CompactionReport, TierError> {
        self.inner.compact_once()
    }

    /// Test hook: `hook(step)` runs at each compaction step (`"after_copy"`: copies
    /// fdatasynced, entries not yet repointed; `"after_repoint"`: batch committed, old file
    /// not yet removed); an error it returns aborts the compaction at that step, as a crash
    /// would stop it.
    #[doc(hidden)]
    pub fn set_compaction_hook(&self, hook: Option<CompactionHook>) {
        *self.inner.hook.lock() = hook.map(Hook::from);
    }

    /// Test hook: `hook()` runs in every read between the index lookup and the opening of
    /// the segment file (to make a compaction remove the file in that window).
    #[doc(hidden)]
    pub fn set_read_hook(&self, hook: Option<Box<dyn Fn() + Send + Sync>>) {
        *self.inner.read_hook.lock() = hook.map(Arc::from);
    }
}

/// Starts the periodic compaction task if a tokio runtime is current; it holds only a weak
/// reference and ends when the tier is dropped.
fn spawn_compactor(inner: &Arc<Inner>, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::debug!(tier = %inner.name, "no tokio runtime: background compaction is off");
        return;
    };
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let interval = inner.config.compact_interval;
    handle.spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep(interval) => {}
            }
            let Some(inner) = weak.upgrade() else { return };
            let name = inner.name.clone();
            match tokio::task::spawn_blocking(move || inner.compact_once()).await {
                Ok(Ok(r)) if r.segments_compacted > 0 || r.segments_skipped > 0 => tracing::info!(
                    tier = %name,
                    segments = r.segments_compacted,
                    reclaimed = r.bytes_reclaimed,
                    moved = r.objects_moved,
                    skipped = r.segments_skipped,
                    "compacted segments"
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(tier = %name, error = %e, "segment compaction failed"),
                Err(e) => tracing::warn!(tier = %name, error = %e, "segment compaction worker failed"),
            }
        }
    });
}

/// Changes to stats records, written in a batch and applied to the mirror once committed.
#[derive(Default)]
struct StatsEdit {
    changed: BTreeMap<u64, Option<SegmentStats>>,
}

impl StatsEdit {
    fn get(&self, base: &BTreeMap<u64, SegmentStats>, id: u64) -> SegmentStats {
        match self.changed.get(&id) {
            Some(s) => s.unwrap_or_default(),
            None => base.get(&id).copied().unwrap_or_default(),
        }
    }
    fn update(&mut self, base: &BTreeMap<u64, SegmentStats>, id: u64, f: impl FnOnce(&mut SegmentStats)) {
        let mut s = self.get(base, id);
        f(&mut s);
        self.changed.insert(id, Some(s));
    }
    fn remove(&mut self, id: u64) {
        self.changed.insert(id, None);
    }
    fn write(&self, inner: &Inner, batch: &mut rocksdb::WriteBatch) -> Result<(), TierError> {
        let cf = inner.meta()?;
        for (&id, s) in &self.changed {
            match s {
                Some(s) => batch.put_cf(cf, stats_key(id), inner.encode(s)?),
                None => batch.delete_cf(cf, stats_key(id)),
            }
        }
        Ok(())
    }
    fn apply(self, base: &mut BTreeMap<u64, SegmentStats>) {
        for (id, s) in self.changed {
            match s {
                Some(s) => base.insert(id, s),
                None => base.remove(&id),
            };
        }
    }
}

/// How copying one segment's live objects ended without an I/O failure of the target.
enum Copied {
    /// Every live object copied, verified and fdatasynced.
    All,
    /// An object failed verification or could not be read: leave the segment alone.
    Damaged(String),
}

/// Why a stored frame did not decompress to its object.
enum FrameError {
    /// The frame is damaged (or decompresses to the wrong length).
    Damaged,
    /// The dictionary the frame needs is damaged or missing.
    Dictionary {
        /// Its id.
        id: u64,
        /// What is wrong with it.
        why: String,
    },
}

/// A copy made by compaction: key, old entry, new entry.
type Move = (Box<[u8]>, Entry, Entry);
/// A live object of a segment being compacted: key and entry.
type Live = (Box<[u8]>, Entry);
/// A verified frame waiting to be appended: key, old entry, compressed bytes.
type Frame = (Box<[u8]>, Entry, Vec<u8>);

impl Inner {
    fn meta(&self) -> Result<&rocksdb::ColumnFamily, TierError> {
        self.db
            .cf_handle(META_CF)
            .ok_or_else(|| TierError::corrupt(&self.name, format!("the index has no {META_CF} column family")))
    }

    fn db_err(&self, what: &str, e: rocksdb::Error) -> TierError {
        TierError::index(&self.name, format!("{what} failed"), e)
    }

    fn encode<T: Serialize>(&self, v: &T) -> Result<Vec<u8>, TierError> {
        serde_json::to_vec(v).map_err(|e| TierError::index(&self.name, "cannot encode an index record", e))
    }

    fn decode_entry(&self, key: &[u8], v: &[u8]) -> Result<Entry, TierError> {
        serde_json::from_slice(v).map_err(|e| {
            TierError::corrupt_by(&self.name, format!("corrupt index entry for {}", String::from_utf8_lossy(key)), e)
        })
    }

    fn entry(&self, key: &[u8]) -> Result<Option<Entry>, TierError> {
        match self.db.get(key) {
            Ok(Some(v)) => self.decode_entry(key, &v).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.db_err("index read", e)),
        }
    }

    fn write_synced(&self, batch: rocksdb::WriteBatch) -> Result<(), TierError> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(|e| self.db_err("index write", e))
    }

    fn io(&self, what: String, e: std::io::Error) -> TierError {
        TierError::io(&self.name, what, e)
    }

    fn sync_segment_dir(&self) -> Result<(), TierError> {
        fs::File::open(self.root.join("segments"))
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io("syncing the segment directory".into(), e))
    }

    fn run_hook(&self, step: &str) -> Result<(), TierError> {
        let hook = self.hook.lock().clone();
        match hook {
            Some(h) => h(step),
            None => Ok(()),
        }
    }

    /// Scans every entry: per segment, its live bytes and objects (bytes = end of the last).
    fn stats_from_entries(&self) -> Result<BTreeMap<u64, SegmentStats>, TierError> {
        let mut out: BTreeMap<u64, SegmentStats> = BTreeMap::new();
        for item in self.db.iterator(rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.db_err("index scan", e))?;
            let e = self.decode_entry(&k, &v)?;
            out.entry(e.segment).or_default().add(&e);
        }
        Ok(out)
    }

    /// Brings the index and the segment directory back in line after a crash or an
    /// upgrade, and loads the stats mirror.
    fn recover(&self, mut on_disk: BTreeMap<u64, u64>) -> Result<(), TierError> {
        let meta = self.meta()?;
        let active_id = self.state.lock().active.id;
        let built = self.db.get_cf(meta, STATS_VERSION_KEY).map_err(|e| self.db_err("index read", e))?.is_some();
        let mut stats = if built { self.load_stats()? } else { self.rebuild_stats(&on_disk)? };

        // Deletions decided by a committed compaction batch.
        for id in self.finish_deletions(&stats, active_id)? {
            on_disk.remove(&id);
        }

        // Leftovers of interrupted compactions or rotations: files without a stats record.
        let orphans: Vec<u64> =
            on_disk.keys().copied().filter(|id| *id != active_id && !stats.contains_key(id)).collect();
        if !orphans.is_empty() {
            let referenced = self.stats_from_entries()?;
            if orphans.iter().any(|id| referenced.contains_key(id)) {
                tracing::warn!(tier = %self.name, "segment stats were incomplete: rebuilt from the index");
                stats = self.rebuild_stats(&on_disk)?;
            }
            for id in orphans.iter().filter(|id| !referenced.contains_key(id)) {
                self.remove_file(*id)?;
                on_disk.remove(id);
                tracing::info!(tier = %self.name, segment = id, "removed an unreferenced segment");
            }
        }

        // Bytes a crash left unreferenced at the end of a segment still take space.
        let mut edit = StatsEdit::default();
        for (&id, &len) in &on_disk {
            if let Some(s) = stats.get(&id) {
                if len > s.bytes {
                    edit.update(&stats, id, |s| s.bytes = len);
                }
            }
        }
        let mut batch = rocksdb::WriteBatch::default();
        edit.write(self, &mut batch)?;
        if !batch.is_empty() {
            self.write_synced(batch)?;
        }
        edit.apply(&mut stats);
        self.state.lock().stats = stats;
        Ok(())
    }

    /// Removes the segment files marked `deleting/<id>` (by a committed compaction batch),
    /// syncs the directory, then drops the markers; returns the ids removed. A marked
    /// segment that still has live objects or is the active one is kept (and reported).
    fn finish_deletions(&self, stats: &BTreeMap<u64, SegmentStats>, active_id: u64) -> Result<Vec<u64>, TierError> {
        let meta = self.meta()?;
        let mut markers = Vec::new();
        let mut removed = Vec::new();
        let mode = rocksdb::IteratorMode::From(b"deleting/", rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(meta, mode) {
            let (k, _) = item.map_err(|e| self.db_err("index scan", e))?;
            let Some(hex) = k.strip_prefix(b"deleting/") else { break };
            match std::str::from_utf8(hex).ok().and_then(|h| u64::from_str_radix(h, 16).ok()) {
                Some(id) if stats.get(&id).is_some_and(|s| s.objects > 0) || id == active_id => {
                    tracing::warn!(tier = %self.name, segment = id, "a segment marked for deletion is in use: kept");
                }
                Some(id) => {
                    self.remove_file(id)?;
                    tracing::info!(tier = %self.name, segment = id, "removed a compacted segment");
                    removed.push(id);
                }
                None => tracing::warn!(tier = %self.name, "dropping a malformed deletion marker"),
            }
            markers.push(k);
        }
        if markers.is_empty() {
            return Ok(removed);
        }
        self.sync_segment_dir()?;
        let mut batch = rocksdb::WriteBatch::default();
        for k in markers {
            batch.delete_cf(meta, k);
        }
        self.write_synced(batch)?;
        Ok(removed)
    }

    fn load_stats(&self) -> Result<BTreeMap<u64, SegmentStats>, TierError> {
        let mut out = BTreeMap::new();
        let mode = rocksdb::IteratorMode::From(b"segment/", rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.meta()?, mode) {
            let (k, v) = item.map_err(|e| self.db_err("index scan", e))?;
            let Some(hex) = k.strip_prefix(b"segment/") else { break };
            let id = std::str::from_utf8(hex).ok().and_then(|h| u64::from_str_radix(h, 16).ok());
            let s: Option<SegmentStats> = serde_json::from_slice(&v).ok();
            match (id, s) {
                (Some(id), Some(s)) => out.insert(id, s),
                _ => {
                    tracing::warn!(tier = %self.name, "corrupt segment stats record: rebuilding all");
                    return self.stats_from_entries();
                }
            };
        }
        Ok(out)
    }

    /// Recomputes every stats record from the entries and the file lengths, in one batch.
    fn rebuild_stats(&self, on_disk: &BTreeMap<u64, u64>) -> Result<BTreeMap<u64, SegmentStats>, TierError> {
        let meta = self.meta()?;
        let mut stats = self.stats_from_entries()?;
        for (id, s) in stats.iter_mut() {
            s.bytes = s.bytes.max(on_disk.get(id).copied().unwrap_or(0));
        }
        let mut batch = rocksdb::WriteBatch::default();
        let mode = rocksdb::IteratorMode::From(b"segment/", rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(meta, mode) {
            let (k, _) = item.map_err(|e| self.db_err("index scan", e))?;
            if !k.starts_with(b"segment/") {
                break;
            }
            batch.delete_cf(meta, k);
        }
        for (&id, s) in &stats {
            batch.put_cf(meta, stats_key(id), self.encode(s)?);
        }
        batch.put_cf(meta, STATS_VERSION_KEY, b"1");
        self.write_synced(batch)?;
        Ok(stats)
    }

    /// Removes a segment file (missing is fine); the caller syncs the directory.
    fn remove_file(&self, id: u64) -> Result<(), TierError> {
        let path = segment_path(&self.root, id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(format!("removing {}", path.display()), e)),
        }
    }

    /// Starts a new active segment if `len` more bytes would overflow this one.
    fn make_room(&self, active: &mut Active, len: u64) -> Result<(), TierError> {
        if active.len <= SEGMENT_HEADER_LEN || active.len + len <= self.config.segment_bytes {
            return Ok(());
        }
        // Compaction appends without syncing each copy: the old segment must be durable first.
        active.file.sync_data().map_err(|e| self.io(format!("syncing segment {}", active.id), e))?;
        let id = active.id + 1;
        let path = segment_path(&self.root, id);
        let file = fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| self.io(format!("creating segment {}", path.display()), e))?;
        write_segment_header(&file).map_err(|e| self.io(format!("writing the header of {}", path.display()), e))?;
        self.sync_segment_dir()?;
        *active = Active { id, file, len: SEGMENT_HEADER_LEN };
        Ok(())
    }

    /// Appends bytes to the active segment (fdatasyncing them if `sync`); returns their offset.
    fn write_active(&self, active: &mut Active, bytes: &[u8], sync: bool, what: &str) -> Result<u64, TierError> {
        let offset = active.len;
        let write = active.file.write_all(bytes).and_then(|()| if sync { active.file.sync_data() } else { Ok(()) });
        if let Err(e) = write {
            // Whatever was written is unreferenced; later appends go after it.
            active.len = active.file.metadata().map(|m| m.len()).unwrap_or(active.len);
            return Err(self.io(format!("appending {what}"), e));
        }
        active.len += bytes.len() as u64;
        Ok(offset)
    }

    /// Appends compressed bytes and indexes them; refuses a taken key unless `overwrite`.
    fn append(
        &self,
        key: &ObjectKey,
        stored: &[u8],
        size: u64,
        checksum: Checksum,
        overwrite: bool,
        dictionary: Option<u64>,
    ) -> Result<(), TierError> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let raw = self.db.get(key.as_str()).map_err(|e| self.db_err("index read", e))?;
        if !overwrite && raw.is_some() {
            return Err(TierError::AlreadyExists(key.clone()));
        }
        let previous = match raw.map(|v| self.decode_entry(key.as_str().as_bytes(), &v)).transpose() {
            Ok(p) => p,
            // Overwriting repairs the key; the old segment's stats keep counting those bytes as live.
            Err(err) => {
                tracing::warn!(tier = %self.name, error = %err, "overwriting a corrupt index entry");
                None
            }
        };
        self.make_room(&mut state.active, stored.len() as u64)?;
        let offset = self.write_active(&mut state.active, stored, true, key.as_str())?;
        let entry =
            Entry { segment: state.active.id, offset, stored_len: stored.len() as u64, size, checksum, dictionary };
        let mut edit = StatsEdit::default();
        if let Some(p) = &previous {
            edit.update(&state.stats, p.segment, |s| s.release(p));
        }
        let active_len = state.active.len;
        edit.update(&state.stats, entry.segment, |s| {
            s.add(&entry);
            s.bytes = s.bytes.max(active_len);
        });
        let mut batch = rocksdb::WriteBatch::default();
        batch.put(key.as_str(), self.encode(&entry)?);
        edit.write(self, &mut batch)?;
        self.write_synced(batch)?;
        edit.apply(&mut state.stats);
        Ok(())
    }

    /// Removes an entry and releases its bytes, in one synced batch.
    fn remove(&self, key: &ObjectKey) -> Result<(), TierError> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let raw = self.db.get(key.as_str()).map_err(|e| self.db_err("index read", e))?;
        let Some(raw) = raw else { return Ok(()) };
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete(key.as_str());
        let mut edit = StatsEdit::default();
        match self.decode_entry(key.as_str().as_bytes(), &raw) {
            Ok(e) => edit.update(&state.stats, e.segment, |s| s.release(&e)),
            // The entry is unreadable anyway; its segment's stats keep counting those bytes as live.
            Err(err) => tracing::warn!(tier = %self.name, error = %err, "deleting a corrupt index entry"),
        }
        edit.write(self, &mut batch)?;
        self.write_synced(batch)?;
        edit.apply(&mut state.stats);
        Ok(())
    }

    /// Looks an object up and reads its frame, looking it up again when its segment file
    /// vanished meanwhile (compaction removed it after repointing the entry).
    ///
    /// The outer error is for the call (`NotFound`, `InvalidRange`, index failures); the
    /// inner one for the body (damage, I/O).
    fn lookup_and_read(
        &self,
        key: &ObjectKey,
        check: impl Fn(&Entry) -> Result<(), TierError>,
    ) -> Result<(Entry, Result<Vec<u8>, TierError>), TierError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let e = self.entry(key.as_str().as_bytes())?.ok_or_else(|| TierError::NotFound(key.clone()))?;
            check(&e)?;
            let hook = self.read_hook.lock().clone();
            if let Some(hook) = hook {
                hook();
            }
            let path = segment_path(&self.root, e.segment);
            let file = match fs::File::open(&path) {
                Ok(f) => f,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && attempt < READ_ATTEMPTS => continue,
                Err(err) => return Ok((e, Err(self.io(format!("opening {}", path.display()), err)))),
            };
            let data = self.read_frame(key, &file, &e);
            return Ok((e, data));
        }
    }

    /// Reads and decompresses an object; a damaged frame is a checksum mismatch.
    fn read_frame(&self, key: &ObjectKey, file: &fs::File, e: &Entry) -> Result<Vec<u8>, TierError> {
        let mut raw = vec![0u8; e.stored_len as usize];
        file.read_exact_at(&mut raw, e.offset).map_err(|err| self.io(format!("reading {key}"), err))?;
        match self.decompress(&raw, e) {
            Ok(data) => Ok(data),
            Err(FrameError::Damaged) => {
                Err(TierError::ChecksumMismatch { key: key.clone(), expected: e.checksum, actual: Checksum::of(&raw) })
            }
            Err(FrameError::Dictionary { id, why }) => Err(TierError::corrupt(
                &self.name,
                format!("cannot decompress {key}: the compression dictionary {id} it needs {why}"),
            )),
        }
    }

    /// Decompresses a frame (with the dictionary its entry names) and checks its length.
    fn decompress(&self, raw: &[u8], e: &Entry) -> Result<Vec<u8>, FrameError> {
        let data = match e.dictionary {
            None => zstd::bulk::decompress(raw, e.size as usize).map_err(|_| FrameError::Damaged)?,
            Some(id) => {
                let dict = self.dictionary(id).map_err(|why| FrameError::Dictionary { id, why })?;
                let mut dctx = zstd_safe::DCtx::try_create()
                    .ok_or_else(|| FrameError::Dictionary { id, why: "cannot get a zstd context".into() })?;
                let mut out = Vec::with_capacity(e.size as usize);
                dctx.decompress_using_ddict(&mut out, raw, &dict.ddict).map_err(|_| FrameError::Damaged)?;
                out
            }
        };
        if data.len() as u64 != e.size {
            return Err(FrameError::Damaged);
        }
        Ok(data)
    }

    /// Compresses an object, with a dictionary when given.
    fn compress(&self, key: &ObjectKey, data: &[u8], dict: Option<&Dictionary>) -> Result<Vec<u8>, TierError> {
        let Some(dict) = dict else {
            return zstd::bulk::compress(data, self.config.zstd_level)
                .map_err(|e| self.io(format!("compressing {key}"), e));
        };
        // As zstd's own bulk API does, a compressor failure is an I/O error of the compression.
        let failed = |why: &str| {
            self.io(format!("compressing {key} with dictionary {}", dict.id), std::io::Error::other(why.to_string()))
        };
        let mut cctx = zstd_safe::CCtx::try_create().ok_or_else(|| failed("cannot get a zstd context"))?;
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
        cctx.compress_using_cdict(&mut out, data, &dict.cdict)
            .map_err(|code| failed(zstd_safe::get_error_name(code)))?;
        Ok(out)
    }

    /// A usable dictionary by id, or what is wrong with it.
    fn dictionary(&self, id: u64) -> Result<Arc<Dictionary>, String> {
        let dicts = self.dicts.lock();
        if let Some(d) = dicts.by_id.get(&id) {
            return Ok(d.clone());
        }
        Err(match dicts.damaged.get(&id) {
            Some((_, why)) => format!("is damaged ({why})"),
            None => "is missing from the index".into(),
        })
    }

    /// The content class a put gets a dictionary for: `None` when dictionaries are off or
    /// the hint is missing, empty or too long.
    fn class_of<'a>(&self, hint: Option<&'a str>) -> Option<&'a str> {
        if !self.config.dictionaries {
            return None;
        }
        let class = hint?.trim();
        (!class.is_empty() && class.len() <= MAX_CLASS_LEN).then_some(class)
    }

    /// The dictionary new objects of a class are compressed with, if it has one yet.
    fn active_dictionary(&self, class: &str) -> Option<Arc<Dictionary>> {
        self.dicts.lock().classes.get(class)?.active.clone()
    }

    /// Keeps the start of a stored object as a training sample of its class; returns the
    /// samples when they are enough to train (the caller then trains: see [`Inner::train`]).
    fn take_sample(&self, class: &str, data: &[u8]) -> Option<Vec<Vec<u8>>> {
        let sample = sample_of(data)?;
        let mut dicts = self.dicts.lock();
        if !dicts.classes.contains_key(class) && dicts.classes.len() >= MAX_CLASSES {
            return None;
        }
        let state = dicts.classes.entry(class.to_string()).or_default();
        if state.active.is_some() || state.training {
            return None;
        }
        state.samples.push(sample.to_vec());
        if state.samples.len() < self.config.dictionary_samples {
            return None;
        }
        state.training = true;
        Some(std::mem::take(&mut state.samples))
    }

    /// Trains a class's dictionary, persists it (synced) and only then makes it the class's
    /// active one; a failure is logged and sampling starts over.
    fn train(&self, class: &str, samples: Vec<Vec<u8>>) {
        let started = std::time::Instant::now();
        let outcome = self.train_and_store(class, &samples);
        let mut dicts = self.dicts.lock();
        match outcome {
            Ok(dict) => {
                tracing::info!(tier = %self.name, class, dictionary = dict.id, bytes = dict.len,
                    samples = samples.len(), ms = started.elapsed().as_millis() as u64, "trained a compression dictionary");
                dicts.by_id.insert(dict.id, dict.clone());
                let state = dicts.classes.entry(class.to_string()).or_default();
                state.active = Some(dict);
                state.training = false;
                state.samples = Vec::new();
            }
            Err(why) => {
                tracing::warn!(tier = %self.name, class, samples = samples.len(), reason = %why,
                    "no compression dictionary for this class yet: sampling again");
                if let Some(state) = dicts.classes.get_mut(class) {
                    state.training = false;
                }
            }
        }
    }

    /// Trains on three samples in four and keeps the dictionary only if it shrinks the
    /// fourth ones by [`MIN_DICTIONARY_GAIN`] against plain zstd; then stores it (synced).
    fn train_and_store(&self, class: &str, samples: &[Vec<u8>]) -> Result<Arc<Dictionary>, String> {
        let level = self.config.zstd_level;
        let (mut training, mut held_out) = (Vec::new(), Vec::new());
        for (i, s) in samples.iter().enumerate() {
            if (i + 1).is_multiple_of(4) {
                held_out.push(s.as_slice())
            } else {
                training.push(s.as_slice())
            }
        }
        let bytes = zstd::dict::from_samples(&training, self.config.dictionary_kb << 10)
            .map_err(|e| format!("training failed: {e}"))?;
        // The id is only taken for a dictionary worth keeping.
        let dict = prepare_dictionary(0, class.to_string(), &bytes, level)?;
        let (mut plain, mut with) = (0usize, 0usize);
        let mut cctx = zstd_safe::CCtx::try_create().ok_or("cannot get a zstd context")?;
        for s in &held_out {
            plain += zstd::bulk::compress(s, level).map_err(|e| format!("compressing a sample failed: {e}"))?.len();
            let mut out = Vec::with_capacity(zstd_safe::compress_bound(s.len()));
            cctx.compress_using_cdict(&mut out, s, &dict.cdict)
                .map_err(|code| format!("compressing a sample failed: {}", zstd_safe::get_error_name(code)))?;
            with += out.len();
        }
        if (with as f64) > (1.0 - MIN_DICTIONARY_GAIN) * plain as f64 {
            return Err(format!(
                "the dictionary does not help: {} held-out samples take {with} bytes with it, {plain} without",
                held_out.len()
            ));
        }
        let id = {
            let mut dicts = self.dicts.lock();
            let id = dicts.next_id.max(1);
            dicts.next_id = id.saturating_add(1);
            id
        };
        let dict = Dictionary { id, ..dict };
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.meta().map_err(|e| e.to_string())?, dict_key(id), encode_dict_record(class, &bytes));
        self.write_synced(batch).map_err(|e| format!("storing it failed: {e}"))?;
        Ok(Arc::new(dict))
    }

    /// Loads and checks every dictionary record; the newest usable one of each class becomes
    /// its active dictionary.
    fn load_dictionaries(&self) -> Result<(), TierError> {
        let meta = self.meta()?;
        let mut dicts = Dictionaries { next_id: 1, ..Dictionaries::default() };
        let mode = rocksdb::IteratorMode::From(DICT_PREFIX, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(meta, mode) {
            let (k, v) = item.map_err(|e| self.db_err("index scan", e))?;
            let Some(hex) = k.strip_prefix(DICT_PREFIX) else { break };
            let Some(id) = std::str::from_utf8(hex).ok().and_then(|h| u64::from_str_radix(h, 16).ok()) else {
                tracing::warn!(tier = %self.name, key = %String::from_utf8_lossy(&k), "ignoring a malformed dictionary key");
                continue;
            };
            dicts.next_id = dicts.next_id.max(id.saturating_add(1));
            let (class, bytes) = decode_dict_record(&v);
            let level = self.config.zstd_level;
            match bytes.and_then(|b| prepare_dictionary(id, class.clone(), b, level)) {
                Ok(dict) => {
                    let dict = Arc::new(dict);
                    // Keys sort by id: a later dictionary of the class replaces an earlier one.
                    dicts.classes.entry(class).or_default().active = Some(dict.clone());
                    dicts.by_id.insert(id, dict);
                }
                Err(why) => {
                    tracing::error!(tier = %self.name, dictionary = id, class = %class, reason = %why,
                        "a compression dictionary is damaged: the objects compressed with it cannot be read");
                    dicts.damaged.insert(id, (class, why));
                }
            }
        }
        *self.dicts.lock() = dicts;
        Ok(())
    }

    fn compact_once(&self) -> Result<CompactionReport, TierError> {
        let _one = self.compaction.lock();
        // A removal that failed after its batch committed is retried here, not only on open.
        let (stats, active_id) = {
            let state = self.state.lock();
            (state.stats.clone(), state.active.id)
        };
        self.finish_deletions(&stats, active_id)?;
        let candidates: BTreeSet<u64> = {
            let state = self.state.lock();
            let below = self.config.compact_below;
            state
                .stats
                .iter()
                .filter(|(id, s)| **id < state.active.id && s.compactable(below))
                .map(|(id, _)| *id)
                .collect()
        };
        let mut report = CompactionReport::default();
        if candidates.is_empty() {
            return Ok(report);
        }
        // A candidate is not active: no put adds entries to it, so one scan finds them all.
        let mut live: BTreeMap<u64, Vec<Live>> = candidates.iter().map(|id| (*id, Vec::new())).collect();
        for item in self.db.iterator(rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.db_err("index scan", e))?;
            // An unreadable entry might point into a candidate: refuse to remove anything.
            let e = self.decode_entry(&k, &v)?;
            if let Some(list) = live.get_mut(&e.segment) {
                list.push((k, e));
            }
        }
        for (id, mut entries) in live {
            entries.sort_by_key(|(_, e)| e.offset);
            self.compact_segment(id, entries, &mut report)?;
        }
        Ok(report)
    }

    /// Copies the live objects of segment `id` to the active segment, repoints them, removes
    /// the old file.
    fn compact_segment(&self, id: u64, entries: Vec<Live>, report: &mut CompactionReport) -> Result<(), TierError> {
        let path = segment_path(&self.root, id);
        let old_len = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && entries.is_empty() => 0,
            Err(e) => return Err(self.io(format!("opening {}", path.display()), e)),
        };
        let mut moves: Vec<Move> = Vec::with_capacity(entries.len());
        let mut ends: BTreeMap<u64, u64> = BTreeMap::new();
        // Headers of the segments the copies opened: bytes that are not reclaimed.
        let mut headers = 0u64;
        let copied_bytes: u64 = entries.iter().map(|(_, e)| e.stored_len).sum();
        if !entries.is_empty() {
            if let Copied::Damaged(why) = self.copy_live(&path, entries, &mut moves, &mut ends, &mut headers)? {
                tracing::warn!(tier = %self.name, segment = id, reason = %why, "segment not compacted");
                report.segments_skipped += 1;
                return Ok(());
            }
        }
        self.run_hook("after_copy")?;
        archive_core::failpoint::hit("warm.compact.after_copy");

        // Repoint, compare-and-set under the put mutex: a delete or overwrite made since the
        // scan wins.
        {
            let mut guard = self.state.lock();
            let state = &mut *guard;
            let mut batch = rocksdb::WriteBatch::default();
            let mut edit = StatsEdit::default();
            let mut moved = 0;
            for (key, old, new) in &moves {
                match self.entry(key)? {
                    Some(current) if current.same_location(old) => {
                        batch.put(key, self.encode(new)?);
                        edit.update(&state.stats, old.segment, |s| s.release(old));
                        edit.update(&state.stats, new.segment, |s| s.add(new));
                        moved += 1;
                    }
                    _ => {}
                }
            }
            for (&seg, &end) in &ends {
                edit.update(&state.stats, seg, |s| s.bytes = s.bytes.max(end));
            }
            // The scan saw every entry of the segment (it was no longer active, so no put
            // could add one), and each now points elsewhere or is gone: nothing refers to
            // the file any more, whatever the stats say.
            let remaining = edit.get(&state.stats, id).objects;
            if remaining != 0 {
                tracing::warn!(tier = %self.name, segment = id, remaining, "segment stats were off: corrected");
            }
            edit.remove(id);
            batch.put_cf(self.meta()?, deleting_key(id), b"");
            edit.write(self, &mut batch)?;
            self.write_synced(batch)?;
            edit.apply(&mut state.stats);
            report.objects_moved += moved;
        }
        self.run_hook("after_repoint")?;
        archive_core::failpoint::hit("warm.compact.after_repoint");
        self.remove_file(id)?;
        self.sync_segment_dir()?;
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(self.meta()?, deleting_key(id));
        self.write_synced(batch)?;
        report.segments_compacted += 1;
        report.bytes_reclaimed += old_len.saturating_sub(copied_bytes + headers);
        Ok(())
    }

    /// Reads, verifies and appends (fdatasynced) every listed object of the segment at
    /// `path`, recording where each copy went and how far each target segment reaches.
    fn copy_live(
        &self,
        path: &Path,
        entries: Vec<Live>,
        moves: &mut Vec<Move>,
        ends: &mut BTreeMap<u64, u64>,
        headers: &mut u64,
    ) -> Result<Copied, TierError> {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return Ok(Copied::Damaged(format!("cannot open {}: {e}", path.display()))),
        };
        let mut chunk: Vec<Frame> = Vec::new();
        let mut chunk_bytes = 0u64;
        for (key, e) in entries {
            let name = String::from_utf8_lossy(&key).into_owned();
            let mut raw = vec![0u8; e.stored_len as usize];
            if let Err(err) = file.read_exact_at(&mut raw, e.offset) {
                return Ok(Copied::Damaged(format!("cannot read {name}: {err}")));
            }
            match self.decompress(&raw, &e) {
                Ok(data) if Checksum::of(&data) == e.checksum => {}
                Ok(_) | Err(FrameError::Damaged) => return Ok(Copied::Damaged(format!("{name} fails verification"))),
                Err(FrameError::Dictionary { id, why }) => {
                    return Ok(Copied::Damaged(format!("{name} cannot be verified: its dictionary {id} {why}")))
                }
            }
            chunk_bytes += raw.len() as u64;
            chunk.push((key, e, raw));
            if chunk_bytes >= COPY_CHUNK_BYTES {
                self.append_copies(&mut chunk, moves, ends, headers)?;
                chunk_bytes = 0;
            }
        }
        self.append_copies(&mut chunk, moves, ends, headers)?;
        Ok(Copied::All)
    }

    /// Appends a chunk of verified frames to the active segment under the put mutex and
    /// fdatasyncs them; adds the header bytes of the segments it opens to `headers`.
    fn append_copies(
        &self,
        chunk: &mut Vec<Frame>,
        moves: &mut Vec<Move>,
        ends: &mut BTreeMap<u64, u64>,
        headers: &mut u64,
    ) -> Result<(), TierError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock();
        for (key, old, raw) in chunk.drain(..) {
            let before = state.active.id;
            self.make_room(&mut state.active, raw.len() as u64)?;
            if state.active.id != before {
                *headers += SEGMENT_HEADER_LEN;
            }
            let offset = self.write_active(&mut state.active, &raw, false, "a compacted object")?;
            let new = Entry { segment: state.active.id, offset, ..old.clone() };
            ends.insert(state.active.id, state.active.len);
            moves.push((key, old, new));
        }
        let active = &mut state.active;
        active.file.sync_data().map_err(|e| self.io(format!("syncing segment {}", active.id), e))
    }
}

/// Runs file and index work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TierError> + Send + 'static,
) -> Result<T, TierError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| TierError::worker("warm tier file and index work", e))?
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
            max_object_size: Some(self.inner.config.segment_bytes.max(4 << 30)),
            batch_bytes: None,
        }
    }

    async fn put(&self, key: &ObjectKey, mut body: ByteStream, opts: PutOpts) -> Result<ObjectMeta, TierError> {
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => data.extend_from_slice(&c),
                Err(e) => return Err(e.into_body()),
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
            let class = inner.class_of(opts.content_class.as_deref());
            let dict = class.and_then(|c| inner.active_dictionary(c));
            let stored = inner.compress(&key, &data, dict.as_deref())?;
            inner.append(&key, &stored, data.len() as u64, checksum, opts.overwrite, dict.as_ref().map(|d| d.id))?;
            // Objects stored without a dictionary are samples towards their class's one.
            if let (Some(class), None) = (class, &dict) {
                if let Some(samples) = inner.take_sample(class, &data) {
                    inner.train(class, samples);
                }
            }
            Ok(ObjectMeta { key, size: data.len() as u64, checksum })
        })
        .await
    }

    async fn get(&self, key: &ObjectKey, opts: GetOpts) -> Result<GetResult, TierError> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || {
            let check = |e: &Entry| match &opts.range {
                Some(r) if r.start > r.end || r.end > e.size => {
                    Err(TierError::InvalidRange { key: key.clone(), start: r.start, end: r.end, size: e.size })
                }
                _ => Ok(()),
            };
            let (e, read) = inner.lookup_and_read(&key, check)?;
            let meta = ObjectMeta { key: key.clone(), size: e.size, checksum: e.checksum };
            let body = match read {
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
        let e = self.inner.entry(key.as_str().as_bytes())?.ok_or_else(|| TierError::NotFound(key.clone()))?;
        Ok(ObjectMeta { key: key.clone(), size: e.size, checksum: e.checksum })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), TierError> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || inner.remove(&key)).await
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>, TierError> {
        let inner = self.inner.clone();
        let prefix = prefix.unwrap_or("").to_string();
        blocking(move || {
            let mut out = Vec::new();
            let mode = rocksdb::IteratorMode::From(prefix.as_bytes(), rocksdb::Direction::Forward);
            for item in inner.db.iterator(mode) {
                let (k, v) = item.map_err(|e| inner.db_err("index scan", e))?;
                if !k.starts_with(prefix.as_bytes()) {
                    break;
                }
                let key = ObjectKey::new(String::from_utf8_lossy(&k).into_owned())
                    .map_err(|e| TierError::corrupt_by(&inner.name, "bad key in the index", e))?;
                let e = inner.decode_entry(&k, &v)?;
                out.push(ObjectMeta { key, size: e.size, checksum: e.checksum });
            }
            Ok(out)
        })
        .await
    }
}
