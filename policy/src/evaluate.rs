//! Evaluation: a pure function from a study's facts, the rules, the legal holds and a date
//! to a decision with its explanation.

use crate::facts::StudyFacts;
use crate::rules::{Conditions, Floor, Retention, RuleAction, RuleRef, RuleSet};
use archive_core::hold::{HoldId, LegalHold};
use serde::Serialize;
use time::{Date, OffsetDateTime};

/// The result of testing one condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Truth {
    /// The condition holds.
    Yes,
    /// It does not.
    No,
    /// The facts needed are missing (e.g. no birth date nor age).
    Unknown,
}

impl Truth {
    fn of(b: bool) -> Self {
        if b {
            Truth::Yes
        } else {
            Truth::No
        }
    }
}

/// One condition as tested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConditionResult {
    /// The condition's key in the rule file.
    pub condition: &'static str,
    /// Whether it held.
    pub result: Truth,
    /// What was compared (`study date 2012-03-01 + 10y = 2022-03-01 <= 2026-11-23`).
    pub detail: String,
}

/// One rule as tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTrace {
    /// The rule.
    pub rule: RuleRef,
    /// Its action.
    pub action: String,
    /// Whether all its conditions held.
    pub matched: bool,
    /// Each condition.
    pub conditions: Vec<ConditionResult>,
}

/// What stopped a deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Block {
    /// A retention floor.
    Floor {
        /// The floor's name.
        floor: String,
        /// Until when it keeps the study (`None`: indefinitely, the facts to compute it are missing).
        until: Option<Date>,
        /// Why.
        detail: String,
    },
    /// A legal hold.
    Hold {
        /// The hold.
        hold: HoldId,
        /// What it covers and why.
        detail: String,
    },
}

/// What the policy wants done with a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Outcome {
    /// Leave it where it is.
    Keep,
    /// Move every copy to a tier.
    Move {
        /// The target tier.
        to: String,
    },
    /// Delete it.
    Delete,
}

/// A decision with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What to do.
    pub outcome: Outcome,
    /// The rule that decided (none: no rule matched, the study is kept).
    pub rule: Option<RuleRef>,
    /// The date the decision is for.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Deletion rules that matched but were blocked, and by what.
    pub blocked: Vec<(RuleRef, Block)>,
    /// The latest date any floor keeps the study until (`None` if no floor covers it).
    pub retained_until: Option<Date>,
    /// Every rule tried, in order, up to the deciding one.
    pub trace: Vec<RuleTrace>,
    /// One sentence for people.
    pub summary: String,
}

/// Tests a condition set; `Yes` only when every condition given holds.
pub fn test_conditions(c: &Conditions, f: &StudyFacts, at: OffsetDateTime) -> Vec<ConditionResult> {
    let today = at.date();
    let mut out = Vec::new();
    let mut push = |condition: &'static str, result: Truth, detail: String| {
        out.push(ConditionResult { condition, result, detail })
    };
    if let Some(list) = &c.modality {
        let hit = f.modalities.iter().any(|m| list.iter().any(|x| x.trim().eq_ignore_ascii_case(m)));
        push("modality", Truth::of(hit), format!("study has {:?}, rule wants any of {list:?}", f.modalities));
    }
    if let Some(list) = &c.sop_class {
        let hit = f.sop_classes.iter().any(|s| list.iter().any(|x| x.trim() == s));
        push(
            "sop_class",
            Truth::of(hit),
            format!("study has {} SOP classes, rule wants any of {list:?}", f.sop_classes.len()),
        );
    }
    let reference = f.reference_date();
    let source = if f.study_date.is_some() { "study date" } else { "received" };
    if let Some(p) = c.older_than {
        let due = p.after(reference);
        push("older_than", Truth::of(due <= today), format!("{source} {reference} + {p} = {due}, date {today}"));
    }
    if let Some(p) = c.younger_than {
        let due = p.after(reference);
        push("younger_than", Truth::of(due > today), format!("{source} {reference} + {p} = {due}, date {today}"));
    }
    if let Some(p) = c.not_accessed_for {
        let last = f.last_used();
        let due = p.after(last);
        let what = if f.last_access.is_some() { "last retrieve" } else { "never retrieved, received" };
        push("not_accessed_for", Truth::of(due <= today), format!("{what} {last} + {p} = {due}, date {today}"));
    }
    if let Some(list) = &c.source_ae {
        let hit = f.source_aes.iter().any(|ae| list.iter().any(|p| wildcard_match(p, ae)));
        push("source_ae", Truth::of(hit), format!("sent by {:?}, rule wants {list:?}", f.source_aes));
    }
    if let Some(list) = &c.institution {
        match &f.institution {
            Some(i) => push(
                "institution",
                Truth::of(list.iter().any(|p| wildcard_match(p, i))),
                format!("institution {i:?}, rule wants {list:?}"),
            ),
            None => push("institution", Truth::No, "no institution recorded".into()),
        }
    }
    if let Some(p) = &c.description {
        match &f.description {
            Some(d) => {
                push("description", Truth::of(wildcard_match(p, d)), format!("description {d:?}, pattern {p:?}"))
            }
            None => push("description", Truth::No, "no study description".into()),
        }
    }
    let age = f.patient_age_at_study();
    for (condition, bound, is_min) in
        [("patient_age_min", c.patient_age_min, true), ("patient_age_max", c.patient_age_max, false)]
    {
        if let Some(b) = bound {
            match age {
                Some(a) => {
                    let ok = if is_min { a >= b } else { a <= b };
                    push(condition, Truth::of(ok), format!("patient was {a} at the study, bound {b}"));
                }
                None => push(condition, Truth::Unknown, "patient age unknown (no birth date nor age)".into()),
            }
        }
    }
    if let Some(min) = c.size_min {
        push("size_min", Truth::of(f.size_bytes >= min.0), format!("{} bytes, min {}", f.size_bytes, min.0));
    }
    if let Some(max) = c.size_max {
        push("size_max", Truth::of(f.size_bytes <= max.0), format!("{} bytes, max {}", f.size_bytes, max.0));
    }
    if let Some(list) = &c.tier {
        let hit = f.tiers.iter().any(|t| list.contains(t));
        push("tier", Truth::of(hit), format!("on {:?}, rule wants any of {list:?}", f.tiers));
    }
    out
}

/// Until when a floor keeps a study: `Some(None)` indefinitely (facts missing), `None` when the
/// floor does not cover it.
pub fn floor_until(floor: &Floor, f: &StudyFacts, at: OffsetDateTime) -> Option<(Option<Date>, String)> {
    let results = test_conditions(&floor.when, f, at);
    if results.iter().any(|r| r.result == Truth::No) {
        return None;
    }
    Some(match floor.retention {
        Retention::AfterStudy { keep } => {
            let until = keep.after(f.reference_date());
            (Some(until), format!("floor {:?}: {keep} after {}, until {until}", floor.name, f.reference_date()))
        }
        Retention::UntilAge { age, plus } => match f.patient_birth_date {
            Some(birth) => {
                let until = plus.after(crate::period::Period::years(age).after(birth));
                (Some(until), format!("floor {:?}: born {birth}, age {age} plus {plus}, until {until}", floor.name))
            }
            None => (
                None,
                format!("floor {:?}: keeps until age {age} plus {plus}, and the birth date is unknown", floor.name),
            ),
        },
    })
}

/// Decides what to do with one study at `at`.
pub fn evaluate(rules: &RuleSet, facts: &StudyFacts, holds: &[LegalHold], at: OffsetDateTime) -> Decision {
    let today = at.date();
    // The floors that cover the study, and the latest date among them.
    let mut floor_blocks: Vec<Block> = Vec::new();
    let mut retained_until: Option<Date> = None;
    let mut indefinitely = false;
    for floor in &rules.floors {
        if let Some((until, detail)) = floor_until(floor, facts, at) {
            match until {
                Some(d) => retained_until = Some(retained_until.map_or(d, |r| r.max(d))),
                None => indefinitely = true,
            }
            if until.is_none_or(|d| d > today) {
                floor_blocks.push(Block::Floor { floor: floor.name.clone(), until, detail });
            }
        }
    }
    if indefinitely {
        retained_until = Some(Date::MAX);
    }
    let hold = archive_core::hold::first_covering(holds, &facts.study, &facts.patient, facts.accession.as_deref());

    let mut trace = Vec::new();
    let mut blocked = Vec::new();
    for rule in &rules.rules {
        let conditions = test_conditions(&rule.when, facts, at);
        let matched = conditions.iter().all(|c| c.result == Truth::Yes);
        trace.push(RuleTrace { rule: rule.id.clone(), action: rule.action.to_string(), matched, conditions });
        if !matched {
            continue;
        }
        let outcome = match &rule.action {
            RuleAction::Keep => Outcome::Keep,
            RuleAction::Move { to } => Outcome::Move { to: to.clone() },
            RuleAction::Delete => {
                if let Some(h) = hold {
                    blocked.push((
                        rule.id.clone(),
                        Block::Hold { hold: h.id, detail: format!("legal hold {} on {}: {}", h.id, h.scope, h.reason) },
                    ));
                    continue;
                }
                if let Some(b) = floor_blocks.first() {
                    blocked.push((rule.id.clone(), b.clone()));
                    continue;
                }
                Outcome::Delete
            }
        };
        let summary = match &outcome {
            Outcome::Keep => format!("kept by rule {}", rule.id),
            Outcome::Move { to } => format!("move to {to} by rule {}", rule.id),
            Outcome::Delete => format!("delete by rule {}", rule.id),
        };
        let summary = with_blocks(summary, &blocked);
        return Decision { outcome, rule: Some(rule.id.clone()), at, blocked, retained_until, trace, summary };
    }
    let summary = with_blocks("no rule matched: kept where it is".to_string(), &blocked);
    Decision { outcome: Outcome::Keep, rule: None, at, blocked, retained_until, trace, summary }
}

fn with_blocks(summary: String, blocked: &[(RuleRef, Block)]) -> String {
    if blocked.is_empty() {
        return summary;
    }
    let why: Vec<String> = blocked
        .iter()
        .map(|(r, b)| match b {
            Block::Floor { floor, until: Some(d), .. } => format!("deletion by {r} blocked by floor {floor} until {d}"),
            Block::Floor { floor, until: None, .. } => format!("deletion by {r} blocked by floor {floor} indefinitely"),
            Block::Hold { hold, .. } => format!("deletion by {r} blocked by legal hold {hold}"),
        })
        .collect();
    format!("{summary} ({})", why.join("; "))
}

/// Case-insensitive match with `*` (any run) and `?` (one character).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.trim().to_lowercase().chars().collect();
    let t: Vec<char> = text.trim().to_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}
