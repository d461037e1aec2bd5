//! Range operations on an open database: split, merge, the automatic
//! splits, and the per-range figures.
//!
//! A split or merge holds the layout lock exclusively: no flush or
//! compaction is between picking its inputs and installing its outputs, so
//! none can install a table that spans the new map's boundaries. Writes and
//! reads go on throughout: the memtable and the log are shared by all
//! ranges, so a split or merge changes only the version, and a version is
//! installed atomically (readers see the old map and tables or the new
//! ones). A split first rewrites the tables that straddle the split key
//! (at most one per level of 1 and below, plus level-0 tables), then logs
//! one edit that swaps them for their halves and installs the new map; a
//! merge logs the new map alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_format::manifest::VersionEdit;

use super::Inner;
use super::background;
use crate::compaction::pick::level_target_bytes;
use crate::compaction::worker;
use crate::error::{Error, Result};
use crate::ranges::map::RangeId;
use crate::ranges::stats::{RangeInfo, Router};
use crate::seqno::SeqNo;
use crate::version::{LEVEL_COUNT, Version};

impl Inner {
    /// Takes the layout lock exclusively, counting the wait (for the
    /// flush or compactions in flight).
    fn layout_exclusive(&self) -> parking_lot::RwLockWriteGuard<'_, ()> {
        let started = std::time::Instant::now();
        let guard = self.layout.write();
        self.counters
            .range_change_wait_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        guard
    }

    /// Splits the range holding `at` into `[start, at)` and `[at, end)`.
    pub(crate) fn split_range(&self, at: &[u8], why: &str) -> Result<(RangeId, RangeId)> {
        let _layout = self.layout_exclusive();
        let version = Arc::clone(&self.current.read());
        let index = version.ranges.index_of(at);
        let map = version
            .ranges
            .split(index, at, why)
            .map_err(Error::InvalidArgument)?;
        self.split_locked(&version, index, at, map)
    }

    /// Splits range `id` at `at` if the range still exists (automatic
    /// splits decide before they take the lock).
    fn split_range_by_id(&self, id: RangeId, at: &[u8], why: &str) -> Result<()> {
        let _layout = self.layout_exclusive();
        let version = Arc::clone(&self.current.read());
        let Some(index) = version.ranges.position(id) else {
            return Ok(());
        };
        let Ok(map) = version.ranges.split(index, at, why) else {
            return Ok(());
        };
        self.split_locked(&version, index, at, map).map(|_| ())
    }

    fn split_locked(
        &self,
        version: &Version,
        index: usize,
        at: &[u8],
        map: crate::ranges::map::RangeMap,
    ) -> Result<(RangeId, RangeId)> {
        let new_number = || self.versions.lock().new_file_number();
        let ctx = background::context(self, &new_number);
        let mut edit = VersionEdit::default();
        let mut written = 0;
        for (level, tables) in version.levels.iter().enumerate() {
            for table in tables {
                if table.smallest_user_key() < at && at <= table.largest_user_key() {
                    let (halves, bytes) = worker::split_table(&ctx, table, level, at)?;
                    edit.deleted.push((level as u8, table.number));
                    edit.added.extend(halves);
                    written += bytes.written;
                }
            }
        }
        let ids = match map.ranges().get(index..=index + 1) {
            Some([left, right]) => (left.id, right.id),
            _ => {
                return Err(Error::InvalidArgument(
                    "split produced no two ranges".into(),
                ));
            }
        };
        edit.ranges = Some(map.to_record());
        self.install_layout(edit)?;
        self.counters
            .split_bytes_written
            .fetch_add(written, Ordering::Relaxed);
        self.counters.splits.fetch_add(1, Ordering::Relaxed);
        Ok(ids)
    }

    /// (After a flush) rewrites every table holding keys outside the
    /// retained ranges so that no table file holds one (tables wholly
    /// outside were dropped at open). Returns the bytes written.
    pub(crate) fn purge_outside_retained(&self) -> Result<u64> {
        if self.retain.is_everything() {
            return Ok(0);
        }
        let _layout = self.layout_exclusive();
        let version = Arc::clone(&self.current.read());
        let new_number = || self.versions.lock().new_file_number();
        let ctx = background::context(self, &new_number);
        let retain = &self.retain;
        let keep = |key: &[u8]| retain.contains(key);
        let mut edit = VersionEdit::default();
        let mut written = 0;
        for (level, tables) in version.levels.iter().enumerate() {
            for table in tables {
                let (smallest, largest) = (table.smallest_user_key(), table.largest_user_key());
                if !retain.overlaps(smallest, largest) {
                    edit.deleted.push((level as u8, table.number));
                } else if !(retain.contains(smallest)
                    && retain.contains(largest)
                    && retain.same_interval(smallest, largest))
                {
                    let (output, bytes) = worker::filter_table(&ctx, table, level, &keep)?;
                    edit.deleted.push((level as u8, table.number));
                    edit.added.extend(output);
                    written += bytes.written;
                }
            }
        }
        // The replaced tables' files go once no version holds them: not
        // this one either.
        drop(version);
        if !edit.deleted.is_empty() {
            self.install_layout(edit)?;
        }
        Ok(written)
    }

    /// Merges ranges `left` and `right`, which must be adjacent in that
    /// order.
    pub(crate) fn merge_ranges(&self, left: RangeId, right: RangeId) -> Result<RangeId> {
        let _layout = self.layout_exclusive();
        let version = Arc::clone(&self.current.read());
        let position = |id: RangeId| {
            version
                .ranges
                .position(id)
                .ok_or_else(|| Error::InvalidArgument(format!("no {id} in the range map")))
        };
        let (l, r) = (position(left)?, position(right)?);
        if r != l + 1 {
            return Err(Error::InvalidArgument(format!(
                "{left} and {right} are not adjacent in that order (they are ranges {l} and {r} of {})",
                version.ranges.len()
            )));
        }
        let map = version
            .ranges
            .merge(l, "requested")
            .map_err(Error::InvalidArgument)?;
        let id = map
            .ranges()
            .get(l)
            .map(|r| r.id)
            .ok_or_else(|| Error::InvalidArgument("merge produced no range".into()))?;
        let edit = VersionEdit {
            ranges: Some(map.to_record()),
            ..Default::default()
        };
        self.install_layout(edit)?;
        self.counters.merges.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Logs and installs an edit that changes the range map, and points the
    /// router at the new map (under the version-set lock, so routing follows
    /// versions in order).
    fn install_layout(&self, edit: VersionEdit) -> Result<()> {
        let mut versions = self.versions.lock();
        let installed = versions.log_and_apply(edit)?;
        *self.current.write() = Arc::clone(&installed);
        let mut router = self.router.write();
        *router = Arc::new(router.remap(Arc::clone(&installed.ranges)));
        drop(router);
        self.publish_view();
        drop(versions);
        background::refresh_stall_hint(self);
        background::delete_obsolete(self)?;
        let mut work = self.work.lock();
        work.generation += 1;
        self.work_changed.notify_all();
        Ok(())
    }

    /// Splits ranges over the size or write-rate thresholds (called by
    /// the compaction threads between jobs).
    pub(crate) fn auto_split(&self) -> Result<()> {
        let options = &self.options;
        let router = Arc::clone(&self.router.read());
        let hot = self.rates.sample(
            &router,
            options.range_split_writes_per_sec,
            options.range_split_rate_window,
        );
        let version = Arc::clone(&self.current.read());
        let per_range = version.split_by_range();
        for (range, own) in version.ranges.ranges().iter().zip(&per_range) {
            let bytes: u64 = (0..LEVEL_COUNT).map(|l| own.level_bytes(l)).sum();
            let why = if options.range_split_bytes > 0 && bytes > options.range_split_bytes {
                format!(
                    "size: {bytes} bytes of tables over range_split_bytes {}",
                    options.range_split_bytes
                )
            } else if hot.contains(&range.id) {
                format!(
                    "write rate: over {} writes/s for {:?} (range_split_writes_per_sec)",
                    options.range_split_writes_per_sec, options.range_split_rate_window
                )
            } else {
                continue;
            };
            let Some(at) = median_key(own, &range.start) else {
                continue;
            };
            self.split_range_by_id(range.id, &at, &why)?;
            // One split per pass: the map changed.
            return Ok(());
        }
        Ok(())
    }

    /// The figures of every range, in key order.
    pub(crate) fn range_infos(&self) -> Vec<RangeInfo> {
        let memtables = self.memtables_newest_first();
        let version = Arc::clone(&self.current.read());
        let router: Arc<Router> = Arc::clone(&self.router.read());
        let policy = background::policy(self);
        let per_range = version.split_by_range();
        version
            .ranges
            .ranges()
            .iter()
            .zip(&per_range)
            .map(|(range, own)| {
                let tables = own.levels.iter().flatten();
                let table_entries: u64 = tables.clone().map(|t| t.entries).sum();
                let memtable_entries: u64 = memtables
                    .iter()
                    .map(|m| m.count_in(&range.start, range.end.as_deref()) as u64)
                    .sum();
                let counters = router
                    .map
                    .position(range.id)
                    .and_then(|i| router.counters.get(i));
                let load =
                    |f: fn(&crate::ranges::stats::Counters) -> u64| counters.map_or(0, |c| f(c));
                let rates = self.rates.of(range.id);
                RangeInfo {
                    id: range.id,
                    start: range.start.clone(),
                    end: range.end.clone(),
                    origin: range.origin.clone(),
                    table_bytes: (0..LEVEL_COUNT).map(|l| own.level_bytes(l)).sum(),
                    level_tables: own.levels.iter().map(|t| t.len() as u64).collect(),
                    approximate_keys: table_entries + memtable_entries,
                    writes: load(|c| c.writes.load(Ordering::Relaxed)),
                    write_bytes: load(|c| c.write_bytes.load(Ordering::Relaxed)),
                    reads: load(|c| c.reads.load(Ordering::Relaxed)),
                    writes_per_sec: rates.writes_per_sec,
                    write_bytes_per_sec: rates.write_bytes_per_sec,
                    reads_per_sec: rates.reads_per_sec,
                    pending_compaction_bytes: (1..LEVEL_COUNT)
                        .map(|l| {
                            own.level_bytes(l)
                                .saturating_sub(level_target_bytes(&policy, l))
                        })
                        .sum(),
                    last_applied_seq: SeqNo(load(|c| c.last_seq.load(Ordering::Relaxed))),
                }
            })
            .collect()
    }
}

/// A key that splits `own` (one range's tables) about in half by bytes: the
/// smallest key of the table where the running total passes half, so that
/// table and every table of its level after it fall on the right side.
/// `None` if no such key lies above the range's start.
fn median_key(own: &Version, start: &[u8]) -> Option<Vec<u8>> {
    let mut tables: Vec<_> = own.levels.iter().flatten().collect();
    tables.sort_by(|a, b| a.smallest_user_key().cmp(b.smallest_user_key()));
    let total: u64 = tables.iter().map(|t| t.size).sum();
    let mut running = 0;
    for table in &tables {
        if running >= total / 2 && table.smallest_user_key() > start {
            return Some(table.smallest_user_key().to_vec());
        }
        running += table.size;
    }
    tables
        .iter()
        .rev()
        .map(|t| t.smallest_user_key())
        .find(|k| *k > start)
        .map(<[u8]>::to_vec)
}
