//! Whole-table tests: round trips, and one named test per bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::cmp::Ordering;

use proptest::prelude::*;

use super::*;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::key::{InternalKeyRef, MAX_SEQ, ValueKind, compare_internal, encode_internal_key};

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn ikey(user: &[u8], seq: u64, kind: ValueKind) -> Vec<u8> {
    let mut out = Vec::new();
    encode_internal_key(user, seq, kind, &mut out);
    out
}

fn put(user: &[u8], seq: u64) -> Vec<u8> {
    ikey(user, seq, ValueKind::Put)
}

fn build(entries: &Entries, options: TableOptions) -> Vec<u8> {
    let mut builder = TableBuilder::new(options);
    let mut file = Vec::new();
    for (key, value) in entries {
        builder.add(key, value);
        file.extend(builder.take_output());
    }
    let finished = builder.finish();
    file.extend_from_slice(&finished.tail);
    assert_eq!(file.len() as u64, finished.file_size);
    file
}

/// 300 entries `key00000..` with 32-byte values, in many small blocks.
fn sample() -> (Entries, TableOptions) {
    let entries = (0..300u32)
        .map(|i| (put(format!("key{i:05}").as_bytes(), 1), vec![i as u8; 32]))
        .collect();
    let options = TableOptions {
        block_bytes: 512,
        ..TableOptions::default()
    };
    (entries, options)
}

fn open(file: &[u8]) -> Result<TableReader<'_>, DecodeError> {
    TableReader::open(file, file.len() as u64)
}

fn scan(table: &TableReader<'_>) -> Result<Entries, DecodeError> {
    let mut iter = table.iter();
    let mut out = Vec::new();
    let mut more = iter.seek_to_first()?;
    while more {
        let (k, v) = iter.current_raw().unwrap();
        out.push((k.to_vec(), v.to_vec()));
        more = iter.next()?;
    }
    Ok(out)
}

fn scan_backward(table: &TableReader<'_>) -> Result<Entries, DecodeError> {
    let mut iter = table.iter();
    let mut out = Vec::new();
    let mut more = iter.seek_to_last()?;
    while more {
        let (k, v) = iter.current_raw().unwrap();
        out.push((k.to_vec(), v.to_vec()));
        more = iter.prev()?;
    }
    out.reverse();
    Ok(out)
}

/// The model's answer to `get(user_key, seq)`.
fn model_get(entries: &Entries, user_key: &[u8], seq: u64) -> Option<(ValueKind, Vec<u8>)> {
    entries.iter().find_map(|(k, v)| {
        let k = InternalKeyRef::decode(k).unwrap();
        (k.user_key == user_key && k.seq <= seq).then(|| (k.kind, v.clone()))
    })
}

fn get(
    table: &TableReader<'_>,
    user_key: &[u8],
    seq: u64,
) -> Result<Option<(ValueKind, Vec<u8>)>, DecodeError> {
    Ok(table.get(user_key, seq)?.map(|(k, v)| (k, v.into_owned())))
}

fn is_checksum_error(err: &DecodeError) -> bool {
    matches!(err.kind, DecodeErrorKind::ChecksumMismatch { .. })
}

/// Writes `payload ++ compression ++ crc` at the end of `file` with a
/// checksum computed here from the documented definition, so tests can
/// store blocks the builder would never write.
fn raw_block(payload: &[u8], compression: u8, file: &mut Vec<u8>) -> BlockHandle {
    let offset = file.len() as u64;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(payload);
    hasher.update(&[compression]);
    hasher.update(&offset.to_le_bytes());
    let crc = hasher.finalize();
    file.extend_from_slice(payload);
    file.push(compression);
    file.extend_from_slice(&crc.to_le_bytes());
    BlockHandle {
        offset,
        size: payload.len() as u64 + 5,
        checksum: crc,
    }
}

/// A table assembled from raw data-block payloads `(index key, payload,
/// compression byte)`, with no filter. Index keys are taken as given, in
/// order or not.
fn forge(blocks: &[(Vec<u8>, Vec<u8>, u8)]) -> Vec<u8> {
    let mut file = Vec::new();
    let mut index = Vec::new();
    for (key, payload, compression) in blocks {
        index.push((key.clone(), raw_block(payload, *compression, &mut file)));
    }
    finish_forged(file, &index, blocks.len() as u64)
}

/// Appends properties (declaring `data_blocks` blocks), an index of the
/// given entries taken as they are, and the footer to the data blocks in
/// `file`.
fn finish_forged(
    mut file: Vec<u8>,
    index_entries: &[(Vec<u8>, BlockHandle)],
    data_blocks: u64,
) -> Vec<u8> {
    let mut index = BlockBuilder::new(1, |_, _| Ordering::Greater);
    for (key, handle) in index_entries {
        let mut value = Vec::new();
        handle.encode_to(&mut value);
        index.add(key, &value);
    }
    let props = Properties {
        entries: index_entries.len() as u64,
        data_blocks,
        smallest_key: put(b"", MAX_SEQ),
        largest_key: put(b"\xff\xff\xff", 0),
        ..Properties::default()
    };
    let properties = raw_block(&props.encode(), 0, &mut file);
    let index = raw_block(index.finish(), 0, &mut file);
    let footer = Footer {
        index,
        filter: None,
        properties,
    };
    file.extend_from_slice(&footer.encode());
    file
}

/// A data block's contents from entries in the given order.
fn block_contents(entries: &[(Vec<u8>, &[u8])]) -> Vec<u8> {
    let mut b = BlockBuilder::new(16, |_, _| Ordering::Greater);
    for (k, v) in entries {
        b.add(k, v);
    }
    b.finish().to_vec()
}

#[test]
fn empty_table_opens_and_reads_nothing() {
    let file = build(&Vec::new(), TableOptions::default());
    let table = open(&file).unwrap();
    assert_eq!(table.properties().entries, 0);
    assert!(scan(&table).unwrap().is_empty());
    assert!(!table.iter().seek_to_last().unwrap());
    assert!(!table.iter().seek(&put(b"a", 1)).unwrap());
    assert_eq!(get(&table, b"a", MAX_SEQ).unwrap(), None);
    table.verify().unwrap();
}

#[test]
fn sample_table_round_trips_with_every_option() {
    let (entries, options) = sample();
    for compression in [Compression::None, Compression::Lz4] {
        for bloom_bits_per_key in [0, 10] {
            let options = TableOptions {
                compression,
                bloom_bits_per_key,
                level: 3,
                ..options
            };
            let file = build(&entries, options);
            let table = open(&file).unwrap();
            assert!(table.properties().data_blocks > 10);
            assert_eq!(table.properties().level, 3);
            assert_eq!(table.footer().filter.is_some(), bloom_bits_per_key > 0);
            assert_eq!(scan(&table).unwrap(), entries);
            assert_eq!(scan_backward(&table).unwrap(), entries);
            table.verify().unwrap();
        }
    }
}

#[test]
fn compressed_table_is_smaller() {
    let (entries, options) = sample();
    let plain = build(&entries, options);
    let lz4 = build(
        &entries,
        TableOptions {
            compression: Compression::Lz4,
            ..options
        },
    );
    assert!(
        lz4.len() < plain.len() / 2,
        "{} vs {}",
        lz4.len(),
        plain.len()
    );
}

#[test]
fn get_returns_the_newest_version_visible_at_the_sequence_number() {
    let entries: Entries = vec![
        (ikey(b"a", 9, ValueKind::Delete), vec![]),
        (ikey(b"a", 5, ValueKind::Put), b"a5".to_vec()),
        (ikey(b"a", 2, ValueKind::Put), b"a2".to_vec()),
        (ikey(b"ab", 4, ValueKind::Put), b"".to_vec()),
    ];
    let file = build(&entries, TableOptions::default());
    let table = open(&file).unwrap();
    assert_eq!(
        get(&table, b"a", u64::MAX).unwrap(),
        Some((ValueKind::Delete, vec![]))
    );
    assert_eq!(
        get(&table, b"a", 8).unwrap(),
        Some((ValueKind::Put, b"a5".to_vec()))
    );
    assert_eq!(
        get(&table, b"a", 4).unwrap(),
        Some((ValueKind::Put, b"a2".to_vec()))
    );
    assert_eq!(get(&table, b"a", 1).unwrap(), None);
    // An empty value is a value, not a tombstone.
    assert_eq!(
        get(&table, b"ab", 4).unwrap(),
        Some((ValueKind::Put, vec![]))
    );
    assert_eq!(get(&table, b"", 4).unwrap(), None);
    assert_eq!(get(&table, b"b", 4).unwrap(), None);
}

#[test]
fn bad_footer_magic_is_corruption_at_open() {
    let (entries, options) = sample();
    let mut file = build(&entries, options);
    let n = file.len();
    file[n - 1] = b'X';
    assert!(matches!(
        open(&file).unwrap_err().kind,
        DecodeErrorKind::BadMagic { .. }
    ));
}

#[test]
fn truncated_footer_is_corruption_at_open() {
    let (entries, options) = sample();
    let file = build(&entries, options);
    for cut in [1, 10, FOOTER_LEN - 1, FOOTER_LEN, FOOTER_LEN + 7] {
        assert!(open(&file[..file.len() - cut]).is_err(), "cut {cut}");
    }
    for len in 0..FOOTER_LEN {
        assert!(open(&file[file.len() - len..]).unwrap_err().is_truncation());
    }
}

#[test]
fn file_size_other_than_expected_is_corruption_at_open() {
    let (entries, options) = sample();
    let file = build(&entries, options);
    let err = TableReader::open(&file, file.len() as u64 + 1).unwrap_err();
    assert_eq!(
        err.kind,
        DecodeErrorKind::FileSizeMismatch {
            expected: file.len() as u64 + 1,
            actual: file.len() as u64
        }
    );
}

#[test]
fn data_block_crc_mismatch_fails_reads_of_that_block_only() {
    let (entries, options) = sample();
    let clean = build(&entries, options);
    let table = open(&clean).unwrap();
    let handles: Vec<BlockHandle> = table.data_blocks().copied().collect();
    let damaged = handles[3];
    let mut file = clean.clone();
    file[damaged.offset as usize + 10] ^= 0x40;
    let table = open(&file).unwrap();

    let mut failed = 0;
    for (key, value) in &entries {
        let user_key = crate::key::user_key(key);
        match table.get(user_key, MAX_SEQ) {
            Ok(found) => assert_eq!(found.unwrap().1.as_ref(), &value[..]),
            Err(err) => {
                assert!(is_checksum_error(&err), "{err}");
                assert_eq!(err.offset, damaged.offset + damaged.size - 4);
                failed += 1;
            }
        }
    }
    assert!(failed > 0 && failed < 50, "{failed}");
    // A scan returns the good prefix, then the error (sticky).
    let mut iter = table.iter();
    assert!(iter.seek_to_first().unwrap());
    let mut seen = 0;
    let err = loop {
        assert_eq!(iter.current_raw().unwrap().0, &entries[seen].0[..]);
        seen += 1;
        match iter.next() {
            Ok(true) => {}
            Ok(false) => panic!("scan passed a damaged block"),
            Err(err) => break err,
        }
    };
    assert!(is_checksum_error(&err));
    assert_eq!(iter.next().unwrap_err(), err);
    assert!(matches!(scan_backward(&table), Err(e) if is_checksum_error(&e)));
    assert!(table.verify().is_err());
}

#[test]
fn index_filter_and_properties_crc_mismatch_are_corruption_at_open() {
    let (entries, options) = sample();
    let clean = build(&entries, options);
    let footer = *open(&clean).unwrap().footer();
    for handle in [footer.index, footer.filter.unwrap(), footer.properties] {
        let mut file = clean.clone();
        file[handle.offset as usize] ^= 1;
        let err = open(&file).unwrap_err();
        assert!(is_checksum_error(&err), "{err}");
    }
}

#[test]
fn corrupted_bloom_bytes_never_cause_false_negatives() {
    let (entries, options) = sample();
    let clean = build(&entries, options);
    let filter = open(&clean).unwrap().footer().filter.unwrap();
    // Damage under the checksum is caught at open.
    for i in 0..filter.size as usize {
        let mut file = clean.clone();
        file[filter.offset as usize + i] ^= 0x10;
        assert!(open(&file).is_err());
    }
    // A filter that verifies but cannot be interpreted lets every key
    // through to the data.
    for bad_filter in [vec![], vec![0u8], vec![0, 0, 0, 0, 0], vec![0, 0, 0, 0, 31]] {
        assert!(bloom_may_contain(&bad_filter, b"key00001"));
    }
}

#[test]
fn block_handle_out_of_file_bounds_is_corruption() {
    let (entries, options) = sample();
    let file = build(&entries, options);
    let table = open(&file).unwrap();
    for handle in [
        BlockHandle {
            offset: file.len() as u64,
            size: 10,
            checksum: 0,
        },
        BlockHandle {
            offset: 0,
            size: u64::MAX,
            checksum: 0,
        },
        BlockHandle {
            offset: u64::MAX,
            size: 2,
            checksum: 0,
        },
        // Overlapping the footer.
        BlockHandle {
            offset: file.len() as u64 - 90,
            size: 20,
            checksum: 0,
        },
    ] {
        let err = table.read_block(&handle).unwrap_err();
        assert!(
            matches!(err.kind, DecodeErrorKind::OutOfBounds { .. }),
            "{err}"
        );
    }
    // A data block handle past the data area, in a well-checksummed index.
    let mut file = Vec::new();
    raw_block(&block_contents(&[(put(b"a", 1), b"v")]), 0, &mut file);
    let far = BlockHandle {
        offset: 1 << 40,
        size: 10,
        checksum: 0,
    };
    let file = finish_forged(file, &[(put(b"a", 1), far)], 1);
    assert!(matches!(
        open(&file).unwrap_err().kind,
        DecodeErrorKind::Malformed { .. }
    ));
}

#[test]
fn meta_block_handles_out_of_place_are_corruption_at_open() {
    let (entries, options) = sample();
    let file = build(&entries, options);
    let footer = *open(&file).unwrap().footer();
    let body = &file[..file.len() - FOOTER_LEN];
    for bad in [
        Footer {
            index: BlockHandle {
                offset: 1 << 50,
                ..footer.index
            },
            ..footer
        },
        Footer {
            properties: BlockHandle {
                size: footer.properties.size + 1,
                ..footer.properties
            },
            ..footer
        },
        Footer {
            filter: None,
            ..footer
        },
    ] {
        let mut forged = body.to_vec();
        forged.extend_from_slice(&bad.encode());
        let err = open(&forged).unwrap_err();
        assert!(
            matches!(err.kind, DecodeErrorKind::Malformed { .. }),
            "{err}"
        );
    }
}

#[test]
fn restart_array_out_of_block_is_corruption() {
    let mut contents = block_contents(&[(put(b"a", 1), b"v")]);
    let n = contents.len();
    contents[n - 4..].copy_from_slice(&100u32.to_le_bytes());
    let file = forge(&[(put(b"a", 1), contents, 0)]);
    let table = open(&file).unwrap();
    let err = table.get(b"a", 1).unwrap_err();
    assert!(
        matches!(err.kind, DecodeErrorKind::LengthTooLarge { .. }),
        "{err}"
    );
}

#[test]
fn shared_prefix_longer_than_previous_key_is_corruption() {
    let mut contents = block_contents(&[(put(b"a", 2), b"v"), (put(b"a", 1), b"w")]);
    let second = 3 + 9 + 1;
    assert_eq!(
        contents[second], 2,
        "the second key shares the user key and kind byte"
    );
    contents[second] = 40;
    let file = forge(&[(put(b"a", 1), contents, 0)]);
    let table = open(&file).unwrap();
    assert!(matches!(
        scan(&table).unwrap_err().kind,
        DecodeErrorKind::SharedPrefixTooLong {
            shared: 40,
            previous: 9
        }
    ));
}

#[test]
fn varint_overflow_in_a_data_block_is_corruption() {
    let mut contents = block_contents(&[(put(b"a", 1), b"v")]);
    contents.splice(1..2, [0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
    let file = forge(&[(put(b"a", 1), contents, 0)]);
    let table = open(&file).unwrap();
    assert_eq!(
        table.get(b"a", 1).unwrap_err().kind,
        DecodeErrorKind::VarintOverflow
    );
}

#[test]
fn index_keys_out_of_order_are_corruption_at_open() {
    let first = block_contents(&[(put(b"a", 1), b"v")]);
    let second = block_contents(&[(put(b"b", 1), b"v")]);
    let file = forge(&[(put(b"b", 1), first, 0), (put(b"a", 1), second, 0)]);
    assert!(matches!(
        open(&file).unwrap_err().kind,
        DecodeErrorKind::KeyOrder { .. }
    ));
}

#[test]
fn data_keys_out_of_order_in_a_block_are_corruption() {
    let contents = block_contents(&[(put(b"b", 1), b"v"), (put(b"a", 1), b"v")]);
    let file = forge(&[(put(b"b", 1), contents, 0)]);
    let table = open(&file).unwrap();
    assert!(matches!(
        scan(&table).unwrap_err().kind,
        DecodeErrorKind::KeyOrder { .. }
    ));
}

#[test]
fn data_keys_out_of_order_across_blocks_are_corruption() {
    // Each block is sorted, but block 1 holds a key below block 0's index
    // key, and block 0 a key above its own index key.
    let first = block_contents(&[(put(b"c", 1), b"v")]);
    let second = block_contents(&[(put(b"a", 1), b"v")]);
    let file = forge(&[
        (put(b"b", 1), first.clone(), 0),
        (put(b"d", 1), second.clone(), 0),
    ]);
    let table = open(&file).unwrap();
    assert!(matches!(
        scan(&table).unwrap_err().kind,
        DecodeErrorKind::KeyOrder { .. }
    ));
    assert!(matches!(
        scan_backward(&table).unwrap_err().kind,
        DecodeErrorKind::KeyOrder { .. }
    ));
    // Even a lookup that lands in the bad block refuses the key.
    assert!(table.get(b"a", 1).is_err());
}

#[test]
fn data_key_that_is_not_an_internal_key_is_corruption() {
    let contents = block_contents(&[(b"short".to_vec(), b"v")]);
    let file = forge(&[(put(b"z", 1), contents, 0)]);
    let table = open(&file).unwrap();
    assert!(scan(&table).unwrap_err().is_truncation());
}

#[test]
fn misdirected_block_is_caught_by_its_offset_checksum() {
    let (entries, options) = sample();
    let clean = build(&entries, options);
    let handles: Vec<BlockHandle> = open(&clean).unwrap().data_blocks().copied().collect();
    let (a, b) = handles
        .iter()
        .enumerate()
        .find_map(|(i, a)| {
            handles[i + 1..]
                .iter()
                .find(|b| b.size == a.size)
                .map(|b| (*a, *b))
        })
        .expect("two data blocks of the same size");
    let mut file = clean.clone();
    let source = clean[a.offset as usize..a.end() as usize].to_vec();
    file[b.offset as usize..b.end() as usize].copy_from_slice(&source);
    let table = open(&file).unwrap();
    let err = table.read_block(&b).unwrap_err();
    assert!(
        matches!(
            err.kind,
            DecodeErrorKind::ChecksumMismatch { what: "block", .. }
        ),
        "{err}"
    );
    assert!(table.verify().is_err());
}

#[test]
fn block_from_another_table_at_the_same_offset_is_caught_by_the_parent_checksum() {
    let (entries, options) = sample();
    let other: Entries = entries
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|b| b ^ 1).collect()))
        .collect();
    let mine = build(&entries, options);
    let theirs = build(&other, options);
    let handle = *open(&mine).unwrap().data_blocks().nth(2).unwrap();
    let range = handle.offset as usize..handle.end() as usize;
    let mut file = mine.clone();
    file[range.clone()].copy_from_slice(&theirs[range]);
    let table = open(&file).unwrap();
    let err = table.read_block(&handle).unwrap_err();
    assert!(
        matches!(
            err.kind,
            DecodeErrorKind::ChecksumMismatch {
                what: "block handle",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn invalid_compression_flag_is_corruption() {
    let contents = block_contents(&[(put(b"a", 1), b"v")]);
    let file = forge(&[(put(b"a", 1), contents, 7)]);
    let table = open(&file).unwrap();
    assert_eq!(
        table.get(b"a", 1).unwrap_err().kind,
        DecodeErrorKind::UnknownCompression { compression: 7 }
    );
}

#[test]
fn decompression_bomb_is_refused() {
    // Declares 100 MiB: over the cap.
    let mut payload = Vec::new();
    crate::coding::put_varint32(&mut payload, 100 << 20);
    payload.extend_from_slice(&[0x1f, 0, 1, 0, 0xff, 0xff, 0xff]);
    let file = forge(&[(put(b"a", 1), payload, 1)]);
    let err = open(&file).unwrap().get(b"a", 1).unwrap_err();
    assert!(
        matches!(err.kind, DecodeErrorKind::LengthTooLarge { .. }),
        "{err}"
    );
    // Declares 1 MiB, under the cap but more than 7 bytes of LZ4 can hold.
    let mut payload = Vec::new();
    crate::coding::put_varint32(&mut payload, 1 << 20);
    payload.extend_from_slice(&[0x1f, 0, 1, 0, 0xff, 0xff, 0xff]);
    let file = forge(&[(put(b"a", 1), payload, 1)]);
    let err = open(&file).unwrap().get(b"a", 1).unwrap_err();
    assert!(
        matches!(err.kind, DecodeErrorKind::BadCompression { .. }),
        "{err}"
    );
}

#[test]
fn properties_that_disagree_with_the_index_are_corruption_at_open() {
    let mut file = Vec::new();
    let data = raw_block(&block_contents(&[(put(b"a", 1), b"v")]), 0, &mut file);
    let file = finish_forged(file, &[(put(b"a", 1), data)], 2);
    assert!(matches!(
        open(&file).unwrap_err().kind,
        DecodeErrorKind::Malformed { .. }
    ));
}

fn entries_strategy() -> impl Strategy<Value = Entries> {
    let user_key = proptest::collection::vec(
        prop_oneof![Just(0u8), Just(0xff), Just(b'a'), Just(b'b')],
        0..4,
    );
    let seq = prop_oneof![0u64..20, Just(MAX_SEQ)];
    let value = proptest::collection::vec(prop_oneof![Just(b'x'), any::<u8>()], 0..40);
    proptest::collection::vec((user_key, seq, any::<bool>(), value), 0..120).prop_map(|raw| {
        let mut entries: Entries = raw
            .into_iter()
            .map(|(user, seq, is_put, value)| {
                let kind = if is_put {
                    ValueKind::Put
                } else {
                    ValueKind::Delete
                };
                (ikey(&user, seq, kind), value)
            })
            .collect();
        entries.sort_by(|a, b| compare_internal(&a.0, &b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        entries
    })
}

fn options_strategy() -> impl Strategy<Value = TableOptions> {
    (
        32usize..600,
        1usize..6,
        prop_oneof![Just(0usize), Just(10)],
        any::<bool>(),
    )
        .prop_map(
            |(block_bytes, restart_interval, bloom_bits_per_key, lz4)| TableOptions {
                block_bytes,
                restart_interval,
                bloom_bits_per_key,
                compression: if lz4 {
                    Compression::Lz4
                } else {
                    Compression::None
                },
                level: 1,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_tables_round_trip_by_scan_seek_and_get(
        entries in entries_strategy(),
        options in options_strategy(),
        probes in proptest::collection::vec(
            (proptest::collection::vec(prop_oneof![Just(0u8), Just(0xff), Just(b'a'), Just(b'b')], 0..4), 0u64..22),
            0..20,
        ),
    ) {
        let file = build(&entries, options);
        let table = open(&file).unwrap();
        table.verify().unwrap();
        prop_assert_eq!(table.properties().entries, entries.len() as u64);
        prop_assert_eq!(&scan(&table).unwrap(), &entries);
        prop_assert_eq!(&scan_backward(&table).unwrap(), &entries);

        let mut iter = table.iter();
        for (i, (key, value)) in entries.iter().enumerate() {
            prop_assert!(iter.seek(key).unwrap());
            prop_assert_eq!(iter.current_raw(), Some((&key[..], &value[..])));
            if i > 0 {
                prop_assert!(iter.prev().unwrap());
                prop_assert_eq!(iter.current_raw().unwrap().0, &entries[i - 1].0[..]);
                prop_assert!(iter.next().unwrap());
            }
            prop_assert_eq!(iter.next().unwrap(), i + 1 < entries.len());
        }
        for (user, seq) in &probes {
            let target = put(user, *seq);
            let expected = entries.iter().find(|(k, _)| compare_internal(k, &target) != Ordering::Less);
            prop_assert_eq!(iter.seek(&target).unwrap(), expected.is_some());
            prop_assert_eq!(iter.current_raw().map(|(k, _)| k.to_vec()), expected.map(|(k, _)| k.clone()));
            for seq in [*seq, MAX_SEQ, u64::MAX] {
                prop_assert_eq!(get(&table, user, seq).unwrap(), model_get(&entries, user, seq));
            }
        }
        for (key, _) in &entries {
            let parsed = InternalKeyRef::decode(key).unwrap();
            for seq in [parsed.seq, parsed.seq.saturating_sub(1), parsed.seq + 1] {
                prop_assert_eq!(get(&table, parsed.user_key, seq).unwrap(), model_get(&entries, parsed.user_key, seq));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(table) = open(&bytes) {
            let _ = scan(&table);
            let _ = scan_backward(&table);
            let _ = table.get(b"a", MAX_SEQ);
            let _ = table.verify();
        }
    }

    /// Every byte is under some checksum, so a single changed byte either
    /// fails open, fails the reads that reach it, or (never) changes
    /// nothing; reads that succeed return exactly the original data.
    #[test]
    fn single_byte_mutations_never_panic_or_return_wrong_data(
        entries in entries_strategy(),
        options in options_strategy(),
        position in any::<usize>(),
        xor in 1u8..=255,
    ) {
        let mut file = build(&entries, options);
        let position = position % file.len();
        file[position] ^= xor;
        let Ok(table) = open(&file) else { return Ok(()) };
        match scan(&table) {
            Ok(found) => prop_assert_eq!(&found, &entries),
            Err(_) => {
                let mut iter = table.iter();
                let mut more = iter.seek_to_first();
                let mut i = 0;
                while let Ok(true) = more {
                    prop_assert_eq!(iter.current_raw().unwrap().0, &entries[i].0[..]);
                    prop_assert_eq!(iter.current_raw().unwrap().1, &entries[i].1[..]);
                    i += 1;
                    more = iter.next();
                }
            }
        }
        if let Ok(found) = scan_backward(&table) {
            prop_assert_eq!(&found, &entries);
        }
        for (key, _) in &entries {
            let user = crate::key::user_key(key);
            if let Ok(found) = get(&table, user, MAX_SEQ) {
                prop_assert_eq!(found, model_get(&entries, user, MAX_SEQ));
            }
        }
    }
}
