//! Deletion: two-phase, audited, held back by legal holds, certified.
//!
//! # Phases
//! 1. **Marked**: a rule, an administrator (with a reason) or an IOCM rejection note asks for a
//!    study (or some of its instances) to go. Legal holds are checked; the deletion is saved with
//!    its audit record. The data stays visible until the end of the grace period (`hide_at`;
//!    rejections hide at once) and the deletion can be undone until the purge starts.
//! 2. **Purging**: after `hide_at`, holds are checked again (a hold cancels the deletion); the
//!    deletion is saved as purging and hidden; its instances leave the catalog in batches, each
//!    batch one synced commit that turns their copies into write intents, grows the certificate
//!    and appends an audit record with their checksums. Then the copies are deleted from their
//!    tiers, grouped by tier with one `delete_many` per 1000 keys (one rewrite per S3 bundle),
//!    and the intents of the copies deleted are cleared. Ingest and queries go on between
//!    batches.
//! 3. **Purged**: a completion audit record; the certificate (instances, sizes, checksums, tiers,
//!    audit records) stays in the catalog after the data is gone.
//!
//! # Crash safety
//! Every step is a state saved in the catalog: a purging deletion resumes where it stopped, and
//! copies whose records were removed are write intents that start-up recovery deletes.

mod engine;
mod model;
pub mod rejection;

pub use engine::{Deleter, DeletionError, DeletionRequest, DeletionSettings, DELETE_CHUNK};
pub use model::{
    Certificate, CertifiedInstance, Deletion, DeletionCause, DeletionId, DeletionState, DELETION_RECORD_VERSION,
};
