//! The node's Prometheus endpoint: `GET /metrics` on `metrics_listen`.
//!
//! Two kinds of series: request latencies and counts, recorded by the Kv
//! service as requests complete (`prometheus-client` histograms and
//! counters), and the database's, replication's and ranges' figures, read
//! from `Db::stats`, `Db::ranges` and the replication state at each scrape.
//! The text is Prometheus' exposition format, ending with `# EOF`
//! (OpenMetrics). Alert rules and a dashboard over these series are in
//! `examples/monitoring/`.
//!
//! The HTTP side is deliberately tiny: one request per connection, the
//! request head read with a size cap (8 KiB) and a timeout (5 s), only
//! `GET /metrics` answered (404 otherwise).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::services::{Node, Role};

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) method: &'static str,
    pub(crate) outcome: &'static str,
}

/// Request metrics, shared by the services.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    registry: Registry,
    pub(crate) write_seconds: Histogram,
    pub(crate) read_seconds: Histogram,
    pub(crate) requests: Family<RequestLabels, Counter>,
}

impl RequestMetrics {
    /// Counts a replication call refused for its credential as outcome
    /// "denied" of its method.
    pub(crate) fn count_denied(&self, method: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                outcome: "denied",
            })
            .inc();
    }

    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        // 20 µs to about 20 s, doubling.
        let write_seconds = Histogram::new(exponential_buckets(0.000_02, 2.0, 20));
        let read_seconds = Histogram::new(exponential_buckets(0.000_02, 2.0, 20));
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "strata_write_seconds",
            "Kv.Write latency, from request to answer",
            write_seconds.clone(),
        );
        registry.register(
            "strata_read_seconds",
            "Kv.Get latency, from request to answer (waits for min_seq included)",
            read_seconds.clone(),
        );
        registry.register(
            "strata_requests",
            "Kv and Admin requests by method and outcome (ok, error, or denied: no valid credential or one without the right); Replication calls (subscribe, begin_snapshot, fetch_snapshot) when denied",
            requests.clone(),
        );
        Self {
            registry,
            write_seconds,
            read_seconds,
            requests,
        }
    }
}

fn gauge(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let series = if kind == "counter" {
        format!("{name}_total")
    } else {
        name.to_string()
    };
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{series} {value}");
        } else {
            let _ = writeln!(out, "{series}{{{labels}}} {value}");
        }
    }
}

fn one(value: impl Into<f64>) -> Vec<(String, f64)> {
    vec![(String::new(), value.into())]
}

fn label(key: &str, value: &str) -> String {
    let escaped = value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("{key}=\"{escaped}\"")
}

/// The whole scrape.
pub(crate) fn render(node: &Node) -> String {
    let mut out = String::new();
    let is_primary = matches!(node.role, Role::Primary);
    gauge(
        &mut out,
        "strata_up",
        "1 while the node serves; role label: primary or replica",
        "gauge",
        &[(
            label("role", if is_primary { "primary" } else { "replica" }),
            1.0,
        )],
    );
    gauge(
        &mut out,
        "strata_epoch",
        "The primary epoch this node serves or follows",
        "gauge",
        &one(node.epoch.get() as f64),
    );
    if let Some(db) = node.db.get() {
        let stats = db.stats();
        gauge(
            &mut out,
            "strata_last_seq",
            "Last visible sequence number",
            "gauge",
            &one(stats.last_seq.get() as f64),
        );
        gauge(
            &mut out,
            "strata_durable_seq",
            "Last durable sequence number",
            "gauge",
            &one(stats.durable_seq.get() as f64),
        );
        gauge(
            &mut out,
            "strata_poisoned",
            "1 if the database refuses writes after a failed write, sync, flush or compaction",
            "gauge",
            &one(if db.poisoned().is_some() { 1.0 } else { 0.0 }),
        );
        gauge(
            &mut out,
            "strata_wal_bytes_written",
            "Bytes appended to the commit log since start",
            "counter",
            &one(stats.wal.bytes_written as f64),
        );
        gauge(
            &mut out,
            "strata_wal_fsyncs",
            "fdatasync calls on the commit log since start",
            "counter",
            &one(stats.wal.syncs as f64),
        );
        gauge(
            &mut out,
            "strata_wal_batches",
            "Batches appended since start",
            "counter",
            &one(stats.wal.batches as f64),
        );
        gauge(
            &mut out,
            "strata_wal_groups",
            "Group commits since start (batches per group = batches / groups)",
            "counter",
            &one(stats.wal.groups as f64),
        );
        gauge(
            &mut out,
            "strata_wal_group_batches_max",
            "The largest group commit since start, in batches",
            "gauge",
            &one(stats.wal.group_batches_max as f64),
        );
        gauge(
            &mut out,
            "strata_memtable_bytes",
            "Bytes held by memtables (active and frozen)",
            "gauge",
            &one(stats.memtable_bytes as f64),
        );
        gauge(
            &mut out,
            "strata_immutable_memtables",
            "Frozen memtables waiting for flush",
            "gauge",
            &one(stats.immutable_memtables as f64),
        );
        let per_level = |values: &[u64]| -> Vec<(String, f64)> {
            values
                .iter()
                .enumerate()
                .map(|(l, v)| (label("level", &l.to_string()), *v as f64))
                .collect()
        };
        gauge(
            &mut out,
            "strata_level_tables",
            "Sorted tables per level",
            "gauge",
            &per_level(&stats.level_tables),
        );
        gauge(
            &mut out,
            "strata_level_bytes",
            "Bytes of sorted tables per level",
            "gauge",
            &per_level(&stats.level_bytes),
        );
        gauge(
            &mut out,
            "strata_flushes",
            "Flushes since start",
            "counter",
            &one(stats.flushes as f64),
        );
        gauge(
            &mut out,
            "strata_compactions",
            "Compactions since start",
            "counter",
            &one(stats.compactions as f64),
        );
        gauge(
            &mut out,
            "strata_compaction_bytes_read",
            "Bytes compactions read since start",
            "counter",
            &one(stats.compaction_bytes_read as f64),
        );
        gauge(
            &mut out,
            "strata_compaction_bytes_written",
            "Bytes compactions wrote since start",
            "counter",
            &one(stats.compaction_bytes_written as f64),
        );
        let by_reason = |map: &std::collections::BTreeMap<&'static str, u64>,
                         scale: f64|
         -> Vec<(String, f64)> {
            map.iter()
                .map(|(r, v)| (label("reason", r), *v as f64 * scale))
                .collect()
        };
        gauge(
            &mut out,
            "strata_write_stalls",
            "Writes delayed or stopped, by reason",
            "counter",
            &by_reason(&stats.stalls, 1.0),
        );
        gauge(
            &mut out,
            "strata_write_stall_seconds",
            "Seconds writes spent stalled, by reason",
            "counter",
            &by_reason(&stats.stall_micros, 1e-6),
        );
        let lookups = stats.block_cache_hits + stats.block_cache_misses;
        gauge(
            &mut out,
            "strata_block_cache_hit_ratio",
            "Block-cache hits over lookups since start",
            "gauge",
            &one(if lookups == 0 {
                1.0
            } else {
                stats.block_cache_hits as f64 / lookups as f64
            }),
        );
        let ranges = &stats.ranges;
        let per_range = |f: &dyn Fn(&strata::RangeInfo) -> f64| -> Vec<(String, f64)> {
            ranges
                .iter()
                .map(|r| (label("range", &r.id.0.to_string()), f(r)))
                .collect()
        };
        gauge(
            &mut out,
            "strata_range_table_bytes",
            "Bytes of sorted tables per key range",
            "gauge",
            &per_range(&|r| r.table_bytes as f64),
        );
        gauge(
            &mut out,
            "strata_range_tables",
            "Sorted tables per key range",
            "gauge",
            &per_range(&|r| r.level_tables.iter().sum::<u64>() as f64),
        );
        gauge(
            &mut out,
            "strata_range_writes",
            "Operations written per key range since start",
            "counter",
            &per_range(&|r| r.writes as f64),
        );
        gauge(
            &mut out,
            "strata_range_reads",
            "Reads per key range since start",
            "counter",
            &per_range(&|r| r.reads as f64),
        );
        gauge(
            &mut out,
            "strata_range_pending_compaction_bytes",
            "Bytes over the level targets per key range",
            "gauge",
            &per_range(&|r| r.pending_compaction_bytes as f64),
        );
        gauge(
            &mut out,
            "strata_range_last_applied_seq",
            "The last sequence number applied to each key range (compare across nodes for per-range lag)",
            "gauge",
            &per_range(&|r| r.last_applied_seq.get() as f64),
        );
    }
    let replicas = node.upstream.replicas();
    let per_replica =
        |f: &dyn Fn(&strata_replication::ReplicaStatus) -> f64| -> Vec<(String, f64)> {
            replicas
                .iter()
                .map(|r| (label("replica", &r.id), f(r)))
                .collect()
        };
    gauge(
        &mut out,
        "strata_replica_connected",
        "1 while the replica's stream is open",
        "gauge",
        &per_replica(&|r| if r.connected { 1.0 } else { 0.0 }),
    );
    gauge(
        &mut out,
        "strata_replica_lag_records",
        "Sequence numbers the replica is behind this node's durable log",
        "gauge",
        &per_replica(&|r| r.lag_records as f64),
    );
    gauge(
        &mut out,
        "strata_replica_lag_bytes",
        "Log bytes the replica is behind",
        "gauge",
        &per_replica(&|r| r.lag_bytes as f64),
    );
    gauge(
        &mut out,
        "strata_replica_lag_seconds",
        "How long the oldest record the replica has not acknowledged has been in flight",
        "gauge",
        &per_replica(&|r| r.lag_millis as f64 / 1000.0),
    );
    if let Role::Replica { replica, .. } = &node.role {
        let f = replica.figures();
        gauge(
            &mut out,
            "strata_follower_lag_records",
            "This replica: its upstream's durable sequence number minus its own applied one",
            "gauge",
            &one(f.upstream_durable_seq.saturating_sub(f.applied_seq) as f64),
        );
        gauge(
            &mut out,
            "strata_follower_reconnects",
            "This replica: connections retried since start",
            "counter",
            &one(f.reconnects as f64),
        );
        gauge(
            &mut out,
            "strata_follower_upstream_shutdowns",
            "This replica: streams its upstream ended because it was shutting down (reconnected with backoff; not errors) since start",
            "counter",
            &one(f.upstream_shutdowns as f64),
        );
        gauge(
            &mut out,
            "strata_follower_bootstraps",
            "This replica: snapshots installed since start",
            "counter",
            &one(f.bootstraps as f64),
        );
        gauge(
            &mut out,
            "strata_follower_refusals",
            "This replica: upstreams refused (fork, older epoch, ahead) and calls its upstream refused for its credential, since start",
            "counter",
            &one(f.refusals as f64),
        );
        gauge(
            &mut out,
            "strata_follower_credential_refusals",
            "This replica: calls its upstream refused for its credential (UNAUTHENTICATED, PERMISSION_DENIED) since start",
            "counter",
            &one(f.credential_refusals as f64),
        );
        gauge(
            &mut out,
            "strata_follower_rejected_records",
            "This replica: records refused (gap, hash mismatch, bad checksum) since start",
            "counter",
            &one((f.gaps + f.hash_mismatches + f.bad_records) as f64),
        );
    }
    let c = &node.connections;
    for (name, help, value) in [
        (
            "strata_connections_accepted",
            "Connections accepted since start",
            &c.accepted,
        ),
        (
            "strata_connections_refused",
            "Connections closed on accept because limits.max_connections were open",
            &c.refused,
        ),
        (
            "strata_connections_timed_out",
            "Connections closed because they sent nothing within limits.handshake_timeout_ms",
            &c.timed_out,
        ),
        (
            "strata_connections_tls_failed",
            "TLS handshakes that failed (refused, revoked or missing client certificates, plaintext clients) or timed out",
            &c.tls_failed,
        ),
    ] {
        gauge(
            &mut out,
            name,
            help,
            "counter",
            &one(value.load(std::sync::atomic::Ordering::Relaxed) as f64),
        );
    }
    for (name, help, value) in [
        ("strata_connections_open", "Connections open now", &c.open),
        (
            "strata_connections_open_peak",
            "The most connections open at once since start",
            &c.open_peak,
        ),
    ] {
        gauge(
            &mut out,
            name,
            help,
            "gauge",
            &one(value.load(std::sync::atomic::Ordering::Relaxed) as f64),
        );
    }
    let mut registry_text = String::new();
    if prometheus_client::encoding::text::encode(&mut registry_text, &node.metrics.registry).is_ok()
    {
        out.push_str(&registry_text);
    } else {
        out.push_str("# EOF\n");
    }
    out
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub(crate) async fn serve(listener: tokio::net::TcpListener, node: Node) {
    let node = Arc::new(node);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8 << 10 {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(buffer.get(..n).unwrap_or_default()),
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let (status, body) =
                if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
                    let node = Arc::clone(&node);
                    match tokio::task::spawn_blocking(move || render(&node)).await {
                        Ok(body) => ("200 OK", body),
                        Err(_) => ("500 Internal Server Error", String::new()),
                    }
                } else {
                    (
                        "404 Not Found",
                        "only GET /metrics is served here\n".to_string(),
                    )
                };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
