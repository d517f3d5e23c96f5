//! Spooling of uploaded objects: small parts stay in memory within a per-request budget,
//! larger ones go to an unlinked file in the spool directory and are handed to ingest as a
//! memory map, so that a 2 GB part never sits on the heap.
// One of the few files allowed `unsafe` (workspace lint): memory-mapping spooled parts; each block has its SAFETY note.
#![allow(unsafe_code)]

use bytes::{Bytes, BytesMut};
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// A part grows in memory up to this size before moving to a file.
const IN_MEMORY_PART: usize = 4 << 20;
/// What one request may hold in memory across its parts.
pub const REQUEST_MEMORY_BUDGET: usize = 64 << 20;

/// Spooling failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool file could not be written (a full disk is the usual cause).
    #[error("cannot spool the upload: {0}")]
    Io(#[from] std::io::Error),
}

enum Store {
    Memory(BytesMut),
    File(tokio::fs::File),
}

/// One part being received.
pub struct SpoolWriter {
    store: Store,
    len: u64,
}

/// One part received completely.
pub struct Spooled {
    /// The part's bytes (heap or memory-mapped file).
    pub bytes: Bytes,
    /// Whether the bytes came from disk.
    pub on_disk: bool,
}

impl SpoolWriter {
    /// Starts a part; `memory_left` is what the request may still hold in memory.
    pub fn new() -> Self {
        Self { store: Store::Memory(BytesMut::new()), len: 0 }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was received.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a chunk, moving the part to a spool file when it outgrows memory.
    pub async fn write(&mut self, chunk: &[u8], dir: &Path, memory_left: &mut usize) -> Result<(), SpoolError> {
        if let Store::Memory(buf) = &mut self.store {
            let fits = buf.len() + chunk.len() <= IN_MEMORY_PART && chunk.len() <= *memory_left;
            if fits {
                buf.extend_from_slice(chunk);
                *memory_left -= chunk.len();
                self.len += chunk.len() as u64;
                return Ok(());
            }
            let dir = dir.to_path_buf();
            let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
            let mut file = tokio::fs::File::from_std(file);
            file.write_all(buf).await?;
            *memory_left += buf.len();
            self.store = Store::File(file);
        }
        if let Store::File(f) = &mut self.store {
            f.write_all(chunk).await?;
        }
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Finishes the part.
    pub async fn finish(self) -> Result<Spooled, SpoolError> {
        match self.store {
            Store::Memory(buf) => Ok(Spooled { bytes: buf.freeze(), on_disk: false }),
            Store::File(mut f) => {
                f.flush().await?;
                let file = f.into_std().await;
                if self.len == 0 {
                    return Ok(Spooled { bytes: Bytes::new(), on_disk: true });
                }
                // SAFETY: the file is an unlinked temporary file only this process holds;
                // nobody can truncate it while the map lives.
                let map = unsafe { memmap2::Mmap::map(&file)? };
                Ok(Spooled { bytes: Bytes::from_owner(map), on_disk: true })
            }
        }
    }
}

impl Default for SpoolWriter {
    fn default() -> Self {
        Self::new()
    }
}

/// Makes sure the spool directory exists (leftover files are unlinked ones, so nothing to clean).
pub fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_parts_move_to_disk_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut budget = REQUEST_MEMORY_BUDGET;
        let mut w = SpoolWriter::new();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..6 {
            w.write(&chunk, dir.path(), &mut budget).await.unwrap();
        }
        assert_eq!(budget, REQUEST_MEMORY_BUDGET);
        let s = w.finish().await.unwrap();
        assert!(s.on_disk);
        assert_eq!(s.bytes.len(), 6 << 20);
        assert!(s.bytes.iter().all(|b| *b == 7));

        let mut small = SpoolWriter::new();
        small.write(b"abc", dir.path(), &mut budget).await.unwrap();
        assert_eq!(budget, REQUEST_MEMORY_BUDGET - 3);
        let s = small.finish().await.unwrap();
        assert!(!s.on_disk);
        assert_eq!(&s.bytes[..], b"abc");
    }
}
