//! `vna-loadgen`: drives any DICOMweb archive (vna, Orthanc with its DICOMweb plugin, ...)
//! and reports throughput and latency percentiles, as a table and as JSON.
//!
//! ```text
//! vna-loadgen stow --url BASE [--clients 4] [--batch 25] [--ct 200] [--tiny 0] [--seed 1]
//! vna-loadgen qido --url BASE [--clients 4] [--requests 2000]
//! vna-loadgen wado --url BASE [--clients 4] [--studies 20]
//! vna-loadgen find --dicom HOST:PORT --aec AE [--clients 4] [--requests 2000]
//! vna-loadgen store --dicom HOST:PORT --aec AE [--clients 4] [--ct 200] [--tiny 0] [--cr 0] [--dx 0] [--us 0]
//! vna-loadgen move --dicom HOST:PORT --aec AE [--clients 1] [--studies 20] [--move-ae LOADGEN] [--move-listen 127.0.0.1:11113]
//! vna-loadgen get --dicom HOST:PORT --aec AE [--clients 1] [--studies 20]
//! vna-loadgen limits --dir DIR [--quick 1]
//! ```
//! `BASE` is the DICOMweb root, e.g. `http://127.0.0.1:8080/dicom-web`. `--json FILE` writes
//! the figures as JSON as well. Data sets come from the deterministic generator: the same
//! seed gives the same studies, so two archives get the same load. `--cr N`/`--dx N` add N
//! single-image studies of 3000×2500×16 bit, `--us N` N multi-frame ultrasound studies of
//! `--us-frames` (30) frames of 640×480 RGB (`--us-rgb 0`: MONOCHROME2).
//!
//! For `move`, the archive must know the loadgen's C-STORE SCP as a move destination:
//! `--move-ae` at `--move-listen` (vna: `[[dicom.remote_aes]]`; Orthanc: `DicomModalities`).

use anyhow::{bail, Context};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vna_benches::dataset::{DatasetGenerator, StudySpec, SyntheticInstance};

const BOUNDARY: &str = "vna-loadgen-7b3e1f";

struct Options {
    url: String,
    clients: usize,
    batch: usize,
    ct: u32,
    tiny: u32,
    seed: u64,
    requests: usize,
    studies: usize,
    json: Option<String>,
    dicom: String,
    aec: String,
    dir: String,
    quick: bool,
    cr: u32,
    dx: u32,
    us: u32,
    us_frames: u32,
    us_rgb: bool,
    move_ae: String,
    move_listen: String,
}

fn parse() -> anyhow::Result<(String, Options)> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: vna-loadgen stow|qido|wado|find|store|move|get|limits --url BASE | --dicom HOST:PORT --aec AE | --dir DIR [--clients N] [--batch N] [--ct N] [--tiny N] [--cr N] [--dx N] [--us N] [--us-frames N] [--us-rgb 0|1] [--seed N] [--requests N] [--studies N] [--move-ae AE] [--move-listen HOST:PORT] [--json FILE]";
    let cmd = args.next().context(usage)?;
    let mut o = Options {
        url: String::new(),
        clients: 4,
        batch: 25,
        ct: 200,
        tiny: 0,
        seed: 1,
        requests: 2000,
        studies: 20,
        json: None,
        dicom: String::new(),
        aec: "VNA".into(),
        dir: String::new(),
        quick: false,
        cr: 0,
        dx: 0,
        us: 0,
        us_frames: 30,
        us_rgb: true,
        move_ae: "LOADGEN".into(),
        move_listen: "127.0.0.1:11113".into(),
    };
    while let Some(flag) = args.next() {
        let v = args.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => o.url = v.trim_end_matches('/').to_string(),
            "--clients" => o.clients = v.parse::<usize>()?.max(1),
            "--batch" => o.batch = v.parse::<usize>()?.max(1),
            "--ct" => o.ct = v.parse()?,
            "--tiny" => o.tiny = v.parse()?,
            "--seed" => o.seed = v.parse()?,
            "--requests" => o.requests = v.parse()?,
            "--studies" => o.studies = v.parse()?,
            "--json" => o.json = Some(v),
            "--dicom" => o.dicom = v,
            "--aec" => o.aec = v,
            "--dir" => o.dir = v,
            "--quick" => o.quick = v != "0",
            "--cr" => o.cr = v.parse()?,
            "--dx" => o.dx = v.parse()?,
            "--us" => o.us = v.parse()?,
            "--us-frames" => o.us_frames = v.parse()?,
            "--us-rgb" => o.us_rgb = v != "0",
            "--move-ae" => o.move_ae = v,
            "--move-listen" => o.move_listen = v,
            other => bail!("unknown option {other}\n{usage}"),
        }
    }
    if o.dir.is_empty() && cmd == "limits" {
        bail!("--dir DIR (on the disk under test) is required\n{usage}");
    }
    let dimse = matches!(cmd.as_str(), "find" | "store" | "move" | "get");
    if o.url.is_empty() && !dimse && cmd != "limits" {
        bail!("--url is required\n{usage}");
    }
    if o.dicom.is_empty() && dimse {
        bail!("--dicom HOST:PORT is required\n{usage}");
    }
    Ok((cmd, o))
}

/// Latency percentiles in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    let at = |p: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    json!({"count": samples.len(), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{what} {{bar:40}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}"))
            .expect("valid template"),
    );
    bar
}

/// The generated instances: `ct` CT images (512x512x16) in studies of 50, `tiny`
/// small instances in studies of 2 series x 5 spread over many patients, `cr`/`dx` single
/// large radiographs and `us` multi-frame ultrasound studies.
fn dataset(o: &Options) -> Vec<SyntheticInstance> {
    dataset_with_classes(o).into_iter().map(|(_, i)| i).collect()
}

/// [`dataset`] with the storage SOP class of each instance.
fn dataset_with_classes(o: &Options) -> Vec<(&'static str, SyntheticInstance)> {
    let mut g = DatasetGenerator::new(o.seed);
    let mut out = Vec::new();
    let mut add = |g: &mut DatasetGenerator, spec: &StudySpec, take: usize| {
        out.extend(g.study(spec).into_iter().take(take).map(|i| (spec.sop_class(), i)));
    };
    let mut left = o.ct;
    while left > 0 {
        let n = left.min(50);
        add(&mut g, &StudySpec::ct(n), n as usize);
        left -= n;
    }
    let mut left = o.tiny;
    while left > 0 {
        let n = left.min(10);
        let modality = if left.is_multiple_of(20) { "MR" } else { "CT" };
        add(&mut g, &StudySpec::tiny(modality, 2, n.div_ceil(2)), n as usize);
        left -= n;
    }
    for _ in 0..o.cr {
        add(&mut g, &StudySpec::cr(), 1);
    }
    for _ in 0..o.dx {
        add(&mut g, &StudySpec::dx(), 1);
    }
    for _ in 0..o.us {
        add(&mut g, &StudySpec::us(o.us_frames, o.us_rgb), 1);
    }
    out
}

fn multipart(parts: &[&SyntheticInstance]) -> Vec<u8> {
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.bytes.len() + 80).sum::<usize>() + 40);
    for p in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
        body.extend_from_slice(&p.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn stow(o: &Options, http: &reqwest::Client) -> anyhow::Result<serde_json::Value> {
    let instances = dataset(o);
    let bytes: u64 = instances.iter().map(|i| i.bytes.len() as u64).sum();
    let batches: Vec<Vec<u8>> = instances.chunks(o.batch).map(|c| multipart(&c.iter().collect::<Vec<_>>())).collect();
    let bar = progress(instances.len() as u64, "STOW-RS");
    let url = format!("{}/studies", o.url);
    let ct = format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}");
    let started = Instant::now();
    let results: Vec<anyhow::Result<(Duration, usize)>> = futures::stream::iter(batches.into_iter().enumerate())
        .map(|(i, body)| {
            let (http, url, ct, bar) = (http.clone(), url.clone(), ct.clone(), bar.clone());
            let n = o.batch.min(instances.len() - i * o.batch);
            async move {
                let t = Instant::now();
                let rsp = http
                    .post(&url)
                    .header("Content-Type", ct)
                    .header("Accept", "application/dicom+json")
                    .body(body)
                    .send()
                    .await?;
                let status = rsp.status();
                let text = rsp.text().await?;
                if !status.is_success() {
                    bail!("STOW-RS answered {status}: {}", text.chars().take(300).collect::<String>());
                }
                bar.inc(n as u64);
                Ok((t.elapsed(), n))
            }
        })
        .buffer_unordered(o.clients)
        .collect()
        .await;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let mut latencies = Vec::new();
    for r in results {
        latencies.push(r?.0);
    }
    Ok(json!({
        "workload": "stow",
        "instances": instances.len(),
        "bytes": bytes,
        "clients": o.clients,
        "batch": o.batch,
        "seconds": elapsed.as_secs_f64(),
        "instances_per_s": instances.len() as f64 / elapsed.as_secs_f64(),
        "mb_per_s": bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        "request_latency": percentiles(latencies),
    }))
}

/// Values to query with, gathered from the archive itself so that any archive can be driven.
struct Targets {
    studies: Vec<String>,
    patient_ids: Vec<String>,
    names: Vec<String>,
    dates: Vec<String>,
}

async fn targets(o: &Options, http: &reqwest::Client, wanted: usize) -> anyhow::Result<Targets> {
    let url =
        format!("{}/studies?limit={wanted}&includefield=00100020&includefield=00100010&includefield=00080020", o.url);
    let rows: Vec<serde_json::Value> =
        http.get(&url).header("Accept", "application/dicom+json").send().await?.error_for_status()?.json().await?;
    let value = |r: &serde_json::Value, tag: &str| -> Option<String> {
        let v = &r[tag]["Value"][0];
        v.as_str().map(str::to_string).or_else(|| v["Alphabetic"].as_str().map(str::to_string))
    };
    let t = Targets {
        studies: rows.iter().filter_map(|r| value(r, "0020000D")).collect(),
        patient_ids: rows.iter().filter_map(|r| value(r, "00100020")).collect(),
        names: rows.iter().filter_map(|r| value(r, "00100010")).collect(),
        dates: rows.iter().filter_map(|r| value(r, "00080020")).collect(),
    };
    if t.studies.is_empty() {
        bail!("the archive holds no study; run `vna-loadgen stow` first");
    }
    Ok(t)
}

/// The figures of a query workload: overall and per query kind.
fn query_report(
    workload: &str,
    o: &Options,
    elapsed: Duration,
    kinds: &[&str],
    timed: Vec<(usize, Duration)>,
) -> serde_json::Value {
    let mut by_kind = vec![Vec::new(); kinds.len()];
    for (k, d) in &timed {
        by_kind[*k].push(*d);
    }
    let per_kind: serde_json::Map<String, serde_json::Value> =
        kinds.iter().zip(by_kind).map(|(k, v)| (k.to_string(), percentiles(v))).collect();
    json!({
        "workload": workload,
        "requests": o.requests,
        "clients": o.clients,
        "seconds": elapsed.as_secs_f64(),
        "requests_per_s": o.requests as f64 / elapsed.as_secs_f64(),
        "latency": percentiles(timed.into_iter().map(|(_, d)| d).collect()),
        "by_query": per_kind,
    })
}

async fn qido(o: &Options, http: &reqwest::Client) -> anyhow::Result<serde_json::Value> {
    let t = Arc::new(targets(o, http, 1000).await?);
    // The mix: a study by UID, by PatientID, by name prefix, by a date range with a modality,
    // and the series of a study.
    let kinds = ["study_uid", "patient_id", "name_prefix", "date_range_modality", "series_of_study"];
    let bar = progress(o.requests as u64, "QIDO-RS");
    let started = Instant::now();
    let results: Vec<anyhow::Result<(usize, Duration)>> = futures::stream::iter(0..o.requests)
        .map(|i| {
            let (http, t, bar, base) = (http.clone(), t.clone(), bar.clone(), o.url.clone());
            async move {
                let k = i % kinds.len();
                let pick = |v: &Vec<String>| v[(i / kinds.len()) % v.len().max(1)].clone();
                let url = match kinds[k] {
                    "study_uid" => format!("{base}/studies?StudyInstanceUID={}", pick(&t.studies)),
                    "patient_id" => format!("{base}/studies?PatientID={}", pick(&t.patient_ids)),
                    "name_prefix" => {
                        let name = pick(&t.names);
                        let family: String = name.split('^').next().unwrap_or("").chars().take(3).collect();
                        format!("{base}/studies?PatientName={family}*&limit=100")
                    }
                    "date_range_modality" => {
                        let d = pick(&t.dates);
                        let year = &d[..4.min(d.len())];
                        format!("{base}/studies?StudyDate={year}0101-{year}0630&ModalitiesInStudy=CT&limit=100")
                    }
                    _ => format!("{base}/studies/{}/series", pick(&t.studies)),
                };
                let start = Instant::now();
                let rsp = http.get(&url).header("Accept", "application/dicom+json").send().await?;
                let status = rsp.status();
                rsp.bytes().await?;
                if !status.is_success() && status.as_u16() != 204 {
                    bail!("{url} answered {status}");
                }
                bar.inc(1);
                Ok((k, start.elapsed()))
            }
        })
        .buffer_unordered(o.clients)
        .collect()
        .await;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let timed = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok(query_report("qido", o, elapsed, &kinds, timed))
}

async fn wado(o: &Options, http: &reqwest::Client) -> anyhow::Result<serde_json::Value> {
    let t = targets(o, http, o.studies).await?;
    let studies: Vec<String> = t.studies.into_iter().take(o.studies).collect();
    let bar = progress(studies.len() as u64, "WADO-RS");
    let started = Instant::now();
    let results: Vec<anyhow::Result<(u64, Duration)>> = futures::stream::iter(studies.clone())
        .map(|study| {
            let (http, bar, base) = (http.clone(), bar.clone(), o.url.clone());
            async move {
                let start = Instant::now();
                let rsp = http
                    .get(format!("{base}/studies/{study}"))
                    .header("Accept", "multipart/related; type=\"application/dicom\"; transfer-syntax=*")
                    .send()
                    .await?
                    .error_for_status()?;
                let mut stream = rsp.bytes_stream();
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    n += chunk?.len() as u64;
                }
                bar.inc(1);
                Ok((n, start.elapsed()))
            }
        })
        .buffer_unordered(o.clients)
        .collect()
        .await;
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let mut bytes = 0;
    let mut latencies = Vec::new();
    for r in results {
        let (n, d) = r?;
        bytes += n;
        latencies.push(d);
    }
    Ok(json!({
        "workload": "wado",
        "studies": studies.len(),
        "clients": o.clients,
        "bytes": bytes,
        "seconds": elapsed.as_secs_f64(),
        "mb_per_s": bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        "study_latency": percentiles(latencies),
    }))
}

/// C-STORE of the generated data set over `clients` concurrent associations, each storing
/// its share (every `clients`-th instance) one at a time.
async fn store(o: &Options) -> anyhow::Result<serde_json::Value> {
    use vna_benches::dimse_load::StoreClient;
    let instances = Arc::new(dataset_with_classes(o));
    if instances.is_empty() {
        bail!("empty data set: give --ct, --tiny, --cr, --dx or --us");
    }
    let bytes: u64 = instances.iter().map(|(_, i)| i.bytes.len() as u64).sum();
    let bar = progress(instances.len() as u64, "C-STORE");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..o.clients.min(instances.len()) {
        let (instances, bar, addr, aec, clients) =
            (instances.clone(), bar.clone(), o.dicom.clone(), o.aec.clone(), o.clients);
        tasks.push(tokio::spawn(async move {
            let mut c = StoreClient::connect(&addr, "LOADGEN", &aec).await?;
            let (mut latencies, mut failed) = (Vec::new(), 0usize);
            for (class, inst) in instances.iter().skip(client).step_by(clients) {
                let (status, elapsed) = c.store(class, &inst.sop_instance, &inst.bytes).await?;
                if !dimse::status::kind(status).is_success_or_warning() {
                    failed += 1;
                }
                latencies.push(elapsed);
                bar.inc(1);
            }
            c.release().await;
            anyhow::Ok((latencies, failed))
        }));
    }
    let (mut latencies, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await??;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(json!({
        "workload": "store",
        "instances": instances.len(),
        "failed": failed,
        "bytes": bytes,
        "clients": o.clients,
        "seconds": elapsed.as_secs_f64(),
        "instances_per_s": instances.len() as f64 / elapsed.as_secs_f64(),
        "mb_per_s": bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        "latency": percentiles(latencies),
    }))
}

/// Study Instance UIDs from the archive itself (a STUDY level C-FIND), at most `wanted`.
async fn dimse_studies(o: &Options, wanted: usize) -> anyhow::Result<Vec<String>> {
    use dicom_core::{Tag, VR};
    let mut c = vna_benches::find::FindClient::connect(&o.dicom, "LOADGEN", &o.aec).await?;
    let (rows, _) = c.find("STUDY", &[(Tag(0x0020, 0x000D), VR::UI, String::new())]).await?;
    c.release().await;
    let mut uids: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r.element(Tag(0x0020, 0x000D)).ok()?.to_str().ok().map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        })
        .collect();
    uids.sort();
    uids.truncate(wanted);
    if uids.is_empty() {
        bail!("the archive holds no study; store some first");
    }
    Ok(uids)
}

/// C-MOVE (to the loadgen's own C-STORE SCP) or C-GET of whole studies over `clients`
/// associations, one study at a time each.
async fn retrieve(o: &Options, get: bool) -> anyhow::Result<serde_json::Value> {
    use std::sync::atomic::Ordering;
    use vna_benches::dimse_load::{spawn_store_scp, Received, RetrieveClient};
    let studies = Arc::new(dimse_studies(o, o.studies).await?);
    let received = Arc::new(Received::default());
    if !get {
        let listener = tokio::net::TcpListener::bind(&o.move_listen)
            .await
            .with_context(|| format!("listening on {} for C-MOVE", o.move_listen))?;
        spawn_store_scp(listener, o.move_ae.clone(), received.clone());
    }
    let name = if get { "C-GET" } else { "C-MOVE" };
    let bar = progress(studies.len() as u64, name);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..o.clients.min(studies.len()) {
        let (studies, bar, addr, aec, dest, clients) =
            (studies.clone(), bar.clone(), o.dicom.clone(), o.aec.clone(), o.move_ae.clone(), o.clients);
        tasks.push(tokio::spawn(async move {
            let mut c = RetrieveClient::connect(&addr, "LOADGEN", &aec, get).await?;
            let mut out = Vec::new();
            for study in studies.iter().skip(client).step_by(clients) {
                out.push(c.retrieve(study, &dest).await?);
                bar.inc(1);
            }
            c.release().await;
            anyhow::Ok(out)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await??);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let completed: u64 = results.iter().map(|r| r.completed).sum();
    let failed: u64 = results.iter().map(|r| r.failed).sum();
    let (instances, bytes) = if get {
        (results.iter().map(|r| r.instances).sum(), results.iter().map(|r| r.bytes).sum())
    } else {
        (received.instances.load(Ordering::Relaxed), received.bytes.load(Ordering::Relaxed))
    };
    Ok(json!({
        "workload": if get { "get" } else { "move" },
        "studies": studies.len(),
        "instances": instances,
        "completed": completed,
        "failed": failed,
        "bytes": bytes,
        "clients": o.clients,
        "seconds": elapsed.as_secs_f64(),
        "studies_per_s": studies.len() as f64 / elapsed.as_secs_f64(),
        "instances_per_s": instances as f64 / elapsed.as_secs_f64(),
        "mb_per_s": bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        "study_latency": percentiles(results.iter().map(|r| r.elapsed).collect()),
    }))
}

async fn find(o: &Options) -> anyhow::Result<serde_json::Value> {
    use dicom_core::{Tag, VR};
    use vna_benches::find::FindClient;
    // Query values from the archive itself: every study with its PatientID, name and date.
    let mut c = FindClient::connect(&o.dicom, "LOADGEN", &o.aec).await?;
    let keys = vec![
        (Tag(0x0020, 0x000D), VR::UI, String::new()),
        (Tag(0x0010, 0x0020), VR::LO, String::new()),
        (Tag(0x0010, 0x0010), VR::PN, String::new()),
        (Tag(0x0008, 0x0020), VR::DA, String::new()),
    ];
    let (studies, _) = c.find("STUDY", &keys).await?;
    c.release().await;
    let text = |obj: &dicom_object::InMemDicomObject, tag: Tag| -> String {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
            .unwrap_or_default()
    };
    let rows: Vec<[String; 4]> = studies
        .iter()
        .take(1000)
        .map(|s| {
            [Tag(0x0020, 0x000D), Tag(0x0010, 0x0020), Tag(0x0010, 0x0010), Tag(0x0008, 0x0020)].map(|t| text(s, t))
        })
        .collect();
    if rows.is_empty() {
        bail!("the archive holds no study; store some first");
    }
    let rows = Arc::new(rows);
    let kinds = ["study_uid", "patient_id", "name_prefix", "date_range_modality", "series_of_study"];
    let bar = progress(o.requests as u64, "C-FIND");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..o.clients {
        let (rows, bar, addr, aec) = (rows.clone(), bar.clone(), o.dicom.clone(), o.aec.clone());
        let mine: Vec<usize> = (client..o.requests).step_by(o.clients).collect();
        tasks.push(tokio::spawn(async move {
            let mut c = FindClient::connect(&addr, "LOADGEN", &aec).await?;
            let mut out = Vec::new();
            for i in mine {
                let k = i % kinds.len();
                let row = &rows[(i / kinds.len()) % rows.len()];
                let ret = |tag, vr| (tag, vr, String::new());
                let (level, keys) = match kinds[k] {
                    "study_uid" => {
                        ("STUDY", vec![(Tag(0x0020, 0x000D), VR::UI, row[0].clone()), ret(Tag(0x0010, 0x0010), VR::PN)])
                    }
                    "patient_id" => {
                        ("STUDY", vec![(Tag(0x0010, 0x0020), VR::LO, row[1].clone()), ret(Tag(0x0020, 0x000D), VR::UI)])
                    }
                    "name_prefix" => {
                        let family: String = row[2].split('^').next().unwrap_or("").chars().take(3).collect();
                        (
                            "STUDY",
                            vec![(Tag(0x0010, 0x0010), VR::PN, format!("{family}*")), ret(Tag(0x0020, 0x000D), VR::UI)],
                        )
                    }
                    "date_range_modality" => {
                        let year = &row[3][..4.min(row[3].len())];
                        (
                            "STUDY",
                            vec![
                                (Tag(0x0008, 0x0020), VR::DA, format!("{year}0101-{year}0630")),
                                (Tag(0x0008, 0x0061), VR::CS, "CT".into()),
                                ret(Tag(0x0020, 0x000D), VR::UI),
                            ],
                        )
                    }
                    _ => (
                        "SERIES",
                        vec![(Tag(0x0020, 0x000D), VR::UI, row[0].clone()), ret(Tag(0x0020, 0x000E), VR::UI)],
                    ),
                };
                let (_, elapsed) = c.find(level, &keys).await?;
                bar.inc(1);
                out.push((k, elapsed));
            }
            c.release().await;
            anyhow::Ok(out)
        }));
    }
    let mut timed = Vec::new();
    for t in tasks {
        timed.extend(t.await??);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(query_report("find", o, elapsed, &kinds, timed))
}

fn table(v: &serde_json::Value) {
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    match v["workload"].as_str() {
        Some("stow") => println!(
            "STOW-RS  {} instances ({:.0} MB), {} clients x {} per request: {:.1} inst/s, {:.1} MB/s, request p50 {:.1} ms p99 {:.1} ms",
            v["instances"], f("bytes") / 1e6, v["clients"], v["batch"], f("instances_per_s"), f("mb_per_s"),
            v["request_latency"]["p50_ms"].as_f64().unwrap_or(0.0), v["request_latency"]["p99_ms"].as_f64().unwrap_or(0.0)
        ),
        Some("qido") | Some("find") => {
            println!(
                "{}  {} requests, {} clients: {:.0} req/s, p50 {:.2} ms p95 {:.2} ms p99 {:.2} ms max {:.2} ms",
                if v["workload"] == "find" { "C-FIND " } else { "QIDO-RS" }, v["requests"], v["clients"], f("requests_per_s"),
                v["latency"]["p50_ms"].as_f64().unwrap_or(0.0), v["latency"]["p95_ms"].as_f64().unwrap_or(0.0),
                v["latency"]["p99_ms"].as_f64().unwrap_or(0.0), v["latency"]["max_ms"].as_f64().unwrap_or(0.0)
            );
            if let Some(m) = v["by_query"].as_object() {
                for (k, p) in m {
                    println!("  {k:<22} p50 {:.2} ms  p99 {:.2} ms", p["p50_ms"].as_f64().unwrap_or(0.0), p["p99_ms"].as_f64().unwrap_or(0.0));
                }
            }
        }
        Some("store") => println!(
            "C-STORE  {} instances ({:.0} MB, {} failed), {} associations: {:.1} inst/s, {:.1} MB/s, p50 {:.1} ms p95 {:.1} ms p99 {:.1} ms max {:.1} ms",
            v["instances"], f("bytes") / 1e6, v["failed"], v["clients"], f("instances_per_s"), f("mb_per_s"),
            v["latency"]["p50_ms"].as_f64().unwrap_or(0.0), v["latency"]["p95_ms"].as_f64().unwrap_or(0.0),
            v["latency"]["p99_ms"].as_f64().unwrap_or(0.0), v["latency"]["max_ms"].as_f64().unwrap_or(0.0)
        ),
        Some("move") | Some("get") => println!(
            "{}  {} studies, {} instances ({:.0} MB, {} failed), {} associations: {:.2} studies/s, {:.1} inst/s, {:.1} MB/s, study p50 {:.0} ms p95 {:.0} ms p99 {:.0} ms max {:.0} ms",
            if v["workload"] == "get" { "C-GET " } else { "C-MOVE" }, v["studies"], v["instances"], f("bytes") / 1e6, v["failed"], v["clients"],
            f("studies_per_s"), f("instances_per_s"), f("mb_per_s"),
            v["study_latency"]["p50_ms"].as_f64().unwrap_or(0.0), v["study_latency"]["p95_ms"].as_f64().unwrap_or(0.0),
            v["study_latency"]["p99_ms"].as_f64().unwrap_or(0.0), v["study_latency"]["max_ms"].as_f64().unwrap_or(0.0)
        ),
        Some("wado") => println!(
            "WADO-RS  {} studies ({:.0} MB), {} clients: {:.1} MB/s, study p50 {:.0} ms",
            v["studies"], f("bytes") / 1e6, v["clients"], f("mb_per_s"), v["study_latency"]["p50_ms"].as_f64().unwrap_or(0.0)
        ),
        Some("limits") => {
            let g = |k: &str, f: &str| v[k][f].as_f64().unwrap_or(0.0);
            println!("machine limits ({} cores):", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            println!("  fsynced 512 KiB files, 1 writer   {:8.0} files/s  {:7.0} MB/s", g("fsynced_files_512k", "files_per_s"), g("fsynced_files_512k", "mb_per_s"));
            println!("  fsynced 4 KiB files, 1 writer     {:8.0} files/s", g("fsynced_files_4k", "files_per_s"));
            println!("  sequential write + fsync          {:8.0} MB/s", g("sequential_write_fsync", "mb_per_s"));
            println!("  sequential read (cache dropped)   {:8.0} MB/s", g("sequential_read", "mb_per_s"));
            println!("  100-byte appends + fdatasync      {:8.0} syncs/s", g("synced_appends", "syncs_per_s"));
            println!("  loopback TCP                      {:8.0} MB/s", g("loopback_tcp", "mb_per_s"));
        }
        _ => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (cmd, o) = parse()?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(600)).tcp_nodelay(true).build()?;
    let result = match cmd.as_str() {
        "stow" => stow(&o, &http).await?,
        "qido" => qido(&o, &http).await?,
        "wado" => wado(&o, &http).await?,
        "find" => find(&o).await?,
        "store" => store(&o).await?,
        "move" => retrieve(&o, false).await?,
        "get" => retrieve(&o, true).await?,
        "limits" => {
            let dir = std::path::PathBuf::from(&o.dir);
            let quick = o.quick;
            let mut v = tokio::task::spawn_blocking(move || vna_benches::limits::measure(&dir, quick)).await??;
            v["workload"] = json!("limits");
            v
        }
        other => bail!("unknown workload {other}: stow, qido, wado, find, store, move, get or limits"),
    };
    table(&result);
    if let Some(path) = &o.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    Ok(())
}
