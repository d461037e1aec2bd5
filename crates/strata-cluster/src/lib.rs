//! Cluster coordination for Strata: who is primary, who is a member,
//! decided by an existing coordination store (etcd), never by a consensus
//! of Strata's own.
//!
//! - [`Coordinator`]: the store's surface (leases, keys with revisions,
//!   compare-and-swap transactions, watches), with [`EtcdCoordinator`] for
//!   production and [`MemCoordinator`] for tests; `tests/conformance.rs`
//!   runs one suite against both.
//! - [`campaign`] and [`Leadership`]: a range group's primary wins its key
//!   by a transaction, takes its epoch from the key's creation revision,
//!   and is fenced by a local deadline derived from its lease.
//! - [`ClusterKeys`]: the key layout, so two clusters can share one etcd.
//! - [`MemberRecord`] and [`successor`]: what each node publishes under its
//!   lease, and which member campaigns when a group has no primary.
//! - [`EpochStart`] and [`token_fate`]: where each epoch's history began,
//!   and whether a commit token survived the failovers since.
//! - [`RangeMap`]: which group owns each key range, changed only by
//!   compare-and-swap ([`create_map`], [`split`], [`merge`], the moves
//!   [`begin_move`], [`flip_move`], [`abort_move`]) and followed by
//!   [`watch_map`].
//! - [`Layout`] and [`plan`]: the cluster's groups, tags, placement
//!   rules and range placement declared as code, and the changes that
//!   bring the live cluster to it.
//! - [`decide`]: the placement controller's next split or move (rules
//!   first, then size and heat, then balance), a pure function.
//! - [`run_agent`]: the per-node loop that keeps the membership alive,
//!   takes over a group whose primary is gone, and fences a primary that
//!   can no longer prove its lease; it drives the node through [`Node`].
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use strata_cluster::{campaign, Campaign, ClusterKeys, Coordinator, MemCoordinator};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemCoordinator::new();
//! let keys = ClusterKeys::new("strata", "shop").unwrap();
//! let key = keys.primary("g1").unwrap();
//! match campaign(&store, &key, b"node-1", Duration::from_secs(5)).await.unwrap() {
//!     Campaign::Won(leader) => assert!(leader.is_valid()),
//!     Campaign::Lost { holder, .. } => panic!("held by {:?}", holder.value),
//! }
//! # });
//! ```

mod agent;
mod coordinator;
mod election;
mod etcd;
mod history;
mod keys;
mod layout;
mod mem;
mod membership;
mod placement;
mod ranges;

pub use agent::{AgentConfig, AgentStatus, Follow, Node, Switchover, run_agent};
pub use coordinator::{
    Compare, CompareOp, CompareTarget, Coordinator, Error, EventKind, KeyValue, Lease, LeaseId, Op,
    Result, Revision, Txn, TxnOutcome, Watch, WatchEvent, prefix_end,
};
pub use election::{Campaign, Leadership, campaign, campaign_with, default_margin};
pub use etcd::{EtcdCoordinator, EtcdOptions, EtcdWatch};
pub use history::{EpochStart, TokenFate, token_fate};
pub use keys::{ClusterKeys, check_name};
pub use layout::{Change, GroupSpec, Layout, Plan, RangeSpec, Rule, overlaps_prefix, plan};
pub use mem::{MemCoordinator, MemWatch};
pub use membership::{MemberRecord, Role, successor};
pub use placement::{Action, PlacementConfig, RangeFigures, decide};
pub use ranges::{
    Freeze, Moving, RangeEntry, RangeMap, abort_move, begin_move, create_map, decode_entry,
    describe_range, encode_entry, end_move, flip_move, merge, read_entry, read_map, show_key,
    split, watch_map,
};
