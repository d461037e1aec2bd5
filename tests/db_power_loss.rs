//! Simulated power loss through the engine, in process: the database runs
//! on a `FaultFileSystem` with tiny options, so flushes, compactions,
//! manifest edits and log rotation are frequent; each round writes
//! generator batches (a mix of `sync: true` and unsynced, with occasional
//! `flush()`, `sync()` and `wait_for_compactions()`), then cuts the power
//! with `crash_and_halt(mode, seed)` while background work may be running,
//! drops the database, `resume()`s and reopens.
//!
//! After every reopen: `verify_tables()` passes, and the state equals the
//! generator replayed to the recovered `__next_batch` (a batch boundary),
//! with the last sequence number equal to the generator's operation count
//! (no hole, no half batch, no garbage), and that index is at least one
//! past the last batch made durable (a `sync: true` write or `sync()` that
//! returned `Ok`) and at most the number of batches ever written.
//!
//! Fault rounds (one in four) set a `FaultPlan` after the open: a failing
//! nth sync, every sync failing from the nth on, or `ENOSPC` after a byte
//! budget. Once a write, sync or flush has failed, every later write must
//! fail with `Error::Poisoned` (nothing more is acknowledged); after the
//! crash and reopen nothing acknowledged is lost.
//!
//! CI runs 1,000 rounds (TESTING.md's figure); `STRATA_DB_POWER_LOSS_ROUNDS` for the long run;
//! `STRATA_DB_POWER_LOSS_SEED` replays a run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::env::{CrashMode, FaultFileSystem, FaultPlan};
use strata::{Db, Error, Options, WriteOptions};

const DIR: &str = "db";
const KEYS: u64 = 200;
/// A fresh file system every this many rounds, to bound replay costs.
const ROUNDS_PER_FS: u64 = 40;
const MODES: [CrashMode; 4] = [
    CrashMode::DropUnsynced,
    CrashMode::KeepPrefix,
    CrashMode::GarbleSectors,
    CrashMode::Random,
];

fn options(fs: &Arc<FaultFileSystem>) -> Options {
    Options {
        file_system: fs.clone(),
        wal_segment_bytes_max: 4 << 10,
        memtable_bytes_max: 2 << 10,
        level0_compaction_trigger: 2,
        level0_slowdown_writes: 4,
        level0_stop_writes: 8,
        level1_bytes_max: 8 << 10,
        level_size_multiplier: 4,
        table_bytes_max: 4 << 10,
        block_bytes: 256,
        ..Options::default()
    }
}

use strata_tests::db_gen::{
    DbModel as Model, DbOp as Op, apply_ops, check_db_against, mix, read_next_batch, to_batch,
};
use strata_tests::env_count;

/// Generator batch `index` (its last operation is the `__next_batch` put).
fn batch_ops(seed: u64, index: u64) -> Vec<Op> {
    strata_tests::db_gen::db_batch_ops(seed, index, KEYS, 120)
}

/// The generator's state and operation count after batches `0..next`,
/// extended incrementally (rounds only ever ask for nearby indexes).
struct Replayer {
    seed: u64,
    /// (batches applied, model, operations) checkpoints every 64 batches.
    checkpoints: Vec<(Model, u64)>,
}

impl Replayer {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            checkpoints: vec![(Model::new(), 0)],
        }
    }

    fn apply(&self, model: &mut Model, ops: &mut u64, index: u64) {
        let batch = batch_ops(self.seed, index);
        *ops += batch.len() as u64;
        apply_ops(model, &batch);
    }

    fn state(&mut self, next: u64) -> (Model, u64) {
        let want = (next / 64) as usize;
        while self.checkpoints.len() <= want {
            let (mut model, mut ops) = self.checkpoints.last().unwrap().clone();
            let base = (self.checkpoints.len() as u64 - 1) * 64;
            for index in base..base + 64 {
                self.apply(&mut model, &mut ops, index);
            }
            self.checkpoints.push((model, ops));
        }
        let (mut model, mut ops) = self.checkpoints[want].clone();
        for index in (want as u64 * 64)..next {
            self.apply(&mut model, &mut ops, index);
        }
        (model, ops)
    }
}

/// Checks the reopened database; returns the recovered next batch index.
fn check_state(db: &Db, replayer: &mut Replayer) -> Result<u64, String> {
    let next = read_next_batch(db)?;
    let (model, ops) = replayer.state(next);
    check_db_against(db, &model, ops, next, KEYS, 7)?;
    Ok(next)
}

#[derive(Default, Debug)]
struct Figures {
    rounds: u64,
    crashes_by_mode: [u64; 4],
    fault_rounds: u64,
    faults_hit: u64,
    writes_refused_after_failure: u64,
    batches_written: u64,
    synced_acks: u64,
    unsynced_lost: u64,
    flushes: u64,
    compactions: u64,
    explicit_flushes: u64,
    verified: u64,
    live_checks: u64,
    /// Hits of the known bugs: [install race, reused file number].
    known_bugs: [u64; 2],
}

/// Background errors of two bugs, now fixed, that this suite found:
/// - the flush/compaction install race (regression test
///   `flush_and_compaction_installs_never_lose_a_version`): "which lacks it";
/// - a file number reused after a torn manifest edit (regression test
///   `torn_manifest_edit_with_orphan_tables_never_reuses_a_file_number`):
///   "already exists".
///
/// They fail the run, unless `STRATA_DB_POWER_LOSS_LENIENT` is set (a
/// diagnostic switch to count them and go on).
fn known_bug(error: &Error) -> Option<usize> {
    if std::env::var_os("STRATA_DB_POWER_LOSS_LENIENT").is_none()
        || !matches!(error, Error::Poisoned { .. })
    {
        return None;
    }
    let text = error.to_string();
    if text.contains("which lacks it") {
        Some(0)
    } else if text.contains(".sst: already exists") {
        Some(1)
    } else {
        None
    }
}

/// One round on `fs`: reopen and check, write, crash. `durable_next` is
/// the batch index every recovery must reach, `written_next` the most it
/// may reach. Returns the new pair, or the violation.
fn round(
    fs: &Arc<FaultFileSystem>,
    replayer: &mut Replayer,
    rng: &mut SmallRng,
    durable_next: u64,
    written_next: u64,
    figures: &mut Figures,
) -> Result<(u64, u64), String> {
    let db = Db::open(DIR, options(fs)).map_err(|e| format!("reopen failed: {e}"))?;
    db.verify_tables()
        .map_err(|e| format!("verify_tables after reopen: {e}"))?;
    let next = check_state(&db, replayer)?;
    figures.verified += 1;
    if next < durable_next {
        return Err(format!(
            "durable batches lost: recovered next batch {next}, but batches up to {} were durable",
            durable_next - 1
        ));
    }
    if next > written_next {
        return Err(format!(
            "recovered next batch {next}, but only {written_next} batches were ever written"
        ));
    }
    figures.unsynced_lost += written_next - next;
    // What recovery found survived a crash: it is durable now, and every
    // later recovery must find it again.
    let mut durable = next;
    let mut acked = next; // batches 0..acked were acknowledged
    let mut written = next; // batches 0..written may have reached the log
    let fault_round = rng.random_bool(0.25);
    if fault_round {
        figures.fault_rounds += 1;
        let plan = match rng.random_range(0..3) {
            0 => FaultPlan {
                fail_sync_at: Some(rng.random_range(0..30)),
                ..FaultPlan::default()
            },
            1 => FaultPlan {
                fail_all_syncs_after: Some(rng.random_range(0..30)),
                ..FaultPlan::default()
            },
            _ => FaultPlan {
                enospc_after_bytes: Some(rng.random_range(0..40_000)),
                ..FaultPlan::default()
            },
        };
        fs.set_plan(plan);
    }
    let sync_probability = [0.0, 0.1, 0.5, 1.0][rng.random_range(0..4)];
    let batches = rng.random_range(0..120);
    let mut failed: Option<String> = None;
    for _ in 0..batches {
        let sync = rng.random_bool(sync_probability);
        let ops = batch_ops(replayer.seed, acked);
        let result = db.write(to_batch(&ops), &WriteOptions { sync });
        match (&failed, result) {
            (None, Ok(_)) => {
                acked += 1;
                written = acked;
                figures.batches_written += 1;
                if sync {
                    durable = acked;
                    figures.synced_acks += 1;
                }
            }
            (None, Err(error)) => {
                if !fault_round {
                    if let Some(bug) = known_bug(&error) {
                        figures.known_bugs[bug] += 1;
                        break;
                    }
                    return Err(format!("write failed without a fault: {error}"));
                }
                figures.faults_hit += 1;
                // The failed batch may or may not have reached the log.
                failed = Some(error.to_string());
                written = acked + 1;
            }
            (Some(first), Ok(seq)) => {
                let again = db.write(to_batch(&ops), &WriteOptions { sync });
                let flush = db.flush();
                return Err(format!(
                    "batch {acked} acknowledged (seq {}, sync {sync}) after an earlier failure ({first}); a second write gives {again:?}, flush gives {flush:?}; stats {:?}",
                    seq.get(),
                    db.stats()
                ));
            }
            (Some(_), Err(Error::Poisoned { .. })) => figures.writes_refused_after_failure += 1,
            (Some(first), Err(error)) => {
                return Err(format!(
                    "after a failure ({first}) a write failed with {error}, not Poisoned"
                ));
            }
        }
        let action = rng.random_range(0..100);
        let outcome = if action < 3 {
            figures.explicit_flushes += 1;
            db.flush().map(|()| None)
        } else if action < 5 {
            db.sync().map(|_| Some(acked))
        } else if action < 6 {
            db.wait_for_compactions().map(|()| None)
        } else {
            Ok(None)
        };
        match outcome {
            // A sync that returns Ok promises every acknowledged batch
            // (after a background failure the log itself may still sync).
            Ok(Some(synced)) => durable = synced,
            Ok(None) => {}
            Err(_) if failed.is_some() => {}
            Err(error) if fault_round => {
                figures.faults_hit += 1;
                failed = Some(error.to_string());
            }
            Err(error) if known_bug(&error).is_some() => {
                figures.known_bugs[known_bug(&error).unwrap()] += 1;
                break;
            }
            Err(error) => return Err(format!("flush/sync failed without a fault: {error}")),
        }
    }
    // While it runs, the database reads exactly the acknowledged batches.
    if failed.is_none() && !fault_round {
        let (model, _) = replayer.state(acked);
        let found: Vec<(Vec<u8>, Vec<u8>)> = db
            .scan(..)
            .map_err(|e| format!("live scan: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("live scan: {e}"))?;
        let expected: Vec<(Vec<u8>, Vec<u8>)> = model.into_iter().collect();
        if found != expected {
            return Err(format!(
                "live scan before the crash differs from batches 0..{acked}: {} rows vs {}",
                found.len(),
                expected.len()
            ));
        }
        figures.live_checks += 1;
    }
    let stats = db.stats();
    figures.flushes += stats.flushes;
    figures.compactions += stats.compactions;
    if rng.random_bool(0.3) {
        std::thread::sleep(std::time::Duration::from_micros(rng.random_range(0..2000)));
    }
    let mode = rng.random_range(0..4);
    figures.crashes_by_mode[mode] += 1;
    fs.crash_and_halt(MODES[mode], rng.random());
    drop(db);
    fs.resume();
    figures.rounds += 1;
    Ok((durable, written))
}

#[test]
fn db_power_loss() {
    let rounds = env_count("STRATA_DB_POWER_LOSS_ROUNDS", 1000);
    let seed = std::env::var("STRATA_DB_POWER_LOSS_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut figures = Figures::default();
    let mut done = 0;
    let mut epoch = 0;
    while done < rounds {
        epoch += 1;
        let fs = Arc::new(FaultFileSystem::new());
        let mut replayer = Replayer::new(mix(seed, epoch));
        let (mut durable, mut written) = (0, 0);
        for r in 0..ROUNDS_PER_FS.min(rounds - done) {
            match round(&fs, &mut replayer, &mut rng, durable, written, &mut figures) {
                Ok((d, w)) => {
                    durable = d;
                    written = w;
                }
                Err(problem) => panic!(
                    "STRATA_DB_POWER_LOSS_SEED={seed:#x} file system {epoch} round {r}: {problem}"
                ),
            }
            done += 1;
        }
        // The last crash of this file system is checked too.
        let db = Db::open(DIR, options(&fs)).unwrap();
        db.verify_tables().unwrap();
        let next = check_state(&db, &mut replayer)
            .unwrap_or_else(|p| panic!("STRATA_DB_POWER_LOSS_SEED={seed:#x} final check: {p}"));
        assert!(
            next >= durable && next <= written,
            "{next} {durable} {written}"
        );
        figures.verified += 1;
    }
    println!(
        "db power loss: seed={seed:#x} rounds={} crashes by mode (drop, prefix, garble, random)={:?} fault_rounds={} faults_hit={} writes_refused_after_failure={} batches_written={} synced_acks={} unsynced_batches_lost={} flushes={} compactions={} explicit_flushes={} verified_reopens={} live_checks={} known_bug_hits (install race, reused file number)={:?} acknowledged_lost=0 failed_reopens=0 wall={:.1}s",
        figures.rounds,
        figures.crashes_by_mode,
        figures.fault_rounds,
        figures.faults_hit,
        figures.writes_refused_after_failure,
        figures.batches_written,
        figures.synced_acks,
        figures.unsynced_lost,
        figures.flushes,
        figures.compactions,
        figures.explicit_flushes,
        figures.verified,
        figures.live_checks,
        figures.known_bugs,
        started.elapsed().as_secs_f64(),
    );
    assert!(figures.synced_acks > 0 && figures.flushes > 0 && figures.compactions > 0);
    assert!(figures.faults_hit > 0, "no injected fault was ever hit");
}

/// The flush thread and the compaction thread each install their edit in
/// two steps: `versions.lock().log_and_apply(edit)` (which returns the new
/// version) and then `*inner.current.write() = version`, with the version
/// set's lock released in between. If the other thread installs in that
/// gap, `current` is left at the older of the two versions: readers miss
/// the newer table (a flushed memtable whose table is not in `current`),
/// and the next compaction, picked from that stale `current`, logs an edit
/// that deletes a table the version set no longer has, which fails
/// ("edit deletes table N from level L, which lacks it") and poisons the
/// database without any I/O fault.
///
/// Repro: many small writes with a 512-byte memtable and a level-0
/// trigger of 2, so flushes and compactions run back to back; every write
/// must succeed and every periodic scan must equal the model.
#[test]
fn flush_and_compaction_installs_never_lose_a_version() {
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    let mut attempts = 0;
    while Instant::now() < deadline {
        attempts += 1;
        let fs = Arc::new(FaultFileSystem::new());
        let db = Db::open(
            DIR,
            Options {
                memtable_bytes_max: 512,
                table_bytes_max: 1024,
                level1_bytes_max: 2048,
                ..options(&fs)
            },
        )
        .unwrap();
        let mut replayer = Replayer::new(attempts);
        for index in 0..3000 {
            let ops = batch_ops(replayer.seed, index);
            if let Err(error) = db.write(to_batch(&ops), &WriteOptions::default()) {
                panic!("attempt {attempts}: write of batch {index} failed with no fault: {error}");
            }
            if index % 25 == 24 {
                let next = check_state(&db, &mut replayer).unwrap_or_else(|problem| {
                    panic!("attempt {attempts}: live state after batch {index}: {problem}")
                });
                assert_eq!(next, index + 1);
            }
        }
        db.close().unwrap();
    }
}

/// After a crash tears the manifest's last edit (a flush or compaction
/// whose output tables were written and synced, the edit naming them
/// not), open keeps the unreferenced tables for inspection, but the next
/// file number it recovers ignores them: a later flush or compaction
/// allocates a number whose `.sst` already exists, `create` fails with
/// "already exists", and the database is poisoned without any fault.
///
/// Repro: a clean database; a partial record appended to its manifest (a
/// torn edit) and table files left with the numbers the interrupted job
/// had taken; reopen, write and flush: every write and flush must succeed.
#[test]
fn torn_manifest_edit_with_orphan_tables_never_reuses_a_file_number() {
    use strata::env::FileSystem;
    let fs = Arc::new(FaultFileSystem::new());
    let mem = fs.inner();
    let db = Db::open(DIR, options(&fs)).unwrap();
    let mut replayer = Replayer::new(7);
    let mut index = 0;
    for _ in 0..200 {
        db.write(
            to_batch(&batch_ops(replayer.seed, index)),
            &WriteOptions { sync: true },
        )
        .unwrap();
        index += 1;
    }
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    db.close().unwrap();
    let dir = std::path::Path::new(DIR);
    let names = mem.list_dir(dir).unwrap();
    let number = |name: &str| {
        strata_format::manifest::parse_table_file_name(name)
            .or_else(|| strata_format::manifest::parse_manifest_file_name(name))
    };
    let highest = names.iter().filter_map(|n| number(n)).max().unwrap();
    let a_table = names
        .iter()
        .find(|n| strata_format::manifest::parse_table_file_name(n).is_some())
        .unwrap();
    let table_bytes = mem.read_file(&dir.join(a_table)).unwrap();
    // The interrupted job's outputs: the next few numbers.
    for n in highest + 1..=highest + 8 {
        mem.write_file(
            &dir.join(strata_format::manifest::table_file_name(n)),
            &table_bytes,
        )
        .unwrap();
    }
    // Its edit, torn: a record header and part of a payload.
    let current = mem.read_file(&dir.join("CURRENT")).unwrap();
    let manifest = dir.join(strata_format::manifest::manifest_file_name(
        strata_format::manifest::parse_current(&current).unwrap(),
    ));
    let mut bytes = mem.read_file(&manifest).unwrap();
    bytes.extend_from_slice(&[0x11, 0x22, 0x33, 0x44, 0x40, 0, 0, 0, 2, 3, 0]);
    mem.write_file(&manifest, &bytes).unwrap();

    let db = Db::open(DIR, options(&fs)).unwrap();
    assert!(db.recovery_report().manifest_torn_tail.is_some());
    assert_eq!(check_state(&db, &mut replayer).unwrap(), index);
    for _ in 0..200 {
        if let Err(error) = db.write(
            to_batch(&batch_ops(replayer.seed, index)),
            &WriteOptions::default(),
        ) {
            panic!("write of batch {index} after reopening a torn manifest: {error}");
        }
        index += 1;
    }
    db.flush().unwrap();
    db.wait_for_compactions().unwrap();
    assert_eq!(check_state(&db, &mut replayer).unwrap(), index);
}
