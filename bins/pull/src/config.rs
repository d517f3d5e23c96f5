//! `[[pull.sources]]`: the legacy archives vna pulls from, owned here and validated here.

use archive_core::config::{invalid, validate_ae_title, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[pull]`: the legacy archives `vna pull start` can take studies from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullConfig {
    /// The sources, by name (`[[pull.sources]]`).
    pub sources: Vec<SourceConfig>,
}

impl PullConfig {
    /// A source by name.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// How vna talks to a legacy archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// C-FIND to plan, C-MOVE to vna's own AE title to fetch (the source must know vna as a
    /// move destination).
    Dimse,
    /// QIDO-RS to plan, WADO-RS to fetch.
    Dicomweb,
}

/// One `[[pull.sources]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The name jobs refer to (`--from NAME`); also the actor of ingests over DICOMweb, so a
    /// `[[sources]]` profile of that name applies to what it delivers.
    pub name: String,
    /// `dimse` or `dicomweb`.
    pub kind: SourceKind,
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
    #[serde(default = "default_pull_timeout")]
    pub timeout_secs: u64,
    /// Attempts per study before it is reported as failed (network errors are retried).
    #[serde(default = "default_pull_attempts")]
    pub attempts: u32,
}

fn default_pull_timeout() -> u64 {
    300
}

fn default_pull_attempts() -> u32 {
    3
}

impl SourceConfig {
    /// Checks one source's values; `key` names it in errors.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(&format!("{key}.name"), "must be 1 to 64 letters, digits, '-', '_' or '.'"));
        }
        match self.kind {
            SourceKind::Dimse => {
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
            SourceKind::Dicomweb => {
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

impl PullConfig {
    /// Checks every source, and that names are unique.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let key = format!("pull.sources[{i}]");
            source.validate(&key)?;
            if !names.insert(source.name.as_str()) {
                return Err(invalid(&format!("{key}.name"), format!("{:?} is used twice", source.name)));
            }
        }
        Ok(())
    }
}
