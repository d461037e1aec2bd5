//! The upstream side: the `strata.v1.Replication` service over a node's
//! database (a primary's, or a replica's for downstream replicas).
//!
//! One `Subscribe` stream per replica:
//! 1. The replica's `Subscribe` names its position (`applied_seq`, the hash
//!    of its last record, its database id and epoch); the upstream checks
//!    them (fork, epoch, range, retention) before streaming anything.
//! 2. A pump thread reads the log with a durable-only tailing reader and
//!    sends `Record`s, and `Heartbeat`s every `heartbeat_interval` (also
//!    while records flow), into a bounded channel; when it finds records
//!    written without sync and nothing durable to send for 2 ms, it syncs
//!    the log, so unsynced writes reach replicas within milliseconds. The
//!    channel is bounded: when the replica is slow
//!    the pump blocks on the channel, so the replica holds back only its
//!    own stream, never the primary's writes, and memory stays bounded.
//! 3. The replica's `Ack`s update its slot: the slot pins the log from the
//!    replica's applied position so the replica can resume, up to
//!    `slot_max_bytes` of log, beyond which the pin is dropped and the
//!    replica must bootstrap from a snapshot.
//!
//! 4. [`Upstream::shut_down`] (a node stopping) ends every stream with
//!    [`going_away`] (`UNAVAILABLE`, marked with the `strata-going-away`
//!    metadata key): the replica reconnects with backoff and counts it as
//!    no error; new `Subscribe`s are answered the same way.
//!
//! Invariants: a slot's position only moves forward; a new stream of the
//! same replica id ends the old one (one stream per replica id); an ack
//! beyond what was sent ends the stream (`INVALID_ARGUMENT`).

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use strata::replication::{LogPin, LogReader, LogRecord, LogSource};
use strata::{Db, Error, SeqNo};
use strata_proto::v1::replication_server::{Replication, ReplicationServer};
use strata_proto::v1::{
    Ack, BeginSnapshotRequest, FetchSnapshotRequest, Heartbeat, Record, RecordBatch,
    ReplicaMessage, SnapshotChunk, SnapshotInfo, UpstreamMessage, Welcome, replica_message,
    upstream_message,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{Auth, Principal, Role};
use crate::epoch::Epoch;
use crate::filter::RangeFilter;
use crate::hash::record_hash;
use crate::shared::SharedDb;
use crate::snapshot::Snapshots;

/// How an upstream serves replicas.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// A heartbeat at least this often on every stream. Default: 200 ms.
    pub heartbeat_interval: Duration,
    /// A replica's slot keeps at most this many bytes of log for it; a
    /// replica further behind loses its slot and must bootstrap from a
    /// snapshot. Default: 1 GiB.
    pub slot_max_bytes: u64,
    /// Messages (each up to about 1 MiB of records) buffered per stream
    /// before the pump waits. Default: 16.
    pub stream_buffer: usize,
    /// Where snapshots are built (on the same file system as the data, so
    /// tables are hard-linked). Required.
    pub snapshot_dir: std::path::PathBuf,
    /// A snapshot is deleted this long after its last fetch. Default: 60 s.
    pub snapshot_lease: Duration,
    /// Bytes per snapshot chunk. Default: 1 MiB.
    pub chunk_bytes: usize,
    /// How long the first message may take to arrive. Default: 10 s.
    pub subscribe_timeout: Duration,
    /// The key ranges this node holds (a range-scoped replica serving
    /// downstream replicas); empty: every key. A replica asking for keys
    /// outside them is refused.
    pub holds_ranges: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Who may replicate: with credentials configured, every call must
    /// present a replica token or a client certificate naming an allowed
    /// identity, and may subscribe only as the replica id and for the key
    /// ranges that credential names. Default: [`Auth::open`] (anyone).
    pub auth: Auth,
    /// Told of every call refused for its credential (UNAUTHENTICATED or
    /// PERMISSION_DENIED), with the method's name, so a node can count
    /// refusals beside its other services'. Default: none (they are still
    /// counted in [`Upstream::denied`]).
    pub on_denied: Option<OnDenied>,
}

/// A hook told of each replication call refused for its credential, with
/// the method's name (`"subscribe"`, `"begin_snapshot"`,
/// `"fetch_snapshot"`).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// let denied = Arc::new(AtomicU64::new(0));
/// let counter = Arc::clone(&denied);
/// let hook = strata_replication::upstream::OnDenied::new(move |_method| {
///     counter.fetch_add(1, Ordering::Relaxed);
/// });
/// hook.call("subscribe");
/// assert_eq!(denied.load(Ordering::Relaxed), 1);
/// ```
#[derive(Clone)]
pub struct OnDenied(Arc<dyn Fn(&'static str) + Send + Sync>);

impl OnDenied {
    /// A hook calling `f`.
    pub fn new(f: impl Fn(&'static str) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Tells the hook of a refusal of `method`.
    pub fn call(&self, method: &'static str) {
        (self.0)(method);
    }
}

impl std::fmt::Debug for OnDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnDenied(..)")
    }
}

impl UpstreamConfig {
    /// The defaults, with snapshots built under `snapshot_dir`.
    #[must_use]
    pub fn new(snapshot_dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(200),
            slot_max_bytes: 1 << 30,
            stream_buffer: 16,
            snapshot_dir: snapshot_dir.into(),
            snapshot_lease: Duration::from_secs(60),
            chunk_bytes: 1 << 20,
            subscribe_timeout: Duration::from_secs(10),
            holds_ranges: Vec::new(),
            auth: Auth::open(),
            on_denied: None,
        }
    }
}

/// What the upstream knows of one replica.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// The replica's id.
    pub id: String,
    /// Whether a stream is open.
    pub connected: bool,
    /// The replica's last acknowledged durable sequence number.
    pub durable_seq: u64,
    /// The replica's last acknowledged applied sequence number.
    pub applied_seq: u64,
    /// Records (sequence numbers) the replica is behind this node's
    /// durable log.
    pub lag_records: u64,
    /// Log bytes the replica is behind.
    pub lag_bytes: u64,
    /// How long ago the oldest record the replica has not acknowledged was
    /// sent (0 when it is caught up).
    pub lag_millis: u64,
    /// Whether the slot still pins the log for the replica.
    pub slot_held: bool,
}

#[derive(Debug)]
struct Slot {
    stream: u64,
    cancel: Arc<AtomicBool>,
    connected: bool,
    pin: Option<LogPin>,
    durable: u64,
    applied: u64,
    sent: u64,
    /// (last sequence number, when sent) of records not yet acknowledged.
    in_flight: VecDeque<(u64, Instant)>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) db: SharedDb,
    pub(crate) epoch: Epoch,
    pub(crate) config: UpstreamConfig,
    slots: Mutex<HashMap<String, Slot>>,
    acked: Condvar,
    next_stream: AtomicU64,
    pub(crate) snapshots: Snapshots,
    /// Set by [`Upstream::shut_down`]: streams end, subscribes are refused.
    shutting_down: AtomicBool,
    /// Calls refused for their credential.
    denied: AtomicU64,
}

impl Shared {
    /// Counts a refusal for a credential (see [`Upstream::denied`]).
    fn count_refusal(&self, method: &'static str, status: &Status) {
        if matches!(
            status.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        ) {
            self.denied.fetch_add(1, Ordering::Relaxed);
            if let Some(hook) = &self.config.on_denied {
                hook.call(method);
            }
            tracing::debug!(method, code = ?status.code(), "replication call refused");
        }
    }
}

/// The replication service of one node. Cheap to clone.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use strata::{Db, Options};
/// use strata_replication::{SharedDb, Upstream, UpstreamConfig, epoch::Epoch};
/// let db = SharedDb::new(Db::open("primary", Options::default())?);
/// let upstream = Upstream::new(db, Epoch::open("primary".as_ref())?, UpstreamConfig::new("primary.snapshots"));
/// tonic::transport::Server::builder()
///     .add_service(upstream.service())
///     .serve("127.0.0.1:7001".parse()?)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
}

impl Upstream {
    /// The service over `db`, serving `epoch`.
    #[must_use]
    pub fn new(db: SharedDb, epoch: Epoch, config: UpstreamConfig) -> Self {
        let snapshots = Snapshots::new(config.snapshot_dir.clone(), config.snapshot_lease);
        Self {
            shared: Arc::new(Shared {
                db,
                epoch,
                config,
                slots: Mutex::new(HashMap::new()),
                acked: Condvar::new(),
                next_stream: AtomicU64::new(1),
                snapshots,
                shutting_down: AtomicBool::new(false),
                denied: AtomicU64::new(0),
            }),
        }
    }

    /// The tonic service to add to a server, with message-size limits set
    /// (16 MiB decoded on both ends; batches are limited well below).
    #[must_use]
    pub fn service(&self) -> ReplicationServer<Upstream> {
        ReplicationServer::new(self.clone())
            .max_decoding_message_size(1 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Ends every replication stream with [`going_away`] and answers new
    /// `Subscribe`s the same way, for a node that is stopping. Each stream
    /// ends within about one heartbeat interval (its pump notices between
    /// reads), or once its replica has taken the messages already queued.
    pub fn shut_down(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        for slot in self.shared.slots.lock().values() {
            slot.cancel.store(true, Ordering::Release);
        }
    }

    /// Replication calls refused for their credential (UNAUTHENTICATED or
    /// PERMISSION_DENIED: no or a wrong credential, one without the replica
    /// role, another replica's id, ranges it may not see or this node does
    /// not hold, or a stream whose credential was revoked) since start.
    #[must_use]
    pub fn denied(&self) -> u64 {
        self.shared.denied.load(Ordering::Relaxed)
    }

    /// Counts `result` if it refuses the call for its credential.
    fn count_refusal<T>(&self, method: &'static str, result: &Result<T, Status>) {
        if let Err(status) = result {
            self.shared.count_refusal(method, status);
        }
    }

    /// How many replication streams are open.
    #[must_use]
    pub fn open_streams(&self) -> usize {
        self.shared
            .slots
            .lock()
            .values()
            .filter(|s| s.connected)
            .count()
    }

    /// Every replica this node has served since it started.
    #[must_use]
    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        let db = self.shared.db.get();
        let durable = db.as_ref().map_or(0, |db| db.durable_seq().get());
        let now = Instant::now();
        let mut out: Vec<ReplicaStatus> = self
            .shared
            .slots
            .lock()
            .iter()
            .map(|(id, slot)| ReplicaStatus {
                id: id.clone(),
                connected: slot.connected,
                durable_seq: slot.durable,
                applied_seq: slot.applied,
                lag_records: durable.saturating_sub(slot.applied),
                lag_bytes: if durable > slot.applied {
                    db.as_ref()
                        .map_or(0, |db| LogSource::of(db).lag(SeqNo(slot.applied)).bytes)
                } else {
                    0
                },
                lag_millis: slot
                    .in_flight
                    .front()
                    .map_or(0, |(_, sent)| now.duration_since(*sent).as_millis() as u64),
                slot_held: slot.pin.is_some(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Waits until at least `k` replicas have acknowledged `seq` as durable,
    /// at most `timeout`; returns how many had when it returned (which is
    /// below `k` on a timeout). A semi-synchronous write is a local write
    /// followed by this wait; see [`Upstream::write`].
    #[must_use]
    pub fn wait_for_replicas(&self, seq: SeqNo, k: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut slots = self.shared.slots.lock();
        loop {
            let count = slots.values().filter(|s| s.durable >= seq.get()).count();
            if count >= k
                || self
                    .shared
                    .acked
                    .wait_until(&mut slots, deadline)
                    .timed_out()
            {
                return slots.values().filter(|s| s.durable >= seq.get()).count();
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

    /// The caller, if it may use the replication service.
    fn authorize<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let principal = self.shared.config.auth.authenticate(request)?;
        principal.require(&[Role::Replica], "replicate")?;
        Ok(principal)
    }

    fn db(&self) -> Result<Arc<Db>, Status> {
        self.shared
            .db
            .get()
            .ok_or_else(|| Status::unavailable("the database is being replaced (bootstrap)"))
    }

    fn on_ack(&self, id: &str, stream: u64, ack: &Ack) -> Result<(), Status> {
        let mut slots = self.shared.slots.lock();
        let Some(slot) = slots.get_mut(id).filter(|s| s.stream == stream) else {
            return Err(Status::cancelled(
                "a newer stream of this replica replaced this one",
            ));
        };
        if ack.applied_seq > slot.sent || ack.durable_seq > slot.sent {
            return Err(Status::invalid_argument(format!(
                "ack of applied {} / durable {} beyond the last record sent ({})",
                ack.applied_seq, ack.durable_seq, slot.sent
            )));
        }
        slot.applied = slot.applied.max(ack.applied_seq);
        slot.durable = slot.durable.max(ack.durable_seq);
        while slot
            .in_flight
            .front()
            .is_some_and(|(last, _)| *last <= slot.applied)
        {
            slot.in_flight.pop_front();
        }
        if let Some(pin) = &slot.pin {
            pin.advance(SeqNo(slot.applied.max(1)))
                .map_err(|e| Status::internal(format!("advancing the slot's pin: {e}")))?;
        }
        drop(slots);
        self.shared.acked.notify_all();
        Ok(())
    }

    fn disconnect(&self, id: &str, stream: u64) {
        let mut slots = self.shared.slots.lock();
        if let Some(slot) = slots.get_mut(id).filter(|s| s.stream == stream) {
            slot.connected = false;
            slot.cancel.store(true, Ordering::Release);
        }
    }
}

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

/// Whether `id` is a valid replica id: 1 to 128 bytes of `[A-Za-z0-9._-]`
/// (also what a replica token's name and a certificate identity must be).
///
/// ```
/// use strata_replication::upstream::valid_replica_id;
/// assert!(valid_replica_id("replica-1"));
/// assert!(!valid_replica_id("a b"));
/// ```
#[must_use]
pub fn valid_replica_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub use crate::wire::{GOING_AWAY_KEY, going_away, is_going_away};
pub(crate) use crate::wire::{now_micros, parse_database_id};

/// Opens the log at the replica's position and checks it continues the
/// replica's history. Returns the reader (positioned after the replica's
/// last record) and the hash of that record.
fn open_position(
    db: &Db,
    applied: u64,
    applied_hash: &[u8],
    filter: Option<&RangeFilter>,
) -> Result<(LogReader, Option<[u8; 8]>), Status> {
    let truncated = |e: Error| match e {
        Error::LogTruncated {
            requested,
            oldest_retained,
        } => Status::failed_precondition(format!(
            "this node's log no longer holds sequence number {requested} (the oldest retained is {oldest_retained}): bootstrap from a snapshot"
        )),
        Error::BeyondEnd { requested, next } => Status::out_of_range(format!(
            "sequence number {requested} is beyond this node's log (next is {next})"
        )),
        other => Status::internal(other.to_string()),
    };
    if applied == 0 {
        let oldest = LogSource::of(db).oldest_retained();
        if oldest.get() > 1 {
            return Err(Status::failed_precondition(format!(
                "this node's log starts at sequence number {}: an empty replica must bootstrap from a snapshot",
                oldest.get()
            )));
        }
        return Ok((
            LogSource::of(db).read_from(SeqNo(1)).map_err(truncated)?,
            None,
        ));
    }
    let mut reader = LogSource::of(db)
        .read_from(SeqNo(applied))
        .map_err(truncated)?;
    let record = reader
        .next(Duration::from_secs(5))
        .map_err(truncated)?
        .ok_or_else(|| {
            Status::unavailable(format!("the record holding {applied} is not readable yet"))
        })?;
    let payload = strata_format::wal::decode_record(&record.bytes)
        .map_err(|e| Status::internal(format!("this node's log record at {applied}: {e}")))?
        .payload;
    let hash = RangeFilter::shown_hash(filter, payload)
        .map_err(|e| Status::internal(format!("this node's log record at {applied}: {e}")))?;
    if record.last_seq.get() != applied {
        return Err(Status::aborted(format!(
            "forked history: the replica's last batch ends at {applied}, but this node's batch holding {applied} spans {}..={}",
            record.first_seq.get(),
            record.last_seq.get()
        )));
    }
    if !applied_hash.is_empty() && applied_hash != hash {
        return Err(Status::aborted(format!(
            "forked history: the replica's batch ending at {applied} differs from this node's (hash mismatch)"
        )));
    }
    Ok((reader, Some(hash)))
}

type UpstreamStream = Pin<Box<dyn Stream<Item = Result<UpstreamMessage, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn Stream<Item = Result<SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for Upstream {
    type SubscribeStream = UpstreamStream;
    type FetchSnapshotStream = ChunkStream;

    async fn subscribe(
        &self,
        request: Request<tonic::Streaming<ReplicaMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let result = self.subscribe_checked(request).await;
        self.count_refusal("subscribe", &result);
        result
    }

    async fn begin_snapshot(
        &self,
        request: Request<BeginSnapshotRequest>,
    ) -> Result<Response<SnapshotInfo>, Status> {
        let result = self.begin_snapshot_checked(request).await;
        self.count_refusal("begin_snapshot", &result);
        result
    }

    async fn fetch_snapshot(
        &self,
        request: Request<FetchSnapshotRequest>,
    ) -> Result<Response<Self::FetchSnapshotStream>, Status> {
        let result = self.fetch_snapshot_checked(request);
        self.count_refusal("fetch_snapshot", &result);
        result
    }
}

impl Upstream {
    async fn subscribe_checked(
        &self,
        request: Request<tonic::Streaming<ReplicaMessage>>,
    ) -> Result<Response<UpstreamStream>, Status> {
        if self.shared.shutting_down.load(Ordering::Acquire) {
            return Err(going_away());
        }
        // Read before the check, so a reload right after it is noticed.
        let auth_generation = self.shared.config.auth.generation();
        let principal = self.authorize(&request)?;
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.shared.config.subscribe_timeout, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Subscribe message in time"))??
            .ok_or_else(|| Status::invalid_argument("the stream ended before a Subscribe"))?;
        let Some(replica_message::Kind::Subscribe(sub)) = first.kind else {
            return Err(Status::invalid_argument(
                "the first message must be a Subscribe",
            ));
        };
        if !valid_replica_id(&sub.replica_id) {
            return Err(Status::invalid_argument(
                "replica_id must be 1 to 128 bytes of [A-Za-z0-9._-]",
            ));
        }
        if let Some(ids) = &principal.replica_ids
            && !ids.contains(&sub.replica_id)
        {
            return Err(Status::permission_denied(
                "replica_id is not the one this credential names",
            ));
        }
        let db = self.db()?;
        let own_id = db.database_id();
        if sub.database_id.is_empty() {
            if sub.applied_seq != 0 {
                return Err(Status::invalid_argument(
                    "applied_seq is set but database_id is empty",
                ));
            }
        } else {
            let id = parse_database_id(&sub.database_id)
                .ok_or_else(|| Status::invalid_argument("database_id must be 16 bytes"))?;
            if id != own_id {
                return Err(Status::failed_precondition(format!(
                    "the replica holds database {id:032x}, this node serves {own_id:032x}: bootstrap from a snapshot"
                )));
            }
        }
        let wanted = crate::ranges_from_proto(&sub.ranges)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !crate::covers(&principal.ranges, &wanted) {
            return Err(Status::permission_denied(
                "the replica asks for key ranges its credential does not allow",
            ));
        }
        if !crate::covers(&self.shared.config.holds_ranges, &wanted) {
            return Err(Status::permission_denied(
                "the replica asks for key ranges this node does not hold",
            ));
        }
        let epoch = self.shared.epoch.get();
        if sub.epoch > epoch {
            return Err(Status::aborted(format!(
                "the replica has followed epoch {}, newer than this node's epoch {epoch}: it must not follow an older primary",
                sub.epoch
            )));
        }
        let durable = db.durable_seq().get();
        if sub.applied_seq > durable {
            return Err(Status::out_of_range(format!(
                "the replica has applied up to {}, beyond this node's durable log ({durable}): a replaced history or the wrong upstream",
                sub.applied_seq
            )));
        }
        let applied = sub.applied_seq;
        let position_db = Arc::clone(&db);
        let applied_hash = sub.applied_hash.clone();
        // A range-limited credential is shown only its ranges' operations.
        let filter = RangeFilter::new(&principal.ranges);
        let position_filter = filter.clone();
        let (reader, prev) = tokio::task::spawn_blocking(move || {
            open_position(
                &position_db,
                applied,
                &applied_hash,
                position_filter.as_ref(),
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let pin = LogSource::of(&db).pin(SeqNo(applied.max(1))).map_err(|e| {
            Status::failed_precondition(format!("cannot hold the log for the replica: {e}"))
        })?;

        tracing::info!(replica = %sub.replica_id, applied, epoch, "replica subscribed");
        let stream_id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut slots = self.shared.slots.lock();
            let slot = slots.entry(sub.replica_id.clone()).or_insert_with(|| Slot {
                stream: 0,
                cancel: Arc::new(AtomicBool::new(false)),
                connected: false,
                pin: None,
                durable: 0,
                applied: 0,
                sent: 0,
                in_flight: VecDeque::new(),
            });
            slot.cancel.store(true, Ordering::Release); // ends an older stream
            slot.stream = stream_id;
            slot.cancel = Arc::clone(&cancel);
            slot.connected = true;
            slot.pin = Some(pin);
            slot.applied = applied;
            // What the replica reports now (it may have been rebuilt).
            slot.durable = applied;
            slot.sent = applied;
            slot.in_flight.clear();
        }

        let (tx, rx) = mpsc::channel(self.shared.config.stream_buffer.max(1));
        let welcome = UpstreamMessage {
            kind: Some(upstream_message::Kind::Welcome(Welcome {
                database_id: own_id.to_le_bytes().to_vec(),
                epoch,
                durable_seq: durable,
            })),
        };
        tx.try_send(Ok(welcome))
            .map_err(|_| Status::internal("stream buffer"))?;

        let pump = Pump {
            upstream: self.clone(),
            db,
            id: sub.replica_id.clone(),
            stream: stream_id,
            cancel: Arc::clone(&cancel),
            tx,
            prev,
            filter,
            principal,
            auth_generation,
        };
        std::thread::Builder::new()
            .name("strata-ship".into())
            .spawn(move || pump.run(reader))
            .map_err(|e| Status::internal(format!("spawning the log pump: {e}")))?;

        let acks = self.clone();
        let id = sub.replica_id;
        tokio::spawn(async move {
            // Acks until a second Subscribe, an empty message, the end, or
            // a broken stream: then this stream is over.
            while let Ok(Some(ReplicaMessage {
                kind: Some(replica_message::Kind::Ack(ack)),
            })) = inbound.message().await
            {
                if acks.on_ack(&id, stream_id, &ack).is_err() {
                    break;
                }
            }
            acks.disconnect(&id, stream_id);
        });

        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn begin_snapshot_checked(
        &self,
        request: Request<BeginSnapshotRequest>,
    ) -> Result<Response<SnapshotInfo>, Status> {
        let principal = self.authorize(&request)?;
        let request = request.into_inner();
        if let Some(ids) = &principal.replica_ids
            && !ids.contains(&request.replica_id)
        {
            return Err(Status::permission_denied(
                "replica_id is not the one this credential names",
            ));
        }
        if !valid_replica_id(&request.replica_id) {
            return Err(Status::invalid_argument(
                "replica_id must be 1 to 128 bytes of [A-Za-z0-9._-]",
            ));
        }
        let db = self.db()?;
        let epoch = self.shared.epoch.get();
        let snapshots = self.shared.snapshots.clone();
        // A range-limited credential gets a snapshot cut to its ranges.
        let ranges = principal.ranges;
        let info = tokio::task::spawn_blocking(move || snapshots.begin(&db, epoch, &ranges))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(info))
    }

    fn fetch_snapshot_checked(
        &self,
        request: Request<FetchSnapshotRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let principal = self.authorize(&request)?;
        let request = request.into_inner();
        let rx = self.shared.snapshots.fetch(
            &request,
            self.shared.config.chunk_bytes,
            &principal.ranges,
        )?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Records are packed into one message up to about this many bytes.
const PACK_BYTES: usize = 1 << 20;

/// How long a stopping upstream's pump waits for room to queue its
/// [`going_away`] status.
const GOING_AWAY_WAIT: Duration = Duration::from_secs(2);

/// How long a pump waits for records written without sync to become
/// durable before it syncs the log itself.
const SYNC_WAIT: Duration = Duration::from_millis(2);

/// Reads the log and feeds one stream.
struct Pump {
    upstream: Upstream,
    db: Arc<Db>,
    id: String,
    stream: u64,
    cancel: Arc<AtomicBool>,
    tx: mpsc::Sender<Result<UpstreamMessage, Status>>,
    prev: Option<[u8; 8]>,
    /// For a range-limited credential: what it is shown of each record.
    filter: Option<RangeFilter>,
    /// Who subscribed, checked again after every credentials reload.
    principal: Principal,
    auth_generation: u64,
}

impl Pump {
    fn run(mut self, mut reader: LogReader) {
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
