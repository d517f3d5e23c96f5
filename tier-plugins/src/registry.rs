//! Builds tiers by kind from their `[tiers.NAME]` configuration tables.

use archive_core::config::TierSpec;
use archive_core::tier::{Tier, TierName};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a tier cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The name is not a valid tier name.
    #[error(transparent)]
    Name(#[from] archive_core::tier::TierNameError),
    /// The kind is not one vna knows.
    #[error("unknown tier kind {0:?}: use warm, s3 or tape")]
    UnknownKind(String),
    /// The options do not fit the kind.
    #[error("invalid options for a {kind} tier: {message}")]
    Options {
        /// The kind.
        kind: &'static str,
        /// What is wrong (names the key).
        message: String,
    },
    /// The tier failed to open.
    #[error("{0}")]
    Open(String),
}

/// Options of a `kind = "warm"` tier.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmOptions {
    path: Option<PathBuf>,
    #[serde(default = "default_segment_mb")]
    segment_mb: u64,
}

fn default_segment_mb() -> u64 {
    1024
}

/// Parses a kind's options strictly (unknown keys are named).
pub fn options<T: serde::de::DeserializeOwned>(kind: &'static str, spec: &TierSpec) -> Result<T, RegistryError> {
    toml::Value::Table(spec.options.clone())
        .try_into()
        .map_err(|e: toml::de::Error| RegistryError::Options { kind, message: e.message().to_string() })
}

/// Builds the tier `name` described by `spec`; relative defaults live under `data_dir/tiers/NAME`.
pub async fn build(name: &str, spec: &TierSpec, data_dir: &Path) -> Result<Arc<dyn Tier>, RegistryError> {
    let tier_name = TierName::new(name.to_string())?;
    let default_dir = data_dir.join("tiers").join(name);
    match spec.kind.as_str() {
        "warm" => {
            let o: WarmOptions = options("warm", spec)?;
            if o.segment_mb == 0 {
                return Err(RegistryError::Options { kind: "warm", message: "segment_mb must be at least 1".into() });
            }
            let path = o.path.unwrap_or(default_dir);
            let tier = crate::warm::WarmTier::open_with(tier_name, path, o.segment_mb << 20)
                .map_err(|e| RegistryError::Open(e.to_string()))?;
            Ok(Arc::new(tier))
        }
        "s3" => {
            let o: crate::s3::S3Options = options("s3", spec)?;
            let tier = crate::s3::S3Tier::open(tier_name, o, default_dir)
                .await
                .map_err(|e| RegistryError::Open(e.to_string()))?;
            Ok(Arc::new(tier))
        }
        other => Err(RegistryError::UnknownKind(other.to_string())),
    }
}
