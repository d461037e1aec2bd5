//! The database's side of the replication port ([`crate::replication`]):
//! the few operations on a database's internals that replication needs,
//! crate-private, so that the user's [`Db`] API carries none of them.
//!
//! Invariants:
//! - Replicated records are appended byte for byte as they were verified
//!   (the disk frame is the wire frame), under `replication_apply`, so the
//!   sequence check and the append agree.
//! - A replicated record is decoded once on its way to the memtable (when
//!   it is verified); the apply path reads only its 12-byte batch header
//!   again. [`ReplicationCounters::batch_decodes`] counts it.
//! - Replicated batches become visible only once durable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use strata_format::wal::{RECORD_HEADER_LEN, view_built_batch};

use super::{Db, apply_batch, background};
use crate::env::FileSystem;
use crate::error::{Error, Result};
use crate::replication::VerifiedRecord;
use crate::seqno::SeqNo;
use crate::wal::{LogPin, LogReader};

/// What the replication port did on this database since it was opened.
#[derive(Debug, Default)]
pub(crate) struct ReplicationCounters {
    /// Replicated records appended.
    pub(crate) records_applied: AtomicU64,
    /// Full decodes (every operation walked and checked) the applied
    /// records underwent, from their arrival to the memtable.
    pub(crate) batch_decodes: AtomicU64,
}

impl Db {
    /// The file system the database lives on.
    pub(crate) fn file_system(&self) -> Arc<dyn FileSystem> {
        Arc::clone(&self.inner.fs)
    }

    pub(crate) fn replication_counters(&self) -> &ReplicationCounters {
        &self.inner.replicated
    }

    pub(crate) fn log_reader(&self, from: SeqNo) -> Result<LogReader> {
        self.inner.check_open()?;
        self.inner.wal.reader(from)
    }

    pub(crate) fn log_pin(&self, from: SeqNo) -> Result<LogPin> {
        self.inner.check_open()?;
        self.inner.wal.pin(from)
    }

    pub(crate) fn log_bytes_from(&self, seq: SeqNo) -> u64 {
        self.inner.wal.bytes_from(seq)
    }

    pub(crate) fn oldest_retained_seq(&self) -> SeqNo {
        self.inner.wal.oldest_retained_seq()
    }

    /// Lowers the largest batch accepted to `bytes` (never raises it),
    /// giving `why` in refusals.
    pub(crate) fn limit_batch_bytes(&self, bytes: usize, why: &str) {
        let mut reason = self.inner.batch_limit_why.lock();
        let current = self
            .inner
            .batch_limit
            .load(Ordering::Acquire)
            .min(self.inner.options.batch_bytes_max);
        if bytes < current {
            *reason = why.to_string();
            self.inner.batch_limit.store(bytes, Ordering::Release);
        }
    }

    /// Flushes, then rewrites every table holding keys outside
    /// `retain_ranges`; returns the bytes written (0 without ranges).
    pub(crate) fn purge_outside_retained(&self) -> Result<u64> {
        self.inner.check_open()?;
        if self.inner.retain.is_everything() {
            return Ok(0);
        }
        self.flush()?;
        self.inner.purge_outside_retained()
    }

    /// `Some(message)`: local writes are refused with
    /// [`Error::ReadOnly`] carrying it; `None`: accepted again.
    pub(crate) fn set_follower(&self, message: Option<String>) {
        *self.inner.follower.write() = message;
    }

    /// Appends verified records that must continue the log, byte for byte
    /// and synced once, then applies and publishes them. Records after one
    /// that does not continue the log are left (the caller sees the error
    /// on its next call); the first must continue it.
    pub(crate) fn apply_verified(&self, records: Vec<VerifiedRecord>) -> Result<SeqNo> {
        let inner = &*self.inner;
        inner.check_open()?;
        // One replicated group at a time: the checks and the appends agree.
        let _order = inner.replication_apply.lock();
        let start = inner.wal.next_seq().get();
        let mut expected = start;
        let mut framed = Vec::with_capacity(records.len());
        let mut batch_bytes = 0u64;
        let mut decodes = 0u64;
        for record in records {
            if record.first_seq().get() != expected {
                if expected == start {
                    return Err(Error::OutOfSequence {
                        expected,
                        found: record.first_seq().get(),
                    });
                }
                break;
            }
            expected = record.last_seq().get() + 1;
            batch_bytes += record.payload().len() as u64;
            decodes += u64::from(record.decodes);
            let (bytes, first, count) = record.into_parts();
            framed.push((bytes, first, count));
        }
        if framed.is_empty() {
            return Ok(SeqNo(start.saturating_sub(1)));
        }
        if let Some((first, _, _)) = framed.first() {
            background::throttle(inner, first.get(RECORD_HEADER_LEN..).unwrap_or_default())?;
        }
        let count = framed.len() as u64;
        {
            let _gate = inner.write_gate.read();
            let written = inner.wal.append_framed_many(framed, true)?;
            let current = inner.view.load();
            for (_, bytes) in &written {
                // Verified when it arrived: only the header is read again.
                let batch = bytes
                    .get(RECORD_HEADER_LEN..)
                    .and_then(view_built_batch)
                    .ok_or_else(|| Error::Poisoned {
                        reason: Arc::from(
                            "internal error: a verified record lost its batch header",
                        ),
                    })?;
                apply_batch(
                    &current.active,
                    &batch,
                    &inner.retain,
                    Some(&current.router),
                );
            }
        }
        inner.visibility.publish_and_wait(start, expected - 1);
        inner
            .replicated
            .records_applied
            .fetch_add(count, Ordering::Relaxed);
        inner
            .replicated
            .batch_decodes
            .fetch_add(decodes, Ordering::Relaxed);
        inner.freeze_if_full(batch_bytes);
        Ok(SeqNo(expected - 1))
    }
}
