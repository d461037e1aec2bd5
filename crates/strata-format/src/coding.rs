//! Integer coding shared by every format: little-endian fixed-width
//! integers and LEB128 varints, with a bounds-checked reading cursor.
//!
//! FORMAT: fixed-width integers are little-endian. A `varint32` is LEB128:
//! seven bits per byte, least significant group first, the high bit set on
//! every byte but the last; at most 5 bytes, and the value must fit in 32
//! bits (anything longer is [`DecodeErrorKind::VarintOverflow`]). A
//! `varint64` is the same with at most 10 bytes and a 64-bit value.
//!
//! Invariants: the cursor never reads outside its slice and never panics; a
//! failed read leaves an error naming the offset where it failed.

use crate::error::{DecodeError, DecodeErrorKind};

/// Appends `value` as a LEB128 varint (1 to 5 bytes).
///
/// # Examples
///
/// ```
/// let mut out = Vec::new();
/// strata_format::coding::put_varint32(&mut out, 300);
/// assert_eq!(out, [0xac, 0x02]);
/// ```
pub fn put_varint32(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The encoded length of `value` as a varint.
#[must_use]
pub fn varint32_len(value: u32) -> usize {
    match value {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0x0fff_ffff => 4,
        _ => 5,
    }
}

/// Appends `value` as a LEB128 varint (1 to 10 bytes).
///
/// # Examples
///
/// ```
/// let mut out = Vec::new();
/// strata_format::coding::put_varint64(&mut out, 1 << 35);
/// assert_eq!(out, [0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
/// ```
pub fn put_varint64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The encoded length of `value` as a varint64.
#[must_use]
pub fn varint64_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// A bounds-checked reader over a byte slice.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    #[must_use]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Whether every byte was consumed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn truncated(&self, what: &'static str, needed: usize) -> DecodeError {
        DecodeError::new(
            self.pos as u64,
            DecodeErrorKind::Truncated {
                what,
                needed: needed as u64,
                available: self.remaining() as u64,
            },
        )
    }

    /// Takes the next `len` bytes.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] if fewer remain.
    pub fn bytes(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(len)
            .ok_or_else(|| self.truncated(what, len))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.truncated(what, len))?;
        self.pos = end;
        Ok(out)
    }

    /// Takes a fixed-size array.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] if fewer than `N` bytes remain.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] at the end of the input.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Reads a little-endian `u32`.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] if fewer than 4 bytes remain.
    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// Reads a little-endian `u64`.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] if fewer than 8 bytes remain.
    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a little-endian `u128`.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] if fewer than 16 bytes remain.
    pub fn u128_le(&mut self, what: &'static str) -> Result<u128, DecodeError> {
        Ok(u128::from_le_bytes(self.array(what)?))
    }

    /// Reads a LEB128 varint that must fit in 32 bits.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] or [`DecodeErrorKind::VarintOverflow`].
    pub fn varint32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let start = self.pos;
        let mut value: u32 = 0;
        for shift in [0u32, 7, 14, 21, 28] {
            let byte = self.u8(what)?;
            let group = u32::from(byte & 0x7f);
            if shift == 28 && (byte & 0x70) != 0 {
                return Err(DecodeError::new(
                    start as u64,
                    DecodeErrorKind::VarintOverflow,
                ));
            }
            value |= group << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::new(
            start as u64,
            DecodeErrorKind::VarintOverflow,
        ))
    }

    /// Reads a LEB128 varint that must fit in 64 bits.
    ///
    /// # Errors
    /// [`DecodeErrorKind::Truncated`] or [`DecodeErrorKind::VarintOverflow`].
    pub fn varint64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for shift in (0u32..64).step_by(7) {
            let byte = self.u8(what)?;
            // The tenth byte holds only bit 63.
            if shift == 63 && byte > 1 {
                break;
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::new(
            start as u64,
            DecodeErrorKind::VarintOverflow,
        ))
    }

    /// Reads a varint length followed by that many bytes.
    ///
    /// # Errors
    /// As [`Cursor::varint32`] and [`Cursor::bytes`].
    pub fn length_prefixed(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.varint32(what)?;
        self.bytes(len as usize, what)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_overflow_is_rejected() {
        let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0x1f]);
        assert_eq!(
            c.varint32("x").unwrap_err().kind,
            DecodeErrorKind::VarintOverflow
        );
        let mut c = Cursor::new(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
        assert_eq!(
            c.varint32("x").unwrap_err().kind,
            DecodeErrorKind::VarintOverflow
        );
        let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(c.varint32("x").unwrap(), u32::MAX);
    }

    #[test]
    fn truncated_varint_is_reported() {
        let mut c = Cursor::new(&[0x80]);
        assert!(c.varint32("x").unwrap_err().is_truncation());
    }

    #[test]
    fn varint64_overflow_is_rejected() {
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(Cursor::new(&max).varint64("x").unwrap(), u64::MAX);
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(
            Cursor::new(&over).varint64("x").unwrap_err().kind,
            DecodeErrorKind::VarintOverflow
        );
        let eleven = [0x80u8; 11];
        assert_eq!(
            Cursor::new(&eleven).varint64("x").unwrap_err().kind,
            DecodeErrorKind::VarintOverflow
        );
        assert!(
            Cursor::new(&[0x80, 0x80])
                .varint64("x")
                .unwrap_err()
                .is_truncation()
        );
    }

    proptest! {
        #[test]
        fn varint64_round_trips(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint64(&mut out, v);
            prop_assert_eq!(out.len(), varint64_len(v));
            let mut c = Cursor::new(&out);
            prop_assert_eq!(c.varint64("v").unwrap(), v);
            prop_assert!(c.is_empty());
        }

        #[test]
        fn varint_round_trips(v in any::<u32>()) {
            let mut out = Vec::new();
            put_varint32(&mut out, v);
            prop_assert_eq!(out.len(), varint32_len(v));
            let mut c = Cursor::new(&out);
            prop_assert_eq!(c.varint32("v").unwrap(), v);
            prop_assert!(c.is_empty());
        }
    }
}
