//! Writing one sorted table file: entries in internal order in, a synced
//! file and its manifest entry out.

use std::path::PathBuf;
use std::sync::Arc;

use crate::env::FileSystem;
use crate::error::{Error, Result};
use crate::merge::EntryRef;

/// Writes one table file: entries in internal order go in, a synced file
/// and its manifest entry come out.
pub(crate) struct TableWriter {
    path: PathBuf,
    number: u64,
    file: Arc<dyn crate::env::File>,
    builder: strata_format::table::TableBuilder,
    offset: u64,
    smallest: Option<Vec<u8>>,
    largest: Vec<u8>,
    smallest_seq: u64,
    largest_seq: u64,
    entries: u64,
    /// Entries with the same user key as the entry before them.
    obsolete_entries: u64,
    last_user_key: Vec<u8>,
}

/// Output is drained to the file whenever this much has accumulated.
const DRAIN_BYTES: usize = 1 << 20;

impl TableWriter {
    pub(crate) fn create(
        fs: &dyn FileSystem,
        path: PathBuf,
        number: u64,
        options: strata_format::table::TableOptions,
    ) -> Result<TableWriter> {
        let file = fs
            .open(&path, crate::env::OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &path, e))?;
        Ok(TableWriter {
            path,
            number,
            file,
            builder: strata_format::table::TableBuilder::new(options),
            offset: 0,
            smallest: None,
            largest: Vec::new(),
            smallest_seq: u64::MAX,
            largest_seq: 0,
            entries: 0,
            obsolete_entries: 0,
            last_user_key: Vec::new(),
        })
    }

    /// Adds an entry; entries must come in internal order.
    pub(crate) fn add(&mut self, entry: EntryRef<'_>) -> Result<()> {
        let value = if entry.is_delete() {
            &[][..]
        } else {
            entry.value
        };
        self.builder.add(entry.internal_key, value);
        if self.smallest.is_none() {
            self.smallest = Some(entry.internal_key.to_vec());
        }
        self.largest.clear();
        self.largest.extend_from_slice(entry.internal_key);
        let seq = entry.seq();
        self.smallest_seq = self.smallest_seq.min(seq);
        self.largest_seq = self.largest_seq.max(seq);
        let user_key = entry.user_key();
        if self.entries > 0 && self.last_user_key == user_key {
            self.obsolete_entries += 1;
        } else {
            self.last_user_key.clear();
            self.last_user_key.extend_from_slice(user_key);
        }
        self.entries += 1;
        if self.builder.estimated_file_size() - self.offset >= DRAIN_BYTES as u64 {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<()> {
        let bytes = self.builder.take_output();
        self.file
            .write_all_at(&bytes, self.offset)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    pub(crate) fn estimated_size(&self) -> u64 {
        self.builder.estimated_file_size()
    }

    /// Finishes and syncs the file; returns its manifest entry for `level`.
    /// The caller syncs the directory before the manifest names the file.
    pub(crate) fn finish(mut self, level: u8) -> Result<strata_format::manifest::TableEntry> {
        self.drain()?;
        let finished = self.builder.finish();
        self.file
            .write_all_at(&finished.tail, self.offset)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        Ok(strata_format::manifest::TableEntry {
            level,
            number: self.number,
            size: finished.file_size,
            smallest: self.smallest.unwrap_or_default(),
            largest: self.largest,
            smallest_seq: self.smallest_seq.min(self.largest_seq),
            largest_seq: self.largest_seq,
            entries: self.entries,
            obsolete_entries: self.obsolete_entries,
        })
    }
}
