//! The deletion engine: marking, undo, legal holds, and the background purge.

use super::model::{Deletion, DeletionCause, DeletionId, DeletionState, DELETION_RECORD_VERSION};
use crate::attribute::Attribute;
use crate::audit::{AuditAction, AuditEvent, AuditObject, AuditOutcome};
use crate::catalog::{Catalog, CatalogError, PurgeRequest, WriteIntent};
use crate::hold::{HoldId, HoldScope, LegalHold};
use crate::metrics::Metrics;
use crate::model::StudyRecord;
use crate::tier::TierSet;
use crate::tier::{Tier, TierName};
use crate::uid::{SopInstanceUid, StudyUid};
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Most keys handed to one [`Tier::delete_many`](crate::tier::Tier::delete_many) by a purge
/// (the S3 DeleteObjects limit).
pub const DELETE_CHUNK: usize = 1000;

/// The longest grace period a deletion may have (ten years).
pub const MAX_GRACE: Duration = Duration::from_secs(10 * 366 * 86_400);

/// How deletions run.
#[derive(Debug, Clone)]
pub struct DeletionSettings {
    /// Time between marking and hiding/purging (undo is possible until the purge starts).
    pub grace: Duration,
    /// Instances removed per catalog commit.
    pub purge_batch: usize,
    /// Batched tier deletes ([`Tier::delete_many`](crate::tier::Tier::delete_many) calls of up
    /// to [`DELETE_CHUNK`] keys) in flight at once.
    pub delete_concurrency: usize,
}

impl Default for DeletionSettings {
    fn default() -> Self {
        Self { grace: Duration::from_secs(72 * 3600), purge_batch: 500, delete_concurrency: 16 }
    }
}

/// A request to delete a study or some of its instances.
#[derive(Debug, Clone)]
pub struct DeletionRequest {
    /// The study.
    pub study: StudyUid,
    /// Only these instances (`None`: the whole study).
    pub instances: Option<Vec<SopInstanceUid>>,
    /// Who asks.
    pub requested_by: String,
    /// From where.
    pub requested_from: String,
    /// Why, in words (required).
    pub reason: String,
    /// What causes it.
    pub cause: DeletionCause,
    /// Grace period (`None`: the configured one).
    pub grace: Option<Duration>,
    /// Hide at once instead of after the grace period (rejections).
    pub hide_immediately: bool,
}

/// Deletion failures.
#[derive(Debug, thiserror::Error)]
pub enum DeletionError {
    /// The study is not in the archive.
    #[error("study {0} is not in the archive")]
    StudyNotFound(StudyUid),
    /// The study has no such instance.
    #[error("instance {0} is not in the study")]
    InstanceNotFound(SopInstanceUid),
    /// A legal hold covers the study.
    #[error("legal hold {hold} on {scope} blocks the deletion: {reason}")]
    Held {
        /// The hold.
        hold: HoldId,
        /// What it covers.
        scope: String,
        /// Why it was set.
        reason: String,
    },
    /// A deletion of the whole study is already under way.
    #[error("study {study} is already marked for deletion (deletion {id})")]
    AlreadyMarked {
        /// The study.
        study: StudyUid,
        /// The deletion under way.
        id: DeletionId,
    },
    /// No such deletion.
    #[error("deletion {0} not found")]
    NotFound(DeletionId),
    /// The deletion can no longer be undone.
    #[error("deletion {id} is {state:?} and can no longer be undone")]
    NotUndoable {
        /// The deletion.
        id: DeletionId,
        /// Its state.
        state: DeletionState,
    },
    /// No such legal hold.
    #[error("legal hold {0} not found")]
    HoldNotFound(HoldId),
    /// The request is incomplete.
    #[error("{0}")]
    Invalid(String),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

struct Inner {
    catalog: Arc<dyn Catalog>,
    tiers: Arc<TierSet>,
    settings: DeletionSettings,
    metrics: Metrics,
    /// Deletions whose purge is running in this process.
    running: Mutex<HashSet<DeletionId>>,
    /// Serializes id allocation, marking and hold changes (they check each other).
    admin: tokio::sync::Mutex<()>,
    last_id: Mutex<u64>,
    wake: tokio::sync::Notify,
    changed: tokio::sync::watch::Sender<u64>,
    /// Ingest's per-instance locks (a purge deletes a copy only under its instance's lock).
    sop_locks: Arc<crate::ingest::SopLocks>,
    /// Purges already reported as stopped by a hold (audited once, not at every pass).
    held_reported: Mutex<HashSet<DeletionId>>,
}

/// Marks, undoes and purges deletions; keeps legal holds.
#[derive(Clone)]
pub struct Deleter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Deleter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deleter").field("settings", &self.inner.settings).finish()
    }
}

fn patient_label(s: &StudyRecord) -> String {
    format!("{}^^^{}", s.patient.patient_id, s.patient.issuer)
}

fn accession_of(s: &StudyRecord) -> Option<String> {
    s.attrs.get(Attribute::AccessionNumber).map(|a| a.trim().to_string()).filter(|a| !a.is_empty())
}

impl Deleter {
    /// Creates the engine; [`Deleter::schedule`] starts its background purges.
    pub fn new(catalog: Arc<dyn Catalog>, tiers: Arc<TierSet>, settings: DeletionSettings, metrics: Metrics) -> Self {
        let (changed, _) = tokio::sync::watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                catalog,
                tiers,
                settings,
                metrics,
                running: Mutex::default(),
                admin: tokio::sync::Mutex::new(()),
                last_id: Mutex::new(0),
                wake: tokio::sync::Notify::new(),
                changed,
                sop_locks: Arc::default(),
                held_reported: Mutex::default(),
            }),
        }
    }

    /// The per-instance locks ingest takes, to share with it (see [`crate::ingest::Ingest::with_sop_locks`]).
    pub fn sop_locks(&self) -> Arc<crate::ingest::SopLocks> {
        self.inner.sop_locks.clone()
    }

    /// The settings.
    pub fn settings(&self) -> &DeletionSettings {
        &self.inner.settings
    }

    fn next_id(&self) -> u64 {
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 / 1000;
        let mut last = self.inner.last_id.lock();
        *last = (*last + 1).max(now);
        *last
    }

    fn notify_changed(&self) {
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// Marks a study (or instances) for deletion.
    ///
    /// # Behavior
    /// - Refused when a legal hold covers the study (the refusal is audited), when the study or
    ///   an instance is unknown, or when the whole study is already marked.
    /// - Saves the deletion with a `deletion_requested` audit record; the data stays visible
    ///   until the grace period ends.
    pub async fn request(&self, req: DeletionRequest) -> Result<Deletion, DeletionError> {
        if req.reason.trim().is_empty() {
            return Err(DeletionError::Invalid("a deletion needs a reason".into()));
        }
        let _admin = self.inner.admin.lock().await;
        let cat = &self.inner.catalog;
        let study = cat.study(&req.study)?.ok_or_else(|| DeletionError::StudyNotFound(req.study.clone()))?;
        if let Some(list) = &req.instances {
            if list.is_empty() {
                return Err(DeletionError::Invalid("no instances named".into()));
            }
            for sop in list {
                match cat.instance(sop)? {
                    Some(r) if r.study == req.study => {}
                    _ => return Err(DeletionError::InstanceNotFound(sop.clone())),
                }
            }
        }
        let accession = accession_of(&study);
        let holds = cat.holds()?;
        let object = AuditObject {
            patient: patient_label(&study),
            study: study.uid.to_string(),
            sop_instance: None,
            checksum: None,
        };
        if let Some(h) = crate::hold::first_covering(&holds, &study.uid, &study.patient, accession.as_deref()) {
            cat.append_audit(AuditEvent {
                time: OffsetDateTime::now_utc(),
                action: AuditAction::DeletionRefused,
                actor: req.requested_by.clone(),
                actor_address: req.requested_from.clone(),
                objects: vec![object],
                reason: Some(req.reason.clone()),
                outcome: AuditOutcome::MinorFailure,
                detail: Some(format!("{}: legal hold {} on {}", req.cause, h.id, h.scope)),
            })
            .await?;
            self.inner.metrics.deletions_total.with_label_values(&["refused"]).inc();
            return Err(DeletionError::Held { hold: h.id, scope: h.scope.to_string(), reason: h.reason.clone() });
        }
        if req.instances.is_none() {
            if let Some(d) = cat.active_deletions().into_iter().find(|d| d.study == req.study && d.instances.is_none())
            {
                return Err(DeletionError::AlreadyMarked { study: req.study.clone(), id: d.id });
            }
        }
        let now = OffsetDateTime::now_utc();
        let grace = req.grace.unwrap_or(self.inner.settings.grace);
        if grace > MAX_GRACE {
            return Err(DeletionError::Invalid(format!(
                "a grace period of {} days is longer than the {} days allowed",
                grace.as_secs() / 86_400,
                MAX_GRACE.as_secs() / 86_400
            )));
        }
        let d = Deletion {
            v: DELETION_RECORD_VERSION,
            id: DeletionId(self.next_id()),
            study: req.study.clone(),
            instances: req.instances.clone(),
            patient: study.patient.clone(),
            accession,
            requested_by: req.requested_by.clone(),
            requested_from: req.requested_from.clone(),
            reason: req.reason.clone(),
            cause: req.cause.clone(),
            state: DeletionState::Marked,
            marked_at: now,
            hide_at: now + grace,
            hide_immediately: req.hide_immediately,
            covers_received_until: now,
            purge_started_at: None,
            finished_at: None,
            cancelled: None,
            audit_seqs: Vec::new(),
            certificate: Default::default(),
        };
        let action = match req.cause {
            DeletionCause::Rejection { .. } => AuditAction::InstancesRejected,
            _ => AuditAction::DeletionRequested,
        };
        let objects = match &req.instances {
            None => vec![object],
            Some(list) => {
                list.iter().map(|u| AuditObject { sop_instance: Some(u.to_string()), ..object.clone() }).collect()
            }
        };
        let event = AuditEvent {
            time: now,
            action,
            actor: req.requested_by.clone(),
            actor_address: req.requested_from.clone(),
            objects,
            reason: Some(req.reason.clone()),
            outcome: AuditOutcome::Success,
            detail: Some(format!("deletion {} by {}; hidden and purged after {}", d.id, req.cause, d.hide_at)),
        };
        let saved = cat.save_deletion(d, Some(event)).await?;
        self.inner.metrics.deletions_total.with_label_values(&["marked"]).inc();
        tracing::info!(deletion = %saved.id, study = %saved.study, by = %saved.requested_by, cause = %saved.cause, "deletion marked");
        self.notify_changed();
        self.inner.wake.notify_one();
        Ok(saved)
    }

    /// Undoes a marked deletion (until its purge starts).
    pub async fn undo(&self, id: DeletionId, actor: &str, from: &str, reason: &str) -> Result<Deletion, DeletionError> {
        let _admin = self.inner.admin.lock().await;
        // A purge that is about to start takes `running` first; so does undo.
        if self.inner.running.lock().contains(&id) {
            return Err(DeletionError::NotUndoable { id, state: DeletionState::Purging });
        }
        let d = self.inner.catalog.deletion(id)?.ok_or(DeletionError::NotFound(id))?;
        if d.state != DeletionState::Marked {
            return Err(DeletionError::NotUndoable { id, state: d.state });
        }
        self.cancel(d, actor, from, reason).await
    }

    async fn cancel(&self, mut d: Deletion, actor: &str, from: &str, reason: &str) -> Result<Deletion, DeletionError> {
        let now = OffsetDateTime::now_utc();
        d.state = DeletionState::Cancelled;
        d.finished_at = Some(now);
        d.cancelled = Some(format!("{actor}: {reason}"));
        let event = AuditEvent {
            time: now,
            action: AuditAction::DeletionCancelled,
            actor: actor.to_string(),
            actor_address: from.to_string(),
            objects: vec![AuditObject {
                patient: format!("{}^^^{}", d.patient.patient_id, d.patient.issuer),
                study: d.study.to_string(),
                sop_instance: None,
                checksum: None,
            }],
            reason: Some(reason.to_string()),
            outcome: AuditOutcome::Success,
            detail: Some(format!("deletion {} ({}) undone", d.id, d.cause)),
        };
        let saved = self.inner.catalog.save_deletion(d, Some(event)).await?;
        self.inner.metrics.deletions_total.with_label_values(&["cancelled"]).inc();
        self.notify_changed();
        Ok(saved)
    }

    /// The first hold covering a deletion's study, by the identity recorded when it was marked
    /// or by the study's current identity (a patient link may have re-filed it since).
    fn covering_hold<'a>(&self, holds: &'a [LegalHold], d: &Deletion) -> Option<&'a LegalHold> {
        crate::hold::first_covering(holds, &d.study, &d.patient, d.accession.as_deref()).or_else(|| {
            let now = self.inner.catalog.study(&d.study).ok().flatten()?;
            crate::hold::first_covering(holds, &d.study, &now.patient, accession_of(&now).as_deref())
        })
    }

    /// Sets a legal hold; marked deletions it covers are cancelled.
    pub async fn set_hold(
        &self,
        scope: HoldScope,
        reason: &str,
        by: &str,
        from: &str,
    ) -> Result<LegalHold, DeletionError> {
        if reason.trim().is_empty() {
            return Err(DeletionError::Invalid("a legal hold needs a reason".into()));
        }
        let _admin = self.inner.admin.lock().await;
        let now = OffsetDateTime::now_utc();
        let hold = LegalHold {
            v: crate::hold::HOLD_VERSION,
            id: HoldId(self.next_id()),
            scope,
            reason: reason.to_string(),
            set_by: by.to_string(),
            set_at: now,
        };
        let event = AuditEvent {
            time: now,
            action: AuditAction::LegalHoldSet,
            actor: by.to_string(),
            actor_address: from.to_string(),
            objects: self.hold_objects(&hold.scope),
            reason: Some(reason.to_string()),
            outcome: AuditOutcome::Success,
            detail: Some(format!("legal hold {} on {}", hold.id, hold.scope)),
        };
        self.inner.catalog.put_hold(hold.id, Some(hold.clone()), event).await?;
        for d in self.inner.catalog.active_deletions() {
            let running = self.inner.running.lock().contains(&d.id);
            if d.state == DeletionState::Marked
                && !running
                && self.covering_hold(std::slice::from_ref(&hold), &d).is_some()
            {
                self.cancel(d, by, from, &format!("legal hold {} set: {reason}", hold.id)).await?;
            }
        }
        self.notify_changed();
        Ok(hold)
    }

    fn hold_objects(&self, scope: &HoldScope) -> Vec<AuditObject> {
        let (patient, study) = match scope {
            HoldScope::Patient { patient } => (format!("{}^^^{}", patient.patient_id, patient.issuer), String::new()),
            HoldScope::Study { study } => {
                let p = self.inner.catalog.study(study).ok().flatten().map(|s| patient_label(&s)).unwrap_or_default();
                (p, study.to_string())
            }
            HoldScope::Accession { .. } => (String::new(), String::new()),
        };
        vec![AuditObject { patient, study, sop_instance: None, checksum: None }]
    }

    /// Releases a legal hold.
    pub async fn release_hold(
        &self,
        id: HoldId,
        by: &str,
        from: &str,
        reason: &str,
    ) -> Result<LegalHold, DeletionError> {
        if reason.trim().is_empty() {
            return Err(DeletionError::Invalid("releasing a legal hold needs a reason".into()));
        }
        let _admin = self.inner.admin.lock().await;
        let hold =
            self.inner.catalog.holds()?.into_iter().find(|h| h.id == id).ok_or(DeletionError::HoldNotFound(id))?;
        let event = AuditEvent {
            time: OffsetDateTime::now_utc(),
            action: AuditAction::LegalHoldReleased,
            actor: by.to_string(),
            actor_address: from.to_string(),
            objects: self.hold_objects(&hold.scope),
            reason: Some(reason.to_string()),
            outcome: AuditOutcome::Success,
            detail: Some(format!(
                "legal hold {} on {} (set by {} at {}) released",
                hold.id, hold.scope, hold.set_by, hold.set_at
            )),
        };
        self.inner.catalog.put_hold(id, None, event).await?;
        self.notify_changed();
        Ok(hold)
    }

    /// Legal holds standing.
    pub fn holds(&self) -> Result<Vec<LegalHold>, DeletionError> {
        Ok(self.inner.catalog.holds()?)
    }

    /// Every deletion, oldest first.
    pub fn deletions(&self) -> Result<Vec<Deletion>, DeletionError> {
        Ok(self.inner.catalog.deletions()?)
    }

    /// One deletion.
    pub fn deletion(&self, id: DeletionId) -> Result<Deletion, DeletionError> {
        self.inner.catalog.deletion(id)?.ok_or(DeletionError::NotFound(id))
    }

    /// Waits until a deletion is purged or cancelled (or `timeout`), returning its last state.
    pub async fn wait(&self, id: DeletionId, timeout: Duration) -> Result<Deletion, DeletionError> {
        let mut rx = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let d = self.deletion(id)?;
            if matches!(d.state, DeletionState::Purged | DeletionState::Cancelled) {
                return Ok(d);
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Ok(d);
            }
        }
    }

    /// Starts the purge of every deletion that is due (grace over) or was purging when the
    /// process stopped; returns how many started.
    pub fn run_due(&self) -> Result<usize, DeletionError> {
        let now = OffsetDateTime::now_utc();
        let mut started = 0;
        for d in self.inner.catalog.active_deletions() {
            let due = match d.state {
                DeletionState::Marked => now >= d.hide_at,
                DeletionState::Purging => true,
                _ => false,
            };
            if !due || !self.inner.running.lock().insert(d.id) {
                continue;
            }
            started += 1;
            let this = self.clone();
            tokio::spawn(async move {
                let id = d.id;
                if let Err(e) = this.purge(d).await {
                    tracing::error!(deletion = %id, error = %e, "purge stopped; it resumes on the next pass");
                }
                this.inner.running.lock().remove(&id);
                this.notify_changed();
            });
        }
        Ok(started)
    }

    /// Runs [`Deleter::run_due`] every `every` and whenever a deletion is marked.
    pub fn schedule(&self, every: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.run_due() {
                    tracing::error!(error = %e, "deletion pass failed");
                }
                // A marked deletion with a short grace wakes the loop; otherwise poll.
                let next = this.next_due().map_or(every, |d| d.min(every));
                tokio::select! {
                    _ = tokio::time::sleep(next) => {}
                    _ = this.inner.wake.notified() => {}
                }
            }
        });
    }

    fn next_due(&self) -> Option<Duration> {
        let now = OffsetDateTime::now_utc();
        let deletions = self.inner.catalog.active_deletions();
        deletions
            .iter()
            .filter(|d| d.state == DeletionState::Marked)
            .map(|d| {
                let secs = (d.hide_at - now).as_seconds_f64().max(0.0);
                Duration::from_secs_f64(secs) + Duration::from_millis(50)
            })
            .min()
    }

    async fn purge(&self, d: Deletion) -> Result<(), DeletionError> {
        let cat = self.inner.catalog.clone();
        // The whole record (the in-memory list of active deletions carries no certificate).
        let mut d = cat.deletion(d.id)?.ok_or(DeletionError::NotFound(d.id))?;
        if d.state == DeletionState::Marked {
            let _admin = self.inner.admin.lock().await;
            // Re-read: an undo may have won the race.
            d = cat.deletion(d.id)?.ok_or(DeletionError::NotFound(d.id))?;
            if d.state != DeletionState::Marked {
                return Ok(());
            }
            let holds = cat.holds()?;
            if let Some(h) = self.covering_hold(&holds, &d) {
                let reason = format!("legal hold {} on {}: {}", h.id, h.scope, h.reason);
                self.cancel(d, "policy", "", &reason).await?;
                return Ok(());
            }
            d.state = DeletionState::Purging;
            d.purge_started_at = Some(OffsetDateTime::now_utc());
            d = cat.save_deletion(d, None).await?;
            self.notify_changed();
        }
        tracing::info!(deletion = %d.id, study = %d.study, "purge started");
        loop {
            let batch: Vec<SopInstanceUid> = cat
                .instances_of_study(&d.study)?
                .into_iter()
                .filter(|r| d.covers_instance(r.uid.as_str()) && r.received_at <= d.covers_received_until)
                .take(self.inner.settings.purge_batch.max(1))
                .map(|r| r.uid)
                .collect();
            if batch.is_empty() {
                break;
            }
            // A hold set while the purge runs stops it before the next batch; the rest of the
            // study stays (hidden) until the hold is released and the purge resumes.
            let holds = cat.holds()?;
            if let Some(h) = self.covering_hold(&holds, &d) {
                if self.inner.held_reported.lock().insert(d.id) {
                    let event = AuditEvent {
                        time: OffsetDateTime::now_utc(),
                        action: AuditAction::DeletionRefused,
                        actor: d.requested_by.clone(),
                        actor_address: d.requested_from.clone(),
                        objects: vec![AuditObject {
                            patient: format!("{}^^^{}", d.patient.patient_id, d.patient.issuer),
                            study: d.study.to_string(),
                            sop_instance: None,
                            checksum: None,
                        }],
                        reason: Some(d.reason.clone()),
                        outcome: AuditOutcome::MinorFailure,
                        detail: Some(format!(
                            "purge of deletion {} stopped by legal hold {} on {} after {} instances",
                            d.id,
                            h.id,
                            h.scope,
                            d.certificate.instances.len()
                        )),
                    };
                    cat.append_audit(event).await?;
                }
                tracing::warn!(deletion = %d.id, hold = %h.id, "purge stopped by a legal hold");
                return Ok(());
            }
            self.inner.held_reported.lock().remove(&d.id);
            let (saved, removed) = cat
                .purge(PurgeRequest {
                    deletion: d.id,
                    instances: batch,
                    actor: d.requested_by.clone(),
                    address: d.requested_from.clone(),
                    reason: d.reason.clone(),
                })
                .await?;
            d = saved;
            if removed.is_empty() {
                break;
            }
            self.inner.metrics.purged_instances_total.inc_by(removed.len() as u64);
            self.inner.metrics.purged_bytes_total.inc_by(removed.iter().map(|r| r.size).sum());
            let deferred = self.delete_copies(&removed).await;
            if deferred > 0 {
                d.certificate.deferred_object_deletes += deferred;
                d = cat.save_deletion(d, None).await?;
            }
        }
        let now = OffsetDateTime::now_utc();
        d.state = DeletionState::Purged;
        d.finished_at = Some(now);
        let cert = &d.certificate;
        let detail = format!(
            "deletion {} by {} complete: {} instances, {} bytes, copies per tier {:?}; certificate digest {}",
            d.id,
            d.cause,
            cert.instances.len(),
            cert.total_bytes,
            cert.copies_per_tier,
            crate::checksum::Checksum::of(&serde_json::to_vec(cert).unwrap_or_default()),
        );
        let event = AuditEvent {
            time: now,
            action: AuditAction::DeletionCompleted,
            actor: d.requested_by.clone(),
            actor_address: d.requested_from.clone(),
            objects: vec![AuditObject {
                patient: format!("{}^^^{}", d.patient.patient_id, d.patient.issuer),
                study: d.study.to_string(),
                sop_instance: None,
                checksum: None,
            }],
            reason: Some(d.reason.clone()),
            outcome: AuditOutcome::Success,
            detail: Some(detail),
        };
        let d = cat.save_deletion(d, Some(event)).await?;
        self.inner.metrics.deletions_total.with_label_values(&["purged"]).inc();
        tracing::info!(deletion = %d.id, study = %d.study, instances = d.certificate.instances.len(), "purge complete");
        Ok(())
    }

    /// Deletes the copies of removed instances and clears their intents; returns how many
    /// failed (their intents stay for recovery).
    ///
    /// The copies are grouped by tier and deleted with one [`Tier::delete_many`] per chunk of
    /// [`DELETE_CHUNK`] keys (an S3 tier then rewrites or deletes each bundle once), up to
    /// `delete_concurrency` chunks at once. A chunk whose delete fails keeps all its intents.
    ///
    /// [`Tier::delete_many`]: crate::tier::Tier::delete_many
    async fn delete_copies(&self, removed: &[crate::model::InstanceRecord]) -> u64 {
        let mut by_tier: BTreeMap<TierName, Vec<WriteIntent>> = BTreeMap::new();
        for r in removed {
            for l in &r.locations {
                by_tier.entry(l.tier.clone()).or_default().push(WriteIntent {
                    tier: l.tier.clone(),
                    key: l.key.clone(),
                    sop_instance: r.uid.clone(),
                });
            }
        }
        let mut deferred = 0u64;
        let mut chunks = Vec::new();
        for (name, intents) in by_tier {
            let Some(tier) = self.inner.tiers.get(&name) else {
                tracing::warn!(tier = %name, copies = intents.len(), "copies on an unconfigured tier left for recovery");
                deferred += intents.len() as u64;
                continue;
            };
            for chunk in intents.chunks(DELETE_CHUNK) {
                chunks.push(self.delete_chunk(tier.clone(), chunk.to_vec()));
            }
        }
        let failed: u64 = futures::stream::iter(chunks)
            .buffer_unordered(self.inner.settings.delete_concurrency.max(1))
            .collect::<Vec<u64>>()
            .await
            .into_iter()
            .sum();
        deferred + failed
    }

    /// Deletes copies on one tier with one `delete_many` and clears their intents; returns
    /// how many are left for recovery.
    async fn delete_chunk(&self, tier: Arc<dyn Tier>, intents: Vec<WriteIntent>) -> u64 {
        // The same instance may have arrived again since its record was removed: ingest would
        // find this very object (its key is made of the UIDs and the checksum) and name it in a
        // new record. Under each instance's ingest lock, a copy a record names again is kept.
        let locks = self.inner.sop_locks.clone();
        let mut sops: Vec<&crate::uid::SopInstanceUid> = intents.iter().map(|i| &i.sop_instance).collect();
        sops.sort();
        sops.dedup();
        let mut guards = Vec::with_capacity(sops.len());
        for sop in sops {
            guards.push(locks.lock(sop).await);
        }
        let mut intents_to_delete = Vec::with_capacity(intents.len());
        for i in intents {
            let named_again = match self.inner.catalog.instance(&i.sop_instance) {
                Ok(Some(rec)) => rec.locations.iter().any(|l| l.tier == i.tier && l.key == i.key),
                Ok(None) => false,
                // Unsure: keep the copy and its intent for recovery, which checks again.
                Err(_) => true,
            };
            if named_again {
                tracing::info!(sop_instance = %i.sop_instance, key = %i.key, "copy named again by a new arrival; kept");
                let _ = self.inner.catalog.end_write(&i);
            } else {
                intents_to_delete.push(i);
            }
        }
        let intents = intents_to_delete;
        if intents.is_empty() {
            return 0;
        }
        let keys = intents.iter().map(|i| i.key.clone()).collect();
        let result = tier.delete_many(keys).await;
        drop(guards);
        match result {
            Ok(()) => intents.iter().filter(|i| self.inner.catalog.end_write(i).is_err()).count() as u64,
            Err(e) => {
                tracing::warn!(tier = %tier.name(), copies = intents.len(), error = %e,
                    "copy deletes failed; recovery retries them");
                intents.len() as u64
            }
        }
    }
}
