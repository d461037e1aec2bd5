//! `strata cluster status`: every range group of a cluster, from etcd's
//! records and each member's own `Admin.Status`.

use strata_client::{Client, ClientConfig, EtcdSource, GroupStatus};

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
        print!("{}", render(group));
    }
    Ok(())
}

/// One group's lines.
fn render(group: &GroupStatus) -> String {
    let mut out = match (&group.primary, group.epoch) {
        (Ok(primary), Some(epoch)) => {
            let lease = group.lease_millis_left.map_or_else(
                || "unknown (the primary did not answer)".to_string(),
                |ms| format!("{ms} ms"),
            );
            format!(
                "group {}  primary {primary}  epoch {epoch}  lease left {lease}\n",
                group.group
            )
        }
        (Ok(primary), None) => format!("group {}  primary {primary}\n", group.group),
        (Err(why), _) => format!("group {}  no primary: {why}\n", group.group),
    };
    for m in &group.members {
        let lag = m.lag.map_or_else(|| "?".to_string(), |lag| lag.to_string());
        out.push_str(&format!(
            "  {}  {}  {}  epoch {}  applied {}  lag {lag}",
            m.node, m.role, m.address, m.epoch, m.applied_seq
        ));
        if let Some(error) = &m.error {
            out.push_str(&format!("  (from its record; not answering: {error})"));
        }
        out.push('\n');
    }
    out
}
