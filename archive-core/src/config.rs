//! Configuration: TOML file plus `VNA_<SECTION>__<KEY>` environment overrides.
//!
//! Each part owns its section: this module holds the archive core's own sections
//! ([`ArchiveConfig`]: data directory, catalog, hot tier, lifecycle, ingest, query, retention,
//! users, audit forwarding, source profiles) and the loading machinery; the DIMSE door owns
//! `[dicom]` (`dimse_scp::config`), the DICOMweb door `[http]` (`dicomweb::config`), pulls
//! `[[migration.sources]]` (`pull::config`), each tier kind its options (`tier_plugins`), and
//! the binary `[log]` and the composition of them all (`bins/vna/src/config.rs`).
//!
//! Loading has two stages. [`load`] parses the file strictly into the composed type
//! (unknown keys are refused with file, line and key named), merges the environment through
//! the `config` crate; then each section's `validate` checks values, and the composition
//! checks what spans sections. With no file, the embedded defaults apply (data under
//! `./vna-data`).

use crate::catalog::ConflictPolicy;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The archive core's configuration: the sections the core itself reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveConfig {
    /// Root of all data (catalog, tiers) unless a section names its own path.
    pub data_dir: PathBuf,
    /// The catalog database.
    pub catalog: CatalogConfig,
    /// The hot tier, where ingest writes.
    pub hot: HotConfig,
    /// Tier moves, recall and integrity scrubbing.
    pub lifecycle: LifecycleConfig,
    /// Ingest behaviour.
    pub ingest: IngestConfig,
    /// Query behaviour.
    pub query: QueryConfig,
    /// Retention rules and deletion.
    pub retention: RetentionConfig,
    /// The archive's users (admin API, STOW-RS senders) and their bearer tokens.
    pub auth: AuthConfig,
    /// Forwarding of the audit trail to an audit record repository.
    pub audit: AuditConfig,
    /// Source profiles: issuer of patient ID and attribute coercion per sending system.
    pub sources: Vec<crate::coerce::SourceProfileConfig>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./vna-data"),
            catalog: CatalogConfig::default(),
            hot: HotConfig::default(),
            lifecycle: LifecycleConfig::default(),
            ingest: IngestConfig::default(),
            query: QueryConfig::default(),
            retention: RetentionConfig::default(),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
            sources: Vec::new(),
        }
    }
}

/// `[catalog]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Database directory (default `<data_dir>/catalog`).
    pub path: Option<PathBuf>,
    /// Ingest is refused when the catalog's file system has less free space than this (MiB).
    pub min_free_mb: u64,
}
impl Default for CatalogConfig {
    fn default() -> Self {
        Self { path: None, min_free_mb: 256 }
    }
}

/// `[hot]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HotConfig {
    /// Directory of the hot tier (default `<data_dir>/hot`).
    pub path: Option<PathBuf>,
    /// Ingest is refused when the hot tier's file system has less free space than this (MiB).
    pub min_free_mb: u64,
}
impl Default for HotConfig {
    fn default() -> Self {
        Self { path: None, min_free_mb: 1024 }
    }
}

/// `[lifecycle]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Verified copies every instance keeps: no migration, rule or admin request may leave an
    /// instance with fewer (an instance that has fewer can gain copies but never lose one).
    pub min_verified_copies: usize,
    /// Migration and recall jobs that run at once.
    pub max_concurrent_jobs: usize,
    /// Bytes per second all jobs together may copy (MiB/s; 0 = unlimited).
    pub max_mb_per_sec: u64,
    /// The tier a retrieve recalls studies to when no copy is online.
    pub recall_tier: String,
    /// How long a C-MOVE or C-GET waits for a recall before it fails (seconds).
    pub recall_wait_secs: u64,
    /// How long a WADO-RS request waits for a recall before answering 202 (seconds).
    pub http_recall_wait_secs: u64,
    /// Bytes per second the integrity scrub re-reads (MiB/s; 0 disables the background scrub).
    pub scrub_mb_per_sec: u64,
    /// Hours between the starts of two background scrub passes (the first starts one interval after start-up).
    pub scrub_interval_hours: u64,
    /// Finished jobs kept for the admin API (the oldest are forgotten first).
    pub keep_finished_jobs: usize,
}
impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            min_verified_copies: 1,
            max_concurrent_jobs: 2,
            max_mb_per_sec: 0,
            recall_tier: "hot".into(),
            recall_wait_secs: 600,
            http_recall_wait_secs: 10,
            scrub_mb_per_sec: 16,
            scrub_interval_hours: 168,
            keep_finished_jobs: 1000,
        }
    }
}

/// `[retention]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// The rule file (TOML: `[[floor]]` and `[[rule]]` tables); none: no rule moves or deletes anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_file: Option<PathBuf>,
    /// Minutes between marking a deletion and hiding and purging it; undo is possible meanwhile.
    pub grace_minutes: u64,
    /// Minutes between two evaluations of every study (0: only after ingest and on request).
    pub evaluate_interval_minutes: u64,
    /// Seconds after a study's last arrival before it is evaluated (0: not after ingest).
    pub evaluate_after_ingest_secs: u64,
    /// Most deletions one evaluation pass may mark (a safety net against a mistaken rule).
    pub max_deletions_per_pass: usize,
    /// Instances a purge removes per catalog commit.
    pub purge_batch: usize,
    /// Tier deletes a purge keeps in flight.
    pub delete_concurrency: usize,
    /// Senders whose IHE IOCM rejection notes are applied: calling AE titles, `STOW-RS` for
    /// DICOMweb, or `*` for anyone. Notes from others are stored but change nothing (audited).
    pub rejection_notes_from: Vec<String>,
}
impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            rules_file: None,
            grace_minutes: 72 * 60,
            evaluate_interval_minutes: 60,
            evaluate_after_ingest_secs: 300,
            max_deletions_per_pass: 1000,
            purge_batch: 500,
            delete_concurrency: 16,
            rejection_notes_from: Vec::new(),
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// `host:port` of an audit record repository's syslog TCP listener (RFC 5424, octet
    /// counting); every audit record is sent there once, in order, as a DICOM audit message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syslog: Option<String>,
    /// AuditSourceID and syslog APP-NAME.
    pub source_id: String,
    /// Seconds between forwarding passes.
    pub forward_interval_secs: u64,
}
impl Default for AuditConfig {
    fn default() -> Self {
        Self { syslog: None, source_id: "vna".into(), forward_interval_secs: 5 }
    }
}

/// What a user of the admin API may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read-only administration: status, jobs, simulations, explanations.
    Reader,
    /// Compliance: everything a reader may, plus the audit trail, deletions and certificates.
    Auditor,
    /// Everything: deletions, undo, legal holds, rule changes, migrations.
    Admin,
}

/// One user of the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The name audit records show as "who".
    pub name: String,
    /// The bearer token (at least 16 characters; prefer setting it through the environment).
    pub token: String,
    /// What the user may do.
    pub role: Role,
}

/// `[auth]`: bearer tokens until single sign-on arrives. Requests that change state or read the
/// audit trail are refused without a token of a user with the needed role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The users.
    pub users: Vec<UserConfig>,
}

impl AuthConfig {
    /// The user a bearer token belongs to (compared in constant time per user).
    pub fn user_of(&self, token: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| {
            let (a, b) = (u.token.as_bytes(), token.as_bytes());
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        })
    }
}

/// `[ingest]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// What to do when a SOP Instance UID arrives again with different bytes: `reject` or `replace`.
    pub on_conflict: ConflictPolicy,
}
impl Default for IngestConfig {
    fn default() -> Self {
        Self { on_conflict: ConflictPolicy::Reject }
    }
}

/// `[query]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Match person names without regard to case (PS3.4 allows it as an option).
    pub case_insensitive_pn: bool,
    /// Largest number of results one query returns.
    pub max_results: usize,
}
impl Default for QueryConfig {
    fn default() -> Self {
        Self { case_insensitive_pn: true, max_results: 10_000 }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and key.
        message: String,
    },
    /// An environment override is invalid.
    #[error("invalid configuration from environment overrides (VNA_*): {0}")]
    Environment(String),
    /// A value is out of range.
    #[error("invalid configuration: {key}: {message}")]
    Invalid {
        /// The key, dotted.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Environment variables with the `VNA_` prefix that are not configuration overrides: the
/// configuration file's path (read by the command line) and the crash points of tests
/// (see [`crate::failpoint`]).
pub const NOT_OVERRIDES: &[&str] = &["VNA_CONFIG", "VNA_FAILPOINTS"];

/// A value out of range at `key` (dotted, e.g. `dicom.ae_title`).
pub fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// Whether a configuration key holds a secret.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["token", "secret", "password"].iter().any(|s| k.contains(s))
}

/// Replaces the string values of secret keys, at any depth, by `"<redacted>"`.
pub fn redact_secrets(value: &mut toml::Value) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table.iter_mut() {
                if is_secret_key(key) && v.is_str() {
                    *v = toml::Value::String("<redacted>".into());
                } else {
                    redact_secrets(v);
                }
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

/// Checks an AE title: 1 to 16 characters of printable ASCII without backslash, not only spaces.
pub fn validate_ae_title(ae: &str) -> Result<(), String> {
    if ae.trim().is_empty() {
        return Err("an AE title cannot be empty".into());
    }
    if ae.len() > 16 {
        return Err(format!("AE title {ae:?} is longer than 16 characters"));
    }
    if ae.chars().any(|c| !(' '..='~').contains(&c) || c == '\\') {
        return Err(format!("AE title {ae:?} holds a character that is not allowed"));
    }
    Ok(())
}

/// Loads a configuration of type `T` (the binary's composition of every section): the file
/// if any, parsed strictly so that a mistake names its line and key, over `T`'s defaults,
/// then `VNA_*` environment overrides from `env`. Values are not validated here.
pub fn load<T>(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let text = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
            // Strict parse first: toml names the line and the key of any mistake.
            toml::from_str::<T>(&text)
                .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
            text
        }
        None => String::new(),
    };
    let overrides: std::collections::HashMap<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with("VNA_") && !NOT_OVERRIDES.contains(&k.as_str())).collect();
    let defaults = toml::to_string(&T::default()).map_err(|e| ConfigError::Environment(e.to_string()))?;
    let built = config::Config::builder()
        .add_source(config::File::from_str(&defaults, config::FileFormat::Toml))
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("VNA")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| ConfigError::Environment(e.to_string()))?;
    built.try_deserialize().map_err(|e| ConfigError::Environment(e.to_string()))
}

/// A configuration as TOML.
pub fn to_toml<T: Serialize>(config: &T) -> String {
    toml::to_string(config).unwrap_or_else(|e| format!("# the configuration cannot be shown: {e}\n"))
}

/// [`to_toml`] with every secret (values of keys naming a token, secret or password, in any
/// section, tier tables included) replaced by `"<redacted>"`, for showing the configuration
/// to people and in support tickets.
pub fn to_toml_redacted<T: Serialize>(config: &T) -> String {
    match toml::Value::try_from(config) {
        Ok(mut value) => {
            redact_secrets(&mut value);
            toml::to_string(&value).unwrap_or_else(|e| format!("# the configuration cannot be shown: {e}\n"))
        }
        Err(e) => format!("# the configuration cannot be shown: {e}\n"),
    }
}

impl ArchiveConfig {
    /// Checks the core's values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::coerce::SourceProfiles::compile(&self.sources).map_err(|e| invalid("sources", e.to_string()))?;
        for profile in &self.sources {
            for user in &profile.http_users {
                if !self.auth.users.iter().any(|u| &u.name == user) {
                    return Err(invalid(
                        "sources",
                        format!("source profile {:?}: HTTP user {user:?} is not under [[auth.users]]", profile.name),
                    ));
                }
            }
        }
        let r = &self.retention;
        if r.purge_batch == 0 || r.delete_concurrency == 0 {
            return Err(invalid("retention.purge_batch", "purge_batch and delete_concurrency must be at least 1"));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut tokens = std::collections::BTreeSet::new();
        for (i, u) in self.auth.users.iter().enumerate() {
            let key = format!("auth.users[{i}]");
            if u.name.trim().is_empty() || !names.insert(u.name.clone()) {
                return Err(invalid(&format!("{key}.name"), "must be set and unique"));
            }
            if u.token.len() < 16 || !tokens.insert(u.token.clone()) {
                return Err(invalid(&format!("{key}.token"), "must be unique and at least 16 characters"));
            }
        }
        if self.lifecycle.min_verified_copies == 0 {
            return Err(invalid("lifecycle.min_verified_copies", "must be at least 1"));
        }
        if self.lifecycle.max_concurrent_jobs == 0 {
            return Err(invalid("lifecycle.max_concurrent_jobs", "must be at least 1"));
        }
        if self.lifecycle.scrub_interval_hours == 0 {
            return Err(invalid("lifecycle.scrub_interval_hours", "must be at least 1"));
        }
        crate::tier::TierName::new(self.lifecycle.recall_tier.clone())
            .map_err(|e| invalid("lifecycle.recall_tier", e.to_string()))?;
        if self.query.max_results == 0 {
            return Err(invalid("query.max_results", "must be at least 1"));
        }
        Ok(())
    }

    /// The catalog directory.
    pub fn catalog_path(&self) -> PathBuf {
        self.catalog.path.clone().unwrap_or_else(|| self.data_dir.join("catalog"))
    }
    /// The hot tier directory.
    pub fn hot_path(&self) -> PathBuf {
        self.hot.path.clone().unwrap_or_else(|| self.data_dir.join("hot"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn load_core(f: Option<&Path>, env: Vec<(String, String)>) -> Result<ArchiveConfig, ConfigError> {
        let c: ArchiveConfig = load(f, env)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_without_file() {
        let c = load_core(None, vec![]).unwrap();
        assert_eq!(c, ArchiveConfig::default());
        assert_eq!(c.catalog_path(), PathBuf::from("./vna-data/catalog"));
    }

    #[test]
    fn file_and_env_overrides() {
        let f = file("data_dir = \"/srv/vna\"\n[query]\nmax_results = 50\n");
        let env = vec![
            ("VNA_QUERY__CASE_INSENSITIVE_PN".to_string(), "false".to_string()),
            ("VNA_DATA_DIR".to_string(), "/data".to_string()),
            ("OTHER".to_string(), "x".to_string()),
            ("VNA_CONFIG".to_string(), "/etc/vna.toml".to_string()),
            ("VNA_FAILPOINTS".to_string(), "migrate.after_copy".to_string()),
        ];
        let c = load_core(Some(f.path()), env).unwrap();
        assert!(!c.query.case_insensitive_pn);
        assert_eq!(c.query.max_results, 50);
        assert_eq!(c.data_dir, PathBuf::from("/data"));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let f = file("data_dir = \"x\"\n\n[query]\nmax_resluts = 3\n");
        let e = load_core(Some(f.path()), vec![]).unwrap_err().to_string();
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("max_resluts"), "{e}");
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        let f = file("[ingest]\non_conflict = \"maybe\"\n");
        let e = load_core(Some(f.path()), vec![]).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn shown_configuration_hides_every_secret() {
        let f = file("[[auth.users]]\nname = \"ops\"\ntoken = \"tok-0123456789abcdef\"\nrole = \"admin\"\n");
        let c = load_core(Some(f.path()), vec![]).unwrap();
        let shown = to_toml_redacted(&c);
        assert!(!shown.contains("tok-0123456789abcdef"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("name = \"ops\""), "{shown}");
        assert!(to_toml(&c).contains("tok-0123456789abcdef"));
    }
}
