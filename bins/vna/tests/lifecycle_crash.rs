//! Crash safety of migrations: `vna serve` moves a study from the hot tier to the warm tier
//! (one put per instance) or to an S3 tier on `moto_server` (one `put_many`, one bundle, per
//! batch) and aborts (`VNA_FAILPOINTS`) at each step of a migration in turn — after the write
//! intents, after the copy, after the catalog commit, after the source delete. Restarted
//! without the crash point, the server resolves the interrupted writes, resumes the job and
//! finishes it; then the catalog names exactly one copy of each instance, on the target, no
//! object is left on any tier that the catalog does not name, no write intent is left, the
//! audit chain verifies, and every instance is served byte-exact over WADO-RS.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

mod common;

use archive_core::catalog::rocks::{RocksCatalog, RocksCatalogOptions};
use archive_core::catalog::Catalog;
use archive_core::tier::{Tier, TierName};
use archive_core::uid::StudyUid;
use common::{Server, ADMIN_TOKEN};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};
use vna_benches::dataset::{DatasetGenerator, StudySpec, SyntheticInstance};

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

fn stow(c: &Client, base: &str, instances: &[SyntheticInstance]) {
    let parts: Vec<&[u8]> = instances.iter().map(|i| i.bytes.as_slice()).collect();
    common::stow_parts(c, base, &parts);
}

/// The parts of a multipart answer (the bodies only).
fn parts_of(content_type: &str, body: &[u8]) -> Vec<Vec<u8>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap_or_else(|| panic!("no boundary in {content_type}"))
        .trim_matches('"')
        .to_string();
    let delimiter = format!("\r\n--{boundary}");
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut text = b"\r\n".to_vec();
    text.extend_from_slice(body);
    let mut rest = &text[..];
    let start = find(rest, delimiter.as_bytes()).expect("first delimiter");
    rest = &rest[start + delimiter.len()..];
    let mut out = Vec::new();
    while !rest.starts_with(b"--") {
        let head_end = find(rest, b"\r\n\r\n").expect("part headers");
        rest = &rest[head_end + 4..];
        let end = find(rest, delimiter.as_bytes()).expect("next delimiter");
        out.push(rest[..end].to_vec());
        rest = &rest[end + delimiter.len()..];
    }
    out
}

/// Waits for the job of `study` to end; returns it.
fn finished_job(c: &Client, base: &str, study: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let jobs: Value = c.get(format!("{base}/api/jobs")).send().unwrap().json().unwrap();
        let job = jobs["jobs"].as_array().unwrap().iter().find(|j| j["study"] == study).cloned();
        if let Some(job) = job.filter(|j| j["state"] == "done" || j["state"] == "failed") {
            return job;
        }
        assert!(Instant::now() < deadline, "the resumed job did not finish: {jobs}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Regular files under `root`, outside the hot tier's `.tmp` directory.
fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() && entry.file_name() != ".tmp" {
                dirs.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path().display().to_string());
            }
        }
    }
    out
}

/// Objects in a moto bucket: keys under `bundles/`, and the keys each bundle index names.
fn bundles_in(port: u16) -> (Vec<String>, BTreeSet<String>) {
    let url = format!("http://127.0.0.1:{port}/{BUCKET}?list-type=2&prefix=bundles/");
    let xml = client().get(url).send().unwrap().text().unwrap();
    let keys: Vec<String> =
        xml.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_string).collect();
    let mut named = BTreeSet::new();
    for index in keys.iter().filter(|k| k.ends_with(".index.json")) {
        // moto refuses unsigned object reads: read the index with boto3 (installed with moto).
        let read = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys,boto3; s3=boto3.client('s3',endpoint_url=sys.argv[1],aws_access_key_id='t',aws_secret_access_key='t',region_name='us-east-1'); sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[2],Key=sys.argv[3])['Body'].read())",
            ])
            .args([format!("http://127.0.0.1:{port}"), BUCKET.to_string(), index.clone()])
            .output()
            .unwrap();
        assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
        let index: Value = serde_json::from_slice(&read.stdout).unwrap();
        for e in index["entries"].as_array().unwrap() {
            named.insert(e["key"].as_str().unwrap().to_string());
        }
    }
    (keys, named)
}

const BUCKET: &str = "vna-crash";

/// Where the study moves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// The built-in warm tier: one put per instance.
    Warm,
    /// An S3 tier on moto: one `put_many` (one bundle) per batch.
    S3,
}

/// Crashes a move of a six-instance study from hot to `target` at `point`, restarts, and
/// checks the outcome; `removed` is how many interrupted writes the restart must resolve by
/// deleting an object.
fn crash_and_resume(point: &str, target: Target, seed: u64, removed: usize) {
    let dir = tempfile::tempdir().unwrap();
    let instances =
        DatasetGenerator::new(seed).study(&StudySpec { rows: 32, columns: 32, ..StudySpec::tiny("CT", 2, 3) });
    let study = instances[0].study.clone();
    let c = client();
    let moto = (target == Target::S3).then(common::Moto::start);
    let (to, extra) = match &moto {
        None => ("warm", String::new()),
        Some(m) => (
            "cold",
            format!(
                "\n[tiers.cold]\nkind = \"s3\"\nbucket = \"{BUCKET}\"\nendpoint = \"http://127.0.0.1:{}\"\naccess_key_id = \"t\"\nsecret_access_key = \"t\"\ncreate_bucket = true\n",
                m.port
            ),
        ),
    };

    // The first run dies at the crash point.
    let mut server = Server::start_env(dir.path(), &extra, &[("VNA_FAILPOINTS", point)]);
    let base = server.http();
    stow(&c, &base, &instances);
    // The process may abort before it answers.
    let answer = c
        .post(format!("{base}/api/studies/{study}/move"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"to": "{to}", "from": "hot", "reason": "crash test"}}"#))
        .send();
    if let Ok(rsp) = answer {
        assert_eq!(rsp.status(), StatusCode::ACCEPTED);
    }
    let status = server.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| panic!("{point} was not reached"));
    let log = server.log();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{point}: {status}\n{log}");
    assert!(log.contains(&format!("failpoint {point} reached")), "{log}");
    drop(server);

    // The second run resolves the interrupted writes, resumes the job and finishes it.
    let server = Server::start(dir.path(), &extra);
    let base = server.http();
    let job = finished_job(&c, &base, &study);
    let log = server.log();
    let opened = log.lines().find(|l| l.contains("archive opened")).unwrap_or_default();
    assert!(opened.ends_with(&format!("removed={removed}")), "{point}: recovery: {opened}\n{log}");
    assert_eq!(job["state"], "done", "{point}: {job}\n{log}");
    assert_eq!(job["instances_failed"], 0, "{job}");
    let summary: Value = c.get(format!("{base}/api/studies/{study}")).send().unwrap().json().unwrap();
    assert_eq!(summary["instance_count"], instances.len(), "{summary}");
    for series in summary["series"].as_array().unwrap() {
        let tiers = series["tiers"].as_object().unwrap();
        assert_eq!(tiers.keys().collect::<Vec<_>>(), [to], "{point}: {summary}");
        assert_eq!(tiers[to]["objects"], series["instance_count"], "{point}: {summary}");
    }
    assert!(server.stop().success());

    // With the server stopped: the catalog holds no intent and names one copy per instance, on
    // the target; the target holds exactly those objects; the hot tier holds nothing.
    let data = dir.path().join("data");
    let target_keys: BTreeSet<String> = {
        let catalog = RocksCatalog::open(&data.join("catalog"), RocksCatalogOptions::default()).unwrap();
        assert_eq!(catalog.pending_writes().unwrap(), Vec::new(), "{point}: write intents left");
        let records = catalog.instances_of_study(&StudyUid::new(&study).unwrap()).unwrap();
        assert_eq!(records.len(), instances.len());
        records
            .iter()
            .map(|r| {
                assert_eq!(r.locations.len(), 1, "{point}: {:?}", r.locations);
                assert_eq!(r.locations[0].tier.as_str(), to);
                r.locations[0].key.to_string()
            })
            .collect()
    };
    let warm = tier_plugins::warm::WarmTier::open(TierName::new("warm").unwrap(), data.join("warm")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let on_warm: BTreeSet<String> =
        runtime.block_on(warm.list(None)).unwrap().into_iter().map(|m| m.key.to_string()).collect();
    drop(warm);
    match &moto {
        None => assert_eq!(on_warm, target_keys, "{point}: the warm tier holds objects the catalog does not name"),
        Some(m) => {
            assert!(on_warm.is_empty(), "{point}: {on_warm:?}");
            let (keys, named) = bundles_in(m.port);
            assert_eq!(keys.len(), 2, "{point}: one bundle and its index: {keys:?}");
            assert_eq!(named, target_keys, "{point}: the bundle holds objects the catalog does not name");
        }
    }
    assert_eq!(files_under(&data.join("hot")), Vec::<String>::new(), "{point}: orphans on the hot tier");

    let verify = std::process::Command::new(common::vna_bin())
        .arg("--config")
        .arg(dir.path().join("vna.toml"))
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{point}: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // A third run serves every instance byte-exact (from S3 after recalling it to hot).
    let server = Server::start(dir.path(), &extra);
    let base = server.http();
    for i in &instances {
        let url = format!("{base}/dicom-web/studies/{}/series/{}/instances/{}", i.study, i.series, i.sop_instance);
        let rsp = c
            .get(url)
            .header("Accept", "multipart/related; type=\"application/dicom\"; transfer-syntax=*")
            .send()
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::OK, "{point}: {}", i.sop_instance);
        let ct = rsp.headers()["content-type"].to_str().unwrap().to_string();
        let body = rsp.bytes().unwrap();
        let parts = parts_of(&ct, &body);
        assert_eq!(parts.len(), 1, "{point}: {}", i.sop_instance);
        assert!(parts[0] == i.bytes, "{point}: {} is not byte-exact", i.sop_instance);
    }
    assert!(server.stop().success());
}

// The built-in warm tier takes one put per instance; the six instances make one commit.

#[test]
fn a_crash_after_the_write_intent_is_resumed() {
    // The first instance's intent: its object was never written.
    crash_and_resume("migrate.after_intent", Target::Warm, 11, 1);
}

#[test]
fn a_crash_after_the_copy_is_resumed() {
    // The first instance's copy on warm, which no record names yet.
    crash_and_resume("migrate.after_copy", Target::Warm, 12, 1);
}

#[test]
fn a_crash_after_the_commit_is_resumed() {
    // The six hot copies the commit dropped.
    crash_and_resume("migrate.after_commit", Target::Warm, 13, 6);
}

#[test]
fn a_crash_after_the_source_delete_is_resumed() {
    // Nothing: only the job's end was not saved.
    crash_and_resume("migrate.after_source_delete", Target::Warm, 14, 0);
}

// An S3 tier takes the six instances as one batch: one put_many, one bundle.

#[test]
fn a_batch_crashed_after_its_write_intents_is_resumed() {
    // Six intents, no bundle uploaded yet.
    crash_and_resume("migrate.after_intent", Target::S3, 21, 6);
}

#[test]
fn a_batch_crashed_after_its_copy_is_resumed() {
    // The six objects of the uploaded bundle; deleting the last one deletes the bundle.
    crash_and_resume("migrate.after_copy", Target::S3, 22, 6);
}

#[test]
fn a_batch_crashed_after_its_commit_is_resumed() {
    // The six hot copies the commit dropped.
    crash_and_resume("migrate.after_commit", Target::S3, 23, 6);
}

#[test]
fn a_batch_crashed_after_its_source_delete_is_resumed() {
    crash_and_resume("migrate.after_source_delete", Target::S3, 24, 0);
}
