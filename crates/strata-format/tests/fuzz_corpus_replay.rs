//! The fuzz corpora, replayed on the stable toolchain, plus property tests
//! of whole-segment recovery and of mutated tables.
//!
//! Every file under `fuzz/corpus/<target>/` goes through the same check as
//! the fuzz target of that name (the checks live in `fuzz/checks.rs`,
//! included here and by the targets), so a crash the fuzzer once found and
//! that was added to the corpus stays fixed without nightly or libFuzzer.
//!
//! The seed files of the corpora are written by the ignored test
//! `write_seed_corpus`:
//!
//! ```text
//! cargo test -p strata-format --test fuzz_corpus_replay -- --ignored write_seed_corpus
//! ```

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

#[path = "../../../fuzz/checks.rs"]
mod checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strata_format::key::{
    MAX_SEQ, ValueKind, compare_bytewise, compare_internal, encode_internal_key,
};
use strata_format::manifest::{
    ManifestHeader, TableEntry, VersionEdit, current_file_content, table_file_name,
};
use strata_format::table::{
    BlockBuilder, BlockHandle, Comparator, Compression, FOOTER_LEN, Footer, Properties,
    TableBuilder, TableOptions,
};
use strata_format::wal::{
    BatchBuilder, RecordType, RecoveryMode, SYNC_POINT_SLOT_LEN, SYNC_POINT_SLOT_OFFSETS,
    ScanParams, SegmentHeader, SyncPoint, encode_record, set_batch_first_seq,
};

/// A fuzz target's check: panics if the input breaks an invariant.
type Check = fn(&[u8]);

/// The fuzz targets and their checks.
const TARGETS: [(&str, Check); 10] = [
    ("wal_record", checks::check_record),
    ("wal_batch", checks::check_batch),
    ("wal_segment_scan", checks::check_segment_scan),
    ("wal_segment_header", checks::check_segment_header),
    ("wal_sync_point", checks::check_sync_point),
    ("table_block", checks::check_table_block),
    ("table_open_scan", checks::check_table_open_scan),
    (
        "table_footer_properties",
        checks::check_table_footer_properties,
    ),
    ("manifest_edit", checks::check_manifest_edit),
    ("internal_key", checks::check_internal_key),
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Runs `check` on every file of `target`'s corpus; fails, naming every
/// file that panicked, or if the corpus is missing or empty.
fn replay(target: &str, check: Check) {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} unreadable: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("corpus directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus directory {} is empty: nothing to replay",
        dir.display()
    );
    let mut failures = Vec::new();
    for path in &files {
        let data = std::fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read corpus file {}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failures.push(path.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} corpus files failed (messages above):\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn wal_record_corpus_replays() {
    replay(TARGETS[0].0, TARGETS[0].1);
}

#[test]
fn wal_batch_corpus_replays() {
    replay(TARGETS[1].0, TARGETS[1].1);
}

#[test]
fn wal_segment_scan_corpus_replays() {
    replay(TARGETS[2].0, TARGETS[2].1);
}

#[test]
fn wal_segment_header_corpus_replays() {
    replay(TARGETS[3].0, TARGETS[3].1);
}

#[test]
fn wal_sync_point_corpus_replays() {
    replay(TARGETS[4].0, TARGETS[4].1);
}

#[test]
fn table_block_corpus_replays() {
    replay(TARGETS[5].0, TARGETS[5].1);
}

#[test]
fn table_open_scan_corpus_replays() {
    replay(TARGETS[6].0, TARGETS[6].1);
}

#[test]
fn table_footer_properties_corpus_replays() {
    replay(TARGETS[7].0, TARGETS[7].1);
}

#[test]
fn manifest_edit_corpus_replays() {
    replay(TARGETS[8].0, TARGETS[8].1);
}

#[test]
fn internal_key_corpus_replays() {
    replay(TARGETS[9].0, TARGETS[9].1);
}

/// Every target in `fuzz/Cargo.toml` has a corpus replayed here, and the
/// other way round.
#[test]
fn every_fuzz_target_is_replayed() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/Cargo.toml"),
    )
    .unwrap();
    let mut declared: Vec<&str> = manifest
        .lines()
        .filter_map(|line| line.strip_prefix("name = \""))
        .filter_map(|rest| rest.strip_suffix('"'))
        .filter(|name| *name != "strata-format-fuzz")
        .collect();
    declared.sort_unstable();
    let mut replayed: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    replayed.sort_unstable();
    assert_eq!(declared, replayed);
}

/// A batch payload of `ops` operations (puts, and a delete every third),
/// numbered from `first_seq`.
fn batch(first_seq: u64, ops: u32, tag: usize) -> Vec<u8> {
    let mut b = BatchBuilder::new();
    for i in 0..ops {
        let key = format!("key-{tag}-{i}");
        if i % 3 == 2 {
            b.delete(key.as_bytes());
        } else {
            b.put(key.as_bytes(), format!("value-{i}").as_bytes());
        }
    }
    let mut bytes = b.into_bytes();
    set_batch_first_seq(&mut bytes, first_seq);
    bytes
}

/// A segment of the scan target's database and number, starting at
/// `first_seq`, with one batch record per entry of `batches` (its
/// operation count). Returns the bytes and the end offset of the header and
/// of each record.
fn segment(first_seq: u64, batches: &[u32]) -> (Vec<u8>, Vec<usize>) {
    let header = SegmentHeader {
        database_id: checks::SCAN_DATABASE_ID,
        segment_number: checks::SCAN_SEGMENT_NUMBER,
        first_seq,
    };
    let mut bytes = header.encode().to_vec();
    let mut ends = vec![bytes.len()];
    let mut seq = first_seq;
    for (tag, &ops) in batches.iter().enumerate() {
        encode_record(RecordType::Batch, &batch(seq, ops, tag), &mut bytes);
        seq += u64::from(ops);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

/// The seed inputs of every target: small valid inputs and typical damage.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use RecoveryMode::{PointInTime, Strict, TolerateTornTail};
    let mut seeds = Vec::new();

    let mut record = Vec::new();
    encode_record(RecordType::Batch, &batch(1, 2, 0), &mut record);
    seeds.push(("wal_record", "batch", record.clone()));
    let mut ignorable = Vec::new();
    encode_record(RecordType::Ignorable(0x90), b"future", &mut ignorable);
    seeds.push(("wal_record", "ignorable", ignorable));
    let mut empty = Vec::new();
    encode_record(RecordType::Batch, b"", &mut empty);
    seeds.push(("wal_record", "empty-payload", empty));
    let mut flipped = record.clone();
    flipped[12] ^= 0x01;
    seeds.push(("wal_record", "crc-mismatch", flipped));
    seeds.push(("wal_record", "torn", record[..record.len() - 3].to_vec()));
    let mut huge = record.clone();
    huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    seeds.push(("wal_record", "huge-length", huge));
    seeds.push(("wal_record", "zeros", vec![0u8; 16]));

    seeds.push(("wal_batch", "put-delete", batch(42, 3, 0)));
    seeds.push(("wal_batch", "one-put", batch(1, 1, 1)));
    let mut b = BatchBuilder::new();
    b.put(b"", b"");
    b.delete(b"");
    let mut empties = b.into_bytes();
    set_batch_first_seq(&mut empties, u64::MAX - 2);
    seeds.push(("wal_batch", "empty-key-and-value", empties));
    let mut count = batch(7, 2, 2);
    count[8] = 3;
    seeds.push(("wal_batch", "count-mismatch", count));
    let mut overflow = batch(0, 2, 3);
    set_batch_first_seq(&mut overflow, u64::MAX);
    seeds.push(("wal_batch", "seq-overflow", overflow));
    let mut long_varint = batch(5, 1, 4);
    long_varint.truncate(12);
    long_varint.extend_from_slice(&[2, 0x81, 0x00, b'k']); // delete "k", over-long length
    seeds.push(("wal_batch", "over-long-varint", long_varint));
    let one = batch(9, 2, 5);
    seeds.push(("wal_batch", "torn", one[..one.len() - 2].to_vec()));

    let (seg, ends) = segment(10, &[1, 3, 2]);
    let all = seg.len() as u16;
    let after_first = ends[1] as u16;
    seeds.push((
        "wal_segment_scan",
        "clean-strict",
        checks::scan_input(Strict, all, Some(10), &seg),
    ));
    seeds.push((
        "wal_segment_scan",
        "clean-no-expected-seq",
        checks::scan_input(TolerateTornTail, 64, None, &seg),
    ));
    seeds.push((
        "wal_segment_scan",
        "torn-tail",
        checks::scan_input(
            TolerateTornTail,
            after_first,
            Some(10),
            &seg[..seg.len() - 5],
        ),
    ));
    let mut damaged = seg.clone();
    damaged[ends[1] + 12] ^= 0x04;
    seeds.push((
        "wal_segment_scan",
        "crc-mismatch-synced",
        checks::scan_input(TolerateTornTail, all, Some(10), &damaged),
    ));
    seeds.push((
        "wal_segment_scan",
        "crc-mismatch-point-in-time",
        checks::scan_input(PointInTime, all, Some(10), &damaged),
    ));
    let mut zero_tail = seg.clone();
    zero_tail.extend_from_slice(&[0u8; 100]);
    seeds.push((
        "wal_segment_scan",
        "zero-tail",
        checks::scan_input(Strict, all, Some(10), &zero_tail),
    ));
    let mut garbage = zero_tail.clone();
    garbage.extend_from_slice(&[0xa5; 7]);
    seeds.push((
        "wal_segment_scan",
        "garbage-after-zeros",
        checks::scan_input(TolerateTornTail, all, Some(10), &garbage),
    ));
    let mut ignorable = seg.clone();
    encode_record(RecordType::Ignorable(0x81), b"skip me", &mut ignorable);
    seeds.push((
        "wal_segment_scan",
        "ignorable-record",
        checks::scan_input(TolerateTornTail, all, Some(10), &ignorable),
    ));
    seeds.push((
        "wal_segment_scan",
        "empty",
        checks::scan_input(TolerateTornTail, 0, Some(10), &[0u8; 32]),
    ));
    seeds.push((
        "wal_segment_scan",
        "torn-header",
        checks::scan_input(TolerateTornTail, 0, Some(10), &seg[..40]),
    ));
    seeds.push((
        "wal_segment_scan",
        "shorter-than-synced",
        checks::scan_input(PointInTime, all, Some(10), &seg[..ends[2]]),
    ));

    let header = SegmentHeader {
        database_id: 0xfeed,
        segment_number: 3,
        first_seq: 100,
    }
    .encode();
    seeds.push(("wal_segment_header", "valid", header.to_vec()));
    let mut bad = header;
    bad[20] ^= 0x40;
    seeds.push(("wal_segment_header", "crc-mismatch", bad.to_vec()));
    seeds.push(("wal_segment_header", "torn", header[..50].to_vec()));
    seeds.push((
        "wal_segment_header",
        "file-name",
        b"00000000000000000042.wal".to_vec(),
    ));

    let point = SyncPoint {
        database_id: 0xfeed,
        generation: 6,
        segment_number: 3,
        synced_len: 4096,
    };
    seeds.push(("wal_sync_point", "slot", point.encode().to_vec()));
    let newer = SyncPoint {
        generation: 7,
        synced_len: 8192,
        ..point
    };
    let mut file = vec![0u8; SYNC_POINT_SLOT_OFFSETS[1] as usize + SYNC_POINT_SLOT_LEN];
    for p in [point, newer] {
        let at = SYNC_POINT_SLOT_OFFSETS[p.slot()] as usize;
        file[at..at + SYNC_POINT_SLOT_LEN].copy_from_slice(&p.encode());
    }
    seeds.push(("wal_sync_point", "file-two-slots", file.clone()));
    let mut torn = file;
    torn[SYNC_POINT_SLOT_OFFSETS[1] as usize + 30] ^= 0xff;
    seeds.push(("wal_sync_point", "file-newer-slot-torn", torn));
    let mut bad = point.encode();
    bad[49] ^= 1;
    seeds.push(("wal_sync_point", "crc-mismatch", bad.to_vec()));
    seeds.extend(table_seeds());
    seeds
}

fn ikey(user_key: &[u8], seq: u64, kind: ValueKind) -> Vec<u8> {
    let mut out = Vec::new();
    encode_internal_key(user_key, seq, kind, &mut out);
    out
}

/// A block of `entries` under `comparator`, with a restart point every
/// `interval` entries.
fn block(entries: &[(Vec<u8>, &[u8])], interval: usize, comparator: Comparator) -> Vec<u8> {
    let mut builder = BlockBuilder::new(interval, comparator);
    for (key, value) in entries {
        builder.add(key, value);
    }
    builder.finish().to_vec()
}

/// An entry of a structured `table_open_scan` input (see
/// `checks::TableSpec`).
fn spec_entry(out: &mut Vec<u8>, user_key: &[u8], delete: bool, seq: u8, value: &[u8]) {
    out.push(user_key.len() as u8 | if delete { 0x10 } else { 0 });
    out.extend_from_slice(user_key);
    out.push(seq);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

/// A structured `table_open_scan` input: mode, options, mutation, then
/// `entries` entries.
fn table_spec_input(
    lz4: bool,
    block_bytes: u8,
    options: u8,
    mutation: u8,
    position: u32,
    xor: [u8; 4],
    entries: usize,
) -> Vec<u8> {
    let mut out = vec![
        1 | if lz4 { 2 } else { 0 } | (1 << 2),
        block_bytes,
        options,
        mutation,
    ];
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&xor);
    for i in 0..entries {
        let user_key = format!("k{:03}", i / 2);
        let value = format!("value {i} value {i}");
        spec_entry(
            &mut out,
            user_key.as_bytes(),
            i % 5 == 4,
            (200 - i) as u8,
            value.as_bytes(),
        );
    }
    // A repeated value, so that LZ4 has something to compress.
    out.extend_from_slice(&[4, b'z', b'z', b'z', b'z', 9, 0x80 | 40, b'r']);
    out
}

/// A table file (for the raw mode of `table_open_scan`) of `entries`
/// sorted entries.
fn table_file(entries: usize, options: TableOptions) -> Vec<u8> {
    let mut builder = TableBuilder::new(options);
    for i in 0..entries {
        let kind = if i % 7 == 6 {
            ValueKind::Delete
        } else {
            ValueKind::Put
        };
        let key = ikey(format!("key{:04}", i / 2).as_bytes(), 1000 - i as u64, kind);
        builder.add(&key, format!("value-{i}").as_bytes());
    }
    let mut file = builder.take_output();
    file.extend_from_slice(&builder.finish().tail);
    file
}

/// The seeds of the table, key and manifest targets.
fn table_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut seeds = Vec::new();

    let bytewise: Vec<(Vec<u8>, &[u8])> = ["apple", "apricot", "banana", "band", "bandana"]
        .iter()
        .map(|k| (k.as_bytes().to_vec(), &b"v"[..]))
        .collect();
    let with_selector = |selector: u8, contents: &[u8]| {
        let mut out = vec![selector];
        out.extend_from_slice(contents);
        out
    };
    let plain = block(&bytewise, 2, compare_bytewise);
    seeds.push(("table_block", "bytewise", with_selector(0, &plain)));
    let internal: Vec<(Vec<u8>, &[u8])> = vec![
        (ikey(b"a", 9, ValueKind::Delete), b""),
        (ikey(b"a", 5, ValueKind::Put), b"a5"),
        (ikey(b"ab", 7, ValueKind::Put), b"ab7"),
        (ikey(b"b", 1, ValueKind::Put), b""),
    ];
    let internal = block(&internal, 3, compare_internal);
    seeds.push(("table_block", "internal-keys", with_selector(1, &internal)));
    seeds.push(("table_block", "empty", with_selector(0, &[0, 0, 0, 0])));
    let mut shared = plain.clone();
    shared[3 + 5 + 1] = 30; // the second entry claims a 30-byte shared prefix
    seeds.push((
        "table_block",
        "shared-prefix-too-long",
        with_selector(0, &shared),
    ));
    let mut restarts = plain.clone();
    let n = restarts.len();
    restarts[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
    seeds.push((
        "table_block",
        "restart-count-too-large",
        with_selector(0, &restarts),
    ));
    // Two restart points whose keys decrease: forward iteration reports
    // the order, backward iteration does not (see fuzz/README.md).
    let unordered = block(
        &[(b"b".to_vec(), &b"1"[..]), (b"a".to_vec(), &b"2"[..])],
        1,
        |_, _| std::cmp::Ordering::Greater,
    );
    seeds.push((
        "table_block",
        "keys-decrease-across-restarts",
        with_selector(0, &unordered),
    ));
    seeds.push((
        "table_block",
        "truncated",
        with_selector(1, &internal[..internal.len() - 6]),
    ));

    let small = TableOptions {
        block_bytes: 128,
        restart_interval: 4,
        ..TableOptions::default()
    };
    let file = table_file(24, small);
    let raw = |file: &[u8]| {
        let mut out = vec![0u8];
        out.extend_from_slice(file);
        out
    };
    seeds.push(("table_open_scan", "raw-table", raw(&file)));
    let lz4 = table_file(
        24,
        TableOptions {
            compression: Compression::Lz4,
            bloom_bits_per_key: 0,
            ..small
        },
    );
    seeds.push(("table_open_scan", "raw-table-lz4-no-filter", raw(&lz4)));
    seeds.push((
        "table_open_scan",
        "raw-empty-table",
        raw(&table_file(0, TableOptions::default())),
    ));
    let mut flipped = file.clone();
    flipped[40] ^= 0x08;
    seeds.push((
        "table_open_scan",
        "raw-data-block-crc-mismatch",
        raw(&flipped),
    ));
    seeds.push((
        "table_open_scan",
        "raw-truncated-footer",
        raw(&file[..file.len() - 30]),
    ));
    seeds.push((
        "table_open_scan",
        "spec-intact",
        table_spec_input(false, 8, 0b0101_0011, 0, 0, [0; 4], 30),
    ));
    seeds.push((
        "table_open_scan",
        "spec-lz4-burst",
        table_spec_input(true, 12, 0b0100_0001, 0b1101, 77, [0x01, 0x80, 0, 0xff], 30),
    ));
    seeds.push((
        "table_open_scan",
        "spec-burst-in-footer",
        table_spec_input(false, 4, 0b0101_0111, 0b0001, u32::MAX - 40, [0x10; 4], 12),
    ));
    seeds.push((
        "table_open_scan",
        "spec-block-copy",
        table_spec_input(false, 2, 0b0000_0000, 0b0011, 0x0302, [0; 4], 40),
    ));

    let footer_bytes = file[file.len() - FOOTER_LEN..].to_vec();
    seeds.push(("table_footer_properties", "footer", footer_bytes.clone()));
    let no_filter = Footer {
        filter: None,
        ..Footer::decode(&footer_bytes).unwrap()
    };
    seeds.push((
        "table_footer_properties",
        "footer-no-filter",
        no_filter.encode().to_vec(),
    ));
    let mut bad = footer_bytes;
    bad[10] ^= 0x02;
    seeds.push(("table_footer_properties", "footer-crc-mismatch", bad));
    let properties = Properties {
        entries: 24,
        deletions: 3,
        data_blocks: 4,
        raw_key_bytes: 24 * 15,
        raw_value_bytes: 200,
        smallest_seq: 977,
        largest_seq: 1000,
        smallest_key: ikey(b"key0000", 1000, ValueKind::Put),
        largest_key: ikey(b"key0011", 977, ValueKind::Put),
        level: 2,
    };
    let props = properties.encode();
    seeds.push(("table_footer_properties", "properties", props.clone()));
    let mut future = props.clone();
    future.extend_from_slice(&[40, 3, b'n', b'e', b'w']); // tag 40, unknown to this build
    seeds.push(("table_footer_properties", "properties-unknown-tag", future));
    let mut handle = Vec::new();
    BlockHandle {
        offset: 4096,
        size: 300,
        checksum: 0xdead_beef,
    }
    .encode_to(&mut handle);
    seeds.push(("table_footer_properties", "block-handle", handle));

    let edit = VersionEdit {
        next_file_number: Some(12),
        flushed_seq: Some(977),
        added: vec![TableEntry {
            level: 1,
            number: 10,
            size: 4096,
            smallest: ikey(b"a", 5, ValueKind::Put),
            largest: ikey(b"z", 1, ValueKind::Delete),
            smallest_seq: 1,
            largest_seq: 5,
            entries: 40,
            obsolete_entries: 0,
        }],
        deleted: vec![(0, 7), (0, 8)],
        ..Default::default()
    };
    let encoded = edit.encode();
    seeds.push(("manifest_edit", "edit", encoded.clone()));
    let mut ignorable = vec![0x81, 2, 0, 0, 0, b'h', b'i'];
    ignorable.extend_from_slice(&encoded);
    seeds.push(("manifest_edit", "ignorable-field", ignorable));
    let mut unknown = encoded.clone();
    unknown.push(9);
    seeds.push(("manifest_edit", "unknown-tag", unknown));
    seeds.push((
        "manifest_edit",
        "truncated",
        encoded[..encoded.len() - 3].to_vec(),
    ));
    let header = ManifestHeader {
        database_id: 0xfeed,
        manifest_number: 5,
    };
    seeds.push(("manifest_edit", "header", header.encode().to_vec()));
    seeds.push((
        "manifest_edit",
        "current",
        current_file_content(5).into_bytes(),
    ));
    seeds.push((
        "manifest_edit",
        "table-name",
        table_file_name(12).into_bytes(),
    ));

    let mut keys = Vec::new();
    let a = ikey(b"user", 42, ValueKind::Put);
    let b = ikey(b"user", 42, ValueKind::Delete);
    let c = ikey(b"user", 7, ValueKind::Put);
    keys.push(a.len() as u8);
    keys.push(b.len() as u8);
    keys.extend_from_slice(&a);
    keys.extend_from_slice(&b);
    keys.extend_from_slice(&c);
    seeds.push(("internal_key", "same-user-key", keys));
    let mut mixed = vec![3, 9];
    mixed.extend_from_slice(b"abc"); // too short for a trailer
    mixed.extend_from_slice(&ikey(b"a", MAX_SEQ, ValueKind::Put));
    mixed.extend_from_slice(b"a\0\0\0\0\0\0\0\0"); // kind 0
    seeds.push(("internal_key", "malformed", mixed));
    seeds
}

/// Every seed passes its target's check (the corpus replay covers the
/// checked-in copies; this covers the generator).
#[test]
fn seeds_pass_their_checks() {
    for (target, name, data) in seeds() {
        let (_, check) = TARGETS.iter().find(|(t, _)| *t == target).unwrap();
        assert!(
            catch_unwind(|| check(&data)).is_ok(),
            "seed {target}/{name} fails its check"
        );
    }
}

/// The segment-scan seeds reach the outcome they are named for, so the
/// corpus starts from every kind of segment end.
#[test]
fn scan_seeds_reach_their_outcomes() {
    use strata_format::wal::SegmentEnd;
    for (target, name, data) in seeds() {
        if target != "wal_segment_scan" {
            continue;
        }
        let (params, segment) = checks::split_scan_input(&data).unwrap();
        let outcome = match strata_format::wal::scan_segment(segment, &params) {
            Err(_) => "error",
            Ok(scan) => match scan.end {
                SegmentEnd::Clean => "clean",
                SegmentEnd::Empty => "empty",
                SegmentEnd::ZeroTail { .. } => "zero-tail",
                SegmentEnd::Torn { .. } => "torn",
                SegmentEnd::Stopped { .. } => "stopped",
            },
        };
        let expected = match name {
            "clean-strict" | "clean-no-expected-seq" | "ignorable-record" => "clean",
            "torn-tail" | "garbage-after-zeros" | "torn-header" => "torn",
            "crc-mismatch-synced" => "error",
            "crc-mismatch-point-in-time" | "shorter-than-synced" => "stopped",
            "zero-tail" => "zero-tail",
            "empty" => "empty",
            other => panic!("no expected outcome for seed {other}"),
        };
        assert_eq!(outcome, expected, "seed {name}");
    }
}

/// Writes the seed files into `fuzz/corpus/<target>/seed-<name>`.
#[test]
#[ignore = "writes the checked-in seed corpus; run by hand"]
fn write_seed_corpus() {
    for (target, name, data) in seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}

fn mode() -> impl Strategy<Value = RecoveryMode> {
    prop_oneof![
        Just(RecoveryMode::Strict),
        Just(RecoveryMode::TolerateTornTail),
        Just(RecoveryMode::PointInTime),
    ]
}

fn scan_params(mode: RecoveryMode, synced_len: u64, expected_first_seq: Option<u64>) -> ScanParams {
    ScanParams {
        database_id: checks::SCAN_DATABASE_ID,
        segment_number: checks::SCAN_SEGMENT_NUMBER,
        expected_first_seq,
        synced_len,
        mode,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bytes, random parameters: no panic, and a consistent result.
    #[test]
    fn scan_of_random_bytes_is_consistent(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        mode in mode(),
        synced_len in 0u64..400,
        expected in proptest::option::of(0u64..20),
    ) {
        checks::check_scan(&bytes, &scan_params(mode, synced_len, expected));
    }

    /// A valid segment with one byte changed (or cut short), scanned with
    /// every synced length from nothing to all of it: no panic, and a
    /// consistent result; damage inside the synced bytes is never
    /// tolerated silently.
    #[test]
    fn scan_of_mutated_segment_is_consistent(
        batches in proptest::collection::vec(1u32..5, 0..5),
        position in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        cut in proptest::option::of(any::<prop::sample::Index>()),
        mode in mode(),
        synced in any::<prop::sample::Index>(),
    ) {
        let (mut bytes, _) = segment(10, &batches);
        let at = position.index(bytes.len());
        bytes[at] ^= xor;
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let synced_len = synced.index(bytes.len() + 1) as u64;
        let params = scan_params(mode, synced_len, Some(10));
        checks::check_scan(&bytes, &params);
        let damaged_and_synced = (at as u64) < synced_len;
        if damaged_and_synced && mode != RecoveryMode::PointInTime {
            prop_assert!(strata_format::wal::scan_segment(&bytes, &params).is_err());
        }
    }
}
