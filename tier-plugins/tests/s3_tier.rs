//! The S3 tier against a real S3-compatible server over HTTP: `moto_server` (installed by
//! `.ci/run`), started by each test on a free port. Conformance, bundles, multipart uploads,
//! rebuilding the local index from the bucket, archive classes with restore, and a proxy
//! that injects 503s, connection resets and stalls in front of the server.

use archive_core::tier::{conformance, ObjectKey, PutOpts, RecallStatus, Tier, TierError, TierExt, TierName};
use bytes::Bytes;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tier_plugins::s3::{S3Options, S3Tier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_moto() -> Moto {
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
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
    S3Tier::open(TierName::new("cold").unwrap(), options(endpoint, storage_class), dir.to_path_buf()).await.unwrap()
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
