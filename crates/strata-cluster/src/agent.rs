//! The failover agent: one per node, keeping its membership alive, taking
//! over its group when the primary is gone, and fencing it when it can no
//! longer prove its lease.
//!
//! Role: the loop between the coordinator and the node. The node is seen
//! through [`Node`] (what it has applied, and the three transitions:
//! promote, follow, fence), so the same loop drives a real server and the
//! fake nodes of the unit tests.
//!
//! One lease per node carries both its member record and, while it is
//! primary, the group's primary key, so a node that stops (crash, SIGSTOP,
//! partition from etcd) loses both at once when the lease expires. Every
//! `tick` (a tenth of the lease's TTL) the agent renews the lease, rewrites
//! its record (role, applied sequence number, epoch) if it changed, and
//! looks at the primary key:
//!
//! - held by another node: follow it (the node is told once per change);
//! - absent: if this node is the group's [`crate::successor`] (the most
//!   advanced full replica), or no primary has appeared for a whole TTL,
//!   campaign; a won campaign promotes the node at the new epoch. A node
//!   that has just started and seen no primary yet waits one TTL first, so
//!   every live member has published its applied sequence number before
//!   one is chosen;
//! - held by this node: stay primary while [`Leadership::is_valid`]; the
//!   moment it is not (a renewal failed past the deadline, or the store
//!   says the lease is gone) fence the node, and start over with a new
//!   lease as a replica.
//!
//! Invariants:
//! - The node is promoted only after a campaign won under a lease whose
//!   deadline has not passed, and fenced before (or as) that deadline
//!   passes, so two nodes never both hold a valid leadership.
//! - Epochs given to `promote` only grow: each is `epoch_base` plus the
//!   primary key's creation revision.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::coordinator::{Coordinator, Error, LeaseId, Result};
use crate::election::{Campaign, Leadership, campaign_with};
use crate::keys::ClusterKeys;
use crate::membership::{MemberRecord, Role, successor};

/// The node the agent drives.
pub trait Node: Send + Sync + 'static {
    /// The highest sequence number the node has applied.
    fn applied_seq(&self) -> u64;

    /// Whether the node holds its group's whole key space (only such a
    /// node may become primary).
    fn full(&self) -> bool;

    /// Become primary at `epoch`: record it durably, stop following, and
    /// accept writes while `leadership.is_valid()`. An error makes the
    /// agent resign.
    fn promote(
        &self,
        epoch: u64,
        leadership: Arc<Leadership>,
    ) -> impl Future<Output = std::result::Result<(), String>> + Send;

    /// Follow `primary` (called when the primary changes).
    fn follow(&self, primary: &MemberRecord) -> impl Future<Output = ()> + Send;

    /// Stop acknowledging writes at once: the leadership is gone.
    fn fence(&self);
}

/// Who the agent is and how it keeps its lease.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The cluster's keys.
    pub keys: ClusterKeys,
    /// This node's name.
    pub node: String,
    /// Where clients and replicas reach it.
    pub address: String,
    /// Its range group.
    pub group: String,
    /// The lease's time to live: how long a stopped primary keeps the
    /// group without a primary. Default 3 s.
    pub lease_ttl: Duration,
    /// Added to the primary key's creation revision to make the epoch
    /// (for a group whose nodes carry epochs from before etcd). Default 0.
    pub epoch_base: u64,
}

impl AgentConfig {
    /// A configuration with the default lease and epoch base.
    pub fn new(keys: ClusterKeys, node: &str, address: &str, group: &str) -> AgentConfig {
        AgentConfig {
            keys,
            node: node.to_string(),
            address: address.to_string(),
            group: group.to_string(),
            lease_ttl: Duration::from_secs(3),
            epoch_base: 0,
        }
    }
}

/// What the agent reports of itself (for status and metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    /// Whether this node is the primary now.
    pub primary: bool,
    /// The epoch it serves or follows (0 before the first).
    pub epoch: u64,
    /// The primary it follows, if any.
    pub following: Option<String>,
    /// Campaigns won.
    pub promotions: u64,
    /// Times the node was fenced (lost a leadership).
    pub fenced: u64,
    /// Coordinator calls that failed (each retried at the next tick).
    pub coordinator_errors: u64,
}

struct Agent<C, N> {
    store: C,
    node: Arc<N>,
    config: AgentConfig,
    status: watch::Sender<AgentStatus>,
    lease: Option<(LeaseId, Instant, Duration)>,
    leadership: Option<Arc<Leadership>>,
    followed: Option<String>,
    no_primary_since: Option<Instant>,
    started: Instant,
    /// Whether a primary has been seen since the agent started.
    seen_primary: bool,
    /// The record last written, and under which lease: rewritten only
    /// when it changes (an idle node costs etcd a keep-alive, no write).
    published: Option<(LeaseId, MemberRecord)>,
}

/// Runs the agent until `stop` turns true; then resigns a leadership it
/// holds and revokes its lease. Status goes to `status`.
///
/// # Errors
/// Only for an invalid configuration (a bad name); coordinator failures
/// are counted and retried.
pub async fn run_agent<C: Coordinator, N: Node>(
    store: C,
    node: Arc<N>,
    config: AgentConfig,
    status: watch::Sender<AgentStatus>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let member_key = config.keys.member(&config.node)?;
    let primary_key = config.keys.primary(&config.group)?;
    let tick = (config.lease_ttl / 10).max(Duration::from_millis(20));
    let mut agent = Agent {
        store,
        node,
        config,
        status,
        lease: None,
        leadership: None,
        followed: None,
        no_primary_since: None,
        started: Instant::now(),
        seen_primary: false,
        published: None,
    };
    loop {
        if *stop.borrow() {
            break;
        }
        if let Err(e) = agent.step(&member_key, &primary_key).await {
            tracing::warn!(error = %e, node = %agent.config.node, "cluster agent step failed");
            agent.status.send_modify(|s| s.coordinator_errors += 1);
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => {}
        }
    }
    agent.shutdown().await;
    Ok(())
}

impl<C: Coordinator, N: Node> Agent<C, N> {
    /// The lease, granted (or re-granted after it expired) and renewed.
    async fn renew(&mut self) -> Result<LeaseId> {
        if let Some(leadership) = &self.leadership {
            // The leadership's renewal moves its deadline too.
            let id = leadership.lease();
            return match leadership.keep_alive(&self.store).await {
                Ok(ttl) => {
                    self.lease = Some((id, Instant::now(), ttl));
                    Ok(id)
                }
                Err(e) => Err(e),
            };
        }
        if let Some((id, _, _)) = self.lease {
            let sent = Instant::now();
            match self.store.keep_alive(id).await {
                Ok(ttl) => {
                    self.lease = Some((id, sent, ttl));
                    return Ok(id);
                }
                Err(Error::LeaseExpired { .. }) => self.lease = None,
                Err(e) => return Err(e),
            }
        }
        let sent = Instant::now();
        let lease = self.store.grant_lease(self.config.lease_ttl).await?;
        self.lease = Some((lease.id, sent, lease.ttl));
        Ok(lease.id)
    }

    /// Fences the node and forgets the lease the leadership was under
    /// (returned, to be revoked): renewing it would keep the primary key
    /// alive for a node that may not act on it.
    fn lose_leadership(&mut self) -> Option<LeaseId> {
        let leadership = self.leadership.take()?;
        self.lease = None;
        {
            leadership.fence();
            self.node.fence();
            self.status.send_modify(|s| {
                s.primary = false;
                s.fenced += 1;
            });
            tracing::warn!(node = %self.config.node, epoch = leadership.epoch(), "fenced: the lease can no longer be proven valid");
        }
        Some(leadership.lease())
    }

    async fn abandon(&mut self) {
        if let Some(old) = self.lose_leadership() {
            // Best effort: if etcd cannot be reached the lease expires by
            // itself, since nothing renews it any more.
            let _ = self.store.revoke_lease(old).await;
        }
    }

    async fn step(&mut self, member_key: &[u8], primary_key: &[u8]) -> Result<()> {
        // A leadership past its deadline is over, whatever the store says.
        if self.leadership.as_ref().is_some_and(|l| !l.is_valid()) {
            self.abandon().await;
        }
        let lease = match self.renew().await {
            Ok(lease) => lease,
            Err(e) => {
                if matches!(e, Error::LeaseExpired { .. }) {
                    self.abandon().await;
                    self.lease = None;
                }
                return Err(e);
            }
        };
        let role = if self.leadership.is_some() {
            Role::Primary
        } else {
            Role::Replica
        };
        let record = MemberRecord {
            v: 1,
            node: self.config.node.clone(),
            address: self.config.address.clone(),
            group: self.config.group.clone(),
            role,
            full: self.node.full(),
            applied_seq: self.node.applied_seq(),
            epoch: self.status.borrow().epoch,
        };
        if self.published.as_ref() != Some(&(lease, record.clone())) {
            self.store
                .put(member_key, &record.encode(), Some(lease))
                .await?;
            self.published = Some((lease, record));
        }
        if self.leadership.is_some() {
            return Ok(());
        }
        match self.store.get(primary_key).await? {
            Some(holder) => {
                self.no_primary_since = None;
                self.seen_primary = true;
                let name = String::from_utf8_lossy(&holder.value).into_owned();
                if name == self.config.node {
                    // Our own key from an earlier lease that has not expired
                    // yet: wait for it to go (it cannot be proven ours).
                    return Ok(());
                }
                if self.followed.as_deref() != Some(name.as_str()) {
                    let member = self
                        .store
                        .get(&self.config.keys.member(&name)?)
                        .await?
                        .map(|kv| MemberRecord::decode(&kv.value, &name))
                        .transpose()?;
                    if let Some(member) = member {
                        self.node.follow(&member).await;
                        self.followed = Some(name.clone());
                        let epoch = self.epoch_of(holder.create_revision);
                        self.status.send_modify(|s| {
                            s.following = Some(name);
                            s.epoch = epoch;
                        });
                    }
                }
                Ok(())
            }
            None => self.maybe_campaign(primary_key, lease).await,
        }
    }

    fn epoch_of(&self, revision: i64) -> u64 {
        self.config
            .epoch_base
            .saturating_add(u64::try_from(revision).unwrap_or(0))
    }

    async fn maybe_campaign(&mut self, primary_key: &[u8], lease: LeaseId) -> Result<()> {
        // Right after start, wait one TTL so every live member has
        // registered its applied sequence number before anyone is chosen
        // (after a whole-group restart the most advanced must win).
        let settling = !self.seen_primary && self.started.elapsed() < self.config.lease_ttl;
        if !self.node.full() || settling {
            return Ok(());
        }
        let since = *self.no_primary_since.get_or_insert_with(Instant::now);
        let (listed, _) = self.store.list(&self.config.keys.members()).await?;
        let members: Vec<MemberRecord> = listed
            .iter()
            .filter_map(|kv| MemberRecord::decode(&kv.value, "member").ok())
            .collect();
        let chosen = successor(&members, &self.config.group).map(|m| m.node.clone());
        let patient = since.elapsed() < self.config.lease_ttl;
        if chosen.as_deref() != Some(self.config.node.as_str()) && patient {
            return Ok(());
        }
        let Some((_, sent, ttl)) = self.lease else {
            return Ok(());
        };
        match campaign_with(
            &self.store,
            primary_key,
            self.config.node.as_bytes(),
            lease,
            sent,
            ttl,
        )
        .await?
        {
            Campaign::Won(leadership) => {
                let leadership = Arc::new(leadership);
                let epoch = self.epoch_of(leadership.epoch());
                match self.node.promote(epoch, Arc::clone(&leadership)).await {
                    Ok(()) => {
                        self.leadership = Some(leadership);
                        self.followed = None;
                        self.no_primary_since = None;
                        self.status.send_modify(|s| {
                            s.primary = true;
                            s.epoch = epoch;
                            s.following = None;
                            s.promotions += 1;
                        });
                        tracing::info!(node = %self.config.node, epoch, "promoted to primary");
                    }
                    Err(why) => {
                        tracing::error!(node = %self.config.node, epoch, %why, "promotion failed; resigning");
                        self.node.fence();
                        let owned = Arc::try_unwrap(leadership);
                        if let Ok(leadership) = owned {
                            leadership.resign(&self.store).await?;
                        }
                        self.lease = None;
                    }
                }
                Ok(())
            }
            Campaign::Lost { .. } => Ok(()),
        }
    }

    async fn shutdown(&mut self) {
        if let Some(leadership) = self.leadership.take() {
            leadership.fence();
            self.node.fence();
            self.status.send_modify(|s| s.primary = false);
        }
        if let Some((id, _, _)) = self.lease.take() {
            let _ = self.store.revoke_lease(id).await;
        }
    }
}
