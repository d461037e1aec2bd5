//! Key intervals: the one type for "a set of key intervals" — the part of
//! the keyspace a database holds when it is a range-scoped replica
//! ([`crate::Options::retain_ranges`]), what a replica follows, what a
//! credential may see, what a snapshot is cut to.
//!
//! A database with retained ranges keeps sequence numbers for every
//! operation of its log (so they stay the primary's), but holds only keys
//! inside its ranges: memtable inserts skip operations outside, flushes and
//! compactions drop entries outside, at open the tables wholly outside are
//! dropped by a manifest edit, and reads of keys outside are refused, as are
//! scans reaching outside (their answer would be silently partial).
//! Range deletions are kept whole (they hide nothing outside).
//!
//! Invariant: the intervals are sorted, non-empty and disjoint (checked by
//! `Options::validate`).

use std::ops::Bound;

/// A set of sorted, disjoint key intervals `[start, end)` (`end` `None`:
/// unbounded); no intervals means every key.
///
/// # Examples
///
/// ```
/// use strata::KeyIntervals;
/// let eu = KeyIntervals::new(&[(b"eu/".to_vec(), Some(b"eu0".to_vec()))]);
/// assert!(eu.contains(b"eu/42") && !eu.contains(b"us/1"));
/// assert!(KeyIntervals::default().contains(b"anything"));
/// assert!(KeyIntervals::default().covers_all(&eu));
/// assert!(!eu.covers_all(&KeyIntervals::default()));
/// assert_eq!(eu.clip(b"a", b"z"), Some((&b"eu/"[..], &b"eu0"[..])));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyIntervals {
    intervals: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl KeyIntervals {
    /// The set of `intervals` (which [`KeyIntervals::check`] accepts).
    #[must_use]
    pub fn new(intervals: &[(Vec<u8>, Option<Vec<u8>>)]) -> Self {
        Self {
            intervals: intervals.to_vec(),
        }
    }

    /// The intervals.
    #[must_use]
    pub fn intervals(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.intervals
    }

    /// Whether every key of every interval of `wanted` lies in this set
    /// (adjacent intervals count as one; no intervals: every key).
    #[must_use]
    pub fn covers_all(&self, wanted: &KeyIntervals) -> bool {
        if self.is_everything() {
            return true;
        }
        if wanted.is_everything() {
            return false;
        }
        wanted.intervals.iter().all(|(start, end)| {
            self.covers(
                Bound::Included(start.as_slice()),
                end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
            )
        })
    }

    /// `[start, end)` clipped to the span of the intervals it overlaps;
    /// `None` if it overlaps none (with no intervals: unchanged).
    #[must_use]
    pub fn clip<'a>(&'a self, start: &'a [u8], end: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        if self.is_everything() {
            return (start < end).then_some((start, end));
        }
        let mut span: Option<(&[u8], &[u8])> = None;
        for (r_start, r_end) in &self.intervals {
            let lo = start.max(r_start.as_slice());
            let hi = match r_end {
                Some(r_end) => end.min(r_end.as_slice()),
                None => end,
            };
            if lo < hi {
                span = Some(match span {
                    None => (lo, hi),
                    Some((first, _)) => (first, hi),
                });
            }
        }
        span
    }

    /// Whether every key is retained.
    #[must_use]
    pub fn is_everything(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Whether `key` is retained.
    #[must_use]
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.intervals.is_empty() {
            return true;
        }
        let index = self
            .intervals
            .partition_point(|(start, _)| start.as_slice() <= key);
        index > 0
            && self
                .intervals
                .get(index - 1)
                .is_some_and(|(_, end)| end.as_deref().is_none_or(|end| key < end))
    }

    /// Whether any key of `[smallest, largest]` (inclusive) is retained.
    #[must_use]
    pub fn overlaps(&self, smallest: &[u8], largest: &[u8]) -> bool {
        self.intervals.is_empty()
            || self.intervals.iter().any(|(start, end)| {
                start.as_slice() <= largest && end.as_deref().is_none_or(|end| smallest < end)
            })
    }

    /// Whether `a` and `b` (both contained) lie in the same interval, so
    /// that every key between them is contained too.
    pub(crate) fn same_interval(&self, a: &[u8], b: &[u8]) -> bool {
        let at = |key: &[u8]| {
            self.intervals
                .partition_point(|(start, _)| start.as_slice() <= key)
        };
        self.intervals.is_empty() || at(a) == at(b)
    }

    /// Whether every key from `start` to `end` is retained, so that a scan
    /// of that range is complete (adjacent intervals count as one). An
    /// empty range (start at or after end) is.
    #[must_use]
    pub fn covers(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
        if self.intervals.is_empty() {
            return true;
        }
        // The smallest key of the range.
        let first: Vec<u8> = match start {
            Bound::Included(key) => key.to_vec(),
            Bound::Excluded(key) => [key, &[0u8]].concat(),
            Bound::Unbounded => Vec::new(),
        };
        let empty = match end {
            Bound::Included(end) => first.as_slice() > end,
            Bound::Excluded(end) => first.as_slice() >= end,
            Bound::Unbounded => false,
        };
        if empty {
            return true;
        }
        let index = self
            .intervals
            .partition_point(|(start, _)| start.as_slice() <= first.as_slice());
        let Some((_, first_end)) = index.checked_sub(1).and_then(|at| self.intervals.get(at))
        else {
            return false;
        };
        if first_end.as_deref().is_some_and(|e| first.as_slice() >= e) {
            return false;
        }
        let mut held_end = first_end.as_deref();
        for (next_start, next_end) in self.intervals.iter().skip(index) {
            match held_end {
                Some(e) if e == next_start.as_slice() => held_end = next_end.as_deref(),
                _ => break,
            }
        }
        match (end, held_end) {
            (_, None) => true,
            (Bound::Unbounded, Some(_)) => false,
            (Bound::Included(end), Some(held)) => end < held,
            (Bound::Excluded(end), Some(held)) => end <= held,
        }
    }

    /// The intervals for a message, for example `["eu/", "eu0")`.
    #[must_use]
    pub fn describe(&self) -> String {
        let show = crate::ranges::map::show_key;
        self.intervals
            .iter()
            .map(|(start, end)| {
                format!(
                    "[{}, {})",
                    show(start),
                    end.as_deref().map_or_else(|| "end".to_string(), show)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks the intervals: each non-empty, sorted, disjoint.
    ///
    /// # Errors
    /// A message naming the bad interval (as `retain_ranges[i]`).
    pub fn check(intervals: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), String> {
        for (i, (start, end)) in intervals.iter().enumerate() {
            if end.as_ref().is_some_and(|end| start >= end) {
                return Err(format!("retain_ranges[{i}] is empty (start not below end)"));
            }
            if let Some((_, prev_end)) = i.checked_sub(1).and_then(|p| intervals.get(p)) {
                match prev_end {
                    None => return Err(format!("retain_ranges[{i}] follows an unbounded range")),
                    Some(prev_end) if prev_end > start => {
                        return Err(format!(
                            "retain_ranges[{i}] overlaps or precedes the range before it (ranges must be sorted and disjoint)"
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn membership_and_overlap() {
        let r = KeyIntervals::new(&[(b"b".to_vec(), Some(b"d".to_vec())), (b"m".to_vec(), None)]);
        assert!(!r.contains(b"a"));
        assert!(r.contains(b"b"));
        assert!(r.contains(b"c\xff"));
        assert!(!r.contains(b"d"));
        assert!(r.contains(b"zz"));
        assert!(r.overlaps(b"a", b"b"));
        assert!(!r.overlaps(b"d", b"l"));
        assert!(r.overlaps(b"d", b"m"));
        assert!(KeyIntervals::default().contains(b"anything"));
        assert!(KeyIntervals::check(&[(b"b".to_vec(), Some(b"a".to_vec()))]).is_err());
        assert!(
            KeyIntervals::check(&[(b"a".to_vec(), Some(b"c".to_vec())), (b"b".to_vec(), None)])
                .is_err()
        );
        assert!(KeyIntervals::check(&[(b"a".to_vec(), None), (b"b".to_vec(), None)]).is_err());
        assert!(
            KeyIntervals::check(&[(b"a".to_vec(), Some(b"b".to_vec())), (b"b".to_vec(), None)])
                .is_ok()
        );
    }

    #[test]
    fn a_range_is_covered_only_when_every_key_of_it_is_held() {
        use Bound::{Excluded, Included, Unbounded};
        let r = KeyIntervals::new(&[
            (b"b".to_vec(), Some(b"d".to_vec())),
            (b"d".to_vec(), Some(b"f".to_vec())),
            (b"m".to_vec(), None),
        ]);
        let covers = |s: Bound<&[u8]>, e: Bound<&[u8]>| r.covers(s, e);
        assert!(covers(Included(b"b"), Excluded(b"d")));
        assert!(covers(Included(b"c"), Excluded(b"f")), "adjacent intervals");
        assert!(!covers(Included(b"c"), Included(b"f")));
        assert!(covers(Included(b"c"), Included(b"e\xff")));
        assert!(!covers(Included(b"a"), Excluded(b"c")));
        assert!(!covers(Unbounded, Excluded(b"c")));
        assert!(!covers(Included(b"c"), Excluded(b"n")), "spans the gap");
        assert!(!covers(Included(b"f"), Excluded(b"g")), "wholly in the gap");
        assert!(covers(Included(b"m"), Unbounded));
        assert!(covers(Excluded(b"m"), Unbounded));
        assert!(!covers(Included(b"c"), Unbounded));
        assert!(!covers(Excluded(b"a"), Excluded(b"c")));
        assert!(covers(Excluded(b"b"), Excluded(b"c")));
        assert!(covers(Included(b"x"), Excluded(b"a")), "empty");
        assert!(covers(Excluded(b"g"), Excluded(b"g\0")), "empty");
        assert!(KeyIntervals::default().covers(Unbounded, Unbounded));
        assert_eq!(r.describe(), r#"["b", "d"), ["d", "f"), ["m", end)"#);
    }
}
