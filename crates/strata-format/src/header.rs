//! The 64-byte header that opens a WAL segment and a manifest: one codec
//! for what they share (magic, version, reserved word, database id,
//! checksum), each file kind filling the 28 bytes of fields in between.
//!
//! FORMAT (little-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic          the file kind's (`STRATWAL`, `STRATMAN`)
//!      8     4  version        the file kind's format version
//!     12     4  reserved       zero
//!     16    16  database_id    the database the file belongs to
//!     32    28  fields         the file kind's (zero where unused)
//!     60     4  crc32          of bytes 0..60
//! ```
//!
//! Checked in this order: magic, checksum, version, reserved word; the
//! file kind then checks its fields (and that unused ones are zero).

use crate::coding::Cursor;
use crate::error::{DecodeError, DecodeErrorKind};

/// The header's length.
pub const FILE_HEADER_LEN: usize = 64;
/// The length of the file kind's fields (offsets 32..60).
pub const FILE_HEADER_FIELDS_LEN: usize = 28;

/// What distinguishes one kind of file's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeaderKind {
    /// The magic bytes at offset 0.
    pub magic: [u8; 8],
    /// The format version at offset 8 this build writes and reads.
    pub version: u32,
    /// The file kind, in errors (`"WAL segment"`).
    pub file: &'static str,
    /// The header, in errors (`"segment header"`).
    pub header: &'static str,
}

/// Encodes a header of `kind` for `database_id` with the kind's `fields`.
///
/// # Examples
///
/// ```
/// use strata_format::header::{FileHeaderKind, decode_file_header, encode_file_header};
/// let kind = FileHeaderKind { magic: *b"EXAMPLE!", version: 1, file: "example", header: "example header" };
/// let bytes = encode_file_header(&kind, 7, &[1; 28]);
/// assert_eq!(decode_file_header(&kind, &bytes)?, (7, [1; 28]));
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
#[must_use]
pub fn encode_file_header(
    kind: &FileHeaderKind,
    database_id: u128,
    fields: &[u8; FILE_HEADER_FIELDS_LEN],
) -> [u8; FILE_HEADER_LEN] {
    let mut body = Vec::with_capacity(FILE_HEADER_LEN);
    body.extend_from_slice(&kind.magic);
    body.extend_from_slice(&kind.version.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&database_id.to_le_bytes());
    body.extend_from_slice(fields);
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    let mut out = [0u8; FILE_HEADER_LEN];
    out.copy_from_slice(&body);
    out
}

/// Decodes and checks a header of `kind`: returns the database id and the
/// kind's fields.
///
/// # Errors
/// `Truncated` if `bytes` is shorter than 64 bytes, else `BadMagic` (offset
/// 0), `ChecksumMismatch` (60), `UnsupportedVersion` (8) or
/// `ReservedNotZero` (12).
pub fn decode_file_header(
    kind: &FileHeaderKind,
    bytes: &[u8],
) -> Result<(u128, [u8; FILE_HEADER_FIELDS_LEN]), DecodeError> {
    let all = Cursor::new(bytes).bytes(FILE_HEADER_LEN, kind.header)?;
    let (body, crc_bytes) = all.split_at(FILE_HEADER_LEN - 4);
    let mut c = Cursor::new(body);
    let magic: [u8; 8] = c.array(kind.header)?;
    if magic != kind.magic {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::BadMagic {
                what: kind.file,
                found: magic.to_vec(),
            },
        ));
    }
    let stored_crc = Cursor::new(crc_bytes).u32_le(kind.header)?;
    let actual_crc = crc32fast::hash(body);
    if stored_crc != actual_crc {
        return Err(DecodeError::new(
            60,
            DecodeErrorKind::ChecksumMismatch {
                what: kind.header,
                expected: stored_crc,
                actual: actual_crc,
            },
        ));
    }
    let version = c.u32_le(kind.header)?;
    if version != kind.version {
        return Err(DecodeError::new(
            8,
            DecodeErrorKind::UnsupportedVersion {
                what: kind.file,
                found: version,
                supported: kind.version,
            },
        ));
    }
    if c.u32_le(kind.header)? != 0 {
        return Err(DecodeError::new(
            12,
            DecodeErrorKind::ReservedNotZero { what: kind.header },
        ));
    }
    let database_id = c.u128_le(kind.header)?;
    let fields: [u8; FILE_HEADER_FIELDS_LEN] = c.array(kind.header)?;
    Ok((database_id, fields))
}
