//! A header-only walk over an encoded data set: checks that every element's value
//! lies inside the buffer without decoding any value, and hands each top-level
//! element's header and value bytes to a visitor. Ingest uses it to refuse truncated
//! or malformed objects and to read the few values the catalog needs, in one linear
//! pass that never decodes pixel data or sequences.

/// Value representations whose explicit-VR header has a 4-byte length.
const LONG_VRS: [&[u8; 2]; 11] = [b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"];
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQ_END: (u16, u16) = (0xFFFE, 0xE0DD);
/// Nesting deeper than this is refused (guards the stack against hostile input).
const MAX_DEPTH: usize = 64;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    big_endian: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => {
                Err(format!("needs {n} bytes at offset {} but only {} remain", self.pos, self.buf.len() - self.pos))
            }
        }
    }
    fn u16(&mut self, big_endian: bool) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(if big_endian { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })
    }
    fn u32(&mut self, big_endian: bool) -> Result<u32, String> {
        let b = self.take(4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Ok(if big_endian { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })
    }
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// A top-level element as the walk finds it.
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    /// Group and element number.
    pub tag: (u16, u16),
    /// The VR as written (explicit VR transfer syntaxes only).
    pub vr: Option<[u8; 2]>,
    /// The value bytes; `None` for undefined-length values (sequences, encapsulated pixel data).
    pub value: Option<&'a [u8]>,
    /// Offset of the element's tag in the walked buffer.
    pub offset: usize,
    /// Offset just past the element (after its delimiter for undefined lengths).
    pub end: usize,
}

/// Checks that a data set's elements all fit in `buf`. Returns a description of the first problem.
pub fn check_complete(buf: &[u8], explicit: bool, big_endian: bool) -> Result<(), String> {
    walk(buf, explicit, big_endian, |_| {})
}

/// Walks a data set, calling `visit` for each top-level element, and checks that every
/// element (nested ones included) fits in `buf`.
pub fn walk<'a>(
    buf: &'a [u8],
    explicit: bool,
    big_endian: bool,
    mut visit: impl FnMut(Element<'a>),
) -> Result<(), String> {
    let mut c = Cursor { buf, pos: 0, big_endian };
    walk_dataset(&mut c, explicit, 0, false, &mut visit)
}

/// Walks elements until the end of the buffer, or until an item delimiter when `in_item`.
fn walk_dataset<'a>(
    c: &mut Cursor<'a>,
    explicit: bool,
    depth: usize,
    in_item: bool,
    visit: &mut dyn FnMut(Element<'a>),
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("sequences nested too deeply".into());
    }
    loop {
        if c.at_end() {
            return if in_item { Err("item without its delimiter".into()) } else { Ok(()) };
        }
        // Delimiters and items are always little-endian-free of VR; group FFFE keeps the syntax's byte order.
        let be = c.big_endian;
        let offset = c.pos;
        let tag = (c.u16(be)?, c.u16(be)?);
        if tag == ITEM_END {
            c.u32(be)?;
            return if in_item { Ok(()) } else { Err("item delimiter outside an item".into()) };
        }
        if tag.0 == 0xFFFE {
            return Err(format!("unexpected delimiter ({:04X},{:04X}) at offset {}", tag.0, tag.1, c.pos - 4));
        }
        let (vr, len) = if explicit {
            let vr: [u8; 2] = c.take(2)?.try_into().map_err(|_| "bad vr")?;
            if LONG_VRS.contains(&&vr) {
                c.take(2)?;
                (Some(vr), c.u32(be)?)
            } else {
                (Some(vr), c.u16(be)? as u32)
            }
        } else {
            (None, c.u32(be)?)
        };
        if len == UNDEFINED {
            // Undefined length: a sequence, encapsulated pixel data, or UN holding implicit VR LE content.
            let nested_explicit = match vr {
                Some(v) if &v == b"UN" => false,
                _ => explicit,
            };
            walk_items(c, nested_explicit, depth + 1)?;
            if depth == 0 {
                visit(Element { tag, vr, value: None, offset, end: c.pos });
            }
        } else {
            let value = c.take(len as usize).map_err(|e| format!("element ({:04X},{:04X}) {e}", tag.0, tag.1))?;
            if depth == 0 {
                visit(Element { tag, vr, value: Some(value), offset, end: c.pos });
            }
        }
    }
}

/// Walks items of an undefined-length sequence up to its sequence delimiter.
fn walk_items(c: &mut Cursor<'_>, explicit: bool, depth: usize) -> Result<(), String> {
    let be = c.big_endian;
    loop {
        let tag = (c.u16(be)?, c.u16(be)?);
        let len = c.u32(be)?;
        if tag == SEQ_END {
            return Ok(());
        }
        if tag != ITEM {
            return Err(format!("expected an item, found ({:04X},{:04X}) at offset {}", tag.0, tag.1, c.pos - 8));
        }
        if len == UNDEFINED {
            walk_dataset(c, explicit, depth + 1, true, &mut |_| {})?;
        } else {
            c.take(len as usize).map_err(|e| format!("item {e}"))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(tag: (u16, u16), vr: &[u8; 2], val: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&(val.len() as u16).to_le_bytes());
        v.extend_from_slice(val);
        v
    }

    #[test]
    fn complete_and_truncated() {
        let mut ds = el((0x0008, 0x0018), b"UI", b"1.2.3\0");
        ds.extend(el((0x0010, 0x0010), b"PN", b"DOE^J "));
        assert!(check_complete(&ds, true, false).is_ok());
        assert!(check_complete(&ds[..ds.len() - 1], true, false).is_err());
        assert!(check_complete(&ds[..3], true, false).is_err());
    }

    #[test]
    fn encapsulated_pixel_data() {
        let mut ds = Vec::new();
        ds.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00]);
        ds.extend_from_slice(b"OB\0\0");
        ds.extend_from_slice(&UNDEFINED.to_le_bytes());
        // empty offset table item, then one fragment, then the sequence delimiter
        for (len, body) in [(0u32, &b""[..]), (4, &b"abcd"[..])] {
            ds.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
            ds.extend_from_slice(&len.to_le_bytes());
            ds.extend_from_slice(body);
        }
        let full_len = ds.len() + 8;
        ds.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(ds.len(), full_len);
        assert!(check_complete(&ds, true, false).is_ok());
        assert!(check_complete(&ds[..ds.len() - 8], true, false).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u32;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = check_complete(&buf, true, false);
            let _ = check_complete(&buf, false, false);
            let _ = check_complete(&buf, true, true);
        }
    }
}
