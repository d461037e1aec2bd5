//! Group commit and the segment writer.
//!
//! Writers join a queue (leveldb's `DBImpl::Write` shape). The writer at
//! the front is the leader: it takes a size-capped group from the front of
//! the queue, gives its batches consecutive sequence numbers, releases the
//! queue lock, frames every batch into one buffer, writes it with one
//! positional write and, if any member asked for `sync`, one fdatasync.
//! Then it removes the group from the queue, wakes the next front writer
//! (which leads the next group, so that group's I/O overlaps with the rest
//! of this hand-off) and hands each member its result. Followers sleep on
//! their own lock and condition variable, never the queue's, and return
//! when the leader has covered their bytes.
//!
//! Thread-safety: the queue mutex guards the queue, the sequence counter
//! and the [`LogWriter`]; the leader takes the writer out of the queue
//! state while it does I/O, so no lock is held across a write or a sync and
//! new writers can queue behind the leader meanwhile.
//!
//! Invariants:
//! - Only the front writer ever holds the [`LogWriter`], so writes to the
//!   log are serial and in sequence order.
//! - Results are handed out only after the write (and sync, if any member
//!   asked) returned; a failure poisons the queue before any result is
//!   handed out, so no member of a failed group and no later writer is
//!   acknowledged.
//! - The sync point is rewritten only after the fdatasync it describes
//!   succeeded.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use strata_format::wal::{
    RECORD_HEADER_LEN, RecordType, SEGMENT_HEADER_LEN, SYNC_POINT_SLOT_OFFSETS, SegmentHeader,
    SyncPoint, begin_record, finish_record, set_batch_first_seq,
};

use super::{Commit, SegmentState, Shared};
use crate::env::{File, MapWriter, OpenMode};
use crate::error::{Error, Result};
use crate::seqno::SeqNo;

/// One writer waiting in the queue.
pub(super) struct Waiter {
    /// The encoded batch (first_seq still 0); empty for a sync request.
    /// Read by the leader while framing; taken back by the writer after
    /// its result arrives (see `Wal::append_returning`). For a framed
    /// waiter: the whole record, header included, written as it is.
    payload: Mutex<Vec<u8>>,
    payload_len: usize,
    /// For an already framed record (a replicated one): the first sequence
    /// number it carries, which must be the one the queue assigns.
    framed_first_seq: Option<u64>,
    count: u32,
    sync: bool,
    /// The waiter's own lock, so that waking a follower never contends on
    /// the queue lock.
    slot: Mutex<Slot>,
    wake: Condvar,
}

#[derive(Default)]
struct Slot {
    /// Set by the leader whose group covered this waiter.
    result: Option<Result<Commit>>,
    /// Set when this waiter reached the front of the queue and must lead.
    lead: bool,
    /// Followers of the same group this waiter wakes once woken itself:
    /// waking a group is a tree, so the wake-ups run on every core instead
    /// of one after another on the leader's.
    children: Vec<Arc<Waiter>>,
}

impl Waiter {
    pub(super) fn new(payload: Vec<u8>, count: u32, sync: bool) -> Self {
        Self {
            payload_len: payload.len(),
            payload: Mutex::new(payload),
            framed_first_seq: None,
            count,
            sync,
            slot: Mutex::new(Slot::default()),
            wake: Condvar::new(),
        }
    }

    /// A waiter for a record framed elsewhere (verified, holding `count`
    /// operations from `first_seq`), written byte for byte.
    pub(super) fn framed(record: Vec<u8>, first_seq: u64, count: u32, sync: bool) -> Self {
        Self {
            framed_first_seq: Some(first_seq),
            ..Self::new(record, count, sync)
        }
    }

    /// Takes the encoded batch back, with its first sequence number set
    /// if it was committed.
    pub(super) fn take_payload(&self, first_seq: Option<SeqNo>) -> Vec<u8> {
        let mut payload = std::mem::take(&mut *self.payload.lock());
        if let Some(first) = first_seq
            && self.framed_first_seq.is_none()
            && payload.len() >= 8
        {
            set_batch_first_seq(&mut payload, first.get());
        }
        payload
    }

    /// Hands over the result and the followers this waiter must wake, but
    /// does not wake it (its parent in the wake-up tree does).
    fn finish_quietly(&self, result: Result<Commit>, children: Vec<Arc<Waiter>>) {
        let mut slot = self.slot.lock();
        slot.result = Some(result);
        slot.children = children;
    }

    fn make_leader(&self) {
        let mut slot = self.slot.lock();
        slot.lead = true;
        self.wake.notify_one();
    }

    fn framed_len(&self) -> usize {
        if self.count == 0 {
            0
        } else if self.framed_first_seq.is_some() {
            self.payload_len
        } else {
            RECORD_HEADER_LEN + self.payload_len
        }
    }
}

/// The queue of writers, guarded by `Shared::queue`.
pub(super) struct Queue {
    waiters: VecDeque<Arc<Waiter>>,
    next_seq: u64,
    /// `None` only while the leader is writing.
    writer: Option<LogWriter>,
    poisoned: Option<Arc<str>>,
    closed: bool,
}

impl Queue {
    pub(super) fn new(next_seq: u64, writer: LogWriter) -> Self {
        Self {
            waiters: VecDeque::new(),
            next_seq,
            writer: Some(writer),
            poisoned: None,
            closed: false,
        }
    }

    fn is_front(&self, waiter: &Arc<Waiter>) -> bool {
        self.waiters
            .front()
            .is_some_and(|front| Arc::ptr_eq(front, waiter))
    }
}

/// The active segment and the sync-point file; owned by the leader while
/// it writes.
pub(super) struct LogWriter {
    pub(super) segment_number: u64,
    pub(super) path: PathBuf,
    pub(super) file: Arc<dyn File>,
    /// Stores into the segment's allocated space without a system call,
    /// where the file system offers it (writes past it use `write_at`).
    map: Option<Box<dyn MapWriter>>,
    pub(super) written_len: u64,
    pub(super) synced_len: u64,
    /// Whether the active segment holds any record.
    pub(super) has_records: bool,
    pub(super) sync_point: SyncPointWriter,
    buffer: Vec<u8>,
}

impl LogWriter {
    pub(super) fn new(
        segment_number: u64,
        path: PathBuf,
        segment: Segment,
        sync_point: SyncPointWriter,
    ) -> Self {
        Self {
            segment_number,
            path,
            file: segment.file,
            map: segment.map,
            written_len: SEGMENT_HEADER_LEN as u64,
            synced_len: SEGMENT_HEADER_LEN as u64,
            has_records: false,
            sync_point,
            buffer: Vec::new(),
        }
    }
}

/// Writes the two-slot `SYNC_POINT` file (never synced; see
/// `strata_format::wal::sync_point`).
pub(super) struct SyncPointWriter {
    pub(super) path: PathBuf,
    pub(super) file: Arc<dyn File>,
    pub(super) database_id: u128,
    pub(super) generation: u64,
}

impl SyncPointWriter {
    pub(super) fn record(&mut self, segment_number: u64, synced_len: u64) -> Result<()> {
        self.generation += 1;
        let point = SyncPoint {
            database_id: self.database_id,
            generation: self.generation,
            segment_number,
            synced_len,
        };
        let offset = SYNC_POINT_SLOT_OFFSETS
            .get(point.slot())
            .copied()
            .unwrap_or(0);
        self.file
            .write_all_at(&point.encode(), offset)
            .map_err(|e| Error::io("write sync point", &self.path, e))
    }
}

/// Runs `waiter` through the queue: waits to be covered by a leader, or
/// leads a group itself.
pub(super) fn commit(shared: &Shared, waiter: Arc<Waiter>) -> Result<Commit> {
    let mut queue = shared.queue.lock();
    if let Some(reason) = &queue.poisoned {
        return Err(Error::Poisoned {
            reason: Arc::clone(reason),
        });
    }
    if queue.closed {
        return Err(Error::Closed);
    }
    queue.waiters.push_back(Arc::clone(&waiter));
    let leads = queue.is_front(&waiter);
    drop(queue);
    wait_or_lead(shared, &waiter, leads)
}

/// Commits several batches in order from one thread: all are queued at
/// once (so a leader writes as many as fit in one group, with one `write`),
/// then this thread waits for, or leads, each in turn.
pub(super) fn commit_many(shared: &Shared, waiters: &[Arc<Waiter>]) -> Result<Vec<Commit>> {
    let mut queue = shared.queue.lock();
    if let Some(reason) = &queue.poisoned {
        return Err(Error::Poisoned {
            reason: Arc::clone(reason),
        });
    }
    if queue.closed {
        return Err(Error::Closed);
    }
    let Some(first) = waiters.first() else {
        return Ok(Vec::new());
    };
    for waiter in waiters {
        queue.waiters.push_back(Arc::clone(waiter));
    }
    let first_leads = queue.is_front(first);
    drop(queue);
    let mut commits = Vec::with_capacity(waiters.len());
    for (index, waiter) in waiters.iter().enumerate() {
        commits.push(wait_or_lead(shared, waiter, index == 0 && first_leads)?);
    }
    Ok(commits)
}

/// Waits until `waiter`'s group is written, or until it must lead one
/// (`leads`: it was the front of the queue when queued).
fn wait_or_lead(shared: &Shared, waiter: &Arc<Waiter>, leads: bool) -> Result<Commit> {
    if !leads {
        let mut slot = waiter.slot.lock();
        loop {
            if let Some(result) = slot.result.take() {
                let children = std::mem::take(&mut slot.children);
                drop(slot);
                for child in children {
                    child.wake.notify_one();
                }
                return result;
            }
            if slot.lead {
                break;
            }
            waiter.wake.wait(&mut slot);
        }
    }
    lead(shared, shared.queue.lock(), waiter)
}

fn lead(shared: &Shared, mut queue: MutexGuard<'_, Queue>, leader: &Arc<Waiter>) -> Result<Commit> {
    debug_assert!(queue.is_front(leader), "only the front waiter leads");
    let refusal = match (&queue.poisoned, queue.closed) {
        (Some(reason), _) => Some(Error::Poisoned {
            reason: Arc::clone(reason),
        }),
        (None, true) => Some(Error::Closed),
        _ => None,
    };
    if let Some(error) = refusal {
        queue.waiters.pop_front();
        let next = queue.waiters.front().cloned();
        drop(queue);
        if let Some(next) = next {
            next.make_leader();
        }
        return Err(error);
    }

    // Take a size-capped group from the front: always the leader, then as
    // many followers as fit.
    let cap = shared.options.group_bytes_max;
    let mut group: Vec<Arc<Waiter>> = Vec::new();
    let mut group_bytes = 0usize;
    let mut sync = false;
    for waiter in &queue.waiters {
        let len = waiter.framed_len();
        if !group.is_empty() && group_bytes + len > cap {
            break;
        }
        group_bytes += len;
        sync |= waiter.sync;
        group.push(Arc::clone(waiter));
    }
    let group_first_seq = queue.next_seq;
    let mut seq = group_first_seq;
    let mut commits = Vec::with_capacity(group.len());
    for waiter in &group {
        let first = seq;
        seq += u64::from(waiter.count);
        commits.push((first, seq));
    }
    queue.next_seq = seq;
    let Some(mut writer) = queue.writer.take() else {
        // Unreachable by the invariant that only the front writer takes it;
        // refuse rather than write out of order.
        let reason: Arc<str> = Arc::from("internal error: log writer missing");
        queue.poisoned = Some(Arc::clone(&reason));
        return Err(Error::Poisoned { reason });
    };
    drop(queue);

    // Frame the group into one buffer, outside the lock.
    let mut buffer = std::mem::take(&mut writer.buffer);
    buffer.clear();
    buffer.reserve(group_bytes);
    let mut batches = 0u64;
    let mut misplaced = None;
    for (waiter, &(first, _)) in group.iter().zip(&commits) {
        if waiter.count == 0 {
            continue;
        }
        if let Some(carried) = waiter.framed_first_seq {
            // A record framed elsewhere is written as it is; it must land
            // at the sequence number it carries, or its bytes would lie.
            if carried != first {
                misplaced.get_or_insert((carried, first));
            }
            buffer.extend_from_slice(&waiter.payload.lock());
            batches += 1;
            continue;
        }
        let start = begin_record(&mut buffer);
        buffer.extend_from_slice(&waiter.payload.lock());
        if let Some(payload) = buffer.get_mut(start + RECORD_HEADER_LEN..) {
            set_batch_first_seq(payload, first);
        }
        finish_record(&mut buffer, start, RecordType::Batch);
        batches += 1;
    }
    let outcome = match misplaced {
        None => write_group(shared, &mut writer, &buffer, group_first_seq, seq, sync),
        Some((carried, assigned)) => Err(Error::Poisoned {
            reason: Arc::from(format!(
                "internal error: a replicated record carrying sequence number {carried} was queued at {assigned}; nothing of its group was written"
            )),
        }),
    };
    writer.buffer = buffer;

    let counters = &shared.counters;
    counters.batches.fetch_add(batches, Ordering::Relaxed);
    counters
        .operations
        .fetch_add(seq - group_first_seq, Ordering::Relaxed);
    counters
        .group_batches_max
        .fetch_max(batches, Ordering::Relaxed);

    let mut queue = shared.queue.lock();
    queue.writer = Some(writer);
    let poison = match outcome {
        Ok(()) => None,
        Err(error) => {
            let reason: Arc<str> = Arc::from(error.to_string());
            queue.poisoned = Some(Arc::clone(&reason));
            let mut progress = shared.progress.lock();
            progress.poisoned = Some(Arc::clone(&reason));
            shared.progress_changed.notify_all();
            Some(reason)
        }
    };
    for waiter in &group {
        let popped = queue.waiters.pop_front();
        debug_assert!(
            popped.is_some_and(|p| Arc::ptr_eq(&p, waiter)),
            "the group is the queue's front"
        );
    }
    let next_leader = queue.waiters.front().cloned();
    drop(queue);
    // Hand leadership on first, so that the next group's write and sync
    // overlap with waking this group's followers.
    if let Some(next) = next_leader {
        next.make_leader();
    }
    let durable = if sync { seq } else { group_first_seq };
    let mut own = None;
    let mut followers = Vec::with_capacity(group.len());
    for (waiter, (first, end)) in group.iter().zip(commits) {
        let result = match &poison {
            Some(reason) => Err(Error::Poisoned {
                reason: Arc::clone(reason),
            }),
            None if waiter.count == 0 => {
                // A sync request: this group synced (the request asked), so
                // everything written before it is durable.
                let last = SeqNo(durable.saturating_sub(1));
                Ok(Commit {
                    first_seq: last,
                    last_seq: last,
                })
            }
            None => Ok(Commit {
                first_seq: SeqNo(first),
                last_seq: SeqNo(end - 1),
            }),
        };
        if Arc::ptr_eq(waiter, leader) {
            own = Some(result);
        } else {
            followers.push((Arc::clone(waiter), result));
        }
    }
    // Follower i wakes followers 2i+1 and 2i+2; the leader wakes the root.
    let members: Vec<Arc<Waiter>> = followers.iter().map(|(w, _)| Arc::clone(w)).collect();
    for (index, (waiter, result)) in followers.into_iter().enumerate() {
        let children = [2 * index + 1, 2 * index + 2]
            .iter()
            .filter_map(|&c| members.get(c).cloned())
            .collect();
        waiter.finish_quietly(result, children);
    }
    if let Some(root) = members.first() {
        root.wake.notify_one();
    }

    own.unwrap_or(Err(Error::Closed))
}

/// Writes one framed group and syncs it if asked; publishes progress.
/// `first_seq..next_seq` are the group's sequence numbers.
fn write_group(
    shared: &Shared,
    writer: &mut LogWriter,
    buffer: &[u8],
    first_seq: u64,
    next_seq: u64,
    sync: bool,
) -> Result<()> {
    if !buffer.is_empty() {
        if writer.has_records && writer.written_len >= shared.options.segment_bytes_max {
            rotate(shared, writer, first_seq)?;
        }
        let offset = writer.written_len;
        let mapped = writer
            .map
            .as_ref()
            .is_some_and(|map| offset + buffer.len() as u64 <= map.len());
        match &mut writer.map {
            Some(map) if mapped => map.write_at(buffer, offset),
            _ => writer.file.write_all_at(buffer, offset),
        }
        .map_err(|e| Error::io("write", &writer.path, e))?;
        if mapped {
            shared
                .counters
                .bytes_mapped
                .fetch_add(buffer.len() as u64, Ordering::Relaxed);
        }
        writer.written_len += buffer.len() as u64;
        writer.has_records = true;
        shared
            .counters
            .bytes_written
            .fetch_add(buffer.len() as u64, Ordering::Relaxed);
        shared.counters.groups.fetch_add(1, Ordering::Relaxed);
        let mut progress = shared.progress.lock();
        if let Some(active) = progress.segments.last_mut() {
            active.len = writer.written_len;
        }
        progress.written_next = next_seq;
        shared.progress_changed.notify_all();
    }
    if sync && writer.synced_len < writer.written_len {
        writer
            .file
            .sync_data()
            .map_err(|e| fsync_failed(shared, writer, e))?;
        shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
        writer.synced_len = writer.written_len;
        writer
            .sync_point
            .record(writer.segment_number, writer.synced_len)?;
        let mut progress = shared.progress.lock();
        progress.durable_next = next_seq;
        shared.progress_changed.notify_all();
    } else if sync {
        // Nothing unsynced: everything written is already durable.
        let mut progress = shared.progress.lock();
        progress.durable_next = progress.written_next;
        shared.progress_changed.notify_all();
    }
    Ok(())
}

/// After a failed fdatasync the kernel may have dropped the dirty pages
/// while the page cache still shows them, so a later open in the same boot
/// would see (and build on) bytes that can never become durable. Record the
/// last truly synced point in the failed-sync marker (best effort: the disk
/// may be failing), so the next open discards everything after it.
fn fsync_failed(shared: &Shared, writer: &LogWriter, error: std::io::Error) -> Error {
    let point = SyncPoint {
        database_id: shared.database_id,
        generation: 0,
        segment_number: writer.segment_number,
        synced_len: writer.synced_len,
    };
    let path = shared.dir.join(strata_format::wal::FAILED_SYNC_FILE_NAME);
    let fs = &*shared.fs;
    let _ = fs
        .open(&path, OpenMode::CreateNew)
        .or_else(|_| fs.open(&path, OpenMode::ReadWrite))
        .and_then(|file| {
            file.set_len(0)?;
            file.write_all_at(&point.encode(), 0)?;
            file.sync_data()
        })
        .and_then(|()| fs.sync_dir(&shared.dir));
    Error::io("fdatasync", &writer.path, error)
}

/// Seals the active segment (trimmed to its records and synced in full)
/// and starts the next one, whose first sequence number is `first_seq`.
fn rotate(shared: &Shared, writer: &mut LogWriter, first_seq: u64) -> Result<()> {
    // Trim the allocated space after the records, so a sealed segment ends
    // at its last record (recovery treats a sealed segment as synced in
    // full, zeros included); the mapping goes first.
    writer.map = None;
    writer
        .file
        .set_len(writer.written_len)
        .map_err(|e| Error::io("trim", &writer.path, e))?;
    writer
        .file
        .sync_data()
        .map_err(|e| fsync_failed(shared, writer, e))?;
    shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
    writer.synced_len = writer.written_len;
    let number = writer.segment_number + 1;
    let (path, segment) = create_segment(
        shared.fs.as_ref(),
        &shared.dir,
        shared.database_id,
        number,
        first_seq,
        shared.options.segment_bytes_max,
    )?;
    shared
        .counters
        .segments_created
        .fetch_add(1, Ordering::Relaxed);
    let old_len = writer.written_len;
    writer.segment_number = number;
    writer.path = path;
    writer.file = segment.file;
    writer.map = segment.map;
    writer.written_len = SEGMENT_HEADER_LEN as u64;
    writer.synced_len = SEGMENT_HEADER_LEN as u64;
    writer.has_records = false;
    let mut progress = shared.progress.lock();
    // Everything written so far is durable now.
    progress.durable_next = progress.written_next;
    if let Some(active) = progress.segments.last_mut() {
        active.len = old_len;
        active.sealed = true;
    }
    progress.segments.push(SegmentState {
        number,
        first_seq,
        len: SEGMENT_HEADER_LEN as u64,
        sealed: false,
    });
    shared.progress_changed.notify_all();
    Ok(())
}

/// A new segment: its file, and a writer into its allocated space if the
/// file system offers one.
pub(super) struct Segment {
    pub(super) file: Arc<dyn File>,
    pub(super) map: Option<Box<dyn MapWriter>>,
}

/// Creates segment `number` durably, with `allocate_bytes` of space
/// reserved after its header (zeros, which recovery reads as the end of
/// the records): header written, space allocated, both synced, directory
/// entry synced. In an allocated segment an fdatasync after a write
/// changes no file size; and where the file system maps it, a write is a
/// copy into the page cache, not a system call.
pub(super) fn create_segment(
    fs: &dyn crate::env::FileSystem,
    dir: &std::path::Path,
    database_id: u128,
    number: u64,
    first_seq: u64,
    allocate_bytes: u64,
) -> Result<(PathBuf, Segment)> {
    let path = dir.join(strata_format::wal::segment_file_name(number));
    let file = fs
        .open(&path, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", &path, e))?;
    let header = SegmentHeader {
        database_id,
        segment_number: number,
        first_seq,
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| Error::io("write header", &path, e))?;
    let len = SEGMENT_HEADER_LEN as u64 + allocate_bytes;
    file.allocate(len)
        .map_err(|e| Error::io("allocate", &path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    let map = file
        .map_writer(len)
        .map_err(|e| Error::io("map", &path, e))?;
    Ok((path, Segment { file, map }))
}

/// Trims the active segment's allocated space after its records (for a
/// clean close: the next open then finds a segment that ends at its last
/// record). Best effort: a failure leaves zeros, which recovery cuts.
pub(super) fn trim(shared: &Shared) {
    let mut queue = shared.queue.lock();
    if queue.poisoned.is_some() {
        return;
    }
    if let Some(writer) = queue.writer.as_mut() {
        writer.map = None;
        let trimmed = writer
            .file
            .set_len(writer.written_len)
            .and_then(|()| writer.file.sync_data());
        if trimmed.is_ok() {
            writer.synced_len = writer.written_len;
        }
    }
}

/// Marks the log closed: queued and later writers get [`Error::Closed`],
/// readers are woken to see the end.
pub(super) fn close(shared: &Shared) {
    let mut queue = shared.queue.lock();
    queue.closed = true;
    drop(queue);
    let mut progress = shared.progress.lock();
    progress.closed = true;
    shared.progress_changed.notify_all();
}

/// Starts the thread that syncs the log every `interval`. It holds only a
/// weak reference and stops when the log is shut down.
pub(super) fn spawn_background_sync(
    shared: Arc<Shared>,
    interval: Duration,
) -> Result<JoinHandle<()>> {
    let weak = Arc::downgrade(&shared);
    drop(shared);
    std::thread::Builder::new()
        .name("strata-wal-sync".into())
        .spawn(move || {
            loop {
                let Some(shared) = weak.upgrade() else { return };
                {
                    let mut state = shared.background.lock();
                    if state.stop {
                        return;
                    }
                    shared.background_wake.wait_for(&mut state, interval);
                    if state.stop {
                        return;
                    }
                }
                let needs_sync = {
                    let progress = shared.progress.lock();
                    progress.durable_next < progress.written_next && progress.poisoned.is_none()
                };
                if needs_sync {
                    let waiter = Arc::new(Waiter::new(Vec::new(), 0, true));
                    // A failure poisons the log; writers see it on their next
                    // append, so there is nothing more to do here.
                    let _ = commit(&shared, waiter);
                }
            }
        })
        .map_err(|e| Error::io("spawn background sync thread", PathBuf::new(), e))
}
