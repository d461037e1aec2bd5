//! Strata: an embeddable, log-structured key-value store for Rust services,
//! with group commit, key ranges and (through `strata-replication`) log
//! shipping to read replicas.
//!
//! # Quick start
//!
//! ```
//! use strata::{Db, Options, WriteBatch, WriteOptions};
//! # let fs = std::sync::Arc::new(strata::MemFileSystem::new());
//! # let options = Options { file_system: fs, ..Options::default() };
//!
//! let db = Db::open("data", options)?;               // creates or recovers
//! let seq = db.put(b"user:42", b"alice")?;           // the commit's sequence number
//! assert_eq!(db.get(b"user:42")?.as_deref(), Some(&b"alice"[..]));
//!
//! let mut batch = WriteBatch::new();                 // atomic, across key ranges
//! batch.put(b"a", b"1");
//! batch.delete(b"user:42");
//! let later = db.write(batch, &WriteOptions { sync: true })?; // durable when it returns
//! assert!(later > seq);
//!
//! let snapshot = db.snapshot();                      // a consistent view at a SeqNo
//! for entry in db.scan(b"a".as_slice()..b"z".as_slice())? {
//!     let (key, value) = entry?;
//!     assert_eq!((key.as_slice(), value.as_slice()), (&b"a"[..], &b"1"[..]));
//! }
//! assert_eq!(snapshot.get(b"a")?.as_deref(), Some(&b"1"[..]));
//! db.flush()?;                                       // memtables to sorted tables
//! db.close()?;
//! # Ok::<(), strata::Error>(())
//! ```
//!
//! # The API
//!
//! | | |
//! | --- | --- |
//! | open, close | [`Db::open`]`(dir, `[`Options`]`)`, [`Db::close`] |
//! | write | [`Db::put`], [`Db::delete`], [`Db::delete_range`], [`Db::write`]`(`[`WriteBatch`]`, &`[`WriteOptions`]`)`: each returns the commit's [`SeqNo`] |
//! | read | [`Db::get`], [`Db::get_into`], [`Db::scan`], [`Db::scan_rev`], [`Db::prefix`] (a [`DbIterator`]), [`Db::snapshot`] (a [`Snapshot`]: `get`, `scan`, `scan_rev`, `seq`) |
//! | durability | [`Db::sync`], [`Db::flush`], [`Db::wait_for_compactions`], [`Db::checkpoint`] |
//! | positions | [`Db::last_seq`], [`Db::durable_seq`], [`Db::wait_for_seq`] (read your writes), [`Db::database_id`] |
//! | key ranges | [`Db::ranges`] ([`RangeInfo`]), [`Db::split_range`], [`Db::merge_ranges`] ([`RangeId`]) |
//! | health | [`Db::stats`] ([`DbStats`]), [`Db::poisoned`], [`Db::verify_tables`], [`Db::recovery_report`] ([`RecoveryReport`]) |
//! | errors | [`Error`], [`Result`] |
//! | files | [`FileSystem`]: [`RealFileSystem`] (default), [`MemFileSystem`] (tests) |
//!
//! Replication does not go through [`Db`]: it uses the port in
//! [`replication`] (log source, follower, snapshots, epoch), which
//! `strata-replication` wraps in gRPC. The commit log (`wal`) and the
//! fault-injecting file system (`env::FaultFileSystem`) are public only
//! with the `internals` feature, for the crate's own tests and tools.
//!
//! Design: `docs/design/engine.md`; formats: `docs/format.md`.

mod compaction;
mod db;
pub mod env;
mod error;
mod memtable;
mod merge;
mod options;
mod ranges;
pub mod replication;
mod seqno;
mod table;
mod version;
#[cfg(feature = "internals")]
pub mod wal;
#[cfg(not(feature = "internals"))]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "the commit log's API beyond what the engine calls is for the crate's own tests and tools (feature `internals`)"
)]
mod wal;
mod write_batch;

pub use db::iterator::DbIterator;
pub use db::{Db, DbStats, Snapshot};
pub use env::{FileSystem, MemFileSystem, RealFileSystem};
pub use error::{Error, Result};
pub use options::{Options, WriteOptions};
pub use ranges::{KeyIntervals, RangeId, RangeInfo};
pub use seqno::SeqNo;
pub use wal::{RecoveryMode, RecoveryReport, TailRepair, WalStats};
pub use write_batch::WriteBatch;
