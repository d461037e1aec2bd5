//! Whole-segment recovery as a pure function: given a segment's bytes and
//! what is known about it, decide which records are good, where the valid
//! log ends, and whether what follows is a torn tail (cut it off) or
//! corruption (stop and report).
//!
//! The decision rests on one fact the writer guarantees: bytes before
//! `synced_len` were durably synced before the scan's caller learned of
//! them, so no crash can have damaged them. Damage there is corruption
//! (a bad disk, a stray write, a copied file) and is never cut away
//! silently. Damage at or after `synced_len` is what a crash leaves behind
//! (a torn write, garbled unsynced sectors, a zero-filled preallocation)
//! and is cut off and reported. Records whose checksum verifies but whose
//! content is wrong (an unknown type, a malformed batch, a sequence number
//! that is not the next one) were written that way and are corruption
//! wherever they are.
//!
//! [`RecoveryMode`] chooses the strictness.

use super::batch::decode_batch;
use super::record::{RECORD_HEADER_LEN, RecordType, decode_record, is_zero_header};
use super::segment::{SEGMENT_HEADER_LEN, SegmentHeader};
use crate::error::{DecodeError, DecodeErrorKind};

/// How recovery treats damage in the log.
///
/// # Examples
///
/// ```
/// use strata_format::wal::RecoveryMode;
/// assert_eq!(RecoveryMode::default(), RecoveryMode::TolerateTornTail);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Any damage is an error, even a torn tail after the synced point (a
    /// crash during an unsynced write then needs an operator's decision).
    Strict,
    /// The default. A torn or garbled tail after the last synced point is
    /// cut off and reported; damage before it is an error naming the file
    /// and offset.
    #[default]
    TolerateTornTail,
    /// Recovery stops at the first damage anywhere and the database opens
    /// at the last good record before it. Acknowledged writes after the
    /// damage are lost, so the stop is always reported, never silent.
    PointInTime,
}

/// What the caller knows about the segment being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanParams {
    /// The database the segment must belong to.
    pub database_id: u128,
    /// The segment number from the file name.
    pub segment_number: u64,
    /// The sequence number the segment must start at (the previous
    /// segment's next sequence number), if known.
    pub expected_first_seq: Option<u64>,
    /// Bytes `[0, synced_len)` are known to have been durably synced.
    pub synced_len: u64,
    /// How strictly to treat damage.
    pub mode: RecoveryMode,
}

/// A good batch record found by a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedBatch {
    /// Offset of the record in the segment.
    pub offset: u64,
    /// The record's length, header included.
    pub framed_len: u64,
    /// Sequence number of its first operation.
    pub first_seq: u64,
    /// Sequence number of its last operation.
    pub last_seq: u64,
}

/// How the valid part of a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// The file ends exactly after the last good record.
    Clean,
    /// The file is empty or all zeros and was never synced: nothing was
    /// ever written to it (a crash right after it was created).
    Empty,
    /// Zeros from `offset` to the end of the file (preallocated space).
    ZeroTail {
        /// Where the zeros start.
        offset: u64,
    },
    /// Damage at or after the synced point, from `offset` on: a torn write,
    /// cut off.
    Torn {
        /// Where the damage starts.
        offset: u64,
        /// What was found there.
        error: DecodeError,
    },
    /// [`RecoveryMode::PointInTime`] only: damage before the synced point;
    /// replay stops here and nothing after it (in this or later segments)
    /// is replayed.
    Stopped {
        /// Where the damage starts.
        offset: u64,
        /// What was found there.
        error: DecodeError,
    },
}

/// The result of scanning one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The header, unless the segment is [`SegmentEnd::Empty`] or its
    /// header was torn.
    pub header: Option<SegmentHeader>,
    /// The good batch records, in order.
    pub batches: Vec<ScannedBatch>,
    /// Bytes to keep: the header and every good record (0 if the header
    /// itself is not good).
    pub valid_len: u64,
    /// The sequence number after the last good batch (the header's
    /// `first_seq` if there is none), if the header is good.
    pub next_seq: Option<u64>,
    /// How the valid part ended.
    pub end: SegmentEnd,
}

/// Scans a whole segment.
///
/// # Errors
/// A [`DecodeError`] whose offset is absolute within the segment, for
/// damage that the mode does not tolerate: anything before
/// `params.synced_len` (unless [`RecoveryMode::PointInTime`]), anything at
/// all in [`RecoveryMode::Strict`] (except an empty segment and a zero
/// tail), and, in every mode but point-in-time, records that verify but
/// carry an unknown type, a malformed batch or an out-of-order sequence
/// number, and headers of another database or segment.
///
/// # Examples
///
/// ```
/// use strata_format::wal::*;
/// let header = SegmentHeader { database_id: 1, segment_number: 1, first_seq: 1 };
/// let mut segment = header.encode().to_vec();
/// let mut batch = BatchBuilder::new();
/// batch.put(b"k", b"v");
/// let mut bytes = batch.into_bytes();
/// set_batch_first_seq(&mut bytes, 1);
/// encode_record(RecordType::Batch, &bytes, &mut segment);
/// segment.extend_from_slice(&[0xAB; 5]); // a torn write after the synced point
/// let params = ScanParams {
///     database_id: 1,
///     segment_number: 1,
///     expected_first_seq: Some(1),
///     synced_len: 64,
///     mode: RecoveryMode::TolerateTornTail,
/// };
/// let scan = scan_segment(&segment, &params)?;
/// assert_eq!(scan.batches.len(), 1);
/// assert_eq!(scan.next_seq, Some(2));
/// assert!(matches!(scan.end, SegmentEnd::Torn { .. }));
/// assert_eq!(scan.valid_len as usize, segment.len() - 5);
/// # Ok::<(), strata_format::DecodeError>(())
/// ```
pub fn scan_segment(bytes: &[u8], params: &ScanParams) -> Result<SegmentScan, DecodeError> {
    let mut scan = SegmentScan {
        header: None,
        batches: Vec::new(),
        valid_len: 0,
        next_seq: None,
        end: SegmentEnd::Clean,
    };

    if params.synced_len == 0 && bytes.iter().all(|&b| b == 0) {
        scan.end = SegmentEnd::Empty;
        return Ok(scan);
    }
    let header = match SegmentHeader::decode(bytes) {
        Ok(header) => header,
        Err(error) => {
            scan.end = classify(params, 0, error)?;
            return Ok(scan);
        }
    };
    header.check(params.database_id, params.segment_number)?;
    if let Some(expected) = params.expected_first_seq
        && header.first_seq != expected
    {
        let error = DecodeError::new(
            40,
            DecodeErrorKind::SequenceMismatch {
                expected,
                found: header.first_seq,
            },
        );
        return hard(params, scan, 40, error);
    }
    scan.header = Some(header);
    scan.valid_len = SEGMENT_HEADER_LEN as u64;
    let mut next_seq = header.first_seq;
    scan.next_seq = Some(next_seq);

    let mut offset = SEGMENT_HEADER_LEN;
    while let Some(rest) = bytes.get(offset..).filter(|rest| !rest.is_empty()) {
        let at = offset as u64;
        if is_zero_header(rest) || (rest.len() < RECORD_HEADER_LEN && rest.iter().all(|&b| b == 0))
        {
            match rest.iter().position(|&b| b != 0) {
                None if at >= params.synced_len => {
                    scan.end = SegmentEnd::ZeroTail { offset: at };
                    return Ok(scan);
                }
                None => {
                    let error =
                        DecodeError::new(at, DecodeErrorKind::UnknownRecordType { record_type: 0 });
                    scan.end = classify(params, at, error)?;
                    return Ok(scan);
                }
                Some(nonzero) => {
                    let error =
                        DecodeError::new(at + nonzero as u64, DecodeErrorKind::GarbageAfterZeros);
                    scan.end = classify(params, at, error)?;
                    return Ok(scan);
                }
            }
        }
        let record = match decode_record(rest) {
            Ok(record) => record,
            Err(error) if matches!(error.kind, DecodeErrorKind::UnknownRecordType { .. }) => {
                return hard(params, scan, at, error.at(at));
            }
            Err(error) => {
                scan.end = classify(params, at, error.at(at))?;
                return Ok(scan);
            }
        };
        if record.record_type == RecordType::Edit {
            // A manifest record in a log segment: written, but not here.
            let error = DecodeError::new(at, DecodeErrorKind::UnknownRecordType { record_type: 2 });
            return hard(params, scan, at, error);
        }
        if record.record_type == RecordType::Batch {
            let payload_at = at + RECORD_HEADER_LEN as u64;
            let batch = match decode_batch(record.payload) {
                Ok(batch) => batch,
                Err(error) => return hard(params, scan, at, error.at(payload_at)),
            };
            if batch.first_seq != next_seq {
                let error = DecodeError::new(
                    payload_at,
                    DecodeErrorKind::SequenceMismatch {
                        expected: next_seq,
                        found: batch.first_seq,
                    },
                );
                return hard(params, scan, at, error);
            }
            next_seq = batch.last_seq() + 1;
            scan.batches.push(ScannedBatch {
                offset: at,
                framed_len: record.framed_len as u64,
                first_seq: batch.first_seq,
                last_seq: batch.last_seq(),
            });
        }
        offset += record.framed_len;
        scan.valid_len = offset as u64;
        scan.next_seq = Some(next_seq);
    }
    if (offset as u64) < params.synced_len {
        // The file is shorter than what was synced: synced bytes are gone.
        let error = DecodeError::new(
            offset as u64,
            DecodeErrorKind::Truncated {
                what: "synced segment",
                needed: params.synced_len - offset as u64,
                available: 0,
            },
        );
        scan.end = classify(params, offset as u64, error)?;
    }
    Ok(scan)
}

/// Damage whose treatment depends on where it is.
fn classify(params: &ScanParams, at: u64, error: DecodeError) -> Result<SegmentEnd, DecodeError> {
    match params.mode {
        RecoveryMode::PointInTime if at < params.synced_len => {
            Ok(SegmentEnd::Stopped { offset: at, error })
        }
        _ if at < params.synced_len => Err(error),
        RecoveryMode::Strict => Err(error),
        _ => Ok(SegmentEnd::Torn { offset: at, error }),
    }
}

/// Content that verified but is wrong: corruption wherever it is.
fn hard(
    params: &ScanParams,
    mut scan: SegmentScan,
    at: u64,
    error: DecodeError,
) -> Result<SegmentScan, DecodeError> {
    if params.mode == RecoveryMode::PointInTime {
        scan.end = SegmentEnd::Stopped { offset: at, error };
        Ok(scan)
    } else {
        Err(error)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::super::batch::{BatchBuilder, set_batch_first_seq};
    use super::super::record::{encode_record, finish_record};
    use super::*;

    const DB: u128 = 0xdb;

    struct Seg {
        bytes: Vec<u8>,
        ends: Vec<usize>,
    }

    fn segment(first_seq: u64, batches: &[u32]) -> Seg {
        let header = SegmentHeader {
            database_id: DB,
            segment_number: 5,
            first_seq,
        };
        let mut bytes = header.encode().to_vec();
        let mut ends = vec![bytes.len()];
        let mut seq = first_seq;
        for (i, &ops) in batches.iter().enumerate() {
            let mut b = BatchBuilder::new();
            for j in 0..ops {
                b.put(format!("key-{i}-{j}").as_bytes(), b"value");
            }
            let mut payload = b.into_bytes();
            set_batch_first_seq(&mut payload, seq);
            seq += u64::from(ops);
            encode_record(RecordType::Batch, &payload, &mut bytes);
            ends.push(bytes.len());
        }
        Seg { bytes, ends }
    }

    fn params(synced_len: u64, mode: RecoveryMode) -> ScanParams {
        ScanParams {
            database_id: DB,
            segment_number: 5,
            expected_first_seq: Some(10),
            synced_len,
            mode,
        }
    }

    const TOLERATE: RecoveryMode = RecoveryMode::TolerateTornTail;

    #[test]
    fn clean_segment_scans_every_batch() {
        let seg = segment(10, &[1, 3, 2]);
        let scan = scan_segment(&seg.bytes, &params(seg.bytes.len() as u64, TOLERATE)).unwrap();
        assert_eq!(scan.batches.len(), 3);
        assert_eq!(scan.batches[1].first_seq, 11);
        assert_eq!(scan.batches[1].last_seq, 13);
        assert_eq!(scan.next_seq, Some(16));
        assert_eq!(scan.end, SegmentEnd::Clean);
        assert_eq!(scan.valid_len, seg.bytes.len() as u64);
    }

    #[test]
    fn empty_segment_replays_nothing_in_every_mode() {
        for mode in [RecoveryMode::Strict, TOLERATE, RecoveryMode::PointInTime] {
            let scan = scan_segment(&[], &params(0, mode)).unwrap();
            assert_eq!(scan.end, SegmentEnd::Empty);
            let scan = scan_segment(&[0u8; 100], &params(0, mode)).unwrap();
            assert_eq!(scan.end, SegmentEnd::Empty);
        }
    }

    #[test]
    fn torn_header_of_unsynced_segment_is_torn_tail() {
        let seg = segment(10, &[]);
        let scan = scan_segment(&seg.bytes[..30], &params(0, TOLERATE)).unwrap();
        assert!(matches!(scan.end, SegmentEnd::Torn { offset: 0, .. }));
        assert_eq!(scan.valid_len, 0);
        assert!(scan_segment(&seg.bytes[..30], &params(0, RecoveryMode::Strict)).is_err());
    }

    #[test]
    fn torn_header_of_synced_segment_is_corruption() {
        let seg = segment(10, &[1]);
        let err = scan_segment(&seg.bytes[..30], &params(64, TOLERATE)).unwrap_err();
        assert!(err.is_truncation());
    }

    #[test]
    fn torn_payload_after_synced_point_is_cut() {
        let seg = segment(10, &[1, 2, 3]);
        for cut in seg.ends[2] + 1..seg.ends[3] {
            let scan =
                scan_segment(&seg.bytes[..cut], &params(seg.ends[2] as u64, TOLERATE)).unwrap();
            assert_eq!(scan.batches.len(), 2, "cut at {cut}");
            assert_eq!(scan.valid_len, seg.ends[2] as u64);
            assert_eq!(scan.next_seq, Some(13));
            assert!(
                matches!(scan.end, SegmentEnd::Torn { offset, .. } if offset == seg.ends[2] as u64)
            );
        }
    }

    #[test]
    fn torn_tail_is_an_error_in_strict_mode() {
        let seg = segment(10, &[1, 2]);
        let cut = seg.ends[2] - 3;
        let err = scan_segment(
            &seg.bytes[..cut],
            &params(seg.ends[1] as u64, RecoveryMode::Strict),
        )
        .unwrap_err();
        assert!(err.is_truncation());
        assert!(err.offset >= seg.ends[1] as u64);
    }

    #[test]
    fn crc_mismatch_in_tail_record_drops_it() {
        let mut seg = segment(10, &[1, 1]);
        let last = seg.bytes.len() - 1;
        seg.bytes[last] ^= 0xff;
        let scan = scan_segment(&seg.bytes, &params(seg.ends[1] as u64, TOLERATE)).unwrap();
        assert_eq!(scan.batches.len(), 1);
        assert!(
            matches!(&scan.end, SegmentEnd::Torn { error, .. } if matches!(error.kind, DecodeErrorKind::ChecksumMismatch { .. }))
        );
    }

    #[test]
    fn crc_mismatch_before_synced_point_is_corruption_with_offset() {
        let mut seg = segment(10, &[1, 1, 1]);
        seg.bytes[seg.ends[1] + 12] ^= 1;
        let err = scan_segment(&seg.bytes, &params(seg.bytes.len() as u64, TOLERATE)).unwrap_err();
        assert_eq!(err.offset, seg.ends[1] as u64);
        assert!(matches!(err.kind, DecodeErrorKind::ChecksumMismatch { .. }));
    }

    #[test]
    fn point_in_time_stops_at_corruption_with_report() {
        let mut seg = segment(10, &[1, 1, 1]);
        seg.bytes[seg.ends[1] + 12] ^= 1;
        let scan = scan_segment(
            &seg.bytes,
            &params(seg.bytes.len() as u64, RecoveryMode::PointInTime),
        )
        .unwrap();
        assert_eq!(scan.batches.len(), 1);
        assert!(
            matches!(scan.end, SegmentEnd::Stopped { offset, .. } if offset == seg.ends[1] as u64)
        );
    }

    #[test]
    fn zero_filled_tail_is_ignored() {
        let mut seg = segment(10, &[2]);
        seg.bytes.extend_from_slice(&[0u8; 4096]);
        for mode in [RecoveryMode::Strict, TOLERATE] {
            let scan = scan_segment(&seg.bytes, &params(seg.ends[1] as u64, mode)).unwrap();
            assert_eq!(scan.batches.len(), 1);
            assert_eq!(
                scan.end,
                SegmentEnd::ZeroTail {
                    offset: seg.ends[1] as u64
                }
            );
        }
        // A short zero tail (fewer bytes than a record header) too.
        let mut seg = segment(10, &[2]);
        seg.bytes.extend_from_slice(&[0u8; 3]);
        let scan = scan_segment(&seg.bytes, &params(seg.ends[1] as u64, TOLERATE)).unwrap();
        assert!(matches!(scan.end, SegmentEnd::ZeroTail { .. }));
    }

    #[test]
    fn zeros_over_synced_records_are_corruption() {
        let mut seg = segment(10, &[1, 1]);
        let (a, b) = (seg.ends[1], seg.ends[2]);
        seg.bytes[a..b].fill(0);
        assert!(scan_segment(&seg.bytes, &params(b as u64, TOLERATE)).is_err());
    }

    #[test]
    fn garbage_after_zeros_is_torn_after_synced_point() {
        let mut seg = segment(10, &[1]);
        seg.bytes.extend_from_slice(&[0u8; 20]);
        seg.bytes.extend_from_slice(&[7u8; 20]);
        let scan = scan_segment(&seg.bytes, &params(seg.ends[1] as u64, TOLERATE)).unwrap();
        assert!(
            matches!(&scan.end, SegmentEnd::Torn { error, .. } if error.kind == DecodeErrorKind::GarbageAfterZeros)
        );
    }

    #[test]
    fn huge_length_field_is_torn_or_corrupt_by_position() {
        let mut seg = segment(10, &[1, 1]);
        let at = seg.ends[1];
        seg.bytes[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        let scan = scan_segment(&seg.bytes, &params(at as u64, TOLERATE)).unwrap();
        assert_eq!(scan.batches.len(), 1);
        assert!(
            matches!(&scan.end, SegmentEnd::Torn { error, .. } if matches!(error.kind, DecodeErrorKind::LengthTooLarge { .. }))
        );
        let err = scan_segment(&seg.bytes, &params(seg.bytes.len() as u64, TOLERATE)).unwrap_err();
        assert_eq!(err.offset, at as u64 + 4);
    }

    #[test]
    fn unknown_record_type_is_corruption_anywhere() {
        let mut seg = segment(10, &[1]);
        let start = super::super::record::begin_record(&mut seg.bytes);
        seg.bytes.push(1);
        finish_record(&mut seg.bytes, start, RecordType::Batch);
        seg.bytes[start + 8] = 0x11;
        let crc = crc32fast::hash(&seg.bytes[start + 4..]);
        seg.bytes[start..start + 4].copy_from_slice(&crc.to_le_bytes());
        let err = scan_segment(&seg.bytes, &params(seg.ends[1] as u64, TOLERATE)).unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::UnknownRecordType { record_type: 0x11 }
        );
    }

    #[test]
    fn ignorable_record_type_is_skipped() {
        let mut seg = segment(10, &[1]);
        encode_record(RecordType::Ignorable(0x90), b"future", &mut seg.bytes);
        let scan = scan_segment(&seg.bytes, &params(0, TOLERATE)).unwrap();
        assert_eq!(scan.batches.len(), 1);
        assert_eq!(scan.valid_len, seg.bytes.len() as u64);
    }

    #[test]
    fn sequence_number_that_goes_back_is_corruption() {
        let mut seg = segment(10, &[2]);
        let mut b = BatchBuilder::new();
        b.delete(b"x");
        let mut payload = b.into_bytes();
        set_batch_first_seq(&mut payload, 11); // 10 and 11 are taken; 12 is next
        encode_record(RecordType::Batch, &payload, &mut seg.bytes);
        let err = scan_segment(&seg.bytes, &params(0, TOLERATE)).unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::SequenceMismatch {
                expected: 12,
                found: 11
            }
        );
    }

    #[test]
    fn segment_that_does_not_continue_the_previous_one_is_corruption() {
        let seg = segment(11, &[1]);
        let err = scan_segment(&seg.bytes, &params(0, TOLERATE)).unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::SequenceMismatch {
                expected: 10,
                found: 11
            }
        );
    }

    #[test]
    fn segment_from_another_database_is_rejected_even_if_unsynced() {
        let seg = segment(10, &[1]);
        let mut p = params(0, TOLERATE);
        p.database_id = other_id();
        assert!(matches!(
            scan_segment(&seg.bytes, &p).unwrap_err().kind,
            DecodeErrorKind::WrongDatabase { .. }
        ));
        let mut p = params(0, TOLERATE);
        p.segment_number = 6;
        assert!(matches!(
            scan_segment(&seg.bytes, &p).unwrap_err().kind,
            DecodeErrorKind::WrongSegmentNumber { .. }
        ));
    }

    const fn other_id() -> u128 {
        0xabc
    }

    #[test]
    fn file_shorter_than_synced_point_is_corruption() {
        let seg = segment(10, &[1, 1]);
        let err = scan_segment(
            &seg.bytes[..seg.ends[1]],
            &params(seg.ends[2] as u64, TOLERATE),
        )
        .unwrap_err();
        assert!(err.is_truncation());
    }
}
