//! Snapshots on the upstream: a checkpoint of the database built under the
//! snapshot directory, listed with each file's size and crc32, served in
//! chunks from any offset (so a replica resumes an interrupted transfer),
//! and deleted once its lease (renewed by every fetch) runs out.
//!
//! A snapshot for a credential limited to key ranges is cut down before it
//! is listed: the checkpoint is opened with those ranges retained and every
//! table holding other keys is rewritten without them (the log is flushed
//! first), so no file of it holds a key outside the ranges.
//!
//! Invariants: a snapshot is immutable once listed; only listed paths are
//! served (no path from a request touches the file system otherwise); a
//! range-limited credential is served only snapshots cut to exactly its
//! ranges.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata::replication::{LogSource, build_snapshot, read_snapshot_file, remove_snapshot};
use strata::{Db, FileSystem, SeqNo};
use strata_proto::v1::{FetchSnapshotRequest, SnapshotChunk, SnapshotFile, SnapshotInfo};
use tokio::sync::mpsc;
use tonic::Status;

use crate::auth::Ranges;

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    /// The file system it lives on (its database's).
    fs: Arc<dyn FileSystem>,
    files: Vec<SnapshotFile>,
    last_used: Instant,
    /// The key ranges it was cut to (empty: every key).
    ranges: Ranges,
}

#[derive(Debug, Clone)]
pub(crate) struct Snapshots {
    dir: PathBuf,
    lease: Duration,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    counter: Arc<AtomicU64>,
}

impl Snapshots {
    pub(crate) fn new(dir: PathBuf, lease: Duration) -> Self {
        Self {
            dir,
            lease,
            entries: Arc::default(),
            counter: Arc::default(),
        }
    }

    fn expire(&self) {
        let mut entries = self.entries.lock();
        let lease = self.lease;
        entries.retain(|_, entry| {
            let keep = entry.last_used.elapsed() < lease;
            if !keep {
                let _ = remove_snapshot(&*entry.fs, &entry.path);
            }
            keep
        });
    }

    /// Builds a snapshot of `db`, cut to `ranges` unless empty, and lists
    /// it.
    pub(crate) fn begin(
        &self,
        db: &Db,
        epoch: u64,
        ranges: &Ranges,
    ) -> Result<SnapshotInfo, Status> {
        self.expire();
        let id = format!(
            "{:x}-{}",
            crate::wire::now_micros(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join(&id);
        let built = build_snapshot(db, &path, ranges)
            .map_err(|e| Status::internal(format!("building the snapshot: {e}")))?;
        let files: Vec<SnapshotFile> = built
            .files
            .into_iter()
            .map(|f| SnapshotFile {
                path: f.path,
                size: f.size,
                crc32: f.crc32,
            })
            .collect();
        let seq = built.seq;
        let seq_hash = seq_hash(db, seq, crate::filter::RangeFilter::new(ranges).as_ref());
        let info = SnapshotInfo {
            snapshot_id: id.clone(),
            seq: seq.get(),
            seq_hash,
            database_id: db.database_id().to_le_bytes().to_vec(),
            epoch,
            files: files.clone(),
            lease_millis: self.lease.as_millis() as u64,
        };
        self.entries.lock().insert(
            id,
            Entry {
                path,
                fs: strata::replication::file_system_of(db),
                files,
                last_used: Instant::now(),
                ranges: ranges.clone(),
            },
        );
        Ok(info)
    }

    /// Streams one listed file from an offset.
    /// A caller limited to `allowed` ranges (empty: none) may fetch only a
    /// snapshot cut to exactly them.
    pub(crate) fn fetch(
        &self,
        request: &FetchSnapshotRequest,
        chunk_bytes: usize,
        allowed: &Ranges,
    ) -> Result<mpsc::Receiver<Result<SnapshotChunk, Status>>, Status> {
        self.expire();
        let (fs, root, size) = {
            let mut entries = self.entries.lock();
            let entry = entries.get_mut(&request.snapshot_id).ok_or_else(|| {
                Status::not_found(format!(
                    "no snapshot {:?} (its lease may have expired): begin another",
                    request.snapshot_id
                ))
            })?;
            if !allowed.is_empty() && entry.ranges != *allowed {
                return Err(Status::permission_denied(
                    "this snapshot holds key ranges the credential does not allow",
                ));
            }
            entry.last_used = Instant::now();
            let file = entry
                .files
                .iter()
                .find(|f| f.path == request.path)
                .ok_or_else(|| {
                    Status::not_found(format!("no file {:?} in the snapshot", request.path))
                })?;
            (Arc::clone(&entry.fs), entry.path.clone(), file.size)
        };
        if request.offset > size {
            return Err(Status::out_of_range(format!(
                "offset {} is past the end of {:?} ({size} bytes)",
                request.offset, request.path
            )));
        }
        let (tx, rx) = mpsc::channel(4);
        let offset = request.offset;
        let entries = Arc::clone(&self.entries);
        let id = request.snapshot_id.clone();
        let relative = request.path.clone();
        std::thread::Builder::new()
            .name("strata-snapshot".into())
            .spawn(move || {
                let send = |result| tx.blocking_send(result).is_ok();
                let mut at = offset;
                let mut buffer = vec![0u8; chunk_bytes.max(1)];
                loop {
                    match read_snapshot_file(&*fs, &root, &relative, at, &mut buffer) {
                        Ok(0) => return,
                        Ok(n) => {
                            let data = buffer.get(..n).unwrap_or_default().to_vec();
                            if !send(Ok(SnapshotChunk { offset: at, data })) {
                                return;
                            }
                            at += n as u64;
                            if let Some(entry) = entries.lock().get_mut(&id) {
                                entry.last_used = Instant::now();
                            }
                        }
                        Err(e) => {
                            send(Err(Status::internal(format!(
                                "reading the snapshot file: {e}"
                            ))));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Status::internal(format!("spawning the snapshot reader: {e}")))?;
        Ok(rx)
    }
}

/// The hash of the record ending at `seq`, as `filter` shows it.
fn seq_hash(db: &Db, seq: SeqNo, filter: Option<&crate::filter::RangeFilter>) -> Vec<u8> {
    if seq.get() == 0 {
        return Vec::new();
    }
    let Ok(mut reader) = LogSource::of(db).read_from(seq) else {
        return Vec::new();
    };
    match reader.next(Duration::from_secs(1)) {
        Ok(Some(record)) if record.last_seq == seq => {
            let Ok(view) = strata_format::wal::decode_record(&record.bytes) else {
                return Vec::new();
            };
            crate::filter::RangeFilter::shown_hash(filter, view.payload)
                .map(|hash| hash.to_vec())
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use strata::replication::safe_relative_path;

    #[test]
    fn only_plain_relative_paths_are_safe() {
        for good in ["CURRENT", "wal/000001.log", "000012.sst"] {
            assert!(safe_relative_path(good), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "wal/../../x",
            "a//b",
            "./a",
            "a\\b",
        ] {
            assert!(!safe_relative_path(bad), "{bad}");
        }
    }
}
