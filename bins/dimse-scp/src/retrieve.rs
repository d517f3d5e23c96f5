//! C-GET and C-MOVE SCP: the identifier selects instances through the catalog; each one is
//! read from its tier and sent as a C-STORE sub-operation, on the requesting association
//! (C-GET) or on a new association to the configured destination (C-MOVE), with pending
//! responses counting remaining, completed, failed and warning sub-operations.
//!
//! Objects are sent in the transfer syntax they are stored in; a destination that does not
//! accept it fails that sub-operation with a reason in the log (no transcoding yet).

use crate::association::{AssociationError, Connection};
use crate::identifier;
use archive_core::attribute::{Attribute, Level};
use archive_core::catalog::Catalog;
use archive_core::model::InstanceRecord;
use archive_core::query::Query;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextNegotiated, PresentationContextResultReason};
use dicom_ul::Pdu;
use dimse::command::{CGetRq, CGetRsp, CMoveRq, CMoveRsp, CStoreRq, Message, SubOperations};
use dimse::pdv::MessageAssembler;
use dimse::status;
use std::collections::BTreeSet;

/// Counts of sub-operations.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    remaining: usize,
    completed: usize,
    failed: usize,
    warning: usize,
}

impl Counts {
    fn sub_operations(&self, with_remaining: bool) -> SubOperations {
        let c = |n: usize| Some(n.min(u16::MAX as usize) as u16);
        SubOperations {
            remaining: if with_remaining { c(self.remaining) } else { None },
            completed: c(self.completed),
            failed: c(self.failed),
            warning: c(self.warning),
        }
    }
    fn record(&mut self, sub_status: Option<u16>) {
        self.remaining = self.remaining.saturating_sub(1);
        match sub_status.map(status::kind) {
            Some(status::StatusKind::Success) => self.completed += 1,
            Some(status::StatusKind::Warning) => self.warning += 1,
            _ => self.failed += 1,
        }
    }
    fn final_status(&self) -> u16 {
        if self.failed > 0 || self.warning > 0 {
            status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES
        } else {
            status::SUCCESS
        }
    }
}

/// The instances an identifier selects, or the failure status and reason.
async fn select(conn: &Connection, dataset: &[u8], ts: &str) -> Result<Vec<InstanceRecord>, (u16, String)> {
    let request =
        identifier::decode(dataset, ts).map_err(|e| (status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, e.to_string()))?;
    // A retrieve names what it wants by unique key: an identifier without one would select everything.
    let key = required_key(request.query.level);
    if request.query.constraint(key).is_none() {
        return Err((
            status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            format!("a {} level retrieve needs {}", request.query.level.as_dicom(), key.keyword()),
        ));
    }
    let archive = conn.shared.archive.clone();
    let query = Query { limit: None, ..request.query };
    let joined = tokio::task::spawn_blocking(move || -> Result<Vec<InstanceRecord>, String> {
        let catalog = archive.catalog();
        // A PATIENT level retrieve covers that patient's studies.
        let query = if query.level == Level::Patient {
            let mut q = Query::new(Level::Study);
            q.keys = query.keys.clone();
            q
        } else {
            query
        };
        let rows = catalog.query(&query, archive.match_options()).map_err(|e| e.to_string())?.rows;
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for row in rows {
            let records = match (&row.instance, &row.series, &row.study) {
                (Some(i), _, _) => vec![i.clone()],
                (None, Some(se), _) => catalog.instances_of_series(&se.study, &se.uid).map_err(|e| e.to_string())?,
                (None, None, Some(st)) => catalog.instances_of_study(&st.uid).map_err(|e| e.to_string())?,
                _ => Vec::new(),
            };
            for r in records {
                if seen.insert(r.uid.clone()) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    })
    .await;
    match joined {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((status::UNABLE_TO_PROCESS, e)),
        Err(e) => Err((status::UNABLE_TO_PROCESS, e.to_string())),
    }
}

fn comment(text: &str) -> Option<String> {
    Some(text.chars().take(64).collect())
}

/// Handles a C-GET-RQ; returns the final status.
pub(crate) async fn handle_get(
    conn: &mut Connection,
    context: &PresentationContextNegotiated,
    rq: CGetRq,
    dataset: Vec<u8>,
) -> Result<u16, AssociationError> {
    let pc = context.id;
    let rsp = |status: u16, counts: &Counts, pending: bool, error: Option<String>| CGetRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class: Some(rq.affected_sop_class.clone()),
        status,
        sub_operations: counts.sub_operations(pending),
        error_comment: error,
        has_dataset: false,
    };
    let instances = match select(conn, &dataset, &context.transfer_syntax).await {
        Ok(v) => v,
        Err((code, why)) => {
            conn.send(pc, &Message::from(rsp(code, &Counts::default(), false, comment(&why))).encode(), None).await?;
            return Ok(code);
        }
    };
    let mut counts = Counts { remaining: instances.len(), ..Counts::default() };
    for record in instances {
        let sub = match conn.shared.archive.retrieve().read(record.clone()).await {
            Ok((_, bytes)) => store_on_requesting_association(conn, &record, &bytes).await?,
            Err(e) => {
                tracing::warn!(sop = %record.uid, error = %e, "c-get: cannot read instance");
                None
            }
        };
        counts.record(sub);
        if counts.remaining > 0 {
            conn.send(pc, &Message::from(rsp(status::PENDING, &counts, true, None)).encode(), None).await?;
        }
    }
    let code = counts.final_status();
    conn.send(pc, &Message::from(rsp(code, &counts, false, None)).encode(), None).await?;
    Ok(code)
}

/// Sends one C-STORE on the requesting association and waits for its response status.
/// `None` when no presentation context fits (the sub-operation fails).
async fn store_on_requesting_association(
    conn: &mut Connection,
    record: &InstanceRecord,
    bytes: &[u8],
) -> Result<Option<u16>, AssociationError> {
    let Some(pc) = conn.context_for(record.sop_class.as_str(), record.transfer_syntax.as_str()) else {
        tracing::warn!(sop = %record.uid, ts = %record.transfer_syntax, "c-get: no accepted context for this class and syntax");
        return Ok(None);
    };
    let Ok(dataset) = archive_core::parse::dataset_bytes(bytes) else { return Ok(None) };
    let rq = CStoreRq {
        message_id: conn.next_message_id(),
        affected_sop_class: record.sop_class.to_string(),
        affected_sop_instance: record.uid.to_string(),
        ..Default::default()
    };
    conn.send(pc, &Message::from(rq).encode(), Some(dataset)).await?;
    loop {
        match conn.receive_message().await? {
            Message::CStoreRsp(rsp) => return Ok(Some(rsp.status)),
            Message::CCancelRq(_) => tracing::info!("c-get: cancel requested; finishing the current sub-operation"),
            other => {
                return Err(AssociationError::Protocol(format!(
                    "expected a C-STORE response during C-GET, got {:?}",
                    other.command_field()
                )))
            }
        }
    }
}

/// Handles a C-MOVE-RQ; returns the final status.
pub(crate) async fn handle_move(
    conn: &mut Connection,
    context: &PresentationContextNegotiated,
    rq: CMoveRq,
    dataset: Vec<u8>,
) -> Result<u16, AssociationError> {
    let pc = context.id;
    let rsp = |status: u16, counts: &Counts, pending: bool, error: Option<String>| CMoveRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class: Some(rq.affected_sop_class.clone()),
        status,
        sub_operations: counts.sub_operations(pending),
        error_comment: error,
        has_dataset: false,
    };
    let destination = rq.move_destination.trim().to_string();
    let Some(remote) = conn.shared.archive.config().remote_ae(&destination).cloned() else {
        let code = status::MOVE_DESTINATION_UNKNOWN;
        let why = comment(&format!("unknown move destination {destination}"));
        conn.send(pc, &Message::from(rsp(code, &Counts::default(), false, why)).encode(), None).await?;
        return Ok(code);
    };
    let instances = match select(conn, &dataset, &context.transfer_syntax).await {
        Ok(v) => v,
        Err((code, why)) => {
            conn.send(pc, &Message::from(rsp(code, &Counts::default(), false, comment(&why))).encode(), None).await?;
            return Ok(code);
        }
    };
    let mut counts = Counts { remaining: instances.len(), ..Counts::default() };
    if instances.is_empty() {
        conn.send(pc, &Message::from(rsp(status::SUCCESS, &counts, false, None)).encode(), None).await?;
        return Ok(status::SUCCESS);
    }

    // One context per stored (class, syntax) pair, proposed exactly as stored.
    let pairs: BTreeSet<(String, String)> =
        instances.iter().map(|r| (r.sop_class.to_string(), r.transfer_syntax.to_string())).collect();
    let mut options = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title(conn.shared.settings.ae_title.clone())
        .called_ae_title(remote.ae_title.clone())
        .max_pdu_length(conn.shared.settings.max_pdu_length);
    for (class, ts) in &pairs {
        options = options.with_presentation_context(class.clone(), vec![ts.clone()]);
    }
    let mut sub = match options.establish_async((remote.host.as_str(), remote.port)).await {
        Ok(a) => a,
        Err(e) => {
            counts.failed = counts.remaining;
            counts.remaining = 0;
            let why = comment(&format!("cannot reach {destination}: {e}"));
            tracing::warn!(destination = %destination, error = %e, "c-move: destination unreachable");
            let code = status::C_MOVE_OUT_OF_RESOURCES_SUB_OPERATIONS;
            conn.send(pc, &Message::from(rsp(code, &counts, false, why)).encode(), None).await?;
            return Ok(code);
        }
    };
    let contexts: Vec<PresentationContextNegotiated> = sub.presentation_contexts().to_vec();
    let peer_max = sub.acceptor_max_pdu_length();
    let mut message_id = 0u16;
    for record in instances {
        let context = contexts.iter().find(|c| {
            c.reason == PresentationContextResultReason::Acceptance
                && c.abstract_syntax == record.sop_class.as_str()
                && c.transfer_syntax == record.transfer_syntax.as_str()
        });
        let outcome = match (context, conn.shared.archive.retrieve().read(record.clone()).await) {
            (None, _) => {
                tracing::warn!(sop = %record.uid, ts = %record.transfer_syntax, destination = %destination,
                    "c-move: destination does not accept this class in the stored transfer syntax");
                None
            }
            (_, Err(e)) => {
                tracing::warn!(sop = %record.uid, error = %e, "c-move: cannot read instance");
                None
            }
            (Some(ctx), Ok((_, bytes))) => {
                message_id = message_id.wrapping_add(1);
                let rq_store = CStoreRq {
                    message_id,
                    affected_sop_class: record.sop_class.to_string(),
                    affected_sop_instance: record.uid.to_string(),
                    move_originator_ae: Some(conn.calling_ae.clone()),
                    move_originator_message_id: Some(rq.message_id),
                    ..Default::default()
                };
                match archive_core::parse::dataset_bytes(&bytes) {
                    Ok(ds) => send_and_wait(&mut sub, ctx.id, peer_max, &Message::from(rq_store).encode(), ds).await,
                    Err(_) => None,
                }
            }
        };
        counts.record(outcome);
        conn.shared.metrics.bytes_out.inc_by(record.size);
        if counts.remaining > 0 {
            conn.send(pc, &Message::from(rsp(status::PENDING, &counts, true, None)).encode(), None).await?;
        }
    }
    let _ = sub.release().await;
    let code = counts.final_status();
    conn.send(pc, &Message::from(rsp(code, &counts, false, None)).encode(), None).await?;
    Ok(code)
}

/// Sends a C-STORE on a sub-association and returns the response status (None on failure).
async fn send_and_wait(
    assoc: &mut dicom_ul::association::AsyncClientAssociation<tokio::net::TcpStream>,
    pc: u8,
    peer_max: u32,
    command: &[u8],
    dataset: &[u8],
) -> Option<u16> {
    for (is_command, bytes) in [(true, command), (false, dataset)] {
        for f in dimse::pdv::fragments(pc, is_command, bytes, peer_max) {
            let value_type = if f.is_command { PDataValueType::Command } else { PDataValueType::Data };
            let data =
                vec![PDataValue { presentation_context_id: pc, value_type, is_last: f.is_last, data: f.data.to_vec() }];
            if let Err(e) = assoc.send(&Pdu::PData { data }).await {
                tracing::warn!(error = %e, "c-move: sending to the destination failed");
                return None;
            }
        }
    }
    let mut assembler = MessageAssembler::new(1 << 20);
    loop {
        match assoc.receive().await {
            Ok(Pdu::PData { data }) => {
                for v in data {
                    let is_command = v.value_type == PDataValueType::Command;
                    match assembler.push_parts(v.presentation_context_id, is_command, v.is_last, &v.data) {
                        Ok(Some(m)) => return Message::decode(&m.command).ok().and_then(|m| m.status()),
                        Ok(None) => {}
                        Err(_) => return None,
                    }
                }
            }
            Ok(_) | Err(_) => return None,
        }
    }
}

/// The unique key a retrieve identifier must constrain at each level.
fn required_key(level: Level) -> Attribute {
    match level {
        Level::Patient => Attribute::PatientID,
        Level::Study => Attribute::StudyInstanceUID,
        Level::Series => Attribute::SeriesInstanceUID,
        Level::Instance => Attribute::SOPInstanceUID,
    }
}
