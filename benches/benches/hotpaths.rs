//! Micro-benchmarks of the per-instance hot paths: the header walk that indexes an object,
//! its checksum, the metadata JSON built at ingest, and a transfer syntax conversion.
//!
//! `cargo bench -p vna-benches --bench hotpaths`
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::checksum::Checksum;
use archive_core::metadata::instance_metadata;
use archive_core::parse::parse_part10;
use archive_core::transcode::transcode_part10;
use archive_core::uid::TransferSyntaxUid;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vna_benches::dataset::{DatasetGenerator, StudySpec};

fn hot_paths(c: &mut Criterion) {
    let ct = DatasetGenerator::new(3).study(&StudySpec::ct(1)).remove(0).bytes;
    let small = DatasetGenerator::new(4).study(&StudySpec::tiny("MR", 1, 1)).remove(0).bytes;
    let parsed = parse_part10(&ct).unwrap();
    let implicit = TransferSyntaxUid::new("1.2.840.10008.1.2").unwrap();

    let mut g = c.benchmark_group("per_instance");
    g.throughput(Throughput::Bytes(ct.len() as u64));
    g.bench_function("parse_ct_512x512", |b| b.iter(|| parse_part10(&ct).unwrap()));
    g.bench_function("checksum_ct_512x512", |b| b.iter(|| Checksum::of(&ct)));
    g.bench_function("metadata_json_ct", |b| b.iter(|| instance_metadata(&ct, &parsed).unwrap()));
    g.bench_function("explicit_to_implicit_ct", |b| {
        b.iter(|| {
            transcode_part10(&ct, "1.2.840.10008.1.2.1", &implicit, &parsed.sop_class, &parsed.sop_instance).unwrap()
        })
    });
    g.finish();

    let small_parsed = parse_part10(&small).unwrap();
    let mut g = c.benchmark_group("small_instance");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| b.iter(|| parse_part10(&small).unwrap()));
    g.bench_function("metadata_json", |b| b.iter(|| instance_metadata(&small, &small_parsed).unwrap()));
    g.finish();
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
