//! The replication fault test (see `replication_faults.rs`) with every
//! link over mutual TLS: the primary serves TLS and admits only the
//! replicas' certificate identities to replication, the replicas present
//! their certificates through the fault proxies (which corrupt, reset and
//! blackhole the TLS streams as they did the plaintext ones), and the test
//! itself reads and writes with an admin token. Same checks: reads never
//! go back, no replica ahead of the primary's durable log, synced writes
//! kept, identical digests at the end.
//!
//! CI runs 30 fault events; `STRATA_REPL_FAULT_EVENTS` for the long run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "common/replication_faults.rs"]
mod harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_over_mutual_tls_through_kills_pauses_and_link_faults() {
    harness::run(true, 30).await;
}
