//! Where the frames of an object's Pixel Data lie, for frame and bulk data retrieval:
//! byte ranges of native frames, or the fragments of each encapsulated frame.

use crate::parse::{encoding_of, ParsedObject};
use std::ops::Range;

/// Most frames an object may announce (NumberOfFrames) for frame access.
pub const MAX_FRAMES: usize = 1 << 20;

/// Why frames cannot be located.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PixelError {
    /// The object has no Pixel Data.
    #[error("the instance has no pixel data")]
    NoPixelData,
    /// The pixel attributes are missing or inconsistent with the data.
    #[error("pixel data does not match its attributes: {0}")]
    Inconsistent(String),
    /// The layout cannot be served frame by frame.
    #[error("frames cannot be located: {0}")]
    Unsupported(String),
}

/// The frames of an object, as ranges in its walked data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameLayout {
    /// Uncompressed frames.
    Native {
        /// One range per frame.
        frames: Vec<Range<usize>>,
        /// Bytes per sample word to swap for little endian output (2 or 4 for big endian data, else 1).
        swap: usize,
    },
    /// Compressed frames: the fragments of each.
    Encapsulated {
        /// Fragment ranges per frame.
        frames: Vec<Vec<Range<usize>>>,
    },
}

impl FrameLayout {
    /// Number of frames.
    pub fn len(&self) -> usize {
        match self {
            FrameLayout::Native { frames, .. } => frames.len(),
            FrameLayout::Encapsulated { frames } => frames.len(),
        }
    }
    /// Whether there are no frames.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bytes of frame `index` (0-based), little endian for native data.
    pub fn frame(&self, data: &[u8], index: usize) -> Option<Vec<u8>> {
        match self {
            FrameLayout::Native { frames, swap } => {
                let mut out = data.get(frames.get(index)?.clone())?.to_vec();
                if *swap > 1 {
                    for word in out.chunks_exact_mut(*swap) {
                        word.reverse();
                    }
                }
                Some(out)
            }
            FrameLayout::Encapsulated { frames } => {
                let mut out = Vec::new();
                for r in frames.get(index)? {
                    out.extend_from_slice(data.get(r.clone())?);
                }
                Some(out)
            }
        }
    }
}

fn u16_at(b: &[u8], at: usize, be: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if be { u16::from_be_bytes(s) } else { u16::from_le_bytes(s) })
}
fn u32_at(b: &[u8], at: usize, be: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if be { u32::from_be_bytes(s) } else { u32::from_le_bytes(s) })
}

/// Locates the frames of a parsed object in its walked data set (see [`crate::parse::walked_dataset`]).
pub fn frame_layout(data: &[u8], parsed: &ParsedObject) -> Result<FrameLayout, PixelError> {
    let pixel = parsed.pixel_data.clone().ok_or(PixelError::NoPixelData)?;
    let (explicit, be) = encoding_of(parsed.transfer_syntax.as_str());
    // The few pixel attributes, read from the top-level elements.
    let mut samples = 1u32;
    let mut frames_attr = 1u32;
    let (mut rows, mut cols, mut bits) = (0u32, 0u32, 0u32);
    crate::walk::walk(&data[..pixel.start], explicit, be, |el| {
        let Some(v) = el.value else { return };
        match el.tag {
            (0x0028, 0x0002) => samples = u16_at(v, 0, be).unwrap_or(1) as u32,
            (0x0028, 0x0008) => {
                frames_attr = String::from_utf8_lossy(v).trim_matches([' ', '\0']).parse().unwrap_or(1);
            }
            (0x0028, 0x0010) => rows = u16_at(v, 0, be).unwrap_or(0) as u32,
            (0x0028, 0x0011) => cols = u16_at(v, 0, be).unwrap_or(0) as u32,
            (0x0028, 0x0100) => bits = u16_at(v, 0, be).unwrap_or(0) as u32,
            _ => {}
        }
    })
    .map_err(PixelError::Inconsistent)?;
    let frames = frames_attr.max(1) as usize;

    let header = if explicit { 12 } else { 8 };
    let len = u32_at(data, pixel.start + if explicit { 8 } else { 4 }, be)
        .ok_or_else(|| PixelError::Inconsistent("truncated pixel data header".into()))?;
    let value_start = pixel.start + header;
    if len != u32::MAX {
        if rows == 0 || cols == 0 || bits == 0 || samples == 0 {
            return Err(PixelError::Inconsistent("Rows, Columns, Samples per Pixel or Bits Allocated missing".into()));
        }
        if frames > MAX_FRAMES {
            return Err(PixelError::Unsupported(format!("{frames} frames (vna serves at most {MAX_FRAMES})")));
        }
        let frame_bits = rows as u64 * cols as u64 * samples as u64 * bits as u64; // < 2^64: four u16 values
        if !frame_bits.is_multiple_of(8) && frames > 1 {
            return Err(PixelError::Unsupported("frames of packed 1-bit data are not byte aligned".into()));
        }
        let frame_len = frame_bits.div_ceil(8);
        let needed = frame_len.checked_mul(frames as u64);
        if needed.is_none_or(|n| n > len as u64) {
            return Err(PixelError::Inconsistent(format!(
                "{frames} frames of {frame_len} bytes do not fit in {len} bytes of pixel data"
            )));
        }
        let frame_len = frame_len as usize; // <= len, a u32
        let ranges = (0..frames).map(|i| value_start + i * frame_len..value_start + (i + 1) * frame_len).collect();
        let swap = if be && bits > 8 { (bits / 8) as usize } else { 1 };
        return Ok(FrameLayout::Native { frames: ranges, swap });
    }

    // Encapsulated: the basic offset table item, then fragments, then the sequence delimiter.
    let mut pos = value_start;
    let mut items: Vec<(usize, Range<usize>)> = Vec::new();
    loop {
        let tag = (u16_at(data, pos, be), u16_at(data, pos + 2, be));
        let item_len = u32_at(data, pos + 4, be).ok_or_else(|| PixelError::Inconsistent("truncated item".into()))?;
        match tag {
            (Some(0xFFFE), Some(0xE0DD)) => break,
            (Some(0xFFFE), Some(0xE000)) => {
                let start = pos + 8;
                let end = start
                    .checked_add(item_len as usize)
                    .filter(|e| *e <= pixel.end)
                    .ok_or_else(|| PixelError::Inconsistent("fragment beyond the pixel data".into()))?;
                items.push((pos, start..end));
                pos = end;
            }
            _ => {
                return Err(PixelError::Inconsistent(format!("unexpected element in encapsulated pixel data at {pos}")))
            }
        }
    }
    if frames > MAX_FRAMES {
        return Err(PixelError::Unsupported(format!("{frames} frames (vna serves at most {MAX_FRAMES})")));
    }
    let Some(((_, bot), fragments)) = items.split_first() else {
        return Err(PixelError::Inconsistent("no basic offset table item".into()));
    };
    if fragments.is_empty() {
        return Err(PixelError::Inconsistent("no fragments".into()));
    }
    let all = |f: &[(usize, Range<usize>)]| f.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>();
    if fragments.len() == frames {
        return Ok(FrameLayout::Encapsulated { frames: fragments.iter().map(|(_, r)| vec![r.clone()]).collect() });
    }
    if frames == 1 {
        return Ok(FrameLayout::Encapsulated { frames: vec![all(fragments)] });
    }
    if bot.len() == frames * 4 {
        let first_item = fragments[0].0;
        let offsets: Vec<usize> =
            (0..frames).map(|i| first_item + u32_at(data, bot.start + i * 4, be).unwrap_or(0) as usize).collect();
        let mut out = vec![Vec::new(); frames];
        for (item_pos, r) in fragments {
            let frame = offsets.iter().rposition(|o| o <= item_pos).unwrap_or(0);
            out[frame].push(r.clone());
        }
        if out.iter().any(Vec::is_empty) {
            return Err(PixelError::Inconsistent("the basic offset table names frames without fragments".into()));
        }
        return Ok(FrameLayout::Encapsulated { frames: out });
    }
    Err(PixelError::Unsupported(format!(
        "{frames} frames in {} fragments without a basic offset table",
        fragments.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_part10, wrap_dataset};
    use crate::uid::{SopClassUid, SopInstanceUid, TransferSyntaxUid};

    fn el(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&group.to_le_bytes());
        v.extend_from_slice(&element.to_le_bytes());
        v.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"OW") {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        v.extend_from_slice(value);
        v
    }

    /// An explicit VR little endian object with the given pixel attributes and pixel bytes.
    fn object(samples: u16, frames: &str, rows: u16, cols: u16, bits: u16, pixels: &[u8]) -> Vec<u8> {
        let mut ds = Vec::new();
        ds.extend(el(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0"));
        ds.extend(el(0x0008, 0x0018, b"UI", b"1.2.3.4\0"));
        ds.extend(el(0x0020, 0x000D, b"UI", b"1.2.3\0"));
        ds.extend(el(0x0020, 0x000E, b"UI", b"1.2.3.5\0"));
        ds.extend(el(0x0028, 0x0002, b"US", &samples.to_le_bytes()));
        let mut f = frames.as_bytes().to_vec();
        if f.len() % 2 == 1 {
            f.push(b' ');
        }
        ds.extend(el(0x0028, 0x0008, b"IS", &f));
        ds.extend(el(0x0028, 0x0010, b"US", &rows.to_le_bytes()));
        ds.extend(el(0x0028, 0x0011, b"US", &cols.to_le_bytes()));
        ds.extend(el(0x0028, 0x0100, b"US", &bits.to_le_bytes()));
        ds.extend(el(0x7FE0, 0x0010, b"OW", pixels));
        let ts = TransferSyntaxUid::new("1.2.840.10008.1.2.1").unwrap();
        let class = SopClassUid::new("1.2.840.10008.5.1.4.1.1.7").unwrap();
        wrap_dataset(&ds, &ts, &class, &SopInstanceUid::new("1.2.3.4").unwrap()).unwrap()
    }

    fn layout(file: &[u8]) -> Result<(FrameLayout, Vec<u8>), PixelError> {
        let parsed = parse_part10(file).unwrap();
        let data = crate::parse::walked_dataset(file, &parsed).unwrap().into_owned();
        frame_layout(&data, &parsed).map(|l| (l, data))
    }

    #[test]
    fn native_frames_are_located() {
        let pixels: Vec<u8> = (0..2 * 2 * 2 * 3).map(|i| i as u8).collect();
        let file = object(1, "3", 2, 2, 16, &pixels);
        let (l, data) = layout(&file).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l.frame(&data, 2).unwrap(), pixels[16..24].to_vec());
        assert!(l.frame(&data, 3).is_none());
    }

    #[test]
    fn hostile_pixel_attributes_are_errors_not_panics() {
        let pixels = vec![0u8; 64];
        // Samples per pixel 0 with a huge frame count: no allocation of billions of ranges.
        assert!(layout(&object(0, "4294967295", 2, 2, 16, &pixels)).is_err());
        assert!(layout(&object(1, "4294967295", 2, 2, 16, &pixels)).is_err());
        // Products that overflow 32 bits.
        assert!(layout(&object(65535, "128", 65535, 65535, 65535, &pixels)).is_err());
        // Frames that do not fit.
        assert!(layout(&object(1, "5", 2, 2, 16, &pixels[..32])).is_err());
    }
}
