//! The placement controller's decisions: which split or move comes next,
//! from the range map, the stored layout and each range's figures.
//!
//! Role: a pure function ([`decide`]), so every rule of placement is a
//! unit test. The controller (run by whichever member holds the
//! `controller` key in etcd, `crates/strata-server/src/controller.rs`)
//! gathers the figures, asks for one action per round and carries it out
//! with the same mover as `strata cluster move`.
//!
//! Order of concerns, one action per round:
//! 1. Placement rules: a range holding keys under a rule's prefix on a
//!    group without the rule's tags is split at the prefix's bounds (so
//!    only the keys under it move), then moved to the eligible group with
//!    the fewest bytes.
//! 2. Size and heat: a range over `split_bytes` or `split_writes_per_sec`
//!    is split at the middle of its keys.
//! 3. Balance, only when the layout pins no range: the group with the
//!    most load (its share of bytes plus its share of writes) gives the
//!    range that best halves the gap to the group with the least, if the
//!    gap is over `balance_gap` and the move breaks no rule.
//!
//! Invariants: no action ever puts a range on a group a rule forbids
//! (every move's target is checked with [`Layout::allows`]); no action
//! touches a range that is moving.

use crate::coordinator::prefix_end;
use crate::layout::Layout;
use crate::ranges::{RangeEntry, RangeMap, show_key};

/// The figures of one range, from its owner's primary.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeFigures {
    /// The range's start (the map entry's).
    pub start: Vec<u8>,
    /// Bytes of keys and values (a lower bound if not `complete`).
    pub bytes: u64,
    /// Keys (a lower bound if not `complete`).
    pub keys: u64,
    /// Writes per second lately.
    pub writes_per_sec: f64,
    /// A key near the middle, strictly inside the range, if known.
    pub middle: Option<Vec<u8>>,
}

/// The controller's thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementConfig {
    /// Split a range holding more bytes than this.
    pub split_bytes: u64,
    /// Split a range taking more writes per second than this.
    pub split_writes_per_sec: f64,
    /// Move a range when the most and least loaded groups' loads (each a
    /// share of bytes plus a share of writes, 0 to 2) differ by more.
    pub balance_gap: f64,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            split_bytes: 64 << 20,
            split_writes_per_sec: 5_000.0,
            balance_gap: 0.3,
        }
    }
}

/// What the controller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Split the range holding `at` at `at`.
    Split {
        /// The new range's first key.
        at: Vec<u8>,
        /// Why.
        why: String,
    },
    /// Move the range starting at `start` to `to`.
    Move {
        /// The range.
        start: Vec<u8>,
        /// The target group.
        to: String,
        /// Why.
        why: String,
    },
}

fn inside(entry: &RangeEntry, key: &[u8]) -> bool {
    key > entry.start.as_slice() && entry.end.as_deref().is_none_or(|e| key < e)
}

/// The next action, if any. `groups` are the groups that can take a
/// range now (a primary is up).
pub fn decide(
    map: &RangeMap,
    layout: Option<&Layout>,
    figures: &[RangeFigures],
    groups: &[String],
    config: &PlacementConfig,
) -> Option<Action> {
    let figure = |start: &[u8]| figures.iter().find(|f| f.start == start);
    let bytes_of = |group: &str| -> u64 {
        map.entries()
            .iter()
            .filter(|e| e.group == group)
            .filter_map(|e| figure(&e.start))
            .map(|f| f.bytes)
            .sum()
    };
    let settled = |e: &&RangeEntry| e.moving.is_none();

    // 1. Placement rules.
    if let Some(layout) = layout {
        for entry in map.entries().iter().filter(settled) {
            if layout.allows(&entry.group, &entry.start, entry.end.as_deref()) {
                continue;
            }
            for rule in &layout.rules {
                let prefix = rule.prefix.as_bytes();
                let end = prefix_end(prefix);
                for at in [prefix, end.as_slice()] {
                    if at != [0] && inside(entry, at) {
                        return Some(Action::Split {
                            at: at.to_vec(),
                            why: format!(
                                "range {} holds keys under the rule for {:?} and others",
                                entry.describe(),
                                rule.prefix
                            ),
                        });
                    }
                }
            }
            let target = groups
                .iter()
                .filter(|g| **g != entry.group)
                .filter(|g| layout.allows(g, &entry.start, entry.end.as_deref()))
                .min_by_key(|g| (bytes_of(g), (*g).clone()));
            if let Some(to) = target {
                return Some(Action::Move {
                    start: entry.start.clone(),
                    to: to.clone(),
                    why: format!(
                        "range {} on {} breaks a placement rule",
                        entry.describe(),
                        entry.group
                    ),
                });
            }
        }
    }

    // 2. Size and heat.
    for entry in map.entries().iter().filter(settled) {
        let Some(f) = figure(&entry.start) else {
            continue;
        };
        let hot = f.writes_per_sec > config.split_writes_per_sec;
        if (f.bytes > config.split_bytes || hot)
            && let Some(middle) = f.middle.as_deref().filter(|m| inside(entry, m))
        {
            return Some(Action::Split {
                at: middle.to_vec(),
                why: format!(
                    "range {} holds {} bytes in {} keys, {:.0} writes/s (split at {}, over {} bytes or {:.0} writes/s)",
                    entry.describe(),
                    f.bytes,
                    f.keys,
                    f.writes_per_sec,
                    show_key(middle),
                    config.split_bytes,
                    config.split_writes_per_sec
                ),
            });
        }
    }

    // 3. Balance, unless the layout pins the ranges.
    if layout.is_some_and(|l| !l.ranges.is_empty()) || groups.len() < 2 {
        return None;
    }
    let total_bytes: u64 = figures.iter().map(|f| f.bytes).sum::<u64>().max(1);
    let total_writes: f64 = figures
        .iter()
        .map(|f| f.writes_per_sec)
        .sum::<f64>()
        .max(1.0);
    let load_of =
        |f: &RangeFigures| f.bytes as f64 / total_bytes as f64 + f.writes_per_sec / total_writes;
    let group_load = |g: &str| -> f64 {
        map.entries()
            .iter()
            .filter(|e| e.group == g)
            .filter_map(|e| figure(&e.start))
            .map(load_of)
            .sum()
    };
    let mut loads: Vec<(f64, &String)> = groups.iter().map(|g| (group_load(g), g)).collect();
    loads.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
    let (Some((low, light)), Some((high, heavy))) = (loads.first(), loads.last()) else {
        return None;
    };
    let gap = high - low;
    if gap <= config.balance_gap {
        return None;
    }
    let candidates: Vec<&RangeEntry> = map
        .entries()
        .iter()
        .filter(settled)
        .filter(|e| &e.group == *heavy)
        .collect();
    if candidates.len() < 2 {
        return None;
    }
    let best = candidates
        .into_iter()
        .filter(|e| layout.is_none_or(|l| l.allows(light, &e.start, e.end.as_deref())))
        .filter_map(|e| figure(&e.start).map(|f| (e, load_of(f))))
        // Moving it must narrow the gap: its load below the gap.
        .filter(|(_, load)| *load > 0.0 && *load < gap)
        .min_by(|a, b| (a.1 - gap / 2.0).abs().total_cmp(&(b.1 - gap / 2.0).abs()))?;
    Some(Action::Move {
        start: best.0.start.clone(),
        to: (*light).clone(),
        why: format!(
            "balance: {heavy} carries load {high:.2}, {light} {low:.2}; range {} carries {:.2}",
            best.0.describe(),
            best.1
        ),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::layout::{GroupSpec, Rule};

    fn map(ranges: &[(&str, &str)]) -> RangeMap {
        let entries = ranges
            .iter()
            .enumerate()
            .map(|(i, (start, group))| RangeEntry {
                start: start.as_bytes().to_vec(),
                end: ranges.get(i + 1).map(|(s, _)| s.as_bytes().to_vec()),
                group: (*group).to_string(),
                split_version: 1,
                move_version: 1,
                moving: None,
                mod_revision: 1,
            })
            .collect();
        RangeMap::new(entries, 1).unwrap()
    }

    fn fig(start: &str, bytes: u64, wps: f64, middle: Option<&str>) -> RangeFigures {
        RangeFigures {
            start: start.as_bytes().to_vec(),
            bytes,
            keys: bytes / 10,
            writes_per_sec: wps,
            middle: middle.map(|m| m.as_bytes().to_vec()),
        }
    }

    fn layout(pinned: bool) -> Layout {
        Layout {
            cluster: "c".into(),
            replicas_per_group: 1,
            groups: vec![
                GroupSpec {
                    name: "g1".into(),
                    nodes: vec![],
                    tags: vec![],
                },
                GroupSpec {
                    name: "g2".into(),
                    nodes: vec![],
                    tags: vec!["eu".into()],
                },
            ],
            rules: vec![Rule {
                prefix: "eu/".into(),
                tags: vec!["eu".into()],
            }],
            ranges: if pinned {
                vec![crate::layout::RangeSpec {
                    start: String::new(),
                    group: "g1".into(),
                }]
            } else {
                vec![]
            },
        }
    }

    fn groups() -> Vec<String> {
        vec!["g1".into(), "g2".into()]
    }

    #[test]
    fn a_rule_is_enforced_by_splitting_at_its_prefix_then_moving() {
        let config = PlacementConfig::default();
        let l = layout(false);
        let m = map(&[("", "g1")]);
        let a = decide(&m, Some(&l), &[fig("", 10, 0.0, None)], &groups(), &config).unwrap();
        assert_eq!(
            a,
            Action::Split {
                at: b"eu/".to_vec(),
                why: a_why(&a)
            }
        );
        let m = map(&[("", "g1"), ("eu/", "g1")]);
        let a = decide(&m, Some(&l), &[], &groups(), &config).unwrap();
        assert_eq!(
            a,
            Action::Split {
                at: b"eu0".to_vec(),
                why: a_why(&a)
            }
        );
        let m = map(&[("", "g1"), ("eu/", "g1"), ("eu0", "g1")]);
        let a = decide(&m, Some(&l), &[], &groups(), &config).unwrap();
        assert!(
            matches!(&a, Action::Move { start, to, .. } if start == b"eu/" && to == "g2"),
            "{a:?}"
        );
        // Kept: nothing to do.
        let m = map(&[("", "g1"), ("eu/", "g2"), ("eu0", "g1")]);
        assert_eq!(decide(&m, Some(&l), &[], &groups(), &config), None);
    }

    fn a_why(a: &Action) -> String {
        match a {
            Action::Split { why, .. } | Action::Move { why, .. } => why.clone(),
        }
    }

    #[test]
    fn large_or_hot_ranges_split_at_their_middle() {
        let config = PlacementConfig {
            split_bytes: 1000,
            split_writes_per_sec: 100.0,
            balance_gap: 10.0,
        };
        let m = map(&[("", "g1"), ("m", "g2")]);
        let big = [fig("", 5000, 0.0, Some("f")), fig("m", 10, 0.0, Some("p"))];
        let a = decide(&m, None, &big, &groups(), &config).unwrap();
        assert!(
            matches!(&a, Action::Split { at, .. } if at == b"f"),
            "{a:?}"
        );
        let hot = [fig("", 10, 0.0, Some("f")), fig("m", 10, 500.0, Some("p"))];
        let a = decide(&m, None, &hot, &groups(), &config).unwrap();
        assert!(
            matches!(&a, Action::Split { at, .. } if at == b"p"),
            "{a:?}"
        );
        // A middle outside the range is never used.
        let odd = [fig("", 5000, 0.0, Some("z"))];
        assert_eq!(decide(&m, None, &odd, &groups(), &config), None);
    }

    #[test]
    fn balancing_moves_the_range_that_halves_the_gap_and_never_breaks_a_rule() {
        let config = PlacementConfig::default();
        let m = map(&[
            ("", "g1"),
            ("eu/", "g2"),
            ("eu0", "g1"),
            ("m", "g1"),
            ("t", "g1"),
        ]);
        let figures = [
            fig("", 100, 0.0, None),
            fig("eu/", 10, 0.0, None),
            fig("eu0", 100, 0.0, None),
            fig("m", 400, 0.0, None),
            fig("t", 100, 0.0, None),
        ];
        let a = decide(&m, Some(&layout(false)), &figures, &groups(), &config).unwrap();
        // Gap: g1 has 700 of 710 bytes; moving [m, t) (400) halves it best.
        assert!(
            matches!(&a, Action::Move { start, to, .. } if start == b"m" && to == "g2"),
            "{a:?}"
        );
        // With the eu/ range the heaviest on g2 and g1 light, it stays: no
        // rule allows it on g1.
        let m = map(&[("", "g1"), ("eu/", "g2"), ("eu0", "g2")]);
        let figures = [
            fig("", 10, 0.0, None),
            fig("eu/", 500, 0.0, None),
            fig("eu0", 400, 0.0, None),
        ];
        let a = decide(&m, Some(&layout(false)), &figures, &groups(), &config).unwrap();
        assert!(
            matches!(&a, Action::Move { start, to, .. } if start == b"eu0" && to == "g1"),
            "{a:?}"
        );
        // Pinned ranges are not balanced.
        let pinned = layout(true);
        let m = map(&[("", "g1"), ("eu/", "g2"), ("eu0", "g1"), ("m", "g1")]);
        let figures = [
            fig("", 10, 0.0, None),
            fig("eu/", 0, 0.0, None),
            fig("eu0", 400, 0.0, None),
            fig("m", 400, 0.0, None),
        ];
        assert_eq!(
            decide(&m, Some(&pinned), &figures, &groups(), &config),
            None
        );
    }
}
