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

use std::cmp::Ordering;

use strata_format::coding::{Cursor, varint32_len, varint64_len};
use strata_format::key::{
    InternalKeyRef, MAX_SEQ, TRAILER_LEN, ValueKind, compare_bytewise, compare_internal,
    encode_internal_key,
};
use strata_format::manifest::{
    ManifestHeader, VersionEdit, current_file_content, manifest_file_name, parse_current,
    parse_manifest_file_name, parse_table_file_name, table_file_name,
};
use strata_format::table::{
    Block, BlockHandle, Comparator, Compression, FOOTER_LEN, Footer, Properties, TableBuilder,
    TableOptions, TableReader,
};
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
            BatchOp::DeleteRange { start, end } => builder.delete_range(start, end),
            BatchOp::Skip => builder.skip(),
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

// Sorted tables, internal keys and the manifest.

/// Entries as `(internal key, value)` pairs, in table order.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The most keys a check probes with seeks and gets, so that one input
/// stays cheap however many entries it holds.
const MAX_PROBES: usize = 16;

/// Up to [`MAX_PROBES`] indices spread evenly over `0..len`.
fn probe_indices(len: usize) -> impl Iterator<Item = usize> {
    let step = len.div_ceil(MAX_PROBES).max(1);
    (0..len).step_by(step)
}

/// `table_block`: `Block::new` on arbitrary bytes, then iteration both
/// ways and seeks. Byte 0 picks the comparator (bit 0 set: internal-key
/// order, else bytewise); the rest is the block's contents.
///
/// Nothing panics, and errors are sticky. A forward pass yields strictly
/// increasing keys. When the forward pass reaches the end without an
/// error, the backward pass also does and yields the same entries, and a
/// seek to any probe (every key, every key's prefix, every key with a byte
/// appended) lands on the first entry at or after the probe.
///
/// A backward pass that fails part way is not compared: `BlockIter::prev`
/// does not check key order across restart points, so on a block that the
/// forward pass rejects for its order it can yield keys out of order (see
/// `fuzz/README.md`, "Findings").
pub(crate) fn check_table_block(data: &[u8]) {
    let Some((&selector, contents)) = data.split_first() else {
        return;
    };
    let comparator: Comparator = if selector & 1 == 1 {
        compare_internal
    } else {
        compare_bytewise
    };
    let Ok(block) = Block::new(contents) else {
        return;
    };
    let (forward, forward_done) = block_pass(&block, comparator, true);
    for pair in forward.windows(2) {
        if let [a, b] = pair {
            assert_eq!(
                comparator(&b.0, &a.0),
                Ordering::Greater,
                "forward pass yields keys out of order"
            );
        }
    }
    assert_eq!(
        block.is_empty(),
        block_is_four_zeros(contents),
        "a block without restart points is exactly num_restarts = 0"
    );
    if block.is_empty() {
        assert!(
            forward_done && forward.is_empty(),
            "empty block yields entries"
        );
    }
    let (backward, backward_done) = block_pass(&block, comparator, false);
    if !forward_done {
        // Seeks must still not panic.
        let mut it = block.iter(comparator);
        for (key, _) in forward.iter().take(MAX_PROBES) {
            let _ = it.seek(key);
            let _ = it.prev();
        }
        let _ = it.seek(b"");
        return;
    }
    assert!(
        backward_done,
        "backward pass fails on a block the forward pass reads"
    );
    assert_eq!(backward, forward, "backward pass differs from forward pass");

    let mut it = block.iter(comparator);
    let mut probes: Vec<Vec<u8>> = vec![Vec::new(), vec![0xff; 9]];
    for i in probe_indices(forward.len()) {
        if let Some((key, _)) = forward.get(i) {
            probes.push(key.clone());
            probes.push(
                key.get(..key.len().saturating_sub(1))
                    .unwrap_or_default()
                    .to_vec(),
            );
            let mut longer = key.clone();
            longer.push(0);
            probes.push(longer);
        }
    }
    for probe in &probes {
        let at = forward.partition_point(|(key, _)| comparator(key, probe) == Ordering::Less);
        let found = it
            .seek(probe)
            .unwrap_or_else(|e| panic!("seek fails on a block the forward pass reads: {e}"));
        assert_eq!(found, at < forward.len(), "seek found the wrong answer");
        if let Some((key, value)) = forward.get(at) {
            assert_eq!(
                it.current(),
                Some((key.as_slice(), value.as_slice())),
                "seek landed on the wrong entry"
            );
            assert_eq!(
                it.value_bytes().as_deref(),
                Some(value.as_slice()),
                "value_bytes differs from current"
            );
            let moved = it.prev().unwrap_or_else(|e| panic!("prev after seek: {e}"));
            assert_eq!(moved, at > 0, "prev after seek");
            if let Some(previous) = at.checked_sub(1).and_then(|i| forward.get(i)) {
                assert_eq!(it.current().map(|(k, _)| k), Some(previous.0.as_slice()));
            }
        }
    }
}

fn block_is_four_zeros(contents: &[u8]) -> bool {
    contents == [0, 0, 0, 0]
}

/// One pass over a block, forward (`seek_to_first`, `next`) or backward
/// (`seek_to_last`, `prev`). Returns the entries in key order and whether
/// the pass reached the end without an error; checks that a failed pass
/// leaves the iterator invalid with its error kept.
fn block_pass(block: &Block<'_>, comparator: Comparator, forward: bool) -> (Entries, bool) {
    let mut it = block.iter(comparator);
    let mut out = Vec::new();
    let mut more = if forward {
        it.seek_to_first()
    } else {
        it.seek_to_last()
    };
    while let Ok(true) = more {
        let (key, value) = it
            .current()
            .unwrap_or_else(|| panic!("iterator on an entry has no current entry"));
        out.push((key.to_vec(), value.to_vec()));
        more = if forward { it.next() } else { it.prev() };
    }
    if let Err(error) = &more {
        assert!(!it.valid(), "iterator still valid after an error");
        assert_eq!(it.status(), Some(error), "error not kept");
        assert_eq!(
            it.seek_to_first().as_ref().err(),
            Some(error),
            "error not sticky"
        );
    }
    if !forward {
        out.reverse();
    }
    (out, more.is_ok())
}

/// `table_open_scan`: byte 0 picks the mode. Bit 0 clear: the rest is a
/// table file, opened with `TableReader::open` (expected size = its
/// length) and read by [`check_table_file`]. Bit 0 set: the rest
/// describes a table and one mutation of it, see [`check_table_mutation`].
pub(crate) fn check_table_open_scan(data: &[u8]) {
    match data.split_first() {
        Some((&mode, rest)) if mode & 1 == 1 => check_table_mutation(mode, rest),
        Some((_, file)) => check_table_file(file),
        None => {}
    }
}

/// A table file of arbitrary bytes: nothing panics. If it opens, every key
/// a forward scan yields is a valid internal key, in strictly increasing
/// order; `verify` succeeds only if the scan does and agrees with the
/// properties. When the forward scan reaches the end, the backward scan
/// yields the same entries, seeks land on the first entry at or after
/// their target, and a `get` that finds something returns what the scan
/// says it should (a `get` that finds nothing is only checked when the
/// filter lets the key through: a forged filter may lie).
pub(crate) fn check_table_file(file: &[u8]) {
    let Ok(table) = TableReader::open(file, file.len() as u64) else {
        return;
    };
    assert!(
        TableReader::open(file, file.len() as u64 + 1).is_err(),
        "a table opened with the wrong expected size"
    );
    let (forward, forward_done) = table_pass(&table, true);
    for (key, _) in &forward {
        assert!(
            InternalKeyRef::decode(key).is_ok(),
            "scan yields an invalid internal key"
        );
    }
    for pair in forward.windows(2) {
        if let [a, b] = pair {
            assert_eq!(
                compare_internal(&b.0, &a.0),
                Ordering::Greater,
                "scan yields keys out of order"
            );
        }
    }
    let (backward, backward_done) = table_pass(&table, false);
    if table.verify().is_ok() {
        let props = table.properties();
        assert!(forward_done, "verify passed but the scan fails");
        assert_eq!(
            forward.len() as u64,
            props.entries,
            "verify passed with a wrong count"
        );
        assert_eq!(
            forward.first().map(|e| e.0.as_slice()),
            (props.entries > 0).then_some(props.smallest_key.as_slice())
        );
        assert_eq!(
            forward.last().map(|e| e.0.as_slice()),
            (props.entries > 0).then_some(props.largest_key.as_slice())
        );
    }
    let mut iter = table.iter();
    if !forward_done {
        for (key, _) in forward.iter().take(MAX_PROBES) {
            let _ = iter.seek(key);
            let _ = iter.prev();
            let _ = table.get(strata_format::key::user_key(key), MAX_SEQ);
        }
        return;
    }
    assert!(
        backward_done,
        "backward scan fails where the forward scan does not"
    );
    assert_eq!(backward, forward, "backward scan differs from forward scan");
    check_probes(&table, &forward, false, false);
}

/// Seeks and gets at every probe derived from up to [`MAX_PROBES`] of
/// `entries` (the table's full contents). A seek lands on the first entry
/// at or after its target, and `next`/`prev` from there move to its
/// neighbours; a get returns the newest entry of its user key at or below
/// its sequence number. Errors are allowed unless `must_succeed`; a get
/// that finds nothing is checked only when the filter lets its key
/// through, unless `trust_filter`.
fn check_probes(
    table: &TableReader<'_>,
    entries: &Entries,
    must_succeed: bool,
    trust_filter: bool,
) {
    let mut iter = table.iter();
    let mut targets = Vec::new();
    let mut gets = Vec::new();
    for i in probe_indices(entries.len()) {
        let Some((key, _)) = entries.get(i) else {
            continue;
        };
        let Ok(parsed) = InternalKeyRef::decode(key) else {
            continue;
        };
        let user = parsed.user_key;
        let mut after = user.to_vec();
        after.push(0);
        targets.push(key.clone());
        targets.push(internal_key(user, MAX_SEQ, ValueKind::FOR_SEEK));
        targets.push(internal_key(
            user,
            parsed.seq.saturating_sub(1),
            ValueKind::FOR_SEEK,
        ));
        targets.push(internal_key(&after, MAX_SEQ, ValueKind::FOR_SEEK));
        for seq in [u64::MAX, parsed.seq, parsed.seq.saturating_sub(1)] {
            gets.push((user.to_vec(), seq));
        }
        gets.push((after, MAX_SEQ));
    }
    targets.push(internal_key(b"", MAX_SEQ, ValueKind::FOR_SEEK));
    targets.push(internal_key(&[0xff; 4], 0, ValueKind::Delete));

    for target in &targets {
        let at =
            entries.partition_point(|(key, _)| compare_internal(key, target) == Ordering::Less);
        let found = match iter.seek(target) {
            Ok(found) => found,
            Err(e) => {
                assert!(!must_succeed, "seek failed: {e}");
                iter = table.iter();
                continue;
            }
        };
        assert_eq!(found, at < entries.len(), "seek found the wrong answer");
        let Some((key, value)) = entries.get(at) else {
            continue;
        };
        assert_eq!(
            iter.current_raw(),
            Some((key.as_slice(), value.as_slice())),
            "seek landed on the wrong entry"
        );
        assert_eq!(iter.value_bytes().as_deref(), Some(value.as_slice()));
        match iter.next() {
            Ok(more) => {
                assert_eq!(more, at + 1 < entries.len(), "next after seek");
                if let Some((key, value)) = entries.get(at + 1) {
                    assert_eq!(iter.current_raw(), Some((key.as_slice(), value.as_slice())));
                    match iter.prev() {
                        Ok(more) => {
                            assert!(more, "prev after next");
                            assert_eq!(
                                iter.current_raw().map(|(k, _)| k),
                                entries.get(at).map(|e| e.0.as_slice())
                            );
                        }
                        Err(e) => {
                            assert!(!must_succeed, "prev failed: {e}");
                            iter = table.iter();
                        }
                    }
                }
            }
            Err(e) => {
                assert!(!must_succeed, "next failed: {e}");
                iter = table.iter();
            }
        }
    }

    for (user, seq) in &gets {
        let expected = model_get(entries, user, *seq);
        match table.get(user, *seq) {
            Ok(Some((kind, value))) => assert_eq!(
                Some((kind, value.as_ref())),
                expected,
                "get returned the wrong entry"
            ),
            Ok(None) => assert!(
                expected.is_none() || (!trust_filter && !table.may_contain(user)),
                "get missed an entry the filter lets through"
            ),
            Err(e) => assert!(!must_succeed, "get failed: {e}"),
        }
    }
}

/// The newest entry of `user_key` at or below `seq` in `entries` (sorted
/// in internal-key order): its kind and value.
fn model_get<'e>(entries: &'e Entries, user_key: &[u8], seq: u64) -> Option<(ValueKind, &'e [u8])> {
    entries.iter().find_map(|(key, value)| {
        let key = InternalKeyRef::decode(key).ok()?;
        (key.user_key == user_key && key.seq <= seq).then_some((key.kind, value.as_slice()))
    })
}

fn internal_key(user_key: &[u8], seq: u64, kind: ValueKind) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + TRAILER_LEN);
    encode_internal_key(user_key, seq, kind, &mut out);
    out
}

/// One scan of a whole table, forward or backward: the entries in key
/// order and whether it reached the end without an error.
fn table_pass(table: &TableReader<'_>, forward: bool) -> (Entries, bool) {
    let mut iter = table.iter();
    let mut out = Vec::new();
    let mut more = if forward {
        iter.seek_to_first()
    } else {
        iter.seek_to_last()
    };
    while let Ok(true) = more {
        let (key, value) = iter
            .current_raw()
            .unwrap_or_else(|| panic!("cursor on an entry has no current entry"));
        out.push((key.to_vec(), value.to_vec()));
        more = if forward { iter.next() } else { iter.prev() };
    }
    if let Err(error) = &more {
        assert!(!iter.valid(), "cursor still valid after an error");
        assert_eq!(iter.status(), Some(error), "error not kept");
        assert_eq!(iter.next().as_ref().err(), Some(error), "error not sticky");
    }
    if !forward {
        out.reverse();
    }
    (out, more.is_ok())
}

/// A small reader of fuzz input that yields zeros once the input is used
/// up, so every input describes something.
struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&byte, rest)) => {
                self.bytes = rest;
                byte
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let (taken, rest) = self.bytes.split_at(len.min(self.bytes.len()));
        self.bytes = rest;
        taken
    }
}

/// The most entries a structured `table_open_scan` input builds.
const MAX_TABLE_ENTRIES: usize = 300;

/// The layout of a structured `table_open_scan` input (after the mode
/// byte, whose bit 1 asks for LZ4 and whose bits 2-7 give the level):
///
/// ```text
/// block_bytes:u8  (32 + 8 * value)
/// options:u8      (bits 0-2: restart interval - 1; bits 3-7: bloom bits per key, 0 = no filter)
/// mutation:u8     (bits 0-1: 0 none, 1 and 2 a burst, 3 a block copy; bits 2-3: burst length - 1)
/// position:u32    (burst: file offset, modulo the length; copy: source and destination block, bytes 0 and 1)
/// xor:[u8; 4]     (burst: the bytes xored in)
/// entries         (until the input ends, at most MAX_TABLE_ENTRIES)
///
/// entry := head:u8 user_key[head & 0x0f] seq:u8 value_len:u8 value
///   head bit 4: a tombstone (else a put)
///   seq 0xff is MAX_SEQ, else seq
///   value_len bit 7 set: one byte, repeated 4 * (value_len & 0x7f) times
///   value_len bit 7 clear: value_len literal bytes
/// ```
///
/// The entries are sorted in internal-key order and duplicates dropped.
pub(crate) struct TableSpec {
    pub(crate) options: TableOptions,
    pub(crate) mutation: u8,
    pub(crate) position: u32,
    pub(crate) xor: [u8; 4],
    pub(crate) entries: Entries,
}

/// Reads a [`TableSpec`] from a structured input (mode byte first).
pub(crate) fn table_spec(mode: u8, input: &[u8]) -> TableSpec {
    let mut input = Input { bytes: input };
    let block_bytes = 32 + 8 * usize::from(input.u8());
    let options_byte = input.u8();
    let options = TableOptions {
        block_bytes,
        restart_interval: 1 + usize::from(options_byte & 7),
        bloom_bits_per_key: usize::from(options_byte >> 3),
        compression: if mode & 2 != 0 {
            Compression::Lz4
        } else {
            Compression::None
        },
        level: u32::from(mode >> 2),
    };
    let mutation = input.u8();
    let position = input.u32();
    let xor = [input.u8(), input.u8(), input.u8(), input.u8()];
    let mut entries = Vec::new();
    while !input.bytes.is_empty() && entries.len() < MAX_TABLE_ENTRIES {
        let head = input.u8();
        let user_key = input.take(usize::from(head & 0x0f)).to_vec();
        let kind = if head & 0x10 != 0 {
            ValueKind::Delete
        } else {
            ValueKind::Put
        };
        let seq = match input.u8() {
            0xff => MAX_SEQ,
            seq => u64::from(seq),
        };
        let value_len = input.u8();
        let value = if value_len & 0x80 != 0 {
            vec![input.u8(); 4 * usize::from(value_len & 0x7f)]
        } else {
            input.take(usize::from(value_len)).to_vec()
        };
        entries.push((internal_key(&user_key, seq, kind), value));
    }
    entries.sort_by(|a, b| compare_internal(&a.0, &b.0));
    entries.dedup_by(|a, b| a.0 == b.0);
    TableSpec {
        options,
        mutation,
        position,
        xor,
        entries,
    }
}

/// Writes the table of `spec` with `TableBuilder`, taking its output
/// block by block as a caller writing a file would.
pub(crate) fn build_table(spec: &TableSpec) -> (Vec<u8>, Properties) {
    let mut builder = TableBuilder::new(spec.options);
    let mut file = Vec::new();
    for (key, value) in &spec.entries {
        builder.add(key, value);
        file.extend(builder.take_output());
    }
    let finished = builder.finish();
    file.extend_from_slice(&finished.tail);
    assert_eq!(
        file.len() as u64,
        finished.file_size,
        "file_size is not the bytes written"
    );
    (file, finished.properties)
}

/// A table built from fuzz-derived entries reads back exactly (and its
/// filter has no false negatives); then one
/// mutation of it (see [`TableSpec`]) is either caught or harmless:
///
/// - a *burst*: up to 4 consecutive bytes xored with fuzz-chosen values.
///   CRC-32 detects every error burst of up to 32 bits, and a burst that
///   reaches a block's stored CRC disagrees with the copy in the parent's
///   handle, so a changed file must fail `open` or `verify`;
/// - a *block copy*: one block's bytes written over another block of the
///   same size (a misdirected write). The block CRC covers the block's
///   offset, so a changed file must fail `open` or `verify`.
///
/// Whatever the mutation, every read of the mutated table either fails or
/// returns exactly the original data: properties, forward and backward
/// scans (a prefix or suffix of the entries, then an error), seeks, gets.
pub(crate) fn check_table_mutation(mode: u8, input: &[u8]) {
    let spec = table_spec(mode, input);
    let (original, properties) = build_table(&spec);
    assert_eq!(properties.entries, spec.entries.len() as u64);
    let mutation = spec.mutation & 3;
    // Seeks and gets on the intact table only when it is not mutated: the
    // mutated table gets them, and they are the slow part.
    check_table_reads(&original, &spec.entries, &properties, true, mutation == 0);

    let mut file = original.clone();
    match mutation {
        0 => return,
        3 => {
            let Ok(table) = TableReader::open(&original, original.len() as u64) else {
                panic!("a freshly built table does not open");
            };
            let footer = *table.footer();
            let mut blocks: Vec<BlockHandle> = table.data_blocks().copied().collect();
            blocks.extend(footer.filter);
            blocks.extend([footer.properties, footer.index]);
            let [from, to, ..] = spec.position.to_le_bytes();
            let from = blocks.get(usize::from(from) % blocks.len());
            let to = blocks.get(usize::from(to) % blocks.len());
            if let (Some(from), Some(to)) = (from, to)
                && from.size == to.size
            {
                let source = byte_range(from);
                let dest = byte_range(to);
                let bytes = original.get(source).unwrap_or_default();
                if let Some(dest) = file.get_mut(dest) {
                    dest.copy_from_slice(bytes);
                }
            }
        }
        _ => {
            let len = 1 + usize::from((spec.mutation >> 2) & 3);
            let start = spec.position as usize % file.len();
            for (byte, xor) in file.iter_mut().skip(start).take(len).zip(spec.xor) {
                *byte ^= xor;
            }
        }
    }
    let intact = file == original;
    let detected = check_table_reads(&file, &spec.entries, &properties, intact, true);
    assert!(intact || detected, "a changed table opened and verified");
}

fn byte_range(handle: &BlockHandle) -> std::ops::Range<usize> {
    handle.offset as usize..handle.end() as usize
}

/// Reads all of `file` and compares with the entries and properties it was
/// built from: every read fails or returns exactly the original data, and
/// if `must_succeed` every read succeeds. Seeks and gets only with
/// `probes`. Returns whether `open` or `verify` failed.
fn check_table_reads(
    file: &[u8],
    entries: &Entries,
    properties: &Properties,
    must_succeed: bool,
    probes: bool,
) -> bool {
    let table = match TableReader::open(file, file.len() as u64) {
        Ok(table) => table,
        Err(e) => {
            assert!(!must_succeed, "a freshly built table does not open: {e}");
            return true;
        }
    };
    assert_eq!(
        table.properties(),
        properties,
        "properties differ from the ones written"
    );
    let verified = table.verify();
    if let Err(e) = &verified {
        assert!(!must_succeed, "a freshly built table does not verify: {e}");
    }
    for forward in [true, false] {
        let (found, done) = table_pass(&table, forward);
        assert!(
            found.len() <= entries.len(),
            "scan yields more entries than written"
        );
        let expected = if forward {
            entries.get(..found.len())
        } else {
            entries.get(entries.len() - found.len()..)
        };
        assert_eq!(
            Some(found.as_slice()),
            expected,
            "scan yields entries not written"
        );
        if done {
            assert_eq!(
                found.len(),
                entries.len(),
                "scan ended early without an error"
            );
        } else {
            assert!(!must_succeed, "scan of a freshly built table fails");
        }
        if forward && verified.is_ok() {
            assert!(done, "verify passed but the scan fails");
        }
    }
    if probes {
        check_probes(&table, entries, must_succeed, true);
    }
    verified.is_err()
}

/// `table_footer_properties`: `Footer::decode`, `Properties::decode` and
/// `BlockHandle::decode` on the whole input.
///
/// - A footer that decodes re-encodes to exactly the input's last 80 bytes
///   (the decoder checks every byte: magic, CRC, version, reserved).
/// - Properties that decode re-encode to bytes that decode to the same
///   properties, and that encoding is a fixed point (unknown tags, missing
///   tags and over-long varints make the input itself non-canonical).
/// - A handle that decodes re-encodes to the same handle, to the input's
///   bytes when it is as long (the writer's varints are shortest).
pub(crate) fn check_table_footer_properties(data: &[u8]) {
    if let Ok(footer) = Footer::decode(data) {
        assert_eq!(
            Some(footer.encode().as_slice()),
            data.get(data.len().saturating_sub(FOOTER_LEN)..),
            "footer does not re-encode to its own bytes"
        );
        assert_ne!(
            footer.filter,
            Some(BlockHandle::default()),
            "an all-zero filter handle means no filter"
        );
    }
    if let Ok(properties) = Properties::decode(data) {
        let encoded = properties.encode();
        let again = Properties::decode(&encoded)
            .unwrap_or_else(|e| panic!("re-encoded properties do not decode: {e}"));
        assert_eq!(again, properties, "properties do not round-trip");
        assert_eq!(
            again.encode(),
            encoded,
            "properties encoding is not a fixed point"
        );
    }
    if let Ok(handle) = BlockHandle::decode(data) {
        let mut encoded = Vec::new();
        handle.encode_to(&mut encoded);
        assert_eq!(
            encoded.len(),
            varint64_len(handle.offset) + varint64_len(handle.size) + 4
        );
        assert!(encoded.len() <= data.len(), "re-encoded handle is longer");
        assert_eq!(
            BlockHandle::decode(&encoded),
            Ok(handle),
            "handle round trip"
        );
        if encoded.len() == data.len() {
            assert_eq!(encoded, data, "shortest-form handle re-encodes differently");
        }
    }
}

/// `manifest_edit`: `VersionEdit::decode` on the whole input; an edit
/// that decodes re-encodes to no more bytes (duplicate fields collapse,
/// ignorable fields are dropped) that decode to the same edit, with levels
/// in range and keys within `MAX_KEY_BYTES`. The same bytes also go to
/// `ManifestHeader::decode` (a header that decodes round-trips its fields),
/// `parse_current` and the file-name parsers (a parsed number formats to a
/// name that parses to it again).
pub(crate) fn check_manifest_edit(data: &[u8]) {
    use strata_format::manifest::{LEVELS, MAX_KEY_BYTES};
    if let Ok(edit) = VersionEdit::decode(data) {
        for table in &edit.added {
            assert!(table.level < LEVELS, "level out of range");
            assert!(table.smallest.len() <= MAX_KEY_BYTES as usize);
            assert!(table.largest.len() <= MAX_KEY_BYTES as usize);
        }
        assert!(edit.deleted.iter().all(|&(level, _)| level < LEVELS));
        let encoded = edit.encode();
        assert!(encoded.len() <= data.len(), "re-encoded edit is longer");
        assert_eq!(
            VersionEdit::decode(&encoded).as_ref(),
            Ok(&edit),
            "edit does not round-trip"
        );
    }
    if let Ok(header) = ManifestHeader::decode(data) {
        assert_eq!(
            ManifestHeader::decode(&header.encode()),
            Ok(header),
            "manifest header does not round-trip"
        );
    }
    if let Ok(number) = parse_current(data) {
        assert_eq!(
            parse_current(current_file_content(number).as_bytes()),
            Ok(number)
        );
    }
    if let Ok(name) = std::str::from_utf8(data) {
        if let Some(number) = parse_manifest_file_name(name) {
            assert_eq!(
                parse_manifest_file_name(&manifest_file_name(number)),
                Some(number)
            );
        }
        if let Some(number) = parse_table_file_name(name) {
            assert_eq!(
                parse_table_file_name(&table_file_name(number)),
                Some(number)
            );
        }
    }
}

/// `internal_key`: the input is split into three keys (byte 0 and byte 1
/// are the lengths of the first two, taken modulo what is left; the third
/// is the rest). Each key that decodes re-encodes to its bytes, with a
/// sequence number at most `MAX_SEQ`; one that does not is shorter than a
/// trailer or has an unknown kind. `compare_internal` is reflexive,
/// antisymmetric and transitive on the three, and on keys that decode it
/// is user key ascending, then sequence number descending, then kind
/// descending, and `Equal` only for equal bytes.
pub(crate) fn check_internal_key(data: &[u8]) {
    let mut input = Input { bytes: data };
    let first = usize::from(input.u8());
    let second = usize::from(input.u8());
    let a = input.take(first % (input.bytes.len() + 1));
    let b = input.take(second % (input.bytes.len() + 1));
    let c = input.bytes;
    let keys = [a, b, c];
    for key in keys {
        match InternalKeyRef::decode(key) {
            Ok(parsed) => {
                assert!(parsed.seq <= MAX_SEQ, "sequence number above MAX_SEQ");
                assert_eq!(parsed.user_key, strata_format::key::user_key(key));
                assert_eq!(
                    internal_key(parsed.user_key, parsed.seq, parsed.kind),
                    key,
                    "internal key does not re-encode to its own bytes"
                );
                assert_eq!(
                    ValueKind::from_byte(parsed.kind.to_byte()),
                    Some(parsed.kind)
                );
            }
            Err(_) => {
                let kind_byte = key
                    .len()
                    .checked_sub(TRAILER_LEN)
                    .and_then(|at| key.get(at));
                assert!(
                    kind_byte.is_none_or(|&kind| ValueKind::from_byte(kind).is_none()),
                    "a well-formed internal key was rejected"
                );
            }
        }
        assert_eq!(compare_internal(key, key), Ordering::Equal, "not reflexive");
    }
    for x in keys {
        for y in keys {
            let order = compare_internal(x, y);
            assert_eq!(compare_internal(y, x), order.reverse(), "not antisymmetric");
            if let (Ok(px), Ok(py)) = (InternalKeyRef::decode(x), InternalKeyRef::decode(y)) {
                let expected = px
                    .user_key
                    .cmp(py.user_key)
                    .then(py.seq.cmp(&px.seq))
                    .then(py.kind.cmp(&px.kind));
                assert_eq!(
                    order, expected,
                    "order is not (user key, seq desc, kind desc)"
                );
                assert_eq!(order == Ordering::Equal, x == y, "Equal for different keys");
            }
            for z in keys {
                if order != Ordering::Greater && compare_internal(y, z) != Ordering::Greater {
                    let xz = compare_internal(x, z);
                    assert_ne!(xz, Ordering::Greater, "not transitive");
                    if order == Ordering::Less {
                        assert_eq!(xz, Ordering::Less, "not transitive");
                    }
                }
            }
        }
    }
}
