//! Catalog queries: one model shared by C-FIND and QIDO-RS.
//!
//! A [`Query`] names the level and a matcher per attribute; the catalog answers
//! with [`QueryRow`]s from which each protocol picks the attributes it returns.

use crate::attribute::{Attribute, Level};
use crate::matching::{parse_matcher, MatchError, Matcher};
use crate::model::{InstanceRecord, PatientRecord, SeriesRecord, StudyRecord};

/// One query key: an attribute and how to match it.
#[derive(Debug, Clone)]
pub struct QueryKey {
    /// The attribute.
    pub attribute: Attribute,
    /// The parsed matcher.
    pub matcher: Matcher,
}

/// A query against the catalog.
#[derive(Debug, Clone)]
pub struct Query {
    /// The level of the rows returned.
    pub level: Level,
    /// Matching keys; all must hold (universal keys may be present and constrain nothing).
    pub keys: Vec<QueryKey>,
    /// Rows to skip.
    pub offset: usize,
    /// Maximum rows to return (None: no limit).
    pub limit: Option<usize>,
}

/// A query value that cannot be parsed for its attribute.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid value {value:?} for {attribute}: {source}")]
pub struct QueryKeyError {
    /// The attribute's keyword.
    pub attribute: &'static str,
    /// The value given.
    pub value: String,
    /// Why it is invalid.
    #[source]
    pub source: MatchError,
}

impl Query {
    /// A query at a level with no keys (everything).
    pub fn new(level: Level) -> Self {
        Self { level, keys: Vec::new(), offset: 0, limit: None }
    }
    /// Adds a key from its raw DICOM string value (empty for universal matching).
    pub fn with(mut self, attribute: Attribute, raw: &str) -> Result<Self, QueryKeyError> {
        self.add(attribute, raw)?;
        Ok(self)
    }
    /// Adds a key from its raw DICOM string value.
    pub fn add(&mut self, attribute: Attribute, raw: &str) -> Result<(), QueryKeyError> {
        let matcher = parse_matcher(attribute.match_vr(), raw).map_err(|source| QueryKeyError {
            attribute: attribute.keyword(),
            value: raw.to_string(),
            source,
        })?;
        self.keys.push(QueryKey { attribute, matcher });
        Ok(())
    }
    /// The matcher of an attribute, if it constrains the result.
    pub fn constraint(&self, attribute: Attribute) -> Option<&Matcher> {
        self.keys.iter().find(|k| k.attribute == attribute && k.matcher.is_constraining()).map(|k| &k.matcher)
    }
}

/// One row of a query result, with the records of its level and of the levels above.
#[derive(Debug, Clone)]
pub struct QueryRow {
    /// The row's level.
    pub level: Level,
    /// The patient (PATIENT level rows only; other levels carry patient attributes in the study).
    pub patient: Option<PatientRecord>,
    /// The study (STUDY level and below).
    pub study: Option<StudyRecord>,
    /// The series (SERIES level and below).
    pub series: Option<SeriesRecord>,
    /// The instance (IMAGE level).
    pub instance: Option<InstanceRecord>,
}

fn join(set: &std::collections::BTreeSet<String>) -> Option<String> {
    if set.is_empty() {
        None
    } else {
        Some(set.iter().cloned().collect::<Vec<_>>().join("\\"))
    }
}

impl QueryRow {
    /// The value of an attribute for this row, looking at the row's level and the levels above.
    /// Computed attributes (counts, modalities in study) come from the catalog's counters.
    pub fn value(&self, a: Attribute) -> Option<String> {
        use Attribute as A;
        match a {
            A::NumberOfPatientRelatedStudies => return self.patient.as_ref().map(|p| p.study_count.to_string()),
            A::NumberOfPatientRelatedSeries => return self.patient.as_ref().map(|p| p.series_count.to_string()),
            A::NumberOfPatientRelatedInstances => return self.patient.as_ref().map(|p| p.instance_count.to_string()),
            A::NumberOfStudyRelatedSeries => return self.study.as_ref().map(|s| s.series_count.to_string()),
            A::NumberOfStudyRelatedInstances => return self.study.as_ref().map(|s| s.instance_count.to_string()),
            A::NumberOfSeriesRelatedInstances => return self.series.as_ref().map(|s| s.instance_count.to_string()),
            A::ModalitiesInStudy => return self.study.as_ref().and_then(|s| join(&s.modalities)),
            // Above SERIES level a Modality key means "a series of this modality": ModalitiesInStudy.
            A::Modality if self.series.is_none() => return self.study.as_ref().and_then(|s| join(&s.modalities)),
            A::SOPClassesInStudy => return self.study.as_ref().and_then(|s| join(&s.sop_classes)),
            A::StudyInstanceUID => return self.study.as_ref().map(|s| s.uid.to_string()),
            A::SeriesInstanceUID => return self.series.as_ref().map(|s| s.uid.to_string()),
            _ => {}
        }
        if let Some(i) = &self.instance {
            if a.level() == Level::Instance {
                return i.attr(a).map(str::to_string);
            }
        }
        if let Some(s) = &self.series {
            if a.level() == Level::Series {
                return s.attrs.get(a).map(str::to_string);
            }
        }
        match a.level() {
            Level::Patient => {
                if let Some(p) = &self.patient {
                    return p.attrs.get(a).map(str::to_string);
                }
                self.study.as_ref().and_then(|s| s.attrs.get(a).map(str::to_string))
            }
            Level::Study => self.study.as_ref().and_then(|s| s.attrs.get(a).map(str::to_string)),
            _ => None,
        }
    }
}

/// One page of query results.
#[derive(Debug, Clone)]
pub struct QueryPage {
    /// The rows, after offset and limit.
    pub rows: Vec<QueryRow>,
    /// Whether more rows matched beyond the limit.
    pub more: bool,
}
