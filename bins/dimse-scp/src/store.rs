//! C-STORE SCP: the data set goes to the core's ingest; success is sent only once it is durable.
//! A failed ingest answers with the status of the core's one table
//! ([`archive_core::dicom_status::storage_failure`]), which STOW-RS uses for its failure reasons.

use crate::association::Connection;
use archive_core::dicom_status::storage_failure;
use archive_core::ingest::IngestInput;
use archive_core::model::Source;
use archive_core::uid::{SopClassUid, SopInstanceUid, TransferSyntaxUid};
use bytes::Bytes;
use dicom_ul::pdu::PresentationContextNegotiated;
use dimse::command::{CStoreRq, CStoreRsp};
use dimse::status;

/// Error comments are limited to 64 characters (LO).
fn comment(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Handles one C-STORE-RQ and builds its response.
pub(crate) async fn handle(
    conn: &Connection,
    context: &PresentationContextNegotiated,
    rq: CStoreRq,
    dataset: Vec<u8>,
) -> CStoreRsp {
    let mut rsp = CStoreRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class: Some(rq.affected_sop_class.clone()),
        affected_sop_instance: Some(rq.affected_sop_instance.clone()),
        status: status::SUCCESS,
        error_comment: None,
    };
    conn.shared.metrics.bytes_in.inc_by(dataset.len() as u64);
    let identity = (
        TransferSyntaxUid::new(&context.transfer_syntax),
        SopClassUid::new(&rq.affected_sop_class),
        SopInstanceUid::new(&rq.affected_sop_instance),
    );
    let (Ok(transfer_syntax), Ok(sop_class), Ok(sop_instance)) = identity else {
        rsp.status = status::CANNOT_UNDERSTAND;
        rsp.error_comment = Some("invalid uid in the command".into());
        return rsp;
    };
    let input = IngestInput::Dataset { dataset: Bytes::from(dataset), transfer_syntax, sop_class, sop_instance };
    let source = Source { actor: conn.calling_ae.clone(), address: conn.peer.to_string() };
    match conn.shared.archive.ingest().ingest(input, source).await {
        Ok(_) => rsp,
        Err(e) => {
            rsp.status = storage_failure(&e).code();
            rsp.error_comment = Some(comment(&e.to_string()));
            rsp
        }
    }
}

#[cfg(test)]
mod tests {
    use archive_core::dicom_status::StorageFailure;
    use dimse::status;

    /// The core's storage statuses are the codes the DIMSE layer names.
    #[test]
    fn storage_failures_are_the_dimse_status_codes() {
        let pairs = [
            (StorageFailure::OutOfResources, status::OUT_OF_RESOURCES),
            (StorageFailure::DataSetDoesNotMatchSopClass, status::DATASET_DOES_NOT_MATCH_SOP_CLASS),
            (StorageFailure::CannotUnderstand, status::CANNOT_UNDERSTAND),
            (StorageFailure::DuplicateSopInstance, status::DUPLICATE_SOP_INSTANCE),
            (StorageFailure::ProcessingFailure, status::PROCESSING_FAILURE),
        ];
        for (failure, code) in pairs {
            assert_eq!(failure.code(), code, "{failure:?}");
            assert_eq!(status::kind(code), status::StatusKind::Failure, "{failure:?}");
        }
    }
}
