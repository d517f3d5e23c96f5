//! The hot tier: one plain file per object under a root directory on a local filesystem.
//!
//! # Layout
//! - An object with key `a/b/c.dcm` is the file `<root>/a/b/c.dcm`; keys are validated
//!   by [`ObjectKey`], so they cannot escape the root.
//! - Its BLAKE3 checksum is the extended attribute `user.vna.blake3` (32 raw bytes) of
//!   the file, so the filesystem must support user extended attributes.
//! - Puts write to a uniquely named temporary file in `<root>/.tmp/`, which is emptied on
//!   [`HotTier::open`]; keys whose first segment is `.tmp` are therefore reserved.
//!
//! # Durability
//! A put fsyncs the file (data and checksum attribute), every directory it creates, and
//! the directory it renames the file into; a delete fsyncs the directory it removes from.
//!
//! Only one `HotTier` (one process) may use a root at a time: opening a root empties its
//! `.tmp` directory, which would break the puts of another user.
//!
//! This module needs Linux: it uses `renameat2` and the `*xattr` system calls.
// One of the few files allowed `unsafe` (workspace lint): flock(2) and extended attributes through libc; each block has its SAFETY note.
#![allow(unsafe_code)]

use archive_core::checksum::{Checksum, ChecksumHasher};
use archive_core::tier::{
    verify_stream, Availability, ByteStream, GetOpts, GetResult, ObjectKey, ObjectMeta, PutOpts, Tier,
    TierCapabilities, TierError, TierName,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{stream, StreamExt};
use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncWriteExt, BufWriter};

/// The extended attribute holding an object's checksum (32 raw bytes).
const CHECKSUM_XATTR: &CStr = c"user.vna.blake3";
/// The extended attribute written by the probe in [`HotTier::open`].
const PROBE_XATTR: &CStr = c"user.vna.probe";
/// The directory under the root that holds files being written.
const TMP_DIR: &str = ".tmp";
/// Size of the chunks reads are streamed in.
const READ_CHUNK: u64 = 256 * 1024;
/// Size of the write buffer between the body stream and the temporary file.
const WRITE_BUFFER: usize = 256 * 1024;
/// How often a put retries its rename when a concurrent delete removed an empty parent.
const RENAME_ATTEMPTS: usize = 8;

/// Distinguishes the temporary files of one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A tier storing each object as a plain file under a root directory.
#[derive(Debug)]
pub struct HotTier {
    name: TierName,
    root: PathBuf,
    tmp: PathBuf,
    /// An exclusive `flock` on `root/.tmp`, held while the tier is open, so that a second
    /// process cannot empty the temporary files of the first.
    _lock: Option<fs::File>,
}

impl HotTier {
    /// Opens (creating if needed) a hot tier rooted at `root`.
    ///
    /// Creates `root` and `root/.tmp`, removes temporary files a crash left in `.tmp`,
    /// and checks that the filesystem supports user extended attributes.
    pub fn open(name: TierName, root: PathBuf) -> Result<HotTier, TierError> {
        let tmp = root.join(TMP_DIR);
        let mut tier = HotTier { name, root, tmp, _lock: None };
        fs::create_dir_all(&tier.root).map_err(|e| tier.io(format!("creating root {}", tier.root.display()), e))?;
        tier.create_tmp_dir()?;
        tier._lock = Some(tier.lock_tmp_dir()?);
        tier.clean_tmp_dir()?;
        tier.probe_xattrs()?;
        Ok(tier)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds (or would hold) the object under `key`.
    ///
    /// # Panics
    /// Never for a valid [`ObjectKey`]; it asserts that the path stays under the root.
    pub fn path_of(&self, key: &ObjectKey) -> PathBuf {
        let mut path = self.root.clone();
        for segment in key.segments() {
            let mut components = Path::new(segment).components();
            let single_normal =
                matches!(components.next(), Some(Component::Normal(c)) if c == segment) && components.next().is_none();
            assert!(single_normal, "object key {key} has segment {segment:?} that would escape the tier root");
            path.push(segment);
        }
        path
    }

    /// Wraps an I/O error of this tier.
    fn io(&self, context: impl Into<String>, e: io::Error) -> TierError {
        TierError::io(&self.name, context, e)
    }

    /// Whether `key` lies in the reserved `.tmp` directory.
    fn is_reserved(key: &ObjectKey) -> bool {
        key.segments().next() == Some(TMP_DIR)
    }

    /// Creates `root/.tmp` if missing, making the new entry durable.
    fn create_tmp_dir(&self) -> Result<(), TierError> {
        match fs::create_dir(&self.tmp) {
            Ok(()) => fsync_dir(&self.root).map_err(|e| self.io(format!("syncing {}", self.root.display()), e)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && self.tmp.is_dir() => Ok(()),
            Err(e) => Err(self.io(format!("creating {}", self.tmp.display()), e)),
        }
    }

    /// Takes an exclusive lock on `root/.tmp`; fails if another process holds it.
    fn lock_tmp_dir(&self) -> Result<fs::File, TierError> {
        use std::os::fd::AsRawFd;
        let dir = fs::File::open(&self.tmp).map_err(|e| self.io(format!("opening {}", self.tmp.display()), e))?;
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(TierError::InUse { tier: self.name.clone(), path: self.root.clone() });
            }
            return Err(self.io(format!("locking {}", self.tmp.display()), err));
        }
        Ok(dir)
    }

    /// Removes everything in `root/.tmp`: files of puts a crash interrupted.
    fn clean_tmp_dir(&self) -> Result<(), TierError> {
        let context = || format!("cleaning {}", self.tmp.display());
        let entries = fs::read_dir(&self.tmp).map_err(|e| self.io(context(), e))?;
        for entry in entries {
            let path = entry.map_err(|e| self.io(context(), e))?.path();
            let removed = if path.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
            match removed {
                Ok(()) => {
                    tracing::info!(tier = %self.name, path = %path.display(), "removed leftover temporary file")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(format!("removing leftover {}", path.display()), e)),
            }
        }
        Ok(())
    }

    /// Checks that files under the root accept user extended attributes.
    fn probe_xattrs(&self) -> Result<(), TierError> {
        let path = self.tmp.join(format!("xattr-probe-{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| self.io(format!("creating {}", path.display()), e))?;
        let result = set_xattr(&file, PROBE_XATTR, b"1");
        drop(file);
        let _ = fs::remove_file(&path);
        result.map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTSUP) => TierError::config(
                &self.name,
                format!(
                    "the filesystem holding {} does not support user extended attributes, \
                     which the hot tier needs to store checksums",
                    self.root.display()
                ),
                Some(Box::new(e)),
            ),
            _ => self.io(format!("setting a user extended attribute on {}", path.display()), e),
        })
    }

    /// The path of a new, uniquely named temporary file, created and opened for writing.
    async fn create_temp(&self) -> Result<(TempFile, tokio::fs::File), TierError> {
        loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = self.tmp.join(format!("put-{}-{n}.part", std::process::id()));
            let opened = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await;
            match opened {
                Ok(file) => return Ok((TempFile::new(path), file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io(format!("creating {}", path.display()), e)),
            }
        }
    }

    /// Streams `body` into the temporary file, returning its size and checksum.
    async fn write_body(
        &self,
        temp: &TempFile,
        file: tokio::fs::File,
        mut body: ByteStream,
    ) -> Result<(File, u64, Checksum), TierError> {
        let context = || format!("writing {}", temp.path().display());
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut hasher = ChecksumHasher::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            writer.write_all(&chunk).await.map_err(|e| self.io(context(), e))?;
        }
        writer.flush().await.map_err(|e| self.io(context(), e))?;
        let file = writer.into_inner().into_std().await;
        Ok((file, size, hasher.finish()))
    }

    /// Fails with `AlreadyExists` if an object is stored under `key`.
    async fn check_vacant(&self, key: &ObjectKey, dest: &Path) -> Result<(), TierError> {
        match tokio::fs::symlink_metadata(dest).await {
            Ok(meta) if meta.is_dir() => Err(key_conflict(&self.name, key, dest)),
            Ok(_) => Err(TierError::AlreadyExists(key.clone())),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(self.io(format!("checking {}", dest.display()), e)),
        }
    }

    /// Runs blocking filesystem work off the async runtime.
    async fn blocking<T, F>(&self, work: F) -> Result<T, TierError>
    where
        T: Send + 'static,
        F: FnOnce(Ctx) -> Result<T, TierError> + Send + 'static,
    {
        let ctx = Ctx { name: self.name.clone(), root: self.root.clone() };
        tokio::task::spawn_blocking(move || work(ctx))
            .await
            .map_err(|e| TierError::worker(format!("tier {}: file work", self.name), e))?
    }
}

/// What blocking helpers need to know about the tier.
struct Ctx {
    name: TierName,
    root: PathBuf,
}

impl Ctx {
    /// Wraps an I/O error of this tier.
    fn io(&self, context: impl Into<String>, e: io::Error) -> TierError {
        TierError::io(&self.name, context, e)
    }

    /// Makes a written temporary file the object under `key`: stores the checksum,
    /// fsyncs, creates parent directories, renames and fsyncs the directory.
    fn commit(
        &self,
        temp: TempFile,
        file: File,
        dest: &Path,
        key: &ObjectKey,
        checksum: Checksum,
        overwrite: bool,
    ) -> Result<(), TierError> {
        let tpath = temp.path().to_path_buf();
        set_xattr(&file, CHECKSUM_XATTR, checksum.as_bytes())
            .map_err(|e| self.io(format!("setting the checksum attribute of {}", tpath.display()), e))?;
        file.sync_all().map_err(|e| self.io(format!("syncing {}", tpath.display()), e))?;
        drop(file);
        self.place(&tpath, dest, key, overwrite)?;
        temp.disarm();
        let parent = parent_of(dest);
        if let Err(e) = fsync_dir(parent) {
            // The object is not durable: take it away so that the failed put leaves nothing.
            let _ = fs::remove_file(dest);
            return Err(self.io(format!("syncing {}", parent.display()), e));
        }
        Ok(())
    }

    /// Moves the temporary file to `dest`, creating parent directories; retries when a
    /// concurrent delete removes a parent directory that has just become empty.
    fn place(&self, tpath: &Path, dest: &Path, key: &ObjectKey, overwrite: bool) -> Result<(), TierError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.create_parents(dest, key)?;
            let moved = if overwrite { fs::rename(tpath, dest) } else { rename_noreplace(tpath, dest) };
            match moved {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < RENAME_ATTEMPTS => continue,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(TierError::AlreadyExists(key.clone()))
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EISDIR | libc::ENOTDIR | libc::ENOTEMPTY)) => {
                    return Err(key_conflict(&self.name, key, dest))
                }
                Err(e) => return Err(self.io(format!("renaming {} to {}", tpath.display(), dest.display()), e)),
            }
        }
    }

    /// Creates the missing parent directories of `dest`, fsyncing the parent of each new one.
    fn create_parents(&self, dest: &Path, key: &ObjectKey) -> Result<(), TierError> {
        let parent = parent_of(dest);
        if parent.is_dir() {
            return Ok(());
        }
        let relative = parent.strip_prefix(&self.root).map_err(|_| key_conflict(&self.name, key, dest))?;
        let mut current = self.root.clone();
        for component in relative.components() {
            let next = current.join(component);
            match fs::create_dir(&next) {
                Ok(()) => fsync_dir(&current).map_err(|e| self.io(format!("syncing {}", current.display()), e))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && next.is_dir() => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(key_conflict(&self.name, key, &next)),
                Err(e) => return Err(self.io(format!("creating {}", next.display()), e)),
            }
            current = next;
        }
        Ok(())
    }

    /// Opens an object file, returning it with its size and stored checksum.
    fn open_object(&self, key: &ObjectKey, path: &Path) -> Result<(File, ObjectMeta), TierError> {
        let not_found = || TierError::NotFound(key.clone());
        let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path) {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Err(not_found()),
            Err(e) => return Err(self.io(format!("opening {}", path.display()), e)),
        };
        let metadata = file.metadata().map_err(|e| self.io(format!("reading metadata of {}", path.display()), e))?;
        if !metadata.is_file() {
            return Err(not_found());
        }
        let checksum = read_checksum(&file).map_err(|e| match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ERANGE) => TierError::corrupt_by(
                &self.name,
                format!("object file {} has no valid {} attribute", path.display(), CHECKSUM_XATTR.to_string_lossy()),
                e,
            ),
            _ => self.io(format!("reading the checksum attribute of {}", path.display()), e),
        })?;
        Ok((file, ObjectMeta { key: key.clone(), size: metadata.len(), checksum }))
    }

    /// Opens an object file positioned at the start of `range` (the whole file for
    /// `None`), returning it with the object's meta and the number of bytes to read.
    fn open_range(
        &self,
        key: &ObjectKey,
        path: &Path,
        range: Option<Range<u64>>,
    ) -> Result<(File, ObjectMeta, u64), TierError> {
        let (mut file, meta) = self.open_object(key, path)?;
        let Some(range) = range else {
            let size = meta.size;
            return Ok((file, meta, size));
        };
        check_range(&meta, &range)?;
        file.seek(SeekFrom::Start(range.start)).map_err(|e| self.io(format!("seeking in {}", path.display()), e))?;
        Ok((file, meta, range.end - range.start))
    }

    /// Removes an object file (missing is fine) and then its empty parent directories.
    fn delete(&self, path: &Path) -> Result<(), TierError> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if is_missing(&e) || e.raw_os_error() == Some(libc::EISDIR) => {}
            Err(e) => return Err(self.io(format!("removing {}", path.display()), e)),
        }
        let parent = parent_of(path);
        match fsync_dir(parent) {
            Err(e) if !is_missing(&e) => return Err(self.io(format!("syncing {}", parent.display()), e)),
            _ => {}
        }
        self.remove_empty_parents(parent);
        Ok(())
    }

    /// Removes `dir` and its ancestors below the root while they are empty (best effort).
    fn remove_empty_parents(&self, mut dir: &Path) {
        while dir != self.root && dir.starts_with(&self.root) {
            if fs::remove_dir(dir).is_err() {
                return;
            }
            let parent = parent_of(dir);
            if let Err(e) = fsync_dir(parent) {
                tracing::warn!(tier = %self.name, dir = %parent.display(), error = %e, "could not sync directory");
            }
            dir = parent;
        }
    }

    /// Lists the objects whose keys start with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, TierError> {
        let mut out = Vec::new();
        self.walk(&self.root, "", prefix, &mut out)?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Collects the objects under `dir`, whose keys start with `rel` (empty or ending in `/`).
    fn walk(&self, dir: &Path, rel: &str, prefix: &str, out: &mut Vec<ObjectMeta>) -> Result<(), TierError> {
        let context = || format!("listing {}", dir.display());
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if is_missing(&e) => return Ok(()), // removed by a concurrent delete
            Err(e) => return Err(self.io(context(), e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| self.io(context(), e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(tier = %self.name, path = %entry.path().display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            if rel.is_empty() && name == TMP_DIR {
                continue;
            }
            let file_type = entry.file_type().map_err(|e| self.io(context(), e))?;
            if file_type.is_dir() {
                let child = format!("{rel}{name}/");
                if may_hold_matches(&child, prefix) {
                    self.walk(&entry.path(), &child, prefix, out)?;
                }
            } else if file_type.is_file() {
                let key = format!("{rel}{name}");
                if key.starts_with(prefix) {
                    self.list_file(&key, &entry.path(), out)?;
                }
            } else {
                tracing::warn!(tier = %self.name, path = %entry.path().display(), "skipping a file that is neither a regular file nor a directory");
            }
        }
        Ok(())
    }

    /// Adds the object stored in the file `path` to a listing.
    fn list_file(&self, key: &str, path: &Path, out: &mut Vec<ObjectMeta>) -> Result<(), TierError> {
        let key = match ObjectKey::new(key) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(tier = %self.name, path = %path.display(), error = %e, "skipping a file that is not an object");
                return Ok(());
            }
        };
        match self.open_object(&key, path) {
            Ok((_, meta)) => out.push(meta),
            Err(TierError::NotFound(_)) => {} // deleted while listing
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Whether a directory whose keys all start with `dir_rel` can hold keys starting with `prefix`.
fn may_hold_matches(dir_rel: &str, prefix: &str) -> bool {
    dir_rel.starts_with(prefix) || prefix.starts_with(dir_rel)
}

/// The error for a key that collides with the directory structure of other keys
/// (`a/b` cannot be stored while `a/b/c` exists, and the other way round).
fn key_conflict(tier: &TierName, key: &ObjectKey, path: &Path) -> TierError {
    TierError::InvalidKey {
        tier: tier.clone(),
        key: key.clone(),
        reason: format!(
            "{} is in the way (an object key cannot also be a prefix directory of other keys)",
            path.display()
        ),
    }
}

/// Whether an I/O error means that the path (or one of its parents) does not exist.
fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// The parent directory of a path under the root (the path itself for a bare root).
fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(path)
}

/// Fsyncs a directory, making its entries durable.
fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A path as a C string for system calls.
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Renames `from` to `to`, failing with `AlreadyExists` if `to` exists. Uses
/// `renameat2(RENAME_NOREPLACE)`, or link + unlink where the filesystem lacks it.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (cfrom, cto) = (c_path(from)?, c_path(to)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(libc::AT_FDCWD, cfrom.as_ptr(), libc::AT_FDCWD, cto.as_ptr(), libc::RENAME_NOREPLACE)
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::ENOTSUP) => link_then_unlink(from, to),
        _ => Err(e),
    }
}

/// A no-replace rename for filesystems without `RENAME_NOREPLACE`.
fn link_then_unlink(from: &Path, to: &Path) -> io::Result<()> {
    fs::hard_link(from, to)?;
    if let Err(e) = fs::remove_file(from) {
        // The object is in place; the stray link is removed when the tier is next opened.
        tracing::warn!(path = %from.display(), error = %e, "could not remove a temporary file after linking it");
    }
    Ok(())
}

/// Sets an extended attribute on an open file.
fn set_xattr(file: &File, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: the descriptor is open, the name is NUL-terminated and the value slice is valid.
    let rc = unsafe { libc::fsetxattr(file.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads the checksum attribute of an open object file.
fn read_checksum(file: &File) -> io::Result<Checksum> {
    let mut buf = [0u8; 32];
    // SAFETY: the descriptor is open, the name is NUL-terminated and the buffer is writable for its length.
    let rc = unsafe { libc::fgetxattr(file.as_raw_fd(), CHECKSUM_XATTR.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    match rc {
        32 => Ok(Checksum::from_bytes(buf)),
        n if n < 0 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::from_raw_os_error(libc::ERANGE)),
    }
}

/// A temporary file that is removed when dropped, unless disarmed after its rename.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Takes charge of removing `path`.
    fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }
    /// The file's path.
    fn path(&self) -> &Path {
        &self.path
    }
    /// Keeps the file: it has become an object.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove a temporary file");
                }
            }
        }
    }
}

/// Reads the next chunk of at most `want` bytes; a short file is an error.
fn read_chunk(mut file: File, want: usize) -> io::Result<(File, Bytes)> {
    let mut buf = vec![0u8; want];
    file.read_exact(&mut buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            io::Error::new(io::ErrorKind::UnexpectedEof, "object file is shorter than its recorded size")
        }
        _ => e,
    })?;
    Ok((file, Bytes::from(buf)))
}

/// Streams `len` bytes of `file` from its current position in chunks of [`READ_CHUNK`].
fn file_stream(name: TierName, path: PathBuf, file: File, len: u64) -> ByteStream {
    stream::try_unfold((file, len), move |(file, remaining)| {
        let (name, path) = (name.clone(), path.clone());
        async move {
            if remaining == 0 {
                return Ok(None);
            }
            let want = remaining.min(READ_CHUNK) as usize;
            let read = tokio::task::spawn_blocking(move || read_chunk(file, want))
                .await
                .map_err(|e| TierError::worker(format!("tier {name}: reading {}", path.display()), e))?;
            let (file, chunk) = read.map_err(|e| TierError::io(&name, format!("reading {}", path.display()), e))?;
            Ok(Some((chunk, (file, remaining - want as u64))))
        }
    })
    .boxed()
}

/// Checks that `range` lies inside an object.
fn check_range(meta: &ObjectMeta, range: &Range<u64>) -> Result<(), TierError> {
    if range.start > range.end || range.end > meta.size {
        return Err(TierError::InvalidRange {
            key: meta.key.clone(),
            start: range.start,
            end: range.end,
            size: meta.size,
        });
    }
    Ok(())
}

#[async_trait]
impl Tier for HotTier {
    fn name(&self) -> &TierName {
        &self.name
    }

    fn capabilities(&self) -> TierCapabilities {
        TierCapabilities {
            availability: Availability::Online,
            ranged_reads: true,
            needs_recall: false,
            max_object_size: None,
            batch_bytes: None,
        }
    }

    async fn put(&self, key: &ObjectKey, body: ByteStream, opts: PutOpts) -> Result<ObjectMeta, TierError> {
        if Self::is_reserved(key) {
            return Err(TierError::InvalidKey {
                tier: self.name.clone(),
                key: key.clone(),
                reason: format!("the key is reserved: {TMP_DIR} holds temporary files"),
            });
        }
        let dest = self.path_of(key);
        if !opts.overwrite {
            self.check_vacant(key, &dest).await?;
        }
        let (temp, file) = self.create_temp().await?;
        let (file, size, checksum) = self.write_body(&temp, file, body).await?;
        if let Some(expected) = opts.expected_checksum {
            if expected != checksum {
                return Err(TierError::ChecksumMismatch { key: key.clone(), expected, actual: checksum });
            }
        }
        let owned_key = key.clone();
        self.blocking(move |ctx| ctx.commit(temp, file, &dest, &owned_key, checksum, opts.overwrite)).await?;
        Ok(ObjectMeta { key: key.clone(), size, checksum })
    }

    async fn get(&self, key: &ObjectKey, opts: GetOpts) -> Result<GetResult, TierError> {
        if Self::is_reserved(key) {
            return Err(TierError::NotFound(key.clone()));
        }
        let path = self.path_of(key);
        let full = opts.range.is_none();
        let (key, open_path) = (key.clone(), path.clone());
        let (file, meta, len) = self.blocking(move |ctx| ctx.open_range(&key, &open_path, opts.range)).await?;
        let body = file_stream(self.name.clone(), path, file, len);
        let body = if full { verify_stream(meta.key.clone(), meta.checksum, body) } else { body };
        Ok(GetResult { meta, body })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectMeta, TierError> {
        if Self::is_reserved(key) {
            return Err(TierError::NotFound(key.clone()));
        }
        let path = self.path_of(key);
        let key = key.clone();
        self.blocking(move |ctx| ctx.open_object(&key, &path).map(|(_, meta)| meta)).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), TierError> {
        if Self::is_reserved(key) {
            return Ok(());
        }
        let path = self.path_of(key);
        self.blocking(move |ctx| ctx.delete(&path)).await
    }

    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectMeta>, TierError> {
        let prefix = prefix.unwrap_or("").to_owned();
        self.blocking(move |ctx| ctx.list(&prefix)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_fallback_never_replaces() {
        let dir = std::env::temp_dir().join(format!("vna-hot-link-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("create test dir");
        let (from, to) = (dir.join("from"), dir.join("to"));
        fs::write(&from, b"new").expect("write from");
        fs::write(&to, b"old").expect("write to");
        let err = link_then_unlink(&from, &to).expect_err("linking over an existing file");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&to).expect("read to"), b"old");
        fs::remove_file(&to).expect("remove to");
        link_then_unlink(&from, &to).expect("link to a free name");
        assert!(!from.exists(), "source kept after link");
        assert_eq!(fs::read(&to).expect("read to"), b"new");
        fs::remove_dir_all(&dir).expect("remove test dir");
    }

    #[test]
    fn rename_noreplace_refuses_existing_targets() {
        let dir = std::env::temp_dir().join(format!("vna-hot-rename-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("create test dir");
        let (from, to) = (dir.join("from"), dir.join("to"));
        fs::write(&from, b"new").expect("write from");
        fs::write(&to, b"old").expect("write to");
        let err = rename_noreplace(&from, &to).expect_err("renaming over an existing file");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&to).expect("read to"), b"old");
        fs::remove_file(&to).expect("remove to");
        rename_noreplace(&from, &to).expect("rename to a free name");
        assert_eq!(fs::read(&to).expect("read to"), b"new");
        fs::remove_dir_all(&dir).expect("remove test dir");
    }

    #[test]
    fn directory_pruning_keeps_every_possible_match() {
        assert!(may_hold_matches("a/", ""));
        assert!(may_hold_matches("a/", "a"));
        assert!(may_hold_matches("a/", "a/"));
        assert!(may_hold_matches("a/", "a/b"));
        assert!(may_hold_matches("a/b/", "a/"));
        assert!(!may_hold_matches("a/", "ab"));
        assert!(!may_hold_matches("a/", "a-"));
        assert!(!may_hold_matches("b/", "a"));
        assert!(!may_hold_matches("a/c/", "a/b"));
    }
}
