//! Simulation over a synthetic archive of 15 years (one study a day, 2012-2026) with counts
//! worked out independently (by calendar arithmetic outside the engine).
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

use archive_core::hold::{HoldId, HoldScope, LegalHold};
use archive_core::model::PatientKey;
use archive_core::uid::StudyUid;
use policy::facts::StudyFacts;
use policy::parse_rules;
use policy::simulate::simulate;
use std::collections::BTreeSet;
use time::macros::{date, datetime};
use time::Duration;

const RULES: &str = r#"
[[floor]]
name = "adults"
keep = "10y"
when = { patient_age_min = 18 }

[[floor]]
name = "minors"
keep_until_age = 18
plus = "10y"
when = { patient_age_max = 17 }

[[rule]]
name = "expired"
version = 2
action = "delete"
when = { older_than = "10y" }

[[rule]]
name = "cold-after-2y"
version = 1
action = "move"
to = "cold"
when = { older_than = "2y" }

[[rule]]
name = "ct-mr-warm"
version = 1
action = "move"
to = "warm"
when = { modality = ["CT", "MR"], older_than = "90d" }
"#;

fn archive_of_15_years() -> Vec<StudyFacts> {
    let start = date!(2012 - 01 - 01);
    let mut out = Vec::new();
    let mut day = start;
    let mut d = 0u64;
    while day <= date!(2026 - 12 - 31) {
        let minor = d.is_multiple_of(10);
        let birth = if minor { day.replace_year(day.year() - 10).unwrap_or(day) } else { date!(1960 - 01 - 01) };
        out.push(StudyFacts {
            study: StudyUid::new(format!("1.2.826.0.1.{}", d + 1)).unwrap(),
            patient: PatientKey::new("HOSP", format!("P{d:05}")),
            accession: Some(format!("A{d}")),
            modalities: BTreeSet::from([["CT", "MR", "CR"][(d % 3) as usize].to_string()]),
            sop_classes: BTreeSet::new(),
            study_date: Some(day),
            received_at: day.midnight().assume_utc(),
            last_access: None,
            source_aes: BTreeSet::from(["PACS_A".to_string()]),
            institution: None,
            description: None,
            patient_birth_date: Some(birth),
            patient_age_recorded: None,
            size_bytes: 1_000_000,
            instance_count: 100,
            tiers: BTreeSet::from(["hot".to_string()]),
        });
        day += Duration::days(1);
        d += 1;
    }
    out
}

#[test]
fn simulation_at_a_date_counts_every_tier_and_deletion() {
    let tiers: Vec<String> = ["hot", "warm", "cold"].iter().map(|s| s.to_string()).collect();
    let rules = parse_rules(RULES, &tiers).unwrap();
    let studies = archive_of_15_years();
    assert_eq!(studies.len(), 5479);
    let hold = LegalHold {
        v: 1,
        id: HoldId(1),
        scope: HoldScope::Patient { patient: PatientKey::new("HOSP", "P00101") },
        reason: "litigation".into(),
        set_by: "counsel".into(),
        set_at: datetime!(2026-01-01 0:00 UTC),
    };
    let r = simulate(&rules, &[hold], &studies, datetime!(2027-01-01 0:00 UTC), 10);

    assert_eq!(r.evaluated.studies, 5479);
    assert_eq!(r.deleted.studies, 1644);
    assert_eq!(r.deleted.bytes, 1644 * 1_000_000);
    assert_eq!(r.tiers["cold"].studies, 3106);
    assert_eq!(r.tiers["warm"].studies, 427);
    assert_eq!(r.tiers["hot"].studies, 302);
    assert_eq!(r.kept.studies, 302);
    assert_eq!(r.blocked_by_floor.studies, 183, "minors older than 10 years");
    assert_eq!(r.blocked_by_hold.studies, 1);
    assert_eq!(r.by_rule["expired v2"].studies, 1644);
    assert_eq!(r.by_rule["(no rule)"].studies, 302);
    assert_eq!(r.deletions.len(), 10);
    assert!(r.deletions_truncated);
    assert!(r.deletions.iter().all(|d| d.rule == "expired v2"));

    // Ten years earlier nothing is old enough to delete; the same studies, no state kept.
    let r = simulate(&rules, &[], &studies, datetime!(2017-01-01 0:00 UTC), 0);
    assert_eq!(r.deleted.studies, 0);
    assert_eq!(r.evaluated.studies, 5479, "the simulation counts all studies, even those not yet received");
}
