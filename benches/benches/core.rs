//! Core benchmarks (issue: archive core): durable ingest of CT-sized instances through
//! the real hot tier and RocksDB catalog, and catalog query latency at 100,000 instances.
//!
//! `cargo bench -p vna-benches --bench core`. Set `VNA_BENCH_DIR` to put the data on a
//! specific disk (default: the system temp directory).
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::attribute::{Attribute, Level};
use archive_core::config::ArchiveConfig;
use archive_core::ingest::IngestInput;
use archive_core::model::Source;
use archive_core::query::Query;
use archive_core::tier::{Tier, TierName};
use archive_core::Archive;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tier_plugins::hot::HotTier;
use vna_benches::dataset::{DatasetGenerator, StudySpec};

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("VNA_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("VNA_BENCH_DIR is writable"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

async fn open(dir: &std::path::Path) -> Archive {
    let mut config = ArchiveConfig { data_dir: dir.to_path_buf(), ..ArchiveConfig::default() };
    config.catalog.min_free_mb = 0;
    config.hot.min_free_mb = 0;
    let hot = HotTier::open(TierName::new("hot").unwrap(), config.hot_path()).unwrap();
    let tiers: Vec<Arc<dyn Tier>> = vec![Arc::new(hot)];
    Archive::open(config, tiers, TierName::new("hot").unwrap()).await.unwrap().0
}

async fn ingest_all(archive: &Archive, objects: &[Bytes], concurrency: usize) {
    futures::stream::iter(objects.iter().cloned())
        .map(|b| {
            let archive = archive.clone();
            async move {
                let source = Source { actor: "BENCH".into(), address: String::new() };
                archive.ingest().ingest(IngestInput::Part10(b), source).await.unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
}

fn ingest_ct(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let objects: Vec<Bytes> = DatasetGenerator::new(1)
        .study(&StudySpec { series: 4, ..StudySpec::ct(250) })
        .into_iter()
        .map(|i| Bytes::from(i.bytes))
        .collect();
    let bytes: u64 = objects.iter().map(|b| b.len() as u64).sum();
    let mut group = c.benchmark_group("ingest_1000_ct_fsync");
    group
        .sample_size(10)
        // Flat sampling: every sample is whole runs of 1,000 instances into a fresh archive.
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(60))
        .throughput(Throughput::Elements(objects.len() as u64));
    for concurrency in [1usize, 4, 16] {
        group.bench_with_input(BenchmarkId::new("concurrency", concurrency), &concurrency, |b, &conc| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = bench_dir();
                    total += rt.block_on(async {
                        let archive = open(dir.path()).await;
                        let start = Instant::now();
                        ingest_all(&archive, &objects, conc).await;
                        let took = start.elapsed();
                        archive.close().await.unwrap();
                        took
                    });
                }
                total
            })
        });
    }
    group.finish();
    eprintln!("ingest set: {} instances, {:.1} MiB", objects.len(), bytes as f64 / (1 << 20) as f64);
}

fn query_100k(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = bench_dir();
    let archive = rt.block_on(open(dir.path()));
    // 10,000 studies of 2 series × 5 small instances = 100,000 instances.
    let mut generator = DatasetGenerator::new(42);
    let mut probe = None;
    let started = Instant::now();
    for chunk in 0..100 {
        let mut objects = Vec::new();
        for _ in 0..100 {
            let study = generator.study(&StudySpec::tiny(if chunk % 3 == 0 { "MR" } else { "CT" }, 2, 5));
            if probe.is_none() {
                probe = Some(study[0].clone());
            }
            objects.extend(study.into_iter().map(|i| Bytes::from(i.bytes)));
        }
        rt.block_on(ingest_all(&archive, &objects, 64));
    }
    let probe = probe.unwrap();
    let stats = archive_core::catalog::Catalog::stats(archive.catalog()).unwrap();
    eprintln!("populated {} instances in {:.1} s", stats.instances, started.elapsed().as_secs_f64());
    let parsed = archive_core::parse::parse_part10(&probe.bytes).unwrap();
    let patient_id = parsed.attrs.get(Attribute::PatientID).unwrap().to_string();
    let family = parsed.attrs.get(Attribute::PatientName).unwrap().split('^').next().unwrap().to_string();

    let queries: Vec<(&str, Query)> = vec![
        ("study_by_patient_id", Query::new(Level::Study).with(Attribute::PatientID, &patient_id).unwrap()),
        ("study_by_uid", Query::new(Level::Study).with(Attribute::StudyInstanceUID, &probe.study).unwrap()),
        (
            "study_by_name_prefix_limit_100",
            Query {
                limit: Some(100),
                ..Query::new(Level::Study).with(Attribute::PatientName, &format!("{family}*")).unwrap()
            },
        ),
        (
            "study_by_date_range_and_modality_limit_100",
            Query {
                limit: Some(100),
                ..Query::new(Level::Study)
                    .with(Attribute::StudyDate, "20200101-20200131")
                    .unwrap()
                    .with(Attribute::ModalitiesInStudy, "MR")
                    .unwrap()
            },
        ),
        ("series_of_study", Query::new(Level::Series).with(Attribute::StudyInstanceUID, &probe.study).unwrap()),
        (
            "instances_of_series",
            Query::new(Level::Instance)
                .with(Attribute::StudyInstanceUID, &probe.study)
                .unwrap()
                .with(Attribute::SeriesInstanceUID, &probe.series)
                .unwrap(),
        ),
        (
            "instance_by_sop_uid",
            Query::new(Level::Instance).with(Attribute::SOPInstanceUID, &probe.sop_instance).unwrap(),
        ),
        (
            "unindexed_description_scan_limit_10",
            Query {
                limit: Some(10),
                ..Query::new(Level::Study).with(Attribute::StudyDescription, "*NOMATCH*").unwrap()
            },
        ),
    ];
    let mut group = c.benchmark_group("query_at_100k_instances");
    for (name, q) in &queries {
        let rows = archive.query(q).unwrap().rows.len();
        eprintln!("{name}: {rows} rows");
        group.bench_function(*name, |b| b.iter(|| archive.query(q).unwrap()));
    }
    group.finish();
    rt.block_on(archive.close()).unwrap();
}

criterion_group!(benches, ingest_ct, query_100k);
criterion_main!(benches);
