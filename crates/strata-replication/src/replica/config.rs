//! How a replica follows its upstream.

use super::*;

/// How a replica follows its upstream.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The upstream's address, for example `http://127.0.0.1:7001`.
    pub upstream: String,
    /// This replica's id (its slot on the upstream): 1 to 128 bytes of
    /// `[A-Za-z0-9._-]`.
    pub replica_id: String,
    /// The replica's database directory (replaced whole by a bootstrap).
    pub data_dir: PathBuf,
    /// Where the replica keeps its epoch (outside `data_dir`, which a
    /// bootstrap replaces). Default: `data_dir` with extension `state`.
    pub state_dir: PathBuf,
    /// Options to open the database with (on the real file system).
    pub options: Options,
    /// Most records applied under one sync. Default: 1,024.
    pub max_group: usize,
    /// First and longest wait between reconnections. Default: 50 ms, 2 s.
    pub backoff_initial: Duration,
    /// See `backoff_initial`.
    pub backoff_max: Duration,
    /// How long a connection attempt may take. Default: 2 s.
    pub connect_timeout: Duration,
    /// TLS for the connection to the upstream (the upstream's CA, this
    /// replica's certificate and key for mutual TLS, the name to check).
    /// Default: none (plaintext).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// A replica token to present on every call, where the upstream wants
    /// one. Default: none.
    pub token: Option<crate::auth::Secret>,
    /// A ready channel to the upstream, used instead of connecting to
    /// `upstream` by address: an in-memory transport in tests, or a
    /// channel with custom settings. Default: none.
    pub channel: Option<Channel>,
    /// The key ranges to hold (a range-scoped replica; sorted, disjoint
    /// `[start, end)`, `None` for unbounded); empty: every key. Fixed for
    /// the replica's life: a replica restarted with other ranges refuses to
    /// start (its data would lack the new ranges' history).
    pub ranges: crate::KeyIntervals,
    /// Replace the local database with a snapshot of the upstream's before
    /// following (a cluster member whose history a failover cut: its own
    /// records after the cut must never be served). Default: false.
    pub discard_local: bool,
    /// When the upstream refuses this replica's history as diverged (a
    /// fork, or a replica ahead of it), bootstrap from a snapshot instead
    /// of refusing to follow (cluster members: the upstream is the elected
    /// primary, so the replica's tail is the one to go). Default: false.
    pub rebootstrap_on_divergence: bool,
}

impl ReplicaConfig {
    /// The defaults for a replica of `upstream` named `replica_id` in
    /// `data_dir`.
    #[must_use]
    pub fn new(
        upstream: impl Into<String>,
        replica_id: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        let data_dir = data_dir.into();
        Self {
            upstream: upstream.into(),
            replica_id: replica_id.into(),
            state_dir: data_dir.with_extension("state"),
            data_dir,
            options: Options::default(),
            max_group: 1024,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            channel: None,
            tls: None,
            token: None,
            ranges: Vec::new(),
            discard_local: false,
            rebootstrap_on_divergence: false,
        }
    }
}
