//! Checkpoints: a consistent, openable copy of the database in another
//! directory, made while writes continue.
//!
//! A checkpoint holds: `IDENTITY` (the same database id, so replicas
//! bootstrapped from it accept the source's log), hard links to every table
//! of the current version, a fresh manifest naming them with the flushed
//! sequence number, and copies of the commit-log segments that hold
//! everything after it, each copied up to the last complete record written
//! when the copy was taken. Opening the checkpoint replays that log tail,
//! so it is consistent at the last sequence number copied.
//!
//! Writes are never stopped: the version is pinned (its tables cannot be
//! deleted while linking), the log is pinned (its segments cannot be
//! released while copying), and the log is synced first so the copy holds
//! every write acknowledged before the checkpoint began.

use std::path::Path;

use strata_format::manifest::table_file_name;
use strata_format::wal::{decode_record, parse_segment_file_name};

use super::Inner;
use super::identity::IDENTITY_FILE_NAME;
use crate::env::{OpenMode, read_file};
use crate::error::{Error, Result};
use crate::seqno::SeqNo;
use crate::version::set::write_manifest;

pub(crate) fn checkpoint(inner: &Inner, target: &Path) -> Result<SeqNo> {
    let fs = &*inner.fs;
    if fs
        .exists(target)
        .map_err(|e| Error::io("stat", target, e))?
        && !fs
            .list_dir(target)
            .map_err(|e| Error::io("list directory", target, e))?
            .is_empty()
    {
        return Err(Error::InvalidArgument(format!(
            "checkpoint directory {} is not empty",
            target.display()
        )));
    }
    fs.create_dir_all(target)
        .map_err(|e| Error::io("create directory", target, e))?;
    let synced = inner.wal.sync()?;

    let (version, flushed_seq, next_file_number, database_id) = {
        let mut versions = inner.versions.lock();
        let (version, flushed, next) = versions.checkpoint_state();
        (version, flushed, next, versions.database_id())
    };
    let _pin = inner.wal.pin(SeqNo(flushed_seq + 1))?;

    for meta in version.levels.iter().flatten() {
        let name = table_file_name(meta.number);
        let (from, to) = (inner.dir.join(&name), target.join(&name));
        fs.hard_link(&from, &to)
            .map_err(|e| Error::io("link table", &to, e))?;
    }

    // The log: every segment still retained holds only records after the
    // flushed point or the segments that hold them; copy complete records.
    let source_wal = inner.dir.join("wal");
    let target_wal = target.join("wal");
    fs.create_dir_all(&target_wal)
        .map_err(|e| Error::io("create directory", &target_wal, e))?;
    let mut names: Vec<(u64, String)> = fs
        .list_dir(&source_wal)
        .map_err(|e| Error::io("list directory", &source_wal, e))?
        .into_iter()
        .filter_map(|name| parse_segment_file_name(&name).map(|n| (n, name)))
        .collect();
    names.sort();
    let mut last_seq = synced.get().max(flushed_seq);
    for (_, name) in names {
        let from = source_wal.join(&name);
        // Read, not mapped: the active segment is being appended to.
        let bytes = match read_file(fs, &from, u64::MAX) {
            Ok(bytes) => bytes,
            // Released before the pin took hold: entirely flushed.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(e),
        };
        let (complete, last) = complete_prefix(&bytes);
        if let Some(last) = last {
            last_seq = last_seq.max(last);
        }
        let to = target_wal.join(&name);
        let file = fs
            .open(&to, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &to, e))?;
        file.write_all_at(bytes.get(..complete).unwrap_or_default(), 0)
            .map_err(|e| Error::io("write", &to, e))?;
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", &to, e))?;
    }
    fs.sync_dir(&target_wal)
        .map_err(|e| Error::io("sync directory", &target_wal, e))?;

    write_manifest(
        fs,
        target,
        database_id,
        next_file_number,
        &version,
        next_file_number + 1,
        flushed_seq,
    )?;
    let identity = inner.dir.join(IDENTITY_FILE_NAME);
    fs.hard_link(&identity, &target.join(IDENTITY_FILE_NAME))
        .map_err(|e| Error::io("copy identity", target, e))?;
    fs.sync_dir(target)
        .map_err(|e| Error::io("sync directory", target, e))?;
    Ok(SeqNo(last_seq))
}

/// The length of the prefix of a segment that ends at a complete record,
/// and the last sequence number in it.
fn complete_prefix(bytes: &[u8]) -> (usize, Option<u64>) {
    let header = strata_format::wal::SEGMENT_HEADER_LEN;
    if bytes.len() < header {
        return (0, None);
    }
    let mut offset = header;
    let mut last = None;
    while let Some(record) = bytes
        .get(offset..)
        .and_then(|rest| decode_record(rest).ok())
    {
        if let Ok(batch) = strata_format::wal::decode_batch(record.payload) {
            last = Some(batch.last_seq());
        }
        offset += record.framed_len;
    }
    (offset, last)
}
