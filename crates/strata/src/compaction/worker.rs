//! The mechanism of flushes and compactions: merge entries, drop what no
//! reader can see, write tables, and describe the result as a version
//! edit. What to compact is decided by [`super::pick`].
//!
//! Garbage collection rule (leveldb's): walking one user key's versions
//! newest first, a version is dropped when a newer version of the same key
//! is already visible to every reader (its sequence number is at or below
//! the oldest snapshot); a tombstone is dropped when it is itself visible
//! to every reader and no deeper level may hold the key.
//!
//! Invariants:
//! - All versions of one user key land in the same output table, so
//!   tables of level 1 and below never overlap.
//! - Output files are synced, and their directory synced, before the edit
//!   that names them is logged.

use std::path::Path;

use strata_format::manifest::{TableEntry, VersionEdit};
use strata_format::table::{Compression, TableOptions};

use super::pick::{Choice, is_bottom_for};
use crate::db::iterator::{Cursor, KeyRange, Merge};
use crate::env::FileSystem;
use crate::error::{Error, Result};
use crate::memtable::{MemValue, Memtable};
use crate::options::Options;
use crate::table::{TableCache, TableCursor, TableWriter};
use crate::version::Version;

/// What a flush or compaction needs from the database.
pub(crate) struct Context<'a> {
    pub(crate) fs: &'a dyn FileSystem,
    pub(crate) dir: &'a Path,
    pub(crate) options: &'a Options,
    pub(crate) tables: &'a TableCache,
    /// Allocates file numbers (from the version set).
    pub(crate) new_file_number: &'a dyn Fn() -> u64,
}

/// Bytes read and written by one job.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JobBytes {
    pub(crate) read: u64,
    pub(crate) written: u64,
}

fn table_options(options: &Options, level: usize) -> TableOptions {
    TableOptions {
        block_bytes: options.block_bytes,
        bloom_bits_per_key: options.bloom_bits_per_key,
        compression: if options.compression {
            Compression::Lz4
        } else {
            Compression::None
        },
        level: level as u32,
        ..TableOptions::default()
    }
}

/// Writes a frozen memtable as one level-0 table. Returns the edit (with
/// the flushed sequence number) and the bytes written; `None` for an empty
/// memtable.
pub(crate) fn flush(
    ctx: &Context<'_>,
    memtable: &Memtable,
) -> Result<Option<(VersionEdit, JobBytes)>> {
    if memtable.len() == 0 {
        return Ok(None);
    }
    let number = (ctx.new_file_number)();
    let path = ctx
        .dir
        .join(strata_format::manifest::table_file_name(number));
    let mut writer = TableWriter::create(ctx.fs, path, number, table_options(ctx.options, 0))?;
    for entry in memtable.entries() {
        writer.add(&entry)?;
    }
    let table = writer.finish(0)?;
    ctx.fs
        .sync_dir(ctx.dir)
        .map_err(|e| Error::io("sync directory", ctx.dir, e))?;
    let bytes = JobBytes {
        read: 0,
        written: table.size,
    };
    let edit = VersionEdit {
        flushed_seq: Some(memtable.max_seq()),
        added: vec![table],
        ..Default::default()
    };
    Ok(Some((edit, bytes)))
}

/// Runs `choice` against `version`, keeping every version visible at or
/// above `oldest_snapshot`. Returns the edit to log and the bytes moved.
pub(crate) fn compact(
    ctx: &Context<'_>,
    version: &Version,
    choice: &Choice,
    oldest_snapshot: u64,
) -> Result<(VersionEdit, JobBytes)> {
    let output_level = choice.output_level();
    let mut edit = VersionEdit::default();
    for table in &choice.inputs {
        edit.deleted.push((choice.level as u8, table.number));
    }
    for table in &choice.next_inputs {
        edit.deleted.push((output_level as u8, table.number));
    }
    if choice.trivial_move {
        for table in &choice.inputs {
            edit.added.push(table.to_entry(output_level));
        }
        return Ok((edit, JobBytes::default()));
    }

    let everything = KeyRange {
        start: std::ops::Bound::Unbounded,
        end: std::ops::Bound::Unbounded,
    };
    let mut cursors: Vec<Box<dyn Cursor>> = Vec::new();
    let mut read = 0;
    for table in choice.inputs.iter().chain(&choice.next_inputs) {
        let path = ctx
            .dir
            .join(strata_format::manifest::table_file_name(table.number));
        let open = ctx
            .tables
            .get_or_open(ctx.fs, &path, table.number, table.size)?;
        read += table.size;
        cursors.push(Box::new(TableCursor::new(open, &everything, true)));
    }
    let mut merge = Merge::new(cursors, true);

    let mut outputs: Vec<TableEntry> = Vec::new();
    let mut writer: Option<TableWriter> = None;
    let mut last_key: Option<Vec<u8>> = None;
    let mut newer_visible_to_all = false;
    let mut written = 0;
    while let Some(entry) = merge.next()? {
        let new_key = last_key.as_deref() != Some(entry.user_key.as_slice());
        if new_key {
            newer_visible_to_all = false;
            // Cut the output between user keys only.
            if let Some(full) =
                writer.take_if(|w| w.estimated_size() >= ctx.options.table_bytes_max)
            {
                let table = full.finish(output_level as u8)?;
                written += table.size;
                outputs.push(table);
            }
            last_key = Some(entry.user_key.clone());
        }
        let drop = if newer_visible_to_all {
            true
        } else {
            matches!(entry.value, MemValue::Delete)
                && entry.seq <= oldest_snapshot
                && is_bottom_for(version, output_level, &entry.user_key)
        };
        if entry.seq <= oldest_snapshot {
            newer_visible_to_all = true;
        }
        if drop {
            continue;
        }
        let writer = match &mut writer {
            Some(writer) => writer,
            None => {
                let number = (ctx.new_file_number)();
                let path = ctx
                    .dir
                    .join(strata_format::manifest::table_file_name(number));
                writer.insert(TableWriter::create(
                    ctx.fs,
                    path,
                    number,
                    table_options(ctx.options, output_level),
                )?)
            }
        };
        writer.add(&entry)?;
    }
    if let Some(last) = writer.filter(|w| w.entries() > 0) {
        let table = last.finish(output_level as u8)?;
        written += table.size;
        outputs.push(table);
    }
    if !outputs.is_empty() {
        ctx.fs
            .sync_dir(ctx.dir)
            .map_err(|e| Error::io("sync directory", ctx.dir, e))?;
    }
    edit.added = outputs;
    Ok((edit, JobBytes { read, written }))
}
