//! A table's framing: block trailers, block handles, the footer and the
//! properties block.
//!
//! FORMAT of a table file (all integers little-endian):
//!
//! ```text
//!  +--------------+- - -+--------------+--------+------------+-------+--------+
//!  | data block 0 | ... | data block n | filter | properties | index | footer |
//!  +--------------+- - -+--------------+--------+------------+-------+--------+
//!
//!  block   := contents  compression:u8  crc32:u32
//!  handle  := offset:varint64  size:varint64  checksum:u32     (index values)
//! ```
//!
//! **Blocks.** `contents` is the block as built ([`super::block`] for data
//! and index blocks, [`super::bloom`] for the filter, [`Properties`]),
//! compressed or not. `compression` is 0 (none) or 1 (LZ4 block format,
//! the payload being `uncompressed_len:varint32 ++ lz4 data`); these values
//! are forever. A block is stored uncompressed when compression saves less
//! than an eighth. `crc32` (CRC-32/ISO-HDLC, `crc32fast`) covers `contents
//! ++ compression ++ offset:u64`, where `offset` is the block's position in
//! the file: a valid block read from the wrong place (a misdirected read
//! or write) fails its checksum although its bytes are intact.
//!
//! **Handles.** A [`BlockHandle`] names a block by `offset`, `size` (the
//! whole stored block, trailer included) and `checksum` (a copy of the
//! block's trailer CRC). The parent (an index entry, or the footer) thus
//! also vouches for the child: a block replaced by another valid block
//! written at the same offset (say, by an older version of the file) is
//! caught.
//!
//! **Footer**, the last [`FOOTER_LEN`] = 80 bytes:
//!
//! ```text
//!  0              20              40                60      64       68      72       80
//!  +--------------+---------------+-----------------+-------+--------+-------+--------+
//!  | index handle | filter handle | properties hdl. |version|reserved| crc32 | magic  |
//!  |    20 B      |     20 B      |      20 B       |  u32  | u32 = 0|  u32  | 8 B    |
//!  +--------------+---------------+-----------------+-------+--------+-------+--------+
//!  fixed handle := offset:u64  size:u64  checksum:u32
//! ```
//!
//! - `magic` is `b"STRATSST"`, `version` is [`TABLE_FORMAT_VERSION`], and
//!   `crc32` covers bytes `0..68`. The footer has no offset in its checksum:
//!   it is found by position (the end of a file whose size the manifest
//!   records).
//! - A filter handle of all zeros means the table has no filter.
//!
//! **Properties**: a sequence of `tag:varint32 length:varint32
//! value[length]` fields with strictly increasing tags. Integer values are
//! a varint64 filling the value exactly; key values are raw internal keys.
//! Forward compatibility: readers skip tags they do not know, and a missing
//! known tag reads as 0 (or empty); a change that old readers must not
//! ignore needs a new format version instead.
//!
//! Invariants: decoders check lengths before slicing, never allocate a size
//! read from the input beyond [`MAX_BLOCK_UNCOMPRESSED`], and verify the
//! checksums before interpreting anything.

use std::borrow::Cow;

use crate::coding::{Cursor, put_varint32, put_varint64};
use crate::error::{DecodeError, DecodeErrorKind};

/// Magic bytes at the end of every table file.
pub const TABLE_MAGIC: [u8; 8] = *b"STRATSST";
/// The table format version this build writes and reads.
pub const TABLE_FORMAT_VERSION: u32 = 1;
/// Length of the footer in bytes.
pub const FOOTER_LEN: usize = 80;
/// Length of a block trailer (compression byte and CRC).
pub const BLOCK_TRAILER_LEN: usize = 5;
/// The most bytes a compressed block may decompress to (64 MiB).
pub const MAX_BLOCK_UNCOMPRESSED: usize = 64 << 20;
/// LZ4 cannot expand input by more than this factor (each extra byte of
/// a match length adds at most 255 bytes of output).
const LZ4_MAX_RATIO: u64 = 255;

/// How a block's contents are stored. The byte values are on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    /// Stored as is (byte 0).
    #[default]
    None = 0,
    /// LZ4 block format with the uncompressed length as a varint32 prefix
    /// (byte 1).
    Lz4 = 1,
}

impl Compression {
    /// The compression for a trailer byte, if known.
    #[must_use]
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::None),
            1 => Some(Self::Lz4),
            _ => None,
        }
    }
}

/// Where a block is and what its checksum must be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BlockHandle {
    /// The block's offset in the file.
    pub offset: u64,
    /// The stored block's length, trailer included.
    pub size: u64,
    /// The CRC in the block's trailer.
    pub checksum: u32,
}

impl BlockHandle {
    /// Appends the variable-width encoding (used in index entries).
    pub fn encode_to(&self, out: &mut Vec<u8>) {
        put_varint64(out, self.offset);
        put_varint64(out, self.size);
        out.extend_from_slice(&self.checksum.to_le_bytes());
    }

    /// Decodes a variable-width handle that must fill `bytes` exactly.
    ///
    /// # Errors
    /// `Truncated`, `VarintOverflow`, or `Malformed` for trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(bytes);
        let handle = Self {
            offset: c.varint64("block handle offset")?,
            size: c.varint64("block handle size")?,
            checksum: c.u32_le("block handle checksum")?,
        };
        if !c.is_empty() {
            return Err(DecodeError::new(
                c.position() as u64,
                DecodeErrorKind::Malformed {
                    what: "block handle (trailing bytes)",
                },
            ));
        }
        Ok(handle)
    }

    /// The offset just past the block.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.size)
    }

    fn encode_fixed(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.checksum.to_le_bytes());
    }

    fn decode_fixed(c: &mut Cursor<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            offset: c.u64_le("footer handle")?,
            size: c.u64_le("footer handle")?,
            checksum: c.u32_le("footer handle")?,
        })
    }
}

fn block_crc(payload: &[u8], compression: u8, offset: u64) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(payload);
    hasher.update(&[compression]);
    hasher.update(&offset.to_le_bytes());
    hasher.finalize()
}

/// Appends a block (contents, compressed if that pays, and trailer) that
/// will sit at file offset `offset`, and returns its handle.
///
/// # Panics
/// If `contents` is 4 GiB or longer and compression was asked for.
///
/// # Examples
///
/// ```
/// use strata_format::table::{decode_block, encode_block, Compression};
/// let mut file = vec![0u8; 100]; // whatever precedes the block
/// let handle = encode_block(b"contents", Compression::None, 100, &mut file);
/// let stored = &file[100..];
/// assert_eq!(&*decode_block(stored, &handle, 1 << 20)?, b"contents");
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
pub fn encode_block(
    contents: &[u8],
    compression: Compression,
    offset: u64,
    out: &mut Vec<u8>,
) -> BlockHandle {
    let start = out.len();
    let mut stored = Compression::None;
    if compression == Compression::Lz4 && contents.len() <= MAX_BLOCK_UNCOMPRESSED {
        let len = u32::try_from(contents.len()).unwrap_or_else(|_| panic!("block too large"));
        put_varint32(out, len);
        let header = out.len() - start;
        out.resize(
            start + header + lz4_flex::block::get_maximum_output_size(contents.len()),
            0,
        );
        let written = out
            .get_mut(start + header..)
            .and_then(|dest| lz4_flex::block::compress_into(contents, dest).ok());
        match written {
            Some(n) if header + n < contents.len() - contents.len() / 8 => {
                out.truncate(start + header + n);
                stored = Compression::Lz4;
            }
            _ => out.truncate(start),
        }
    }
    if stored == Compression::None {
        out.extend_from_slice(contents);
    }
    let crc = block_crc(out.get(start..).unwrap_or_default(), stored as u8, offset);
    out.push(stored as u8);
    out.extend_from_slice(&crc.to_le_bytes());
    BlockHandle {
        offset,
        size: (out.len() - start) as u64,
        checksum: crc,
    }
}

/// Verifies a stored block (`block` is exactly the `handle.size` bytes at
/// `handle.offset`) and returns its contents, decompressed into at most
/// `max_uncompressed` bytes. Uncompressed contents are borrowed.
///
/// # Errors
/// - `Truncated` if `block` is not `handle.size` bytes or is shorter than
///   a trailer,
/// - `ChecksumMismatch` (what `"block"`) if the trailer CRC does not cover
///   the bytes at this offset, (what `"block handle"`) if the block is not
///   the one the handle names,
/// - `UnknownCompression` for a compression byte other than 0 or 1,
/// - `LengthTooLarge` if the declared uncompressed length exceeds
///   `max_uncompressed` (a decompression bomb), `BadCompression` if it is
///   impossible for the payload or the payload does not decompress to
///   exactly that length.
pub fn decode_block<'a>(
    block: &'a [u8],
    handle: &BlockHandle,
    max_uncompressed: usize,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    if block.len() as u64 != handle.size {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::Truncated {
                what: "block",
                needed: handle.size,
                available: block.len() as u64,
            },
        ));
    }
    let Some((payload, trailer)) = block.split_last_chunk::<BLOCK_TRAILER_LEN>() else {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::Truncated {
                what: "block trailer",
                needed: BLOCK_TRAILER_LEN as u64,
                available: block.len() as u64,
            },
        ));
    };
    let [compression, crc @ ..] = *trailer;
    let stored_crc = u32::from_le_bytes(crc);
    let actual_crc = block_crc(payload, compression, handle.offset);
    let trailer_at = payload.len() as u64;
    if stored_crc != actual_crc {
        return Err(DecodeError::new(
            trailer_at + 1,
            DecodeErrorKind::ChecksumMismatch {
                what: "block",
                expected: stored_crc,
                actual: actual_crc,
            },
        ));
    }
    if stored_crc != handle.checksum {
        return Err(DecodeError::new(
            trailer_at + 1,
            DecodeErrorKind::ChecksumMismatch {
                what: "block handle",
                expected: handle.checksum,
                actual: stored_crc,
            },
        ));
    }
    match Compression::from_byte(compression) {
        Some(Compression::None) => Ok(Cow::Borrowed(payload)),
        Some(Compression::Lz4) => decompress_lz4(payload, max_uncompressed).map(Cow::Owned),
        None => Err(DecodeError::new(
            trailer_at,
            DecodeErrorKind::UnknownCompression { compression },
        )),
    }
}

fn decompress_lz4(payload: &[u8], max_uncompressed: usize) -> Result<Vec<u8>, DecodeError> {
    let mut c = Cursor::new(payload);
    let declared = c.varint32("compressed block length")? as usize;
    let data = payload.get(c.position()..).unwrap_or_default();
    if declared > max_uncompressed {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::LengthTooLarge {
                what: "decompressed block",
                length: declared as u64,
                max: max_uncompressed as u64,
            },
        ));
    }
    if declared as u64 > (data.len() as u64).saturating_mul(LZ4_MAX_RATIO) {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::BadCompression {
                what: "declared length larger than the payload can hold",
            },
        ));
    }
    let mut out = vec![0u8; declared];
    match lz4_flex::block::decompress_into(data, &mut out) {
        Ok(n) if n == declared => Ok(out),
        Ok(_) => Err(DecodeError::new(
            0,
            DecodeErrorKind::BadCompression {
                what: "decompressed length differs from the declared length",
            },
        )),
        Err(_) => Err(DecodeError::new(
            c.position() as u64,
            DecodeErrorKind::BadCompression {
                what: "invalid lz4 data",
            },
        )),
    }
}

/// The fixed-size record at the end of a table.
///
/// # Examples
///
/// ```
/// use strata_format::table::{BlockHandle, Footer};
/// let footer = Footer {
///     index: BlockHandle { offset: 10, size: 20, checksum: 3 },
///     filter: None,
///     properties: BlockHandle { offset: 0, size: 10, checksum: 4 },
/// };
/// assert_eq!(Footer::decode(&footer.encode())?, footer);
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// The index block.
    pub index: BlockHandle,
    /// The filter block, if the table has one.
    pub filter: Option<BlockHandle>,
    /// The properties block.
    pub properties: BlockHandle,
}

impl Footer {
    /// The footer's 80 bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut body = Vec::with_capacity(FOOTER_LEN);
        self.index.encode_fixed(&mut body);
        self.filter.unwrap_or_default().encode_fixed(&mut body);
        self.properties.encode_fixed(&mut body);
        body.extend_from_slice(&TABLE_FORMAT_VERSION.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body.extend_from_slice(&TABLE_MAGIC);
        let mut out = [0u8; FOOTER_LEN];
        out.copy_from_slice(&body);
        out
    }

    /// Decodes the footer from the last [`FOOTER_LEN`] bytes of `bytes`.
    /// Error offsets are relative to the start of the footer.
    ///
    /// # Errors
    /// `Truncated` if `bytes` is shorter than a footer, then `BadMagic`,
    /// `ChecksumMismatch`, `UnsupportedVersion` or `ReservedNotZero`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let Some((_, footer)) = bytes.split_last_chunk::<FOOTER_LEN>() else {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::Truncated {
                    what: "table footer",
                    needed: FOOTER_LEN as u64,
                    available: bytes.len() as u64,
                },
            ));
        };
        let (body, crc_and_magic) = footer.split_at(FOOTER_LEN - 12);
        let mut c = Cursor::new(crc_and_magic);
        let stored_crc = c.u32_le("footer crc")?;
        let magic: [u8; 8] = c.array("footer magic")?;
        if magic != TABLE_MAGIC {
            return Err(DecodeError::new(
                (FOOTER_LEN - 8) as u64,
                DecodeErrorKind::BadMagic {
                    what: "table",
                    found: magic.to_vec(),
                },
            ));
        }
        let actual_crc = crc32fast::hash(body);
        if stored_crc != actual_crc {
            return Err(DecodeError::new(
                (FOOTER_LEN - 12) as u64,
                DecodeErrorKind::ChecksumMismatch {
                    what: "table footer",
                    expected: stored_crc,
                    actual: actual_crc,
                },
            ));
        }
        let mut c = Cursor::new(body);
        let index = BlockHandle::decode_fixed(&mut c)?;
        let filter = BlockHandle::decode_fixed(&mut c)?;
        let properties = BlockHandle::decode_fixed(&mut c)?;
        let version = c.u32_le("footer version")?;
        if version != TABLE_FORMAT_VERSION {
            return Err(DecodeError::new(
                60,
                DecodeErrorKind::UnsupportedVersion {
                    what: "table",
                    found: version,
                    supported: TABLE_FORMAT_VERSION,
                },
            ));
        }
        if c.u32_le("footer reserved")? != 0 {
            return Err(DecodeError::new(
                64,
                DecodeErrorKind::ReservedNotZero {
                    what: "table footer",
                },
            ));
        }
        Ok(Self {
            index,
            filter: (filter != BlockHandle::default()).then_some(filter),
            properties,
        })
    }
}

const TAG_ENTRIES: u32 = 1;
const TAG_DELETIONS: u32 = 2;
const TAG_DATA_BLOCKS: u32 = 3;
const TAG_RAW_KEY_BYTES: u32 = 4;
const TAG_RAW_VALUE_BYTES: u32 = 5;
const TAG_SMALLEST_SEQ: u32 = 6;
const TAG_LARGEST_SEQ: u32 = 7;
const TAG_SMALLEST_KEY: u32 = 8;
const TAG_LARGEST_KEY: u32 = 9;
const TAG_LEVEL: u32 = 10;

/// Facts about a table, written by the builder and read at open.
///
/// # Examples
///
/// ```
/// use strata_format::table::Properties;
/// let props = Properties { entries: 3, level: 2, ..Properties::default() };
/// assert_eq!(Properties::decode(&props.encode())?, props);
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// Entries (puts and tombstones).
    pub entries: u64,
    /// Tombstones among the entries.
    pub deletions: u64,
    /// Data blocks.
    pub data_blocks: u64,
    /// Total length of the internal keys, before prefix compression.
    pub raw_key_bytes: u64,
    /// Total length of the values.
    pub raw_value_bytes: u64,
    /// The lowest sequence number of any entry (0 if there are none).
    pub smallest_seq: u64,
    /// The highest sequence number of any entry (0 if there are none).
    pub largest_seq: u64,
    /// The first internal key (empty if there are no entries).
    pub smallest_key: Vec<u8>,
    /// The last internal key (empty if there are no entries).
    pub largest_key: Vec<u8>,
    /// The LSM level the table was written for (0 for a flush).
    pub level: u32,
}

impl Properties {
    /// The tagged encoding.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let ints = [
            (TAG_ENTRIES, self.entries),
            (TAG_DELETIONS, self.deletions),
            (TAG_DATA_BLOCKS, self.data_blocks),
            (TAG_RAW_KEY_BYTES, self.raw_key_bytes),
            (TAG_RAW_VALUE_BYTES, self.raw_value_bytes),
            (TAG_SMALLEST_SEQ, self.smallest_seq),
            (TAG_LARGEST_SEQ, self.largest_seq),
        ];
        for (tag, value) in ints {
            let mut field = Vec::new();
            put_varint64(&mut field, value);
            put_field(&mut out, tag, &field);
        }
        put_field(&mut out, TAG_SMALLEST_KEY, &self.smallest_key);
        put_field(&mut out, TAG_LARGEST_KEY, &self.largest_key);
        let mut level = Vec::new();
        put_varint64(&mut level, u64::from(self.level));
        put_field(&mut out, TAG_LEVEL, &level);
        out
    }

    /// Decodes the tagged encoding, skipping unknown tags.
    ///
    /// # Errors
    /// `Truncated` or `VarintOverflow` for a damaged field, `Malformed` if
    /// tags do not increase or an integer field is not one varint64.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut props = Self::default();
        let mut c = Cursor::new(bytes);
        let mut last_tag = 0;
        while !c.is_empty() {
            let at = c.position() as u64;
            let tag = c.varint32("properties tag")?;
            let value = c.length_prefixed("properties value")?;
            if tag <= last_tag {
                return Err(DecodeError::new(
                    at,
                    DecodeErrorKind::Malformed {
                        what: "properties (tags must increase)",
                    },
                ));
            }
            last_tag = tag;
            let int = || -> Result<u64, DecodeError> {
                let mut v = Cursor::new(value);
                let n = v.varint64("properties integer")?;
                if !v.is_empty() {
                    return Err(DecodeError::new(
                        0,
                        DecodeErrorKind::Malformed {
                            what: "properties integer (trailing bytes)",
                        },
                    ));
                }
                Ok(n)
            };
            let int = || int().map_err(|e| e.at(at));
            match tag {
                TAG_ENTRIES => props.entries = int()?,
                TAG_DELETIONS => props.deletions = int()?,
                TAG_DATA_BLOCKS => props.data_blocks = int()?,
                TAG_RAW_KEY_BYTES => props.raw_key_bytes = int()?,
                TAG_RAW_VALUE_BYTES => props.raw_value_bytes = int()?,
                TAG_SMALLEST_SEQ => props.smallest_seq = int()?,
                TAG_LARGEST_SEQ => props.largest_seq = int()?,
                TAG_SMALLEST_KEY => props.smallest_key = value.to_vec(),
                TAG_LARGEST_KEY => props.largest_key = value.to_vec(),
                TAG_LEVEL => {
                    props.level = u32::try_from(int()?).map_err(|_| {
                        DecodeError::new(
                            at,
                            DecodeErrorKind::Malformed {
                                what: "properties level",
                            },
                        )
                    })?;
                }
                _ => {}
            }
        }
        Ok(props)
    }
}

fn put_field(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    put_varint32(out, tag);
    let len = u32::try_from(value.len()).unwrap_or_else(|_| panic!("property too large"));
    put_varint32(out, len);
    out.extend_from_slice(value);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stored(contents: &[u8], compression: Compression, offset: u64) -> (Vec<u8>, BlockHandle) {
        let mut out = Vec::new();
        let handle = encode_block(contents, compression, offset, &mut out);
        (out, handle)
    }

    #[test]
    fn compressible_block_is_stored_as_lz4_and_round_trips() {
        let contents = b"abcdefgh".repeat(200);
        let (bytes, handle) = stored(&contents, Compression::Lz4, 4096);
        assert!(bytes.len() < contents.len() / 4);
        assert_eq!(bytes[bytes.len() - 5], 1);
        let decoded = decode_block(&bytes, &handle, MAX_BLOCK_UNCOMPRESSED).unwrap();
        assert!(matches!(decoded, Cow::Owned(_)));
        assert_eq!(&*decoded, &contents[..]);
    }

    #[test]
    fn incompressible_block_falls_back_to_none() {
        let contents: Vec<u8> = (0..64u32).map(|i| (i * 197 % 251) as u8).collect();
        let (bytes, handle) = stored(&contents, Compression::Lz4, 0);
        assert_eq!(bytes[bytes.len() - 5], 0);
        let decoded = decode_block(&bytes, &handle, MAX_BLOCK_UNCOMPRESSED).unwrap();
        assert!(matches!(decoded, Cow::Borrowed(_)));
    }

    #[test]
    fn block_read_at_another_offset_fails_its_checksum() {
        let (bytes, handle) = stored(b"hello", Compression::None, 100);
        let moved = BlockHandle {
            offset: 200,
            ..handle
        };
        let err = decode_block(&bytes, &moved, 1 << 20).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::ChecksumMismatch { what: "block", .. }
        ));
    }

    #[test]
    fn block_other_than_the_one_named_by_the_handle_is_caught() {
        let (_, handle) = stored(b"version one", Compression::None, 100);
        let (other, _) = stored(b"version two", Compression::None, 100);
        let err = decode_block(&other, &handle, 1 << 20).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::ChecksumMismatch {
                what: "block handle",
                ..
            }
        ));
    }

    /// A block whose trailer is recomputed so that only the content check
    /// can object.
    fn forge(payload: &[u8], compression: u8, offset: u64) -> (Vec<u8>, BlockHandle) {
        let crc = block_crc(payload, compression, offset);
        let mut bytes = payload.to_vec();
        bytes.push(compression);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let handle = BlockHandle {
            offset,
            size: bytes.len() as u64,
            checksum: crc,
        };
        (bytes, handle)
    }

    #[test]
    fn unknown_compression_byte_is_rejected() {
        let (bytes, handle) = forge(b"abc", 2, 0);
        assert_eq!(
            decode_block(&bytes, &handle, 1 << 20).unwrap_err().kind,
            DecodeErrorKind::UnknownCompression { compression: 2 }
        );
    }

    #[test]
    fn decompression_bomb_is_capped() {
        let contents = vec![0u8; 1 << 20];
        let (bytes, handle) = stored(&contents, Compression::Lz4, 0);
        let err = decode_block(&bytes, &handle, 1 << 16).unwrap_err();
        assert!(
            matches!(err.kind, DecodeErrorKind::LengthTooLarge { .. }),
            "{err}"
        );

        // A tiny payload claiming 60 MiB is refused before allocating it.
        let mut payload = Vec::new();
        put_varint32(&mut payload, 60 << 20);
        payload.extend_from_slice(&[0x1f, 0x00, 0x01, 0x00]);
        let (bytes, handle) = forge(&payload, 1, 0);
        let err = decode_block(&bytes, &handle, MAX_BLOCK_UNCOMPRESSED).unwrap_err();
        assert!(
            matches!(err.kind, DecodeErrorKind::BadCompression { .. }),
            "{err}"
        );
    }

    fn lz4(contents: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(contents.len())];
        let n = lz4_flex::block::compress_into(contents, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn declared_length_must_match_decompressed_length() {
        let contents = b"xyz".repeat(100);
        let mut payload = Vec::new();
        put_varint32(&mut payload, 301);
        payload.extend_from_slice(&lz4(&contents));
        let (bytes, handle) = forge(&payload, 1, 0);
        assert!(matches!(
            decode_block(&bytes, &handle, 1 << 20).unwrap_err().kind,
            DecodeErrorKind::BadCompression { .. }
        ));
        let mut short = Vec::new();
        put_varint32(&mut short, 299);
        short.extend_from_slice(&lz4(&contents));
        let (bytes, handle) = forge(&short, 1, 0);
        assert!(decode_block(&bytes, &handle, 1 << 20).is_err());
    }

    #[test]
    fn block_shorter_than_its_handle_is_truncation() {
        let (bytes, handle) = stored(b"hello", Compression::None, 0);
        for len in 0..bytes.len() {
            assert!(
                decode_block(&bytes[..len], &handle, 1 << 20)
                    .unwrap_err()
                    .is_truncation()
            );
        }
    }

    fn footer() -> Footer {
        Footer {
            index: BlockHandle {
                offset: 300,
                size: 40,
                checksum: 7,
            },
            filter: Some(BlockHandle {
                offset: 100,
                size: 50,
                checksum: 8,
            }),
            properties: BlockHandle {
                offset: 150,
                size: 150,
                checksum: 9,
            },
        }
    }

    #[test]
    fn footer_layout_is_fixed() {
        let bytes = footer().encode();
        assert_eq!(&bytes[72..], b"STRATSST");
        assert_eq!(&bytes[0..8], &300u64.to_le_bytes());
        assert_eq!(&bytes[60..64], &TABLE_FORMAT_VERSION.to_le_bytes());
        assert_eq!(Footer::decode(&bytes).unwrap(), footer());
    }

    #[test]
    fn bad_footer_magic_is_rejected() {
        let mut bytes = footer().encode();
        bytes[79] ^= 1;
        assert!(matches!(
            Footer::decode(&bytes).unwrap_err().kind,
            DecodeErrorKind::BadMagic { .. }
        ));
    }

    #[test]
    fn truncated_footer_is_rejected() {
        let bytes = footer().encode();
        for len in 0..FOOTER_LEN {
            let err = Footer::decode(&bytes[FOOTER_LEN - len..]).unwrap_err();
            assert!(err.is_truncation(), "{err}");
        }
    }

    #[test]
    fn footer_crc_version_and_reserved_are_checked() {
        let mut bytes = footer().encode();
        bytes[3] ^= 1;
        assert!(matches!(
            Footer::decode(&bytes).unwrap_err().kind,
            DecodeErrorKind::ChecksumMismatch { .. }
        ));
        let reseal = |bytes: &mut [u8; FOOTER_LEN]| {
            let crc = crc32fast::hash(&bytes[..68]);
            bytes[68..72].copy_from_slice(&crc.to_le_bytes());
        };
        let mut bytes = footer().encode();
        bytes[60] = 2;
        reseal(&mut bytes);
        assert!(matches!(
            Footer::decode(&bytes).unwrap_err().kind,
            DecodeErrorKind::UnsupportedVersion { found: 2, .. }
        ));
        let mut bytes = footer().encode();
        bytes[64] = 1;
        reseal(&mut bytes);
        assert!(matches!(
            Footer::decode(&bytes).unwrap_err().kind,
            DecodeErrorKind::ReservedNotZero { .. }
        ));
    }

    #[test]
    fn unknown_property_tags_are_skipped_and_order_is_enforced() {
        let props = Properties {
            entries: 5,
            smallest_key: b"a\x01\0\0\0\0\0\0\0".to_vec(),
            ..Properties::default()
        };
        let mut bytes = props.encode();
        put_field(&mut bytes, 99, b"future field");
        assert_eq!(Properties::decode(&bytes).unwrap(), props);
        put_field(&mut bytes, 98, b"");
        assert!(matches!(
            Properties::decode(&bytes).unwrap_err().kind,
            DecodeErrorKind::Malformed { .. }
        ));
        let mut bad_int = Vec::new();
        put_field(&mut bad_int, TAG_ENTRIES, &[1, 2]);
        assert!(Properties::decode(&bad_int).is_err());
    }

    proptest! {
        #[test]
        fn blocks_round_trip_with_any_compression(
            contents in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..600),
            lz4 in any::<bool>(),
            offset in any::<u64>(),
        ) {
            let compression = if lz4 { Compression::Lz4 } else { Compression::None };
            let (bytes, handle) = stored(&contents, compression, offset);
            prop_assert_eq!(handle.size, bytes.len() as u64);
            prop_assert_eq!(&*decode_block(&bytes, &handle, MAX_BLOCK_UNCOMPRESSED).unwrap(), &contents[..]);
        }

        #[test]
        fn any_single_bit_flip_in_a_block_is_detected(
            contents in proptest::collection::vec(any::<u8>(), 0..100),
            bit in any::<usize>(),
        ) {
            let (mut bytes, handle) = stored(&contents, Compression::Lz4, 77);
            let bit = bit % (bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_block(&bytes, &handle, MAX_BLOCK_UNCOMPRESSED).is_err());
        }

        #[test]
        fn forged_lz4_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let (bytes, handle) = forge(&payload, 1, 0);
            let _ = decode_block(&bytes, &handle, 1 << 16);
        }

        #[test]
        fn arbitrary_footers_and_properties_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = Footer::decode(&bytes);
            let _ = Properties::decode(&bytes);
            let _ = BlockHandle::decode(&bytes);
        }

        #[test]
        fn properties_round_trip(
            entries in any::<u64>(), seq in any::<u64>(), level in any::<u32>(),
            key in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let props = Properties {
                entries, deletions: entries / 2, data_blocks: 1, raw_key_bytes: 2, raw_value_bytes: 3,
                smallest_seq: seq / 2, largest_seq: seq, smallest_key: key.clone(), largest_key: key, level,
            };
            prop_assert_eq!(Properties::decode(&props.encode()).unwrap(), props);
        }
    }
}
