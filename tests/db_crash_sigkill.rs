//! Real-process SIGKILL torture of the engine (`Db`): flush, compaction,
//! manifest writes and table deletion, not only the commit log.
//!
//! The parent test (`db_sigkill_torture`) re-executes this test binary as
//! a writer child (`db_torture_writer_child`) on a real directory in a
//! tempdir, with tiny options (4 KiB memtables, level-0 trigger 2, 16 KiB
//! level 1, 8 KiB tables and log segments) so that flushes, compactions,
//! manifest edits and file deletions happen every few writes. The child
//! opens the database (recovering whatever is there), reads the special key
//! `__next_batch` to learn where the generator stands, checks the
//! recovered state, then writes generator batches `i, i+1, ...` with
//! `sync: true`, printing `DBT ACK <i> <seq>` after each write returns.
//! Batch `i` is a function of (seed, i) alone: 1 to 6 puts and deletes over
//! 300 keys, values naming (i, op index) with padding, and a put of
//! `__next_batch` = i + 1 in the same batch.
//!
//! The parent kills the child with SIGKILL at a random moment (10% within
//! 5 ms of the spawn, 15% within 3 ms of the child starting to open, the
//! rest 5 to 150 ms after the open), then runs a verifier child
//! (`db_torture_verifier_child`) in a fresh process, which opens the
//! database and checks: open succeeds; `verify_tables()` passes; the whole
//! state (scans both ways and point reads) equals the generator replayed
//! up to the recovered `__next_batch`, with the last sequence number equal
//! to the generator's operation count (no hole, no half batch, no garbage
//! value); and the parent checks that this index is past every
//! acknowledged batch and that every `ACK` carried the generator's sequence
//! number. A fresh directory is started every 20 kills.
//!
//! The writer also splits and merges key ranges every 16 batches; the
//! verifier checks that the ranges tile the keyspace and that their own
//! scans hold every key exactly once.
//!
//! CI runs 100 kills; `STRATA_DB_TORTURE_KILLS=5000` for the long run;
//! `STRATA_DB_TORTURE_SEED` replays the parent's choices.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::{Db, Options, WriteOptions};

const ENV_WRITER_DIR: &str = "STRATA_DB_TORTURE_WRITER_DIR";
const ENV_VERIFY_DIR: &str = "STRATA_DB_TORTURE_VERIFY_DIR";
const ENV_SEED: &str = "STRATA_DB_TORTURE_GENERATOR_SEED";
const KEYS: u64 = 300;
const KILLS_PER_DIR: u64 = 20;
/// A writer child stops after this long (the parent kills it far sooner).
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn options() -> Options {
    Options {
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

use strata_tests::db_gen::{
    DbModel as Model, DbOp as Op, apply_ops, check_db_against, mix, read_next_batch, to_batch,
};
use strata_tests::env_count;

/// Generator batch `index` (its last operation is the `__next_batch` put).
fn batch_ops(seed: u64, index: u64) -> Vec<Op> {
    strata_tests::db_gen::db_batch_ops(seed, index, KEYS, 160)
}

/// The state after generator batches `0..next`, and the operation count
/// (the last sequence number).
fn replay(seed: u64, next: u64) -> (Model, u64) {
    let mut model = Model::new();
    let mut seq = 0;
    for index in 0..next {
        let batch = batch_ops(seed, index);
        seq += batch.len() as u64;
        apply_ops(&mut model, &batch);
    }
    (model, seq)
}

/// The operation count of batches `0..=index` (the sequence number batch
/// `index` must be acknowledged with); `prefix[i]` caches batches `0..i`.
fn ops_through(prefix: &mut Vec<u64>, seed: u64, index: u64) -> u64 {
    while prefix.len() as u64 <= index + 1 {
        let i = prefix.len() as u64 - 1;
        let last = *prefix.last().unwrap();
        prefix.push(last + batch_ops(seed, i).len() as u64);
    }
    prefix[index as usize + 1]
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).unwrap().parse().unwrap()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("DBT {line}\n").as_bytes()).unwrap();
    out.flush().unwrap();
}

/// Checks the open database against the generator; returns the recovered
/// next batch index, or what is wrong.
fn check_state(db: &Db, seed: u64) -> Result<u64, String> {
    let next = read_next_batch(db)?;
    let (model, ops) = replay(seed, next);
    check_db_against(db, &model, ops, next, KEYS, 1)?;
    Ok(next)
}

/// The range map tiles the keyspace and the ranges' own scans hold every
/// key exactly once.
fn check_ranges(db: &Db) -> Result<(), String> {
    let ranges = db.ranges();
    if ranges.first().is_none_or(|r| !r.start.is_empty()) {
        return Err("the first range does not start at the empty key".into());
    }
    let mut keys = 0;
    for (i, range) in ranges.iter().enumerate() {
        let next_start = ranges.get(i + 1).map(|r| r.start.clone());
        if range.end != next_start {
            return Err(format!(
                "{} ends at {:?} but the next range starts at {next_start:?}",
                range.id, range.end
            ));
        }
        let end = range
            .end
            .as_deref()
            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        keys += db
            .scan((std::ops::Bound::Included(range.start.as_slice()), end))
            .map_err(|e| e.to_string())?
            .count();
    }
    let all = db.scan(..).map_err(|e| e.to_string())?.count();
    if keys != all {
        return Err(format!(
            "the ranges' scans hold {keys} keys, the whole scan {all}"
        ));
    }
    Ok(())
}

/// The writer child. Does nothing unless started by `db_sigkill_torture`.
#[test]
fn db_torture_writer_child() {
    let Ok(dir) = std::env::var(ENV_WRITER_DIR) else {
        return;
    };
    let seed = env_u64(ENV_SEED);
    say("OPENING");
    let db = match Db::open(&dir, options()) {
        Ok(db) => db,
        Err(error) => {
            say(&format!("BAD open failed: {error}"));
            std::process::exit(3);
        }
    };
    let mut next = match check_state(&db, seed) {
        Ok(next) => next,
        Err(problem) => {
            say(&format!("BAD at open: {problem}"));
            std::process::exit(3);
        }
    };
    say(&format!("OPENED {next}"));
    let deadline = Instant::now() + CHILD_LIFETIME;
    while Instant::now() < deadline {
        let ops = batch_ops(seed, next);
        match db.write(to_batch(&ops), &WriteOptions { sync: true }) {
            Ok(seq) => say(&format!("ACK {next} {}", seq.get())),
            Err(error) => {
                say(&format!("BAD write of batch {next} failed: {error}"));
                std::process::exit(4);
            }
        }
        next += 1;
        // Key ranges change under the kills too: a split at a generator
        // key, or a merge once there are several ranges.
        if next % 16 == 0 {
            let ranges = db.ranges();
            let pick = mix(seed, next);
            let changed = if ranges.len() > 6 {
                let i = (pick as usize) % (ranges.len() - 1);
                db.merge_ranges(ranges[i].id, ranges[i + 1].id).map(|_| ())
            } else {
                let at = format!("key{:04}", pick % KEYS);
                match db.split_range(at.as_bytes()) {
                    Err(strata::Error::InvalidArgument(_)) => Ok(()), // already a start
                    other => other.map(|_| ()),
                }
            };
            if let Err(error) = changed {
                say(&format!(
                    "BAD range change after batch {next} failed: {error}"
                ));
                std::process::exit(4);
            }
        }
        if next % 8 == 0 {
            let stats = db.stats();
            say(&format!("STATS {} {}", stats.flushes, stats.compactions));
        }
    }
    say("TIMEOUT");
    std::process::exit(5);
}

/// The verifier child. Does nothing unless started by `db_sigkill_torture`.
#[test]
fn db_torture_verifier_child() {
    let Ok(dir) = std::env::var(ENV_VERIFY_DIR) else {
        return;
    };
    let seed = env_u64(ENV_SEED);
    let db = match Db::open(&dir, options()) {
        Ok(db) => db,
        Err(error) => {
            say(&format!("BAD open failed: {error}"));
            return;
        }
    };
    let tables = match db.verify_tables() {
        Ok(tables) => tables,
        Err(error) => {
            say(&format!("BAD verify_tables: {error}"));
            return;
        }
    };
    if let Err(problem) = check_ranges(&db) {
        say(&format!("BAD {problem}"));
        return;
    }
    match check_state(&db, seed) {
        Ok(next) => {
            let stats = db.stats();
            let torn = u8::from(db.recovery_report().torn_tail.is_some());
            say(&format!(
                "VERIFIED {next} {tables} {} {torn}",
                stats.level_tables.iter().skip(1).sum::<u64>()
            ));
        }
        Err(problem) => say(&format!("BAD {problem}")),
    }
    // Dropped without close (no flush): the next writer replays the log.
    drop(db);
}

#[derive(Debug)]
enum Event {
    Opening,
    Opened(u64),
    Ack(u64, u64),
    Stats(u64, u64),
    Verified {
        next: u64,
        tables: u64,
        deep_tables: u64,
        torn: bool,
    },
    Bad(String),
    Eof,
}

fn parse(line: &str) -> Option<Event> {
    let text = line.trim_end().split_once("DBT ")?.1;
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    let nums = || -> Vec<u64> { rest.split(' ').map(|f| f.parse().unwrap()).collect() };
    Some(match word {
        "OPENING" => Event::Opening,
        "OPENED" => Event::Opened(nums()[0]),
        "ACK" => {
            let n = nums();
            Event::Ack(n[0], n[1])
        }
        "STATS" => {
            let n = nums();
            Event::Stats(n[0], n[1])
        }
        "VERIFIED" => {
            let n = nums();
            Event::Verified {
                next: n[0],
                tables: n[1],
                deep_tables: n[2],
                torn: n[3] == 1,
            }
        }
        "BAD" => Event::Bad(rest.to_string()),
        _ => return None,
    })
}

/// Spawns this test binary running only `test`; complete stdout lines
/// arrive as events (a line cut by the kill is not an acknowledgement).
fn spawn_child(test: &str, envs: &[(&str, String)], stderr: &Path) -> (Child, Receiver<Event>) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(stderr).unwrap());
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if !line.ends_with('\n') => break,
                Ok(_) => {
                    if let Some(event) = parse(&line)
                        && sender.send(event).is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sender.send(Event::Eof);
    });
    (child, receiver)
}

fn stderr_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let start = text.len().saturating_sub(3000);
    text.get(start..).unwrap_or_default().to_string()
}

/// When to kill a writer child.
#[derive(Debug, Clone, Copy)]
#[allow(
    clippy::enum_variant_names,
    reason = "the kill moment reads best as After..."
)]
enum KillAt {
    AfterSpawn(Duration),
    AfterOpening(Duration),
    AfterOpened(Duration),
}

#[derive(Default)]
struct Figures {
    kills: u64,
    kills_before_open: u64,
    kills_during_open: u64,
    kills_while_writing: u64,
    acked: u64,
    verified: u64,
    batches_verified: u64,
    flushes: u64,
    compactions: u64,
    max_tables: u64,
    max_deep_tables: u64,
    torn_tails: u64,
    known_creation_crash: u64,
    known_writer_bug: u64,
    directories: u64,
}

/// What one writer round saw.
#[derive(Default)]
struct Round {
    opened: Option<u64>,
    acks: Vec<(u64, u64)>,
    stats: (u64, u64),
    problems: Vec<String>,
}

impl Round {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Opened(next) => self.opened = Some(next),
            Event::Ack(index, seq) => self.acks.push((index, seq)),
            Event::Stats(flushes, compactions) => self.stats = (flushes, compactions),
            Event::Bad(text) => self.problems.push(text),
            Event::Eof => self
                .problems
                .push("the writer exited before it was killed".into()),
            Event::Opening | Event::Verified { .. } => {}
        }
    }
}

fn writer_round(dir: &Path, stderr: &Path, seed: u64, kill_at: KillAt) -> Round {
    let (mut child, events) = spawn_child(
        "db_torture_writer_child",
        &[
            (ENV_WRITER_DIR, dir.display().to_string()),
            (ENV_SEED, seed.to_string()),
        ],
        stderr,
    );
    let spawned = Instant::now();
    let mut round = Round::default();
    let mut kill_time = match kill_at {
        KillAt::AfterSpawn(delay) => Some(spawned + delay),
        _ => None,
    };
    let give_up = spawned + Duration::from_secs(60);
    loop {
        let now = Instant::now();
        if kill_time.is_some_and(|at| now >= at) {
            break;
        }
        if now >= give_up {
            round.problems.push("no kill moment within 60 s".into());
            break;
        }
        let wait = kill_time.unwrap_or(give_up).saturating_duration_since(now);
        match events.recv_timeout(wait) {
            Ok(event) => {
                match (&event, kill_at) {
                    (Event::Opening, KillAt::AfterOpening(delay))
                    | (Event::Opened(_), KillAt::AfterOpened(delay)) => {
                        kill_time = Some(Instant::now() + delay);
                    }
                    _ => {}
                }
                let eof = matches!(event, Event::Eof);
                round.handle(event);
                if eof {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill(); // SIGKILL
    let status = child.wait().unwrap();
    for event in events.iter() {
        if !matches!(event, Event::Eof) {
            round.handle(event);
        }
    }
    if status.signal() != Some(9) {
        round
            .problems
            .push(format!("the writer was not killed by SIGKILL: {status}"));
    }
    if !round.problems.is_empty() {
        round
            .problems
            .push(format!("writer stderr ends with:\n{}", stderr_tail(stderr)));
    }
    round
}

/// Runs the verifier child; returns (next, tables, deep tables, torn) or
/// the problem.
fn verify_round(dir: &Path, stderr: &Path, seed: u64) -> Result<(u64, u64, u64, bool), String> {
    let (mut child, events) = spawn_child(
        "db_torture_verifier_child",
        &[
            (ENV_VERIFY_DIR, dir.display().to_string()),
            (ENV_SEED, seed.to_string()),
        ],
        stderr,
    );
    let status = child.wait().unwrap();
    let mut verified = None;
    let mut problems = Vec::new();
    for event in events.iter() {
        match event {
            Event::Verified {
                next,
                tables,
                deep_tables,
                torn,
            } => verified = Some((next, tables, deep_tables, torn)),
            Event::Bad(text) => problems.push(text),
            Event::Eof => break,
            _ => {}
        }
    }
    match verified {
        Some(v) if problems.is_empty() && status.success() => Ok(v),
        _ => Err(format!(
            "verifier ({status}): {}; stderr ends with:\n{}",
            problems.join("; "),
            stderr_tail(stderr)
        )),
    }
}

/// The (fixed) bug of `crash_during_creation_leaves_an_openable_database`:
/// a kill during the very first open (after `MANIFEST-000001` is written,
/// before `CURRENT` names it) left a directory no open accepted. It fails
/// the run unless `STRATA_DB_TORTURE_LENIENT` is set (a diagnostic switch
/// to count such hits and abandon the directory).
fn known_creation_crash(problem: &str, last_acked: Option<u64>, recovered_next: u64) -> bool {
    std::env::var_os("STRATA_DB_TORTURE_LENIENT").is_some()
        && last_acked.is_none()
        && recovered_next == 0
        && problem.contains("CURRENT is missing but the directory holds MANIFEST-")
}

/// A writer whose write failed with the background error of a known bug
/// (see `db_power_loss.rs`: the flush/compaction install race, "which lacks
/// it", and a file number reused after a torn manifest edit, "already
/// exists"), both fixed: they fail the run unless `STRATA_DB_TORTURE_LENIENT`
/// is set; the directory is verified as after any kill.
fn known_writer_bug(problem: &str) -> bool {
    std::env::var_os("STRATA_DB_TORTURE_LENIENT").is_some()
        && problem.contains("write of batch")
        && (problem.contains("which lacks it") || problem.contains(".sst: already exists"))
}

#[test]
fn db_sigkill_torture() {
    if std::env::var(ENV_WRITER_DIR).is_ok() || std::env::var(ENV_VERIFY_DIR).is_ok() {
        return; // a child process: only its own test runs
    }
    let kills = env_count("STRATA_DB_TORTURE_KILLS", 100);
    let seed = std::env::var("STRATA_DB_TORTURE_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let mut rng = SmallRng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut figures = Figures::default();
    let mut failures: Vec<String> = Vec::new();
    let mut epoch = 0u64;
    while figures.kills < kills && failures.is_empty() {
        epoch += 1;
        figures.directories += 1;
        let epoch_dir = root.path().join(format!("epoch-{epoch}"));
        std::fs::create_dir_all(&epoch_dir).unwrap();
        let dir = epoch_dir.join("db");
        let stderr = epoch_dir.join("child-stderr");
        let generator_seed = mix(seed, epoch);
        let mut last_acked: Option<u64> = None;
        let mut ops_prefix: Vec<u64> = vec![0];
        let mut recovered_next = 0u64;
        for round_index in 0..KILLS_PER_DIR.min(kills - figures.kills) {
            let context =
                format!("STRATA_DB_TORTURE_SEED={seed:#x} directory {epoch} kill {round_index}");
            let choice = rng.random_range(0..100);
            let kill_at = if choice < 10 {
                KillAt::AfterSpawn(Duration::from_micros(rng.random_range(0..5000)))
            } else if choice < 25 {
                KillAt::AfterOpening(Duration::from_micros(rng.random_range(0..3000)))
            } else {
                KillAt::AfterOpened(Duration::from_millis(rng.random_range(5..=150)))
            };
            let mut round = writer_round(&dir, &stderr, generator_seed, kill_at);
            figures.kills += 1;
            figures.acked += round.acks.len() as u64;
            figures.flushes += round.stats.0;
            figures.compactions += round.stats.1;
            match (kill_at, round.opened) {
                (KillAt::AfterSpawn(_), None) => figures.kills_before_open += 1,
                (KillAt::AfterOpening(_), _) => figures.kills_during_open += 1,
                _ => figures.kills_while_writing += 1,
            }
            if !round.problems.is_empty() && known_writer_bug(&round.problems.join("; ")) {
                // The writer stopped itself; its directory is still checked.
                figures.known_writer_bug += 1;
                round.problems.clear();
            }
            if !round.problems.is_empty() {
                if known_creation_crash(&round.problems.join("; "), last_acked, recovered_next) {
                    figures.known_creation_crash += 1;
                    break; // the directory is unusable: start a fresh one
                }
                failures.push(format!(
                    "{context} ({kill_at:?}): {}",
                    round.problems.join("; ")
                ));
                break;
            }
            // The writer's own view at open must not go back either.
            if let Some(opened) = round.opened
                && opened < recovered_next
            {
                failures.push(format!(
                    "{context}: the writer recovered batch index {opened}, below the {recovered_next} verified before"
                ));
                break;
            }
            // Each ACK carries the generator's sequence number.
            for &(index, seq) in &round.acks {
                let ops = ops_through(&mut ops_prefix, generator_seed, index);
                if seq != ops {
                    failures.push(format!(
                        "{context}: batch {index} acknowledged with seq {seq}, generator says {ops}"
                    ));
                }
                last_acked = Some(last_acked.map_or(index, |l: u64| l.max(index)));
            }
            match verify_round(&dir, &stderr, generator_seed) {
                Ok((next, tables, deep, torn)) => {
                    figures.verified += 1;
                    figures.batches_verified += next;
                    figures.max_tables = figures.max_tables.max(tables);
                    figures.max_deep_tables = figures.max_deep_tables.max(deep);
                    figures.torn_tails += u64::from(torn);
                    if let Some(acked) = last_acked
                        && next < acked + 1
                    {
                        failures.push(format!(
                            "{context}: acknowledged batch {acked} lost (recovered next batch {next})"
                        ));
                    }
                    recovered_next = next;
                }
                Err(problem) if known_creation_crash(&problem, last_acked, recovered_next) => {
                    figures.known_creation_crash += 1;
                    break; // the directory is unusable: start a fresh one
                }
                Err(problem) => failures.push(format!("{context}: {problem}")),
            }
            if !failures.is_empty() {
                break;
            }
        }
        if failures.is_empty() {
            let _ = std::fs::remove_dir_all(&epoch_dir);
        } else {
            // Keep the evidence.
            let kept = std::env::temp_dir().join(format!("strata-db-torture-{seed:x}"));
            let _ = std::fs::rename(&epoch_dir, &kept);
            failures.push(format!("directory kept at {}", kept.display()));
        }
    }
    println!(
        "db sigkill torture: seed={seed:#x} kills={} (before open {}, during open {}, while writing {}) directories={} acked={} verified={} (batches replayed and checked {}) flushes_observed={} compactions_observed={} max_tables={} max_tables_below_l0={} torn_log_tails={} known_creation_crash_hits={} known_background_bug_hits={} wall={:.1}s",
        figures.kills,
        figures.kills_before_open,
        figures.kills_during_open,
        figures.kills_while_writing,
        figures.directories,
        figures.acked,
        figures.verified,
        figures.batches_verified,
        figures.flushes,
        figures.compactions,
        figures.max_tables,
        figures.max_deep_tables,
        figures.torn_tails,
        figures.known_creation_crash,
        figures.known_writer_bug,
        started.elapsed().as_secs_f64(),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!(
        "db sigkill torture: 0 acknowledged writes lost, 0 state mismatches, 0 failed reopens besides {} known creation-crash hits",
        figures.known_creation_crash
    );
    assert!(figures.acked > 0, "no acknowledgement in the whole run");
    assert!(
        figures.flushes > 0,
        "no flush observed: the kills never hit one"
    );
    assert_eq!(
        figures.verified + figures.known_creation_crash,
        figures.kills
    );
}

/// A crash (a SIGKILL, or an I/O error that aborts the open) during the
/// first open of a new database must leave a directory that the next open
/// accepts. Found by `db_sigkill_torture` (a kill during the first open):
/// the creating open writes `IDENTITY`, the log, and `MANIFEST-000001`
/// before `CURRENT`; killed in between, every later open fails with
/// "CURRENT is missing but the directory holds MANIFEST-000001; refusing to
/// guess which state is live", so the database can never be opened again.
///
/// Repro here, in process: the `k`th file open of the creating `Db::open`
/// fails (the process "dies" there, nothing is lost, as with SIGKILL on a
/// real file system); then an open with no faults must succeed.
#[test]
fn crash_during_creation_leaves_an_openable_database() {
    use std::sync::Arc;
    use strata::env::{FaultFileSystem, FaultPlan};
    let mut refused = Vec::new();
    for k in 0..40 {
        let fs = Arc::new(FaultFileSystem::new());
        fs.set_plan(FaultPlan {
            fail_open_at: Some(k),
            ..FaultPlan::default()
        });
        let first = Db::open(
            "db",
            Options {
                file_system: fs.clone(),
                ..options()
            },
        );
        let failed = first.is_err();
        drop(first);
        fs.set_plan(FaultPlan::default());
        match Db::open(
            "db",
            Options {
                file_system: fs.clone(),
                ..options()
            },
        ) {
            Ok(db) => {
                db.put(b"k", b"v").unwrap();
                db.close().unwrap();
            }
            Err(error) => refused.push(format!(
                "open {k} failed (first open failed: {failed}); reopen: {error}"
            )),
        }
    }
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
