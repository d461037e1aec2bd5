//! The compaction policy, as a pure function of a version and the options:
//! what to compact next, if anything.
//!
//! Leveled, as in leveldb and RocksDB:
//! - Level 0 is compacted into level 1 when it holds
//!   `level0_compaction_trigger` tables or more: all of level 0 (its tables
//!   overlap) plus every level-1 table they overlap.
//! - Level `L >= 1` is compacted when its bytes exceed its target
//!   (`level1_bytes_max * level_size_multiplier^(L-1)`): one table of `L`,
//!   chosen round-robin by key (after the last one compacted at that
//!   level), plus every table of `L+1` it overlaps.
//! - The level with the highest score (bytes or tables over target) goes
//!   first.
//! - A single input table with nothing to merge in the next level is moved
//!   by a manifest edit alone (a trivial move), never rewritten.
//! - Range tombstones that every reader sees: tables wholly hidden by one
//!   are dropped by an edit alone; a table that holds data older than one
//!   and overlaps it is rewritten (the rewrite drops what is hidden and
//!   cuts its output at the tombstone's bounds). A tombstone that no table
//!   overlaps with older data is removed ([`removable_tombstones`]).
//!
//! The database calls [`pick`] once per key range, with the range's
//! tables alone ([`Version::restrict`]), and runs the most urgent choice.

use std::sync::Arc;

use strata_format::manifest::TombstoneEntry;

use crate::version::{LEVEL_COUNT, TableMeta, Version};

/// The policy's knobs (a subset of [`crate::Options`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Policy {
    pub(crate) level0_compaction_trigger: usize,
    pub(crate) level1_bytes_max: u64,
    pub(crate) level_size_multiplier: u64,
}

/// A compaction to run.
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    /// The level compacted from.
    pub(crate) level: usize,
    /// Tables of `level`.
    pub(crate) inputs: Vec<Arc<TableMeta>>,
    /// Overlapping tables of `level + 1`.
    pub(crate) next_inputs: Vec<Arc<TableMeta>>,
    /// Whether this is a trivial move (one input, nothing to merge).
    pub(crate) trivial_move: bool,
    /// Where the output goes: `level + 1`, or `level` itself when a table
    /// of the last level is rewritten to collect garbage.
    pub(crate) output_level: usize,
    /// The inputs are wholly hidden by a range tombstone: drop them, write
    /// nothing.
    pub(crate) drop_only: bool,
}

impl Choice {
    pub(crate) fn output_level(&self) -> usize {
        self.output_level
    }
}

/// The target size of `level` (1 and below).
pub(crate) fn level_target_bytes(policy: &Policy, level: usize) -> u64 {
    let mut target = policy.level1_bytes_max;
    for _ in 1..level {
        target = target.saturating_mul(policy.level_size_multiplier);
    }
    target
}

/// Each level's score: level 0 by table count, deeper levels by bytes.
pub(crate) fn scores(version: &Version, policy: &Policy) -> Vec<(usize, f64)> {
    let mut scores = Vec::with_capacity(LEVEL_COUNT - 1);
    for level in 0..LEVEL_COUNT - 1 {
        let score = if level == 0 {
            version.levels[0].len() as f64 / policy.level0_compaction_trigger.max(1) as f64
        } else {
            version.level_bytes(level) as f64 / level_target_bytes(policy, level).max(1) as f64
        };
        scores.push((level, score));
    }
    scores
}

/// What to compact next, if any level is at or over its target, or else
/// if some table holds garbage that no snapshot needs any more.
/// `cursors[level]` is the largest user key compacted last at that level;
/// `oldest_snapshot` is the oldest sequence number a reader may read at.
pub(crate) fn pick(
    version: &Version,
    policy: &Policy,
    cursors: &[Option<Vec<u8>>],
    oldest_snapshot: u64,
) -> Option<Choice> {
    let by_score = scores(version, policy)
        .into_iter()
        .filter(|&(_, score)| score >= 1.0)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((level, _)) = by_score {
        let tables = version.levels.get(level)?;
        let inputs: Vec<Arc<TableMeta>> = if level == 0 {
            tables.clone()
        } else {
            let after = cursors.get(level).and_then(Option::as_deref);
            let next = tables
                .iter()
                .find(|t| after.is_none_or(|key| t.smallest_user_key() > key))
                .or_else(|| tables.first())?;
            vec![Arc::clone(next)]
        };
        return with_next_level(version, level, inputs);
    }
    if let Some(choice) = tombstone_work(version, oldest_snapshot) {
        return Some(choice);
    }
    garbage_collection(version, oldest_snapshot)
}

fn overlaps_tombstone(t: &TableMeta, ts: &TombstoneEntry) -> bool {
    t.smallest_user_key() < ts.end.as_slice() && t.largest_user_key() >= ts.start.as_slice()
}

/// Drops tables wholly hidden by a range tombstone every reader sees, or
/// rewrites one that overlaps such a tombstone and holds older data.
fn tombstone_work(version: &Version, oldest_snapshot: u64) -> Option<Choice> {
    let settled: Vec<&TombstoneEntry> = version
        .tombstones
        .iter()
        .filter(|ts| ts.seq <= oldest_snapshot)
        .collect();
    if settled.is_empty() {
        return None;
    }
    for (level, tables) in version.levels.iter().enumerate() {
        let hidden: Vec<Arc<TableMeta>> = tables
            .iter()
            .filter(|t| {
                settled.iter().any(|ts| {
                    t.largest_seq < ts.seq
                        && ts.start.as_slice() <= t.smallest_user_key()
                        && t.largest_user_key() < ts.end.as_slice()
                })
            })
            .cloned()
            .collect();
        if !hidden.is_empty() {
            return Some(Choice {
                level,
                inputs: hidden,
                next_inputs: Vec::new(),
                trivial_move: false,
                output_level: level,
                drop_only: true,
            });
        }
    }
    let (level, table) = version
        .levels
        .iter()
        .enumerate()
        .flat_map(|(level, tables)| tables.iter().map(move |t| (level, t)))
        .find(|(_, t)| {
            settled
                .iter()
                .any(|ts| t.smallest_seq < ts.seq && overlaps_tombstone(t, ts))
        })?;
    let mut choice = if level == 0 {
        with_next_level(version, 0, version.levels.first()?.clone())?
    } else if level == LEVEL_COUNT - 1 {
        Choice {
            level,
            inputs: vec![Arc::clone(table)],
            next_inputs: Vec::new(),
            trivial_move: false,
            output_level: level,
            drop_only: false,
        }
    } else {
        with_next_level(version, level, vec![Arc::clone(table)])?
    };
    choice.trivial_move = false;
    Some(choice)
}

/// The range tombstones nothing needs any more: no table they overlap holds
/// data older than them (so they hide nothing). Memtables cannot either: a
/// tombstone reaches the version with the flush of its memtable, after
/// every older memtable.
pub(crate) fn removable_tombstones(version: &Version) -> Vec<TombstoneEntry> {
    version
        .tombstones
        .iter()
        .filter(|ts| {
            !version
                .levels
                .iter()
                .flatten()
                .any(|t| t.smallest_seq < ts.seq && overlaps_tombstone(t, ts))
        })
        .cloned()
        .collect()
}

/// The table with the most garbage that every reader now sees past (all
/// its entries are at or below the oldest snapshot, so of each key only the
/// newest version survives a rewrite). Level 0 is compacted whole: its
/// tables overlap, and one of them cannot move below older ones.
fn garbage_collection(version: &Version, oldest_snapshot: u64) -> Option<Choice> {
    let (level, table) = version
        .levels
        .iter()
        .enumerate()
        .flat_map(|(level, tables)| tables.iter().map(move |t| (level, t)))
        .filter(|(_, t)| t.obsolete_entries > 0 && t.largest_seq <= oldest_snapshot)
        .max_by_key(|(_, t)| t.obsolete_entries)?;
    if level == 0 {
        return with_next_level(version, 0, version.levels.first()?.clone());
    }
    if level == LEVEL_COUNT - 1 {
        return Some(Choice {
            level,
            inputs: vec![Arc::clone(table)],
            next_inputs: Vec::new(),
            trivial_move: false,
            output_level: level,
            drop_only: false,
        });
    }
    with_next_level(version, level, vec![Arc::clone(table)])
}

/// A compaction of `inputs` (from `level`) with every table of the next
/// level they overlap.
fn with_next_level(version: &Version, level: usize, inputs: Vec<Arc<TableMeta>>) -> Option<Choice> {
    let smallest = inputs.iter().map(|t| t.smallest_user_key()).min()?;
    let largest = inputs.iter().map(|t| t.largest_user_key()).max()?;
    let next_inputs: Vec<Arc<TableMeta>> = version
        .levels
        .get(level + 1)?
        .iter()
        .filter(|t| t.overlaps(Some(smallest), Some(largest)))
        .cloned()
        .collect();
    // Tables that overlap nothing below (and not each other) move by a
    // manifest edit alone. A table holding garbage is rewritten, never
    // moved, so the garbage is collected on its way down.
    let mut sorted: Vec<&Arc<TableMeta>> = inputs.iter().collect();
    sorted.sort_by(|a, b| a.smallest_user_key().cmp(b.smallest_user_key()));
    let disjoint = sorted
        .windows(2)
        .all(|pair| matches!(pair, [a, b] if a.largest_user_key() < b.smallest_user_key()));
    let trivial_move =
        next_inputs.is_empty() && disjoint && inputs.iter().all(|t| t.obsolete_entries == 0);
    Some(Choice {
        level,
        inputs,
        next_inputs,
        trivial_move,
        output_level: level + 1,
        drop_only: false,
    })
}

/// Whether no level below `output_level` may hold `key` (so a tombstone for
/// it that no snapshot needs can be dropped).
pub(crate) fn is_bottom_for(version: &Version, output_level: usize, key: &[u8]) -> bool {
    version
        .levels
        .iter()
        .skip(output_level + 1)
        .all(|tables| tables.iter().all(|t| !t.may_contain(key)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use strata_format::manifest::{TableEntry, VersionEdit};

    fn entry(level: u8, number: u64, small: &[u8], large: &[u8], size: u64) -> TableEntry {
        let ikey = |k: &[u8]| {
            let mut v = k.to_vec();
            v.extend_from_slice(&((number << 8) | 2).to_le_bytes());
            v
        };
        TableEntry {
            level,
            number,
            size,
            smallest: ikey(small),
            largest: ikey(large),
            smallest_seq: number,
            largest_seq: number,
            entries: 1,
            obsolete_entries: 0,
        }
    }

    fn version(entries: Vec<TableEntry>) -> Version {
        Version::default()
            .apply(
                &VersionEdit {
                    added: entries,
                    ..Default::default()
                },
                std::path::Path::new("m"),
            )
            .unwrap()
    }

    const POLICY: Policy = Policy {
        level0_compaction_trigger: 4,
        level1_bytes_max: 1000,
        level_size_multiplier: 10,
    };

    #[test]
    fn nothing_to_do_under_every_target() {
        let v = version(vec![
            entry(0, 1, b"a", b"z", 10),
            entry(1, 2, b"a", b"m", 900),
        ]);
        assert!(pick(&v, &POLICY, &[], u64::MAX).is_none());
    }

    #[test]
    fn level0_at_trigger_compacts_all_of_it_with_overlapping_level1() {
        let v = version(vec![
            entry(0, 1, b"a", b"c", 10),
            entry(0, 2, b"b", b"d", 10),
            entry(0, 3, b"c", b"e", 10),
            entry(0, 4, b"a", b"b", 10),
            entry(1, 5, b"a", b"b", 10),
            entry(1, 6, b"x", b"z", 10),
        ]);
        let choice = pick(&v, &POLICY, &[], u64::MAX).unwrap();
        assert_eq!(choice.level, 0);
        assert_eq!(choice.inputs.len(), 4);
        assert_eq!(
            choice
                .next_inputs
                .iter()
                .map(|t| t.number)
                .collect::<Vec<_>>(),
            vec![5]
        );
        assert!(!choice.trivial_move);
    }

    #[test]
    fn oversized_level_compacts_round_robin_and_moves_trivially() {
        let v = version(vec![
            entry(1, 1, b"a", b"c", 800),
            entry(1, 2, b"d", b"f", 800),
            entry(2, 3, b"e", b"e", 5),
        ]);
        let first = pick(&v, &POLICY, &[], u64::MAX).unwrap();
        assert_eq!((first.level, first.inputs[0].number), (1, 1));
        assert!(first.trivial_move);
        let cursors = vec![None, Some(b"c".to_vec())];
        let second = pick(&v, &POLICY, &cursors, u64::MAX).unwrap();
        assert_eq!(second.inputs[0].number, 2);
        assert_eq!(second.next_inputs[0].number, 3);
        assert!(!second.trivial_move);
        // Wraps around after the last table.
        let cursors = vec![None, Some(b"f".to_vec())];
        assert_eq!(
            pick(&v, &POLICY, &cursors, u64::MAX).unwrap().inputs[0].number,
            1
        );
    }

    #[test]
    fn bottom_level_detection() {
        let v = version(vec![entry(1, 1, b"a", b"c", 1), entry(3, 2, b"m", b"p", 1)]);
        assert!(is_bottom_for(&v, 1, b"b"));
        assert!(!is_bottom_for(&v, 1, b"n"));
        assert!(is_bottom_for(&v, 3, b"n"));
    }
}
