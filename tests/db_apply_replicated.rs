//! The engine's side of replication: `apply_replicated` takes another
//! database's log records in order, with the same sequence numbers, and
//! makes them visible only once durable; out-of-order batches are refused
//! whole; a follower refuses local writes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::Duration;

use strata::{Db, Error, MemFileSystem, Options, SeqNo, WriteBatch, WriteOptions};

fn open(fs: &Arc<MemFileSystem>, dir: &str) -> Db {
    Db::open(
        dir,
        Options {
            file_system: fs.clone(),
            ..Options::default()
        },
    )
    .unwrap()
}

/// The payloads of every record of `db`'s log from `from` on.
fn payloads(db: &Db, from: u64) -> Vec<Vec<u8>> {
    let mut reader = db.log_reader(SeqNo(from)).unwrap();
    let mut out = Vec::new();
    while let Some(record) = reader.next(Duration::from_millis(50)).unwrap() {
        out.push(
            strata_format::wal::decode_record(&record.bytes)
                .unwrap()
                .payload
                .to_vec(),
        );
    }
    out
}

fn rows(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.scan(..).unwrap().map(|kv| kv.unwrap()).collect()
}

#[test]
fn a_replicated_log_reproduces_the_database_at_the_same_sequence_numbers() {
    let fs = Arc::new(MemFileSystem::new());
    let primary = open(&fs, "p");
    let replica = open(&fs, "r");
    replica.set_follower(Some("replica of p".into()));
    for i in 0..50u32 {
        let mut batch = WriteBatch::new();
        batch.put(format!("k{}", i % 13).as_bytes(), &i.to_le_bytes());
        if i % 5 == 0 {
            batch.delete_range(b"k1", b"k2");
        }
        primary.write(batch, &WriteOptions { sync: true }).unwrap();
    }
    let all = payloads(&primary, 1);
    let refs: Vec<&[u8]> = all.iter().map(Vec::as_slice).collect();
    let (head, tail) = refs.split_at(20);
    replica.apply_replicated(head).unwrap();
    let last = replica.apply_replicated(tail).unwrap();
    assert_eq!(last, primary.last_seq());
    assert_eq!(replica.last_seq(), primary.last_seq());
    assert!(replica.durable_seq() >= last, "visible only once durable");
    assert_eq!(rows(&replica), rows(&primary));
    // The replica's own log now holds the same records.
    assert_eq!(payloads(&replica, 1), all);
}

#[test]
fn out_of_sequence_batches_are_refused_and_nothing_is_applied() {
    let fs = Arc::new(MemFileSystem::new());
    let primary = open(&fs, "p");
    let replica = open(&fs, "r");
    for i in 0..5u32 {
        primary.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    primary.sync().unwrap();
    let all = payloads(&primary, 1);
    // A gap: record 2 first.
    let err = replica.apply_replicated(&[all[1].as_slice()]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfSequence {
                expected: 1,
                found: 2
            }
        ),
        "{err}"
    );
    assert_eq!(replica.last_seq(), SeqNo(0));
    replica.apply_replicated(&[all[0].as_slice()]).unwrap();
    // A duplicate is out of sequence too (the replication layer skips them).
    let err = replica.apply_replicated(&[all[0].as_slice()]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfSequence {
                expected: 2,
                found: 1
            }
        ),
        "{err}"
    );
    // Garbage is corruption, and nothing is applied.
    let err = replica
        .apply_replicated(&[b"not a batch".as_slice()])
        .unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert_eq!(replica.last_seq(), SeqNo(1));
}

#[test]
fn a_follower_refuses_local_writes_until_promoted() {
    let fs = Arc::new(MemFileSystem::new());
    let db = open(&fs, "r");
    db.set_follower(Some("this node is a replica of 10.0.0.1:7001".into()));
    let err = db.put(b"k", b"v").unwrap_err();
    assert!(
        matches!(err, Error::ReadOnly(_)) && err.to_string().contains("10.0.0.1:7001"),
        "{err}"
    );
    assert!(db.delete_range(b"a", b"b").is_err());
    db.set_follower(None);
    db.put(b"k", b"v").unwrap();
}
