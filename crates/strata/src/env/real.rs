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

use super::{DirLock, File, FileSystem, MapWriter, Mapped, OpenMode};

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

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        match fs::metadata(path) {
            Ok(metadata) => Ok(metadata.is_dir()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(with_path(err, path)),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        match fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(with_path(err, path)),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        fs::File::open(path)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| with_path(err, path))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        fs::exists(path).map_err(|err| with_path(err, path))
    }

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

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::hard_link(from, to).map_err(|err| with_path(err, to))
    }

    #[allow(
        unsafe_code,
        reason = "memory-mapping a file is unsafe in Rust; see SAFETY"
    )]
    fn map(&self, path: &Path) -> io::Result<Mapped> {
        let file = fs::File::open(path).map_err(|err| with_path(err, path))?;
        if file.metadata().map_err(|err| with_path(err, path))?.len() == 0 {
            return Ok(Mapped::from_vec(Vec::new()));
        }
        // SAFETY: the map is read-only and Strata maps only sorted tables,
        // which are never written again once synced, and are deleted only
        // when no reader holds them (unlinking keeps the pages valid). A
        // process outside Strata truncating the file could still fault the
        // reader (SIGBUS); the data directory is locked against other
        // Strata processes, and others must not write into it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|err| with_path(err, path))?;
        Ok(Mapped::from_owner(map))
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

    #[allow(unsafe_code, reason = "fallocate(2) is a foreign function; see SAFETY")]
    fn allocate(&self, len: u64) -> io::Result<()> {
        if self.len()? >= len {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let Ok(size) = libc::off_t::try_from(len) else {
                return Err(with_path(
                    io::Error::new(io::ErrorKind::InvalidInput, "allocation too large"),
                    &self.path,
                ));
            };
            loop {
                // SAFETY: the descriptor is this open file's; mode 0
                // allocates (and extends the file to) [0, len) and reads of
                // the new space return zeros.
                let result = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, size) };
                if result == 0 {
                    return Ok(());
                }
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => {}
                    // The file system cannot allocate ahead: extend instead.
                    Some(libc::EOPNOTSUPP) => break,
                    _ => return Err(with_path(err, &self.path)),
                }
            }
        }
        self.set_len(len)
    }

    #[allow(
        unsafe_code,
        reason = "memory-mapping a file is unsafe in Rust; see SAFETY"
    )]
    fn map_writer(&self, len: u64) -> io::Result<Option<Box<dyn MapWriter>>> {
        let Ok(map_len) = usize::try_from(len) else {
            return Ok(None);
        };
        if map_len == 0 || self.len()? < len {
            return Ok(None);
        }
        // SAFETY: Strata maps for writing only the log segment it is
        // appending to, whose space is allocated and which no one shrinks
        // while the writer lives (the writer is dropped before a segment is
        // sealed and trimmed; the data directory is locked against other
        // Strata processes, and others must not write into it). Readers of
        // the segment use `pread`, which sees the same page cache, never a
        // Rust reference into this memory.
        let map = unsafe { memmap2::MmapOptions::new().len(map_len).map_mut(&self.file) }
            .map_err(|err| with_path(err, &self.path))?;
        Ok(Some(Box::new(RealMapWriter {
            map,
            path: self.path.clone(),
        })))
    }
}

/// A shared, writable mapping of a file's prefix: a store is a copy into
/// the page cache, no system call.
struct RealMapWriter {
    map: memmap2::MmapMut,
    path: PathBuf,
}

impl fmt::Debug for RealMapWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealMapWriter")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .finish()
    }
}

impl MapWriter for RealMapWriter {
    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn write_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let target = usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(bytes.len())?))
            .and_then(|range| self.map.get_mut(range));
        match target {
            Some(target) => {
                target.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(with_path(
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a store of {} bytes at {offset} is past the mapping's {} bytes",
                        bytes.len(),
                        self.map.len()
                    ),
                ),
                &self.path,
            )),
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_through_the_operating_system() {
        let temp = tempfile::tempdir().unwrap();
        let fs = RealFileSystem;
        let dir = temp.path().join("db/sub");
        fs.create_dir_all(&dir).unwrap();
        fs.create_dir_all(&dir).unwrap();

        let file = fs.open(&dir.join("b"), OpenMode::CreateNew).unwrap();
        assert!(file.is_empty().unwrap());
        file.write_all_at(b"hello", 0).unwrap();
        file.write_all_at(b"!", 7).unwrap();
        file.sync_data().unwrap();
        fs.sync_dir(&dir).unwrap();
        assert_eq!(file.len().unwrap(), 8);
        let mut buf = [0; 8];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello\0\0!");
        file.set_len(5).unwrap();
        assert_eq!(file.read_at(&mut buf, 5).unwrap(), 0);

        let reader = fs.open(&dir.join("b"), OpenMode::Read).unwrap();
        reader.read_exact_at(&mut buf[..5], 0).unwrap();
        assert_eq!(&buf[..5], b"hello");
        assert!(reader.write_at(b"x", 0).is_err());
        fs.open(&dir.join("b"), OpenMode::ReadWrite)
            .unwrap()
            .write_all_at(b"J", 0)
            .unwrap();
        reader.read_exact_at(&mut buf[..1], 0).unwrap();
        assert_eq!(&buf[..1], b"J");

        fs.open(&dir.join("a"), OpenMode::CreateNew).unwrap();
        fs.create_dir_all(&dir.join("c")).unwrap();
        assert_eq!(fs.list_dir(&dir).unwrap(), ["a", "b", "c"]);
        fs.rename(&dir.join("b"), &dir.join("a")).unwrap();
        fs.remove_file(&dir.join("a")).unwrap();
        assert!(!fs.exists(&dir.join("a")).unwrap());
        assert!(fs.exists(&dir.join("c")).unwrap());
        assert_eq!(fs.list_dir(&dir).unwrap(), ["c"]);
    }

    #[test]
    fn open_reports_missing_and_existing_files_with_their_path() {
        let temp = tempfile::tempdir().unwrap();
        let fs = RealFileSystem;
        let path = temp.path().join("a");
        let missing = fs.open(&path, OpenMode::Read).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(
            missing.to_string().contains(&path.display().to_string()),
            "{missing}"
        );
        assert_eq!(
            fs.open(&path, OpenMode::ReadWrite).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        fs.open(&path, OpenMode::CreateNew).unwrap();
        let existing = fs.open(&path, OpenMode::CreateNew).unwrap_err();
        assert_eq!(existing.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            fs.remove_file(&temp.path().join("b")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn map_returns_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let fs = RealFileSystem;
        let file = fs.open(&path, OpenMode::CreateNew).unwrap();
        file.write_all_at(b"sorted table", 0).unwrap();
        file.sync_data().unwrap();
        assert_eq!(&*fs.map(&path).unwrap(), b"sorted table");
        let empty = dir.path().join("e");
        fs.open(&empty, OpenMode::CreateNew).unwrap();
        assert!(fs.map(&empty).unwrap().is_empty());
    }

    #[test]
    fn allocated_space_reads_as_zeros_and_mapped_stores_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let fs = RealFileSystem;
        let file = fs.open(&path, OpenMode::CreateNew).unwrap();
        file.write_all_at(b"head", 0).unwrap();
        file.allocate(8192).unwrap();
        assert_eq!(file.len().unwrap(), 8192);
        let mut buf = [1u8; 16];
        file.read_exact_at(&mut buf, 4).unwrap();
        assert_eq!(buf, [0u8; 16]);
        let mut writer = file.map_writer(8192).unwrap().unwrap();
        writer.write_at(b"stored", 100).unwrap();
        assert!(writer.write_at(b"xx", 8191).is_err(), "past the mapping");
        // Another handle (as a reader's) sees the stores at once.
        let reader = fs.open(&path, OpenMode::Read).unwrap();
        let mut got = [0u8; 6];
        reader.read_exact_at(&mut got, 100).unwrap();
        assert_eq!(&got, b"stored");
        file.sync_data().unwrap();
        drop(writer);
        file.set_len(106).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[100..], b"stored");
        assert!(
            file.map_writer(1 << 20).unwrap().is_none(),
            "longer than the file"
        );
    }

    #[test]
    fn lock_conflict_gives_would_block_until_the_guard_drops() {
        let temp = tempfile::tempdir().unwrap();
        let fs = RealFileSystem;
        let path = temp.path().join("LOCK");
        let guard = fs.lock(&path).unwrap();
        assert!(fs.exists(&path).unwrap());
        assert_eq!(
            fs.lock(&path).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(guard);
        let _again = fs.lock(&path).unwrap();
    }
}
