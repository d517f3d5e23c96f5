//! The retrieve selection cases every retrieving door runs, and the doors to run them on.
//!
//! One table ([`cases`]) of what a retrieve names — a study, a series, an instance, several
//! UIDs, an unknown UID, an instance hidden by an IOCM rejection, a study marked for deletion
//! past its grace period — with the SOP Instance UIDs it must deliver. The DIMSE tests run it
//! with dcmtk's movescu and getscu (C-MOVE, C-GET), the DICOMweb tests with WADO-RS; every door
//! must deliver exactly the expected set, so they all agree.
//!
//! [`Doors`] serves one archive over DIMSE and HTTP in this process, without its background
//! jobs: the deletions the cases need stay in force but are never purged, so the hidden
//! instances are still in the catalog and only the core's read view keeps them out. (With the
//! purge running, the records would be gone and a door that forgot to filter would pass.)

use super::{config_in, dcmtk, free_port, open_archive, wait_for_port};
use archive_core::deletion::{DeletionCause, DeletionRequest};
use archive_core::ingest::IngestInput;
use archive_core::model::Source;
use archive_core::uid::{SopInstanceUid, StudyUid};
use archive_core::Archive;
use dimse_scp::config::RemoteAe;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vna_benches::dataset::{DatasetGenerator, StudySpec, SyntheticInstance};

/// The stored studies.
pub struct Data {
    /// Study A: two series of three instances; its first instance is rejected (IOCM).
    pub a: Vec<SyntheticInstance>,
    /// Study B: one series of two instances, untouched.
    pub b: Vec<SyntheticInstance>,
    /// Study C: one series of two instances, marked for deletion and past its grace period.
    pub c: Vec<SyntheticInstance>,
}

impl Data {
    /// The instance of study A that an IOCM rejection hides.
    pub fn rejected(&self) -> &SyntheticInstance {
        &self.a[0]
    }
    /// The instances of a series, in generation order.
    pub fn series<'a>(&self, of: &'a [SyntheticInstance], series: &str) -> Vec<&'a SyntheticInstance> {
        of.iter().filter(|i| i.series == series).collect()
    }
}

/// What a retrieve names.
#[derive(Debug, Clone)]
pub enum Select {
    /// STUDY level: one Study Instance UID or a list.
    Study(Vec<String>),
    /// SERIES level: Series Instance UIDs of one study.
    Series {
        /// The study.
        study: String,
        /// The series.
        series: Vec<String>,
    },
    /// IMAGE level: SOP Instance UIDs of one series.
    Instances {
        /// The study.
        study: String,
        /// The series.
        series: String,
        /// The instances.
        sops: Vec<String>,
    },
}

impl Select {
    /// The identifier as dcmtk `-k` keys (a list is one backslash-separated value).
    pub fn dcmtk_keys(&self) -> Vec<String> {
        let list = |v: &[String]| v.join("\\");
        match self {
            Select::Study(s) => vec!["QueryRetrieveLevel=STUDY".into(), format!("StudyInstanceUID={}", list(s))],
            Select::Series { study, series } => vec![
                "QueryRetrieveLevel=SERIES".into(),
                format!("StudyInstanceUID={study}"),
                format!("SeriesInstanceUID={}", list(series)),
            ],
            Select::Instances { study, series, sops } => vec![
                "QueryRetrieveLevel=IMAGE".into(),
                format!("StudyInstanceUID={study}"),
                format!("SeriesInstanceUID={series}"),
                format!("SOPInstanceUID={}", list(sops)),
            ],
        }
    }

    /// The WADO-RS resources it covers (WADO-RS names one UID per request).
    pub fn wado_paths(&self) -> Vec<String> {
        match self {
            Select::Study(s) => s.iter().map(|st| format!("/studies/{st}")).collect(),
            Select::Series { study, series } => {
                series.iter().map(|se| format!("/studies/{study}/series/{se}")).collect()
            }
            Select::Instances { study, series, sops } => {
                sops.iter().map(|i| format!("/studies/{study}/series/{series}/instances/{i}")).collect()
            }
        }
    }
}

/// One selection case.
#[derive(Debug, Clone)]
pub struct Case {
    /// What it shows.
    pub name: &'static str,
    /// What the retrieve names.
    pub select: Select,
    /// The SOP Instance UIDs every door must deliver.
    pub expected: BTreeSet<String>,
}

fn uids<'a>(of: impl IntoIterator<Item = &'a SyntheticInstance>) -> BTreeSet<String> {
    of.into_iter().map(|i| i.sop_instance.clone()).collect()
}

/// Not stored anywhere.
pub const UNKNOWN_UID: &str = "2.25.112233445566778899";

/// The cases, over [`Data`] as [`Doors::start`] leaves it.
pub fn cases(d: &Data) -> Vec<Case> {
    let (a, b, c) = (&d.a, &d.b, &d.c);
    let visible_a: Vec<&SyntheticInstance> = a.iter().filter(|i| i.sop_instance != d.rejected().sop_instance).collect();
    let s1 = a[0].series.clone();
    let s2 = a.iter().find(|i| i.series != s1).expect("study A has two series").series.clone();
    let in_s2 = d.series(a, &s2);
    let in_s1 = d.series(a, &s1);
    let st = |v: &[SyntheticInstance]| v[0].study.clone();
    vec![
        Case { name: "study", select: Select::Study(vec![st(a)]), expected: uids(visible_a.iter().copied()) },
        Case {
            name: "series",
            select: Select::Series { study: st(a), series: vec![s2.clone()] },
            expected: uids(in_s2.iter().copied()),
        },
        Case {
            name: "instance",
            select: Select::Instances { study: st(a), series: s2.clone(), sops: vec![in_s2[1].sop_instance.clone()] },
            expected: uids([in_s2[1]]),
        },
        Case {
            name: "several studies",
            select: Select::Study(vec![st(a), st(b)]),
            expected: uids(visible_a.iter().copied().chain(b.iter())),
        },
        Case {
            name: "several instances",
            select: Select::Instances {
                study: st(a),
                series: s2.clone(),
                sops: vec![in_s2[0].sop_instance.clone(), in_s2[2].sop_instance.clone()],
            },
            expected: uids([in_s2[0], in_s2[2]]),
        },
        Case { name: "unknown study", select: Select::Study(vec![UNKNOWN_UID.into()]), expected: BTreeSet::new() },
        Case {
            name: "an unknown instance beside a known one",
            select: Select::Instances {
                study: st(a),
                series: s2.clone(),
                sops: vec![in_s2[0].sop_instance.clone(), UNKNOWN_UID.into()],
            },
            expected: uids([in_s2[0]]),
        },
        Case {
            name: "instance rejected by an IOCM note",
            select: Select::Instances {
                study: st(a),
                series: s1.clone(),
                sops: vec![d.rejected().sop_instance.clone()],
            },
            expected: BTreeSet::new(),
        },
        Case {
            name: "series holding a rejected instance",
            select: Select::Series { study: st(a), series: vec![s1.clone()] },
            expected: uids(in_s1.iter().copied().filter(|i| i.sop_instance != d.rejected().sop_instance)),
        },
        Case {
            name: "study marked for deletion past its grace period",
            select: Select::Study(vec![st(c)]),
            expected: BTreeSet::new(),
        },
        Case {
            name: "instance of a study past its deletion grace period",
            select: Select::Instances {
                study: st(c),
                series: c[0].series.clone(),
                sops: vec![c[0].sop_instance.clone()],
            },
            expected: BTreeSet::new(),
        },
        Case {
            name: "several studies, one past its deletion grace period",
            select: Select::Study(vec![st(b), st(c)]),
            expected: uids(b.iter()),
        },
    ]
}

/// AE title of the C-MOVE destination [`Doors`] knows.
pub const MOVE_DESTINATION: &str = "DEST";

/// One archive served over DIMSE and HTTP in this process, without background jobs, holding
/// [`Data`] with its deletions in force and not purged.
pub struct Doors {
    /// The archive.
    pub archive: Archive,
    /// The stored studies.
    pub data: Data,
    /// DIMSE port (AE title VNA).
    pub dicom_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// Port of the C-MOVE destination ([`MOVE_DESTINATION`]) the tests start.
    pub dest_port: u16,
    /// A scratch directory.
    pub dir: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Doors {
    /// Opens the archive, stores the studies, rejects the first instance of A (an IOCM
    /// rejection, hidden at once) and marks study C for deletion with a grace period that is
    /// over before this returns; then starts the DIMSE and HTTP doors.
    pub fn start() -> Doors {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let dest_port = free_port();
        let config = config_in(&dir.join("data"));
        let mut dicom = dimse_scp::config::DicomConfig::default();
        dicom.remote_aes.push(RemoteAe {
            ae_title: MOVE_DESTINATION.into(),
            host: "127.0.0.1".into(),
            port: dest_port,
        });
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut gen = DatasetGenerator::new(4242);
        let data = Data {
            a: gen.study(&StudySpec::tiny("CT", 2, 3)),
            b: gen.study(&StudySpec::tiny("MR", 1, 2)),
            c: gen.study(&StudySpec::tiny("CT", 1, 2)),
        };
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (archive, dicom_port, http_port) = rt.block_on(async {
            let settings = dimse_scp::ServerSettings::from_config(&dicom);
            let http_settings = dicomweb::HttpSettings::from_config(
                &dicomweb::config::HttpConfig::default(),
                &dicom.ae_title,
                &config.data_dir,
            );
            dicomweb::spool::prepare_dir(&http_settings.spool_dir).unwrap();
            let (archive, _) = open_archive(config).await;
            for inst in data.a.iter().chain(&data.b).chain(&data.c) {
                let src = Source { actor: "TEST".into(), address: String::new() };
                archive.ingest().ingest(IngestInput::Part10(inst.bytes.clone().into()), src).await.unwrap();
            }
            // What ingest does with an IOCM rejection note: a deletion of the instances it
            // rejects, hidden at once.
            let rejected = data.rejected();
            archive
                .deleter()
                .request(DeletionRequest {
                    study: StudyUid::new(&rejected.study).unwrap(),
                    instances: Some(vec![SopInstanceUid::new(&rejected.sop_instance).unwrap()]),
                    requested_by: "MODALITY".into(),
                    requested_from: String::new(),
                    reason: "Rejected for Quality Reasons".into(),
                    cause: DeletionCause::Rejection {
                        note: SopInstanceUid::new("2.25.9988776655").unwrap(),
                        title: "Rejected for Quality Reasons".into(),
                    },
                    grace: None,
                    hide_immediately: true,
                })
                .await
                .unwrap();
            // Study C: marked with a short grace period; visible until it ends, hidden after.
            let grace = Duration::from_millis(1500);
            let study_c = StudyUid::new(&data.c[0].study).unwrap();
            archive
                .deleter()
                .request(DeletionRequest {
                    study: study_c.clone(),
                    instances: None,
                    requested_by: "admin".into(),
                    requested_from: String::new(),
                    reason: "selection test".into(),
                    cause: DeletionCause::Request,
                    grace: Some(grace),
                    hide_immediately: false,
                })
                .await
                .unwrap();
            let select_c = || {
                let q = archive_core::retrieve::RetrieveTarget::Study(study_c.clone()).query();
                archive.retrieve().select(&q, archive.match_options()).unwrap().len()
            };
            assert_eq!(select_c(), data.c.len(), "visible during the grace period");
            tokio::time::sleep(grace + Duration::from_millis(100)).await;
            assert_eq!(select_c(), 0, "hidden once the grace period is over");

            let dicom = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (dicom_port, http_port) = (dicom.local_addr().unwrap().port(), http.local_addr().unwrap().port());
            let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let server = dimse_scp::DimseServer::new(archive.clone(), settings);
            tokio::spawn(server.run(dicom, until(stopped.clone())));
            let app = dicomweb::router(archive.clone(), http_settings);
            let serve = axum::serve(http, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(until(stopped));
            tokio::spawn(std::future::IntoFuture::into_future(serve));
            (archive, dicom_port, http_port)
        });
        wait_for_port(dicom_port);
        wait_for_port(http_port);
        Doors { archive, data, dicom_port, http_port, dest_port, dir, stop, rt, _dir: tmp }
    }

    /// The SOP Instance UIDs a C-MOVE of `select` delivers to `received` (a storage SCP's
    /// output directory, emptied afterwards); the C-MOVE must succeed.
    pub fn c_move(&self, select: &Select, received: &Path) -> BTreeSet<String> {
        let mut cmd = dcmtk("movescu");
        cmd.args(["-aet", "MOVER", "-aec", "VNA", "-aem", MOVE_DESTINATION, "-S"]);
        for k in select.dcmtk_keys() {
            cmd.args(["-k", &k]);
        }
        let out = cmd.args(["127.0.0.1", &self.dicom_port.to_string()]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "movescu {select:?}: {text}");
        assert!(!text.contains("Failed SOP"), "no failed sub-operation: {text}");
        take_received(received)
    }

    /// The SOP Instance UIDs a C-GET of `select` delivers; the C-GET must succeed.
    pub fn c_get(&self, select: &Select) -> BTreeSet<String> {
        let out_dir = tempfile::tempdir_in(&self.dir).unwrap();
        let mut cmd = dcmtk("getscu");
        cmd.args(["-aet", "GETTER", "-aec", "VNA", "-S"]);
        for k in select.dcmtk_keys() {
            cmd.args(["-k", &k]);
        }
        let out = cmd
            .arg("--output-directory")
            .arg(out_dir.path())
            .args(["127.0.0.1", &self.dicom_port.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "getscu {select:?}: {text}");
        take_received(out_dir.path())
    }

    /// The SOP Instance UIDs WADO-RS delivers for `select` (one request per UID; 404 is none).
    pub fn wado_rs(&self, select: &Select) -> BTreeSet<String> {
        let c = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let mut out = BTreeSet::new();
        for path in select.wado_paths() {
            let rsp = c
                .get(format!("http://127.0.0.1:{}/dicom-web{path}", self.http_port))
                .header("Accept", "multipart/related; type=\"application/dicom\"")
                .send()
                .unwrap();
            if rsp.status() == reqwest::StatusCode::NOT_FOUND {
                continue;
            }
            assert_eq!(rsp.status(), reqwest::StatusCode::OK, "{path}");
            let ct = rsp.headers()["content-type"].to_str().unwrap().to_string();
            let body = rsp.bytes().unwrap();
            for part in multipart_bodies(&ct, &body) {
                out.insert(archive_core::parse::parse_part10(&part).unwrap().sop_instance.to_string());
            }
        }
        out
    }

    /// The SOP Instance UIDs WADO-URI delivers for the instances `select` names (IMAGE level
    /// cases only; 404 is none).
    pub fn wado_uri(&self, select: &Select) -> Option<BTreeSet<String>> {
        let Select::Instances { study, series, sops } = select else { return None };
        let c = reqwest::blocking::Client::new();
        let mut out = BTreeSet::new();
        for sop in sops {
            let url = format!(
                "http://127.0.0.1:{}/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}&contentType=application/dicom",
                self.http_port
            );
            let rsp = c.get(url).send().unwrap();
            if rsp.status() == reqwest::StatusCode::NOT_FOUND {
                continue;
            }
            assert_eq!(rsp.status(), reqwest::StatusCode::OK, "{sop}");
            out.insert(archive_core::parse::parse_part10(&rsp.bytes().unwrap()).unwrap().sop_instance.to_string());
        }
        Some(out)
    }

    /// Runs a future on the doors' runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

impl Drop for Doors {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The SOP Instance UIDs of the DICOM files under `dir`, which are then removed.
fn take_received(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()) {
        let bytes = std::fs::read(entry.path()).unwrap();
        if let Ok(p) = archive_core::parse::parse_part10(&bytes) {
            out.insert(p.sop_instance.to_string());
        }
        std::fs::remove_file(entry.path()).unwrap();
    }
    out
}

/// The bodies of a multipart response's parts.
fn multipart_bodies(content_type: &str, body: &[u8]) -> Vec<Vec<u8>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap_or_else(|| panic!("no boundary in {content_type}"))
        .trim_matches('"')
        .to_string();
    let delimiter = format!("\r\n--{boundary}");
    let mut text = b"\r\n".to_vec();
    text.extend_from_slice(body);
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut out = Vec::new();
    let start = find(&text, delimiter.as_bytes()).expect("first delimiter");
    let mut rest = &text[start + delimiter.len()..];
    while !rest.starts_with(b"--") {
        let head_end = find(rest, b"\r\n\r\n").expect("part headers");
        rest = &rest[head_end + 4..];
        let end = find(rest, delimiter.as_bytes()).expect("next delimiter");
        out.push(rest[..end].to_vec());
        rest = &rest[end + delimiter.len()..];
    }
    out
}

/// A dcmtk storage SCP writing what it receives into `out`, as the C-MOVE destination; killed on drop.
pub struct StorageScp {
    child: std::process::Child,
}

impl StorageScp {
    /// Starts one on `port` with AE title [`MOVE_DESTINATION`].
    pub fn start(port: u16, out: &Path) -> StorageScp {
        std::fs::create_dir_all(out).unwrap();
        let child = dcmtk("storescp")
            .args(["-aet", MOVE_DESTINATION, "--bit-preserving", "--output-directory"])
            .arg(out)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for_port(port);
        StorageScp { child }
    }
}

impl Drop for StorageScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
