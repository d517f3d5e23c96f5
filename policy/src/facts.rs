//! Study facts: what rules can look at, gathered from the catalog's records.

use crate::period::{age_in_years, parse_age_string, parse_da};
use archive_core::attribute::Attribute;
use archive_core::model::{PatientKey, SeriesRecord, StudyRecord};
use archive_core::uid::StudyUid;
use serde::Serialize;
use std::collections::BTreeSet;
use time::{Date, OffsetDateTime};

/// Everything a rule, floor or hold can test about one study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StudyFacts {
    /// The study.
    pub study: StudyUid,
    /// The patient (Patient ID within its issuer's domain).
    pub patient: PatientKey,
    /// Accession Number.
    pub accession: Option<String>,
    /// Modalities of its series (ModalitiesInStudy).
    pub modalities: BTreeSet<String>,
    /// SOP classes of its instances.
    pub sop_classes: BTreeSet<String>,
    /// Study Date, when present and valid.
    pub study_date: Option<Date>,
    /// When the archive received its first instance.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// Last retrieve, if any.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_access: Option<OffsetDateTime>,
    /// AE titles (or users) that sent its series.
    pub source_aes: BTreeSet<String>,
    /// Institution Name.
    pub institution: Option<String>,
    /// Study Description.
    pub description: Option<String>,
    /// Patient's Birth Date.
    pub patient_birth_date: Option<Date>,
    /// Patient's Age (AS) as recorded in the study, in whole years.
    pub patient_age_recorded: Option<u32>,
    /// Bytes of all instances.
    pub size_bytes: u64,
    /// Instances.
    pub instance_count: u64,
    /// Tiers holding a copy of at least one instance.
    pub tiers: BTreeSet<String>,
}

impl StudyFacts {
    /// Gathers the facts of a study from its record and its series' records.
    pub fn from_records(study: &StudyRecord, series: &[SeriesRecord]) -> Self {
        let text = |a: Attribute| study.attrs.get(a).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        Self {
            study: study.uid.clone(),
            patient: study.patient.clone(),
            accession: text(Attribute::AccessionNumber),
            modalities: study.modalities.iter().map(|m| m.trim().to_ascii_uppercase()).collect(),
            sop_classes: study.sop_classes.clone(),
            study_date: study.attrs.get(Attribute::StudyDate).and_then(parse_da),
            received_at: study.created_at,
            last_access: study.last_access,
            source_aes: series.iter().map(|s| s.source.actor.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            institution: text(Attribute::InstitutionName),
            description: text(Attribute::StudyDescription),
            patient_birth_date: study.attrs.get(Attribute::PatientBirthDate).and_then(parse_da),
            patient_age_recorded: study.attrs.get(Attribute::PatientAge).and_then(parse_age_string),
            size_bytes: study.size_bytes,
            instance_count: study.instance_count,
            tiers: study.placement.per_tier().into_keys().collect(),
        }
    }

    /// The date ages are counted from: the Study Date, else the day the archive received it.
    pub fn reference_date(&self) -> Date {
        self.study_date.unwrap_or(self.received_at.date())
    }

    /// The patient's age at the study in whole years: from the birth date when known, else the
    /// recorded Patient's Age.
    pub fn patient_age_at_study(&self) -> Option<u32> {
        match self.patient_birth_date {
            Some(birth) if birth <= self.reference_date() => Some(age_in_years(birth, self.reference_date())),
            _ => self.patient_age_recorded,
        }
    }

    /// The last day the study was read, else the day it was received.
    pub fn last_used(&self) -> Date {
        self.last_access.unwrap_or(self.received_at).date()
    }
}
