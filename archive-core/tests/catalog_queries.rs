//! Catalog queries on a real RocksDB catalog, table-driven against the matching rules of
//! PS3.4 C.2.2.2 at PATIENT, STUDY, SERIES and IMAGE level, with limit and offset.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::attribute::{Attribute, Level};
use archive_core::catalog::rocks::{RocksCatalog, RocksCatalogOptions};
use archive_core::catalog::{Catalog, ConflictPolicy};
use archive_core::disk::DiskGuard;
use archive_core::ingest::{Ingest, IngestInput};
use archive_core::matching::MatchOptions;
use archive_core::metrics::Metrics;
use archive_core::model::Source;
use archive_core::query::Query;
use archive_core::tier::memory::MemoryTier;
use archive_core::tier::TierSet;
use archive_core::tier::{Tier, TierName};
use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::sync::Arc;

struct Spec {
    patient_id: &'static str,
    issuer: &'static str,
    name: &'static str,
    study: &'static str,
    date: &'static str,
    accession: &'static str,
    series: &'static str,
    modality: &'static str,
    sop: &'static str,
    number: &'static str,
}

const DATA: &[Spec] = &[
    Spec {
        patient_id: "P1",
        issuer: "HOSP_A",
        name: "Doe^John",
        study: "1.2.1",
        date: "20060705",
        accession: "ACC1",
        series: "1.2.1.1",
        modality: "CT",
        sop: "1.2.1.1.1",
        number: "1",
    },
    Spec {
        patient_id: "P1",
        issuer: "HOSP_A",
        name: "Doe^John",
        study: "1.2.1",
        date: "20060705",
        accession: "ACC1",
        series: "1.2.1.1",
        modality: "CT",
        sop: "1.2.1.1.2",
        number: "2",
    },
    Spec {
        patient_id: "P1",
        issuer: "HOSP_A",
        name: "Doe^John",
        study: "1.2.1",
        date: "20060705",
        accession: "ACC1",
        series: "1.2.1.2",
        modality: "MR",
        sop: "1.2.1.2.1",
        number: "1",
    },
    Spec {
        patient_id: "P1",
        issuer: "HOSP_B",
        name: "Dow^Jane",
        study: "1.2.2",
        date: "20060706",
        accession: "ACC2",
        series: "1.2.2.1",
        modality: "MR",
        sop: "1.2.2.1.1",
        number: "1",
    },
    Spec {
        patient_id: "P2",
        issuer: "HOSP_A",
        name: "Smith^Anna^^Dr",
        study: "1.2.3",
        date: "20060707",
        accession: "ACC3",
        series: "1.2.3.1",
        modality: "CR",
        sop: "1.2.3.1.1",
        number: "1",
    },
    Spec {
        patient_id: "P3",
        issuer: "",
        name: "DOE^JOHANNES",
        study: "1.2.4",
        date: "20070101",
        accession: "X-17",
        series: "1.2.4.1",
        modality: "US",
        sop: "1.2.4.1.1",
        number: "10",
    },
    Spec {
        patient_id: "P3",
        issuer: "",
        name: "DOE^JOHANNES",
        study: "1.2.5",
        date: "20050101",
        accession: "",
        series: "1.2.5.1",
        modality: "CT",
        sop: "1.2.5.1.1",
        number: "3",
    },
];

fn object(s: &Spec) -> Bytes {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, v: &str| {
        if !v.is_empty() {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        }
    };
    put(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7");
    put(tags::SOP_INSTANCE_UID, VR::UI, s.sop);
    put(tags::STUDY_DATE, VR::DA, s.date);
    put(tags::ACCESSION_NUMBER, VR::SH, s.accession);
    put(tags::MODALITY, VR::CS, s.modality);
    put(tags::PATIENT_NAME, VR::PN, s.name);
    put(tags::PATIENT_ID, VR::LO, s.patient_id);
    put(tags::ISSUER_OF_PATIENT_ID, VR::LO, s.issuer);
    put(tags::STUDY_INSTANCE_UID, VR::UI, s.study);
    put(tags::SERIES_INSTANCE_UID, VR::UI, s.series);
    put(tags::INSTANCE_NUMBER, VR::IS, s.number);
    let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1")).unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    Bytes::from(out)
}

async fn catalog() -> (tempfile::TempDir, Arc<RocksCatalog>) {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(RocksCatalog::open(dir.path(), RocksCatalogOptions::default()).unwrap());
    let tier: Arc<dyn Tier> = Arc::new(MemoryTier::new(TierName::new("mem").unwrap()));
    let tiers = Arc::new(TierSet::new(vec![tier], TierName::new("mem").unwrap()).unwrap());
    let ingest = Ingest::new(catalog.clone(), tiers, DiskGuard::new(), ConflictPolicy::Reject, Metrics::new());
    for s in DATA {
        let source = Source { actor: "T".into(), address: String::new() };
        ingest.ingest(IngestInput::Part10(object(s)), source).await.unwrap();
    }
    (dir, catalog)
}

fn uids(cat: &RocksCatalog, q: &Query, opts: MatchOptions) -> Vec<String> {
    let page = cat.query(q, opts).unwrap();
    let mut out: Vec<String> = page
        .rows
        .iter()
        .map(|r| match q.level {
            Level::Patient => {
                let p = r.patient.as_ref().unwrap();
                format!("{}@{}", p.key.patient_id, p.key.issuer)
            }
            Level::Study => r.study.as_ref().unwrap().uid.to_string(),
            Level::Series => r.series.as_ref().unwrap().uid.to_string(),
            Level::Instance => r.instance.as_ref().unwrap().uid.to_string(),
        })
        .collect();
    out.sort();
    out
}

/// Level, keys, options, expected UIDs.
type Case = (Level, Vec<(Attribute, &'static str)>, MatchOptions, Vec<&'static str>);

#[tokio::test]
async fn matching_rules_at_every_level() {
    let (_dir, cat) = catalog().await;
    let ci = MatchOptions { case_insensitive_pn: true };
    let cs = MatchOptions { case_insensitive_pn: false };
    use Attribute as A;
    let cases: Vec<Case> = vec![
        // Universal matching.
        (Level::Study, vec![], ci, vec!["1.2.1", "1.2.2", "1.2.3", "1.2.4", "1.2.5"]),
        (Level::Study, vec![(A::PatientName, "")], ci, vec!["1.2.1", "1.2.2", "1.2.3", "1.2.4", "1.2.5"]),
        (Level::Study, vec![(A::PatientName, "*")], ci, vec!["1.2.1", "1.2.2", "1.2.3", "1.2.4", "1.2.5"]),
        // Single value matching.
        (Level::Study, vec![(A::PatientID, "P1")], ci, vec!["1.2.1", "1.2.2"]),
        (Level::Study, vec![(A::PatientID, "P1"), (A::IssuerOfPatientID, "HOSP_B")], ci, vec!["1.2.2"]),
        (Level::Study, vec![(A::AccessionNumber, "ACC3")], ci, vec!["1.2.3"]),
        (Level::Study, vec![(A::AccessionNumber, "ACC")], ci, vec![]),
        (Level::Study, vec![(A::PatientName, "Doe^John")], cs, vec!["1.2.1"]),
        (Level::Study, vec![(A::PatientName, "DOE^JOHN")], cs, vec![]),
        (Level::Study, vec![(A::PatientName, "DOE^JOHN")], ci, vec!["1.2.1"]),
        (Level::Study, vec![(A::PatientName, "smith^anna^^dr")], ci, vec!["1.2.3"]),
        (Level::Study, vec![(A::PatientName, "smith^anna")], ci, vec![]),
        // Wildcard matching.
        (Level::Study, vec![(A::PatientName, "Doe*")], cs, vec!["1.2.1"]),
        (Level::Study, vec![(A::PatientName, "Doe*")], ci, vec!["1.2.1", "1.2.4", "1.2.5"]),
        (Level::Study, vec![(A::PatientName, "Do?^*")], ci, vec!["1.2.1", "1.2.2", "1.2.4", "1.2.5"]),
        (Level::Study, vec![(A::PatientName, "*^J*")], ci, vec!["1.2.1", "1.2.2", "1.2.4", "1.2.5"]),
        (Level::Study, vec![(A::AccessionNumber, "X-1?")], ci, vec!["1.2.4"]),
        (Level::Study, vec![(A::AccessionNumber, "*")], ci, vec!["1.2.1", "1.2.2", "1.2.3", "1.2.4", "1.2.5"]),
        // Range matching.
        (Level::Study, vec![(A::StudyDate, "20060705-20060707")], ci, vec!["1.2.1", "1.2.2", "1.2.3"]),
        (Level::Study, vec![(A::StudyDate, "-20060706")], ci, vec!["1.2.1", "1.2.2", "1.2.5"]),
        (Level::Study, vec![(A::StudyDate, "20060707-")], ci, vec!["1.2.3", "1.2.4"]),
        (Level::Study, vec![(A::StudyDate, "20060706")], ci, vec!["1.2.2"]),
        // List of UID matching.
        (Level::Study, vec![(A::StudyInstanceUID, "1.2.1\\1.2.3\\9.9")], ci, vec!["1.2.1", "1.2.3"]),
        // Multi-valued ModalitiesInStudy.
        (Level::Study, vec![(A::ModalitiesInStudy, "MR")], ci, vec!["1.2.1", "1.2.2"]),
        (Level::Study, vec![(A::ModalitiesInStudy, "CT\\US")], ci, vec!["1.2.1", "1.2.4", "1.2.5"]),
        // A series-level Modality key at study level means "has a series of this modality".
        (Level::Study, vec![(A::Modality, "MR")], ci, vec!["1.2.1", "1.2.2"]),
        // Combined keys.
        (Level::Study, vec![(A::PatientName, "DOE*"), (A::StudyDate, "20060101-")], ci, vec!["1.2.1", "1.2.4"]),
        // Patient level: identity scoped by issuer.
        (Level::Patient, vec![(A::PatientID, "P1")], ci, vec!["P1@HOSP_A", "P1@HOSP_B"]),
        (Level::Patient, vec![(A::PatientName, "doe*")], ci, vec!["P1@HOSP_A", "P3@"]),
        (Level::Patient, vec![], ci, vec!["P1@HOSP_A", "P1@HOSP_B", "P2@HOSP_A", "P3@"]),
        // Series level.
        (Level::Series, vec![(A::StudyInstanceUID, "1.2.1")], ci, vec!["1.2.1.1", "1.2.1.2"]),
        (Level::Series, vec![(A::StudyInstanceUID, "1.2.1"), (A::Modality, "MR")], ci, vec!["1.2.1.2"]),
        (Level::Series, vec![(A::Modality, "CT")], ci, vec!["1.2.1.1", "1.2.5.1"]),
        (Level::Series, vec![(A::SeriesInstanceUID, "1.2.4.1")], ci, vec!["1.2.4.1"]),
        (Level::Series, vec![(A::PatientName, "Smith*")], ci, vec!["1.2.3.1"]),
        // Instance level.
        (Level::Instance, vec![(A::SeriesInstanceUID, "1.2.1.1")], ci, vec!["1.2.1.1.1", "1.2.1.1.2"]),
        (
            Level::Instance,
            vec![(A::StudyInstanceUID, "1.2.1"), (A::InstanceNumber, "1")],
            ci,
            vec!["1.2.1.1.1", "1.2.1.2.1"],
        ),
        (Level::Instance, vec![(A::SOPInstanceUID, "1.2.4.1.1\\1.2.5.1.1")], ci, vec!["1.2.4.1.1", "1.2.5.1.1"]),
        (Level::Instance, vec![(A::InstanceNumber, "10")], ci, vec!["1.2.4.1.1"]),
        (Level::Instance, vec![(A::StudyDate, "20070101")], ci, vec!["1.2.4.1.1"]),
    ];
    for (level, keys, opts, expected) in cases {
        let mut q = Query::new(level);
        for (a, v) in &keys {
            q.add(*a, v).unwrap();
        }
        assert_eq!(
            uids(&cat, &q, opts),
            expected,
            "{level:?} {keys:?} (case-insensitive PN: {})",
            opts.case_insensitive_pn
        );
    }
}

#[tokio::test]
async fn counts_limit_and_offset() {
    let (_dir, cat) = catalog().await;
    let opts = MatchOptions::default();
    let q = Query::new(Level::Study).with(Attribute::StudyInstanceUID, "1.2.1").unwrap();
    let row = &cat.query(&q, opts).unwrap().rows[0];
    assert_eq!(row.value(Attribute::NumberOfStudyRelatedSeries).as_deref(), Some("2"));
    assert_eq!(row.value(Attribute::NumberOfStudyRelatedInstances).as_deref(), Some("3"));
    assert_eq!(row.value(Attribute::ModalitiesInStudy).as_deref(), Some("CT\\MR"));
    assert_eq!(row.value(Attribute::PatientName).as_deref(), Some("Doe^John"));

    let all = uids(&cat, &Query::new(Level::Instance), opts);
    assert_eq!(all.len(), DATA.len());
    let mut seen = Vec::new();
    for offset in (0..DATA.len()).step_by(3) {
        let q = Query { offset, limit: Some(3), ..Query::new(Level::Instance) };
        let page = cat.query(&q, opts).unwrap();
        assert_eq!(page.more, offset + 3 < DATA.len(), "offset {offset}");
        seen.extend(page.rows.into_iter().map(|r| r.instance.unwrap().uid.to_string()));
    }
    seen.sort();
    assert_eq!(seen, all);
    let stats = cat.stats().unwrap();
    assert_eq!((stats.patients, stats.studies, stats.series, stats.instances), (4, 5, 6, 7));
}

#[tokio::test]
async fn invalid_queries_are_refused() {
    let (_dir, cat) = catalog().await;
    assert!(Query::new(Level::Study).with(Attribute::StudyDate, "2006-13-45").is_err());
    assert!(Query::new(Level::Study).with(Attribute::StudyDate, "20070101-20060101").is_err());
    assert!(Query::new(Level::Study).with(Attribute::StudyInstanceUID, "1.2.*").is_err());
    let q = Query::new(Level::Study).with(Attribute::SOPInstanceUID, "1.2.1.1.1").unwrap();
    assert!(cat.query(&q, MatchOptions::default()).is_err(), "instance key at study level");
}
