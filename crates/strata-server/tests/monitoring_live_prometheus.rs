//! A real Prometheus scrapes a real primary (archiving its log) and a
//! replica following it while a client writes and reads; every alert rule
//! loads and evaluates without error, and every alert expression and every
//! dashboard panel's query returns series.
//!
//! An alert expression returns series only when it fires, so each is
//! asked with its comparisons turned into `bool` comparisons (`a > 0.8`
//! becomes `a > bool 0.8`): the answer has a series wherever the alert
//! could fire, 0 or 1. Needs `prometheus` (Debian's `prometheus` package):
//! without it the test fails, naming the install command.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "common/node.rs"]
mod common_node;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common_node::free_port;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[&str], log: &Path) -> Process {
    let file = std::fs::File::create(log).unwrap();
    Process(
        Command::new(program)
            .args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {program} ({e}): install it with `apt-get install -y prometheus`"
                )
            }),
    )
}

fn wait_listening(addr: &str, log: &Path) {
    for _ in 0..400 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "nothing listens on {addr}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The body of `GET path` on `addr`.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Whether an instant query returns at least one series (an error answer
/// is a failure: the query does not parse or evaluate).
fn returns_series(prometheus: &str, query: &str) -> bool {
    let body = http_get(
        prometheus,
        &format!("/api/v1/query?query={}", percent_encode(query)),
    );
    assert!(
        body.contains("\"status\":\"success\""),
        "query {query:?} failed: {body}"
    );
    body.contains("\"result\":[{")
}

/// `expr` with every comparison outside label matchers made a `bool`
/// comparison.
fn with_bool_comparisons(expr: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    let mut quoted = false;
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        out.push(c);
        i += 1;
        match c {
            '"' => quoted = !quoted,
            '{' if !quoted => depth += 1,
            '}' if !quoted => depth -= 1,
            '>' | '<' | '=' | '!' if !quoted && depth == 0 => {
                let next = chars.get(i).copied();
                let two = next == Some('=');
                if two {
                    out.push('=');
                    i += 1;
                }
                if c == '>' || c == '<' || two {
                    out.push_str(" bool");
                }
            }
            _ => {}
        }
    }
    out
}

fn alert_exprs(rules: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = rules.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            let expr = lines.next().unwrap().trim().strip_prefix("expr: ").unwrap();
            out.push((name.to_string(), expr.to_string()));
        }
    }
    out
}

fn dashboard_queries(dashboard: &str) -> Vec<String> {
    // Each target is `{ "expr": "..." }` with JSON escapes for quotes.
    dashboard
        .split("\"expr\": \"")
        .skip(1)
        .map(|rest| {
            let mut expr = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => expr.push(chars.next().unwrap()),
                    '"' => break,
                    c => expr.push(c),
                }
            }
            expr.replace("$instance", ".*")
        })
        .collect()
}

#[test]
#[ignore = "needs Prometheus (apt-get install -y prometheus); .ci/run runs it with --ignored"]
fn prometheus_scrapes_a_loaded_node_and_every_alert_and_panel_has_series() {
    let dir = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/monitoring");
    let (primary, primary_metrics) = (free_port(), free_port());
    let (replica, replica_metrics) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("primary.toml"),
        format!(
            "role = \"primary\"\ndata_dir = \"primary\"\nlisten = \"127.0.0.1:{primary}\"\nmetrics_listen = \"127.0.0.1:{primary_metrics}\"\n[backup]\ndir = \"backup\"\narchive_interval_ms = 200\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("replica.toml"),
        format!(
            "role = \"replica\"\ndata_dir = \"replica\"\nlisten = \"127.0.0.1:{replica}\"\nmetrics_listen = \"127.0.0.1:{replica_metrics}\"\n[replica]\nupstream = \"http://127.0.0.1:{primary}\"\nid = \"replica-1\"\n"
        ),
    )
    .unwrap();
    let strata = env!("CARGO_BIN_EXE_strata");
    let config = |name: &str| dir.path().join(name).display().to_string();
    let _primary = spawn(
        strata,
        &["serve", "--config", &config("primary.toml")],
        &dir.path().join("primary.log"),
    );
    wait_listening(
        &format!("127.0.0.1:{primary}"),
        &dir.path().join("primary.log"),
    );
    let _replica = spawn(
        strata,
        &["serve", "--config", &config("replica.toml")],
        &dir.path().join("replica.log"),
    );
    wait_listening(
        &format!("127.0.0.1:{replica}"),
        &dir.path().join("replica.log"),
    );

    // Load: writes (some synced) and reads, until the checks are done.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                use strata_proto::v1::kv_client::KvClient;
                use strata_proto::v1::{GetRequest, PutRequest};
                let mut kv = KvClient::connect(format!("http://127.0.0.1:{primary}"))
                    .await
                    .unwrap();
                let mut n = 0u64;
                let mut writes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("key{:05}", n % 5000).into_bytes();
                    kv.put(PutRequest {
                        key: key.clone(),
                        value: vec![b'v'; 100],
                        sync: n.is_multiple_of(8),
                    })
                    .await
                    .unwrap();
                    kv.get(GetRequest {
                        key,
                        ..GetRequest::default()
                    })
                    .await
                    .unwrap();
                    n += 1;
                    writes += 1;
                }
                writes
            })
        })
    };

    let prometheus_addr = format!("127.0.0.1:{}", free_port());
    let rules = root.join("strata-alerts.yml");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: strata\n    static_configs:\n      - targets: ['127.0.0.1:{primary_metrics}', '127.0.0.1:{replica_metrics}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let prometheus_log = dir.path().join("prometheus.log");
    let _prometheus = spawn(
        "prometheus",
        &[
            &format!("--config.file={}", config("prometheus.yml")),
            &format!("--storage.tsdb.path={}", config("tsdb")),
            &format!("--web.listen-address={prometheus_addr}"),
        ],
        &prometheus_log,
    );
    wait_listening(&prometheus_addr, &prometheus_log);
    // It answers 503 until its storage is open.
    for _ in 0..200 {
        if http_get(&prometheus_addr, "/-/ready").contains("Ready") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every alert expression and dashboard query, until each has series
    // (rates need two scrapes; a bound of 45 s keeps a broken setup from
    // hanging the suite).
    let alerts = alert_exprs(&std::fs::read_to_string(&rules).unwrap());
    assert!(alerts.len() >= 23, "{alerts:?}");
    let panels =
        dashboard_queries(&std::fs::read_to_string(root.join("strata-dashboard.json")).unwrap());
    assert!(panels.len() >= 20, "{panels:?}");
    // Cluster members' alerts have series only on members (checked
    // against a member's scrape in failover_etcd.rs); these nodes are not.
    let mut pending: Vec<(String, String)> = alerts
        .iter()
        .filter(|(_, expr)| !expr.contains("strata_cluster_"))
        .map(|(name, expr)| (format!("alert {name}"), with_bool_comparisons(expr)))
        .chain(panels.iter().map(|q| ("dashboard".to_string(), q.clone())))
        .collect();
    let started = Instant::now();
    while !pending.is_empty() && started.elapsed() < Duration::from_secs(45) {
        pending.retain(|(_, query)| !returns_series(&prometheus_addr, query));
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // Both nodes scraped, every rule evaluated without error.
    assert!(returns_series(&prometheus_addr, "up{job=\"strata\"} == 1"));
    assert!(returns_series(
        &prometheus_addr,
        "count(up{job=\"strata\"} == 1) == 2"
    ));
    let rules_state = http_get(&prometheus_addr, "/api/v1/rules");
    for (name, _) in &alerts {
        assert!(
            rules_state.contains(&format!("\"name\":\"{name}\"")),
            "{name} not loaded"
        );
    }
    assert!(
        !rules_state.contains("\"health\":\"err\""),
        "a rule fails to evaluate: {rules_state}"
    );
    stop.store(true, Ordering::Relaxed);
    let writes = load.join().unwrap();
    assert!(writes > 0);
    assert!(
        pending.is_empty(),
        "no series after {:.0} s ({writes} writes) for: {pending:#?}",
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "{} alert expressions and {} dashboard queries returned series after {:.1} s, under {writes} writes",
        alerts.len(),
        panels.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn comparisons_become_bool_outside_label_matchers() {
    assert_eq!(
        with_bool_comparisons("a{x!=\"1\",y=~\"b\"} > 0.8 and b <= c"),
        "a{x!=\"1\",y=~\"b\"} > bool 0.8 and b <= bool c"
    );
    assert_eq!(with_bool_comparisons("up == 0"), "up == bool 0");
}
