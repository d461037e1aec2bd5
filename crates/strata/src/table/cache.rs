//! The caches of sorted tables: open tables by number (each mapped once)
//! and verified data blocks by (table, offset).
//!
//! Thread-safety: both are shared by every reader; their locks are held
//! only to look up or insert, never across I/O.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::Table;
use crate::env::FileSystem;
use crate::error::Result;

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
