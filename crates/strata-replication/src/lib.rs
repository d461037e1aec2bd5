//! Log shipping over gRPC: a node's commit log streamed, record by record
//! and byte for byte, to replicas that apply it and serve reads.
//!
//! - [`upstream::Upstream`] serves the `strata.v1.Replication` service over
//!   any database with a log: a primary, or a replica serving downstream
//!   replicas (cascading). One stream per replica, fed from the log's
//!   durable-only tailing reader through a bounded channel, so a slow
//!   replica holds back only its own stream; replica slots pin the log up
//!   to a bound; snapshots bootstrap replicas whose position is gone;
//!   semi-synchronous writes wait for k replicas' acknowledgements.
//! - [`replica::Replica`] follows an upstream: verifies every record
//!   (checksum, sequence continuity, the hash link to its predecessor),
//!   applies records in order with the primary's sequence numbers, makes
//!   them visible only once durable, reconnects with backoff, bootstraps
//!   from a snapshot when told to, answers reads with the sequence number
//!   they reflect (waiting for a `min_seq` or a staleness bound), and can
//!   be promoted.
//!
//! Invariants:
//! - A replica never holds a record the primary has not made durable (the
//!   upstream ships only durable records).
//! - A replica applies each record once, in order, or not at all; its
//!   visible sequence number never goes back, even across its restarts.
//! - A node refuses log from an older primary epoch than it has followed,
//!   and a history whose record at its position differs from its own.
//!
//! The wire contract is `proto/strata/v1/replication.proto`; the design and
//! its reasons are in `docs/design/replication.md`.

pub mod auth;
pub mod digest;
pub mod epoch;
mod filter;
pub mod hash;
pub mod replica;
pub mod shared;
mod snapshot;
pub mod upstream;
mod wire;

/// The largest batch a replicated database accepts: what fits, with the
/// message's framing, in one replication message (the upstream encodes and
/// the replica decodes at most 64 MiB). A database put under replication
/// ([`SharedDb`]) refuses larger batches when they are written, whatever its
/// `batch_bytes_max`.
pub const MAX_SHIPPED_BATCH_BYTES: usize = 60 << 20;

pub use replica::{ReadAnswer, ReadOptions, Replica, ReplicaConfig, ReplicaFigures};
pub use shared::SharedDb;
pub use upstream::{ReplicaStatus, Upstream, UpstreamConfig};

/// Key intervals `[start, end)` (`end` `None`: unbounded), as options and
/// configs carry them.
pub type KeyIntervals = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Why key intervals were refused: each must be non-empty, and they must
/// be sorted and disjoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntervalError {
    /// The interval's start is not below its end.
    #[error("key range {index} is empty (start not below end)")]
    Empty {
        /// Its position in the list.
        index: usize,
    },
    /// The interval comes after an unbounded one.
    #[error("key range {index} follows an unbounded range")]
    AfterUnbounded {
        /// Its position in the list.
        index: usize,
    },
    /// The interval overlaps or precedes the one before it.
    #[error("key range {index} overlaps or precedes the one before it")]
    Unordered {
        /// Its position in the list.
        index: usize,
    },
}

/// The intervals a `Subscribe` names, checked (sorted, disjoint, non-empty).
///
/// # Errors
/// [`IntervalError`] naming the bad interval.
pub(crate) fn ranges_from_proto(
    ranges: &[strata_proto::v1::KeyRange],
) -> Result<KeyIntervals, IntervalError> {
    let intervals: KeyIntervals = ranges
        .iter()
        .map(|r| (r.start.clone(), (!r.unbounded).then(|| r.end.clone())))
        .collect();
    check_intervals(&intervals)?;
    Ok(intervals)
}

/// The `Subscribe` form of intervals.
pub(crate) fn ranges_to_proto(
    intervals: &[(Vec<u8>, Option<Vec<u8>>)],
) -> Vec<strata_proto::v1::KeyRange> {
    intervals
        .iter()
        .map(|(start, end)| strata_proto::v1::KeyRange {
            start: start.clone(),
            end: end.clone().unwrap_or_default(),
            unbounded: end.is_none(),
        })
        .collect()
}

/// Checks intervals: each non-empty, sorted and disjoint.
///
/// # Examples
///
/// ```
/// use strata_replication::{IntervalError, check_intervals};
/// assert!(check_intervals(&[(b"a".to_vec(), Some(b"b".to_vec())), (b"b".to_vec(), None)]).is_ok());
/// assert_eq!(
///     check_intervals(&[(b"b".to_vec(), Some(b"a".to_vec()))]),
///     Err(IntervalError::Empty { index: 0 })
/// );
/// ```
///
/// # Errors
/// [`IntervalError`] naming the bad interval.
pub fn check_intervals(intervals: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), IntervalError> {
    for (i, (start, end)) in intervals.iter().enumerate() {
        if end.as_ref().is_some_and(|end| start >= end) {
            return Err(IntervalError::Empty { index: i });
        }
        if let Some((_, prev_end)) = i.checked_sub(1).and_then(|p| intervals.get(p)) {
            match prev_end {
                None => return Err(IntervalError::AfterUnbounded { index: i }),
                Some(prev_end) if prev_end > start => {
                    return Err(IntervalError::Unordered { index: i });
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Whether `held` (empty: everything) covers every interval of `wanted`
/// (empty: everything): the engine's [`strata::KeyIntervals::covers_all`].
pub(crate) fn covers(
    held: &[(Vec<u8>, Option<Vec<u8>>)],
    wanted: &[(Vec<u8>, Option<Vec<u8>>)],
) -> bool {
    strata::KeyIntervals::new(held).covers_all(&strata::KeyIntervals::new(wanted))
}
