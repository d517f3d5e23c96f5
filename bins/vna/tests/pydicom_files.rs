//! Real DICOM files of many transfer syntaxes (pydicom's test corpus) through the real
//! catalog and hot tier: accepted files come back byte-exact, duplicates change nothing,
//! conflicting content is refused, broken files are refused and leave nothing behind.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

mod common;

use archive_core::catalog::Catalog;
use archive_core::checksum::Checksum;
use archive_core::ingest::{IngestError, IngestInput, IngestStatus};
use archive_core::model::Source;
use archive_core::tier::Tier;
use archive_core::uid::SopInstanceUid;
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap};

fn source() -> Source {
    Source { actor: "TEST".into(), address: "127.0.0.1".into() }
}

/// Some files of the corpus share a SOP Instance UID with different content (the same image
/// in several transfer syntaxes): with the default `reject` policy each archive holds one of
/// them, so the corpus is ingested in rounds, each into a fresh archive, until every
/// acceptable file has been stored and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pydicom_corpus_round_trips_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let files = common::pydicom_files();
    let mut pending: Vec<&common::TestFile> = files.iter().collect();
    let mut syntaxes = BTreeSet::new();
    let mut failures = Vec::new();
    let mut round = 0;
    while !pending.is_empty() {
        round += 1;
        assert!(round <= 16, "conflicts did not resolve: {pending:?}");
        let (archive, hot) = common::open_archive(common::config_in(&dir.path().join(format!("round{round}")))).await;
        let mut stored: HashMap<String, (Bytes, Checksum)> = HashMap::new();
        let mut next = Vec::new();
        for f in pending {
            let bytes = Bytes::from(std::fs::read(&f.path).unwrap());
            let checksum = Checksum::of(&bytes);
            let result = archive.ingest().ingest(IngestInput::Part10(bytes.clone()), source()).await;
            match (result, f.acceptable) {
                (Ok(r), _) => match stored.get(r.sop_instance.as_str()) {
                    Some((_, c)) => {
                        assert_eq!(*c, checksum, "{}: different bytes under a stored uid accepted", f.path.display());
                        assert_eq!(r.status, IngestStatus::Duplicate);
                    }
                    None => {
                        assert_eq!(r.status, IngestStatus::Stored, "{}", f.path.display());
                        stored.insert(r.sop_instance.to_string(), (bytes.clone(), checksum));
                        syntaxes.insert(r.transfer_syntax.to_string());
                    }
                },
                (Err(IngestError::Conflict { sop_instance }), _) => {
                    let (_, c) = stored.get(sop_instance.as_str()).expect("a conflict names a stored instance");
                    assert_ne!(*c, checksum);
                    if f.acceptable {
                        next.push(f);
                    }
                }
                (Err(e), true) => failures.push(format!("{}: {e}", f.path.display())),
                (Err(_), false) => {}
            }
        }

        // Everything stored comes back byte-exact, and the catalog counts what was stored.
        for (sop, (bytes, _)) in &stored {
            let uid = SopInstanceUid::new(sop).unwrap();
            let rec = archive.catalog().instance(&uid).unwrap().expect("stored instance is cataloged");
            let (_, got) = archive.retrieve().read(rec).await.unwrap();
            assert!(got == *bytes, "instance {sop} differs after retrieve");
        }
        let stats = archive.catalog().stats().unwrap();
        assert_eq!(stats.instances as usize, stored.len());
        assert_eq!(hot.list(None).await.unwrap().len(), stored.len(), "no unreferenced objects in the hot tier");

        // Re-ingesting everything changes nothing.
        for (bytes, _) in stored.values() {
            let r = archive.ingest().ingest(IngestInput::Part10(bytes.clone()), source()).await.unwrap();
            assert_eq!(r.status, IngestStatus::Duplicate);
        }
        assert_eq!(archive.catalog().stats().unwrap(), stats);
        let records = archive.catalog().audit_records(1).unwrap().len() as u64;
        assert_eq!(archive.catalog().verify_audit().unwrap(), archive_core::audit::ChainVerdict::Intact { records });
        archive.close().await.unwrap();
        pending = next;
    }
    assert!(failures.is_empty(), "acceptable files refused:\n{}", failures.join("\n"));
    assert!(syntaxes.len() >= 11, "only {} transfer syntaxes stored: {syntaxes:?}", syntaxes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, hot) = common::open_archive(common::config_in(dir.path())).await;
    let good = vna_benches::dataset::DatasetGenerator::new(7).study(&vna_benches::dataset::StudySpec::tiny("CT", 1, 1));
    let good = Bytes::from(good[0].bytes.clone());

    let mut cases: Vec<(&str, Bytes)> = vec![
        ("empty", Bytes::new()),
        ("text", Bytes::from_static(b"hello, this is not a DICOM file at all")),
        ("preamble only", Bytes::from(vec![0u8; 132])),
        ("truncated in pixel data", good.slice(..good.len() - 100)),
        ("truncated in header", good.slice(..300)),
    ];
    // A copy without its SOP Instance UID, and one with an invalid Study Instance UID.
    let text = good.to_vec();
    let sop = vna_benches::dataset::DatasetGenerator::new(7).study(&vna_benches::dataset::StudySpec::tiny("CT", 1, 1))
        [0]
    .sop_instance
    .clone();
    let study = vna_benches::dataset::DatasetGenerator::new(7)
        .study(&vna_benches::dataset::StudySpec::tiny("CT", 1, 1))[0]
        .study
        .clone();
    let replace_in_dataset = |needle: &str, with: &str| -> Bytes {
        let mut v = text.clone();
        // Skip the meta group (which repeats the SOP Instance UID) and replace in the data set.
        let start = archive_core::parse::parse_part10(&text).unwrap().dataset_offset;
        let pos = start + find(&v[start..], needle.as_bytes()).expect("value present");
        v.splice(pos..pos + needle.len(), with.bytes());
        Bytes::from(v)
    };
    let mut bad_study = study.clone();
    bad_study.replace_range(0..4, "2.x5");
    cases.push(("invalid study uid", replace_in_dataset(&study, &bad_study)));
    let blank_sop = " ".repeat(sop.len());
    cases.push(("blank sop instance uid", replace_in_dataset(&sop, &blank_sop)));

    for (name, bytes) in cases {
        let err = archive.ingest().ingest(IngestInput::Part10(bytes), source()).await;
        let err = err.expect_err(name);
        assert!(matches!(err, IngestError::Invalid(_)), "{name}: {err}");
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(archive.catalog().stats().unwrap().instances, 0);
    assert!(hot.list(None).await.unwrap().is_empty(), "nothing written to the hot tier");
    assert!(archive.catalog().pending_writes().unwrap().is_empty());

    // The good object is still accepted afterwards.
    let r = archive.ingest().ingest(IngestInput::Part10(good), source()).await.unwrap();
    assert_eq!(r.status, IngestStatus::Stored);
    archive.close().await.unwrap();
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_data_set_from_another_door_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, hot) = common::open_archive(common::config_in(dir.path())).await;
    let inst =
        vna_benches::dataset::DatasetGenerator::new(21).study(&vna_benches::dataset::StudySpec::tiny("CT", 1, 1));
    let file = Bytes::from(inst[0].bytes.clone());
    let parsed = archive_core::parse::parse_part10(&file).unwrap();
    let dataset = || IngestInput::Dataset {
        dataset: Bytes::copy_from_slice(&file[parsed.dataset_offset..]),
        transfer_syntax: parsed.transfer_syntax.clone(),
        sop_class: parsed.sop_class.clone(),
        sop_instance: parsed.sop_instance.clone(),
    };
    let first = archive.ingest().ingest(dataset(), source()).await.unwrap();
    assert_eq!(first.status, IngestStatus::Stored);
    let other_ae = Source { actor: "PACS2".into(), address: "10.0.0.2".into() };
    assert_eq!(archive.ingest().ingest(dataset(), other_ae).await.unwrap().status, IngestStatus::Duplicate);
    let as_file = archive.ingest().ingest(IngestInput::Part10(file.clone()), source()).await.unwrap();
    assert_eq!(as_file.status, IngestStatus::Duplicate, "a Part-10 file with the same data set is the same instance");
    assert_eq!(hot.list(None).await.unwrap().len(), 1);
    archive.close().await.unwrap();
}

/// A second version of an instance: same UIDs, different content (a changed PatientName).
fn second_version(file: &[u8]) -> Bytes {
    let mut v = file.to_vec();
    let start = archive_core::parse::parse_part10(file).unwrap().dataset_offset;
    let at = start
        + v[start..]
            .windows(4)
            .position(|w| {
                w == b"^JOH"
                    || w == b"^JAN"
                    || w == b"^ANN"
                    || w == b"^LUI"
                    || w == b"^MAR"
                    || w == b"^PIO"
                    || w == b"^SOF"
                    || w == b"^CHI"
                    || w == b"^AM\xc3"
                    || w == b"^ANA"
            })
            .unwrap();
    v[at + 1] = b'X';
    Bytes::from(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_refused_or_replaced_as_configured() {
    let gen =
        || vna_benches::dataset::DatasetGenerator::new(31).study(&vna_benches::dataset::StudySpec::tiny("CT", 1, 2));
    let first = Bytes::from(gen()[0].bytes.clone());
    let second = second_version(&first);

    // Default: reject, nothing of the second version stays.
    let dir = tempfile::tempdir().unwrap();
    let (archive, hot) = common::open_archive(common::config_in(dir.path())).await;
    archive.ingest().ingest(IngestInput::Part10(first.clone()), source()).await.unwrap();
    let err = archive.ingest().ingest(IngestInput::Part10(second.clone()), source()).await.unwrap_err();
    assert!(matches!(err, IngestError::Conflict { .. }), "{err}");
    assert_eq!(hot.list(None).await.unwrap().len(), 1);
    assert!(archive.catalog().pending_writes().unwrap().is_empty());
    archive.close().await.unwrap();
    drop(archive);
    drop(hot);

    // Replace: the new version is served, the old copy is gone, the audit trail says so.
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config_in(dir.path());
    config.ingest.on_conflict = archive_core::catalog::ConflictPolicy::Replace;
    let (archive, hot) = common::open_archive(config).await;
    archive.ingest().ingest(IngestInput::Part10(first.clone()), source()).await.unwrap();
    let r = archive.ingest().ingest(IngestInput::Part10(second.clone()), source()).await.unwrap();
    assert_eq!(r.status, IngestStatus::Replaced);
    let rec = archive.catalog().instance(&r.sop_instance).unwrap().unwrap();
    let (_, bytes) = archive.retrieve().read(rec).await.unwrap();
    assert!(bytes == second);
    assert_eq!(hot.list(None).await.unwrap().len(), 1, "the replaced copy is deleted");
    assert!(archive.catalog().pending_writes().unwrap().is_empty());
    let stats = archive.catalog().stats().unwrap();
    assert_eq!((stats.studies, stats.series, stats.instances), (1, 1, 1));
    let audit = archive.catalog().audit_records(1).unwrap();
    assert!(audit
        .iter()
        .any(|r| r.as_ref().unwrap().event.action == archive_core::audit::AuditAction::InstanceReplaced));
    assert!(archive.catalog().verify_audit().unwrap().is_intact());
    archive.close().await.unwrap();
}

/// Every compressed object of pydicom's corpus that dicom-rs has a decoder for (JPEG, JPEG 2000,
/// RLE) converts to explicit VR little endian with native pixel data of the right size, except
/// the few dicom-rs's decoders do not handle (12-bit JPEG extended, 32-bit RLE, a JPEG 2000
/// stream with an embedded delimiter), which fail with an error; JPEG-LS, for which vna has no
/// decoder, is refused as unsupported.
#[test]
fn compressed_objects_decode_to_native_pixel_data() {
    use archive_core::transcode::{can_convert, transcode_part10};
    use dicom_dictionary_std::tags;
    let explicit = archive_core::uid::TransferSyntaxUid::new("1.2.840.10008.1.2.1").unwrap();
    let mut decoded = std::collections::BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for f in common::pydicom_files().into_iter().filter(|f| f.acceptable) {
        let ts = f.transfer_syntax.clone().unwrap();
        if archive_core::transcode::is_native(&ts) || ts == "1.2.840.10008.1.2.1.99" {
            continue;
        }
        let bytes = std::fs::read(&f.path).unwrap();
        let parsed = archive_core::parse::parse_part10(&bytes).unwrap();
        let result = transcode_part10(&bytes, &ts, &explicit, &parsed.sop_class, &parsed.sop_instance);
        if !can_convert(&ts, explicit.as_str()) {
            assert!(result.is_err(), "{} converted without a decoder", f.path.display());
            continue;
        }
        match result {
            Ok(out) => {
                let obj = dicom_object::OpenFileOptions::new().from_reader(&out[128..]).unwrap();
                let int = |tag| obj.element(tag).ok().and_then(|e| e.to_int::<usize>().ok()).unwrap_or(1);
                let frames =
                    obj.element(tags::NUMBER_OF_FRAMES).ok().and_then(|e| e.to_int::<usize>().ok()).unwrap_or(1);
                let expected =
                    int(tags::ROWS) * int(tags::COLUMNS) * int(tags::SAMPLES_PER_PIXEL) * int(tags::BITS_ALLOCATED) / 8
                        * frames;
                let got = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().len();
                assert!(
                    got == expected || got == expected + 1,
                    "{}: {got} bytes, expected {expected}",
                    f.path.display()
                );
                *decoded.entry(ts).or_default() += 1;
            }
            Err(e) => failures.push(format!("{}: {e}", f.path.display())),
        }
    }
    println!("decoded per syntax: {decoded:?}; failures: {failures:#?}");
    assert!(decoded.get("1.2.840.10008.1.2.4.50").copied().unwrap_or(0) >= 10, "{decoded:?}");
    assert!(decoded.get("1.2.840.10008.1.2.5").copied().unwrap_or(0) >= 5, "{decoded:?}");
    const DECODERS_CANNOT: &[&str] = &[
        "JPEG-lossy.dcm",
        "JPGExtended.dcm",
        "SC_rgb_rle_32bit.dcm",
        "SC_rgb_rle_32bit_2frame.dcm",
        "rtdose_rle.dcm",
        "rtdose_rle_1frame.dcm",
        "JPEG2000-embedded-sequence-delimiter.dcm",
    ];
    for f in &failures {
        assert!(DECODERS_CANNOT.iter().any(|name| f.contains(&format!("/{name}:"))), "unexpected decode failure {f}");
    }
}
