//! P-DATA value fragmentation and reassembly (PS3.8 §9.3.5 and Annex E, PS3.7 §6.3.1).
//!
//! A DIMSE message travels as a sequence of presentation data value (PDV) items: first the command set, split
//! into one or more fragments flagged *command*, the last one flagged *last*; then, when the command's Command
//! Data Set Type (0000,0800) is not `0x0101`, the data set, split the same way into fragments flagged *data*.
//! All fragments of a message use the same presentation context.
//!
//! * [`fragment`] / [`fragments`] split a payload so that every P-DATA-TF PDU carrying one fragment fits the
//!   peer's maximum PDU length.
//! * [`MessageAssembler`] turns a stream of fragments back into complete messages.
//!
//! The types here are plain structs, independent of any Upper Layer library: an adapter maps its PDV type to
//! [`PdvFragment`] (or calls [`MessageAssembler::push_parts`]).

use crate::command::{CommandSet, DecodeError};

/// Bytes of framing around each fragment assumed by [`fragment`]: the P-DATA-TF PDU header (type, reserved,
/// 4-byte length: 6 bytes) plus the PDV item header (4-byte length, presentation context ID, message control
/// header: 6 bytes).
///
/// Strictly, PS3.8 defines the negotiated Maximum Length as the length of the PDU's *variable field*, which
/// excludes the 6-byte PDU header; subtracting it as well costs 6 bytes per PDU and keeps PDUs within limit for
/// peers that read the Maximum Length as the whole PDU size.
pub const FRAGMENT_OVERHEAD: usize = 12;

/// Largest fragment payload [`fragment`] produces when the peer announced no limit (maximum length 0).
pub const UNLIMITED_FRAGMENT_PAYLOAD: usize = 16 * 1024 * 1024;

/// Default limit on an assembled data set's size (4 GiB − 1, the largest a 32-bit length can describe).
pub const DEFAULT_MAX_DATASET_LEN: usize = u32::MAX as usize;

/// Default limit on an assembled command set's size. Real command sets are a few hundred bytes.
pub const DEFAULT_MAX_COMMAND_LEN: usize = 64 * 1024;

/// One presentation data value: a fragment of a command set or data set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PdvFragment {
    /// Presentation context ID.
    pub presentation_context_id: u8,
    /// Whether the fragment belongs to the command set (message control header bit 0).
    pub is_command: bool,
    /// Whether the fragment is the last of its command set or data set (message control header bit 1).
    pub is_last: bool,
    /// The fragment's bytes.
    pub data: Vec<u8>,
}

impl PdvFragment {
    /// The message control header byte of this fragment (PS3.8 Annex E.2).
    pub fn message_control_header(&self) -> u8 {
        u8::from(self.is_command) | (u8::from(self.is_last) << 1)
    }
}

/// A fragment borrowing its bytes from the payload being split, produced by [`fragments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdvSlice<'a> {
    /// Presentation context ID.
    pub presentation_context_id: u8,
    /// Whether the fragment belongs to the command set.
    pub is_command: bool,
    /// Whether the fragment is the last of its command set or data set.
    pub is_last: bool,
    /// The fragment's bytes.
    pub data: &'a [u8],
}

impl PdvSlice<'_> {
    /// An owned copy.
    pub fn to_fragment(&self) -> PdvFragment {
        PdvFragment {
            presentation_context_id: self.presentation_context_id,
            is_command: self.is_command,
            is_last: self.is_last,
            data: self.data.to_vec(),
        }
    }
}

/// Largest fragment payload for a peer's maximum PDU length: `max_pdu_length - FRAGMENT_OVERHEAD`, at least 1
/// byte, and [`UNLIMITED_FRAGMENT_PAYLOAD`] when `max_pdu_length` is 0 (no limit).
///
/// Maximum lengths of 12 or less cannot carry any payload within limit; they are invalid and should be refused
/// during association negotiation. Here they yield 1-byte fragments rather than an error.
pub fn max_fragment_payload(max_pdu_length: u32) -> usize {
    if max_pdu_length == 0 {
        return UNLIMITED_FRAGMENT_PAYLOAD;
    }
    usize::try_from(max_pdu_length).unwrap_or(usize::MAX).saturating_sub(FRAGMENT_OVERHEAD).max(1)
}

/// Splits `bytes` into fragments that each fit one P-DATA-TF PDU within `max_pdu_length` (see
/// [`max_fragment_payload`]). Always yields at least one fragment (an empty payload gives one empty fragment);
/// only the final one has `is_last` set.
pub fn fragments(pc_id: u8, is_command: bool, bytes: &[u8], max_pdu_length: u32) -> Fragments<'_> {
    Fragments { pc_id, is_command, rest: Some(bytes), chunk: max_fragment_payload(max_pdu_length) }
}

/// Like [`fragments`], collected into owned [`PdvFragment`]s.
pub fn fragment(pc_id: u8, is_command: bool, bytes: &[u8], max_pdu_length: u32) -> Vec<PdvFragment> {
    fragments(pc_id, is_command, bytes, max_pdu_length).map(|s| s.to_fragment()).collect()
}

/// Iterator returned by [`fragments`].
#[derive(Debug, Clone)]
pub struct Fragments<'a> {
    pc_id: u8,
    is_command: bool,
    rest: Option<&'a [u8]>,
    chunk: usize,
}

impl<'a> Iterator for Fragments<'a> {
    type Item = PdvSlice<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest.take()?;
        let (data, tail) = rest.split_at(rest.len().min(self.chunk));
        let is_last = tail.is_empty();
        if !is_last {
            self.rest = Some(tail);
        }
        Some(PdvSlice { presentation_context_id: self.pc_id, is_command: self.is_command, is_last, data })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self.rest {
            None => 0,
            Some(rest) => rest.len().div_ceil(self.chunk).max(1),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Fragments<'_> {}

/// Bytes of a P-DATA-TF PDU that carries exactly one PDV item, before the item's payload:
/// the PDU header (type 04H, reserved, PDU length) and the PDV item header (item length,
/// presentation context ID, message control header), PS3.8 §9.3.5.
pub const PDATA_HEADER_LEN: usize = 12;

/// The header of a P-DATA-TF PDU carrying one fragment of `payload_len` bytes, so that a sender
/// can write `header ++ payload` straight to the socket without building a PDU value first.
///
/// `payload_len` must leave room for the headers within 32-bit lengths; fragments produced by
/// [`fragments`] always do (at most [`UNLIMITED_FRAGMENT_PAYLOAD`] bytes).
pub fn pdata_header(pc_id: u8, is_command: bool, is_last: bool, payload_len: usize) -> [u8; PDATA_HEADER_LEN] {
    let item_len = u32::try_from(payload_len + 2).expect("PDV fragment larger than 4 GiB");
    let pdu_len = item_len + 4;
    let mut h = [0u8; PDATA_HEADER_LEN];
    h[0] = 0x04;
    h[2..6].copy_from_slice(&pdu_len.to_be_bytes());
    h[6..10].copy_from_slice(&item_len.to_be_bytes());
    h[10] = pc_id;
    h[11] = u8::from(is_command) | (u8::from(is_last) << 1);
    h
}

/// Appends `bytes`, split by [`fragments`], to `out` as complete P-DATA-TF PDUs (one PDV each).
pub fn encode_pdus(out: &mut Vec<u8>, pc_id: u8, is_command: bool, bytes: &[u8], max_pdu_length: u32) {
    for f in fragments(pc_id, is_command, bytes, max_pdu_length) {
        out.extend_from_slice(&pdata_header(f.presentation_context_id, f.is_command, f.is_last, f.data.len()));
        out.extend_from_slice(f.data);
    }
}

/// A fragment sharing its bytes with the payload, produced by [`fragment_bytes`].
#[cfg(feature = "bytes")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdvBytes {
    /// Presentation context ID.
    pub presentation_context_id: u8,
    /// Whether the fragment belongs to the command set.
    pub is_command: bool,
    /// Whether the fragment is the last of its command set or data set.
    pub is_last: bool,
    /// The fragment's bytes (a zero-copy slice of the payload).
    pub data: bytes::Bytes,
}

/// Like [`fragment`], without copying: each fragment is a [`bytes::Bytes`] slice of `payload`.
#[cfg(feature = "bytes")]
pub fn fragment_bytes(pc_id: u8, is_command: bool, payload: &bytes::Bytes, max_pdu_length: u32) -> Vec<PdvBytes> {
    let mut start = 0;
    fragments(pc_id, is_command, payload, max_pdu_length)
        .map(|s| {
            let end = start + s.data.len();
            let data = payload.slice(start..end);
            start = end;
            PdvBytes {
                presentation_context_id: s.presentation_context_id,
                is_command: s.is_command,
                is_last: s.is_last,
                data,
            }
        })
        .collect()
}

/// A complete message reassembled by [`MessageAssembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledMessage {
    /// Presentation context ID shared by all fragments of the message.
    pub presentation_context_id: u8,
    /// The command set bytes (decode with [`crate::Message::decode`]).
    pub command: Vec<u8>,
    /// The data set bytes, when the command announced one.
    pub dataset: Option<Vec<u8>>,
}

impl AssembledMessage {
    /// `(presentation context ID, command bytes, data set bytes)`.
    pub fn into_parts(self) -> (u8, Vec<u8>, Option<Vec<u8>>) {
        (self.presentation_context_id, self.command, self.dataset)
    }
}

/// Why [`MessageAssembler`] rejected a fragment. After any error the assembler is reset to idle; the
/// association should normally be aborted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleError {
    /// A data fragment arrived while no command announcing a data set had been completed.
    #[error("data set fragment on presentation context {pc_id} without a preceding command that announces a data set")]
    DataWithoutCommand {
        /// Presentation context of the offending fragment.
        pc_id: u8,
    },
    /// A data fragment arrived before the last fragment of the command set.
    #[error("data set fragment on presentation context {pc_id} before the last command fragment")]
    DataBeforeCommandComplete {
        /// Presentation context of the offending fragment.
        pc_id: u8,
    },
    /// A command fragment arrived while the data set of the previous command was incomplete.
    #[error(
        "command fragment on presentation context {pc_id} while the data set of the current message is incomplete"
    )]
    CommandDuringDataSet {
        /// Presentation context of the offending fragment.
        pc_id: u8,
    },
    /// A fragment used another presentation context than the message it continues.
    #[error("fragment on presentation context {found} continues a message on presentation context {expected}")]
    PresentationContextMismatch {
        /// Presentation context of the message in progress.
        expected: u8,
        /// Presentation context of the offending fragment.
        found: u8,
    },
    /// The command set grew past the configured limit.
    #[error("command set exceeds the maximum of {limit} bytes")]
    CommandTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The data set grew past the configured limit.
    #[error("data set exceeds the maximum of {limit} bytes")]
    DataSetTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The completed command set does not decode, or lacks Command Data Set Type (0000,0800).
    #[error("invalid command set: {0}")]
    InvalidCommand(#[from] DecodeError),
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    /// Collecting command fragments.
    Command { pc_id: u8, command: Vec<u8> },
    /// Command complete, collecting data fragments.
    Data { pc_id: u8, command: Vec<u8>, dataset: Vec<u8> },
}

/// Reassembles PDV fragments into complete messages.
///
/// Enforces, per PS3.7 §6.3.1 and PS3.8 Annex E: command fragments come first and data fragments only follow a
/// complete command whose Command Data Set Type announces a data set; all fragments of a message share one
/// presentation context; the command set and data set stay under configurable size limits. Fragments may be
/// empty. Messages are not interleaved: a new command can start only once the previous message is complete.
#[derive(Debug)]
pub struct MessageAssembler {
    state: State,
    max_dataset_len: usize,
    max_command_len: usize,
}

impl Default for MessageAssembler {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_DATASET_LEN)
    }
}

impl MessageAssembler {
    /// An assembler rejecting data sets larger than `max_dataset_len` bytes (command sets are limited to
    /// [`DEFAULT_MAX_COMMAND_LEN`]; see [`MessageAssembler::with_max_command_len`]).
    pub fn new(max_dataset_len: usize) -> Self {
        Self { state: State::Idle, max_dataset_len, max_command_len: DEFAULT_MAX_COMMAND_LEN }
    }

    /// Sets the command set size limit.
    pub fn with_max_command_len(mut self, max_command_len: usize) -> Self {
        self.max_command_len = max_command_len;
        self
    }

    /// The data set size limit.
    pub fn max_dataset_len(&self) -> usize {
        self.max_dataset_len
    }

    /// The command set size limit.
    pub fn max_command_len(&self) -> usize {
        self.max_command_len
    }

    /// Whether no message is in progress (a peer may release the association only then).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle)
    }

    /// Bytes buffered for the message in progress.
    pub fn buffered_len(&self) -> usize {
        match &self.state {
            State::Idle => 0,
            State::Command { command, .. } => command.len(),
            State::Data { command, dataset, .. } => command.len() + dataset.len(),
        }
    }

    /// Drops any message in progress.
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// Feeds one fragment; returns the message it completes, if any.
    pub fn push(&mut self, fragment: PdvFragment) -> Result<Option<AssembledMessage>, AssembleError> {
        self.push_parts(fragment.presentation_context_id, fragment.is_command, fragment.is_last, &fragment.data)
    }

    /// Feeds one fragment given by its parts; returns the message it completes, if any.
    pub fn push_parts(
        &mut self,
        pc_id: u8,
        is_command: bool,
        is_last: bool,
        data: &[u8],
    ) -> Result<Option<AssembledMessage>, AssembleError> {
        let result = self.step(pc_id, is_command, is_last, data);
        if result.is_err() {
            self.state = State::Idle;
        }
        result
    }

    fn step(
        &mut self,
        pc_id: u8,
        is_command: bool,
        is_last: bool,
        data: &[u8],
    ) -> Result<Option<AssembledMessage>, AssembleError> {
        match (std::mem::take(&mut self.state), is_command) {
            (State::Idle, true) => {
                let command = append(Vec::new(), data, self.max_command_len, command_too_large)?;
                self.after_command_fragment(pc_id, command, is_last)
            }
            (State::Command { pc_id: expected, command }, true) => {
                check_pc(expected, pc_id)?;
                let command = append(command, data, self.max_command_len, command_too_large)?;
                self.after_command_fragment(pc_id, command, is_last)
            }
            (State::Data { .. }, true) => Err(AssembleError::CommandDuringDataSet { pc_id }),
            (State::Idle, false) => Err(AssembleError::DataWithoutCommand { pc_id }),
            (State::Command { .. }, false) => Err(AssembleError::DataBeforeCommandComplete { pc_id }),
            (State::Data { pc_id: expected, command, dataset }, false) => {
                check_pc(expected, pc_id)?;
                let dataset =
                    append(dataset, data, self.max_dataset_len, |limit| AssembleError::DataSetTooLarge { limit })?;
                if is_last {
                    Ok(Some(AssembledMessage { presentation_context_id: pc_id, command, dataset: Some(dataset) }))
                } else {
                    self.state = State::Data { pc_id, command, dataset };
                    Ok(None)
                }
            }
        }
    }

    fn after_command_fragment(
        &mut self,
        pc_id: u8,
        command: Vec<u8>,
        is_last: bool,
    ) -> Result<Option<AssembledMessage>, AssembleError> {
        if !is_last {
            self.state = State::Command { pc_id, command };
            return Ok(None);
        }
        if CommandSet::decode(&command)?.has_dataset()? {
            self.state = State::Data { pc_id, command, dataset: Vec::new() };
            Ok(None)
        } else {
            Ok(Some(AssembledMessage { presentation_context_id: pc_id, command, dataset: None }))
        }
    }
}

fn command_too_large(limit: usize) -> AssembleError {
    AssembleError::CommandTooLarge { limit }
}

fn check_pc(expected: u8, found: u8) -> Result<(), AssembleError> {
    if expected == found {
        Ok(())
    } else {
        Err(AssembleError::PresentationContextMismatch { expected, found })
    }
}

/// Appends `data` to `buf` unless the result would exceed `limit`.
fn append(
    mut buf: Vec<u8>,
    data: &[u8],
    limit: usize,
    too_large: impl FnOnce(usize) -> AssembleError,
) -> Result<Vec<u8>, AssembleError> {
    if data.len() > limit.saturating_sub(buf.len()) {
        return Err(too_large(limit));
    }
    buf.extend_from_slice(data);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CEchoRq, CFindRsp, CStoreRq, Message};

    fn store_rq() -> Vec<u8> {
        CStoreRq {
            message_id: 7,
            affected_sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            affected_sop_instance: "1.2.3.4.5".into(),
            ..Default::default()
        }
        .encode()
    }

    fn echo_rq() -> Vec<u8> {
        CEchoRq { message_id: 1, affected_sop_class: "1.2.840.10008.1.1".into() }.encode()
    }

    fn frag(pc: u8, cmd: bool, last: bool, data: &[u8]) -> PdvFragment {
        PdvFragment { presentation_context_id: pc, is_command: cmd, is_last: last, data: data.to_vec() }
    }

    #[test]
    fn fragment_sizes_respect_max_pdu_length() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let frags = fragment(3, false, &payload, 112);
        assert_eq!(frags.len(), 10);
        assert!(frags.iter().all(|f| f.data.len() + FRAGMENT_OVERHEAD <= 112));
        assert!(frags.iter().all(|f| f.presentation_context_id == 3 && !f.is_command));
        assert_eq!(frags.iter().filter(|f| f.is_last).count(), 1);
        assert!(frags.last().is_some_and(|f| f.is_last));
        assert_eq!(frags.concat_data(), payload);

        let exact = fragment(1, true, &payload, 1012);
        assert_eq!(exact.len(), 1);
        let plus_one = fragment(1, true, &payload, 1011);
        assert_eq!(plus_one.len(), 2);
        assert_eq!(plus_one[1].data.len(), 1);
        assert_eq!(plus_one[0].message_control_header(), 0b01);
        assert_eq!(plus_one[1].message_control_header(), 0b11);
    }

    trait ConcatData {
        fn concat_data(&self) -> Vec<u8>;
    }

    impl ConcatData for Vec<PdvFragment> {
        fn concat_data(&self) -> Vec<u8> {
            self.iter().flat_map(|f| f.data.iter().copied()).collect()
        }
    }

    #[test]
    fn fragment_edge_cases() {
        let empty = fragment(5, true, &[], 16384);
        assert_eq!(empty, vec![frag(5, true, true, &[])]);
        assert_eq!(max_fragment_payload(0), UNLIMITED_FRAGMENT_PAYLOAD);
        assert_eq!(max_fragment_payload(16384), 16372);
        assert_eq!(max_fragment_payload(5), 1);
        let tiny = fragment(1, false, b"abc", 12);
        assert_eq!(tiny.len(), 3);
        let big = vec![0u8; UNLIMITED_FRAGMENT_PAYLOAD + 1];
        let frags = fragments(1, false, &big, 0);
        assert_eq!(frags.len(), 2);
    }

    #[cfg(feature = "bytes")]
    #[test]
    fn fragment_bytes_is_zero_copy() {
        let payload = bytes::Bytes::from((0..100u8).collect::<Vec<_>>());
        let frags = fragment_bytes(1, false, &payload, 42);
        assert_eq!(frags.len(), 4);
        assert_eq!(frags[1].data.as_ptr(), payload[30..].as_ptr());
        let joined: Vec<u8> = frags.iter().flat_map(|f| f.data.iter().copied()).collect();
        assert_eq!(joined, payload.to_vec());
        assert!(frags[3].is_last && !frags[2].is_last);
    }

    #[test]
    fn assembles_fragmented_message_with_dataset() {
        let command = store_rq();
        let dataset: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut asm = MessageAssembler::new(1 << 20);
        let mut out = Vec::new();
        for f in fragment(9, true, &command, 40).into_iter().chain(fragment(9, false, &dataset, 1000)) {
            if let Some(m) = asm.push(f).unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out.len(), 1);
        assert!(asm.is_idle());
        let (pc, cmd, ds) = out.pop().unwrap().into_parts();
        assert_eq!(pc, 9);
        assert_eq!(cmd, command);
        assert_eq!(ds, Some(dataset));
        assert!(matches!(Message::decode(&cmd).unwrap(), Message::CStoreRq(_)));
    }

    #[test]
    fn assembles_message_without_dataset_and_back_to_back_messages() {
        let mut asm = MessageAssembler::default();
        let echo = echo_rq();
        let (a, b) = echo.split_at(10);
        assert_eq!(asm.push(frag(1, true, false, a)).unwrap(), None);
        assert!(!asm.is_idle());
        assert_eq!(asm.buffered_len(), 10);
        let m = asm.push(frag(1, true, true, b)).unwrap().unwrap();
        assert_eq!(m, AssembledMessage { presentation_context_id: 1, command: echo.clone(), dataset: None });
        // Next message may use another presentation context.
        assert!(asm.push(frag(3, true, true, &echo)).unwrap().is_some());
        // A pending C-FIND-RSP with an identifier, data set sent as one empty last fragment.
        let rsp =
            CFindRsp { message_id_being_responded_to: 1, status: 0xFF00, has_dataset: true, ..Default::default() };
        assert_eq!(asm.push(frag(5, true, true, &rsp.encode())).unwrap(), None);
        let m = asm.push(frag(5, false, true, &[])).unwrap().unwrap();
        assert_eq!(m.dataset, Some(Vec::new()));
    }

    #[test]
    fn rejects_out_of_order_fragments() {
        let mut asm = MessageAssembler::default();
        assert_eq!(asm.push(frag(1, false, true, b"xx")), Err(AssembleError::DataWithoutCommand { pc_id: 1 }));

        let command = store_rq();
        asm.push(frag(1, true, false, &command[..8])).unwrap();
        assert_eq!(asm.push(frag(1, false, true, b"xx")), Err(AssembleError::DataBeforeCommandComplete { pc_id: 1 }));
        assert!(asm.is_idle(), "errors reset the assembler");

        asm.push(frag(1, true, true, &command)).unwrap();
        assert_eq!(asm.push(frag(1, true, true, &command)), Err(AssembleError::CommandDuringDataSet { pc_id: 1 }));

        // A command announcing no data set, then a data fragment.
        assert!(asm.push(frag(1, true, true, &echo_rq())).unwrap().is_some());
        assert_eq!(asm.push(frag(1, false, true, b"xx")), Err(AssembleError::DataWithoutCommand { pc_id: 1 }));
    }

    #[test]
    fn rejects_presentation_context_changes() {
        let command = store_rq();
        let mut asm = MessageAssembler::default();
        asm.push(frag(1, true, false, &command[..4])).unwrap();
        assert_eq!(
            asm.push(frag(3, true, true, &command[4..])),
            Err(AssembleError::PresentationContextMismatch { expected: 1, found: 3 })
        );
        asm.push(frag(1, true, true, &command)).unwrap();
        asm.push(frag(1, false, false, b"ab")).unwrap();
        assert_eq!(
            asm.push(frag(5, false, true, b"cd")),
            Err(AssembleError::PresentationContextMismatch { expected: 1, found: 5 })
        );
    }

    #[test]
    fn enforces_size_limits() {
        let command = store_rq();
        let mut asm = MessageAssembler::new(10);
        asm.push(frag(1, true, true, &command)).unwrap();
        asm.push(frag(1, false, false, &[0; 6])).unwrap();
        asm.push(frag(1, false, false, &[0; 4])).unwrap();
        assert_eq!(asm.push(frag(1, false, true, &[0; 1])), Err(AssembleError::DataSetTooLarge { limit: 10 }));
        assert!(asm.is_idle());

        let mut asm = MessageAssembler::new(10).with_max_command_len(16);
        asm.push(frag(1, true, false, &command[..16])).unwrap();
        assert_eq!(asm.push(frag(1, true, true, &command[16..])), Err(AssembleError::CommandTooLarge { limit: 16 }));
        assert_eq!(asm.max_command_len(), 16);
        assert_eq!(asm.max_dataset_len(), 10);
    }

    #[test]
    fn rejects_invalid_command_sets() {
        let mut asm = MessageAssembler::default();
        let err = asm.push(frag(1, true, true, &[1, 2, 3])).unwrap_err();
        assert!(matches!(err, AssembleError::InvalidCommand(DecodeError::Truncated { .. })), "{err}");
        // Well-formed but without CommandDataSetType.
        let mut cs = CommandSet::new();
        cs.insert(crate::command::tags::COMMAND_FIELD, crate::command::Value::Us(0x0030));
        let err = asm.push(frag(1, true, true, &cs.encode())).unwrap_err();
        assert_eq!(err.to_string(), "invalid command set: missing required element CommandDataSetType (0000,0800)");
        asm.reset();
        assert!(asm.is_idle());
    }
}
