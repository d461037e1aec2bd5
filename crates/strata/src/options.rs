//! Options for opening a database, writing and reading.
//!
//! Every field documents its default; `Options::default()` is a sound
//! production configuration for a service with a few GiB of data.

use std::sync::Arc;
use std::time::Duration;

use crate::env::{FileSystem, RealFileSystem};
use crate::wal::RecoveryMode;

/// How to open a database.
///
/// # Examples
///
/// ```
/// use strata::Options;
/// let options = Options { value_bytes_max: 1 << 20, ..Options::default() };
/// assert!(options.create_if_missing);
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    /// Where every byte goes. Default: [`RealFileSystem`]; tests use
    /// `MemFileSystem` or `FaultFileSystem`.
    pub file_system: Arc<dyn FileSystem>,
    /// Create the database if the directory holds none. Default: `true`.
    pub create_if_missing: bool,
    /// Fail if a database already exists there. Default: `false`.
    pub error_if_exists: bool,
    /// The longest key accepted, in bytes. Default: 64 KiB. Empty keys are
    /// allowed (they sort first).
    pub key_bytes_max: usize,
    /// The longest value accepted, in bytes. Default: 16 MiB. Empty values
    /// are allowed and differ from absent keys.
    pub value_bytes_max: usize,
    /// The largest encoded write batch accepted, in bytes. Default: 32 MiB
    /// (below the replication message limit, so every accepted batch can be
    /// shipped to replicas).
    pub batch_bytes_max: usize,
    /// A commit-log segment that reaches this size is closed and a new one
    /// begun. Default: 64 MiB.
    pub wal_segment_bytes_max: u64,
    /// If set, the commit log is synced in the background at this interval,
    /// bounding what a power loss can take from `sync: false` writes.
    /// Default: `None` (only `sync: true` writes and [`crate::Db::sync`]
    /// sync).
    pub wal_sync_interval: Option<Duration>,
    /// How recovery treats damage in the commit log. Default:
    /// [`RecoveryMode::TolerateTornTail`].
    pub recovery_mode: RecoveryMode,
    /// A memtable that reaches this many bytes is frozen and flushed to a
    /// sorted table in the background. Default: 64 MiB.
    pub memtable_bytes_max: usize,
    /// Frozen memtables waiting for flush beyond which writes wait (the
    /// memory cap is about `(1 + this) * memtable_bytes_max`). Default: 2.
    pub immutable_memtables_max: usize,
    /// Level-0 tables that trigger a compaction into level 1. Default: 4.
    pub level0_compaction_trigger: usize,
    /// Level-0 tables at which each write is delayed a little (more the
    /// further past it), so compaction catches up. Default: 8.
    pub level0_slowdown_writes: usize,
    /// Level-0 tables at which writes wait for compaction. Default: 12.
    pub level0_stop_writes: usize,
    /// Target size of level 1; each deeper level is
    /// `level_size_multiplier` times larger. Default: 64 MiB.
    pub level1_bytes_max: u64,
    /// Growth factor between levels. Default: 10.
    pub level_size_multiplier: u64,
    /// Compaction output tables are cut at about this size. Default:
    /// 32 MiB.
    pub table_bytes_max: u64,
    /// Uncompressed size of a table's data blocks. Default: 4 KiB.
    pub block_bytes: usize,
    /// Bloom filter bits per key in each table (0 for none). Default: 10
    /// (about 1% false positives).
    pub bloom_bits_per_key: usize,
    /// Bytes of verified, decompressed table blocks kept in memory (0 for
    /// no block cache; blocks are then read from the page cache through
    /// the file mapping and verified on every load). Default: 64 MiB.
    pub block_cache_bytes: u64,
    /// Compress table blocks with LZ4. Default: `false`.
    pub compression: bool,
    /// Flush memtables when the database is closed cleanly, so the next
    /// open replays no log. Default: `true`.
    pub flush_on_close: bool,
    /// When the commit log holds more than this many bytes not yet flushed
    /// to tables, the memtable is flushed even if it is not full, so a
    /// restart after a crash never replays more than about this much.
    /// Default: 256 MiB.
    pub wal_replay_bytes_max: u64,
    /// Where to split the keyspace into ranges when the database is
    /// created (strictly increasing, non-empty keys): `n` points make
    /// `n + 1` ranges, for example one per region prefix. Ignored when
    /// opening an existing database, whose range map is in its manifest.
    /// Default: none (one range).
    pub initial_split_points: Vec<Vec<u8>>,
    /// A range whose tables hold more than this many bytes is split in two
    /// at its median table boundary (0: never). Default: 1 GiB.
    pub range_split_bytes: u64,
    /// A range written more than this many operations per second, over
    /// `range_split_rate_window`, is split in two (0: never). Default: 0,
    /// since a hot sequential key pattern gains nothing from a split.
    pub range_split_writes_per_sec: u64,
    /// How long a write rate must last before it splits a range.
    /// Default: 10 s.
    pub range_split_rate_window: Duration,
    /// Threads running compactions; compactions of different ranges run in
    /// parallel, never two in one range. Default: 1.
    pub compaction_threads: usize,
    /// For a range-scoped replica: the only keys this database holds,
    /// as sorted, disjoint intervals `[start, end)` (`None`: unbounded).
    /// Operations on other keys keep their sequence numbers but store
    /// nothing; tables wholly outside are dropped at open; reads of keys
    /// outside, and scans reaching outside, are refused. Default: empty
    /// (every key).
    pub retain_ranges: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Options {
    /// Checks that the options make sense together.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming the field.
    pub fn validate(&self) -> crate::Result<()> {
        let fail = |what: &str| {
            Err(crate::Error::InvalidArgument(format!(
                "invalid options: {what}"
            )))
        };
        if self.memtable_bytes_max == 0 {
            return fail("memtable_bytes_max must be positive");
        }
        if self.immutable_memtables_max == 0 {
            return fail("immutable_memtables_max must be at least 1");
        }
        if self.level0_compaction_trigger == 0
            || self.level0_slowdown_writes < self.level0_compaction_trigger
            || self.level0_stop_writes < self.level0_slowdown_writes
        {
            return fail(
                "level-0 thresholds must satisfy 0 < compaction_trigger <= slowdown_writes <= stop_writes",
            );
        }
        if self.level1_bytes_max == 0 || self.level_size_multiplier < 2 {
            return fail("level1_bytes_max must be positive and level_size_multiplier at least 2");
        }
        if self.table_bytes_max == 0 || self.block_bytes == 0 {
            return fail("table_bytes_max and block_bytes must be positive");
        }
        if self.batch_bytes_max as u64 > u64::from(strata_format::wal::MAX_RECORD_PAYLOAD) {
            return fail("batch_bytes_max exceeds the commit log's record limit (1 GiB)");
        }
        if self.wal_segment_bytes_max == 0 {
            return fail("wal_segment_bytes_max must be positive");
        }
        if self.compaction_threads == 0 || self.compaction_threads > 64 {
            return fail("compaction_threads must be between 1 and 64");
        }
        if let Err(why) = crate::ranges::KeyIntervals::check(&self.retain_ranges) {
            return fail(&why);
        }
        for (i, point) in self.initial_split_points.iter().enumerate() {
            if point.is_empty() {
                return fail(&format!(
                    "initial_split_points[{i}] is empty (the first range already starts at the empty key)"
                ));
            }
            if point.len() > self.key_bytes_max {
                return fail(&format!(
                    "initial_split_points[{i}] is longer than key_bytes_max"
                ));
            }
            if i > 0
                && self
                    .initial_split_points
                    .get(i - 1)
                    .is_some_and(|prev| prev >= point)
            {
                return fail(&format!(
                    "initial_split_points[{i}] is not above the point before it (points must strictly increase)"
                ));
            }
        }
        Ok(())
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            file_system: Arc::new(RealFileSystem),
            create_if_missing: true,
            error_if_exists: false,
            key_bytes_max: 64 << 10,
            value_bytes_max: 16 << 20,
            batch_bytes_max: 32 << 20,
            wal_segment_bytes_max: 64 << 20,
            wal_sync_interval: None,
            recovery_mode: RecoveryMode::TolerateTornTail,
            memtable_bytes_max: 64 << 20,
            immutable_memtables_max: 2,
            level0_compaction_trigger: 4,
            level0_slowdown_writes: 8,
            level0_stop_writes: 12,
            level1_bytes_max: 64 << 20,
            level_size_multiplier: 10,
            table_bytes_max: 32 << 20,
            block_bytes: 4 << 10,
            bloom_bits_per_key: 10,
            block_cache_bytes: 64 << 20,
            compression: false,
            flush_on_close: true,
            wal_replay_bytes_max: 256 << 20,
            initial_split_points: Vec::new(),
            range_split_bytes: 1 << 30,
            range_split_writes_per_sec: 0,
            range_split_rate_window: Duration::from_secs(10),
            compaction_threads: 1,
            retain_ranges: Vec::new(),
        }
    }
}

/// How to write.
///
/// # Examples
///
/// ```
/// let durable = strata::WriteOptions { sync: true };
/// assert!(!strata::WriteOptions::default().sync);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Return only once the write survives power loss (one fdatasync, shared
    /// with concurrent writers by group commit). With `false` the write
    /// survives a crash of the process but not of the machine. Default:
    /// `false`.
    pub sync: bool,
}
