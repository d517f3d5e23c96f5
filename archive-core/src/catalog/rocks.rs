//! The catalog on RocksDB: reads, queries and opening; writes go through [`super::writer`].

use super::hidden_view::HiddenView;
use super::keys::{self, IndexId, CF_AUDIT, CF_IDX, CF_INSTANCES, CF_INSTANCE_BY_UID, CF_INTENTS, CF_META};
use super::keys::{CF_DELETIONS, CF_HOLDS, CF_JOBS, CF_METADATA, CF_PATIENTS, CF_SERIES, CF_SERIES_BY_UID, CF_STUDIES};
use super::writer::{WriterHandle, WriterState};
use super::{Catalog, CatalogError, CatalogStats, InsertOutcome, NewInstance, PurgeRequest, Relocation, WriteIntent};
use crate::attribute::{Attribute, Level};
use crate::audit::{AuditEvent, AuditRecord};
use crate::deletion::{Deletion, DeletionId};
use crate::format::{self, FormatError, Versioned};
use crate::hold::{HoldId, LegalHold};
use crate::lifecycle::job::{Job, JobId};
use crate::matching::{normalize_date, normalize_pn, MatchOptions, Matcher};
use crate::model::{InstanceRecord, PatientKey, PatientRecord, SeriesRecord, StudyRecord};
use crate::query::{Query, QueryPage, QueryRow};
use crate::uid::{SeriesUid, SopInstanceUid, StudyUid};
use async_trait::async_trait;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteOptions, DB};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use time::OffsetDateTime;

/// Tuning of the RocksDB catalog.
#[derive(Debug, Clone)]
pub struct RocksCatalogOptions {
    /// Sync the write-ahead log on every commit (never turn off outside benchmarks of the engine itself).
    pub sync_commits: bool,
    /// Most commits merged into one synced write.
    pub max_group: usize,
}

impl Default for RocksCatalogOptions {
    fn default() -> Self {
        Self { sync_commits: true, max_group: 512 }
    }
}

/// The RocksDB catalog.
pub struct RocksCatalog {
    db: Arc<DB>,
    writer: WriterHandle,
    /// Active deletions by study, for hiding them from queries and retrieves without a read.
    hidden: parking_lot::RwLock<HashMap<String, Vec<Deletion>>>,
    /// Standing patient links by study: the patient attributes its retrieved objects take.
    linked: parking_lot::RwLock<HashMap<String, (crate::patient_link::LinkId, crate::attribute::AttrMap)>>,
}

impl std::fmt::Debug for RocksCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksCatalog").field("path", &self.db.path()).finish()
    }
}

/// Decodes a versioned record: its version marker is read, an older version is migrated up,
/// a newer one is refused (see [`crate::format`]).
pub(crate) fn decode<T: Versioned>(key: &[u8], bytes: &[u8]) -> Result<T, CatalogError> {
    format::decode(bytes)
        .map_err(|source| CatalogError::Format { key: String::from_utf8_lossy(key).into_owned(), source })
}

/// Decodes a value without a version marker of its own (stats, write intents): the catalog's
/// `schema_version` covers it.
pub(crate) fn decode_plain<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, CatalogError> {
    serde_json::from_slice(bytes)
        .map_err(|e| CatalogError::Corrupt { key: String::from_utf8_lossy(key).into_owned(), message: e.to_string() })
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("column families are created at open")
}

/// The error of opening the catalog: [`CatalogError::InUse`] when RocksDB could not take its
/// LOCK file, any other engine error as it is.
///
/// RocksDB reports a held lock as an I/O error naming the LOCK file: "While lock file:
/// DIR/LOCK: Resource temporarily unavailable" when another process holds it, "lock hold by
/// current process, ...: DIR/LOCK: No locks available" when this process does. This is the
/// one place that reads that message.
fn open_error(path: &Path, e: rocksdb::Error) -> CatalogError {
    let message: &str = e.as_ref();
    if e.kind() == rocksdb::ErrorKind::IOError && message.contains("/LOCK:") {
        return CatalogError::InUse { path: path.to_path_buf(), source: e };
    }
    CatalogError::Engine(e)
}

impl RocksCatalog {
    /// Inserts handed to the committer and not answered yet (the commit queue depth).
    pub fn commit_queue_depth(&self) -> usize {
        self.writer.in_flight()
    }

    /// Opens (or creates) the catalog in `path`.
    pub fn open(path: &Path, opts: RocksCatalogOptions) -> Result<Self, CatalogError> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_keep_log_file_num(5);
        db_opts.set_max_total_wal_size(256 << 20);
        let unknown = unknown_column_families(path);
        let cfs = keys::COLUMN_FAMILIES.iter().copied().chain(unknown.iter().map(String::as_str)).map(|name| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(name, o)
        });
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|e| open_error(path, e))?;
        let db = Arc::new(db);
        check_schema(&db)?;
        let state = WriterState::load(&db)?;
        let writer = WriterHandle::spawn(db.clone(), state, opts);
        let cat = Self { db, writer, hidden: Default::default(), linked: Default::default() };
        for d in cat.deletions()? {
            cat.note_deletion(&d);
        }
        cat.reload_links()?;
        Ok(cat)
    }

    /// Rebuilds the study → rewrite map from the standing links (later links win).
    fn reload_links(&self) -> Result<(), CatalogError> {
        let mut map = HashMap::new();
        for link in self.links()? {
            if !link.is_active() {
                continue;
            }
            for s in &link.studies {
                map.insert(s.study.as_str().to_string(), (link.id, link.to_attrs.clone()));
            }
        }
        *self.linked.write() = map;
        Ok(())
    }

    /// Keeps the hidden-set in step with a saved deletion.
    fn note_deletion(&self, d: &Deletion) {
        let mut hidden = self.hidden.write();
        let list = hidden.entry(d.study.as_str().to_string()).or_default();
        list.retain(|x| x.id != d.id);
        if d.is_active() {
            let mut lite = d.clone();
            lite.certificate = Default::default();
            list.push(lite);
        }
        if list.is_empty() {
            hidden.remove(d.study.as_str());
        }
    }

    /// Waits for queued commits and flushes memtables (used at shutdown).
    pub async fn close(&self) -> Result<(), CatalogError> {
        self.writer.flush().await?;
        self.db.flush_wal(true)?;
        Ok(())
    }

    fn get<T: Versioned>(&self, cf_name: &str, key: &[u8]) -> Result<Option<T>, CatalogError> {
        match self.db.get_cf(cf(&self.db, cf_name), key)? {
            Some(v) => Ok(Some(decode(key, &v)?)),
            None => Ok(None),
        }
    }

    /// Values of every key starting with `prefix` in a column family.
    fn scan_prefix<T: Versioned>(&self, cf_name: &str, prefix: &[u8]) -> Result<Vec<T>, CatalogError> {
        let mut out = Vec::new();
        self.for_each_prefix(cf_name, prefix, |k, v| {
            out.push(decode(k, v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Calls `f` on each entry whose key starts with `prefix`, until it returns false.
    fn for_each_prefix(
        &self,
        cf_name: &str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, CatalogError>,
    ) -> Result<(), CatalogError> {
        let mut ro = ReadOptions::default();
        if let Some(upper) = prefix_upper_bound(prefix) {
            ro.set_iterate_upper_bound(upper);
        }
        let iter = self.db.iterator_cf_opt(cf(&self.db, cf_name), ro, IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    /// Index targets for entries between `from` (inclusive) and `to` (exclusive).
    fn index_range(&self, from: &[u8], to: Option<Vec<u8>>, out: &mut Vec<Vec<u8>>) -> Result<(), CatalogError> {
        let mut ro = ReadOptions::default();
        if let Some(to) = to {
            ro.set_iterate_upper_bound(to);
        }
        let iter = self.db.iterator_cf_opt(cf(&self.db, CF_IDX), ro, IteratorMode::From(from, Direction::Forward));
        for item in iter {
            let (k, _) = item?;
            if let Some((_, target)) = keys::split_index_key(&k) {
                out.push(target.to_vec());
            }
        }
        Ok(())
    }

    /// Targets of index entries whose value matches `m` as far as the index can tell (a superset).
    /// `None` when the index cannot narrow this matcher.
    fn index_candidates(
        &self,
        id: IndexId,
        m: &Matcher,
        norm: fn(&str) -> String,
    ) -> Result<Option<Vec<Vec<u8>>>, CatalogError> {
        let mut out = Vec::new();
        match m {
            Matcher::Single(v) => {
                let p = keys::index_exact(id, &norm(v));
                self.index_range(&p, prefix_upper_bound(&p), &mut out)?;
            }
            Matcher::List(vs) => {
                for v in vs {
                    let p = keys::index_exact(id, &norm(v));
                    self.index_range(&p, prefix_upper_bound(&p), &mut out)?;
                }
            }
            Matcher::Wildcard(_) => {
                let prefix = match m.literal_prefix() {
                    Some(p) if !p.is_empty() => norm(p),
                    _ => return Ok(None),
                };
                if prefix.is_empty() {
                    return Ok(None);
                }
                let p = keys::index_prefix(id, &prefix);
                self.index_range(&p, prefix_upper_bound(&p), &mut out)?;
            }
            Matcher::Range { lower, upper } => {
                let from = keys::index_prefix(id, lower.as_deref().unwrap_or(""));
                let to = match upper {
                    Some(u) => prefix_upper_bound(&keys::index_prefix(id, u)),
                    None => prefix_upper_bound(&[id as u8]),
                };
                self.index_range(&from, to, &mut out)?;
            }
            Matcher::Universal => return Ok(None),
        }
        let mut seen = HashSet::new();
        out.retain(|t| seen.insert(t.clone()));
        Ok(Some(out))
    }

    /// Study UIDs that may match the study-level keys of `q`, or `None` when no index applies.
    fn study_candidates(&self, q: &Query) -> Result<Option<Vec<StudyUid>>, CatalogError> {
        if let Some(m) = q.constraint(Attribute::StudyInstanceUID) {
            let uids = uid_list(m, Attribute::StudyInstanceUID)?;
            return Ok(Some(uids.iter().filter_map(|u| StudyUid::new(u).ok()).collect()));
        }
        let plans: [IndexPlan; 5] = [
            (Attribute::AccessionNumber, IndexId::StudyAccession, identity),
            (Attribute::PatientID, IndexId::StudyPatientId, identity),
            (Attribute::StudyDate, IndexId::StudyDate, date_or_raw),
            (Attribute::PatientName, IndexId::StudyPatientName, normalize_pn),
            (Attribute::ModalitiesInStudy, IndexId::StudyModality, identity),
        ];
        for (attr, id, norm) in plans {
            if let Some(m) = q.constraint(attr) {
                if let Some(targets) = self.index_candidates(id, m, norm)? {
                    return Ok(Some(targets.iter().filter_map(|t| uid_from_bytes(t)).collect()));
                }
            }
        }
        // A series-level Modality key narrows studies through their modalities.
        if let Some(m) = q.constraint(Attribute::Modality) {
            if let Some(targets) = self.index_candidates(IndexId::StudyModality, m, identity)? {
                return Ok(Some(targets.iter().filter_map(|t| uid_from_bytes(t)).collect()));
            }
        }
        Ok(None)
    }

    fn query_patients(&self, q: &Query, opts: MatchOptions, sink: &mut RowSink) -> Result<(), CatalogError> {
        let plans: [IndexPlan; 2] = [
            (Attribute::PatientID, IndexId::PatientId, identity),
            (Attribute::PatientName, IndexId::PatientName, normalize_pn),
        ];
        for (attr, id, norm) in plans {
            if let Some(m) = q.constraint(attr) {
                if let Some(targets) = self.index_candidates(id, m, norm)? {
                    for t in targets {
                        if let Some(p) = self.get::<PatientRecord>(CF_PATIENTS, &t)? {
                            if !sink.offer(patient_row(p), q, opts)? {
                                return Ok(());
                            }
                        }
                    }
                    return Ok(());
                }
            }
        }
        self.for_each_prefix(CF_PATIENTS, b"", |k, v| sink.offer(patient_row(decode(k, v)?), q, opts))
    }

    fn query_studies(&self, q: &Query, opts: MatchOptions, sink: &mut RowSink) -> Result<(), CatalogError> {
        match self.study_candidates(q)? {
            Some(uids) => {
                for uid in uids {
                    if let Some(s) = self.study(&uid)? {
                        if !sink.offer(study_row(s), q, opts)? {
                            break;
                        }
                    }
                }
                Ok(())
            }
            None => self.for_each_prefix(CF_STUDIES, b"", |k, v| sink.offer(study_row(decode(k, v)?), q, opts)),
        }
    }

    fn query_series(&self, q: &Query, opts: MatchOptions, sink: &mut RowSink) -> Result<(), CatalogError> {
        if let Some(m) = q.constraint(Attribute::SeriesInstanceUID) {
            let uids = uid_list(m, Attribute::SeriesInstanceUID)?;
            for u in uids {
                let Ok(uid) = SeriesUid::new(&u) else { continue };
                if let Some(series) = self.series(&uid)? {
                    if let Some(study) = self.study(&series.study)? {
                        if !sink.offer(series_row(study, series), q, opts)? {
                            return Ok(());
                        }
                    }
                }
            }
            return Ok(());
        }
        let studies = self.study_candidates(q)?;
        let visit_study = |study: StudyRecord, sink: &mut RowSink| -> Result<bool, CatalogError> {
            for series in self.series_of_study(&study.uid)? {
                if !sink.offer(series_row(study.clone(), series), q, opts)? {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        match studies {
            Some(uids) => {
                for uid in uids {
                    if let Some(study) = self.study(&uid)? {
                        if !visit_study(study, sink)? {
                            break;
                        }
                    }
                }
                Ok(())
            }
            None => {
                let mut current: Option<StudyRecord> = None;
                self.for_each_prefix(CF_SERIES, b"", |k, v| {
                    let series: SeriesRecord = decode(k, v)?;
                    if current.as_ref().map(|s| &s.uid) != Some(&series.study) {
                        current = self.study(&series.study)?;
                    }
                    match &current {
                        Some(study) => sink.offer(series_row(study.clone(), series), q, opts),
                        None => Ok(true),
                    }
                })
            }
        }
    }

    fn query_instances(&self, q: &Query, opts: MatchOptions, sink: &mut RowSink) -> Result<(), CatalogError> {
        let mut cache = ParentCache::default();
        if let Some(m) = q.constraint(Attribute::SOPInstanceUID) {
            let uids = uid_list(m, Attribute::SOPInstanceUID)?;
            for u in uids {
                let Ok(uid) = SopInstanceUid::new(&u) else { continue };
                if let Some(inst) = self.instance(&uid)? {
                    if let Some(row) = cache.row(self, inst)? {
                        if !sink.offer(row, q, opts)? {
                            return Ok(());
                        }
                    }
                }
            }
            return Ok(());
        }
        let mut prefixes: Vec<Vec<u8>> = Vec::new();
        if let Some(Matcher::Single(v)) = q.constraint(Attribute::SeriesInstanceUID) {
            if let Ok(uid) = SeriesUid::new(v) {
                if let Some(series) = self.series(&uid)? {
                    prefixes.push(keys::join(&[series.study.as_str().as_bytes(), uid.as_str().as_bytes(), b""]));
                }
            }
        } else if let Some(uids) = self.study_candidates(q)? {
            for uid in uids {
                prefixes.push(keys::join(&[uid.as_str().as_bytes(), b""]));
            }
        } else {
            prefixes.push(Vec::new());
        }
        for prefix in prefixes {
            let mut go_on = true;
            self.for_each_prefix(CF_INSTANCES, &prefix, |k, v| {
                let inst: InstanceRecord = decode(k, v)?;
                if let Some(row) = cache.row(self, inst)? {
                    go_on = sink.offer(row, q, opts)?;
                }
                Ok(go_on)
            })?;
            if !go_on {
                break;
            }
        }
        Ok(())
    }
}

/// The UIDs of a UID key: a single UID or a list.
fn uid_list(m: &Matcher, attribute: Attribute) -> Result<Vec<String>, CatalogError> {
    match m {
        Matcher::Single(v) => Ok(vec![v.clone()]),
        Matcher::List(vs) => Ok(vs.clone()),
        _ => Err(CatalogError::InvalidQuery(format!("{} must be a UID or a list of UIDs", attribute.keyword()))),
    }
}

/// An index that can serve a key: the attribute, the index, and how values are normalised for it.
type IndexPlan = (Attribute, IndexId, fn(&str) -> String);

fn identity(s: &str) -> String {
    keys::trim_value(s).to_string()
}

fn date_or_raw(s: &str) -> String {
    normalize_date(s).unwrap_or_else(|_| s.to_string())
}

fn uid_from_bytes(b: &[u8]) -> Option<StudyUid> {
    std::str::from_utf8(b).ok().and_then(|s| StudyUid::new(s).ok())
}

/// The smallest key greater than every key starting with `prefix` (None if there is none).
pub(crate) fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

fn patient_row(p: PatientRecord) -> QueryRow {
    QueryRow { level: Level::Patient, patient: Some(p), study: None, series: None, instance: None }
}
fn study_row(s: StudyRecord) -> QueryRow {
    QueryRow { level: Level::Study, patient: None, study: Some(s), series: None, instance: None }
}
fn series_row(study: StudyRecord, series: SeriesRecord) -> QueryRow {
    QueryRow { level: Level::Series, patient: None, study: Some(study), series: Some(series), instance: None }
}

/// Remembers the last study and series seen, so that instance rows of one series share their parents.
#[derive(Default)]
struct ParentCache {
    study: Option<StudyRecord>,
    series: Option<SeriesRecord>,
}

impl ParentCache {
    fn row(&mut self, cat: &RocksCatalog, inst: InstanceRecord) -> Result<Option<QueryRow>, CatalogError> {
        if self.study.as_ref().map(|s| &s.uid) != Some(&inst.study) {
            self.study = cat.study(&inst.study)?;
        }
        if self.series.as_ref().map(|s| (&s.study, &s.uid)) != Some((&inst.study, &inst.series)) {
            self.series =
                cat.get(CF_SERIES, &keys::join(&[inst.study.as_str().as_bytes(), inst.series.as_str().as_bytes()]))?;
        }
        match (&self.study, &self.series) {
            (Some(st), Some(se)) => Ok(Some(QueryRow {
                level: Level::Instance,
                patient: None,
                study: Some(st.clone()),
                series: Some(se.clone()),
                instance: Some(inst),
            })),
            _ => Ok(None),
        }
    }
}

/// Collects matching rows, applying offset and limit; tells the scan when to stop.
struct RowSink<'h> {
    /// What deletions hide: rows with nothing visible are never offered, counts leave hidden objects out.
    hidden: HiddenView<'h>,
    skipped: usize,
    offset: usize,
    limit: Option<usize>,
    rows: Vec<QueryRow>,
    more: bool,
}

impl RowSink<'_> {
    /// Offers a row; returns false once the page is full (the scan may stop).
    fn offer(&mut self, row: QueryRow, q: &Query, opts: MatchOptions) -> Result<bool, CatalogError> {
        let row = if self.hidden.is_empty() {
            row
        } else {
            match self.hidden.visible(row)? {
                Some(row) => row,
                None => return Ok(true),
            }
        };
        if !row_matches(&row, q, opts) {
            return Ok(true);
        }
        if self.skipped < self.offset {
            self.skipped += 1;
            return Ok(true);
        }
        if let Some(limit) = self.limit {
            if self.rows.len() >= limit {
                self.more = true;
                return Ok(false);
            }
        }
        self.rows.push(row);
        Ok(true)
    }
}

/// Whether a row satisfies every key of the query.
pub fn row_matches(row: &QueryRow, q: &Query, opts: MatchOptions) -> bool {
    q.keys.iter().all(|k| {
        if !k.matcher.is_constraining() {
            return true;
        }
        let value = row.value(k.attribute);
        k.matcher.matches(k.attribute.match_vr(), value.as_deref(), opts)
    })
}

/// One upgrade of the catalog layout: brings a catalog from the version at its index
/// (plus [`keys::OLDEST_SCHEMA_VERSION`]) to the next. Each step must be idempotent: the
/// marker is advanced (synced) only after the step, so a crash repeats the step.
type Upgrade = fn(&DB) -> Result<(), CatalogError>;

/// The upgrades from [`keys::OLDEST_SCHEMA_VERSION`] to [`keys::SCHEMA_VERSION`], in order
/// (none yet: version 1 is the first catalog layout).
const UPGRADES: &[Upgrade] = &[];
const _: () = assert!(keys::OLDEST_SCHEMA_VERSION + UPGRADES.len() as u32 == keys::SCHEMA_VERSION);

/// Column families of an existing catalog that this vna does not know (a newer vna's):
/// RocksDB opens a database only with all of its column families, so they are opened too
/// and the format marker can refuse the catalog with a clear error.
fn unknown_column_families(path: &Path) -> Vec<String> {
    match DB::list_cf(&Options::default(), path) {
        Ok(names) => names
            .into_iter()
            .filter(|n| n != rocksdb::DEFAULT_COLUMN_FAMILY_NAME && !keys::COLUMN_FAMILIES.contains(&n.as_str()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Checks the catalog's format marker (`schema_version` in `meta`): writes it in a new
/// catalog, upgrades an older catalog step by step, refuses a newer one.
fn check_schema(db: &DB) -> Result<(), CatalogError> {
    check_schema_with(db, UPGRADES)
}

fn check_schema_with(db: &DB, upgrades: &[Upgrade]) -> Result<(), CatalogError> {
    let meta = cf(db, CF_META);
    let current = keys::OLDEST_SCHEMA_VERSION + upgrades.len() as u32;
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    let marker_error = |source| CatalogError::Format { key: keys::SCHEMA_VERSION_KEY.to_string(), source };
    let found = match db.get_cf(meta, keys::SCHEMA_VERSION_KEY)? {
        None => {
            db.put_cf_opt(meta, keys::SCHEMA_VERSION_KEY, current.to_string(), &wo)?;
            return Ok(());
        }
        Some(v) => match std::str::from_utf8(&v).ok().and_then(|s| s.trim().parse::<u32>().ok()) {
            Some(found) => found,
            None => {
                return Err(marker_error(FormatError::UnknownVersion {
                    kind: "catalog",
                    found: None,
                    oldest: keys::OLDEST_SCHEMA_VERSION,
                    supported: current,
                }))
            }
        },
    };
    FormatError::check_marker("catalog", found, keys::OLDEST_SCHEMA_VERSION, current).map_err(marker_error)?;
    for version in found..current {
        let step = upgrades[(version - keys::OLDEST_SCHEMA_VERSION) as usize];
        step(db)?;
        db.put_cf_opt(meta, keys::SCHEMA_VERSION_KEY, (version + 1).to_string(), &wo)?;
        tracing::info!(from = version, to = version + 1, "catalog format upgraded");
    }
    Ok(())
}

fn check_level(q: &Query) -> Result<(), CatalogError> {
    for k in &q.keys {
        if k.matcher.is_constraining() && k.attribute.level() > q.level && k.attribute != Attribute::Modality {
            return Err(CatalogError::InvalidQuery(format!(
                "{} is an attribute of the {} level and cannot constrain a {} level query",
                k.attribute.keyword(),
                k.attribute.level().as_dicom(),
                q.level.as_dicom()
            )));
        }
    }
    if q.level == Level::Patient
        && q.keys.iter().any(|k| k.matcher.is_constraining() && k.attribute.level() != Level::Patient)
    {
        return Err(CatalogError::InvalidQuery("a PATIENT level query can only use patient attributes".into()));
    }
    Ok(())
}

#[async_trait]
impl Catalog for RocksCatalog {
    async fn insert_instance(&self, new: NewInstance) -> Result<InsertOutcome, CatalogError> {
        self.writer.insert(new).await
    }

    async fn relocate(
        &self,
        relocation: Relocation,
    ) -> Result<Vec<Result<InstanceRecord, CatalogError>>, CatalogError> {
        self.writer.relocate(relocation).await
    }

    async fn record_access(&self, study: &StudyUid, at: time::OffsetDateTime) -> Result<(), CatalogError> {
        self.writer.record_access(study.clone(), at).await
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<(), CatalogError> {
        self.writer.append_audit(event).await
    }

    async fn mark_verified(&self, copies: Vec<super::VerifiedCopy>, at: OffsetDateTime) -> Result<(), CatalogError> {
        self.writer.mark_verified(copies, at).await
    }

    async fn save_deletion(&self, d: Deletion, event: Option<AuditEvent>) -> Result<Deletion, CatalogError> {
        let saved = self.writer.save_deletion(d, event).await?;
        self.note_deletion(&saved);
        Ok(saved)
    }

    async fn purge(&self, req: PurgeRequest) -> Result<(Deletion, Vec<InstanceRecord>), CatalogError> {
        self.writer.purge(req).await
    }

    fn deletions(&self) -> Result<Vec<Deletion>, CatalogError> {
        self.scan_prefix(CF_DELETIONS, b"")
    }

    fn active_deletions(&self) -> Vec<Deletion> {
        let mut out: Vec<Deletion> = self.hidden.read().values().flatten().cloned().collect();
        out.sort_by_key(|d| d.id);
        out
    }

    fn deletion(&self, id: DeletionId) -> Result<Option<Deletion>, CatalogError> {
        self.get(CF_DELETIONS, &id.0.to_be_bytes())
    }

    fn is_hidden(&self, study: &StudyUid, instance: Option<&SopInstanceUid>, now: OffsetDateTime) -> bool {
        let hidden = self.hidden.read();
        let Some(list) = hidden.get(study.as_str()) else { return false };
        list.iter().any(|d| {
            d.hides_at(now)
                && match (&d.instances, instance) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(_), Some(i)) => d.covers_instance(i.as_str()),
                }
        })
    }

    async fn put_hold(&self, id: HoldId, hold: Option<LegalHold>, event: AuditEvent) -> Result<(), CatalogError> {
        self.writer.put_hold(id, hold, event).await
    }

    async fn relink(
        &self,
        moves: Vec<super::StudyMove>,
        link: crate::patient_link::PatientLink,
        event: AuditEvent,
    ) -> Result<(), CatalogError> {
        self.writer.relink(moves, link, event).await?;
        self.reload_links()
    }

    fn links(&self) -> Result<Vec<crate::patient_link::PatientLink>, CatalogError> {
        self.scan_prefix(super::keys::CF_LINKS, b"")
    }

    fn patient_rewrite(&self, study: &StudyUid) -> Option<(crate::patient_link::LinkId, crate::attribute::AttrMap)> {
        self.linked.read().get(study.as_str()).cloned()
    }

    fn holds(&self) -> Result<Vec<LegalHold>, CatalogError> {
        self.scan_prefix(CF_HOLDS, b"")
    }

    fn save_job(&self, job: &Job) -> Result<(), CatalogError> {
        let value = serde_json::to_vec(job).map_err(|source| CatalogError::Encode { what: "a job", source })?;
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.put_cf_opt(cf(&self.db, CF_JOBS), job.id.0.to_be_bytes(), value, &wo)?;
        Ok(())
    }

    fn jobs(&self) -> Result<Vec<Job>, CatalogError> {
        self.scan_prefix(CF_JOBS, b"")
    }

    fn remove_job(&self, id: JobId) -> Result<(), CatalogError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.delete_cf_opt(cf(&self.db, CF_JOBS), id.0.to_be_bytes(), &wo)?;
        Ok(())
    }

    fn begin_write(&self, intent: &WriteIntent) -> Result<(), CatalogError> {
        let key = keys::join(&[intent.tier.as_str().as_bytes(), intent.key.as_str().as_bytes()]);
        let value =
            serde_json::to_vec(intent).map_err(|source| CatalogError::Encode { what: "a write intent", source })?;
        // Synced: the intent must outlive a power loss that the object (fsynced next) survives.
        // RocksDB groups concurrent synced writes into one WAL sync.
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.put_cf_opt(cf(&self.db, CF_INTENTS), key, value, &wo)?;
        Ok(())
    }

    fn end_write(&self, intent: &WriteIntent) -> Result<(), CatalogError> {
        let key = keys::join(&[intent.tier.as_str().as_bytes(), intent.key.as_str().as_bytes()]);
        self.db.delete_cf(cf(&self.db, CF_INTENTS), key)?;
        Ok(())
    }

    fn pending_writes(&self) -> Result<Vec<WriteIntent>, CatalogError> {
        let mut out = Vec::new();
        self.for_each_prefix(CF_INTENTS, b"", |k, v| {
            out.push(decode_plain(k, v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    fn instance_metadata(&self, records: &[InstanceRecord]) -> Result<Vec<Option<Vec<u8>>>, CatalogError> {
        let handle = cf(&self.db, CF_METADATA);
        let keys: Vec<Vec<u8>> = records
            .iter()
            .map(|r| {
                keys::join(&[r.study.as_str().as_bytes(), r.series.as_str().as_bytes(), r.uid.as_str().as_bytes()])
            })
            .collect();
        self.db
            .multi_get_cf(keys.iter().map(|k| (handle, k.as_slice())))
            .into_iter()
            .map(|r| r.map_err(CatalogError::from))
            .collect()
    }

    fn instance(&self, uid: &SopInstanceUid) -> Result<Option<InstanceRecord>, CatalogError> {
        let Some(parent) = self.db.get_cf(cf(&self.db, CF_INSTANCE_BY_UID), uid.as_str())? else {
            return Ok(None);
        };
        let key = keys::join(&[&parent, uid.as_str().as_bytes()]);
        self.get(CF_INSTANCES, &key)
    }

    fn series(&self, uid: &SeriesUid) -> Result<Option<SeriesRecord>, CatalogError> {
        let Some(study) = self.db.get_cf(cf(&self.db, CF_SERIES_BY_UID), uid.as_str())? else {
            return Ok(None);
        };
        self.get(CF_SERIES, &keys::join(&[&study, uid.as_str().as_bytes()]))
    }

    fn study(&self, uid: &StudyUid) -> Result<Option<StudyRecord>, CatalogError> {
        self.get(CF_STUDIES, uid.as_str().as_bytes())
    }

    fn study_uids(&self, after: Option<&StudyUid>, limit: usize) -> Result<Vec<StudyUid>, CatalogError> {
        let mode = match after {
            Some(a) => IteratorMode::From(a.as_str().as_bytes(), Direction::Forward),
            None => IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf(&self.db, CF_STUDIES), mode) {
            let (k, _) = item?;
            if after.is_some_and(|a| a.as_str().as_bytes() == &*k) {
                continue;
            }
            if let Some(uid) = uid_from_bytes(&k) {
                out.push(uid);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn patient(&self, key: &PatientKey) -> Result<Option<PatientRecord>, CatalogError> {
        self.get(CF_PATIENTS, &key.encode())
    }

    fn series_of_study(&self, study: &StudyUid) -> Result<Vec<SeriesRecord>, CatalogError> {
        self.scan_prefix(CF_SERIES, &keys::join(&[study.as_str().as_bytes(), b""]))
    }

    fn instances_of_series(&self, study: &StudyUid, series: &SeriesUid) -> Result<Vec<InstanceRecord>, CatalogError> {
        self.scan_prefix(CF_INSTANCES, &keys::join(&[study.as_str().as_bytes(), series.as_str().as_bytes(), b""]))
    }

    fn instances_of_study(&self, study: &StudyUid) -> Result<Vec<InstanceRecord>, CatalogError> {
        self.scan_prefix(CF_INSTANCES, &keys::join(&[study.as_str().as_bytes(), b""]))
    }

    fn query(&self, q: &Query, opts: MatchOptions) -> Result<QueryPage, CatalogError> {
        check_level(q)?;
        let hidden = self.hidden.read().clone();
        let mut sink = RowSink {
            hidden: HiddenView::new(self, &hidden, OffsetDateTime::now_utc()),
            skipped: 0,
            offset: q.offset,
            limit: q.limit,
            rows: Vec::new(),
            more: false,
        };
        match q.level {
            Level::Patient => self.query_patients(q, opts, &mut sink)?,
            Level::Study => self.query_studies(q, opts, &mut sink)?,
            Level::Series => self.query_series(q, opts, &mut sink)?,
            Level::Instance => self.query_instances(q, opts, &mut sink)?,
        }
        Ok(QueryPage { rows: sink.rows, more: sink.more })
    }

    fn stats(&self) -> Result<CatalogStats, CatalogError> {
        match self.db.get_cf(cf(&self.db, CF_META), b"stats")? {
            Some(v) => decode_plain(b"stats", &v),
            None => Ok(CatalogStats::default()),
        }
    }

    fn audit_page(&self, from_seq: u64, limit: usize) -> Result<Vec<Result<AuditRecord, String>>, CatalogError> {
        let iter = self
            .db
            .iterator_cf(cf(&self.db, CF_AUDIT), IteratorMode::From(&keys::audit_key(from_seq), Direction::Forward));
        let mut out = Vec::new();
        for item in iter.take(limit) {
            let (_, v) = item?;
            out.push(format::decode::<AuditRecord>(&v).map_err(|e| e.to_string()));
        }
        Ok(out)
    }

    fn audit_records(&self, from_seq: u64) -> Result<Vec<Result<AuditRecord, String>>, CatalogError> {
        let iter = self
            .db
            .iterator_cf(cf(&self.db, CF_AUDIT), IteratorMode::From(&keys::audit_key(from_seq), Direction::Forward));
        let mut out = Vec::new();
        for item in iter {
            let (_, v) = item?;
            out.push(format::decode::<AuditRecord>(&v).map_err(|e| e.to_string()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_raw(path: &Path) -> DB {
        let cfs = DB::list_cf(&Options::default(), path).unwrap();
        DB::open_cf(&Options::default(), path, cfs).unwrap()
    }

    fn marker(db: &DB) -> Vec<u8> {
        db.get_cf(cf(db, CF_META), keys::SCHEMA_VERSION_KEY).unwrap().unwrap()
    }

    fn step_to_2(db: &DB) -> Result<(), CatalogError> {
        db.put_cf(cf(db, CF_META), b"upgraded-to-2", b"")?;
        Ok(())
    }

    fn step_to_3(db: &DB) -> Result<(), CatalogError> {
        // Each step sees the previous one done.
        if db.get_cf(cf(db, CF_META), b"upgraded-to-2")?.is_none() {
            return Err(CatalogError::Storage("step 2 did not run first".into()));
        }
        db.put_cf(cf(db, CF_META), b"upgraded-to-3", b"")?;
        Ok(())
    }

    fn failing_step(_: &DB) -> Result<(), CatalogError> {
        Err(CatalogError::Storage("interrupted".into()))
    }

    #[test]
    fn a_catalog_open_twice_is_in_use_with_rocksdbs_report_as_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let first = RocksCatalog::open(&path, RocksCatalogOptions::default()).unwrap();
        let Err(e) = RocksCatalog::open(&path, RocksCatalogOptions::default()) else {
            panic!("a second open of a held catalog succeeded")
        };
        match &e {
            CatalogError::InUse { path: held, source } => {
                assert_eq!(held, &path);
                assert_eq!(source.kind(), rocksdb::ErrorKind::IOError);
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(e.to_string().contains("in use by another vna process"), "{e}");
        let source = std::error::Error::source(&e).expect("the engine's report is the source");
        assert!(source.to_string().contains("LOCK"), "{source}");
        // Released with the first handle: the catalog opens again.
        drop(first);
        drop(RocksCatalog::open(&path, RocksCatalogOptions::default()).unwrap());
    }

    #[test]
    fn other_open_failures_are_engine_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-directory");
        std::fs::write(&path, b"x").unwrap();
        let Err(e) = RocksCatalog::open(&path, RocksCatalogOptions::default()) else {
            panic!("a catalog opened on a plain file")
        };
        assert!(matches!(e, CatalogError::Engine(_)), "{e:?}");
    }

    #[test]
    fn an_older_catalog_is_upgraded_step_by_step_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        drop(RocksCatalog::open(&path, RocksCatalogOptions::default()).unwrap());
        let db = open_raw(&path);
        assert_eq!(marker(&db), b"1");

        // A step that fails leaves the marker where it was: the next open repeats it.
        let e = check_schema_with(&db, &[step_to_2, failing_step]).unwrap_err();
        assert!(matches!(e, CatalogError::Storage(_)), "{e}");
        assert_eq!(marker(&db), b"2", "the first step is done and recorded");

        db.put_cf(cf(&db, CF_META), keys::SCHEMA_VERSION_KEY, b"1").unwrap();
        check_schema_with(&db, &[step_to_2, step_to_3]).unwrap();
        assert_eq!(marker(&db), b"3");
        assert!(db.get_cf(cf(&db, CF_META), b"upgraded-to-3").unwrap().is_some());

        // Up to date: no step runs again.
        db.delete_cf(cf(&db, CF_META), b"upgraded-to-3").unwrap();
        check_schema_with(&db, &[step_to_2, step_to_3]).unwrap();
        assert!(db.get_cf(cf(&db, CF_META), b"upgraded-to-3").unwrap().is_none());

        // This code (no upgrades: version 1) refuses the version 3 catalog.
        let e = check_schema_with(&db, &[]).unwrap_err();
        assert!(
            matches!(
                &e,
                CatalogError::Format { source: FormatError::UnsupportedVersion { found: 3, supported: 1, .. }, .. }
            ),
            "{e}"
        );
        assert_eq!(marker(&db), b"3");
    }
}
