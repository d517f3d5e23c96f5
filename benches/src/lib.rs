//! Benchmark machinery for vna: a deterministic dataset generator (also used by tests) and
//! the protocol clients of the load generator.
#![warn(missing_docs)]

pub mod dataset;
pub mod dimse_load;
pub mod find;
pub mod limits;
