//! DIMSE command sets (PS3.7 §6.3, §9.3, §10.3 and Annex E).
//!
//! A command set is a list of group 0000 data elements, always encoded Implicit VR Little Endian whatever the
//! negotiated transfer syntax. This module provides:
//!
//! * [`CommandSet`], a generic ordered map from element number (the `eeee` of `(0000,eeee)`) to a typed
//!   [`Value`], with a hand-written codec ([`CommandSet::decode`], [`CommandSet::encode`]);
//! * the element dictionary ([`tags`], [`vr_of`], [`element_name`]);
//! * [`CommandField`] and [`Priority`];
//! * one struct per supported DIMSE message, each with `from_command_set` / `to_command_set` / `encode`;
//! * [`Message`], the enum over all of them, dispatching on the command field;
//! * [`DecodeError`].
//!
//! Decoding is defensive: every length is checked against the remaining input before it is used, allocations are
//! bounded by the input size, and no input can make it panic.

use std::collections::BTreeMap;
use std::fmt;

// ---------------------------------------------------------------------------------------------------------------
// Dictionary
// ---------------------------------------------------------------------------------------------------------------

/// Element numbers of the command group (the `eeee` of `(0000,eeee)`), PS3.7 Annex E.
pub mod tags {
    /// Command Group Length (0000,0000), UL. Computed by the encoder, never stored in a command set.
    pub const COMMAND_GROUP_LENGTH: u16 = 0x0000;
    /// Affected SOP Class UID (0000,0002), UI.
    pub const AFFECTED_SOP_CLASS_UID: u16 = 0x0002;
    /// Requested SOP Class UID (0000,0003), UI.
    pub const REQUESTED_SOP_CLASS_UID: u16 = 0x0003;
    /// Command Field (0000,0100), US.
    pub const COMMAND_FIELD: u16 = 0x0100;
    /// Message ID (0000,0110), US.
    pub const MESSAGE_ID: u16 = 0x0110;
    /// Message ID Being Responded To (0000,0120), US.
    pub const MESSAGE_ID_BEING_RESPONDED_TO: u16 = 0x0120;
    /// Move Destination (0000,0600), AE.
    pub const MOVE_DESTINATION: u16 = 0x0600;
    /// Priority (0000,0700), US.
    pub const PRIORITY: u16 = 0x0700;
    /// Command Data Set Type (0000,0800), US.
    pub const COMMAND_DATA_SET_TYPE: u16 = 0x0800;
    /// Status (0000,0900), US.
    pub const STATUS: u16 = 0x0900;
    /// Offending Element (0000,0901), AT.
    pub const OFFENDING_ELEMENT: u16 = 0x0901;
    /// Error Comment (0000,0902), LO.
    pub const ERROR_COMMENT: u16 = 0x0902;
    /// Error ID (0000,0903), US.
    pub const ERROR_ID: u16 = 0x0903;
    /// Affected SOP Instance UID (0000,1000), UI.
    pub const AFFECTED_SOP_INSTANCE_UID: u16 = 0x1000;
    /// Requested SOP Instance UID (0000,1001), UI.
    pub const REQUESTED_SOP_INSTANCE_UID: u16 = 0x1001;
    /// Event Type ID (0000,1002), US.
    pub const EVENT_TYPE_ID: u16 = 0x1002;
    /// Attribute Identifier List (0000,1005), AT.
    pub const ATTRIBUTE_IDENTIFIER_LIST: u16 = 0x1005;
    /// Action Type ID (0000,1008), US.
    pub const ACTION_TYPE_ID: u16 = 0x1008;
    /// Number of Remaining Sub-operations (0000,1020), US.
    pub const NUMBER_OF_REMAINING_SUBOPERATIONS: u16 = 0x1020;
    /// Number of Completed Sub-operations (0000,1021), US.
    pub const NUMBER_OF_COMPLETED_SUBOPERATIONS: u16 = 0x1021;
    /// Number of Failed Sub-operations (0000,1022), US.
    pub const NUMBER_OF_FAILED_SUBOPERATIONS: u16 = 0x1022;
    /// Number of Warning Sub-operations (0000,1023), US.
    pub const NUMBER_OF_WARNING_SUBOPERATIONS: u16 = 0x1023;
    /// Move Originator Application Entity Title (0000,1030), AE.
    pub const MOVE_ORIGINATOR_AE_TITLE: u16 = 0x1030;
    /// Move Originator Message ID (0000,1031), US.
    pub const MOVE_ORIGINATOR_MESSAGE_ID: u16 = 0x1031;
}

/// Value Representations that occur in (non-retired) command set elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vr {
    /// Unique Identifier: ASCII, padded with NUL to even length.
    UI,
    /// Unsigned Short: one 16-bit value.
    US,
    /// Unsigned Long: one 32-bit value.
    UL,
    /// Application Entity title: text, padded with space.
    AE,
    /// Long String: text, padded with space.
    LO,
    /// Attribute Tag: a list of (group, element) pairs.
    AT,
    /// An element this crate does not know (retired or private to a newer edition): kept as raw bytes.
    Unknown,
}

impl fmt::Display for Vr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vr::UI => "UI",
            Vr::US => "US",
            Vr::UL => "UL",
            Vr::AE => "AE",
            Vr::LO => "LO",
            Vr::AT => "AT",
            Vr::Unknown => "unknown VR",
        })
    }
}

/// The VR of a known command element, `None` for elements this crate does not know.
pub fn vr_of(element: u16) -> Option<Vr> {
    use tags::*;
    Some(match element {
        COMMAND_GROUP_LENGTH => Vr::UL,
        AFFECTED_SOP_CLASS_UID | REQUESTED_SOP_CLASS_UID | AFFECTED_SOP_INSTANCE_UID | REQUESTED_SOP_INSTANCE_UID => {
            Vr::UI
        }
        COMMAND_FIELD
        | MESSAGE_ID
        | MESSAGE_ID_BEING_RESPONDED_TO
        | PRIORITY
        | COMMAND_DATA_SET_TYPE
        | STATUS
        | ERROR_ID
        | EVENT_TYPE_ID
        | ACTION_TYPE_ID
        | NUMBER_OF_REMAINING_SUBOPERATIONS
        | NUMBER_OF_COMPLETED_SUBOPERATIONS
        | NUMBER_OF_FAILED_SUBOPERATIONS
        | NUMBER_OF_WARNING_SUBOPERATIONS
        | MOVE_ORIGINATOR_MESSAGE_ID => Vr::US,
        MOVE_DESTINATION | MOVE_ORIGINATOR_AE_TITLE => Vr::AE,
        ERROR_COMMENT => Vr::LO,
        OFFENDING_ELEMENT | ATTRIBUTE_IDENTIFIER_LIST => Vr::AT,
        _ => return None,
    })
}

/// The keyword of a known command element (e.g. `"CommandField"`), `None` for unknown elements.
pub fn element_name(element: u16) -> Option<&'static str> {
    use tags::*;
    Some(match element {
        COMMAND_GROUP_LENGTH => "CommandGroupLength",
        AFFECTED_SOP_CLASS_UID => "AffectedSOPClassUID",
        REQUESTED_SOP_CLASS_UID => "RequestedSOPClassUID",
        COMMAND_FIELD => "CommandField",
        MESSAGE_ID => "MessageID",
        MESSAGE_ID_BEING_RESPONDED_TO => "MessageIDBeingRespondedTo",
        MOVE_DESTINATION => "MoveDestination",
        PRIORITY => "Priority",
        COMMAND_DATA_SET_TYPE => "CommandDataSetType",
        STATUS => "Status",
        OFFENDING_ELEMENT => "OffendingElement",
        ERROR_COMMENT => "ErrorComment",
        ERROR_ID => "ErrorID",
        AFFECTED_SOP_INSTANCE_UID => "AffectedSOPInstanceUID",
        REQUESTED_SOP_INSTANCE_UID => "RequestedSOPInstanceUID",
        EVENT_TYPE_ID => "EventTypeID",
        ATTRIBUTE_IDENTIFIER_LIST => "AttributeIdentifierList",
        ACTION_TYPE_ID => "ActionTypeID",
        NUMBER_OF_REMAINING_SUBOPERATIONS => "NumberOfRemainingSuboperations",
        NUMBER_OF_COMPLETED_SUBOPERATIONS => "NumberOfCompletedSuboperations",
        NUMBER_OF_FAILED_SUBOPERATIONS => "NumberOfFailedSuboperations",
        NUMBER_OF_WARNING_SUBOPERATIONS => "NumberOfWarningSuboperations",
        MOVE_ORIGINATOR_AE_TITLE => "MoveOriginatorApplicationEntityTitle",
        MOVE_ORIGINATOR_MESSAGE_ID => "MoveOriginatorMessageID",
        _ => return None,
    })
}

/// Displays a command element as `Keyword (0000,eeee)`, or `(0000,eeee)` when unknown.
struct ElementLabel(u16);

impl fmt::Display for ElementLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match element_name(self.0) {
            Some(name) => write!(f, "{name} (0000,{:04X})", self.0),
            None => write!(f, "(0000,{:04X})", self.0),
        }
    }
}

fn label(element: &u16) -> ElementLabel {
    ElementLabel(*element)
}

/// Command Data Set Type value meaning "no data set follows the command" (PS3.7 Annex E).
pub const NO_DATA_SET: u16 = 0x0101;
/// Command Data Set Type value this crate writes when a data set follows (any value but `0x0101` means that;
/// `0x0001` is what dcmtk and pynetdicom send).
pub const DATA_SET_PRESENT: u16 = 0x0001;

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

/// Why a command set or DIMSE message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends in the middle of an element header.
    #[error("truncated command set: element header at offset {offset} needs 8 bytes, only {available} left")]
    Truncated {
        /// Offset of the incomplete header.
        offset: usize,
        /// Bytes left from that offset.
        available: usize,
    },
    /// An element's value length runs past the end of the input.
    #[error("value length {length} of element {} at offset {offset} runs past the end of the command set ({available} bytes left)", label(.element))]
    LengthPastEnd {
        /// Element number.
        element: u16,
        /// Offset of the element header.
        offset: usize,
        /// Declared value length.
        length: u32,
        /// Bytes left after the header.
        available: usize,
    },
    /// An element has undefined length (0xFFFFFFFF), which command sets never use.
    #[error("element {} has undefined length, not allowed in a command set", label(.element))]
    UndefinedLength {
        /// Element number.
        element: u16,
    },
    /// A value length is not valid for the element's VR (US must be 2, UL 4, AT a multiple of 4, …).
    #[error("bad value length {length} for {vr} element {}", label(.element))]
    BadLength {
        /// Element number.
        element: u16,
        /// The element's VR.
        vr: Vr,
        /// Declared value length.
        length: u32,
    },
    /// An element outside group 0000 appears in the command set.
    #[error("element ({group:04X},{element:04X}) at offset {offset} is outside command group 0000")]
    OutsideCommandGroup {
        /// Group number found.
        group: u16,
        /// Element number found.
        element: u16,
        /// Offset of the element header.
        offset: usize,
    },
    /// Command Group Length (0000,0000) does not match the number of bytes that follow it.
    #[error("command group length mismatch: (0000,0000) declares {declared} bytes but {actual} follow")]
    GroupLengthMismatch {
        /// Value of (0000,0000).
        declared: u32,
        /// Bytes actually following the group length element.
        actual: usize,
    },
    /// Command Group Length (0000,0000) is present but not the first element.
    #[error("command group length (0000,0000) at offset {offset} is not the first element")]
    MisplacedGroupLength {
        /// Offset of the element header.
        offset: usize,
    },
    /// The same element appears twice.
    #[error("duplicate element {}", label(.element))]
    DuplicateElement {
        /// Element number.
        element: u16,
    },
    /// A UI value contains bytes outside ASCII.
    #[error("element {} holds a non-ASCII UID", label(.element))]
    NonAsciiUid {
        /// Element number.
        element: u16,
    },
    /// A required element is absent.
    #[error("missing required element {name} (0000,{element:04X})")]
    MissingElement {
        /// Keyword of the missing element.
        name: &'static str,
        /// Element number.
        element: u16,
    },
    /// An element holds a value of another VR than the one asked for (only possible in hand-built command sets).
    #[error("element {} holds a {found} value, expected {expected}", label(.element))]
    WrongValueType {
        /// Element number.
        element: u16,
        /// VR the reader expected.
        expected: Vr,
        /// VR of the stored value.
        found: Vr,
    },
    /// Command Field (0000,0100) holds a value that is no DIMSE command.
    #[error("unknown command field 0x{0:04X}")]
    UnknownCommandField(u16),
    /// A typed message was decoded from a command set carrying another command.
    #[error("expected command field {expected}, found 0x{found:04X}")]
    UnexpectedCommandField {
        /// The command the typed message represents.
        expected: CommandField,
        /// The command field found.
        found: u16,
    },
    /// Priority (0000,0700) holds a value other than LOW, MEDIUM or HIGH.
    #[error("invalid priority 0x{0:04X} (expected 0x0000, 0x0001 or 0x0002)")]
    InvalidPriority(u16),
    /// Command Data Set Type (0000,0800) announces a data set for a message that must not have one, or no data
    /// set for a message that must have one.
    #[error("command data set type 0x{data_set_type:04X} is not allowed for {command}")]
    DataSetTypeMismatch {
        /// The command.
        command: CommandField,
        /// The Command Data Set Type value found.
        data_set_type: u16,
    },
}

// ---------------------------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------------------------

/// An attribute tag, the value type of AT elements such as Offending Element (0000,0901).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AttributeTag {
    /// Group number.
    pub group: u16,
    /// Element number.
    pub element: u16,
}

impl fmt::Display for AttributeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:04X},{:04X})", self.group, self.element)
    }
}

/// The typed value of one command element.
///
/// Text values are stored without their padding: decoding strips trailing NUL and space (and leading space
/// for AE), encoding pads to even length again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A UID (UI). Must be ASCII to decode.
    Ui(String),
    /// An unsigned short (US).
    Us(u16),
    /// An unsigned long (UL).
    Ul(u32),
    /// An application entity title (AE).
    Ae(String),
    /// A long string (LO).
    Lo(String),
    /// A list of attribute tags (AT).
    At(Vec<AttributeTag>),
    /// The raw bytes of an element this crate does not know (always of even length when decoded).
    Other(Vec<u8>),
}

impl Value {
    /// The VR of this value ([`Vr::Unknown`] for [`Value::Other`]).
    pub fn vr(&self) -> Vr {
        match self {
            Value::Ui(_) => Vr::UI,
            Value::Us(_) => Vr::US,
            Value::Ul(_) => Vr::UL,
            Value::Ae(_) => Vr::AE,
            Value::Lo(_) => Vr::LO,
            Value::At(_) => Vr::AT,
            Value::Other(_) => Vr::Unknown,
        }
    }

    /// The value's text, for UI, AE and LO values.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Ui(s) | Value::Ae(s) | Value::Lo(s) => Some(s),
            _ => None,
        }
    }

    /// Length of the encoded, padded value.
    fn encoded_len(&self) -> usize {
        let raw = match self {
            Value::Ui(s) | Value::Ae(s) | Value::Lo(s) => s.len(),
            Value::Us(_) => 2,
            Value::Ul(_) => 4,
            Value::At(tags) => tags.len().saturating_mul(4),
            Value::Other(bytes) => bytes.len(),
        };
        raw.saturating_add(raw & 1).min(MAX_VALUE_LEN)
    }

    /// Appends the padded value (at most [`MAX_VALUE_LEN`] bytes).
    fn write(&self, out: &mut Vec<u8>) {
        let len = self.encoded_len();
        let start = out.len();
        match self {
            Value::Ui(s) => push_padded(out, s.as_bytes(), 0, len),
            Value::Ae(s) | Value::Lo(s) => push_padded(out, s.as_bytes(), b' ', len),
            Value::Other(bytes) => push_padded(out, bytes, 0, len),
            Value::Us(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Ul(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::At(tags) => {
                for tag in tags.iter().take(len / 4) {
                    out.extend_from_slice(&tag.group.to_le_bytes());
                    out.extend_from_slice(&tag.element.to_le_bytes());
                }
            }
        }
        debug_assert_eq!(out.len() - start, len);
    }
}

/// Largest value this crate encodes: the largest even length below the undefined-length marker. Longer values
/// (over 4 GiB, never meaningful in a command set) are truncated.
const MAX_VALUE_LEN: usize = 0xFFFF_FFFE;

fn push_padded(out: &mut Vec<u8>, bytes: &[u8], pad: u8, len: usize) {
    let take = bytes.len().min(len);
    out.extend_from_slice(&bytes[..take]);
    out.resize(out.len() + (len - take), pad);
}

fn trim_end_padding(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != 0 && b != b' ').map_or(0, |i| i + 1);
    &bytes[..end]
}

fn trim_start_spaces(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0 && b != b' ').unwrap_or(bytes.len());
    &bytes[start..]
}

fn decode_value(element: u16, bytes: &[u8]) -> Result<Value, DecodeError> {
    let vr = vr_of(element).unwrap_or(Vr::Unknown);
    let length = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let bad_length = || DecodeError::BadLength { element, vr, length };
    Ok(match vr {
        Vr::US => Value::Us(u16::from_le_bytes(bytes.try_into().map_err(|_| bad_length())?)),
        Vr::UL => Value::Ul(u32::from_le_bytes(bytes.try_into().map_err(|_| bad_length())?)),
        Vr::UI => {
            let trimmed = trim_end_padding(bytes);
            if !trimmed.is_ascii() {
                return Err(DecodeError::NonAsciiUid { element });
            }
            Value::Ui(String::from_utf8_lossy(trimmed).into_owned())
        }
        Vr::AE => Value::Ae(String::from_utf8_lossy(trim_start_spaces(trim_end_padding(bytes))).into_owned()),
        Vr::LO => Value::Lo(String::from_utf8_lossy(trim_end_padding(bytes)).into_owned()),
        Vr::AT => {
            if bytes.len() % 4 != 0 {
                return Err(bad_length());
            }
            Value::At(
                bytes
                    .chunks_exact(4)
                    .map(|c| AttributeTag {
                        group: u16::from_le_bytes([c[0], c[1]]),
                        element: u16::from_le_bytes([c[2], c[3]]),
                    })
                    .collect(),
            )
        }
        Vr::Unknown => {
            if bytes.len() % 2 != 0 {
                return Err(bad_length());
            }
            Value::Other(bytes.to_vec())
        }
    })
}

// ---------------------------------------------------------------------------------------------------------------
// CommandSet
// ---------------------------------------------------------------------------------------------------------------

/// A generic command set: group 0000 elements keyed by element number, kept in ascending order.
///
/// Command Group Length (0000,0000) is never stored: [`CommandSet::decode`] validates and drops it,
/// [`CommandSet::encode`] computes it (an entry inserted by hand under element 0 is ignored by the encoder).
///
/// On decode, each element's [`Value`] variant follows the dictionary ([`vr_of`]); unknown elements become
/// [`Value::Other`]. The encoder writes each value as its variant says, so a hand-built set whose variants
/// disagree with the dictionary encodes fine but may not decode back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandSet {
    elements: BTreeMap<u16, Value>,
}

impl CommandSet {
    /// An empty command set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes an Implicit VR Little Endian command set.
    ///
    /// Validates Command Group Length (0000,0000) when present (it must be the first element and equal the
    /// number of bytes after it; this is checked after all elements, so element errors are reported first) and
    /// rejects elements outside group 0000, truncated headers, lengths past the
    /// end, undefined lengths, bad lengths for US/UL/AT, duplicate elements and non-ASCII UIDs.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut elements = BTreeMap::new();
        let mut group_length = None;
        let mut offset = 0usize;
        while offset < bytes.len() {
            let available = bytes.len() - offset;
            let Some(header) = bytes.get(offset..offset + 8) else {
                return Err(DecodeError::Truncated { offset, available });
            };
            let group = u16::from_le_bytes([header[0], header[1]]);
            let element = u16::from_le_bytes([header[2], header[3]]);
            let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            if group != 0 {
                return Err(DecodeError::OutsideCommandGroup { group, element, offset });
            }
            if length == u32::MAX {
                return Err(DecodeError::UndefinedLength { element });
            }
            let value_start = offset + 8;
            let after_header = available - 8;
            let len = match usize::try_from(length) {
                Ok(len) if len <= after_header => len,
                _ => return Err(DecodeError::LengthPastEnd { element, offset, length, available: after_header }),
            };
            let value = &bytes[value_start..value_start + len];
            let next = value_start + len;
            if element == tags::COMMAND_GROUP_LENGTH {
                if offset != 0 {
                    return Err(DecodeError::MisplacedGroupLength { offset });
                }
                let declared = match <[u8; 4]>::try_from(value) {
                    Ok(v) => u32::from_le_bytes(v),
                    Err(_) => return Err(DecodeError::BadLength { element, vr: Vr::UL, length }),
                };
                group_length = Some(declared);
            } else {
                if elements.contains_key(&element) {
                    return Err(DecodeError::DuplicateElement { element });
                }
                elements.insert(element, decode_value(element, value)?);
            }
            offset = next;
        }
        // Checked last, so that a more specific error about an element wins. When present, the group length
        // element is the first one: 12 bytes.
        if let Some(declared) = group_length {
            let actual = bytes.len() - 12;
            if usize::try_from(declared).ok() != Some(actual) {
                return Err(DecodeError::GroupLengthMismatch { declared, actual });
            }
        }
        Ok(CommandSet { elements })
    }

    /// Encodes the command set: Command Group Length first, then every element in ascending order, values
    /// padded to even length (UI and unknown values with NUL, AE and LO with space).
    pub fn encode(&self) -> Vec<u8> {
        let body_len: usize = self.values().map(|(_, v)| 8usize.saturating_add(v.encoded_len())).sum();
        let mut out = Vec::with_capacity(12usize.saturating_add(body_len));
        write_header(&mut out, tags::COMMAND_GROUP_LENGTH, 4);
        out.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
        for (element, value) in self.values() {
            let len = value.encoded_len();
            // `encoded_len` is capped at MAX_VALUE_LEN, which fits in u32.
            write_header(&mut out, element, u32::try_from(len).unwrap_or(u32::MAX - 1));
            value.write(&mut out);
        }
        out
    }

    /// Elements to encode: everything but a hand-inserted group length.
    fn values(&self) -> impl Iterator<Item = (u16, &Value)> {
        self.iter().filter(|(e, _)| *e != tags::COMMAND_GROUP_LENGTH)
    }

    /// The value of an element.
    pub fn get(&self, element: u16) -> Option<&Value> {
        self.elements.get(&element)
    }

    /// Sets an element, returning its previous value.
    pub fn insert(&mut self, element: u16, value: Value) -> Option<Value> {
        self.elements.insert(element, value)
    }

    /// Removes an element, returning its value.
    pub fn remove(&mut self, element: u16) -> Option<Value> {
        self.elements.remove(&element)
    }

    /// Whether an element is present.
    pub fn contains(&self, element: u16) -> bool {
        self.elements.contains_key(&element)
    }

    /// The elements in ascending element order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &Value)> {
        self.elements.iter().map(|(e, v)| (*e, v))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// Whether the set has no element.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// A US element's value; `Ok(None)` when absent, an error when it holds another type.
    pub fn us(&self, element: u16) -> Result<Option<u16>, DecodeError> {
        match self.get(element) {
            None => Ok(None),
            Some(Value::Us(v)) => Ok(Some(*v)),
            Some(other) => Err(wrong_type(element, Vr::US, other)),
        }
    }

    /// A UL element's value; `Ok(None)` when absent, an error when it holds another type.
    pub fn ul(&self, element: u16) -> Result<Option<u32>, DecodeError> {
        match self.get(element) {
            None => Ok(None),
            Some(Value::Ul(v)) => Ok(Some(*v)),
            Some(other) => Err(wrong_type(element, Vr::UL, other)),
        }
    }

    /// A text element's value (UI, AE or LO, whichever the dictionary gives for `element`; any text for
    /// unknown elements); `Ok(None)` when absent, an error when it holds another type.
    pub fn text(&self, element: u16) -> Result<Option<&str>, DecodeError> {
        let Some(value) = self.get(element) else { return Ok(None) };
        let expected = vr_of(element);
        match (value, expected) {
            (Value::Ui(s), Some(Vr::UI) | None) | (Value::Ae(s), Some(Vr::AE) | None) => Ok(Some(s)),
            (Value::Lo(s), Some(Vr::LO) | None) => Ok(Some(s)),
            (other, expected) => Err(wrong_type(element, expected.unwrap_or(Vr::LO), other)),
        }
    }

    /// An AT element's tags; `Ok(None)` when absent, an error when it holds another type.
    pub fn tags(&self, element: u16) -> Result<Option<&[AttributeTag]>, DecodeError> {
        match self.get(element) {
            None => Ok(None),
            Some(Value::At(v)) => Ok(Some(v)),
            Some(other) => Err(wrong_type(element, Vr::AT, other)),
        }
    }

    /// The raw Command Field (0000,0100) value.
    pub fn command_field_raw(&self) -> Result<u16, DecodeError> {
        self.require_us(tags::COMMAND_FIELD)
    }

    /// The Command Field (0000,0100).
    pub fn command_field(&self) -> Result<CommandField, DecodeError> {
        let raw = self.command_field_raw()?;
        CommandField::from_u16(raw).ok_or(DecodeError::UnknownCommandField(raw))
    }

    /// The raw Command Data Set Type (0000,0800) value.
    pub fn data_set_type(&self) -> Result<u16, DecodeError> {
        self.require_us(tags::COMMAND_DATA_SET_TYPE)
    }

    /// Whether a data set follows this command (Command Data Set Type other than `0x0101`).
    pub fn has_dataset(&self) -> Result<bool, DecodeError> {
        Ok(self.data_set_type()? != NO_DATA_SET)
    }

    fn require_us(&self, element: u16) -> Result<u16, DecodeError> {
        self.us(element)?.ok_or_else(|| missing(element))
    }

    fn require_text(&self, element: u16) -> Result<String, DecodeError> {
        self.text(element)?.map(str::to_owned).ok_or_else(|| missing(element))
    }

    fn opt_text(&self, element: u16) -> Result<Option<String>, DecodeError> {
        Ok(self.text(element)?.map(str::to_owned))
    }

    fn priority(&self) -> Result<Priority, DecodeError> {
        let raw = self.require_us(tags::PRIORITY)?;
        Priority::from_u16(raw).ok_or(DecodeError::InvalidPriority(raw))
    }

    /// Checks the command field matches `expected`.
    fn expect_command(&self, expected: CommandField) -> Result<(), DecodeError> {
        let found = self.command_field_raw()?;
        if found == expected as u16 {
            Ok(())
        } else {
            Err(DecodeError::UnexpectedCommandField { expected, found })
        }
    }

    /// Checks the data set type says a data set is present (`true`) or absent (`false`).
    fn expect_dataset(&self, command: CommandField, present: bool) -> Result<(), DecodeError> {
        let data_set_type = self.data_set_type()?;
        if (data_set_type != NO_DATA_SET) == present {
            Ok(())
        } else {
            Err(DecodeError::DataSetTypeMismatch { command, data_set_type })
        }
    }

    // Builders used by the typed messages.

    fn with_command(command: CommandField, has_dataset: bool) -> Self {
        let mut cs = CommandSet::new();
        cs.insert(tags::COMMAND_FIELD, Value::Us(command as u16));
        cs.insert(tags::COMMAND_DATA_SET_TYPE, Value::Us(if has_dataset { DATA_SET_PRESENT } else { NO_DATA_SET }));
        cs
    }

    fn put_us(&mut self, element: u16, value: u16) {
        self.insert(element, Value::Us(value));
    }

    fn put_opt_us(&mut self, element: u16, value: Option<u16>) {
        if let Some(v) = value {
            self.put_us(element, v);
        }
    }

    fn put_ui(&mut self, element: u16, value: &str) {
        self.insert(element, Value::Ui(value.to_owned()));
    }

    fn put_opt_ui(&mut self, element: u16, value: Option<&str>) {
        if let Some(v) = value {
            self.put_ui(element, v);
        }
    }

    fn put_opt_lo(&mut self, element: u16, value: Option<&str>) {
        if let Some(v) = value {
            self.insert(element, Value::Lo(v.to_owned()));
        }
    }
}

fn write_header(out: &mut Vec<u8>, element: u16, length: u32) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
}

fn wrong_type(element: u16, expected: Vr, found: &Value) -> DecodeError {
    DecodeError::WrongValueType { element, expected, found: found.vr() }
}

fn missing(element: u16) -> DecodeError {
    DecodeError::MissingElement { name: element_name(element).unwrap_or("unknown"), element }
}

// ---------------------------------------------------------------------------------------------------------------
// CommandField and Priority
// ---------------------------------------------------------------------------------------------------------------

/// The Command Field (0000,0100): which DIMSE operation a command set carries (PS3.7 Annex E).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CommandField {
    /// C-STORE-RQ.
    CStoreRq = 0x0001,
    /// C-STORE-RSP.
    CStoreRsp = 0x8001,
    /// C-GET-RQ.
    CGetRq = 0x0010,
    /// C-GET-RSP.
    CGetRsp = 0x8010,
    /// C-FIND-RQ.
    CFindRq = 0x0020,
    /// C-FIND-RSP.
    CFindRsp = 0x8020,
    /// C-MOVE-RQ.
    CMoveRq = 0x0021,
    /// C-MOVE-RSP.
    CMoveRsp = 0x8021,
    /// C-ECHO-RQ.
    CEchoRq = 0x0030,
    /// C-ECHO-RSP.
    CEchoRsp = 0x8030,
    /// N-EVENT-REPORT-RQ.
    NEventReportRq = 0x0100,
    /// N-EVENT-REPORT-RSP.
    NEventReportRsp = 0x8100,
    /// N-GET-RQ.
    NGetRq = 0x0110,
    /// N-GET-RSP.
    NGetRsp = 0x8110,
    /// N-SET-RQ.
    NSetRq = 0x0120,
    /// N-SET-RSP.
    NSetRsp = 0x8120,
    /// N-ACTION-RQ.
    NActionRq = 0x0130,
    /// N-ACTION-RSP.
    NActionRsp = 0x8130,
    /// N-CREATE-RQ.
    NCreateRq = 0x0140,
    /// N-CREATE-RSP.
    NCreateRsp = 0x8140,
    /// N-DELETE-RQ.
    NDeleteRq = 0x0150,
    /// N-DELETE-RSP.
    NDeleteRsp = 0x8150,
    /// C-CANCEL-RQ (there is no response).
    CCancelRq = 0x0FFF,
}

impl CommandField {
    /// Every command field, in the order of PS3.7 Annex E.
    pub const ALL: [CommandField; 23] = [
        CommandField::CStoreRq,
        CommandField::CStoreRsp,
        CommandField::CGetRq,
        CommandField::CGetRsp,
        CommandField::CFindRq,
        CommandField::CFindRsp,
        CommandField::CMoveRq,
        CommandField::CMoveRsp,
        CommandField::CEchoRq,
        CommandField::CEchoRsp,
        CommandField::NEventReportRq,
        CommandField::NEventReportRsp,
        CommandField::NGetRq,
        CommandField::NGetRsp,
        CommandField::NSetRq,
        CommandField::NSetRsp,
        CommandField::NActionRq,
        CommandField::NActionRsp,
        CommandField::NCreateRq,
        CommandField::NCreateRsp,
        CommandField::NDeleteRq,
        CommandField::NDeleteRsp,
        CommandField::CCancelRq,
    ];

    /// The command for a raw Command Field value, `None` if it is no DIMSE command.
    pub fn from_u16(value: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u16 == value)
    }

    /// The raw Command Field value.
    pub fn to_u16(self) -> u16 {
        self as u16
    }

    /// Whether this is a response (bit 15 set).
    pub fn is_response(self) -> bool {
        self.to_u16() & 0x8000 != 0
    }

    /// The standard name, e.g. `"C-STORE-RQ"`.
    pub fn name(self) -> &'static str {
        match self {
            CommandField::CStoreRq => "C-STORE-RQ",
            CommandField::CStoreRsp => "C-STORE-RSP",
            CommandField::CGetRq => "C-GET-RQ",
            CommandField::CGetRsp => "C-GET-RSP",
            CommandField::CFindRq => "C-FIND-RQ",
            CommandField::CFindRsp => "C-FIND-RSP",
            CommandField::CMoveRq => "C-MOVE-RQ",
            CommandField::CMoveRsp => "C-MOVE-RSP",
            CommandField::CEchoRq => "C-ECHO-RQ",
            CommandField::CEchoRsp => "C-ECHO-RSP",
            CommandField::NEventReportRq => "N-EVENT-REPORT-RQ",
            CommandField::NEventReportRsp => "N-EVENT-REPORT-RSP",
            CommandField::NGetRq => "N-GET-RQ",
            CommandField::NGetRsp => "N-GET-RSP",
            CommandField::NSetRq => "N-SET-RQ",
            CommandField::NSetRsp => "N-SET-RSP",
            CommandField::NActionRq => "N-ACTION-RQ",
            CommandField::NActionRsp => "N-ACTION-RSP",
            CommandField::NCreateRq => "N-CREATE-RQ",
            CommandField::NCreateRsp => "N-CREATE-RSP",
            CommandField::NDeleteRq => "N-DELETE-RQ",
            CommandField::NDeleteRsp => "N-DELETE-RSP",
            CommandField::CCancelRq => "C-CANCEL-RQ",
        }
    }
}

impl fmt::Display for CommandField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<u16> for CommandField {
    type Error = DecodeError;

    fn try_from(value: u16) -> Result<Self, Self::Error> {
        Self::from_u16(value).ok_or(DecodeError::UnknownCommandField(value))
    }
}

impl From<CommandField> for u16 {
    fn from(value: CommandField) -> Self {
        value as u16
    }
}

/// Priority (0000,0700) of a C-STORE, C-FIND, C-GET or C-MOVE request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u16)]
pub enum Priority {
    /// LOW (0x0002).
    Low = 0x0002,
    /// MEDIUM (0x0000), the usual value.
    #[default]
    Medium = 0x0000,
    /// HIGH (0x0001).
    High = 0x0001,
}

impl Priority {
    /// The priority for a raw value, `None` when invalid.
    pub fn from_u16(value: u16) -> Option<Self> {
        match value {
            0x0000 => Some(Priority::Medium),
            0x0001 => Some(Priority::High),
            0x0002 => Some(Priority::Low),
            _ => None,
        }
    }

    /// The raw value.
    pub fn to_u16(self) -> u16 {
        self as u16
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Typed messages
// ---------------------------------------------------------------------------------------------------------------

/// Implements the conversions shared by every typed message.
macro_rules! typed_message {
    ($ty:ident, $field:ident) => {
        impl $ty {
            /// The Command Field of this message type.
            pub const COMMAND_FIELD: CommandField = CommandField::$field;

            /// Encodes the message's command set (see [`CommandSet::encode`]).
            pub fn encode(&self) -> Vec<u8> {
                self.to_command_set().encode()
            }

            /// Decodes the message from command set bytes.
            pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                Self::from_command_set(&CommandSet::decode(bytes)?)
            }
        }

        impl From<$ty> for Message {
            fn from(value: $ty) -> Self {
                Message::$field(value)
            }
        }
    };
}

/// C-ECHO-RQ (PS3.7 §9.3.5.1). Never carries a data set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CEchoRq {
    /// Message ID (0000,0110).
    pub message_id: u16,
    /// Affected SOP Class UID (0000,0002), normally the Verification SOP Class `1.2.840.10008.1.1`.
    pub affected_sop_class: String,
}

typed_message!(CEchoRq, CEchoRq);

impl CEchoRq {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        cs.expect_dataset(Self::COMMAND_FIELD, false)?;
        Ok(Self {
            message_id: cs.require_us(tags::MESSAGE_ID)?,
            affected_sop_class: cs.require_text(tags::AFFECTED_SOP_CLASS_UID)?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, false);
        cs.put_ui(tags::AFFECTED_SOP_CLASS_UID, &self.affected_sop_class);
        cs.put_us(tags::MESSAGE_ID, self.message_id);
        cs
    }
}

/// C-ECHO-RSP (PS3.7 §9.3.5.2). Never carries a data set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CEchoRsp {
    /// Message ID Being Responded To (0000,0120).
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (0000,0002); optional (U(=)) in responses.
    pub affected_sop_class: Option<String>,
    /// Status (0000,0900).
    pub status: u16,
    /// Error Comment (0000,0902).
    pub error_comment: Option<String>,
}

typed_message!(CEchoRsp, CEchoRsp);

impl CEchoRsp {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        cs.expect_dataset(Self::COMMAND_FIELD, false)?;
        Ok(Self {
            message_id_being_responded_to: cs.require_us(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
            affected_sop_class: cs.opt_text(tags::AFFECTED_SOP_CLASS_UID)?,
            status: cs.require_us(tags::STATUS)?,
            error_comment: cs.opt_text(tags::ERROR_COMMENT)?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, false);
        cs.put_opt_ui(tags::AFFECTED_SOP_CLASS_UID, self.affected_sop_class.as_deref());
        cs.put_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, self.message_id_being_responded_to);
        cs.put_us(tags::STATUS, self.status);
        cs.put_opt_lo(tags::ERROR_COMMENT, self.error_comment.as_deref());
        cs
    }
}

/// C-STORE-RQ (PS3.7 §9.3.1.1). Always carries a data set (the SOP instance).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CStoreRq {
    /// Message ID (0000,0110).
    pub message_id: u16,
    /// Affected SOP Class UID (0000,0002).
    pub affected_sop_class: String,
    /// Affected SOP Instance UID (0000,1000).
    pub affected_sop_instance: String,
    /// Priority (0000,0700).
    pub priority: Priority,
    /// Move Originator Application Entity Title (0000,1030), set when the store is a C-MOVE sub-operation.
    pub move_originator_ae: Option<String>,
    /// Move Originator Message ID (0000,1031), set when the store is a C-MOVE sub-operation.
    pub move_originator_message_id: Option<u16>,
}

typed_message!(CStoreRq, CStoreRq);

impl CStoreRq {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        cs.expect_dataset(Self::COMMAND_FIELD, true)?;
        Ok(Self {
            message_id: cs.require_us(tags::MESSAGE_ID)?,
            affected_sop_class: cs.require_text(tags::AFFECTED_SOP_CLASS_UID)?,
            affected_sop_instance: cs.require_text(tags::AFFECTED_SOP_INSTANCE_UID)?,
            priority: cs.priority()?,
            move_originator_ae: cs.opt_text(tags::MOVE_ORIGINATOR_AE_TITLE)?,
            move_originator_message_id: cs.us(tags::MOVE_ORIGINATOR_MESSAGE_ID)?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, true);
        cs.put_ui(tags::AFFECTED_SOP_CLASS_UID, &self.affected_sop_class);
        cs.put_us(tags::MESSAGE_ID, self.message_id);
        cs.put_us(tags::PRIORITY, self.priority.to_u16());
        cs.put_ui(tags::AFFECTED_SOP_INSTANCE_UID, &self.affected_sop_instance);
        if let Some(ae) = &self.move_originator_ae {
            cs.insert(tags::MOVE_ORIGINATOR_AE_TITLE, Value::Ae(ae.clone()));
        }
        cs.put_opt_us(tags::MOVE_ORIGINATOR_MESSAGE_ID, self.move_originator_message_id);
        cs
    }
}

/// C-STORE-RSP (PS3.7 §9.3.1.2). Never carries a data set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CStoreRsp {
    /// Message ID Being Responded To (0000,0120).
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (0000,0002); optional (U(=)) in responses.
    pub affected_sop_class: Option<String>,
    /// Affected SOP Instance UID (0000,1000); optional (U(=)) in responses.
    pub affected_sop_instance: Option<String>,
    /// Status (0000,0900).
    pub status: u16,
    /// Error Comment (0000,0902).
    pub error_comment: Option<String>,
}

typed_message!(CStoreRsp, CStoreRsp);

impl CStoreRsp {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        cs.expect_dataset(Self::COMMAND_FIELD, false)?;
        Ok(Self {
            message_id_being_responded_to: cs.require_us(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
            affected_sop_class: cs.opt_text(tags::AFFECTED_SOP_CLASS_UID)?,
            affected_sop_instance: cs.opt_text(tags::AFFECTED_SOP_INSTANCE_UID)?,
            status: cs.require_us(tags::STATUS)?,
            error_comment: cs.opt_text(tags::ERROR_COMMENT)?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, false);
        cs.put_opt_ui(tags::AFFECTED_SOP_CLASS_UID, self.affected_sop_class.as_deref());
        cs.put_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, self.message_id_being_responded_to);
        cs.put_us(tags::STATUS, self.status);
        cs.put_opt_lo(tags::ERROR_COMMENT, self.error_comment.as_deref());
        cs.put_opt_ui(tags::AFFECTED_SOP_INSTANCE_UID, self.affected_sop_instance.as_deref());
        cs
    }
}

/// C-FIND-RQ (PS3.7 §9.3.2.1). Always carries a data set (the identifier).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CFindRq {
    /// Message ID (0000,0110).
    pub message_id: u16,
    /// Affected SOP Class UID (0000,0002): the information model.
    pub affected_sop_class: String,
    /// Priority (0000,0700).
    pub priority: Priority,
}

typed_message!(CFindRq, CFindRq);

impl CFindRq {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        cs.expect_dataset(Self::COMMAND_FIELD, true)?;
        Ok(Self {
            message_id: cs.require_us(tags::MESSAGE_ID)?,
            affected_sop_class: cs.require_text(tags::AFFECTED_SOP_CLASS_UID)?,
            priority: cs.priority()?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, true);
        cs.put_ui(tags::AFFECTED_SOP_CLASS_UID, &self.affected_sop_class);
        cs.put_us(tags::MESSAGE_ID, self.message_id);
        cs.put_us(tags::PRIORITY, self.priority.to_u16());
        cs
    }
}

/// C-FIND-RSP (PS3.7 §9.3.2.2). Pending responses carry a data set (the matching identifier).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CFindRsp {
    /// Message ID Being Responded To (0000,0120).
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (0000,0002); optional (U(=)) in responses.
    pub affected_sop_class: Option<String>,
    /// Status (0000,0900).
    pub status: u16,
    /// Error Comment (0000,0902).
    pub error_comment: Option<String>,
    /// Whether a data set (identifier) follows.
    pub has_dataset: bool,
}

typed_message!(CFindRsp, CFindRsp);

impl CFindRsp {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        Ok(Self {
            message_id_being_responded_to: cs.require_us(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
            affected_sop_class: cs.opt_text(tags::AFFECTED_SOP_CLASS_UID)?,
            status: cs.require_us(tags::STATUS)?,
            error_comment: cs.opt_text(tags::ERROR_COMMENT)?,
            has_dataset: cs.has_dataset()?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, self.has_dataset);
        cs.put_opt_ui(tags::AFFECTED_SOP_CLASS_UID, self.affected_sop_class.as_deref());
        cs.put_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, self.message_id_being_responded_to);
        cs.put_us(tags::STATUS, self.status);
        cs.put_opt_lo(tags::ERROR_COMMENT, self.error_comment.as_deref());
        cs
    }
}

/// C-MOVE-RQ (PS3.7 §9.3.4.1). Always carries a data set (the identifier).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CMoveRq {
    /// Message ID (0000,0110).
    pub message_id: u16,
    /// Affected SOP Class UID (0000,0002): the information model.
    pub affected_sop_class: String,
    /// Priority (0000,0700).
    pub priority: Priority,
    /// Move Destination (0000,0600): AE title the instances are sent to.
    pub move_destination: String,
}

typed_message!(CMoveRq, CMoveRq);

impl CMoveRq {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        cs.expect_dataset(Self::COMMAND_FIELD, true)?;
        Ok(Self {
            message_id: cs.require_us(tags::MESSAGE_ID)?,
            affected_sop_class: cs.require_text(tags::AFFECTED_SOP_CLASS_UID)?,
            priority: cs.priority()?,
            move_destination: cs.require_text(tags::MOVE_DESTINATION)?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, true);
        cs.put_ui(tags::AFFECTED_SOP_CLASS_UID, &self.affected_sop_class);
        cs.put_us(tags::MESSAGE_ID, self.message_id);
        cs.insert(tags::MOVE_DESTINATION, Value::Ae(self.move_destination.clone()));
        cs.put_us(tags::PRIORITY, self.priority.to_u16());
        cs
    }
}

/// Sub-operation counters of C-MOVE-RSP and C-GET-RSP (0000,1020)–(0000,1023).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOperations {
    /// Number of Remaining Sub-operations (0000,1020).
    pub remaining: Option<u16>,
    /// Number of Completed Sub-operations (0000,1021).
    pub completed: Option<u16>,
    /// Number of Failed Sub-operations (0000,1022).
    pub failed: Option<u16>,
    /// Number of Warning Sub-operations (0000,1023).
    pub warning: Option<u16>,
}

impl SubOperations {
    fn read(cs: &CommandSet) -> Result<Self, DecodeError> {
        Ok(Self {
            remaining: cs.us(tags::NUMBER_OF_REMAINING_SUBOPERATIONS)?,
            completed: cs.us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS)?,
            failed: cs.us(tags::NUMBER_OF_FAILED_SUBOPERATIONS)?,
            warning: cs.us(tags::NUMBER_OF_WARNING_SUBOPERATIONS)?,
        })
    }

    fn write(&self, cs: &mut CommandSet) {
        cs.put_opt_us(tags::NUMBER_OF_REMAINING_SUBOPERATIONS, self.remaining);
        cs.put_opt_us(tags::NUMBER_OF_COMPLETED_SUBOPERATIONS, self.completed);
        cs.put_opt_us(tags::NUMBER_OF_FAILED_SUBOPERATIONS, self.failed);
        cs.put_opt_us(tags::NUMBER_OF_WARNING_SUBOPERATIONS, self.warning);
    }
}

/// C-MOVE-RSP (PS3.7 §9.3.4.2). Final failure or warning responses may carry a data set (the Failed SOP
/// Instance UID List).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CMoveRsp {
    /// Message ID Being Responded To (0000,0120).
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (0000,0002); optional (U(=)) in responses.
    pub affected_sop_class: Option<String>,
    /// Status (0000,0900).
    pub status: u16,
    /// Sub-operation counters.
    pub sub_operations: SubOperations,
    /// Error Comment (0000,0902).
    pub error_comment: Option<String>,
    /// Whether a data set follows.
    pub has_dataset: bool,
}

typed_message!(CMoveRsp, CMoveRsp);

impl CMoveRsp {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        Ok(Self {
            message_id_being_responded_to: cs.require_us(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
            affected_sop_class: cs.opt_text(tags::AFFECTED_SOP_CLASS_UID)?,
            status: cs.require_us(tags::STATUS)?,
            sub_operations: SubOperations::read(cs)?,
            error_comment: cs.opt_text(tags::ERROR_COMMENT)?,
            has_dataset: cs.has_dataset()?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, self.has_dataset);
        cs.put_opt_ui(tags::AFFECTED_SOP_CLASS_UID, self.affected_sop_class.as_deref());
        cs.put_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, self.message_id_being_responded_to);
        cs.put_us(tags::STATUS, self.status);
        cs.put_opt_lo(tags::ERROR_COMMENT, self.error_comment.as_deref());
        self.sub_operations.write(&mut cs);
        cs
    }
}

/// C-GET-RQ (PS3.7 §9.3.3.1). Always carries a data set (the identifier).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CGetRq {
    /// Message ID (0000,0110).
    pub message_id: u16,
    /// Affected SOP Class UID (0000,0002): the information model.
    pub affected_sop_class: String,
    /// Priority (0000,0700).
    pub priority: Priority,
}

typed_message!(CGetRq, CGetRq);

impl CGetRq {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        cs.expect_dataset(Self::COMMAND_FIELD, true)?;
        Ok(Self {
            message_id: cs.require_us(tags::MESSAGE_ID)?,
            affected_sop_class: cs.require_text(tags::AFFECTED_SOP_CLASS_UID)?,
            priority: cs.priority()?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, true);
        cs.put_ui(tags::AFFECTED_SOP_CLASS_UID, &self.affected_sop_class);
        cs.put_us(tags::MESSAGE_ID, self.message_id);
        cs.put_us(tags::PRIORITY, self.priority.to_u16());
        cs
    }
}

/// C-GET-RSP (PS3.7 §9.3.3.2). Final failure or warning responses may carry a data set (the Failed SOP Instance
/// UID List).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CGetRsp {
    /// Message ID Being Responded To (0000,0120).
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (0000,0002); optional (U(=)) in responses.
    pub affected_sop_class: Option<String>,
    /// Status (0000,0900).
    pub status: u16,
    /// Sub-operation counters.
    pub sub_operations: SubOperations,
    /// Error Comment (0000,0902).
    pub error_comment: Option<String>,
    /// Whether a data set follows.
    pub has_dataset: bool,
}

typed_message!(CGetRsp, CGetRsp);

impl CGetRsp {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        Ok(Self {
            message_id_being_responded_to: cs.require_us(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
            affected_sop_class: cs.opt_text(tags::AFFECTED_SOP_CLASS_UID)?,
            status: cs.require_us(tags::STATUS)?,
            sub_operations: SubOperations::read(cs)?,
            error_comment: cs.opt_text(tags::ERROR_COMMENT)?,
            has_dataset: cs.has_dataset()?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, self.has_dataset);
        cs.put_opt_ui(tags::AFFECTED_SOP_CLASS_UID, self.affected_sop_class.as_deref());
        cs.put_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, self.message_id_being_responded_to);
        cs.put_us(tags::STATUS, self.status);
        cs.put_opt_lo(tags::ERROR_COMMENT, self.error_comment.as_deref());
        self.sub_operations.write(&mut cs);
        cs
    }
}

/// C-CANCEL-RQ (PS3.7 §9.3.2.3 and following). Never carries a data set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CCancelRq {
    /// Message ID Being Responded To (0000,0120): the request to cancel.
    pub message_id_being_responded_to: u16,
}

typed_message!(CCancelRq, CCancelRq);

impl CCancelRq {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        cs.expect_dataset(Self::COMMAND_FIELD, false)?;
        Ok(Self { message_id_being_responded_to: cs.require_us(tags::MESSAGE_ID_BEING_RESPONDED_TO)? })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, false);
        cs.put_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, self.message_id_being_responded_to);
        cs
    }
}

/// N-ACTION-RQ (PS3.7 §10.3.4.1). May carry a data set (the action information).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NActionRq {
    /// Message ID (0000,0110).
    pub message_id: u16,
    /// Requested SOP Class UID (0000,0003).
    pub requested_sop_class: String,
    /// Requested SOP Instance UID (0000,1001).
    pub requested_sop_instance: String,
    /// Action Type ID (0000,1008).
    pub action_type_id: u16,
    /// Whether a data set (action information) follows.
    pub has_dataset: bool,
}

typed_message!(NActionRq, NActionRq);

impl NActionRq {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        Ok(Self {
            message_id: cs.require_us(tags::MESSAGE_ID)?,
            requested_sop_class: cs.require_text(tags::REQUESTED_SOP_CLASS_UID)?,
            requested_sop_instance: cs.require_text(tags::REQUESTED_SOP_INSTANCE_UID)?,
            action_type_id: cs.require_us(tags::ACTION_TYPE_ID)?,
            has_dataset: cs.has_dataset()?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, self.has_dataset);
        cs.put_ui(tags::REQUESTED_SOP_CLASS_UID, &self.requested_sop_class);
        cs.put_us(tags::MESSAGE_ID, self.message_id);
        cs.put_ui(tags::REQUESTED_SOP_INSTANCE_UID, &self.requested_sop_instance);
        cs.put_us(tags::ACTION_TYPE_ID, self.action_type_id);
        cs
    }
}

/// N-ACTION-RSP (PS3.7 §10.3.4.2). May carry a data set (the action reply).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NActionRsp {
    /// Message ID Being Responded To (0000,0120).
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (0000,0002).
    pub affected_sop_class: Option<String>,
    /// Affected SOP Instance UID (0000,1000).
    pub affected_sop_instance: Option<String>,
    /// Status (0000,0900).
    pub status: u16,
    /// Action Type ID (0000,1008).
    pub action_type_id: Option<u16>,
    /// Error Comment (0000,0902).
    pub error_comment: Option<String>,
    /// Whether a data set (action reply) follows.
    pub has_dataset: bool,
}

typed_message!(NActionRsp, NActionRsp);

impl NActionRsp {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        Ok(Self {
            message_id_being_responded_to: cs.require_us(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
            affected_sop_class: cs.opt_text(tags::AFFECTED_SOP_CLASS_UID)?,
            affected_sop_instance: cs.opt_text(tags::AFFECTED_SOP_INSTANCE_UID)?,
            status: cs.require_us(tags::STATUS)?,
            action_type_id: cs.us(tags::ACTION_TYPE_ID)?,
            error_comment: cs.opt_text(tags::ERROR_COMMENT)?,
            has_dataset: cs.has_dataset()?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, self.has_dataset);
        cs.put_opt_ui(tags::AFFECTED_SOP_CLASS_UID, self.affected_sop_class.as_deref());
        cs.put_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, self.message_id_being_responded_to);
        cs.put_us(tags::STATUS, self.status);
        cs.put_opt_lo(tags::ERROR_COMMENT, self.error_comment.as_deref());
        cs.put_opt_ui(tags::AFFECTED_SOP_INSTANCE_UID, self.affected_sop_instance.as_deref());
        cs.put_opt_us(tags::ACTION_TYPE_ID, self.action_type_id);
        cs
    }
}

/// N-EVENT-REPORT-RQ (PS3.7 §10.3.1.1). May carry a data set (the event information).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NEventReportRq {
    /// Message ID (0000,0110).
    pub message_id: u16,
    /// Affected SOP Class UID (0000,0002).
    pub affected_sop_class: String,
    /// Affected SOP Instance UID (0000,1000).
    pub affected_sop_instance: String,
    /// Event Type ID (0000,1002).
    pub event_type_id: u16,
    /// Whether a data set (event information) follows.
    pub has_dataset: bool,
}

typed_message!(NEventReportRq, NEventReportRq);

impl NEventReportRq {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        Ok(Self {
            message_id: cs.require_us(tags::MESSAGE_ID)?,
            affected_sop_class: cs.require_text(tags::AFFECTED_SOP_CLASS_UID)?,
            affected_sop_instance: cs.require_text(tags::AFFECTED_SOP_INSTANCE_UID)?,
            event_type_id: cs.require_us(tags::EVENT_TYPE_ID)?,
            has_dataset: cs.has_dataset()?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, self.has_dataset);
        cs.put_ui(tags::AFFECTED_SOP_CLASS_UID, &self.affected_sop_class);
        cs.put_us(tags::MESSAGE_ID, self.message_id);
        cs.put_ui(tags::AFFECTED_SOP_INSTANCE_UID, &self.affected_sop_instance);
        cs.put_us(tags::EVENT_TYPE_ID, self.event_type_id);
        cs
    }
}

/// N-EVENT-REPORT-RSP (PS3.7 §10.3.1.2). May carry a data set (the event reply).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NEventReportRsp {
    /// Message ID Being Responded To (0000,0120).
    pub message_id_being_responded_to: u16,
    /// Affected SOP Class UID (0000,0002).
    pub affected_sop_class: Option<String>,
    /// Affected SOP Instance UID (0000,1000).
    pub affected_sop_instance: Option<String>,
    /// Status (0000,0900).
    pub status: u16,
    /// Event Type ID (0000,1002).
    pub event_type_id: Option<u16>,
    /// Error Comment (0000,0902).
    pub error_comment: Option<String>,
    /// Whether a data set (event reply) follows.
    pub has_dataset: bool,
}

typed_message!(NEventReportRsp, NEventReportRsp);

impl NEventReportRsp {
    /// Reads the message from a command set.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        cs.expect_command(Self::COMMAND_FIELD)?;
        Ok(Self {
            message_id_being_responded_to: cs.require_us(tags::MESSAGE_ID_BEING_RESPONDED_TO)?,
            affected_sop_class: cs.opt_text(tags::AFFECTED_SOP_CLASS_UID)?,
            affected_sop_instance: cs.opt_text(tags::AFFECTED_SOP_INSTANCE_UID)?,
            status: cs.require_us(tags::STATUS)?,
            event_type_id: cs.us(tags::EVENT_TYPE_ID)?,
            error_comment: cs.opt_text(tags::ERROR_COMMENT)?,
            has_dataset: cs.has_dataset()?,
        })
    }

    /// Builds the command set.
    pub fn to_command_set(&self) -> CommandSet {
        let mut cs = CommandSet::with_command(Self::COMMAND_FIELD, self.has_dataset);
        cs.put_opt_ui(tags::AFFECTED_SOP_CLASS_UID, self.affected_sop_class.as_deref());
        cs.put_us(tags::MESSAGE_ID_BEING_RESPONDED_TO, self.message_id_being_responded_to);
        cs.put_us(tags::STATUS, self.status);
        cs.put_opt_lo(tags::ERROR_COMMENT, self.error_comment.as_deref());
        cs.put_opt_ui(tags::AFFECTED_SOP_INSTANCE_UID, self.affected_sop_instance.as_deref());
        cs.put_opt_us(tags::EVENT_TYPE_ID, self.event_type_id);
        cs
    }
}

/// A DIMSE message with a valid command field but no typed struct in this crate (N-GET, N-SET, N-CREATE and
/// N-DELETE requests and responses). Holds the whole command set; its command field and data set type are
/// validated on construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntypedMessage {
    command_field: CommandField,
    has_dataset: bool,
    command_set: CommandSet,
}

impl UntypedMessage {
    /// Wraps a command set, checking it has a known Command Field and a Command Data Set Type.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        Ok(Self { command_field: cs.command_field()?, has_dataset: cs.has_dataset()?, command_set: cs.clone() })
    }

    /// The command field.
    pub fn command_field(&self) -> CommandField {
        self.command_field
    }

    /// Whether a data set follows.
    pub fn has_dataset(&self) -> bool {
        self.has_dataset
    }

    /// The command set.
    pub fn command_set(&self) -> &CommandSet {
        &self.command_set
    }

    /// Unwraps the command set.
    pub fn into_command_set(self) -> CommandSet {
        self.command_set
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Message
// ---------------------------------------------------------------------------------------------------------------

/// Any DIMSE message, typed by its command field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// C-ECHO-RQ.
    CEchoRq(CEchoRq),
    /// C-ECHO-RSP.
    CEchoRsp(CEchoRsp),
    /// C-STORE-RQ.
    CStoreRq(CStoreRq),
    /// C-STORE-RSP.
    CStoreRsp(CStoreRsp),
    /// C-FIND-RQ.
    CFindRq(CFindRq),
    /// C-FIND-RSP.
    CFindRsp(CFindRsp),
    /// C-MOVE-RQ.
    CMoveRq(CMoveRq),
    /// C-MOVE-RSP.
    CMoveRsp(CMoveRsp),
    /// C-GET-RQ.
    CGetRq(CGetRq),
    /// C-GET-RSP.
    CGetRsp(CGetRsp),
    /// C-CANCEL-RQ.
    CCancelRq(CCancelRq),
    /// N-ACTION-RQ.
    NActionRq(NActionRq),
    /// N-ACTION-RSP.
    NActionRsp(NActionRsp),
    /// N-EVENT-REPORT-RQ.
    NEventReportRq(NEventReportRq),
    /// N-EVENT-REPORT-RSP.
    NEventReportRsp(NEventReportRsp),
    /// N-GET, N-SET, N-CREATE or N-DELETE request or response, kept as a command set.
    Other(UntypedMessage),
}

impl Message {
    /// Decodes command set bytes into a typed message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_command_set(&CommandSet::decode(bytes)?)
    }

    /// Encodes the message's command set.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Other(m) => m.command_set.encode(),
            typed => typed.to_command_set().encode(),
        }
    }

    /// Types a command set by its Command Field.
    pub fn from_command_set(cs: &CommandSet) -> Result<Self, DecodeError> {
        Ok(match cs.command_field()? {
            CommandField::CEchoRq => Message::CEchoRq(CEchoRq::from_command_set(cs)?),
            CommandField::CEchoRsp => Message::CEchoRsp(CEchoRsp::from_command_set(cs)?),
            CommandField::CStoreRq => Message::CStoreRq(CStoreRq::from_command_set(cs)?),
            CommandField::CStoreRsp => Message::CStoreRsp(CStoreRsp::from_command_set(cs)?),
            CommandField::CFindRq => Message::CFindRq(CFindRq::from_command_set(cs)?),
            CommandField::CFindRsp => Message::CFindRsp(CFindRsp::from_command_set(cs)?),
            CommandField::CMoveRq => Message::CMoveRq(CMoveRq::from_command_set(cs)?),
            CommandField::CMoveRsp => Message::CMoveRsp(CMoveRsp::from_command_set(cs)?),
            CommandField::CGetRq => Message::CGetRq(CGetRq::from_command_set(cs)?),
            CommandField::CGetRsp => Message::CGetRsp(CGetRsp::from_command_set(cs)?),
            CommandField::CCancelRq => Message::CCancelRq(CCancelRq::from_command_set(cs)?),
            CommandField::NActionRq => Message::NActionRq(NActionRq::from_command_set(cs)?),
            CommandField::NActionRsp => Message::NActionRsp(NActionRsp::from_command_set(cs)?),
            CommandField::NEventReportRq => Message::NEventReportRq(NEventReportRq::from_command_set(cs)?),
            CommandField::NEventReportRsp => Message::NEventReportRsp(NEventReportRsp::from_command_set(cs)?),
            CommandField::NGetRq
            | CommandField::NGetRsp
            | CommandField::NSetRq
            | CommandField::NSetRsp
            | CommandField::NCreateRq
            | CommandField::NCreateRsp
            | CommandField::NDeleteRq
            | CommandField::NDeleteRsp => Message::Other(UntypedMessage::from_command_set(cs)?),
        })
    }

    /// Builds the message's command set.
    pub fn to_command_set(&self) -> CommandSet {
        match self {
            Message::CEchoRq(m) => m.to_command_set(),
            Message::CEchoRsp(m) => m.to_command_set(),
            Message::CStoreRq(m) => m.to_command_set(),
            Message::CStoreRsp(m) => m.to_command_set(),
            Message::CFindRq(m) => m.to_command_set(),
            Message::CFindRsp(m) => m.to_command_set(),
            Message::CMoveRq(m) => m.to_command_set(),
            Message::CMoveRsp(m) => m.to_command_set(),
            Message::CGetRq(m) => m.to_command_set(),
            Message::CGetRsp(m) => m.to_command_set(),
            Message::CCancelRq(m) => m.to_command_set(),
            Message::NActionRq(m) => m.to_command_set(),
            Message::NActionRsp(m) => m.to_command_set(),
            Message::NEventReportRq(m) => m.to_command_set(),
            Message::NEventReportRsp(m) => m.to_command_set(),
            Message::Other(m) => m.command_set.clone(),
        }
    }

    /// The message's command field.
    pub fn command_field(&self) -> CommandField {
        match self {
            Message::CEchoRq(_) => CommandField::CEchoRq,
            Message::CEchoRsp(_) => CommandField::CEchoRsp,
            Message::CStoreRq(_) => CommandField::CStoreRq,
            Message::CStoreRsp(_) => CommandField::CStoreRsp,
            Message::CFindRq(_) => CommandField::CFindRq,
            Message::CFindRsp(_) => CommandField::CFindRsp,
            Message::CMoveRq(_) => CommandField::CMoveRq,
            Message::CMoveRsp(_) => CommandField::CMoveRsp,
            Message::CGetRq(_) => CommandField::CGetRq,
            Message::CGetRsp(_) => CommandField::CGetRsp,
            Message::CCancelRq(_) => CommandField::CCancelRq,
            Message::NActionRq(_) => CommandField::NActionRq,
            Message::NActionRsp(_) => CommandField::NActionRsp,
            Message::NEventReportRq(_) => CommandField::NEventReportRq,
            Message::NEventReportRsp(_) => CommandField::NEventReportRsp,
            Message::Other(m) => m.command_field,
        }
    }

    /// Whether a data set follows the command (Command Data Set Type other than `0x0101`).
    pub fn has_dataset(&self) -> bool {
        match self {
            Message::CStoreRq(_) | Message::CFindRq(_) | Message::CMoveRq(_) | Message::CGetRq(_) => true,
            Message::CEchoRq(_) | Message::CEchoRsp(_) | Message::CStoreRsp(_) | Message::CCancelRq(_) => false,
            Message::CFindRsp(m) => m.has_dataset,
            Message::CMoveRsp(m) => m.has_dataset,
            Message::CGetRsp(m) => m.has_dataset,
            Message::NActionRq(m) => m.has_dataset,
            Message::NActionRsp(m) => m.has_dataset,
            Message::NEventReportRq(m) => m.has_dataset,
            Message::NEventReportRsp(m) => m.has_dataset,
            Message::Other(m) => m.has_dataset,
        }
    }

    /// Whether the message is a response.
    pub fn is_response(&self) -> bool {
        self.command_field().is_response()
    }

    /// Message ID (0000,0110) of a request (`None` for responses and C-CANCEL-RQ).
    pub fn message_id(&self) -> Option<u16> {
        match self {
            Message::CEchoRq(m) => Some(m.message_id),
            Message::CStoreRq(m) => Some(m.message_id),
            Message::CFindRq(m) => Some(m.message_id),
            Message::CMoveRq(m) => Some(m.message_id),
            Message::CGetRq(m) => Some(m.message_id),
            Message::NActionRq(m) => Some(m.message_id),
            Message::NEventReportRq(m) => Some(m.message_id),
            Message::Other(m) => m.command_set.us(tags::MESSAGE_ID).ok().flatten(),
            _ => None,
        }
    }

    /// Message ID Being Responded To (0000,0120) of a response or C-CANCEL-RQ.
    pub fn message_id_being_responded_to(&self) -> Option<u16> {
        match self {
            Message::CEchoRsp(m) => Some(m.message_id_being_responded_to),
            Message::CStoreRsp(m) => Some(m.message_id_being_responded_to),
            Message::CFindRsp(m) => Some(m.message_id_being_responded_to),
            Message::CMoveRsp(m) => Some(m.message_id_being_responded_to),
            Message::CGetRsp(m) => Some(m.message_id_being_responded_to),
            Message::CCancelRq(m) => Some(m.message_id_being_responded_to),
            Message::NActionRsp(m) => Some(m.message_id_being_responded_to),
            Message::NEventReportRsp(m) => Some(m.message_id_being_responded_to),
            Message::Other(m) => m.command_set.us(tags::MESSAGE_ID_BEING_RESPONDED_TO).ok().flatten(),
            _ => None,
        }
    }

    /// Status (0000,0900) of a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Message::CEchoRsp(m) => Some(m.status),
            Message::CStoreRsp(m) => Some(m.status),
            Message::CFindRsp(m) => Some(m.status),
            Message::CMoveRsp(m) => Some(m.status),
            Message::CGetRsp(m) => Some(m.status),
            Message::NActionRsp(m) => Some(m.status),
            Message::NEventReportRsp(m) => Some(m.status),
            Message::Other(m) => m.command_set.us(tags::STATUS).ok().flatten(),
            _ => None,
        }
    }
}

impl From<UntypedMessage> for Message {
    fn from(value: UntypedMessage) -> Self {
        Message::Other(value)
    }
}

#[cfg(test)]
mod tests;
