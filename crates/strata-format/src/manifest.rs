//! The manifest: the log of version edits that says which sorted tables
//! make up the database, at which level, and how far the commit log has
//! been flushed into them.
//!
//! FORMAT. A manifest file `MANIFEST-{number:06}` is a 64-byte header and
//! then records framed exactly like WAL records (`crate::wal::record`:
//! crc32, length, type), every one of type 2 (`Edit`), each holding one
//! encoded [`VersionEdit`]. The header (little-endian):
//!
//! ```text
//!  0       8      12      16                      32          40                      60      64
//!  +-------+-------+-------+-----------------------+-----------+-----------------------+-------+
//!  | magic |version|  zero |      database_id      |  manifest |         zero          | crc32 |
//!  |  8 B  |  u32  |  u32  |         u128          |  number   |         20 B          |  u32  |
//!  +-------+-------+-------+-----------------------+-----------+-----------------------+-------+
//! ```
//!
//! `magic` is `b"STRATMAN"`, `crc32` covers bytes `0..60`. The file `CURRENT`
//! names the live manifest: `MANIFEST-{number:06}` and a newline.
//!
//! A version edit is a sequence of fields, each a tag byte and a body
//! (integers little-endian u64; byte strings a u32 length then the bytes):
//!
//! | tag | field | body |
//! |---|---|---|
//! | 1 | next file number | u64 |
//! | 2 | flushed sequence number (every operation at or below it is in tables) | u64 |
//! | 3 | added table | level u8, number u64, size u64, smallest key bytes, largest key bytes, smallest seq u64, largest seq u64, entries u64 |
//! | 4 | deleted table | level u8, number u64 |
//! | 5 | the whole range map (replaces the previous one) | u32 count, then per range: id u64, start key bytes, origin bytes (UTF-8, at most 1024); then next range id u64 |
//! | 6 | added range tombstone | start key bytes, end key bytes, seq u64 |
//! | 7 | removed range tombstone | start key bytes, end key bytes, seq u64 |
//! | 0x81 | garbage hint of a table added in the same edit (ignorable) | u32 length (16), number u64, obsolete entries u64 |
//! | 0x80..=0xff | ignorable field from a later version | u32 length, bytes |
//!
//! A range map lists its ranges in key order: the first starts at the empty
//! key, starts strictly increase, each range ends where the next starts and
//! the last is unbounded; ids are unique and below the next range id. The
//! decoder enforces all of this. A range tombstone has `start < end` (user
//! keys). Tables and tombstones are user data; range maps and tombstones
//! appear in an edit at most once per field kind as written by this build,
//! but decoding accepts repeats (the last range map wins).
//!
//! Tag 0 and unknown tags below `0x80` are corruption: an edit we do not
//! understand cannot be applied safely. Keys in table entries are internal
//! keys (`crate::key`), at most [`MAX_KEY_BYTES`] long.
//!
//! Why fixed-width integers: the manifest is small and rewritten rarely;
//! fixed widths keep the codec trivial to audit.

use crate::coding::Cursor;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::header::{
    FILE_HEADER_FIELDS_LEN, FILE_HEADER_LEN, FileHeaderKind, decode_file_header, encode_file_header,
};

/// Magic bytes at the start of every manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"STRATMAN";
/// The manifest format version.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// Length of the manifest header.
pub const MANIFEST_HEADER_LEN: usize = FILE_HEADER_LEN;

/// The manifest header's kind for the shared header codec.
const MANIFEST_HEADER_KIND: FileHeaderKind = FileHeaderKind {
    magic: MANIFEST_MAGIC,
    version: MANIFEST_FORMAT_VERSION,
    file: "manifest",
    header: "manifest header",
};
/// The number of levels of the tree.
pub const LEVELS: u8 = 7;
/// The longest key a table entry's bounds may hold.
pub const MAX_KEY_BYTES: u32 = 1 << 20;

const TAG_NEXT_FILE: u8 = 1;
const TAG_FLUSHED_SEQ: u8 = 2;
const TAG_ADD_TABLE: u8 = 3;
const TAG_DELETE_TABLE: u8 = 4;
const TAG_RANGE_MAP: u8 = 5;
const TAG_ADD_TOMBSTONE: u8 = 6;
const TAG_REMOVE_TOMBSTONE: u8 = 7;
/// The longest origin note a range may carry.
pub const MAX_RANGE_ORIGIN_BYTES: u32 = 1024;
/// The most ranges a range map may hold.
pub const MAX_RANGES: u32 = 1 << 16;
const IGNORABLE_TAG_BIT: u8 = 0x80;
/// An ignorable field: how many entries of an added table are older
/// versions of a key kept only for snapshots (a garbage-collection hint).
const TAG_TABLE_GARBAGE_HINT: u8 = 0x81;

/// The file name of manifest `number`.
///
/// # Examples
///
/// ```
/// assert_eq!(strata_format::manifest::manifest_file_name(5), "MANIFEST-000005");
/// ```
#[must_use]
pub fn manifest_file_name(number: u64) -> String {
    format!("MANIFEST-{number:06}")
}

/// Parses a manifest file name; `None` for any other name.
#[must_use]
pub fn parse_manifest_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("MANIFEST-")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file name of table `number`.
///
/// # Examples
///
/// ```
/// assert_eq!(strata_format::manifest::table_file_name(12), "000012.sst");
/// ```
#[must_use]
pub fn table_file_name(number: u64) -> String {
    format!("{number:06}.sst")
}

/// Parses a table file name; `None` for any other name.
#[must_use]
pub fn parse_table_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".sst")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The manifest header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestHeader {
    /// The database the manifest belongs to.
    pub database_id: u128,
    /// The manifest's number (also in its name).
    pub manifest_number: u64,
}

impl ManifestHeader {
    /// Encodes the 64-byte header.
    #[must_use]
    pub fn encode(&self) -> [u8; MANIFEST_HEADER_LEN] {
        let mut fields = [0u8; FILE_HEADER_FIELDS_LEN];
        let (number, _) = fields.split_at_mut(8);
        number.copy_from_slice(&self.manifest_number.to_le_bytes());
        encode_file_header(&MANIFEST_HEADER_KIND, self.database_id, &fields)
    }

    /// Decodes and checks the header.
    ///
    /// # Errors
    /// `Truncated`, `BadMagic`, `ChecksumMismatch`, `UnsupportedVersion`,
    /// `ReservedNotZero`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (database_id, fields) = decode_file_header(&MANIFEST_HEADER_KIND, bytes)?;
        let mut c = Cursor::new(&fields);
        let manifest_number = c.u64_le("manifest number")?;
        let tail: [u8; 20] = c.array("manifest reserved")?;
        if tail != [0u8; 20] {
            return Err(DecodeError::new(
                12,
                DecodeErrorKind::ReservedNotZero {
                    what: "manifest header",
                },
            ));
        }
        Ok(Self {
            database_id,
            manifest_number,
        })
    }
}

/// One table as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// The level (0 to [`LEVELS`] - 1).
    pub level: u8,
    /// The table's file number.
    pub number: u64,
    /// The file's size in bytes (checked when the table is opened).
    pub size: u64,
    /// The smallest internal key in the table.
    pub smallest: Vec<u8>,
    /// The largest internal key in the table.
    pub largest: Vec<u8>,
    /// The smallest sequence number in the table.
    pub smallest_seq: u64,
    /// The largest sequence number in the table.
    pub largest_seq: u64,
    /// The number of entries.
    pub entries: u64,
    /// Entries that are older versions of a key, kept when the table was
    /// written only because a snapshot might read them: garbage once no
    /// snapshot needs them. Stored as the ignorable field 0x81 (an older
    /// reader loses only the hint).
    pub obsolete_entries: u64,
}

/// One key range of a range map: `[start, next range's start)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeEntry {
    /// The range's id (never reused).
    pub id: u64,
    /// The first user key of the range (empty for the first range).
    pub start: Vec<u8>,
    /// Why the range exists (for example which split made it and why).
    pub origin: String,
}

/// The whole range map, as one edit field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeMapRecord {
    /// The ranges, in key order.
    pub ranges: Vec<RangeEntry>,
    /// The id the next new range gets.
    pub next_id: u64,
}

/// A range deletion that versions carry until no table holds data it hides.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TombstoneEntry {
    /// The first user key deleted.
    pub start: Vec<u8>,
    /// The first user key after the range (exclusive).
    pub end: Vec<u8>,
    /// The deletion's sequence number: it hides versions below it.
    pub seq: u64,
}

/// A change to the set of tables.
///
/// # Examples
///
/// ```
/// use strata_format::manifest::{TableEntry, VersionEdit};
/// let mut edit = VersionEdit::default();
/// edit.flushed_seq = Some(100);
/// edit.deleted.push((0, 7));
/// let bytes = edit.encode();
/// assert_eq!(VersionEdit::decode(&bytes)?, edit);
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionEdit {
    /// The next file number to assign.
    pub next_file_number: Option<u64>,
    /// Every operation at or below this sequence number is in tables.
    pub flushed_seq: Option<u64>,
    /// Tables added.
    pub added: Vec<TableEntry>,
    /// Tables removed: (level, number).
    pub deleted: Vec<(u8, u64)>,
    /// A new range map, replacing the previous one whole.
    pub ranges: Option<RangeMapRecord>,
    /// Range tombstones added (flushed from a memtable).
    pub added_tombstones: Vec<TombstoneEntry>,
    /// Range tombstones removed (no table holds data they hide).
    pub removed_tombstones: Vec<TombstoneEntry>,
}

impl VersionEdit {
    /// Encodes the edit (the payload of one manifest record).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(next) = self.next_file_number {
            out.push(TAG_NEXT_FILE);
            out.extend_from_slice(&next.to_le_bytes());
        }
        if let Some(seq) = self.flushed_seq {
            out.push(TAG_FLUSHED_SEQ);
            out.extend_from_slice(&seq.to_le_bytes());
        }
        for &(level, number) in &self.deleted {
            out.push(TAG_DELETE_TABLE);
            out.push(level);
            out.extend_from_slice(&number.to_le_bytes());
        }
        for table in &self.added {
            out.push(TAG_ADD_TABLE);
            out.push(table.level);
            out.extend_from_slice(&table.number.to_le_bytes());
            out.extend_from_slice(&table.size.to_le_bytes());
            for key in [&table.smallest, &table.largest] {
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(key);
            }
            out.extend_from_slice(&table.smallest_seq.to_le_bytes());
            out.extend_from_slice(&table.largest_seq.to_le_bytes());
            out.extend_from_slice(&table.entries.to_le_bytes());
            if table.obsolete_entries > 0 {
                out.push(TAG_TABLE_GARBAGE_HINT);
                out.extend_from_slice(&16u32.to_le_bytes());
                out.extend_from_slice(&table.number.to_le_bytes());
                out.extend_from_slice(&table.obsolete_entries.to_le_bytes());
            }
        }
        if let Some(map) = &self.ranges {
            out.push(TAG_RANGE_MAP);
            out.extend_from_slice(&(map.ranges.len() as u32).to_le_bytes());
            for range in &map.ranges {
                out.extend_from_slice(&range.id.to_le_bytes());
                put_bytes(&mut out, &range.start);
                put_bytes(&mut out, range.origin.as_bytes());
            }
            out.extend_from_slice(&map.next_id.to_le_bytes());
        }
        for (tag, list) in [
            (TAG_ADD_TOMBSTONE, &self.added_tombstones),
            (TAG_REMOVE_TOMBSTONE, &self.removed_tombstones),
        ] {
            for t in list {
                out.push(tag);
                put_bytes(&mut out, &t.start);
                put_bytes(&mut out, &t.end);
                out.extend_from_slice(&t.seq.to_le_bytes());
            }
        }
        out
    }

    /// Decodes an edit.
    ///
    /// # Errors
    /// `Truncated`, `LengthTooLarge` for an oversized key,
    /// `UnknownRecordType` for an unknown tag below `0x80` (the tag is
    /// reported as the record type), `ReservedNotZero` for a level out of
    /// range.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(bytes);
        let mut edit = Self::default();
        while !c.is_empty() {
            let at = c.position() as u64;
            match c.u8("edit tag")? {
                TAG_NEXT_FILE => edit.next_file_number = Some(c.u64_le("next file number")?),
                TAG_FLUSHED_SEQ => edit.flushed_seq = Some(c.u64_le("flushed sequence number")?),
                TAG_DELETE_TABLE => {
                    let level = level(&mut c)?;
                    edit.deleted.push((level, c.u64_le("table number")?));
                }
                TAG_ADD_TABLE => {
                    let level = level(&mut c)?;
                    let number = c.u64_le("table number")?;
                    let size = c.u64_le("table size")?;
                    let smallest = key(&mut c)?;
                    let largest = key(&mut c)?;
                    edit.added.push(TableEntry {
                        level,
                        number,
                        size,
                        smallest,
                        largest,
                        smallest_seq: c.u64_le("smallest seq")?,
                        largest_seq: c.u64_le("largest seq")?,
                        entries: c.u64_le("entries")?,
                        obsolete_entries: 0,
                    });
                }
                TAG_TABLE_GARBAGE_HINT => {
                    let len = c.u32_le("garbage hint length")?;
                    let body = c.bytes(len as usize, "garbage hint")?;
                    // A hint of another length is from a later version:
                    // ignorable, like any field with bit 7 set.
                    if let Ok(hint) = <[u8; 16]>::try_from(body) {
                        let mut hint = Cursor::new(&hint);
                        let number = hint.u64_le("garbage hint table")?;
                        let obsolete = hint.u64_le("garbage hint entries")?;
                        if let Some(table) = edit.added.iter_mut().find(|t| t.number == number) {
                            table.obsolete_entries = obsolete;
                        }
                    }
                }
                TAG_RANGE_MAP => edit.ranges = Some(range_map(&mut c, at)?),
                TAG_ADD_TOMBSTONE => edit.added_tombstones.push(tombstone(&mut c, at)?),
                TAG_REMOVE_TOMBSTONE => edit.removed_tombstones.push(tombstone(&mut c, at)?),
                tag if tag & IGNORABLE_TAG_BIT != 0 => {
                    let len = c.u32_le("ignorable field length")?;
                    c.bytes(len as usize, "ignorable field")?;
                }
                tag => {
                    return Err(DecodeError::new(
                        at,
                        DecodeErrorKind::UnknownRecordType { record_type: tag },
                    ));
                }
            }
        }
        Ok(edit)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn malformed(at: u64, what: &'static str) -> DecodeError {
    DecodeError::new(at, DecodeErrorKind::Malformed { what })
}

fn range_map(c: &mut Cursor<'_>, at: u64) -> Result<RangeMapRecord, DecodeError> {
    let count = c.u32_le("range count")?;
    if count == 0 || count > MAX_RANGES {
        return Err(DecodeError::new(
            at,
            DecodeErrorKind::LengthTooLarge {
                what: "range map (0 ranges, or more than the maximum)",
                length: u64::from(count),
                max: u64::from(MAX_RANGES),
            },
        ));
    }
    let mut ranges: Vec<RangeEntry> = Vec::new();
    for _ in 0..count {
        let id = c.u64_le("range id")?;
        let start = key(c)?;
        let origin_at = c.position() as u64;
        let len = c.u32_le("range origin length")?;
        if len > MAX_RANGE_ORIGIN_BYTES {
            return Err(DecodeError::new(
                origin_at,
                DecodeErrorKind::LengthTooLarge {
                    what: "range origin",
                    length: u64::from(len),
                    max: u64::from(MAX_RANGE_ORIGIN_BYTES),
                },
            ));
        }
        let origin = std::str::from_utf8(c.bytes(len as usize, "range origin")?)
            .map_err(|_| malformed(origin_at, "range origin that is not UTF-8"))?
            .to_string();
        match ranges.last() {
            None if !start.is_empty() => {
                return Err(malformed(
                    at,
                    "range map whose first range does not start at the empty key",
                ));
            }
            Some(prev) if prev.start >= start => {
                return Err(malformed(
                    at,
                    "range map whose starts do not strictly increase",
                ));
            }
            _ => {}
        }
        if ranges.iter().any(|r| r.id == id) {
            return Err(malformed(at, "range map with a repeated range id"));
        }
        ranges.push(RangeEntry { id, start, origin });
    }
    let next_id = c.u64_le("next range id")?;
    if ranges.iter().any(|r| r.id >= next_id) {
        return Err(malformed(
            at,
            "range map with a range id at or above the next range id",
        ));
    }
    Ok(RangeMapRecord { ranges, next_id })
}

fn tombstone(c: &mut Cursor<'_>, at: u64) -> Result<TombstoneEntry, DecodeError> {
    let start = key(c)?;
    let end = key(c)?;
    let seq = c.u64_le("range tombstone seq")?;
    if start >= end {
        return Err(malformed(
            at,
            "range tombstone whose start is not below its end",
        ));
    }
    Ok(TombstoneEntry { start, end, seq })
}

fn level(c: &mut Cursor<'_>) -> Result<u8, DecodeError> {
    let at = c.position() as u64;
    let level = c.u8("level")?;
    if level >= LEVELS {
        return Err(DecodeError::new(
            at,
            DecodeErrorKind::ReservedNotZero {
                what: "level (out of range)",
            },
        ));
    }
    Ok(level)
}

fn key(c: &mut Cursor<'_>) -> Result<Vec<u8>, DecodeError> {
    let at = c.position() as u64;
    let len = c.u32_le("key length")?;
    if len > MAX_KEY_BYTES {
        return Err(DecodeError::new(
            at,
            DecodeErrorKind::LengthTooLarge {
                what: "table bound key",
                length: u64::from(len),
                max: u64::from(MAX_KEY_BYTES),
            },
        ));
    }
    Ok(c.bytes(len as usize, "key")?.to_vec())
}

/// The content of `CURRENT` naming manifest `number`.
#[must_use]
pub fn current_file_content(number: u64) -> String {
    format!("{}\n", manifest_file_name(number))
}

/// Parses `CURRENT`'s content into the manifest number.
///
/// # Errors
/// `BadMagic` (with the bytes found) if it does not name a manifest.
pub fn parse_current(bytes: &[u8]) -> Result<u64, DecodeError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.strip_suffix('\n'))
        .and_then(parse_manifest_file_name)
        .ok_or_else(|| {
            DecodeError::new(
                0,
                DecodeErrorKind::BadMagic {
                    what: "CURRENT",
                    found: bytes.iter().take(32).copied().collect(),
                },
            )
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(level: u8, number: u64) -> TableEntry {
        TableEntry {
            level,
            number,
            size: 4096,
            smallest: b"a\0\0\0\0\0\0\0\x02".to_vec(),
            largest: b"z\0\0\0\0\0\0\0\x02".to_vec(),
            smallest_seq: 1,
            largest_seq: 99,
            entries: 10,
            obsolete_entries: 0,
        }
    }

    #[test]
    fn edit_round_trips() {
        let edit = VersionEdit {
            next_file_number: Some(12),
            flushed_seq: Some(99),
            added: vec![table(0, 10), table(1, 11)],
            deleted: vec![(0, 3), (1, 4)],
            ranges: Some(RangeMapRecord {
                ranges: vec![
                    RangeEntry {
                        id: 0,
                        start: Vec::new(),
                        origin: "initial".into(),
                    },
                    RangeEntry {
                        id: 3,
                        start: b"m".to_vec(),
                        origin: "split of range 0 at \"m\": size".into(),
                    },
                ],
                next_id: 4,
            }),
            added_tombstones: vec![TombstoneEntry {
                start: b"a".to_vec(),
                end: b"c".to_vec(),
                seq: 7,
            }],
            removed_tombstones: vec![TombstoneEntry {
                start: b"x".to_vec(),
                end: b"y".to_vec(),
                seq: 2,
            }],
        };
        assert_eq!(VersionEdit::decode(&edit.encode()).unwrap(), edit);
    }

    #[test]
    fn malformed_range_maps_and_tombstones_are_rejected() {
        let map = |starts: &[&[u8]], ids: &[u64], next_id: u64| VersionEdit {
            ranges: Some(RangeMapRecord {
                ranges: starts
                    .iter()
                    .zip(ids)
                    .map(|(s, &id)| RangeEntry {
                        id,
                        start: s.to_vec(),
                        origin: String::new(),
                    })
                    .collect(),
                next_id,
            }),
            ..Default::default()
        };
        let err = |e: VersionEdit| VersionEdit::decode(&e.encode()).unwrap_err().to_string();
        assert!(err(map(&[b"a"], &[0], 1)).contains("empty key"));
        assert!(err(map(&[b"", b"m", b"m"], &[0, 1, 2], 3)).contains("strictly increase"));
        assert!(err(map(&[b"", b"m"], &[1, 1], 3)).contains("repeated"));
        assert!(err(map(&[b"", b"m"], &[0, 5], 3)).contains("next range id"));
        assert!(err(map(&[], &[], 3)).contains("range map"));
        let backwards = VersionEdit {
            added_tombstones: vec![TombstoneEntry {
                start: b"c".to_vec(),
                end: b"a".to_vec(),
                seq: 1,
            }],
            ..Default::default()
        };
        assert!(err(backwards).contains("range tombstone"));
    }

    #[test]
    fn unknown_tag_is_corruption_and_ignorable_tag_is_skipped() {
        let err = VersionEdit::decode(&[9]).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::UnknownRecordType { record_type: 9 }
        ));
        let mut bytes = vec![0x85, 3, 0, 0, 0, 1, 2, 3];
        bytes.extend(
            VersionEdit {
                flushed_seq: Some(5),
                ..Default::default()
            }
            .encode(),
        );
        assert_eq!(VersionEdit::decode(&bytes).unwrap().flushed_seq, Some(5));
    }

    #[test]
    fn level_out_of_range_is_rejected() {
        let mut edit = VersionEdit::default();
        edit.deleted.push((0, 1));
        let mut bytes = edit.encode();
        bytes[1] = LEVELS;
        assert!(VersionEdit::decode(&bytes).is_err());
    }

    #[test]
    fn huge_key_length_is_rejected_without_allocation() {
        let mut bytes = vec![TAG_ADD_TABLE, 0];
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            VersionEdit::decode(&bytes).unwrap_err().kind,
            DecodeErrorKind::LengthTooLarge { .. }
        ));
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = ManifestHeader {
            database_id: 7,
            manifest_number: 3,
        };
        let bytes = header.encode();
        assert_eq!(ManifestHeader::decode(&bytes).unwrap(), header);
        for i in 0..MANIFEST_HEADER_LEN {
            let mut damaged = bytes;
            damaged[i] ^= 4;
            assert!(ManifestHeader::decode(&damaged).is_err(), "flip at {i}");
        }
        assert!(
            ManifestHeader::decode(&bytes[..40])
                .unwrap_err()
                .is_truncation()
        );
    }

    #[test]
    fn current_names_a_manifest() {
        assert_eq!(
            parse_current(current_file_content(42).as_bytes()).unwrap(),
            42
        );
        assert!(parse_current(b"MANIFEST-x\n").is_err());
        assert!(parse_current(b"MANIFEST-000001").is_err());
        assert!(parse_current(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(
            parse_table_file_name(&table_file_name(123_456_789)),
            Some(123_456_789)
        );
        assert_eq!(parse_table_file_name("12.sst"), None);
        assert_eq!(parse_manifest_file_name(&manifest_file_name(1)), Some(1));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = VersionEdit::decode(&bytes);
        }
    }
}
