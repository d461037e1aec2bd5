//! Snapshots on the serving side: a checkpoint of the database, cut to key
//! ranges if asked, listed with each file's size and crc32, and read by
//! offset, all through the database's file system.
//!
//! Invariants: a listed snapshot is never changed; only paths that pass
//! [`super::safe_relative_path`] are read; a snapshot cut to key ranges
//! holds no key outside them in any file.

use std::path::{Path, PathBuf};

use crate::db::Db;
use crate::env::{FileSystem, OpenMode};
use crate::error::{Error, Result};
use crate::options::Options;
use crate::seqno::SeqNo;

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Its path under the snapshot's directory, `/`-separated.
    pub path: String,
    /// Its length in bytes.
    pub size: u64,
    /// The crc32 (`crc32fast`) of its content.
    pub crc32: u32,
}

/// A snapshot built by [`build_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltSnapshot {
    /// Every write up to this sequence number is in it.
    pub seq: SeqNo,
    /// Its files, sorted by path.
    pub files: Vec<SnapshotFile>,
}

/// Builds a snapshot of `db` in `dir` (which must not exist or be empty):
/// a checkpoint, then, if `ranges` is not empty (sorted, disjoint
/// `[start, end)`, `None` unbounded), every table holding other keys
/// rewritten without them; then lists it.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use strata::replication::build_snapshot;
/// use strata::{Db, MemFileSystem, Options};
///
/// let db = Db::open("p", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
/// db.put(b"k", b"v")?;
/// let snapshot = build_snapshot(&db, "p.snapshots/1".as_ref(), &[])?;
/// assert!(snapshot.files.iter().any(|f| f.path == "CURRENT"));
/// assert_eq!(snapshot.seq.get(), 1);
/// # Ok::<(), strata::Error>(())
/// ```
///
/// # Errors
/// As [`Db::checkpoint`]; errors cutting or listing it (the directory is
/// then removed).
pub fn build_snapshot(
    db: &Db,
    dir: &Path,
    ranges: &[(Vec<u8>, Option<Vec<u8>>)],
) -> Result<BuiltSnapshot> {
    let fs = db.file_system();
    if let Some(parent) = dir.parent() {
        fs.create_dir_all(parent)
            .map_err(|e| Error::io("create directory", parent, e))?;
    }
    let seq = db.checkpoint(dir)?;
    let built = cut_to_ranges(db, dir, ranges).and_then(|()| list_snapshot(&*fs, dir));
    match built {
        Ok(files) => Ok(BuiltSnapshot { seq, files }),
        Err(e) => {
            let _ = fs.remove_dir_all(dir);
            Err(e)
        }
    }
}

/// Opens the checkpoint at `dir` retaining only `ranges` and rewrites every
/// file that holds other keys.
fn cut_to_ranges(db: &Db, dir: &Path, ranges: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<()> {
    if ranges.is_empty() {
        return Ok(());
    }
    let cut = Db::open(
        dir,
        Options {
            retain_ranges: ranges.to_vec(),
            create_if_missing: false,
            file_system: db.file_system(),
            ..Options::default()
        },
    )?;
    cut.purge_outside_retained()?;
    cut.close()
}

/// Flushes `db` and rewrites every table holding a key outside its
/// [`Options::retain_ranges`]; returns the bytes written (0 without
/// ranges). Tables wholly outside the ranges are dropped when the
/// database opens; after this no file holds such a key.
///
/// # Examples
///
/// ```
/// # use strata::{Db, MemFileSystem, Options};
/// # use std::sync::Arc;
/// let fs = Arc::new(MemFileSystem::new());
/// let options = || Options { file_system: fs.clone(), ..Options::default() };
/// let db = Db::open("full", options())?;
/// db.put(b"eu/1", b"a")?;
/// db.put(b"us/1", b"b")?;
/// db.close()?;
/// let eu = Db::open("full", Options {
///     retain_ranges: vec![(b"eu/".to_vec(), Some(b"eu0".to_vec()))],
///     ..options()
/// })?;
/// strata::replication::purge_outside_retained(&eu)?;
/// assert_eq!(eu.get(b"eu/1")?.as_deref(), Some(&b"a"[..]));
/// # Ok::<(), strata::Error>(())
/// ```
///
/// # Errors
/// [`Error::Io`] or [`Error::Poisoned`] if flushing, rewriting or logging
/// fails.
pub fn purge_outside_retained(db: &Db) -> Result<u64> {
    db.purge_outside_retained()
}

/// The files under `root` (not its `LOCK`), sorted by path, with sizes and
/// checksums.
///
/// # Errors
/// [`Error::Io`] naming the file or directory that failed.
pub fn list_snapshot(fs: &dyn FileSystem, root: &Path) -> Result<Vec<SnapshotFile>> {
    let mut files = Vec::new();
    list_into(fs, root, root, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn list_into(
    fs: &dyn FileSystem,
    root: &Path,
    dir: &Path,
    out: &mut Vec<SnapshotFile>,
) -> Result<()> {
    let names = fs
        .list_dir(dir)
        .map_err(|e| Error::io("list directory", dir, e))?;
    for name in names {
        let path = dir.join(&name);
        if fs.is_dir(&path).map_err(|e| Error::io("stat", &path, e))? {
            list_into(fs, root, &path, out)?;
            continue;
        }
        // The lock of the process that cut the snapshot is not part of it.
        if dir == root && name == "LOCK" {
            continue;
        }
        let size = fs
            .open(&path, OpenMode::Read)
            .and_then(|file| file.len())
            .map_err(|e| Error::io("stat", &path, e))?;
        let crc32 = file_crc32(fs, &path)?;
        let relative = path
            .strip_prefix(root)
            .map_err(|_| {
                Error::InvalidArgument(format!("{} is outside {}", path.display(), root.display()))
            })?
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        out.push(SnapshotFile {
            path: relative,
            size,
            crc32,
        });
    }
    Ok(())
}

/// The crc32 of the whole file at `path`.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn file_crc32(fs: &dyn FileSystem, path: &Path) -> Result<u32> {
    let file = fs
        .open(path, OpenMode::Read)
        .map_err(|e| Error::io("open", path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file
            .read_at(&mut buffer, offset)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(buffer.get(..n).unwrap_or_default());
        offset += n as u64;
    }
}

/// Reads up to `buf.len()` bytes at `offset` of the snapshot file
/// `relative` under `root`; returns how many (0 at the end).
///
/// # Errors
/// [`Error::InvalidArgument`] for a path that is not a plain relative one;
/// [`Error::Io`] naming the file.
pub fn read_snapshot_file(
    fs: &dyn FileSystem,
    root: &Path,
    relative: &str,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize> {
    let path = snapshot_path(root, relative)?;
    let file = fs
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io("open", &path, e))?;
    file.read_at(buf, offset)
        .map_err(|e| Error::io("read", &path, e))
}

/// Removes a snapshot's directory.
///
/// # Errors
/// [`Error::Io`] naming it.
pub fn remove_snapshot(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    fs.remove_dir_all(dir)
        .map_err(|e| Error::io("remove directory", dir, e))
}

/// `root/relative` for a safe relative path.
pub(crate) fn snapshot_path(root: &Path, relative: &str) -> Result<PathBuf> {
    if !super::safe_relative_path(relative) {
        return Err(Error::InvalidArgument(format!(
            "{relative:?} is not a plain relative path"
        )));
    }
    Ok(relative
        .split('/')
        .fold(root.to_path_buf(), |path, part| path.join(part)))
}
