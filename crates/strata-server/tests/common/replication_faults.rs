//! The replication fault harness (see `tests/replication_faults.rs`): a
//! primary and two replicas as processes, links through fault proxies,
//! random kills, pauses and link faults; optionally everything over mutual
//! TLS with tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::{
    DigestRequest, GetRequest, Operation, StatusRequest, StatusResponse, WriteRequest, operation,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// With TLS on: the directory holding `certs/` and `secrets/admin.token`.
static TLS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Adds the admin token to every request (TLS runs require credentials).
#[derive(Clone)]
pub(crate) struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Ch = InterceptedService<Channel, Token>;

/// Certificates and a token for a TLS run, made with the binary itself.
fn tls_setup(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    run(&[
        "certs",
        "--out",
        dir.join("certs").to_str().unwrap(),
        "--names",
        "primary,replica0,replica1",
    ]);
    std::fs::create_dir(dir.join("secrets")).unwrap();
    run(&[
        "token",
        "--out",
        dir.join("secrets/admin.token").to_str().unwrap(),
    ]);
    TLS.set(dir.to_path_buf()).unwrap();
}

// ------------------------------------------------------------ the proxy

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Pass,
    Delay(Duration),
    Throttle(u64),
    Blackhole,
    Corrupt(f64),
}

#[derive(Debug)]
struct Proxy {
    mode: Mutex<Mode>,
    /// Bumped to reset every open connection.
    generation: AtomicU64,
    addr: SocketAddr,
}

async fn start_proxy(target: SocketAddr) -> Arc<Proxy> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Arc::new(Proxy {
        mode: Mutex::new(Mode::Pass),
        generation: AtomicU64::new(0),
        addr: listener.local_addr().unwrap(),
    });
    let accepting = Arc::clone(&proxy);
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let proxy = Arc::clone(&accepting);
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let generation = proxy.generation.load(Ordering::Acquire);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let up = pump(
                    Arc::clone(&proxy),
                    generation,
                    client_read,
                    server_write,
                    false,
                );
                let down = pump(proxy, generation, server_read, client_write, true);
                tokio::select! {
                    () = up => {}
                    () = down => {}
                }
            });
        }
    });
    proxy
}

async fn pump(
    proxy: Arc<Proxy>,
    generation: u64,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    downstream: bool,
) {
    let mut buffer = vec![0u8; 16 << 10];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if proxy.generation.load(Ordering::Acquire) != generation {
                    return;
                }
                continue;
            }
        };
        loop {
            if proxy.generation.load(Ordering::Acquire) != generation {
                return; // reset: drop both sides
            }
            let mode = *proxy.mode.lock();
            match mode {
                Mode::Blackhole => tokio::time::sleep(Duration::from_millis(10)).await,
                Mode::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Mode::Throttle(bytes_per_sec) => {
                    tokio::time::sleep(Duration::from_secs_f64(n as f64 / bytes_per_sec as f64))
                        .await;
                    break;
                }
                Mode::Corrupt(p) => {
                    if downstream && rand::random::<f64>() < p {
                        let at = rand::random_range(0..n);
                        buffer[at] ^= 1 << rand::random_range(0..8);
                    }
                    break;
                }
                Mode::Pass => break,
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

// ------------------------------------------------------------ processes

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Process {
    name: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    addr: SocketAddr,
}

impl Process {
    fn start(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.paused = false;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                signal(&child, "-CONT");
            }
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
        self.paused = false;
    }

    fn pause(&mut self, pause: bool) {
        if let Some(child) = &self.child
            && self.paused != pause
        {
            signal(child, if pause { "-STOP" } else { "-CONT" });
            self.paused = pause;
        }
    }

    fn up(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    fn log_tail(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let start = bytes.len().saturating_sub(2000);
        format!(
            "--- {} log tail ---\n{}",
            self.name,
            String::from_utf8_lossy(&bytes[start..])
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status();
}

fn write_config(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    upstream: Option<(SocketAddr, &str)>,
) -> PathBuf {
    let mut text = format!(
        "role = \"{}\"\ndata_dir = \"{name}\"\nlisten = \"{listen}\"\n",
        if upstream.is_some() {
            "replica"
        } else {
            "primary"
        }
    );
    let tls = TLS.get();
    if let Some((addr, id)) = upstream {
        let scheme = if tls.is_some() { "https" } else { "http" };
        text.push_str(&format!(
            "\n[replica]\nupstream = \"{scheme}://{addr}\"\nid = \"{id}\"\n"
        ));
        if tls.is_some() {
            text.push_str(&format!(
                "[replica.tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{id}.pem\"\nkey = \"certs/{id}.key\"\nserver_name = \"primary\"\n"
            ));
        }
    }
    if tls.is_some() {
        let identity = upstream.map_or("primary", |(_, id)| id);
        text.push_str(&format!(
            "\n[tls]\ncert = \"certs/{identity}.pem\"\nkey = \"certs/{identity}.key\"\nclient_ca = \"certs/ca.pem\"\n\n[[auth.tokens]]\nname = \"test\"\nrole = \"admin\"\nfile = \"secrets/admin.token\"\n"
        ));
        if upstream.is_none() {
            for id in ["replica0", "replica1"] {
                text.push_str(&format!("\n[[auth.replicas]]\nidentity = \"{id}\"\n"));
            }
        }
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

async fn channel(addr: SocketAddr) -> Option<Ch> {
    let tls = TLS.get();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_secs(3));
    let mut token = Token(None);
    if let Some(dir) = tls {
        let ca = std::fs::read(dir.join("certs/ca.pem")).unwrap();
        endpoint = endpoint
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                    .domain_name("localhost"),
            )
            .unwrap();
        let text = std::fs::read_to_string(dir.join("secrets/admin.token")).unwrap();
        token = Token(Some(format!("Bearer {}", text.trim_end()).parse().unwrap()));
    }
    let channel = endpoint.connect().await.ok()?;
    Some(InterceptedService::new(channel, token))
}

async fn status(addr: SocketAddr) -> Option<StatusResponse> {
    let mut client = AdminClient::new(channel(addr).await?);
    client
        .status(StatusRequest {})
        .await
        .ok()
        .map(tonic::Response::into_inner)
}

async fn wait_up(addr: SocketAddr, within: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if status(addr).await.is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

// ------------------------------------------------------------ the test

#[derive(Debug, Default)]
struct Figures {
    events: u64,
    link_faults: u64,
    replica_kills: u64,
    primary_kills: u64,
    pauses: u64,
    writes_acked: u64,
    synced_acked: u64,
    replica_reads: u64,
    reads_timed_out: u64,
    ahead_checks: u64,
}

/// Runs the fault test: `default_events` unless `STRATA_REPL_FAULT_EVENTS`
/// says otherwise; over mutual TLS with tokens when `tls`.
pub(crate) async fn run(tls: bool, default_events: u64) {
    let events: u64 = std::env::var("STRATA_REPL_FAULT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_events);
    let seed: u64 = std::env::var("STRATA_REPL_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    if tls {
        tls_setup(dir.path());
    }
    let primary_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut primary = Process {
        name: "primary".into(),
        config: write_config(dir.path(), "primary", primary_addr, None),
        log: dir.path().join("primary.log"),
        child: None,
        paused: false,
        addr: primary_addr,
    };
    primary.start();
    assert!(
        wait_up(primary_addr, Duration::from_secs(30)).await,
        "{}",
        primary.log_tail()
    );

    let mut proxies = Vec::new();
    let mut replicas = Vec::new();
    for i in 0..2 {
        let proxy = start_proxy(primary_addr).await;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let name = format!("replica{i}");
        let mut process = Process {
            config: write_config(dir.path(), &name, addr, Some((proxy.addr, &name))),
            log: dir.path().join(format!("{name}.log")),
            name,
            child: None,
            paused: false,
            addr,
        };
        process.start();
        assert!(
            wait_up(addr, Duration::from_secs(30)).await,
            "{}",
            process.log_tail()
        );
        proxies.push(proxy);
        replicas.push(process);
    }

    let mut figures = Figures::default();
    let mut key_counter = 0u64;
    let mut last_synced_seq = 0u64;
    let mut last_acked_seq = 0u64;
    // Per replica, the highest sequence number any of its reads reflected.
    let mut read_floor = [0u64; 2];
    let fail = |what: String, primary: &Process, replicas: &[Process]| -> ! {
        panic!(
            "seed {seed}: {what}\n{}\n{}\n{}",
            primary.log_tail(),
            replicas[0].log_tail(),
            replicas[1].log_tail()
        );
    };

    for event in 0..events {
        figures.events += 1;
        // Heal the previous link faults most of the time.
        for proxy in &proxies {
            if rng.random_bool(0.7) {
                *proxy.mode.lock() = Mode::Pass;
            }
        }
        let which = rng.random_range(0..2usize);
        match rng.random_range(0..10) {
            0..=4 => {
                figures.link_faults += 1;
                let proxy = &proxies[which];
                match rng.random_range(0..5) {
                    0 => {
                        *proxy.mode.lock() =
                            Mode::Delay(Duration::from_millis(rng.random_range(5..80)))
                    }
                    1 => *proxy.mode.lock() = Mode::Throttle(rng.random_range(20_000..500_000)),
                    2 => *proxy.mode.lock() = Mode::Blackhole,
                    3 => {
                        proxy.generation.fetch_add(1, Ordering::AcqRel);
                    }
                    _ => *proxy.mode.lock() = Mode::Corrupt(0.05),
                }
            }
            5 | 6 => {
                figures.replica_kills += 1;
                replicas[which].kill();
                if rng.random_bool(0.8) {
                    replicas[which].start();
                }
            }
            7 => {
                figures.pauses += 1;
                let pause = !replicas[which].paused;
                replicas[which].pause(pause);
            }
            _ => {
                figures.primary_kills += 1;
                primary.kill();
                primary.start();
                if !wait_up(primary_addr, Duration::from_secs(30)).await {
                    fail(
                        format!("event {event}: the primary did not come back"),
                        &primary,
                        &replicas,
                    );
                }
                // Nothing synced was lost.
                let s = status(primary_addr).await.unwrap();
                if s.durable_seq < last_synced_seq {
                    fail(
                        format!(
                            "event {event}: the primary restarted at {} but {last_synced_seq} was synced",
                            s.durable_seq
                        ),
                        &primary,
                        &replicas,
                    );
                }
                last_acked_seq = last_acked_seq.min(s.last_seq);
            }
        }
        for replica in &mut replicas {
            if replica.child.is_none() && rng.random_bool(0.5) {
                replica.start();
            }
        }

        // Writes to the primary.
        if let Some(ch) = channel(primary_addr).await {
            let mut kv = KvClient::new(ch);
            for _ in 0..rng.random_range(5..25) {
                key_counter += 1;
                let sync = rng.random_bool(0.3);
                let mut operations = vec![Operation {
                    kind: operation::Kind::Put as i32,
                    key: format!("k{:04}", key_counter % 500).into_bytes(),
                    value: format!("v{key_counter}").into_bytes(),
                }];
                if key_counter.is_multiple_of(17) {
                    operations.push(Operation {
                        kind: operation::Kind::DeleteRange as i32,
                        key: format!("k{:04}", key_counter % 500).into_bytes(),
                        value: format!("k{:04}", key_counter % 500 + 3).into_bytes(),
                    });
                }
                match kv
                    .write(WriteRequest {
                        operations,
                        sync,
                        ..WriteRequest::default()
                    })
                    .await
                {
                    Ok(answer) => {
                        let seq = answer.into_inner().seq;
                        figures.writes_acked += 1;
                        last_acked_seq = last_acked_seq.max(seq);
                        if sync {
                            figures.synced_acked += 1;
                            last_synced_seq = last_synced_seq.max(seq);
                        }
                    }
                    Err(_) => break,
                }
            }
        }

        // Reads from the replicas, and the ahead-of-primary check.
        for (i, replica) in replicas.iter().enumerate() {
            if !replica.up() {
                continue;
            }
            let Some(ch) = channel(replica.addr).await else {
                continue;
            };
            let mut kv = KvClient::new(ch);
            figures.replica_reads += 1;
            match kv
                .get(GetRequest {
                    key: format!("k{:04}", key_counter % 500).into_bytes(),
                    min_seq: last_synced_seq,
                    timeout_millis: 200,
                    ..GetRequest::default()
                })
                .await
            {
                Ok(answer) => {
                    let seq = answer.into_inner().seq;
                    if seq < read_floor[i] {
                        fail(
                            format!(
                                "event {event}: replica{i} answered at {seq} after answering at {}",
                                read_floor[i]
                            ),
                            &primary,
                            replicas.as_slice(),
                        );
                    }
                    read_floor[i] = seq;
                }
                Err(_) => figures.reads_timed_out += 1,
            }
            if let Some(replica_status) = status(replica.addr).await
                && let Some(primary_status) = status(primary_addr).await
            {
                figures.ahead_checks += 1;
                if replica_status.last_seq > primary_status.durable_seq {
                    fail(
                        format!(
                            "event {event}: replica{i} is at {} beyond the primary's durable {}",
                            replica_status.last_seq, primary_status.durable_seq
                        ),
                        &primary,
                        replicas.as_slice(),
                    );
                }
            }
        }
    }

    // Heal everything and converge.
    for proxy in &proxies {
        *proxy.mode.lock() = Mode::Pass;
    }
    for replica in &mut replicas {
        replica.pause(false);
        if replica.child.is_none() {
            replica.start();
        }
    }
    let mut kv = KvClient::new(channel(primary_addr).await.unwrap());
    let final_seq = kv
        .write(WriteRequest {
            operations: vec![Operation {
                kind: operation::Kind::Put as i32,
                key: b"final".to_vec(),
                value: b"marker".to_vec(),
            }],
            sync: true,
            ..WriteRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .seq;
    let deadline = Instant::now() + Duration::from_secs(90);
    for (i, replica) in replicas.iter().enumerate() {
        loop {
            let s = status(replica.addr).await;
            if s.as_ref().is_some_and(|s| s.last_seq == final_seq) {
                break;
            }
            if Instant::now() > deadline {
                fail(
                    format!("replica{i} did not converge to {final_seq}: {s:?}"),
                    &primary,
                    &replicas,
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let digest = |addr| async move {
        AdminClient::new(channel(addr).await.unwrap())
            .digest(DigestRequest::default())
            .await
            .unwrap()
            .into_inner()
    };
    let want = digest(primary_addr).await;
    assert_eq!(want.seq, final_seq);
    for (i, replica) in replicas.iter().enumerate() {
        let got = digest(replica.addr).await;
        if got != want {
            fail(
                format!("replica{i} digest {got:?} differs from the primary's {want:?}"),
                &primary,
                &replicas,
            );
        }
    }
    let counters: Vec<String> = {
        let mut out = Vec::new();
        for replica in &replicas {
            let s = status(replica.addr).await.unwrap();
            out.push(format!(
                "applied {} dup {} gaps {} hash {} bad {} reconnects {} bootstraps {}",
                s.records_applied,
                s.duplicates_ignored,
                s.gaps,
                s.hash_mismatches,
                s.bad_records,
                s.reconnects,
                s.bootstraps
            ));
        }
        out
    };
    eprintln!(
        "replication faults: seed {seed}, {:.1}s, {figures:?}, final seq {final_seq}, {} keys, replicas: {counters:?}",
        started.elapsed().as_secs_f64(),
        want.keys
    );
    assert!(figures.events >= 50 || events < 50);
}
