//! One suite, two coordinators: every test runs against the in-memory
//! store and against a real etcd (one member, started on loopback for the
//! test; `apt-get install -y etcd-server` provides it). The suite is the
//! definition of the semantics `Coordinator` promises.
//!
//! The etcd half needs a service, so `cargo test` lists it as ignored and
//! `.ci/run` runs it with `cargo test -p strata-cluster -- --ignored`;
//! without etcd it fails with the install command, never passes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::time::{Duration, Instant};

use strata_cluster::{
    Campaign, Compare, CompareOp, CompareTarget, Coordinator, Error, EventKind, Op, Txn, Watch,
    campaign,
};

async fn kv_basics<C: Coordinator>(c: &C) {
    assert!(c.get(b"t/a").await.unwrap().is_none());
    let r1 = c.put(b"t/a", b"1", None).await.unwrap();
    let r2 = c.put(b"t/b", b"2", None).await.unwrap();
    let r3 = c.put(b"t/a", b"3", None).await.unwrap();
    assert!(r1 < r2 && r2 < r3, "revisions grow: {r1} {r2} {r3}");
    let a = c.get(b"t/a").await.unwrap().unwrap();
    assert_eq!(a.value, b"3");
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r1, r3, 2));
    assert_eq!(a.lease, None);
    c.put(b"u/c", b"x", None).await.unwrap();
    let (listed, at) = c.list(b"t/").await.unwrap();
    let keys: Vec<&[u8]> = listed.iter().map(|kv| kv.key.as_slice()).collect();
    assert_eq!(keys, [&b"t/a"[..], b"t/b"]);
    assert!(at > r3);
    assert!(c.delete(b"t/a").await.unwrap());
    assert!(!c.delete(b"t/a").await.unwrap());
    assert!(c.get(b"t/a").await.unwrap().is_none());
    // Recreated: a new create revision, version 1.
    let r4 = c.put(b"t/a", b"4", None).await.unwrap();
    let a = c.get(b"t/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.version), (r4, 1));
    // Empty values are values.
    c.put(b"t/empty", b"", None).await.unwrap();
    assert_eq!(c.get(b"t/empty").await.unwrap().unwrap().value, b"");
}

async fn txn_semantics<C: Coordinator>(c: &C) {
    let put = |k: &[u8], v: &[u8]| Op::Put {
        key: k.to_vec(),
        value: v.to_vec(),
        lease: None,
    };
    // Absent key: create-if-absent succeeds once.
    let first = c
        .txn(Txn {
            compare: vec![Compare::absent(b"x/k")],
            success: vec![put(b"x/k", b"one")],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(first.succeeded);
    let kv = c.get(b"x/k").await.unwrap().unwrap();
    assert_eq!(kv.create_revision, first.revision);
    let second = c
        .txn(Txn {
            compare: vec![Compare::absent(b"x/k")],
            success: vec![put(b"x/k", b"two")],
            failure: vec![put(b"x/lost", b"yes")],
        })
        .await
        .unwrap();
    assert!(!second.succeeded);
    assert_eq!(c.get(b"x/k").await.unwrap().unwrap().value, b"one");
    assert_eq!(c.get(b"x/lost").await.unwrap().unwrap().value, b"yes");
    // Compare-and-swap on the mod revision.
    let kv = c.get(b"x/k").await.unwrap().unwrap();
    let cas = |rev| Txn {
        compare: vec![Compare::mod_revision_is(b"x/k", rev)],
        success: vec![put(b"x/k", b"swapped")],
        failure: vec![],
    };
    assert!(c.txn(cas(kv.mod_revision)).await.unwrap().succeeded);
    assert!(
        !c.txn(cas(kv.mod_revision)).await.unwrap().succeeded,
        "a stale CAS must lose"
    );
    // A value comparison on an absent key is false, whatever the operator.
    for op in [
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Greater,
        CompareOp::Less,
    ] {
        let t = c
            .txn(Txn {
                compare: vec![Compare {
                    key: b"x/absent".to_vec(),
                    target: CompareTarget::Value(b"v".to_vec()),
                    op,
                }],
                success: vec![],
                failure: vec![],
            })
            .await
            .unwrap();
        assert!(!t.succeeded, "{op:?} on an absent key's value");
    }
    // A guard of several comparisons is a conjunction.
    let t = c
        .txn(Txn {
            compare: vec![
                Compare::value_is(b"x/k", b"swapped"),
                Compare::absent(b"x/k"),
            ],
            success: vec![put(b"x/never", b"1")],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(!t.succeeded);
    assert!(c.get(b"x/never").await.unwrap().is_none());
    // A transaction that changes nothing does not advance the revision.
    let (_, before) = c.list(b"x/").await.unwrap();
    let nothing = c
        .txn(Txn {
            compare: vec![Compare::absent(b"x/k")],
            success: vec![],
            failure: vec![],
        })
        .await
        .unwrap();
    assert_eq!(nothing.revision, before);
}

async fn only_one_campaign_wins<C: Coordinator + Clone>(c: &C) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("n{i}");
            match campaign(&c, b"g/primary", name.as_bytes(), Duration::from_secs(10))
                .await
                .unwrap()
            {
                Campaign::Won(l) => Some((name, l.epoch())),
                Campaign::Lost { .. } => None,
            }
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        if let Some(w) = t.await.unwrap() {
            winners.push(w);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner: {winners:?}");
    let holder = c.get(b"g/primary").await.unwrap().unwrap();
    assert_eq!(holder.value, winners[0].0.as_bytes());
    assert_eq!(holder.create_revision, winners[0].1);
}

async fn leases_expire_and_are_kept_alive<C: Coordinator>(c: &C) {
    let lease = c.grant_lease(Duration::from_secs(2)).await.unwrap();
    assert!(lease.ttl >= Duration::from_secs(2));
    c.put(b"l/owned", b"v", Some(lease.id)).await.unwrap();
    assert_eq!(
        c.get(b"l/owned").await.unwrap().unwrap().lease,
        Some(lease.id)
    );
    // Kept alive past its TTL, it lives.
    let start = Instant::now();
    while start.elapsed() < lease.ttl + Duration::from_secs(1) {
        let left = c.keep_alive(lease.id).await.unwrap();
        assert!(left > Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(c.get(b"l/owned").await.unwrap().is_some());
    // Left alone, it expires and takes its key with it.
    let left_at = Instant::now();
    loop {
        if c.get(b"l/owned").await.unwrap().is_none() {
            break;
        }
        assert!(
            left_at.elapsed() < lease.ttl + Duration::from_secs(8),
            "the key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        left_at.elapsed() + Duration::from_millis(450) >= lease.ttl,
        "expired after {:?}, before its TTL {:?}",
        left_at.elapsed(),
        lease.ttl
    );
    assert!(matches!(
        c.keep_alive(lease.id).await,
        Err(Error::LeaseExpired { .. })
    ));
    assert!(matches!(
        c.put(b"l/late", b"v", Some(lease.id)).await,
        Err(Error::LeaseExpired { .. })
    ));
    assert!(c.get(b"l/late").await.unwrap().is_none());
    // Revoking deletes at once; revoking again is not an error.
    let lease = c.grant_lease(Duration::from_secs(30)).await.unwrap();
    c.put(b"l/revoked", b"v", Some(lease.id)).await.unwrap();
    c.revoke_lease(lease.id).await.unwrap();
    assert!(c.get(b"l/revoked").await.unwrap().is_none());
    c.revoke_lease(lease.id).await.unwrap();
}

async fn watches_deliver_every_change_in_order<C: Coordinator>(c: &C) {
    let r0 = c.put(b"w/a", b"1", None).await.unwrap();
    c.put(b"other/x", b"not watched", None).await.unwrap();
    c.put(b"w/b", b"2", None).await.unwrap();
    // From a past revision: the history, then what follows.
    let mut watch = c.watch(b"w/", r0).await.unwrap();
    c.delete(b"w/a").await.unwrap();
    let lease = c.grant_lease(Duration::from_secs(30)).await.unwrap();
    c.put(b"w/leased", b"3", Some(lease.id)).await.unwrap();
    c.revoke_lease(lease.id).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let e = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("a watch event within 5 s")
            .unwrap();
        seen.push((e.kind, e.kv.key.clone(), e.kv.mod_revision));
    }
    let kinds: Vec<(EventKind, &[u8])> = seen
        .iter()
        .map(|(k, key, _)| (*k, key.as_slice()))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Put, &b"w/a"[..]),
            (EventKind::Put, b"w/b"),
            (EventKind::Delete, b"w/a"),
            (EventKind::Put, b"w/leased"),
            (EventKind::Delete, b"w/leased"),
        ]
    );
    assert!(
        seen.windows(2).all(|w| w[0].2 < w[1].2),
        "revision order: {seen:?}"
    );
    assert_eq!(seen[0].2, r0);
}

async fn a_leadership_fences_itself_by_its_deadline<C: Coordinator>(c: &C) {
    // Watch the key from the start, to see when the store deletes it.
    let (_, now) = c.list(b"f/").await.unwrap();
    let mut watch = c.watch(b"f/primary", now + 1).await.unwrap();
    let Campaign::Won(first) = campaign(c, b"f/primary", b"n1", Duration::from_secs(2))
        .await
        .unwrap()
    else {
        panic!("the first campaign must win");
    };
    assert!(first.is_valid());
    assert!(first.time_left() <= Duration::from_secs(2));
    // While it is valid, nobody else can win the key.
    let Campaign::Lost { holder, lease } = campaign(c, b"f/primary", b"n2", Duration::from_secs(2))
        .await
        .unwrap()
    else {
        panic!("n2 won while n1's leadership was valid");
    };
    assert_eq!(holder.value, b"n1");
    c.revoke_lease(lease).await.unwrap();
    // Not kept alive: the store deletes the key when the lease expires, and
    // by then the old primary's deadline has passed (it stopped first).
    let deleted_seen = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("n1's key deleted within 10 s")
            .unwrap();
        if event.kind == EventKind::Delete {
            break Instant::now();
        }
    };
    let deadline = first
        .valid_until()
        .expect("a deadline until the keep-alive fails");
    assert!(
        deadline <= deleted_seen,
        "n1 could still act as primary {:?} after the store dropped its key",
        deadline - deleted_seen
    );
    assert!(!first.is_valid());
    // After the store expires it, a new campaign wins with a larger epoch.
    let start = Instant::now();
    let second = loop {
        match campaign(c, b"f/primary", b"n2", Duration::from_secs(2))
            .await
            .unwrap()
        {
            Campaign::Won(l) => break l,
            Campaign::Lost { lease, .. } => {
                c.revoke_lease(lease).await.unwrap();
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "n1's key never expired"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(second.epoch() > first.epoch());
    // The old leadership cannot come back: its keep-alive fails for good.
    assert!(matches!(
        first.keep_alive(c).await,
        Err(Error::LeaseExpired { .. })
    ));
    assert!(!first.is_valid());
    // Resigning frees the key for the next campaign at once.
    second.keep_alive(c).await.unwrap();
    second.resign(c).await.unwrap();
    assert!(c.get(b"f/primary").await.unwrap().is_none());
}

fn range_keys() -> strata_cluster::ClusterKeys {
    strata_cluster::ClusterKeys::new("conf", "ranges").unwrap()
}

async fn range_map_changes_are_compare_and_swap<C: Coordinator>(c: &C) {
    use strata_cluster::{
        Freeze, abort_move, begin_move, create_map, flip_move, merge, read_map, split,
    };
    let keys = range_keys();
    assert!(read_map(c, &keys).await.unwrap().is_none());
    create_map(c, &keys, "g1").await.unwrap();
    assert!(matches!(
        create_map(c, &keys, "g2").await,
        Err(Error::Conflict { .. })
    ));
    let map = read_map(c, &keys).await.unwrap().unwrap();
    assert_eq!(map.entries().len(), 1);
    assert_eq!(map.locate(b"anything").group, "g1");
    // Two splits read from the same map: the first wins, the second is
    // refused (its compare on the parent's revision fails), not applied.
    split(c, &keys, &map, b"m").await.unwrap();
    let lost = split(c, &keys, &map, b"t").await;
    assert!(matches!(lost, Err(Error::Conflict { .. })), "{lost:?}");
    let map = read_map(c, &keys).await.unwrap().unwrap();
    let starts: Vec<&[u8]> = map.entries().iter().map(|e| e.start.as_slice()).collect();
    assert_eq!(starts, [&b""[..], b"m"]);
    assert_eq!(map.locate(b"l").end.as_deref(), Some(&b"m"[..]));
    assert_eq!(map.locate(b"m").split_version, 2);
    assert!(
        split(c, &keys, &map, b"m").await.is_err(),
        "m already starts a range"
    );

    // A move: marked, then flipped only while the source's freeze holds.
    let id = begin_move(c, &keys, &map, b"m", "g2").await.unwrap();
    let marked = read_map(c, &keys).await.unwrap().unwrap();
    assert_eq!(
        marked.locate(b"x").group,
        "g1",
        "the owner keeps it until the flip"
    );
    assert_eq!(marked.locate(b"x").moving.as_ref().unwrap().to, "g2");
    assert!(
        begin_move(c, &keys, &marked, b"m", "g3").await.is_err(),
        "one move at a time"
    );
    assert!(
        split(c, &keys, &marked, b"p").await.is_err(),
        "no split while moving"
    );
    let freeze = Freeze {
        v: 1,
        id,
        node: "n1".into(),
        seq: 42,
    }
    .encode();
    // Without the freeze the flip is refused.
    assert!(matches!(
        flip_move(c, &keys, b"m", id, &freeze).await,
        Err(Error::Conflict { .. })
    ));
    c.put(&keys.range_freeze(b"m"), &freeze, None)
        .await
        .unwrap();
    // A flip for another move id is refused.
    assert!(flip_move(c, &keys, b"m", id + 1000, &freeze).await.is_err());
    flip_move(c, &keys, b"m", id, &freeze).await.unwrap();
    assert!(
        c.get(&keys.range_freeze(b"m")).await.unwrap().is_none(),
        "the flip deletes the freeze"
    );
    let moved = read_map(c, &keys).await.unwrap().unwrap();
    let entry = moved.locate(b"x");
    assert_eq!(
        (
            entry.group.as_str(),
            entry.move_version,
            entry.moving.clone()
        ),
        ("g2", 2, None)
    );
    // A flip replayed after it won is refused (the entry changed).
    assert!(flip_move(c, &keys, b"m", id, &freeze).await.is_err());

    // Merge needs one group; after moving back, it merges.
    assert!(merge(c, &keys, &moved, b"m").await.is_err());
    let aborted_id = begin_move(c, &keys, &moved, b"m", "g1").await.unwrap();
    let stale = Freeze {
        v: 1,
        id: aborted_id,
        node: "n2".into(),
        seq: 3,
    }
    .encode();
    c.put(&keys.range_freeze(b"m"), &stale, None).await.unwrap();
    abort_move(c, &keys, b"m").await.unwrap();
    assert!(
        c.get(&keys.range_freeze(b"m")).await.unwrap().is_none(),
        "an abort leaves no freeze behind"
    );
    let aborted = read_map(c, &keys).await.unwrap().unwrap();
    assert_eq!(aborted.locate(b"x").group, "g2");
    assert!(aborted.locate(b"x").moving.is_none());
    let id = begin_move(c, &keys, &aborted, b"m", "g1").await.unwrap();
    let freeze = Freeze {
        v: 1,
        id,
        node: "n2".into(),
        seq: 7,
    }
    .encode();
    c.put(&keys.range_freeze(b"m"), &freeze, None)
        .await
        .unwrap();
    flip_move(c, &keys, b"m", id, &freeze).await.unwrap();
    let back = read_map(c, &keys).await.unwrap().unwrap();
    merge(c, &keys, &back, b"m").await.unwrap();
    let merged = read_map(c, &keys).await.unwrap().unwrap();
    assert_eq!(merged.entries().len(), 1);
    assert_eq!(merged.entries()[0].end, None);
    assert_eq!(merged.entries()[0].group, "g1");
}

async fn range_map_watch_publishes_only_whole_maps<C: Coordinator>(c: &C) {
    use strata_cluster::{create_map, read_map, split, watch_map};
    let keys = strata_cluster::ClusterKeys::new("conf", "watched").unwrap();
    let (tx, mut rx) =
        tokio::sync::watch::channel::<Option<std::sync::Arc<strata_cluster::RangeMap>>>(None);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let body = async {
        create_map(c, &keys, "g1").await.unwrap();
        for at in [&b"d"[..], b"h", b"p", b"t"] {
            let map = read_map(c, &keys).await.unwrap().unwrap();
            split(c, &keys, &map, at).await.unwrap();
        }
        let want = read_map(c, &keys).await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = rx.borrow_and_update().clone();
            if let Some(seen) = seen {
                // Every published map is whole (RangeMap::new checked it);
                // the newest one is the store's.
                if seen.entries().len() == 5 {
                    let starts = |m: &strata_cluster::RangeMap| {
                        m.entries()
                            .iter()
                            .map(|e| e.start.clone())
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(starts(&seen), starts(&want));
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the watched map did not reach 5 ranges"
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
        }
        stop_tx.send(true).unwrap();
    };
    tokio::join!(watch_map(c, keys.clone(), tx, stop), body);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&strata_cluster::MemCoordinator::new()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs a real etcd (apt-get install -y etcd-server); .ci/run runs it: cargo test -p strata-cluster -- --ignored"]
                async fn $name() {
                    let etcd = crate::common::Etcd::start(1).await;
                    let c = strata_cluster::EtcdCoordinator::connect(
                        strata_cluster::EtcdOptions::new(etcd.endpoints()),
                    )
                    .unwrap();
                    super::$name(&c).await;
                    drop(etcd);
                }
            )*
        }
    };
}

conformance!(
    kv_basics,
    txn_semantics,
    only_one_campaign_wins,
    leases_expire_and_are_kept_alive,
    watches_deliver_every_change_in_order,
    a_leadership_fences_itself_by_its_deadline,
    range_map_changes_are_compare_and_swap,
    range_map_watch_publishes_only_whole_maps,
);
