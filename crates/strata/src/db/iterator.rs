//! Scans: the newest visible version of every key in a range, merged from
//! every source, in one direction.
//!
//! Sources (memtables and sorted tables) each yield entries in internal
//! order (user key ascending, newest first) or its reverse, merged by
//! [`crate::merge::Merge`]; [`DbIterator`] then keeps, for each user key,
//! the newest version at or below the read's sequence number, and drops
//! tombstones. Entries are lent from the sources' memory: a forward scan
//! copies only the current user key (to skip its older versions) into a
//! buffer it reuses, and [`DbIterator::next_ref`] hands out entries without
//! copying them at all.
//!
//! Invariants: a scan reads at one sequence number throughout, so it sees a
//! consistent state even while writes continue.

use strata_format::manifest::TombstoneEntry;

use crate::error::Result;
use crate::merge::{Cursor, KeyRange, Merge};
use crate::ranges::tombstones;

/// An iterator over the newest visible value of every key in a range, in
/// key order ([`crate::Db::scan`]) or reverse key order
/// ([`crate::Db::scan_rev`]). Items are `Result`s: a source that fails
/// (for example a corrupted table block) ends the scan with its error,
/// never with wrong data.
///
/// As an [`Iterator`] it yields owned keys and values; [`DbIterator::next_ref`]
/// lends them instead, without copying.
pub struct DbIterator {
    merge: Merge,
    range: std::sync::Arc<KeyRange>,
    seq: u64,
    forward: bool,
    /// The user key last taken (forward: its older versions are skipped).
    last_key: Vec<u8>,
    has_last: bool,
    /// Backward: the merge is already on the first entry of the next key.
    peeked: bool,
    /// Backward: the entry to hand out, copied (the merge moved past it).
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
    done: bool,
    /// Range tombstones visible to the read, sorted by start.
    tombstones: Vec<TombstoneEntry>,
    /// The keys the database holds (a range-scoped replica's).
    retain: crate::ranges::KeyIntervals,
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
        range: std::sync::Arc<KeyRange>,
        seq: u64,
        forward: bool,
        tombstones: Vec<TombstoneEntry>,
        retain: crate::ranges::KeyIntervals,
        hold: Box<dyn Send + Sync>,
    ) -> Self {
        let done = range.is_empty();
        Self {
            merge: Merge::new(cursors, forward),
            range,
            seq,
            forward,
            last_key: Vec::new(),
            has_last: false,
            peeked: false,
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            done,
            tombstones,
            retain,
            _hold: hold,
        }
    }

    /// Whether a range tombstone the read sees, or the retained ranges,
    /// hide version `seq` of `key`.
    fn hidden(
        tombstones: &[TombstoneEntry],
        retain: &crate::ranges::KeyIntervals,
        read_seq: u64,
        key: &[u8],
        seq: u64,
    ) -> bool {
        (!tombstones.is_empty() && tombstones::cover(tombstones, key, read_seq) > seq)
            || !retain.contains(key)
    }

    /// Forward: moves the merge onto the next entry to hand out.
    fn advance_forward(&mut self) -> Result<bool> {
        while self.merge.advance()? {
            let entry = self.merge.entry();
            let user_key = entry.user_key();
            if self.range.after_end(user_key) {
                return Ok(false);
            }
            let seq = entry.seq();
            if seq > self.seq || (self.has_last && self.last_key.as_slice() == user_key) {
                continue;
            }
            self.last_key.clear();
            self.last_key.extend_from_slice(user_key);
            self.has_last = true;
            if Self::hidden(&self.tombstones, &self.retain, self.seq, user_key, seq) {
                continue;
            }
            if !entry.is_delete() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Backward: finds the next key to hand out and copies its newest
    /// visible version into the buffers.
    fn advance_backward(&mut self) -> Result<bool> {
        loop {
            if !self.peeked && !self.merge.advance()? {
                return Ok(false);
            }
            self.peeked = false;
            let first = self.merge.entry();
            if self.range.before_start(first.user_key()) {
                return Ok(false);
            }
            // Backward, a key's versions come oldest first: keep the newest
            // one at or below the read's sequence number.
            self.key_buf.clear();
            self.key_buf.extend_from_slice(first.user_key());
            let mut best: Option<(u64, bool)> = None;
            loop {
                let entry = self.merge.entry();
                if entry.user_key() != self.key_buf.as_slice() {
                    self.peeked = true;
                    break;
                }
                if entry.seq() <= self.seq {
                    best = Some((entry.seq(), entry.is_delete()));
                    self.value_buf.clear();
                    self.value_buf.extend_from_slice(entry.value);
                }
                if !self.merge.advance()? {
                    break;
                }
            }
            if let Some((seq, false)) = best
                && !Self::hidden(&self.tombstones, &self.retain, self.seq, &self.key_buf, seq)
            {
                return Ok(true);
            }
            if !self.peeked {
                return Ok(false);
            }
        }
    }

    /// The next key and value, lent by the iterator until its next call:
    /// no copy, no allocation (a forward scan reads them in place from the
    /// memtable or the table block).
    ///
    /// # Examples
    ///
    /// ```
    /// # use strata::{Db, MemFileSystem, Options};
    /// # use std::sync::Arc;
    /// # let db = Db::open("d", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
    /// for k in [b"a", b"b", b"c"] { db.put(k, b"v")?; }
    /// let mut scan = db.scan(b"b".as_slice()..)?;
    /// let mut total = 0;
    /// while let Some(entry) = scan.next_ref() {
    ///     let (key, value) = entry?;
    ///     total += key.len() + value.len();
    /// }
    /// assert_eq!(total, 4);
    /// # Ok::<(), strata::Error>(())
    /// ```
    pub fn next_ref(&mut self) -> Option<Result<(&[u8], &[u8])>> {
        if self.done {
            return None;
        }
        let found = if self.forward {
            self.advance_forward()
        } else {
            self.advance_backward()
        };
        match found {
            Ok(true) if self.forward => {
                let entry = self.merge.entry();
                Some(Ok((entry.user_key(), entry.value)))
            }
            Ok(true) => Some(Ok((&self.key_buf, &self.value_buf))),
            Ok(false) => {
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

impl Iterator for DbIterator {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref()
            .map(|item| item.map(|(key, value)| (key.to_vec(), value.to_vec())))
    }
}
