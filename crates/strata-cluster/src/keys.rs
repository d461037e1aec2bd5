//! Where a cluster's records live in the coordination store.
//!
//! Role: one place that turns names (cluster, range group, node) into
//! keys, so every reader and writer agrees on the layout, and two clusters
//! sharing one etcd never see each other's keys.
//!
//! LAYOUT (all under `{prefix}/{cluster}/`, `prefix` configurable, default
//! `strata`):
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `members/{node}` | the node's record (address, role, applied sequence number, epoch, group) | the node's |
//! | `groups/{group}/primary` | the primary's node name | the primary's |
//! | `groups/{group}/history/{epoch:020}` | where that epoch's history began ([`crate::EpochStart`]) | none |
//! | `groups/{group}/switchover` | a planned hand-over ([`crate::Switchover`]) | the requester's |
//!
//! Invariants: names are 1 to 64 bytes of `[A-Za-z0-9._-]`, so no name
//! contains `/` and no key is a prefix of another's parent.

use crate::coordinator::{Error, Result};

/// Checks a cluster, group or node name.
///
/// ```
/// assert!(strata_cluster::check_name("node", "eu-1").is_ok());
/// assert!(strata_cluster::check_name("node", "a/b").is_err());
/// ```
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    let invalid = |why| {
        Err(Error::InvalidName {
            what,
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() || name.len() > 64 {
        return invalid("must be 1 to 64 bytes long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("may hold only letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// The keys of one cluster.
///
/// # Examples
///
/// ```
/// let keys = strata_cluster::ClusterKeys::new("strata", "shop").unwrap();
/// assert_eq!(keys.primary("g1").unwrap(), b"strata/shop/groups/g1/primary".to_vec());
/// assert_eq!(keys.members(), b"strata/shop/members/".to_vec());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKeys {
    root: String,
}

impl ClusterKeys {
    /// The keys of `cluster` under `prefix` (a path of names separated by
    /// `/`, each a valid name).
    pub fn new(prefix: &str, cluster: &str) -> Result<ClusterKeys> {
        for part in prefix.split('/') {
            check_name("key prefix part", part)?;
        }
        check_name("cluster", cluster)?;
        Ok(ClusterKeys {
            root: format!("{prefix}/{cluster}/"),
        })
    }

    /// The prefix of every member record.
    pub fn members(&self) -> Vec<u8> {
        format!("{}members/", self.root).into_bytes()
    }

    /// The member record of `node`.
    pub fn member(&self, node: &str) -> Result<Vec<u8>> {
        check_name("node", node)?;
        Ok(format!("{}members/{node}", self.root).into_bytes())
    }

    /// The primary key of `group`.
    pub fn primary(&self, group: &str) -> Result<Vec<u8>> {
        check_name("range group", group)?;
        Ok(format!("{}groups/{group}/primary", self.root).into_bytes())
    }

    /// The prefix of `group`'s epoch history.
    pub fn history(&self, group: &str) -> Result<Vec<u8>> {
        check_name("range group", group)?;
        Ok(format!("{}groups/{group}/history/", self.root).into_bytes())
    }

    /// The history entry of `epoch` in `group` (zero-padded, so the
    /// entries list in epoch order).
    ///
    /// ```
    /// let keys = strata_cluster::ClusterKeys::new("strata", "shop").unwrap();
    /// assert_eq!(keys.history_entry("g1", 7).unwrap(),
    ///     b"strata/shop/groups/g1/history/00000000000000000007".to_vec());
    /// ```
    pub fn history_entry(&self, group: &str, epoch: u64) -> Result<Vec<u8>> {
        let mut key = self.history(group)?;
        key.extend_from_slice(format!("{epoch:020}").as_bytes());
        Ok(key)
    }

    /// The planned switchover of `group`, while one is asked for.
    pub fn switchover(&self, group: &str) -> Result<Vec<u8>> {
        check_name("range group", group)?;
        Ok(format!("{}groups/{group}/switchover", self.root).into_bytes())
    }

    /// The prefix of every key of this cluster.
    pub fn root(&self) -> &[u8] {
        self.root.as_bytes()
    }
}
