//! The S3 tier against a real S3-compatible server over HTTP: `moto_server` (installed by
//! `.ci/run`), started by each test on a free port. Conformance, bundles, multipart uploads,
//! rebuilding the local index from the bucket, archive classes with restore, a proxy that
//! injects 503s, connection resets and stalls in front of the server, batched deletes and
//! read-backs (requests counted with moto's recorder), and the orphaned-bundle sweep
//! (orphans written behind the tier's back, or left by a process aborted at a failpoint).
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::checksum::Checksum;
use archive_core::tier::{conformance, ObjectKey, PutOpts, RecallStatus, Tier, TierError, TierExt, TierName};
use bytes::Bytes;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tier_plugins::s3::{BundleEntry, BundleIndex, S3Options, S3Tier, SweepReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("vna-moto-recording-{}", self.port)));
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_moto() -> Moto {
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        // Lets a test record the requests the tier sends (`/moto-api/recorder/`), in a file
        // of this server's own (by default all servers started in one directory share one).
        .env("MOTO_ENABLE_RECORDING", "True")
        .env("MOTO_RECORDER_FILEPATH", std::env::temp_dir().join(format!("vna-moto-recording-{port}")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server is installed by .ci/run (pip install 'moto[server]')");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { child, port }
}

fn options(endpoint: String, storage_class: &str) -> S3Options {
    let toml = format!(
        r#"
        bucket = "vna-test"
        prefix = "archive/"
        endpoint = "{endpoint}"
        access_key_id = "test"
        secret_access_key = "test"
        storage_class = "{storage_class}"
        create_bucket = true
        multipart_threshold_mb = 5
        part_size_mb = 5
        max_attempts = 10
        timeout_secs = 3
        "#
    );
    toml::from_str(&toml).unwrap()
}

async fn open(endpoint: String, storage_class: &str, dir: &std::path::Path) -> S3Tier {
    open_with(options(endpoint, storage_class), dir).await
}

async fn open_with(o: S3Options, dir: &std::path::Path) -> S3Tier {
    S3Tier::open(TierName::new("cold").unwrap(), o, dir.to_path_buf()).await.unwrap()
}

async fn bucket_keys(port: u16) -> Vec<String> {
    let xml =
        reqwest::get(format!("http://127.0.0.1:{port}/vna-test?list-type=2")).await.unwrap().text().await.unwrap();
    xml.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_tier_passes_the_conformance_suite() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let tier = open(format!("http://127.0.0.1:{}", moto.port), "STANDARD", dir.path()).await;
    conformance::run_all(&tier).await;
    // Damage behind the tier's back: a full get and verify_many both catch it.
    let port = moto.port;
    conformance::check_corruption_detected(&tier, |key| {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(damage_in_bucket(port, key)))
    })
    .await;
    // Everything the suite deleted is gone from the bucket too: no orphaned bundles.
    let left = tier.list(None).await.unwrap().len();
    let bundles = bucket_keys(moto.port).await.iter().filter(|k| k.ends_with(".bundle")).count();
    assert!(bundles <= left, "{bundles} bundles for {left} objects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_bundle_read_back_by_range_and_the_index_is_rebuilt_from_the_bucket() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let objects: Vec<(ObjectKey, Bytes)> = (0..20)
        .map(|i| (ObjectKey::new(format!("1.2/3.4/5.{i}.dcm")).unwrap(), Bytes::from(vec![i as u8; 10_000 + i * 77])))
        .collect();
    {
        let tier = open(endpoint.clone(), "STANDARD", dir.path()).await;
        let items = objects
            .iter()
            .map(|(k, b)| (k.clone(), archive_core::tier::bytes_stream(b.clone()), PutOpts::default()))
            .collect();
        let metas = tier.put_many(items).await.unwrap();
        assert_eq!(metas.len(), 20);
        let keys = bucket_keys(moto.port).await;
        assert_eq!(keys.iter().filter(|k| k.ends_with(".bundle")).count(), 1, "{keys:?}");
        assert_eq!(keys.iter().filter(|k| k.ends_with(".index.json")).count(), 1);
        for (k, b) in &objects {
            assert_eq!(tier.get_bytes(k).await.unwrap(), *b);
        }
        // Deleting one object rewrites the bundle's index; the others stay readable.
        tier.delete(&objects[3].0).await.unwrap();
    }
    // Lose the local index: it is rebuilt from the bundle indexes in the bucket.
    std::fs::remove_dir_all(dir.path()).unwrap();
    let tier = open(endpoint, "STANDARD", dir.path()).await;
    let listed = tier.list(None).await.unwrap();
    assert_eq!(listed.len(), 19);
    assert!(matches!(tier.head(&objects[3].0).await, Err(TierError::NotFound(_))));
    for (k, b) in objects.iter().filter(|(k, _)| *k != objects[3].0) {
        assert_eq!(tier.get_bytes(k).await.unwrap(), *b);
    }
    // The last deletes remove the bundle itself.
    for (k, _) in &objects {
        tier.delete(k).await.unwrap();
    }
    assert!(bucket_keys(moto.port).await.iter().all(|k| !k.contains("bundles/")), "bundle left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bundles_go_up_as_multipart_uploads() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let tier = open(format!("http://127.0.0.1:{}", moto.port), "STANDARD", dir.path()).await;
    let key = ObjectKey::new("big/object.dcm").unwrap();
    let data: Bytes = (0..13 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    let meta = tier.put_bytes(&key, data.clone(), PutOpts::default()).await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(tier.get_bytes(&key).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_class_needs_a_restore_before_reads() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let tier = open(format!("http://127.0.0.1:{}", moto.port), "GLACIER", dir.path()).await;
    assert!(tier.capabilities().needs_recall);
    let key = ObjectKey::new("1/2/3.dcm").unwrap();
    let data = Bytes::from_static(b"frozen bytes");
    tier.put_bytes(&key, data.clone(), PutOpts::default()).await.unwrap();
    assert!(matches!(tier.get_bytes(&key).await, Err(TierError::NeedsRecall(_))));
    // head still answers (it is how fresh copies on archive classes are verified).
    assert_eq!(tier.head(&key).await.unwrap().size, data.len() as u64);
    let mut status = tier.recall(&key).await.unwrap();
    for _ in 0..50 {
        if status == RecallStatus::Ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = tier.recall(&key).await.unwrap();
    }
    assert_eq!(status, RecallStatus::Ready);
    assert_eq!(tier.get_bytes(&key).await.unwrap(), data);
}

/// A proxy that fails some connections: a 503 SlowDown answer, a reset, or a stall past the
/// client's timeout; the others are forwarded.
async fn faulty_proxy(upstream: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let faults = Arc::new(AtomicUsize::new(0));
    let counter = Arc::new(AtomicUsize::new(0));
    let f = faults.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let faults = f.clone();
            tokio::spawn(async move {
                match n % 5 {
                    1 => {
                        faults.fetch_add(1, Ordering::SeqCst);
                        let mut buf = [0u8; 1024];
                        let _ = client.read(&mut buf).await;
                        let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>reduce your rate</Message></Error>";
                        let rsp = format!("HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                        let _ = client.write_all(rsp.as_bytes()).await;
                    }
                    2 => {
                        faults.fetch_add(1, Ordering::SeqCst);
                        let mut buf = [0u8; 16];
                        let _ = client.read(&mut buf).await;
                        drop(client);
                    }
                    3 if n < 20 => {
                        faults.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                    _ => {
                        if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                        }
                    }
                }
            });
        }
    });
    (port, faults)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_resets_and_stalls_are_retried_and_nothing_is_lost() {
    let moto = start_moto();
    let (proxy, faults) = faulty_proxy(moto.port).await;
    let dir = tempfile::tempdir().unwrap();
    let tier = open(format!("http://127.0.0.1:{proxy}"), "STANDARD", dir.path()).await;
    let mut stored = Vec::new();
    for i in 0..30u32 {
        let key = ObjectKey::new(format!("s/{i}.dcm")).unwrap();
        let data = Bytes::from(vec![(i % 256) as u8; 50_000 + i as usize]);
        match tier.put_bytes(&key, data.clone(), PutOpts::default()).await {
            Ok(_) => stored.push((key, data)),
            Err(e) => assert!(!e.is_permanent(), "only transient failures may surface: {e}"),
        }
    }
    assert!(faults.load(Ordering::SeqCst) > 3, "the proxy injected faults");
    assert!(stored.len() >= 25, "retries carried most puts through: {}", stored.len());
    // Every put that was acknowledged reads back byte-exact, straight from the server.
    drop(tier);
    let direct = open(format!("http://127.0.0.1:{}", moto.port), "STANDARD", dir.path()).await;
    for (k, b) in &stored {
        assert_eq!(direct.get_bytes(k).await.unwrap(), *b);
    }
}

/// moto checks that a request names credentials (for object ACLs), not its signature.
const FAKE_AUTH: &str =
    "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// Reads an object straight from the bucket.
async fn get_raw(port: u16, key: &str) -> Bytes {
    let rsp = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/vna-test/{key}"))
        .header("authorization", FAKE_AUTH)
        .send()
        .await
        .unwrap();
    assert!(rsp.status().is_success(), "{rsp:?}");
    rsp.bytes().await.unwrap()
}

/// Writes an object straight into the bucket.
async fn put_raw(port: u16, key: &str, body: Vec<u8>) {
    let rsp = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{port}/vna-test/{key}"))
        .header("authorization", FAKE_AUTH)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(rsp.status().is_success(), "{rsp:?}");
}

/// The bucket's bundle indexes.
async fn bundle_indexes(port: u16) -> Vec<BundleIndex> {
    let mut out = Vec::new();
    for k in bucket_keys(port).await.iter().filter(|k| k.ends_with(".index.json")) {
        out.push(serde_json::from_slice(&get_raw(port, k).await).unwrap());
    }
    out
}

/// Flips one byte of an object inside its bundle, leaving every index alone.
async fn damage_in_bucket(port: u16, key: &ObjectKey) {
    let (idx, entry) = bundle_indexes(port)
        .await
        .into_iter()
        .find_map(|idx| idx.entries.iter().find(|e| &e.key == key).cloned().map(|e| (idx, e)))
        .expect("the object is in a bundle");
    let data_key = format!("archive/bundles/{}.bundle", idx.bundle);
    let mut bytes = get_raw(port, &data_key).await.to_vec();
    bytes[(entry.offset + entry.size / 2) as usize] ^= 0xff;
    put_raw(port, &data_key, bytes).await;
}

/// Starts recording the requests moto receives (dropping earlier ones).
async fn start_recording(port: u16) {
    let client = reqwest::Client::new();
    for what in ["reset-recording", "start-recording"] {
        let url = format!("http://127.0.0.1:{port}/moto-api/recorder/{what}");
        assert!(client.post(url).send().await.unwrap().status().is_success());
    }
}

/// The requests recorded since `start_recording`, as (method, URL), then stops recording.
/// The SDK's retries of a request (an `amz-sdk-request` attempt above 1, as a loaded machine
/// may cause) are left out: they are one request of the tier.
async fn recorded(port: u16) -> Vec<(String, String)> {
    let base = format!("http://127.0.0.1:{port}/moto-api/recorder");
    let text = reqwest::get(format!("{base}/download-recording")).await.unwrap().text().await.unwrap();
    reqwest::Client::new().post(format!("{base}/stop-recording")).send().await.unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let retry = v["headers"].as_object().into_iter().flatten().any(|(name, value)| {
                name.eq_ignore_ascii_case("amz-sdk-request")
                    && !value.as_str().unwrap_or("").trim_start().starts_with("attempt=1;")
            });
            let url = v["url"].as_str().unwrap_or("");
            // Without the SDK's `x-id=...` query, but keeping `?delete`.
            let url = url.split("?x-id=").next().unwrap_or(url).to_string();
            (!retry).then(|| (v["method"].as_str().unwrap_or("").to_string(), url))
        })
        // Leave out the recorder's own calls and a background sweep's listings.
        .filter(|(_, url)| {
            url.starts_with(&format!("http://127.0.0.1:{port}/"))
                && !url.contains("/moto-api/")
                && !url.contains("list-type")
        })
        .collect()
}

fn objects(prefix: &str, n: usize, size: usize) -> Vec<(ObjectKey, Bytes)> {
    (0..n)
        .map(|i| {
            let data: Vec<u8> = (0..size + i * 31).map(|j| (j * 7 + i * 13 + prefix.len()) as u8).collect();
            (ObjectKey::new(format!("{prefix}/{i}.dcm")).unwrap(), Bytes::from(data))
        })
        .collect()
}

async fn put_batch(tier: &S3Tier, objects: &[(ObjectKey, Bytes)]) {
    let items = objects
        .iter()
        .map(|(k, b)| (k.clone(), archive_core::tier::bytes_stream(b.clone()), PutOpts::default()))
        .collect();
    tier.put_many(items).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_many_rewrites_each_bundle_once_and_removes_emptied_bundles_with_one_request() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let tier = open(endpoint.clone(), "STANDARD", dir.path()).await;
    let a = objects("a", 10, 3000);
    let b = objects("b", 5, 2000);
    let c = objects("c", 2, 1000);
    put_batch(&tier, &a).await;
    put_batch(&tier, &b).await;
    for (k, data) in &c {
        tier.put_bytes(k, data.clone(), PutOpts::default()).await.unwrap();
    }
    assert_eq!(bucket_keys(moto.port).await.iter().filter(|k| k.ends_with(".bundle")).count(), 4);

    // Half of bundle a, all of bundle b, both single-object bundles, and a missing key.
    let mut gone: Vec<ObjectKey> = a[..5].iter().chain(&b).chain(&c).map(|(k, _)| k.clone()).collect();
    gone.push(ObjectKey::new("never/written").unwrap());
    start_recording(moto.port).await;
    tier.delete_many(gone.clone()).await.unwrap();
    let requests = recorded(moto.port).await;
    let index_puts = requests.iter().filter(|(m, u)| m == "PUT" && u.ends_with(".index.json")).count();
    let bulk_deletes = requests.iter().filter(|(m, u)| m == "POST" && u.contains("delete")).count();
    assert_eq!(index_puts, 1, "one index rewrite, for bundle a: {requests:?}");
    assert_eq!(bulk_deletes, 1, "one DeleteObjects for the three emptied bundles: {requests:?}");
    assert!(requests.iter().all(|(m, _)| m != "DELETE"), "{requests:?}");
    assert_eq!(requests.len(), 2, "{requests:?}");

    let indexes = bundle_indexes(moto.port).await;
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    let kept: Vec<&ObjectKey> = indexes[0].entries.iter().map(|e| &e.key).collect();
    assert_eq!(kept, a[5..].iter().map(|(k, _)| k).collect::<Vec<_>>());
    assert_eq!(bucket_keys(moto.port).await.iter().filter(|k| k.ends_with(".bundle")).count(), 1);
    for k in &gone {
        assert!(matches!(tier.head(k).await, Err(TierError::NotFound(_))), "{k}");
    }
    for (k, data) in &a[5..] {
        assert_eq!(tier.get_bytes(k).await.unwrap(), *data);
    }
    // Deleting again changes nothing and sends nothing.
    start_recording(moto.port).await;
    tier.delete_many(gone).await.unwrap();
    assert!(recorded(moto.port).await.is_empty());

    // The rewritten index is what a rebuild finds.
    drop(tier);
    std::fs::remove_dir_all(dir.path()).unwrap();
    let tier = open(endpoint, "STANDARD", dir.path()).await;
    let listed: Vec<ObjectKey> = tier.list(None).await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(listed, a[5..].iter().map(|(k, _)| k.clone()).collect::<Vec<_>>());
    tier.delete_many(a.iter().map(|(k, _)| k.clone()).collect()).await.unwrap();
    assert!(bucket_keys(moto.port).await.iter().all(|k| !k.contains("bundles/")), "bundle left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_many_reads_each_bundle_once_and_finds_damaged_members() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let tier = open(format!("http://127.0.0.1:{}", moto.port), "STANDARD", dir.path()).await;
    let a = objects("va", 20, 20_000);
    let b = objects("vb", 5, 7_000);
    put_batch(&tier, &a).await;
    put_batch(&tier, &b).await;
    let mut items: Vec<(ObjectKey, Checksum)> = a.iter().chain(&b).map(|(k, d)| (k.clone(), Checksum::of(d))).collect();
    items.reverse();

    start_recording(moto.port).await;
    let answers = tier.verify_many(items.clone()).await.unwrap();
    let requests = recorded(moto.port).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(requests.len(), 2, "one GET per bundle: {requests:?}");
    assert!(requests.iter().all(|(m, u)| m == "GET" && u.ends_with(".bundle")), "{requests:?}");

    // One damaged member fails alone; a wrong checksum and a missing key are answered
    // without reading anything more.
    damage_in_bucket(moto.port, &a[7].0).await;
    items.push((a[3].0.clone(), Checksum::of(b"other bytes")));
    items.push((ObjectKey::new("never/written").unwrap(), Checksum::of(b"")));
    let answers = tier.verify_many(items.clone()).await.unwrap();
    assert_eq!(answers.len(), items.len());
    for ((key, expected), answer) in items.iter().zip(&answers) {
        match answer {
            Ok(()) => {
                assert!(*key != a[7].0 && *expected != Checksum::of(b"other bytes") && key.as_str() != "never/written")
            }
            Err(TierError::ChecksumMismatch { key: k, .. }) => assert!(k == key && (*k == a[7].0 || k == &a[3].0)),
            Err(TierError::NotFound(k)) => assert_eq!(k.as_str(), "never/written"),
            Err(e) => panic!("{key}: {e}"),
        }
    }
    assert_eq!(answers.iter().filter(|a| a.is_err()).count(), 3, "{answers:?}");
    // A member read alone costs one ranged GET of its own bytes.
    start_recording(moto.port).await;
    let one = tier.verify_many(vec![(b[2].0.clone(), Checksum::of(&b[2].1))]).await.unwrap();
    assert!(one[0].is_ok());
    let requests = recorded(moto.port).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
}

/// An orphan written behind the tier's back: a bundle of `objects` and, when `with_index`,
/// its index object. Returns the bytes written.
async fn write_orphan(port: u16, id: &str, objects: &[(ObjectKey, Bytes)], with_index: bool) -> u64 {
    let mut data = Vec::new();
    let mut entries = Vec::new();
    for (k, b) in objects {
        entries.push(BundleEntry {
            key: k.clone(),
            offset: data.len() as u64,
            size: b.len() as u64,
            checksum: Checksum::of(b),
        });
        data.extend_from_slice(b);
    }
    let mut bytes = data.len() as u64;
    put_raw(port, &format!("archive/bundles/{id}.bundle"), data).await;
    if with_index {
        let idx = BundleIndex { v: 1, bundle: id.to_string(), entries };
        let json = serde_json::to_vec(&idx).unwrap();
        bytes += json.len() as u64;
        put_raw(port, &format!("archive/bundles/{id}.index.json"), json).await;
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_bundles_are_swept_and_known_or_young_ones_are_kept() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let tier = open(endpoint.clone(), "STANDARD", dir.path()).await;
    let known = objects("known", 3, 500);
    put_batch(&tier, &known).await;
    let known_keys = bucket_keys(moto.port).await;
    assert_eq!(known_keys.len(), 2);

    let with_index = write_orphan(moto.port, "0-orphan1", &objects("o1", 2, 300), true).await;
    let without_index = write_orphan(moto.port, "0-orphan2", &objects("o2", 1, 400), false).await;
    // Young orphans are found and kept.
    let report = tier.sweep_orphans(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(report, SweepReport { bundles_found: 2, bundles_deleted: 0, bytes: 0 });
    assert_eq!(bucket_keys(moto.port).await.len(), 5);
    // Old enough: deleted; the bundle the tier knows stays, readable.
    let report = tier.sweep_orphans(Duration::ZERO).await.unwrap();
    assert_eq!(report, SweepReport { bundles_found: 2, bundles_deleted: 2, bytes: with_index + without_index });
    assert_eq!(bucket_keys(moto.port).await, known_keys);
    for (k, b) in &known {
        assert_eq!(tier.get_bytes(k).await.unwrap(), *b);
    }
    assert_eq!(tier.sweep_orphans(Duration::ZERO).await.unwrap(), SweepReport::default());

    // A lost local index is rebuilt from the index objects: an orphan with an index object
    // becomes a known bundle again (its objects listed and kept), one without stays an orphan.
    let revived = objects("o3", 2, 600);
    write_orphan(moto.port, "0-orphan3", &revived, true).await;
    let lone = write_orphan(moto.port, "0-orphan4", &objects("o4", 1, 700), false).await;
    drop(tier);
    std::fs::remove_dir_all(dir.path()).unwrap();
    let tier = open(endpoint, "STANDARD", dir.path()).await;
    let report = tier.sweep_orphans(Duration::ZERO).await.unwrap();
    assert_eq!(report, SweepReport { bundles_found: 1, bundles_deleted: 1, bytes: lone });
    for (k, b) in known.iter().chain(&revived) {
        assert_eq!(tier.get_bytes(k).await.unwrap(), *b);
    }
    assert_eq!(tier.list(None).await.unwrap().len(), 5);
    assert_eq!(bucket_keys(moto.port).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_sweeps_old_orphans_in_the_background_when_it_opens() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    {
        let tier = open(endpoint.clone(), "STANDARD", dir.path()).await;
        put_batch(&tier, &objects("kept", 2, 100)).await;
    }
    write_orphan(moto.port, "0-orphan", &objects("lost", 2, 100), true).await;
    let mut o = options(endpoint, "STANDARD");
    o.orphan_min_age_minutes = 0;
    let tier = open_with(o, dir.path()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while bucket_keys(moto.port).await.iter().any(|k| k.contains("0-orphan")) {
        assert!(std::time::Instant::now() < deadline, "the orphan was not swept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tier.list(None).await.unwrap().len(), 2);
    assert_eq!(bucket_keys(moto.port).await.len(), 2);
}

/// Runs only as the child of [`a_process_aborted_between_upload_and_commit_leaves_an_orphan_the_sweep_removes`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_crash_child() {
    let (Ok(endpoint), Ok(dir)) = (std::env::var("VNA_S3_CRASH_ENDPOINT"), std::env::var("VNA_S3_CRASH_DIR")) else {
        return;
    };
    let tier = open(endpoint, "STANDARD", std::path::Path::new(&dir)).await;
    put_batch(&tier, &objects("crash", 3, 1000)).await;
    // Reached only when the failpoint is not armed.
    std::process::exit(3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_aborted_between_upload_and_commit_leaves_an_orphan_the_sweep_removes() {
    let moto = start_moto();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    for (point, objects_left) in [("s3.after_bundle_upload", 1), ("s3.after_index_upload", 2)] {
        let dir = tempfile::tempdir().unwrap();
        drop(open(endpoint.clone(), "STANDARD", dir.path()).await);
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["s3_crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("VNA_S3_CRASH_ENDPOINT", &endpoint)
            .env("VNA_S3_CRASH_DIR", dir.path())
            .env("VNA_FAILPOINTS", point)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{point}: the child did not abort: {status}");
        assert_eq!(bucket_keys(moto.port).await.len(), objects_left, "{point}");
        let tier = open(endpoint.clone(), "STANDARD", dir.path()).await;
        assert!(tier.list(None).await.unwrap().is_empty(), "{point}: nothing was listed");
        let report = tier.sweep_orphans(Duration::ZERO).await.unwrap();
        assert_eq!((report.bundles_found, report.bundles_deleted), (1, 1), "{point}: {report:?}");
        assert!(bucket_keys(moto.port).await.is_empty(), "{point}");
    }
}
