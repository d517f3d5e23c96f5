//! Errors of the HTTP API, answered as JSON: `{"status": 404, "error": "Not Found", "message": "..."}`.

use archive_core::catalog::CatalogError;
use archive_core::retrieve::RetrieveError;
use archive_core::tier::TierError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// 406.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, message)
    }
    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }
    /// 500: the archive failed (never used for a client's mistake).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

/// The JSON body of an error answer.
pub fn error_body(status: StatusCode, message: &str) -> String {
    serde_json::json!({
        "status": status.as_u16(),
        "error": status.canonical_reason().unwrap_or("Error"),
        "message": message,
    })
    .to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "request failed");
        }
        let mut rsp = (self.status, error_body(self.status, &self.message)).into_response();
        rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        rsp
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::InvalidQuery(m) => ApiError::bad_request(m),
            CatalogError::Closed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the archive is shutting down"),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<RetrieveError> for ApiError {
    fn from(e: RetrieveError) -> Self {
        match e {
            RetrieveError::NotFound(what) => ApiError::not_found(format!("{what} is not in the archive")),
            RetrieveError::Catalog(c) => c.into(),
            RetrieveError::Unreadable { last_error, sop_instance } if last_error.is_transient() => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("instance {sop_instance} is on a storage tier that is unavailable now: {last_error}"),
            ),
            RetrieveError::Unreadable { last_error: TierError::NeedsRecall(_), sop_instance } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("instance {sop_instance} must be recalled from cold storage before it can be read"),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("worker failed: {e}"))
    }
}

impl From<archive_core::lifecycle::LifecycleError> for ApiError {
    fn from(e: archive_core::lifecycle::LifecycleError) -> Self {
        use archive_core::lifecycle::LifecycleError;
        let status = match &e {
            LifecycleError::UnknownTier(_) | LifecycleError::SameTier(_) => StatusCode::BAD_REQUEST,
            LifecycleError::StudyNotFound(_) | LifecycleError::JobNotFound(_) => StatusCode::NOT_FOUND,
            LifecycleError::Busy { .. } => StatusCode::CONFLICT,
            LifecycleError::RecallFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            LifecycleError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}
