//! DIMSE status codes (PS3.7 Annex C) and the service-class specific codes of PS3.4.
//!
//! Several service classes reuse the same numeric value with different meanings (e.g. `0xA900` is "data set
//! does not match SOP class" for C-STORE and "identifier does not match SOP class" for C-FIND, C-MOVE and
//! C-GET; `0xB000` is "coercion of data elements" for C-STORE and "sub-operations complete, one or more
//! failures" for C-MOVE and C-GET). Such aliases are separate constants with the same value.
//!
//! [`kind`] classifies any code into a [`StatusKind`] following PS3.7 Annex C.

/// The class of a status code (PS3.7 Annex C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusKind {
    /// The operation succeeded (`0x0000`).
    Success,
    /// The operation completed with a warning (`0x0001`, `0x0107`, `0x0116`, `0xBxxx`).
    Warning,
    /// The operation failed or was refused (everything not otherwise classified).
    Failure,
    /// The operation was cancelled (`0xFE00`).
    Cancel,
    /// The operation goes on; more responses follow (`0xFF00`, `0xFF01`).
    Pending,
}

impl StatusKind {
    /// Whether the response ends the operation (anything but [`StatusKind::Pending`]).
    pub fn is_final(self) -> bool {
        self != StatusKind::Pending
    }

    /// Whether the operation succeeded, possibly with a warning.
    pub fn is_success_or_warning(self) -> bool {
        matches!(self, StatusKind::Success | StatusKind::Warning)
    }
}

impl std::fmt::Display for StatusKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StatusKind::Success => "success",
            StatusKind::Warning => "warning",
            StatusKind::Failure => "failure",
            StatusKind::Cancel => "cancel",
            StatusKind::Pending => "pending",
        })
    }
}

/// Classifies a status code per PS3.7 Annex C: `0x0000` success; `0x0001`, `0x0107`, `0x0116` and `0xBxxx`
/// warning; `0xFE00` cancel; `0xFF00` and `0xFF01` pending; everything else failure.
pub fn kind(code: u16) -> StatusKind {
    match code {
        SUCCESS => StatusKind::Success,
        WARNING_REQUESTED_OPTIONAL_ATTRIBUTES_NOT_SUPPORTED | ATTRIBUTE_LIST_ERROR | ATTRIBUTE_VALUE_OUT_OF_RANGE => {
            StatusKind::Warning
        }
        0xB000..=0xBFFF => StatusKind::Warning,
        CANCEL => StatusKind::Cancel,
        PENDING | PENDING_WARNING => StatusKind::Pending,
        _ => StatusKind::Failure,
    }
}

// --- General (PS3.7 Annex C) -------------------------------------------------------------------------------------

/// Success.
pub const SUCCESS: u16 = 0x0000;
/// Pending: matches (C-FIND) or sub-operations (C-MOVE, C-GET) are continuing.
pub const PENDING: u16 = 0xFF00;
/// Pending: matches are continuing, but one or more optional keys were not supported (C-FIND).
pub const PENDING_WARNING: u16 = 0xFF01;
/// Cancel: the operation was terminated by a C-CANCEL-RQ.
pub const CANCEL: u16 = 0xFE00;
/// Warning: requested optional attributes are not supported.
pub const WARNING_REQUESTED_OPTIONAL_ATTRIBUTES_NOT_SUPPORTED: u16 = 0x0001;
/// Warning: attribute list error (N-SET, N-CREATE).
pub const ATTRIBUTE_LIST_ERROR: u16 = 0x0107;
/// Warning: attribute value out of range (N-SET, N-CREATE).
pub const ATTRIBUTE_VALUE_OUT_OF_RANGE: u16 = 0x0116;
/// Failure: no such attribute.
pub const NO_SUCH_ATTRIBUTE: u16 = 0x0105;
/// Failure: invalid attribute value.
pub const INVALID_ATTRIBUTE_VALUE: u16 = 0x0106;
/// Failure: processing failure.
pub const PROCESSING_FAILURE: u16 = 0x0110;
/// Failure: duplicate SOP instance.
pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
/// Failure: no such object instance.
pub const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
/// Failure: no such event type.
pub const NO_SUCH_EVENT_TYPE: u16 = 0x0113;
/// Failure: no such argument.
pub const NO_SUCH_ARGUMENT: u16 = 0x0114;
/// Failure: invalid argument value.
pub const INVALID_ARGUMENT_VALUE: u16 = 0x0115;
/// Failure: invalid object instance.
pub const INVALID_OBJECT_INSTANCE: u16 = 0x0117;
/// Failure: no such SOP class.
pub const NO_SUCH_SOP_CLASS: u16 = 0x0118;
/// Failure: class-instance conflict.
pub const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
/// Failure: missing attribute.
pub const MISSING_ATTRIBUTE: u16 = 0x0120;
/// Failure: missing attribute value.
pub const MISSING_ATTRIBUTE_VALUE: u16 = 0x0121;
/// Refused: SOP class not supported.
pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
/// Failure: no such action type.
pub const NO_SUCH_ACTION_TYPE: u16 = 0x0123;
/// Refused: not authorized.
pub const NOT_AUTHORIZED: u16 = 0x0124;
/// Failure: duplicate invocation.
pub const DUPLICATE_INVOCATION: u16 = 0x0210;
/// Failure: unrecognized operation.
pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
/// Failure: mistyped argument.
pub const MISTYPED_ARGUMENT: u16 = 0x0212;
/// Failure: resource limitation.
pub const RESOURCE_LIMITATION: u16 = 0x0213;

// --- Storage service class (PS3.4 Annex B) -----------------------------------------------------------------------

/// C-STORE refused: out of resources (`0xA7xx`; this is the usual value).
pub const OUT_OF_RESOURCES: u16 = 0xA700;
/// C-STORE error: data set does not match SOP class (`0xA9xx`; this is the usual value).
pub const DATASET_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
/// C-STORE error: cannot understand (`0xCxxx`; this is the usual value).
pub const CANNOT_UNDERSTAND: u16 = 0xC000;
/// C-STORE warning: coercion of data elements.
pub const COERCION_OF_DATA_ELEMENTS: u16 = 0xB000;
/// C-STORE warning: elements discarded.
pub const ELEMENTS_DISCARDED: u16 = 0xB006;
/// C-STORE warning: data set does not match SOP class.
pub const DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING: u16 = 0xB007;

// --- Query/Retrieve service class (PS3.4 Annex C) ----------------------------------------------------------------

/// C-FIND refused: out of resources.
pub const C_FIND_OUT_OF_RESOURCES: u16 = 0xA700;
/// C-MOVE / C-GET refused: out of resources, unable to calculate number of matches.
pub const C_MOVE_OUT_OF_RESOURCES_NUMBER_OF_MATCHES: u16 = 0xA701;
/// C-GET refused: out of resources, unable to calculate number of matches.
pub const C_GET_OUT_OF_RESOURCES_NUMBER_OF_MATCHES: u16 = 0xA701;
/// C-MOVE / C-GET refused: out of resources, unable to perform sub-operations.
pub const C_MOVE_OUT_OF_RESOURCES_SUB_OPERATIONS: u16 = 0xA702;
/// C-GET refused: out of resources, unable to perform sub-operations.
pub const C_GET_OUT_OF_RESOURCES_SUB_OPERATIONS: u16 = 0xA702;
/// C-MOVE refused: move destination unknown.
pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
/// C-FIND / C-MOVE / C-GET error: identifier does not match SOP class.
pub const IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: u16 = 0xA900;
/// C-FIND / C-MOVE / C-GET failure: unable to process (`0xCxxx`; this is the lowest value).
pub const UNABLE_TO_PROCESS: u16 = 0xC000;
/// Last value of the "unable to process" / "cannot understand" range.
pub const UNABLE_TO_PROCESS_LAST: u16 = 0xCFFF;
/// C-MOVE / C-GET warning: sub-operations complete, one or more failures or warnings.
pub const SUB_OPERATIONS_COMPLETE_WITH_FAILURES: u16 = 0xB000;

/// Whether `code` is in the C-STORE "refused: out of resources" range `0xA7xx`.
pub fn is_out_of_resources(code: u16) -> bool {
    code & 0xFF00 == 0xA700
}

/// Whether `code` is in the C-STORE "error: data set does not match SOP class" range `0xA9xx` (also "identifier
/// does not match SOP class" for the query/retrieve services).
pub fn is_dataset_does_not_match_sop_class(code: u16) -> bool {
    code & 0xFF00 == 0xA900
}

/// Whether `code` is in the "cannot understand" (C-STORE) / "unable to process" (C-FIND, C-MOVE, C-GET) range
/// `0xC000..=0xCFFF`.
pub fn is_unable_to_process(code: u16) -> bool {
    (UNABLE_TO_PROCESS..=UNABLE_TO_PROCESS_LAST).contains(&code)
}

/// A short description of a status code, service-class neutral where values are shared (e.g. `0xA900` reads
/// "data set or identifier does not match SOP class").
pub fn description(code: u16) -> &'static str {
    match code {
        SUCCESS => "success",
        PENDING => "pending",
        PENDING_WARNING => "pending, optional keys not supported",
        CANCEL => "cancelled",
        WARNING_REQUESTED_OPTIONAL_ATTRIBUTES_NOT_SUPPORTED => "requested optional attributes not supported",
        ATTRIBUTE_LIST_ERROR => "attribute list error",
        ATTRIBUTE_VALUE_OUT_OF_RANGE => "attribute value out of range",
        NO_SUCH_ATTRIBUTE => "no such attribute",
        INVALID_ATTRIBUTE_VALUE => "invalid attribute value",
        PROCESSING_FAILURE => "processing failure",
        DUPLICATE_SOP_INSTANCE => "duplicate SOP instance",
        NO_SUCH_OBJECT_INSTANCE => "no such object instance",
        NO_SUCH_EVENT_TYPE => "no such event type",
        NO_SUCH_ARGUMENT => "no such argument",
        INVALID_ARGUMENT_VALUE => "invalid argument value",
        INVALID_OBJECT_INSTANCE => "invalid object instance",
        NO_SUCH_SOP_CLASS => "no such SOP class",
        CLASS_INSTANCE_CONFLICT => "class-instance conflict",
        MISSING_ATTRIBUTE => "missing attribute",
        MISSING_ATTRIBUTE_VALUE => "missing attribute value",
        SOP_CLASS_NOT_SUPPORTED => "SOP class not supported",
        NO_SUCH_ACTION_TYPE => "no such action type",
        NOT_AUTHORIZED => "not authorized",
        DUPLICATE_INVOCATION => "duplicate invocation",
        UNRECOGNIZED_OPERATION => "unrecognized operation",
        MISTYPED_ARGUMENT => "mistyped argument",
        RESOURCE_LIMITATION => "resource limitation",
        C_MOVE_OUT_OF_RESOURCES_NUMBER_OF_MATCHES => "out of resources: unable to calculate number of matches",
        C_MOVE_OUT_OF_RESOURCES_SUB_OPERATIONS => "out of resources: unable to perform sub-operations",
        MOVE_DESTINATION_UNKNOWN => "move destination unknown",
        COERCION_OF_DATA_ELEMENTS => "coercion of data elements, or sub-operations complete with failures",
        ELEMENTS_DISCARDED => "elements discarded",
        DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING => "data set does not match SOP class (warning)",
        c if is_out_of_resources(c) => "out of resources",
        c if is_dataset_does_not_match_sop_class(c) => "data set or identifier does not match SOP class",
        c if is_unable_to_process(c) => "cannot understand / unable to process",
        c => match kind(c) {
            StatusKind::Warning => "warning",
            StatusKind::Failure => "failure",
            // Every success, cancel and pending code is matched above.
            _ => "unknown status",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_annex_c() {
        assert_eq!(kind(SUCCESS), StatusKind::Success);
        for code in [0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007, 0xBFFF] {
            assert_eq!(kind(code), StatusKind::Warning, "{code:04X}");
        }
        assert_eq!(kind(CANCEL), StatusKind::Cancel);
        assert_eq!(kind(PENDING), StatusKind::Pending);
        assert_eq!(kind(PENDING_WARNING), StatusKind::Pending);
        for code in [0x0110, 0x0111, 0x0122, 0xA700, 0xA701, 0xA702, 0xA801, 0xA900, 0xC000, 0xCFFF, 0xFF02, 0xFE01] {
            assert_eq!(kind(code), StatusKind::Failure, "{code:04X}");
        }
        assert!(!StatusKind::Pending.is_final());
        assert!(StatusKind::Warning.is_success_or_warning());
        assert!(!StatusKind::Cancel.is_success_or_warning());
    }

    #[test]
    fn ranges_and_descriptions() {
        assert!(is_out_of_resources(0xA7FF));
        assert!(!is_out_of_resources(0xA800));
        assert!(is_dataset_does_not_match_sop_class(0xA912));
        assert!(is_unable_to_process(0xC123));
        assert!(!is_unable_to_process(0xD000));
        assert_eq!(description(0xC123), "cannot understand / unable to process");
        assert_eq!(description(MOVE_DESTINATION_UNKNOWN), "move destination unknown");
        assert_eq!(description(0xB123), "warning");
        assert_eq!(description(0x0999), "failure");
        for code in 0..=u16::MAX {
            assert!(!description(code).is_empty());
        }
    }
}
