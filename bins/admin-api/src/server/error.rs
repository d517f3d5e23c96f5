//! Errors of the admin API, answered as JSON [`ErrorBody`]s: every core error is mapped to a
//! status here, in one place; a client's mistake is never a 500.

use crate::types::ErrorBody;
use archive_core::catalog::CatalogError;
use archive_core::deletion::DeletionError;
use archive_core::lifecycle::LifecycleError;
use archive_core::patient_link::LinkError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use policy::scheduler::PolicyError;
use pull::PullError;

/// An error answer of the admin API.
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
    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
    /// 500: the archive failed (never used for a client's mistake).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            status: self.status.as_u16(),
            error: self.status.canonical_reason().unwrap_or("Error").to_string(),
            message: self.message.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "admin request failed");
        }
        (self.status, Json(self.body())).into_response()
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::InvalidQuery(m) => ApiError::bad_request(m),
            CatalogError::Closed => ApiError::unavailable("the archive is shutting down"),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("worker failed: {e}"))
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
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

impl From<DeletionError> for ApiError {
    fn from(e: DeletionError) -> Self {
        let status = match &e {
            DeletionError::StudyNotFound(_)
            | DeletionError::NotFound(_)
            | DeletionError::HoldNotFound(_)
            | DeletionError::InstanceNotFound(_) => StatusCode::NOT_FOUND,
            DeletionError::Held { .. } | DeletionError::AlreadyMarked { .. } | DeletionError::NotUndoable { .. } => {
                StatusCode::CONFLICT
            }
            DeletionError::Invalid(_) => StatusCode::BAD_REQUEST,
            DeletionError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        let status = match &e {
            PolicyError::Rules(_) => StatusCode::UNPROCESSABLE_ENTITY,
            PolicyError::NoRuleFile => StatusCode::CONFLICT,
            PolicyError::File { .. } | PolicyError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        let status = match &e {
            LinkError::SameIdentity(_) | LinkError::Invalid(_) => StatusCode::BAD_REQUEST,
            LinkError::UnknownPatient(_) | LinkError::NotFound(_) => StatusCode::NOT_FOUND,
            LinkError::NotUndoable { .. } => StatusCode::CONFLICT,
            LinkError::Catalog(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<PullError> for ApiError {
    fn from(e: PullError) -> Self {
        let status = match &e {
            PullError::UnknownSource(_) | PullError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            PullError::NotFound(_) => StatusCode::NOT_FOUND,
            PullError::Busy { .. } | PullError::Finished(_) => StatusCode::CONFLICT,
            PullError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            PullError::Network(_) | PullError::Remote(_) => StatusCode::BAD_GATEWAY,
            PullError::Archive(_) | PullError::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}
