//! The read view every door reads instances through: the catalog as clients may see it.
//!
//! A deletion hides its study (or, for an IOCM rejection, some of its instances) from the
//! moment it takes effect (at once for a rejection, at the end of the grace period otherwise)
//! while the purge removes the records batch by batch afterwards. Until the purge is done the
//! records are still in the catalog; [`Visible`] leaves them out, so that no door has to
//! remember to filter:
//!
//! - queries (C-FIND, QIDO-RS) go through [`Visible::query`] (the catalog's query engine drops
//!   hidden rows and takes hidden objects out of the counts, see `catalog::hidden_view`);
//! - retrieves (C-MOVE, C-GET, WADO-RS, WADO-URI) select instances with
//!   [`crate::retrieve::Retrieve::select`], which expands query rows through this view;
//! - storage commitment looks instances up with [`Visible::instance`]: a hidden instance is
//!   not committed.
//!
//! A view takes the deletions in force at one instant ([`Visible::at`]): a deletion that takes
//! effect while a long retrieve runs does not stop what was selected before it.

use crate::catalog::{Catalog, CatalogError};
use crate::matching::MatchOptions;
use crate::model::InstanceRecord;
use crate::query::{Query, QueryPage};
use crate::uid::{SeriesUid, SopInstanceUid, StudyUid};
use std::sync::Arc;
use time::OffsetDateTime;

/// The catalog's instances as clients see them at one instant: nothing a deletion hides.
#[derive(Clone)]
pub struct Visible {
    catalog: Arc<dyn Catalog>,
    now: OffsetDateTime,
}

impl std::fmt::Debug for Visible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Visible").field("now", &self.now).finish_non_exhaustive()
    }
}

impl Visible {
    /// The view of `catalog` now.
    pub fn new(catalog: Arc<dyn Catalog>) -> Self {
        Self::at(catalog, OffsetDateTime::now_utc())
    }

    /// The view of `catalog` with the deletions in force at `now`.
    pub fn at(catalog: Arc<dyn Catalog>, now: OffsetDateTime) -> Self {
        Self { catalog, now }
    }

    /// Whether a record is visible: no deletion in force hides its study or the instance.
    pub fn shows(&self, record: &InstanceRecord) -> bool {
        !self.catalog.is_hidden(&record.study, Some(&record.uid), self.now)
    }

    /// The records of `records` that are visible, in their order.
    pub fn retain(&self, mut records: Vec<InstanceRecord>) -> Vec<InstanceRecord> {
        records.retain(|r| self.shows(r));
        records
    }

    /// An instance by SOP Instance UID; `None` when it is unknown or hidden.
    pub fn instance(&self, uid: &SopInstanceUid) -> Result<Option<InstanceRecord>, CatalogError> {
        Ok(self.catalog.instance(uid)?.filter(|r| self.shows(r)))
    }

    /// The visible instances of a study, by series then instance UID.
    pub fn instances_of_study(&self, study: &StudyUid) -> Result<Vec<InstanceRecord>, CatalogError> {
        Ok(self.retain(self.catalog.instances_of_study(study)?))
    }

    /// The visible instances of a series, by UID order.
    pub fn instances_of_series(
        &self,
        study: &StudyUid,
        series: &SeriesUid,
    ) -> Result<Vec<InstanceRecord>, CatalogError> {
        Ok(self.retain(self.catalog.instances_of_series(study, series)?))
    }

    /// Runs a query: rows with nothing visible left are not returned, and the counts of the
    /// rows returned leave hidden objects out.
    pub fn query(&self, query: &Query, opts: MatchOptions) -> Result<QueryPage, CatalogError> {
        // The catalog's query engine applies the deletions itself (it needs them while it
        // scans, to count and page correctly); this is the one way doors reach it.
        self.catalog.query(query, opts)
    }
}
