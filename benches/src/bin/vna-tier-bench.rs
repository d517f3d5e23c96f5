//! Storage tier benchmarks (issue 6): warm-tier put/get throughput, ranged-read latency and
//! zstd compression ratio at levels 1, 3 and 9 on synthetic CT and MR instances (the hot tier
//! beside it for comparison), compression of pydicom's real test files by transfer syntax,
//! the warm tier's per-modality zstd dictionaries against plain zstd on small objects (tiny
//! synthetic instances, pydicom's uncompressed files) and on CT slices, and lifecycle
//! migration throughput of one study hot → warm, hot → S3, warm → S3 and S3 → hot through
//! `Archive::lifecycle()`. The S3 tier runs against a local `moto_server` started by the
//! benchmark when it is on PATH (those rows are skipped otherwise).
//!
//! `cargo run --release -p vna-benches --bin vna-tier-bench -- [--ct N] [--mr N] [--study N] [--ranged N]
//! [--dict N] [--dict-ct N] [--only-dict]`
//! Set `VNA_BENCH_DIR` to put the data on a specific disk.
// One of the few files allowed `unsafe` (workspace lint): posix_fadvise(2) and getrusage(2) through libc; each block has its SAFETY note.
#![allow(unsafe_code)]

use archive_core::config::ArchiveConfig;
use archive_core::ingest::IngestInput;
use archive_core::lifecycle::{Job, JobState, TierMoveRequest};
use archive_core::model::Source;
use archive_core::tier::{GetOpts, ObjectKey, PutOpts, Tier, TierExt, TierName};
use archive_core::uid::StudyUid;
use archive_core::Archive;
use bytes::Bytes;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tier_plugins::hot::HotTier;
use tier_plugins::s3::{S3Options, S3Tier};
use tier_plugins::warm::{WarmConfig, WarmTier};
use vna_benches::dataset::{DatasetGenerator, StudySpec};

/// Bytes of one ranged read.
const RANGE_BYTES: u64 = 64 << 10;

fn name(s: &str) -> TierName {
    TierName::new(s).expect("valid tier name")
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A deterministic pseudo-random sequence (splitmix64) for range offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One synthetic study as tier objects, keyed as the archive keys them (study/series/sop).
fn objects(spec: &StudySpec, seed: u64) -> Vec<(ObjectKey, Bytes)> {
    DatasetGenerator::new(seed)
        .study(spec)
        .into_iter()
        .map(|i| {
            let key = ObjectKey::new(format!("{}/{}/{}", i.study, i.series, i.sop_instance)).expect("valid key");
            (key, Bytes::from(i.bytes))
        })
        .collect()
}

fn total(objs: &[(ObjectKey, Bytes)]) -> u64 {
    objs.iter().map(|(_, b)| b.len() as u64).sum()
}

/// Drops the pages of every file under `dir` from the page cache (advisory; the virtual
/// disk's host may still cache them).
fn drop_cache(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => drop_cache(&path),
            Ok(t) if t.is_file() => {
                if let Ok(f) = std::fs::File::open(&path) {
                    use std::os::fd::AsRawFd;
                    // SAFETY: a plain advisory call on an open descriptor.
                    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                }
            }
            _ => {}
        }
    }
}

/// Puts every object with `writers` puts in flight; returns the wall time.
async fn put_all(tier: &Arc<dyn Tier>, objs: &[(ObjectKey, Bytes)], writers: usize) -> Duration {
    let started = Instant::now();
    futures::stream::iter(objs.iter().cloned())
        .map(|(key, bytes)| {
            let tier = tier.clone();
            async move { tier.put_bytes(&key, bytes, PutOpts::default()).await.expect("put") }
        })
        .buffer_unordered(writers)
        .collect::<Vec<_>>()
        .await;
    started.elapsed()
}

/// Reads every object in full (checksum verified as it streams), one at a time.
async fn get_all(tier: &Arc<dyn Tier>, objs: &[(ObjectKey, Bytes)]) -> Duration {
    let started = Instant::now();
    for (key, bytes) in objs {
        let got = tier.get(key, GetOpts::default()).await.expect("get");
        let mut body = got.body;
        let mut n = 0usize;
        while let Some(chunk) = body.next().await {
            n += chunk.expect("verified chunk").len();
        }
        assert_eq!(n, bytes.len(), "full read of {key}");
    }
    started.elapsed()
}

/// `reads` ranged reads of [`RANGE_BYTES`] at pseudo-random offsets of random objects;
/// returns the sorted latencies.
async fn ranged(tier: &Arc<dyn Tier>, objs: &[(ObjectKey, Bytes)], reads: usize) -> Vec<Duration> {
    let mut rng = Rng(42);
    let mut out = Vec::with_capacity(reads);
    for _ in 0..reads {
        let (key, bytes) = &objs[(rng.next() % objs.len() as u64) as usize];
        let size = bytes.len() as u64;
        let len = RANGE_BYTES.min(size);
        let start = rng.next() % (size - len + 1);
        let started = Instant::now();
        let got = tier.get(key, GetOpts { range: Some(start..start + len) }).await.expect("ranged get");
        let data = archive_core::tier::collect_stream(got.body).await.expect("ranged body");
        out.push(started.elapsed());
        assert_eq!(&data[..], &bytes[start as usize..(start + len) as usize], "ranged read of {key}");
    }
    out.sort();
    out
}

/// Bytes an object takes in the tier: the warm tier's compressed length, the size elsewhere.
fn stored_bytes(warm: Option<&WarmTier>, objs: &[(ObjectKey, Bytes)]) -> u64 {
    match warm {
        Some(w) => w.segments().iter().map(|s| s.bytes).sum(),
        None => total(objs),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Hot,
    Warm(i32),
}

impl Kind {
    fn label(&self) -> String {
        match self {
            Kind::Hot => "hot (files)".into(),
            Kind::Warm(level) => format!("warm, zstd {level}"),
        }
    }
    fn open(&self, root: PathBuf) -> (Arc<dyn Tier>, Option<WarmTier>) {
        match self {
            Kind::Hot => (Arc::new(HotTier::open(name("hot"), root).expect("hot tier")), None),
            Kind::Warm(level) => {
                let config =
                    WarmConfig { zstd_level: *level, compact_interval: Duration::ZERO, ..WarmConfig::default() };
                let warm = WarmTier::open_config(name("warm"), root, config).expect("warm tier");
                (Arc::new(warm.clone()), Some(warm))
            }
        }
    }
}

async fn tier_throughput(dir: &Path, ct: u32, mr: u32, reads: usize) {
    let sets = [
        ("CT 512×512×16", objects(&StudySpec::ct(ct), 11)),
        (
            "MR 256×256×16",
            objects(
                &StudySpec {
                    modality: "MR",
                    series: 1,
                    instances_per_series: mr,
                    rows: 256,
                    columns: 256,
                    ..StudySpec::ct(0)
                },
                12,
            ),
        ),
    ];
    println!("## Warm tier put/get and compression (synthetic instances)\n");
    for (what, objs) in &sets {
        println!("- {what}: {} instances, {:.1} MB", objs.len(), mb(total(objs)));
    }
    println!(
        "\n| tier | data | put MB/s, 1 writer | put MB/s, 4 writers | full get MB/s (page cache) | full get MB/s (after DONTNEED) | ranged 64 KiB get p50 / p99 ms | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let kinds = [Kind::Hot, Kind::Warm(1), Kind::Warm(3), Kind::Warm(9)];
    let mut run = 0;
    for kind in kinds {
        for (what, objs) in &sets {
            run += 1;
            let bytes = total(objs);
            let root_a = dir.join(format!("tier-{run}-a"));
            let root_b = dir.join(format!("tier-{run}-b"));
            let (tier, warm) = kind.open(root_a.clone());
            let one = put_all(&tier, objs, 1).await;
            let ratio = bytes as f64 / stored_bytes(warm.as_ref(), objs) as f64;
            let four = {
                let (tier_b, _) = kind.open(root_b.clone());
                let t = put_all(&tier_b, objs, 4).await;
                drop(tier_b);
                let _ = std::fs::remove_dir_all(&root_b);
                t
            };
            let cached = get_all(&tier, objs).await;
            drop_cache(&root_a);
            let cold = get_all(&tier, objs).await;
            let lat = ranged(&tier, objs, reads).await;
            println!(
                "| {} | {what} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} / {:.2} | {:.2} |",
                kind.label(),
                mb(bytes) / one.as_secs_f64(),
                mb(bytes) / four.as_secs_f64(),
                mb(bytes) / cached.as_secs_f64(),
                mb(bytes) / cold.as_secs_f64(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                ratio
            );
            drop(tier);
            drop(warm);
            let _ = std::fs::remove_dir_all(&root_a);
        }
    }
}

/// A transfer syntax's family, for grouping real files.
fn family(ts: &str) -> &'static str {
    match ts {
        "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2.2" => "uncompressed (implicit/explicit VR)",
        "1.2.840.10008.1.2.1.99" => "deflated explicit VR",
        "1.2.840.10008.1.2.5" => "RLE lossless",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "JPEG-LS",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "JPEG 2000",
        t if t.starts_with("1.2.840.10008.1.2.4.") => "JPEG (baseline, extended, lossless)",
        _ => "other",
    }
}

/// Files shown one by one (the rest only in their family's total).
const NAMED: &[&str] = &[
    "CT_small.dcm",
    "liver_1frame.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm",
    "examples_overlay.dcm",
    "examples_jpeg2k.dcm",
    "examples_ybr_color.dcm",
];

async fn real_files(dir: &Path) {
    println!("\n## Warm tier compression of pydicom's test files\n");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/pydicom_manifest.py");
    let out = match std::process::Command::new("python3").arg(&script).output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            println!("skipped: the manifest failed ({})", String::from_utf8_lossy(&o.stderr).trim());
            return;
        }
        Err(e) => {
            println!("skipped: python3 did not run ({e})");
            return;
        }
    };
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest is JSON");
    let mut files: Vec<(PathBuf, String, Bytes)> = Vec::new();
    for f in manifest.as_array().map(Vec::as_slice).unwrap_or_default() {
        let (Some(path), Some(ts)) = (f["path"].as_str(), f["transfer_syntax"].as_str()) else { continue };
        if let Ok(bytes) = std::fs::read(path) {
            files.push((PathBuf::from(path), ts.to_string(), Bytes::from(bytes)));
        }
    }
    let levels = [1, 3, 9];
    // Stored (compressed) length of every file at each level.
    let mut stored: Vec<Vec<u64>> = Vec::new();
    for level in levels {
        let root = dir.join(format!("real-{level}"));
        let config = WarmConfig { zstd_level: level, compact_interval: Duration::ZERO, ..WarmConfig::default() };
        let warm = WarmTier::open_config(name("warm"), root.clone(), config).expect("warm tier");
        let mut lens = Vec::with_capacity(files.len());
        for (i, (_, _, bytes)) in files.iter().enumerate() {
            let key = ObjectKey::new(format!("real/{i}")).expect("key");
            warm.put_bytes(&key, bytes.clone(), PutOpts::default()).await.expect("put");
            lens.push(warm.location_of(&key).expect("stored").2);
        }
        stored.push(lens);
        drop(warm);
        let _ = std::fs::remove_dir_all(&root);
    }
    let ratio = |idx: &[usize], l: usize| -> f64 {
        let orig: u64 = idx.iter().map(|&i| files[i].2.len() as u64).sum();
        let comp: u64 = idx.iter().map(|&i| stored[l][i]).sum();
        orig as f64 / comp.max(1) as f64
    };
    println!("| files | transfer syntax | count | KB | ratio zstd 1 / 3 / 9 |\n|---|---|---|---|---|");
    for named in NAMED {
        let idx: Vec<usize> =
            (0..files.len()).filter(|&i| files[i].0.file_name().and_then(|n| n.to_str()) == Some(*named)).collect();
        if let Some(&i) = idx.first() {
            println!(
                "| {named} | {} | 1 | {:.1} | {:.2} / {:.2} / {:.2} |",
                files[i].1,
                files[i].2.len() as f64 / 1e3,
                ratio(&idx[..1], 0),
                ratio(&idx[..1], 1),
                ratio(&idx[..1], 2)
            );
        }
    }
    let mut families: Vec<&str> = files.iter().map(|f| family(&f.1)).collect();
    families.sort();
    families.dedup();
    for fam in families {
        let idx: Vec<usize> = (0..files.len()).filter(|&i| family(&files[i].1) == fam).collect();
        let kb: u64 = idx.iter().map(|&i| files[i].2.len() as u64).sum();
        println!(
            "| all files | {fam} | {} | {:.1} | {:.2} / {:.2} / {:.2} |",
            idx.len(),
            kb as f64 / 1e3,
            ratio(&idx, 0),
            ratio(&idx, 1),
            ratio(&idx, 2)
        );
    }
}

/// One object of a dictionary comparison: key, bytes, content class.
type Classed = (ObjectKey, Bytes, String);

/// What one warm tier did with a set of classed objects.
struct DictRun {
    /// Stored (compressed) length of each object.
    stored: Vec<u64>,
    /// Whether each object was compressed with a dictionary.
    with_dict: Vec<bool>,
    /// CPU time (user + system, whole process) of the puts that did not train a dictionary:
    /// compression, hashing, index work; the wall time is the disk's fsync rate.
    put_cpu: Duration,
    /// Wall time of each put that trained a dictionary (training included).
    training: Vec<Duration>,
    /// Bytes of the trained dictionaries.
    dict_bytes: u64,
    /// Wall time of a full read of every object (page cache).
    get: Duration,
}

/// User + system CPU time of the whole process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `usage`, a valid rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Puts every object (one writer, content class set) into a fresh warm tier, then reads all
/// back.
async fn dict_run(root: PathBuf, objs: &[Classed], dictionaries: bool, samples: usize) -> DictRun {
    let config = WarmConfig {
        compact_interval: Duration::ZERO,
        dictionaries,
        dictionary_samples: samples,
        ..WarmConfig::default()
    };
    let warm = WarmTier::open_config(name("warm"), root.clone(), config).expect("warm tier");
    let mut run = DictRun {
        stored: Vec::new(),
        with_dict: Vec::new(),
        put_cpu: Duration::ZERO,
        training: Vec::new(),
        dict_bytes: 0,
        get: Duration::ZERO,
    };
    let mut trained = 0;
    for (key, bytes, class) in objs {
        let opts = PutOpts { content_class: Some(class.clone()), ..PutOpts::default() };
        let (started, cpu) = (Instant::now(), cpu_time());
        warm.put_bytes(key, bytes.clone(), opts).await.expect("put");
        let (took, cpu) = (started.elapsed(), cpu_time().saturating_sub(cpu));
        let dicts = warm.dictionaries().len();
        if dicts > trained {
            trained = dicts;
            run.training.push(took);
        } else {
            run.put_cpu += cpu;
        }
        run.stored.push(warm.location_of(key).expect("stored").2);
        run.with_dict.push(warm.dictionary_of(key).is_some());
    }
    run.dict_bytes = warm.dictionaries().iter().map(|d| d.bytes).sum();
    let started = Instant::now();
    for (key, bytes, _) in objs {
        assert_eq!(warm.get_bytes(key).await.expect("get").len(), bytes.len());
    }
    run.get = started.elapsed();
    drop(warm);
    let _ = std::fs::remove_dir_all(&root);
    run
}

/// One row of the dictionary comparison: the same objects into a warm tier without and with
/// dictionaries (zstd 3 both).
async fn dict_row(dir: &Path, what: &str, objs: &[Classed], samples: usize) {
    if objs.is_empty() {
        println!("| {what} | skipped: no objects | | | | | | | | |");
        return;
    }
    let plain = dict_run(dir.join("dict-plain"), objs, false, samples).await;
    let dict = dict_run(dir.join("dict-on"), objs, true, samples).await;
    let n = objs.len();
    let mut classes: Vec<&str> = objs.iter().map(|o| o.2.as_str()).collect();
    classes.sort();
    classes.dedup();
    let size: u64 = objs.iter().map(|o| o.1.len() as u64).sum();
    // The objects the dictionary served, against the same objects stored plain.
    let served: Vec<usize> = (0..n).filter(|&i| dict.with_dict[i]).collect();
    let orig_served: u64 = served.iter().map(|&i| objs[i].1.len() as u64).sum();
    let plain_served: u64 = served.iter().map(|&i| plain.stored[i]).sum();
    let dict_served: u64 = served.iter().map(|&i| dict.stored[i]).sum();
    let ratio = |orig: u64, stored: u64| orig as f64 / stored.max(1) as f64;
    let per = |d: Duration, k: usize| d.as_secs_f64() * 1e6 / k.max(1) as f64;
    let training = if dict.training.is_empty() {
        "none trained".to_string()
    } else {
        let ms: Vec<String> = dict.training.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0)).collect();
        ms.join(", ")
    };
    println!(
        "| {what} | {n} ({} classes) | {:.1} | {} | {:.1} | {:.2} → {:.2} | {:.2} → {:.2} | {:.0} → {:.0} | {training} | {:.0} / {:.0} |",
        classes.len(),
        size as f64 / n as f64 / 1e3,
        served.len(),
        dict.dict_bytes as f64 / 1e3,
        ratio(orig_served, plain_served),
        ratio(orig_served, dict_served),
        ratio(size, plain.stored.iter().sum()),
        ratio(size, dict.stored.iter().sum::<u64>() + dict.dict_bytes),
        per(plain.put_cpu, n),
        per(dict.put_cpu, n - dict.training.len()),
        per(plain.get, n),
        per(dict.get, n),
    );
}

/// Modality of a Part-10 file, read up to its pixel data.
fn modality_of(path: &Path) -> Option<String> {
    let obj =
        dicom_object::OpenFileOptions::new().read_until(dicom_dictionary_std::tags::PIXEL_DATA).open_file(path).ok()?;
    let m = obj.element(dicom_dictionary_std::tags::MODALITY).ok()?.to_str().ok()?.trim().to_string();
    (!m.is_empty()).then_some(m)
}

/// pydicom's uncompressed test files of at most 1 MB, each with its Modality as class.
fn pydicom_small() -> Vec<Classed> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/pydicom_manifest.py");
    let Ok(out) = std::process::Command::new("python3").arg(&script).output() else { return Vec::new() };
    let Ok(manifest) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return Vec::new() };
    let mut files = Vec::new();
    for (i, f) in manifest.as_array().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
        let (Some(path), Some(ts)) = (f["path"].as_str(), f["transfer_syntax"].as_str()) else { continue };
        if family(ts) != "uncompressed (implicit/explicit VR)" {
            continue;
        }
        let path = Path::new(path);
        let (Ok(bytes), Some(class)) = (std::fs::read(path), modality_of(path)) else { continue };
        if bytes.len() <= 1_000_000 {
            files.push((ObjectKey::new(format!("real/{i}")).expect("key"), Bytes::from(bytes), class));
        }
    }
    files
}

fn classed_study(spec: &StudySpec, seed: u64) -> Vec<Classed> {
    objects(spec, seed).into_iter().map(|(k, b)| (k, b, spec.modality.to_string())).collect()
}

async fn dictionaries(dir: &Path, tiny: u32, ct: u32) {
    println!("\n## Warm tier: per-modality zstd dictionaries against plain zstd (level 3)\n");
    println!(
        "| data | objects | KB/object | objects compressed with a dictionary | dictionary KB | ratio of those objects, plain → dictionary | ratio of all objects (dictionaries counted), plain → dictionary | put CPU µs/object plain → dictionary | training put ms | full get µs/object plain / dictionary |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut both = classed_study(&StudySpec::tiny("CT", 4, tiny / 8), 41);
    both.extend(classed_study(&StudySpec::tiny("MR", 4, tiny / 8), 42));
    dict_row(dir, "synthetic CT + MR, 8×8 pixels, samples 200", &both, 200).await;
    dict_row(dir, "synthetic CT + MR, 8×8 pixels, samples 50", &both, 50).await;
    let mut real = pydicom_small();
    dict_row(dir, "pydicom uncompressed files ≤ 1 MB, class = Modality, samples 10", &real, 10).await;
    for file in &mut real {
        file.2 = "any".into();
    }
    dict_row(dir, "pydicom uncompressed files ≤ 1 MB, one class for all, samples 10", &real, 10).await;
    dict_row(dir, "pydicom uncompressed files ≤ 1 MB, one class for all, samples 50", &real, 50).await;
    if ct > 0 {
        dict_row(dir, "synthetic CT 512×512×16, samples 50", &classed_study(&StudySpec::ct(ct), 43), 50).await;
    }
}

/// A `moto_server` (S3-compatible) on a free loopback port, killed on drop.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Moto {
    /// Starts one, or says why not.
    fn start() -> Result<Moto, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("moto_server did not start ({e}); install it with pip install 'moto[server]'"))?;
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("moto_server did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ingest_study(archive: &Archive, objs: Vec<Bytes>) -> Duration {
    let started = Instant::now();
    futures::stream::iter(objs)
        .map(|b| {
            let a = archive.clone();
            async move {
                a.ingest()
                    .ingest(IngestInput::Part10(b), Source { actor: "BENCH".into(), address: String::new() })
                    .await
                    .expect("ingest")
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    started.elapsed()
}

async fn migrate(
    archive: &Archive,
    study: &StudyUid,
    from: Option<&str>,
    to: &str,
    expected: u64,
) -> anyhow::Result<(Job, Duration)> {
    let started = Instant::now();
    let job = archive.lifecycle().submit(TierMoveRequest {
        study: study.clone(),
        to: name(to),
        from: from.map(name),
        keep_source: false,
        requested_by: "bench".into(),
        reason: None,
    })?;
    let job = archive.lifecycle().wait(job.id, Duration::from_secs(1200)).await?;
    let took = started.elapsed();
    anyhow::ensure!(
        job.state == JobState::Done && job.instances_failed == 0 && job.instances_done == expected,
        "job {} {} -> {to} ended {:?} with {} done, {} failed of {expected}: {:?}",
        job.id,
        from.unwrap_or("best copy"),
        job.state,
        job.instances_done,
        job.instances_failed,
        job.last_error
    );
    Ok((job, took))
}

async fn migrations(dir: &Path, instances: u32) -> anyhow::Result<()> {
    println!("\n## Lifecycle migration of one study ({instances} CT instances, moves: keep_source = false)\n");
    let moto = match Moto::start() {
        Ok(m) => Some(m),
        Err(why) => {
            println!("S3 rows skipped: {why}\n");
            None
        }
    };
    let mut config = ArchiveConfig { data_dir: dir.join("archive"), ..ArchiveConfig::default() };
    config.catalog.min_free_mb = 0;
    config.hot.min_free_mb = 0;
    let hot = HotTier::open(name("hot"), config.hot_path()).expect("hot tier");
    let warm_config = WarmConfig { compact_interval: Duration::ZERO, ..WarmConfig::default() };
    let warm = WarmTier::open_config(name("warm"), config.data_dir.join("tiers/warm"), warm_config)?;
    let mut tiers: Vec<Arc<dyn Tier>> = vec![Arc::new(hot), Arc::new(warm.clone())];
    if let Some(m) = &moto {
        let options: S3Options = serde_json::from_value(serde_json::json!({
            "bucket": "vna-bench",
            "prefix": "bench/",
            "endpoint": format!("http://127.0.0.1:{}", m.port),
            "access_key_id": "bench",
            "secret_access_key": "bench",
            "create_bucket": true,
        }))?;
        let s3 = S3Tier::open(name("cold"), options, config.data_dir.join("tiers/cold")).await?;
        tiers.push(Arc::new(s3));
    }
    let (archive, _) = Archive::open(config, tiers, name("hot")).await?;

    let mut gen = DatasetGenerator::new(21);
    let mut studies = Vec::new();
    let mut ingest_note = Vec::new();
    for _ in 0..if moto.is_some() { 2 } else { 1 } {
        let study = gen.study(&StudySpec::ct(instances));
        let uid = StudyUid::new(&study[0].study)?;
        let bytes: u64 = study.iter().map(|i| i.bytes.len() as u64).sum();
        let took = ingest_study(&archive, study.into_iter().map(|i| Bytes::from(i.bytes)).collect()).await;
        ingest_note.push(format!(
            "{:.1} MB in {:.2} s ({:.0} MB/s)",
            mb(bytes),
            took.as_secs_f64(),
            mb(bytes) / took.as_secs_f64()
        ));
        studies.push((uid, bytes));
    }
    println!("Ingested into hot (16 concurrent ingests) before timing: {}.\n", ingest_note.join("; "));
    println!("| migration | instances | MB | seconds | instances/s | MB/s | failed |\n|---|---|---|---|---|---|---|");
    let n = instances as u64;
    let row = |what: &str, job: &Job, took: Duration, bytes: u64| {
        let s = took.as_secs_f64();
        println!(
            "| {what} | {} | {:.1} | {:.2} | {:.0} | {:.0} | {} |",
            job.instances_done,
            mb(bytes),
            s,
            job.instances_done as f64 / s,
            mb(bytes) / s,
            job.instances_failed
        );
    };
    let (a, a_bytes) = &studies[0];
    let (job, took) = migrate(&archive, a, None, "warm", n).await?;
    row("hot → warm (zstd 3, one put per instance, read-back verified)", &job, took, *a_bytes);
    let warm_stored: u64 = warm.segments().iter().map(|s| s.bytes).sum();
    if let Some((b, b_bytes)) = studies.get(1) {
        let (job, took) = migrate(&archive, b, None, "cold", n).await?;
        row("hot → S3 (one bundle via put_many, read back with one GET via verify_many)", &job, took, *b_bytes);
        let (job, took) = migrate(&archive, a, Some("warm"), "cold", n).await?;
        row("warm → S3 (one bundle via put_many, read back with one GET via verify_many)", &job, took, *a_bytes);
        let (job, took) = migrate(&archive, b, Some("cold"), "hot", n).await?;
        row("S3 → hot (sources read ahead with one GET per chunk of 32 via get_many, fsynced files, delete_many per commit)", &job, took, *b_bytes);
    }
    println!(
        "\nWarm tier after hot → warm: {:.1} MB in segments for {:.1} MB of objects (ratio {:.2}).",
        mb(warm_stored),
        mb(*a_bytes),
        *a_bytes as f64 / warm_stored.max(1) as f64
    );
    archive.close().await?;
    if let Some(m) = &moto {
        s3_requests(dir, m.port, instances).await?;
    }
    drop(moto);
    Ok(())
}

/// The S3 tier's requests on their own, to tell moto's per-request cost from its cost per
/// bundle size: one study written as one bundle and read back instance by instance, then
/// instances written as bundles of their own and read back.
async fn s3_requests(dir: &Path, port: u16, instances: u32) -> anyhow::Result<()> {
    let options: S3Options = serde_json::from_value(serde_json::json!({
        "bucket": "vna-bench-direct",
        "endpoint": format!("http://127.0.0.1:{port}"),
        "access_key_id": "bench",
        "secret_access_key": "bench",
        "create_bucket": true,
    }))?;
    let s3: Arc<dyn Tier> = Arc::new(S3Tier::open(name("direct"), options, dir.join("s3-direct")).await?);
    let objs = objects(&StudySpec::ct(instances), 31);
    let bytes = total(&objs);
    let started = Instant::now();
    let items = objs
        .iter()
        .map(|(k, b)| (k.clone(), archive_core::tier::bytes_stream(b.clone()), PutOpts::default()))
        .collect();
    s3.put_many(items).await?;
    let bundle_put = started.elapsed();
    let sample: Vec<(ObjectKey, Bytes)> = objs.iter().step_by((objs.len() / 20).max(1)).cloned().collect();
    let timed_gets = |keys: Vec<(ObjectKey, Bytes)>| {
        let s3 = s3.clone();
        async move {
            let mut lat = Vec::new();
            for (k, b) in &keys {
                let started = Instant::now();
                let got = s3.get_bytes(k).await.expect("S3 get");
                lat.push(started.elapsed());
                assert_eq!(got.len(), b.len());
            }
            lat.sort();
            lat
        }
    };
    let in_bundle = timed_gets(sample.clone()).await;
    // The read-back of a migration batch: every instance of the bundle with one verify_many.
    let checks = objs.iter().map(|(k, b)| (k.clone(), archive_core::checksum::Checksum::of(b))).collect();
    let started = Instant::now();
    let verified = s3.verify_many(checks).await?;
    let verify_all = started.elapsed();
    anyhow::ensure!(verified.iter().all(Result::is_ok), "verify_many of the bundle failed");
    let single = objects(&StudySpec::ct(20), 32);
    let mut put_lat = Vec::new();
    for (k, b) in &single {
        let started = Instant::now();
        s3.put_bytes(k, b.clone(), PutOpts::default()).await?;
        put_lat.push(started.elapsed());
    }
    put_lat.sort();
    let alone = timed_gets(single.clone()).await;
    let one = single.first().map_or(0, |(_, b)| b.len() as u64);
    println!("\nThe S3 tier's requests on their own (same moto_server):\n");
    println!("| request | result |\n|---|---|");
    println!(
        "| put_many of {} instances as one {:.1} MB bundle ({}) | {:.2} s, {:.0} MB/s |",
        objs.len(),
        mb(bytes),
        if bytes >= 64 << 20 { "multipart upload, 16 MiB parts" } else { "one PutObject" },
        bundle_put.as_secs_f64(),
        mb(bytes) / bundle_put.as_secs_f64()
    );
    println!(
        "| full get of one instance from that bundle (ranged GET), p50 / p99 of {} | {:.1} / {:.1} ms |",
        sample.len(),
        percentile(&in_bundle, 0.5),
        percentile(&in_bundle, 0.99)
    );
    println!(
        "| verify_many of all {} instances of that bundle (one GET, BLAKE3 of each) | {:.2} s, {:.0} MB/s |",
        objs.len(),
        verify_all.as_secs_f64(),
        mb(bytes) / verify_all.as_secs_f64()
    );
    println!(
        "| put of one instance as its own {:.2} MB bundle (PutObject + index object), p50 / p99 of {} | {:.1} / {:.1} ms |",
        mb(one),
        single.len(),
        percentile(&put_lat, 0.5),
        percentile(&put_lat, 0.99)
    );
    println!(
        "| full get of an instance from its own bundle, p50 / p99 of {} | {:.1} / {:.1} ms |",
        single.len(),
        percentile(&alone, 0.5),
        percentile(&alone, 0.99)
    );
    // Deletes: half of the big bundle (one index rewrite), then the rest together with the
    // single-instance bundles (one DeleteObjects).
    let half: Vec<ObjectKey> = objs.iter().step_by(2).map(|(k, _)| k.clone()).collect();
    let half_len = half.len();
    let started = Instant::now();
    s3.delete_many(half).await?;
    let delete_half = started.elapsed();
    let rest: Vec<ObjectKey> = objs.iter().skip(1).step_by(2).chain(&single).map(|(k, _)| k.clone()).collect();
    let rest_len = rest.len();
    let started = Instant::now();
    s3.delete_many(rest).await?;
    let delete_rest = started.elapsed();
    println!(
        "| delete_many of {} instances of the bundle (one index rewrite) | {:.1} ms |",
        half_len,
        delete_half.as_secs_f64() * 1000.0
    );
    println!(
        "| delete_many of its other {} and the {} single-instance bundles ({} bundles emptied: one DeleteObjects) | {:.1} ms |",
        rest_len - single.len(),
        single.len(),
        single.len() + 1,
        delete_rest.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let ct = arg("--ct", 200) as u32;
    let mr = arg("--mr", 400) as u32;
    let study = arg("--study", 200) as u32;
    let reads = arg("--ranged", 500) as usize;
    let dict = arg("--dict", 2000) as u32;
    let dict_ct = arg("--dict-ct", 150) as u32;
    let only_dict = args.iter().any(|a| a == "--only-dict");
    let dir = match std::env::var_os("VNA_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = Instant::now();
    if !only_dict {
        rt.block_on(tier_throughput(dir.path(), ct, mr, reads));
        rt.block_on(real_files(dir.path()));
    }
    rt.block_on(dictionaries(dir.path(), dict, dict_ct));
    if !only_dict {
        rt.block_on(migrations(dir.path(), study))?;
    }
    println!("\nTotal run time: {:.0} s.", started.elapsed().as_secs_f64());
    Ok(())
}
