//! Conversions between the uncompressed transfer syntaxes, for peers that cannot take an
//! object as it is stored. Compressed objects are never converted here.

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
    Encode(String),
    /// The object could not be re-wrapped.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Whether a transfer syntax is uncompressed and not deflated: convertible to the others of its kind.
pub fn is_native(ts: &str) -> bool {
    matches!(ts, IMPLICIT_LE | EXPLICIT_LE | EXPLICIT_BE)
}

/// Whether an object stored in `from` can be delivered in `to`.
pub fn can_convert(from: &str, to: &str) -> bool {
    from == to || (is_native(from) && is_native(to))
}

/// Re-encodes a native data set in another native transfer syntax.
pub fn transcode_dataset(dataset: &[u8], from: &str, to: &str) -> Result<Vec<u8>, TranscodeError> {
    if !is_native(from) || !is_native(to) {
        return Err(TranscodeError::Unsupported { from: from.into(), to: to.into() });
    }
    let from_ts = TransferSyntaxRegistry.get(from).expect("native syntaxes are registered");
    let to_ts = TransferSyntaxRegistry.get(to).expect("native syntaxes are registered");
    let obj = dicom_object::InMemDicomObject::read_dataset_with_ts(dataset, from_ts)
        .map_err(|e| TranscodeError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(dataset.len() + 1024);
    obj.write_dataset_with_ts(&mut out, to_ts).map_err(|e| TranscodeError::Encode(e.to_string()))?;
    Ok(out)
}

/// Re-encodes a Part-10 object in another native syntax, with a file meta group naming it.
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
