//! The configured tiers, by name, and which one ingest writes to.

use crate::model::Placement;
use crate::tier::{Availability, Tier, TierName};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The tiers of this archive.
#[derive(Debug, Clone)]
pub struct TierSet {
    tiers: BTreeMap<TierName, Arc<dyn Tier>>,
    ingest: TierName,
}

/// A tier set that cannot work.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TierSetError {
    /// Two tiers share a name.
    #[error("two tiers are named {0}")]
    Duplicate(TierName),
    /// The ingest tier is not among the tiers.
    #[error("the ingest tier {0} is not configured")]
    MissingIngestTier(TierName),
}

impl TierSet {
    /// Builds a set; `ingest` names the tier new objects are written to.
    pub fn new(tiers: Vec<Arc<dyn Tier>>, ingest: TierName) -> Result<Self, TierSetError> {
        let mut map = BTreeMap::new();
        for t in tiers {
            let name = t.name().clone();
            if map.insert(name.clone(), t).is_some() {
                return Err(TierSetError::Duplicate(name));
            }
        }
        if !map.contains_key(&ingest) {
            return Err(TierSetError::MissingIngestTier(ingest));
        }
        Ok(Self { tiers: map, ingest })
    }
    /// A tier by name.
    pub fn get(&self, name: &TierName) -> Option<&Arc<dyn Tier>> {
        self.tiers.get(name)
    }
    /// The tier ingest writes to.
    pub fn ingest_tier(&self) -> &Arc<dyn Tier> {
        &self.tiers[&self.ingest]
    }
    /// The availability of a study or series from its placement: for each combination of
    /// tiers its instances' copies are on, the best of those tiers; the worst over combinations.
    /// `None` for an empty placement (records written before placements were kept).
    pub fn availability_of(&self, placement: &Placement) -> Option<Availability> {
        placement
            .combinations()
            .map(|(names, _)| {
                names
                    .iter()
                    .filter_map(|n| TierName::new(*n).ok())
                    .filter_map(|n| self.tiers.get(&n))
                    .map(|t| effective_availability(t.as_ref()))
                    .min()
                    .unwrap_or(Availability::Offline)
            })
            .max()
    }

    /// All tiers, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tier>> {
        self.tiers.values()
    }
}

/// A tier's availability as clients see it: a tier that needs recalls is offline whatever it declares.
pub fn effective_availability(tier: &dyn Tier) -> Availability {
    let caps = tier.capabilities();
    if caps.needs_recall {
        Availability::Offline
    } else {
        caps.availability
    }
}
