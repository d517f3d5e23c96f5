//! Lifecycle: moving copies between tiers, recalling studies from cold tiers, and
//! re-reading stored objects to prove they are intact.
//!
//! # Ordering rules of a migration (per instance)
//! 1. A write intent names the target copy (synced) before anything is written to the target.
//! 2. The object is copied, checksum-verified while it streams into the target, and then read
//!    back from the target (or, on tiers that need a recall before reads, checked by size and
//!    the checksum the store verified on upload). On a target that takes batches
//!    (`batch_bytes`), the intents of a whole batch are written first, then the batch is
//!    copied with one `put_many` and read back with one `verify_many` (the tier reads each
//!    stored unit once, hashing every copy in it); steps 3 and 4 follow per batch, and the
//!    sources a batch drops are deleted with one `delete_many` per tier.
//! 3. One catalog batch names the new copy, drops the source copy (a move), turns the dropped
//!    copy into a write intent, removes the target's intent, and appends the audit record. The
//!    batch is refused, changing nothing, when the instance would keep fewer verified copies
//!    than `min_verified_copies` or was replaced meanwhile.
//! 4. Only then is the source object deleted, and its intent cleared.
//!
//! A crash between 1 and 3 leaves an intent for a copy no record names: recovery deletes it.
//! A crash between 3 and 4 leaves an intent for the dropped copy: recovery deletes it. The
//! job itself is saved in the catalog and resumes on start; every step is idempotent, since
//! an instance already on the target is skipped. Only one job works on a study at a time.

pub mod copy;
pub mod engine;
pub mod job;
pub mod scrub;
pub mod throttle;

pub use engine::{Lifecycle, LifecycleError, LifecycleSettings, OnlineState, TierMoveRequest};
pub use job::{Job, JobId, JobKind, JobState};
