//! Which node(s) a `put`, `delete`, `delete-range`, `get` or `scan` talks
//! to: one `--node` (today's direct call), or several `--node`s or an
//! etcd source (`--etcd`, `--cluster`, `--group`), through
//! `strata-client`, which finds the group's primary, follows it across
//! failovers and prints commit tokens as `epoch:seq`.
//!
//! Invariants: a single `--node` without `--etcd`, `--token` or
//! `--replicas` behaves exactly as before (one call to that node); every
//! other combination goes through the client.

use std::time::Duration;

use strata_client::{Client, ClientConfig, EtcdSource};

use crate::connect::{NodeArgs, Security};

/// The nodes a data command talks to.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Target {
    /// A node's address (host:port, or an http:// or https:// URL); repeat
    /// it to name several, and the command finds the primary among them
    /// (default: 127.0.0.1:7001).
    #[arg(long = "node", visible_alias = "addr", value_name = "ADDRESS")]
    pub(crate) nodes: Vec<String>,
    /// etcd client URLs (comma separated): find the group's primary,
    /// members and epoch history there; without --group, route every key
    /// by the cluster's range map (a sharded cluster).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "ENDPOINTS",
        requires = "cluster"
    )]
    pub(crate) etcd: Vec<String>,
    /// The cluster's name in etcd (with --etcd).
    #[arg(long, requires = "etcd")]
    pub(crate) cluster: Option<String>,
    /// The range group (with --etcd).
    #[arg(long, requires = "etcd")]
    pub(crate) group: Option<String>,
    /// The prefix of Strata's keys in etcd.
    #[arg(long, default_value = "strata", requires = "etcd")]
    pub(crate) key_prefix: String,
    /// How long a write waits for a new primary during a failover, in
    /// milliseconds (with several nodes or --etcd).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) failover_wait_ms: u64,
    #[command(flatten)]
    pub(crate) security: Security,
}

/// The default node when none is named.
const DEFAULT_NODE: &str = "127.0.0.1:7001";

impl Target {
    /// The one node to call directly, when the command names only that.
    pub(crate) fn single(&self) -> Option<NodeArgs> {
        if !self.etcd.is_empty() || self.nodes.len() > 1 {
            return None;
        }
        Some(NodeArgs {
            node: self
                .nodes
                .first()
                .cloned()
                .unwrap_or_else(|| DEFAULT_NODE.to_string()),
            security: self.security.clone(),
        })
    }

    /// A client of every group of a sharded cluster: `--etcd` and
    /// `--cluster` without `--group`.
    pub(crate) fn sharded(&self) -> Result<Option<strata_client::ShardedClient>, String> {
        let (false, Some(cluster), None) = (self.etcd.is_empty(), &self.cluster, &self.group)
        else {
            return Ok(None);
        };
        let mut source = EtcdSource::cluster(self.etcd.clone(), cluster.clone());
        source.key_prefix = self.key_prefix.clone();
        let mut config = ClientConfig::etcd(source);
        let (tls, bearer) = self.security.client_settings()?;
        config.tls = tls;
        config.bearer = bearer;
        config.failover_wait = Duration::from_millis(self.failover_wait_ms);
        strata_client::ShardedClient::new(config)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// A client for these nodes, with `read_wait` for reads after a token.
    pub(crate) fn client(&self, read_wait: Duration) -> Result<Client, String> {
        let mut config = ClientConfig::seeds(self.nodes.iter().cloned());
        if self.etcd.is_empty() && config.seeds.is_empty() {
            config.seeds.push(DEFAULT_NODE.into());
        }
        if let (false, Some(cluster), Some(group)) =
            (self.etcd.is_empty(), &self.cluster, &self.group)
        {
            let mut source = EtcdSource::new(self.etcd.clone(), cluster.clone(), group.clone());
            source.key_prefix = self.key_prefix.clone();
            config.etcd = Some(source);
        }
        let (tls, bearer) = self.security.client_settings()?;
        config.tls = tls;
        config.bearer = bearer;
        config.read_wait = read_wait;
        config.failover_wait = Duration::from_millis(self.failover_wait_ms);
        Client::new(config).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        target: Target,
    }

    fn parse(args: &[&str]) -> Result<Target, clap::Error> {
        Args::try_parse_from(std::iter::once("strata").chain(args.iter().copied()))
            .map(|a| a.target)
    }

    #[tokio::test]
    async fn one_node_is_called_directly_and_anything_more_goes_through_the_client() {
        assert_eq!(parse(&[]).unwrap().single().unwrap().node, DEFAULT_NODE);
        assert_eq!(
            parse(&["--node", "n1:7001"])
                .unwrap()
                .single()
                .unwrap()
                .node,
            "n1:7001"
        );
        let several = parse(&["--addr", "n1:7001", "--addr", "n2:7001"]).unwrap();
        assert!(several.single().is_none());
        assert_eq!(several.nodes, ["n1:7001", "n2:7001"]);
        let etcd = parse(&[
            "--etcd",
            "http://e1:2379,http://e2:2379",
            "--cluster",
            "shop",
            "--group",
            "g1",
        ])
        .unwrap();
        assert!(etcd.single().is_none());
        assert_eq!(etcd.etcd.len(), 2);
        assert!(etcd.client(Duration::from_secs(1)).is_ok());
    }

    #[tokio::test]
    async fn etcd_needs_a_cluster_and_a_group() {
        // Without a group: the sharded client, routing by the range map.
        let sharded = parse(&["--etcd", "http://e1:2379", "--cluster", "shop"]).unwrap();
        assert!(sharded.sharded().unwrap().is_some());
        assert!(parse(&["--etcd", "http://e1:2379"]).is_err());
        assert!(parse(&["--group", "g1"]).is_err());
        let bad = parse(&[
            "--etcd",
            "http://e1:2379",
            "--cluster",
            "a/b",
            "--group",
            "g1",
        ])
        .unwrap();
        assert!(
            bad.client(Duration::from_secs(1))
                .unwrap_err()
                .contains("cluster")
        );
    }
}
