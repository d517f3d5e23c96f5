//! Bearer-token identity for the admin API.
//!
//! Requests that change state (deletion, undo, legal holds, rule changes, migrations, scrubs)
//! or read the audit trail carry `Authorization: Bearer TOKEN` of a user configured under
//! `[[auth.users]]`; the user's name is what the audit trail records as "who". Without a token
//! the answer is 401; with a token whose role is not enough, 403.

use crate::error::ApiError;
use crate::AppState;
use archive_core::config::Role;
use axum::http::{header, HeaderMap, StatusCode};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user's name.
    pub name: String,
    /// The user's role.
    pub role: Role,
    /// The client's address.
    pub address: String,
}

/// Checks the request's bearer token and that its user has at least `needed`.
pub fn require(state: &AppState, headers: &HeaderMap, peer: &str, needed: Role) -> Result<Caller, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(token) = token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this request needs an identity: send Authorization: Bearer TOKEN of a user under [[auth.users]]",
        ));
    };
    let Some(user) = state.archive.config().auth.user_of(token) else {
        tracing::warn!(peer, "admin request with an unknown bearer token");
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unknown bearer token"));
    };
    if user.role < needed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("user {} is {:?}; this request needs the {:?} role", user.name, user.role, needed),
        ));
    }
    Ok(Caller { name: user.name.clone(), role: user.role, address: peer.to_string() })
}
