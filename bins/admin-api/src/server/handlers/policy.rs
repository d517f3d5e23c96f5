//! The retention policy: the rules in force, replacing and reloading them, passes, simulations
//! and explanations.

use super::{parse_time, study_uid};
use crate::server::auth::{Admin, Authorized, Reader};
use crate::server::convert;
use crate::server::error::ApiError;
use crate::server::extract::{PathParam, QueryParams, TextBody};
use crate::server::AdminState;
use crate::types::{ErrorBody, Explanation, PassReport, PolicyQuery, PolicyView, RulesAccepted, SimulationReport};
use axum::Json;
use policy::scheduler::{PolicyEngine, PolicyError};
use time::OffsetDateTime;

fn engine(state: &AdminState) -> Result<PolicyEngine, ApiError> {
    state.policy.clone().ok_or_else(|| ApiError::unavailable("the policy engine is not running"))
}

fn at(q: &PolicyQuery) -> Result<OffsetDateTime, ApiError> {
    match &q.at {
        Some(v) => parse_time("at", v),
        None => Ok(OffsetDateTime::now_utc()),
    }
}

/// The rules in force, the tiers they may name and the last pass.
#[utoipa::path(get, path = "/api/policy", tag = "policy", security(("bearer" = [])),
    responses((status = 200, body = PolicyView), (status = 503, description = "no policy engine", body = ErrorBody)))]
pub(super) async fn show(a: Authorized<Reader>) -> Result<Json<PolicyView>, ApiError> {
    let engine = engine(&a.state)?;
    let rules_file = a.state.archive.config().retention.rules_file.as_ref().map(|p| p.display().to_string());
    Ok(Json(convert::policy_view(&engine.rules(), rules_file, engine.known_tiers(), engine.last_pass())))
}

/// Replace the rules in force with a rule file (TOML); refused, with its lines named, when invalid.
#[utoipa::path(put, path = "/api/policy", tag = "policy", security(("bearer" = [])),
    request_body(content = String, content_type = "application/toml", description = "the rule file"),
    responses(
        (status = 200, body = RulesAccepted),
        (status = 422, description = "invalid rules; the rules in force stay", body = ErrorBody),
    ))]
pub(super) async fn replace(a: Authorized<Admin>, TextBody(text): TextBody) -> Result<Json<RulesAccepted>, ApiError> {
    let rules = engine(&a.state)?.replace_rules(&text, &a.caller.name, &a.caller.address).await?;
    Ok(Json(RulesAccepted::from(rules.as_ref())))
}

/// Re-read the configured rule file.
#[utoipa::path(post, path = "/api/policy/reload", tag = "policy", security(("bearer" = [])),
    responses((status = 200, body = RulesAccepted), (status = 409, description = "no rule file configured", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(super) async fn reload(a: Authorized<Admin>) -> Result<Json<RulesAccepted>, ApiError> {
    let rules = engine(&a.state)?.reload(&a.caller.name, &a.caller.address).await?;
    Ok(Json(RulesAccepted::from(rules.as_ref())))
}

/// Evaluate every study now and submit the resulting moves and deletions.
#[utoipa::path(post, path = "/api/policy/evaluate", tag = "policy", security(("bearer" = [])),
    responses((status = 200, body = PassReport)))]
pub(super) async fn evaluate(a: Authorized<Admin>) -> Result<Json<PassReport>, ApiError> {
    tracing::info!(by = %a.caller.name, "policy pass requested");
    Ok(Json(engine(&a.state)?.run_pass().await.into()))
}

async fn simulate(
    state: &AdminState,
    q: PolicyQuery,
    candidate_text: Option<String>,
) -> Result<Json<SimulationReport>, ApiError> {
    let engine = engine(state)?;
    let at = at(&q)?;
    let limit = q.limit.unwrap_or(100);
    let candidate = match candidate_text {
        Some(text) => Some(policy::parse_rules(&text, engine.known_tiers()).map_err(PolicyError::from)?),
        None => None,
    };
    let report = tokio::task::spawn_blocking(move || engine.simulate(candidate.as_ref(), at, limit)).await??;
    Ok(Json(report.into()))
}

/// What the rules in force would do at a date; changes nothing.
#[utoipa::path(get, path = "/api/policy/simulate", tag = "policy", security(("bearer" = [])),
    params(PolicyQuery),
    responses((status = 200, body = SimulationReport)))]
pub(super) async fn simulate_in_force(
    a: Authorized<Reader>,
    QueryParams(q): QueryParams<PolicyQuery>,
) -> Result<Json<SimulationReport>, ApiError> {
    simulate(&a.state, q, None).await
}

/// What a candidate rule file (TOML body) would do at a date; changes nothing.
#[utoipa::path(post, path = "/api/policy/simulate", tag = "policy", security(("bearer" = [])),
    params(PolicyQuery),
    request_body(content = String, content_type = "application/toml", description = "the candidate rule file"),
    responses((status = 200, body = SimulationReport), (status = 422, description = "invalid rules", body = ErrorBody)))]
pub(super) async fn simulate_candidate(
    a: Authorized<Reader>,
    QueryParams(q): QueryParams<PolicyQuery>,
    TextBody(text): TextBody,
) -> Result<Json<SimulationReport>, ApiError> {
    let candidate = if text.trim().is_empty() { None } else { Some(text) };
    simulate(&a.state, q, candidate).await
}

/// One study's decision: its facts, each rule tried with each condition, floors and holds.
#[utoipa::path(get, path = "/api/policy/explain/{study}", tag = "policy", security(("bearer" = [])),
    params(("study" = String, Path, description = "Study Instance UID"), PolicyQuery),
    responses((status = 200, body = Explanation), (status = 404, body = ErrorBody)))]
pub(super) async fn explain(
    a: Authorized<Reader>,
    PathParam(raw): PathParam,
    QueryParams(q): QueryParams<PolicyQuery>,
) -> Result<Json<Explanation>, ApiError> {
    let engine = engine(&a.state)?;
    let uid = study_uid(&raw)?;
    let at = at(&q)?;
    let found = tokio::task::spawn_blocking(move || engine.explain(&uid, at)).await??;
    let Some((facts, decision)) = found else {
        return Err(ApiError::not_found(format!("study {raw} is not in the archive")));
    };
    Ok(Json(convert::explanation(&facts, &decision)))
}
