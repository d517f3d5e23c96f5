//! Storage tier implementations for vna: one module per tier kind, each implementing
//! [`archive_core::tier::Tier`].
//!
//! # Map of the crate
//! - [`hot`]: [`hot::HotTier`], one plain file per object under a local root directory,
//!   with the object's BLAKE3 checksum in a user extended attribute. Linux only.
//! - [`warm`]: [`warm::WarmTier`], objects zstd-compressed in append-only segment files,
//!   located through a RocksDB index.
//! - [`s3`]: [`s3::S3Tier`], bundles of objects in any S3-compatible store, archive classes
//!   with restore.
//! - [`tape`]: [`tape::TapeTier`], a tape library simulated on local disk: objects appended
//!   to fixed-size volume files, catalogued in RocksDB, read only after a recall stages them.
//! - [`registry`]: builds tiers by kind from `[tiers.NAME]` tables.
//!
//! Every tier runs [`archive_core::tier::conformance`] in its integration tests
//! (`tests/<tier>_conformance.rs`).

#![warn(missing_docs)]

pub mod hot;
pub mod registry;
pub mod s3;
pub mod tape;
pub mod warm;
