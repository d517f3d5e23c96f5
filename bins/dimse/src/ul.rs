//! Receiving whole DIMSE messages from a `dicom-ul` association (feature `ul`).
//!
//! Every DIMSE peer has the same loop: read a PDU, feed each of its P-DATA values to a
//! [`MessageAssembler`], stop when a command set (and its data set, when it announces one) is
//! complete, and hand anything that is not P-DATA (release request, abort) to the association
//! logic. [`MessageReader`] is that loop, once, for servers and clients alike:
//!
//! ```text
//! assoc.receive() ─► P-DATA PDVs ─► queue ─► MessageAssembler ─► Received::Message
//!                 └► other PDU ────────────────────────────────► Received::Pdu
//! ```
//!
//! # Behavior
//! - P-DATA values that follow a completed message in the same PDU stay queued for the next
//!   call: a PDU may end one message and begin the next.
//! - [`MessageReader::receive`] is cancel-safe: its only await point is the association's
//!   `receive`, and the reader's state changes only after a PDU has arrived, so a caller may
//!   poll it once (`now_or_never`) to look at what has already been received, or race it with
//!   a timeout, without losing data.
//! - An assembly error leaves the reader idle (see [`MessageAssembler`]); the association
//!   should then be aborted.
//!
//! The rest of this crate stays independent of any Upper Layer implementation; this module is
//! the adapter to `dicom-ul`.

use crate::pdv::{AssembleError, AssembledMessage, MessageAssembler};
use dicom_ul::association::AsyncAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::Pdu;
use std::collections::VecDeque;
use std::time::Duration;

/// What [`MessageReader::receive`] got.
#[derive(Debug)]
pub enum Received {
    /// A complete message: command set and, when announced, data set.
    Message(AssembledMessage),
    /// A PDU that is not P-DATA (A-RELEASE-RQ, A-ABORT, ...), for the association logic.
    Pdu(Pdu),
}

/// Why no message could be received.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// Reading a PDU from the association failed (network error, malformed PDU, timeout of
    /// the association's own read timeout).
    #[error("receiving a PDU failed")]
    Network(#[source] dicom_ul::association::Error),
    /// No PDU arrived within the time given.
    #[error("no PDU arrived for {} s", .0.as_secs())]
    Timeout(Duration),
    /// The P-DATA values broke the fragment rules of PS3.8 Annex E.
    #[error(transparent)]
    Assemble(#[from] AssembleError),
}

/// Assembles complete DIMSE messages from the PDUs of an association.
#[derive(Debug)]
pub struct MessageReader {
    assembler: MessageAssembler,
    queued: VecDeque<PDataValue>,
}

impl MessageReader {
    /// A reader accepting data sets up to `max_dataset_len` bytes.
    pub fn new(max_dataset_len: usize) -> Self {
        Self::with_assembler(MessageAssembler::new(max_dataset_len))
    }

    /// A reader around a configured assembler.
    pub fn with_assembler(assembler: MessageAssembler) -> Self {
        Self { assembler, queued: VecDeque::new() }
    }

    /// Takes a received PDU: P-DATA values are queued for [`MessageReader::next_queued`];
    /// any other PDU is given back.
    pub fn push_pdu(&mut self, pdu: Pdu) -> Option<Pdu> {
        match pdu {
            Pdu::PData { data } => {
                self.queued.extend(data);
                None
            }
            other => Some(other),
        }
    }

    /// Feeds queued P-DATA values to the assembler until a message is complete (values after
    /// it stay queued); `None` when the queue ran out first.
    pub fn next_queued(&mut self) -> Result<Option<AssembledMessage>, AssembleError> {
        while let Some(v) = self.queued.pop_front() {
            let is_command = v.value_type == PDataValueType::Command;
            match self.assembler.push_parts(v.presentation_context_id, is_command, v.is_last, &v.data) {
                Ok(Some(message)) => return Ok(Some(message)),
                Ok(None) => {}
                Err(e) => {
                    self.queued.clear();
                    return Err(e);
                }
            }
        }
        Ok(None)
    }

    /// Receives until a message is complete or a PDU other than P-DATA arrives, waiting at
    /// most `timeout` for each PDU (`None`: only the association's own read timeout).
    pub async fn receive<A, S>(&mut self, assoc: &mut A, timeout: Option<Duration>) -> Result<Received, ReceiveError>
    where
        A: AsyncAssociation<S> + Send,
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        loop {
            if let Some(message) = self.next_queued()? {
                return Ok(Received::Message(message));
            }
            let pdu = match timeout {
                None => AsyncAssociation::receive(assoc).await.map_err(ReceiveError::Network)?,
                Some(t) => tokio::time::timeout(t, AsyncAssociation::receive(assoc))
                    .await
                    .map_err(|_| ReceiveError::Timeout(t))?
                    .map_err(ReceiveError::Network)?,
            };
            if let Some(other) = self.push_pdu(pdu) {
                return Ok(Received::Pdu(other));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CEchoRq, CEchoRsp, Message};

    fn pdvs(pc: u8, message: &Message, max: u32) -> Vec<PDataValue> {
        let command = message.encode();
        crate::pdv::fragments(pc, true, &command, max)
            .map(|f| PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: f.is_last,
                data: f.data.to_vec(),
            })
            .collect()
    }

    fn echo(id: u16) -> Message {
        Message::from(CEchoRq { message_id: id, affected_sop_class: "1.2.840.10008.1.1".into() })
    }

    #[test]
    fn messages_sharing_a_pdu_come_out_one_by_one() {
        let mut reader = MessageReader::new(1 << 20);
        let mut data = pdvs(1, &echo(1), 16_384);
        data.extend(pdvs(3, &echo(2), 16_384));
        assert!(reader.push_pdu(Pdu::PData { data }).is_none());
        let first = reader.next_queued().unwrap().unwrap();
        assert_eq!((first.presentation_context_id, Message::decode(&first.command).unwrap()), (1, echo(1)));
        let second = reader.next_queued().unwrap().unwrap();
        assert_eq!((second.presentation_context_id, Message::decode(&second.command).unwrap()), (3, echo(2)));
        assert!(reader.next_queued().unwrap().is_none());
    }

    #[test]
    fn a_message_spread_over_pdus_completes_with_its_data_set() {
        let rsp = Message::from(CEchoRsp {
            message_id_being_responded_to: 7,
            affected_sop_class: Some("1.2.840.10008.1.1".into()),
            status: 0,
            error_comment: None,
        });
        // A command with a data set (the echo response has none: mark one by hand).
        let mut command = rsp.to_command_set();
        command.insert(crate::command::tags::COMMAND_DATA_SET_TYPE, crate::Value::Us(0x0000));
        let bytes = command.encode();
        let dataset: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let mut reader = MessageReader::new(1 << 20);
        let mut all: Vec<PDataValue> = crate::pdv::fragments(5, true, &bytes, 1024)
            .map(|f| PDataValue {
                presentation_context_id: 5,
                value_type: PDataValueType::Command,
                is_last: f.is_last,
                data: f.data.to_vec(),
            })
            .collect();
        all.extend(crate::pdv::fragments(5, false, &dataset, 1024).map(|f| PDataValue {
            presentation_context_id: 5,
            value_type: PDataValueType::Data,
            is_last: f.is_last,
            data: f.data.to_vec(),
        }));
        let mut done = None;
        for v in all {
            assert!(done.is_none(), "complete before its last fragment");
            reader.push_pdu(Pdu::PData { data: vec![v] });
            done = reader.next_queued().unwrap();
        }
        let message = done.expect("complete after the last fragment");
        assert_eq!(message.dataset.as_deref(), Some(&dataset[..]));
        assert_eq!(message.command, bytes);
    }

    #[test]
    fn other_pdus_are_given_back_and_errors_clear_the_queue() {
        let mut reader = MessageReader::new(1 << 20);
        assert!(matches!(reader.push_pdu(Pdu::ReleaseRQ), Some(Pdu::ReleaseRQ)));
        // A data fragment with no command before it, then a valid message: the error drops both.
        let mut data = vec![PDataValue {
            presentation_context_id: 1,
            value_type: PDataValueType::Data,
            is_last: true,
            data: vec![1, 2],
        }];
        data.extend(pdvs(1, &echo(1), 16_384));
        reader.push_pdu(Pdu::PData { data });
        assert!(reader.next_queued().is_err());
        assert!(reader.next_queued().unwrap().is_none());
    }
}
