//! The machine's limits, measured in the same run as a benchmark so that every figure can be
//! read as a fraction of what the hardware allows: fsynced file writes at DICOM instance
//! sizes, sequential write and read bandwidth, WAL-like synced appends, loopback TCP.
// One of the few files allowed `unsafe` (workspace lint): posix_fadvise(2) through libc; each block has its SAFETY note.
#![allow(unsafe_code)]

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Files of `size` bytes written, fsynced and their directory fsynced, one writer:
/// what an archive does per acknowledged instance at the least.
fn fsynced_files(dir: &Path, size: usize, count: usize) -> std::io::Result<Value> {
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let sub = dir.join(format!("files-{size}"));
    std::fs::create_dir_all(&sub)?;
    let started = Instant::now();
    for i in 0..count {
        let path = sub.join(format!("{i}.dcm"));
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&body)?;
        f.sync_all()?;
        sync_dir(&sub)?;
    }
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&sub)?;
    Ok(
        json!({"size": size, "files": count, "files_per_s": count as f64 / secs, "mb_per_s": (size * count) as f64 / 1e6 / secs}),
    )
}

/// Sequential write of `mib` MiB with one fsync at the end, then a read of it from disk
/// (the file's pages are dropped from the cache first).
fn sequential(dir: &Path, mib: usize) -> std::io::Result<(Value, Value)> {
    let path = dir.join("sequential.bin");
    let chunk = vec![7u8; 1 << 20];
    let started = Instant::now();
    let mut f = std::fs::File::create(&path)?;
    for _ in 0..mib {
        f.write_all(&chunk)?;
    }
    f.sync_all()?;
    let write_secs = started.elapsed().as_secs_f64();
    drop(f);
    let f = std::fs::File::open(&path)?;
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain advisory call on an open descriptor.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
    let mut buf = vec![0u8; 1 << 20];
    let started = Instant::now();
    let mut total = 0usize;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let read_secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    let bytes = (mib << 20) as f64;
    Ok((
        json!({"mib": mib, "mb_per_s": bytes / 1e6 / write_secs}),
        json!({"mib": total >> 20, "mb_per_s": total as f64 / 1e6 / read_secs}),
    ))
}

/// 100-byte appends each followed by fdatasync, like a write-ahead log with one writer.
fn synced_appends(dir: &Path, count: usize) -> std::io::Result<Value> {
    let path = dir.join("wal.bin");
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let record = [1u8; 100];
    let started = Instant::now();
    for _ in 0..count {
        f.write_all(&record)?;
        f.sync_data()?;
    }
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(json!({"appends": count, "syncs_per_s": count as f64 / secs}))
}

/// Bytes pushed through a loopback TCP connection with TCP_NODELAY.
fn loopback(mib: usize) -> std::io::Result<Value> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let chunk = vec![3u8; 1 << 20];
    let started = Instant::now();
    for _ in 0..mib {
        s.write_all(&chunk)?;
    }
    drop(s);
    let total = reader.join().map_err(|_| std::io::Error::other("reader thread failed"))??;
    let secs = started.elapsed().as_secs_f64();
    Ok(json!({"mib": total >> 20, "mb_per_s": total as f64 / 1e6 / secs}))
}

/// Measures every limit in `dir` (on the disk the archive under test uses).
pub fn measure(dir: &Path, quick: bool) -> std::io::Result<Value> {
    std::fs::create_dir_all(dir)?;
    let scale = if quick { 1 } else { 4 };
    let (write, read) = sequential(dir, 256 * scale)?;
    Ok(json!({
        "fsynced_files_512k": fsynced_files(dir, 512 << 10, 100 * scale)?,
        "fsynced_files_4k": fsynced_files(dir, 4 << 10, 300 * scale)?,
        "sequential_write_fsync": write,
        "sequential_read": read,
        "synced_appends": synced_appends(dir, 1000 * scale)?,
        "loopback_tcp": loopback(1024 * scale)?,
    }))
}
