//! Member records, and the choice of who takes over a group.
//!
//! Role: every node publishes what the cluster needs to know of it (its
//! address, role, applied sequence number, epoch, group, and whether it
//! holds the whole key space) as a record under its own lease, so a node
//! that dies disappears from the membership when its lease expires. When a
//! group has no primary, [`successor`] picks the member that should
//! campaign: the full replica with the highest applied sequence number, so
//! the new primary has the most of the old one's log.
//!
//! FORMAT of a record (the value of `members/{node}`): a JSON object, so
//! `etcdctl get --prefix strata/` is readable:
//! `{"v":1,"node":"n1","address":"http://127.0.0.1:7001","group":"g1","role":"replica","full":true,"applied_seq":42,"epoch":3}`.
//! Unknown fields are ignored (a newer node's record stays readable); a
//! record without `"v":1` is refused.
//!
//! Invariants: [`successor`] is a pure function of the records it is
//! given, and every node computes the same answer from the same records
//! (ties on the sequence number go to the smallest node name).

use serde::{Deserialize, Serialize};

use crate::coordinator::{Error, Result};

/// What a node is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Accepting writes for its group.
    Primary,
    /// Following its group's primary.
    Replica,
}

/// A node's published record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Format version; always 1.
    pub v: u32,
    /// The node's name.
    pub node: String,
    /// Where clients and replicas reach it.
    pub address: String,
    /// Its range group.
    pub group: String,
    /// Primary or replica.
    pub role: Role,
    /// Whether it holds every key of the group (a range-scoped replica
    /// does not, and never becomes primary).
    pub full: bool,
    /// The highest sequence number it has applied.
    pub applied_seq: u64,
    /// The epoch it serves or follows.
    pub epoch: u64,
}

impl MemberRecord {
    /// The record as stored.
    ///
    /// ```
    /// use strata_cluster::{MemberRecord, Role};
    /// let r = MemberRecord { v: 1, node: "n1".into(), address: "http://127.0.0.1:7001".into(),
    ///     group: "g1".into(), role: Role::Replica, full: true, applied_seq: 42, epoch: 3 };
    /// assert_eq!(MemberRecord::decode(&r.encode(), "members/n1").unwrap(), r);
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings and integers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a record read from `key` (named in the error).
    pub fn decode(bytes: &[u8], key: &str) -> Result<MemberRecord> {
        let record: MemberRecord = serde_json::from_slice(bytes).map_err(|e| Error::Rejected {
            what: "member record",
            detail: format!("{key}: not a member record: {e}"),
        })?;
        if record.v != 1 {
            return Err(Error::Rejected {
                what: "member record",
                detail: format!("{key}: format version {} (this node reads 1)", record.v),
            });
        }
        Ok(record)
    }
}

/// The member of `group` that should campaign when the group has no
/// primary: a full replica with the highest applied sequence number (ties:
/// the smallest name). `None` when no member is eligible.
///
/// ```
/// use strata_cluster::{successor, MemberRecord, Role};
/// let m = |node: &str, full, seq| MemberRecord { v: 1, node: node.into(), address: String::new(),
///     group: "g".into(), role: Role::Replica, full, applied_seq: seq, epoch: 1 };
/// let members = [m("a", true, 10), m("b", true, 12), m("c", false, 99)];
/// assert_eq!(successor(&members, "g").unwrap().node, "b");
/// ```
pub fn successor<'a>(members: &'a [MemberRecord], group: &str) -> Option<&'a MemberRecord> {
    members
        .iter()
        .filter(|m| m.group == group && m.role == Role::Replica && m.full)
        .max_by(|a, b| {
            a.applied_seq
                .cmp(&b.applied_seq)
                .then_with(|| b.node.cmp(&a.node))
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn member(node: &str, group: &str, role: Role, full: bool, seq: u64) -> MemberRecord {
        MemberRecord {
            v: 1,
            node: node.into(),
            address: format!("http://127.0.0.1/{node}"),
            group: group.into(),
            role,
            full,
            applied_seq: seq,
            epoch: 1,
        }
    }

    #[test]
    fn the_most_advanced_full_replica_of_the_group_is_chosen() {
        let members = [
            member("p", "g", Role::Primary, true, 100),
            member("r1", "g", Role::Replica, true, 90),
            member("r2", "g", Role::Replica, true, 95),
            member("scoped", "g", Role::Replica, false, 99),
            member("other", "h", Role::Replica, true, 1000),
        ];
        assert_eq!(successor(&members, "g").unwrap().node, "r2");
        assert_eq!(successor(&members, "h").unwrap().node, "other");
        assert!(successor(&members, "none").is_none());
    }

    #[test]
    fn ties_go_to_the_smallest_name_whatever_the_order() {
        let a = member("a", "g", Role::Replica, true, 7);
        let b = member("b", "g", Role::Replica, true, 7);
        assert_eq!(successor(&[a.clone(), b.clone()], "g").unwrap().node, "a");
        assert_eq!(successor(&[b, a], "g").unwrap().node, "a");
    }

    #[test]
    fn records_round_trip_and_bad_ones_name_their_key() {
        let r = member("n", "g", Role::Primary, true, 3);
        assert_eq!(MemberRecord::decode(&r.encode(), "k").unwrap(), r);
        let err = MemberRecord::decode(b"{not json", "strata/c/members/n").unwrap_err();
        assert!(err.to_string().contains("strata/c/members/n"), "{err}");
        let mut newer = serde_json::to_value(&r).unwrap();
        newer["v"] = 2.into();
        newer["extra"] = "ignored".into();
        let err = MemberRecord::decode(newer.to_string().as_bytes(), "k").unwrap_err();
        assert!(err.to_string().contains("format version 2"), "{err}");
    }
}
