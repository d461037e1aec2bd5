//! Figures about a database ([`Db::stats`]).

use super::*;

/// Figures about a database, from [`Db::stats`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DbStats {
    /// The last visible sequence number.
    pub last_seq: SeqNo,
    /// The last sequence number known durable.
    pub durable_seq: SeqNo,
    /// Every operation at or below this is in sorted tables.
    pub flushed_seq: SeqNo,
    /// Tables per level.
    pub level_tables: Vec<u64>,
    /// Bytes per level.
    pub level_bytes: Vec<u64>,
    /// Approximate bytes held by memtables (active and frozen).
    pub memtable_bytes: u64,
    /// Frozen memtables waiting for flush.
    pub immutable_memtables: u64,
    /// Bytes of the memtables' hash indexes (fixed per memtable, apart from
    /// `memtable_bytes`).
    pub memtable_index_bytes: u64,
    /// Live snapshots.
    pub snapshots: u64,
    /// Flushes completed.
    pub flushes: u64,
    /// Bytes written by flushes.
    pub flush_bytes_written: u64,
    /// Compactions completed (trivial moves included).
    pub compactions: u64,
    /// Bytes compactions read.
    pub compaction_bytes_read: u64,
    /// Bytes compactions wrote.
    pub compaction_bytes_written: u64,
    /// Bytes written to disk (log, flushes, compactions) per byte of log:
    /// the write amplification.
    pub write_amplification: f64,
    /// Writes that were delayed or stopped, by reason.
    pub stalls: BTreeMap<&'static str, u64>,
    /// Microseconds writes spent stalled, by reason.
    pub stall_micros: BTreeMap<&'static str, u64>,
    /// Table-cache lookups that found the table already open, and all
    /// lookups.
    pub table_cache_hits: u64,
    /// All table-cache lookups.
    pub table_cache_lookups: u64,
    /// Block-cache lookups that found the block.
    pub block_cache_hits: u64,
    /// Block-cache lookups that had to read and verify the block.
    pub block_cache_misses: u64,
    /// The commit log's counters since open (bytes, fsyncs, group sizes).
    pub wal: WalStats,
    /// Segment files the commit log retains.
    pub wal_segments: u64,
    /// Range splits since open (requested and automatic).
    pub range_splits: u64,
    /// Bytes splits wrote rewriting the tables that straddled their keys.
    pub range_split_bytes_written: u64,
    /// Range merges since open.
    pub range_merges: u64,
    /// Microseconds splits and merges waited for flushes and compactions in
    /// flight before they could change the range map (writes never wait).
    pub range_change_wait_micros: u64,
    /// Flushed range tombstones still held (each until compaction has
    /// dropped what it hides).
    pub range_tombstones: u64,
    /// Every key range's figures, as [`Db::ranges`] gives them.
    pub ranges: Vec<RangeInfo>,
}

impl Inner {
    pub(super) fn stats(&self) -> DbStats {
        let version = Arc::clone(&self.current.read());
        let (memtable_bytes, memtable_index_bytes, frozen) = {
            let mem = self.mem.read();
            let all = || std::iter::once(&mem.active).chain(&mem.frozen);
            (
                all().map(|m| m.approximate_bytes() as u64).sum(),
                all().map(|m| m.index_bytes() as u64).sum(),
                mem.frozen.len() as u64,
            )
        };
        let c = &self.counters;
        let wal = self.wal.stats();
        let flush_bytes = c.flush_bytes_written.load(Ordering::Relaxed);
        let compaction_written = c.compaction_bytes_written.load(Ordering::Relaxed);
        let split_written = c.split_bytes_written.load(Ordering::Relaxed);
        let write_amplification = if wal.bytes_written == 0 {
            0.0
        } else {
            (wal.bytes_written + flush_bytes + compaction_written + split_written) as f64
                / wal.bytes_written as f64
        };
        let (stalls, stall_micros) = c.stalls();
        let (table_cache_hits, table_cache_lookups) = self.tables.hit_counts();
        let (block_cache_hits, block_cache_misses) = self.tables.block_hit_counts();
        DbStats {
            last_seq: SeqNo(self.visibility.visible()),
            durable_seq: self.wal.durable_seq(),
            // Not the version set's lock: flushes hold it across the
            // manifest's fsync.
            flushed_seq: SeqNo(self.flushed.load(Ordering::Relaxed)),
            level_tables: version.levels.iter().map(|t| t.len() as u64).collect(),
            level_bytes: (0..LEVEL_COUNT).map(|l| version.level_bytes(l)).collect(),
            memtable_bytes,
            immutable_memtables: frozen,
            memtable_index_bytes,
            snapshots: self.snapshots.lock().values().map(|&n| n as u64).sum(),
            flushes: c.flushes.load(Ordering::Relaxed),
            flush_bytes_written: flush_bytes,
            compactions: c.compactions.load(Ordering::Relaxed),
            compaction_bytes_read: c.compaction_bytes_read.load(Ordering::Relaxed),
            compaction_bytes_written: compaction_written,
            write_amplification,
            stalls,
            stall_micros,
            table_cache_hits,
            table_cache_lookups,
            block_cache_hits,
            block_cache_misses,
            wal,
            wal_segments: self.wal.segment_count() as u64,
            range_splits: c.splits.load(Ordering::Relaxed),
            range_split_bytes_written: c.split_bytes_written.load(Ordering::Relaxed),
            range_merges: c.merges.load(Ordering::Relaxed),
            range_change_wait_micros: c.range_change_wait_micros.load(Ordering::Relaxed),
            range_tombstones: version.tombstones.len() as u64,
            ranges: self.range_infos(),
        }
    }
}
