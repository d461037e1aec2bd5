//! Data and index blocks: sorted key/value entries with prefix-compressed
//! keys and restart points for binary search.
//!
//! FORMAT (the block's contents, before compression and the trailer of
//! [`super::format`]):
//!
//! ```text
//!  +---------+---------+- - -+---------+------------+- - -+------------+--------------+
//!  | entry 0 | entry 1 | ... | entry n | restart[0] | ... | restart[r] | num_restarts |
//!  |         |         |     |         |   u32 LE   |     |   u32 LE   |    u32 LE    |
//!  +---------+---------+- - -+---------+------------+- - -+------------+--------------+
//!
//!  entry := shared:varint32  non_shared:varint32  value_len:varint32
//!           key_delta[non_shared]  value[value_len]
//! ```
//!
//! - An entry's key is the first `shared` bytes of the previous entry's key
//!   followed by `key_delta`. Keys are strictly increasing under the
//!   block's comparator (internal-key order for table blocks).
//! - Every `restart_interval`-th entry (the first included) is a restart
//!   point: it stores its whole key (`shared` = 0) and its offset is listed
//!   in the restart array, so a seek binary-searches the restart keys and
//!   then scans at most one interval.
//! - A block with no entries has no restarts: it is the four bytes of
//!   `num_restarts` = 0. Otherwise `restart[0]` = 0 and the offsets are
//!   strictly increasing and below the start of the restart array.
//! - No checksum here: the block trailer covers the whole block.
//!
//! Invariants: [`Block::new`] validates the restart array; [`BlockIter`]
//! validates every entry it decodes (lengths within the entries area, the
//! shared prefix within the previous key, restart points on entry
//! boundaries, keys increasing) and reports a [`DecodeError`] instead of
//! panicking or yielding wrong bytes. Errors are sticky: an iterator that
//! failed stays failed.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::{Deref, Range};
use std::sync::Arc;

use crate::coding::{Cursor, put_varint32};
use crate::error::{DecodeError, DecodeErrorKind};

/// A key order: a total order over byte strings.
pub type Comparator = fn(&[u8], &[u8]) -> Ordering;

/// Restart interval used unless configured otherwise.
pub const DEFAULT_RESTART_INTERVAL: usize = 16;

/// A block's bytes: borrowed from the file (uncompressed blocks read from
/// a mapped file) or shared (decompressed, or held by a cache).
#[derive(Debug, Clone)]
pub enum BlockBytes<'a> {
    /// Bytes borrowed from the file.
    Borrowed(&'a [u8]),
    /// Bytes owned and shareable.
    Shared(Arc<[u8]>),
}

impl Deref for BlockBytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Borrowed(bytes) => bytes,
            Self::Shared(bytes) => bytes,
        }
    }
}

impl<'a> From<&'a [u8]> for BlockBytes<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Self::Borrowed(bytes)
    }
}

impl From<Arc<[u8]>> for BlockBytes<'_> {
    fn from(bytes: Arc<[u8]>) -> Self {
        Self::Shared(bytes)
    }
}

impl From<Vec<u8>> for BlockBytes<'_> {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Shared(bytes.into())
    }
}

impl<'a> From<Cow<'a, [u8]>> for BlockBytes<'a> {
    fn from(bytes: Cow<'a, [u8]>) -> Self {
        match bytes {
            Cow::Borrowed(bytes) => Self::Borrowed(bytes),
            Cow::Owned(bytes) => bytes.into(),
        }
    }
}

impl<'a> BlockBytes<'a> {
    /// A sub-range, borrowed when the bytes are, else copied.
    fn cow(&self, range: Range<usize>) -> Cow<'a, [u8]> {
        match self {
            Self::Borrowed(bytes) => Cow::Borrowed(bytes.get(range).unwrap_or_default()),
            Self::Shared(bytes) => Cow::Owned(bytes.get(range).unwrap_or_default().to_vec()),
        }
    }
}

/// Builds one block.
///
/// # Examples
///
/// ```
/// use strata_format::key::compare_bytewise;
/// use strata_format::table::{Block, BlockBuilder};
/// let mut builder = BlockBuilder::new(16, compare_bytewise);
/// builder.add(b"apple", b"red");
/// builder.add(b"banana", b"yellow");
/// let block = Block::new(builder.finish())?;
/// let mut iter = block.iter(compare_bytewise);
/// assert!(iter.seek(b"b")?);
/// assert_eq!(iter.current(), Some((&b"banana"[..], &b"yellow"[..])));
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    restart_interval: usize,
    entries: usize,
    last_key: Vec<u8>,
    comparator: Comparator,
    finished: bool,
}

impl BlockBuilder {
    /// An empty builder with a restart point every `restart_interval`
    /// entries, for keys ordered by `comparator`.
    ///
    /// # Panics
    /// If `restart_interval` is 0.
    #[must_use]
    pub fn new(restart_interval: usize, comparator: Comparator) -> Self {
        assert!(restart_interval > 0, "restart interval must be positive");
        Self {
            buf: Vec::new(),
            restarts: Vec::new(),
            restart_interval,
            entries: 0,
            last_key: Vec::new(),
            comparator,
            finished: false,
        }
    }

    /// Appends an entry.
    ///
    /// # Panics
    /// If `key` is not greater than the previous key, the block was
    /// finished, or a length does not fit the format's 32-bit fields
    /// (programmer errors).
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        assert!(!self.finished, "add after finish");
        assert!(
            self.entries == 0 || (self.comparator)(key, &self.last_key) == Ordering::Greater,
            "block keys must be strictly increasing"
        );
        let shared = if self.entries.is_multiple_of(self.restart_interval) {
            self.restarts.push(to_u32(self.buf.len()));
            0
        } else {
            common_prefix_len(&self.last_key, key)
        };
        let delta = key.get(shared..).unwrap_or_default();
        put_varint32(&mut self.buf, to_u32(shared));
        put_varint32(&mut self.buf, to_u32(delta.len()));
        put_varint32(&mut self.buf, to_u32(value.len()));
        self.buf.extend_from_slice(delta);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.entries += 1;
    }

    /// Appends the restart array and returns the finished block.
    /// Calling it again returns the same bytes.
    pub fn finish(&mut self) -> &[u8] {
        if !self.finished {
            for restart in &self.restarts {
                self.buf.extend_from_slice(&restart.to_le_bytes());
            }
            let count = to_u32(self.restarts.len());
            self.buf.extend_from_slice(&count.to_le_bytes());
            self.finished = true;
        }
        &self.buf
    }

    /// Empties the builder for the next block, keeping its allocations.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.restarts.clear();
        self.entries = 0;
        self.last_key.clear();
        self.finished = false;
    }

    /// The size of the block if it were finished now.
    #[must_use]
    pub fn estimated_size(&self) -> usize {
        if self.finished {
            self.buf.len()
        } else {
            self.buf.len() + 4 * self.restarts.len() + 4
        }
    }

    /// Whether no entry was added since the last reset.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The last key added (empty if none).
    #[must_use]
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }
}

fn to_u32(value: usize) -> u32 {
    u32::try_from(value).unwrap_or_else(|_| panic!("block field of 4 GiB or more"))
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A block whose restart array was validated.
#[derive(Debug, Clone)]
pub struct Block<'a> {
    bytes: BlockBytes<'a>,
    restarts_offset: usize,
    num_restarts: usize,
}

impl<'a> Block<'a> {
    /// Validates a block's restart array.
    ///
    /// # Errors
    /// `Truncated` if shorter than 4 bytes; `OutOfBounds` if the restart
    /// array does not fit or a restart offset is outside the entries;
    /// `Malformed` if the offsets do not start at 0 and increase, or a
    /// block with entries has no restarts.
    pub fn new(contents: impl Into<BlockBytes<'a>>) -> Result<Self, DecodeError> {
        let bytes = contents.into();
        let len = bytes.len();
        let (entries_and_restarts, count) = bytes.split_last_chunk::<4>().ok_or_else(|| {
            DecodeError::new(
                0,
                DecodeErrorKind::Truncated {
                    what: "block restart count",
                    needed: 4,
                    available: len as u64,
                },
            )
        })?;
        let num_restarts = u32::from_le_bytes(*count) as usize;
        let array_len = num_restarts as u64 * 4;
        let restarts_offset = (entries_and_restarts.len() as u64)
            .checked_sub(array_len)
            .ok_or_else(|| {
                DecodeError::new(
                    (len - 4) as u64,
                    DecodeErrorKind::LengthTooLarge {
                        what: "block restart array",
                        length: array_len + 4,
                        max: len as u64,
                    },
                )
            })? as usize;
        let block = Self {
            bytes,
            restarts_offset,
            num_restarts,
        };
        if num_restarts == 0 && restarts_offset != 0 {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::Malformed {
                    what: "block with entries but no restart points",
                },
            ));
        }
        let mut previous = None;
        for i in 0..num_restarts {
            let restart = block.restart_point(i);
            let at = (restarts_offset + 4 * i) as u64;
            if restart >= restarts_offset {
                return Err(DecodeError::new(
                    at,
                    DecodeErrorKind::OutOfBounds {
                        what: "block restart point",
                        offset: restart as u64,
                        len: 1,
                        bound: restarts_offset as u64,
                    },
                ));
            }
            let in_order = match previous {
                None => restart == 0,
                Some(previous) => restart > previous,
            };
            if !in_order {
                return Err(DecodeError::new(
                    at,
                    DecodeErrorKind::Malformed {
                        what: "block restart points (must start at 0 and increase)",
                    },
                ));
            }
            previous = Some(restart);
        }
        Ok(block)
    }

    /// The block's bytes, restart array included.
    #[must_use]
    pub fn contents(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the block holds no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.num_restarts == 0
    }

    /// An iterator over the block's entries, ordered by `comparator`.
    #[must_use]
    pub fn iter(&self, comparator: Comparator) -> BlockIter<'a> {
        self.iter_reusing(comparator, None)
    }

    /// As [`Block::iter`], taking over the key buffers of an iterator no
    /// longer needed (so moving from block to block allocates nothing).
    #[must_use]
    pub fn iter_reusing(
        &self,
        comparator: Comparator,
        old: Option<BlockIter<'_>>,
    ) -> BlockIter<'a> {
        let (mut key, mut scratch) = old.map(|it| (it.key, it.scratch)).unwrap_or_default();
        key.clear();
        scratch.clear();
        BlockIter {
            block: self.clone(),
            comparator,
            current: self.restarts_offset,
            next_offset: self.restarts_offset,
            restart_index: 0,
            key,
            scratch,
            value: 0..0,
            valid: false,
            error: None,
        }
    }

    /// Offset of restart point `i` (validated by `new`; out-of-range
    /// indices give the end of the entries).
    fn restart_point(&self, i: usize) -> usize {
        let at = self.restarts_offset + 4 * i;
        self.bytes
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(self.restarts_offset, |b| u32::from_le_bytes(b) as usize)
    }

    fn entries(&self) -> &[u8] {
        self.bytes.get(..self.restarts_offset).unwrap_or_default()
    }
}

/// The parts of one decoded entry, as offsets into the block.
struct Entry {
    shared: usize,
    key_delta: Range<usize>,
    value: Range<usize>,
}

fn decode_entry(entries: &[u8], offset: usize, previous_len: usize) -> Result<Entry, DecodeError> {
    let rest = entries.get(offset..).unwrap_or_default();
    let mut c = Cursor::new(rest);
    let parse = |c: &mut Cursor<'_>| -> Result<Entry, DecodeError> {
        let shared = c.varint32("block entry header")? as usize;
        let non_shared = c.varint32("block entry header")? as usize;
        let value_len = c.varint32("block entry header")? as usize;
        if shared > previous_len {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::SharedPrefixTooLong {
                    shared: shared as u64,
                    previous: previous_len as u64,
                },
            ));
        }
        let key_start = c.position();
        c.bytes(non_shared, "block entry key")?;
        let value_start = c.position();
        c.bytes(value_len, "block entry value")?;
        Ok(Entry {
            shared,
            key_delta: offset + key_start..offset + value_start,
            value: offset + value_start..offset + c.position(),
        })
    };
    parse(&mut c).map_err(|e| e.at(offset as u64))
}

/// A cursor over a block's entries, forwards and backwards.
///
/// Every movement returns `Ok(true)` when the cursor is on an entry,
/// `Ok(false)` when it ran off either end, and an error when the block is
/// malformed; after an error every movement returns that error again.
/// Error offsets are relative to the block's contents.
#[derive(Debug, Clone)]
pub struct BlockIter<'a> {
    block: Block<'a>,
    comparator: Comparator,
    /// Offset of the current entry (the end of the entries when invalid).
    current: usize,
    /// Offset just past the current entry.
    next_offset: usize,
    /// The restart interval containing `current`.
    restart_index: usize,
    key: Vec<u8>,
    scratch: Vec<u8>,
    value: Range<usize>,
    valid: bool,
    error: Option<DecodeError>,
}

impl<'a> BlockIter<'a> {
    /// Whether the cursor is on an entry.
    #[must_use]
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The current entry's key and value, if the cursor is on one.
    #[must_use]
    pub fn current(&self) -> Option<(&[u8], &[u8])> {
        self.valid.then(|| {
            let value = self.block.bytes.get(self.value.clone()).unwrap_or_default();
            (self.key.as_slice(), value)
        })
    }

    /// The current value, borrowed from the file when the block is.
    #[must_use]
    pub fn value_bytes(&self) -> Option<Cow<'a, [u8]>> {
        self.valid.then(|| self.block.bytes.cow(self.value.clone()))
    }

    /// The error that stopped the iterator, if any.
    #[must_use]
    pub fn status(&self) -> Option<&DecodeError> {
        self.error.as_ref()
    }

    /// Moves to the first entry.
    ///
    /// # Errors
    /// If the entry is malformed (see the module's invariants).
    pub fn seek_to_first(&mut self) -> Result<bool, DecodeError> {
        self.run(|it| {
            if it.block.num_restarts == 0 {
                it.invalidate();
                return Ok(false);
            }
            it.seek_to_restart(0);
            it.parse_next()
        })
    }

    /// Moves to the last entry.
    ///
    /// # Errors
    /// If an entry of the last restart interval is malformed.
    pub fn seek_to_last(&mut self) -> Result<bool, DecodeError> {
        self.run(|it| {
            let Some(last) = it.block.num_restarts.checked_sub(1) else {
                it.invalidate();
                return Ok(false);
            };
            it.seek_to_restart(last);
            while it.parse_next()? {
                if it.next_offset >= it.block.restarts_offset {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Moves to the first entry whose key is at or after `target`.
    ///
    /// # Errors
    /// If an entry read on the way is malformed.
    pub fn seek(&mut self, target: &[u8]) -> Result<bool, DecodeError> {
        self.run(|it| {
            let Some(mut right) = it.block.num_restarts.checked_sub(1) else {
                it.invalidate();
                return Ok(false);
            };
            // The last restart point whose key is below the target.
            let mut left = 0;
            while left < right {
                let mid = left + (right - left).div_ceil(2);
                let offset = it.block.restart_point(mid);
                let entry = decode_entry(it.block.entries(), offset, 0)?;
                let key = it.block.bytes.get(entry.key_delta).unwrap_or_default();
                if (it.comparator)(key, target) == Ordering::Less {
                    left = mid;
                } else {
                    right = mid - 1;
                }
            }
            it.seek_to_restart(left);
            while it.parse_next()? {
                if (it.comparator)(&it.key, target) != Ordering::Less {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// Moves to the next entry.
    ///
    /// # Errors
    /// If the next entry is malformed or out of order.
    #[expect(
        clippy::should_implement_trait,
        reason = "a fallible cursor movement, not an Iterator"
    )]
    pub fn next(&mut self) -> Result<bool, DecodeError> {
        self.run(|it| if it.valid { it.parse_next() } else { Ok(false) })
    }

    /// Moves to the previous entry (by rescanning from the restart point
    /// before it).
    ///
    /// # Errors
    /// If an entry read on the way is malformed.
    pub fn prev(&mut self) -> Result<bool, DecodeError> {
        self.run(|it| {
            if !it.valid {
                return Ok(false);
            }
            let original = it.current;
            // Moving back re-parses from a restart point, where key order
            // is not checked against the entry before: check it here.
            let original_key = it.key.clone();
            while it.block.restart_point(it.restart_index) >= original {
                let Some(before) = it.restart_index.checked_sub(1) else {
                    it.invalidate();
                    return Ok(false);
                };
                it.restart_index = before;
            }
            it.seek_to_restart(it.restart_index);
            while it.parse_next()? {
                if it.next_offset >= original {
                    if (it.comparator)(&it.key, &original_key) != Ordering::Less {
                        return Err(DecodeError::new(
                            original as u64,
                            DecodeErrorKind::KeyOrder { what: "block" },
                        ));
                    }
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    fn run(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<bool, DecodeError>,
    ) -> Result<bool, DecodeError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        step(self).inspect_err(|error| {
            self.invalidate();
            self.error = Some(error.clone());
        })
    }

    fn invalidate(&mut self) {
        self.valid = false;
        self.current = self.block.restarts_offset;
        self.next_offset = self.block.restarts_offset;
    }

    fn seek_to_restart(&mut self, index: usize) {
        self.key.clear();
        self.valid = false;
        self.restart_index = index;
        self.next_offset = self.block.restart_point(index);
    }

    /// Decodes the entry at `next_offset`, checking it against the
    /// previous one when the cursor was on an entry.
    fn parse_next(&mut self) -> Result<bool, DecodeError> {
        let had_previous = self.valid;
        self.valid = false;
        self.current = self.next_offset;
        let block = &self.block;
        let end = block.restarts_offset;
        if self.current >= end {
            self.current = end;
            return Ok(false);
        }
        while self.restart_index + 1 < block.num_restarts
            && block.restart_point(self.restart_index + 1) <= self.current
        {
            self.restart_index += 1;
        }
        let at_restart = block.restart_point(self.restart_index) == self.current;
        let previous_len = if at_restart { 0 } else { self.key.len() };
        let entry = decode_entry(block.entries(), self.current, previous_len)?;
        if self.restart_index + 1 < block.num_restarts
            && block.restart_point(self.restart_index + 1) < entry.value.end
        {
            return Err(DecodeError::new(
                self.current as u64,
                DecodeErrorKind::Malformed {
                    what: "block entry overlapping a restart point",
                },
            ));
        }
        self.scratch.clear();
        self.scratch
            .extend_from_slice(self.key.get(..entry.shared).unwrap_or_default());
        self.scratch
            .extend_from_slice(block.bytes.get(entry.key_delta).unwrap_or_default());
        if had_previous && (self.comparator)(&self.scratch, &self.key) != Ordering::Greater {
            return Err(DecodeError::new(
                self.current as u64,
                DecodeErrorKind::KeyOrder { what: "block" },
            ));
        }
        std::mem::swap(&mut self.key, &mut self.scratch);
        self.next_offset = entry.value.end;
        self.value = entry.value;
        self.valid = true;
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    #[test]
    fn keys_that_decrease_across_restarts_are_caught_moving_backward() {
        // Restart interval 1 holding `b` then `a` (a faulty writer; the
        // checksums would verify): forward, backward and seeks all fail.
        let bytes: &[u8] = &[
            0, 1, 1, b'b', b'1', 0, 1, 1, b'a', b'2', 0, 0, 0, 0, 5, 0, 0, 0, 2, 0, 0, 0,
        ];
        let block = Block::new(bytes).unwrap();
        let mut it = block.iter(crate::key::compare_bytewise);
        assert!(it.seek_to_last().unwrap());
        assert!(it.prev().is_err(), "moving back from `a` to `b` must fail");
    }

    use super::*;
    use crate::key::compare_bytewise;
    use proptest::prelude::*;

    fn build(entries: &[(&[u8], &[u8])], interval: usize) -> Vec<u8> {
        let mut b = BlockBuilder::new(interval, compare_bytewise);
        for (k, v) in entries {
            b.add(k, v);
        }
        b.finish().to_vec()
    }

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn scan_forward(bytes: &[u8]) -> Result<Entries, DecodeError> {
        let block = Block::new(bytes)?;
        let mut it = block.iter(compare_bytewise);
        let mut out = Vec::new();
        let mut more = it.seek_to_first()?;
        while more {
            let (k, v) = it.current().unwrap();
            out.push((k.to_vec(), v.to_vec()));
            more = it.next()?;
        }
        Ok(out)
    }

    #[test]
    fn empty_block_is_four_zero_bytes_and_iterates_nothing() {
        let bytes = build(&[], 16);
        assert_eq!(bytes, [0, 0, 0, 0]);
        let block = Block::new(&bytes[..]).unwrap();
        assert!(block.is_empty());
        let mut it = block.iter(compare_bytewise);
        assert!(!it.seek_to_first().unwrap());
        assert!(!it.seek_to_last().unwrap());
        assert!(!it.seek(b"x").unwrap());
    }

    #[test]
    fn block_shorter_than_restart_count_is_truncation() {
        for len in 0..4 {
            assert!(Block::new(&[0u8; 4][..len]).unwrap_err().is_truncation());
        }
    }

    #[test]
    fn restart_array_out_of_block_is_rejected() {
        let mut bytes = build(&[(b"a", b"1"), (b"b", b"2")], 1);
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
        let err = Block::new(&bytes[..]).unwrap_err();
        assert!(
            matches!(err.kind, DecodeErrorKind::LengthTooLarge { .. }),
            "{err}"
        );
        bytes[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Block::new(&bytes[..]).is_err());
    }

    #[test]
    fn restart_point_past_entries_or_unsorted_is_rejected() {
        let bytes = build(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], 1);
        let n = bytes.len();
        let restarts = n - 4 - 12;
        let mut past = bytes.clone();
        past[restarts + 4..restarts + 8].copy_from_slice(&(restarts as u32).to_le_bytes());
        assert!(matches!(
            Block::new(&past[..]).unwrap_err().kind,
            DecodeErrorKind::OutOfBounds { .. }
        ));
        let mut unsorted = bytes.clone();
        unsorted.copy_within(restarts + 4..restarts + 8, restarts + 8);
        assert!(matches!(
            Block::new(&unsorted[..]).unwrap_err().kind,
            DecodeErrorKind::Malformed { .. }
        ));
        let mut not_zero = bytes;
        not_zero[restarts..restarts + 4].copy_from_slice(&1u32.to_le_bytes());
        assert!(Block::new(&not_zero[..]).is_err());
    }

    #[test]
    fn shared_prefix_longer_than_previous_key_is_rejected() {
        // Second entry of "ab" -> "ac" shares 1 byte; claim 5.
        let mut bytes = build(&[(b"ab", b""), (b"ac", b"")], 16);
        let second = 3 + 2;
        assert_eq!(bytes[second], 1);
        bytes[second] = 5;
        let err = scan_forward(&bytes).unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::SharedPrefixTooLong {
                shared: 5,
                previous: 2
            }
        );
        assert_eq!(err.offset, second as u64);
    }

    #[test]
    fn shared_prefix_at_a_restart_point_is_rejected() {
        let mut bytes = build(&[(b"ab", b""), (b"ac", b"")], 1);
        bytes[5] = 1; // second entry is a restart point: must share nothing
        assert!(matches!(
            scan_forward(&bytes).unwrap_err().kind,
            DecodeErrorKind::SharedPrefixTooLong { .. }
        ));
    }

    #[test]
    fn varint_overflow_in_entry_is_rejected() {
        let mut bytes = build(&[(b"a", b"1")], 16);
        // A shared length of five bytes whose value needs more than 32 bits.
        bytes.splice(0..1, [0xff, 0xff, 0xff, 0xff, 0x7f]);
        let err = scan_forward(&bytes).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::VarintOverflow);
    }

    #[test]
    fn entry_running_into_restart_array_is_truncation() {
        let mut bytes = build(&[(b"a", b"1")], 16);
        bytes[2] = 40; // value_len past the entries
        assert!(scan_forward(&bytes).unwrap_err().is_truncation());
    }

    #[test]
    fn keys_out_of_order_are_reported_and_the_error_is_sticky() {
        let mut bytes = build(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], 16);
        // Entry 1 is at 5: shared 0, non_shared 1, value 1, key 'b'.
        assert_eq!(bytes[5 + 3], b'b');
        bytes[5 + 3] = b'0';
        let block = Block::new(&bytes[..]).unwrap();
        let mut it = block.iter(compare_bytewise);
        assert!(it.seek_to_first().unwrap());
        let err = it.next().unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::KeyOrder { what: "block" });
        assert!(!it.valid());
        assert_eq!(it.seek_to_first().unwrap_err(), err);
        assert_eq!(it.status(), Some(&err));
    }

    #[test]
    fn restart_point_inside_an_entry_is_rejected() {
        let mut bytes = build(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], 1);
        let restarts = bytes.len() - 4 - 12;
        bytes[restarts + 4..restarts + 8].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(
            scan_forward(&bytes).unwrap_err().kind,
            DecodeErrorKind::Malformed { .. }
        ));
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn adding_keys_out_of_order_is_a_programmer_error() {
        build(&[(b"b", b""), (b"a", b"")], 16);
    }

    fn sorted_entries() -> impl Strategy<Value = Entries> {
        proptest::collection::btree_map(
            proptest::collection::vec(
                prop_oneof![Just(0u8), Just(0xff), Just(b'a'), any::<u8>()],
                0..6,
            ),
            proptest::collection::vec(any::<u8>(), 0..8),
            0..60,
        )
        .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn blocks_round_trip_forward_backward_and_by_seek(
            entries in sorted_entries(),
            interval in 1usize..6,
            probe in proptest::collection::vec(any::<u8>(), 0..6),
        ) {
            let refs: Vec<(&[u8], &[u8])> = entries.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            let bytes = build(&refs, interval);
            prop_assert_eq!(&scan_forward(&bytes).unwrap(), &entries);

            let block = Block::new(&bytes[..]).unwrap();
            let mut it = block.iter(compare_bytewise);
            let mut backward = Vec::new();
            let mut more = it.seek_to_last().unwrap();
            while more {
                let (k, v) = it.current().unwrap();
                backward.push((k.to_vec(), v.to_vec()));
                more = it.prev().unwrap();
            }
            backward.reverse();
            prop_assert_eq!(&backward, &entries);

            for (i, (k, v)) in entries.iter().enumerate() {
                prop_assert!(it.seek(k).unwrap());
                prop_assert_eq!(it.current(), Some((&k[..], &v[..])));
                if i > 0 {
                    prop_assert!(it.prev().unwrap());
                    prop_assert_eq!(it.current().unwrap().0, &entries[i - 1].0[..]);
                }
            }
            let expected = entries.iter().find(|(k, _)| *k >= probe);
            prop_assert_eq!(it.seek(&probe).unwrap(), expected.is_some());
            if let Some((k, _)) = expected {
                prop_assert_eq!(it.current().unwrap().0, &k[..]);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80), probe in proptest::collection::vec(any::<u8>(), 0..4)) {
            if let Ok(block) = Block::new(&bytes[..]) {
                let mut it = block.iter(compare_bytewise);
                let mut more = it.seek_to_first();
                while matches!(more, Ok(true)) { more = it.next(); }
                let mut it = block.iter(compare_bytewise);
                let mut more = it.seek_to_last();
                while matches!(more, Ok(true)) { more = it.prev(); }
                let mut it = block.iter(compare_bytewise);
                let mut more = it.seek(&probe);
                while matches!(more, Ok(true)) { more = it.next(); }
            }
        }
    }
}
