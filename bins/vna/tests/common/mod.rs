//! Shared helpers of the end-to-end tests: archives on temporary directories with the
//! real RocksDB catalog and hot tier, and pydicom's test files.
#![allow(dead_code)]

use archive_core::config::VnaConfig;
use archive_core::tier::{Tier, TierName};
use archive_core::Archive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tier_plugins::hot::HotTier;

/// A configuration rooted in `dir` with no free-space floors.
pub fn config_in(dir: &Path) -> VnaConfig {
    let mut c = VnaConfig { data_dir: dir.to_path_buf(), ..VnaConfig::default() };
    c.catalog.min_free_mb = 0;
    c.hot.min_free_mb = 0;
    c
}

/// Opens an archive with the hot tier, as `vna serve` does.
pub async fn open_archive(config: VnaConfig) -> (Archive, Arc<HotTier>) {
    let hot = Arc::new(HotTier::open(TierName::new("hot").unwrap(), config.hot_path()).expect("hot tier opens"));
    let tiers: Vec<Arc<dyn Tier>> = vec![hot.clone()];
    let (archive, _) = Archive::open(config, tiers, TierName::new("hot").unwrap()).await.expect("archive opens");
    (archive, hot)
}

/// One of pydicom's bundled test files.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TestFile {
    pub path: PathBuf,
    pub acceptable: bool,
    pub transfer_syntax: Option<String>,
    pub sop_instance: Option<String>,
}

/// pydicom's test files, described by `testdata/pydicom_manifest.py`.
pub fn pydicom_files() -> Vec<TestFile> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/pydicom_manifest.py");
    let out = std::process::Command::new("python3").arg(&script).output().expect("python3 runs (install with .ci/run)");
    assert!(
        out.status.success(),
        "pydicom manifest failed (pip install -r testdata/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<TestFile> = serde_json::from_slice(&out.stdout).expect("manifest is JSON");
    assert!(files.len() > 100, "expected pydicom's test corpus, found {} files", files.len());
    files
}

/// The path of the built `vna` binary.
pub fn vna_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vna"))
}
