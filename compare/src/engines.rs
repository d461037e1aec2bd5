//! The engines behind one small interface. Each is opened with its
//! defaults; the durability used for each kind of write is stated here and
//! in docs/benchmarks.md.

use std::path::Path;
use std::time::Duration;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// What a workload needs from an engine.
pub trait Engine: Send + Sync {
    /// A single put. `sync`: durable against power loss when it returns.
    fn put(&self, key: &[u8], value: &[u8], sync: bool) -> Result<()>;
    /// An atomic batch of puts.
    fn write_batch(&self, entries: &[(&[u8], &[u8])], sync: bool) -> Result<()>;
    /// A reading handle for one thread.
    fn reader(&self) -> Result<Box<dyn Reader + '_>>;
    /// Waits for background flushes and compactions to finish.
    fn settle(&self) -> Result<()>;
    /// Engine-specific figures worth reporting (write amplification...).
    fn notes(&self) -> String {
        String::new()
    }
    /// Bytes the engine wrote to files by storing into shared memory
    /// mappings (no `write` call, so `wchar` misses them).
    fn mapped_write_bytes(&self) -> u64 {
        0
    }
    /// Closes cleanly.
    fn close(self: Box<Self>) -> Result<()>;
}

/// Reads from one thread. Engines with snapshot read transactions (redb)
/// reuse one until `refresh`.
pub trait Reader {
    /// Whether the key exists (the value is read).
    fn get(&mut self, key: &[u8]) -> Result<bool>;
    /// Reads up to `count` entries from `start` on; returns how many.
    fn scan(&mut self, start: &[u8], count: usize) -> Result<usize>;
    /// Sees writes committed since the handle was made.
    fn refresh(&mut self) -> Result<()> {
        Ok(())
    }
}

pub const ENGINES: &[&str] = &["strata", "fjall", "redb", "rocksdb", "rocksdb-tuned"];

/// Opens (creating if needed) the named engine's database in `dir`.
pub fn open(name: &str, dir: &Path) -> Result<Box<dyn Engine>> {
    Ok(match name {
        "strata" => Box::new(StrataEngine::open(dir)?),
        "fjall" => Box::new(FjallEngine::open(dir)?),
        "redb" => Box::new(RedbEngine::open(dir)?),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => Box::new(rocks::RocksEngine::open(dir, false)?),
        #[cfg(feature = "rocksdb")]
        "rocksdb-tuned" => Box::new(rocks::RocksEngine::open(dir, true)?),
        "rocksdb" | "rocksdb-tuned" => {
            return Err("built without the `rocksdb` feature (cargo run --release --features rocksdb)".into());
        }
        other => return Err(format!("unknown engine {other:?}; known: {ENGINES:?}").into()),
    })
}

// ---------------------------------------------------------------- Strata

/// `Options::default()`; unsynced writes reach the OS before returning
/// (they survive a process kill), synced ones are fdatasynced (group
/// commit shares one sync among concurrent writers).
pub struct StrataEngine {
    db: strata::Db,
}

impl StrataEngine {
    fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            db: strata::Db::open(dir, strata::Options::default())?,
        })
    }
}

impl Engine for StrataEngine {
    fn put(&self, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
        if sync {
            let mut batch = strata::WriteBatch::new();
            batch.put(key, value);
            self.db.write(batch, &strata::WriteOptions { sync: true })?;
        } else {
            self.db.put(key, value)?;
        }
        Ok(())
    }

    fn write_batch(&self, entries: &[(&[u8], &[u8])], sync: bool) -> Result<()> {
        let mut batch = strata::WriteBatch::new();
        for (key, value) in entries {
            batch.put(key, value);
        }
        self.db.write(batch, &strata::WriteOptions { sync })?;
        Ok(())
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(StrataReader { db: &self.db }))
    }

    fn settle(&self) -> Result<()> {
        self.db.wait_for_compactions()?;
        Ok(())
    }

    fn notes(&self) -> String {
        let stats = self.db.stats();
        format!(
            "strata WA {:.2} (flush {} MB, compaction {} MB written, log {} MB), tables per level {:?}, stalls {:?}",
            stats.write_amplification,
            stats.flush_bytes_written >> 20,
            stats.compaction_bytes_written >> 20,
            stats.wal.bytes_written >> 20,
            stats.level_tables,
            stats.stalls,
        )
    }

    fn mapped_write_bytes(&self) -> u64 {
        self.db.stats().wal.bytes_mapped
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.close()?;
        Ok(())
    }
}

struct StrataReader<'a> {
    db: &'a strata::Db,
}

impl Reader for StrataReader<'_> {
    fn get(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.db.get(key)?.is_some())
    }

    /// Entries lent by the iterator (`next_ref`), as redb's range lends
    /// access guards: no copy of keys and values.
    fn scan(&mut self, start: &[u8], count: usize) -> Result<usize> {
        let mut seen = 0;
        let mut scan = self.db.scan(start..)?;
        while seen < count {
            let Some(entry) = scan.next_ref() else { break };
            let (key, value) = entry?;
            std::hint::black_box((key, value));
            seen += 1;
        }
        Ok(seen)
    }
}

// ----------------------------------------------------------------- fjall

/// `Database::builder(dir).open()` and one keyspace with
/// `KeyspaceCreateOptions::default` (LZ4 on). Unsynced single puts use
/// fjall's default (`PersistMode::Buffer`: written to the OS); unsynced
/// batches ask for `Buffer` too (a batch's default is no persist at all);
/// synced writes use `PersistMode::SyncData` (fdatasync), one per write.
pub struct FjallEngine {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
}

impl FjallEngine {
    fn open(dir: &Path) -> Result<Self> {
        let db = fjall::Database::builder(dir).open()?;
        let keyspace = db.keyspace("bench", fjall::KeyspaceCreateOptions::default)?;
        Ok(Self { db, keyspace })
    }
}

impl Engine for FjallEngine {
    fn put(&self, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
        self.keyspace.insert(key, value)?;
        if sync {
            self.db.persist(fjall::PersistMode::SyncData)?;
        }
        Ok(())
    }

    fn write_batch(&self, entries: &[(&[u8], &[u8])], sync: bool) -> Result<()> {
        let mode = if sync {
            fjall::PersistMode::SyncData
        } else {
            fjall::PersistMode::Buffer
        };
        let mut batch = self.db.batch().durability(Some(mode));
        for (key, value) in entries {
            batch.insert(&self.keyspace, *key, *value);
        }
        batch.commit()?;
        Ok(())
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(FjallReader {
            keyspace: &self.keyspace,
        }))
    }

    fn settle(&self) -> Result<()> {
        while self.db.outstanding_flushes() > 0 || self.db.active_compactions() > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn notes(&self) -> String {
        format!(
            "fjall tables {} (L0 {}), compactions {}",
            self.keyspace.table_count(),
            self.keyspace.l0_table_count(),
            self.db.compactions_completed()
        )
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
}

struct FjallReader<'a> {
    keyspace: &'a fjall::Keyspace,
}

impl Reader for FjallReader<'_> {
    fn get(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.keyspace.get(key)?.is_some())
    }

    fn scan(&mut self, start: &[u8], count: usize) -> Result<usize> {
        let mut seen = 0;
        for guard in self.keyspace.range(start..).take(count) {
            let (key, value) = guard.into_inner()?;
            std::hint::black_box((key, value));
            seen += 1;
        }
        Ok(seen)
    }
}

// ------------------------------------------------------------------ redb

const REDB_TABLE: redb::TableDefinition<'static, &[u8], &[u8]> =
    redb::TableDefinition::new("bench");

/// `Database::create(file)` with default settings. redb's default
/// durability is `Durability::Immediate` (each commit is made durable).
/// Synced writes use it; unsynced writes commit with `Durability::None`
/// (kept in memory until a later durable commit: unlike the others'
/// unsynced writes, a killed process loses them). One write transaction
/// per put, one per batch.
pub struct RedbEngine {
    db: redb::Database,
}

impl RedbEngine {
    fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Database::create(dir.join("bench.redb"))?;
        let txn = db.begin_write()?;
        txn.open_table(REDB_TABLE)?;
        txn.commit()?;
        Ok(Self { db })
    }

    fn commit(&self, entries: &[(&[u8], &[u8])], sync: bool) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        if !sync {
            txn.set_durability(redb::Durability::None)?;
        }
        {
            let mut table = txn.open_table(REDB_TABLE)?;
            for (key, value) in entries {
                table.insert(*key, *value)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl Engine for RedbEngine {
    fn put(&self, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
        self.commit(&[(key, value)], sync)
    }

    fn write_batch(&self, entries: &[(&[u8], &[u8])], sync: bool) -> Result<()> {
        self.commit(entries, sync)
    }

    fn reader(&self) -> Result<Box<dyn Reader + '_>> {
        Ok(Box::new(RedbReader::new(&self.db)?))
    }

    fn settle(&self) -> Result<()> {
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<()> {
        // Makes the `Durability::None` commits durable.
        self.commit(&[], true)
    }
}

struct RedbReader<'a> {
    db: &'a redb::Database,
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
}

impl<'a> RedbReader<'a> {
    fn new(db: &'a redb::Database) -> Result<Self> {
        use redb::ReadableDatabase;
        let txn = db.begin_read()?;
        let table = txn.open_table(REDB_TABLE)?;
        Ok(Self { db, table })
    }
}

impl Reader for RedbReader<'_> {
    fn get(&mut self, key: &[u8]) -> Result<bool> {
        Ok(match self.table.get(key)? {
            Some(value) => {
                std::hint::black_box(value.value());
                true
            }
            None => false,
        })
    }

    fn scan(&mut self, start: &[u8], count: usize) -> Result<usize> {
        let mut seen = 0;
        for entry in self.table.range::<&[u8]>(start..)?.take(count) {
            let (key, value) = entry?;
            std::hint::black_box((key.value(), value.value()));
            seen += 1;
        }
        Ok(seen)
    }

    fn refresh(&mut self) -> Result<()> {
        *self = Self::new(self.db)?;
        Ok(())
    }
}

// --------------------------------------------------------------- RocksDB

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::{Engine, Reader, Result};
    use std::path::Path;
    use std::time::Duration;

    /// `DB::open_default` (RocksDB's defaults: no bloom filter, 32 MiB
    /// block cache in this version), or with `tuned` a 10-bit bloom filter
    /// and a 256 MiB block cache. Synced writes set `WriteOptions::sync`.
    pub struct RocksEngine {
        db: rocksdb::DB,
    }

    impl RocksEngine {
        pub fn open(dir: &Path, tuned: bool) -> Result<Self> {
            let mut options = rocksdb::Options::default();
            options.create_if_missing(true);
            if tuned {
                let mut table = rocksdb::BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                table.set_block_cache(&rocksdb::Cache::new_lru_cache(256 << 20));
                options.set_block_based_table_factory(&table);
            }
            Ok(Self {
                db: rocksdb::DB::open(&options, dir)?,
            })
        }

        fn write_options(sync: bool) -> rocksdb::WriteOptions {
            let mut options = rocksdb::WriteOptions::default();
            options.set_sync(sync);
            options
        }

        fn busy(&self) -> Result<bool> {
            let flushes = self.db.property_int_value("rocksdb.num-running-flushes")?;
            let compactions = self
                .db
                .property_int_value("rocksdb.num-running-compactions")?;
            let pending = self.db.property_int_value("rocksdb.compaction-pending")?;
            Ok(flushes.unwrap_or(0) + compactions.unwrap_or(0) + pending.unwrap_or(0) > 0)
        }
    }

    impl Engine for RocksEngine {
        fn put(&self, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
            self.db.put_opt(key, value, &Self::write_options(sync))?;
            Ok(())
        }

        fn write_batch(&self, entries: &[(&[u8], &[u8])], sync: bool) -> Result<()> {
            let mut batch = rocksdb::WriteBatch::default();
            for (key, value) in entries {
                batch.put(key, value);
            }
            self.db.write_opt(batch, &Self::write_options(sync))?;
            Ok(())
        }

        fn reader(&self) -> Result<Box<dyn Reader + '_>> {
            Ok(Box::new(RocksReader { db: &self.db }))
        }

        fn settle(&self) -> Result<()> {
            while self.busy()? {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        }

        fn notes(&self) -> String {
            let level0 = self
                .db
                .property_int_value("rocksdb.num-files-at-level0")
                .ok()
                .flatten();
            format!("rocksdb L0 files {level0:?}")
        }

        fn close(self: Box<Self>) -> Result<()> {
            self.db.flush_wal(true)?;
            Ok(())
        }
    }

    struct RocksReader<'a> {
        db: &'a rocksdb::DB,
    }

    impl Reader for RocksReader<'_> {
        fn get(&mut self, key: &[u8]) -> Result<bool> {
            Ok(match self.db.get_pinned(key)? {
                Some(value) => {
                    std::hint::black_box(&*value);
                    true
                }
                None => false,
            })
        }

        fn scan(&mut self, start: &[u8], count: usize) -> Result<usize> {
            let mut iter = self.db.raw_iterator();
            iter.seek(start);
            let mut seen = 0;
            while seen < count && iter.valid() {
                std::hint::black_box((iter.key(), iter.value()));
                seen += 1;
                iter.next();
            }
            iter.status()?;
            Ok(seen)
        }
    }
}
