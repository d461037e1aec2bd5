//! The write path: limits, throttle, group commit, memtable insert,
//! publication; freezing full memtables.

use super::*;

impl Inner {
    pub(super) fn write(&self, batch: WriteBatch, options: &WriteOptions) -> Result<SeqNo> {
        self.check_open()?;
        if let Some(message) = self.follower.read().as_ref() {
            return Err(Error::ReadOnly(message.clone()));
        }
        if let Some(why) = &batch.invalid {
            return Err(Error::InvalidArgument(format!(
                "{why}; nothing was written"
            )));
        }
        let limits = &self.options;
        if batch.key_bytes_max > limits.key_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "a key of {} bytes exceeds the limit of {} bytes (key_bytes_max); nothing was written",
                batch.key_bytes_max, limits.key_bytes_max
            )));
        }
        if batch.value_bytes_max > limits.value_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "a value of {} bytes exceeds the limit of {} bytes (value_bytes_max); nothing was written",
                batch.value_bytes_max, limits.value_bytes_max
            )));
        }
        if batch.encoded_len() > limits.batch_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "a batch of {} bytes exceeds the limit of {} bytes (batch_bytes_max); nothing was written",
                batch.encoded_len(),
                limits.batch_bytes_max
            )));
        }
        let limit = self.batch_limit.load(Ordering::Acquire);
        if batch.encoded_len() > limit {
            return Err(Error::InvalidArgument(format!(
                "a batch of {} bytes exceeds the limit of {limit} bytes ({}); nothing was written",
                batch.encoded_len(),
                self.batch_limit_why.lock()
            )));
        }
        if batch.is_empty() {
            return Ok(SeqNo(self.visibility.visible()));
        }
        background::throttle(self, batch.inner.as_bytes())?;
        let batch_bytes = batch.encoded_len() as u64;
        let last = {
            let _gate = self.write_gate.read();
            let (commit, bytes) = self.wal.append_returning(batch.inner, options.sync)?;
            let Some(batch) = view_built_batch(&bytes) else {
                // The log took a batch this engine built; it cannot lack a header.
                return Err(Error::Poisoned {
                    reason: Arc::from("internal error: a committed batch lost its header"),
                });
            };
            let current = self.view.load();
            apply_batch(&current.active, &batch, &self.retain, Some(&current.router));
            self.visibility
                .publish_and_wait(commit.first_seq.get(), commit.last_seq.get());
            commit.last_seq
        };
        self.freeze_if_full(batch_bytes);
        Ok(last)
    }

    /// Freezes the active memtable if it is full and wakes the flusher.
    /// Also when the log holds more unflushed bytes than a restart may
    /// replay (`wal_replay_bytes_max`), and nothing is being flushed.
    pub(super) fn freeze_if_full(&self, batch_bytes: u64) {
        if self.view.load().active.approximate_bytes() >= self.options.memtable_bytes_max {
            self.freeze(false);
            return;
        }
        // Measuring the log takes a lock: do it each time another eighth of
        // the cap has been written.
        let cap = self.options.wal_replay_bytes_max;
        let since = self
            .log_bytes_since_check
            .fetch_add(batch_bytes, Ordering::Relaxed)
            + batch_bytes;
        if since < (cap / 8).max(1) {
            return;
        }
        self.log_bytes_since_check.store(0, Ordering::Relaxed);
        let log = self
            .wal
            .bytes_from(SeqNo(self.flushed.load(Ordering::Relaxed) + 1));
        if log <= cap {
            return;
        }
        if self.mem.read().frozen.is_empty() {
            self.freeze(true);
        } else if log > cap.saturating_mul(2) {
            // Writers outrun the flush: wait for it, so the log a restart
            // replays stays within about twice the cap.
            background::wait_for_flush_stall(self);
        }
    }

    /// Freezes the active memtable if it holds anything and either `always`
    /// or it is full.
    pub(super) fn freeze(&self, always: bool) {
        let _gate = self.write_gate.write();
        let mut mem = self.mem.write();
        let full = mem.active.approximate_bytes() >= self.options.memtable_bytes_max;
        if mem.active.is_empty() || !(always || full) {
            return;
        }
        let fresh = Arc::new(Memtable::new(self.options.memtable_bytes_max));
        let frozen = std::mem::replace(&mut mem.active, fresh);
        mem.frozen.push_back(frozen);
        drop(mem);
        self.publish_view();
        background::refresh_stall_hint(self);
        let mut work = self.work.lock();
        work.generation += 1;
        self.work_changed.notify_all();
    }

    pub(super) fn flush_all(&self) -> Result<()> {
        self.freeze(true);
        background::wait_flushed(self)
    }
}

/// Inserts every operation of `batch` (operation `i` at `first_seq + i`)
/// into `memtable`, in one pass over its encoding, skipping puts and
/// deletes of keys `retain` does not hold (their sequence numbers stay
/// used), and counts each operation against its range in `router`.
pub(super) fn apply_batch(
    memtable: &Memtable,
    batch: &BatchView<'_>,
    retain: &crate::ranges::KeyIntervals,
    router: Option<&Router>,
) {
    let everything = retain.is_everything();
    // Large batches are inserted sorted (see `Memtable::insert_many`).
    let mut sorted: Option<Vec<crate::memtable::BatchInsert<'_>>> =
        (batch.count >= SORTED_INSERT_OPS).then(|| Vec::with_capacity(batch.count as usize));
    for (seq, op) in (batch.first_seq..).zip(batch.ops()) {
        let (key, bytes) = match op {
            BatchOp::Put { key, value } => {
                if everything || retain.contains(key) {
                    match &mut sorted {
                        Some(ops) => ops.push((key, seq, Some(value))),
                        None => memtable.put(key, seq, value),
                    }
                }
                (key, key.len() + value.len())
            }
            BatchOp::Delete { key } => {
                if everything || retain.contains(key) {
                    match &mut sorted {
                        Some(ops) => ops.push((key, seq, None)),
                        None => memtable.delete(key, seq),
                    }
                }
                (key, key.len())
            }
            BatchOp::DeleteRange { start, end } => {
                memtable.delete_range(start, end, seq);
                (start, start.len() + end.len())
            }
            BatchOp::Skip => continue,
        };
        if let Some(counters) = router.and_then(|r| r.counters_for(key)) {
            counters.writes.fetch_add(1, Ordering::Relaxed);
            counters
                .write_bytes
                .fetch_add(bytes as u64, Ordering::Relaxed);
            counters.last_seq.fetch_max(seq, Ordering::Relaxed);
        }
    }
    if let Some(ops) = &mut sorted {
        memtable.insert_many(ops);
    }
    memtable.note_applied(batch.last_seq());
}

/// Batches of at least this many operations are sorted before their
/// memtable inserts.
const SORTED_INSERT_OPS: u32 = 16;
