//! The Strata demo: opens a database in a local data directory, writes an
//! atomic batch durably, reads it back, and shows what recovery and the
//! engine did.
//!
//! Run it twice: the second run finds the first run's writes.
//!
//! ```text
//! cargo run --release --example demo              # data in ./strata-data
//! STRATA_DATA_DIR=/tmp/x cargo run --example demo # elsewhere
//! ```

use std::path::PathBuf;
use std::time::Instant;

use strata::{Db, Options, WriteBatch, WriteOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("STRATA_DATA_DIR")
        .map_or_else(|| PathBuf::from("strata-data"), PathBuf::from);
    let started = Instant::now();
    let db = Db::open(&dir, Options::default())?;
    let report = db.recovery_report();
    println!(
        "opened {} in {:.1} ms: replayed {} batches ({} operations) from the commit log; last sequence number {}",
        dir.display(),
        started.elapsed().as_secs_f64() * 1e3,
        report.batches_replayed,
        report.operations_replayed,
        db.stats().last_seq
    );
    if let Some(torn) = &report.torn_tail {
        println!(
            "  cut a torn log tail of {} bytes in {} ({})",
            torn.bytes_dropped,
            torn.path.display(),
            torn.reason
        );
    }

    // One atomic batch per run, durable when `write` returns.
    let run = db
        .get(b"demo:runs")?
        .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let mut batch = WriteBatch::new();
    batch.put(b"demo:runs", run.to_string().as_bytes());
    batch.put(
        format!("demo:greeting:{run:04}").as_bytes(),
        format!("hello from run {run}").as_bytes(),
    );
    if run > 3 {
        batch.delete(format!("demo:greeting:{:04}", run - 3).as_bytes());
    }
    let snapshot = db.snapshot();
    let seq = db.write(batch, &WriteOptions { sync: true })?;
    println!(
        "wrote one atomic batch ({} operations), synced: commit token {seq}",
        if run > 3 { 3 } else { 2 }
    );

    // Read back: point reads, a prefix scan, and the snapshot from before.
    println!(
        "demo:runs = {}",
        String::from_utf8_lossy(&db.get(b"demo:runs")?.unwrap_or_default())
    );
    println!("greetings now (newest first):");
    for entry in db.scan_rev(b"demo:greeting:".as_slice()..b"demo:greeting;".as_slice())? {
        let (key, value) = entry?;
        println!(
            "  {} = {}",
            String::from_utf8_lossy(&key),
            String::from_utf8_lossy(&value)
        );
    }
    println!(
        "the snapshot taken before the write (at {}) still reads demo:runs = {}",
        snapshot.seq(),
        snapshot.get(b"demo:runs")?.map_or_else(
            || "(absent)".into(),
            |v| String::from_utf8_lossy(&v).into_owned()
        )
    );
    drop(snapshot);

    db.flush()?;
    let stats = db.stats();
    println!(
        "engine: {} table(s) per level {:?}, {} flush(es), log {} bytes in {} fdatasync(s) this run",
        stats.level_tables.iter().sum::<u64>(),
        stats.level_tables,
        stats.flushes,
        stats.wal.bytes_written,
        stats.wal.syncs
    );
    db.close()?;
    println!("closed cleanly; run again to see the data come back");
    Ok(())
}
