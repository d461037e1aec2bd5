//! A node run as a member of a cluster (`role = "member"`): its role
//! comes from the failover agent (etcd), not from its config.
//!
//! Role: the server's side of [`strata_cluster::Node`]. The member keeps
//! one database handle and one epoch handle for its whole life (the
//! replication service and digests are built on them) and moves between
//! three roles: standby (not yet told anything: serves reads of its own
//! data, refuses writes), replica of the elected primary (through the
//! replication port, replacing its history with a snapshot when a
//! failover cut it), and primary (after a won election, at the epoch etcd
//! gave it).
//!
//! Invariants:
//! - A write is taken only while the member holds a leadership, and
//!   acknowledged only if that leadership is still valid after the write
//!   is durable (and, with `min_sync_replicas`, confirmed by that many
//!   replicas): otherwise the answer is UNAVAILABLE "fenced" with
//!   `strata-outcome: unknown`, never success.
//! - A member that applied records past the group's history cut discards
//!   them (counted in `discarded_records`) before it serves as a replica:
//!   its database is replaced by a snapshot of the primary's.
//! - Refusals of writes on a non-primary name the primary it knows
//!   (metadata `strata-primary-node`, `strata-primary-address`,
//!   `strata-epoch`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use strata::replication::Follower;
use strata_cluster::{AgentStatus, Follow, Leadership};
use strata_replication::{Replica, ReplicaConfig, SharedDb, epoch::Epoch};
use tokio::sync::watch;
use tonic::Status;

use crate::node::Role;

/// The metadata keys of a "not primary" refusal and of a fenced write.
pub(crate) const PRIMARY_NODE_KEY: &str = "strata-primary-node";
/// See [`PRIMARY_NODE_KEY`].
pub(crate) const PRIMARY_ADDRESS_KEY: &str = "strata-primary-address";
/// See [`PRIMARY_NODE_KEY`].
pub(crate) const EPOCH_KEY: &str = "strata-epoch";
/// Marks an answer whose write may or may not survive.
pub(crate) const OUTCOME_KEY: &str = "strata-outcome";

/// What the services need of the membership: may a write be taken, may it
/// be acknowledged, and the figures.
#[derive(Debug)]
pub(crate) struct Membership {
    /// This node's name and range group.
    pub(crate) node: String,
    pub(crate) group: String,
    /// The agent's view (primary known, lease deadline, counters).
    pub(crate) status: watch::Receiver<AgentStatus>,
    /// Every write waits for this many replicas before it is acknowledged.
    pub(crate) min_sync_replicas: u32,
    /// How long a write waits for them.
    pub(crate) sync_timeout_millis: u64,
    leadership: Mutex<Option<Arc<Leadership>>>,
    draining: AtomicBool,
    /// Writes refused or not acknowledged because the lease could not be
    /// proven (or the node was draining for a switchover).
    pub(crate) fenced_writes: AtomicU64,
    /// Writes refused because this node is not the primary.
    pub(crate) not_primary_writes: AtomicU64,
    /// Records of this node's own history discarded by a rejoin.
    pub(crate) discarded_records: AtomicU64,
    /// On a sharded member: the range map and the ranges frozen for moves.
    pub(crate) ownership: Option<Arc<crate::ownership::Ownership>>,
    /// Copies of ranges moving into this group.
    pub(crate) imports: crate::import::Imports,
}

impl Membership {
    pub(crate) fn new(
        node: String,
        group: String,
        status: watch::Receiver<AgentStatus>,
        min_sync_replicas: u32,
        sync_timeout_millis: u64,
        ownership: Option<Arc<crate::ownership::Ownership>>,
        imports: crate::import::Imports,
    ) -> Self {
        Self {
            node,
            group,
            status,
            min_sync_replicas,
            sync_timeout_millis,
            leadership: Mutex::new(None),
            draining: AtomicBool::new(false),
            fenced_writes: AtomicU64::new(0),
            not_primary_writes: AtomicU64::new(0),
            discarded_records: AtomicU64::new(0),
            ownership,
            imports,
        }
    }

    /// The leadership held now, if still valid.
    pub(crate) fn current_leadership(&self) -> Option<Arc<Leadership>> {
        self.leadership.lock().clone().filter(|l| l.is_valid())
    }

    /// The leadership a write is taken under, or the refusal: "not
    /// primary" naming the primary, or "draining" during a switchover.
    pub(crate) fn admit(&self) -> Result<Arc<Leadership>, Status> {
        let leadership = self.leadership.lock().clone();
        match leadership {
            Some(leadership) if leadership.is_valid() => {
                if self.draining.load(Ordering::Acquire) {
                    self.fenced_writes.fetch_add(1, Ordering::Relaxed);
                    return Err(self.refusal(Status::unavailable(
                        "draining: a switchover is handing this group to another node; retry at the new primary",
                    )));
                }
                Ok(leadership)
            }
            Some(_) => {
                self.fenced_writes.fetch_add(1, Ordering::Relaxed);
                Err(self.refusal(Status::unavailable(
                    "fenced: this node cannot prove its lease on the primary key, so it takes no write",
                )))
            }
            None => {
                self.not_primary_writes.fetch_add(1, Ordering::Relaxed);
                Err(self.refusal(Status::failed_precondition(format!(
                    "not primary: node {} of group {} is not its primary",
                    self.node, self.group
                ))))
            }
        }
    }

    /// Whether a write taken under `leadership`, now durable, may be
    /// acknowledged; if not, the "fenced, outcome unknown" answer.
    pub(crate) fn acknowledge(&self, leadership: &Leadership) -> Result<(), Status> {
        if leadership.is_valid() {
            return Ok(());
        }
        self.fenced_writes.fetch_add(1, Ordering::Relaxed);
        Err(unknown_outcome(self.refusal(Status::unavailable(
            "fenced: the lease could not be proven when the write became durable; it was not acknowledged and may or may not survive",
        ))))
    }

    /// `status` with the primary this node knows attached.
    pub(crate) fn refusal(&self, mut status: Status) -> Status {
        let known = self.status.borrow().clone();
        let metadata = status.metadata_mut();
        if let Some((node, address)) = &known.primary_node {
            if let Ok(v) = node.parse() {
                metadata.insert(PRIMARY_NODE_KEY, v);
            }
            if let Ok(v) = address.parse() {
                metadata.insert(PRIMARY_ADDRESS_KEY, v);
            }
        }
        if let Ok(v) = known.epoch.to_string().parse() {
            metadata.insert(EPOCH_KEY, v);
        }
        status
    }

    /// The lease time left while primary (zero otherwise).
    pub(crate) fn lease_left(&self) -> std::time::Duration {
        self.leadership
            .lock()
            .as_ref()
            .map_or(std::time::Duration::ZERO, |l| l.time_left())
    }
}

/// Marks `status` as an answer whose write may or may not survive.
pub(crate) fn unknown_outcome(mut status: Status) -> Status {
    status.metadata_mut().insert(
        OUTCOME_KEY,
        tonic::metadata::MetadataValue::from_static("unknown"),
    );
    status
}

/// The member the agent drives.
pub(crate) struct Member {
    pub(crate) membership: Arc<Membership>,
    db: SharedDb,
    epoch: Epoch,
    role: Arc<ArcSwap<Role>>,
    /// How this node follows a primary (upstream filled in per primary).
    template: ReplicaConfig,
    replica: tokio::sync::Mutex<Option<Arc<Replica>>>,
}

impl Member {
    pub(crate) fn new(
        membership: Arc<Membership>,
        db: SharedDb,
        epoch: Epoch,
        role: Arc<ArcSwap<Role>>,
        template: ReplicaConfig,
    ) -> Self {
        Self {
            membership,
            db,
            epoch,
            role,
            template,
            replica: tokio::sync::Mutex::new(None),
        }
    }

    /// Stops following (at shutdown).
    pub(crate) async fn stop(&self) {
        if let Some(replica) = self.replica.lock().await.take() {
            replica.stop().await;
        }
    }

    fn fence_db(&self, why: &str) {
        if let Some(db) = self.db.get() {
            Follower::of(&db).fence(why.to_string());
        }
    }
}

impl strata_cluster::Node for Member {
    fn applied_seq(&self) -> u64 {
        self.db.get().map_or(0, |db| db.last_seq().get())
    }

    fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    fn full(&self) -> bool {
        true
    }

    async fn prepare_promotion(&self, epoch: u64) -> Result<u64, String> {
        let replica = self.replica.lock().await.take();
        if let Some(replica) = replica {
            return replica
                .prepare_promotion(epoch)
                .await
                .map_err(|e| e.to_string());
        }
        let db = self.db.get().ok_or("no database to promote")?;
        let current = self.epoch.get();
        if epoch <= current {
            return Err(format!(
                "promotion to epoch {epoch}: this node has already followed epoch {current}"
            ));
        }
        self.epoch
            .raise_to(epoch)
            .map_err(|e| format!("writing the epoch: {e}"))?;
        Ok(db.last_seq().get())
    }

    fn accept_writes(&self, epoch: u64, leadership: Arc<Leadership>) -> Result<(), String> {
        let db = self.db.get().ok_or("no database to take writes")?;
        *self.membership.leadership.lock() = Some(leadership);
        self.role.store(Arc::new(Role::Primary));
        Follower::of(&db).unfence();
        tracing::info!(node = %self.membership.node, epoch, "taking writes as the group's primary");
        Ok(())
    }

    async fn follow(&self, plan: &Follow) {
        *self.membership.leadership.lock() = None;
        self.fence_db(&format!(
            "not primary: this node follows {} ({})",
            plan.primary.node, plan.primary.address
        ));
        let applied = self.applied_seq();
        let discard = plan.cut.is_some_and(|cut| applied > cut);
        if let Some(cut) = plan.cut.filter(|_| discard) {
            let lost = applied - cut;
            self.membership
                .discarded_records
                .fetch_add(lost, Ordering::Relaxed);
            tracing::error!(
                node = %self.membership.node,
                applied,
                cut,
                discarded = lost,
                primary = %plan.primary.node,
                epoch = plan.epoch,
                "this node's history after the cut was never shipped and no later epoch kept it: discarding it and bootstrapping from the primary (sequence numbers after the cut were acknowledged only if min_sync_replicas was 0)"
            );
        }
        let mut current = self.replica.lock().await;
        if let Some(old) = current.take() {
            old.stop().await;
        }
        let mut config = self.template.clone();
        config.upstream.clone_from(&plan.primary.address);
        config.discard_local = discard;
        config.rebootstrap_on_divergence = true;
        match Replica::start_shared(config, self.db.clone(), self.epoch.clone()) {
            Ok(replica) => {
                let replica = Arc::new(replica);
                self.role.store(Arc::new(Role::Replica {
                    replica: Arc::clone(&replica),
                    upstream: plan.primary.address.clone(),
                }));
                *current = Some(replica);
                tracing::info!(node = %self.membership.node, primary = %plan.primary.node, address = %plan.primary.address, epoch = plan.epoch, discard, "following the primary");
            }
            Err(error) => {
                tracing::error!(node = %self.membership.node, primary = %plan.primary.node, %error, "cannot follow the primary");
            }
        }
    }

    fn fence(&self) {
        *self.membership.leadership.lock() = None;
        self.fence_db("fenced: this node lost its lease on the primary key");
        self.role.store(Arc::new(Role::Standby));
    }

    fn drain(&self, on: bool) {
        self.membership.draining.store(on, Ordering::Release);
    }
}
