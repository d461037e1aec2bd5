//! Criterion benches of the key-value engine on the real file system, in
//! db_bench's terms: 16-byte keys, 100-byte values.
//!
//! Run: `cargo bench --bench db` (results in `docs/benchmarks.md`).
//!
//! - `fillseq` / `fillrandom`: 1,000 puts per iteration (no sync), keys in
//!   order / in random order.
//! - `fillrandom_batch100_sync`: 100-put atomic batches with `sync: true`.
//! - `overwrite`: puts over 100,000 existing keys.
//! - `readrandom`: gets of random existing keys from 100,000 (after a
//!   flush and compactions: reads go through tables and the block cache).
//! - `readmissing`: gets of absent keys (bloom filters answer).
//! - `scan100`: 100-entry forward scans from a random key.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::{Db, Options, WriteBatch, WriteOptions};

const VALUE: [u8; 100] = [0x5a; 100];
const LOADED_KEYS: u64 = 100_000;

fn key(i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&i.to_be_bytes());
    key
}

fn open(dir: &tempfile::TempDir) -> Db {
    Db::open(dir.path(), Options::default()).unwrap()
}

fn loaded() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let mut batch = WriteBatch::new();
    for i in 0..LOADED_KEYS {
        batch.put(&key(i), &VALUE);
        if batch.len() == 1000 {
            db.write(std::mem::take(&mut batch), &WriteOptions::default())
                .unwrap();
        }
    }
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    (dir, db)
}

fn fill(c: &mut Criterion) {
    let mut group = c.benchmark_group("db");
    group.throughput(Throughput::Elements(1000));
    for (name, random) in [("fillseq", false), ("fillrandom", true)] {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut next = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..1000 {
                    let k = if random { rng.random::<u64>() } else { next };
                    next += 1;
                    db.put(&key(k), &VALUE).unwrap();
                }
            });
        });
        eprintln!("{name}: {:?}", db.stats().level_tables);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir);
    let mut rng = SmallRng::seed_from_u64(2);
    group.throughput(Throughput::Elements(100));
    group.bench_function("fillrandom_batch100_sync", |b| {
        b.iter(|| {
            let mut batch = WriteBatch::new();
            for _ in 0..100 {
                batch.put(&key(rng.random()), &VALUE);
            }
            db.write(batch, &WriteOptions { sync: true }).unwrap();
        });
    });
    group.finish();
}

fn read(c: &mut Criterion) {
    let (_dir, db) = loaded();
    let mut group = c.benchmark_group("db");
    let mut rng = SmallRng::seed_from_u64(3);
    group.throughput(Throughput::Elements(1));
    group.bench_function("readrandom", |b| {
        b.iter(|| {
            db.get(&key(rng.random_range(0..LOADED_KEYS)))
                .unwrap()
                .unwrap()
        });
    });
    group.bench_function("readmissing", |b| {
        b.iter(|| {
            assert!(
                db.get(&key(LOADED_KEYS + rng.random_range(0..LOADED_KEYS)))
                    .unwrap()
                    .is_none()
            )
        });
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("scan100", |b| {
        b.iter(|| {
            let start = key(rng.random_range(0..LOADED_KEYS - 100));
            assert_eq!(db.scan(start.as_slice()..).unwrap().take(100).count(), 100);
        });
    });
    group.throughput(Throughput::Elements(1000));
    group.bench_function("overwrite", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                db.put(&key(rng.random_range(0..LOADED_KEYS)), &VALUE)
                    .unwrap();
            }
        });
    });
    let stats = db.stats();
    eprintln!(
        "read benches: levels {:?}, block cache {} hits / {} misses, write amplification {:.2}",
        stats.level_tables,
        stats.block_cache_hits,
        stats.block_cache_misses,
        stats.write_amplification
    );
    group.finish();
}

criterion_group!(benches, fill, read);
criterion_main!(benches);
