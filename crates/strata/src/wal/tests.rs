//! Unit tests of the commit log over the in-memory and fault-injecting file
//! systems. The crash-torture suites live in the workspace's `tests/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_format::wal::{
    BatchBuilder, BatchOp, RecoveryMode, SYNC_POINT_FILE_NAME, segment_file_name,
};

use super::*;
use crate::env::{CrashMode, FaultFileSystem, FaultPlan, MemFileSystem};

const DB: u128 = 0x5eed;

fn batch(tag: u64, ops: usize) -> BatchBuilder {
    let mut b = BatchBuilder::new();
    for i in 0..ops {
        b.put(
            format!("key-{tag}-{i}").as_bytes(),
            format!("value-{tag}-{i}").as_bytes(),
        );
    }
    b
}

/// Replayed batches: (first_seq, ops rendered as strings).
type Replayed = Vec<(u64, Vec<String>)>;

/// Opens and collects every replayed batch as (first_seq, ops as strings).
fn open_collect(
    fs: Arc<dyn FileSystem>,
    options: WalOptions,
) -> Result<(Wal, RecoveryReport, Replayed)> {
    let mut seen = Vec::new();
    let (wal, report) = Wal::open(fs, "wal", DB, options, SeqNo(1), |view| {
        let ops = view
            .ops()
            .map(|op| match op {
                BatchOp::Put { key, value } => {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(value)
                    )
                }
                BatchOp::Delete { key } => format!("-{}", String::from_utf8_lossy(key)),
                BatchOp::DeleteRange { start, end } => format!(
                    "-[{}, {})",
                    String::from_utf8_lossy(start),
                    String::from_utf8_lossy(end)
                ),
                BatchOp::Skip => "~".to_string(),
            })
            .collect();
        seen.push((view.first_seq, ops));
        Ok(())
    })?;
    Ok((wal, report, seen))
}

fn mem() -> Arc<MemFileSystem> {
    Arc::new(MemFileSystem::new())
}

fn last_segment(fs: &MemFileSystem) -> String {
    let names = fs.list_dir(Path::new("wal")).unwrap();
    names
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .max()
        .unwrap()
}

#[test]
fn appends_replay_in_order_after_reopen() {
    let fs = mem();
    let (wal, report, seen) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    assert!(seen.is_empty());
    assert_eq!(report.next_seq, SeqNo(1));
    let a = wal.append(batch(1, 3), true).unwrap();
    let b = wal.append(batch(2, 1), false).unwrap();
    assert_eq!((a.first_seq, a.last_seq), (SeqNo(1), SeqNo(3)));
    assert_eq!((b.first_seq, b.last_seq), (SeqNo(4), SeqNo(4)));
    wal.close().unwrap();

    let (wal, report, seen) = open_collect(fs, WalOptions::default()).unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, 1);
    assert_eq!(seen[0].1[2], "key-1-2=value-1-2");
    assert_eq!(seen[1].0, 4);
    assert_eq!(report.next_seq, SeqNo(5));
    assert_eq!(wal.append(batch(3, 1), true).unwrap().first_seq, SeqNo(5));
}

#[test]
fn empty_batch_is_rejected_and_consumes_no_sequence_number() {
    let (wal, _, _) = open_collect(mem(), WalOptions::default()).unwrap();
    assert!(matches!(
        wal.append(BatchBuilder::new(), true),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(wal.append(batch(1, 1), true).unwrap().first_seq, SeqNo(1));
}

#[test]
fn concurrent_sync_writers_share_syncs_and_get_dense_sequence_numbers() {
    let fs = mem();
    let (wal, _, _) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    let wal = Arc::new(wal);
    let threads = 8;
    let per_thread = 200;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| wal.append(batch(t * 1000 + i, 2), true).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut commits: Vec<Commit> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    commits.sort_by_key(|c| c.first_seq);
    for (i, commit) in commits.iter().enumerate() {
        assert_eq!(commit.first_seq, SeqNo(1 + 2 * i as u64));
        assert_eq!(commit.last_seq, SeqNo(2 + 2 * i as u64));
    }
    let stats = wal.stats();
    assert_eq!(stats.batches, threads * per_thread);
    assert!(stats.syncs <= stats.groups);
    assert_eq!(wal.durable_seq(), SeqNo(2 * threads * per_thread));
    drop(wal);
    let (_, _, seen) = open_collect(fs, WalOptions::default()).unwrap();
    assert_eq!(seen.len() as u64, threads * per_thread);
}

#[test]
fn append_many_keeps_its_batches_in_order_among_concurrent_writers() {
    let fs = mem();
    let options = WalOptions {
        group_bytes_max: 4 << 10, // several groups per call
        ..WalOptions::default()
    };
    let (wal, _, _) = open_collect(fs.clone(), options.clone()).unwrap();
    let wal = Arc::new(wal);
    let others: Vec<_> = (0..2u64)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..300 {
                    wal.append(batch(t * 100_000 + i, 1), i % 7 == 0).unwrap();
                }
            })
        })
        .collect();
    let mut all_commits = Vec::new();
    for round in 0..20u64 {
        let batches: Vec<BatchBuilder> = (0..50)
            .map(|i| batch(900_000 + round * 100 + i, 2))
            .collect();
        let written = wal.append_many_returning(batches, round % 2 == 0).unwrap();
        assert_eq!(written.len(), 50);
        for pair in written.windows(2) {
            // In order, though other writers' batches may come between.
            assert!(pair[1].0.first_seq > pair[0].0.last_seq);
        }
        for (commit, bytes) in &written {
            let view = strata_format::wal::decode_batch(bytes).unwrap();
            assert_eq!(view.first_seq, commit.first_seq.get());
        }
        if round % 2 == 0 {
            assert!(wal.durable_seq() >= written.last().unwrap().0.last_seq);
        }
        all_commits.extend(written.into_iter().map(|(c, _)| c));
    }
    for other in others {
        other.join().unwrap();
    }
    drop(wal);
    let (_, _, seen) = open_collect(fs, options).unwrap();
    assert_eq!(seen.len(), 20 * 50 + 600);
    let mut next = 1;
    for (first, ops) in &seen {
        assert_eq!(*first, next, "dense sequence numbers");
        next += ops.len() as u64;
    }
}

#[test]
fn segments_rotate_and_replay_across_them() {
    let fs = mem();
    let options = WalOptions {
        segment_bytes_max: 300,
        ..Default::default()
    };
    let (wal, _, _) = open_collect(fs.clone(), options.clone()).unwrap();
    for i in 0..50 {
        wal.append(batch(i, 2), i % 3 == 0).unwrap();
    }
    assert!(wal.segment_count() > 5, "{} segments", wal.segment_count());
    drop(wal);
    let (wal, report, seen) = open_collect(fs, options).unwrap();
    assert_eq!(seen.len(), 50);
    assert_eq!(report.next_seq, SeqNo(101));
    assert!(report.torn_tail.is_none());
    assert_eq!(wal.oldest_retained_seq(), SeqNo(1));
}

#[test]
fn synced_batches_survive_every_crash_mode() {
    for (round, mode) in [
        CrashMode::DropUnsynced,
        CrashMode::KeepPrefix,
        CrashMode::GarbleSectors,
        CrashMode::Random,
    ]
    .into_iter()
    .cycle()
    .take(40)
    .enumerate()
    {
        let fs = Arc::new(FaultFileSystem::new());
        let options = WalOptions {
            segment_bytes_max: 400,
            ..Default::default()
        };
        let (wal, _, _) = open_collect(fs.clone(), options.clone()).unwrap();
        let mut acked = 0;
        for i in 0..20 {
            let sync = i % 4 == 0;
            let commit = wal.append(batch(i, 1 + (i as usize % 3)), sync).unwrap();
            if sync {
                acked = commit.last_seq.get();
            }
        }
        fs.crash(mode, round as u64);
        drop(wal);
        let (_, report, seen) = open_collect(fs, options).unwrap();
        let last = seen
            .last()
            .map_or(0, |(first, ops)| first + ops.len() as u64 - 1);
        assert!(
            last >= acked,
            "round {round} {mode:?}: recovered to {last}, acknowledged {acked}"
        );
        let mut expected = 1;
        for (first, _) in &seen {
            assert_eq!(*first, expected, "hole in round {round}");
            expected = first + seen.iter().find(|(f, _)| f == first).unwrap().1.len() as u64;
        }
        assert_eq!(report.next_seq, SeqNo(expected));
    }
}

#[test]
fn damage_before_synced_point_is_corruption_naming_file_and_offset() {
    let fs = mem();
    let (wal, _, _) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    for i in 0..5 {
        wal.append(batch(i, 1), true).unwrap();
    }
    drop(wal);
    let name = format!("wal/{}", last_segment(&fs));
    let mut bytes = fs.read_file(Path::new(&name)).unwrap();
    let at = 64 + 30;
    bytes[at] ^= 0x40;
    fs.write_file(Path::new(&name), &bytes).unwrap();
    let before = fs.read_file(Path::new(&name)).unwrap();
    let err = open_collect(fs.clone(), WalOptions::default()).unwrap_err();
    match &err {
        Error::Corruption { path, offset, .. } => {
            assert!(path.ends_with(last_segment(&fs)), "{err}");
            assert!((64..=at as u64).contains(offset), "{err}");
        }
        other => panic!("expected corruption, got {other}"),
    }
    // A failed open changes nothing.
    assert_eq!(fs.read_file(Path::new(&name)).unwrap(), before);
    assert!(err.to_string().contains(".wal"), "{err}");
}

/// A segment's bytes without the allocated (zero) space after its records.
fn records_only(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

#[test]
fn torn_tail_after_synced_point_is_cut_and_reported() {
    let fs = mem();
    let (wal, _, _) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    wal.append(batch(1, 1), true).unwrap();
    wal.append(batch(2, 1), false).unwrap();
    drop(wal);
    let name = format!("wal/{}", last_segment(&fs));
    let bytes = records_only(fs.read_file(Path::new(&name)).unwrap());
    fs.write_file(Path::new(&name), &bytes[..bytes.len() - 3])
        .unwrap();
    let (_, report, seen) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    assert_eq!(seen.len(), 1);
    let torn = report.torn_tail.expect("torn tail reported");
    assert!(torn.bytes_dropped > 0);
    // Strict mode refuses the same situation, and changes nothing.
    let fs = mem();
    let (wal, _, _) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    wal.append(batch(1, 1), true).unwrap();
    wal.append(batch(2, 1), false).unwrap();
    drop(wal);
    let name = format!("wal/{}", last_segment(&fs));
    let bytes = records_only(fs.read_file(Path::new(&name)).unwrap());
    fs.write_file(Path::new(&name), &bytes[..bytes.len() - 3])
        .unwrap();
    let strict = WalOptions {
        recovery_mode: RecoveryMode::Strict,
        ..Default::default()
    };
    assert!(
        open_collect(fs.clone(), strict)
            .unwrap_err()
            .is_corruption()
    );
    assert_eq!(
        fs.read_file(Path::new(&name)).unwrap().len(),
        bytes.len() - 3
    );
}

#[test]
fn point_in_time_stops_at_damage_and_sets_later_segments_aside() {
    let fs = mem();
    let options = WalOptions {
        segment_bytes_max: 200,
        ..Default::default()
    };
    let (wal, _, _) = open_collect(fs.clone(), options.clone()).unwrap();
    for i in 0..12 {
        wal.append(batch(i, 1), true).unwrap();
    }
    drop(wal);
    let mut names: Vec<_> = fs
        .list_dir(Path::new("wal"))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    let victim = format!("wal/{}", names[1]);
    let mut bytes = fs.read_file(Path::new(&victim)).unwrap();
    bytes[70] ^= 1;
    fs.write_file(Path::new(&victim), &bytes).unwrap();
    assert!(
        open_collect(fs.clone(), options.clone())
            .unwrap_err()
            .is_corruption()
    );
    let pit = WalOptions {
        recovery_mode: RecoveryMode::PointInTime,
        ..options.clone()
    };
    let (wal, report, seen) = open_collect(fs.clone(), pit).unwrap();
    let stopped = report.stopped_at.expect("stop reported");
    assert!(stopped.path.ends_with(&names[1]));
    assert!(!seen.is_empty() && seen.len() < 12);
    let next = wal.append(batch(99, 1), true).unwrap();
    assert_eq!(next.first_seq, report.next_seq);
    drop(wal);
    let listing = fs.list_dir(Path::new("wal")).unwrap();
    assert!(
        listing.iter().any(|n| n.ends_with(".wal.stopped")),
        "{listing:?}"
    );
    // The repaired log opens cleanly in the default mode.
    let (_, report, seen2) = open_collect(fs, options).unwrap();
    assert_eq!(seen2.len(), seen.len() + 1);
    assert!(report.ignored_files.iter().all(|n| n.ends_with(".stopped")));
}

#[test]
fn missing_segment_is_corruption() {
    for (victim, expected) in [(1, "missing"), (2, "sync point")] {
        let fs = mem();
        let options = WalOptions {
            segment_bytes_max: 200,
            ..Default::default()
        };
        let (wal, _, _) = open_collect(fs.clone(), options.clone()).unwrap();
        for i in 0..10 {
            wal.append(batch(i, 1), true).unwrap();
        }
        drop(wal);
        let mut names: Vec<_> = fs
            .list_dir(Path::new("wal"))
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".wal"))
            .collect();
        names.sort();
        assert_eq!(names.len(), 3);
        fs.remove_file(&Path::new("wal").join(&names[victim]))
            .unwrap();
        let err = open_collect(fs, options).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[test]
fn segment_of_another_database_is_rejected() {
    let fs = mem();
    let (wal, _, _) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    wal.append(batch(1, 1), true).unwrap();
    drop(wal);
    let result = Wal::open(fs, "wal", DB + 1, WalOptions::default(), SeqNo(1), |_| {
        Ok(())
    });
    let err = result.unwrap_err();
    assert!(err.to_string().contains("database"), "{err}");
}

#[test]
fn empty_segment_file_and_stray_files_are_tolerated() {
    let fs = mem();
    fs.create_dir_all(Path::new("wal")).unwrap();
    fs.write_file(&Path::new("wal").join(segment_file_name(1)), &[])
        .unwrap();
    fs.write_file(Path::new("wal/notes.txt"), b"hello").unwrap();
    let (wal, report, seen) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    assert!(seen.is_empty());
    assert_eq!(report.ignored_files, vec!["notes.txt".to_string()]);
    wal.append(batch(1, 1), true).unwrap();
    drop(wal);
    let (_, _, seen) = open_collect(fs, WalOptions::default()).unwrap();
    assert_eq!(seen.len(), 1);
}

#[test]
fn failed_fsync_poisons_the_log() {
    let fs = Arc::new(FaultFileSystem::new());
    let (wal, _, _) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    wal.append(batch(1, 1), true).unwrap();
    fs.set_plan(FaultPlan {
        fail_sync_at: Some(0),
        ..Default::default()
    });
    let err = wal.append(batch(2, 1), true).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("fdatasync"), "{err}");
    // Sticky: later writes and syncs fail too, even though syncs would work.
    assert!(matches!(
        wal.append(batch(3, 1), false),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
    assert!(wal.poisoned().is_some());
    fs.crash(CrashMode::DropUnsynced, 1);
    drop(wal);
    let (_, _, seen) = open_collect(fs, WalOptions::default()).unwrap();
    assert_eq!(
        seen.len(),
        1,
        "only the batch acknowledged before the failure survives"
    );
}

#[test]
fn enospc_poisons_the_log_and_short_writes_do_not() {
    let fs = Arc::new(FaultFileSystem::new());
    let (wal, _, _) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    fs.set_plan(FaultPlan {
        short_write_probability: 0.5,
        seed: 3,
        ..Default::default()
    });
    for i in 0..50 {
        wal.append(batch(i, 2), i % 2 == 0).unwrap();
    }
    fs.set_plan(FaultPlan {
        enospc_after_bytes: Some(100),
        ..Default::default()
    });
    let err = wal.append(batch(99, 20), true).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    drop(wal);
    fs.set_plan(FaultPlan::default());
    let (_, _, seen) = open_collect(fs, WalOptions::default()).unwrap();
    assert_eq!(seen.len(), 50);
}

#[test]
fn reader_tails_new_records_in_order_as_exact_bytes() {
    let fs = mem();
    let (wal, _, _) = open_collect(
        fs.clone(),
        WalOptions {
            segment_bytes_max: 256,
            ..Default::default()
        },
    )
    .unwrap();
    let wal = Arc::new(wal);
    let mut reader = wal.reader(SeqNo(1)).unwrap();
    assert!(reader.next(Duration::from_millis(5)).unwrap().is_none());
    let writer = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || {
            for i in 0..30 {
                wal.append(batch(i, 1 + i as usize % 2), true).unwrap();
            }
        })
    };
    let mut expected = 1;
    let mut records = 0;
    while records < 30 {
        let record = reader
            .next(Duration::from_secs(5))
            .unwrap()
            .expect("record within 5 s");
        assert_eq!(record.first_seq, SeqNo(expected));
        let decoded = strata_format::wal::decode_record(&record.bytes).unwrap();
        assert_eq!(decoded.framed_len, record.bytes.len());
        expected = record.last_seq.get() + 1;
        records += 1;
    }
    writer.join().unwrap();
    assert_eq!(reader.position(), wal.next_seq());
    // A reader from the middle starts at the record holding that sequence.
    let mut mid = wal.reader(SeqNo(4)).unwrap();
    let first = mid.next(Duration::ZERO).unwrap().unwrap();
    assert!(first.first_seq <= SeqNo(4) && first.last_seq >= SeqNo(4));
}

#[test]
fn durable_reader_waits_for_sync_and_written_reader_does_not() {
    let (wal, _, _) = open_collect(mem(), WalOptions::default()).unwrap();
    wal.append(batch(1, 1), false).unwrap();
    let mut durable = wal.reader(SeqNo(1)).unwrap();
    let mut written = wal.reader_with_mode(SeqNo(1), ReadMode::Written).unwrap();
    assert!(durable.next(Duration::from_millis(10)).unwrap().is_none());
    assert!(written.next(Duration::ZERO).unwrap().is_some());
    wal.sync().unwrap();
    assert!(durable.next(Duration::from_millis(10)).unwrap().is_some());
}

#[test]
fn background_sync_makes_unsynced_writes_durable() {
    let fs = mem();
    let options = WalOptions {
        sync_interval: Some(Duration::from_millis(5)),
        ..Default::default()
    };
    let (wal, _, _) = open_collect(fs.clone(), options).unwrap();
    let commit = wal.append(batch(1, 1), false).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while wal.durable_seq() < commit.last_seq {
        assert!(
            std::time::Instant::now() < deadline,
            "background sync did not run"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let segment = Path::new("wal").join(last_segment(&fs));
    assert_eq!(
        fs.durable_len(&segment).unwrap(),
        fs.read_file(&segment).unwrap().len() as u64
    );
}

#[test]
fn reader_reports_truncated_and_beyond_end_positions() {
    let options = WalOptions {
        segment_bytes_max: 150,
        ..Default::default()
    };
    let (wal, _, _) = open_collect(mem(), options).unwrap();
    for i in 0..10 {
        wal.append(batch(i, 1), true).unwrap();
    }
    assert!(matches!(
        wal.reader(SeqNo(12)),
        Err(Error::BeyondEnd {
            requested: 12,
            next: 11
        })
    ));
    assert!(wal.reader(SeqNo(11)).is_ok());
    let deleted = wal.release_below(SeqNo(8)).unwrap();
    assert!(deleted > 0);
    let oldest = wal.oldest_retained_seq();
    assert!(oldest <= SeqNo(8));
    let err = wal.reader(SeqNo(1)).unwrap_err();
    assert!(
        matches!(err, Error::LogTruncated { requested: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("no longer"), "{err}");
    let mut reader = wal.reader(oldest).unwrap();
    assert_eq!(
        reader.next(Duration::ZERO).unwrap().unwrap().first_seq,
        oldest
    );
}

#[test]
fn pins_hold_segments_until_advanced_or_dropped() {
    let options = WalOptions {
        segment_bytes_max: 150,
        ..Default::default()
    };
    let fs = mem();
    let (wal, _, _) = open_collect(fs.clone(), options.clone()).unwrap();
    let pin = wal.pin(SeqNo(5)).unwrap();
    for i in 0..10 {
        wal.append(batch(i, 1), true).unwrap();
    }
    wal.release_below(SeqNo(10)).unwrap();
    assert!(wal.oldest_retained_seq() <= SeqNo(5));
    assert!(
        wal.oldest_retained_seq() > SeqNo(1),
        "segments below the pin go"
    );
    pin.advance(SeqNo(6)).unwrap();
    assert!(wal.oldest_retained_seq() <= SeqNo(6));
    let held = wal.segment_count();
    drop(pin);
    wal.release_below(SeqNo(10)).unwrap();
    assert!(wal.segment_count() < held);
    assert!(wal.oldest_retained_seq() > SeqNo(6));
    assert!(matches!(wal.pin(SeqNo(1)), Err(Error::LogTruncated { .. })));
    drop(wal);
    // Reopen after retention: the log starts later and still replays.
    let mut first = None;
    let (_, report) = Wal::open(fs, "wal", DB, options, SeqNo(1), |view| {
        first.get_or_insert(view.first_seq);
        Ok(())
    })
    .unwrap();
    assert!(first.unwrap() > 6);
    assert_eq!(report.next_seq, SeqNo(11));
}

#[test]
fn replay_from_skips_older_batches_and_continues_numbering() {
    let fs = mem();
    let (wal, _, _) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    for i in 0..5 {
        wal.append(batch(i, 2), true).unwrap();
    }
    drop(wal);
    let mut firsts = Vec::new();
    let (wal, _) = Wal::open(
        fs.clone(),
        "wal",
        DB,
        WalOptions::default(),
        SeqNo(6),
        |view| {
            firsts.push(view.first_seq);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(firsts, vec![5, 7, 9]);
    drop(wal);
    // A log that ends before `replay_from` (its content is held elsewhere)
    // continues numbering from there and stays openable.
    let (wal, report) = Wal::open(
        fs.clone(),
        "wal",
        DB,
        WalOptions::default(),
        SeqNo(100),
        |_| Ok(()),
    )
    .unwrap();
    assert_eq!(report.next_seq, SeqNo(100));
    assert_eq!(wal.append(batch(9, 1), true).unwrap().first_seq, SeqNo(100));
    drop(wal);
    let (_, report, seen) = open_collect(fs, WalOptions::default()).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(report.next_seq, SeqNo(101));
}

#[test]
fn closing_the_log_ends_readers() {
    let fs = mem();
    let (wal, _, _) = open_collect(fs.clone(), WalOptions::default()).unwrap();
    let mut reader = wal.reader(SeqNo(1)).unwrap();
    wal.close().unwrap();
    assert!(reader.next(Duration::from_secs(1)).unwrap().is_none());
    assert!(
        fs.read_file(&Path::new("wal").join(SYNC_POINT_FILE_NAME))
            .is_ok()
    );
}

/// The records a caller needs are gone: the error says so by its kind
/// (`RecordsMissing`), not only in its text, so callers decide on it.
#[test]
fn a_log_that_starts_after_the_records_needed_is_refused_with_a_typed_cause() {
    let options = WalOptions {
        segment_bytes_max: 150,
        ..Default::default()
    };
    let fs = mem();
    let (wal, _, _) = open_collect(fs.clone(), options.clone()).unwrap();
    for i in 0..10 {
        wal.append(batch(i, 1), true).unwrap();
    }
    wal.release_below(SeqNo(8)).unwrap();
    assert!(wal.oldest_retained_seq() > SeqNo(1));
    drop(wal);
    let strict = WalOptions {
        require_replay_from: true,
        ..options
    };
    let err = Wal::open(fs, "wal", DB, strict, SeqNo(1), |_| Ok(())).unwrap_err();
    match &err {
        Error::Corruption {
            source: Some(source),
            ..
        } => assert!(
            matches!(
                source.kind,
                strata_format::DecodeErrorKind::RecordsMissing { needed: 1, .. }
            ),
            "{err}"
        ),
        other => panic!("{other}"),
    }
}
