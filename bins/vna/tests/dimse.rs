//! DIMSE services of the running `vna serve`, driven by real peers: dcmtk's echoscu,
//! storescu and findscu, and raw sockets for protocol abuse.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

mod common;

use archive_core::catalog::Catalog;
use archive_core::parse;
use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};

fn echo(port: u16, calling: &str) -> bool {
    common::dcmtk("echoscu")
        .args(["-aet", calling, "-aec", "VNA", "127.0.0.1", &port.to_string()])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn echo_store_find_with_dcmtk_and_byte_exact_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), "");
    assert!(echo(server.dicom_port, "ECHOSCU"), "C-ECHO failed: {}", server.log());

    // One file per SOP Instance UID, many transfer syntaxes.
    let mut seen = HashSet::new();
    let files: Vec<_> = common::pydicom_files()
        .into_iter()
        .filter(|f| f.acceptable && seen.insert(f.sop_instance.clone().unwrap()))
        .collect();
    let mut sent = Vec::new();
    for f in &files {
        let out = common::dcmtk("storescu")
            .args(["-aet", "MODALITY1", "-aec", "VNA", "127.0.0.1", &server.dicom_port.to_string()])
            .arg(&f.path)
            .output()
            .unwrap();
        if out.status.success() {
            sent.push(f.clone());
        }
    }
    assert!(sent.len() * 10 >= files.len() * 8, "storescu sent only {} of {} files", sent.len(), files.len());

    // C-FIND at STUDY level with both information models.
    for model in ["-S", "-P"] {
        let out = common::dcmtk("findscu")
            .args([
                "-aec",
                "VNA",
                model,
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                "StudyInstanceUID",
                "-k",
                "PatientName",
            ])
            .args(if model == "-P" { vec!["-k", "PatientID"] } else { vec![] })
            .args(["127.0.0.1", &server.dicom_port.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "findscu {model}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        let responses = text.matches("(Pending)").count();
        assert!(responses > 10, "findscu {model} found {responses} studies: {text}");
    }

    assert!(server.stop().success(), "graceful shutdown exits 0");

    // After a restart every instance storescu sent is there, with its source recorded.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (archive, _) = common::open_archive(common::config_in(&dir.path().join("data"))).await;
        for f in &sent {
            let uid = archive_core::uid::SopInstanceUid::new(f.sop_instance.as_ref().unwrap()).unwrap();
            let rec =
                archive.catalog().instance(&uid).unwrap().unwrap_or_else(|| panic!("{} not stored", f.path.display()));
            assert_eq!(rec.source.actor, "MODALITY1");
            archive.retrieve().read(rec).await.unwrap();
        }
        archive.close().await.unwrap();
    });
}

/// Sends one request with its data set over a new association (one presentation context for
/// `abstract_syntax` in `ts`), exactly as given; returns the status of the final response.
fn send_raw(port: u16, abstract_syntax: &str, ts: &str, command: dimse::command::Message, dataset: &[u8]) -> u16 {
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    use dimse::command::Message;
    let mut assoc = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title("RAWSCU")
        .called_ae_title("VNA")
        .with_presentation_context(abstract_syntax, vec![ts])
        .establish(("127.0.0.1", port))
        .expect("association");
    let pc = assoc.presentation_contexts()[0].id;
    let max = assoc.acceptor_max_pdu_length();
    let command = command.encode();
    for (is_command, bytes) in [(true, &command[..]), (false, dataset)] {
        if !is_command && dataset.is_empty() {
            continue;
        }
        for f in dimse::pdv::fragments(pc, is_command, bytes, max) {
            let value_type = if f.is_command { PDataValueType::Command } else { PDataValueType::Data };
            let data =
                vec![PDataValue { presentation_context_id: pc, value_type, is_last: f.is_last, data: f.data.to_vec() }];
            assoc.send(&dicom_ul::Pdu::PData { data }).unwrap();
        }
    }
    let mut assembler = dimse::pdv::MessageAssembler::new(1 << 20);
    loop {
        if let dicom_ul::Pdu::PData { data } = assoc.receive().unwrap() {
            for v in data {
                let done = assembler
                    .push_parts(v.presentation_context_id, v.value_type == PDataValueType::Command, v.is_last, &v.data)
                    .unwrap();
                if let Some(m) = done {
                    let status = Message::decode(&m.command).unwrap().status().unwrap();
                    if dimse::status::kind(status) != dimse::status::StatusKind::Pending {
                        let _ = assoc.release();
                        return status;
                    }
                }
            }
        }
    }
}

/// Sends one data set as a C-STORE over its own association, exactly as given.
fn store_raw(port: u16, sop_class: &str, sop_instance: &str, ts: &str, dataset: &[u8]) -> u16 {
    let rq = dimse::command::CStoreRq {
        message_id: 1,
        affected_sop_class: sop_class.to_string(),
        affected_sop_instance: sop_instance.to_string(),
        ..Default::default()
    };
    send_raw(port, sop_class, ts, rq.into(), dataset)
}

#[test]
fn hostile_identifiers_are_refused_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), "");
    let study_root_find = "1.2.840.10008.5.1.4.1.2.2.1";
    let find = |dataset: &[u8]| {
        let rq =
            dimse::command::CFindRq { message_id: 7, affected_sop_class: study_root_find.into(), ..Default::default() };
        send_raw(server.dicom_port, study_root_find, "1.2.840.10008.1.2", rq.into(), dataset)
    };
    // PatientName claiming 0xFFFFFFF0 bytes in a 12-byte implicit VR data set.
    let huge = [0x10, 0x00, 0x10, 0x00, 0xF0, 0xFF, 0xFF, 0xFF, b'D', b'O', b'E', b' '];
    assert_eq!(find(&huge), dimse::status::UNABLE_TO_PROCESS, "refused before decoding");
    // No Query/Retrieve Level.
    let no_level = [0x10, 0x00, 0x10, 0x00, 0x04, 0x00, 0x00, 0x00, b'D', b'O', b'E', b'*'];
    assert_eq!(find(&no_level), dimse::status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS);
    // A request vna does not provide is refused with a status, not an abort.
    let mpps = "1.2.840.10008.3.1.2.3.3";
    let report = dimse::command::NEventReportRq {
        message_id: 3,
        affected_sop_class: mpps.into(),
        affected_sop_instance: "1.2.3.4".into(),
        event_type_id: 1,
        has_dataset: false,
    };
    assert_eq!(send_raw(server.dicom_port, mpps, "1.2.840.10008.1.2", report.into(), &[]), 0x0211);
    assert!(echo(server.dicom_port, "AFTER"), "still answering: {}", server.log());
}

fn files_with(files: &[common::TestFile], ts: &Option<String>) -> usize {
    files.iter().filter(|f| f.transfer_syntax == *ts).count()
}

#[test]
fn c_store_keeps_data_sets_byte_exact_in_every_transfer_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), "");
    // One file per SOP Instance UID, rare transfer syntaxes first so that every syntax is sent.
    let mut files: Vec<_> = common::pydicom_files().into_iter().filter(|f| f.acceptable).collect();
    let rarity = |ts: &Option<String>| files_with(&files, ts);
    let mut order: Vec<_> = files.iter().map(|f| (rarity(&f.transfer_syntax), f.path.clone())).collect();
    order.sort();
    files.sort_by_key(|f| order.iter().position(|(_, p)| *p == f.path));
    let mut seen = HashSet::new();
    let mut sent = Vec::new();
    for f in files {
        if !seen.insert(f.sop_instance.clone().unwrap()) {
            continue;
        }
        let bytes = std::fs::read(&f.path).unwrap();
        let parsed = parse::parse_part10(&bytes).unwrap();
        let dataset = parse::dataset_bytes(&bytes).unwrap().to_vec();
        let status = store_raw(
            server.dicom_port,
            parsed.sop_class.as_str(),
            parsed.sop_instance.as_str(),
            parsed.transfer_syntax.as_str(),
            &dataset,
        );
        assert_eq!(status, 0, "{}: status {status:04X}", f.path.display());
        sent.push((parsed, dataset));
    }
    assert!(server.stop().success(), "graceful shutdown exits 0");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (archive, _) = common::open_archive(common::config_in(&dir.path().join("data"))).await;
        let mut syntaxes = BTreeSet::new();
        for (parsed, dataset) in &sent {
            let rec = archive.catalog().instance(&parsed.sop_instance).unwrap().expect("stored");
            let (rec, stored) = archive.retrieve().read(rec).await.unwrap();
            assert_eq!(rec.transfer_syntax, parsed.transfer_syntax);
            assert!(parse::dataset_bytes(&stored).unwrap() == &dataset[..], "{} changed", parsed.sop_instance);
            syntaxes.insert(rec.transfer_syntax.to_string());
        }
        assert!(syntaxes.len() >= 10, "byte-exact over only {syntaxes:?}");
        archive.close().await.unwrap();
    });
}

#[test]
fn refused_calling_ae_and_study_root_queries() {
    let dir = tempfile::tempdir().unwrap();
    let extra =
        "restrict_to_remote_aes = true\n[[dicom.remote_aes]]\nae_title = \"KNOWN\"\nhost = \"127.0.0.1\"\nport = 1\n";
    let server = common::Server::start(dir.path(), extra);
    assert!(echo(server.dicom_port, "KNOWN"));
    assert!(!echo(server.dicom_port, "STRANGER"), "an unknown calling AE title is refused");
    assert!(echo(server.dicom_port, "KNOWN"), "the server still answers");

    // Store a generated study and query it at every level.
    let study =
        vna_benches::dataset::DatasetGenerator::new(11).study(&vna_benches::dataset::StudySpec::tiny("MR", 2, 3));
    let files: Vec<_> = study
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            let p = dir.path().join(format!("{i}.dcm"));
            std::fs::write(&p, &inst.bytes).unwrap();
            p
        })
        .collect();
    let out = common::dcmtk("storescu")
        .args(["-aet", "KNOWN", "-aec", "VNA", "127.0.0.1", &server.dicom_port.to_string()])
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let find = |keys: &[&str]| -> String {
        let mut c = common::dcmtk("findscu");
        c.args(["-aet", "KNOWN", "-aec", "VNA", "-S"]);
        for k in keys {
            c.args(["-k", k]);
        }
        let out = c.args(["127.0.0.1", &server.dicom_port.to_string()]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
    };
    let s = find(&[
        "QueryRetrieveLevel=STUDY",
        &format!("StudyInstanceUID={}", study[0].study),
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "InstanceAvailability",
    ]);
    assert_eq!(s.matches("(Pending)").count(), 1, "{s}");
    assert!(s.contains("MR") && s.contains("[6") && s.contains("ONLINE"), "{s}");
    let s = find(&[
        "QueryRetrieveLevel=SERIES",
        &format!("StudyInstanceUID={}", study[0].study),
        "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances",
    ]);
    assert_eq!(s.matches("(Pending)").count(), 2, "{s}");
    let s = find(&[
        "QueryRetrieveLevel=IMAGE",
        &format!("StudyInstanceUID={}", study[0].study),
        &format!("SeriesInstanceUID={}", study[0].series),
        "SOPInstanceUID",
        "InstanceNumber",
    ]);
    assert_eq!(s.matches("(Pending)").count(), 3, "{s}");
    let s = find(&["QueryRetrieveLevel=STUDY", "PatientName=NOBODY*"]);
    assert_eq!(s.matches("(Pending)").count(), 0, "{s}");
}

#[test]
fn concurrent_associations_and_garbage_pdus() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), "");
    let port = server.dicom_port;

    // Garbage, a truncated PDU and an abrupt close: each ends only its own connection.
    for junk in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0x01, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00][..], &[0xFF; 64][..]] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = s.write_all(junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    }
    assert!(echo(port, "AFTERJUNK"), "still answering after garbage: {}", server.log());

    // Eight concurrent associations storing distinct instances.
    let mut expected = Vec::new();
    let mut children = Vec::new();
    for a in 0..8u64 {
        let study = vna_benches::dataset::DatasetGenerator::new(100 + a)
            .study(&vna_benches::dataset::StudySpec::tiny("CT", 1, 10));
        let sub = dir.path().join(format!("a{a}"));
        std::fs::create_dir_all(&sub).unwrap();
        for (i, inst) in study.iter().enumerate() {
            std::fs::write(sub.join(format!("{i}.dcm")), &inst.bytes).unwrap();
            expected.push(inst.sop_instance.clone());
        }
        children.push(
            common::dcmtk("storescu")
                .args(["-aet", &format!("SCU{a}"), "-aec", "VNA", "+sd", "127.0.0.1", &port.to_string()])
                .arg(&sub)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(server.stop().success());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (archive, _) = common::open_archive(common::config_in(&dir.path().join("data"))).await;
        for sop in &expected {
            let uid = archive_core::uid::SopInstanceUid::new(sop).unwrap();
            assert!(archive.catalog().instance(&uid).unwrap().is_some(), "{sop} lost");
        }
        assert_eq!(archive.catalog().stats().unwrap().instances as usize, expected.len());
        archive.close().await.unwrap();
    });
}

#[test]
fn sigterm_drains_associations_and_metrics_count_operations() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), "");
    let study = vna_benches::dataset::DatasetGenerator::new(71).study(&vna_benches::dataset::StudySpec {
        rows: 128,
        columns: 128,
        ..vna_benches::dataset::StudySpec::ct(300)
    });
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for (i, inst) in study.iter().enumerate() {
        std::fs::write(src.join(format!("{i:04}.dcm")), &inst.bytes).unwrap();
    }
    assert!(echo(server.dicom_port, "METRICS"));
    let metrics =
        reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", server.http_port)).unwrap().text().unwrap();
    assert!(metrics.contains("vna_dimse_operations_total{service=\"echo\",status=\"success\"} 1"), "{metrics}");
    assert!(metrics.contains("vna_dimse_associations_total{outcome=\"accepted\"}"), "{metrics}");

    // A long C-STORE association, interrupted by SIGTERM half way.
    let storescu = common::dcmtk("storescu")
        .args(["-v", "-aec", "VNA", "+sd", "127.0.0.1", &server.dicom_port.to_string()])
        .arg(&src)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status = server.stop();
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    let out = storescu.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let acknowledged = log.matches("Received Store Response (Success)").count();
    assert!(acknowledged > 0, "{log}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (archive, _) = common::open_archive(common::config_in(&dir.path().join("data"))).await;
        let stored = archive.catalog().stats().unwrap().instances as usize;
        assert!(stored >= acknowledged, "{acknowledged} acknowledged but {stored} stored");
        archive.close().await.unwrap();
    });
}
