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

pub mod epoch;
pub mod hash;
pub mod replica;
pub mod shared;
mod snapshot;
pub mod upstream;

pub use replica::{ReadAnswer, ReadOptions, Replica, ReplicaConfig, ReplicaFigures};
pub use shared::SharedDb;
pub use upstream::{ReplicaStatus, Upstream, UpstreamConfig};
