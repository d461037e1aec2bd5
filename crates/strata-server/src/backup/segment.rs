//! Archive segments: committed log records, copied verbatim, with the time
//! the archiver read them and a checksum over the whole file.
//!
//! FORMAT (version 1; also in `docs/format.md`), little-endian:
//!
//! ```text
//! header (48 bytes):
//!   magic        8  "STRATARC"
//!   version      4  u32 = 1
//!   reserved     4  u32 = 0
//!   database_id 16  u128: the database whose log this is
//!   first_seq    8  u64: the first operation of the first record
//!   last_seq     8  u64: the last operation of the last record
//! entries, one per log record, in order:
//!   archived_ms  8  u64: Unix milliseconds when the archiver read it
//!   length       4  u32: bytes of the record
//!   record       n  the commit-log record exactly as on disk (header with
//!                   its CRC32, then the encoded batch)
//! footer (16 bytes):
//!   checksum     8  u64: xxh3-64 of every byte before it
//!   magic        8  "STRATEND"
//! ```
//!
//! A segment is written under a temporary name, synced, renamed to
//! `<first_seq:020>-<last_seq:020>.slog` and its directory synced, so a
//! file with that name is whole. The footer checksum catches a file damaged
//! later; each record's own CRC and the batches' sequence numbers are
//! checked too, and the records must run from `first_seq` to `last_seq`
//! without a hole.
//!
//! Codecs here do no I/O.

use xxhash_rust::xxh3::xxh3_64;

const MAGIC: &[u8; 8] = b"STRATARC";
const END_MAGIC: &[u8; 8] = b"STRATEND";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 48;
const FOOTER_LEN: usize = 16;
/// The largest record an archive accepts (the commit log's own bound is
/// lower).
const RECORD_BYTES_MAX: u32 = 64 << 20;

/// One archived record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// When the archiver read it (Unix milliseconds).
    pub(crate) archived_ms: u64,
    /// The first operation's sequence number.
    pub(crate) first_seq: u64,
    /// The last operation's sequence number.
    pub(crate) last_seq: u64,
    /// The commit-log record (header and batch).
    pub(crate) record: Vec<u8>,
}

/// A decoded segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// The database whose log it holds.
    pub(crate) database_id: u128,
    /// The first operation of its first record.
    pub(crate) first_seq: u64,
    /// The last operation of its last record.
    pub(crate) last_seq: u64,
    /// Its records, in order, without holes.
    pub(crate) entries: Vec<Entry>,
}

/// The file name of a segment holding `first..=last`.
pub(crate) fn file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.slog")
}

/// The range of a segment file name (`None`: not a segment).
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".slog")?;
    let (first, last) = stem.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last && first > 0).then_some((first, last))
}

/// The sequence numbers of a commit-log record's batch, checking its CRC.
pub(crate) fn record_seqs(record: &[u8]) -> Result<(u64, u64, &[u8]), String> {
    let view = strata_format::wal::decode_record(record).map_err(|e| format!("log record: {e}"))?;
    let batch =
        strata_format::wal::decode_batch(view.payload).map_err(|e| format!("batch: {e}"))?;
    Ok((batch.first_seq, batch.last_seq(), view.payload))
}

/// Encodes a segment of `entries` (at least one, in order).
pub(crate) fn encode(database_id: u128, entries: &[Entry]) -> Vec<u8> {
    let first = entries.first().map_or(0, |e| e.first_seq);
    let last = entries.last().map_or(0, |e| e.last_seq);
    let body: usize = entries.iter().map(|e| 12 + e.record.len()).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + body + FOOTER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&database_id.to_le_bytes());
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    for entry in entries {
        out.extend_from_slice(&entry.archived_ms.to_le_bytes());
        out.extend_from_slice(&(entry.record.len() as u32).to_le_bytes());
        out.extend_from_slice(&entry.record);
    }
    let checksum = xxh3_64(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(END_MAGIC);
    out
}

/// Takes `n` bytes at `at`, advancing it.
fn take<'a>(bytes: &'a [u8], at: &mut usize, n: usize, what: &str) -> Result<&'a [u8], String> {
    let end = at
        .checked_add(n)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| format!("cut short in {what} at offset {at}"))?;
    let slice = bytes
        .get(*at..end)
        .ok_or_else(|| format!("cut short in {what} at offset {at}"))?;
    *at = end;
    Ok(slice)
}

fn u32_at(bytes: &[u8], at: &mut usize, what: &str) -> Result<u32, String> {
    let b = take(bytes, at, 4, what)?;
    Ok(u32::from_le_bytes(
        b.try_into().map_err(|_| what.to_string())?,
    ))
}

fn u64_at(bytes: &[u8], at: &mut usize, what: &str) -> Result<u64, String> {
    let b = take(bytes, at, 8, what)?;
    Ok(u64::from_le_bytes(
        b.try_into().map_err(|_| what.to_string())?,
    ))
}

/// Decodes and checks a whole segment: magic, version, footer checksum,
/// every record's CRC and batch, and sequence numbers running from
/// `first_seq` to `last_seq` without a hole.
pub(crate) fn decode(bytes: &[u8]) -> Result<Segment, String> {
    if bytes.len() < HEADER_LEN + FOOTER_LEN {
        return Err(format!(
            "{} bytes: shorter than a header and footer",
            bytes.len()
        ));
    }
    let body_len = bytes.len() - FOOTER_LEN;
    let (body, footer) = bytes.split_at(body_len);
    let mut at = 0;
    let stored = u64_at(footer, &mut at, "footer")?;
    if take(footer, &mut at, 8, "footer")? != END_MAGIC {
        return Err("bad footer magic (cut short?)".into());
    }
    let actual = xxh3_64(body);
    if stored != actual {
        return Err(format!(
            "checksum mismatch: footer says {stored:016x}, the bytes hash to {actual:016x}"
        ));
    }
    let mut at = 0;
    if take(body, &mut at, 8, "header")? != MAGIC {
        return Err("not an archive segment (bad magic)".into());
    }
    let version = u32_at(body, &mut at, "header")?;
    if version != VERSION {
        return Err(format!(
            "format version {version}; this strata reads {VERSION}"
        ));
    }
    let _reserved = u32_at(body, &mut at, "header")?;
    let id = take(body, &mut at, 16, "header")?;
    let database_id = u128::from_le_bytes(id.try_into().map_err(|_| "header".to_string())?);
    let first_seq = u64_at(body, &mut at, "header")?;
    let last_seq = u64_at(body, &mut at, "header")?;
    let mut entries = Vec::new();
    let mut next = first_seq;
    while at < body.len() {
        let offset = at;
        let archived_ms = u64_at(body, &mut at, "entry")?;
        let length = u32_at(body, &mut at, "entry")?;
        if length > RECORD_BYTES_MAX {
            return Err(format!(
                "entry at offset {offset}: length {length} over {RECORD_BYTES_MAX}"
            ));
        }
        let record = take(body, &mut at, length as usize, "record")?;
        let (first, last, _) =
            record_seqs(record).map_err(|e| format!("entry at offset {offset}: {e}"))?;
        if first != next {
            return Err(format!(
                "entry at offset {offset}: starts at seq {first}, expected {next}"
            ));
        }
        next = last + 1;
        entries.push(Entry {
            archived_ms,
            first_seq: first,
            last_seq: last,
            record: record.to_vec(),
        });
    }
    if entries.is_empty() || next != last_seq + 1 {
        return Err(format!(
            "records end at seq {}, the header says {last_seq}",
            next.saturating_sub(1)
        ));
    }
    Ok(Segment {
        database_id,
        first_seq,
        last_seq,
        entries,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn record(first_seq: u64, ops: usize) -> Vec<u8> {
        let mut batch = strata_format::wal::BatchBuilder::new();
        for i in 0..ops {
            batch.put(format!("k{i}").as_bytes(), b"");
        }
        let mut bytes = batch.into_bytes();
        strata_format::wal::set_batch_first_seq(&mut bytes, first_seq);
        let mut out = Vec::new();
        strata_format::wal::encode_record(strata_format::wal::RecordType::Batch, &bytes, &mut out);
        out
    }

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                archived_ms: 5,
                first_seq: 10,
                last_seq: 11,
                record: record(10, 2),
            },
            Entry {
                archived_ms: 6,
                first_seq: 12,
                last_seq: 12,
                record: record(12, 1),
            },
        ]
    }

    #[test]
    fn a_segment_round_trips() {
        let bytes = encode(7, &entries());
        let segment = decode(&bytes).unwrap();
        assert_eq!(
            (segment.database_id, segment.first_seq, segment.last_seq),
            (7, 10, 12)
        );
        assert_eq!(segment.entries, entries());
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let bytes = encode(7, &entries());
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(decode(&damaged).is_err(), "flip at {i}");
            assert!(decode(&bytes[..i]).is_err(), "cut at {i}");
        }
    }

    #[test]
    fn a_hole_between_records_is_refused() {
        let mut with_hole = entries();
        with_hole[1] = Entry {
            archived_ms: 6,
            first_seq: 13,
            last_seq: 13,
            record: record(13, 1),
        };
        let err = decode(&encode(7, &with_hole)).unwrap_err();
        assert!(err.contains("expected 12"), "{err}");
    }

    #[test]
    fn random_bytes_and_random_damage_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
        let good = encode(7, &entries());
        for _ in 0..20_000 {
            let mut bytes = if rng.random_bool(0.5) {
                good.clone()
            } else {
                (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect()
            };
            for _ in 0..rng.random_range(0..4) {
                if let Some(b) = bytes.get_mut(rng.random_range(0..good.len())) {
                    *b = rng.random();
                }
            }
            bytes.truncate(rng.random_range(0..=bytes.len()));
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn file_names_parse() {
        assert_eq!(parse_file_name(&file_name(3, 9)), Some((3, 9)));
        assert_eq!(parse_file_name("x.slog"), None);
        assert_eq!(
            parse_file_name("00000000000000000009-00000000000000000003.slog"),
            None
        );
        assert_eq!(parse_file_name("a.slog.tmp"), None);
    }
}
