//! A replica's commit log holds, byte for byte, the records its upstream
//! sent: the segments of both logs, read from disk, hold the same record
//! stream (checksums included), and each replicated record was decoded once
//! on its way to the replica's memtable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::Path;
use std::time::{Duration, Instant};

use strata::replication::Follower;
use strata::{Db, Options, SeqNo, WriteBatch, WriteOptions};
use strata_replication::epoch::Epoch;
use strata_replication::{Replica, ReplicaConfig, SharedDb, Upstream, UpstreamConfig};
use tokio_stream::wrappers::TcpListenerStream;

/// The records of every segment of the log in `wal_dir`, in order, each
/// exactly as framed on disk.
fn record_stream(wal_dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<_> = std::fs::read_dir(wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    names.sort();
    let mut records = Vec::new();
    for path in names {
        let bytes = std::fs::read(&path).unwrap();
        let mut offset = strata_format::wal::SEGMENT_HEADER_LEN;
        while let Some(rest) = bytes.get(offset..) {
            if strata_format::wal::is_zero_header(rest) {
                break;
            }
            let Ok(record) = strata_format::wal::decode_record(rest) else {
                break;
            };
            records.push(rest[..record.framed_len].to_vec());
            offset += record.framed_len;
        }
    }
    records
}

fn write(db: &Db, from: u64, count: u64) -> SeqNo {
    let mut last = SeqNo(0);
    for i in from..from + count {
        let mut batch = WriteBatch::new();
        batch.put(format!("key{:05}", i % 300).as_bytes(), &i.to_le_bytes());
        if i % 9 == 0 {
            batch.delete(format!("key{:05}", (i + 1) % 300).as_bytes());
        }
        if i % 50 == 0 {
            batch.delete_range(b"key00010", b"key00020");
        }
        last = db.write(batch, &WriteOptions { sync: i % 3 == 0 }).unwrap();
    }
    db.sync().unwrap();
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_log_holds_the_upstream_records_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let db = SharedDb::new(Db::open(dir.path().join("p"), Options::default()).unwrap());
    let upstream = Upstream::new(
        db.clone(),
        Epoch::open(&dir.path().join("p")).unwrap(),
        UpstreamConfig::new(dir.path().join("p.snapshots")),
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
    let primary = db.get().unwrap();
    write(&primary, 0, 300);

    let mut config = ReplicaConfig::new(format!("http://{addr}"), "r", dir.path().join("r"));
    config.backoff_max = Duration::from_millis(200);
    let replica = Replica::start(config).unwrap();
    // Records shipped one by one while the replica follows.
    let mut last = SeqNo(0);
    for round in 0..10 {
        last = write(&primary, 300 + round * 100, 100);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    while replica.figures().applied_seq < last.get() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            replica.figures()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let figures = replica.figures();
    assert!(figures.records_applied >= 900, "{figures:?}");

    let replica_db = replica.db().get().unwrap();
    let stats = Follower::of(&replica_db).stats();
    assert_eq!(stats.records_applied, figures.records_applied);
    assert_eq!(
        stats.batch_decodes, stats.records_applied,
        "one decode per replicated record"
    );
    replica_db.sync().unwrap();
    primary.sync().unwrap();

    let sent = record_stream(&dir.path().join("p/wal"));
    let held = record_stream(&dir.path().join("r/wal"));
    assert_eq!(sent.len(), 1300);
    assert_eq!(held.len(), sent.len(), "the same records");
    for (i, (a, b)) in sent.iter().zip(&held).enumerate() {
        assert_eq!(a, b, "record {i} differs");
    }
    drop(replica_db);
    replica.stop().await;
}
