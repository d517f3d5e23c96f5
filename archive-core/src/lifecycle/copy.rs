//! Copies to another tier: write intent, copy, read back and verify.
//!
//! [`copy_instance`] copies one instance with one [`Tier::put`] (its source possibly read
//! ahead with others by [`prefetch_sources`]); [`copy_batch`] copies
//! several with one [`Tier::put_many`], for tiers that pack a batch into one stored unit
//! (see [`TierCapabilities::batch_bytes`](crate::tier::TierCapabilities::batch_bytes)), and
//! reads the batch back with one [`Tier::verify_many`] (one GET per S3 bundle). Either way,
//! on a tier that serves reads a copy is trusted only once its bytes were read back from the
//! target and matched its checksum.
//!
//! The copies are not yet named by the catalog when these return: the caller commits them
//! with a [`Relocation`](crate::catalog::Relocation), which removes the intents in the same
//! batch. On any failure the target objects are deleted and their intents cleared; a crash
//! in between leaves the intents, and recovery deletes the unreferenced objects on start.
//!
//! Every put carries the instance's series Modality as its
//! [`content_class`](crate::tier::PutOpts::content_class) (looked up once per series through
//! [`ContentClasses`]), so that a target tier can pick a compression dictionary per modality.

use super::throttle::Throttle;
use crate::attribute::Attribute;
use crate::catalog::{Catalog, CatalogError, WriteIntent};
use crate::checksum::Checksum;
use crate::model::{InstanceRecord, Location};
use crate::tier::TierSet;
use crate::tier::{
    Availability, ByteStream, GetOpts, GetResult, ObjectKey, PutOpts, RecallStatus, Tier, TierError, TierName,
};
use crate::uid::SeriesUid;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Why one instance could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A tier the job names is not configured.
    #[error("tier {0} is not configured")]
    UnknownTier(TierName),
    /// The tier failed.
    #[error(transparent)]
    Tier(#[from] TierError),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A cold tier did not make the object readable in time.
    #[error("recall of {key} from tier {tier} did not finish within {secs} s")]
    RecallTimeout {
        /// The tier.
        tier: TierName,
        /// The object.
        key: ObjectKey,
        /// How long it waited.
        secs: u64,
    },
}

impl CopyError {
    /// Whether trying again later may work.
    pub fn is_transient(&self) -> bool {
        match self {
            CopyError::Tier(e) => e.is_transient(),
            CopyError::RecallTimeout { .. } => true,
            _ => false,
        }
    }
}

/// The copy of an instance to read from: the one on `from` when given, otherwise the most
/// available one (online before nearline before offline, readable before needing recall).
pub fn source_of<'a>(tiers: &TierSet, record: &'a InstanceRecord, from: Option<&TierName>) -> Option<&'a Location> {
    match from {
        Some(name) => record.locations.iter().find(|l| &l.tier == name),
        None => record
            .locations
            .iter()
            .filter_map(|l| tiers.get(&l.tier).map(|t| (t.capabilities(), l)))
            .min_by_key(|(caps, _)| (caps.availability, caps.needs_recall))
            .map(|(_, l)| l),
    }
}

/// Whether a copy on this tier can be read at once (an online tier that needs no recall).
pub fn is_online(tiers: &TierSet, loc: &Location) -> bool {
    tiers.get(&loc.tier).is_some_and(|t| {
        let caps = t.capabilities();
        caps.availability == Availability::Online && !caps.needs_recall
    })
}

/// Opens an object for reading, asking its tier to recall it first when it must, and
/// polling (1 s doubling to 60 s) until it is readable or `wait` has passed.
pub async fn open_recalling(
    tier: &Arc<dyn Tier>,
    key: &ObjectKey,
    wait: Duration,
    mut on_waiting: impl FnMut(),
) -> Result<GetResult, CopyError> {
    let started = tokio::time::Instant::now();
    let mut poll = Duration::from_secs(1);
    loop {
        match tier.get(key, GetOpts::default()).await {
            Err(TierError::NeedsRecall(_)) => {}
            other => return Ok(other?),
        }
        if tier.recall(key).await? == RecallStatus::InProgress {
            on_waiting();
            if started.elapsed() + poll > wait {
                return Err(CopyError::RecallTimeout {
                    tier: tier.name().clone(),
                    key: key.clone(),
                    secs: wait.as_secs(),
                });
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_secs(60));
        }
    }
}

/// The content class of instances (their series' Modality), read from the catalog once per
/// series and kept for the life of the value (one migration job).
#[derive(Debug, Default)]
pub struct ContentClasses {
    by_series: parking_lot::Mutex<HashMap<SeriesUid, Option<String>>>,
}

impl ContentClasses {
    /// The Modality of the instance's series; `None` when the series has none or the catalog
    /// cannot be read (a failed read is not remembered: the next instance tries again).
    pub fn of(&self, catalog: &dyn Catalog, record: &InstanceRecord) -> Option<String> {
        if let Some(class) = self.by_series.lock().get(&record.series) {
            return class.clone();
        }
        let class = match catalog.series(&record.series) {
            Ok(series) => series
                .and_then(|s| s.attrs.get(Attribute::Modality).map(|m| m.trim().to_string()))
                .filter(|m| !m.is_empty()),
            Err(e) => {
                tracing::debug!(series = %record.series, error = %e, "no content class: the series could not be read");
                return None;
            }
        };
        self.by_series.lock().insert(record.series.clone(), class.clone());
        class
    }
}

/// What a copy needs from the engine.
#[derive(Clone, Copy)]
pub struct CopyContext<'a> {
    /// The catalog (for write intents).
    pub catalog: &'a dyn Catalog,
    /// The configured tiers.
    pub tiers: &'a TierSet,
    /// The shared byte-rate limit.
    pub throttle: &'a Throttle,
    /// How long to wait for a cold tier to make the source readable.
    pub recall_wait: Duration,
    /// Content classes of the job's instances (set on each put).
    pub classes: &'a ContentClasses,
}

/// Copies an instance's object from `source` to `target` and verifies the target copy.
///
/// `prefetched` holds the source object's bytes when they were already read (and verified
/// against the record's checksum) with [`Tier::get_many`]; otherwise the source is opened,
/// recalled first if its tier needs it.
///
/// Returns the new, verified location; the catalog does not name it yet.
pub async fn copy_instance(
    ctx: &CopyContext<'_>,
    record: &InstanceRecord,
    source: &Location,
    target: &Arc<dyn Tier>,
    prefetched: Option<Bytes>,
    on_waiting: impl FnMut(),
) -> Result<Location, CopyError> {
    let CopyContext { catalog, tiers, throttle, recall_wait, classes } = *ctx;
    let source_tier = tiers.get(&source.tier).ok_or_else(|| CopyError::UnknownTier(source.tier.clone()))?;
    let intent = WriteIntent { tier: target.name().clone(), key: source.key.clone(), sop_instance: record.uid.clone() };
    let body = match prefetched {
        Some(bytes) => crate::tier::bytes_stream(bytes),
        None => {
            // The source may need a recall before anything is written to the target.
            let got = open_recalling(source_tier, &source.key, recall_wait, on_waiting).await?;
            if got.meta.checksum != record.checksum {
                return Err(CopyError::Tier(TierError::ChecksumMismatch {
                    key: source.key.clone(),
                    expected: record.checksum,
                    actual: got.meta.checksum,
                }));
            }
            got.body
        }
    };
    catalog.begin_write(&intent)?;
    crate::failpoint::hit("migrate.after_intent");
    let result = async {
        let opts = PutOpts {
            expected_checksum: Some(record.checksum),
            overwrite: true,
            content_class: classes.of(catalog, record),
        };
        target.put(&source.key, throttle.limit(body), opts).await?;
        crate::failpoint::hit("migrate.after_copy");
        verify_copy(target, &source.key, record).await?;
        Ok(Location { tier: target.name().clone(), key: source.key.clone(), verified_at: OffsetDateTime::now_utc() })
    }
    .await;
    if result.is_err() {
        discard(catalog, target, &intent).await;
    }
    result
}

/// Most bytes [`prefetch_sources`] holds in memory for one chunk of copies.
pub const PREFETCH_BYTES: u64 = 64 << 20;

/// Reads ahead the sources of copies that live on tiers packing objects into stored units
/// (S3 bundles) and readable without a recall: one [`Tier::get_many`] per source tier, up
/// to [`PREFETCH_BYTES`] in all, so that a study comes back with one GET per run of its
/// bundle instead of one per instance. Returns the bytes by item index, only for objects whose
/// checksum is the record's; anything it could not read is left to the copy itself.
pub async fn prefetch_sources(tiers: &TierSet, items: &[(&InstanceRecord, &Location)]) -> HashMap<usize, Bytes> {
    let mut by_tier: HashMap<&TierName, Vec<usize>> = HashMap::new();
    let mut budget = PREFETCH_BYTES;
    for (i, (record, source)) in items.iter().enumerate() {
        let Some(tier) = tiers.get(&source.tier) else { continue };
        let caps = tier.capabilities();
        if caps.batch_bytes.is_none() || caps.needs_recall || record.size > budget {
            continue;
        }
        budget -= record.size;
        by_tier.entry(&source.tier).or_default().push(i);
    }
    let mut out = HashMap::new();
    for (name, indexes) in by_tier {
        let Some(tier) = tiers.get(name) else { continue };
        let keys = indexes.iter().map(|&i| items[i].1.key.clone()).collect();
        match tier.get_many(keys).await {
            Ok(answers) => {
                for (&i, answer) in indexes.iter().zip(answers) {
                    match answer {
                        Ok((meta, bytes)) if meta.checksum == items[i].0.checksum => {
                            out.insert(i, bytes);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::debug!(tier = %name, key = %items[i].1.key, error = %e,
                            "read-ahead failed; the copy reads it again"),
                    }
                }
            }
            Err(e) => tracing::debug!(tier = %name, error = %e, "read-ahead failed; each copy reads its source"),
        }
    }
    out
}

/// Waits until an object is readable on a tier that needs recalls: asks for the recall and
/// polls (1 s doubling to 60 s) until it is ready or `wait` has passed. Returns at once on
/// tiers without recalls.
pub async fn wait_recalled(
    tier: &Arc<dyn Tier>,
    key: &ObjectKey,
    wait: Duration,
    mut on_waiting: impl FnMut(),
) -> Result<(), CopyError> {
    if !tier.capabilities().needs_recall {
        return Ok(());
    }
    let started = tokio::time::Instant::now();
    let mut poll = Duration::from_secs(1);
    while tier.recall(key).await? == RecallStatus::InProgress {
        on_waiting();
        if started.elapsed() + poll > wait {
            return Err(CopyError::RecallTimeout { tier: tier.name().clone(), key: key.clone(), secs: wait.as_secs() });
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(Duration::from_secs(60));
    }
    Ok(())
}

/// A body that opens the source object only when it is first polled, so that a batch holds
/// one open source at a time; it fails with `ChecksumMismatch` when the source's checksum is
/// not the catalog's.
fn lazy_source(tier: Arc<dyn Tier>, key: ObjectKey, expected: Checksum) -> ByteStream {
    let fail = |e: TierError| -> ByteStream { futures::stream::once(async move { Err(e) }).boxed() };
    futures::stream::once(async move {
        match tier.get(&key, GetOpts::default()).await {
            Ok(got) if got.meta.checksum == expected => got.body,
            Ok(got) => fail(TierError::ChecksumMismatch { key, expected, actual: got.meta.checksum }),
            Err(e) => fail(e),
        }
    })
    .flatten()
    .boxed()
}

/// Copies several instances' objects to `target` with one [`Tier::put_many`], then verifies
/// each copy.
///
/// # Behavior
/// - Sources on tiers that need recalls are made readable first (each waits up to the
///   context's `recall_wait`); the sources are then read one after another, through the
///   shared throttle, as the target consumes them.
/// - A write intent names every target copy (synced) before the put starts.
/// - `Err`: the batch failed as a whole (a source could not be read or recalled, the put
///   failed); the target copies are deleted and their intents cleared (or left for recovery
///   when a delete fails), so nothing is left for the caller to commit.
/// - `Ok`: one answer per item, in order: the new, verified location (not yet named by the
///   catalog), or why that copy failed its read-back (that copy is deleted again).
pub async fn copy_batch(
    ctx: &CopyContext<'_>,
    items: &[(&InstanceRecord, &Location)],
    target: &Arc<dyn Tier>,
    mut on_waiting: impl FnMut(),
) -> Result<Vec<Result<Location, CopyError>>, CopyError> {
    let CopyContext { catalog, tiers, throttle, recall_wait, classes } = *ctx;
    let mut sources = Vec::with_capacity(items.len());
    for (_, source) in items {
        let tier = tiers.get(&source.tier).ok_or_else(|| CopyError::UnknownTier(source.tier.clone()))?;
        wait_recalled(tier, &source.key, recall_wait, &mut on_waiting).await?;
        sources.push(tier.clone());
    }
    let intents: Vec<WriteIntent> = items
        .iter()
        .map(|(record, source)| WriteIntent {
            tier: target.name().clone(),
            key: source.key.clone(),
            sop_instance: record.uid.clone(),
        })
        .collect();
    for (i, intent) in intents.iter().enumerate() {
        if let Err(e) = catalog.begin_write(intent) {
            for written in &intents[..i] {
                discard(catalog, target, written).await;
            }
            return Err(e.into());
        }
    }
    crate::failpoint::hit("migrate.after_intent");
    let puts = items
        .iter()
        .zip(sources)
        .map(|((record, source), tier)| {
            let body = throttle.limit(lazy_source(tier, source.key.clone(), record.checksum));
            let opts = PutOpts {
                expected_checksum: Some(record.checksum),
                overwrite: true,
                content_class: classes.of(catalog, record),
            };
            (source.key.clone(), body, opts)
        })
        .collect();
    if let Err(e) = target.put_many(puts).await {
        for intent in &intents {
            discard(catalog, target, intent).await;
        }
        return Err(e.into());
    }
    crate::failpoint::hit("migrate.after_copy");
    let checks = match verify_copies(target, items).await {
        Ok(checks) => checks,
        Err(e) => {
            discard_all(catalog, target, &intents).await;
            return Err(e.into());
        }
    };
    let mut answers = Vec::with_capacity(items.len());
    let mut failed = Vec::new();
    for (((_, source), intent), check) in items.iter().zip(&intents).zip(checks) {
        match check {
            Ok(()) => answers.push(Ok(Location {
                tier: target.name().clone(),
                key: source.key.clone(),
                verified_at: OffsetDateTime::now_utc(),
            })),
            Err(e) => {
                failed.push(intent.clone());
                answers.push(Err(e.into()));
            }
        }
    }
    discard_all(catalog, target, &failed).await;
    Ok(answers)
}

/// Reads fresh copies back, as [`verify_copy`] does for one: on tiers that serve reads with
/// one [`Tier::verify_many`] (each copy's bytes read from the store and hashed; a bundling
/// tier reads each stored unit once), on tiers that need a recall before reads with one
/// `head` per copy.
///
/// `Ok` holds one answer per item, in order; `Err` means the read-back failed as a whole
/// (e.g. transiently) and no copy may be trusted.
pub async fn verify_copies(
    tier: &Arc<dyn Tier>,
    items: &[(&InstanceRecord, &Location)],
) -> Result<Vec<Result<(), TierError>>, TierError> {
    if tier.capabilities().needs_recall {
        let mut answers = Vec::with_capacity(items.len());
        for (record, source) in items {
            answers.push(verify_copy(tier, &source.key, record).await);
        }
        return Ok(answers);
    }
    let checks = items.iter().map(|(record, source)| (source.key.clone(), record.checksum)).collect();
    let answers = tier.verify_many(checks).await?;
    if answers.len() != items.len() {
        return Err(TierError::Other(format!(
            "tier {} answered {} of {} read-backs",
            tier.name(),
            answers.len(),
            items.len()
        )));
    }
    Ok(answers)
}

/// Reads a fresh copy back: in full on tiers that can serve it, by size and checksum
/// (checked by the store on upload) on tiers that need a recall before reads.
pub async fn verify_copy(tier: &Arc<dyn Tier>, key: &ObjectKey, record: &InstanceRecord) -> Result<(), TierError> {
    let mismatch = |actual| TierError::ChecksumMismatch { key: key.clone(), expected: record.checksum, actual };
    if tier.capabilities().needs_recall {
        let meta = tier.head(key).await?;
        if meta.checksum != record.checksum || meta.size != record.size {
            return Err(mismatch(meta.checksum));
        }
        return Ok(());
    }
    let got = tier.get(key, GetOpts::default()).await?;
    if got.meta.checksum != record.checksum {
        return Err(mismatch(got.meta.checksum));
    }
    let mut body = got.body;
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        size += chunk?.len() as u64;
    }
    if size != record.size {
        return Err(TierError::corrupt(tier.name(), format!("copy {key} has {size} bytes, expected {}", record.size)));
    }
    Ok(())
}

/// Deletes objects of one tier with one [`Tier::delete_many`] and clears their intents; when
/// the delete fails, every intent stays for recovery.
pub async fn discard_all(catalog: &dyn Catalog, tier: &Arc<dyn Tier>, intents: &[WriteIntent]) {
    if intents.is_empty() {
        return;
    }
    let keys = intents.iter().map(|i| i.key.clone()).collect();
    match tier.delete_many(keys).await {
        Ok(()) => {
            for intent in intents {
                if let Err(e) = catalog.end_write(intent) {
                    tracing::warn!(error = %e, key = %intent.key, "clearing a write intent failed; recovery will");
                }
            }
        }
        Err(e) => {
            tracing::warn!(tier = %tier.name(), objects = intents.len(), error = %e,
                "deleting unreferenced copies failed; recovery will retry");
        }
    }
}

/// Deletes an object the catalog does not name and clears its intent; on failure the intent
/// stays for recovery.
pub async fn discard(catalog: &dyn Catalog, tier: &Arc<dyn Tier>, intent: &WriteIntent) {
    match tier.delete(&intent.key).await {
        Ok(()) => {
            if let Err(e) = catalog.end_write(intent) {
                tracing::warn!(error = %e, key = %intent.key, "clearing a write intent failed; recovery will");
            }
        }
        Err(e) => {
            tracing::warn!(tier = %intent.tier, key = %intent.key, error = %e, "deleting an unreferenced copy failed; recovery will retry");
        }
    }
}
