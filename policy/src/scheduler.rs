//! The running policy: the rule file in force, evaluation passes over the catalog, and the
//! decisions they turn into migration and deletion jobs of the core.
//!
//! # Rule changes
//! A new rule file (from disk, or through the admin API) is parsed and validated against the
//! archive's tiers first; a refused file never replaces the running rules, and both outcomes are
//! audited (`policy_changed` with the digest and the changes, or `policy_refused` with the
//! problems). Every accepted file is also kept under `DATA_DIR/policy/` by digest, so that the
//! text behind any audited digest can be shown later.
//!
//! # Passes
//! A pass evaluates every study at the current time. `move` decisions become migration jobs
//! (skipped when every copy is already on the target or another job holds the study); `delete`
//! decisions become deletions marked with the rule's name, version and the file's digest, which
//! the deletion engine purges after its grace period. At most `max_deletions_per_pass` deletions
//! are marked per pass.

use crate::evaluate::{evaluate, Decision, Outcome};
use crate::facts::StudyFacts;
use crate::rules::{parse_rules, RuleFileError, RuleSet};
use crate::simulate::{SimulationReport, Simulator};
use archive_core::audit::{AuditAction, AuditEvent, AuditOutcome};
use archive_core::catalog::{Catalog, CatalogError};
use archive_core::deletion::{DeletionCause, DeletionError, DeletionRequest};
use archive_core::lifecycle::{LifecycleError, TierMoveRequest};
use archive_core::tier::TierName;
use archive_core::uid::StudyUid;
use archive_core::Archive;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Policy engine failures.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The rule file was refused.
    #[error(transparent)]
    Rules(#[from] RuleFileError),
    /// The rule file cannot be read or written.
    #[error("rule file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// No rule file is configured (`[retention] rules_file`), so there is nothing to reload.
    #[error("no rule file is configured: set [retention] rules_file")]
    NoRuleFile,
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// What one evaluation pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    /// When it started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Studies evaluated.
    pub evaluated: u64,
    /// Migration jobs submitted.
    pub migrations: u64,
    /// Deletions marked.
    pub deletions: u64,
    /// Decisions not applied (another job on the study, a hold since, the per-pass cap).
    pub skipped: u64,
    /// Marked rule deletions undone because the rules in force no longer delete their study.
    pub undone: u64,
    /// Decisions per deciding rule.
    pub by_rule: BTreeMap<String, u64>,
    /// The first errors met.
    pub errors: Vec<String>,
}

struct Inner {
    archive: Arc<Archive>,
    rules: RwLock<Arc<RuleSet>>,
    file: Option<PathBuf>,
    file_stamp: Mutex<Option<std::time::SystemTime>>,
    known_tiers: Vec<String>,
    last_pass: Mutex<Option<PassReport>>,
    pass_lock: tokio::sync::Mutex<()>,
}

/// The retention policy in force over an archive.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("file", &self.inner.file).finish()
    }
}

fn read_file(path: &PathBuf) -> Result<(String, Option<std::time::SystemTime>), PolicyError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| PolicyError::File { path: path.clone(), message: e.to_string() })?;
    let stamp = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((text, stamp))
}

impl PolicyEngine {
    /// Loads the configured rule file (refusing to start on a bad one) or runs with no rules.
    pub async fn open(archive: Arc<Archive>) -> Result<Self, PolicyError> {
        let known_tiers: Vec<String> = archive.tiers().iter().map(|t| t.name().to_string()).collect();
        let file = archive.config().retention.rules_file.clone();
        let (rules, stamp) = match &file {
            Some(path) => {
                let (text, stamp) = read_file(path)?;
                let rules = parse_rules(&text, &known_tiers)?;
                (rules, stamp)
            }
            None => (RuleSet::empty(), None),
        };
        let engine = Self {
            inner: Arc::new(Inner {
                archive,
                rules: RwLock::new(Arc::new(rules)),
                file,
                file_stamp: Mutex::new(stamp),
                known_tiers,
                last_pass: Mutex::new(None),
                pass_lock: tokio::sync::Mutex::new(()),
            }),
        };
        let rules = engine.rules();
        if let Some(path) = &engine.inner.file {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            engine.remember(&text, &rules);
            // The first load of a digest the trail has not seen is a rule change too.
            if !engine.digest_audited(&rules.digest)? {
                engine.audit_change(&rules, &RuleSet::empty(), "vna", &path.display().to_string()).await?;
            }
        }
        Ok(engine)
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.inner.rules.read().clone()
    }

    /// The tiers rules may name.
    pub fn known_tiers(&self) -> &[String] {
        &self.inner.known_tiers
    }

    /// The last evaluation pass.
    pub fn last_pass(&self) -> Option<PassReport> {
        self.inner.last_pass.lock().clone()
    }

    fn digest_audited(&self, digest: &str) -> Result<bool, PolicyError> {
        let records = self.inner.archive.catalog().audit_records(1)?;
        Ok(records.into_iter().flatten().any(|r| {
            r.event.action == AuditAction::PolicyChanged
                && r.event.detail.as_deref().is_some_and(|d| d.contains(digest))
        }))
    }

    /// Keeps the text of an accepted file under `DATA_DIR/policy/DIGEST.toml`.
    fn remember(&self, text: &str, rules: &RuleSet) {
        let dir = self.inner.archive.config().data_dir.join("policy");
        let path = dir.join(format!("{}.toml", rules.digest));
        if path.exists() {
            return;
        }
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
            tracing::warn!(path = %path.display(), error = %e, "could not keep a copy of the rule file");
        }
    }

    async fn audit_change(&self, new: &RuleSet, old: &RuleSet, actor: &str, from: &str) -> Result<(), PolicyError> {
        let changes = new.changes_from(old);
        self.inner
            .archive
            .catalog()
            .append_audit(AuditEvent {
                time: OffsetDateTime::now_utc(),
                action: AuditAction::PolicyChanged,
                actor: actor.to_string(),
                actor_address: from.to_string(),
                objects: vec![],
                reason: None,
                outcome: AuditOutcome::Success,
                detail: Some(format!(
                    "rules {} (previous {}); {} rules, {} floors; {}",
                    new.digest,
                    old.digest,
                    new.rules.len(),
                    new.floors.len(),
                    if changes.is_empty() { "no rule changes".to_string() } else { changes.join(", ") }
                )),
            })
            .await?;
        Ok(())
    }

    /// Validates `text` and, if accepted, makes it the rules in force (written to the rule file
    /// when one is configured). A refused text changes nothing; both outcomes are audited.
    pub async fn replace_rules(&self, text: &str, actor: &str, from: &str) -> Result<Arc<RuleSet>, PolicyError> {
        self.accept(text, actor, from, true).await
    }

    /// Re-reads the rule file (see [`PolicyEngine::replace_rules`]).
    pub async fn reload(&self, actor: &str, from: &str) -> Result<Arc<RuleSet>, PolicyError> {
        let path = self.inner.file.clone().ok_or(PolicyError::NoRuleFile)?;
        let (text, stamp) = read_file(&path)?;
        *self.inner.file_stamp.lock() = stamp;
        self.accept(&text, actor, from, false).await
    }

    async fn accept(&self, text: &str, actor: &str, from: &str, write_file: bool) -> Result<Arc<RuleSet>, PolicyError> {
        let new = match parse_rules(text, &self.inner.known_tiers) {
            Ok(r) => r,
            Err(e) => {
                self.inner
                    .archive
                    .catalog()
                    .append_audit(AuditEvent {
                        time: OffsetDateTime::now_utc(),
                        action: AuditAction::PolicyRefused,
                        actor: actor.to_string(),
                        actor_address: from.to_string(),
                        objects: vec![],
                        reason: None,
                        outcome: AuditOutcome::MinorFailure,
                        detail: Some(format!(
                            "rules {} refused: {e}",
                            archive_core::checksum::Checksum::of(text.as_bytes())
                        )),
                    })
                    .await?;
                tracing::error!(error = %e, "rule file refused; the running rules stay");
                return Err(e.into());
            }
        };
        if write_file {
            if let Some(path) = &self.inner.file {
                let tmp = path.with_extension("toml.new");
                std::fs::write(&tmp, text)
                    .and_then(|()| std::fs::rename(&tmp, path))
                    .map_err(|e| PolicyError::File { path: path.clone(), message: e.to_string() })?;
                *self.inner.file_stamp.lock() = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            }
        }
        let old = self.rules();
        if new.digest == old.digest {
            return Ok(old);
        }
        self.remember(text, &new);
        self.audit_change(&new, &old, actor, from).await?;
        let new = Arc::new(new);
        *self.inner.rules.write() = new.clone();
        tracing::info!(digest = %new.digest, rules = new.rules.len(), "rules in force");
        self.revalidate_marked().await;
        Ok(new)
    }

    /// The facts of one study (blocking: reads the catalog).
    pub fn facts(&self, study: &StudyUid) -> Result<Option<StudyFacts>, PolicyError> {
        let cat = self.inner.archive.catalog();
        let Some(rec) = cat.study(study)? else { return Ok(None) };
        let series = cat.series_of_study(study)?;
        Ok(Some(StudyFacts::from_records(&rec, &series)))
    }

    /// The decision for one study at `at`, with its facts (blocking).
    pub fn explain(&self, study: &StudyUid, at: OffsetDateTime) -> Result<Option<(StudyFacts, Decision)>, PolicyError> {
        let Some(facts) = self.facts(study)? else { return Ok(None) };
        let holds = self.inner.archive.catalog().holds()?;
        let d = evaluate(&self.rules(), &facts, &holds, at);
        Ok(Some((facts, d)))
    }

    /// Visits the facts of every study in key order (blocking).
    pub fn for_each_study(&self, mut f: impl FnMut(StudyFacts)) -> Result<(), PolicyError> {
        let cat = self.inner.archive.catalog();
        let mut after: Option<StudyUid> = None;
        loop {
            let page = cat.study_uids(after.as_ref(), 1000)?;
            let Some(last) = page.last().cloned() else { return Ok(()) };
            for uid in page {
                if let Some(facts) = self.facts(&uid)? {
                    f(facts);
                }
            }
            after = Some(last);
        }
    }

    /// What the archive would hold at `at` under `rules` (the rules in force for `None`);
    /// changes nothing (blocking).
    pub fn simulate(
        &self,
        rules: Option<&RuleSet>,
        at: OffsetDateTime,
        list_limit: usize,
    ) -> Result<SimulationReport, PolicyError> {
        let in_force = self.rules();
        let rules = rules.unwrap_or(&in_force);
        let holds = self.inner.archive.catalog().holds()?;
        let mut sim = Simulator::new(rules, &holds, at, list_limit);
        self.for_each_study(|f| sim.add(&f))?;
        Ok(sim.finish())
    }

    /// Re-decides every marked deletion a rule caused, under the rules in force now: one the
    /// rules (a new floor, a changed rule, newer facts) would no longer delete is undone, audited.
    /// Returns how many were undone.
    pub async fn revalidate_marked(&self) -> usize {
        let archive = &self.inner.archive;
        let deletions = archive.catalog().active_deletions();
        let Ok(holds) = archive.catalog().holds() else { return 0 };
        let rules = self.rules();
        let now = OffsetDateTime::now_utc();
        let mut undone = 0;
        for d in deletions {
            if d.state != archive_core::deletion::DeletionState::Marked
                || !matches!(d.cause, DeletionCause::Rule { .. })
            {
                continue;
            }
            let Ok(Some(facts)) = self.facts(&d.study) else { continue };
            let decision = evaluate(&rules, &facts, &holds, now);
            if decision.outcome == Outcome::Delete {
                continue;
            }
            let why = format!("the rules in force ({}) no longer delete it: {}", rules.digest, decision.summary);
            match archive.deleter().undo(d.id, "policy", "", &why).await {
                Ok(_) => undone += 1,
                Err(e) => {
                    tracing::warn!(deletion = %d.id, error = %e, "could not undo a deletion the rules no longer want")
                }
            }
        }
        undone
    }

    /// A new pass report and the legal holds the pass checks (the report holds the error when
    /// the holds cannot be read).
    fn start_report(&self) -> Result<(PassReport, Vec<archive_core::hold::LegalHold>), PassReport> {
        let mut report = PassReport { started_at: Some(OffsetDateTime::now_utc()), ..Default::default() };
        match self.inner.archive.catalog().holds() {
            Ok(h) => Ok((report, h)),
            Err(e) => {
                report.errors.push(e.to_string());
                Err(report)
            }
        }
    }

    /// Evaluates every study now and applies the decisions.
    pub async fn run_pass(&self) -> PassReport {
        let _one = self.inner.pass_lock.lock().await;
        let (mut report, holds) = match self.start_report() {
            Ok(x) => x,
            Err(report) => return report,
        };
        report.undone = self.revalidate_marked().await as u64;
        // Page by page, so that a pass over millions of studies holds one page of UIDs.
        let mut after: Option<StudyUid> = None;
        loop {
            let archive = self.inner.archive.clone();
            let from = after.clone();
            let page = tokio::task::spawn_blocking(move || archive.catalog().study_uids(from.as_ref(), 1000)).await;
            let page = match page {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    report.errors.push(e.to_string());
                    break;
                }
                Err(e) => {
                    report.errors.push(e.to_string());
                    break;
                }
            };
            let Some(last) = page.last().cloned() else { break };
            for uid in &page {
                self.apply_one(uid, &holds, &mut report).await;
            }
            after = Some(last);
        }
        tracing::info!(
            evaluated = report.evaluated,
            migrations = report.migrations,
            deletions = report.deletions,
            skipped = report.skipped,
            "policy pass done"
        );
        *self.inner.last_pass.lock() = Some(report.clone());
        report
    }

    /// Evaluates some studies now and applies the decisions (after ingest).
    pub async fn run_for(&self, studies: &[StudyUid]) -> PassReport {
        let _one = self.inner.pass_lock.lock().await;
        let (mut report, holds) = match self.start_report() {
            Ok(x) => x,
            Err(report) => return report,
        };
        for uid in studies {
            self.apply_one(uid, &holds, &mut report).await;
        }
        report
    }

    async fn apply_one(&self, uid: &StudyUid, holds: &[archive_core::hold::LegalHold], report: &mut PassReport) {
        let now = OffsetDateTime::now_utc();
        let facts = match self.facts(uid) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                push_error(report, e.to_string());
                return;
            }
        };
        let decision = evaluate(&self.rules(), &facts, holds, now);
        report.evaluated += 1;
        let Some(rule) = decision.rule.clone() else { return };
        let archive = &self.inner.archive;
        match &decision.outcome {
            Outcome::Keep => {}
            Outcome::Move { to } => {
                if facts.tiers.len() == 1 && facts.tiers.contains(to) {
                    return;
                }
                if archive.catalog().is_hidden(uid, None, now) {
                    return;
                }
                let Ok(to_tier) = TierName::new(to.clone()) else { return };
                let req = TierMoveRequest {
                    study: uid.clone(),
                    to: to_tier,
                    from: None,
                    keep_source: false,
                    requested_by: "policy".into(),
                    reason: Some(format!("rule {rule} (rules {})", self.rules().digest)),
                };
                match archive.lifecycle().submit(req) {
                    Ok(_) => {
                        report.migrations += 1;
                        *report.by_rule.entry(rule.to_string()).or_default() += 1;
                    }
                    Err(LifecycleError::Busy { .. }) => report.skipped += 1,
                    Err(e) => push_error(report, format!("study {uid}: {e}")),
                }
            }
            Outcome::Delete => {
                let max = archive.config().retention.max_deletions_per_pass;
                if report.deletions as usize >= max {
                    report.skipped += 1;
                    return;
                }
                let digest = self.rules().digest.clone();
                let req = DeletionRequest {
                    study: uid.clone(),
                    instances: None,
                    requested_by: "policy".into(),
                    requested_from: String::new(),
                    reason: decision.summary.clone(),
                    cause: DeletionCause::Rule { name: rule.name.clone(), version: rule.version, rules_digest: digest },
                    grace: None,
                    hide_immediately: false,
                };
                match archive.deleter().request(req).await {
                    Ok(_) => {
                        report.deletions += 1;
                        *report.by_rule.entry(rule.to_string()).or_default() += 1;
                    }
                    Err(DeletionError::AlreadyMarked { .. }) => {}
                    Err(DeletionError::Held { .. }) => report.skipped += 1,
                    Err(e) => push_error(report, format!("study {uid}: {e}")),
                }
            }
        }
    }

    /// Runs passes every `[retention] evaluate_interval_minutes`, evaluates studies
    /// `evaluate_after_ingest_secs` after their last arrival, and reloads the rule file when it
    /// changes on disk.
    pub fn start(&self) {
        let cfg = self.inner.archive.config().retention.clone();
        if cfg.evaluate_interval_minutes > 0 {
            let this = self.clone();
            let every = Duration::from_secs(cfg.evaluate_interval_minutes * 60);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    this.reload_if_changed().await;
                    this.run_pass().await;
                }
            });
        }
        if cfg.evaluate_after_ingest_secs > 0 {
            let this = self.clone();
            let delay = Duration::from_secs(cfg.evaluate_after_ingest_secs);
            let mut rx = self.inner.archive.ingest().subscribe();
            tokio::spawn(async move {
                let mut due: BTreeMap<StudyUid, tokio::time::Instant> = BTreeMap::new();
                loop {
                    let next = due.values().min().copied();
                    tokio::select! {
                        got = rx.recv() => match got {
                            Ok(uid) => { due.insert(uid, tokio::time::Instant::now() + delay); }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        },
                        _ = async { match next { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                            let now = tokio::time::Instant::now();
                            let ready: Vec<StudyUid> = due.iter().filter(|(_, t)| **t <= now).map(|(u, _)| u.clone()).collect();
                            for u in &ready { due.remove(u); }
                            this.run_for(&ready).await;
                        }
                    }
                }
            });
        }
        if self.inner.file.is_some() {
            let this = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    this.reload_if_changed().await;
                }
            });
        }
    }

    async fn reload_if_changed(&self) {
        let Some(path) = &self.inner.file else { return };
        let stamp = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if stamp == *self.inner.file_stamp.lock() {
            return;
        }
        if let Err(e) = self.reload("vna", &path.display().to_string()).await {
            tracing::error!(error = %e, "changed rule file refused; the running rules stay");
        }
    }
}

fn push_error(report: &mut PassReport, e: String) {
    if report.errors.len() < 20 {
        report.errors.push(e);
    }
}
