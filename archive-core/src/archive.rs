//! The archive: catalog, tiers, ingest, query and retrieve wired together once,
//! shared by every door (DIMSE, DICOMweb, CLI).

use crate::catalog::rocks::{RocksCatalog, RocksCatalogOptions};
use crate::catalog::{Catalog, CatalogError};
use crate::config::VnaConfig;
use crate::disk::DiskGuard;
use crate::ingest::{Ingest, IngestError, RecoveryReport};
use crate::matching::MatchOptions;
use crate::metrics::Metrics;
use crate::query::{Query, QueryPage};
use crate::retrieve::Retrieve;
use crate::tier::{Tier, TierName};
use crate::tiers::{TierSet, TierSetError};
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
    /// Recovery of interrupted writes failed.
    #[error("recovery of interrupted writes failed: {0}")]
    Recovery(#[from] IngestError),
}

/// Everything a door needs.
#[derive(Clone)]
pub struct Archive {
    config: Arc<VnaConfig>,
    catalog: Arc<RocksCatalog>,
    tiers: Arc<TierSet>,
    ingest: Ingest,
    retrieve: Retrieve,
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
        config: VnaConfig,
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
        let ingest = Ingest::new(dyn_catalog.clone(), tiers.clone(), disk, config.ingest.on_conflict, metrics.clone());
        let retrieve = Retrieve::new(dyn_catalog, tiers.clone(), metrics.clone());
        let report = ingest.recover().await?;
        let archive = Archive { config: Arc::new(config), catalog, tiers, ingest, retrieve, metrics };
        Ok((archive, report))
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &VnaConfig {
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
    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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

    /// Waits for pending commits and syncs the catalog (graceful shutdown).
    pub async fn close(&self) -> Result<(), CatalogError> {
        self.catalog.close().await
    }
}
