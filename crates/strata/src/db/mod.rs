//! The database: the embedding API over the commit log and the memtables.
//!
//! Write path: a [`WriteBatch`] is checked against the limits, appended to
//! the commit log by group commit (which assigns its sequence numbers and,
//! with `sync`, makes it durable), applied to the memtable, and then made
//! visible in sequence order ([`visibility`]). `write` returns once its
//! batch is visible, so a read after a write sees it.
//!
//! Read path: a read takes the visible sequence number (or a snapshot's)
//! and asks the memtable for the newest version at or below it. Scans merge
//! their sources ([`iterator`]).
//!
//! Directory layout: `LOCK` (held while open), `IDENTITY` (the database
//! id), `wal/` (the commit log).
//!
//! Thread-safety: [`Db`] is `Send + Sync`; share it by reference or `Arc`.
//!
//! Invariants:
//! - A batch is visible whole or not at all, and never before an earlier
//!   batch.
//! - Nothing is written for a batch that fails validation.

mod identity;
pub(crate) mod iterator;
mod visibility;

use std::collections::BTreeMap;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use strata_format::wal::decode_batch;

use crate::env::{DirLock, FileSystem};
use crate::error::{Error, Result};
use crate::memtable::Memtable;
use crate::options::{Options, WriteOptions};
use crate::seqno::SeqNo;
use crate::wal::{RecoveryReport, Wal, WalOptions, WalStats};
use crate::write_batch::WriteBatch;
use iterator::{Cursor, DbIterator, KeyRange, MemCursor};
use visibility::Visibility;

/// Figures about a database, from [`Db::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DbStats {
    /// The last visible sequence number.
    pub last_seq: SeqNo,
    /// The last sequence number known durable.
    pub durable_seq: SeqNo,
    /// Approximate bytes held by memtables.
    pub memtable_bytes: u64,
    /// Entries (versions) held by memtables.
    pub memtable_entries: u64,
    /// Live snapshots.
    pub snapshots: u64,
    /// The commit log's counters since open.
    pub wal: WalStats,
    /// Segment files the commit log retains.
    pub wal_segments: u64,
}

struct Inner {
    dir: PathBuf,
    options: Options,
    wal: Wal,
    memtable: Arc<Memtable>,
    visibility: Visibility,
    snapshots: Mutex<BTreeMap<u64, usize>>,
    closed: AtomicBool,
    recovery: RecoveryReport,
    _lock: Box<dyn DirLock>,
}

/// An open database.
///
/// # Examples
///
/// ```
/// use strata::{Db, MemFileSystem, Options, WriteBatch, WriteOptions};
/// use std::sync::Arc;
///
/// let options = Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() };
/// let db = Db::open("data", options)?;
/// let seq = db.put(b"user:42", b"alice")?;
/// assert_eq!(db.get(b"user:42")?.as_deref(), Some(&b"alice"[..]));
///
/// let mut batch = WriteBatch::new();
/// batch.put(b"a", b"1");
/// batch.delete(b"user:42");
/// let later = db.write(batch, &WriteOptions { sync: true })?;
/// assert!(later > seq);
///
/// let keys: Vec<Vec<u8>> = db.scan(..)?.map(|kv| kv.map(|(k, _)| k)).collect::<Result<_, _>>()?;
/// assert_eq!(keys, vec![b"a".to_vec()]);
/// db.close()?;
/// # Ok::<(), strata::Error>(())
/// ```
pub struct Db {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.inner.dir).finish()
    }
}

impl Db {
    /// Opens the database in `dir`, creating it if
    /// [`Options::create_if_missing`], and recovers every write from the
    /// commit log.
    ///
    /// # Errors
    /// [`Error::Locked`] if another handle has it open;
    /// [`Error::InvalidArgument`] if it is missing (and may not be created)
    /// or exists (and [`Options::error_if_exists`]); [`Error::Corruption`]
    /// for damage recovery may not repair (naming file and offset);
    /// [`Error::Io`].
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        let dir = dir.as_ref().to_path_buf();
        let fs: &dyn FileSystem = &*options.file_system;
        if options.create_if_missing {
            fs.create_dir_all(&dir)
                .map_err(|e| Error::io("create directory", &dir, e))?;
        } else if !fs.exists(&dir).map_err(|e| Error::io("stat", &dir, e))? {
            return Err(Error::InvalidArgument(format!(
                "no database at {}",
                dir.display()
            )));
        }
        let lock_path = dir.join("LOCK");
        let lock = fs.lock(&lock_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock => Error::Locked {
                path: lock_path.clone(),
            },
            _ => Error::io("lock", &lock_path, e),
        })?;
        let database_id = match identity::read(fs, &dir)? {
            Some(_) if options.error_if_exists => {
                return Err(Error::InvalidArgument(format!(
                    "a database already exists at {}",
                    dir.display()
                )));
            }
            Some(id) => id,
            None if options.create_if_missing => identity::create(fs, &dir)?,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "no database at {}",
                    dir.display()
                )));
            }
        };

        let memtable = Arc::new(Memtable::new());
        let wal_options = WalOptions {
            segment_bytes_max: options.wal_segment_bytes_max,
            sync_interval: options.wal_sync_interval,
            recovery_mode: options.recovery_mode,
            ..WalOptions::default()
        };
        let (wal, recovery) = Wal::open(
            Arc::clone(&options.file_system),
            dir.join("wal"),
            database_id,
            wal_options,
            SeqNo(1),
            |batch| {
                memtable.apply(&batch);
                Ok(())
            },
        )?;
        let visible = recovery.next_seq.get().saturating_sub(1);
        Ok(Db {
            inner: Arc::new(Inner {
                dir,
                options,
                wal,
                memtable,
                visibility: Visibility::new(visible),
                snapshots: Mutex::new(BTreeMap::new()),
                closed: AtomicBool::new(false),
                recovery,
                _lock: lock,
            }),
        })
    }

    /// Sets `key` to `value` (without sync); returns the write's sequence
    /// number.
    ///
    /// # Errors
    /// As [`Db::write`].
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<SeqNo> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.write(batch, &WriteOptions::default())
    }

    /// Removes `key` (without sync); returns the write's sequence number.
    ///
    /// # Errors
    /// As [`Db::write`].
    pub fn delete(&self, key: &[u8]) -> Result<SeqNo> {
        let mut batch = WriteBatch::new();
        batch.delete(key);
        self.write(batch, &WriteOptions::default())
    }

    /// Applies `batch` atomically and returns the sequence number of its
    /// last operation: the commit token. With [`WriteOptions::sync`] the
    /// batch survives power loss when this returns. An empty batch writes
    /// nothing and returns the current sequence number.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a key, value or batch over its limit
    /// (nothing is written); [`Error::Poisoned`] after a failed write or
    /// sync; [`Error::Closed`]; [`Error::Io`].
    pub fn write(&self, batch: WriteBatch, options: &WriteOptions) -> Result<SeqNo> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let limits = &inner.options;
        if batch.key_bytes_max > limits.key_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "a key of {} bytes exceeds the limit of {} bytes (key_bytes_max); nothing was written",
                batch.key_bytes_max, limits.key_bytes_max
            )));
        }
        if batch.value_bytes_max > limits.value_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "a value of {} bytes exceeds the limit of {} bytes (value_bytes_max); nothing was written",
                batch.value_bytes_max, limits.value_bytes_max
            )));
        }
        if batch.encoded_len() > limits.batch_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "a batch of {} bytes exceeds the limit of {} bytes (batch_bytes_max); nothing was written",
                batch.encoded_len(),
                limits.batch_bytes_max
            )));
        }
        if batch.is_empty() {
            return Ok(SeqNo(inner.visibility.visible()));
        }
        let (commit, bytes) = inner.wal.append_returning(batch.inner, options.sync)?;
        let view = decode_batch(&bytes).map_err(|e| Error::corruption(inner.dir.join("wal"), e))?;
        inner.memtable.apply(&view);
        inner
            .visibility
            .publish_and_wait(commit.first_seq.get(), commit.last_seq.get());
        Ok(commit.last_seq)
    }

    /// The newest value of `key`, or `None` if it is absent or deleted.
    ///
    /// # Errors
    /// [`Error::Closed`]; errors reading stored data.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        Ok(self.inner.get_at(key, self.inner.visibility.visible()))
    }

    /// A consistent view of the database at the current sequence number,
    /// unaffected by later writes.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let seq = self.inner.visibility.visible();
        *self.inner.snapshots.lock().entry(seq).or_insert(0) += 1;
        Snapshot {
            inner: Arc::clone(&self.inner),
            seq,
        }
    }

    /// The newest value of every key in `range`, in key order.
    ///
    /// # Examples
    ///
    /// ```
    /// # use strata::{Db, MemFileSystem, Options};
    /// # use std::sync::Arc;
    /// # let db = Db::open("d", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
    /// for k in [b"a", b"b", b"c"] { db.put(k, b"v")?; }
    /// let keys: Vec<_> = db.scan(b"b".as_slice()..)?.map(|kv| kv.unwrap().0).collect();
    /// assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
    /// # Ok::<(), strata::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Closed`]. Errors reading stored data come as items.
    pub fn scan<'a>(&self, range: impl RangeBounds<&'a [u8]>) -> Result<DbIterator> {
        self.check_open()?;
        let range = KeyRange::from_bounds(range.start_bound().cloned(), range.end_bound().cloned());
        Ok(self
            .inner
            .iterate(range, self.inner.visibility.visible(), true, None))
    }

    /// As [`Db::scan`], in reverse key order.
    ///
    /// # Errors
    /// As [`Db::scan`].
    pub fn scan_rev<'a>(&self, range: impl RangeBounds<&'a [u8]>) -> Result<DbIterator> {
        self.check_open()?;
        let range = KeyRange::from_bounds(range.start_bound().cloned(), range.end_bound().cloned());
        Ok(self
            .inner
            .iterate(range, self.inner.visibility.visible(), false, None))
    }

    /// Every key starting with `prefix`, in key order.
    ///
    /// # Errors
    /// As [`Db::scan`].
    pub fn prefix(&self, prefix: &[u8]) -> Result<DbIterator> {
        self.check_open()?;
        Ok(self.inner.iterate(
            KeyRange::prefix(prefix),
            self.inner.visibility.visible(),
            true,
            None,
        ))
    }

    /// Makes every write so far durable; returns the last durable sequence
    /// number.
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::Closed`], [`Error::Io`].
    pub fn sync(&self) -> Result<SeqNo> {
        self.check_open()?;
        self.inner.wal.sync()
    }

    /// What recovery found when this database was opened.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Figures about the database.
    #[must_use]
    pub fn stats(&self) -> DbStats {
        let inner = &self.inner;
        DbStats {
            last_seq: SeqNo(inner.visibility.visible()),
            durable_seq: inner.wal.durable_seq(),
            memtable_bytes: inner.memtable.approximate_bytes() as u64,
            memtable_entries: inner.memtable.len() as u64,
            snapshots: inner.snapshots.lock().values().map(|&n| n as u64).sum(),
            wal: inner.wal.stats(),
            wal_segments: inner.wal.segment_count() as u64,
        }
    }

    /// Syncs and closes the database. Later calls on snapshots and
    /// iterators of this handle fail with [`Error::Closed`]; the directory
    /// lock is released once the last of them is dropped.
    ///
    /// # Errors
    /// As [`Db::sync`]; the database is closed either way.
    pub fn close(self) -> Result<()> {
        let synced = self.inner.wal.sync().map(|_| ());
        self.inner.closed.store(true, Ordering::Release);
        synced
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl Inner {
    fn get_at(&self, key: &[u8], seq: u64) -> Option<Vec<u8>> {
        self.memtable.get(key, seq).flatten()
    }

    fn iterate(
        self: &Arc<Self>,
        range: KeyRange,
        seq: u64,
        forward: bool,
        hold: Option<Snapshot>,
    ) -> DbIterator {
        let cursors: Vec<Box<dyn Cursor>> = vec![Box::new(MemCursor::new(
            Arc::clone(&self.memtable),
            &range,
            forward,
        ))];
        let hold: Box<dyn Send + Sync> = match hold {
            Some(snapshot) => Box::new(snapshot),
            None => Box::new(Arc::clone(self)),
        };
        DbIterator::new(cursors, range, seq, forward, hold)
    }
}

/// A consistent, read-only view of the database at one sequence number.
/// Dropping it releases the versions it holds.
///
/// # Examples
///
/// ```
/// # use strata::{Db, MemFileSystem, Options};
/// # use std::sync::Arc;
/// # let db = Db::open("d", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
/// db.put(b"k", b"old")?;
/// let snapshot = db.snapshot();
/// db.put(b"k", b"new")?;
/// assert_eq!(snapshot.get(b"k")?.as_deref(), Some(&b"old"[..]));
/// assert_eq!(db.get(b"k")?.as_deref(), Some(&b"new"[..]));
/// # Ok::<(), strata::Error>(())
/// ```
pub struct Snapshot {
    inner: Arc<Inner>,
    seq: u64,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("seq", &self.seq).finish()
    }
}

impl Snapshot {
    /// The sequence number this snapshot reads at.
    #[must_use]
    pub fn seq(&self) -> SeqNo {
        SeqNo(self.seq)
    }

    /// The value of `key` as of the snapshot.
    ///
    /// # Errors
    /// [`Error::Closed`] after the database was closed.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_open()?;
        Ok(self.inner.get_at(key, self.seq))
    }

    /// The keys of `range` as of the snapshot, in key order.
    ///
    /// # Errors
    /// [`Error::Closed`] after the database was closed.
    pub fn scan<'a>(&self, range: impl RangeBounds<&'a [u8]>) -> Result<DbIterator> {
        self.check_open()?;
        let range = KeyRange::from_bounds(range.start_bound().cloned(), range.end_bound().cloned());
        Ok(self
            .inner
            .iterate(range, self.seq, true, Some(self.clone_registration())))
    }

    /// As [`Snapshot::scan`], in reverse key order.
    ///
    /// # Errors
    /// As [`Snapshot::scan`].
    pub fn scan_rev<'a>(&self, range: impl RangeBounds<&'a [u8]>) -> Result<DbIterator> {
        self.check_open()?;
        let range = KeyRange::from_bounds(range.start_bound().cloned(), range.end_bound().cloned());
        Ok(self
            .inner
            .iterate(range, self.seq, false, Some(self.clone_registration())))
    }

    fn clone_registration(&self) -> Snapshot {
        *self.inner.snapshots.lock().entry(self.seq).or_insert(0) += 1;
        Snapshot {
            inner: Arc::clone(&self.inner),
            seq: self.seq,
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut snapshots = self.inner.snapshots.lock();
        if let Some(count) = snapshots.get_mut(&self.seq) {
            *count -= 1;
            if *count == 0 {
                snapshots.remove(&self.seq);
            }
        }
    }
}
