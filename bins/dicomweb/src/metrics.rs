//! HTTP metrics, registered in the archive's registry next to the core's and DIMSE's.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0];

/// Counters and gauges of the HTTP door.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// Requests by route template, method and status code.
    pub requests: IntCounterVec,
    /// Request latency (until the response head) by route template.
    pub latency: HistogramVec,
    /// STOW-RS requests being received or stored now.
    pub stow_in_flight: IntGauge,
    /// Bytes spooled to disk by STOW-RS requests in flight.
    pub spool_bytes: IntGauge,
}

impl HttpMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Self {
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new("vna_http_requests_total", "HTTP requests by route, method and status"),
                &["route", "method", "status"],
            )
            .expect("valid metric"),
            latency: HistogramVec::new(
                HistogramOpts::new("vna_http_request_seconds", "HTTP request latency by route")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .expect("valid metric"),
            stow_in_flight: IntGauge::new("vna_stow_requests_in_flight", "STOW-RS requests in progress")
                .expect("valid metric"),
            spool_bytes: IntGauge::new("vna_stow_spool_bytes", "Bytes spooled by STOW-RS requests in progress")
                .expect("valid metric"),
        };
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.latency.clone()),
            Box::new(m.stow_in_flight.clone()),
            Box::new(m.spool_bytes.clone()),
        ] {
            // A second router on the same registry (tests) reuses the first registration.
            let _ = registry.register(c);
        }
        m
    }
}
