//! The one error type of this crate: why a byte string failed to decode,
//! and where.
//!
//! Every decoder returns [`DecodeError`], which carries the byte offset of
//! the problem (relative to the slice the decoder was given; callers that
//! know the slice's place in a file shift it with [`DecodeError::at`]) and a
//! structured [`DecodeErrorKind`] with the evidence (expected and actual
//! checksums, declared and available lengths).

use thiserror::Error;

/// A decoding failure: what was wrong ([`DecodeErrorKind`]) and at which
/// byte offset.
///
/// # Examples
///
/// ```
/// use strata_format::wal::decode_record;
/// let err = decode_record(&[1, 2, 3]).unwrap_err();
/// assert_eq!(err.offset, 0);
/// assert!(err.to_string().contains("truncated"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind} at offset {offset}")]
pub struct DecodeError {
    /// Byte offset of the problem, relative to the decoded slice unless
    /// shifted with [`DecodeError::at`].
    pub offset: u64,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// A new error of `kind` at `offset`.
    #[must_use]
    pub fn new(offset: u64, kind: DecodeErrorKind) -> Self {
        Self { offset, kind }
    }

    /// The same error with its offset shifted by `base` (the position of the
    /// decoded slice in its file).
    #[must_use]
    pub fn at(mut self, base: u64) -> Self {
        self.offset = self.offset.saturating_add(base);
        self
    }

    /// Whether the bytes simply ended early (a torn write looks like this).
    #[must_use]
    pub fn is_truncation(&self) -> bool {
        matches!(self.kind, DecodeErrorKind::Truncated { .. })
    }
}

/// What was wrong with the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended before a complete item.
    #[error("truncated {what}: needed {needed} bytes, {available} available")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Bytes the item needs.
        needed: u64,
        /// Bytes that were left.
        available: u64,
    },
    /// A stored checksum does not match the bytes it covers.
    #[error("checksum mismatch in {what}: stored {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch {
        /// What the checksum covers.
        what: &'static str,
        /// The checksum stored in the data.
        expected: u32,
        /// The checksum computed over the bytes read.
        actual: u32,
    },
    /// The file does not start with the expected magic bytes.
    #[error("bad magic in {what}: found {found:02x?}")]
    BadMagic {
        /// What kind of file or block was expected.
        what: &'static str,
        /// The bytes found instead.
        found: Vec<u8>,
    },
    /// A format version this build does not read.
    #[error("unsupported {what} format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version in the data.
        found: u32,
        /// The version this build supports.
        supported: u32,
    },
    /// The file belongs to another database.
    #[error("file belongs to database {found:032x}, expected {expected:032x}")]
    WrongDatabase {
        /// This database's id.
        expected: u128,
        /// The id stored in the file.
        found: u128,
    },
    /// A WAL segment's header names another segment number than its file
    /// name.
    #[error("segment header says segment {found}, expected {expected}")]
    WrongSegmentNumber {
        /// The number from the file name.
        expected: u64,
        /// The number in the header.
        found: u64,
    },
    /// A record type this build does not know and that is not marked
    /// ignorable.
    #[error("unknown record type {record_type}")]
    UnknownRecordType {
        /// The type byte found.
        record_type: u8,
    },
    /// A log lacks records it must hold: it starts at `found`, but
    /// everything from `needed` on is required (nothing else holds them).
    #[error(
        "the log starts at sequence number {found}, but the records from {needed} on are needed"
    )]
    RecordsMissing {
        /// The first sequence number required.
        needed: u64,
        /// The first sequence number the log holds.
        found: u64,
    },
    /// A length field larger than any valid item.
    #[error("{what} length {length} exceeds the maximum {max}")]
    LengthTooLarge {
        /// What the length describes.
        what: &'static str,
        /// The length found.
        length: u64,
        /// The largest valid length.
        max: u64,
    },
    /// A variable-length integer longer than its type allows.
    #[error("varint overflow")]
    VarintOverflow,
    /// A write-batch operation kind this build does not know.
    #[error("unknown batch operation kind {kind}")]
    UnknownOpKind {
        /// The kind byte found.
        kind: u8,
    },
    /// A batch whose operation count does not match its operations.
    #[error("batch declares {declared} operations but holds {found}")]
    CountMismatch {
        /// The count in the batch header.
        declared: u64,
        /// The operations actually decoded (or at least this many).
        found: u64,
    },
    /// A batch with no operations (never written).
    #[error("empty batch")]
    EmptyBatch,
    /// A sequence number out of order: not the one that must come next.
    #[error("sequence number {found} where {expected} was expected")]
    SequenceMismatch {
        /// The sequence number that must come next.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// A sequence range that overflows `u64`.
    #[error("sequence range overflows: first {first}, count {count}")]
    SequenceOverflow {
        /// First sequence number.
        first: u64,
        /// Operation count.
        count: u64,
    },
    /// Bytes that must be zero are not.
    #[error("reserved bytes in {what} are not zero")]
    ReservedNotZero {
        /// Where the reserved bytes are.
        what: &'static str,
    },
    /// Non-zero bytes after a zero-filled region where only zeros may be.
    #[error("non-zero bytes after zero-filled region")]
    GarbageAfterZeros,
    /// A value-kind byte of an internal key that this build does not know.
    #[error("unknown value kind {kind}")]
    UnknownValueKind {
        /// The kind byte found.
        kind: u8,
    },
    /// Keys that must be strictly increasing are not.
    #[error("keys out of order in {what}")]
    KeyOrder {
        /// Where the keys are.
        what: &'static str,
    },
    /// A block entry shares more key bytes with the previous key than that
    /// key has.
    #[error("block entry shares {shared} key bytes with a previous key of {previous} bytes")]
    SharedPrefixTooLong {
        /// The shared length found.
        shared: u64,
        /// The previous key's length.
        previous: u64,
    },
    /// A region that lies (partly) outside the bytes that must contain it.
    #[error("{what} at {offset} of {len} bytes lies outside 0..{bound}")]
    OutOfBounds {
        /// What the region is.
        what: &'static str,
        /// Where the region starts.
        offset: u64,
        /// The region's length.
        len: u64,
        /// The end of the bytes that must contain it.
        bound: u64,
    },
    /// A compression type byte this build does not know.
    #[error("unknown compression type {compression}")]
    UnknownCompression {
        /// The byte found.
        compression: u8,
    },
    /// Compressed bytes that do not decompress to what they declare.
    #[error("bad compressed data: {what}")]
    BadCompression {
        /// What was wrong.
        what: &'static str,
    },
    /// A file whose length is not the one recorded for it.
    #[error("file is {actual} bytes, expected {expected}")]
    FileSizeMismatch {
        /// The recorded length.
        expected: u64,
        /// The length of the bytes given.
        actual: u64,
    },
    /// A structural rule of the format is broken.
    #[error("malformed {what}")]
    Malformed {
        /// The rule that is broken.
        what: &'static str,
    },
}
