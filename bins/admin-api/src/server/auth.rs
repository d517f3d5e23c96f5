//! Who may call a route, decided by the route's signature.
//!
//! The router's state is [`Gate`], whose archive handle only this module can open. A handler
//! reaches the archive through one of two extractors, so choosing an access level is part of
//! writing the handler and cannot be forgotten:
//! - [`Authorized<R>`]: the request carries `Authorization: Bearer TOKEN` of a user under
//!   `[[auth.users]]` whose role is at least `R` ([`Reader`], [`Auditor`] or [`Admin`]);
//!   otherwise 401 (no or unknown token) or 403 (role too low). The caller's name is what the
//!   audit trail records as "who".
//! - [`Public`]: the route needs no identity (health, counts, job progress).

use super::error::ApiError;
use super::AdminState;
use archive_core::config::Role;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use std::marker::PhantomData;
use std::net::SocketAddr;

/// The router's state: the admin state, opened only by [`Authorized`] and [`Public`].
#[derive(Clone)]
pub struct Gate(AdminState);

impl Gate {
    /// Wraps the state for the router.
    pub(crate) fn new(state: AdminState) -> Self {
        Self(state)
    }
}

/// An access level a route requires.
pub trait Access: Send + Sync + 'static {
    /// The lowest role allowed.
    const ROLE: Role;
}

/// Read-only administration: status, jobs, simulations, explanations.
pub struct Reader;
/// Compliance: the audit trail, deletions and their certificates.
pub struct Auditor;
/// Changes: deletions, holds, rules, tier moves, pulls, links.
pub struct Admin;

impl Access for Reader {
    const ROLE: Role = Role::Reader;
}
impl Access for Auditor {
    const ROLE: Role = Role::Auditor;
}
impl Access for Admin {
    const ROLE: Role = Role::Admin;
}

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

/// A request whose caller holds at least the role `A` requires.
pub struct Authorized<A: Access> {
    /// The archive and its services.
    pub state: AdminState,
    /// Who is asking.
    pub caller: Caller,
    _access: PhantomData<A>,
}

/// A request to a route that needs no identity.
pub struct Public {
    /// The archive and its services.
    pub state: AdminState,
}

fn peer_address(parts: &Parts) -> String {
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default()
}

fn bearer_token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

impl<A: Access> FromRequestParts<Gate> for Authorized<A> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gate: &Gate) -> Result<Self, ApiError> {
        let state = gate.0.clone();
        let address = peer_address(parts);
        let Some(token) = bearer_token(parts) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this request needs an identity: send Authorization: Bearer TOKEN of a user under [[auth.users]]",
            ));
        };
        let Some(user) = state.archive.config().auth.user_of(token) else {
            tracing::warn!(peer = %address, "admin request with an unknown bearer token");
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unknown bearer token"));
        };
        if user.role < A::ROLE {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("user {} is {:?}; this request needs the {:?} role", user.name, user.role, A::ROLE),
            ));
        }
        let caller = Caller { name: user.name.clone(), role: user.role, address };
        Ok(Self { state, caller, _access: PhantomData })
    }
}

impl FromRequestParts<Gate> for Public {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, gate: &Gate) -> Result<Self, Self::Rejection> {
        Ok(Self { state: gate.0.clone() })
    }
}
