//! A group of `strata serve` processes with `role = "member"`, coordinated
//! through a real etcd: configs written on free ports, started, stopped
//! (SIGSTOP/SIGCONT), killed, restarted, and asked who is primary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::{DigestRequest, PutRequest, StatusRequest, StatusResponse};
use tonic::transport::Channel;

use super::node::free_port;

/// One member process.
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) config: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) grpc: String,
    pub(crate) metrics: String,
    pub(crate) child: Option<Child>,
    /// How many times it was started (the logs of earlier runs are kept).
    pub(crate) runs: u32,
}

impl Member {
    pub(crate) fn start(&mut self) {
        self.runs += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_strata"))
                .args(["serve", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "info")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }

    /// SIGKILL.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`).
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    pub(crate) fn alive(&self) -> bool {
        self.child.is_some()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) async fn kv(&self) -> Option<KvClient<Channel>> {
        let endpoint = tonic::transport::Endpoint::from_shared(self.grpc.clone())
            .unwrap()
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(3));
        endpoint.connect().await.ok().map(KvClient::new)
    }

    pub(crate) async fn admin(&self) -> Option<AdminClient<Channel>> {
        let endpoint = tonic::transport::Endpoint::from_shared(self.grpc.clone())
            .unwrap()
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(3));
        endpoint.connect().await.ok().map(AdminClient::new)
    }

    pub(crate) async fn status(&self) -> Option<StatusResponse> {
        let mut admin = self.admin().await?;
        admin
            .status(StatusRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    }

    /// The digest as of `seq` (waiting up to 10 s for it).
    pub(crate) async fn digest(&self, seq: u64) -> Result<(u64, u64), String> {
        let mut admin = self.admin().await.ok_or("not reachable")?;
        let d = admin
            .digest(DigestRequest {
                seq,
                range: None,
                timeout_millis: 10_000,
            })
            .await
            .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
            .into_inner();
        Ok((d.digest, d.keys))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A stopped process must be continued to die cleanly.
            self.signal("CONT");
        }
        self.kill();
    }
}

/// A group of members under one cluster name.
pub(crate) struct Group {
    pub(crate) members: Vec<Member>,
    pub(crate) dir: PathBuf,
}

/// Writes the configs of `n` members (`n1`..) of group `g1` in cluster
/// `cluster`, coordinated by `etcd`, with `lease_ttl_ms` and
/// `min_sync_replicas`: `examples/failover/n{i}.toml` (the README's
/// walk-through; members past the third are copies of the third) with
/// free ports, this etcd, an absolute data directory and these settings.
pub(crate) fn group(
    dir: &Path,
    etcd: &[String],
    cluster: &str,
    n: usize,
    lease_ttl_ms: u64,
    min_sync_replicas: u32,
) -> Group {
    let etcd = etcd
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let members = (1..=n)
        .map(|i| {
            let name = format!("n{i}");
            let port = free_port();
            let metrics = free_port();
            let config = dir.join(format!("{name}.toml"));
            let data = dir.join(format!("{name}-data"));
            let example = super::node::repo()
                .join("examples/failover")
                .join(format!("n{}.toml", i.min(3)));
            let text = std::fs::read_to_string(&example).unwrap();
            let j = i.min(3);
            let replaced = [
                (format!("127.0.0.1:720{j}"), format!("127.0.0.1:{port}")),
                (format!("127.0.0.1:930{j}"), format!("127.0.0.1:{metrics}")),
                (
                    format!("\"data/n{j}\""),
                    format!("{:?}", data.display().to_string()),
                ),
                (format!("\"n{j}\""), format!("\"{name}\"")),
                ("\"http://127.0.0.1:2379\"".to_string(), etcd.clone()),
                ("\"demo\"".to_string(), format!("\"{cluster}\"")),
                (
                    "lease_ttl_ms = 3000".to_string(),
                    format!("lease_ttl_ms = {lease_ttl_ms}"),
                ),
                (
                    "min_sync_replicas = 1".to_string(),
                    format!("min_sync_replicas = {min_sync_replicas}\nsync_timeout_ms = 2000"),
                ),
            ];
            let mut text = text;
            for (from, to) in &replaced {
                assert!(
                    text.contains(from.as_str()),
                    "{} has no {from}",
                    example.display()
                );
                text = text.replace(from.as_str(), to);
            }
            text.push_str("\n[limits]\nshutdown_grace_ms = 1000\n");
            std::fs::write(&config, text).unwrap();
            Member {
                name,
                config,
                log: dir.join(format!("n{i}.log")),
                grpc: format!("http://127.0.0.1:{port}"),
                metrics: format!("127.0.0.1:{metrics}"),
                child: None,
                runs: 0,
            }
        })
        .collect();
    Group {
        members,
        dir: dir.to_path_buf(),
    }
}

impl Group {
    pub(crate) fn start_all(&mut self) {
        for m in &mut self.members {
            m.start();
        }
    }

    /// The index of the member that says it is primary (of the running
    /// ones, skipping `except`), waiting up to `limit`.
    pub(crate) async fn primary(&self, except: Option<usize>, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            for (i, m) in self.members.iter().enumerate() {
                if Some(i) == except || !m.alive() {
                    continue;
                }
                if let Some(s) = m.status().await
                    && s.role == "primary"
                {
                    return i;
                }
            }
            assert!(
                start.elapsed() < limit,
                "no primary within {limit:?}; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let log = m.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                format!(
                    "--- {} ---\n{}",
                    m.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Puts `key = value` (synced) through `kv`: the token (epoch, seq) if
/// acknowledged, else the status.
pub(crate) async fn put(
    kv: &mut KvClient<Channel>,
    key: &str,
    value: &str,
) -> Result<(u64, u64), tonic::Status> {
    kv.put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        sync: true,
    })
    .await
    .map(|r| {
        let r = r.into_inner();
        (r.epoch, r.seq)
    })
}

/// The two groups of `examples/sharded/` (g1: a1, a2; g2: b1, b2) in
/// cluster `cluster`, on free ports, coordinated by `etcd`.
pub(crate) fn sharded(dir: &Path, etcd: &[String], cluster: &str, lease_ttl_ms: u64) -> Vec<Group> {
    sharded_with(dir, etcd, cluster, lease_ttl_ms, "controller = false\n")
}

/// As [`sharded`], with `extra` added to each member's `[cluster]` section.
pub(crate) fn sharded_with(
    dir: &Path,
    etcd: &[String],
    cluster: &str,
    lease_ttl_ms: u64,
    extra: &str,
) -> Vec<Group> {
    let etcd = etcd
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut groups = Vec::new();
    for (g, names) in [("g1", ["a1", "a2"]), ("g2", ["b1", "b2"])] {
        let mut members = Vec::new();
        for name in names {
            let i = match name {
                "a1" => 1,
                "a2" => 2,
                "b1" => 3,
                _ => 4,
            };
            let port = free_port();
            let metrics = free_port();
            let config = dir.join(format!("{name}.toml"));
            let data = dir.join(format!("{name}-data"));
            let example = super::node::repo()
                .join("examples/sharded")
                .join(format!("{name}.toml"));
            let mut text = std::fs::read_to_string(&example).unwrap();
            for (from, to) in [
                (format!("127.0.0.1:730{i}"), format!("127.0.0.1:{port}")),
                (format!("127.0.0.1:940{i}"), format!("127.0.0.1:{metrics}")),
                (
                    format!("\"data/{name}\""),
                    format!("{:?}", data.display().to_string()),
                ),
                ("\"http://127.0.0.1:2379\"".to_string(), etcd.clone()),
                ("\"shards\"".to_string(), format!("\"{cluster}\"")),
                (
                    "lease_ttl_ms = 3000".to_string(),
                    format!("lease_ttl_ms = {lease_ttl_ms}"),
                ),
            ] {
                assert!(
                    text.contains(from.as_str()),
                    "{} has no {from}",
                    example.display()
                );
                text = text.replace(from.as_str(), &to);
            }
            text.push_str(extra);
            text.push_str("\n[limits]\nshutdown_grace_ms = 1000\n");
            std::fs::write(&config, text).unwrap();
            members.push(Member {
                name: name.to_string(),
                config,
                log: dir.join(format!("{name}.log")),
                grpc: format!("http://127.0.0.1:{port}"),
                metrics: format!("127.0.0.1:{metrics}"),
                child: None,
                runs: 0,
            });
        }
        let _ = g;
        groups.push(Group {
            members,
            dir: dir.to_path_buf(),
        });
    }
    groups
}

/// The p50 and p99 of `samples`.
pub(crate) fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}
