//! Replication in process, over gRPC on 127.0.0.1: a primary's upstream
//! service and replicas in the same test process, each node with its own
//! directory on the real file system.
//!
//! Each test checks convergence by digest: the replica's full scan at its
//! applied sequence number equals the primary's at the same number.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use strata::{Db, Options, SeqNo, WriteBatch, WriteOptions};
use strata_proto::v1::replication_client::ReplicationClient;
use strata_proto::v1::{
    Ack, FetchSnapshotRequest, ReplicaMessage, Subscribe, replica_message, upstream_message,
};
use strata_replication::epoch::Epoch;
use strata_replication::{ReadOptions, Replica, ReplicaConfig, SharedDb, Upstream, UpstreamConfig};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;

fn options() -> Options {
    Options {
        wal_segment_bytes_max: 64 << 10,
        memtable_bytes_max: 256 << 10,
        ..Options::default()
    }
}

struct Node {
    db: SharedDb,
    upstream: Upstream,
    addr: SocketAddr,
    _shutdown: oneshot::Sender<()>,
}

async fn serve(db: SharedDb, epoch: Epoch, snapshots: &Path) -> Node {
    let mut config = UpstreamConfig::new(snapshots);
    config.heartbeat_interval = Duration::from_millis(50);
    let upstream = Upstream::new(db.clone(), epoch, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let service = upstream.service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Node {
        db,
        upstream,
        addr,
        _shutdown: tx,
    }
}

async fn primary(dir: &Path) -> Node {
    let db = Db::open(dir.join("primary"), options()).unwrap();
    let epoch = Epoch::open(&dir.join("primary")).unwrap();
    serve(SharedDb::new(db), epoch, &dir.join("primary.snapshots")).await
}

fn replica(dir: &Path, name: &str, upstream: SocketAddr) -> Replica {
    let mut config = ReplicaConfig::new(format!("http://{upstream}"), name, dir.join(name));
    config.options = options();
    config.backoff_max = Duration::from_millis(300);
    Replica::start(config).unwrap()
}

fn write_batches(db: &Db, from: u64, count: u64) -> SeqNo {
    let mut last = SeqNo(0);
    for i in from..from + count {
        let mut batch = WriteBatch::new();
        batch.put(
            format!("key{:05}", i % 700).as_bytes(),
            format!("value-{i}").as_bytes(),
        );
        batch.put(format!("other{:05}", i).as_bytes(), b"x");
        if i % 7 == 0 {
            batch.delete(format!("key{:05}", (i + 3) % 700).as_bytes());
        }
        last = db.write(batch, &WriteOptions { sync: i % 5 == 0 }).unwrap();
    }
    db.sync().unwrap();
    last
}

fn digest(db: &Db, at: SeqNo) -> Vec<(Vec<u8>, Vec<u8>)> {
    assert!(db.last_seq() >= at);
    let snapshot = db.snapshot();
    assert_eq!(
        snapshot.seq(),
        at,
        "digest must be taken at the same sequence number"
    );
    snapshot.scan(..).unwrap().map(|kv| kv.unwrap()).collect()
}

async fn wait_applied(replica: &Replica, seq: SeqNo, within: Duration) {
    let started = Instant::now();
    while replica.figures().applied_seq < seq.get() {
        assert!(
            started.elapsed() < within,
            "replica stuck at {} of {} ({:?})",
            replica.figures().applied_seq,
            seq.get(),
            replica.figures()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_replica_bootstraps_then_follows_and_serves_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let node = primary(dir.path()).await;
    let db = node.db.get().unwrap();
    let last = write_batches(&db, 0, 300);
    db.flush().unwrap(); // the log before the flush may be released

    let replica = replica(dir.path(), "r1", node.addr);
    wait_applied(&replica, last, Duration::from_secs(20)).await;
    assert_eq!(replica.figures().bootstraps, 1);
    assert_eq!(
        digest(&replica.db().get().unwrap(), last),
        digest(&db, last)
    );

    // Read your writes: the commit token of a primary write.
    let seq = db.put(b"fresh", b"1").unwrap();
    let r = std::sync::Arc::new(replica);
    let reader = std::sync::Arc::clone(&r);
    let answer = tokio::task::spawn_blocking(move || {
        reader.read(
            b"fresh",
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
    assert_eq!(answer.value.as_deref(), Some(&b"1"[..]));
    assert!(answer.seq >= seq);

    // A staleness bound holds while the primary is idle (heartbeats).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = std::sync::Arc::clone(&r);
    let fresh = tokio::task::spawn_blocking(move || {
        reader.read(
            b"fresh",
            &ReadOptions {
                max_staleness: Some(Duration::from_millis(200)),
                timeout: Duration::from_secs(2),
                ..ReadOptions::default()
            },
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert!(fresh.seq >= seq);

    // A replica refuses local writes, naming the primary.
    let err = r.db().get().unwrap().put(b"x", b"y").unwrap_err();
    assert!(err.to_string().contains("replica"), "{err}");

    // The primary sees the replica caught up.
    let started = Instant::now();
    loop {
        let status = node.upstream.replicas();
        if status.len() == 1 && status[0].connected && status[0].lag_records == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_resumes_from_its_position_without_reapplying() {
    let dir = tempfile::tempdir().unwrap();
    let node = primary(dir.path()).await;
    let db = node.db.get().unwrap();
    let first = write_batches(&db, 0, 100);
    let r = replica(dir.path(), "r1", node.addr);
    wait_applied(&r, first, Duration::from_secs(20)).await;
    r.stop().await;
    drop(r);
    let second = write_batches(&db, 100, 200);
    let r = replica(dir.path(), "r1", node.addr);
    wait_applied(&r, second, Duration::from_secs(20)).await;
    // The counters follow the apply by a moment.
    let started = Instant::now();
    while r.figures().records_applied < 200 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let figures = r.figures();
    assert_eq!(figures.bootstraps, 0, "{figures:?}");
    assert_eq!(
        figures.gaps + figures.hash_mismatches + figures.bad_records,
        0,
        "{figures:?}"
    );
    // Exactly the records written while it was away were applied.
    assert_eq!(figures.records_applied, 200, "{figures:?}");
    assert_eq!(digest(&r.db().get().unwrap(), second), digest(&db, second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semi_synchronous_writes_wait_for_replicas_and_say_when_they_did_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = primary(dir.path()).await;
    let db = node.db.get().unwrap();
    let warm = write_batches(&db, 0, 10);
    let r = replica(dir.path(), "r1", node.addr);
    wait_applied(&r, warm, Duration::from_secs(20)).await;
    let upstream = node.upstream.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut batch = WriteBatch::new();
        batch.put(b"semi", b"sync");
        upstream.write(batch, 1, Duration::from_secs(5))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(outcome.confirmed && outcome.replicas == 1, "{outcome:?}");
    let upstream = node.upstream.clone();
    let started = Instant::now();
    let short = tokio::task::spawn_blocking(move || {
        let mut batch = WriteBatch::new();
        batch.put(b"semi", b"two");
        upstream.write(batch, 2, Duration::from_millis(300))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(!short.confirmed && short.replicas == 1, "{short:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Committed locally all the same.
    assert_eq!(db.get(b"semi").unwrap().as_deref(), Some(&b"two"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_raises_the_epoch_and_forked_or_older_histories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = primary(dir.path()).await;
    let old_db = old.db.get().unwrap();
    let base = write_batches(&old_db, 0, 50);
    let a = replica(dir.path(), "a", old.addr);
    let b = replica(dir.path(), "b", old.addr);
    wait_applied(&a, base, Duration::from_secs(20)).await;
    wait_applied(&b, base, Duration::from_secs(20)).await;
    b.stop().await; // b stays at `base`

    // Promote a; it takes writes under epoch 1.
    assert_eq!(a.promote().await.unwrap(), 1);
    let new_db = a.db().get().unwrap();
    let sync = WriteOptions { sync: true };
    let mut batch = WriteBatch::new();
    batch.put(b"after-failover", b"new");
    let new_seq = new_db.write(batch, &sync).unwrap();
    let new = serve(a.db(), a.epoch(), &dir.path().join("a.snapshots")).await;

    // The old primary, unaware, writes a different batch at the same number.
    let mut batch = WriteBatch::new();
    batch.put(b"after-failover", b"old");
    let old_seq = old_db.write(batch, &sync).unwrap();
    assert_eq!(old_seq, new_seq);

    // c followed the old primary past the fork; the new primary refuses it.
    let c = replica(dir.path(), "c", old.addr);
    wait_applied(&c, old_seq, Duration::from_secs(20)).await;
    c.stop().await;
    drop(c);
    let c = replica(dir.path(), "c", new.addr);
    let started = Instant::now();
    while c.figures().refusals == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            c.figures()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = c.figures().last_error.unwrap();
    assert!(text.contains("forked"), "{text}");
    let c_db = c.db().get().unwrap();
    assert_eq!(
        c_db.get(b"after-failover").unwrap().as_deref(),
        Some(&b"old"[..])
    );

    // b (at `base`, before the fork) follows the new primary, and then
    // refuses the old one, whose epoch is older.
    drop(b);
    let b = replica(dir.path(), "b", new.addr);
    wait_applied(&b, new_seq, Duration::from_secs(20)).await;
    assert_eq!(
        b.db()
            .get()
            .unwrap()
            .get(b"after-failover")
            .unwrap()
            .as_deref(),
        Some(&b"new"[..])
    );
    assert_eq!(b.epoch().get(), 1);
    b.stop().await;
    drop(b);
    let b = replica(dir.path(), "b", old.addr);
    let started = Instant::now();
    while b.figures().refusals == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            b.figures()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.figures().last_error.unwrap().contains("epoch"));
    assert_eq!(
        b.db()
            .get()
            .unwrap()
            .get(b"after-failover")
            .unwrap()
            .as_deref(),
        Some(&b"new"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_member_replaces_a_diverged_history_and_keeps_its_handles() {
    let dir = tempfile::tempdir().unwrap();
    let old = primary(dir.path()).await;
    let old_db = old.db.get().unwrap();
    let base = write_batches(&old_db, 0, 30);
    let a = replica(dir.path(), "a", old.addr);
    wait_applied(&a, base, Duration::from_secs(20)).await;
    // a wins an election at epoch 7 (decided elsewhere): the history
    // begins at what it applied, and it takes writes only when told.
    let start = a.prepare_promotion(7).await.unwrap();
    assert_eq!(start, base.get());
    assert!(
        a.prepare_promotion(7).await.is_err(),
        "no second promotion to the same epoch"
    );
    let a_db = a.db().get().unwrap();
    let sync = WriteOptions { sync: true };
    let mut batch = WriteBatch::new();
    batch.put(b"fork", b"new");
    assert!(
        a_db.write(batch.clone(), &sync).is_err(),
        "fenced until accept_writes"
    );
    a.accept_writes().unwrap();
    let new_seq = a_db.write(batch, &sync).unwrap();
    let new = serve(a.db(), a.epoch(), &dir.path().join("a.snapshots")).await;

    // The old primary writes a tail nobody shipped: the same number, other
    // bytes, then more.
    let mut batch = WriteBatch::new();
    batch.put(b"fork", b"old");
    old_db.write(batch, &sync).unwrap();
    write_batches(&old_db, 100, 5);
    let old_last = old_db.last_seq();
    drop(old_db);

    // The old primary rejoins through the same handles, as a member that
    // replaces a diverged history.
    let db = old.db.clone();
    let epoch = Epoch::open(&dir.path().join("primary")).unwrap();
    let mut config = ReplicaConfig::new(
        format!("http://{}", new.addr),
        "old",
        dir.path().join("primary"),
    );
    config.state_dir = dir.path().join("primary");
    config.options = options();
    config.backoff_max = Duration::from_millis(300);
    config.rebootstrap_on_divergence = true;
    drop(old.upstream);
    let rejoined = Replica::start_shared(config, db.clone(), epoch.clone()).unwrap();
    let started = Instant::now();
    loop {
        let figures = rejoined.figures();
        let db_now = db.get();
        if figures.divergences > 0
            && let Some(db_now) = db_now
            && db_now.get(b"fork").unwrap().as_deref() == Some(&b"new"[..])
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{figures:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let figures = rejoined.figures();
    assert_eq!(figures.divergences, 1, "{figures:?}");
    assert!(figures.bootstraps >= 1, "{figures:?}");
    assert!(figures.applied_seq >= new_seq.get());
    assert!(figures.applied_seq < old_last.get(), "the old tail is gone");
    assert_eq!(epoch.get(), 7, "the shared epoch handle saw the new epoch");
    let now = db.get().unwrap();
    assert!(
        now.get(b"other00102").unwrap().is_none(),
        "no record of the old tail is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_downstream_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let node = primary(dir.path()).await;
    let db = node.db.get().unwrap();
    let first = write_batches(&db, 0, 100);
    let middle = replica(dir.path(), "middle", node.addr);
    wait_applied(&middle, first, Duration::from_secs(20)).await;
    let relay = serve(
        middle.db(),
        middle.epoch(),
        &dir.path().join("middle.snapshots"),
    )
    .await;
    let leaf = replica(dir.path(), "leaf", relay.addr);
    let more = write_batches(&db, 100, 100);
    wait_applied(&leaf, more, Duration::from_secs(20)).await;
    assert_eq!(digest(&leaf.db().get().unwrap(), more), digest(&db, more));
}

// ---------------------------------------------------------- bad inputs

async fn client(addr: SocketAddr) -> ReplicationClient<tonic::transport::Channel> {
    ReplicationClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn subscribe_status(addr: SocketAddr, first: ReplicaMessage) -> tonic::Status {
    let mut client = client(addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(first).await.unwrap();
    match client
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Err(status) => return status,
                    Ok(None) => return tonic::Status::ok("ended"),
                    Ok(Some(_)) => {}
                }
            }
        }
    }
}

fn subscribe(sub: Subscribe) -> ReplicaMessage {
    ReplicaMessage {
        kind: Some(replica_message::Kind::Subscribe(sub)),
    }
}

/// A primary with some writes, and its database id.
async fn primary_with_writes(dir: &Path) -> (Node, std::sync::Arc<Db>, Vec<u8>) {
    let node = primary(dir).await;
    let db = node.db.get().unwrap();
    write_batches(&db, 0, 20);
    let id = db.database_id().to_le_bytes().to_vec();
    (node, db, id)
}

async fn refused_with(addr: SocketAddr, sub: Subscribe, code: tonic::Code) {
    let status = subscribe_status(addr, subscribe(sub)).await;
    assert_eq!(status.code(), code, "{status:?}");
    assert!(!status.message().is_empty(), "the status says why");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_missing_replica_id_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = primary_with_writes(dir.path()).await;
    refused_with(
        node.addr,
        Subscribe::default(),
        tonic::Code::InvalidArgument,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_malformed_replica_id_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = primary_with_writes(dir.path()).await;
    for id in ["../etc", "a b", &"x".repeat(129)] {
        let sub = Subscribe {
            replica_id: id.into(),
            ..Subscribe::default()
        };
        refused_with(node.addr, sub, tonic::Code::InvalidArgument).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_ack_before_subscribe_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = primary_with_writes(dir.path()).await;
    let ack_first = ReplicaMessage {
        kind: Some(replica_message::Kind::Ack(Ack::default())),
    };
    let status = subscribe_status(node.addr, ack_first).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let empty = ReplicaMessage { kind: None };
    let status = subscribe_status(node.addr, empty).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_short_database_id_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = primary_with_writes(dir.path()).await;
    let sub = Subscribe {
        replica_id: "r".into(),
        database_id: vec![1, 2, 3],
        applied_seq: 1,
        ..Subscribe::default()
    };
    refused_with(node.addr, sub, tonic::Code::InvalidArgument).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_applied_seq_without_database_id_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = primary_with_writes(dir.path()).await;
    let sub = Subscribe {
        replica_id: "r".into(),
        applied_seq: 5,
        ..Subscribe::default()
    };
    refused_with(node.addr, sub, tonic::Code::InvalidArgument).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_another_database_is_failed_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = primary_with_writes(dir.path()).await;
    let sub = Subscribe {
        replica_id: "r".into(),
        database_id: vec![7; 16],
        applied_seq: 1,
        ..Subscribe::default()
    };
    refused_with(node.addr, sub, tonic::Code::FailedPrecondition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_from_seq_beyond_the_durable_log_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let (node, db, id) = primary_with_writes(dir.path()).await;
    let sub = Subscribe {
        replica_id: "r".into(),
        database_id: id,
        applied_seq: db.durable_seq().get() + 10,
        ..Subscribe::default()
    };
    refused_with(node.addr, sub, tonic::Code::OutOfRange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_newer_epoch_than_the_upstream_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _, id) = primary_with_writes(dir.path()).await;
    let sub = Subscribe {
        replica_id: "r".into(),
        database_id: id,
        epoch: 9,
        ..Subscribe::default()
    };
    refused_with(node.addr, sub, tonic::Code::Aborted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_prev_hash_mismatch_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _, id) = primary_with_writes(dir.path()).await;
    // Record 1..=2 is the first batch; its hash is not all zeros.
    let sub = Subscribe {
        replica_id: "r".into(),
        database_id: id.clone(),
        applied_seq: 2,
        applied_hash: vec![0; 8],
        ..Subscribe::default()
    };
    refused_with(node.addr, sub, tonic::Code::Aborted).await;
    // A position inside a batch is a different history too.
    let sub = Subscribe {
        replica_id: "r".into(),
        database_id: id,
        applied_seq: 1,
        ..Subscribe::default()
    };
    refused_with(node.addr, sub, tonic::Code::Aborted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_from_seq_older_than_the_retained_log_is_failed_precondition() {
    let dir = tempfile::tempdir().unwrap();
    let (node, db, id) = primary_with_writes(dir.path()).await;
    for i in 0..4000u64 {
        db.put(format!("fill{i:06}").as_bytes(), &[0u8; 100])
            .unwrap();
    }
    db.flush().unwrap();
    let started = Instant::now();
    while strata::replication::LogSource::of(&db)
        .oldest_retained()
        .get()
        <= 2
    {
        assert!(started.elapsed() < Duration::from_secs(10));
        db.put(b"more", &[0u8; 100]).unwrap();
        db.flush().unwrap();
    }
    let sub = Subscribe {
        replica_id: "r".into(),
        database_id: id,
        applied_seq: 2,
        ..Subscribe::default()
    };
    refused_with(node.addr, sub, tonic::Code::FailedPrecondition).await;
    // An empty replica when the log no longer starts at 1: bootstrap too.
    let sub = Subscribe {
        replica_id: "r".into(),
        ..Subscribe::default()
    };
    refused_with(node.addr, sub, tonic::Code::FailedPrecondition).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_frame_over_the_decoding_limit_is_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = primary_with_writes(dir.path()).await;
    let huge = Subscribe {
        replica_id: "r".repeat(2 << 20),
        ..Subscribe::default()
    };
    let status = subscribe_status(node.addr, subscribe(huge)).await;
    assert_ne!(status.code(), tonic::Code::Ok, "{status:?}");
    refused_with(
        node.addr,
        Subscribe::default(),
        tonic::Code::InvalidArgument,
    )
    .await;
}

/// Sends raw bytes as the stream's first message (whatever protobuf says).
#[derive(Debug, Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct UpstreamDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for UpstreamDecoder {
    type Item = strata_proto::v1::UpstreamMessage;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, tonic::Status> {
        prost::Message::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = strata_proto::v1::UpstreamMessage;
    type Encoder = RawEncoder;
    type Decoder = UpstreamDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> UpstreamDecoder {
        UpstreamDecoder
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_invalid_protobuf_bytes_are_refused_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _, _) = primary_with_writes(dir.path()).await;
    for garbage in [
        vec![0xff; 32],                                 // invalid tags and varints
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],       // a length far past the end
        vec![0x0a, 0x05, 0x0a, 0x03, 0xc3, 0x28, 0x41], // replica_id not UTF-8
    ] {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let request = tonic::Request::new(tokio_stream::iter(vec![garbage.clone()]));
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/strata.v1.Replication/Subscribe",
        );
        let result = grpc.streaming(request, path, RawCodec).await;
        let status = match result {
            Err(status) => status,
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Err(status) => break status,
                        Ok(None) => break tonic::Status::ok("ended"),
                        Ok(Some(_)) => {}
                    }
                }
            }
        };
        assert!(
            matches!(
                status.code(),
                tonic::Code::Internal | tonic::Code::InvalidArgument
            ),
            "{garbage:?}: {status:?}"
        );
    }
    // Still serving.
    refused_with(
        node.addr,
        Subscribe::default(),
        tonic::Code::InvalidArgument,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_acks_beyond_what_was_sent_end_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let node = primary(dir.path()).await;
    let db = node.db.get().unwrap();
    write_batches(&db, 0, 5);
    let mut client = client(node.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(subscribe(Subscribe {
        replica_id: "liar".into(),
        ..Subscribe::default()
    }))
    .await
    .unwrap();
    let mut stream = client
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.kind,
        Some(upstream_message::Kind::Welcome(_))
    ));
    tx.send(ReplicaMessage {
        kind: Some(replica_message::Kind::Ack(Ack {
            durable_seq: 1_000_000,
            applied_seq: 1_000_000,
        })),
    })
    .await
    .unwrap();
    let started = Instant::now();
    loop {
        let status = node.upstream.replicas();
        if status.iter().any(|s| s.id == "liar" && !s.connected) {
            assert_eq!(status[0].applied_seq, 0, "the bad ack was not taken");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_snapshot_fetches_of_unknown_snapshots_or_paths_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let node = primary(dir.path()).await;
    let mut client = client(node.addr).await;
    let info = client
        .begin_snapshot(strata_proto::v1::BeginSnapshotRequest {
            replica_id: "r".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(info.files.iter().any(|f| f.path == "CURRENT"));
    for (id, path) in [
        ("nope", "CURRENT"),
        (info.snapshot_id.as_str(), "../primary/CURRENT"),
        (info.snapshot_id.as_str(), "/etc/passwd"),
        (info.snapshot_id.as_str(), "NOT-LISTED"),
    ] {
        let status = client
            .fetch_snapshot(FetchSnapshotRequest {
                snapshot_id: id.into(),
                path: path.into(),
                offset: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::NotFound,
            "{id} {path}: {status:?}"
        );
    }
    let status = client
        .fetch_snapshot(FetchSnapshotRequest {
            snapshot_id: info.snapshot_id.clone(),
            path: "CURRENT".into(),
            offset: 1 << 40,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_scoped_replica_holds_and_serves_only_its_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let node = primary(dir.path()).await;
    let db = node.db.get().unwrap();
    let first = write_batches(&db, 0, 300);
    db.flush().unwrap();
    let mut config =
        ReplicaConfig::new(format!("http://{}", node.addr), "eu", dir.path().join("eu"));
    config.options = options();
    config.ranges = vec![(b"key00100".to_vec(), Some(b"key00200".to_vec()))];
    let r = Replica::start(config.clone()).unwrap();
    wait_applied(&r, first, Duration::from_secs(20)).await;
    let more = write_batches(&db, 300, 300);
    wait_applied(&r, more, Duration::from_secs(20)).await;
    let replica_db = r.db().get().unwrap();
    // Same sequence numbers as the primary, but only its range's keys.
    assert_eq!(replica_db.last_seq(), db.last_seq());
    let held: Vec<_> = replica_db
        .scan(b"key00100".as_slice()..b"key00200".as_slice())
        .unwrap()
        .map(|kv| kv.unwrap())
        .collect();
    let expected: Vec<_> = db
        .scan(b"key00100".as_slice()..b"key00200".as_slice())
        .unwrap()
        .map(|kv| kv.unwrap())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(held, expected);
    let err = replica_db.get(b"key00500").unwrap_err();
    assert!(err.to_string().contains("outside the key ranges"), "{err}");
    assert!(replica_db.get(b"key00150").is_ok());
    // Regression (issue 12): scans through the replica reaching outside its
    // range are refused like the get, not answered partially.
    let read = r.snapshot(&ReadOptions::default()).unwrap();
    for (what, result) in [
        ("everything", read.scan(..)),
        ("reverse", read.scan_rev(..b"key00150".as_slice())),
        (
            "across the end",
            read.scan(b"key00150".as_slice()..b"key00250".as_slice()),
        ),
        (
            "outside",
            read.scan(b"key00300".as_slice()..b"key00400".as_slice()),
        ),
        ("prefix", replica_db.prefix(b"key")),
    ] {
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{what}: a partial scan was served"));
        assert!(
            err.to_string().contains("outside the key ranges"),
            "{what}: {err}"
        );
    }
    assert_eq!(
        read.scan_rev(b"key00100".as_slice()..b"key00200".as_slice())
            .unwrap()
            .count(),
        expected.len()
    );
    // Restarted with other ranges: refused, nothing changed.
    r.stop().await;
    drop(r);
    drop(replica_db);
    let mut other = config;
    other.ranges = vec![(b"a".to_vec(), None)];
    let err = Replica::start(other).unwrap_err();
    assert!(err.to_string().contains("other key ranges"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_scoped_upstream_refuses_ranges_it_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("p"), options()).unwrap();
    let mut config = UpstreamConfig::new(dir.path().join("p.snapshots"));
    config.holds_ranges = vec![(b"m".to_vec(), Some(b"t".to_vec()))];
    let upstream = Upstream::new(
        SharedDb::new(db),
        Epoch::open(&dir.path().join("p")).unwrap(),
        config,
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
    let range = |start: &[u8], end: Option<&[u8]>| strata_proto::v1::KeyRange {
        start: start.to_vec(),
        end: end.map(<[u8]>::to_vec).unwrap_or_default(),
        unbounded: end.is_none(),
    };
    for (ranges, code) in [
        (vec![], tonic::Code::PermissionDenied),
        (vec![range(b"a", Some(b"n"))], tonic::Code::PermissionDenied),
        (vec![range(b"n", None)], tonic::Code::PermissionDenied),
        (vec![range(b"q", Some(b"p"))], tonic::Code::InvalidArgument),
    ] {
        let status = subscribe_status(
            addr,
            subscribe(Subscribe {
                replica_id: "r".into(),
                ranges,
                ..Subscribe::default()
            }),
        )
        .await;
        assert_eq!(status.code(), code, "{status:?}");
    }
    // A range it holds is served (an empty replica: streamed from 1).
    let status = tokio::time::timeout(
        Duration::from_millis(500),
        subscribe_status(
            addr,
            subscribe(Subscribe {
                replica_id: "r".into(),
                ranges: vec![range(b"n", Some(b"p"))],
                ..Subscribe::default()
            }),
        ),
    )
    .await;
    assert!(status.is_err(), "the stream stays open: {status:?}");
}

#[test]
fn a_batch_larger_than_replication_ships_is_refused_at_write_time() {
    let dir = tempfile::tempdir().unwrap();
    // The database alone would take 100 MiB batches...
    let db = Db::open(
        dir.path().join("p"),
        Options {
            batch_bytes_max: 100 << 20,
            value_bytes_max: 100 << 20,
            ..options()
        },
    )
    .unwrap();
    // ...but once its log is shipped, no more than one message holds.
    let shared = SharedDb::new(db);
    let db = shared.get().unwrap();
    let before = db.last_seq();
    let mut batch = WriteBatch::new();
    batch.put(
        b"big",
        &vec![7u8; strata_replication::MAX_SHIPPED_BATCH_BYTES + 1],
    );
    let error = db.write(batch, &WriteOptions::default()).unwrap_err();
    assert!(
        matches!(error, strata::Error::InvalidArgument(_))
            && error.to_string().contains("replication ships"),
        "{error}"
    );
    assert_eq!(db.last_seq(), before, "nothing was written");
    db.put(b"small", b"v").unwrap();
}

/// Regression (issue 12): a stopping upstream's streams never ended, so a
/// node with replicas could not stop. `Upstream::shut_down` ends every
/// stream with the going-away status, and the replica counts it as such
/// (not a reconnect after an error, not a refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_upstream_ends_streams_with_going_away() {
    let dir = tempfile::tempdir().unwrap();
    let node = primary(dir.path()).await;
    let db = node.db.get().unwrap();
    let first = write_batches(&db, 0, 50);
    let r = replica(dir.path(), "r1", node.addr);
    wait_applied(&r, first, Duration::from_secs(20)).await;
    // The replica may have reached `first` by its bootstrap snapshot,
    // before its stream opened: wait for the stream.
    let opened = Instant::now();
    while node.upstream.open_streams() != 1 {
        assert!(
            opened.elapsed() < Duration::from_secs(10),
            "the replica's stream never opened ({} open)",
            node.upstream.open_streams()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    node.upstream.shut_down();
    while r.figures().upstream_shutdowns == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the stream did not end: {:?}",
            r.figures()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let figures = r.figures();
    assert_eq!(
        (figures.reconnects, figures.refusals, figures.last_error),
        (0, 0, None)
    );
}

/// A transient subscription (a range move's copy) is not a replica: it is
/// not listed, its acknowledgements never confirm a semi-synchronous
/// write, and its slot is gone once its stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_a_transient_copy_is_no_replica_and_leaves_no_slot() {
    let dir = tempfile::tempdir().unwrap();
    let node = primary(dir.path()).await;
    let db = node.db.get().unwrap();
    write_batches(&db, 0, 5);
    let mut client = client(node.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(subscribe(Subscribe {
        replica_id: "copy-1".into(),
        transient: true,
        ..Subscribe::default()
    }))
    .await
    .unwrap();
    let mut stream = client
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Acknowledge everything it is sent, as durable.
    let acker = tokio::spawn(async move {
        while let Ok(Some(message)) = stream.message().await {
            let last = match message.kind {
                Some(upstream_message::Kind::Records(batch)) => {
                    batch.records.last().map(|r| r.last_seq)
                }
                Some(upstream_message::Kind::Record(r)) => Some(r.last_seq),
                _ => None,
            };
            if let Some(last) = last {
                let ack = Ack {
                    durable_seq: last,
                    applied_seq: last,
                };
                if tx
                    .send(ReplicaMessage {
                        kind: Some(replica_message::Kind::Ack(ack)),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let started = Instant::now();
    while node.upstream.open_streams() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the copy's stream did not open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        node.upstream.replicas().is_empty(),
        "a copy is listed as a replica"
    );
    let mut batch = strata::WriteBatch::new();
    batch.put(b"semi", b"sync");
    let upstream = node.upstream.clone();
    let outcome =
        tokio::task::spawn_blocking(move || upstream.write(batch, 1, Duration::from_millis(500)))
            .await
            .unwrap()
            .unwrap();
    assert!(
        !outcome.confirmed,
        "a copy's acknowledgement confirmed a semi-synchronous write"
    );
    assert_eq!(outcome.replicas, 0);
    acker.abort();
    drop(client);
    let started = Instant::now();
    while node.upstream.open_streams() != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the copy's stream did not end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(node.upstream.replicas().is_empty());
}
