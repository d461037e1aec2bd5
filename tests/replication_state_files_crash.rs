//! The replication state files (`EPOCH`, `RANGES`) under power loss: a
//! crash before any step of a write leaves the old value or the new one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::Path;
use std::sync::Arc;

use strata::env::{CrashMode, FaultFileSystem, FaultPlan};
use strata::replication::{Epoch, record_ranges};

#[test]
fn a_crash_at_any_step_of_raising_the_epoch_leaves_the_old_or_the_new_one() {
    let fs = FaultFileSystem::new();
    Epoch::open_in(Arc::new(fs.clone()), Path::new("n"))
        .unwrap()
        .raise_to(4)
        .unwrap();
    fs.set_plan(FaultPlan::default());
    Epoch::open_in(Arc::new(fs.clone()), Path::new("n"))
        .unwrap()
        .raise_to(5)
        .unwrap();
    let steps = fs.stats().steps;
    assert!(steps >= 4, "{steps}");
    let mut seen = [false, false];
    for step in 0..steps {
        for (mode, seed) in [
            CrashMode::DropUnsynced,
            CrashMode::KeepPrefix,
            CrashMode::GarbleSectors,
        ]
        .into_iter()
        .flat_map(|mode| (0..8).map(move |seed| (mode, seed)))
        {
            let fs = FaultFileSystem::new();
            let epoch = Epoch::open_in(Arc::new(fs.clone()), Path::new("n")).unwrap();
            epoch.raise_to(4).unwrap();
            fs.set_plan(FaultPlan {
                crash_at_step: Some(step),
                crash_mode: Some(mode),
                seed,
                ..FaultPlan::default()
            });
            assert!(epoch.raise_to(5).is_err());
            assert_eq!(epoch.get(), 4, "unchanged in memory after a failed write");
            fs.resume();
            let found = Epoch::open_in(Arc::new(fs.clone()), Path::new("n"))
                .unwrap()
                .get();
            assert!(found == 4 || found == 5, "step {step} {mode:?}: {found}");
            seen[usize::from(found == 5)] = true;
        }
    }
    assert_eq!(seen, [true, true]);
}

#[test]
fn a_crash_at_any_step_of_recording_ranges_leaves_none_or_all_of_them() {
    let eu = vec![(b"eu/".to_vec(), Some(b"eu0".to_vec()))];
    let fs = FaultFileSystem::new();
    record_ranges(&fs, Path::new("r.state"), &eu).unwrap();
    let steps = fs.stats().steps;
    for step in 0..steps {
        let fs = FaultFileSystem::new();
        fs.set_plan(FaultPlan {
            crash_at_step: Some(step),
            ..FaultPlan::default()
        });
        assert!(record_ranges(&fs, Path::new("r.state"), &eu).is_err());
        fs.resume();
        // Recorded whole, or not at all (then recorded now): never other
        // ranges, and never a refusal of the same ones.
        record_ranges(&fs, Path::new("r.state"), &eu).unwrap();
        assert!(record_ranges(&fs, Path::new("r.state"), &[]).is_err());
    }
}
