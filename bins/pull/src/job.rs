//! The model of a pull job: what was asked, the plan (the studies the source holds in the
//! range), each study's progress, the counters derived from it, and the reconciliation report.

use crate::config::SourceKind;
use crate::error::PullError;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Version of the job files' format (header, plan and report).
pub const JOB_FORMAT_VERSION: u32 = 1;

/// Identifier of a pull job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for JobId {
    type Err = PullError;
    fn from_str(s: &str) -> Result<Self, PullError> {
        s.parse::<u64>().map(JobId).map_err(|_| PullError::InvalidRequest(format!("{s:?} is not a migration job id")))
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Asking the source which studies it holds in the range.
    Planning,
    /// Fetching studies.
    Running,
    /// Every planned study was handled (fetched, found present, or failed and reported).
    Done,
    /// The job could not go on (the source cannot be planned, the archive failed).
    Failed,
    /// Stopped at an administrator's request.
    Cancelled,
}

impl JobState {
    /// Whether the job has ended (it is not resumed).
    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Cancelled)
    }
}

/// An inclusive range of study dates; either end may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DateRange {
    /// First study date included.
    pub since: Option<time::Date>,
    /// Last study date included.
    pub until: Option<time::Date>,
}

const DICOM_DATE: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year][month][day]");
const ISO_DATE: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

impl DateRange {
    /// A range from `YYYY-MM-DD` (or `YYYYMMDD`) texts; refuses a reversed range.
    pub fn parse(since: Option<&str>, until: Option<&str>) -> Result<Self, PullError> {
        let date = |field: &str, s: &str| -> Result<time::Date, PullError> {
            let s = s.trim();
            time::Date::parse(s, ISO_DATE)
                .or_else(|_| time::Date::parse(s, DICOM_DATE))
                .map_err(|_| PullError::InvalidRequest(format!("{field}: {s:?} is not a date like 2019-01-31")))
        };
        let range = DateRange {
            since: since.filter(|s| !s.trim().is_empty()).map(|s| date("since", s)).transpose()?,
            until: until.filter(|s| !s.trim().is_empty()).map(|s| date("until", s)).transpose()?,
        };
        if let (Some(a), Some(b)) = (range.since, range.until) {
            if a > b {
                return Err(PullError::InvalidRequest(format!("since ({a}) is after until ({b})")));
            }
        }
        Ok(range)
    }

    /// The StudyDate matching key (`20190101-20191231`, `20190101-`, `-20191231`), or `None`
    /// for every date (then studies without a StudyDate are included too).
    pub fn to_dicom(&self) -> Option<String> {
        let f = |d: Option<time::Date>| d.and_then(|d| d.format(DICOM_DATE).ok()).unwrap_or_default();
        match (self.since, self.until) {
            (None, None) => None,
            (a, b) => Some(format!("{}-{}", f(a), f(b))),
        }
    }

    /// Whether a DICOM date (`YYYYMMDD`) lies in the range; an absent or unreadable date lies
    /// only in the unbounded range.
    pub fn contains_dicom(&self, date: &str) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Ok(d) = time::Date::parse(date.trim(), DICOM_DATE) else { return false };
        self.since.is_none_or(|s| d >= s) && self.until.is_none_or(|u| d <= u)
    }

    fn iso(d: Option<time::Date>) -> Option<String> {
        d.and_then(|d| d.format(ISO_DATE).ok())
    }
}

/// What was asked, persisted as the job's header (`job.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobHeader {
    /// Format version.
    pub v: u32,
    /// The job.
    pub id: JobId,
    /// The source's name.
    pub source: String,
    /// How the source is reached.
    pub kind: SourceKind,
    /// First study date (`YYYY-MM-DD`), if bounded.
    pub since: Option<String>,
    /// Last study date (`YYYY-MM-DD`), if bounded.
    pub until: Option<String>,
    /// Who asked (admin user).
    pub requested_by: String,
    /// From where.
    pub requested_from: String,
    /// Where the job is.
    pub state: JobState,
    /// When it was asked for.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change of the header.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub finished_at: Option<OffsetDateTime>,
    /// How often it was resumed after a stop or crash.
    #[serde(default)]
    pub resumes: u32,
    /// The error that ended it, or the last error of a planning attempt.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl JobHeader {
    /// The date range of the job.
    pub fn range(&self) -> Result<DateRange, PullError> {
        DateRange::parse(self.since.as_deref(), self.until.as_deref())
    }

    /// A header for a new job.
    pub fn new(id: JobId, source: &str, kind: SourceKind, range: DateRange, by: &str, from: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        JobHeader {
            v: JOB_FORMAT_VERSION,
            id,
            source: source.to_string(),
            kind,
            since: DateRange::iso(range.since),
            until: DateRange::iso(range.until),
            requested_by: by.to_string(),
            requested_from: from.to_string(),
            state: JobState::Planning,
            created_at: now,
            updated_at: now,
            finished_at: None,
            resumes: 0,
            last_error: None,
        }
    }
}

/// A study the source holds in the range, as planning found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStudy {
    /// Study Instance UID.
    pub uid: String,
    /// Number of Study Related Instances the source reported (`None` when it did not say).
    pub remote_instances: Option<u64>,
    /// Patient ID at the source.
    #[serde(default)]
    pub patient_id: String,
    /// Study Date at the source.
    #[serde(default)]
    pub study_date: String,
}

/// What happened to one study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyState {
    /// Not handled yet.
    Pending,
    /// A fetch started and has not ended (after a crash: checked again on resume).
    Fetching,
    /// Fetched; vna now holds at least the source's instance count.
    Done,
    /// vna already held at least the source's instance count; not fetched.
    Present,
    /// The fetch failed or left vna short of the source's count.
    Failed,
}

/// One line of a job's progress log: a fetch that starts, or the outcome of a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// Study Instance UID.
    pub study: String,
    /// `fetching` at the start of a fetch; the outcome afterwards.
    pub state: StudyState,
    /// Instances vna holds of the study after the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_instances: Option<u64>,
    /// Instances the fetch delivered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub received: u64,
    /// Bytes the fetch delivered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A study's progress: the plan entry and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyProgress {
    /// The planned study.
    #[serde(flatten)]
    pub planned: PlannedStudy,
    /// What happened to it.
    pub state: StudyState,
    /// Instances vna held after its outcome.
    pub local_instances: Option<u64>,
    /// Fetches started for it (over every resume): 1 for a study fetched once.
    pub fetches: u32,
    /// Instances delivered by its fetches.
    pub received: u64,
    /// Bytes delivered by its fetches.
    pub bytes: u64,
    /// The last error.
    pub error: Option<String>,
}

impl StudyProgress {
    /// A study not handled yet.
    pub fn new(planned: PlannedStudy) -> Self {
        StudyProgress {
            planned,
            state: StudyState::Pending,
            local_instances: None,
            fetches: 0,
            received: 0,
            bytes: 0,
            error: None,
        }
    }

    /// Applies one progress event about this study.
    pub fn apply(&mut self, e: &ProgressEvent) {
        if e.state == StudyState::Fetching {
            self.fetches += 1;
        } else {
            self.local_instances = e.local_instances;
            self.error = e.error.clone();
        }
        self.state = e.state;
        self.received += e.received;
        self.bytes += e.bytes;
    }

    /// Whether vna holds fewer instances than the source reported.
    pub fn is_short(&self) -> bool {
        match (self.planned.remote_instances, self.local_instances) {
            (Some(r), Some(l)) => l < r,
            (Some(r), None) => r > 0,
            _ => false,
        }
    }
}

/// Counters of a job, derived from its studies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Studies in the plan.
    pub studies_total: u64,
    /// Studies handled (fetched, present or failed).
    pub studies_handled: u64,
    /// Studies fetched successfully.
    pub studies_fetched: u64,
    /// Studies vna already held (not fetched).
    pub studies_present: u64,
    /// Studies that failed.
    pub studies_failed: u64,
    /// Instances the source reported over the plan.
    pub instances_remote: u64,
    /// Instances delivered by fetches.
    pub instances_received: u64,
    /// Bytes delivered by fetches.
    pub bytes_received: u64,
    /// Fetches started (a study fetched once counts one; retries and resumes add).
    pub fetches: u64,
}

impl Counters {
    /// The counters of a list of studies.
    pub fn of(studies: &[StudyProgress]) -> Self {
        let mut c = Counters { studies_total: studies.len() as u64, ..Counters::default() };
        for s in studies {
            match s.state {
                StudyState::Done => c.studies_fetched += 1,
                StudyState::Present => c.studies_present += 1,
                StudyState::Failed => c.studies_failed += 1,
                StudyState::Pending | StudyState::Fetching => {}
            }
            c.instances_remote += s.planned.remote_instances.unwrap_or(0);
            c.instances_received += s.received;
            c.bytes_received += s.bytes;
            c.fetches += u64::from(s.fetches);
        }
        c.studies_handled = c.studies_fetched + c.studies_present + c.studies_failed;
        c
    }
}

/// A job as the admin API shows it: the header, the counters and the study at work.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    /// What was asked and where the job is.
    #[serde(flatten)]
    pub header: JobHeader,
    /// Progress.
    pub counters: Counters,
    /// The study being fetched, with the instances and bytes received so far.
    pub current: Option<CurrentStudy>,
}

/// The study a job is fetching now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CurrentStudy {
    /// Study Instance UID.
    pub study: String,
    /// Instances the source reported.
    pub remote_instances: Option<u64>,
    /// Instances received so far.
    pub received: u64,
    /// Bytes received so far (DICOMweb only; DIMSE counts at the end of the study).
    pub bytes: u64,
}

/// Instance counts of one side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Side {
    /// Studies.
    pub studies: u64,
    /// Instances.
    pub instances: u64,
}

/// A study vna holds fewer instances of than the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// Study Instance UID.
    pub study: String,
    /// Patient ID at the source.
    pub patient_id: String,
    /// Instances the source reported.
    pub remote_instances: u64,
    /// Instances vna holds.
    pub local_instances: u64,
}

/// A study whose pull failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Study Instance UID.
    pub study: String,
    /// Why.
    pub error: String,
}

/// The reconciliation report of a job: both sides' counts, the studies that differ and the
/// failures. Final once the job has ended; before that, a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Format version.
    pub v: u32,
    /// The job.
    pub job: JobId,
    /// The source.
    pub source: String,
    /// First study date, if bounded.
    pub since: Option<String>,
    /// Last study date, if bounded.
    pub until: Option<String>,
    /// The job's state when the report was made.
    pub state: JobState,
    /// Whether the job had ended (a final report).
    pub r#final: bool,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// The source's side: planned studies and their reported instances.
    pub remote: Side,
    /// vna's side: the planned studies it holds and their instances.
    pub local: Side,
    /// The job's counters.
    pub counters: Counters,
    /// Studies vna holds fewer instances of than the source (none when reconciled).
    pub mismatches: Vec<Mismatch>,
    /// Studies the source did not report a count for (fetched, not verifiable by count).
    pub unverified: Vec<String>,
    /// Studies whose pull failed, with the reason.
    pub failures: Vec<Failure>,
    /// Studies not handled yet (a job that did not run to its end).
    pub pending: u64,
    /// The error that ended the job, if it failed.
    pub error: Option<String>,
    /// The job is done with no mismatch, no failure and nothing pending.
    pub reconciled: bool,
}

impl Report {
    /// The report of a job whose studies' local counts have just been read.
    pub fn build(header: &JobHeader, studies: &[StudyProgress]) -> Report {
        let mut remote = Side::default();
        let mut local = Side::default();
        let mut mismatches = Vec::new();
        let mut unverified = Vec::new();
        let mut failures = Vec::new();
        let mut pending = 0;
        for s in studies {
            remote.studies += 1;
            remote.instances += s.planned.remote_instances.unwrap_or(0);
            let held = s.local_instances.unwrap_or(0);
            if held > 0 {
                local.studies += 1;
                local.instances += held;
            }
            if matches!(s.state, StudyState::Pending | StudyState::Fetching) {
                pending += 1;
                continue;
            }
            if s.planned.remote_instances.is_none() {
                unverified.push(s.planned.uid.clone());
            }
            if s.is_short() {
                mismatches.push(Mismatch {
                    study: s.planned.uid.clone(),
                    patient_id: s.planned.patient_id.clone(),
                    remote_instances: s.planned.remote_instances.unwrap_or(0),
                    local_instances: held,
                });
            }
            if s.state == StudyState::Failed {
                failures.push(Failure {
                    study: s.planned.uid.clone(),
                    error: s.error.clone().unwrap_or_else(|| "failed".into()),
                });
            }
        }
        let reconciled = header.state == JobState::Done && mismatches.is_empty() && failures.is_empty() && pending == 0;
        Report {
            v: JOB_FORMAT_VERSION,
            job: header.id,
            source: header.source.clone(),
            since: header.since.clone(),
            until: header.until.clone(),
            state: header.state,
            r#final: header.state.is_finished(),
            generated_at: OffsetDateTime::now_utc(),
            remote,
            local,
            counters: Counters::of(studies),
            mismatches,
            unverified,
            failures,
            pending,
            error: header.last_error.clone(),
            reconciled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(uid: &str, n: Option<u64>) -> PlannedStudy {
        PlannedStudy { uid: uid.into(), remote_instances: n, patient_id: "P".into(), study_date: "20200101".into() }
    }

    #[test]
    fn date_ranges() {
        let r = DateRange::parse(Some("2019-01-01"), Some("20191231")).unwrap();
        assert_eq!(r.to_dicom().as_deref(), Some("20190101-20191231"));
        assert!(r.contains_dicom("20190615") && !r.contains_dicom("20200101") && !r.contains_dicom(""));
        assert_eq!(DateRange::parse(None, Some("2019-12-31")).unwrap().to_dicom().as_deref(), Some("-20191231"));
        assert_eq!(DateRange::parse(Some("2019-01-01"), None).unwrap().to_dicom().as_deref(), Some("20190101-"));
        let all = DateRange::parse(None, Some("")).unwrap();
        assert_eq!(all.to_dicom(), None);
        assert!(all.contains_dicom(""));
        assert!(DateRange::parse(Some("2020-01-01"), Some("2019-01-01")).is_err());
        assert!(DateRange::parse(Some("yesterday"), None).is_err());
    }

    #[test]
    fn progress_and_report() {
        let header = JobHeader::new(JobId(7), "old", SourceKind::Dimse, DateRange::default(), "admin", "::1");
        let mut studies: Vec<StudyProgress> =
            vec![StudyProgress::new(planned("1.1", Some(3))), StudyProgress::new(planned("1.2", Some(2)))];
        studies.push(StudyProgress::new(planned("1.3", None)));
        studies.push(StudyProgress::new(planned("1.4", Some(5))));
        let fetching = |s: &str| ProgressEvent {
            study: s.into(),
            state: StudyState::Fetching,
            local_instances: None,
            received: 0,
            bytes: 0,
            error: None,
        };
        studies[0].apply(&fetching("1.1"));
        studies[0].apply(&ProgressEvent {
            state: StudyState::Done,
            local_instances: Some(3),
            received: 3,
            bytes: 300,
            ..fetching("1.1")
        });
        studies[1].apply(&ProgressEvent { state: StudyState::Present, local_instances: Some(2), ..fetching("1.2") });
        studies[2].apply(&fetching("1.3"));
        studies[2].apply(&ProgressEvent { state: StudyState::Done, local_instances: Some(1), ..fetching("1.3") });
        studies[3].apply(&fetching("1.4"));
        studies[3].apply(&ProgressEvent {
            state: StudyState::Failed,
            local_instances: Some(4),
            received: 4,
            error: Some("short".into()),
            ..fetching("1.4")
        });
        let c = Counters::of(&studies);
        assert_eq!((c.studies_fetched, c.studies_present, c.studies_failed, c.studies_handled), (2, 1, 1, 4));
        assert_eq!((c.fetches, c.instances_received, c.bytes_received, c.instances_remote), (3, 7, 300, 10));
        let r = Report::build(&header, &studies);
        assert_eq!(r.remote, Side { studies: 4, instances: 10 });
        assert_eq!(r.local, Side { studies: 4, instances: 10 });
        assert_eq!(r.mismatches.len(), 1);
        assert_eq!((r.mismatches[0].remote_instances, r.mismatches[0].local_instances), (5, 4));
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.unverified, vec!["1.3".to_string()]);
        assert!(!r.reconciled);
        // A job that ended without mismatches is reconciled only when it is done.
        let mut ok = studies.clone();
        ok.truncate(2);
        let mut h = header.clone();
        assert!(!Report::build(&h, &ok).reconciled);
        h.state = JobState::Done;
        assert!(Report::build(&h, &ok).reconciled);
        h.state = JobState::Failed;
        assert!(!Report::build(&h, &[]).reconciled);
    }
}
