//! A cursor over one memtable for scans: forward by following the skip
//! list's bottom links (one load per step), backward by a search for the
//! entry before the current one.
//!
//! The cursor holds the memtable (`Arc`) and a position in it, so it
//! borrows nothing and may outlive the call that made it. Entries inserted
//! while it runs may or may not be seen; a scan reads at a fixed sequence
//! number and skips newer ones.

#![allow(
    unsafe_code,
    reason = "positions are re-read from the list the cursor keeps alive"
)]

use std::ops::Bound;
use std::sync::Arc;

use super::Memtable;
use super::skiplist::Position;
use crate::error::Result;
use crate::merge::KeyRange;
use crate::merge::{Cursor, EntryRef};

pub(crate) struct MemCursor {
    memtable: Arc<Memtable>,
    position: Option<Position>,
    /// Where the scan starts: the range's start (forward) or end (backward).
    start: Bound<Vec<u8>>,
    forward: bool,
    started: bool,
}

impl MemCursor {
    /// A cursor from the start of `range` (forward) or its end (backward).
    pub(crate) fn new(memtable: Arc<Memtable>, range: &KeyRange, forward: bool) -> Self {
        let start = if forward {
            range.start.clone()
        } else {
            range.end.clone()
        };
        Self {
            memtable,
            position: None,
            start,
            forward,
            started: false,
        }
    }
}

impl Cursor for MemCursor {
    fn advance(&mut self) -> Result<bool> {
        let list = self.memtable.list();
        let next = if !self.started {
            self.started = true;
            // Trailer u64::MAX sorts before every version of a user key,
            // trailer 0 after every version (no entry has kind 0).
            match (&self.start, self.forward) {
                (Bound::Unbounded, true) => list.first(),
                (Bound::Included(key), true) => list.seek(key, u64::MAX),
                (Bound::Excluded(key), true) => list.seek(key, 0),
                (Bound::Unbounded, false) => list.last(),
                (Bound::Included(key), false) => list.seek_before(key, 0),
                (Bound::Excluded(key), false) => list.seek_before(key, u64::MAX),
            }
        } else {
            match self.position {
                // SAFETY: the position came from this cursor's memtable,
                // which `self.memtable` keeps alive.
                Some(position) => {
                    let node = unsafe { list.at(position) };
                    if self.forward {
                        list.next_prefetched(node)
                    } else {
                        list.prev(node)
                    }
                }
                None => None,
            }
        };
        self.position = next.map(|node| node.position());
        Ok(self.position.is_some())
    }

    fn entry(&self) -> EntryRef<'_> {
        match self.position {
            Some(position) => {
                // SAFETY: as in `advance`.
                let node = unsafe { self.memtable.list().at(position) };
                EntryRef {
                    internal_key: node.internal_key(),
                    value: node.value(),
                }
            }
            None => EntryRef::EMPTY,
        }
    }
}
