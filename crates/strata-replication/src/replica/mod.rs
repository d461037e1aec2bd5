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
//! [`crate::wire::going_away`]: the loop reconnects with backoff and
//! counts it in [`ReplicaFigures::upstream_shutdowns`], not as an error.
//!
//! The replica pins its own log at its applied position, so the hash of its
//! last record is always at hand after a restart, and so downstream
//! replicas can follow it (cascading: serve an [`crate::Upstream`] over
//! [`Replica::db`] and [`Replica::epoch`]).
//!
//! One concept per file: `config.rs` (how a replica follows), `follow.rs`
//! (the loop: back off, open and adopt the database), `connect.rs` (the
//! channel to the upstream), `session.rs`
//! (one stream: subscribe, group, apply, acknowledge), `verify.rs` (the
//! checks on each record), `bootstrap.rs` (fetching and installing a
//! snapshot through the engine's port), `reads.rs` (reads that wait for a
//! sequence number or a staleness bound).

mod bootstrap;
mod config;
mod connect;
mod follow;
mod reads;
mod session;
mod verify;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata::replication::{
    Follower, LogPin, LogSource, SnapshotInstall, VerifiedRecord, record_ranges, recover_install,
    safe_relative_path,
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

pub use config::ReplicaConfig;
use follow::{adopt, fence_follower, follow, open_follower};
use reads::Freshness;
pub use reads::{ReadAnswer, ReadError, ReadOptions};

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
    /// Histories refused as diverged and replaced by a snapshot
    /// ([`ReplicaConfig::rebootstrap_on_divergence`]), and local databases
    /// discarded at start ([`ReplicaConfig::discard_local`]).
    pub divergences: u64,
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
    divergences: AtomicU64,
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
    /// The upstream refused this replica's history as diverged, and the
    /// replica is to replace it with a snapshot.
    Diverged(String),
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

fn classify(config: &ReplicaConfig, status: &Status) -> End {
    if crate::wire::is_going_away(status) {
        return End::GoingAway;
    }
    let text = format!("{:?}: {}", status.code(), status.message());
    if config.rebootstrap_on_divergence && crate::wire::is_diverged(status) {
        return End::Diverged(text);
    }
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
    pub fn start(config: ReplicaConfig) -> Result<Self, Error> {
        let epoch = Self::open_epoch(&config)?;
        Self::start_shared(config, SharedDb::empty(), epoch)
    }

    /// The epoch file of a replica configured as `config` (in its
    /// `state_dir`), for [`Replica::start_shared`].
    ///
    /// # Errors
    /// The epoch file is unreadable.
    pub fn open_epoch(config: &ReplicaConfig) -> Result<Epoch, Error> {
        Epoch::open_in(Arc::clone(&config.options.file_system), &config.state_dir).map_err(|e| {
            Error::InvalidArgument(format!("replica state {}: {e}", config.state_dir.display()))
        })
    }

    /// Starts following with the node's own handles: `db` (empty, or
    /// already holding the database in `config.data_dir`, which is then
    /// fenced and followed from its position) and `epoch` (from
    /// [`Replica::open_epoch`]), so services built on them (an
    /// [`crate::Upstream`], digests) see every database this replica
    /// installs. A cluster member uses one pair for its whole life, through
    /// promotions and rejoins. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// The database failed to open, or the ranges differ from the ones it
    /// was started with.
    pub fn start_shared(
        mut config: ReplicaConfig,
        db: SharedDb,
        epoch: Epoch,
    ) -> Result<Self, Error> {
        crate::check_intervals(&config.ranges)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let fs = Arc::clone(&config.options.file_system);
        record_ranges(&*fs, &config.state_dir, &config.ranges)?;
        config.options.retain_ranges.clone_from(&config.ranges);
        let open = db.get();
        if open.is_none() {
            recover_install(&*fs, &config.data_dir)?;
        }
        let has_database = fs.exists(&config.data_dir.join("CURRENT")).unwrap_or(false);
        let shared = Arc::new(Shared {
            db,
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
        if let Some(open) = open {
            fence_follower(&shared.config, &open);
            adopt(&shared, open, None)?;
        } else if has_database {
            let db = open_follower(&shared.config)?;
            adopt(&shared, Arc::new(db), None)?;
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
            divergences: load(&c.divergences),
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
        let next = self.shared.epoch.get() + 1;
        self.prepare_promotion(next).await?;
        self.accept_writes()?;
        Ok(next)
    }

    /// The first half of a promotion at `epoch` (decided elsewhere, for
    /// example by an election): stops following and records `epoch`
    /// durably, the database still refusing writes. Returns the last
    /// sequence number applied, where the new epoch's history begins.
    /// [`Replica::accept_writes`] is the second half.
    ///
    /// # Errors
    /// `epoch` is not above the epoch followed so far, the epoch could
    /// not be written, or there is no database yet.
    pub async fn prepare_promotion(&self, epoch: u64) -> Result<u64, Error> {
        self.stop().await;
        let db = self.shared.db.get().ok_or(Error::Closed)?;
        let current = self.shared.epoch.get();
        if epoch <= current {
            return Err(Error::InvalidArgument(format!(
                "promotion to epoch {epoch}: this node has already followed epoch {current}"
            )));
        }
        self.shared
            .epoch
            .raise_to(epoch)
            .map_err(|e| Error::InvalidArgument(format!("writing the epoch: {e}")))?;
        Ok(db.last_seq().get())
    }

    /// Accepts local writes (after [`Replica::prepare_promotion`]).
    ///
    /// # Errors
    /// There is no database.
    pub fn accept_writes(&self) -> Result<(), Error> {
        let db = self.shared.db.get().ok_or(Error::Closed)?;
        Follower::of(&db).unfence();
        Ok(())
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
