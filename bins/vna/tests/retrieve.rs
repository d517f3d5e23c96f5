//! C-MOVE and C-GET from the running `vna serve` with dcmtk's movescu and getscu: every
//! moved or fetched instance arrives with the data set it was stored with. The shared retrieve
//! selection cases (`common::selection`, also run over WADO-RS by the DICOMweb tests) deliver
//! the same instances over C-MOVE and C-GET, and storage commitment fails what deletions hide.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

/// Data sets of the files a dcmtk SCP wrote, by SOP Instance UID.
fn received(dir: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    let mut out = std::collections::HashMap::new();
    for entry in walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()) {
        let bytes = std::fs::read(entry.path()).unwrap();
        if let Ok(p) = archive_core::parse::parse_part10(&bytes) {
            out.insert(p.sop_instance.to_string(), archive_core::parse::dataset_bytes(&bytes).unwrap().to_vec());
        }
    }
    out
}

fn store_study(port: u16, dir: &Path, seed: u64) -> Vec<vna_benches::dataset::SyntheticInstance> {
    let study =
        vna_benches::dataset::DatasetGenerator::new(seed).study(&vna_benches::dataset::StudySpec::tiny("CT", 2, 4));
    let src = dir.join(format!("src{seed}"));
    std::fs::create_dir_all(&src).unwrap();
    for (i, inst) in study.iter().enumerate() {
        std::fs::write(src.join(format!("{i}.dcm")), &inst.bytes).unwrap();
    }
    let out = common::dcmtk("storescu")
        .args(["-aec", "VNA", "+sd", "127.0.0.1", &port.to_string()])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    study
}

/// A dcmtk storage SCP that writes what it receives bit for bit into `out`.
fn storage_scp(ae: &str, port: u16, out: &Path, extra: &[&str]) -> std::process::Child {
    std::fs::create_dir_all(out).unwrap();
    let child = common::dcmtk("storescp")
        .args(["-aet", ae, "--bit-preserving"])
        .args(extra)
        .arg("--output-directory")
        .arg(out)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_port(port);
    child
}

fn dataset_of(file: &[u8]) -> Vec<u8> {
    archive_core::parse::dataset_bytes(file).unwrap().to_vec()
}

#[test]
fn c_move_to_a_configured_destination_and_c_get() {
    let dir = tempfile::tempdir().unwrap();
    let dest_port = common::free_port();
    let extra = format!("[[dicom.remote_aes]]\nae_title = \"DEST\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n");
    let server = common::Server::start(dir.path(), &extra);
    let study = store_study(server.dicom_port, dir.path(), 41);

    // A storage SCP that writes what it receives bit for bit.
    let moved = dir.path().join("moved");
    let mut scp = storage_scp("DEST", dest_port, &moved, &[]);

    let out = common::dcmtk("movescu")
        .args(["-v", "-aet", "MOVER", "-aec", "VNA", "-aem", "DEST", "-S", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={}", study[0].study)])
        .args(["127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", server.log());
    let got = received(&moved);
    for inst in &study {
        assert_eq!(
            got.get(&inst.sop_instance),
            Some(&dataset_of(&inst.bytes)),
            "{} not moved intact",
            inst.sop_instance
        );
    }
    let _ = scp.kill();
    let _ = scp.wait();

    // Unknown destination: A801, nothing sent.
    let out = common::dcmtk("movescu")
        .args(["-v", "-aet", "MOVER", "-aec", "VNA", "-aem", "NOWHERE", "-S", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={}", study[0].study)])
        .args(["127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("a801") || text.contains("A801") || text.contains("MoveDestinationUnknown"), "{text}");

    // C-GET of one series over the requesting association.
    let fetched = dir.path().join("fetched");
    std::fs::create_dir_all(&fetched).unwrap();
    let out = common::dcmtk("getscu")
        .args(["-v", "-aet", "GETTER", "-aec", "VNA", "-S", "-k", "QueryRetrieveLevel=SERIES"])
        .args(["-k", &format!("StudyInstanceUID={}", study[0].study)])
        .args(["-k", &format!("SeriesInstanceUID={}", study[0].series)])
        .arg("--output-directory")
        .arg(&fetched)
        .args(["127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", server.log());
    let got = received(&fetched);
    let series: Vec<_> = study.iter().filter(|i| i.series == study[0].series).collect();
    assert_eq!(got.len(), series.len(), "{text}");
    for inst in series {
        assert_eq!(got.get(&inst.sop_instance), Some(&dataset_of(&inst.bytes)));
    }
}

#[test]
fn storage_commitment_reports_only_stored_instances() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), "");
    let study = store_study(server.dicom_port, dir.path(), 51);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scripts/commitment_scu.py");
    let ct = "1.2.840.10008.5.1.4.1.1.2";
    let unknown = "2.25.1234567890123456789";
    let mut args: Vec<String> = study.iter().map(|i| format!("{ct}:{}", i.sop_instance)).collect();
    args.push(format!("{ct}:{unknown}"));
    args.push(format!("1.2.840.10008.5.1.4.1.1.4:{}", study[0].sop_instance));
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(server.dicom_port.to_string())
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["action_status"], 0, "{report}");
    assert_eq!(report["event_type"], 2, "some failed: {report}");
    assert_eq!(report["transaction"], report["sent_transaction"]);
    let committed: Vec<String> =
        report["committed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(committed.len(), study.len(), "{report}");
    for inst in &study {
        assert!(committed.contains(&inst.sop_instance));
    }
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{report}");
    assert!(failed.iter().any(|f| f["uid"] == unknown && f["reason"] == 0x0112));
    assert!(failed.iter().any(|f| f["uid"] == study[0].sop_instance.as_str() && f["reason"] == 0x0119));
}

#[test]
fn storage_commitment_report_on_a_new_association() {
    let dir = tempfile::tempdir().unwrap();
    let listen = common::free_port();
    let extra = format!("[[dicom.remote_aes]]\nae_title = \"MODALITY\"\nhost = \"127.0.0.1\"\nport = {listen}\n");
    let server = common::Server::start(dir.path(), &extra);
    let study = store_study(server.dicom_port, dir.path(), 81);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scripts/commitment_scu.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(server.dicom_port.to_string())
        .args(["--new-association", &listen.to_string()])
        .args(study.iter().map(|i| format!("1.2.840.10008.5.1.4.1.1.2:{}", i.sop_instance)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["event_type"], 1, "{report}\n{}", server.log());
    assert_eq!(report["committed"].as_array().unwrap().len(), study.len(), "{report}");
    assert_eq!(report["transaction"], report["sent_transaction"]);
    // vna saw the requestor's success answer (a refused report would be sent again).
    for _ in 0..100 {
        if server.log().contains("commitment report delivered on a new association") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(server.log().contains("commitment report delivered on a new association"), "{}", server.log());
}

/// Pixel data and SOP Instance UID of a Part-10 file, decoded in its own transfer syntax.
fn pixels_and_uid(file: &[u8]) -> (Vec<u8>, String) {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::OpenFileOptions::new().from_reader(&file[128..]).unwrap();
    let pixels = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().to_vec();
    let uid = obj.element(tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
    (pixels, uid)
}

#[test]
fn c_move_converts_uncompressed_objects_for_a_destination_that_wants_another_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let dest_port = common::free_port();
    let extra = format!("[[dicom.remote_aes]]\nae_title = \"IMPLICIT\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n");
    let server = common::Server::start(dir.path(), &extra);
    let study = store_study(server.dicom_port, dir.path(), 61);
    let moved = dir.path().join("moved");
    // This storage SCP accepts implicit VR little endian only; the study is stored explicit.
    let mut scp = storage_scp("IMPLICIT", dest_port, &moved, &["+xi"]);
    let out = common::dcmtk("movescu")
        .args(["-aet", "MOVER", "-aec", "VNA", "-aem", "IMPLICIT", "-S", "-k", "QueryRetrieveLevel=STUDY"])
        .args(["-k", &format!("StudyInstanceUID={}", study[0].study)])
        .args(["127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    let _ = scp.kill();
    let _ = scp.wait();
    let mut received = 0;
    for entry in walkdir::WalkDir::new(&moved).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()) {
        let bytes = std::fs::read(entry.path()).unwrap();
        let parsed = archive_core::parse::parse_part10(&bytes).unwrap();
        assert_eq!(parsed.transfer_syntax.as_str(), "1.2.840.10008.1.2", "converted to implicit VR LE");
        let (pixels, uid) = pixels_and_uid(&bytes);
        let original = study.iter().find(|i| i.sop_instance == uid).expect("a moved instance of the study");
        assert_eq!(pixels, pixels_and_uid(&original.bytes).0, "pixel data survives the conversion");
        received += 1;
    }
    assert_eq!(received, study.len());
}

#[test]
fn c_move_decompresses_for_a_destination_that_takes_only_uncompressed_and_reports_what_it_cannot_decode() {
    let dir = tempfile::tempdir().unwrap();
    let dest_port = common::free_port();
    let extra = format!("[[dicom.remote_aes]]\nae_title = \"IMPLICIT\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n");
    let server = common::Server::start(dir.path(), &extra);
    // A JPEG Baseline object (vna decodes it) and a JPEG-LS one (no decoder in vna), stored
    // as they are, and a destination that takes implicit VR little endian only.
    let files = common::pydicom_files();
    let find =
        |ts: &str| files.iter().find(|f| f.acceptable && f.transfer_syntax.as_deref() == Some(ts)).cloned().unwrap();
    let (jpeg, jpeg_ls) = (find("1.2.840.10008.1.2.4.50"), find("1.2.840.10008.1.2.4.80"));
    let http = reqwest::blocking::Client::new();
    for f in [&jpeg, &jpeg_ls] {
        let mut body = b"--b0\r\nContent-Type: application/dicom\r\n\r\n".to_vec();
        body.extend(std::fs::read(&f.path).unwrap());
        body.extend(b"\r\n--b0--\r\n");
        let rsp = http
            .post(format!("http://127.0.0.1:{}/dicom-web/studies", server.http_port))
            .header("Content-Type", "multipart/related; type=\"application/dicom\"; boundary=b0")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(rsp.status().as_u16(), 200, "{}", rsp.text().unwrap());
    }
    let moved = dir.path().join("moved");
    let mut scp = storage_scp("IMPLICIT", dest_port, &moved, &["+xi"]);
    let move_study = |path: &Path| {
        let parsed = archive_core::parse::parse_part10(&std::fs::read(path).unwrap()).unwrap();
        let out = common::dcmtk("movescu")
            .args(["-d", "-aec", "VNA", "-aem", "IMPLICIT", "-S", "-k", "QueryRetrieveLevel=STUDY"])
            .args(["-k", &format!("StudyInstanceUID={}", parsed.study)])
            .args(["127.0.0.1", &server.dicom_port.to_string()])
            .output()
            .unwrap();
        (parsed, String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout))
    };

    // JPEG Baseline: decoded and delivered in implicit VR little endian.
    let (parsed, text) = move_study(&jpeg.path);
    assert!(!text.contains("FailedSOPInstanceUIDList"), "{text}");
    let received: Vec<_> = std::fs::read_dir(&moved).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(received.len(), 1, "{text}");
    let bytes = std::fs::read(&received[0]).unwrap();
    let got = archive_core::parse::parse_part10(&bytes).unwrap();
    assert_eq!(got.transfer_syntax.as_str(), "1.2.840.10008.1.2");
    assert_eq!(got.sop_instance, parsed.sop_instance);
    let obj = dicom_object::OpenFileOptions::new().from_reader(&bytes[128..]).unwrap();
    let int = |tag| obj.element(tag).unwrap().to_int::<usize>().unwrap();
    use dicom_dictionary_std::tags;
    let expected = int(tags::ROWS) * int(tags::COLUMNS) * int(tags::SAMPLES_PER_PIXEL) * int(tags::BITS_ALLOCATED) / 8;
    let pixels = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap().len();
    assert_eq!(pixels, expected, "native pixel data of the decoded image");

    // JPEG-LS: no decoder, so that sub-operation fails and the UID is listed.
    let (parsed, text) = move_study(&jpeg_ls.path);
    let _ = scp.kill();
    let _ = scp.wait();
    assert!(text.contains("OutOfResourcesSubOperations"), "{text}");
    let listed =
        text.lines().any(|l| l.contains("FailedSOPInstanceUIDList") && l.contains(parsed.sop_instance.as_str()));
    assert!(listed, "the failed instance is listed: {text}");
}

/// A requestor may send its next request before answering the commitment report: the report
/// and the answer to that request both arrive, and the report's answer is matched later.
#[test]
fn storage_commitment_report_interleaves_with_the_next_request() {
    use dicom_ul::pdu::PDataValueType;
    use dimse::command::{CEchoRq, Message, NActionRq, NEventReportRsp};
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), "");
    let study = store_study(server.dicom_port, dir.path(), 52);

    let data = commitment_request(&study, "2.25.777");

    let mut assoc = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title("MODALITY")
        .called_ae_title("VNA")
        .with_presentation_context("1.2.840.10008.1.20.1", vec!["1.2.840.10008.1.2.1"])
        .with_presentation_context("1.2.840.10008.1.1", vec!["1.2.840.10008.1.2.1"])
        .read_timeout(std::time::Duration::from_secs(20))
        .establish(("127.0.0.1", server.dicom_port))
        .expect("association");
    let commitment_pc = assoc.presentation_contexts()[0].id;
    let echo_pc = assoc.presentation_contexts()[1].id;
    let send = |assoc: &mut dicom_ul::ClientAssociation<std::net::TcpStream>, pc: u8, m: Message, ds: &[u8]| {
        send_message(assoc, pc, m, ds)
    };
    let action = NActionRq {
        message_id: 1,
        requested_sop_class: "1.2.840.10008.1.20.1".into(),
        requested_sop_instance: "1.2.840.10008.1.20.1.1".into(),
        action_type_id: 1,
        has_dataset: true,
    };
    send(&mut assoc, commitment_pc, Message::from(action), &data);
    // The next request goes out before anything is read, so it is queued behind the report.
    send(
        &mut assoc,
        echo_pc,
        Message::from(CEchoRq { message_id: 2, affected_sop_class: "1.2.840.10008.1.1".into() }),
        &[],
    );

    let mut assembler = dimse::pdv::MessageAssembler::new(1 << 20);
    let (mut action_status, mut echo_status, mut report_event) = (None, None, None);
    while action_status.is_none() || echo_status.is_none() || report_event.is_none() {
        let dicom_ul::Pdu::PData { data } = assoc.receive().unwrap() else { panic!("unexpected PDU") };
        for v in data {
            let is_command = v.value_type == PDataValueType::Command;
            let Some(m) = assembler.push_parts(v.presentation_context_id, is_command, v.is_last, &v.data).unwrap()
            else {
                continue;
            };
            match Message::decode(&m.command).unwrap() {
                Message::NActionRsp(r) => action_status = Some(r.status),
                Message::CEchoRsp(r) => echo_status = Some(r.status),
                Message::NEventReportRq(rq) => {
                    report_event = Some(rq.event_type_id);
                    let rsp = NEventReportRsp {
                        message_id_being_responded_to: rq.message_id,
                        affected_sop_class: Some(rq.affected_sop_class.clone()),
                        affected_sop_instance: Some(rq.affected_sop_instance.clone()),
                        status: 0,
                        event_type_id: Some(rq.event_type_id),
                        error_comment: None,
                        has_dataset: false,
                    };
                    send(&mut assoc, commitment_pc, Message::from(rsp), &[]);
                }
                other => panic!("unexpected {:?}", other.command_field()),
            }
        }
    }
    let _ = assoc.release();
    assert_eq!(action_status, Some(0));
    assert_eq!(echo_status, Some(0), "the interleaved C-ECHO is answered");
    assert_eq!(report_event, Some(1), "all instances committed");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(server.log().contains("commitment report delivered"), "{}", server.log());
}

/// A report that cannot be delivered before a restart is kept on disk and delivered by the
/// next run: the requestor releases at once, its SCP is down, vna stops; when vna starts
/// again with the SCP up, the report arrives.
#[test]
fn undelivered_commitment_reports_survive_a_restart() {
    use dicom_ul::pdu::PDataValueType;
    use dimse::command::{Message, NActionRq};
    let dir = tempfile::tempdir().unwrap();
    let listen = common::free_port();
    let extra = format!("[[dicom.remote_aes]]\nae_title = \"MODALITY\"\nhost = \"127.0.0.1\"\nport = {listen}\n");
    let server = common::Server::start(dir.path(), &extra);
    let study = store_study(server.dicom_port, dir.path(), 53);

    let data = commitment_request(&study, "2.25.4711");
    let mut assoc = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title("MODALITY")
        .called_ae_title("VNA")
        .with_presentation_context("1.2.840.10008.1.20.1", vec!["1.2.840.10008.1.2.1"])
        .read_timeout(std::time::Duration::from_secs(20))
        .establish(("127.0.0.1", server.dicom_port))
        .unwrap();
    let pc = assoc.presentation_contexts()[0].id;
    let action = NActionRq {
        message_id: 1,
        requested_sop_class: "1.2.840.10008.1.20.1".into(),
        requested_sop_instance: "1.2.840.10008.1.20.1.1".into(),
        action_type_id: 1,
        has_dataset: true,
    };
    send_message(&mut assoc, pc, Message::from(action), &data);
    // Read the N-ACTION response, then leave without answering the report.
    let mut assembler = dimse::pdv::MessageAssembler::new(1 << 20);
    'action: loop {
        if let dicom_ul::Pdu::PData { data } = assoc.receive().unwrap() {
            for v in data {
                let is_command = v.value_type == PDataValueType::Command;
                if let Some(m) =
                    assembler.push_parts(v.presentation_context_id, is_command, v.is_last, &v.data).unwrap()
                {
                    if let Message::NActionRsp(r) = Message::decode(&m.command).unwrap() {
                        assert_eq!(r.status, 0);
                        break 'action;
                    }
                }
            }
        }
    }
    let _ = assoc.abort();

    // The SCP is down: the report waits in the outbox; stop vna.
    let outbox = dir.path().join("data/commitment-outbox");
    let mut waited = 0;
    while std::fs::read_dir(&outbox).map(|d| d.count()).unwrap_or(0) == 0 && waited < 100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    assert_eq!(std::fs::read_dir(&outbox).unwrap().count(), 1, "{}", server.log());
    assert_eq!(server.stop().code(), Some(0));

    // The SCP comes up, vna starts again and delivers the report.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scripts/commitment_listener.py");
    let listener = std::process::Command::new("python3")
        .arg(&script)
        .arg(listen.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for_port(listen);
    let server = common::Server::start(dir.path(), &extra);
    let out = listener.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(report["transaction"], "2.25.4711", "{report}\n{}", server.log());
    assert_eq!(report["event_type"], 1);
    assert_eq!(report["committed"].as_array().unwrap().len(), study.len());
    for _ in 0..100 {
        if std::fs::read_dir(&outbox).unwrap().count() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read_dir(&outbox).unwrap().count(),
        0,
        "delivered reports leave the outbox: {}\n{}",
        server.log(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// C-CANCEL ends a running C-FIND (FE00, far fewer responses than matches) and a running
/// C-GET (FE00 with sub-operations left), with pynetdicom sending the cancel after the first
/// pending response.
#[test]
fn c_cancel_ends_a_running_find_and_get() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Server::start(dir.path(), "");
    // One study of 2 series x 300 small instances, stored over DICOMweb in one request.
    let study =
        vna_benches::dataset::DatasetGenerator::new(71).study(&vna_benches::dataset::StudySpec::tiny("CT", 2, 300));
    let mut body = Vec::new();
    for inst in &study {
        body.extend_from_slice(b"--b1\r\nContent-Type: application/dicom\r\n\r\n");
        body.extend_from_slice(&inst.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--b1--\r\n");
    let rsp = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{}/dicom-web/studies", server.http_port))
        .header("Content-Type", "multipart/related; type=\"application/dicom\"; boundary=b1")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(rsp.status().as_u16(), 200);

    // C-FIND: the C-CANCEL travels in the same P-DATA PDU as the request, so it is waiting
    // for the server before the first response goes out, however fast the server answers
    // (a client that cancels after reading a response may come too late for 600 small rows).
    let (pending, final_status) = find_with_queued_cancel(server.dicom_port, &study[0].study);
    assert_eq!(final_status, 0xFE00, "C-FIND ends cancelled ({pending} pending responses)");
    assert!(pending < 600, "the cancel stopped the C-FIND early: {pending} pending responses");

    // C-GET (pynetdicom): cancelled after the first sub-operation; each C-STORE waits for the
    // client's answer, so the cancel arrives while the retrieve runs.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scripts/cancel_scu.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(server.dicom_port.to_string())
        .arg(&study[0].study)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["get"]["final"], 0xFE00, "{report}");
    let received = report["get"]["received"].as_u64().unwrap();
    assert!((1..600).contains(&received), "{report}");
    assert!(report["get"]["remaining"].as_i64().unwrap() > 0, "{report}");
}

/// Sends a Study Root C-FIND at IMAGE level for every instance of `study` and its C-CANCEL in
/// one P-DATA PDU; returns the pending responses received and the final status.
fn find_with_queued_cancel(port: u16, study: &str) -> (usize, u16) {
    use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    use dimse::command::{CCancelRq, CFindRq, Message};
    const FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    let mut assoc = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title("CANCELLER")
        .called_ae_title("VNA")
        .with_presentation_context(FIND, vec!["1.2.840.10008.1.2.1"])
        .read_timeout(std::time::Duration::from_secs(20))
        .establish(("127.0.0.1", port))
        .expect("association");
    let pc = assoc.presentation_contexts()[0].id;
    let mut identifier = dicom_object::InMemDicomObject::new_empty();
    for (tag, vr, value) in [
        (Tag(0x0008, 0x0052), VR::CS, "IMAGE"),
        (Tag(0x0020, 0x000D), VR::UI, study),
        (Tag(0x0020, 0x000E), VR::UI, ""),
        (Tag(0x0008, 0x0018), VR::UI, ""),
    ] {
        identifier.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    }
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get("1.2.840.10008.1.2.1").unwrap();
    let mut data = Vec::new();
    identifier.write_dataset_with_ts(&mut data, ts).unwrap();
    let request =
        Message::from(CFindRq { message_id: 7, affected_sop_class: FIND.into(), priority: Default::default() });
    let cancel = Message::from(CCancelRq { message_id_being_responded_to: 7 });
    let pdv = |value_type, data: Vec<u8>| PDataValue { presentation_context_id: pc, value_type, is_last: true, data };
    let values = vec![
        pdv(PDataValueType::Command, request.encode()),
        pdv(PDataValueType::Data, data),
        pdv(PDataValueType::Command, cancel.encode()),
    ];
    assoc.send(&dicom_ul::Pdu::PData { data: values }).unwrap();
    let mut assembler = dimse::pdv::MessageAssembler::new(1 << 20);
    let mut pending = 0;
    loop {
        let dicom_ul::Pdu::PData { data } = assoc.receive().unwrap() else { panic!("unexpected PDU") };
        for v in data {
            let is_command = v.value_type == PDataValueType::Command;
            let Some(m) = assembler.push_parts(v.presentation_context_id, is_command, v.is_last, &v.data).unwrap()
            else {
                continue;
            };
            let Message::CFindRsp(rsp) = Message::decode(&m.command).unwrap() else { panic!("not a C-FIND-RSP") };
            if matches!(rsp.status, 0xFF00 | 0xFF01) {
                pending += 1;
            } else {
                let _ = assoc.release();
                return (pending, rsp.status);
            }
        }
    }
}

/// The data set of a Storage Commitment request for every instance of `study`.
fn commitment_request(study: &[vna_benches::dataset::SyntheticInstance], transaction: &str) -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
    use dicom_encoding::TransferSyntaxIndex;
    let mut request = dicom_object::InMemDicomObject::new_empty();
    request.put(DataElement::new(Tag(0x0008, 0x1195), VR::UI, PrimitiveValue::from(transaction)));
    let items: Vec<dicom_object::InMemDicomObject> = study
        .iter()
        .map(|i| {
            let mut item = dicom_object::InMemDicomObject::new_empty();
            item.put(DataElement::new(Tag(0x0008, 0x1150), VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2")));
            item.put(DataElement::new(Tag(0x0008, 0x1155), VR::UI, PrimitiveValue::from(i.sop_instance.as_str())));
            item
        })
        .collect();
    request.put(DataElement::new(Tag(0x0008, 0x1199), VR::SQ, dicom_core::value::DataSetSequence::from(items)));
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get("1.2.840.10008.1.2.1").unwrap();
    let mut data = Vec::new();
    request.write_dataset_with_ts(&mut data, ts).unwrap();
    data
}

/// Sends a message and its data set (none when empty) on a raw association, fragmented to the
/// acceptor's maximum PDU length.
fn send_message(
    assoc: &mut dicom_ul::ClientAssociation<std::net::TcpStream>,
    pc: u8,
    message: dimse::command::Message,
    dataset: &[u8],
) {
    use dicom_ul::pdu::{PDataValue, PDataValueType};
    let max = assoc.acceptor_max_pdu_length();
    for (is_command, bytes) in [(true, message.encode()), (false, dataset.to_vec())] {
        if !is_command && bytes.is_empty() {
            continue;
        }
        for f in dimse::pdv::fragments(pc, is_command, &bytes, max) {
            let value_type = if f.is_command { PDataValueType::Command } else { PDataValueType::Data };
            let data =
                vec![PDataValue { presentation_context_id: pc, value_type, is_last: f.is_last, data: f.data.to_vec() }];
            assoc.send(&dicom_ul::Pdu::PData { data }).unwrap();
        }
    }
}

/// A move destination that aborts its association midway: the instances sent before count
/// as completed, every other one as failed (none is written to the dead connection), the
/// final response says why, and the next C-MOVE over a new sub-association works.
#[test]
fn a_move_destination_that_drops_the_association_fails_the_rest_and_vna_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let dest_port = common::free_port();
    let extra = format!("[[dicom.remote_aes]]\nae_title = \"DROPPER\"\nhost = \"127.0.0.1\"\nport = {dest_port}\n");
    let server = common::Server::start(dir.path(), &extra);
    let study = store_study(server.dicom_port, dir.path(), 43);
    assert_eq!(study.len(), 8);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scripts/dropping_move.py");
    let run = |drop_at: usize| -> serde_json::Value {
        let out = std::process::Command::new("python3")
            .arg(&script)
            .args([server.dicom_port.to_string(), dest_port.to_string(), study[0].study.clone(), drop_at.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let report = run(3);
    let final_ = &report["final"];
    assert_eq!(final_["status"], 0xB000, "{report}");
    assert_eq!((final_["completed"].as_i64(), final_["failed"].as_i64()), (Some(2), Some(6)), "{report}");
    assert!(final_["comment"].as_str().unwrap().contains("lost the connection"), "{report}");
    assert_eq!(report["stores"], 3, "nothing sent after the abort: {report}");
    // vna keeps serving: the same move with a destination that does not drop completes.
    let report = run(100);
    assert_eq!(report["final"]["status"], 0, "{report}");
    assert_eq!(report["final"]["completed"], 8, "{report}");
    assert_eq!(report["stores"], 8, "{report}");
}

/// The shared selection cases over C-MOVE (to a dcmtk storescp) and C-GET (dcmtk getscu): each
/// delivers exactly the expected instances, never one an IOCM rejection or a deletion past its
/// grace period hides (those are still in the catalog: nothing purges them here).
#[test]
fn selection_cases_over_c_move_and_c_get() {
    use common::selection::{cases, Doors, StorageScp};
    let doors = Doors::start();
    let received = doors.dir.join("moved");
    let _scp = StorageScp::start(doors.dest_port, &received);
    for case in cases(&doors.data) {
        assert_eq!(doors.c_move(&case.select, &received), case.expected, "C-MOVE: {}", case.name);
        assert_eq!(doors.c_get(&case.select), case.expected, "C-GET: {}", case.name);
    }
}

/// Storage commitment goes through the read view: an instance rejected by an IOCM note and one
/// of a study past its deletion grace period are "no such object instance", never committed,
/// though their records are still in the catalog.
#[test]
fn storage_commitment_fails_instances_a_deletion_hides() {
    use archive_core::catalog::Catalog;
    let doors = common::selection::Doors::start();
    let d = &doors.data;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scripts/commitment_scu.py");
    let ct = "1.2.840.10008.5.1.4.1.1.2";
    let visible = &d.a[1];
    let hidden = [d.rejected(), &d.c[0]];
    let mut args = vec![format!("{ct}:{}", visible.sop_instance)];
    args.extend(hidden.iter().map(|i| format!("{ct}:{}", i.sop_instance)));
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(doors.dicom_port.to_string())
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["action_status"], 0, "{report}");
    assert_eq!(report["event_type"], 2, "some failed: {report}");
    assert_eq!(report["committed"], serde_json::json!([visible.sop_instance]), "{report}");
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{report}");
    for h in hidden {
        assert!(failed.iter().any(|f| f["uid"] == h.sop_instance.as_str() && f["reason"] == 0x0112), "{report}");
        let uid = archive_core::uid::SopInstanceUid::new(&h.sop_instance).unwrap();
        assert!(doors.archive.catalog().instance(&uid).unwrap().is_some(), "hidden, not purged");
    }
}
