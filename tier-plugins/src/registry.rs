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

/// Options of a `kind = "warm"` tier (see [`crate::warm::WarmConfig`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WarmOptions {
    /// Root directory (default `data_dir/tiers/NAME`).
    path: Option<PathBuf>,
    /// Segment size in MiB.
    #[serde(default = "default_segment_mb")]
    segment_mb: u64,
    /// zstd level of new objects, 1..=19.
    #[serde(default = "default_zstd_level")]
    zstd_level: i32,
    /// Live ratio under which a segment is compacted, 0.0..=1.0.
    #[serde(default = "default_compact_below")]
    compact_below: f64,
    /// Seconds between background compactions; 0 disables them.
    #[serde(default = "default_compact_interval_secs")]
    compact_interval_secs: u64,
    /// Compress with a zstd dictionary trained per content class (modality).
    #[serde(default)]
    dictionaries: bool,
    /// Objects of a class sampled before its dictionary is trained.
    #[serde(default = "default_dictionary_samples")]
    dictionary_samples: usize,
    /// Largest size of a trained dictionary, KiB.
    #[serde(default = "default_dictionary_kb")]
    dictionary_kb: usize,
}

fn default_segment_mb() -> u64 {
    1024
}

fn default_zstd_level() -> i32 {
    crate::warm::DEFAULT_ZSTD_LEVEL
}

fn default_compact_below() -> f64 {
    crate::warm::DEFAULT_COMPACT_BELOW
}

fn default_compact_interval_secs() -> u64 {
    crate::warm::DEFAULT_COMPACT_INTERVAL.as_secs()
}

fn default_dictionary_samples() -> usize {
    crate::warm::DEFAULT_DICTIONARY_SAMPLES
}

fn default_dictionary_kb() -> usize {
    crate::warm::DEFAULT_DICTIONARY_KB
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

/// Builds the tier `name` described by `spec`; relative defaults live under `data_dir/tiers/NAME`.
pub async fn build(name: &str, spec: &TierSpec, data_dir: &Path) -> Result<Arc<dyn Tier>, RegistryError> {
    let tier_name = TierName::new(name.to_string())?;
    let default_dir = data_dir.join("tiers").join(name);
    match spec.kind.as_str() {
        "warm" => {
            let o: WarmOptions = options("warm", spec)?;
            let invalid = |message: String| RegistryError::Options { kind: "warm", message };
            if o.segment_mb == 0 {
                return Err(invalid("segment_mb must be at least 1".into()));
            }
            let segment_bytes =
                o.segment_mb.checked_mul(1 << 20).ok_or_else(|| invalid("segment_mb is too large".into()))?;
            let config = crate::warm::WarmConfig {
                segment_bytes,
                zstd_level: o.zstd_level,
                compact_below: o.compact_below,
                compact_interval: std::time::Duration::from_secs(o.compact_interval_secs),
                dictionaries: o.dictionaries,
                dictionary_samples: o.dictionary_samples,
                dictionary_kb: o.dictionary_kb,
            };
            config.validate().map_err(|e| invalid(e.to_string()))?;
            let path = o.path.unwrap_or(default_dir);
            let tier = crate::warm::WarmTier::open_config(tier_name, path, config)
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
            let config = crate::tape::TapeConfig {
                root: o.path.unwrap_or(default_dir),
                volume_bytes,
                mount_delay: std::time::Duration::from_millis(o.mount_ms),
                staging_ttl: std::time::Duration::from_secs(staging_secs),
            };
            let tier =
                crate::tape::TapeTier::open(tier_name, config).map_err(|e| RegistryError::Open(e.to_string()))?;
            Ok(Arc::new(tier))
        }
        other => Err(RegistryError::UnknownKind(other.to_string())),
    }
}
