//! Instance metadata in the DICOM JSON model (PS3.18 Annex F), built once at ingest.
//!
//! WADO-RS `/metadata` of a study with thousands of instances is answered from the catalog,
//! never by reading objects back from a tier. The JSON holds every attribute of the data set
//! except bulk data: Pixel Data and every binary value longer than [`BULK_THRESHOLD`] bytes
//! carry a `BulkDataURI` instead. The URIs are stored relative to the DICOMweb base
//! (`studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag path}`); the HTTP
//! layer prefixes them with its public base URL when it answers (see [`absolutize`]).
//!
//! Bulk data paths name top-level elements by tag (`7FE00010`) and nested ones by the
//! sequence tags and item indexes that lead to them (`00880200/0/7FE00010`).

use crate::parse::{encoding_of, walked_dataset, ParseError, ParsedObject};
use base64::Engine;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_encoding::text::SpecificCharacterSet;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde_json::{Map, Value as Json};

/// Binary values longer than this many bytes are bulk data.
pub const BULK_THRESHOLD: usize = 1024;
/// Text and numeric values longer than this many bytes are bulk data too (PS3.18 F.2.3 allows
/// it), so that a hostile object cannot inflate its metadata.
pub const LARGE_VALUE: usize = 64 * 1024;
/// Largest metadata of one instance; a larger one is not stored.
pub const MAX_METADATA: usize = 64 << 20;

/// The text that starts every stored bulk data URI, for [`absolutize`].
const BULK_KEY: &[u8] = b"\"BulkDataURI\":\"";

/// Failures building metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The object cannot be re-read.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The data set cannot be decoded element by element.
    #[error("cannot decode the data set for its metadata: {0}")]
    Decode(#[source] Box<dicom_object::ReadError>),
    /// The metadata would be larger than [`MAX_METADATA`].
    #[error("the metadata would take {0} bytes, more than the 64 MiB vna keeps per instance")]
    TooLarge(usize),
}

/// The DICOM JSON object of one instance (compact JSON), bulk data replaced by relative URIs.
pub fn instance_metadata(bytes: &[u8], parsed: &ParsedObject) -> Result<String, MetadataError> {
    let data = walked_dataset(bytes, parsed)?;
    let (explicit, big_endian) = encoding_of(parsed.transfer_syntax.as_str());
    let read_as = match (explicit, big_endian) {
        (false, _) => "1.2.840.10008.1.2",
        (true, true) => "1.2.840.10008.1.2.2",
        (true, false) => "1.2.840.10008.1.2.1",
    };
    let ts = TransferSyntaxRegistry.get(read_as).expect("the three native syntaxes are registered");
    let pixel = parsed.pixel_data.clone();
    let head = &data[..pixel.as_ref().map_or(data.len(), |p| p.start)];
    let obj = InMemDicomObject::read_dataset_with_ts(head, ts).map_err(|e| MetadataError::Decode(Box::new(e)))?;

    let base = format!(
        "studies/{}/series/{}/instances/{}/bulkdata/",
        parsed.study.as_str(),
        parsed.series.as_str(),
        parsed.sop_instance.as_str()
    );
    let mut map = encode_dataset(&obj, &base, "");
    if let Some(p) = pixel {
        let vr = if explicit {
            String::from_utf8_lossy(&data[p.start + 4..p.start + 6]).into_owned()
        } else {
            let bits: u16 =
                parsed.attrs.get(crate::attribute::Attribute::BitsAllocated).and_then(|b| b.parse().ok()).unwrap_or(16);
            if bits > 8 {
                "OW".into()
            } else {
                "OB".into()
            }
        };
        let mut el = Map::new();
        el.insert("vr".into(), Json::String(vr));
        el.insert("BulkDataURI".into(), Json::String(format!("{base}7FE00010")));
        map.insert("7FE00010".into(), Json::Object(el));
        // Elements after the pixel data (rare: trailing padding, private tags).
        if p.end < data.len() {
            let charset = obj
                .element(dicom_dictionary_std::tags::SPECIFIC_CHARACTER_SET)
                .ok()
                .and_then(|e| e.to_multi_str().ok().and_then(|v| v.last().cloned()))
                .and_then(|code| SpecificCharacterSet::from_code(code.trim()))
                .unwrap_or_default();
            match InMemDicomObject::read_dataset_with_ts_cs(&data[p.end..], ts, charset) {
                Ok(tail) => map.extend(encode_dataset(&tail, &base, "")),
                Err(e) => tracing::warn!(error = %e, "elements after the pixel data left out of the metadata"),
            }
        }
    }
    let json = serde_json::to_string(&Json::Object(map)).expect("json values always serialize");
    if json.len() > MAX_METADATA {
        return Err(MetadataError::TooLarge(json.len()));
    }
    Ok(json)
}

/// The tag as DICOM JSON writes it: eight upper-case hex digits.
pub fn tag_key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.group(), tag.element())
}

/// Encodes a data set as a DICOM JSON object; `path` is the bulk data path of the data set.
fn encode_dataset(obj: &InMemDicomObject, base: &str, path: &str) -> Map<String, Json> {
    let mut map = Map::new();
    for elem in obj {
        let tag = elem.header().tag;
        if tag.element() == 0 || tag == Tag(0xFFFC, 0xFFFC) || tag.group() == 0x0002 {
            continue; // group lengths, padding and file meta never go into the model
        }
        let key = tag_key(tag);
        let mut vr = elem.vr();
        // Private creator elements are LO even when an implicit VR data set leaves them unknown.
        let private_creator = tag.group() % 2 == 1 && (0x0010..=0x00FF).contains(&tag.element());
        if private_creator && vr == VR::UN {
            vr = VR::LO;
        }
        let mut out = Map::new();
        out.insert("vr".into(), Json::String(vr.to_string().to_string()));
        match elem.value() {
            Value::Sequence(seq) => {
                let items: Vec<Json> = seq
                    .items()
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Json::Object(encode_dataset(item, base, &format!("{path}{key}/{i}/"))))
                    .collect();
                if !items.is_empty() {
                    out.insert("Value".into(), Json::Array(items));
                }
            }
            Value::PixelSequence(_) => {
                out.insert("BulkDataURI".into(), Json::String(format!("{base}{path}{key}")));
            }
            Value::Primitive(p) if private_creator && elem.vr() == VR::UN => {
                let text = String::from_utf8_lossy(&p.to_bytes()).into_owned();
                encode_primitive(&mut out, vr, &PrimitiveValue::from(text), String::new)
            }
            Value::Primitive(p) => encode_primitive(&mut out, vr, p, || format!("{base}{path}{key}")),
        }
        map.insert(key, Json::Object(out));
    }
    map
}

fn is_binary(vr: VR) -> bool {
    matches!(vr, VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN)
}

/// Text VRs whose leading spaces are significant.
fn keeps_leading_spaces(vr: VR) -> bool {
    matches!(vr, VR::ST | VR::LT | VR::UT | VR::UC | VR::UR)
}

fn encode_primitive(out: &mut Map<String, Json>, vr: VR, p: &PrimitiveValue, bulk_uri: impl FnOnce() -> String) {
    if matches!(p, PrimitiveValue::Empty) {
        return;
    }
    if !is_binary(vr) && p.calculate_byte_len() > LARGE_VALUE {
        out.insert("BulkDataURI".into(), Json::String(bulk_uri()));
        return;
    }
    if is_binary(vr) {
        let bytes = p.to_bytes();
        if bytes.is_empty() {
            return;
        }
        if bytes.len() > BULK_THRESHOLD {
            out.insert("BulkDataURI".into(), Json::String(bulk_uri()));
        } else {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            out.insert("InlineBinary".into(), Json::String(b64));
        }
        return;
    }
    let values: Vec<Json> = match vr {
        VR::AT => match p {
            PrimitiveValue::Tags(tags) => tags.iter().map(|t| Json::String(tag_key(*t))).collect(),
            other => texts(vr, other).into_iter().map(|s| s.map_or(Json::Null, Json::String)).collect(),
        },
        VR::PN => texts(vr, p).into_iter().map(|s| s.map_or(Json::Null, person_name)).collect(),
        VR::DS | VR::IS | VR::US | VR::SS | VR::UL | VR::SL | VR::UV | VR::SV | VR::FL | VR::FD => numbers(vr, p),
        _ => texts(vr, p).into_iter().map(|s| s.map_or(Json::Null, Json::String)).collect(),
    };
    if values.iter().any(|v| !v.is_null()) {
        out.insert("Value".into(), Json::Array(values));
    }
}

/// The values of a text element, trimmed of padding; empty values are `None`.
fn texts(vr: VR, p: &PrimitiveValue) -> Vec<Option<String>> {
    let strs = p.to_multi_str();
    let single = matches!(vr, VR::ST | VR::LT | VR::UT | VR::UR);
    let whole: Vec<String> = if single { vec![strs.join("\\")] } else { strs.to_vec() };
    whole
        .into_iter()
        .map(|s| {
            let t = s.trim_end_matches([' ', '\0']);
            let t = if keeps_leading_spaces(vr) { t } else { t.trim_start_matches(' ') };
            (!t.is_empty()).then(|| t.to_string())
        })
        .collect()
}

/// A person name as its alphabetic, ideographic and phonetic groups.
fn person_name(s: String) -> Json {
    let mut obj = Map::new();
    for (name, group) in ["Alphabetic", "Ideographic", "Phonetic"].into_iter().zip(s.split('=')) {
        if !group.is_empty() {
            obj.insert(name.into(), Json::String(group.to_string()));
        }
    }
    Json::Object(obj)
}

fn number_from_f64(v: f64) -> Json {
    serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number)
}

/// Numeric values as JSON numbers; text values (DS, IS) are parsed, unparsable ones become null.
fn numbers(vr: VR, p: &PrimitiveValue) -> Vec<Json> {
    match p {
        PrimitiveValue::U8(v) => v.iter().map(|x| Json::from(*x)).collect(),
        PrimitiveValue::I16(v) => v.iter().map(|x| Json::from(*x)).collect(),
        PrimitiveValue::U16(v) => v.iter().map(|x| Json::from(*x)).collect(),
        PrimitiveValue::I32(v) => v.iter().map(|x| Json::from(*x)).collect(),
        PrimitiveValue::U32(v) => v.iter().map(|x| Json::from(*x)).collect(),
        PrimitiveValue::I64(v) => v.iter().map(|x| Json::from(*x)).collect(),
        PrimitiveValue::U64(v) => v.iter().map(|x| Json::from(*x)).collect(),
        PrimitiveValue::F32(v) => v.iter().map(|x| number_from_f64(*x as f64)).collect(),
        PrimitiveValue::F64(v) => v.iter().map(|x| number_from_f64(*x)).collect(),
        other => texts(vr, other)
            .into_iter()
            .map(|s| match s {
                None => Json::Null,
                Some(t) => match t.trim().parse::<i64>() {
                    Ok(i) => Json::from(i),
                    Err(_) => t.trim().parse::<f64>().ok().map_or(Json::Null, number_from_f64),
                },
            })
            .collect(),
    }
}

/// Makes the stored relative bulk data URIs absolute under `base` (the DICOMweb base URL,
/// without a trailing slash).
pub fn absolutize(stored: &[u8], base: &str) -> Vec<u8> {
    let finder = memchr::memmem::Finder::new(BULK_KEY);
    let mut out = Vec::with_capacity(stored.len() + 256);
    let mut rest = stored;
    while let Some(i) = finder.find(rest) {
        let end = i + BULK_KEY.len();
        out.extend_from_slice(&rest[..end]);
        out.extend_from_slice(base.as_bytes());
        out.push(b'/');
        rest = &rest[end..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolutize_prefixes_every_uri() {
        let stored = br#"{"7FE00010":{"BulkDataURI":"studies/1/bulkdata/7FE00010","vr":"OW"},"x":{"BulkDataURI":"b"}}"#;
        let out = String::from_utf8(absolutize(stored, "http://h/dicom-web")).unwrap();
        assert_eq!(
            out,
            r#"{"7FE00010":{"BulkDataURI":"http://h/dicom-web/studies/1/bulkdata/7FE00010","vr":"OW"},"x":{"BulkDataURI":"http://h/dicom-web/b"}}"#
        );
    }

    #[test]
    fn person_names_split_into_groups() {
        assert_eq!(person_name("Yamada^Tarou=山田^太郎=やまだ^たろう".into())["Ideographic"], "山田^太郎");
        assert_eq!(person_name("=X".into()), serde_json::json!({"Ideographic": "X"}));
    }
}
