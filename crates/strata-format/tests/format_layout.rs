//! The byte offsets, constants and examples in `docs/format.md`, checked
//! against the encoders, so that the document cannot drift from the code
//! unnoticed.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use strata_format::coding::{put_varint32, put_varint64};
use strata_format::key::{
    InternalKeyRef, MAX_SEQ, TRAILER_LEN, ValueKind, compare_bytewise, compare_internal,
    encode_internal_key,
};
use strata_format::manifest::{
    LEVELS, MANIFEST_FORMAT_VERSION, MANIFEST_HEADER_LEN, MANIFEST_MAGIC, MAX_KEY_BYTES,
    ManifestHeader, TableEntry, VersionEdit, current_file_content, manifest_file_name,
    parse_current, parse_manifest_file_name, parse_table_file_name, table_file_name,
};
use strata_format::table::{
    BLOCK_TRAILER_LEN, BlockBuilder, BlockHandle, BloomBuilder, Compression, FOOTER_LEN, Footer,
    MAX_BLOCK_UNCOMPRESSED, Properties, TABLE_FORMAT_VERSION, TABLE_MAGIC, TableBuilder,
    TableOptions, TableReader, bloom_hash, bloom_may_contain, decode_block, encode_block,
    filter_hash,
};
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

#[test]
fn varint64_example() {
    let mut out = Vec::new();
    put_varint64(&mut out, 1 << 35);
    assert_eq!(out, [0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
}

/// `IDENTITY` is written by the engine (`crates/strata/src/db/identity.rs`),
/// which this crate cannot depend on; the test checks the documented
/// example, and that the engine's writer and reader still use the
/// documented format and length.
#[test]
fn identity_file_layout() {
    let id: u128 = 0x5354_5241_5441_0001;
    let text = format!("{id:032x}\n");
    assert_eq!(text, "00000000000000005354524154410001\n");
    assert_eq!(text.len(), 33);
    assert_eq!(u128::from_str_radix(&text[..32], 16).unwrap(), id);
    let engine = include_str!("../../strata/src/db/identity.rs");
    assert!(
        engine.contains(r#"format!("{id:032x}\n")"#),
        "writer format changed"
    );
    assert!(engine.contains("len != 33"), "reader length changed");
    assert!(engine.contains(r#"const IDENTITY_FILE_NAME: &str = "IDENTITY";"#));
}

#[test]
fn internal_key_layout() {
    assert_eq!(TRAILER_LEN, 8);
    assert_eq!(MAX_SEQ, (1 << 56) - 1);
    let mut key = Vec::new();
    encode_internal_key(b"ab", 0x0102, ValueKind::Delete, &mut key);
    assert_eq!(key, [0x61, 0x62, 0x01, 0x02, 0x01, 0, 0, 0, 0, 0]);
    assert_eq!(
        u64_at(&key, 2),
        (0x0102 << 8) | u64::from(ValueKind::Delete.to_byte())
    );
    assert_eq!(ValueKind::Delete.to_byte(), 0x01);
    assert_eq!(ValueKind::Put.to_byte(), 0x02);
    assert_eq!(ValueKind::FOR_SEEK, ValueKind::Put);
    for unknown in [0x00, 0x03, 0xff] {
        assert_eq!(ValueKind::from_byte(unknown), None);
    }
    let mut max = Vec::new();
    encode_internal_key(b"", MAX_SEQ, ValueKind::Put, &mut max);
    assert_eq!(max, [0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(InternalKeyRef::decode(&max).unwrap().seq, MAX_SEQ);

    // User key ascending, then sequence number descending, then kind descending.
    let k = |user: &[u8], seq, kind| {
        let mut out = Vec::new();
        encode_internal_key(user, seq, kind, &mut out);
        out
    };
    let ordered = [
        k(b"a", 9, ValueKind::Put),
        k(b"a", 9, ValueKind::Delete),
        k(b"a", 3, ValueKind::Put),
        k(b"ab", 100, ValueKind::Put),
        k(b"b", 1, ValueKind::Put),
    ];
    for pair in ordered.windows(2) {
        assert_eq!(
            compare_internal(&pair[0], &pair[1]),
            std::cmp::Ordering::Less
        );
    }
}

#[test]
fn block_example() {
    let mut builder = BlockBuilder::new(16, compare_bytewise);
    builder.add(b"apple", b"red");
    builder.add(b"apricot", b"x");
    let mut expected = vec![0x00, 0x05, 0x03];
    expected.extend_from_slice(b"applered");
    expected.extend_from_slice(&[0x02, 0x05, 0x01]);
    expected.extend_from_slice(b"ricotx");
    expected.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(builder.finish(), expected.as_slice());
    let mut empty = BlockBuilder::new(16, compare_bytewise);
    assert_eq!(empty.finish(), [0, 0, 0, 0]);
}

#[test]
fn block_trailer_layout() {
    assert_eq!(BLOCK_TRAILER_LEN, 5);
    assert_eq!(MAX_BLOCK_UNCOMPRESSED, 64 << 20);
    let offset = 0x0102_0304_u64;
    let mut file = vec![0u8; 7];
    let handle = encode_block(b"contents", Compression::None, offset, &mut file);
    let stored = &file[7..];
    assert_eq!(stored.len(), 8 + 5);
    assert_eq!(&stored[..8], b"contents");
    assert_eq!(stored[8], 0x00);
    let mut covered = b"contents".to_vec();
    covered.push(0x00);
    covered.extend_from_slice(&offset.to_le_bytes());
    assert_eq!(u32_at(stored, 9), crc32fast::hash(&covered));
    assert_eq!(
        handle,
        BlockHandle {
            offset,
            size: 13,
            checksum: u32_at(stored, 9)
        }
    );

    // LZ4: uncompressed length as a varint32, then LZ4 block data.
    let contents = b"abcdefgh".repeat(64);
    let mut file = Vec::new();
    let handle = encode_block(&contents, Compression::Lz4, 0, &mut file);
    assert_eq!(file[file.len() - 5], 0x01);
    assert_eq!(&file[..2], &[0x80, 0x04]); // 512
    assert_eq!(
        &*decode_block(&file, &handle, 1 << 20).unwrap(),
        &contents[..]
    );
    // Not worth an eighth: stored as is.
    let mut file = Vec::new();
    encode_block(b"incompressible!", Compression::Lz4, 0, &mut file);
    assert_eq!(file[15], 0x00);
}

#[test]
fn block_handle_layout() {
    let handle = BlockHandle {
        offset: 4096,
        size: 300,
        checksum: 0xdead_beef,
    };
    let mut bytes = Vec::new();
    handle.encode_to(&mut bytes);
    assert_eq!(bytes, [0x80, 0x20, 0xac, 0x02, 0xef, 0xbe, 0xad, 0xde]);
}

#[test]
fn footer_layout() {
    assert_eq!(FOOTER_LEN, 80);
    assert_eq!(TABLE_MAGIC, *b"STRATSST");
    assert_eq!(TABLE_FORMAT_VERSION, 1);
    let handle = |base: u64| BlockHandle {
        offset: base,
        size: base + 1,
        checksum: base as u32 + 2,
    };
    let footer = Footer {
        index: handle(0x0100),
        filter: Some(handle(0x0200)),
        properties: handle(0x0300),
    };
    let bytes = footer.encode();
    for (at, h) in [
        (0, handle(0x0100)),
        (20, handle(0x0200)),
        (40, handle(0x0300)),
    ] {
        assert_eq!(u64_at(&bytes, at), h.offset);
        assert_eq!(u64_at(&bytes, at + 8), h.size);
        assert_eq!(u32_at(&bytes, at + 16), h.checksum);
    }
    assert_eq!(u32_at(&bytes, 60), 1);
    assert_eq!(u32_at(&bytes, 64), 0);
    assert_eq!(u32_at(&bytes, 68), crc32fast::hash(&bytes[0..68]));
    assert_eq!(&bytes[72..80], b"STRATSST");
    let no_filter = Footer {
        filter: None,
        ..footer
    }
    .encode();
    assert_eq!(&no_filter[20..40], &[0u8; 20]);
}

/// The documented hash: FNV-1a 64, then fmix64.
fn documented_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[test]
fn bloom_filter_layout() {
    // Cache-local: one 64-byte block of zeros, then the marker 0x80 | k.
    let empty = BloomBuilder::new(10).finish();
    assert_eq!(empty.len(), 65);
    assert!(empty[..64].iter().all(|&b| b == 0));
    assert_eq!(empty[64], 0x80 | 7);
    for key in [&b""[..], b"a", b"user:42"] {
        assert_eq!(bloom_hash(key), documented_hash(key));
    }
    // XXH3-64, default seed (xxHash's reference values).
    assert_eq!(filter_hash(b""), 0x2D06_8005_38D3_94C2);
    assert_eq!(filter_hash(b"a"), 0xE6C6_32B6_1E96_4E1F);
    // One key, 10 bits per key: one block, k = 7, bits g >> 23 with
    // g = h as u32, then g *= 0x9E3779B9.
    let mut builder = BloomBuilder::new(10);
    builder.add_key(b"key");
    let filter = builder.finish();
    let h = filter_hash(b"key");
    assert_eq!(
        (h >> 32) >> 32,
        0,
        "one block: block ((h >> 32) * 1) >> 32 = 0"
    );
    let mut expected = [0u8; 65];
    let mut g = h as u32;
    for _ in 0..7 {
        let bit = (g >> 23) as usize;
        expected[bit / 8] |= 1 << (bit % 8);
        g = g.wrapping_mul(0x9E37_79B9);
    }
    expected[64] = 0x80 | 7;
    assert_eq!(filter, expected);
    // Classic filters (tables written before): marker k, bits
    // (h + j * delta) mod m over FNV-1a + fmix64.
    let h = documented_hash(b"key");
    let delta = h.rotate_left(32);
    let mut classic = [0u8; 9];
    for j in 0..7u64 {
        let bit = h.wrapping_add(j.wrapping_mul(delta)) % 64;
        classic[(bit / 8) as usize] |= 1 << (bit % 8);
    }
    classic[8] = 7;
    assert!(bloom_may_contain(&classic, b"key"));
    // Anything that is not a valid filter answers "may contain".
    for invalid in [&[][..], &[7], &[0, 0, 0], &[0, 0, 31], &[0, 0, 0x87]] {
        assert!(bloom_may_contain(invalid, b"x"));
    }
}

#[test]
fn properties_layout() {
    let mut expected = Vec::new();
    for tag in 1..=7u8 {
        expected.extend_from_slice(&[tag, 1, 0]);
    }
    expected.extend_from_slice(&[8, 0, 9, 0, 10, 1, 0]);
    assert_eq!(Properties::default().encode(), expected);

    let props = Properties {
        entries: 1,
        deletions: 2,
        data_blocks: 3,
        raw_key_bytes: 4,
        raw_value_bytes: 5,
        smallest_seq: 6,
        largest_seq: 7,
        smallest_key: vec![8],
        largest_key: vec![9],
        level: 10,
    };
    // Every field's value is its own tag: tag, length 1, value.
    let expected: Vec<u8> = (1..=10u8).flat_map(|tag| [tag, 1, tag]).collect();
    assert_eq!(props.encode(), expected);
    // Unknown tags are skipped; missing tags read as zero.
    assert_eq!(
        Properties::decode(&[1, 1, 5, 11, 2, 0xaa, 0xbb]).unwrap(),
        Properties {
            entries: 5,
            ..Properties::default()
        }
    );
}

#[test]
fn table_file_layout() {
    let mut builder = TableBuilder::new(TableOptions {
        block_bytes: 64,
        ..TableOptions::default()
    });
    for i in 0..20u32 {
        let mut key = Vec::new();
        encode_internal_key(format!("key{i:03}").as_bytes(), 1, ValueKind::Put, &mut key);
        builder.add(&key, b"value");
    }
    let finished = builder.finish();
    let file = finished.tail;
    let table = TableReader::open(&file, finished.file_size).unwrap();
    let footer = *table.footer();
    let mut next = 0;
    for handle in table.data_blocks() {
        assert_eq!(handle.offset, next, "data blocks back to back from 0");
        next = handle.end();
    }
    let filter = footer.filter.unwrap();
    for handle in [filter, footer.properties, footer.index] {
        assert_eq!(handle.offset, next, "filter, properties, index in order");
        next = handle.end();
    }
    assert_eq!(next, file.len() as u64 - 80, "the footer ends the file");
    // The filter and properties blocks are never compressed.
    for handle in [filter, footer.properties] {
        assert_eq!(file[handle.end() as usize - 5], 0x00);
    }
}

#[test]
fn manifest_header_layout() {
    assert_eq!(MANIFEST_HEADER_LEN, 64);
    assert_eq!(MANIFEST_MAGIC, *b"STRATMAN");
    assert_eq!(MANIFEST_FORMAT_VERSION, 1);
    let header = ManifestHeader {
        database_id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
        manifest_number: 0x1112_1314_1516_1718,
    };
    let bytes = header.encode();
    assert_eq!(&bytes[0..8], b"STRATMAN");
    assert_eq!(u32_at(&bytes, 8), 1);
    assert_eq!(u32_at(&bytes, 12), 0);
    assert_eq!(u128_at(&bytes, 16), header.database_id);
    assert_eq!(u64_at(&bytes, 32), header.manifest_number);
    assert_eq!(&bytes[40..60], &[0u8; 20]);
    assert_eq!(u32_at(&bytes, 60), crc32fast::hash(&bytes[0..60]));
}

#[test]
fn version_edit_layout() {
    assert_eq!(LEVELS, 7);
    assert_eq!(MAX_KEY_BYTES, 1 << 20);
    let edit = VersionEdit {
        next_file_number: Some(0x0a),
        flushed_seq: Some(0x0b),
        added: vec![TableEntry {
            level: 2,
            number: 0x0c,
            size: 0x0d,
            smallest: vec![0xaa],
            largest: vec![0xbb, 0xbb],
            smallest_seq: 0x0e,
            largest_seq: 0x0f,
            entries: 0x10,
            obsolete_entries: 0,
        }],
        deleted: vec![(1, 0x11)],
        ..Default::default()
    };
    let le = |v: u64| v.to_le_bytes();
    let mut expected = vec![0x01];
    expected.extend(le(0x0a));
    expected.push(0x02);
    expected.extend(le(0x0b));
    expected.extend([0x04, 1]);
    expected.extend(le(0x11));
    expected.extend([0x03, 2]);
    expected.extend(le(0x0c));
    expected.extend(le(0x0d));
    expected.extend([1, 0, 0, 0, 0xaa, 2, 0, 0, 0, 0xbb, 0xbb]);
    expected.extend(le(0x0e));
    expected.extend(le(0x0f));
    expected.extend(le(0x10));
    assert_eq!(edit.encode(), expected);
    // An ignorable field is skipped; an unknown tag below 0x80 is an error.
    let mut ignorable = vec![0x80, 1, 0, 0, 0, 0xff];
    ignorable.extend(&expected);
    assert_eq!(VersionEdit::decode(&ignorable).unwrap(), edit);
    assert!(VersionEdit::decode(&[0x05]).is_err());
    assert!(VersionEdit::decode(&[0x00]).is_err());
}

#[test]
fn manifest_records_are_wal_records_of_type_2() {
    let edit = VersionEdit {
        flushed_seq: Some(7),
        ..VersionEdit::default()
    };
    let mut bytes = Vec::new();
    encode_record(RecordType::Edit, &edit.encode(), &mut bytes);
    assert_eq!(bytes[8], 0x02);
    assert_eq!(u32_at(&bytes, 4), 9);
    assert_eq!(u32_at(&bytes, 0), crc32fast::hash(&bytes[4..]));
}

#[test]
fn current_and_manifest_file_names() {
    assert_eq!(current_file_content(5), "MANIFEST-000005\n");
    assert_eq!(parse_current(b"MANIFEST-000005\n").unwrap(), 5);
    assert_eq!(manifest_file_name(5), "MANIFEST-000005");
    assert_eq!(table_file_name(12), "000012.sst");
    assert_eq!(table_file_name(1_234_567), "1234567.sst");
    assert_eq!(parse_table_file_name("000012.sst"), Some(12));
    assert_eq!(
        parse_manifest_file_name("MANIFEST-1234567"),
        Some(1_234_567)
    );
    // At least six digits; non-canonical spellings with more are accepted.
    assert_eq!(parse_table_file_name("12.sst"), None);
    assert_eq!(parse_table_file_name("0000012.sst"), Some(12));
}

#[test]
fn range_map_and_range_tombstone_layout() {
    use strata_format::manifest::{RangeEntry, RangeMapRecord, TombstoneEntry};
    let edit = VersionEdit {
        ranges: Some(RangeMapRecord {
            ranges: vec![
                RangeEntry {
                    id: 1,
                    start: Vec::new(),
                    origin: "i".into(),
                },
                RangeEntry {
                    id: 2,
                    start: b"m".to_vec(),
                    origin: String::new(),
                },
            ],
            next_id: 3,
        }),
        added_tombstones: vec![TombstoneEntry {
            start: b"a".to_vec(),
            end: b"b".to_vec(),
            seq: 9,
        }],
        removed_tombstones: vec![TombstoneEntry {
            start: b"c".to_vec(),
            end: b"d".to_vec(),
            seq: 4,
        }],
        ..Default::default()
    };
    let le32 = |v: u32| v.to_le_bytes();
    let le = |v: u64| v.to_le_bytes();
    let mut expected = vec![0x05];
    expected.extend(le32(2));
    expected.extend(le(1));
    expected.extend(le32(0));
    expected.extend(le32(1));
    expected.push(b'i');
    expected.extend(le(2));
    expected.extend(le32(1));
    expected.push(b'm');
    expected.extend(le32(0));
    expected.extend(le(3));
    expected.push(0x06);
    expected.extend(le32(1));
    expected.push(b'a');
    expected.extend(le32(1));
    expected.push(b'b');
    expected.extend(le(9));
    expected.push(0x07);
    expected.extend(le32(1));
    expected.push(b'c');
    expected.extend(le32(1));
    expected.push(b'd');
    expected.extend(le(4));
    assert_eq!(edit.encode(), expected);
    assert_eq!(VersionEdit::decode(&expected).unwrap(), edit);
}
