//! Benchmark machinery for vna: a deterministic dataset generator (also used by tests).
#![warn(missing_docs)]

pub mod dataset;
