//! WAL record framing: one record per write batch, with a CRC32 over
//! everything but the checksum itself.
//!
//! FORMAT (little-endian; records follow the segment header back to back):
//!
//! ```text
//!  0        4        8      9
//!  +--------+--------+------+---------------- - - - ----+
//!  | crc32  | length | type |  payload (length bytes)   |
//!  |  u32   |  u32   |  u8  |                           |
//!  +--------+--------+------+---------------- - - - ----+
//!           \______________ covered by crc32 __________/
//! ```
//!
//! - `crc32` (CRC-32/ISO-HDLC as computed by `crc32fast`) covers `length`,
//!   `type` and the payload, so a damaged length is caught before it is
//!   trusted for anything but a bounds check.
//! - `length` is at most [`MAX_RECORD_PAYLOAD`]; a larger value is rejected
//!   without allocating anything (decoding borrows from the input).
//! - `type` 0 is reserved: nine zero bytes are not a record but the start of
//!   a zero-filled (preallocated or never-written) tail. Type 1 is a write
//!   batch ([`super::batch`]), the only type a WAL segment holds; type 2 is
//!   a version edit, the only type a manifest holds (`crate::manifest`).
//!   Types with bit 7 set (`0x80..=0xff`) are *ignorable*: a reader that
//!   does not know one skips it; an unknown type below `0x80` is corruption.
//!
//! Why one record per batch, with no block fragmentation: a batch is then
//! atomic by construction (a torn batch is a torn record, which fails its
//! checksum or its length check, and is discarded whole), records can be
//! shipped to replicas as the exact bytes on disk, and a reader needs no
//! reassembly state.
//!
//! Invariants: `decode_record` never panics, never reads outside its input
//! and never allocates; it either returns a record whose checksum verified,
//! or says why not and where.

use crate::coding::Cursor;
use crate::error::{DecodeError, DecodeErrorKind};

/// Length of the record header (checksum, length, type).
pub const RECORD_HEADER_LEN: usize = 9;
/// The largest payload a record may carry (1 GiB).
pub const MAX_RECORD_PAYLOAD: u32 = 1 << 30;
/// Record types with this bit set may be skipped by readers that do not
/// know them.
pub const IGNORABLE_TYPE_BIT: u8 = 0x80;

/// The type byte of a record. On-disk values are forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// A write batch (type 1), in WAL segments.
    Batch,
    /// A version edit (type 2), in manifest files.
    Edit,
    /// An unknown type with bit 7 set, which readers skip.
    Ignorable(u8),
}

impl RecordType {
    /// The type byte.
    #[must_use]
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Batch => 1,
            Self::Edit => 2,
            Self::Ignorable(byte) => byte | IGNORABLE_TYPE_BIT,
        }
    }

    /// The type for a byte; `None` for 0 (reserved) and unknown types below
    /// `0x80`.
    #[must_use]
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Batch),
            2 => Some(Self::Edit),
            b if b & IGNORABLE_TYPE_BIT != 0 => Some(Self::Ignorable(b)),
            _ => None,
        }
    }
}

/// A decoded record, borrowing its payload from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's type.
    pub record_type: RecordType,
    /// The payload bytes (checksum verified).
    pub payload: &'a [u8],
    /// The record's whole length in bytes, header included.
    pub framed_len: usize,
}

/// Appends a framed record to `out`.
///
/// # Panics
/// If `payload` is longer than [`MAX_RECORD_PAYLOAD`]: callers bound batch
/// sizes long before this (a programmer error, not an input error).
///
/// # Examples
///
/// ```
/// use strata_format::wal::{decode_record, encode_record, RecordType};
/// let mut out = Vec::new();
/// encode_record(RecordType::Batch, b"payload", &mut out);
/// let record = decode_record(&out)?;
/// assert_eq!(record.payload, b"payload");
/// assert_eq!(record.framed_len, out.len());
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
pub fn encode_record(record_type: RecordType, payload: &[u8], out: &mut Vec<u8>) {
    let start = begin_record(out);
    out.extend_from_slice(payload);
    finish_record(out, start, record_type);
}

/// Reserves a record header at the end of `out` and returns its position;
/// append the payload to `out`, then call [`finish_record`]. This lets a
/// writer build a record in place without copying the payload twice.
pub fn begin_record(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER_LEN]);
    start
}

/// Fills in the header reserved by [`begin_record`] at `start`, covering
/// everything appended to `out` after it.
///
/// # Panics
/// If `start` is not a position returned by [`begin_record`] for this
/// buffer, or the payload exceeds [`MAX_RECORD_PAYLOAD`] (programmer
/// errors).
pub fn finish_record(out: &mut [u8], start: usize, record_type: RecordType) {
    let payload_len = out.len() - start - RECORD_HEADER_LEN;
    assert!(
        payload_len <= MAX_RECORD_PAYLOAD as usize,
        "record payload too large"
    );
    let Some(record) = out.get_mut(start..) else {
        panic!("finish_record: start {start} beyond buffer");
    };
    let Some((header, payload)) = record.split_first_chunk_mut::<RECORD_HEADER_LEN>() else {
        panic!("finish_record: no header reserved at {start}");
    };
    header[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[8] = record_type.to_byte();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[4..9]);
    hasher.update(payload);
    header[0..4].copy_from_slice(&hasher.finalize().to_le_bytes());
}

/// Whether `bytes` starts with a zero record header (the start of a
/// zero-filled tail).
#[must_use]
pub fn is_zero_header(bytes: &[u8]) -> bool {
    bytes
        .get(..RECORD_HEADER_LEN)
        .is_some_and(|h| h.iter().all(|&b| b == 0))
}

/// Decodes the record at the start of `bytes`.
///
/// A zero header (see [`is_zero_header`]) never verifies (the CRC of its
/// five covered zero bytes is not zero); callers that scan segments check
/// for it first.
///
/// # Errors
/// - `Truncated` when the header or the payload runs past the input (a torn
///   write, or a length field damaged to a large value),
/// - `LengthTooLarge` when the length exceeds [`MAX_RECORD_PAYLOAD`],
/// - `ChecksumMismatch` when the bytes do not match the stored CRC,
/// - `UnknownRecordType` for type 0 or an unknown type below `0x80`
///   (checked after the checksum, so it means the writer wrote that type).
pub fn decode_record(bytes: &[u8]) -> Result<RecordView<'_>, DecodeError> {
    let mut c = Cursor::new(bytes);
    let stored_crc = c.u32_le("record header")?;
    let length = c.u32_le("record header")?;
    let type_byte = c.u8("record header")?;
    if length > MAX_RECORD_PAYLOAD {
        return Err(DecodeError::new(
            4,
            DecodeErrorKind::LengthTooLarge {
                what: "record",
                length: u64::from(length),
                max: u64::from(MAX_RECORD_PAYLOAD),
            },
        ));
    }
    let payload = c.bytes(length as usize, "record payload")?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&length.to_le_bytes());
    hasher.update(&[type_byte]);
    hasher.update(payload);
    let actual_crc = hasher.finalize();
    if actual_crc != stored_crc {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::ChecksumMismatch {
                what: "record",
                expected: stored_crc,
                actual: actual_crc,
            },
        ));
    }
    let record_type = RecordType::from_byte(type_byte).ok_or_else(|| {
        DecodeError::new(
            8,
            DecodeErrorKind::UnknownRecordType {
                record_type: type_byte,
            },
        )
    })?;
    Ok(RecordView {
        record_type,
        payload,
        framed_len: c.position(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(RecordType::Batch, payload, &mut out);
        out
    }

    #[test]
    fn torn_header_is_truncation() {
        let bytes = record(b"hello");
        for len in 0..RECORD_HEADER_LEN {
            assert!(decode_record(&bytes[..len]).unwrap_err().is_truncation());
        }
    }

    #[test]
    fn torn_payload_is_truncation() {
        let bytes = record(b"hello world");
        for len in RECORD_HEADER_LEN..bytes.len() {
            let err = decode_record(&bytes[..len]).unwrap_err();
            assert!(err.is_truncation(), "{err}");
        }
    }

    #[test]
    fn crc_mismatch_is_reported_with_both_checksums() {
        let mut bytes = record(b"hello");
        bytes[RECORD_HEADER_LEN] ^= 1;
        let err = decode_record(&bytes).unwrap_err();
        assert!(
            matches!(err.kind, DecodeErrorKind::ChecksumMismatch { expected, actual, .. } if expected != actual)
        );
    }

    #[test]
    fn zero_filled_tail_is_recognised() {
        let zeros = [0u8; 64];
        assert!(is_zero_header(&zeros));
        // Nine zero bytes never verify as a record.
        assert!(decode_record(&zeros).is_err());
    }

    #[test]
    fn length_larger_than_file_is_truncation_without_allocation() {
        let mut bytes = record(b"abc");
        bytes[4..8].copy_from_slice(&(MAX_RECORD_PAYLOAD).to_le_bytes());
        // Decoding borrows: a 1 GiB claim over a 12-byte input is just a
        // truncation, and nothing of that size is allocated.
        assert!(decode_record(&bytes).unwrap_err().is_truncation());
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decode_record(&bytes).unwrap_err();
        assert!(
            matches!(err.kind, DecodeErrorKind::LengthTooLarge { length, .. } if length == u64::from(u32::MAX))
        );
    }

    #[test]
    fn unknown_record_type_is_corruption_unless_ignorable() {
        let mut out = Vec::new();
        let start = begin_record(&mut out);
        out.extend_from_slice(b"x");
        finish_record(&mut out, start, RecordType::Batch);
        // Rewrite the type to 7 and fix the checksum: a writer wrote it.
        out[8] = 7;
        let crc = crc32fast::hash(&out[4..]);
        out[0..4].copy_from_slice(&crc.to_le_bytes());
        let err = decode_record(&out).unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::UnknownRecordType { record_type: 7 }
        );

        let mut out = Vec::new();
        encode_record(RecordType::Ignorable(0x85), b"x", &mut out);
        assert_eq!(
            decode_record(&out).unwrap().record_type,
            RecordType::Ignorable(0x85)
        );
    }

    proptest! {
        #[test]
        fn records_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let bytes = record(&payload);
            let view = decode_record(&bytes).unwrap();
            prop_assert_eq!(view.payload, &payload[..]);
            prop_assert_eq!(view.framed_len, bytes.len());
        }

        #[test]
        fn any_single_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 0..64), bit in 0usize..1000) {
            let mut bytes = record(&payload);
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_record(&bytes).is_err());
        }
    }
}
