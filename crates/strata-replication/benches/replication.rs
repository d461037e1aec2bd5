//! Replication benchmarks (a custom runner: lag distributions and one-shot
//! transfers do not fit criterion's model). Everything runs in this
//! process over gRPC on 127.0.0.1, on the real file system: the primary,
//! its upstream service and the replicas share the machine's 2 cores, so
//! the figures include that contention.
//!
//! Run: `cargo bench -p strata-replication --bench replication` (about 3
//! minutes; figures in `docs/benchmarks.md`). `STRATA_REPL_BENCH_GIB`
//! sizes the bootstrap part (default 1).
//!
//! 1. The cost of replicas on the primary's write throughput: 4 writer
//!    threads, single puts of 100-byte values without sync, 3 s, with 0, 1,
//!    2 and 4 replicas following.
//! 2. Replica apply throughput: 300,000 single-put records written while
//!    the replica is stopped, then the time for it to catch up, against the
//!    time the primary took to write them.
//! 3. Lag under a sustained 100,000 writes/s (paced writer, 5 s): every
//!    millisecond, how long the oldest write the replica has not applied
//!    has been waiting; p50, p99, max.
//! 4. Snapshot bootstrap of a 1 GiB database: MB/s.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata::{Db, Options, SeqNo, WriteBatch, WriteOptions};
use strata_replication::epoch::Epoch;
use strata_replication::{Replica, ReplicaConfig, SharedDb, Upstream, UpstreamConfig};
use tokio_stream::wrappers::TcpListenerStream;

fn options() -> Options {
    Options {
        range_split_bytes: 0,
        ..Options::default()
    }
}

async fn serve(db: SharedDb, dir: &Path) -> (Upstream, SocketAddr) {
    let upstream = Upstream::new(
        db,
        Epoch::open(dir).unwrap(),
        UpstreamConfig::new(dir.with_extension("snapshots")),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = upstream.service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (upstream, addr)
}

fn replica(dir: &Path, name: &str, addr: SocketAddr) -> Replica {
    let mut config = ReplicaConfig::new(format!("http://{addr}"), name, dir.join(name));
    config.options = options();
    Replica::start(config).unwrap()
}

async fn wait_applied(replica: &Replica, seq: u64, within: Duration) -> Duration {
    let started = Instant::now();
    while replica.figures().applied_seq < seq {
        assert!(started.elapsed() < within, "{:?}", replica.figures());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

async fn cost_of_replicas() {
    println!(
        "## Primary write throughput with 0, 1, 2, 4 replicas (4 writers, 100 B values, no sync, 3 s)"
    );
    for replicas in [0usize, 1, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let db = SharedDb::new(Db::open(dir.path().join("p"), options()).unwrap());
        let (_upstream, addr) = serve(db.clone(), &dir.path().join("p")).await;
        let followers: Vec<Replica> = (0..replicas)
            .map(|i| replica(dir.path(), &format!("r{i}"), addr))
            .collect();
        let primary = db.get().unwrap();
        primary.put(b"warm", b"up").unwrap();
        primary.sync().unwrap();
        for r in &followers {
            wait_applied(r, 1, Duration::from_secs(30)).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let writers: Vec<_> = (0..4u64)
            .map(|t| {
                let db = Arc::clone(&primary);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        db.put(&key(t << 40 | n), &[7u8; 100]).unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        let total: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        let elapsed = started.elapsed().as_secs_f64();
        let last = primary.last_seq().get();
        let caught_up = Instant::now();
        for r in &followers {
            wait_applied(r, last, Duration::from_secs(120)).await;
        }
        println!(
            "replicas={replicas}  primary {:>9.0} writes/s  (replicas caught up {:.2} s after the writers stopped)",
            total as f64 / elapsed,
            caught_up.elapsed().as_secs_f64()
        );
        for r in followers {
            r.stop().await;
        }
    }
}

async fn apply_throughput() {
    println!("\n## Replica apply throughput (300,000 single-put records)");
    let dir = tempfile::tempdir().unwrap();
    let db = SharedDb::new(Db::open(dir.path().join("p"), options()).unwrap());
    let (_upstream, addr) = serve(db.clone(), &dir.path().join("p")).await;
    let primary = db.get().unwrap();
    primary.put(b"warm", b"up").unwrap();
    primary.sync().unwrap();
    let r = replica(dir.path(), "r", addr);
    wait_applied(&r, 1, Duration::from_secs(30)).await;
    r.stop().await;
    drop(r);
    let n = 300_000u64;
    let started = Instant::now();
    for i in 0..n {
        primary.put(&key(i), &[7u8; 100]).unwrap();
    }
    primary.sync().unwrap();
    let write = started.elapsed();
    let last = primary.last_seq().get();
    let r = replica(dir.path(), "r", addr);
    let apply = wait_applied(&r, last, Duration::from_secs(300)).await;
    let figures = r.figures();
    println!(
        "primary wrote {n} records in {:.2} s ({:.0}/s, one writer); the replica applied them in {:.2} s ({:.0}/s) in {} groups (mean {:.0} records per sync)",
        write.as_secs_f64(),
        n as f64 / write.as_secs_f64(),
        apply.as_secs_f64(),
        n as f64 / apply.as_secs_f64(),
        figures.groups_applied,
        figures.records_applied as f64 / figures.groups_applied.max(1) as f64
    );
}

async fn lag_under_load() {
    println!("\n## Lag under a sustained 100,000 writes/s (5 s)");
    let dir = tempfile::tempdir().unwrap();
    let db = SharedDb::new(Db::open(dir.path().join("p"), options()).unwrap());
    let (_upstream, addr) = serve(db.clone(), &dir.path().join("p")).await;
    let primary = db.get().unwrap();
    primary.put(b"warm", b"up").unwrap();
    primary.sync().unwrap();
    let r = Arc::new(replica(dir.path(), "r", addr));
    wait_applied(&r, 1, Duration::from_secs(30)).await;
    // (seq, when written), every 100th write.
    let written: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let db = Arc::clone(&primary);
        let written = Arc::clone(&written);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Pace: batches of 100 writes, 1 ms apart on average.
                let due = started + Duration::from_micros(i * 10);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let mut seq = SeqNo(0);
                for _ in 0..100 {
                    seq = db.put(&key(i), &[7u8; 100]).unwrap();
                    i += 1;
                }
                written.lock().push((seq.get(), Instant::now()));
            }
            (i, started.elapsed())
        })
    };
    let mut lags_us: Vec<u64> = Vec::new();
    let mut lag_records: Vec<u64> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let applied = r.figures().applied_seq;
        let last = primary.last_seq().get();
        lag_records.push(last.saturating_sub(applied));
        let written = written.lock();
        let index = written.partition_point(|(seq, _)| *seq <= applied);
        lags_us.push(
            written
                .get(index)
                .map_or(0, |(_, at)| at.elapsed().as_micros() as u64),
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (writes, elapsed) = writer.join().unwrap();
    lags_us.sort_unstable();
    lag_records.sort_unstable();
    println!(
        "{:.0} writes/s achieved; lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; in records p50 {}, p99 {}, max {}",
        writes as f64 / elapsed.as_secs_f64(),
        percentile(&lags_us, 0.5) as f64 / 1000.0,
        percentile(&lags_us, 0.99) as f64 / 1000.0,
        lags_us.last().copied().unwrap_or(0) as f64 / 1000.0,
        percentile(&lag_records, 0.5),
        percentile(&lag_records, 0.99),
        lag_records.last().copied().unwrap_or(0)
    );
}

async fn bootstrap_rate(gib: u64) {
    println!("\n## Snapshot bootstrap of a {gib} GiB database");
    let dir = tempfile::tempdir().unwrap();
    let db = SharedDb::new(Db::open(dir.path().join("p"), options()).unwrap());
    let (_upstream, addr) = serve(db.clone(), &dir.path().join("p")).await;
    let primary = db.get().unwrap();
    let keys = (gib << 30) / 1000;
    let mut batch = WriteBatch::new();
    for i in 0..keys {
        batch.put(&key(i), &[3u8; 1000]);
        if batch.len() == 100 {
            primary
                .write(std::mem::take(&mut batch), &WriteOptions::default())
                .unwrap();
        }
    }
    primary.write(batch, &WriteOptions::default()).unwrap();
    primary.flush().unwrap();
    primary.wait_for_compactions().unwrap();
    let bytes: u64 = primary.stats().level_bytes.iter().sum();
    let last = primary.last_seq().get();
    let started = Instant::now();
    let r = replica(dir.path(), "r", addr);
    wait_applied(&r, last, Duration::from_secs(600)).await;
    let took = started.elapsed().as_secs_f64();
    assert_eq!(r.figures().bootstraps, 1);
    println!(
        "{} MiB of tables in {:.2} s: {:.0} MB/s (checkpoint, crc of every file, transfer over loopback, crc again, install, open)",
        bytes >> 20,
        took,
        bytes as f64 / 1e6 / took
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let smoke = !std::env::args().any(|a| a == "--bench");
    runtime.block_on(async {
        if smoke {
            apply_throughput().await;
            return;
        }
        cost_of_replicas().await;
        apply_throughput().await;
        lag_under_load().await;
        let gib = std::env::var("STRATA_REPL_BENCH_GIB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        bootstrap_rate(gib).await;
    });
}
