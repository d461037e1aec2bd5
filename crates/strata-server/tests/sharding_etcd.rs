//! Several primaries by key range, through a real etcd of three members,
//! on loopback: two groups of `examples/sharded/` (each a primary and a
//! replica), writers over the whole key space routing by the range map,
//! a range moved back and forth ten times with `strata cluster move`, a
//! split and a primary failover in between; moves interrupted by kill -9
//! of the mover, the source or the target.
//!
//! Checked: every acknowledged write is read back from the range's owner
//! at the end (0 lost); each group's primary and replica have equal
//! digests per range; a group holds no key of a range it gave away (its
//! copy was dropped); every move's cut-over window (p50, p99) is printed
//! for `docs/design/cluster.md`.
//!
//! Needs etcd (Debian's `etcd-server`): `#[ignore]`d in the plain test
//! run, run by `.ci/run` with
//! `cargo test -p strata-server --test sharding_etcd -- --ignored --test-threads 1`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../../strata-cluster/tests/common/mod.rs"]
mod etcd;
#[path = "common/members.rs"]
mod members;
#[path = "common/node.rs"]
mod node;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use members::{Group, percentiles, sharded};
use parking_lot::Mutex;
use strata_cluster::{ClusterKeys, Coordinator, EtcdCoordinator, EtcdOptions, MemberRecord};
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::{DigestRequest, GetRequest, KeyRange, PutRequest};
use tonic::transport::Channel;

const CLUSTER: &str = "shards";

/// Runs `strata ARGS`; its stdout and stderr.
fn strata(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cluster_args(etcd: &[String]) -> Vec<String> {
    vec![
        "--etcd".into(),
        etcd.join(","),
        "--cluster".into(),
        CLUSTER.into(),
    ]
}

/// Routes a key to its owner's primary by the map in etcd, refreshed on
/// every refusal.
struct Router {
    store: EtcdCoordinator,
    keys: ClusterKeys,
    map: Mutex<Option<Arc<strata_cluster::RangeMap>>>,
    channels: Mutex<BTreeMap<String, KvClient<Channel>>>,
}

impl Router {
    fn new(etcd: &[String]) -> Router {
        Router {
            store: EtcdCoordinator::connect(EtcdOptions::new(etcd.to_vec())).unwrap(),
            keys: ClusterKeys::new("strata", CLUSTER).unwrap(),
            map: Mutex::new(None),
            channels: Mutex::new(BTreeMap::new()),
        }
    }

    async fn refresh(&self) {
        if let Ok(Some(map)) = strata_cluster::read_map(&self.store, &self.keys).await {
            *self.map.lock() = Some(Arc::new(map));
        }
    }

    async fn owner(&self, key: &[u8]) -> Option<String> {
        if self.map.lock().is_none() {
            self.refresh().await;
        }
        let map = self.map.lock().clone()?;
        Some(map.locate(key).group.clone())
    }

    async fn primary(&self, group: &str) -> Option<String> {
        let node = self
            .store
            .get(&self.keys.primary(group).unwrap())
            .await
            .ok()??;
        let node = String::from_utf8_lossy(&node.value).into_owned();
        let record = self
            .store
            .get(&self.keys.member(&node).unwrap())
            .await
            .ok()??;
        Some(MemberRecord::decode(&record.value, &node).ok()?.address)
    }

    async fn kv(&self, address: &str) -> Option<KvClient<Channel>> {
        if let Some(kv) = self.channels.lock().get(address) {
            return Some(kv.clone());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(address.to_string())
            .ok()?
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(5));
        let kv = KvClient::new(endpoint.connect().await.ok()?);
        self.channels.lock().insert(address.to_string(), kv.clone());
        Some(kv)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let start = Instant::now();
        loop {
            self.refresh().await;
            let group = self.owner(key).await.ok_or("no map")?;
            if let Some(address) = self.primary(&group).await
                && let Some(mut kv) = self.kv(&address).await
            {
                match kv
                    .get(GetRequest {
                        key: key.to_vec(),
                        ..GetRequest::default()
                    })
                    .await
                {
                    Ok(r) => {
                        let r = r.into_inner();
                        return Ok(r.found.then_some(r.value));
                    }
                    Err(s) if start.elapsed() > Duration::from_secs(20) => {
                        return Err(format!("{:?}: {}", s.code(), s.message()));
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What the writers did, per key: the last acknowledged value and the
/// values sent after it whose outcome is unknown.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<Vec<u8>, u64>,
    unknown: BTreeMap<Vec<u8>, Vec<u64>>,
    acks: u64,
    unknowns: u64,
    /// Writes the client gave up on as not applied.
    failures: u64,
}

fn key_of(writer: usize, i: u64) -> Vec<u8> {
    // Keys over the whole key space: a leading letter a..z.
    let letter = b'a' + ((i * 7 + writer as u64) % 26) as u8;
    format!("{}{writer}-{:03}", letter as char, i % 120).into_bytes()
}

/// A sharded client of the test cluster.
fn sharded_client(etcd: &[String]) -> strata_client::ShardedClient {
    let mut config = strata_client::ClientConfig::etcd(strata_client::EtcdSource::cluster(
        etcd.to_vec(),
        CLUSTER,
    ));
    config.failover_wait = Duration::from_secs(30);
    strata_client::ShardedClient::new(config).unwrap()
}

/// A writer through `client`, writing `key(i)` = `i + 1` until `stop`,
/// recording in `ledger`; with `group`, every acknowledgement must come
/// from that group.
fn writer(
    client: strata_client::ShardedClient,
    ledger: &Arc<Mutex<Ledger>>,
    stop: &Arc<AtomicBool>,
    name: String,
    key: impl Fn(u64) -> Vec<u8> + Send + 'static,
    group: Option<&'static str>,
) -> tokio::task::JoinHandle<()> {
    let ledger = Arc::clone(ledger);
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = key(i);
            let value = i + 1;
            match client.put(&key, value.to_string().as_bytes()).await {
                Ok(token) => {
                    if let Some(group) = group {
                        assert_eq!(
                            token.group,
                            group,
                            "{} was acknowledged by {}",
                            String::from_utf8_lossy(&key),
                            token.group
                        );
                    }
                    let mut l = ledger.lock();
                    l.acked.insert(key.clone(), value);
                    l.unknown.remove(&key);
                    l.acks += 1;
                }
                Err(e) => {
                    // Outcome unknown (or a failure the client says was
                    // not applied): either way the value may be read back,
                    // never required.
                    let mut l = ledger.lock();
                    l.unknown.entry(key.clone()).or_default().push(value);
                    l.unknowns += 1;
                    if !matches!(e, strata_client::Error::OutcomeUnknown { .. }) {
                        l.failures += 1;
                        eprintln!("writer {name}: {e}");
                    }
                }
            }
            i += 1;
        }
    })
}

/// `count` writers through one sharded client, each over its own keys
/// spread over the whole key space.
fn writers(
    etcd: &[String],
    ledger: &Arc<Mutex<Ledger>>,
    stop: &Arc<AtomicBool>,
    count: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = sharded_client(etcd);
    (0..count)
        .map(|w| {
            writer(
                client.clone(),
                ledger,
                stop,
                w.to_string(),
                move |i| key_of(w, i),
                None,
            )
        })
        .collect()
}

/// Every acknowledged write is readable from its owner: the last
/// acknowledged value, or a later one whose outcome was unknown.
async fn check_ledger(router: &Router, ledger: &Ledger) -> u64 {
    let mut lost = 0;
    for (key, acked) in &ledger.acked {
        let read = router.get(key).await.unwrap();
        let value: Option<u64> = read.map(|v| String::from_utf8(v).unwrap().parse().unwrap());
        let later = ledger.unknown.get(key).cloned().unwrap_or_default();
        let fine = value == Some(*acked) || value.is_some_and(|v| v > *acked && later.contains(&v));
        if !fine {
            lost += 1;
            eprintln!(
                "LOST {}: acked {acked}, read {value:?}, unknown after it {later:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
    lost
}

/// The digest of `[start, end)` on each running member of `g`, as of the
/// primary's last sequence number; asserts they are equal and returns
/// (digest, keys).
async fn group_range_digest(g: &Group, start: &[u8], end: Option<&[u8]>) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seq = 0;
        for m in g.members.iter().filter(|m| m.alive()) {
            if let Some(s) = m.status().await
                && s.role == "primary"
            {
                seq = s.last_seq;
            }
        }
        let mut seen = Vec::new();
        for m in g.members.iter().filter(|m| m.alive()) {
            let Some(mut admin) = m.admin().await else {
                continue;
            };
            if let Ok(d) = admin
                .digest(DigestRequest {
                    seq,
                    range: Some(KeyRange {
                        start: start.to_vec(),
                        end: end.map(<[u8]>::to_vec).unwrap_or_default(),
                        unbounded: end.is_none(),
                    }),
                    timeout_millis: 10_000,
                })
                .await
            {
                let d = d.into_inner();
                seen.push((m.name.clone(), d.digest, d.keys));
            }
        }
        let alive = g.members.iter().filter(|m| m.alive()).count();
        if seq > 0
            && seen.len() == alive
            && seen
                .windows(2)
                .all(|w| (w[0].1, w[0].2) == (w[1].1, w[1].2))
        {
            return (seen[0].1, seen[0].2);
        }
        assert!(
            Instant::now() < deadline,
            "group digests of the range differ or are missing: {seen:?}\n{}",
            g.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Kills `g`'s primary (kill -9), waits up to 15 s for another member to
/// take over (a replica still bootstrapping may not be eligible), and
/// restarts it.
async fn kill_primary(g: &mut Group) {
    let p = g.primary(None, Duration::from_secs(30)).await;
    g.members[p].kill();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let mut found = false;
        for (i, m) in g.members.iter().enumerate() {
            if i != p
                && let Some(s) = m.status().await
                && s.role == "primary"
            {
                found = true;
            }
        }
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    g.members[p].start();
}

/// Waits until each group has a primary and its other members follow it
/// and have caught up with it.
async fn settled(groups: &[Group]) {
    let start = Instant::now();
    'wait: loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the groups did not settle:\n{}",
            groups
                .iter()
                .map(Group::logs)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        for g in groups {
            let mut primary_seq = None;
            let mut replicas = Vec::new();
            for m in g.members.iter().filter(|m| m.alive()) {
                match m.status().await {
                    Some(s) if s.role == "primary" => primary_seq = Some(s.last_seq),
                    Some(s) if s.role == "replica" && s.bootstraps < u64::MAX => {
                        replicas.push(s.last_seq);
                    }
                    _ => continue 'wait,
                }
            }
            let Some(seq) = primary_seq else {
                continue 'wait;
            };
            if replicas.len() + 1 != g.members.len() || replicas.iter().any(|r| *r + 50 < seq) {
                continue 'wait;
            }
        }
        return;
    }
}

async fn wait_primaries(groups: &[Group]) {
    for g in groups {
        g.primary(None, Duration::from_secs(30)).await;
    }
}

/// Runs one move; its cut-over in milliseconds, or the error.
fn run_move(etcd: &[String], start: &str, to: &str) -> Result<f64, String> {
    let mut args: Vec<String> = vec!["cluster".into(), "move".into()];
    args.extend(cluster_args(etcd));
    args.extend([
        "--start".into(),
        start.into(),
        "--to".into(),
        to.into(),
        "--hold-ms".into(),
        "4000".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = strata(&refs);
    if !ok {
        return Err(format!("{out}{err}"));
    }
    let ms = out
        .split("cut-over ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| format!("no cut-over in {out:?}"))?;
    eprintln!("{}", out.trim());
    Ok(ms)
}

fn ranges_cmd(etcd: &[String], rest: &[&str]) -> String {
    let mut args: Vec<String> = vec!["cluster".into(), "ranges".into(), rest[0].to_string()];
    args.extend(cluster_args(etcd));
    args.extend(rest[1..].iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = strata(&refs);
    assert!(ok, "strata cluster ranges {rest:?}: {out}{err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real etcd (apt-get install -y etcd-server); .ci/run runs it: cargo test -p strata-server --test sharding_etcd -- --ignored --test-threads 1"]
async fn a_range_moves_back_and_forth_under_load_with_a_split_and_a_failover() {
    let etcd = etcd::Etcd::start(3).await;
    let endpoints = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let mut groups = sharded(dir.path(), &endpoints, CLUSTER, 2000);
    ranges_cmd(&endpoints, &["init", "--group", "g1"]);
    ranges_cmd(&endpoints, &["split", "--at", "m"]);
    for g in &mut groups {
        g.start_all();
    }
    wait_primaries(&groups).await;
    // Start with [m, end) on g2.
    run_move(&endpoints, "m", "g2").unwrap();

    let router = Arc::new(Router::new(&endpoints));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = writers(&endpoints, &ledger, &stop, 3);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut windows = Vec::new();
    let mut failed_moves = 0;
    let mut failed_over = false;
    let moves_done = AtomicU64::new(0);
    let mut to = "g1";
    while moves_done.load(Ordering::Relaxed) < 10 {
        let n = moves_done.load(Ordering::Relaxed);
        if n == 4 && !ranges_cmd(&endpoints, &["list"]).contains("\"t\"") {
            // A split lands between moves: [m, end) becomes [m, t), [t, end).
            ranges_cmd(&endpoints, &["split", "--at", "t"]);
            eprintln!("{}", ranges_cmd(&endpoints, &["list"]));
        }
        if n == 6 && !failed_over {
            // One primary fails over (kill -9), and comes back as a replica.
            kill_primary(&mut groups[0]).await;
            failed_over = true;
        }
        match run_move(&endpoints, "m", to) {
            Ok(ms) => {
                windows.push(ms);
                moves_done.fetch_add(1, Ordering::Relaxed);
                to = if to == "g1" { "g2" } else { "g1" };
            }
            Err(e) => {
                failed_moves += 1;
                eprintln!("move to {to} failed (retried): {e}");
                assert!(failed_moves < 20, "too many failed moves");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let ledger = std::mem::take(&mut *ledger.lock());
    let lost = check_ledger(&router, &ledger).await;

    // Each group's members agree on every range; a group holds no key of
    // a range the other owns.
    let map = strata_cluster::read_map(&router.store, &router.keys)
        .await
        .unwrap()
        .unwrap();
    let mut foreign_keys = 0;
    for entry in map.entries() {
        for (i, g) in groups.iter().enumerate() {
            let (_, keys) = group_range_digest(g, &entry.start, entry.end.as_deref()).await;
            let name = if i == 0 { "g1" } else { "g2" };
            if name != entry.group {
                foreign_keys += keys;
            }
        }
    }
    // The moves' copies left no replica slot behind on the sources (they
    // subscribe as transient copies): no "import-" replica, no alert.
    for g in &groups {
        for m in g.members.iter().filter(|m| m.alive()) {
            let s = m.status().await.unwrap();
            let copies: Vec<&str> = s
                .replicas
                .iter()
                .map(|r| r.id.as_str())
                .filter(|id| id.starts_with("import-"))
                .collect();
            assert!(
                copies.is_empty(),
                "{} lists copies as replicas: {copies:?}",
                m.name
            );
        }
    }
    let (p50, p99) = percentiles(&mut windows);
    eprintln!(
        "FIGURES sharding: {} moves, cut-over p50 {p50:.0} ms, p99 {p99:.0} ms, {} failed and retried; {} acked writes, {} unknown, {lost} lost; foreign keys left {foreign_keys}",
        windows.len(),
        failed_moves,
        ledger.acks,
        ledger.unknowns
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert_eq!(
        foreign_keys, 0,
        "a group kept keys of a range it does not own"
    );
    assert!(ledger.acks > 100, "too few writes: {}", ledger.acks);
    assert!(failed_over);
    drop(groups);
    drop(etcd);
}

/// A batch across two groups is refused whole; a write to the wrong
/// group names the owner and the map's revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real etcd (apt-get install -y etcd-server); .ci/run runs it: cargo test -p strata-server --test sharding_etcd -- --ignored --test-threads 1"]
async fn nodes_refuse_keys_of_other_groups_and_batches_across_groups() {
    use strata_proto::v1::{Operation, WriteRequest, operation};
    let etcd = etcd::Etcd::start(1).await;
    let endpoints = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let mut groups = sharded(dir.path(), &endpoints, CLUSTER, 2000);
    for g in &mut groups {
        g.start_all();
    }
    let p1 = groups[0].primary(None, Duration::from_secs(30)).await;
    let mut kv = groups[0].members[p1].kv().await.unwrap();
    // No map yet: refused, not applied.
    let none = kv
        .put(PutRequest {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            sync: true,
        })
        .await
        .unwrap_err();
    assert_eq!(none.code(), tonic::Code::Unavailable);
    assert!(
        none.message().starts_with("no range map"),
        "{}",
        none.message()
    );
    ranges_cmd(&endpoints, &["init", "--group", "g1"]);
    ranges_cmd(&endpoints, &["split", "--at", "m"]);
    wait_primaries(&groups).await;
    run_move(&endpoints, "m", "g2").unwrap();
    let p1 = groups[0].primary(None, Duration::from_secs(30)).await;
    let mut kv = groups[0].members[p1].kv().await.unwrap();
    kv.put(PutRequest {
        key: b"a".to_vec(),
        value: b"1".to_vec(),
        sync: true,
    })
    .await
    .unwrap();
    let wrong = kv
        .put(PutRequest {
            key: b"x".to_vec(),
            value: b"1".to_vec(),
            sync: true,
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition);
    assert!(
        wrong.message().starts_with("wrong group:"),
        "{}",
        wrong.message()
    );
    assert_eq!(wrong.metadata().get("strata-range-group").unwrap(), "g2");
    assert!(wrong.metadata().get("strata-map-revision").is_some());
    let op = |key: &[u8]| Operation {
        kind: operation::Kind::Put as i32,
        key: key.to_vec(),
        value: b"v".to_vec(),
    };
    let across = kv
        .write(WriteRequest {
            operations: vec![op(b"b"), op(b"y")],
            sync: true,
            ..WriteRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(across.code(), tonic::Code::InvalidArgument);
    assert!(
        across.message().starts_with("batch spans range groups:"),
        "{}",
        across.message()
    );
    // Not applied: b is absent.
    let b = kv
        .get(GetRequest {
            key: b"b".to_vec(),
            ..GetRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!b.found, "a refused batch left b");
    // A delete_range over the boundary is refused the same way.
    let range = kv
        .write(WriteRequest {
            operations: vec![Operation {
                kind: operation::Kind::DeleteRange as i32,
                key: b"a".to_vec(),
                value: b"z".to_vec(),
            }],
            sync: true,
            ..WriteRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        range.code(),
        tonic::Code::InvalidArgument,
        "{}",
        range.message()
    );
    // Reads of the other group's keys are refused on its replica too.
    let replica = 1 - p1;
    let mut rkv = groups[0].members[replica].kv().await.unwrap();
    let read = rkv
        .get(GetRequest {
            key: b"x".to_vec(),
            ..GetRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        read.code(),
        tonic::Code::FailedPrecondition,
        "{}",
        read.message()
    );
    drop(groups);
    drop(etcd);
}

/// Moves interrupted by kill -9 of the mover, the source's primary or the
/// target's primary at points spread over the move's steps: each either
/// completes or leaves the range where it was, the next move completes,
/// and no acknowledged write is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real etcd (apt-get install -y etcd-server); .ci/run runs it: cargo test -p strata-server --test sharding_etcd -- --ignored --test-threads 1"]
async fn moves_interrupted_by_kill_9_complete_or_roll_back() {
    let etcd = etcd::Etcd::start(3).await;
    let endpoints = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let mut groups = sharded(dir.path(), &endpoints, CLUSTER, 2000);
    ranges_cmd(&endpoints, &["init", "--group", "g1"]);
    ranges_cmd(&endpoints, &["split", "--at", "m"]);
    for g in &mut groups {
        g.start_all();
    }
    wait_primaries(&groups).await;
    let router = Arc::new(Router::new(&endpoints));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = writers(&endpoints, &ledger, &stop, 3);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
    // Who is killed, and when: at a step (as soon as the mover reports
    // it: marked, copy started, frozen, the copy caught up, flipped) or
    // after a delay into the move.
    let mut plan: Vec<(&str, Option<&str>)> = Vec::new();
    for step in [
        ": range [",
        "copy started",
        "frozen on",
        "the copy reached",
        "flipped to",
    ] {
        plan.push(("mover", Some(step)));
    }
    for victim in ["source", "target"] {
        for step in ["copy started", "frozen on", "the copy reached"] {
            plan.push((victim, Some(step)));
        }
    }
    for victim in ["mover", "source", "target"] {
        plan.push((victim, None));
    }
    for (round, (victim, step)) in plan.into_iter().enumerate() {
        let round = round as u64;
        settled(&groups).await;
        let map = strata_cluster::read_map(&router.store, &router.keys)
            .await
            .unwrap()
            .unwrap();
        let owner = map.starting_at(b"m").unwrap().group.clone();
        let target = if owner == "g1" { "g2" } else { "g1" };
        let (source_index, target_index) = if owner == "g1" { (0, 1) } else { (1, 0) };
        let log = dir.path().join(format!("move-{round}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut args: Vec<String> = vec!["cluster".into(), "move".into()];
        args.extend(cluster_args(&endpoints));
        args.extend([
            "--start".into(),
            "m".into(),
            "--to".into(),
            target.into(),
            "--hold-ms".into(),
            "3000".into(),
        ]);
        let mut mover = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(&args)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let when = match step {
            Some(step) => {
                // As soon as the mover reports the step (if it ends first,
                // the kill comes after it).
                let start = Instant::now();
                while !std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains(step)
                    && mover.try_wait().unwrap().is_none()
                    && start.elapsed() < Duration::from_secs(20)
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                format!("at {step:?}")
            }
            None => {
                let delay = Duration::from_millis((round * 53) % 320);
                tokio::time::sleep(delay).await;
                format!("after {delay:?}")
            }
        };
        match victim {
            "mover" => {
                let _ = mover.kill();
            }
            "source" => kill_primary(&mut groups[source_index]).await,
            _ => kill_primary(&mut groups[target_index]).await,
        }
        let status = mover.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        let reached = if text.contains("moved ") {
            "completed"
        } else if text.contains("flipped") {
            "flipped"
        } else if text.contains("aborting") {
            "aborted"
        } else if text.contains("the copy reached") {
            "caught up"
        } else if text.contains("frozen on") {
            "frozen"
        } else if text.contains("copy started") {
            "copying"
        } else if text.contains("move ") {
            "marked"
        } else {
            "not begun"
        };
        let after = strata_cluster::read_map(&router.store, &router.keys)
            .await
            .unwrap()
            .unwrap();
        let entry = after.starting_at(b"m").unwrap();
        let place = if entry.group == target {
            "moved"
        } else {
            "stayed"
        };
        eprintln!(
            "round {round}: kill -9 of the {victim} {when}: mover {reached} ({status}), range {place}{}",
            if entry.moving.is_some() {
                ", still marked"
            } else {
                ""
            }
        );
        *outcomes
            .entry(format!("{victim} {when}: {reached}, {place}"))
            .or_default() += 1;
        // The range is in one place; the next move completes (or the range
        // is already there).
        settled(&groups).await;
        if entry.group != target {
            let mut tries = 0;
            loop {
                match run_move(&endpoints, "m", target) {
                    Ok(_) => break,
                    Err(e) => {
                        tries += 1;
                        assert!(
                            tries < 10,
                            "the move after round {round} does not complete: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let ledger = std::mem::take(&mut *ledger.lock());
    let lost = check_ledger(&router, &ledger).await;
    let map = strata_cluster::read_map(&router.store, &router.keys)
        .await
        .unwrap()
        .unwrap();
    for entry in map.entries() {
        for g in &groups {
            group_range_digest(g, &entry.start, entry.end.as_deref()).await;
        }
    }
    eprintln!(
        "FIGURES interrupted moves: {outcomes:?}; {} acked writes, {} unknown, {lost} lost",
        ledger.acks, ledger.unknowns
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
    drop(groups);
    drop(etcd);
}

/// `strata cluster plan` on `examples/sharded/layout.toml` lists the
/// expected changes; `apply` carries them out; the second `apply` changes
/// nothing; writes through the client land by the layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real etcd (apt-get install -y etcd-server); .ci/run runs it: cargo test -p strata-server --test sharding_etcd -- --ignored --test-threads 1"]
async fn a_layout_applied_twice_changes_nothing_the_second_time() {
    let etcd = etcd::Etcd::start(1).await;
    let endpoints = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let mut groups = sharded(dir.path(), &endpoints, CLUSTER, 2000);
    for g in &mut groups {
        g.start_all();
    }
    wait_primaries(&groups).await;
    let file = node::repo().join("examples/sharded/layout.toml");
    let file = file.to_str().unwrap();
    let etcd_arg = endpoints.join(",");
    let (ok, plan, err) = strata(&["cluster", "plan", file, "--etcd", &etcd_arg]);
    assert!(ok, "{plan}{err}");
    let expected = [
        "~ store the layout (groups, tags, rules) in etcd",
        "+ create the range map: every key in g1",
        "+ split at \"eu/\"",
        "+ split at \"eu0\"",
        "+ split at \"m\"",
        "~ move the range at \"eu/\" from g1 to g2",
        "~ move the range at \"m\" from g1 to g2",
    ];
    for line in expected {
        assert!(plan.contains(line), "plan lacks {line:?}:\n{plan}");
    }
    assert!(plan.contains("7 change(s)"), "{plan}");
    let (ok, applied, err) = strata(&["cluster", "apply", file, "--etcd", &etcd_arg]);
    assert!(ok, "{applied}{err}");
    assert!(applied.contains("step 7/7"), "{applied}");
    eprintln!("{applied}");
    let (ok, again, err) = strata(&["cluster", "apply", file, "--etcd", &etcd_arg]);
    assert!(ok, "{again}{err}");
    assert!(
        again.contains("no changes"),
        "the second apply changed something:\n{again}"
    );
    let (_, replan, _) = strata(&["cluster", "plan", file, "--etcd", &etcd_arg]);
    assert!(replan.contains("no changes"), "{replan}");

    let mut config = strata_client::ClientConfig::etcd(strata_client::EtcdSource::cluster(
        endpoints.clone(),
        CLUSTER,
    ));
    config.failover_wait = Duration::from_secs(10);
    let client = strata_client::ShardedClient::new(config).unwrap();
    for (key, group) in [
        ("apple", "g1"),
        ("eu/paris", "g2"),
        ("euro", "g1"),
        ("zebra", "g2"),
    ] {
        let token = client.put(key.as_bytes(), b"1").await.unwrap();
        assert_eq!(token.group, group, "{key} went to {}", token.group);
    }
    // A layout that breaks its own rule is refused, naming it.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(file).unwrap().replace(
            "start = \"eu/\"\ngroup = \"g2\"",
            "start = \"eu/\"\ngroup = \"g1\"",
        ),
    )
    .unwrap();
    let (ok, out, err) = strata(&[
        "cluster",
        "plan",
        bad.to_str().unwrap(),
        "--etcd",
        &etcd_arg,
    ]);
    assert!(!ok, "{out}");
    assert!(err.contains("eu/") && err.contains("tagged"), "{err}");
    drop(groups);
    drop(etcd);
}

/// The placement controller (run by one member, elected through etcd)
/// splits ranges that grow past `split_bytes` and balances ranges over
/// the groups, and its moves never put `eu/` keys on a group without the
/// `eu` tag (a watcher checks every map it sees); nothing acknowledged
/// is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real etcd (apt-get install -y etcd-server); .ci/run runs it: cargo test -p strata-server --test sharding_etcd -- --ignored --test-threads 1"]
async fn the_placement_controller_splits_and_balances_within_the_rules() {
    let etcd = etcd::Etcd::start(1).await;
    let endpoints = etcd.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let mut groups = members::sharded_with(
        dir.path(),
        &endpoints,
        CLUSTER,
        2000,
        "controller = true\ncontroller_interval_ms = 500\nsplit_bytes = 1500\n",
    );
    for g in &mut groups {
        g.start_all();
    }
    wait_primaries(&groups).await;
    // The example's layout without pinned ranges: placement is the
    // controller's, within the rule.
    let text = std::fs::read_to_string(node::repo().join("examples/sharded/layout.toml")).unwrap();
    let unpinned = text.split("[[ranges]]").next().unwrap().to_string();
    let file = dir.path().join("layout.toml");
    std::fs::write(&file, unpinned).unwrap();
    let etcd_arg = endpoints.join(",");
    let (ok, out, err) = strata(&[
        "cluster",
        "apply",
        file.to_str().unwrap(),
        "--etcd",
        &etcd_arg,
    ]);
    assert!(ok, "{out}{err}");
    eprintln!("{out}");

    let router = Arc::new(Router::new(&endpoints));
    let violations = Arc::new(AtomicU64::new(0));
    let seen_maps = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let violations = Arc::clone(&violations);
        let seen = Arc::clone(&seen_maps);
        let stop = Arc::clone(&stop);
        let store = EtcdCoordinator::connect(EtcdOptions::new(endpoints.clone())).unwrap();
        let keys = ClusterKeys::new("strata", CLUSTER).unwrap();
        tokio::spawn(async move {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(map)) = strata_cluster::read_map(&store, &keys).await
                    && map.revision() != last
                {
                    last = map.revision();
                    seen.fetch_add(1, Ordering::Relaxed);
                    for e in map.entries() {
                        if strata_cluster::overlaps_prefix(&e.start, e.end.as_deref(), b"eu/")
                            && e.group != "g2"
                        {
                            violations.fetch_add(1, Ordering::Relaxed);
                            eprintln!(
                                "RULE BROKEN at revision {}: {} on {}",
                                map.revision(),
                                e.describe(),
                                e.group
                            );
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let tasks = writers(&endpoints, &ledger, &stop, 3);
    // eu/ keys too, every one acknowledged by g2.
    let eu = writer(
        sharded_client(&endpoints),
        &ledger,
        &stop,
        "eu".into(),
        |i| format!("eu/{:03}", i % 200).into_bytes(),
        Some("g2"),
    );
    // Wait for the controller to split and to give g2 more than the eu/
    // range.
    let start = Instant::now();
    let (splits, balanced) = loop {
        let map = strata_cluster::read_map(&router.store, &router.keys)
            .await
            .unwrap()
            .unwrap();
        let g2_other = map.entries().iter().any(|e| {
            e.group == "g2" && !strata_cluster::overlaps_prefix(&e.start, e.end.as_deref(), b"eu/")
        });
        if map.entries().len() >= 5 && g2_other {
            break (map.entries().len(), true);
        }
        if start.elapsed() > Duration::from_secs(90) {
            break (map.entries().len(), g2_other);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    eu.await.unwrap();
    watcher.await.unwrap();
    let ledger = std::mem::take(&mut *ledger.lock());
    let lost = check_ledger(&router, &ledger).await;
    let map = strata_cluster::read_map(&router.store, &router.keys)
        .await
        .unwrap()
        .unwrap();
    for e in map.entries() {
        eprintln!("  {} on {}", e.describe(), e.group);
    }
    eprintln!(
        "FIGURES controller: {splits} ranges and balanced {balanced} after {took:?}; {} map readings checked, {} rule violations; {} acked, {} unknown, {lost} lost",
        seen_maps.load(Ordering::Relaxed),
        violations.load(Ordering::Relaxed),
        ledger.acks,
        ledger.unknowns
    );
    assert!(
        balanced && splits >= 5,
        "the controller did not split and balance in 90 s:\n{}",
        groups
            .iter()
            .map(Group::logs)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        violations.load(Ordering::Relaxed),
        0,
        "a placement rule was broken"
    );
    assert_eq!(lost, 0);
    drop(groups);
    drop(etcd);
}
