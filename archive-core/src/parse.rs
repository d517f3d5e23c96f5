//! Reading what the catalog needs from a DICOM object, and nothing more.
//!
//! [`parse_part10`] reads the file meta group, then walks the data set once by element
//! headers ([`crate::walk`]): a truncated or malformed object is refused, and the values
//! of the catalog's attributes are decoded with the object's Specific Character Set.
//! Pixel data and sequences are skipped, never decoded.
//!
//! [`wrap_dataset`] turns a data set received over DIMSE (bytes plus the transfer
//! syntax of its presentation context) into a Part-10 file by prefixing a file meta
//! group: the data set bytes are kept exactly as received.

use crate::attribute::{AttrMap, Attribute};
use crate::uid::{SeriesUid, SopClassUid, SopInstanceUid, StudyUid, TransferSyntaxUid, UidError};
use dicom_encoding::text::{SpecificCharacterSet, TextCodec};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::FileMetaTable;
use std::io::Read;

/// Implementation Class UID written in the file meta groups vna creates.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.91108127479932983093646484674929842722";
/// Implementation Version Name written in the file meta groups vna creates.
pub const IMPLEMENTATION_VERSION_NAME: &str = "VNA_0_1";

/// Implicit VR Little Endian, the only transfer syntax without explicit VRs.
pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";

/// Why an object cannot be archived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a DICOM Part-10 file.
    #[error("not a DICOM file: {0}")]
    NotDicom(String),
    /// The file meta group is broken.
    #[error("invalid file meta information: {0}")]
    BadMeta(String),
    /// The data set cannot be decoded.
    #[error("malformed data set: {0}")]
    Malformed(String),
    /// The data set ends before its last element does, or its element headers make no sense.
    #[error("truncated or malformed data set: {0}")]
    Truncated(String),
    /// A required attribute is absent or empty.
    #[error("missing required attribute {0}")]
    MissingAttribute(&'static str),
    /// A UID attribute holds an invalid UID.
    #[error("invalid {attribute} {value:?}: {reason}")]
    InvalidUid {
        /// The attribute's keyword.
        attribute: &'static str,
        /// The value found.
        value: String,
        /// Why it is invalid.
        reason: UidError,
    },
}

/// What ingest needs to know about an object.
#[derive(Debug, Clone)]
pub struct ParsedObject {
    /// Study Instance UID.
    pub study: StudyUid,
    /// Series Instance UID.
    pub series: SeriesUid,
    /// SOP Instance UID.
    pub sop_instance: SopInstanceUid,
    /// SOP Class UID.
    pub sop_class: SopClassUid,
    /// Transfer syntax of the data set.
    pub transfer_syntax: TransferSyntaxUid,
    /// Catalog attributes of all levels.
    pub attrs: AttrMap,
    /// Byte offset of the data set (just after the file meta group).
    pub dataset_offset: usize,
    /// Where the top-level Pixel Data element (7FE0,0010) lies in the data set as walked
    /// (the inflated data set for the deflated syntax), header included.
    pub pixel_data: Option<std::ops::Range<usize>>,
}

/// Offset of the `DICM` magic: 128 with a preamble, 0 without.
fn magic_offset(bytes: &[u8]) -> Result<usize, ParseError> {
    if bytes.len() >= 132 && &bytes[128..132] == b"DICM" {
        Ok(128)
    } else if bytes.len() >= 4 && &bytes[0..4] == b"DICM" {
        Ok(0)
    } else {
        Err(ParseError::NotDicom("no DICM magic code at offset 128".into()))
    }
}

/// A reader that counts the bytes it hands out.
struct CountingReader<'a> {
    inner: &'a [u8],
    read: usize,
}
impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n;
        Ok(n)
    }
}

/// Longest value a file meta element may have (UIDs and AE titles are short).
const MAX_META_ELEMENT: usize = 64 * 1024;

/// Checks the file meta elements' lengths before the meta parser sees them, so that a
/// hostile length cannot make it allocate gigabytes.
fn check_meta_lengths(meta: &[u8]) -> Result<(), ParseError> {
    let mut pos = 0usize;
    while pos + 8 <= meta.len() {
        let group = u16::from_le_bytes([meta[pos], meta[pos + 1]]);
        if group != 0x0002 {
            return Ok(());
        }
        let element = u16::from_le_bytes([meta[pos + 2], meta[pos + 3]]);
        let vr = [meta[pos + 4], meta[pos + 5]];
        let (len, header) =
            if matches!(&vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT" | b"UC" | b"UR" | b"OD" | b"OF" | b"OL" | b"OV") {
                if pos + 12 > meta.len() {
                    break;
                }
                (u32::from_le_bytes([meta[pos + 8], meta[pos + 9], meta[pos + 10], meta[pos + 11]]) as usize, 12)
            } else {
                (u16::from_le_bytes([meta[pos + 6], meta[pos + 7]]) as usize, 8)
            };
        if len > MAX_META_ELEMENT || pos + header + len > meta.len() {
            return Err(ParseError::BadMeta(format!("element (0002,{element:04X}) has an implausible length {len}")));
        }
        pos += header + len;
    }
    Ok(())
}

/// Reads the file meta group; returns it with the offset of the data set.
fn read_meta(bytes: &[u8]) -> Result<(FileMetaTable, usize), ParseError> {
    let start = magic_offset(bytes)?;
    check_meta_lengths(&bytes[start + 4..])?;
    let mut reader = CountingReader { inner: &bytes[start..], read: 0 };
    let meta = FileMetaTable::from_reader(&mut reader).map_err(|e| ParseError::BadMeta(e.to_string()))?;
    Ok((meta, start + reader.read))
}

/// Deflated Explicit VR Little Endian.
pub const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";
/// Explicit VR Big Endian (retired, still found in old archives).
pub const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
/// Largest inflated size of a deflated data set (guards against decompression bombs).
const MAX_INFLATED: u64 = 256 << 20;

/// Parses a Part-10 object for indexing.
///
/// The data set is walked once by element headers: every element must fit in the object
/// (nested sequences included), and the values of the catalog's top-level attributes are
/// decoded; nothing else is. Transfer syntaxes unknown to the archive are read as explicit
/// VR little endian, as PS3.5 requires of every syntax but the three defaults, and stored as they are.
pub fn parse_part10(bytes: &[u8]) -> Result<ParsedObject, ParseError> {
    let (meta, dataset_offset) = read_meta(bytes)?;
    let ts_uid = crate::uid::trim_uid(meta.transfer_syntax()).to_string();
    let transfer_syntax = TransferSyntaxUid::new(&ts_uid).map_err(|reason| ParseError::InvalidUid {
        attribute: "TransferSyntaxUID",
        value: ts_uid.clone(),
        reason,
    })?;
    let dataset = &bytes[dataset_offset..];
    let inflated;
    let (data, explicit, big_endian) = match ts_uid.as_str() {
        IMPLICIT_VR_LITTLE_ENDIAN => (dataset, false, false),
        EXPLICIT_VR_BIG_ENDIAN => (dataset, true, true),
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => {
            inflated = inflate(dataset)?;
            (&inflated[..], true, false)
        }
        _ => (dataset, true, false),
    };

    let mut found: Vec<(Attribute, crate::walk::Element<'_>)> = Vec::new();
    let mut charset_raw: Option<&[u8]> = None;
    let mut pixel_data = None;
    crate::walk::walk(data, explicit, big_endian, |el| {
        if el.tag == (0x7FE0, 0x0010) {
            pixel_data = Some(el.offset..el.end);
        }
        if el.tag.0 > 0x0028 {
            return;
        }
        if el.tag == (0x0008, 0x0005) {
            charset_raw = el.value;
        }
        if let Some(a) = Attribute::from_tag(el.tag.0, el.tag.1).filter(|a| a.is_stored()) {
            found.push((a, el));
        }
    })
    .map_err(ParseError::Truncated)?;

    let charset = charset_raw.map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    let codec = text_codec(&charset);
    // ISO 2022 IR 149 (Korean) designates KS X 1001 into G1 with ESC $ ) C; the codec decodes
    // the G1 bytes but not the escape sequences, so they are removed first.
    let korean_2022 = charset.split('\\').any(|c| c.trim() == "ISO 2022 IR 149");
    let mut attrs = AttrMap::new();
    for (attr, el) in found {
        let Some(value) = el.value else { continue };
        let text = if matches!(attr, Attribute::Rows | Attribute::Columns | Attribute::BitsAllocated) {
            binary_u16(value, el.vr, big_endian)
        } else if charset_sensitive(attr) {
            let value: std::borrow::Cow<[u8]> =
                if korean_2022 { std::borrow::Cow::Owned(strip_iso2022_escapes(value)) } else { value.into() };
            codec.decode(&value).unwrap_or_else(|_| String::from_utf8_lossy(&value).into_owned())
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        attrs.set(attr, text.trim_matches(|c: char| c == ' ' || c == '\0'));
    }

    let study = required_uid(&attrs, Attribute::StudyInstanceUID, |v| StudyUid::new(v))?;
    let series = required_uid(&attrs, Attribute::SeriesInstanceUID, |v| SeriesUid::new(v))?;
    let sop_instance = required_uid(&attrs, Attribute::SOPInstanceUID, |v| SopInstanceUid::new(v))?;
    let sop_class = required_uid(&attrs, Attribute::SOPClassUID, |v| SopClassUid::new(v))?;
    attrs.set(Attribute::TransferSyntaxUID, transfer_syntax.as_str());

    Ok(ParsedObject { study, series, sop_instance, sop_class, transfer_syntax, attrs, dataset_offset, pixel_data })
}

/// The data set of a parsed object as its elements are encoded: the bytes after the file
/// meta group, inflated for the deflated syntax (the offsets of [`ParsedObject`] refer to it).
pub fn walked_dataset<'a>(bytes: &'a [u8], parsed: &ParsedObject) -> Result<std::borrow::Cow<'a, [u8]>, ParseError> {
    let dataset = bytes.get(parsed.dataset_offset..).ok_or_else(|| ParseError::Malformed("object too short".into()))?;
    if parsed.transfer_syntax.as_str() == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
        Ok(std::borrow::Cow::Owned(inflate(dataset)?))
    } else {
        Ok(std::borrow::Cow::Borrowed(dataset))
    }
}

/// How the elements of a transfer syntax are encoded: (explicit VR, big endian).
pub fn encoding_of(ts: &str) -> (bool, bool) {
    match ts {
        IMPLICIT_VR_LITTLE_ENDIAN => (false, false),
        EXPLICIT_VR_BIG_ENDIAN => (true, true),
        _ => (true, false),
    }
}

/// Inflates a deflated data set, refusing more than [`MAX_INFLATED`] bytes.
pub fn inflate(data: &[u8]) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|e| ParseError::Malformed(format!("cannot inflate the deflated data set: {e}")))?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(ParseError::Malformed("deflated data set inflates past 256 MiB".into()));
    }
    Ok(out)
}

/// The decoder for a Specific Character Set value; the last code of a multi-valued one
/// names the extension used for non-ASCII text. Unknown codes fall back to UTF-8.
fn text_codec(charset: &str) -> SpecificCharacterSet {
    let code = charset.split('\\').map(str::trim).rfind(|c| !c.is_empty()).unwrap_or("");
    if code.is_empty() {
        return SpecificCharacterSet::ISO_IR_6;
    }
    SpecificCharacterSet::from_code(code).unwrap_or(SpecificCharacterSet::ISO_IR_192)
}

/// Removes ISO 2022 escape sequences (ESC, intermediate bytes 0x20-0x2F, one final byte).
fn strip_iso2022_escapes(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == 0x1b {
            i += 1;
            while i < value.len() && (0x20..=0x2f).contains(&value[i]) {
                i += 1;
            }
            i += 1; // the final byte
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    out
}

/// Whether the attribute's VR is one whose text depends on the Specific Character Set.
fn charset_sensitive(attr: Attribute) -> bool {
    matches!(attr.match_vr(), crate::matching::MatchVr::Pn | crate::matching::MatchVr::Text)
}

/// A US value as decimal text (first value of a multi-valued element).
fn binary_u16(value: &[u8], vr: Option<[u8; 2]>, big_endian: bool) -> String {
    if let Some(vr) = vr {
        if &vr != b"US" && &vr != b"UN" && &vr != b"SS" {
            return String::from_utf8_lossy(value).into_owned();
        }
    }
    match value {
        [a, b, ..] => {
            let v = if big_endian { u16::from_be_bytes([*a, *b]) } else { u16::from_le_bytes([*a, *b]) };
            v.to_string()
        }
        _ => String::new(),
    }
}

fn required_uid<T>(
    attrs: &AttrMap,
    attribute: Attribute,
    make: impl Fn(&str) -> Result<T, UidError>,
) -> Result<T, ParseError> {
    let value = attrs.get(attribute).ok_or(ParseError::MissingAttribute(attribute.keyword()))?;
    make(value).map_err(|reason| ParseError::InvalidUid {
        attribute: attribute.keyword(),
        value: value.to_string(),
        reason,
    })
}

/// Builds a Part-10 file from a data set and its transfer syntax, keeping the data set bytes as they are.
/// The file meta group depends only on the arguments, so the same data set always makes the same file.
pub fn wrap_dataset(
    dataset: &[u8],
    transfer_syntax: &TransferSyntaxUid,
    sop_class: &SopClassUid,
    sop_instance: &SopInstanceUid,
) -> Result<Vec<u8>, ParseError> {
    let builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class.as_str())
        .media_storage_sop_instance_uid(sop_instance.as_str())
        .transfer_syntax(transfer_syntax.as_str())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    let meta = builder.build().map_err(|e| ParseError::BadMeta(e.to_string()))?;
    let mut out = Vec::with_capacity(dataset.len() + 256);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(|e| ParseError::BadMeta(e.to_string()))?;
    out.extend_from_slice(dataset);
    Ok(out)
}

/// The data set part of a Part-10 object (everything after the file meta group).
pub fn dataset_bytes(bytes: &[u8]) -> Result<&[u8], ParseError> {
    let (_, offset) = read_meta(bytes)?;
    Ok(&bytes[offset..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_dataset_parses_and_keeps_its_bytes() {
        // A minimal explicit VR LE data set: SOP class, SOP instance, study and series UIDs.
        let mut ds = Vec::new();
        for (elem, group, value) in [
            (0x0016u16, 0x0008u16, &b"1.2.840.10008.5.1.4.1.1.7\0"[..]),
            (0x0018, 0x0008, &b"1.2.3.4"[..]),
            (0x000D, 0x0020, &b"1.2.3"[..]),
            (0x000E, 0x0020, &b"1.2.3.5\0"[..]),
        ] {
            let mut v = value.to_vec();
            if v.len() % 2 == 1 {
                v.push(0);
            }
            ds.extend_from_slice(&group.to_le_bytes());
            ds.extend_from_slice(&elem.to_le_bytes());
            ds.extend_from_slice(b"UI");
            ds.extend_from_slice(&(v.len() as u16).to_le_bytes());
            ds.extend_from_slice(&v);
        }
        let ts = TransferSyntaxUid::new("1.2.840.10008.1.2.1").unwrap();
        let class = SopClassUid::new("1.2.840.10008.5.1.4.1.1.7").unwrap();
        let inst = SopInstanceUid::new("1.2.3.4").unwrap();
        let file = wrap_dataset(&ds, &ts, &class, &inst).unwrap();
        let parsed = parse_part10(&file).unwrap();
        assert_eq!(parsed.sop_instance, inst);
        assert_eq!(parsed.study.as_str(), "1.2.3");
        assert_eq!(dataset_bytes(&file).unwrap(), &ds[..]);
        assert_eq!(&file[parsed.dataset_offset..], &ds[..]);
    }
}
