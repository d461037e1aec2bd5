//! `strata bench`: db_bench-style workloads against an embedded database
//! (`--data-dir`) or a running node over gRPC (`--node`), with progress
//! every second and a summary: operations per second and latency
//! percentiles.
//!
//! Workloads: `fillseq` (puts in key order), `fillrandom` (puts in random
//! order), `readrandom` (gets of keys a previous fill wrote; run a fill
//! first), `overwrite` (puts over the same key space). Keys are 16 bytes
//! (the index in big-endian after a scrambled prefix for the random
//! workloads), values `--value-size` bytes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata::{Db, Options, WriteBatch, WriteOptions};
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::{GetRequest, Operation, WriteRequest, operation};

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// fillseq, fillrandom, readrandom or overwrite.
    #[arg(long, default_value = "fillrandom")]
    workload: String,
    /// Operations in all.
    #[arg(long, default_value_t = 100_000)]
    num: u64,
    /// Concurrent clients (threads embedded, streams over gRPC).
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Each write waits until durable.
    #[arg(long)]
    sync: bool,
    /// Run embedded on this database directory (created if missing).
    #[arg(long, conflicts_with = "node")]
    data_dir: Option<PathBuf>,
    /// Run against this running node over gRPC.
    #[arg(long)]
    node: Option<String>,
    #[command(flatten)]
    security: crate::connect::Security,
}

fn key(workload: &str, i: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    let prefix = if workload == "fillseq" {
        i
    } else {
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    };
    key[..8].copy_from_slice(&prefix.to_be_bytes());
    key[8..].copy_from_slice(&i.to_be_bytes());
    key
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * p) as usize)
        .copied()
        .unwrap_or(0)
}

/// Waits for every worker, stops the progress line and prints the report.
async fn finish(
    handles: Vec<tokio::task::JoinHandle<Result<Vec<u64>, String>>>,
    started: Instant,
    ticker: tokio::task::JoinHandle<()>,
    workload: &str,
    target: &str,
    done: &AtomicU64,
) -> Result<(), String> {
    let mut micros = Vec::new();
    for handle in handles {
        micros.extend(handle.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    ticker.abort();
    report(
        workload,
        target,
        done.load(Ordering::Relaxed),
        elapsed,
        micros,
    );
    Ok(())
}

fn report(workload: &str, target: &str, done: u64, elapsed: Duration, mut micros: Vec<u64>) {
    micros.sort_unstable();
    println!(
        "{workload} on {target}: {done} ops in {:.2} s = {:.0} ops/s; latency p50 {} µs, p99 {} µs, p999 {} µs, max {} µs",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64().max(1e-9),
        percentile(&micros, 0.5),
        percentile(&micros, 0.99),
        percentile(&micros, 0.999),
        micros.last().copied().unwrap_or(0)
    );
}

fn progress(done: Arc<AtomicU64>, total: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = done.load(Ordering::Relaxed);
            eprintln!(
                "  {now}/{total} ({:.0}%), {:.0} ops/s so far",
                now as f64 * 100.0 / total.max(1) as f64,
                now as f64 / started.elapsed().as_secs_f64()
            );
            if now >= total {
                return;
            }
        }
    })
}

pub(crate) fn run(args: BenchArgs) -> Result<(), String> {
    if !["fillseq", "fillrandom", "readrandom", "overwrite"].contains(&args.workload.as_str()) {
        return Err(format!(
            "unknown workload {:?} (fillseq, fillrandom, readrandom, overwrite)",
            args.workload
        ));
    }
    if args.threads == 0 || args.num == 0 {
        return Err("--threads and --num must be positive".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        match (&args.data_dir, &args.node) {
            (Some(dir), None) => embedded(&args, dir).await,
            (None, Some(node)) => remote(&args, node).await,
            _ => Err("give --data-dir (embedded) or --node (a running node)".into()),
        }
    })
}

async fn embedded(args: &BenchArgs, dir: &std::path::Path) -> Result<(), String> {
    let db = Arc::new(
        Db::open(dir, Options::default()).map_err(|e| format!("opening {}: {e}", dir.display()))?,
    );
    let done = Arc::new(AtomicU64::new(0));
    let ticker = progress(Arc::clone(&done), args.num);
    let started = Instant::now();
    let per_thread = args.num / args.threads;
    let mut handles = Vec::new();
    for t in 0..args.threads {
        let db = Arc::clone(&db);
        let done = Arc::clone(&done);
        let args = args.clone();
        handles.push(tokio::task::spawn_blocking(
            move || -> Result<Vec<u64>, String> {
                let value = vec![0x5au8; args.value_size];
                let mut micros = Vec::with_capacity(per_thread as usize);
                for n in 0..per_thread {
                    let i = t * per_thread + n;
                    let op_started = Instant::now();
                    if args.workload == "readrandom" {
                        let k = i.wrapping_mul(0x2545_f491_4f6c_dd1d) % args.num;
                        db.get(&key("fillrandom", k)).map_err(|e| e.to_string())?;
                    } else {
                        let mut batch = WriteBatch::new();
                        batch.put(&key(&args.workload, i), &value);
                        db.write(batch, &WriteOptions { sync: args.sync })
                            .map_err(|e| e.to_string())?;
                    }
                    micros.push(op_started.elapsed().as_micros() as u64);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(micros)
            },
        ));
    }
    finish(
        handles,
        started,
        ticker,
        &args.workload,
        "an embedded database",
        &done,
    )
    .await?;
    let db = Arc::try_unwrap(db).map_err(|_| "the database is still in use".to_string())?;
    db.close().map_err(|e| format!("closing: {e}"))
}

async fn remote(args: &BenchArgs, node: &str) -> Result<(), String> {
    let done = Arc::new(AtomicU64::new(0));
    let ticker = progress(Arc::clone(&done), args.num);
    let started = Instant::now();
    let per_thread = args.num / args.threads;
    let mut handles = Vec::new();
    for t in 0..args.threads {
        let (channel, token) = args.security.channel(node).await?;
        let mut kv = KvClient::with_interceptor(channel, token);
        let done = Arc::clone(&done);
        let args = args.clone();
        handles.push(tokio::spawn(async move {
            let value = vec![0x5au8; args.value_size];
            let mut micros = Vec::with_capacity(per_thread as usize);
            for n in 0..per_thread {
                let i = t * per_thread + n;
                let op_started = Instant::now();
                if args.workload == "readrandom" {
                    let k = i.wrapping_mul(0x2545_f491_4f6c_dd1d) % args.num;
                    kv.get(GetRequest {
                        key: key("fillrandom", k).to_vec(),
                        ..GetRequest::default()
                    })
                    .await
                    .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?;
                } else {
                    kv.write(WriteRequest {
                        operations: vec![Operation {
                            kind: operation::Kind::Put as i32,
                            key: key(&args.workload, i).to_vec(),
                            value: value.clone(),
                        }],
                        sync: args.sync,
                        ..WriteRequest::default()
                    })
                    .await
                    .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?;
                }
                micros.push(op_started.elapsed().as_micros() as u64);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(micros)
        }));
    }
    finish(handles, started, ticker, &args.workload, node, &done).await?;
    Ok(())
}
