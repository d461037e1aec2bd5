//! Criterion benches of the commit log on the real file system.
//!
//! Run: `cargo bench --bench wal` (results and the machine's figures are in
//! `docs/benchmarks.md`). Records are 100-byte values under 16-byte keys.
//!
//! - `append_unsynced/1_record`: one single-record batch per `append`,
//!   `sync: false` (the write reaches the OS before returning).
//! - `append_unsynced/1000_records`: one 1,000-record batch per `append`.
//! - `append_synced/1000_records`: one 1,000-record batch per `append` with
//!   `sync: true` (one fdatasync per batch).
//! - `group_commit/{1,4,16,64}_threads`: every thread appends single-record
//!   batches with `sync: true`; throughput counts all threads' records.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strata::wal::{BatchBuilder, Wal, WalOptions};
use strata::{RealFileSystem, SeqNo};

const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;

fn open(dir: &tempfile::TempDir) -> Wal {
    let fs = Arc::new(RealFileSystem);
    let (wal, _) = Wal::open(
        fs,
        dir.path().join("wal"),
        1,
        WalOptions::default(),
        SeqNo(1),
        |_| Ok(()),
    )
    .unwrap();
    wal
}

fn batch(records: usize, counter: &mut u64) -> BatchBuilder {
    let mut batch = BatchBuilder::new();
    let value = [0xabu8; VALUE_BYTES];
    for _ in 0..records {
        *counter += 1;
        let mut key = [0u8; KEY_BYTES];
        key[..8].copy_from_slice(&counter.to_be_bytes());
        batch.put(&key, &value);
    }
    batch
}

fn append_unsynced(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_unsynced");
    for records in [1usize, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let wal = open(&dir);
        let mut counter = 0;
        group.throughput(Throughput::Elements(records as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{records}_records")),
            |b| {
                b.iter_batched(
                    || batch(records, &mut counter),
                    |batch| wal.append(batch, false).unwrap(),
                    criterion::BatchSize::SmallInput,
                );
            },
        );
    }
    group.finish();
}

fn append_synced(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_synced");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let wal = open(&dir);
    let mut counter = 0;
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000_records", |b| {
        b.iter_batched(
            || batch(1000, &mut counter),
            |batch| wal.append(batch, true).unwrap(),
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("group_commit");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for threads in [1usize, 4, 16, 64] {
        // Enough appends per round that a round takes tens of milliseconds.
        let per_thread = (2000 / threads).max(40);
        let dir = tempfile::tempdir().unwrap();
        let wal = Arc::new(open(&dir));
        group.throughput(Throughput::Elements((threads * per_thread) as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{threads}_threads")),
            |b| {
                b.iter_custom(|rounds| {
                    let mut total = Duration::ZERO;
                    for round in 0..rounds {
                        let barrier = Arc::new(Barrier::new(threads + 1));
                        let handles: Vec<_> = (0..threads)
                            .map(|t| {
                                let wal = Arc::clone(&wal);
                                let barrier = Arc::clone(&barrier);
                                std::thread::spawn(move || {
                                    let mut counter = (round << 32) | ((t as u64) << 20);
                                    let batches: Vec<_> =
                                        (0..per_thread).map(|_| batch(1, &mut counter)).collect();
                                    barrier.wait();
                                    for batch in batches {
                                        wal.append(batch, true).unwrap();
                                    }
                                })
                            })
                            .collect();
                        barrier.wait();
                        let start = Instant::now();
                        for handle in handles {
                            handle.join().unwrap();
                        }
                        total += start.elapsed();
                    }
                    total
                });
            },
        );
        let stats = wal.stats();
        eprintln!(
            "group_commit/{threads}_threads: {} batches in {} groups, {} fdatasyncs ({:.1} batches per sync)",
            stats.batches,
            stats.groups,
            stats.syncs,
            stats.batches as f64 / stats.syncs.max(1) as f64
        );
    }
    group.finish();
}

criterion_group!(benches, append_unsynced, append_synced, group_commit);
criterion_main!(benches);
