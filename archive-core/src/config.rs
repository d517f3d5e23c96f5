//! Configuration: TOML file plus `VNA_<SECTION>__<KEY>` environment overrides.
//!
//! Loading has two stages. [`VnaConfig::load`] parses the file strictly (unknown keys
//! are refused with file, line and key named), merges the environment through the
//! `config` crate, then [`VnaConfig::validate`] checks values and derives paths.
//! With no file, the embedded defaults apply (data under `./vna-data`).

use crate::catalog::ConflictPolicy;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VnaConfig {
    /// Root of all data (catalog, tiers) unless a section names its own path.
    pub data_dir: PathBuf,
    /// The catalog database.
    pub catalog: CatalogConfig,
    /// The hot tier, where ingest writes.
    pub hot: HotConfig,
    /// The warm tier (compressed segment files on local disk).
    pub warm: WarmConfig,
    /// More tiers by name (`[tiers.cold]`, `[tiers.tape1]`...), each with a `kind` and the
    /// options of that kind; the tier plugins read them.
    pub tiers: std::collections::BTreeMap<String, TierSpec>,
    /// Migration, recall and integrity scrubbing.
    pub lifecycle: LifecycleConfig,
    /// Ingest behaviour.
    pub ingest: IngestConfig,
    /// Query behaviour.
    pub query: QueryConfig,
    /// The DIMSE server.
    pub dicom: DicomConfig,
    /// The HTTP server.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// Retention rules and deletion.
    pub retention: RetentionConfig,
    /// Users of the admin API and their bearer tokens.
    pub auth: AuthConfig,
    /// Forwarding of the audit trail to an audit record repository.
    pub audit: AuditConfig,
    /// Source profiles: issuer of patient ID and attribute coercion per sending system.
    pub sources: Vec<crate::coerce::SourceProfileConfig>,
    /// Legacy archives studies can be pulled from (`vna migrate pull`).
    pub migration: MigrationConfig,
}

impl Default for VnaConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./vna-data"),
            catalog: CatalogConfig::default(),
            hot: HotConfig::default(),
            warm: WarmConfig::default(),
            tiers: std::collections::BTreeMap::new(),
            lifecycle: LifecycleConfig::default(),
            ingest: IngestConfig::default(),
            query: QueryConfig::default(),
            dicom: DicomConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            retention: RetentionConfig::default(),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
            sources: Vec::new(),
            migration: MigrationConfig::default(),
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

/// `[warm]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarmConfig {
    /// Directory of the warm tier (default `<data_dir>/warm`).
    pub path: Option<PathBuf>,
    /// Size at which a new segment file starts (MiB).
    pub segment_mb: u64,
    /// zstd level of newly written objects, 1 to 19.
    pub zstd_level: i32,
    /// A full segment whose live bytes fall below this fraction of its bytes is compacted
    /// (0.0 to 1.0; segments without live objects always are).
    pub compact_below: f64,
    /// Seconds between background compaction passes (0 disables them).
    pub compact_interval_secs: u64,
    /// Compress newly written objects with a zstd dictionary trained per modality (the
    /// content class migrations pass to the tier); helps small objects most.
    pub dictionaries: bool,
    /// Objects of a modality stored (and sampled) before its dictionary is trained, 10 to 10000.
    pub dictionary_samples: usize,
    /// Largest size of a trained dictionary in KiB, 1 to 1024.
    pub dictionary_kb: usize,
}
impl Default for WarmConfig {
    fn default() -> Self {
        Self {
            path: None,
            segment_mb: 1024,
            zstd_level: 3,
            compact_below: 0.5,
            compact_interval_secs: 3600,
            dictionaries: false,
            dictionary_samples: 200,
            dictionary_kb: 64,
        }
    }
}

/// `[tiers.NAME]`: a tier beyond the built-in hot and warm ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierSpec {
    /// The kind of tier: `warm`, `s3` or `tape`.
    pub kind: String,
    /// The kind's own options, checked by the plugin that builds the tier.
    #[serde(flatten)]
    pub options: toml::Table,
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

/// A remote application entity: a C-MOVE destination and, optionally, an allowed caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteAe {
    /// Its AE title.
    pub ae_title: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// `[dicom]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DicomConfig {
    /// The archive's own AE title.
    pub ae_title: String,
    /// Address to listen on.
    pub listen: String,
    /// Accept associations only from the AE titles in `remote_aes`.
    pub restrict_to_remote_aes: bool,
    /// Most associations served at once.
    pub max_associations: usize,
    /// Largest PDU the archive receives, in bytes.
    pub max_pdu_length: u32,
    /// Seconds of silence after which an association is aborted.
    pub idle_timeout_secs: u64,
    /// Largest data set accepted in one C-STORE, in MiB.
    pub max_dataset_mb: usize,
    /// Known remote AEs.
    pub remote_aes: Vec<RemoteAe>,
}
impl Default for DicomConfig {
    fn default() -> Self {
        Self {
            ae_title: "VNA".into(),
            listen: "0.0.0.0:11112".into(),
            restrict_to_remote_aes: false,
            max_associations: 64,
            max_pdu_length: 65_536,
            idle_timeout_secs: 300,
            max_dataset_mb: 1024,
            remote_aes: Vec::new(),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: String,
    /// Path under which the DICOMweb services answer (`/dicom-web`).
    pub base_path: String,
    /// The URL clients reach the server at (e.g. `https://pacs.example.org`), used in
    /// RetrieveURL and BulkDataURI values; by default built from each request's Host header.
    pub public_url: Option<String>,
    /// Origins a browser viewer may call the API from (`*` for any); empty disables CORS.
    pub cors_allowed_origins: Vec<String>,
    /// Largest object one STOW-RS part may carry, in MiB.
    pub max_object_mb: u64,
    /// Largest STOW-RS request body, in MiB (parts are spooled to disk, not held in memory).
    pub max_request_mb: u64,
}
impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            base_path: "/dicom-web".into(),
            public_url: None,
            cors_allowed_origins: Vec::new(),
            max_object_mb: 4095,
            max_request_mb: 16384,
        }
    }
}

/// `[migration]`: the legacy archives `vna migrate pull` can take studies from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationConfig {
    /// The sources, by name (`[[migration.sources]]`).
    pub sources: Vec<MigrationSourceConfig>,
}

impl MigrationConfig {
    /// A source by name.
    pub fn source(&self, name: &str) -> Option<&MigrationSourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// How vna talks to a legacy archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationSourceKind {
    /// C-FIND to plan, C-MOVE to vna's own AE title to fetch (the source must know vna as a
    /// move destination).
    Dimse,
    /// QIDO-RS to plan, WADO-RS to fetch.
    Dicomweb,
}

/// One `[[migration.sources]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationSourceConfig {
    /// The name jobs refer to (`--from NAME`); also the actor of ingests over DICOMweb, so a
    /// `[[sources]]` profile of that name applies to what it delivers.
    pub name: String,
    /// `dimse` or `dicomweb`.
    pub kind: MigrationSourceKind,
    /// DIMSE: the source's AE title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ae_title: Option<String>,
    /// DIMSE: the source's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// DIMSE: the source's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// DICOMweb: the base URL of its services (e.g. `https://pacs:8042/dicom-web`); https is
    /// verified against the system's CA store plus `ca_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// DICOMweb over https: a PEM file of CA certificates to trust besides the system's (a
    /// PACS whose certificate an in-house CA signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// DICOMweb: user name for HTTP basic authentication (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// DICOMweb: password for HTTP basic authentication (prefer an environment override).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// DICOMweb: bearer token sent as `Authorization: Bearer` (instead of basic authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
    /// Most MiB per second taken from the source, averaged per study (0: unlimited).
    #[serde(default)]
    pub max_mb_per_sec: f64,
    /// Most studies fetched per minute (0: unlimited).
    #[serde(default)]
    pub max_studies_per_minute: u32,
    /// Seconds to wait for any answer of the source before the request fails.
    #[serde(default = "default_migration_timeout")]
    pub timeout_secs: u64,
    /// Attempts per study before it is reported as failed (network errors are retried).
    #[serde(default = "default_migration_attempts")]
    pub attempts: u32,
}

fn default_migration_timeout() -> u64 {
    300
}

fn default_migration_attempts() -> u32 {
    3
}

impl MigrationSourceConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(&format!("{key}.name"), "must be 1 to 64 letters, digits, '-', '_' or '.'"));
        }
        match self.kind {
            MigrationSourceKind::Dimse => {
                let ae = self
                    .ae_title
                    .as_deref()
                    .ok_or_else(|| invalid(&format!("{key}.ae_title"), "is required for kind = \"dimse\""))?;
                validate_ae_title(ae).map_err(|m| invalid(&format!("{key}.ae_title"), m))?;
                if self.host.as_deref().is_none_or(|h| h.trim().is_empty()) {
                    return Err(invalid(&format!("{key}.host"), "is required for kind = \"dimse\""));
                }
                if self.port.unwrap_or(0) == 0 {
                    return Err(invalid(&format!("{key}.port"), "is required for kind = \"dimse\" and cannot be 0"));
                }
                if self.url.is_some() {
                    return Err(invalid(&format!("{key}.url"), "belongs to kind = \"dicomweb\""));
                }
                if self.ca_file.is_some()
                    || self.username.is_some()
                    || self.password.is_some()
                    || self.bearer_token.is_some()
                {
                    return Err(invalid(
                        &format!("{key}.username"),
                        "ca_file, username, password and bearer_token belong to kind = \"dicomweb\"",
                    ));
                }
            }
            MigrationSourceKind::Dicomweb => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| invalid(&format!("{key}.url"), "is required for kind = \"dicomweb\""))?;
                let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
                if rest.is_none_or(str::is_empty) || url.chars().any(char::is_whitespace) {
                    return Err(invalid(&format!("{key}.url"), "must be an http:// or https:// URL"));
                }
                match (&self.username, &self.password, &self.bearer_token) {
                    (Some(_), None, _) | (None, Some(_), _) => {
                        return Err(invalid(&format!("{key}.username"), "username and password go together"))
                    }
                    (Some(_), Some(_), Some(_)) => {
                        return Err(invalid(
                            &format!("{key}.bearer_token"),
                            "use either username/password or bearer_token",
                        ))
                    }
                    _ => {}
                }
                if let Some(ca) = &self.ca_file {
                    if !url.starts_with("https://") {
                        return Err(invalid(&format!("{key}.ca_file"), "only applies to an https:// url"));
                    }
                    if !ca.is_file() {
                        return Err(invalid(
                            &format!("{key}.ca_file"),
                            format!("{} is not a readable file", ca.display()),
                        ));
                    }
                }
                if self.ae_title.is_some() || self.host.is_some() || self.port.is_some() {
                    return Err(invalid(
                        &format!("{key}.ae_title"),
                        "ae_title, host and port belong to kind = \"dimse\"",
                    ));
                }
            }
        }
        if !self.max_mb_per_sec.is_finite() || self.max_mb_per_sec < 0.0 {
            return Err(invalid(&format!("{key}.max_mb_per_sec"), "must be 0 (unlimited) or more"));
        }
        if self.timeout_secs == 0 {
            return Err(invalid(&format!("{key}.timeout_secs"), "must be at least 1"));
        }
        if self.attempts == 0 {
            return Err(invalid(&format!("{key}.attempts"), "must be at least 1"));
        }
        Ok(())
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in `tracing` env-filter syntax, e.g. `info` or `vna=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}
impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: "text".into() }
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

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// Whether a configuration key holds a secret.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["token", "secret", "password"].iter().any(|s| k.contains(s))
}

/// Replaces the string values of secret keys, at any depth, by `"<redacted>"`.
fn redact_secrets(value: &mut toml::Value) {
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

impl VnaConfig {
    /// Loads the file (if any), applies `VNA_*` environment overrides, and validates.
    pub fn load(file: Option<&Path>) -> Result<VnaConfig, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`VnaConfig::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<VnaConfig, ConfigError> {
        let text = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                // Strict parse first: toml names the line and the key of any mistake.
                toml::from_str::<VnaConfig>(&text)
                    .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
                text
            }
            None => String::new(),
        };
        let overrides: std::collections::HashMap<String, String> =
            env.into_iter().filter(|(k, _)| k.starts_with("VNA_") && !NOT_OVERRIDES.contains(&k.as_str())).collect();
        let defaults = toml::to_string(&VnaConfig::default()).expect("defaults serialize");
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
        let cfg: VnaConfig = built.try_deserialize().map_err(|e| ConfigError::Environment(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_ae_title(&self.dicom.ae_title).map_err(|m| invalid("dicom.ae_title", m))?;
        self.dicom_listen()?;
        self.http_listen()?;
        if self.dicom.max_associations == 0 {
            return Err(invalid("dicom.max_associations", "must be at least 1"));
        }
        if !(4096..=(1 << 24)).contains(&self.dicom.max_pdu_length) {
            return Err(invalid("dicom.max_pdu_length", "must be between 4096 and 16777216"));
        }
        for (i, ae) in self.dicom.remote_aes.iter().enumerate() {
            let key = format!("dicom.remote_aes[{i}]");
            validate_ae_title(&ae.ae_title).map_err(|m| invalid(&format!("{key}.ae_title"), m))?;
            if ae.host.trim().is_empty() {
                return Err(invalid(&format!("{key}.host"), "cannot be empty"));
            }
            if ae.port == 0 {
                return Err(invalid(&format!("{key}.port"), "cannot be 0"));
            }
        }
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
        if !(1..=4095).contains(&self.dicom.max_dataset_mb) {
            return Err(invalid("dicom.max_dataset_mb", "must be between 1 and 4095"));
        }
        let base = &self.http.base_path;
        if !base.starts_with('/')
            || base.ends_with('/')
            || !base.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
            || base.contains("//")
            || base.split('/').any(|s| s == ".." || s == ".")
        {
            return Err(invalid("http.base_path", "must be a path like /dicom-web (leading slash, no trailing slash)"));
        }
        if let Some(url) = &self.http.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
                return Err(invalid("http.public_url", "must be an http(s) URL without a trailing slash"));
            }
        }
        if self.http.max_object_mb == 0 || self.http.max_request_mb == 0 {
            return Err(invalid("http.max_object_mb", "limits must be at least 1"));
        }
        if self.warm.segment_mb == 0 || self.warm.segment_mb.checked_mul(1 << 20).is_none() {
            return Err(invalid("warm.segment_mb", "must be at least 1 and fit in bytes"));
        }
        if !(1..=19).contains(&self.warm.zstd_level) {
            return Err(invalid("warm.zstd_level", format!("must be 1 to 19, not {}", self.warm.zstd_level)));
        }
        if !(0.0..=1.0).contains(&self.warm.compact_below) {
            return Err(invalid("warm.compact_below", format!("must be 0.0 to 1.0, not {}", self.warm.compact_below)));
        }
        if !(10..=10_000).contains(&self.warm.dictionary_samples) {
            return Err(invalid(
                "warm.dictionary_samples",
                format!("must be 10 to 10000, not {}", self.warm.dictionary_samples),
            ));
        }
        if !(1..=1024).contains(&self.warm.dictionary_kb) {
            return Err(invalid("warm.dictionary_kb", format!("must be 1 to 1024, not {}", self.warm.dictionary_kb)));
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
        for (name, spec) in &self.tiers {
            crate::tier::TierName::new(name.clone()).map_err(|e| invalid(&format!("tiers.{name}"), e.to_string()))?;
            if matches!(name.as_str(), "hot" | "warm") {
                return Err(invalid(&format!("tiers.{name}"), "the names hot and warm belong to the built-in tiers"));
            }
            if spec.kind.trim().is_empty() {
                return Err(invalid(&format!("tiers.{name}.kind"), "is required (warm, s3 or tape)"));
            }
        }
        let recall = &self.lifecycle.recall_tier;
        if recall != "hot" && recall != "warm" && !self.tiers.contains_key(recall) {
            return Err(invalid("lifecycle.recall_tier", format!("{recall:?} is not a configured tier")));
        }
        if self.query.max_results == 0 {
            return Err(invalid("query.max_results", "must be at least 1"));
        }
        let mut migration_names = std::collections::BTreeSet::new();
        for (i, source) in self.migration.sources.iter().enumerate() {
            let key = format!("migration.sources[{i}]");
            source.validate(&key)?;
            if !migration_names.insert(source.name.as_str()) {
                return Err(invalid(&format!("{key}.name"), format!("{:?} is used twice", source.name)));
            }
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be \"text\" or \"json\""));
        }
        Ok(())
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the configuration always serializes")
    }

    /// [`VnaConfig::to_toml`] with every secret (values of keys naming a token, secret or
    /// password, in any section, tier tables included) replaced by `"<redacted>"`, for
    /// showing the configuration to people and in support tickets.
    pub fn to_toml_redacted(&self) -> String {
        let mut value = toml::Value::try_from(self).expect("the configuration always serializes");
        redact_secrets(&mut value);
        toml::to_string(&value).expect("the configuration always serializes")
    }

    /// The DIMSE listen address.
    pub fn dicom_listen(&self) -> Result<SocketAddr, ConfigError> {
        self.dicom
            .listen
            .parse()
            .map_err(|_| invalid("dicom.listen", format!("{:?} is not an address:port", self.dicom.listen)))
    }
    /// The HTTP listen address.
    pub fn http_listen(&self) -> Result<SocketAddr, ConfigError> {
        self.http
            .listen
            .parse()
            .map_err(|_| invalid("http.listen", format!("{:?} is not an address:port", self.http.listen)))
    }
    /// The directory STOW-RS spools uploads into.
    pub fn spool_path(&self) -> PathBuf {
        self.data_dir.join("spool")
    }
    /// The catalog directory.
    pub fn catalog_path(&self) -> PathBuf {
        self.catalog.path.clone().unwrap_or_else(|| self.data_dir.join("catalog"))
    }
    /// The hot tier directory.
    pub fn hot_path(&self) -> PathBuf {
        self.hot.path.clone().unwrap_or_else(|| self.data_dir.join("hot"))
    }
    /// The warm tier's directory.
    pub fn warm_path(&self) -> PathBuf {
        self.warm.path.clone().unwrap_or_else(|| self.data_dir.join("warm"))
    }
    /// A remote AE by title.
    pub fn remote_ae(&self, ae_title: &str) -> Option<&RemoteAe> {
        self.dicom.remote_aes.iter().find(|r| r.ae_title == ae_title.trim())
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

    #[test]
    fn defaults_without_file() {
        let c = VnaConfig::load_with_env(None, vec![]).unwrap();
        assert_eq!(c, VnaConfig::default());
        assert_eq!(c.dicom.ae_title, "VNA");
        assert_eq!(c.catalog_path(), PathBuf::from("./vna-data/catalog"));
    }

    #[test]
    fn file_and_env_overrides() {
        let f = file("data_dir = \"/srv/vna\"\n[dicom]\nae_title = \"ARCH\"\n[[dicom.remote_aes]]\nae_title = \"WS\"\nhost = \"10.0.0.2\"\nport = 104\n");
        let env = vec![
            ("VNA_DICOM__LISTEN".to_string(), "127.0.0.1:11113".to_string()),
            ("VNA_HTTP__LISTEN".to_string(), "127.0.0.1:8081".to_string()),
            ("VNA_QUERY__CASE_INSENSITIVE_PN".to_string(), "false".to_string()),
            ("VNA_DATA_DIR".to_string(), "/data".to_string()),
            ("OTHER".to_string(), "x".to_string()),
            ("VNA_CONFIG".to_string(), "/etc/vna.toml".to_string()),
            ("VNA_FAILPOINTS".to_string(), "migrate.after_copy".to_string()),
        ];
        let c = VnaConfig::load_with_env(Some(f.path()), env).unwrap();
        assert_eq!(c.dicom.ae_title, "ARCH");
        assert_eq!(c.dicom.listen, "127.0.0.1:11113");
        assert_eq!(c.http.listen, "127.0.0.1:8081");
        assert!(!c.query.case_insensitive_pn);
        assert_eq!(c.data_dir, PathBuf::from("/data"));
        assert_eq!(c.remote_ae("WS").unwrap().port, 104);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let f = file("data_dir = \"x\"\n\n[dicom]\nae_titel = \"X\"\n");
        let e = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap_err().to_string();
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("ae_titel"), "{e}");
        assert!(e.contains(&f.path().display().to_string()), "{e}");
    }

    #[test]
    fn bad_values_refused() {
        let f = file("[dicom]\nae_title = \"THIS_TITLE_IS_TOO_LONG\"\n");
        let e = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap_err().to_string();
        assert!(e.contains("dicom.ae_title"), "{e}");
        let f = file("[dicom]\nlisten = \"nowhere\"\n");
        assert!(VnaConfig::load_with_env(Some(f.path()), vec![]).is_err());
        let f = file("[ingest]\non_conflict = \"maybe\"\n");
        let e = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn warm_options_have_defaults_and_ranges() {
        let c = VnaConfig::load_with_env(None, vec![]).unwrap();
        assert_eq!((c.warm.zstd_level, c.warm.compact_below, c.warm.compact_interval_secs), (3, 0.5, 3600));
        let f = file("[warm]\nzstd_level = 9\ncompact_below = 0.25\ncompact_interval_secs = 0\n");
        let c = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap();
        assert_eq!((c.warm.zstd_level, c.warm.compact_below, c.warm.compact_interval_secs), (9, 0.25, 0));
        let env = vec![("VNA_WARM__COMPACT_BELOW".to_string(), "0.75".to_string())];
        assert_eq!(VnaConfig::load_with_env(None, env).unwrap().warm.compact_below, 0.75);
        assert_eq!((c.warm.dictionaries, c.warm.dictionary_samples, c.warm.dictionary_kb), (false, 200, 64));
        let f = file("[warm]\ndictionaries = true\ndictionary_samples = 50\ndictionary_kb = 32\n");
        let c = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap();
        assert_eq!((c.warm.dictionaries, c.warm.dictionary_samples, c.warm.dictionary_kb), (true, 50, 32));
        for (text, key) in [
            ("[warm]\nzstd_level = 0\n", "warm.zstd_level"),
            ("[warm]\nzstd_level = 20\n", "warm.zstd_level"),
            ("[warm]\ncompact_below = 1.5\n", "warm.compact_below"),
            ("[warm]\ncompact_below = -0.1\n", "warm.compact_below"),
            ("[warm]\ncompact_below = nan\n", "warm.compact_below"),
            ("[warm]\nsegment_mb = 0\n", "warm.segment_mb"),
            ("[warm]\ndictionary_samples = 9\n", "warm.dictionary_samples"),
            ("[warm]\ndictionary_samples = 10001\n", "warm.dictionary_samples"),
            ("[warm]\ndictionary_kb = 0\n", "warm.dictionary_kb"),
            ("[warm]\ndictionary_kb = 2048\n", "warm.dictionary_kb"),
            ("[warm]\ndictionaries = \"yes\"\n", "dictionaries"),
        ] {
            let f = file(text);
            let e = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn migration_sources_are_validated() {
        let f = file("[[migration.sources]]\nname = \"old-pacs\"\nkind = \"dimse\"\nae_title = \"OLDPACS\"\nhost = \"10.0.0.9\"\nport = 104\nmax_studies_per_minute = 30\n[[migration.sources]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"https://10.0.0.8/dicom-web\"\nmax_mb_per_sec = 2.5\n");
        let c = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap();
        assert_eq!(c.migration.sources.len(), 2);
        let dimse = c.migration.source("old-pacs").unwrap();
        assert_eq!((dimse.kind, dimse.port, dimse.max_studies_per_minute), (MigrationSourceKind::Dimse, Some(104), 30));
        assert_eq!((dimse.timeout_secs, dimse.attempts), (300, 3));
        assert_eq!(c.migration.source("web").unwrap().max_mb_per_sec, 2.5);
        for (text, key) in [
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dimse\"\nhost = \"h\"\nport = 104\n", "ae_title"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dimse\"\nae_title = \"A\"\nhost = \"h\"\n", "port"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dicomweb\"\n", "url"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"ftp://x\"\n", "url"),
            ("[[migration.sources]]\nname = \"a b\"\nkind = \"dicomweb\"\nurl = \"http://x\"\n", "name"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\nmax_mb_per_sec = -1.0\n", "max_mb_per_sec"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\n[[migration.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://y\"\n", "twice"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"ftp\"\nurl = \"http://y\"\n", "kind"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"https://\"\n", "url"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\nusername = \"u\"\n", "go together"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\nusername = \"u\"\npassword = \"p\"\nbearer_token = \"t\"\n", "either"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dimse\"\nae_title = \"A\"\nhost = \"h\"\nport = 104\npassword = \"p\"\n", "belong to kind"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\nca_file = \"/etc/hostname\"\n", "only applies to an https"),
            ("[[migration.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"https://x\"\nca_file = \"/no/such/ca.pem\"\n", "not a readable file"),
        ] {
            let f = file(text);
            let e = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn shown_configuration_hides_every_secret() {
        let f = file("[[auth.users]]\nname = \"ops\"\ntoken = \"tok-0123456789abcdef\"\nrole = \"admin\"\n[tiers.cold]\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = \"AKIA-visible\"\nsecret_access_key = \"s3-secret-value\"\n");
        let c = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap();
        let shown = c.to_toml_redacted();
        assert!(!shown.contains("tok-0123456789abcdef") && !shown.contains("s3-secret-value"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("AKIA-visible") && shown.contains("name = \"ops\""),
            "{shown}"
        );
        assert!(c.to_toml().contains("tok-0123456789abcdef"));
    }
}
