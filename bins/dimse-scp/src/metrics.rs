//! DIMSE metrics, registered in the archive's registry.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Counters of the DIMSE server.
#[derive(Clone, Debug)]
pub struct DimseMetrics {
    /// Associations by outcome (`accepted`, `rejected`, `over_limit`).
    pub associations: IntCounterVec,
    /// Associations open now.
    pub active: IntGauge,
    /// Operations by service and final status class.
    pub operations: IntCounterVec,
    /// Operation latency by service.
    pub latency: HistogramVec,
    /// Data set bytes received.
    pub bytes_in: IntCounter,
    /// Data set bytes sent.
    pub bytes_out: IntCounter,
}

impl DimseMetrics {
    /// Creates and registers the metrics (already registered ones are reused by name).
    pub fn register(registry: &Registry) -> Self {
        let m = Self {
            associations: IntCounterVec::new(
                Opts::new("vna_dimse_associations_total", "DIMSE associations by outcome"),
                &["outcome"],
            )
            .expect("valid metric"),
            active: IntGauge::new("vna_dimse_associations_active", "DIMSE associations open").expect("valid metric"),
            operations: IntCounterVec::new(
                Opts::new("vna_dimse_operations_total", "DIMSE operations by service and status"),
                &["service", "status"],
            )
            .expect("valid metric"),
            latency: HistogramVec::new(
                HistogramOpts::new("vna_dimse_operation_seconds", "DIMSE operation latency by service"),
                &["service"],
            )
            .expect("valid metric"),
            bytes_in: IntCounter::new("vna_dimse_bytes_in_total", "DIMSE data set bytes received")
                .expect("valid metric"),
            bytes_out: IntCounter::new("vna_dimse_bytes_out_total", "DIMSE data set bytes sent").expect("valid metric"),
        };
        let _ = registry.register(Box::new(m.associations.clone()));
        let _ = registry.register(Box::new(m.active.clone()));
        let _ = registry.register(Box::new(m.operations.clone()));
        let _ = registry.register(Box::new(m.latency.clone()));
        let _ = registry.register(Box::new(m.bytes_in.clone()));
        let _ = registry.register(Box::new(m.bytes_out.clone()));
        m
    }

    /// Counts a finished operation by its status class.
    pub fn operation(&self, service: &str, status: u16, seconds: f64) {
        let class = match dimse::status::kind(status) {
            dimse::status::StatusKind::Success => "success",
            dimse::status::StatusKind::Warning => "warning",
            dimse::status::StatusKind::Cancel => "cancel",
            dimse::status::StatusKind::Pending => "pending",
            dimse::status::StatusKind::Failure => "failure",
        };
        self.operations.with_label_values(&[service, class]).inc();
        self.latency.with_label_values(&[service]).observe(seconds);
    }
}
