//! Durable job files, one directory per job under `data_dir/migrations/`:
//!
//! | file | written | holds |
//! |---|---|---|
//! | `job.json` | atomically (temporary file, fsync, rename, fsync of the directory) at each state change | [`JobHeader`] |
//! | `plan.json` | atomically, once, when planning ends | the [`PlannedStudy`] list; its presence means planning is done |
//! | `progress.jsonl` | appended and fsynced line by line | [`ProgressEvent`]s: a fetch that starts, a study's outcome |
//! | `report.json` | atomically, when the job ends | the final [`Report`] |
//!
//! The progress log is the cursor: a study whose outcome line is durable is never fetched
//! again, and a `fetching` line without an outcome (a crash mid-study) makes the resumed job
//! compare counts before it fetches that study again. A torn last line (a crash while
//! appending) is ignored. Appending keeps the cost per study constant however large the plan.

use crate::error::PullError;
use crate::job::{JobHeader, JobId, PlannedStudy, ProgressEvent, Report, JOB_FORMAT_VERSION};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The job directories.
#[derive(Debug, Clone)]
pub struct JobStore {
    dir: PathBuf,
}

/// A job as read back from disk.
#[derive(Debug, Clone)]
pub struct StoredJob {
    /// Its header.
    pub header: JobHeader,
    /// Its plan, once planning ended.
    pub plan: Option<Vec<PlannedStudy>>,
    /// Its progress log, in order.
    pub events: Vec<ProgressEvent>,
    /// Its final report, once it ended.
    pub report: Option<Report>,
}

#[derive(Serialize, Deserialize)]
struct PlanFile {
    v: u32,
    studies: Vec<PlannedStudy>,
}

impl JobStore {
    /// The store under `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JobStore { dir: dir.into() }
    }

    /// The directory of one job.
    pub fn job_dir(&self, id: JobId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// Writes a job's header (creating its directory).
    pub fn save_header(&self, header: &JobHeader) -> Result<(), PullError> {
        let dir = self.job_dir(header.id);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| PullError::store(&dir, e))?;
            sync_dir(&self.dir)?;
        }
        write_atomic(&dir.join("job.json"), &to_json(header)?)
    }

    /// Writes a job's plan.
    pub fn save_plan(&self, id: JobId, studies: &[PlannedStudy]) -> Result<(), PullError> {
        let file = PlanFile { v: JOB_FORMAT_VERSION, studies: studies.to_vec() };
        write_atomic(&self.job_dir(id).join("plan.json"), &to_json(&file)?)
    }

    /// Appends one progress event and makes it durable.
    pub fn append(&self, id: JobId, event: &ProgressEvent) -> Result<(), PullError> {
        let path = self.job_dir(id).join("progress.jsonl");
        let mut line = serde_json::to_vec(event).map_err(|e| PullError::store(&path, e))?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| PullError::store(&path, e))?;
        f.write_all(&line).and_then(|_| f.sync_data()).map_err(|e| PullError::store(&path, e))
    }

    /// Writes a job's final report.
    pub fn save_report(&self, report: &Report) -> Result<(), PullError> {
        write_atomic(&self.job_dir(report.job).join("report.json"), &to_json(report)?)
    }

    /// Every job on disk, by id. A directory without a readable header is skipped with a
    /// warning (a crash before the first header write leaves at most an empty directory).
    pub fn load_all(&self) -> Result<Vec<StoredJob>, PullError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(PullError::store(&self.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| PullError::store(&self.dir, e))?;
            let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else { continue };
            match self.load(JobId(id)) {
                Ok(Some(job)) => out.push(job),
                Ok(None) => tracing::warn!(job = id, "migration job directory without a header; ignored"),
                Err(e) => tracing::warn!(job = id, error = %e, "migration job unreadable; ignored"),
            }
        }
        out.sort_by_key(|j| j.header.id);
        Ok(out)
    }

    fn load(&self, id: JobId) -> Result<Option<StoredJob>, PullError> {
        let dir = self.job_dir(id);
        let Some(header) = read_json::<JobHeader>(&dir.join("job.json"))? else { return Ok(None) };
        let plan = read_json::<PlanFile>(&dir.join("plan.json"))?.map(|p| p.studies);
        let report = read_json::<Report>(&dir.join("report.json"))?;
        let path = dir.join("progress.jsonl");
        let mut events = Vec::new();
        match std::fs::read(&path) {
            Ok(bytes) => {
                // A crash while appending leaves a last line without its newline: drop it (the
                // study it was about is checked again) so that the next append starts clean.
                let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                if complete < bytes.len() {
                    tracing::warn!(job = %id, "torn last line of the progress log dropped");
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_len(complete as u64).and_then(|_| f.sync_all()))
                        .map_err(|e| PullError::store(&path, e))?;
                }
                for (i, line) in bytes[..complete].split(|b| *b == b'\n').enumerate() {
                    if line.is_empty() {
                        continue;
                    }
                    let event = serde_json::from_slice::<ProgressEvent>(line)
                        .map_err(|e| PullError::store(&path, format!("line {}: {e}", i + 1)))?;
                    events.push(event);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PullError::store(&path, e)),
        }
        Ok(Some(StoredJob { header, plan, events, report }))
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, PullError> {
    serde_json::to_vec_pretty(v).map_err(|e| PullError::Store { path: PathBuf::new(), message: e.to_string() })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, PullError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| PullError::store(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PullError::store(path, e)),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PullError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| PullError::store(path, e))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), PullError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| PullError::store(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceKind;
    use crate::job::{DateRange, JobState, StudyState};

    #[test]
    fn round_trip_and_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::new(dir.path().join("migrations"));
        assert!(store.load_all().unwrap().is_empty());
        let mut h = JobHeader::new(JobId(3), "src", SourceKind::Dicomweb, DateRange::default(), "a", "b");
        store.save_header(&h).unwrap();
        let plan = vec![PlannedStudy {
            uid: "1.2".into(),
            remote_instances: Some(2),
            patient_id: "P".into(),
            study_date: "20200101".into(),
        }];
        store.save_plan(h.id, &plan).unwrap();
        let ev = ProgressEvent {
            study: "1.2".into(),
            state: StudyState::Fetching,
            local_instances: None,
            received: 0,
            bytes: 0,
            error: None,
        };
        store.append(h.id, &ev).unwrap();
        h.state = JobState::Running;
        store.save_header(&h).unwrap();
        // A torn append.
        let log = store.job_dir(h.id).join("progress.jsonl");
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"{\"study\":\"1.2\",\"sta").unwrap();
        let jobs = store.load_all().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].header, h);
        assert_eq!(jobs[0].plan.as_deref(), Some(&plan[..]));
        assert_eq!(jobs[0].events, vec![ev.clone()]);
        assert!(jobs[0].report.is_none());
        // The torn line is gone: the next append is readable.
        store.append(h.id, &ev).unwrap();
        assert_eq!(store.load_all().unwrap()[0].events.len(), 2);
    }
}
