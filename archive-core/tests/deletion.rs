//! The deletion engine against holds that arrive late: a hold set while a purge is under way
//! stops it before its next batch (and it resumes once released), and a hold on the identity a
//! study was linked to since it was marked still cancels its deletion. Queries, the retrieve
//! selection and the read view leave out what deletions hide before the purge removes it.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::attribute::{Attribute, Level};
use archive_core::catalog::rocks::{RocksCatalog, RocksCatalogOptions};
use archive_core::catalog::Catalog;
use archive_core::deletion::{Deleter, DeletionCause, DeletionRequest, DeletionSettings, DeletionState};
use archive_core::disk::DiskGuard;
use archive_core::hold::HoldScope;
use archive_core::ingest::{Ingest, IngestInput};
use archive_core::matching::MatchOptions;
use archive_core::metrics::Metrics;
use archive_core::model::{PatientKey, Source};
use archive_core::query::Query;
use archive_core::tier::memory::MemoryTier;
use archive_core::tier::TierSet;
use archive_core::tier::{Tier, TierName};
use archive_core::uid::StudyUid;
use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::sync::Arc;
use std::time::Duration;

fn object(study: &str, n: u32, patient: &str) -> Bytes {
    let mut obj = InMemDicomObject::new_empty();
    let put =
        |o: &mut InMemDicomObject, t: Tag, vr: VR, v: &str| o.put(DataElement::new(t, vr, PrimitiveValue::from(v)));
    put(&mut obj, tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7");
    put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &format!("{study}.9.{n}"));
    put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, study);
    put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &format!("{study}.8"));
    put(&mut obj, tags::PATIENT_ID, VR::LO, patient);
    put(&mut obj, tags::ACCESSION_NUMBER, VR::SH, "ACC9");
    let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1")).unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    Bytes::from(out)
}

struct Fixture {
    catalog: Arc<dyn Catalog>,
    deleter: Deleter,
    retrieve: archive_core::retrieve::Retrieve,
    _dir: tempfile::TempDir,
}

async fn fixture(studies: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let catalog: Arc<dyn Catalog> =
        Arc::new(RocksCatalog::open(&dir.path().join("c"), RocksCatalogOptions::default()).unwrap());
    let hot = Arc::new(MemoryTier::new(TierName::new("hot").unwrap()));
    let tiers = Arc::new(TierSet::new(vec![hot as Arc<dyn Tier>], TierName::new("hot").unwrap()).unwrap());
    let settings = DeletionSettings { grace: Duration::ZERO, purge_batch: 2, delete_concurrency: 4 };
    let deleter = Deleter::new(catalog.clone(), tiers.clone(), settings, Metrics::new());
    let retrieve = archive_core::retrieve::Retrieve::new(catalog.clone(), tiers.clone(), Metrics::new());
    let ingest = Ingest::new(catalog.clone(), tiers, DiskGuard::new(), Default::default(), Metrics::new())
        .with_sop_locks(deleter.sop_locks());
    for (study, patient) in studies {
        for n in 0..5 {
            let src = Source { actor: "TEST".into(), address: String::new() };
            ingest.ingest(IngestInput::Part10(object(study, n, patient)), src).await.unwrap();
        }
    }
    Fixture { catalog, deleter, retrieve, _dir: dir }
}

fn request(study: &str, grace: Duration) -> DeletionRequest {
    DeletionRequest {
        study: StudyUid::new(study).unwrap(),
        instances: None,
        requested_by: "admin".into(),
        requested_from: String::new(),
        reason: "test".into(),
        cause: DeletionCause::Request,
        grace: Some(grace),
        hide_immediately: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_set_during_a_purge_stops_it_until_released() {
    let f = fixture(&[("1.2.3.1", "P1")]).await;
    // A deletion whose purge was under way when the process stopped.
    let marked = f.deleter.request(request("1.2.3.1", Duration::from_secs(3600))).await.unwrap();
    let mut purging = marked.clone();
    purging.state = DeletionState::Purging;
    f.catalog.save_deletion(purging, None).await.unwrap();
    let hold = f
        .deleter
        .set_hold(HoldScope::Accession { accession: "ACC9".into() }, "litigation", "counsel", "")
        .await
        .unwrap();
    assert_eq!(f.deleter.run_due().unwrap(), 1);
    let d = f.deleter.wait(marked.id, Duration::from_secs(2)).await.unwrap();
    assert_eq!(d.state, DeletionState::Purging, "stopped, not purged");
    assert_eq!(f.catalog.instances_of_study(&StudyUid::new("1.2.3.1").unwrap()).unwrap().len(), 5);
    let refused = f
        .catalog
        .audit_records(1)
        .unwrap()
        .into_iter()
        .flatten()
        .filter(|r| r.event.action == archive_core::audit::AuditAction::DeletionRefused)
        .count();
    assert_eq!(refused, 1);
    // Released: the next pass finishes it.
    f.deleter.release_hold(hold.id, "counsel", "", "case closed").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(f.deleter.run_due().unwrap(), 1);
    let d = f.deleter.wait(marked.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(d.state, DeletionState::Purged);
    assert_eq!(d.certificate.instances.len(), 5);
    assert!(f.catalog.study(&StudyUid::new("1.2.3.1").unwrap()).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_on_the_identity_a_study_was_linked_to_cancels_its_deletion() {
    let f = fixture(&[("1.2.3.2", "OLD"), ("1.2.3.3", "NEW")]).await;
    let d = f.deleter.request(request("1.2.3.2", Duration::from_secs(3600))).await.unwrap();
    archive_core::patient_link::link(
        f.catalog.as_ref(),
        PatientKey::new("", "OLD"),
        PatientKey::new("", "NEW"),
        "admin",
        "",
        "merge",
    )
    .await
    .unwrap();
    f.deleter
        .set_hold(HoldScope::Patient { patient: PatientKey::new("", "NEW") }, "litigation", "counsel", "")
        .await
        .unwrap();
    assert_eq!(f.deleter.deletion(d.id).unwrap().state, DeletionState::Cancelled);
}

#[tokio::test]
async fn an_absurd_grace_period_is_refused() {
    let f = fixture(&[("1.2.3.4", "P")]).await;
    let e = f.deleter.request(request("1.2.3.4", Duration::from_secs(u64::MAX / 2))).await.unwrap_err();
    assert!(e.to_string().contains("grace period"), "{e}");
}

/// Counts a query at `level` for `key = value` sees: (rows, the first row's studies, series,
/// instances), each count from the row's own Number of ... Related attributes.
fn seen(catalog: &dyn Catalog, level: Level, key: Attribute, value: &str) -> (usize, Option<(u64, u64, u64)>) {
    let q = Query::new(level).with(key, value).unwrap();
    let rows = catalog.query(&q, MatchOptions::default()).unwrap().rows;
    let counts = rows.first().map(|r| match level {
        Level::Patient => {
            let p = r.patient.as_ref().unwrap();
            (p.study_count, p.series_count, p.instance_count)
        }
        Level::Series => (0, 0, r.series.as_ref().unwrap().instance_count),
        _ => {
            let s = r.study.as_ref().unwrap();
            (1, s.series_count, s.instance_count)
        }
    });
    (rows.len(), counts)
}

fn rejection(study: &str, sops: &[u32]) -> DeletionRequest {
    DeletionRequest {
        instances: Some(
            sops.iter().map(|n| archive_core::uid::SopInstanceUid::new(format!("{study}.9.{n}")).unwrap()).collect(),
        ),
        hide_immediately: true,
        ..request(study, Duration::from_secs(3600))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_count_only_what_deletions_leave_visible_before_the_purge() {
    let f = fixture(&[("1.2.3.10", "P7"), ("1.2.3.11", "P7"), ("1.2.3.12", "P8")]).await;
    let cat = f.catalog.as_ref();
    assert_eq!(seen(cat, Level::Patient, Attribute::PatientID, "P7"), (1, Some((2, 2, 10))));

    // A whole study hidden (marked, hidden at once, not purged): the patient counts one study less.
    let whole = DeletionRequest { hide_immediately: true, ..request("1.2.3.10", Duration::from_secs(3600)) };
    f.deleter.request(whole).await.unwrap();
    assert_eq!(seen(cat, Level::Patient, Attribute::PatientID, "P7"), (1, Some((1, 1, 5))));
    assert_eq!(seen(cat, Level::Study, Attribute::StudyInstanceUID, "1.2.3.10").0, 0);

    // Two instances of the other study rejected: study, series and patient counts drop by two.
    f.deleter.request(rejection("1.2.3.11", &[0, 1])).await.unwrap();
    assert_eq!(seen(cat, Level::Patient, Attribute::PatientID, "P7"), (1, Some((1, 1, 3))));
    assert_eq!(seen(cat, Level::Study, Attribute::StudyInstanceUID, "1.2.3.11"), (1, Some((1, 1, 3))));
    assert_eq!(seen(cat, Level::Series, Attribute::StudyInstanceUID, "1.2.3.11"), (1, Some((0, 0, 3))));
    assert_eq!(seen(cat, Level::Instance, Attribute::StudyInstanceUID, "1.2.3.11").0, 3);

    // The rest rejected too: nothing of patient P7 is left to find; P8 is untouched.
    f.deleter.request(rejection("1.2.3.11", &[2, 3, 4])).await.unwrap();
    assert_eq!(seen(cat, Level::Patient, Attribute::PatientID, "P7").0, 0);
    assert_eq!(seen(cat, Level::Study, Attribute::StudyInstanceUID, "1.2.3.11").0, 0);
    assert_eq!(seen(cat, Level::Series, Attribute::StudyInstanceUID, "1.2.3.11").0, 0);
    assert_eq!(seen(cat, Level::Patient, Attribute::PatientID, "P8"), (1, Some((1, 1, 5))));
}

/// The SOP Instance UIDs (their last component) the retrieve selection gives for a query.
fn selected(f: &Fixture, level: Level, keys: &[(Attribute, &str)]) -> Vec<String> {
    let mut q = Query::new(level);
    for (a, v) in keys {
        q.add(*a, v).unwrap();
    }
    let records = f.retrieve.select(&q, MatchOptions::default()).unwrap();
    records.iter().map(|r| r.uid.as_str().rsplit('.').next().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retrieve_selection_and_the_read_view_leave_out_what_deletions_hide() {
    use archive_core::retrieve::{RetrieveError, RetrieveTarget};
    let f = fixture(&[("1.2.3.20", "P1"), ("1.2.3.21", "P1"), ("1.2.3.22", "P2")]).await;
    let all = |n: u32| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
    assert_eq!(selected(&f, Level::Study, &[(Attribute::StudyInstanceUID, "1.2.3.20")]), all(5));
    // Without the level's unique key a retrieve would take everything: refused.
    let q = Query::new(Level::Study).with(Attribute::PatientID, "P1").unwrap();
    assert!(matches!(f.retrieve.select(&q, MatchOptions::default()), Err(RetrieveError::InvalidSelection(_))));

    // Two instances of one study rejected (hidden at once), another study past its grace.
    f.deleter.request(rejection("1.2.3.20", &[1, 3])).await.unwrap();
    f.deleter.request(request("1.2.3.21", Duration::ZERO)).await.unwrap();
    let study = |uid: &str| selected(&f, Level::Study, &[(Attribute::StudyInstanceUID, uid)]);
    assert_eq!(study("1.2.3.20"), vec!["0", "2", "4"]);
    assert_eq!(study("1.2.3.21"), Vec::<String>::new());
    assert_eq!(study("1.2.3.22"), all(5));
    assert_eq!(study("1.2.3.20\\1.2.3.21\\1.2.3.22").len(), 8, "a list of studies, the hidden left out");
    let series = selected(
        &f,
        Level::Series,
        &[(Attribute::StudyInstanceUID, "1.2.3.20"), (Attribute::SeriesInstanceUID, "1.2.3.20.8")],
    );
    assert_eq!(series, vec!["0", "2", "4"]);
    let images = selected(
        &f,
        Level::Instance,
        &[(Attribute::SOPInstanceUID, "1.2.3.20.9.0\\1.2.3.20.9.1\\1.2.3.21.9.0\\2.25.404")],
    );
    assert_eq!(images, vec!["0"], "only the visible, known instance");
    assert_eq!(selected(&f, Level::Patient, &[(Attribute::PatientID, "P1")]), vec!["0", "2", "4"]);

    // WADO targets: the same selection; nothing visible is "not found".
    let st = |u: &str| StudyUid::new(u).unwrap();
    let sop = |u: &str| archive_core::uid::SopInstanceUid::new(u).unwrap();
    let se = |u: &str| archive_core::uid::SeriesUid::new(u).unwrap();
    assert_eq!(f.retrieve.instances(&RetrieveTarget::Study(st("1.2.3.20"))).unwrap().len(), 3);
    let hidden = RetrieveTarget::Instance(st("1.2.3.20"), se("1.2.3.20.8"), sop("1.2.3.20.9.1"));
    assert!(matches!(f.retrieve.instances(&hidden), Err(RetrieveError::NotFound(_))));
    let wrong_series = RetrieveTarget::Instance(st("1.2.3.20"), se("1.2.3.22.8"), sop("1.2.3.20.9.0"));
    assert!(matches!(f.retrieve.instances(&wrong_series), Err(RetrieveError::NotFound(_))));
    assert!(matches!(f.retrieve.open_instance(&sop("1.2.3.21.9.0")).await, Err(RetrieveError::NotFound(_))));

    // The read view: what storage commitment sees.
    let view = f.retrieve.visible();
    assert!(view.instance(&sop("1.2.3.20.9.0")).unwrap().is_some());
    assert!(view.instance(&sop("1.2.3.20.9.1")).unwrap().is_none(), "rejected");
    assert!(view.instance(&sop("1.2.3.21.9.0")).unwrap().is_none(), "study past its grace");
    assert!(f.catalog.instance(&sop("1.2.3.21.9.0")).unwrap().is_some(), "still in the catalog, not purged");
    assert_eq!(view.instances_of_study(&st("1.2.3.20")).unwrap().len(), 3);
}
