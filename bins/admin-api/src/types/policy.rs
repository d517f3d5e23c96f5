//! The retention policy: rules in force, passes, simulations and explanations.

use super::Totals;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

/// A rule's name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleRef {
    /// Rule name.
    pub name: String,
    /// Rule version.
    pub version: u32,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} v{}", self.name, self.version)
    }
}

/// Conditions on a study's facts; every condition given must hold. Periods are written
/// like `7y`, `6m`, `30d` or `1y6m`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Conditions {
    /// Any of these modalities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<Vec<String>>,
    /// Any of these SOP classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop_class: Option<Vec<String>>,
    /// Study date (or reception) older than this period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<String>,
    /// Study date (or reception) younger than this period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub younger_than: Option<String>,
    /// Not retrieved for this period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_accessed_for: Option<String>,
    /// Sent by any of these AE titles (wildcards `*`, `?`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ae: Option<Vec<String>>,
    /// Institution Name matches any of these patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub institution: Option<Vec<String>>,
    /// Study Description matches this pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Patient at least this old at the study (years).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_age_min: Option<u32>,
    /// Patient at most this old at the study (years).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_age_max: Option<u32>,
    /// At least this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_min: Option<u64>,
    /// At most this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_max: Option<u64>,
    /// Copies on any of these tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Vec<String>>,
}

/// What a rule does to the studies it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RuleAction {
    /// Leave them where they are.
    Keep,
    /// Move them to a tier.
    Move {
        /// The tier.
        to: String,
    },
    /// Delete them.
    Delete,
}

/// One rule of the rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rule {
    /// Name and version.
    pub rule: RuleRef,
    /// What it is for.
    pub description: Option<String>,
    /// When it applies.
    pub when: Conditions,
    /// What it does.
    pub action: RuleAction,
    /// Its line in the rule file.
    pub line: usize,
}

/// How long a floor keeps studies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Retention {
    /// A period after the study date.
    AfterStudy {
        /// The period.
        keep: String,
    },
    /// Until the patient reaches an age, plus a period.
    UntilAge {
        /// Age in years.
        age: u32,
        /// And then this period.
        plus: String,
    },
}

/// A retention floor: studies it covers are not deleted before it ends, whatever the rules say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Floor {
    /// Name.
    pub name: String,
    /// Which studies it covers.
    pub when: Conditions,
    /// How long it keeps them.
    pub retention: Retention,
    /// Its line in the rule file.
    pub line: usize,
}

/// The last (or current) evaluation pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PassReport {
    /// When it started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// Studies evaluated.
    pub evaluated: u64,
    /// Tier moves submitted.
    pub migrations: u64,
    /// Deletions marked.
    pub deletions: u64,
    /// Studies skipped (busy, held, errors).
    pub skipped: u64,
    /// Marked deletions undone because the rules no longer delete them.
    pub undone: u64,
    /// Studies decided per rule.
    pub by_rule: BTreeMap<String, u64>,
    /// Errors met.
    pub errors: Vec<String>,
}

/// `GET /api/policy`: the rules in force and the last pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    /// The configured rule file.
    pub rules_file: Option<String>,
    /// Digest of the rules in force.
    pub digest: String,
    /// The rules, in order.
    pub rules: Vec<Rule>,
    /// The floors.
    pub floors: Vec<Floor>,
    /// Tiers the rules may name.
    pub tiers: Vec<String>,
    /// The last pass.
    pub last_pass: Option<PassReport>,
}

/// `PUT /api/policy`, `POST /api/policy/reload`: the rules now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RulesAccepted {
    /// Digest of the rules now in force.
    pub digest: String,
    /// Rules.
    pub rules: u64,
    /// Floors.
    pub floors: u64,
}

/// Query of `/api/policy/simulate` and `/api/policy/explain/{study}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// The date to decide for (YYYY-MM-DD or RFC 3339; now by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Most deletions to list (simulate only; default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One study a simulation would delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SimulatedDeletion {
    /// Study Instance UID.
    pub study: String,
    /// Its patient.
    pub patient: String,
    /// Its bytes.
    pub bytes: u64,
    /// The rule that deletes it.
    pub rule: String,
}

/// `GET|POST /api/policy/simulate`: what the rules would do at a date; changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SimulationReport {
    /// The simulated date.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Digest of the simulated rules.
    pub rules_digest: String,
    /// Studies evaluated.
    pub evaluated: Totals,
    /// What each tier would hold afterwards.
    pub tiers: BTreeMap<String, Totals>,
    /// Deleted.
    pub deleted: Totals,
    /// Moved, per target tier.
    pub moved: BTreeMap<String, Totals>,
    /// Kept where they are.
    pub kept: Totals,
    /// Decided, per rule.
    pub by_rule: BTreeMap<String, Totals>,
    /// Deletions a floor blocks.
    pub blocked_by_floor: Totals,
    /// Deletions a legal hold blocks.
    pub blocked_by_hold: Totals,
    /// The deletions, up to the limit.
    pub deletions: Vec<SimulatedDeletion>,
    /// More deletions than the limit.
    pub deletions_truncated: bool,
}

/// The facts of a study the rules look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StudyFacts {
    /// Study Instance UID.
    pub study: String,
    /// Patient (ID, or ID^^^ISSUER).
    pub patient: String,
    /// Accession Number.
    pub accession: Option<String>,
    /// Modalities.
    pub modalities: Vec<String>,
    /// SOP classes.
    pub sop_classes: Vec<String>,
    /// Study date (YYYY-MM-DD).
    pub study_date: Option<String>,
    /// When it was received.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// When it was last retrieved.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_access: Option<OffsetDateTime>,
    /// AE titles (or HTTP users) that sent it.
    pub source_aes: Vec<String>,
    /// Institution Name.
    pub institution: Option<String>,
    /// Study Description.
    pub description: Option<String>,
    /// Patient's birth date (YYYY-MM-DD).
    pub patient_birth_date: Option<String>,
    /// Patient's Age as recorded, in years.
    pub patient_age_recorded: Option<u32>,
    /// Bytes.
    pub size_bytes: u64,
    /// Instances.
    pub instance_count: u64,
    /// Tiers holding copies.
    pub tiers: Vec<String>,
}

/// The result of one condition of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Truth {
    /// It holds.
    Yes,
    /// It does not.
    No,
    /// The facts needed are missing.
    Unknown,
}

/// One condition of a rule tested against a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConditionResult {
    /// The condition's name, e.g. `older_than`.
    pub condition: String,
    /// Whether it holds.
    pub result: Truth,
    /// The facts and arithmetic behind the result.
    pub detail: String,
}

/// One rule tested against a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RuleTrace {
    /// The rule.
    pub rule: RuleRef,
    /// Its action, e.g. `delete` or `move to warm`.
    pub action: String,
    /// Every condition held.
    pub matched: bool,
    /// Each condition.
    pub conditions: Vec<ConditionResult>,
}

/// What stopped a rule's deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Block {
    /// A retention floor.
    Floor {
        /// The rule whose deletion was blocked.
        rule: RuleRef,
        /// The floor.
        floor: String,
        /// Until when (YYYY-MM-DD), when known.
        until: Option<String>,
        /// Why.
        detail: String,
    },
    /// A legal hold.
    Hold {
        /// The rule whose deletion was blocked.
        rule: RuleRef,
        /// The hold's id.
        hold: u64,
        /// Why.
        detail: String,
    },
}

/// What the rules decide for a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Outcome {
    /// Leave it.
    Keep,
    /// Move it to a tier.
    Move {
        /// The tier.
        to: String,
    },
    /// Delete it.
    Delete,
}

/// A decision with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    /// What happens.
    pub outcome: Outcome,
    /// The rule that decided (none: no rule matched).
    pub rule: Option<RuleRef>,
    /// The date decided for.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Deletions that floors or holds blocked.
    pub blocked: Vec<Block>,
    /// Floors keep the study until this date (YYYY-MM-DD).
    pub retained_until: Option<String>,
    /// Every rule tested, in order.
    pub trace: Vec<RuleTrace>,
    /// One sentence for a person.
    pub summary: String,
}

/// `GET /api/policy/explain/{study}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Explanation {
    /// The facts the rules saw.
    pub facts: StudyFacts,
    /// The decision.
    pub decision: Decision,
}
