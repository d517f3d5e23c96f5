//! Free-space floors: ingest is refused before a data directory runs out of room,
//! so that the catalog and the tiers never fail half way through a write.
// One of the few files allowed `unsafe` (workspace lint): statvfs(2) through libc; each block has its SAFETY note.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};

/// A data directory is below its free-space floor.
#[derive(Debug, Clone, thiserror::Error)]
#[error("out of resources: {path} has {free_mb} MiB free, below the configured floor of {floor_mb} MiB")]
pub struct OutOfSpace {
    /// The directory.
    pub path: PathBuf,
    /// Free space, MiB.
    pub free_mb: u64,
    /// The floor, MiB.
    pub floor_mb: u64,
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The floors of every data directory.
#[derive(Debug, Clone, Default)]
pub struct DiskGuard {
    floors: Vec<(PathBuf, u64)>,
}

impl DiskGuard {
    /// No floors.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a directory with its floor in MiB.
    pub fn with_floor(mut self, path: impl Into<PathBuf>, floor_mb: u64) -> Self {
        self.floors.push((path.into(), floor_mb));
        self
    }
    /// Fails with the first directory below its floor. A directory whose free space
    /// cannot be read counts as full: refusing is safer than failing mid-write.
    pub fn check(&self) -> Result<(), OutOfSpace> {
        for (path, floor_mb) in &self.floors {
            let free_mb = free_bytes(path).map(|b| b / (1 << 20)).unwrap_or(0);
            if free_mb < *floor_mb {
                return Err(OutOfSpace { path: path.clone(), free_mb, floor_mb: *floor_mb });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn floors() {
        let dir = std::env::temp_dir();
        assert!(free_bytes(&dir).unwrap() > 0);
        assert!(DiskGuard::new().with_floor(&dir, 0).check().is_ok());
        let err = DiskGuard::new().with_floor(&dir, u64::MAX / (1 << 21)).check().unwrap_err();
        assert!(err.to_string().contains("out of resources"));
    }
}
