//! `[dicom]`: the DIMSE door's configuration, owned here and validated here.

use archive_core::config::{invalid, validate_ae_title, ConfigError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

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

impl DicomConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_ae_title(&self.ae_title).map_err(|m| invalid("dicom.ae_title", m))?;
        self.listen_addr()?;
        if self.max_associations == 0 {
            return Err(invalid("dicom.max_associations", "must be at least 1"));
        }
        if !(4096..=(1 << 24)).contains(&self.max_pdu_length) {
            return Err(invalid("dicom.max_pdu_length", "must be between 4096 and 16777216"));
        }
        if !(1..=4095).contains(&self.max_dataset_mb) {
            return Err(invalid("dicom.max_dataset_mb", "must be between 1 and 4095"));
        }
        for (i, ae) in self.remote_aes.iter().enumerate() {
            let key = format!("dicom.remote_aes[{i}]");
            validate_ae_title(&ae.ae_title).map_err(|m| invalid(&format!("{key}.ae_title"), m))?;
            if ae.host.trim().is_empty() {
                return Err(invalid(&format!("{key}.host"), "cannot be empty"));
            }
            if ae.port == 0 {
                return Err(invalid(&format!("{key}.port"), "cannot be 0"));
            }
        }
        Ok(())
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| invalid("dicom.listen", format!("{:?} is not an address:port", self.listen)))
    }

    /// A remote AE by title.
    pub fn remote_ae(&self, ae_title: &str) -> Option<&RemoteAe> {
        self.remote_aes.iter().find(|r| r.ae_title == ae_title.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        DicomConfig::default().validate().unwrap();
        assert_eq!(DicomConfig::default().ae_title, "VNA");
        let cases = [
            (DicomConfig { ae_title: "THIS_TITLE_IS_TOO_LONG".into(), ..Default::default() }, "dicom.ae_title"),
            (DicomConfig { listen: "nowhere".into(), ..Default::default() }, "dicom.listen"),
            (DicomConfig { max_associations: 0, ..Default::default() }, "dicom.max_associations"),
            (DicomConfig { max_pdu_length: 100, ..Default::default() }, "dicom.max_pdu_length"),
            (
                DicomConfig {
                    remote_aes: vec![RemoteAe { ae_title: "WS".into(), host: "h".into(), port: 0 }],
                    ..Default::default()
                },
                "dicom.remote_aes[0].port",
            ),
        ];
        for (c, key) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let c = DicomConfig {
            remote_aes: vec![RemoteAe { ae_title: "WS".into(), host: "10.0.0.2".into(), port: 104 }],
            ..Default::default()
        };
        assert_eq!(c.remote_ae(" WS ").unwrap().port, 104);
    }
}
