//! The Strata demo: opens the commit log in a local data directory, writes
//! a few atomic batches, reads them back, and shows what recovery found.
//!
//! Run it twice: the second run recovers the first run's writes from the
//! log.
//!
//! ```text
//! cargo run --release --example demo              # data in ./strata-data
//! STRATA_DATA_DIR=/tmp/x cargo run --example demo # elsewhere
//! ```
//!
//! The key-value engine (memtables, sorted tables, `Db`) is being built on
//! this log; until it lands, this demo keeps its key-value view in memory and
//! rebuilds it from the log at every start, which is exactly what the engine's
//! recovery will do for its unflushed writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use strata::env::OpenMode;
use strata::wal::{BatchBuilder, BatchOp, Wal, WalOptions};
use strata::{FileSystem, RealFileSystem, SeqNo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("STRATA_DATA_DIR")
        .map_or_else(|| PathBuf::from("strata-data"), PathBuf::from);
    let fs: Arc<dyn FileSystem> = Arc::new(RealFileSystem);
    fs.create_dir_all(&dir)?;
    let database_id = identity(&*fs, &dir)?;
    println!(
        "Strata demo: data directory {} (database {database_id:032x})",
        dir.display()
    );

    // Open the log and rebuild the key-value view from it.
    let mut view: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let started = Instant::now();
    let (wal, report) = Wal::open(
        Arc::clone(&fs),
        dir.join("wal"),
        database_id,
        WalOptions::default(),
        SeqNo(1),
        |batch| {
            for op in batch.ops() {
                match op {
                    BatchOp::Put { key, value } => view.insert(key.to_vec(), value.to_vec()),
                    BatchOp::Delete { key } => view.remove(key),
                };
            }
            Ok(())
        },
    )?;
    println!(
        "recovered {} batches ({} operations) from {} segment(s) in {:.1} ms; next sequence number {}",
        report.batches_replayed,
        report.operations_replayed,
        report.segments_scanned,
        started.elapsed().as_secs_f64() * 1e3,
        report.next_seq
    );
    if let Some(torn) = &report.torn_tail {
        println!(
            "  cut a torn tail of {} bytes in {} ({})",
            torn.bytes_dropped,
            torn.path.display(),
            torn.reason
        );
    }

    // Write: one atomic batch per run, durable when `append` returns.
    let run = view
        .get(b"demo:runs".as_slice())
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let mut batch = BatchBuilder::new();
    let run_text = run.to_string();
    let greeting = format!("hello from run {run}");
    batch.put(b"demo:runs", run_text.as_bytes());
    batch.put(
        format!("demo:greeting:{run:04}").as_bytes(),
        greeting.as_bytes(),
    );
    if run > 3 {
        batch.delete(format!("demo:greeting:{:04}", run - 3).as_bytes());
    }
    let ops: Vec<String> = describe(&batch);
    let commit = wal.append(batch, true)?;
    println!(
        "wrote one atomic batch, synced: {} -> sequence numbers {}..={}",
        ops.join(", "),
        commit.first_seq,
        commit.last_seq
    );

    // Read back: apply the same batch to the view through the log's own
    // tailing reader, which yields the exact bytes on disk.
    let mut reader = wal.reader(commit.first_seq)?;
    if let Some(record) = reader.next(std::time::Duration::from_secs(1))? {
        let payload = strata_format::wal::decode_record(&record.bytes)?.payload;
        for op in strata_format::wal::decode_batch(payload)?.ops() {
            match op {
                BatchOp::Put { key, value } => view.insert(key.to_vec(), value.to_vec()),
                BatchOp::Delete { key } => view.remove(key),
            };
        }
        println!(
            "read back record {}..={} ({} bytes on disk, checksum verified)",
            record.first_seq,
            record.last_seq,
            record.bytes.len()
        );
    }
    println!("the database now holds {} keys:", view.len());
    for (key, value) in &view {
        println!(
            "  {} = {}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(value)
        );
    }
    let stats = wal.stats();
    println!(
        "log: {} batch(es), {} bytes written, {} fdatasync(s) this run",
        stats.batches, stats.bytes_written, stats.syncs
    );
    wal.close()?;
    println!("closed cleanly; run again to see recovery");
    Ok(())
}

fn describe(batch: &BatchBuilder) -> Vec<String> {
    let mut bytes = batch.as_bytes().to_vec();
    strata_format::wal::set_batch_first_seq(&mut bytes, 1);
    match strata_format::wal::decode_batch(&bytes) {
        Ok(view) => view
            .ops()
            .map(|op| match op {
                BatchOp::Put { key, value } => {
                    format!(
                        "put {}={}",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(value)
                    )
                }
                BatchOp::Delete { key } => format!("delete {}", String::from_utf8_lossy(key)),
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The database id, created once (temp file, sync, rename, directory sync).
fn identity(fs: &dyn FileSystem, dir: &Path) -> std::io::Result<u128> {
    let path = dir.join("IDENTITY");
    if fs.exists(&path)? {
        let file = fs.open(&path, OpenMode::Read)?;
        let mut bytes = [0u8; 32];
        file.read_exact_at(&mut bytes, 0)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        return u128::from_str_radix(text, 16).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        });
    }
    let id: u128 = rand::random();
    let temp = dir.join("IDENTITY.tmp");
    let _ = fs.remove_file(&temp);
    let file = fs.open(&temp, OpenMode::CreateNew)?;
    file.write_all_at(format!("{id:032x}").as_bytes(), 0)?;
    file.sync_data()?;
    fs.rename(&temp, &path)?;
    fs.sync_dir(dir)?;
    Ok(id)
}
