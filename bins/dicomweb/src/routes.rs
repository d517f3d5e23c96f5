//! The route table: paths to handlers, with path parameters validated as UIDs.

use crate::error::ApiError;
use crate::qido::{search, Scope};
use crate::wado::Target;
use crate::{instance_uid, series_uid, stow, study_uid, wado, wado_uri, AppState};
use archive_core::attribute::Level;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, RawPathParams, RawQuery, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;

/// Path parameters, percent-decoded; a path that cannot be decoded is a 400.
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("malformed path: {}", e.body_text())))?;
        Ok(Params(raw.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()))
    }
}

impl Params {
    fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }
    fn scope(&self) -> Result<Scope, ApiError> {
        Ok(Scope {
            study: self.0.iter().any(|(k, _)| k == "study").then(|| study_uid(self.get("study"))).transpose()?,
            series: self.0.iter().any(|(k, _)| k == "series").then(|| series_uid(self.get("series"))).transpose()?,
        })
    }
    fn target(&self) -> Result<Target, ApiError> {
        let study = study_uid(self.get("study"))?;
        if self.0.iter().all(|(k, _)| k != "series") {
            return Ok(Target::Study(study));
        }
        let series = series_uid(self.get("series"))?;
        if self.0.iter().all(|(k, _)| k != "instance") {
            return Ok(Target::Series(study, series));
        }
        Ok(Target::Instance(study, series, instance_uid(self.get("instance"))?))
    }
}

/// The peer's address, when the server records it.
pub struct Peer(Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}

async fn search_at(
    level: Level,
    s: AppState,
    p: Params,
    q: Option<String>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    search(s, level, p.scope()?, q, h).await
}

/// The DICOMweb routes, nested under the base path.
pub fn dicomweb() -> Router<AppState> {
    const INSTANCE: &str = "/studies/{study}/series/{series}/instances/{instance}";
    Router::new()
        .route(
            "/studies",
            get(|State(s), p: Params, RawQuery(q), h| search_at(Level::Study, s, p, q, h))
                .post(|State(s), Peer(peer), h, body: Body| stow::store(s, None, peer, h, body)),
        )
        .route(
            "/studies/{study}",
            get(|State(s), p: Params, h| async move { wado::retrieve(s, p.target()?, h).await }).post(
                |State(s), p: Params, Peer(peer), h, body: Body| async move {
                    let study = study_uid(p.get("study"))?;
                    stow::store(s, Some(study), peer, h, body).await
                },
            ),
        )
        .route("/studies/{study}/metadata", get(metadata))
        .route(
            "/studies/{study}/series",
            get(|State(s), p: Params, RawQuery(q), h| search_at(Level::Series, s, p, q, h)),
        )
        .route(
            "/studies/{study}/instances",
            get(|State(s), p: Params, RawQuery(q), h| search_at(Level::Instance, s, p, q, h)),
        )
        .route("/studies/{study}/series/{series}", get(retrieve))
        .route("/studies/{study}/series/{series}/metadata", get(metadata))
        .route(
            "/studies/{study}/series/{series}/instances",
            get(|State(s), p: Params, RawQuery(q), h| search_at(Level::Instance, s, p, q, h)),
        )
        .route(INSTANCE, get(retrieve))
        .route(&format!("{INSTANCE}/metadata"), get(metadata))
        .route(
            &format!("{INSTANCE}/frames/{{frames}}"),
            get(|State(s), p: Params, h| async move {
                let frames = p.get("frames").to_string();
                wado::frames(s, p.target()?, frames, h).await
            }),
        )
        .route(
            &format!("{INSTANCE}/bulkdata/{{*path}}"),
            get(|State(s), p: Params, h| async move {
                let path = p.get("path").to_string();
                wado::bulkdata(s, p.target()?, path, h).await
            }),
        )
        .route("/series", get(|State(s), p: Params, RawQuery(q), h| search_at(Level::Series, s, p, q, h)))
        .route("/instances", get(|State(s), p: Params, RawQuery(q), h| search_at(Level::Instance, s, p, q, h)))
        .route("/wado", get(|State(s), RawQuery(q), h: HeaderMap| wado_uri::wado(s, q, h)))
}

async fn retrieve(State(s): State<AppState>, p: Params, h: HeaderMap) -> Result<Response, ApiError> {
    wado::retrieve(s, p.target()?, h).await
}

async fn metadata(State(s): State<AppState>, p: Params, h: HeaderMap) -> Result<Response, ApiError> {
    wado::metadata(s, p.target()?, h).await
}

/// Routes outside the DICOMweb base: WADO-URI at `/wado`.
pub fn outside_base() -> Router<AppState> {
    Router::new().route("/wado", get(|State(s), RawQuery(q), h: HeaderMap| wado_uri::wado(s, q, h)))
}
