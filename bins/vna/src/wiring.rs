//! Builds the archive from the configuration: tiers, then the core.

use crate::config::VnaConfig;
use anyhow::Context;
use archive_core::archive::ArchiveError;
use archive_core::catalog::CatalogError;
use archive_core::ingest::RecoveryReport;
use archive_core::tier::{Tier, TierName};
use archive_core::Archive;
use std::sync::Arc;
use tier_plugins::hot::HotTier;
use tier_plugins::warm::WarmTier;

/// Name of the hot tier.
pub const HOT: &str = "hot";
/// Name of the warm tier.
pub const WARM: &str = "warm";

/// Opens the tiers and the archive, resolving writes a crash interrupted.
pub async fn open_archive(config: VnaConfig) -> anyhow::Result<(Archive, RecoveryReport)> {
    let archive_config = config.archive();
    let hot_name = TierName::new(HOT)?;
    let hot_path = archive_config.hot_path();
    let hot = HotTier::open(hot_name.clone(), hot_path.clone())
        .with_context(|| format!("opening the hot tier at {}", hot_path.display()))?;
    let warm_path = config.warm_path();
    let warm_config = config.warm.to_config().with_context(|| "[warm]")?;
    let warm = WarmTier::open_config(TierName::new(WARM)?, warm_path.clone(), warm_config)
        .with_context(|| format!("opening the warm tier at {}", warm_path.display()))?;
    let mut tiers: Vec<Arc<dyn Tier>> = vec![Arc::new(hot), Arc::new(warm)];
    for (name, spec) in &config.tiers {
        let tier = tier_plugins::registry::build(name, spec, &config.data_dir)
            .await
            .with_context(|| format!("opening tier {name} ({})", spec.kind))?;
        tiers.push(tier);
    }
    Archive::open(archive_config, tiers, hot_name).await.map_err(|e| match e {
        // Said as it is (the catalog's path, "is `vna serve` running?"), RocksDB's report as its cause.
        ArchiveError::Catalog(in_use @ CatalogError::InUse { .. }) => anyhow::Error::new(in_use),
        other => anyhow::Error::new(other),
    })
}
