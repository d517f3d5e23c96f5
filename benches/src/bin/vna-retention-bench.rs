//! Retention benchmarks (issue 7): policy evaluation over 1,000,000 studies (decisions/s and
//! memory), the audit append rate (one writer and many), and ingest latency while a
//! 5,000-instance study is purged.
//!
//! `cargo run --release -p vna-benches --bin vna-retention-bench -- [--studies N] [--instances N]`
//! Set `VNA_BENCH_DIR` to put the data on a specific disk.

use archive_core::audit::{AuditAction, AuditEvent, AuditObject, AuditOutcome};
use archive_core::catalog::rocks::{RocksCatalog, RocksCatalogOptions};
use archive_core::catalog::Catalog;
use archive_core::config::ArchiveConfig;
use archive_core::deletion::{DeletionCause, DeletionRequest, DeletionState};
use archive_core::hold::{HoldId, HoldScope, LegalHold};
use archive_core::ingest::IngestInput;
use archive_core::model::{PatientKey, Source};
use archive_core::tier::{Tier, TierName};
use archive_core::uid::StudyUid;
use archive_core::Archive;
use bytes::Bytes;
use futures::StreamExt;
use policy::facts::StudyFacts;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tier_plugins::hot::HotTier;
use vna_benches::dataset::{DatasetGenerator, StudySpec};

const RULES: &str = r#"
[[floor]]
name = "adults"
keep = "10y"
when = { patient_age_min = 18 }

[[floor]]
name = "minors"
keep_until_age = 18
plus = "10y"
when = { patient_age_max = 17 }

[[rule]]
name = "research-exempt"
version = 1
action = "keep"
when = { institution = ["*RESEARCH*"] }

[[rule]]
name = "expired"
version = 3
action = "delete"
when = { older_than = "10y" }

[[rule]]
name = "mammo-long"
version = 1
action = "move"
to = "cold"
when = { modality = ["MG"], older_than = "1y", not_accessed_for = "180d" }

[[rule]]
name = "cold"
version = 2
action = "move"
to = "cold"
when = { older_than = "2y", not_accessed_for = "1y" }

[[rule]]
name = "warm"
version = 1
action = "move"
to = "warm"
when = { modality = ["CT", "MR", "PT"], not_accessed_for = "90d", tier = ["hot"] }
"#;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn synthetic_facts(i: u64) -> StudyFacts {
    let day = time::macros::date!(2010 - 01 - 01) + time::Duration::days((i * 7919 % 6200) as i64);
    let modality = ["CT", "MR", "CR", "DX", "MG", "US", "PT"][(i % 7) as usize];
    let minor = i.is_multiple_of(9);
    StudyFacts {
        study: StudyUid::new(format!("2.25.{}", 1_000_000_000 + i)).expect("valid"),
        patient: PatientKey::new("HOSP", format!("P{}", i / 3)),
        accession: Some(format!("A{i}")),
        modalities: BTreeSet::from([modality.to_string()]),
        sop_classes: BTreeSet::from(["1.2.840.10008.5.1.4.1.1.2".to_string()]),
        study_date: Some(day),
        received_at: day.midnight().assume_utc(),
        last_access: i.is_multiple_of(5).then(|| (day + time::Duration::days(400)).midnight().assume_utc()),
        source_aes: BTreeSet::from([format!("MOD{}", i % 40)]),
        institution: Some(if i.is_multiple_of(50) { "BRAIN RESEARCH" } else { "GENERAL HOSPITAL" }.to_string()),
        description: Some("SYNTHETIC".into()),
        patient_birth_date: Some(if minor {
            day - time::Duration::days(3650)
        } else {
            time::macros::date!(1960 - 05 - 05)
        }),
        patient_age_recorded: None,
        size_bytes: 50_000_000 + (i % 1000) * 100_000,
        instance_count: 200,
        tiers: BTreeSet::from([["hot", "warm", "cold"][(i % 3) as usize].to_string()]),
    }
}

fn policy_evaluation(n: u64) {
    let tiers: Vec<String> = ["hot", "warm", "cold"].iter().map(|s| s.to_string()).collect();
    let rules = policy::parse_rules(RULES, &tiers).expect("benchmark rules are valid");
    let holds: Vec<LegalHold> = (0..100)
        .map(|h| LegalHold {
            v: 1,
            id: HoldId(h),
            scope: HoldScope::Patient { patient: PatientKey::new("HOSP", format!("P{}", h * 1000)) },
            reason: "bench".into(),
            set_by: "bench".into(),
            set_at: time::OffsetDateTime::now_utc(),
        })
        .collect();
    let at = time::macros::datetime!(2026-11-23 0:00 UTC);
    let rss_before = rss_kib("VmRSS:");
    // Streaming, as the scheduler reads the catalog: facts are built, decided and dropped.
    let started = Instant::now();
    let mut sim = policy::simulate::Simulator::new(&rules, &holds, at, 100);
    for i in 0..n {
        sim.add(&synthetic_facts(i));
    }
    let elapsed = started.elapsed();
    let report = sim.finish();
    // The facts alone (to separate building them from deciding).
    let started = Instant::now();
    let mut sink = 0u64;
    for i in 0..n {
        sink = sink.wrapping_add(synthetic_facts(i).size_bytes);
    }
    let build_only = started.elapsed();
    let hwm = rss_kib("VmHWM:");
    println!("### policy evaluation over {n} studies (7 rules, 2 floors, 100 legal holds)");
    println!("| what | result |\n|---|---|");
    println!("| decisions/s (facts built + evaluated + simulated) | {:.0} |", n as f64 / elapsed.as_secs_f64());
    println!(
        "| time for {n} | {:.2} s (of which building facts {:.2} s) |",
        elapsed.as_secs_f64(),
        build_only.as_secs_f64()
    );
    println!("| memory: RSS before / peak | {} MiB / {} MiB |", rss_before / 1024, hwm / 1024);
    println!(
        "| outcome | {} deleted, {} blocked by floors, {} by holds, moves {:?} |",
        report.deleted.studies,
        report.blocked_by_floor.studies,
        report.blocked_by_hold.studies,
        report.moved.iter().map(|(k, v)| (k.clone(), v.studies)).collect::<Vec<_>>()
    );
    std::hint::black_box(sink);
}

fn audit_event(n: u64) -> AuditEvent {
    AuditEvent {
        time: time::OffsetDateTime::now_utc(),
        action: AuditAction::Query,
        actor: format!("VIEWER{}", n % 10),
        actor_address: "10.0.0.7".into(),
        objects: vec![AuditObject {
            patient: "P1^^^HOSP".into(),
            study: "2.25.1".into(),
            sop_instance: None,
            checksum: None,
        }],
        reason: None,
        outcome: AuditOutcome::Success,
        detail: Some("STUDY query on PatientID: 1 rows".into()),
    }
}

async fn audit_rate(dir: &std::path::Path) {
    let catalog =
        Arc::new(RocksCatalog::open(&dir.join("audit-catalog"), RocksCatalogOptions::default()).expect("catalog"));
    println!("\n### audit append rate (synced WAL, hash-chained)");
    println!("| writers | records | records/s |\n|---|---|---|");
    for writers in [1usize, 16, 64] {
        let records = if writers == 1 { 2_000 } else { 20_000 };
        let started = Instant::now();
        futures::stream::iter(0..records as u64)
            .map(|n| {
                let c = catalog.clone();
                async move { c.append_audit(audit_event(n)).await.expect("append") }
            })
            .buffer_unordered(writers)
            .collect::<Vec<_>>()
            .await;
        let s = started.elapsed().as_secs_f64();
        println!("| {writers} | {records} | {:.0} |", records as f64 / s);
    }
    let started = Instant::now();
    let verdict = catalog.verify_audit().expect("read");
    println!(
        "| verify | {} records | {:.0} records/s verified |",
        verdict.records().unwrap_or(0),
        verdict.records().unwrap_or(0) as f64 / started.elapsed().as_secs_f64()
    );
    catalog.close().await.expect("close");
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn ingest_latencies(archive: &Archive, objects: Vec<Bytes>) -> Vec<Duration> {
    let mut out = Vec::with_capacity(objects.len());
    for b in objects {
        let started = Instant::now();
        archive
            .ingest()
            .ingest(IngestInput::Part10(b), Source { actor: "BENCH".into(), address: String::new() })
            .await
            .expect("ingest");
        out.push(started.elapsed());
    }
    out.sort();
    out
}

async fn ingest_during_deletion(dir: &std::path::Path, instances: u32) {
    let mut config = ArchiveConfig { data_dir: dir.join("archive"), ..ArchiveConfig::default() };
    config.catalog.min_free_mb = 0;
    config.hot.min_free_mb = 0;
    let hot = HotTier::open(TierName::new("hot").expect("name"), config.hot_path()).expect("hot tier");
    let tiers: Vec<Arc<dyn Tier>> = vec![Arc::new(hot)];
    let (archive, _) = Archive::open(config, tiers, TierName::new("hot").expect("name")).await.expect("archive");
    archive.start_background().expect("background");
    let mut gen = DatasetGenerator::new(5);
    let big = gen.study(&StudySpec {
        modality: "CT",
        series: 10,
        instances_per_series: instances / 10,
        rows: 64,
        columns: 64,
        ..StudySpec::ct(0)
    });
    let study = StudyUid::new(&big[0].study).expect("uid");
    let objects: Vec<Bytes> = big.into_iter().map(|i| Bytes::from(i.bytes)).collect();
    let n = objects.len();
    let started = Instant::now();
    futures::stream::iter(objects)
        .map(|b| {
            let a = archive.clone();
            async move {
                a.ingest()
                    .ingest(IngestInput::Part10(b), Source { actor: "BENCH".into(), address: String::new() })
                    .await
                    .expect("ingest")
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let load = started.elapsed();
    let probe = |gen: &mut DatasetGenerator| -> Vec<Bytes> {
        gen.study(&StudySpec::tiny("MR", 1, 300)).into_iter().map(|i| Bytes::from(i.bytes)).collect()
    };
    let baseline = ingest_latencies(&archive, probe(&mut gen)).await;

    let d = archive
        .deleter()
        .request(DeletionRequest {
            study: study.clone(),
            instances: None,
            requested_by: "bench".into(),
            requested_from: String::new(),
            reason: "benchmark".into(),
            cause: DeletionCause::Request,
            grace: Some(Duration::ZERO),
            hide_immediately: false,
        })
        .await
        .expect("deletion");
    let deletion_started = Instant::now();
    let probe_objects = probe(&mut gen);
    let archive2 = archive.clone();
    let during = tokio::spawn(async move { ingest_latencies(&archive2, probe_objects).await });
    let done = archive.deleter().wait(d.id, Duration::from_secs(600)).await.expect("deletion state");
    let purge = deletion_started.elapsed();
    let during = during.await.expect("probe task");
    assert_eq!(done.state, DeletionState::Purged);
    let q = Instant::now();
    let mut query = archive_core::query::Query::new(archive_core::attribute::Level::Study);
    query.limit = Some(10);
    let _ = archive.query(&query);
    let query_ms = q.elapsed().as_secs_f64() * 1000.0;
    println!("\n### ingest latency while a {n}-instance study is purged");
    println!("loaded {n} instances in {:.1} s; purge of all {n} (catalog batches of 500 + hot-tier deletes) took {:.2} s ({:.0} instances/s); a study query right after: {query_ms:.1} ms", load.as_secs_f64(), purge.as_secs_f64(), n as f64 / purge.as_secs_f64());
    println!("| 300 sequential ingests | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---|---|---|");
    for (name, l) in [("before the deletion", &baseline), ("during the purge", &during)] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |",
            percentile(l, 0.5),
            percentile(l, 0.95),
            percentile(l, 0.99),
            percentile(l, 1.0)
        );
    }
    archive.close().await.expect("close");
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let studies = arg("--studies", 1_000_000);
    let instances = arg("--instances", 5_000) as u32;
    let dir = match std::env::var_os("VNA_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    policy_evaluation(studies);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(audit_rate(dir.path()));
    rt.block_on(ingest_during_deletion(dir.path(), instances));
    Ok(())
}
