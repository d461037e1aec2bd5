//! Electing a range group's primary and fencing it by its lease.
//!
//! Role: a node becomes primary by creating the group's primary key under
//! its own lease, in one transaction that succeeds only if the key is
//! absent; the key's creation revision is the new **epoch** (etcd's
//! revisions only grow, so every later primary has a larger one). The
//! primary keeps the lease alive and may acknowledge writes only while it
//! can prove the lease is still valid.
//!
//! The proof: before each keep-alive (and before the grant) the node reads
//! its monotonic clock, `t`. If the store answers that the lease lives for
//! `ttl`, the store's own expiry is no earlier than `t + ttl` (the store
//! renewed it after `t`). So until `t + ttl - margin`, where `margin`
//! covers the rate difference of the two clocks over one `ttl`, no other
//! node can have won the key. [`Leadership::valid_until`] is that instant;
//! [`Leadership::is_valid`] compares it with the clock, with no I/O, so a
//! write path can check it on every acknowledgement.
//!
//! Invariants:
//! - `valid_until` only moves forward, and only from a successful
//!   keep-alive whose request was sent after the previous one's.
//! - Once `is_valid` is false it stays false until a keep-alive succeeds;
//!   after [`crate::Error::LeaseExpired`] it stays false for good.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::coordinator::{
    Compare, Coordinator, Error, KeyValue, LeaseId, Op, Result, Revision, Txn,
};

/// What a campaign found.
#[derive(Debug)]
pub enum Campaign {
    /// This node holds the key: it is the primary.
    Won(Leadership),
    /// Another holds it.
    Lost {
        /// The current holder's key (its value names the holder; its
        /// `create_revision` is the holder's epoch).
        holder: KeyValue,
        /// This node's lease, still granted (revoke or reuse it).
        lease: LeaseId,
    },
}

/// A won election: the lease that fences this primary.
#[derive(Debug)]
pub struct Leadership {
    key: Vec<u8>,
    lease: LeaseId,
    epoch: Revision,
    margin: Duration,
    valid_until: Mutex<Option<Instant>>,
}

/// The clock-drift margin for a lease of `ttl`: a tenth of it, at least
/// 100 ms (more than any clock's rate error over one lease).
pub fn default_margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(100))
}

/// Tries to become the holder of `key` (a group's primary key), writing
/// `value` (the node's name) under a new lease of `ttl`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use strata_cluster::{campaign, Campaign, MemCoordinator};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemCoordinator::new();
/// let Campaign::Won(first) = campaign(&store, b"g/primary", b"n1", Duration::from_secs(5)).await.unwrap() else { panic!() };
/// assert!(first.is_valid());
/// let Campaign::Lost { holder, .. } = campaign(&store, b"g/primary", b"n2", Duration::from_secs(5)).await.unwrap() else { panic!() };
/// assert_eq!(holder.value, b"n1");
/// assert_eq!(holder.create_revision, first.epoch());
/// # });
/// ```
pub async fn campaign<C: Coordinator>(
    store: &C,
    key: &[u8],
    value: &[u8],
    ttl: Duration,
) -> Result<Campaign> {
    let sent = Instant::now();
    let lease = store.grant_lease(ttl).await?;
    campaign_with(store, key, value, lease.id, sent, lease.ttl).await
}

/// As [`campaign`], with a lease granted (or last renewed) by a request
/// sent at `sent`, for `ttl`.
pub async fn campaign_with<C: Coordinator>(
    store: &C,
    key: &[u8],
    value: &[u8],
    lease: LeaseId,
    sent: Instant,
    ttl: Duration,
) -> Result<Campaign> {
    let outcome = store
        .txn(Txn {
            compare: vec![Compare::absent(key)],
            success: vec![Op::Put {
                key: key.to_vec(),
                value: value.to_vec(),
                lease: Some(lease),
            }],
            failure: Vec::new(),
        })
        .await?;
    if outcome.succeeded {
        let margin = default_margin(ttl);
        return Ok(Campaign::Won(Leadership {
            key: key.to_vec(),
            lease,
            epoch: outcome.revision,
            margin,
            valid_until: Mutex::new(sent.checked_add(ttl.saturating_sub(margin))),
        }));
    }
    match store.get(key).await? {
        Some(holder) => Ok(Campaign::Lost { holder, lease }),
        // The holder's lease ended between the two calls: try again.
        None => Box::pin(campaign_with(store, key, value, lease, sent, ttl)).await,
    }
}

impl Leadership {
    /// The epoch: the primary key's creation revision.
    pub fn epoch(&self) -> Revision {
        self.epoch
    }

    /// The lease that fences this primary.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// The key held.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Until when this node may act as primary (`None`: no longer).
    pub fn valid_until(&self) -> Option<Instant> {
        *self.valid_until.lock()
    }

    /// Whether this node may still acknowledge writes as primary.
    pub fn is_valid(&self) -> bool {
        self.valid_until()
            .is_some_and(|until| Instant::now() < until)
    }

    /// The time left before this node must stop acting as primary.
    pub fn time_left(&self) -> Duration {
        self.valid_until().map_or(Duration::ZERO, |until| {
            until.saturating_duration_since(Instant::now())
        })
    }

    /// Renews the lease and moves the deadline forward. On
    /// [`Error::LeaseExpired`] the leadership is over for good; on other
    /// errors it stays valid until its current deadline.
    pub async fn keep_alive<C: Coordinator>(&self, store: &C) -> Result<Duration> {
        let sent = Instant::now();
        match store.keep_alive(self.lease).await {
            Ok(ttl) => {
                let mut until = self.valid_until.lock();
                if let Some(current) = *until {
                    let candidate = sent.checked_add(ttl.saturating_sub(self.margin));
                    if let Some(candidate) = candidate
                        && candidate > current
                    {
                        *until = Some(candidate);
                    }
                }
                Ok(ttl)
            }
            Err(e @ Error::LeaseExpired { .. }) => {
                self.fence();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Stops acting as primary at once (the lease may still live).
    pub fn fence(&self) {
        *self.valid_until.lock() = None;
    }

    /// Gives the key up: fences, deletes the key if it is still this
    /// lease's, and revokes the lease.
    pub async fn resign<C: Coordinator>(self, store: &C) -> Result<()> {
        self.fence();
        store
            .txn(Txn {
                compare: vec![Compare {
                    key: self.key.clone(),
                    target: crate::coordinator::CompareTarget::Lease(self.lease.0),
                    op: crate::coordinator::CompareOp::Equal,
                }],
                success: vec![Op::Delete {
                    key: self.key.clone(),
                }],
                failure: Vec::new(),
            })
            .await?;
        store.revoke_lease(self.lease).await
    }
}
