//! Reading what the catalog needs from a DICOM object, and nothing more.
//!
//! [`parse_part10`] reads the file meta group and the data set up to Pixel Data
//! (the bulk of an image is never decoded), extracts the catalog attributes with
//! text decoded from the object's Specific Character Set, and walks the remaining
//! top-level elements by their headers only, so that a truncated object is refused
//! without reading its pixel data into structures.
//!
//! [`wrap_dataset`] turns a data set received over DIMSE (bytes plus the transfer
//! syntax of its presentation context) into a Part-10 file by prefixing a file meta
//! group: the data set bytes are kept exactly as received.

use crate::attribute::{AttrMap, Attribute, Level};
use crate::uid::{SeriesUid, SopClassUid, SopInstanceUid, StudyUid, TransferSyntaxUid, UidError};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileMetaTable, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
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
    /// The transfer syntax is unknown to the archive.
    #[error("unsupported transfer syntax {0}")]
    UnsupportedTransferSyntax(String),
    /// The data set cannot be decoded.
    #[error("malformed data set: {0}")]
    Malformed(String),
    /// The data set ends before its last element does.
    #[error("truncated object: {0}")]
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

/// Reads the file meta group; returns it with the offset of the data set.
fn read_meta(bytes: &[u8]) -> Result<(FileMetaTable, usize), ParseError> {
    let start = magic_offset(bytes)?;
    let mut reader = CountingReader { inner: &bytes[start..], read: 0 };
    let meta = FileMetaTable::from_reader(&mut reader).map_err(|e| ParseError::BadMeta(e.to_string()))?;
    Ok((meta, start + reader.read))
}

/// Parses a Part-10 object for indexing.
pub fn parse_part10(bytes: &[u8]) -> Result<ParsedObject, ParseError> {
    let (meta, dataset_offset) = read_meta(bytes)?;
    let ts_uid = crate::uid::trim_uid(meta.transfer_syntax()).to_string();
    let transfer_syntax = TransferSyntaxUid::new(&ts_uid).map_err(|reason| ParseError::InvalidUid {
        attribute: "TransferSyntaxUID",
        value: ts_uid.clone(),
        reason,
    })?;
    let ts =
        TransferSyntaxRegistry.get(&ts_uid).ok_or_else(|| ParseError::UnsupportedTransferSyntax(ts_uid.clone()))?;

    let start = magic_offset(bytes)?;
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(&bytes[start..])
        .map_err(|e| ParseError::Malformed(e.to_string()))?;

    // A deflated data set is checked by inflating it; the others are walked by element headers.
    if !matches!(ts.codec(), dicom_encoding::Codec::Dataset(_)) {
        let explicit = ts_uid != IMPLICIT_VR_LITTLE_ENDIAN;
        let big_endian = matches!(ts.endianness(), dicom_encoding::Endianness::Big);
        crate::walk::check_complete(&bytes[dataset_offset..], explicit, big_endian).map_err(ParseError::Truncated)?;
    }

    let mut attrs = AttrMap::new();
    for level in [Level::Patient, Level::Study, Level::Series, Level::Instance] {
        for attr in Attribute::stored_at(level) {
            if attr == Attribute::TransferSyntaxUID {
                continue;
            }
            let (g, e) = attr.group_element();
            if let Ok(Some(el)) = obj.element_opt(Tag(g, e)) {
                if let Some(v) = element_text(el) {
                    attrs.set(attr, v.trim_matches(|c: char| c == ' ' || c == '\0'));
                }
            }
        }
    }

    let study = required_uid(&attrs, Attribute::StudyInstanceUID, |v| StudyUid::new(v))?;
    let series = required_uid(&attrs, Attribute::SeriesInstanceUID, |v| SeriesUid::new(v))?;
    let sop_instance = required_uid(&attrs, Attribute::SOPInstanceUID, |v| SopInstanceUid::new(v))?;
    let sop_class = required_uid(&attrs, Attribute::SOPClassUID, |v| SopClassUid::new(v))?;
    attrs.set(Attribute::TransferSyntaxUID, transfer_syntax.as_str());

    Ok(ParsedObject { study, series, sop_instance, sop_class, transfer_syntax, attrs, dataset_offset })
}

/// The text of an element. Elements stored with an unknown or binary VR (UN, OB), as some
/// exporters write them, are read as the text their bytes hold.
fn element_text<D>(el: &dicom_object::mem::InMemElement<D>) -> Option<String> {
    use dicom_core::value::{PrimitiveValue, Value};
    match el.value() {
        Value::Primitive(PrimitiveValue::U8(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
        v => v.to_str().ok().map(|s| s.into_owned()),
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
pub fn wrap_dataset(
    dataset: &[u8],
    transfer_syntax: &TransferSyntaxUid,
    sop_class: &SopClassUid,
    sop_instance: &SopInstanceUid,
    source_ae: Option<&str>,
) -> Result<Vec<u8>, ParseError> {
    let mut builder = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class.as_str())
        .media_storage_sop_instance_uid(sop_instance.as_str())
        .transfer_syntax(transfer_syntax.as_str())
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    if let Some(ae) = source_ae.filter(|a| !a.trim().is_empty()) {
        builder = builder.source_application_entity_title(ae.trim());
    }
    let meta = builder.build().map_err(|e| ParseError::BadMeta(e.to_string()))?;
    let mut out = Vec::with_capacity(dataset.len() + 256);
    out.extend_from_slice(&[0u8; 128]);
    meta.write(&mut out).map_err(|e| ParseError::BadMeta(e.to_string()))?;
    out.extend_from_slice(dataset);
    Ok(out)
}

/// The data set part of a Part-10 object (everything after the file meta group).
pub fn dataset_bytes(bytes: &[u8]) -> Result<&[u8], ParseError> {
    let (_, offset) = read_meta(bytes)?;
    Ok(&bytes[offset..])
}
