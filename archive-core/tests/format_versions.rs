//! Versioned on-disk formats of the catalog: a catalog written by the previous version
//! (`testdata/formats/v1/catalog`, written by the code before record versions were read)
//! opens, and every record reads back exactly as that version read it
//! (`testdata/formats/v1/catalog-expected.json`, that version's own dump).
//!
//! `write_fixtures` (ignored) writes the fixtures with the code it is compiled with:
//! `VNA_FORMAT_FIXTURES=$PWD/testdata/formats/vN cargo test -p archive-core --test
//! format_versions -- --ignored write_fixtures` keeps the data of a format version before the
//! next change.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::catalog::rocks::{RocksCatalog, RocksCatalogOptions};
use archive_core::catalog::{Catalog, CatalogError, WriteIntent};
use archive_core::deletion::{Deleter, DeletionCause, DeletionRequest, DeletionSettings};
use archive_core::disk::DiskGuard;
use archive_core::format::FormatError;
use archive_core::hold::HoldScope;
use archive_core::ingest::{Ingest, IngestInput};
use archive_core::lifecycle::job::{Job, JobId, JobKind, JobState, JOB_VERSION};
use archive_core::metrics::Metrics;
use archive_core::model::{PatientKey, Source};
use archive_core::tier::memory::MemoryTier;
use archive_core::tier::TierSet;
use archive_core::tier::{ObjectKey, Tier, TierName};
use archive_core::uid::{SopInstanceUid, StudyUid};
use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// The fixtures of the previous version.
fn v1_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/formats/v1")
}

const STUDIES: [(&str, &str); 3] = [
    ("1.2.826.0.1.3680043.10.1.1", "OLD"),
    ("1.2.826.0.1.3680043.10.1.2", "NEW"),
    ("1.2.826.0.1.3680043.10.1.3", "P3"),
];

fn object(study: &str, n: u32, patient: &str) -> Bytes {
    let mut obj = InMemDicomObject::new_empty();
    let put =
        |o: &mut InMemDicomObject, t: Tag, vr: VR, v: &str| o.put(DataElement::new(t, vr, PrimitiveValue::from(v)));
    put(&mut obj, tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7");
    put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &format!("{study}.9.{n}"));
    put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, study);
    put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &format!("{study}.8"));
    put(&mut obj, tags::PATIENT_ID, VR::LO, patient);
    put(&mut obj, tags::PATIENT_NAME, VR::PN, &format!("{patient}^Test"));
    put(&mut obj, tags::STUDY_DATE, VR::DA, "20260102");
    put(&mut obj, tags::MODALITY, VR::CS, "OT");
    put(&mut obj, tags::ACCESSION_NUMBER, VR::SH, &format!("ACC-{patient}"));
    let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1")).unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    Bytes::from(out)
}

/// Everything the catalog holds, as this version reads it, in a stable order.
fn dump(catalog: &dyn Catalog) -> Value {
    let mut studies = Vec::new();
    let mut series = Vec::new();
    let mut instances = Vec::new();
    let mut metadata = Vec::new();
    let mut patients = Vec::new();
    for uid in catalog.study_uids(None, 1000).unwrap() {
        let study = catalog.study(&uid).unwrap().unwrap();
        let patient = catalog.patient(&study.patient).unwrap().unwrap();
        if !patients.contains(&patient) {
            patients.push(patient);
        }
        studies.push(study);
        series.extend(catalog.series_of_study(&uid).unwrap());
        let insts = catalog.instances_of_study(&uid).unwrap();
        for (inst, meta) in insts.iter().zip(catalog.instance_metadata(&insts).unwrap()) {
            metadata.push(json!({
                "sop_instance": inst.uid.as_str(),
                "metadata": meta.map(|m| String::from_utf8(m).unwrap()),
            }));
            // Lookups by UID alone go through the by-UID column families.
            assert_eq!(catalog.instance(&inst.uid).unwrap().as_ref(), Some(inst));
        }
        instances.extend(insts);
    }
    patients.sort_by(|a, b| a.key.cmp(&b.key));
    let audit: Vec<_> = catalog.audit_records(1).unwrap().into_iter().map(|r| r.unwrap()).collect();
    json!({
        "patients": patients,
        "studies": studies,
        "series": series,
        "instances": instances,
        "metadata": metadata,
        "deletions": catalog.deletions().unwrap(),
        "holds": catalog.holds().unwrap(),
        "links": catalog.links().unwrap(),
        "jobs": catalog.jobs().unwrap(),
        "intents": catalog.pending_writes().unwrap(),
        "stats": catalog.stats().unwrap(),
        "audit": audit,
        "audit_verified": catalog.verify_audit().unwrap().records().unwrap(),
    })
}

/// Copies a fixture directory (opening a catalog writes to it).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the format fixtures of the current version (see the module docs)"]
async fn write_fixtures() {
    let out = PathBuf::from(std::env::var("VNA_FORMAT_FIXTURES").expect("set VNA_FORMAT_FIXTURES"));
    let path = out.join("catalog");
    if path.exists() {
        std::fs::remove_dir_all(&path).unwrap();
    }
    std::fs::create_dir_all(&out).unwrap();
    {
        let rocks = Arc::new(RocksCatalog::open(&path, RocksCatalogOptions::default()).unwrap());
        let catalog: Arc<dyn Catalog> = rocks.clone();
        let hot = Arc::new(MemoryTier::new(TierName::new("hot").unwrap()));
        let tiers = Arc::new(TierSet::new(vec![hot as Arc<dyn Tier>], TierName::new("hot").unwrap()).unwrap());
        let settings = DeletionSettings { grace: Duration::ZERO, purge_batch: 2, delete_concurrency: 4 };
        let deleter = Deleter::new(catalog.clone(), tiers.clone(), settings, Metrics::new());
        let ingest = Ingest::new(catalog.clone(), tiers, DiskGuard::new(), Default::default(), Metrics::new())
            .with_sop_locks(deleter.sop_locks());
        for (study, patient) in STUDIES {
            for n in 0..2 {
                let src = Source { actor: "FIXTURE".into(), address: "127.0.0.1".into() };
                ingest.ingest(IngestInput::Part10(object(study, n, patient)), src).await.unwrap();
            }
        }
        archive_core::patient_link::link(
            catalog.as_ref(),
            PatientKey::new("", "OLD"),
            PatientKey::new("", "NEW"),
            "admin",
            "10.0.0.1",
            "registration error",
        )
        .await
        .unwrap();
        let study3 = StudyUid::new(STUDIES[2].0).unwrap();
        deleter
            .request(DeletionRequest {
                study: study3.clone(),
                instances: Some(vec![SopInstanceUid::new(format!("{}.9.1", STUDIES[2].0)).unwrap()]),
                requested_by: "admin".into(),
                requested_from: "10.0.0.1".into(),
                reason: "duplicate".into(),
                cause: DeletionCause::Request,
                grace: Some(Duration::from_secs(30 * 24 * 3600)),
                hide_immediately: false,
            })
            .await
            .unwrap();
        deleter
            .set_hold(HoldScope::Accession { accession: "ACC-NEW".into() }, "litigation", "counsel", "")
            .await
            .unwrap();
        let now = OffsetDateTime::now_utc();
        catalog
            .save_job(&Job {
                v: JOB_VERSION,
                id: JobId(7),
                kind: JobKind::Move,
                study: study3.clone(),
                from: Some(TierName::new("hot").unwrap()),
                to: TierName::new("warm").unwrap(),
                keep_source: false,
                requested_by: "rule age".into(),
                reason: Some("rule age v1".into()),
                state: JobState::Queued,
                instances_total: 2,
                instances_done: 0,
                instances_failed: 0,
                bytes_copied: 0,
                last_error: None,
                created_at: now,
                updated_at: now,
            })
            .unwrap();
        catalog
            .begin_write(&WriteIntent {
                tier: TierName::new("warm").unwrap(),
                key: ObjectKey::new("left/by/a/crash").unwrap(),
                sop_instance: SopInstanceUid::new("1.2.3.4").unwrap(),
            })
            .unwrap();
        catalog.record_access(&study3, now).await.unwrap();
        std::fs::write(out.join("catalog-expected.json"), serde_json::to_vec_pretty(&dump(catalog.as_ref())).unwrap())
            .unwrap();
        rocks.close().await.unwrap();
        drop(deleter);
        drop(ingest);
        // Let the committer go before the directory is cleaned.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(catalog);
    }
    for e in std::fs::read_dir(&path).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "LOG" || name.starts_with("LOG.old") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
}

/// Opens a RocksDB directory with all of its column families (to read or plant markers).
fn raw_db(path: &Path) -> rocksdb::DB {
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), path).unwrap();
    rocksdb::DB::open_cf(&rocksdb::Options::default(), path, cfs).unwrap()
}

fn expected_v1() -> Value {
    serde_json::from_slice(&std::fs::read(v1_dir().join("catalog-expected.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_of_version_1_reads_back_exactly_as_version_1_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog");
    copy_dir(&v1_dir().join("catalog"), &path);
    let expected = expected_v1();
    {
        let catalog = RocksCatalog::open(&path, RocksCatalogOptions::default()).unwrap();
        let got = dump(&catalog);
        for (k, v) in expected.as_object().unwrap() {
            assert_eq!(&got[k], v, "{k} differs from what version 1 read");
        }
        assert_eq!(got, expected);
        assert!(expected["audit_verified"].as_u64().unwrap() > 5, "the fixture has an audit trail");
        // It keeps working: a new record joins the old ones, and the chain keeps verifying.
        let hot = Arc::new(MemoryTier::new(TierName::new("hot").unwrap()));
        let tiers = Arc::new(TierSet::new(vec![hot as Arc<dyn Tier>], TierName::new("hot").unwrap()).unwrap());
        let catalog: Arc<dyn Catalog> = Arc::new(catalog);
        let ingest = Ingest::new(catalog.clone(), tiers, DiskGuard::new(), Default::default(), Metrics::new());
        let src = Source { actor: "NEW".into(), address: String::new() };
        ingest.ingest(IngestInput::Part10(object("1.2.826.0.1.3680043.10.1.4", 0, "P4")), src).await.unwrap();
        // Written now: the current record versions.
        let new = catalog.instance(&SopInstanceUid::new("1.2.826.0.1.3680043.10.1.4.9.0").unwrap()).unwrap().unwrap();
        assert_eq!(new.v, archive_core::model::RECORD_VERSION);
        let last = catalog.audit_records(1).unwrap().pop().unwrap().unwrap();
        assert_eq!(last.v, archive_core::audit::AUDIT_RECORD_VERSION);
        let verified = catalog.verify_audit().unwrap().records().unwrap();
        assert_eq!(verified, expected["audit_verified"].as_u64().unwrap() + 1);
    }
    // Still marked version 1 (the current catalog layout).
    let db = raw_db(&path);
    let marker = db.get_cf(db.cf_handle("meta").unwrap(), b"schema_version").unwrap().unwrap();
    assert_eq!(marker, b"1");
}

#[tokio::test]
async fn a_new_catalog_carries_its_format_marker_and_records_their_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog");
    drop(RocksCatalog::open(&path, RocksCatalogOptions::default()).unwrap());
    let db = raw_db(&path);
    let marker = db.get_cf(db.cf_handle("meta").unwrap(), b"schema_version").unwrap().unwrap();
    assert_eq!(marker, archive_core::catalog::keys::SCHEMA_VERSION.to_string().as_bytes());
    // And each record kind of the fixture has its `v`.
    let expected = expected_v1();
    for kind in ["patients", "studies", "series", "instances", "deletions", "holds", "links", "jobs", "audit"] {
        let records = expected[kind].as_array().unwrap();
        assert!(!records.is_empty(), "the fixture has {kind}");
        assert!(records.iter().all(|r| r["v"] == 1), "{kind}");
    }
}

fn expect_newer(e: CatalogError, found: u32) {
    match &e {
        CatalogError::Format { source: FormatError::UnsupportedVersion { found: f, supported, .. }, .. } => {
            assert_eq!((*f, *supported), (found, 1), "{e}");
        }
        other => panic!("expected a format error, got {other:?}"),
    }
    assert!(e.to_string().contains("newer"), "{e}");
}

#[tokio::test]
async fn a_catalog_of_a_newer_format_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog");
    copy_dir(&v1_dir().join("catalog"), &path);
    {
        let mut db = raw_db(&path);
        db.put_cf(db.cf_handle("meta").unwrap(), b"schema_version", b"2").unwrap();
        // A newer vna may have added a column family too: the answer is still the format error.
        db.create_cf("added_by_version_2", &rocksdb::Options::default()).unwrap();
    }
    let e = RocksCatalog::open(&path, RocksCatalogOptions::default()).unwrap_err();
    expect_newer(e, 2);
    // Nothing was changed.
    let db = raw_db(&path);
    assert_eq!(db.get_cf(db.cf_handle("meta").unwrap(), b"schema_version").unwrap().unwrap(), b"2");
    db.put_cf(db.cf_handle("meta").unwrap(), b"schema_version", b"not a number").unwrap();
    drop(db);
    let e = RocksCatalog::open(&path, RocksCatalogOptions::default()).unwrap_err();
    assert!(matches!(e, CatalogError::Format { source: FormatError::UnknownVersion { found: None, .. }, .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_a_newer_format_are_refused_with_a_typed_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog");
    copy_dir(&v1_dir().join("catalog"), &path);
    let study = StudyUid::new(STUDIES[1].0).unwrap();
    {
        // Records as a newer vna would write them: v 2, a field this vna does not know.
        let db = raw_db(&path);
        let studies = db.cf_handle("studies").unwrap();
        let mut rec: Value = serde_json::from_slice(&db.get_cf(studies, study.as_str()).unwrap().unwrap()).unwrap();
        rec["v"] = 2.into();
        rec["retention_class"] = "forever".into();
        db.put_cf(studies, study.as_str(), serde_json::to_vec(&rec).unwrap()).unwrap();
        let holds = db.cf_handle("holds").unwrap();
        let (k, v) = db.iterator_cf(holds, rocksdb::IteratorMode::Start).next().unwrap().unwrap();
        let mut hold: Value = serde_json::from_slice(&v).unwrap();
        hold["v"] = 3.into();
        db.put_cf(holds, k, serde_json::to_vec(&hold).unwrap()).unwrap();
        let audit = db.cf_handle("audit").unwrap();
        let (k, v) = db.iterator_cf(audit, rocksdb::IteratorMode::End).next().unwrap().unwrap();
        let mut rec: Value = serde_json::from_slice(&v).unwrap();
        rec["v"] = 2.into();
        db.put_cf(audit, k, serde_json::to_vec(&rec).unwrap()).unwrap();
    }
    // The newest audit record is read at open (the chain's head): refused.
    expect_newer(RocksCatalog::open(&path, RocksCatalogOptions::default()).unwrap_err(), 2);
    {
        let db = raw_db(&path);
        let audit = db.cf_handle("audit").unwrap();
        let (k, _) = db.iterator_cf(audit, rocksdb::IteratorMode::End).next().unwrap().unwrap();
        let seq = u64::from_be_bytes(k[..8].try_into().unwrap());
        let expected = expected_v1();
        let original = &expected["audit"].as_array().unwrap()[seq as usize - 1];
        db.put_cf(audit, k, serde_json::to_vec(original).unwrap()).unwrap();
    }
    let catalog = RocksCatalog::open(&path, RocksCatalogOptions::default()).unwrap();
    expect_newer(catalog.study(&study).unwrap_err(), 2);
    expect_newer(catalog.holds().unwrap_err(), 3);
    // A query that meets the record fails with the error; it does not panic or skip it.
    let q = archive_core::query::Query::new(archive_core::attribute::Level::Study);
    expect_newer(catalog.query(&q, archive_core::matching::MatchOptions::default()).unwrap_err(), 2);
    // Other records still read.
    assert!(catalog.study(&StudyUid::new(STUDIES[2].0).unwrap()).unwrap().is_some());
    assert_eq!(catalog.verify_audit().unwrap().records().unwrap(), expected_v1()["audit_verified"].as_u64().unwrap());
}
