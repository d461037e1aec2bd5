//! Discovery over a `MemCoordinator` holding the records the agent
//! writes: the primary (its member record's address, at the higher of the
//! record's epoch and its key's creation revision), and the cluster status
//! report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::time::Duration;

use common::{Script, dead_address, records, start};
use strata_client::{Client, ClientConfig, Error, EtcdSource};
use strata_cluster::{MemCoordinator, Role};

fn config(group: &str) -> ClientConfig {
    let mut config = ClientConfig::etcd(EtcdSource::new(["mem"], "shop", group));
    config.request_timeout = Duration::from_secs(1);
    config
}

#[tokio::test]
async fn the_primary_comes_from_its_key_and_its_member_record() {
    let store = MemCoordinator::new();
    records::member(
        &store,
        "n1",
        "http://127.0.0.1:7001",
        "g1",
        Role::Replica,
        1,
    )
    .await;
    records::member(
        &store,
        "n2",
        "http://127.0.0.1:7002",
        "g1",
        Role::Primary,
        1,
    )
    .await;
    let epoch = records::primary(&store, "g1", "n2").await;
    let client = Client::with_coordinator(config("g1"), store.clone()).unwrap();
    let primary = client.primary().await.unwrap();
    assert_eq!(
        (
            primary.node.as_str(),
            primary.address.as_str(),
            primary.epoch
        ),
        ("n2", "http://127.0.0.1:7002", epoch)
    );
    // A record at a higher epoch than the key's revision (an agent with an
    // epoch base) gives the epoch.
    records::member(
        &store,
        "n2",
        "http://127.0.0.1:7002",
        "g1",
        Role::Primary,
        1_000_007,
    )
    .await;
    let client = Client::with_coordinator(config("g1"), store.clone()).unwrap();
    assert_eq!(client.primary().await.unwrap().epoch, 1_000_007);
    // A group whose primary has no record yet is reported as such.
    records::primary(&store, "g2", "n9").await;
    let other = Client::with_coordinator(config("g2"), store).unwrap();
    let err = other.primary().await.unwrap_err();
    assert!(matches!(err, Error::NoPrimary { .. }), "{err}");
    assert!(err.to_string().contains("no member record"), "{err}");
}

#[tokio::test]
async fn the_cluster_status_reports_every_group_with_lag_and_lease() {
    let store = MemCoordinator::new();
    let mut script = Script::primary("p", 0);
    script.lease_millis_left = 4200;
    let p = start(script, 100).await;
    let r = start(Script::replica("r", 0, &p.address), 93).await;
    records::member(&store, "p", &p.address, "g1", Role::Primary, 1).await;
    records::member(&store, "r", &r.address, "g1", Role::Replica, 1).await;
    records::member(
        &store,
        "gone",
        &dead_address().await,
        "g1",
        Role::Replica,
        1,
    )
    .await;
    records::member(&store, "q", &dead_address().await, "g2", Role::Replica, 1).await;
    let epoch = records::primary(&store, "g1", "p").await;
    // The client's own group plays no part in the report.
    let client = Client::with_coordinator(config("g1"), store).unwrap();
    let groups = client.cluster_status().await.unwrap();
    assert_eq!(groups.len(), 2);
    let g1 = &groups[0];
    assert_eq!(
        (g1.group.as_str(), g1.primary.as_deref(), g1.epoch),
        ("g1", Ok("p"), Some(epoch))
    );
    assert_eq!(g1.lease_millis_left, Some(4200));
    let nodes: Vec<(&str, u64, Option<u64>, bool)> = g1
        .members
        .iter()
        .map(|m| (m.node.as_str(), m.applied_seq, m.lag, m.error.is_some()))
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("gone", 0, Some(100), true),
            ("p", 100, Some(0), false),
            ("r", 93, Some(7), false)
        ]
    );
    let g2 = &groups[1];
    assert!(g2.primary.as_ref().unwrap_err().contains("has no primary"));
    assert_eq!(g2.members[0].lag, None);
    let text = g1.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("group g1  primary p  epoch {epoch}  lease left 4200 ms")
    );
    assert!(
        lines[1].starts_with("  gone  replica  http://127.0.0.1:")
            && lines[1].contains("(from its record; not answering: Admin.Status"),
        "{text}"
    );
    assert_eq!(
        lines[3],
        format!("  r  replica  {}  epoch 0  applied 93  lag 7", r.address)
    );
    assert!(
        g2.to_string()
            .starts_with("group g2  no primary: group \"g2\" has no primary"),
        "{g2}"
    );
}

#[tokio::test]
async fn a_cluster_status_without_etcd_is_refused() {
    let client = Client::new(ClientConfig::seeds(["127.0.0.1:1"])).unwrap();
    assert!(matches!(
        client.cluster_status().await,
        Err(Error::Config { .. })
    ));
}

#[test]
fn a_client_made_outside_a_runtime_is_an_error_not_a_panic() {
    let config = ClientConfig::etcd(EtcdSource::new(["http://127.0.0.1:2379"], "shop", "g1"));
    let err = Client::new(config).unwrap_err();
    assert!(
        matches!(err, Error::Config { .. }) && err.to_string().contains("Tokio runtime"),
        "{err}"
    );
}
