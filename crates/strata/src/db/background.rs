//! Background work: the flush thread, the compaction threads, and the
//! write throttle that keeps writers from outrunning them.
//!
//! A flush thread and `compaction_threads` compaction threads, so a long
//! compaction never delays a flush. Compaction is picked per key range
//! (each range's tables scored on their own, the most urgent range first)
//! and a range runs at most one compaction at a time, so compactions of
//! different ranges run in parallel. All threads wait on one condition
//! variable (`Inner::work_changed`), which every freeze, flush, compaction
//! and shutdown signals. Between jobs, compaction threads sample per-range
//! write rates and split ranges over the size or rate thresholds.
//!
//! Flushes and compactions hold the layout lock shared from picking their
//! inputs to installing their outputs; a split or merge holds it
//! exclusively, so no job installs a table cut by an older range map.
//!
//! Write stalls degrade gradually, and only for writers to the ranges that
//! are behind (level-0 counts and pending compaction bytes are per range;
//! the memtable limit is shared): past `level0_slowdown_writes` each write
//! sleeps a little, longer the further past it; past `level0_stop_writes`,
//! or with every frozen memtable slot taken and the active one full, writes
//! wait for the background threads. Pending compaction bytes (bytes over
//! the level targets) slow writes past 8x and stop them past 32x the level-1
//! target. Every stall is counted by reason with its duration.
//!
//! A failed flush or compaction is recorded as the background error: the
//! threads stop, and every later write fails with [`Error::Poisoned`]
//! carrying it. Reopening recovers from the log and the manifest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Inner;
use crate::compaction::pick::{Choice, Policy, level_target_bytes, pick, removable_tombstones};
use crate::compaction::worker::{self, Context};
use crate::error::{Error, Result};
use crate::memtable::Memtable;
use crate::ranges::map::RangeId;
use crate::seqno::SeqNo;
use crate::version::{LEVEL_COUNT, Version};

/// Shared background state, guarded by `Inner::work`.
#[derive(Debug, Default)]
pub(crate) struct Work {
    pub(crate) stop: bool,
    /// Bumped whenever new work may exist.
    pub(crate) generation: u64,
    /// The first background failure.
    pub(crate) error: Option<Arc<str>>,
    /// The ranges with a compaction running.
    pub(crate) busy: HashSet<RangeId>,
    /// Per range and level, the largest user key compacted last
    /// (round-robin).
    pub(crate) cursors: HashMap<RangeId, Vec<Option<Vec<u8>>>>,
}

/// Why a write waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StallReason {
    MemtableLimit = 0,
    Level0Slowdown = 1,
    Level0Stop = 2,
    PendingCompaction = 3,
    LogReplayLimit = 4,
}

impl StallReason {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::MemtableLimit => "memtable_limit",
            Self::Level0Slowdown => "level0_slowdown",
            Self::Level0Stop => "level0_stop",
            Self::PendingCompaction => "pending_compaction",
            Self::LogReplayLimit => "log_replay_limit",
        }
    }

    const ALL: [StallReason; 5] = [
        Self::MemtableLimit,
        Self::Level0Slowdown,
        Self::Level0Stop,
        Self::PendingCompaction,
        Self::LogReplayLimit,
    ];
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) flushes: AtomicU64,
    pub(crate) flush_bytes_written: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) compaction_bytes_read: AtomicU64,
    pub(crate) compaction_bytes_written: AtomicU64,
    pub(crate) splits: AtomicU64,
    pub(crate) split_bytes_written: AtomicU64,
    pub(crate) range_change_wait_micros: AtomicU64,
    pub(crate) merges: AtomicU64,
    stall_counts: [AtomicU64; 5],
    stall_micros: [AtomicU64; 5],
}

impl Counters {
    fn stall(&self, reason: StallReason, waited: Duration) {
        let index = reason as usize;
        if let (Some(count), Some(micros)) =
            (self.stall_counts.get(index), self.stall_micros.get(index))
        {
            count.fetch_add(1, Ordering::Relaxed);
            micros.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn stalls(&self) -> (BTreeMap<&'static str, u64>, BTreeMap<&'static str, u64>) {
        let mut counts = BTreeMap::new();
        let mut micros = BTreeMap::new();
        for reason in StallReason::ALL {
            let index = reason as usize;
            counts.insert(
                reason.name(),
                self.stall_counts
                    .get(index)
                    .map_or(0, |c| c.load(Ordering::Relaxed)),
            );
            micros.insert(
                reason.name(),
                self.stall_micros
                    .get(index)
                    .map_or(0, |c| c.load(Ordering::Relaxed)),
            );
        }
        (counts, micros)
    }
}

pub(crate) fn policy(inner: &Inner) -> Policy {
    Policy {
        level0_compaction_trigger: inner.options.level0_compaction_trigger,
        level1_bytes_max: inner.options.level1_bytes_max,
        level_size_multiplier: inner.options.level_size_multiplier,
    }
}

/// Starts the flush and compaction threads.
pub(crate) fn start(inner: &Arc<Inner>) -> Result<Vec<JoinHandle<()>>> {
    let spawn = |name: &str, body: fn(&Inner)| {
        let inner = Arc::clone(inner);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&inner))
            .map_err(|e| Error::io("spawn background thread", std::path::PathBuf::from(name), e))
    };
    let mut threads = vec![spawn("strata-flush", flush_loop)?];
    for _ in 0..inner.options.compaction_threads {
        threads.push(spawn("strata-compact", compaction_loop)?);
    }
    Ok(threads)
}

fn fail(inner: &Inner, error: &Error) {
    let mut work = inner.work.lock();
    if work.error.is_none() {
        work.error = Some(Arc::from(format!("background work failed: {error}")));
    }
    // Under the work lock, as `refresh_stall_hint` stores: a refresh that
    // read no error cannot clear the hint after this sets it.
    inner.stall_hint.store(true, Ordering::Release);
    inner.work_changed.notify_all();
}

fn flush_loop(inner: &Inner) {
    loop {
        let memtable = {
            let mut work = inner.work.lock();
            loop {
                if work.stop || work.error.is_some() {
                    return;
                }
                if let Some(oldest) = inner.mem.read().frozen.front().cloned() {
                    break oldest;
                }
                inner.work_changed.wait(&mut work);
            }
        };
        if let Err(error) = flush_one(inner, &memtable) {
            fail(inner, &error);
            return;
        }
        refresh_stall_hint(inner);
        let mut work = inner.work.lock();
        work.generation += 1;
        inner.work_changed.notify_all();
    }
}

pub(crate) fn context<'a>(inner: &'a Inner, new_file_number: &'a dyn Fn() -> u64) -> Context<'a> {
    Context {
        fs: &*inner.fs,
        dir: &inner.dir,
        options: &inner.options,
        tables: &inner.tables,
        new_file_number,
    }
}

fn flush_one(inner: &Inner, memtable: &Arc<Memtable>) -> Result<()> {
    let new_number = || inner.versions.lock().new_file_number();
    let ctx = context(inner, &new_number);
    let layout = inner.layout.read();
    let version = Arc::clone(&inner.current.read());
    if let Some((edit, bytes)) = worker::flush(&ctx, memtable, &version)? {
        // Install under the version-set lock, so versions are published in
        // the order they were logged (flush and compaction race here).
        let mut versions = inner.versions.lock();
        *inner.current.write() = versions.log_and_apply(edit)?;
        inner.publish_view();
        drop(versions);
        drop(layout);
        inner.counters.flushes.fetch_add(1, Ordering::Relaxed);
        inner
            .counters
            .flush_bytes_written
            .fetch_add(bytes.written, Ordering::Relaxed);
    }
    {
        let mut mem = inner.mem.write();
        if mem.frozen.front().is_some_and(|m| Arc::ptr_eq(m, memtable)) {
            mem.frozen.pop_front();
        }
    }
    inner.publish_view();
    let flushed = inner.versions.lock().flushed_seq();
    inner.flushed.store(flushed, Ordering::Relaxed);
    inner.wal.release_below(SeqNo(flushed + 1))?;
    remove_settled_tombstones(inner)?;
    delete_obsolete(inner)
}

/// Removes the range tombstones that hide nothing any more (by an edit of
/// their own).
fn remove_settled_tombstones(inner: &Inner) -> Result<()> {
    let mut versions = inner.versions.lock();
    let current = versions.current();
    if current.tombstones.is_empty() {
        return Ok(());
    }
    let removable = removable_tombstones(&current);
    if removable.is_empty() {
        return Ok(());
    }
    let edit = strata_format::manifest::VersionEdit {
        removed_tombstones: removable,
        ..Default::default()
    };
    *inner.current.write() = versions.log_and_apply(edit)?;
    inner.publish_view();
    Ok(())
}

pub(crate) fn delete_obsolete(inner: &Inner) -> Result<()> {
    let mut versions = inner.versions.lock();
    versions.delete_obsolete()?;
    let current = versions.current();
    drop(versions);
    inner.tables.retain(|number| current.contains(number));
    Ok(())
}

/// The most urgent compaction over all ranges not already compacting:
/// the range whose levels score highest, then any range with tombstone or
/// garbage work.
fn pick_any(inner: &Inner, version: &Version, work: &Work) -> Option<(RangeId, Choice)> {
    let policy = policy(inner);
    let oldest = inner.oldest_snapshot();
    let mut best: Option<(f64, RangeId, Choice)> = None;
    for (range, own) in version.ranges.ranges().iter().zip(version.split_by_range()) {
        if work.busy.contains(&range.id) {
            continue;
        }
        let cursors = work.cursors.get(&range.id).map_or(&[][..], Vec::as_slice);
        let Some(choice) = pick(&own, &policy, cursors, oldest) else {
            continue;
        };
        let urgency = crate::compaction::pick::scores(&own, &policy)
            .into_iter()
            .map(|(_, score)| score)
            .fold(0.0, f64::max);
        if best.as_ref().is_none_or(|(u, _, _)| urgency > *u) {
            best = Some((urgency, range.id, choice));
        }
    }
    best.map(|(_, id, choice)| (id, choice))
}

fn compaction_loop(inner: &Inner) {
    loop {
        let layout = inner.layout.read();
        let mut work = inner.work.lock();
        if work.stop || work.error.is_some() {
            return;
        }
        let version = Arc::clone(&inner.current.read());
        let Some((range, choice)) = pick_any(inner, &version, &work) else {
            drop(version);
            drop(layout);
            // Also wake now and then: garbage becomes collectible when a
            // snapshot is released, and rates need sampling, without other
            // work to signal.
            inner
                .work_changed
                .wait_for(&mut work, Duration::from_secs(1));
            drop(work);
            if let Err(error) = inner.auto_split() {
                fail(inner, &error);
                return;
            }
            continue;
        };
        work.busy.insert(range);
        drop(work);
        let result = (|| {
            let new_number = || inner.versions.lock().new_file_number();
            let ctx = context(inner, &new_number);
            let (edit, bytes) = worker::compact(&ctx, &version, &choice, inner.oldest_snapshot())?;
            let mut versions = inner.versions.lock();
            *inner.current.write() = versions.log_and_apply(edit)?;
            inner.publish_view();
            drop(versions);
            inner.counters.compactions.fetch_add(1, Ordering::Relaxed);
            inner
                .counters
                .compaction_bytes_read
                .fetch_add(bytes.read, Ordering::Relaxed);
            inner
                .counters
                .compaction_bytes_written
                .fetch_add(bytes.written, Ordering::Relaxed);
            Ok(())
        })();
        drop(layout);
        // Let go of the inputs before deleting what no version holds, so
        // this compaction's inputs go now, not after the next job.
        let level = choice.level;
        let largest = choice
            .inputs
            .iter()
            .map(|t| t.largest_user_key().to_vec())
            .max();
        drop(choice);
        drop(version);
        let result = result
            .and_then(|()| remove_settled_tombstones(inner))
            .and_then(|()| delete_obsolete(inner))
            .and_then(|()| inner.auto_split());
        refresh_stall_hint(inner);
        let mut work = inner.work.lock();
        work.busy.remove(&range);
        if let Err(error) = result {
            drop(work);
            fail(inner, &error);
            return;
        }
        let cursors = work.cursors.entry(range).or_default();
        if cursors.len() < LEVEL_COUNT {
            cursors.resize(LEVEL_COUNT, None);
        }
        if let Some(cursor) = cursors.get_mut(level) {
            *cursor = largest;
        }
        work.generation += 1;
        inner.work_changed.notify_all();
    }
}

fn poisoned(work: &Work) -> Option<Error> {
    work.error.as_ref().map(|reason| Error::Poisoned {
        reason: Arc::clone(reason),
    })
}

/// Per range: level-0 tables and bytes per level.
fn range_shapes(version: &Version) -> Vec<(usize, [u64; LEVEL_COUNT])> {
    let mut shapes = vec![(0usize, [0u64; LEVEL_COUNT]); version.ranges.len()];
    let single = shapes.len() == 1;
    for (level, tables) in version.levels.iter().enumerate() {
        for table in tables {
            let index = if single {
                0
            } else {
                version.ranges.index_of(table.smallest_user_key())
            };
            if let Some((level0, bytes)) = shapes.get_mut(index) {
                if level == 0 {
                    *level0 += 1;
                }
                if let Some(b) = bytes.get_mut(level) {
                    *b += table.size;
                }
            }
        }
    }
    shapes
}

/// The most level-0 tables, and the most bytes over the level targets, of
/// any range `touched` accepts (by index in the version's map).
fn backlog(inner: &Inner, touched: &dyn Fn(usize) -> bool) -> (usize, u64) {
    let version = Arc::clone(&inner.current.read());
    let policy = policy(inner);
    let mut level0 = 0;
    let mut pending = 0;
    for (index, (tables, bytes)) in range_shapes(&version).into_iter().enumerate() {
        if !touched(index) {
            continue;
        }
        level0 = level0.max(tables);
        pending = pending.max(
            (1..LEVEL_COUNT)
                .map(|level| {
                    bytes
                        .get(level)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(level_target_bytes(&policy, level))
                })
                .sum::<u64>(),
        );
    }
    (level0, pending)
}

/// The indexes (in the current map) of the ranges a batch writes to.
fn ranges_of_batch(inner: &Inner, batch: &[u8]) -> Vec<usize> {
    let Ok(view) = strata_format::wal::decode_batch(batch) else {
        return Vec::new();
    };
    let map = Arc::clone(&inner.current.read().ranges);
    let mut touched: Vec<usize> = Vec::new();
    for op in view.ops() {
        if matches!(op, strata_format::wal::BatchOp::Skip) {
            continue;
        }
        let first = map.index_of(op.key());
        let last = match op {
            strata_format::wal::BatchOp::DeleteRange { end, .. } => map.index_of(end),
            _ => first,
        };
        touched.extend(first..=last);
    }
    touched.sort_unstable();
    touched.dedup();
    touched
}

/// Recomputes whether writers may have to wait (cheaply checked by every
/// write); called after every change to the memtables or the version.
pub(crate) fn refresh_stall_hint(inner: &Inner) {
    let options = &inner.options;
    let frozen = inner.mem.read().frozen.len();
    let (level0, pending) = backlog(inner, &|_| true);
    let behind = frozen >= options.immutable_memtables_max
        || level0 >= options.level0_slowdown_writes
        || pending >= options.level1_bytes_max.saturating_mul(8);
    // Read the error and store the hint under one hold of the work lock, so
    // this never overwrites the hint `fail` set with a stale `false`.
    let work = inner.work.lock();
    inner
        .stall_hint
        .store(behind || work.error.is_some(), Ordering::Release);
}

/// Delays or stops a writer while flushes or compactions are behind: the
/// memtable limit for every writer (memtables are shared), level-0 and
/// compaction backlogs only for writers to the ranges that have them, so
/// one range's backlog never slows writes to the others. `batch` is the
/// encoded batch.
pub(crate) fn throttle(inner: &Inner, batch: &[u8]) -> Result<()> {
    if !inner.stall_hint.load(Ordering::Acquire) {
        return Ok(());
    }
    let options = &inner.options;
    let stop_wait = Duration::from_millis(100);
    loop {
        // Again each time round: a split or merge may renumber the ranges.
        let touched = ranges_of_batch(inner, batch);
        let (frozen, active_full) = {
            let mem = inner.mem.read();
            (
                mem.frozen.len(),
                mem.active.approximate_bytes() >= options.memtable_bytes_max,
            )
        };
        let (level0, pending) = backlog(inner, &|index| touched.binary_search(&index).is_ok());
        let stop = if frozen >= options.immutable_memtables_max && active_full {
            Some(StallReason::MemtableLimit)
        } else if level0 >= options.level0_stop_writes {
            Some(StallReason::Level0Stop)
        } else if pending >= options.level1_bytes_max.saturating_mul(32) {
            Some(StallReason::PendingCompaction)
        } else {
            None
        };
        let mut work = inner.work.lock();
        if let Some(error) = poisoned(&work) {
            return Err(error);
        }
        if work.stop {
            return Err(Error::Closed);
        }
        if let Some(reason) = stop {
            let started = Instant::now();
            inner.work_changed.wait_for(&mut work, stop_wait);
            inner.counters.stall(reason, started.elapsed());
            continue;
        }
        drop(work);
        let slowdown = if level0 >= options.level0_slowdown_writes {
            Some((
                StallReason::Level0Slowdown,
                (level0 - options.level0_slowdown_writes + 1) as u64,
            ))
        } else if pending >= options.level1_bytes_max.saturating_mul(8) {
            Some((StallReason::PendingCompaction, 1))
        } else {
            None
        };
        if let Some((reason, steps)) = slowdown {
            let delay = Duration::from_micros(250 * steps.min(40));
            std::thread::sleep(delay);
            inner.counters.stall(reason, delay);
        }
        return Ok(());
    }
}

/// Makes a writer wait (up to a second) for the pending flushes, counted
/// as a `log_replay_limit` stall.
pub(crate) fn wait_for_flush_stall(inner: &Inner) {
    let started = Instant::now();
    let mut work = inner.work.lock();
    while !inner.mem.read().frozen.is_empty()
        && work.error.is_none()
        && !work.stop
        && started.elapsed() < Duration::from_secs(1)
    {
        inner
            .work_changed
            .wait_for(&mut work, Duration::from_millis(50));
    }
    drop(work);
    inner
        .counters
        .stall(StallReason::LogReplayLimit, started.elapsed());
}

/// Waits until every frozen memtable is flushed.
pub(crate) fn wait_flushed(inner: &Inner) -> Result<()> {
    let mut work = inner.work.lock();
    loop {
        if let Some(error) = poisoned(&work) {
            return Err(error);
        }
        if inner.mem.read().frozen.is_empty() {
            return Ok(());
        }
        if work.stop {
            return Err(Error::Closed);
        }
        inner
            .work_changed
            .wait_for(&mut work, Duration::from_millis(100));
    }
}

/// Waits until nothing is frozen and no compaction is due or running.
pub(crate) fn wait_idle(inner: &Inner) -> Result<()> {
    let mut work = inner.work.lock();
    loop {
        if let Some(error) = poisoned(&work) {
            return Err(error);
        }
        let version = Arc::clone(&inner.current.read());
        let due = pick_any(inner, &version, &work).is_some();
        if work.busy.is_empty() && !due && inner.mem.read().frozen.is_empty() {
            return Ok(());
        }
        if work.stop {
            return Err(Error::Closed);
        }
        inner
            .work_changed
            .wait_for(&mut work, Duration::from_millis(100));
    }
}
