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
//! Range deletions: a version covered by a flushed range tombstone that
//! every reader sees (its sequence number at or below the oldest snapshot)
//! is dropped. Outputs are cut at every range boundary and at the bounds of
//! every range tombstone, so an output lies in one range, and lies either
//! wholly inside a tombstone or wholly outside it (which lets the policy
//! see from the metadata alone that a tombstone's work is done).
//!
//! Invariants:
//! - All versions of one user key land in the same output table, so
//!   tables of level 1 and below never overlap.
//! - No output spans a range boundary of the version it was built for.
//! - Output files are synced, and their directory synced, before the edit
//!   that names them is logged.

use std::path::Path;

use strata_format::manifest::{TableEntry, VersionEdit};
use strata_format::table::{Compression, TableOptions};

use crate::ranges::tombstones;

use super::pick::{Choice, is_bottom_for};
use crate::env::FileSystem;
use crate::error::{Error, Result};
use crate::memtable::Memtable;
use crate::merge::KeyRange;
use crate::merge::{Cursor, Merge};
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

/// The keys at which outputs must be cut: every range boundary, and the
/// start and end of every range tombstone. Sorted, deduplicated.
pub(crate) fn cut_points(version: &Version) -> Vec<Vec<u8>> {
    let mut points: Vec<Vec<u8>> = version
        .ranges
        .ranges()
        .iter()
        .skip(1)
        .map(|r| r.start.clone())
        .collect();
    for t in version.tombstones.iter() {
        points.push(t.start.clone());
        points.push(t.end.clone());
    }
    points.sort();
    points.dedup();
    points
}

/// Tracks the next cut point as keys ascend.
struct Cutter<'a> {
    points: &'a [Vec<u8>],
    next: usize,
}

impl<'a> Cutter<'a> {
    fn new(points: &'a [Vec<u8>]) -> Self {
        Self { points, next: 0 }
    }

    /// Whether a cut point lies at or below `key` and above every key seen
    /// before (so `key` must start a new output).
    fn crosses(&mut self, key: &[u8]) -> bool {
        let mut crossed = false;
        while self
            .points
            .get(self.next)
            .is_some_and(|p| p.as_slice() <= key)
        {
            self.next += 1;
            crossed = true;
        }
        crossed
    }
}

/// Writes a frozen memtable as level-0 tables, one per range it touches
/// (cut at `version`'s range boundaries). Returns the edit (with the
/// flushed sequence number and the memtable's range tombstones) and the
/// bytes written; `None` for an empty memtable.
pub(crate) fn flush(
    ctx: &Context<'_>,
    memtable: &Memtable,
    version: &Version,
) -> Result<Option<(VersionEdit, JobBytes)>> {
    if memtable.is_empty() {
        return Ok(None);
    }
    let boundaries: Vec<Vec<u8>> = version
        .ranges
        .ranges()
        .iter()
        .skip(1)
        .map(|r| r.start.clone())
        .collect();
    let mut cutter = Cutter::new(&boundaries);
    let mut outputs = Vec::new();
    let mut writer: Option<TableWriter> = None;
    for entry in memtable.entries() {
        if cutter.crosses(entry.user_key())
            && let Some(full) = writer.take()
        {
            outputs.push(full.finish(0)?);
        }
        let writer = match &mut writer {
            Some(writer) => writer,
            None => writer.insert(new_writer(ctx, 0)?),
        };
        writer.add(entry)?;
    }
    if let Some(last) = writer {
        outputs.push(last.finish(0)?);
    }
    if !outputs.is_empty() {
        ctx.fs
            .sync_dir(ctx.dir)
            .map_err(|e| Error::io("sync directory", ctx.dir, e))?;
    }
    let bytes = JobBytes {
        read: 0,
        written: outputs.iter().map(|t| t.size).sum(),
    };
    let edit = VersionEdit {
        flushed_seq: Some(memtable.max_seq()),
        added: outputs,
        added_tombstones: memtable.tombstones(),
        ..Default::default()
    };
    Ok(Some((edit, bytes)))
}

fn new_writer(ctx: &Context<'_>, level: usize) -> Result<TableWriter> {
    let number = (ctx.new_file_number)();
    let path = ctx
        .dir
        .join(strata_format::manifest::table_file_name(number));
    TableWriter::create(ctx.fs, path, number, table_options(ctx.options, level))
}

/// A cursor over every entry of `table`.
fn whole_table(ctx: &Context<'_>, table: &crate::version::TableMeta) -> Result<TableCursor> {
    let everything = KeyRange {
        start: std::ops::Bound::Unbounded,
        end: std::ops::Bound::Unbounded,
    };
    let path = ctx
        .dir
        .join(strata_format::manifest::table_file_name(table.number));
    let open = ctx
        .tables
        .get_or_open(ctx.fs, &path, table.number, table.size)?;
    Ok(TableCursor::new(
        open,
        std::sync::Arc::new(everything),
        true,
    ))
}

/// Rewrites `table` (of `level`) as the table of its keys below `at` and
/// the table of the rest, for a range split. Returns the new tables (one
/// may be missing if empty, though a straddling table has keys on both
/// sides) and the bytes moved.
pub(crate) fn split_table(
    ctx: &Context<'_>,
    table: &crate::version::TableMeta,
    level: usize,
    at: &[u8],
) -> Result<(Vec<TableEntry>, JobBytes)> {
    let mut cursor = whole_table(ctx, table)?;
    let mut outputs = Vec::new();
    let mut writer: Option<TableWriter> = None;
    let mut crossed = false;
    while cursor.advance()? {
        let entry = cursor.entry();
        if !crossed && entry.user_key() >= at {
            crossed = true;
            if let Some(left) = writer.take() {
                outputs.push(left.finish(level as u8)?);
            }
        }
        let writer = match &mut writer {
            Some(writer) => writer,
            None => writer.insert(new_writer(ctx, level)?),
        };
        writer.add(entry)?;
    }
    if let Some(last) = writer {
        outputs.push(last.finish(level as u8)?);
    }
    ctx.fs
        .sync_dir(ctx.dir)
        .map_err(|e| Error::io("sync directory", ctx.dir, e))?;
    let written = outputs.iter().map(|t| t.size).sum();
    Ok((
        outputs,
        JobBytes {
            read: table.size,
            written,
        },
    ))
}

/// Rewrites `table` (of `level`) keeping only the entries whose user key
/// `keep` accepts. Returns the new table (none if nothing is kept) and the
/// bytes moved.
pub(crate) fn filter_table(
    ctx: &Context<'_>,
    table: &crate::version::TableMeta,
    level: usize,
    keep: &dyn Fn(&[u8]) -> bool,
) -> Result<(Option<TableEntry>, JobBytes)> {
    let mut cursor = whole_table(ctx, table)?;
    let mut writer: Option<TableWriter> = None;
    while cursor.advance()? {
        let entry = cursor.entry();
        if !keep(entry.user_key()) {
            continue;
        }
        let writer = match &mut writer {
            Some(writer) => writer,
            None => writer.insert(new_writer(ctx, level)?),
        };
        writer.add(entry)?;
    }
    let output = writer.map(|w| w.finish(level as u8)).transpose()?;
    ctx.fs
        .sync_dir(ctx.dir)
        .map_err(|e| Error::io("sync directory", ctx.dir, e))?;
    let written = output.as_ref().map_or(0, |t| t.size);
    Ok((
        output,
        JobBytes {
            read: table.size,
            written,
        },
    ))
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
    if choice.drop_only {
        // Every input is wholly hidden by a range tombstone every reader
        // sees: dropped by the edit alone, never read.
        return Ok((edit, JobBytes::default()));
    }
    if choice.trivial_move {
        for table in &choice.inputs {
            edit.added.push(table.to_entry(output_level));
        }
        return Ok((edit, JobBytes::default()));
    }

    let everything = std::sync::Arc::new(KeyRange {
        start: std::ops::Bound::Unbounded,
        end: std::ops::Bound::Unbounded,
    });
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
        cursors.push(Box::new(TableCursor::new(
            open,
            std::sync::Arc::clone(&everything),
            true,
        )));
    }
    let mut merge = Merge::new(cursors, true);
    let points = cut_points(version);
    let mut cutter = Cutter::new(&points);
    let retain = crate::ranges::KeyIntervals::new(&ctx.options.retain_ranges);

    let mut outputs: Vec<TableEntry> = Vec::new();
    let mut writer: Option<TableWriter> = None;
    let mut last_key: Vec<u8> = Vec::new();
    let mut any = false;
    let mut newer_visible_to_all = false;
    let mut written = 0;
    while merge.advance()? {
        let entry = merge.entry();
        let user_key = entry.user_key();
        let seq = entry.seq();
        let new_key = !any || last_key.as_slice() != user_key;
        if new_key {
            any = true;
            newer_visible_to_all = false;
            // Cut the output between user keys only: when full, and at
            // range boundaries and range tombstones' bounds.
            let must_cut = cutter.crosses(user_key);
            if let Some(full) =
                writer.take_if(|w| must_cut || w.estimated_size() >= ctx.options.table_bytes_max)
            {
                let table = full.finish(output_level as u8)?;
                written += table.size;
                outputs.push(table);
            }
            last_key.clear();
            last_key.extend_from_slice(user_key);
        }
        let drop = if newer_visible_to_all
            || (!version.tombstones.is_empty()
                && tombstones::cover(&version.tombstones, user_key, oldest_snapshot) > seq)
            || !retain.contains(user_key)
        {
            true
        } else {
            entry.is_delete()
                && seq <= oldest_snapshot
                && is_bottom_for(version, output_level, user_key)
        };
        if seq <= oldest_snapshot {
            newer_visible_to_all = true;
        }
        if drop {
            continue;
        }
        let writer = match &mut writer {
            Some(writer) => writer,
            None => writer.insert(new_writer(ctx, output_level)?),
        };
        writer.add(entry)?;
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
