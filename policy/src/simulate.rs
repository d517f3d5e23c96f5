//! Simulation: what the archive would hold at a date if the rules ran, without changing anything.

use crate::evaluate::{evaluate, Block, Outcome};
use crate::facts::StudyFacts;
use crate::rules::RuleSet;
use archive_core::hold::LegalHold;
use serde::Serialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// Studies and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Studies.
    pub studies: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Totals {
    fn add(&mut self, bytes: u64) {
        self.studies += 1;
        self.bytes += bytes;
    }
}

/// A study the rules would delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimulatedDeletion {
    /// The study.
    pub study: String,
    /// Its patient (`id^^^issuer`).
    pub patient: String,
    /// Its bytes.
    pub bytes: u64,
    /// The deciding rule.
    pub rule: String,
}

/// The simulated state of the archive at a date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimulationReport {
    /// The date simulated.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The rule file's digest.
    pub rules_digest: String,
    /// Everything evaluated.
    pub evaluated: Totals,
    /// What each tier would hold (a study on two tiers counts on both).
    pub tiers: BTreeMap<String, Totals>,
    /// What would be deleted.
    pub deleted: Totals,
    /// What would be moved, by target tier.
    pub moved: BTreeMap<String, Totals>,
    /// What would stay where it is.
    pub kept: Totals,
    /// Decisions per deciding rule (`(no rule)` when none matched).
    pub by_rule: BTreeMap<String, Totals>,
    /// Studies whose deletion a floor blocked.
    pub blocked_by_floor: Totals,
    /// Studies whose deletion a legal hold blocked.
    pub blocked_by_hold: Totals,
    /// The studies that would be deleted (up to the list limit).
    pub deletions: Vec<SimulatedDeletion>,
    /// Whether `deletions` was cut at the limit.
    pub deletions_truncated: bool,
}

/// Accumulates decisions over a stream of studies.
pub struct Simulator<'a> {
    rules: &'a RuleSet,
    holds: &'a [LegalHold],
    list_limit: usize,
    report: SimulationReport,
}

impl<'a> Simulator<'a> {
    /// A simulation of `rules` at `at` listing at most `list_limit` deletions.
    pub fn new(rules: &'a RuleSet, holds: &'a [LegalHold], at: OffsetDateTime, list_limit: usize) -> Self {
        Self {
            rules,
            holds,
            list_limit,
            report: SimulationReport {
                at,
                rules_digest: rules.digest.clone(),
                evaluated: Totals::default(),
                tiers: BTreeMap::new(),
                deleted: Totals::default(),
                moved: BTreeMap::new(),
                kept: Totals::default(),
                by_rule: BTreeMap::new(),
                blocked_by_floor: Totals::default(),
                blocked_by_hold: Totals::default(),
                deletions: Vec::new(),
                deletions_truncated: false,
            },
        }
    }

    /// Evaluates one study and counts the result.
    pub fn add(&mut self, facts: &StudyFacts) {
        let r = &mut self.report;
        let d = evaluate(self.rules, facts, self.holds, r.at);
        let bytes = facts.size_bytes;
        r.evaluated.add(bytes);
        let rule = d.rule.as_ref().map_or_else(|| "(no rule)".to_string(), |x| x.to_string());
        r.by_rule.entry(rule.clone()).or_default().add(bytes);
        if d.blocked.iter().any(|(_, b)| matches!(b, Block::Hold { .. })) {
            r.blocked_by_hold.add(bytes);
        } else if !d.blocked.is_empty() {
            r.blocked_by_floor.add(bytes);
        }
        match d.outcome {
            Outcome::Delete => {
                r.deleted.add(bytes);
                if r.deletions.len() < self.list_limit {
                    r.deletions.push(SimulatedDeletion {
                        study: facts.study.to_string(),
                        patient: format!("{}^^^{}", facts.patient.patient_id, facts.patient.issuer),
                        bytes,
                        rule,
                    });
                } else {
                    r.deletions_truncated = true;
                }
            }
            Outcome::Move { to } => {
                r.moved.entry(to.clone()).or_default().add(bytes);
                r.tiers.entry(to).or_default().add(bytes);
            }
            Outcome::Keep => {
                r.kept.add(bytes);
                for t in &facts.tiers {
                    r.tiers.entry(t.clone()).or_default().add(bytes);
                }
            }
        }
    }

    /// The report so far.
    pub fn finish(self) -> SimulationReport {
        self.report
    }
}

/// Simulates `rules` over studies at `at`.
pub fn simulate<'f>(
    rules: &RuleSet,
    holds: &[LegalHold],
    studies: impl IntoIterator<Item = &'f StudyFacts>,
    at: OffsetDateTime,
    list_limit: usize,
) -> SimulationReport {
    let mut s = Simulator::new(rules, holds, at, list_limit);
    for f in studies {
        s.add(f);
    }
    s.finish()
}
