//! The table's bloom filter over user keys: lets a point read skip a table
//! that cannot hold the key without reading any data block.
//!
//! FORMAT (the contents of the filter block; the block trailer of
//! [`super::format`] checksums it). The last byte says which of two
//! encodings the bytes before it are:
//!
//! ```text
//!  +--------------------- - - - ------------------+--------+
//!  |  bit array                                    | marker |
//!  +--------------------- - - - ------------------+--------+
//! ```
//!
//! **Cache-local** (marker `0x80 | k`, `k` the probes per key, `1..=30`;
//! what tables are written with since format version 2 of the filter):
//! - The bit array is a whole number of 64-byte (512-bit) blocks; bit `i`
//!   of a block is byte `i / 8`, bit `i % 8` (LSB first).
//! - A key's hash `h` is [`filter_hash`]: XXH3-64 of the key with the
//!   default seed (a frozen, specified algorithm; test vectors below).
//! - The key's block is `((h >> 32) * blocks) >> 32`; its probes use
//!   `g = h as u32`: for each of `k` probes test or set bit `g >> 23` of
//!   the block, then `g = g * 0x9E37_79B9` (wrapping). All `k` probes of a
//!   key fall in one 64-byte block: one cache miss per table, not `k`.
//!
//! **Classic** (marker `k` in `1..=30`; tables written before, still read):
//! - `m = 8 * (len - 1)` bits, bit `i` is byte `i / 8`, bit `i % 8`.
//! - `h` is [`bloom_hash`]: 64-bit FNV-1a over the key, then the
//!   MurmurHash3 `fmix64` finalizer.
//! - Probes use double hashing: `delta = h.rotate_left(32)`, then for
//!   `j` in `0..k` test bit `h % m` and let `h = h + delta` (wrapping).
//!
//! `k` is `round(bits_per_key * ln 2)` clamped to `1..=30`. A reader treats
//! any other marker, or a filter with no bit array (or, cache-local, one
//! that is not a whole number of blocks), as "may contain", so other
//! markers are free for future encodings.
//!
//! Invariants: the probes never panic and never answer `false` for a key
//! that was added. They answer `true` for anything they cannot interpret
//! (the caller then reads the table), so a damaged filter costs reads, not
//! answers; damage is also caught by the block checksum first.

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

/// Marker bit of the cache-local encoding.
const CACHE_LOCAL: u8 = 0x80;
/// Bytes per block of the cache-local encoding.
const BLOCK_BYTES: usize = 64;

/// The hash the cache-local filter (and the engine's in-memory indexes)
/// use: XXH3-64 with the default seed. Compute it once per key and pass it
/// to [`bloom_may_contain_hashed`] for every table probed.
#[must_use]
pub fn filter_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// The classic filter's hash of a key: `fmix64(fnv1a64(key))`.
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
        self.hashes.push(filter_hash(key));
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

    /// The encoded filter (cache-local).
    #[must_use]
    pub fn finish(&self) -> Vec<u8> {
        let k = probes(self.bits_per_key);
        let bits = self.hashes.len().saturating_mul(self.bits_per_key);
        let blocks = bits.div_ceil(BLOCK_BYTES * 8).max(1);
        let mut out = vec![0u8; blocks * BLOCK_BYTES + 1];
        for &hash in &self.hashes {
            let start = block_of(hash, blocks) * BLOCK_BYTES;
            if let Some(block) = out.get_mut(start..start + BLOCK_BYTES) {
                for bit in local_probes(hash, k) {
                    if let Some(byte) = block.get_mut(bit / 8) {
                        *byte |= 1 << (bit % 8);
                    }
                }
            }
        }
        if let Some(last) = out.last_mut() {
            *last = CACHE_LOCAL | k;
        }
        out
    }
}

/// The block (of `blocks`) a hash probes in the cache-local encoding.
fn block_of(hash: u64, blocks: usize) -> usize {
    (((hash >> 32) * blocks as u64) >> 32) as usize
}

/// The `k` bit positions (0..512) a hash probes within its block.
fn local_probes(hash: u64, k: u8) -> impl Iterator<Item = usize> {
    let mut g = hash as u32;
    (0..k).map(move |_| {
        let bit = (g >> 23) as usize;
        g = g.wrapping_mul(0x9E37_79B9);
        bit
    })
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
    bloom_may_contain_hashed(filter, key, filter_hash(key))
}

/// As [`bloom_may_contain`], with the key's [`filter_hash`] computed by
/// the caller (once for every filter it probes).
#[must_use]
pub fn bloom_may_contain_hashed(filter: &[u8], key: &[u8], hash: u64) -> bool {
    let Some((&marker, bits)) = filter.split_last() else {
        return true;
    };
    let k = marker & !CACHE_LOCAL;
    if bits.is_empty() || k == 0 || k > MAX_BLOOM_PROBES {
        return true;
    }
    if marker & CACHE_LOCAL != 0 {
        if bits.len() % BLOCK_BYTES != 0 {
            return true;
        }
        let start = block_of(hash, bits.len() / BLOCK_BYTES) * BLOCK_BYTES;
        let Some(block) = bits.get(start..start + BLOCK_BYTES) else {
            return true;
        };
        return local_probes(hash, k).all(|bit| {
            block
                .get(bit / 8)
                .is_none_or(|byte| byte & (1 << (bit % 8)) != 0)
        });
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
    fn filter_hash_is_xxh3_64_with_the_default_seed() {
        // Reference values of XXH3-64, seed 0 (xxHash's own test vectors).
        assert_eq!(filter_hash(b""), 0x2D06_8005_38D3_94C2);
        assert_eq!(filter_hash(b"a"), 0xE6C6_32B6_1E96_4E1F);
    }

    #[test]
    fn classic_filters_written_before_are_still_read() {
        // A classic filter (marker k = 7) holding "present", built by the
        // rules above.
        let m = 64u64 * 8;
        let mut bits = vec![0u8; 64];
        for bit in probe_bits(bloom_hash(b"present"), 7, m) {
            bits[(bit / 8) as usize] |= 1 << (bit % 8);
        }
        bits.push(7);
        assert!(bloom_may_contain(&bits, b"present"));
        let misses = (0..1000)
            .filter(|i| bloom_may_contain(&bits, format!("absent{i}").as_bytes()))
            .count();
        assert!(misses < 50, "{misses} false positives of 1000");
    }

    #[test]
    fn probes_of_a_key_stay_in_one_block() {
        let mut bloom = BloomBuilder::new(10);
        bloom.add_key(b"only");
        let filter = bloom.finish();
        let set: Vec<usize> = filter[..filter.len() - 1]
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .map(|(i, _)| i / BLOCK_BYTES)
            .collect();
        assert!(!set.is_empty() && set.iter().all(|&b| b == set[0]));
        assert_eq!(*filter.last().unwrap(), CACHE_LOCAL | 7);
    }

    #[test]
    fn empty_filter_rejects_everything_and_invalid_filters_accept_everything() {
        let filter = BloomBuilder::new(10).finish();
        assert_eq!(filter.len(), 65);
        assert!(!bloom_may_contain(&filter, b"x"));
        assert!(bloom_may_contain(&[], b"x"));
        assert!(bloom_may_contain(&[7], b"x"));
        assert!(bloom_may_contain(&[0, 0, 0], b"x"));
        assert!(bloom_may_contain(&[0, 0, 31], b"x"));
        assert!(
            bloom_may_contain(&[0, 0, CACHE_LOCAL | 7], b"x"),
            "not whole blocks"
        );
        assert!(bloom_may_contain(
            &[0; 65][..64]
                .iter()
                .chain(&[CACHE_LOCAL])
                .copied()
                .collect::<Vec<_>>(),
            b"x"
        ));
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
