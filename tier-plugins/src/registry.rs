//! Builds tiers by kind from their `[tiers.NAME]` configuration tables.
//!
//! Each tier kind owns its options and their checks (`WarmOptions`, `S3Options`,
//! `TapeOptions`); [`validate`] runs them at configuration time, without touching a disk or a
//! bucket, and [`build`] opens the tier.

use crate::warm::WarmOptions;
use archive_core::tier::{Tier, TierName};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `[tiers.NAME]`: a tier beyond the built-in hot and warm ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierSpec {
    /// The kind of tier: `warm`, `s3` or `tape`.
    pub kind: String,
    /// The kind's own options, checked by the kind.
    #[serde(flatten)]
    pub options: toml::Table,
}

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

/// Options of a `kind = "tape"` tier (see [`crate::tape::TapeConfig`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TapeOptions {
    /// Root directory (default `data_dir/tiers/NAME`).
    path: Option<PathBuf>,
    /// Volume capacity in MiB.
    #[serde(default = "default_volume_mb")]
    volume_mb: u64,
    /// Simulated time to mount a volume, in milliseconds.
    #[serde(default = "default_mount_ms")]
    mount_ms: u64,
    /// Hours a recalled copy stays readable.
    #[serde(default = "default_staging_hours")]
    staging_hours: u64,
}

fn default_volume_mb() -> u64 {
    crate::tape::DEFAULT_VOLUME_BYTES >> 20
}

fn default_mount_ms() -> u64 {
    crate::tape::DEFAULT_MOUNT_DELAY.as_millis() as u64
}

fn default_staging_hours() -> u64 {
    crate::tape::DEFAULT_STAGING_TTL.as_secs() / 3600
}

/// Parses a kind's options strictly (unknown keys are named, and so are keys of the wrong
/// type: "invalid type: ..., expected a boolean in `dictionaries`").
pub fn options<T: serde::de::DeserializeOwned>(kind: &'static str, spec: &TierSpec) -> Result<T, RegistryError> {
    toml::Value::Table(spec.options.clone()).try_into().map_err(|e: toml::de::Error| RegistryError::Options {
        kind,
        message: e.to_string().split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "),
    })
}

/// A tier's options, parsed and checked by its kind, ready to open.
enum Plan {
    Warm(Option<PathBuf>, crate::warm::WarmConfig),
    S3(crate::s3::S3Options),
    Tape(TapeOptions, u64, std::time::Duration),
}

/// Parses and checks the options of `spec` for its kind (no I/O).
fn plan(spec: &TierSpec) -> Result<Plan, RegistryError> {
    match spec.kind.as_str() {
        "warm" => {
            let o: WarmOptions = options("warm", spec)?;
            let config = o.to_config().map_err(|e| RegistryError::Options { kind: "warm", message: e.to_string() })?;
            Ok(Plan::Warm(o.path, config))
        }
        "s3" => Ok(Plan::S3(options("s3", spec)?)),
        "tape" => {
            let o: TapeOptions = options("tape", spec)?;
            let invalid = |message: &str| RegistryError::Options { kind: "tape", message: message.to_string() };
            if o.volume_mb == 0 {
                return Err(invalid("volume_mb must be at least 1"));
            }
            if o.staging_hours == 0 {
                return Err(invalid("staging_hours must be at least 1"));
            }
            let volume_bytes = o.volume_mb.checked_mul(1 << 20).ok_or_else(|| invalid("volume_mb is too large"))?;
            let staging_secs =
                o.staging_hours.checked_mul(3600).ok_or_else(|| invalid("staging_hours is too large"))?;
            Ok(Plan::Tape(o, volume_bytes, std::time::Duration::from_secs(staging_secs)))
        }
        other => Err(RegistryError::UnknownKind(other.to_string())),
    }
}

/// Checks every `[tiers.NAME]` table at configuration time: valid names, not the built-in
/// `hot` and `warm`, a known kind, and options the kind accepts.
pub fn validate(tiers: &std::collections::BTreeMap<String, TierSpec>) -> Result<(), archive_core::config::ConfigError> {
    use archive_core::config::invalid;
    for (name, spec) in tiers {
        TierName::new(name.clone()).map_err(|e| invalid(&format!("tiers.{name}"), e.to_string()))?;
        if matches!(name.as_str(), "hot" | "warm") {
            return Err(invalid(&format!("tiers.{name}"), "the names hot and warm belong to the built-in tiers"));
        }
        if spec.kind.trim().is_empty() {
            return Err(invalid(&format!("tiers.{name}.kind"), "is required (warm, s3 or tape)"));
        }
        plan(spec).map_err(|e| invalid(&format!("tiers.{name}"), e.to_string()))?;
    }
    Ok(())
}

/// Builds the tier `name` described by `spec`; relative defaults live under `data_dir/tiers/NAME`.
pub async fn build(name: &str, spec: &TierSpec, data_dir: &Path) -> Result<Arc<dyn Tier>, RegistryError> {
    let tier_name = TierName::new(name.to_string())?;
    let default_dir = data_dir.join("tiers").join(name);
    match plan(spec)? {
        Plan::Warm(path, config) => {
            let tier = crate::warm::WarmTier::open_config(tier_name, path.unwrap_or(default_dir), config)
                .map_err(|e| RegistryError::Open(e.to_string()))?;
            Ok(Arc::new(tier))
        }
        Plan::S3(o) => {
            let tier = crate::s3::S3Tier::open(tier_name, o, default_dir)
                .await
                .map_err(|e| RegistryError::Open(e.to_string()))?;
            Ok(Arc::new(tier))
        }
        Plan::Tape(o, volume_bytes, staging_ttl) => {
            let config = crate::tape::TapeConfig {
                root: o.path.unwrap_or(default_dir),
                volume_bytes,
                mount_delay: std::time::Duration::from_millis(o.mount_ms),
                staging_ttl,
            };
            let tier =
                crate::tape::TapeTier::open(tier_name, config).map_err(|e| RegistryError::Open(e.to_string()))?;
            Ok(Arc::new(tier))
        }
    }
}
