//! Ingest failures as DICOM storage statuses: the one table C-STORE and STOW-RS share.
//!
//! A C-STORE response carries a status (PS3.4 B.2.3, PS3.7 Annex C); a STOW-RS response lists
//! each failed instance with a Failure Reason (0008,1197) whose values are the same status codes
//! (PS3.18 §10.5.3). So both doors call [`storage_failure`] and send [`StorageFailure::code`].
//!
//! # Why here
//! The core knows no protocol, and a status code is not one: it is part of the DICOM data model
//! both protocols carry (a STOW-RS response is a DICOM data set). The mapping needs
//! [`IngestError`], which only the core knows, and the `dimse` message crate must stay free of
//! the archive (it is a protocol library, fuzzed on its own). Putting the table beside the error
//! keeps one copy that both the DIMSE and the HTTP door use; the codes equal `dimse::status`'s
//! (checked by a test in `dimse-scp`).

use crate::ingest::IngestError;
use crate::tier::TierError;

/// Why an object was not stored, as a DICOM storage status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageFailure {
    /// Refused: out of resources (`A700`): a free-space floor is reached or a tier is full.
    OutOfResources,
    /// Error: data set does not match SOP class (`A900`): the data set carries another SOP
    /// identity than its command announced, or (STOW-RS) it belongs to another study than the
    /// request names.
    DataSetDoesNotMatchSopClass,
    /// Error: cannot understand (`C000`): the object cannot be parsed, lacks required
    /// attributes, or cannot be re-encoded for its source profile.
    CannotUnderstand,
    /// Failure: duplicate SOP instance (`0111`): different content is already stored under the
    /// SOP Instance UID.
    DuplicateSopInstance,
    /// Failure: processing failure (`0110`): the archive failed (tier or catalog error).
    ProcessingFailure,
}

impl StorageFailure {
    /// The status code (C-STORE Status, STOW-RS Failure Reason).
    pub const fn code(self) -> u16 {
        match self {
            StorageFailure::OutOfResources => 0xA700,
            StorageFailure::DataSetDoesNotMatchSopClass => 0xA900,
            StorageFailure::CannotUnderstand => 0xC000,
            StorageFailure::DuplicateSopInstance => 0x0111,
            StorageFailure::ProcessingFailure => 0x0110,
        }
    }

    /// Whether the failure is the archive's (full disk, failed storage), not the object's: the
    /// client may send the object again later.
    pub const fn is_server_fault(self) -> bool {
        matches!(self, StorageFailure::OutOfResources | StorageFailure::ProcessingFailure)
    }
}

/// The storage status of a failed ingest.
pub fn storage_failure(error: &IngestError) -> StorageFailure {
    match error {
        IngestError::Invalid(_) | IngestError::Coercion(_) => StorageFailure::CannotUnderstand,
        IngestError::IdentityMismatch { .. } => StorageFailure::DataSetDoesNotMatchSopClass,
        IngestError::OutOfSpace(_) | IngestError::Tier(TierError::InsufficientSpace { .. }) => {
            StorageFailure::OutOfResources
        }
        IngestError::Conflict { .. } => StorageFailure::DuplicateSopInstance,
        IngestError::Tier(_) | IngestError::Catalog(_) => StorageFailure::ProcessingFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::IngestErrorKind;
    use crate::uid::SopInstanceUid;

    fn errors() -> Vec<(IngestError, StorageFailure)> {
        let parse = crate::parse::parse_part10(b"not dicom").expect_err("garbage does not parse");
        vec![
            (IngestError::Invalid(parse), StorageFailure::CannotUnderstand),
            (
                IngestError::IdentityMismatch {
                    attribute: "SOPInstanceUID",
                    expected: "1.2.3".into(),
                    found: "1.2.4".into(),
                },
                StorageFailure::DataSetDoesNotMatchSopClass,
            ),
            (
                IngestError::OutOfSpace(crate::disk::OutOfSpace { path: "/data".into(), free_mb: 1, floor_mb: 100 }),
                StorageFailure::OutOfResources,
            ),
            (
                IngestError::Tier(TierError::InsufficientSpace {
                    tier: crate::tier::TierName::new("hot").expect("a tier name"),
                    detail: "full".into(),
                    source: None,
                }),
                StorageFailure::OutOfResources,
            ),
            (
                IngestError::Conflict { sop_instance: SopInstanceUid::new("1.2.3").expect("a uid") },
                StorageFailure::DuplicateSopInstance,
            ),
            (IngestError::Tier(TierError::Other("disk gone".into())), StorageFailure::ProcessingFailure),
            (
                IngestError::Catalog(crate::catalog::CatalogError::Storage("io".into())),
                StorageFailure::ProcessingFailure,
            ),
        ]
    }

    #[test]
    fn every_ingest_error_has_the_status_both_doors_gave_it() {
        for (error, expected) in errors() {
            assert_eq!(storage_failure(&error), expected, "{error}");
        }
        let codes: Vec<u16> = [
            StorageFailure::OutOfResources,
            StorageFailure::DataSetDoesNotMatchSopClass,
            StorageFailure::CannotUnderstand,
            StorageFailure::DuplicateSopInstance,
            StorageFailure::ProcessingFailure,
        ]
        .iter()
        .map(|f| f.code())
        .collect();
        assert_eq!(codes, vec![0xA700, 0xA900, 0xC000, 0x0111, 0x0110]);
    }

    #[test]
    fn server_faults_are_the_errors_of_kind_out_of_resources_or_internal() {
        for (error, _) in errors() {
            let server = matches!(error.kind(), IngestErrorKind::OutOfResources | IngestErrorKind::Internal);
            assert_eq!(storage_failure(&error).is_server_fault(), server, "{error}");
        }
    }
}
