//! The handlers, one module per area, and the route table built from their annotations.

mod archive;
mod audit;
mod health;
mod lifecycle;
mod patients;
mod policy;
mod pulls;
mod retention;

use super::auth::Gate;
use super::error::ApiError;
use archive_core::uid::StudyUid;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Every route of the admin API. Routes of one path with several methods are registered
/// together (utoipa-axum's rule).
pub(super) fn register(router: OpenApiRouter<Gate>) -> OpenApiRouter<Gate> {
    router
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi))
        .routes(routes!(archive::stats))
        .routes(routes!(archive::study))
        .routes(routes!(lifecycle::move_study))
        .routes(routes!(lifecycle::jobs))
        .routes(routes!(lifecycle::job))
        .routes(routes!(lifecycle::scrub_status, lifecycle::start_scrub))
        .routes(routes!(retention::delete_study))
        .routes(routes!(retention::deletions))
        .routes(routes!(retention::deletion))
        .routes(routes!(retention::undo_deletion))
        .routes(routes!(retention::certificate))
        .routes(routes!(retention::holds, retention::set_hold))
        .routes(routes!(retention::release_hold))
        .routes(routes!(policy::show, policy::replace))
        .routes(routes!(policy::reload))
        .routes(routes!(policy::evaluate))
        .routes(routes!(policy::simulate_in_force, policy::simulate_candidate))
        .routes(routes!(policy::explain))
        .routes(routes!(audit::export))
        .routes(routes!(audit::verify))
        .routes(routes!(patients::link))
        .routes(routes!(patients::links))
        .routes(routes!(patients::undo_link))
        .routes(routes!(pulls::list, pulls::start))
        .routes(routes!(pulls::show))
        .routes(routes!(pulls::studies))
        .routes(routes!(pulls::report))
        .routes(routes!(pulls::cancel))
}

/// Validates a Study Instance UID path parameter.
fn study_uid(raw: &str) -> Result<StudyUid, ApiError> {
    StudyUid::new(raw).map_err(|e| ApiError::bad_request(format!("{raw:?} is not a valid Study Instance UID: {e}")))
}

/// Parses a numeric id path parameter.
fn numeric_id(what: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::bad_request(format!("{raw:?} is not a {what} id")))
}

/// A JSON answer with a status and a `Location` header.
fn created<T: serde::Serialize>(status: StatusCode, body: T, location: String) -> Response {
    let mut rsp = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        rsp.headers_mut().insert(header::LOCATION, v);
    }
    rsp
}

/// Parses a date (YYYY-MM-DD, midnight UTC) or an RFC 3339 time.
fn parse_time(field: &str, raw: &str) -> Result<time::OffsetDateTime, ApiError> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(t);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(raw, &fmt)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| ApiError::bad_request(format!("{field}: {raw:?} is not a date (YYYY-MM-DD) nor an RFC 3339 time")))
}
