//! What queries see of studies that deletions hide.
//!
//! A deletion hides its study (or, for an IOCM rejection, some of its instances) from the
//! moment it takes effect, while the purge removes the records batch by batch afterwards.
//! Until then the patient, study and series records still count the hidden objects. This view
//! drops rows with nothing visible left and takes the hidden objects out of the counts
//! (Number of Patient/Study/Series Related Studies, Series, Instances) of the rows it lets
//! through. It looks records up lazily, only for studies that a deletion touches.

use super::{Catalog, CatalogError};
use crate::deletion::Deletion;
use crate::model::{PatientKey, StudyRecord};
use crate::query::QueryRow;
use std::collections::HashMap;
use std::rc::Rc;
use time::OffsetDateTime;

/// What is hidden of one study.
#[derive(Debug, Clone, Default)]
struct StudyHidden {
    /// The whole study is hidden.
    whole: bool,
    /// Hidden instances still in the catalog, per series UID.
    per_series: HashMap<String, u64>,
    /// Series whose every instance is hidden (partial deletions only).
    fully_hidden_series: u64,
    /// The study's record, when it is still in the catalog.
    record: Option<StudyRecord>,
}

impl StudyHidden {
    fn instances(&self) -> u64 {
        self.per_series.values().sum()
    }
}

/// Hidden objects as queries see them, for one query (deletions taken at one instant).
pub(crate) struct HiddenView<'a> {
    catalog: &'a dyn Catalog,
    deletions: &'a HashMap<String, Vec<Deletion>>,
    now: OffsetDateTime,
    studies: HashMap<String, Rc<StudyHidden>>,
    /// Studies with anything hidden, by their current patient (built on the first patient row).
    by_patient: Option<HashMap<PatientKey, Vec<String>>>,
}

impl<'a> HiddenView<'a> {
    /// A view of `deletions` (active deletions by study UID) at `now`.
    pub(crate) fn new(
        catalog: &'a dyn Catalog,
        deletions: &'a HashMap<String, Vec<Deletion>>,
        now: OffsetDateTime,
    ) -> Self {
        Self { catalog, deletions, now, studies: HashMap::new(), by_patient: None }
    }

    /// Whether nothing is hidden at all (the common case: rows pass untouched).
    pub(crate) fn is_empty(&self) -> bool {
        self.deletions.is_empty()
    }

    /// The row as queries should see it, or `None` when nothing of it is visible.
    pub(crate) fn visible(&mut self, mut row: QueryRow) -> Result<Option<QueryRow>, CatalogError> {
        if let Some(instance) = &row.instance {
            if self.hides_instance(instance.study.as_str(), instance.uid.as_str()) {
                return Ok(None);
            }
        }
        if let Some(patient) = row.patient.as_mut() {
            let studies = self.patient_studies(&patient.key)?;
            for study in studies {
                let hidden = self.study(&study)?;
                let Some(record) = &hidden.record else { continue };
                let (studies, series, instances) = if hidden.whole || hidden.instances() >= record.instance_count {
                    (1, record.series_count, record.instance_count)
                } else {
                    (0, hidden.fully_hidden_series, hidden.instances())
                };
                patient.study_count = patient.study_count.saturating_sub(studies);
                patient.series_count = patient.series_count.saturating_sub(series);
                patient.instance_count = patient.instance_count.saturating_sub(instances);
            }
            if patient.study_count == 0 {
                return Ok(None);
            }
        }
        if let Some(study) = row.study.as_mut() {
            if self.deletions.contains_key(study.uid.as_str()) {
                let hidden = self.study(study.uid.as_str())?;
                if hidden.whole {
                    return Ok(None);
                }
                let instances = hidden.instances();
                if instances > 0 {
                    if instances >= study.instance_count {
                        return Ok(None);
                    }
                    study.series_count = study.series_count.saturating_sub(hidden.fully_hidden_series);
                    study.instance_count -= instances;
                    if let Some(series) = row.series.as_mut() {
                        let gone = hidden.per_series.get(series.uid.as_str()).copied().unwrap_or(0);
                        if gone >= series.instance_count {
                            return Ok(None);
                        }
                        series.instance_count -= gone;
                    }
                }
            }
        }
        Ok(Some(row))
    }

    /// Whether a deletion in effect hides this instance.
    fn hides_instance(&self, study: &str, sop: &str) -> bool {
        self.deletions.get(study).is_some_and(|list| {
            list.iter().any(|d| d.hides_at(self.now) && (d.instances.is_none() || d.covers_instance(sop)))
        })
    }

    /// What is hidden of a study (computed once per view).
    fn study(&mut self, uid: &str) -> Result<Rc<StudyHidden>, CatalogError> {
        if let Some(known) = self.studies.get(uid) {
            return Ok(known.clone());
        }
        let computed = Rc::new(self.compute(uid)?);
        self.studies.insert(uid.to_string(), computed.clone());
        Ok(computed)
    }

    fn compute(&self, uid: &str) -> Result<StudyHidden, CatalogError> {
        let mut hidden = StudyHidden::default();
        let Some(list) = self.deletions.get(uid) else { return Ok(hidden) };
        let Ok(study_uid) = crate::uid::StudyUid::new(uid) else { return Ok(hidden) };
        hidden.record = self.catalog.study(&study_uid)?;
        let mut seen = std::collections::HashSet::new();
        for d in list.iter().filter(|d| d.hides_at(self.now)) {
            match &d.instances {
                None => hidden.whole = true,
                Some(sops) => {
                    for sop in sops {
                        if !seen.insert(sop.as_str()) {
                            continue;
                        }
                        // Only instances still in the catalog (and in this study) are counted.
                        if let Some(inst) = self.catalog.instance(sop)? {
                            if inst.study.as_str() == uid {
                                *hidden.per_series.entry(inst.series.as_str().to_string()).or_default() += 1;
                            }
                        }
                    }
                }
            }
        }
        hidden.fully_hidden_series = fully_hidden_series(self.catalog, &hidden)?;
        Ok(hidden)
    }

    /// The studies with anything hidden that belong to this patient now.
    fn patient_studies(&mut self, key: &PatientKey) -> Result<Vec<String>, CatalogError> {
        if self.by_patient.is_none() {
            let mut map: HashMap<PatientKey, Vec<String>> = HashMap::new();
            let uids: Vec<String> = self.deletions.keys().cloned().collect();
            for uid in uids {
                let patient = self.study(&uid)?.record.as_ref().map(|r| r.patient.clone());
                if let Some(p) = patient {
                    map.entry(p).or_default().push(uid);
                }
            }
            self.by_patient = Some(map);
        }
        Ok(self.by_patient.as_ref().and_then(|m| m.get(key).cloned()).unwrap_or_default())
    }
}

/// Series of a partly hidden study whose every instance is hidden.
fn fully_hidden_series(catalog: &dyn Catalog, hidden: &StudyHidden) -> Result<u64, CatalogError> {
    let mut n = 0;
    for (uid, gone) in &hidden.per_series {
        let Ok(series_uid) = crate::uid::SeriesUid::new(uid) else { continue };
        if let Some(series) = catalog.series(&series_uid)? {
            if *gone >= series.instance_count {
                n += 1;
            }
        }
    }
    Ok(n)
}
