//! A node's configuration: one TOML file, checked whole before any data is
//! touched (unknown keys, wrong types, missing sections and impossible
//! combinations are refused with a message naming the key).
//!
//! ```toml
//! role = "replica"                 # "primary" or "replica"
//! data_dir = "data/replica-1"
//! listen = "127.0.0.1:7002"        # Kv, Admin and Replication
//! metrics_listen = "127.0.0.1:9102" # optional: Prometheus GET /metrics
//! replication_listen = "127.0.0.1:7012" # optional: replication apart from Kv/Admin
//!
//! [replica]                        # only for role = "replica"
//! upstream = "http://127.0.0.1:7001"
//! id = "replica-1"
//!
//! [[replica.ranges]]               # optional: hold only these key ranges
//! start = "eu/"
//! end = "eu0"                      # optional: unbounded without it
//!
//! [replica.tls]                    # with an https:// upstream
//! ca = "certs/ca.pem"              # the CA that signs the upstream's certificate
//! cert = "certs/replica-1.pem"     # optional: this replica's certificate (mutual TLS)
//! key = "certs/replica-1.key"      # its key (mode 0600)
//! server_name = "primary"          # optional: the name the upstream's certificate must carry
//!
//! [tls]                            # optional: TLS on `listen`
//! cert = "certs/node.pem"
//! key = "certs/node.key"           # refused if readable by group or others
//! client_ca = "certs/ca.pem"       # optional: verify client certificates
//! client_crl = "certs/ca.crl"      # optional: refuse the certificates it revokes
//!
//! [[auth.tokens]]                  # optional: tokens accepted (any: one is required)
//! name = "app"                     # a label; for role "replica" the replica id
//! role = "client"                  # client, admin or replica
//! file = "secrets/app.token"       # or env = "STRATA_APP_TOKEN" (never inline)
//!
//! [[auth.replicas]]                # optional: mutual-TLS identities that may replicate
//! identity = "replica-1"           # a DNS name in the certificate's SAN
//!
//! [limits]                         # optional: connection limits
//! max_connections = 4096
//! handshake_timeout_ms = 10000     # TLS handshake / first byte
//! shutdown_grace_ms = 5000         # SIGTERM/SIGINT: how long open calls may finish
//! runtime_threads = 2              # threads answering requests
//!
//! [engine]                         # optional: sync policy and limits
//! sync_interval_ms = 10            # background log sync (absent: none)
//! memtable_bytes = 67108864
//! block_cache_bytes = 67108864
//! key_bytes_max = 65536
//! value_bytes_max = 8388608
//! batch_bytes_max = 16777216       # at most 16 MiB (one replication message)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What `strata serve` without `--config` runs: a primary on
/// `./strata-data` (relative to the working directory), serving Kv, Admin
/// and Replication on 127.0.0.1:7001 (the client commands' default) and
/// metrics on 127.0.0.1:9101.
pub(crate) const DEFAULT_CONFIG: &str = r#"
role = "primary"
data_dir = "strata-data"
listen = "127.0.0.1:7001"
metrics_listen = "127.0.0.1:9101"
"#;

/// The node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// Takes writes and ships its log.
    Primary,
    /// Follows an upstream and serves reads.
    Replica,
    /// A member of a cluster (`[cluster]`): primary or replica as the
    /// election through etcd decides.
    Member,
}

/// `[cluster]`: the etcd a member is coordinated through, and who it is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterSection {
    /// etcd client URLs (`http://127.0.0.1:2379`).
    pub(crate) etcd: Vec<String>,
    /// The cluster's name (two clusters may share one etcd).
    pub(crate) name: String,
    /// This node's range group (a primary and its replicas).
    pub(crate) group: String,
    /// This node's name (also its replica id on the primary).
    pub(crate) node: String,
    /// Where other members and clients reach this node (default
    /// `http://{listen}`; `https://` with `[tls]`).
    pub(crate) advertise: Option<String>,
    /// The keys' prefix in etcd (default `strata`).
    pub(crate) prefix: Option<String>,
    /// The lease's time to live in milliseconds (default 3000; 500 to
    /// 60000): how long a stopped primary leaves the group without one.
    pub(crate) lease_ttl_ms: Option<u64>,
    /// Added to etcd's revision to make the epoch (default 0), for a group
    /// whose data carries an epoch from before the cluster.
    pub(crate) epoch_base: Option<u64>,
    /// Replicas that must confirm every write before it is acknowledged
    /// (default 1): with 1 or more no acknowledged write is lost by a
    /// failover; with 0 a failover may lose the unshipped tail (counted as
    /// discarded records when the old primary rejoins).
    pub(crate) min_sync_replicas: Option<u32>,
    /// How long a write waits for those replicas, in milliseconds (default
    /// 2000); past it the write is answered "outcome unknown".
    pub(crate) sync_timeout_ms: Option<u64>,
    /// TLS to the primary, when members serve `https://`.
    pub(crate) tls: Option<ClientTlsSection>,
    /// A file holding the replica token this node presents to the primary.
    pub(crate) token_file: Option<PathBuf>,
    /// An environment variable holding it.
    pub(crate) token_env: Option<String>,
    /// Whether the cluster spreads key ranges over several groups by the
    /// range map in etcd (default false: this group holds every key).
    /// A sharded member takes writes and serves reads only for ranges the
    /// map gives its group.
    pub(crate) sharded: Option<bool>,
    /// A sharded member: whether it may run the placement controller (the
    /// members campaign for it in etcd; one runs it). Default true.
    pub(crate) controller: Option<bool>,
    /// How often the controller acts, in milliseconds (default 10000;
    /// 100 to 3600000).
    pub(crate) controller_interval_ms: Option<u64>,
    /// The controller splits a range holding more bytes than this
    /// (default 67108864).
    pub(crate) split_bytes: Option<u64>,
    /// ... or taking more writes per second than this (default 5000).
    pub(crate) split_writes_per_sec: Option<u64>,
    /// It moves a range when the most and least loaded groups' loads
    /// differ by more than this, in percent (each load a share of bytes
    /// plus a share of writes, 0 to 200; default 30).
    pub(crate) balance_gap_percent: Option<u32>,
    /// A file holding the admin token the placement controller presents
    /// to the primaries (`RangeMoves` needs an admin credential); without
    /// it, or `controller_token_env`, the member's replica token, which
    /// works only on nodes that require no credentials.
    pub(crate) controller_token_file: Option<PathBuf>,
    /// An environment variable holding it.
    pub(crate) controller_token_env: Option<String>,
}

impl ClusterSection {
    /// The lease's time to live.
    pub(crate) fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ttl_ms.unwrap_or(3000))
    }

    /// The replicas every write waits for.
    pub(crate) fn min_sync_replicas(&self) -> u32 {
        self.min_sync_replicas.unwrap_or(1)
    }

    fn check(&self, listen: SocketAddr, tls: bool) -> Result<(), String> {
        if self.etcd.is_empty() {
            return Err("cluster.etcd lists no endpoint".into());
        }
        for url in &self.etcd {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "cluster.etcd: {url:?} must start with http:// or https://"
                ));
            }
        }
        for (what, name) in [
            ("cluster.name", &self.name),
            ("cluster.group", &self.group),
            ("cluster.node", &self.node),
        ] {
            strata_cluster::check_name("name", name).map_err(|e| format!("{what}: {e}"))?;
        }
        if let Some(prefix) = &self.prefix {
            strata_cluster::ClusterKeys::new(prefix, &self.name)
                .map_err(|e| format!("cluster.prefix: {e}"))?;
        }
        if let Some(ms) = self.lease_ttl_ms
            && !(500..=60_000).contains(&ms)
        {
            return Err(format!(
                "cluster.lease_ttl_ms = {ms} is outside 500..=60000"
            ));
        }
        if let Some(ms) = self.sync_timeout_ms
            && !(10..=60_000).contains(&ms)
        {
            return Err(format!(
                "cluster.sync_timeout_ms = {ms} is outside 10..=60000"
            ));
        }
        if self.min_sync_replicas.is_some_and(|n| n > 16) {
            return Err("cluster.min_sync_replicas is at most 16".into());
        }
        if let Some(advertise) = &self.advertise
            && !(advertise.starts_with("http://") || advertise.starts_with("https://"))
        {
            return Err(format!(
                "cluster.advertise = {advertise:?} must start with http:// or https://"
            ));
        }
        if self.token_file.is_some() && self.token_env.is_some() {
            return Err("[cluster]: give token_file or token_env, not both".into());
        }
        if self.controller_token_file.is_some() && self.controller_token_env.is_some() {
            return Err(
                "[cluster]: give controller_token_file or controller_token_env, not both".into(),
            );
        }
        if self.split_bytes == Some(0) {
            return Err("cluster.split_bytes must be positive".into());
        }
        if self.balance_gap_percent.is_some_and(|p| p > 200) {
            return Err("cluster.balance_gap_percent is at most 200".into());
        }
        let _ = (listen, tls);
        Ok(())
    }

    /// The address others reach this node at.
    pub(crate) fn advertised(&self, listen: SocketAddr, tls: bool) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| format!("{}://{listen}", if tls { "https" } else { "http" }))
    }
}

/// The `[replica]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplicaSection {
    /// The upstream's address (`http://host:port`).
    pub(crate) upstream: String,
    /// This replica's id on the upstream.
    pub(crate) id: String,
    /// The key ranges to hold (empty: all).
    #[serde(default)]
    pub(crate) ranges: Vec<KeyRangeSection>,
    /// TLS to the upstream (required for an `https://` upstream).
    pub(crate) tls: Option<ClientTlsSection>,
    /// A file holding this replica's token for the upstream.
    pub(crate) token_file: Option<PathBuf>,
    /// An environment variable holding this replica's token.
    pub(crate) token_env: Option<String>,
}

/// `[replica.tls]`: how a replica checks its upstream and proves itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientTlsSection {
    /// The CA certificate (PEM) the upstream's certificate must chain to.
    pub(crate) ca: PathBuf,
    /// This replica's certificate (PEM), for mutual TLS.
    pub(crate) cert: Option<PathBuf>,
    /// Its private key (PEM); refused if readable by group or others.
    pub(crate) key: Option<PathBuf>,
    /// The name the upstream's certificate must carry (default: the
    /// upstream's host).
    pub(crate) server_name: Option<String>,
}

/// `[tls]`: TLS on the node's `listen` address.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerTlsSection {
    /// The node's certificate chain (PEM).
    pub(crate) cert: PathBuf,
    /// Its private key (PEM); refused if readable by group or others.
    pub(crate) key: PathBuf,
    /// A CA certificate (PEM): client certificates signed by it are
    /// verified (mutual TLS); without it none are asked for.
    pub(crate) client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM) from that CA: client
    /// certificates they list are refused at the handshake.
    pub(crate) client_crl: Option<PathBuf>,
}

/// `[auth]`: the credentials the node accepts. With none, anyone who can
/// connect may do anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSection {
    /// Bearer tokens.
    #[serde(default)]
    pub(crate) tokens: Vec<TokenSection>,
    /// Mutual-TLS identities allowed to replicate.
    #[serde(default)]
    pub(crate) replicas: Vec<PeerSection>,
}

/// One `[[auth.tokens]]` entry. The token itself never appears in the
/// config: it comes from a file or an environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenSection {
    /// A label (logs, metrics); for a replica token, the replica id it may
    /// subscribe as.
    pub(crate) name: String,
    /// `client`, `admin` or `replica`.
    pub(crate) role: AccessRole,
    /// A file holding the token (one line; refused if readable by group or
    /// others).
    pub(crate) file: Option<PathBuf>,
    /// An environment variable holding the token.
    pub(crate) env: Option<String>,
    /// For a replica token: the key ranges it may ask for (empty: all).
    #[serde(default)]
    pub(crate) ranges: Vec<KeyRangeSection>,
}

/// One `[[auth.replicas]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeerSection {
    /// A DNS name the replica's certificate carries in its SAN (also the
    /// replica id it may subscribe as).
    pub(crate) identity: String,
    /// The key ranges it may ask for (empty: all).
    #[serde(default)]
    pub(crate) ranges: Vec<KeyRangeSection>,
}

/// A credential's role in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AccessRole {
    /// Kv reads and writes, Admin reads.
    Client,
    /// Also Admin changes.
    Admin,
    /// Replication only.
    Replica,
}

/// `[limits]`: connection limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsSection {
    /// Connections open at once; more are closed on accept (default 4096).
    pub(crate) max_connections: Option<u64>,
    /// How long a new connection may take to finish its TLS handshake (or,
    /// in plaintext, to send its first byte) before it is closed, in
    /// milliseconds (default 10000).
    pub(crate) handshake_timeout_ms: Option<u64>,
    /// On SIGTERM or SIGINT, how long open calls (replication streams,
    /// which are ended at once, and reads waiting for `min_seq`) may take
    /// to finish before they are dropped and the database is closed, in
    /// milliseconds (default 5000).
    pub(crate) shutdown_grace_ms: Option<u64>,
    /// Threads that serve the network: read requests, answer the reads
    /// and unsynced writes that wait for nothing, write answers (default
    /// 2; 1 to 64). Synced writes, waiting reads and scans use a separate
    /// pool; the engine's flushes and compactions their own threads.
    pub(crate) runtime_threads: Option<u64>,
}

impl LimitsSection {
    /// Connections open at once.
    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections.map_or(4096, |v| v as usize)
    }

    /// The handshake / first-byte deadline.
    pub(crate) fn handshake_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.handshake_timeout_ms.unwrap_or(10_000))
    }

    /// How long a stopping node waits for open calls.
    pub(crate) fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.shutdown_grace_ms.unwrap_or(5_000))
    }

    /// The threads serving the network.
    pub(crate) fn runtime_threads(&self) -> usize {
        self.runtime_threads.map_or(2, |v| v as usize)
    }
}

/// The intervals of a list of range sections.
pub(crate) fn intervals(ranges: &[KeyRangeSection]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    ranges
        .iter()
        .map(|r| {
            (
                r.start.as_bytes().to_vec(),
                r.end.as_ref().map(|e| e.as_bytes().to_vec()),
            )
        })
        .collect()
}

/// One `[[replica.ranges]]` entry: `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyRangeSection {
    /// The first key.
    pub(crate) start: String,
    /// The first key after the range; unbounded without it.
    pub(crate) end: Option<String>,
}

impl ReplicaSection {
    /// The ranges as byte intervals.
    pub(crate) fn intervals(&self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        intervals(&self.ranges)
    }
}

/// A node's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Primary or replica.
    pub(crate) role: Role,
    /// The database directory (relative paths are relative to the config
    /// file's directory).
    pub(crate) data_dir: PathBuf,
    /// Where the node serves its gRPC services.
    pub(crate) listen: SocketAddr,
    /// Where the node serves Prometheus metrics (`GET /metrics`); none
    /// without it.
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Where the node serves the replication service, apart from the
    /// client API (same TLS and credentials); without it, on `listen`.
    pub(crate) replication_listen: Option<SocketAddr>,
    /// For a replica: whom it follows.
    pub(crate) replica: Option<ReplicaSection>,
    /// For a cluster member: its etcd, cluster, group and name.
    pub(crate) cluster: Option<ClusterSection>,
    /// Durability and limits (all optional).
    #[serde(default)]
    pub(crate) engine: EngineSection,
    /// TLS on `listen`.
    pub(crate) tls: Option<ServerTlsSection>,
    /// Credentials the node accepts.
    #[serde(default)]
    pub(crate) auth: AuthSection,
    /// Connection limits.
    #[serde(default)]
    pub(crate) limits: LimitsSection,
    /// Backups and continuous archiving of the log.
    pub(crate) backup: Option<BackupSection>,
    /// Accept a non-loopback `listen` / `metrics_listen` without TLS. Off
    /// by default: a node's ports carry every write and the whole database,
    /// so plaintext on a network must be asked for plainly.
    #[serde(default)]
    pub(crate) allow_plaintext_non_loopback: bool,
}

/// `[backup]`: where base backups and the archived log go, and how often
/// the archiver copies the log's tail.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupSection {
    /// The backup directory (relative to the config file): `base/` and
    /// `log/`. Not inside `data_dir`.
    pub(crate) dir: PathBuf,
    /// How often the archiver syncs and copies new records, in
    /// milliseconds (default 1000; 10–600,000): at most this much of the
    /// newest log is not yet archived.
    pub(crate) archive_interval_ms: Option<u64>,
    /// The largest archive segment, in bytes (default 16 MiB; 4 KiB–1 GiB).
    pub(crate) segment_bytes: Option<u64>,
    /// While archiving fails, the most log the node keeps for the archive,
    /// in bytes (default 1 GiB; 1 MiB–1 TiB): past it the node stops
    /// holding its log (the archive gets a gap) rather than fill its disk.
    pub(crate) log_hold_bytes_max: Option<u64>,
}

impl BackupSection {
    /// The archiver's interval.
    pub(crate) fn archive_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.archive_interval_ms.unwrap_or(1000))
    }

    /// The largest archive segment.
    pub(crate) fn segment_bytes(&self) -> usize {
        self.segment_bytes.map_or(16 << 20, |b| b as usize)
    }

    /// The most log held for a failing archiver.
    pub(crate) fn log_hold_bytes_max(&self) -> u64 {
        self.log_hold_bytes_max.unwrap_or(1 << 30)
    }

    fn check(&self, data_dir: &Path) -> Result<(), String> {
        if let Some(bytes) = self.log_hold_bytes_max
            && !(1 << 20..=1 << 40).contains(&bytes)
        {
            return Err(format!(
                "backup.log_hold_bytes_max = {bytes} is outside 1048576..=1099511627776"
            ));
        }
        if let Some(ms) = self.archive_interval_ms
            && !(10..=600_000).contains(&ms)
        {
            return Err(format!(
                "backup.archive_interval_ms = {ms} is outside 10..=600000"
            ));
        }
        if let Some(bytes) = self.segment_bytes
            && !(4096..=1 << 30).contains(&bytes)
        {
            return Err(format!(
                "backup.segment_bytes = {bytes} is outside 4096..=1073741824"
            ));
        }
        if self.dir.starts_with(data_dir) || data_dir.starts_with(&self.dir) {
            return Err(format!(
                "backup.dir {} and data_dir {} must not contain each other",
                self.dir.display(),
                data_dir.display()
            ));
        }
        Ok(())
    }
}

/// The `[engine]` section: sync policy and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EngineSection {
    /// Sync the log in the background every this many milliseconds (0 or
    /// absent: only when a write asks, and as replication needs).
    pub(crate) sync_interval_ms: Option<u64>,
    /// Memtable size before a flush, in bytes.
    pub(crate) memtable_bytes: Option<u64>,
    /// Block cache size, in bytes.
    pub(crate) block_cache_bytes: Option<u64>,
    /// The size a commit-log segment grows to before the next one starts,
    /// in bytes (default 64 MiB): the unit the log is released in.
    pub(crate) wal_segment_bytes: Option<u64>,
    /// The longest key, in bytes.
    pub(crate) key_bytes_max: Option<u64>,
    /// The longest value, in bytes (default 8 MiB).
    pub(crate) value_bytes_max: Option<u64>,
    /// The largest batch, in bytes (default and most 16 MiB: what
    /// replication ships in one message).
    pub(crate) batch_bytes_max: Option<u64>,
}

impl EngineSection {
    /// The database options these settings give.
    pub(crate) fn options(&self) -> strata::Options {
        let mut options = strata::Options::default();
        if let Some(ms) = self.sync_interval_ms.filter(|&ms| ms > 0) {
            options.wal_sync_interval = Some(std::time::Duration::from_millis(ms));
        }
        let size = |v: Option<u64>, d: usize| v.map_or(d, |v| v as usize);
        options.memtable_bytes_max = size(self.memtable_bytes, options.memtable_bytes_max);
        options.block_cache_bytes = self.block_cache_bytes.unwrap_or(options.block_cache_bytes);
        options.wal_segment_bytes_max = self
            .wal_segment_bytes
            .unwrap_or(options.wal_segment_bytes_max);
        options.key_bytes_max = size(self.key_bytes_max, options.key_bytes_max);
        // A node's default leaves room for the key in a batch replication
        // can ship: 8 MiB values in 16 MiB batches.
        options.value_bytes_max = size(self.value_bytes_max, 8 << 20);
        options.batch_bytes_max = size(self.batch_bytes_max, 16 << 20);
        options
    }

    fn check(&self) -> Result<(), String> {
        let within = |name: &str, value: Option<u64>, min: u64, max: u64| match value {
            Some(v) if v < min || v > max => {
                Err(format!("engine.{name} = {v} is outside {min}..={max}"))
            }
            _ => Ok(()),
        };
        within("sync_interval_ms", self.sync_interval_ms, 0, 60_000)?;
        within("memtable_bytes", self.memtable_bytes, 64 << 10, 4 << 30)?;
        within("block_cache_bytes", self.block_cache_bytes, 0, 1 << 40)?;
        within(
            "wal_segment_bytes",
            self.wal_segment_bytes,
            1 << 20,
            1 << 30,
        )?;
        within("key_bytes_max", self.key_bytes_max, 1, 1 << 20)?;
        within("value_bytes_max", self.value_bytes_max, 0, 64 << 20)?;
        within("batch_bytes_max", self.batch_bytes_max, 1 << 10, 16 << 20)?;
        let options = self.options();
        if options.key_bytes_max + options.value_bytes_max > options.batch_bytes_max {
            return Err(format!(
                "engine: key_bytes_max + value_bytes_max ({}) exceed batch_bytes_max ({}): a single put could never be written",
                options.key_bytes_max + options.value_bytes_max,
                options.batch_bytes_max
            ));
        }
        options.validate().map_err(|e| format!("engine: {e}"))
    }
}

impl Config {
    /// Reads and checks a config file.
    ///
    /// # Errors
    /// A message naming the file and what is wrong.
    pub(crate) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let mut config =
            Self::parse(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
        if let Some(dir) = path.parent() {
            config.resolve_paths(dir);
        }
        Ok(config)
    }

    /// Parses and checks config text.
    ///
    /// # Errors
    /// A message naming the key that is wrong.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    /// Makes every relative path in the config relative to `dir` (the
    /// config file's directory).
    fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        if let Some(backup) = &mut self.backup {
            fix(&mut backup.dir);
        }
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
            tls.client_ca.as_mut().map(fix);
            tls.client_crl.as_mut().map(fix);
        }
        for token in &mut self.auth.tokens {
            token.file.as_mut().map(fix);
        }
        if let Some(cluster) = &mut self.cluster {
            cluster.token_file.as_mut().map(fix);
            cluster.controller_token_file.as_mut().map(fix);
            if let Some(tls) = &mut cluster.tls {
                fix(&mut tls.ca);
                tls.cert.as_mut().map(fix);
                tls.key.as_mut().map(fix);
            }
        }
        if let Some(replica) = &mut self.replica {
            replica.token_file.as_mut().map(fix);
            if let Some(tls) = &mut replica.tls {
                fix(&mut tls.ca);
                tls.cert.as_mut().map(fix);
                tls.key.as_mut().map(fix);
            }
        }
    }

    fn check_security(&self) -> Result<(), String> {
        for (i, token) in self.auth.tokens.iter().enumerate() {
            let at = format!("auth.tokens[{i}] ({:?})", token.name);
            match (&token.file, &token.env) {
                (Some(_), Some(_)) => {
                    return Err(format!("{at}: give file or env, not both"));
                }
                (None, None) => {
                    return Err(format!(
                        "{at}: needs file or env (a token is never written in the config)"
                    ));
                }
                _ => {}
            }
            if token.name.is_empty() {
                return Err(format!("{at}: name is empty"));
            }
            if token.role == AccessRole::Replica
                && !strata_replication::upstream::valid_replica_id(&token.name)
            {
                return Err(format!(
                    "{at}: a replica token's name is the replica id it may use: 1 to 128 bytes of [A-Za-z0-9._-]"
                ));
            }
            if token.role != AccessRole::Replica && !token.ranges.is_empty() {
                return Err(format!("{at}: ranges limit replica tokens only"));
            }
            strata_replication::check_intervals(&intervals(&token.ranges))
                .map_err(|e| format!("{at}.ranges: {e}"))?;
        }
        for (i, peer) in self.auth.replicas.iter().enumerate() {
            let at = format!("auth.replicas[{i}]");
            if !strata_replication::upstream::valid_replica_id(&peer.identity) {
                return Err(format!(
                    "{at}: identity must be 1 to 128 bytes of [A-Za-z0-9._-] (it is also the replica id)"
                ));
            }
            strata_replication::check_intervals(&intervals(&peer.ranges))
                .map_err(|e| format!("{at}.ranges: {e}"))?;
        }
        if !self.auth.replicas.is_empty() && self.tls.as_ref().is_none_or(|t| t.client_ca.is_none())
        {
            return Err(
                "auth.replicas needs [tls] with client_ca: identities come from verified client certificates"
                    .into(),
            );
        }
        if let Some(tls) = &self.tls
            && tls.client_crl.is_some()
            && tls.client_ca.is_none()
        {
            return Err(
                "tls.client_crl needs tls.client_ca (the CA whose revocations it lists)".into(),
            );
        }
        if let Some(replica) = &self.replica {
            let https = replica.upstream.starts_with("https://");
            match (&replica.tls, https) {
                (Some(_), false) => {
                    return Err("[replica.tls] needs an https:// replica.upstream".into());
                }
                (None, true) => {
                    return Err(
                        "an https:// replica.upstream needs [replica.tls] with the upstream's ca"
                            .into(),
                    );
                }
                _ => {}
            }
            if let Some(tls) = &replica.tls
                && tls.cert.is_some() != tls.key.is_some()
            {
                return Err("[replica.tls]: cert and key go together".into());
            }
            if replica.token_file.is_some() && replica.token_env.is_some() {
                return Err("[replica]: give token_file or token_env, not both".into());
            }
        }
        let limits = &self.limits;
        if let Some(n) = limits.max_connections
            && !(16..=1_000_000).contains(&n)
        {
            return Err(format!(
                "limits.max_connections = {n} is outside 16..=1000000"
            ));
        }
        if let Some(ms) = limits.handshake_timeout_ms
            && !(100..=300_000).contains(&ms)
        {
            return Err(format!(
                "limits.handshake_timeout_ms = {ms} is outside 100..=300000"
            ));
        }
        if let Some(ms) = limits.shutdown_grace_ms
            && !(100..=300_000).contains(&ms)
        {
            return Err(format!(
                "limits.shutdown_grace_ms = {ms} is outside 100..=300000"
            ));
        }
        if let Some(threads) = limits.runtime_threads
            && !(1..=64).contains(&threads)
        {
            return Err(format!(
                "limits.runtime_threads = {threads} is outside 1..=64"
            ));
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        self.check_security()?;
        if let Some(backup) = &self.backup {
            backup.check(&self.data_dir)?;
        }
        match (self.role, &self.cluster) {
            (Role::Member, None) => {
                return Err(
                    "role = \"member\" needs a [cluster] section (etcd, name, group, node)".into(),
                );
            }
            (Role::Member, Some(cluster)) => {
                cluster.check(self.listen, self.tls.is_some())?;
            }
            (_, Some(_)) => {
                return Err("a [cluster] section is only for role = \"member\"".into());
            }
            (_, None) => {}
        }
        match (self.role, &self.replica) {
            (Role::Primary | Role::Member, Some(_)) => {
                return Err("a [replica] section is only for role = \"replica\"".into());
            }
            (Role::Replica, None) => {
                return Err(
                    "role = \"replica\" needs a [replica] section with upstream and id".into(),
                );
            }
            (Role::Replica, Some(replica)) => {
                let upstream = replica
                    .upstream
                    .strip_prefix("http://")
                    .or_else(|| replica.upstream.strip_prefix("https://"))
                    .ok_or("replica.upstream must start with http:// or https://")?;
                let own = self.listen.to_string();
                if upstream.trim_end_matches('/') == own {
                    return Err(format!(
                        "replica.upstream {} is this node's own listen address: a replica cannot follow itself",
                        replica.upstream
                    ));
                }
                if !strata_replication::upstream::valid_replica_id(&replica.id) {
                    return Err("replica.id must be 1 to 128 bytes of [A-Za-z0-9._-]".into());
                }
                strata_replication::check_intervals(&replica.intervals())
                    .map_err(|e| format!("replica.ranges: {e}"))?;
            }
            (Role::Primary | Role::Member, None) => {}
        }
        self.engine.check()?;
        if self.data_dir.as_os_str().is_empty() {
            return Err("data_dir is empty".into());
        }
        if self.listen.port() == 0 {
            return Err("listen needs a fixed port (not 0)".into());
        }
        for (key, addr, tls) in [
            ("listen", Some(self.listen), self.tls.is_some()),
            (
                "replication_listen",
                self.replication_listen,
                self.tls.is_some(),
            ),
            ("metrics_listen", self.metrics_listen, false),
        ] {
            if let Some(addr) = addr
                && !addr.ip().is_loopback()
                && !tls
                && !self.allow_plaintext_non_loopback
            {
                return Err(format!(
                    "{key} = {addr} is not a loopback address and is served without TLS: configure [tls] (listen only; metrics are plain HTTP), or set allow_plaintext_non_loopback = true to accept plaintext on a network you trust"
                ));
            }
        }
        if self.tls.is_none() && !self.listen.ip().is_loopback() && !self.auth.tokens.is_empty() {
            return Err(format!(
                "auth.tokens on listen = {} without [tls]: tokens would cross the network in cleartext (configure [tls])",
                self.listen
            ));
        }
        if let Some(replication) = self.replication_listen {
            if replication.port() == 0 {
                return Err("replication_listen needs a fixed port (not 0)".into());
            }
            if replication == self.listen || Some(replication) == self.metrics_listen {
                return Err("replication_listen must differ from listen and metrics_listen".into());
            }
        }
        if let Some(metrics) = self.metrics_listen {
            if metrics.port() == 0 {
                return Err("metrics_listen needs a fixed port (not 0)".into());
            }
            if metrics == self.listen {
                return Err("metrics_listen must differ from listen".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn good_configs_parse() {
        let primary =
            Config::parse("role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n")
                .unwrap();
        assert_eq!(primary.role, Role::Primary);
        let replica = Config::parse(
            "role = \"replica\"\ndata_dir = \"r\"\nlisten = \"127.0.0.1:7002\"\n[replica]\nupstream = \"http://127.0.0.1:7001\"\nid = \"r1\"\n",
        )
        .unwrap();
        assert_eq!(replica.replica.unwrap().id, "r1");
        let open = Config::parse(
            "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"0.0.0.0:7001\"\nallow_plaintext_non_loopback = true\n",
        )
        .unwrap();
        assert!(open.allow_plaintext_non_loopback);
        // TLS makes a non-loopback listen address acceptable.
        let tls = Config::parse(
            "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"0.0.0.0:7001\"\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nclient_ca = \"ca.pem\"\n[[auth.replicas]]\nidentity = \"r1\"\n[[auth.tokens]]\nname = \"app\"\nrole = \"client\"\nenv = \"APP_TOKEN\"\n[limits]\nmax_connections = 100\n",
        )
        .unwrap();
        assert_eq!(tls.auth.tokens.len(), 1);
        assert_eq!(tls.limits.max_connections(), 100);
    }

    #[test]
    fn relative_security_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "role = \"replica\"\ndata_dir = \"r\"\nlisten = \"127.0.0.1:7002\"\n[replica]\nupstream = \"https://127.0.0.1:7001\"\nid = \"r1\"\ntoken_file = \"s/t\"\n[replica.tls]\nca = \"c/ca.pem\"\n[tls]\ncert = \"c/r.pem\"\nkey = \"/abs/r.key\"\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        let replica = config.replica.unwrap();
        assert_eq!(replica.token_file.unwrap(), dir.path().join("s/t"));
        assert_eq!(replica.tls.unwrap().ca, dir.path().join("c/ca.pem"));
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert, dir.path().join("c/r.pem"));
        assert_eq!(tls.key, PathBuf::from("/abs/r.key"));
        // A member's too.
        std::fs::write(
            &path,
            "role = \"member\"\ndata_dir = \"m\"\nlisten = \"127.0.0.1:7002\"\n[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nname = \"c\"\ngroup = \"g1\"\nnode = \"n1\"\ntoken_file = \"s/t\"\ncontroller_token_file = \"s/admin\"\n[cluster.tls]\nca = \"c/ca.pem\"\n",
        )
        .unwrap();
        let cluster = Config::load(&path).unwrap().cluster.unwrap();
        assert_eq!(cluster.token_file.unwrap(), dir.path().join("s/t"));
        assert_eq!(
            cluster.controller_token_file.unwrap(),
            dir.path().join("s/admin")
        );
        assert_eq!(cluster.tls.unwrap().ca, dir.path().join("c/ca.pem"));
    }

    #[test]
    fn the_built_in_config_is_a_loopback_primary_on_strata_data() {
        let config = Config::parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(config.role, Role::Primary);
        assert_eq!(config.data_dir, PathBuf::from("strata-data"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(
            config.metrics_listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9101")
        );
        assert!(config.backup.is_none());
    }

    #[test]
    fn bad_configs_are_refused_naming_what() {
        for (text, needle) in [
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\ncolour = 1\n",
                "colour",
            ),
            (
                "role = \"leader\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n",
                "leader",
            ),
            (
                "role = \"primary\"\ndata_dir = 5\nlisten = \"127.0.0.1:7001\"\n",
                "data_dir",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"here\"\n",
                "listen",
            ),
            ("role = \"primary\"\ndata_dir = \"p\"\n", "listen"),
            (
                "role = \"replica\"\ndata_dir = \"r\"\nlisten = \"127.0.0.1:7002\"\n",
                "[replica]",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[replica]\nupstream = \"http://x:1\"\nid = \"a\"\n",
                "only for",
            ),
            (
                "role = \"replica\"\ndata_dir = \"r\"\nlisten = \"127.0.0.1:7002\"\n[replica]\nupstream = \"http://127.0.0.1:7002\"\nid = \"a\"\n",
                "itself",
            ),
            (
                "role = \"replica\"\ndata_dir = \"r\"\nlisten = \"127.0.0.1:7002\"\n[replica]\nupstream = \"http://127.0.0.1:7001\"\nid = \"a b\"\n",
                "replica.id",
            ),
            (
                "role = \"replica\"\ndata_dir = \"r\"\nlisten = \"127.0.0.1:7002\"\n[replica]\nupstream = \"127.0.0.1:7001\"\nid = \"a\"\n",
                "http://",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:0\"\n",
                "port",
            ),
            (
                "role = \"replica\"\ndata_dir = \"r\"\nlisten = \"127.0.0.1:7002\"\n[replica]\nupstream = \"http://127.0.0.1:7001\"\nid = \"a\"\n[[replica.ranges]]\nstart = \"m\"\nend = \"c\"\n",
                "replica.ranges",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[engine]\nmemtable_bytes = 10\n",
                "engine.memtable_bytes",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[engine]\nbatch_bytes_max = 1073741824\n",
                "engine.batch_bytes_max",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[engine]\nvalue_bytes_max = 16777216\n",
                "exceed batch_bytes_max",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[engine]\nsync = true\n",
                "sync",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[backup]\ndir = \"p/backup\"\n",
                "must not contain each other",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[backup]\ndir = \"b\"\narchive_interval_ms = 1\n",
                "archive_interval_ms",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[backup]\ndir = \"b\"\nsegment_bytes = 10\n",
                "segment_bytes",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[backup]\narchive_interval_ms = 100\n",
                "dir",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[engine]\nmemtable_bytes = \"big\"\n",
                "memtable_bytes",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[[auth.tokens]]\nname = \"app\"\nrole = \"client\"\n",
                "needs file or env",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[[auth.tokens]]\nname = \"app\"\nrole = \"client\"\nfile = \"t\"\nenv = \"T\"\n",
                "not both",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[[auth.tokens]]\nname = \"app\"\nrole = \"client\"\ntoken = \"inline-secret\"\n",
                "token",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[[auth.tokens]]\nname = \"app\"\nrole = \"root\"\nfile = \"t\"\n",
                "root",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[[auth.tokens]]\nname = \"a b\"\nrole = \"replica\"\nfile = \"t\"\n",
                "replica id",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[[auth.tokens]]\nname = \"app\"\nrole = \"client\"\nfile = \"t\"\n[[auth.tokens.ranges]]\nstart = \"a\"\n",
                "replica tokens only",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[[auth.replicas]]\nidentity = \"r1\"\n",
                "client_ca",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[[auth.replicas]]\nidentity = \"\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\n",
                "identity",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[tls]\ncert = \"c\"\n",
                "key",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[limits]\nmax_connections = 1\n",
                "limits.max_connections",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[limits]\nhandshake_timeout_ms = 0\n",
                "limits.handshake_timeout_ms",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[limits]\nshutdown_grace_ms = 10\n",
                "limits.shutdown_grace_ms",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\n[limits]\nruntime_threads = 0\n",
                "limits.runtime_threads",
            ),
            (
                "role = \"replica\"\ndata_dir = \"r\"\nlisten = \"127.0.0.1:7002\"\n[replica]\nupstream = \"https://127.0.0.1:7001\"\nid = \"r1\"\n",
                "[replica.tls]",
            ),
            (
                "role = \"replica\"\ndata_dir = \"r\"\nlisten = \"127.0.0.1:7002\"\n[replica]\nupstream = \"http://127.0.0.1:7001\"\nid = \"r1\"\n[replica.tls]\nca = \"ca\"\n",
                "https://",
            ),
            (
                "role = \"replica\"\ndata_dir = \"r\"\nlisten = \"127.0.0.1:7002\"\n[replica]\nupstream = \"https://127.0.0.1:7001\"\nid = \"r1\"\n[replica.tls]\nca = \"ca\"\ncert = \"c\"\n",
                "go together",
            ),
            (
                "role = \"replica\"\ndata_dir = \"r\"\nlisten = \"127.0.0.1:7002\"\n[replica]\nupstream = \"http://127.0.0.1:7001\"\nid = \"r1\"\ntoken_file = \"t\"\ntoken_env = \"T\"\n",
                "not both",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"0.0.0.0:7001\"\nmetrics_listen = \"0.0.0.0:9100\"\n[tls]\ncert = \"c\"\nkey = \"k\"\n",
                "metrics_listen",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"0.0.0.0:7001\"\nallow_plaintext_non_loopback = true\n[[auth.tokens]]\nname = \"app\"\nrole = \"client\"\nenv = \"T\"\n",
                "cleartext",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\nreplication_listen = \"127.0.0.1:7001\"\n",
                "replication_listen must differ",
            ),
            (
                "role = \"primary\"\ndata_dir = \"p\"\nlisten = \"127.0.0.1:7001\"\nreplication_listen = \"0.0.0.0:7011\"\n",
                "replication_listen",
            ),
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
