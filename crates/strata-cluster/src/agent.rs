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

use crate::coordinator::{
    Compare, CompareOp, CompareTarget, Coordinator, Error, LeaseId, Op, Result, Txn,
};
use crate::election::{Campaign, Leadership, campaign_with};
use crate::history::EpochStart;
use crate::keys::ClusterKeys;
use crate::membership::{MemberRecord, Role, successor};

/// The node the agent drives.
pub trait Node: Send + Sync + 'static {
    /// The highest sequence number the node has applied.
    fn applied_seq(&self) -> u64;

    /// The epoch the node has recorded (served or followed).
    fn epoch(&self) -> u64;

    /// Whether the node holds its group's whole key space (only such a
    /// node may become primary).
    fn full(&self) -> bool;

    /// The first half of a promotion at `epoch`: stop following and
    /// record `epoch` durably, still refusing writes. Returns the last
    /// sequence number applied: where the epoch's history begins (the
    /// agent publishes it before any write is taken). An error makes the
    /// agent resign.
    fn prepare_promotion(
        &self,
        epoch: u64,
    ) -> impl Future<Output = std::result::Result<u64, String>> + Send;

    /// The second half: accept writes, acknowledging each only while
    /// `leadership.is_valid()`. An error makes the agent resign.
    fn accept_writes(
        &self,
        epoch: u64,
        leadership: Arc<Leadership>,
    ) -> std::result::Result<(), String>;

    /// Follow the primary `plan` names (called when the primary changes,
    /// and after this node was fenced).
    fn follow(&self, plan: &Follow) -> impl Future<Output = ()> + Send;

    /// Stop acknowledging writes at once: the leadership is gone.
    fn fence(&self);

    /// While `on`, refuse new writes though still primary (a planned
    /// switchover drains the node so its successor can catch up).
    fn drain(&self, on: bool);
}

/// Whom to follow, and what of the node's own history to give up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    /// The primary's record.
    pub primary: MemberRecord,
    /// The primary's epoch.
    pub epoch: u64,
    /// Where the group's history was cut since the node's own epoch: the
    /// lowest `start_seq` of the epochs after it. A node that applied
    /// more than `cut` holds records no later epoch kept (an unshipped
    /// tail, possible with `min_sync_replicas = 0`): it must discard them
    /// (replace its database with a snapshot), never serve them.
    pub cut: Option<u64>,
}

/// A planned switchover, as stored in `groups/{group}/switchover` (JSON
/// `{"v":1,"to":"n2"}`, under the requester's lease, so an abandoned
/// request goes away by itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Switchover {
    /// Format version; always 1.
    pub v: u32,
    /// The node to hand the group to.
    pub to: String,
}

impl Switchover {
    /// The request as stored.
    ///
    /// ```
    /// let s = strata_cluster::Switchover { v: 1, to: "n2".into() };
    /// assert_eq!(strata_cluster::Switchover::decode(&s.encode(), "k").unwrap(), s);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a request read from `key` (named in the error).
    pub fn decode(bytes: &[u8], key: &str) -> Result<Switchover> {
        let request: Switchover = serde_json::from_slice(bytes).map_err(|e| Error::Rejected {
            what: "switchover request",
            detail: format!("{key}: not a switchover request: {e}"),
        })?;
        if request.v != 1 {
            return Err(Error::Rejected {
                what: "switchover request",
                detail: format!("{key}: format version {} (this node reads 1)", request.v),
            });
        }
        Ok(request)
    }
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
    /// Planned switchovers this node handed its group over in.
    pub handovers: u64,
    /// While primary: when its leadership stops being provable, if not
    /// renewed.
    pub valid_until: Option<Instant>,
    /// The primary it knows: name and address (itself when primary).
    pub primary_node: Option<(String, String)>,
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
    /// While handing the group over: since when, and to whom.
    draining: Option<(Instant, String)>,
}

/// How long a primary stays drained waiting for a switchover's target to
/// catch up before it takes writes again.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

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
    status.send_modify(|s| s.primary_node = None);
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
        draining: None,
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
            let renewed = leadership.keep_alive(&self.store).await;
            let until = leadership.valid_until();
            self.status.send_modify(|s| s.valid_until = until);
            return match renewed {
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
        self.draining = None;
        self.followed = None;
        {
            leadership.fence();
            self.node.fence();
            self.node.drain(false);
            self.status.send_modify(|s| {
                s.primary = false;
                s.fenced += 1;
                s.valid_until = None;
                s.primary_node = None;
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
            return self.maybe_hand_over(primary_key).await;
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
                    let epoch = self.epoch_of(holder.create_revision);
                    // Followed only once its epoch's history entry is
                    // published (right after it won), so the cut is known.
                    let Some(cut) = self.cut_since(epoch).await? else {
                        return Ok(());
                    };
                    if let Some(member) = member {
                        let plan = Follow {
                            primary: member.clone(),
                            epoch,
                            cut,
                        };
                        self.node.follow(&plan).await;
                        self.followed = Some(name.clone());
                        self.status.send_modify(|s| {
                            s.following = Some(name.clone());
                            s.epoch = epoch;
                            s.primary = false;
                            s.primary_node = Some((name, member.address));
                        });
                    }
                }
                Ok(())
            }
            None => self.maybe_campaign(primary_key, lease).await,
        }
    }

    /// The cut of the group's history since the node's own epoch (see
    /// [`Follow::cut`]); `None` while the history entry of `epoch` (the
    /// primary's) is not published yet.
    async fn cut_since(&self, epoch: u64) -> Result<Option<Option<u64>>> {
        let (cut, published, _) = self.history_cut(epoch).await?;
        Ok(published.then_some(cut))
    }

    /// The cut since the node's own epoch, whether `epoch`'s entry is
    /// published, and how many epochs the history holds.
    async fn history_cut(&self, epoch: u64) -> Result<(Option<u64>, bool, usize)> {
        let (entries, _) = self
            .store
            .list(&self.config.keys.history(&self.config.group)?)
            .await?;
        let mine = self.node.epoch();
        let mut cut: Option<u64> = None;
        let mut published = false;
        for kv in &entries {
            let key = String::from_utf8_lossy(&kv.key);
            let entry = EpochStart::decode(&kv.value, &key)?;
            published |= entry.epoch == epoch;
            if entry.epoch > mine {
                cut = Some(cut.map_or(entry.start_seq, |c| c.min(entry.start_seq)));
            }
        }
        Ok((cut, published, entries.len()))
    }

    /// As primary: hand the group over if a switchover names another
    /// member, once it has caught up; drained meanwhile, at most
    /// [`DRAIN_LIMIT`].
    async fn maybe_hand_over(&mut self, primary_key: &[u8]) -> Result<()> {
        let key = self.config.keys.switchover(&self.config.group)?;
        let request = match self.store.get(&key).await? {
            Some(kv) => Some(Switchover::decode(
                &kv.value,
                &String::from_utf8_lossy(&key),
            )?),
            None => None,
        };
        let target = request.map(|r| r.to).filter(|to| *to != self.config.node);
        let Some(target) = target else {
            if self.draining.take().is_some() {
                self.node.drain(false);
            }
            return Ok(());
        };
        let since = match &self.draining {
            Some((since, to)) if *to == target => *since,
            _ => {
                tracing::info!(node = %self.config.node, to = %target, "switchover: draining writes");
                self.node.drain(true);
                let now = Instant::now();
                self.draining = Some((now, target.clone()));
                now
            }
        };
        if since.elapsed() > DRAIN_LIMIT {
            tracing::warn!(node = %self.config.node, to = %target, "switchover: the target did not catch up; taking writes again");
            self.node.drain(false);
            return Ok(());
        }
        let member = self
            .store
            .get(&self.config.keys.member(&target)?)
            .await?
            .map(|kv| MemberRecord::decode(&kv.value, &target))
            .transpose()?;
        let Some(member) = member else {
            return Ok(());
        };
        if member.group != self.config.group || !member.full {
            return Ok(());
        }
        let mine = self.node.applied_seq();
        if member.applied_seq < mine {
            return Ok(());
        }
        // Caught up with everything this node acknowledged: give the key
        // up, so the target (and only it) campaigns.
        let _ = primary_key;
        if let Some(leadership) = self.leadership.take() {
            leadership.fence();
            self.node.fence();
            self.node.drain(false);
            self.lease = None;
            self.draining = None;
            self.followed = None;
            self.published = None;
            self.status.send_modify(|s| {
                s.primary = false;
                s.handovers += 1;
                s.valid_until = None;
                s.primary_node = None;
            });
            tracing::info!(node = %self.config.node, to = %target, applied = mine, "switchover: handing the group over");
            if let Ok(leadership) = Arc::try_unwrap(leadership) {
                leadership.resign(&self.store).await?;
            }
        }
        Ok(())
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
        // A node holding records a later epoch cut (its own tail from an
        // older epoch, not yet replaced) must never lead: it would serve
        // them again.
        let (cut, _, epochs) = self.history_cut(0).await?;
        let applied = self.node.applied_seq();
        if cut.is_some_and(|cut| applied > cut) {
            return Ok(());
        }
        // An empty node never leads a group that has had a primary: it
        // would replace the group's data with none.
        if applied == 0 && epochs > 0 {
            return Ok(());
        }
        let since = *self.no_primary_since.get_or_insert_with(Instant::now);
        let switchover = match self
            .store
            .get(&self.config.keys.switchover(&self.config.group)?)
            .await?
        {
            Some(kv) => Switchover::decode(&kv.value, "switchover")
                .ok()
                .map(|s| s.to),
            None => None,
        };
        let chosen = match &switchover {
            // A planned hand-over: its target, at once.
            Some(to) => Some(to.clone()),
            None => {
                // Every member republishes within a tick: wait two, so the
                // most advanced is known before anyone is chosen.
                if since.elapsed() < self.tick() * 2 {
                    return Ok(());
                }
                let (listed, _) = self.store.list(&self.config.keys.members()).await?;
                let members: Vec<MemberRecord> = listed
                    .iter()
                    .filter_map(|kv| MemberRecord::decode(&kv.value, "member").ok())
                    .collect();
                successor(&members, &self.config.group).map(|m| m.node.clone())
            }
        };
        // Someone else is chosen: campaign only if it has not taken over
        // within a TTL (two for a switchover's target).
        let patience = if switchover.is_some() {
            self.config.lease_ttl * 2
        } else {
            self.config.lease_ttl
        };
        let patient = since.elapsed() < patience;
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
                match self.promote(primary_key, epoch, &leadership).await {
                    Ok(start_seq) => {
                        self.status.send_modify(|s| {
                            s.primary = true;
                            s.epoch = epoch;
                            s.following = None;
                            s.promotions += 1;
                            s.valid_until = leadership.valid_until();
                            s.primary_node =
                                Some((self.config.node.clone(), self.config.address.clone()));
                        });
                        self.leadership = Some(leadership);
                        self.followed = None;
                        self.no_primary_since = None;
                        tracing::info!(node = %self.config.node, epoch, start_seq, "promoted to primary");
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

    /// The promotion after a won campaign: the node prepares (stops
    /// following, records the epoch), the epoch's history entry is
    /// published while the key is still this lease's, then the node takes
    /// writes. Returns where the epoch's history begins.
    async fn promote(
        &self,
        primary_key: &[u8],
        epoch: u64,
        leadership: &Arc<Leadership>,
    ) -> std::result::Result<u64, String> {
        let start_seq = self.node.prepare_promotion(epoch).await?;
        let entry = EpochStart {
            v: 1,
            epoch,
            node: self.config.node.clone(),
            start_seq,
        };
        let key = self
            .config
            .keys
            .history_entry(&self.config.group, epoch)
            .map_err(|e| e.to_string())?;
        let outcome = self
            .store
            .txn(Txn {
                compare: vec![Compare {
                    key: primary_key.to_vec(),
                    target: CompareTarget::Lease(leadership.lease().0),
                    op: CompareOp::Equal,
                }],
                success: vec![Op::Put {
                    key,
                    value: entry.encode(),
                    lease: None,
                }],
                failure: Vec::new(),
            })
            .await
            .map_err(|e| format!("publishing the history of epoch {epoch}: {e}"))?;
        if !outcome.succeeded {
            return Err(format!(
                "the primary key was lost before epoch {epoch}'s history was published"
            ));
        }
        if !leadership.is_valid() {
            return Err(format!(
                "the lease ran out while promoting to epoch {epoch}"
            ));
        }
        self.node.accept_writes(epoch, Arc::clone(leadership))?;
        Ok(start_seq)
    }

    fn tick(&self) -> Duration {
        (self.config.lease_ttl / 10).max(Duration::from_millis(20))
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
