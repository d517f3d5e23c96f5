//! `[http]`: the DICOMweb door's configuration, owned here and validated here.

use archive_core::config::{invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

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

impl HttpConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let base = &self.base_path;
        if !base.starts_with('/')
            || base.ends_with('/')
            || !base.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
            || base.contains("//")
            || base.split('/').any(|s| s == ".." || s == ".")
        {
            return Err(invalid("http.base_path", "must be a path like /dicom-web (leading slash, no trailing slash)"));
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
                return Err(invalid("http.public_url", "must be an http(s) URL without a trailing slash"));
            }
        }
        if self.max_object_mb == 0 || self.max_request_mb == 0 {
            return Err(invalid("http.max_object_mb", "limits must be at least 1"));
        }
        Ok(())
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| invalid("http.listen", format!("{:?} is not an address:port", self.listen)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        HttpConfig::default().validate().unwrap();
        for (c, key) in [
            (HttpConfig { listen: "x".into(), ..Default::default() }, "http.listen"),
            (HttpConfig { base_path: "dicom-web/".into(), ..Default::default() }, "http.base_path"),
            (HttpConfig { base_path: "/a/../b".into(), ..Default::default() }, "http.base_path"),
            (HttpConfig { public_url: Some("ftp://x".into()), ..Default::default() }, "http.public_url"),
            (HttpConfig { max_object_mb: 0, ..Default::default() }, "http.max_object_mb"),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
