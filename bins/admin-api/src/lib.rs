//! vna's admin API, one contract for the server, the CLI and any UI.
//!
//! - [`types`]: every request and response body as serde types: the contract.
//! - [`server`]: the axum routes over the archive, its policy engine and its pull service;
//!   who may call a route is part of its handler's signature ([`server::auth`]).
//! - [`client`]: a typed blocking client, one method per route, used by the `vna` CLI.
//! - [`openapi`]: the OpenAPI document generated from the handlers and types
//!   (`docs/openapi.json`, served at `/api/openapi.json`).
//!
//! The crate depends on the core, the policy engine and the pull service; the DICOMweb door
//! knows none of them.

pub mod client;
pub mod openapi;
pub mod server;
pub mod types;

pub use client::{AdminClient, ClientError};
pub use server::{router, AdminState};
