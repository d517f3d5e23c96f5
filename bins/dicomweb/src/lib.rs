//! vna's HTTP door: DICOMweb (PS3.18: STOW-RS, QIDO-RS, WADO-RS, WADO-URI) under a
//! configurable base path, over the same [`Archive`] as the DIMSE services. The binary merges
//! other routes into the same server (the admin API, health checks and metrics of the
//! `admin-api` crate) through [`router_with`], so that every request is counted and timed
//! here and CORS applies to all of them.
//!
//! Every path parameter is a validated UID before anything reads the catalog, so no path
//! trick reaches a tier; every error is a JSON body with a 4xx for a client's mistake.

pub mod auth;
pub mod config;
pub mod dicom_json;
pub mod error;
pub mod media;
pub mod metrics;
pub mod multipart;
pub mod qido;
mod routes;
pub mod spool;
pub mod stow;
pub mod wado;
pub mod wado_uri;

use crate::error::ApiError;
use crate::metrics::HttpMetrics;
use archive_core::uid::{SeriesUid, SopInstanceUid, StudyUid};
use archive_core::Archive;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Settings of the HTTP door, from `[http]`.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// DICOMweb base path (`/dicom-web`).
    pub base_path: String,
    /// Public URL of the server, when configured.
    pub public_url: Option<String>,
    /// CORS origins (`*` for any).
    pub cors_allowed_origins: Vec<String>,
    /// Largest STOW part in bytes.
    pub max_object_bytes: u64,
    /// Largest STOW request in bytes.
    pub max_request_bytes: u64,
    /// Where STOW spools parts.
    pub spool_dir: PathBuf,
    /// AE title reported as RetrieveAETitle.
    pub ae_title: String,
}

impl HttpSettings {
    /// Settings from the `[http]` section; `ae_title` is the archive's (reported as
    /// RetrieveAETitle), uploads spool under `data_dir/spool`.
    pub fn from_config(http: &config::HttpConfig, ae_title: &str, data_dir: &std::path::Path) -> Self {
        Self {
            base_path: http.base_path.clone(),
            public_url: http.public_url.clone(),
            cors_allowed_origins: http.cors_allowed_origins.clone(),
            max_object_bytes: http.max_object_mb << 20,
            max_request_bytes: http.max_request_mb << 20,
            spool_dir: data_dir.join("spool"),
            ae_title: ae_title.to_string(),
        }
    }
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    /// The archive.
    pub archive: Archive,
    /// Settings.
    pub settings: Arc<HttpSettings>,
    /// HTTP metrics.
    pub metrics: HttpMetrics,
}

impl AppState {
    /// The DICOMweb base URL for links in answers: the configured public URL, or the
    /// request's Host header (when it is a plain host name) over http.
    pub fn base_url(&self, headers: &HeaderMap) -> String {
        let origin = match &self.settings.public_url {
            Some(url) => url.clone(),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .filter(|h| {
                        !h.is_empty()
                            && h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
                    })
                    .unwrap_or("localhost");
                format!("http://{host}")
            }
        };
        format!("{origin}{}", self.settings.base_path)
    }
}

/// Validates a study UID path parameter.
pub fn study_uid(raw: &str) -> Result<StudyUid, ApiError> {
    StudyUid::new(raw).map_err(|e| ApiError::bad_request(format!("{raw:?} is not a valid Study Instance UID: {e}")))
}
/// Validates a series UID path parameter.
pub fn series_uid(raw: &str) -> Result<SeriesUid, ApiError> {
    SeriesUid::new(raw).map_err(|e| ApiError::bad_request(format!("{raw:?} is not a valid Series Instance UID: {e}")))
}
/// Validates a SOP Instance UID path parameter.
pub fn instance_uid(raw: &str) -> Result<SopInstanceUid, ApiError> {
    SopInstanceUid::new(raw).map_err(|e| ApiError::bad_request(format!("{raw:?} is not a valid SOP Instance UID: {e}")))
}

/// DICOMweb under the base path and WADO-URI at `/wado`.
pub fn router(archive: Archive, settings: HttpSettings) -> Router {
    router_with(archive, settings, Router::new())
}

/// [`router`] with `other` routes (state applied) merged in: they share the request metrics,
/// the JSON 404/405 answers and CORS.
pub fn router_with(archive: Archive, settings: HttpSettings, other: Router) -> Router {
    let metrics = HttpMetrics::register(archive.metrics().registry());
    let cors = cors_layer(&settings.cors_allowed_origins);
    let state = AppState { archive, settings: Arc::new(settings), metrics };
    let base = state.settings.base_path.clone();
    let mut app = Router::new()
        .nest(&base, routes::dicomweb())
        .merge(routes::outside_base())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .merge(other)
        .layer(axum::middleware::from_fn_with_state(state, observe));
    if let Some(cors) = cors {
        app = app.layer(cors);
    }
    app
}

fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::ACCEPT, header::CONTENT_TYPE, header::AUTHORIZATION])
            .expose_headers([header::CONTENT_TYPE, header::WARNING, header::CONTENT_LOCATION])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no resource {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
}

/// Counts every request by route, method and status, and times it.
/// The request header in which the middleware passes the client's address to handlers (any
/// value a client sends under this name is replaced).
pub const PEER_HEADER: &str = "x-vna-peer";

/// The client's address as the middleware recorded it.
pub fn peer_of(headers: &HeaderMap) -> String {
    headers.get(PEER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

/// Counts every request by route, method and status, and times it; records the peer address.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    request.headers_mut().remove(PEER_HEADER);
    if let Ok(v) = axum::http::HeaderValue::from_str(&peer) {
        request.headers_mut().insert(PEER_HEADER, v);
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    state.metrics.requests.with_label_values(&[&route, &method, &status]).inc();
    state.metrics.latency.with_label_values(&[&route]).observe(started.elapsed().as_secs_f64());
    response.into_response()
}
