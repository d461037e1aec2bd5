//! Tail damage after and before the synced point.
//!
//! Each case writes a log on a `MemFileSystem` (synced batches, then
//! unsynced ones), drops the log without closing it (a drop syncs nothing,
//! so the unsynced tail stays unsynced and `SYNC_POINT` says how far the
//! last segment was synced), then damages a segment file directly:
//!
//! - (a) after the synced point of the last segment: truncate, flip a bit,
//!   zero-fill or garble a range, or append junk. The open must succeed,
//!   keep every acknowledged batch, replay exactly the records before the
//!   first damaged byte, cut the file there and report a torn tail whenever
//!   non-zero bytes were dropped; the repaired log must take new writes and
//!   reopen cleanly.
//! - (b) before the synced point (of the last segment, or anywhere in a
//!   sealed one): flip a bit, zero-fill a range or truncate. The open must
//!   fail with `Error::Corruption` naming the damaged file and an offset
//!   inside the damaged region, and must not change any file.
//!
//! CI runs 1,000 cases (half of each kind); `STRATA_TORTURE_TAIL_CASES=5000`
//! for the long run; `STRATA_TORTURE_SEED` replays a run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use strata::{FileSystem, MemFileSystem};
use strata_format::wal::{
    SEGMENT_HEADER_LEN, SYNC_POINT_FILE_NAME, SyncPoint, decode_record, parse_segment_file_name,
};
use strata_tests::{
    Ack, BatchId, DATABASE_ID, Generator, Tally, Violation, ViolationKind, append_batch, env_count,
    open_and_verify, sub_seed, torture_seed,
};

const DIR: &str = "/db/wal";

/// A log written for one case.
struct Written {
    fs: MemFileSystem,
    shared: Arc<dyn FileSystem>,
    generator: Generator,
    acked: Vec<Ack>,
    /// Segment paths, ascending; the last is the active one.
    segments: Vec<PathBuf>,
    /// Batches written (synced and unsynced).
    batches: u64,
}

impl Written {
    fn last(&self) -> &PathBuf {
        self.segments.last().unwrap()
    }
}

fn options(segment_bytes_max: u64) -> strata::wal::WalOptions {
    strata::wal::WalOptions {
        segment_bytes_max,
        ..Default::default()
    }
}

/// Writes `synced` acknowledged batches then `unsynced` unsynced ones, and
/// drops the log.
fn write_log(rng: &mut SmallRng, synced: u64, unsynced: u64, segment_bytes_max: u64) -> Written {
    let fs = MemFileSystem::new();
    let shared: Arc<dyn FileSystem> = Arc::new(fs.clone());
    let generator = Generator::new(rng.random());
    let (wal, _, _) = open_and_verify(
        Arc::clone(&shared),
        Path::new(DIR),
        options(segment_bytes_max),
        &generator,
        &[],
    )
    .unwrap();
    let mut acked = Vec::new();
    for index in 0..synced + unsynced {
        let batch = generator.batch(BatchId { stream: 0, index });
        let sync = index < synced;
        let commit = append_batch(&wal, &batch, sync).unwrap();
        if sync {
            acked.push(Ack {
                last_seq: commit.last_seq.get(),
                id: batch.id,
            });
        }
    }
    drop(wal); // no sync: the unsynced tail stays unsynced
    let dir = Path::new(DIR);
    let segments = shared
        .list_dir(dir)
        .unwrap()
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .map(|name| dir.join(name))
        .collect();
    Written {
        fs,
        shared,
        generator,
        acked,
        segments,
        batches: synced + unsynced,
    }
}

/// Where each record of a segment ends (the header counts as the first
/// "record", ending at 64); the allocated space after the records (zeros)
/// ends the list.
fn record_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = vec![SEGMENT_HEADER_LEN];
    let mut at = SEGMENT_HEADER_LEN;
    while at < bytes.len() && !strata_format::wal::is_zero_header(&bytes[at..]) {
        let Ok(record) = decode_record(&bytes[at..]) else {
            break;
        };
        at += record.framed_len;
        ends.push(at);
    }
    ends
}

/// The synced point of the last segment, from `SYNC_POINT` (what recovery
/// goes by): 0 if it names an earlier segment (a rotation happened after
/// the last sync). Checked against what the file system says is durable.
fn synced_len(written: &Written) -> usize {
    let file = written
        .fs
        .read_file(&Path::new(DIR).join(SYNC_POINT_FILE_NAME))
        .unwrap();
    let point = SyncPoint::newest(&file, DATABASE_ID).unwrap();
    let last = written.last();
    let number = parse_segment_file_name(last.file_name().unwrap().to_str().unwrap()).unwrap();
    if point.segment_number != number {
        assert!(
            point.segment_number < number,
            "{point:?} names a later segment"
        );
        return 0;
    }
    // Durable: the records up to the sync point, then only allocated
    // space (zeros).
    let durable = written.fs.durable_content(last).unwrap();
    assert!(
        durable.len() as u64 >= point.synced_len
            && durable[point.synced_len as usize..].iter().all(|&b| b == 0),
        "the sync point ({}) agrees with the file system's durable content ({} bytes)",
        point.synced_len,
        durable.len()
    );
    point.synced_len as usize
}

/// All files of the log directory and their bytes.
fn snapshot(fs: &MemFileSystem) -> BTreeMap<String, Vec<u8>> {
    let dir = Path::new(DIR);
    fs.list_dir(dir)
        .unwrap()
        .into_iter()
        .map(|name| {
            let bytes = fs.read_file(&dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Index of the record (in `ends`) holding byte `at`: the header is 0.
fn record_of(ends: &[usize], at: usize) -> usize {
    ends.iter().position(|&end| at < end).unwrap_or(ends.len())
}

#[derive(Default)]
struct Figures {
    after_cases: u64,
    before_cases: u64,
    acked: u64,
    torn_tails_reported: u64,
    zero_tails: u64,
    untouched_tails: u64,
    corruption_detected: u64,
    sealed_segment_cases: u64,
    files_unchanged_after_failed_open: u64,
}

/// (a) Damage at or after the synced point of the last segment.
fn after_synced_point(rng: &mut SmallRng, figures: &mut Figures) -> Result<(), Violation> {
    let synced = rng.random_range(1..40);
    let unsynced = rng.random_range(1..30);
    let segment_bytes_max = [8 << 10, 1 << 20][rng.random_range(0..2)];
    let written = write_log(rng, synced, unsynced, segment_bytes_max);
    let path = written.last().clone();
    let original = written.fs.read_file(&path).unwrap();
    let synced = synced_len(&written);
    let ends = record_ends(&original);
    // Damage the records (the allocated zeros after them are no records).
    let len = *ends.last().unwrap();
    let mut damaged = original.clone();
    let what = match rng.random_range(0..5u8) {
        0 => {
            let at = rng.random_range(synced..=len);
            damaged.truncate(at);
            format!("truncated to {at}")
        }
        1 if synced < len => {
            let at = rng.random_range(synced..len);
            damaged[at] ^= 1 << rng.random_range(0..8);
            format!("bit flipped at {at}")
        }
        2 if synced < len => {
            let start = rng.random_range(synced..len);
            let end = rng.random_range(start + 1..=len);
            damaged[start..end].fill(0);
            format!("zero-filled {start}..{end}")
        }
        3 if synced < len => {
            let start = rng.random_range(synced..len);
            let end = rng.random_range(start + 1..=len.min(start + 2048));
            rng.fill_bytes(&mut damaged[start..end]);
            format!("garbled {start}..{end}")
        }
        _ => {
            let junk = rng.random_range(1..600);
            let mut bytes = vec![0u8; junk];
            rng.fill_bytes(&mut bytes);
            damaged.extend_from_slice(&bytes);
            format!("{junk} junk bytes appended")
        }
    };
    let context = format!("{} (synced {synced}, length {len}): {what}", path.display());
    written.fs.write_file(&path, &damaged).unwrap();

    // Expected: every record that ends at or before the first changed byte.
    let first_change = original
        .iter()
        .zip(&damaged)
        .position(|(a, b)| a != b)
        .unwrap_or(original.len().min(damaged.len()));
    // A damaged header drops the whole (unsynced) segment.
    let (intact, keep) = if first_change < SEGMENT_HEADER_LEN {
        (0, 0)
    } else {
        let intact = ends.iter().filter(|&&end| end <= first_change).count() - 1;
        (intact, ends[intact])
    };
    let earlier_batches = written.batches - (ends.len() as u64 - 1);
    let (wal, report, verified) = open_and_verify(
        Arc::clone(&written.shared),
        Path::new(DIR),
        options(1 << 20),
        &written.generator,
        &written.acked,
    )
    .map_err(|v| Violation::new(v.kind, format!("{context}: {}", v.detail)))?;
    figures.acked += written.acked.len() as u64;
    let fail = |detail: String| {
        Err(Violation::new(
            ViolationKind::Garbage,
            format!("{context}: {detail}"),
        ))
    };
    if verified.batches != earlier_batches + intact as u64 {
        return fail(format!(
            "replayed {} batches, expected the {} before the damage",
            verified.batches,
            earlier_batches + intact as u64
        ));
    }
    let dropped = damaged.get(keep..).unwrap_or_default();
    match &report.torn_tail {
        Some(tail) => {
            figures.torn_tails_reported += 1;
            if tail.path != path
                || tail.offset != keep as u64
                || tail.bytes_dropped != dropped.len() as u64
            {
                return fail(format!(
                    "torn tail reported as {tail:?}, expected offset {keep}"
                ));
            }
        }
        None if dropped.iter().any(|&b| b != 0) => {
            return fail(format!(
                "{} bytes (not all zero) dropped at {keep} without a torn-tail report",
                dropped.len()
            ));
        }
        None if dropped.is_empty() => figures.untouched_tails += 1,
        None => figures.zero_tails += 1,
    }
    let repaired_bytes = written.fs.read_file(&path).unwrap_or_default();
    let repaired = repaired_bytes.len();
    // A removed segment's number is reused by the new segment, whose file
    // is then just a header (and its allocated space).
    let reused = keep == 0 && record_ends(&repaired_bytes) == [SEGMENT_HEADER_LEN];
    if repaired != keep && !reused {
        return fail(format!(
            "file is {repaired} bytes after repair, expected {keep}"
        ));
    }
    // The repaired log takes new writes and reopens cleanly.
    let batch = written.generator.batch(verified.next_id(0));
    let commit = append_batch(&wal, &batch, true).unwrap();
    wal.close().unwrap();
    let mut acked = written.acked.clone();
    acked.push(Ack {
        last_seq: commit.last_seq.get(),
        id: batch.id,
    });
    let (wal, report, _) = open_and_verify(
        Arc::clone(&written.shared),
        Path::new(DIR),
        options(1 << 20),
        &written.generator,
        &acked,
    )
    .map_err(|v| {
        Violation::new(
            v.kind,
            format!("{context}, reopening the repaired log: {}", v.detail),
        )
    })?;
    if report.torn_tail.is_some() {
        return fail(format!(
            "a second torn tail after the repair: {:?}",
            report.torn_tail
        ));
    }
    wal.close().unwrap();
    figures.after_cases += 1;
    Ok(())
}

/// (b) Damage before the synced point: the last segment below its sync
/// point, or a sealed segment anywhere.
fn before_synced_point(rng: &mut SmallRng, figures: &mut Figures) -> Result<(), Violation> {
    let synced = rng.random_range(1..40);
    let unsynced = rng.random_range(0..30);
    let segment_bytes_max = [4 << 10, 1 << 20][rng.random_range(0..2)];
    let written = write_log(rng, synced, unsynced, segment_bytes_max);
    let last_synced = synced_len(&written);
    if last_synced == 0 && written.segments.len() == 1 {
        // Nothing synced to damage (cannot happen: the header is synced at
        // open); new dice.
        return before_synced_point(rng, figures);
    }
    let sealed = written.segments.len() > 1 && (last_synced == 0 || rng.random_bool(0.3));
    let (path, synced) = if sealed {
        let path = written.segments[rng.random_range(0..written.segments.len() - 1)].clone();
        let len = written.fs.read_file(&path).unwrap().len();
        figures.sealed_segment_cases += 1;
        (path, len)
    } else {
        (written.last().clone(), last_synced)
    };
    let original = written.fs.read_file(&path).unwrap();
    let ends = record_ends(&original);
    let mut damaged = original.clone();
    // The damaged region, as [first record start, last record end).
    // Truncating a sealed segment at a record boundary is caught by the
    // next segment's continuity check, which names that segment: only the
    // last segment is truncated here.
    let kinds = if sealed { 2 } else { 3 };
    let (what, region) = match rng.random_range(0..kinds) {
        0 => {
            let at = rng.random_range(0..synced);
            damaged[at] ^= 1 << rng.random_range(0..8);
            let record = record_of(&ends, at);
            let start = if record == 0 { 0 } else { ends[record - 1] };
            (format!("bit flipped at {at}"), (start, ends[record]))
        }
        1 => {
            let start = rng.random_range(0..synced);
            let end = rng.random_range(start + 1..=original.len().min(start + 1024));
            damaged[start..end].fill(0);
            let first = record_of(&ends, start);
            let last = record_of(&ends, end - 1);
            let region_start = if first == 0 { 0 } else { ends[first - 1] };
            // A zero run is reported where the next non-zero byte is.
            let next_nonzero = damaged[end..]
                .iter()
                .position(|&b| b != 0)
                .map_or(damaged.len(), |p| end + p);
            let region_end = ends[last.min(ends.len() - 1)].max(next_nonzero);
            (
                format!("zero-filled {start}..{end}"),
                (region_start, region_end),
            )
        }
        _ => {
            let at = rng.random_range(0..synced);
            damaged.truncate(at);
            let record = record_of(&ends, at);
            let start = if record == 0 { 0 } else { ends[record - 1] };
            (format!("truncated to {at}"), (start, original.len()))
        }
    };
    if damaged == original {
        // Zeros over zeros: nothing was damaged. Try again with new dice.
        return before_synced_point(rng, figures);
    }
    let context = format!(
        "{} ({}, synced {synced}, length {}): {what}",
        path.display(),
        if sealed { "sealed" } else { "last" },
        original.len()
    );
    written.fs.write_file(&path, &damaged).unwrap();
    let before = snapshot(&written.fs);
    let result = open_and_verify(
        Arc::clone(&written.shared),
        Path::new(DIR),
        options(1 << 20),
        &written.generator,
        &written.acked,
    );
    let after = snapshot(&written.fs);
    let fail = |kind, detail: String| Err(Violation::new(kind, format!("{context}: {detail}")));
    match result {
        Ok((_, report, verified)) => {
            return fail(
                ViolationKind::Lost,
                format!(
                    "damage before the synced point was not detected: open replayed {} batches (report {report:?})",
                    verified.batches
                ),
            );
        }
        Err(violation) if violation.kind != ViolationKind::FailedReopen => {
            return fail(
                violation.kind,
                format!("open succeeded but: {}", violation.detail),
            );
        }
        Err(_) => {}
    }
    // open_and_verify dropped the typed error: open again for it.
    let error = strata::wal::Wal::open(
        Arc::clone(&written.shared),
        Path::new(DIR),
        DATABASE_ID,
        options(1 << 20),
        strata::SeqNo(1),
        |_| Ok(()),
    )
    .expect_err("the second open must fail as the first");
    match &error {
        strata::Error::Corruption {
            path: error_path,
            offset,
            ..
        } => {
            if *error_path != path {
                return fail(
                    ViolationKind::Garbage,
                    format!(
                        "the error names {}, not the damaged file: {error}",
                        error_path.display()
                    ),
                );
            }
            let (start, end) = region;
            if !(start as u64..=end as u64).contains(offset) {
                return fail(
                    ViolationKind::Garbage,
                    format!(
                        "the error's offset {offset} is outside the damaged region {start}..{end}: {error}"
                    ),
                );
            }
        }
        other => {
            return fail(
                ViolationKind::Garbage,
                format!("expected Error::Corruption, got {other}"),
            );
        }
    }
    figures.corruption_detected += 1;
    if before != after || after != snapshot(&written.fs) {
        return fail(
            ViolationKind::Garbage,
            "a failed open changed the log's files".into(),
        );
    }
    figures.files_unchanged_after_failed_open += 1;
    figures.before_cases += 1;
    Ok(())
}

#[test]
fn tail_damage_torture() {
    let cases = env_count("STRATA_TORTURE_TAIL_CASES", 1000);
    let seed = torture_seed();
    let started = Instant::now();
    let mut figures = Figures::default();
    let mut tally = Tally::new();
    for case in 0..cases {
        let mut rng = SmallRng::seed_from_u64(sub_seed(seed, case));
        let context = format!("seed {seed:#x} case {case} (STRATA_TORTURE_SEED={seed:#x})");
        let outcome = if case % 2 == 0 {
            after_synced_point(&mut rng, &mut figures)
        } else {
            before_synced_point(&mut rng, &mut figures)
        };
        if let Err(violation) = outcome {
            tally.record(&violation, &context);
        }
    }
    println!(
        "tail damage torture: seed={seed:#x} cases={cases} after_synced_point={} (acked batches {}, torn tails reported {}, zero tails {}, intact {}) before_synced_point={} (corruption detected {}, sealed segments {}, files unchanged after the failed open {}) {} wall={:.1}s",
        figures.after_cases,
        figures.acked,
        figures.torn_tails_reported,
        figures.zero_tails,
        figures.untouched_tails,
        figures.before_cases,
        figures.corruption_detected,
        figures.sealed_segment_cases,
        figures.files_unchanged_after_failed_open,
        tally.figures(),
        started.elapsed().as_secs_f64(),
    );
    tally.assert_clean();
    assert_eq!(figures.after_cases + figures.before_cases, cases);
    assert!(figures.torn_tails_reported > 0);
}
