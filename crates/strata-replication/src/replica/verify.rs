//! The checks on each received record, before it joins a group: the
//! engine's one decode (`VerifiedRecord::verify`), the sequence numbers the
//! message names, continuity, and the hash link.

use super::*;

/// Checks one received record and adds it to the group to apply, or ends
/// the session (counting why).
pub(super) fn take_record(
    shared: &Shared,
    record: Record,
    applied: &mut u64,
    group_hash: &mut Option<[u8; 8]>,
    group: &mut Vec<VerifiedRecord>,
) -> Result<(), End> {
    match check_record(record, *applied, *group_hash) {
        Checked::Duplicate => {
            shared.counters.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        Checked::Next { record, hash } => {
            *applied = record.last_seq().get();
            group.push(record);
            *group_hash = Some(hash);
        }
        Checked::Gap(why) => {
            shared.counters.gaps.fetch_add(1, Ordering::Relaxed);
            return Err(End::Retry(why));
        }
        Checked::Mismatch(why) => {
            shared
                .counters
                .hash_mismatches
                .fetch_add(1, Ordering::Relaxed);
            return Err(End::Retry(why));
        }
        Checked::Bad(why) => {
            shared.counters.bad_records.fetch_add(1, Ordering::Relaxed);
            return Err(End::Retry(why));
        }
    }
    Ok(())
}

pub(super) enum Checked {
    Duplicate,
    Next {
        record: VerifiedRecord,
        hash: [u8; 8],
    },
    Gap(String),
    Mismatch(String),
    Bad(String),
}

/// Checks one record against the replica's position and link: the
/// record's checksum and batch (decoded once, by the engine's
/// [`VerifiedRecord::verify`]), the sequence numbers the message names,
/// continuity and the hash link.
pub(super) fn check_record(record: Record, applied: u64, link: Option<[u8; 8]>) -> Checked {
    let (first_seq, last_seq) = (record.first_seq, record.last_seq);
    let prev_hash = record.prev_hash;
    let verified = match VerifiedRecord::verify(record.record) {
        Ok(verified) => verified,
        Err(e) => {
            return Checked::Bad(format!("record {first_seq}..={last_seq}: {e}"));
        }
    };
    if verified.first_seq().get() != first_seq || verified.last_seq().get() != last_seq {
        return Checked::Bad(format!(
            "record says {first_seq}..={last_seq} but its batch holds {}..={}",
            verified.first_seq().get(),
            verified.last_seq().get()
        ));
    }
    if last_seq <= applied {
        return Checked::Duplicate;
    }
    if first_seq != applied + 1 {
        return Checked::Gap(format!(
            "record starts at {first_seq} but {} must come next",
            applied + 1
        ));
    }
    if let Some(link) = link
        && !prev_hash.is_empty()
        && prev_hash.as_slice() != link.as_slice()
    {
        return Checked::Mismatch(format!(
            "record {first_seq}..={last_seq} names a predecessor that is not this replica's record at {applied}"
        ));
    }
    let hash = record_hash(verified.payload());
    Checked::Next {
        record: verified,
        hash,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use strata_format::wal::{BatchBuilder, RecordType, encode_record, set_batch_first_seq};

    fn record(first: u64, keys: &[&[u8]], prev: Option<[u8; 8]>) -> (Record, [u8; 8]) {
        let mut batch = BatchBuilder::new();
        for key in keys {
            batch.put(key, b"v");
        }
        let mut payload = batch.into_bytes();
        set_batch_first_seq(&mut payload, first);
        let mut bytes = Vec::new();
        encode_record(RecordType::Batch, &payload, &mut bytes);
        let hash = record_hash(&payload);
        (
            Record {
                first_seq: first,
                last_seq: first + keys.len() as u64 - 1,
                record: bytes,
                prev_hash: prev.map(|h| h.to_vec()).unwrap_or_default(),
            },
            hash,
        )
    }

    #[test]
    fn the_next_record_is_taken_and_its_hash_returned() {
        let (first, h1) = record(1, &[b"a", b"b"], None);
        match check_record(first.clone(), 0, None) {
            Checked::Next { hash, .. } => assert_eq!(hash, h1),
            _ => panic!("not taken"),
        }
        let (second, _) = record(3, &[b"c"], Some(h1));
        assert!(matches!(
            check_record(second.clone(), 2, Some(h1)),
            Checked::Next { .. }
        ));
    }

    #[test]
    fn duplicates_are_ignored_and_gaps_refused() {
        let (r, _) = record(1, &[b"a", b"b"], None);
        assert!(matches!(
            check_record(r.clone(), 2, None),
            Checked::Duplicate
        ));
        assert!(matches!(
            check_record(r.clone(), 5, None),
            Checked::Duplicate
        ));
        let (later, _) = record(5, &[b"a"], None);
        assert!(matches!(
            check_record(later.clone(), 2, None),
            Checked::Gap(_)
        ));
    }

    #[test]
    fn a_link_to_another_predecessor_is_refused() {
        let (r, _) = record(3, &[b"a"], Some([1; 8]));
        assert!(matches!(
            check_record(r.clone(), 2, Some([2; 8])),
            Checked::Mismatch(_)
        ));
    }

    #[test]
    fn damaged_or_mislabelled_records_are_refused() {
        let (mut r, _) = record(1, &[b"a"], None);
        let last = r.record.len() - 1;
        r.record[last] ^= 1;
        assert!(matches!(check_record(r.clone(), 0, None), Checked::Bad(_)));
        let (mut r, _) = record(1, &[b"a"], None);
        r.last_seq = 2; // the message names other numbers than its batch
        assert!(matches!(check_record(r.clone(), 0, None), Checked::Bad(_)));
        let (mut r, _) = record(1, &[b"a"], None);
        r.record.push(0); // trailing bytes
        assert!(matches!(check_record(r.clone(), 0, None), Checked::Bad(_)));
        let (mut r, _) = record(1, &[b"a"], None);
        r.record.truncate(5);
        assert!(matches!(check_record(r.clone(), 0, None), Checked::Bad(_)));
    }
}
