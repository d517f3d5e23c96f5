//! Source profiles on real ingest: issuer stamping keeps colliding Patient IDs apart, coercion
//! rules change what they say, the Original Attributes Sequence keeps the previous values, and
//! objects no rule touches stay byte-exact.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::catalog::rocks::{RocksCatalog, RocksCatalogOptions};
use archive_core::catalog::Catalog;
use archive_core::coerce::{CoercionRuleConfig, SourceProfileConfig, SourceProfiles};
use archive_core::disk::DiskGuard;
use archive_core::ingest::{Ingest, IngestInput};
use archive_core::metrics::Metrics;
use archive_core::model::{PatientKey, Source};
use archive_core::tier::memory::MemoryTier;
use archive_core::tier::TierSet;
use archive_core::tier::{Tier, TierExt, TierName};
use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::sync::Arc;

fn object(sop: &str, patient_id: &str, accession: &str, ts: &str) -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    let put =
        |o: &mut InMemDicomObject, t: Tag, vr: VR, v: &str| o.put(DataElement::new(t, vr, PrimitiveValue::from(v)));
    put(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    put(&mut obj, tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7");
    put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, sop);
    put(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &format!("{sop}.1"));
    put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &format!("{sop}.2"));
    put(&mut obj, tags::PATIENT_ID, VR::LO, patient_id);
    put(&mut obj, tags::PATIENT_NAME, VR::PN, "MÜLLER^JOSÉ");
    put(&mut obj, tags::ACCESSION_NUMBER, VR::SH, accession);
    put(&mut obj, tags::MODALITY, VR::CS, "MRI");
    put(&mut obj, tags::INSTITUTION_NAME, VR::LO, "st marys");
    put(&mut obj, tags::STATION_NAME, VR::SH, "SCANNER7");
    let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(ts)).unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    out
}

fn rule(attribute: &str, action: &str) -> CoercionRuleConfig {
    CoercionRuleConfig {
        attribute: attribute.into(),
        action: action.into(),
        value: None,
        only_if_empty: false,
        from: None,
        table: None,
        default: None,
        pattern: None,
        replacement: None,
    }
}

fn profiles() -> Vec<SourceProfileConfig> {
    let mut accession = rule("AccessionNumber", "regex_replace");
    accession.pattern = Some("^ACC-".into());
    let mut institution = rule("(0008,0080)", "map");
    institution.table = Some([("st marys".to_string(), "St. Mary's Hospital".to_string())].into());
    let mut modality = rule("Modality", "map");
    modality.table = Some([("MRI".to_string(), "MR".to_string())].into());
    let mut other_ids = rule("AdmissionID", "copy");
    other_ids.from = Some("PatientID".into());
    vec![
        SourceProfileConfig {
            name: "hospital-a".into(),
            calling_aes: vec!["PACS_A".into()],
            http_users: vec!["pacs-a".into()],
            issuer_of_patient_id: Some("HOSP_A".into()),
            issuer_universal_entity_id: Some("1.2.3.4.5".into()),
            issuer_universal_entity_id_type: Some("ISO".into()),
            replace_issuer: false,
            coerce: vec![accession, institution, modality, rule("StationName", "remove"), other_ids],
        },
        SourceProfileConfig {
            name: "hospital-b".into(),
            calling_aes: vec!["PACS_B".into()],
            http_users: vec![],
            issuer_of_patient_id: Some("HOSP_B".into()),
            issuer_universal_entity_id: None,
            issuer_universal_entity_id_type: None,
            replace_issuer: false,
            coerce: vec![],
        },
    ]
}

async fn setup(dir: &std::path::Path) -> (Ingest, Arc<dyn Catalog>, Arc<MemoryTier>) {
    let catalog: Arc<dyn Catalog> =
        Arc::new(RocksCatalog::open(&dir.join("c"), RocksCatalogOptions::default()).unwrap());
    let hot = Arc::new(MemoryTier::new(TierName::new("hot").unwrap()));
    let tiers = Arc::new(TierSet::new(vec![hot.clone() as Arc<dyn Tier>], TierName::new("hot").unwrap()).unwrap());
    let ingest = Ingest::new(catalog.clone(), tiers, DiskGuard::new(), Default::default(), Metrics::new())
        .with_profiles(SourceProfiles::compile(&profiles()).unwrap());
    (ingest, catalog, hot)
}

fn source(ae: &str) -> Source {
    Source { actor: ae.into(), address: "10.0.0.1".into() }
}

#[tokio::test]
async fn profiles_stamp_issuers_coerce_attributes_and_keep_the_originals() {
    let dir = tempfile::tempdir().unwrap();
    let (ingest, catalog, hot) = setup(dir.path()).await;
    for ts in ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"] {
        let a = format!("1.2.826.0.1.{}", ts.len());
        let bytes = object(&a, "12345", "ACC-0042", ts);
        let r = ingest.ingest(IngestInput::Part10(Bytes::from(bytes.clone())), source("PACS_A")).await.unwrap();
        let rec = catalog.instance(&r.sop_instance).unwrap().unwrap();
        let stored = hot.get_bytes(&rec.locations[0].key).await.unwrap();
        assert_ne!(stored.as_ref(), bytes.as_slice(), "a coerced object differs from what was sent");
        assert_eq!(rec.transfer_syntax.as_str(), ts, "same transfer syntax");
        let study = catalog.study(&rec.study).unwrap().unwrap();
        assert_eq!(study.patient, PatientKey::new("HOSP_A", "12345"));
        assert_eq!(study.attrs.get(archive_core::attribute::Attribute::AccessionNumber), Some("0042"));
        assert_eq!(study.attrs.get(archive_core::attribute::Attribute::InstitutionName), Some("St. Mary's Hospital"));
        assert!(study.modalities.contains("MR"), "{:?}", study.modalities);

        let obj = dicom_object::from_reader(std::io::Cursor::new(&stored[128..])).unwrap();
        assert!(obj.element_opt(tags::STATION_NAME).unwrap().is_none(), "removed");
        assert_eq!(obj.element(tags::ADMISSION_ID).unwrap().to_str().unwrap().trim(), "12345");
        let q = obj.element(tags::ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQUENCE).unwrap().items().unwrap()[0].clone();
        assert_eq!(q.element(tags::UNIVERSAL_ENTITY_ID).unwrap().to_str().unwrap().trim(), "1.2.3.4.5");
        assert_eq!(
            obj.element(tags::PATIENT_NAME).unwrap().to_str().unwrap().trim(),
            "MÜLLER^JOSÉ",
            "other text untouched"
        );
        let orig = &obj.element(tags::ORIGINAL_ATTRIBUTES_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(
            orig.element(tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION).unwrap().to_str().unwrap().trim(),
            "COERCE"
        );
        assert_eq!(orig.element(tags::SOURCE_OF_PREVIOUS_VALUES).unwrap().to_str().unwrap().trim(), "PACS_A");
        assert_eq!(orig.element(tags::MODIFYING_SYSTEM).unwrap().to_str().unwrap().trim(), "vna");
        let modified = &orig.element(tags::MODIFIED_ATTRIBUTES_SEQUENCE).unwrap().items().unwrap()[0];
        assert_eq!(modified.element(tags::ACCESSION_NUMBER).unwrap().to_str().unwrap().trim(), "ACC-0042");
        assert_eq!(modified.element(tags::MODALITY).unwrap().to_str().unwrap().trim(), "MRI");
        assert_eq!(modified.element(tags::STATION_NAME).unwrap().to_str().unwrap().trim(), "SCANNER7");
        assert_eq!(modified.element(tags::INSTITUTION_NAME).unwrap().to_str().unwrap().trim(), "st marys");
        assert!(
            modified.element(tags::ISSUER_OF_PATIENT_ID).unwrap().to_str().unwrap().trim().is_empty(),
            "added: empty previous value"
        );
    }

    // The same Patient ID from hospital B is another patient; an unknown sender is stored byte-exact.
    let b = object("1.2.826.0.2", "12345", "X1", "1.2.840.10008.1.2.1");
    let r = ingest.ingest(IngestInput::Part10(Bytes::from(b)), source("PACS_B")).await.unwrap();
    let study_b = catalog.study(&catalog.instance(&r.sop_instance).unwrap().unwrap().study).unwrap().unwrap();
    assert_eq!(study_b.patient, PatientKey::new("HOSP_B", "12345"));
    assert!(catalog.patient(&PatientKey::new("HOSP_A", "12345")).unwrap().is_some());
    assert!(catalog.patient(&PatientKey::new("HOSP_B", "12345")).unwrap().is_some());
    let c = object("1.2.826.0.3", "12345", "ACC-7", "1.2.840.10008.1.2.1");
    let r = ingest.ingest(IngestInput::Part10(Bytes::from(c.clone())), source("OTHER")).await.unwrap();
    let rec = catalog.instance(&r.sop_instance).unwrap().unwrap();
    assert!(
        hot.get_bytes(&rec.locations[0].key).await.unwrap().as_ref() == c.as_slice(),
        "byte-exact without a profile"
    );
    assert_eq!(catalog.study(&rec.study).unwrap().unwrap().patient, PatientKey::new("", "12345"));

    // An issuer the object already carries is kept unless the profile says replace.
    let mut obj = dicom_object::from_reader(std::io::Cursor::new(
        &object("1.2.826.0.4", "777", "A", "1.2.840.10008.1.2.1")[128..],
    ))
    .unwrap();
    obj.put(DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::from("EXISTING")));
    let mut bytes = Vec::new();
    obj.write_all(&mut bytes).unwrap();
    let r = ingest.ingest(IngestInput::Part10(Bytes::from(bytes)), source("PACS_B")).await.unwrap();
    let study = catalog.study(&catalog.instance(&r.sop_instance).unwrap().unwrap().study).unwrap().unwrap();
    assert_eq!(study.patient, PatientKey::new("EXISTING", "777"));
}

#[test]
fn bad_profiles_are_refused_with_the_profile_and_rule_named() {
    let mut p = profiles();
    p[0].coerce[0].pattern = Some("(".into());
    let e = SourceProfiles::compile(&p).unwrap_err().to_string();
    assert!(e.contains("hospital-a") && e.contains("rule 1") && e.contains("pattern"), "{e}");
    let mut p = profiles();
    p[0].coerce.push(rule("Rows", "remove"));
    assert!(SourceProfiles::compile(&p).unwrap_err().to_string().contains("only text attributes"));
    let mut p = profiles();
    p[0].coerce.push(rule("NoSuchThing", "remove"));
    assert!(SourceProfiles::compile(&p).unwrap_err().to_string().contains("unknown attribute"));
    let mut p = profiles();
    p[1].calling_aes = vec!["PACS_A".into()];
    assert!(SourceProfiles::compile(&p).unwrap_err().to_string().contains("already claimed"));
    let mut p = profiles();
    p[1].http_users = vec!["pacs-a".into()];
    let e = SourceProfiles::compile(&p).unwrap_err().to_string();
    assert!(e.contains("HTTP user \"pacs-a\" is already claimed by profile \"hospital-a\""), "{e}");
    let mut p = profiles();
    p[0].coerce.push(rule("SOPInstanceUID", "remove"));
    assert!(SourceProfiles::compile(&p).unwrap_err().to_string().contains("cannot be coerced"));
}

#[test]
fn profiles_match_calling_aes_and_http_users_apart() {
    let compiled = SourceProfiles::compile(&profiles()).unwrap();
    let name = |s: &Source| compiled.for_source(s).map(|p| p.config.name.clone());
    assert_eq!(name(&source("PACS_A")).as_deref(), Some("hospital-a"));
    assert_eq!(name(&Source::http_user("pacs-a", "10.0.0.2")).as_deref(), Some("hospital-a"));
    // A user named like an AE title, or an AE title named like a user, is not the other.
    assert_eq!(name(&Source::http_user("PACS_A", "10.0.0.2")), None);
    assert_eq!(name(&source("pacs-a")), None);
    assert_eq!(name(&Source { actor: "STOW-RS".into(), address: String::new() }), None);
}
