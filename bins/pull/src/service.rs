//! The migration service: starts pull jobs, runs them one task each, resumes unfinished ones
//! after a restart, cancels them, and answers progress and reconciliation questions.
//!
//! # A job's steps
//! 1. **Plan** (state `planning`): ask the source for its studies in the date range (C-FIND or
//!    QIDO-RS), write the plan durably, switch to `running`.
//! 2. For each planned study not handled yet, in plan order:
//!    - **compare**: if vna already holds at least the source's instance count, record it as
//!      `present` and go on (never fetched again);
//!    - **wait** for the throttle;
//!    - **fetch**: record `fetching` durably, then C-MOVE the study to vna or retrieve it with
//!      WADO-RS and ingest each object (network errors are retried `attempts` times);
//!    - **verify**: count again; `done` when vna holds at least the source's count, else `failed`
//!      with the numbers; record the outcome durably.
//! 3. **Reconcile**: read every planned study's local count again, write the final report and
//!    end the job (`done`, or `cancelled`, or `failed` when a step could not go on).
//!
//! # Crash safety
//! Every record is written before the step it announces is considered done (see
//! [`crate::store`]); a stopped or crashed job resumes at the first study without an outcome,
//! and a study whose fetch was interrupted is compared before it is fetched again. Fetching is
//! idempotent: an object vna already holds with the same content is acknowledged as a duplicate.

use crate::config::{PullConfig, SourceConfig, SourceKind};
use crate::error::PullError;
use crate::job::{
    CurrentStudy, DateRange, JobHeader, JobId, JobState, JobStatus, PlannedStudy, ProgressEvent, Report, StudyProgress,
    StudyState,
};
use crate::scu::DimseSource;
use crate::store::{JobStore, StoredJob};
use crate::throttle::Throttle;
use crate::web::{SourceAuth, WebSource};
use archive_core::audit::{AuditAction, AuditEvent, AuditObject, AuditOutcome};
use archive_core::catalog::Catalog;
use archive_core::ingest::{IngestErrorKind, IngestInput};
use archive_core::model::Source;
use archive_core::uid::StudyUid;
use archive_core::Archive;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A request to pull studies from a configured source.
#[derive(Debug, Clone)]
pub struct PullRequest {
    /// The `[[pull.sources]]` name.
    pub source: String,
    /// The study dates to pull.
    pub range: DateRange,
    /// Who asks (recorded in the audit trail).
    pub requested_by: String,
    /// From where.
    pub requested_from: String,
}

/// The migration service of a running archive. Cheap to clone.
#[derive(Clone)]
pub struct Pulls {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pulls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pulls").finish_non_exhaustive()
    }
}

struct Inner {
    archive: Archive,
    /// The sources (`[[pull.sources]]`).
    config: PullConfig,
    /// vna's own AE title: the C-MOVE destination of DIMSE pulls.
    own_ae: String,
    store: JobStore,
    jobs: Mutex<BTreeMap<JobId, Arc<Entry>>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
}

/// One job in memory: its data, the cancel signal and its task.
struct Entry {
    data: Mutex<JobData>,
    cancel: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct JobData {
    header: JobHeader,
    /// `None` until planning ends.
    studies: Option<Vec<StudyProgress>>,
    index: HashMap<String, usize>,
    current: Option<CurrentStudy>,
    report: Option<Report>,
}

impl JobData {
    fn status(&self) -> JobStatus {
        JobStatus {
            header: self.header.clone(),
            counters: crate::job::Counters::of(self.studies.as_deref().unwrap_or(&[])),
            current: self.current.clone(),
        }
    }

    fn set_plan(&mut self, plan: Vec<PlannedStudy>) {
        self.index = plan.iter().enumerate().map(|(i, p)| (p.uid.clone(), i)).collect();
        self.studies = Some(plan.into_iter().map(StudyProgress::new).collect());
    }

    fn apply(&mut self, event: &ProgressEvent) {
        if let (Some(&i), Some(studies)) = (self.index.get(&event.study), self.studies.as_mut()) {
            studies[i].apply(event);
        }
    }
}

/// Locks a mutex, taking over the data of a holder that panicked (no panic on runtime paths).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Entry {
    fn new(data: JobData) -> Arc<Entry> {
        let (cancel, _) = watch::channel(false);
        Arc::new(Entry { data: Mutex::new(data), cancel, task: Mutex::new(None) })
    }
    fn header(&self) -> JobHeader {
        lock(&self.data).header.clone()
    }
    fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }
    /// Sleeps until `deadline`; `false` when cancelled meanwhile.
    async fn sleep_until(&self, deadline: Instant) -> bool {
        let mut rx = self.cancel.subscribe();
        if *rx.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => true,
            _ = rx.wait_for(|c| *c) => false,
        }
    }
    fn set_current(&self, current: Option<CurrentStudy>) {
        lock(&self.data).current = current;
    }
    fn add_current(&self, received: u64, bytes: u64) {
        if let Some(c) = lock(&self.data).current.as_mut() {
            c.received += received;
            c.bytes += bytes;
        }
    }
}

/// How a job reaches its source.
enum Remote {
    Dimse(DimseSource),
    Web(WebSource),
}

/// What one fetch delivered.
#[derive(Debug, Default)]
struct Fetched {
    received: u64,
    bytes: u64,
    /// Objects the source sent that vna refused (or sub-operations that failed), with the first reason.
    refused: u64,
    first_refusal: Option<String>,
}

impl Remote {
    fn new(cfg: &SourceConfig, own_ae: &str) -> Result<Remote, PullError> {
        let timeout = Duration::from_secs(cfg.timeout_secs);
        Ok(match cfg.kind {
            SourceKind::Dimse => Remote::Dimse(DimseSource {
                own_ae: own_ae.to_string(),
                ae_title: cfg.ae_title.clone().unwrap_or_default(),
                host: cfg.host.clone().unwrap_or_default(),
                port: cfg.port.unwrap_or(0),
                timeout,
            }),
            SourceKind::Dicomweb => {
                let auth = match (&cfg.username, &cfg.password, &cfg.bearer_token) {
                    (Some(username), Some(password), _) => {
                        Some(SourceAuth::Basic { username: username.clone(), password: password.clone() })
                    }
                    (_, _, Some(token)) => Some(SourceAuth::Bearer(token.clone())),
                    _ => None,
                };
                Remote::Web(WebSource::new(cfg.url.as_deref().unwrap_or(""), timeout, cfg.ca_file.as_deref(), auth)?)
            }
        })
    }

    async fn plan(&self, range: &DateRange) -> Result<Vec<PlannedStudy>, PullError> {
        match self {
            Remote::Dimse(d) => d.find_studies(range).await,
            Remote::Web(w) => w.find_studies(range).await,
        }
    }
}

impl Pulls {
    /// Opens the job store under `data_dir/migrations` and loads every job; nothing runs
    /// until [`Pulls::resume`]. `own_ae` is vna's AE title, where DIMSE sources send
    /// what a C-MOVE pulls.
    pub fn open(archive: Archive, config: PullConfig, own_ae: &str) -> Result<Pulls, PullError> {
        let store = JobStore::new(archive.config().data_dir.join("migrations"));
        let mut jobs = BTreeMap::new();
        let mut max_id = 0;
        for StoredJob { header, plan, events, report } in store.load_all()? {
            max_id = max_id.max(header.id.0);
            let mut data =
                JobData { header: header.clone(), studies: None, index: HashMap::new(), current: None, report };
            if let Some(plan) = plan {
                data.set_plan(plan);
                for e in &events {
                    data.apply(e);
                }
            }
            jobs.insert(header.id, Entry::new(data));
        }
        Ok(Pulls {
            inner: Arc::new(Inner {
                archive,
                config,
                own_ae: own_ae.to_string(),
                store,
                jobs: Mutex::new(jobs),
                next_id: AtomicU64::new(max_id + 1),
                stopping: AtomicBool::new(false),
            }),
        })
    }

    /// Starts the tasks of unfinished jobs (after a stop or a crash); returns how many. Call it
    /// once the DIMSE server listens: a resumed C-MOVE sends the study there.
    pub fn resume(&self) -> usize {
        let entries: Vec<Arc<Entry>> = lock(&self.inner.jobs).values().cloned().collect();
        let mut resumed = 0;
        for entry in entries {
            let unfinished = {
                let mut d = lock(&entry.data);
                let unfinished = !d.header.state.is_finished();
                if unfinished {
                    d.header.resumes += 1;
                }
                unfinished
            };
            if unfinished {
                tracing::info!(job = %entry.header().id, source = %entry.header().source, "migration job resumed");
                spawn(self.inner.clone(), entry);
                resumed += 1;
            }
        }
        resumed
    }

    /// Starts a pull job; refuses an unknown source and a source another job is pulling from.
    pub async fn start(&self, request: PullRequest) -> Result<JobStatus, PullError> {
        let inner = &self.inner;
        if inner.stopping.load(Ordering::SeqCst) {
            return Err(PullError::Stopping);
        }
        let cfg = inner
            .config
            .source(&request.source)
            .cloned()
            .ok_or_else(|| PullError::UnknownSource(request.source.clone()))?;
        let entry = {
            let mut jobs = lock(&inner.jobs);
            for (id, e) in jobs.iter() {
                let d = lock(&e.data);
                if d.header.source == cfg.name && !d.header.state.is_finished() {
                    return Err(PullError::Busy { source_name: cfg.name.clone(), job: *id });
                }
            }
            let id = JobId(inner.next_id.fetch_add(1, Ordering::SeqCst));
            let header =
                JobHeader::new(id, &cfg.name, cfg.kind, request.range, &request.requested_by, &request.requested_from);
            let entry =
                Entry::new(JobData { header, studies: None, index: HashMap::new(), current: None, report: None });
            jobs.insert(id, entry.clone());
            entry
        };
        let header = entry.header();
        if let Err(e) = blocking(inner, move |store| store.save_header(&header)).await {
            lock(&inner.jobs).remove(&entry.header().id);
            return Err(e);
        }
        let header = entry.header();
        tracing::info!(job = %header.id, source = %header.source, since = ?header.since, until = ?header.until, by = %header.requested_by, "migration job started");
        audit(inner, &header, AuditOutcome::Success, format!("job {} started", header.id), Vec::new()).await;
        spawn(inner.clone(), entry.clone());
        let status = lock(&entry.data).status();
        Ok(status)
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> Vec<JobStatus> {
        let jobs = lock(&self.inner.jobs);
        jobs.values().rev().map(|e| lock(&e.data).status()).collect()
    }

    /// One job's progress.
    pub fn job(&self, id: JobId) -> Result<JobStatus, PullError> {
        let entry = self.entry(id)?;
        let status = lock(&entry.data).status();
        Ok(status)
    }

    /// One job's studies with their progress (empty until planning ends).
    pub fn studies(&self, id: JobId) -> Result<Vec<StudyProgress>, PullError> {
        let entry = self.entry(id)?;
        let studies = lock(&entry.data).studies.clone().unwrap_or_default();
        Ok(studies)
    }

    /// The reconciliation report: the final one of an ended job, else a snapshot with the
    /// local counts read now.
    pub async fn report(&self, id: JobId) -> Result<Report, PullError> {
        let entry = self.entry(id)?;
        let (header, studies) = {
            let d = lock(&entry.data);
            if let Some(r) = &d.report {
                return Ok(r.clone());
            }
            (d.header.clone(), d.studies.clone().unwrap_or_default())
        };
        let studies = refresh_local(&self.inner.archive, studies).await?;
        Ok(Report::build(&header, &studies))
    }

    /// Cancels a job: it stops before its next study (the study being fetched finishes).
    pub async fn cancel(&self, id: JobId) -> Result<JobStatus, PullError> {
        let entry = self.entry(id)?;
        if entry.header().state.is_finished() {
            return Err(PullError::Finished(id));
        }
        entry.cancel.send_replace(true);
        let running = lock(&entry.task).as_ref().is_some_and(|t| !t.is_finished());
        if !running {
            finish(&self.inner, &entry, JobState::Cancelled, None).await;
        }
        let status = lock(&entry.data).status();
        Ok(status)
    }

    /// Stops every job task for a shutdown, leaving the jobs to resume at the next start:
    /// each stops before its next study, and after `grace` the rest are aborted (their
    /// interrupted study is compared again on resume).
    pub async fn stop(&self, grace: Duration) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let entries: Vec<Arc<Entry>> = lock(&self.inner.jobs).values().cloned().collect();
        let mut tasks = Vec::new();
        for e in &entries {
            e.cancel.send_replace(true);
            if let Some(t) = lock(&e.task).take() {
                tasks.push(t);
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        for mut t in tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
            }
        }
    }

    fn entry(&self, id: JobId) -> Result<Arc<Entry>, PullError> {
        lock(&self.inner.jobs).get(&id).cloned().ok_or(PullError::NotFound(id))
    }
}

/// Runs a job store operation on a blocking thread (file writes fsync).
async fn blocking<T: Send + 'static>(
    inner: &Inner,
    f: impl FnOnce(&JobStore) -> Result<T, PullError> + Send + 'static,
) -> Result<T, PullError> {
    let store = inner.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| PullError::Store { path: Default::default(), message: format!("writer failed: {e}") })?
}

fn spawn(inner: Arc<Inner>, entry: Arc<Entry>) {
    let task_entry = entry.clone();
    let handle = tokio::spawn(async move {
        let outcome = drive(&inner, &task_entry).await;
        if inner.stopping.load(Ordering::SeqCst) {
            // A shutdown: the job resumes at the next start.
            return;
        }
        match outcome {
            Ok(state) => finish(&inner, &task_entry, state, None).await,
            Err(e) => {
                tracing::error!(job = %task_entry.header().id, error = %e, "migration job failed");
                finish(&inner, &task_entry, JobState::Failed, Some(e.to_string())).await
            }
        }
    });
    *lock(&entry.task) = Some(handle);
}

/// Instances and bytes vna holds of a study.
fn local_counts(archive: &Archive, study: &str) -> Result<(u64, u64), PullError> {
    let Ok(uid) = StudyUid::new(study) else { return Ok((0, 0)) };
    match archive.catalog().study(&uid) {
        Ok(Some(s)) => Ok((s.instance_count, s.size_bytes)),
        Ok(None) => Ok((0, 0)),
        Err(e) => Err(PullError::Archive(e.to_string())),
    }
}

/// The studies with their local counts read now.
async fn refresh_local(archive: &Archive, mut studies: Vec<StudyProgress>) -> Result<Vec<StudyProgress>, PullError> {
    let archive = archive.clone();
    tokio::task::spawn_blocking(move || {
        for s in &mut studies {
            s.local_instances = Some(local_counts(&archive, &s.planned.uid)?.0);
        }
        Ok(studies)
    })
    .await
    .map_err(|e| PullError::Archive(format!("counting failed: {e}")))?
}

async fn record(inner: &Inner, entry: &Entry, event: ProgressEvent) -> Result<(), PullError> {
    let id = entry.header().id;
    let e = event.clone();
    blocking(inner, move |store| store.append(id, &e)).await?;
    lock(&entry.data).apply(&event);
    Ok(())
}

async fn save_header(inner: &Inner, entry: &Entry, change: impl FnOnce(&mut JobHeader)) -> Result<(), PullError> {
    let header = {
        let mut d = lock(&entry.data);
        change(&mut d.header);
        d.header.updated_at = OffsetDateTime::now_utc();
        d.header.clone()
    };
    blocking(inner, move |store| store.save_header(&header)).await
}

/// Runs the job from where it is to its end; the state it ends in.
async fn drive(inner: &Inner, entry: &Entry) -> Result<JobState, PullError> {
    let header = entry.header();
    let cfg =
        inner.config.source(&header.source).cloned().ok_or_else(|| PullError::UnknownSource(header.source.clone()))?;
    let remote = Remote::new(&cfg, &inner.own_ae)?;
    let range = header.range()?;
    // A resumed job's header records the resume.
    save_header(inner, entry, |_| {}).await?;

    if lock(&entry.data).studies.is_none() {
        let mut attempt = 0;
        let plan = loop {
            attempt += 1;
            match remote.plan(&range).await {
                Ok(p) => break p,
                Err(e) if e.is_transient() && attempt < cfg.attempts => {
                    tracing::warn!(job = %header.id, error = %e, attempt, "planning failed; retrying");
                    if !entry.sleep_until(Instant::now() + backoff(attempt)).await {
                        return Ok(JobState::Cancelled);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        // A source that ignores the date key must not widen the job.
        let plan: Vec<PlannedStudy> = plan
            .into_iter()
            .filter(|p| p.study_date.trim().is_empty() || range.contains_dicom(&p.study_date))
            .collect();
        tracing::info!(job = %header.id, studies = plan.len(), "migration planned");
        let saved = plan.clone();
        blocking(inner, move |store| store.save_plan(header.id, &saved)).await?;
        lock(&entry.data).set_plan(plan);
        save_header(inner, entry, |h| h.state = JobState::Running).await?;
    }

    let mut throttle = Throttle::new(cfg.max_studies_per_minute, cfg.max_mb_per_sec);
    let total = lock(&entry.data).studies.as_ref().map_or(0, Vec::len);
    for i in 0..total {
        let Some(study) = lock(&entry.data).studies.as_ref().and_then(|s| s.get(i).cloned()) else { break };
        if matches!(study.state, StudyState::Done | StudyState::Present | StudyState::Failed) {
            continue;
        }
        if entry.is_cancelled() {
            return Ok(JobState::Cancelled);
        }
        let uid = study.planned.uid.clone();
        let remote_count = study.planned.remote_instances;
        let (before, bytes_before) = local_counts(&inner.archive, &uid)?;
        let present = match remote_count {
            Some(r) => before >= r,
            None => before > 0,
        };
        if present {
            let event = ProgressEvent {
                study: uid,
                state: StudyState::Present,
                local_instances: Some(before),
                received: 0,
                bytes: 0,
                error: None,
            };
            record(inner, entry, event).await?;
            continue;
        }
        if let Some(at) = throttle.next_start() {
            if !entry.sleep_until(at).await {
                return Ok(JobState::Cancelled);
            }
        }
        let started = Instant::now();
        entry.set_current(Some(CurrentStudy {
            study: uid.clone(),
            remote_instances: remote_count,
            ..Default::default()
        }));
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let fetching = ProgressEvent {
                study: uid.clone(),
                state: StudyState::Fetching,
                local_instances: None,
                received: 0,
                bytes: 0,
                error: None,
            };
            record(inner, entry, fetching).await?;
            match fetch(inner, entry, &remote, &cfg, &uid).await {
                Err(e) if e.is_transient() && attempt < cfg.attempts => {
                    tracing::warn!(job = %header.id, study = %uid, error = %e, attempt, "fetch failed; retrying");
                    if !entry.sleep_until(Instant::now() + backoff(attempt)).await {
                        break Err(e);
                    }
                }
                other => break other,
            }
        };
        entry.set_current(None);
        if let Err(PullError::Archive(e)) = &result {
            return Err(PullError::Archive(e.clone()));
        }
        let (after, bytes_after) = local_counts(&inner.archive, &uid)?;
        let mut fetched = Fetched::default();
        let mut error = None;
        match result {
            Ok(f) => fetched = f,
            Err(e) => error = Some(e.to_string()),
        }
        if let Remote::Dimse(_) = remote {
            // What the source stored into vna's C-STORE SCP.
            fetched.bytes = bytes_after.saturating_sub(bytes_before);
        }
        let complete = match remote_count {
            Some(r) => after >= r,
            None => after > 0 && error.is_none(),
        };
        if !complete && error.is_none() {
            let refused = match (&fetched.first_refusal, fetched.refused) {
                (Some(why), n) => format!("; {n} objects refused, first: {why}"),
                (None, n) if n > 0 => format!("; {n} sub-operations failed"),
                _ => String::new(),
            };
            error = Some(format!(
                "the source reports {} instances, vna holds {after} after the fetch{refused}",
                remote_count.unwrap_or(0)
            ));
        }
        let event = ProgressEvent {
            study: uid.clone(),
            state: if complete { StudyState::Done } else { StudyState::Failed },
            local_instances: Some(after),
            received: fetched.received,
            bytes: fetched.bytes,
            error,
        };
        if !complete {
            tracing::warn!(job = %header.id, study = %uid, error = ?event.error, "study not migrated completely");
        }
        record(inner, entry, event).await?;
        throttle.record(started, fetched.bytes);
    }
    Ok(JobState::Done)
}

/// Waits 2, 4, 8 … up to 60 seconds between attempts.
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs((1u64 << attempt.min(6)).min(60))
}

async fn fetch(
    inner: &Inner,
    entry: &Entry,
    remote: &Remote,
    cfg: &SourceConfig,
    uid: &str,
) -> Result<Fetched, PullError> {
    match remote {
        Remote::Dimse(d) => {
            let mut seen = 0;
            let outcome = d
                .move_study(uid, |completed| {
                    entry.add_current(completed.saturating_sub(seen), 0);
                    seen = seen.max(completed);
                })
                .await?;
            let received = outcome.completed + outcome.warning;
            entry.add_current(received.saturating_sub(seen), 0);
            Ok(Fetched { received, bytes: 0, refused: outcome.failed, first_refusal: None })
        }
        Remote::Web(w) => {
            let refused = Arc::new(Mutex::new((0u64, None::<String>)));
            let source = Source { actor: cfg.name.clone(), address: w.url().to_string() };
            let (received, bytes) = w
                .fetch_study(uid, |data: Bytes| {
                    let archive = inner.archive.clone();
                    let source = source.clone();
                    let refused = refused.clone();
                    let size = data.len() as u64;
                    entry.add_current(1, size);
                    async move {
                        match archive.ingest().ingest(IngestInput::Part10(data), source).await {
                            Ok(_) => Ok(()),
                            Err(e) => match e.kind() {
                                IngestErrorKind::InvalidObject | IngestErrorKind::Conflict => {
                                    let mut r = lock(&refused);
                                    r.0 += 1;
                                    r.1.get_or_insert_with(|| e.to_string());
                                    Ok(())
                                }
                                IngestErrorKind::OutOfResources | IngestErrorKind::Internal => {
                                    Err(PullError::Archive(e.to_string()))
                                }
                            },
                        }
                    }
                })
                .await?;
            let (n, first) = lock(&refused).clone();
            Ok(Fetched { received, bytes, refused: n, first_refusal: first })
        }
    }
}

/// Ends a job: final local counts, state, report, audit record.
async fn finish(inner: &Inner, entry: &Entry, state: JobState, error: Option<String>) {
    let studies = lock(&entry.data).studies.clone().unwrap_or_default();
    let studies = match refresh_local(&inner.archive, studies.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "final counts unavailable; the report uses the last ones");
            studies
        }
    };
    let now = OffsetDateTime::now_utc();
    let header = {
        let mut d = lock(&entry.data);
        d.header.state = state;
        d.header.finished_at = Some(now);
        d.header.updated_at = now;
        if error.is_some() {
            d.header.last_error = error.clone();
        }
        if d.studies.is_some() {
            d.studies = Some(studies.clone());
        }
        d.current = None;
        d.header.clone()
    };
    let report = Report::build(&header, &studies);
    lock(&entry.data).report = Some(report.clone());
    let (h, r) = (header.clone(), report.clone());
    let saved = blocking(inner, move |store| {
        store.save_report(&r)?;
        store.save_header(&h)
    })
    .await;
    if let Err(e) = saved {
        tracing::error!(job = %header.id, error = %e, "migration job end not recorded; it resumes at the next start");
    }
    tracing::info!(
        job = %header.id,
        state = ?state,
        fetched = report.counters.studies_fetched,
        present = report.counters.studies_present,
        failed = report.counters.studies_failed,
        mismatches = report.mismatches.len(),
        "migration job ended"
    );
    let outcome = match (state, report.reconciled) {
        (JobState::Failed, _) => AuditOutcome::SeriousFailure,
        (JobState::Done, true) => AuditOutcome::Success,
        _ => AuditOutcome::MinorFailure,
    };
    let detail = format!(
        "job {} {:?}: {} studies planned ({} instances), {} fetched, {} already present, {} failed, {} mismatches; {} instances and {} bytes received{}",
        header.id,
        state,
        report.remote.studies,
        report.remote.instances,
        report.counters.studies_fetched,
        report.counters.studies_present,
        report.counters.studies_failed,
        report.mismatches.len(),
        report.counters.instances_received,
        report.counters.bytes_received,
        error.map(|e| format!("; {e}")).unwrap_or_default()
    );
    let objects = studies
        .iter()
        .filter(|s| s.state == StudyState::Done)
        .take(100)
        .map(|s| {
            let patient = StudyUid::new(&s.planned.uid)
                .ok()
                .and_then(|u| inner.archive.catalog().study(&u).ok().flatten())
                .map(|st| format!("{}^^^{}", st.patient.patient_id, st.patient.issuer))
                .unwrap_or_default();
            AuditObject { patient, study: s.planned.uid.clone(), sop_instance: None, checksum: None }
        })
        .collect();
    audit(inner, &header, outcome, detail, objects).await;
}

async fn audit(inner: &Inner, header: &JobHeader, outcome: AuditOutcome, detail: String, objects: Vec<AuditObject>) {
    let range = format!(
        "{} to {}",
        header.since.as_deref().unwrap_or("the beginning"),
        header.until.as_deref().unwrap_or("the end")
    );
    let event = AuditEvent {
        time: OffsetDateTime::now_utc(),
        action: AuditAction::MigrationPull,
        actor: header.requested_by.clone(),
        actor_address: header.requested_from.clone(),
        objects,
        reason: Some(format!("pull from {} ({:?}), study dates {range}", header.source, header.kind)),
        outcome,
        detail: Some(detail),
    };
    if let Err(e) = inner.archive.catalog().append_audit(event).await {
        tracing::error!(job = %header.id, error = %e, "audit record of a migration job could not be written");
    }
}
