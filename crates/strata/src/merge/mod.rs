//! Cursors and their merge: the one shape in which memtables and sorted
//! tables hand entries to scans, flushes and compactions.
//!
//! A [`Cursor`] walks one source in one direction and lends its current
//! entry ([`EntryRef`]: internal key and value, borrowed from the source's
//! memory, never copied). [`Merge`] interleaves many cursors into one
//! stream in internal-key order (or its reverse). The cursor whose entry is
//! current is kept out of the heap: while one source supplies a run of
//! consecutive entries, as the newest level usually does for a short scan,
//! each step costs one comparison with the heap's top and no heap work.
//!
//! Invariants:
//! - Every cursor in `heap` is positioned on an entry; `current`, when set,
//!   is positioned and its entry orders at or before every entry in `heap`.
//! - A cursor that failed is not advanced again: the merge returns its
//!   error and the caller stops.

mod key_range;

use std::cmp::Ordering;

use strata_format::key::{TRAILER_LEN, ValueKind, compare_internal};

use crate::error::Result;

pub(crate) use key_range::KeyRange;

/// An entry as cursors and flushes see it: an internal key and its value,
/// borrowed from wherever the entry lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryRef<'a> {
    /// User key followed by the 8-byte trailer.
    pub(crate) internal_key: &'a [u8],
    /// The value (empty for a tombstone).
    pub(crate) value: &'a [u8],
}

impl<'a> EntryRef<'a> {
    /// No entry (what an unpositioned cursor lends).
    pub(crate) const EMPTY: EntryRef<'static> = EntryRef {
        internal_key: &[],
        value: &[],
    };

    /// The user key.
    pub(crate) fn user_key(&self) -> &'a [u8] {
        self.internal_key
            .get(..self.internal_key.len().saturating_sub(TRAILER_LEN))
            .unwrap_or_default()
    }

    /// The trailer (`(seq << 8) | kind`).
    pub(crate) fn trailer(&self) -> u64 {
        self.internal_key
            .last_chunk::<TRAILER_LEN>()
            .map_or(0, |t| u64::from_le_bytes(*t))
    }

    /// The sequence number of the write.
    pub(crate) fn seq(&self) -> u64 {
        self.trailer() >> 8
    }

    /// Whether the entry is a tombstone (anything but a value is one).
    pub(crate) fn is_delete(&self) -> bool {
        self.trailer() & 0xff != u64::from(ValueKind::Put.to_byte())
    }
}

/// A source of entries in one direction.
pub(crate) trait Cursor: Send {
    /// Moves to the next entry in the cursor's direction (to the first one
    /// on the first call); returns whether the cursor is on an entry.
    ///
    /// # Errors
    /// If the source is damaged; the cursor must not be used afterwards.
    fn advance(&mut self) -> Result<bool>;

    /// The entry the cursor is on. Only meaningful after `advance` returned
    /// true (empty otherwise).
    fn entry(&self) -> EntryRef<'_>;
}

/// A merge of cursors that all run in one direction (see the module
/// documentation).
pub(crate) struct Merge {
    cursors: Vec<Box<dyn Cursor>>,
    /// A binary heap of cursor indices, the first entry (in the merge's
    /// direction) on top.
    heap: Vec<usize>,
    current: Option<usize>,
    forward: bool,
    primed: bool,
}

impl Merge {
    pub(crate) fn new(cursors: Vec<Box<dyn Cursor>>, forward: bool) -> Self {
        Self {
            heap: Vec::with_capacity(cursors.len()),
            cursors,
            current: None,
            forward,
            primed: false,
        }
    }

    /// Whether cursor `a`'s entry comes strictly before cursor `b`'s.
    fn before(&self, a: usize, b: usize) -> bool {
        let (Some(a), Some(b)) = (self.cursors.get(a), self.cursors.get(b)) else {
            return false;
        };
        let order = compare_internal(a.entry().internal_key, b.entry().internal_key);
        if self.forward {
            order == Ordering::Less
        } else {
            order == Ordering::Greater
        }
    }

    fn push(&mut self, cursor: usize) {
        self.heap.push(cursor);
        let mut child = self.heap.len() - 1;
        while child > 0 {
            let parent = (child - 1) / 2;
            let (Some(&c), Some(&p)) = (self.heap.get(child), self.heap.get(parent)) else {
                return;
            };
            if !self.before(c, p) {
                return;
            }
            self.heap.swap(child, parent);
            child = parent;
        }
    }

    fn pop(&mut self) -> Option<usize> {
        if self.heap.is_empty() {
            return None;
        }
        let top = self.heap.swap_remove(0);
        let len = self.heap.len();
        let mut parent = 0;
        loop {
            let (left, right) = (2 * parent + 1, 2 * parent + 2);
            let mut first = parent;
            for child in [left, right] {
                if child < len
                    && let (Some(&c), Some(&f)) = (self.heap.get(child), self.heap.get(first))
                    && self.before(c, f)
                {
                    first = child;
                }
            }
            if first == parent {
                return Some(top);
            }
            self.heap.swap(parent, first);
            parent = first;
        }
    }

    /// Moves to the next entry of all cursors, in their direction's
    /// internal order; returns whether there is one.
    ///
    /// # Errors
    /// The first error of a cursor.
    pub(crate) fn advance(&mut self) -> Result<bool> {
        if !self.primed {
            self.primed = true;
            for index in 0..self.cursors.len() {
                if let Some(cursor) = self.cursors.get_mut(index)
                    && cursor.advance()?
                {
                    self.push(index);
                }
            }
        } else if let Some(current) = self.current.take() {
            let more = match self.cursors.get_mut(current) {
                Some(cursor) => cursor.advance()?,
                None => false,
            };
            if more {
                match self.heap.first() {
                    Some(&top) if self.before(top, current) => self.push(current),
                    _ => {
                        self.current = Some(current);
                        return Ok(true);
                    }
                }
            }
        }
        self.current = self.pop();
        Ok(self.current.is_some())
    }

    /// The current entry (after `advance` returned true).
    pub(crate) fn entry(&self) -> EntryRef<'_> {
        self.current
            .and_then(|c| self.cursors.get(c))
            .map_or(EntryRef::EMPTY, |cursor| cursor.entry())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A cursor over owned internal keys.
    struct VecCursor {
        keys: Vec<Vec<u8>>,
        next: usize,
    }

    impl Cursor for VecCursor {
        fn advance(&mut self) -> Result<bool> {
            self.next += 1;
            Ok(self.next <= self.keys.len())
        }

        fn entry(&self) -> EntryRef<'_> {
            self.keys
                .get(self.next.wrapping_sub(1))
                .map_or(EntryRef::EMPTY, |k| EntryRef {
                    internal_key: k,
                    value: b"",
                })
        }
    }

    fn ikey(user: &str, seq: u64) -> Vec<u8> {
        let mut k = user.as_bytes().to_vec();
        k.extend_from_slice(&((seq << 8) | 2).to_le_bytes());
        k
    }

    fn run(sources: Vec<Vec<Vec<u8>>>, forward: bool) -> Vec<Vec<u8>> {
        let cursors: Vec<Box<dyn Cursor>> = sources
            .into_iter()
            .map(|mut keys| {
                keys.sort_by(|a, b| compare_internal(a, b));
                if !forward {
                    keys.reverse();
                }
                Box::new(VecCursor { keys, next: 0 }) as Box<dyn Cursor>
            })
            .collect();
        let mut merge = Merge::new(cursors, forward);
        let mut out = Vec::new();
        while merge.advance().unwrap() {
            out.push(merge.entry().internal_key.to_vec());
        }
        out
    }

    #[test]
    fn merges_in_internal_order_both_ways() {
        let sources = vec![
            vec![ikey("a", 1), ikey("c", 5), ikey("d", 2)],
            vec![ikey("a", 3), ikey("b", 1)],
            vec![],
            vec![ikey("c", 9), ikey("e", 1), ikey("f", 1), ikey("g", 1)],
        ];
        let mut expected: Vec<Vec<u8>> = sources.iter().flatten().cloned().collect();
        expected.sort_by(|a, b| compare_internal(a, b));
        assert_eq!(run(sources.clone(), true), expected);
        expected.reverse();
        assert_eq!(run(sources, false), expected);
    }
}
