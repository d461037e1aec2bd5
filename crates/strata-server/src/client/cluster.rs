//! `strata cluster status`: every range group of a cluster, from etcd's
//! records and each member's own `Admin.Status`.

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
    }
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
