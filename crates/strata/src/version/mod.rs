//! Versions: which sorted tables make up the database, level by level.
//!
//! A [`Version`] is immutable: readers pin one (`Arc<Version>`) and read
//! from it without locks while flushes and compactions install new ones.
//! The [`set::VersionSet`] owns the current version and the manifest that
//! records every change.
//!
//! Invariants:
//! - Level 0 tables may overlap; they are kept newest first (by largest
//!   sequence number, then file number).
//! - Tables of level 1 and below do not overlap in user keys and are kept
//!   in key order.
//! - A table number appears at most once in a version.
//! - No table spans a boundary of the version's range map: each lies in
//!   one range, so a range's tables are those whose smallest key it holds.
//! - Range tombstones are kept sorted by start (as
//!   [`crate::ranges::tombstones::cover`] needs).

pub(crate) mod set;

use std::sync::Arc;

use strata_format::manifest::{LEVELS, TableEntry, TombstoneEntry, VersionEdit};

use crate::error::{Error, Result};
use crate::ranges::map::RangeMap;
use crate::ranges::tombstones;

/// The number of levels, as a `usize`.
pub(crate) const LEVEL_COUNT: usize = LEVELS as usize;

/// A table as versions know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableMeta {
    pub(crate) number: u64,
    pub(crate) size: u64,
    /// Smallest and largest internal keys (user key and an 8-byte trailer).
    pub(crate) smallest: Vec<u8>,
    pub(crate) largest: Vec<u8>,
    pub(crate) smallest_seq: u64,
    pub(crate) largest_seq: u64,
    pub(crate) entries: u64,
    /// Older versions of a key kept only for snapshots (garbage once no
    /// snapshot needs them).
    pub(crate) obsolete_entries: u64,
    /// The open table, once a reader has opened it (then shared by every
    /// version that holds this table, without a lookup).
    pub(crate) handle: TableHandle,
}

/// The open table behind a [`TableMeta`], set once by the first reader
/// that opens it. Compares equal to any other (it caches, it does not
/// describe).
#[derive(Default, Clone)]
pub(crate) struct TableHandle(std::sync::OnceLock<Arc<crate::table::Table>>);

impl TableHandle {
    /// The open table, opening it with `open` the first time.
    pub(crate) fn get_or_open(
        &self,
        open: impl FnOnce() -> Result<Arc<crate::table::Table>>,
    ) -> Result<&Arc<crate::table::Table>> {
        if let Some(table) = self.0.get() {
            return Ok(table);
        }
        let table = open()?;
        Ok(self.0.get_or_init(|| table))
    }
}

impl PartialEq for TableHandle {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for TableHandle {}

impl std::fmt::Debug for TableHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "open"
        } else {
            "not open"
        })
    }
}

impl TableMeta {
    pub(crate) fn from_entry(entry: &TableEntry) -> Self {
        Self {
            number: entry.number,
            size: entry.size,
            smallest: entry.smallest.clone(),
            largest: entry.largest.clone(),
            smallest_seq: entry.smallest_seq,
            largest_seq: entry.largest_seq,
            entries: entry.entries,
            obsolete_entries: entry.obsolete_entries,
            handle: TableHandle::default(),
        }
    }

    pub(crate) fn to_entry(&self, level: usize) -> TableEntry {
        TableEntry {
            level: level as u8,
            number: self.number,
            size: self.size,
            smallest: self.smallest.clone(),
            largest: self.largest.clone(),
            smallest_seq: self.smallest_seq,
            largest_seq: self.largest_seq,
            entries: self.entries,
            obsolete_entries: self.obsolete_entries,
        }
    }

    pub(crate) fn smallest_user_key(&self) -> &[u8] {
        user_key(&self.smallest)
    }

    pub(crate) fn largest_user_key(&self) -> &[u8] {
        user_key(&self.largest)
    }

    /// Whether the table may hold `key`.
    pub(crate) fn may_contain(&self, key: &[u8]) -> bool {
        self.smallest_user_key() <= key && key <= self.largest_user_key()
    }

    /// Whether the table's keys overlap `[start, end]` (user keys,
    /// inclusive; `None` is unbounded).
    pub(crate) fn overlaps(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> bool {
        start.is_none_or(|s| self.largest_user_key() >= s)
            && end.is_none_or(|e| self.smallest_user_key() <= e)
    }
}

/// The user key of an internal key (everything but the 8-byte trailer).
pub(crate) fn user_key(internal: &[u8]) -> &[u8] {
    internal
        .get(..internal.len().saturating_sub(8))
        .unwrap_or_default()
}

/// An immutable set of tables, the range map they are cut by, and the
/// flushed range tombstones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Version {
    pub(crate) levels: [Vec<Arc<TableMeta>>; LEVEL_COUNT],
    pub(crate) ranges: Arc<RangeMap>,
    pub(crate) tombstones: Arc<Vec<TombstoneEntry>>,
    /// Level 0's tables by range index (each in level 0's order), so a
    /// point read consults only its own range's level-0 tables. Empty
    /// with a single range (level 0 itself serves).
    level0_by_range: Arc<Vec<Vec<Arc<TableMeta>>>>,
}

impl Version {
    /// The version after `edit`.
    ///
    /// # Errors
    /// [`Error::Corruption`] (naming `manifest`) if the edit deletes a table
    /// the version lacks, adds one it already has, or breaks the
    /// no-overlap rule of levels 1 and below.
    pub(crate) fn apply(&self, edit: &VersionEdit, manifest: &std::path::Path) -> Result<Version> {
        let mut next = self.clone();
        for &(level, number) in &edit.deleted {
            let tables = next
                .levels
                .get_mut(level as usize)
                .ok_or_else(|| bad(manifest, "level out of range"))?;
            let before = tables.len();
            tables.retain(|t| t.number != number);
            if tables.len() == before {
                return Err(bad(
                    manifest,
                    &format!("edit deletes table {number} from level {level}, which lacks it"),
                ));
            }
        }
        for entry in &edit.added {
            if next.contains(entry.number) {
                return Err(bad(
                    manifest,
                    &format!("edit adds table {} twice", entry.number),
                ));
            }
            let tables = next
                .levels
                .get_mut(entry.level as usize)
                .ok_or_else(|| bad(manifest, "level out of range"))?;
            tables.push(Arc::new(TableMeta::from_entry(entry)));
        }
        if let Some(record) = &edit.ranges {
            next.ranges = Arc::new(RangeMap::from_record(record));
        }
        if !edit.added_tombstones.is_empty() || !edit.removed_tombstones.is_empty() {
            let mut list = next.tombstones.as_ref().clone();
            for gone in &edit.removed_tombstones {
                let before = list.len();
                list.retain(|t| t != gone);
                if list.len() == before {
                    return Err(bad(
                        manifest,
                        &format!(
                            "edit removes a range tombstone at seq {} the version lacks",
                            gone.seq
                        ),
                    ));
                }
            }
            for added in &edit.added_tombstones {
                if !list.contains(added) {
                    list.push(added.clone());
                }
            }
            tombstones::sort(&mut list);
            next.tombstones = Arc::new(list);
        }
        next.sort();
        next.check(manifest)?;
        next.index_level0();
        Ok(next)
    }

    /// Rebuilds the per-range index of level 0 (after any change to the
    /// tables or the map).
    pub(crate) fn index_level0(&mut self) {
        if self.ranges.len() <= 1 {
            self.level0_by_range = Arc::default();
            return;
        }
        let mut by_range: Vec<Vec<Arc<TableMeta>>> = vec![Vec::new(); self.ranges.len()];
        for table in self.levels.first().into_iter().flatten() {
            if let Some(own) = by_range.get_mut(self.ranges.index_of(table.smallest_user_key())) {
                own.push(Arc::clone(table));
            }
        }
        self.level0_by_range = Arc::new(by_range);
    }

    fn sort(&mut self) {
        let [level0, deeper @ ..] = &mut self.levels;
        level0.sort_by(|a, b| {
            b.largest_seq
                .cmp(&a.largest_seq)
                .then(b.number.cmp(&a.number))
        });
        for tables in deeper {
            tables.sort_by(|a, b| a.smallest_user_key().cmp(b.smallest_user_key()));
        }
    }

    fn check(&self, manifest: &std::path::Path) -> Result<()> {
        for table in self.levels.iter().flatten() {
            let first = self.ranges.index_of(table.smallest_user_key());
            let last = self.ranges.index_of(table.largest_user_key());
            if first != last {
                return Err(bad(
                    manifest,
                    &format!(
                        "table {} spans the boundary between ranges at {} and {}",
                        table.number, first, last
                    ),
                ));
            }
        }
        for (level, tables) in self.levels.iter().enumerate().skip(1) {
            for pair in tables.windows(2) {
                if let [a, b] = pair
                    && a.largest_user_key() >= b.smallest_user_key()
                {
                    return Err(bad(
                        manifest,
                        &format!(
                            "tables {} and {} overlap in level {level}",
                            a.number, b.number
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn contains(&self, number: u64) -> bool {
        self.levels.iter().flatten().any(|t| t.number == number)
    }

    /// Every table number in this version.
    pub(crate) fn numbers(&self) -> impl Iterator<Item = u64> + '_ {
        self.levels.iter().flatten().map(|t| t.number)
    }

    /// The tables that may hold `key`, in the order a read must consult
    /// them (newest data first).
    pub(crate) fn tables_for_key<'a>(
        &'a self,
        key: &'a [u8],
    ) -> impl Iterator<Item = &'a Arc<TableMeta>> + 'a {
        let [all_level0, deeper @ ..] = &self.levels;
        let level0 = if self.level0_by_range.is_empty() || all_level0.is_empty() {
            all_level0
        } else {
            self.level0_by_range
                .get(self.ranges.index_of(key))
                .unwrap_or(all_level0)
        };
        level0
            .iter()
            .filter(move |t| t.may_contain(key))
            .chain(deeper.iter().filter_map(move |tables| {
                let index = tables.partition_point(|t| t.largest_user_key() < key);
                tables.get(index).filter(|t| t.may_contain(key))
            }))
    }

    /// Total bytes per level.
    pub(crate) fn level_bytes(&self, level: usize) -> u64 {
        self.levels
            .get(level)
            .map_or(0, |tables| tables.iter().map(|t| t.size).sum())
    }

    /// The edit that recreates this version from nothing.
    pub(crate) fn snapshot_edit(&self) -> VersionEdit {
        let mut edit = VersionEdit::default();
        for (level, tables) in self.levels.iter().enumerate() {
            edit.added.extend(tables.iter().map(|t| t.to_entry(level)));
        }
        edit.ranges = Some(self.ranges.to_record());
        edit.added_tombstones = self.tombstones.as_ref().clone();
        edit
    }

    /// Each range's tables alone (same map and tombstones), in the map's
    /// order: what the compaction policy sees of one range.
    pub(crate) fn split_by_range(&self) -> Vec<Version> {
        let mut out: Vec<Version> = (0..self.ranges.len())
            .map(|_| Version {
                levels: Default::default(),
                ranges: Arc::clone(&self.ranges),
                tombstones: Arc::clone(&self.tombstones),
                level0_by_range: Arc::default(),
            })
            .collect();
        for (level, tables) in self.levels.iter().enumerate() {
            for table in tables {
                let index = self.ranges.index_of(table.smallest_user_key());
                if let Some(own) = out.get_mut(index).and_then(|v| v.levels.get_mut(level)) {
                    own.push(Arc::clone(table));
                }
            }
        }
        out
    }

    /// The newest flushed range tombstone, visible at `read_seq`, that
    /// covers `key` (0 if none).
    pub(crate) fn tombstone_cover(&self, key: &[u8], read_seq: u64) -> u64 {
        if self.tombstones.is_empty() {
            return 0;
        }
        tombstones::cover(&self.tombstones, key, read_seq)
    }
}

fn bad(manifest: &std::path::Path, detail: &str) -> Error {
    Error::corruption_msg(manifest, 0, detail.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(level: u8, number: u64, small: &[u8], large: &[u8], seq: u64) -> TableEntry {
        let ikey = |k: &[u8]| {
            let mut v = k.to_vec();
            v.extend_from_slice(&((seq << 8) | 2).to_le_bytes());
            v
        };
        TableEntry {
            level,
            number,
            size: 100,
            smallest: ikey(small),
            largest: ikey(large),
            smallest_seq: seq,
            largest_seq: seq,
            entries: 1,
            obsolete_entries: 0,
        }
    }

    #[test]
    fn reads_consult_level0_newest_first_then_one_table_per_level() {
        let edit = VersionEdit {
            added: vec![
                entry(0, 1, b"a", b"m", 5),
                entry(0, 2, b"c", b"z", 9),
                entry(1, 3, b"a", b"f", 1),
                entry(1, 4, b"g", b"p", 1),
            ],
            ..Default::default()
        };
        let path = std::path::Path::new("MANIFEST");
        let version = Version::default().apply(&edit, path).unwrap();
        let order: Vec<u64> = version.tables_for_key(b"d").map(|t| t.number).collect();
        assert_eq!(order, vec![2, 1, 3]);
        let order: Vec<u64> = version.tables_for_key(b"q").map(|t| t.number).collect();
        assert_eq!(order, vec![2]);
    }

    #[test]
    fn impossible_edits_are_corruption() {
        let path = std::path::Path::new("MANIFEST");
        let v = Version::default();
        let del = VersionEdit {
            deleted: vec![(1, 9)],
            ..Default::default()
        };
        assert!(v.apply(&del, path).unwrap_err().is_corruption());
        let overlap = VersionEdit {
            added: vec![entry(1, 1, b"a", b"m", 1), entry(1, 2, b"k", b"z", 1)],
            ..Default::default()
        };
        assert!(
            v.apply(&overlap, path)
                .unwrap_err()
                .to_string()
                .contains("overlap")
        );
        let twice = VersionEdit {
            added: vec![entry(0, 1, b"a", b"m", 1), entry(2, 1, b"a", b"m", 1)],
            ..Default::default()
        };
        assert!(v.apply(&twice, path).is_err());
    }
}
