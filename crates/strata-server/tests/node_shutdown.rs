//! Regression (issue 12): a node with replicas following did not exit on
//! SIGTERM or SIGINT (the graceful shutdown waited for replication streams
//! that never end). Now, from the example configs: a primary with two
//! replicas following (one range-scoped), and a downstream replica of
//! replica-1; SIGTERM and then SIGINT of the primary, and SIGTERM of
//! replica-1 (which serves the downstream one), each exit within the grace
//! period with a clean close (the next start replays nothing), and their
//! replicas count the upstream going away (no refusal), reconnect and catch
//! up.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::{GetRequest, PutRequest, StatusRequest, StatusResponse};

#[path = "common/node.rs"]
mod node;

use node::{Node, free_port};

const GRACE_MS: u64 = 3000;

async fn wait_up(node: &Node) {
    let started = Instant::now();
    loop {
        if let Ok(mut admin) = AdminClient::connect(node.grpc.clone()).await
            && admin.status(StatusRequest {}).await.is_ok()
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} did not come up: {}",
            node.grpc,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(node: &Node) -> StatusResponse {
    AdminClient::connect(node.grpc.clone())
        .await
        .unwrap()
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Writes `count` keys (one in four under "eu/") on the primary; returns
/// the last commit token.
async fn write(primary: &Node, round: &str, count: usize) -> u64 {
    let mut kv = KvClient::connect(primary.grpc.clone()).await.unwrap();
    let mut last = 0;
    for i in 0..count {
        let key = if i % 4 == 0 {
            format!("eu/{round}-{i:04}")
        } else {
            format!("k/{round}-{i:04}")
        };
        last = kv
            .put(PutRequest {
                key: key.into_bytes(),
                value: format!("{round}-{i}").into_bytes(),
                sync: i + 1 == count,
            })
            .await
            .unwrap()
            .into_inner()
            .seq;
    }
    last
}

/// Reads a key the node holds once it has applied `seq` (it caught up).
async fn caught_up(node: &Node, key: &str, seq: u64) {
    let answer = KvClient::connect(node.grpc.clone())
        .await
        .unwrap()
        .get(GetRequest {
            key: key.into(),
            min_seq: seq,
            timeout_millis: 20_000,
            ..GetRequest::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{} did not catch up to {seq}: {e:?}\n{}",
                node.grpc,
                node.log()
            )
        })
        .into_inner();
    assert!(
        answer.found && answer.seq >= seq,
        "{}: {answer:?}",
        node.grpc
    );
}

/// Sends `signal` to the node and waits for it to exit; returns how long it
/// took. Fails (killing it) if it is still running well past the grace
/// period.
fn stop_with(node: &mut Node, signal: &str) -> Duration {
    let pid = node.pid();
    let started = Instant::now();
    let sent = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let child = node.child.as_mut().unwrap();
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            let took = started.elapsed();
            assert!(exit.success(), "SIG{signal}: exit {exit:?}: {}", node.log());
            node.child = None;
            return took;
        }
        if started.elapsed() > Duration::from_millis(GRACE_MS + 5000) {
            node.kill();
            panic!(
                "SIG{signal}: still running {GRACE_MS} ms past its grace period: {}",
                node.log()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops `node` with `signal` within its grace period, cleanly, and
/// restarts it: the restart replays no log.
async fn stop_cleanly_and_restart(node: &mut Node, signal: &str) -> Duration {
    let took = stop_with(node, signal);
    let log = node.log();
    assert!(
        took < Duration::from_millis(GRACE_MS),
        "SIG{signal}: exited after {took:?}, past its grace period: {log}"
    );
    assert!(
        log.contains("stopped cleanly (flushed, synced, closed)"),
        "SIG{signal}: {log}"
    );
    node.start();
    wait_up(node).await;
    let log = node.log();
    assert!(
        log.contains("replayed_batches=0"),
        "the restart replayed log: {log}"
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_end_replication_streams_and_close_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut ports = BTreeMap::new();
    for port in ["7001", "7002", "7003", "9101", "9102", "9103"] {
        ports.insert(port, free_port());
    }
    let grace = |text: String| format!("{text}\n[limits]\nshutdown_grace_ms = {GRACE_MS}\n");
    let mut primary = node::example(dir.path(), "cluster", "primary", &ports, grace);
    let mut r1 = node::example(dir.path(), "cluster", "replica-1", &ports, grace);
    let mut r2 = node::example(dir.path(), "cluster", "replica-2", &ports, grace);
    // A downstream replica of replica-1 (cascading).
    let (r3_port, r3_metrics) = (free_port(), free_port());
    let r3_config = dir.path().join("replica-3.toml");
    std::fs::write(
        &r3_config,
        format!(
            "role = \"replica\"\ndata_dir = \"data/replica-3\"\nlisten = \"127.0.0.1:{r3_port}\"\nmetrics_listen = \"127.0.0.1:{r3_metrics}\"\n[replica]\nupstream = \"{}\"\nid = \"replica-3\"\n",
            r1.grpc
        ),
    )
    .unwrap();
    let mut r3 = Node {
        config: r3_config,
        log: dir.path().join("replica-3.log"),
        child: None,
        addr: format!("127.0.0.1:{r3_port}"),
        grpc: format!("http://127.0.0.1:{r3_port}"),
        metrics: format!("127.0.0.1:{r3_metrics}"),
    };
    primary.start();
    wait_up(&primary).await;
    for replica in [&mut r1, &mut r2, &mut r3] {
        replica.start();
    }
    for replica in [&r1, &r2, &r3] {
        wait_up(replica).await;
    }
    let seq = write(&primary, "before", 200).await;
    for replica in [&r1, &r3] {
        caught_up(replica, "k/before-0199", seq).await;
    }
    caught_up(&r2, "eu/before-0196", seq).await;

    let mut shutdowns = 0;
    for signal in ["TERM", "INT"] {
        assert_eq!(
            status(&primary)
                .await
                .replicas
                .iter()
                .filter(|r| r.connected)
                .count(),
            2
        );
        let took = stop_cleanly_and_restart(&mut primary, signal).await;
        println!("SIG{signal} of the primary with two replicas following: exited in {took:?}");
        shutdowns += 1;
        let seq = write(&primary, signal, 100).await;
        for replica in [&r1, &r3] {
            caught_up(replica, &format!("k/{signal}-0099"), seq).await;
        }
        caught_up(&r2, &format!("eu/{signal}-0096"), seq).await;
        for replica in [&r1, &r2] {
            let s = status(replica).await;
            assert_eq!(s.upstream_shutdowns, shutdowns, "{}: {s:?}", replica.grpc);
            assert_eq!(s.refusals, 0, "{s:?}");
            assert!(!s.last_error.contains("shutting down"), "{s:?}");
        }
    }

    // A replica serving a downstream replica stops the same way.
    let took = stop_cleanly_and_restart(&mut r1, "TERM").await;
    println!("SIGTERM of a replica with a downstream replica: exited in {took:?}");
    let seq = write(&primary, "cascade", 50).await;
    caught_up(&r1, "k/cascade-0049", seq).await;
    caught_up(&r3, "k/cascade-0049", seq).await;
    let s = status(&r3).await;
    assert_eq!((s.upstream_shutdowns, s.refusals), (1, 0), "{s:?}");
}
