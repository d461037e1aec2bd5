//! The cluster's layout declared as code: groups with their nodes and
//! tags, replicas per group, placement rules, and where ranges start and
//! which group holds them; and the plan that brings the live cluster to
//! it.
//!
//! Role: a pure model and a pure diff. [`Layout`] is what an operator
//! keeps in version control (TOML, parsed by the server's CLI; its
//! fields are documented in `docs/operations.md` "Layout files") and what
//! `strata cluster apply` stores in etcd (`layout`, JSON) so the
//! placement controller follows the same rules. [`plan`] compares a
//! layout with the live map, the stored layout and the members, and lists
//! the [`Change`]s in the order they must be carried out; applying them
//! and planning again yields no change.
//!
//! Invariants:
//! - A layout that breaks its own rules (a range placed on a group
//!   without the tag a rule asks for) is refused by [`Layout::check`],
//!   never planned.
//! - A plan only splits and moves; it never merges a range the live map
//!   has and the layout does not name (the controller's splits are kept).

use serde::{Deserialize, Serialize};

use crate::coordinator::{Error, Result};
use crate::keys::check_name;
use crate::membership::MemberRecord;
use crate::ranges::{RangeMap, show_key};

/// One range group of the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Its name.
    pub name: String,
    /// The nodes expected in it (each runs with `[cluster] group = name`).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Its tags (for placement rules), e.g. `["eu"]`.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A placement rule: keys under `prefix` live only on groups holding
/// every tag of `tags`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The key prefix (text).
    pub prefix: String,
    /// The tags a group must hold.
    pub tags: Vec<String>,
}

/// A range boundary and its group: from `start` to the next declared
/// start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSpec {
    /// The first key (text; `""` for the first range).
    pub start: String,
    /// The group holding it.
    pub group: String,
}

/// The whole layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// The cluster it is for.
    pub cluster: String,
    /// Replicas each group should have besides its primary.
    #[serde(default)]
    pub replicas_per_group: u32,
    /// The groups.
    #[serde(default, rename = "groups")]
    pub groups: Vec<GroupSpec>,
    /// Placement rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Range boundaries and their groups, in key order, the first at "".
    #[serde(default)]
    pub ranges: Vec<RangeSpec>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Store the layout (groups, tags, rules) in etcd for the controller.
    StoreLayout,
    /// Create the range map, every key in `group`.
    CreateMap {
        /// The group.
        group: String,
    },
    /// Split the range holding `at` at `at`.
    Split {
        /// The new range's first key.
        at: Vec<u8>,
    },
    /// Move the range starting at `start` from `from` to `to`.
    Move {
        /// The range's first key.
        start: Vec<u8>,
        /// Its group now.
        from: String,
        /// The group the layout gives it.
        to: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::StoreLayout => write!(f, "~ store the layout (groups, tags, rules) in etcd"),
            Change::CreateMap { group } => {
                write!(f, "+ create the range map: every key in {group}")
            }
            Change::Split { at } => write!(f, "+ split at {}", show_key(at)),
            Change::Move { start, from, to } => {
                write!(
                    f,
                    "~ move the range at {} from {from} to {to}",
                    show_key(start)
                )
            }
        }
    }
}

/// What [`plan`] found: the changes, in order, and what it cannot change
/// (nodes are processes the operator runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The changes, in the order `apply` carries them out.
    pub changes: Vec<Change>,
    /// Differences the plan cannot act on (missing or unexpected nodes).
    pub warnings: Vec<String>,
}

fn invalid(detail: String) -> Error {
    Error::Rejected {
        what: "layout",
        detail,
    }
}

impl Layout {
    /// Checks the layout: names, no group twice, ranges in key order
    /// starting at "", every range's group declared, rules satisfiable
    /// and kept by the declared ranges.
    ///
    /// ```
    /// use strata_cluster::{GroupSpec, Layout, RangeSpec, Rule};
    /// let group = |n: &str, t: &[&str]| GroupSpec { name: n.into(), nodes: vec![],
    ///     tags: t.iter().map(|s| s.to_string()).collect() };
    /// let mut layout = Layout { cluster: "shop".into(), replicas_per_group: 1,
    ///     groups: vec![group("g1", &[]), group("g2", &["eu"])],
    ///     rules: vec![Rule { prefix: "eu/".into(), tags: vec!["eu".into()] }],
    ///     ranges: vec![RangeSpec { start: "".into(), group: "g1".into() },
    ///                  RangeSpec { start: "eu/".into(), group: "g2".into() },
    ///                  RangeSpec { start: "eu0".into(), group: "g1".into() }] };
    /// assert!(layout.check().is_ok());
    /// layout.ranges[1].group = "g1".into(); // eu/ keys on a group without "eu"
    /// assert!(layout.check().is_err());
    /// ```
    pub fn check(&self) -> Result<()> {
        check_name("cluster", &self.cluster)?;
        for (i, g) in self.groups.iter().enumerate() {
            check_name("range group", &g.name)?;
            for node in &g.nodes {
                check_name("node", node)?;
            }
            if self.groups.iter().take(i).any(|o| o.name == g.name) {
                return Err(invalid(format!("group {} is declared twice", g.name)));
            }
            for node in &g.nodes {
                if let Some(other) = self.groups.iter().take(i).find(|o| o.nodes.contains(node)) {
                    return Err(invalid(format!(
                        "node {node} is in groups {} and {}",
                        other.name, g.name
                    )));
                }
            }
        }
        for rule in &self.rules {
            if rule.prefix.is_empty() {
                return Err(invalid("a rule's prefix is empty".into()));
            }
            if self.eligible(rule).is_empty() {
                return Err(invalid(format!(
                    "rule for {:?}: no group holds the tags {:?}",
                    rule.prefix, rule.tags
                )));
            }
        }
        if let Some(first) = self.ranges.first()
            && !first.start.is_empty()
        {
            return Err(invalid(format!(
                "ranges: the first starts at {:?}, not at \"\"",
                first.start
            )));
        }
        for pair in self.ranges.windows(2) {
            if let [a, b] = pair
                && a.start >= b.start
            {
                return Err(invalid(format!(
                    "ranges: {:?} does not come after {:?}",
                    b.start, a.start
                )));
            }
        }
        for (i, r) in self.ranges.iter().enumerate() {
            let group = self.group(&r.group).ok_or_else(|| {
                invalid(format!(
                    "range at {:?}: group {} is not declared",
                    r.start, r.group
                ))
            })?;
            let end = self.ranges.get(i + 1).map(|n| n.start.as_bytes());
            for rule in &self.rules {
                if overlaps_prefix(r.start.as_bytes(), end, rule.prefix.as_bytes())
                    && !holds(group, rule)
                {
                    return Err(invalid(format!(
                        "range at {:?} on group {} holds keys under {:?}, which the rule keeps on groups tagged {:?}",
                        r.start, r.group, rule.prefix, rule.tags
                    )));
                }
            }
        }
        Ok(())
    }

    /// The declared group named `name`.
    pub fn group(&self, name: &str) -> Option<&GroupSpec> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The groups a rule allows.
    pub fn eligible(&self, rule: &Rule) -> Vec<&GroupSpec> {
        self.groups.iter().filter(|g| holds(g, rule)).collect()
    }

    /// Whether `group` may hold `[start, end)` under every rule.
    pub fn allows(&self, group: &str, start: &[u8], end: Option<&[u8]>) -> bool {
        let Some(spec) = self.group(group) else {
            // A group the layout does not declare is held to no tag only
            // if no rule touches the range.
            return !self
                .rules
                .iter()
                .any(|r| overlaps_prefix(start, end, r.prefix.as_bytes()));
        };
        self.rules
            .iter()
            .filter(|r| overlaps_prefix(start, end, r.prefix.as_bytes()))
            .all(|r| holds(spec, r))
    }

    /// The layout as stored in etcd.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored layout.
    pub fn decode(bytes: &[u8]) -> Result<Layout> {
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("the stored layout: {e}")))
    }
}

fn holds(group: &GroupSpec, rule: &Rule) -> bool {
    rule.tags.iter().all(|t| group.tags.contains(t))
}

/// Whether `[start, end)` holds a key starting with `prefix`.
pub fn overlaps_prefix(start: &[u8], end: Option<&[u8]>, prefix: &[u8]) -> bool {
    let prefix_end = crate::coordinator::prefix_end(prefix);
    let unbounded = prefix_end == [0];
    // [prefix, prefix_end) overlaps [start, end).
    end.is_none_or(|end| prefix < end) && (unbounded || start < prefix_end.as_slice())
}

/// The changes that bring the live cluster (`map`, `stored` layout,
/// `members`) to `layout`, in order: store the layout, create the map,
/// splits, moves.
pub fn plan(
    layout: &Layout,
    map: Option<&RangeMap>,
    stored: Option<&Layout>,
    members: &[MemberRecord],
) -> Result<Plan> {
    layout.check()?;
    let mut plan = Plan::default();
    let placement = |l: &Layout| (l.groups.clone(), l.rules.clone(), l.replicas_per_group);
    if stored.is_none_or(|s| placement(s) != placement(layout) || s.ranges != layout.ranges) {
        plan.changes.push(Change::StoreLayout);
    }
    // The live (or to-be-created) ranges: (start, group).
    let mut live: Vec<(Vec<u8>, String)> = match map {
        Some(map) => map
            .entries()
            .iter()
            .map(|e| (e.start.clone(), e.group.clone()))
            .collect(),
        None => {
            let Some(first) = layout
                .ranges
                .first()
                .map(|r| r.group.clone())
                .or_else(|| layout.groups.first().map(|g| g.name.clone()))
            else {
                return Err(invalid("the layout declares no group".into()));
            };
            plan.changes.push(Change::CreateMap {
                group: first.clone(),
            });
            vec![(Vec::new(), first)]
        }
    };
    // A split at `at`, unless a range starts there: the new range keeps
    // its parent's group.
    let mut split_at = |live: &mut Vec<(Vec<u8>, String)>, at: &[u8]| {
        if live.iter().any(|(s, _)| s == at) {
            return;
        }
        let owner = live
            .iter()
            .rev()
            .find(|(s, _)| s.as_slice() <= at)
            .map(|(_, g)| g.clone())
            .unwrap_or_default();
        plan.changes.push(Change::Split { at: at.to_vec() });
        live.push((at.to_vec(), owner));
        live.sort();
    };
    for spec in &layout.ranges {
        split_at(&mut live, spec.start.as_bytes());
    }
    if layout.ranges.is_empty() {
        // Placement is the controller's, but the rules hold from this
        // apply on: split at each rule's bounds, move what breaks one.
        for rule in &layout.rules {
            let prefix = rule.prefix.as_bytes().to_vec();
            for at in [prefix.clone(), crate::coordinator::prefix_end(&prefix)] {
                if at != [0] {
                    split_at(&mut live, &at);
                }
            }
        }
        let starts: Vec<Vec<u8>> = live.iter().map(|(s, _)| s.clone()).collect();
        for (i, (start, group)) in live.iter().enumerate() {
            let end = starts.get(i + 1).map(Vec::as_slice);
            if !layout.allows(group, start, end)
                && let Some(to) = layout
                    .groups
                    .iter()
                    .find(|g| layout.allows(&g.name, start, end))
            {
                plan.changes.push(Change::Move {
                    start: start.clone(),
                    from: group.clone(),
                    to: to.name.clone(),
                });
            }
        }
    } else {
        for (start, group) in &live {
            let wanted = layout
                .ranges
                .iter()
                .rev()
                .find(|r| r.start.as_bytes() <= start.as_slice())
                .map(|r| r.group.clone())
                .unwrap_or_default();
            if *group != wanted {
                plan.changes.push(Change::Move {
                    start: start.clone(),
                    from: group.clone(),
                    to: wanted,
                });
            }
        }
    }
    // What only the operator can change.
    for g in &layout.groups {
        let running: Vec<&MemberRecord> = members.iter().filter(|m| m.group == g.name).collect();
        for node in &g.nodes {
            if !running.iter().any(|m| &m.node == node) {
                plan.warnings.push(format!(
                    "node {node} of group {} is not running (start it with [cluster] group = {:?})",
                    g.name, g.name
                ));
            }
        }
        if running.len() < 1 + layout.replicas_per_group as usize {
            plan.warnings.push(format!(
                "group {} has {} running member(s); the layout asks for a primary and {} replica(s)",
                g.name,
                running.len(),
                layout.replicas_per_group
            ));
        }
    }
    for m in members {
        if !layout.groups.iter().any(|g| g.nodes.contains(&m.node)) {
            plan.warnings.push(format!(
                "node {} (group {}) is running but not in the layout",
                m.node, m.group
            ));
        }
    }
    Ok(plan)
}

impl crate::keys::ClusterKeys {
    /// The layout `strata cluster apply` stored.
    ///
    /// ```
    /// let keys = strata_cluster::ClusterKeys::new("strata", "shop").unwrap();
    /// assert_eq!(keys.layout(), b"strata/shop/layout".to_vec());
    /// ```
    pub fn layout(&self) -> Vec<u8> {
        let mut key = self.root().to_vec();
        key.extend_from_slice(b"layout");
        key
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::ranges::RangeEntry;

    fn layout() -> Layout {
        Layout {
            cluster: "shop".into(),
            replicas_per_group: 1,
            groups: vec![
                GroupSpec {
                    name: "g1".into(),
                    nodes: vec!["a1".into(), "a2".into()],
                    tags: vec![],
                },
                GroupSpec {
                    name: "g2".into(),
                    nodes: vec!["b1".into(), "b2".into()],
                    tags: vec!["eu".into()],
                },
            ],
            rules: vec![Rule {
                prefix: "eu/".into(),
                tags: vec!["eu".into()],
            }],
            ranges: vec![
                RangeSpec {
                    start: "".into(),
                    group: "g1".into(),
                },
                RangeSpec {
                    start: "eu/".into(),
                    group: "g2".into(),
                },
                RangeSpec {
                    start: "eu0".into(),
                    group: "g1".into(),
                },
                RangeSpec {
                    start: "m".into(),
                    group: "g2".into(),
                },
            ],
        }
    }

    fn member(node: &str, group: &str) -> MemberRecord {
        MemberRecord {
            v: 1,
            node: node.into(),
            address: String::new(),
            group: group.into(),
            role: crate::membership::Role::Replica,
            full: true,
            applied_seq: 0,
            epoch: 0,
        }
    }

    /// Applies a plan's changes to a simulated map.
    fn apply(map: Option<RangeMap>, plan: &Plan) -> RangeMap {
        let mut entries: Vec<RangeEntry> = map.map(|m| m.entries().to_vec()).unwrap_or_default();
        let entry = |start: Vec<u8>, group: &str| RangeEntry {
            start,
            end: None,
            group: group.into(),
            split_version: 1,
            move_version: 1,
            moving: None,
            mod_revision: 1,
        };
        for change in &plan.changes {
            match change {
                Change::StoreLayout => {}
                Change::CreateMap { group } => entries = vec![entry(Vec::new(), group)],
                Change::Split { at } => {
                    let owner = entries
                        .iter()
                        .rev()
                        .find(|e| e.start.as_slice() <= at.as_slice())
                        .unwrap()
                        .group
                        .clone();
                    entries.push(entry(at.clone(), &owner));
                }
                Change::Move { start, to, .. } => {
                    entries
                        .iter_mut()
                        .find(|e| &e.start == start)
                        .unwrap()
                        .group = to.clone();
                }
            }
            entries.sort_by(|a, b| a.start.cmp(&b.start));
            let starts: Vec<Vec<u8>> = entries.iter().map(|e| e.start.clone()).collect();
            for (i, e) in entries.iter_mut().enumerate() {
                e.end = starts.get(i + 1).cloned();
            }
        }
        RangeMap::new(entries, 2).unwrap()
    }

    #[test]
    fn a_plan_lists_the_expected_changes_and_applying_it_leaves_none() {
        let layout = layout();
        let members = [member("a1", "g1"), member("a2", "g1"), member("b1", "g2")];
        let plan = plan(&layout, None, None, &members).unwrap();
        let shown: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "~ store the layout (groups, tags, rules) in etcd",
                "+ create the range map: every key in g1",
                "+ split at \"eu/\"",
                "+ split at \"eu0\"",
                "+ split at \"m\"",
                "~ move the range at \"eu/\" from g1 to g2",
                "~ move the range at \"m\" from g1 to g2",
            ]
        );
        assert_eq!(
            plan.warnings,
            [
                "node b2 of group g2 is not running (start it with [cluster] group = \"g2\")",
                "group g2 has 1 running member(s); the layout asks for a primary and 1 replica(s)"
            ]
        );
        let map = apply(None, &plan);
        let again = super::plan(&layout, Some(&map), Some(&layout), &members).unwrap();
        assert!(again.changes.is_empty(), "{:?}", again.changes);
    }

    #[test]
    fn a_live_split_the_layout_does_not_name_is_kept_and_follows_its_declared_range() {
        let layout = layout();
        let first = plan(&layout, None, None, &[]).unwrap();
        let mut map = apply(None, &first);
        // The controller split [m, end) at "t"; the layout moves [m, end)
        // back to g1: both pieces move, neither is merged.
        let split = Plan {
            changes: vec![Change::Split { at: b"t".to_vec() }],
            warnings: vec![],
        };
        map = apply(Some(map), &split);
        let mut moved = layout.clone();
        moved.ranges[3].group = "g1".into();
        let plan = plan(&moved, Some(&map), Some(&layout), &[]).unwrap();
        let shown: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "~ store the layout (groups, tags, rules) in etcd",
                "~ move the range at \"m\" from g2 to g1",
                "~ move the range at \"t\" from g2 to g1",
            ]
        );
    }

    #[test]
    fn layouts_breaking_their_rules_or_malformed_are_refused_naming_why() {
        let mut bad = layout();
        bad.ranges[1].group = "g1".into();
        let e = bad.check().unwrap_err().to_string();
        assert!(e.contains("\"eu/\"") && e.contains("g1"), "{e}");
        let mut bad = layout();
        bad.ranges.swap(1, 2);
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("does not come after")
        );
        let mut bad = layout();
        bad.groups[1].nodes.push("a1".into());
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("node a1 is in groups")
        );
        let mut bad = layout();
        bad.rules[0].tags = vec!["asia".into()];
        assert!(
            bad.check()
                .unwrap_err()
                .to_string()
                .contains("no group holds")
        );
        // A range over the prefix's end counts as holding it.
        assert!(overlaps_prefix(b"e", Some(b"f"), b"eu/"));
        assert!(!overlaps_prefix(b"eu0", Some(b"f"), b"eu/"));
        assert!(!overlaps_prefix(b"a", Some(b"eu/"), b"eu/"));
        assert!(overlaps_prefix(b"a", None, b"eu/"));
    }

    #[test]
    fn without_pinned_ranges_a_plan_still_makes_the_rules_hold() {
        let mut layout = layout();
        layout.ranges.clear();
        let plan = plan(&layout, None, None, &[]).unwrap();
        let shown: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "~ store the layout (groups, tags, rules) in etcd",
                "+ create the range map: every key in g1",
                "+ split at \"eu/\"",
                "+ split at \"eu0\"",
                "~ move the range at \"eu/\" from g1 to g2",
            ]
        );
    }
}
