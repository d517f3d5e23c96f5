//! The whole configuration of `vna`: every part's own section, composed.
//!
//! The core owns its sections ([`ArchiveConfig`]), each door its own (`[dicom]`:
//! `dimse_scp::config`, `[http]`: `dicomweb::config`, `[[pull.sources]]`:
//! `pull::config`), each tier kind its options (`[warm]`, `[tiers.NAME]`: `tier_plugins`), and
//! this binary `[log]`. Loading is the core's ([`archive_core::config::load`]): the file is
//! parsed strictly into this type, so an unknown key anywhere is refused with its line;
//! [`VnaConfig::validate`] runs each section's checks, then the checks that span sections.

use archive_core::config::{invalid, ArchiveConfig, ConfigError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole configuration, as the file and `VNA_*` overrides give it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VnaConfig {
    /// Root of all data (catalog, tiers) unless a section names its own path.
    pub data_dir: PathBuf,
    /// The catalog database (core).
    pub catalog: archive_core::config::CatalogConfig,
    /// The hot tier, where ingest writes (core).
    pub hot: archive_core::config::HotConfig,
    /// The built-in warm tier (its kind's options).
    pub warm: tier_plugins::warm::WarmOptions,
    /// More tiers by name (`[tiers.cold]`, `[tiers.tape1]`...), each with a `kind` and that
    /// kind's options.
    pub tiers: BTreeMap<String, tier_plugins::registry::TierSpec>,
    /// Tier moves, recall and integrity scrubbing (core).
    pub lifecycle: archive_core::config::LifecycleConfig,
    /// Ingest behaviour (core).
    pub ingest: archive_core::config::IngestConfig,
    /// Query behaviour (core).
    pub query: archive_core::config::QueryConfig,
    /// The DIMSE door.
    pub dicom: dimse_scp::config::DicomConfig,
    /// The HTTP door.
    pub http: dicomweb::config::HttpConfig,
    /// Logging (this binary).
    pub log: LogConfig,
    /// Retention rules and deletion (core).
    pub retention: archive_core::config::RetentionConfig,
    /// Users and their bearer tokens (core).
    pub auth: archive_core::config::AuthConfig,
    /// Forwarding of the audit trail (core).
    pub audit: archive_core::config::AuditConfig,
    /// Source profiles per sending system (core).
    pub sources: Vec<archive_core::coerce::SourceProfileConfig>,
    /// Legacy archives studies can be pulled from (`vna pull start`).
    pub pull: pull::config::PullConfig,
}

impl Default for VnaConfig {
    fn default() -> Self {
        Self::from_archive(ArchiveConfig::default())
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

impl VnaConfig {
    /// The core's sections as they are here, and every other section at its default.
    pub fn from_archive(a: ArchiveConfig) -> Self {
        Self {
            data_dir: a.data_dir,
            catalog: a.catalog,
            hot: a.hot,
            warm: Default::default(),
            tiers: BTreeMap::new(),
            lifecycle: a.lifecycle,
            ingest: a.ingest,
            query: a.query,
            dicom: Default::default(),
            http: Default::default(),
            log: LogConfig::default(),
            retention: a.retention,
            auth: a.auth,
            audit: a.audit,
            sources: a.sources,
            pull: Default::default(),
        }
    }

    /// Loads the file (if any), applies `VNA_*` environment overrides, and validates.
    pub fn load(file: Option<&Path>) -> Result<VnaConfig, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`VnaConfig::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<VnaConfig, ConfigError> {
        let config: VnaConfig = archive_core::config::load(file, env)?;
        config.validate()?;
        Ok(config)
    }

    /// The core's configuration.
    pub fn archive(&self) -> ArchiveConfig {
        ArchiveConfig {
            data_dir: self.data_dir.clone(),
            catalog: self.catalog.clone(),
            hot: self.hot.clone(),
            lifecycle: self.lifecycle.clone(),
            ingest: self.ingest.clone(),
            query: self.query.clone(),
            retention: self.retention.clone(),
            auth: self.auth.clone(),
            audit: self.audit.clone(),
            sources: self.sources.clone(),
        }
    }

    /// Each section's checks, then those that span sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.archive().validate()?;
        self.dicom.validate()?;
        self.http.validate()?;
        self.pull.validate()?;
        self.warm.to_config().map_err(|e| invalid(&format!("warm.{}", e.key), e.message))?;
        tier_plugins::registry::validate(&self.tiers)?;
        let recall = &self.lifecycle.recall_tier;
        if recall != "hot" && recall != "warm" && !self.tiers.contains_key(recall) {
            return Err(invalid("lifecycle.recall_tier", format!("{recall:?} is not a configured tier")));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", "must be \"text\" or \"json\""));
        }
        Ok(())
    }

    /// The warm tier's directory.
    pub fn warm_path(&self) -> PathBuf {
        self.warm.path.clone().unwrap_or_else(|| self.data_dir.join("warm"))
    }

    /// Every tier's name: the built-in hot and warm, then `[tiers.NAME]`.
    pub fn tier_names(&self) -> Vec<String> {
        let mut names = vec!["hot".to_string(), "warm".to_string()];
        names.extend(self.tiers.keys().cloned());
        names
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
        assert_eq!(c.archive().catalog_path(), PathBuf::from("./vna-data/catalog"));
        assert_eq!(c.warm_path(), PathBuf::from("./vna-data/warm"));
    }

    #[test]
    fn file_and_env_overrides_reach_every_section() {
        let f = file("data_dir = \"/srv/vna\"\n[dicom]\nae_title = \"ARCH\"\n[[dicom.remote_aes]]\nae_title = \"WS\"\nhost = \"10.0.0.2\"\nport = 104\n");
        let env = vec![
            ("VNA_DICOM__LISTEN".to_string(), "127.0.0.1:11113".to_string()),
            ("VNA_HTTP__LISTEN".to_string(), "127.0.0.1:8081".to_string()),
            ("VNA_QUERY__CASE_INSENSITIVE_PN".to_string(), "false".to_string()),
            ("VNA_WARM__COMPACT_BELOW".to_string(), "0.75".to_string()),
            ("VNA_LOG__FORMAT".to_string(), "json".to_string()),
            ("VNA_DATA_DIR".to_string(), "/data".to_string()),
            ("VNA_CONFIG".to_string(), "/etc/vna.toml".to_string()),
        ];
        let c = VnaConfig::load_with_env(Some(f.path()), env).unwrap();
        assert_eq!(c.dicom.ae_title, "ARCH");
        assert_eq!(c.dicom.listen, "127.0.0.1:11113");
        assert_eq!(c.http.listen, "127.0.0.1:8081");
        assert!(!c.query.case_insensitive_pn && !c.archive().query.case_insensitive_pn);
        assert_eq!(c.warm.compact_below, 0.75);
        assert_eq!(c.log.format, "json");
        assert_eq!(c.archive().data_dir, PathBuf::from("/data"));
        assert_eq!(c.dicom.remote_ae("WS").unwrap().port, 104);
    }

    #[test]
    fn unknown_keys_and_sections_name_their_line() {
        for (text, line, key) in [
            ("data_dir = \"x\"\n\n[dicom]\nae_titel = \"X\"\n", "line 4", "ae_titel"),
            ("[dicomm]\nae_title = \"X\"\n", "line 1", "dicomm"),
            ("[warm]\nzstd = 3\n", "line 2", "zstd"),
            (
                "[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\nuser = \"u\"\n",
                "line 5",
                "user",
            ),
        ] {
            let f = file(text);
            let e = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap_err().to_string();
            assert!(e.contains(line) && e.contains(key), "{text}: {e}");
        }
        let env = vec![("VNA_DICOMM__AE_TITLE".to_string(), "X".to_string())];
        assert!(VnaConfig::load_with_env(None, env).is_err(), "an unknown override is refused");
    }

    #[test]
    fn each_section_is_checked_by_its_owner() {
        for (text, key) in [
            ("[dicom]\nae_title = \"THIS_TITLE_IS_TOO_LONG\"\n", "dicom.ae_title"),
            ("[dicom]\nlisten = \"nowhere\"\n", "dicom.listen"),
            ("[http]\nbase_path = \"x/\"\n", "http.base_path"),
            ("[warm]\nzstd_level = 20\n", "warm.zstd_level"),
            ("[warm]\ncompact_below = 1.5\n", "warm.compact_below"),
            ("[warm]\nsegment_mb = 0\n", "warm.segment_mb"),
            ("[warm]\ndictionary_samples = 9\n", "warm.dictionary_samples"),
            ("[warm]\ndictionary_kb = 2048\n", "warm.dictionary_kb"),
            ("[tiers.cold]\nkind = \"warm\"\nzstd_level = 0\n", "tiers.cold"),
            ("[tiers.hot]\nkind = \"warm\"\n", "tiers.hot"),
            ("[tiers.x]\nkind = \"floppy\"\n", "floppy"),
            ("[lifecycle]\nrecall_tier = \"nowhere\"\n", "lifecycle.recall_tier"),
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\n", "url"),
            (
                "[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\n[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://y\"\n",
                "twice",
            ),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dimse\"\nae_title = \"A\"\nhost = \"h\"\n", "port"),
            ("[[sources]]\nname = \"a\"\nhttp_users = [\"nobody\"]\n", "nobody"),
        ] {
            let f = file(text);
            let e = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let f = file("[tiers.cold]\nkind = \"tape\"\nvolume_mb = 64\n[lifecycle]\nrecall_tier = \"cold\"\n[warm]\ndictionaries = true\ndictionary_samples = 50\n");
        let c = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap();
        assert_eq!(c.tier_names(), ["hot", "warm", "cold"]);
        assert_eq!((c.warm.dictionaries, c.warm.dictionary_samples, c.warm.dictionary_kb), (true, 50, 64));
    }

    #[test]
    fn migration_sources_are_validated() {
        let f = file("[[pull.sources]]\nname = \"old-pacs\"\nkind = \"dimse\"\nae_title = \"OLDPACS\"\nhost = \"10.0.0.9\"\nport = 104\nmax_studies_per_minute = 30\n[[pull.sources]]\nname = \"web\"\nkind = \"dicomweb\"\nurl = \"https://10.0.0.8/dicom-web\"\nmax_mb_per_sec = 2.5\n");
        let c = VnaConfig::load_with_env(Some(f.path()), vec![]).unwrap();
        assert_eq!(c.pull.sources.len(), 2);
        let dimse = c.pull.source("old-pacs").unwrap();
        assert_eq!(
            (dimse.kind, dimse.port, dimse.max_studies_per_minute),
            (pull::config::SourceKind::Dimse, Some(104), 30)
        );
        assert_eq!((dimse.timeout_secs, dimse.attempts), (300, 3));
        assert_eq!(c.pull.source("web").unwrap().max_mb_per_sec, 2.5);
        for (text, key) in [
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dimse\"\nhost = \"h\"\nport = 104\n", "ae_title"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dimse\"\nae_title = \"A\"\nhost = \"h\"\n", "port"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\n", "url"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"ftp://x\"\n", "url"),
            ("[[pull.sources]]\nname = \"a b\"\nkind = \"dicomweb\"\nurl = \"http://x\"\n", "name"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\nmax_mb_per_sec = -1.0\n", "max_mb_per_sec"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\n[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://y\"\n", "twice"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"ftp\"\nurl = \"http://y\"\n", "kind"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"https://\"\n", "url"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\nusername = \"u\"\n", "go together"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\nusername = \"u\"\npassword = \"p\"\nbearer_token = \"t\"\n", "either"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dimse\"\nae_title = \"A\"\nhost = \"h\"\nport = 104\npassword = \"p\"\n", "belong to kind"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"http://x\"\nca_file = \"/etc/hostname\"\n", "only applies to an https"),
            ("[[pull.sources]]\nname = \"a\"\nkind = \"dicomweb\"\nurl = \"https://x\"\nca_file = \"/no/such/ca.pem\"\n", "not a readable file"),
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
        let shown = archive_core::config::to_toml_redacted(&c);
        assert!(!shown.contains("tok-0123456789abcdef") && !shown.contains("s3-secret-value"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("AKIA-visible") && shown.contains("name = \"ops\""),
            "{shown}"
        );
        assert!(archive_core::config::to_toml(&c).contains("tok-0123456789abcdef"));
    }
}
