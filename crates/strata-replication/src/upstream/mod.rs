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
//!
//! One concept per file: `mod.rs` (the configuration and the
//! [`Upstream`] handle), `service.rs` (the gRPC service: subscribe checks,
//! snapshot calls), `pump.rs` (one stream's pump from the log to the
//! channel), `slots.rs` (replica slots: acknowledgements, pins, status),
//! `semi_sync.rs` (waiting for k replicas).

mod pump;
mod semi_sync;
mod service;
mod slots;

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
            .filter(|(_, slot)| !slot.transient)
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

pub use semi_sync::SemiSyncOutcome;
use slots::Slot;
