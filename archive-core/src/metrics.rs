//! Prometheus metrics of the core, registered in one [`prometheus::Registry`] that the
//! HTTP server exposes at `/metrics`. Protocol adapters register their own metrics in
//! the same registry.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// The core's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Ingests by outcome (`stored`, `duplicate`, `replaced`, `rejected`, `conflict`, `out_of_space`, `error`).
    pub ingest_total: IntCounterVec,
    /// Bytes of objects stored.
    pub ingest_bytes: IntCounter,
    /// Seconds from receipt of the bytes to a durable commit.
    pub ingest_seconds: Histogram,
    /// Queries by level.
    pub query_total: IntCounterVec,
    /// Query latency by level.
    pub query_seconds: HistogramVec,
    /// Objects read by tier.
    pub retrieve_total: IntCounterVec,
    /// Bytes read by tier.
    pub retrieve_bytes: IntCounterVec,
    /// Seconds until an object's copy was opened for reading, by tier.
    pub retrieve_seconds: HistogramVec,
    /// Lifecycle jobs by kind (`migrate`, `recall`) and event (`submitted`, `done`, `failed`).
    pub lifecycle_jobs_total: IntCounterVec,
    /// Copies made by lifecycle jobs, by source and target tier.
    pub lifecycle_objects_total: IntCounterVec,
    /// Bytes copied by lifecycle jobs, by source and target tier.
    pub lifecycle_bytes_total: IntCounterVec,
    /// Instances a lifecycle job could not copy, by target tier.
    pub lifecycle_failures_total: IntCounterVec,
    /// Retrieves that had to wait for (or join) a recall.
    pub recall_requests_total: IntCounter,
    /// Copies checked by the integrity scrub, by tier and result (`ok`, `failed`, `skipped`, `unreadable`).
    pub scrub_copies_total: IntCounterVec,
    /// Bytes re-read by the integrity scrub.
    pub scrub_bytes_total: IntCounter,
    /// Deletions by event (`marked`, `cancelled`, `refused`, `purged`).
    pub deletions_total: IntCounterVec,
    /// Instances purged.
    pub purged_instances_total: IntCounter,
    /// Bytes purged.
    pub purged_bytes_total: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl Metrics {
    /// Creates and registers the core metrics in a new registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let ingest_total =
            IntCounterVec::new(Opts::new("vna_ingest_total", "Objects offered for ingest, by outcome"), &["outcome"])
                .expect("valid metric");
        let ingest_bytes = IntCounter::new("vna_ingest_bytes_total", "Bytes of objects stored").expect("valid metric");
        let ingest_seconds = Histogram::with_opts(
            HistogramOpts::new("vna_ingest_seconds", "Ingest latency until durable").buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let query_total = IntCounterVec::new(Opts::new("vna_query_total", "Catalog queries, by level"), &["level"])
            .expect("valid metric");
        let query_seconds = HistogramVec::new(
            HistogramOpts::new("vna_query_seconds", "Catalog query latency, by level")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["level"],
        )
        .expect("valid metric");
        let retrieve_total = IntCounterVec::new(Opts::new("vna_retrieve_total", "Objects read, by tier"), &["tier"])
            .expect("valid metric");
        let retrieve_bytes =
            IntCounterVec::new(Opts::new("vna_retrieve_bytes_total", "Bytes read, by tier"), &["tier"])
                .expect("valid metric");
        let retrieve_seconds = HistogramVec::new(
            HistogramOpts::new("vna_retrieve_open_seconds", "Time to open an object for reading, by tier")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["tier"],
        )
        .expect("valid metric");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let lifecycle_jobs_total =
            counter_vec("vna_lifecycle_jobs_total", "Lifecycle jobs by kind and event", &["kind", "event"]);
        let lifecycle_objects_total =
            counter_vec("vna_lifecycle_objects_total", "Copies made by lifecycle jobs", &["from", "to"]);
        let lifecycle_bytes_total =
            counter_vec("vna_lifecycle_bytes_total", "Bytes copied by lifecycle jobs", &["from", "to"]);
        let lifecycle_failures_total =
            counter_vec("vna_lifecycle_failures_total", "Instances a lifecycle job could not copy", &["to"]);
        let recall_requests_total =
            IntCounter::new("vna_recall_requests_total", "Retrieves that waited for a recall").expect("valid metric");
        let scrub_copies_total =
            counter_vec("vna_scrub_copies_total", "Copies checked by the integrity scrub", &["tier", "result"]);
        let scrub_bytes_total =
            IntCounter::new("vna_scrub_bytes_total", "Bytes re-read by the integrity scrub").expect("valid metric");
        let deletions_total = counter_vec("vna_deletions_total", "Deletions by event", &["event"]);
        let purged_instances_total =
            IntCounter::new("vna_purged_instances_total", "Instances purged by deletions").expect("valid metric");
        let purged_bytes_total =
            IntCounter::new("vna_purged_bytes_total", "Bytes purged by deletions").expect("valid metric");
        for c in [
            Box::new(deletions_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(purged_instances_total.clone()),
            Box::new(purged_bytes_total.clone()),
            Box::new(lifecycle_jobs_total.clone()),
            Box::new(lifecycle_objects_total.clone()),
            Box::new(lifecycle_bytes_total.clone()),
            Box::new(lifecycle_failures_total.clone()),
            Box::new(recall_requests_total.clone()),
            Box::new(scrub_copies_total.clone()),
            Box::new(scrub_bytes_total.clone()),
            Box::new(ingest_total.clone()),
            Box::new(ingest_bytes.clone()),
            Box::new(ingest_seconds.clone()),
            Box::new(query_total.clone()),
            Box::new(query_seconds.clone()),
            Box::new(retrieve_total.clone()),
            Box::new(retrieve_bytes.clone()),
            Box::new(retrieve_seconds.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            ingest_total,
            ingest_bytes,
            ingest_seconds,
            query_total,
            query_seconds,
            retrieve_total,
            retrieve_bytes,
            retrieve_seconds,
            lifecycle_jobs_total,
            lifecycle_objects_total,
            lifecycle_bytes_total,
            lifecycle_failures_total,
            recall_requests_total,
            scrub_copies_total,
            scrub_bytes_total,
            deletions_total,
            purged_instances_total,
            purged_bytes_total,
        }
    }

    /// The registry, for exposition and for adapters' own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
