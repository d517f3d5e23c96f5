//! `vna`: the Vendor Neutral Archive binary. A page of wiring: configuration,
//! logging, the servers and the admin commands; all logic lives in the libraries.

mod admin_cli;
mod config;
mod import;
mod logging;
mod pull_cli;
mod serve;
mod wiring;

use archive_core::audit::ChainVerdict;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// vna — a Vendor Neutral Archive for medical images.
///
/// Stores DICOM objects durably and byte-exact, indexes them for C-FIND and QIDO-RS,
/// and serves them back over DIMSE and DICOMweb. Configuration comes from a TOML file
/// (--config) with VNA_<SECTION>__<KEY> environment overrides, e.g.
/// VNA_DICOM__LISTEN=127.0.0.1:11112; without a file, embedded defaults apply and data
/// lives under ./vna-data.
#[derive(Debug, Parser)]
#[command(name = "vna", version, propagate_version = true)]
struct Cli {
    /// TOML configuration file (embedded defaults when absent).
    #[arg(long, short, global = true, env = "VNA_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    server: admin_cli::ServerArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the archive: the DICOM (DIMSE) and HTTP servers, until SIGINT or SIGTERM.
    Serve,
    /// Bulk-ingest folder trees of DICOM files (the first step of a PACS migration).
    ///
    /// Walks each DIR recursively, ingests every DICOM file durably, skips and reports
    /// files that are not DICOM or are broken, and prints a summary. Exits with status 1
    /// when any file was rejected. The archive must not be running (it holds the catalog).
    Import(import::ImportArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Check and export the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Retention rules: check a file, simulate a date, explain a study's decision, apply, reload.
    #[command(subcommand)]
    Policy(admin_cli::PolicyCommand),
    /// Mark a study for deletion (hidden and purged after the grace period; needs an admin token).
    Delete(admin_cli::DeleteArgs),
    /// List, inspect and undo deletions; print deletion certificates.
    #[command(subcommand)]
    Deletions(admin_cli::DeletionsCommand),
    /// Legal holds: no deletion touches what they cover while they stand.
    #[command(subcommand)]
    Hold(admin_cli::HoldCommand),
    /// Storage tiers of the running archive: list, usage, move a study, integrity scrub.
    #[command(subcommand)]
    Tier(admin_cli::TierCommand),
    /// Pull studies from a legacy PACS ([[pull.sources]]) into vna: start, follow, reports.
    #[command(subcommand, alias = "migrate")]
    Pull(pull_cli::PullCommand),
    /// Patient identity: link (merge) two identities, undo a link, list links.
    #[command(subcommand)]
    Patient(admin_cli::PatientCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (file, then environment overrides) as TOML, with
    /// tokens, secrets and passwords shown as "<redacted>".
    Show {
        /// Print secrets as they are (e.g. to write a complete configuration file).
        #[arg(long)]
        reveal_secrets: bool,
    },
    /// Validate the configuration and exit 0 when it is usable.
    Check,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of the audit trail; names the first altered, removed or reordered
    /// record. Reads the catalog directly: the archive must be stopped (or pass --server to ask
    /// the running one).
    Verify,
    /// Export audit records (JSON or CSV) from the running archive; needs an auditor's token.
    Export(admin_cli::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = config::VnaConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Config(ConfigCommand::Show { reveal_secrets }) => {
            print!(
                "{}",
                if reveal_secrets {
                    archive_core::config::to_toml(&config)
                } else {
                    archive_core::config::to_toml_redacted(&config)
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check) => {
            println!("configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            logging::init(&config.log)?;
            runtime()?.block_on(serve::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(args) => {
            logging::init_quiet(&config.log)?;
            runtime()?.block_on(import::run(config, args))
        }
        Command::Policy(cmd) => admin_cli::policy(&config, &cli.server, cmd),
        Command::Delete(args) => admin_cli::delete(&config, &cli.server, args),
        Command::Deletions(cmd) => admin_cli::deletions(&config, &cli.server, cmd),
        Command::Hold(cmd) => admin_cli::hold(&config, &cli.server, cmd),
        Command::Tier(cmd) => admin_cli::tier(&config, &cli.server, cmd),
        Command::Pull(cmd) => pull_cli::pull(&config, &cli.server, cmd),
        Command::Patient(cmd) => admin_cli::patient(&config, &cli.server, cmd),
        Command::Audit(AuditCommand::Export(args)) => admin_cli::export(&config, &cli.server, args),
        Command::Audit(AuditCommand::Verify) if cli.server.server.is_some() => {
            admin_cli::verify_remote(&config, &cli.server)
        }
        Command::Audit(AuditCommand::Verify) => runtime()?.block_on(async {
            let (archive, _) = wiring::open_archive(config).await?;
            let verdict = archive_core::catalog::Catalog::verify_audit(archive.catalog())?;
            archive.close().await?;
            match verdict {
                ChainVerdict::Intact { records } => {
                    println!("audit trail intact: {records} records verified");
                    Ok(ExitCode::SUCCESS)
                }
                ChainVerdict::Broken(e) => {
                    println!("audit trail BROKEN: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
