//! The `strata` binary as a user runs it, from the example configs in
//! `examples/cluster/` (copied with free ports): a primary and two
//! replicas; writes through gRPC, reads from a replica with `min_seq`, a
//! replica killed and restarted, health checks, `/metrics` scraped and
//! parsed, and the alert rules in `examples/monitoring/` checked against
//! what the scrape exports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::{
    DeleteRequest, DigestRequest, GetRequest, MergeRangesRequest, Operation, PromoteRequest,
    PutRequest, RangesRequest, ScanRequest, SplitRangeRequest, StatusRequest, WriteRequest,
    operation,
};

#[path = "common/node.rs"]
mod node;

use node::{Node, free_port, repo};

/// Copies an example config into `dir`, swapping its ports for free ones.
fn example(dir: &Path, name: &str, ports: &BTreeMap<&str, u16>) -> Node {
    node::example(dir, "cluster", name, ports, |text| text)
}

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
            std::fs::read_to_string(&node.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn scrape(addr: &str) -> String {
    node::scrape_text(addr)
}

/// `name{labels}` -> value, for every sample line; panics on a malformed one.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    assert!(text.trim_end().ends_with("# EOF"), "no # EOF");
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

fn metric_names(samples: &BTreeMap<String, f64>) -> std::collections::BTreeSet<String> {
    samples
        .keys()
        .map(|s| s.split('{').next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_and_two_replicas_from_the_example_configs() {
    let dir = tempfile::tempdir().unwrap();
    let mut ports = BTreeMap::new();
    for port in ["7001", "7002", "7003", "9101", "9102", "9103"] {
        ports.insert(port, free_port());
    }
    let mut primary = example(dir.path(), "primary", &ports);
    let mut r1 = example(dir.path(), "replica-1", &ports);
    let mut r2 = example(dir.path(), "replica-2", &ports);
    primary.start();
    wait_up(&primary).await;
    r1.start();
    r2.start();
    wait_up(&r1).await;
    wait_up(&r2).await;

    // Health and reflection are served.
    let channel = tonic::transport::Endpoint::from_shared(primary.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "strata.v1.Kv".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut kv = KvClient::connect(primary.grpc.clone()).await.unwrap();
    let mut last = 0;
    for (key, value) in [("greeting", "hello"), ("eu/alice", "1"), ("us/bob", "2")] {
        last = kv
            .write(WriteRequest {
                operations: vec![Operation {
                    kind: operation::Kind::Put as i32,
                    key: key.into(),
                    value: value.into(),
                }],
                sync: true,
                ..WriteRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
            .seq;
    }
    let read = |node: &str, key: &str, min_seq: u64| {
        let node = node.to_string();
        let key = key.to_string();
        async move {
            KvClient::connect(node)
                .await
                .unwrap()
                .get(GetRequest {
                    key: key.into_bytes(),
                    min_seq,
                    timeout_millis: 10_000,
                    ..GetRequest::default()
                })
                .await
        }
    };
    let answer = read(&r1.grpc, "greeting", last).await.unwrap().into_inner();
    assert_eq!(
        (answer.found, answer.value.as_slice()),
        (true, &b"hello"[..])
    );
    assert!(answer.seq >= last);
    // replica-2 holds only "eu/" keys.
    let eu = read(&r2.grpc, "eu/alice", last).await.unwrap().into_inner();
    assert_eq!(eu.value, b"1");
    let outside = read(&r2.grpc, "us/bob", last).await.unwrap_err();
    assert!(outside.message().contains("outside"), "{outside:?}");
    // Regression (issue 12): scans reaching outside its ranges (forward,
    // reverse, a prefix wider than its range) are refused the same way,
    // naming the ranges, instead of answering a silently partial result.
    let r2_scan = |start: &str, end: Option<&str>, reverse: bool| {
        let node = r2.grpc.clone();
        let request = ScanRequest {
            start: start.into(),
            end: end.unwrap_or_default().into(),
            unbounded: end.is_none(),
            reverse,
            min_seq: last,
            timeout_millis: 10_000,
            ..ScanRequest::default()
        };
        async move { KvClient::connect(node).await.unwrap().scan(request).await }
    };
    for (start, end, reverse) in [
        ("a", Some("b"), false),
        ("", None, false),
        ("", None, true),
        ("eu/", Some("us0"), true),
        ("e", Some("f"), false),
    ] {
        let refused = r2_scan(start, end, reverse).await.unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{start:?}..{end:?}: {refused:?}"
        );
        assert!(
            refused.message().contains("outside the key ranges")
                && refused.message().contains(r#"["eu/", "eu0")"#),
            "{refused:?}"
        );
    }
    let inside = r2_scan("eu/", Some("eu0"), true)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inside.entries.len(), 1);
    assert_eq!(inside.entries[0].key, b"eu/alice");
    // Replicas refuse writes, naming the primary.
    let refused = KvClient::connect(r1.grpc.clone())
        .await
        .unwrap()
        .write(WriteRequest {
            operations: vec![Operation {
                kind: operation::Kind::Put as i32,
                key: b"x".to_vec(),
                value: b"y".to_vec(),
            }],
            ..WriteRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // Kill replica-1, write meanwhile, restart it: it catches up.
    r1.kill();
    let after = kv
        .write(WriteRequest {
            operations: vec![Operation {
                kind: operation::Kind::Put as i32,
                key: b"while-down".to_vec(),
                value: b"ok".to_vec(),
            }],
            sync: true,
            ..WriteRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .seq;
    r1.start();
    wait_up(&r1).await;
    let answer = read(&r1.grpc, "while-down", after)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.value, b"ok");

    // Metrics: scraped, parsed, and the ones that matter are there.
    let primary_samples = parse(&scrape(&primary.metrics));
    let replica_samples = parse(&scrape(&r1.metrics));
    for name in [
        "strata_last_seq",
        "strata_durable_seq",
        "strata_poisoned",
        "strata_wal_fsyncs_total",
        "strata_level_tables",
        "strata_write_stalls_total",
        "strata_block_cache_hit_ratio",
        "strata_range_table_bytes",
        "strata_replica_lag_records",
        "strata_replica_lag_seconds",
        "strata_write_seconds_bucket",
        "strata_write_seconds_count",
        "strata_requests_total",
    ] {
        assert!(
            metric_names(&primary_samples).contains(name),
            "the primary exports no {name}"
        );
    }
    assert!(primary_samples["strata_write_seconds_count"] >= 4.0);
    assert_eq!(primary_samples["strata_poisoned"], 0.0);
    assert!(metric_names(&replica_samples).contains("strata_follower_lag_records"));
    // One read since replica-1 restarted.
    assert!(replica_samples["strata_read_seconds_count"] >= 1.0);

    // The alert rules name only metrics the nodes export (or node_exporter's
    // and Prometheus' own), and every rule is complete.
    let rules =
        std::fs::read_to_string(repo().join("examples/monitoring/strata-alerts.yml")).unwrap();
    let mut exported = metric_names(&primary_samples);
    exported.extend(metric_names(&replica_samples));
    let mut alerts = 0;
    for line in rules.lines() {
        let line = line.trim();
        if line.starts_with("- alert:") {
            alerts += 1;
        }
        if let Some(expr) = line.strip_prefix("expr:") {
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                // Cluster members' series: checked against a member's
                // scrape in failover_etcd.rs.
                if token.starts_with("strata_") && !token.starts_with("strata_cluster_") {
                    let known = exported.contains(token)
                        || exported.contains(&format!("{token}_total"))
                        || exported.iter().any(|e| e.starts_with(token));
                    assert!(known, "alert rule uses {token}, which no node exports");
                }
            }
        }
    }
    assert!(alerts >= 8);
    for field in ["expr:", "for:", "severity:", "summary:"] {
        assert_eq!(
            rules.matches(field).count(),
            alerts,
            "every rule has {field}"
        );
    }
    let dashboard: String =
        std::fs::read_to_string(repo().join("examples/monitoring/strata-dashboard.json")).unwrap();
    for token in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if token.starts_with("strata_") {
            assert!(
                exported.iter().any(|e| e.starts_with(token)),
                "the dashboard uses {token}, which no node exports"
            );
        }
    }

    // Put, Delete and Scan (forward, reverse, limited) on the primary, and a
    // scan on a replica waiting for the commit token.
    for key in ["s1", "s2", "s3", "s4"] {
        kv.put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            sync: false,
        })
        .await
        .unwrap();
    }
    let deleted = kv
        .delete(DeleteRequest {
            key: b"s2".to_vec(),
            sync: true,
        })
        .await
        .unwrap()
        .into_inner()
        .seq;
    let scan = |node: String, reverse: bool, limit: u32, min_seq: u64| async move {
        KvClient::connect(node)
            .await
            .unwrap()
            .scan(ScanRequest {
                start: b"s".to_vec(),
                end: b"t".to_vec(),
                limit,
                reverse,
                min_seq,
                timeout_millis: 10_000,
                ..ScanRequest::default()
            })
            .await
            .unwrap()
            .into_inner()
    };
    let keys = |r: &strata_proto::v1::ScanResponse| -> Vec<Vec<u8>> {
        r.entries.iter().map(|e| e.key.clone()).collect()
    };
    let forward = scan(primary.grpc.clone(), false, 0, 0).await;
    assert_eq!(
        keys(&forward),
        vec![b"s1".to_vec(), b"s3".to_vec(), b"s4".to_vec()]
    );
    let reverse = scan(primary.grpc.clone(), true, 2, 0).await;
    assert_eq!(keys(&reverse), vec![b"s4".to_vec(), b"s3".to_vec()]);
    assert!(reverse.more);
    let on_replica = scan(r1.grpc.clone(), false, 0, deleted).await;
    assert_eq!(keys(&on_replica), keys(&forward));
    assert!(on_replica.seq >= deleted);

    // Admin: ranges, an online split and merge on the primary.
    let mut admin = AdminClient::connect(primary.grpc.clone()).await.unwrap();
    let split = admin
        .split_range(SplitRangeRequest { at: b"m".to_vec() })
        .await
        .unwrap()
        .into_inner();
    let ranges = admin
        .ranges(RangesRequest {})
        .await
        .unwrap()
        .into_inner()
        .ranges;
    assert_eq!(ranges.len(), 2);
    assert_eq!((ranges[0].id, ranges[1].id), (split.left, split.right));
    assert!(ranges[1].unbounded && ranges[1].start == b"m");
    let refused = admin
        .merge_ranges(MergeRangesRequest {
            left: split.right,
            right: split.left,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    admin
        .merge_ranges(MergeRangesRequest {
            left: split.left,
            right: split.right,
        })
        .await
        .unwrap();
    assert_eq!(
        admin
            .ranges(RangesRequest {})
            .await
            .unwrap()
            .into_inner()
            .ranges
            .len(),
        1
    );
    let primary_promote = admin.promote(PromoteRequest {}).await.unwrap_err();
    assert_eq!(primary_promote.code(), tonic::Code::FailedPrecondition);

    // Regression (issue 12): digests as of one sequence number agree between
    // the primary and both replicas while a writer runs (replica-2 over its
    // range, the primary asked for the same range), with one piece per range.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (grpc, writing) = (primary.grpc.clone(), std::sync::Arc::clone(&writing));
        tokio::spawn(async move {
            let mut kv = KvClient::connect(grpc).await.unwrap();
            let mut i = 0u64;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!(
                    "{}w{:03}",
                    if i.is_multiple_of(2) { "eu/" } else { "" },
                    i % 400
                );
                kv.put(PutRequest {
                    key: key.into_bytes(),
                    value: i.to_le_bytes().to_vec(),
                    sync: false,
                })
                .await
                .unwrap();
                i += 1;
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let digest = |node: String, seq: u64, range: Option<(&str, &str)>| {
        let range = range.map(|(start, end)| strata_proto::v1::KeyRange {
            start: start.into(),
            end: end.into(),
            unbounded: false,
        });
        async move {
            AdminClient::connect(node)
                .await
                .unwrap()
                .digest(DigestRequest {
                    seq,
                    range,
                    timeout_millis: 10_000,
                })
                .await
        }
    };
    let eu = Some(("eu/", "eu0"));
    for _ in 0..3 {
        let at = admin
            .status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .last_seq;
        let (p, p_eu, one, two) = tokio::join!(
            digest(primary.grpc.clone(), at, None),
            digest(primary.grpc.clone(), at, eu),
            digest(r1.grpc.clone(), at, None),
            digest(r2.grpc.clone(), at, None),
        );
        let (p, p_eu, one, two) = (
            p.unwrap().into_inner(),
            p_eu.unwrap().into_inner(),
            one.unwrap().into_inner(),
            two.unwrap().into_inner(),
        );
        assert_eq!(p.seq, at);
        assert_eq!((one.seq, one.digest, one.keys), (at, p.digest, p.keys));
        // Range ids are each node's own; bounds and digests must agree.
        let pieces = |r: &[strata_proto::v1::RangeDigest]| -> Vec<_> {
            r.iter()
                .map(|r| {
                    (
                        r.start.clone(),
                        r.end.clone(),
                        r.unbounded,
                        r.digest,
                        r.keys,
                    )
                })
                .collect()
        };
        assert_eq!(pieces(&one.ranges), pieces(&p.ranges));
        assert_eq!(
            (two.seq, two.digest, two.keys),
            (at, p_eu.digest, p_eu.keys)
        );
        assert_eq!(pieces(&two.ranges), pieces(&p_eu.ranges));
        assert_eq!(two.ranges.len(), 1);
        assert_eq!(
            (two.ranges[0].start.as_slice(), two.ranges[0].end.as_slice()),
            (&b"eu/"[..], &b"eu0"[..])
        );
        assert!(p_eu.keys > 0 && p.keys > p_eu.keys);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.await.unwrap() > 0);
    // Not applied in time: UNAVAILABLE; a range outside replica-2's: refused.
    let at = admin
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .last_seq;
    let not_yet = AdminClient::connect(r1.grpc.clone())
        .await
        .unwrap()
        .digest(DigestRequest {
            seq: at + 1_000,
            timeout_millis: 100,
            ..DigestRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(not_yet.code(), tonic::Code::Unavailable, "{not_yet:?}");
    assert!(not_yet.message().contains("not yet"), "{not_yet:?}");
    // The CLI: the same digest from each node, per range (ids are each
    // node's own).
    let cli_digest = |node: &Node, extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["digest", "--node", &node.addr, "--seq", &at.to_string()])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .map(|l| {
                l.split_once("  [")
                    .map_or(l.to_string(), |(_, rest)| rest.to_string())
            })
            .collect::<Vec<_>>()
    };
    let on_replica = cli_digest(&r2, &[]);
    assert!(
        on_replica[0].starts_with(&format!("seq {at}  digest ")),
        "{on_replica:?}"
    );
    assert!(
        on_replica[1].starts_with(r#""eu/", "eu0")"#),
        "{on_replica:?}"
    );
    assert_eq!(
        on_replica,
        cli_digest(&primary, &["--start", "eu/", "--end", "eu0"])
    );
    let outside = digest(r2.grpc.clone(), at, Some(("a", "z")))
        .await
        .unwrap_err();
    assert_eq!(outside.code(), tonic::Code::InvalidArgument, "{outside:?}");

    // Promote replica-1: it takes writes at a new epoch.
    let mut r1_admin = AdminClient::connect(r1.grpc.clone()).await.unwrap();
    let promoted = r1_admin
        .promote(PromoteRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoted.epoch, 1);
    let status = r1_admin
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.role.as_str(), status.epoch), ("primary", 1));
    KvClient::connect(r1.grpc.clone())
        .await
        .unwrap()
        .write(WriteRequest {
            operations: vec![Operation {
                kind: operation::Kind::Put as i32,
                key: b"after-promotion".to_vec(),
                value: b"yes".to_vec(),
            }],
            sync: true,
            ..WriteRequest::default()
        })
        .await
        .unwrap();
}
