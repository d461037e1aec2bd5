//! The sharded client against a range map in a `MemCoordinator` and fake
//! nodes on 127.0.0.1: the map is read on first use and followed through
//! splits and moves; a "wrong group" refusal is routed again by a newer
//! map (and not retried without one); a "range moving" refusal is retried
//! until the cut-over ends; a batch over two groups is never sent; an
//! unknown outcome is never retried; a scan over two groups is
//! concatenated in order and a token is sent only to its own group.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::time::{Duration, Instant};

use common::{OnWrite, Running, Script, records, start};
use strata_client::{
    ClientConfig, Error, EtcdSource, GroupToken, ScanRange, ShardedClient, ShardedRead, Token,
    WriteBatch,
};
use strata_cluster::{
    Coordinator, Freeze, MemCoordinator, Role, begin_move, create_map, flip_move, read_map, split,
};

const EPOCH: u64 = 1000;

fn config(failover_wait: Duration) -> ClientConfig {
    let mut config = ClientConfig::etcd(EtcdSource::cluster(["mem"], "shop"));
    config.failover_wait = failover_wait;
    config.request_timeout = Duration::from_secs(2);
    config
}

/// `["", m)` in g1 and `[m, end)` in g2, made the way an operator would:
/// create, split, move.
async fn two_groups(store: &MemCoordinator) {
    let keys = records::keys();
    create_map(store, &keys, "g1").await.unwrap();
    let map = read_map(store, &keys).await.unwrap().unwrap();
    split(store, &keys, &map, b"m").await.unwrap();
    move_range(store, b"m", "g2").await;
}

async fn move_range(store: &MemCoordinator, start: &[u8], to: &str) {
    let keys = records::keys();
    let map = read_map(store, &keys).await.unwrap().unwrap();
    let id = begin_move(store, &keys, &map, start, to).await.unwrap();
    let freeze = Freeze {
        v: 1,
        id,
        node: "n".into(),
        seq: 0,
    }
    .encode();
    store
        .put(&keys.range_freeze(start), &freeze, None)
        .await
        .unwrap();
    flip_move(store, &keys, start, id, &freeze).await.unwrap();
}

/// A fake primary of `group` named `node`, published in the store.
async fn primary(store: &MemCoordinator, group: &str, node: &str, applied: u64) -> Running {
    let mut script = Script::primary(node, EPOCH);
    script.data = vec!["a", "c", "k", "n", "q", "x"];
    let running = start(script, applied).await;
    records::member(store, node, &running.address, group, Role::Primary, EPOCH).await;
    records::primary(store, group, node).await;
    records::history(store, group, EPOCH, 0).await;
    running
}

#[tokio::test]
async fn the_map_is_read_on_first_use_and_refresh_follows_splits_and_moves() {
    let store = MemCoordinator::new();
    let client =
        ShardedClient::with_coordinator(config(Duration::from_secs(1)), store.clone()).unwrap();
    assert!(client.map().is_none());
    // No map in etcd yet: a clear error, not a panic.
    let err = client.refresh().await.unwrap_err();
    assert!(
        matches!(&err, Error::Coordinator { detail, .. } if detail.contains("no range map")),
        "{err}"
    );
    let keys = records::keys();
    create_map(&store, &keys, "g1").await.unwrap();
    let first = client.refresh().await.unwrap();
    assert_eq!(first.entries().len(), 1);
    assert_eq!(client.map().unwrap().revision(), first.revision());

    let map = read_map(&store, &keys).await.unwrap().unwrap();
    split(&store, &keys, &map, b"m").await.unwrap();
    // The client's watch brings the split without a refresh.
    let watched = std::time::Instant::now();
    while client.map().unwrap().entries().len() != 2 {
        assert!(
            watched.elapsed() < Duration::from_secs(5),
            "the watch did not deliver the split"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after_split = client.refresh().await.unwrap();
    assert!(after_split.revision() > first.revision());
    assert_eq!(after_split.entries().len(), 2);
    assert_eq!(after_split.locate(b"n").group, "g1");

    let map = read_map(&store, &keys).await.unwrap().unwrap();
    let id = begin_move(&store, &keys, &map, b"m", "g2").await.unwrap();
    let marked = client.refresh().await.unwrap();
    let entry = marked.locate(b"n");
    assert_eq!(
        entry.group, "g1",
        "a range being moved is still its source's"
    );
    assert_eq!(entry.moving.as_ref().unwrap().to, "g2");

    let freeze = Freeze {
        v: 1,
        id,
        node: "n".into(),
        seq: 0,
    }
    .encode();
    store
        .put(&keys.range_freeze(b"m"), &freeze, None)
        .await
        .unwrap();
    flip_move(&store, &keys, b"m", id, &freeze).await.unwrap();
    let moved = client.refresh().await.unwrap();
    assert_eq!(moved.locate(b"n").group, "g2");
    assert_eq!(moved.locate(b"a").group, "g1");
    assert_eq!(moved.groups(), ["g1", "g2"]);
    assert_eq!(client.map().unwrap().revision(), moved.revision());
}

#[tokio::test]
async fn a_batch_over_two_groups_is_refused_before_anything_is_sent() {
    let store = MemCoordinator::new();
    two_groups(&store).await;
    let a = primary(&store, "g1", "a", 0).await;
    let b = primary(&store, "g2", "b", 0).await;
    let client = ShardedClient::with_coordinator(config(Duration::from_secs(1)), store).unwrap();
    let err = client
        .write(WriteBatch::new().put(b"a", b"1").delete_range(b"k", b"p"))
        .await
        .unwrap_err();
    let Error::SpansGroups { ranges, .. } = &err else {
        panic!("expected SpansGroups, got {err}");
    };
    assert!(
        ranges.contains("in g1") && ranges.contains("in g2"),
        "{ranges}"
    );
    assert_eq!((a.writes(), b.writes()), (0, 0));
    // Within one group, the write goes to that group's primary.
    let token = client.put(b"n", b"1").await.unwrap();
    assert_eq!(
        token,
        GroupToken {
            group: "g2".into(),
            token: Token {
                epoch: EPOCH,
                seq: 1
            }
        }
    );
    assert_eq!((a.writes(), b.writes()), (0, 1));
}

#[tokio::test]
async fn a_write_refused_as_wrong_group_is_routed_again_by_the_newer_map() {
    let store = MemCoordinator::new();
    let keys = records::keys();
    create_map(&store, &keys, "g1").await.unwrap();
    let map = read_map(&store, &keys).await.unwrap().unwrap();
    split(&store, &keys, &map, b"m").await.unwrap();
    let a = primary(&store, "g1", "a", 0).await;
    let b = primary(&store, "g2", "b", 0).await;
    let client =
        ShardedClient::with_coordinator(config(Duration::from_secs(2)), store.clone()).unwrap();
    let old = client.refresh().await.unwrap();
    assert_eq!(old.locate(b"n").group, "g1");
    // The range moves to g2 behind the client's back; g1 refuses.
    move_range(&store, b"m", "g2").await;
    let now = read_map(&store, &keys).await.unwrap().unwrap();
    a.set(|s| {
        s.on_write = OnWrite::WrongGroup {
            owner: "g2".into(),
            map_revision: now.revision(),
        }
    });
    let token = client.put(b"n", b"v").await.unwrap();
    assert_eq!(token.group, "g2");
    assert_eq!((a.writes(), b.writes()), (1, 1));
    assert!(client.map().unwrap().revision() >= now.revision());
    assert_eq!(client.map().unwrap().locate(b"n").group, "g2");
}

#[tokio::test]
async fn a_wrong_group_refusal_without_a_newer_map_is_not_retried() {
    let store = MemCoordinator::new();
    let keys = records::keys();
    create_map(&store, &keys, "g1").await.unwrap();
    let a = primary(&store, "g1", "a", 0).await;
    // The node's map is older than the client's: re-reading the same map
    // would send the write to the same node, so the client waits for a
    // newer one, and none comes.
    a.set(|s| {
        s.on_write = OnWrite::WrongGroup {
            owner: "g9".into(),
            map_revision: 1,
        }
    });
    let wait = Duration::from_millis(300);
    let client = ShardedClient::with_coordinator(config(wait), store).unwrap();
    let started = Instant::now();
    let err = client.put(b"n", b"v").await.unwrap_err();
    let waited = started.elapsed();
    let Error::WrongGroup {
        owner,
        map_revision,
        ..
    } = &err
    else {
        panic!("expected WrongGroup, got {err}");
    };
    assert_eq!((owner.as_deref(), *map_revision), (Some("g9"), Some(1)));
    assert_eq!(a.writes(), 1, "sent once: no newer map, no retry");
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn a_range_moving_refusal_is_retried_until_the_cut_over_ends() {
    let store = MemCoordinator::new();
    two_groups(&store).await;
    let b = primary(&store, "g2", "b", 0).await;
    b.set(|s| s.on_write = OnWrite::RangeMoving);
    let client = ShardedClient::with_coordinator(config(Duration::from_secs(3)), store).unwrap();
    let node = b.node.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        node.script.lock().on_write = OnWrite::Accept { epoch: EPOCH };
    });
    let started = Instant::now();
    let token = client.put(b"x", b"v").await.unwrap();
    assert_eq!(token.group, "g2");
    assert!(b.writes() >= 3, "{} attempts", b.writes());
    // 20 + 40 + 80 (+ 160) ms of backoff: well under the wait.
    assert!(started.elapsed() < Duration::from_secs(1));

    // A cut-over that never ends fails within the wait, as RangeMoving.
    b.set(|s| s.on_write = OnWrite::RangeMoving);
    let started = Instant::now();
    let err = client_with_wait(&b, Duration::from_millis(250)).await;
    assert!(matches!(err, Error::RangeMoving { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A fresh client over a fresh store naming `node` as g2's primary, whose
/// write of `x` fails within `wait`.
async fn client_with_wait(node: &Running, wait: Duration) -> Error {
    let store = MemCoordinator::new();
    two_groups(&store).await;
    records::member(&store, "b", &node.address, "g2", Role::Primary, EPOCH).await;
    records::primary(&store, "g2", "b").await;
    let client = ShardedClient::with_coordinator(config(wait), store).unwrap();
    client.put(b"x", b"v").await.unwrap_err()
}

#[tokio::test]
async fn an_outcome_unknown_write_is_never_retried() {
    let store = MemCoordinator::new();
    two_groups(&store).await;
    let a = primary(&store, "g1", "a", 0).await;
    a.set(|s| s.on_write = OnWrite::FencedInFlight);
    let client = ShardedClient::with_coordinator(config(Duration::from_secs(1)), store).unwrap();
    let err = client.put(b"a", b"v").await.unwrap_err();
    assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err}");
    assert_eq!(a.writes(), 1);
}

fn keys_of(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    entries
        .iter()
        .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_scan_over_two_groups_is_concatenated_and_a_token_goes_only_to_its_group() {
    let store = MemCoordinator::new();
    two_groups(&store).await;
    // Each fake holds the same keys; each must be asked only for its part.
    let a = primary(&store, "g1", "a", 10).await;
    let b = primary(&store, "g2", "b", 20).await;
    let client = ShardedClient::with_coordinator(config(Duration::from_secs(1)), store).unwrap();
    let token = GroupToken {
        group: "g1".into(),
        token: Token {
            epoch: EPOCH,
            seq: 7,
        },
    };
    let read = ShardedRead::Replicas {
        token: Some(token.clone()),
    };
    let all = client
        .scan(
            ScanRange::new(b"b".to_vec(), Some(b"y".to_vec())),
            read.clone(),
        )
        .await
        .unwrap();
    assert_eq!(keys_of(&all.entries), ["c", "k", "n", "q", "x"]);
    assert!(!all.more);
    let groups: Vec<&str> = all.pieces.iter().map(|p| p.group.as_str()).collect();
    assert_eq!(groups, ["g1", "g2"]);
    assert_eq!(*a.node.min_seqs.lock(), [7]);
    assert_eq!(*b.node.min_seqs.lock(), [0], "g1's token is not g2's");

    let back = client
        .scan(
            ScanRange::new(Vec::new(), None).reverse(true).limit(3),
            read,
        )
        .await
        .unwrap();
    assert_eq!(keys_of(&back.entries), ["x", "q", "n"]);
    assert!(back.more);
    assert_eq!(back.pieces.len(), 1, "the limit was reached within g2");

    let four = client
        .scan(
            ScanRange::new(Vec::new(), None).limit(4),
            ShardedRead::Primary,
        )
        .await
        .unwrap();
    assert_eq!(keys_of(&four.entries), ["a", "c", "k", "n"]);
    assert!(four.more);
    assert_eq!(four.pieces.len(), 2);

    let get = client.get(b"q", ShardedRead::Primary).await.unwrap();
    assert_eq!(get.group, "g2");
    assert_eq!(get.answer.value.as_deref(), Some(&b"from b"[..]));
}
