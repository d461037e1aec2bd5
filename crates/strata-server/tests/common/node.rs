//! `strata serve` processes for the tests: example configs copied with
//! their ports swapped for free ones, started, killed, their logs read.
//! Shared by several test files; each uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A port free right now on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node process and where it serves.
pub(crate) struct Node {
    pub(crate) config: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) child: Option<Child>,
    /// `host:port` of `listen`.
    pub(crate) addr: String,
    /// `http://` or `https://` and `addr`.
    pub(crate) grpc: String,
    /// `host:port` of `metrics_listen`.
    pub(crate) metrics: String,
}

impl Node {
    pub(crate) fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts the node with these environment variables set.
    pub(crate) fn start_with(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::File::create(&self.log).unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_strata"))
                .envs(env.iter().copied())
                .args(["serve", "--config"])
                .arg(&self.config)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies `examples/<set>/<name>.toml` into `dir` with its ports swapped
/// (`ports`: example port -> free port) and `edit` applied.
pub(crate) fn example(
    dir: &Path,
    set: &str,
    name: &str,
    ports: &BTreeMap<&str, u16>,
    edit: impl Fn(String) -> String,
) -> Node {
    let mut text = std::fs::read_to_string(
        repo()
            .join("examples")
            .join(set)
            .join(format!("{name}.toml")),
    )
    .unwrap();
    for (from, to) in ports {
        text = text.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
    }
    let text = edit(text);
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, &text).unwrap();
    let value = |key: &str| {
        let line = text.lines().find(|l| l.starts_with(key)).unwrap();
        line.split('"').nth(1).unwrap().to_string()
    };
    let addr = value("listen");
    let scheme = if text.contains("\n[tls]") {
        "https"
    } else {
        "http"
    };
    Node {
        config,
        log: dir.join(format!("{name}.log")),
        child: None,
        grpc: format!("{scheme}://{addr}"),
        addr,
        metrics: value("metrics_listen"),
    }
}

/// The body of `GET /metrics` at `addr`.
pub(crate) fn scrape_text(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: strata\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}
