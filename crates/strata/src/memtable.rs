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
use strata_format::wal::{BatchOp, BatchView};

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
}

impl Memtable {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Inserts every operation of a batch (operation `i` at `first_seq + i`).
    pub(crate) fn apply(&self, batch: &BatchView<'_>) {
        self.max_seq.fetch_max(batch.last_seq(), Ordering::Relaxed);
        for (seq, op) in (batch.first_seq..).zip(batch.ops()) {
            let (key, value) = match op {
                BatchOp::Put { key, value } => (key, MemValue::Put(value.to_vec())),
                BatchOp::Delete { key } => (key, MemValue::Delete),
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

    /// The newest version of `key` at or below `seq`: `Some(Some(value))`,
    /// `Some(None)` for a tombstone, `None` if this memtable has no version.
    pub(crate) fn get(&self, key: &[u8], seq: u64) -> Option<Option<Vec<u8>>> {
        let probe = MemKey {
            user_key: key.to_vec(),
            seq: Reverse(seq),
        };
        let entry = self.map.lower_bound(Bound::Included(&probe))?;
        if entry.key().user_key != key {
            return None;
        }
        Some(match entry.value() {
            MemValue::Put(value) => Some(value.clone()),
            MemValue::Delete => None,
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

    pub(crate) fn approximate_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
