//! Sequence numbers: the position of every operation in the database's
//! single history.

use std::fmt;

/// The sequence number of an operation. Sequence numbers are global and
/// dense per operation: a batch of `n` operations takes `n` consecutive
/// numbers, and the number a write returns is that of its last operation
/// (its commit token). `SeqNo(0)` means "nothing yet"; the first operation
/// is `SeqNo(1)`.
///
/// # Examples
///
/// ```
/// use strata::SeqNo;
/// let seq = SeqNo::from(41u64);
/// assert_eq!(u64::from(seq.next()), 42);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// "Nothing written yet".
    pub const ZERO: SeqNo = SeqNo(0);

    /// The following sequence number.
    #[must_use]
    pub fn next(self) -> SeqNo {
        SeqNo(self.0 + 1)
    }

    /// The raw number.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for SeqNo {
    fn from(value: u64) -> Self {
        SeqNo(value)
    }
}

impl From<SeqNo> for u64 {
    fn from(value: SeqNo) -> Self {
        value.0
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
