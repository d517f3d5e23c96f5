//! Crash safety of ingest: a child process ingests concurrently and reports each
//! acknowledged instance; the test kills it with SIGKILL at varying moments, reopens the
//! archive and checks that every acknowledged instance is present and intact, that no
//! object in the hot tier is unreferenced, and that the audit chain holds.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]
// One of the few files allowed `unsafe` (workspace lint): SIGKILL to the server under test through libc; each block has its SAFETY note.
#![allow(unsafe_code)]

mod common;

use archive_core::catalog::Catalog;
use archive_core::checksum::Checksum;
use archive_core::ingest::IngestInput;
use archive_core::model::Source;
use archive_core::tier::Tier;
use bytes::Bytes;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "VNA_CRASH_TEST_DIR";

/// Runs only as the child of `acknowledged_instances_survive_kill_9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the crash test"]
async fn crash_child() {
    let dir = std::env::var(CHILD_ENV).expect("run by the crash test");
    let round: u64 = std::env::var("VNA_CRASH_ROUND").unwrap().parse().unwrap();
    let (archive, _) = common::open_archive(common::config_in(std::path::Path::new(&dir))).await;
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let archive = archive.clone();
        let stdout = stdout.clone();
        tasks.push(tokio::spawn(async move {
            let mut generator = vna_benches::dataset::DatasetGenerator::new(round * 1000 + task);
            let spec =
                vna_benches::dataset::StudySpec { rows: 64, columns: 64, ..vna_benches::dataset::StudySpec::ct(20) };
            for _ in 0..500 {
                for inst in generator.study(&spec) {
                    let bytes = Bytes::from(inst.bytes);
                    let checksum = Checksum::of(&bytes);
                    let source = Source { actor: "CRASH".into(), address: format!("task{task}") };
                    archive.ingest().ingest(IngestInput::Part10(bytes), source).await.expect("ingest");
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ACK {} {}", inst.sop_instance, checksum.to_hex()).unwrap();
                    out.flush().unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_instances_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(String, String)> = Vec::new();
    // Kill after different numbers of acknowledgements to land on different steps.
    for (round, kill_after) in [(1u64, 1usize), (2, 37), (3, 250)] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("VNA_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (sop, sum) = rest.split_once(' ').unwrap();
                acked.push((sop.to_string(), sum.to_string()));
                seen += 1;
                if seen == kill_after {
                    // SAFETY: kill(2) takes plain integers; the pid is our own child's.
                    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                }
            }
        }
        let status = child.wait().unwrap();
        assert!(seen >= kill_after, "round {round}: the child stopped after {seen} acks ({status})");
        assert!(!status.success(), "round {round}: the child finished before it was killed");

        // Reopen: recovery runs; every acknowledged instance is present and intact.
        let (archive, hot) = common::open_archive(common::config_in(dir.path())).await;
        assert!(archive.catalog().pending_writes().unwrap().is_empty(), "recovery resolved every intent");
        for (sop, sum) in &acked {
            let uid = archive_core::uid::SopInstanceUid::new(sop).unwrap();
            let rec = archive.catalog().instance(&uid).unwrap().unwrap_or_else(|| panic!("acked {sop} lost"));
            assert_eq!(rec.checksum.to_hex(), *sum);
            let (_, bytes) = archive.retrieve().read(rec).await.expect("acked instance readable");
            assert_eq!(Checksum::of(&bytes).to_hex(), *sum);
        }
        // No orphans: every object in the hot tier is named by the catalog.
        let mut referenced = HashSet::new();
        for study in
            archive.query(&archive_core::query::Query::new(archive_core::attribute::Level::Study)).unwrap().rows
        {
            for inst in archive.catalog().instances_of_study(&study.study.unwrap().uid).unwrap() {
                for loc in inst.locations {
                    referenced.insert(loc.key.to_string());
                }
            }
        }
        for obj in hot.list(None).await.unwrap() {
            assert!(referenced.contains(obj.key.as_str()), "round {round}: orphan object {}", obj.key);
        }
        let stats = archive.catalog().stats().unwrap();
        assert_eq!(stats.instances as usize, referenced.len());
        assert!(archive.catalog().verify_audit().unwrap().is_intact(), "audit chain intact");
        archive.close().await.unwrap();
    }
}
