//! C-FIND SCP: Patient Root and Study Root models at every level, answered from the catalog.

use crate::association::{AssociationError, Connection};
use crate::identifier::{self, IdentifierError};
use crate::{PATIENT_ROOT_FIND, STUDY_ROOT_FIND};
use archive_core::attribute::Level;
use archive_core::query::QueryRow;
use dicom_ul::pdu::PresentationContextNegotiated;
use dimse::command::{CFindRq, CFindRsp, Message};
use dimse::status;

/// Handles one C-FIND-RQ: a pending response per match, then the final status. Returns the final status.
pub(crate) async fn handle(
    conn: &mut Connection,
    context: &PresentationContextNegotiated,
    rq: CFindRq,
    dataset: Vec<u8>,
) -> Result<u16, AssociationError> {
    let pc = context.id;
    let ts = context.transfer_syntax.clone();
    let model = rq.affected_sop_class.trim_end_matches('\0').to_string();
    let final_rsp = |status: u16, comment: Option<String>| CFindRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class: Some(rq.affected_sop_class.clone()),
        status,
        error_comment: comment.map(|c| c.chars().take(64).collect()),
        has_dataset: false,
    };
    if model != PATIENT_ROOT_FIND && model != STUDY_ROOT_FIND {
        let rsp = final_rsp(status::SOP_CLASS_NOT_SUPPORTED, Some(format!("no C-FIND for {model}")));
        conn.send(pc, &Message::from(rsp).encode(), None).await?;
        return Ok(status::SOP_CLASS_NOT_SUPPORTED);
    }
    let request = match identifier::decode(&dataset, &ts) {
        Ok(r) => r,
        Err(e) => {
            let code = match e {
                IdentifierError::Level(_) | IdentifierError::Key(_) => status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                _ => status::UNABLE_TO_PROCESS,
            };
            conn.send(pc, &Message::from(final_rsp(code, Some(e.to_string()))).encode(), None).await?;
            return Ok(code);
        }
    };
    if model == STUDY_ROOT_FIND && request.query.level == Level::Patient {
        let code = status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS;
        let rsp = final_rsp(code, Some("the study root model has no PATIENT level".into()));
        conn.send(pc, &Message::from(rsp).encode(), None).await?;
        return Ok(code);
    }

    let archive = conn.shared.archive.clone();
    let query = request.query.clone();
    let page = tokio::task::spawn_blocking(move || archive.query(&query)).await;
    let rows = match page {
        Ok(Ok(page)) => {
            conn.shared.archive.audit_query(&conn.calling_ae, &conn.peer.ip().to_string(), &request.query, &page.rows);
            page.rows
        }
        Ok(Err(e)) => {
            let code = match e {
                archive_core::catalog::CatalogError::InvalidQuery(_) => status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
                _ => status::UNABLE_TO_PROCESS,
            };
            conn.send(pc, &Message::from(final_rsp(code, Some(e.to_string()))).encode(), None).await?;
            return Ok(code);
        }
        Err(e) => {
            let code = status::UNABLE_TO_PROCESS;
            conn.send(pc, &Message::from(final_rsp(code, Some(e.to_string()))).encode(), None).await?;
            return Ok(code);
        }
    };

    let ae = conn.shared.settings.ae_title.clone();
    for row in &rows {
        let availability = availability(conn, row);
        let data = match identifier::encode_response(&request, row, &ae, availability, &ts) {
            Ok(d) => d,
            Err(e) => {
                let code = status::UNABLE_TO_PROCESS;
                conn.send(pc, &Message::from(final_rsp(code, Some(e.to_string()))).encode(), None).await?;
                return Ok(code);
            }
        };
        let pending = CFindRsp {
            message_id_being_responded_to: rq.message_id,
            affected_sop_class: Some(rq.affected_sop_class.clone()),
            status: if request.unsupported_constraint { status::PENDING_WARNING } else { status::PENDING },
            error_comment: None,
            has_dataset: true,
        };
        conn.send(pc, &Message::from(pending).encode(), Some(&data)).await?;
        if conn.cancel_requested(rq.message_id)? {
            conn.send(pc, &Message::from(final_rsp(status::CANCEL, None)).encode(), None).await?;
            return Ok(status::CANCEL);
        }
    }
    conn.send(pc, &Message::from(final_rsp(status::SUCCESS, None)).encode(), None).await?;
    Ok(status::SUCCESS)
}

/// Instance Availability of a row, from the tiers its copies are on.
fn availability(conn: &Connection, row: &QueryRow) -> &'static str {
    conn.shared.archive.availability_of_row(row).as_dicom()
}
