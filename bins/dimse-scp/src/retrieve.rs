//! C-GET and C-MOVE SCP: the identifier becomes a retrieve query and the core's one retrieve
//! selection ([`archive_core::retrieve::Retrieve::select`]) gives the visible instances it
//! covers (this door neither expands rows nor filters hidden instances itself); each one is
//! read from its tier and sent as a C-STORE sub-operation, on the requesting association
//! (C-GET) or on a new association to the configured destination (C-MOVE), with pending
//! responses counting remaining, completed, failed and warning sub-operations.
//!
//! Objects are sent in the transfer syntax they are stored in whenever the peer accepts it.
//! An object stored uncompressed (implicit or explicit VR little endian, explicit VR big
//! endian) is converted to another of these when the peer accepts only that one; an object
//! stored compressed that the peer does not accept as is fails its sub-operation, with the
//! reason in the log.

use crate::association::{AssociationError, Connection};
use crate::identifier;
use archive_core::archive::Readiness;
use archive_core::model::InstanceRecord;
use archive_core::retrieve::RetrieveError;
use bytes::Bytes;
use dicom_ul::pdu::{PresentationContextNegotiated, PresentationContextResultReason};
use dimse::command::{CGetRq, CGetRsp, CMoveRq, CMoveRsp, CStoreRq, Message, SubOperations};
use dimse::status;
use dimse::ul::{MessageReader, Received};
use std::collections::{BTreeSet, VecDeque};

use crate::wire::MessageWriter;
use archive_core::transcode::{can_decode, is_native, transcode_dataset, EXPLICIT_LE, IMPLICIT_LE};

/// How a record can go out over the accepted contexts.
enum Plan {
    /// As stored, on this context.
    AsStored(u8),
    /// Converted to this uncompressed syntax, on this context.
    Convert(u8, String),
}

/// Chooses the context for a record: one accepting its stored syntax, else one with an
/// uncompressed syntax vna can convert it to; or why it cannot be sent.
fn plan_for<'a>(
    contexts: impl Iterator<Item = &'a PresentationContextNegotiated> + Clone,
    record: &InstanceRecord,
) -> Result<Plan, String> {
    let class = record.sop_class.as_str();
    let stored = record.transfer_syntax.as_str();
    let accepted =
        contexts.filter(|c| c.reason == PresentationContextResultReason::Acceptance && c.abstract_syntax == class);
    if let Some(c) = accepted.clone().find(|c| c.transfer_syntax == stored) {
        return Ok(Plan::AsStored(c.id));
    }
    if can_decode(stored) {
        if let Some(c) = accepted.clone().find(|c| is_native(&c.transfer_syntax)) {
            return Ok(Plan::Convert(c.id, c.transfer_syntax.clone()));
        }
    }
    Err(format!("the peer accepts {class} in no transfer syntax vna can convert {stored} to"))
}

/// The context and the data set bytes to send for a stored Part-10 object: a slice of the
/// object itself when the peer takes it as stored, else a conversion made on a blocking
/// thread (decoding an image is CPU work).
async fn prepare(
    contexts: &[PresentationContextNegotiated],
    record: &InstanceRecord,
    object: Bytes,
) -> Result<(u8, Bytes), String> {
    let offset = {
        let dataset = archive_core::parse::dataset_bytes(&object).map_err(|e| e.to_string())?;
        object.len() - dataset.len()
    };
    match plan_for(contexts.iter(), record)? {
        Plan::AsStored(pc) => Ok((pc, object.slice(offset..))),
        Plan::Convert(pc, target) => {
            let stored = record.transfer_syntax.to_string();
            tokio::task::spawn_blocking(move || transcode_dataset(&object[offset..], &stored, &target))
                .await
                .map_err(|e| format!("conversion failed: {e}"))?
                .map(|converted| (pc, Bytes::from(converted)))
                .map_err(|e| e.to_string())
        }
    }
}

/// How many instances are read ahead of the one being sent.
const READ_AHEAD: usize = 2;
/// Most bytes of instances read ahead (one is always read, whatever its size).
const READ_AHEAD_BYTES: u64 = 64 << 20;

/// Reads the selected instances from their tiers ahead of the sub-operations, so that tier
/// reads and checksum verification overlap with sending (at most [`READ_AHEAD`] instances
/// and [`READ_AHEAD_BYTES`] held); reads still pending when it is dropped (cancel, failed
/// association) are aborted.
struct ReadAhead {
    retrieve: archive_core::retrieve::Retrieve,
    rest: std::vec::IntoIter<InstanceRecord>,
    pending: VecDeque<(InstanceRecord, tokio::task::JoinHandle<Result<Bytes, String>>)>,
}

impl ReadAhead {
    fn new(retrieve: archive_core::retrieve::Retrieve, records: Vec<InstanceRecord>) -> Self {
        let mut this = Self { retrieve, rest: records.into_iter(), pending: VecDeque::new() };
        this.fill();
        this
    }

    fn fill(&mut self) {
        while self.pending.len() < READ_AHEAD {
            let held: u64 = self.pending.iter().map(|(r, _)| r.size).sum();
            let next_size = match self.rest.as_slice().first() {
                Some(next) => next.size,
                None => return,
            };
            if !self.pending.is_empty() && held + next_size > READ_AHEAD_BYTES {
                return;
            }
            let Some(record) = self.rest.next() else { return };
            let retrieve = self.retrieve.clone();
            let r = record.clone();
            let task =
                tokio::spawn(async move { retrieve.read(r).await.map(|(_, bytes)| bytes).map_err(|e| e.to_string()) });
            self.pending.push_back((record, task));
        }
    }

    /// The next instance and its bytes (or why it could not be read).
    async fn next(&mut self) -> Option<(InstanceRecord, Result<Bytes, String>)> {
        let (record, task) = self.pending.pop_front()?;
        self.fill();
        // Aborted if this future is dropped before the read ends.
        let mut task = AbortOnDrop(task);
        let read = (&mut task.0).await.unwrap_or_else(|e| Err(format!("read task failed: {e}")));
        Some((record, read))
    }

    /// The instances not handed out yet; their reads are stopped.
    fn stop(mut self) -> Vec<InstanceRecord> {
        let mut out: Vec<InstanceRecord> = self
            .pending
            .drain(..)
            .map(|(r, task)| {
                task.abort();
                r
            })
            .collect();
        out.extend(self.rest.by_ref());
        out
    }
}

/// A task handle that aborts its task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        for (_, task) in &self.pending {
            task.abort();
        }
    }
}

/// Counts of sub-operations.
#[derive(Debug, Clone, Default)]
struct Counts {
    remaining: usize,
    completed: usize,
    failed: usize,
    warning: usize,
    /// SOP Instance UIDs of failed sub-operations, for the final response.
    failed_uids: Vec<String>,
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
    fn record(&mut self, uid: &str, sub_status: Option<u16>) {
        self.remaining = self.remaining.saturating_sub(1);
        match sub_status.map(status::kind) {
            Some(status::StatusKind::Success) => self.completed += 1,
            Some(status::StatusKind::Warning) => self.warning += 1,
            _ => {
                self.failed += 1;
                self.failed_uids.push(uid.to_string());
            }
        }
    }

    /// The identifier of a final response: Failed SOP Instance UID List (0008,0058), if any failed.
    fn failed_list(&self, ts_uid: &str) -> Option<Vec<u8>> {
        use dicom_encoding::TransferSyntaxIndex;
        if self.failed_uids.is_empty() {
            return None;
        }
        let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(ts_uid)?;
        let mut obj = dicom_object::InMemDicomObject::new_empty();
        let list = dicom_core::value::PrimitiveValue::Strs(self.failed_uids.iter().cloned().collect());
        obj.put(dicom_core::DataElement::new(dicom_core::Tag(0x0008, 0x0058), dicom_core::VR::UI, list));
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, ts).ok()?;
        Some(out)
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
    let archive = &conn.shared.archive;
    match archive.retrieve().select_async(request.query, archive.match_options()).await {
        Ok(v) => recall_offline(conn, v).await,
        Err(e @ RetrieveError::InvalidSelection(_)) => {
            Err((status::IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, e.to_string()))
        }
        Err(e) => Err((status::UNABLE_TO_PROCESS, e.to_string())),
    }
}

/// Brings studies with instances on no online tier back to the recall tier before the
/// sub-operations start (waiting up to `lifecycle.recall_wait_secs`), and returns the
/// records with their new copies.
async fn recall_offline(conn: &Connection, records: Vec<InstanceRecord>) -> Result<Vec<InstanceRecord>, (u16, String)> {
    let archive = &conn.shared.archive;
    let wait = std::time::Duration::from_secs(archive.config().lifecycle.recall_wait_secs);
    match archive.recall_offline(records, wait).await {
        Ok(Readiness::Online(records)) => Ok(records),
        Ok(Readiness::Recalling(job)) => Err((
            status::UNABLE_TO_PROCESS,
            format!("recall from cold storage (job {job}) did not finish within {} s; retry later", wait.as_secs()),
        )),
        Err(e) => Err((status::UNABLE_TO_PROCESS, e.to_string())),
    }
}

fn comment(text: &str) -> Option<String> {
    Some(text.chars().take(64).collect())
}

/// Sends a final (or cancel) response whose identifier, when sub-operations failed, is the
/// Failed SOP Instance UID List; `build` makes the response given whether it has a data set.
async fn send_final<M: Into<Message>>(
    conn: &mut Connection,
    pc: u8,
    ts: &str,
    counts: &Counts,
    build: impl FnOnce(bool) -> M,
) -> Result<(), AssociationError> {
    let failed = counts.failed_list(ts);
    let message: Message = build(failed.is_some()).into();
    conn.send(pc, &message.encode(), failed.as_deref()).await
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
    if !instances.is_empty() {
        let peer = conn.peer.ip().to_string();
        conn.shared.archive.audit_retrieve(&conn.calling_ae, &peer, &instances, "C-GET");
    }
    let mut counts = Counts { remaining: instances.len(), ..Counts::default() };
    // C-STOREs go only on contexts whose class the requestor took the SCP role for.
    let contexts: Vec<PresentationContextNegotiated> =
        conn.contexts().filter(|c| conn.requestor_is_scp(&c.abstract_syntax)).cloned().collect();
    let mut reads = ReadAhead::new(conn.shared.archive.retrieve().clone(), instances);
    while let Some((record, read)) = reads.next().await {
        let sub = match read {
            Ok(bytes) => store_on_requesting_association(conn, &contexts, &record, bytes).await?,
            Err(e) => {
                tracing::warn!(sop = %record.uid, error = %e, "c-get: cannot read instance");
                None
            }
        };
        counts.record(record.uid.as_str(), sub);
        if std::mem::take(&mut conn.cancel_pending) || conn.cancel_requested(rq.message_id)? {
            send_final(conn, pc, &context.transfer_syntax, &counts, |has_dataset| {
                let mut last = rsp(status::CANCEL, &counts, true, None);
                last.has_dataset = has_dataset;
                last
            })
            .await?;
            return Ok(status::CANCEL);
        }
        if counts.remaining > 0 {
            conn.send(pc, &Message::from(rsp(status::PENDING, &counts, true, None)).encode(), None).await?;
        }
    }
    let code = counts.final_status();
    send_final(conn, pc, &context.transfer_syntax, &counts, |has_dataset| {
        let mut last = rsp(code, &counts, false, None);
        last.has_dataset = has_dataset;
        last
    })
    .await?;
    Ok(code)
}

/// Sends one C-STORE on the requesting association and waits for its response status.
/// `None` when no presentation context fits (the sub-operation fails).
async fn store_on_requesting_association(
    conn: &mut Connection,
    contexts: &[PresentationContextNegotiated],
    record: &InstanceRecord,
    object: Bytes,
) -> Result<Option<u16>, AssociationError> {
    let (pc, dataset) = match prepare(contexts, record, object).await {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!(sop = %record.uid, ts = %record.transfer_syntax, "c-get: {why}");
            return Ok(None);
        }
    };
    let rq = CStoreRq {
        message_id: conn.next_message_id(),
        affected_sop_class: record.sop_class.to_string(),
        affected_sop_instance: record.uid.to_string(),
        ..Default::default()
    };
    conn.send(pc, &Message::from(rq).encode(), Some(&dataset)).await?;
    loop {
        match conn.receive_message().await? {
            Message::CStoreRsp(rsp) => return Ok(Some(rsp.status)),
            Message::CCancelRq(_) => {
                tracing::info!("c-get: cancel requested; finishing the current sub-operation");
                conn.cancel_pending = true;
            }
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
    let Some(remote) = conn.shared.settings.remote_ae(&destination).cloned() else {
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
    if !instances.is_empty() {
        let peer = conn.peer.ip().to_string();
        let how = format!("C-MOVE to {destination}");
        conn.shared.archive.audit_retrieve(&conn.calling_ae, &peer, &instances, &how);
    }
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
        .max_pdu_length(conn.shared.settings.max_pdu_length)
        .connection_timeout(std::time::Duration::from_secs(10))
        .read_timeout(conn.shared.settings.idle_timeout)
        .write_timeout(conn.shared.settings.idle_timeout);
    for (class, ts) in &pairs {
        // The stored syntax alone, and for objects vna can decode a second context offering
        // the common uncompressed syntaxes it can convert to.
        options = options.with_presentation_context(class.clone(), vec![ts.clone()]);
        if can_decode(ts) {
            options = options
                .with_presentation_context(class.clone(), vec![EXPLICIT_LE.to_string(), IMPLICIT_LE.to_string()]);
        }
    }
    let mut sub = match options.establish_async((remote.host.as_str(), remote.port)).await {
        Ok(mut a) => {
            // Sub-operations are small request/response exchanges: without TCP_NODELAY each one
            // waits for a delayed ACK (about 40 ms).
            let _ = a.inner_stream().set_nodelay(true);
            a
        }
        Err(e) => {
            // Unreachable, or it accepted none of the proposed contexts: every sub-operation fails.
            for r in &instances {
                counts.record(r.uid.as_str(), None);
            }
            let why = comment(&format!("cannot store to {destination}: {e}"));
            tracing::warn!(destination = %destination, error = %e, "c-move: no sub-association to the destination");
            let code = status::C_MOVE_OUT_OF_RESOURCES_SUB_OPERATIONS;
            send_final(conn, pc, &context.transfer_syntax, &counts, |has_dataset| {
                let mut last = rsp(code, &counts, false, why);
                last.has_dataset = has_dataset;
                last
            })
            .await?;
            return Ok(code);
        }
    };
    let contexts: Vec<PresentationContextNegotiated> = sub.presentation_contexts().to_vec();
    let peer_max = sub.acceptor_max_pdu_length();
    let timeout = conn.shared.settings.idle_timeout;
    let mut writer = MessageWriter::default();
    let mut responses = MessageReader::new(1 << 20);
    let mut message_id = 0u16;
    let mut reads = ReadAhead::new(conn.shared.archive.retrieve().clone(), instances);
    // Why the sub-association became unusable, if it did.
    let mut broken: Option<String> = None;
    while let Some((record, read)) = reads.next().await {
        let outcome = match read {
            Err(e) => {
                tracing::warn!(sop = %record.uid, error = %e, "c-move: cannot read instance");
                None
            }
            Ok(bytes) => match prepare(&contexts, &record, bytes).await {
                Err(why) => {
                    tracing::warn!(sop = %record.uid, destination = %destination, "c-move: {why}");
                    None
                }
                Ok((pc_id, dataset)) => {
                    message_id = message_id.wrapping_add(1);
                    let rq_store = CStoreRq {
                        message_id,
                        affected_sop_class: record.sop_class.to_string(),
                        affected_sop_instance: record.uid.to_string(),
                        move_originator_ae: Some(conn.calling_ae.clone()),
                        move_originator_message_id: Some(rq.message_id),
                        ..Default::default()
                    };
                    let command = Message::from(rq_store).encode();
                    let sent =
                        writer.write(sub.inner_stream(), pc_id, &command, Some(&dataset), peer_max, timeout).await;
                    let answered = match sent {
                        Ok(()) => wait_for_store_response(&mut sub, &mut responses).await,
                        Err(e) => Err(format!("sending failed: {e}")),
                    };
                    match answered {
                        Ok(status) => status,
                        Err(why) => {
                            tracing::warn!(destination = %destination, "c-move: sub-association lost: {why}");
                            broken = Some(why);
                            None
                        }
                    }
                }
            },
        };
        counts.record(record.uid.as_str(), outcome);
        conn.shared.metrics.bytes_out.inc_by(record.size);
        if broken.is_some() {
            // Nothing more can go over the sub-association (a write may have stopped inside
            // a PDU): the rest fail without being sent, and it is dropped, not released.
            for rest in reads.stop() {
                counts.record(rest.uid.as_str(), None);
            }
            break;
        }
        if conn.cancel_requested(rq.message_id)? {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), sub.release()).await;
            send_final(conn, pc, &context.transfer_syntax, &counts, |has_dataset| {
                let mut last = rsp(status::CANCEL, &counts, true, None);
                last.has_dataset = has_dataset;
                last
            })
            .await?;
            return Ok(status::CANCEL);
        }
        if counts.remaining > 0 {
            conn.send(pc, &Message::from(rsp(status::PENDING, &counts, true, None)).encode(), None).await?;
        }
    }
    if broken.is_none() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), sub.release()).await;
    }
    let code = counts.final_status();
    let why = broken.as_deref().and_then(|w| comment(&format!("lost the connection to {destination}: {w}")));
    send_final(conn, pc, &context.transfer_syntax, &counts, |has_dataset| {
        let mut last = rsp(code, &counts, false, why);
        last.has_dataset = has_dataset;
        last
    })
    .await?;
    Ok(code)
}

/// Waits for the C-STORE response on a sub-association: its status (`None` when the response
/// carries none), or why the sub-association can no longer be used.
async fn wait_for_store_response(
    assoc: &mut dicom_ul::association::AsyncClientAssociation<tokio::net::TcpStream>,
    reader: &mut MessageReader,
) -> Result<Option<u16>, String> {
    match reader.receive(assoc, None).await {
        Ok(Received::Message(m)) => Ok(Message::decode(&m.command).ok().and_then(|m| m.status())),
        Ok(Received::Pdu(other)) => Err(format!("the destination sent {}", other.short_description())),
        Err(e) => Err(archive_core::error_chain::error_chain(&e)),
    }
}
