//! Replication over mutual TLS, and the refusals: each case a named test.
//! Certificates are made for each test with `rcgen` (a replication CA, a
//! server certificate for 127.0.0.1, replica certificates naming their
//! identity in the subject alternative names, another CA, an expired
//! certificate).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use strata::{Db, Options};
use strata_proto::v1::replication_client::ReplicationClient;
use strata_proto::v1::{BeginSnapshotRequest, ReplicaMessage, Subscribe, replica_message};
use strata_replication::auth::{Auth, PeerGrant};
use strata_replication::epoch::Epoch;
use strata_replication::{Replica, ReplicaConfig, SharedDb, Upstream, UpstreamConfig};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{
    Certificate as TlsCertificate, Channel, ClientTlsConfig, Endpoint, Identity, Server,
    ServerTlsConfig,
};

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// (certificate PEM, key PEM) naming `names`, signed by `ca`.
fn leaf(ca: &Ca, names: &[&str], expired: bool) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

struct Primary {
    addr: SocketAddr,
    ca: Ca,
    _dir: tempfile::TempDir,
}

/// A primary serving replication over mutual TLS; replicas "replica-1"
/// and "replica-2" are allowed.
async fn primary() -> Primary {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("replication ca");
    let (cert, key) = leaf(&ca, &["127.0.0.1", "localhost"], false);
    let db = Db::open(dir.path().join("p"), Options::default()).unwrap();
    db.put(b"k", b"v").unwrap();
    db.sync().unwrap();
    let mut config = UpstreamConfig::new(dir.path().join("p.snapshots"));
    config.auth = Auth::new(
        Vec::new(),
        ["replica-1", "replica-2"]
            .map(|identity| PeerGrant {
                identity: identity.into(),
                ranges: Vec::new(),
            })
            .into(),
    );
    let upstream = Upstream::new(
        SharedDb::new(db),
        Epoch::open(&dir.path().join("p")).unwrap(),
        config,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(TlsCertificate::from_pem(ca.cert.pem()));
    let service = upstream.service();
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(service);
    tokio::spawn(async move {
        let _ = server
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    Primary {
        addr,
        ca,
        _dir: dir,
    }
}

fn client_tls(server_ca: &Ca, identity: Option<(String, String)>) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(TlsCertificate::from_pem(server_ca.cert.pem()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tls
}

async fn connect(
    addr: SocketAddr,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(3));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    endpoint.connect().await
}

/// The status of a BeginSnapshot (a unary call) with these client settings;
/// a failed handshake shows as an error too.
async fn begin_snapshot_status(
    addr: SocketAddr,
    tls: Option<ClientTlsConfig>,
    id: &str,
) -> Result<(), String> {
    let channel = connect(addr, tls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    ReplicationClient::new(channel)
        .begin_snapshot(BeginSnapshotRequest {
            replica_id: id.into(),
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_replica_with_an_allowed_identity_follows() {
    let p = primary().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = ReplicaConfig::new(
        format!("https://{}", p.addr),
        "replica-1",
        dir.path().join("r"),
    );
    config.tls = Some(client_tls(&p.ca, Some(leaf(&p.ca, &["replica-1"], false))));
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
    assert_eq!(
        replica.db().get().unwrap().get(b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_no_client_certificate_is_refused() {
    let p = primary().await;
    let result = begin_snapshot_status(p.addr, Some(client_tls(&p.ca, None)), "replica-1").await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificate_from_another_ca_is_refused() {
    let p = primary().await;
    let other = ca("another ca");
    let result = begin_snapshot_status(
        p.addr,
        Some(client_tls(&p.ca, Some(leaf(&other, &["replica-1"], false)))),
        "replica-1",
    )
    .await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_valid_ca_but_identity_not_allowed_is_permission_denied() {
    let p = primary().await;
    let result = begin_snapshot_status(
        p.addr,
        Some(client_tls(&p.ca, Some(leaf(&p.ca, &["intruder"], false)))),
        "intruder",
    )
    .await;
    let error = result.unwrap_err();
    assert!(error.starts_with("PermissionDenied"), "{error}");
    assert!(
        !error.contains('/') && !error.contains("0.1"),
        "reveals nothing: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_replica_id_other_than_its_certificate_is_refused() {
    let p = primary().await;
    let channel = connect(
        p.addr,
        Some(client_tls(&p.ca, Some(leaf(&p.ca, &["replica-1"], false)))),
    )
    .await
    .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(ReplicaMessage {
        kind: Some(replica_message::Kind::Subscribe(Subscribe {
            replica_id: "replica-2".into(),
            ..Subscribe::default()
        })),
    })
    .await
    .unwrap();
    let status = ReplicationClient::new(channel)
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_expired_client_certificate_is_refused() {
    let p = primary().await;
    let result = begin_snapshot_status(
        p.addr,
        Some(client_tls(&p.ca, Some(leaf(&p.ca, &["replica-1"], true)))),
        "replica-1",
    )
    .await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_plaintext_to_a_tls_port_is_refused() {
    let p = primary().await;
    let result = begin_snapshot_status(p.addr, None, "replica-1").await;
    assert!(result.is_err(), "{result:?}");
}
