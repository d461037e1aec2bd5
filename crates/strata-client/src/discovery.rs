//! Finding a group's primary and members: from etcd, or by asking seed
//! nodes.
//!
//! Role: etcd is the authority when there is one. The primary is the node
//! named by `groups/{group}/primary`, reached at the address of its member
//! record (`members/{node}`), at the higher of the record's epoch and the
//! key's creation revision; the members are the records of the group; the
//! epoch history is `groups/{group}/history/`. Without etcd (or when it
//! cannot be reached) the seeds' `Admin.Status` answers decide: a seed
//! that says it is primary at the highest epoch, else the primary a seed
//! names at the highest epoch.
//!
//! Invariants: the coordinator is reached only through [`Directory`], so
//! the same code runs over etcd and over a `MemCoordinator` in tests;
//! nothing read from etcd or a node is unwrapped or indexed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use strata_cluster::{
    ClusterKeys, Coordinator, EpochStart, KeyValue, MemberRecord, Revision, Role,
};
use strata_proto::v1::StatusRequest;

use crate::config::EtcdSource;
use crate::error::{Attempt, Error, Result};
use crate::pool::Pool;

type Boxed<'a, T> = Pin<Box<dyn Future<Output = strata_cluster::Result<T>> + Send + 'a>>;

/// The reads the client makes of the coordinator, object safe.
pub(crate) trait Directory: Send + Sync {
    fn get<'a>(&'a self, key: &'a [u8]) -> Boxed<'a, Option<KeyValue>>;
    fn list<'a>(&'a self, prefix: &'a [u8]) -> Boxed<'a, Vec<KeyValue>>;
    /// A listing and the store revision it is as of (the range map).
    fn list_at<'a>(&'a self, prefix: &'a [u8]) -> Boxed<'a, (Vec<KeyValue>, Revision)>;
}

impl<C: Coordinator> Directory for C {
    fn get<'a>(&'a self, key: &'a [u8]) -> Boxed<'a, Option<KeyValue>> {
        Box::pin(Coordinator::get(self, key))
    }

    fn list<'a>(&'a self, prefix: &'a [u8]) -> Boxed<'a, Vec<KeyValue>> {
        Box::pin(async move { Coordinator::list(self, prefix).await.map(|(kvs, _)| kvs) })
    }

    fn list_at<'a>(&'a self, prefix: &'a [u8]) -> Boxed<'a, (Vec<KeyValue>, Revision)> {
        Box::pin(Coordinator::list(self, prefix))
    }
}

/// One coordinator connection shared by the clients of several groups
/// (a `ShardedClient` and its per-group `Client`s).
#[derive(Clone)]
pub(crate) struct Shared(pub(crate) std::sync::Arc<dyn Directory>);

impl Directory for Shared {
    fn get<'a>(&'a self, key: &'a [u8]) -> Boxed<'a, Option<KeyValue>> {
        self.0.get(key)
    }

    fn list<'a>(&'a self, prefix: &'a [u8]) -> Boxed<'a, Vec<KeyValue>> {
        self.0.list(prefix)
    }

    fn list_at<'a>(&'a self, prefix: &'a [u8]) -> Boxed<'a, (Vec<KeyValue>, Revision)> {
        self.0.list_at(prefix)
    }
}

/// A group's primary as the client last learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Primary {
    /// Its node name (its address when the name is not known).
    pub node: String,
    /// Where it is reached.
    pub address: String,
    /// The epoch it was learned at (0: unknown): from etcd, the epoch of
    /// its member record or, if higher, its primary key's creation
    /// revision (a record not yet rewritten after the promotion still
    /// names the epoch it followed); without etcd, the epoch a node
    /// reported. Never above the primary's actual epoch.
    pub epoch: u64,
}

/// A member the client may read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) node: String,
    pub(crate) address: String,
    pub(crate) primary: bool,
}

/// The cluster's records in etcd (or any coordinator).
pub(crate) struct Etcd {
    directory: Box<dyn Directory>,
    keys: ClusterKeys,
    group: String,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("keys", &self.keys)
            .field("group", &self.group)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// Key text for messages.
fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

impl Etcd {
    pub(crate) fn new(source: &EtcdSource, directory: Box<dyn Directory>) -> Result<Etcd> {
        let keys =
            ClusterKeys::new(&source.key_prefix, &source.cluster).map_err(|e| Error::Config {
                detail: e.to_string(),
            })?;
        Ok(Etcd {
            directory,
            keys,
            group: source.group.clone(),
            endpoints: source.endpoints.clone(),
        })
    }

    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    /// The endpoints, joined, for attempts and errors.
    pub(crate) fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    fn error(&self, error: &strata_cluster::Error) -> Error {
        Error::coordinator(&self.endpoints, error)
    }

    fn check_group(&self) -> Result<()> {
        if self.group.is_empty() {
            return Err(Error::Config {
                detail: "the etcd source names no range group".into(),
            });
        }
        Ok(())
    }

    fn key(&self, key: strata_cluster::Result<Vec<u8>>) -> Result<Vec<u8>> {
        key.map_err(|e| Error::Config {
            detail: e.to_string(),
        })
    }

    /// The group's primary, or (inner `Err`) why the group has none that
    /// can be reached: no primary key, or no member record for the node it
    /// names. The outer `Err` is etcd's failure.
    pub(crate) async fn primary(&self) -> Result<Result<Primary, String>> {
        self.check_group()?;
        self.primary_of(&self.group).await
    }

    /// As [`Etcd::primary`], for any group of the cluster.
    pub(crate) async fn primary_of(&self, group: &str) -> Result<Result<Primary, String>> {
        let key = self.key(self.keys.primary(group))?;
        let Some(held) = self.directory.get(&key).await.map_err(|e| self.error(&e))? else {
            return Ok(Err(format!(
                "group {group:?} has no primary ({} is absent)",
                show(&key)
            )));
        };
        let node = String::from_utf8_lossy(&held.value).into_owned();
        let revision = u64::try_from(held.create_revision).unwrap_or(0);
        let member_key = match self.keys.member(&node) {
            Ok(key) => key,
            Err(e) => return Ok(Err(format!("{} names {node:?}: {e}", show(&key)))),
        };
        let Some(record) = self
            .directory
            .get(&member_key)
            .await
            .map_err(|e| self.error(&e))?
        else {
            return Ok(Err(format!(
                "the primary {node:?} of group {group:?} has no member record ({} is absent)",
                show(&member_key)
            )));
        };
        let record =
            MemberRecord::decode(&record.value, &show(&member_key)).map_err(|e| self.error(&e))?;
        // The agent's epoch is its `epoch_base` plus the key's creation
        // revision; the client does not know the base, so it takes the
        // higher of the two lower bounds it has.
        Ok(Ok(Primary {
            node,
            address: record.address,
            epoch: record.epoch.max(revision),
        }))
    }

    /// Every member record of the cluster, in key order. A record that
    /// cannot be read is reported, not skipped.
    pub(crate) async fn all_members(&self) -> Result<Vec<MemberRecord>> {
        let prefix = self.keys.members();
        let listed = self
            .directory
            .list(&prefix)
            .await
            .map_err(|e| self.error(&e))?;
        listed
            .iter()
            .map(|kv| MemberRecord::decode(&kv.value, &show(&kv.key)).map_err(|e| self.error(&e)))
            .collect()
    }

    /// The members of the group.
    pub(crate) async fn members(&self) -> Result<Vec<Member>> {
        self.check_group()?;
        Ok(self
            .all_members()
            .await?
            .into_iter()
            .filter(|m| m.group == self.group)
            .map(|m| Member {
                primary: m.role == Role::Primary,
                node: m.node,
                address: m.address,
            })
            .collect())
    }

    /// The group's epoch history.
    pub(crate) async fn history(&self) -> Result<Vec<EpochStart>> {
        self.check_group()?;
        let prefix = self.key(self.keys.history(&self.group))?;
        let listed = self
            .directory
            .list(&prefix)
            .await
            .map_err(|e| self.error(&e))?;
        listed
            .iter()
            .map(|kv| EpochStart::decode(&kv.value, &show(&kv.key)).map_err(|e| self.error(&e)))
            .collect()
    }
}

/// What one seed said of itself.
#[derive(Debug, Clone)]
pub(crate) struct SeedStatus {
    pub(crate) address: String,
    pub(crate) status: strata_proto::v1::StatusResponse,
}

/// Asks every seed for its status (each under `timeout`); failures are
/// recorded in `tried`.
pub(crate) async fn ask_seeds(
    pool: &Pool,
    seeds: &[String],
    timeout: Duration,
    tried: &mut Vec<Attempt>,
) -> Vec<SeedStatus> {
    let mut answers = Vec::new();
    for seed in seeds {
        let address = pool.url(seed);
        match status_of(pool, &address, timeout).await {
            Ok(status) => answers.push(SeedStatus { address, status }),
            Err(said) => crate::client::note(tried, Attempt::new(address, None, said)),
        }
    }
    answers
}

/// One node's `Admin.Status`.
pub(crate) async fn status_of(
    pool: &Pool,
    address: &str,
    timeout: Duration,
) -> Result<strata_proto::v1::StatusResponse, String> {
    let mut admin = pool.admin(address)?;
    match tokio::time::timeout(timeout, admin.status(StatusRequest {})).await {
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        Ok(Err(status)) => Err(format!("Admin.Status: {}", crate::wire::describe(&status))),
        Err(_) => Err(format!("Admin.Status: no answer within {timeout:?}")),
    }
}

/// The primary the seeds' answers point at (see the module doc).
pub(crate) fn primary_from_seeds(answers: &[SeedStatus]) -> Result<Primary, String> {
    let own = answers
        .iter()
        .filter(|a| a.status.role == "primary")
        .max_by_key(|a| a.status.epoch);
    if let Some(seed) = own {
        let node = if seed.status.node.is_empty() {
            seed.address.clone()
        } else {
            seed.status.node.clone()
        };
        return Ok(Primary {
            node,
            address: seed.address.clone(),
            epoch: seed.status.epoch,
        });
    }
    let named = answers
        .iter()
        .filter(|a| !a.status.primary_address.is_empty())
        .max_by_key(|a| a.status.epoch);
    // A replica outside a cluster names no primary, only the upstream it
    // follows: usually the primary (a node further down a cascade refuses
    // the write, and the client rediscovers).
    let upstream = answers
        .iter()
        .filter(|a| a.status.primary_address.is_empty() && !a.status.upstream.is_empty())
        .max_by_key(|a| a.status.epoch);
    match named {
        None if let Some(seed) = upstream => Ok(Primary {
            node: seed.status.upstream.clone(),
            address: seed.status.upstream.clone(),
            epoch: seed.status.epoch,
        }),
        Some(seed) => Ok(Primary {
            node: if seed.status.primary_node.is_empty() {
                seed.status.primary_address.clone()
            } else {
                seed.status.primary_node.clone()
            },
            address: seed.status.primary_address.clone(),
            epoch: seed.status.epoch,
        }),
        None if answers.is_empty() => Err("no seed answered".into()),
        None => Err("no seed is primary or knows one".into()),
    }
}

/// The members the seeds' answers show: every seed that answered, and
/// the primary one of them names.
pub(crate) fn members_from_seeds(answers: &[SeedStatus]) -> Vec<Member> {
    let mut members: Vec<Member> = answers
        .iter()
        .map(|a| Member {
            node: if a.status.node.is_empty() {
                a.address.clone()
            } else {
                a.status.node.clone()
            },
            address: a.address.clone(),
            primary: a.status.role == "primary",
        })
        .collect();
    if let Ok(primary) = primary_from_seeds(answers)
        && !members.iter().any(|m| m.address == primary.address)
    {
        members.push(Member {
            node: primary.node,
            address: primary.address,
            primary: true,
        });
    }
    members
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use strata_proto::v1::StatusResponse;

    fn seed(address: &str, role: &str, epoch: u64, primary_address: &str) -> SeedStatus {
        SeedStatus {
            address: address.into(),
            status: StatusResponse {
                role: role.into(),
                epoch,
                primary_address: primary_address.into(),
                ..StatusResponse::default()
            },
        }
    }

    #[test]
    fn a_seed_that_is_primary_wins_over_one_that_names_another() {
        let answers = [
            seed("http://a", "replica", 9, "http://c"),
            seed("http://b", "primary", 7, ""),
            seed("http://d", "primary", 8, ""),
        ];
        let primary = primary_from_seeds(&answers).unwrap();
        assert_eq!((primary.address.as_str(), primary.epoch), ("http://d", 8));
        let named = primary_from_seeds(&answers[..1]).unwrap();
        assert_eq!((named.address.as_str(), named.epoch), ("http://c", 9));
        assert!(primary_from_seeds(&[seed("http://a", "replica", 1, "")]).is_err());
        let mut outside = seed("http://a", "replica", 1, "");
        outside.status.upstream = "http://up".into();
        assert_eq!(primary_from_seeds(&[outside]).unwrap().address, "http://up");
        let members = members_from_seeds(&answers[..1]);
        assert_eq!(members.len(), 2);
    }
}
