//! Every file operation of the log that changes what is on disk or makes it durable goes
//! through [`Storage`]: creating and opening files for writing, positional writes,
//! truncation, fsync of files and directories, renames and removals. Production uses
//! [`FileSystem`] (the calls, unchanged); tests use [`SimulatedDisk`], which runs the real
//! log on a real directory while keeping apart what was written and what was synced, and
//! can lose the unsynced part (power loss, directory entries included), tear the last
//! writes at a sector boundary, fail a chosen call with EIO or ENOSPC, and flip bits.
//!
//! Reads (`File::open`, `read_at`, `read_dir`, `sendfile` from a segment's file) stay on
//! `std::fs`: they change nothing a crash could lose, and the fetch path hands segment
//! files to the kernel as they are. What a test cannot inject through this interface is a
//! failing read; flipped bits stand for a disk returning bad data.
//!
//! The interface works on `std::fs::File` handles so that a segment's open file is the
//! same object whether the disk is real or simulated.

mod simulated;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

pub use simulated::{SimulatedDisk, SimulatedDiskStats, SimulatedFault};

/// The mutating half of the filesystem, as the log uses it. Implementations must be
/// callable from any thread (the flusher syncs while appends write).
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Opens `path` with `options` (which may create or truncate it).
    fn open(&self, path: &Path, options: &OpenOptions) -> io::Result<File>;
    /// Writes all of `bytes` at `position`.
    fn write_at(&self, file: &File, bytes: &[u8], position: u64) -> io::Result<()>;
    /// Cuts or extends `file` to `len` bytes.
    fn set_len(&self, file: &File, len: u64) -> io::Result<()>;
    /// Makes `file`'s data (and the size needed to read it) durable: fdatasync.
    fn sync_data(&self, file: &File) -> io::Result<()>;
    /// Makes `file`'s data and metadata durable: fsync.
    fn sync_all(&self, file: &File) -> io::Result<()>;
    /// Makes the entries of directory `dir` durable (creations, renames, removals in it).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes everything on the filesystem holding `dir` durable (`syncfs`).
    fn sync_filesystem(&self, dir: &File) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileSystem;

impl FileSystem {
    pub fn shared() -> Arc<dyn Storage> {
        Arc::new(FileSystem)
    }
}

impl Storage for FileSystem {
    fn open(&self, path: &Path, options: &OpenOptions) -> io::Result<File> {
        options.open(path)
    }

    fn write_at(&self, file: &File, bytes: &[u8], position: u64) -> io::Result<()> {
        file.write_all_at(bytes, position)
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn sync_filesystem(&self, dir: &File) -> io::Result<()> {
        rustix::fs::syncfs(dir).map_err(io::Error::from)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
}

/// Opens `path` for writing, created or emptied.
pub(crate) fn create_truncated(storage: &dyn Storage, path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    storage.open(path, &options)
}

/// Writes `bytes` as the whole content of `path` (created or replaced in place), unsynced;
/// returns the open file for the caller to sync.
pub(crate) fn write_file(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<File> {
    let file = create_truncated(storage, path)?;
    storage.write_at(&file, bytes, 0)?;
    Ok(file)
}

/// An `io::Write` that appends to `file` through `storage` (for a `BufWriter`).
pub(crate) struct Appender<'a> {
    storage: &'a dyn Storage,
    file: &'a File,
    position: u64,
}

impl<'a> Appender<'a> {
    /// Appends from position 0 of an empty file.
    pub fn new(storage: &'a dyn Storage, file: &'a File) -> Self {
        Appender {
            storage,
            file,
            position: 0,
        }
    }
}

impl io::Write for Appender<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.storage.write_at(self.file, bytes, self.position)?;
        self.position += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Removes `path`; a file already gone is no error.
pub(crate) fn remove_if_present(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    match storage.remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}
