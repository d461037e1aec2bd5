//! Replica reads: a snapshot once the replica has applied a sequence
//! number, or is within a staleness bound of its upstream.

use super::*;

/// The longest a read waiting for `min_seq` holds the database between two
/// checks that it is still the replica's (a bootstrap replaces it).
const READ_WAIT_SLICE: Duration = Duration::from_millis(50);

/// What a replica read must wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Wait until the replica has applied at least this sequence number (a
    /// commit token from a write on the primary).
    pub min_seq: Option<SeqNo>,
    /// Wait until the replica is at most this far behind its upstream:
    /// the replica has applied everything its upstream had made durable
    /// when a heartbeat received no longer than this ago was sent. Holds
    /// while the primary is idle (heartbeats keep coming).
    pub max_staleness: Option<Duration>,
    /// The longest the read waits for either.
    pub timeout: Duration,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            min_seq: None,
            max_staleness: None,
            timeout: Duration::from_secs(1),
        }
    }
}

/// A replica read's answer: the value and the sequence number it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAnswer {
    /// The value, or `None` if the key is absent at `seq`.
    pub value: Option<Vec<u8>>,
    /// Every write up to and including this is reflected.
    pub seq: SeqNo,
}

/// Why a replica read was not answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// `min_seq` was not reached within the timeout.
    #[error("the replica has applied up to {applied}, not yet {wanted} (timed out)")]
    NotYet {
        /// The sequence number asked for.
        wanted: u64,
        /// What the replica has applied.
        applied: u64,
    },
    /// The staleness bound was not met within the timeout.
    #[error(
        "the replica is {staleness:?} behind its upstream (unknown if None), over the bound {bound:?}"
    )]
    Stale {
        /// How far behind it is, if known.
        staleness: Option<Duration>,
        /// The bound asked for.
        bound: Duration,
    },
    /// The replica has no database (it is bootstrapping).
    #[error("the replica has no database yet (bootstrapping from a snapshot)")]
    Unavailable,
    /// The database failed the read.
    #[error(transparent)]
    Db(#[from] Error),
}

/// Heartbeats heard: (upstream durable sequence number, when received).
#[derive(Debug, Default)]
pub(super) struct Freshness {
    heard: VecDeque<(u64, Instant)>,
}

impl Freshness {
    pub(super) fn heard(&mut self, durable: u64) {
        self.heard.push_back((durable, Instant::now()));
        while self.heard.len() > 4096 {
            self.heard.pop_front();
        }
    }

    /// How long ago the newest heartbeat the replica has caught up with
    /// arrived.
    fn staleness(&self, applied: u64) -> Option<Duration> {
        self.heard
            .iter()
            .rev()
            .find(|(durable, _)| *durable <= applied)
            .map(|(_, at)| at.elapsed())
    }
}

impl Replica {
    /// A snapshot of the replica's database once `options` are met.
    /// Blocking: call from a thread that may wait.
    ///
    /// # Errors
    /// [`ReadError`] saying which condition was not met in time.
    pub fn snapshot(&self, options: &ReadOptions) -> Result<strata::Snapshot, ReadError> {
        let deadline = Instant::now() + options.timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Some(db) = self.shared.db.get() else {
                if remaining.is_zero() {
                    return Err(ReadError::Unavailable);
                }
                std::thread::sleep(Duration::from_millis(5).min(remaining));
                continue;
            };
            // Waits in slices, letting go of the database in between, so a
            // bootstrap replacing it is not held up by waiting readers.
            if let Some(min) = options.min_seq
                && !db.wait_for_seq(min, remaining.min(READ_WAIT_SLICE))
            {
                let current = self
                    .shared
                    .db
                    .get()
                    .is_some_and(|now| Arc::ptr_eq(&now, &db));
                if current && remaining <= READ_WAIT_SLICE {
                    return Err(ReadError::NotYet {
                        wanted: min.get(),
                        applied: db.last_seq().get(),
                    });
                }
                continue;
            }
            if let Some(bound) = options.max_staleness {
                let staleness = self.shared.freshness.lock().staleness(db.last_seq().get());
                if staleness.is_none_or(|s| s > bound) {
                    if remaining.is_zero() {
                        return Err(ReadError::Stale { staleness, bound });
                    }
                    std::thread::sleep(Duration::from_millis(2).min(remaining));
                    continue;
                }
            }
            return Ok(db.snapshot());
        }
    }

    /// Reads `key` once `options` are met; the answer says which sequence
    /// number it reflects. Blocking.
    ///
    /// # Errors
    /// As [`Replica::snapshot`], or the database's read error.
    pub fn read(&self, key: &[u8], options: &ReadOptions) -> Result<ReadAnswer, ReadError> {
        let snapshot = self.snapshot(options)?;
        Ok(ReadAnswer {
            value: snapshot.get(key)?,
            seq: snapshot.seq(),
        })
    }
}
