//! Scans: the newest visible version of every key in a range, merged from
//! every source, in one direction.
//!
//! Sources (memtables now; sorted tables as they come) each yield entries
//! in internal order (user key ascending, newest first) or its reverse. A
//! heap merges them; [`DbIterator`] then keeps, for each user key, the
//! newest version at or below the read's sequence number, and drops
//! tombstones.
//!
//! Invariants: a scan reads at one sequence number throughout, so it sees a
//! consistent state even while writes continue.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::sync::Arc;

use strata_format::manifest::TombstoneEntry;

use crate::error::Result;
use crate::memtable::{Entry, MemKey, MemValue, Memtable};
use crate::ranges::tombstones;

/// A source of entries in one direction.
pub(crate) trait Cursor: Send {
    /// The next entry, in this cursor's direction.
    fn next_entry(&mut self) -> Result<Option<Entry>>;
}

/// A cursor over one memtable, by repeated seeks (so it holds no borrow and
/// sees a stable order while writers insert).
pub(crate) struct MemCursor {
    memtable: Arc<Memtable>,
    forward: bool,
    start: Bound<MemKey>,
    last: Option<MemKey>,
}

impl MemCursor {
    /// A cursor from the start of `range` (forward) or its end (backward).
    pub(crate) fn new(memtable: Arc<Memtable>, range: &KeyRange, forward: bool) -> Self {
        let first = |key: &[u8]| MemKey {
            user_key: key.to_vec(),
            seq: Reverse(u64::MAX),
        };
        let last = |key: &[u8]| MemKey {
            user_key: key.to_vec(),
            seq: Reverse(0),
        };
        let start = if forward {
            match &range.start {
                Bound::Included(k) => Bound::Included(first(k)),
                Bound::Excluded(k) => Bound::Excluded(last(k)),
                Bound::Unbounded => Bound::Unbounded,
            }
        } else {
            match &range.end {
                Bound::Included(k) => Bound::Included(last(k)),
                Bound::Excluded(k) => Bound::Excluded(first(k)),
                Bound::Unbounded => Bound::Unbounded,
            }
        };
        Self {
            memtable,
            forward,
            start,
            last: None,
        }
    }
}

impl Cursor for MemCursor {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        let bound = match &self.last {
            Some(key) => Bound::Excluded(key),
            None => self.start.as_ref(),
        };
        let entry = self.memtable.seek(bound, self.forward);
        self.last = entry.as_ref().map(|e| MemKey {
            user_key: e.user_key.clone(),
            seq: Reverse(e.seq),
        });
        Ok(entry)
    }
}

/// A range of user keys.
#[derive(Clone, Debug)]
pub(crate) struct KeyRange {
    pub(crate) start: Bound<Vec<u8>>,
    pub(crate) end: Bound<Vec<u8>>,
}

impl KeyRange {
    pub(crate) fn from_bounds(start: Bound<&[u8]>, end: Bound<&[u8]>) -> Self {
        Self {
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
        }
    }

    /// Every key starting with `prefix`.
    pub(crate) fn prefix(prefix: &[u8]) -> Self {
        let mut end = prefix.to_vec();
        while let Some(&last) = end.last() {
            if last == 0xff {
                end.pop();
            } else {
                if let Some(byte) = end.last_mut() {
                    *byte += 1;
                }
                break;
            }
        }
        let end = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        Self {
            start: Bound::Included(prefix.to_vec()),
            end,
        }
    }

    fn after_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Included(end) => key > end.as_slice(),
            Bound::Excluded(end) => key >= end.as_slice(),
            Bound::Unbounded => false,
        }
    }

    fn before_start(&self, key: &[u8]) -> bool {
        match &self.start {
            Bound::Included(start) => key < start.as_slice(),
            Bound::Excluded(start) => key <= start.as_slice(),
            Bound::Unbounded => false,
        }
    }

    /// The range as inclusive user-key bounds for overlap tests (an
    /// excluded bound is widened to include its key: conservative).
    pub(crate) fn user_bounds(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        fn bound(b: &Bound<Vec<u8>>) -> Option<&[u8]> {
            match b {
                Bound::Included(k) | Bound::Excluded(k) => Some(k.as_slice()),
                Bound::Unbounded => None,
            }
        }
        (bound(&self.start), bound(&self.end))
    }

    /// Whether the range can hold no key (start after end).
    pub(crate) fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e))
            | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        }
    }
}

struct HeapItem {
    entry: Entry,
    source: usize,
    forward: bool,
}

impl HeapItem {
    fn internal_cmp(&self, other: &Self) -> Ordering {
        self.entry
            .user_key
            .cmp(&other.entry.user_key)
            .then_with(|| other.entry.seq.cmp(&self.entry.seq))
    }
}

impl PartialEq for HeapItem {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for HeapItem {}
impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapItem {
    /// The heap pops its maximum: the smallest internal key when forward,
    /// the largest when backward.
    fn cmp(&self, other: &Self) -> Ordering {
        if self.forward {
            other.internal_cmp(self)
        } else {
            self.internal_cmp(other)
        }
    }
}

/// A heap merge of cursors that all run in one direction.
pub(crate) struct Merge {
    cursors: Vec<Box<dyn Cursor>>,
    heap: BinaryHeap<HeapItem>,
    /// The next entry to return, kept out of the heap: while one source
    /// supplies a run of consecutive entries, they never touch the heap.
    head: Option<HeapItem>,
    forward: bool,
    primed: bool,
}

impl Merge {
    pub(crate) fn new(cursors: Vec<Box<dyn Cursor>>, forward: bool) -> Self {
        Self {
            cursors,
            heap: BinaryHeap::new(),
            head: None,
            forward,
            primed: false,
        }
    }

    /// The next entry of all cursors, in their direction's internal order.
    pub(crate) fn next(&mut self) -> Result<Option<Entry>> {
        if !self.primed {
            self.primed = true;
            for source in 0..self.cursors.len() {
                if let Some(item) = self.pull(source)? {
                    self.heap.push(item);
                }
            }
            self.head = self.heap.pop();
        }
        let Some(item) = self.head.take() else {
            return Ok(None);
        };
        // The popped source's next entry comes next unless another
        // source's head is before it.
        self.head = match self.pull(item.source)? {
            Some(next) if self.heap.peek().is_none_or(|top| next >= *top) => Some(next),
            Some(next) => {
                self.heap.push(next);
                self.heap.pop()
            }
            None => self.heap.pop(),
        };
        Ok(Some(item.entry))
    }

    fn pull(&mut self, source: usize) -> Result<Option<HeapItem>> {
        let Some(cursor) = self.cursors.get_mut(source) else {
            return Ok(None);
        };
        Ok(cursor.next_entry()?.map(|entry| HeapItem {
            entry,
            source,
            forward: self.forward,
        }))
    }
}

/// An iterator over the newest visible value of every key in a range, in
/// key order ([`crate::Db::scan`]) or reverse key order
/// ([`crate::Db::scan_rev`]). Items are `Result`s: a source that fails
/// (for example a corrupted table block) ends the scan with its error,
/// never with wrong data.
pub struct DbIterator {
    merge: Merge,
    range: KeyRange,
    seq: u64,
    forward: bool,
    last_key: Option<Vec<u8>>,
    peeked: Option<Entry>,
    done: bool,
    /// Range tombstones visible to the read, sorted by start.
    tombstones: Vec<TombstoneEntry>,
    /// The keys the database holds (a range-scoped replica's).
    retain: crate::ranges::retain::Retain,
    /// Keeps the sources' owner (and its snapshot registration) alive.
    _hold: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for DbIterator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbIterator")
            .field("seq", &self.seq)
            .field("forward", &self.forward)
            .finish()
    }
}

impl DbIterator {
    pub(crate) fn new(
        cursors: Vec<Box<dyn Cursor>>,
        range: KeyRange,
        seq: u64,
        forward: bool,
        tombstones: Vec<TombstoneEntry>,
        retain: crate::ranges::retain::Retain,
        hold: Box<dyn Send + Sync>,
    ) -> Self {
        let done = range.is_empty();
        Self {
            merge: Merge::new(cursors, forward),
            range,
            seq,
            forward,
            last_key: None,
            peeked: None,
            done,
            tombstones,
            retain,
            _hold: hold,
        }
    }

    /// Whether a range tombstone the read sees hides `entry`.
    fn hidden(&self, entry: &Entry) -> bool {
        self.hidden_at(&entry.user_key, entry.seq)
    }

    fn hidden_at(&self, key: &[u8], seq: u64) -> bool {
        (!self.tombstones.is_empty() && tombstones::cover(&self.tombstones, key, self.seq) > seq)
            || !self.retain.contains(key)
    }

    fn next_forward(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        while let Some(entry) = self.merge.next()? {
            if self.range.after_end(&entry.user_key) {
                return Ok(None);
            }
            if entry.seq > self.seq || self.last_key.as_deref() == Some(entry.user_key.as_slice()) {
                continue;
            }
            match &mut self.last_key {
                Some(last) => last.clone_from(&entry.user_key),
                None => self.last_key = Some(entry.user_key.clone()),
            }
            if self.hidden(&entry) {
                continue;
            }
            if let MemValue::Put(value) = entry.value {
                return Ok(Some((entry.user_key, value)));
            }
        }
        Ok(None)
    }

    fn next_backward(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        loop {
            let first = match self.peeked.take() {
                Some(entry) => entry,
                None => match self.merge.next()? {
                    Some(entry) => entry,
                    None => return Ok(None),
                },
            };
            if self.range.before_start(&first.user_key) {
                return Ok(None);
            }
            // Backward, a key's versions come oldest first: keep the newest
            // one at or below the read's sequence number.
            let key = first.user_key.clone();
            let mut best = (first.seq <= self.seq).then_some(first);
            loop {
                match self.merge.next()? {
                    Some(entry) if entry.user_key == key => {
                        if entry.seq <= self.seq {
                            best = Some(entry);
                        }
                    }
                    other => {
                        self.peeked = other;
                        break;
                    }
                }
            }
            if let Some(Entry {
                value: MemValue::Put(value),
                seq,
                ..
            }) = best
                && !self.hidden_at(&key, seq)
            {
                return Ok(Some((key, value)));
            }
        }
    }
}

impl Iterator for DbIterator {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = if self.forward {
            self.next_forward()
        } else {
            self.next_backward()
        };
        match next {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_end_at_the_successor() {
        let r = KeyRange::prefix(b"ab\xff");
        assert_eq!(r.end, Bound::Excluded(b"ac".to_vec()));
        let r = KeyRange::prefix(b"\xff\xff");
        assert_eq!(r.end, Bound::Unbounded);
        let r = KeyRange::prefix(b"");
        assert_eq!(r.end, Bound::Unbounded);
    }
}
