//! The follower: a database that applies another's log.
//!
//! A record arrives framed as its origin's log holds it. [`VerifiedRecord::
//! verify`] decodes it once: the record's checksum and type, then the whole
//! batch (every operation, the count, the sequence range). [`Follower::
//! apply`] appends those bytes unchanged (the disk frame is the wire frame)
//! and inserts the batch into the memtable reading only its header again.
//!
//! Invariants:
//! - A [`VerifiedRecord`] holds exactly one batch record whose checksum and
//!   batch are valid; it cannot be built otherwise.
//! - Applied records continue the follower's log; a record that does not
//!   is refused with nothing after it applied.

use std::sync::atomic::Ordering;

use strata_format::wal::{RECORD_HEADER_LEN, RecordType, decode_batch, decode_record};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::seqno::SeqNo;

/// One replicated record, checked and decoded once.
///
/// # Examples
///
/// ```
/// use strata::replication::VerifiedRecord;
/// use strata_format::wal::{BatchBuilder, RecordType, encode_record, set_batch_first_seq};
///
/// let mut batch = BatchBuilder::new();
/// batch.put(b"k", b"v");
/// let mut payload = batch.into_bytes();
/// set_batch_first_seq(&mut payload, 7);
/// let mut framed = Vec::new();
/// encode_record(RecordType::Batch, &payload, &mut framed);
/// let record = VerifiedRecord::verify(framed.clone())?;
/// assert_eq!((record.first_seq().get(), record.last_seq().get()), (7, 7));
/// assert_eq!(record.framed(), framed.as_slice());
/// framed[12] ^= 1;
/// assert!(VerifiedRecord::verify(framed).is_err());
/// # Ok::<(), strata::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRecord {
    framed: Vec<u8>,
    first_seq: u64,
    count: u32,
    /// Full decodes this record underwent (one: in `verify`).
    pub(crate) decodes: u32,
}

impl VerifiedRecord {
    /// Checks `framed` is exactly one batch record: its checksum, its
    /// type, and its batch (every operation).
    ///
    /// # Errors
    /// [`Error::Corruption`] naming what failed and the offset within the
    /// record (the path is `replicated record`).
    pub fn verify(framed: Vec<u8>) -> Result<Self> {
        let origin = std::path::Path::new("replicated record");
        let record = decode_record(&framed).map_err(|e| Error::corruption(origin, e))?;
        if record.framed_len != framed.len() || record.record_type != RecordType::Batch {
            return Err(Error::corruption_msg(
                origin,
                0,
                "not exactly one batch record",
            ));
        }
        let batch = decode_batch(record.payload)
            .map_err(|e| Error::corruption(origin, e.at(RECORD_HEADER_LEN as u64)))?;
        let (first_seq, count) = (batch.first_seq, batch.count);
        Ok(Self {
            framed,
            first_seq,
            count,
            decodes: 1,
        })
    }

    /// The sequence number of the batch's first operation.
    #[must_use]
    pub fn first_seq(&self) -> SeqNo {
        SeqNo(self.first_seq)
    }

    /// The sequence number of its last operation.
    #[must_use]
    pub fn last_seq(&self) -> SeqNo {
        // Validated in `verify`: count >= 1 and no overflow.
        SeqNo(self.first_seq + u64::from(self.count) - 1)
    }

    /// The record as framed (what the log will hold).
    #[must_use]
    pub fn framed(&self) -> &[u8] {
        &self.framed
    }

    /// The encoded batch (the record without its header).
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        self.framed.get(RECORD_HEADER_LEN..).unwrap_or_default()
    }

    pub(crate) fn into_parts(self) -> (Vec<u8>, u64, u32) {
        (self.framed, self.first_seq, self.count)
    }
}

/// What a follower applied since the database was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FollowerStats {
    /// Replicated records appended.
    pub records_applied: u64,
    /// Full batch decodes those records underwent between arriving and
    /// reaching the memtable: one per record.
    pub batch_decodes: u64,
}

/// A database following another's log.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use strata::replication::{Follower, LogSource, VerifiedRecord};
/// use strata::{Db, MemFileSystem, Options, SeqNo};
///
/// let fs = Arc::new(MemFileSystem::new());
/// let options = || Options { file_system: fs.clone(), ..Options::default() };
/// let primary = Db::open("p", options())?;
/// primary.put(b"k", b"v")?;
/// primary.sync()?;
/// let record = LogSource::of(&primary).read_from(SeqNo(1))?.next(Duration::from_secs(1))?.expect("record");
///
/// let replica = Db::open("r", options())?;
/// let follower = Follower::of(&replica);
/// follower.fence("a replica of p");
/// assert!(replica.put(b"x", b"y").is_err());
/// follower.apply(vec![VerifiedRecord::verify(record.bytes)?])?;
/// assert_eq!(replica.get(b"k")?.as_deref(), Some(&b"v"[..]));
/// assert_eq!(follower.stats().batch_decodes, 1);
/// # Ok::<(), strata::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Follower<'a> {
    db: &'a Db,
}

impl<'a> Follower<'a> {
    /// `db` as a follower.
    #[must_use]
    pub fn of(db: &'a Db) -> Self {
        Self { db }
    }

    /// Refuses local writes from now on with [`Error::ReadOnly`] carrying
    /// `message` (for example, which node is the primary).
    pub fn fence(&self, message: impl Into<String>) {
        self.db.set_follower(Some(message.into()));
    }

    /// Accepts local writes again (a promotion).
    pub fn unfence(&self) {
        self.db.set_follower(None);
    }

    /// Appends `records` in order, byte for byte, synced once, then makes
    /// them visible (each batch atomically; none before it is durable).
    /// The first must start at the sequence number the log assigns next,
    /// each later one right after the one before; records after one that
    /// does not are dropped unapplied. Returns the last sequence number
    /// applied.
    ///
    /// # Errors
    /// [`Error::OutOfSequence`] if the first does not continue the log
    /// (nothing is applied); as [`Db::write`] otherwise.
    pub fn apply(&self, records: Vec<VerifiedRecord>) -> Result<SeqNo> {
        self.db.apply_verified(records)
    }

    /// What was applied since the database was opened.
    #[must_use]
    pub fn stats(&self) -> FollowerStats {
        let counters = self.db.replication_counters();
        FollowerStats {
            records_applied: counters.records_applied.load(Ordering::Relaxed),
            batch_decodes: counters.batch_decodes.load(Ordering::Relaxed),
        }
    }
}
