//! Crash points for tests: `VNA_FAILPOINTS=name,name` makes the process abort (as a power
//! cut or `kill -9` would stop it) when it reaches a named point. Unset, a check is one
//! load of a cached empty list. The variable is not a configuration override (see
//! [`crate::config::NOT_OVERRIDES`]).
//!
//! Points: `migrate.after_intent`, `migrate.after_copy`, `migrate.after_commit` and
//! `migrate.after_source_delete` (see [`crate::lifecycle`]); tier plugins add their own
//! (`warm.compact.after_copy`, `warm.compact.after_repoint`, `s3.after_bundle_upload`,
//! `s3.after_index_upload`).

use std::sync::OnceLock;

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("VNA_FAILPOINTS")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    })
}

/// Aborts the process if the point `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|a| a == name) {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}
