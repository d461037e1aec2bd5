//! The read path's accept rules against fake nodes on 127.0.0.1: a token's
//! `min_seq` is sent, an answer from an epoch older than the token's is
//! never taken, without etcd only the token's own epoch is trusted, and
//! with etcd a token the epoch history lost is `WriteLost`, never an
//! answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::time::Duration;

use common::{Script, records, start};
use strata_client::{Client, ClientConfig, Error, EtcdSource, ReadPolicy, ScanRange, Token};
use strata_cluster::{MemCoordinator, Role};

fn seeds(addresses: &[&str]) -> ClientConfig {
    let mut config = ClientConfig::seeds(addresses.iter().copied());
    config.failover_wait = Duration::from_millis(300);
    config.read_wait = Duration::from_millis(50);
    config
}

fn value(answer: &strata_client::GetAnswer) -> String {
    String::from_utf8(answer.value.clone().unwrap()).unwrap()
}

#[tokio::test]
async fn an_answer_from_an_older_epoch_than_the_token_is_not_taken() {
    let primary = start(Script::primary("p", 5), 100).await;
    let old = start(Script::replica("old", 4, &primary.address), 100).await;
    let new = start(Script::replica("new", 5, &primary.address), 100).await;
    let client = Client::new(seeds(&[&old.address, &new.address, &primary.address])).unwrap();
    let token = Some(Token { epoch: 5, seq: 90 });
    // Round robin starts at each replica in turn; the old one is never taken.
    for _ in 0..4 {
        let answer = client
            .get(b"k", ReadPolicy::Replicas { token })
            .await
            .unwrap();
        assert_eq!(value(&answer), "from new");
        assert_eq!(
            (answer.epoch, answer.node.as_str()),
            (5, new.address.as_str())
        );
    }
    assert!(
        old.reads() >= 1,
        "the old replica was asked and passed over"
    );
    assert_eq!(primary.reads(), 0);
    assert!(
        new.node.min_seqs.lock().iter().all(|&m| m == 90),
        "min_seq = token.seq"
    );
}

#[tokio::test]
async fn a_replica_that_has_not_applied_the_token_is_passed_over_for_the_primary() {
    let primary = start(Script::primary("p", 5), 100).await;
    let behind = start(Script::replica("behind", 5, &primary.address), 10).await;
    let client = Client::new(seeds(&[&behind.address])).unwrap();
    let token = Some(Token { epoch: 5, seq: 50 });
    let answer = client
        .get(b"k", ReadPolicy::Replicas { token })
        .await
        .unwrap();
    assert_eq!(value(&answer), "from p");
    assert_eq!(behind.reads(), 1);
}

#[tokio::test]
async fn without_etcd_an_answer_from_a_newer_epoch_is_refused_with_a_clear_error() {
    let primary = start(Script::primary("p", 6), 100).await;
    let replica = start(Script::replica("r", 6, &primary.address), 100).await;
    let client = Client::new(seeds(&[&replica.address])).unwrap();
    let token = Token { epoch: 5, seq: 90 };
    let err = client
        .get(b"k", ReadPolicy::Replicas { token: Some(token) })
        .await
        .unwrap_err();
    let Error::NoReadAnswer {
        token: Some(t),
        tried,
    } = &err
    else {
        panic!("expected NoReadAnswer, got {err}");
    };
    assert_eq!(*t, token);
    assert_eq!(tried.len(), 2, "the replica, then the primary: {err}");
    let text = err.to_string();
    assert!(
        text.contains("5:90") && text.contains("newer than the token") && text.contains("history"),
        "{text}"
    );
    // The same read without a token is answered.
    assert!(
        client
            .get(b"k", ReadPolicy::Replicas { token: None })
            .await
            .is_ok()
    );
}

fn etcd_config() -> ClientConfig {
    let mut config = ClientConfig::etcd(EtcdSource::new(["mem"], "shop", "g1"));
    config.failover_wait = Duration::from_millis(300);
    config.read_wait = Duration::from_millis(50);
    config
}

#[tokio::test]
async fn a_token_the_history_lost_is_write_lost_never_an_answer() {
    let store = MemCoordinator::new();
    let replica = start(Script::replica("r", 7, ""), 120).await;
    records::member(&store, "r", &replica.address, "g1", Role::Replica, 7).await;
    records::history(&store, "g1", 5, 0).await;
    // Epoch 7 began at seq 90: the write acknowledged as 5:100 was never
    // shipped and is gone, though the replica has applied seq 120.
    records::history(&store, "g1", 7, 90).await;
    let client = Client::with_coordinator(etcd_config(), store).unwrap();
    let token = Token { epoch: 5, seq: 100 };
    let err = client
        .get(b"k", ReadPolicy::Replicas { token: Some(token) })
        .await
        .unwrap_err();
    match err {
        Error::WriteLost {
            token: t,
            epoch,
            cut,
        } => assert_eq!((t, epoch, cut), (token, 7, 90)),
        other => panic!("expected WriteLost, got {other}"),
    }
    let err = client
        .scan(
            ScanRange::new(Vec::new(), None),
            ReadPolicy::Replicas { token: Some(token) },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WriteLost { .. }), "{err}");
}

#[tokio::test]
async fn the_history_is_read_again_when_an_answer_is_newer_than_it() {
    let store = MemCoordinator::new();
    let replica = start(Script::replica("r", 5, ""), 200).await;
    records::member(&store, "r", &replica.address, "g1", Role::Replica, 5).await;
    records::history(&store, "g1", 5, 0).await;
    let client = Client::with_coordinator(etcd_config(), store.clone()).unwrap();
    let token = Some(Token { epoch: 5, seq: 150 });
    let answer = client
        .get(b"k", ReadPolicy::Replicas { token })
        .await
        .unwrap();
    assert_eq!(answer.epoch, 5);
    // A failover that kept the write: epoch 7 began at 160.
    records::history(&store, "g1", 7, 160).await;
    replica.set(|s| s.read_epoch = 7);
    let answer = client
        .get(b"k", ReadPolicy::Replicas { token })
        .await
        .unwrap();
    assert_eq!(answer.epoch, 7);
    // One that did not: epoch 9 began at 140, below the token.
    records::history(&store, "g1", 9, 140).await;
    replica.set(|s| s.read_epoch = 9);
    let err = client
        .get(b"k", ReadPolicy::Replicas { token })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WriteLost {
                epoch: 9,
                cut: 140,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn an_answer_newer_than_every_history_entry_is_not_taken() {
    let store = MemCoordinator::new();
    let replica = start(Script::replica("r", 8, ""), 200).await;
    records::member(&store, "r", &replica.address, "g1", Role::Replica, 8).await;
    records::history(&store, "g1", 5, 0).await;
    let client = Client::with_coordinator(etcd_config(), store).unwrap();
    let err = client
        .get(
            b"k",
            ReadPolicy::Replicas {
                token: Some(Token { epoch: 5, seq: 10 }),
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no entry at or after it"), "{err}");
}

#[tokio::test]
async fn primary_reads_follow_the_primary() {
    let primary = start(Script::primary("p", 3), 7).await;
    let replica = start(Script::replica("r", 3, &primary.address), 7).await;
    let client = Client::new(seeds(&[&replica.address])).unwrap();
    let answer = client.get(b"k", ReadPolicy::Primary).await.unwrap();
    assert_eq!((value(&answer).as_str(), answer.seq), ("from p", 7));
    let scan = client
        .scan(
            ScanRange::new(b"a".to_vec(), Some(b"z".to_vec())).limit(5),
            ReadPolicy::Primary,
        )
        .await
        .unwrap();
    assert_eq!(scan.entries, vec![(b"k".to_vec(), b"from p".to_vec())]);
    assert_eq!(replica.reads(), 0);
}

#[tokio::test]
async fn with_etcd_too_an_answer_from_an_older_epoch_is_not_taken() {
    let store = MemCoordinator::new();
    let old = start(Script::replica("old", 4, ""), 200).await;
    records::member(&store, "old", &old.address, "g1", Role::Replica, 4).await;
    records::history(&store, "g1", 4, 0).await;
    records::history(&store, "g1", 5, 150).await;
    let client = Client::with_coordinator(etcd_config(), store).unwrap();
    let token = Token { epoch: 5, seq: 160 };
    let err = client
        .get(b"k", ReadPolicy::Replicas { token: Some(token) })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoReadAnswer { .. }), "{err}");
    assert!(
        err.to_string().contains("older than the token's 5"),
        "{err}"
    );
}

#[tokio::test]
async fn the_members_are_read_once_for_many_reads_and_again_after_a_read_nobody_answered() {
    let primary = start(Script::primary("p", 5), 100).await;
    let replica = start(Script::replica("r", 5, &primary.address), 100).await;
    let client = Client::new(seeds(&[&replica.address])).unwrap();
    for _ in 0..5 {
        client
            .get(b"k", ReadPolicy::Replicas { token: None })
            .await
            .unwrap();
    }
    assert_eq!(replica.statuses(), 1);
    let unmet = Some(Token {
        epoch: 5,
        seq: 1_000,
    });
    assert!(
        client
            .get(b"k", ReadPolicy::Replicas { token: unmet })
            .await
            .is_err()
    );
    client
        .get(b"k", ReadPolicy::Replicas { token: None })
        .await
        .unwrap();
    assert_eq!(replica.statuses(), 2);
}
