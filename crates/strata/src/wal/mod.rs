//! The commit log: one write-ahead log per database, with group commit,
//! crash recovery, tailing readers and retention.
//!
//! Role: every write batch becomes one record in the log before it is
//! acknowledged. The log is the database's single history: sequence numbers
//! are assigned here, recovery replays from here, and replication ships the
//! exact record bytes from here.
//!
//! Files (all in the log's directory, formats in `strata_format::wal` and
//! `docs/format.md`):
//! - `{number:020}.wal`: segments, a 64-byte header then records. The
//!   highest-numbered segment is the active one; every other segment was
//!   fully synced before its successor was created.
//! - `SYNC_POINT`: how far the active segment is known to be synced,
//!   rewritten (without fsync) after every successful fdatasync.
//!
//! Parts, one concept per file:
//! - `writer.rs`: group commit and the segment writer,
//! - `recovery.rs`: scanning, repairing and replaying at open,
//! - `reader.rs`: tailing readers (what replication ships from),
//! - `retention.rs`: releasing old segments, and pins that hold them.
//!
//! Thread-safety: [`Wal`] is `Send + Sync`; any number of threads may
//! append, sync, read and pin at once.
//!
//! Invariants:
//! - Sequence numbers are dense per operation and assigned in log order.
//! - A `sync: true` append returns `Ok` only after an fdatasync that covers
//!   its record succeeded; a `sync: false` append returns after its `write`.
//! - After a failed write or sync the log is poisoned: no later append or
//!   sync succeeds, so nothing whose durability is unknown is acknowledged.
//! - Readers see only records whose write completed (and, in
//!   [`ReadMode::Durable`], whose sync completed), in sequence order.

mod reader;
mod recovery;
mod retention;
#[cfg(test)]
mod tests;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::env::FileSystem;
use crate::error::{Error, Result};
use crate::seqno::SeqNo;

pub use reader::{LogReader, LogRecord, ReadMode};
pub use recovery::{RecoveryReport, TailRepair};
pub use retention::LogPin;
#[allow(
    unused_imports,
    reason = "re-exported for the crate's own tests and tools"
)]
pub use strata_format::wal::{BatchBuilder, BatchOp, BatchView, RecoveryMode};

use writer::{Queue, Waiter};

/// Options of the commit log.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "internals")] {
/// use std::time::Duration;
/// let options = strata::wal::WalOptions {
///     segment_bytes_max: 16 << 20,
///     sync_interval: Some(Duration::from_millis(100)),
///     ..Default::default()
/// };
/// assert_eq!(options.group_bytes_max, 4 << 20);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment that has reached this size is closed and a new one begun
    /// before the next write. Default: 64 MiB.
    pub segment_bytes_max: u64,
    /// The most bytes of records one commit group writes at once; a single
    /// larger batch is written alone. Default: 4 MiB.
    pub group_bytes_max: usize,
    /// If set, a background thread syncs the log at this interval, which
    /// bounds what a power loss can take from `sync: false` writes.
    /// Default: `None`.
    pub sync_interval: Option<Duration>,
    /// How recovery treats damage. Default:
    /// [`RecoveryMode::TolerateTornTail`].
    pub recovery_mode: RecoveryMode,
    /// Fail the open if the log no longer holds `replay_from` (its oldest
    /// segment starts later): the caller needs those records. The database
    /// sets it; a caller that only wants whatever is retained leaves it off.
    /// Default: `false`.
    pub require_replay_from: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 << 20,
            group_bytes_max: 4 << 20,
            sync_interval: None,
            recovery_mode: RecoveryMode::TolerateTornTail,
            require_replay_from: false,
        }
    }
}

/// The sequence numbers an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// The first operation's sequence number.
    pub first_seq: SeqNo,
    /// The last operation's sequence number: the commit token.
    pub last_seq: SeqNo,
}

/// Counters of the log's work since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Batches appended.
    pub batches: u64,
    /// Operations appended.
    pub operations: u64,
    /// Bytes of records written (headers included), by `write` calls or
    /// stores into the mapped segment.
    pub bytes_written: u64,
    /// Of `bytes_written`, the bytes stored into a mapped segment (no
    /// `write` call; counters of bytes passed to `write` miss them).
    pub bytes_mapped: u64,
    /// Commit groups written (each one `write`).
    pub groups: u64,
    /// fdatasync calls on segments.
    pub syncs: u64,
    /// The largest group, in batches.
    pub group_batches_max: u64,
    /// Segments created.
    pub segments_created: u64,
    /// Segments deleted by retention.
    pub segments_deleted: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    operations: AtomicU64,
    bytes_written: AtomicU64,
    bytes_mapped: AtomicU64,
    groups: AtomicU64,
    syncs: AtomicU64,
    group_batches_max: AtomicU64,
    segments_created: AtomicU64,
    segments_deleted: AtomicU64,
}

/// What readers and retention can see of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentState {
    number: u64,
    first_seq: u64,
    /// Bytes written and visible to readers (the final length once sealed).
    len: u64,
    sealed: bool,
}

/// Published progress: what readers may read and what retention may drop.
#[derive(Debug)]
struct Progress {
    /// Retained segments, ascending; the last is the active one.
    segments: Vec<SegmentState>,
    /// The next sequence number to be written (all below are written).
    written_next: u64,
    /// All sequence numbers below this are durable.
    durable_next: u64,
    /// Segments whose records are all below this may go, unless pinned.
    low_water: u64,
    pins: std::collections::BTreeMap<u64, u64>,
    next_pin_id: u64,
    poisoned: Option<Arc<str>>,
    closed: bool,
}

struct Shared {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    database_id: u128,
    options: WalOptions,
    queue: Mutex<Queue>,
    progress: Mutex<Progress>,
    progress_changed: Condvar,
    counters: Counters,
    background: Mutex<BackgroundState>,
    /// Held by whoever deletes released segments, from choosing them to
    /// syncing the directory: two deleters could otherwise unlink out of
    /// order, and a crash could leave a gap in the middle of the log.
    deleting: Mutex<()>,
    background_wake: Condvar,
}

#[derive(Default)]
struct BackgroundState {
    stop: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("database_id", &self.database_id)
            .finish()
    }
}

impl Shared {
    fn segment_path(&self, number: u64) -> PathBuf {
        self.dir.join(strata_format::wal::segment_file_name(number))
    }
}

/// The commit log.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "internals")] {
/// use std::sync::Arc;
/// use strata::wal::{BatchBuilder, Wal, WalOptions};
/// use strata::{MemFileSystem, SeqNo};
///
/// let fs = Arc::new(MemFileSystem::new());
/// let (wal, _report) = Wal::open(fs.clone(), "log", 7, WalOptions::default(), SeqNo(1), |_| Ok(()))?;
/// let mut batch = BatchBuilder::new();
/// batch.put(b"k", b"v");
/// let commit = wal.append(batch, true)?;
/// assert_eq!(commit.last_seq, SeqNo(1));
/// wal.close()?;
///
/// // Reopen and replay.
/// let mut replayed = 0;
/// let (wal, report) = Wal::open(fs, "log", 7, WalOptions::default(), SeqNo(1), |batch| {
///     replayed += batch.count;
///     Ok(())
/// })?;
/// assert_eq!(replayed, 1);
/// assert_eq!(report.next_seq, SeqNo(2));
/// # }
/// # Ok::<(), strata::Error>(())
/// ```
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    background: Option<JoinHandle<()>>,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, replays every batch whose last
    /// sequence number is at least `replay_from` through `apply`, in order,
    /// repairs a torn tail as [`WalOptions::recovery_mode`] allows, and
    /// starts a new segment for writing.
    ///
    /// `database_id` ties the log to one database: segments of another id
    /// are refused. If the log ends before `replay_from` (the caller holds
    /// everything before it elsewhere), numbering continues from
    /// `replay_from` and the older segments are dropped.
    ///
    /// # Errors
    /// [`Error::Corruption`] (naming the file and offset) for damage the
    /// recovery mode does not tolerate, a missing segment, or a segment of
    /// another database; [`Error::Io`] for failed I/O; any error `apply`
    /// returns. Nothing is deleted or truncated when open fails, except
    /// that a torn tail already cut before a later error stays cut.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        database_id: u128,
        options: WalOptions,
        replay_from: SeqNo,
        mut apply: impl FnMut(BatchView<'_>) -> Result<()>,
    ) -> Result<(Wal, RecoveryReport)> {
        let dir = dir.as_ref().to_path_buf();
        let recovered = recovery::recover(
            &*fs,
            &dir,
            database_id,
            &options,
            replay_from.get().max(1),
            &mut apply,
        )?;
        let counters = Counters::default();
        counters.segments_created.store(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            fs,
            dir,
            database_id,
            options,
            queue: Mutex::new(Queue::new(recovered.next_seq, recovered.writer)),
            progress: Mutex::new(Progress {
                segments: recovered.segments,
                written_next: recovered.next_seq,
                durable_next: recovered.next_seq,
                low_water: 0,
                pins: Default::default(),
                next_pin_id: 1,
                poisoned: None,
                closed: false,
            }),
            progress_changed: Condvar::new(),
            counters,
            background: Mutex::new(BackgroundState::default()),
            deleting: Mutex::new(()),
            background_wake: Condvar::new(),
        });
        let background = match shared.options.sync_interval {
            Some(interval) => Some(writer::spawn_background_sync(
                Arc::clone(&shared),
                interval,
            )?),
            None => None,
        };
        Ok((Wal { shared, background }, recovered.report))
    }

    /// Appends one batch and returns its sequence numbers. With
    /// `sync: true` it returns once the batch is durable; otherwise once it
    /// is in the operating system (it survives a process crash, not a power
    /// loss).
    ///
    /// Concurrent appends are grouped: one thread writes a whole group with
    /// one `write` and at most one fdatasync.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty batch or one larger than a
    /// record may be; [`Error::Poisoned`] if this or an earlier write or
    /// sync failed; [`Error::Closed`] after [`Wal::close`].
    pub fn append(&self, batch: BatchBuilder, sync: bool) -> Result<Commit> {
        self.check_appendable(&batch)?;
        let count = batch.count();
        let waiter = Arc::new(Waiter::new(batch.into_bytes(), count, sync));
        writer::commit(&self.shared, waiter)
    }

    /// As [`Wal::append`], and also returns the batch's encoding with its
    /// first sequence number filled in (what the engine applies to its
    /// memtables without encoding the batch twice).
    ///
    /// # Errors
    /// As [`Wal::append`].
    pub fn append_returning(&self, batch: BatchBuilder, sync: bool) -> Result<(Commit, Vec<u8>)> {
        self.check_appendable(&batch)?;
        let count = batch.count();
        let waiter = Arc::new(Waiter::new(batch.into_bytes(), count, sync));
        let commit = writer::commit(&self.shared, Arc::clone(&waiter))?;
        Ok((commit, waiter.take_payload(Some(commit.first_seq))))
    }

    /// As [`Wal::append_returning`] for several batches in order, from one
    /// thread: they are queued together, so they are written in as few
    /// groups (one `write` each) as the group size allows, and synced once
    /// at the end with `sync`. Returns each batch's commit and encoding.
    ///
    /// # Errors
    /// As [`Wal::append`]; batches before a failure may have been written.
    pub fn append_many_returning(
        &self,
        batches: Vec<BatchBuilder>,
        sync: bool,
    ) -> Result<Vec<(Commit, Vec<u8>)>> {
        for batch in &batches {
            self.check_appendable(batch)?;
        }
        let last = batches.len().saturating_sub(1);
        let waiters: Vec<Arc<Waiter>> = batches
            .into_iter()
            .enumerate()
            .map(|(i, batch)| {
                let count = batch.count();
                Arc::new(Waiter::new(batch.into_bytes(), count, sync && i == last))
            })
            .collect();
        self.commit_returning(&waiters)
    }

    /// Appends records framed elsewhere (each `(record, first_seq,
    /// count)`: a whole record, header included, already verified, whose
    /// batch holds `count` operations from `first_seq`) byte for byte, in
    /// order, synced once at the end with `sync`; returns each one's
    /// commit and its bytes back. Nothing is re-framed: the log holds the
    /// bytes given. Each record must land at the sequence number it
    /// carries; the caller makes sure nothing else is appended meanwhile.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a record with no operations or over
    /// the record limit; [`Error::Poisoned`] (and the log poisoned) if a
    /// record would land elsewhere than it says; as [`Wal::append`].
    pub(crate) fn append_framed_many(
        &self,
        records: Vec<(Vec<u8>, u64, u32)>,
        sync: bool,
    ) -> Result<Vec<(Commit, Vec<u8>)>> {
        let limit =
            strata_format::wal::MAX_RECORD_PAYLOAD as usize + strata_format::wal::RECORD_HEADER_LEN;
        for (record, first_seq, count) in &records {
            if *count == 0 || record.len() > limit {
                return Err(Error::InvalidArgument(format!(
                    "a framed record at {first_seq} of {} bytes with {count} operations cannot be appended",
                    record.len()
                )));
            }
        }
        let last = records.len().saturating_sub(1);
        let waiters: Vec<Arc<Waiter>> = records
            .into_iter()
            .enumerate()
            .map(|(i, (record, first_seq, count))| {
                Arc::new(Waiter::framed(record, first_seq, count, sync && i == last))
            })
            .collect();
        self.commit_returning(&waiters)
    }

    /// Commits `waiters` in order from this thread; returns each one's
    /// commit and its bytes back (first sequence number filled in).
    fn commit_returning(&self, waiters: &[Arc<Waiter>]) -> Result<Vec<(Commit, Vec<u8>)>> {
        let commits = writer::commit_many(&self.shared, waiters)?;
        Ok(commits
            .into_iter()
            .zip(waiters)
            .map(|(commit, waiter)| (commit, waiter.take_payload(Some(commit.first_seq))))
            .collect())
    }

    fn check_appendable(&self, batch: &BatchBuilder) -> Result<()> {
        if batch.is_empty() {
            return Err(Error::InvalidArgument("empty batch".into()));
        }
        if batch.encoded_len() > strata_format::wal::MAX_RECORD_PAYLOAD as usize {
            return Err(Error::InvalidArgument(format!(
                "batch of {} bytes exceeds the log's record limit of {} bytes",
                batch.encoded_len(),
                strata_format::wal::MAX_RECORD_PAYLOAD
            )));
        }
        Ok(())
    }

    /// Makes everything appended so far durable; returns the last durable
    /// sequence number.
    ///
    /// # Errors
    /// As [`Wal::append`].
    pub fn sync(&self) -> Result<SeqNo> {
        let waiter = Arc::new(Waiter::new(Vec::new(), 0, true));
        writer::commit(&self.shared, waiter).map(|commit| commit.last_seq)
    }

    /// A reader that yields committed records from `from` on (see
    /// [`LogReader`]), durable ones only.
    ///
    /// # Errors
    /// [`Error::LogTruncated`] if `from` is older than the log retains,
    /// [`Error::BeyondEnd`] if it is past the next sequence number.
    pub fn reader(&self, from: SeqNo) -> Result<LogReader> {
        LogReader::new(Arc::clone(&self.shared), from.get(), ReadMode::Durable)
    }

    /// A reader as [`Wal::reader`], choosing whether to wait for durability.
    ///
    /// # Errors
    /// As [`Wal::reader`].
    pub fn reader_with_mode(&self, from: SeqNo, mode: ReadMode) -> Result<LogReader> {
        LogReader::new(Arc::clone(&self.shared), from.get(), mode)
    }

    /// Keeps every segment holding sequence numbers from `from` on until the
    /// pin is advanced or dropped (a replica slot holds one).
    ///
    /// # Errors
    /// [`Error::LogTruncated`] if `from` is no longer retained.
    pub fn pin(&self, from: SeqNo) -> Result<LogPin> {
        retention::pin(&self.shared, from.get())
    }

    /// Declares that the caller no longer needs records below `seq`; whole
    /// segments below both this mark and every pin are deleted. Returns how
    /// many segments were deleted.
    ///
    /// # Errors
    /// [`Error::Io`] if a deletion fails (the segment is then forgotten by
    /// this handle but may remain on disk until the next open).
    pub fn release_below(&self, seq: SeqNo) -> Result<usize> {
        retention::release_below(&self.shared, seq.get())
    }

    /// The sequence number the next operation will get.
    #[must_use]
    pub fn next_seq(&self) -> SeqNo {
        SeqNo(self.shared.progress.lock().written_next)
    }

    /// The last sequence number known durable (0 if none).
    #[must_use]
    pub fn durable_seq(&self) -> SeqNo {
        SeqNo(self.shared.progress.lock().durable_next.saturating_sub(1))
    }

    /// The oldest sequence number the log still holds.
    #[must_use]
    pub fn oldest_retained_seq(&self) -> SeqNo {
        let progress = self.shared.progress.lock();
        SeqNo(
            progress
                .segments
                .first()
                .map_or(progress.written_next, |s| s.first_seq),
        )
    }

    /// Bytes of the segments that hold sequence numbers at or after `seq`
    /// (what a restart replaying from `seq` reads).
    #[must_use]
    pub fn bytes_from(&self, seq: SeqNo) -> u64 {
        let progress = self.shared.progress.lock();
        let segments = &progress.segments;
        segments
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                segments
                    .get(i + 1)
                    .is_none_or(|next| next.first_seq > seq.get())
            })
            .map(|(_, s)| s.len)
            .sum()
    }

    /// The number of segment files retained.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        self.shared.progress.lock().segments.len()
    }

    /// Counters of the log's work since open.
    #[must_use]
    pub fn stats(&self) -> WalStats {
        let c = &self.shared.counters;
        WalStats {
            batches: c.batches.load(Ordering::Relaxed),
            operations: c.operations.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            bytes_mapped: c.bytes_mapped.load(Ordering::Relaxed),
            groups: c.groups.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            group_batches_max: c.group_batches_max.load(Ordering::Relaxed),
            segments_created: c.segments_created.load(Ordering::Relaxed),
            segments_deleted: c.segments_deleted.load(Ordering::Relaxed),
        }
    }

    /// The poison reason, if a write or sync failed.
    #[must_use]
    pub fn poisoned(&self) -> Option<Arc<str>> {
        self.shared.progress.lock().poisoned.clone()
    }

    /// Syncs everything, stops the background thread and closes the log.
    /// Later appends fail with [`Error::Closed`]; readers see the end.
    ///
    /// # Errors
    /// As [`Wal::sync`]; the log is closed either way.
    pub fn close(mut self) -> Result<()> {
        let synced = self.sync().map(|_| ());
        if synced.is_ok() {
            writer::trim(&self.shared);
        }
        self.shutdown();
        synced
    }

    /// Trims the active segment's allocated space after its records (a
    /// clean close's last step; writes after it extend the file instead).
    pub(crate) fn trim_tail(&self) {
        writer::trim(&self.shared);
    }

    fn shutdown(&mut self) {
        {
            let mut background = self.shared.background.lock();
            background.stop = true;
            self.shared.background_wake.notify_all();
        }
        if let Some(handle) = self.background.take() {
            let _ = handle.join();
        }
        writer::close(&self.shared);
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shutdown();
    }
}
