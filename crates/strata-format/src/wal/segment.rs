//! The WAL segment header and segment file names.
//!
//! FORMAT (64 bytes at offset 0 of every segment file, little-endian):
//!
//! ```text
//!  0       8      12      16                      32          40          48          60      64
//!  +-------+-------+-------+-----------------------+-----------+-----------+-----------+-------+
//!  | magic |version|  zero |      database_id      |  segment  | first_seq |   zero    | crc32 |
//!  |  8 B  |  u32  |  u32  |         u128          |  number   |    u64    |   12 B    |  u32  |
//!  +-------+-------+-------+-----------------------+-----------+-----------+-----------+-------+
//! ```
//!
//! - `magic` is `b"STRATWAL"`; `version` is [`SEGMENT_FORMAT_VERSION`].
//! - `database_id` ties the segment to one database, so a segment copied
//!   from another database is rejected instead of replayed.
//! - `segment_number` must equal the number in the file name, so a renamed
//!   or copied file is rejected.
//! - `first_seq` is the sequence number of the first operation the segment
//!   may hold; the first batch in the segment must start exactly there, so a
//!   gap between segments is detected.
//! - `crc32` covers bytes `0..60`.
//!
//! File name: `{segment_number:020}.wal`, so that lexical and numeric order
//! agree.
//!
//! Invariants: a header is written and synced before any record follows it,
//! so a damaged header with records after it is corruption, never a torn
//! write.

use crate::coding::Cursor;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::header::{
    FILE_HEADER_FIELDS_LEN, FILE_HEADER_LEN, FileHeaderKind, decode_file_header, encode_file_header,
};

/// Magic bytes at the start of every WAL segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"STRATWAL";
/// The segment format version this build writes and reads.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// Length of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: usize = FILE_HEADER_LEN;

/// The segment header's kind for the shared header codec.
const SEGMENT_HEADER_KIND: FileHeaderKind = FileHeaderKind {
    magic: SEGMENT_MAGIC,
    version: SEGMENT_FORMAT_VERSION,
    file: "WAL segment",
    header: "segment header",
};
/// File-name suffix of WAL segments.
pub const SEGMENT_SUFFIX: &str = ".wal";

/// The decoded header of a WAL segment.
///
/// # Examples
///
/// ```
/// use strata_format::wal::SegmentHeader;
/// let header = SegmentHeader { database_id: 7, segment_number: 3, first_seq: 100 };
/// let bytes = header.encode();
/// assert_eq!(SegmentHeader::decode(&bytes)?, header);
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The database this segment belongs to.
    pub database_id: u128,
    /// The segment's number (also in its file name).
    pub segment_number: u64,
    /// The sequence number of the first operation the segment may hold.
    pub first_seq: u64,
}

impl SegmentHeader {
    /// Encodes the header into its 64 bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut fields = [0u8; FILE_HEADER_FIELDS_LEN];
        let (numbers, _) = fields.split_at_mut(16);
        let (number, first) = numbers.split_at_mut(8);
        number.copy_from_slice(&self.segment_number.to_le_bytes());
        first.copy_from_slice(&self.first_seq.to_le_bytes());
        encode_file_header(&SEGMENT_HEADER_KIND, self.database_id, &fields)
    }

    /// Decodes and checks a header (magic, version, checksum, reserved
    /// bytes). It does not check the database id or segment number: see
    /// [`SegmentHeader::check`].
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] if `bytes` is shorter than 64 bytes,
    /// else `BadMagic`, `UnsupportedVersion`, `ChecksumMismatch` or
    /// `ReservedNotZero`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (database_id, fields) = decode_file_header(&SEGMENT_HEADER_KIND, bytes)?;
        let mut c = Cursor::new(&fields);
        let segment_number = c.u64_le("segment number")?;
        let first_seq = c.u64_le("first sequence number")?;
        let tail: [u8; 12] = c.array("segment reserved")?;
        if tail != [0u8; 12] {
            return Err(DecodeError::new(
                12,
                DecodeErrorKind::ReservedNotZero {
                    what: "segment header",
                },
            ));
        }
        Ok(Self {
            database_id,
            segment_number,
            first_seq,
        })
    }

    /// Checks that the header belongs to `database_id` and carries
    /// `segment_number` (the number from the file name).
    ///
    /// # Errors
    /// `WrongDatabase` or `WrongSegmentNumber`, at offset 16 or 32.
    pub fn check(&self, database_id: u128, segment_number: u64) -> Result<(), DecodeError> {
        if self.database_id != database_id {
            return Err(DecodeError::new(
                16,
                DecodeErrorKind::WrongDatabase {
                    expected: database_id,
                    found: self.database_id,
                },
            ));
        }
        if self.segment_number != segment_number {
            return Err(DecodeError::new(
                32,
                DecodeErrorKind::WrongSegmentNumber {
                    expected: segment_number,
                    found: self.segment_number,
                },
            ));
        }
        Ok(())
    }
}

/// The file name of segment `segment_number`.
///
/// # Examples
///
/// ```
/// assert_eq!(strata_format::wal::segment_file_name(42), "00000000000000000042.wal");
/// ```
#[must_use]
pub fn segment_file_name(segment_number: u64) -> String {
    format!("{segment_number:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name back into its number; `None` for any other
/// name (including names with the suffix but a malformed number).
///
/// # Examples
///
/// ```
/// use strata_format::wal::parse_segment_file_name;
/// assert_eq!(parse_segment_file_name("00000000000000000042.wal"), Some(42));
/// assert_eq!(parse_segment_file_name("42.wal"), None);
/// assert_eq!(parse_segment_file_name("SYNC_POINT"), None);
/// ```
#[must_use]
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            database_id: 0xfeed,
            segment_number: 9,
            first_seq: 1000,
        }
    }

    #[test]
    fn header_round_trips() {
        assert_eq!(SegmentHeader::decode(&header().encode()).unwrap(), header());
    }

    #[test]
    fn torn_header_is_truncation() {
        let bytes = header().encode();
        for len in 0..SEGMENT_HEADER_LEN {
            let err = SegmentHeader::decode(&bytes[..len]).unwrap_err();
            assert!(err.is_truncation(), "len {len}: {err}");
        }
    }

    #[test]
    fn header_bit_flip_is_detected() {
        let bytes = header().encode();
        for i in 0..SEGMENT_HEADER_LEN {
            let mut damaged = bytes;
            damaged[i] ^= 0x10;
            assert!(
                SegmentHeader::decode(&damaged).is_err(),
                "flip at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn segment_from_another_database_is_rejected() {
        let err = header().check(0xbeef, 9).unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::WrongDatabase { .. }));
    }

    #[test]
    fn segment_with_wrong_number_is_rejected() {
        let err = header().check(0xfeed, 10).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::WrongSegmentNumber {
                expected: 10,
                found: 9
            }
        ));
    }

    #[test]
    fn unsupported_version_is_named() {
        let mut bytes = header().encode();
        bytes[8] = 2;
        let crc = crc32fast::hash(&bytes[..60]);
        bytes[60..].copy_from_slice(&crc.to_le_bytes());
        let err = SegmentHeader::decode(&bytes).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::UnsupportedVersion { found: 2, .. }
        ));
    }

    #[test]
    fn file_names_round_trip_and_reject_strays() {
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("0000000000000000004x.wal"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000042.wal.tmp"),
            None
        );
        assert_eq!(parse_segment_file_name("99999999999999999999.wal"), None);
    }
}
