//! Semi-synchronous writes: a local durable write, then a wait until k
//! replicas acknowledge it as durable (with a timeout).

use super::*;

/// What a semi-synchronous write achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SemiSyncOutcome {
    /// The write's sequence number (committed and durable locally).
    pub seq: SeqNo,
    /// Replicas that acknowledged it as durable within the timeout.
    pub replicas: usize,
    /// Whether that is at least the number asked for.
    pub confirmed: bool,
}

impl Upstream {
    /// Waits until at least `k` replicas have acknowledged `seq` as durable,
    /// at most `timeout`; returns how many had when it returned (which is
    /// below `k` on a timeout). A semi-synchronous write is a local write
    /// followed by this wait; see [`Upstream::write`].
    #[must_use]
    pub fn wait_for_replicas(&self, seq: SeqNo, k: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut slots = self.shared.slots.lock();
        loop {
            let count = slots
                .values()
                .filter(|s| !s.transient && s.durable >= seq.get())
                .count();
            if count >= k
                || self
                    .shared
                    .acked
                    .wait_until(&mut slots, deadline)
                    .timed_out()
            {
                return slots
                    .values()
                    .filter(|s| !s.transient && s.durable >= seq.get())
                    .count();
            }
        }
    }

    /// A semi-synchronous write: writes `batch` (durably, `sync: true`),
    /// then waits up to `timeout` for `k` replicas to acknowledge it as
    /// durable. The write itself is committed either way; the answer says
    /// whether the replicas confirmed it.
    ///
    /// # Errors
    /// As [`Db::write`]; [`Error::Closed`] while the database is replaced.
    pub fn write(
        &self,
        batch: strata::WriteBatch,
        k: usize,
        timeout: Duration,
    ) -> strata::Result<SemiSyncOutcome> {
        let db = self.shared.db.get().ok_or(Error::Closed)?;
        let seq = db.write(batch, &strata::WriteOptions { sync: true })?;
        let replicas = if k == 0 {
            0
        } else {
            self.wait_for_replicas(seq, k, timeout)
        };
        Ok(SemiSyncOutcome {
            seq,
            replicas,
            confirmed: replicas >= k,
        })
    }
}
