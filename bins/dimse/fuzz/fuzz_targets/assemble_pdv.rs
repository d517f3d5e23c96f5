//! Drives the PDV message assembler with arbitrary fragment sequences.
//!
//! Input layout, repeated until the input runs out: one control byte (bit 0: command, bit 1: last,
//! bit 2: use presentation context 3 instead of 1, bit 3: reset the assembler first), one length byte, then that
//! many fragment bytes (fewer if the input ends). A second pass fragments the whole input as one command set and
//! reassembles it.
#![no_main]

use dimse::pdv::{fragment, MessageAssembler};
use dimse::{AssembleError, Message};
use libfuzzer_sys::fuzz_target;

const MAX_DATASET: usize = 1024;
const MAX_COMMAND: usize = 512;

fuzz_target!(|data: &[u8]| {
    let mut assembler = MessageAssembler::new(MAX_DATASET).with_max_command_len(MAX_COMMAND);
    let mut rest = data;
    while let [control, len, tail @ ..] = rest {
        let take = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(take);
        rest = next;
        if control & 8 != 0 {
            assembler.reset();
        }
        let pc = if control & 4 != 0 { 3 } else { 1 };
        match assembler.push_parts(pc, control & 1 != 0, control & 2 != 0, bytes) {
            Ok(Some(message)) => {
                assert!(message.command.len() <= MAX_COMMAND);
                assert!(message.dataset.as_ref().is_none_or(|d| d.len() <= MAX_DATASET));
                assert!(assembler.is_idle());
                // The assembler only completes messages whose command set decodes.
                let set = dimse::CommandSet::decode(&message.command).expect("assembled command decodes");
                assert_eq!(set.has_dataset().ok(), Some(message.dataset.is_some()));
                let _ = Message::decode(&message.command);
            }
            Ok(None) => assert!(assembler.buffered_len() <= MAX_COMMAND + MAX_DATASET),
            Err(error) => {
                assert!(assembler.is_idle(), "errors reset the assembler");
                assert!(!error.to_string().is_empty());
                let _: &AssembleError = &error;
            }
        }
    }

    // Whatever the input, fragmenting it as a command and reassembling gives it back or a command-set error.
    let mut assembler = MessageAssembler::new(MAX_DATASET).with_max_command_len(usize::MAX);
    let max_pdu = data.first().map_or(0, |b| u32::from(*b));
    for (i, piece) in fragment(1, true, data, max_pdu).into_iter().enumerate() {
        match assembler.push(piece) {
            Ok(Some(message)) => assert_eq!(message.command, data, "fragment {i}"),
            Ok(None) => {}
            Err(AssembleError::InvalidCommand(_)) => break,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
});
