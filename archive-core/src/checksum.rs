//! The strong checksum every stored object carries: BLAKE3, 32 bytes.
//!
//! It is computed once at ingest while the bytes stream through, stored in the
//! catalog and beside the object in its tier, and verified on every full read.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A BLAKE3 digest of an object's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Checksum([u8; 32]);

impl Checksum {
    /// The checksum of a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// The first `n` hex characters, for names and logs.
    pub fn short_hex(&self, n: usize) -> String {
        let mut h = self.to_hex();
        h.truncate(n);
        h
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", self.to_hex())
    }
}
impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({})", self.short_hex(16))
    }
}

/// A string that is not a 64-character hex BLAKE3 digest.
#[derive(Debug, thiserror::Error)]
#[error("not a blake3 checksum: {0:?}")]
pub struct ChecksumParseError(String);

impl FromStr for Checksum {
    type Err = ChecksumParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let h = s.strip_prefix("blake3:").unwrap_or(s);
        let mut out = [0u8; 32];
        hex::decode_to_slice(h, &mut out).map_err(|_| ChecksumParseError(s.to_string()))?;
        Ok(Self(out))
    }
}
impl TryFrom<String> for Checksum {
    type Error = ChecksumParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}
impl From<Checksum> for String {
    fn from(c: Checksum) -> String {
        c.to_hex()
    }
}

/// An incremental hasher, for bytes that arrive in pieces.
#[derive(Default, Clone)]
pub struct ChecksumHasher(blake3::Hasher);

impl ChecksumHasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The checksum of everything fed so far.
    pub fn finish(&self) -> Checksum {
        Checksum(*self.0.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn incremental_equals_whole() {
        let mut h = ChecksumHasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), Checksum::of(b"hello world"));
        let c = Checksum::of(b"x");
        assert_eq!(c.to_hex().parse::<Checksum>().unwrap(), c);
        assert_eq!(c.to_string().parse::<Checksum>().unwrap(), c);
        assert!("zz".parse::<Checksum>().is_err());
    }
}
