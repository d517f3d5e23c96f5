//! # dimse — the DICOM message exchange layer (PS3.7)
//!
//! A small, dependency-light and fuzzable implementation of the DIMSE message layer: everything between the
//! Upper Layer protocol (associations, P-DATA-TF PDUs — not handled here) and the service classes of PS3.4.
//!
//! ## Map
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`command`] | [`CommandSet`]: the generic group-0000 command set, its Implicit VR Little Endian codec and element dictionary; [`CommandField`]; one typed struct per DIMSE message ([`CEchoRq`], [`CStoreRq`], …); the [`Message`] enum that dispatches on the command field; [`DecodeError`]. |
//! | [`status`] | Status code constants (PS3.7 Annex C, PS3.4 service classes) and [`StatusKind`] classification. |
//! | [`pdv`] | Splitting a command or data set into P-DATA value fragments ([`pdv::fragment`]) and reassembling fragments into complete messages ([`MessageAssembler`]). |
//! | `ul` (feature `ul`) | `MessageReader`: the one loop that receives a complete message (command set and data set) from a `dicom-ul` association, for servers and clients. |
//!
//! ## Data flow
//!
//! ```text
//! receive:  PDV items ──► MessageAssembler ──► AssembledMessage { command bytes, data set bytes }
//!                                                   │
//!                                                   └─► Message::decode(command bytes) ──► Message::CStoreRq(..)
//! send:     Message::encode() ──► pdv::fragment(pc, true, ..) ─┐
//!           data set bytes    ──► pdv::fragment(pc, false, ..) ┴─► P-DATA-TF PDUs
//! ```
//!
//! ## Invariants
//!
//! * Command sets are always Implicit VR Little Endian and contain group 0000 elements only (PS3.7 §6.3.1).
//!   Decoding rejects anything else; it never panics and never allocates more than a small multiple of its input.
//! * [`CommandSet::encode`] always writes a correct Command Group Length (0000,0000), elements in ascending tag
//!   order and even-length values (UI padded with NUL, other text with space). The group length element is never
//!   stored in a [`CommandSet`]: it is validated and dropped on decode, and recomputed on encode.
//! * For every byte string `b`, if `Message::decode(b)` is `Ok(m)` then `Message::decode(&m.encode())` is
//!   `Ok(m)` again (checked by the `decode_message` fuzz target and the unit tests).
//! * Command Data Set Type (0000,0800) equal to `0x0101` means "no data set"; any other value means a data set
//!   follows ([`Message::has_dataset`]). Messages whose data set is mandatory or forbidden by PS3.7 reject the
//!   wrong value on decode.
//! * The [`pdv`] module is independent of any Upper Layer implementation: it works on plain structs and byte
//!   vectors. Only the optional `ul` module knows `dicom-ul`.
//!
//! ## Example
//!
//! ```
//! use dimse::{CEchoRq, Message};
//!
//! let rq = CEchoRq { message_id: 1, affected_sop_class: "1.2.840.10008.1.1".into() };
//! let bytes = Message::from(rq.clone()).encode();
//! assert_eq!(Message::decode(&bytes).unwrap(), Message::CEchoRq(rq));
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod command;
pub mod pdv;
pub mod status;
#[cfg(feature = "ul")]
pub mod ul;

pub use command::{
    AttributeTag, CCancelRq, CEchoRq, CEchoRsp, CFindRq, CFindRsp, CGetRq, CGetRsp, CMoveRq, CMoveRsp, CStoreRq,
    CStoreRsp, CommandField, CommandSet, DecodeError, Message, NActionRq, NActionRsp, NEventReportRq, NEventReportRsp,
    Priority, UntypedMessage, Value, Vr,
};
pub use pdv::{AssembleError, AssembledMessage, MessageAssembler, PdvFragment};
pub use status::StatusKind;
