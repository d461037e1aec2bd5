//! `strata cluster status`: every range group of a cluster, from etcd's
//! records and each member's own `Admin.Status`; `strata cluster failover
//! --to NODE`: a planned switchover (the primary drains, waits for NODE to
//! catch up, and hands over to it alone).

use strata_client::{Client, ClientConfig, EtcdSource};

use crate::connect::Security;

/// `strata cluster ...`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ClusterArgs {
    #[command(subcommand)]
    pub(crate) command: ClusterCommand,
}

/// The cluster subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub(crate) enum ClusterCommand {
    /// Print each range group: its primary, epoch and lease left, and per
    /// member its role, address, epoch, applied sequence number and lag
    /// behind the primary.
    Status(StatusArgs),
    /// Hand a group over to another member without losing a write: the
    /// primary stops taking writes, waits until the member has applied
    /// everything, and resigns; only that member campaigns.
    Failover(FailoverArgs),
}

/// `strata cluster failover`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct FailoverArgs {
    /// etcd client URLs (comma separated).
    #[arg(long, value_delimiter = ',', value_name = "ENDPOINTS", required = true)]
    pub(crate) etcd: Vec<String>,
    /// The cluster's name in etcd.
    #[arg(long)]
    pub(crate) cluster: String,
    /// The range group to hand over.
    #[arg(long)]
    pub(crate) group: String,
    /// The member to hand it to.
    #[arg(long)]
    pub(crate) to: String,
    /// The prefix of Strata's keys in etcd.
    #[arg(long, default_value = "strata")]
    pub(crate) key_prefix: String,
    /// How long to wait for the hand-over, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub(crate) timeout_ms: u64,
}

/// `strata cluster status`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct StatusArgs {
    /// etcd client URLs (comma separated).
    #[arg(long, value_delimiter = ',', value_name = "ENDPOINTS", required = true)]
    pub(crate) etcd: Vec<String>,
    /// The cluster's name in etcd.
    #[arg(long)]
    pub(crate) cluster: String,
    /// The prefix of Strata's keys in etcd.
    #[arg(long, default_value = "strata")]
    pub(crate) key_prefix: String,
    #[command(flatten)]
    pub(crate) security: Security,
}

pub(crate) async fn run(args: ClusterArgs) -> Result<(), String> {
    match args.command {
        ClusterCommand::Status(args) => status(args).await,
        ClusterCommand::Failover(args) => failover(args).await,
    }
}

/// Asks for the switchover (a key under a lease of this command's, so an
/// abandoned request goes away by itself) and waits until the group's
/// primary key names the target.
async fn failover(args: FailoverArgs) -> Result<(), String> {
    use std::time::{Duration, Instant};
    use strata_cluster::{
        ClusterKeys, Coordinator, EtcdCoordinator, EtcdOptions, MemberRecord, Switchover,
    };
    let endpoints = args.etcd.join(",");
    let keys = ClusterKeys::new(&args.key_prefix, &args.cluster).map_err(|e| e.to_string())?;
    let store = EtcdCoordinator::connect(EtcdOptions::new(args.etcd.clone()))
        .map_err(|e| format!("etcd at {endpoints}: {e}"))?;
    let member_key = keys.member(&args.to).map_err(|e| e.to_string())?;
    let member = store
        .get(&member_key)
        .await
        .map_err(|e| format!("etcd at {endpoints}: {e}"))?
        .ok_or_else(|| {
            format!(
                "no member {} in cluster {} (is it running?)",
                args.to, args.cluster
            )
        })?;
    let record = MemberRecord::decode(&member.value, &args.to).map_err(|e| e.to_string())?;
    if record.group != args.group {
        return Err(format!(
            "member {} is in group {}, not {}",
            args.to, record.group, args.group
        ));
    }
    if !record.full {
        return Err(format!(
            "member {} holds only some key ranges: it cannot become primary",
            args.to
        ));
    }
    let primary_key = keys.primary(&args.group).map_err(|e| e.to_string())?;
    let holder = |kv: Option<strata_cluster::KeyValue>| {
        kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    };
    let current = holder(store.get(&primary_key).await.map_err(|e| e.to_string())?);
    if current.as_deref() == Some(args.to.as_str()) {
        println!("{} is already the primary of {}", args.to, args.group);
        return Ok(());
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let lease = store
        .grant_lease(timeout + Duration::from_secs(5))
        .await
        .map_err(|e| format!("etcd at {endpoints}: {e}"))?;
    let switchover_key = keys.switchover(&args.group).map_err(|e| e.to_string())?;
    let request = Switchover {
        v: 1,
        to: args.to.clone(),
    };
    let asked = Instant::now();
    store
        .put(&switchover_key, &request.encode(), Some(lease.id))
        .await
        .map_err(|e| format!("etcd at {endpoints}: {e}"))?;
    let outcome = loop {
        let now = holder(store.get(&primary_key).await.map_err(|e| e.to_string())?);
        if now.as_deref() == Some(args.to.as_str()) {
            break Ok(asked.elapsed());
        }
        if asked.elapsed() > timeout {
            break Err(format!(
                "{} did not become primary of {} within {} ms (primary now: {}); the request is withdrawn",
                args.to,
                args.group,
                args.timeout_ms,
                now.unwrap_or_else(|| "none".into())
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Withdrawn either way (revoking the lease deletes the key).
    let _ = store.revoke_lease(lease.id).await;
    let took = outcome?;
    println!(
        "{} is the primary of {} (from {}), {} ms after the request",
        args.to,
        args.group,
        current.unwrap_or_else(|| "none".into()),
        took.as_millis()
    );
    Ok(())
}

async fn status(args: StatusArgs) -> Result<(), String> {
    // The report covers every group; the source's group only has to be a
    // valid name.
    let mut source = EtcdSource::new(args.etcd.clone(), args.cluster.clone(), "all");
    source.key_prefix = args.key_prefix.clone();
    let mut config = ClientConfig::etcd(source);
    let (tls, bearer) = args.security.client_settings()?;
    config.tls = tls;
    config.bearer = bearer;
    let client = Client::new(config).map_err(|e| e.to_string())?;
    let groups = client.cluster_status().await.map_err(|e| e.to_string())?;
    if groups.is_empty() {
        return Err(format!(
            "no member records under {}/{}/members/ in etcd at {}: is the cluster name right?",
            args.key_prefix,
            args.cluster,
            args.etcd.join(",")
        ));
    }
    for group in &groups {
        print!("{group}");
    }
    Ok(())
}
