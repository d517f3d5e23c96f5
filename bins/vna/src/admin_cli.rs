//! Admin commands that talk to a running archive over its admin API: retention rules,
//! deletions, legal holds and audit exports. Each sends `Authorization: Bearer TOKEN`
//! (`--token` or `VNA_TOKEN`) of a user configured under `[[auth.users]]`.

use anyhow::{bail, Context};
use archive_core::config::VnaConfig;
use clap::{Args, Subcommand};
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{json, Value};
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
    #[arg(long, value_parser = ["json", "csv"], default_value = "json")]
    pub format: String,
    /// Most records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write to a file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub(crate) struct Api {
    pub(crate) base: String,
    token: Option<String>,
    pub(crate) client: Client,
    pub(crate) json: bool,
}

impl Api {
    pub(crate) fn new(config: &VnaConfig, args: &ServerArgs) -> anyhow::Result<Self> {
        let base = match &args.server {
            Some(s) => s.trim_end_matches('/').to_string(),
            None => {
                let addr = config.http_listen()?;
                if addr.port() == 0 {
                    bail!("[http] listen has port 0 (picked at start): pass --server URL or set VNA_SERVER");
                }
                let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
                format!("http://{host}:{}", addr.port())
            }
        };
        let client = Client::builder().timeout(Duration::from_secs(3600)).build()?;
        Ok(Self { base, token: args.token.clone(), client, json: args.json })
    }

    pub(crate) fn req(&self, rb: RequestBuilder) -> anyhow::Result<Response> {
        let rb = match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        let rsp = rb
            .send()
            .with_context(|| format!("cannot reach the archive at {} (is `vna serve` running?)", self.base))?;
        if !rsp.status().is_success() {
            let status = rsp.status();
            let body: Value = rsp.json().unwrap_or(Value::Null);
            let msg = body["message"].as_str().map(str::to_string).unwrap_or_else(|| body.to_string());
            let hint =
                if status == reqwest::StatusCode::UNAUTHORIZED { " (pass --token or set VNA_TOKEN)" } else { "" };
            bail!("{status}: {msg}{hint}");
        }
        Ok(rsp)
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.req(self.client.get(format!("{}{path}", self.base)))?.json()?)
    }

    pub(crate) fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let rb = self.client.post(format!("{}{path}", self.base)).json(&body);
        Ok(self.req(rb)?.json()?)
    }

    pub(crate) fn print_or(&self, v: &Value, summary: impl FnOnce(&Value)) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            summary(v);
        }
    }
}

fn tier_names(config: &VnaConfig) -> Vec<String> {
    let mut names = vec!["hot".to_string(), "warm".to_string()];
    names.extend(config.tiers.keys().cloned());
    names
}

pub(crate) fn encode(v: &str) -> String {
    serde_urlencoded::to_string([("v", v)]).unwrap_or_default().trim_start_matches("v=").to_string()
}

/// Runs `vna policy ...`.
pub fn policy(config: &VnaConfig, server: &ServerArgs, cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    if let PolicyCommand::Check { file } = &cmd {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        return Ok(match policy::parse_rules(&text, &tier_names(config)) {
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
    match cmd {
        PolicyCommand::Check { .. } => unreachable!("handled above"),
        PolicyCommand::Simulate { at, rules, limit } => {
            let mut path = format!("/api/policy/simulate?limit={limit}");
            if let Some(at) = &at {
                path.push_str(&format!("&at={}", encode(at)));
            }
            let v: Value = match rules {
                Some(file) => {
                    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                    api.req(api.client.post(format!("{}{path}", api.base)).body(text))?.json()?
                }
                None => api.get(&path)?,
            };
            api.print_or(&v, print_simulation);
        }
        PolicyCommand::Explain { study, at } => {
            let mut path = format!("/api/policy/explain/{}", encode(&study));
            if let Some(at) = &at {
                path.push_str(&format!("?at={}", encode(at)));
            }
            let v = api.get(&path)?;
            api.print_or(&v, print_explanation);
        }
        PolicyCommand::Show => {
            let v = api.get("/api/policy")?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        PolicyCommand::Apply { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let rb = api.client.put(format!("{}/api/policy", api.base)).body(text);
            let v: Value = api.req(rb)?.json()?;
            api.print_or(&v, |v| {
                println!("rules in force: digest {}, {} rules, {} floors", v["digest"], v["rules"], v["floors"])
            });
        }
        PolicyCommand::Reload => {
            let v = api.post("/api/policy/reload", json!({}))?;
            api.print_or(&v, |v| println!("rules in force: digest {}, {} rules", v["digest"], v["rules"]));
        }
        PolicyCommand::Evaluate => {
            let v = api.post("/api/policy/evaluate", json!({}))?;
            api.print_or(&v, |v| {
                println!(
                    "evaluated {} studies: {} migrations, {} deletions marked, {} skipped",
                    v["evaluated"], v["migrations"], v["deletions"], v["skipped"]
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

fn totals(v: &Value) -> String {
    format!("{} studies, {}", v["studies"].as_u64().unwrap_or(0), human_bytes(v["bytes"].as_u64().unwrap_or(0)))
}

fn print_simulation(v: &Value) {
    println!("simulation at {} (rules {})", v["at"].as_str().unwrap_or(""), v["rules_digest"].as_str().unwrap_or(""));
    println!("  evaluated: {}", totals(&v["evaluated"]));
    if let Some(tiers) = v["tiers"].as_object() {
        for (t, x) in tiers {
            println!("  on {t}: {}", totals(x));
        }
    }
    println!("  deleted: {}", totals(&v["deleted"]));
    println!("  kept where they are: {}", totals(&v["kept"]));
    println!(
        "  deletion blocked by a floor: {}; by a legal hold: {}",
        totals(&v["blocked_by_floor"]),
        totals(&v["blocked_by_hold"])
    );
    if let Some(rules) = v["by_rule"].as_object() {
        for (r, x) in rules {
            println!("  decided by {r}: {}", totals(x));
        }
    }
    if let Some(list) = v["deletions"].as_array() {
        for d in list {
            println!(
                "  delete {} (patient {}, {}) by {}",
                d["study"].as_str().unwrap_or(""),
                d["patient"].as_str().unwrap_or(""),
                human_bytes(d["bytes"].as_u64().unwrap_or(0)),
                d["rule"].as_str().unwrap_or("")
            );
        }
        if v["deletions_truncated"].as_bool() == Some(true) {
            println!("  ... (more; raise --limit)");
        }
    }
}

fn print_explanation(v: &Value) {
    let d = &v["decision"];
    println!("{}", d["summary"].as_str().unwrap_or(""));
    if let Some(u) = d["retained_until"].as_str() {
        println!("  retention floors keep it until {u}");
    }
    for t in d["trace"].as_array().into_iter().flatten() {
        let mark = if t["matched"].as_bool() == Some(true) { "matched" } else { "no match" };
        println!(
            "  rule {} v{} ({}): {mark}",
            t["rule"]["name"].as_str().unwrap_or(""),
            t["rule"]["version"],
            t["action"].as_str().unwrap_or("")
        );
        for c in t["conditions"].as_array().into_iter().flatten() {
            println!(
                "    {:<18} {:<7} {}",
                c["condition"].as_str().unwrap_or(""),
                c["result"].as_str().unwrap_or(""),
                c["detail"].as_str().unwrap_or("")
            );
        }
    }
    for b in d["blocked"].as_array().into_iter().flatten() {
        println!("  blocked: {}", b);
    }
}

/// Runs `vna delete STUDY --reason ...`.
pub fn delete(config: &VnaConfig, server: &ServerArgs, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    let mut body = json!({ "reason": args.reason });
    if let Some(g) = args.grace_minutes {
        body["grace_minutes"] = json!(g);
    }
    let v = api.post(&format!("/api/studies/{}/delete", encode(&args.study)), body)?;
    api.print_or(&v, |v| {
        println!(
            "deletion {} marked: study {} is hidden and purged after {}",
            v["id"],
            args.study,
            v["hide_at"].as_str().unwrap_or("")
        );
        println!("undo before then with: vna deletions undo {} --reason \"...\"", v["id"]);
    });
    Ok(ExitCode::SUCCESS)
}

/// Runs `vna deletions ...`.
pub fn deletions(config: &VnaConfig, server: &ServerArgs, cmd: DeletionsCommand) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    match cmd {
        DeletionsCommand::List => {
            let v = api.get("/api/deletions")?;
            api.print_or(&v, |v| {
                for d in v["deletions"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<9} study {}  by {} ({})  marked {}",
                        d["id"],
                        d["state"].as_str().unwrap_or(""),
                        d["study"].as_str().unwrap_or(""),
                        d["requested_by"].as_str().unwrap_or(""),
                        d["reason"].as_str().unwrap_or(""),
                        d["marked_at"].as_str().unwrap_or("")
                    );
                }
            });
        }
        DeletionsCommand::Show { id } => {
            println!("{}", serde_json::to_string_pretty(&api.get(&format!("/api/deletions/{}", encode(&id)))?)?)
        }
        DeletionsCommand::Undo { id, reason } => {
            let v = api.post(&format!("/api/deletions/{}/undo", encode(&id)), json!({ "reason": reason }))?;
            api.print_or(&v, |v| println!("deletion {} undone", v["id"]));
        }
        DeletionsCommand::Certificate { id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&api.get(&format!("/api/deletions/{}/certificate", encode(&id)))?)?
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `vna hold ...`.
pub fn hold(config: &VnaConfig, server: &ServerArgs, cmd: HoldCommand) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    match cmd {
        HoldCommand::List => {
            let v = api.get("/api/holds")?;
            api.print_or(&v, |v| {
                for h in v["holds"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}  by {} at {}: {}",
                        h["id"],
                        h["scope"],
                        h["set_by"].as_str().unwrap_or(""),
                        h["set_at"].as_str().unwrap_or(""),
                        h["reason"].as_str().unwrap_or("")
                    );
                }
            });
        }
        HoldCommand::Set { patient, issuer, study, accession, reason } => {
            let body = match (patient, study, accession) {
                (Some(p), None, None) => {
                    json!({ "patient_id": p, "issuer": issuer.unwrap_or_default(), "reason": reason })
                }
                (None, Some(s), None) => json!({ "study": s, "reason": reason }),
                (None, None, Some(a)) => json!({ "accession": a, "reason": reason }),
                _ => bail!("name exactly one of --patient, --study or --accession"),
            };
            let v = api.post("/api/holds", body)?;
            api.print_or(&v, |v| println!("legal hold {} set on {}", v["id"], v["scope"]));
        }
        HoldCommand::Release { id, reason } => {
            let v = api.post(&format!("/api/holds/{}/release", encode(&id)), json!({ "reason": reason }))?;
            api.print_or(&v, |v| println!("legal hold {} released", v["released"]["id"]));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `vna audit export ...` through the running archive (the export is itself audited).
pub fn export(config: &VnaConfig, server: &ServerArgs, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    let mut params: Vec<(&str, String)> = vec![("format", args.format.clone())];
    for (k, v) in [
        ("since", args.since),
        ("until", args.until),
        ("patient", args.patient),
        ("study", args.study),
        ("action", args.action),
    ] {
        if let Some(v) = v {
            params.push((k, v));
        }
    }
    if let Some(l) = args.limit {
        params.push(("limit", l.to_string()));
    }
    let query = serde_urlencoded::to_string(&params)?;
    let text = api.req(api.client.get(format!("{}/api/audit?{query}", api.base)))?.text()?;
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
    let v = api.get("/api/audit/verify")?;
    if v["intact"].as_bool() == Some(true) {
        println!("audit trail intact: {} records verified", v["records"]);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("audit trail BROKEN: {}", v["error"].as_str().unwrap_or(""));
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
    Migrate {
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
    match cmd {
        TierCommand::Ls => {
            let v = api.get("/api/stats")?;
            api.print_or(&v, |v| {
                println!("{:<12} {:<12} {:>10} {:>12}", "tier", "availability", "copies", "bytes");
                for (name, t) in v["tiers"].as_object().into_iter().flatten() {
                    println!(
                        "{:<12} {:<12} {:>10} {:>12}",
                        name,
                        t["availability"].as_str().unwrap_or(""),
                        t["objects"].as_u64().unwrap_or(0),
                        human_bytes(t["bytes"].as_u64().unwrap_or(0))
                    );
                }
            });
        }
        TierCommand::Stats => println!("{}", serde_json::to_string_pretty(&api.get("/api/stats")?)?),
        TierCommand::Migrate { study, to, from, keep_source, reason, no_wait } => {
            let body = json!({ "to": to, "from": from, "keep_source": keep_source, "reason": reason });
            let job = api.post(&format!("/api/studies/{}/migrate", encode(&study)), body)?;
            let id = job["id"].as_u64().unwrap_or(0);
            if no_wait {
                api.print_or(&job, |_| println!("job {id} submitted: follow it with GET /api/jobs/{id}"));
                return Ok(ExitCode::SUCCESS);
            }
            let bar = progress_bar(job["instances_total"].as_u64().unwrap_or(0), "migrating");
            loop {
                let j = api.get(&format!("/api/jobs/{id}"))?;
                bar.set_length(j["instances_total"].as_u64().unwrap_or(0).max(1));
                bar.set_position(
                    j["instances_done"].as_u64().unwrap_or(0) + j["instances_failed"].as_u64().unwrap_or(0),
                );
                bar.set_message(format!("{} copied", human_bytes(j["bytes_copied"].as_u64().unwrap_or(0))));
                match j["state"].as_str() {
                    Some("done") => {
                        bar.finish();
                        println!("job {id} done: {} instances to {to}", j["instances_done"]);
                        return Ok(ExitCode::SUCCESS);
                    }
                    Some("failed") => {
                        bar.abandon();
                        println!("job {id} failed: {}", j["last_error"].as_str().unwrap_or(""));
                        return Ok(ExitCode::from(1));
                    }
                    _ => std::thread::sleep(Duration::from_millis(500)),
                }
            }
        }
        TierCommand::Scrub { no_wait } => {
            let started = api.post("/api/scrub", json!({}))?;
            if no_wait {
                api.print_or(&started, |_| println!("integrity pass started"));
                return Ok(ExitCode::SUCCESS);
            }
            let bar = progress_bar(started["studies_total"].as_u64().unwrap_or(0), "scrubbing");
            loop {
                let s = api.get("/api/scrub")?;
                bar.set_length(s["studies_total"].as_u64().unwrap_or(0).max(1));
                bar.set_position(s["studies_checked"].as_u64().unwrap_or(0));
                bar.set_message(format!("{} ok, {} failed", s["copies_ok"], s["copies_failed"]));
                if s["running"].as_bool() != Some(true) {
                    bar.finish();
                    let failed = s["copies_failed"].as_u64().unwrap_or(0);
                    println!(
                        "integrity pass done: {} copies ok ({}), {} skipped, {failed} failed",
                        s["copies_ok"],
                        human_bytes(s["bytes_checked"].as_u64().unwrap_or(0)),
                        s["copies_skipped"]
                    );
                    return Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) });
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

fn identity(raw: &str) -> Value {
    let (id, issuer) = raw.split_once("^^^").unwrap_or((raw, ""));
    json!({ "patient_id": id, "issuer": issuer })
}

/// Runs `vna patient ...`.
pub fn patient(config: &VnaConfig, server: &ServerArgs, cmd: PatientCommand) -> anyhow::Result<ExitCode> {
    let api = Api::new(config, server)?;
    match cmd {
        PatientCommand::Link { from, to, reason } => {
            let v = api.post(
                "/api/patients/link",
                json!({ "from": identity(&from), "to": identity(&to), "reason": reason }),
            )?;
            api.print_or(&v, |v| {
                println!(
                    "link {}: {} studies of {from} re-filed under {to}",
                    v["id"],
                    v["studies"].as_array().map_or(0, |a| a.len())
                )
            });
        }
        PatientCommand::Unlink { id, reason } => {
            let v = api.post(&format!("/api/patient-links/{}/undo", encode(&id)), json!({ "reason": reason }))?;
            api.print_or(&v, |v| println!("link {} undone", v["id"]));
        }
        PatientCommand::Links => {
            let v = api.get("/api/patient-links")?;
            api.print_or(&v, |v| {
                for l in v["links"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {}^^^{} -> {}^^^{}  {} studies  by {}: {}{}",
                        l["id"],
                        l["from"]["patient_id"].as_str().unwrap_or(""),
                        l["from"]["issuer"].as_str().unwrap_or(""),
                        l["to"]["patient_id"].as_str().unwrap_or(""),
                        l["to"]["issuer"].as_str().unwrap_or(""),
                        l["studies"].as_array().map_or(0, |a| a.len()),
                        l["linked_by"].as_str().unwrap_or(""),
                        l["reason"].as_str().unwrap_or(""),
                        l["undone"].as_str().map(|u| format!(" (undone: {u})")).unwrap_or_default()
                    );
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
