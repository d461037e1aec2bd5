//! The byte offsets, constants and examples in `docs/format.md`, checked
//! against the encoders, so that the document cannot drift from the code
//! unnoticed.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use strata_format::coding::put_varint32;
use strata_format::wal::{
    BatchBuilder, MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN, RecordType, SEGMENT_HEADER_LEN,
    SYNC_POINT_FILE_NAME, SYNC_POINT_SLOT_LEN, SYNC_POINT_SLOT_OFFSETS, SegmentHeader, SyncPoint,
    encode_record, segment_file_name, set_batch_first_seq,
};

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn u128_at(bytes: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(bytes[at..at + 16].try_into().unwrap())
}

#[test]
fn checksum_is_crc32_iso_hdlc() {
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32fast::hash(&[0u8; 5]), 0xC622_F71D);
}

#[test]
fn varint_examples() {
    for (value, bytes) in [
        (0u32, &[0x00][..]),
        (127, &[0x7f]),
        (300, &[0xac, 0x02]),
        (u32::MAX, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
    ] {
        let mut out = Vec::new();
        put_varint32(&mut out, value);
        assert_eq!(out, bytes, "{value}");
    }
}

#[test]
fn file_names() {
    assert_eq!(segment_file_name(1), "00000000000000000001.wal");
    assert_eq!(SYNC_POINT_FILE_NAME, "SYNC_POINT");
}

#[test]
fn segment_header_layout() {
    let header = SegmentHeader {
        database_id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
        segment_number: 0x1112_1314_1516_1718,
        first_seq: 0x2122_2324_2526_2728,
    };
    let bytes = header.encode();
    assert_eq!(SEGMENT_HEADER_LEN, 64);
    assert_eq!(&bytes[0..8], b"STRATWAL");
    assert_eq!(u32_at(&bytes, 8), 1);
    assert_eq!(u32_at(&bytes, 12), 0);
    assert_eq!(u128_at(&bytes, 16), header.database_id);
    assert_eq!(u64_at(&bytes, 32), header.segment_number);
    assert_eq!(u64_at(&bytes, 40), header.first_seq);
    assert_eq!(&bytes[48..60], &[0u8; 12]);
    assert_eq!(u32_at(&bytes, 60), crc32fast::hash(&bytes[0..60]));
}

#[test]
fn record_layout() {
    let payload = b"payload bytes";
    let mut bytes = Vec::new();
    encode_record(RecordType::Batch, payload, &mut bytes);
    assert_eq!(RECORD_HEADER_LEN, 9);
    assert_eq!(MAX_RECORD_PAYLOAD, 1 << 30);
    assert_eq!(bytes.len(), 9 + payload.len());
    assert_eq!(u32_at(&bytes, 0), crc32fast::hash(&bytes[4..]));
    assert_eq!(u32_at(&bytes, 4), payload.len() as u32);
    assert_eq!(bytes[8], 0x01);
    assert_eq!(&bytes[9..], payload);

    let mut ignorable = Vec::new();
    encode_record(RecordType::Ignorable(0x85), b"", &mut ignorable);
    assert_eq!(ignorable[8], 0x85);
}

#[test]
fn batch_layout() {
    let mut batch = BatchBuilder::new();
    batch.put(b"k", b"vv");
    batch.delete(b"kk");
    let mut bytes = batch.into_bytes();
    set_batch_first_seq(&mut bytes, 0x0102_0304_0506_0708);
    assert_eq!(u64_at(&bytes, 0), 0x0102_0304_0506_0708);
    assert_eq!(u32_at(&bytes, 8), 2);
    assert_eq!(
        &bytes[12..],
        &[0x01, 1, b'k', 2, b'v', b'v', 0x02, 2, b'k', b'k']
    );
}

#[test]
fn sync_point_layout() {
    let point = SyncPoint {
        database_id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
        generation: 0x1112_1314_1516_1718,
        segment_number: 0x2122_2324_2526_2728,
        synced_len: 0x3132_3334_3536_3738,
    };
    let bytes = point.encode();
    assert_eq!(SYNC_POINT_SLOT_LEN, 52);
    assert_eq!(SYNC_POINT_SLOT_OFFSETS, [0, 512]);
    assert_eq!(&bytes[0..4], b"SSYN");
    assert_eq!(u32_at(&bytes, 4), 1);
    assert_eq!(u128_at(&bytes, 8), point.database_id);
    assert_eq!(u64_at(&bytes, 24), point.generation);
    assert_eq!(u64_at(&bytes, 32), point.segment_number);
    assert_eq!(u64_at(&bytes, 40), point.synced_len);
    assert_eq!(u32_at(&bytes, 48), crc32fast::hash(&bytes[0..48]));
    assert_eq!(point.slot(), 0);
    assert_eq!(
        SyncPoint {
            generation: 7,
            ..point
        }
        .slot(),
        1
    );
}
