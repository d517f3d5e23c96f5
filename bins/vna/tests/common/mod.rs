//! Shared helpers of the end-to-end tests: archives on temporary directories with the
//! real RocksDB catalog and hot tier, and pydicom's test files.
// One of the few files allowed `unsafe` (workspace lint): signals to the server under test through libc; each block has its SAFETY note.
#![allow(unsafe_code)]
#![allow(dead_code)]

pub mod selection;

use archive_core::config::ArchiveConfig;
use archive_core::tier::{Tier, TierName};
use archive_core::Archive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tier_plugins::hot::HotTier;

/// The bearer token of the administrator every test server knows.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The bearer token of the auditor every test server knows.
pub const AUDITOR_TOKEN: &str = "test-auditor-token-0123456789";

/// A configuration rooted in `dir` with no free-space floors.
pub fn config_in(dir: &Path) -> ArchiveConfig {
    let mut c = ArchiveConfig { data_dir: dir.to_path_buf(), ..ArchiveConfig::default() };
    c.catalog.min_free_mb = 0;
    c.hot.min_free_mb = 0;
    c
}

/// Opens an archive with the hot tier, as `vna serve` does.
pub async fn open_archive(config: ArchiveConfig) -> (Archive, Arc<HotTier>) {
    let hot = Arc::new(HotTier::open(TierName::new("hot").unwrap(), config.hot_path()).expect("hot tier opens"));
    let tiers: Vec<Arc<dyn Tier>> = vec![hot.clone()];
    let (archive, _) = Archive::open(config, tiers, TierName::new("hot").unwrap()).await.expect("archive opens");
    (archive, hot)
}

/// One of pydicom's bundled test files.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TestFile {
    pub path: PathBuf,
    pub acceptable: bool,
    pub transfer_syntax: Option<String>,
    pub sop_instance: Option<String>,
}

/// pydicom's test files, described by `testdata/pydicom_manifest.py`.
pub fn pydicom_files() -> Vec<TestFile> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/pydicom_manifest.py");
    let out = std::process::Command::new("python3").arg(&script).output().expect("python3 runs (install with .ci/run)");
    assert!(
        out.status.success(),
        "pydicom manifest failed (pip install -r testdata/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<TestFile> = serde_json::from_slice(&out.stdout).expect("manifest is JSON");
    assert!(files.len() > 100, "expected pydicom's test corpus, found {} files", files.len());
    files
}

/// The path of the built `vna` binary.
pub fn vna_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vna"))
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (up to 10 s) until something listens on a loopback port: a peer the test started.
pub fn wait_for_port(port: u16) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A running `vna serve`, stopped with SIGTERM when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub dicom_port: u16,
    pub http_port: u16,
    pub dir: PathBuf,
    pub config: PathBuf,
}

impl Server {
    /// Starts `vna serve` on ports the system picks (no race between tests for "free" ports)
    /// with data in `dir`; `dicom_extra` goes into the `[dicom]` section.
    pub fn start(dir: &Path, dicom_extra: &str) -> Server {
        Self::start_with(dir, "", dicom_extra)
    }

    /// Like [`Server::start`], with `http_extra` in the `[http]` section.
    pub fn start_with(dir: &Path, http_extra: &str, dicom_extra: &str) -> Server {
        Self::start_full(dir, http_extra, dicom_extra, &[])
    }

    /// Like [`Server::start`], with more environment variables for the process (for
    /// example `VNA_FAILPOINTS`).
    pub fn start_env(dir: &Path, dicom_extra: &str, env: &[(&str, &str)]) -> Server {
        Self::start_full(dir, "", dicom_extra, env)
    }

    /// Starts `vna serve` with `http_extra` in `[http]`, `dicom_extra` in `[dicom]` (and any
    /// sections after it) and `env` added to the environment.
    pub fn start_full(dir: &Path, http_extra: &str, dicom_extra: &str, env: &[(&str, &str)]) -> Server {
        let config = dir.join("vna.toml");
        let http_listen = if http_extra.contains("listen") { "" } else { "listen = \"127.0.0.1:0\"" };
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[[auth.users]]\nname = \"test-admin\"\ntoken = \"{ADMIN_TOKEN}\"\nrole = \"admin\"\n[[auth.users]]\nname = \"test-auditor\"\ntoken = \"{AUDITOR_TOKEN}\"\nrole = \"auditor\"\n[catalog]\nmin_free_mb = 0\n[hot]\nmin_free_mb = 0\n[http]\n{http_listen}\n{http_extra}\n[dicom]\nlisten = \"127.0.0.1:0\"\n{dicom_extra}",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("vna.log")).unwrap();
        let child = std::process::Command::new(vna_bin())
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Server { child, dicom_port: 0, http_port: 0, dir: dir.to_path_buf(), config };
        server.wait_ready();
        server
    }

    /// Waits for the "listening" log lines and reads the bound ports from them.
    fn wait_ready(&mut self) {
        for _ in 0..300 {
            let log = self.log();
            let port_of = |what: &str| -> Option<u16> {
                let line = log.lines().find(|l| l.contains(what))?;
                let at = line.find("127.0.0.1:")? + "127.0.0.1:".len();
                line[at..].chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().ok()
            };
            if let (Some(d), Some(h)) = (port_of("dicom listening"), port_of("http listening")) {
                self.dicom_port = d;
                self.http_port = h;
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("vna serve did not start: {}", self.log());
    }

    /// Sends SIGTERM and waits; returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) takes plain integers; the pid is our own child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    /// Waits up to `timeout` for the process to end by itself (a crash point aborts it);
    /// returns its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The HTTP base URL (`http://127.0.0.1:port`).
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vna.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a dcmtk tool from /usr/bin (pynetdicom installs tools of the same names earlier on PATH),
/// with TCP_NODELAY so that dcmtk does not stall on delayed ACKs.
pub fn dcmtk(tool: &str) -> std::process::Command {
    let path = PathBuf::from("/usr/bin").join(tool);
    assert!(path.exists(), "{} is missing: install dcmtk (.ci/run does)", path.display());
    let mut c = std::process::Command::new(path);
    c.env("TCP_NODELAY", "1");
    c
}

/// A `moto_server` (S3-compatible, installed by `.ci/run`) on a free port, killed on drop.
pub struct Moto {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Moto {
    /// Starts one and waits for its port.
    pub fn start() -> Moto {
        let port = free_port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server is installed by .ci/run (pip install 'moto[server]')");
        wait_for_port(port);
        Moto { child, port }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stores objects over STOW-RS in one multipart request and expects 200.
pub fn stow_parts<B: AsRef<[u8]>>(c: &reqwest::blocking::Client, base: &str, parts: &[B]) {
    const BOUNDARY: &str = "vna-test-boundary-7d2f";
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
        body.extend_from_slice(p.as_ref());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let rsp = c
        .post(format!("{base}/dicom-web/studies"))
        .header("Content-Type", format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(rsp.status(), reqwest::StatusCode::OK, "{}", rsp.text().unwrap());
}
