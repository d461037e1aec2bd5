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
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: strata\r\nConnection: close\r\n\r\n")
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

/// `name{labels}` -> value for every sample line of a scrape.
pub(crate) fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// The `expr:` of the alert named `alert` in `examples/monitoring/strata-alerts.yml`.
pub(crate) fn alert_expr(alert: &str) -> String {
    let rules =
        std::fs::read_to_string(repo().join("examples/monitoring/strata-alerts.yml")).unwrap();
    let mut lines = rules
        .lines()
        .skip_while(|l| l.trim() != format!("- alert: {alert}"));
    assert!(lines.next().is_some(), "no alert {alert}");
    let expr = lines.next().unwrap().trim();
    expr.strip_prefix("expr:").unwrap().trim().to_string()
}

/// Whether an alert expression of the shapes the rules use for counters,
/// `increase(SELECTOR[W]) > N` or `sum by (L) (increase(SELECTOR[W])) > N`
/// (SELECTOR: a name with `label="v"` and `label=~"a|b"` matchers), holds
/// between two scrapes of one node taken within the window: the increase is
/// the later value minus the earlier (0 for a series not yet there), summed
/// over the matching series.
pub(crate) fn counter_alert_fires(
    expr: &str,
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> bool {
    let (lhs, threshold) = expr.rsplit_once(" > ").unwrap();
    let threshold: f64 = threshold.trim().parse().unwrap();
    let inner = lhs
        .trim()
        .strip_prefix("sum by (instance) (")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(lhs.trim());
    let selector = inner
        .strip_prefix("increase(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a counter alert: {expr}"));
    let selector = selector.rsplit_once('[').unwrap().0;
    let (name, matchers) = match selector.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}').unwrap()),
        None => (selector, ""),
    };
    let matchers: Vec<(String, bool, Vec<String>)> = matchers
        .split(',')
        .filter(|m| !m.is_empty())
        .map(|m| {
            let (label, regex, value) = match m.split_once("=~") {
                Some((label, value)) => (label, true, value),
                None => {
                    let (label, value) = m.split_once('=').unwrap();
                    (label, false, value)
                }
            };
            let value = value.trim_matches('"');
            let choices = if regex {
                value.split('|').map(String::from).collect()
            } else {
                vec![value.to_string()]
            };
            (label.trim().to_string(), regex, choices)
        })
        .collect();
    let matches = |series: &str| {
        let (series_name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap_or(rest)),
            None => (series, ""),
        };
        series_name == name
            && matchers.iter().all(|(label, _, choices)| {
                labels.split(',').any(|pair| {
                    pair.split_once('=').is_some_and(|(l, v)| {
                        l == label && choices.iter().any(|c| c == v.trim_matches('"'))
                    })
                })
            })
    };
    let increase: f64 = after
        .iter()
        .filter(|(series, _)| matches(series))
        .map(|(series, value)| value - before.get(series).copied().unwrap_or(0.0))
        .sum();
    increase > threshold
}
