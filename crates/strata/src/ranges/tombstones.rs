//! Range tombstones: `[start, end)` deleted at a sequence number.
//!
//! A tombstone at `seq` hides every version of every key in `[start, end)`
//! whose sequence number is below `seq`, from readers at `seq` or later.
//! Readers find, for a key, the newest tombstone that covers it and that
//! they can see (its "cover"), and drop a version older than that.
//!
//! Tombstones are expected to be few at a time (each is removed once
//! compaction has dropped what it hides), so a sorted list scanned up to
//! the key is enough; a fragmented interval tree would be the next step if
//! users issue many overlapping range deletions.

use strata_format::manifest::TombstoneEntry;

/// The highest sequence number, at or below `read_seq`, of a tombstone in
/// `list` (sorted by start) that covers `key`; 0 if none.
pub(crate) fn cover(list: &[TombstoneEntry], key: &[u8], read_seq: u64) -> u64 {
    let candidates = list.partition_point(|t| t.start.as_slice() <= key);
    list.iter()
        .take(candidates)
        .filter(|t| key < t.end.as_slice() && t.seq <= read_seq)
        .map(|t| t.seq)
        .max()
        .unwrap_or(0)
}

/// Sorts tombstones as [`cover`] needs them.
pub(crate) fn sort(list: &mut [TombstoneEntry]) {
    list.sort();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(start: &[u8], end: &[u8], seq: u64) -> TombstoneEntry {
        TombstoneEntry {
            start: start.to_vec(),
            end: end.to_vec(),
            seq,
        }
    }

    #[test]
    fn cover_is_the_newest_visible_covering_tombstone() {
        let mut list = vec![t(b"c", b"f", 10), t(b"a", b"d", 5), t(b"e", b"z", 20)];
        sort(&mut list);
        assert_eq!(cover(&list, b"b", 100), 5);
        assert_eq!(cover(&list, b"c", 100), 10);
        assert_eq!(cover(&list, b"c", 7), 5);
        assert_eq!(cover(&list, b"d", 100), 10);
        assert_eq!(cover(&list, b"e", 100), 20);
        assert_eq!(cover(&list, b"e", 15), 10);
        assert_eq!(cover(&list, b"z", 100), 0);
        assert_eq!(cover(&list, b"", 100), 0);
    }
}
