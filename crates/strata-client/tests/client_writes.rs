//! The write path's retry rules against fake nodes on 127.0.0.1: a "not
//! primary" answer naming a newer epoch is followed once, two nodes naming
//! each other at one epoch are not followed in a loop, a fenced write of
//! unknown outcome is never retried, and a write that was not applied is
//! sent again to the new primary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::time::{Duration, Instant};

use common::{OnWrite, Script, dead_address, records, start};
use strata_client::{Client, ClientConfig, Error, EtcdSource, Token};
use strata_cluster::{MemCoordinator, Role};

fn seeds(addresses: &[&str], failover_wait: Duration) -> ClientConfig {
    let mut config = ClientConfig::seeds(addresses.iter().copied());
    config.failover_wait = failover_wait;
    config.request_timeout = Duration::from_secs(2);
    config
}

#[tokio::test]
async fn a_refusal_naming_a_newer_primary_is_followed_once() {
    let b = start(Script::primary("b", 5), 10).await;
    // `a` still believes it is primary at epoch 4 (so discovery picks it)
    // but refuses the write, naming b at epoch 5.
    let mut script = Script::primary("a", 4);
    script.on_write = OnWrite::NotPrimary {
        node: "b".into(),
        address: b.address.clone(),
        epoch: Some(5),
    };
    let a = start(script, 3).await;
    let client = Client::new(seeds(&[&a.address], Duration::from_secs(2))).unwrap();
    let token = client.put(b"k", b"v").await.unwrap();
    assert_eq!(token, Token { epoch: 5, seq: 11 });
    assert_eq!((a.writes(), b.writes()), (1, 1));
    // The next write goes straight to the primary it learned.
    let token = client.delete(b"k").await.unwrap();
    assert_eq!(token, Token { epoch: 5, seq: 12 });
    assert_eq!((a.writes(), b.writes()), (1, 2));
}

#[tokio::test]
async fn two_nodes_naming_each_other_at_one_epoch_are_not_followed_in_a_loop() {
    let a = start(Script::primary("a", 4), 0).await;
    let b = start(Script::primary("b", 2), 0).await;
    a.set(|s| {
        s.on_write = OnWrite::NotPrimary {
            node: "b".into(),
            address: b.address.clone(),
            epoch: Some(5),
        }
    });
    b.set(|s| {
        s.on_write = OnWrite::NotPrimary {
            node: "a".into(),
            address: a.address.clone(),
            epoch: Some(5),
        }
    });
    let client = Client::new(seeds(&[&a.address], Duration::from_millis(400))).unwrap();
    let started = Instant::now();
    let err = client.put(b"k", b"v").await.unwrap_err();
    let waited = started.elapsed();
    let Error::NoPrimary { tried, .. } = &err else {
        panic!("expected NoPrimary, got {err}");
    };
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // b was followed once (epoch 5 is newer than a's 4), never again: its
    // refusal at the same epoch sends the client back to discovery.
    assert_eq!(b.writes(), 1, "{err}");
    assert!(a.writes() >= 2, "a rediscovered and retried: {err}");
    let nodes: Vec<&str> = tried.iter().map(|t| t.node.as_str()).collect();
    assert!(
        nodes.contains(&a.address.as_str()) && nodes.contains(&b.address.as_str()),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("not primary") && text.contains(&b.address),
        "{text}"
    );
}

#[tokio::test]
async fn a_write_fenced_in_flight_is_outcome_unknown_and_not_retried() {
    let mut script = Script::primary("a", 7);
    script.on_write = OnWrite::FencedInFlight;
    let a = start(script, 0).await;
    let b = start(Script::primary("b", 6), 0).await;
    let client = Client::new(seeds(&[&a.address, &b.address], Duration::from_secs(2))).unwrap();
    let err = client.put(b"k", b"v").await.unwrap_err();
    match &err {
        Error::OutcomeUnknown {
            node,
            epoch,
            detail,
        } => {
            assert_eq!(node, &a.address);
            assert_eq!(*epoch, 7);
            assert!(detail.contains("fenced"), "{detail}");
        }
        other => panic!("expected OutcomeUnknown, got {other}"),
    }
    assert_eq!((a.writes(), b.writes()), (1, 0));
}

#[tokio::test]
async fn a_write_without_an_answer_in_time_is_outcome_unknown() {
    let mut script = Script::primary("a", 3);
    script.on_write = OnWrite::Slow(Duration::from_secs(5));
    let a = start(script, 0).await;
    let mut config = seeds(&[&a.address], Duration::from_secs(5));
    config.request_timeout = Duration::from_millis(300);
    let client = Client::new(config).unwrap();
    let err = client.put(b"k", b"v").await.unwrap_err();
    assert!(
        matches!(err, Error::OutcomeUnknown { epoch: 3, .. }),
        "{err}"
    );
    assert_eq!(a.writes(), 1);
}

fn etcd_config(failover_wait: Duration) -> ClientConfig {
    let mut config = ClientConfig::etcd(EtcdSource::new(["mem"], "shop", "g1"));
    config.failover_wait = failover_wait;
    config.request_timeout = Duration::from_secs(2);
    config
}

#[tokio::test]
async fn a_refused_write_goes_to_the_new_primary_once_etcd_names_it() {
    let store = MemCoordinator::new();
    let mut script = Script::primary("a", 1);
    script.on_write = OnWrite::FencedBefore;
    let a = start(script, 0).await;
    records::member(&store, "a", &a.address, "g1", Role::Primary, 1).await;
    records::primary(&store, "g1", "a").await;
    let client =
        Client::with_coordinator(etcd_config(Duration::from_secs(5)), store.clone()).unwrap();
    let b = start(Script::primary("b", 0), 40).await;
    records::member(&store, "b", &b.address, "g1", Role::Replica, 1).await;
    let switch = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            records::primary(&store, "g1", "b").await
        })
    };
    let token = client.put(b"k", b"v").await.unwrap();
    let epoch = switch.await.unwrap();
    assert!(
        a.writes() >= 1 && b.writes() == 1,
        "a {} b {}",
        a.writes(),
        b.writes()
    );
    assert_eq!(token.seq, 41);
    let primary = client.primary().await.unwrap();
    assert_eq!((primary.node.as_str(), primary.epoch), ("b", epoch));
}

#[tokio::test]
async fn a_primary_that_cannot_be_reached_is_rediscovered() {
    let store = MemCoordinator::new();
    records::member(&store, "a", &dead_address().await, "g1", Role::Primary, 1).await;
    records::primary(&store, "g1", "a").await;
    let b = start(Script::primary("b", 0), 0).await;
    records::member(&store, "b", &b.address, "g1", Role::Replica, 1).await;
    let client =
        Client::with_coordinator(etcd_config(Duration::from_secs(5)), store.clone()).unwrap();
    let switch = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            records::primary(&store, "g1", "b").await
        })
    };
    let token = client.put(b"k", b"v").await.unwrap();
    switch.await.unwrap();
    assert_eq!(token.seq, 1);
    assert_eq!(b.writes(), 1);
}

#[tokio::test]
async fn with_no_primary_at_all_the_error_names_etcd_and_the_group() {
    let store = MemCoordinator::new();
    let client = Client::with_coordinator(etcd_config(Duration::from_millis(200)), store).unwrap();
    let err = client.put(b"k", b"v").await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::NoPrimary { .. }), "{text}");
    assert!(
        text.contains("\"g1\"") && text.contains("etcd mem") && text.contains("has no primary"),
        "{text}"
    );
}

#[tokio::test]
async fn a_node_that_knows_no_primary_sends_the_write_back_to_discovery() {
    let mut script = Script::replica("a", 3, "");
    script.role = "primary";
    script.on_write = OnWrite::NotPrimary {
        node: String::new(),
        address: String::new(),
        epoch: None,
    };
    let a = start(script, 0).await;
    let client = Client::new(seeds(&[&a.address], Duration::from_millis(300))).unwrap();
    let err = client.put(b"k", b"v").await.unwrap_err();
    assert!(matches!(err, Error::NoPrimary { .. }), "{err}");
    assert!(err.to_string().contains("it knows no primary"), "{err}");
    assert!(a.writes() >= 2, "rediscovered and retried within the wait");
}
