//! The failover agent on the in-memory store, with fake nodes: the most
//! advanced replica is promoted, a stopped primary is fenced before its
//! successor is promoted, a range-scoped replica never is, a clean stop
//! hands over at once. (`agent_etcd.rs` runs the agent against a real
//! etcd.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fake::{start, wait_for};
use strata_cluster::MemCoordinator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_advanced_replica_becomes_primary_and_the_others_follow_it() {
    let store = MemCoordinator::new();
    let ttl = Duration::from_secs(1);
    let nodes = [
        start(store.clone(), "a", 10, ttl),
        start(store.clone(), "b", 30, ttl),
        start(store.clone(), "c", 20, ttl),
    ];
    wait_for("a primary", Duration::from_secs(5), || {
        nodes.iter().any(|n| n.node.is_primary())
    })
    .await;
    assert!(nodes[1].node.is_primary(), "b has applied the most");
    wait_for("followers", Duration::from_secs(5), || {
        [0, 2]
            .iter()
            .all(|&i| nodes[i].status.borrow().following.as_deref() == Some("b"))
    })
    .await;
    for n in &nodes {
        n.stop.send(true).unwrap();
    }
    for n in nodes {
        n.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_is_fenced_before_its_successor_is_promoted() {
    let store = MemCoordinator::new();
    let ttl = Duration::from_secs(1);
    let first = start(store.clone(), "p", 100, ttl);
    wait_for("p primary", Duration::from_secs(5), || {
        first.node.is_primary()
    })
    .await;
    let epoch1 = first.status.borrow().epoch;
    let second = start(store.clone(), "r", 90, ttl);
    wait_for("r follows", Duration::from_secs(5), || {
        second.status.borrow().following.as_deref() == Some("p")
    })
    .await;
    // "SIGSTOP" the primary's agent: its lease is no longer renewed.
    first.task.abort();
    let stopped = Instant::now();
    wait_for("r takes over", ttl * 3 + Duration::from_secs(1), || {
        second.node.is_primary()
    })
    .await;
    let took_over = stopped.elapsed();
    assert!(
        took_over <= ttl + Duration::from_secs(1),
        "failover took {took_over:?} with a {ttl:?} lease"
    );
    // The old primary's leadership had passed its deadline before the
    // new one was granted: never two valid leaderships at once.
    let old = first
        .node
        .leadership
        .lock()
        .clone()
        .expect("p never fenced by the agent (aborted)");
    let promoted_at = second
        .node
        .events
        .lock()
        .iter()
        .find(|(_, e)| e.starts_with("promote"))
        .unwrap()
        .0;
    assert!(
        old.valid_until().unwrap() <= promoted_at,
        "the old primary was still valid when the new one was promoted"
    );
    assert!(!old.is_valid());
    assert!(second.status.borrow().epoch > epoch1);
    second.stop.send(true).unwrap();
    second.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_scoped_replica_never_becomes_primary() {
    let store = MemCoordinator::new();
    let scoped = start(store.clone(), "s", 1000, Duration::from_secs(1));
    scoped.node.scoped.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!scoped.node.is_primary());
    assert_eq!(scoped.status.borrow().promotions, 0);
    let full = start(store.clone(), "f", 1, Duration::from_secs(1));
    wait_for("f primary", Duration::from_secs(5), || {
        full.node.is_primary()
    })
    .await;
    assert!(!scoped.node.is_primary());
    for n in [&scoped, &full] {
        n.stop.send(true).unwrap();
    }
    scoped.task.await.unwrap().unwrap();
    full.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_primary_hands_over_at_once() {
    let store = MemCoordinator::new();
    let ttl = Duration::from_secs(3);
    let first = start(store.clone(), "p", 5, ttl);
    wait_for("p primary", Duration::from_secs(5), || {
        first.node.is_primary()
    })
    .await;
    let second = start(store.clone(), "r", 5, ttl);
    wait_for("r follows", Duration::from_secs(5), || {
        second.status.borrow().following.is_some()
    })
    .await;
    let stopped = Instant::now();
    first.stop.send(true).unwrap();
    first.task.await.unwrap().unwrap();
    assert!(!first.node.is_primary());
    wait_for("r primary", Duration::from_secs(5), || {
        second.node.is_primary()
    })
    .await;
    assert!(
        stopped.elapsed() < ttl,
        "a clean stop revokes the lease: no waiting for it to expire"
    );
    second.stop.send(true).unwrap();
    second.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_drains_waits_for_the_target_and_hands_over_to_it_alone() {
    use strata_cluster::{ClusterKeys, Coordinator, EpochStart, Switchover};
    let store = MemCoordinator::new();
    let ttl = Duration::from_secs(1);
    let p = start(store.clone(), "p", 100, ttl);
    wait_for("p primary", Duration::from_secs(5), || p.node.is_primary()).await;
    // "a" would be the successor by sequence number; the request names "b".
    let a = start(store.clone(), "a", 100, ttl);
    let b = start(store.clone(), "b", 40, ttl);
    wait_for("followers", Duration::from_secs(5), || {
        [&a, &b]
            .iter()
            .all(|n| n.status.borrow().following.as_deref() == Some("p"))
    })
    .await;
    let keys = ClusterKeys::new("strata", "agent-test").unwrap();
    let request = Switchover {
        v: 1,
        to: "b".into(),
    };
    store
        .put(&keys.switchover("g").unwrap(), &request.encode(), None)
        .await
        .unwrap();
    wait_for("p drained", Duration::from_secs(3), || {
        p.node.drained.load(Ordering::Relaxed)
    })
    .await;
    // b has not caught up: p stays primary, drained.
    tokio::time::sleep(ttl).await;
    assert!(
        p.node.is_primary(),
        "no hand-over before the target caught up"
    );
    b.node.applied.store(100, Ordering::Relaxed);
    wait_for("b primary", Duration::from_secs(5), || b.node.is_primary()).await;
    assert!(!p.node.is_primary() && !a.node.is_primary());
    assert!(!p.node.drained.load(Ordering::Relaxed));
    assert_eq!(p.status.borrow().handovers, 1);
    // The new epoch's history starts where b was; p follows b with that
    // cut (it loses nothing: it had applied no more than 100).
    let epoch = b.status.borrow().epoch;
    let entry = store
        .get(&keys.history_entry("g", epoch).unwrap())
        .await
        .unwrap()
        .unwrap();
    let entry = EpochStart::decode(&entry.value, "history").unwrap();
    assert_eq!((entry.node.as_str(), entry.start_seq), ("b", 100));
    wait_for("p follows b", Duration::from_secs(5), || {
        p.status.borrow().following.as_deref() == Some("b")
    })
    .await;
    let followed = p
        .node
        .events
        .lock()
        .iter()
        .rev()
        .find(|(_, e)| e.starts_with("follow"))
        .map(|(_, e)| e.clone())
        .unwrap();
    assert_eq!(followed, "follow b cut 100");
    for n in [p, a, b] {
        n.stop.send(true).unwrap();
        n.task.await.unwrap().unwrap();
    }
}
