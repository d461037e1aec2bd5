//! Conventions both sides of the wire share: how a stopping upstream marks
//! its last status, how database ids and clocks are carried. A leaf module:
//! the upstream and the replica import it, it imports neither.

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::Status;

/// The metadata key that marks a [`going_away`] status.
pub const GOING_AWAY_KEY: &str = "strata-going-away";

/// The status a stopping upstream ends streams with: `UNAVAILABLE`, marked
/// with [`GOING_AWAY_KEY`] so a replica tells it from a fault (it
/// reconnects with backoff and counts no error).
#[must_use]
pub fn going_away() -> Status {
    let mut status = Status::unavailable("the upstream is shutting down; reconnect later");
    status.metadata_mut().insert(
        GOING_AWAY_KEY,
        tonic::metadata::MetadataValue::from_static("shutdown"),
    );
    status
}

/// Whether `status` is a stopping upstream's [`going_away`].
#[must_use]
pub fn is_going_away(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.metadata().contains_key(GOING_AWAY_KEY)
}

/// The metadata key that marks a [`diverged`] refusal.
pub(crate) const DIVERGED_KEY: &str = "strata-refusal";

/// Marks `status` (a refusal of a subscription) as "the replica's history
/// is not a prefix of this node's": a fork, or a replica ahead of this
/// node. A replica told to (a cluster member rejoining after a failover)
/// then replaces its database with a snapshot instead of retrying.
#[must_use]
pub(crate) fn diverged(mut status: Status) -> Status {
    status.metadata_mut().insert(
        DIVERGED_KEY,
        tonic::metadata::MetadataValue::from_static("diverged"),
    );
    status
}

/// Whether `status` is a [`diverged`] refusal.
#[must_use]
pub(crate) fn is_diverged(status: &Status) -> bool {
    status
        .metadata()
        .get(DIVERGED_KEY)
        .is_some_and(|v| v.as_bytes() == b"diverged")
}

/// Parses a 16-byte little-endian database id.
pub(crate) fn parse_database_id(bytes: &[u8]) -> Option<u128> {
    <[u8; 16]>::try_from(bytes).ok().map(u128::from_le_bytes)
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
