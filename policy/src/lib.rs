//! # policy
//!
//! The retention-policy engine of vna: administrators write ordered rules and retention floors
//! in TOML ([`rules`]); [`evaluate::evaluate`] is a pure function from a study's
//! [`facts::StudyFacts`], the rules, the legal holds and a date to a [`evaluate::Decision`] with
//! its explanation; [`simulate`] counts what the archive would hold at any date;
//! [`scheduler`] keeps the rules in force and turns decisions into the core's migration
//! and deletion jobs.

#![warn(missing_docs)]

pub mod evaluate;
pub mod facts;
pub mod period;
pub mod rules;
pub mod scheduler;
pub mod simulate;

pub use evaluate::{evaluate, Decision, Outcome};
pub use facts::StudyFacts;
pub use rules::{parse_rules, RuleFileError, RuleRef, RuleSet};
