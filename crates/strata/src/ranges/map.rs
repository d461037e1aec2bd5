//! The range map: ranges in key order, each `[start, next start)`, the
//! first starting at the empty key and the last unbounded.
//!
//! Invariants (checked when decoded from the manifest, kept by every
//! change): starts strictly increase from the empty key; ids are unique and
//! below `next_id`; ids are never reused (a split or merge gives its
//! results new ids, so an id names one key interval for its whole life).

use strata_format::manifest::{RangeEntry, RangeMapRecord};

/// A key range's id: names one key interval for the range's whole life and
/// is never reused (a split or merge makes new ranges with new ids).
///
/// # Examples
///
/// ```
/// use strata::{Db, MemFileSystem, Options};
/// use std::sync::Arc;
/// let options = Options {
///     file_system: Arc::new(MemFileSystem::new()),
///     initial_split_points: vec![b"m".to_vec()],
///     ..Options::default()
/// };
/// let db = Db::open("d", options)?;
/// let ranges = db.ranges();
/// assert_eq!(ranges.len(), 2);
/// assert_ne!(ranges[0].id, ranges[1].id);
/// # Ok::<(), strata::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RangeId(pub u64);

impl std::fmt::Display for RangeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "range {}", self.0)
    }
}

/// One range: `[start, end)`, `end` `None` for the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) id: RangeId,
    pub(crate) start: Vec<u8>,
    pub(crate) end: Option<Vec<u8>>,
    pub(crate) origin: String,
}

/// The ranges, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangeMap {
    ranges: Vec<Range>,
    next_id: u64,
    /// Each start's first 8 bytes (zero-padded) as a big-endian integer:
    /// routing binary-searches these contiguous integers and compares whole
    /// keys only among starts that share the key's 8-byte prefix.
    prefixes: Vec<u64>,
}

/// A key's first 8 bytes, zero-padded, as a big-endian integer. If
/// `prefix(a) < prefix(b)` then `a < b`.
fn prefix(key: &[u8]) -> u64 {
    if let Some(Ok(first)) = key.get(..8).map(<[u8; 8]>::try_from) {
        return u64::from_be_bytes(first);
    }
    let mut bytes = [0u8; 8];
    for (out, b) in bytes.iter_mut().zip(key) {
        *out = *b;
    }
    u64::from_be_bytes(bytes)
}

fn prefixes(ranges: &[Range]) -> Vec<u64> {
    ranges.iter().map(|r| prefix(&r.start)).collect()
}

impl Default for RangeMap {
    fn default() -> Self {
        Self::with_split_points(&[])
    }
}

/// Shortens a key for origin notes (keys may be long or binary).
pub(crate) fn show_key(key: &[u8]) -> String {
    let shown: String = key
        .iter()
        .take(32)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if key.len() > 32 {
        format!("\"{shown}...\" ({} bytes)", key.len())
    } else {
        format!("\"{shown}\"")
    }
}

impl RangeMap {
    /// One range per interval between `points` (strictly increasing,
    /// non-empty keys; [`crate::Options::validate`] checks them).
    pub(crate) fn with_split_points(points: &[Vec<u8>]) -> Self {
        let mut starts = vec![Vec::new()];
        starts.extend(points.iter().cloned());
        let count = starts.len();
        let ranges = starts
            .iter()
            .enumerate()
            .map(|(i, start)| Range {
                id: RangeId(i as u64),
                start: start.clone(),
                end: starts.get(i + 1).cloned(),
                origin: if count == 1 {
                    "initial range".to_string()
                } else {
                    "initial split point (Options::initial_split_points)".to_string()
                },
            })
            .collect::<Vec<_>>();
        Self {
            prefixes: prefixes(&ranges),
            ranges,
            next_id: count as u64,
        }
    }

    /// The map a manifest record describes (the decoder checked it).
    pub(crate) fn from_record(record: &RangeMapRecord) -> Self {
        let ranges = record
            .ranges
            .iter()
            .enumerate()
            .map(|(i, r)| Range {
                id: RangeId(r.id),
                start: r.start.clone(),
                end: record.ranges.get(i + 1).map(|next| next.start.clone()),
                origin: r.origin.clone(),
            })
            .collect::<Vec<_>>();
        Self {
            prefixes: prefixes(&ranges),
            ranges,
            next_id: record.next_id,
        }
    }

    /// The manifest record of this map.
    pub(crate) fn to_record(&self) -> RangeMapRecord {
        RangeMapRecord {
            ranges: self
                .ranges
                .iter()
                .map(|r| RangeEntry {
                    id: r.id.0,
                    start: r.start.clone(),
                    origin: r.origin.clone(),
                })
                .collect(),
            next_id: self.next_id,
        }
    }

    pub(crate) fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    pub(crate) fn len(&self) -> usize {
        self.ranges.len()
    }

    /// The index of the range holding `key`.
    pub(crate) fn index_of(&self, key: &[u8]) -> usize {
        if self.ranges.len() == 1 {
            return 0;
        }
        let p = prefix(key);
        // Starts with a smaller prefix are below the key; among those with
        // the same prefix, compare whole keys.
        let below = self.prefixes.partition_point(|&s| s < p);
        // Usually none: starts rarely share an 8-byte prefix with the key.
        let same = self
            .prefixes
            .get(below..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&s| s == p)
            .count();
        let at_or_below = self
            .ranges
            .get(below..below + same)
            .unwrap_or_default()
            .partition_point(|r| r.start.as_slice() <= key);
        (below + at_or_below).saturating_sub(1)
    }

    /// The index of range `id`, if the map has it.
    pub(crate) fn position(&self, id: RangeId) -> Option<usize> {
        self.ranges.iter().position(|r| r.id == id)
    }

    /// The map with range `index` split at `at` (which must lie strictly
    /// inside it) into two new ranges.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub(crate) fn split(&self, index: usize, at: &[u8], why: &str) -> Result<Self, String> {
        let range = self
            .ranges
            .get(index)
            .ok_or_else(|| format!("no range at index {index}"))?;
        if at <= range.start.as_slice() || range.end.as_deref().is_some_and(|end| at >= end) {
            return Err(format!(
                "split key {} does not lie strictly inside {} [{}, {})",
                show_key(at),
                range.id,
                show_key(&range.start),
                range
                    .end
                    .as_deref()
                    .map_or_else(|| "end".to_string(), show_key)
            ));
        }
        let origin = format!("split of {} at {}: {why}", range.id, show_key(at));
        let left = Range {
            id: RangeId(self.next_id),
            start: range.start.clone(),
            end: Some(at.to_vec()),
            origin: origin.clone(),
        };
        let right = Range {
            id: RangeId(self.next_id + 1),
            start: at.to_vec(),
            end: range.end.clone(),
            origin,
        };
        let mut ranges = self.ranges.clone();
        ranges.splice(index..=index, [left, right]);
        Ok(Self {
            prefixes: prefixes(&ranges),
            ranges,
            next_id: self.next_id + 2,
        })
    }

    /// The map with ranges `index` and `index + 1` merged into one new
    /// range.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub(crate) fn merge(&self, index: usize, why: &str) -> Result<Self, String> {
        let (Some(left), Some(right)) = (self.ranges.get(index), self.ranges.get(index + 1)) else {
            return Err(format!("no two adjacent ranges at index {index}"));
        };
        let merged = Range {
            id: RangeId(self.next_id),
            start: left.start.clone(),
            end: right.end.clone(),
            origin: format!("merge of {} and {}: {why}", left.id, right.id),
        };
        let mut ranges = self.ranges.clone();
        ranges.splice(index..=index + 1, [merged]);
        Ok(Self {
            prefixes: prefixes(&ranges),
            ranges,
            next_id: self.next_id + 1,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn routing_splitting_and_merging() {
        let map = RangeMap::with_split_points(&[b"g".to_vec(), b"p".to_vec()]);
        assert_eq!(map.index_of(b""), 0);
        assert_eq!(map.index_of(b"f\xff"), 0);
        assert_eq!(map.index_of(b"g"), 1);
        assert_eq!(map.index_of(b"z"), 2);
        let split = map.split(1, b"k", "manual").unwrap();
        assert_eq!(split.len(), 4);
        assert_eq!(split.ranges()[1].end.as_deref(), Some(&b"k"[..]));
        assert_eq!(split.ranges()[2].start, b"k");
        assert!(split.ranges()[2].origin.contains("split of range 1"));
        assert_eq!(split.ranges()[1].id, RangeId(3));
        assert!(
            map.split(1, b"g", "x")
                .unwrap_err()
                .contains("strictly inside")
        );
        assert!(map.split(1, b"p", "x").is_err());
        let merged = split.merge(1, "manual").unwrap();
        assert_eq!(merged.len(), 3);
        assert_eq!(merged.ranges()[1].start, b"g");
        assert_eq!(merged.ranges()[1].end.as_deref(), Some(&b"p"[..]));
        assert_eq!(merged.ranges()[1].id, RangeId(5));
        assert!(merged.merge(2, "x").is_err());
        let back = RangeMap::from_record(&merged.to_record());
        assert_eq!(back, merged);
    }

    #[test]
    fn routing_by_prefix_agrees_with_a_plain_search() {
        let points: Vec<Vec<u8>> = vec![
            b"\x00".to_vec(),
            b"a".to_vec(),
            b"a\x00".to_vec(),
            b"abcdefgh".to_vec(),
            b"abcdefgh\x00".to_vec(),
            b"abcdefghz".to_vec(),
            b"abcdefgi".to_vec(),
            b"b".to_vec(),
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        ];
        let map = RangeMap::with_split_points(&points);
        let mut probes: Vec<Vec<u8>> = points.clone();
        for p in &points {
            let mut longer = p.clone();
            longer.push(0);
            probes.push(longer);
            let mut shorter = p.clone();
            shorter.pop();
            probes.push(shorter);
        }
        probes.extend([
            b"".to_vec(),
            b"abcdefgh\x01".to_vec(),
            vec![0xff; 20],
            b"zz".to_vec(),
        ]);
        for key in probes {
            let plain = map
                .ranges()
                .partition_point(|r| r.start.as_slice() <= key.as_slice())
                .saturating_sub(1);
            assert_eq!(map.index_of(&key), plain, "key {key:?}");
        }
    }
}
