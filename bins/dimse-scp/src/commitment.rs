//! Storage Commitment Push Model SCP (PS3.4 Annex J).
//!
//! An N-ACTION asks the archive to take responsibility for a list of instances. The archive
//! answers the N-ACTION at once, then reports per instance in an N-EVENT-REPORT on the same
//! association, or on a new one to the requestor's configured address when it does not take
//! it there: committed only when the core's read view ([`archive_core::visible::Visible`])
//! shows the instance with the same SOP class (an entry exists only after the object and its
//! catalog record were made durable, and the view leaves out what a deletion hides: a rejected
//! instance or a study past its grace period is "no such object instance").
//! Modalities delete their copies on this report, so nothing else is ever reported as committed.

use crate::association::{AssociationError, Connection};
use crate::config::RemoteAe;
use archive_core::uid::SopInstanceUid;
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::pdu::PresentationContextNegotiated;
use dimse::command::{Message, NActionRq, NActionRsp, NEventReportRq};
use dimse::status;

/// Storage Commitment Push Model SOP Class.
pub const STORAGE_COMMITMENT_PUSH: &str = "1.2.840.10008.1.20.1";
/// Its well-known SOP Instance.
pub const STORAGE_COMMITMENT_INSTANCE: &str = "1.2.840.10008.1.20.1.1";

const TRANSACTION_UID: Tag = Tag(0x0008, 0x1195);
const REFERENCED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1199);
const FAILED_SOP_SEQUENCE: Tag = Tag(0x0008, 0x1198);
const REFERENCED_SOP_CLASS: Tag = Tag(0x0008, 0x1150);
const REFERENCED_SOP_INSTANCE: Tag = Tag(0x0008, 0x1155);
const FAILURE_REASON: Tag = Tag(0x0008, 0x1197);

/// Failure reasons of PS3.4 J.3.2.1.1.
const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.value().to_str().ok().map(|s| s.trim_matches(|c| c == ' ' || c == '\0').to_string()))
        .unwrap_or_default()
}

fn reference(class: &str, instance: &str, failure: Option<u16>) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.put(DataElement::new(REFERENCED_SOP_CLASS, VR::UI, PrimitiveValue::from(class)));
    item.put(DataElement::new(REFERENCED_SOP_INSTANCE, VR::UI, PrimitiveValue::from(instance)));
    if let Some(reason) = failure {
        item.put(DataElement::new(FAILURE_REASON, VR::US, PrimitiveValue::from(reason)));
    }
    item
}

/// Handles an N-ACTION-RQ; returns the N-ACTION status.
pub(crate) async fn handle(
    conn: &mut Connection,
    context: &PresentationContextNegotiated,
    rq: NActionRq,
    dataset: Vec<u8>,
) -> Result<u16, AssociationError> {
    let pc = context.id;
    let respond = |status: u16, comment: Option<&str>| NActionRsp {
        message_id_being_responded_to: rq.message_id,
        affected_sop_class: Some(rq.requested_sop_class.clone()),
        affected_sop_instance: Some(rq.requested_sop_instance.clone()),
        status,
        action_type_id: Some(rq.action_type_id),
        error_comment: comment.map(|c| c.chars().take(64).collect()),
        has_dataset: false,
    };
    if rq.requested_sop_class.trim_end_matches('\0') != STORAGE_COMMITMENT_PUSH {
        conn.send(pc, &Message::from(respond(status::NO_SUCH_SOP_CLASS, None)).encode(), None).await?;
        return Ok(status::NO_SUCH_SOP_CLASS);
    }
    if rq.action_type_id != 1 {
        conn.send(pc, &Message::from(respond(status::NO_SUCH_ACTION_TYPE, None)).encode(), None).await?;
        return Ok(status::NO_SUCH_ACTION_TYPE);
    }
    let request = crate::identifier::decode_small_dataset(&dataset, &context.transfer_syntax);
    let request = match request {
        Ok(r)
            if !text(&r, TRANSACTION_UID).is_empty()
                && r.element_opt(REFERENCED_SOP_SEQUENCE).ok().flatten().is_some() =>
        {
            r
        }
        Ok(_) => {
            let code = status::MISSING_ATTRIBUTE;
            conn.send(
                pc,
                &Message::from(respond(code, Some("missing TransactionUID or ReferencedSOPSequence"))).encode(),
                None,
            )
            .await?;
            return Ok(code);
        }
        Err(e) => {
            let code = status::PROCESSING_FAILURE;
            conn.send(pc, &Message::from(respond(code, Some(&e))).encode(), None).await?;
            return Ok(code);
        }
    };
    conn.send(pc, &Message::from(respond(status::SUCCESS, None)).encode(), None).await?;

    // Check every referenced instance against the catalog.
    let transaction = text(&request, TRANSACTION_UID);
    let items: Vec<(String, String)> = request
        .element_opt(REFERENCED_SOP_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.value().items().map(|items| items.to_vec()))
        .unwrap_or_default()
        .iter()
        .map(|item| (text(item, REFERENCED_SOP_CLASS), text(item, REFERENCED_SOP_INSTANCE)))
        .collect();
    // The catalog lookups (one per instance, thousands for a large study) run off the runtime.
    let view = conn.shared.archive.retrieve().visible();
    let checked = tokio::task::spawn_blocking(move || {
        items
            .into_iter()
            .map(|(class, instance)| {
                let stored = SopInstanceUid::new(&instance).ok().and_then(|uid| view.instance(&uid).ok().flatten());
                let verdict = match stored {
                    Some(rec) if rec.sop_class.as_str() == class => None,
                    Some(_) => Some(CLASS_INSTANCE_CONFLICT),
                    None => Some(NO_SUCH_OBJECT_INSTANCE),
                };
                (class, instance, verdict)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| AssociationError::Protocol(format!("commitment check failed: {e}")))?;
    let mut committed = Vec::new();
    let mut failed = Vec::new();
    for (class, instance, verdict) in checked {
        match verdict {
            None => committed.push(reference(&class, &instance, None)),
            Some(reason) => failed.push(reference(&class, &instance, Some(reason))),
        }
    }
    tracing::info!(
        transaction = %transaction, committed = committed.len(), failed = failed.len(), calling = %conn.calling_ae,
        "storage commitment"
    );

    let mut report = InMemDicomObject::new_empty();
    report.put(DataElement::new(TRANSACTION_UID, VR::UI, PrimitiveValue::from(transaction)));
    let event_type = if failed.is_empty() { 1 } else { 2 };
    if !committed.is_empty() {
        report.put(DataElement::new(REFERENCED_SOP_SEQUENCE, VR::SQ, DataSetSequence::from(committed)));
    }
    if !failed.is_empty() {
        report.put(DataElement::new(FAILED_SOP_SEQUENCE, VR::SQ, DataSetSequence::from(failed)));
    }
    let ts = TransferSyntaxRegistry.get(&context.transfer_syntax).expect("checked above");
    let mut data = Vec::new();
    report
        .write_dataset_with_ts(&mut data, ts)
        .map_err(|e| AssociationError::Protocol(format!("cannot encode the commitment report: {e}")))?;
    let event = NEventReportRq {
        message_id: conn.next_message_id(),
        affected_sop_class: STORAGE_COMMITMENT_PUSH.into(),
        affected_sop_instance: STORAGE_COMMITMENT_INSTANCE.into(),
        event_type_id: event_type,
        has_dataset: true,
    };
    // First on the same association, without waiting: the dispatcher matches the answer, so a
    // requestor may send its next request before answering the report. A report the requestor
    // refuses, or does not answer before the association ends, goes out on a new association to
    // its configured address, as PS3.4 J.3.3 allows.
    let message_id = event.message_id;
    let pending = PendingReport { event: event.clone(), report };
    match conn.send(pc, &Message::from(event).encode(), Some(&data)).await {
        Ok(()) => {
            conn.pending_reports.insert(message_id, pending);
            Ok(status::SUCCESS)
        }
        Err(e) => {
            deliver_elsewhere(conn, pending, "the report could not be sent on this association");
            Err(e)
        }
    }
}

/// A commitment report waiting for the requestor's answer.
#[derive(Debug, Clone)]
pub(crate) struct PendingReport {
    event: NEventReportRq,
    report: InMemDicomObject,
}

/// Matches an N-EVENT-REPORT-RSP with its report; a failure status sends the report again on a
/// new association.
pub(crate) fn report_answered(conn: &mut Connection, rsp: dimse::command::NEventReportRsp) {
    let Some(pending) = conn.pending_reports.remove(&rsp.message_id_being_responded_to) else {
        tracing::debug!(peer = %conn.peer, "N-EVENT-REPORT-RSP for no pending report");
        return;
    };
    if status::kind(rsp.status) == status::StatusKind::Success {
        tracing::info!(calling = %conn.calling_ae, "commitment report delivered");
    } else {
        let why = format!("the requestor answered the report with status {:04X}", rsp.status);
        deliver_elsewhere(conn, pending, &why);
    }
}

/// Sends every unanswered report on a new association (the association is ending).
pub(crate) fn redeliver_unanswered(conn: &mut Connection) {
    let pending: Vec<PendingReport> = conn.pending_reports.drain().map(|(_, p)| p).collect();
    for p in pending {
        deliver_elsewhere(conn, p, "the requestor did not answer the report on its association");
    }
}

fn deliver_elsewhere(conn: &Connection, pending: PendingReport, why: &str) {
    match conn.shared.settings.remote_ae(&conn.calling_ae).cloned() {
        Some(remote) => {
            tracing::info!(calling = %conn.calling_ae, "{why}; delivering the commitment report on a new association");
            let outbox = outbox_dir(&conn.shared.archive.config().data_dir);
            let our_ae = conn.shared.settings.ae_title.clone();
            // Kept on disk until delivered, so that a restart does not lose it.
            let file = match persist(&outbox, &remote.ae_title, &pending) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::error!(error = %e, "cannot keep the commitment report on disk; delivering from memory");
                    None
                }
            };
            tokio::spawn(deliver_on_new_association(our_ae, remote, pending.event, pending.report, file));
        }
        None => tracing::warn!(
            calling = %conn.calling_ae,
            "{why}, and the requestor is not a configured remote AE: the commitment report is not delivered"
        ),
    }
}

/// Where undelivered commitment reports wait.
fn outbox_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("commitment-outbox")
}

/// A report waiting in the outbox: the destination AE, the event type and the report data set
/// (explicit VR little endian).
#[derive(serde::Serialize, serde::Deserialize)]
struct OutboxEntry {
    destination: String,
    event_type_id: u16,
    report: Vec<u8>,
}

fn explicit_le() -> &'static dicom_encoding::TransferSyntax {
    TransferSyntaxRegistry.get("1.2.840.10008.1.2.1").expect("explicit VR little endian is registered")
}

/// Writes a report to the outbox durably (temporary file, fsync, rename, directory fsync).
fn persist(dir: &std::path::Path, destination: &str, pending: &PendingReport) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut report = Vec::new();
    pending
        .report
        .write_dataset_with_ts(&mut report, explicit_le())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let entry =
        OutboxEntry { destination: destination.to_string(), event_type_id: pending.event.event_type_id, report };
    let name = format!("{}.json", unique_name());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(&entry).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

/// A file name no other report of this or another run takes: time, process and a counter.
fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{nanos:x}-{:x}-{:x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Delivers the reports a previous run left in the outbox (called when the server starts).
pub(crate) fn resume_outbox(archive: &archive_core::Archive, settings: &crate::server::ServerSettings) {
    let our_ae = settings.ae_title.as_str();
    let dir = outbox_dir(&archive.config().data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.extension().is_none_or(|x| x != "json") {
            let _ = std::fs::remove_file(&path); // an interrupted write
            continue;
        }
        let entry: Option<OutboxEntry> = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let Some(entry) = entry else {
            tracing::error!(file = %path.display(), "unreadable commitment report in the outbox; left in place");
            continue;
        };
        let Some(remote) = settings.remote_ae(&entry.destination).cloned() else {
            tracing::warn!(destination = %entry.destination, "commitment report for an AE no longer configured; left in the outbox");
            continue;
        };
        let Ok(report) = InMemDicomObject::read_dataset_with_ts(&entry.report[..], explicit_le()) else {
            tracing::error!(file = %path.display(), "undecodable commitment report in the outbox; left in place");
            continue;
        };
        let event = NEventReportRq {
            message_id: 1,
            affected_sop_class: STORAGE_COMMITMENT_PUSH.into(),
            affected_sop_instance: STORAGE_COMMITMENT_INSTANCE.into(),
            event_type_id: entry.event_type_id,
            has_dataset: true,
        };
        tracing::info!(destination = %remote.ae_title, "delivering a commitment report left by the previous run");
        tokio::spawn(deliver_on_new_association(our_ae.to_string(), remote, event, report, Some(path)));
    }
}

/// Sends an N-EVENT-REPORT on a new association to `remote`, proposing the SCP role for
/// Storage Commitment, with a few retries; the outbox file goes once it is delivered (a
/// report still undelivered is retried at the next start).
async fn deliver_on_new_association(
    our_ae: String,
    remote: RemoteAe,
    event: NEventReportRq,
    report: InMemDicomObject,
    outbox_file: Option<std::path::PathBuf>,
) {
    for attempt in 1..=3u32 {
        match try_deliver(&our_ae, &remote, &event, &report).await {
            Ok(code) if status::kind(code) == status::StatusKind::Success => {
                tracing::info!(destination = %remote.ae_title, "commitment report delivered on a new association");
                if let Some(f) = &outbox_file {
                    let _ = std::fs::remove_file(f);
                }
                return;
            }
            Ok(code) => tracing::warn!(destination = %remote.ae_title, status = code, "commitment report refused"),
            Err(e) => {
                tracing::warn!(destination = %remote.ae_title, attempt, error = %e, "commitment report not delivered")
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2 * attempt as u64)).await;
    }
    tracing::error!(destination = %remote.ae_title, "commitment report undelivered after 3 attempts; kept for the next start");
}

async fn try_deliver(
    our_ae: &str,
    remote: &RemoteAe,
    event: &NEventReportRq,
    report: &InMemDicomObject,
) -> Result<u16, String> {
    use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
    let mut assoc = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title(our_ae)
        .called_ae_title(remote.ae_title.clone())
        .with_presentation_context(STORAGE_COMMITMENT_PUSH, vec!["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        .with_role_selection(STORAGE_COMMITMENT_PUSH, false, true)
        .connection_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(30))
        .write_timeout(std::time::Duration::from_secs(30))
        .establish_async((remote.host.as_str(), remote.port))
        .await
        .map_err(|e| e.to_string())?;
    let context = assoc
        .presentation_contexts()
        .iter()
        .find(|c| c.reason == PresentationContextResultReason::Acceptance)
        .cloned()
        .ok_or("storage commitment was not accepted")?;
    let ts = TransferSyntaxRegistry.get(&context.transfer_syntax).ok_or("unknown transfer syntax")?;
    let mut data = Vec::new();
    report.write_dataset_with_ts(&mut data, ts).map_err(|e| e.to_string())?;
    let max = assoc.acceptor_max_pdu_length();
    for (is_command, bytes) in [(true, Message::from(event.clone()).encode()), (false, data)] {
        for f in dimse::pdv::fragments(context.id, is_command, &bytes, max) {
            let value_type = if f.is_command { PDataValueType::Command } else { PDataValueType::Data };
            let pdv = PDataValue {
                presentation_context_id: context.id,
                value_type,
                is_last: f.is_last,
                data: f.data.to_vec(),
            };
            assoc.send(&dicom_ul::Pdu::PData { data: vec![pdv] }).await.map_err(|e| e.to_string())?;
        }
    }
    let mut reader = dimse::ul::MessageReader::new(1 << 20);
    match reader.receive(&mut assoc, None).await.map_err(|e| e.to_string())? {
        dimse::ul::Received::Message(m) => {
            let code =
                Message::decode(&m.command).map_err(|e| e.to_string())?.status().unwrap_or(status::PROCESSING_FAILURE);
            // The answer is what counts; a peer slow to release does not hold it up.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), assoc.release()).await;
            Ok(code)
        }
        dimse::ul::Received::Pdu(other) => Err(format!("unexpected {}", other.short_description())),
    }
}
