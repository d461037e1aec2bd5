//! The write-batch encoding: the payload of a `Batch` WAL record.
//!
//! FORMAT (little-endian):
//!
//! ```text
//!  0           8       12
//!  +-----------+-------+------ - - - ------+
//!  | first_seq | count |  count operations  |
//!  |    u64    |  u32  |                   |
//!  +-----------+-------+------ - - - ------+
//!
//!  operation := kind:u8  key_len:varint32  key  [value_len:varint32  value]
//!  kind      := 1 (Put, has a value) | 2 (Delete, no value)
//!             | 3 (DeleteRange: the key is the range's start, the value
//!                  its exclusive end; start < end)           0 is reserved
//! ```
//!
//! A `DeleteRange` at sequence number `s` hides every version of every key
//! in `[start, end)` with a sequence number below `s`, for readers at `s`
//! or later (a range tombstone).
//!
//! Operation `i` (from 0) has sequence number `first_seq + i`: sequence
//! numbers are dense per operation. `count` is at least 1 and must equal the
//! number of operations, with no bytes left over. `first_seq` is filled in by
//! the commit leader when it orders the batch, so a batch is encoded once,
//! by the writer's thread, and never re-encoded.
//!
//! The batch has no checksum of its own: it is only ever stored inside a
//! record (or a replication message) whose CRC covers it.
//!
//! Invariants: [`decode_batch`] validates every operation before returning,
//! so iterating a [`BatchView`] cannot fail.

use crate::coding::{Cursor, put_varint32, varint32_len};
use crate::error::{DecodeError, DecodeErrorKind};

/// Length of the batch header (first sequence number and count).
pub const BATCH_HEADER_LEN: usize = 12;

/// Operation kind byte of a put. On-disk values are forever.
pub const OP_PUT: u8 = 1;
/// Operation kind byte of a delete.
pub const OP_DELETE: u8 = 2;
/// Operation kind byte of a range deletion.
pub const OP_DELETE_RANGE: u8 = 3;
/// Operation kind byte of a skip: a sequence number used by an operation
/// that replication withheld (a key outside the ranges a range-limited
/// replica may see). No body; applying it changes nothing.
pub const OP_SKIP: u8 = 4;

/// One operation of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp<'a> {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// Remove every key in `[start, end)`.
    DeleteRange {
        /// The first key removed.
        start: &'a [u8],
        /// The first key after the range (exclusive); above `start`.
        end: &'a [u8],
    },
    /// Nothing: the sequence number of an operation withheld from a
    /// range-limited replica.
    Skip,
}

impl<'a> BatchOp<'a> {
    /// The operation's key (empty for a skip).
    #[must_use]
    pub fn key(&self) -> &'a [u8] {
        match *self {
            Self::Put { key, .. } | Self::Delete { key } => key,
            Self::DeleteRange { start, .. } => start,
            Self::Skip => &[],
        }
    }
}

/// A batch under construction: its encoded bytes, header first.
///
/// # Examples
///
/// ```
/// use strata_format::wal::{decode_batch, BatchBuilder, BatchOp};
/// let mut batch = BatchBuilder::new();
/// batch.put(b"k", b"v");
/// batch.delete(b"gone");
/// let mut bytes = batch.into_bytes();
/// strata_format::wal::set_batch_first_seq(&mut bytes, 10);
/// let view = decode_batch(&bytes)?;
/// assert_eq!(view.first_seq, 10);
/// assert_eq!(view.last_seq(), 11);
/// let ops: Vec<_> = view.ops().collect();
/// assert_eq!(ops[1], BatchOp::Delete { key: b"gone" });
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchBuilder {
    bytes: Vec<u8>,
    count: u32,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self {
            bytes: vec![0u8; BATCH_HEADER_LEN],
            count: 0,
        }
    }

    /// A batch holding the operations of an encoded batch (as a commit log
    /// record or a replication message carries it), to be appended again;
    /// its header's first sequence number is kept until the log assigns one.
    ///
    /// # Errors
    /// As [`decode_batch`].
    pub fn from_encoded(bytes: &[u8]) -> Result<Self, DecodeError> {
        let view = decode_batch(bytes)?;
        Ok(Self {
            bytes: bytes.to_vec(),
            count: view.count,
        })
    }

    /// Adds a put.
    ///
    /// # Panics
    /// If the key or value is 4 GiB or longer, or the batch already holds
    /// `u32::MAX` operations (callers enforce far smaller limits first).
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.bytes.reserve(1 + 10 + key.len() + value.len());
        self.bytes.push(OP_PUT);
        push_slice(&mut self.bytes, key);
        push_slice(&mut self.bytes, value);
        self.bump();
    }

    /// Adds a delete.
    ///
    /// # Panics
    /// As [`BatchBuilder::put`].
    pub fn delete(&mut self, key: &[u8]) {
        self.bytes.push(OP_DELETE);
        push_slice(&mut self.bytes, key);
        self.bump();
    }

    /// Adds a range deletion of `[start, end)`.
    ///
    /// # Panics
    /// As [`BatchBuilder::put`], and if `start >= end` (callers check
    /// first; the decoder rejects such an operation).
    pub fn delete_range(&mut self, start: &[u8], end: &[u8]) {
        assert!(start < end, "delete_range needs start < end");
        self.bytes.push(OP_DELETE_RANGE);
        push_slice(&mut self.bytes, start);
        push_slice(&mut self.bytes, end);
        self.bump();
    }

    /// Appends a skip: one sequence number, no effect (replication's
    /// stand-in for an operation it withholds).
    pub fn skip(&mut self) {
        self.bytes.push(OP_SKIP);
        self.bump();
    }

    fn bump(&mut self) {
        self.count = self
            .count
            .checked_add(1)
            .unwrap_or_else(|| panic!("batch op count overflow"));
        if let Some(count) = self.bytes.get_mut(8..BATCH_HEADER_LEN) {
            count.copy_from_slice(&self.count.to_le_bytes());
        }
    }

    /// The number of operations.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether the batch holds no operations.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded size in bytes, header included.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    /// The encoded bytes (with `first_seq` still 0).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded bytes, for [`set_batch_first_seq`] and framing.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Removes every operation, keeping the allocation.
    pub fn clear(&mut self) {
        self.bytes.truncate(BATCH_HEADER_LEN);
        self.bytes.fill(0);
        self.count = 0;
    }

    /// The size one put of these lengths adds to a batch.
    #[must_use]
    pub fn put_encoded_len(key_len: usize, value_len: usize) -> usize {
        1 + varint32_len(key_len as u32) + key_len + varint32_len(value_len as u32) + value_len
    }
}

fn push_slice(out: &mut Vec<u8>, bytes: &[u8]) {
    let len =
        u32::try_from(bytes.len()).unwrap_or_else(|_| panic!("key or value of 4 GiB or more"));
    put_varint32(out, len);
    out.extend_from_slice(bytes);
}

/// Writes `first_seq` into an encoded batch's header.
///
/// # Panics
/// If `batch` is shorter than the header (a programmer error).
pub fn set_batch_first_seq(batch: &mut [u8], first_seq: u64) {
    let Some(header) = batch.first_chunk_mut::<8>() else {
        panic!("batch shorter than its header");
    };
    *header = first_seq.to_le_bytes();
}

/// A validated batch, borrowing from its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchView<'a> {
    /// Sequence number of the first operation.
    pub first_seq: u64,
    /// Number of operations (at least 1).
    pub count: u32,
    ops: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Sequence number of the last operation.
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        // Validated in decode_batch: cannot overflow.
        self.first_seq + u64::from(self.count) - 1
    }

    /// The operations, in order; operation `i` has sequence number
    /// `first_seq + i`.
    #[must_use]
    pub fn ops(&self) -> BatchOps<'a> {
        BatchOps {
            cursor: Cursor::new(self.ops),
        }
    }
}

/// Iterator over a validated batch's operations.
#[derive(Debug, Clone)]
pub struct BatchOps<'a> {
    cursor: Cursor<'a>,
}

impl<'a> Iterator for BatchOps<'a> {
    type Item = BatchOp<'a>;

    fn next(&mut self) -> Option<BatchOp<'a>> {
        if self.cursor.is_empty() {
            return None;
        }
        // The batch was validated, so this cannot fail; if it somehow did,
        // ending the iteration is the only non-panicking answer.
        decode_op(&mut self.cursor).ok()
    }
}

fn decode_op<'a>(c: &mut Cursor<'a>) -> Result<BatchOp<'a>, DecodeError> {
    let at = c.position() as u64;
    match c.u8("batch operation")? {
        OP_PUT => {
            let key = c.length_prefixed("put key")?;
            let value = c.length_prefixed("put value")?;
            Ok(BatchOp::Put { key, value })
        }
        OP_DELETE => Ok(BatchOp::Delete {
            key: c.length_prefixed("delete key")?,
        }),
        OP_DELETE_RANGE => {
            let start = c.length_prefixed("delete-range start")?;
            let end = c.length_prefixed("delete-range end")?;
            if start >= end {
                return Err(DecodeError::new(
                    at,
                    DecodeErrorKind::Malformed {
                        what: "delete-range operation whose start is not below its end",
                    },
                ));
            }
            Ok(BatchOp::DeleteRange { start, end })
        }
        OP_SKIP => Ok(BatchOp::Skip),
        kind => Err(DecodeError::new(
            at,
            DecodeErrorKind::UnknownOpKind { kind },
        )),
    }
}

/// A view of a batch the caller encoded itself with [`BatchBuilder`] (so
/// its operations are valid by construction): reads the 12-byte header
/// only, where [`decode_batch`] walks every operation. `None` if the header
/// is missing, the count is 0 or the sequence range overflows. Should the
/// bytes be malformed after all, [`BatchView::ops`] ends at the first bad
/// operation; nothing panics.
///
/// # Examples
///
/// ```
/// use strata_format::wal::{BatchBuilder, set_batch_first_seq, view_built_batch};
/// let mut b = BatchBuilder::new();
/// b.put(b"k", b"v");
/// let mut bytes = b.into_bytes();
/// set_batch_first_seq(&mut bytes, 7);
/// let view = view_built_batch(&bytes).unwrap();
/// assert_eq!((view.first_seq, view.last_seq(), view.ops().count()), (7, 7, 1));
/// ```
#[must_use]
pub fn view_built_batch(bytes: &[u8]) -> Option<BatchView<'_>> {
    let mut c = Cursor::new(bytes);
    let first_seq = c.u64_le("batch header").ok()?;
    let count = c.u32_le("batch header").ok()?;
    if count == 0 || first_seq.checked_add(u64::from(count)).is_none() {
        return None;
    }
    let ops = bytes.get(c.position()..).unwrap_or_default();
    Some(BatchView {
        first_seq,
        count,
        ops,
    })
}

/// Decodes and validates a batch: header, every operation, the count, no
/// trailing bytes, and a sequence range that fits in `u64`.
///
/// # Errors
/// `Truncated`, `EmptyBatch`, `UnknownOpKind`, `VarintOverflow`,
/// `CountMismatch` or `SequenceOverflow`, with the offset inside `bytes`.
pub fn decode_batch(bytes: &[u8]) -> Result<BatchView<'_>, DecodeError> {
    let mut c = Cursor::new(bytes);
    let first_seq = c.u64_le("batch header")?;
    let count = c.u32_le("batch header")?;
    if count == 0 {
        return Err(DecodeError::new(8, DecodeErrorKind::EmptyBatch));
    }
    if first_seq.checked_add(u64::from(count)).is_none() {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::SequenceOverflow {
                first: first_seq,
                count: u64::from(count),
            },
        ));
    }
    let ops_start = c.position();
    let mut found: u64 = 0;
    while !c.is_empty() {
        if found == u64::from(count) {
            return Err(DecodeError::new(
                c.position() as u64,
                DecodeErrorKind::CountMismatch {
                    declared: u64::from(count),
                    found: found + 1,
                },
            ));
        }
        decode_op(&mut c)?;
        found += 1;
    }
    if found != u64::from(count) {
        return Err(DecodeError::new(
            8,
            DecodeErrorKind::CountMismatch {
                declared: u64::from(count),
                found,
            },
        ));
    }
    let ops = bytes.get(ops_start..).unwrap_or_default();
    Ok(BatchView {
        first_seq,
        count,
        ops,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn count_mismatch_too_few_ops() {
        let mut b = BatchBuilder::new();
        b.put(b"a", b"1");
        let mut bytes = b.into_bytes();
        bytes[8] = 2;
        let err = decode_batch(&bytes).unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::CountMismatch {
                declared: 2,
                found: 1
            }
        );
    }

    #[test]
    fn count_mismatch_too_many_ops() {
        let mut b = BatchBuilder::new();
        b.put(b"a", b"1");
        b.delete(b"b");
        let mut bytes = b.into_bytes();
        bytes[8] = 1;
        let err = decode_batch(&bytes).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::CountMismatch { declared: 1, .. }
        ));
    }

    #[test]
    fn delete_range_round_trips_and_an_empty_range_is_rejected() {
        let mut b = BatchBuilder::new();
        b.delete_range(b"a", b"c");
        let bytes = b.into_bytes();
        let view = decode_batch(&bytes).unwrap();
        assert_eq!(
            view.ops().collect::<Vec<_>>(),
            vec![BatchOp::DeleteRange {
                start: b"a",
                end: b"c"
            }]
        );
        // Hand-encode start == end: the decoder refuses it.
        let mut bad = bytes.clone();
        let len = bad.len();
        bad[len - 1] = b'a';
        let err = decode_batch(&bad).unwrap_err();
        assert!(err.to_string().contains("start is not below"), "{err}");
    }

    #[test]
    fn empty_batch_is_rejected() {
        let bytes = BatchBuilder::new().into_bytes();
        assert_eq!(
            decode_batch(&bytes).unwrap_err().kind,
            DecodeErrorKind::EmptyBatch
        );
    }

    #[test]
    fn unknown_op_kind_is_rejected() {
        let mut b = BatchBuilder::new();
        b.delete(b"k");
        let mut bytes = b.into_bytes();
        bytes[12] = 9;
        let err = decode_batch(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::new(12, DecodeErrorKind::UnknownOpKind { kind: 9 })
        );
    }

    #[test]
    fn sequence_overflow_is_rejected() {
        let mut b = BatchBuilder::new();
        b.delete(b"k");
        b.delete(b"l");
        let mut bytes = b.into_bytes();
        set_batch_first_seq(&mut bytes, u64::MAX);
        assert!(matches!(
            decode_batch(&bytes).unwrap_err().kind,
            DecodeErrorKind::SequenceOverflow { .. }
        ));
    }

    #[test]
    fn torn_op_is_truncation() {
        let mut b = BatchBuilder::new();
        b.put(b"key", b"value");
        let bytes = b.into_bytes();
        for len in BATCH_HEADER_LEN..bytes.len() {
            assert!(decode_batch(&bytes[..len]).is_err());
        }
    }

    #[test]
    fn empty_key_and_empty_value_are_distinct_from_delete() {
        let mut b = BatchBuilder::new();
        b.put(b"", b"");
        b.delete(b"");
        let mut bytes = b.into_bytes();
        set_batch_first_seq(&mut bytes, 1);
        let view = decode_batch(&bytes).unwrap();
        let ops: Vec<_> = view.ops().collect();
        assert_eq!(
            ops,
            vec![
                BatchOp::Put {
                    key: b"",
                    value: b""
                },
                BatchOp::Delete { key: b"" }
            ]
        );
    }

    proptest! {
        #[test]
        fn batches_round_trip(
            first_seq in 0u64..u64::MAX / 2,
            ops in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40), proptest::collection::vec(any::<u8>(), 0..80)), 1..30),
        ) {
            let mut b = BatchBuilder::new();
            for (is_put, k, v) in &ops {
                if *is_put { b.put(k, v) } else { b.delete(k) }
            }
            let mut bytes = b.into_bytes();
            set_batch_first_seq(&mut bytes, first_seq);
            let view = decode_batch(&bytes).unwrap();
            prop_assert_eq!(view.first_seq, first_seq);
            prop_assert_eq!(view.count as usize, ops.len());
            for (op, (is_put, k, v)) in view.ops().zip(&ops) {
                if *is_put {
                    prop_assert_eq!(op, BatchOp::Put { key: k, value: v });
                } else {
                    prop_assert_eq!(op, BatchOp::Delete { key: k });
                }
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_batch(&bytes);
        }
    }
}
