//! Health checks, the Prometheus exposition and the OpenAPI description.

use crate::server::auth::Public;
use crate::server::error::ApiError;
use crate::types::ErrorBody;
use archive_core::catalog::Catalog;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
pub(super) async fn healthz(_: Public) -> &'static str {
    "ok"
}

/// Readiness: the catalog answers.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "ready", body = String, content_type = "text/plain"),
    (status = 503, description = "the catalog does not answer", body = ErrorBody),
))]
pub(super) async fn readyz(Public { state }: Public) -> Response {
    match state.archive.catalog().stats() {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => ApiError::unavailable(format!("catalog unavailable: {e}")).into_response(),
    }
}

/// Every metric of the process in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub(super) async fn metrics(Public { state }: Public) -> Response {
    if let Ok(stats) = state.archive.catalog().stats() {
        for (tier, usage) in &stats.tiers {
            state.gauges.tier_objects.with_label_values(&[tier]).set(usage.objects as i64);
            state.gauges.tier_bytes.with_label_values(&[tier]).set(usage.bytes as i64);
        }
    }
    state.gauges.commit_queue.set(state.archive.catalog().commit_queue_depth() as i64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.archive.metrics().render()).into_response()
}

/// This description of the admin API (OpenAPI 3.1), generated from the server's own types.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health", responses((status = 200, description = "the OpenAPI document", body = Object)))]
pub(super) async fn openapi(_: Public) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::json()).into_response()
}
