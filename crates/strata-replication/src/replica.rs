//! The replica side: follow an upstream's log, apply it, serve reads.
//!
//! The loop connects (with exponential backoff and jitter after any
//! fault), subscribes from its last applied record, and applies what it
//! receives in groups: every record is checked first (the record's
//! checksum, that its batch's sequence numbers are the ones the message
//! names and continue the replica's log, and that its link hash names the
//! replica's last record); a group is appended to the replica's own log,
//! synced once, and only then made visible, so a reader never sees a write
//! a crash could take back. Duplicates (records at or below the applied
//! position) are ignored; a gap, a link mismatch or a bad checksum ends the
//! stream and the loop reconnects from `applied + 1`, never applying the
//! bad record. `FAILED_PRECONDITION` (position gone, or another database)
//! bootstraps from a snapshot; `ABORTED` / `OUT_OF_RANGE` (a fork, an older
//! epoch, a replica ahead of its upstream) are refusals: nothing is applied
//! and the loop retries slowly, reporting why in [`ReplicaFigures`]. An
//! upstream that is stopping ends the stream with
//! [`crate::upstream::going_away`]: the loop reconnects with backoff and
//! counts it in [`ReplicaFigures::upstream_shutdowns`], not as an error.
//!
//! The replica pins its own log at its applied position, so the hash of its
//! last record is always at hand after a restart, and so downstream
//! replicas can follow it (cascading: serve an [`crate::Upstream`] over
//! [`Replica::db`] and [`Replica::epoch`]).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata::replication::{
    Follower, LogPin, LogSource, SnapshotInstall, VerifiedRecord, record_ranges, recover_install,
};
use strata::{Db, Error, FileSystem, Options, SeqNo};
use strata_proto::v1::replication_client::ReplicationClient;
use strata_proto::v1::{
    Ack, BeginSnapshotRequest, FetchSnapshotRequest, Record, ReplicaMessage, SnapshotInfo,
    Subscribe, UpstreamMessage, replica_message, upstream_message,
};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::epoch::Epoch;
use crate::hash::record_hash;
use crate::shared::SharedDb;
use crate::snapshot::safe_relative_path;

/// The longest a read waiting for `min_seq` holds the database between two
/// checks that it is still the replica's (a bootstrap replaces it).
const READ_WAIT_SLICE: Duration = Duration::from_millis(50);

/// How a replica follows its upstream.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The upstream's address, for example `http://127.0.0.1:7001`.
    pub upstream: String,
    /// This replica's id (its slot on the upstream): 1 to 128 bytes of
    /// `[A-Za-z0-9._-]`.
    pub replica_id: String,
    /// The replica's database directory (replaced whole by a bootstrap).
    pub data_dir: PathBuf,
    /// Where the replica keeps its epoch (outside `data_dir`, which a
    /// bootstrap replaces). Default: `data_dir` with extension `state`.
    pub state_dir: PathBuf,
    /// Options to open the database with (on the real file system).
    pub options: Options,
    /// Most records applied under one sync. Default: 1,024.
    pub max_group: usize,
    /// First and longest wait between reconnections. Default: 50 ms, 2 s.
    pub backoff_initial: Duration,
    /// See `backoff_initial`.
    pub backoff_max: Duration,
    /// How long a connection attempt may take. Default: 2 s.
    pub connect_timeout: Duration,
    /// TLS for the connection to the upstream (the upstream's CA, this
    /// replica's certificate and key for mutual TLS, the name to check).
    /// Default: none (plaintext).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// A replica token to present on every call, where the upstream wants
    /// one. Default: none.
    pub token: Option<crate::auth::Secret>,
    /// A ready channel to the upstream, used instead of connecting to
    /// `upstream` by address: an in-memory transport in tests, or a
    /// channel with custom settings. Default: none.
    pub channel: Option<Channel>,
    /// The key ranges to hold (a range-scoped replica; sorted, disjoint
    /// `[start, end)`, `None` for unbounded); empty: every key. Fixed for
    /// the replica's life: a replica restarted with other ranges refuses to
    /// start (its data would lack the new ranges' history).
    pub ranges: crate::KeyIntervals,
}

impl ReplicaConfig {
    /// The defaults for a replica of `upstream` named `replica_id` in
    /// `data_dir`.
    #[must_use]
    pub fn new(
        upstream: impl Into<String>,
        replica_id: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        let data_dir = data_dir.into();
        Self {
            upstream: upstream.into(),
            replica_id: replica_id.into(),
            state_dir: data_dir.with_extension("state"),
            data_dir,
            options: Options::default(),
            max_group: 1024,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            channel: None,
            tls: None,
            token: None,
            ranges: Vec::new(),
        }
    }
}

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

/// A replica's counters and state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaFigures {
    /// The last applied (and durable) sequence number.
    pub applied_seq: u64,
    /// The upstream's durable sequence number, as last heard.
    pub upstream_durable_seq: u64,
    /// Records applied since start.
    pub records_applied: u64,
    /// Groups applied (one sync each).
    pub groups_applied: u64,
    /// Records received again and ignored.
    pub duplicates_ignored: u64,
    /// Streams ended because a record did not continue the log.
    pub gaps: u64,
    /// Streams ended because a record's link hash did not match.
    pub hash_mismatches: u64,
    /// Streams ended because a record failed its checksum or checks.
    pub bad_records: u64,
    /// Connections that ended (or failed) and were retried.
    pub reconnects: u64,
    /// Snapshots installed.
    pub bootstraps: u64,
    /// Refusals: upstreams this replica refused to follow (fork, older
    /// epoch, replica ahead), and calls the upstream refused for this
    /// replica's credential (counted in `credential_refusals` too).
    pub refusals: u64,
    /// Calls the upstream refused for this replica's credential
    /// (UNAUTHENTICATED: no, a wrong or a revoked token; PERMISSION_DENIED:
    /// a certificate identity not allowed, another replica's id, ranges the
    /// credential may not see): an operator must fix the credential.
    pub credential_refusals: u64,
    /// Streams the upstream ended because it was shutting down (then
    /// reconnected with backoff; not errors).
    pub upstream_shutdowns: u64,
    /// Why the last connection ended, if it failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    groups: AtomicU64,
    duplicates: AtomicU64,
    gaps: AtomicU64,
    hash_mismatches: AtomicU64,
    bad_records: AtomicU64,
    reconnects: AtomicU64,
    bootstraps: AtomicU64,
    refusals: AtomicU64,
    credential_refusals: AtomicU64,
    upstream_shutdowns: AtomicU64,
}

/// Heartbeats heard: (upstream durable sequence number, when received).
#[derive(Debug, Default)]
struct Freshness {
    heard: VecDeque<(u64, Instant)>,
}

impl Freshness {
    fn heard(&mut self, durable: u64) {
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

#[derive(Debug)]
struct Shared {
    db: SharedDb,
    /// The file system of the replica's data and state.
    fs: Arc<dyn FileSystem>,
    config: ReplicaConfig,
    epoch: Epoch,
    stop: AtomicBool,
    stopped: Notify,
    counters: Counters,
    freshness: Mutex<Freshness>,
    last_error: Mutex<Option<String>>,
    /// Pins the replica's own log at its applied position.
    pin: Mutex<Option<LogPin>>,
    /// The hash of the last record applied, if known.
    last_hash: Mutex<Option<[u8; 8]>>,
    upstream_durable: AtomicU64,
}

/// A running replica. Dropping it stops the loop.
#[derive(Debug)]
pub struct Replica {
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How a session with the upstream ended.
enum End {
    /// Retry after a backoff.
    Retry(String),
    /// Install a snapshot, then retry.
    Bootstrap(String),
    /// The upstream's history or epoch is not one to follow.
    Refused(String),
    /// The upstream is shutting down: reconnect with backoff, no error.
    GoingAway,
    /// The upstream refused this replica's credential.
    Denied(String),
    /// Stop was asked for.
    Stopped,
}

/// A request carrying the replica's token, if it has one.
fn with_token<T>(config: &ReplicaConfig, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = &config.token {
        token.attach(&mut request);
    }
    request
}

/// Whether the upstream refused the call for this replica's credential.
fn credential_refused(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied
    )
}

fn classify(status: &Status) -> End {
    if crate::upstream::is_going_away(status) {
        return End::GoingAway;
    }
    let text = format!("{:?}: {}", status.code(), status.message());
    if credential_refused(status) {
        return End::Denied(text);
    }
    match status.code() {
        Code::FailedPrecondition => End::Bootstrap(text),
        Code::Aborted | Code::OutOfRange => End::Refused(text),
        _ => End::Retry(text),
    }
}

impl Replica {
    /// Opens the replica's database (if it has one) and starts following.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// The database failed to open, or the epoch file is unreadable.
    pub fn start(mut config: ReplicaConfig) -> Result<Self, Error> {
        crate::check_intervals(&config.ranges)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let fs = Arc::clone(&config.options.file_system);
        record_ranges(&*fs, &config.state_dir, &config.ranges)?;
        config.options.retain_ranges.clone_from(&config.ranges);
        let epoch = Epoch::open_in(Arc::clone(&fs), &config.state_dir).map_err(|e| {
            Error::InvalidArgument(format!("replica state {}: {e}", config.state_dir.display()))
        })?;
        recover_install(&*fs, &config.data_dir)?;
        let has_database = fs.exists(&config.data_dir.join("CURRENT")).unwrap_or(false);
        let shared = Arc::new(Shared {
            db: SharedDb::empty(),
            fs,
            epoch,
            stop: AtomicBool::new(false),
            stopped: Notify::new(),
            counters: Counters::default(),
            freshness: Mutex::default(),
            last_error: Mutex::default(),
            pin: Mutex::default(),
            last_hash: Mutex::default(),
            upstream_durable: AtomicU64::new(0),
            config,
        });
        if has_database {
            let db = open_follower(&shared.config)?;
            adopt(&shared, db, None)?;
        }
        let loop_shared = Arc::clone(&shared);
        let task = tokio::spawn(async move { follow(loop_shared).await });
        Ok(Self {
            shared,
            task: Mutex::new(Some(task)),
        })
    }

    /// The replica's database handle (none while bootstrapping).
    #[must_use]
    pub fn db(&self) -> SharedDb {
        self.shared.db.clone()
    }

    /// The key ranges this replica holds (empty: every key).
    #[must_use]
    pub fn ranges(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.shared.config.ranges
    }

    /// The epoch the replica follows (to serve downstream replicas).
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.shared.epoch.clone()
    }

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

    /// The replica's figures.
    #[must_use]
    pub fn figures(&self) -> ReplicaFigures {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReplicaFigures {
            applied_seq: self.shared.db.get().map_or(0, |db| db.last_seq().get()),
            upstream_durable_seq: load(&self.shared.upstream_durable),
            records_applied: load(&c.records),
            groups_applied: load(&c.groups),
            duplicates_ignored: load(&c.duplicates),
            gaps: load(&c.gaps),
            hash_mismatches: load(&c.hash_mismatches),
            bad_records: load(&c.bad_records),
            reconnects: load(&c.reconnects),
            bootstraps: load(&c.bootstraps),
            refusals: load(&c.refusals),
            credential_refusals: load(&c.credential_refusals),
            upstream_shutdowns: load(&c.upstream_shutdowns),
            last_error: self.shared.last_error.lock().clone(),
        }
    }

    /// Whether the replica still follows its upstream (false once stopped
    /// or promoted).
    #[must_use]
    pub fn following(&self) -> bool {
        !self.shared.stop.load(Ordering::Acquire)
    }

    /// Stops following (the database stays open for reads).
    pub async fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.stopped.notify_waiters();
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Promotes the replica to primary: stops following, raises the epoch
    /// by one (durably) and accepts writes. Returns the new epoch.
    ///
    /// # Errors
    /// The epoch could not be written, or there is no database yet.
    pub async fn promote(&self) -> Result<u64, Error> {
        self.stop().await;
        let db = self.shared.db.get().ok_or(Error::Closed)?;
        let next = self.shared.epoch.get() + 1;
        self.shared
            .epoch
            .raise_to(next)
            .map_err(|e| Error::InvalidArgument(format!("writing the epoch: {e}")))?;
        Follower::of(&db).unfence();
        Ok(next)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.stopped.notify_waiters();
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

fn open_follower(config: &ReplicaConfig) -> Result<Db, Error> {
    let db = Db::open(&config.data_dir, config.options.clone())?;
    Follower::of(&db).fence(format!(
        "this node is a replica of {}; write to the primary",
        config.upstream
    ));
    Ok(db)
}

/// Installs `db` as the replica's database: pins its log at its position
/// and finds the hash of its last record (from its log, else `known`).
fn adopt(shared: &Shared, db: Db, known: Option<[u8; 8]>) -> Result<(), Error> {
    let last = db.last_seq();
    let mut hash = known;
    if last.get() > 0
        && let Ok(mut reader) = LogSource::of(&db).read_from(last)
        && let Ok(Some(record)) = reader.next(Duration::from_millis(100))
        && record.last_seq == last
        && let Ok(view) = strata_format::wal::decode_record(&record.bytes)
    {
        hash = Some(record_hash(view.payload));
    }
    let pin = LogSource::of(&db).pin(SeqNo(last.get().max(1))).ok();
    *shared.pin.lock() = pin;
    *shared.last_hash.lock() = hash;
    shared.db.set(Arc::new(db));
    Ok(())
}

async fn follow(shared: Arc<Shared>) {
    let config = &shared.config;
    let mut backoff = config.backoff_initial;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let applied_before = shared.counters.records.load(Ordering::Relaxed);
        let end = if shared.db.get().is_none() {
            End::Bootstrap("no database yet".into())
        } else {
            session(&shared).await
        };
        if shared.counters.records.load(Ordering::Relaxed) > applied_before {
            backoff = config.backoff_initial;
        }
        let wait = match end {
            End::Stopped => return,
            End::Retry(why) => {
                tracing::warn!(upstream = %config.upstream, reason = %why, "replication stream ended; reconnecting");
                shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                *shared.last_error.lock() = Some(why);
                backoff
            }
            End::GoingAway => {
                tracing::info!(upstream = %config.upstream, "the upstream is shutting down; reconnecting");
                shared
                    .counters
                    .upstream_shutdowns
                    .fetch_add(1, Ordering::Relaxed);
                backoff
            }
            End::Refused(why) => {
                tracing::error!(upstream = %config.upstream, reason = %why, "upstream refused: this replica will not follow it");
                shared.counters.refusals.fetch_add(1, Ordering::Relaxed);
                *shared.last_error.lock() = Some(format!("refused: {why}"));
                config.backoff_max
            }
            End::Denied(why) => {
                denied(&shared, &why);
                config.backoff_max
            }
            End::Bootstrap(why) => match bootstrap(&shared).await {
                Ok(()) => {
                    tracing::info!(upstream = %config.upstream, reason = %why, "bootstrapped from a snapshot");
                    backoff = config.backoff_initial;
                    continue;
                }
                Err(BootstrapFailed::Denied(error)) => {
                    denied(&shared, &format!("bootstrap ({why}): {error}"));
                    config.backoff_max
                }
                Err(BootstrapFailed::Other(error)) => {
                    tracing::warn!(upstream = %config.upstream, reason = %why, %error, "bootstrap failed; retrying");
                    shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    *shared.last_error.lock() = Some(format!("bootstrap ({why}) failed: {error}"));
                    backoff
                }
            },
        };
        // Jitter: 50% to 100% of the wait.
        let jitter = 0.5 + (rand_fraction() * 0.5);
        let wait = wait.mul_f64(jitter);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.stopped.notified() => {}
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

/// Counts and reports a refusal of this replica's credential.
fn denied(shared: &Shared, why: &str) {
    tracing::error!(upstream = %shared.config.upstream, reason = %why, "the upstream refused this replica's credential; retrying slowly");
    shared.counters.refusals.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .credential_refusals
        .fetch_add(1, Ordering::Relaxed);
    *shared.last_error.lock() = Some(format!("credential refused: {why}"));
}

/// Why a bootstrap failed.
enum BootstrapFailed {
    /// The upstream refused this replica's credential.
    Denied(String),
    /// Anything else (retried with backoff).
    Other(String),
}

impl From<String> for BootstrapFailed {
    fn from(why: String) -> Self {
        Self::Other(why)
    }
}

impl std::fmt::Display for BootstrapFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(why) | Self::Other(why) => f.write_str(why),
        }
    }
}

/// A failed call of a bootstrap, telling credential refusals apart.
fn call_failed(what: &str, status: &Status) -> BootstrapFailed {
    let why = format!("{what}: {:?}: {}", status.code(), status.message());
    if credential_refused(status) {
        BootstrapFailed::Denied(why)
    } else {
        BootstrapFailed::Other(why)
    }
}

fn rand_fraction() -> f64 {
    // Enough randomness for jitter without a dependency: the clock's
    // nanoseconds.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

async fn connect(config: &ReplicaConfig) -> Result<ReplicationClient<Channel>, String> {
    if let Some(channel) = &config.channel {
        return Ok(ReplicationClient::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(1 << 20));
    }
    let mut endpoint = Endpoint::from_shared(config.upstream.clone())
        .map_err(|e| format!("bad upstream address {:?}: {e}", config.upstream))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    if let Some(tls) = &config.tls {
        endpoint = endpoint
            .tls_config(tls.clone())
            .map_err(|e| format!("TLS settings for {}: {e}", config.upstream))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connecting to {}: {e}", config.upstream))?;
    Ok(ReplicationClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(1 << 20))
}

/// One stream: subscribe, then verify and apply until it ends.
async fn session(shared: &Arc<Shared>) -> End {
    let Some(db) = shared.db.get() else {
        return End::Bootstrap("no database".into());
    };
    let mut client = match connect(&shared.config).await {
        Ok(client) => client,
        Err(why) => return End::Retry(why),
    };
    let (tx, rx) = mpsc::channel(16);
    let mut applied = db.last_seq().get();
    let mut link = *shared.last_hash.lock();
    let subscribe = ReplicaMessage {
        kind: Some(replica_message::Kind::Subscribe(Subscribe {
            replica_id: shared.config.replica_id.clone(),
            database_id: db.database_id().to_le_bytes().to_vec(),
            applied_seq: applied,
            applied_hash: link.map(|h| h.to_vec()).unwrap_or_default(),
            epoch: shared.epoch.get(),
            ranges: crate::ranges_to_proto(&shared.config.ranges),
        })),
    };
    if tx.send(subscribe).await.is_err() {
        return End::Retry("outbound stream closed".into());
    }
    let request = with_token(&shared.config, ReceiverStream::new(rx));
    let mut inbound = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return classify(&status),
    };
    // The Welcome first.
    match inbound.message().await {
        Ok(Some(UpstreamMessage {
            kind: Some(upstream_message::Kind::Welcome(welcome)),
        })) => {
            if crate::upstream::parse_database_id(&welcome.database_id) != Some(db.database_id()) {
                return End::Bootstrap("the upstream serves another database".into());
            }
            if welcome.epoch < shared.epoch.get() {
                return End::Refused(format!(
                    "the upstream serves epoch {}, older than the epoch {} this replica followed",
                    welcome.epoch,
                    shared.epoch.get()
                ));
            }
            if let Err(e) = shared.epoch.raise_to(welcome.epoch) {
                return End::Retry(format!("recording the epoch: {e}"));
            }
            shared
                .upstream_durable
                .store(welcome.durable_seq, Ordering::Relaxed);
            shared.freshness.lock().heard(welcome.durable_seq);
        }
        Ok(_) => return End::Retry("the upstream's first message was not a Welcome".into()),
        Err(status) => return classify(&status),
    }
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return End::Stopped;
        }
        let first = tokio::select! {
            message = inbound.message() => message,
            () = shared.stopped.notified() => return End::Stopped,
        };
        let mut group: Vec<VerifiedRecord> = Vec::new();
        let mut group_hash = link;
        let mut next = Some(first);
        // How the stream ended, once the records before the end are applied.
        let mut ended = None;
        while let Some(message) = next.take() {
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) => {
                    ended = Some(End::Retry("the upstream ended the stream".into()));
                    break;
                }
                Err(status) => {
                    ended = Some(classify(&status));
                    break;
                }
            };
            match message.kind {
                Some(upstream_message::Kind::Record(record)) => {
                    if let Err(end) =
                        take_record(shared, record, &mut applied, &mut group_hash, &mut group)
                    {
                        return end;
                    }
                }
                Some(upstream_message::Kind::Records(batch)) => {
                    for record in batch.records {
                        if let Err(end) =
                            take_record(shared, record, &mut applied, &mut group_hash, &mut group)
                        {
                            return end;
                        }
                    }
                }
                Some(upstream_message::Kind::Heartbeat(heartbeat)) => {
                    shared
                        .upstream_durable
                        .store(heartbeat.durable_seq, Ordering::Relaxed);
                    shared.freshness.lock().heard(heartbeat.durable_seq);
                }
                _ => return End::Retry("unexpected message from the upstream".into()),
            }
            if group.len() < shared.config.max_group {
                // Take whatever has already arrived, without waiting.
                if let Ok(more) = tokio::time::timeout(Duration::ZERO, inbound.message()).await {
                    next = Some(more);
                }
            }
        }
        if group.is_empty() {
            match ended {
                Some(end) => return end,
                None => continue,
            }
        }
        let count = group.len() as u64;
        let apply_db = Arc::clone(&db);
        let applied_result =
            tokio::task::spawn_blocking(move || Follower::of(&apply_db).apply(group)).await;
        match applied_result {
            Ok(Ok(last)) if last.get() == applied => {}
            Ok(Ok(last)) => {
                return End::Retry(format!(
                    "applied up to {} of a group ending at {applied}",
                    last.get()
                ));
            }
            Ok(Err(error)) => return End::Retry(format!("applying: {error}")),
            Err(error) => return End::Retry(format!("applying: {error}")),
        }
        link = group_hash;
        *shared.last_hash.lock() = link;
        if let Some(pin) = shared.pin.lock().as_ref() {
            let _ = pin.advance(SeqNo(applied.max(1)));
        }
        shared.counters.records.fetch_add(count, Ordering::Relaxed);
        shared.counters.groups.fetch_add(1, Ordering::Relaxed);
        let ack = ReplicaMessage {
            kind: Some(replica_message::Kind::Ack(Ack {
                durable_seq: db.durable_seq().get().min(applied),
                applied_seq: applied,
            })),
        };
        // A full outbound buffer only delays an ack; the next one covers it.
        let _ = tx.try_send(ack);
        if let Some(end) = ended {
            return end;
        }
    }
}

/// Checks one received record and adds it to the group to apply, or ends
/// the session (counting why).
fn take_record(
    shared: &Shared,
    record: Record,
    applied: &mut u64,
    group_hash: &mut Option<[u8; 8]>,
    group: &mut Vec<VerifiedRecord>,
) -> Result<(), End> {
    match check_record(record, *applied, *group_hash) {
        Checked::Duplicate => {
            shared.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Checked::Next { record, hash } => {
            *applied = record.last_seq().get();
            group.push(record);
            *group_hash = Some(hash);
        }
        Checked::Gap(why) => {
            shared.counters.gaps.fetch_add(1, Ordering::Relaxed);
            return Err(End::Retry(why));
        }
        Checked::Mismatch(why) => {
            shared
                .counters
                .hash_mismatches
                .fetch_add(1, Ordering::Relaxed);
            return Err(End::Retry(why));
        }
        Checked::Bad(why) => {
            shared.counters.bad_records.fetch_add(1, Ordering::Relaxed);
            return Err(End::Retry(why));
        }
    }
    Ok(())
}

enum Checked {
    Duplicate,
    Next {
        record: VerifiedRecord,
        hash: [u8; 8],
    },
    Gap(String),
    Mismatch(String),
    Bad(String),
}

/// Checks one record against the replica's position and link: the
/// record's checksum and batch (decoded once, by the engine's
/// [`VerifiedRecord::verify`]), the sequence numbers the message names,
/// continuity and the hash link.
fn check_record(record: Record, applied: u64, link: Option<[u8; 8]>) -> Checked {
    let (first_seq, last_seq) = (record.first_seq, record.last_seq);
    let prev_hash = record.prev_hash;
    let verified = match VerifiedRecord::verify(record.record) {
        Ok(verified) => verified,
        Err(e) => {
            return Checked::Bad(format!("record {first_seq}..={last_seq}: {e}"));
        }
    };
    if verified.first_seq().get() != first_seq || verified.last_seq().get() != last_seq {
        return Checked::Bad(format!(
            "record says {first_seq}..={last_seq} but its batch holds {}..={}",
            verified.first_seq().get(),
            verified.last_seq().get()
        ));
    }
    if last_seq <= applied {
        return Checked::Duplicate;
    }
    if first_seq != applied + 1 {
        return Checked::Gap(format!(
            "record starts at {first_seq} but {} must come next",
            applied + 1
        ));
    }
    if let Some(link) = link
        && !prev_hash.is_empty()
        && prev_hash.as_slice() != link.as_slice()
    {
        return Checked::Mismatch(format!(
            "record {first_seq}..={last_seq} names a predecessor that is not this replica's record at {applied}"
        ));
    }
    let hash = record_hash(verified.payload());
    Checked::Next {
        record: verified,
        hash,
    }
}

/// Replaces the replica's database with a snapshot of the upstream's.
async fn bootstrap(shared: &Arc<Shared>) -> Result<(), BootstrapFailed> {
    let config = &shared.config;
    let mut client = connect(config).await?;
    let info = client
        .begin_snapshot(with_token(
            config,
            BeginSnapshotRequest {
                replica_id: config.replica_id.clone(),
            },
        ))
        .await
        .map_err(|s| call_failed("begin snapshot", &s))?
        .into_inner();
    check_info(&info)?;
    let install =
        SnapshotInstall::begin(Arc::clone(&shared.fs), &config.data_dir, &info.snapshot_id)
            .map_err(|e| format!("staging the snapshot: {e}"))?;
    let total: u64 = info.files.iter().map(|f| f.size).sum();
    tracing::info!(
        snapshot = %info.snapshot_id,
        seq = info.seq,
        files = info.files.len(),
        bytes = total,
        "bootstrapping from a snapshot"
    );
    let mut fetched = 0u64;
    for (index, file) in info.files.iter().enumerate() {
        fetch_file(config, &mut client, &info.snapshot_id, file, &install).await?;
        fetched += file.size;
        tracing::info!(
            file = %file.path,
            done = index + 1,
            of = info.files.len(),
            bytes = fetched,
            total,
            "snapshot file fetched and checked"
        );
    }
    // Every file is here and checked: swap the directories.
    let old = shared.db.take();
    *shared.pin.lock() = None;
    if let Some(old) = old {
        // Wait for readers to let go of the old database (its lock).
        let deadline = Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(old);
    }
    let install_shared = Arc::clone(shared);
    let known = <[u8; 8]>::try_from(info.seq_hash.as_slice()).ok();
    let epoch = info.epoch;
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let config = &install_shared.config;
        install
            .commit()
            .map_err(|e| format!("installing the snapshot: {e}"))?;
        install_shared
            .epoch
            .raise_to(epoch)
            .map_err(|e| format!("recording the epoch: {e}"))?;
        let db = open_follower(config).map_err(|e| format!("opening the snapshot: {e}"))?;
        // Counted before readers can see the new database.
        install_shared
            .counters
            .bootstraps
            .fetch_add(1, Ordering::Relaxed);
        adopt(&install_shared, db, known).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(BootstrapFailed::Other)
}

fn check_info(info: &SnapshotInfo) -> Result<(), String> {
    if crate::upstream::parse_database_id(&info.database_id).is_none() {
        return Err("the snapshot's database_id is not 16 bytes".into());
    }
    if info.snapshot_id.is_empty() || !safe_relative_path(&info.snapshot_id) {
        return Err("the snapshot has no usable id".into());
    }
    if !info.files.iter().any(|f| f.path == "CURRENT") {
        return Err("the snapshot lists no CURRENT file".into());
    }
    for file in &info.files {
        if !safe_relative_path(&file.path) {
            return Err(format!("the snapshot lists an unsafe path {:?}", file.path));
        }
    }
    Ok(())
}

async fn fetch_file(
    config: &ReplicaConfig,
    client: &mut ReplicationClient<Channel>,
    snapshot_id: &str,
    file: &strata_proto::v1::SnapshotFile,
    install: &SnapshotInstall,
) -> Result<(), BootstrapFailed> {
    let wanted = strata::replication::SnapshotFile {
        path: file.path.clone(),
        size: file.size,
        crc32: file.crc32,
    };
    let mut staged = install.file(&wanted).map_err(|e| e.to_string())?;
    let mut have = staged.staged_len();
    if have < file.size {
        let mut chunks = client
            .fetch_snapshot(with_token(
                config,
                FetchSnapshotRequest {
                    snapshot_id: snapshot_id.to_string(),
                    path: file.path.clone(),
                    offset: have,
                },
            ))
            .await
            .map_err(|s| call_failed(&format!("fetch {}", file.path), &s))?
            .into_inner();
        while let Some(chunk) = chunks
            .message()
            .await
            .map_err(|s| call_failed(&format!("fetch {}", file.path), &s))?
        {
            if chunk.offset != have || have + chunk.data.len() as u64 > file.size {
                return Err(format!(
                    "fetch {}: a chunk at {} of {} bytes does not continue at {have} within {} bytes",
                    file.path,
                    chunk.offset,
                    chunk.data.len(),
                    file.size
                )
                .into());
            }
            staged
                .append(chunk.offset, &chunk.data)
                .map_err(|e| e.to_string())?;
            have += chunk.data.len() as u64;
        }
    }
    staged.finish().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use strata_format::wal::{BatchBuilder, RecordType, encode_record, set_batch_first_seq};

    fn record(first: u64, keys: &[&[u8]], prev: Option<[u8; 8]>) -> (Record, [u8; 8]) {
        let mut batch = BatchBuilder::new();
        for key in keys {
            batch.put(key, b"v");
        }
        let mut payload = batch.into_bytes();
        set_batch_first_seq(&mut payload, first);
        let mut bytes = Vec::new();
        encode_record(RecordType::Batch, &payload, &mut bytes);
        let hash = record_hash(&payload);
        (
            Record {
                first_seq: first,
                last_seq: first + keys.len() as u64 - 1,
                record: bytes,
                prev_hash: prev.map(|h| h.to_vec()).unwrap_or_default(),
            },
            hash,
        )
    }

    #[test]
    fn the_next_record_is_taken_and_its_hash_returned() {
        let (first, h1) = record(1, &[b"a", b"b"], None);
        match check_record(first.clone(), 0, None) {
            Checked::Next { hash, .. } => assert_eq!(hash, h1),
            _ => panic!("not taken"),
        }
        let (second, _) = record(3, &[b"c"], Some(h1));
        assert!(matches!(
            check_record(second.clone(), 2, Some(h1)),
            Checked::Next { .. }
        ));
    }

    #[test]
    fn duplicates_are_ignored_and_gaps_refused() {
        let (r, _) = record(1, &[b"a", b"b"], None);
        assert!(matches!(
            check_record(r.clone(), 2, None),
            Checked::Duplicate
        ));
        assert!(matches!(
            check_record(r.clone(), 5, None),
            Checked::Duplicate
        ));
        let (later, _) = record(5, &[b"a"], None);
        assert!(matches!(
            check_record(later.clone(), 2, None),
            Checked::Gap(_)
        ));
    }

    #[test]
    fn a_link_to_another_predecessor_is_refused() {
        let (r, _) = record(3, &[b"a"], Some([1; 8]));
        assert!(matches!(
            check_record(r.clone(), 2, Some([2; 8])),
            Checked::Mismatch(_)
        ));
    }

    #[test]
    fn damaged_or_mislabelled_records_are_refused() {
        let (mut r, _) = record(1, &[b"a"], None);
        let last = r.record.len() - 1;
        r.record[last] ^= 1;
        assert!(matches!(check_record(r.clone(), 0, None), Checked::Bad(_)));
        let (mut r, _) = record(1, &[b"a"], None);
        r.last_seq = 2; // the message names other numbers than its batch
        assert!(matches!(check_record(r.clone(), 0, None), Checked::Bad(_)));
        let (mut r, _) = record(1, &[b"a"], None);
        r.record.push(0); // trailing bytes
        assert!(matches!(check_record(r.clone(), 0, None), Checked::Bad(_)));
        let (mut r, _) = record(1, &[b"a"], None);
        r.record.truncate(5);
        assert!(matches!(check_record(r.clone(), 0, None), Checked::Bad(_)));
    }
}
