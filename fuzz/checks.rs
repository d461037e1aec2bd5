//! The checks behind every fuzz target, shared with the corpus replay test
//! (`crates/strata-format/tests/fuzz_corpus_replay.rs`), which includes this
//! file with `#[path]` so that the stable test suite and the fuzzers assert
//! exactly the same things.
//!
//! Each check takes arbitrary bytes, runs a decoder on them, and panics if
//! the decoder panics or if a result it returns breaks an invariant. Inputs
//! the decoder rejects are fine: rejecting garbage is its job.
//!
//! Invariants: no check allocates a size read from the input; the largest
//! allocation is a re-encoding of a decoded item, which is never longer
//! than the input itself.

use strata_format::coding::{Cursor, varint32_len};
use strata_format::wal::{
    BATCH_HEADER_LEN, BatchBuilder, BatchOp, OP_PUT, RECORD_HEADER_LEN, RecordType, RecoveryMode,
    SEGMENT_HEADER_LEN, SYNC_POINT_SLOT_LEN, SYNC_POINT_SLOT_OFFSETS, ScanParams, SegmentEnd,
    SegmentHeader, SyncPoint, decode_batch, decode_record, encode_record, parse_segment_file_name,
    segment_file_name, set_batch_first_seq,
};

/// The database id the segment-scan target expects (unless the input's
/// flags ask for another one). Seed segments are written with it.
pub(crate) const SCAN_DATABASE_ID: u128 = 0x5354_5241_5441_0001;
/// The segment number the segment-scan target expects (unless the input's
/// flags ask for another one). Seed segments are written with it.
pub(crate) const SCAN_SEGMENT_NUMBER: u64 = 7;
/// Length of the prefix of a segment-scan input that encodes its
/// [`ScanParams`]; the segment bytes follow it.
pub(crate) const SCAN_PARAMS_LEN: usize = 11;

const FLAG_NO_EXPECTED_SEQ: u8 = 1 << 2;
const FLAG_OTHER_DATABASE: u8 = 1 << 3;
const FLAG_OTHER_SEGMENT: u8 = 1 << 4;
const FLAG_SYNCED_WHOLE_FILE: u8 = 1 << 5;

/// `wal_record`: `decode_record` on arbitrary bytes. A record that decodes
/// re-encodes, with the same type and payload, to exactly the bytes it was
/// decoded from.
pub(crate) fn check_record(data: &[u8]) {
    let Ok(record) = decode_record(data) else {
        return;
    };
    assert!(record.framed_len <= data.len(), "framed_len past the input");
    assert_eq!(
        record.framed_len,
        RECORD_HEADER_LEN + record.payload.len(),
        "framed_len is not header plus payload"
    );
    if let RecordType::Ignorable(byte) = record.record_type {
        assert!(byte >= 0x80, "ignorable type {byte:#x} without bit 7");
    }
    let mut encoded = Vec::with_capacity(record.framed_len);
    encode_record(record.record_type, record.payload, &mut encoded);
    assert_eq!(
        Some(encoded.as_slice()),
        data.get(..record.framed_len),
        "record does not re-encode to its own bytes"
    );
}

/// `wal_batch`: `decode_batch` on arbitrary bytes. A batch that decodes
/// yields exactly `count` operations, and rebuilding it with
/// [`BatchBuilder`] gives the same operations; when the input spells every
/// varint in its shortest form (as the writer always does) the rebuilt
/// bytes equal the input.
pub(crate) fn check_batch(data: &[u8]) {
    let Ok(view) = decode_batch(data) else {
        return;
    };
    assert!(view.count >= 1, "decoded an empty batch");
    assert!(
        view.first_seq.checked_add(u64::from(view.count)).is_some(),
        "sequence range overflows"
    );
    assert_eq!(
        view.last_seq(),
        view.first_seq + u64::from(view.count) - 1,
        "last_seq is not first_seq + count - 1"
    );
    let mut builder = BatchBuilder::new();
    let mut ops: u64 = 0;
    for op in view.ops() {
        match op {
            BatchOp::Put { key, value } => builder.put(key, value),
            BatchOp::Delete { key } => builder.delete(key),
        }
        ops += 1;
    }
    assert_eq!(ops, u64::from(view.count), "ops() yields a wrong count");
    let mut rebuilt = builder.into_bytes();
    set_batch_first_seq(&mut rebuilt, view.first_seq);
    if uses_only_shortest_varints(data) {
        assert_eq!(rebuilt, data, "batch does not re-encode to its own bytes");
    } else {
        assert!(
            rebuilt.len() < data.len(),
            "re-encoding a batch with over-long varints did not shrink it"
        );
        let again = decode_batch(&rebuilt).unwrap_or_else(|e| panic!("re-encoded batch: {e}"));
        assert_eq!(again.first_seq, view.first_seq);
        assert_eq!(again.count, view.count);
        assert!(again.ops().eq(view.ops()), "re-encoded batch differs");
    }
}

/// Whether every varint in a batch that `decode_batch` accepted is in its
/// shortest form. The decoder accepts over-long forms (such as `80 00` for
/// 0); the writer never produces them.
fn uses_only_shortest_varints(batch: &[u8]) -> bool {
    let mut c = Cursor::new(batch);
    if c.bytes(BATCH_HEADER_LEN, "batch header").is_err() {
        return false;
    }
    while !c.is_empty() {
        let Ok(kind) = c.u8("kind") else { return false };
        let fields = if kind == OP_PUT { 2 } else { 1 };
        for _ in 0..fields {
            if shortest_length_prefixed(&mut c) != Some(true) {
                return false;
            }
        }
    }
    true
}

/// Skips a varint length and its bytes; whether the varint was in its
/// shortest form (`None` if the input ends early).
fn shortest_length_prefixed(c: &mut Cursor<'_>) -> Option<bool> {
    let start = c.position();
    let len = c.varint32("length").ok()?;
    let shortest = c.position() - start == varint32_len(len);
    c.bytes(len as usize, "bytes").ok()?;
    Some(shortest)
}

/// `wal_segment_header`: `SegmentHeader::decode` never panics; a header
/// that decodes re-encodes to its 64 bytes. The input, read as a file
/// name, parses as a segment name only if it round-trips through
/// `segment_file_name`.
pub(crate) fn check_segment_header(data: &[u8]) {
    if let Ok(name) = std::str::from_utf8(data)
        && let Some(number) = parse_segment_file_name(name)
    {
        assert_eq!(segment_file_name(number), name, "file name round trip");
    }
    let Ok(header) = SegmentHeader::decode(data) else {
        return;
    };
    assert_eq!(
        Some(header.encode().as_slice()),
        data.get(..SEGMENT_HEADER_LEN),
        "segment header does not re-encode to its own bytes"
    );
    assert!(
        header
            .check(header.database_id, header.segment_number)
            .is_ok()
    );
    assert!(
        header
            .check(header.database_id, header.segment_number ^ 1)
            .is_err()
    );
}

/// `wal_sync_point`: `SyncPoint::decode` never panics; a slot that decodes
/// re-encodes to its 52 bytes. `SyncPoint::newest` over the input as a
/// whole file returns a point that one of the two slots decodes to, of the
/// database asked for, with the highest generation of the valid slots.
pub(crate) fn check_sync_point(data: &[u8]) {
    if let Ok(point) = SyncPoint::decode(data) {
        assert_eq!(
            Some(point.encode().as_slice()),
            data.get(..SYNC_POINT_SLOT_LEN),
            "sync point does not re-encode to its own bytes"
        );
    }
    let slots: Vec<SyncPoint> = SYNC_POINT_SLOT_OFFSETS
        .iter()
        .filter_map(|&offset| data.get(offset as usize..))
        .filter_map(|slot| SyncPoint::decode(slot).ok())
        .collect();
    let other = slots
        .iter()
        .map(|point| point.database_id)
        .max()
        .map_or(0, |id| id ^ 1);
    for database_id in slots.iter().map(|point| point.database_id).chain([other]) {
        let mine = || {
            slots
                .iter()
                .filter(|point| point.database_id == database_id)
        };
        match SyncPoint::newest(data, database_id) {
            None => assert!(mine().next().is_none(), "newest missed a valid slot"),
            Some(newest) => {
                assert!(slots.contains(&newest), "newest is not one of the slots");
                assert_eq!(newest.database_id, database_id);
                assert!(
                    mine().all(|point| point.generation <= newest.generation),
                    "newest is not the highest generation"
                );
            }
        }
    }
}

/// Splits a segment-scan input into its parameters and the segment bytes.
///
/// Layout: byte 0 holds flags (bits 0-1: mode, 0 Strict, 1 or 3
/// TolerateTornTail, 2 PointInTime; then the `FLAG_*` bits); bytes 1-2
/// are `synced_len` (u16 little-endian, unless `FLAG_SYNCED_WHOLE_FILE`);
/// bytes 3-10 are `expected_first_seq` (u64 little-endian, unless
/// `FLAG_NO_EXPECTED_SEQ`). Inputs shorter than the prefix are not
/// scanned.
pub(crate) fn split_scan_input(data: &[u8]) -> Option<(ScanParams, &[u8])> {
    let (prefix, segment) = data.split_first_chunk::<SCAN_PARAMS_LEN>()?;
    let [flags, s0, s1, e0, e1, e2, e3, e4, e5, e6, e7] = *prefix;
    let mode = match flags & 3 {
        0 => RecoveryMode::Strict,
        2 => RecoveryMode::PointInTime,
        _ => RecoveryMode::TolerateTornTail,
    };
    let synced_len = if flags & FLAG_SYNCED_WHOLE_FILE != 0 {
        segment.len() as u64
    } else {
        u64::from(u16::from_le_bytes([s0, s1]))
    };
    let expected_first_seq = (flags & FLAG_NO_EXPECTED_SEQ == 0)
        .then(|| u64::from_le_bytes([e0, e1, e2, e3, e4, e5, e6, e7]));
    let database_id = if flags & FLAG_OTHER_DATABASE != 0 {
        SCAN_DATABASE_ID + 1
    } else {
        SCAN_DATABASE_ID
    };
    let segment_number = if flags & FLAG_OTHER_SEGMENT != 0 {
        SCAN_SEGMENT_NUMBER + 1
    } else {
        SCAN_SEGMENT_NUMBER
    };
    let params = ScanParams {
        database_id,
        segment_number,
        expected_first_seq,
        synced_len,
        mode,
    };
    Some((params, segment))
}

/// Builds a segment-scan input: the parameter prefix (see
/// [`split_scan_input`]) followed by `segment`.
pub(crate) fn scan_input(
    mode: RecoveryMode,
    synced_len: u16,
    expected_first_seq: Option<u64>,
    segment: &[u8],
) -> Vec<u8> {
    let mut flags = match mode {
        RecoveryMode::Strict => 0,
        RecoveryMode::PointInTime => 2,
        _ => 1,
    };
    if expected_first_seq.is_none() {
        flags |= FLAG_NO_EXPECTED_SEQ;
    }
    let mut out = Vec::with_capacity(SCAN_PARAMS_LEN + segment.len());
    out.push(flags);
    out.extend_from_slice(&synced_len.to_le_bytes());
    out.extend_from_slice(&expected_first_seq.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(segment);
    out
}

/// `wal_segment_scan`: `scan_segment` with parameters from the input's
/// first bytes. On `Ok`, the result is consistent with the input and the
/// parameters (see [`check_scan_result`]).
pub(crate) fn check_segment_scan(data: &[u8]) {
    if let Some((params, segment)) = split_scan_input(data) {
        check_scan(segment, &params);
    }
}

/// Runs `scan_segment` and checks its result.
pub(crate) fn check_scan(segment: &[u8], params: &ScanParams) {
    match strata_format::wal::scan_segment(segment, params) {
        Ok(scan) => check_scan_result(segment, params, &scan),
        Err(error) => assert!(
            error.offset <= segment.len() as u64,
            "error offset {} past the end of a {}-byte segment: {error}",
            error.offset,
            segment.len()
        ),
    }
}

/// The invariants of a successful scan:
///
/// - `valid_len` is within the input, and covers the header and every
///   batch; batches are in file order, do not overlap, and each one
///   re-decodes at its offset to the sequence range reported;
/// - sequence numbers are dense: the first batch starts at the header's
///   `first_seq` (which equals `expected_first_seq` when given), each
///   batch starts right after the previous one, and `next_seq` follows the
///   last;
/// - the end is consistent with the bytes and the mode: `Clean` ends at
///   the end of the input, a zero tail is all zeros, `Torn` never happens
///   in strict mode, `Stopped` only in point-in-time mode;
/// - nothing before `synced_len` is cut off unless the scan reports it
///   (`Stopped`, point-in-time mode only).
pub(crate) fn check_scan_result(
    segment: &[u8],
    params: &ScanParams,
    scan: &strata_format::wal::SegmentScan,
) {
    let len = segment.len() as u64;
    assert!(
        scan.valid_len <= len,
        "valid_len {} > input {len}",
        scan.valid_len
    );

    match scan.header {
        None => {
            assert_eq!(scan.valid_len, 0, "valid bytes without a header");
            assert!(scan.batches.is_empty(), "batches without a header");
            assert_eq!(scan.next_seq, None, "next_seq without a header");
        }
        Some(header) => {
            assert!(scan.valid_len >= SEGMENT_HEADER_LEN as u64);
            assert_eq!(header.database_id, params.database_id);
            assert_eq!(header.segment_number, params.segment_number);
            if let Some(expected) = params.expected_first_seq {
                assert_eq!(header.first_seq, expected, "first_seq not as expected");
            }
            assert_eq!(
                Some(header.encode().as_slice()),
                segment.get(..SEGMENT_HEADER_LEN),
                "reported header is not the file's"
            );
            let mut next_seq = header.first_seq;
            let mut end_of_previous = SEGMENT_HEADER_LEN as u64;
            for batch in &scan.batches {
                assert!(
                    batch.offset >= end_of_previous,
                    "batches overlap or go back"
                );
                let end = batch
                    .offset
                    .checked_add(batch.framed_len)
                    .unwrap_or_else(|| panic!("batch end overflows"));
                assert!(end <= scan.valid_len, "batch past valid_len");
                assert_eq!(batch.first_seq, next_seq, "sequence numbers not dense");
                assert!(batch.last_seq >= batch.first_seq);
                check_batch_at(segment, batch);
                next_seq = batch.last_seq + 1;
                end_of_previous = end;
            }
            assert_eq!(scan.next_seq, Some(next_seq), "next_seq inconsistent");
        }
    }

    match &scan.end {
        SegmentEnd::Clean => assert_eq!(scan.valid_len, len, "Clean but bytes left over"),
        SegmentEnd::Empty => {
            assert_eq!(params.synced_len, 0, "Empty segment that was synced");
            assert!(segment.iter().all(|&b| b == 0), "Empty but not all zeros");
            assert!(scan.header.is_none());
        }
        SegmentEnd::ZeroTail { offset } => {
            assert_eq!(*offset, scan.valid_len);
            assert!(
                *offset >= params.synced_len,
                "zero tail inside synced bytes"
            );
            assert!(
                segment
                    .get(*offset as usize..)
                    .is_some_and(|tail| !tail.is_empty() && tail.iter().all(|&b| b == 0)),
                "zero tail is not zeros"
            );
        }
        SegmentEnd::Torn { offset, error } => {
            assert_ne!(params.mode, RecoveryMode::Strict, "Torn in strict mode");
            assert_eq!(*offset, scan.valid_len);
            assert!(
                *offset >= params.synced_len,
                "torn tail inside synced bytes"
            );
            assert!(*offset < len, "torn tail at the end of the input");
            assert!(error.offset >= *offset && error.offset <= len, "{error}");
        }
        SegmentEnd::Stopped { offset, error } => {
            assert_eq!(
                params.mode,
                RecoveryMode::PointInTime,
                "Stopped outside point-in-time"
            );
            assert!(scan.valid_len <= *offset && *offset <= len);
            assert!(error.offset >= *offset && error.offset <= len, "{error}");
        }
    }

    let reported = matches!(scan.end, SegmentEnd::Stopped { .. });
    if !reported {
        assert!(
            scan.valid_len >= params.synced_len || matches!(scan.end, SegmentEnd::Empty),
            "synced bytes cut off silently: valid_len {} < synced_len {}",
            scan.valid_len,
            params.synced_len
        );
    }
}

/// A batch reported by a scan decodes, at its offset, to its sequence
/// range.
fn check_batch_at(segment: &[u8], batch: &strata_format::wal::ScannedBatch) {
    let bytes = usize::try_from(batch.offset)
        .ok()
        .and_then(|offset| segment.get(offset..))
        .unwrap_or_else(|| panic!("batch offset {} past the input", batch.offset));
    let record = decode_record(bytes).unwrap_or_else(|e| panic!("reported batch: {e}"));
    assert_eq!(record.record_type, RecordType::Batch);
    assert_eq!(record.framed_len as u64, batch.framed_len);
    let view = decode_batch(record.payload).unwrap_or_else(|e| panic!("reported batch: {e}"));
    assert_eq!(view.first_seq, batch.first_seq);
    assert_eq!(view.last_seq(), batch.last_seq);
}
