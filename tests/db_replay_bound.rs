//! Restart time stays bounded: the log that a restart after a crash must
//! replay never grows far past `wal_replay_bytes_max`, even when memtables
//! are large; and a clean close flushes, so the next open replays nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use strata::env::{CrashMode, FaultFileSystem};
use strata::{Db, Options, WriteOptions};

#[test]
fn crash_restart_replays_at_most_about_the_cap() {
    let fs = Arc::new(FaultFileSystem::new());
    let options = || Options {
        file_system: fs.clone(),
        memtable_bytes_max: 64 << 20,
        wal_segment_bytes_max: 16 << 10,
        wal_replay_bytes_max: 64 << 10,
        ..Options::default()
    };
    let db = Db::open("db", options()).unwrap();
    let value = [7u8; 200];
    for i in 0..5000u32 {
        db.write(
            {
                let mut b = strata::WriteBatch::new();
                b.put(&i.to_be_bytes(), &value);
                b
            },
            &WriteOptions {
                sync: i % 100 == 99,
            },
        )
        .unwrap();
    }
    db.sync().unwrap();
    assert!(
        db.stats().flushes > 0,
        "the replay cap forced flushes: {:?}",
        db.stats()
    );
    fs.crash_and_halt(CrashMode::DropUnsynced, 1);
    drop(db);
    fs.resume();
    let db = Db::open("db", options()).unwrap();
    let report = db.recovery_report();
    // About 1 MB was written; a restart reads at most the cap plus a segment
    // and a flush's worth of slack.
    let replayed_bytes = report.operations_replayed * 220;
    assert!(
        replayed_bytes < 3 * (64 << 10),
        "replayed {} operations",
        report.operations_replayed
    );
    assert_eq!(
        db.get(&4999u32.to_be_bytes()).unwrap().as_deref(),
        Some(&value[..])
    );
    db.close().unwrap();
    let db = Db::open("db", options()).unwrap();
    assert_eq!(db.recovery_report().operations_replayed, 0);
}
