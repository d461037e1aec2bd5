//! Replication with real processes: a primary and two replicas, each an
//! `strata serve` process on 127.0.0.1, each replica's link to the primary
//! through a fault proxy (in this test) that can delay, throttle,
//! blackhole, reset or corrupt it. Random fault events: link faults, kill
//! -9 and restart of a replica or of the primary, and pauses (SIGSTOP /
//! SIGCONT) of a replica; writes to the primary and reads from the
//! replicas between them.
//!
//! Checked throughout: a replica's reads never go back in sequence, even
//! across its restarts; no replica is ever ahead of the primary's durable
//! log; every synced write is on the primary after its restarts. Checked
//! at the end, once every fault is healed: every replica reaches the
//! primary's sequence number with an identical digest of all keys and
//! values at that number.
//!
//! CI runs 60 fault events (plaintext) here and 30 over mutual TLS in
//! `replication_faults_mtls.rs`; `STRATA_REPL_FAULT_EVENTS` for the long
//! run, `STRATA_REPL_FAULT_SEED` to replay one. The harness is in
//! `common/replication_faults.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "common/replication_faults.rs"]
mod harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_through_kills_pauses_and_link_faults() {
    harness::run(false, 60).await;
}
