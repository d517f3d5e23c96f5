//! C-FIND identifiers: from a request data set to a core query, and from a catalog row
//! to a response data set holding exactly the requested keys.

use archive_core::attribute::{Attribute, Level};
use archive_core::query::{Query, QueryKeyError, QueryRow};
use dicom_core::header::Header;
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_encoding::text::SpecificCharacterSet;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

const QUERY_RETRIEVE_LEVEL: Tag = Tag(0x0008, 0x0052);
const SPECIFIC_CHARACTER_SET: Tag = Tag(0x0008, 0x0005);
const RETRIEVE_AE_TITLE: Tag = Tag(0x0008, 0x0054);
const INSTANCE_AVAILABILITY: Tag = Tag(0x0008, 0x0056);

/// Why an identifier cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentifierError {
    /// The transfer syntax of the presentation context is unknown.
    #[error("unsupported transfer syntax {0}")]
    TransferSyntax(String),
    /// The data set cannot be decoded.
    #[error("cannot decode the identifier: {0}")]
    Decode(String),
    /// Query/Retrieve Level is missing or unknown.
    #[error("missing or invalid QueryRetrieveLevel {0:?}")]
    Level(String),
    /// A key value cannot be parsed.
    #[error(transparent)]
    Key(#[from] QueryKeyError),
    /// The response cannot be encoded.
    #[error("cannot encode the response: {0}")]
    Encode(String),
}

/// What a requested key returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// A catalog attribute.
    Attribute(Attribute),
    /// Retrieve AE Title: the archive's.
    RetrieveAeTitle,
    /// Instance Availability, from the tiers holding the objects.
    Availability,
    /// A key the catalog does not hold: returned empty.
    Unsupported,
}

/// A decoded C-FIND identifier.
#[derive(Debug, Clone)]
pub struct FindRequest {
    /// The core query.
    pub query: Query,
    /// Whether a key the catalog does not hold carries a value to match: matches are then
    /// reported as "pending, optional keys not supported" (FF01).
    pub unsupported_constraint: bool,
    /// Requested keys with their VR, in request order.
    pub returned: Vec<(Tag, VR, Returned)>,
}

/// Decodes an identifier in the given transfer syntax.
pub fn decode(dataset: &[u8], ts_uid: &str) -> Result<FindRequest, IdentifierError> {
    let obj = decode_small_dataset(dataset, ts_uid).map_err(IdentifierError::Decode)?;
    let level_text = obj
        .element_opt(QUERY_RETRIEVE_LEVEL)
        .ok()
        .flatten()
        .and_then(|e| e.value().to_str().ok().map(|s| s.trim().to_string()))
        .unwrap_or_default();
    let level = Level::from_dicom(&level_text).ok_or(IdentifierError::Level(level_text))?;
    let mut query = Query::new(level);
    let mut returned = Vec::new();
    let mut unsupported_constraint = false;
    for el in &obj {
        let tag = el.tag();
        if tag == QUERY_RETRIEVE_LEVEL || tag == SPECIFIC_CHARACTER_SET {
            continue;
        }
        let kind = match tag {
            RETRIEVE_AE_TITLE => Returned::RetrieveAeTitle,
            INSTANCE_AVAILABILITY => Returned::Availability,
            Tag(g, e) => match Attribute::from_tag(g, e) {
                Some(a) => {
                    let raw = if el.vr() == VR::SQ { String::new() } else { value_text(el) };
                    query.add(a, &raw)?;
                    Returned::Attribute(a)
                }
                None => {
                    unsupported_constraint |= el.vr() != VR::SQ && !value_text(el).is_empty();
                    Returned::Unsupported
                }
            },
        };
        returned.push((tag, el.vr(), kind));
    }
    // The unique keys of the level and the levels above are always returned.
    let unique: &[Attribute] = match level {
        Level::Patient => &[Attribute::PatientID],
        Level::Study => &[Attribute::StudyInstanceUID],
        Level::Series => &[Attribute::StudyInstanceUID, Attribute::SeriesInstanceUID],
        Level::Instance => &[Attribute::StudyInstanceUID, Attribute::SeriesInstanceUID, Attribute::SOPInstanceUID],
    };
    for a in unique {
        let (g, e) = a.group_element();
        if !returned.iter().any(|(t, _, _)| *t == Tag(g, e)) {
            let vr = if a.match_vr() == archive_core::matching::MatchVr::Ui { VR::UI } else { VR::LO };
            returned.push((Tag(g, e), vr, Returned::Attribute(*a)));
        }
    }
    Ok(FindRequest { query, unsupported_constraint, returned })
}

/// Largest identifier or action data set decoded (they hold keys, never bulk data).
pub const MAX_SMALL_DATASET: usize = 1 << 20;

/// Decodes a small data set (identifier, N-ACTION information) after checking with the core's
/// bounds-checked walk that every element fits in the bytes received, so that a hostile length
/// cannot make the decoder allocate gigabytes.
pub fn decode_small_dataset(dataset: &[u8], ts_uid: &str) -> Result<InMemDicomObject, String> {
    if dataset.len() > MAX_SMALL_DATASET {
        return Err(format!("data set of {} bytes is larger than {MAX_SMALL_DATASET}", dataset.len()));
    }
    let ts = TransferSyntaxRegistry.get(ts_uid).ok_or_else(|| format!("unsupported transfer syntax {ts_uid}"))?;
    let (explicit, big_endian) = match ts_uid {
        "1.2.840.10008.1.2" => (false, false),
        "1.2.840.10008.1.2.2" => (true, true),
        "1.2.840.10008.1.2.1.99" => return Err("deflated identifiers are not supported".into()),
        _ => (true, false),
    };
    archive_core::walk::check_complete(dataset, explicit, big_endian)?;
    InMemDicomObject::read_dataset_with_ts(dataset, ts).map_err(|e| e.to_string())
}

fn value_text(el: &dicom_object::mem::InMemElement) -> String {
    match el.value().to_str() {
        Ok(s) => s.trim_matches(|c| c == ' ' || c == '\0').to_string(),
        Err(_) => String::new(),
    }
}

/// Builds and encodes one response identifier.
pub fn encode_response(
    request: &FindRequest,
    row: &QueryRow,
    retrieve_ae: &str,
    availability: &str,
    ts_uid: &str,
) -> Result<Vec<u8>, IdentifierError> {
    let ts = TransferSyntaxRegistry.get(ts_uid).ok_or_else(|| IdentifierError::TransferSyntax(ts_uid.to_string()))?;
    let mut out = InMemDicomObject::new_empty();
    out.put(DataElement::new(SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::from("ISO_IR 192")));
    out.put(DataElement::new(QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from(request.query.level.as_dicom())));
    for (tag, vr, kind) in &request.returned {
        let text = match kind {
            Returned::Attribute(a) => row.value(*a),
            Returned::RetrieveAeTitle => Some(retrieve_ae.to_string()),
            Returned::Availability => Some(availability.to_string()),
            Returned::Unsupported => None,
        };
        let element = match (text, vr) {
            (None, _) => DataElement::empty(*tag, *vr),
            (Some(t), VR::US | VR::SS | VR::UL | VR::SL) => match t.trim().parse::<u16>() {
                Ok(n) => DataElement::new(*tag, VR::US, PrimitiveValue::from(n)),
                Err(_) => DataElement::empty(*tag, *vr),
            },
            (Some(t), _) => {
                let vr = if *vr == VR::UN { VR::LO } else { *vr };
                DataElement::new(*tag, vr, PrimitiveValue::from(t))
            }
        };
        out.put(element);
    }
    let mut buf = Vec::new();
    out.write_dataset_with_ts_cs(&mut buf, ts, SpecificCharacterSet::ISO_IR_192)
        .map_err(|e| IdentifierError::Encode(e.to_string()))?;
    Ok(buf)
}
