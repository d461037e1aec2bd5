//! The node's Prometheus endpoint: `GET /metrics` on `metrics_listen`.
//!
//! Every series is registered once, at start, in one `prometheus-client`
//! registry, and rendered by the library (OpenMetrics text, ending with
//! `# EOF`):
//!
//! - request latencies and counts, recorded by the Kv service as requests
//!   complete, and fsync latencies, recorded by the node's file system
//!   ([`crate::health::TimedFileSystem`]): histograms and counters;
//! - everything read at scrape time (the database's, replication's and
//!   ranges' figures, the process and the disk, the archiver): one table,
//!   [`scraped_series`], of name, help, type and a function from one
//!   [`Scrape`] to samples, walked by a `prometheus-client` collector.
//!
//! Served by an axum router over hyper's HTTP/1 connections (both already
//! in the tree through tonic), with bounds on connections, request heads
//! and connection lifetime; only `GET /metrics` is answered, anything else
//! is 404. Alert rules and a
//! dashboard over these series are in `examples/monitoring/`.
//!
//! Thread safety: the registry is immutable after start and shared by
//! every request; a scrape takes its figures under no lock of this module
//! (`Db::stats` and the replication state take their own).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::health::{DiskFigures, ProcessFigures};
use crate::node::{Node, Role};

/// One sample: its labels and its value.
type Sample = (Vec<(&'static str, String)>, f64);

/// Whether a scraped series is a gauge or a counter (rendered `_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gauge,
    Counter,
}

/// One series read at scrape time.
struct Series {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    read: fn(&Scrape<'_>) -> Vec<Sample>,
}

/// Everything a scrape reads, read once per scrape.
pub(crate) struct Scrape<'a> {
    node: &'a Node,
    stats: Option<strata::DbStats>,
    poisoned: bool,
    replicas: Vec<strata_replication::ReplicaStatus>,
    follower: Option<strata_replication::ReplicaFigures>,
    process: Option<ProcessFigures>,
    disk: Option<DiskFigures>,
    memory_limit_bytes: Option<u64>,
    archive: Option<crate::backup::ArchiveFigures>,
}

fn one(value: f64) -> Vec<Sample> {
    vec![(Vec::new(), value)]
}

/// A figure of the database, absent while a replica has none.
fn db(scrape: &Scrape<'_>, f: fn(&strata::DbStats) -> f64) -> Vec<Sample> {
    scrape.stats.as_ref().map(|s| one(f(s))).unwrap_or_default()
}

fn per_level(scrape: &Scrape<'_>, f: fn(&strata::DbStats) -> &[u64]) -> Vec<Sample> {
    scrape
        .stats
        .as_ref()
        .map(|s| {
            f(s).iter()
                .enumerate()
                .map(|(level, v)| (vec![("level", level.to_string())], *v as f64))
                .collect()
        })
        .unwrap_or_default()
}

fn per_reason(
    scrape: &Scrape<'_>,
    f: fn(&strata::DbStats) -> &std::collections::BTreeMap<&'static str, u64>,
    scale: f64,
) -> Vec<Sample> {
    scrape
        .stats
        .as_ref()
        .map(|s| {
            f(s).iter()
                .map(|(reason, v)| (vec![("reason", (*reason).to_string())], *v as f64 * scale))
                .collect()
        })
        .unwrap_or_default()
}

fn per_range(scrape: &Scrape<'_>, f: fn(&strata::RangeInfo) -> f64) -> Vec<Sample> {
    scrape
        .stats
        .as_ref()
        .map(|s| {
            s.ranges
                .iter()
                .map(|r| (vec![("range", r.id.0.to_string())], f(r)))
                .collect()
        })
        .unwrap_or_default()
}

fn per_replica(
    scrape: &Scrape<'_>,
    f: fn(&strata_replication::ReplicaStatus) -> f64,
) -> Vec<Sample> {
    scrape
        .replicas
        .iter()
        .map(|r| (vec![("replica", r.id.clone())], f(r)))
        .collect()
}

fn follower(scrape: &Scrape<'_>, f: fn(&strata_replication::ReplicaFigures) -> f64) -> Vec<Sample> {
    scrape
        .follower
        .as_ref()
        .map(|r| one(f(r)))
        .unwrap_or_default()
}

fn process(scrape: &Scrape<'_>, f: fn(&ProcessFigures) -> f64) -> Vec<Sample> {
    scrape
        .process
        .as_ref()
        .map(|p| one(f(p)))
        .unwrap_or_default()
}

fn disk(scrape: &Scrape<'_>, f: fn(&DiskFigures) -> f64) -> Vec<Sample> {
    scrape.disk.as_ref().map(|d| one(f(d))).unwrap_or_default()
}

fn archive(scrape: &Scrape<'_>, f: fn(&crate::backup::ArchiveFigures) -> f64) -> Vec<Sample> {
    scrape
        .archive
        .as_ref()
        .map(|a| one(f(a)))
        .unwrap_or_default()
}

/// One sample for a cluster member, labeled with its group; none for a
/// node outside a cluster.
fn member(
    scrape: &Scrape<'_>,
    f: fn(&crate::member::Membership, &strata_cluster::AgentStatus) -> f64,
) -> Vec<Sample> {
    scrape.node.cluster.as_ref().map_or_else(Vec::new, |m| {
        let status = m.status.borrow().clone();
        vec![(vec![("group", m.group.clone())], f(m, &status))]
    })
}

/// A sample of a sharded member's ownership (none otherwise).
fn sharded(scrape: &Scrape<'_>, f: fn(&crate::ownership::Ownership) -> f64) -> Vec<Sample> {
    scrape.node.sharded().map_or_else(Vec::new, |o| {
        vec![(vec![("group", o.group().to_string())], f(o))]
    })
}

fn connections(
    scrape: &Scrape<'_>,
    f: fn(&crate::listener::ConnectionFigures) -> u64,
) -> Vec<Sample> {
    one(f(&scrape.node.connections) as f64)
}

/// Every series read at scrape time. Counters are named without `_total`
/// (the library adds it).
#[allow(clippy::too_many_lines, reason = "one table entry per series")]
fn scraped_series() -> Vec<Series> {
    use Kind::{Counter, Gauge};
    vec![
        Series {
            name: "strata_up",
            help: "1 while the node serves; role label: primary or replica",
            kind: Gauge,
            read: |s| {
                let role = match &*s.node.role() {
                    Role::Primary => "primary",
                    Role::Replica { .. } => "replica",
                    Role::Standby => "standby",
                };
                vec![(vec![("role", role.to_string())], 1.0)]
            },
        },
        Series {
            name: "strata_cluster_primary",
            help: "A cluster member: 1 while it is its group's primary (holding a valid lease)",
            kind: Gauge,
            read: |s| {
                member(s, |m, st| {
                    f64::from(u8::from(st.primary && !m.lease_left().is_zero()))
                })
            },
        },
        Series {
            name: "strata_cluster_primary_known",
            help: "A cluster member: 1 while it knows its group's primary (itself or the one it follows)",
            kind: Gauge,
            read: |s| member(s, |_, st| f64::from(u8::from(st.primary_node.is_some()))),
        },
        Series {
            name: "strata_cluster_lease_seconds_left",
            help: "A primary member: time left before its lease can no longer be proven (0 otherwise)",
            kind: Gauge,
            read: |s| member(s, |m, _| m.lease_left().as_secs_f64()),
        },
        Series {
            name: "strata_cluster_promotions",
            help: "Elections this member won (each a failover or first start of its group)",
            kind: Counter,
            read: |s| member(s, |_, st| st.promotions as f64),
        },
        Series {
            name: "strata_cluster_leaderships_lost",
            help: "Times this member was fenced: its lease could no longer be proven",
            kind: Counter,
            read: |s| member(s, |_, st| st.fenced as f64),
        },
        Series {
            name: "strata_cluster_handovers",
            help: "Planned switchovers this member handed its group over in",
            kind: Counter,
            read: |s| member(s, |_, st| st.handovers as f64),
        },
        Series {
            name: "strata_cluster_fenced_writes",
            help: "Writes refused or not acknowledged because the lease could not be proven (or during a switchover's drain)",
            kind: Counter,
            read: |s| {
                member(s, |m, _| {
                    m.fenced_writes.load(std::sync::atomic::Ordering::Relaxed) as f64
                })
            },
        },
        Series {
            name: "strata_cluster_not_primary_writes",
            help: "Writes refused because this member is not its group's primary",
            kind: Counter,
            read: |s| {
                member(s, |m, _| {
                    m.not_primary_writes
                        .load(std::sync::atomic::Ordering::Relaxed) as f64
                })
            },
        },
        Series {
            name: "strata_cluster_discarded_records",
            help: "Sequence numbers of this member's own history that no later epoch kept, discarded when it rejoined (acknowledged writes only with min_sync_replicas = 0)",
            kind: Counter,
            read: |s| {
                member(s, |m, _| {
                    m.discarded_records
                        .load(std::sync::atomic::Ordering::Relaxed) as f64
                })
            },
        },
        Series {
            name: "strata_cluster_coordinator_errors",
            help: "Calls to etcd that failed (each retried at the next tick)",
            kind: Counter,
            read: |s| member(s, |_, st| st.coordinator_errors as f64),
        },
        Series {
            name: "strata_cluster_map_revision",
            help: "A sharded member: the etcd revision of the range map it routes by (0: none yet)",
            kind: Gauge,
            read: |s| sharded(s, |o| o.map().map_or(0.0, |m| m.revision() as f64)),
        },
        Series {
            name: "strata_cluster_ranges_owned",
            help: "A sharded member: ranges of the map its group owns",
            kind: Gauge,
            read: |s| {
                sharded(s, |o| {
                    o.map().map_or(0.0, |m| {
                        m.entries().iter().filter(|e| e.group == o.group()).count() as f64
                    })
                })
            },
        },
        Series {
            name: "strata_cluster_frozen_ranges",
            help: "A sharded primary: ranges frozen for a move's cut-over now",
            kind: Gauge,
            read: |s| sharded(s, |o| o.frozen_count() as f64),
        },
        Series {
            name: "strata_cluster_wrong_group_requests",
            help: "Requests refused because their keys are in ranges of another group",
            kind: Counter,
            read: |s| {
                sharded(s, |o| {
                    o.wrong_group.load(std::sync::atomic::Ordering::Relaxed) as f64
                })
            },
        },
        Series {
            name: "strata_cluster_range_moving_writes",
            help: "Writes refused because their range was frozen for a move's cut-over",
            kind: Counter,
            read: |s| {
                sharded(s, |o| {
                    o.moving.load(std::sync::atomic::Ordering::Relaxed) as f64
                })
            },
        },
        Series {
            name: "strata_epoch",
            help: "The primary epoch this node serves or follows",
            kind: Gauge,
            read: |s| one(s.node.epoch.get() as f64),
        },
        Series {
            name: "strata_last_seq",
            help: "Last visible sequence number",
            kind: Gauge,
            read: |s| db(s, |d| d.last_seq.get() as f64),
        },
        Series {
            name: "strata_durable_seq",
            help: "Last durable sequence number",
            kind: Gauge,
            read: |s| db(s, |d| d.durable_seq.get() as f64),
        },
        Series {
            name: "strata_poisoned",
            help: "1 if the database refuses writes after a failed write, sync, flush or compaction",
            kind: Gauge,
            read: |s| {
                if s.stats.is_some() {
                    one(if s.poisoned { 1.0 } else { 0.0 })
                } else {
                    Vec::new()
                }
            },
        },
        Series {
            name: "strata_wal_bytes_written",
            help: "Bytes appended to the commit log since start",
            kind: Counter,
            read: |s| db(s, |d| d.wal.bytes_written as f64),
        },
        Series {
            name: "strata_wal_fsyncs",
            help: "fdatasync calls on the commit log since start",
            kind: Counter,
            read: |s| db(s, |d| d.wal.syncs as f64),
        },
        Series {
            name: "strata_wal_batches",
            help: "Batches appended since start",
            kind: Counter,
            read: |s| db(s, |d| d.wal.batches as f64),
        },
        Series {
            name: "strata_wal_groups",
            help: "Group commits since start (batches per group = batches / groups)",
            kind: Counter,
            read: |s| db(s, |d| d.wal.groups as f64),
        },
        Series {
            name: "strata_wal_group_batches_max",
            help: "The largest group commit since start, in batches",
            kind: Gauge,
            read: |s| db(s, |d| d.wal.group_batches_max as f64),
        },
        Series {
            name: "strata_memtable_bytes",
            help: "Bytes held by memtables (active and frozen)",
            kind: Gauge,
            read: |s| db(s, |d| d.memtable_bytes as f64),
        },
        Series {
            name: "strata_immutable_memtables",
            help: "Frozen memtables waiting for flush",
            kind: Gauge,
            read: |s| db(s, |d| d.immutable_memtables as f64),
        },
        Series {
            name: "strata_level_tables",
            help: "Sorted tables per level",
            kind: Gauge,
            read: |s| per_level(s, |d| &d.level_tables),
        },
        Series {
            name: "strata_level_bytes",
            help: "Bytes of sorted tables per level",
            kind: Gauge,
            read: |s| per_level(s, |d| &d.level_bytes),
        },
        Series {
            name: "strata_flushes",
            help: "Flushes since start",
            kind: Counter,
            read: |s| db(s, |d| d.flushes as f64),
        },
        Series {
            name: "strata_compactions",
            help: "Compactions since start",
            kind: Counter,
            read: |s| db(s, |d| d.compactions as f64),
        },
        Series {
            name: "strata_compaction_bytes_read",
            help: "Bytes compactions read since start",
            kind: Counter,
            read: |s| db(s, |d| d.compaction_bytes_read as f64),
        },
        Series {
            name: "strata_compaction_bytes_written",
            help: "Bytes compactions wrote since start",
            kind: Counter,
            read: |s| db(s, |d| d.compaction_bytes_written as f64),
        },
        Series {
            name: "strata_write_stalls",
            help: "Writes delayed or stopped, by reason",
            kind: Counter,
            read: |s| per_reason(s, |d| &d.stalls, 1.0),
        },
        Series {
            name: "strata_write_stall_seconds",
            help: "Seconds writes spent stalled, by reason",
            kind: Counter,
            read: |s| per_reason(s, |d| &d.stall_micros, 1e-6),
        },
        Series {
            name: "strata_block_cache_hit_ratio",
            help: "Block-cache hits over lookups since start",
            kind: Gauge,
            read: |s| {
                db(s, |d| {
                    let lookups = d.block_cache_hits + d.block_cache_misses;
                    if lookups == 0 {
                        1.0
                    } else {
                        d.block_cache_hits as f64 / lookups as f64
                    }
                })
            },
        },
        Series {
            name: "strata_range_table_bytes",
            help: "Bytes of sorted tables per key range",
            kind: Gauge,
            read: |s| per_range(s, |r| r.table_bytes as f64),
        },
        Series {
            name: "strata_range_tables",
            help: "Sorted tables per key range",
            kind: Gauge,
            read: |s| per_range(s, |r| r.level_tables.iter().sum::<u64>() as f64),
        },
        Series {
            name: "strata_range_writes",
            help: "Operations written per key range since start",
            kind: Counter,
            read: |s| per_range(s, |r| r.writes as f64),
        },
        Series {
            name: "strata_range_reads",
            help: "Reads per key range since start",
            kind: Counter,
            read: |s| per_range(s, |r| r.reads as f64),
        },
        Series {
            name: "strata_range_pending_compaction_bytes",
            help: "Bytes over the level targets per key range",
            kind: Gauge,
            read: |s| per_range(s, |r| r.pending_compaction_bytes as f64),
        },
        Series {
            name: "strata_range_last_applied_seq",
            help: "The last sequence number applied to each key range (compare across nodes for per-range lag)",
            kind: Gauge,
            read: |s| per_range(s, |r| r.last_applied_seq.get() as f64),
        },
        Series {
            name: "strata_replica_connected",
            help: "1 while the replica's stream is open",
            kind: Gauge,
            read: |s| per_replica(s, |r| if r.connected { 1.0 } else { 0.0 }),
        },
        Series {
            name: "strata_replica_lag_records",
            help: "Sequence numbers the replica is behind this node's durable log",
            kind: Gauge,
            read: |s| per_replica(s, |r| r.lag_records as f64),
        },
        Series {
            name: "strata_replica_lag_bytes",
            help: "Log bytes the replica is behind",
            kind: Gauge,
            read: |s| per_replica(s, |r| r.lag_bytes as f64),
        },
        Series {
            name: "strata_replica_lag_seconds",
            help: "How long the oldest record the replica has not acknowledged has been in flight",
            kind: Gauge,
            read: |s| per_replica(s, |r| r.lag_millis as f64 / 1000.0),
        },
        Series {
            name: "strata_follower_lag_records",
            help: "This replica: its upstream's durable sequence number minus its own applied one",
            kind: Gauge,
            read: |s| {
                follower(s, |f| {
                    f.upstream_durable_seq.saturating_sub(f.applied_seq) as f64
                })
            },
        },
        Series {
            name: "strata_follower_reconnects",
            help: "This replica: connections retried since start",
            kind: Counter,
            read: |s| follower(s, |f| f.reconnects as f64),
        },
        Series {
            name: "strata_follower_upstream_shutdowns",
            help: "This replica: streams its upstream ended because it was shutting down (reconnected with backoff; not errors) since start",
            kind: Counter,
            read: |s| follower(s, |f| f.upstream_shutdowns as f64),
        },
        Series {
            name: "strata_follower_bootstraps",
            help: "This replica: snapshots installed since start",
            kind: Counter,
            read: |s| follower(s, |f| f.bootstraps as f64),
        },
        Series {
            name: "strata_follower_refusals",
            help: "This replica: upstreams refused (fork, older epoch, ahead) and calls its upstream refused for its credential, since start",
            kind: Counter,
            read: |s| follower(s, |f| f.refusals as f64),
        },
        Series {
            name: "strata_follower_credential_refusals",
            help: "This replica: calls its upstream refused for its credential (UNAUTHENTICATED, PERMISSION_DENIED) since start",
            kind: Counter,
            read: |s| follower(s, |f| f.credential_refusals as f64),
        },
        Series {
            name: "strata_follower_rejected_records",
            help: "This replica: records refused (gap, hash mismatch, bad checksum) since start",
            kind: Counter,
            read: |s| follower(s, |f| (f.gaps + f.hash_mismatches + f.bad_records) as f64),
        },
        Series {
            name: "strata_connections_accepted",
            help: "Connections accepted since start",
            kind: Counter,
            read: |s| connections(s, |c| c.accepted.load(Ordering::Relaxed)),
        },
        Series {
            name: "strata_connections_refused",
            help: "Connections closed on accept because limits.max_connections were open",
            kind: Counter,
            read: |s| connections(s, |c| c.refused.load(Ordering::Relaxed)),
        },
        Series {
            name: "strata_connections_timed_out",
            help: "Connections closed because they sent nothing within limits.handshake_timeout_ms",
            kind: Counter,
            read: |s| connections(s, |c| c.timed_out.load(Ordering::Relaxed)),
        },
        Series {
            name: "strata_connections_tls_failed",
            help: "TLS handshakes that failed (refused, revoked or missing client certificates, plaintext clients) or timed out",
            kind: Counter,
            read: |s| connections(s, |c| c.tls_failed.load(Ordering::Relaxed)),
        },
        Series {
            name: "strata_connections_open",
            help: "Connections open now",
            kind: Gauge,
            read: |s| connections(s, |c| c.open.load(Ordering::Relaxed)),
        },
        Series {
            name: "strata_connections_open_peak",
            help: "The most connections open at once since start",
            kind: Gauge,
            read: |s| connections(s, |c| c.open_peak.load(Ordering::Relaxed)),
        },
        // The process, under the names every Prometheus client library uses.
        Series {
            name: "process_cpu_seconds",
            help: "User and system CPU time of the node process, in seconds",
            kind: Counter,
            read: |s| process(s, |p| p.cpu_seconds),
        },
        Series {
            name: "process_resident_memory_bytes",
            help: "Resident memory of the node process",
            kind: Gauge,
            read: |s| process(s, |p| p.resident_bytes as f64),
        },
        Series {
            name: "process_virtual_memory_bytes",
            help: "Virtual memory of the node process",
            kind: Gauge,
            read: |s| process(s, |p| p.virtual_bytes as f64),
        },
        Series {
            name: "process_open_fds",
            help: "Open file descriptors of the node process",
            kind: Gauge,
            read: |s| process(s, |p| p.open_fds as f64),
        },
        Series {
            name: "process_max_fds",
            help: "The node process's soft limit on open file descriptors",
            kind: Gauge,
            read: |s| {
                s.process
                    .and_then(|p| p.max_fds)
                    .map(|m| one(m as f64))
                    .unwrap_or_default()
            },
        },
        Series {
            name: "process_threads",
            help: "Threads of the node process",
            kind: Gauge,
            read: |s| process(s, |p| p.threads as f64),
        },
        Series {
            name: "strata_cpu_cores",
            help: "CPU cores the node may use (affinity and cgroup quota included): CPU use is rate(process_cpu_seconds_total) / this",
            kind: Gauge,
            read: |_| one(crate::health::cpu_cores() as f64),
        },
        Series {
            name: "strata_memory_limit_bytes",
            help: "Memory the node may use: its cgroup limit, else the machine's memory",
            kind: Gauge,
            read: |s| {
                s.memory_limit_bytes
                    .map(|m| one(m as f64))
                    .unwrap_or_default()
            },
        },
        Series {
            name: "strata_data_dir_bytes",
            help: "Bytes of the files in the node's data directory",
            kind: Gauge,
            read: |s| disk(s, |d| d.data_bytes as f64),
        },
        Series {
            name: "strata_filesystem_size_bytes",
            help: "Size of the file system holding the data directory",
            kind: Gauge,
            read: |s| disk(s, |d| d.filesystem_bytes as f64),
        },
        Series {
            name: "strata_filesystem_free_bytes",
            help: "Bytes the node may still write on the file system holding the data directory",
            kind: Gauge,
            read: |s| disk(s, |d| d.filesystem_free_bytes as f64),
        },
        Series {
            name: "strata_archive_last_seq",
            help: "The last sequence number copied to the archive (with [backup] configured)",
            kind: Gauge,
            read: |s| archive(s, |a| a.last_seq as f64),
        },
        Series {
            name: "strata_archive_segments",
            help: "Archive segments written since start",
            kind: Counter,
            read: |s| archive(s, |a| a.segments as f64),
        },
        Series {
            name: "strata_archive_bytes",
            help: "Bytes written to the archive since start",
            kind: Counter,
            read: |s| archive(s, |a| a.bytes as f64),
        },
        Series {
            name: "strata_archive_errors",
            help: "Archiving attempts that failed since start (the archiver retries; a gap needs a new base backup)",
            kind: Counter,
            read: |s| archive(s, |a| a.errors as f64),
        },
        Series {
            name: "strata_archive_gaps",
            help: "Times since start the archiver found the log no longer holding what the archive lacked (a gap: restores cannot cross it; take a new base backup)",
            kind: Counter,
            read: |s| archive(s, |a| a.gaps as f64),
        },
        Series {
            name: "strata_archive_last_success_timestamp_seconds",
            help: "When the archiver last caught up with the durable log (Unix time)",
            kind: Gauge,
            read: |s| archive(s, |a| a.last_success_unix_ms as f64 / 1000.0),
        },
        Series {
            name: "strata_backup_last_seq",
            help: "The sequence number of the newest base backup in the backup directory",
            kind: Gauge,
            read: |s| archive(s, |a| a.backup_seq as f64),
        },
    ]
}

/// The collector that walks [`scraped_series`] at each scrape.
struct NodeCollector {
    node: Node,
    data_dir: PathBuf,
    archive: Option<Arc<crate::backup::ArchiveState>>,
    series: Vec<Series>,
}

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCollector")
            .field("series", &self.series.len())
            .finish()
    }
}

impl NodeCollector {
    fn scrape(&self) -> Scrape<'_> {
        let db = self.node.db.get();
        Scrape {
            node: &self.node,
            stats: db.as_ref().map(|d| d.stats()),
            poisoned: db.as_ref().is_some_and(|d| d.poisoned().is_some()),
            replicas: self.node.upstream.replicas(),
            follower: match &*self.node.role() {
                Role::Replica { replica, .. } => Some(replica.figures()),
                Role::Primary | Role::Standby => None,
            },
            process: crate::health::process(),
            disk: crate::health::disk(&self.data_dir),
            memory_limit_bytes: crate::health::memory_limit_bytes(),
            archive: self.archive.as_ref().map(|a| a.figures()),
        }
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let scrape = self.scrape();
        for series in &self.series {
            let samples = (series.read)(&scrape);
            if samples.is_empty() {
                continue;
            }
            let metric_type = match series.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
            };
            let mut metric =
                encoder.encode_descriptor(series.name, series.help, None, metric_type)?;
            match samples.as_slice() {
                [(labels, value)] if labels.is_empty() => {
                    encode_value(series.kind, *value, metric)?
                }
                _ => {
                    for (labels, value) in &samples {
                        encode_value(series.kind, *value, metric.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn encode_value(
    kind: Kind,
    value: f64,
    sample: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    match kind {
        Kind::Gauge => ConstGauge::new(value).encode(sample),
        Kind::Counter => ConstCounter::new(value).encode(sample),
    }
}

/// The registry of a node: every series, registered once.
pub(crate) fn registry(
    node: &Node,
    data_dir: PathBuf,
    archive: Option<Arc<crate::backup::ArchiveState>>,
) -> Registry {
    let mut registry = Registry::default();
    let m = &node.metrics;
    registry.register(
        "strata_write_seconds",
        "Kv.Write latency, from request to answer",
        m.write_seconds.clone(),
    );
    registry.register(
        "strata_read_seconds",
        "Kv.Get latency, from request to answer (waits for min_seq included)",
        m.read_seconds.clone(),
    );
    registry.register(
        "strata_requests",
        "Kv and Admin requests by method and outcome (ok, error, or denied: no valid credential or one without the right); Replication calls (subscribe, begin_snapshot, fetch_snapshot) when denied",
        m.requests.clone(),
    );
    registry.register(
        "strata_fsync_seconds",
        "fsync (fdatasync) latency of the database's files, by kind: wal, table, directory, other",
        m.fsync_seconds.clone(),
    );
    registry.register_collector(Box::new(NodeCollector {
        node: node.clone(),
        data_dir,
        archive,
        series: scraped_series(),
    }));
    registry
}

/// The whole scrape, as OpenMetrics text.
pub(crate) fn render(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        text.clear();
        text.push_str("# EOF\n");
    }
    text
}

async fn metrics_page(
    axum::extract::State(registry): axum::extract::State<Arc<Registry>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::task::spawn_blocking(move || render(&registry)).await {
        Ok(body) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Connections the metrics endpoint serves at once; more are closed on
/// accept.
const CONNECTIONS_MAX: usize = 64;
/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection stays open (Prometheus reconnects).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(600);

/// Serves `GET /metrics` from `registry` on `listener` until the process
/// ends: the axum router over hyper's HTTP/1 connections, at most
/// [`CONNECTIONS_MAX`] at once, a request head within [`HEADER_TIMEOUT`]
/// and 16 KiB, each connection closed after [`CONNECTION_LIFETIME`].
pub(crate) async fn serve(listener: tokio::net::TcpListener, registry: Registry) {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_page))
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                "only GET /metrics is served here\n",
            )
        })
        .with_state(Arc::new(registry));
    let service = hyper_util::service::TowerToHyperService::new(app);
    let permits = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            continue; // dropping the stream closes it
        };
        let service = service.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 << 10)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn only_metrics_is_served_and_connections_are_bounded() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Registry::default()));
        let page = get(addr, "/metrics").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("application/openmetrics-text"), "{page}");
        assert!(page.trim_end().ends_with("# EOF"), "{page}");
        assert!(get(addr, "/").await.starts_with("HTTP/1.1 404"));
        assert!(get(addr, "/metricsx").await.starts_with("HTTP/1.1 404"));

        // CONNECTIONS_MAX silent connections hold every slot: the next one
        // is closed at once, before it sends anything.
        let mut idle = Vec::new();
        for _ in 0..CONNECTIONS_MAX {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(extra.read(&mut byte).await.unwrap_or(0), 0);
        // A silent connection is closed once its head is overdue.
        let mut silent = idle.pop().unwrap();
        assert_eq!(silent.read(&mut byte).await.unwrap_or(0), 0);
        drop(idle);
    }
}
