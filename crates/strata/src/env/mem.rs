//! An in-memory [`FileSystem`] that knows which bytes and names are durable.
//!
//! Role: fast tests, and the ground truth for crash tests. Every file keeps
//! its live content (what reads see) apart from its durable content (what
//! survives power loss), plus the log of writes made since its last sync.
//! Every directory keeps a live and a durable namespace, plus the log of
//! entry changes made since its last `sync_dir`. [`MemFileSystem::crash`]
//! rebuilds the live state from the durable state and, depending on the
//! [`CrashMode`], part of those logs.
//!
//! Thread-safety: `MemFileSystem` is a handle to shared state (`Clone`
//! shares it). The namespace sits behind one mutex; each file's content
//! behind its own, so I/O on open files never takes the namespace lock.
//! Lock order: namespace, then file.
//!
//! Invariants:
//! - Without injected sync failures, a file's durable content equals its
//!   durable content at the last sync with the unsynced log replayed on top,
//!   and equals the live content right after a sync. The same holds for a
//!   directory's namespaces. (A failed sync from the fault layer discards
//!   the log, so live content may then differ from what can become durable.)
//! - A file handle belongs to the "generation" it was opened in; a crash
//!   starts a new generation and every older handle fails with an error
//!   whose message contains "crashed".
//! - Paths are plain keys after normalisation (`.` dropped, `..` pops).
//!   Directories made by `create_dir_all` are durable at once (a
//!   simplification: Strata creates its directory once, before any data).
//!   The roots `""` and `"/"` always exist.
//! - A rename between two directories is logged as an unlink in the source
//!   and a link in the target; a crash may keep either, both or neither.
//!   Within one directory a rename is a single, atomic operation.
//! - A directory may be renamed only within its parent and only to a free
//!   name; the subtree moves with everything in it (durable or not). Until
//!   the parent is synced a crash may undo it: the parent's pending
//!   directory renames are kept as a prefix, as its entry changes are (the
//!   two logs are kept apart: a simplification). `remove_dir_all` is
//!   durable at once, as `create_dir_all` is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

use super::{DirLock, File, FileSystem, Mapped, OpenMode};

/// What a simulated power loss keeps of the data and directory entries
/// that were not yet durable. Synced data and synced entries always
/// survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing unsynced survives.
    DropUnsynced,
    /// A random prefix of each file's unsynced writes survives, the write
    /// after it possibly torn at a random byte; a random prefix of each
    /// directory's unsynced entry changes survives.
    KeepPrefix,
    /// Each 512-byte sector touched by unsynced writes independently keeps
    /// its durable bytes, takes the new bytes, or has the bytes written
    /// since the last sync replaced by random garbage (durable bytes sharing
    /// the sector are kept: writing part of a sector does not damage the
    /// rest of it); each file's length is randomly the durable or the new
    /// one. Directory entry changes as in [`CrashMode::KeepPrefix`].
    GarbleSectors,
    /// One of the other three, chosen at random per file and per directory.
    Random,
}

/// The unit of [`CrashMode::GarbleSectors`].
const SECTOR_BYTES: usize = 512;

/// The largest file this in-memory file system accepts, so that a bad
/// offset gives an error instead of an attempt to allocate terabytes.
const FILE_BYTES_MAX: u64 = 1 << 32;

type InodeRef = Arc<Mutex<Inode>>;

/// One change to a file's content that is not yet durable.
#[derive(Debug)]
enum FileOp {
    Write { offset: usize, bytes: Vec<u8> },
    SetLen(usize),
}

impl FileOp {
    fn apply(&self, content: &mut Vec<u8>) {
        match self {
            FileOp::Write { offset, bytes } => write_into(content, *offset, bytes),
            FileOp::SetLen(len) => content.resize(*len, 0),
        }
    }
}

/// Writes `bytes` at `offset`, zero-filling any hole. A zero-length write
/// does not extend the file, as with `pwrite`.
fn write_into(content: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let end = offset.saturating_add(bytes.len());
    if content.len() < end {
        content.resize(end, 0);
    }
    if let Some(target) = content.get_mut(offset..end) {
        target.copy_from_slice(bytes);
    }
}

/// A file's content: live, durable, and the writes in between.
#[derive(Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<FileOp>,
}

impl Inode {
    fn sync(&mut self) {
        for op in self.unsynced.drain(..) {
            op.apply(&mut self.durable);
        }
    }

    fn unsynced_bytes(&self) -> u64 {
        self.unsynced
            .iter()
            .map(|op| match op {
                FileOp::Write { bytes, .. } => bytes.len() as u64,
                FileOp::SetLen(_) => 0,
            })
            .sum()
    }

    fn crash(&mut self, mode: CrashMode, rng: &mut SmallRng) {
        let ops = std::mem::take(&mut self.unsynced);
        let content = match concrete(mode, rng) {
            Outcome::Drop => self.durable.clone(),
            Outcome::Prefix => keep_prefix(&self.durable, &ops, rng),
            Outcome::Garble => garble_sectors(&self.durable, &ops, rng),
        };
        self.durable.clone_from(&content);
        self.live = content;
    }
}

/// What a crash does to one file or directory.
enum Outcome {
    Drop,
    Prefix,
    Garble,
}

fn concrete(mode: CrashMode, rng: &mut SmallRng) -> Outcome {
    match mode {
        CrashMode::DropUnsynced => Outcome::Drop,
        CrashMode::KeepPrefix => Outcome::Prefix,
        CrashMode::GarbleSectors => Outcome::Garble,
        CrashMode::Random => match rng.random_range(0..3u8) {
            0 => Outcome::Drop,
            1 => Outcome::Prefix,
            _ => Outcome::Garble,
        },
    }
}

/// Durable content plus a random prefix of `ops`; the first op left out,
/// if it is a write, may land torn (a random prefix of its bytes).
fn keep_prefix(durable: &[u8], ops: &[FileOp], rng: &mut SmallRng) -> Vec<u8> {
    let mut content = durable.to_vec();
    let kept = rng.random_range(0..=ops.len());
    for op in ops.iter().take(kept) {
        op.apply(&mut content);
    }
    if let Some(FileOp::Write { offset, bytes }) = ops.get(kept)
        && !bytes.is_empty()
    {
        let torn = rng.random_range(0..bytes.len());
        write_into(&mut content, *offset, bytes.get(..torn).unwrap_or_default());
    }
    content
}

/// For every sector the unsynced ops touched, keeps the durable bytes, takes
/// the new bytes, or garbles the bytes written since the last sync; the
/// length is the old or the new one. Sectors no op touched keep their
/// durable bytes.
///
/// Garbage lands only on bytes that were written since the last sync, never
/// on durable bytes that share a sector with them: like SQLite's "powersafe
/// overwrite", we assume that writing part of a sector does not damage the
/// rest of it (see `docs/format.md`, assumptions about the disk).
fn garble_sectors(durable: &[u8], ops: &[FileOp], rng: &mut SmallRng) -> Vec<u8> {
    let mut new = durable.to_vec();
    let mut touched: Vec<bool> = Vec::new();
    let mut written: Vec<(usize, usize)> = Vec::new();
    for op in ops {
        let (start, end) = match op {
            FileOp::Write { bytes, .. } if bytes.is_empty() => continue,
            // A write past the end also changes the hole before it.
            FileOp::Write { offset, bytes } => {
                ((*offset).min(new.len()), offset.saturating_add(bytes.len()))
            }
            FileOp::SetLen(len) => ((*len).min(new.len()), (*len).max(new.len())),
        };
        if start < end {
            written.push((start, end));
            let last_sector = (end - 1) / SECTOR_BYTES;
            if touched.len() <= last_sector {
                touched.resize(last_sector + 1, false);
            }
            for flag in touched
                .iter_mut()
                .take(last_sector + 1)
                .skip(start / SECTOR_BYTES)
            {
                *flag = true;
            }
        }
        op.apply(&mut new);
    }
    let len = if rng.random_bool(0.5) {
        durable.len()
    } else {
        new.len()
    };
    let mut content = vec![0; len];
    for (sector, chunk) in content.chunks_mut(SECTOR_BYTES).enumerate() {
        let start = sector * SECTOR_BYTES;
        let source: &[u8] = if touched.get(sector).copied().unwrap_or(false) {
            match rng.random_range(0..3u8) {
                0 => durable,
                1 => &new,
                _ => {
                    let available = durable.get(start..).unwrap_or_default();
                    let count = chunk.len().min(available.len());
                    if let (Some(target), Some(bytes)) =
                        (chunk.get_mut(..count), available.get(..count))
                    {
                        target.copy_from_slice(bytes);
                    }
                    let sector_end = start + chunk.len();
                    for &(from, to) in &written {
                        let (low, high) = (from.max(start), to.min(sector_end));
                        if let Some(bytes) =
                            chunk.get_mut(low.saturating_sub(start)..high.saturating_sub(start))
                        {
                            rng.fill_bytes(bytes);
                        }
                    }
                    continue;
                }
            }
        } else {
            durable
        };
        let available = source.get(start..).unwrap_or_default();
        let count = chunk.len().min(available.len());
        if let (Some(target), Some(bytes)) = (chunk.get_mut(..count), available.get(..count)) {
            target.copy_from_slice(bytes);
        }
    }
    content
}

/// One change to a directory's entries that is not yet durable.
#[derive(Debug)]
enum DirOp {
    Link {
        name: String,
        inode: InodeRef,
    },
    Unlink {
        name: String,
    },
    Rename {
        from: String,
        to: String,
        inode: InodeRef,
    },
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<String, InodeRef>) {
        match self {
            DirOp::Link { name, inode } => {
                entries.insert(name.clone(), Arc::clone(inode));
            }
            DirOp::Unlink { name } => {
                entries.remove(name);
            }
            DirOp::Rename { from, to, inode } => {
                entries.remove(from);
                entries.insert(to.clone(), Arc::clone(inode));
            }
        }
    }
}

/// A directory's file entries (subdirectories live in [`State::dirs`]).
#[derive(Debug, Default)]
struct Dir {
    live: BTreeMap<String, InodeRef>,
    durable: BTreeMap<String, InodeRef>,
    pending: Vec<DirOp>,
}

impl Dir {
    fn record(&mut self, op: DirOp) {
        op.apply(&mut self.live);
        self.pending.push(op);
    }

    fn sync(&mut self) {
        for op in self.pending.drain(..) {
            op.apply(&mut self.durable);
        }
    }

    fn crash(&mut self, mode: CrashMode, rng: &mut SmallRng) {
        let ops = std::mem::take(&mut self.pending);
        let kept = match concrete(mode, rng) {
            Outcome::Drop => 0,
            Outcome::Prefix | Outcome::Garble => rng.random_range(0..=ops.len()),
        };
        for op in ops.iter().take(kept) {
            op.apply(&mut self.durable);
        }
        self.live.clone_from(&self.durable);
    }
}

/// A directory rename not yet made durable by a sync of its parent.
#[derive(Debug)]
struct DirRename {
    parent: PathBuf,
    from: PathBuf,
    to: PathBuf,
}

#[derive(Debug)]
struct State {
    dirs: BTreeMap<PathBuf, Dir>,
    /// Directory renames since their parent's last sync, oldest first.
    dir_renames: Vec<DirRename>,
    /// Held locks, by path, with the token of the guard that holds each.
    locks: HashMap<PathBuf, u64>,
    next_lock_token: u64,
}

impl State {
    fn dir(&self, path: &Path) -> io::Result<&Dir> {
        self.dirs
            .get(path)
            .ok_or_else(|| not_found(path, "no such directory"))
    }

    fn dir_mut(&mut self, path: &Path) -> io::Result<&mut Dir> {
        self.dirs
            .get_mut(path)
            .ok_or_else(|| not_found(path, "no such directory"))
    }

    /// The live file at `path`.
    fn lookup(&self, path: &Path) -> io::Result<InodeRef> {
        let (dir, name) = split(path)?;
        self.dir(&dir)?
            .live
            .get(&name)
            .cloned()
            .ok_or_else(|| not_found(path, "no such file"))
    }

    fn create(&mut self, path: &Path) -> io::Result<InodeRef> {
        let (dir, name) = split(path)?;
        let is_dir = self.dirs.contains_key(path);
        let dir = self.dir_mut(&dir)?;
        if is_dir || dir.live.contains_key(&name) {
            return Err(error(io::ErrorKind::AlreadyExists, path, "already exists"));
        }
        let inode = InodeRef::default();
        dir.record(DirOp::Link {
            name,
            inode: Arc::clone(&inode),
        });
        Ok(inode)
    }

    /// Moves the directory `from` and every directory below it to `to`.
    fn move_tree(&mut self, from: &Path, to: &Path) {
        let moved: Vec<PathBuf> = self
            .dirs
            .keys()
            .filter(|dir| dir.starts_with(from))
            .cloned()
            .collect();
        for old in moved {
            if let (Some(dir), Ok(rest)) = (self.dirs.remove(&old), old.strip_prefix(from)) {
                let new = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
                self.dirs.insert(new, dir);
            }
        }
    }

    /// Every file reachable by a live or durable name, each once, in path
    /// order (so that a seeded crash is deterministic).
    fn inodes(&self) -> Vec<InodeRef> {
        let mut seen = HashSet::new();
        self.dirs
            .values()
            .flat_map(|dir| dir.live.values().chain(dir.durable.values()))
            .filter(|inode| seen.insert(Arc::as_ptr(inode)))
            .cloned()
            .collect()
    }
}

struct Shared {
    state: Mutex<State>,
    /// Bumped by every crash; handles from an older generation are dead.
    generation: AtomicU64,
}

/// An in-memory file system that models durability, for tests.
///
/// Cheap to clone: clones share the same files. See the module
/// documentation for the model.
///
/// # Examples
///
/// ```
/// use std::path::Path;
/// use strata::env::{CrashMode, FileSystem, MemFileSystem, OpenMode};
///
/// let fs = MemFileSystem::new();
/// fs.create_dir_all(Path::new("/db"))?;
/// let file = fs.open(Path::new("/db/a"), OpenMode::CreateNew)?;
/// file.write_all_at(b"hello", 0)?;
/// file.sync_data()?;
/// fs.sync_dir(Path::new("/db"))?;
/// file.write_all_at(b" world", 5)?; // never synced
/// fs.crash(CrashMode::DropUnsynced, 7);
/// assert_eq!(fs.read_file(Path::new("/db/a"))?, b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct MemFileSystem {
    shared: Arc<Shared>,
}

impl Default for MemFileSystem {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemFileSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemFileSystem")
            .field("generation", &self.shared.generation.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl MemFileSystem {
    /// An empty file system holding only the root directories `""` and `"/"`.
    pub fn new() -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::new(), Dir::default());
        dirs.insert(PathBuf::from("/"), Dir::default());
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    dirs,
                    dir_renames: Vec::new(),
                    locks: HashMap::new(),
                    next_lock_token: 0,
                }),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// Simulates power loss, deterministically from `seed`.
    ///
    /// Every directory's entries are rebuilt from its durable entries plus
    /// (except for [`CrashMode::DropUnsynced`]) a random prefix of its
    /// unsynced operations; every file's content from its durable content
    /// plus what `mode` keeps of its unsynced writes. Afterwards everything
    /// is durable, every handle opened before the crash fails with an error
    /// containing "crashed", and every lock is released.
    pub fn crash(&self, mode: CrashMode, seed: u64) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut state = self.shared.state.lock();
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        state.locks.clear();
        // Undo the directory renames a crash does not keep, newest first,
        // before the directories' own entries are rebuilt.
        let renames = std::mem::take(&mut state.dir_renames);
        let mut kept: BTreeMap<PathBuf, usize> = BTreeMap::new();
        let mut seen: Vec<&PathBuf> = Vec::new();
        for rename in &renames {
            if !seen.contains(&&rename.parent) {
                seen.push(&rename.parent);
            }
        }
        for parent in seen {
            let pending = renames.iter().filter(|r| &r.parent == parent).count();
            let keep = match concrete(mode, &mut rng) {
                Outcome::Drop => 0,
                Outcome::Prefix | Outcome::Garble => rng.random_range(0..=pending),
            };
            kept.insert(parent.clone(), keep);
        }
        let mut index_in_parent: Vec<usize> = Vec::with_capacity(renames.len());
        let mut counts: BTreeMap<&PathBuf, usize> = BTreeMap::new();
        for rename in &renames {
            let count = counts.entry(&rename.parent).or_default();
            index_in_parent.push(*count);
            *count += 1;
        }
        for (rename, index) in renames.iter().zip(index_in_parent).rev() {
            if index >= kept.get(&rename.parent).copied().unwrap_or(0) {
                state.move_tree(&rename.to, &rename.from);
            }
        }
        for dir in state.dirs.values_mut() {
            dir.crash(mode, &mut rng);
        }
        // Only files still reachable by name matter after the crash; the
        // others are kept alive only by dead handles.
        for inode in state.inodes() {
            inode.lock().crash(mode, &mut rng);
        }
    }

    /// The live content of the file at `path` (what a read would see).
    ///
    /// # Errors
    /// `NotFound` if there is no such file.
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let inode = self.shared.state.lock().lookup(&normalize(path))?;
        let content = inode.lock().live.clone();
        Ok(content)
    }

    /// Replaces the content of the file at `path` with `bytes`, durably,
    /// creating the file (durably) if it is missing. Meant for tests that
    /// damage files while nothing else is writing them.
    ///
    /// # Errors
    /// `NotFound` if the parent directory is missing.
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let path = normalize(path);
        let (dir_path, name) = split(&path)?;
        let mut state = self.shared.state.lock();
        if state.dirs.contains_key(&path) {
            return Err(error(io::ErrorKind::IsADirectory, &path, "is a directory"));
        }
        let dir = state.dir_mut(&dir_path)?;
        let inode = Arc::clone(dir.live.entry(name.clone()).or_default());
        dir.durable.insert(name, Arc::clone(&inode));
        let mut inode = inode.lock();
        inode.live = bytes.to_vec();
        inode.durable = bytes.to_vec();
        inode.unsynced.clear();
        Ok(())
    }

    /// The durable length of the file at `path` (its length after a crash
    /// that drops all unsynced writes).
    ///
    /// # Errors
    /// `NotFound` if there is no such file.
    pub fn durable_len(&self, path: &Path) -> io::Result<u64> {
        let inode = self.shared.state.lock().lookup(&normalize(path))?;
        let len = inode.lock().durable.len() as u64;
        Ok(len)
    }

    /// The durable content of the file at `path` (what a crash that drops
    /// all unsynced writes leaves).
    ///
    /// # Errors
    /// `NotFound` if there is no such file.
    pub fn durable_content(&self, path: &Path) -> io::Result<Vec<u8>> {
        let inode = self.shared.state.lock().lookup(&normalize(path))?;
        let content = inode.lock().durable.clone();
        Ok(content)
    }

    /// The total bytes of unsynced writes in all files reachable by name.
    pub fn unsynced_bytes(&self) -> u64 {
        let inodes = self.shared.state.lock().inodes();
        inodes
            .iter()
            .map(|inode| inode.lock().unsynced_bytes())
            .sum()
    }

    /// [`FileSystem::open`], returning the concrete handle.
    pub(crate) fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<MemFile> {
        let path = normalize(path);
        let mut state = self.shared.state.lock();
        let inode = match mode {
            OpenMode::Read | OpenMode::ReadWrite => state.lookup(&path)?,
            OpenMode::CreateNew => state.create(&path)?,
        };
        Ok(MemFile {
            shared: Arc::clone(&self.shared),
            inode,
            generation: self.shared.generation.load(Ordering::SeqCst),
            writable: mode != OpenMode::Read,
            path,
        })
    }

    /// A failed directory sync: the pending entry changes stay visible but
    /// can never become durable.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn discard_dir_pending(&self, path: &Path) -> io::Result<()> {
        self.shared
            .state
            .lock()
            .dir_mut(&normalize(path))?
            .pending
            .clear();
        Ok(())
    }
}

impl FileSystem for MemFileSystem {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        Ok(Arc::new(self.open_file(path, mode)?))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path);
        let mut state = self.shared.state.lock();
        if let Some(file) = path.ancestors().find(|dir| state.lookup(dir).is_ok()) {
            return Err(error(
                io::ErrorKind::AlreadyExists,
                file,
                "a file is in the way",
            ));
        }
        for dir in path.ancestors() {
            state.dirs.entry(dir.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = normalize(path);
        let state = self.shared.state.lock();
        let mut names: Vec<String> = state.dir(&path)?.live.keys().cloned().collect();
        for child in state.dirs.keys() {
            if child.parent() == Some(path.as_path())
                && let Some(name) = child.file_name().and_then(|name| name.to_str())
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (normalize(from), normalize(to));
        let mut state = self.shared.state.lock();
        if state.dirs.contains_key(&from) {
            return rename_dir(&mut state, &from, &to);
        }
        if state.dirs.contains_key(&to) {
            return Err(error(
                io::ErrorKind::IsADirectory,
                &to,
                "a directory is in the way",
            ));
        }
        let inode = state.lookup(&from)?;
        let ((from_dir, from_name), (to_dir, to_name)) = (split(&from)?, split(&to)?);
        state.dir(&to_dir)?;
        if from == to {
            return Ok(());
        }
        if from_dir == to_dir {
            state.dir_mut(&to_dir)?.record(DirOp::Rename {
                from: from_name,
                to: to_name,
                inode,
            });
        } else {
            state
                .dir_mut(&from_dir)?
                .record(DirOp::Unlink { name: from_name });
            state.dir_mut(&to_dir)?.record(DirOp::Link {
                name: to_name,
                inode,
            });
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path);
        let mut state = self.shared.state.lock();
        if state.dirs.contains_key(&path) {
            return Err(error(io::ErrorKind::IsADirectory, &path, "is a directory"));
        }
        state.lookup(&path)?;
        let (dir, name) = split(&path)?;
        state.dir_mut(&dir)?.record(DirOp::Unlink { name });
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path);
        let mut state = self.shared.state.lock();
        state.dir_mut(&path)?.sync();
        state.dir_renames.retain(|rename| rename.parent != path);
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        Ok(self.shared.state.lock().dirs.contains_key(&normalize(path)))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path);
        let mut state = self.shared.state.lock();
        if state.lookup(&path).is_ok() {
            return Err(error(
                io::ErrorKind::NotADirectory,
                &path,
                "not a directory",
            ));
        }
        state.dirs.retain(|dir, _| !dir.starts_with(&path));
        state
            .dir_renames
            .retain(|rename| !rename.to.starts_with(&path) && !rename.from.starts_with(&path));
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let path = normalize(path);
        let state = self.shared.state.lock();
        Ok(state.dirs.contains_key(&path) || state.lookup(&path).is_ok())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let path = normalize(path);
        let mut state = self.shared.state.lock();
        if state.lookup(&path).is_err() {
            state.create(&path)?;
        }
        if state.locks.contains_key(&path) {
            return Err(error(io::ErrorKind::WouldBlock, &path, "already locked"));
        }
        let token = state.next_lock_token;
        state.next_lock_token += 1;
        state.locks.insert(path.clone(), token);
        Ok(Box::new(MemDirLock {
            shared: Arc::clone(&self.shared),
            path,
            token,
        }))
    }

    fn map(&self, path: &Path) -> io::Result<Mapped> {
        self.read_file(path).map(Mapped::from_vec)
    }
}

/// An open file of a [`MemFileSystem`].
pub(crate) struct MemFile {
    shared: Arc<Shared>,
    inode: InodeRef,
    generation: u64,
    writable: bool,
    path: PathBuf,
}

impl fmt::Debug for MemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemFile")
            .field("path", &self.path)
            .field("writable", &self.writable)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl MemFile {
    /// Locks the content, failing if a crash happened since the open. The
    /// generation is read under the file's lock, so an operation either
    /// completes before a crash processes this file or fails.
    fn alive(&self) -> io::Result<MutexGuard<'_, Inode>> {
        let inode = self.inode.lock();
        if self.shared.generation.load(Ordering::SeqCst) != self.generation {
            return Err(io::Error::other(format!(
                "{}: file handle is dead: the file system crashed after it was opened",
                self.path.display()
            )));
        }
        Ok(inode)
    }

    fn writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(error(
                io::ErrorKind::PermissionDenied,
                &self.path,
                "file is open read-only",
            ))
        }
    }

    /// Checks that a file would end at or below [`FILE_BYTES_MAX`].
    fn checked_end(&self, offset: u64, len: usize) -> io::Result<usize> {
        offset
            .checked_add(len as u64)
            .filter(|end| *end <= FILE_BYTES_MAX)
            .and_then(|end| usize::try_from(end).ok())
            .ok_or_else(|| {
                error(
                    io::ErrorKind::FileTooLarge,
                    &self.path,
                    "file too large for MemFileSystem",
                )
            })
    }

    /// A failed sync: the unsynced writes stay visible but can never become
    /// durable (like dirty pages that the kernel marked clean after EIO).
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn discard_unsynced(&self) -> io::Result<()> {
        self.alive()?.unsynced.clear();
        Ok(())
    }
}

impl File for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let inode = self.alive()?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let available = inode.live.get(start..).unwrap_or_default();
        let count = buf.len().min(available.len());
        if let (Some(target), Some(bytes)) = (buf.get_mut(..count), available.get(..count)) {
            target.copy_from_slice(bytes);
        }
        Ok(count)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.writable()?;
        let end = self.checked_end(offset, buf.len())?;
        let mut inode = self.alive()?;
        if buf.is_empty() {
            return Ok(0);
        }
        let offset = end - buf.len();
        write_into(&mut inode.live, offset, buf);
        inode.unsynced.push(FileOp::Write {
            offset,
            bytes: buf.to_vec(),
        });
        Ok(buf.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.alive()?.sync();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.alive()?.live.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.writable()?;
        let len = self.checked_end(len, 0)?;
        let mut inode = self.alive()?;
        inode.live.resize(len, 0);
        inode.unsynced.push(FileOp::SetLen(len));
        Ok(())
    }

    /// Reserves at most [`MEM_ALLOCATE_BYTES_MAX`] (keeping tests' memory
    /// small): enough for the zero tail of an allocated log segment to be
    /// exercised, and writes past it extend the file as on a real one.
    fn allocate(&self, len: u64) -> io::Result<()> {
        let len = len.min(MEM_ALLOCATE_BYTES_MAX);
        if self.len()? < len {
            self.set_len(len)?;
        }
        Ok(())
    }
}

/// The most [`File::allocate`] reserves on the in-memory file systems.
pub(crate) const MEM_ALLOCATE_BYTES_MAX: u64 = 64 << 10;

/// A held lock of a [`MemFileSystem`]; released on drop (or by a crash).
struct MemDirLock {
    shared: Arc<Shared>,
    path: PathBuf,
    token: u64,
}

impl fmt::Debug for MemDirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemDirLock")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DirLock for MemDirLock {}

impl Drop for MemDirLock {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        // After a crash the lock may belong to a newer guard: leave it.
        if state.locks.get(&self.path) == Some(&self.token) {
            state.locks.remove(&self.path);
        }
    }
}

/// Renames the directory `from` to the free name `to` in the same parent,
/// pending until the parent is synced.
fn rename_dir(state: &mut State, from: &Path, to: &Path) -> io::Result<()> {
    let parent = from.parent().map(Path::to_path_buf).unwrap_or_default();
    if to.parent().map(Path::to_path_buf).unwrap_or_default() != parent {
        return Err(error(
            io::ErrorKind::Unsupported,
            from,
            "directories are renamed only within their parent",
        ));
    }
    if to.starts_with(from) {
        return Err(error(
            io::ErrorKind::InvalidInput,
            to,
            "inside the directory renamed",
        ));
    }
    if state.dirs.contains_key(to) || state.lookup(to).is_ok() {
        return Err(error(io::ErrorKind::AlreadyExists, to, "already exists"));
    }
    state.move_tree(from, to);
    state.dir_renames.push(DirRename {
        parent,
        from: from.to_path_buf(),
        to: to.to_path_buf(),
    });
    Ok(())
}

/// `path` as a plain key: `.` dropped, `..` pops a component.
fn normalize(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other.as_os_str()),
        }
    }
    normal
}

/// Splits a normalised path into its directory and a UTF-8 file name.
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| error(io::ErrorKind::InvalidInput, path, "not a UTF-8 file name"))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((dir, name.to_owned()))
}

fn error(kind: io::ErrorKind, path: &Path, message: &str) -> io::Error {
    io::Error::new(kind, format!("{}: {message}", path.display()))
}

fn not_found(path: &Path, message: &str) -> io::Error {
    error(io::ErrorKind::NotFound, path, message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MODES: [CrashMode; 4] = [
        CrashMode::DropUnsynced,
        CrashMode::KeepPrefix,
        CrashMode::GarbleSectors,
        CrashMode::Random,
    ];

    fn new_fs() -> MemFileSystem {
        let fs = MemFileSystem::new();
        fs.create_dir_all(Path::new("/db")).unwrap();
        fs
    }

    fn path(name: &str) -> PathBuf {
        Path::new("/db").join(name)
    }

    /// Creates `name` with `content`, syncing the data and the directory.
    fn durable_file(fs: &MemFileSystem, name: &str, content: &[u8]) -> Arc<dyn File> {
        let file = fs.open(&path(name), OpenMode::CreateNew).unwrap();
        file.write_all_at(content, 0).unwrap();
        file.sync_data().unwrap();
        fs.sync_dir(Path::new("/db")).unwrap();
        file
    }

    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
            .collect()
    }

    #[test]
    fn synced_data_survives_every_crash_mode() {
        for mode in MODES {
            for seed in 0..20 {
                let fs = new_fs();
                let content = pattern(3000, 1);
                durable_file(&fs, "synced", &content);
                let other = durable_file(&fs, "other", b"x");
                other.write_all_at(&pattern(1500, 2), 0).unwrap();
                fs.open(&path("unsynced"), OpenMode::CreateNew).unwrap();
                fs.crash(mode, seed);
                assert_eq!(
                    fs.read_file(&path("synced")).unwrap(),
                    content,
                    "{mode:?} {seed}"
                );
                assert_eq!(fs.unsynced_bytes(), 0);
            }
        }
    }

    #[test]
    fn unsynced_write_is_lost_on_drop_unsynced_crash() {
        let fs = new_fs();
        let file = durable_file(&fs, "a", b"abc");
        file.write_all_at(b"def", 3).unwrap();
        file.set_len(1).unwrap();
        file.set_len(4).unwrap();
        assert_eq!(fs.read_file(&path("a")).unwrap(), b"a\0\0\0");
        assert_eq!(fs.unsynced_bytes(), 3);
        assert_eq!(fs.durable_len(&path("a")).unwrap(), 3);
        fs.crash(CrashMode::DropUnsynced, 0);
        assert_eq!(fs.read_file(&path("a")).unwrap(), b"abc");
        assert_eq!(fs.unsynced_bytes(), 0);
    }

    #[test]
    fn sync_makes_live_content_durable() {
        let fs = new_fs();
        let file = durable_file(&fs, "a", b"abc");
        file.write_all_at(b"defgh", 3).unwrap();
        file.set_len(6).unwrap();
        file.sync_data().unwrap();
        assert_eq!(fs.durable_len(&path("a")).unwrap(), 6);
        fs.crash(CrashMode::DropUnsynced, 0);
        assert_eq!(fs.read_file(&path("a")).unwrap(), b"abcdef");
    }

    /// Every content that durable + ops[..k] + a torn prefix of ops[k] can give.
    fn prefix_outcomes(durable: &[u8], ops: &[(usize, Vec<u8>)]) -> Vec<Vec<u8>> {
        let mut outcomes = Vec::new();
        let mut content = durable.to_vec();
        for (offset, bytes) in ops {
            for torn in 0..bytes.len() {
                let mut torn_content = content.clone();
                write_into(&mut torn_content, *offset, &bytes[..torn]);
                outcomes.push(torn_content);
            }
            write_into(&mut content, *offset, bytes);
        }
        outcomes.push(content);
        outcomes
    }

    fn writes() -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
        prop::collection::vec(
            (0usize..64, prop::collection::vec(any::<u8>(), 1..12)),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn keep_prefix_survivors_are_durable_plus_a_prefix_of_unsynced_writes(
            synced in writes(),
            unsynced in writes(),
            seed in any::<u64>(),
        ) {
            let fs = new_fs();
            let file = durable_file(&fs, "a", b"");
            for (offset, bytes) in &synced {
                file.write_all_at(bytes, *offset as u64).unwrap();
            }
            file.sync_data().unwrap();
            let durable = fs.read_file(&path("a")).unwrap();
            for (offset, bytes) in &unsynced {
                file.write_all_at(bytes, *offset as u64).unwrap();
            }
            fs.crash(CrashMode::KeepPrefix, seed);
            let survived = fs.read_file(&path("a")).unwrap();
            prop_assert!(prefix_outcomes(&durable, &unsynced).contains(&survived));
        }

        #[test]
        fn crash_is_deterministic_for_a_seed(unsynced in writes(), seed in any::<u64>()) {
            let run = || {
                let fs = new_fs();
                let file = durable_file(&fs, "a", &pattern(700, 3));
                for (offset, bytes) in &unsynced {
                    file.write_all_at(bytes, *offset as u64 * 20).unwrap();
                }
                fs.open(&path("b"), OpenMode::CreateNew).unwrap();
                fs.crash(CrashMode::Random, seed);
                (fs.read_file(&path("a")).unwrap(), fs.list_dir(Path::new("/db")).unwrap())
            };
            prop_assert_eq!(run(), run());
        }
    }

    #[test]
    fn garble_sectors_never_touches_synced_and_unmodified_sectors() {
        let original = pattern(4 * SECTOR_BYTES, 5);
        for seed in 0..64 {
            let fs = new_fs();
            let file = durable_file(&fs, "a", &original);
            file.write_all_at(&[0xEE; 100], 2 * SECTOR_BYTES as u64 + 50)
                .unwrap();
            fs.crash(CrashMode::GarbleSectors, seed);
            let survived = fs.read_file(&path("a")).unwrap();
            assert_eq!(survived.len(), original.len());
            for sector in [0, 1, 3] {
                let range = sector * SECTOR_BYTES..(sector + 1) * SECTOR_BYTES;
                assert_eq!(
                    survived[range.clone()],
                    original[range],
                    "seed {seed} sector {sector}"
                );
            }
        }
    }

    #[test]
    fn garble_sectors_keeps_takes_or_garbles_a_touched_sector() {
        let original = pattern(SECTOR_BYTES, 6);
        let mut updated = original.clone();
        updated[10..20].fill(0xEE);
        let (mut kept, mut taken, mut garbled) = (0, 0, 0);
        for seed in 0..64 {
            let fs = new_fs();
            let file = durable_file(&fs, "a", &original);
            file.write_all_at(&[0xEE; 10], 10).unwrap();
            fs.crash(CrashMode::GarbleSectors, seed);
            let content = fs.read_file(&path("a")).unwrap();
            // Bytes outside the unsynced write are never garbled.
            assert_eq!(content[..10], original[..10], "seed {seed}");
            assert_eq!(content[20..], original[20..], "seed {seed}");
            match content {
                content if content == original => kept += 1,
                content if content == updated => taken += 1,
                _ => garbled += 1,
            }
        }
        assert!(
            kept > 0 && taken > 0 && garbled > 0,
            "{kept} {taken} {garbled}"
        );
    }

    #[test]
    fn garble_sectors_length_is_old_or_new() {
        for seed in 0..32 {
            let fs = new_fs();
            let file = durable_file(&fs, "a", &pattern(100, 7));
            file.write_all_at(&pattern(1000, 8), 100).unwrap();
            fs.crash(CrashMode::GarbleSectors, seed);
            let len = fs.read_file(&path("a")).unwrap().len();
            assert!(len == 100 || len == 1100, "seed {seed}: {len}");
        }
    }

    #[test]
    fn created_file_without_dir_sync_disappears_after_crash() {
        let fs = new_fs();
        let file = fs.open(&path("a"), OpenMode::CreateNew).unwrap();
        file.write_all_at(b"data", 0).unwrap();
        file.sync_data().unwrap();
        fs.crash(CrashMode::DropUnsynced, 0);
        assert!(!fs.exists(&path("a")).unwrap());
        assert_eq!(fs.list_dir(Path::new("/db")).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn created_file_with_dir_sync_survives_crash() {
        let fs = new_fs();
        fs.open(&path("a"), OpenMode::CreateNew).unwrap();
        fs.sync_dir(Path::new("/db")).unwrap();
        fs.crash(CrashMode::DropUnsynced, 0);
        assert_eq!(fs.read_file(&path("a")).unwrap(), b"");
    }

    #[test]
    fn rename_without_dir_sync_is_reverted() {
        let fs = new_fs();
        durable_file(&fs, "CURRENT", b"old");
        durable_file(&fs, "CURRENT.tmp", b"new");
        fs.rename(&path("CURRENT.tmp"), &path("CURRENT")).unwrap();
        assert_eq!(fs.read_file(&path("CURRENT")).unwrap(), b"new");
        assert!(!fs.exists(&path("CURRENT.tmp")).unwrap());
        fs.crash(CrashMode::DropUnsynced, 0);
        assert_eq!(fs.read_file(&path("CURRENT")).unwrap(), b"old");
        assert_eq!(fs.read_file(&path("CURRENT.tmp")).unwrap(), b"new");
    }

    #[test]
    fn rename_in_one_directory_is_atomic_across_crashes() {
        for seed in 0..32 {
            let fs = new_fs();
            durable_file(&fs, "CURRENT", b"old");
            durable_file(&fs, "CURRENT.tmp", b"new");
            fs.rename(&path("CURRENT.tmp"), &path("CURRENT")).unwrap();
            fs.crash(CrashMode::KeepPrefix, seed);
            let names = fs.list_dir(Path::new("/db")).unwrap();
            let current = fs.read_file(&path("CURRENT")).unwrap();
            match current.as_slice() {
                b"old" => assert_eq!(names, ["CURRENT", "CURRENT.tmp"]),
                b"new" => assert_eq!(names, ["CURRENT"]),
                other => panic!("seed {seed}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_directory_rename_moves_its_files_and_a_crash_before_the_parent_sync_may_undo_it() {
        let mut outcomes = HashSet::new();
        for seed in 0..32 {
            let fs = new_fs();
            fs.create_dir_all(Path::new("/db/staging")).unwrap();
            let file = fs
                .open(Path::new("/db/staging/a"), OpenMode::CreateNew)
                .unwrap();
            file.write_all_at(b"data", 0).unwrap();
            file.sync_data().unwrap();
            fs.sync_dir(Path::new("/db/staging")).unwrap();
            assert!(
                fs.rename(Path::new("/db/staging"), Path::new("/db"))
                    .is_err()
            );
            fs.rename(Path::new("/db/staging"), Path::new("/db/live"))
                .unwrap();
            assert!(fs.is_dir(Path::new("/db/live")).unwrap());
            assert_eq!(fs.read_file(Path::new("/db/live/a")).unwrap(), b"data");
            fs.crash(CrashMode::KeepPrefix, seed);
            let live = fs.exists(Path::new("/db/live/a")).unwrap();
            let staged = fs.exists(Path::new("/db/staging/a")).unwrap();
            assert!(live != staged, "seed {seed}: in exactly one place");
            outcomes.insert(live);
        }
        assert_eq!(outcomes.len(), 2, "kept and undone both happen");
        let fs = new_fs();
        fs.create_dir_all(Path::new("/db/x/wal")).unwrap();
        fs.rename(Path::new("/db/x"), Path::new("/db/y")).unwrap();
        fs.sync_dir(Path::new("/db")).unwrap();
        fs.crash(CrashMode::DropUnsynced, 0);
        assert!(fs.is_dir(Path::new("/db/y/wal")).unwrap());
        assert!(!fs.exists(Path::new("/db/x")).unwrap());
        fs.remove_dir_all(Path::new("/db/y")).unwrap();
        assert!(!fs.exists(Path::new("/db/y/wal")).unwrap());
        fs.remove_dir_all(Path::new("/db/y")).unwrap();
    }

    #[test]
    fn remove_without_dir_sync_is_reverted() {
        let fs = new_fs();
        durable_file(&fs, "a", b"data");
        fs.remove_file(&path("a")).unwrap();
        assert!(!fs.exists(&path("a")).unwrap());
        fs.crash(CrashMode::DropUnsynced, 0);
        assert_eq!(fs.read_file(&path("a")).unwrap(), b"data");
    }

    #[test]
    fn keep_prefix_keeps_a_prefix_of_directory_operations() {
        let mut seen = HashSet::new();
        for seed in 0..32 {
            let fs = new_fs();
            for name in ["a", "b", "c"] {
                fs.open(&path(name), OpenMode::CreateNew).unwrap();
            }
            fs.crash(CrashMode::KeepPrefix, seed);
            let names = fs.list_dir(Path::new("/db")).unwrap();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            assert!(
                ["a", "b", "c"].starts_with(&names),
                "seed {seed}: {names:?}"
            );
            seen.insert(names.len());
        }
        assert_eq!(seen.len(), 4, "every prefix length should occur");
    }

    #[test]
    fn handles_from_before_a_crash_fail_with_crashed() {
        let fs = new_fs();
        let file = durable_file(&fs, "a", b"data");
        fs.crash(CrashMode::DropUnsynced, 0);
        let errors = [
            file.read_at(&mut [0; 4], 0).unwrap_err(),
            file.write_at(b"x", 0).unwrap_err(),
            file.sync_data().unwrap_err(),
            file.len().unwrap_err(),
            file.set_len(0).unwrap_err(),
        ];
        for error in errors {
            assert_eq!(error.kind(), io::ErrorKind::Other);
            assert!(error.to_string().contains("crashed"), "{error}");
        }
        let reopened = fs.open(&path("a"), OpenMode::ReadWrite).unwrap();
        assert_eq!(reopened.len().unwrap(), 4);
        assert_eq!(fs.read_file(&path("a")).unwrap(), b"data");
    }

    #[test]
    fn open_handle_survives_unlink_and_rename_over() {
        let fs = new_fs();
        let removed = durable_file(&fs, "a", b"first");
        let replaced = durable_file(&fs, "b", b"second");
        durable_file(&fs, "c", b"third");
        fs.remove_file(&path("a")).unwrap();
        fs.rename(&path("c"), &path("b")).unwrap();
        removed.write_all_at(b"!", 5).unwrap();
        let mut buf = [0; 6];
        removed.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"first!");
        replaced.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"second");
        assert_eq!(fs.read_file(&path("b")).unwrap(), b"third");
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let fs = new_fs();
        let guard = fs.lock(&path("LOCK")).unwrap();
        assert_eq!(
            fs.lock(&path("LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert!(fs.lock(&path("OTHER")).is_ok());
        drop(guard);
        assert!(fs.lock(&path("LOCK")).is_ok());
        assert!(fs.exists(&path("LOCK")).unwrap());
    }

    #[test]
    fn crash_releases_locks() {
        let fs = new_fs();
        fs.sync_dir(Path::new("/db")).unwrap();
        let old_guard = fs.lock(&path("LOCK")).unwrap();
        fs.crash(CrashMode::DropUnsynced, 0);
        let new_guard = fs.lock(&path("LOCK")).unwrap();
        drop(old_guard);
        assert_eq!(
            fs.lock(&path("LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(new_guard);
    }

    #[test]
    fn open_reports_missing_and_existing_files() {
        let fs = new_fs();
        let kind = |result: io::Result<Arc<dyn File>>| result.unwrap_err().kind();
        assert_eq!(
            kind(fs.open(&path("a"), OpenMode::Read)),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(fs.open(&path("a"), OpenMode::ReadWrite)),
            io::ErrorKind::NotFound
        );
        let missing_dir = Path::new("/nowhere/a");
        assert_eq!(
            kind(fs.open(missing_dir, OpenMode::CreateNew)),
            io::ErrorKind::NotFound
        );
        fs.open(&path("a"), OpenMode::CreateNew).unwrap();
        assert_eq!(
            kind(fs.open(&path("a"), OpenMode::CreateNew)),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            kind(fs.open(Path::new("/db"), OpenMode::CreateNew)),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(
            fs.rename(&path("a"), missing_dir).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            fs.remove_file(&path("b")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn read_only_handle_refuses_writes() {
        let fs = new_fs();
        durable_file(&fs, "a", b"data");
        let file = fs.open(&path("a"), OpenMode::Read).unwrap();
        assert_eq!(
            file.write_at(b"x", 0).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            file.set_len(0).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        let mut buf = [0; 8];
        assert_eq!(file.read_at(&mut buf, 2).unwrap(), 2);
        assert_eq!(&buf[..2], b"ta");
        assert_eq!(file.read_at(&mut buf, 100).unwrap(), 0);
    }

    #[test]
    fn write_past_end_leaves_a_zero_hole() {
        let fs = new_fs();
        let file = durable_file(&fs, "a", b"ab");
        file.write_all_at(b"z", 5).unwrap();
        assert_eq!(fs.read_file(&path("a")).unwrap(), b"ab\0\0\0z");
        assert_eq!(file.len().unwrap(), 6);
        let huge = file.write_at(b"z", u64::MAX - 1).unwrap_err();
        assert_eq!(huge.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn list_dir_is_sorted_and_includes_subdirectories() {
        let fs = new_fs();
        fs.create_dir_all(Path::new("/db/sub/deeper")).unwrap();
        for name in ["b", "a", "c"] {
            fs.open(&path(name), OpenMode::CreateNew).unwrap();
        }
        assert_eq!(
            fs.list_dir(Path::new("/db")).unwrap(),
            ["a", "b", "c", "sub"]
        );
        assert_eq!(fs.list_dir(Path::new("/db/sub")).unwrap(), ["deeper"]);
        assert_eq!(
            fs.list_dir(Path::new("/none")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(fs.exists(Path::new("/db/sub")).unwrap());
        assert!(fs.create_dir_all(&path("a/x")).is_err());
    }

    #[test]
    fn paths_are_normalised() {
        let fs = new_fs();
        fs.open(Path::new("/db/./x/../a"), OpenMode::CreateNew)
            .unwrap();
        assert!(fs.exists(Path::new("/db/a")).unwrap());
        assert!(fs.exists(Path::new("/db/a/")).unwrap());
        fs.create_dir_all(Path::new("rel")).unwrap();
        fs.open(Path::new("rel/f"), OpenMode::CreateNew).unwrap();
        assert!(fs.exists(Path::new("./rel/f")).unwrap());
    }

    #[test]
    fn write_file_replaces_content_durably() {
        let fs = new_fs();
        let file = durable_file(&fs, "a", b"data");
        file.write_all_at(b"more", 4).unwrap();
        fs.write_file(&path("a"), b"DAMAGED").unwrap();
        fs.write_file(&path("new"), b"made").unwrap();
        assert_eq!(fs.durable_len(&path("a")).unwrap(), 7);
        fs.crash(CrashMode::DropUnsynced, 0);
        assert_eq!(fs.read_file(&path("a")).unwrap(), b"DAMAGED");
        assert_eq!(fs.read_file(&path("new")).unwrap(), b"made");
        assert_eq!(
            fs.write_file(Path::new("/none/a"), b"").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn clones_share_state() {
        let fs = new_fs();
        let clone = fs.clone();
        durable_file(&clone, "a", b"shared");
        assert_eq!(fs.read_file(&path("a")).unwrap(), b"shared");
    }
}
