//! The log source: what an upstream ships from.
//!
//! Invariants: readers yield durable records only, framed as on disk; a
//! pin keeps every record from its position on until it is advanced or
//! dropped.

use std::time::Duration;

use crate::db::Db;
use crate::error::Result;
use crate::seqno::SeqNo;
use crate::wal::{LogPin, LogReader};

/// How far a follower at some position is behind a log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lag {
    /// Operations (sequence numbers) durable here and not yet applied there.
    pub records: u64,
    /// Bytes the log holds after the follower's position (about: whole
    /// segments and the tail).
    pub bytes: u64,
}

/// A database's commit log as replication reads it.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use strata::replication::LogSource;
/// use strata::{Db, MemFileSystem, Options, SeqNo};
///
/// let db = Db::open("p", Options { file_system: Arc::new(MemFileSystem::new()), ..Options::default() })?;
/// db.put(b"k", b"v")?;
/// db.sync()?;
/// let log = LogSource::of(&db);
/// let mut reader = log.read_from(SeqNo(1))?;
/// let record = reader.next(Duration::from_secs(1))?.expect("a durable record");
/// assert_eq!(record.last_seq, SeqNo(1));
/// assert_eq!(log.lag(SeqNo(0)).records, 1);
/// # Ok::<(), strata::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LogSource<'a> {
    db: &'a Db,
}

impl<'a> LogSource<'a> {
    /// The log of `db`.
    #[must_use]
    pub fn of(db: &'a Db) -> Self {
        Self { db }
    }

    /// A reader of durable records from `from` on, each framed exactly as
    /// on disk (checksum, length, type, batch).
    ///
    /// # Errors
    /// [`crate::Error::LogTruncated`] if `from` is no longer retained;
    /// [`crate::Error::BeyondEnd`] if it is past the end;
    /// [`crate::Error::Closed`].
    pub fn read_from(&self, from: SeqNo) -> Result<LogReader> {
        self.db.log_reader(from)
    }

    /// Keeps the log from `from` on until the pin is advanced or dropped.
    ///
    /// # Errors
    /// [`crate::Error::LogTruncated`] if `from` is no longer retained;
    /// [`crate::Error::Closed`].
    pub fn pin(&self, from: SeqNo) -> Result<LogPin> {
        self.db.log_pin(from)
    }

    /// The oldest sequence number the log still holds.
    #[must_use]
    pub fn oldest_retained(&self) -> SeqNo {
        self.db.oldest_retained_seq()
    }

    /// The last durable sequence number (what may be shipped).
    #[must_use]
    pub fn durable_seq(&self) -> SeqNo {
        self.db.durable_seq()
    }

    /// How far a follower that has applied up to `applied` is behind.
    #[must_use]
    pub fn lag(&self, applied: SeqNo) -> Lag {
        Lag {
            records: self.durable_seq().get().saturating_sub(applied.get()),
            bytes: self.db.log_bytes_from(SeqNo(applied.get() + 1)),
        }
    }

    /// Waits until every write up to `seq` is visible, at most `timeout`.
    #[must_use]
    pub fn wait_visible(&self, seq: SeqNo, timeout: Duration) -> bool {
        self.db.wait_for_seq(seq, timeout)
    }

    /// Lowers the largest batch the database accepts to `bytes`, naming
    /// `why` in refusals: a shipped log takes no batch its transport could
    /// not carry (refused when written, not found when shipped).
    pub fn limit_batch_bytes(&self, bytes: usize, why: &str) {
        self.db.limit_batch_bytes(bytes, why);
    }
}
