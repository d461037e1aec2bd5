//! Replication over an in-memory transport: the upstream service and the
//! replica talk through `tokio::io::duplex` pipes, no socket, in one
//! process. The same paths as over TCP: bootstrap, follow, read-your-writes,
//! restart without reapplying, and a fault (every connection cut) in the
//! middle.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use strata::{Db, Options, SeqNo, WriteBatch, WriteOptions};
use strata_replication::epoch::Epoch;
use strata_replication::{ReadOptions, Replica, ReplicaConfig, SharedDb, Upstream, UpstreamConfig};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint, Uri};

/// A channel whose every connection is a fresh duplex pipe to `upstream`'s
/// service; bumping `cut` ends every pipe made before.
fn memory_channel(upstream: &Upstream, cut: Arc<AtomicU64>) -> Channel {
    let (tx, rx) = mpsc::unbounded_channel::<Result<DuplexStream, std::io::Error>>();
    let service = upstream.service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .unwrap();
    });
    Endpoint::try_from("http://in-memory")
        .unwrap()
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let tx = tx.clone();
            let cut = Arc::clone(&cut);
            async move {
                let (client, server) = tokio::io::duplex(1 << 20);
                tx.send(Ok(server))
                    .map_err(|_| std::io::Error::other("the in-memory server is gone"))?;
                // A watcher ends the pipe when the test cuts connections.
                let generation = cut.load(Ordering::Acquire);
                let (client, mut guard) = tokio::io::split(client);
                let (pipe_client, pipe_mine) = tokio::io::duplex(1 << 20);
                let (mut mine_read, mut mine_write) = tokio::io::split(pipe_mine);
                let mut client = client;
                tokio::spawn(async move {
                    let cut_watch = async {
                        while cut.load(Ordering::Acquire) == generation {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy(&mut client, &mut mine_write) => {}
                        _ = tokio::io::copy(&mut mine_read, &mut guard) => {}
                        () = cut_watch => {}
                    }
                });
                Ok::<_, std::io::Error>(TokioIo::new(pipe_client))
            }
        }))
}

fn options() -> Options {
    Options {
        wal_segment_bytes_max: 64 << 10,
        memtable_bytes_max: 256 << 10,
        ..Options::default()
    }
}

fn write(db: &Db, from: u64, count: u64) -> SeqNo {
    let mut last = SeqNo(0);
    for i in from..from + count {
        let mut batch = WriteBatch::new();
        batch.put(
            format!("k{:04}", i % 300).as_bytes(),
            format!("v{i}").as_bytes(),
        );
        last = db.write(batch, &WriteOptions { sync: i % 4 == 0 }).unwrap();
    }
    last
}

async fn wait_applied(replica: &Replica, seq: SeqNo) {
    let started = Instant::now();
    while replica.figures().applied_seq < seq.get() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            replica.figures()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn rows(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.scan(..).unwrap().map(|kv| kv.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_over_an_in_memory_transport_through_cut_connections() {
    let dir = tempfile::tempdir().unwrap();
    let db = SharedDb::new(Db::open(dir.path().join("p"), options()).unwrap());
    let mut config = UpstreamConfig::new(dir.path().join("p.snapshots"));
    config.heartbeat_interval = Duration::from_millis(20);
    let upstream = Upstream::new(
        db.clone(),
        Epoch::open(&dir.path().join("p")).unwrap(),
        config,
    );
    let cut = Arc::new(AtomicU64::new(0));
    let channel = memory_channel(&upstream, Arc::clone(&cut));
    let primary = db.get().unwrap();
    let first = write(&primary, 0, 200);
    primary.sync().unwrap();

    let mut replica_config = ReplicaConfig::new("memory://primary", "r", dir.path().join("r"));
    replica_config.options = options();
    replica_config.channel = Some(channel.clone());
    replica_config.backoff_max = Duration::from_millis(100);
    let replica = Arc::new(Replica::start(replica_config.clone()).unwrap());
    wait_applied(&replica, first).await;
    assert_eq!(replica.figures().bootstraps, 1);

    // Cut every connection while writes go on; the replica reconnects from
    // where it stood.
    let writer = {
        let primary = Arc::clone(&primary);
        tokio::task::spawn_blocking(move || write(&primary, 200, 2000))
    };
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        cut.fetch_add(1, Ordering::AcqRel);
    }
    let last = writer.await.unwrap();
    wait_applied(&replica, last).await;
    let figures = replica.figures();
    assert!(figures.reconnects >= 1, "{figures:?}");
    assert_eq!(
        figures.gaps + figures.hash_mismatches + figures.bad_records,
        0,
        "{figures:?}"
    );
    assert_eq!(rows(&replica.db().get().unwrap()), rows(&primary));

    // Read your writes through the replica.
    let seq = primary.put(b"token", b"t").unwrap();
    let reader = Arc::clone(&replica);
    let answer = tokio::task::spawn_blocking(move || {
        reader.read(
            b"token",
            &ReadOptions {
                min_seq: Some(seq),
                timeout: Duration::from_secs(5),
                ..ReadOptions::default()
            },
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(answer.value.as_deref(), Some(&b"t"[..]));

    // Restarted, it resumes without a bootstrap and applies only the rest.
    replica.stop().await;
    drop(replica);
    let more = write(&primary, 3000, 100);
    primary.sync().unwrap();
    let replica = Replica::start(replica_config).unwrap();
    wait_applied(&replica, more).await;
    assert_eq!(replica.figures().bootstraps, 0);
    // The counter follows the apply by a moment.
    let started = Instant::now();
    while replica.figures().records_applied < 100 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(replica.figures().records_applied, 100);
    assert_eq!(rows(&replica.db().get().unwrap()), rows(&primary));
}
