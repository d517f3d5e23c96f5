//! From the archive's records to the API's types. Every field of the contract is filled here,
//! so a change of a core record fails to compile here instead of changing the API unnoticed.

use crate::types as api;
use archive_core::attribute::AttrMap;
use archive_core::model::PatientKey;
use std::collections::BTreeMap;

fn date(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn attrs(map: &AttrMap) -> BTreeMap<String, String> {
    map.iter().map(|(a, v)| (a.keyword().to_string(), v.to_string())).collect()
}

impl From<&PatientKey> for api::PatientIdentity {
    fn from(k: &PatientKey) -> Self {
        Self { patient_id: k.patient_id.clone(), issuer: k.issuer.clone() }
    }
}

impl From<&archive_core::lifecycle::Job> for api::TierJob {
    fn from(j: &archive_core::lifecycle::Job) -> Self {
        use archive_core::lifecycle::{JobKind, JobState};
        Self {
            id: j.id.0,
            kind: match j.kind {
                JobKind::Move => api::TierJobKind::Move,
                JobKind::Recall => api::TierJobKind::Recall,
            },
            study: j.study.to_string(),
            from: j.from.as_ref().map(|t| t.to_string()),
            to: j.to.to_string(),
            keep_source: j.keep_source,
            requested_by: j.requested_by.clone(),
            reason: j.reason.clone(),
            state: match j.state {
                JobState::Queued => api::TierJobState::Queued,
                JobState::Running => api::TierJobState::Running,
                JobState::WaitingForRecall => api::TierJobState::WaitingForRecall,
                JobState::Done => api::TierJobState::Done,
                JobState::Failed => api::TierJobState::Failed,
            },
            instances_total: j.instances_total,
            instances_done: j.instances_done,
            instances_failed: j.instances_failed,
            bytes_copied: j.bytes_copied,
            last_error: j.last_error.clone(),
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

impl From<archive_core::lifecycle::scrub::ScrubStatus> for api::ScrubStatus {
    fn from(s: archive_core::lifecycle::scrub::ScrubStatus) -> Self {
        Self {
            running: s.running,
            started_at: s.started_at,
            finished_at: s.finished_at,
            studies_total: s.studies_total,
            studies_checked: s.studies_checked,
            copies_ok: s.copies_ok,
            bytes_checked: s.bytes_checked,
            copies_skipped: s.copies_skipped,
            copies_failed: s.copies_failed,
            last_failure: s.last_failure,
        }
    }
}

/// A deletion; its certificate lists every instance only when `with_instances`.
pub(crate) fn deletion(d: &archive_core::deletion::Deletion, with_instances: bool) -> api::Deletion {
    use archive_core::deletion::{DeletionCause, DeletionState};
    let c = &d.certificate;
    api::Deletion {
        id: d.id.0,
        study: d.study.to_string(),
        instances: d.instances.as_ref().map(|l| l.iter().map(|u| u.to_string()).collect()),
        patient: (&d.patient).into(),
        accession: d.accession.clone(),
        requested_by: d.requested_by.clone(),
        requested_from: d.requested_from.clone(),
        reason: d.reason.clone(),
        cause: match &d.cause {
            DeletionCause::Rule { name, version, rules_digest } => {
                api::DeletionCause::Rule { name: name.clone(), version: *version, rules_digest: rules_digest.clone() }
            }
            DeletionCause::Request => api::DeletionCause::Request,
            DeletionCause::Rejection { note, title } => {
                api::DeletionCause::Rejection { note: note.to_string(), title: title.clone() }
            }
        },
        state: match d.state {
            DeletionState::Marked => api::DeletionState::Marked,
            DeletionState::Purging => api::DeletionState::Purging,
            DeletionState::Purged => api::DeletionState::Purged,
            DeletionState::Cancelled => api::DeletionState::Cancelled,
        },
        marked_at: d.marked_at,
        hide_at: d.hide_at,
        hide_immediately: d.hide_immediately,
        covers_received_until: d.covers_received_until,
        purge_started_at: d.purge_started_at,
        finished_at: d.finished_at,
        cancelled: d.cancelled.clone(),
        audit_seqs: d.audit_seqs.clone(),
        certificate: api::Certificate {
            instances: if with_instances {
                c.instances
                    .iter()
                    .map(|i| api::CertifiedInstance {
                        sop_instance: i.sop_instance.to_string(),
                        sop_class: i.sop_class.clone(),
                        series: i.series.clone(),
                        size: i.size,
                        checksum: i.checksum.to_hex(),
                        tiers: i.tiers.clone(),
                        audit_seq: i.audit_seq,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            instance_count: c.instances.len() as u64,
            total_bytes: c.total_bytes,
            copies_per_tier: c.copies_per_tier.clone(),
            deferred_object_deletes: c.deferred_object_deletes,
        },
    }
}

impl From<&archive_core::hold::LegalHold> for api::LegalHold {
    fn from(h: &archive_core::hold::LegalHold) -> Self {
        use archive_core::hold::HoldScope;
        Self {
            id: h.id.0,
            scope: match &h.scope {
                HoldScope::Patient { patient } => api::HoldScope::Patient { patient: patient.into() },
                HoldScope::Study { study } => api::HoldScope::Study { study: study.to_string() },
                HoldScope::Accession { accession } => api::HoldScope::Accession { accession: accession.clone() },
            },
            reason: h.reason.clone(),
            set_by: h.set_by.clone(),
            set_at: h.set_at,
        }
    }
}

fn snake_case<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl From<&archive_core::audit::AuditRecord> for api::AuditRecord {
    fn from(r: &archive_core::audit::AuditRecord) -> Self {
        let e = &r.event;
        Self {
            seq: r.seq,
            prev_hash: r.prev_hash.to_hex(),
            hash: r.hash.to_hex(),
            time: e.time,
            action: snake_case(&e.action),
            actor: e.actor.clone(),
            actor_address: e.actor_address.clone(),
            objects: e
                .objects
                .iter()
                .map(|o| api::AuditObject {
                    patient: o.patient.clone(),
                    study: o.study.clone(),
                    sop_instance: o.sop_instance.clone(),
                    checksum: o.checksum.as_ref().map(|c| c.to_hex()),
                })
                .collect(),
            reason: e.reason.clone(),
            outcome: snake_case(&e.outcome),
            detail: e.detail.clone(),
        }
    }
}

impl From<&archive_core::patient_link::PatientLink> for api::PatientLink {
    fn from(l: &archive_core::patient_link::PatientLink) -> Self {
        Self {
            id: l.id.0,
            from: (&l.from).into(),
            to: (&l.to).into(),
            to_attrs: attrs(&l.to_attrs),
            studies: l
                .studies
                .iter()
                .map(|s| api::LinkedStudy {
                    study: s.study.to_string(),
                    previous_patient: (&s.previous_patient).into(),
                    previous_attrs: attrs(&s.previous_attrs),
                })
                .collect(),
            linked_by: l.linked_by.clone(),
            reason: l.reason.clone(),
            linked_at: l.linked_at,
            undone: l.undone.clone(),
        }
    }
}

impl From<&policy::RuleRef> for api::RuleRef {
    fn from(r: &policy::RuleRef) -> Self {
        Self { name: r.name.clone(), version: r.version }
    }
}

fn conditions(c: &policy::rules::Conditions) -> api::Conditions {
    api::Conditions {
        modality: c.modality.clone(),
        sop_class: c.sop_class.clone(),
        older_than: c.older_than.map(|p| p.to_string()),
        younger_than: c.younger_than.map(|p| p.to_string()),
        not_accessed_for: c.not_accessed_for.map(|p| p.to_string()),
        source_ae: c.source_ae.clone(),
        institution: c.institution.clone(),
        description: c.description.clone(),
        patient_age_min: c.patient_age_min,
        patient_age_max: c.patient_age_max,
        size_min: c.size_min.map(|b| b.0),
        size_max: c.size_max.map(|b| b.0),
        tier: c.tier.clone(),
    }
}

/// The rules in force as the API shows them.
pub(crate) fn policy_view(
    rules: &policy::RuleSet,
    rules_file: Option<String>,
    tiers: &[String],
    last_pass: Option<policy::scheduler::PassReport>,
) -> api::PolicyView {
    use policy::rules::{Retention, RuleAction};
    api::PolicyView {
        rules_file,
        digest: rules.digest.clone(),
        rules: rules
            .rules
            .iter()
            .map(|r| api::Rule {
                rule: (&r.id).into(),
                description: r.description.clone(),
                when: conditions(&r.when),
                action: match &r.action {
                    RuleAction::Keep => api::RuleAction::Keep,
                    RuleAction::Move { to } => api::RuleAction::Move { to: to.clone() },
                    RuleAction::Delete => api::RuleAction::Delete,
                },
                line: r.line,
            })
            .collect(),
        floors: rules
            .floors
            .iter()
            .map(|f| api::Floor {
                name: f.name.clone(),
                when: conditions(&f.when),
                retention: match &f.retention {
                    Retention::AfterStudy { keep } => api::Retention::AfterStudy { keep: keep.to_string() },
                    Retention::UntilAge { age, plus } => api::Retention::UntilAge { age: *age, plus: plus.to_string() },
                },
                line: f.line,
            })
            .collect(),
        tiers: tiers.to_vec(),
        last_pass: last_pass.map(Into::into),
    }
}

impl From<&policy::RuleSet> for api::RulesAccepted {
    fn from(r: &policy::RuleSet) -> Self {
        Self { digest: r.digest.clone(), rules: r.rules.len() as u64, floors: r.floors.len() as u64 }
    }
}

impl From<policy::scheduler::PassReport> for api::PassReport {
    fn from(p: policy::scheduler::PassReport) -> Self {
        Self {
            started_at: p.started_at,
            evaluated: p.evaluated,
            migrations: p.migrations,
            deletions: p.deletions,
            skipped: p.skipped,
            undone: p.undone,
            by_rule: p.by_rule,
            errors: p.errors,
        }
    }
}

fn totals(t: policy::simulate::Totals) -> api::Totals {
    api::Totals { studies: t.studies, bytes: t.bytes }
}

fn totals_map(m: BTreeMap<String, policy::simulate::Totals>) -> BTreeMap<String, api::Totals> {
    m.into_iter().map(|(k, t)| (k, totals(t))).collect()
}

impl From<policy::simulate::SimulationReport> for api::SimulationReport {
    fn from(s: policy::simulate::SimulationReport) -> Self {
        Self {
            at: s.at,
            rules_digest: s.rules_digest,
            evaluated: totals(s.evaluated),
            tiers: totals_map(s.tiers),
            deleted: totals(s.deleted),
            moved: totals_map(s.moved),
            kept: totals(s.kept),
            by_rule: totals_map(s.by_rule),
            blocked_by_floor: totals(s.blocked_by_floor),
            blocked_by_hold: totals(s.blocked_by_hold),
            deletions: s
                .deletions
                .into_iter()
                .map(|d| api::SimulatedDeletion { study: d.study, patient: d.patient, bytes: d.bytes, rule: d.rule })
                .collect(),
            deletions_truncated: s.deletions_truncated,
        }
    }
}

/// A study's facts and decision as the API shows them.
pub(crate) fn explanation(facts: &policy::StudyFacts, d: &policy::Decision) -> api::Explanation {
    use policy::evaluate::{Block, Truth};
    use policy::Outcome;
    api::Explanation {
        facts: api::StudyFacts {
            study: facts.study.to_string(),
            patient: api::PatientIdentity::from(&facts.patient).to_string(),
            accession: facts.accession.clone(),
            modalities: facts.modalities.iter().cloned().collect(),
            sop_classes: facts.sop_classes.iter().cloned().collect(),
            study_date: facts.study_date.map(date),
            received_at: facts.received_at,
            last_access: facts.last_access,
            source_aes: facts.source_aes.iter().cloned().collect(),
            institution: facts.institution.clone(),
            description: facts.description.clone(),
            patient_birth_date: facts.patient_birth_date.map(date),
            patient_age_recorded: facts.patient_age_recorded,
            size_bytes: facts.size_bytes,
            instance_count: facts.instance_count,
            tiers: facts.tiers.iter().cloned().collect(),
        },
        decision: api::Decision {
            outcome: match &d.outcome {
                Outcome::Keep => api::Outcome::Keep,
                Outcome::Move { to } => api::Outcome::Move { to: to.clone() },
                Outcome::Delete => api::Outcome::Delete,
            },
            rule: d.rule.as_ref().map(Into::into),
            at: d.at,
            blocked: d
                .blocked
                .iter()
                .map(|(rule, block)| match block {
                    Block::Floor { floor, until, detail } => api::Block::Floor {
                        rule: rule.into(),
                        floor: floor.clone(),
                        until: until.map(date),
                        detail: detail.clone(),
                    },
                    Block::Hold { hold, detail } => {
                        api::Block::Hold { rule: rule.into(), hold: hold.0, detail: detail.clone() }
                    }
                })
                .collect(),
            retained_until: d.retained_until.map(date),
            trace: d
                .trace
                .iter()
                .map(|t| api::RuleTrace {
                    rule: (&t.rule).into(),
                    action: t.action.clone(),
                    matched: t.matched,
                    conditions: t
                        .conditions
                        .iter()
                        .map(|c| api::ConditionResult {
                            condition: c.condition.to_string(),
                            result: match c.result {
                                Truth::Yes => api::Truth::Yes,
                                Truth::No => api::Truth::No,
                                Truth::Unknown => api::Truth::Unknown,
                            },
                            detail: c.detail.clone(),
                        })
                        .collect(),
                })
                .collect(),
            summary: d.summary.clone(),
        },
    }
}

fn pull_state(s: pull::JobState) -> api::PullState {
    match s {
        pull::JobState::Planning => api::PullState::Planning,
        pull::JobState::Running => api::PullState::Running,
        pull::JobState::Done => api::PullState::Done,
        pull::JobState::Failed => api::PullState::Failed,
        pull::JobState::Cancelled => api::PullState::Cancelled,
    }
}

fn pull_counters(c: &pull::job::Counters) -> api::PullCounters {
    api::PullCounters {
        studies_total: c.studies_total,
        studies_handled: c.studies_handled,
        studies_fetched: c.studies_fetched,
        studies_present: c.studies_present,
        studies_failed: c.studies_failed,
        instances_remote: c.instances_remote,
        instances_received: c.instances_received,
        bytes_received: c.bytes_received,
        fetches: c.fetches,
    }
}

impl From<&pull::JobStatus> for api::PullJob {
    fn from(j: &pull::JobStatus) -> Self {
        use pull::config::SourceKind;
        let h = &j.header;
        Self {
            id: h.id.0,
            source: h.source.clone(),
            kind: match h.kind {
                SourceKind::Dimse => api::PullSourceKind::Dimse,
                SourceKind::Dicomweb => api::PullSourceKind::Dicomweb,
            },
            since: h.since.clone(),
            until: h.until.clone(),
            requested_by: h.requested_by.clone(),
            requested_from: h.requested_from.clone(),
            state: pull_state(h.state),
            created_at: h.created_at,
            updated_at: h.updated_at,
            finished_at: h.finished_at,
            resumes: h.resumes,
            last_error: h.last_error.clone(),
            counters: pull_counters(&j.counters),
            current: j.current.as_ref().map(|c| api::CurrentStudy {
                study: c.study.clone(),
                remote_instances: c.remote_instances,
                received: c.received,
                bytes: c.bytes,
            }),
        }
    }
}

impl From<&pull::StudyProgress> for api::PullStudy {
    fn from(s: &pull::StudyProgress) -> Self {
        use pull::StudyState;
        Self {
            uid: s.planned.uid.clone(),
            remote_instances: s.planned.remote_instances,
            patient_id: s.planned.patient_id.clone(),
            study_date: s.planned.study_date.clone(),
            state: match s.state {
                StudyState::Pending => api::PullStudyState::Pending,
                StudyState::Fetching => api::PullStudyState::Fetching,
                StudyState::Done => api::PullStudyState::Done,
                StudyState::Present => api::PullStudyState::Present,
                StudyState::Failed => api::PullStudyState::Failed,
            },
            local_instances: s.local_instances,
            fetches: s.fetches,
            received: s.received,
            bytes: s.bytes,
            error: s.error.clone(),
        }
    }
}

impl From<&pull::Report> for api::PullReport {
    fn from(r: &pull::Report) -> Self {
        let side = |s: &pull::job::Side| api::Side { studies: s.studies, instances: s.instances };
        Self {
            pull: r.job.0,
            source: r.source.clone(),
            since: r.since.clone(),
            until: r.until.clone(),
            state: pull_state(r.state),
            r#final: r.r#final,
            generated_at: r.generated_at,
            remote: side(&r.remote),
            local: side(&r.local),
            counters: pull_counters(&r.counters),
            mismatches: r
                .mismatches
                .iter()
                .map(|m| api::Mismatch {
                    study: m.study.clone(),
                    patient_id: m.patient_id.clone(),
                    remote_instances: m.remote_instances,
                    local_instances: m.local_instances,
                })
                .collect(),
            unverified: r.unverified.clone(),
            failures: r
                .failures
                .iter()
                .map(|f| api::Failure { study: f.study.clone(), error: f.error.clone() })
                .collect(),
            pending: r.pending,
            error: r.error.clone(),
            reconciled: r.reconciled,
        }
    }
}
