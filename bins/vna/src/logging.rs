//! Structured logs with `tracing`: text for people, JSON for collectors.

use crate::config::LogConfig;
use tracing_subscriber::EnvFilter;

/// Logs to stderr at the configured level and format (`RUST_LOG` overrides the level).
pub fn init(cfg: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&cfg.level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if cfg.format == "json" { builder.json().try_init() } else { builder.try_init() };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// Like [`init`] but only warnings and errors, for CLI commands with their own output.
pub fn init_quiet(cfg: &LogConfig) -> anyhow::Result<()> {
    let quiet = LogConfig { level: "error".into(), format: cfg.format.clone() };
    init(&quiet)
}
