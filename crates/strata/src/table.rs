//! Sorted tables as the engine reads them: open (mapped) tables, a cache of
//! open tables, point lookups, and cursors for scans and compactions.
//!
//! The byte format and its verification live in `strata_format::table`;
//! this module adds files: a table is mapped once
//! ([`crate::env::FileSystem::map`]), checked against the size the manifest
//! recorded, and kept open while any version references it.
//!
//! Thread-safety: [`Table`] is immutable and shared (`Arc`); a
//! [`TableCursor`] belongs to one thread.
//!
//! Invariants: a table is never read past a failed check: any
//! `DecodeError` becomes [`Error::Corruption`] naming the file.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use self_cell::self_cell;
use strata_format::key::{MAX_SEQ, ValueKind, encode_internal_key};
use strata_format::table::{TableIter, TableReader};

use crate::db::iterator::KeyRange;
use crate::env::{FileSystem, Mapped};
use crate::error::{Error, Result};
use crate::merge::{Cursor, EntryRef};

self_cell!(
    struct OpenTable {
        owner: Mapped,
        #[covariant]
        dependent: TableReader,
    }
);

/// One open sorted table.
pub(crate) struct Table {
    number: u64,
    path: PathBuf,
    cell: OpenTable,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("number", &self.number)
            .finish()
    }
}

impl Table {
    /// Maps and opens table `number` at `path`, which must be `size` bytes.
    pub(crate) fn open(
        fs: &dyn FileSystem,
        path: &Path,
        number: u64,
        size: u64,
        blocks: Option<Arc<BlockCache>>,
    ) -> Result<Table> {
        let bytes = fs.map(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::corruption_msg(path, 0, "a table the manifest names is missing")
            }
            _ => Error::io("map", path, e),
        })?;
        let cell = OpenTable::try_new(bytes, |bytes| {
            let mut reader = TableReader::open(bytes, size)?;
            if let Some(blocks) = blocks {
                reader.set_block_cache(blocks, number);
            }
            Ok(reader)
        })
        .map_err(|e| Error::corruption(path, e))?;
        Ok(Table {
            number,
            path: path.to_path_buf(),
            cell,
        })
    }

    /// The newest version of `key` at or below `seq` in this table, with
    /// its value copied into `value` (cleared first; left empty for a
    /// tombstone): `Some((seq, true))` for a value, `Some((seq, false))`
    /// for a tombstone, `None` if absent. Allocates only if `value` must
    /// grow.
    /// `hash` is the key's `filter_hash`.
    pub(crate) fn get_into(
        &self,
        key: &[u8],
        hash: u64,
        seq: u64,
        value: &mut Vec<u8>,
    ) -> Result<Option<(u64, bool)>> {
        let found = self
            .cell
            .borrow_dependent()
            .get_versioned_hashed(key, hash, seq)
            .map_err(|e| Error::corruption(&self.path, e))?;
        value.clear();
        Ok(found.map(|(kind, found_seq, bytes)| match kind {
            ValueKind::Put => {
                value.extend_from_slice(&bytes);
                (found_seq, true)
            }
            _ => (found_seq, false),
        }))
    }

    /// Checks every block's checksum and structure.
    pub(crate) fn verify(&self) -> Result<()> {
        self.cell
            .borrow_dependent()
            .verify()
            .map_err(|e| Error::corruption(&self.path, e))
    }
}

/// The block cache: verified, decompressed data blocks by (table, offset),
/// weighted by size, evicted by `quick_cache`'s CLOCK-Pro policy.
#[derive(Debug)]
pub(crate) struct BlockCache {
    cache: quick_cache::sync::Cache<(u64, u64), Arc<[u8]>, BlockWeighter>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone)]
struct BlockWeighter;

impl quick_cache::Weighter<(u64, u64), Arc<[u8]>> for BlockWeighter {
    fn weight(&self, _key: &(u64, u64), block: &Arc<[u8]>) -> u64 {
        // The block and the cache's bookkeeping for it.
        block.len() as u64 + 64
    }
}

impl BlockCache {
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        let items = (capacity_bytes / 4096).max(16) as usize;
        Self {
            cache: quick_cache::sync::Cache::with_weighter(items, capacity_bytes, BlockWeighter),
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    /// (hits, misses) since open.
    pub(crate) fn hit_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }
}

impl strata_format::table::BlockCache for BlockCache {
    fn get(&self, table_id: u64, offset: u64) -> Option<Arc<[u8]>> {
        use std::sync::atomic::Ordering::Relaxed;
        let found = self.cache.get(&(table_id, offset));
        if found.is_some() {
            &self.hits
        } else {
            &self.misses
        }
        .fetch_add(1, Relaxed);
        found
    }

    fn insert(&self, table_id: u64, offset: u64, block: Arc<[u8]>) {
        self.cache.insert((table_id, offset), block);
    }
}

/// Open tables by number, so that each is mapped once.
#[derive(Debug, Default)]
pub(crate) struct TableCache {
    tables: Mutex<HashMap<u64, Arc<Table>>>,
    lookups: std::sync::atomic::AtomicU64,
    hits: std::sync::atomic::AtomicU64,
    blocks: Option<Arc<BlockCache>>,
}

impl TableCache {
    /// A cache of open tables, with a block cache of `block_cache_bytes`
    /// (none if 0).
    pub(crate) fn new(block_cache_bytes: u64) -> Self {
        let blocks = (block_cache_bytes > 0).then(|| Arc::new(BlockCache::new(block_cache_bytes)));
        Self {
            blocks,
            ..Self::default()
        }
    }

    /// The block cache's (hits, misses).
    pub(crate) fn block_hit_counts(&self) -> (u64, u64) {
        self.blocks.as_ref().map_or((0, 0), |b| b.hit_counts())
    }

    pub(crate) fn get_or_open(
        &self,
        fs: &dyn FileSystem,
        path: &Path,
        number: u64,
        size: u64,
    ) -> Result<Arc<Table>> {
        use std::sync::atomic::Ordering::Relaxed;
        self.lookups.fetch_add(1, Relaxed);
        if let Some(table) = self.tables.lock().get(&number) {
            self.hits.fetch_add(1, Relaxed);
            return Ok(Arc::clone(table));
        }
        let table = Arc::new(Table::open(fs, path, number, size, self.blocks.clone())?);
        self.tables
            .lock()
            .entry(number)
            .or_insert_with(|| Arc::clone(&table));
        Ok(table)
    }

    /// (hits, lookups) since open.
    pub(crate) fn hit_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.lookups.load(Relaxed))
    }

    /// Forgets tables that are no longer live (readers holding one keep it).
    pub(crate) fn retain(&self, live: impl Fn(u64) -> bool) {
        self.tables.lock().retain(|&number, _| live(number));
    }
}

type Iter<'x> = TableIter<'x, 'x>;

self_cell!(
    struct CursorCell {
        owner: Arc<Table>,
        #[not_covariant]
        dependent: Iter,
    }
);

/// A cursor over one table's entries (every version) in one direction,
/// from the start (forward) or end (backward) of a key range.
pub(crate) struct TableCursor {
    cell: CursorCell,
    forward: bool,
    started: bool,
    /// The scan's range (shared by all its cursors).
    range: Arc<KeyRange>,
}

impl TableCursor {
    pub(crate) fn new(table: Arc<Table>, range: Arc<KeyRange>, forward: bool) -> Self {
        let cell = CursorCell::new(table, |table| table.cell.borrow_dependent().iter());
        Self {
            cell,
            forward,
            started: false,
            range,
        }
    }

    /// Positions on the first entry in the cursor's direction; returns
    /// whether there is one.
    fn position(&mut self) -> std::result::Result<bool, strata_format::DecodeError> {
        let forward = self.forward;
        let range = Arc::clone(&self.range);
        let start = if forward { &range.start } else { &range.end };
        self.cell.with_dependent_mut(|_, iter| {
            let target = |user_key: &[u8], seq: u64, kind: ValueKind| {
                let mut key = Vec::with_capacity(user_key.len() + 8);
                encode_internal_key(user_key, seq, kind, &mut key);
                key
            };
            if forward {
                match start {
                    Bound::Unbounded => iter.seek_to_first(),
                    Bound::Included(k) => iter.seek(&target(k, MAX_SEQ, ValueKind::FOR_SEEK)),
                    Bound::Excluded(k) => {
                        let mut valid = iter.seek(&target(k, 0, ValueKind::Delete))?;
                        while valid
                            && iter
                                .current()
                                .is_some_and(|(key, _)| key.user_key == k.as_slice())
                        {
                            valid = iter.next()?;
                        }
                        Ok(valid)
                    }
                }
            } else {
                match start {
                    Bound::Unbounded => iter.seek_to_last(),
                    Bound::Included(k) => {
                        if iter.seek(&target(k, 0, ValueKind::Delete))? {
                            if iter
                                .current()
                                .is_some_and(|(key, _)| key.user_key == k.as_slice())
                            {
                                Ok(true)
                            } else {
                                iter.prev()
                            }
                        } else {
                            iter.seek_to_last()
                        }
                    }
                    Bound::Excluded(k) => {
                        if iter.seek(&target(k, MAX_SEQ, ValueKind::FOR_SEEK))? {
                            iter.prev()
                        } else {
                            iter.seek_to_last()
                        }
                    }
                }
            }
        })
    }
}

impl Cursor for TableCursor {
    fn advance(&mut self) -> Result<bool> {
        let valid = if self.started {
            let forward = self.forward;
            self.cell
                .with_dependent_mut(|_, iter| if forward { iter.next() } else { iter.prev() })
        } else {
            self.started = true;
            self.position()
        };
        valid.map_err(|e| Error::corruption(&self.cell.borrow_owner().path, e))
    }

    fn entry(&self) -> EntryRef<'_> {
        self.cell
            .with_dependent(|_, iter| match iter.current_raw() {
                Some((internal_key, value)) => EntryRef {
                    internal_key,
                    value,
                },
                None => EntryRef::EMPTY,
            })
    }
}

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

/// Opens a table of a version (through the database's table cache).
pub(crate) type OpenFn = Box<dyn Fn(&crate::version::TableMeta) -> Result<Arc<Table>> + Send>;

/// A cursor over the tables of one level of 1 or below, which do not
/// overlap: it opens and positions only the table the scan is in, moving to
/// the next one (in the scan's direction) when it is exhausted.
pub(crate) struct LevelCursor {
    /// The version whose level this walks (held, not copied).
    version: Arc<crate::version::Version>,
    level: usize,
    /// The level's tables that overlap the range: `tables[first..end]`.
    first: usize,
    end: usize,
    /// How many tables were started, from the front (forward) or back.
    started: usize,
    current: Option<TableCursor>,
    range: Arc<KeyRange>,
    forward: bool,
    open: OpenFn,
}

impl LevelCursor {
    /// A cursor over `version`'s level `level` (1 or deeper: tables in key
    /// order, not overlapping), restricted to the tables overlapping
    /// `range`; `None` if there are none.
    pub(crate) fn new(
        version: Arc<crate::version::Version>,
        level: usize,
        range: Arc<KeyRange>,
        forward: bool,
        open: OpenFn,
    ) -> Option<Self> {
        let tables = version.levels.get(level)?;
        let (start, end) = range.user_bounds();
        let first = start.map_or(0, |s| tables.partition_point(|t| t.largest_user_key() < s));
        let end = end.map_or(tables.len(), |e| {
            tables.partition_point(|t| t.smallest_user_key() <= e)
        });
        (first < end).then_some(Self {
            version,
            level,
            first,
            end,
            started: 0,
            current: None,
            range,
            forward,
            open,
        })
    }
}

impl Cursor for LevelCursor {
    fn advance(&mut self) -> Result<bool> {
        loop {
            if let Some(cursor) = &mut self.current {
                if cursor.advance()? {
                    return Ok(true);
                }
                self.current = None;
            }
            let count = self.end - self.first;
            if self.started == count {
                return Ok(false);
            }
            let index = if self.forward {
                self.first + self.started
            } else {
                self.end - 1 - self.started
            };
            self.started += 1;
            let Some(meta) = self
                .version
                .levels
                .get(self.level)
                .and_then(|t| t.get(index))
            else {
                return Ok(false);
            };
            let table = (self.open)(meta)?;
            self.current = Some(TableCursor::new(
                table,
                Arc::clone(&self.range),
                self.forward,
            ));
        }
    }

    fn entry(&self) -> EntryRef<'_> {
        self.current.as_ref().map_or(EntryRef::EMPTY, Cursor::entry)
    }
}
