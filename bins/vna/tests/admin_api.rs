//! The admin API's contract end to end: every route of the generated OpenAPI document is
//! called through the typed client (`admin_api::AdminClient`) against `vna serve`, answers
//! decode into the contract's types, the access level each route documents is the one it
//! enforces, and `docs/openapi.json` is the document the server serves.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

mod common;

use admin_api::types::*;
use admin_api::AdminClient;
use common::{Server, ADMIN_TOKEN, AUDITOR_TOKEN};
use reqwest::StatusCode;
use std::collections::BTreeSet;
use std::time::Duration;
use vna_benches::dataset::{DatasetGenerator, StudySpec};

const READER_TOKEN: &str = "test-reader-token-0123456789";

const RULES: &str = r#"
[[floor]]
name = "adults"
keep = "2y"
when = { patient_age_min = 18 }

[[rule]]
name = "old-to-warm"
version = 1
action = "move"
to = "warm"
when = { older_than = "50y" }
"#;

/// Every `(METHOD, path)` operation of an OpenAPI document, with whether it requires the bearer scheme.
fn operations(doc: &serde_json::Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            out.push((method.to_uppercase(), path.clone(), secured));
        }
    }
    out
}

fn status(r: Result<impl std::fmt::Debug, admin_api::ClientError>) -> Option<StatusCode> {
    match r {
        Ok(_) => Some(StatusCode::OK),
        Err(e) => e.status(),
    }
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn every_admin_route_answers_through_the_typed_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut gen = DatasetGenerator::new(1616);

    // A second archive is the legacy source of the pull routes (vna serves QIDO-RS and WADO-RS).
    std::fs::create_dir_all(dir.path().join("source")).unwrap();
    let source = Server::start(&dir.path().join("source"), "");
    let legacy = gen.study(&StudySpec::tiny("CT", 1, 3));
    let c = reqwest::blocking::Client::new();
    let parts: Vec<&[u8]> = legacy.iter().map(|i| i.bytes.as_slice()).collect();
    common::stow_parts(&c, &source.http(), &parts);

    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    std::fs::create_dir_all(dir.path().join("vna")).unwrap();
    let server = Server::start(
        &dir.path().join("vna"),
        &format!(
            "\n[retention]\nrules_file = \"{}\"\nevaluate_interval_minutes = 0\nevaluate_after_ingest_secs = 0\ngrace_minutes = 60\n\
             [[pull.sources]]\nname = \"legacy\"\nkind = \"dicomweb\"\nurl = \"{}/dicom-web\"\ntimeout_secs = 30\n\
             [[auth.users]]\nname = \"test-reader\"\ntoken = \"{READER_TOKEN}\"\nrole = \"reader\"\n",
            rules.display(),
            source.http()
        ),
    );
    let a = gen.study(&StudySpec::tiny("MR", 2, 2));
    let b = gen.study(&StudySpec::tiny("CT", 1, 2));
    let parts: Vec<&[u8]> = a.iter().chain(&b).map(|i| i.bytes.as_slice()).collect();
    common::stow_parts(&c, &server.http(), &parts);
    let (study_a, study_b) = (a[0].study.as_str(), b[0].study.as_str());

    let admin = AdminClient::new(&server.http(), Some(ADMIN_TOKEN.into())).unwrap();
    let auditor = AdminClient::new(&server.http(), Some(AUDITOR_TOKEN.into())).unwrap();
    let reader = AdminClient::new(&server.http(), Some(READER_TOKEN.into())).unwrap();

    // ---- health and description ----
    assert_eq!(admin.healthz().unwrap(), "ok");
    assert_eq!(admin.readyz().unwrap(), "ready");
    assert!(admin.metrics().unwrap().contains("vna_tier_objects{tier=\"hot\"} 6"));
    let served = admin.openapi().unwrap();
    let on_disk: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json")).unwrap(),
    )
    .unwrap();
    assert!(
        served == on_disk,
        "docs/openapi.json is not what the server serves: UPDATE_OPENAPI=1 cargo test -p admin-api --test openapi"
    );

    // ---- archive ----
    let stats = admin.stats().unwrap();
    assert_eq!((stats.studies, stats.instances), (2, 6));
    assert_eq!(stats.tiers["hot"].objects, 6);
    assert_eq!(stats.tiers["warm"].availability, "ONLINE");
    let summary = admin.study(study_a).unwrap();
    assert_eq!(summary.study_instance_uid, study_a);
    assert_eq!((summary.series_count, summary.instance_count, summary.series.len()), (2, 4, 2));
    assert_eq!(summary.series[0].tiers["hot"].objects, 2);
    assert_eq!(status(admin.study("1.2.3.999")), Some(StatusCode::NOT_FOUND));
    assert_eq!(status(admin.study("../etc")), Some(StatusCode::BAD_REQUEST));

    // ---- tiers ----
    let job = admin
        .move_study(
            study_b,
            &MoveRequest { to: "warm".into(), from: None, keep_source: false, reason: Some("test".into()) },
        )
        .unwrap();
    assert_eq!((job.kind, job.to.as_str(), job.requested_by.as_str()), (TierJobKind::Move, "warm", "test-admin"));
    let done = wait("the tier move", || admin.job(job.id).ok().filter(|j| j.state.is_final()));
    assert_eq!((done.state, done.instances_done), (TierJobState::Done, 2), "{done:?}");
    assert!(admin.jobs().unwrap().jobs.iter().any(|j| j.id == job.id));
    assert_eq!(admin.study(study_b).unwrap().series[0].tiers["warm"].objects, 2);
    let bad_tier =
        admin.move_study(study_b, &MoveRequest { to: "nowhere".into(), from: None, keep_source: false, reason: None });
    assert_eq!(status(bad_tier), Some(StatusCode::BAD_REQUEST));
    let started = admin.start_scrub().unwrap();
    assert!(started.running && started.finished_at.is_none(), "{started:?}");
    let scrub = wait("the scrub", || admin.scrub().ok().filter(|s| !s.running));
    assert_eq!((scrub.copies_ok, scrub.copies_failed), (6, 0), "{scrub:?}");

    // ---- policy ----
    let view = reader.policy().unwrap();
    assert_eq!(view.rules.len(), 1);
    assert_eq!(view.rules[0].rule, RuleRef { name: "old-to-warm".into(), version: 1 });
    assert_eq!(view.rules[0].action, RuleAction::Move { to: "warm".into() });
    assert_eq!(view.rules[0].when.older_than.as_deref(), Some("50y"));
    assert_eq!(view.floors[0].retention, Retention::AfterStudy { keep: "2y".into() });
    let accepted = admin.replace_policy(RULES).unwrap();
    assert_eq!((accepted.digest.as_str(), accepted.rules, accepted.floors), (view.digest.as_str(), 1, 1));
    assert_eq!(status(admin.replace_policy("[[rule]]\nname = 1\n")), Some(StatusCode::UNPROCESSABLE_ENTITY));
    assert_eq!(admin.reload_policy().unwrap().digest, view.digest);
    let pass = admin.evaluate_policy().unwrap();
    assert_eq!(pass.evaluated, 2, "{pass:?}");
    let sim = reader.simulate(&PolicyQuery { at: Some("2099-01-01".into()), limit: Some(5) }, None).unwrap();
    assert_eq!(sim.evaluated.studies, 2);
    let candidate = "[[rule]]\nname = \"all\"\nversion = 1\naction = \"delete\"\nwhen = { older_than = \"0d\" }\n";
    let sim = reader.simulate(&PolicyQuery::default(), Some(candidate)).unwrap();
    assert_eq!((sim.deleted.studies, sim.deletions.len()), (2, 2), "{sim:?}");
    let why = reader.explain(study_a, &PolicyQuery::default()).unwrap();
    assert_eq!(why.facts.study, study_a);
    assert_eq!(why.decision.trace[0].conditions[0].condition, "older_than");
    assert!(matches!(why.decision.trace[0].conditions[0].result, Truth::Yes | Truth::No), "{why:?}");

    // ---- retention: holds and deletions ----
    let hold = admin
        .set_hold(&HoldRequest { study: Some(study_b.into()), reason: "litigation 16".into(), ..Default::default() })
        .unwrap();
    assert_eq!(hold.scope, HoldScope::Study { study: study_b.into() });
    assert_eq!(auditor.holds().unwrap().holds, vec![hold.clone()]);
    let refused = admin.delete_study(study_b, &DeleteRequest { reason: "x".into(), grace_minutes: Some(0) });
    assert_eq!(status(refused), Some(StatusCode::CONFLICT));
    assert_eq!(admin.release_hold(&hold.id.to_string(), "case closed").unwrap().released.id, hold.id);
    let marked =
        admin.delete_study(study_a, &DeleteRequest { reason: "duplicate".into(), grace_minutes: None }).unwrap();
    assert_eq!((marked.state, marked.cause.clone()), (DeletionState::Marked, DeletionCause::Request));
    let id = marked.id.to_string();
    assert_eq!(auditor.deletion(&id).unwrap().requested_by, "test-admin");
    assert_eq!(auditor.deletions().unwrap().deletions.len(), 1);
    assert_eq!(admin.undo_deletion(&id, "kept after all").unwrap().state, DeletionState::Cancelled);
    let purge =
        admin.delete_study(study_a, &DeleteRequest { reason: "expired".into(), grace_minutes: Some(0) }).unwrap();
    let pid = purge.id.to_string();
    wait("the purge", || auditor.deletion(&pid).ok().filter(|d| d.state == DeletionState::Purged));
    let cert = auditor.certificate(&pid).unwrap();
    assert!(cert.complete);
    assert_eq!((cert.deletion.certificate.instances.len(), cert.deletion.certificate.instance_count), (4, 4));
    assert!(cert.deletion.certificate.instances.iter().all(|i| i.checksum.len() == 64 && i.tiers == ["hot"]));
    assert!(cert.audit_records.iter().any(|r| r.action == "instances_deleted"), "{:?}", cert.audit_records);

    // ---- audit ----
    let exported =
        auditor.audit(&AuditFilter { action: Some("deletion_requested".into()), ..Default::default() }).unwrap();
    assert!(exported.records.len() >= 2, "{exported:?}");
    assert!(exported.records.iter().all(|r| r.actor == "test-admin" && r.prev_hash.len() == 64));
    let csv = auditor
        .audit_text(&AuditFilter { format: Some(AuditFormat::Csv), study: Some(study_a.into()), ..Default::default() })
        .unwrap();
    assert!(csv.lines().count() > 2 && csv.contains(study_a), "{csv}");
    let verdict = auditor.verify_audit().unwrap();
    assert!(verdict.intact, "{verdict:?}");
    assert!(verdict.records.unwrap() > 10);
    assert_eq!(
        status(auditor.audit(&AuditFilter { action: Some("nonsense".into()), ..Default::default() })),
        Some(StatusCode::BAD_REQUEST)
    );

    // ---- patients ----
    let from = PatientIdentity::parse(&admin.study(study_b).unwrap().patient.id);
    let to = PatientIdentity { patient_id: "MERGED-16".into(), issuer: "HOSP".into() };
    let link = admin.link_patients(&LinkRequest { from: from.clone(), to: to.clone(), reason: "merge".into() });
    // The target identity must exist: linking to an unknown one is a 404 naming it.
    assert_eq!(status(link), Some(StatusCode::NOT_FOUND));
    let legacy_patient = PatientIdentity::parse(&source_patient(&legacy[0].bytes));
    assert_eq!(auditor.links().unwrap().links.len(), 0);

    // ---- pulls (from the second archive) ----
    let pull = admin.start_pull(&PullRequest { source: "legacy".into(), since: None, until: None }).unwrap();
    assert_eq!((pull.source.as_str(), pull.kind), ("legacy", PullSourceKind::Dicomweb));
    let pid = pull.id.to_string();
    let finished = wait("the pull", || reader.pull(&pid).ok().filter(|p| p.state.is_final()));
    assert_eq!((finished.state, finished.counters.instances_received), (PullState::Done, 3), "{finished:?}");
    assert_eq!(reader.pulls().unwrap().pulls[0].id, pull.id);
    let studies = reader.pull_studies(&pid).unwrap().studies;
    assert_eq!((studies.len(), studies[0].state), (1, PullStudyState::Done));
    let report = reader.pull_report(&pid).unwrap();
    assert!(report.reconciled && report.r#final, "{report:?}");
    assert_eq!((report.remote.instances, report.local.instances), (3, 3));
    assert_eq!(status(admin.cancel_pull(&pid)), Some(StatusCode::CONFLICT));

    // Now the pulled patient exists: link study B's patient to it, then undo.
    let link = admin
        .link_patients(&LinkRequest { from: from.clone(), to: legacy_patient.clone(), reason: "merge".into() })
        .unwrap();
    assert_eq!((link.from.clone(), link.to.clone(), link.studies.len()), (from, legacy_patient, 1));
    assert_eq!(auditor.links().unwrap().links, vec![link.clone()]);
    let undone = admin.undo_link(&link.id.to_string(), "wrong patient").unwrap();
    assert!(undone.undone.is_some());

    // ---- every documented operation was called, and each enforces its documented access ----
    let ops = operations(&served);
    let documented: BTreeSet<(String, String)> = ops.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
    let mut walked = admin.visited();
    walked.extend(auditor.visited());
    walked.extend(reader.visited());
    assert_eq!(walked, documented, "routes documented but not walked, or walked but not documented");
    let anonymous = reqwest::blocking::Client::new();
    for (method, path, secured) in &ops {
        let url = format!("{}{}", server.http(), path.replace("{study}", study_b).replace("{id}", "1"));
        let rsp = anonymous.request(method.parse().unwrap(), &url).send().unwrap();
        if *secured {
            assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED, "{method} {path} without a token");
        } else {
            assert_ne!(rsp.status(), StatusCode::UNAUTHORIZED, "{method} {path} is documented as public");
        }
    }
    // A reader may not change anything, an auditor may read the trail but not change rules.
    assert_eq!(status(reader.deletions()), Some(StatusCode::FORBIDDEN));
    assert_eq!(status(reader.start_scrub()), Some(StatusCode::FORBIDDEN));
    assert_eq!(status(auditor.replace_policy(RULES)), Some(StatusCode::FORBIDDEN));
    assert!(server.stop().success());
}

/// The Patient ID of a Part-10 object.
fn source_patient(bytes: &[u8]) -> String {
    let obj = dicom_object::from_reader(&bytes[128..]).unwrap();
    obj.element(dicom_dictionary_std::tags::PATIENT_ID).unwrap().to_str().unwrap().trim().to_string()
}
