//! The OpenAPI description of the admin API, generated from the handlers' annotations and the
//! contract's types; `docs/openapi.json` is this document (a test fails when it drifts).

use std::sync::OnceLock;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's frame: title, tags and the bearer scheme; the paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vna admin API",
        description = "Administration of the vna archive: what it holds, tier moves, the integrity scrub, \
retention (deletions, legal holds, rules, simulation, explanation), the audit trail, patient identity links \
and pulls from legacy archives. Routes marked with the bearer scheme need `Authorization: Bearer TOKEN` of a \
user under `[[auth.users]]` whose role is enough (reader < auditor < admin): 401 without a known token, 403 \
when the role is too low. Errors are JSON `ErrorBody`s."
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "health", description = "Liveness, readiness, metrics and this description"),
        (name = "archive", description = "What the archive holds"),
        (name = "tiers", description = "Tier moves of studies and the integrity scrub"),
        (name = "retention", description = "Deletions and legal holds"),
        (name = "policy", description = "The retention rules"),
        (name = "audit", description = "The audit trail"),
        (name = "patients", description = "Patient identity links"),
        (name = "pulls", description = "Pulls from legacy archives"),
    ),
    components(schemas(crate::types::ErrorBody, crate::types::AuditFormat))
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme the routes refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, doc) = crate::server::routes().split_for_parts();
    doc
}

/// The whole document as pretty JSON, built once.
pub fn json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut text = document().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        text.push('\n');
        text
    })
}
