//! Internal keys: a user key tagged with the sequence number and kind of
//! the write that produced it. Sorted tables store and order these.
//!
//! FORMAT:
//!
//! ```text
//!  +------------- - - - -------------+-----------------------------+
//!  |  user_key (any bytes, may be    |  trailer: u64 little-endian |
//!  |  empty)                         |  (seq << 8) | kind          |
//!  +------------- - - - -------------+-----------------------------+
//! ```
//!
//! - The trailer is always the last 8 bytes; the key's length comes from
//!   its container (a block entry), so there is no length prefix.
//! - `seq` is below 2^56 ([`MAX_SEQ`]) so that it fits above the kind byte.
//! - `kind` ([`ValueKind`]): 0 is reserved, 1 is a tombstone, 2 a value.
//!   On-disk values are forever.
//! - No checksum: internal keys only live inside checksummed blocks.
//!
//! Order ([`compare_internal`]): user key ascending (bytewise), then
//! sequence number descending, then kind descending, which is the trailer
//! descending. The newest version of a key comes first, so seeking to
//! `(user_key, snapshot_seq)` lands on the newest version visible at that
//! snapshot.
//!
//! The value kinds deliberately differ from the WAL's batch operation
//! bytes (`wal::OP_PUT` = 1): the two encodings are independent.
//!
//! Invariants: [`InternalKeyRef::decode`] accepts only keys of at least 8
//! bytes with a known kind; [`compare_internal`] is a total order on any
//! bytes and never panics (malformed keys order by their bytes with a zero
//! trailer, and are rejected by decoding before they matter).

use std::cmp::Ordering;

use crate::error::{DecodeError, DecodeErrorKind};

/// Length of the trailer (sequence number and kind) of an internal key.
pub const TRAILER_LEN: usize = 8;
/// The largest sequence number an internal key can carry (2^56 - 1).
pub const MAX_SEQ: u64 = (1 << 56) - 1;

/// What an internal key's entry holds. The byte values are on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ValueKind {
    // 0 is reserved.
    /// A tombstone: the key was deleted at this sequence number.
    Delete = 1,
    /// A value.
    Put = 2,
    // 3 is reserved for a range tombstone (RangeDelete).
}

impl ValueKind {
    /// The kind with the largest byte. A seek target at `(key, seq)` uses
    /// it so that the target sorts before (or at) every entry of `key` with
    /// sequence number `seq` or lower.
    pub const FOR_SEEK: Self = Self::Put;

    /// The on-disk byte.
    #[must_use]
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// The kind for a byte; `None` for 0 and unknown kinds.
    #[must_use]
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Delete),
            2 => Some(Self::Put),
            _ => None,
        }
    }
}

/// Appends the internal key `user_key ++ trailer(seq, kind)` to `out`.
///
/// # Panics
/// If `seq` exceeds [`MAX_SEQ`] (the engine never assigns such numbers).
///
/// # Examples
///
/// ```
/// use strata_format::key::{encode_internal_key, InternalKeyRef, ValueKind};
/// let mut key = Vec::new();
/// encode_internal_key(b"apple", 42, ValueKind::Put, &mut key);
/// let parsed = InternalKeyRef::decode(&key)?;
/// assert_eq!((parsed.user_key, parsed.seq, parsed.kind), (&b"apple"[..], 42, ValueKind::Put));
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
pub fn encode_internal_key(user_key: &[u8], seq: u64, kind: ValueKind, out: &mut Vec<u8>) {
    assert!(seq <= MAX_SEQ, "sequence number {seq} exceeds MAX_SEQ");
    out.reserve(user_key.len() + TRAILER_LEN);
    out.extend_from_slice(user_key);
    out.extend_from_slice(&((seq << 8) | u64::from(kind.to_byte())).to_le_bytes());
}

/// An internal key decoded in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalKeyRef<'a> {
    /// The user's key.
    pub user_key: &'a [u8],
    /// The sequence number of the write.
    pub seq: u64,
    /// What the write was.
    pub kind: ValueKind,
}

impl<'a> InternalKeyRef<'a> {
    /// Splits an internal key into its parts.
    ///
    /// # Errors
    /// `Truncated` if `key` is shorter than the 8-byte trailer,
    /// `UnknownValueKind` for kind 0 or an unknown kind.
    pub fn decode(key: &'a [u8]) -> Result<Self, DecodeError> {
        let Some((user_key, trailer)) = key.split_last_chunk::<TRAILER_LEN>() else {
            return Err(DecodeError::new(
                0,
                DecodeErrorKind::Truncated {
                    what: "internal key",
                    needed: TRAILER_LEN as u64,
                    available: key.len() as u64,
                },
            ));
        };
        let trailer = u64::from_le_bytes(*trailer);
        let kind_byte = trailer as u8;
        let kind = ValueKind::from_byte(kind_byte).ok_or_else(|| {
            DecodeError::new(
                user_key.len() as u64,
                DecodeErrorKind::UnknownValueKind { kind: kind_byte },
            )
        })?;
        Ok(Self {
            user_key,
            seq: trailer >> 8,
            kind,
        })
    }
}

/// The user-key part of an internal key (all of `key` if it is shorter
/// than a trailer).
#[must_use]
pub fn user_key(key: &[u8]) -> &[u8] {
    split(key).0
}

fn split(key: &[u8]) -> (&[u8], u64) {
    match key.split_last_chunk::<TRAILER_LEN>() {
        Some((user_key, trailer)) => (user_key, u64::from_le_bytes(*trailer)),
        None => (key, 0),
    }
}

/// Orders internal keys: user key ascending (bytewise), then sequence
/// number descending, then kind descending.
///
/// # Examples
///
/// ```
/// use std::cmp::Ordering;
/// use strata_format::key::{compare_internal, encode_internal_key, ValueKind};
/// let (mut newer, mut older) = (Vec::new(), Vec::new());
/// encode_internal_key(b"k", 9, ValueKind::Put, &mut newer);
/// encode_internal_key(b"k", 3, ValueKind::Put, &mut older);
/// assert_eq!(compare_internal(&newer, &older), Ordering::Less);
/// ```
#[must_use]
pub fn compare_internal(a: &[u8], b: &[u8]) -> Ordering {
    let (user_a, trailer_a) = split(a);
    let (user_b, trailer_b) = split(b);
    user_a.cmp(user_b).then_with(|| trailer_b.cmp(&trailer_a))
}

/// Orders plain byte strings (user keys).
#[must_use]
pub fn compare_bytewise(a: &[u8], b: &[u8]) -> Ordering {
    a.cmp(b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(user_key: &[u8], seq: u64, kind: ValueKind) -> Vec<u8> {
        let mut out = Vec::new();
        encode_internal_key(user_key, seq, kind, &mut out);
        out
    }

    #[test]
    fn trailer_is_seq_shifted_over_kind_little_endian() {
        let k = key(b"ab", 0x0102, ValueKind::Delete);
        assert_eq!(k, [b'a', b'b', 0x01, 0x02, 0x01, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn short_key_is_truncation() {
        for len in 0..TRAILER_LEN {
            let err = InternalKeyRef::decode(&vec![2u8; len]).unwrap_err();
            assert!(err.is_truncation(), "{err}");
        }
    }

    #[test]
    fn unknown_kinds_are_rejected() {
        for kind in [0u8, 3, 0xff] {
            let mut k = key(b"x", 5, ValueKind::Put);
            k[1] = kind;
            assert_eq!(
                InternalKeyRef::decode(&k).unwrap_err().kind,
                DecodeErrorKind::UnknownValueKind { kind }
            );
        }
    }

    #[test]
    fn max_seq_round_trips_and_empty_user_key_is_valid() {
        let k = key(b"", MAX_SEQ, ValueKind::Put);
        let parsed = InternalKeyRef::decode(&k).unwrap();
        assert_eq!(parsed.user_key, b"");
        assert_eq!(parsed.seq, MAX_SEQ);
    }

    #[test]
    #[should_panic(expected = "exceeds MAX_SEQ")]
    fn seq_above_max_is_a_programmer_error() {
        key(b"x", MAX_SEQ + 1, ValueKind::Put);
    }

    #[test]
    fn same_seq_orders_put_before_delete() {
        let put = key(b"k", 7, ValueKind::Put);
        let delete = key(b"k", 7, ValueKind::Delete);
        assert_eq!(compare_internal(&put, &delete), Ordering::Less);
    }

    #[test]
    fn malformed_keys_compare_without_panicking() {
        assert_eq!(compare_internal(b"", b""), Ordering::Equal);
        assert_eq!(compare_internal(b"abc", b"abd"), Ordering::Less);
    }

    proptest! {
        #[test]
        fn order_is_user_key_ascending_then_seq_descending(
            a in proptest::collection::vec(any::<u8>(), 0..6),
            b in proptest::collection::vec(any::<u8>(), 0..6),
            seq_a in 0..=MAX_SEQ,
            seq_b in 0..=MAX_SEQ,
            put_a in any::<bool>(),
            put_b in any::<bool>(),
        ) {
            let kind = |put: bool| if put { ValueKind::Put } else { ValueKind::Delete };
            let expected = a
                .cmp(&b)
                .then(seq_b.cmp(&seq_a))
                .then(kind(put_b).cmp(&kind(put_a)));
            let ka = key(&a, seq_a, kind(put_a));
            let kb = key(&b, seq_b, kind(put_b));
            prop_assert_eq!(compare_internal(&ka, &kb), expected);
            let parsed = InternalKeyRef::decode(&ka).unwrap();
            prop_assert_eq!(parsed, InternalKeyRef { user_key: &a, seq: seq_a, kind: kind(put_a) });
        }
    }
}
