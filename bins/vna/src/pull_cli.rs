//! `vna pull ...`: pulls studies from a legacy PACS into vna through the running archive's
//! admin API (`/api/pulls`), with a progress bar and the reconciliation report at the end.
//! (Moves between vna's own tiers are `vna tier move`.)

use crate::admin_cli::{human_bytes, Api, ServerArgs};
use crate::config::VnaConfig;
use admin_api::types::{PullJob, PullReport, PullRequest};
use clap::Subcommand;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `vna pull ...`
#[derive(Debug, Subcommand)]
pub enum PullCommand {
    /// Pull every study of a legacy archive (a [[pull.sources]] entry) with a StudyDate in
    /// the range into vna; studies vna already holds are skipped. Follows the pull with a
    /// progress bar, prints the reconciliation report and exits 1 unless both sides agree.
    #[command(alias = "pull")]
    Start {
        /// The source's name under [[pull.sources]].
        #[arg(long)]
        from: String,
        /// First study date (YYYY-MM-DD); none: from the beginning.
        #[arg(long)]
        since: Option<String>,
        /// Last study date (YYYY-MM-DD), included; none: to the end.
        #[arg(long)]
        until: Option<String>,
        /// Return once the pull is started (follow it with `vna pull status ID`).
        #[arg(long)]
        no_wait: bool,
    },
    /// Show one pull's progress, or every pull.
    Status {
        /// Pull id.
        id: Option<String>,
    },
    /// Print a pull's reconciliation report; exits 1 unless it is reconciled.
    Report {
        /// Pull id.
        id: String,
    },
    /// Cancel a pull (it stops before its next study).
    Cancel {
        /// Pull id.
        id: String,
    },
}

/// Runs `vna pull ...`.
pub fn pull(config: &VnaConfig, server: &ServerArgs, cmd: PullCommand) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    match cmd {
        PullCommand::Start { from, since, until, no_wait } => {
            let job = api.client.start_pull(&PullRequest { source: from, since, until })?;
            let id = job.id.to_string();
            if no_wait {
                api.print_or(&job, |_| println!("pull {id} started: follow it with `vna pull status {id}`"));
                return Ok(ExitCode::SUCCESS);
            }
            follow(&api, &id)?;
            report(&api, &id)
        }
        PullCommand::Status { id: Some(id) } => {
            let job = api.client.pull(&id)?;
            api.print_or(&job, |j| println!("{}", status_line(j)));
            Ok(ExitCode::SUCCESS)
        }
        PullCommand::Status { id: None } => {
            let list = api.client.pulls()?;
            api.print_or(&list, |list| {
                for j in &list.pulls {
                    println!("{}", status_line(j));
                }
            });
            Ok(ExitCode::SUCCESS)
        }
        PullCommand::Report { id } => report(&api, &id),
        PullCommand::Cancel { id } => {
            let job = api.client.cancel_pull(&id)?;
            api.print_or(&job, |j| println!("{}", status_line(j)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn range_of(since: &Option<String>, until: &Option<String>) -> String {
    format!("{} to {}", since.as_deref().unwrap_or("the beginning"), until.as_deref().unwrap_or("the end"))
}

fn state_name<T: serde::Serialize>(state: T) -> String {
    serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn status_line(j: &PullJob) -> String {
    let c = &j.counters;
    let mut line = format!(
        "{}  {:<9} from {} ({}): {}/{} studies ({} fetched, {} present, {} failed), {} instances, {}",
        j.id,
        state_name(j.state),
        j.source,
        range_of(&j.since, &j.until),
        c.studies_handled,
        c.studies_total,
        c.studies_fetched,
        c.studies_present,
        c.studies_failed,
        c.instances_received,
        human_bytes(c.bytes_received)
    );
    if let Some(e) = &j.last_error {
        line.push_str(&format!("; error: {e}"));
    }
    line
}

/// Shows the pull's progress until it ends; rides out a server restart (the pull resumes there).
fn follow(api: &Api, id: &str) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("pulling [{bar:40}] {pos}/{len} studies ({eta}) {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let j = match api.client.pull(id) {
            Ok(j) => {
                unreachable_since = None;
                j
            }
            Err(e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(120) {
                    bar.abandon();
                    return Err(anyhow::Error::new(e).context(format!("lost the archive while following pull {id}")));
                }
                bar.set_message(format!("archive unreachable, retrying ({e})"));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let c = &j.counters;
        let (cur_instances, cur_bytes) = j.current.as_ref().map_or((0, 0), |cur| (cur.received, cur.bytes));
        bar.set_length(c.studies_total.max(1));
        bar.set_position(c.studies_handled);
        let bytes = c.bytes_received + cur_bytes;
        let secs = started.elapsed().as_secs_f64().max(0.001);
        bar.set_message(format!(
            "{}: {} instances, {} ({:.1} MiB/s), {} present, {} failed",
            state_name(j.state),
            c.instances_received + cur_instances,
            human_bytes(bytes),
            bytes as f64 / secs / (1 << 20) as f64,
            c.studies_present,
            c.studies_failed
        ));
        if j.state.is_final() {
            bar.finish();
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Prints the reconciliation report; exit 1 unless reconciled.
fn report(api: &Api, id: &str) -> anyhow::Result<ExitCode> {
    let r = api.client.pull_report(id)?;
    api.print_or(&r, print_report);
    Ok(if r.reconciled { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_report(r: &PullReport) {
    let c = &r.counters;
    println!("pull {} from {} ({}): {}", r.pull, r.source, range_of(&r.since, &r.until), state_name(r.state));
    println!("  source: {} studies, {} instances", r.remote.studies, r.remote.instances);
    println!("  vna:    {} studies, {} instances", r.local.studies, r.local.instances);
    println!(
        "  fetched {} studies ({} instances, {}), {} already present, {} failed; {} fetches",
        c.studies_fetched,
        c.instances_received,
        human_bytes(c.bytes_received),
        c.studies_present,
        c.studies_failed,
        c.fetches
    );
    if r.mismatches.is_empty() {
        println!("  mismatches: none");
    } else {
        println!("  mismatches ({}):", r.mismatches.len());
        for m in &r.mismatches {
            println!(
                "    study {} (patient {}): source {}, vna {}",
                m.study, m.patient_id, m.remote_instances, m.local_instances
            );
        }
    }
    if let Some(e) = &r.error {
        println!("  the pull failed: {e}");
    }
    for f in &r.failures {
        println!("  failed: study {}: {}", f.study, f.error);
    }
    if !r.unverified.is_empty() {
        println!("  {} studies without a count at the source (fetched, not verifiable by count)", r.unverified.len());
    }
    if r.reconciled {
        println!("reconciled: vna holds every instance the source reported");
    } else {
        println!(
            "NOT reconciled: {} mismatches, {} failures, {} studies pending; run the pull again to fetch what is missing",
            r.mismatches.len(),
            r.failures.len(),
            r.pending
        );
    }
}
