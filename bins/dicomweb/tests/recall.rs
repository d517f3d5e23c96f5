//! A study on a tier that needs a recall: metadata and QIDO-RS answer from the catalog, a
//! WADO-RS retrieve starts a recall to the hot tier and, when it does not finish within the
//! configured wait, answers 202 with a Warning, Retry-After and the job's Location; once the
//! recall is done the same retrieve answers 200 and the study is ONLINE. The cold tier is an
//! in-memory tier reporting the capabilities of an archive storage class (S3 Glacier-like).
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::config::ArchiveConfig;
use archive_core::ingest::IngestInput;
use archive_core::model::Source;
use archive_core::tier::memory::MemoryTier;
use archive_core::tier::{Availability, Tier, TierCapabilities, TierName};
use archive_core::Archive;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::sync::Arc;
use tower::ServiceExt;
use vna_benches::dataset::{DatasetGenerator, StudySpec};

async fn call(app: &axum::Router, uri: &str, accept: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let req = Request::get(uri).header("Accept", accept).header("Host", "vna.test").body(Body::empty()).unwrap();
    let rsp = app.clone().oneshot(req).await.unwrap();
    let status = rsp.status();
    let headers = rsp.headers().clone();
    let body = axum::body::to_bytes(rsp.into_body(), usize::MAX).await.unwrap().to_vec();
    (status, headers, body)
}

#[tokio::test]
async fn a_study_that_needs_a_recall_answers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ArchiveConfig { data_dir: dir.path().to_path_buf(), ..ArchiveConfig::default() };
    config.catalog.min_free_mb = 0;
    config.hot.min_free_mb = 0;
    config.lifecycle.http_recall_wait_secs = 0;
    let cold = TierName::new("glacier").unwrap();
    let caps = TierCapabilities {
        availability: Availability::Offline,
        ranged_reads: false,
        needs_recall: true,
        max_object_size: None,
        batch_bytes: None,
    };
    let hot = Arc::new(MemoryTier::new(TierName::new("hot").unwrap()));
    let tiers: Vec<Arc<dyn Tier>> = vec![Arc::new(MemoryTier::with_capabilities(cold.clone(), caps)), hot.clone()];
    let (archive, _) = Archive::open(config.clone(), tiers, cold).await.unwrap();
    let study = DatasetGenerator::new(5).study(&StudySpec::tiny("CT", 1, 3));
    for inst in &study {
        let input = IngestInput::Part10(bytes::Bytes::from(inst.bytes.clone()));
        archive.ingest().ingest(input, Source::default()).await.unwrap();
    }
    let app = dicomweb::router(
        archive.clone(),
        dicomweb::HttpSettings::from_config(&Default::default(), "VNA", &config.data_dir),
    );
    let (st, se, sop) = (&study[0].study, &study[0].series, &study[0].sop_instance);

    // Metadata comes from the catalog, whatever the tier.
    let (status, _, body) = call(&app, &format!("/dicom-web/studies/{st}/metadata"), "application/dicom+json").await;
    assert_eq!(status, StatusCode::OK);
    let meta: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(meta.len(), 3);
    assert!(meta[0]["7FE00010"]["BulkDataURI"].as_str().unwrap().starts_with("http://vna.test/dicom-web/studies/"));

    // QIDO-RS reports the availability at every level.
    let (status, _, body) = call(&app, &format!("/dicom-web/studies/{st}/instances"), "application/dicom+json").await;
    assert_eq!(status, StatusCode::OK);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert!(rows.iter().all(|r| r["00080056"]["Value"][0] == "OFFLINE"));
    let (_, _, body) = call(&app, &format!("/dicom-web/studies?StudyInstanceUID={st}"), "application/dicom+json").await;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows[0]["00080056"]["Value"][0], "OFFLINE");

    // A retrieve starts a recall and answers 202 at once (the configured wait is 0).
    let (status, headers, body) =
        call(&app, &format!("/dicom-web/studies/{st}"), "multipart/related; type=\"application/dicom\"").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
    assert!(headers["warning"].to_str().unwrap().contains("recalled"));
    assert_eq!(headers["retry-after"], "30");
    assert!(headers["location"].to_str().unwrap().starts_with("/api/jobs/"));
    // Frames cannot be read before the recall either; the request joins the same recall.
    let (status, _, _) =
        call(&app, &format!("/dicom-web/studies/{st}/series/{se}/instances/{sop}/frames/1"), "*/*").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let jobs = archive.lifecycle().jobs();
    assert_eq!(jobs.len(), 1, "concurrent requests share one recall");
    let job = archive.lifecycle().wait(jobs[0].id, std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(job.state, archive_core::lifecycle::JobState::Done, "{job:?}");

    // Recalled: the retrieve answers, and the study is ONLINE with its cold copies kept.
    let (status, _, _) =
        call(&app, &format!("/dicom-web/studies/{st}"), "multipart/related; type=\"application/dicom\"").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hot.list(None).await.unwrap().len(), 3);
    let (_, _, body) = call(&app, &format!("/dicom-web/studies?StudyInstanceUID={st}"), "application/dicom+json").await;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows[0]["00080056"]["Value"][0], "ONLINE");
    archive.close().await.unwrap();
}
