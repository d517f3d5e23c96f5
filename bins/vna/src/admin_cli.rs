//! Admin commands that talk to a running archive over its admin API: retention rules,
//! deletions, legal holds and audit exports. Each sends `Authorization: Bearer TOKEN`
//! (`--token` or `VNA_TOKEN`) of a user configured under `[[auth.users]]`.

use crate::config::VnaConfig;
use admin_api::types::{
    AuditFilter, AuditFormat, DeleteRequest, Explanation, HoldRequest, LinkRequest, MoveRequest, PatientIdentity,
    PolicyQuery, SimulationReport, TierJobState, Totals,
};
use admin_api::AdminClient;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Where the running archive is and who is asking.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// Admin API base URL (default: http:// plus [http] listen from the configuration).
    #[arg(long, global = true, env = "VNA_SERVER")]
    pub server: Option<String>,
    /// Bearer token of a user under [[auth.users]].
    #[arg(long, global = true, env = "VNA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON answer instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `vna policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a rule file against the configured tiers without a running archive; names the
    /// line of each problem and exits 1 when the file would be refused.
    Check {
        /// The rule file.
        file: PathBuf,
    },
    /// Show, without changing anything, what each tier would hold and which studies would be
    /// deleted at a date (today by default) under the rules in force, or under --rules FILE.
    Simulate {
        /// The date to simulate (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        at: Option<String>,
        /// A candidate rule file to simulate instead of the rules in force.
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Most deletions to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show the decision for one study: the rule that matched, each condition, floors and holds.
    Explain {
        /// Study Instance UID.
        study: String,
        /// The date to decide for (YYYY-MM-DD or RFC 3339; today by default).
        #[arg(long)]
        at: Option<String>,
    },
    /// Show the rules in force.
    Show,
    /// Replace the rules in force with a file (refused, with the lines named, if invalid).
    Apply {
        /// The rule file.
        file: PathBuf,
    },
    /// Re-read the configured rule file.
    Reload,
    /// Evaluate every study now and submit the resulting moves and deletions.
    Evaluate,
}

/// `vna delete ...`
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Study Instance UID.
    pub study: String,
    /// Why (recorded in the audit trail and the deletion certificate).
    #[arg(long)]
    pub reason: String,
    /// Grace period before the study is hidden and purged (default: [retention] grace_minutes).
    #[arg(long)]
    pub grace_minutes: Option<u64>,
}

/// `vna deletions ...`
#[derive(Debug, Subcommand)]
pub enum DeletionsCommand {
    /// List deletions and their state.
    List,
    /// Show one deletion.
    Show {
        /// Deletion id.
        id: String,
    },
    /// Undo a marked deletion before its purge starts.
    Undo {
        /// Deletion id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Print the deletion certificate (instances, sizes, checksums, tiers, audit records) as JSON.
    Certificate {
        /// Deletion id.
        id: String,
    },
}

/// `vna hold ...`
#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// List the legal holds standing.
    List,
    /// Set a legal hold on a patient, a study or an accession number.
    Set {
        /// Patient ID (with --issuer for its domain).
        #[arg(long, conflicts_with_all = ["study", "accession"])]
        patient: Option<String>,
        /// Issuer of Patient ID.
        #[arg(long, requires = "patient")]
        issuer: Option<String>,
        /// Study Instance UID.
        #[arg(long, conflicts_with = "accession")]
        study: Option<String>,
        /// Accession Number.
        #[arg(long)]
        accession: Option<String>,
        /// Why (case number, request).
        #[arg(long)]
        reason: String,
    },
    /// Release a legal hold.
    Release {
        /// Hold id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

/// Format of `vna audit export`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    /// `{"records": [...]}`.
    Json,
    /// One line per record, with a header line.
    Csv,
}

/// `vna audit export ...`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Records at or after (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Records before (YYYY-MM-DD or RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Records touching this patient (ID, or ID^^^ISSUER).
    #[arg(long)]
    pub patient: Option<String>,
    /// Records touching this study.
    #[arg(long)]
    pub study: Option<String>,
    /// Records of one action (e.g. deletion_completed, legal_hold_set).
    #[arg(long)]
    pub action: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
    pub format: ExportFormat,
    /// Most records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write to a file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// The admin API of the running archive, and how to print its answers.
pub(crate) struct Api {
    pub(crate) client: AdminClient,
    json: bool,
}

impl Api {
    pub(crate) fn new(config: &VnaConfig, args: &ServerArgs) -> anyhow::Result<Self> {
        let base = match &args.server {
            Some(s) => s.trim_end_matches('/').to_string(),
            None => {
                let addr = config.http.listen_addr()?;
                if addr.port() == 0 {
                    bail!("[http] listen has port 0 (picked at start): pass --server URL or set VNA_SERVER");
                }
                let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
                format!("http://{host}:{}", addr.port())
            }
        };
        Ok(Self { client: AdminClient::new(&base, args.token.clone())?, json: args.json })
    }

    /// Prints the answer as JSON with --json, else the summary.
    pub(crate) fn print_or<T: Serialize>(&self, v: &T, summary: impl FnOnce(&T)) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            summary(v);
        }
    }
}

/// Prints an answer as pretty JSON.
fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs `vna policy ...`.
pub fn policy(config: &VnaConfig, server: &ServerArgs, cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    if let PolicyCommand::Check { file } = &cmd {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        return Ok(match policy::parse_rules(&text, &config.tier_names()) {
            Ok(r) => {
                println!(
                    "{}: valid; {} rules, {} floors; digest {}",
                    file.display(),
                    r.rules.len(),
                    r.floors.len(),
                    r.digest
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                for p in &e.problems {
                    eprintln!("{}: {p}", file.display());
                }
                ExitCode::from(1)
            }
        });
    }
    let api = Api::new(config, server)?;
    let c = &api.client;
    match cmd {
        PolicyCommand::Check { .. } => unreachable!("handled above"),
        PolicyCommand::Simulate { at, rules, limit } => {
            let query = PolicyQuery { at, limit: Some(limit) };
            let candidate = match rules {
                Some(file) => {
                    Some(std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?)
                }
                None => None,
            };
            let report = c.simulate(&query, candidate.as_deref())?;
            api.print_or(&report, print_simulation);
        }
        PolicyCommand::Explain { study, at } => {
            let explanation = c.explain(&study, &PolicyQuery { at, limit: None })?;
            api.print_or(&explanation, print_explanation);
        }
        PolicyCommand::Show => print_json(&c.policy()?)?,
        PolicyCommand::Apply { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let r = c.replace_policy(&text)?;
            api.print_or(&r, |r| {
                println!("rules in force: digest {}, {} rules, {} floors", r.digest, r.rules, r.floors)
            });
        }
        PolicyCommand::Reload => {
            let r = c.reload_policy()?;
            api.print_or(&r, |r| println!("rules in force: digest {}, {} rules", r.digest, r.rules));
        }
        PolicyCommand::Evaluate => {
            let p = c.evaluate_policy()?;
            api.print_or(&p, |p| {
                println!(
                    "evaluated {} studies: {} migrations, {} deletions marked, {} skipped",
                    p.evaluated, p.migrations, p.deletions, p.skipped
                )
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

fn totals(t: &Totals) -> String {
    format!("{} studies, {}", t.studies, human_bytes(t.bytes))
}

fn print_simulation(r: &SimulationReport) {
    println!("simulation at {} (rules {})", rfc3339(r.at), r.rules_digest);
    println!("  evaluated: {}", totals(&r.evaluated));
    for (t, x) in &r.tiers {
        println!("  on {t}: {}", totals(x));
    }
    println!("  deleted: {}", totals(&r.deleted));
    println!("  kept where they are: {}", totals(&r.kept));
    println!(
        "  deletion blocked by a floor: {}; by a legal hold: {}",
        totals(&r.blocked_by_floor),
        totals(&r.blocked_by_hold)
    );
    for (rule, x) in &r.by_rule {
        println!("  decided by {rule}: {}", totals(x));
    }
    for d in &r.deletions {
        println!("  delete {} (patient {}, {}) by {}", d.study, d.patient, human_bytes(d.bytes), d.rule);
    }
    if r.deletions_truncated {
        println!("  ... (more; raise --limit)");
    }
}

fn print_explanation(e: &Explanation) {
    let d = &e.decision;
    println!("{}", d.summary);
    if let Some(u) = &d.retained_until {
        println!("  retention floors keep it until {u}");
    }
    for t in &d.trace {
        let mark = if t.matched { "matched" } else { "no match" };
        println!("  rule {} ({}): {mark}", t.rule, t.action);
        for c in &t.conditions {
            let result = serde_json::to_value(c.result).ok().and_then(|v| v.as_str().map(str::to_string));
            println!("    {:<18} {:<7} {}", c.condition, result.unwrap_or_default(), c.detail);
        }
    }
    for b in &d.blocked {
        println!("  blocked: {}", serde_json::to_string(b).unwrap_or_default());
    }
}

/// An RFC 3339 time for people.
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Runs `vna delete STUDY --reason ...`.
pub fn delete(config: &VnaConfig, server: &ServerArgs, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    let req = DeleteRequest { reason: args.reason, grace_minutes: args.grace_minutes };
    let d = api.client.delete_study(&args.study, &req)?;
    api.print_or(&d, |d| {
        println!("deletion {} marked: study {} is hidden and purged after {}", d.id, d.study, rfc3339(d.hide_at));
        println!("undo before then with: vna deletions undo {} --reason \"...\"", d.id);
    });
    Ok(ExitCode::SUCCESS)
}

/// Runs `vna deletions ...`.
pub fn deletions(config: &VnaConfig, server: &ServerArgs, cmd: DeletionsCommand) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    let c = &api.client;
    match cmd {
        DeletionsCommand::List => {
            let list = c.deletions()?;
            api.print_or(&list, |list| {
                for d in &list.deletions {
                    let state = serde_json::to_value(d.state).ok().and_then(|v| v.as_str().map(str::to_string));
                    println!(
                        "{}  {:<9} study {}  by {} ({})  marked {}",
                        d.id,
                        state.unwrap_or_default(),
                        d.study,
                        d.requested_by,
                        d.reason,
                        rfc3339(d.marked_at)
                    );
                }
            });
        }
        DeletionsCommand::Show { id } => print_json(&c.deletion(&id)?)?,
        DeletionsCommand::Undo { id, reason } => {
            let d = c.undo_deletion(&id, &reason)?;
            api.print_or(&d, |d| println!("deletion {} undone", d.id));
        }
        DeletionsCommand::Certificate { id } => print_json(&c.certificate(&id)?)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `vna hold ...`.
pub fn hold(config: &VnaConfig, server: &ServerArgs, cmd: HoldCommand) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    let c = &api.client;
    match cmd {
        HoldCommand::List => {
            let list = c.holds()?;
            api.print_or(&list, |list| {
                for h in &list.holds {
                    println!("{}  {}  by {} at {}: {}", h.id, h.scope, h.set_by, rfc3339(h.set_at), h.reason);
                }
            });
        }
        HoldCommand::Set { patient, issuer, study, accession, reason } => {
            let req = match (patient, study, accession) {
                (Some(p), None, None) => HoldRequest {
                    patient_id: Some(p),
                    issuer: Some(issuer.unwrap_or_default()),
                    reason,
                    ..Default::default()
                },
                (None, Some(s), None) => HoldRequest { study: Some(s), reason, ..Default::default() },
                (None, None, Some(a)) => HoldRequest { accession: Some(a), reason, ..Default::default() },
                _ => bail!("name exactly one of --patient, --study or --accession"),
            };
            let h = c.set_hold(&req)?;
            api.print_or(&h, |h| println!("legal hold {} set on {}", h.id, h.scope));
        }
        HoldCommand::Release { id, reason } => {
            let r = c.release_hold(&id, &reason)?;
            api.print_or(&r, |r| println!("legal hold {} released", r.released.id));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `vna audit export ...` through the running archive (the export is itself audited).
pub fn export(config: &VnaConfig, server: &ServerArgs, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    let filter = AuditFilter {
        since: args.since,
        until: args.until,
        patient: args.patient,
        study: args.study,
        action: args.action,
        format: Some(match args.format {
            ExportFormat::Json => AuditFormat::Json,
            ExportFormat::Csv => AuditFormat::Csv,
        }),
        limit: args.limit,
    };
    let text = api.client.audit_text(&filter)?;
    match args.output {
        Some(path) => {
            std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `vna audit verify --server URL`: the running archive verifies its chain.
pub fn verify_remote(config: &VnaConfig, server: &ServerArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    let v = api.client.verify_audit()?;
    if v.intact {
        println!("audit trail intact: {} records verified", v.records.unwrap_or(0));
        Ok(ExitCode::SUCCESS)
    } else {
        println!("audit trail BROKEN: {}", v.error.unwrap_or_default());
        Ok(ExitCode::from(1))
    }
}

/// `vna tier ...`
#[derive(Debug, Subcommand)]
pub enum TierCommand {
    /// List the tiers with their availability, copies and bytes.
    Ls,
    /// Print the archive's counts and per-tier usage as JSON.
    Stats,
    /// Move (or copy, with --keep-source) a study's copies to a tier; shows progress until done.
    Move {
        /// Study Instance UID.
        study: String,
        /// Target tier.
        #[arg(long)]
        to: String,
        /// Only copies on this tier (default: the best copy of each instance).
        #[arg(long)]
        from: Option<String>,
        /// Keep the source copies (a copy, not a move).
        #[arg(long)]
        keep_source: bool,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: Option<String>,
        /// Return once the job is submitted instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Run an integrity pass now (re-read every copy and check its checksum); shows progress.
    Scrub {
        /// Return once the pass has started.
        #[arg(long)]
        no_wait: bool,
    },
}

fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total.max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!("{what} [{{bar:40}}] {{pos}}/{{len}} ({{eta}}) {{msg}}"))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Runs `vna tier ...`.
pub fn tier(config: &VnaConfig, server: &ServerArgs, cmd: TierCommand) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    let c = &api.client;
    match cmd {
        TierCommand::Ls => {
            let stats = c.stats()?;
            api.print_or(&stats, |stats| {
                println!("{:<12} {:<12} {:>10} {:>12}", "tier", "availability", "copies", "bytes");
                for (name, t) in &stats.tiers {
                    println!("{:<12} {:<12} {:>10} {:>12}", name, t.availability, t.objects, human_bytes(t.bytes));
                }
            });
        }
        TierCommand::Stats => print_json(&c.stats()?)?,
        TierCommand::Move { study, to, from, keep_source, reason, no_wait } => {
            let job = c.move_study(&study, &MoveRequest { to: to.clone(), from, keep_source, reason })?;
            let id = job.id;
            if no_wait {
                api.print_or(&job, |_| println!("job {id} submitted: follow it with GET /api/jobs/{id}"));
                return Ok(ExitCode::SUCCESS);
            }
            let bar = progress_bar(job.instances_total, "moving");
            loop {
                let j = c.job(id)?;
                bar.set_length(j.instances_total.max(1));
                bar.set_position(j.instances_done + j.instances_failed);
                bar.set_message(format!("{} copied", human_bytes(j.bytes_copied)));
                match j.state {
                    TierJobState::Done => {
                        bar.finish();
                        println!("job {id} done: {} instances to {to}", j.instances_done);
                        return Ok(ExitCode::SUCCESS);
                    }
                    TierJobState::Failed => {
                        bar.abandon();
                        println!("job {id} failed: {}", j.last_error.unwrap_or_default());
                        return Ok(ExitCode::from(1));
                    }
                    _ => std::thread::sleep(Duration::from_millis(500)),
                }
            }
        }
        TierCommand::Scrub { no_wait } => {
            let started = c.start_scrub()?;
            if no_wait {
                api.print_or(&started, |_| println!("integrity pass started"));
                return Ok(ExitCode::SUCCESS);
            }
            let bar = progress_bar(started.studies_total, "scrubbing");
            loop {
                let s = c.scrub()?;
                bar.set_length(s.studies_total.max(1));
                bar.set_position(s.studies_checked);
                bar.set_message(format!("{} ok, {} failed", s.copies_ok, s.copies_failed));
                if !s.running {
                    bar.finish();
                    println!(
                        "integrity pass done: {} copies ok ({}), {} skipped, {} failed",
                        s.copies_ok,
                        human_bytes(s.bytes_checked),
                        s.copies_skipped,
                        s.copies_failed
                    );
                    return Ok(if s.copies_failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) });
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `vna patient ...`
#[derive(Debug, Subcommand)]
pub enum PatientCommand {
    /// Re-file every study of one patient identity under another (e.g. after a registration
    /// error); reversible with `unlink`. Identities are written ID or ID^^^ISSUER.
    Link {
        /// The identity whose studies move.
        #[arg(long)]
        from: String,
        /// The identity they move to.
        #[arg(long)]
        to: String,
        /// Why (recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Undo a link.
    Unlink {
        /// Link id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// List the links.
    Links,
}

/// Runs `vna patient ...`.
pub fn patient(config: &VnaConfig, server: &ServerArgs, cmd: PatientCommand) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    let c = &api.client;
    match cmd {
        PatientCommand::Link { from, to, reason } => {
            let req = LinkRequest { from: PatientIdentity::parse(&from), to: PatientIdentity::parse(&to), reason };
            let l = c.link_patients(&req)?;
            api.print_or(&l, |l| println!("link {}: {} studies of {from} re-filed under {to}", l.id, l.studies.len()));
        }
        PatientCommand::Unlink { id, reason } => {
            let l = c.undo_link(&id, &reason)?;
            api.print_or(&l, |l| println!("link {} undone", l.id));
        }
        PatientCommand::Links => {
            let list = c.links()?;
            api.print_or(&list, |list| {
                for l in &list.links {
                    println!(
                        "{}  {}^^^{} -> {}^^^{}  {} studies  by {}: {}{}",
                        l.id,
                        l.from.patient_id,
                        l.from.issuer,
                        l.to.patient_id,
                        l.to.issuer,
                        l.studies.len(),
                        l.linked_by,
                        l.reason,
                        l.undone.as_ref().map(|u| format!(" (undone: {u})")).unwrap_or_default()
                    );
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
