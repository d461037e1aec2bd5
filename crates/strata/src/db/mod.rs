//! The database: the embedding API over the commit log, memtables, sorted
//! tables and their background flush and compaction.
//!
//! Write path: a [`WriteBatch`] is checked against the limits, may wait or
//! be slowed if flushes or compactions are behind ([`background`]), is
//! appended to the commit log by group commit (which assigns its sequence
//! numbers and, with `sync`, makes it durable), applied to the active
//! memtable, and made visible in sequence order ([`visibility`]). `write`
//! returns once its batch is visible, so a read after a write sees it.
//!
//! Read path: a read takes the visible sequence number (or a snapshot's)
//! and asks the active memtable, then the frozen ones (newest first), then
//! the pinned version's tables (level 0 newest first, then one table per
//! deeper level) for the newest version at or below it. Scans merge all of
//! these ([`iterator`]). Range tombstones (in memtables and in the version)
//! hide versions older than them; the newest one covering a key, visible to
//! the read, is found first.
//!
//! Key ranges ([`crate::ranges`], [`ranges`]): the version carries the range
//! map; no table spans a range boundary; compaction runs per range. Routing
//! is invisible to callers: reads and scans consult the same memtables and
//! one version whatever the ranges, so they cross boundaries seamlessly.
//!
//! Directory layout: `LOCK` (held while open), `IDENTITY` (the database
//! id), `CURRENT` and `MANIFEST-*` (the version set), `*.sst` (tables),
//! `wal/` (the commit log).
//!
//! One concept per file: `open.rs` (opening and recovery), `write.rs` (the
//! write path and freezing), `read.rs` (lookups, scans' sources, tables),
//! `snapshot.rs`, `stats.rs`, `background.rs` (flush and compaction
//! threads, stalls), `ranges.rs` (splits, merges, purges), `checkpoint.rs`,
//! `identity.rs`, `iterator.rs` (scans), `visibility.rs` (publication in
//! sequence order), `port.rs` (what the replication port reaches); this
//! file holds the [`Db`] handle and the shared state.
//!
//! Thread-safety: [`Db`] is `Send + Sync`; share it by reference or `Arc`.
//! Two background threads run flushes and compactions.
//!
//! Invariants:
//! - A batch is visible whole or not at all, and never before an earlier
//!   batch.
//! - Nothing is written for a batch that fails validation.
//! - The write gate: writers hold it shared from log append to memtable
//!   insert; freezing the memtable takes it exclusively, so a frozen
//!   memtable holds exactly the sequence numbers below the new one's.
//! - A flush installs the version holding its table before it drops the
//!   frozen memtable, and readers take the memtables before the version,
//!   so no read misses data in between.

pub(crate) mod background;
mod checkpoint;
mod identity;
pub(crate) mod iterator;
mod open;
mod port;
mod ranges;
mod read;
mod snapshot;
mod stats;
mod visibility;
mod write;

pub use snapshot::Snapshot;
pub use stats::DbStats;
use write::apply_batch;

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex, RwLock};
use strata_format::wal::{BatchOp, BatchView, view_built_batch};

use crate::env::{DirLock, FileSystem};
use crate::error::{Error, Result};
use crate::memtable::{MemCursor, Memtable};
use crate::merge::Cursor;
use crate::merge::KeyRange;
use crate::options::{Options, WriteOptions};
use crate::ranges::map::{RangeId, RangeMap};
use crate::ranges::stats::{RangeInfo, Rates, Router};
use crate::seqno::SeqNo;
use crate::table::{LevelCursor, Table, TableCache, TableCursor};
use crate::version::set::VersionSet;
use crate::version::{LEVEL_COUNT, TableMeta, Version};
use crate::wal::{RecoveryReport, Wal, WalOptions, WalStats};
use crate::write_batch::WriteBatch;
use background::Counters;
use iterator::DbIterator;
use visibility::Visibility;

/// Memtables: the active one and the frozen ones, oldest first.
struct MemState {
    active: Arc<Memtable>,
    frozen: VecDeque<Arc<Memtable>>,
}

/// Everything a read consults, published whole ([`Inner::publish_view`])
/// after every change to the memtables, the version or the range map, so
/// that a read takes no lock: it loads the current view (without even a
/// reference count) and reads from it.
pub(crate) struct ReadView {
    pub(crate) active: Arc<Memtable>,
    /// Frozen memtables, newest first.
    pub(crate) frozen: Vec<Arc<Memtable>>,
    pub(crate) version: Arc<Version>,
    pub(crate) router: Arc<Router>,
}

impl ReadView {
    /// The memtables, newest first.
    fn memtables(&self) -> impl Iterator<Item = &Arc<Memtable>> {
        std::iter::once(&self.active).chain(&self.frozen)
    }
}

pub(crate) struct Inner {
    /// A lower batch limit than `options.batch_bytes_max` set after open
    /// ([`Db::limit_batch_bytes`]; `usize::MAX`: none), read by every
    /// write without a lock, and why it was set (read only to refuse).
    batch_limit: std::sync::atomic::AtomicUsize,
    batch_limit_why: parking_lot::Mutex<String>,
    dir: PathBuf,
    options: Options,
    fs: Arc<dyn FileSystem>,
    wal: Wal,
    write_gate: RwLock<()>,
    mem: RwLock<MemState>,
    /// What readers read (see [`ReadView`]); replaced, never changed.
    view: arc_swap::ArcSwap<ReadView>,
    /// Serializes publications of `view`, so none overwrites a newer one.
    view_publish: Mutex<()>,
    versions: Mutex<VersionSet>,
    current: RwLock<Arc<Version>>,
    tables: TableCache,
    visibility: Visibility,
    snapshots: Mutex<BTreeMap<u64, usize>>,
    closed: AtomicBool,
    recovery: RecoveryReport,
    /// Background state: work to do, the first background error.
    work: Mutex<background::Work>,
    work_changed: Condvar,
    counters: Counters,
    /// Mirrors the version set's flushed sequence number, for the write path.
    flushed: std::sync::atomic::AtomicU64,
    /// Log bytes appended since the log's length was last measured.
    log_bytes_since_check: std::sync::atomic::AtomicU64,
    /// Set while the database follows another (a replica): local writes
    /// are refused with this message; only replicated batches are applied.
    follower: RwLock<Option<String>>,
    /// Serializes replicated applies (sequence check, then append).
    replication_apply: Mutex<()>,
    /// What the replication port did.
    replicated: port::ReplicationCounters,
    /// The database id, as the log knows it.
    wal_database_id: u128,
    /// The keys this database holds (a range-scoped replica); everything
    /// by default.
    retain: crate::ranges::KeyIntervals,
    /// Set when a write may have to be slowed or stopped (or background
    /// work failed); writers skip the throttle's checks while it is clear.
    stall_hint: AtomicBool,
    /// The range map in force for routing figures, and each range's counters.
    router: RwLock<Arc<Router>>,
    /// Per-range rates, sampled by the compaction threads.
    rates: Rates,
    /// Held shared by flushes and compactions from picking to installing,
    /// exclusively by range splits and merges.
    layout: RwLock<()>,
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
/// db.flush()?; // memtables to sorted tables
/// db.close()?;
/// # Ok::<(), strata::Error>(())
/// ```
pub struct Db {
    inner: Arc<Inner>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.inner.dir).finish()
    }
}

impl Db {
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

    /// Removes every key in `[start, end)` (without sync) as one
    /// operation, whatever the number of keys; returns its sequence number.
    /// Reads skip what it hides at once; compaction later drops whole
    /// tables it hides without reading them, and rewrites the tables it
    /// hides only partly.
    ///
    /// # Examples
    ///
    /// ```
    /// # use strata::{Db, MemFileSystem, Options};
    /// # use std::sync::Arc;
    /// # let db = Db::open("d", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
    /// for k in [&b"user:1"[..], b"user:2", b"video:1"] { db.put(k, b"v")?; }
    /// db.delete_range(b"user:", b"user;")?;
    /// assert_eq!(db.get(b"user:1")?, None);
    /// assert!(db.get(b"video:1")?.is_some());
    /// # Ok::<(), strata::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `start >= end` or a bound is over
    /// `key_bytes_max`; otherwise as [`Db::write`].
    pub fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<SeqNo> {
        let mut batch = WriteBatch::new();
        batch.delete_range(start, end);
        self.write(batch, &WriteOptions::default())
    }

    /// The key ranges and their figures, in key order.
    #[must_use]
    pub fn ranges(&self) -> Vec<RangeInfo> {
        self.inner.range_infos()
    }

    /// Splits the range holding `at` into `[start, at)` and `[at, end)`,
    /// online, and returns the two new ranges' ids. Writes never wait for
    /// it; reads see the old map and tables or the new ones, never a gap.
    /// Tables that straddle `at` are rewritten first (at most one per level
    /// below 0, plus level-0 tables).
    ///
    /// # Examples
    ///
    /// ```
    /// # use strata::{Db, MemFileSystem, Options};
    /// # use std::sync::Arc;
    /// # let db = Db::open("d", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
    /// let (left, right) = db.split_range(b"m")?;
    /// assert_eq!(db.ranges().len(), 2);
    /// let merged = db.merge_ranges(left, right)?;
    /// assert_eq!(db.ranges()[0].id, merged);
    /// # Ok::<(), strata::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `at` is already a range's start;
    /// [`Error::Io`] or [`Error::Poisoned`] if rewriting or logging fails.
    pub fn split_range(&self, at: &[u8]) -> Result<(RangeId, RangeId)> {
        self.inner.check_open()?;
        self.inner.split_range(at, "requested")
    }

    /// Merges the adjacent ranges `left` and `right` (in that key order)
    /// into one, online; returns its id. Only the range map changes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if either id is not in the map or they
    /// are not adjacent in that order; [`Error::Io`], [`Error::Poisoned`].
    pub fn merge_ranges(&self, left: RangeId, right: RangeId) -> Result<RangeId> {
        self.inner.check_open()?;
        self.inner.merge_ranges(left, right)
    }

    /// The database's id (from `IDENTITY`; the same in its checkpoints and
    /// on its replicas).
    #[must_use]
    pub fn database_id(&self) -> u128 {
        self.inner.wal_database_id
    }

    /// The last visible sequence number (every write up to it is readable).
    #[must_use]
    pub fn last_seq(&self) -> SeqNo {
        SeqNo(self.inner.visibility.visible())
    }

    /// The last sequence number known durable.
    #[must_use]
    pub fn durable_seq(&self) -> SeqNo {
        self.inner.wal.durable_seq()
    }

    /// Why the database refuses writes, if it does: a failed log write or
    /// sync, or a failed flush or compaction (reopen to recover).
    #[must_use]
    pub fn poisoned(&self) -> Option<String> {
        if let Some(reason) = self.inner.wal.poisoned() {
            return Some(reason.to_string());
        }
        self.inner.work.lock().error.as_ref().map(|r| r.to_string())
    }

    /// Waits until every write up to `seq` is visible, at most `timeout`;
    /// returns whether it is (a read-your-writes wait on a replica).
    #[must_use]
    pub fn wait_for_seq(&self, seq: SeqNo, timeout: std::time::Duration) -> bool {
        self.inner.visibility.wait_visible(seq.get(), timeout)
    }

    /// Applies `batch` atomically and returns the sequence number of its
    /// last operation: the commit token. With [`WriteOptions::sync`] the
    /// batch survives power loss when this returns. An empty batch writes
    /// nothing and returns the current sequence number.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a key, value or batch over its limit
    /// (nothing is written); [`Error::Poisoned`] after a failed write,
    /// sync, flush or compaction; [`Error::Closed`]; [`Error::Io`].
    pub fn write(&self, batch: WriteBatch, options: &WriteOptions) -> Result<SeqNo> {
        self.inner.write(batch, options)
    }

    /// The newest value of `key`, or `None` if it is absent or deleted.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a key outside
    /// [`Options::retain_ranges`]; [`Error::Closed`]; [`Error::Corruption`] if a table that must be read
    /// fails its checks (never wrong data).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.check_open()?;
        self.inner.check_retained(key)?;
        self.inner.get_at(key, self.inner.visibility.visible())
    }

    /// As [`Db::get`], into `value` (its old content replaced): returns
    /// whether the key has a value. Allocates nothing when `value` already
    /// has room, so a loop of reads can reuse one buffer.
    ///
    /// # Examples
    ///
    /// ```
    /// # use strata::{Db, MemFileSystem, Options};
    /// # use std::sync::Arc;
    /// # let db = Db::open("d", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
    /// db.put(b"k", b"v")?;
    /// let mut value = Vec::with_capacity(128);
    /// assert!(db.get_into(b"k", &mut value)?);
    /// assert_eq!(value, b"v");
    /// assert!(!db.get_into(b"absent", &mut value)?);
    /// # Ok::<(), strata::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Db::get`].
    pub fn get_into(&self, key: &[u8], value: &mut Vec<u8>) -> Result<bool> {
        self.inner.check_open()?;
        self.inner.check_retained(key)?;
        self.inner
            .get_into(key, self.inner.visibility.visible(), value)
    }

    /// A consistent view of the database at the current sequence number,
    /// unaffected by later writes, flushes and compactions.
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
    /// [`Error::Closed`]; [`Error::Corruption`] if a table cannot be opened;
    /// [`Error::InvalidArgument`] if the range reaches outside
    /// [`Options::retain_ranges`] (as [`Db::get`] of a key outside them).
    /// Errors reading stored data later come as items.
    pub fn scan<'a>(&self, range: impl RangeBounds<&'a [u8]>) -> Result<DbIterator> {
        self.inner.check_open()?;
        let range = KeyRange::from_bounds(range.start_bound().cloned(), range.end_bound().cloned());
        self.inner.check_retained_range(&range)?;
        self.inner
            .iterate(range, self.inner.visibility.visible(), true, None)
    }

    /// As [`Db::scan`], in reverse key order.
    ///
    /// # Errors
    /// As [`Db::scan`].
    pub fn scan_rev<'a>(&self, range: impl RangeBounds<&'a [u8]>) -> Result<DbIterator> {
        self.inner.check_open()?;
        let range = KeyRange::from_bounds(range.start_bound().cloned(), range.end_bound().cloned());
        self.inner.check_retained_range(&range)?;
        self.inner
            .iterate(range, self.inner.visibility.visible(), false, None)
    }

    /// Every key starting with `prefix`, in key order.
    ///
    /// # Errors
    /// As [`Db::scan`].
    pub fn prefix(&self, prefix: &[u8]) -> Result<DbIterator> {
        self.inner.check_open()?;
        self.inner.check_retained_range(&KeyRange::prefix(prefix))?;
        self.inner.iterate(
            KeyRange::prefix(prefix),
            self.inner.visibility.visible(),
            true,
            None,
        )
    }

    /// Makes every write so far durable; returns the last durable sequence
    /// number.
    ///
    /// # Errors
    /// [`Error::Poisoned`], [`Error::Closed`], [`Error::Io`].
    pub fn sync(&self) -> Result<SeqNo> {
        self.inner.check_open()?;
        self.inner.wal.sync()
    }

    /// Writes every memtable to sorted tables and waits until that is done.
    ///
    /// # Errors
    /// The background error, if a flush failed; [`Error::Closed`].
    pub fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.flush_all()
    }

    /// Waits until no compaction is due (for tests and benchmarks).
    ///
    /// # Errors
    /// The background error, if a compaction failed.
    pub fn wait_for_compactions(&self) -> Result<()> {
        self.inner.check_open()?;
        background::wait_idle(&self.inner)
    }

    /// Writes a consistent, openable copy of the database into `dir`
    /// (which must be missing or empty) and returns the sequence number it
    /// holds everything up to. Tables are hard-linked, so a checkpoint
    /// costs little space until compaction replaces them; writes continue
    /// meanwhile. Open the copy with [`Db::open`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `dir` is not empty; [`Error::Io`].
    pub fn checkpoint(&self, dir: impl AsRef<Path>) -> Result<SeqNo> {
        self.inner.check_open()?;
        checkpoint::checkpoint(&self.inner, dir.as_ref())
    }

    /// Reads every table of the current version and checks every
    /// checksum and ordering rule; returns how many tables were checked.
    ///
    /// # Errors
    /// [`Error::Corruption`] naming the first damaged table and offset.
    pub fn verify_tables(&self) -> Result<usize> {
        self.inner.check_open()?;
        self.inner.verify_tables()
    }

    /// What recovery found when this database was opened.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Figures about the database.
    #[must_use]
    pub fn stats(&self) -> DbStats {
        self.inner.stats()
    }

    /// Flushes memtables (if [`Options::flush_on_close`]), syncs, stops the
    /// background threads and closes the database. Later calls on
    /// snapshots and iterators of this handle fail with [`Error::Closed`].
    ///
    /// # Errors
    /// A failed flush or sync; the database is closed either way.
    pub fn close(mut self) -> Result<()> {
        let flushed = if self.inner.options.flush_on_close {
            self.inner.flush_all()
        } else {
            Ok(())
        };
        let synced = self.inner.wal.sync().map(|_| ());
        self.shutdown();
        if synced.is_ok() {
            self.inner.wal.trim_tail();
        }
        flushed.and(synced)
    }

    fn shutdown(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        {
            let mut work = self.inner.work.lock();
            work.stop = true;
            self.inner.work_changed.notify_all();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    /// Refuses a key this database does not hold (a range-scoped replica).
    fn check_retained(&self, key: &[u8]) -> Result<()> {
        if self.retain.contains(key) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "the key lies outside the key ranges this database holds (retain_ranges: {}); read it from a node that holds it",
                self.retain.describe()
            )))
        }
    }

    /// Refuses a scan reaching outside the key ranges this database holds
    /// (its answer would be silently partial).
    fn check_retained_range(&self, range: &KeyRange) -> Result<()> {
        if self.retain.covers(
            range.start.as_ref().map(Vec::as_slice),
            range.end.as_ref().map(Vec::as_slice),
        ) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "the scan reaches outside the key ranges this database holds (retain_ranges: {}); scan within one of them, or read from a node that holds the rest",
                self.retain.describe()
            )))
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Publishes a new [`ReadView`] from the memtables, the version and
    /// the router as they are now. Called after every change to any of
    /// them (a freeze under the exclusive write gate, so no write reaches
    /// the new memtable before readers can see it).
    pub(crate) fn publish_view(&self) {
        let _order = self.view_publish.lock();
        let (active, frozen) = {
            let mem = self.mem.read();
            (
                Arc::clone(&mem.active),
                mem.frozen.iter().rev().cloned().collect(),
            )
        };
        let version = Arc::clone(&self.current.read());
        let router = Arc::clone(&self.router.read());
        self.view.store(Arc::new(ReadView {
            active,
            frozen,
            version,
            router,
        }));
    }

    /// The memtables, active first, then frozen newest first.
    fn memtables_newest_first(&self) -> Vec<Arc<Memtable>> {
        self.view.load().memtables().cloned().collect()
    }
}
