//! One stream's pump: durable records from the log, filtered for the
//! replica's ranges, packed into messages, into a bounded channel;
//! heartbeats; the slot bound; the going-away status at shutdown.

use super::*;

/// Records are packed into one message up to about this many bytes.
const PACK_BYTES: usize = 1 << 20;

/// How long a stopping upstream's pump waits for room to queue its
/// [`going_away`] status.
const GOING_AWAY_WAIT: Duration = Duration::from_secs(2);

/// How long a pump waits for records written without sync to become
/// durable before it syncs the log itself.
const SYNC_WAIT: Duration = Duration::from_millis(2);

/// Reads the log and feeds one stream.
pub(super) struct Pump {
    pub(super) upstream: Upstream,
    pub(super) db: Arc<Db>,
    pub(super) id: String,
    pub(super) stream: u64,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) tx: mpsc::Sender<Result<UpstreamMessage, Status>>,
    pub(super) prev: Option<[u8; 8]>,
    /// For a range-limited credential: what it is shown of each record.
    pub(super) filter: Option<RangeFilter>,
    /// Who subscribed, checked again after every credentials reload.
    pub(super) principal: Principal,
    pub(super) auth_generation: u64,
}

impl Pump {
    pub(super) fn run(mut self, mut reader: LogReader) {
        let interval = self.upstream.shared.config.heartbeat_interval;
        let mut last_heartbeat = Instant::now();
        while !self.cancel.load(Ordering::Acquire) {
            if !self.database_current() {
                // A replica serving this stream is installing a snapshot: it
                // waits for this handle to go; the downstream starts over.
                let _ = self.tx.blocking_send(Err(Status::unavailable(
                    "this node's database is being replaced (it bootstraps from a snapshot); reconnect",
                )));
                break;
            }
            let mut wait = interval.saturating_sub(last_heartbeat.elapsed());
            if self.db.last_seq() > self.db.durable_seq() {
                // Written but not durable: give a syncing writer a moment,
                // then sync for the replicas.
                wait = wait.min(SYNC_WAIT);
            }
            let message = match reader.next(wait) {
                Ok(Some(record)) => match self.pack(record, &mut reader) {
                    Ok(message) => Some(message),
                    Err(status) => {
                        let _ = self.tx.blocking_send(Err(status));
                        break;
                    }
                },
                Ok(None) => {
                    // Records are shipped once durable: sync what was
                    // written without sync, so it reaches replicas within
                    // about one heartbeat interval.
                    if self.db.last_seq() > self.db.durable_seq()
                        && let Err(error) = self.db.sync()
                    {
                        let _ = self.tx.blocking_send(Err(Status::unavailable(format!(
                            "syncing this node's log: {error}"
                        ))));
                        break;
                    }
                    None
                }
                Err(Error::LogTruncated { requested, .. }) => {
                    let _ = self.tx.blocking_send(Err(Status::failed_precondition(format!(
                        "the replica's slot was dropped and the log no longer holds {requested}: bootstrap from a snapshot"
                    ))));
                    break;
                }
                Err(error) => {
                    let _ = self.tx.blocking_send(Err(Status::unavailable(format!(
                        "reading this node's log: {error}"
                    ))));
                    break;
                }
            };
            if let Some(message) = message
                && self.tx.blocking_send(Ok(message)).is_err()
            {
                break;
            }
            if last_heartbeat.elapsed() >= interval {
                last_heartbeat = Instant::now();
                if !self.still_allowed() {
                    let status = Status::permission_denied(
                        "the credential this stream was opened with was revoked or changed",
                    );
                    self.upstream.shared.count_refusal("subscribe", &status);
                    let _ = self.tx.blocking_send(Err(status));
                    break;
                }
                let heartbeat = UpstreamMessage {
                    kind: Some(upstream_message::Kind::Heartbeat(Heartbeat {
                        durable_seq: self.db.durable_seq().get(),
                        sent_at_micros: now_micros(),
                    })),
                };
                if self.tx.blocking_send(Ok(heartbeat)).is_err() {
                    break;
                }
                self.enforce_slot_bound();
            }
        }
        if self.upstream.shared.shutting_down.load(Ordering::Acquire) {
            self.say_going_away();
        }
        self.upstream.disconnect(&self.id, self.stream);
    }

    /// Whether this stream's database is still the node's (a bootstrap
    /// replaces it).
    fn database_current(&self) -> bool {
        self.upstream
            .shared
            .db
            .get()
            .is_some_and(|db| Arc::ptr_eq(&db, &self.db))
    }

    /// Ends the stream with [`going_away`], waiting a bounded time for room
    /// in the channel (a slow replica's channel may be full; the node's
    /// grace period bounds the rest).
    fn say_going_away(&self) {
        let deadline = Instant::now() + GOING_AWAY_WAIT;
        let mut message = Err(going_away());
        loop {
            match self.tx.try_send(message) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(mpsc::error::TrySendError::Full(_)) => return,
            }
        }
    }

    /// False once a credentials reload no longer grants this stream's
    /// principal what it was granted (it is then ended).
    fn still_allowed(&mut self) -> bool {
        let auth = &self.upstream.shared.config.auth;
        let generation = auth.generation();
        if generation == self.auth_generation {
            return true;
        }
        self.auth_generation = generation;
        let allowed = auth.still_grants(&self.principal);
        if !allowed {
            tracing::warn!(
                replica = %self.id,
                credential = %self.principal.name,
                "credential revoked: ending the replica's stream"
            );
        }
        allowed
    }

    /// One message holding `first` and the records right behind it that
    /// are already durable, up to `PACK_BYTES`.
    fn pack(
        &mut self,
        first: LogRecord,
        reader: &mut LogReader,
    ) -> Result<UpstreamMessage, Status> {
        let first = self.record(first)?;
        let mut bytes = first.record.len();
        let mut records = vec![first];
        while bytes < PACK_BYTES {
            match reader.next(Duration::ZERO) {
                Ok(Some(next)) => {
                    let record = self.record(next)?;
                    bytes += record.record.len();
                    records.push(record);
                }
                // Nothing ready, or an error the next read reports again.
                _ => break,
            }
        }
        Ok(UpstreamMessage {
            kind: Some(upstream_message::Kind::Records(RecordBatch { records })),
        })
    }

    fn record(&mut self, record: LogRecord) -> Result<Record, Status> {
        let payload = strata_format::wal::decode_record(&record.bytes)
            .map_err(|e| {
                Status::internal(format!(
                    "this node's log record at {}: {e}",
                    record.first_seq.get()
                ))
            })?
            .payload;
        let prev_hash = self.prev.map(|h| h.to_vec()).unwrap_or_default();
        let shown = match &self.filter {
            Some(filter) => {
                let shown = filter.payload(payload).map_err(|e| {
                    Status::internal(format!(
                        "this node's log record at {}: {e}",
                        record.first_seq.get()
                    ))
                })?;
                self.prev = Some(record_hash(&shown));
                Some(RangeFilter::record(&shown))
            }
            None => {
                self.prev = Some(record_hash(payload));
                None
            }
        };
        {
            let mut slots = self.upstream.shared.slots.lock();
            if let Some(slot) = slots.get_mut(&self.id).filter(|s| s.stream == self.stream) {
                slot.sent = record.last_seq.get();
                slot.in_flight
                    .push_back((record.last_seq.get(), Instant::now()));
            }
        }
        Ok(Record {
            first_seq: record.first_seq.get(),
            last_seq: record.last_seq.get(),
            record: shown.unwrap_or(record.bytes),
            prev_hash,
        })
    }

    /// Drops the slot's pin once the replica is more than `slot_max_bytes`
    /// of log behind: the log may then be released under it.
    fn enforce_slot_bound(&self) {
        let max = self.upstream.shared.config.slot_max_bytes;
        let mut slots = self.upstream.shared.slots.lock();
        if let Some(slot) = slots.get_mut(&self.id).filter(|s| s.stream == self.stream)
            && slot.pin.is_some()
            && LogSource::of(&self.db).lag(SeqNo(slot.applied)).bytes > max
        {
            tracing::warn!(
                replica = %self.id,
                applied = slot.applied,
                slot_max_bytes = max,
                "replica too far behind: its slot no longer holds the log (it will bootstrap)"
            );
            slot.pin = None;
        }
    }
}
