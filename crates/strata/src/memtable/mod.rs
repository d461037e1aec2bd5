//! The memtable: recent writes, sorted, in memory.
//!
//! Entries live in an arena-backed skip list ([`skiplist`]) as internal
//! keys (user key and trailer, as sorted tables store them) with their
//! values inline, so an insert is one arena allocation and a handful of
//! compare-and-swaps, a lookup allocates nothing, and the memtable's size is
//! the bytes its arena handed out. Writers insert concurrently without a
//! lock; readers never block writers. Range deletions are kept apart, in a
//! small sorted list (usually empty).
//!
//! Invariants:
//! - Every (user key, sequence number) pair is inserted at most once
//!   (sequence numbers are unique per operation).
//! - `approximate_bytes` only grows.

mod arena;
pub(crate) mod cursor;
pub(crate) mod skiplist;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;
use strata_format::key::ValueKind;
use strata_format::manifest::TombstoneEntry;

use crate::merge::EntryRef;
use crate::ranges::tombstones;
use skiplist::SkipList;

pub(crate) use cursor::MemCursor;

/// The trailer of an internal key: `(seq << 8) | kind`.
pub(crate) fn trailer(seq: u64, kind: ValueKind) -> u64 {
    (seq << 8) | u64::from(kind.to_byte())
}

/// The trailer that sorts before every entry of a user key with a sequence
/// number at or below `seq` (a seek target).
pub(crate) fn seek_trailer(seq: u64) -> u64 {
    trailer(seq.min(strata_format::key::MAX_SEQ), ValueKind::FOR_SEEK)
}

/// One put (`Some(value)`) or delete (`None`) of a key at a sequence
/// number, for [`Memtable::insert_many`].
pub(crate) type BatchInsert<'a> = (&'a [u8], u64, Option<&'a [u8]>);

#[derive(Debug)]
pub(crate) struct Memtable {
    list: SkipList,
    /// Bytes held by range deletions (the list counts its own).
    tombstone_bytes: AtomicUsize,
    /// The largest sequence number inserted (0 if none).
    max_seq: AtomicU64,
    /// Range deletions, sorted by start (usually none).
    tombstones: RwLock<Vec<TombstoneEntry>>,
    /// Whether `tombstones` is non-empty (read without the lock).
    has_tombstones: AtomicBool,
}

impl Memtable {
    /// An empty memtable for a database whose memtables hold about
    /// `bytes_max` bytes: its arena grows in chunks of a sixteenth of that
    /// (between 4 KiB and 4 MiB), and its hash index has a bucket for
    /// every 128 bytes (about one per entry of 100-byte values).
    pub(crate) fn new(bytes_max: usize) -> Self {
        Self {
            list: SkipList::new((bytes_max / 16).clamp(4 << 10, 4 << 20), bytes_max / 128),
            tombstone_bytes: AtomicUsize::new(0),
            max_seq: AtomicU64::new(0),
            tombstones: RwLock::new(Vec::new()),
            has_tombstones: AtomicBool::new(false),
        }
    }

    /// Inserts a put of `key` at `seq`.
    pub(crate) fn put(&self, key: &[u8], seq: u64, value: &[u8]) {
        self.list.insert(key, trailer(seq, ValueKind::Put), value);
    }

    /// Inserts a deletion of `key` at `seq`.
    pub(crate) fn delete(&self, key: &[u8], seq: u64) {
        self.list.insert(key, trailer(seq, ValueKind::Delete), &[]);
    }

    /// Inserts puts (`Some(value)`) and deletes (`None`) of a batch at their
    /// sequence numbers, sorted here into internal-key order so each insert
    /// starts from where the previous one went (a large batch's inserts then
    /// stay in cache instead of each searching from the top).
    pub(crate) fn insert_many(&self, ops: &mut [BatchInsert<'_>]) {
        ops.sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
        let mut hint = skiplist::Hint::default();
        for &(key, seq, value) in ops.iter() {
            match value {
                Some(value) => {
                    self.list
                        .insert_sorted(key, trailer(seq, ValueKind::Put), value, &mut hint)
                }
                None => {
                    self.list
                        .insert_sorted(key, trailer(seq, ValueKind::Delete), &[], &mut hint)
                }
            };
        }
    }

    /// Records a range deletion of `[start, end)` at `seq`.
    pub(crate) fn delete_range(&self, start: &[u8], end: &[u8], seq: u64) {
        self.tombstone_bytes.fetch_add(
            start.len() + end.len() + std::mem::size_of::<TombstoneEntry>(),
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
    }

    /// Notes that operations up to `seq` were applied (skipped ones too).
    pub(crate) fn note_applied(&self, seq: u64) {
        self.max_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// The newest range tombstone here, visible at `read_seq`, that covers
    /// `key` (0 if none).
    pub(crate) fn tombstone_cover(&self, key: &[u8], read_seq: u64) -> u64 {
        if !self.has_tombstones.load(Ordering::Acquire) {
            return 0;
        }
        tombstones::cover(&self.tombstones.read(), key, read_seq)
    }

    /// Whether the memtable holds any range tombstone.
    pub(crate) fn has_tombstones(&self) -> bool {
        self.has_tombstones.load(Ordering::Acquire)
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
        self.list.is_empty() && !self.has_tombstones.load(Ordering::Acquire)
    }

    /// The newest version of `key` at or below `seq`, with its sequence
    /// number: `Some((seq, Some(value)))`, `Some((seq, None))` for a
    /// tombstone, `None` if this memtable has no version. Allocates nothing.
    /// `hash` is the key's `strata_format::table::filter_hash`.
    pub(crate) fn get(&self, key: &[u8], hash: u64, seq: u64) -> Option<(u64, Option<&[u8]>)> {
        let node = self.list.get(key, hash, seek_trailer(seq))?;
        let entry = EntryRef {
            internal_key: node.internal_key(),
            value: node.value(),
        };
        Some((entry.seq(), (!entry.is_delete()).then_some(entry.value)))
    }

    /// The skip list (for cursors).
    pub(crate) fn list(&self) -> &SkipList {
        &self.list
    }

    /// The largest sequence number applied (0 if none).
    pub(crate) fn max_seq(&self) -> u64 {
        self.max_seq.load(Ordering::Relaxed)
    }

    /// Every entry in internal order (user key ascending, newest first).
    pub(crate) fn entries(&self) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        let mut node = self.list.first();
        std::iter::from_fn(move || {
            let current = node?;
            node = self.list.next(current);
            Some(EntryRef {
                internal_key: current.internal_key(),
                value: current.value(),
            })
        })
    }

    /// How many entries have a user key in `[start, end)` (`end` `None`:
    /// unbounded). Walks them: for figures, not for hot paths.
    pub(crate) fn count_in(&self, start: &[u8], end: Option<&[u8]>) -> usize {
        let mut node = self.list.seek(start, u64::MAX);
        let mut count = 0;
        while let Some(current) = node {
            let entry = EntryRef {
                internal_key: current.internal_key(),
                value: current.value(),
            };
            if end.is_some_and(|end| entry.user_key() >= end) {
                break;
            }
            count += 1;
            node = self.list.next(current);
        }
        count
    }

    /// Bytes held: what the arena handed out, plus range deletions (the
    /// hash index, fixed in size, is counted by [`Memtable::index_bytes`]).
    pub(crate) fn approximate_bytes(&self) -> usize {
        self.list.allocated_bytes() + self.tombstone_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of the memtable's hash index.
    pub(crate) fn index_bytes(&self) -> usize {
        self.list.index_bytes()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn get_finds_the_newest_version_at_or_below_the_read() {
        let m = Memtable::new(1 << 20);
        m.put(b"k", 3, b"three");
        m.delete(b"k", 5);
        m.put(b"k", 7, b"seven");
        m.put(b"l", 4, b"other");
        assert_eq!(m.get(b"k", skiplist::hash_key(b"k"), 2), None);
        assert_eq!(
            m.get(b"k", skiplist::hash_key(b"k"), 3),
            Some((3, Some(&b"three"[..])))
        );
        assert_eq!(m.get(b"k", skiplist::hash_key(b"k"), 6), Some((5, None)));
        assert_eq!(
            m.get(b"k", skiplist::hash_key(b"k"), u64::MAX),
            Some((7, Some(&b"seven"[..])))
        );
        assert_eq!(m.get(b"j", skiplist::hash_key(b"j"), 10), None);
        assert_eq!(m.count_in(b"k", Some(b"l")), 3);
        assert_eq!(m.count_in(b"", None), 4);
        let seqs: Vec<u64> = m.entries().map(|e| e.seq()).collect();
        assert_eq!(seqs, [7, 5, 3, 4]);
    }

    #[test]
    fn size_is_the_arena_s() {
        let m = Memtable::new(1 << 20);
        let before = m.approximate_bytes();
        m.put(&[1u8; 16], 1, &[2u8; 100]);
        let entry = m.approximate_bytes() - before;
        assert!(
            (124..=200).contains(&entry),
            "one 116-byte entry took {entry} bytes"
        );
    }
}
