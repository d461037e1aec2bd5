//! Token authentication on the replication service: a replica token lets a
//! replica follow as the id it names and for the ranges it names; every
//! other case is refused with the expected status, each a named test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use strata::{Db, Options, WriteBatch, WriteOptions};
use strata_proto::v1::replication_client::ReplicationClient;
use strata_proto::v1::{
    BeginSnapshotRequest, FetchSnapshotRequest, KeyRange, ReplicaMessage, Subscribe,
    replica_message,
};
use strata_replication::auth::{Auth, Role, Secret, TokenGrant};
use strata_replication::epoch::Epoch;
use strata_replication::{Replica, ReplicaConfig, SharedDb, Upstream, UpstreamConfig};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::transport::Server;

const REPLICA_TOKEN: &str = "replica-1-token-0123456789";
const SCOPED_TOKEN: &str = "replica-eu-token-0123456789";
const CLIENT_TOKEN: &str = "client-token-0123456789abc";

struct Primary {
    addr: SocketAddr,
    db: SharedDb,
    auth: Auth,
    _dir: tempfile::TempDir,
}

async fn primary() -> Primary {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("p"), Options::default()).unwrap();
    // Tables and log that mix both ranges.
    for i in 0..100 {
        db.put(format!("eu/{i}").as_bytes(), b"EU-VALUE").unwrap();
        db.put(format!("us/{i}").as_bytes(), b"US-SECRET").unwrap();
        if i == 50 {
            db.flush().unwrap();
        }
    }
    db.sync().unwrap();
    let mut config = UpstreamConfig::new(dir.path().join("p.snapshots"));
    config.auth = Auth::new(
        vec![
            TokenGrant::new(
                "replica-1",
                Role::Replica,
                REPLICA_TOKEN.as_bytes(),
                Vec::new(),
            ),
            TokenGrant::new(
                "replica-eu",
                Role::Replica,
                SCOPED_TOKEN.as_bytes(),
                vec![(b"eu/".to_vec(), Some(b"eu0".to_vec()))],
            ),
            TokenGrant::new("app", Role::Client, CLIENT_TOKEN.as_bytes(), Vec::new()),
        ],
        Vec::new(),
    );
    let auth = config.auth.clone();
    let shared = SharedDb::new(db);
    let upstream = Upstream::new(
        shared.clone(),
        Epoch::open(&dir.path().join("p")).unwrap(),
        config,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder().add_service(upstream.service());
    tokio::spawn(async move {
        let _ = server
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    Primary {
        addr,
        db: shared,
        auth,
        _dir: dir,
    }
}

/// Subscribes with this raw `authorization` value (none: no header), as
/// `id`, for `ranges`; the status code of the answer (Ok when accepted).
async fn subscribe(
    addr: SocketAddr,
    authorization: Option<&str>,
    id: &str,
    ranges: Vec<KeyRange>,
) -> Result<(), (Code, String)> {
    let mut client = ReplicationClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(ReplicaMessage {
        kind: Some(replica_message::Kind::Subscribe(Subscribe {
            replica_id: id.into(),
            ranges,
            ..Subscribe::default()
        })),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    let answer = client.subscribe(request).await;
    drop(tx);
    answer
        .map(|_| ())
        .map_err(|s| (s.code(), s.message().to_string()))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn eu() -> Vec<KeyRange> {
    vec![KeyRange {
        start: b"eu/".to_vec(),
        end: b"eu0".to_vec(),
        unbounded: false,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_replica_with_its_token_follows() {
    let p = primary().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = ReplicaConfig::new(format!("http://{}", p.addr), "replica-1", dir.path());
    config.token = Some(Secret::new(REPLICA_TOKEN).unwrap());
    let replica = Replica::start(config).unwrap();
    let started = Instant::now();
    while replica.figures().applied_seq < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            replica.figures()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A range-limited token follows its own ranges.
    assert_eq!(
        subscribe(p.addr, Some(&bearer(SCOPED_TOKEN)), "replica-eu", eu()).await,
        Ok(())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_missing_is_unauthenticated() {
    let p = primary().await;
    let (code, message) = subscribe(p.addr, None, "replica-1", Vec::new())
        .await
        .unwrap_err();
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(!message.contains('/'), "reveals nothing: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_wrong_is_unauthenticated() {
    let p = primary().await;
    let (code, message) = subscribe(
        p.addr,
        Some(&bearer("replica-1-token-0123456788")),
        "replica-1",
        Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(!message.contains("replica-1-token"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_a_trailing_space_is_unauthenticated() {
    let p = primary().await;
    let result = subscribe(
        p.addr,
        Some(&format!("{} ", bearer(REPLICA_TOKEN))),
        "replica-1",
        Vec::new(),
    )
    .await;
    // Nothing is trimmed: the token with a space is another token.
    let (code, message) = result.unwrap_err();
    assert_eq!(code, Code::Unauthenticated, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_of_a_client_cannot_subscribe() {
    let p = primary().await;
    let (code, message) = subscribe(p.addr, Some(&bearer(CLIENT_TOKEN)), "app", Vec::new())
        .await
        .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_of_one_replica_cannot_take_another_replicas_id() {
    let p = primary().await;
    let (code, message) = subscribe(
        p.addr,
        Some(&bearer(REPLICA_TOKEN)),
        "replica-2",
        Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_limited_to_ranges_cannot_ask_for_others() {
    let p = primary().await;
    // Every key.
    let (code, message) = subscribe(
        p.addr,
        Some(&bearer(SCOPED_TOKEN)),
        "replica-eu",
        Vec::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    // Another range.
    let us = vec![KeyRange {
        start: b"us/".to_vec(),
        end: b"us0".to_vec(),
        unbounded: false,
    }];
    let (code, message) = subscribe(p.addr, Some(&bearer(SCOPED_TOKEN)), "replica-eu", us)
        .await
        .unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{message}");
    // Another id's snapshot... is refused for the id, and a snapshot begun
    // by an unrestricted credential cannot be fetched with this one.
    let client = || async {
        ReplicationClient::connect(format!("http://{}", p.addr))
            .await
            .unwrap()
    };
    let full = client()
        .await
        .begin_snapshot(with(
            BeginSnapshotRequest {
                replica_id: "replica-1".into(),
            },
            REPLICA_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    let status = client()
        .await
        .fetch_snapshot(with(
            FetchSnapshotRequest {
                snapshot_id: full.snapshot_id.clone(),
                path: full.files[0].path.clone(),
                offset: 0,
            },
            SCOPED_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

fn with<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer(token).parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_limited_to_ranges_gets_a_snapshot_holding_only_its_ranges() {
    let p = primary().await;
    let mut client = ReplicationClient::connect(format!("http://{}", p.addr))
        .await
        .unwrap();
    let info = client
        .begin_snapshot(with(
            BeginSnapshotRequest {
                replica_id: "replica-eu".into(),
            },
            SCOPED_TOKEN,
        ))
        .await
        .unwrap()
        .into_inner();
    // Every byte of every file, as the wire carries them.
    let mut eu_values = 0;
    for file in &info.files {
        let mut chunks = client
            .fetch_snapshot(with(
                FetchSnapshotRequest {
                    snapshot_id: info.snapshot_id.clone(),
                    path: file.path.clone(),
                    offset: 0,
                },
                SCOPED_TOKEN,
            ))
            .await
            .unwrap()
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = chunks.message().await.unwrap() {
            bytes.extend_from_slice(&chunk.data);
        }
        assert!(
            !bytes.windows(9).any(|w| w == b"US-SECRET"),
            "{} carries another range's value",
            file.path
        );
        eu_values += bytes.windows(8).filter(|w| *w == b"EU-VALUE").count();
    }
    assert!(eu_values >= 1, "the snapshot holds its own range's values");
}

/// Every file under `dir`, searched for `needle`; the paths holding it.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap().path();
            if entry.is_dir() {
                stack.push(entry);
            } else if std::fs::read(&entry)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                found.push(entry.display().to_string());
            }
        }
    }
    found
}

async fn caught_up(replica: &Replica, seq: u64) {
    let started = Instant::now();
    while replica.figures().applied_seq < seq {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            replica.figures()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_limited_to_ranges_is_never_sent_another_ranges_keys() {
    let p = primary().await;
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = ReplicaConfig::new(
            format!("http://{}", p.addr),
            "replica-eu",
            dir.path().join("r"),
        );
        config.token = Some(Secret::new(SCOPED_TOKEN).unwrap());
        config.ranges = vec![(b"eu/".to_vec(), Some(b"eu0".to_vec()))];
        config
    };
    let db = p.db.get().unwrap();
    let write_mixed = |round: u32| {
        // Batches that mix both ranges, and a range deletion across both.
        for i in 0..50 {
            let mut batch = WriteBatch::new();
            batch.put(format!("eu/{round}-{i}").as_bytes(), b"EU-VALUE");
            batch.put(format!("us/{round}-{i}").as_bytes(), b"US-SECRET");
            db.write(batch, &WriteOptions::default()).unwrap();
        }
        let mut batch = WriteBatch::new();
        batch.delete_range(format!("eu/{round}-4").as_bytes(), b"us/zzz");
        batch.put(format!("us/{round}-tail").as_bytes(), b"US-SECRET");
        db.write(batch, &WriteOptions { sync: true }).unwrap();
    };
    let replica = Replica::start(config()).unwrap();
    write_mixed(1);
    caught_up(&replica, db.last_seq().get()).await;
    let figures = replica.figures();
    assert_eq!(
        (
            figures.hash_mismatches,
            figures.gaps,
            figures.bad_records,
            figures.refusals
        ),
        (0, 0, 0, 0),
        "{figures:?}"
    );
    // Restarted, it continues the shown chain: no fork, no mismatch.
    replica.stop().await;
    drop(replica);
    let replica = Replica::start(config()).unwrap();
    write_mixed(2);
    caught_up(&replica, db.last_seq().get()).await;
    let figures = replica.figures();
    assert_eq!(
        (figures.hash_mismatches, figures.gaps, figures.refusals),
        (0, 0, 0),
        "{figures:?}"
    );
    // It holds exactly the primary's eu/ keys.
    let primary_eu: Vec<_> = db
        .scan(&b"eu/"[..]..&b"eu0"[..])
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let replica_db = replica.db().get().unwrap();
    let replica_eu: Vec<_> = replica_db
        .scan(&b"eu/"[..]..&b"eu0"[..])
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(primary_eu, replica_eu);
    assert!(!primary_eu.is_empty());
    replica.stop().await;
    drop(replica_db);
    drop(replica);
    // Nothing of the other range ever reached it: not in its log, its
    // tables, its snapshot or its state.
    let leaked = files_holding(dir.path(), b"US-SECRET");
    assert!(leaked.is_empty(), "another range's values in {leaked:?}");
    let leaked = files_holding(dir.path(), b"us/1-");
    assert!(leaked.is_empty(), "another range's keys in {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_revoked_by_a_reload_ends_the_open_stream() {
    let p = primary().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = ReplicaConfig::new(format!("http://{}", p.addr), "replica-1", dir.path());
    config.token = Some(Secret::new(REPLICA_TOKEN).unwrap());
    let replica = Replica::start(config).unwrap();
    let db = p.db.get().unwrap();
    caught_up(&replica, db.last_seq().get()).await;
    let client = || TokenGrant::new("app", Role::Client, CLIENT_TOKEN.as_bytes(), Vec::new());
    // The replica's token is removed: its open stream ends within about a
    // heartbeat, and it is refused from then on.
    p.auth.replace(vec![client()], Vec::new()).unwrap();
    let started = Instant::now();
    while !replica
        .figures()
        .last_error
        .is_some_and(|e| e.contains("PermissionDenied") || e.contains("Unauthenticated"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the stream outlived its credential: {:?}",
            replica.figures()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = replica.figures().applied_seq;
    db.put(b"after-revocation", b"x").unwrap();
    db.sync().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        replica.figures().applied_seq,
        before,
        "a revoked replica received new records"
    );
    // Restored, it follows again.
    p.auth
        .replace(
            vec![
                client(),
                TokenGrant::new(
                    "replica-1",
                    Role::Replica,
                    REPLICA_TOKEN.as_bytes(),
                    Vec::new(),
                ),
            ],
            Vec::new(),
        )
        .unwrap();
    caught_up(&replica, db.last_seq().get()).await;
}
