//! The lifecycle engine: accepts migration and recall jobs, runs them under the configured
//! throttles, persists their progress, and resumes unfinished ones on start.
//!
//! # Batches
//! A target whose capabilities set `batch_bytes` (an S3 tier packs a batch into one bundle,
//! a tape tier writes it contiguously on one volume) receives a study's copies in batches
//! of up to that many bytes and [`LifecycleSettings::batch_objects`] instances, each batch
//! written with one [`Tier::put_many`], verified, and committed with one catalog
//! relocation before its sources are deleted. A batch that fails on a transient error is
//! retried whole; one that fails for good is copied again instance by instance, so that one
//! unreadable source fails only itself. Other targets get one put per instance, committed
//! [`LifecycleSettings::commit_batch`] instances at a time.

use super::copy::{
    copy_batch, copy_instance, discard, discard_all, is_online, prefetch_sources, source_of, ContentClasses,
    CopyContext, CopyError,
};
use super::job::{Job, JobId, JobKind, JobState, JOB_VERSION};
use super::throttle::Throttle;
use crate::audit::AuditAction;
use crate::catalog::{Catalog, CatalogError, InstanceRelocation, Relocation, WriteIntent};
use crate::metrics::Metrics;
use crate::model::{InstanceRecord, Location};
use crate::tier::TierSet;
use crate::tier::{Tier, TierName};
use crate::uid::StudyUid;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{watch, Semaphore};

/// The engine's settings (from `[lifecycle]`).
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    /// Verified copies no instance may drop below.
    pub min_copies: usize,
    /// Jobs that run at once.
    pub max_concurrent_jobs: usize,
    /// Bytes per second all jobs may copy together (0 = unlimited).
    pub bytes_per_sec: u64,
    /// Where retrieves recall studies to.
    pub recall_tier: TierName,
    /// How long a job waits for a cold tier to make one object readable.
    pub recall_wait: Duration,
    /// Finished jobs kept.
    pub keep_finished: usize,
    /// Instances committed per catalog batch.
    pub commit_batch: usize,
    /// Most instances written with one `put_many` to a target that takes batches.
    pub batch_objects: usize,
    /// Attempts per instance (or per batch) on transient failures.
    pub attempts: u32,
}

impl LifecycleSettings {
    /// Settings from the configuration.
    pub fn from_config(c: &crate::config::LifecycleConfig) -> Result<Self, LifecycleError> {
        Ok(Self {
            min_copies: c.min_verified_copies,
            max_concurrent_jobs: c.max_concurrent_jobs,
            bytes_per_sec: c.max_mb_per_sec.saturating_mul(1 << 20),
            recall_tier: TierName::new(c.recall_tier.clone())
                .map_err(|_| LifecycleError::UnknownTier(c.recall_tier.clone()))?,
            recall_wait: Duration::from_secs(c.recall_wait_secs.max(1)),
            keep_finished: c.keep_finished_jobs,
            commit_batch: 32,
            batch_objects: 1000,
            attempts: 5,
        })
    }
}

/// A request to move or copy a study's copies to a tier.
#[derive(Debug, Clone)]
pub struct TierMoveRequest {
    /// The study.
    pub study: StudyUid,
    /// The tier to copy to.
    pub to: TierName,
    /// The tier to copy from (and drop, for a move); `None` reads the best copy.
    pub from: Option<TierName>,
    /// Keep the source copies.
    pub keep_source: bool,
    /// Who asks.
    pub requested_by: String,
    /// Why.
    pub reason: Option<String>,
}

/// Lifecycle failures.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// A named tier is not configured.
    #[error("tier {0:?} is not configured")]
    UnknownTier(String),
    /// The study is not in the catalog.
    #[error("study {0} not found")]
    StudyNotFound(StudyUid),
    /// Another job is working on the study.
    #[error("job {job} is already working on study {study}")]
    Busy {
        /// The study.
        study: StudyUid,
        /// The job.
        job: JobId,
    },
    /// No such job.
    #[error("job {0} not found")]
    JobNotFound(JobId),
    /// Source and target are the same tier.
    #[error("the source and target tier are both {0}")]
    SameTier(TierName),
    /// A recall ended without making the study readable.
    #[error("recall of study {study} failed: {message}")]
    RecallFailed {
        /// The study.
        study: StudyUid,
        /// Why.
        message: String,
    },
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// What [`Lifecycle::ensure_online`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnlineState {
    /// Every instance had an online copy.
    AlreadyOnline,
    /// A recall ran and finished; every instance now has an online copy.
    Recalled(JobId),
    /// A recall is running and did not finish within the wait.
    Pending(JobId),
}

/// The lifecycle engine; cheap to clone.
#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lifecycle")
    }
}

struct Inner {
    catalog: Arc<dyn Catalog>,
    tiers: Arc<TierSet>,
    settings: LifecycleSettings,
    metrics: Metrics,
    throttle: Throttle,
    slots: Semaphore,
    jobs: Mutex<BTreeMap<JobId, Job>>,
    /// The unfinished job of each study.
    active: Mutex<HashMap<StudyUid, JobId>>,
    /// Progress feeds of unfinished jobs.
    feeds: Mutex<HashMap<JobId, watch::Sender<Job>>>,
    last_id: Mutex<u64>,
}

impl Lifecycle {
    /// Creates the engine; call [`Lifecycle::resume`] once on a runtime to restart saved jobs.
    pub fn new(catalog: Arc<dyn Catalog>, tiers: Arc<TierSet>, settings: LifecycleSettings, metrics: Metrics) -> Self {
        let throttle = Throttle::new(settings.bytes_per_sec);
        let slots = Semaphore::new(settings.max_concurrent_jobs.max(1));
        Self {
            inner: Arc::new(Inner {
                catalog,
                tiers,
                settings,
                metrics,
                throttle,
                slots,
                jobs: Mutex::new(BTreeMap::new()),
                active: Mutex::new(HashMap::new()),
                feeds: Mutex::new(HashMap::new()),
                last_id: Mutex::new(0),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &LifecycleSettings {
        &self.inner.settings
    }

    /// The shared byte-rate limit (the scrub takes from its own).
    pub fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// Loads saved jobs and restarts the unfinished ones; returns how many were restarted.
    pub fn resume(&self) -> Result<usize, LifecycleError> {
        let saved = self.inner.catalog.jobs()?;
        let mut restarted = 0;
        for mut job in saved {
            {
                let mut last = self.inner.last_id.lock();
                *last = (*last).max(job.id.0);
            }
            if !job.state.is_finished() {
                job.state = JobState::Queued;
                self.inner.active.lock().insert(job.study.clone(), job.id);
                self.inner.feeds.lock().insert(job.id, watch::channel(job.clone()).0);
                self.inner.jobs.lock().insert(job.id, job.clone());
                tracing::info!(job = %job.id, study = %job.study, to = %job.to, "resuming an interrupted lifecycle job");
                self.spawn(job.id);
                restarted += 1;
            } else {
                self.inner.jobs.lock().insert(job.id, job);
            }
        }
        Ok(restarted)
    }

    /// Starts a migration; refused when a tier is unknown, the study is missing, or another
    /// job is working on the study.
    pub fn submit(&self, req: TierMoveRequest) -> Result<Job, LifecycleError> {
        self.submit_kind(req, JobKind::Move)
    }

    fn submit_kind(&self, req: TierMoveRequest, kind: JobKind) -> Result<Job, LifecycleError> {
        let tiers = &self.inner.tiers;
        if tiers.get(&req.to).is_none() {
            return Err(LifecycleError::UnknownTier(req.to.to_string()));
        }
        if let Some(from) = &req.from {
            if tiers.get(from).is_none() {
                return Err(LifecycleError::UnknownTier(from.to_string()));
            }
            if *from == req.to {
                return Err(LifecycleError::SameTier(req.to.clone()));
            }
        }
        let study =
            self.inner.catalog.study(&req.study)?.ok_or_else(|| LifecycleError::StudyNotFound(req.study.clone()))?;
        let mut active = self.inner.active.lock();
        if let Some(job) = active.get(&req.study) {
            return Err(LifecycleError::Busy { study: req.study.clone(), job: *job });
        }
        let now = OffsetDateTime::now_utc();
        let job = Job {
            v: JOB_VERSION,
            id: self.next_id(now),
            kind,
            study: req.study.clone(),
            from: req.from,
            to: req.to,
            keep_source: req.keep_source,
            requested_by: req.requested_by,
            reason: req.reason,
            state: JobState::Queued,
            instances_total: study.instance_count,
            instances_done: 0,
            instances_failed: 0,
            bytes_copied: 0,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        self.inner.catalog.save_job(&job)?;
        active.insert(job.study.clone(), job.id);
        drop(active);
        self.inner.feeds.lock().insert(job.id, watch::channel(job.clone()).0);
        self.inner.jobs.lock().insert(job.id, job.clone());
        self.inner.metrics.lifecycle_jobs_total.with_label_values(&[kind_label(kind), "submitted"]).inc();
        tracing::info!(job = %job.id, study = %job.study, to = %job.to, kind = kind_label(kind), "lifecycle job submitted");
        self.spawn(job.id);
        Ok(job)
    }

    fn next_id(&self, now: OffsetDateTime) -> JobId {
        let micros = (now.unix_timestamp_nanos() / 1000).max(0) as u64;
        let mut last = self.inner.last_id.lock();
        *last = micros.max(*last + 1);
        JobId(*last)
    }

    /// A job by id.
    pub fn job(&self, id: JobId) -> Option<Job> {
        self.inner.jobs.lock().get(&id).cloned()
    }

    /// Every known job, newest first.
    pub fn jobs(&self) -> Vec<Job> {
        self.inner.jobs.lock().values().rev().cloned().collect()
    }

    /// Jobs not finished yet.
    pub fn active_jobs(&self) -> usize {
        self.inner.active.lock().len()
    }

    /// Waits until a job has finished, or `timeout` passed; returns its latest state.
    pub async fn wait(&self, id: JobId, timeout: Duration) -> Result<Job, LifecycleError> {
        let feed = self.inner.feeds.lock().get(&id).map(|f| f.subscribe());
        let Some(mut rx) = feed else {
            return self.job(id).ok_or(LifecycleError::JobNotFound(id));
        };
        let _ = tokio::time::timeout(timeout, rx.wait_for(|j| j.state.is_finished())).await;
        self.job(id).ok_or(LifecycleError::JobNotFound(id))
    }

    /// Makes sure every instance of a study has an online copy: starts a recall to the recall
    /// tier (or joins the one running) and waits up to `wait` for it.
    pub async fn ensure_online(&self, study: &StudyUid, wait: Duration) -> Result<OnlineState, LifecycleError> {
        let needs_recall = |records: &[InstanceRecord]| {
            records.iter().any(|r| !r.locations.iter().any(|l| is_online(&self.inner.tiers, l)))
        };
        let records = self.inner.catalog.instances_of_study(study)?;
        if records.is_empty() {
            return Err(LifecycleError::StudyNotFound(study.clone()));
        }
        if !needs_recall(&records) {
            return Ok(OnlineState::AlreadyOnline);
        }
        // A job of another kind (a migration) may hold the study: wait for it, then recall.
        let mut last = None;
        for _ in 0..2 {
            let running = self.inner.active.lock().get(study).copied();
            let id = match running {
                Some(id) => id,
                None => {
                    let req = TierMoveRequest {
                        study: study.clone(),
                        to: self.inner.settings.recall_tier.clone(),
                        from: None,
                        keep_source: true,
                        requested_by: "lifecycle".into(),
                        reason: Some("retrieve of a study with no online copy".into()),
                    };
                    match self.submit_kind(req, JobKind::Recall) {
                        Ok(job) => job.id,
                        // Another request started one between the check and the submit.
                        Err(LifecycleError::Busy { job, .. }) => job,
                        Err(e) => return Err(e),
                    }
                }
            };
            self.inner.metrics.recall_requests_total.inc();
            let job = self.wait(id, wait).await?;
            if !job.state.is_finished() {
                return Ok(OnlineState::Pending(id));
            }
            let records = self.inner.catalog.instances_of_study(study)?;
            if !needs_recall(&records) {
                return Ok(OnlineState::Recalled(id));
            }
            if job.kind == JobKind::Recall {
                return Err(LifecycleError::RecallFailed {
                    study: study.clone(),
                    message: job.last_error.unwrap_or_else(|| format!("job {id} ended with instances still offline")),
                });
            }
            last = Some(id);
        }
        Err(LifecycleError::RecallFailed {
            study: study.clone(),
            message: format!("instances still offline after job {}", last.map_or(0, |j| j.0)),
        })
    }

    fn spawn(&self, id: JobId) {
        let this = self.clone();
        tokio::spawn(async move {
            let permit = this.inner.slots.acquire().await;
            if permit.is_err() {
                return;
            }
            this.run(id).await;
        });
    }

    /// Changes a job and publishes it; saves it when `save`.
    fn update(&self, id: JobId, save: bool, f: impl FnOnce(&mut Job)) -> Option<Job> {
        let job = {
            let mut jobs = self.inner.jobs.lock();
            let job = jobs.get_mut(&id)?;
            f(job);
            job.updated_at = OffsetDateTime::now_utc();
            job.clone()
        };
        if save {
            if let Err(e) = self.inner.catalog.save_job(&job) {
                tracing::error!(job = %id, error = %e, "saving a lifecycle job failed");
            }
        }
        if let Some(feed) = self.inner.feeds.lock().get(&id) {
            feed.send_replace(job.clone());
        }
        Some(job)
    }

    async fn run(&self, id: JobId) {
        let Some(job) = self.update(id, true, |j| j.state = JobState::Running) else { return };
        let outcome = self.run_passes(&job).await;
        let finished = self.update(id, true, |j| match outcome {
            Ok(()) if j.instances_failed == 0 => j.state = JobState::Done,
            Ok(()) => j.state = JobState::Failed,
            Err(e) => {
                j.state = JobState::Failed;
                j.last_error = Some(e.to_string());
            }
        });
        self.inner.active.lock().remove(&job.study);
        self.inner.feeds.lock().remove(&id);
        if let Some(j) = finished {
            let outcome = if j.state == JobState::Done { "done" } else { "failed" };
            self.inner.metrics.lifecycle_jobs_total.with_label_values(&[kind_label(j.kind), outcome]).inc();
            tracing::info!(job = %id, study = %j.study, to = %j.to, outcome, done = j.instances_done,
                failed = j.instances_failed, bytes = j.bytes_copied, "lifecycle job finished");
        }
        self.prune();
    }

    /// Forgets the oldest finished jobs beyond the configured number.
    fn prune(&self) {
        let doomed: Vec<JobId> = {
            let jobs = self.inner.jobs.lock();
            let finished: Vec<JobId> = jobs.values().filter(|j| j.state.is_finished()).map(|j| j.id).collect();
            let excess = finished.len().saturating_sub(self.inner.settings.keep_finished);
            finished.into_iter().take(excess).collect()
        };
        for id in doomed {
            self.inner.jobs.lock().remove(&id);
            if let Err(e) = self.inner.catalog.remove_job(id) {
                tracing::warn!(job = %id, error = %e, "forgetting a finished job failed");
            }
        }
    }

    /// Works through the study until no instance is left to handle; instances that arrive
    /// while the job runs are taken in a later pass.
    async fn run_passes(&self, job: &Job) -> Result<(), LifecycleError> {
        let mut seen: HashSet<String> = HashSet::new();
        // Each series' Modality, read once for the whole job.
        let classes = ContentClasses::default();
        for _pass in 0..8 {
            let records = self.inner.catalog.instances_of_study(&job.study)?;
            let total = records.len() as u64;
            let fresh: Vec<InstanceRecord> =
                records.into_iter().filter(|r| seen.insert(r.uid.as_str().to_string())).collect();
            if fresh.is_empty() {
                return Ok(());
            }
            self.update(job.id, false, |j| j.instances_total = total);
            let mut work = Vec::new();
            for r in fresh {
                match plan(&self.inner.tiers, job, &r) {
                    Plan::Nothing => {
                        self.update(job.id, false, |j| j.instances_done += 1);
                    }
                    p => work.push((r, p)),
                }
            }
            self.start_recalls(&work).await;
            let target = self.target(job)?;
            match target.capabilities().batch_bytes {
                Some(max_bytes) => {
                    let (copies, rest): (Vec<_>, Vec<_>) =
                        work.into_iter().partition(|(_, p)| matches!(p, Plan::Copy(_)));
                    for chunk in rest.chunks(self.inner.settings.commit_batch.max(1)) {
                        self.run_chunk(job, chunk, &classes).await?;
                    }
                    let sizes = copies.iter().map(|(r, _)| r.size);
                    for range in batch_ranges(sizes, max_bytes, self.inner.settings.batch_objects) {
                        self.run_batch(job, &copies[range], &classes).await?;
                    }
                }
                None => {
                    for chunk in work.chunks(self.inner.settings.commit_batch.max(1)) {
                        self.run_chunk(job, chunk, &classes).await?;
                    }
                }
            }
            self.update(job.id, true, |_| {});
        }
        Ok(())
    }

    /// Asks cold tiers to recall every source object of the pass at once, so that the
    /// restores run side by side rather than one after another.
    async fn start_recalls(&self, work: &[(InstanceRecord, Plan)]) {
        for (_, plan) in work {
            let Plan::Copy(source) = plan else { continue };
            let Some(tier) = self.inner.tiers.get(&source.tier) else { continue };
            if tier.capabilities().needs_recall {
                if let Err(e) = tier.recall(&source.key).await {
                    tracing::warn!(tier = %source.tier, key = %source.key, error = %e, "starting a recall failed");
                }
            }
        }
    }

    /// The job's target tier.
    fn target(&self, job: &Job) -> Result<Arc<dyn Tier>, LifecycleError> {
        self.inner.tiers.get(&job.to).cloned().ok_or_else(|| LifecycleError::UnknownTier(job.to.to_string()))
    }

    /// Copies a chunk of instances one put each, commits their new copies in one batch, then
    /// deletes the copies the batch dropped.
    async fn run_chunk(
        &self,
        job: &Job,
        chunk: &[(InstanceRecord, Plan)],
        classes: &ContentClasses,
    ) -> Result<(), LifecycleError> {
        let target = self.target(job)?;
        let mut items = Vec::new();
        let mut made: Vec<WriteIntent> = Vec::new();
        let copies: Vec<(&InstanceRecord, &Location)> = chunk
            .iter()
            .filter_map(|(r, p)| match p {
                Plan::Copy(source) => Some((r, source)),
                _ => None,
            })
            .collect();
        let mut prefetched = prefetch_sources(&self.inner.tiers, &copies).await;
        let mut copy_index = 0;
        for (record, plan) in chunk {
            match plan {
                Plan::Nothing => {}
                Plan::Drop(source) => items.push(InstanceRelocation {
                    sop_instance: record.uid.clone(),
                    checksum: record.checksum,
                    add: Vec::new(),
                    remove: vec![(source.tier.clone(), source.key.clone())],
                }),
                Plan::Copy(source) => {
                    let bytes = prefetched.remove(&copy_index);
                    copy_index += 1;
                    match self.copy_with_retries(job, record, source, &target, classes, bytes).await {
                        Ok(loc) => items.push(self.copied(job, record, source, loc, &mut made)),
                        Err(e) => self.copy_failed(job, record, &e),
                    }
                }
            }
        }
        self.commit(job, &target, items, made).await
    }

    /// Copies a batch of instances (all `Plan::Copy`) with one `put_many`, commits the new
    /// copies in one catalog batch, then deletes the copies the batch dropped.
    async fn run_batch(
        &self,
        job: &Job,
        batch: &[(InstanceRecord, Plan)],
        classes: &ContentClasses,
    ) -> Result<(), LifecycleError> {
        let target = self.target(job)?;
        let pairs: Vec<(&InstanceRecord, &Location)> = batch
            .iter()
            .filter_map(|(r, p)| match p {
                Plan::Copy(source) => Some((r, source)),
                _ => None,
            })
            .collect();
        if pairs.is_empty() {
            return Ok(());
        }
        let mut items = Vec::with_capacity(pairs.len());
        let mut made: Vec<WriteIntent> = Vec::with_capacity(pairs.len());
        match self.copy_batch_with_retries(job, &pairs, &target, classes).await {
            Ok(answers) => {
                for ((record, source), answer) in pairs.iter().zip(answers) {
                    let answer = match answer {
                        Ok(loc) => Ok(loc),
                        // Its read-back failed: the copy was removed; try it again on its own.
                        Err(e) => {
                            tracing::info!(job = %job.id, instance = %record.uid, error = %e,
                                "a batched copy failed its verification; copying it alone");
                            self.copy_with_retries(job, record, source, &target, classes, None).await
                        }
                    };
                    match answer {
                        Ok(loc) => items.push(self.copied(job, record, source, loc, &mut made)),
                        Err(e) => self.copy_failed(job, record, &e),
                    }
                }
            }
            // A permanent failure may come from one instance (an unreadable source): copy
            // them one by one so that it fails only itself.
            Err(e) if pairs.len() > 1 && !e.is_transient() => {
                tracing::warn!(job = %job.id, instances = pairs.len(), error = %e,
                    "a batched copy failed; copying its instances one by one");
                for (record, source) in &pairs {
                    match self.copy_with_retries(job, record, source, &target, classes, None).await {
                        Ok(loc) => items.push(self.copied(job, record, source, loc, &mut made)),
                        Err(e) => self.copy_failed(job, record, &e),
                    }
                }
            }
            Err(e) => {
                for (record, _) in &pairs {
                    self.copy_failed(job, record, &e);
                }
            }
        }
        self.commit(job, &target, items, made).await
    }

    /// Books a verified copy (metrics, progress) and returns its catalog change; the write
    /// intent of the copy goes into `made`.
    fn copied(
        &self,
        job: &Job,
        record: &InstanceRecord,
        source: &Location,
        loc: Location,
        made: &mut Vec<WriteIntent>,
    ) -> InstanceRelocation {
        made.push(WriteIntent { tier: loc.tier.clone(), key: loc.key.clone(), sop_instance: record.uid.clone() });
        let remove = if job.keep_source { Vec::new() } else { vec![(source.tier.clone(), source.key.clone())] };
        let labels = [source.tier.as_str(), job.to.as_str()];
        self.inner.metrics.lifecycle_objects_total.with_label_values(&labels).inc();
        self.inner.metrics.lifecycle_bytes_total.with_label_values(&labels).inc_by(record.size);
        self.update(job.id, false, |j| j.bytes_copied += record.size);
        InstanceRelocation { sop_instance: record.uid.clone(), checksum: record.checksum, add: vec![loc], remove }
    }

    /// Books an instance whose copy failed.
    fn copy_failed(&self, job: &Job, record: &InstanceRecord, e: &CopyError) {
        tracing::warn!(job = %job.id, instance = %record.uid, error = %e, "instance not migrated");
        self.inner.metrics.lifecycle_failures_total.with_label_values(&[job.to.as_str()]).inc();
        self.update(job.id, false, |j| {
            j.instances_failed += 1;
            j.last_error = Some(format!("instance {}: {e}", record.uid));
        });
    }

    /// Commits new copies and dropped ones in one catalog batch, then deletes the dropped
    /// copies; a refused item has its new copy removed again.
    async fn commit(
        &self,
        job: &Job,
        target: &Arc<dyn Tier>,
        items: Vec<InstanceRelocation>,
        made: Vec<WriteIntent>,
    ) -> Result<(), LifecycleError> {
        let tiers = &self.inner.tiers;
        if items.is_empty() {
            return Ok(());
        }
        let relocation = Relocation {
            items,
            min_copies: self.inner.settings.min_copies,
            action: match job.kind {
                JobKind::Move => AuditAction::InstancesMigrated,
                JobKind::Recall => AuditAction::InstancesRecalled,
            },
            actor: job.requested_by.clone(),
            reason: job.reason.clone(),
            detail: format!(
                "{} -> {} ({}, job {})",
                job.from.as_ref().map_or("best copy", |t| t.as_str()),
                job.to,
                if job.keep_source { "copy" } else { "move" },
                job.id
            ),
        };
        let answers = match self.inner.catalog.relocate(relocation.clone()).await {
            Ok(a) => a,
            Err(e) => {
                for intent in &made {
                    discard(self.inner.catalog.as_ref(), target, intent).await;
                }
                return Err(e.into());
            }
        };
        crate::failpoint::hit("migrate.after_commit");
        // Dropped sources, per tier, and new copies the catalog refused: each deleted with one
        // `delete_many` per tier (one index rewrite per S3 bundle instead of one per object).
        let mut dropped: BTreeMap<TierName, Vec<WriteIntent>> = BTreeMap::new();
        let mut refused: Vec<WriteIntent> = Vec::new();
        let mut done = 0u64;
        let mut failures: Vec<String> = Vec::new();
        for (item, answer) in relocation.items.iter().zip(answers) {
            match answer {
                Ok(_) => {
                    for (tier, key) in &item.remove {
                        dropped.entry(tier.clone()).or_default().push(WriteIntent {
                            tier: tier.clone(),
                            key: key.clone(),
                            sop_instance: item.sop_instance.clone(),
                        });
                    }
                    done += 1;
                }
                Err(e) => {
                    // The new copy is not named by the catalog: remove it.
                    refused.extend(item.add.iter().map(|loc| WriteIntent {
                        tier: loc.tier.clone(),
                        key: loc.key.clone(),
                        sop_instance: item.sop_instance.clone(),
                    }));
                    if matches!(e, CatalogError::InstanceGone(_)) {
                        done += 1;
                    } else {
                        tracing::warn!(job = %job.id, instance = %item.sop_instance, error = %e, "relocation refused");
                        failures.push(e.to_string());
                    }
                }
            }
        }
        for (tier, intents) in &dropped {
            if let Some(t) = tiers.get(tier) {
                discard_all(self.inner.catalog.as_ref(), t, intents).await;
            }
        }
        discard_all(self.inner.catalog.as_ref(), target, &refused).await;
        self.update(job.id, false, |j| {
            j.instances_done += done;
            j.instances_failed += failures.len() as u64;
            if let Some(last) = failures.last() {
                j.last_error = Some(last.clone());
            }
        });
        self.update(job.id, true, |_| {});
        crate::failpoint::hit("migrate.after_source_delete");
        Ok(())
    }

    /// What a copy of this job needs, and the callback that marks the job as waiting for a recall.
    fn copy_context<'a>(
        &'a self,
        id: JobId,
        classes: &'a ContentClasses,
    ) -> (CopyContext<'a>, impl Fn() + Send + 'static) {
        let this = self.clone();
        let waiting = move || {
            this.update(id, false, |j| j.state = JobState::WaitingForRecall);
        };
        let ctx = CopyContext {
            catalog: self.inner.catalog.as_ref(),
            tiers: &self.inner.tiers,
            throttle: &self.inner.throttle,
            recall_wait: self.inner.settings.recall_wait,
            classes,
        };
        (ctx, waiting)
    }

    async fn copy_with_retries(
        &self,
        job: &Job,
        record: &InstanceRecord,
        source: &Location,
        target: &Arc<dyn Tier>,
        classes: &ContentClasses,
        prefetched: Option<bytes::Bytes>,
    ) -> Result<Location, CopyError> {
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let (ctx, waiting) = self.copy_context(job.id, classes);
            let result = copy_instance(&ctx, record, source, target, prefetched.clone(), waiting).await;
            self.update(job.id, false, |j| j.state = JobState::Running);
            match result {
                Err(e) if e.is_transient() && attempt < self.inner.settings.attempts => {
                    tracing::info!(job = %job.id, instance = %record.uid, attempt, error = %e, "retrying a copy");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Like `copy_with_retries` for a batch: a transient failure of the whole batch is
    /// retried with the same backoff.
    async fn copy_batch_with_retries(
        &self,
        job: &Job,
        pairs: &[(&InstanceRecord, &Location)],
        target: &Arc<dyn Tier>,
        classes: &ContentClasses,
    ) -> Result<Vec<Result<Location, CopyError>>, CopyError> {
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let (ctx, waiting) = self.copy_context(job.id, classes);
            let result = copy_batch(&ctx, pairs, target, waiting).await;
            self.update(job.id, false, |j| j.state = JobState::Running);
            match result {
                Err(e) if e.is_transient() && attempt < self.inner.settings.attempts => {
                    tracing::info!(job = %job.id, instances = pairs.len(), attempt, error = %e, "retrying a batched copy");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// What a job does to one instance.
#[derive(Debug, Clone)]
enum Plan {
    /// It is already where the job wants it.
    Nothing,
    /// Copy from this location (and drop it unless the job keeps sources).
    Copy(Location),
    /// A copy already exists on the target: only drop this one.
    Drop(Location),
}

fn plan(tiers: &TierSet, job: &Job, record: &InstanceRecord) -> Plan {
    let on_target = record.locations.iter().any(|l| l.tier == job.to);
    let on_from = job.from.as_ref().and_then(|f| record.locations.iter().find(|l| &l.tier == f));
    match (on_target, on_from) {
        (true, Some(src)) if !job.keep_source => Plan::Drop(src.clone()),
        (true, _) => Plan::Nothing,
        (false, Some(src)) => Plan::Copy(src.clone()),
        (false, None) if job.from.is_some() => Plan::Nothing,
        (false, None) => source_of(tiers, record, None).cloned().map_or(Plan::Nothing, Plan::Copy),
    }
}

/// Splits items of these sizes, in order, into consecutive batches of at most `max_bytes`
/// bytes and `max_count` items; an item larger than `max_bytes` makes a batch of its own.
fn batch_ranges(sizes: impl IntoIterator<Item = u64>, max_bytes: u64, max_count: usize) -> Vec<Range<usize>> {
    let max_count = max_count.max(1);
    let mut out = Vec::new();
    let (mut start, mut bytes, mut end) = (0usize, 0u64, 0usize);
    for (i, size) in sizes.into_iter().enumerate() {
        let full = i > start && (i - start >= max_count || bytes.saturating_add(size) > max_bytes);
        if full {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
        end = i + 1;
    }
    if end > start {
        out.push(start..end);
    }
    out
}

fn kind_label(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Move => "migrate",
        JobKind::Recall => "recall",
    }
}

#[cfg(test)]
mod tests {
    use super::batch_ranges;

    #[test]
    fn batches_respect_bytes_and_counts() {
        assert_eq!(batch_ranges([], 10, 3), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(batch_ranges([4, 4, 4, 4], 10, 100), vec![0..2, 2..4]);
        assert_eq!(batch_ranges([1; 7], 100, 3), vec![0..3, 3..6, 6..7]);
        // An item above the limit travels alone; the rest pack around it.
        assert_eq!(batch_ranges([2, 50, 2, 2], 10, 100), vec![0..1, 1..2, 2..4]);
        assert_eq!(batch_ranges([10, 10], 10, 100), vec![0..1, 1..2]);
        assert_eq!(batch_ranges([5, 5], 10, 0), vec![0..1, 1..2]);
    }
}
