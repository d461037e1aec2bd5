//! Joining a cluster: a `role = "member"` node's database, replication
//! service and failover agent, built from its `[cluster]` section.
//!
//! Role: wiring only. The member opens (or creates) its database fenced,
//! so it takes no write before an election says so; serves replication on
//! the same handles whatever its role; and starts the agent that connects
//! to etcd, registers the node and drives it through [`Member`].
//!
//! Layout on disk: the database in `data_dir`, the epoch in
//! `data_dir.state/` (outside the database, which a bootstrap replaces),
//! as for a replica, so a member moves between roles without moving files.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use strata::replication::{Follower, recover_install};
use strata::{Db, Options};
use strata_cluster::{AgentConfig, AgentStatus, ClusterKeys, EtcdCoordinator, EtcdOptions};
use strata_replication::auth::Auth;
use strata_replication::digest::DigestPoints;
use strata_replication::upstream::OnDenied;
use strata_replication::{Replica, ReplicaConfig, SharedDb, Upstream, UpstreamConfig};
use tokio::sync::watch;

use crate::import::{Imports, Reach};
use crate::member::{Member, Membership};
use crate::node::{self, Role};
use crate::ownership::Ownership;
use crate::{config, listener, request_metrics, secrets};

/// A started member: its node (for the services) and its agent.
pub(crate) struct Started {
    pub(crate) node: node::Node,
    member: Arc<Member>,
    stop: watch::Sender<bool>,
    agent: tokio::task::JoinHandle<strata_cluster::Result<()>>,
}

impl Started {
    /// Stops the agent (resigning a leadership at once) and following.
    pub(crate) async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(grace, self.agent).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "the cluster agent ended with an error"),
            Ok(Err(error)) => tracing::warn!(%error, "the cluster agent ended abnormally"),
            Err(_) => tracing::warn!("the cluster agent did not stop within the grace period"),
        }
        if tokio::time::timeout(grace, self.member.stop())
            .await
            .is_err()
        {
            tracing::warn!("the member did not stop following within the grace period");
        }
    }
}

/// Builds a member's node and starts its agent (inside the runtime).
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    config: &config::Config,
    options: Options,
    snapshots: &std::path::Path,
    auth: Auth,
    on_denied: OnDenied,
    metrics: Arc<request_metrics::RequestMetrics>,
    connections: Arc<listener::ConnectionFigures>,
) -> Result<Started, String> {
    let section = config
        .cluster
        .clone()
        .ok_or("role = \"member\" needs a [cluster] section")?;
    let mut template = ReplicaConfig::new(String::new(), section.node.clone(), &config.data_dir);
    template.options = options.clone();
    template.tls = section
        .tls
        .as_ref()
        .map(secrets::client_tls)
        .transpose()
        .map_err(|e| format!("[cluster.tls]: {e}"))?;
    template.token =
        secrets::presented_token(section.token_file.as_deref(), section.token_env.as_deref())
            .map_err(|e| format!("[cluster]: {e}"))?;
    let epoch = Replica::open_epoch(&template).map_err(|e| format!("reading the epoch: {e}"))?;
    recover_install(&*options.file_system, &config.data_dir)
        .map_err(|e| format!("finishing an interrupted snapshot install: {e}"))?;
    let db = Db::open(&config.data_dir, options)
        .map_err(|e| format!("opening {}: {e}", config.data_dir.display()))?;
    Follower::of(&db)
        .fence("not primary: this member has not been told its role by the cluster yet");
    let db = SharedDb::new(db);
    let mut upstream_config = UpstreamConfig::new(snapshots);
    upstream_config.auth = auth.clone();
    upstream_config.on_denied = Some(on_denied);
    let upstream = Upstream::new(db.clone(), epoch.clone(), upstream_config);

    let keys = ClusterKeys::new(section.prefix.as_deref().unwrap_or("strata"), &section.name)
        .map_err(|e| format!("[cluster]: {e}"))?;
    let address = section.advertised(config.listen, config.tls.is_some());
    let mut agent_config = AgentConfig::new(keys.clone(), &section.node, &address, &section.group);
    agent_config.lease_ttl = section.lease_ttl();
    agent_config.epoch_base = section.epoch_base.unwrap_or(0);
    let (status_tx, status_rx) = watch::channel(AgentStatus::default());
    let store = EtcdCoordinator::connect(EtcdOptions::new(section.etcd.clone()))
        .map_err(|e| format!("[cluster] etcd: {e}"))?;
    let (stop, stop_rx) = watch::channel(false);
    let ownership = if section.sharded.unwrap_or(false) {
        let (map_tx, map_rx) = watch::channel(None);
        let watcher = store.clone();
        let watch_keys = keys.clone();
        let watch_stop = stop_rx.clone();
        tokio::spawn(async move {
            strata_cluster::watch_map(&watcher, watch_keys, map_tx, watch_stop).await;
        });
        Some(Arc::new(Ownership::new(
            section.group.clone(),
            section.node.clone(),
            keys.clone(),
            store.clone(),
            map_rx,
        )))
    } else {
        None
    };
    let reach = Reach {
        tls: template.tls.clone(),
        token: template.token.clone(),
    };
    if section.sharded.unwrap_or(false) && section.controller.unwrap_or(true) {
        let defaults = strata_cluster::PlacementConfig::default();
        let config = crate::controller::ControllerConfig {
            node: section.node.clone(),
            interval: Duration::from_millis(
                section
                    .controller_interval_ms
                    .unwrap_or(10_000)
                    .clamp(100, 3_600_000),
            ),
            placement: strata_cluster::PlacementConfig {
                split_bytes: section.split_bytes.unwrap_or(defaults.split_bytes),
                split_writes_per_sec: section
                    .split_writes_per_sec
                    .map_or(defaults.split_writes_per_sec, |w| w as f64),
                balance_gap: section
                    .balance_gap_percent
                    .map_or(defaults.balance_gap, |p| f64::from(p) / 100.0),
            },
        };
        let controller_token = secrets::presented_token(
            section.controller_token_file.as_deref(),
            section.controller_token_env.as_deref(),
        )
        .map_err(|e| format!("[cluster] controller token: {e}"))?;
        let controller_reach = Reach {
            tls: reach.tls.clone(),
            token: controller_token.or_else(|| reach.token.clone()),
        };
        tokio::spawn(crate::controller::run(
            store.clone(),
            keys.clone(),
            crate::mover::Dial::Node(controller_reach),
            config,
            stop_rx.clone(),
        ));
    }
    let imports = Imports::new(reach);
    let membership = Arc::new(Membership::new(
        section.node.clone(),
        section.group.clone(),
        status_rx,
        section.min_sync_replicas(),
        section.sync_timeout_ms.unwrap_or(2000),
        ownership,
        imports,
    ));
    let role = Arc::new(ArcSwap::from_pointee(Role::Standby));
    let member = Arc::new(Member::new(
        Arc::clone(&membership),
        db.clone(),
        epoch.clone(),
        Arc::clone(&role),
        template,
    ));
    let agent = tokio::spawn(strata_cluster::run_agent(
        store,
        Arc::clone(&member),
        agent_config,
        status_tx,
        stop_rx,
    ));
    tracing::info!(node = %section.node, group = %section.group, cluster = %section.name, %address, etcd = %section.etcd.join(","), sharded = section.sharded.unwrap_or(false), "joining the cluster");
    let node = node::Node {
        digest_points: Arc::new(DigestPoints::new(db.clone(), crate::DIGEST_POINTS)),
        db,
        epoch,
        upstream,
        role,
        cluster: Some(membership),
        metrics,
        auth,
        connections,
        inline_writers: Arc::new(tokio::sync::Semaphore::new(node::inline_writers(
            config.limits.runtime_threads(),
        ))),
    };
    Ok(Started {
        node,
        member,
        stop,
        agent,
    })
}
