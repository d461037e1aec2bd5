//! Installing a snapshot on a follower: staging, fsyncs, an atomic switch.
//!
//! A snapshot is staged in `<data dir>.bootstrap/` (with a `SNAPSHOT-ID`
//! marker, so an interrupted transfer of the same snapshot resumes). Each
//! file is synced and its size and crc32 checked as it is finished. The
//! commit then:
//!
//! 1. removes the marker and syncs every directory of the staging tree,
//!    deepest first (so every staged name is durable before the switch);
//! 2. renames the data directory to `<data dir>.replaced`, then the staging
//!    directory to the data directory, and syncs their parent (the switch);
//! 3. removes `<data dir>.replaced` and syncs the parent again.
//!
//! A crash before step 2's sync leaves the old database in place, or (the
//! first rename durable, not the second) aside: [`recover_install`] renames
//! it back. After it, the new database is complete; [`recover_install`]
//! removes what is left of the old one.
//!
//! Invariants: after [`recover_install`], the data directory holds the old
//! database or the complete new one; nothing reaches the data directory
//! before every byte and name of it is durable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::snapshot::{SnapshotFile, file_crc32, snapshot_path};
use crate::env::{File, FileSystem, OpenMode, read_file, write_file_atomically};
use crate::error::{Error, Result};

const MARKER: &str = "SNAPSHOT-ID";

/// A snapshot being staged for installation.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use strata::replication::{SnapshotFile, SnapshotInstall, build_snapshot, read_snapshot_file};
/// use strata::{Db, FileSystem, MemFileSystem, Options};
///
/// let fs: Arc<dyn FileSystem> = Arc::new(MemFileSystem::new());
/// let options = || Options { file_system: fs.clone(), ..Options::default() };
/// let primary = Db::open("p", options())?;
/// primary.put(b"k", b"v")?;
/// let snapshot = build_snapshot(&primary, "snap".as_ref(), &[])?;
///
/// let install = SnapshotInstall::begin(fs.clone(), "r".as_ref(), "snapshot-1")?;
/// for file in &snapshot.files {
///     let mut staged = install.file(file)?;
///     let mut buf = vec![0u8; file.size as usize];
///     let n = read_snapshot_file(&*fs, "snap".as_ref(), &file.path, 0, &mut buf)?;
///     staged.append(0, &buf[..n])?;
///     staged.finish()?;
/// }
/// install.commit()?;
/// assert_eq!(Db::open("r", options())?.get(b"k")?.as_deref(), Some(&b"v"[..]));
/// # Ok::<(), strata::Error>(())
/// ```
#[derive(Debug)]
pub struct SnapshotInstall {
    fs: Arc<dyn FileSystem>,
    data_dir: PathBuf,
    staging: PathBuf,
}

impl SnapshotInstall {
    /// Starts (or, for the same `snapshot_id`, resumes) staging a snapshot
    /// for `data_dir`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the staging directory or marker.
    pub fn begin(fs: Arc<dyn FileSystem>, data_dir: &Path, snapshot_id: &str) -> Result<Self> {
        let staging = data_dir.with_extension("bootstrap");
        let marker = staging.join(MARKER);
        let same = fs.exists(&marker).unwrap_or(false)
            && read_file(&*fs, &marker, 4096).is_ok_and(|id| id == snapshot_id.as_bytes());
        if !same {
            fs.remove_dir_all(&staging)
                .map_err(|e| Error::io("remove directory", &staging, e))?;
            fs.create_dir_all(&staging)
                .map_err(|e| Error::io("create directory", &staging, e))?;
            write_file_atomically(&*fs, &staging, MARKER, snapshot_id.as_bytes())?;
        }
        Ok(Self {
            fs,
            data_dir: data_dir.to_path_buf(),
            staging,
        })
    }

    /// The staging directory.
    #[must_use]
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// Opens the staged copy of `file` (creating it and its directories),
    /// keeping what an interrupted transfer staged unless it is longer
    /// than the file.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a path that is not a plain relative
    /// one; [`Error::Io`] naming the file.
    pub fn file(&self, file: &SnapshotFile) -> Result<StagedFile> {
        let path = snapshot_path(&self.staging, &file.path)?;
        if let Some(parent) = path.parent() {
            self.fs
                .create_dir_all(parent)
                .map_err(|e| Error::io("create directory", parent, e))?;
        }
        let exists = self
            .fs
            .exists(&path)
            .map_err(|e| Error::io("stat", &path, e))?;
        let mode = if exists {
            OpenMode::ReadWrite
        } else {
            OpenMode::CreateNew
        };
        let handle = self
            .fs
            .open(&path, mode)
            .map_err(|e| Error::io("open", &path, e))?;
        let mut len = handle.len().map_err(|e| Error::io("stat", &path, e))?;
        if len > file.size {
            handle
                .set_len(0)
                .map_err(|e| Error::io("truncate", &path, e))?;
            len = 0;
        }
        Ok(StagedFile {
            fs: Arc::clone(&self.fs),
            file: handle,
            path,
            expected: file.clone(),
            len,
        })
    }

    /// Makes the staged snapshot the database in the data directory (see
    /// the module documentation). The database must be closed.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if no `CURRENT` was staged; [`Error::Io`]
    /// naming the step that failed (run [`recover_install`] before opening
    /// the data directory again).
    pub fn commit(self) -> Result<()> {
        let fs = &*self.fs;
        let current = self.staging.join("CURRENT");
        if !fs
            .exists(&current)
            .map_err(|e| Error::io("stat", &current, e))?
        {
            return Err(Error::InvalidArgument(format!(
                "the staged snapshot in {} has no CURRENT",
                self.staging.display()
            )));
        }
        let marker = self.staging.join(MARKER);
        fs.remove_file(&marker)
            .map_err(|e| Error::io("remove", &marker, e))?;
        sync_tree(fs, &self.staging)?;
        let aside = aside(&self.data_dir);
        let parent = parent(&self.data_dir);
        fs.remove_dir_all(&aside)
            .map_err(|e| Error::io("remove directory", &aside, e))?;
        if fs
            .exists(&self.data_dir)
            .map_err(|e| Error::io("stat", &self.data_dir, e))?
        {
            fs.rename(&self.data_dir, &aside)
                .map_err(|e| Error::io("rename", &self.data_dir, e))?;
        }
        fs.rename(&self.staging, &self.data_dir)
            .map_err(|e| Error::io("rename", &self.staging, e))?;
        fs.sync_dir(&parent)
            .map_err(|e| Error::io("sync directory", &parent, e))?;
        fs.remove_dir_all(&aside)
            .map_err(|e| Error::io("remove directory", &aside, e))?;
        fs.sync_dir(&parent)
            .map_err(|e| Error::io("sync directory", &parent, e))
    }
}

/// One file being staged.
#[derive(Debug)]
pub struct StagedFile {
    fs: Arc<dyn FileSystem>,
    file: Arc<dyn File>,
    path: PathBuf,
    expected: SnapshotFile,
    len: u64,
}

impl StagedFile {
    /// Bytes staged so far (where the transfer resumes).
    #[must_use]
    pub fn staged_len(&self) -> u64 {
        self.len
    }

    /// Appends `bytes`, which must start at `offset` (the staged length)
    /// and end within the file's size.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bytes that do not continue the file
    /// within its size (nothing is written); [`Error::Io`].
    pub fn append(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let end = offset.saturating_add(bytes.len() as u64);
        if offset != self.len || end > self.expected.size {
            return Err(Error::InvalidArgument(format!(
                "snapshot file {}: {} bytes at {offset} do not continue at {} within {} bytes",
                self.expected.path,
                bytes.len(),
                self.len,
                self.expected.size
            )));
        }
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.len = end;
        Ok(())
    }

    /// Syncs the file and checks its size and crc32; a file that fails the
    /// check is removed (to be fetched again).
    ///
    /// # Errors
    /// [`Error::Corruption`] naming the file, the size and crc found and
    /// expected; [`Error::Io`].
    pub fn finish(self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        let crc = file_crc32(&*self.fs, &self.path)?;
        if self.len != self.expected.size || crc != self.expected.crc32 {
            let _ = self.fs.remove_file(&self.path);
            return Err(Error::corruption_msg(
                &self.path,
                0,
                format!(
                    "snapshot file {} is {} bytes with crc32 {crc:08x}, expected {} bytes with {:08x}; removed, fetch it again",
                    self.expected.path, self.len, self.expected.size, self.expected.crc32
                ),
            ));
        }
        Ok(())
    }
}

/// Completes or rolls back a switch a crash interrupted (see the module
/// documentation): call before opening a follower's data directory.
///
/// # Errors
/// [`Error::Io`] naming the directory.
pub fn recover_install(fs: &dyn FileSystem, data_dir: &Path) -> Result<()> {
    let aside = aside(data_dir);
    if !fs
        .exists(&aside)
        .map_err(|e| Error::io("stat", &aside, e))?
    {
        return Ok(());
    }
    let parent = parent(data_dir);
    if fs
        .exists(data_dir)
        .map_err(|e| Error::io("stat", data_dir, e))?
    {
        fs.remove_dir_all(&aside)
            .map_err(|e| Error::io("remove directory", &aside, e))?;
    } else {
        fs.rename(&aside, data_dir)
            .map_err(|e| Error::io("rename", &aside, e))?;
    }
    fs.sync_dir(&parent)
        .map_err(|e| Error::io("sync directory", &parent, e))
}

fn aside(data_dir: &Path) -> PathBuf {
    data_dir.with_extension("replaced")
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Syncs every directory under and including `dir`, deepest first.
fn sync_tree(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let names = fs
        .list_dir(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    for name in names {
        let path = dir.join(name);
        if fs.is_dir(&path).map_err(|e| Error::io("stat", &path, e))? {
            sync_tree(fs, &path)?;
        }
    }
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}
