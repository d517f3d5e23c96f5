//! `vna migrate ...`: pulls from a legacy PACS through the running archive's admin API
//! (`/api/migrations`), with a progress bar and the reconciliation report at the end.

use crate::admin_cli::{encode, human_bytes, Api, ServerArgs};
use archive_core::config::VnaConfig;
use clap::Subcommand;
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `vna migrate ...`
#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Pull every study of a legacy archive (a [[migration.sources]] entry) with a StudyDate in
    /// the range into vna; studies vna already holds are skipped. Follows the job with a
    /// progress bar, prints the reconciliation report and exits 1 unless both sides agree.
    Pull {
        /// The source's name under [[migration.sources]].
        #[arg(long)]
        from: String,
        /// First study date (YYYY-MM-DD); none: from the beginning.
        #[arg(long)]
        since: Option<String>,
        /// Last study date (YYYY-MM-DD), included; none: to the end.
        #[arg(long)]
        until: Option<String>,
        /// Return once the job is started (follow it with `vna migrate status ID`).
        #[arg(long)]
        no_wait: bool,
    },
    /// Show one job's progress, or every job.
    Status {
        /// Job id.
        id: Option<String>,
    },
    /// Print a job's reconciliation report; exits 1 unless it is reconciled.
    Report {
        /// Job id.
        id: String,
    },
    /// Cancel a job (it stops before its next study).
    Cancel {
        /// Job id.
        id: String,
    },
}

/// Runs `vna migrate ...`.
pub fn migrate(config: &VnaConfig, server: &ServerArgs, cmd: MigrateCommand) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    match cmd {
        MigrateCommand::Pull { from, since, until, no_wait } => {
            let job = api.post("/api/migrations", json!({ "source": from, "since": since, "until": until }))?;
            let id = job["id"].as_u64().unwrap_or(0);
            if no_wait {
                api.print_or(&job, |_| println!("migration {id} started: follow it with `vna migrate status {id}`"));
                return Ok(ExitCode::SUCCESS);
            }
            follow(&api, id)?;
            report(&api, id)
        }
        MigrateCommand::Status { id: Some(id) } => {
            let v = api.get(&format!("/api/migrations/{}", encode(&id)))?;
            api.print_or(&v, |v| println!("{}", status_line(v)));
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Status { id: None } => {
            let v = api.get("/api/migrations")?;
            api.print_or(&v, |v| {
                for j in v["migrations"].as_array().into_iter().flatten() {
                    println!("{}", status_line(j));
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Report { id } => {
            let id: u64 = id.parse().map_err(|_| anyhow::anyhow!("{id:?} is not a migration job id"))?;
            report(&api, id)
        }
        MigrateCommand::Cancel { id } => {
            let v = api.post(&format!("/api/migrations/{}/cancel", encode(&id)), json!({}))?;
            api.print_or(&v, |v| println!("{}", status_line(v)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn range_of(v: &Value) -> String {
    format!("{} to {}", v["since"].as_str().unwrap_or("the beginning"), v["until"].as_str().unwrap_or("the end"))
}

fn status_line(j: &Value) -> String {
    let c = &j["counters"];
    let n = |k: &str| c[k].as_u64().unwrap_or(0);
    let mut line = format!(
        "{}  {:<9} from {} ({}): {}/{} studies ({} fetched, {} present, {} failed), {} instances, {}",
        j["id"],
        j["state"].as_str().unwrap_or(""),
        j["source"].as_str().unwrap_or(""),
        range_of(j),
        n("studies_handled"),
        n("studies_total"),
        n("studies_fetched"),
        n("studies_present"),
        n("studies_failed"),
        n("instances_received"),
        human_bytes(n("bytes_received"))
    );
    if let Some(e) = j["last_error"].as_str() {
        line.push_str(&format!("; error: {e}"));
    }
    line
}

/// Shows the job's progress until it ends; rides out a server restart (the job resumes there).
fn follow(api: &Api, id: u64) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("pulling [{bar:40}] {pos}/{len} studies ({eta}) {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let j = match api.get(&format!("/api/migrations/{id}")) {
            Ok(j) => {
                unreachable_since = None;
                j
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(120) {
                    bar.abandon();
                    return Err(e.context(format!("lost the archive while following migration {id}")));
                }
                bar.set_message(format!("archive unreachable, retrying ({e})"));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let c = &j["counters"];
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        let current = &j["current"];
        let (cur_instances, cur_bytes) =
            (current["received"].as_u64().unwrap_or(0), current["bytes"].as_u64().unwrap_or(0));
        bar.set_length(n("studies_total").max(1));
        bar.set_position(n("studies_handled"));
        let bytes = n("bytes_received") + cur_bytes;
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let state = j["state"].as_str().unwrap_or("");
        bar.set_message(format!(
            "{state}: {} instances, {} ({:.1} MiB/s), {} present, {} failed",
            n("instances_received") + cur_instances,
            human_bytes(bytes),
            bytes as f64 / secs / (1 << 20) as f64,
            n("studies_present"),
            n("studies_failed")
        ));
        if matches!(state, "done" | "failed" | "cancelled") {
            bar.finish();
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Prints the reconciliation report; exit 1 unless reconciled.
fn report(api: &Api, id: u64) -> anyhow::Result<ExitCode> {
    let r = api.get(&format!("/api/migrations/{id}/report"))?;
    let reconciled = r["reconciled"].as_bool() == Some(true);
    api.print_or(&r, |r| {
        let c = &r["counters"];
        let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
        println!(
            "migration {id} from {} ({}): {}",
            r["source"].as_str().unwrap_or(""),
            range_of(r),
            r["state"].as_str().unwrap_or("")
        );
        println!("  source: {} studies, {} instances", n(&r["remote"], "studies"), n(&r["remote"], "instances"));
        println!("  vna:    {} studies, {} instances", n(&r["local"], "studies"), n(&r["local"], "instances"));
        println!(
            "  fetched {} studies ({} instances, {}), {} already present, {} failed; {} fetches",
            n(c, "studies_fetched"),
            n(c, "instances_received"),
            human_bytes(n(c, "bytes_received")),
            n(c, "studies_present"),
            n(c, "studies_failed"),
            n(c, "fetches")
        );
        let mismatches = r["mismatches"].as_array().cloned().unwrap_or_default();
        if mismatches.is_empty() {
            println!("  mismatches: none");
        } else {
            println!("  mismatches ({}):", mismatches.len());
            for m in &mismatches {
                println!(
                    "    study {} (patient {}): source {}, vna {}",
                    m["study"].as_str().unwrap_or(""),
                    m["patient_id"].as_str().unwrap_or(""),
                    m["remote_instances"],
                    m["local_instances"]
                );
            }
        }
        if let Some(e) = r["error"].as_str() {
            println!("  the job failed: {e}");
        }
        for f in r["failures"].as_array().into_iter().flatten() {
            println!("  failed: study {}: {}", f["study"].as_str().unwrap_or(""), f["error"].as_str().unwrap_or(""));
        }
        let unverified = r["unverified"].as_array().map_or(0, Vec::len);
        if unverified > 0 {
            println!("  {unverified} studies without a count at the source (fetched, not verifiable by count)");
        }
        if reconciled {
            println!("reconciled: vna holds every instance the source reported");
        } else {
            println!(
                "NOT reconciled: {} mismatches, {} failures, {} studies pending; run the pull again to fetch what is missing",
                mismatches.len(),
                r["failures"].as_array().map_or(0, Vec::len),
                n(r, "pending")
            );
        }
    });
    Ok(if reconciled { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
