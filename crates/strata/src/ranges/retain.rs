//! Retained key ranges: the part of the keyspace a database holds when it
//! is a range-scoped replica ([`crate::Options::retain_ranges`]).
//!
//! A database with retained ranges keeps sequence numbers for every
//! operation of its log (so they stay the primary's), but holds only keys
//! inside its ranges: memtable inserts skip operations outside, flushes and
//! compactions drop entries outside, at open the tables wholly outside are
//! dropped by a manifest edit, and reads of keys outside are refused.
//! Range deletions are kept whole (they hide nothing outside).
//!
//! Invariant: the intervals are sorted, non-empty and disjoint (checked by
//! `Options::validate`).

/// A set of disjoint key intervals `[start, end)` (`end` `None`:
/// unbounded); empty means every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Retain {
    intervals: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Retain {
    pub(crate) fn new(intervals: &[(Vec<u8>, Option<Vec<u8>>)]) -> Self {
        Self {
            intervals: intervals.to_vec(),
        }
    }

    /// Whether every key is retained.
    pub(crate) fn is_everything(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Whether `key` is retained.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
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
    pub(crate) fn overlaps(&self, smallest: &[u8], largest: &[u8]) -> bool {
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

    /// Checks the intervals: each non-empty, sorted, disjoint.
    pub(crate) fn check(intervals: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), String> {
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
        let r = Retain::new(&[(b"b".to_vec(), Some(b"d".to_vec())), (b"m".to_vec(), None)]);
        assert!(!r.contains(b"a"));
        assert!(r.contains(b"b"));
        assert!(r.contains(b"c\xff"));
        assert!(!r.contains(b"d"));
        assert!(r.contains(b"zz"));
        assert!(r.overlaps(b"a", b"b"));
        assert!(!r.overlaps(b"d", b"l"));
        assert!(r.overlaps(b"d", b"m"));
        assert!(Retain::default().contains(b"anything"));
        assert!(Retain::check(&[(b"b".to_vec(), Some(b"a".to_vec()))]).is_err());
        assert!(
            Retain::check(&[(b"a".to_vec(), Some(b"c".to_vec())), (b"b".to_vec(), None)]).is_err()
        );
        assert!(Retain::check(&[(b"a".to_vec(), None), (b"b".to_vec(), None)]).is_err());
        assert!(
            Retain::check(&[(b"a".to_vec(), Some(b"b".to_vec())), (b"b".to_vec(), None)]).is_ok()
        );
    }
}
