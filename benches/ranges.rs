//! Key-range benchmarks (a custom runner: pause distributions and one-shot
//! timings do not fit criterion's model). Real file system, release build.
//!
//! Run: `cargo bench --bench ranges` (about 5 minutes; figures in
//! `docs/benchmarks.md`); `cargo bench --bench ranges -- memory` for the
//! in-memory routing figures alone. `STRATA_RANGES_BENCH_KEYS` scales part 1,
//! `STRATA_RANGES_BENCH_GIB` part 2.
//!
//! 1. Routing cost: `fillrandom` (1,000,000 single puts, 16-byte keys,
//!    100-byte values, no sync) and `readrandom` (1,000,000 gets of
//!    existing keys after flush and compaction) with 1, 8 and 64 ranges
//!    (even initial split points). Each configuration runs twice,
//!    interleaved (1, 8, 64, 64, 8, 1), and the better run counts.
//! 2. Split and merge of a 1 GiB range under load: a writer thread puts
//!    100-byte values in a loop and records each put's latency; the main
//!    thread splits the range at its median key, then merges it back. The
//!    report gives each operation's duration and the write latency
//!    distribution (p50, p99, max) during it, against a quiet baseline.
//! 3. `delete_range` over the 1,000,000 keys of part 2's data set: the
//!    call's latency, the time until compaction has reclaimed the space,
//!    and the bytes rewritten to do it.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata::{Db, Options, WriteBatch, WriteOptions};

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn key(i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&mix(i).to_be_bytes());
    key[8..].copy_from_slice(&i.to_be_bytes());
    key
}

fn split_points(ranges: u64) -> Vec<Vec<u8>> {
    (1..ranges)
        .map(|i| ((u64::MAX / ranges) * i).to_be_bytes().to_vec())
        .collect()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn routing(keys: u64) {
    println!("## Routing cost: fillrandom / readrandom, {keys} keys, 16 B keys, 100 B values");
    let mut best: std::collections::BTreeMap<u64, (f64, f64)> = Default::default();
    for ranges in [1u64, 8, 64, 64, 8, 1] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            initial_split_points: split_points(ranges),
            range_split_bytes: 0,
            ..Options::default()
        };
        let db = Db::open(dir.path(), options).unwrap();
        let value = [0x5au8; 100];
        let started = Instant::now();
        for i in 0..keys {
            db.put(&key(i), &value).unwrap();
        }
        let fill = keys as f64 / started.elapsed().as_secs_f64();
        db.flush().unwrap();
        db.wait_for_compactions().unwrap();
        let started = Instant::now();
        for i in 0..keys {
            let k = mix(i ^ 0x55) % keys;
            assert!(db.get(&key(k)).unwrap().is_some());
        }
        let read = keys as f64 / started.elapsed().as_secs_f64();
        assert_eq!(db.ranges().len() as u64, ranges);
        println!(
            "ranges={ranges:>2}  fillrandom {fill:>10.0} ops/s  readrandom {read:>10.0} ops/s"
        );
        let entry = best.entry(ranges).or_insert((0.0, 0.0));
        entry.0 = entry.0.max(fill);
        entry.1 = entry.1.max(read);
        db.close().unwrap();
    }
    let (fill1, read1) = best[&1];
    for (ranges, (fill, read)) in &best {
        println!(
            "best of two: ranges={ranges:>2}  fillrandom {fill:>10.0} ops/s ({:+.1}% vs 1 range)  readrandom {read:>10.0} ops/s ({:+.1}%)",
            (fill / fill1 - 1.0) * 100.0,
            (read / read1 - 1.0) * 100.0
        );
    }
}

/// The write and read paths alone: puts that stay in the memtable (no
/// flush or compaction runs), then gets of them, 5 interleaved rounds per
/// range count, best round kept. This isolates what routing adds per
/// operation from background work, which dominates the noise of the full
/// fill.
fn routing_in_memory(keys: u64) {
    println!("\n## Routing cost, memtable only: {keys} puts then {keys} gets per round, 5 rounds");
    let mut best: std::collections::BTreeMap<u64, (f64, f64)> = Default::default();
    // For instruction counts under callgrind: one configuration, one round.
    let only = std::env::var("STRATA_RANGES_BENCH_RANGES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    for round in 0..if only.is_some() { 1 } else { 5 } {
        let order: Vec<u64> = match only {
            Some(n) => vec![n],
            None if round % 2 == 0 => vec![1, 8, 64],
            None => vec![64, 8, 1],
        };
        for ranges in order {
            let dir = tempfile::tempdir().unwrap();
            let options = Options {
                initial_split_points: split_points(ranges),
                range_split_bytes: 0,
                memtable_bytes_max: 1 << 30,
                flush_on_close: false,
                ..Options::default()
            };
            let db = Db::open(dir.path(), options).unwrap();
            let value = [0x5au8; 100];
            let started = Instant::now();
            for i in 0..keys {
                db.put(&key(i), &value).unwrap();
            }
            let fill = keys as f64 / started.elapsed().as_secs_f64();
            let started = Instant::now();
            for i in 0..keys {
                assert!(db.get(&key(mix(i ^ 0x55) % keys)).unwrap().is_some());
            }
            let read = keys as f64 / started.elapsed().as_secs_f64();
            assert_eq!(db.stats().flushes, 0);
            let entry = best.entry(ranges).or_insert((0.0, 0.0));
            entry.0 = entry.0.max(fill);
            entry.1 = entry.1.max(read);
        }
    }
    let (fill1, read1) = best.get(&1).copied().unwrap_or((1.0, 1.0));
    for (ranges, (fill, read)) in &best {
        println!(
            "best of 5: ranges={ranges:>2}  put {fill:>10.0} ops/s ({:+.1}% vs 1 range)  get {read:>10.0} ops/s ({:+.1}%)",
            (fill / fill1 - 1.0) * 100.0,
            (read / read1 - 1.0) * 100.0
        );
    }
}

fn percentiles(mut micros: Vec<u64>) -> String {
    if micros.is_empty() {
        return "no writes".into();
    }
    micros.sort_unstable();
    let at = |p: f64| micros[((micros.len() - 1) as f64 * p) as usize];
    format!(
        "{} writes, p50 {} us, p99 {} us, p99.9 {} us, max {} us",
        micros.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        micros[micros.len() - 1]
    )
}

fn split_merge_delete(gib: u64) {
    let value_len = 1000usize;
    let keys = (gib << 30) / value_len as u64;
    println!(
        "\n## Split and merge of a {gib} GiB range under load ({keys} keys, {value_len} B values)"
    );
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        range_split_bytes: 0,
        ..Options::default()
    };
    let db = Arc::new(Db::open(dir.path(), options).unwrap());
    let value = vec![0x33u8; value_len];
    let started = Instant::now();
    let mut batch = WriteBatch::new();
    for i in 0..keys {
        batch.put(&key(i), &value);
        if batch.len() == 100 {
            db.write(std::mem::take(&mut batch), &WriteOptions::default())
                .unwrap();
        }
    }
    db.write(batch, &WriteOptions::default()).unwrap();
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    let range = &db.ranges()[0];
    println!(
        "loaded in {:.1}s: {} tables, {} MiB of tables in the range",
        started.elapsed().as_secs_f64(),
        range.level_tables.iter().sum::<u64>(),
        range.table_bytes >> 20
    );

    // A writer that records (start offset, latency) of each put.
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let writer = {
        let db = Arc::clone(&db);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let small = [0x77u8; 100];
            let mut samples: Vec<(u64, u64)> = Vec::with_capacity(1 << 22);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                db.put(&key(keys + (i % 200_000)), &small).unwrap();
                samples.push((
                    t.duration_since(epoch).as_micros() as u64,
                    t.elapsed().as_micros() as u64,
                ));
                i += 1;
            }
            samples
        })
    };
    let window = |from: Duration, to: Duration| (from.as_micros() as u64, to.as_micros() as u64);
    std::thread::sleep(Duration::from_secs(2));
    let quiet = window(Duration::from_secs(1), epoch.elapsed());
    let median = key(keys / 2);
    // The split key of a uniform hash: the middle of the key space.
    let at = {
        let mut k = median;
        k[..8].copy_from_slice(&(u64::MAX / 2).to_be_bytes());
        k
    };
    let wait0 = db.stats().range_change_wait_micros;
    let t0 = epoch.elapsed();
    let (left, right) = db.split_range(&at).unwrap();
    let t1 = epoch.elapsed();
    let wait1 = db.stats().range_change_wait_micros;
    std::thread::sleep(Duration::from_secs(2));
    let t2 = epoch.elapsed();
    db.merge_ranges(left, right).unwrap();
    let t3 = epoch.elapsed();
    let wait2 = db.stats().range_change_wait_micros;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let samples = writer.join().unwrap();
    let during = |(from, to): (u64, u64)| {
        samples
            .iter()
            .filter(|(start, _)| *start >= from && *start <= to)
            .map(|(_, latency)| *latency)
            .collect::<Vec<_>>()
    };
    let stats = db.stats();
    println!(
        "baseline (no split or merge): {}",
        percentiles(during(quiet))
    );
    println!(
        "split took {:.1} ms ({:.1} ms of it waiting for jobs in flight); writes during it: {}",
        (t1 - t0).as_secs_f64() * 1000.0,
        (wait1 - wait0) as f64 / 1000.0,
        percentiles(during(window(t0, t1)))
    );
    println!(
        "merge took {:.1} ms ({:.1} ms of it waiting for jobs in flight); writes during it: {}",
        (t3 - t2).as_secs_f64() * 1000.0,
        (wait2 - wait1) as f64 / 1000.0,
        percentiles(during(window(t2, t3)))
    );
    println!(
        "the split rewrote {} MiB of straddling tables",
        stats.range_split_bytes_written >> 20
    );

    println!("\n## delete_range over {keys} keys");
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    let before = db.stats();
    let bytes_before: u64 = before.level_bytes.iter().sum();
    let started = Instant::now();
    db.delete_range(&[0u8; 16], &[0xffu8; 17]).unwrap();
    let call = started.elapsed();
    assert!(db.get(&key(7)).unwrap().is_none());
    let started = Instant::now();
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    let reclaim = started.elapsed();
    let after = db.stats();
    let bytes_after: u64 = after.level_bytes.iter().sum();
    println!(
        "delete_range call: {:.3} ms; flush + compaction until reclaimed: {:.1} ms; table bytes {} MiB -> {} MiB; bytes rewritten {} KiB; range tombstones left {}",
        call.as_secs_f64() * 1000.0,
        reclaim.as_secs_f64() * 1000.0,
        bytes_before >> 20,
        bytes_after >> 20,
        (after.compaction_bytes_written - before.compaction_bytes_written) >> 10,
        after.range_tombstones
    );
    assert_eq!(db.scan(..).unwrap().count(), 0);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too,
    // so a quick smoke run unless asked for the real one.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let keys = env_u64(
        "STRATA_RANGES_BENCH_KEYS",
        if smoke { 20_000 } else { 1_000_000 },
    );
    // `cargo bench --bench ranges -- memory` runs part 1's in-memory half alone.
    if std::env::args().any(|a| a == "memory") {
        routing_in_memory(keys.min(300_000));
        return;
    }
    routing(keys);
    routing_in_memory(keys.min(300_000));
    if smoke {
        split_merge_delete_small();
    } else {
        split_merge_delete(env_u64("STRATA_RANGES_BENCH_GIB", 1));
    }
}

fn split_merge_delete_small() {
    // The same code path at 16 MiB, for `cargo test --benches`.
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    for i in 0..16_000 {
        db.put(&key(i), &[1u8; 1000]).unwrap();
    }
    db.flush().unwrap();
    let mut at = [0u8; 16];
    at[..8].copy_from_slice(&(u64::MAX / 2).to_be_bytes());
    let (l, r) = db.split_range(&at).unwrap();
    db.merge_ranges(l, r).unwrap();
    db.delete_range(&[0u8; 16], &[0xffu8; 17]).unwrap();
    assert_eq!(db.scan(..).unwrap().count(), 0);
}
