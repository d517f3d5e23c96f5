//! The archive: catalog, tiers, ingest, query and retrieve wired together once,
//! shared by every door (DIMSE, DICOMweb, CLI).

use crate::catalog::rocks::{RocksCatalog, RocksCatalogOptions};
use crate::catalog::{Catalog, CatalogError};
use crate::config::ArchiveConfig;
use crate::disk::DiskGuard;
use crate::ingest::{Ingest, IngestError, RecoveryReport};
use crate::lifecycle::scrub::Scrubber;
use crate::lifecycle::{Lifecycle, LifecycleError, LifecycleSettings};
use crate::matching::MatchOptions;
use crate::metrics::Metrics;
use crate::model::InstanceRecord;
use crate::query::{Query, QueryPage, QueryRow};
use crate::retrieve::Retrieve;
use crate::tier::effective_availability;
use crate::tier::Availability;
use crate::tier::{Tier, TierName};
use crate::tier::{TierSet, TierSetError};
use crate::uid::StudyUid;
use std::sync::Arc;
use std::time::Instant;

/// Failures opening the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A data directory cannot be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The catalog cannot be opened.
    #[error("cannot open the catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// The tiers do not form a working set.
    #[error(transparent)]
    Tiers(#[from] TierSetError),
    /// The lifecycle engine cannot start.
    #[error("lifecycle: {0}")]
    Lifecycle(#[from] LifecycleError),
    /// Recovery of interrupted writes failed.
    #[error("recovery of interrupted writes failed: {0}")]
    Recovery(#[from] IngestError),
    /// A source profile is invalid.
    #[error(transparent)]
    Profiles(#[from] crate::coerce::CoercionError),
}

/// Whether the instances a retrieve names can be read now ([`Archive::recall_offline`]).
#[derive(Debug)]
pub enum Readiness {
    /// Every instance has an online copy: the records as they are now (an instance a
    /// deletion hid meanwhile is left out).
    Online(Vec<crate::model::InstanceRecord>),
    /// A recall from an offline tier still runs: the job to wait for.
    Recalling(crate::lifecycle::JobId),
}

/// Everything a door needs.
#[derive(Clone)]
pub struct Archive {
    config: Arc<ArchiveConfig>,
    catalog: Arc<RocksCatalog>,
    tiers: Arc<TierSet>,
    ingest: Ingest,
    retrieve: Retrieve,
    lifecycle: Lifecycle,
    scrubber: Scrubber,
    deleter: crate::deletion::Deleter,
    metrics: Metrics,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("data_dir", &self.config.data_dir).finish_non_exhaustive()
    }
}

impl Archive {
    /// Opens the catalog, takes the tiers the binary built, and resolves interrupted writes.
    pub async fn open(
        config: ArchiveConfig,
        tiers: Vec<Arc<dyn Tier>>,
        ingest_tier: TierName,
    ) -> Result<(Archive, RecoveryReport), ArchiveError> {
        let catalog_path = config.catalog_path();
        std::fs::create_dir_all(&catalog_path)
            .map_err(|source| ArchiveError::DataDir { path: catalog_path.clone(), source })?;
        let catalog = Arc::new(RocksCatalog::open(&catalog_path, RocksCatalogOptions::default())?);
        let tiers = Arc::new(TierSet::new(tiers, ingest_tier)?);
        let metrics = Metrics::new();
        let disk = DiskGuard::new()
            .with_floor(&catalog_path, config.catalog.min_free_mb)
            .with_floor(config.hot_path(), config.hot.min_free_mb);
        let dyn_catalog: Arc<dyn Catalog> = catalog.clone();
        let r = &config.retention;
        let deleter = crate::deletion::Deleter::new(
            dyn_catalog.clone(),
            tiers.clone(),
            crate::deletion::DeletionSettings {
                grace: std::time::Duration::from_secs(r.grace_minutes.saturating_mul(60)),
                purge_batch: r.purge_batch,
                delete_concurrency: r.delete_concurrency,
            },
            metrics.clone(),
        );
        let ingest = Ingest::new(dyn_catalog.clone(), tiers.clone(), disk, config.ingest.on_conflict, metrics.clone())
            .with_rejections(deleter.clone(), config.retention.rejection_notes_from.clone())
            .with_sop_locks(deleter.sop_locks())
            .with_profiles(crate::coerce::SourceProfiles::compile(&config.sources)?);
        let retrieve = Retrieve::new(dyn_catalog.clone(), tiers.clone(), metrics.clone());
        let settings = LifecycleSettings::from_config(&config.lifecycle)?;
        if tiers.get(&settings.recall_tier).is_none() {
            return Err(ArchiveError::Lifecycle(LifecycleError::UnknownTier(settings.recall_tier.to_string())));
        }
        let lifecycle = Lifecycle::new(dyn_catalog.clone(), tiers.clone(), settings, metrics.clone());
        let scrubber = Scrubber::new(
            dyn_catalog,
            tiers.clone(),
            metrics.clone(),
            config.lifecycle.scrub_mb_per_sec.saturating_mul(1 << 20),
        );
        // Interrupted writes and moves are resolved before any job resumes.
        let report = ingest.recover().await?;
        let archive = Archive {
            config: Arc::new(config),
            catalog,
            tiers,
            ingest,
            retrieve,
            lifecycle,
            scrubber,
            deleter,
            metrics,
        };
        Ok((archive, report))
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &ArchiveConfig {
        &self.config
    }
    /// The catalog.
    pub fn catalog(&self) -> &RocksCatalog {
        &self.catalog
    }
    /// The tiers.
    pub fn tiers(&self) -> &TierSet {
        &self.tiers
    }
    /// The ingest service.
    pub fn ingest(&self) -> &Ingest {
        &self.ingest
    }
    /// The retrieve service.
    pub fn retrieve(&self) -> &Retrieve {
        &self.retrieve
    }
    /// The lifecycle engine (migrations, recalls).
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }
    /// The deletion engine (marking, undo, legal holds, purges).
    pub fn deleter(&self) -> &crate::deletion::Deleter {
        &self.deleter
    }
    /// The integrity scrubber.
    pub fn scrubber(&self) -> &Scrubber {
        &self.scrubber
    }
    /// Starts the background work of a running server: resumes interrupted lifecycle jobs
    /// and schedules the integrity scrub. Admin commands that open the archive briefly skip it.
    pub fn start_background(&self) -> Result<(), LifecycleError> {
        let resumed = self.lifecycle.resume()?;
        if resumed > 0 {
            tracing::info!(jobs = resumed, "lifecycle jobs resumed");
        }
        let c = &self.config.lifecycle;
        if c.scrub_mb_per_sec > 0 {
            self.scrubber.schedule(std::time::Duration::from_secs(c.scrub_interval_hours * 3600));
        }
        // Purges interrupted by a stop resume now; marked deletions purge when their grace ends.
        self.deleter.schedule(std::time::Duration::from_secs(60));
        if let Some(address) = &self.config.audit.syslog {
            let target = crate::audit_syslog::SyslogTarget {
                address: address.clone(),
                source_id: self.config.audit.source_id.clone(),
                state_file: self.config.data_dir.join("audit-forwarded-seq"),
            };
            let every = std::time::Duration::from_secs(self.config.audit.forward_interval_secs.max(1));
            crate::audit_syslog::start(self.catalog.clone(), target, every);
            tracing::info!(to = %address, "audit records forwarded over syslog");
        }
        Ok(())
    }
    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Appends an audit record for an answered query (C-FIND, QIDO-RS): the level, the keys that
    /// constrained it, and the studies it returned. Runs in the background; never fails the query.
    pub fn audit_query(&self, actor: &str, address: &str, query: &Query, rows: &[QueryRow]) {
        let keys: Vec<String> =
            query.keys.iter().filter(|k| k.matcher.is_constraining()).map(|k| format!("{:?}", k.attribute)).collect();
        let mut objects: Vec<crate::audit::AuditObject> = Vec::new();
        for row in rows {
            let (study, patient) = match (&row.study, &row.patient) {
                (Some(s), _) => (s.uid.to_string(), format!("{}^^^{}", s.patient.patient_id, s.patient.issuer)),
                (None, Some(p)) => (String::new(), format!("{}^^^{}", p.key.patient_id, p.key.issuer)),
                _ => continue,
            };
            if objects.len() < 100 && !objects.iter().any(|o| o.study == study && o.patient == patient) {
                objects.push(crate::audit::AuditObject { patient, study, sop_instance: None, checksum: None });
            }
        }
        let detail = format!("{} query on {}: {} rows", query.level.as_dicom(), keys.join(","), rows.len());
        self.spawn_audit(crate::audit::AuditAction::Query, actor, address, objects, detail);
    }

    /// Appends an audit record for instances sent to a client (WADO, C-MOVE, C-GET): one object
    /// per study with its patient, and the instance count and bytes in the detail. Background.
    pub fn audit_retrieve(&self, actor: &str, address: &str, records: &[InstanceRecord], how: &str) {
        let mut per_study: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        for r in records {
            let e = per_study.entry(r.study.to_string()).or_default();
            e.0 += 1;
            e.1 += r.size;
        }
        let objects = per_study
            .keys()
            .map(|study| {
                let patient = StudyUid::new(study)
                    .ok()
                    .and_then(|u| self.catalog.study(&u).ok().flatten())
                    .map(|s| format!("{}^^^{}", s.patient.patient_id, s.patient.issuer))
                    .unwrap_or_default();
                crate::audit::AuditObject { patient, study: study.clone(), sop_instance: None, checksum: None }
            })
            .collect();
        let detail =
            per_study.iter().map(|(s, (n, b))| format!("{s}: {n} instances, {b} bytes")).collect::<Vec<_>>().join("; ");
        self.spawn_audit(
            crate::audit::AuditAction::InstancesRetrieved,
            actor,
            address,
            objects,
            format!("{how}: {detail}"),
        );
    }

    fn spawn_audit(
        &self,
        action: crate::audit::AuditAction,
        actor: &str,
        address: &str,
        objects: Vec<crate::audit::AuditObject>,
        detail: String,
    ) {
        let event = crate::audit::AuditEvent {
            time: time::OffsetDateTime::now_utc(),
            action,
            actor: actor.to_string(),
            actor_address: address.to_string(),
            objects,
            reason: None,
            outcome: crate::audit::AuditOutcome::Success,
            detail: Some(detail),
        };
        let catalog = self.catalog.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        rt.spawn(async move {
            if let Err(e) = catalog.append_audit(event).await {
                tracing::error!(error = %e, "audit record of an access could not be written");
            }
        });
    }

    /// The matching options from config.
    pub fn match_options(&self) -> MatchOptions {
        MatchOptions { case_insensitive_pn: self.config.query.case_insensitive_pn }
    }

    /// Runs a query with the configured matching options, capping the page at `query.max_results`.
    /// Blocking: call from a blocking thread on an async runtime for broad queries.
    pub fn query(&self, query: &Query) -> Result<QueryPage, CatalogError> {
        let started = Instant::now();
        let mut q = query.clone();
        let cap = self.config.query.max_results;
        q.limit = Some(q.limit.map_or(cap, |l| l.min(cap)));
        let level = q.level.as_dicom();
        let page = self.catalog.query(&q, self.match_options());
        self.metrics.query_total.with_label_values(&[level]).inc();
        self.metrics.query_seconds.with_label_values(&[level]).observe(started.elapsed().as_secs_f64());
        page
    }

    /// The Instance Availability (0008,0056) of a query row: its instance's best copy, or for
    /// studies and series the least available of their instances.
    pub fn availability_of_row(&self, row: &QueryRow) -> Availability {
        if let Some(inst) = &row.instance {
            return self.retrieve.availability(inst);
        }
        let placement = match (&row.series, &row.study) {
            (Some(series), _) => Some(&series.placement),
            (None, Some(study)) => Some(&study.placement),
            _ => None,
        };
        placement
            .and_then(|p| self.tiers.availability_of(p))
            // Records from before placements were kept: assume the least available tier.
            .unwrap_or_else(|| {
                self.tiers.iter().map(|t| effective_availability(t.as_ref())).max().unwrap_or(Availability::Online)
            })
    }

    /// Makes sure every record has an online copy, recalling the studies that lack one (waiting
    /// up to `wait`): [`Readiness::Online`] with the records as they are now, or
    /// [`Readiness::Recalling`] while a recall still runs; `Err` when a recall cannot start.
    pub async fn recall_offline(
        &self,
        records: Vec<crate::model::InstanceRecord>,
        wait: std::time::Duration,
    ) -> Result<Readiness, LifecycleError> {
        use crate::lifecycle::copy::is_online;
        let offline: std::collections::BTreeSet<_> = records
            .iter()
            .filter(|r| !r.locations.iter().any(|l| is_online(&self.tiers, l)))
            .map(|r| r.study.clone())
            .collect();
        if offline.is_empty() {
            return Ok(Readiness::Online(records));
        }
        for study in &offline {
            if let crate::lifecycle::OnlineState::Pending(job) = self.lifecycle.ensure_online(study, wait).await? {
                return Ok(Readiness::Recalling(job));
            }
        }
        // The recalls added copies: read the records again (through the read view: an
        // instance a deletion hid while the recall ran is not sent).
        let view = self.retrieve.visible();
        let mut fresh = Vec::with_capacity(records.len());
        for r in records {
            if let Some(now) = view.instance(&r.uid)? {
                fresh.push(now);
            }
        }
        Ok(Readiness::Online(fresh))
    }

    /// Waits for pending commits and syncs the catalog (graceful shutdown).
    pub async fn close(&self) -> Result<(), CatalogError> {
        self.catalog.close().await
    }
}
