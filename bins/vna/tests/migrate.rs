//! Migration from a legacy PACS end to end: a real Orthanc (Debian's `orthanc` and
//! `orthanc-dicomweb`, installed by `.ci/run`) holds pydicom's test files and generated CT
//! studies with varied study dates; `vna serve` pulls them with `vna pull start` / the admin
//! API over DIMSE (C-FIND, C-MOVE to vna) and over DICOMweb (QIDO-RS, WADO-RS), is killed with
//! SIGKILL midway and resumes without refetching, honours the date range, and every job ends
//! with a reconciliation report without mismatches and objects identical to Orthanc's.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

mod common;

use archive_core::attribute::Attribute;
use common::{free_port, Server, ADMIN_TOKEN, AUDITOR_TOKEN};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vna_benches::dataset::{DatasetGenerator, StudySpec};

const PLUGIN: &str = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";
const ORTHANC_AE: &str = "LEGACY";

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

/// A running Orthanc with its own storage and index, killed when dropped.
struct Orthanc {
    child: std::process::Child,
    /// The user name and password its REST API and DICOMweb ask for, when any.
    login: Option<(String, String)>,
    http_port: u16,
    dicom_port: u16,
    dir: PathBuf,
    binary: PathBuf,
}

impl Orthanc {
    /// Starts Orthanc in `dir`, with vna (AE `VNA` on `vna_dicom_port`) as a C-MOVE destination.
    fn start(dir: &Path, vna_dicom_port: u16) -> Orthanc {
        Self::start_with_login(dir, vna_dicom_port, None)
    }

    /// Like [`Orthanc::start`]; with `login`, HTTP requests need basic authentication.
    fn start_with_login(dir: &Path, vna_dicom_port: u16, login: Option<(&str, &str)>) -> Orthanc {
        let binary = ["/usr/sbin/Orthanc", "/usr/bin/Orthanc"].into_iter().map(PathBuf::from).find(|p| p.exists());
        let binary = binary.unwrap_or_else(|| {
            panic!("Orthanc is missing: .ci/run installs it (apt-get install orthanc orthanc-dicomweb)")
        });
        assert!(
            Path::new(PLUGIN).exists(),
            "the Orthanc DICOMweb plugin is missing at {PLUGIN}: .ci/run installs it (apt-get install orthanc-dicomweb)"
        );
        let (http_port, dicom_port) = (free_port(), free_port());
        let mut config = json!({
            "Name": "legacy",
            "StorageDirectory": dir.join("storage"),
            "IndexDirectory": dir.join("index"),
            "DicomAet": ORTHANC_AE,
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": true,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": false,
            "DicomAlwaysAllowFind": true,
            "DicomAlwaysAllowMove": true,
            "UnknownSopClassAccepted": true,
            "SyncStorageArea": false,
            "DicomModalities": { "vna": ["VNA", "127.0.0.1", vna_dicom_port] },
            "Plugins": [PLUGIN],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/", "EnableWado": true, "WadoRoot": "/wado" }
        });
        if let Some((user, password)) = login {
            config["AuthenticationEnabled"] = json!(true);
            config["RegisteredUsers"] = json!({ user: password });
        }
        let login = login.map(|(u, p)| (u.to_string(), p.to_string()));
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("orthanc.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let child = Self::spawn(&binary, dir);
        let orthanc = Orthanc { child, login, http_port, dicom_port, dir: dir.to_path_buf(), binary };
        orthanc.wait_ready();
        orthanc
    }

    fn spawn(binary: &Path, dir: &Path) -> std::process::Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("orthanc.log")).unwrap();
        std::process::Command::new(binary)
            .arg(dir.join("orthanc.json"))
            .env("TCP_NODELAY", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn wait_ready(&self) {
        let c = client();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.request(c.get(format!("{}/system", self.url()))).send().map(|r| r.status().is_success()).ok()
            != Some(true)
        {
            assert!(Instant::now() < deadline, "Orthanc did not start: {}", read(&self.dir.join("orthanc.log")));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills Orthanc (SIGKILL: connections in flight break), waits `down`, starts it again.
    fn crash_and_restart(&mut self, down: Duration) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::thread::sleep(down);
        self.child = Self::spawn(&self.binary, &self.dir);
        self.wait_ready();
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// A request with Orthanc's login, when it has one.
    fn request(&self, rq: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.login {
            Some((user, password)) => rq.basic_auth(user, Some(password)),
            None => rq,
        }
    }

    /// Uploads a file; its Orthanc id when stored.
    fn upload(&self, c: &Client, bytes: &[u8]) -> Option<String> {
        let rsp = self.request(c.post(format!("{}/instances", self.url()))).body(bytes.to_vec()).send().unwrap();
        if !rsp.status().is_success() {
            return None;
        }
        let v: Value = rsp.json().unwrap();
        (v["Status"] == "Success").then(|| v["ID"].as_str().unwrap().to_string())
    }

    fn file(&self, c: &Client, id: &str) -> Vec<u8> {
        let rsp = self.request(c.get(format!("{}/instances/{id}/file", self.url()))).send().unwrap();
        assert!(rsp.status().is_success());
        rsp.bytes().unwrap().to_vec()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// One instance Orthanc holds.
#[derive(Debug, Clone)]
struct Held {
    orthanc_id: String,
    study: String,
    series: String,
    sop: String,
}

/// What the legacy archive holds: instances, and per study its date and instance count.
#[derive(Debug, Default)]
struct Legacy {
    instances: Vec<Held>,
    studies: BTreeMap<String, (String, u64)>,
}

impl Legacy {
    fn instances_of(&self, studies: &BTreeSet<String>) -> u64 {
        self.studies.iter().filter(|(s, _)| studies.contains(*s)).map(|(_, (_, n))| n).sum()
    }
    /// Studies whose date lies in `since..=until` (`YYYYMMDD`).
    fn studies_between(&self, since: &str, until: &str) -> BTreeSet<String> {
        self.studies
            .iter()
            .filter(|(_, (d, _))| !d.is_empty() && d.as_str() >= since && d.as_str() <= until)
            .map(|(s, _)| s.clone())
            .collect()
    }
}

/// Loads Orthanc with `generated` CT studies of `per_study` instances and, with `real`,
/// pydicom's test files (those an archive must accept, one file per SOP Instance UID, one
/// patient per study and one study per series, as a consistent PACS would hold them).
fn load(o: &Orthanc, generated: usize, per_study: u32, real: bool) -> Legacy {
    let c = client();
    let mut files: Vec<Vec<u8>> = Vec::new();
    if real {
        for f in common::pydicom_files().into_iter().filter(|f| f.acceptable) {
            files.push(std::fs::read(&f.path).unwrap());
        }
    }
    let mut generator = DatasetGenerator::new(8);
    for _ in 0..generated {
        files.extend(generator.study(&StudySpec::ct(per_study)).into_iter().map(|i| i.bytes));
    }
    let mut legacy = Legacy::default();
    let mut sops = BTreeSet::new();
    let mut patient_of_study: BTreeMap<String, String> = BTreeMap::new();
    let mut study_of_series: BTreeMap<String, String> = BTreeMap::new();
    for bytes in files {
        let Ok(p) = archive_core::parse::parse_part10(&bytes) else { continue };
        let (study, series, sop) = (p.study.to_string(), p.series.to_string(), p.sop_instance.to_string());
        let patient = p.attrs.get(Attribute::PatientID).unwrap_or("").to_string();
        if sops.contains(&sop)
            || patient_of_study.get(&study).is_some_and(|x| *x != patient)
            || study_of_series.get(&series).is_some_and(|x| *x != study)
        {
            continue;
        }
        let Some(id) = o.upload(&c, &bytes) else { continue };
        sops.insert(sop.clone());
        patient_of_study.insert(study.clone(), patient);
        study_of_series.insert(series.clone(), study.clone());
        let date = p.attrs.get(Attribute::StudyDate).unwrap_or("").to_string();
        let e = legacy.studies.entry(study.clone()).or_insert((date, 0));
        e.1 += 1;
        legacy.instances.push(Held { orthanc_id: id, study, series, sop });
    }
    assert!(legacy.instances.len() >= generated * per_study as usize, "Orthanc refused generated objects");
    legacy
}

/// `vna serve` with the legacy archive configured as `legacy` (DIMSE) and `legacy-web`
/// (DICOMweb), its DICOM port fixed (Orthanc moves studies there, also after a restart).
fn start_vna(dir: &Path, o: &Orthanc, dicom_port: u16, throttle: &str) -> Server {
    let sources = format!(
        "[[pull.sources]]\nname = \"legacy\"\nkind = \"dimse\"\nae_title = \"{ORTHANC_AE}\"\nhost = \"127.0.0.1\"\nport = {}\ntimeout_secs = 60\n{throttle}\n[[pull.sources]]\nname = \"legacy-web\"\nkind = \"dicomweb\"\nurl = \"{}/dicom-web\"\ntimeout_secs = 60\n{throttle}\n",
        o.dicom_port,
        o.url()
    );
    let listen = format!("127.0.0.1:{dicom_port}");
    Server::start_full(dir, "", &sources, &[("VNA_DICOM__LISTEN", listen.as_str())])
}

fn get(c: &Client, url: &str) -> Value {
    let rsp = c.get(url).bearer_auth(ADMIN_TOKEN).send().unwrap();
    assert!(rsp.status().is_success(), "GET {url}: {}", rsp.text().unwrap_or_default());
    rsp.json().unwrap()
}

fn post(c: &Client, url: &str, token: Option<&str>, body: Value) -> (StatusCode, Value, Option<String>) {
    let mut rb = c.post(url).json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let rsp = rb.send().unwrap();
    let status = rsp.status();
    let location = rsp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, rsp.json().unwrap_or(Value::Null), location)
}

/// Starts a pull over the admin API; the job id.
fn start_pull(c: &Client, server: &Server, body: Value) -> u64 {
    let (status, job, location) = post(c, &format!("{}/api/pulls", server.http()), Some(ADMIN_TOKEN), body);
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_u64().unwrap();
    assert_eq!(location.as_deref(), Some(format!("/api/pulls/{id}").as_str()));
    id
}

/// Polls a job until it ends.
fn wait_done(c: &Client, server: &Server, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let j = get(c, &format!("{}/api/pulls/{id}", server.http()));
        if matches!(j["state"].as_str(), Some("done" | "failed" | "cancelled")) {
            return j;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {j}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn report(c: &Client, server: &Server, id: u64) -> Value {
    get(c, &format!("{}/api/pulls/{id}/report", server.http()))
}

/// The studies of a job by UID.
fn studies(c: &Client, server: &Server, id: u64) -> BTreeMap<String, Value> {
    let v = get(c, &format!("{}/api/pulls/{id}/studies", server.http()));
    v["studies"].as_array().unwrap().iter().map(|s| (s["uid"].as_str().unwrap().to_string(), s.clone())).collect()
}

fn assert_reconciled(r: &Value, studies: usize, instances: u64) {
    assert_eq!(r["state"], "done", "{r}");
    assert_eq!(r["reconciled"], true, "{r}");
    assert_eq!(r["mismatches"], json!([]), "{r}");
    assert_eq!(r["failures"], json!([]), "{r}");
    assert_eq!(r["remote"], json!({ "studies": studies, "instances": instances }), "{r}");
    assert_eq!(r["local"], json!({ "studies": studies, "instances": instances }), "{r}");
}

/// The object vna holds, as stored (WADO-URI without conversion).
fn vna_object(c: &Client, server: &Server, h: &Held) -> Vec<u8> {
    let url = format!(
        "{}/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}&contentType=application/dicom",
        server.http(),
        h.study,
        h.series,
        h.sop
    );
    let rsp = c.get(&url).send().unwrap();
    assert!(rsp.status().is_success(), "{url}: {}", rsp.status());
    rsp.bytes().unwrap().to_vec()
}

/// Opens a Part-10 file held in memory.
fn open(bytes: &[u8]) -> dicom_object::DefaultDicomObject {
    let from = if bytes.len() > 132 && &bytes[128..132] == b"DICM" { 128 } else { 0 };
    dicom_object::from_reader(&bytes[from..]).unwrap()
}

/// Whether two data sets hold the same elements with the same values, whatever the length
/// encoding of their sequences and items, group lengths, trailing padding of the data set and
/// the padding of text values.
fn same_elements(a: &dicom_object::InMemDicomObject, b: &dicom_object::InMemDicomObject) -> Result<(), String> {
    use dicom_core::value::{PrimitiveValue as P, Value as V};
    let trimmed = |p: &P| -> String {
        p.to_multi_str().iter().map(|v| v.trim_end_matches([' ', '\0'])).collect::<Vec<_>>().join("\\")
    };
    let kept = |o: &dicom_object::InMemDicomObject| -> Vec<dicom_object::mem::InMemElement> {
        o.iter()
            .filter(|e| e.header().tag.element() != 0 && e.header().tag != dicom_core::Tag(0xFFFC, 0xFFFC))
            .cloned()
            .collect()
    };
    let (ea, eb) = (kept(a), kept(b));
    if ea.len() != eb.len() {
        return Err(format!("{} elements vs {}", ea.len(), eb.len()));
    }
    for (x, y) in ea.iter().zip(&eb) {
        let tag = x.header().tag;
        if tag != y.header().tag || x.vr() != y.vr() {
            return Err(format!("{tag} vs {}", y.header().tag));
        }
        match (x.value(), y.value()) {
            (V::Primitive(p), V::Primitive(q)) if p.to_bytes() == q.to_bytes() => {}
            // Text: DCMTK drops the padding of each value of a multi-valued string.
            (
                V::Primitive(p @ (P::Str(_) | P::Strs(_) | P::Empty)),
                V::Primitive(q @ (P::Str(_) | P::Strs(_) | P::Empty)),
            ) if trimmed(p) == trimmed(q) => {}
            (V::Sequence(p), V::Sequence(q)) if p.items().len() == q.items().len() => {
                for (i, j) in p.items().iter().zip(q.items()) {
                    same_elements(i, j).map_err(|e| format!("{tag} item: {e}"))?;
                }
            }
            (V::PixelSequence(p), V::PixelSequence(q))
                if p.fragments() == q.fragments() && p.offset_table() == q.offset_table() => {}
            _ => return Err(format!("{tag} has another value")),
        }
    }
    Ok(())
}

/// How closely vna's objects must match Orthanc's.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Identity {
    /// The whole file (WADO-RS moves files as stored).
    File,
    /// Over DIMSE the sender transmits a data set and vna writes the file meta header. vna
    /// stores the data set byte for byte as received, but Orthanc (DCMTK) re-encodes what it
    /// sends: explicit sequence and item lengths, no trailing padding. So: the data set bytes
    /// of objects written that way to begin with (the generated ones), and the same elements
    /// with the same values for every object.
    DataSet,
}

/// Every instance of `which` studies is in vna and matches Orthanc's copy per `identity`.
fn assert_identical(
    c: &Client,
    o: &Orthanc,
    server: &Server,
    legacy: &Legacy,
    which: &BTreeSet<String>,
    identity: Identity,
) {
    let (mut compared, mut reencoded) = (0, 0);
    for h in legacy.instances.iter().filter(|h| which.contains(&h.study)) {
        let ours = vna_object(c, server, h);
        let theirs = o.file(c, &h.orthanc_id);
        match identity {
            Identity::File => assert!(ours == theirs, "instance {} differs from Orthanc's file", h.sop),
            Identity::DataSet => {
                let a = archive_core::parse::dataset_bytes(&ours).unwrap();
                let b = archive_core::parse::dataset_bytes(&theirs).unwrap();
                if a != b {
                    assert!(!h.sop.starts_with("2.25."), "generated instance {}: data set bytes differ", h.sop);
                    if let Err(e) = same_elements(&open(&ours), &open(&theirs)) {
                        panic!("instance {}: {e}", h.sop);
                    }
                    reencoded += 1;
                }
            }
        }
        compared += 1;
    }
    assert!(compared > 0);
    eprintln!("{compared} instances compared ({identity:?}); {reencoded} re-encoded by the sender, same elements");
}

#[test]
fn dimse_pull_of_real_files_reconciles_with_identical_objects() {
    let dir = tempfile::tempdir().unwrap();
    let vna_port = free_port();
    let orthanc = Orthanc::start(&dir.path().join("orthanc"), vna_port);
    let legacy = load(&orthanc, 4, 3, true);
    let vna_dir = dir.path().join("vna");
    std::fs::create_dir_all(&vna_dir).unwrap();
    let server = start_vna(&vna_dir, &orthanc, vna_port, "");
    let c = client();

    // The admin API refuses what it must.
    let url = format!("{}/api/pulls", server.http());
    assert_eq!(post(&c, &url, None, json!({"source": "legacy"})).0, StatusCode::UNAUTHORIZED);
    assert_eq!(post(&c, &url, Some(AUDITOR_TOKEN), json!({"source": "legacy"})).0, StatusCode::FORBIDDEN);
    assert_eq!(post(&c, &url, Some(ADMIN_TOKEN), json!({"source": "nowhere"})).0, StatusCode::BAD_REQUEST);
    let reversed = json!({"source": "legacy", "since": "2020-01-01", "until": "2019-01-01"});
    assert_eq!(post(&c, &url, Some(ADMIN_TOKEN), reversed).0, StatusCode::BAD_REQUEST);

    // The CLI pulls everything (no date range: studies without a date too) and reports.
    let out = std::process::Command::new(common::vna_bin())
        .args(["--config", server.config.to_str().unwrap(), "--server", &server.http(), "--token", ADMIN_TOKEN])
        .args(["pull", "start", "--from", "legacy"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(stdout.contains("mismatches: none") && stdout.contains("reconciled"), "{stdout}");

    let jobs = get(&c, &url);
    let id = jobs["pulls"][0]["id"].as_u64().unwrap();
    let r = report(&c, &server, id);
    let total = legacy.instances.len() as u64;
    assert_reconciled(&r, legacy.studies.len(), total);
    assert_eq!(r["counters"]["studies_fetched"], legacy.studies.len(), "{r}");
    assert_eq!(r["counters"]["fetches"], legacy.studies.len(), "{r}");
    assert_eq!(r["counters"]["instances_received"], total, "{r}");
    let all: BTreeSet<String> = legacy.studies.keys().cloned().collect();
    assert_identical(&c, &orthanc, &server, &legacy, &all, Identity::DataSet);

    // The source's C-STOREs came from its AE (what [[sources]] profiles match on).
    assert!(server.log().contains(&format!("calling={ORTHANC_AE}")), "{}", server.log());

    // Pulling again fetches nothing: every study is present.
    let again = start_pull(&c, &server, json!({"source": "legacy"}));
    wait_done(&c, &server, again);
    let cli = |args: &[&str]| {
        std::process::Command::new(common::vna_bin())
            .args(["--config", server.config.to_str().unwrap(), "--server", &server.http(), "--token", ADMIN_TOKEN])
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["pull", "report", &again.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.contains(&format!("{} already present", legacy.studies.len())), "{text}");
    let out = cli(&["pull", "status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.lines().count() == 2 && text.contains("done"), "{text}");
    let r = report(&c, &server, again);
    assert_reconciled(&r, legacy.studies.len(), total);
    assert_eq!(r["counters"]["studies_present"], legacy.studies.len(), "{r}");
    assert_eq!(r["counters"]["fetches"], 0, "{r}");

    // Start and end of each pull are audited.
    let rsp = c
        .get(format!("{}/api/audit?action=migration_pull&format=json", server.http()))
        .bearer_auth(AUDITOR_TOKEN)
        .send()
        .unwrap();
    assert!(rsp.status().is_success());
    let audit: Value = rsp.json().unwrap();
    let records = audit["records"].as_array().or_else(|| audit.as_array()).cloned().unwrap_or_default();
    assert_eq!(records.len(), 4, "{audit}");
}

#[test]
fn dicomweb_pull_honours_the_date_range_then_completes_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let vna_port = free_port();
    let orthanc = Orthanc::start(&dir.path().join("orthanc"), vna_port);
    let legacy = load(&orthanc, 8, 2, true);
    let vna_dir = dir.path().join("vna");
    std::fs::create_dir_all(&vna_dir).unwrap();
    let server = start_vna(&vna_dir, &orthanc, vna_port, "");
    let c = client();

    // A range holding some of the dated studies, not all.
    let mut dates: Vec<&String> = legacy.studies.values().map(|(d, _)| d).filter(|d| d.len() == 8).collect();
    dates.sort();
    dates.dedup();
    assert!(dates.len() >= 4, "{dates:?}");
    let (since, until) = (dates[1].clone(), dates[dates.len() - 2].clone());
    let inside = legacy.studies_between(&since, &until);
    assert!(!inside.is_empty() && inside.len() < legacy.studies.len());
    let iso = |d: &str| format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..]);
    let id = start_pull(&c, &server, json!({"source": "legacy-web", "since": iso(&since), "until": iso(&until)}));
    wait_done(&c, &server, id);
    let r = report(&c, &server, id);
    assert_reconciled(&r, inside.len(), legacy.instances_of(&inside));
    let planned: BTreeSet<String> = studies(&c, &server, id).into_keys().collect();
    assert_eq!(planned, inside);
    // Nothing outside the range came in.
    let stats = get(&c, &format!("{}/api/stats", server.http()));
    assert_eq!(stats["instances"].as_u64(), Some(legacy.instances_of(&inside)), "{stats}");
    assert_identical(&c, &orthanc, &server, &legacy, &inside, Identity::File);

    // The whole archive: the studies already pulled are present, the rest fetched.
    let full = start_pull(&c, &server, json!({"source": "legacy-web"}));
    wait_done(&c, &server, full);
    let r = report(&c, &server, full);
    let total = legacy.instances.len() as u64;
    assert_reconciled(&r, legacy.studies.len(), total);
    assert_eq!(r["counters"]["studies_present"], inside.len(), "{r}");
    assert_eq!(r["counters"]["studies_fetched"], legacy.studies.len() - inside.len(), "{r}");
    assert_eq!(r["counters"]["instances_received"], total - legacy.instances_of(&inside), "{r}");
    let all: BTreeSet<String> = legacy.studies.keys().cloned().collect();
    assert_identical(&c, &orthanc, &server, &legacy, &all, Identity::File);
    let stats = get(&c, &format!("{}/api/stats", server.http()));
    assert_eq!(stats["instances"].as_u64(), Some(total), "{stats}");
}

#[test]
fn interrupted_pull_resumes_after_sigkill_without_refetching() {
    let dir = tempfile::tempdir().unwrap();
    let vna_port = free_port();
    let orthanc = Orthanc::start(&dir.path().join("orthanc"), vna_port);
    let legacy = load(&orthanc, 12, 2, false);
    let vna_dir = dir.path().join("vna");
    std::fs::create_dir_all(&vna_dir).unwrap();
    // Two studies a second: slow enough to be killed midway.
    let mut server = start_vna(&vna_dir, &orthanc, vna_port, "max_studies_per_minute = 120");
    let c = client();
    let id = start_pull(&c, &server, json!({"source": "legacy"}));
    // A second job on the same source is refused while the first runs.
    let (status, _, _) =
        post(&c, &format!("{}/api/pulls", server.http()), Some(ADMIN_TOKEN), json!({"source": "legacy"}));
    assert_eq!(status, StatusCode::CONFLICT);

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = get(&c, &format!("{}/api/pulls/{id}", server.http()));
        if j["counters"]["studies_handled"].as_u64().unwrap_or(0) >= 4 {
            break;
        }
        assert!(j["state"] != "done", "the job ended before it could be interrupted: {j}");
        assert!(Instant::now() < deadline, "no progress: {j}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // What the durable log says was finished before the kill.
    let log = read(&vna_dir.join("data/migrations").join(id.to_string()).join("progress.jsonl"));
    let finished: BTreeSet<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["state"] == "done")
        .map(|e| e["study"].as_str().unwrap().to_string())
        .collect();
    assert!(finished.len() >= 3 && finished.len() < legacy.studies.len(), "{log}");

    // The restarted server resumes the job and finishes it.
    let server = start_vna(&vna_dir, &orthanc, vna_port, "max_studies_per_minute = 120");
    let j = wait_done(&c, &server, id);
    assert_eq!(j["resumes"], 1, "{j}");
    let r = report(&c, &server, id);
    let total = legacy.instances.len() as u64;
    assert_reconciled(&r, legacy.studies.len(), total);
    let per_study = studies(&c, &server, id);
    for uid in &finished {
        assert_eq!(per_study[uid]["fetches"], 1, "study {uid} fetched again after the resume: {}", per_study[uid]);
    }
    // At most the study in flight at the kill was fetched twice.
    let fetches = r["counters"]["fetches"].as_u64().unwrap();
    assert!(fetches <= legacy.studies.len() as u64 + 1, "{r}");
    assert!(per_study.values().all(|s| s["fetches"].as_u64().unwrap() <= 2), "{per_study:?}");
    let all: BTreeSet<String> = legacy.studies.keys().cloned().collect();
    assert_identical(&c, &orthanc, &server, &legacy, &all, Identity::DataSet);
    // An ended job cannot be cancelled.
    let (status, _, _) = post(&c, &format!("{}/api/pulls/{id}/cancel", server.http()), Some(ADMIN_TOKEN), json!({}));
    assert_eq!(status, StatusCode::CONFLICT);
}

#[test]
fn network_failure_midway_is_retried_and_the_pull_completes() {
    let dir = tempfile::tempdir().unwrap();
    let vna_port = free_port();
    let mut orthanc = Orthanc::start(&dir.path().join("orthanc"), vna_port);
    let legacy = load(&orthanc, 12, 2, false);
    let vna_dir = dir.path().join("vna");
    std::fs::create_dir_all(&vna_dir).unwrap();
    let server = start_vna(&vna_dir, &orthanc, vna_port, "max_studies_per_minute = 120\nattempts = 6");
    let c = client();
    let id = start_pull(&c, &server, json!({"source": "legacy-web"}));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let j = get(&c, &format!("{}/api/pulls/{id}", server.http()));
        if j["counters"]["studies_handled"].as_u64().unwrap_or(0) >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {j}\n{}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The legacy PACS goes away for a while: the job retries instead of failing studies.
    orthanc.crash_and_restart(Duration::from_secs(2));
    let j = wait_done(&c, &server, id);
    assert_eq!(j["state"], "done", "{j}");
    let r = report(&c, &server, id);
    assert_reconciled(&r, legacy.studies.len(), legacy.instances.len() as u64);
    let fetches = r["counters"]["fetches"].as_u64().unwrap();
    assert!(fetches > legacy.studies.len() as u64, "no fetch was retried: {r}\n{}", server.log());
    assert!(server.log().contains("fetch failed; retrying"), "{}", server.log());
    let all: BTreeSet<String> = legacy.studies.keys().cloned().collect();
    assert_identical(&c, &orthanc, &server, &legacy, &all, Identity::File);
}

/// A test CA and a server certificate it signed for 127.0.0.1, made with openssl: returns
/// the CA's PEM, the server's certificate PEM and the server's key PEM.
fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=vna test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// `testdata/scripts/tls_proxy.py`: HTTPS on `port` in front of plain HTTP on `target`.
struct TlsProxy(std::process::Child);

impl TlsProxy {
    fn start(port: u16, target: u16, cert: &Path, key: &Path) -> TlsProxy {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scripts/tls_proxy.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .args([port.to_string(), target.to_string()])
            .args([cert, key])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        TlsProxy(child)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A DICOMweb source over https (Orthanc behind a TLS proxy; Debian's Orthanc crashes on its
/// own HTTPS): a pull trusting the source's CA (`ca_file`) completes byte for byte; the same
/// source without that CA fails on the certificate, storing nothing.
#[test]
fn dicomweb_pull_over_https_checks_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(&dir.path().join("pki"));
    let vna_port = free_port();
    let orthanc = Orthanc::start(&dir.path().join("orthanc"), vna_port);
    let https_port = free_port();
    let _proxy = TlsProxy::start(https_port, orthanc.http_port, &cert, &key);
    let legacy = load(&orthanc, 2, 2, false);
    let vna_dir = dir.path().join("vna");
    std::fs::create_dir_all(&vna_dir).unwrap();
    let url = format!("https://127.0.0.1:{https_port}/dicom-web");
    let sources = format!(
        "[[pull.sources]]\nname = \"tls\"\nkind = \"dicomweb\"\nurl = \"{url}\"\nca_file = \"{ca}\"\ntimeout_secs = 30\nattempts = 1\n[[pull.sources]]\nname = \"untrusted\"\nkind = \"dicomweb\"\nurl = \"{url}\"\ntimeout_secs = 30\nattempts = 1\n",
        ca = ca.display()
    );
    let server = Server::start_full(&vna_dir, "", &sources, &[]);
    let c = client();

    let id = start_pull(&c, &server, json!({"source": "untrusted"}));
    let job = wait_done(&c, &server, id);
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job.to_string().to_lowercase().contains("certificate"), "{job}");
    let stats = get(&c, &format!("{}/api/stats", server.http()));
    assert_eq!(stats["instances"].as_u64(), Some(0), "{stats}");

    let id = start_pull(&c, &server, json!({"source": "tls"}));
    wait_done(&c, &server, id);
    let r = report(&c, &server, id);
    let all: BTreeSet<String> = legacy.studies.keys().cloned().collect();
    assert_reconciled(&r, all.len(), legacy.instances.len() as u64);
    assert_identical(&c, &orthanc, &server, &legacy, &all, Identity::File);
}

/// A DICOMweb source that asks for HTTP basic authentication: a pull with the configured
/// user and password completes byte for byte; without them it fails with the source's 401.
#[test]
fn dicomweb_pull_authenticates_to_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let vna_port = free_port();
    let orthanc = Orthanc::start_with_login(&dir.path().join("orthanc"), vna_port, Some(("vna", "pull-pass-123")));
    let legacy = load(&orthanc, 2, 2, false);
    let vna_dir = dir.path().join("vna");
    std::fs::create_dir_all(&vna_dir).unwrap();
    let url = format!("{}/dicom-web", orthanc.url());
    let sources = format!(
        "[[pull.sources]]\nname = \"with-login\"\nkind = \"dicomweb\"\nurl = \"{url}\"\nusername = \"vna\"\npassword = \"pull-pass-123\"\nattempts = 1\n[[pull.sources]]\nname = \"anonymous\"\nkind = \"dicomweb\"\nurl = \"{url}\"\nattempts = 1\n"
    );
    let server = Server::start_full(&vna_dir, "", &sources, &[]);
    let c = client();

    let id = start_pull(&c, &server, json!({"source": "anonymous"}));
    let job = wait_done(&c, &server, id);
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["last_error"].as_str().unwrap_or_default().contains("401"), "{job}");

    let id = start_pull(&c, &server, json!({"source": "with-login"}));
    wait_done(&c, &server, id);
    let r = report(&c, &server, id);
    let all: BTreeSet<String> = legacy.studies.keys().cloned().collect();
    assert_reconciled(&r, all.len(), legacy.instances.len() as u64);
    assert_identical(&c, &orthanc, &server, &legacy, &all, Identity::File);
    // The password is not shown by `vna config show`.
    let out = std::process::Command::new(common::vna_bin())
        .arg("--config")
        .arg(vna_dir.join("vna.toml"))
        .args(["config", "show"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !shown.contains("pull-pass-123") && shown.contains("<redacted>"), "{shown}");
}
