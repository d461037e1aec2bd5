//! A range of user keys, as scans, tables and compactions bound their
//! cursors with it.

use std::ops::Bound;

/// A range of user keys.
#[derive(Clone, Debug)]
pub(crate) struct KeyRange {
    pub(crate) start: Bound<Vec<u8>>,
    pub(crate) end: Bound<Vec<u8>>,
}

impl KeyRange {
    pub(crate) fn from_bounds(start: Bound<&[u8]>, end: Bound<&[u8]>) -> Self {
        Self {
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
        }
    }

    /// Every key starting with `prefix`.
    pub(crate) fn prefix(prefix: &[u8]) -> Self {
        let mut end = prefix.to_vec();
        while let Some(&last) = end.last() {
            if last == 0xff {
                end.pop();
            } else {
                if let Some(byte) = end.last_mut() {
                    *byte += 1;
                }
                break;
            }
        }
        let end = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        Self {
            start: Bound::Included(prefix.to_vec()),
            end,
        }
    }

    pub(crate) fn after_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Included(end) => key > end.as_slice(),
            Bound::Excluded(end) => key >= end.as_slice(),
            Bound::Unbounded => false,
        }
    }

    pub(crate) fn before_start(&self, key: &[u8]) -> bool {
        match &self.start {
            Bound::Included(start) => key < start.as_slice(),
            Bound::Excluded(start) => key <= start.as_slice(),
            Bound::Unbounded => false,
        }
    }

    /// The range as inclusive user-key bounds for overlap tests (an
    /// excluded bound is widened to include its key: conservative).
    pub(crate) fn user_bounds(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        fn bound(b: &Bound<Vec<u8>>) -> Option<&[u8]> {
            match b {
                Bound::Included(k) | Bound::Excluded(k) => Some(k.as_slice()),
                Bound::Unbounded => None,
            }
        }
        (bound(&self.start), bound(&self.end))
    }

    /// Whether the range can hold no key (start after end).
    pub(crate) fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e))
            | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_end_at_the_successor() {
        let r = KeyRange::prefix(b"ab\xff");
        assert_eq!(r.end, Bound::Excluded(b"ac".to_vec()));
        let r = KeyRange::prefix(b"\xff\xff");
        assert_eq!(r.end, Bound::Unbounded);
        let r = KeyRange::prefix(b"");
        assert_eq!(r.end, Bound::Unbounded);
    }
}
