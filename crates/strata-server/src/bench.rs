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
//!
//! Against a node each client has its own connection. With `--pipeline N`
//! a client sends N operations at a time on one `Kv.Pipeline` stream and
//! reads their N answers before sending the next N (as `redis-benchmark
//! -P N` does); without it, each operation is one unary call, answered
//! before the next is sent. Latency is from sending an operation to
//! reading its answer.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata::{Db, Options, WriteBatch, WriteOptions};
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::{GetRequest, PipelineRequest, PutRequest, pipeline_request};

use crate::connect::Connected;

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
    /// Run against a sharded cluster through the client
    /// (`strata_client::ShardedClient`), routing by the range map in this
    /// etcd (comma separated URLs); needs --cluster. Keys are then
    /// `k` and 16 hex digits (spread evenly over `k0`..`kf`), one unary
    /// call per operation.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["node", "data_dir"], requires = "cluster")]
    etcd: Vec<String>,
    /// With --etcd: the cluster's name.
    #[arg(long)]
    cluster: Option<String>,
    /// With --node: operations each client keeps in flight on one
    /// pipelined stream (1: one unary call at a time).
    #[arg(long, default_value_t = 1, requires = "node")]
    pipeline: usize,
    /// With --node: runtime threads driving the clients (1, as
    /// redis-benchmark, leaves the other cores to the node).
    #[arg(long, default_value_t = 1, requires = "node")]
    client_threads: usize,
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
    if args.threads == 0 || args.num == 0 || args.pipeline == 0 {
        return Err("--threads, --num and --pipeline must be positive".into());
    }
    if args.pipeline > 4096 {
        return Err("--pipeline: at most 4096 operations in flight per client".into());
    }
    let runtime = if args.node.is_some() && args.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.client_threads.clamp(2, 64))
            .enable_all()
            .build()
    }
    .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(async move {
        if let Some(cluster) = &args.cluster {
            return sharded(&args, cluster).await;
        }
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

/// The request of a client's `n`-th operation.
fn remote_operation(args: &BenchArgs, i: u64, value: &[u8]) -> pipeline_request::Operation {
    if args.workload == "readrandom" {
        let k = i.wrapping_mul(0x2545_f491_4f6c_dd1d) % args.num;
        pipeline_request::Operation::Get(GetRequest {
            key: key("fillrandom", k).to_vec(),
            ..GetRequest::default()
        })
    } else {
        pipeline_request::Operation::Put(PutRequest {
            key: key(&args.workload, i).to_vec(),
            value: value.to_vec(),
            sync: args.sync,
        })
    }
}

fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

async fn remote(args: &BenchArgs, node: &str) -> Result<(), String> {
    let done = Arc::new(AtomicU64::new(0));
    let per_thread = args.num / args.threads;
    let mut clients = Vec::new();
    for _ in 0..args.threads {
        let (channel, token) = args.security.channel(node).await?;
        clients.push(KvClient::with_interceptor(channel, token));
    }
    let ticker = progress(Arc::clone(&done), args.num);
    let started = Instant::now();
    let mut handles = Vec::new();
    for (t, kv) in (0..args.threads).zip(clients) {
        let done = Arc::clone(&done);
        let args = args.clone();
        let first = t * per_thread;
        handles.push(tokio::spawn(async move {
            if args.pipeline > 1 {
                pipelined(kv, &args, first..first + per_thread, &done).await
            } else {
                unary(kv, &args, first..first + per_thread, &done).await
            }
        }));
    }
    finish(handles, started, ticker, &args.workload, node, &done).await?;
    Ok(())
}

/// The workload through the sharded client, `args.threads` tasks over
/// one client.
async fn sharded(args: &BenchArgs, cluster: &str) -> Result<(), String> {
    let (tls, bearer) = args.security.client_settings()?;
    let mut config = strata_client::ClientConfig::etcd(strata_client::EtcdSource::cluster(
        args.etcd.clone(),
        cluster,
    ));
    config.tls = tls;
    config.bearer = bearer;
    let client = strata_client::ShardedClient::new(config).map_err(|e| e.to_string())?;
    client.refresh().await.map_err(|e| e.to_string())?;
    let done = Arc::new(AtomicU64::new(0));
    let per_thread = args.num / args.threads;
    let ticker = progress(Arc::clone(&done), args.num);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..args.threads {
        let client = client.clone();
        let done = Arc::clone(&done);
        let args = args.clone();
        handles.push(tokio::spawn(async move {
            let value = vec![0x5au8; args.value_size];
            let mut micros = Vec::with_capacity(per_thread as usize);
            for i in t * per_thread..(t + 1) * per_thread {
                let scrambled = if args.workload == "fillseq" {
                    i
                } else {
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                };
                let key = format!("k{scrambled:016x}");
                let op_started = Instant::now();
                if args.workload == "readrandom" {
                    client
                        .get(key.as_bytes(), strata_client::ShardedRead::Primary)
                        .await
                        .map_err(|e| e.to_string())?;
                } else {
                    let batch = strata_client::WriteBatch::new()
                        .put(key.as_bytes(), &value)
                        .sync(args.sync);
                    client.write(batch).await.map_err(|e| e.to_string())?;
                }
                micros.push(op_started.elapsed().as_micros() as u64);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(micros)
        }));
    }
    let groups = client.map().map_or(0, |m| m.groups().len());
    finish(
        handles,
        started,
        ticker,
        &args.workload,
        &format!("cluster {cluster} ({groups} group(s))"),
        &done,
    )
    .await
}

/// Operations `range`, one unary call each.
async fn unary(
    mut kv: KvClient<Connected>,
    args: &BenchArgs,
    range: std::ops::Range<u64>,
    done: &AtomicU64,
) -> Result<Vec<u64>, String> {
    let value = vec![0x5au8; args.value_size];
    let mut micros = Vec::with_capacity(range.clone().count());
    for i in range {
        let op_started = Instant::now();
        match remote_operation(args, i, &value) {
            pipeline_request::Operation::Get(get) => {
                kv.get(get).await.map_err(|e| describe(&e))?;
            }
            pipeline_request::Operation::Put(put) => {
                kv.put(put).await.map_err(|e| describe(&e))?;
            }
            _ => return Err("the bench sends only gets and puts".into()),
        }
        micros.push(op_started.elapsed().as_micros() as u64);
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(micros)
}

/// Operations `range` on one `Pipeline` stream, `args.pipeline` at a time.
async fn pipelined(
    mut kv: KvClient<Connected>,
    args: &BenchArgs,
    range: std::ops::Range<u64>,
    done: &AtomicU64,
) -> Result<Vec<u64>, String> {
    let value = vec![0x5au8; args.value_size];
    let total = range.end - range.start;
    let (tx, rx) = tokio::sync::mpsc::channel(args.pipeline);
    let mut answers = kv
        .pipeline(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| describe(&e))?
        .into_inner();
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(args.pipeline);
    let mut micros = Vec::with_capacity(total as usize);
    let mut next = 0u64;
    while (micros.len() as u64) < total {
        // A new batch only once the previous one is answered.
        if in_flight.is_empty() {
            let batch_end = total.min(next + args.pipeline as u64);
            while next < batch_end {
                let request = PipelineRequest {
                    sequence: next,
                    operation: Some(remote_operation(args, range.start + next, &value)),
                };
                tx.send(request)
                    .await
                    .map_err(|_| "the node closed the pipelined stream".to_string())?;
                in_flight.push_back((next, Instant::now()));
                next += 1;
            }
        }
        let answer = answers
            .message()
            .await
            .map_err(|e| describe(&e))?
            .ok_or("the node ended the pipelined stream early")?;
        let (sequence, sent) = in_flight
            .pop_front()
            .ok_or("an answer to no request in flight")?;
        if answer.sequence != sequence {
            return Err(format!(
                "answer {} where {sequence} was due (out of order)",
                answer.sequence
            ));
        }
        if answer.code != tonic::Code::Ok as i32 {
            return Err(format!(
                "request {sequence}: {:?}: {}",
                tonic::Code::from_i32(answer.code),
                answer.message
            ));
        }
        micros.push(sent.elapsed().as_micros() as u64);
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(micros)
}
