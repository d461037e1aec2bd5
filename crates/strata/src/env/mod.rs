//! The file layer: the one seam through which every byte Strata reads or
//! writes passes.
//!
//! Role: [`FileSystem`] and [`File`] describe exactly the operations the
//! engine needs (positional reads and writes, `fdatasync`, directory sync,
//! atomic rename, listing, locking). Three implementations exist:
//!
//! - [`RealFileSystem`] (`real.rs`): the operating system, through `std::fs`.
//!   It is the only module in the crate allowed to touch `std::fs`.
//! - [`MemFileSystem`] (`mem.rs`): an in-memory file system for fast tests.
//!   It also tracks which bytes and directory entries are durable, so it can
//!   forget the rest on a simulated crash.
//! - `FaultFileSystem` (`fault.rs`, with the `internals` feature: the
//!   crate's own tests and tools): wraps a [`MemFileSystem`] and injects
//!   faults: failing the nth sync (after which the unsynced pages of that file
//!   are gone, as on Linux), `ENOSPC`, short writes, and simulated power loss
//!   that drops, truncates or garbles unsynced data and reverts unsynced
//!   directory operations.
//!
//! Thread-safety: every type here is `Send + Sync`; a [`File`] may be shared
//! between a writer thread and reader threads through `Arc<dyn File>`.
//!
//! Invariants:
//! - Writes are positional (`pwrite`); files keep no cursor, so concurrent
//!   readers never disturb the writer.
//! - A successful `sync_data` makes every byte written to that file before
//!   the call durable; a successful `sync_dir` makes every directory entry
//!   change (create, rename, remove) in that directory durable. Nothing else
//!   makes anything durable.

#[cfg(any(test, feature = "internals"))]
mod fault;
mod mem;
mod real;

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

#[cfg(any(test, feature = "internals"))]
pub use fault::{FaultFileSystem, FaultPlan, FaultStats};
pub use mem::{CrashMode, MemFileSystem};
pub use real::RealFileSystem;

/// How [`FileSystem::open`] opens a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Open an existing file for reading only.
    Read,
    /// Open an existing file for reading and writing.
    ReadWrite,
    /// Create a new, empty file for reading and writing; fail with
    /// `AlreadyExists` if the name is taken.
    CreateNew,
}

/// An open file. Reads and writes are positional; the file has no cursor.
pub trait File: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 at or past the end of the file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes up to `buf.len()` bytes at `offset`, extending the file if
    /// needed; returns how many were written (which may be fewer: a short
    /// write). Writing past the end leaves a zero-filled hole.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;

    /// Makes every byte written so far durable (`fdatasync`).
    ///
    /// # Errors
    /// On failure the unsynced data may already be lost (as on Linux, where
    /// the kernel drops the dirty pages): callers must not retry and assume
    /// success.
    fn sync_data(&self) -> io::Result<()>;

    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file's length is 0.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the file at least `len` bytes long, the new bytes zeros with
    /// their space reserved (`fallocate` on the real file system, so a
    /// full disk fails here, not on a later write into the space, and
    /// writes within it change no file size). Durable after `sync_data`.
    /// The provided implementation extends the file with `set_len`.
    ///
    /// # Errors
    /// Any I/O error, `StorageFull` if the space cannot be reserved.
    fn allocate(&self, len: u64) -> io::Result<()> {
        if self.len()? < len {
            self.set_len(len)?;
        }
        Ok(())
    }

    /// A writer that stores bytes into the file's first `len` bytes
    /// (already allocated, see [`File::allocate`]) without a system call
    /// per write, or `None` if this file system has none (writes then go
    /// through [`File::write_at`]; the provided implementation). Bytes it
    /// stores are in the operating system when the call returns, exactly as
    /// after `write_at` (they survive the process), and `sync_data` makes
    /// them durable. The file must not shrink below `len` while the writer
    /// lives.
    ///
    /// # Errors
    /// Any I/O error making the writer.
    fn map_writer(&self, len: u64) -> io::Result<Option<Box<dyn MapWriter>>> {
        let _ = len;
        Ok(None)
    }

    /// Writes all of `buf` at `offset`, looping over short writes.
    ///
    /// # Errors
    /// The first error from [`File::write_at`], or `WriteZero` if it wrote
    /// nothing.
    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let written = self.write_at(buf, offset)?;
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "write_at wrote 0 bytes",
                ));
            }
            buf = buf.get(written..).unwrap_or_default();
            offset += written as u64;
        }
        Ok(())
    }

    /// Fills `buf` from `offset`, looping over short reads.
    ///
    /// # Errors
    /// `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let read = self.read_at(buf, offset)?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file ended early",
                ));
            }
            buf = std::mem::take(&mut buf).get_mut(read..).unwrap_or_default();
            offset += read as u64;
        }
        Ok(())
    }
}

/// Stores bytes into a file's mapped prefix ([`File::map_writer`]).
pub trait MapWriter: Send + Sync + Debug {
    /// Bytes of the file it covers.
    fn len(&self) -> u64;

    /// Whether it covers nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `bytes` at `offset`.
    ///
    /// # Errors
    /// `InvalidInput` if `offset + bytes.len()` is past [`MapWriter::len`]
    /// (nothing is stored).
    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()>;
}

/// An exclusive, advisory lock on a data directory, released on drop.
pub trait DirLock: Send + Sync + Debug {}

/// The operations Strata performs on a file system.
///
/// Paths are used as given (absolute or relative to the process's working
/// directory for [`RealFileSystem`]; plain keys for the in-memory ones).
pub trait FileSystem: Send + Sync + Debug + 'static {
    /// Opens `path` in `mode`.
    ///
    /// # Errors
    /// `NotFound` for a missing file in `Read`/`ReadWrite` mode,
    /// `AlreadyExists` for an existing one in `CreateNew` mode, or any I/O
    /// error (including injected ones).
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>>;

    /// Creates `path` and any missing parents. Succeeds if it exists.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// The names (not full paths) of the entries of directory `path`, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;

    /// Atomically renames `from` to `to`, replacing `to` if it exists
    /// (a file; a directory is renamed only to a name that is free).
    /// Durable only after [`FileSystem::sync_dir`] of the parent(s).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Whether `path` is a directory (`false` if nothing is there).
    fn is_dir(&self, path: &Path) -> io::Result<bool>;

    /// Removes the directory `path` and everything in it; succeeds if it
    /// does not exist. Durable only after `sync_dir` of its parent (the
    /// in-memory file systems make it durable at once, as they do
    /// `create_dir_all`).
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Removes the file at `path`. Durable only after `sync_dir`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries durable (fsync of the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Takes an exclusive lock on `path` (creating the file if needed),
    /// failing with `WouldBlock` if another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;

    /// The whole content of an immutable file: mapped into memory by the
    /// real file system (`mmap`), copied by the in-memory ones. The file
    /// must not change while mapped; Strata maps only sorted tables, which
    /// are never modified once written and synced.
    fn map(&self, path: &Path) -> io::Result<Mapped>;

    /// Makes `to` a new name for the immutable file `from` (a hard link
    /// where the file system has them). The provided implementation copies
    /// the bytes and syncs the copy; either way `to` is durable only after
    /// [`FileSystem::sync_dir`] of its directory.
    ///
    /// # Errors
    /// `AlreadyExists` if `to` exists; any I/O error.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        let bytes = self.map(from)?;
        let copy = self.open(to, OpenMode::CreateNew)?;
        copy.write_all_at(&bytes, 0)?;
        copy.sync_data()
    }
}

/// The bytes of a mapped file ([`FileSystem::map`]); cheap to clone.
#[derive(Clone)]
pub struct Mapped(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl Mapped {
    /// Bytes held in memory.
    #[must_use]
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self(Arc::new(bytes))
    }

    /// Any owner of bytes (a memory map, say).
    #[must_use]
    pub fn from_owner(owner: impl AsRef<[u8]> + Send + Sync + 'static) -> Self {
        Self(Arc::new(owner))
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({} bytes)", self.len())
    }
}

/// The whole content of the file at `path`, read (not mapped: the file may
/// be one that is still being appended to).
///
/// # Errors
/// [`crate::Error::Corruption`] if the file is longer than `limit` bytes;
/// [`crate::Error::Io`].
pub(crate) fn read_file(fs: &dyn FileSystem, path: &Path, limit: u64) -> crate::Result<Vec<u8>> {
    use crate::Error;
    let file = fs
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("open", path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    if len > limit {
        return Err(Error::corruption_msg(
            path,
            0,
            format!("file is {len} bytes, at most {limit} expected"),
        ));
    }
    let len = usize::try_from(len)
        .map_err(|_| Error::corruption_msg(path, 0, "file larger than memory"))?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(bytes)
}

/// Creates or replaces `dir/name` with `bytes` so that it is either the
/// old file or the whole new one, durably: write `name.tmp` (removing a
/// stale one first), sync it, rename it over `name`, sync `dir`.
pub(crate) fn write_file_atomically(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> crate::Result<()> {
    use crate::Error;
    let temp = dir.join(format!("{name}.tmp"));
    if fs.exists(&temp).map_err(|e| Error::io("stat", &temp, e))? {
        fs.remove_file(&temp)
            .map_err(|e| Error::io("remove", &temp, e))?;
    }
    let file = fs
        .open(&temp, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", &temp, e))?;
    file.write_all_at(bytes, 0)
        .map_err(|e| Error::io("write", &temp, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &temp, e))?;
    fs.rename(&temp, &dir.join(name))
        .map_err(|e| Error::io("rename", &temp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}
