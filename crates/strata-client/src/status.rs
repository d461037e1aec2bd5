//! The cluster report: every group, its members, and how far each is
//! behind its primary.
//!
//! Role: what `strata cluster status` prints. The member records in etcd
//! say who belongs where; each member's own `Admin.Status` says what it
//! is doing now (a record is rewritten only when it changes, so its
//! applied sequence number may be old). The primary's status gives the
//! time left on its lease.
//!
//! Invariants: a member that does not answer is reported with its error
//! and the figures of its record, never left out; etcd that cannot be
//! reached is [`Error::Coordinator`] naming the endpoints.

use std::collections::BTreeMap;
use std::fmt;

use strata_cluster::{MemberRecord, Role};

use crate::client::Client;
use crate::discovery;
use crate::error::{Error, Result};

/// One member of a group, as it answered (or as its record says).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberStatus {
    /// The node's name.
    pub node: String,
    /// Where it is reached.
    pub address: String,
    /// `primary` or `replica`.
    pub role: String,
    /// The epoch it serves or follows.
    pub epoch: u64,
    /// The highest sequence number it has applied.
    pub applied_seq: u64,
    /// How many sequence numbers it is behind the primary (when the
    /// primary answered).
    pub lag: Option<u64>,
    /// Why its figures come from its record: its status call failed.
    pub error: Option<String>,
}

/// One range group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStatus {
    /// The group's name.
    pub group: String,
    /// Its primary's node name, or why there is none.
    pub primary: Result<String, String>,
    /// The primary's epoch as etcd shows it (see [`crate::Primary::epoch`]).
    pub epoch: Option<u64>,
    /// The time left on the primary's lease, as it reported it
    /// (milliseconds).
    pub lease_millis_left: Option<u64>,
    /// Its members, by node name.
    pub members: Vec<MemberStatus>,
}

/// One line for the group, then one per member, as `strata cluster
/// status` prints them:
///
/// ```text
/// group g1  primary n2  epoch 41  lease left 4200 ms
///   n1  replica  http://127.0.0.1:7001  epoch 41  applied 1200  lag 3
///   n2  primary  http://127.0.0.1:7002  epoch 41  applied 1203  lag 0
/// ```
impl fmt::Display for GroupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.primary, self.epoch) {
            (Ok(primary), Some(epoch)) => {
                write!(
                    f,
                    "group {}  primary {primary}  epoch {epoch}  lease left ",
                    self.group
                )?;
                match self.lease_millis_left {
                    Some(ms) => writeln!(f, "{ms} ms")?,
                    None => writeln!(f, "unknown (the primary did not answer)")?,
                }
            }
            (Ok(primary), None) => writeln!(f, "group {}  primary {primary}", self.group)?,
            (Err(why), _) => writeln!(f, "group {}  no primary: {why}", self.group)?,
        }
        for m in &self.members {
            write!(
                f,
                "  {}  {}  {}  epoch {}  applied {}  lag ",
                m.node, m.role, m.address, m.epoch, m.applied_seq
            )?;
            match m.lag {
                Some(lag) => write!(f, "{lag}")?,
                None => write!(f, "?")?,
            }
            if let Some(error) = &m.error {
                write!(f, "  (from its record; not answering: {error})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl Client {
    /// Every group of the cluster with its members, from etcd and each
    /// member's `Admin.Status` (the configured group plays no part).
    ///
    /// # Errors
    /// [`Error::Config`] without an etcd source; [`Error::Coordinator`]
    /// when etcd cannot be reached or holds a record that cannot be read.
    pub async fn cluster_status(&self) -> Result<Vec<GroupStatus>> {
        let Some(etcd) = &self.inner.etcd else {
            return Err(Error::Config {
                detail: "a cluster status needs an etcd source".into(),
            });
        };
        let mut groups: BTreeMap<String, Vec<MemberRecord>> = BTreeMap::new();
        for record in etcd.all_members().await? {
            groups.entry(record.group.clone()).or_default().push(record);
        }
        let mut report = Vec::new();
        for (group, mut records) in groups {
            records.sort_by(|a, b| a.node.cmp(&b.node));
            let primary = etcd.primary_of(&group).await?;
            report.push(self.group_status(group, primary, records).await);
        }
        Ok(report)
    }

    async fn group_status(
        &self,
        group: String,
        primary: Result<discovery::Primary, String>,
        records: Vec<MemberRecord>,
    ) -> GroupStatus {
        let timeout = self.inner.config.request_timeout;
        let mut members = Vec::new();
        let mut primary_seq = None;
        let mut lease_millis_left = None;
        for record in records {
            let address = self.inner.pool.url(&record.address);
            let member = match discovery::status_of(&self.inner.pool, &address, timeout).await {
                Ok(status) => {
                    if primary.as_ref().is_ok_and(|p| p.node == record.node) {
                        primary_seq = Some(status.last_seq);
                        lease_millis_left = Some(status.lease_millis_left);
                    }
                    MemberStatus {
                        node: record.node,
                        address,
                        role: status.role,
                        epoch: status.epoch,
                        applied_seq: status.last_seq,
                        lag: None,
                        error: None,
                    }
                }
                Err(error) => MemberStatus {
                    node: record.node,
                    address,
                    role: match record.role {
                        Role::Primary => "primary".into(),
                        Role::Replica => "replica".into(),
                    },
                    epoch: record.epoch,
                    applied_seq: record.applied_seq,
                    lag: None,
                    error: Some(error),
                },
            };
            members.push(member);
        }
        for member in &mut members {
            member.lag = primary_seq.map(|p| p.saturating_sub(member.applied_seq));
        }
        GroupStatus {
            group,
            epoch: primary.as_ref().ok().map(|p| p.epoch),
            primary: primary.map(|p| p.node),
            lease_millis_left,
            members,
        }
    }
}
