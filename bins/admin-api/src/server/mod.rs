//! The admin API server: an axum router over the archive, its policy engine and its pull
//! service, with the OpenAPI description built from the same handlers.
//!
//! Each handler module covers one area and reads like a translation table: check the caller
//! (by its extractor, see [`auth`]), parse the typed request, call the core, convert the
//! answer (see `convert`). Errors become JSON answers in one place ([`error`]).

pub mod auth;
mod convert;
pub mod error;
pub mod extract;
mod handlers;

use crate::openapi::ApiDoc;
use archive_core::Archive;
use axum::Router;
use prometheus::{IntGauge, IntGaugeVec, Opts};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// What the admin handlers work on.
#[derive(Clone)]
pub struct AdminState {
    /// The archive.
    pub archive: Archive,
    /// The retention policy in force (absent: the policy routes answer 503).
    pub policy: Option<policy::scheduler::PolicyEngine>,
    /// Pulls from legacy archives (absent: the pull routes answer 503).
    pub pulls: Option<pull::Pulls>,
    gauges: Gauges,
}

/// Gauges refreshed at each scrape of `/metrics`.
#[derive(Clone)]
struct Gauges {
    tier_objects: IntGaugeVec,
    tier_bytes: IntGaugeVec,
    commit_queue: IntGauge,
}

impl Gauges {
    fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let g = Self {
            tier_objects: IntGaugeVec::new(Opts::new("vna_tier_objects", "Objects held per tier"), &["tier"])?,
            tier_bytes: IntGaugeVec::new(Opts::new("vna_tier_bytes", "Bytes held per tier"), &["tier"])?,
            commit_queue: IntGauge::new("vna_catalog_commit_queue", "Catalog commits waiting for the committer")?,
        };
        for c in [
            Box::new(g.tier_objects.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(g.tier_bytes.clone()),
            Box::new(g.commit_queue.clone()),
        ] {
            // A second router on the same registry (tests) reuses the first registration.
            let _ = registry.register(c);
        }
        Ok(g)
    }
}

impl AdminState {
    /// The state over an archive and its optional services; registers the admin gauges in the
    /// archive's metrics registry.
    pub fn new(
        archive: Archive,
        policy: Option<policy::scheduler::PolicyEngine>,
        pulls: Option<pull::Pulls>,
    ) -> Result<Self, prometheus::Error> {
        let gauges = Gauges::register(archive.metrics().registry())?;
        Ok(Self { archive, policy, pulls, gauges })
    }
}

/// The admin routes (`/api/...`, `/healthz`, `/readyz`, `/metrics`) with their OpenAPI
/// description; the state is applied, so the router merges into any other.
pub fn router(state: AdminState) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(auth::Gate::new(state))
}

/// The routes and the OpenAPI description, both from the handlers' annotations.
pub(crate) fn routes() -> OpenApiRouter<auth::Gate> {
    handlers::register(OpenApiRouter::with_openapi(ApiDoc::openapi()))
}
