//! # pull — migration from a legacy archive
//!
//! `vna migrate pull --from NAME --since DATE --until DATE` (and `POST /api/migrations`) walks a
//! legacy PACS study by study and brings every study into vna, over DIMSE (C-FIND to plan,
//! C-MOVE to vna's own AE title to fetch: the source's C-STOREs arrive at vna's C-STORE SCP,
//! so `[[sources]]` profiles keyed by the source's calling AE apply) or over DICOMweb
//! (QIDO-RS to plan, WADO-RS to fetch, each object ingested with the source's name as actor).
//!
//! ## Map
//! | module | what |
//! |---|---|
//! | [`service`] | [`Pulls`]: start, resume, cancel, progress, reports; the job's steps |
//! | [`job`] | the job model: header, plan, per-study progress, counters, [`Report`] |
//! | [`store`] | durable job files under `data_dir/migrations/` (atomic header and plan, fsynced progress log) |
//! | [`scu`] | the DIMSE client: C-FIND at STUDY level, C-MOVE of a study |
//! | [`web`] | the DICOMweb client: paged QIDO-RS, streamed WADO-RS multipart |
//! | [`throttle`] | studies per minute and MiB per second |
//!
//! ## Invariants
//! 1. **No refetch**: a study whose outcome is recorded is never fetched again, and a study vna
//!    already holds (at least the source's instance count) is not fetched at all.
//! 2. **Resumable**: progress is durable per study before the job moves on; a job interrupted by
//!    a stop, a crash or a network failure resumes at its first unhandled study.
//! 3. **Reconciled**: a job ends with a report of both sides' counts; every study vna holds
//!    fewer instances of than the source, and every failure, is listed.
//! 4. **The source is spared**: fetches are paced by the source's throttle and run one at a time.
//!
//! Layering: this crate uses `archive-core` (ingest, catalog, audit) and the `dimse` message
//! layer; the admin API (`dicomweb`) and the binary use it, the core never does.
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod job;
pub mod scu;
pub mod service;
pub mod store;
pub mod throttle;
pub mod web;

pub use error::PullError;
pub use job::{DateRange, JobId, JobState, JobStatus, Report, StudyProgress, StudyState};
pub use service::{PullRequest, Pulls};
