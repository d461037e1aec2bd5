//! What a [`crate::Client`] is told: where to find the group, how to reach
//! its nodes, and how long to wait.
//!
//! Role: plain data with documented defaults. The client reads no files:
//! a caller that keeps TLS material or a token on disk loads it first (the
//! `strata` CLI does so with its own checks on file modes) and hands the
//! result over.
//!
//! Invariants: a configuration names at least one way to find the primary
//! (seed addresses or an etcd source); [`ClientConfig::check`] says so
//! before any connection is opened.

use std::fmt;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::ClientTlsConfig;

use crate::error::{Error, Result};

/// Where a group's primary, members and epoch history are published.
///
/// # Examples
///
/// ```
/// let etcd = strata_client::EtcdSource::new(["http://127.0.0.1:2379"], "shop", "g1");
/// assert_eq!(etcd.key_prefix, "strata");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSource {
    /// Client URLs of the etcd members, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The prefix of every Strata key in etcd. Default: `strata`.
    pub key_prefix: String,
    /// The cluster's name.
    pub cluster: String,
    /// The range group the client writes to and reads from (a
    /// [`crate::ShardedClient`] ignores it: the range map names the
    /// groups).
    pub group: String,
}

impl EtcdSource {
    /// The source for `group` of `cluster` under the default key prefix.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        cluster: impl Into<String>,
        group: impl Into<String>,
    ) -> EtcdSource {
        EtcdSource {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            key_prefix: "strata".into(),
            cluster: cluster.into(),
            group: group.into(),
        }
    }

    /// The source for every group of `cluster` (no group named), under the
    /// default key prefix: what a [`crate::ShardedClient`] is given.
    ///
    /// ```
    /// let etcd = strata_client::EtcdSource::cluster(["http://127.0.0.1:2379"], "shop");
    /// assert!(etcd.group.is_empty());
    /// ```
    pub fn cluster(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        cluster: impl Into<String>,
    ) -> EtcdSource {
        EtcdSource::new(endpoints, cluster, "")
    }
}

/// A bearer token, sent as `authorization: Bearer <token>` on every call.
/// Its `Debug` output never shows the token.
///
/// # Examples
///
/// ```
/// let token = strata_client::Bearer::new("s3cret-0123456789").unwrap();
/// assert!(!format!("{token:?}").contains("s3cret"));
/// assert!(strata_client::Bearer::new("two words").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    /// The token as `authorization` metadata.
    ///
    /// # Errors
    /// [`Error::Config`] for a token that cannot travel in a header
    /// (empty, whitespace, control or non-ASCII characters); the message
    /// never contains the token.
    pub fn new(token: &str) -> Result<Bearer> {
        let printable = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
        let header = format!("Bearer {token}").parse().ok().filter(|_| printable);
        header.map(Bearer).ok_or_else(|| Error::Config {
            detail: "the token must be printable ASCII without whitespace".into(),
        })
    }

    pub(crate) fn header(&self) -> &MetadataValue<Ascii> {
        &self.0
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

/// How a [`crate::Client`] finds and reaches a range group. Its `Debug`
/// output shows whether TLS is configured, never the key material.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let mut config = strata_client::ClientConfig::seeds(["127.0.0.1:7001", "127.0.0.1:7002"]);
/// config.failover_wait = Duration::from_secs(30);
/// assert!(config.check().is_ok());
/// assert!(strata_client::ClientConfig::seeds(Vec::<String>::new()).check().is_err());
/// ```
#[derive(Clone)]
pub struct ClientConfig {
    /// Node addresses (`host:port` or an `http://`/`https://` URL) asked
    /// for the primary by `Admin.Status`, and read from by
    /// [`crate::ReadPolicy::Replicas`] when there is no etcd source. Also
    /// asked when etcd cannot be reached. Default: none.
    pub seeds: Vec<String>,
    /// Where the cluster publishes its primary, members and history.
    /// With it, a token read is checked against the group's epoch history.
    /// Default: none.
    pub etcd: Option<EtcdSource>,
    /// TLS towards the nodes (addresses without a scheme become
    /// `https://`). Default: none (plain `http://`).
    pub tls: Option<ClientTlsConfig>,
    /// The token presented to the nodes. Default: none.
    pub bearer: Option<Bearer>,
    /// The deadline of one call to one node, and of opening a connection.
    /// A write whose deadline passes after it was sent has an unknown
    /// outcome. Default: 5 s.
    pub request_timeout: Duration,
    /// How long a node may wait to have applied a read's `min_seq` before
    /// it answers UNAVAILABLE (added to the call's deadline). Default: 1 s.
    pub read_wait: Duration,
    /// How long a write waits for a group without a usable primary (during
    /// a failover) before it fails. Default: 10 s.
    pub failover_wait: Duration,
}

impl ClientConfig {
    /// A configuration that finds the primary by asking `seeds`.
    pub fn seeds(seeds: impl IntoIterator<Item = impl Into<String>>) -> ClientConfig {
        ClientConfig {
            seeds: seeds.into_iter().map(Into::into).collect(),
            ..ClientConfig::default()
        }
    }

    /// A configuration that finds the primary in etcd.
    ///
    /// ```
    /// let source = strata_client::EtcdSource::new(["http://127.0.0.1:2379"], "shop", "g1");
    /// assert!(strata_client::ClientConfig::etcd(source).check().is_ok());
    /// ```
    pub fn etcd(source: EtcdSource) -> ClientConfig {
        ClientConfig {
            etcd: Some(source),
            ..ClientConfig::default()
        }
    }

    /// Checks that the configuration can be used.
    ///
    /// # Errors
    /// [`Error::Config`] when there is neither a seed nor an etcd source,
    /// an etcd source has no endpoint or a name that cannot be part of a
    /// key, or a deadline is zero.
    pub fn check(&self) -> Result<()> {
        self.check_with(true)
    }

    /// [`ClientConfig::check`], with or without the etcd source's group
    /// (a sharded client names none).
    pub(crate) fn check_with(&self, group: bool) -> Result<()> {
        let bad = |detail: String| Err(Error::Config { detail });
        if self.seeds.is_empty() && self.etcd.is_none() {
            return bad(
                "no seed address and no etcd source: nothing to find the primary with".into(),
            );
        }
        if let Some(etcd) = &self.etcd {
            if etcd.endpoints.is_empty() {
                return bad("the etcd source has no endpoint".into());
            }
            strata_cluster::ClusterKeys::new(&etcd.key_prefix, &etcd.cluster)
                .and_then(|keys| {
                    if group {
                        keys.primary(&etcd.group).map(|_| ())
                    } else {
                        Ok(())
                    }
                })
                .map_err(|e| Error::Config {
                    detail: e.to_string(),
                })?;
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be above zero".into());
        }
        Ok(())
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("seeds", &self.seeds)
            .field("etcd", &self.etcd)
            .field("tls", &self.tls.as_ref().map(|_| "<configured>"))
            .field("bearer", &self.bearer)
            .field("request_timeout", &self.request_timeout)
            .field("read_wait", &self.read_wait)
            .field("failover_wait", &self.failover_wait)
            .finish()
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            seeds: Vec::new(),
            etcd: None,
            tls: None,
            bearer: None,
            request_timeout: Duration::from_secs(5),
            read_wait: Duration::from_secs(1),
            failover_wait: Duration::from_secs(10),
        }
    }
}
