//! The fuzz corpora, replayed on the stable toolchain, plus property tests
//! of whole-segment recovery.
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
use strata_format::wal::{
    BatchBuilder, RecordType, RecoveryMode, SYNC_POINT_SLOT_LEN, SYNC_POINT_SLOT_OFFSETS,
    ScanParams, SegmentHeader, SyncPoint, encode_record, set_batch_first_seq,
};

/// A fuzz target's check: panics if the input breaks an invariant.
type Check = fn(&[u8]);

/// The fuzz targets and their checks.
const TARGETS: [(&str, Check); 5] = [
    ("wal_record", checks::check_record),
    ("wal_batch", checks::check_batch),
    ("wal_segment_scan", checks::check_segment_scan),
    ("wal_segment_header", checks::check_segment_header),
    ("wal_sync_point", checks::check_sync_point),
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
