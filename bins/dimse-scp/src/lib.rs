//! # dimse-scp
//!
//! vna's DICOM network services: association handling on top of `dicom-ul`, the DIMSE
//! message layer of the `dimse` crate, and thin service handlers over `archive-core`.
//!
//! ## Map
//! - [`server`]: the listener: TCP_NODELAY, association cap, graceful shutdown.
//! - [`access`]: which calling AE titles are accepted.
//! - [`association`]: one association: PDUs in, messages assembled, dispatched, answered.
//! - [`store`], [`find`], [`identifier`], [`retrieve`]: C-STORE, C-FIND, C-GET and C-MOVE.
//! - [`commitment`]: Storage Commitment Push Model (N-ACTION, then N-EVENT-REPORT).
//! - [`metrics`]: Prometheus counters and histograms.
//! - `wire`: DIMSE messages framed straight onto the TCP stream (one copy per byte).
//!
//! ## Invariants
//! - A C-STORE success (0000) is sent only after the core acknowledged the instance as durable.
//! - A malformed PDU or message ends only its own association; the server keeps serving.

#![warn(missing_docs)]

pub mod access;
pub mod association;
pub mod commitment;
pub mod config;
pub mod find;
pub mod identifier;
pub mod metrics;
pub mod retrieve;
pub mod server;
pub mod store;
mod wire;

pub use server::{DimseServer, ServerSettings};

/// Verification SOP Class.
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
/// Patient Root Query/Retrieve Information Model - FIND.
pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
/// Study Root Query/Retrieve Information Model - FIND.
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
