//! The engine's side of replication (the `strata::replication` port): a
//! follower takes another database's log records in order, with the same
//! sequence numbers, stores them byte for byte, and makes them visible only
//! once durable; out-of-order batches are refused whole; a follower refuses
//! local writes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::Duration;

use strata::replication::{Follower, LogSource, VerifiedRecord};
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

/// Every record of `db`'s log from `from` on, framed as on disk.
fn records(db: &Db, from: u64) -> Vec<Vec<u8>> {
    let mut reader = LogSource::of(db).read_from(SeqNo(from)).unwrap();
    let mut out = Vec::new();
    while let Some(record) = reader.next(Duration::from_millis(50)).unwrap() {
        out.push(record.bytes);
    }
    out
}

/// `records` applied to `db` as a follower.
fn apply(db: &Db, records: &[Vec<u8>]) -> strata::Result<SeqNo> {
    let verified = records
        .iter()
        .map(|r| VerifiedRecord::verify(r.clone()))
        .collect::<strata::Result<Vec<_>>>()?;
    Follower::of(db).apply(verified)
}

fn rows(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.scan(..).unwrap().map(|kv| kv.unwrap()).collect()
}

#[test]
fn a_replicated_log_reproduces_the_database_at_the_same_sequence_numbers() {
    let fs = Arc::new(MemFileSystem::new());
    let primary = open(&fs, "p");
    let replica = open(&fs, "r");
    Follower::of(&replica).fence("replica of p");
    for i in 0..50u32 {
        let mut batch = WriteBatch::new();
        batch.put(format!("k{}", i % 13).as_bytes(), &i.to_le_bytes());
        if i % 5 == 0 {
            batch.delete_range(b"k1", b"k2");
        }
        primary.write(batch, &WriteOptions { sync: true }).unwrap();
    }
    let all = records(&primary, 1);
    let (head, tail) = all.split_at(20);
    apply(&replica, head).unwrap();
    let last = apply(&replica, tail).unwrap();
    assert_eq!(last, primary.last_seq());
    assert_eq!(replica.last_seq(), primary.last_seq());
    assert!(replica.durable_seq() >= last, "visible only once durable");
    assert_eq!(rows(&replica), rows(&primary));
    // The replica's own log now holds the same records, byte for byte.
    assert_eq!(records(&replica, 1), all);
    // Each was decoded once on its way to the memtable.
    let stats = Follower::of(&replica).stats();
    assert_eq!(stats.records_applied, 50);
    assert_eq!(stats.batch_decodes, 50);
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
    let all = records(&primary, 1);
    // A gap: record 2 first.
    let err = apply(&replica, &all[1..2]).unwrap_err();
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
    apply(&replica, &all[..1]).unwrap();
    // A duplicate is out of sequence too (the replication layer skips them).
    let err = apply(&replica, &all[..1]).unwrap_err();
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
    let err = apply(&replica, &[b"not a batch".to_vec()]).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert_eq!(replica.last_seq(), SeqNo(1));
}

#[test]
fn a_follower_refuses_local_writes_until_promoted() {
    let fs = Arc::new(MemFileSystem::new());
    let db = open(&fs, "r");
    Follower::of(&db).fence("this node is a replica of 10.0.0.1:7001");
    let err = db.put(b"k", b"v").unwrap_err();
    assert!(
        matches!(err, Error::ReadOnly(_)) && err.to_string().contains("10.0.0.1:7001"),
        "{err}"
    );
    assert!(db.delete_range(b"a", b"b").is_err());
    Follower::of(&db).unfence();
    db.put(b"k", b"v").unwrap();
}
