//! The client's errors, each with the evidence a caller or an operator
//! needs: which node, at which epoch, and what it said.
//!
//! Role: one `#[non_exhaustive]` enum. Two of its variants are promises
//! the client keeps rather than failures it reports: [`Error::OutcomeUnknown`]
//! (a write that may or may not have been applied is never reported as
//! done, never as not done, and never retried), and [`Error::WriteLost`]
//! (a read that waited for a token a failover dropped is never answered).
//!
//! Invariants: no variant holds a credential; every variant that
//! summarises several attempts lists each one.

use std::fmt;
use std::time::Duration;

use crate::token::Token;

/// One node asked, and what it answered.
///
/// ```
/// let attempt = strata_client::Attempt::new("http://127.0.0.1:7001", Some(4), "not primary");
/// assert_eq!(attempt.to_string(), "http://127.0.0.1:7001 (epoch 4): not primary");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// The node's address.
    pub node: String,
    /// The epoch its answer named, when it named one.
    pub epoch: Option<u64>,
    /// What it answered (or why there was no answer).
    pub said: String,
}

impl Attempt {
    /// An attempt on `node`.
    pub fn new(node: impl Into<String>, epoch: Option<u64>, said: impl Into<String>) -> Attempt {
        Attempt {
            node: node.into(),
            epoch,
            said: said.into(),
        }
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.epoch {
            Some(epoch) => write!(f, "{} (epoch {epoch}): {}", self.node, self.said),
            None => write!(f, "{}: {}", self.node, self.said),
        }
    }
}

/// The attempts, one per clause.
fn list(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "no node could be asked".into();
    }
    let parts: Vec<String> = attempts.iter().map(Attempt::to_string).collect();
    parts.join("; ")
}

/// ` of group "g"`, or nothing without a group.
fn of_group(group: &str) -> String {
    if group.is_empty() {
        String::new()
    } else {
        format!(" of group {group:?}")
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot be used.
    #[error("client configuration: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
    /// etcd could not be reached, or holds a record the client cannot read.
    #[error("etcd at {endpoints}: {detail}")]
    Coordinator {
        /// The endpoints tried.
        endpoints: String,
        /// What went wrong.
        detail: String,
    },
    /// No node took the write as the group's primary within the failover
    /// wait. Nothing was applied: every refusal listed was a node saying
    /// it did not take the write.
    #[error("no primary{} took the write within {waited:?}: {}", of_group(.group), list(.tried))]
    NoPrimary {
        /// The range group (empty without an etcd source).
        group: String,
        /// How long the client waited.
        waited: Duration,
        /// Every node tried, in order, and what it said.
        tried: Vec<Attempt>,
    },
    /// The write may or may not have been applied (the primary was fenced
    /// while it was in flight, or the call's deadline passed or its
    /// connection broke after it was sent). Read the keys to find out; the
    /// client does not retry it.
    #[error(
        "outcome unknown: the write sent to {node} (epoch {epoch}) may or may not have been applied: {detail}"
    )]
    OutcomeUnknown {
        /// The node the write was sent to.
        node: String,
        /// The epoch the client believed that node was primary at.
        epoch: u64,
        /// What happened.
        detail: String,
    },
    /// A node refused the request for a reason a retry does not change
    /// (a bad argument, a missing credential, ...).
    #[error("{node} refused the request ({code:?}): {message}")]
    Refused {
        /// The node.
        node: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The node's message.
        message: String,
    },
    /// The write of the token is not in the group's history any more: a
    /// failover (with `min_sync_replicas = 0`) began epoch `epoch` at
    /// sequence number `cut`, below the token's.
    #[error("write {token} was lost: epoch {epoch} began at seq {cut}, before it")]
    WriteLost {
        /// The token read for.
        token: Token,
        /// The epoch that dropped the write.
        epoch: u64,
        /// Where that epoch's history began.
        cut: u64,
    },
    /// A node refused the request because, by the range map it knows,
    /// its group does not own a key of it (FAILED_PRECONDITION "wrong
    /// group"). Nothing was applied. A [`crate::ShardedClient`] reads the
    /// map again and re-routes; a [`crate::Client`] returns it at once.
    #[error(
        "{node} refused: its group does not own the keys (owner {}, its map revision {}): {said}",
        .owner.as_deref().unwrap_or("not named"),
        .map_revision.map_or("not named".to_string(), |r| r.to_string())
    )]
    WrongGroup {
        /// The node.
        node: String,
        /// The group the node believes owns the key (`strata-range-group`).
        owner: Option<String>,
        /// The revision of the node's map (`strata-map-revision`).
        map_revision: Option<i64>,
        /// The node's message.
        said: String,
    },
    /// A node cannot take the request now because its range is in the
    /// cut-over of a move (UNAVAILABLE "range moving") or the node has no
    /// range map yet (UNAVAILABLE "no range map"). Nothing was applied;
    /// a [`crate::ShardedClient`] backs off and tries again, a
    /// [`crate::Client`] returns it at once.
    #[error("{node} cannot take the request now: {said}")]
    RangeMoving {
        /// The node.
        node: String,
        /// The node's message.
        said: String,
    },
    /// The batch's keys fall in ranges of more than one group, by the
    /// range map at `map_revision`: nothing was sent. Split the batch.
    #[error("the batch spans range groups (map revision {map_revision}): {ranges}")]
    SpansGroups {
        /// Each range the batch touches, with its group.
        ranges: String,
        /// The revision of the map the batch was checked against.
        map_revision: i64,
    },
    /// No node gave an answer the read could accept.
    #[error("no acceptable answer{}: {}", .token.map(|t| format!(" for token {t}")).unwrap_or_default(), list(.tried))]
    NoReadAnswer {
        /// The token the read was for, if any.
        token: Option<Token>,
        /// Every node asked, and why its answer was not taken.
        tried: Vec<Attempt>,
    },
}

/// Results of client calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn coordinator(endpoints: &[String], error: &strata_cluster::Error) -> Error {
        Error::Coordinator {
            endpoints: endpoints.join(","),
            detail: error.to_string(),
        }
    }
}
