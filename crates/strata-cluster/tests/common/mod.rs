//! Real etcd processes for tests: started on loopback in temporary
//! directories, stopped (killed) when dropped.
//!
//! A test that needs etcd and does not find it fails, naming the package
//! to install; it never passes silently.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub(crate) mod fake;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary: `$STRATA_ETCD`, else `etcd` on the PATH, else
/// Debian's `/usr/bin/etcd`.
pub(crate) fn etcd_binary() -> PathBuf {
    if let Ok(path) = std::env::var("STRATA_ETCD") {
        return PathBuf::from(path);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = PathBuf::from(dir).join("etcd");
        if candidate.is_file() {
            return candidate;
        }
    }
    let debian = PathBuf::from("/usr/bin/etcd");
    if debian.is_file() {
        return debian;
    }
    panic!(
        "etcd not found (looked at $STRATA_ETCD, the PATH and /usr/bin/etcd): \
         install it with `apt-get install -y etcd-server`"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One member of a test etcd cluster.
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) client_url: String,
    pub(crate) peer_url: String,
    pub(crate) dir: PathBuf,
    pub(crate) child: Option<Child>,
}

/// A test etcd cluster of one or more members on loopback.
pub(crate) struct Etcd {
    _dir: tempfile::TempDir,
    pub(crate) members: Vec<Member>,
    initial_cluster: String,
}

impl Etcd {
    /// Starts `n` members and waits until the cluster answers.
    pub(crate) async fn start(n: usize) -> Etcd {
        let binary = etcd_binary();
        let dir = tempfile::tempdir().unwrap();
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                dir: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            _dir: dir,
            members: Vec::new(),
            initial_cluster,
        };
        for member in &mut members {
            spawn(&binary, member, &etcd.initial_cluster, "new");
        }
        etcd.members = members;
        etcd.wait_ready(Duration::from_secs(30)).await;
        etcd
    }

    /// The client URLs of every member.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The index of the member that is etcd's leader now (read from each
    /// member's `/metrics`, `etcd_server_is_leader 1`), if one says so.
    pub(crate) fn leader(&self) -> Option<usize> {
        use std::io::{Read, Write};
        self.members.iter().position(|m| {
            let Some(address) = m.client_url.strip_prefix("http://") else {
                return false;
            };
            let Ok(mut stream) = std::net::TcpStream::connect(address) else {
                return false;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request =
                format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_err() {
                return false;
            }
            let mut body = String::new();
            let _ = stream.read_to_string(&mut body);
            body.lines().any(|l| l.trim() == "etcd_server_is_leader 1")
        })
    }

    /// Kills member `i` (SIGKILL).
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts member `i` on its data directory.
    pub(crate) fn restart(&mut self, i: usize) {
        let binary = etcd_binary();
        let initial = self.initial_cluster.clone();
        spawn(&binary, &mut self.members[i], &initial, "existing");
    }

    pub(crate) async fn wait_ready(&self, limit: Duration) {
        use strata_cluster::{Coordinator, EtcdCoordinator, EtcdOptions};
        let start = Instant::now();
        for endpoint in self.endpoints() {
            let etcd = EtcdCoordinator::connect(EtcdOptions::new([endpoint.clone()])).unwrap();
            loop {
                if etcd.get(b"ready").await.is_ok() {
                    break;
                }
                assert!(
                    start.elapsed() < limit,
                    "etcd member {endpoint} not answering within {limit:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn spawn(binary: &PathBuf, member: &mut Member, initial_cluster: &str, state: &str) {
    let log = std::fs::File::create(member.dir.with_extension("log")).unwrap();
    let child = Command::new(binary)
        .args([
            "--name",
            &member.name,
            "--data-dir",
            member.dir.to_str().unwrap(),
            "--listen-client-urls",
            &member.client_url,
            "--advertise-client-urls",
            &member.client_url,
            "--listen-peer-urls",
            &member.peer_url,
            "--initial-advertise-peer-urls",
            &member.peer_url,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            "strata-test",
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "1000",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    member.child = Some(child);
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
