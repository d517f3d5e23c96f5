//! Integrity scrubbing: re-reads every stored copy at a limited rate and verifies its
//! checksum; a damaged or missing copy is logged, counted and audited.

use super::throttle::Throttle;
use crate::audit::{AuditAction, AuditEvent, AuditObject, AuditOutcome};
use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::model::{InstanceRecord, Location};
use crate::tier::TierSet;
use crate::tier::{GetOpts, TierError};
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Where the scrub stands: the current pass, or the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubStatus {
    /// A pass is running.
    pub running: bool,
    /// When the current or last pass started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When the last pass ended.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Studies in the catalog when the pass started.
    pub studies_total: u64,
    /// Studies checked so far.
    pub studies_checked: u64,
    /// Copies read back and found intact.
    pub copies_ok: u64,
    /// Bytes read back.
    pub bytes_checked: u64,
    /// Copies not read because their tier needs a recall first.
    pub copies_skipped: u64,
    /// Copies damaged, missing or unreadable.
    pub copies_failed: u64,
    /// The last failure found.
    pub last_failure: Option<String>,
}

/// The integrity scrubber; cheap to clone.
#[derive(Clone)]
pub struct Scrubber {
    catalog: Arc<dyn Catalog>,
    tiers: Arc<TierSet>,
    metrics: Metrics,
    throttle: Throttle,
    status: Arc<Mutex<ScrubStatus>>,
    running: Arc<AtomicBool>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrubber")
    }
}

/// Studies listed per catalog read.
const PAGE: usize = 256;

impl Scrubber {
    /// A scrubber reading at most `bytes_per_sec` (0 = unlimited).
    pub fn new(catalog: Arc<dyn Catalog>, tiers: Arc<TierSet>, metrics: Metrics, bytes_per_sec: u64) -> Self {
        Self {
            catalog,
            tiers,
            metrics,
            throttle: Throttle::new(bytes_per_sec),
            status: Arc::default(),
            running: Arc::default(),
        }
    }

    /// The current or last pass.
    pub fn status(&self) -> ScrubStatus {
        self.status.lock().clone()
    }

    /// Starts a pass in the background unless one is running; returns whether it started.
    pub fn start(&self) -> bool {
        if self.running.swap(true, Ordering::SeqCst) {
            return false;
        }
        // The status shows the new pass from now on, so that a caller that polls right after
        // starting it never mistakes the previous pass's result for this one's.
        *self.status.lock() =
            ScrubStatus { running: true, started_at: Some(OffsetDateTime::now_utc()), ..Default::default() };
        let this = self.clone();
        tokio::spawn(async move {
            this.pass().await;
            this.running.store(false, Ordering::SeqCst);
        });
        true
    }

    /// Runs a pass every `interval`, the first one `interval` after the call.
    pub fn schedule(&self, interval: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if !this.start() {
                    tracing::info!("scheduled scrub skipped: a pass is running");
                }
            }
        });
    }

    /// Runs one pass over every copy of every instance, now (the caller must not run two).
    pub async fn pass(&self) -> ScrubStatus {
        let studies_total = self.catalog.stats().map(|s| s.studies).unwrap_or(0);
        *self.status.lock() = ScrubStatus {
            running: true,
            started_at: Some(OffsetDateTime::now_utc()),
            studies_total,
            ..Default::default()
        };
        tracing::info!(studies = studies_total, "integrity scrub started");
        let mut after = None;
        loop {
            let page = match self.catalog.study_uids(after.as_ref(), PAGE) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "scrub cannot list studies; pass ends");
                    break;
                }
            };
            let Some(last) = page.last().cloned() else { break };
            for study in &page {
                let records = match self.catalog.instances_of_study(study) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(study = %study, error = %e, "scrub cannot list instances");
                        continue;
                    }
                };
                let mut verified = Vec::new();
                for record in &records {
                    for loc in &record.locations {
                        if self.check(record, loc).await {
                            verified.push(crate::catalog::VerifiedCopy {
                                sop_instance: record.uid.clone(),
                                checksum: record.checksum,
                                tier: loc.tier.clone(),
                                key: loc.key.clone(),
                            });
                        }
                    }
                }
                if !verified.is_empty() {
                    if let Err(e) = self.catalog.mark_verified(verified, OffsetDateTime::now_utc()).await {
                        tracing::warn!(study = %study, error = %e, "scrub could not record verification times");
                    }
                }
                self.status.lock().studies_checked += 1;
            }
            after = Some(last);
        }
        let mut status = self.status.lock();
        status.running = false;
        status.finished_at = Some(OffsetDateTime::now_utc());
        tracing::info!(
            ok = status.copies_ok,
            failed = status.copies_failed,
            skipped = status.copies_skipped,
            bytes = status.bytes_checked,
            "integrity scrub finished"
        );
        status.clone()
    }

    /// Re-reads one copy; true when its bytes matched the checksum.
    async fn check(&self, record: &InstanceRecord, loc: &Location) -> bool {
        let Some(tier) = self.tiers.get(&loc.tier) else { return false };
        if tier.capabilities().needs_recall {
            self.status.lock().copies_skipped += 1;
            self.metrics.scrub_copies_total.with_label_values(&[loc.tier.as_str(), "skipped"]).inc();
            return false;
        }
        let result = async {
            let got = tier.get(&loc.key, GetOpts::default()).await?;
            if got.meta.checksum != record.checksum {
                return Err(TierError::ChecksumMismatch {
                    key: loc.key.clone(),
                    expected: record.checksum,
                    actual: got.meta.checksum,
                });
            }
            let mut body = self.throttle.limit(got.body);
            let mut n = 0u64;
            while let Some(chunk) = body.next().await {
                n += chunk?.len() as u64;
            }
            Ok(n)
        }
        .await;
        match result {
            Ok(n) => {
                let mut s = self.status.lock();
                s.copies_ok += 1;
                s.bytes_checked += n;
                self.metrics.scrub_copies_total.with_label_values(&[loc.tier.as_str(), "ok"]).inc();
                self.metrics.scrub_bytes_total.inc_by(n);
                true
            }
            Err(e) if e.is_transient() => {
                // Not evidence of damage: counted, logged, checked again next pass.
                tracing::warn!(tier = %loc.tier, key = %loc.key, error = %e, "scrub could not read a copy");
                self.status.lock().copies_skipped += 1;
                self.metrics.scrub_copies_total.with_label_values(&[loc.tier.as_str(), "unreadable"]).inc();
                false
            }
            Err(e) => {
                self.report(record, loc, e).await;
                false
            }
        }
    }

    async fn report(&self, record: &InstanceRecord, loc: &Location, error: TierError) {
        let message = format!("copy of instance {} on tier {} ({}): {error}", record.uid, loc.tier, loc.key);
        tracing::error!(instance = %record.uid, tier = %loc.tier, key = %loc.key, error = %error, "integrity scrub found a bad copy");
        {
            let mut s = self.status.lock();
            s.copies_failed += 1;
            s.last_failure = Some(message.clone());
        }
        self.metrics.scrub_copies_total.with_label_values(&[loc.tier.as_str(), "failed"]).inc();
        let patient = self
            .catalog
            .study(&record.study)
            .ok()
            .flatten()
            .map(|s| format!("{}^^^{}", s.patient.patient_id, s.patient.issuer))
            .unwrap_or_default();
        let event = AuditEvent {
            time: OffsetDateTime::now_utc(),
            action: AuditAction::IntegrityFailure,
            actor: "scrub".into(),
            actor_address: String::new(),
            objects: vec![AuditObject {
                patient,
                study: record.study.to_string(),
                sop_instance: Some(record.uid.to_string()),
                checksum: Some(record.checksum),
            }],
            reason: Some("integrity scrub".into()),
            outcome: AuditOutcome::SeriousFailure,
            detail: Some(message),
        };
        if let Err(e) = self.catalog.append_audit(event).await {
            tracing::error!(error = %e, "auditing an integrity failure failed");
        }
    }
}
