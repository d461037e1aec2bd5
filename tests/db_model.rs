//! Model-based property test of the `Db` API: random sequences of puts,
//! deletes, range deletions, batches, gets, scans in both directions,
//! prefix scans, snapshot reads, key-range splits and merges, clean reopens
//! and simulated crashes (through the fault-injecting file system), checked
//! against a `BTreeMap` model.
//!
//! Ranges: after every split or merge (each durable when it returns) the
//! expected list of range starts is updated; after every reopen or crash
//! the database's range map must equal it exactly, and every range's own
//! scan must return exactly the model's keys within its bounds (no key
//! lost, duplicated or served by the wrong range).
//!
//! The crash rule: every batch acknowledged with `sync: true` (and every
//! batch before it) survives; of the rest, a prefix of batches may survive,
//! never a part of one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use proptest::prelude::*;
use strata::env::{CrashMode, FaultFileSystem};
use strata::{Db, Options, SeqNo, WriteBatch, WriteOptions};

const KEYS: &[&[u8]] = &[
    b"",
    b"\x00",
    b"\x00\x00",
    b"a",
    b"ab",
    b"abc",
    b"b",
    b"ba",
    b"\xfe",
    b"\xff",
    b"\xff\xff",
];

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: usize,
        value: usize,
        sync: bool,
    },
    Delete {
        key: usize,
        sync: bool,
    },
    DeleteRange {
        start: usize,
        end: usize,
        sync: bool,
    },
    Batch {
        ops: Vec<(u8, usize, usize)>,
        sync: bool,
    },
    Split {
        key: usize,
    },
    Merge {
        index: usize,
    },
    CheckRanges,
    Get {
        key: usize,
    },
    Scan {
        start: Option<usize>,
        end: Option<usize>,
        inclusive: bool,
        reverse: bool,
    },
    Prefix {
        key: usize,
    },
    TakeSnapshot,
    ReadSnapshot {
        which: usize,
        key: usize,
    },
    ScanSnapshot {
        which: usize,
        reverse: bool,
    },
    DropSnapshot {
        which: usize,
    },
    Sync,
    Flush,
    WaitForCompactions,
    Reopen,
    Crash {
        mode: u8,
        seed: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    prop_oneof![
        6 => (key.clone(), 0usize..40, any::<bool>()).prop_map(|(key, value, sync)| Op::Put { key, value, sync }),
        2 => (key.clone(), any::<bool>()).prop_map(|(key, sync)| Op::Delete { key, sync }),
        1 => (key.clone(), key.clone(), any::<bool>()).prop_map(|(start, end, sync)| Op::DeleteRange { start, end, sync }),
        3 => (proptest::collection::vec((0u8..7, key.clone(), 0usize..40), 0..6), any::<bool>())
            .prop_map(|(ops, sync)| Op::Batch { ops, sync }),
        1 => key.clone().prop_map(|key| Op::Split { key }),
        1 => (0usize..8).prop_map(|index| Op::Merge { index }),
        1 => Just(Op::CheckRanges),
        4 => key.clone().prop_map(|key| Op::Get { key }),
        3 => (proptest::option::of(key.clone()), proptest::option::of(key.clone()), any::<bool>(), any::<bool>())
            .prop_map(|(start, end, inclusive, reverse)| Op::Scan { start, end, inclusive, reverse }),
        1 => key.clone().prop_map(|key| Op::Prefix { key }),
        1 => Just(Op::TakeSnapshot),
        2 => (0usize..4, key.clone()).prop_map(|(which, key)| Op::ReadSnapshot { which, key }),
        1 => (0usize..4, any::<bool>()).prop_map(|(which, reverse)| Op::ScanSnapshot { which, reverse }),
        1 => (0usize..4).prop_map(|which| Op::DropSnapshot { which }),
        1 => Just(Op::Sync),
        1 => Just(Op::Flush),
        1 => Just(Op::WaitForCompactions),
        1 => Just(Op::Reopen),
        1 => (0u8..4, any::<u64>()).prop_map(|(mode, seed)| Op::Crash { mode, seed }),
    ]
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

struct Harness {
    fs: Arc<FaultFileSystem>,
    db: Option<Db>,
    model: Model,
    /// Model states after each batch not yet known durable: (last seq, state).
    undurable: Vec<(u64, Model)>,
    /// The state and sequence number known durable.
    durable: (u64, Model),
    snapshots: Vec<(strata::Snapshot, Model)>,
    counter: usize,
    /// The range starts every split and merge so far must have left.
    range_starts: Vec<Vec<u8>>,
}

impl Harness {
    fn new() -> Self {
        let fs = Arc::new(FaultFileSystem::new());
        let db = Db::open("db", Self::options(&fs)).unwrap();
        Self {
            fs,
            db: Some(db),
            model: Model::new(),
            undurable: Vec::new(),
            durable: (0, Model::new()),
            snapshots: Vec::new(),
            counter: 0,
            range_starts: vec![Vec::new()],
        }
    }

    fn options(fs: &Arc<FaultFileSystem>) -> Options {
        // Tiny memtables and low triggers, so flushes, compactions, log
        // rotation and retention all happen within a short run.
        Options {
            file_system: fs.clone(),
            wal_segment_bytes_max: 512,
            memtable_bytes_max: 1500,
            level0_compaction_trigger: 2,
            level0_slowdown_writes: 4,
            level0_stop_writes: 8,
            level1_bytes_max: 2048,
            level_size_multiplier: 2,
            table_bytes_max: 1024,
            block_bytes: 256,
            // LZ4 blocks, so the block cache (which holds decompressed
            // blocks) and decompression are exercised too.
            compression: true,
            ..Options::default()
        }
    }

    fn db(&self) -> &Db {
        self.db.as_ref().unwrap()
    }

    fn value(&mut self, len: usize) -> Vec<u8> {
        self.counter += 1;
        let mut value = format!("{}:", self.counter).into_bytes();
        value.resize(len.max(value.len()), b'x');
        if len == 0 {
            value.clear();
        }
        value
    }

    fn write(&mut self, batch: WriteBatch, model_ops: Vec<(Vec<u8>, Option<Vec<u8>>)>, sync: bool) {
        let empty = batch.is_empty();
        let seq = self.db().write(batch, &WriteOptions { sync }).unwrap();
        if empty {
            return;
        }
        for (key, value) in model_ops {
            match value {
                Some(value) => self.model.insert(key, value),
                None => self.model.remove(&key),
            };
        }
        if sync {
            self.durable = (seq.get(), self.model.clone());
            self.undurable.clear();
        } else {
            self.undurable.push((seq.get(), self.model.clone()));
        }
    }

    fn scan_model(
        model: &Model,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut items: Vec<_> = model
            .range((start, end))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if reverse {
            items.reverse();
        }
        items
    }

    fn model_delete_range(model: &mut Model, start: &[u8], end: &[u8]) {
        let doomed: Vec<Vec<u8>> = model
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .map(|(k, _)| k.clone())
            .collect();
        for key in doomed {
            model.remove(&key);
        }
    }

    /// The range map is exactly the expected one, ranges tile the keyspace,
    /// and each range's scan holds exactly the model's keys in its bounds.
    fn check_ranges(&self) {
        let ranges = self.db().ranges();
        let starts: Vec<Vec<u8>> = ranges.iter().map(|r| r.start.clone()).collect();
        assert_eq!(starts, self.range_starts, "range map");
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end.as_deref(), Some(pair[1].start.as_slice()));
        }
        assert_eq!(ranges.last().unwrap().end, None);
        for range in &ranges {
            let end = range
                .end
                .as_deref()
                .map_or(Bound::Unbounded, Bound::Excluded);
            let start = Bound::Included(range.start.as_slice());
            let got: Vec<_> = self
                .db()
                .scan((start, end))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let expected = Self::scan_model(
                &self.model,
                start.map(<[u8]>::to_vec),
                end.map(<[u8]>::to_vec),
                false,
            );
            assert_eq!(got, expected, "keys of {}", range.id);
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::DeleteRange { start, end, sync } => {
                let (start, end) = (KEYS[start], KEYS[end]);
                let mut batch = WriteBatch::new();
                batch.delete_range(start, end);
                if start >= end {
                    let err = self.db().write(batch, &WriteOptions { sync }).unwrap_err();
                    assert!(err.to_string().contains("start < end"), "{err}");
                    return;
                }
                let mut model = self.model.clone();
                Self::model_delete_range(&mut model, start, end);
                let seq = self.db().write(batch, &WriteOptions { sync }).unwrap();
                self.model = model;
                if sync {
                    self.durable = (seq.get(), self.model.clone());
                    self.undurable.clear();
                } else {
                    self.undurable.push((seq.get(), self.model.clone()));
                }
            }
            Op::Split { key } => {
                let at = KEYS[key];
                let result = self.db().split_range(at);
                if at.is_empty() || self.range_starts.iter().any(|s| s == at) {
                    assert!(result.is_err(), "split at an existing start {at:?}");
                } else {
                    result.unwrap();
                    self.range_starts.push(at.to_vec());
                    self.range_starts.sort();
                }
                self.check_ranges();
            }
            Op::Merge { index } => {
                let ranges = self.db().ranges();
                if index + 1 < ranges.len() {
                    // Wrong order is refused.
                    assert!(
                        self.db()
                            .merge_ranges(ranges[index + 1].id, ranges[index].id)
                            .is_err()
                    );
                    self.db()
                        .merge_ranges(ranges[index].id, ranges[index + 1].id)
                        .unwrap();
                    self.range_starts.remove(index + 1);
                }
                self.check_ranges();
            }
            Op::CheckRanges => self.check_ranges(),
            Op::Put { key, value, sync } => {
                let value = self.value(value);
                let mut batch = WriteBatch::new();
                batch.put(KEYS[key], &value);
                self.write(batch, vec![(KEYS[key].to_vec(), Some(value))], sync);
            }
            Op::Delete { key, sync } => {
                let mut batch = WriteBatch::new();
                batch.delete(KEYS[key]);
                self.write(batch, vec![(KEYS[key].to_vec(), None)], sync);
            }
            Op::Batch { ops, sync } => {
                let mut batch = WriteBatch::new();
                let mut model = self.model.clone();
                for (kind, key, value) in ops {
                    match kind {
                        0..=3 => {
                            let value = self.value(value);
                            batch.put(KEYS[key], &value);
                            model.insert(KEYS[key].to_vec(), value);
                        }
                        4 | 5 => {
                            batch.delete(KEYS[key]);
                            model.remove(KEYS[key]);
                        }
                        _ => {
                            // A range deletion inside the batch, from this
                            // key to the one `value` places later.
                            let end = KEYS[(key + 1 + value % 4).min(KEYS.len() - 1)];
                            if KEYS[key] < end {
                                batch.delete_range(KEYS[key], end);
                                Self::model_delete_range(&mut model, KEYS[key], end);
                            }
                        }
                    }
                }
                let empty = batch.is_empty();
                let seq = self.db().write(batch, &WriteOptions { sync }).unwrap();
                if empty {
                    return;
                }
                self.model = model;
                if sync {
                    self.durable = (seq.get(), self.model.clone());
                    self.undurable.clear();
                } else {
                    self.undurable.push((seq.get(), self.model.clone()));
                }
            }
            Op::Get { key } => {
                assert_eq!(
                    self.db().get(KEYS[key]).unwrap(),
                    self.model.get(KEYS[key]).cloned(),
                    "get {:?}",
                    KEYS[key]
                );
            }
            Op::Scan {
                start,
                end,
                inclusive,
                reverse,
            } => {
                let start = start.map_or(Bound::Unbounded, |k| Bound::Included(KEYS[k]));
                let end = end.map_or(Bound::Unbounded, |k| {
                    if inclusive {
                        Bound::Included(KEYS[k])
                    } else {
                        Bound::Excluded(KEYS[k])
                    }
                });
                let expected = match (start, end) {
                    (Bound::Included(s), Bound::Included(e)) if s > e => Vec::new(),
                    (Bound::Included(s), Bound::Excluded(e)) if s >= e => Vec::new(),
                    _ => Self::scan_model(
                        &self.model,
                        start.map(<[u8]>::to_vec),
                        end.map(<[u8]>::to_vec),
                        reverse,
                    ),
                };
                let iter = if reverse {
                    self.db().scan_rev((start, end))
                } else {
                    self.db().scan((start, end))
                };
                let got: Vec<_> = iter.unwrap().collect::<Result<_, _>>().unwrap();
                assert_eq!(got, expected, "scan {start:?}..{end:?} reverse={reverse}");
            }
            Op::Prefix { key } => {
                let prefix = KEYS[key];
                let expected: Vec<_> = self
                    .model
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let got: Vec<_> = self
                    .db()
                    .prefix(prefix)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(got, expected, "prefix {prefix:?}");
            }
            Op::TakeSnapshot => {
                if self.snapshots.len() < 4 {
                    let snapshot = self.db().snapshot();
                    self.snapshots.push((snapshot, self.model.clone()));
                }
            }
            Op::ReadSnapshot { which, key } => {
                if let Some((snapshot, model)) = self.snapshots.get(which) {
                    assert_eq!(
                        snapshot.get(KEYS[key]).unwrap(),
                        model.get(KEYS[key]).cloned()
                    );
                }
            }
            Op::ScanSnapshot { which, reverse } => {
                if let Some((snapshot, model)) = self.snapshots.get(which) {
                    let iter = if reverse {
                        snapshot.scan_rev(..)
                    } else {
                        snapshot.scan(..)
                    };
                    let got: Vec<_> = iter.unwrap().collect::<Result<_, _>>().unwrap();
                    assert_eq!(
                        got,
                        Self::scan_model(model, Bound::Unbounded, Bound::Unbounded, reverse)
                    );
                }
            }
            Op::DropSnapshot { which } => {
                if which < self.snapshots.len() {
                    self.snapshots.remove(which);
                }
            }
            Op::Sync => {
                let seq = self.db().sync().unwrap();
                assert!(seq.get() >= self.undurable.last().map_or(self.durable.0, |(s, _)| *s));
                if let Some(last) = self.undurable.pop() {
                    self.durable = last;
                }
                self.undurable.clear();
            }
            Op::Flush => {
                self.db().flush().unwrap();
                self.check_full();
            }
            Op::WaitForCompactions => {
                self.db().wait_for_compactions().unwrap();
                self.db().verify_tables().unwrap();
                self.check_full();
            }
            Op::Reopen => {
                self.snapshots.clear();
                self.db.take().unwrap().close().unwrap();
                self.db = Some(Db::open("db", Self::options(&self.fs)).unwrap());
                // A clean close syncs: everything is durable.
                self.durable = (self.db().stats().last_seq.get(), self.model.clone());
                self.undurable.clear();
                self.check_full();
                self.check_ranges();
            }
            Op::Crash { mode, seed } => {
                self.snapshots.clear();
                let mode = [
                    CrashMode::DropUnsynced,
                    CrashMode::KeepPrefix,
                    CrashMode::GarbleSectors,
                    CrashMode::Random,
                ][mode as usize % 4];
                self.fs.crash_and_halt(mode, seed);
                drop(self.db.take());
                self.fs.resume();
                let db = Db::open("db", Self::options(&self.fs)).unwrap();
                let recovered = db.stats().last_seq.get();
                // The recovered state is the durable one or a later batch
                // boundary, never anything in between.
                let state = if recovered == self.durable.0 {
                    self.durable.1.clone()
                } else {
                    let found = self.undurable.iter().find(|(seq, _)| *seq == recovered);
                    let Some((_, state)) = found else {
                        panic!(
                            "recovered to seq {recovered}, which is not a batch boundary at or after the durable seq {} (unsynced: {:?})",
                            self.durable.0,
                            self.undurable.iter().map(|(s, _)| s).collect::<Vec<_>>()
                        );
                    };
                    state.clone()
                };
                self.db = Some(db);
                self.model = state;
                self.durable = (recovered, self.model.clone());
                self.undurable.clear();
                self.check_full();
                self.check_ranges();
            }
        }
    }

    fn check_full(&self) {
        let got: Vec<_> = self
            .db()
            .scan(..)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            got,
            Self::scan_model(&self.model, Bound::Unbounded, Bound::Unbounded, false)
        );
    }
}

proptest! {
    // 256 cases in CI; PROPTEST_CASES for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn db_matches_model_across_reopens_and_crashes(ops in proptest::collection::vec(op(), 1..120)) {
        let mut harness = Harness::new();
        for op in ops {
            harness.apply(op);
        }
        harness.check_full();
    }
}

#[test]
fn empty_batch_consumes_no_sequence_number() {
    let fs = Arc::new(FaultFileSystem::new());
    let db = Db::open("db", Harness::options(&fs)).unwrap();
    let a = db.put(b"k", b"v").unwrap();
    let b = db
        .write(WriteBatch::new(), &WriteOptions { sync: true })
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(db.put(b"k", b"w").unwrap(), SeqNo(a.get() + 1));
}

/// The model test above only means something if flushes, compactions and
/// table reads really happen with these options: check that they do.
#[test]
fn tiny_options_really_flush_and_compact() {
    let fs = Arc::new(FaultFileSystem::new());
    let db = Db::open("db", Harness::options(&fs)).unwrap();
    let mut model = Model::new();
    for i in 0..3000u32 {
        let key = format!("key{:04}", (i * 7919) % 1000).into_bytes();
        if i % 5 == 0 {
            db.delete(&key).unwrap();
            model.remove(&key);
        } else {
            let value = format!("value-{i}").into_bytes();
            db.put(&key, &value).unwrap();
            model.insert(key, value);
        }
    }
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    let stats = db.stats();
    assert!(stats.flushes > 10, "{stats:?}");
    assert!(stats.compactions > 3, "{stats:?}");
    assert!(
        stats.level_tables.iter().skip(1).sum::<u64>() > 0,
        "{stats:?}"
    );
    assert_eq!(stats.memtable_bytes, 0, "{stats:?}");
    assert!(stats.write_amplification > 1.0, "{stats:?}");
    let got: Vec<_> = db.scan(..).unwrap().collect::<Result<_, _>>().unwrap();
    let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(got, expected);
    for _ in 0..2 {
        for (key, value) in model.iter().take(50) {
            assert_eq!(db.get(key).unwrap().as_ref(), Some(value));
        }
    }
    let stats = db.stats();
    assert!(
        stats.block_cache_hits > 0 && stats.block_cache_misses > 0,
        "{stats:?}"
    );
    db.close().unwrap();
    let db = Db::open("db", Harness::options(&fs)).unwrap();
    assert_eq!(
        db.recovery_report().batches_replayed,
        0,
        "a clean close flushes everything"
    );
    let got: Vec<_> = db.scan_rev(..).unwrap().collect::<Result<_, _>>().unwrap();
    let mut expected = expected;
    expected.reverse();
    assert_eq!(got, expected);
}
