//! The error type of the crate.

use crate::job::JobId;

/// Why a pull request, a step of a job or a job file failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// No `[[pull.sources]]` entry has this name.
    #[error("no pull source named {0:?} is configured under [[pull.sources]]")]
    UnknownSource(String),
    /// The request is malformed (a bad date, a reversed range).
    #[error("{0}")]
    InvalidRequest(String),
    /// Another job pulls from the same source.
    #[error("job {job} is already pulling from {source_name}; cancel it or wait for it to finish")]
    Busy {
        /// The source.
        source_name: String,
        /// The job at work.
        job: JobId,
    },
    /// No job has this id.
    #[error("migration job {0} not found")]
    NotFound(JobId),
    /// The job has already finished.
    #[error("migration job {0} has already finished")]
    Finished(JobId),
    /// The migration service is shutting down.
    #[error("the migration service is shutting down")]
    Stopping,
    /// The source could not be reached or the connection broke; worth retrying.
    #[error("network: {0}")]
    Network(String),
    /// The source answered with a failure or something that breaks the protocol.
    #[error("the source answered: {0}")]
    Remote(String),
    /// Storing what the source sent failed in a way that concerns the whole archive.
    #[error("archive: {0}")]
    Archive(String),
    /// A job file cannot be read or written.
    #[error("job file {path}: {message}")]
    Store {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl PullError {
    /// Whether trying the same step again may succeed (network trouble), as opposed to an
    /// answer that will not change.
    pub fn is_transient(&self) -> bool {
        matches!(self, PullError::Network(_))
    }

    pub(crate) fn store(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        PullError::Store { path: path.to_path_buf(), message: e.to_string() }
    }
}
