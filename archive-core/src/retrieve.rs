//! Retrieve: selects instances, then streams them from whichever tier holds them.
//!
//! # Selection
//! Every door selects what it sends with [`Retrieve::select`]: a [`Query`] at STUDY, SERIES or
//! IMAGE level (a C-MOVE or C-GET identifier, or a WADO [`RetrieveTarget`] turned into one with
//! [`RetrieveTarget::query`]) gives the visible instances it covers, through the read view
//! [`Visible`]: what a deletion hides (a study past its grace period, a purge under way, an IOCM
//! rejection) is never selected, whichever door asks. No door expands rows or filters on its own.
//!
//! # Reading
//! The catalog says where each object lives; the first readable copy is streamed,
//! checksum-verified as it goes. A copy that fails is skipped for the next one.

use crate::attribute::{Attribute, Level};
use crate::catalog::{Catalog, CatalogError};
use crate::matching::MatchOptions;
use crate::metrics::Metrics;
use crate::model::InstanceRecord;
use crate::query::Query;
use crate::tier::TierSet;
use crate::tier::{collect_stream, Availability, ByteStream, GetOpts, TierError};
use crate::uid::{SeriesUid, SopInstanceUid, StudyUid};
use crate::visible::Visible;
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;

/// What a WADO request retrieves: a study, a series of a study, or an instance of a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrieveTarget {
    /// A whole study.
    Study(StudyUid),
    /// A series of a study.
    Series(StudyUid, SeriesUid),
    /// One instance of a series of a study.
    Instance(StudyUid, SeriesUid, SopInstanceUid),
}

impl RetrieveTarget {
    /// The retrieve query that selects the target: the level it addresses with the unique key
    /// of each level down to it.
    pub fn query(&self) -> Query {
        let key = |attribute: Attribute, uid: &str| crate::query::QueryKey {
            attribute,
            matcher: crate::matching::Matcher::Single(uid.to_string()),
        };
        let (level, keys) = match self {
            RetrieveTarget::Study(st) => (Level::Study, vec![key(Attribute::StudyInstanceUID, st.as_str())]),
            RetrieveTarget::Series(st, se) => (
                Level::Series,
                vec![key(Attribute::StudyInstanceUID, st.as_str()), key(Attribute::SeriesInstanceUID, se.as_str())],
            ),
            RetrieveTarget::Instance(st, se, i) => (
                Level::Instance,
                vec![
                    key(Attribute::StudyInstanceUID, st.as_str()),
                    key(Attribute::SeriesInstanceUID, se.as_str()),
                    key(Attribute::SOPInstanceUID, i.as_str()),
                ],
            ),
        };
        Query { level, keys, offset: 0, limit: None }
    }
}

impl std::fmt::Display for RetrieveTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetrieveTarget::Study(s) => write!(f, "study {s}"),
            RetrieveTarget::Series(st, se) => write!(f, "series {se} of study {st}"),
            RetrieveTarget::Instance(st, se, i) => write!(f, "instance {i} of series {se} of study {st}"),
        }
    }
}

/// The unique key a retrieve query must constrain at its level (PS3.4 C.4.2.2.1: a retrieve
/// names what it wants by unique key; without one it would select everything).
pub fn required_key(level: Level) -> Attribute {
    match level {
        Level::Patient => Attribute::PatientID,
        Level::Study => Attribute::StudyInstanceUID,
        Level::Series => Attribute::SeriesInstanceUID,
        Level::Instance => Attribute::SOPInstanceUID,
    }
}

/// Retrieve failures.
#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    /// Nothing is stored under this identity.
    #[error("{0} not found")]
    NotFound(String),
    /// The retrieve query cannot select instances (no unique key at its level, or a key that
    /// cannot be used).
    #[error("invalid retrieve: {0}")]
    InvalidSelection(String),
    /// The blocking task that ran the selection failed.
    #[error("the selection task failed")]
    Task(#[source] tokio::task::JoinError),
    /// No copy of the object could be read.
    #[error("no readable copy of instance {sop_instance}: {last_error}")]
    Unreadable {
        /// The instance.
        sop_instance: SopInstanceUid,
        /// The last tier error seen.
        #[source]
        last_error: TierError,
    },
    /// A linked study's object could not be rewritten to its target patient identity.
    #[error("cannot rewrite instance {sop_instance} to its linked patient: {source}")]
    Rewrite {
        /// The instance.
        sop_instance: SopInstanceUid,
        /// Why.
        #[source]
        source: crate::coerce::CoercionError,
    },
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The metadata of a stored object cannot be built.
    #[error("cannot build the metadata of instance {sop_instance}: {message}")]
    Metadata {
        /// The instance.
        sop_instance: SopInstanceUid,
        /// Why.
        message: String,
    },
}

/// One instance being read.
pub struct RetrievedObject {
    /// Its catalog record.
    pub record: InstanceRecord,
    /// Its bytes (the stored Part-10 object), verified against the checksum as they stream.
    pub body: ByteStream,
}

impl std::fmt::Debug for RetrievedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrievedObject").field("record", &self.record.uid).finish_non_exhaustive()
    }
}

/// The retrieve service.
#[derive(Clone)]
pub struct Retrieve {
    catalog: Arc<dyn Catalog>,
    tiers: Arc<TierSet>,
    metrics: Metrics,
    /// When each study's access was last written to the catalog.
    accessed: Arc<parking_lot::Mutex<std::collections::HashMap<StudyUid, std::time::Instant>>>,
}

/// A study's `last_access` is written at most this often (retrieves of one study come in bursts).
const ACCESS_RESOLUTION: std::time::Duration = std::time::Duration::from_secs(60);

impl std::fmt::Debug for Retrieve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Retrieve")
    }
}

impl Retrieve {
    /// Creates the service.
    pub fn new(catalog: Arc<dyn Catalog>, tiers: Arc<TierSet>, metrics: Metrics) -> Self {
        Self { catalog, tiers, metrics, accessed: Arc::default() }
    }

    /// The read view the selection goes through: the catalog without what deletions hide.
    pub fn visible(&self) -> Visible {
        Visible::new(self.catalog.clone())
    }

    /// The retrieve selection: the visible instances a retrieve query covers, in the order of
    /// the query's rows (study, series, instance UID order within each), each once.
    ///
    /// # Behavior
    /// - The query must constrain the unique key of its level ([`required_key`]): Patient ID,
    ///   Study, Series or SOP Instance UID, single or a list; otherwise `InvalidSelection`.
    ///   Other keys narrow the selection as they would a query.
    /// - A PATIENT level query covers the patient's studies.
    /// - Offset and limit are ignored: a retrieve takes everything it names.
    /// - Instances hidden by a deletion (their study past its grace period or being purged, or
    ///   rejected by an IOCM note) are never selected, and neither are studies and series with
    ///   nothing visible left.
    /// - Nothing matching is `Ok` with no records (a DIMSE retrieve of nothing succeeds with no
    ///   sub-operations; WADO answers 404, see [`Retrieve::instances`]).
    /// - Blocking (catalog scans): call from a blocking thread, or use [`Retrieve::select_async`].
    pub fn select(&self, query: &Query, opts: MatchOptions) -> Result<Vec<InstanceRecord>, RetrieveError> {
        let key = required_key(query.level);
        if query.constraint(key).is_none() {
            return Err(RetrieveError::InvalidSelection(format!(
                "a {} level retrieve needs {}",
                query.level.as_dicom(),
                key.keyword()
            )));
        }
        let query = Query {
            // A PATIENT level retrieve covers that patient's studies.
            level: if query.level == Level::Patient { Level::Study } else { query.level },
            keys: query.keys.clone(),
            offset: 0,
            limit: None,
        };
        let view = self.visible();
        let rows = view.query(&query, opts).map_err(|e| match e {
            CatalogError::InvalidQuery(why) => RetrieveError::InvalidSelection(why),
            other => RetrieveError::Catalog(other),
        })?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for row in rows.rows {
            let records = match (row.instance, &row.series, &row.study) {
                (Some(i), _, _) => view.retain(vec![i]),
                (None, Some(se), _) => view.instances_of_series(&se.study, &se.uid)?,
                (None, None, Some(st)) => view.instances_of_study(&st.uid)?,
                _ => Vec::new(),
            };
            for r in records {
                if seen.insert(r.uid.clone()) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// [`Retrieve::select`] on a blocking thread, for doors on the async runtime.
    pub async fn select_async(&self, query: Query, opts: MatchOptions) -> Result<Vec<InstanceRecord>, RetrieveError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.select(&query, opts)).await.map_err(RetrieveError::Task)?
    }

    /// The visible instance records a WADO target covers, in study/series/instance UID order;
    /// `NotFound` when there are none. Blocking, like [`Retrieve::select`].
    pub fn instances(&self, target: &RetrieveTarget) -> Result<Vec<InstanceRecord>, RetrieveError> {
        let found = self.select(&target.query(), MatchOptions::default())?;
        if found.is_empty() {
            return Err(RetrieveError::NotFound(target.to_string()));
        }
        Ok(found)
    }

    /// Opens one visible instance by UID.
    pub async fn open_instance(&self, uid: &SopInstanceUid) -> Result<RetrievedObject, RetrieveError> {
        let record = self.visible().instance(uid)?.ok_or_else(|| RetrieveError::NotFound(format!("instance {uid}")))?;
        self.open(record).await
    }

    /// Opens the first readable copy of an instance.
    pub async fn open(&self, record: InstanceRecord) -> Result<RetrievedObject, RetrieveError> {
        // Genuinely without a cause: replaced by the first real failure.
        let mut last_error = TierError::Other("no copy is on a configured tier".into());
        let started = std::time::Instant::now();
        for loc in &record.locations {
            let Some(tier) = self.tiers.get(&loc.tier) else { continue };
            match tier.get(&loc.key, GetOpts::default()).await {
                Ok(got) => {
                    if got.meta.checksum != record.checksum {
                        last_error = TierError::ChecksumMismatch {
                            key: loc.key.clone(),
                            expected: record.checksum,
                            actual: got.meta.checksum,
                        };
                        tracing::error!(tier = %loc.tier, key = %loc.key, "stored checksum differs from the catalog's");
                        continue;
                    }
                    self.note_access(&record.study);
                    self.metrics.retrieve_total.with_label_values(&[loc.tier.as_str()]).inc();
                    self.metrics.retrieve_bytes.with_label_values(&[loc.tier.as_str()]).inc_by(record.size);
                    self.metrics
                        .retrieve_seconds
                        .with_label_values(&[loc.tier.as_str()])
                        .observe(started.elapsed().as_secs_f64());
                    if let Some((link, attrs)) = self.catalog.patient_rewrite(&record.study) {
                        // A linked study: the object goes out under the target identity.
                        let bytes = collect_stream(got.body).await.map_err(|last_error| RetrieveError::Unreadable {
                            sop_instance: record.uid.clone(),
                            last_error,
                        })?;
                        let changes = crate::patient_link::patient_changes(&attrs);
                        let source = format!("patient link {link}");
                        let out = match crate::coerce::rewrite_attributes(&bytes, &changes, &source, "CORRECT") {
                            Ok(Some(rewritten)) => Bytes::from(rewritten),
                            Ok(None) => bytes,
                            Err(source) => {
                                return Err(RetrieveError::Rewrite { sop_instance: record.uid.clone(), source })
                            }
                        };
                        return Ok(RetrievedObject { record, body: crate::tier::bytes_stream(out) });
                    }
                    return Ok(RetrievedObject { record, body: got.body });
                }
                Err(e) => {
                    tracing::warn!(tier = %loc.tier, key = %loc.key, error = %e, "copy unreadable, trying the next");
                    last_error = e;
                }
            }
        }
        Err(RetrieveError::Unreadable { sop_instance: record.uid.clone(), last_error })
    }

    /// Records that a study was read, for policies on last access; in the background, at most
    /// once a minute per study.
    fn note_access(&self, study: &StudyUid) {
        let now = std::time::Instant::now();
        {
            let mut accessed = self.accessed.lock();
            if accessed.get(study).is_some_and(|t| now.duration_since(*t) < ACCESS_RESOLUTION) {
                return;
            }
            if accessed.len() > 100_000 {
                accessed.retain(|_, t| now.duration_since(*t) < ACCESS_RESOLUTION);
            }
            accessed.insert(study.clone(), now);
        }
        let catalog = self.catalog.clone();
        let study = study.clone();
        tokio::spawn(async move {
            if let Err(e) = catalog.record_access(&study, time::OffsetDateTime::now_utc()).await {
                tracing::warn!(study = %study, error = %e, "recording a study access failed");
            }
        });
    }

    /// Reads a whole instance into memory, verified.
    pub async fn read(&self, record: InstanceRecord) -> Result<(InstanceRecord, Bytes), RetrieveError> {
        let obj = self.open(record).await?;
        let uid = obj.record.uid.clone();
        let bytes = crate::tier::collect_stream_sized(obj.body, obj.record.size)
            .await
            .map_err(|last_error| RetrieveError::Unreadable { sop_instance: uid, last_error })?;
        Ok((obj.record, bytes))
    }

    /// Streams every instance of a target, one after another, each read when the previous is done.
    pub fn stream(
        &self,
        target: &RetrieveTarget,
    ) -> Result<futures::stream::BoxStream<'static, Result<RetrievedObject, RetrieveError>>, RetrieveError> {
        let records = self.instances(target)?;
        let this = self.clone();
        Ok(futures::stream::iter(records)
            .then(move |r| {
                let this = this.clone();
                async move { this.open(r).await }
            })
            .boxed())
    }

    /// The DICOM JSON metadata of instances (bulk data URIs relative to the DICOMweb base),
    /// from the catalog; an instance stored without metadata has it built from its object.
    pub async fn metadata(&self, records: &[InstanceRecord]) -> Result<Vec<Vec<u8>>, RetrieveError> {
        let stored = self.catalog.instance_metadata(records)?;
        let mut out = Vec::with_capacity(records.len());
        for (record, json) in records.iter().zip(stored) {
            let json = match (json, self.catalog.patient_rewrite(&record.study)) {
                (Some(j), Some((_, attrs))) => Some(crate::patient_link::rewrite_metadata_json(&j, &attrs)),
                (j, _) => j,
            };
            match json {
                Some(j) => out.push(j),
                None => {
                    let (_, bytes) = self.read(record.clone()).await?;
                    let built = crate::parse::parse_part10(&bytes)
                        .map_err(crate::metadata::MetadataError::from)
                        .and_then(|parsed| crate::metadata::instance_metadata(&bytes, &parsed))
                        .map_err(|e| RetrieveError::Metadata {
                            sop_instance: record.uid.clone(),
                            message: e.to_string(),
                        })?;
                    out.push(built.into_bytes());
                }
            }
        }
        Ok(out)
    }

    /// The availability of an instance: the best of its copies' tiers.
    pub fn availability(&self, record: &InstanceRecord) -> Availability {
        record
            .locations
            .iter()
            .filter_map(|l| self.tiers.get(&l.tier))
            .map(|t| crate::tier::effective_availability(t.as_ref()))
            .min()
            .unwrap_or(Availability::Offline)
    }

    /// The level a target addresses.
    pub fn level_of(target: &RetrieveTarget) -> Level {
        match target {
            RetrieveTarget::Study(_) => Level::Study,
            RetrieveTarget::Series(..) => Level::Series,
            RetrieveTarget::Instance(..) => Level::Instance,
        }
    }
}
