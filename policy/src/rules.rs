//! The rule file: ordered rules, retention floors, and their validation.
//!
//! ```toml
//! [[floor]]
//! name = "adults"
//! keep = "10y"                       # after the study date
//! when = { patient_age_min = 18 }
//!
//! [[floor]]
//! name = "minors"
//! keep_until_age = 18                # until the patient is 18 ...
//! plus = "10y"                       # ... and ten years more
//! when = { patient_age_max = 17 }
//!
//! [[rule]]
//! name = "ct-mr-to-warm"
//! version = 1
//! action = "move"
//! to = "warm"
//! when = { modality = ["CT", "MR"], not_accessed_for = "90d", tier = ["hot"] }
//!
//! [[rule]]
//! name = "expired"
//! version = 3
//! action = "delete"
//! when = { older_than = "10y", patient_age_min = 18 }
//! ```
//!
//! Rules are tried in file order; the first whose conditions all hold decides. A deletion that
//! a floor or a legal hold blocks does not decide: the next matching rule does. Floors apply to
//! every study whose conditions do not exclude it (an unknown patient age never excludes), so an
//! incomplete record is kept rather than deleted.
//!
//! Validation refuses, naming the line: TOML that cannot be parsed, unknown keys, unknown tiers,
//! duplicate rule names, and deletion rules that would delete studies a floor must keep.

use crate::period::Period;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Byte counts written `500MB`, `2GiB` or as a plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `123`, `10KB`, `500MB`, `2GB`, `1TB` (powers of 1000) or `KiB`/`MiB`/`GiB`/`TiB`.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return None,
        };
        n.checked_mul(mult).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid size {s:?}: write e.g. 500MB or 2GiB"))),
        }
    }
}

/// Conditions on study facts; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Any of these modalities is in the study (ModalitiesInStudy), case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<Vec<String>>,
    /// Any of these SOP Class UIDs is in the study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop_class: Option<Vec<String>>,
    /// The study date is at least this long ago.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "ser_period")]
    pub older_than: Option<Period>,
    /// The study date is less than this long ago.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "ser_period")]
    pub younger_than: Option<Period>,
    /// No retrieve (nor arrival) for at least this long.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "ser_period")]
    pub not_accessed_for: Option<Period>,
    /// Sent by any of these AE titles (patterns with `*` and `?`, case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ae: Option<Vec<String>>,
    /// Institution Name matches any of these patterns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub institution: Option<Vec<String>>,
    /// Study Description matches this pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The patient was at least this old (years) at the study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_age_min: Option<u32>,
    /// The patient was at most this old (years) at the study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_age_max: Option<u32>,
    /// The study holds at least this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_min: Option<ByteSize>,
    /// The study holds at most this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_max: Option<ByteSize>,
    /// The study has copies on any of these tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Vec<String>>,
}

fn ser_period<S: serde::Serializer>(p: &Option<Period>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_str(&p.to_string()),
        None => s.serialize_none(),
    }
}

/// What a rule does with the studies it matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RuleAction {
    /// Keep the study where it is (stops later rules: an exemption).
    Keep,
    /// Move every copy to this tier.
    Move {
        /// The target tier.
        to: String,
    },
    /// Delete the study, unless a floor or a legal hold keeps it.
    Delete,
}

impl fmt::Display for RuleAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleAction::Keep => write!(f, "keep"),
            RuleAction::Move { to } => write!(f, "move to {to}"),
            RuleAction::Delete => write!(f, "delete"),
        }
    }
}

/// A rule's name and version, as audit records and decisions cite it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    /// The rule's name.
    pub name: String,
    /// The rule's version.
    pub version: u32,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.name, self.version)
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Name and version.
    #[serde(flatten)]
    pub id: RuleRef,
    /// What it is for.
    pub description: Option<String>,
    /// When it applies.
    pub when: Conditions,
    /// What it does.
    #[serde(flatten)]
    pub action: RuleAction,
    /// Line of the rule in its file.
    pub line: usize,
}

/// How long a floor keeps the studies it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Retention {
    /// This long after the study date.
    AfterStudy {
        /// The period.
        #[serde(serialize_with = "ser_period_plain")]
        keep: Period,
    },
    /// Until the patient reaches an age, and a period more.
    UntilAge {
        /// The age in years.
        age: u32,
        /// The period after that birthday.
        #[serde(serialize_with = "ser_period_plain")]
        plus: Period,
    },
}

fn ser_period_plain<S: serde::Serializer>(p: &Period, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string())
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::AfterStudy { keep } => write!(f, "{keep} after the study"),
            Retention::UntilAge { age, plus } => write!(f, "until age {age} plus {plus}"),
        }
    }
}

/// A retention floor no rule can undercut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Floor {
    /// Name.
    pub name: String,
    /// Which studies it covers (an unknown fact never excludes a study).
    pub when: Conditions,
    /// How long it keeps them.
    pub retention: Retention,
    /// Line of the floor in its file.
    pub line: usize,
}

/// A validated rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSet {
    /// Rules in evaluation order.
    pub rules: Vec<Rule>,
    /// Retention floors.
    pub floors: Vec<Floor>,
    /// BLAKE3 of the file's text (hex), to tell versions of the file apart.
    pub digest: String,
}

impl RuleSet {
    /// An empty rule set: every study is kept where it is.
    pub fn empty() -> Self {
        Self { rules: Vec::new(), floors: Vec::new(), digest: archive_core::checksum::Checksum::of(b"").to_string() }
    }

    /// One line per rule (`name vN`), for audit records and change summaries.
    pub fn rule_versions(&self) -> BTreeMap<String, u32> {
        self.rules.iter().map(|r| (r.id.name.clone(), r.id.version)).collect()
    }

    /// What changed from `old` to `self`: added, removed and re-versioned rules, changed floors.
    pub fn changes_from(&self, old: &RuleSet) -> Vec<String> {
        let (a, b) = (old.rule_versions(), self.rule_versions());
        let mut out = Vec::new();
        for (name, v) in &b {
            match a.get(name) {
                None => out.push(format!("added rule {name} v{v}")),
                Some(ov) if ov != v => out.push(format!("rule {name} v{ov} -> v{v}")),
                Some(_) => {}
            }
        }
        for (name, v) in &a {
            if !b.contains_key(name) {
                out.push(format!("removed rule {name} v{v}"));
            }
        }
        let floors =
            |s: &RuleSet| s.floors.iter().map(|f| format!("{} ({})", f.name, f.retention)).collect::<BTreeSet<_>>();
        let (fa, fb) = (floors(old), floors(self));
        for f in fb.difference(&fa) {
            out.push(format!("floor {f} set"));
        }
        for f in fa.difference(&fb) {
            out.push(format!("floor {f} removed"));
        }
        out
    }
}

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// A refused rule file, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("rule file refused: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct RuleFileError {
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    floor: Vec<toml::Spanned<RawFloor>>,
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFloor {
    name: String,
    #[serde(default)]
    when: Conditions,
    keep: Option<Period>,
    keep_until_age: Option<u32>,
    plus: Option<Period>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    version: u32,
    description: Option<String>,
    #[serde(default)]
    when: Conditions,
    action: String,
    to: Option<String>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Parses and validates a rule file against the tiers the archive has.
pub fn parse_rules(text: &str, known_tiers: &[String]) -> Result<RuleSet, RuleFileError> {
    let refuse = |line: Option<usize>, message: String| RuleFileError { problems: vec![Problem { line, message }] };
    let raw: RawFile = toml::from_str(text)
        .map_err(|e| refuse(e.span().map(|s| line_of(text, s.start)), e.message().trim().to_string()))?;
    let mut problems = Vec::new();

    let mut floors = Vec::new();
    for spanned in raw.floor {
        let line = line_of(text, spanned.span().start);
        let f = spanned.into_inner();
        let retention = match (f.keep, f.keep_until_age, f.plus) {
            (Some(keep), None, None) => Retention::AfterStudy { keep },
            (None, Some(age), plus) => Retention::UntilAge { age, plus: plus.unwrap_or_default() },
            _ => {
                problems.push(Problem {
                    line: Some(line),
                    message: format!(
                        "floor {:?} must set either keep = \"PERIOD\" or keep_until_age = AGE (with optional plus = \"PERIOD\")",
                        f.name
                    ),
                });
                continue;
            }
        };
        check_conditions(&f.when, line, known_tiers, &mut problems);
        floors.push(Floor { name: f.name, when: f.when, retention, line });
    }

    let mut rules: Vec<Rule> = Vec::new();
    for spanned in raw.rule {
        let line = line_of(text, spanned.span().start);
        let r = spanned.into_inner();
        if r.name.trim().is_empty() {
            problems.push(Problem { line: Some(line), message: "a rule needs a name".into() });
        }
        if let Some(first) = rules.iter().find(|o| o.id.name == r.name) {
            problems.push(Problem {
                line: Some(line),
                message: format!("rule name {:?} is already used at line {}", r.name, first.line),
            });
        }
        let action = match (r.action.as_str(), r.to) {
            ("move", Some(to)) => {
                if !known_tiers.contains(&to) {
                    problems.push(Problem {
                        line: Some(line),
                        message: format!(
                            "rule {:?} moves to unknown tier {to:?} (tiers: {})",
                            r.name,
                            known_tiers.join(", ")
                        ),
                    });
                }
                RuleAction::Move { to }
            }
            ("move", None) => {
                problems.push(Problem {
                    line: Some(line),
                    message: format!("rule {:?}: action \"move\" needs to = \"TIER\"", r.name),
                });
                continue;
            }
            ("delete", None) => RuleAction::Delete,
            ("keep", None) => RuleAction::Keep,
            ("delete" | "keep", Some(_)) => {
                problems.push(Problem {
                    line: Some(line),
                    message: format!("rule {:?}: only action \"move\" takes `to`", r.name),
                });
                continue;
            }
            (other, _) => {
                problems.push(Problem {
                    line: Some(line),
                    message: format!("rule {:?}: unknown action {other:?} (use move, delete or keep)", r.name),
                });
                continue;
            }
        };
        check_conditions(&r.when, line, known_tiers, &mut problems);
        let rule = Rule {
            id: RuleRef { name: r.name, version: r.version },
            description: r.description,
            when: r.when,
            action,
            line,
        };
        if rule.action == RuleAction::Delete {
            for floor in &floors {
                if let Some(message) = contradiction(&rule, floor) {
                    problems.push(Problem { line: Some(line), message });
                }
            }
        }
        rules.push(rule);
    }

    if !problems.is_empty() {
        return Err(RuleFileError { problems });
    }
    Ok(RuleSet { rules, floors, digest: archive_core::checksum::Checksum::of(text.as_bytes()).to_string() })
}

fn check_conditions(c: &Conditions, line: usize, known_tiers: &[String], problems: &mut Vec<Problem>) {
    if let (Some(min), Some(max)) = (c.patient_age_min, c.patient_age_max) {
        if min > max {
            problems.push(Problem {
                line: Some(line),
                message: format!("patient_age_min {min} is above patient_age_max {max}"),
            });
        }
    }
    if let (Some(min), Some(max)) = (c.size_min, c.size_max) {
        if min > max {
            problems.push(Problem { line: Some(line), message: "size_min is above size_max".into() });
        }
    }
    for t in c.tier.iter().flatten() {
        if !known_tiers.contains(t) {
            problems.push(Problem {
                line: Some(line),
                message: format!("unknown tier {t:?} (tiers: {})", known_tiers.join(", ")),
            });
        }
    }
    for (name, list) in [
        ("modality", &c.modality),
        ("sop_class", &c.sop_class),
        ("source_ae", &c.source_ae),
        ("institution", &c.institution),
        ("tier", &c.tier),
    ] {
        if list.as_ref().is_some_and(|l| l.is_empty()) {
            problems.push(Problem {
                line: Some(line),
                message: format!("{name} lists nothing: remove it or name at least one value"),
            });
        }
    }
}

/// Whether the populations of two condition sets may overlap (conservatively yes).
fn may_overlap(a: &Conditions, b: &Conditions) -> bool {
    let upper = |s: &Vec<String>| s.iter().map(|m| m.trim().to_ascii_uppercase()).collect::<BTreeSet<_>>();
    if let (Some(x), Some(y)) = (&a.modality, &b.modality) {
        if upper(x).is_disjoint(&upper(y)) {
            return false;
        }
    }
    let (amin, amax) = (a.patient_age_min.unwrap_or(0), a.patient_age_max.unwrap_or(u32::MAX));
    let (bmin, bmax) = (b.patient_age_min.unwrap_or(0), b.patient_age_max.unwrap_or(u32::MAX));
    amin <= bmax && bmin <= amax
}

/// Why a deletion rule undercuts a floor, if it does.
fn contradiction(rule: &Rule, floor: &Floor) -> Option<String> {
    if !may_overlap(&rule.when, &floor.when) {
        return None;
    }
    let minimum = match floor.retention {
        Retention::AfterStudy { keep } => keep,
        Retention::UntilAge { plus, .. } => plus,
    };
    let deletes_after = rule.when.older_than;
    let undercuts = match deletes_after {
        None => minimum != Period::default(),
        Some(p) => p.approx_days() < minimum.approx_days(),
    };
    undercuts.then(|| {
        format!(
            "rule {:?} deletes studies {} but floor {:?} (line {}) keeps the studies it covers {}; \
             raise older_than to at least {minimum} or narrow the rule so that the floor cannot apply",
            rule.id.name,
            match deletes_after {
                Some(p) => format!("older than {p}"),
                None => "of any age".to_string(),
            },
            floor.name,
            floor.line,
            floor.retention,
        )
    })
}
