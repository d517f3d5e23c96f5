//! Transfer syntax conversions for peers that cannot take an object as it is stored:
//! between the uncompressed syntaxes, from the deflated syntax, and decompression of
//! encapsulated pixel data where dicom-rs has a decoder (JPEG baseline, extended and
//! lossless, JPEG 2000, RLE). vna never compresses: the stored object stays the original.

use crate::parse::{wrap_dataset, ParseError};
use crate::uid::{SopClassUid, SopInstanceUid, TransferSyntaxUid};
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Implicit VR Little Endian.
pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// Explicit VR Big Endian.
pub const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";

/// Failures converting an object.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// One of the syntaxes is not a native (uncompressed, not deflated) one.
    #[error("cannot convert from {from} to {to}: only uncompressed syntaxes are converted")]
    Unsupported {
        /// Stored syntax.
        from: String,
        /// Wanted syntax.
        to: String,
    },
    /// The data set could not be re-encoded.
    #[error("cannot re-encode the data set: {0}")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The pixel data could not be decoded.
    #[error("cannot decode the pixel data: {0}")]
    Decode(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The object could not be re-wrapped.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Whether a transfer syntax is uncompressed and not deflated: convertible to the others of its kind.
pub fn is_native(ts: &str) -> bool {
    matches!(ts, IMPLICIT_LE | EXPLICIT_LE | EXPLICIT_BE)
}

/// Whether objects in `ts` can be decoded into native pixel data (and data set encoding).
pub fn can_decode(ts: &str) -> bool {
    is_native(ts) || TransferSyntaxRegistry.get(ts).is_some_and(|t| t.can_decode_all())
}

/// Whether an object stored in `from` can be delivered in `to`.
pub fn can_convert(from: &str, to: &str) -> bool {
    from == to || (is_native(to) && can_decode(from))
}

/// Re-encodes a data set in a native transfer syntax: uncompressed syntaxes are re-encoded,
/// a deflated data set is inflated, encapsulated pixel data is decoded.
pub fn transcode_dataset(dataset: &[u8], from: &str, to: &str) -> Result<Vec<u8>, TranscodeError> {
    if from == to {
        return Ok(dataset.to_vec());
    }
    if !can_convert(from, to) {
        return Err(TranscodeError::Unsupported { from: from.into(), to: to.into() });
    }
    fn encode<E: std::error::Error + Send + Sync + 'static>(e: E) -> TranscodeError {
        TranscodeError::Encode(Box::new(e))
    }
    let to_ts = TransferSyntaxRegistry.get(to).expect("native syntaxes are registered");
    // The deflated syntax is explicit VR little endian once inflated.
    let (inflated, from) = if from == crate::parse::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
        (Some(crate::parse::inflate(dataset)?), EXPLICIT_LE)
    } else {
        (None, from)
    };
    let data = inflated.as_deref().unwrap_or(dataset);
    let from_ts = TransferSyntaxRegistry
        .get(from)
        .ok_or_else(|| TranscodeError::Unsupported { from: from.into(), to: to.into() })?;
    let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(data, from_ts).map_err(encode)?;
    let obj = if is_native(from) {
        obj
    } else {
        use dicom_pixeldata::Transcode;
        let text = |tag| {
            obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        };
        let meta = dicom_object::FileMetaTableBuilder::new()
            .transfer_syntax(from)
            .media_storage_sop_class_uid(text(dicom_dictionary_std::tags::SOP_CLASS_UID).unwrap_or_default())
            .media_storage_sop_instance_uid(text(dicom_dictionary_std::tags::SOP_INSTANCE_UID).unwrap_or_default());
        let mut file = obj.with_meta(meta).map_err(encode)?;
        file.transcode(to_ts).map_err(|e| TranscodeError::Decode(Box::new(e)))?;
        file.into_inner()
    };
    let mut out = Vec::with_capacity(data.len() + 1024);
    obj.write_dataset_with_ts(&mut out, to_ts).map_err(encode)?;
    Ok(out)
}

/// Re-encodes a Part-10 object in a native syntax, with a file meta group naming it.
pub fn transcode_part10(
    object: &[u8],
    from: &str,
    to: &TransferSyntaxUid,
    sop_class: &SopClassUid,
    sop_instance: &SopInstanceUid,
) -> Result<Vec<u8>, TranscodeError> {
    let dataset = crate::parse::dataset_bytes(object)?;
    let converted = transcode_dataset(dataset, from, to.as_str())?;
    Ok(wrap_dataset(&converted, to, sop_class, sop_instance)?)
}
