//! Snapshot install under power loss: a crash before any step of an
//! install (each file created, written and synced, each directory synced,
//! each rename of the switch) leaves, once `recover_install` has run,
//! either the old database or the complete new one, never a mix; and a
//! crash right after the switch keeps every staged file (which needs the
//! staging directories synced before the switch).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::Path;
use std::sync::Arc;

use strata::env::{CrashMode, FaultFileSystem, FaultPlan};
use strata::replication::{
    SnapshotFile, SnapshotInstall, build_snapshot, read_snapshot_file, recover_install,
};
use strata::{Db, FileSystem, Options, WriteOptions};

type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn options(fs: &FaultFileSystem) -> Options {
    Options {
        file_system: Arc::new(fs.clone()),
        ..Options::default()
    }
}

fn rows(db: &Db) -> Rows {
    db.scan(..).unwrap().map(|kv| kv.unwrap()).collect()
}

/// A file system holding an old database at `r` and the files of a
/// snapshot of another (`p`), everything durable; returns the old and new
/// rows and the snapshot's files with their content.
fn setup() -> (FaultFileSystem, Rows, Rows, Vec<(SnapshotFile, Vec<u8>)>) {
    let fs = FaultFileSystem::new();
    let sync = WriteOptions { sync: true };
    let old = Db::open("r", options(&fs)).unwrap();
    for i in 0..20u32 {
        old.put(format!("old{i:03}").as_bytes(), b"old").unwrap();
    }
    old.flush().unwrap();
    old.put(b"old-tail", b"in the log").unwrap();
    old.sync().unwrap();
    old.close().unwrap();

    let primary = Db::open("p", options(&fs)).unwrap();
    for i in 0..60u32 {
        let mut batch = strata::WriteBatch::new();
        batch.put(format!("new{i:03}").as_bytes(), &i.to_le_bytes());
        primary.write(batch, &sync).unwrap();
        if i == 30 {
            primary.flush().unwrap();
        }
    }
    let new_rows = rows(&primary);
    let snapshot = build_snapshot(&primary, Path::new("snap"), &[]).unwrap();
    primary.close().unwrap();
    let files = snapshot
        .files
        .iter()
        .map(|file| {
            let mut bytes = vec![0u8; file.size as usize];
            let n = read_snapshot_file(&fs, Path::new("snap"), &file.path, 0, &mut bytes).unwrap();
            assert_eq!(n as u64, file.size);
            (file.clone(), bytes)
        })
        .collect();
    // A clean restart: only what is durable is left.
    fs.crash(CrashMode::DropUnsynced, 0);
    let old = Db::open("r", options(&fs)).unwrap();
    let old_rows = rows(&old);
    old.close().unwrap();
    assert_eq!(old_rows.len(), 21);
    (fs, old_rows, new_rows, files)
}

/// Stages every file (in two chunks each) and commits.
fn install(fs: &FaultFileSystem, files: &[(SnapshotFile, Vec<u8>)]) -> strata::Result<()> {
    let install = SnapshotInstall::begin(Arc::new(fs.clone()), Path::new("r"), "snapshot-1")?;
    for (file, bytes) in files {
        let mut staged = install.file(file)?;
        let half = bytes.len() / 2;
        staged.append(0, &bytes[..half])?;
        staged.append(half as u64, &bytes[half..])?;
        staged.finish()?;
    }
    install.commit()
}

/// What `r` holds after a restart (the interrupted install recovered).
fn after_restart(fs: &FaultFileSystem) -> Rows {
    fs.resume();
    recover_install(fs, Path::new("r")).unwrap();
    let db = Db::open("r", options(fs)).unwrap();
    let found = rows(&db);
    db.close().unwrap();
    found
}

#[test]
fn a_crash_before_any_step_of_an_install_leaves_the_old_or_the_whole_new_database() {
    let (fs, _, new_rows, files) = setup();
    fs.set_plan(FaultPlan::default());
    install(&fs, &files).unwrap();
    let steps = fs.stats().steps;
    assert!(steps > 20, "an install takes many steps ({steps})");
    let mut old_seen = 0;
    let mut new_seen = 0;
    for step in 0..steps {
        for mode in [CrashMode::DropUnsynced, CrashMode::KeepPrefix] {
            let (fs, old_rows, _, _) = setup();
            fs.set_plan(FaultPlan {
                crash_at_step: Some(step),
                crash_mode: Some(mode),
                seed: step,
                ..FaultPlan::default()
            });
            assert!(install(&fs, &files).is_err(), "step {step} crashes");
            let found = after_restart(&fs);
            if found == old_rows {
                old_seen += 1;
            } else if found == new_rows {
                new_seen += 1;
            } else {
                panic!(
                    "a crash before step {step} of {steps} ({mode:?}) left {} rows, neither the old {} nor the new {}",
                    found.len(),
                    old_rows.len(),
                    new_rows.len()
                );
            }
        }
    }
    assert!(
        old_seen > 0 && new_seen > 0,
        "{old_seen} old, {new_seen} new"
    );
}

#[test]
fn a_crash_right_after_the_switch_keeps_every_staged_file() {
    let (fs, _, new_rows, files) = setup();
    install(&fs, &files).unwrap();
    fs.crash(CrashMode::DropUnsynced, 1);
    assert_eq!(after_restart(&fs), new_rows);
}

#[test]
fn an_interrupted_transfer_of_the_same_snapshot_resumes() {
    let (fs, _, new_rows, files) = setup();
    {
        let install = SnapshotInstall::begin(Arc::new(fs.clone()), Path::new("r"), "s").unwrap();
        let (file, bytes) = &files[0];
        let mut staged = install.file(file).unwrap();
        staged.append(0, &bytes[..bytes.len() / 2]).unwrap();
    }
    let install = SnapshotInstall::begin(Arc::new(fs.clone()), Path::new("r"), "s").unwrap();
    for (file, bytes) in &files {
        let mut staged = install.file(file).unwrap();
        let have = staged.staged_len() as usize;
        staged.append(have as u64, &bytes[have..]).unwrap();
        staged.finish().unwrap();
    }
    install.commit().unwrap();
    assert_eq!(after_restart(&fs), new_rows);
    assert!(!fs.exists(Path::new("r.bootstrap")).unwrap());
}

#[test]
fn a_staged_file_with_the_wrong_content_is_refused_and_removed() {
    let (fs, _, _, files) = setup();
    let install = SnapshotInstall::begin(Arc::new(fs.clone()), Path::new("r"), "s").unwrap();
    let (file, bytes) = &files[0];
    let mut staged = install.file(file).unwrap();
    let mut damaged = bytes.clone();
    damaged[0] ^= 1;
    staged.append(0, &damaged).unwrap();
    let err = staged.finish().unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(err.to_string().contains(&file.path), "{err}");
    assert_eq!(install.file(file).unwrap().staged_len(), 0);
    // Bytes that do not continue the file are refused.
    let mut staged = install.file(file).unwrap();
    assert!(staged.append(5, &bytes[5..]).is_err());
}
