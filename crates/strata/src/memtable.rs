//! The memtable: recent writes, sorted, in memory.
//!
//! A concurrent skip list (`crossbeam-skiplist`) keyed by (user key,
//! sequence number descending), so the newest version of a key comes first
//! and a lookup at sequence `s` is one seek. Writers insert concurrently
//! without a lock; readers never block writers.
//!
//! Invariants:
//! - Every (user key, sequence number) pair is inserted at most once
//!   (sequence numbers are unique per operation).
//! - `approximate_bytes` only grows.

use std::cmp::Reverse;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_skiplist::SkipMap;
use parking_lot::RwLock;
use strata_format::manifest::TombstoneEntry;
use strata_format::wal::{BatchOp, BatchView};

use crate::ranges::tombstones;

/// The key of a memtable entry: user key ascending, then newest first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct MemKey {
    pub(crate) user_key: Vec<u8>,
    pub(crate) seq: Reverse<u64>,
}

/// A memtable entry's value: a value or a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MemValue {
    Put(Vec<u8>),
    Delete,
}

/// One version of a key, as iterators yield it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) user_key: Vec<u8>,
    pub(crate) seq: u64,
    pub(crate) value: MemValue,
}

/// Per-entry overhead counted on top of key and value bytes (skip-list
/// node, vectors, reference counts): an estimate, for flush decisions.
const ENTRY_OVERHEAD_BYTES: usize = 96;

#[derive(Debug, Default)]
pub(crate) struct Memtable {
    map: SkipMap<MemKey, MemValue>,
    bytes: AtomicUsize,
    /// The largest sequence number inserted (0 if none).
    max_seq: AtomicU64,
    /// Range deletions, sorted by start (usually none).
    tombstones: RwLock<Vec<TombstoneEntry>>,
    /// Whether `tombstones` is non-empty (read without the lock).
    has_tombstones: std::sync::atomic::AtomicBool,
}

impl Memtable {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Inserts every operation of a batch (operation `i` at `first_seq + i`),
    /// skipping puts and deletes of keys `retain` does not hold (their
    /// sequence numbers stay used).
    pub(crate) fn apply_retained(
        &self,
        batch: &BatchView<'_>,
        retain: &crate::ranges::retain::Retain,
    ) {
        self.max_seq.fetch_max(batch.last_seq(), Ordering::Relaxed);
        for (seq, op) in (batch.first_seq..).zip(batch.ops()) {
            if matches!(op, BatchOp::Skip) {
                continue;
            }
            if !retain.is_everything()
                && !matches!(op, BatchOp::DeleteRange { .. })
                && !retain.contains(op.key())
            {
                continue;
            }
            let (key, value) = match op {
                BatchOp::Put { key, value } => (key, MemValue::Put(value.to_vec())),
                BatchOp::Delete { key } => (key, MemValue::Delete),
                BatchOp::Skip => continue,
                BatchOp::DeleteRange { start, end } => {
                    self.bytes.fetch_add(
                        start.len() + end.len() + ENTRY_OVERHEAD_BYTES,
                        Ordering::Relaxed,
                    );
                    let mut list = self.tombstones.write();
                    list.push(TombstoneEntry {
                        start: start.to_vec(),
                        end: end.to_vec(),
                        seq,
                    });
                    tombstones::sort(&mut list);
                    self.has_tombstones.store(true, Ordering::Release);
                    continue;
                }
            };
            let value_len = match &value {
                MemValue::Put(v) => v.len(),
                MemValue::Delete => 0,
            };
            self.bytes.fetch_add(
                key.len() + value_len + ENTRY_OVERHEAD_BYTES,
                Ordering::Relaxed,
            );
            self.map.insert(
                MemKey {
                    user_key: key.to_vec(),
                    seq: Reverse(seq),
                },
                value,
            );
        }
    }

    /// The newest range tombstone here, visible at `read_seq`, that covers
    /// `key` (0 if none).
    pub(crate) fn tombstone_cover(&self, key: &[u8], read_seq: u64) -> u64 {
        if !self.has_tombstones.load(Ordering::Acquire) {
            return 0;
        }
        tombstones::cover(&self.tombstones.read(), key, read_seq)
    }

    /// The range tombstones, sorted by start.
    pub(crate) fn tombstones(&self) -> Vec<TombstoneEntry> {
        if !self.has_tombstones.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.tombstones.read().clone()
    }

    /// Whether the memtable holds nothing at all (no entry, no tombstone).
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty() && !self.has_tombstones.load(Ordering::Acquire)
    }

    /// The newest version of `key` at or below `seq`, with its sequence
    /// number: `Some((seq, Some(value)))`, `Some((seq, None))` for a
    /// tombstone, `None` if this memtable has no version.
    pub(crate) fn get(&self, key: &[u8], seq: u64) -> Option<(u64, Option<Vec<u8>>)> {
        let probe = MemKey {
            user_key: key.to_vec(),
            seq: Reverse(seq),
        };
        let entry = self.map.lower_bound(Bound::Included(&probe))?;
        if entry.key().user_key != key {
            return None;
        }
        let found = entry.key().seq.0;
        Some(match entry.value() {
            MemValue::Put(value) => (found, Some(value.clone())),
            MemValue::Delete => (found, None),
        })
    }

    /// The first entry at or after `key` (forward), or at or before it
    /// (backward), in internal order.
    pub(crate) fn seek(&self, key: Bound<&MemKey>, forward: bool) -> Option<Entry> {
        let entry = if forward {
            self.map.lower_bound(key)?
        } else {
            self.map.upper_bound(key)?
        };
        Some(Entry {
            user_key: entry.key().user_key.clone(),
            seq: entry.key().seq.0,
            value: entry.value().clone(),
        })
    }

    /// The largest sequence number inserted (0 if none).
    pub(crate) fn max_seq(&self) -> u64 {
        self.max_seq.load(Ordering::Relaxed)
    }

    /// Every entry in internal order (user key ascending, newest first).
    pub(crate) fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.map.iter().map(|e| Entry {
            user_key: e.key().user_key.clone(),
            seq: e.key().seq.0,
            value: e.value().clone(),
        })
    }

    /// How many entries have a user key in `[start, end)` (`end` `None`:
    /// unbounded). Walks them: for figures, not for hot paths.
    pub(crate) fn count_in(&self, start: &[u8], end: Option<&[u8]>) -> usize {
        let from = MemKey {
            user_key: start.to_vec(),
            seq: Reverse(u64::MAX),
        };
        self.map
            .range(from..)
            .take_while(|e| end.is_none_or(|end| e.key().user_key.as_slice() < end))
            .count()
    }

    pub(crate) fn approximate_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}
