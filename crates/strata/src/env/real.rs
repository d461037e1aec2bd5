//! The operating system's file system, through `std::fs`.
//!
//! Role: the production [`FileSystem`], and the only module of the crate
//! that touches `std::fs`.
//!
//! Thread-safety: [`RealFileSystem`] is a stateless unit struct; its files
//! use positional I/O (`pread`/`pwrite`), so one handle may be shared by a
//! writer and readers without any lock.
//!
//! Invariants:
//! - Errors keep their [`io::ErrorKind`] and gain the path in their message.
//! - `sync_data` is `fdatasync`; `sync_dir` is `fsync` on the directory.
//! - `lock` uses an advisory `flock`-style lock, held as long as the
//!   returned guard lives; it conflicts with other handles even within one
//!   process.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DirLock, File, FileSystem, OpenMode};

/// The operating system's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFileSystem;

impl FileSystem for RealFileSystem {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        let mut options = fs::OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
        };
        let file = options.open(path).map_err(|err| with_path(err, path))?;
        Ok(Arc::new(RealFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path).map_err(|err| with_path(err, path))
    }

    /// Names that are not valid UTF-8 are skipped: Strata never creates
    /// such names, so they are not its files.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path).map_err(|err| with_path(err, path))? {
            let entry = entry.map_err(|err| with_path(err, path))?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("rename {} to {}: {err}", from.display(), to.display()),
            )
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path).map_err(|err| with_path(err, path))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        fs::File::open(path)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| with_path(err, path))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        fs::exists(path).map_err(|err| with_path(err, path))
    }

    #[expect(
        clippy::incompatible_msrv,
        reason = "File::try_lock needs Rust 1.89; the crate's rust-version must follow"
    )]
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|err| with_path(err, path))?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(RealDirLock {
                _file: file,
                path: path.to_path_buf(),
            })),
            Err(fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{}: locked by another holder", path.display()),
            )),
            Err(fs::TryLockError::Error(err)) => Err(with_path(err, path)),
        }
    }
}

/// An open file of the operating system.
struct RealFile {
    file: fs::File,
    path: PathBuf,
}

impl fmt::Debug for RealFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl File for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                result => return result.map_err(|err| with_path(err, &self.path)),
            }
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        loop {
            match self.file.write_at(buf, offset) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                result => return result.map_err(|err| with_path(err, &self.path)),
            }
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file
            .sync_data()
            .map_err(|err| with_path(err, &self.path))
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|err| with_path(err, &self.path))?
            .len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file
            .set_len(len)
            .map_err(|err| with_path(err, &self.path))
    }
}

/// A held lock; closing the file on drop releases it.
struct RealDirLock {
    _file: fs::File,
    path: PathBuf,
}

impl fmt::Debug for RealDirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealDirLock")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DirLock for RealDirLock {}

/// Adds `path` to the message of `err`, keeping its kind.
fn with_path(err: io::Error, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}
