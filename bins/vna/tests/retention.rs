//! Retention end to end against `vna serve`: deletions requested over the admin API with
//! bearer-token identities, two-phase (grace, undo, purge), gone from C-FIND (dcmtk findscu),
//! QIDO-RS, WADO-RS and every tier, with a deletion certificate; a legal hold blocking a policy
//! deletion; a bad rule file refused while the old rules keep running; and a tampered audit
//! trail (altered, removed, reordered records) caught by `vna audit verify`.
// Tests: an unwrap that fails is a failing test (the workspace denies unwrap in production code).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, ADMIN_TOKEN, AUDITOR_TOKEN};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use vna_benches::dataset::{DatasetGenerator, StudySpec, SyntheticInstance};

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

fn stow(c: &Client, base: &str, instances: &[SyntheticInstance]) {
    let parts: Vec<&[u8]> = instances.iter().map(|i| i.bytes.as_slice()).collect();
    common::stow_parts(c, base, &parts);
}

fn storescu(server: &Server, dir: &Path, instances: &[SyntheticInstance]) {
    let files: Vec<_> = instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            let p = dir.join(format!("scu-{i}.dcm"));
            std::fs::write(&p, &inst.bytes).unwrap();
            p
        })
        .collect();
    let out = common::dcmtk("storescu")
        .args(["-aet", "MODALITY1", "-aec", "VNA", "127.0.0.1", &server.dicom_port.to_string()])
        .args(&files)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Studies findscu finds with this Study Instance UID.
fn cfind_count(server: &Server, study: &str) -> usize {
    let out = common::dcmtk("findscu")
        .args(["-aet", "VIEWER", "-aec", "VNA", "-S"])
        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &format!("StudyInstanceUID={study}")])
        .args(["127.0.0.1", &server.dicom_port.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    text.matches("(Pending)").count()
}

fn qido_count(c: &Client, base: &str, study: &str) -> usize {
    let rsp = c.get(format!("{base}/dicom-web/studies?StudyInstanceUID={study}")).send().unwrap();
    if rsp.status() == StatusCode::NO_CONTENT {
        return 0;
    }
    let rows: Value = rsp.json().unwrap();
    rows.as_array().map_or(0, |a| a.len())
}

fn wado_status(c: &Client, base: &str, study: &str) -> StatusCode {
    c.get(format!("{base}/dicom-web/studies/{study}"))
        .header("Accept", "multipart/related; type=\"application/dicom\"")
        .send()
        .unwrap()
        .status()
}

fn api(
    c: &Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut rb = c.request(method, url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let rsp = rb.send().unwrap();
    let status = rsp.status();
    let text = rsp.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn wait_deletion(c: &Client, base: &str, id: u64, state: &str) -> Value {
    for _ in 0..300 {
        let (s, d) = api(c, reqwest::Method::GET, format!("{base}/api/deletions/{id}"), Some(AUDITOR_TOKEN), None);
        assert_eq!(s, StatusCode::OK, "{d}");
        if d["state"] == state {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("deletion {id} did not reach {state}");
}

/// Files anywhere under `dir` whose path names the study.
fn files_of(dir: &Path, study: &str) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.path().to_string_lossy().contains(study))
        .map(|e| e.path().display().to_string())
        .collect()
}

fn vna(server_config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::vna_bin()).arg("--config").arg(server_config).args(args).output().unwrap()
}

/// `vna` against a running server (its port is picked at start, so --server names it).
fn vna_at(server: &Server, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--server".to_string(), server.http()];
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    vna(&server.config, &refs)
}

#[test]
fn deletion_over_the_admin_api_is_two_phase_audited_and_certified() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        "\n[retention]\nevaluate_interval_minutes = 0\nevaluate_after_ingest_secs = 0\ngrace_minutes = 60\n",
    );
    let base = server.http();
    let c = client();
    let mut gen = DatasetGenerator::new(701);
    let a = gen.study(&StudySpec::tiny("MR", 2, 3));
    let b = gen.study(&StudySpec::tiny("CT", 1, 4));
    storescu(&server, dir.path(), &a);
    stow(&c, &base, &b);
    let (sa, sb) = (a[0].study.clone(), b[0].study.clone());
    assert_eq!((cfind_count(&server, &sa), qido_count(&c, &base, &sa)), (1, 1));
    assert!(!files_of(&dir.path().join("data/hot"), &sa).is_empty());

    // No identity, a reader's identity, an unknown token: refused, nothing marked.
    let url = format!("{base}/api/studies/{sa}/delete");
    let reason = json!({ "reason": "patient withdrew consent" });
    let (s, e) = api(&c, reqwest::Method::POST, url.clone(), None, Some(reason.clone()));
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    assert!(e["message"].as_str().unwrap().contains("Bearer"), "{e}");
    let (s, _) = api(&c, reqwest::Method::POST, url.clone(), Some(AUDITOR_TOKEN), Some(reason.clone()));
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = api(&c, reqwest::Method::POST, url.clone(), Some("not-a-token-at-all-xx"), Some(reason.clone()));
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, e) = api(&c, reqwest::Method::POST, url.clone(), Some(ADMIN_TOKEN), Some(json!({ "reason": "" })));
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (s, _) = api(&c, reqwest::Method::GET, format!("{base}/api/deletions"), None, None);
    assert_eq!(s, StatusCode::UNAUTHORIZED, "reading deletions needs an identity");

    // Marked with the default grace: still visible, undoable.
    let (s, d) = api(&c, reqwest::Method::POST, url.clone(), Some(ADMIN_TOKEN), Some(reason.clone()));
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    assert_eq!(d["state"], "marked");
    assert_eq!(d["requested_by"], "test-admin");
    let (s, _) = api(&c, reqwest::Method::POST, url.clone(), Some(ADMIN_TOKEN), Some(reason.clone()));
    assert_eq!(s, StatusCode::CONFLICT, "a study is marked once");
    assert_eq!(qido_count(&c, &base, &sa), 1, "visible during the grace period");
    let id = d["id"].as_u64().unwrap();
    let (s, u) = api(
        &c,
        reqwest::Method::POST,
        format!("{base}/api/deletions/{id}/undo"),
        Some(ADMIN_TOKEN),
        Some(json!({ "reason": "wrong patient" })),
    );
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["state"], "cancelled");

    // Marked again without a grace period: hidden and purged in the background.
    let (s, d) = api(
        &c,
        reqwest::Method::POST,
        url,
        Some(ADMIN_TOKEN),
        Some(json!({ "reason": "duplicate of another study", "grace_minutes": 0 })),
    );
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    let id = d["id"].as_u64().unwrap();
    let done = wait_deletion(&c, &base, id, "purged");
    assert_eq!(done["certificate"]["instance_count"], 6);
    let (s, _) = api(
        &c,
        reqwest::Method::POST,
        format!("{base}/api/deletions/{id}/undo"),
        Some(ADMIN_TOKEN),
        Some(json!({ "reason": "too late" })),
    );
    assert_eq!(s, StatusCode::CONFLICT, "a purged deletion cannot be undone");

    // Gone from C-FIND, QIDO-RS, WADO-RS and the hot tier; the other study is untouched.
    assert_eq!(cfind_count(&server, &sa), 0);
    assert_eq!(qido_count(&c, &base, &sa), 0);
    assert_eq!(wado_status(&c, &base, &sa), StatusCode::NOT_FOUND);
    assert_eq!(files_of(&dir.path().join("data/hot"), &sa), Vec::<String>::new());
    assert_eq!((cfind_count(&server, &sb), qido_count(&c, &base, &sb)), (1, 1));
    assert_eq!(wado_status(&c, &base, &sb), StatusCode::OK);

    // The certificate names every instance with its size, checksum and tier, and its audit records.
    let (s, cert) =
        api(&c, reqwest::Method::GET, format!("{base}/api/deletions/{id}/certificate"), Some(AUDITOR_TOKEN), None);
    assert_eq!(s, StatusCode::OK, "{cert}");
    assert_eq!(cert["complete"], true);
    let listed = cert["deletion"]["certificate"]["instances"].as_array().unwrap();
    assert_eq!(listed.len(), 6);
    for inst in listed {
        assert!(a.iter().any(|x| x.sop_instance == inst["sop_instance"].as_str().unwrap()));
        assert_eq!(inst["tiers"], json!(["hot"]));
        assert!(inst["size"].as_u64().unwrap() > 0 && inst["checksum"].as_str().unwrap().len() == 64);
    }
    let actions: Vec<&str> =
        cert["audit_records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["deletion_requested", "instances_deleted", "deletion_completed"]);
    assert_eq!(cert["deletion"]["requested_by"], "test-admin");

    // The audit export (CSV, filtered by study) over the CLI, itself audited; the chain holds.
    let out = vna_at(&server, &["--token", AUDITOR_TOKEN, "audit", "export", "--study", &sa, "--format", "csv"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8_lossy(&out.stdout);
    for needed in [
        "deletion_requested",
        "deletion_cancelled",
        "instances_deleted",
        "deletion_completed",
        "test-admin",
        "wrong patient",
    ] {
        assert!(csv.contains(needed), "{needed} missing from:\n{csv}");
    }
    let out = vna_at(&server, &["audit", "export"]);
    assert!(!out.status.success(), "an export needs an identity");
    let (_, exported) =
        api(&c, reqwest::Method::GET, format!("{base}/api/audit?action=audit_exported"), Some(AUDITOR_TOKEN), None);
    assert!(exported["records"].as_array().unwrap().iter().any(|r| r["actor"] == "test-auditor"));
    // Queries and retrieves are audited too, with who asked from where.
    let (_, q) =
        api(&c, reqwest::Method::GET, format!("{base}/api/audit?action=query&study={sb}"), Some(AUDITOR_TOKEN), None);
    let actors: BTreeSet<&str> =
        q["records"].as_array().unwrap().iter().map(|r| r["actor"].as_str().unwrap()).collect();
    assert!(actors.contains("VIEWER") && actors.contains("QIDO-RS"), "{actors:?}");
    let (_, r) = api(
        &c,
        reqwest::Method::GET,
        format!("{base}/api/audit?action=instances_retrieved&study={sb}"),
        Some(AUDITOR_TOKEN),
        None,
    );
    let r = &r["records"][0];
    assert_eq!((r["actor"].as_str(), r["actor_address"].as_str()), (Some("WADO-RS"), Some("127.0.0.1")), "{r}");
    assert!(r["detail"].as_str().unwrap().contains("4 instances"), "{r}");
    let metrics = c.get(format!("{base}/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("vna_deletions_total{event=\"purged\"} 1"), "{metrics}");
    assert!(metrics.contains("vna_purged_instances_total 6"));
    let out = vna_at(&server, &["--token", AUDITOR_TOKEN, "audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    assert!(server.stop().success());
    let out = vna(&dir.path().join("vna.toml"), &["audit", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

const RULES: &str = r#"
[[floor]]
name = "adults"
keep = "2y"
when = { patient_age_min = 18 }

[[rule]]
name = "expired"
version = 1
action = "delete"
when = { older_than = "3y" }
"#;

#[test]
fn a_legal_hold_blocks_a_policy_deletion_and_a_bad_rule_file_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let server = Server::start(
        dir.path(),
        &format!(
            "\n[retention]\nrules_file = \"{}\"\nevaluate_interval_minutes = 0\nevaluate_after_ingest_secs = 0\ngrace_minutes = 0\n",
            rules.display()
        ),
    );
    let base = server.http();
    let c = client();
    let mut gen = DatasetGenerator::new(42);
    let studies: Vec<Vec<SyntheticInstance>> = (0..6).map(|_| gen.study(&StudySpec::tiny("CT", 1, 2))).collect();
    for s in &studies {
        stow(&c, &base, s);
    }

    // What the rules say about each study, before anything happens.
    let mut old = Vec::new();
    let mut young = Vec::new();
    for s in &studies {
        let (st, x) = api(
            &c,
            reqwest::Method::GET,
            format!("{base}/api/policy/explain/{}", s[0].study),
            Some(AUDITOR_TOKEN),
            None,
        );
        assert_eq!(st, StatusCode::OK, "{x}");
        match x["decision"]["outcome"]["action"].as_str().unwrap() {
            "delete" => old.push((s[0].study.clone(), x["facts"]["accession"].as_str().unwrap().to_string())),
            "keep" => young.push(s[0].study.clone()),
            other => panic!("{other}"),
        }
    }
    assert!(old.len() >= 2, "the seed gives at least two studies past retention: {old:?} {young:?}");

    // Hold one old study by accession number (through the CLI), then run the rules.
    let (held, accession) = old[0].clone();
    let out = vna_at(
        &server,
        &["--token", ADMIN_TOKEN, "hold", "set", "--accession", &accession, "--reason", "litigation 2026-17"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = vna_at(&server, &["--token", AUDITOR_TOKEN, "policy", "explain", &held]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("blocked by legal hold"), "{text}");
    let (s, pass) = api(&c, reqwest::Method::POST, format!("{base}/api/policy/evaluate"), Some(ADMIN_TOKEN), None);
    assert_eq!(s, StatusCode::OK, "{pass}");
    assert_eq!(pass["deletions"], old.len() - 1, "{pass}");
    assert_eq!(pass["by_rule"]["expired v1"], old.len() - 1, "{pass}");
    let (_, list) = api(&c, reqwest::Method::GET, format!("{base}/api/deletions"), Some(AUDITOR_TOKEN), None);
    for d in list["deletions"].as_array().unwrap() {
        assert_eq!(d["cause"]["kind"], "rule");
        assert_eq!(d["cause"]["name"], "expired");
        assert_eq!(d["requested_by"], "policy");
        wait_deletion(&c, &base, d["id"].as_u64().unwrap(), "purged");
    }
    assert_eq!(qido_count(&c, &base, &held), 1, "the held study stays");
    for (s, _) in &old[1..] {
        assert_eq!(qido_count(&c, &base, s), 0, "{s} was deleted by the rule");
    }
    for s in &young {
        assert_eq!(qido_count(&c, &base, s), 1, "{s} is within retention");
    }
    // An administrator cannot delete the held study either.
    let (s, e) = api(
        &c,
        reqwest::Method::POST,
        format!("{base}/api/studies/{held}/delete"),
        Some(ADMIN_TOKEN),
        Some(json!({ "reason": "cleanup", "grace_minutes": 0 })),
    );
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(e["message"].as_str().unwrap().contains("litigation 2026-17"), "{e}");

    // A bad rule file is refused, naming the line, and the rules in force stay.
    let (_, before) = api(&c, reqwest::Method::GET, format!("{base}/api/policy"), Some(AUDITOR_TOKEN), None);
    let digest = before["digest"].clone();
    let bad = RULES.replace("action = \"delete\"", "action = \"move\"\nto = \"glacier\"");
    let rsp = c.put(format!("{base}/api/policy")).bearer_auth(ADMIN_TOKEN).body(bad.clone()).send().unwrap();
    assert_eq!(rsp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let e: Value = rsp.json().unwrap();
    assert!(
        e["message"].as_str().unwrap().contains("line 7") && e["message"].as_str().unwrap().contains("glacier"),
        "{e}"
    );
    std::fs::write(&rules, &bad).unwrap();
    let (s, _) = api(&c, reqwest::Method::POST, format!("{base}/api/policy/reload"), Some(ADMIN_TOKEN), None);
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, after) = api(&c, reqwest::Method::GET, format!("{base}/api/policy"), Some(AUDITOR_TOKEN), None);
    assert_eq!(after["digest"], digest, "the running rules stay");
    let out = vna(&server.config, &["policy", "check", rules.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 7"), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, refused) =
        api(&c, reqwest::Method::GET, format!("{base}/api/audit?action=policy_refused"), Some(AUDITOR_TOKEN), None);
    assert_eq!(refused["records"].as_array().unwrap().len(), 2);
    assert_eq!(refused["records"][0]["actor"], "test-admin");

    // Simulation far in the future changes nothing and counts the held study as blocked.
    let out = vna_at(&server, &["--token", AUDITOR_TOKEN, "--json", "policy", "simulate", "--at", "2060-01-01"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sim: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sim["evaluated"]["studies"], young.len() + 1);
    assert_eq!(sim["deleted"]["studies"], young.len());
    assert_eq!(sim["blocked_by_hold"]["studies"], 1);
    assert_eq!(qido_count(&c, &base, &held), 1);

    // Releasing the hold lets the rule delete it on the next pass.
    let (_, holds) = api(&c, reqwest::Method::GET, format!("{base}/api/holds"), Some(AUDITOR_TOKEN), None);
    let hold_id = holds["holds"][0]["id"].as_u64().unwrap().to_string();
    let out = vna_at(&server, &["--token", ADMIN_TOKEN, "hold", "release", &hold_id, "--reason", "case closed"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, pass) = api(&c, reqwest::Method::POST, format!("{base}/api/policy/evaluate"), Some(ADMIN_TOKEN), None);
    assert_eq!(pass["deletions"], 1, "{pass}");
    for _ in 0..100 {
        if qido_count(&c, &base, &held) == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(qido_count(&c, &base, &held), 0);
    assert!(server.stop().success());
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success());
}

fn tamper(data: &Path, f: impl FnOnce(&rocksdb::DB, &rocksdb::ColumnFamily)) {
    let opts = rocksdb::Options::default();
    let db = rocksdb::DB::open_cf(&opts, data.join("catalog"), archive_core::catalog::keys::COLUMN_FAMILIES).unwrap();
    let cf = db.cf_handle(archive_core::catalog::keys::CF_AUDIT).unwrap();
    f(&db, cf);
    db.flush_cf(cf).unwrap();
}

#[test]
fn altered_removed_and_reordered_audit_records_are_named_by_audit_verify() {
    use archive_core::catalog::keys::audit_key;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "");
    let c = client();
    let mut gen = DatasetGenerator::new(9);
    for _ in 0..3 {
        stow(&c, &server.http(), &gen.study(&StudySpec::tiny("MR", 1, 2)));
    }
    let cfg = server.config.clone();
    assert!(server.stop().success());
    let out = vna(&cfg, &["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.contains("6 records"), "{text}");

    let variant = |name: &str, f: &dyn Fn(&rocksdb::DB, &rocksdb::ColumnFamily)| -> String {
        let copy = dir.path().join(name);
        copy_tree(&dir.path().join("data"), &copy);
        tamper(&copy, f);
        let config = dir.path().join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&dir.path().join("data").display().to_string(), &copy.display().to_string());
        std::fs::write(&config, text).unwrap();
        let out = vna(&config, &["audit", "verify"]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).to_string()
    };

    // One byte of record 4 changed (its year, 2026 -> 3026): named as altered.
    let text = variant("altered", &|db, cf| {
        let mut v = db.get_cf(cf, audit_key(4)).unwrap().unwrap();
        let at = v.windows(8).position(|w| w == b"\"time\":\"").unwrap() + 8;
        v[at] ^= 0x01;
        db.put_cf(cf, audit_key(4), v).unwrap();
    });
    assert!(text.contains("(seq 4) was altered"), "{text}");

    // Record 3 removed: the chain breaks at position 3.
    let text = variant("removed", &|db, cf| db.delete_cf(cf, audit_key(3)).unwrap());
    assert!(text.contains("position 3") && text.contains("removed or reordered"), "{text}");

    // Records 2 and 5 swapped: the chain breaks at position 2.
    let text = variant("reordered", &|db, cf| {
        let (a, b) = (db.get_cf(cf, audit_key(2)).unwrap().unwrap(), db.get_cf(cf, audit_key(5)).unwrap().unwrap());
        db.put_cf(cf, audit_key(2), b).unwrap();
        db.put_cf(cf, audit_key(5), a).unwrap();
    });
    assert!(text.contains("position 2") && text.contains("removed or reordered"), "{text}");
}

fn qido_instances(c: &Client, base: &str, study: &str) -> Vec<String> {
    let rsp = c.get(format!("{base}/dicom-web/studies/{study}/instances")).send().unwrap();
    if rsp.status() == StatusCode::NO_CONTENT {
        return Vec::new();
    }
    let rows: Value = rsp.json().unwrap();
    rows.as_array().unwrap().iter().map(|r| r["00080018"]["Value"][0].as_str().unwrap().to_string()).collect()
}

#[test]
fn iocm_rejection_notes_over_c_store_and_stow_hide_and_delete_the_rejected_instances() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        "\n[retention]\nevaluate_interval_minutes = 0\nevaluate_after_ingest_secs = 0\ngrace_minutes = 0\nrejection_notes_from = [\"MODALITY1\", \"STOW-RS\"]\n",
    );
    let base = server.http();
    let c = client();
    let mut gen = DatasetGenerator::new(77);
    let a = gen.study(&StudySpec::tiny("CT", 1, 4));
    let b = gen.study(&StudySpec::tiny("MR", 2, 2));
    stow(&c, &base, &a);
    storescu(&server, dir.path(), &b);

    // A quality rejection of two of A's instances over C-STORE; a retention-expiry rejection of
    // one of B's over STOW-RS; a "Of Interest" selection (113000) that rejects nothing.
    let note_a = gen.rejection_note("113001", "Rejected for Quality Reasons", &a[..2]);
    let note_b = gen.rejection_note("113039", "Data Retention Policy Expired", &b[3..]);
    let of_interest = gen.rejection_note("113000", "Of Interest", &b[..1]);
    storescu(&server, dir.path(), std::slice::from_ref(&note_a));
    stow(&c, &base, &[note_b.clone(), of_interest.clone()]);

    let mut deletions = Vec::new();
    for _ in 0..100 {
        let (_, list) = api(&c, reqwest::Method::GET, format!("{base}/api/deletions"), Some(AUDITOR_TOKEN), None);
        deletions = list["deletions"].as_array().unwrap().clone();
        if deletions.len() == 2 && deletions.iter().all(|d| d["state"] == "purged") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(deletions.len(), 2, "{deletions:?}");
    for d in &deletions {
        assert_eq!(d["state"], "purged", "{d}");
        assert_eq!(d["cause"]["kind"], "rejection");
    }
    assert_eq!(
        deletions.iter().find(|d| d["requested_by"] == "MODALITY1").unwrap()["certificate"]["instance_count"],
        2
    );

    let left_a = qido_instances(&c, &base, &a[0].study);
    let expect_a: BTreeSet<String> =
        a[2..].iter().map(|i| i.sop_instance.clone()).chain([note_a.sop_instance.clone()]).collect();
    assert_eq!(left_a.into_iter().collect::<BTreeSet<_>>(), expect_a);
    let left_b: BTreeSet<String> = qido_instances(&c, &base, &b[0].study).into_iter().collect();
    assert!(!left_b.contains(&b[3].sop_instance));
    assert!(left_b.contains(&b[0].sop_instance) && left_b.contains(&of_interest.sop_instance));
    assert_eq!(left_b.len(), 3 + 2);
    for rejected in [&a[0], &a[1], &b[3]] {
        let url = format!(
            "{base}/dicom-web/studies/{}/series/{}/instances/{}",
            rejected.study, rejected.series, rejected.sop_instance
        );
        let s = c.get(url).header("Accept", "multipart/related; type=\"application/dicom\"").send().unwrap().status();
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(files_of(&dir.path().join("data/hot"), &rejected.sop_instance), Vec::<String>::new());
    }
    let (_, audit) =
        api(&c, reqwest::Method::GET, format!("{base}/api/audit?action=instances_rejected"), Some(AUDITOR_TOKEN), None);
    assert_eq!(audit["records"].as_array().unwrap().len(), 2);

    // The same note sent again (as after a crash cut its first application short) changes
    // nothing more: its instances are gone or already under way.
    storescu(&server, dir.path(), std::slice::from_ref(&note_a));
    let (_, list) = api(&c, reqwest::Method::GET, format!("{base}/api/deletions"), Some(AUDITOR_TOKEN), None);
    assert_eq!(list["deletions"].as_array().unwrap().len(), 2);

    // A note from a sender that may not reject is stored, changes nothing, and is audited.
    let target = gen.study(&StudySpec::tiny("CT", 1, 2));
    stow(&c, &base, &target);
    let intruder = gen.rejection_note("113001", "Rejected for Quality Reasons", &target);
    let path = dir.path().join("intruder.dcm");
    std::fs::write(&path, &intruder.bytes).unwrap();
    let out = common::dcmtk("storescu")
        .args(["-aet", "INTRUDER", "-aec", "VNA", "127.0.0.1", &server.dicom_port.to_string()])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (_, refused) =
        api(&c, reqwest::Method::GET, format!("{base}/api/audit?action=deletion_refused"), Some(AUDITOR_TOKEN), None);
    assert_eq!(refused["records"].as_array().unwrap().len(), 1, "{refused}");
    assert_eq!(refused["records"][0]["actor"], "INTRUDER");
    assert_eq!(qido_instances(&c, &base, &target[0].study).len(), 3, "both instances and the note are visible");
    assert!(server.stop().success());
}

#[test]
fn audit_records_reach_a_syslog_repository_as_dicom_audit_messages() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let mut buf = Vec::new();
            let _ = conn.read_to_end(&mut buf);
            sink.lock().unwrap().extend_from_slice(&buf);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let server =
        Server::start(dir.path(), &format!("\n[audit]\nsyslog = \"127.0.0.1:{port}\"\nforward_interval_secs = 1\n"));
    let c = client();
    let study = DatasetGenerator::new(3).study(&StudySpec::tiny("CT", 1, 3));
    stow(&c, &server.http(), &study);
    let text = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            let t = String::from_utf8_lossy(&received.lock().unwrap()).to_string();
            (t.matches("<AuditMessage>").count() >= 3).then_some(t)
        })
        .expect("three audit messages arrive");
    assert_eq!(text.matches("csd-code=\"110104\"").count(), 3, "{text}");
    assert!(text.contains(&study[0].study) && text.contains("UserID=\"STOW-RS\""), "{text}");
    assert!(text.contains(" vna ") && text.contains("DICOM+RFC3881"));
    assert!(server.stop().success());
}

#[test]
fn rules_run_after_ingest_and_their_moves_become_migration_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"ct-to-warm\"\nversion = 4\naction = \"move\"\nto = \"warm\"\nwhen = { modality = [\"CT\"], tier = [\"hot\"] }\n",
    )
    .unwrap();
    let server = Server::start(
        dir.path(),
        &format!(
            "\n[retention]\nrules_file = \"{}\"\nevaluate_interval_minutes = 0\nevaluate_after_ingest_secs = 1\n",
            rules.display()
        ),
    );
    let base = server.http();
    let c = client();
    let mut gen = DatasetGenerator::new(5);
    let ct = gen.study(&StudySpec::tiny("CT", 1, 3));
    let mr = gen.study(&StudySpec::tiny("MR", 1, 3));
    stow(&c, &base, &ct);
    stow(&c, &base, &mr);
    let summary =
        |study: &str| -> Value { c.get(format!("{base}/api/studies/{study}")).send().unwrap().json().unwrap() };
    let on_warm = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        summary(&ct[0].study).to_string().contains("\"warm\"") && !summary(&ct[0].study).to_string().contains("\"hot\"")
    });
    assert!(on_warm, "{}", summary(&ct[0].study));
    assert!(!summary(&mr[0].study).to_string().contains("\"warm\""), "the MR study stays on hot");
    let jobs: Value = c.get(format!("{base}/api/jobs")).send().unwrap().json().unwrap();
    let job = &jobs["jobs"][0];
    assert_eq!(job["requested_by"], "policy");
    assert!(job["reason"].as_str().unwrap().contains("ct-to-warm v4"), "{job}");
    // The first load of the rule file is audited as a rule change with its digest.
    let (_, changes) =
        api(&c, reqwest::Method::GET, format!("{base}/api/audit?action=policy_changed"), Some(AUDITOR_TOKEN), None);
    assert!(changes["records"][0]["detail"].as_str().unwrap().contains("added rule ct-to-warm v4"), "{changes}");
    for s in &ct {
        let url = format!("{base}/dicom-web/studies/{}/series/{}/instances/{}", s.study, s.series, s.sop_instance);
        let rsp = c.get(url).header("Accept", "application/dicom").send().unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert!(rsp.bytes().unwrap().as_ref() == s.bytes.as_slice(), "byte-exact from the warm tier");
    }
    assert!(server.stop().success());
}

#[test]
fn tier_cli_lists_migrates_with_progress_and_scrubs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "");
    let c = client();
    let study = DatasetGenerator::new(8).study(&StudySpec::tiny("CT", 2, 3));
    stow(&c, &server.http(), &study);
    let out = vna_at(&server, &["tier", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("hot") && text.contains("warm") && text.contains("ONLINE"), "{text}");
    let out = vna_at(&server, &["tier", "move", &study[0].study, "--to", "warm"]);
    assert!(!out.status.success(), "a migration needs an admin token");
    let out =
        vna_at(&server, &["--token", ADMIN_TOKEN, "tier", "move", &study[0].study, "--to", "warm", "--reason", "test"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("done: 6 instances to warm"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vna_at(&server, &["--json", "tier", "stats"]);
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (stats["tiers"]["warm"]["objects"].as_u64(), stats["tiers"]["hot"]["objects"].as_u64()),
        (Some(6), Some(0))
    );
    let out = vna_at(&server, &["--token", ADMIN_TOKEN, "tier", "scrub"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("6 copies ok") && text.contains("0 failed"), "{text}");
    assert!(server.stop().success());
}

#[test]
fn marked_rule_deletions_are_undone_when_the_rules_no_longer_delete() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"expired\"\nversion = 1\naction = \"delete\"\nwhen = { older_than = \"1y\" }\n",
    )
    .unwrap();
    let server = Server::start(
        dir.path(),
        &format!(
            "\n[retention]\nrules_file = \"{}\"\nevaluate_interval_minutes = 0\nevaluate_after_ingest_secs = 0\ngrace_minutes = 600\n",
            rules.display()
        ),
    );
    let base = server.http();
    let c = client();
    let mut gen = DatasetGenerator::new(42);
    let studies: Vec<Vec<SyntheticInstance>> = (0..3).map(|_| gen.study(&StudySpec::tiny("CT", 1, 1))).collect();
    for s in &studies {
        stow(&c, &base, s);
    }
    let (_, pass) = api(&c, reqwest::Method::POST, format!("{base}/api/policy/evaluate"), Some(ADMIN_TOKEN), None);
    let marked = pass["deletions"].as_u64().unwrap();
    assert!(marked >= 1, "{pass}");
    // The delete rule is withdrawn during the grace period: the marked deletions are undone.
    let keep_all = "[[rule]]\nname = \"keep-all\"\nversion = 1\naction = \"keep\"\n";
    let rsp = c.put(format!("{base}/api/policy")).bearer_auth(ADMIN_TOKEN).body(keep_all).send().unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let (_, list) = api(&c, reqwest::Method::GET, format!("{base}/api/deletions"), Some(AUDITOR_TOKEN), None);
    let deletions = list["deletions"].as_array().unwrap();
    assert_eq!(deletions.len() as u64, marked);
    for d in deletions {
        assert_eq!(d["state"], "cancelled", "{d}");
        assert!(d["cancelled"].as_str().unwrap().contains("no longer delete"), "{d}");
    }
    assert!(server.stop().success());
}
