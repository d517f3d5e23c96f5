//! Linking patient identities: after a registration error, the studies filed under one patient
//! identity are re-filed under another, reversibly and audited.
//!
//! A link moves every study of the `from` identity (Patient ID within its issuer's domain) to
//! the `to` identity in one catalog batch: the study records take the target's patient
//! attributes (so C-FIND and QIDO-RS find them under the target), the patient records' counts
//! follow, and the link keeps each study's previous identity and attributes. On retrieve, the
//! objects of a linked study are returned with the target's patient attributes, the previous
//! values in their Original Attributes Sequence (reason `CORRECT`); the stored objects are not
//! changed, so undoing the link restores everything exactly.

use crate::attribute::{AttrMap, Attribute, Level};
use crate::model::PatientKey;
use crate::uid::StudyUid;
use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;

/// Identifies a link (unique, increasing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LinkId(pub u64);

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One study a link moved, with what it had before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedStudy {
    /// The study.
    pub study: StudyUid,
    /// Its patient identity before the link.
    pub previous_patient: PatientKey,
    /// Its patient-level attributes before the link.
    pub previous_attrs: AttrMap,
}

/// Current version of the patient link record format.
pub const LINK_VERSION: u32 = 1;

crate::first_format!(PatientLink, "patient link record", LINK_VERSION);

/// A link of two patient identities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientLink {
    /// Format version.
    pub v: u32,
    /// Identifier.
    pub id: LinkId,
    /// The identity whose studies moved.
    pub from: PatientKey,
    /// The identity they moved to.
    pub to: PatientKey,
    /// The target's patient-level attributes applied to the studies (and to retrieved objects).
    pub to_attrs: AttrMap,
    /// The studies moved.
    pub studies: Vec<LinkedStudy>,
    /// Who linked.
    pub linked_by: String,
    /// Why.
    pub reason: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub linked_at: OffsetDateTime,
    /// Who undid it, why and when, once undone.
    #[serde(default)]
    pub undone: Option<String>,
}

impl PatientLink {
    /// Whether it still stands.
    pub fn is_active(&self) -> bool {
        self.undone.is_none()
    }
}

/// The patient-level attributes of a study's attributes (those a link replaces).
pub fn patient_attrs(attrs: &AttrMap) -> AttrMap {
    attrs.of_level(Level::Patient)
}

/// A study's attributes with the patient-level ones replaced by `patient`.
pub fn with_patient(attrs: &AttrMap, patient: &AttrMap) -> AttrMap {
    let mut out = AttrMap::new();
    for (a, v) in attrs.iter() {
        if a.level() != Level::Patient {
            out.set(a, v);
        }
    }
    out.extend(patient);
    out
}

/// The patient-level attributes of an identity as written into objects: the target record's
/// values, with the Patient ID and issuer of the identity itself.
pub fn identity_attrs(key: &PatientKey, record_attrs: &AttrMap) -> AttrMap {
    let mut out = patient_attrs(record_attrs);
    out.set(Attribute::PatientID, key.patient_id.clone());
    out.set(Attribute::IssuerOfPatientID, key.issuer.clone());
    out
}

/// Why a link cannot be made or undone.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The two identities are the same.
    #[error("both identities are {0}")]
    SameIdentity(String),
    /// An identity has no studies in the archive.
    #[error("patient {0} is not in the archive")]
    UnknownPatient(String),
    /// No such link.
    #[error("patient link {0} not found")]
    NotFound(LinkId),
    /// The link was undone already, or a later link moved its studies again.
    #[error("patient link {id} cannot be undone: {why}")]
    NotUndoable {
        /// The link.
        id: LinkId,
        /// Why.
        why: String,
    },
    /// The request is incomplete.
    #[error("{0}")]
    Invalid(String),
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
}

fn label(k: &PatientKey) -> String {
    format!("{}^^^{}", k.patient_id, k.issuer)
}

fn studies_of(
    catalog: &dyn crate::catalog::Catalog,
    patient: &PatientKey,
) -> Result<Vec<crate::model::StudyRecord>, LinkError> {
    let mut q = crate::query::Query::new(Level::Study);
    // Exact Patient ID; the issuer is checked on each row (the index is by Patient ID).
    let escaped: String = patient.patient_id.chars().filter(|c| !matches!(c, '*' | '?' | '\\')).collect();
    if escaped != patient.patient_id || escaped.is_empty() {
        // Wildcard characters or an empty ID: scan.
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = catalog.study_uids(after.as_ref(), 1000)?;
            let Some(last) = page.last().cloned() else { break };
            for uid in page {
                if let Some(s) = catalog.study(&uid)? {
                    if s.patient == *patient {
                        out.push(s);
                    }
                }
            }
            after = Some(last);
        }
        return Ok(out);
    }
    q.add(Attribute::PatientID, &escaped).map_err(|e| LinkError::Invalid(e.to_string()))?;
    let page = catalog.query(&q, crate::matching::MatchOptions::default())?;
    Ok(page.rows.into_iter().filter_map(|r| r.study).filter(|s| s.patient == *patient).collect())
}

/// Serializes links and undos, so that an undo's check for later links and the links it
/// races with see one order.
static LINKING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Re-files every study of `from` under `to`, audited; returns the link.
pub async fn link(
    catalog: &dyn crate::catalog::Catalog,
    from: PatientKey,
    to: PatientKey,
    by: &str,
    address: &str,
    reason: &str,
) -> Result<PatientLink, LinkError> {
    if reason.trim().is_empty() {
        return Err(LinkError::Invalid("linking patients needs a reason".into()));
    }
    let _one = LINKING.lock().await;
    if from == to {
        return Err(LinkError::SameIdentity(label(&from)));
    }
    let target = catalog.patient(&to)?.ok_or_else(|| LinkError::UnknownPatient(label(&to)))?;
    let studies = studies_of(catalog, &from)?;
    if studies.is_empty() {
        return Err(LinkError::UnknownPatient(label(&from)));
    }
    let to_attrs = identity_attrs(&to, &target.attrs);
    let now = OffsetDateTime::now_utc();
    let id = LinkId((now.unix_timestamp_nanos() / 1000) as u64);
    let link = PatientLink {
        v: LINK_VERSION,
        id,
        from: from.clone(),
        to: to.clone(),
        to_attrs: to_attrs.clone(),
        studies: studies
            .iter()
            .map(|s| LinkedStudy {
                study: s.uid.clone(),
                previous_patient: s.patient.clone(),
                previous_attrs: patient_attrs(&s.attrs),
            })
            .collect(),
        linked_by: by.to_string(),
        reason: reason.to_string(),
        linked_at: now,
        undone: None,
    };
    let moves = studies
        .iter()
        .map(|s| crate::catalog::StudyMove { study: s.uid.clone(), to: to.clone(), patient_attrs: to_attrs.clone() })
        .collect();
    let event = crate::audit::AuditEvent {
        time: now,
        action: crate::audit::AuditAction::PatientLinked,
        actor: by.to_string(),
        actor_address: address.to_string(),
        objects: studies
            .iter()
            .flat_map(|s| {
                [
                    crate::audit::AuditObject {
                        patient: label(&from),
                        study: s.uid.to_string(),
                        sop_instance: None,
                        checksum: None,
                    },
                    crate::audit::AuditObject {
                        patient: label(&to),
                        study: s.uid.to_string(),
                        sop_instance: None,
                        checksum: None,
                    },
                ]
            })
            .collect(),
        reason: Some(reason.to_string()),
        outcome: crate::audit::AuditOutcome::Success,
        detail: Some(format!("link {id}: {} studies of {} re-filed under {}", studies.len(), label(&from), label(&to))),
    };
    catalog.relink(moves, link.clone(), event).await?;
    tracing::info!(link = %id, from = %label(&from), to = %label(&to), studies = studies.len(), "patients linked");
    Ok(link)
}

/// Undoes a link: its studies go back to the identities and attributes they had.
pub async fn unlink(
    catalog: &dyn crate::catalog::Catalog,
    id: LinkId,
    by: &str,
    address: &str,
    reason: &str,
) -> Result<PatientLink, LinkError> {
    if reason.trim().is_empty() {
        return Err(LinkError::Invalid("undoing a link needs a reason".into()));
    }
    let _one = LINKING.lock().await;
    let links = catalog.links()?;
    let mut link = links.iter().find(|l| l.id == id).cloned().ok_or(LinkError::NotFound(id))?;
    if !link.is_active() {
        return Err(LinkError::NotUndoable {
            id,
            why: format!("already undone ({})", link.undone.clone().unwrap_or_default()),
        });
    }
    if let Some(later) = links.iter().find(|l| {
        l.id > id && l.is_active() && l.studies.iter().any(|s| link.studies.iter().any(|m| m.study == s.study))
    }) {
        return Err(LinkError::NotUndoable {
            id,
            why: format!("link {} moved its studies again; undo it first", later.id),
        });
    }
    let now = OffsetDateTime::now_utc();
    let moves = link
        .studies
        .iter()
        .map(|s| crate::catalog::StudyMove {
            study: s.study.clone(),
            to: s.previous_patient.clone(),
            patient_attrs: s.previous_attrs.clone(),
        })
        .collect();
    link.undone = Some(format!("{by} at {now}: {reason}"));
    let event = crate::audit::AuditEvent {
        time: now,
        action: crate::audit::AuditAction::PatientUnlinked,
        actor: by.to_string(),
        actor_address: address.to_string(),
        objects: link
            .studies
            .iter()
            .map(|s| crate::audit::AuditObject {
                patient: label(&s.previous_patient),
                study: s.study.to_string(),
                sop_instance: None,
                checksum: None,
            })
            .collect(),
        reason: Some(reason.to_string()),
        outcome: crate::audit::AuditOutcome::Success,
        detail: Some(format!("link {id} undone: {} studies back to {}", link.studies.len(), label(&link.from))),
    };
    catalog.relink(moves, link.clone(), event).await?;
    Ok(link)
}

/// The changes that give an object the patient attributes `attrs` (every stored patient-level
/// attribute: set when `attrs` has it, removed otherwise), for [`crate::coerce::rewrite_attributes`].
pub fn patient_changes(attrs: &AttrMap) -> Vec<(dicom_core::Tag, dicom_core::VR, Option<String>)> {
    use dicom_core::VR;
    Attribute::ALL
        .iter()
        .filter(|a| a.level() == Level::Patient && a.is_stored())
        .map(|a| {
            let (g, e) = a.group_element();
            let vr = match a {
                Attribute::PatientName => VR::PN,
                Attribute::PatientBirthDate => VR::DA,
                Attribute::PatientSex => VR::CS,
                _ => VR::LO,
            };
            (dicom_core::Tag(g, e), vr, attrs.get(*a).map(str::to_string))
        })
        .collect()
}

/// Rewrites the patient attributes of DICOM JSON metadata (WADO-RS metadata of linked studies).
pub fn rewrite_metadata_json(json: &[u8], attrs: &AttrMap) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(json) else { return json.to_vec() };
    if let Some(obj) = v.as_object_mut() {
        for (tag, vr, value) in patient_changes(attrs) {
            let key = format!("{:04X}{:04X}", tag.group(), tag.element());
            match value {
                Some(val) => {
                    let entry = if vr == dicom_core::VR::PN {
                        serde_json::json!({ "vr": "PN", "Value": [{ "Alphabetic": val }] })
                    } else {
                        serde_json::json!({ "vr": vr.to_string(), "Value": [val] })
                    };
                    obj.insert(key, entry);
                }
                None => {
                    obj.remove(&key);
                }
            }
        }
    }
    serde_json::to_vec(&v).unwrap_or_else(|_| json.to_vec())
}
