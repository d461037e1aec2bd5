//! The hash that links each shipped record to its predecessor.
//!
//! `record_hash(payload)` is xxh3-64 of a log record's payload (the encoded
//! batch, which includes its first sequence number), stored little-endian
//! in 8 bytes. Every `Record` message carries the hash of the record before
//! it; a replica compares it with the hash of the last record it applied,
//! so a replica whose history forked from its upstream's is detected at the
//! first record, before anything is applied. xxh3 is not cryptographic: it
//! detects accidents (forks after a failover, a wrong upstream), not an
//! attacker who can write to the log (see docs/security.md when it lands).

/// The link hash of a record's payload.
///
/// # Examples
///
/// ```
/// let a = strata_replication::hash::record_hash(b"batch one");
/// assert_eq!(a.len(), 8);
/// assert_ne!(a, strata_replication::hash::record_hash(b"batch two"));
/// ```
#[must_use]
pub fn record_hash(payload: &[u8]) -> [u8; 8] {
    xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes()
}
