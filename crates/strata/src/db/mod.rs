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
mod port;
mod ranges;
mod visibility;

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

/// Figures about a database, from [`Db::stats`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DbStats {
    /// The last visible sequence number.
    pub last_seq: SeqNo,
    /// The last sequence number known durable.
    pub durable_seq: SeqNo,
    /// Every operation at or below this is in sorted tables.
    pub flushed_seq: SeqNo,
    /// Tables per level.
    pub level_tables: Vec<u64>,
    /// Bytes per level.
    pub level_bytes: Vec<u64>,
    /// Approximate bytes held by memtables (active and frozen).
    pub memtable_bytes: u64,
    /// Frozen memtables waiting for flush.
    pub immutable_memtables: u64,
    /// Bytes of the memtables' hash indexes (fixed per memtable, apart from
    /// `memtable_bytes`).
    pub memtable_index_bytes: u64,
    /// Live snapshots.
    pub snapshots: u64,
    /// Flushes completed.
    pub flushes: u64,
    /// Bytes written by flushes.
    pub flush_bytes_written: u64,
    /// Compactions completed (trivial moves included).
    pub compactions: u64,
    /// Bytes compactions read.
    pub compaction_bytes_read: u64,
    /// Bytes compactions wrote.
    pub compaction_bytes_written: u64,
    /// Bytes written to disk (log, flushes, compactions) per byte of log:
    /// the write amplification.
    pub write_amplification: f64,
    /// Writes that were delayed or stopped, by reason.
    pub stalls: BTreeMap<&'static str, u64>,
    /// Microseconds writes spent stalled, by reason.
    pub stall_micros: BTreeMap<&'static str, u64>,
    /// Table-cache lookups that found the table already open, and all
    /// lookups.
    pub table_cache_hits: u64,
    /// All table-cache lookups.
    pub table_cache_lookups: u64,
    /// Block-cache lookups that found the block.
    pub block_cache_hits: u64,
    /// Block-cache lookups that had to read and verify the block.
    pub block_cache_misses: u64,
    /// The commit log's counters since open (bytes, fsyncs, group sizes).
    pub wal: WalStats,
    /// Segment files the commit log retains.
    pub wal_segments: u64,
    /// Range splits since open (requested and automatic).
    pub range_splits: u64,
    /// Bytes splits wrote rewriting the tables that straddled their keys.
    pub range_split_bytes_written: u64,
    /// Range merges since open.
    pub range_merges: u64,
    /// Microseconds splits and merges waited for flushes and compactions in
    /// flight before they could change the range map (writes never wait).
    pub range_change_wait_micros: u64,
    /// Flushed range tombstones still held (each until compaction has
    /// dropped what it hides).
    pub range_tombstones: u64,
    /// Every key range's figures, as [`Db::ranges`] gives them.
    pub ranges: Vec<RangeInfo>,
}

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
    retain: crate::ranges::retain::Retain,
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
    /// Opens the database in `dir`, creating it if
    /// [`Options::create_if_missing`], and recovers: the version set from
    /// the manifest, then every write after the last flush from the commit
    /// log.
    ///
    /// # Errors
    /// [`Error::Locked`] if another handle has it open;
    /// [`Error::InvalidArgument`] for invalid options, or if it is missing
    /// (and may not be created) or exists (and [`Options::error_if_exists`]);
    /// [`Error::Corruption`] for damage recovery may not repair (naming file
    /// and offset); [`Error::Io`]. A failed open deletes nothing.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let fs = Arc::clone(&options.file_system);
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
        let database_id = match identity::read(&*fs, &dir)? {
            Some(_) if options.error_if_exists => {
                return Err(Error::InvalidArgument(format!(
                    "a database already exists at {}",
                    dir.display()
                )));
            }
            Some(id) => id,
            None if options.create_if_missing => identity::create(&*fs, &dir)?,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "no database at {}",
                    dir.display()
                )));
            }
        };

        // Read and check everything before writing anything: the version
        // set, every table it names, then the log (whose recovery may cut
        // a torn tail); only then is the manifest rewritten and are
        // orphans deleted.
        let mut versions = VersionSet::open(Arc::clone(&fs), &dir, database_id)?;
        versions.set_initial_ranges(RangeMap::with_split_points(&options.initial_split_points));
        let flushed_seq = versions.flushed_seq();
        let block_cache_bytes = options.block_cache_bytes;
        let tables = TableCache::new(block_cache_bytes);
        let current = versions.current();
        for meta in current.levels.iter().flatten() {
            let path = dir.join(strata_format::manifest::table_file_name(meta.number));
            tables.get_or_open(&*fs, &path, meta.number, meta.size)?;
        }
        let memtable = Arc::new(Memtable::new(options.memtable_bytes_max));
        let retain = crate::ranges::retain::Retain::new(&options.retain_ranges);
        let wal_options = WalOptions {
            segment_bytes_max: options.wal_segment_bytes_max,
            sync_interval: options.wal_sync_interval,
            recovery_mode: options.recovery_mode,
            require_replay_from: true,
            ..WalOptions::default()
        };
        let opened = Wal::open(
            Arc::clone(&fs),
            dir.join("wal"),
            database_id,
            wal_options,
            SeqNo(flushed_seq + 1),
            |batch| {
                apply_batch(&memtable, &batch, &retain, None);
                Ok(())
            },
        );
        let (wal, recovery) = match (
            opened,
            &versions.torn_manifest_tail,
            versions.replayed_manifest_path(),
        ) {
            // The log lacks records the cut manifest edit claimed were in
            // tables: the edit was durable, so it was damage, not a tear.
            (
                Err(Error::Corruption {
                    detail,
                    source: Some(source),
                    ..
                }),
                Some(torn),
                Some(manifest),
            ) if matches!(
                source.kind,
                strata_format::DecodeErrorKind::RecordsMissing { .. }
            ) =>
            {
                return Err(Error::corruption_msg(
                    manifest,
                    0,
                    format!(
                        "the manifest's last edit failed its checks ({torn}) and was taken for a torn write, \
                         but the commit log no longer holds what that edit recorded ({detail}): the edit was \
                         durable and is damaged"
                    ),
                ));
            }
            (opened, _, _) => opened?,
        };
        versions.finish_open()?;
        if !retain.is_everything() {
            let current = versions.current();
            let mut edit = strata_format::manifest::VersionEdit::default();
            for (level, tables) in current.levels.iter().enumerate() {
                for table in tables {
                    if !retain.overlaps(table.smallest_user_key(), table.largest_user_key()) {
                        edit.deleted.push((level as u8, table.number));
                    }
                }
            }
            if !edit.deleted.is_empty() {
                versions.log_and_apply(edit)?;
                versions.delete_obsolete()?;
            }
        }
        wal.release_below(SeqNo(flushed_seq + 1))?;
        let mut recovery = recovery;
        recovery.manifest_torn_tail = versions.torn_manifest_tail.take();
        let visible = recovery.next_seq.get().saturating_sub(1);
        let current = versions.current();
        let router = Arc::new(Router::new(Arc::clone(&current.ranges)));
        let view = ReadView {
            active: Arc::clone(&memtable),
            frozen: Vec::new(),
            version: Arc::clone(&current),
            router: Arc::clone(&router),
        };
        let inner = Arc::new(Inner {
            dir,
            options,
            fs,
            wal,
            write_gate: RwLock::new(()),
            mem: RwLock::new(MemState {
                active: memtable,
                frozen: VecDeque::new(),
            }),
            view: arc_swap::ArcSwap::from_pointee(view),
            view_publish: Mutex::new(()),
            versions: Mutex::new(versions),
            current: RwLock::new(current),
            tables,
            visibility: Visibility::new(visible),
            snapshots: Mutex::new(BTreeMap::new()),
            closed: AtomicBool::new(false),
            recovery,
            work: Mutex::new(background::Work::default()),
            work_changed: Condvar::new(),
            counters: Counters::default(),
            flushed: std::sync::atomic::AtomicU64::new(flushed_seq),
            log_bytes_since_check: std::sync::atomic::AtomicU64::new(0),
            stall_hint: AtomicBool::new(true),
            follower: RwLock::new(None),
            replication_apply: Mutex::new(()),
            replicated: port::ReplicationCounters::default(),
            wal_database_id: database_id,
            retain: retain.clone(),
            batch_limit: std::sync::atomic::AtomicUsize::new(usize::MAX),
            batch_limit_why: parking_lot::Mutex::new(String::new()),
            router: RwLock::new(router),
            rates: Rates::default(),
            layout: RwLock::new(()),
            _lock: lock,
        });
        background::refresh_stall_hint(&inner);
        let threads = background::start(&inner)?;
        inner.freeze_if_full(0);
        Ok(Db { inner, threads })
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

    fn write(&self, batch: WriteBatch, options: &WriteOptions) -> Result<SeqNo> {
        self.check_open()?;
        if let Some(message) = self.follower.read().as_ref() {
            return Err(Error::ReadOnly(message.clone()));
        }
        if let Some(why) = &batch.invalid {
            return Err(Error::InvalidArgument(format!(
                "{why}; nothing was written"
            )));
        }
        let limits = &self.options;
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
        let limit = self.batch_limit.load(Ordering::Acquire);
        if batch.encoded_len() > limit {
            return Err(Error::InvalidArgument(format!(
                "a batch of {} bytes exceeds the limit of {limit} bytes ({}); nothing was written",
                batch.encoded_len(),
                self.batch_limit_why.lock()
            )));
        }
        if batch.is_empty() {
            return Ok(SeqNo(self.visibility.visible()));
        }
        background::throttle(self, batch.inner.as_bytes())?;
        let batch_bytes = batch.encoded_len() as u64;
        let last = {
            let _gate = self.write_gate.read();
            let (commit, bytes) = self.wal.append_returning(batch.inner, options.sync)?;
            let Some(batch) = view_built_batch(&bytes) else {
                // The log took a batch this engine built; it cannot lack a header.
                return Err(Error::Poisoned {
                    reason: Arc::from("internal error: a committed batch lost its header"),
                });
            };
            let current = self.view.load();
            apply_batch(&current.active, &batch, &self.retain, Some(&current.router));
            self.visibility
                .publish_and_wait(commit.first_seq.get(), commit.last_seq.get());
            commit.last_seq
        };
        self.freeze_if_full(batch_bytes);
        Ok(last)
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

    /// Freezes the active memtable if it is full and wakes the flusher.
    /// Also when the log holds more unflushed bytes than a restart may
    /// replay (`wal_replay_bytes_max`), and nothing is being flushed.
    fn freeze_if_full(&self, batch_bytes: u64) {
        if self.view.load().active.approximate_bytes() >= self.options.memtable_bytes_max {
            self.freeze(false);
            return;
        }
        // Measuring the log takes a lock: do it each time another eighth of
        // the cap has been written.
        let cap = self.options.wal_replay_bytes_max;
        let since = self
            .log_bytes_since_check
            .fetch_add(batch_bytes, Ordering::Relaxed)
            + batch_bytes;
        if since < (cap / 8).max(1) {
            return;
        }
        self.log_bytes_since_check.store(0, Ordering::Relaxed);
        let log = self
            .wal
            .bytes_from(SeqNo(self.flushed.load(Ordering::Relaxed) + 1));
        if log <= cap {
            return;
        }
        if self.mem.read().frozen.is_empty() {
            self.freeze(true);
        } else if log > cap.saturating_mul(2) {
            // Writers outrun the flush: wait for it, so the log a restart
            // replays stays within about twice the cap.
            background::wait_for_flush_stall(self);
        }
    }

    /// Freezes the active memtable if it holds anything and either `always`
    /// or it is full.
    fn freeze(&self, always: bool) {
        let _gate = self.write_gate.write();
        let mut mem = self.mem.write();
        let full = mem.active.approximate_bytes() >= self.options.memtable_bytes_max;
        if mem.active.is_empty() || !(always || full) {
            return;
        }
        let fresh = Arc::new(Memtable::new(self.options.memtable_bytes_max));
        let frozen = std::mem::replace(&mut mem.active, fresh);
        mem.frozen.push_back(frozen);
        drop(mem);
        self.publish_view();
        background::refresh_stall_hint(self);
        let mut work = self.work.lock();
        work.generation += 1;
        self.work_changed.notify_all();
    }

    fn flush_all(&self) -> Result<()> {
        self.freeze(true);
        background::wait_flushed(self)
    }

    /// The value of `key` at `seq` into `value` (its old content
    /// replaced); returns whether there is one. Takes no lock and allocates
    /// only if `value` must grow.
    pub(crate) fn get_into(&self, key: &[u8], seq: u64, value: &mut Vec<u8>) -> Result<bool> {
        let view = self.view.load();
        if let Some(counters) = view.router.counters_for(key) {
            counters.reads.fetch_add(1, Ordering::Relaxed);
        }
        let version = &view.version;
        // The newest range tombstone covering the key that this read sees:
        // any version older than it is hidden.
        let cover =
            if version.tombstones.is_empty() && !view.memtables().any(|m| m.has_tombstones()) {
                0
            } else {
                view.memtables()
                    .map(|m| m.tombstone_cover(key, seq))
                    .chain(std::iter::once(version.tombstone_cover(key, seq)))
                    .max()
                    .unwrap_or(0)
            };
        let hash = strata_format::table::filter_hash(key);
        for memtable in view.memtables() {
            if let Some((found_seq, found)) = memtable.get(key, hash, seq) {
                value.clear();
                return Ok(match found {
                    Some(bytes) if found_seq >= cover => {
                        value.extend_from_slice(bytes);
                        true
                    }
                    _ => false,
                });
            }
        }
        for meta in version.tables_for_key(key) {
            if meta.smallest_seq > seq {
                continue;
            }
            let table = self.table(meta)?;
            if let Some((found_seq, is_value)) = table.get_into(key, hash, seq, value)? {
                if is_value && found_seq >= cover {
                    return Ok(true);
                }
                value.clear();
                return Ok(false);
            }
        }
        value.clear();
        Ok(false)
    }

    /// As [`Inner::get_into`], into a new vector.
    pub(crate) fn get_at(&self, key: &[u8], seq: u64) -> Result<Option<Vec<u8>>> {
        let mut value = Vec::new();
        Ok(self.get_into(key, seq, &mut value)?.then_some(value))
    }

    /// The open table of `meta` (opened, through the table cache, by the
    /// first reader that needs it).
    fn table<'m>(&self, meta: &'m TableMeta) -> Result<&'m Arc<Table>> {
        meta.handle.get_or_open(|| {
            let path = self
                .dir
                .join(strata_format::manifest::table_file_name(meta.number));
            self.open_table(&path, meta.number, meta.size)
        })
    }

    fn open_table(&self, path: &Path, number: u64, size: u64) -> Result<Arc<Table>> {
        self.tables.get_or_open(&*self.fs, path, number, size)
    }

    /// Checks every checksum of every table of the current version.
    fn verify_tables(&self) -> Result<usize> {
        let version = Arc::clone(&self.current.read());
        let mut checked = 0;
        for meta in version.levels.iter().flatten() {
            let path = self
                .dir
                .join(strata_format::manifest::table_file_name(meta.number));
            self.open_table(&path, meta.number, meta.size)?.verify()?;
            checked += 1;
        }
        Ok(checked)
    }

    fn iterate(
        self: &Arc<Self>,
        range: KeyRange,
        seq: u64,
        forward: bool,
        hold: Option<Snapshot>,
    ) -> Result<DbIterator> {
        let view = self.view.load_full();
        let version = Arc::clone(&view.version);
        if let Some(start) = range.user_bounds().0
            && let Some(counters) = view.router.counters_for(start)
        {
            counters.reads.fetch_add(1, Ordering::Relaxed);
        }
        let mut tombstones = version.tombstones.as_ref().clone();
        for memtable in view.memtables() {
            if memtable.has_tombstones() {
                tombstones.extend(memtable.tombstones());
            }
        }
        if !tombstones.is_empty() {
            tombstones.retain(|t| t.seq <= seq);
            crate::ranges::tombstones::sort(&mut tombstones);
        }
        let mut cursors: Vec<Box<dyn Cursor>> = Vec::new();
        for memtable in view.memtables() {
            if !memtable.is_empty() {
                cursors.push(Box::new(MemCursor::new(
                    Arc::clone(memtable),
                    &range,
                    forward,
                )));
            }
        }
        let range = Arc::new(range);
        let (start, end) = range.user_bounds();
        // Level-0 tables overlap: a cursor each.
        for meta in version
            .levels
            .first()
            .into_iter()
            .flatten()
            .filter(|t| t.overlaps(start, end))
        {
            let table = Arc::clone(self.table(meta)?);
            cursors.push(Box::new(TableCursor::new(
                table,
                Arc::clone(&range),
                forward,
            )));
        }
        // Deeper levels do not: one cursor per level, opening its tables
        // one after another as the scan reaches them.
        for level in 1..version.levels.len() {
            let inner = Arc::clone(self);
            let open: crate::table::OpenFn =
                Box::new(move |meta| inner.table(meta).map(Arc::clone));
            if let Some(cursor) = LevelCursor::new(
                Arc::clone(&version),
                level,
                Arc::clone(&range),
                forward,
                open,
            ) {
                cursors.push(Box::new(cursor));
            }
        }
        let hold: Box<dyn Send + Sync> = match hold {
            Some(snapshot) => Box::new((snapshot, version)),
            None => Box::new((Arc::clone(self), version)),
        };
        Ok(DbIterator::new(
            cursors,
            range,
            seq,
            forward,
            tombstones,
            self.retain.clone(),
            hold,
        ))
    }

    fn stats(&self) -> DbStats {
        let version = Arc::clone(&self.current.read());
        let (memtable_bytes, memtable_index_bytes, frozen) = {
            let mem = self.mem.read();
            let all = || std::iter::once(&mem.active).chain(&mem.frozen);
            (
                all().map(|m| m.approximate_bytes() as u64).sum(),
                all().map(|m| m.index_bytes() as u64).sum(),
                mem.frozen.len() as u64,
            )
        };
        let c = &self.counters;
        let wal = self.wal.stats();
        let flush_bytes = c.flush_bytes_written.load(Ordering::Relaxed);
        let compaction_written = c.compaction_bytes_written.load(Ordering::Relaxed);
        let split_written = c.split_bytes_written.load(Ordering::Relaxed);
        let write_amplification = if wal.bytes_written == 0 {
            0.0
        } else {
            (wal.bytes_written + flush_bytes + compaction_written + split_written) as f64
                / wal.bytes_written as f64
        };
        let (stalls, stall_micros) = c.stalls();
        let (table_cache_hits, table_cache_lookups) = self.tables.hit_counts();
        let (block_cache_hits, block_cache_misses) = self.tables.block_hit_counts();
        DbStats {
            last_seq: SeqNo(self.visibility.visible()),
            durable_seq: self.wal.durable_seq(),
            // Not the version set's lock: flushes hold it across the
            // manifest's fsync.
            flushed_seq: SeqNo(self.flushed.load(Ordering::Relaxed)),
            level_tables: version.levels.iter().map(|t| t.len() as u64).collect(),
            level_bytes: (0..LEVEL_COUNT).map(|l| version.level_bytes(l)).collect(),
            memtable_bytes,
            immutable_memtables: frozen,
            memtable_index_bytes,
            snapshots: self.snapshots.lock().values().map(|&n| n as u64).sum(),
            flushes: c.flushes.load(Ordering::Relaxed),
            flush_bytes_written: flush_bytes,
            compactions: c.compactions.load(Ordering::Relaxed),
            compaction_bytes_read: c.compaction_bytes_read.load(Ordering::Relaxed),
            compaction_bytes_written: compaction_written,
            write_amplification,
            stalls,
            stall_micros,
            table_cache_hits,
            table_cache_lookups,
            block_cache_hits,
            block_cache_misses,
            wal,
            wal_segments: self.wal.segment_count() as u64,
            range_splits: c.splits.load(Ordering::Relaxed),
            range_split_bytes_written: c.split_bytes_written.load(Ordering::Relaxed),
            range_merges: c.merges.load(Ordering::Relaxed),
            range_change_wait_micros: c.range_change_wait_micros.load(Ordering::Relaxed),
            range_tombstones: version.tombstones.len() as u64,
            ranges: self.range_infos(),
        }
    }

    /// The oldest sequence number any reader may still read at.
    pub(crate) fn oldest_snapshot(&self) -> u64 {
        let visible = self.visibility.visible();
        self.snapshots
            .lock()
            .keys()
            .next()
            .copied()
            .unwrap_or(visible)
            .min(visible)
    }
}

/// Inserts every operation of `batch` (operation `i` at `first_seq + i`)
/// into `memtable`, in one pass over its encoding, skipping puts and
/// deletes of keys `retain` does not hold (their sequence numbers stay
/// used), and counts each operation against its range in `router`.
fn apply_batch(
    memtable: &Memtable,
    batch: &BatchView<'_>,
    retain: &crate::ranges::retain::Retain,
    router: Option<&Router>,
) {
    let everything = retain.is_everything();
    // Large batches are inserted sorted (see `Memtable::insert_many`).
    let mut sorted: Option<Vec<crate::memtable::BatchInsert<'_>>> =
        (batch.count >= SORTED_INSERT_OPS).then(|| Vec::with_capacity(batch.count as usize));
    for (seq, op) in (batch.first_seq..).zip(batch.ops()) {
        let (key, bytes) = match op {
            BatchOp::Put { key, value } => {
                if everything || retain.contains(key) {
                    match &mut sorted {
                        Some(ops) => ops.push((key, seq, Some(value))),
                        None => memtable.put(key, seq, value),
                    }
                }
                (key, key.len() + value.len())
            }
            BatchOp::Delete { key } => {
                if everything || retain.contains(key) {
                    match &mut sorted {
                        Some(ops) => ops.push((key, seq, None)),
                        None => memtable.delete(key, seq),
                    }
                }
                (key, key.len())
            }
            BatchOp::DeleteRange { start, end } => {
                memtable.delete_range(start, end, seq);
                (start, start.len() + end.len())
            }
            BatchOp::Skip => continue,
        };
        if let Some(counters) = router.and_then(|r| r.counters_for(key)) {
            counters.writes.fetch_add(1, Ordering::Relaxed);
            counters
                .write_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            counters.last_seq.fetch_max(seq, Ordering::Relaxed);
        }
    }
    if let Some(ops) = &mut sorted {
        memtable.insert_many(ops);
    }
    memtable.note_applied(batch.last_seq());
}

/// Batches of at least this many operations are sorted before their
/// memtable inserts.
const SORTED_INSERT_OPS: u32 = 16;

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
/// db.flush()?;
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
    /// [`Error::Closed`] after the database was closed; as [`Db::get`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.check_open()?;
        self.inner.check_retained(key)?;
        self.inner.get_at(key, self.seq)
    }

    /// The keys of `range` as of the snapshot, in key order.
    ///
    /// # Errors
    /// As [`Db::scan`].
    pub fn scan<'a>(&self, range: impl RangeBounds<&'a [u8]>) -> Result<DbIterator> {
        self.inner.check_open()?;
        let range = KeyRange::from_bounds(range.start_bound().cloned(), range.end_bound().cloned());
        self.inner.check_retained_range(&range)?;
        self.inner
            .iterate(range, self.seq, true, Some(self.clone_registration()))
    }

    /// As [`Snapshot::scan`], in reverse key order.
    ///
    /// # Errors
    /// As [`Db::scan`].
    pub fn scan_rev<'a>(&self, range: impl RangeBounds<&'a [u8]>) -> Result<DbIterator> {
        self.inner.check_open()?;
        let range = KeyRange::from_bounds(range.start_bound().cloned(), range.end_bound().cloned());
        self.inner.check_retained_range(&range)?;
        self.inner
            .iterate(range, self.seq, false, Some(self.clone_registration()))
    }

    fn clone_registration(&self) -> Snapshot {
        *self.inner.snapshots.lock().entry(self.seq).or_insert(0) += 1;
        Snapshot {
            inner: Arc::clone(&self.inner),
            seq: self.seq,
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
                drop(snapshots);
                // Versions kept for it may now be collectible.
                self.inner.work_changed.notify_all();
            }
        }
    }
}
