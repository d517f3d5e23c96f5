//! Consolidating vendor PACS end to end against `vna serve`: source profiles keyed by calling
//! AE stamp issuers (colliding Patient IDs stay apart in C-FIND and QIDO-RS) and coerce
//! attributes with the Original Attributes Sequence kept; a patient link re-files studies and
//! rewrites retrieved objects and metadata, and is undone; pydicom's files in many character
//! sets are found by PatientName.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, ADMIN_TOKEN, AUDITOR_TOKEN};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::Path;
use vna_benches::dataset::{DatasetGenerator, StudySpec, SyntheticInstance};

const SOURCES: &str = r#"
[[sources]]
name = "hospital-a"
calling_aes = ["PACS_A"]
issuer_of_patient_id = "HOSP_A"
issuer_universal_entity_id = "1.2.826.0.1.3680043.10.1"
issuer_universal_entity_id_type = "ISO"

[[sources.coerce]]
attribute = "AccessionNumber"
action = "regex_replace"
pattern = "^ACC-"
replacement = ""

[[sources.coerce]]
attribute = "InstitutionName"
action = "set"
value = "Hospital A"

[[sources]]
name = "hospital-b"
calling_aes = ["PACS_B"]
issuer_of_patient_id = "HOSP_B"
"#;

fn client() -> Client {
    Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap()
}

/// The instances with some top-level values replaced.
fn with(instances: &[SyntheticInstance], values: &[(Tag, VR, &str)]) -> Vec<Vec<u8>> {
    instances
        .iter()
        .map(|i| {
            let mut obj = dicom_object::from_reader(std::io::Cursor::new(&i.bytes[128..])).unwrap();
            for (t, vr, v) in values {
                obj.put(DataElement::new(*t, *vr, PrimitiveValue::from(*v)));
            }
            let mut out = Vec::new();
            obj.write_all(&mut out).unwrap();
            out
        })
        .collect()
}

fn storescu(server: &Server, dir: &Path, calling: &str, files: &[Vec<u8>]) {
    let paths: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(n, b)| {
            let p = dir.join(format!("{calling}-{n}.dcm"));
            std::fs::write(&p, b).unwrap();
            p
        })
        .collect();
    let out = common::dcmtk("storescu")
        .args(["-aet", calling, "-aec", "VNA", "127.0.0.1", &server.dicom_port.to_string()])
        .args(&paths)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn qido(c: &Client, base: &str, params: &[(&str, &str)]) -> Vec<Value> {
    let rsp = c.get(format!("{base}/dicom-web/studies")).query(params).send().unwrap();
    if rsp.status() == StatusCode::NO_CONTENT {
        return Vec::new();
    }
    assert_eq!(rsp.status(), StatusCode::OK);
    rsp.json::<Value>().unwrap().as_array().unwrap().clone()
}

fn cfind(server: &Server, keys: &[&str]) -> String {
    let mut c = common::dcmtk("findscu");
    c.args(["-aet", "VIEWER", "-aec", "VNA", "-S"]);
    for k in keys {
        c.args(["-k", k]);
    }
    let out = c.args(["127.0.0.1", &server.dicom_port.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
}

fn wado_object(c: &Client, base: &str, i: &SyntheticInstance) -> dicom_object::DefaultDicomObject {
    let url = format!("{base}/dicom-web/studies/{}/series/{}/instances/{}", i.study, i.series, i.sop_instance);
    let rsp = c.get(url).header("Accept", "application/dicom").send().unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let bytes = rsp.bytes().unwrap();
    dicom_object::from_reader(std::io::Cursor::new(bytes[128..].to_vec())).unwrap()
}

fn text(obj: &dicom_object::InMemDicomObject, tag: Tag) -> String {
    obj.element(tag).map(|e| e.to_str().unwrap().trim().to_string()).unwrap_or_default()
}

fn vna_at(server: &Server, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::vna_bin())
        .arg("--config")
        .arg(&server.config)
        .arg("--server")
        .arg(server.http())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn colliding_patient_ids_stay_apart_coercion_is_traceable_and_links_are_reversible() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), SOURCES);
    let base = server.http();
    let c = client();
    let mut gen = DatasetGenerator::new(31);
    let a = gen.study(&StudySpec::tiny("CT", 1, 2));
    let b = gen.study(&StudySpec::tiny("MR", 1, 2));
    let same = [(tags::PATIENT_ID, VR::LO, "12345"), (tags::ACCESSION_NUMBER, VR::SH, "ACC-77")];
    storescu(&server, dir.path(), "PACS_A", &with(&a, &same));
    storescu(&server, dir.path(), "PACS_B", &with(&b, &same));

    // One Patient ID, two patients: queries scoped by issuer find one each.
    assert_eq!(qido(&c, &base, &[("PatientID", "12345")]).len(), 2);
    let only_a = qido(&c, &base, &[("PatientID", "12345"), ("IssuerOfPatientID", "HOSP_A")]);
    assert_eq!(only_a.len(), 1);
    assert_eq!(only_a[0]["0020000D"]["Value"][0], a[0].study.as_str());
    let s = cfind(
        &server,
        &["QueryRetrieveLevel=STUDY", "PatientID=12345", "IssuerOfPatientID=HOSP_B", "StudyInstanceUID"],
    );
    assert_eq!(s.matches("(Pending)").count(), 1, "{s}");
    assert!(s.contains(&b[0].study), "{s}");
    let patients: Value = c.get(format!("{base}/api/stats")).send().unwrap().json().unwrap();
    assert_eq!(patients["patients"], 2);

    // Coerced at ingest, with the previous values kept; hospital B's accession is untouched.
    assert_eq!(only_a[0]["00080050"]["Value"][0], "77");
    let obj = wado_object(&c, &base, &a[0]);
    assert_eq!(text(&obj, tags::ISSUER_OF_PATIENT_ID), "HOSP_A");
    assert_eq!(text(&obj, tags::INSTITUTION_NAME), "Hospital A");
    let orig = &obj.element(tags::ORIGINAL_ATTRIBUTES_SEQUENCE).unwrap().items().unwrap()[0];
    assert_eq!(text(orig, tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION), "COERCE");
    assert_eq!(text(orig, tags::SOURCE_OF_PREVIOUS_VALUES), "PACS_A");
    let prev = &orig.element(tags::MODIFIED_ATTRIBUTES_SEQUENCE).unwrap().items().unwrap()[0];
    assert_eq!(text(prev, tags::ACCESSION_NUMBER), "ACC-77");
    let only_b = qido(&c, &base, &[("IssuerOfPatientID", "HOSP_B")]);
    assert_eq!(only_b[0]["00080050"]["Value"][0], "ACC-77");

    // Link B's patient into A's (a registration error): both studies under A, objects rewritten.
    let out =
        vna_at(&server, &["patient", "link", "--from", "12345^^^HOSP_B", "--to", "12345^^^HOSP_A", "--reason", "x"]);
    assert!(!out.status.success(), "linking needs an admin token");
    let out = vna_at(
        &server,
        &[
            "--token",
            ADMIN_TOKEN,
            "patient",
            "link",
            "--from",
            "12345^^^HOSP_B",
            "--to",
            "12345^^^HOSP_A",
            "--reason",
            "duplicate registration",
        ],
    );
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(qido(&c, &base, &[("PatientID", "12345"), ("IssuerOfPatientID", "HOSP_A")]).len(), 2);
    assert_eq!(qido(&c, &base, &[("IssuerOfPatientID", "HOSP_B")]).len(), 0);
    let s = cfind(&server, &["QueryRetrieveLevel=STUDY", "IssuerOfPatientID=HOSP_A", "StudyInstanceUID"]);
    assert_eq!(s.matches("(Pending)").count(), 2, "{s}");
    let patients: Value = c.get(format!("{base}/api/stats")).send().unwrap().json().unwrap();
    assert_eq!(patients["patients"], 1);
    let obj = wado_object(&c, &base, &b[1]);
    assert_eq!(text(&obj, tags::ISSUER_OF_PATIENT_ID), "HOSP_A", "retrieved under the target identity");
    let items = obj.element(tags::ORIGINAL_ATTRIBUTES_SEQUENCE).unwrap().items().unwrap().to_vec();
    let last = items.last().unwrap();
    assert_eq!(text(last, tags::REASON_FOR_THE_ATTRIBUTE_MODIFICATION), "CORRECT");
    let prev = &last.element(tags::MODIFIED_ATTRIBUTES_SEQUENCE).unwrap().items().unwrap()[0];
    assert_eq!(text(prev, tags::ISSUER_OF_PATIENT_ID), "HOSP_B");
    let meta: Value =
        c.get(format!("{base}/dicom-web/studies/{}/metadata", b[0].study)).send().unwrap().json().unwrap();
    assert_eq!(meta[0]["00100021"]["Value"][0], "HOSP_A", "metadata follows the link");

    // Undo: everything as before, and the trail shows both.
    let links: Value =
        c.get(format!("{base}/api/patient-links")).bearer_auth(AUDITOR_TOKEN).send().unwrap().json().unwrap();
    let id = links["links"][0]["id"].as_u64().unwrap().to_string();
    let out = vna_at(&server, &["--token", ADMIN_TOKEN, "patient", "unlink", &id, "--reason", "wrong link"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(qido(&c, &base, &[("IssuerOfPatientID", "HOSP_B")]).len(), 1);
    assert_eq!(text(&wado_object(&c, &base, &b[1]), tags::ISSUER_OF_PATIENT_ID), "HOSP_B");
    let out = vna_at(&server, &["--token", ADMIN_TOKEN, "patient", "unlink", &id, "--reason", "again"]);
    assert!(!out.status.success(), "a link is undone once");
    for action in ["patient_linked", "patient_unlinked"] {
        let r: Value = c
            .get(format!("{base}/api/audit?action={action}"))
            .bearer_auth(AUDITOR_TOKEN)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(r["records"].as_array().unwrap().len(), 1, "{action}");
        assert_eq!(r["records"][0]["actor"], "test-admin");
    }
    assert!(server.stop().success());
}

#[test]
fn names_in_many_character_sets_are_found_by_patient_name() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("charsets");
    // pydicom's character set files share UIDs: give each its own before storing.
    let script = r#"
import sys, os, pydicom
from pydicom.data import get_charset_files
from pydicom.uid import generate_uid
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for p in sorted(get_charset_files('chr*.dcm')):
    ds = pydicom.dcmread(p)
    if 'PatientName' not in ds:
        continue
    ds.StudyInstanceUID = generate_uid(); ds.SeriesInstanceUID = generate_uid(); ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(os.path.join(out, os.path.basename(p)))
"#;
    let out = std::process::Command::new("python3").args(["-c", script]).arg(&files).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = Server::start(dir.path(), "");
    let stored = common::dcmtk("storescu")
        .args(["-aet", "SCU", "-aec", "VNA", "+sd", "127.0.0.1", &server.dicom_port.to_string()])
        .arg(&files)
        .output()
        .unwrap();
    assert!(stored.status.success(), "{}", String::from_utf8_lossy(&stored.stderr));
    let c = client();
    let base = server.http();
    for (name, expected) in [
        ("Buc^Jérôme", 2),
        ("Äneas^Rüdiger", 1),
        ("Διονυσιος", 1),
        ("Люкceмбypг", 1),
        ("שרון^דבורה", 1),
        ("قباني^لنزار", 1),
        ("Yamada*", 1),
        ("Hong^Gildong*", 1),
        ("*やまだ^たろう*", 4),
        ("김희중", 1),
    ] {
        let found = qido(&c, &base, &[("PatientName", name)]);
        assert_eq!(found.len(), expected, "{name}: {found:?}");
    }
    assert!(server.stop().success());
}

/// A STOW-RS request of `files`, with a bearer token when given; the response status.
fn stow_as(c: &Client, base: &str, token: Option<&str>, files: &[&[u8]]) -> StatusCode {
    let mut body = Vec::new();
    for f in files {
        body.extend_from_slice(b"--b1\r\nContent-Type: application/dicom\r\n\r\n");
        body.extend_from_slice(f);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--b1--\r\n");
    let mut rq = c
        .post(format!("{base}/dicom-web/studies"))
        .header("Content-Type", "multipart/related; type=\"application/dicom\"; boundary=b1")
        .body(body);
    if let Some(t) = token {
        rq = rq.bearer_auth(t);
    }
    rq.send().unwrap().status()
}

/// A sending system that uploads over DICOMweb with its own token gets its source profile
/// (issuer stamped); anonymous uploads do not, and an unknown token is refused with nothing
/// stored. A profile naming a user that does not exist is refused by `vna config`.
#[test]
fn stow_rs_uploads_by_a_profiled_user_get_its_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let profile =
        "\n[[sources]]\nname = \"web-pacs\"\nhttp_users = [\"test-auditor\"]\nissuer_of_patient_id = \"HOSP_W\"\n";
    let server = Server::start(dir.path(), profile);
    let base = server.http();
    let c = client();
    let mut generator = DatasetGenerator::new(77);
    let profiled = generator.study(&StudySpec::tiny("CT", 1, 2));
    let anonymous = generator.study(&StudySpec::tiny("CT", 1, 2));
    let refused = generator.study(&StudySpec::tiny("CT", 1, 1));
    let files = |s: &[SyntheticInstance]| s.iter().map(|i| i.bytes.clone()).collect::<Vec<_>>();

    let f = files(&profiled);
    assert_eq!(
        stow_as(&c, &base, Some(AUDITOR_TOKEN), &f.iter().map(Vec::as_slice).collect::<Vec<_>>()),
        StatusCode::OK
    );
    let f = files(&anonymous);
    assert_eq!(stow_as(&c, &base, None, &f.iter().map(Vec::as_slice).collect::<Vec<_>>()), StatusCode::OK);
    let f = files(&refused);
    let status = stow_as(&c, &base, Some("not-a-token"), &f.iter().map(Vec::as_slice).collect::<Vec<_>>());
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let stamped = qido(&c, &base, &[("IssuerOfPatientID", "HOSP_W"), ("includefield", "IssuerOfPatientID")]);
    let uids: Vec<&str> = stamped.iter().map(|r| r["0020000D"]["Value"][0].as_str().unwrap()).collect();
    assert_eq!(uids, [profiled[0].study.as_str()], "{stamped:?}");
    let plain =
        qido(&c, &base, &[("StudyInstanceUID", anonymous[0].study.as_str()), ("includefield", "IssuerOfPatientID")]);
    assert_eq!(plain.len(), 1);
    assert!(plain[0].get("00100021").and_then(|v| v.get("Value")).is_none(), "{plain:?}");
    assert!(qido(&c, &base, &[("StudyInstanceUID", refused[0].study.as_str())]).is_empty());
    assert!(server.stop().success());

    // A profile for a user nobody configured is refused.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "data_dir = \"{}\"\n[[sources]]\nname = \"ghost\"\nhttp_users = [\"nobody\"]\n",
            dir.path().join("bad-data").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::vna_bin())
        .arg("--config")
        .arg(&bad)
        .args(["config", "check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("\"nobody\" is not under [[auth.users]]"), "{text}");
}
