//! Per-range figures: what [`crate::Db::ranges`] reports, and the counters
//! the read and write paths keep for it.
//!
//! The router pairs the current range map with one counter block per
//! range. Writes and point reads find their range by binary search over the
//! starts (skipped with one range) and bump relaxed atomics; a sampler on
//! the compaction thread turns the totals into per-second rates about once
//! a second. Counters follow ids: a split's halves start from the parent's
//! last sequence number, a merge's range from the larger of its two.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::map::{RangeId, RangeMap};
use crate::seqno::SeqNo;

/// Figures about one key range, from [`crate::Db::ranges`].
///
/// # Examples
///
/// ```
/// # use strata::{Db, MemFileSystem, Options};
/// # use std::sync::Arc;
/// # let db = Db::open("d", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
/// db.put(b"k", b"v")?;
/// let all = db.ranges();
/// assert_eq!(all.len(), 1);
/// assert_eq!(all[0].start, b"");
/// assert_eq!(all[0].end, None);
/// assert_eq!(all[0].writes, 1);
/// # Ok::<(), strata::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RangeInfo {
    /// The range's id.
    pub id: RangeId,
    /// The first key of the range.
    pub start: Vec<u8>,
    /// The first key after the range (`None`: unbounded).
    pub end: Option<Vec<u8>>,
    /// Why the range exists: initial, or which split or merge made it and
    /// why.
    pub origin: String,
    /// Bytes of the range's sorted tables.
    pub table_bytes: u64,
    /// Tables per level.
    pub level_tables: Vec<u64>,
    /// Entries in the range's tables (versions and tombstones included)
    /// plus its entries in memtables: an upper bound on its keys.
    pub approximate_keys: u64,
    /// Operations written to the range since the database was opened.
    pub writes: u64,
    /// Bytes written to the range (keys and values) since open.
    pub write_bytes: u64,
    /// Point reads and scans started in the range since open.
    pub reads: u64,
    /// Operations per second written, over the last sampling interval.
    pub writes_per_sec: f64,
    /// Bytes per second written, over the last sampling interval.
    pub write_bytes_per_sec: f64,
    /// Reads per second, over the last sampling interval.
    pub reads_per_sec: f64,
    /// Bytes of the range's levels over their targets.
    pub pending_compaction_bytes: u64,
    /// The sequence number of the last write applied to the range (0 if
    /// none since the database was created or opened).
    pub last_applied_seq: SeqNo,
}

/// One range's counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) writes: AtomicU64,
    pub(crate) write_bytes: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) last_seq: AtomicU64,
}

/// The range map and each range's counters, by index.
#[derive(Debug)]
pub(crate) struct Router {
    pub(crate) map: Arc<RangeMap>,
    pub(crate) counters: Vec<Arc<Counters>>,
}

impl Router {
    pub(crate) fn new(map: Arc<RangeMap>) -> Self {
        let counters = (0..map.len()).map(|_| Arc::default()).collect();
        Self { map, counters }
    }

    /// The router for `map`, keeping the counters of ranges that survive
    /// and seeding new ranges' last sequence number from the ranges they
    /// replace.
    pub(crate) fn remap(&self, map: Arc<RangeMap>) -> Self {
        let by_id: HashMap<RangeId, &Arc<Counters>> = self
            .map
            .ranges()
            .iter()
            .zip(&self.counters)
            .map(|(r, c)| (r.id, c))
            .collect();
        let counters = map
            .ranges()
            .iter()
            .map(|range| {
                if let Some(kept) = by_id.get(&range.id) {
                    return Arc::clone(kept);
                }
                let fresh = Counters::default();
                let inherited = self
                    .map
                    .ranges()
                    .iter()
                    .zip(&self.counters)
                    .filter(|(old, _)| {
                        range
                            .end
                            .as_deref()
                            .is_none_or(|end| old.start.as_slice() < end)
                            && old
                                .end
                                .as_deref()
                                .is_none_or(|end| end > range.start.as_slice())
                    })
                    .map(|(_, c)| c.last_seq.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0);
                fresh.last_seq.store(inherited, Ordering::Relaxed);
                Arc::new(fresh)
            })
            .collect();
        Self { map, counters }
    }

    /// The counters of the range holding `key`.
    pub(crate) fn counters_for(&self, key: &[u8]) -> Option<&Arc<Counters>> {
        let index = if self.counters.len() == 1 {
            0
        } else {
            self.map.index_of(key)
        };
        self.counters.get(index)
    }
}

/// Per-second rates from the counters' totals, sampled about once a second.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    inner: Mutex<RatesInner>,
}

#[derive(Debug, Default)]
struct RatesInner {
    last: Option<Instant>,
    /// Per range: totals at the last sample, and rates since the one before.
    ranges: HashMap<RangeId, Sample>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sample {
    writes: u64,
    write_bytes: u64,
    reads: u64,
    pub(crate) writes_per_sec: f64,
    pub(crate) write_bytes_per_sec: f64,
    pub(crate) reads_per_sec: f64,
    /// Since when the write rate has been over the split threshold.
    pub(crate) hot_since: Option<Instant>,
}

impl Rates {
    /// Takes a sample if a second has passed since the last one; returns
    /// the ids whose write rate has stayed above `hot_writes_per_sec` (if
    /// non-zero) for `window`.
    pub(crate) fn sample(
        &self,
        router: &Router,
        hot_writes_per_sec: u64,
        window: Duration,
    ) -> Vec<RangeId> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let elapsed = match inner.last {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => return Vec::new(),
            Some(last) => now.duration_since(last).as_secs_f64(),
            None => {
                inner.last = Some(now);
                0.0
            }
        };
        inner.last = Some(now);
        let mut hot = Vec::new();
        let mut next = HashMap::new();
        for (range, counters) in router.map.ranges().iter().zip(&router.counters) {
            let prev = inner.ranges.get(&range.id).copied().unwrap_or_default();
            let writes = counters.writes.load(Ordering::Relaxed);
            let write_bytes = counters.write_bytes.load(Ordering::Relaxed);
            let reads = counters.reads.load(Ordering::Relaxed);
            let rate = |now: u64, then: u64| {
                if elapsed > 0.0 {
                    now.saturating_sub(then) as f64 / elapsed
                } else {
                    0.0
                }
            };
            let mut sample = Sample {
                writes,
                write_bytes,
                reads,
                writes_per_sec: rate(writes, prev.writes),
                write_bytes_per_sec: rate(write_bytes, prev.write_bytes),
                reads_per_sec: rate(reads, prev.reads),
                hot_since: None,
            };
            if hot_writes_per_sec > 0 && sample.writes_per_sec > hot_writes_per_sec as f64 {
                let since = prev.hot_since.unwrap_or(now);
                sample.hot_since = Some(since);
                if now.duration_since(since) >= window {
                    hot.push(range.id);
                }
            }
            next.insert(range.id, sample);
        }
        inner.ranges = next;
        hot
    }

    /// The last rates of range `id`.
    pub(crate) fn of(&self, id: RangeId) -> Sample {
        self.inner
            .lock()
            .ranges
            .get(&id)
            .copied()
            .unwrap_or_default()
    }
}
