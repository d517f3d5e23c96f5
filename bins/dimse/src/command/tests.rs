use super::*;
use crate::pdv::{fragment, MessageAssembler};
use crate::status;

const VERIFICATION: &str = "1.2.840.10008.1.1";
const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
const STORAGE_COMMITMENT: &str = "1.2.840.10008.1.20.1";
const STORAGE_COMMITMENT_INSTANCE: &str = "1.2.840.10008.1.20.1.1";

/// One implicit VR LE group-0000 element, value given exactly as on the wire (padding included).
fn el(element: u16, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0];
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn us(element: u16, value: u16) -> Vec<u8> {
    el(element, &value.to_le_bytes())
}

/// Prefixes the elements with a correct Command Group Length, as dcmtk does.
fn with_group_length(elements: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = elements.concat();
    let mut out = el(0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Every typed message, fully populated, plus minimal variants.
fn samples() -> Vec<Message> {
    vec![
        CEchoRq { message_id: 1, affected_sop_class: VERIFICATION.into() }.into(),
        CEchoRsp {
            message_id_being_responded_to: 1,
            affected_sop_class: Some(VERIFICATION.into()),
            status: status::SUCCESS,
            error_comment: None,
        }
        .into(),
        CEchoRsp { message_id_being_responded_to: 65535, status: 0x0122, ..Default::default() }.into(),
        CStoreRq {
            message_id: 42,
            affected_sop_class: CT_IMAGE_STORAGE.into(),
            affected_sop_instance: "1.2.826.0.1.3680043.2.1125.1.1234567890".into(),
            priority: Priority::High,
            move_originator_ae: Some("MOVESCU".into()),
            move_originator_message_id: Some(7),
        }
        .into(),
        CStoreRq {
            message_id: 2,
            affected_sop_class: CT_IMAGE_STORAGE.into(),
            affected_sop_instance: "1.2.3".into(),
            priority: Priority::Low,
            ..Default::default()
        }
        .into(),
        CStoreRsp {
            message_id_being_responded_to: 42,
            affected_sop_class: Some(CT_IMAGE_STORAGE.into()),
            affected_sop_instance: Some("1.2.3.4".into()),
            status: status::OUT_OF_RESOURCES,
            error_comment: Some("disk full".into()),
        }
        .into(),
        CStoreRsp { message_id_being_responded_to: 3, status: status::SUCCESS, ..Default::default() }.into(),
        CFindRq { message_id: 5, affected_sop_class: STUDY_ROOT_FIND.into(), priority: Priority::Medium }.into(),
        CFindRsp {
            message_id_being_responded_to: 5,
            affected_sop_class: Some(STUDY_ROOT_FIND.into()),
            status: status::PENDING,
            error_comment: None,
            has_dataset: true,
        }
        .into(),
        CFindRsp {
            message_id_being_responded_to: 5,
            status: status::UNABLE_TO_PROCESS,
            error_comment: Some("bad query".into()),
            ..Default::default()
        }
        .into(),
        CMoveRq {
            message_id: 9,
            affected_sop_class: STUDY_ROOT_MOVE.into(),
            priority: Priority::Medium,
            move_destination: "STORESCP".into(),
        }
        .into(),
        CMoveRsp {
            message_id_being_responded_to: 9,
            affected_sop_class: Some(STUDY_ROOT_MOVE.into()),
            status: status::PENDING,
            sub_operations: SubOperations {
                remaining: Some(10),
                completed: Some(2),
                failed: Some(0),
                warning: Some(1),
            },
            error_comment: None,
            has_dataset: false,
        }
        .into(),
        CMoveRsp {
            message_id_being_responded_to: 9,
            status: status::SUB_OPERATIONS_COMPLETE_WITH_FAILURES,
            sub_operations: SubOperations { completed: Some(3), failed: Some(1), ..Default::default() },
            has_dataset: true,
            ..Default::default()
        }
        .into(),
        CGetRq { message_id: 11, affected_sop_class: STUDY_ROOT_GET.into(), priority: Priority::High }.into(),
        CGetRsp {
            message_id_being_responded_to: 11,
            affected_sop_class: Some(STUDY_ROOT_GET.into()),
            status: status::SUCCESS,
            sub_operations: SubOperations { remaining: Some(0), completed: Some(5), failed: Some(0), warning: Some(0) },
            error_comment: None,
            has_dataset: false,
        }
        .into(),
        CGetRsp { message_id_being_responded_to: 11, status: status::CANCEL, ..Default::default() }.into(),
        CCancelRq { message_id_being_responded_to: 5 }.into(),
        NActionRq {
            message_id: 13,
            requested_sop_class: STORAGE_COMMITMENT.into(),
            requested_sop_instance: STORAGE_COMMITMENT_INSTANCE.into(),
            action_type_id: 1,
            has_dataset: true,
        }
        .into(),
        NActionRsp {
            message_id_being_responded_to: 13,
            affected_sop_class: Some(STORAGE_COMMITMENT.into()),
            affected_sop_instance: Some(STORAGE_COMMITMENT_INSTANCE.into()),
            status: status::SUCCESS,
            action_type_id: Some(1),
            error_comment: None,
            has_dataset: false,
        }
        .into(),
        NActionRsp { message_id_being_responded_to: 13, status: status::NO_SUCH_ACTION_TYPE, ..Default::default() }
            .into(),
        NEventReportRq {
            message_id: 1,
            affected_sop_class: STORAGE_COMMITMENT.into(),
            affected_sop_instance: STORAGE_COMMITMENT_INSTANCE.into(),
            event_type_id: 2,
            has_dataset: true,
        }
        .into(),
        NEventReportRsp {
            message_id_being_responded_to: 1,
            affected_sop_class: Some(STORAGE_COMMITMENT.into()),
            affected_sop_instance: Some(STORAGE_COMMITMENT_INSTANCE.into()),
            status: status::SUCCESS,
            event_type_id: Some(2),
            error_comment: Some("odd".into()),
            has_dataset: false,
        }
        .into(),
        NEventReportRsp { message_id_being_responded_to: 1, status: status::PROCESSING_FAILURE, ..Default::default() }
            .into(),
    ]
}

// --- round trips -------------------------------------------------------------------------------------------------

#[test]
fn every_message_type_round_trips() {
    let samples = samples();
    let mut seen = std::collections::HashSet::new();
    for message in &samples {
        seen.insert(message.command_field());
        let bytes = message.encode();
        let decoded = Message::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", message.command_field()));
        assert_eq!(&decoded, message);
        assert_eq!(decoded.encode(), bytes, "re-encoding is byte-identical");
        assert_eq!(bytes.len() % 2, 0);
        // Group length is right and elements are sorted.
        let declared = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(declared, bytes.len() - 12);
        let cs = CommandSet::decode(&bytes).unwrap();
        let order: Vec<u16> = cs.iter().map(|(e, _)| e).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted);
        assert_eq!(Message::from_command_set(&message.to_command_set()).unwrap(), *message);
        assert_eq!(message.has_dataset(), cs.has_dataset().unwrap());
        assert_eq!(message.is_response(), message.status().is_some());
        assert_eq!(
            message.is_response() || message.command_field() == CommandField::CCancelRq,
            message.message_id().is_none()
        );
    }
    assert_eq!(seen.len(), 15, "all typed messages are covered");
}

#[test]
fn typed_encode_decode_helpers() {
    let rq = CStoreRq {
        message_id: 1,
        affected_sop_class: CT_IMAGE_STORAGE.into(),
        affected_sop_instance: "1.2".into(),
        ..Default::default()
    };
    assert_eq!(CStoreRq::decode(&rq.encode()).unwrap(), rq);
    assert_eq!(CStoreRq::COMMAND_FIELD, CommandField::CStoreRq);
    let err = CEchoRq::decode(&rq.encode()).unwrap_err();
    assert_eq!(err, DecodeError::UnexpectedCommandField { expected: CommandField::CEchoRq, found: 0x0001 });
    assert_eq!(err.to_string(), "expected command field C-ECHO-RQ, found 0x0001");
}

#[test]
fn untyped_messages_keep_their_command_set() {
    // An N-CREATE-RQ (MPPS), which has no typed struct.
    let bytes = with_group_length(&[
        el(0x0002, b"1.2.840.10008.3.1.2.3.3\0"),
        us(0x0100, 0x0140),
        us(0x0110, 3),
        us(0x0800, 0x0102),
        el(0x1000, b"1.2.3.4\0"),
    ]);
    let message = Message::decode(&bytes).unwrap();
    assert_eq!(message.command_field(), CommandField::NCreateRq);
    assert!(message.has_dataset());
    assert_eq!(message.message_id(), Some(3));
    assert_eq!(message.status(), None);
    assert_eq!(message.encode(), bytes);
    let Message::Other(untyped) = &message else { panic!("expected Other") };
    assert_eq!(untyped.command_set().text(tags::AFFECTED_SOP_INSTANCE_UID).unwrap(), Some("1.2.3.4"));
    assert_eq!(Message::decode(&message.encode()).unwrap(), message);
}

// --- bytes as dcmtk writes them ------------------------------------------------------------------------------------

#[test]
fn decodes_dcmtk_c_echo_rq() {
    // echoscu's C-ECHO-RQ, byte for byte (identical to the first of DCMTK_CAPTURES).
    #[rustfmt::skip]
    let bytes: Vec<u8> = vec![
        0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x38, 0x00, 0x00, 0x00, // (0000,0000) UL 56
        0x00, 0x00, 0x02, 0x00, 0x12, 0x00, 0x00, 0x00,                         // (0000,0002) UI len 18
        b'1', b'.', b'2', b'.', b'8', b'4', b'0', b'.', b'1', b'0', b'0', b'0', b'8', b'.', b'1', b'.', b'1', 0x00,
        0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x30, 0x00,             // (0000,0100) US 0x0030
        0x00, 0x00, 0x10, 0x01, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00,             // (0000,0110) US 1
        0x00, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01,             // (0000,0800) US 0x0101
    ];
    let message = Message::decode(&bytes).unwrap();
    assert_eq!(message, Message::CEchoRq(CEchoRq { message_id: 1, affected_sop_class: VERIFICATION.into() }));
    assert!(!message.has_dataset());
    assert_eq!(message.encode(), bytes, "our encoding is identical to dcmtk's");
}

#[test]
fn decodes_dcmtk_c_echo_rsp() {
    let bytes = with_group_length(&[
        el(0x0002, b"1.2.840.10008.1.1\0"),
        us(0x0100, 0x8030),
        us(0x0120, 1),
        us(0x0800, 0x0101),
        us(0x0900, 0x0000),
    ]);
    let message = Message::decode(&bytes).unwrap();
    assert_eq!(
        message,
        Message::CEchoRsp(CEchoRsp {
            message_id_being_responded_to: 1,
            affected_sop_class: Some(VERIFICATION.into()),
            status: 0,
            error_comment: None,
        })
    );
    assert_eq!(message.encode(), bytes);
}

#[test]
fn decodes_dcmtk_c_store_rq_and_rsp() {
    // storescu (as a C-MOVE sub-operation): data set type 0x0001 ("present"), priority medium, instance UID of
    // odd length padded with NUL, AE title padded with space.
    let rq = with_group_length(&[
        el(0x0002, b"1.2.840.10008.5.1.4.1.1.2\0"),
        us(0x0100, 0x0001),
        us(0x0110, 1),
        us(0x0700, 0x0000),
        us(0x0800, 0x0001),
        el(0x1000, b"1.2.276.0.7230010.3.1.4.1\0"),
        el(0x1030, b"MOVESCU "),
        us(0x1031, 17),
    ]);
    let Message::CStoreRq(decoded) = Message::decode(&rq).unwrap() else { panic!("expected C-STORE-RQ") };
    assert_eq!(decoded.affected_sop_class, CT_IMAGE_STORAGE);
    assert_eq!(decoded.affected_sop_instance, "1.2.276.0.7230010.3.1.4.1");
    assert_eq!(decoded.priority, Priority::Medium);
    assert_eq!(decoded.move_originator_ae.as_deref(), Some("MOVESCU"));
    assert_eq!(decoded.move_originator_message_id, Some(17));
    assert_eq!(decoded.encode(), rq);
    // Any value but 0x0101 announces a data set, e.g. 0x0000 from some older implementations.
    let mut zero = CommandSet::decode(&rq).unwrap();
    zero.insert(tags::COMMAND_DATA_SET_TYPE, Value::Us(0x0000));
    assert!(Message::from_command_set(&zero).unwrap().has_dataset());

    // storescp's response.
    let rsp = with_group_length(&[
        el(0x0002, b"1.2.840.10008.5.1.4.1.1.2\0"),
        us(0x0100, 0x8001),
        us(0x0120, 1),
        us(0x0800, 0x0101),
        us(0x0900, 0x0000),
        el(0x1000, b"1.2.276.0.7230010.3.1.4.1\0"),
    ]);
    let message = Message::decode(&rsp).unwrap();
    assert_eq!(
        message,
        Message::CStoreRsp(CStoreRsp {
            message_id_being_responded_to: 1,
            affected_sop_class: Some(CT_IMAGE_STORAGE.into()),
            affected_sop_instance: Some("1.2.276.0.7230010.3.1.4.1".into()),
            status: 0,
            error_comment: None,
        })
    );
    assert_eq!(message.encode(), rsp);
}

#[test]
fn decodes_dcmtk_c_find_rsp_pending_and_c_move_rsp() {
    let find = with_group_length(&[
        el(0x0002, b"1.2.840.10008.5.1.4.1.2.2.1\0"),
        us(0x0100, 0x8020),
        us(0x0120, 1),
        us(0x0800, 0x0001),
        us(0x0900, 0xFF00),
    ]);
    let message = Message::decode(&find).unwrap();
    assert!(message.has_dataset());
    assert_eq!(message.status(), Some(status::PENDING));
    assert_eq!(status::kind(message.status().unwrap()), status::StatusKind::Pending);

    let moved = with_group_length(&[
        el(0x0002, b"1.2.840.10008.5.1.4.1.2.2.2\0"),
        us(0x0100, 0x8021),
        us(0x0120, 3),
        us(0x0800, 0x0101),
        us(0x0900, 0x0000),
        us(0x1020, 0),
        us(0x1021, 12),
        us(0x1022, 0),
        us(0x1023, 0),
    ]);
    let Message::CMoveRsp(rsp) = Message::decode(&moved).unwrap() else { panic!("expected C-MOVE-RSP") };
    assert_eq!(
        rsp.sub_operations,
        SubOperations { remaining: Some(0), completed: Some(12), failed: Some(0), warning: Some(0) }
    );
    assert_eq!(rsp.encode(), moved);
}

/// Command PDVs captured on the wire between dcmtk 3.6.7 `echoscu`/`storescu` and `storescp` (a logging TCP proxy
/// between them; one complete command fragment each).
const DCMTK_CAPTURES: [(&str, CommandField); 4] = [
    (
        "0000000004000000380000000000020012000000312e322e3834302e31303030382e312e310000000001020000003000000010010200\
         0000010000000008020000000101",
        CommandField::CEchoRq,
    ),
    (
        "0000000004000000420000000000020012000000312e322e3834302e31303030382e312e310000000001020000003080000020010200\
         000001000000000802000000010100000009020000000000",
        CommandField::CEchoRsp,
    ),
    (
        "00000000040000006c000000000002001a000000312e322e3834302e31303030382e352e312e342e312e312e32000000000102000000\
         0100000010010200000001000000000702000000000000000008020000000100000000101a000000312e322e3237362e302e37323330\
         3031302e332e312e342e3100",
        CommandField::CStoreRq,
    ),
    (
        "00000000040000006c000000000002001a000000312e322e3834302e31303030382e352e312e342e312e312e32000000000102000000\
         0180000020010200000001000000000802000000010100000009020000000000000000101a000000312e322e3237362e302e37323330\
         3031302e332e312e342e3100",
        CommandField::CStoreRsp,
    ),
];

fn unhex(hex: &str) -> Vec<u8> {
    let digits: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

#[test]
fn decodes_and_reproduces_real_dcmtk_captures() {
    for (hex, field) in DCMTK_CAPTURES {
        let bytes = unhex(hex);
        let message = Message::decode(&bytes).unwrap_or_else(|e| panic!("{field}: {e}"));
        assert_eq!(message.command_field(), field);
        assert_eq!(message.encode(), bytes, "{field}: our encoding is byte-identical to dcmtk's");
    }
    let store = Message::decode(&unhex(DCMTK_CAPTURES[2].0)).unwrap();
    assert_eq!(
        store,
        Message::CStoreRq(CStoreRq {
            message_id: 1,
            affected_sop_class: CT_IMAGE_STORAGE.into(),
            affected_sop_instance: "1.2.276.0.7230010.3.1.4.1".into(),
            priority: Priority::Medium,
            move_originator_ae: None,
            move_originator_message_id: None,
        })
    );
    assert!(store.has_dataset());
    let rsp = Message::decode(&unhex(DCMTK_CAPTURES[3].0)).unwrap();
    assert_eq!(rsp.status(), Some(status::SUCCESS));
    assert_eq!(rsp.message_id_being_responded_to(), Some(1));
    assert!(!rsp.has_dataset());
}

// --- command set codec details ------------------------------------------------------------------------------------

#[test]
fn encoding_pads_and_sorts() {
    let mut cs = CommandSet::new();
    cs.insert(tags::ERROR_COMMENT, Value::Lo("abc".into()));
    cs.insert(tags::AFFECTED_SOP_CLASS_UID, Value::Ui("1.2.3".into()));
    cs.insert(tags::MOVE_DESTINATION, Value::Ae("AE".into()));
    cs.insert(tags::OFFENDING_ELEMENT, Value::At(vec![AttributeTag { group: 0x0010, element: 0x0020 }]));
    cs.insert(0x4000, Value::Other(vec![1, 2, 3]));
    cs.insert(tags::COMMAND_GROUP_LENGTH, Value::Ul(12345)); // ignored by the encoder
    let bytes = cs.encode();
    let expected = with_group_length(&[
        el(0x0002, b"1.2.3\0"),
        el(0x0600, b"AE"),
        el(0x0901, &[0x10, 0x00, 0x20, 0x00]),
        el(0x0902, b"abc "),
        el(0x4000, &[1, 2, 3, 0]),
    ]);
    assert_eq!(bytes, expected);
    let decoded = CommandSet::decode(&bytes).unwrap();
    assert_eq!(decoded.get(tags::COMMAND_GROUP_LENGTH), None);
    assert_eq!(decoded.text(tags::ERROR_COMMENT).unwrap(), Some("abc"));
    assert_eq!(decoded.tags(tags::OFFENDING_ELEMENT).unwrap().unwrap()[0].to_string(), "(0010,0020)");
    assert_eq!(decoded.get(0x4000), Some(&Value::Other(vec![1, 2, 3, 0])));
    assert_eq!(decoded.len(), 5);
}

#[test]
fn decoding_is_lenient_where_peers_are_sloppy() {
    // No group length, elements out of order, space-padded UID, odd-length text, unknown retired element.
    let bytes = [
        us(0x0800, 0x0101),
        el(0x0002, b"1.2.840.10008.1.1 "),
        us(0x0110, 5),
        us(0x0100, 0x0030),
        el(0x0600, b"  DEST"),
        el(0x0902, b"odd"),
        el(0x0001, &[0, 0, 0, 0]),
    ]
    .concat();
    let cs = CommandSet::decode(&bytes).unwrap();
    assert_eq!(cs.text(tags::AFFECTED_SOP_CLASS_UID).unwrap(), Some(VERIFICATION));
    assert_eq!(cs.text(tags::MOVE_DESTINATION).unwrap(), Some("DEST"));
    assert_eq!(cs.text(tags::ERROR_COMMENT).unwrap(), Some("odd"));
    assert_eq!(
        Message::decode(&bytes).unwrap(),
        Message::CEchoRq(CEchoRq { message_id: 5, affected_sop_class: VERIFICATION.into() })
    );
    // Non-UTF-8 text in LO is replaced, not rejected.
    let cs = CommandSet::decode(&el(0x0902, b"caf\xe9")).unwrap();
    assert_eq!(cs.text(tags::ERROR_COMMENT).unwrap(), Some("caf\u{fffd}"));
}

#[test]
fn typed_accessors_report_wrong_types() {
    let mut cs = CommandSet::new();
    cs.insert(tags::COMMAND_FIELD, Value::Ui("x".into()));
    let err = cs.command_field().unwrap_err();
    assert_eq!(err, DecodeError::WrongValueType { element: tags::COMMAND_FIELD, expected: Vr::US, found: Vr::UI });
    assert_eq!(err.to_string(), "element CommandField (0000,0100) holds a UI value, expected US");
    cs.insert(tags::COMMAND_FIELD, Value::Us(0x0030));
    cs.insert(tags::AFFECTED_SOP_CLASS_UID, Value::Lo("x".into()));
    assert!(matches!(cs.text(tags::AFFECTED_SOP_CLASS_UID), Err(DecodeError::WrongValueType { .. })));
    assert!(matches!(cs.ul(tags::COMMAND_FIELD), Err(DecodeError::WrongValueType { .. })));
    assert!(matches!(cs.tags(tags::COMMAND_FIELD), Err(DecodeError::WrongValueType { .. })));
    assert_eq!(cs.us(tags::STATUS).unwrap(), None);
    assert_eq!(CommandField::try_from(0x0FFF).unwrap(), CommandField::CCancelRq);
    assert_eq!(u16::from(CommandField::NDeleteRsp), 0x8150);
    assert!(CommandField::ALL.iter().all(|c| CommandField::from_u16(c.to_u16()) == Some(*c)));
    assert_eq!(CommandField::ALL.iter().filter(|c| c.is_response()).count(), 11);
}

// --- error cases ---------------------------------------------------------------------------------------------------

fn echo_rq_bytes() -> Vec<u8> {
    CEchoRq { message_id: 1, affected_sop_class: VERIFICATION.into() }.encode()
}

#[test]
fn rejects_truncated_input() {
    let bytes = echo_rq_bytes();
    for cut in 1..bytes.len() {
        let err = Message::decode(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Truncated { .. }
                    | DecodeError::LengthPastEnd { .. }
                    | DecodeError::GroupLengthMismatch { .. }
                    | DecodeError::BadLength { .. }
            ),
            "cut at {cut}: {err}"
        );
    }
    let err = CommandSet::decode(&[0, 0, 0, 1, 2]).unwrap_err();
    assert_eq!(err, DecodeError::Truncated { offset: 0, available: 5 });
    assert_eq!(err.to_string(), "truncated command set: element header at offset 0 needs 8 bytes, only 5 left");
    // Empty input is a well-formed, empty command set, but no message.
    assert!(CommandSet::decode(&[]).unwrap().is_empty());
    assert_eq!(Message::decode(&[]).unwrap_err().to_string(), "missing required element CommandField (0000,0100)");
}

#[test]
fn rejects_group_length_mismatch() {
    let mut bytes = echo_rq_bytes();
    bytes[8] += 2;
    let err = Message::decode(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::GroupLengthMismatch { declared: 58, actual: 56 });
    assert_eq!(err.to_string(), "command group length mismatch: (0000,0000) declares 58 bytes but 56 follow");

    // Trailing bytes after the group.
    let mut bytes = echo_rq_bytes();
    bytes.extend_from_slice(&us(0x0900, 0));
    assert!(matches!(Message::decode(&bytes), Err(DecodeError::GroupLengthMismatch { declared: 56, actual: 66 })));

    // Group length of the wrong size, and not first.
    let bytes = el(0x0000, &[0, 0]);
    assert!(matches!(CommandSet::decode(&bytes), Err(DecodeError::BadLength { element: 0, vr: Vr::UL, length: 2 })));
    let bytes = [us(0x0100, 0x0030), el(0x0000, &[0, 0, 0, 0])].concat();
    assert_eq!(CommandSet::decode(&bytes), Err(DecodeError::MisplacedGroupLength { offset: 10 }));
}

#[test]
fn rejects_missing_required_elements() {
    let no_field = with_group_length(&[el(0x0002, b"1.2.840.10008.1.1\0"), us(0x0110, 1), us(0x0800, 0x0101)]);
    let err = Message::decode(&no_field).unwrap_err();
    assert_eq!(err, DecodeError::MissingElement { name: "CommandField", element: 0x0100 });

    let no_message_id =
        with_group_length(&[el(0x0002, b"1.2.840.10008.1.1\0"), us(0x0100, 0x0030), us(0x0800, 0x0101)]);
    assert_eq!(
        Message::decode(&no_message_id).unwrap_err().to_string(),
        "missing required element MessageID (0000,0110)"
    );

    let no_data_set_type = with_group_length(&[el(0x0002, b"1.2\0"), us(0x0100, 0x0030), us(0x0110, 1)]);
    assert_eq!(
        Message::decode(&no_data_set_type).unwrap_err(),
        DecodeError::MissingElement { name: "CommandDataSetType", element: 0x0800 }
    );

    let no_status = with_group_length(&[us(0x0100, 0x8001), us(0x0120, 1), us(0x0800, 0x0101)]);
    assert_eq!(Message::decode(&no_status).unwrap_err().to_string(), "missing required element Status (0000,0900)");
}

#[test]
fn rejects_elements_outside_group_0000() {
    // A data set element (0008,0018) after the command set, covered by the group length or not.
    let foreign = [0x08, 0x00, 0x18, 0x00, 0x02, 0x00, 0x00, 0x00, b'1', 0];
    let mut bytes = echo_rq_bytes();
    bytes.extend_from_slice(&foreign);
    let err = CommandSet::decode(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::OutsideCommandGroup { group: 0x0008, element: 0x0018, offset: 68 });
    assert_eq!(err.to_string(), "element (0008,0018) at offset 68 is outside command group 0000");
    bytes[8] += foreign.len() as u8;
    assert!(matches!(Message::decode(&bytes), Err(DecodeError::OutsideCommandGroup { offset: 68, .. })));
    // Without a group length, first element.
    assert!(matches!(CommandSet::decode(&foreign), Err(DecodeError::OutsideCommandGroup { offset: 0, .. })));
}

#[test]
fn rejects_absurd_and_undefined_lengths() {
    let mut bytes = vec![0, 0, 0x02, 0x00];
    bytes.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    bytes.extend_from_slice(b"1.2.3\0");
    let err = CommandSet::decode(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::LengthPastEnd { element: 2, offset: 0, length: 0xFFFF_FFF0, available: 6 });
    assert_eq!(
        err.to_string(),
        "value length 4294967280 of element AffectedSOPClassUID (0000,0002) at offset 0 runs past the end of the \
         command set (6 bytes left)"
    );
    // The same inside a group-length-framed command.
    let mut framed = echo_rq_bytes();
    framed[12 + 4..12 + 8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    assert!(matches!(Message::decode(&framed), Err(DecodeError::LengthPastEnd { length: 0xFFFF_FFF0, .. })));

    let mut undefined = vec![0, 0, 0x02, 0x00];
    undefined.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(CommandSet::decode(&undefined), Err(DecodeError::UndefinedLength { element: 2 }));
}

#[test]
fn rejects_bad_value_lengths() {
    let err = CommandSet::decode(&el(0x0100, &[0x30])).unwrap_err();
    assert_eq!(err, DecodeError::BadLength { element: 0x0100, vr: Vr::US, length: 1 });
    assert_eq!(err.to_string(), "bad value length 1 for US element CommandField (0000,0100)");
    assert!(matches!(CommandSet::decode(&el(0x0110, &[1, 0, 0, 0])), Err(DecodeError::BadLength { length: 4, .. })));
    assert!(matches!(CommandSet::decode(&el(0x0110, &[])), Err(DecodeError::BadLength { length: 0, .. })));
    assert!(matches!(CommandSet::decode(&el(0x0901, &[1, 0, 0])), Err(DecodeError::BadLength { vr: Vr::AT, .. })));
    assert!(matches!(CommandSet::decode(&el(0x4000, &[1])), Err(DecodeError::BadLength { vr: Vr::Unknown, .. })));
}

#[test]
fn rejects_semantic_errors() {
    let dup = [us(0x0100, 0x0030), us(0x0100, 0x0030)].concat();
    assert_eq!(CommandSet::decode(&dup), Err(DecodeError::DuplicateElement { element: 0x0100 }));

    let unknown = with_group_length(&[us(0x0100, 0x1234), us(0x0800, 0x0101)]);
    let err = Message::decode(&unknown).unwrap_err();
    assert_eq!(err, DecodeError::UnknownCommandField(0x1234));
    assert_eq!(err.to_string(), "unknown command field 0x1234");

    let non_ascii = el(0x0002, "1.2.é\0".as_bytes());
    assert_eq!(CommandSet::decode(&non_ascii), Err(DecodeError::NonAsciiUid { element: 2 }));

    let bad_priority = with_group_length(&[
        el(0x0002, b"1.2\0"),
        us(0x0100, 0x0020),
        us(0x0110, 1),
        us(0x0700, 3),
        us(0x0800, 0x0001),
    ]);
    assert_eq!(Message::decode(&bad_priority), Err(DecodeError::InvalidPriority(3)));

    // C-STORE-RQ announcing no data set; C-ECHO-RQ announcing one.
    let mut store = CStoreRq { affected_sop_class: "1.2".into(), ..Default::default() }.to_command_set();
    store.insert(tags::COMMAND_DATA_SET_TYPE, Value::Us(NO_DATA_SET));
    let err = Message::from_command_set(&store).unwrap_err();
    assert_eq!(err.to_string(), "command data set type 0x0101 is not allowed for C-STORE-RQ");
    let mut echo = CEchoRq::default().to_command_set();
    echo.insert(tags::COMMAND_DATA_SET_TYPE, Value::Us(0x0000));
    assert_eq!(
        Message::from_command_set(&echo),
        Err(DecodeError::DataSetTypeMismatch { command: CommandField::CEchoRq, data_set_type: 0 })
    );
}

// --- deterministic garbage --------------------------------------------------------------------------------------

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        if bytes.is_empty() {
            bytes.push(rng.byte());
            continue;
        }
        let at = rng.below(bytes.len());
        match rng.below(8) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.byte(),
            2 => bytes.truncate(at),
            3 => {
                let extra: Vec<u8> = (0..1 + rng.below(12)).map(|_| rng.byte()).collect();
                bytes.splice(at..at, extra);
            }
            4 => {
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                let chunk = bytes[at..end].to_vec();
                bytes.splice(at..at, chunk);
            }
            5 => {
                let end = (at + 4).min(bytes.len());
                let value = [0xFFFF_FFF0u32, u32::MAX, 0, 1, 2, 3, 4][rng.below(7)].to_le_bytes();
                bytes[at..end].copy_from_slice(&value[..end - at]);
            }
            6 => {
                // Swap two bytes inside one element value or header.
                let other = (at + 1).min(bytes.len() - 1);
                bytes.swap(at, other);
            }
            _ => {
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
        }
    }
    // Usually fix up the group length, so that mutations reach the element and message decoders.
    if rng.below(4) != 0 && bytes.len() >= 12 {
        let len = (bytes.len() - 12) as u32;
        bytes[8..12].copy_from_slice(&len.to_le_bytes());
    }
    bytes
}

/// Structure-aware mutation: edits elements of a valid command set, so the typed decoders see well-formed sets
/// with missing, extra or odd values.
fn mutate_elements(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    const ELEMENTS: [u16; 14] = [
        0x0002, 0x0003, 0x0100, 0x0110, 0x0120, 0x0600, 0x0700, 0x0800, 0x0900, 0x0902, 0x1000, 0x1008, 0x1020, 0x4000,
    ];
    let Ok(mut cs) = CommandSet::decode(seed) else { return seed.to_vec() };
    for _ in 0..1 + rng.below(3) {
        let element = ELEMENTS[rng.below(ELEMENTS.len())];
        match rng.below(4) {
            0 => {
                cs.remove(element);
            }
            1 => {
                let value = [0x0000, 0x0001, 0x0002, 0x0003, 0x0101, 0x0FFF, 0x8001, 0x8130, 0xFF00, rng.next() as u16];
                cs.insert(element, Value::Us(value[rng.below(value.len())]));
            }
            2 => {
                let text: String = (0..rng.below(12)).map(|_| char::from(b' ' + (rng.byte() % 95))).collect();
                cs.insert(element, Value::Ui(text));
            }
            _ => {
                let field = CommandField::ALL[rng.below(CommandField::ALL.len())];
                cs.insert(tags::COMMAND_FIELD, Value::Us(field.to_u16()));
            }
        }
    }
    cs.encode()
}

#[test]
fn garbage_never_panics_and_decoded_messages_round_trip() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let seeds: Vec<Vec<u8>> = samples().iter().map(Message::encode).collect();
    let (mut ok_messages, mut ok_sets) = (0, 0);
    for i in 0..10_000 {
        let input = if i % 4 == 0 {
            (0..rng.below(256)).map(|_| rng.byte()).collect()
        } else if i % 4 == 1 {
            let seed = seeds[rng.below(seeds.len())].clone();
            mutate_elements(&mut rng, &seed)
        } else {
            let seed = seeds[rng.below(seeds.len())].clone();
            mutate(&mut rng, seed)
        };
        if let Ok(cs) = CommandSet::decode(&input) {
            ok_sets += 1;
            assert_eq!(CommandSet::decode(&cs.encode()).as_ref(), Ok(&cs), "input {input:02X?}");
        }
        if let Ok(message) = Message::decode(&input) {
            ok_messages += 1;
            let again = Message::decode(&message.encode());
            assert_eq!(again.as_ref(), Ok(&message), "input {input:02X?}");
            let _ = (message.has_dataset(), message.status(), message.message_id());
        }
        // Drive the assembler with the same bytes cut into fragments.
        let mut asm = MessageAssembler::new(64);
        for (n, piece) in input.chunks(1 + rng.below(40)).enumerate() {
            let flags = rng.below(4);
            let pc = if rng.below(10) == 0 { 3 } else { 1 };
            let _ = asm.push_parts(pc, flags & 1 == 0 || n == 0, flags & 2 != 0, piece);
            assert!(asm.buffered_len() <= 64 + crate::pdv::DEFAULT_MAX_COMMAND_LEN);
        }
        // And with a valid framing of the input.
        let mut asm = MessageAssembler::new(1024);
        for f in fragment(1, true, &input, 32) {
            if let Ok(Some(m)) = asm.push(f) {
                assert_eq!(m.command, input);
            }
        }
    }
    // Make sure the mutations reach the typed decoders rather than failing early every time.
    eprintln!("{ok_sets} command sets and {ok_messages} messages decoded");
    assert!(ok_sets > 1000, "only {ok_sets} command sets decoded");
    assert!(ok_messages > 500, "only {ok_messages} messages decoded");
}
