//! The security of a running node, as processes from the example configs in
//! `examples/cluster-tls/` (certificates and tokens made with `strata certs`
//! and `strata token`, ports swapped for free ones): replication over
//! mutual TLS, and the negative matrix, each case a named test with the
//! status it must get.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::{
    GetRequest, Operation, SplitRangeRequest, StatusRequest, WriteRequest, operation,
};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[path = "common/node.rs"]
mod node;

use node::{Node, free_port};

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap()
}

/// A directory with certificates, tokens and the example configs.
struct Setup {
    dir: tempfile::TempDir,
    ports: BTreeMap<&'static str, u16>,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = strata(&[
            "certs",
            "--out",
            d.join("certs").to_str().unwrap(),
            "--names",
            "primary,replica-1,replica-2,intruder",
        ]);
        assert!(out.status.success(), "{out:?}");
        std::fs::create_dir(d.join("secrets")).unwrap();
        for name in ["app", "admin", "replica-9"] {
            let file = d.join("secrets").join(format!("{name}.token"));
            let out = strata(&["token", "--out", file.to_str().unwrap()]);
            assert!(out.status.success(), "{out:?}");
        }
        let mut ports = BTreeMap::new();
        for port in ["7101", "7102", "7103", "9201", "9202", "9203"] {
            ports.insert(port, free_port());
        }
        Self { dir, ports }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn token(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join("secrets").join(format!("{name}.token")))
            .unwrap()
            .trim_end()
            .to_string()
    }

    /// An example config, ports swapped, `edit` applied.
    fn node(&self, name: &str, edit: impl Fn(String) -> String) -> Node {
        node::example(self.path(), "cluster-tls", name, &self.ports, edit)
    }

    /// The primary, with a replica token for "replica-9" accepted too and a
    /// short handshake timeout.
    fn primary(&self) -> Node {
        self.node("primary", |text| {
            text.replace("handshake_timeout_ms = 10000", "handshake_timeout_ms = 8000")
                .replace("max_connections = 4096", "max_connections = 1024")
                + "\n[[auth.tokens]]\nname = \"replica-9\"\nrole = \"replica\"\nfile = \"secrets/replica-9.token\"\n"
        })
    }

    fn tls(&self, identity: Option<&str>) -> ClientTlsConfig {
        let certs = self.path().join("certs");
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(
                std::fs::read(certs.join("ca.pem")).unwrap(),
            ))
            .domain_name("localhost");
        if let Some(name) = identity {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(certs.join(format!("{name}.pem"))).unwrap(),
                std::fs::read(certs.join(format!("{name}.key"))).unwrap(),
            ));
        }
        tls
    }

    async fn channel(&self, node: &Node) -> Channel {
        Endpoint::from_shared(format!("https://{}", node.addr))
            .unwrap()
            .tls_config(self.tls(None))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

/// A request with `authorization: Bearer <token>` (none: no header).
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn put(key: &str, value: Vec<u8>) -> WriteRequest {
    WriteRequest {
        operations: vec![Operation {
            kind: operation::Kind::Put as i32,
            key: key.into(),
            value,
        }],
        ..WriteRequest::default()
    }
}

/// Reads `key` once the node has applied `min_seq` (waiting up to 10 s).
async fn read_at(
    kv: &mut KvClient<Channel>,
    key: &str,
    min_seq: u64,
    token: &str,
) -> strata_proto::v1::GetResponse {
    kv.get(with_token(
        GetRequest {
            key: key.as_bytes().to_vec(),
            min_seq,
            timeout_millis: 10_000,
            ..GetRequest::default()
        },
        Some(token),
    ))
    .await
    .unwrap()
    .into_inner()
}

async fn wait_up(setup: &Setup, node: &Node) {
    let started = Instant::now();
    let token = setup.token("app");
    loop {
        if let Ok(channel) = Endpoint::from_shared(format!("https://{}", node.addr))
            .unwrap()
            .tls_config(setup.tls(None))
            .unwrap()
            .connect()
            .await
            && AdminClient::new(channel)
                .status(with_token(StatusRequest {}, Some(&token)))
                .await
                .is_ok()
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} did not come up: {}",
            node.addr,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn running_primary(setup: &Setup) -> Node {
    let mut primary = setup.primary();
    primary.start();
    wait_up(setup, &primary).await;
    primary
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_cluster_from_the_example_configs_replicates() {
    let setup = Setup::new();
    let mut primary = setup.primary();
    let mut r1 = setup.node("replica-1", |t| t);
    let mut r2 = setup.node("replica-2", |t| t);
    primary.start();
    wait_up(&setup, &primary).await;
    r1.start();
    r2.start();
    wait_up(&setup, &r1).await;
    wait_up(&setup, &r2).await;
    // The CLI, as a user runs it: TLS and a token file.
    let d = setup.path();
    let ca = d.join("certs/ca.pem");
    let app = d.join("secrets/app.token");
    let cli = |args: &[&str], node: &Node| {
        let mut full = args.to_vec();
        full.extend([
            "--node",
            &node.addr,
            "--ca",
            ca.to_str().unwrap(),
            "--server-name",
            "localhost",
            "--token-file",
            app.to_str().unwrap(),
        ]);
        strata(&full)
    };
    let mut seq = 0;
    for (key, value) in [("greeting", "hello"), ("eu/alice", "1")] {
        let out = cli(&["put", "--sync", key, value], &primary);
        assert!(out.status.success(), "{out:?}\n{}", primary.log());
        seq = String::from_utf8_lossy(&out.stdout)
            .trim()
            .strip_prefix("seq ")
            .unwrap()
            .parse()
            .unwrap();
    }
    let min_seq = seq.to_string();
    let out = cli(&["get", "--min-seq", &min_seq, "greeting"], &r1);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("hello"),
        "{out:?}\n{}",
        r1.log()
    );
    let out = cli(&["get", "--min-seq", &min_seq, "eu/alice"], &r2);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with('1'),
        "{out:?}\n{}",
        r2.log()
    );
    // Without the token the CLI is refused, naming the status.
    let out = strata(&[
        "get",
        "greeting",
        "--node",
        &primary.addr,
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_without_a_token_is_unauthenticated() {
    let setup = Setup::new();
    let primary = running_primary(&setup).await;
    let mut kv = KvClient::new(setup.channel(&primary).await);
    let status = kv
        .write(with_token(put("k", b"v".to_vec()), None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        !status.message().contains('/') && !status.message().contains("0.1."),
        "reveals nothing: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_with_a_wrong_token_is_unauthenticated() {
    let setup = Setup::new();
    let primary = running_primary(&setup).await;
    let mut kv = KvClient::new(setup.channel(&primary).await);
    let mut wrong = setup.token("app");
    wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
    let status = kv
        .get(with_token(
            GetRequest {
                key: b"k".to_vec(),
                ..GetRequest::default()
            },
            Some(&wrong),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(!status.message().contains(&wrong), "{status:?}");
    assert!(!primary.log().contains(&wrong), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_log_even_at_trace_level() {
    let setup = Setup::new();
    let mut primary = setup.primary();
    primary.start_with(&[("RUST_LOG", "trace")]);
    wait_up(&setup, &primary).await;
    let good = setup.token("app");
    let wrong = "wrong-token-0123456789abcdef".to_string();
    let mut kv = KvClient::new(setup.channel(&primary).await);
    kv.write(with_token(put("k", b"v".to_vec()), Some(&good)))
        .await
        .unwrap();
    let status = kv
        .write(with_token(put("k", b"v".to_vec()), Some(&wrong)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    primary.kill();
    let log = primary.log();
    assert!(log.lines().count() > 50, "trace logging was on: {log}");
    assert!(!log.contains(&good), "the client token is in the log");
    assert!(!log.contains(&wrong), "a presented token is in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_token_with_a_trailing_space_is_unauthenticated() {
    let setup = Setup::new();
    let primary = running_primary(&setup).await;
    let mut kv = KvClient::new(setup.channel(&primary).await);
    let spaced = format!("{} ", setup.token("app"));
    let status = kv
        .write(with_token(put("k", b"v".to_vec()), Some(&spaced)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_replica_token_cannot_write_and_client_token_cannot_administer() {
    let setup = Setup::new();
    let primary = running_primary(&setup).await;
    let channel = setup.channel(&primary).await;
    let status = KvClient::new(channel.clone())
        .write(with_token(
            put("k", b"v".to_vec()),
            Some(&setup.token("replica-9")),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // A replica token not limited to ranges may scan and read the status
    // (what a range move's copy does with it); it may still not write.
    KvClient::new(channel.clone())
        .scan(with_token(
            strata_proto::v1::ScanRequest {
                unbounded: true,
                ..strata_proto::v1::ScanRequest::default()
            },
            Some(&setup.token("replica-9")),
        ))
        .await
        .unwrap();
    AdminClient::new(channel.clone())
        .status(with_token(
            strata_proto::v1::StatusRequest {},
            Some(&setup.token("replica-9")),
        ))
        .await
        .unwrap();
    // A client token writes but may not split; an admin token may.
    KvClient::new(channel.clone())
        .write(with_token(
            put("k", b"v".to_vec()),
            Some(&setup.token("app")),
        ))
        .await
        .unwrap();
    let split = |token: String| {
        let channel = channel.clone();
        async move {
            AdminClient::new(channel)
                .split_range(with_token(
                    SplitRangeRequest { at: b"m".to_vec() },
                    Some(&token),
                ))
                .await
        }
    };
    let status = split(setup.token("app")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    split(setup.token("admin")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_the_tls_port_is_refused() {
    let setup = Setup::new();
    let primary = running_primary(&setup).await;
    let result = async {
        let channel = Endpoint::from_shared(format!("http://{}", primary.addr))
            .unwrap()
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        KvClient::new(channel)
            .write(with_token(
                put("k", b"v".to_vec()),
                Some(&setup.token("app")),
            ))
            .await
            .map_err(|s| format!("{:?}", s.code()))
    }
    .await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_certificate_not_allowed_cannot_replicate_and_cannot_write() {
    let setup = Setup::new();
    let primary = running_primary(&setup).await;
    // "intruder" has a certificate from the cluster CA but is not listed.
    let channel = Endpoint::from_shared(format!("https://{}", primary.addr))
        .unwrap()
        .tls_config(setup.tls(Some("intruder")))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = strata_proto::v1::replication_client::ReplicationClient::new(channel.clone())
        .begin_snapshot(strata_proto::v1::BeginSnapshotRequest {
            replica_id: "intruder".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // A listed replica's certificate does not make a client.
    let channel = Endpoint::from_shared(format!("https://{}", primary.addr))
        .unwrap()
        .tls_config(setup.tls(Some("replica-1")))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = KvClient::new(channel)
        .write(with_token(put("k", b"v".to_vec()), None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_and_the_node_serves_on() {
    let setup = Setup::new();
    let primary = running_primary(&setup).await;
    let token = setup.token("app");
    let mut kv = KvClient::new(setup.channel(&primary).await).max_encoding_message_size(64 << 20);
    // Over the message limit (batch_bytes_max + 1 MiB): refused undecoded.
    let status = kv
        .write(with_token(put("big", vec![7u8; 20 << 20]), Some(&token)))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{status:?}"
    );
    // Within the message limit but over what one batch (and so one
    // replication message) may hold: refused at write time.
    let operations = (0..3)
        .map(|i| Operation {
            kind: operation::Kind::Put as i32,
            key: format!("k{i}").into_bytes(),
            value: vec![1u8; 11 << 19],
        })
        .collect();
    let status = kv
        .write(with_token(
            WriteRequest {
                operations,
                ..WriteRequest::default()
            },
            Some(&token),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("batch"), "{status:?}");
    // Still serving.
    kv.write(with_token(put("small", b"v".to_vec()), Some(&token)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_bomb_is_refused_without_decompressing() {
    let setup = Setup::new();
    let primary = running_primary(&setup).await;
    let before = rss_kib(primary.pid());
    // 32 MiB of zeros, a few tens of KiB on the wire.
    let mut kv = KvClient::new(setup.channel(&primary).await)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(64 << 20);
    let status = kv
        .write(with_token(
            put("bomb", vec![0u8; 32 << 20]),
            Some(&setup.token("app")),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    let after = rss_kib(primary.pid());
    assert!(
        after < before + 16 * 1024,
        "the node's memory grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_stay_bounded_and_a_replica_keeps_streaming() {
    let setup = Setup::new();
    let mut primary = setup.primary();
    let mut r1 = setup.node("replica-1", |t| t);
    primary.start();
    wait_up(&setup, &primary).await;
    r1.start();
    wait_up(&setup, &r1).await;
    let token = setup.token("app");
    // Connections made before the flood keep working through it.
    let mut writer = KvClient::new(setup.channel(&primary).await);
    let mut reader = KvClient::new(setup.channel(&r1).await);
    writer
        .write(with_token(put("warm", b"1".to_vec()), Some(&token)))
        .await
        .unwrap();
    let before = rss_kib(primary.pid());
    let t0 = Instant::now();
    let addr: std::net::SocketAddr = primary.addr.parse().unwrap();
    let mut idle = Vec::with_capacity(10_000);
    let mut refused_at_connect = 0;
    for n in 0..10_000 {
        // Paced a little, so the flood does not overflow the listen backlog
        // (which costs the connecting side a one-second SYN retry).
        if n % 256 == 255 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => idle.push(stream),
            Err(_) => refused_at_connect += 1,
        }
    }
    let connect_time = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = rss_kib(primary.pid());
    // The replica keeps streaming: writes made now reach it.
    let mut last = 0;
    for i in 0..50 {
        last = writer
            .write(with_token(
                put(&format!("during/{i}"), b"v".to_vec()),
                Some(&token),
            ))
            .await
            .unwrap()
            .into_inner()
            .seq;
    }
    let answer = read_at(&mut reader, "during/49", last, &token).await;
    assert!(answer.found, "the replica stopped streaming");
    // Memory stays bounded: at most max_connections (1024 here) are held,
    // each for at most the handshake timeout.
    assert!(
        during < before + 128 * 1024,
        "the node's memory grew from {before} KiB to {during} KiB with {} idle connections",
        idle.len()
    );
    // After the handshake timeout the silent connections are gone and new
    // ones are served again.
    tokio::time::sleep(Duration::from_millis(8500)).await;
    let figures = node::scrape_text(&primary.metrics);
    let figure = |name: &str| -> f64 {
        figures
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap()
            .parse()
            .unwrap()
    };
    let (held, refused, timed_out, open, peak) = (
        figure("strata_connections_accepted"),
        figure("strata_connections_refused"),
        figure("strata_connections_timed_out"),
        figure("strata_connections_open "),
        figure("strata_connections_open_peak"),
    );
    assert!(
        peak <= 1024.0,
        "{peak} connections open at once, over max_connections"
    );
    eprintln!(
        "flood: {} connected in {connect_time:?}; accepted {held}, refused {refused}, timed out {timed_out}, open {open}, peak {peak}",
        idle.len()
    );
    assert!(refused > 0.0, "the flood never reached max_connections");
    assert!(
        timed_out >= 1000.0,
        "only {timed_out} silent connections timed out"
    );
    assert!(
        open < 16.0,
        "{open} connections still open after the timeout"
    );
    let fresh = KvClient::new(setup.channel(&primary).await)
        .get(with_token(
            GetRequest {
                key: b"warm".to_vec(),
                ..GetRequest::default()
            },
            Some(&token),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(fresh.found);
    let after = rss_kib(primary.pid());
    eprintln!(
        "idle connections: {} opened ({refused_at_connect} failed at connect) in {:?}; node: {held} accepted, {refused} refused at accept, {timed_out} timed out, peak {peak} open; RSS {before} KiB before, {during} KiB during, {after} KiB after the timeout",
        idle.len(),
        connect_time
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_or_token_file_readable_by_others_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    let primary = setup.primary();
    for file in ["certs/primary.key", "secrets/app.token"] {
        let path = setup.path().join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = strata(&["serve", "--config", primary.config.to_str().unwrap()]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(file.rsplit('/').next().unwrap()) && err.contains("0644"),
            "{err}"
        );
        assert!(
            !setup.path().join("data").exists(),
            "nothing is created before the check"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_on_its_own_listener_is_not_on_the_client_port() {
    let setup = Setup::new();
    let replication_port = free_port();
    let mut primary = setup.node("primary", |text| {
        text.replacen(
            "listen = ",
            &format!("replication_listen = \"127.0.0.1:{replication_port}\"\nlisten = "),
            1,
        )
    });
    let primary_client_port = primary.addr.clone();
    let mut r1 = setup.node("replica-1", |text| {
        text.replace(
            &format!("upstream = \"https://{primary_client_port}\""),
            &format!("upstream = \"https://127.0.0.1:{replication_port}\""),
        )
    });
    primary.start();
    wait_up(&setup, &primary).await;
    r1.start();
    wait_up(&setup, &r1).await;
    let token = setup.token("app");
    let seq = KvClient::new(setup.channel(&primary).await)
        .write(with_token(put("k", b"v".to_vec()), Some(&token)))
        .await
        .unwrap()
        .into_inner()
        .seq;
    let answer = read_at(
        &mut KvClient::new(setup.channel(&r1).await),
        "k",
        seq,
        &token,
    )
    .await;
    assert!(
        answer.found,
        "the replica follows through the replication port"
    );
    // Replication is not served on the client port...
    let on_client_port = Endpoint::from_shared(format!("https://{}", primary.addr))
        .unwrap()
        .tls_config(setup.tls(Some("replica-1")))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = strata_proto::v1::replication_client::ReplicationClient::new(on_client_port)
        .begin_snapshot(strata_proto::v1::BeginSnapshotRequest {
            replica_id: "replica-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    // ...nor the client API on the replication port.
    let on_replication_port =
        Endpoint::from_shared(format!("https://127.0.0.1:{replication_port}"))
            .unwrap()
            .tls_config(setup.tls(None))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let status = KvClient::new(on_replication_port)
        .write(with_token(put("k", b"v".to_vec()), Some(&token)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

fn hangup(node: &Node) {
    let status = Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Whether `token` is accepted for a write right now.
async fn accepted(setup: &Setup, node: &Node, token: &str) -> bool {
    KvClient::new(setup.channel(node).await)
        .write(with_token(put("k", b"v".to_vec()), Some(token)))
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_reload_on_sighup_and_a_bad_reload_keeps_the_old_ones() {
    let setup = Setup::new();
    let primary = running_primary(&setup).await;
    let old = setup.token("app");
    assert!(accepted(&setup, &primary, &old).await);
    // Rotate: the config now names a new token file.
    let new_file = setup.path().join("secrets/app-new.token");
    let out = strata(&["token", "--out", new_file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let new = std::fs::read_to_string(&new_file)
        .unwrap()
        .trim_end()
        .to_string();
    let text = std::fs::read_to_string(&primary.config).unwrap();
    std::fs::write(
        &primary.config,
        text.replace("secrets/app.token", "secrets/app-new.token"),
    )
    .unwrap();
    hangup(&primary);
    let started = Instant::now();
    while !accepted(&setup, &primary, &new).await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new token was never accepted: {}",
            primary.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !accepted(&setup, &primary, &old).await,
        "the old token still works"
    );
    // A reload that would drop every credential is refused, and one naming a
    // token file others can read too; the new token keeps working.
    let with_auth = std::fs::read_to_string(&primary.config).unwrap();
    let without_auth: String = with_auth.split("\n[[auth.").next().unwrap().to_string();
    std::fs::write(&primary.config, &without_auth).unwrap();
    hangup(&primary);
    {
        use std::os::unix::fs::PermissionsExt;
        let started = Instant::now();
        while !primary.log().contains("reload refused") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{}",
                primary.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::write(&primary.config, &with_auth).unwrap();
        std::fs::set_permissions(&new_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        hangup(&primary);
        let started = Instant::now();
        while primary.log().matches("reload refused").count() < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{}",
                primary.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(accepted(&setup, &primary, &new).await);
    assert!(!accepted(&setup, &primary, &old).await);
    assert!(!primary.log().contains(&new), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_client_certificate_is_refused_and_a_new_crl_applies_on_sighup() {
    let setup = Setup::new();
    let certs = setup.path().join("certs");
    let revoke = |name: &str| {
        let out = strata(&["certs", "--out", certs.to_str().unwrap(), "--revoke", name]);
        assert!(out.status.success(), "{out:?}");
    };
    revoke("replica-1");
    let mut primary = setup.node("primary", |text| {
        text.replace("# client_crl = ", "client_crl = ")
    });
    assert!(
        std::fs::read_to_string(&primary.config)
            .unwrap()
            .contains("\nclient_crl = \"certs/ca.crl\"")
    );
    primary.start();
    wait_up(&setup, &primary).await;
    let attempt = |identity: &'static str| {
        let tls = setup.tls(Some(identity));
        let addr = primary.addr.clone();
        async move {
            let channel = Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .connect_timeout(Duration::from_secs(2))
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .map_err(|e| format!("connect: {e}"))?;
            strata_proto::v1::replication_client::ReplicationClient::new(channel)
                .begin_snapshot(strata_proto::v1::BeginSnapshotRequest {
                    replica_id: identity.into(),
                })
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        }
    };
    // replica-2 is served; replica-1, revoked, is refused at the handshake.
    attempt("replica-2").await.unwrap();
    let refused = attempt("replica-1").await.unwrap_err();
    assert!(!refused.contains("PermissionDenied"), "{refused}");
    // Revoking replica-2 too extends the list; SIGHUP applies it.
    revoke("replica-2");
    hangup(&primary);
    let started = Instant::now();
    while attempt("replica-2").await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new CRL never applied: {}",
            primary.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        attempt("replica-1").await.is_err(),
        "the list lost a revocation"
    );
    let figures = node::scrape_text(&primary.metrics);
    assert!(
        figures
            .lines()
            .any(|l| l.starts_with("strata_connections_tls_failed_total ") && !l.ends_with(" 0")),
        "failed handshakes are counted"
    );
}

async fn admin_status(setup: &Setup, node: &Node) -> strata_proto::v1::StatusResponse {
    AdminClient::new(setup.channel(node).await)
        .status(with_token(StatusRequest {}, Some(&setup.token("app"))))
        .await
        .unwrap()
        .into_inner()
}

/// Regression (issue 12): replicas refused for their credentials retried
/// forever with nothing counted. A replica whose certificate names an
/// identity that is not allowed, and one presenting a wrong replica token,
/// are counted in the primary's `strata_requests_total{outcome="denied"}`
/// and in their own credential refusals (status and metrics), and the
/// shipped alerts for them fire on live scrapes (and not on the primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_refused_for_their_credentials_are_counted_and_alerted() {
    let setup = Setup::new();
    let primary = running_primary(&setup).await;
    let wrong = setup.path().join("secrets/wrong.token");
    let out = strata(&["token", "--out", wrong.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // "intruder": a certificate from the cluster CA, identity not listed.
    let mut intruder = setup.node("replica-1", |text| {
        text.replace("data/replica-1", "data/intruder")
            .replace("id = \"replica-1\"", "id = \"intruder\"")
            .replace("certs/replica-1.", "certs/intruder.")
    });
    // "replica-9": a listed token name, but the wrong token.
    let mut wrong_token = setup.node("replica-2", |text| {
        text.replace("data/replica-2", "data/replica-9")
            .replace(
                "id = \"replica-2\"",
                "id = \"replica-9\"\ntoken_file = \"secrets/wrong.token\"",
            )
            .replace(
                "cert = \"certs/replica-2.pem\"\nkey = \"certs/replica-2.key\"\nserver_name",
                "server_name",
            )
    });
    intruder.start();
    wrong_token.start();
    wait_up(&setup, &intruder).await;
    wait_up(&setup, &wrong_token).await;
    let started = Instant::now();
    for node in [&intruder, &wrong_token] {
        loop {
            let s = admin_status(&setup, node).await;
            if s.credential_refusals >= 1 {
                assert!(s.refusals >= s.credential_refusals, "{s:?}");
                assert!(s.last_error.starts_with("credential refused"), "{s:?}");
                assert_eq!(s.records_applied, 0);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no credential refusal counted: {s:?}\n{}",
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        intruder.log().contains("PermissionDenied"),
        "{}",
        intruder.log()
    );
    assert!(
        wrong_token.log().contains("Unauthenticated"),
        "{}",
        wrong_token.log()
    );

    let scrape = |node: &Node| node::samples(&node::scrape_text(&node.metrics));
    let before = [scrape(&primary), scrape(&intruder), scrape(&wrong_token)];
    let denied = |samples: &BTreeMap<String, f64>| -> f64 {
        samples
            .iter()
            .filter(|(series, _)| {
                series.starts_with("strata_requests_total{")
                    && series.contains("outcome=\"denied\"")
                    && series.contains("method=\"begin_snapshot\"")
            })
            .map(|(_, v)| v)
            .sum()
    };
    assert!(denied(&before[0]) >= 2.0, "{:?}", before[0]);
    for replica in &before[1..] {
        assert!(replica["strata_follower_credential_refusals_total"] >= 1.0);
        assert!(replica["strata_follower_refusals_total"] >= 1.0);
    }
    // A retry later (the replicas retry every 1-2 s), the alerts hold over
    // the two scrapes: on each replica, and on the primary.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = [scrape(&primary), scrape(&intruder), scrape(&wrong_token)];
    let follower_alert = node::alert_expr("StrataReplicaCannotAuthenticate");
    let upstream_alert = node::alert_expr("StrataReplicationDenied");
    for i in 1..3 {
        assert!(
            node::counter_alert_fires(&follower_alert, &before[i], &after[i]),
            "{follower_alert} does not fire: {:?}",
            after[i]
        );
        // The history-refusal alert (refusals beyond credential ones) stays quiet.
        let increase = |name: &str| after[i][name] - before[i][name];
        assert_eq!(
            increase("strata_follower_refusals_total"),
            increase("strata_follower_credential_refusals_total")
        );
    }
    assert!(node::counter_alert_fires(
        &upstream_alert,
        &before[0],
        &after[0]
    ));
    assert!(!node::counter_alert_fires(
        &follower_alert,
        &before[0],
        &after[0]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_stream_ends_once_its_token_is_revoked() {
    use strata_proto::v1::{PipelineRequest, pipeline_request};
    let setup = Setup::new();
    let primary = running_primary(&setup).await;
    let old = setup.token("app");
    let (requests, receiver) = tokio::sync::mpsc::channel(4);
    let mut answers = KvClient::new(setup.channel(&primary).await)
        .pipeline(with_token(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
            Some(&old),
        ))
        .await
        .unwrap()
        .into_inner();
    let request = |sequence| PipelineRequest {
        sequence,
        operation: Some(pipeline_request::Operation::Write(put("k", b"v".to_vec()))),
    };
    requests.send(request(0)).await.unwrap();
    let first = answers.message().await.unwrap().unwrap();
    assert_eq!((first.sequence, first.code), (0, Code::Ok as i32));

    // Rotate the token: the config names a new file, SIGHUP.
    let new_file = setup.path().join("secrets/app-new.token");
    let out = strata(&["token", "--out", new_file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let new = std::fs::read_to_string(&new_file)
        .unwrap()
        .trim_end()
        .to_string();
    let text = std::fs::read_to_string(&primary.config).unwrap();
    std::fs::write(
        &primary.config,
        text.replace("secrets/app.token", "secrets/app-new.token"),
    )
    .unwrap();
    hangup(&primary);
    let started = Instant::now();
    while !accepted(&setup, &primary, &new).await {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new token was never accepted: {}",
            primary.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The open stream's next request ends it.
    requests.send(request(1)).await.unwrap();
    let status = answers.message().await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}
