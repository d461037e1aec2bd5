//! The node's shared state, as every service sees it: its database, epoch,
//! role, replication service, credentials and figures.
//!
//! Role: the one type the Kv, Admin, Pipeline and metrics modules share,
//! kept in its own module so that none of them imports another's.

use std::sync::Arc;

use strata_replication::auth::Auth;
use strata_replication::digest::DigestPoints;
use strata_replication::{Replica, SharedDb, Upstream, epoch::Epoch};

/// How many of `runtime_threads` may be inside an engine write at once;
/// other unsynced writes go to the blocking pool. One less than them, so
/// reads always have one (with a single runtime thread, that one: a write
/// stall then holds up reads too).
pub(crate) fn inline_writers(runtime_threads: usize) -> usize {
    runtime_threads.saturating_sub(1).max(1)
}

/// What a node is.
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// Takes writes.
    Primary,
    /// Follows an upstream.
    Replica {
        /// The running replica.
        replica: Arc<Replica>,
        /// Its upstream's address.
        upstream: String,
    },
    /// A cluster member neither leading nor following yet (or fenced):
    /// serves reads of its own data, refuses writes.
    Standby,
}

impl Node {
    /// The node's role now.
    pub(crate) fn role(&self) -> Arc<Role> {
        self.role.load_full()
    }
}

/// The node's services share this.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The database.
    pub(crate) db: SharedDb,
    /// The node's epoch.
    pub(crate) epoch: Epoch,
    /// Its replication service (to count replicas, semi-sync writes).
    pub(crate) upstream: Upstream,
    /// Primary, replica or standby: fixed for a node configured as one,
    /// changed by the failover agent for a cluster member.
    pub(crate) role: Arc<arc_swap::ArcSwap<Role>>,
    /// For a cluster member: its membership (leadership, refusals).
    pub(crate) cluster: Option<Arc<crate::member::Membership>>,
    /// Request latencies and counts.
    pub(crate) metrics: Arc<crate::request_metrics::RequestMetrics>,
    /// Who may call `Kv` and `Admin`.
    pub(crate) auth: Auth,
    /// The listener's figures.
    pub(crate) connections: Arc<crate::listener::ConnectionFigures>,
    /// Recent views of the database, for digests as of a sequence number.
    pub(crate) digest_points: Arc<DigestPoints>,
    /// Permits to write on a runtime thread ([`inline_writers`]).
    pub(crate) inline_writers: Arc<tokio::sync::Semaphore>,
}
