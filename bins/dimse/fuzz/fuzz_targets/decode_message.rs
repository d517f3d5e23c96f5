//! Decodes arbitrary bytes as a DIMSE command set. Decoding must never panic, and any message that decodes must
//! survive an encode/decode round trip unchanged; the same holds for the generic command set.
#![no_main]

use dimse::{CommandSet, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = CommandSet::decode(data) {
        let again = CommandSet::decode(&set.encode()).expect("re-encoded command set must decode");
        assert_eq!(again, set);
    }
    if let Ok(message) = Message::decode(data) {
        let bytes = message.encode();
        let again = Message::decode(&bytes).expect("re-encoded message must decode");
        assert_eq!(again, message);
        assert_eq!(again.encode(), bytes, "encoding is deterministic");
        assert_eq!(again.has_dataset(), message.has_dataset());
    }
});
