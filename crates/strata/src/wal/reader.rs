//! Tailing readers: committed records from a sequence number on, in order,
//! as the exact bytes on disk, waiting for new ones.
//!
//! This is what replication ships from. A reader follows the published
//! progress of the log (never the writer's private state): it reads a
//! segment only up to the length the writer has published, and in
//! [`ReadMode::Durable`] yields a record only once a sync has covered it.
//!
//! Thread-safety: a [`LogReader`] belongs to one thread; any number of
//! readers may run beside the writers.
//!
//! Invariants:
//! - Records come out in sequence order with no gap: each record's first
//!   sequence number is the previous record's last plus one (the first
//!   record is the one holding the requested sequence number).
//! - Every record's checksum and batch encoding are verified before it is
//!   yielded; a record that fails is reported as corruption, never skipped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_format::wal::{
    MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader, decode_batch,
    decode_record,
};

use super::Shared;
use crate::env::{File, OpenMode};
use crate::error::{Error, Result};
use crate::seqno::SeqNo;

/// Whether a reader waits for records to be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Yield a record only after a sync covered it (what replication
    /// ships: a replica is never ahead of the primary's durable log).
    #[default]
    Durable,
    /// Yield a record as soon as its write completed.
    Written,
}

/// One committed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Sequence number of the batch's first operation.
    pub first_seq: SeqNo,
    /// Sequence number of its last operation.
    pub last_seq: SeqNo,
    /// The record exactly as on disk: header (checksum, length, type) and
    /// payload (the encoded batch).
    pub bytes: Vec<u8>,
}

/// A reader that tails the log. See [`super::Wal::reader`].
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "internals")] {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use strata::wal::{BatchBuilder, Wal, WalOptions};
/// use strata::{MemFileSystem, SeqNo};
///
/// let fs = Arc::new(MemFileSystem::new());
/// let (wal, _) = Wal::open(fs, "log", 1, WalOptions::default(), SeqNo(1), |_| Ok(()))?;
/// let mut reader = wal.reader(SeqNo(1))?;
/// assert!(reader.next(Duration::ZERO)?.is_none()); // nothing yet
/// let mut batch = BatchBuilder::new();
/// batch.put(b"k", b"v");
/// wal.append(batch, true)?;
/// let record = reader.next(Duration::from_secs(1))?.expect("a record");
/// assert_eq!(record.last_seq, SeqNo(1));
/// # }
/// # Ok::<(), strata::Error>(())
/// ```
pub struct LogReader {
    shared: Arc<Shared>,
    mode: ReadMode,
    next_seq: u64,
    segment: u64,
    offset: u64,
    file: Option<(PathBuf, Arc<dyn File>)>,
    buffer: Vec<u8>,
    buffer_offset: u64,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("next_seq", &self.next_seq)
            .field("segment", &self.segment)
            .field("offset", &self.offset)
            .finish()
    }
}

const READ_CHUNK: usize = 256 << 10;

impl LogReader {
    pub(super) fn new(shared: Arc<Shared>, from: u64, mode: ReadMode) -> Result<Self> {
        let from = from.max(1);
        let segment = {
            let progress = shared.progress.lock();
            if from > progress.written_next {
                return Err(Error::BeyondEnd {
                    requested: from,
                    next: progress.written_next,
                });
            }
            let oldest = progress
                .segments
                .first()
                .map_or(progress.written_next, |s| s.first_seq);
            if from < oldest {
                return Err(Error::LogTruncated {
                    requested: from,
                    oldest_retained: oldest,
                });
            }
            progress
                .segments
                .iter()
                .rev()
                .find(|s| s.first_seq <= from)
                .or(progress.segments.last())
                .map_or(0, |s| s.number)
        };
        Ok(Self {
            shared,
            mode,
            next_seq: from,
            segment,
            offset: SEGMENT_HEADER_LEN as u64,
            file: None,
            buffer: Vec::new(),
            buffer_offset: 0,
        })
    }

    /// The sequence number the next record will contain.
    #[must_use]
    pub fn position(&self) -> SeqNo {
        SeqNo(self.next_seq)
    }

    /// The next record, waiting up to `timeout` for one to be committed;
    /// `Ok(None)` if none came in time (or the log was closed).
    ///
    /// # Errors
    /// [`Error::LogTruncated`] if retention deleted the segment this reader
    /// needs next; [`Error::Corruption`] if a committed record fails its
    /// checks; [`Error::Poisoned`] if the log was poisoned (records after
    /// the failure may never become durable); [`Error::Io`].
    pub fn next(&mut self, timeout: Duration) -> Result<Option<LogRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            let (segment_len, sealed, visible_next) = {
                let mut progress = self.shared.progress.lock();
                loop {
                    if let Some(reason) = &progress.poisoned
                        && self.mode == ReadMode::Durable
                        && self.next_seq >= progress.durable_next
                    {
                        return Err(Error::Poisoned {
                            reason: Arc::clone(reason),
                        });
                    }
                    let visible_next = match self.mode {
                        ReadMode::Durable => progress.durable_next,
                        ReadMode::Written => progress.written_next,
                    };
                    let Some(state) = progress.segments.iter().find(|s| s.number == self.segment)
                    else {
                        let oldest = progress
                            .segments
                            .first()
                            .map_or(progress.written_next, |s| s.first_seq);
                        return Err(Error::LogTruncated {
                            requested: self.next_seq,
                            oldest_retained: oldest,
                        });
                    };
                    let (len, sealed) = (state.len, state.sealed);
                    if self.next_seq < visible_next && (self.offset < len || sealed) {
                        break (len, sealed, visible_next);
                    }
                    if progress.closed {
                        return Ok(None);
                    }
                    if self
                        .shared
                        .progress_changed
                        .wait_until(&mut progress, deadline)
                        .timed_out()
                    {
                        return Ok(None);
                    }
                }
            };
            if self.offset >= segment_len {
                if sealed {
                    self.segment += 1;
                    self.offset = SEGMENT_HEADER_LEN as u64;
                    self.file = None;
                    self.buffer.clear();
                }
                continue;
            }
            let record = self.read_record(segment_len)?;
            if let Some(record) = record {
                if record.first_seq.get() > self.next_seq {
                    let path = self.path();
                    return Err(Error::corruption_msg(
                        path,
                        self.offset,
                        format!("log skips from {} to {}", self.next_seq, record.first_seq),
                    ));
                }
                if record.last_seq.get() < self.next_seq {
                    self.offset += record.bytes.len() as u64;
                    continue;
                }
                if record.last_seq.get() >= visible_next {
                    // Written but not yet durable: wait for the sync.
                    let mut progress = self.shared.progress.lock();
                    let still_hidden = match self.mode {
                        ReadMode::Durable => progress.durable_next <= record.last_seq.get(),
                        ReadMode::Written => progress.written_next <= record.last_seq.get(),
                    };
                    if still_hidden
                        && (progress.closed
                            || self
                                .shared
                                .progress_changed
                                .wait_until(&mut progress, deadline)
                                .timed_out())
                    {
                        return Ok(None);
                    }
                    continue;
                }
                self.offset += record.bytes.len() as u64;
                self.next_seq = record.last_seq.get() + 1;
                return Ok(Some(record));
            }
            // An ignorable record type: skipped inside read_record.
        }
    }

    fn path(&self) -> PathBuf {
        self.shared.segment_path(self.segment)
    }

    fn open_segment(&mut self) -> Result<Arc<dyn File>> {
        if let Some((_, file)) = &self.file {
            return Ok(Arc::clone(file));
        }
        let path = self.path();
        let file = match self.shared.fs.open(&path, OpenMode::Read) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let oldest = {
                    let progress = self.shared.progress.lock();
                    progress
                        .segments
                        .first()
                        .map_or(progress.written_next, |s| s.first_seq)
                };
                return Err(Error::LogTruncated {
                    requested: self.next_seq,
                    oldest_retained: oldest,
                });
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| Error::io("read", &path, e))?;
        SegmentHeader::decode(&header)
            .and_then(|h| h.check(self.shared.database_id, self.segment))
            .map_err(|e| Error::corruption(&path, e))?;
        self.file = Some((path, Arc::clone(&file)));
        self.buffer.clear();
        Ok(file)
    }

    /// Ensures the buffer holds `[offset, offset + len)`, reading at most up
    /// to `limit` (the published segment length).
    fn fill(&mut self, file: &Arc<dyn File>, offset: u64, len: u64, limit: u64) -> Result<()> {
        let buffered_end = self.buffer_offset + self.buffer.len() as u64;
        if offset >= self.buffer_offset && offset + len <= buffered_end {
            return Ok(());
        }
        let want = len.max(READ_CHUNK as u64).min(limit.saturating_sub(offset));
        if want < len {
            return Err(Error::corruption_msg(
                self.path(),
                offset,
                "record extends past the written log",
            ));
        }
        let want = usize::try_from(want)
            .map_err(|_| Error::corruption_msg(self.path(), offset, "record too large"))?;
        self.buffer.clear();
        self.buffer.resize(want, 0);
        file.read_exact_at(&mut self.buffer, offset)
            .map_err(|e| Error::io("read", self.path(), e))?;
        self.buffer_offset = offset;
        Ok(())
    }

    /// Reads and verifies the record at `self.offset`. `Ok(None)` for an
    /// ignorable record, which is skipped.
    fn read_record(&mut self, limit: u64) -> Result<Option<LogRecord>> {
        let file = self.open_segment()?;
        let offset = self.offset;
        self.fill(&file, offset, RECORD_HEADER_LEN as u64, limit)?;
        let start = (offset - self.buffer_offset) as usize;
        let length = self
            .buffer
            .get(start + 4..start + 8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .unwrap_or(0);
        if length > MAX_RECORD_PAYLOAD {
            return Err(Error::corruption_msg(
                self.path(),
                offset,
                format!("record length {length} too large"),
            ));
        }
        let framed = RECORD_HEADER_LEN as u64 + u64::from(length);
        self.fill(&file, offset, framed, limit)?;
        let start = (offset - self.buffer_offset) as usize;
        let bytes = self
            .buffer
            .get(start..start + framed as usize)
            .unwrap_or_default();
        let record =
            decode_record(bytes).map_err(|e| Error::corruption(self.path(), e.at(offset)))?;
        match record.record_type {
            strata_format::wal::RecordType::Batch => {}
            strata_format::wal::RecordType::Ignorable(_) => {
                self.offset += framed;
                return Ok(None);
            }
            strata_format::wal::RecordType::Edit => {
                return Err(Error::corruption_msg(
                    self.path(),
                    offset,
                    "a manifest record in a log segment",
                ));
            }
        }
        let batch = decode_batch(record.payload)
            .map_err(|e| Error::corruption(self.path(), e.at(offset + RECORD_HEADER_LEN as u64)))?;
        Ok(Some(LogRecord {
            first_seq: SeqNo(batch.first_seq),
            last_seq: SeqNo(batch.last_seq()),
            bytes: bytes.to_vec(),
        }))
    }
}
