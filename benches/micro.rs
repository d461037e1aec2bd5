//! Criterion micro benches of the engine's building blocks, in db_bench's
//! terms: 16-byte keys, 100-byte values.
//!
//! Run: `cargo bench --bench micro` (results in `docs/benchmarks.md`).
//!
//! - `block/encode`: `BlockBuilder` add + finish of one ~4 KiB block
//!   (34 entries, restart interval 16), builder reused as in a table.
//! - `block/decode_iterate`: `Block::new` + a full forward iteration.
//! - `block/seek`: seeks to each of the block's keys (random order).
//! - `bloom/build_100k`: `BloomBuilder` with 10 bits/key, 100,000 keys.
//! - `bloom/probe_hit`, `bloom/probe_miss`: `bloom_may_contain` on keys in
//!   and not in the filter (per probe).
//! - `table/get_hit`, `table/get_miss`: `TableReader::get` on a 100,000-entry
//!   table built in memory with default `TableOptions` (no block cache:
//!   every lookup verifies its block's checksum).
//! - `table/scan100`: seek to a random key, then 99 `next`s.
//! - `memtable/insert`, `memtable/get`: the memtable is crate-private, so it
//!   is measured through `Db::put` / `Db::get` on a `MemFileSystem` with a
//!   1 GiB memtable, no sync and no flush: the cost includes the write
//!   path (batch encoding, an in-memory commit-log append, sequence
//!   publication), not only the skip list.
//! - `db/get_tables_hit`, `db/get_tables_miss`: `Db::get` of 400,000 keys
//!   flushed into tables (block cache warm) and compacted, memtable empty.
//! - `db/scan100_merged`: `Db::scan` from a random key, 100 entries, with
//!   every fourth key overwritten in a live memtable: the merge of a
//!   memtable and table levels, per 100-entry scan.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use strata::{Db, MemFileSystem, Options};
use strata_format::key::{MAX_SEQ, ValueKind, compare_bytewise, encode_internal_key};
use strata_format::table::{
    Block, BlockBuilder, BloomBuilder, DEFAULT_RESTART_INTERVAL, TableBuilder, TableOptions,
    TableReader, bloom_may_contain,
};

const VALUE_BYTES: usize = 100;
const BLOCK_TARGET: usize = 4096;
const BLOOM_KEYS: u64 = 100_000;
const TABLE_KEYS: u64 = 100_000;

/// db_bench's key shape: the index as 16 decimal digits.
fn key(i: u64) -> [u8; 16] {
    let mut key = [b'0'; 16];
    let digits = i.to_string();
    key[16 - digits.len()..].copy_from_slice(digits.as_bytes());
    key
}

fn values(count: usize) -> Vec<[u8; VALUE_BYTES]> {
    let mut rng = SmallRng::seed_from_u64(7);
    (0..count)
        .map(|_| {
            let mut value = [0u8; VALUE_BYTES];
            rng.fill_bytes(&mut value);
            value
        })
        .collect()
}

/// Entries of a ~4 KiB block: (key, value) in key order.
fn block_entries() -> Vec<([u8; 16], [u8; VALUE_BYTES])> {
    // Entry size: 3 varint bytes + key delta + value, ~120 bytes.
    let count = BLOCK_TARGET / (3 + 16 + VALUE_BYTES);
    let values = values(count);
    (0..count as u64)
        .map(|i| key(1_000 + i * 7))
        .zip(values)
        .collect()
}

fn block(c: &mut Criterion) {
    let entries = block_entries();
    let mut builder = BlockBuilder::new(DEFAULT_RESTART_INTERVAL, compare_bytewise);
    for (k, v) in &entries {
        builder.add(k, v);
    }
    let encoded = builder.finish().to_vec();

    let mut group = c.benchmark_group("block");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode", |b| {
        b.iter(|| {
            builder.reset();
            for (k, v) in &entries {
                builder.add(k, v);
            }
            black_box(builder.finish().len())
        });
    });
    group.bench_function("decode_iterate", |b| {
        b.iter(|| {
            let block = Block::new(encoded.as_slice()).unwrap();
            let mut iter = block.iter(compare_bytewise);
            let mut more = iter.seek_to_first().unwrap();
            let mut bytes = 0;
            while more {
                let (k, v) = iter.current().unwrap();
                bytes += k.len() + v.len();
                more = iter.next().unwrap();
            }
            black_box(bytes)
        });
    });
    let mut targets: Vec<[u8; 16]> = entries.iter().map(|(k, _)| *k).collect();
    targets.shuffle(&mut SmallRng::seed_from_u64(8));
    group.throughput(Throughput::Elements(targets.len() as u64));
    let block = Block::new(encoded.as_slice()).unwrap();
    group.bench_function("seek", |b| {
        b.iter(|| {
            let mut iter = block.iter(compare_bytewise);
            for target in &targets {
                assert!(iter.seek(target).unwrap());
                black_box(iter.current());
            }
        });
    });
    group.finish();
}

fn bloom(c: &mut Criterion) {
    let keys: Vec<[u8; 16]> = (0..BLOOM_KEYS).map(|i| key(i * 2)).collect();
    let mut group = c.benchmark_group("bloom");
    group.throughput(Throughput::Elements(BLOOM_KEYS));
    group.bench_function("build_100k", |b| {
        b.iter(|| {
            let mut bloom = BloomBuilder::new(10);
            for k in &keys {
                bloom.add_key(k);
            }
            black_box(bloom.finish())
        });
    });
    let mut bloom = BloomBuilder::new(10);
    for k in &keys {
        bloom.add_key(k);
    }
    let filter = bloom.finish();
    let false_positives = (0..BLOOM_KEYS)
        .filter(|i| bloom_may_contain(&filter, &key(i * 2 + 1)))
        .count();
    eprintln!(
        "bloom: {} bytes for {BLOOM_KEYS} keys, {:.2}% false positives",
        filter.len(),
        false_positives as f64 * 100.0 / BLOOM_KEYS as f64
    );
    let mut rng = SmallRng::seed_from_u64(9);
    group.throughput(Throughput::Elements(1));
    group.bench_function("probe_hit", |b| {
        b.iter_batched(
            || key(rng.random_range(0..BLOOM_KEYS) * 2),
            |k| assert!(bloom_may_contain(&filter, &k)),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("probe_miss", |b| {
        b.iter_batched(
            || key(rng.random_range(0..BLOOM_KEYS) * 2 + 1),
            |k| black_box(bloom_may_contain(&filter, &k)),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// A 100,000-entry table of even-numbered keys (odd ones are misses).
fn table_bytes() -> Vec<u8> {
    let values = values(1024);
    let mut builder = TableBuilder::new(TableOptions::default());
    let mut internal = Vec::new();
    let mut file = Vec::new();
    for i in 0..TABLE_KEYS {
        internal.clear();
        encode_internal_key(&key(i * 2), i + 1, ValueKind::Put, &mut internal);
        builder.add(&internal, &values[(i % 1024) as usize]);
        file.extend_from_slice(&builder.take_output());
    }
    let finished = builder.finish();
    file.extend_from_slice(&finished.tail);
    assert_eq!(file.len() as u64, finished.file_size);
    file
}

fn table(c: &mut Criterion) {
    let file = table_bytes();
    let table = TableReader::open(&file, file.len() as u64).unwrap();
    eprintln!(
        "table: {} bytes, {} data blocks",
        file.len(),
        table.data_blocks().count()
    );
    let mut rng = SmallRng::seed_from_u64(10);
    let mut group = c.benchmark_group("table");
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_hit", |b| {
        b.iter_batched(
            || key(rng.random_range(0..TABLE_KEYS) * 2),
            |k| {
                let (kind, value) = table.get(&k, u64::MAX).unwrap().unwrap();
                assert_eq!(kind, ValueKind::Put);
                black_box(value.len())
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("get_miss", |b| {
        b.iter_batched(
            || key(rng.random_range(0..TABLE_KEYS) * 2 + 1),
            |k| assert!(table.get(&k, u64::MAX).unwrap().is_none()),
            BatchSize::SmallInput,
        );
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("scan100", |b| {
        let mut target = Vec::new();
        b.iter_batched(
            || key(rng.random_range(0..TABLE_KEYS - 100) * 2),
            |k| {
                target.clear();
                encode_internal_key(&k, MAX_SEQ, ValueKind::FOR_SEEK, &mut target);
                let mut iter = table.iter();
                let mut more = iter.seek(&target).unwrap();
                let mut bytes = 0;
                for _ in 0..100 {
                    assert!(more);
                    let (k, v) = iter.current_raw().unwrap();
                    bytes += k.len() + v.len();
                    more = iter.next().unwrap();
                }
                black_box(bytes)
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn memtable_db() -> Db {
    let options = Options {
        file_system: Arc::new(MemFileSystem::new()),
        memtable_bytes_max: 1 << 30,
        wal_replay_bytes_max: 4 << 30,
        ..Options::default()
    };
    Db::open("micro", options).unwrap()
}

fn memtable(c: &mut Criterion) {
    let value = values(1)[0];
    let mut group = c.benchmark_group("memtable");
    group.throughput(Throughput::Elements(1));
    {
        let db = memtable_db();
        let mut rng = SmallRng::seed_from_u64(11);
        group.bench_function("insert", |b| {
            b.iter_batched(
                || key(rng.random::<u64>() >> 12),
                |k| db.put(&k, &value).unwrap(),
                BatchSize::SmallInput,
            );
        });
        let stats = db.stats();
        assert_eq!(stats.flushes, 0, "the memtable bench must not flush");
    }
    let db = memtable_db();
    const LOADED: u64 = 1_000_000;
    let mut order: Vec<u64> = (0..LOADED).collect();
    order.shuffle(&mut SmallRng::seed_from_u64(12));
    for i in order {
        db.put(&key(i), &value).unwrap();
    }
    let stats = db.stats();
    assert_eq!(stats.flushes, 0, "the memtable bench must not flush");
    eprintln!("memtable: {} bytes for {LOADED} keys", stats.memtable_bytes);
    let mut rng = SmallRng::seed_from_u64(13);
    group.bench_function("get_1m", |b| {
        b.iter_batched(
            || key(rng.random_range(0..LOADED)),
            |k| black_box(db.get(&k).unwrap().unwrap()),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn db(c: &mut Criterion) {
    const LOADED: u64 = 400_000;
    let value = values(1)[0];
    let options = Options {
        file_system: Arc::new(MemFileSystem::new()),
        ..Options::default()
    };
    let db = Db::open("micro-db", options).unwrap();
    let mut order: Vec<u64> = (0..LOADED).collect();
    order.shuffle(&mut SmallRng::seed_from_u64(14));
    for i in &order {
        db.put(&key(i * 2), &value).unwrap();
    }
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    let mut group = c.benchmark_group("db");
    group.throughput(Throughput::Elements(1));
    let mut rng = SmallRng::seed_from_u64(15);
    group.bench_function("get_tables_hit", |b| {
        b.iter_batched(
            || key(rng.random_range(0..LOADED) * 2),
            |k| black_box(db.get(&k).unwrap().unwrap()),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("get_tables_miss", |b| {
        b.iter_batched(
            || key(rng.random_range(0..LOADED) * 2 + 1),
            |k| assert!(db.get(&k).unwrap().is_none()),
            BatchSize::SmallInput,
        );
    });
    // Every fourth key overwritten in the memtable: scans merge it with
    // the tables below.
    for i in (0..LOADED).step_by(4) {
        db.put(&key(i * 2), &value).unwrap();
    }
    group.throughput(Throughput::Elements(100));
    group.bench_function("scan100_merged", |b| {
        b.iter_batched(
            || key(rng.random_range(0..LOADED - 100) * 2),
            |k| {
                let start: &[u8] = &k;
                let mut bytes = 0;
                for entry in db.scan(start..).unwrap().take(100) {
                    let (k, v) = entry.unwrap();
                    bytes += k.len() + v.len();
                }
                black_box(bytes)
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, block, bloom, table, memtable, db);
criterion_main!(benches);
