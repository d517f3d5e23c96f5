//! C-STORE SCP: the data set goes to the core's ingest; success is sent only once it is durable.

use crate::association::Connection;
use archive_core::ingest::{IngestError, IngestErrorKind, IngestInput};
use archive_core::model::Source;
use archive_core::uid::{SopClassUid, SopInstanceUid, TransferSyntaxUid};
use bytes::Bytes;
use dicom_ul::pdu::PresentationContextNegotiated;
use dimse::command::{CStoreRq, CStoreRsp};
use dimse::status;

/// The DIMSE status and error comment for a failed ingest.
pub fn status_of(error: &IngestError) -> u16 {
    match error.kind() {
        IngestErrorKind::InvalidObject => match error {
            IngestError::IdentityMismatch { .. } => status::DATASET_DOES_NOT_MATCH_SOP_CLASS,
            _ => status::CANNOT_UNDERSTAND,
        },
        IngestErrorKind::OutOfResources => status::OUT_OF_RESOURCES,
        IngestErrorKind::Conflict => status::DUPLICATE_SOP_INSTANCE,
        IngestErrorKind::Internal => status::PROCESSING_FAILURE,
    }
}

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
            rsp.status = status_of(&e);
            rsp.error_comment = Some(comment(&e.to_string()));
            rsp
        }
    }
}
