//! The table's bloom filter over user keys: lets a point read skip a table
//! that cannot hold the key without reading any data block.
//!
//! FORMAT (the contents of the filter block; the block trailer of
//! [`super::format`] checksums it):
//!
//! ```text
//!  +--------------------- - - - ------------------+--------+
//!  |  bit array: m = 8 * (len - 1) bits            |   k    |
//!  |  bit i is byte i / 8, bit i % 8 (LSB first)   |   u8   |
//!  +--------------------- - - - ------------------+--------+
//! ```
//!
//! - A key's hash `h` is [`bloom_hash`]: 64-bit FNV-1a over the key, then
//!   the MurmurHash3 `fmix64` finalizer (FNV-1a alone mixes its high bits
//!   poorly). Both are fixed here forever: changing them needs a new
//!   format version. Written out in the crate so the filter does not depend
//!   on a hashing crate's version.
//! - Probes use double hashing: `delta = h.rotate_left(32)`, then for
//!   `j` in `0..k` set or test bit `h % m` and let `h = h + delta`
//!   (wrapping).
//! - `k` is `round(bits_per_key * ln 2)` clamped to `1..=30`. A reader
//!   treats `k` outside `1..=30`, or a filter with no bit array, as "may
//!   contain", so such values are free for future filter encodings.
//!
//! Invariants: [`bloom_may_contain`] never panics and never answers `false`
//! for a key that was added. It answers `true` for anything it cannot
//! interpret (the caller then reads the table), so a damaged filter costs
//! reads, not answers; damage is also caught by the block checksum first.

/// Bits per key used unless configured otherwise (about 1% false
/// positives).
pub const DEFAULT_BLOOM_BITS_PER_KEY: usize = 10;
/// The largest number of probes a filter may use.
pub const MAX_BLOOM_PROBES: u8 = 30;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64(key: &[u8]) -> u64 {
    key.iter().fold(FNV_OFFSET_BASIS, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The filter's hash of a key: `fmix64(fnv1a64(key))`.
#[must_use]
pub fn bloom_hash(key: &[u8]) -> u64 {
    fmix64(fnv1a64(key))
}

/// The number of probes for `bits_per_key`.
fn probes(bits_per_key: usize) -> u8 {
    let k = (bits_per_key as f64 * std::f64::consts::LN_2).round();
    k.clamp(1.0, f64::from(MAX_BLOOM_PROBES)) as u8
}

/// Collects key hashes and builds a filter.
///
/// # Examples
///
/// ```
/// use strata_format::table::{bloom_may_contain, BloomBuilder};
/// let mut bloom = BloomBuilder::new(10);
/// bloom.add_key(b"present");
/// let filter = bloom.finish();
/// assert!(bloom_may_contain(&filter, b"present"));
/// ```
#[derive(Debug, Clone)]
pub struct BloomBuilder {
    bits_per_key: usize,
    hashes: Vec<u64>,
}

impl BloomBuilder {
    /// An empty builder.
    ///
    /// # Panics
    /// If `bits_per_key` is 0.
    #[must_use]
    pub fn new(bits_per_key: usize) -> Self {
        assert!(
            bits_per_key > 0,
            "bloom filter needs at least one bit per key"
        );
        Self {
            bits_per_key,
            hashes: Vec::new(),
        }
    }

    /// Adds a key (adding the same key twice is harmless).
    pub fn add_key(&mut self, key: &[u8]) {
        self.hashes.push(bloom_hash(key));
    }

    /// Keys added so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether no key was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The encoded filter.
    #[must_use]
    pub fn finish(&self) -> Vec<u8> {
        let k = probes(self.bits_per_key);
        let bits = self.hashes.len().saturating_mul(self.bits_per_key).max(64);
        let bytes = bits.div_ceil(8);
        let mut out = vec![0u8; bytes + 1];
        let m = bytes as u64 * 8;
        for &hash in &self.hashes {
            for bit in probe_bits(hash, k, m) {
                if let Some(byte) = out.get_mut((bit / 8) as usize) {
                    *byte |= 1 << (bit % 8);
                }
            }
        }
        if let Some(last) = out.last_mut() {
            *last = k;
        }
        out
    }
}

fn probe_bits(hash: u64, k: u8, m: u64) -> impl Iterator<Item = u64> {
    let delta = hash.rotate_left(32);
    (0..u64::from(k)).map(move |j| hash.wrapping_add(j.wrapping_mul(delta)) % m)
}

/// Whether `key` may be in the set the filter was built from. `false`
/// means certainly not; anything that is not a valid filter answers
/// `true`.
#[must_use]
pub fn bloom_may_contain(filter: &[u8], key: &[u8]) -> bool {
    let Some((&k, bits)) = filter.split_last() else {
        return true;
    };
    if bits.is_empty() || k == 0 || k > MAX_BLOOM_PROBES {
        return true;
    }
    let m = bits.len() as u64 * 8;
    probe_bits(bloom_hash(key), k, m).all(|bit| {
        bits.get((bit / 8) as usize)
            .is_none_or(|byte| byte & (1 << (bit % 8)) != 0)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(i: u32) -> Vec<u8> {
        format!("user{i:08}").into_bytes()
    }

    #[test]
    fn hash_is_pinned_to_fnv1a_then_fmix64() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        assert_eq!(bloom_hash(b"a"), fmix64(0xaf63_dc4c_8601_ec8c));
        assert_eq!(fmix64(0), 0);
    }

    #[test]
    fn probe_count_follows_bits_per_key() {
        assert_eq!(probes(10), 7);
        assert_eq!(probes(1), 1);
        assert_eq!(probes(100), 30);
    }

    #[test]
    fn false_positive_rate_at_ten_bits_per_key_is_below_two_percent() {
        let mut bloom = BloomBuilder::new(10);
        for i in 0..100_000 {
            bloom.add_key(&key(i));
        }
        let filter = bloom.finish();
        assert!((0..100_000).all(|i| bloom_may_contain(&filter, &key(i))));
        let false_positives = (100_000..200_000)
            .filter(|&i| bloom_may_contain(&filter, &key(i)))
            .count();
        assert!(false_positives < 2_000, "{false_positives} false positives");
    }

    #[test]
    fn empty_filter_rejects_everything_and_invalid_filters_accept_everything() {
        let filter = BloomBuilder::new(10).finish();
        assert_eq!(filter.len(), 9);
        assert!(!bloom_may_contain(&filter, b"x"));
        assert!(bloom_may_contain(&[], b"x"));
        assert!(bloom_may_contain(&[7], b"x"));
        assert!(bloom_may_contain(&[0, 0, 0], b"x"));
        assert!(bloom_may_contain(&[0, 0, 31], b"x"));
    }

    proptest! {
        #[test]
        fn added_keys_are_always_found(
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..200),
            bits_per_key in 1usize..24,
        ) {
            let mut bloom = BloomBuilder::new(bits_per_key);
            for k in &keys {
                bloom.add_key(k);
            }
            let filter = bloom.finish();
            for k in &keys {
                prop_assert!(bloom_may_contain(&filter, k));
            }
        }

        #[test]
        fn any_filter_bytes_are_answered_without_panicking(
            filter in proptest::collection::vec(any::<u8>(), 0..40),
            key in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let _ = bloom_may_contain(&filter, &key);
        }
    }
}
