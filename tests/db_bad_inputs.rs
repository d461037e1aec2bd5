//! The bad-input table of `docs`/`TESTING.md` for the engine: damaged
//! sorted tables (SST rows), damaged `CURRENT` and manifests
//! (MANIFEST/CURRENT rows), and the key/value limits and edge cases
//! (Key/value rows). One named test per row (some rows have several).
//!
//! Damage is done after a clean close, on the in-memory file system
//! (`MemFileSystem::write_file`), then the database is reopened. Every
//! failed open is checked to leave every file byte for byte as it was
//! ([`open_fails_and_changes_nothing`]).
//!
//! Where the engine's behaviour is a decision rather than the table's
//! literal text, the test says so:
//! - `Db::open` opens every table of the version (footer, index, filter,
//!   properties, size against the manifest), so those damages fail the
//!   open with `Corruption` naming the table; data blocks are checked when
//!   read: reads of the affected keys, scans over them and
//!   `verify_tables` report `Corruption` naming the file, never wrong or
//!   missing data.
//! - A manifest naming a missing table fails the open, naming the table
//!   (an I/O "not found" error, not `Corruption`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata::env::FileSystem;
use strata::{Db, Error, MemFileSystem, Options, SeqNo, WriteBatch, WriteOptions};
use strata_format::manifest::{MANIFEST_HEADER_LEN, parse_current, parse_table_file_name};
use strata_format::table::{BLOCK_TRAILER_LEN, TableReader};
use strata_format::wal::decode_record;

const DIR: &str = "db";

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn dir() -> &'static Path {
    Path::new(DIR)
}

/// Options with no automatic flush and no compaction (tables stay as the
/// test made them), small blocks so a table has several.
fn quiet_options(fs: &Arc<MemFileSystem>) -> Options {
    Options {
        file_system: fs.clone(),
        // Small log segments: flushed segments are released, so the log
        // does not hold what the tables hold.
        wal_segment_bytes_max: 1 << 10,
        memtable_bytes_max: 8 << 20,
        level0_compaction_trigger: 16,
        level0_slowdown_writes: 32,
        level0_stop_writes: 64,
        block_bytes: 256,
        ..Options::default()
    }
}

/// Tiny everything, so flushes and compactions happen after a few writes.
fn tiny_options(fs: &Arc<MemFileSystem>) -> Options {
    Options {
        file_system: fs.clone(),
        wal_segment_bytes_max: 8 << 10,
        memtable_bytes_max: 4 << 10,
        level0_compaction_trigger: 2,
        level0_slowdown_writes: 4,
        level0_stop_writes: 8,
        level1_bytes_max: 16 << 10,
        level_size_multiplier: 4,
        table_bytes_max: 8 << 10,
        block_bytes: 512,
        ..Options::default()
    }
}

fn sync() -> WriteOptions {
    WriteOptions { sync: true }
}

/// Fixed-length values, so tables built from the same keys have the same
/// layout.
fn value(tag: usize, i: usize) -> Vec<u8> {
    format!("value-{tag:02}-{i:05}-{}", "x".repeat(24)).into_bytes()
}

/// The `.sst` files in the directory, oldest (lowest number) first.
fn tables(fs: &MemFileSystem) -> Vec<PathBuf> {
    let mut numbered: Vec<(u64, PathBuf)> = fs
        .list_dir(dir())
        .unwrap()
        .into_iter()
        .filter_map(|name| parse_table_file_name(&name).map(|n| (n, dir().join(name))))
        .collect();
    numbered.sort();
    numbered.into_iter().map(|(_, path)| path).collect()
}

/// A closed database with one level-0 table per entry of `sets`: table `t`
/// holds keys `{prefix}{i:04}` for `i` in `0..count` with `value(t, i)`.
fn build_tables(sets: &[(&str, usize)]) -> (Arc<MemFileSystem>, Model, Vec<PathBuf>) {
    let fs = Arc::new(MemFileSystem::new());
    let db = Db::open(DIR, quiet_options(&fs)).unwrap();
    let mut model = Model::new();
    for (tag, &(prefix, count)) in sets.iter().enumerate() {
        for i in 0..count {
            let key = format!("{prefix}{i:04}").into_bytes();
            db.put(&key, &value(tag, i)).unwrap();
            model.insert(key, value(tag, i));
        }
        db.flush().unwrap();
    }
    db.close().unwrap();
    let tables = tables(&fs);
    assert_eq!(tables.len(), sets.len(), "one table per flush");
    (fs, model, tables)
}

/// Every file under `DIR` (recursively) and its bytes.
fn snapshot_files(fs: &MemFileSystem) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(fs: &MemFileSystem, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for name in fs.list_dir(dir).unwrap() {
            let path = dir.join(&name);
            match fs.read_file(&path) {
                Ok(bytes) => {
                    out.insert(path, bytes);
                }
                Err(_) => walk(fs, &path, out),
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(fs, dir(), &mut out);
    out
}

/// Opens, expects a failure, and checks that the failed open neither
/// created, deleted nor changed any file.
fn open_fails_and_changes_nothing(fs: &Arc<MemFileSystem>, options: Options) -> Error {
    let before = snapshot_files(fs);
    let error = Db::open(DIR, options).expect_err("open must fail");
    let after = snapshot_files(fs);
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&before),
        names(&after),
        "a failed open ({error}) changed the directory listing (left: before, right: after)"
    );
    for (path, bytes) in &before {
        assert!(
            after[path] == *bytes,
            "a failed open ({error}) changed {}",
            path.display()
        );
    }
    error
}

fn corruption_path(error: &Error) -> Option<&Path> {
    match error {
        Error::Corruption { path, .. } => Some(path),
        _ => None,
    }
}

/// Asserts that `error` is corruption in `file`.
fn assert_corruption_in(error: &Error, file: &Path) {
    assert_eq!(
        corruption_path(error),
        Some(file),
        "expected corruption in {}, got: {error}",
        file.display()
    );
}

/// Reads every key of `model`: each read returns the right value, or
/// corruption naming `damaged` (never a wrong value, never a silent
/// `None`). Returns how many reads reported the corruption.
fn check_gets(db: &Db, model: &Model, damaged: &Path) -> usize {
    let mut corrupt = 0;
    for (key, expected) in model {
        match db.get(key) {
            Ok(Some(found)) => assert_eq!(&found, expected, "wrong value for {key:?}"),
            Ok(None) => panic!("{key:?} silently missing"),
            Err(error) => {
                assert_corruption_in(&error, damaged);
                corrupt += 1;
            }
        }
    }
    corrupt
}

/// Scans everything in one direction: the items before an error are
/// exactly the model's first items in that direction; returns whether the
/// scan reported corruption naming `damaged`.
fn check_scan(db: &Db, model: &Model, forward: bool, damaged: &Path) -> bool {
    let expected: Vec<(Vec<u8>, Vec<u8>)> = if forward {
        model.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    } else {
        model
            .iter()
            .rev()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let iter = if forward {
        db.scan(..)
    } else {
        db.scan_rev(..)
    };
    let iter = match iter {
        Ok(iter) => iter,
        Err(error) => {
            assert_corruption_in(&error, damaged);
            return true;
        }
    };
    let mut seen = 0;
    for item in iter {
        match item {
            Ok(kv) => {
                assert_eq!(
                    Some(&kv),
                    expected.get(seen),
                    "scan item {seen} (forward {forward})"
                );
                seen += 1;
            }
            Err(error) => {
                assert_corruption_in(&error, damaged);
                return true;
            }
        }
    }
    assert_eq!(seen, expected.len(), "scan ended early without an error");
    false
}

/// The common checks for a damaged table `damaged` that holds (some of)
/// `damaged_keys`: reads of them report corruption (at least one does) or
/// are right; scans both ways report it; `verify_tables` reports it; keys
/// only in other tables read fine.
fn check_damaged_table(
    fs: &Arc<MemFileSystem>,
    model: &Model,
    damaged: &Path,
    damaged_keys: &Model,
) {
    let db = Db::open(DIR, quiet_options(fs)).unwrap();
    let error = db
        .verify_tables()
        .expect_err("verify_tables must report it");
    assert_corruption_in(&error, damaged);
    let corrupt = check_gets(&db, damaged_keys, damaged);
    assert!(corrupt > 0, "no read of the damaged table reported it");
    let others: Model = model
        .iter()
        .filter(|(k, _)| !damaged_keys.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(check_gets(&db, &others, damaged), 0);
    assert!(check_scan(&db, model, true, damaged));
    assert!(check_scan(&db, model, false, damaged));
    // The damage is still reported (nothing cached a bad answer).
    assert!(db.verify_tables().is_err());
    drop(db);
}

/// Damage `Db::open` must catch: the open fails with corruption naming
/// `damaged`, and changes nothing.
fn check_refused_at_open(fs: &Arc<MemFileSystem>, damaged: &Path) -> Error {
    let error = open_fails_and_changes_nothing(fs, quiet_options(fs));
    assert_corruption_in(&error, damaged);
    error
}

fn keys_with_prefix(model: &Model, prefix: &str) -> Model {
    model
        .iter()
        .filter(|(k, _)| k.starts_with(prefix.as_bytes()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn flip(fs: &MemFileSystem, path: &Path, at: usize) {
    let mut bytes = fs.read_file(path).unwrap();
    bytes[at] ^= 0x5a;
    fs.write_file(path, &bytes).unwrap();
}

// ---------------------------------------------------------------- SST rows

#[test]
fn sst_bad_footer_magic() {
    let (fs, _model, tables) = build_tables(&[("a", 200), ("b", 200)]);
    let damaged = &tables[1];
    let len = fs.read_file(damaged).unwrap().len();
    flip(&fs, damaged, len - 3); // inside the 8 magic bytes
    let error = check_refused_at_open(&fs, damaged);
    assert!(error.to_string().contains("magic"), "{error}");
}

#[test]
fn sst_truncated_footer() {
    for cut in [1, 40, 79, 80, 200] {
        let (fs, _model, tables) = build_tables(&[("a", 200), ("b", 200)]);
        let damaged = &tables[0];
        let bytes = fs.read_file(damaged).unwrap();
        fs.write_file(damaged, &bytes[..bytes.len() - cut]).unwrap();
        check_refused_at_open(&fs, damaged);
    }
    // A table shorter than a footer.
    let (fs, _model, tables) = build_tables(&[("a", 200), ("b", 200)]);
    fs.write_file(&tables[0], b"STRATSST").unwrap();
    check_refused_at_open(&fs, &tables[0]);
}

#[test]
fn sst_file_size_differs_from_manifest() {
    // Longer than the manifest says (an intact table with bytes appended).
    let (fs, _model, tables) = build_tables(&[("a", 200), ("b", 200)]);
    let damaged = &tables[1];
    let mut bytes = fs.read_file(damaged).unwrap();
    let size = bytes.len();
    bytes.extend_from_slice(&[0u8; 100]);
    fs.write_file(damaged, &bytes).unwrap();
    let error = check_refused_at_open(&fs, damaged);
    let text = error.to_string();
    assert!(text.contains(&format!("expected {size}")), "{text}");

    // Shorter: a middle part cut out, the footer kept at the end.
    let (fs, _model, tables) = build_tables(&[("a", 200), ("b", 200)]);
    let damaged = &tables[1];
    let bytes = fs.read_file(damaged).unwrap();
    let mut shorter = bytes[..bytes.len() - 180].to_vec();
    shorter.extend_from_slice(&bytes[bytes.len() - 80..]);
    fs.write_file(damaged, &shorter).unwrap();
    check_refused_at_open(&fs, damaged);
}

/// Data block `index` of `table` (offset, stored size with trailer).
fn data_block(fs: &MemFileSystem, table: &Path, index: usize) -> (usize, usize) {
    let bytes = fs.read_file(table).unwrap();
    let reader = TableReader::open(&bytes, bytes.len() as u64).unwrap();
    let handle = reader.data_blocks().nth(index).unwrap();
    (handle.offset as usize, handle.size as usize)
}

#[test]
fn sst_block_crc_mismatch_in_data_block() {
    let (fs, model, tables) = build_tables(&[("a", 200), ("b", 200)]);
    let damaged = &tables[0];
    let blocks = {
        let bytes = fs.read_file(damaged).unwrap();
        TableReader::open(&bytes, bytes.len() as u64)
            .unwrap()
            .data_blocks()
            .count()
    };
    assert!(blocks >= 4, "want several data blocks, got {blocks}");
    // A middle block: contents, then the stored CRC itself.
    let (offset, size) = data_block(&fs, damaged, blocks / 2);
    for at in [offset + size / 2, offset + size - 1] {
        let (fs, model, tables) = build_tables(&[("a", 200), ("b", 200)]);
        let damaged = &tables[0];
        flip(&fs, damaged, at);
        let db = Db::open(DIR, quiet_options(&fs)).unwrap();
        let error = db.verify_tables().unwrap_err();
        assert_corruption_in(&error, damaged);
        let a_keys = keys_with_prefix(&model, "a");
        let corrupt = check_gets(&db, &a_keys, damaged);
        // Only the keys of the damaged block fail; the table's other
        // blocks still serve reads.
        assert!(
            corrupt > 0 && corrupt < a_keys.len(),
            "{corrupt} of {} keys",
            a_keys.len()
        );
        assert_eq!(check_gets(&db, &keys_with_prefix(&model, "b"), damaged), 0);
        assert!(check_scan(&db, &model, true, damaged));
        assert!(check_scan(&db, &model, false, damaged));
        // A scan of a range outside the damaged block works.
        let other: Vec<_> = db
            .scan(b"b".as_slice()..)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(other.len(), 200);
    }
    let _ = model;
}

#[test]
fn sst_misdirected_block_from_another_offset() {
    // Equal-length keys and values: the first two data blocks have the
    // same size, so block 0 copied over block 1 keeps the layout intact
    // and only the offset in the CRC (and the index's checksum) differ.
    let (fs, model, tables) = build_tables(&[("a", 200), ("b", 200)]);
    let damaged = &tables[0];
    let (off0, size0) = data_block(&fs, damaged, 0);
    let (off1, size1) = data_block(&fs, damaged, 1);
    assert_eq!(size0, size1, "test setup: blocks of equal size");
    let mut bytes = fs.read_file(damaged).unwrap();
    let copy = bytes[off0..off0 + size0].to_vec();
    bytes[off1..off1 + size1].copy_from_slice(&copy);
    fs.write_file(damaged, &bytes).unwrap();
    check_damaged_table(&fs, &model, damaged, &keys_with_prefix(&model, "a"));
}

#[test]
fn sst_misdirected_block_from_another_table() {
    // Two tables of the same keys (older and newer values) with the same
    // layout: the older table's block 0 written over the newer table's
    // block 0 is a valid block with a valid CRC at that offset. Undetected,
    // reads would return the older values: caught by the checksum the
    // index keeps for each block.
    let (fs, model, tables) = build_tables(&[("a", 200), ("a", 200)]);
    let (older, newer) = (&tables[0], &tables[1]);
    let (off, size) = data_block(&fs, older, 0);
    assert_eq!(data_block(&fs, newer, 0), (off, size), "same layout");
    let old_bytes = fs.read_file(older).unwrap();
    let mut new_bytes = fs.read_file(newer).unwrap();
    assert_ne!(old_bytes[off..off + size], new_bytes[off..off + size]);
    new_bytes[off..off + size].copy_from_slice(&old_bytes[off..off + size]);
    fs.write_file(newer, &new_bytes).unwrap();
    // The block's own CRC (which covers its offset) still verifies: only
    // the parent's checksum can catch this.
    let db = Db::open(DIR, quiet_options(&fs)).unwrap();
    for (key, expected) in &model {
        match db.get(key) {
            Ok(Some(found)) => assert_eq!(&found, expected, "stale value for {key:?}"),
            Ok(None) => panic!("{key:?} silently missing"),
            Err(error) => assert_corruption_in(&error, newer),
        }
    }
    assert_corruption_in(&db.verify_tables().unwrap_err(), newer);
    assert!(check_gets(&db, &model, newer) > 0);
    assert!(check_scan(&db, &model, true, newer));
    assert!(check_scan(&db, &model, false, newer));
}

#[test]
fn sst_bloom_filter_bytes_corrupted() {
    let (fs, model, tables) = build_tables(&[("a", 200), ("b", 200)]);
    let damaged = tables[1].clone();
    let (filter_offset, filter_size) = {
        let bytes = fs.read_file(&damaged).unwrap();
        let reader = TableReader::open(&bytes, bytes.len() as u64).unwrap();
        let filter = reader.footer().filter.expect("tables have a filter");
        (filter.offset as usize, filter.size as usize)
    };
    let content = filter_size - BLOCK_TRAILER_LEN;
    // Zeroing the filter bits would make an unchecked filter answer "absent"
    // for every key: the silent false negative to rule out.
    let original = fs.read_file(&damaged).unwrap();
    for damage in 0..3 {
        let mut bytes = original.clone();
        match damage {
            0 => bytes[filter_offset..filter_offset + content].fill(0),
            1 => bytes[filter_offset + content / 2] ^= 0xff,
            _ => bytes[filter_offset + content - 1] ^= 0x01, // probe count
        }
        fs.write_file(&damaged, &bytes).unwrap();
        // The filter is checksummed (its block CRC and the footer's handle):
        // the engine refuses the table at open. Should it ever open, the
        // reads below must still never give a false negative.
        let db = match Db::open(DIR, quiet_options(&fs)) {
            Err(_) => {
                check_refused_at_open(&fs, &damaged);
                continue;
            }
            Ok(db) => db,
        };
        // Never a false negative: each present key is read right or the
        // read reports corruption.
        check_gets(&db, &keys_with_prefix(&model, "b"), &damaged);
        for absent in [&b"b9999"[..], b"b0000x", b"azzz"] {
            match db.get(absent) {
                Ok(None) => {}
                Ok(Some(v)) => panic!("absent key {absent:?} read as {v:?}"),
                Err(error) => assert_corruption_in(&error, &damaged),
            }
        }
        assert_corruption_in(&db.verify_tables().unwrap_err(), &damaged);
        assert_eq!(check_gets(&db, &keys_with_prefix(&model, "a"), &damaged), 0);
        check_scan(&db, &model, true, &damaged);
    }
}

// ------------------------------------------------------- MANIFEST/CURRENT

fn current_manifest(fs: &MemFileSystem) -> PathBuf {
    let current = fs.read_file(&dir().join("CURRENT")).unwrap();
    dir().join(strata_format::manifest::manifest_file_name(
        parse_current(&current).unwrap(),
    ))
}

/// (offset, framed length) of every record of a manifest.
fn manifest_records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut records = Vec::new();
    let mut offset = MANIFEST_HEADER_LEN;
    while offset < bytes.len() {
        let record = decode_record(&bytes[offset..]).unwrap();
        records.push((offset, record.framed_len));
        offset += record.framed_len;
    }
    records
}

#[test]
fn current_points_at_missing_manifest() {
    let (fs, _model, _tables) = build_tables(&[("a", 50)]);
    let manifest = current_manifest(&fs);
    fs.remove_file(&manifest).unwrap();
    let error = open_fails_and_changes_nothing(&fs, quiet_options(&fs));
    assert!(error.is_corruption(), "{error}");
    let text = error.to_string();
    assert!(text.contains("CURRENT"), "{text}");
    assert!(
        text.contains(&manifest.file_name().unwrap().to_string_lossy().to_string()),
        "{text}"
    );
    assert!(text.contains("missing"), "{text}");
    // CURRENT naming a manifest that never existed, and garbage in CURRENT.
    fs.write_file(&dir().join("CURRENT"), b"MANIFEST-999999\n")
        .unwrap();
    let error = open_fails_and_changes_nothing(&fs, quiet_options(&fs));
    assert!(error.to_string().contains("MANIFEST-999999"), "{error}");
    fs.write_file(&dir().join("CURRENT"), b"\xff\x00junk")
        .unwrap();
    let error = open_fails_and_changes_nothing(&fs, quiet_options(&fs));
    assert_eq!(
        corruption_path(&error),
        Some(dir().join("CURRENT").as_path())
    );
}

/// A database whose manifest holds the snapshot edit and two table edits,
/// with the log holding nothing the tables do not (every batch flushed).
fn three_edit_manifest() -> (Arc<MemFileSystem>, Model, PathBuf) {
    let (fs, model, _tables) = build_tables(&[("a", 100), ("b", 100)]);
    // build_tables reopened nothing: its manifest is the one written at
    // the first open (empty snapshot edit) plus one edit per flush.
    let manifest = current_manifest(&fs);
    let records = manifest_records(&fs.read_file(&manifest).unwrap());
    assert_eq!(records.len(), 3, "snapshot edit and two flush edits");
    (fs, model, manifest)
}

/// After damage to durable manifest edits: open fails with corruption
/// naming the manifest and changes nothing, or it opens with every
/// acknowledged key readable. Never silent loss.
fn expect_no_silent_loss(fs: &Arc<MemFileSystem>, model: &Model, manifest: &Path) {
    let tables_before = tables(fs);
    let db = match Db::open(DIR, quiet_options(fs)) {
        Err(_) => {
            // Reproduce on the unchanged files, checking that.
            let error = open_fails_and_changes_nothing(fs, quiet_options(fs));
            assert_corruption_in(&error, manifest);
            return;
        }
        Ok(db) => db,
    };
    let missing: Vec<_> = model
        .keys()
        .filter(|k| db.get(k).unwrap().is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "open accepted a damaged manifest and {} of {} acknowledged keys are gone (first {:?}); tables on disk before {}, after {}; recovery report {:?}",
        missing.len(),
        model.len(),
        missing.first(),
        tables_before.len(),
        tables(fs).len(),
        db.recovery_report()
    );
}

#[test]
fn manifest_crc_bad_in_an_earlier_edit() {
    for record in 0..2 {
        let (fs, _model, manifest) = three_edit_manifest();
        let bytes = fs.read_file(&manifest).unwrap();
        let (offset, len) = manifest_records(&bytes)[record];
        flip(&fs, &manifest, offset + len - 2);
        let error = open_fails_and_changes_nothing(&fs, quiet_options(&fs));
        assert_corruption_in(&error, &manifest);
        let text = error.to_string();
        assert!(
            text.contains(&format!("offset {offset}")),
            "the message names the record's offset {offset}: {text}"
        );
        assert!(text.contains("checksum"), "{text}");
    }
}

#[test]
fn manifest_header_damaged() {
    let (fs, _model, manifest) = three_edit_manifest();
    flip(&fs, &manifest, 20); // database id
    let error = open_fails_and_changes_nothing(&fs, quiet_options(&fs));
    assert_corruption_in(&error, &manifest);
    let bytes = fs.read_file(&manifest).unwrap();
    fs.write_file(&manifest, &bytes[..30]).unwrap();
    let error = open_fails_and_changes_nothing(&fs, quiet_options(&fs));
    assert_corruption_in(&error, &manifest);
}

/// The manifest cut in the middle (inside the first flush's edit, all
/// later edits gone). The log segments those edits let go are released,
/// so taking the cut for a torn tail would silently lose the flushed data:
/// open must refuse it (or still serve every acknowledged key).
#[test]
fn manifest_truncated_in_the_middle() {
    let (fs, model, manifest) = three_edit_manifest();
    let bytes = fs.read_file(&manifest).unwrap();
    let records = manifest_records(&bytes);
    let (offset, len) = records[1];
    // Cut in the middle of the second record (the first flush's edit).
    fs.write_file(&manifest, &bytes[..offset + len / 2])
        .unwrap();
    expect_no_silent_loss(&fs, &model, &manifest);
}

/// The same cut inside the last edit. A crash can tear an unacknowledged
/// last edit, but here the log that edit covered was already released, so
/// dropping it would lose acknowledged data: never silently.
#[test]
fn manifest_truncated_last_edit_never_loses_acknowledged_data() {
    let (fs, model, manifest) = three_edit_manifest();
    let bytes = fs.read_file(&manifest).unwrap();
    let (offset, len) = *manifest_records(&bytes).last().unwrap();
    fs.write_file(&manifest, &bytes[..offset + len / 2])
        .unwrap();
    expect_no_silent_loss(&fs, &model, &manifest);
}

#[test]
fn manifest_references_missing_sst() {
    // The engine's decision: open fails, naming the missing table (an I/O
    // "not found" error rather than `Corruption`), and deletes nothing; it
    // never opens with the table's keys silently missing.
    let (fs, _model, tables) = build_tables(&[("a", 100), ("b", 100)]);
    let missing = &tables[0];
    fs.remove_file(missing).unwrap();
    let error = open_fails_and_changes_nothing(&fs, quiet_options(&fs));
    let text = error.to_string();
    assert!(
        text.contains(&missing.file_name().unwrap().to_string_lossy().to_string()),
        "{text}"
    );
    assert!(
        error.is_corruption()
            || matches!(&error, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{error:?}"
    );
}

#[test]
fn failed_open_never_deletes_or_modifies_any_file() {
    // Every cause of a failed open that is found while reading CURRENT,
    // the manifest or the identity: the files stay byte for byte.
    let (fs, _model, manifest) = three_edit_manifest();
    let bytes = fs.read_file(&manifest).unwrap();
    fs.write_file(&manifest, &bytes[..MANIFEST_HEADER_LEN - 1])
        .unwrap();
    open_fails_and_changes_nothing(&fs, quiet_options(&fs));
    fs.write_file(&manifest, &bytes).unwrap();
    let records = manifest_records(&bytes);
    flip(&fs, &manifest, records[0].0 + 3);
    open_fails_and_changes_nothing(&fs, quiet_options(&fs));
    fs.write_file(&manifest, &bytes).unwrap();
    // CURRENT missing while tables exist.
    let current = fs.read_file(&dir().join("CURRENT")).unwrap();
    fs.remove_file(&dir().join("CURRENT")).unwrap();
    let error = open_fails_and_changes_nothing(&fs, quiet_options(&fs));
    assert!(error.to_string().contains("CURRENT"), "{error}");
    fs.write_file(&dir().join("CURRENT"), &current).unwrap();
    // A damaged identity file.
    let identity = fs.read_file(&dir().join("IDENTITY")).unwrap();
    fs.write_file(&dir().join("IDENTITY"), b"nonsense").unwrap();
    open_fails_and_changes_nothing(&fs, quiet_options(&fs));
    fs.write_file(&dir().join("IDENTITY"), &identity).unwrap();
    // error_if_exists.
    let options = Options {
        error_if_exists: true,
        ..quiet_options(&fs)
    };
    assert!(matches!(
        open_fails_and_changes_nothing(&fs, options),
        Error::InvalidArgument(_)
    ));
    // Intact again: it opens.
    Db::open(DIR, quiet_options(&fs)).unwrap().close().unwrap();
}

/// Damage in the synced part of the commit log fails the open, and the
/// failed open must not have rewritten the manifest or `CURRENT` (recovery
/// reads and checks everything before it writes anything).
#[test]
fn failed_open_on_log_corruption_changes_nothing() {
    let fs = Arc::new(MemFileSystem::new());
    let options = Options {
        flush_on_close: false,
        ..quiet_options(&fs)
    };
    let db = Db::open(DIR, options.clone()).unwrap();
    db.put(b"flushed", b"1").unwrap();
    db.flush().unwrap();
    for i in 0..50 {
        let mut batch = WriteBatch::new();
        batch.put(format!("k{i:03}").as_bytes(), &value(0, i));
        db.write(batch, &sync()).unwrap();
    }
    db.close().unwrap();
    let segment = fs
        .list_dir(&dir().join("wal"))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .map(|n| dir().join("wal").join(n))
        .max_by_key(|p| fs.read_file(p).unwrap().len())
        .unwrap();
    let len = fs.read_file(&segment).unwrap().len();
    flip(&fs, &segment, len / 3);
    let error = open_fails_and_changes_nothing(&fs, options);
    assert!(error.is_corruption(), "{error}");
}

#[test]
fn data_dir_locked_by_another_open_db() {
    let fs = Arc::new(MemFileSystem::new());
    let db = Db::open(DIR, quiet_options(&fs)).unwrap();
    db.put(b"k", b"v").unwrap();
    match Db::open(DIR, quiet_options(&fs)) {
        Err(Error::Locked { path }) => assert!(path.ends_with("LOCK"), "{}", path.display()),
        other => panic!("expected Locked, got {other:?}"),
    }
    // The first handle is unaffected, and the lock goes with it.
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    db.close().unwrap();
    let db = Db::open(DIR, quiet_options(&fs)).unwrap();
    assert_eq!(db.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    drop(db);

    // The real file system (an OS lock on the LOCK file).
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("db");
    let db = Db::open(&path, Options::default()).unwrap();
    assert!(matches!(
        Db::open(&path, Options::default()),
        Err(Error::Locked { .. })
    ));
    db.close().unwrap();
    Db::open(&path, Options::default())
        .unwrap()
        .close()
        .unwrap();
}

// -------------------------------------------------------------- Key/value

fn mem_db() -> (Arc<MemFileSystem>, Db) {
    let fs = Arc::new(MemFileSystem::new());
    let db = Db::open(DIR, quiet_options(&fs)).unwrap();
    (fs, db)
}

/// Asserts that `result` is `InvalidArgument` and nothing was written:
/// same visible sequence number, same log bytes.
fn assert_rejected(db: &Db, before: &strata::DbStats, result: strata::Result<SeqNo>) {
    match result {
        Err(Error::InvalidArgument(text)) => {
            assert!(text.contains("nothing was written"), "{text}");
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let after = db.stats();
    assert_eq!(after.last_seq, before.last_seq);
    assert_eq!(after.wal.bytes_written, before.wal.bytes_written);
    assert_eq!(after.wal.batches, before.wal.batches);
}

#[test]
fn key_max_size_ok_and_max_plus_one_invalid_argument() {
    let (fs, db) = mem_db();
    let max = Options::default().key_bytes_max;
    assert_eq!(max, 64 << 10);
    let key = vec![0xabu8; max];
    let seq = db.put(&key, b"max").unwrap();
    let before = db.stats();
    assert_eq!(before.last_seq, seq);
    let too_long = vec![0xabu8; max + 1];
    assert_rejected(&db, &before, db.put(&too_long, b"x"));
    assert_rejected(&db, &before, db.delete(&too_long));
    // In a batch with valid operations: the whole batch is rejected.
    let mut batch = WriteBatch::new();
    batch.put(b"innocent", b"1");
    batch.put(&too_long, b"x");
    assert_rejected(&db, &before, db.write(batch, &sync()));
    assert_eq!(db.get(b"innocent").unwrap(), None);
    assert_eq!(db.get(&too_long).unwrap(), None);
    // The next write takes the next sequence number.
    assert_eq!(db.put(b"after", b"1").unwrap(), SeqNo(seq.get() + 1));
    db.flush().unwrap();
    db.close().unwrap();
    let db = Db::open(DIR, quiet_options(&fs)).unwrap();
    assert_eq!(db.get(&key).unwrap().as_deref(), Some(&b"max"[..]));
    assert_eq!(db.get(b"innocent").unwrap(), None);
    db.verify_tables().unwrap();
}

#[test]
fn value_max_size_ok_and_max_plus_one_rejected() {
    let (fs, db) = mem_db();
    let max = Options::default().value_bytes_max;
    assert_eq!(max, 16 << 20);
    let big: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    let seq = db.put(b"big", &big).unwrap();
    let before = db.stats();
    assert_eq!(before.last_seq, seq);
    let mut too_big = big.clone();
    too_big.push(0);
    assert_rejected(&db, &before, db.put(b"too-big", &too_big));
    drop(too_big);
    db.flush().unwrap();
    db.close().unwrap();
    let db = Db::open(DIR, quiet_options(&fs)).unwrap();
    assert!(db.get(b"big").unwrap().as_deref() == Some(&big[..]));
    assert_eq!(db.get(b"too-big").unwrap(), None);
    db.verify_tables().unwrap();
}

#[test]
fn batch_over_batch_bytes_max_rejected_whole() {
    let (_fs, db) = mem_db();
    let limit = Options::default().batch_bytes_max;
    let before = db.stats();
    let value = vec![7u8; 12 << 20]; // each value within value_bytes_max
    let mut batch = WriteBatch::new();
    for i in 0..3 {
        batch.put(format!("part{i}").as_bytes(), &value);
    }
    assert!(batch.encoded_len() > limit);
    assert_rejected(&db, &before, db.write(batch, &sync()));
    for i in 0..3 {
        assert_eq!(db.get(format!("part{i}").as_bytes()).unwrap(), None);
    }
    // A batch at the limit's side (two values) goes through.
    let mut batch = WriteBatch::new();
    batch.put(b"part0", &value);
    batch.put(b"part1", &value);
    assert!(batch.encoded_len() <= limit);
    db.write(batch, &sync()).unwrap();
    assert_eq!(db.get(b"part1").unwrap().map(|v| v.len()), Some(12 << 20));
}

#[test]
fn empty_batch_is_a_noop() {
    let (_fs, db) = mem_db();
    let first = db.put(b"a", b"1").unwrap();
    let before = db.stats();
    for sync in [false, true] {
        let seq = db.write(WriteBatch::new(), &WriteOptions { sync }).unwrap();
        assert_eq!(seq, first, "an empty batch returns the current seq");
    }
    let after = db.stats();
    assert_eq!(after.last_seq, before.last_seq);
    assert_eq!(after.wal.batches, before.wal.batches);
    assert_eq!(after.wal.bytes_written, before.wal.bytes_written);
    // No sequence number consumed: the next write follows directly.
    assert_eq!(db.put(b"b", b"2").unwrap(), SeqNo(first.get() + 1));
    // A cleared batch is empty too.
    let mut batch = WriteBatch::new();
    batch.put(b"c", b"3");
    batch.clear();
    assert_eq!(db.write(batch, &sync()).unwrap(), SeqNo(first.get() + 1));
    assert_eq!(db.get(b"c").unwrap(), None);
}

fn scan_all(db: &Db, reverse: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let iter = if reverse {
        db.scan_rev(..)
    } else {
        db.scan(..)
    };
    iter.unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn empty_key_allowed_and_distinct() {
    let fs = Arc::new(MemFileSystem::new());
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    db.put(b"", b"empty-key").unwrap();
    db.put(b"\x00", b"zero-key").unwrap();
    db.put(b"a", b"a").unwrap();
    let check = |db: &Db| {
        assert_eq!(db.get(b"").unwrap().as_deref(), Some(&b"empty-key"[..]));
        assert_eq!(db.get(b"\x00").unwrap().as_deref(), Some(&b"zero-key"[..]));
        let all = scan_all(db, false);
        assert_eq!(all[0], (b"".to_vec(), b"empty-key".to_vec()));
        assert_eq!(all.len(), 3);
        assert_eq!(scan_all(db, true).last().unwrap().0, b"");
        // Bounds at the empty key.
        let upto: Vec<_> = db
            .scan(..=b"".as_slice())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(upto, vec![(b"".to_vec(), b"empty-key".to_vec())]);
        let none: Vec<_> = db
            .scan(..b"".as_slice())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(none.is_empty());
        let after: Vec<_> = db
            .scan((Bound::Excluded(b"".as_slice()), Bound::Unbounded))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(db.prefix(b"").unwrap().count(), 3);
    };
    check(&db);
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    check(&db);
    db.close().unwrap();
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    check(&db);
    db.delete(b"").unwrap();
    assert_eq!(db.get(b"").unwrap(), None);
    assert_eq!(db.get(b"\x00").unwrap().as_deref(), Some(&b"zero-key"[..]));
    db.flush().unwrap();
    assert_eq!(db.get(b"").unwrap(), None);
    assert_eq!(scan_all(&db, false).len(), 2);
}

#[test]
fn empty_value_allowed_and_distinct_from_absent() {
    let fs = Arc::new(MemFileSystem::new());
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    db.put(b"k", b"").unwrap();
    db.put(b"gone", b"").unwrap();
    db.delete(b"gone").unwrap();
    let check = |db: &Db| {
        assert_eq!(db.get(b"k").unwrap(), Some(Vec::new()));
        assert_eq!(db.get(b"gone").unwrap(), None);
        assert_eq!(db.get(b"never").unwrap(), None);
        assert_eq!(scan_all(db, false), vec![(b"k".to_vec(), Vec::new())]);
        assert_eq!(scan_all(db, true), vec![(b"k".to_vec(), Vec::new())]);
    };
    check(&db);
    db.flush().unwrap();
    check(&db);
    db.close().unwrap();
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    check(&db);
}

/// Keys with 0x00 and 0xFF bytes, non-UTF-8 keys and keys that are
/// prefixes of each other, in the memtable, after flush, after
/// compaction and after reopen: full scans both ways, bounded scans and
/// prefix scans equal the model's `BTreeMap` order.
#[test]
fn keys_with_0x00_0xff_non_utf8_and_prefixes_order_correctly() {
    let keys: Vec<&[u8]> = vec![
        b"",
        b"\x00",
        b"\x00\x00",
        b"\x00\x01",
        b"\x00\xff",
        b"\x01",
        b"a",
        b"a\x00",
        b"a\x00\x00",
        b"a\xff",
        b"ab",
        b"abc",
        b"abc\xff\xff",
        b"b",
        b"\x7f",
        b"\x80",
        b"\xc3\x28", // invalid UTF-8
        b"\xe2\x82",
        b"\xfe\xff",
        b"\xff",
        b"\xff\x00",
        b"\xff\xfe",
        b"\xff\xff",
        b"\xff\xff\xff",
    ];
    let fs = Arc::new(MemFileSystem::new());
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    let mut model = Model::new();
    // Several rounds of overwrites so the keys spread over many tables and
    // levels, with padding to fill tiny memtables.
    for round in 0..12 {
        for (i, key) in keys.iter().enumerate() {
            if (i + round) % 5 == 0 && round % 2 == 1 {
                db.delete(key).unwrap();
                model.remove(*key);
            } else {
                let v = format!("{round}:{i}:{}", "p".repeat(60)).into_bytes();
                db.put(key, &v).unwrap();
                model.insert(key.to_vec(), v);
            }
        }
        if round % 3 == 2 {
            db.flush().unwrap();
        }
    }
    let check = |db: &Db, stage: &str| {
        let forward: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut backward = forward.clone();
        backward.reverse();
        assert_eq!(scan_all(db, false), forward, "{stage}: forward");
        assert_eq!(scan_all(db, true), backward, "{stage}: reverse");
        for start in &keys {
            for end in &keys {
                if start > end {
                    continue; // BTreeMap::range panics; see scan_with_start_after_end_is_empty
                }
                let want: Vec<_> = model
                    .range::<[u8], _>((Bound::Included(*start), Bound::Excluded(*end)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let got: Vec<_> = db
                    .scan(*start..*end)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                assert_eq!(got, want, "{stage}: {start:?}..{end:?}");
                let mut got_rev: Vec<_> = db
                    .scan_rev(*start..=*end)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                got_rev.reverse();
                let want_incl: Vec<_> = model
                    .range::<[u8], _>((Bound::Included(*start), Bound::Included(*end)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got_rev, want_incl, "{stage}: rev {start:?}..={end:?}");
            }
            let want: Vec<_> = model
                .iter()
                .filter(|(k, _)| k.starts_with(start))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let got: Vec<_> = db.prefix(start).unwrap().collect::<Result<_, _>>().unwrap();
            assert_eq!(got, want, "{stage}: prefix {start:?}");
            assert_eq!(db.get(start).unwrap().as_ref(), model.get(*start));
        }
    };
    check(&db, "memtable and tables");
    db.flush().unwrap();
    check(&db, "after flush");
    db.wait_for_compactions().unwrap();
    let stats = db.stats();
    assert!(stats.compactions > 0, "{stats:?}");
    check(&db, "after compaction");
    db.verify_tables().unwrap();
    db.close().unwrap();
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    check(&db, "after reopen");
}

#[test]
fn scan_with_start_after_end_is_empty() {
    let fs = Arc::new(MemFileSystem::new());
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    for i in 0..200u32 {
        db.put(format!("k{i:03}").as_bytes(), &[b'v'; 50]).unwrap();
    }
    let check = |db: &Db| {
        let (hi, lo) = (b"k150".as_slice(), b"k050".as_slice());
        assert_eq!(db.scan(hi..lo).unwrap().count(), 0);
        assert_eq!(db.scan(hi..=lo).unwrap().count(), 0);
        assert_eq!(db.scan_rev(hi..lo).unwrap().count(), 0);
        assert_eq!(db.scan_rev(hi..=lo).unwrap().count(), 0);
        // Equal bounds: empty when exclusive, one key when inclusive.
        assert_eq!(db.scan(hi..hi).unwrap().count(), 0);
        assert_eq!(db.scan(hi..=hi).unwrap().count(), 1);
        assert_eq!(db.scan_rev(hi..=hi).unwrap().count(), 1);
        assert_eq!(
            db.scan((Bound::Excluded(hi), Bound::Included(hi)))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(db.scan(lo..hi).unwrap().count(), 100);
    };
    check(&db);
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    check(&db);
}

#[test]
fn delete_of_absent_key_is_fine() {
    let fs = Arc::new(MemFileSystem::new());
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    db.put(b"present", b"1").unwrap();
    let seq = db.delete(b"absent").unwrap();
    assert!(seq > SeqNo(1));
    let mut batch = WriteBatch::new();
    batch.delete(b"absent");
    batch.delete(b"absent");
    db.write(batch, &sync()).unwrap();
    let check = |db: &Db| {
        assert_eq!(db.get(b"absent").unwrap(), None);
        assert_eq!(db.get(b"present").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(
            scan_all(db, false),
            vec![(b"present".to_vec(), b"1".to_vec())]
        );
        assert_eq!(scan_all(db, true).len(), 1);
    };
    check(&db);
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    check(&db);
    db.close().unwrap();
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    check(&db);
    db.put(b"absent", b"now").unwrap();
    assert_eq!(db.get(b"absent").unwrap().as_deref(), Some(&b"now"[..]));
}

/// The version indexes (`v{index}` values) of `key` in every table file
/// on disk.
fn versions_in_tables(fs: &MemFileSystem, key: &[u8]) -> Vec<usize> {
    let mut versions = Vec::new();
    for path in tables(fs) {
        let bytes = fs.read_file(&path).unwrap();
        let reader = TableReader::open(&bytes, bytes.len() as u64).unwrap();
        let mut iter = reader.iter();
        let mut more = iter.seek_to_first().unwrap();
        while more {
            let (ikey, value) = iter.current().unwrap();
            if ikey.user_key == key {
                let text = std::str::from_utf8(value).unwrap();
                versions.push(text[1..].parse().unwrap());
            }
            more = iter.next().unwrap();
        }
    }
    versions
}

const VERSIONS: usize = 100_000;
const PER_BATCH: usize = 500;

fn version(i: usize) -> Vec<u8> {
    format!("v{i:06}").into_bytes()
}

/// Writes `VERSIONS` versions of `k` in batches of `PER_BATCH` with tiny
/// tables, taking a snapshot halfway; flushes and waits for compactions.
/// Returns the snapshot and the version it must read.
fn write_many_versions(db: &Db) -> (strata::Snapshot, usize) {
    let mut snapshot = None;
    for start in (0..VERSIONS).step_by(PER_BATCH) {
        let mut batch = WriteBatch::new();
        for i in start..start + PER_BATCH {
            batch.put(b"k", &version(i));
        }
        db.write(batch, &WriteOptions::default()).unwrap();
        if start + PER_BATCH == VERSIONS / 2 {
            snapshot = Some((db.snapshot(), start + PER_BATCH - 1));
        }
    }
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    snapshot.unwrap()
}

#[test]
fn many_versions_of_one_key_compaction_keeps_only_visible_versions() {
    let fs = Arc::new(MemFileSystem::new());
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    let (snapshot, snapshot_at) = write_many_versions(&db);
    let stats = db.stats();
    assert!(stats.flushes > 10 && stats.compactions > 0, "{stats:?}");
    assert_eq!(db.get(b"k").unwrap(), Some(version(VERSIONS - 1)));
    assert_eq!(
        snapshot.get(b"k").unwrap(),
        Some(version(snapshot_at)),
        "the snapshot's version survived compaction"
    );
    let scanned: Vec<_> = snapshot
        .scan(..)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(scanned, vec![(b"k".to_vec(), version(snapshot_at))]);
    db.verify_tables().unwrap();
    // What the tables hold: the snapshot's version, the versions newer
    // than the snapshot (visible to no reader but not provably droppable
    // under leveldb's rule), and nothing older than the snapshot's version
    // but for at most one stray version per level (kept by a compaction
    // before the snapshot existed and moved down since).
    let versions = versions_in_tables(&fs, b"k");
    let older = versions.iter().filter(|&&i| i < snapshot_at).count();
    assert!(versions.contains(&snapshot_at));
    assert!(
        older <= 8,
        "{older} versions older than the snapshot's were kept: {:?}",
        &versions[..versions.len().min(20)]
    );
    println!(
        "many versions: {VERSIONS} written; with a snapshot at {snapshot_at} alive, {} in tables ({older} older than the snapshot's), {} compactions",
        versions.len(),
        stats.compactions
    );
    drop(snapshot);
    db.close().unwrap();
    // Without any snapshot, every version but the newest goes.
    let fs = Arc::new(MemFileSystem::new());
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    for start in (0..VERSIONS / 4).step_by(PER_BATCH) {
        let mut batch = WriteBatch::new();
        for i in start..start + PER_BATCH {
            batch.put(b"k", &version(i));
        }
        db.write(batch, &WriteOptions::default()).unwrap();
    }
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    assert_eq!(db.get(b"k").unwrap(), Some(version(VERSIONS / 4 - 1)));
    // The inputs of the last compaction may still be on disk (deleted at
    // the next background job or open): count live tables only.
    db.close().unwrap();
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    assert_eq!(db.get(b"k").unwrap(), Some(version(VERSIONS / 4 - 1)));
    let versions = versions_in_tables(&fs, b"k");
    // At most the last, uncompacted level-0 table (one memtable) and one
    // version per deeper table.
    assert!(
        versions.len() <= PER_BATCH + 8,
        "{} versions kept with no snapshot",
        versions.len()
    );
}

/// Once the snapshot is released, the versions it kept are garbage: the
/// compactions that follow must be able to drop them.
#[test]
fn many_versions_of_one_key_released_snapshot_versions_are_collected() {
    let fs = Arc::new(MemFileSystem::new());
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    let (snapshot, _) = write_many_versions(&db);
    drop(snapshot);
    // More versions and flushes with no snapshot alive.
    for round in 0..4 {
        let mut batch = WriteBatch::new();
        for i in 0..PER_BATCH {
            batch.put(b"k", &version(VERSIONS + round * PER_BATCH + i));
        }
        db.write(batch, &WriteOptions::default()).unwrap();
        db.flush().unwrap();
    }
    db.wait_for_compactions().unwrap();
    let newest = version(VERSIONS + 4 * PER_BATCH - 1);
    assert_eq!(db.get(b"k").unwrap(), Some(newest.clone()));
    let stats = db.stats();
    let table_bytes: u64 = stats.level_bytes.iter().sum();
    db.close().unwrap();
    let db = Db::open(DIR, tiny_options(&fs)).unwrap();
    assert_eq!(db.get(b"k").unwrap(), Some(newest));
    let versions = versions_in_tables(&fs, b"k");
    assert!(
        versions.len() <= PER_BATCH + 8,
        "{} versions of one key kept after the snapshot was released ({table_bytes} table bytes, bytes per level {:?})",
        versions.len(),
        stats.level_bytes
    );
}
