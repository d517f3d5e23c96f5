//! # archive-core
//!
//! The core of vna, a Vendor Neutral Archive for medical images. It knows no storage
//! backend, no network protocol and no binary: tiers plug in through [`tier::Tier`],
//! protocols call [`archive::Archive`].
//!
//! ## Map
//! - [`uid`], [`attribute`], [`model`]: typed identifiers, the attributes the catalog holds, records.
//! - [`parse`], [`walk`]: reading what indexing needs from a DICOM object.
//! - [`matching`], [`query`]: DICOM matching rules (PS3.4 C.2.2.2) and the query model.
//! - [`catalog`]: the catalog trait and its RocksDB engine (group commit, indexes, intents).
//! - [`tier`]: the tier trait, its conformance suite, an in-memory tier, the configured set ([`tier::TierSet`]).
//! - [`ingest`], [`retrieve`]: the two data paths; [`retrieve::Retrieve::select`] is the one
//!   retrieve selection every door uses, through the read view [`visible::Visible`] that leaves
//!   out what deletions hide.
//! - [`dicom_status`]: the one mapping of ingest failures to DICOM storage statuses.
//! - [`audit`]: the hash-chained audit trail.
//! - [`format`](mod@format): versioned on-disk formats (version markers read on decode, migrations).
//! - [`config`], [`disk`], [`metrics`]: configuration, free-space floors, Prometheus metrics.
//!
//! ## Invariants
//! 1. Acknowledged means durable: ingest returns only after the object is fsynced in its
//!    tier and the catalog commit's WAL is synced.
//! 2. Byte-exact: the stored object is the received one (a DIMSE data set gets a file
//!    meta header in front; its bytes are untouched).
//! 3. Object before catalog entry; a crash in between leaves an intent that recovery resolves.
//! 4. Bad input changes nothing: a refused object leaves no record and no object.
//! 5. Every change is audited in the same atomic batch as the change.

#![warn(missing_docs)]

pub mod archive;
pub mod attribute;
pub mod audit;
pub mod audit_syslog;
pub mod catalog;
pub mod checksum;
pub mod coerce;
pub mod config;
pub mod deletion;
pub mod dicom_status;
pub mod disk;
pub mod error_chain;
pub mod failpoint;
pub mod format;
pub mod hold;
pub mod ingest;
pub mod lifecycle;
pub mod matching;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod parse;
pub mod patient_link;
pub mod pixels;
pub mod query;
pub mod rate;
pub mod retrieve;
pub mod tier;
pub mod transcode;
pub mod uid;
pub mod visible;
pub mod walk;

pub use archive::Archive;
