//! DICOMweb against the running binary: STOW-RS of pydicom's corpus byte for byte,
//! WADO-RS and WADO-URI byte-exact, metadata/QIDO/frames checked by a real client
//! (dicomweb-client) against pydicom, hostile requests, a spooled large upload, the admin
//! API, CORS and metrics. The shared retrieve selection cases (`common::selection`, also run
//! over C-MOVE and C-GET by the DIMSE retrieve tests) deliver the same instances over WADO-RS
//! and WADO-URI.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

mod common;

use common::{pydicom_files, Server, TestFile};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

const BOUNDARY: &str = "vna-test-boundary-7d1a";
const DICOM_PARTS: &str = "multipart/related; type=\"application/dicom\"; boundary=vna-test-boundary-7d1a";

fn multipart(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn client() -> Client {
    Client::builder().timeout(std::time::Duration::from_secs(120)).build().unwrap()
}

fn stow(c: &Client, url: &str, parts: &[Vec<u8>]) -> (StatusCode, Value) {
    let rsp = c.post(url).header("Content-Type", DICOM_PARTS).body(multipart(parts)).send().unwrap();
    let status = rsp.status();
    let text = rsp.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("STOW answer is JSON: {text}")))
}

/// Splits a multipart body into part bodies, using the boundary of its Content-Type.
fn parts_of(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap_or_else(|| panic!("no boundary in {content_type}"))
        .trim_matches('"')
        .to_string();
    let delimiter = format!("\r\n--{boundary}");
    let mut text = b"\r\n".to_vec();
    text.extend_from_slice(body);
    let mut out = Vec::new();
    let mut rest = &text[..];
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let start = find(rest, delimiter.as_bytes()).expect("first delimiter");
    rest = &rest[start + delimiter.len()..];
    while !rest.starts_with(b"--") {
        let head_end = find(rest, b"\r\n\r\n").expect("part headers");
        let headers = String::from_utf8_lossy(&rest[..head_end]).to_string();
        rest = &rest[head_end + 4..];
        let end = find(rest, delimiter.as_bytes()).expect("next delimiter");
        out.push((headers, rest[..end].to_vec()));
        rest = &rest[end + delimiter.len()..];
    }
    out
}

fn get(c: &Client, url: &str, accept: &str) -> (StatusCode, String, Vec<u8>) {
    let rsp = c.get(url).header("Accept", accept).send().unwrap();
    let status = rsp.status();
    let ct = rsp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, ct, rsp.bytes().unwrap().to_vec())
}

/// The acceptable files of pydicom's corpus, one per SOP Instance UID.
fn corpus() -> Vec<TestFile> {
    let mut seen = HashSet::new();
    pydicom_files()
        .into_iter()
        .filter(|f| f.acceptable && f.sop_instance.as_ref().is_some_and(|s| seen.insert(s.clone())))
        .collect()
}

fn uids(path: &Path) -> (String, String, String) {
    let bytes = std::fs::read(path).unwrap();
    let p = archive_core::parse::parse_part10(&bytes).unwrap();
    (p.study.to_string(), p.series.to_string(), p.sop_instance.to_string())
}

#[test]
fn stow_wado_qido_round_trip_of_pydicoms_corpus() {
    let dir = tempfile::tempdir().unwrap();
    // dicomweb-client sends a Host header without the port, so links come from public_url.
    let port = common::free_port();
    let server = Server::start_with(
        dir.path(),
        &format!("listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\""),
        "",
    );
    let base = format!("{}/dicom-web", server.http());
    let c = client();
    let files = corpus();
    assert!(files.len() > 80, "corpus has {} files", files.len());

    // STOW-RS, 10 objects per request, exactly the files' bytes.
    let mut syntaxes = BTreeMap::new();
    for batch in files.chunks(10) {
        let parts: Vec<Vec<u8>> = batch.iter().map(|f| std::fs::read(&f.path).unwrap()).collect();
        let (status, body) = stow(&c, &format!("{base}/studies"), &parts);
        assert_eq!(status, StatusCode::OK, "{body}");
        let refs = body["00081199"]["Value"].as_array().unwrap();
        assert_eq!(refs.len(), batch.len());
        assert!(body.get("00081198").is_none());
        for r in refs {
            let url = r["00081190"]["Value"][0].as_str().unwrap();
            assert!(url.starts_with(&base), "RetrieveURL {url}");
        }
        for f in batch {
            *syntaxes.entry(f.transfer_syntax.clone().unwrap()).or_insert(0) += 1;
        }
    }
    assert!(syntaxes.len() >= 8, "transfer syntaxes covered: {syntaxes:?}");

    // WADO-RS instance retrieval returns the very bytes stored; WADO-URI too.
    for (n, f) in files.iter().enumerate() {
        let original = std::fs::read(&f.path).unwrap();
        let (st, se, sop) = uids(&f.path);
        let url = format!("{base}/studies/{st}/series/{se}/instances/{sop}");
        let (status, ct, body) = get(&c, &url, "multipart/related; type=\"application/dicom\"; transfer-syntax=*");
        assert_eq!(status, StatusCode::OK, "{}", f.path.display());
        let parts = parts_of(&ct, &body);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].0.contains(f.transfer_syntax.as_deref().unwrap()), "part headers {}", parts[0].0);
        assert!(parts[0].1 == original, "{} differs after WADO-RS", f.path.display());
        if n % 10 == 0 {
            let uri = format!(
                "{}/wado?requestType=WADO&studyUID={st}&seriesUID={se}&objectUID={sop}&contentType=application/dicom",
                server.http()
            );
            let (status, ct, body) = get(&c, &uri, "*/*");
            assert_eq!(status, StatusCode::OK);
            assert_eq!(ct, "application/dicom");
            assert!(body == original, "{} differs after WADO-URI", f.path.display());
        }
    }

    // A study retrieval has one part per instance; its metadata one object per instance.
    let mut per_study: BTreeMap<String, usize> = BTreeMap::new();
    for f in &files {
        *per_study.entry(uids(&f.path).0).or_default() += 1;
    }
    let (study, count) = per_study.iter().max_by_key(|(_, n)| **n).unwrap();
    let (status, ct, body) =
        get(&c, &format!("{base}/studies/{study}"), "multipart/related; type=\"application/dicom\"");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(parts_of(&ct, &body).len(), *count);
    let (status, ct, body) = get(&c, &format!("{base}/studies/{study}/metadata"), "application/dicom+json");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct, "application/dicom+json");
    let meta: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(meta.len(), *count);

    // QIDO-RS: every study is found, with counts and a RetrieveURL.
    let (status, _, body) = get(&c, &format!("{base}/studies?limit=1000"), "application/dicom+json");
    assert_eq!(status, StatusCode::OK);
    let studies: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(studies.len(), per_study.len());
    let row = studies.iter().find(|s| s["0020000D"]["Value"][0] == study.as_str()).unwrap();
    assert_eq!(row["00201208"]["Value"][0].as_i64().unwrap() as usize, *count);
    assert_eq!(row["00081190"]["Value"][0], format!("{base}/studies/{study}"));
    assert_eq!(row["00080056"]["Value"][0], "ONLINE");
    let (_, _, body) = get(&c, &format!("{base}/instances?limit=2&offset=1"), "application/dicom+json");
    assert_eq!(serde_json::from_slice::<Vec<Value>>(&body).unwrap().len(), 2);

    // Conversion between uncompressed syntaxes; none for compressed ones.
    let explicit = files.iter().find(|f| f.transfer_syntax.as_deref() == Some("1.2.840.10008.1.2.1")).unwrap();
    let (st, se, sop) = uids(&explicit.path);
    let url = format!("{base}/studies/{st}/series/{se}/instances/{sop}");
    let (status, ct, body) = get(&c, &url, "application/dicom; transfer-syntax=1.2.840.10008.1.2");
    assert_eq!(status, StatusCode::OK);
    assert!(ct.contains("1.2.840.10008.1.2"), "{ct}");
    let converted = archive_core::parse::parse_part10(&body).unwrap();
    assert_eq!(converted.transfer_syntax.as_str(), "1.2.840.10008.1.2");
    assert_eq!(converted.sop_instance.as_str(), sop);
    // Compressed objects are decoded on request where a decoder exists (JPEG), else 406.
    let jpeg = files.iter().find(|f| f.transfer_syntax.as_deref() == Some("1.2.840.10008.1.2.4.50")).unwrap();
    let (st, se, sop) = uids(&jpeg.path);
    let (status, ct, body) = get(
        &c,
        &format!("{base}/studies/{st}/series/{se}/instances/{sop}"),
        "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1",
    );
    assert_eq!(status, StatusCode::OK);
    let parts = parts_of(&ct, &body);
    assert!(parts[0].0.contains("transfer-syntax=1.2.840.10008.1.2.1"), "{}", parts[0].0);
    assert_eq!(archive_core::parse::parse_part10(&parts[0].1).unwrap().transfer_syntax.as_str(), "1.2.840.10008.1.2.1");
    // pydicom's JPEG-LS file shares its UIDs with another file: store it under a new SOP UID.
    let jpeg_ls = pydicom_files()
        .into_iter()
        .find(|f| f.acceptable && f.transfer_syntax.as_deref() == Some("1.2.840.10008.1.2.4.80"))
        .unwrap();
    let (st, se, old_sop) = uids(&jpeg_ls.path);
    let (bytes, sop) = with_new_sop_uid(&std::fs::read(&jpeg_ls.path).unwrap(), &old_sop);
    let (status, body) = stow(&c, &format!("{base}/studies"), &[bytes]);
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = get(
        &c,
        &format!("{base}/studies/{st}/series/{se}/instances/{sop}"),
        "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1",
    );
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["message"].as_str().unwrap().contains("transfer syntax"));

    // The real client: QIDO at three levels, metadata against pydicom's JSON, retrieval, frames, STOW.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scripts/dicomweb_check.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&base)
        .args(files.iter().map(|f| f.path.clone()))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dicomweb-client check failed:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&report).unwrap();
    assert!(report["elements"].as_u64().unwrap() > 3000, "{report}");
    assert_eq!(server.stop().code(), Some(0));
}

#[test]
fn hostile_requests_are_client_errors_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "");
    let base = format!("{}/dicom-web", server.http());
    let c = client();
    let file = std::fs::read(&corpus()[0].path).unwrap();
    let stats = |c: &Client| -> Value { c.get(format!("{}/api/stats", server.http())).send().unwrap().json().unwrap() };

    let mut truncated = multipart(&[file.clone(), file.clone()]);
    truncated.truncate(truncated.len() - 40);
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("broken multipart (no closing boundary)", DICOM_PARTS, truncated, 400),
        ("garbage body", DICOM_PARTS, b"\x00\x01garbage\xff".to_vec(), 400),
        ("wrong content type", "application/json", b"{}".to_vec(), 415),
        ("dicom+json parts", "multipart/related; type=\"application/dicom+json\"; boundary=x", b"x".to_vec(), 415),
        ("no boundary", "multipart/related; type=\"application/dicom\"", multipart(std::slice::from_ref(&file)), 400),
        ("empty multipart", DICOM_PARTS, format!("--{BOUNDARY}--\r\n").into_bytes(), 400),
        (
            "too many parts",
            DICOM_PARTS,
            (format!("--{BOUNDARY}\r\n\r\n\r\n").repeat(10_001) + &format!("--{BOUNDARY}--\r\n")).into_bytes(),
            413,
        ),
    ];
    for (what, ct, body, expected) in cases {
        let rsp = c.post(format!("{base}/studies")).header("Content-Type", ct).body(body).send().unwrap();
        assert_eq!(rsp.status().as_u16(), expected, "{what}");
        let err: Value = rsp.json().unwrap_or_else(|_| panic!("{what}: JSON error body"));
        assert!(!err["message"].as_str().unwrap().is_empty(), "{what}");
    }
    // Parts that are not DICOM fail one by one (409: nothing stored), with their reasons.
    let (status, body) = stow(&c, &format!("{base}/studies"), &[b"not dicom at all".to_vec(), file[..300].to_vec()]);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let failed = body["00081198"]["Value"].as_array().unwrap();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|f| f["00081197"]["Value"][0] == 0xC000));
    // A study UID mismatch fails (A900) and stores nothing.
    let (status, body) = stow(&c, &format!("{base}/studies/1.2.3.4.5.6.7"), std::slice::from_ref(&file));
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA900);
    assert_eq!(stats(&c)["instances"], 0, "nothing stored by bad requests");

    // Path tricks and bad parameters never reach storage.
    for (path, expected) in [
        ("/dicom-web/studies/..%2F..%2Fetc%2Fpasswd", 400),
        ("/dicom-web/studies/%2e%2e/metadata", 400),
        ("/dicom-web/studies/1.2.abc/series", 400),
        ("/dicom-web/studies/1.2.3/series/..%2f1/instances/1.2", 400),
        ("/dicom-web/studies/1.2.3/series/4.5/instances/6.7/frames/0", 400),
        ("/dicom-web/studies/1.2.3/series/4.5/instances/6.7/bulkdata/..%2F..", 400),
        ("/dicom-web/studies/1.2.3/metadata", 404),
        ("/dicom-web/studies/1.2.3", 404),
        ("/dicom-web/studies?NoSuchAttribute=1", 400),
        ("/dicom-web/studies?StudyDate=yesterday", 400),
        ("/dicom-web/studies?limit=-1", 400),
        ("/dicom-web/nothing-here", 404),
        ("/wado?requestType=WADO&studyUID=1.2&seriesUID=1.3&objectUID=../x&contentType=application/dicom", 400),
        ("/wado?requestType=WADO&studyUID=1.2&seriesUID=1.3&objectUID=1.4", 406),
        ("/wado?studyUID=1.2", 400),
        ("/api/studies/..%2F..", 400),
        ("/dicom-web/studies/1.2.3/series/4.5/instances/%00", 400),
    ] {
        // Raw requests: an HTTP client library would normalise the dot segments away.
        let (status, body) = raw_get(server.http_port, path);
        assert_eq!(status, expected, "{path}: {body}");
        let err: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: JSON error body: {body}"));
        assert!(err["message"].is_string(), "{path}");
    }
    for path in ["/dicom-web/studies/../../etc/passwd", "/dicom-web/studies/1.2/series/../../../../etc/passwd"] {
        let (status, _) = raw_get(server.http_port, path);
        assert!((400..500).contains(&status), "{path}: {status}");
    }
    let rsp = c.get(format!("{base}/studies")).header("Accept", "application/dicom+xml").send().unwrap();
    assert_eq!(rsp.status(), StatusCode::NOT_ACCEPTABLE);
    let rsp = c.delete(format!("{base}/studies")).send().unwrap();
    assert_eq!(rsp.status(), StatusCode::METHOD_NOT_ALLOWED);

    // After all that, the server answers normally.
    let (status, body) = stow(&c, &format!("{base}/studies"), &[file]);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(stats(&c)["instances"], 1);
    assert_eq!(c.get(format!("{}/healthz", server.http())).send().unwrap().status(), StatusCode::OK);
    assert!(!server.log().contains("panicked"));
    assert_eq!(server.stop().code(), Some(0));
}

/// The object with its SOP Instance UID changed in place (same length: the last digit
/// differs), wherever it occurs; returns the bytes and the new UID.
fn with_new_sop_uid(bytes: &[u8], uid: &str) -> (Vec<u8>, String) {
    let last = uid.chars().last().unwrap();
    let new = format!("{}{}", &uid[..uid.len() - 1], if last == '7' { '8' } else { '7' });
    let mut out = bytes.to_vec();
    let (from, to) = (uid.as_bytes(), new.as_bytes());
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    (out, new)
}

/// Sends a GET with the path exactly as given; returns the status and body.
fn raw_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    // Chunked bodies: keep the JSON object between the first '{' and the last '}'.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => body[a..=b].to_string(),
        _ => body,
    };
    (status, body)
}

/// A large object (multi-frame, 300 MiB) goes through STOW-RS without being held in the
/// server's heap, and comes back identical.
#[test]
fn a_large_upload_is_spooled_not_held_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "");
    let base = format!("{}/dicom-web", server.http());

    // A valid Part-10 header from a real file, with a huge native pixel data element appended.
    let frames = 600u32; // 600 frames of 512x512x16 bit = 300 MiB
    let header = large_object_header(frames);
    let pixel_len = 512u64 * 512 * 2 * frames as u64;
    let body_path = dir.path().join("upload.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&body_path).unwrap());
        f.write_all(format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes()).unwrap();
        f.write_all(&header).unwrap();
        let chunk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut left = pixel_len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        f.write_all(format!("\r\n--{BOUNDARY}--\r\n").as_bytes()).unwrap();
    }

    // Sample the server's anonymous memory while it receives and stores.
    let pid = server.child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let anon = status
                    .lines()
                    .find(|l| l.starts_with("RssAnon:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                peak = peak.max(anon * 1024);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            peak
        })
    };
    let file = std::fs::File::open(&body_path).unwrap();
    let rsp = client()
        .post(format!("{base}/studies"))
        .header("Content-Type", DICOM_PARTS)
        .body(reqwest::blocking::Body::sized(file, std::fs::metadata(&body_path).unwrap().len()))
        .send()
        .unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let status = rsp.status();
    let answer: Value = rsp.json().unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(peak < 150 << 20, "server heap peaked at {} MiB for a {} MiB upload", peak >> 20, pixel_len >> 20);

    // Frames and the whole object come back; the object streams from the tier.
    let url = answer["00081199"]["Value"][0]["00081190"]["Value"][0].as_str().unwrap().to_string();
    let (status, ct, body) =
        get(&client(), &format!("{url}/frames/1,600"), "multipart/related; type=\"application/octet-stream\"");
    assert_eq!(status, StatusCode::OK);
    let parts = parts_of(&ct, &body);
    assert_eq!(parts.len(), 2);
    let frame_len = 512 * 512 * 2;
    let expected = |frame: u64| -> Vec<u8> {
        let start = frame * frame_len as u64;
        (start..start + frame_len as u64).map(|i| ((i % (1 << 20)) % 251) as u8).collect()
    };
    assert!(parts[0].1 == expected(0));
    assert!(parts[1].1 == expected(599));
    let (status, _, body) = get(&client(), &url, "application/dicom");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len() as u64, header.len() as u64 + pixel_len);
    assert!(body[..header.len()] == header[..]);
    assert_eq!(server.stop().code(), Some(0));
}

/// A Part-10 header (explicit VR little endian) of a multi-frame MR image whose Pixel Data
/// element announces `frames` frames of 512x512x16 bit; the pixel bytes follow.
fn large_object_header(frames: u32) -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
    use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
    let mut obj = InMemDicomObject::new_empty();
    let uid = |s: &str| PrimitiveValue::from(s);
    obj.put(DataElement::new(Tag(0x0008, 0x0016), VR::UI, uid("1.2.840.10008.5.1.4.1.1.4.1")));
    obj.put(DataElement::new(Tag(0x0008, 0x0018), VR::UI, uid("2.25.4242424242.1")));
    obj.put(DataElement::new(Tag(0x0008, 0x0060), VR::CS, uid("MR")));
    obj.put(DataElement::new(Tag(0x0010, 0x0010), VR::PN, uid("LARGE^UPLOAD")));
    obj.put(DataElement::new(Tag(0x0010, 0x0020), VR::LO, uid("BIG1")));
    obj.put(DataElement::new(Tag(0x0020, 0x000D), VR::UI, uid("2.25.4242424242.2")));
    obj.put(DataElement::new(Tag(0x0020, 0x000E), VR::UI, uid("2.25.4242424242.3")));
    obj.put(DataElement::new(Tag(0x0028, 0x0002), VR::US, PrimitiveValue::from(1u16)));
    obj.put(DataElement::new(Tag(0x0028, 0x0004), VR::CS, uid("MONOCHROME2")));
    obj.put(DataElement::new(Tag(0x0028, 0x0008), VR::IS, uid(&frames.to_string())));
    obj.put(DataElement::new(Tag(0x0028, 0x0010), VR::US, PrimitiveValue::from(512u16)));
    obj.put(DataElement::new(Tag(0x0028, 0x0011), VR::US, PrimitiveValue::from(512u16)));
    obj.put(DataElement::new(Tag(0x0028, 0x0100), VR::US, PrimitiveValue::from(16u16)));
    obj.put(DataElement::new(Tag(0x0028, 0x0101), VR::US, PrimitiveValue::from(16u16)));
    obj.put(DataElement::new(Tag(0x0028, 0x0102), VR::US, PrimitiveValue::from(15u16)));
    obj.put(DataElement::new(Tag(0x0028, 0x0103), VR::US, PrimitiveValue::from(0u16)));
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.4.1")
        .media_storage_sop_instance_uid("2.25.4242424242.1")
        .transfer_syntax("1.2.840.10008.1.2.1")
        .build()
        .unwrap();
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).unwrap();
    let ts = {
        use dicom_encoding::TransferSyntaxIndex;
        dicom_transfer_syntax_registry::TransferSyntaxRegistry.get("1.2.840.10008.1.2.1").unwrap()
    };
    obj.write_dataset_with_ts(&mut out, ts).unwrap();
    // (7FE0,0010) OW, 4-byte length.
    out.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
    out.extend_from_slice(&((512u32 * 512 * 2 * frames).to_le_bytes()));
    out
}

#[test]
fn admin_api_cors_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        "cors_allowed_origins = [\"https://viewer.example.org\"]\npublic_url = \"https://pacs.example.org\"",
        "",
    );
    let c = client();
    let files: Vec<TestFile> = corpus().into_iter().take(12).collect();
    let parts: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(&f.path).unwrap()).collect();
    let (status, body) = stow(&c, &format!("{}/dicom-web/studies", server.http()), &parts);
    assert_eq!(status, StatusCode::OK);
    // Links use the configured public URL.
    let url = body["00081199"]["Value"][0]["00081190"]["Value"][0].as_str().unwrap();
    assert!(url.starts_with("https://pacs.example.org/dicom-web/studies/"), "{url}");

    let stats: Value = c.get(format!("{}/api/stats", server.http())).send().unwrap().json().unwrap();
    assert_eq!(stats["instances"], 12);
    assert_eq!(stats["tiers"]["hot"]["objects"], 12);
    let bytes: u64 = parts.iter().map(|p| p.len() as u64).sum();
    assert_eq!(stats["tiers"]["hot"]["bytes"], bytes);
    assert_eq!(stats["ingest"]["instances_last_minute"], 12);

    let (st, _, _) = uids(&files[0].path);
    let summary: Value = c.get(format!("{}/api/studies/{st}", server.http())).send().unwrap().json().unwrap();
    assert_eq!(summary["study_instance_uid"], st.as_str());
    let series = summary["series"].as_array().unwrap();
    assert!(!series.is_empty());
    assert_eq!(series[0]["availability"], "ONLINE");
    assert!(series[0]["tiers"]["hot"]["objects"].as_u64().unwrap() >= 1);
    assert_eq!(c.get(format!("{}/api/studies/1.2.3.4", server.http())).send().unwrap().status(), StatusCode::NOT_FOUND);

    let openapi: Value = c.get(format!("{}/api/openapi.json", server.http())).send().unwrap().json().unwrap();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    assert!(openapi["paths"]["/api/stats"].is_object());

    // CORS: the configured origin is allowed, others are not.
    let preflight = c
        .request(reqwest::Method::OPTIONS, format!("{}/dicom-web/studies", server.http()))
        .header("Origin", "https://viewer.example.org")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .unwrap();
    assert_eq!(
        preflight.headers().get("access-control-allow-origin").unwrap().to_str().unwrap(),
        "https://viewer.example.org"
    );
    let other =
        c.get(format!("{}/dicom-web/studies", server.http())).header("Origin", "https://evil.example").send().unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let metrics = c.get(format!("{}/metrics", server.http())).send().unwrap().text().unwrap();
    for needle in [
        "vna_http_requests_total{method=\"POST\",route=\"/dicom-web/studies\",status=\"200\"} 1",
        "vna_http_request_seconds_bucket",
        "vna_ingest_total{outcome=\"stored\"} 12",
        "vna_tier_objects{tier=\"hot\"} 12",
        "vna_catalog_commit_queue 0",
        "vna_stow_requests_in_flight 0",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle}:\n{metrics}");
    }
    assert_eq!(server.stop().code(), Some(0));
}

/// The shared selection cases over WADO-RS (and, for IMAGE level cases, WADO-URI): each
/// delivers exactly the instances C-MOVE and C-GET deliver for the same case.
#[test]
fn selection_cases_over_wado_rs_and_wado_uri() {
    use common::selection::{cases, Doors};
    let doors = Doors::start();
    for case in cases(&doors.data) {
        assert_eq!(doors.wado_rs(&case.select), case.expected, "WADO-RS: {}", case.name);
        if let Some(got) = doors.wado_uri(&case.select) {
            assert_eq!(got, case.expected, "WADO-URI: {}", case.name);
        }
    }
}
