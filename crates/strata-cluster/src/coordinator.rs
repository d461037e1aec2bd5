//! The coordinator: what Strata asks of etcd, as a trait.
//!
//! Role: every cluster decision (who is primary, who is a member, where a
//! range lives) is a key in a coordination store with leases,
//! compare-and-swap transactions and watches. [`Coordinator`] is that
//! store's surface, in etcd's terms (revisions, leases, a transaction of
//! comparisons and operations), so the etcd implementation is a thin
//! translation and the in-memory one ([`crate::MemCoordinator`]) can be
//! checked against it by one conformance suite (`tests/conformance.rs`).
//!
//! Semantics (both implementations, and the suite checks them):
//! - Every change (put, delete, a transaction that changes something, a
//!   lease expiry that deletes keys) advances the store's revision by one;
//!   the keys it changes carry that revision as `mod_revision`, and a key
//!   created by it as `create_revision`. A key that does not exist has
//!   create, mod revision and version 0.
//! - A comparison on the value of a key that does not exist is false,
//!   whatever the operator (etcd's rule).
//! - A key put with a lease is deleted when the lease expires or is
//!   revoked; watches see that deletion like any other.
//! - A watch delivers every change to keys under its prefix from its start
//!   revision, in revision order, each exactly once.

use std::future::Future;
use std::time::Duration;

/// A revision of the store: the count of changes so far.
pub type Revision = i64;

/// A lease's id, as the store assigned it (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The lease's id.
    pub id: LeaseId,
    /// The time to live the store granted (it may round the request up).
    pub ttl: Duration,
}

/// A key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key (since its last deletion).
    pub create_revision: Revision,
    /// The revision of its last change.
    pub mod_revision: Revision,
    /// How many times it was put since created (1 after the first put).
    pub version: i64,
    /// The lease it is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// How a comparison's actual value must relate to the given one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// Actual greater than given.
    Greater,
    /// Actual less than given.
    Less,
}

/// What of a key a comparison reads, with the value to compare it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's version (0 if absent).
    Version(i64),
    /// The key's create revision (0 if absent).
    CreateRevision(Revision),
    /// The key's mod revision (0 if absent).
    ModRevision(Revision),
    /// The key's value (a comparison on an absent key's value is false).
    Value(Vec<u8>),
    /// The key's lease id (0 if none or absent).
    Lease(i64),
}

/// One comparison of a transaction's guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The key compared.
    pub key: Vec<u8>,
    /// What is compared, and to what.
    pub target: CompareTarget,
    /// The relation required.
    pub op: CompareOp,
}

impl Compare {
    /// True when `key` does not exist.
    ///
    /// ```
    /// use strata_cluster::{Compare, CompareOp, CompareTarget};
    /// let c = Compare::absent(b"k");
    /// assert_eq!(c.target, CompareTarget::CreateRevision(0));
    /// assert_eq!(c.op, CompareOp::Equal);
    /// ```
    pub fn absent(key: &[u8]) -> Compare {
        Compare {
            key: key.to_vec(),
            target: CompareTarget::CreateRevision(0),
            op: CompareOp::Equal,
        }
    }

    /// True when `key` was last changed at `revision` (0: it is absent).
    pub fn mod_revision_is(key: &[u8], revision: Revision) -> Compare {
        Compare {
            key: key.to_vec(),
            target: CompareTarget::ModRevision(revision),
            op: CompareOp::Equal,
        }
    }

    /// True when `key` holds exactly `value`.
    pub fn value_is(key: &[u8], value: &[u8]) -> Compare {
        Compare {
            key: key.to_vec(),
            target: CompareTarget::Value(value.to_vec()),
            op: CompareOp::Equal,
        }
    }
}

/// One operation of a transaction's branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Puts `key`, attached to `lease` if given.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// The lease to attach it to.
        lease: Option<LeaseId>,
    },
    /// Deletes `key` (nothing if absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// A transaction: if every comparison holds, `success` is applied,
/// otherwise `failure`, atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// The guard: a conjunction.
    pub compare: Vec<Compare>,
    /// Applied when the guard holds.
    pub success: Vec<Op>,
    /// Applied when it does not.
    pub failure: Vec<Op>,
}

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether the guard held (so `success` was applied).
    pub succeeded: bool,
    /// The store's revision after the transaction (the revision of its
    /// changes, if it made any).
    pub revision: Revision,
}

/// The kind of a watched change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was put.
    Put,
    /// The key was deleted (explicitly or by its lease).
    Delete,
}

/// One watched change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after a put; after a delete, the key with an empty value
    /// and `mod_revision` the deletion's revision.
    pub kv: KeyValue,
}

/// Why a coordinator call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be reached or did not answer in time. The
    /// outcome of a change is then unknown: it may have been applied.
    #[error("coordinator at {endpoint} unavailable: {detail}")]
    Unavailable {
        /// The endpoint(s) tried.
        endpoint: String,
        /// The transport's or the deadline's message.
        detail: String,
    },
    /// The lease does not exist any more (it expired or was revoked).
    #[error("lease {id:#x} has expired or was revoked")]
    LeaseExpired {
        /// The lease.
        id: i64,
    },
    /// A watch asked for history the store has compacted away.
    #[error("revision {requested} is compacted (oldest kept: {compacted})")]
    Compacted {
        /// The start revision asked for.
        requested: Revision,
        /// The store's compaction revision.
        compacted: Revision,
    },
    /// The store refused the request.
    #[error("coordinator refused {what}: {detail}")]
    Rejected {
        /// The request.
        what: &'static str,
        /// The store's message.
        detail: String,
    },
    /// A watch stream ended.
    #[error("watch ended: {detail}")]
    WatchEnded {
        /// Why.
        detail: String,
    },
    /// A compare-and-swap change lost: what it read changed before it was
    /// applied (another change won), or the change does not apply to the
    /// state it found.
    #[error("{what} refused: {detail}")]
    Conflict {
        /// The change.
        what: &'static str,
        /// What was found.
        detail: String,
    },
    /// A name (cluster, group, node) that cannot be part of a key.
    #[error("invalid {what} {name:?}: {why}")]
    InvalidName {
        /// Which name.
        what: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Results of coordinator calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stream of changes under a prefix; see [`Coordinator::watch`].
pub trait Watch: Send {
    /// The next change, in revision order; `Err` once the watch ended
    /// (the caller re-lists and watches again from the listed revision).
    fn next(&mut self) -> impl Future<Output = Result<WatchEvent>> + Send;
}

/// The coordination store's surface. See the module doc for the
/// semantics both implementations share.
pub trait Coordinator: Send + Sync + 'static {
    /// The watch stream type.
    type Watch: Watch + 'static;

    /// Grants a lease of at least `ttl` (rounded up to whole seconds).
    fn grant_lease(&self, ttl: Duration) -> impl Future<Output = Result<Lease>> + Send;

    /// Renews a lease; returns its time to live from now.
    /// [`Error::LeaseExpired`] once it is gone.
    fn keep_alive(&self, lease: LeaseId) -> impl Future<Output = Result<Duration>> + Send;

    /// Revokes a lease, deleting its keys. Revoking a lease that is gone
    /// is not an error.
    fn revoke_lease(&self, lease: LeaseId) -> impl Future<Output = Result<()>> + Send;

    /// The key, if it exists.
    fn get(&self, key: &[u8]) -> impl Future<Output = Result<Option<KeyValue>>> + Send;

    /// Every key starting with `prefix`, in key order, and the revision
    /// the listing is as of (watch from the next one to miss nothing).
    fn list(&self, prefix: &[u8])
    -> impl Future<Output = Result<(Vec<KeyValue>, Revision)>> + Send;

    /// Puts a key (attached to `lease` if given); returns the revision.
    fn put(
        &self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> impl Future<Output = Result<Revision>> + Send;

    /// Deletes a key; returns whether it existed.
    fn delete(&self, key: &[u8]) -> impl Future<Output = Result<bool>> + Send;

    /// Runs a transaction atomically.
    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnOutcome>> + Send;

    /// Watches every key starting with `prefix`, from `start` (inclusive).
    fn watch(
        &self,
        prefix: &[u8],
        start: Revision,
    ) -> impl Future<Output = Result<Self::Watch>> + Send;
}

/// The end of the key range holding every key that starts with `prefix`
/// (etcd's `range_end`): the prefix with its last byte below 0xFF
/// incremented and what follows dropped; `[0]` ("to the end") when there
/// is none.
///
/// ```
/// assert_eq!(strata_cluster::prefix_end(b"a/b"), b"a/c".to_vec());
/// assert_eq!(strata_cluster::prefix_end(b"a\xff"), b"b".to_vec());
/// assert_eq!(strata_cluster::prefix_end(b"\xff"), vec![0]);
/// ```
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
