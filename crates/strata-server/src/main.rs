//! `strata`: a Strata node as a process.
//!
//! ```text
//! strata serve --config node.toml
//! ```
//!
//! `serve` checks the whole config before touching any data, opens (or
//! creates) the database, and serves `Kv`, `Admin` and `Replication` on the
//! configured address until SIGTERM or SIGINT, then ends replication
//! streams (telling replicas the node is going away), gives open calls
//! `[limits] shutdown_grace_ms` to finish, stops following (a replica),
//! flushes, syncs and closes the database, and exits. A primary takes writes and ships its log; a
//! replica follows its upstream (bootstrapping from a snapshot when it has
//! no data) and serves reads and downstream replicas.

mod backup;
mod bench;
mod certs;
mod client;
mod config;
mod connect;
mod controller;
mod dump;
mod health;
mod import;
mod inspect;
mod join;
mod listener;
mod member;
mod metrics;
mod mover;
mod moves;
mod node;
mod ownership;
mod pipeline;
mod request_metrics;
mod requests;
mod secrets;
mod services;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use strata::{Db, Options};
use strata_proto::v1::admin_server::AdminServer;
use strata_proto::v1::kv_server::KvServer;
use strata_replication::digest::DigestPoints;
use strata_replication::epoch::Epoch;
use strata_replication::{Replica, ReplicaConfig, SharedDb, Upstream, UpstreamConfig};

#[derive(Parser)]
#[command(name = "strata", version, about = "A Strata storage node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a node (primary or replica) from a config file; without one, a
    /// primary on ./strata-data serving 127.0.0.1:7001 (metrics on
    /// 127.0.0.1:9101).
    Serve {
        /// The node's TOML config (default: the built-in primary above).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a key on a running primary; prints the commit token (with
    /// several --node or --etcd: on the group's primary, as epoch:seq).
    Put {
        #[command(flatten)]
        node: client::Target,
        /// Wait until the write is durable.
        #[arg(long)]
        sync: bool,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove a key on a running primary; prints the commit token.
    Delete {
        #[command(flatten)]
        node: client::Target,
        /// Wait until the delete is durable.
        #[arg(long)]
        sync: bool,
        /// The key.
        key: String,
    },
    /// Remove every key in [START, END) on a running primary, atomically;
    /// prints the commit token.
    DeleteRange {
        #[command(flatten)]
        node: client::Target,
        /// Wait until the delete is durable.
        #[arg(long)]
        sync: bool,
        /// The first key removed.
        start: String,
        /// The first key kept after the range (exclusive).
        end: String,
    },
    /// Read keys in order (or reverse) from a running node: a range, a
    /// prefix or everything, at most --limit, at or after a commit token.
    Scan(client::ScanArgs),
    /// Read a key from a running node (primary or replica); prints the value
    /// and the sequence number the answer reflects.
    Get {
        #[command(flatten)]
        node: client::Target,
        /// Wait until the node has applied this commit token.
        #[arg(long, default_value_t = 0, conflicts_with = "token")]
        min_seq: u64,
        /// Read after this write (EPOCH:SEQ, as put prints it), from a
        /// replica whose history holds it.
        #[arg(long)]
        token: Option<strata_client::Token>,
        /// Read from any replica rather than the primary.
        #[arg(long)]
        replicas: bool,
        /// How long to wait for it, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// The key.
        key: String,
    },
    /// Ask a running node for its role, sequence numbers, epoch and
    /// replicas.
    Status {
        #[command(flatten)]
        node: connect::NodeArgs,
    },
    /// Ask a running node for the digest of its keys and values as of a
    /// sequence number (waiting until it has applied it), per key range:
    /// compare a replica with its primary, also while writes continue.
    Digest {
        #[command(flatten)]
        node: connect::NodeArgs,
        /// As of this sequence number (0: the node's current one).
        #[arg(long, default_value_t = 0)]
        seq: u64,
        /// Only keys from this one on (with --end, or to the end).
        #[arg(long)]
        start: Option<String>,
        /// Only keys below this one.
        #[arg(long)]
        end: Option<String>,
        /// How long the node may wait to reach --seq, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
    },
    /// List a running node's key ranges and their figures.
    Ranges {
        #[command(flatten)]
        node: connect::NodeArgs,
    },
    /// Split the range holding a key, online.
    Split {
        #[command(flatten)]
        node: connect::NodeArgs,
        /// The first key of the new right-hand range.
        at: String,
    },
    /// Merge two adjacent ranges (by id, left then right), online.
    Merge {
        #[command(flatten)]
        node: connect::NodeArgs,
        /// The left range's id.
        left: u64,
        /// The right range's id.
        right: u64,
    },
    /// Run a db_bench-style workload embedded (--data-dir) or against a
    /// running node (--node), with progress and latency percentiles.
    Bench(bench::BenchArgs),
    /// Decode a log segment (*.wal), a table (*.sst) or a manifest
    /// (MANIFEST-*) for humans.
    Inspect {
        /// The file.
        file: PathBuf,
        /// Every operation or entry, not only the summary.
        #[arg(long)]
        verbose: bool,
    },
    /// Check every checksum of a data directory (the node must be stopped):
    /// opens it (replaying the log), verifies every table, and reports.
    Verify {
        /// The database directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Write an openable copy of a stopped node's database into a new
    /// directory (tables hard-linked).
    Checkpoint {
        /// The database directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Where to put the copy (missing or empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// Export every key and value of a stopped node's database (or a
    /// checkpoint, or a restored database) into a portable text file
    /// (docs/format.md).
    Dump(dump::DumpArgs),
    /// Import a dump file into a new database directory or a running
    /// primary.
    Load(dump::LoadArgs),
    /// Take an online, consistent base backup of a running node into its
    /// backup directory, or of a stopped node's database into a backup
    /// directory.
    Backup(backup::BackupArgs),
    /// Rebuild a database in a new directory from a backup directory: the
    /// newest base backup before the target plus the archived log up to it.
    Restore(backup::RestoreArgs),
    /// Apply a backup directory's retention: keep the newest base backups
    /// and the archived log they need, remove the rest.
    Prune(backup::PruneArgs),
    /// Write a private CA and a certificate per node name (for TLS and
    /// mutual TLS between nodes).
    Certs(certs::CertsArgs),
    /// Write a random token into a new file (mode 0600).
    Token(certs::TokenArgs),
    /// Promote a replica to primary (it stops following and takes writes).
    Promote {
        #[command(flatten)]
        node: connect::NodeArgs,
    },
    /// Report on a cluster from etcd (`strata cluster status`).
    Cluster(client::ClusterArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(config.as_deref()),
        Command::Dump(args) => dump::dump(&args),
        Command::Load(args) => dump::load(&args),
        Command::Backup(args) => backup::backup(&args),
        Command::Restore(args) => backup::restore(&args),
        Command::Prune(args) => backup::prune(&args),
        Command::Verify { data_dir } => verify(&data_dir),
        Command::Checkpoint { data_dir, to } => checkpoint(&data_dir, &to),
        Command::Bench(args) => bench::run(args),
        Command::Certs(args) => certs::certs(&args),
        Command::Token(args) => certs::token(&args),
        Command::Inspect { file, verbose } => inspect::run(&file, verbose),
        other => client::run(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("strata: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What every listener of a node shares: TLS and the limits, set
/// explicitly: connections (bounded, silent ones closed), streams per
/// connection, keepalives so a dead or idle peer is noticed, header size
/// and reset-flood bounds, and flow-control windows: a stream may have at
/// most 256 KiB of requests unread, a connection 1 MiB (so a pipelined
/// stream whose client stopped reading leaves room for the connection's
/// other streams). Message sizes are per service; compressed messages are
/// not accepted at all (no service enables compression).
struct Limits {
    tls: Option<listener::TlsConfigCell>,
    max_connections: usize,
    handshake_timeout: std::time::Duration,
    figures: Arc<listener::ConnectionFigures>,
}

impl Limits {
    fn builder(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .concurrency_limit_per_connection(256)
            .max_concurrent_streams(Some(256))
            .tcp_keepalive(Some(std::time::Duration::from_secs(60)))
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .http2_max_header_list_size(Some(16 << 10))
            .http2_max_pending_accept_reset_streams(Some(64))
            .initial_stream_window_size(Some(256 << 10))
            .initial_connection_window_size(Some(1 << 20))
    }

    /// Serves `router` on `listener` (TLS or not) until `stop`.
    async fn serve(
        &self,
        router: tonic::transport::server::Router,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let figures = Arc::clone(&self.figures);
        match &self.tls {
            Some(tls) => {
                let incoming = listener::incoming_tls(
                    listener,
                    self.max_connections,
                    self.handshake_timeout,
                    figures,
                    tls.clone(),
                );
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
            None => {
                let incoming = listener::incoming(
                    listener,
                    self.max_connections,
                    self.handshake_timeout,
                    figures,
                );
                router.serve_with_incoming_shutdown(incoming, stop).await
            }
        }
    }
}

/// How often a node takes a digest point, and how many it keeps: digests
/// as of a sequence number reach back about 10 s.
const DIGEST_POINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
const DIGEST_POINTS: usize = 20;

/// Counts replication calls refused for their credential in
/// `strata_requests_total{outcome="denied"}`, beside Kv's and Admin's.
fn count_denied(
    metrics: &Arc<request_metrics::RequestMetrics>,
) -> strata_replication::upstream::OnDenied {
    let metrics = Arc::clone(metrics);
    strata_replication::upstream::OnDenied::new(move |method| metrics.count_denied(method))
}

fn open_existing(data_dir: &std::path::Path) -> Result<Db, String> {
    Db::open(
        data_dir,
        Options {
            create_if_missing: false,
            ..Options::default()
        },
    )
    .map_err(|e| format!("opening {}: {e}", data_dir.display()))
}

fn verify(data_dir: &std::path::Path) -> Result<(), String> {
    let started = std::time::Instant::now();
    let db = open_existing(data_dir)?;
    let report = db.recovery_report().clone();
    println!(
        "log: replayed up to seq {}{}",
        db.last_seq().get(),
        report
            .torn_tail
            .as_ref()
            .map_or(String::new(), |t| format!(" (a torn tail was cut: {t:?})"))
    );
    let tables = db
        .verify_tables()
        .map_err(|e| format!("verify failed: {e}"))?;
    let stats = db.stats();
    println!(
        "tables: {tables} verified ({} bytes), {} key ranges; every checksum and ordering rule holds ({:.1}s)",
        stats.level_bytes.iter().sum::<u64>(),
        stats.ranges.len(),
        started.elapsed().as_secs_f64()
    );
    db.close().map_err(|e| format!("closing: {e}"))
}

fn checkpoint(data_dir: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    let db = open_existing(data_dir)?;
    let seq = db
        .checkpoint(to)
        .map_err(|e| format!("checkpoint into {}: {e}", to.display()))?;
    println!(
        "checkpoint of everything up to seq {} in {}",
        seq.get(),
        to.display()
    );
    db.close().map_err(|e| format!("closing: {e}"))
}

fn serve(path: Option<&std::path::Path>) -> Result<(), String> {
    let config = match path {
        Some(path) => config::Config::load(path)?,
        None => config::Config::parse(config::DEFAULT_CONFIG)?,
    };
    // Structured logs on stderr: RUST_LOG filters (default info);
    // STRATA_LOG_FORMAT=json for one JSON object per line.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if std::env::var("STRATA_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.limits.runtime_threads())
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(run(config, path.map(std::path::Path::to_path_buf)))
}

/// On SIGHUP: reads the config file again and swaps in its `[auth]`
/// credentials (tokens re-read from their files or variables) and its
/// `[tls]` certificate, key, client CA and revocation lists (for new
/// connections). A config that fails its checks, or that would turn
/// credentials or TLS on or off, is refused and everything stays as it
/// was; other changes wait for a restart (logged).
fn reload_on_hangup(
    path: std::path::PathBuf,
    running: config::Config,
    auth: strata_replication::auth::Auth,
    tls: Option<listener::TlsConfigCell>,
) {
    tokio::spawn(async move {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot watch SIGHUP: credentials reload only with a restart");
            return;
        };
        while hangup.recv().await.is_some() {
            let reloaded = config::Config::load(&path).and_then(|fresh| {
                let (tokens, peers) = secrets::grants(&fresh.auth)?;
                let (token_count, peer_count) = (tokens.len(), peers.len());
                // Everything is read and checked before anything is swapped.
                let new_tls = match (&tls, &fresh.tls) {
                    (Some(_), Some(section)) => {
                        Some(secrets::server_tls(section, !fresh.auth.tokens.is_empty())?)
                    }
                    (None, None) => None,
                    _ => {
                        return Err(
                            "TLS cannot be turned on or off by a reload: restart the node".into(),
                        );
                    }
                };
                auth.replace(tokens, peers)?;
                if let (Some(cell), Some(config)) = (&tls, new_tls) {
                    cell.replace(config);
                }
                let mut rest = fresh;
                rest.auth = running.auth.clone();
                rest.tls = running.tls.clone();
                Ok((token_count, peer_count, rest != running))
            });
            match reloaded {
                Ok((tokens, identities, other_changes)) => {
                    tracing::info!(tokens, identities, "credentials reloaded");
                    if other_changes {
                        tracing::warn!(
                            "the config changed outside [auth] and [tls]: those changes take effect at the next restart"
                        );
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "credentials reload refused; the previous credentials stay in force");
                }
            }
        }
    });
}

async fn run(config: config::Config, path: Option<std::path::PathBuf>) -> Result<(), String> {
    let snapshots = config.data_dir.with_extension("snapshots");
    // Every certificate, key and token is read and checked before any
    // data is touched.
    let auth = secrets::auth(&config.auth)?;
    let server_tls = config
        .tls
        .as_ref()
        .map(|tls| secrets::server_tls(tls, !config.auth.tokens.is_empty()))
        .transpose()?
        .map(listener::TlsConfigCell::new);
    let connections = Arc::new(listener::ConnectionFigures::default());
    // The built-in config has no file to read again.
    if let Some(path) = path {
        reload_on_hangup(path, config.clone(), auth.clone(), server_tls.clone());
    }
    let request_metrics = Arc::new(request_metrics::RequestMetrics::new());
    // Every fsync of the database's files is timed (strata_fsync_seconds).
    let engine_options = {
        let mut options = config.engine.options();
        options.file_system = Arc::new(health::TimedFileSystem::new(
            Arc::clone(&options.file_system),
            request_metrics.fsync_seconds.clone(),
        ));
        options
    };
    let mut member: Option<join::Started> = None;
    let (node, replica) = match config.role {
        config::Role::Member => {
            let started = join::start(
                &config,
                engine_options.clone(),
                &snapshots,
                auth.clone(),
                count_denied(&request_metrics),
                Arc::clone(&request_metrics),
                Arc::clone(&connections),
            )?;
            let node = started.node.clone();
            member = Some(started);
            (node, None)
        }
        config::Role::Primary => {
            let db = Db::open(&config.data_dir, engine_options.clone())
                .map_err(|e| format!("opening {}: {e}", config.data_dir.display()))?;
            let epoch =
                Epoch::open(&config.data_dir).map_err(|e| format!("reading the epoch: {e}"))?;
            let db = SharedDb::new(db);
            let mut upstream_config = UpstreamConfig::new(&snapshots);
            upstream_config.auth = auth.clone();
            upstream_config.on_denied = Some(count_denied(&request_metrics));
            let upstream = Upstream::new(db.clone(), epoch.clone(), upstream_config);
            (
                node::Node {
                    digest_points: Arc::new(DigestPoints::new(db.clone(), DIGEST_POINTS)),
                    db,
                    epoch,
                    upstream,
                    role: Arc::new(arc_swap::ArcSwap::from_pointee(node::Role::Primary)),
                    cluster: None,
                    metrics: Arc::clone(&request_metrics),
                    auth: auth.clone(),
                    connections: Arc::clone(&connections),
                    inline_writers: Arc::new(tokio::sync::Semaphore::new(node::inline_writers(
                        config.limits.runtime_threads(),
                    ))),
                },
                None,
            )
        }
        config::Role::Replica => {
            let section = config
                .replica
                .clone()
                .ok_or("role = \"replica\" needs a [replica] section")?;
            let mut replica_config = ReplicaConfig::new(
                section.upstream.clone(),
                section.id.clone(),
                &config.data_dir,
            );
            replica_config.ranges = section.intervals();
            replica_config.options = engine_options.clone();
            replica_config.tls = section
                .tls
                .as_ref()
                .map(secrets::client_tls)
                .transpose()
                .map_err(|e| format!("[replica.tls]: {e}"))?;
            replica_config.token =
                secrets::replica_token(&section).map_err(|e| format!("[replica]: {e}"))?;
            let replica = Arc::new(
                Replica::start(replica_config).map_err(|e| format!("starting the replica: {e}"))?,
            );
            let mut upstream_config = UpstreamConfig::new(&snapshots);
            upstream_config.holds_ranges = section.intervals();
            upstream_config.auth = auth.clone();
            upstream_config.on_denied = Some(count_denied(&request_metrics));
            let upstream = Upstream::new(replica.db(), replica.epoch(), upstream_config);
            (
                node::Node {
                    digest_points: Arc::new(DigestPoints::new(replica.db(), DIGEST_POINTS)),
                    db: replica.db(),
                    epoch: replica.epoch(),
                    upstream,
                    role: Arc::new(arc_swap::ArcSwap::from_pointee(node::Role::Replica {
                        replica: Arc::clone(&replica),
                        upstream: section.upstream,
                    })),
                    cluster: None,
                    metrics: Arc::clone(&request_metrics),
                    auth: auth.clone(),
                    connections: Arc::clone(&connections),
                    inline_writers: Arc::new(tokio::sync::Semaphore::new(node::inline_writers(
                        config.limits.runtime_threads(),
                    ))),
                },
                Some(replica),
            )
        }
    };
    let points = Arc::clone(&node.digest_points);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(DIGEST_POINT_INTERVAL);
        loop {
            every.tick().await;
            points.record();
        }
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", config.listen))?;
    // Backups: the archiver thread and the Backup service.
    let archive_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let archive = config.backup.as_ref().map(|section| {
        Arc::new(backup::ArchiveState::new(
            section.dir.clone(),
            config.data_dir.clone(),
            section.archive_interval(),
            section.segment_bytes(),
            section.log_hold_bytes_max(),
        ))
    });
    let archiver = archive.as_ref().map(|state| {
        tracing::info!(dir = %config.backup.as_ref().map(|b| b.dir.display().to_string()).unwrap_or_default(), "archiving the log");
        backup::start_archiver(Arc::clone(state), node.db.clone(), Arc::clone(&archive_stop))
    });
    if let Some(addr) = config.metrics_listen {
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("listening for metrics on {addr}: {e}"))?;
        let registry = metrics::registry(&node, config.data_dir.clone(), archive.clone());
        tokio::spawn(metrics::serve(metrics_listener, registry));
        tracing::info!(%addr, "serving metrics at /metrics");
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<KvServer<node::Node>>().await;
    health
        .set_serving::<strata_proto::v1::replication_server::ReplicationServer<Upstream>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("building gRPC reflection: {e}"))?;
    // After a clean stop, nothing (everything was flushed).
    let replayed_batches = node
        .db
        .get()
        .map_or(0, |db| db.recovery_report().batches_replayed);
    tracing::info!(
        role = ?config.role,
        listen = %config.listen,
        replayed_batches,
        data_dir = %config.data_dir.display(),
        tls = server_tls.is_some(),
        credentials_required = auth.is_required(),
        "serving"
    );
    // One stop signal for every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let limits = Limits {
        tls: server_tls.clone(),
        max_connections: config.limits.max_connections(),
        handshake_timeout: config.limits.handshake_timeout(),
        figures: Arc::clone(&connections),
    };
    // With replication_listen, the replication service is served there
    // only (a firewall can then keep clients off it); else on `listen`.
    let separate = match config.replication_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("listening for replication on {addr}: {e}"))?,
        ),
        None => None,
    };
    let batch_limit = config.engine.options().batch_bytes_max;
    let main_router = limits
        .builder()
        .add_service(health_service.clone())
        .add_service(reflection)
        .add_optional_service(separate.is_none().then(|| node.upstream.service()))
        .add_service(
            KvServer::new(node.clone())
                .max_decoding_message_size(batch_limit + (1 << 20))
                .max_encoding_message_size(64 << 20),
        )
        .add_service(
            AdminServer::new(node.clone())
                .max_decoding_message_size(1 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .add_optional_service(node.sharded().map(|_| {
            strata_proto::v1::range_moves_server::RangeMovesServer::new(node.clone())
                .max_decoding_message_size(1 << 20)
        }))
        .add_optional_service(archive.as_ref().map(|state| {
            strata_proto::v1::backup_server::BackupServer::new(backup::BackupService {
                node: node.clone(),
                state: Arc::clone(state),
            })
        }));
    let main = limits.serve(main_router, listener, stopped(stop_rx.clone()));
    let replication = async {
        match separate {
            Some(listener) => {
                tracing::info!(addr = %config.replication_listen.map(|a| a.to_string()).unwrap_or_default(), "serving replication on its own listener");
                let router = limits
                    .builder()
                    .add_service(health_service)
                    .add_service(node.upstream.service());
                limits
                    .serve(router, listener, stopped(stop_rx.clone()))
                    .await
            }
            None => Ok(()),
        }
    };
    // On the stop signal: replication streams are ended at once (they
    // would otherwise keep the graceful shutdown waiting forever), other
    // calls get the grace period to finish, then everything still open is
    // dropped.
    let grace = config.limits.shutdown_grace();
    let upstream = node.upstream.clone();
    let mut stop_seen = stop_rx.clone();
    let grace_over = async move {
        let _ = stop_seen.wait_for(|stop| *stop).await;
        let streams = upstream.open_streams();
        tracing::info!(
            replication_streams = streams,
            grace_ms = grace.as_millis() as u64,
            "stopping: ending replication streams, open calls have the grace period to finish"
        );
        upstream.shut_down();
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        (main, replication) = async { tokio::join!(main, replication) } => {
            main.map_err(|e| format!("serving: {e}"))?;
            replication.map_err(|e| format!("serving replication: {e}"))?;
        }
        () = grace_over => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "calls still open after the grace period are dropped"
            );
        }
    }
    if let Some(member) = member {
        // Hands the group over at once (the key is deleted, the lease
        // revoked) and stops following.
        member.stop(grace).await;
    }
    if let Some(replica) = replica
        && tokio::time::timeout(grace, replica.stop()).await.is_err()
    {
        tracing::warn!("the replica did not stop following within the grace period");
    }
    // The archiver copies everything durable before the database closes
    // (the close releases the log it pinned).
    if let Some(archiver) = archiver {
        archive_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if tokio::task::spawn_blocking(move || archiver.join())
            .await
            .is_err()
        {
            tracing::warn!("the archiver ended abnormally");
        }
    }
    // Flush and sync: the next start replays no log.
    node.digest_points.clear();
    let db = node.db.clone();
    drop(node);
    tokio::task::spawn_blocking(move || db.close(std::time::Duration::from_secs(5)))
        .await
        .map_err(|e| format!("closing: {e}"))?
        .map_err(|e| format!("closing the database: {e}"))?;
    tracing::info!("stopped cleanly (flushed, synced, closed)");
    Ok(())
}
