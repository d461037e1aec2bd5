//! What a range-limited replica is shown of each log record: the same
//! batch, the same sequence numbers, with every operation outside its key
//! ranges replaced by a skip (batch op 4: one sequence number, no key, no
//! value, no effect), and each range deletion clipped to the span of the
//! ranges it overlaps.
//!
//! The hash chain then runs over these shown payloads: the upstream links
//! each shown record to the previous shown one, checks a reconnecting
//! replica's position against the shown record, and gives a cut snapshot
//! the shown record's hash. One credential's ranges thus define one chain;
//! changing a credential's ranges means re-bootstrapping its replicas
//! (their chain no longer matches, which they report as a fork).
//!
//! Invariants: a shown payload holds no key, value or bound outside the
//! ranges except where a range deletion's clipped span must cross a gap
//! between two of them (its bounds then lie inside the ranges); it decodes
//! as a valid batch with the original's first sequence number and count.

use strata_format::DecodeError;
use strata_format::wal::{BatchBuilder, BatchOp, RecordType, decode_batch, encode_record};

use crate::auth::Ranges;

/// The view of the log a range-limited credential is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangeFilter {
    ranges: strata::KeyIntervals,
}

impl RangeFilter {
    /// A filter for `ranges` (sorted, disjoint); none for every key.
    pub(crate) fn new(ranges: &Ranges) -> Option<Self> {
        (!ranges.is_empty()).then(|| Self {
            ranges: strata::KeyIntervals::new(ranges),
        })
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.ranges.contains(key)
    }

    /// `[start, end)` clipped to the span of the ranges it overlaps; none
    /// if it overlaps none.
    fn clip<'a>(&'a self, start: &'a [u8], end: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        self.ranges.clip(start, end)
    }

    /// The batch `payload` as shown.
    ///
    /// # Errors
    /// The payload is not a valid batch.
    pub(crate) fn payload(&self, payload: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let view = decode_batch(payload)?;
        let mut shown = BatchBuilder::new();
        for op in view.ops() {
            match op {
                BatchOp::Put { key, value } if self.contains(key) => shown.put(key, value),
                BatchOp::Delete { key } if self.contains(key) => shown.delete(key),
                BatchOp::DeleteRange { start, end } => match self.clip(start, end) {
                    Some((start, end)) => shown.delete_range(start, end),
                    None => shown.skip(),
                },
                _ => shown.skip(),
            }
        }
        let mut bytes = shown.into_bytes();
        strata_format::wal::set_batch_first_seq(&mut bytes, view.first_seq);
        Ok(bytes)
    }

    /// The link hash of the batch `payload` as `filter` shows it (as it
    /// is without a filter): what a replica holding it computes.
    ///
    /// # Errors
    /// The payload is not a valid batch (only checked with a filter).
    pub(crate) fn shown_hash(
        filter: Option<&Self>,
        payload: &[u8],
    ) -> Result<[u8; 8], DecodeError> {
        Ok(match filter {
            Some(filter) => crate::hash::record_hash(&filter.payload(payload)?),
            None => crate::hash::record_hash(payload),
        })
    }

    /// A whole log record (as framed on disk) around the shown payload.
    pub(crate) fn record(shown_payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(shown_payload.len() + 16);
        encode_record(RecordType::Batch, shown_payload, &mut out);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn eu_and_z() -> RangeFilter {
        RangeFilter::new(&vec![
            (b"eu/".to_vec(), Some(b"eu0".to_vec())),
            (b"z".to_vec(), None),
        ])
        .unwrap()
    }

    #[test]
    fn other_ranges_become_skips_and_sequence_numbers_stay() {
        let mut batch = BatchBuilder::new();
        batch.put(b"eu/1", b"a");
        batch.put(b"us/1", b"SECRET");
        batch.delete(b"us/2");
        batch.delete(b"eu/2");
        batch.delete_range(b"a", b"b");
        batch.delete_range(b"eu/5", b"zz");
        batch.put(b"zebra", b"c");
        let mut bytes = batch.into_bytes();
        strata_format::wal::set_batch_first_seq(&mut bytes, 40);
        let shown = eu_and_z().payload(&bytes).unwrap();
        let view = decode_batch(&shown).unwrap();
        assert_eq!((view.first_seq, view.count), (40, 7));
        let ops: Vec<_> = view.ops().collect();
        assert_eq!(
            ops,
            vec![
                BatchOp::Put {
                    key: b"eu/1",
                    value: b"a"
                },
                BatchOp::Skip,
                BatchOp::Skip,
                BatchOp::Delete { key: b"eu/2" },
                BatchOp::Skip,
                // Clipped to the span of the ranges it overlaps.
                BatchOp::DeleteRange {
                    start: b"eu/5",
                    end: b"zz"
                },
                BatchOp::Put {
                    key: b"zebra",
                    value: b"c"
                },
            ]
        );
        assert!(!shown.windows(6).any(|w| w == b"SECRET"));
        assert!(!shown.windows(4).any(|w| w == b"us/2"));
        // Framed, it is a valid record.
        let record = RangeFilter::record(&shown);
        let view = strata_format::wal::decode_record(&record).unwrap();
        assert_eq!(view.payload, &shown[..]);
    }

    #[test]
    fn a_range_deletion_is_clipped_into_the_ranges() {
        let filter = RangeFilter::new(&vec![(b"eu/".to_vec(), Some(b"eu0".to_vec()))]).unwrap();
        let mut batch = BatchBuilder::new();
        batch.delete_range(b"a", b"f");
        let shown = filter.payload(&batch.into_bytes()).unwrap();
        let ops: Vec<_> = decode_batch(&shown).unwrap().ops().collect();
        assert_eq!(
            ops,
            vec![BatchOp::DeleteRange {
                start: b"eu/",
                end: b"eu0"
            }]
        );
    }

    #[test]
    fn no_ranges_no_filter() {
        assert!(RangeFilter::new(&Vec::new()).is_none());
    }
}
