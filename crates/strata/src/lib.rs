//! Strata: an embeddable, log-structured key-value store for Rust services.
//!
//! This release holds the foundation: the file layer ([`env`]) and the
//! commit log ([`wal`]) with group commit, crash recovery, tailing readers
//! and retention. The key-value engine (`Db`) builds on them.
//!
//! # Quick start: the commit log
//!
//! ```
//! use std::sync::Arc;
//! use strata::wal::{BatchBuilder, Wal, WalOptions};
//! use strata::{MemFileSystem, SeqNo};
//!
//! let fs = Arc::new(MemFileSystem::new()); // or RealFileSystem for disk
//! let (wal, report) = Wal::open(fs, "db/wal", 42, WalOptions::default(), SeqNo(1), |_batch| Ok(()))?;
//! assert_eq!(report.next_seq, SeqNo(1));
//!
//! let mut batch = BatchBuilder::new();
//! batch.put(b"user:42", b"alice");
//! batch.delete(b"user:41");
//! let commit = wal.append(batch, true)?; // durable when this returns
//! assert_eq!((commit.first_seq, commit.last_seq), (SeqNo(1), SeqNo(2)));
//! # Ok::<(), strata::Error>(())
//! ```

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
pub mod wal;
mod write_batch;

pub use db::iterator::DbIterator;
pub use db::{Db, DbStats, Snapshot};
pub use env::{FileSystem, MemFileSystem, RealFileSystem};
pub use error::{Error, Result};
pub use options::{Options, WriteOptions};
pub use ranges::{RangeId, RangeInfo};
pub use seqno::SeqNo;
pub use wal::RecoveryMode;
pub use write_batch::WriteBatch;
