//! The version set: the current [`Version`], the manifest that records
//! every change to it, and the `CURRENT` file that names the manifest.
//!
//! Every change is a [`VersionEdit`] that is validated against the current
//! version, appended to the manifest and synced, and only then installed.
//! At open the manifest is replayed, then rewritten as a single snapshot
//! edit into a new manifest, which `CURRENT` is switched to by temp file,
//! sync, rename and directory sync; the old manifest is deleted last.
//!
//! Torn manifest tails: every edit is synced before it takes effect, so a
//! crash can only tear the last record, which was never acknowledged. A
//! damaged record that is followed by a valid one is corruption.
//!
//! Invariants:
//! - `CURRENT` always names a complete, synced manifest.
//! - A failed open writes and deletes nothing.
//! - After a failed manifest write the set refuses every later change.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use strata_format::manifest::{
    MANIFEST_HEADER_LEN, ManifestHeader, VersionEdit, current_file_content, manifest_file_name,
    parse_current, parse_manifest_file_name, parse_table_file_name, table_file_name,
};
use strata_format::wal::{RECORD_HEADER_LEN, RecordType, decode_record, encode_record};

use super::Version;
use crate::env::{File, FileSystem, OpenMode, read_file, write_file_atomically};
use crate::error::{Error, Result};

/// A manifest grows by appending edits; past this size the next change
/// rewrites it as one snapshot edit.
const MANIFEST_BYTES_MAX: u64 = 16 << 20;

pub(crate) struct ManifestWriter {
    number: u64,
    path: PathBuf,
    file: Arc<dyn File>,
    len: u64,
}

pub(crate) struct VersionSet {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    database_id: u128,
    current: Arc<Version>,
    /// Versions handed out that may still be read.
    handed_out: Vec<Weak<Version>>,
    /// Tables removed from the current version, to delete once unread.
    obsolete: BTreeSet<u64>,
    /// `None` until [`VersionSet::finish_open`].
    manifest: Option<ManifestWriter>,
    /// The manifest replayed at open, replaced by `finish_open`.
    old_manifest: Option<u64>,
    next_file_number: u64,
    flushed_seq: u64,
    poisoned: Option<String>,
    /// What was cut from the manifest's tail at open, if anything.
    pub(crate) torn_manifest_tail: Option<String>,
}

impl std::fmt::Debug for VersionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionSet")
            .field("manifest", &self.manifest.as_ref().map(|m| &m.path))
            .finish()
    }
}

impl VersionSet {
    /// Opens the version set of the database in `dir`, creating an empty
    /// one if the directory holds no manifest and no table. It writes a new
    /// manifest (and switches `CURRENT`) only after the old one replayed
    /// cleanly; see [`VersionSet::finish_open`] for deletions.
    pub(crate) fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        database_id: u128,
    ) -> Result<VersionSet> {
        let current_path = dir.join("CURRENT");
        let exists = fs
            .exists(&current_path)
            .map_err(|e| Error::io("stat", &current_path, e))?;
        let names = fs
            .list_dir(dir)
            .map_err(|e| Error::io("list directory", dir, e))?;
        let (version, next_file_number, flushed_seq, old_manifest, torn) = if exists {
            let (version, next, flushed, number, torn) = replay(&*fs, dir, database_id)?;
            (version, next, flushed, Some(number), torn)
        } else {
            // No CURRENT: a new database, or one whose creation was cut
            // between writing its first manifest and naming it (which
            // names no table). Tables without CURRENT are refused: their
            // state cannot be known.
            if let Some(stray) = names.iter().find(|n| parse_table_file_name(n).is_some()) {
                return Err(Error::corruption_msg(
                    &current_path,
                    0,
                    format!(
                        "CURRENT is missing but the directory holds {stray}; refusing to guess which state is live"
                    ),
                ));
            }
            (Version::default(), 1, 0, None, None)
        };
        // Never reuse a number a file in the directory already has (tables
        // kept after a torn manifest edit, manifests never named).
        let largest_on_disk = names
            .iter()
            .filter_map(|n| parse_table_file_name(n).or_else(|| parse_manifest_file_name(n)))
            .max()
            .unwrap_or(0);
        let next_file_number = next_file_number.max(largest_on_disk + 1);
        Ok(VersionSet {
            manifest: None,
            old_manifest,
            fs,
            dir: dir.to_path_buf(),
            database_id,
            current: Arc::new(version),
            handed_out: Vec::new(),
            obsolete: BTreeSet::new(),
            next_file_number,
            flushed_seq,
            poisoned: None,
            torn_manifest_tail: torn,
        })
    }

    /// Called once everything else the database reads at open checked
    /// out: writes the recovered version as a new manifest, switches
    /// `CURRENT` to it, and deletes the replaced manifest and the table
    /// files no version references (left by a flush or compaction that a
    /// crash interrupted). Never called after a failed open, so a failed
    /// open writes and deletes nothing here.
    ///
    /// If the old manifest's last edit was cut as torn, the old manifest
    /// and every unreferenced table are kept for inspection: were the cut
    /// edit durable after all (damage, not a crash), they hold its data.
    pub(crate) fn finish_open(&mut self) -> Result<()> {
        let number = self
            .next_file_number
            .max(self.old_manifest.map_or(0, |n| n + 1));
        self.next_file_number = number + 1;
        self.manifest = Some(write_manifest(
            &*self.fs,
            &self.dir,
            self.database_id,
            number,
            &self.current,
            self.next_file_number,
            self.flushed_seq,
        )?);
        if self.torn_manifest_tail.is_none() {
            self.delete_orphans()?;
        }
        Ok(())
    }

    /// For a database being created (no manifest yet): starts it with
    /// `ranges` instead of one range; ignored for an existing database,
    /// whose range map is in its manifest. Call before
    /// [`VersionSet::finish_open`], which writes it.
    pub(crate) fn set_initial_ranges(&mut self, ranges: crate::ranges::map::RangeMap) {
        if self.old_manifest.is_none() && self.manifest.is_none() {
            let mut version = self.current.as_ref().clone();
            version.ranges = Arc::new(ranges);
            version.index_level0();
            self.current = Arc::new(version);
        }
    }

    /// The current version; the caller may read it for as long as it holds
    /// it.
    pub(crate) fn current(&mut self) -> Arc<Version> {
        let version = Arc::clone(&self.current);
        self.handed_out.retain(|v| v.strong_count() > 0);
        self.handed_out.push(Arc::downgrade(&version));
        version
    }

    /// The current version with the flushed sequence number and the next
    /// file number that go with it (for a checkpoint's manifest).
    pub(crate) fn checkpoint_state(&mut self) -> (Arc<Version>, u64, u64) {
        (self.current(), self.flushed_seq, self.next_file_number)
    }

    pub(crate) fn database_id(&self) -> u128 {
        self.database_id
    }

    /// The manifest replayed at open, if there was one.
    pub(crate) fn replayed_manifest_path(&self) -> Option<PathBuf> {
        self.old_manifest
            .map(|n| self.dir.join(manifest_file_name(n)))
    }

    pub(crate) fn flushed_seq(&self) -> u64 {
        self.flushed_seq
    }

    pub(crate) fn new_file_number(&mut self) -> u64 {
        let number = self.next_file_number;
        self.next_file_number += 1;
        number
    }

    pub(crate) fn table_path(&self, number: u64) -> PathBuf {
        self.dir.join(table_file_name(number))
    }

    /// Validates `edit`, makes it durable in the manifest, and installs the
    /// resulting version.
    ///
    /// # Errors
    /// [`Error::Corruption`] for an edit that does not fit the current
    /// version (nothing written); [`Error::Poisoned`] after an earlier
    /// failure; [`Error::Io`] (the set is then poisoned).
    pub(crate) fn log_and_apply(&mut self, mut edit: VersionEdit) -> Result<Arc<Version>> {
        if let Some(reason) = &self.poisoned {
            return Err(Error::Poisoned {
                reason: Arc::from(reason.as_str()),
            });
        }
        let Some(manifest_path) = self.manifest.as_ref().map(|m| m.path.clone()) else {
            return Err(Error::Poisoned {
                reason: Arc::from("the version set was not finished opening"),
            });
        };
        edit.next_file_number = Some(self.next_file_number);
        let next = self.current.apply(&edit, &manifest_path)?;
        let flushed_seq = edit
            .flushed_seq
            .unwrap_or(self.flushed_seq)
            .max(self.flushed_seq);
        let manifest_len = self.manifest.as_ref().map_or(0, |m| m.len);
        let written = if manifest_len > MANIFEST_BYTES_MAX {
            let number = self.new_file_number();
            write_manifest(
                &*self.fs,
                &self.dir,
                self.database_id,
                number,
                &next,
                self.next_file_number,
                flushed_seq,
            )
            .and_then(|manifest| match self.manifest.replace(manifest) {
                Some(old) => self
                    .fs
                    .remove_file(&old.path)
                    .map_err(|e| Error::io("remove", &old.path, e)),
                None => Ok(()),
            })
        } else {
            let mut record = Vec::new();
            encode_record(RecordType::Edit, &edit.encode(), &mut record);
            let Some(manifest) = self.manifest.as_mut() else {
                return Err(Error::Closed);
            };
            manifest
                .file
                .write_all_at(&record, manifest.len)
                .and_then(|()| manifest.file.sync_data())
                .map(|()| manifest.len += record.len() as u64)
                .map_err(|e| Error::io("append to manifest", &manifest.path, e))
        };
        if let Err(error) = written {
            self.poisoned = Some(error.to_string());
            return Err(error);
        }
        for &(_, number) in &edit.deleted {
            self.obsolete.insert(number);
        }
        let old = std::mem::replace(&mut self.current, Arc::new(next));
        self.handed_out.retain(|v| v.strong_count() > 0);
        self.handed_out.push(Arc::downgrade(&old));
        self.flushed_seq = flushed_seq;
        Ok(Arc::clone(&self.current))
    }

    /// Deletes obsolete tables no handed-out version still holds. Returns
    /// how many were deleted.
    pub(crate) fn delete_obsolete(&mut self) -> Result<usize> {
        self.handed_out.retain(|v| v.strong_count() > 0);
        let live: BTreeSet<u64> = self
            .handed_out
            .iter()
            .filter_map(Weak::upgrade)
            .chain(std::iter::once(Arc::clone(&self.current)))
            .flat_map(|v| v.numbers().collect::<Vec<_>>())
            .collect();
        let doomed: Vec<u64> = self
            .obsolete
            .iter()
            .copied()
            .filter(|n| !live.contains(n))
            .collect();
        for &number in &doomed {
            let path = self.table_path(number);
            match self.fs.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
            self.obsolete.remove(&number);
        }
        Ok(doomed.len())
    }

    /// Deletes table files no version references and stale manifests. Only
    /// at open, before any flush or compaction runs.
    fn delete_orphans(&mut self) -> Result<()> {
        let names = self
            .fs
            .list_dir(&self.dir)
            .map_err(|e| Error::io("list directory", &self.dir, e))?;
        for name in names {
            let orphan_table =
                parse_table_file_name(&name).is_some_and(|n| !self.current.contains(n));
            let stale_manifest = parse_manifest_file_name(&name)
                .is_some_and(|n| Some(n) != self.manifest.as_ref().map(|m| m.number));
            if orphan_table || stale_manifest || name == "CURRENT.tmp" {
                let path = self.dir.join(&name);
                self.fs
                    .remove_file(&path)
                    .map_err(|e| Error::io("remove", &path, e))?;
            }
        }
        Ok(())
    }
}

type Replayed = (Version, u64, u64, u64, Option<String>);

/// Reads `CURRENT` and replays the manifest it names.
fn replay(fs: &dyn FileSystem, dir: &Path, database_id: u128) -> Result<Replayed> {
    let current_path = dir.join("CURRENT");
    let current = read_file(fs, &current_path, 64)?;
    let number = parse_current(&current).map_err(|e| Error::corruption(&current_path, e))?;
    let path = dir.join(manifest_file_name(number));
    if !fs.exists(&path).map_err(|e| Error::io("stat", &path, e))? {
        return Err(Error::corruption_msg(
            &current_path,
            0,
            format!("CURRENT names {}, which is missing", path.display()),
        ));
    }
    let bytes = read_file(fs, &path, u64::MAX)?;
    let header = ManifestHeader::decode(&bytes).map_err(|e| Error::corruption(&path, e))?;
    if header.database_id != database_id {
        return Err(Error::corruption_msg(
            &path,
            16,
            "manifest belongs to another database",
        ));
    }
    if header.manifest_number != number {
        return Err(Error::corruption_msg(
            &path,
            32,
            format!("manifest header says {}", header.manifest_number),
        ));
    }
    let mut version = Version::default();
    let mut next_file_number = number + 1;
    let mut flushed_seq = 0;
    let mut offset = MANIFEST_HEADER_LEN;
    let mut torn = None;
    while let Some(rest) = bytes.get(offset..).filter(|r| !r.is_empty()) {
        let record = match decode_record(rest) {
            Ok(record) => record,
            Err(error) => {
                // Torn only if nothing valid follows the damaged record.
                let claimed = rest
                    .get(4..8)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map_or(0, |b| u32::from_le_bytes(b) as usize);
                let after = offset
                    .saturating_add(RECORD_HEADER_LEN)
                    .saturating_add(claimed);
                // The first record (the snapshot written at open) was synced
                // before CURRENT named this manifest: it cannot be torn.
                if offset == MANIFEST_HEADER_LEN
                    || bytes
                        .get(after..)
                        .is_some_and(|next| decode_record(next).is_ok())
                {
                    return Err(Error::corruption(&path, error.at(offset as u64)));
                }
                torn = Some(format!("{} at offset {offset}: {error}", path.display()));
                break;
            }
        };
        if record.record_type != RecordType::Edit {
            if matches!(record.record_type, RecordType::Ignorable(_)) {
                offset += record.framed_len;
                continue;
            }
            return Err(Error::corruption_msg(
                &path,
                offset as u64,
                "a non-edit record in the manifest",
            ));
        }
        let edit = VersionEdit::decode(record.payload)
            .map_err(|e| Error::corruption(&path, e.at((offset + RECORD_HEADER_LEN) as u64)))?;
        version = version.apply(&edit, &path)?;
        if let Some(next) = edit.next_file_number {
            next_file_number = next_file_number.max(next);
        }
        if let Some(seq) = edit.flushed_seq {
            flushed_seq = flushed_seq.max(seq);
        }
        offset += record.framed_len;
    }
    if let Some(max) = version.numbers().max() {
        next_file_number = next_file_number.max(max + 1);
    }
    Ok((version, next_file_number, flushed_seq, number, torn))
}

/// Writes manifest `number` holding `version` as one snapshot edit, syncs
/// it, and points `CURRENT` at it (temp file, sync, rename, directory
/// sync).
pub(crate) fn write_manifest(
    fs: &dyn FileSystem,
    dir: &Path,
    database_id: u128,
    number: u64,
    version: &Version,
    next_file_number: u64,
    flushed_seq: u64,
) -> Result<ManifestWriter> {
    let path = dir.join(manifest_file_name(number));
    if fs.exists(&path).map_err(|e| Error::io("stat", &path, e))? {
        // A leftover of an interrupted rewrite that CURRENT never named.
        fs.remove_file(&path)
            .map_err(|e| Error::io("remove", &path, e))?;
    }
    let file = fs
        .open(&path, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", &path, e))?;
    let mut bytes = ManifestHeader {
        database_id,
        manifest_number: number,
    }
    .encode()
    .to_vec();
    let mut edit = version.snapshot_edit();
    edit.next_file_number = Some(next_file_number);
    edit.flushed_seq = Some(flushed_seq);
    encode_record(RecordType::Edit, &edit.encode(), &mut bytes);
    file.write_all_at(&bytes, 0)
        .map_err(|e| Error::io("write", &path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &path, e))?;

    write_file_atomically(fs, dir, "CURRENT", current_file_content(number).as_bytes())?;
    Ok(ManifestWriter {
        number,
        path,
        file,
        len: bytes.len() as u64,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::env::MemFileSystem;
    use strata_format::manifest::TableEntry;

    const DB: u128 = 77;

    fn table(level: u8, number: u64, small: &[u8], large: &[u8]) -> TableEntry {
        let ikey = |k: &[u8]| {
            let mut v = k.to_vec();
            v.extend_from_slice(&((1u64 << 8) | 2).to_le_bytes());
            v
        };
        TableEntry {
            level,
            number,
            size: 10,
            smallest: ikey(small),
            largest: ikey(large),
            smallest_seq: 1,
            largest_seq: 1,
            entries: 1,
            obsolete_entries: 0,
        }
    }

    fn open(fs: &Arc<MemFileSystem>) -> Result<VersionSet> {
        let fs: Arc<dyn FileSystem> = fs.clone();
        fs.create_dir_all(Path::new("db")).unwrap();
        let mut set = VersionSet::open(fs, Path::new("db"), DB)?;
        set.finish_open()?;
        Ok(set)
    }

    fn touch(fs: &MemFileSystem, number: u64) {
        fs.write_file(&Path::new("db").join(table_file_name(number)), b"table")
            .unwrap();
    }

    fn manifest_path(fs: &MemFileSystem) -> PathBuf {
        let current = fs.read_file(Path::new("db/CURRENT")).unwrap();
        Path::new("db").join(manifest_file_name(parse_current(&current).unwrap()))
    }

    #[test]
    fn edits_survive_reopen_and_the_manifest_is_rewritten() {
        let fs = Arc::new(MemFileSystem::new());
        let mut set = open(&fs).unwrap();
        let a = set.new_file_number();
        let b = set.new_file_number();
        touch(&fs, a);
        touch(&fs, b);
        set.log_and_apply(VersionEdit {
            added: vec![table(0, a, b"a", b"k")],
            flushed_seq: Some(10),
            ..Default::default()
        })
        .unwrap();
        set.log_and_apply(VersionEdit {
            added: vec![table(1, b, b"b", b"z")],
            deleted: vec![(0, a)],
            ..Default::default()
        })
        .unwrap();
        let first_manifest = manifest_path(&fs);
        drop(set);
        let mut set = open(&fs).unwrap();
        assert_eq!(set.flushed_seq(), 10);
        let v = set.current();
        assert_eq!(v.numbers().collect::<Vec<_>>(), vec![b]);
        assert_ne!(manifest_path(&fs), first_manifest);
        assert!(!fs.exists(&first_manifest).unwrap(), "old manifest deleted");
        // The obsolete table `a` was never deleted (no delete_obsolete call):
        // as an orphan it went at open.
        assert!(
            !fs.exists(&Path::new("db").join(table_file_name(a)))
                .unwrap()
        );
        assert!(set.new_file_number() > b);
    }

    #[test]
    fn obsolete_tables_wait_for_readers() {
        let fs = Arc::new(MemFileSystem::new());
        let mut set = open(&fs).unwrap();
        let a = set.new_file_number();
        touch(&fs, a);
        set.log_and_apply(VersionEdit {
            added: vec![table(0, a, b"a", b"k")],
            ..Default::default()
        })
        .unwrap();
        let reader = set.current();
        set.log_and_apply(VersionEdit {
            deleted: vec![(0, a)],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(set.delete_obsolete().unwrap(), 0);
        drop(reader);
        assert_eq!(set.delete_obsolete().unwrap(), 1);
    }

    #[test]
    fn torn_last_edit_is_dropped_and_corrupt_middle_edit_is_an_error() {
        let fs = Arc::new(MemFileSystem::new());
        let mut set = open(&fs).unwrap();
        for i in 0..3 {
            let n = set.new_file_number();
            touch(&fs, n);
            set.log_and_apply(VersionEdit {
                added: vec![table(0, n, b"a", b"k")],
                flushed_seq: Some(i),
                ..Default::default()
            })
            .unwrap();
        }
        drop(set);
        let path = manifest_path(&fs);
        let bytes = fs.read_file(&path).unwrap();
        fs.write_file(&path, &bytes[..bytes.len() - 5]).unwrap();
        let mut set = open(&fs).unwrap();
        assert_eq!(set.current().numbers().count(), 2);
        assert!(set.torn_manifest_tail.is_some());
        for i in 0..2 {
            let n = set.new_file_number();
            touch(&fs, n);
            set.log_and_apply(VersionEdit {
                added: vec![table(0, n, b"a", b"k")],
                flushed_seq: Some(i),
                ..Default::default()
            })
            .unwrap();
        }
        drop(set);
        let path = manifest_path(&fs);
        let mut bytes = fs.read_file(&path).unwrap();
        let len = bytes.len();
        // Damage the payload of the first appended edit (after the snapshot).
        let snapshot_end = {
            let rest = &bytes[MANIFEST_HEADER_LEN..];
            MANIFEST_HEADER_LEN + decode_record(rest).unwrap().framed_len
        };
        bytes[snapshot_end + RECORD_HEADER_LEN + 3] ^= 1;
        fs.write_file(&path, &bytes).unwrap();
        let err = open(&fs).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        assert!(err.to_string().contains("MANIFEST"), "{err}");
        assert_eq!(
            fs.read_file(&path).unwrap().len(),
            len,
            "a failed open changes nothing"
        );
    }

    #[test]
    fn missing_current_with_tables_is_refused() {
        let fs = Arc::new(MemFileSystem::new());
        drop(open(&fs).unwrap());
        touch(&fs, 9);
        fs.remove_file(Path::new("db/CURRENT")).unwrap();
        let err = open(&fs).unwrap_err();
        assert!(err.to_string().contains("CURRENT is missing"), "{err}");
    }

    #[test]
    fn missing_current_without_tables_is_a_creation_cut_short() {
        // A crash between writing the first manifest and naming it.
        let fs = Arc::new(MemFileSystem::new());
        drop(open(&fs).unwrap());
        fs.remove_file(Path::new("db/CURRENT")).unwrap();
        let mut set = open(&fs).unwrap();
        assert_eq!(set.current().numbers().count(), 0);
        assert!(
            set.new_file_number() > 1,
            "never reuses the stray manifest's number"
        );
    }

    #[test]
    fn current_naming_a_missing_manifest_is_corruption() {
        let fs = Arc::new(MemFileSystem::new());
        drop(open(&fs).unwrap());
        fs.write_file(Path::new("db/CURRENT"), b"MANIFEST-000099\n")
            .unwrap();
        let err = open(&fs).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn manifest_of_another_database_is_refused() {
        let fs = Arc::new(MemFileSystem::new());
        drop(open(&fs).unwrap());
        let fs_dyn: Arc<dyn FileSystem> = fs.clone();
        let err = VersionSet::open(fs_dyn, Path::new("db"), DB + 1).unwrap_err();
        assert!(err.to_string().contains("another database"), "{err}");
    }

    #[test]
    fn edit_referencing_a_missing_table_is_rejected_before_writing() {
        let fs = Arc::new(MemFileSystem::new());
        let mut set = open(&fs).unwrap();
        let before = fs.read_file(&manifest_path(&fs)).unwrap();
        assert!(
            set.log_and_apply(VersionEdit {
                deleted: vec![(0, 42)],
                ..Default::default()
            })
            .is_err()
        );
        assert_eq!(fs.read_file(&manifest_path(&fs)).unwrap(), before);
    }
}
