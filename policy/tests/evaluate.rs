//! Rule evaluation, table-driven: every condition, floors, holds and ordering.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::hold::{HoldId, HoldScope, LegalHold};
use archive_core::model::PatientKey;
use archive_core::uid::StudyUid;
use policy::evaluate::{evaluate, Block, Outcome, Truth};
use policy::facts::StudyFacts;
use policy::parse_rules;
use std::collections::BTreeSet;
use time::macros::{date, datetime};
use time::OffsetDateTime;

const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

fn tiers() -> Vec<String> {
    ["hot", "warm", "cold"].iter().map(|s| s.to_string()).collect()
}

/// An adult CT from 2020, received then, never read, on hot.
fn base() -> StudyFacts {
    StudyFacts {
        study: StudyUid::new("1.2.3.4").unwrap(),
        patient: PatientKey::new("HOSP_A", "P1"),
        accession: Some("ACC1".into()),
        modalities: BTreeSet::from(["CT".to_string()]),
        sop_classes: BTreeSet::from(["1.2.840.10008.5.1.4.1.1.2".to_string()]),
        study_date: Some(date!(2020 - 03 - 01)),
        received_at: datetime!(2020-03-01 10:00 UTC),
        last_access: None,
        source_aes: BTreeSet::from(["CT_SCANNER_1".to_string()]),
        institution: Some("General Hospital".into()),
        description: Some("CT CHEST W/O CONTRAST".into()),
        patient_birth_date: Some(date!(1970 - 01 - 01)),
        patient_age_recorded: None,
        size_bytes: 200_000_000,
        instance_count: 400,
        tiers: BTreeSet::from(["hot".to_string()]),
    }
}

fn one_rule(when: &str) -> policy::RuleSet {
    parse_rules(
        &format!("[[rule]]\nname = \"r\"\nversion = 1\naction = \"move\"\nto = \"warm\"\nwhen = {{ {when} }}\n"),
        &tiers(),
    )
    .unwrap_or_else(|e| panic!("{when}: {e}"))
}

#[test]
fn every_condition_matches_and_misses() {
    let young = |f: &mut StudyFacts| f.patient_birth_date = Some(date!(2015 - 01 - 01));
    let accessed = |f: &mut StudyFacts| f.last_access = Some(datetime!(2026-10-01 00:00 UTC));
    let no_date = |f: &mut StudyFacts| f.study_date = None;
    let no_age = |f: &mut StudyFacts| f.patient_birth_date = None;
    let recorded_age = |f: &mut StudyFacts| {
        f.patient_birth_date = None;
        f.patient_age_recorded = Some(12);
    };
    let none = |_: &mut StudyFacts| {};
    #[allow(clippy::type_complexity)]
    let table: Vec<(&str, &dyn Fn(&mut StudyFacts), bool)> = vec![
        ("modality = [\"CT\"]", &none, true),
        ("modality = [\"ct\", \"MR\"]", &none, true),
        ("modality = [\"MR\"]", &none, false),
        ("sop_class = [\"1.2.840.10008.5.1.4.1.1.2\"]", &none, true),
        ("sop_class = [\"1.2.840.10008.5.1.4.1.1.4\"]", &none, false),
        ("older_than = \"6y\"", &none, true),
        ("older_than = \"7y\"", &none, false),
        ("older_than = \"6y8m22d\"", &none, true),
        ("older_than = \"6y8m23d\"", &none, false),
        // Without a study date, ages count from the day the archive received it.
        ("older_than = \"6y\"", &no_date, true),
        ("younger_than = \"7y\"", &none, true),
        ("younger_than = \"6y\"", &none, false),
        ("not_accessed_for = \"1y\"", &none, true),
        ("not_accessed_for = \"1y\"", &accessed, false),
        ("not_accessed_for = \"30d\"", &accessed, true),
        ("source_ae = [\"CT_SCANNER_*\"]", &none, true),
        ("source_ae = [\"MR_*\"]", &none, false),
        ("institution = [\"general*\"]", &none, true),
        ("institution = [\"St. Mary\"]", &none, false),
        ("description = \"*chest*\"", &none, true),
        ("description = \"*HEAD*\"", &none, false),
        ("patient_age_min = 18", &none, true),
        ("patient_age_min = 18", &young, false),
        ("patient_age_max = 17", &young, true),
        ("patient_age_max = 17", &none, false),
        ("patient_age_max = 17", &no_age, false),
        ("patient_age_max = 17", &recorded_age, true),
        ("size_min = \"100MB\"", &none, true),
        ("size_min = \"1GiB\"", &none, false),
        ("size_max = 200000000", &none, true),
        ("size_max = \"199MB\"", &none, false),
        ("tier = [\"hot\"]", &none, true),
        ("tier = [\"warm\", \"cold\"]", &none, false),
        ("modality = [\"CT\"], older_than = \"5y\", tier = [\"hot\"]", &none, true),
        ("modality = [\"CT\"], older_than = \"5y\", tier = [\"cold\"]", &none, false),
    ];
    for (when, adjust, expected) in table {
        let rules = one_rule(when);
        let mut f = base();
        adjust(&mut f);
        let d = evaluate(&rules, &f, &[], NOW);
        let moved = d.outcome == Outcome::Move { to: "warm".into() };
        assert_eq!(moved, expected, "{when}: {}\n{:#?}", d.summary, d.trace);
        // The explanation names each condition tested.
        assert!(!d.trace[0].conditions.is_empty());
    }
}

#[test]
fn unknown_age_is_unknown_not_false() {
    let rules = one_rule("patient_age_min = 18");
    let mut f = base();
    f.patient_birth_date = None;
    let d = evaluate(&rules, &f, &[], NOW);
    assert_eq!(d.outcome, Outcome::Keep);
    assert_eq!(d.trace[0].conditions[0].result, Truth::Unknown);
}

const FLOORS: &str = r#"
[[floor]]
name = "adults"
keep = "10y"
when = { patient_age_min = 18 }

[[floor]]
name = "minors"
keep_until_age = 18
plus = "10y"
when = { patient_age_max = 17 }
"#;

fn with_floors(rules: &str) -> policy::RuleSet {
    parse_rules(&format!("{FLOORS}\n{rules}"), &tiers()).unwrap()
}

const DELETE_AFTER_10Y: &str = r#"
[[rule]]
name = "expired"
version = 4
action = "delete"
when = { older_than = "10y" }

[[rule]]
name = "archive"
version = 1
action = "move"
to = "cold"
when = { older_than = "2y" }
"#;

#[test]
fn floors_keep_studies_rules_would_delete() {
    let rules = with_floors(DELETE_AFTER_10Y);
    // Adult, study 2015-01-01: 10y floor passed in 2025 → deleted.
    let mut adult = base();
    adult.study_date = Some(date!(2015 - 01 - 01));
    let d = evaluate(&rules, &adult, &[], NOW);
    assert_eq!(d.outcome, Outcome::Delete, "{}", d.summary);
    assert_eq!(d.rule.as_ref().unwrap().to_string(), "expired v4");
    assert_eq!(d.retained_until, Some(date!(2025 - 01 - 01)));

    // A child born 2012, study 2015: kept until 2030 + 10y = 2040; the next rule moves it to cold.
    let mut child = adult.clone();
    child.patient_birth_date = Some(date!(2012 - 05 - 05));
    let d = evaluate(&rules, &child, &[], NOW);
    assert_eq!(d.outcome, Outcome::Move { to: "cold".into() }, "{}", d.summary);
    assert_eq!(d.retained_until, Some(date!(2040 - 05 - 05)));
    match &d.blocked[..] {
        [(r, Block::Floor { floor, until, .. })] => {
            assert_eq!(r.name, "expired");
            assert_eq!(floor, "minors");
            assert_eq!(*until, Some(date!(2040 - 05 - 05)));
        }
        other => panic!("{other:?}"),
    }
    assert!(d.summary.contains("blocked by floor minors until 2040-05-05"), "{}", d.summary);
    // In 2041 the minors floor has passed.
    let d = evaluate(&rules, &child, &[], datetime!(2041-01-01 0:00 UTC));
    assert_eq!(d.outcome, Outcome::Delete);

    // Unknown age: both floors may apply; the minors floor cannot be computed → kept indefinitely.
    let mut unknown = adult.clone();
    unknown.patient_birth_date = None;
    let d = evaluate(&rules, &unknown, &[], NOW);
    assert_ne!(d.outcome, Outcome::Delete, "{}", d.summary);
    assert!(d.summary.contains("indefinitely"), "{}", d.summary);
}

#[test]
fn legal_holds_block_deletion_by_patient_study_or_accession() {
    let rules = with_floors(DELETE_AFTER_10Y);
    let mut f = base();
    f.study_date = Some(date!(2014 - 01 - 01));
    let hold = |id, scope| LegalHold {
        v: 1,
        id: HoldId(id),
        scope,
        reason: "case 42".into(),
        set_by: "counsel".into(),
        set_at: NOW,
    };
    let scopes = [
        HoldScope::Patient { patient: PatientKey::new("HOSP_A", "P1") },
        HoldScope::Study { study: StudyUid::new("1.2.3.4").unwrap() },
        HoldScope::Accession { accession: "ACC1".into() },
    ];
    for (i, scope) in scopes.into_iter().enumerate() {
        let holds = [hold(i as u64 + 1, scope)];
        let d = evaluate(&rules, &f, &holds, NOW);
        assert_eq!(d.outcome, Outcome::Move { to: "cold".into() }, "{}", d.summary);
        assert!(matches!(d.blocked[0].1, Block::Hold { .. }));
    }
    // Same patient ID from another issuer is another patient: not held.
    let other = [hold(9, HoldScope::Patient { patient: PatientKey::new("HOSP_B", "P1") })];
    assert_eq!(evaluate(&rules, &f, &other, NOW).outcome, Outcome::Delete);
}

#[test]
fn first_matching_rule_decides_and_keep_exempts() {
    let text = r#"
[[rule]]
name = "research-exempt"
version = 1
action = "keep"
when = { institution = ["*Research*"] }

[[rule]]
name = "ct-warm"
version = 2
action = "move"
to = "warm"
when = { modality = ["CT"] }

[[rule]]
name = "all-cold"
version = 1
action = "move"
to = "cold"
"#;
    let rules = parse_rules(text, &tiers()).unwrap();
    let f = base();
    let d = evaluate(&rules, &f, &[], NOW);
    assert_eq!(d.outcome, Outcome::Move { to: "warm".into() });
    assert_eq!(d.trace.len(), 2, "stops at the deciding rule");
    let mut mr = base();
    mr.modalities = BTreeSet::from(["MR".into()]);
    assert_eq!(evaluate(&rules, &mr, &[], NOW).outcome, Outcome::Move { to: "cold".into() });
    let mut research = base();
    research.institution = Some("Brain Research Institute".into());
    let d = evaluate(&rules, &research, &[], NOW);
    assert_eq!(d.outcome, Outcome::Keep);
    assert_eq!(d.rule.unwrap().name, "research-exempt");
    // No rules: kept, no rule.
    let d = evaluate(&policy::RuleSet::empty(), &f, &[], NOW);
    assert_eq!((d.outcome, d.rule), (Outcome::Keep, None));
}

#[test]
fn bad_rule_files_are_refused_naming_the_line() {
    let cases: Vec<(String, usize, &str)> = vec![
        ("[[rule]]\nname = \"a\"\nversion = 1\naction = \"move\"\nto = \"glacier\"\n".into(), 1, "unknown tier \"glacier\""),
        ("[[rule]]\nname = \"a\"\nversion = 1\naction = \"move\"\nto = \"warm\"\nwhen = { modalty = [\"CT\"] }\n".into(), 6, "unknown field `modalty`"),
        ("\n\n[[rule]]\nname = \"a\"\nversion = 1\naction = \"shred\"\n".into(), 3, "unknown action"),
        ("[[rule]]\nname = \"a\"\nversion = \"one\"\naction = \"keep\"\n".into(), 3, "invalid type"),
        ("[[rule]\nname = \"a\"\n".into(), 1, ""),
        ("[[rule]]\nname = \"a\"\nversion = 1\naction = \"keep\"\nwhen = { older_than = \"ten years\" }\n".into(), 5, "invalid period"),
        ("[[rule]]\nname = \"a\"\nversion = 1\naction = \"keep\"\n\n[[rule]]\nname = \"a\"\nversion = 1\naction = \"keep\"\n".into(), 6, "already used at line 1"),
        (format!("{FLOORS}\n[[rule]]\nname = \"too-soon\"\nversion = 1\naction = \"delete\"\nwhen = {{ older_than = \"5y\" }}\n"), 13, "floor \"adults\""),
        (format!("{FLOORS}\n[[rule]]\nname = \"anything\"\nversion = 1\naction = \"delete\"\n"), 13, "of any age"),
        ("[[floor]]\nname = \"x\"\n".into(), 1, "must set either keep"),
    ];
    for (text, line, needle) in cases {
        let err = parse_rules(&text, &tiers()).expect_err(&text);
        let p = &err.problems[0];
        assert_eq!(p.line, Some(line), "{text}\n→ {err}");
        assert!(err.to_string().contains(needle), "{text}\n→ {err}");
        assert!(err.to_string().contains(&format!("line {line}")), "{err}");
    }
    // A deletion rule narrowed to minors' complement or past the floors is accepted.
    let ok = format!("{FLOORS}\n[[rule]]\nname = \"old-adults\"\nversion = 1\naction = \"delete\"\nwhen = {{ older_than = \"12y\", patient_age_min = 18 }}\n");
    parse_rules(&ok, &tiers()).unwrap();
}

#[test]
fn changes_between_versions_are_listed() {
    let a = parse_rules("[[rule]]\nname = \"a\"\nversion = 1\naction = \"keep\"\n\n[[rule]]\nname = \"b\"\nversion = 1\naction = \"keep\"\n", &tiers()).unwrap();
    let b = parse_rules("[[rule]]\nname = \"a\"\nversion = 2\naction = \"keep\"\n\n[[rule]]\nname = \"c\"\nversion = 1\naction = \"keep\"\n", &tiers()).unwrap();
    assert_ne!(a.digest, b.digest);
    assert_eq!(b.changes_from(&a), vec!["rule a v1 -> v2", "added rule c v1", "removed rule b v1"]);
}
