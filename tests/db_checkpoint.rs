//! `Db::checkpoint`: a consistent, openable copy taken while writes go on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use strata::{Db, MemFileSystem, Options, RealFileSystem, SeqNo};

fn tiny(fs: Arc<dyn strata::FileSystem>) -> Options {
    Options {
        file_system: fs,
        memtable_bytes_max: 4096,
        level0_compaction_trigger: 2,
        level1_bytes_max: 16 << 10,
        table_bytes_max: 8 << 10,
        wal_segment_bytes_max: 8 << 10,
        ..Options::default()
    }
}

fn check_checkpoint(
    fs: Arc<dyn strata::FileSystem>,
    source: &std::path::Path,
    target: &std::path::Path,
) {
    let db = Arc::new(Db::open(source, tiny(fs.clone())).unwrap());
    for i in 0..2000u32 {
        db.put(
            format!("before-{i:05}").as_bytes(),
            format!("v{i}").as_bytes(),
        )
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU32::new(0));
    let writer = {
        let (db, stop, progress) = (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&progress));
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) || i < 200 {
                db.put(format!("during-{i:06}").as_bytes(), b"x").unwrap();
                i += 1;
                progress.store(i, Ordering::Relaxed);
            }
            i
        })
    };
    while progress.load(Ordering::Relaxed) < 100 {
        std::thread::yield_now();
    }
    let seq = db.checkpoint(target).unwrap();
    stop.store(true, Ordering::Relaxed);
    let written_during = writer.join().unwrap();
    assert!(written_during >= 200);
    assert!(
        db.checkpoint(target).is_err(),
        "a non-empty target is refused"
    );

    let copy = Db::open(target, tiny(fs)).unwrap();
    assert_eq!(
        copy.stats().last_seq,
        seq,
        "the copy holds exactly what checkpoint returned"
    );
    for i in (0..2000u32).step_by(97) {
        assert_eq!(
            copy.get(format!("before-{i:05}").as_bytes()).unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
    let before = copy.prefix(b"before-").unwrap().count();
    assert_eq!(before, 2000);
    // Writes during the checkpoint are in it as a prefix: "during" keys are
    // dense from 0.
    let during: Vec<_> = copy
        .prefix(b"during-")
        .unwrap()
        .map(|kv| kv.unwrap().0)
        .collect();
    for (i, key) in during.iter().enumerate() {
        assert_eq!(key, format!("during-{i:06}").as_bytes());
    }
    copy.verify_tables().unwrap();
    // The source is unaffected and keeps working.
    assert!(db.stats().last_seq >= SeqNo(seq.get()));
    db.put(b"after", b"1").unwrap();
    assert_eq!(copy.get(b"after").unwrap(), None);
}

#[test]
fn checkpoint_in_memory_is_consistent_while_writes_continue() {
    check_checkpoint(
        Arc::new(MemFileSystem::new()),
        std::path::Path::new("src"),
        std::path::Path::new("copy"),
    );
}

#[test]
fn checkpoint_on_disk_hard_links_tables() {
    let dir = tempfile::tempdir().unwrap();
    check_checkpoint(
        Arc::new(RealFileSystem),
        &dir.path().join("src"),
        &dir.path().join("copy"),
    );
}
