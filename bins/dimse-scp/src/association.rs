//! One association: negotiation, then a loop of P-DATA messages until release or abort.
//!
//! Each message is assembled from its fragments by the connection's one
//! [`dimse::ul::MessageReader`] (also while an operation waits for a reply), decoded by the
//! `dimse` crate and handed to its service. Protocol errors (undecodable command sets,
//! fragments out of order, unknown presentation contexts) abort this association only.

use crate::server::Shared;
use crate::{commitment, find, retrieve, store};
use dicom_ul::association::server::ServerAssociationOptions;
use dicom_ul::association::{Association, AsyncServerAssociation};
use dicom_ul::pdu::{PresentationContextNegotiated, PresentationContextResultReason};
use dicom_ul::Pdu;
use dimse::command::{CEchoRsp, Message};
use dimse::status;
use dimse::ul::{MessageReader, ReceiveError, Received};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;

/// Why an association ends early.
#[derive(Debug, thiserror::Error)]
pub enum AssociationError {
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The network failed or timed out.
    #[error("network error: {0}")]
    Network(String),
    /// The peer asked to release the association while an operation waited for its reply.
    #[error("the peer released the association")]
    Released,
    /// A message could not be written in full: the stream may end inside a PDU, so nothing
    /// more (not even an A-ABORT) can be sent on it.
    #[error("sending failed: {0}")]
    WriteFailed(String),
}

/// An accepted association and what was negotiated.
pub struct Connection {
    assoc: AsyncServerAssociation<TcpStream>,
    message_id: u16,
    /// A C-CANCEL arrived while an operation waited for a sub-operation's reply.
    pub(crate) cancel_pending: bool,
    /// SOP classes for which the requestor took the SCP role (it may receive C-STOREs: C-GET).
    requestor_scp_classes: std::collections::HashSet<String>,
    contexts: Vec<PresentationContextNegotiated>,
    peer_max_pdu: u32,
    /// The peer's AE title.
    pub calling_ae: String,
    /// The peer's address.
    pub peer: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    /// Storage commitment reports sent on this association and not answered yet, by message ID.
    pub(crate) pending_reports: std::collections::HashMap<u16, commitment::PendingReport>,
    /// Frames outgoing messages.
    writer: crate::wire::MessageWriter,
    /// Assembles incoming messages, between operations and during them.
    reader: MessageReader,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("calling_ae", &self.calling_ae).field("peer", &self.peer).finish()
    }
}

/// Accepts the SCU/SCP roles a requestor proposes (C-GET needs the requestor as storage SCP).
#[derive(Debug, Clone, Copy)]
struct AcceptProposedRoles;

impl dicom_ul::association::server::Negotiation for AcceptProposedRoles {
    fn negotiate_roles(
        &self,
        _sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<dicom_ul::pdu::RequestorRoles> {
        Some(dicom_ul::pdu::RequestorRoles { scu: scu_role, scp: scp_role })
    }
}

/// Serves one TCP connection from association request to release.
pub(crate) async fn serve(shared: Arc<Shared>, socket: TcpStream, peer: SocketAddr) {
    let settings = &shared.settings;
    let options = ServerAssociationOptions::new()
        .ae_access_control(settings.callers.clone())
        .ae_title(settings.ae_title.clone())
        .promiscuous(true)
        .with_negotiation(AcceptProposedRoles)
        .strict(true)
        .max_pdu_length(settings.max_pdu_length)
        .read_timeout(settings.idle_timeout)
        .write_timeout(settings.idle_timeout);
    // ARTIM: the association request must arrive in time, whatever the idle timeout.
    let established = tokio::time::timeout(settings.artim_timeout, options.establish_async(socket))
        .await
        .map_err(|_| "ARTIM expired before the association request arrived".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let assoc = match established {
        Ok(a) => a,
        Err(e) => {
            shared.metrics.associations.with_label_values(&["rejected"]).inc();
            tracing::info!(%peer, error = %e, "association not established");
            return;
        }
    };
    shared.metrics.associations.with_label_values(&["accepted"]).inc();
    shared.metrics.active.inc();
    let calling_ae = Association::peer_ae_title(&assoc).trim().to_string();
    tracing::info!(%peer, calling = %calling_ae, "association accepted");
    let requestor_scp_classes = assoc
        .presentation_contexts()
        .iter()
        .filter(|c| Association::requestor_roles_for(&assoc, &c.abstract_syntax).scp)
        .map(|c| c.abstract_syntax.clone())
        .collect();
    let mut conn = Connection {
        message_id: 0,
        cancel_pending: false,
        requestor_scp_classes,
        contexts: assoc.presentation_contexts().to_vec(),
        peer_max_pdu: assoc.requestor_max_pdu_length(),
        assoc,
        calling_ae,
        peer,
        shared: shared.clone(),
        pending_reports: Default::default(),
        writer: Default::default(),
        reader: MessageReader::new(settings.max_dataset_len),
    };
    let result = conn.run().await;
    // Reports the requestor did not answer here go out on a new association.
    commitment::redeliver_unanswered(&mut conn);
    match result {
        Ok(()) => tracing::info!(%peer, "association released"),
        Err(AssociationError::Released) => {
            let _ = conn.assoc.send(&Pdu::ReleaseRP).await;
            tracing::info!(%peer, "association released during an operation");
        }
        Err(e @ AssociationError::WriteFailed(_)) => {
            // The connection closes when `conn` is dropped.
            tracing::warn!(%peer, error = %e, "association dropped");
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "association aborted");
            let _ = conn.assoc.abort().await;
        }
    }
    shared.metrics.active.dec();
}

impl Connection {
    async fn run(&mut self) -> Result<(), AssociationError> {
        loop {
            match self.receive().await? {
                Received::Message(message) => {
                    let (pc, command, dataset) = message.into_parts();
                    self.dispatch(pc, &command, dataset).await?;
                }
                Received::Pdu(Pdu::ReleaseRQ) => {
                    self.assoc.send(&Pdu::ReleaseRP).await.map_err(|e| AssociationError::Network(e.to_string()))?;
                    return Ok(());
                }
                Received::Pdu(Pdu::AbortRQ { .. }) => {
                    tracing::info!(peer = %self.peer, "peer aborted the association");
                    return Ok(());
                }
                Received::Pdu(other) => {
                    return Err(AssociationError::Protocol(format!("unexpected {}", other.short_description())));
                }
            }
        }
    }

    /// The next complete message or other PDU, giving up after the idle timeout.
    async fn receive(&mut self) -> Result<Received, AssociationError> {
        let idle = self.shared.settings.idle_timeout;
        self.reader.receive(&mut self.assoc, Some(idle)).await.map_err(receive_error)
    }

    /// The accepted presentation context with this id.
    pub fn context(&self, pc: u8) -> Option<&PresentationContextNegotiated> {
        self.contexts.iter().find(|c| c.id == pc && c.reason == PresentationContextResultReason::Acceptance)
    }

    async fn dispatch(&mut self, pc: u8, command: &[u8], dataset: Option<Vec<u8>>) -> Result<(), AssociationError> {
        let message = Message::decode(command).map_err(|e| AssociationError::Protocol(e.to_string()))?;
        let Some(context) = self.context(pc).cloned() else {
            return Err(AssociationError::Protocol(format!(
                "message on presentation context {pc}, which is not accepted"
            )));
        };
        let started = Instant::now();
        match message {
            Message::CEchoRq(rq) => {
                let rsp = CEchoRsp {
                    message_id_being_responded_to: rq.message_id,
                    affected_sop_class: Some(rq.affected_sop_class),
                    status: status::SUCCESS,
                    error_comment: None,
                };
                self.send(pc, &Message::from(rsp).encode(), None).await?;
                self.shared.metrics.operation("echo", status::SUCCESS, started.elapsed().as_secs_f64());
            }
            Message::CStoreRq(rq) => {
                let rsp = store::handle(self, &context, rq, dataset.unwrap_or_default()).await;
                let code = rsp.status;
                self.send(pc, &Message::from(rsp).encode(), None).await?;
                self.shared.metrics.operation("store", code, started.elapsed().as_secs_f64());
            }
            Message::CFindRq(rq) => {
                let code = find::handle(self, &context, rq, dataset.unwrap_or_default()).await?;
                self.shared.metrics.operation("find", code, started.elapsed().as_secs_f64());
            }
            Message::CCancelRq(_) => {
                // Operations run to completion before the next message is read: nothing to cancel.
            }
            Message::CMoveRq(rq) => {
                let code = retrieve::handle_move(self, &context, rq, dataset.unwrap_or_default()).await?;
                self.shared.metrics.operation("move", code, started.elapsed().as_secs_f64());
            }
            Message::CGetRq(rq) => {
                let code = retrieve::handle_get(self, &context, rq, dataset.unwrap_or_default()).await?;
                self.shared.metrics.operation("get", code, started.elapsed().as_secs_f64());
            }
            Message::NActionRq(rq) => {
                let code = commitment::handle(self, &context, rq, dataset.unwrap_or_default()).await?;
                self.shared.metrics.operation("commitment", code, started.elapsed().as_secs_f64());
            }
            Message::NEventReportRsp(rsp) => commitment::report_answered(self, rsp),
            other if other.is_response() => {
                tracing::debug!(peer = %self.peer, command = ?other.command_field(), "ignoring an unsolicited response");
            }
            other => {
                // A request vna does not provide (N-CREATE for MPPS, N-GET, N-SET...): answer
                // it with "unrecognized operation" instead of aborting the association, so
                // stores queued on the same association go on.
                let response = refusal_of(&other, status::UNRECOGNIZED_OPERATION)?;
                tracing::info!(peer = %self.peer, command = ?other.command_field(), "refused an unsupported request");
                self.send(pc, &response, None).await?;
            }
        }
        Ok(())
    }

    /// The negotiated presentation contexts.
    pub fn contexts(&self) -> impl Iterator<Item = &PresentationContextNegotiated> + Clone {
        self.contexts.iter()
    }

    /// Whether the requestor negotiated the SCP role for a SOP class (PS3.7 D.3.3.4).
    pub fn requestor_is_scp(&self, sop_class: &str) -> bool {
        self.requestor_scp_classes.contains(sop_class)
    }

    /// A fresh message ID for a request the archive sends (C-GET sub-operations).
    pub fn next_message_id(&mut self) -> u16 {
        self.message_id = self.message_id.wrapping_add(1);
        self.message_id
    }

    /// Reads the next complete message from the peer (used while an operation waits for a reply).
    pub async fn receive_message(&mut self) -> Result<Message, AssociationError> {
        let received = self.receive().await?;
        operation_message(received)
    }

    /// Whether the peer has asked to cancel the operation `message_id`, looking only at PDUs
    /// already received (never waits). Reading is cancel-safe: a partly received PDU stays
    /// buffered for the next read, a partly assembled message in the reader.
    pub fn cancel_requested(&mut self, message_id: u16) -> Result<bool, AssociationError> {
        use futures::FutureExt;
        // One poll reads every PDU already received, until a message is complete.
        let Some(received) = self.reader.receive(&mut self.assoc, None).now_or_never() else { return Ok(false) };
        match operation_message(received.map_err(receive_error)?)? {
            Message::CCancelRq(c) if c.message_id_being_responded_to == message_id => Ok(true),
            other => Err(AssociationError::Protocol(format!(
                "{:?} received while an operation is running (no asynchronous operations were negotiated)",
                other.command_field()
            ))),
        }
    }

    /// Sends one message, fragmented to the peer's maximum PDU length.
    pub async fn send(&mut self, pc: u8, command: &[u8], dataset: Option<&[u8]>) -> Result<(), AssociationError> {
        if let Some(ds) = dataset {
            self.shared.metrics.bytes_out.inc_by(ds.len() as u64);
        }
        let timeout = self.shared.settings.idle_timeout;
        self.writer
            .write(self.assoc.inner_stream(), pc, command, dataset, self.peer_max_pdu, timeout)
            .await
            .map_err(|e| AssociationError::WriteFailed(e.to_string()))
    }
}

/// The association error for a failed receive.
fn receive_error(e: ReceiveError) -> AssociationError {
    match e {
        ReceiveError::Network(e) => AssociationError::Network(e.to_string()),
        ReceiveError::Timeout(t) => AssociationError::Network(format!("idle for {} s", t.as_secs())),
        ReceiveError::Assemble(e) => AssociationError::Protocol(e.to_string()),
    }
}

/// The command of a message received while an operation runs. Anything but P-DATA is a
/// protocol error at that point (a release request ends the operation).
fn operation_message(received: Received) -> Result<Message, AssociationError> {
    match received {
        Received::Message(m) => Message::decode(&m.command).map_err(|e| AssociationError::Protocol(e.to_string())),
        Received::Pdu(Pdu::ReleaseRQ) => Err(AssociationError::Released),
        Received::Pdu(other) => {
            Err(AssociationError::Protocol(format!("unexpected {} during an operation", other.short_description())))
        }
    }
}

/// The encoded response refusing a request with `code`: same command field with the response
/// bit, the request's message ID, its SOP class and instance when present, no data set.
fn refusal_of(request: &Message, code: u16) -> Result<Vec<u8>, AssociationError> {
    use dimse::command::{tags, CommandSet, Value};
    let field = request.command_field().to_u16() | 0x8000;
    let id = request.message_id().ok_or_else(|| AssociationError::Protocol("request without a message ID".into()))?;
    let original = request.to_command_set();
    let mut rsp = CommandSet::new();
    rsp.insert(tags::COMMAND_FIELD, Value::Us(field));
    rsp.insert(tags::MESSAGE_ID_BEING_RESPONDED_TO, Value::Us(id));
    rsp.insert(tags::COMMAND_DATA_SET_TYPE, Value::Us(dimse::command::NO_DATA_SET));
    rsp.insert(tags::STATUS, Value::Us(code));
    for (from, to) in [
        (tags::AFFECTED_SOP_CLASS_UID, tags::AFFECTED_SOP_CLASS_UID),
        (tags::REQUESTED_SOP_CLASS_UID, tags::AFFECTED_SOP_CLASS_UID),
        (tags::AFFECTED_SOP_INSTANCE_UID, tags::AFFECTED_SOP_INSTANCE_UID),
    ] {
        if let Ok(Some(uid)) = original.text(from) {
            rsp.insert(to, Value::Ui(uid.to_string()));
        }
    }
    Ok(rsp.encode())
}
