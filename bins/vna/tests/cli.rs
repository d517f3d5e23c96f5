//! The `vna` binary's commands, run as a user would: help, config, import, audit.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

fn vna(config: &std::path::Path) -> Command {
    let mut c = Command::new(common::vna_bin());
    c.arg("--config").arg(config);
    c
}

fn write_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("vna.toml");
    std::fs::write(
        &path,
        format!("data_dir = \"{}\"\n[catalog]\nmin_free_mb = 0\n[hot]\nmin_free_mb = 0\n", dir.join("data").display()),
    )
    .unwrap();
    path
}

#[test]
fn help_explains_every_subcommand() {
    let out = Command::new(common::vna_bin()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for word in ["serve", "import", "config", "audit", "VNA_DICOM__LISTEN"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    for sub in [&["serve"][..], &["import"], &["config", "show"], &["audit", "verify"]] {
        let out = Command::new(common::vna_bin()).args(sub).arg("--help").output().unwrap();
        assert!(out.status.success(), "{sub:?} --help failed");
        assert!(out.stdout.len() > 80, "{sub:?} --help says too little");
    }
}

#[test]
fn bad_config_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "data_dir = \"x\"\n[dicom]\nae_title = \"VNA\"\nlisten_port = 104\n").unwrap();
    let out = vna(&path).args(["config", "check"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("line 4") && err.contains("listen_port"), "{err}");
}

#[test]
fn env_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let out = vna(&path).args(["config", "show"]).env("VNA_DICOM__AE_TITLE", "ARCHIVE2").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ae_title = \"ARCHIVE2\""));
}

#[test]
fn warm_options_are_checked_and_crash_points_are_not_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(
        "[warm]\nzstd_level = 9\ncompact_below = 0.3\ncompact_interval_secs = 60\ndictionaries = true\ndictionary_samples = 50\n",
    );
    std::fs::write(&path, &text).unwrap();
    // VNA_CONFIG and VNA_FAILPOINTS are read elsewhere, not refused as unknown keys.
    let out = vna(&path)
        .args(["config", "show"])
        .env("VNA_FAILPOINTS", "migrate.after_copy")
        .env("VNA_CONFIG", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    for line in [
        "zstd_level = 9",
        "compact_below = 0.3",
        "compact_interval_secs = 60",
        "dictionaries = true",
        "dictionary_samples = 50",
        "dictionary_kb = 64",
    ] {
        assert!(shown.contains(line), "{line} missing: {shown}");
    }
    let out = vna(&path).args(["config", "check"]).env("VNA_WARM__ZSTD_LEVEL", "25").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warm.zstd_level"), "{err}");
    let out = vna(&path).args(["config", "check"]).env("VNA_WARM__DICTIONARY_SAMPLES", "5").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warm.dictionary_samples"), "{err}");
}

#[test]
fn import_reports_and_skips_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("nested/deeper")).unwrap();
    let study =
        vna_benches::dataset::DatasetGenerator::new(3).study(&vna_benches::dataset::StudySpec::tiny("MR", 2, 5));
    for (i, inst) in study.iter().enumerate() {
        let sub = if i % 2 == 0 { "nested" } else { "nested/deeper" };
        std::fs::write(src.join(sub).join(format!("{i}.dcm")), &inst.bytes).unwrap();
    }
    std::fs::write(src.join("README.txt"), "not dicom").unwrap();
    std::fs::write(src.join("truncated.dcm"), &study[0].bytes[..400]).unwrap();

    let out = vna(&config).args(["import", "--no-progress"]).arg(&src).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "rejections give exit 1: {stdout}");
    assert!(stdout.contains("imported 10"), "{stdout}");
    assert!(stdout.contains("rejected 2"), "{stdout}");
    assert!(stdout.contains("README.txt") && stdout.contains("not a DICOM file"), "{stdout}");
    assert!(stdout.contains("truncated.dcm"), "{stdout}");

    // A second run finds only duplicates.
    let out = vna(&config).args(["import", "--no-progress"]).arg(src.join("nested")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("imported 0") && stdout.contains("duplicates 10"), "{stdout}");

    let out = vna(&config).args(["audit", "verify"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("10 records verified"), "{stdout}");
}

#[test]
fn config_show_hides_secrets_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("[[auth.users]]\nname = \"ops\"\ntoken = \"ops-token-0123456789abcdef\"\nrole = \"admin\"\n");
    std::fs::write(&path, &text).unwrap();
    let out = vna(&path).args(["config", "show"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("ops-token-0123456789abcdef") && shown.contains("token = \"<redacted>\""), "{shown}");
    let out = vna(&path).args(["config", "show", "--reveal-secrets"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("ops-token-0123456789abcdef"));
}
