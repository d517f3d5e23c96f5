//! Migrations tell the target tier what each object is: every put (single or batched) carries
//! the instance's series Modality as `PutOpts::content_class`, which the warm tier uses to
//! pick a compression dictionary.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::catalog::rocks::{RocksCatalog, RocksCatalogOptions};
use archive_core::catalog::ConflictPolicy;
use archive_core::disk::DiskGuard;
use archive_core::ingest::{Ingest, IngestInput};
use archive_core::lifecycle::{JobState, Lifecycle, LifecycleSettings, TierMoveRequest};
use archive_core::metrics::Metrics;
use archive_core::model::Source;
use archive_core::tier::memory::MemoryTier;
use archive_core::tier::TierSet;
use archive_core::tier::{
    ByteStream, GetOpts, GetResult, ObjectKey, ObjectMeta, PutOpts, Tier, TierCapabilities, TierError, TierName,
};
use archive_core::uid::StudyUid;
use async_trait::async_trait;
use bytes::Bytes;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn name(s: &str) -> TierName {
    TierName::new(s).unwrap()
}

fn object(series: &str, modality: &str, sop: &str) -> Bytes {
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, v: &str| obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    put(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7");
    put(tags::SOP_INSTANCE_UID, VR::UI, sop);
    put(tags::MODALITY, VR::CS, modality);
    put(tags::PATIENT_ID, VR::LO, "P1");
    put(tags::STUDY_INSTANCE_UID, VR::UI, "1.7.1");
    put(tags::SERIES_INSTANCE_UID, VR::UI, series);
    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(vec![7u8; 64])));
    let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax("1.2.840.10008.1.2.1")).unwrap();
    let mut out = Vec::new();
    file.write_all(&mut out).unwrap();
    Bytes::from(out)
}

/// A memory tier that records the content class of every put, batching or not.
#[derive(Debug)]
struct Recording {
    inner: MemoryTier,
    batch_bytes: Option<u64>,
    classes: Mutex<BTreeMap<String, Option<String>>>,
}

impl Recording {
    fn record(&self, key: &ObjectKey, opts: &PutOpts) {
        self.classes.lock().unwrap().insert(key.as_str().to_string(), opts.content_class.clone());
    }
}

#[async_trait]
impl Tier for Recording {
    fn name(&self) -> &TierName {
        self.inner.name()
    }
    fn capabilities(&self) -> TierCapabilities {
        TierCapabilities { batch_bytes: self.batch_bytes, ..self.inner.capabilities() }
    }
    async fn put(&self, key: &ObjectKey, body: ByteStream, opts: PutOpts) -> Result<ObjectMeta, TierError> {
        self.record(key, &opts);
        self.inner.put(key, body, opts).await
    }
    async fn put_many(&self, items: Vec<(ObjectKey, ByteStream, PutOpts)>) -> Result<Vec<ObjectMeta>, TierError> {
        for (key, _, opts) in &items {
            self.record(key, opts);
        }
        self.inner.put_many(items).await
    }
    async fn get(&self, key: &ObjectKey, opts: GetOpts) -> Result<GetResult, TierError> {
        self.inner.get(key, opts).await
    }
    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, TierError> {
        self.inner.head(key).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), TierError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>, TierError> {
        self.inner.list(prefix).await
    }
}

async fn migrate_to(batch_bytes: Option<u64>) -> BTreeMap<String, Option<String>> {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(RocksCatalog::open(dir.path(), RocksCatalogOptions::default()).unwrap());
    let hot = Arc::new(MemoryTier::new(name("hot")));
    let target = Arc::new(Recording { inner: MemoryTier::new(name("target")), batch_bytes, classes: Mutex::default() });
    let tiers = Arc::new(TierSet::new(vec![hot, target.clone()], name("hot")).unwrap());
    let metrics = Metrics::new();
    let ingest = Ingest::new(catalog.clone(), tiers.clone(), DiskGuard::new(), ConflictPolicy::Reject, metrics.clone());
    for (series, modality) in [("1.7.1.1", "CT"), ("1.7.1.2", "SR")] {
        for i in 0..5 {
            let bytes = object(series, modality, &format!("{series}.{i}"));
            ingest.ingest(IngestInput::Part10(bytes), Source::default()).await.unwrap();
        }
    }
    let settings = LifecycleSettings {
        min_copies: 1,
        max_concurrent_jobs: 1,
        bytes_per_sec: 0,
        recall_tier: name("hot"),
        recall_wait: Duration::from_secs(30),
        keep_finished: 10,
        commit_batch: 3,
        batch_objects: 4,
        attempts: 1,
    };
    let lifecycle = Lifecycle::new(catalog, tiers, settings, metrics);
    let job = lifecycle
        .submit(TierMoveRequest {
            study: StudyUid::new("1.7.1").unwrap(),
            to: name("target"),
            from: None,
            keep_source: false,
            requested_by: "test".into(),
            reason: None,
        })
        .unwrap();
    let job = lifecycle.wait(job.id, Duration::from_secs(60)).await.unwrap();
    assert_eq!((job.state, job.instances_done, job.instances_failed), (JobState::Done, 10, 0), "{job:?}");
    let classes = target.classes.lock().unwrap().clone();
    classes
}

fn assert_modalities(classes: &BTreeMap<String, Option<String>>) {
    assert_eq!(classes.len(), 10, "{classes:?}");
    for (key, class) in classes {
        let expected = if key.contains("/1.7.1.1/") { "CT" } else { "SR" };
        assert_eq!(class.as_deref(), Some(expected), "{key}");
    }
}

#[tokio::test]
async fn single_puts_carry_the_series_modality() {
    assert_modalities(&migrate_to(None).await);
}

#[tokio::test]
async fn batched_puts_carry_the_series_modality() {
    assert_modalities(&migrate_to(Some(1 << 20)).await);
}
