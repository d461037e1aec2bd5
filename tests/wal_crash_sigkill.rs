//! Real-process SIGKILL torture of the commit log.
//!
//! The parent test (`sigkill_torture`) re-executes this test binary as a
//! writer child (`torture_writer_child`), which opens the log on the real
//! file system in a temporary directory (64 KiB segments, so rotations
//! happen), verifies everything recovered so far, and appends generated
//! batches from 1 to 4 threads (one generator stream per thread), some
//! `sync: true` and some `sync: false`. After each `sync: true` append
//! returns `Ok` it prints `TORTURE ACK <last_seq> <stream> <index>` (one
//! flushed line). The parent reads those lines and kills the child with
//! SIGKILL at a random moment: sometimes within 5 ms of the spawn, sometimes
//! within 3 ms of the child starting to open the log (to hit recovery),
//! mostly 5 to 80 ms after the open. Every child reopens the same directory
//! and continues where the recovered log ends, so recovery of recovered
//! logs is exercised; a fresh directory is started every
//! `STRATA_TORTURE_KILLS_PER_DIR` kills (default 20) to bound the replay
//! cost.
//!
//! Verification happens in fresh processes: after most kills (and always at
//! the end of a directory) the parent runs a verifier child
//! (`torture_verifier_child`), and every writer child verifies at open too.
//! Both open the log, replay it from seq 1 and check it with
//! `strata_tests::verify_log` against every acknowledgement the parent has
//! collected so far: every acknowledged batch present, whole and identical
//! to the generator's, at the seqs it was acknowledged with; each stream's
//! batches in order with no hole or duplicate; no value the generator did
//! not write; seqs dense from 1.
//!
//! CI runs 100 kills; `STRATA_TORTURE_KILLS=5000` for the long run;
//! `STRATA_TORTURE_SEED` replays the parent's choices.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::RealFileSystem;
use strata::wal::WalOptions;
use strata_tests::{
    Ack, BatchId, Generator, Tally, Violation, ViolationKind, append_batch, env_count,
    open_and_verify, sub_seed, torture_seed,
};

const ENV_WRITER_DIR: &str = "STRATA_TORTURE_CHILD_DIR";
const ENV_VERIFY_DIR: &str = "STRATA_TORTURE_VERIFY_DIR";
const ENV_GENERATOR_SEED: &str = "STRATA_TORTURE_GENERATOR_SEED";
const ENV_ROUND_SEED: &str = "STRATA_TORTURE_ROUND_SEED";
const ENV_ACKS: &str = "STRATA_TORTURE_ACKS";

/// A writer child gives up after this long (the parent kills it far
/// sooner); it keeps an orphan from writing forever.
const CHILD_LIFETIME: Duration = Duration::from_secs(20);

fn options() -> WalOptions {
    WalOptions {
        segment_bytes_max: 64 << 10,
        ..WalOptions::default()
    }
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).unwrap().parse().unwrap()
}

/// One line of the child protocol, written in one `write` and flushed.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("TORTURE {line}\n").as_bytes())
        .unwrap();
    out.flush().unwrap();
}

fn read_acks(path: &Path) -> Vec<Ack> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let fields: Vec<u64> = line.split(' ').map(|f| f.parse().unwrap()).collect();
            Ack {
                last_seq: fields[0],
                id: BatchId {
                    stream: u32::try_from(fields[1]).unwrap(),
                    index: fields[2],
                },
            }
        })
        .collect()
}

fn write_acks(path: &Path, acks: &[Ack]) {
    let text: String = acks
        .iter()
        .map(|ack| format!("{} {} {}\n", ack.last_seq, ack.id.stream, ack.id.index))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// The writer child. Does nothing unless started by `sigkill_torture`.
#[test]
fn torture_writer_child() {
    let Ok(dir) = std::env::var(ENV_WRITER_DIR) else {
        return;
    };
    let generator = Generator::new(env_u64(ENV_GENERATOR_SEED));
    let mut rng = SmallRng::seed_from_u64(env_u64(ENV_ROUND_SEED));
    let acked = read_acks(Path::new(&std::env::var(ENV_ACKS).unwrap()));
    say("OPENING");
    let opened = open_and_verify(
        Arc::new(RealFileSystem),
        Path::new(&dir),
        options(),
        &generator,
        &acked,
    );
    let (wal, report, verified) = match opened {
        Ok(opened) => opened,
        Err(violation) => {
            say(&format!("BAD {:?} {}", violation.kind, violation.detail));
            std::process::exit(3);
        }
    };
    say(&format!(
        "OPENED batches={} next_seq={} torn={}",
        verified.batches,
        verified.next_seq,
        u8::from(report.torn_tail.is_some())
    ));
    let threads: u32 = if rng.random_bool(0.5) {
        1
    } else {
        rng.random_range(2..=4)
    };
    let sync_probability = [0.3, 0.7, 1.0][rng.random_range(0..3)];
    let deadline = Instant::now() + CHILD_LIFETIME;
    std::thread::scope(|scope| {
        for stream in 0..threads {
            let start = verified.next_id(stream);
            let seed = rng.random();
            let (wal, generator) = (&wal, &generator);
            scope.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed);
                let mut index = start.index;
                while Instant::now() < deadline {
                    let batch = generator.batch(BatchId { stream, index });
                    let sync = rng.random_bool(sync_probability);
                    match append_batch(wal, &batch, sync) {
                        Ok(commit) if sync => {
                            say(&format!("ACK {} {stream} {index}", commit.last_seq.get()))
                        }
                        Ok(_) => {}
                        Err(error) => {
                            say(&format!("BAD append failed: {error}"));
                            std::process::exit(4);
                        }
                    }
                    index += 1;
                }
            });
        }
    });
    say("TIMEOUT");
    std::process::exit(5);
}

/// The verifier child. Does nothing unless started by `sigkill_torture`.
#[test]
fn torture_verifier_child() {
    let Ok(dir) = std::env::var(ENV_VERIFY_DIR) else {
        return;
    };
    let generator = Generator::new(env_u64(ENV_GENERATOR_SEED));
    let acked = read_acks(Path::new(&std::env::var(ENV_ACKS).unwrap()));
    match open_and_verify(
        Arc::new(RealFileSystem),
        Path::new(&dir),
        options(),
        &generator,
        &acked,
    ) {
        Ok((wal, report, verified)) => {
            wal.close().unwrap();
            say(&format!(
                "VERIFIED batches={} next_seq={} acked={} torn={}",
                verified.batches,
                verified.next_seq,
                acked.len(),
                u8::from(report.torn_tail.is_some())
            ));
        }
        Err(violation) => say(&format!("BAD {:?} {}", violation.kind, violation.detail)),
    }
}

/// A line from a child.
#[derive(Debug)]
enum Event {
    Opening,
    Opened { torn: bool },
    Ack(Ack),
    Verified { batches: u64, torn: bool },
    Bad(String),
    Other,
    Eof,
}

fn field(text: &str, name: &str) -> u64 {
    text.split(' ')
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .unwrap()
        .parse()
        .unwrap()
}

fn parse(line: &str) -> Option<Event> {
    let line = line.trim_end();
    let at = line.find("TORTURE ")?;
    let text = &line[at + "TORTURE ".len()..];
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    Some(match word {
        "OPENING" => Event::Opening,
        "OPENED" => Event::Opened {
            torn: field(rest, "torn") == 1,
        },
        "ACK" => {
            let fields: Vec<u64> = rest.split(' ').map(|f| f.parse().unwrap()).collect();
            Event::Ack(Ack {
                last_seq: fields[0],
                id: BatchId {
                    stream: u32::try_from(fields[1]).unwrap(),
                    index: fields[2],
                },
            })
        }
        "VERIFIED" => Event::Verified {
            batches: field(rest, "batches"),
            torn: field(rest, "torn") == 1,
        },
        "BAD" => Event::Bad(rest.to_string()),
        _ => Event::Other,
    })
}

/// Spawns this test binary running only `test`, with `envs`; its stdout
/// lines arrive as events on the returned channel (complete lines only: a
/// line cut by the kill is not an acknowledgement).
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

fn stderr_of(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text.chars()
        .rev()
        .take(3000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

/// The violation kind a child reported (`BAD <Kind> ...`), else a failed
/// reopen (the child could not do its job).
fn kind_of(problems: &[String]) -> ViolationKind {
    ViolationKind::ALL
        .iter()
        .find(|kind| {
            problems
                .iter()
                .any(|p| p.starts_with(&format!("{kind:?} ")))
        })
        .copied()
        .unwrap_or(ViolationKind::FailedReopen)
}

/// What a writer round collected from its child.
#[derive(Default)]
struct RoundState {
    acks: Vec<Ack>,
    problems: Vec<String>,
    opened: bool,
}

impl RoundState {
    fn handle(&mut self, event: Event, figures: &mut Figures) {
        match event {
            Event::Ack(ack) => self.acks.push(ack),
            Event::Opened { torn } => {
                self.opened = true;
                figures.writer_open_verifications += 1;
                if torn {
                    figures.torn_tails_repaired += 1;
                }
            }
            Event::Bad(text) => self.problems.push(text),
            Event::Eof => self
                .problems
                .push("the writer exited before it was killed".into()),
            Event::Opening | Event::Verified { .. } | Event::Other => {}
        }
    }
}

#[derive(Default)]
struct Figures {
    kills: u64,
    kills_before_open: u64,
    kills_during_open: u64,
    kills_while_writing: u64,
    directories: u64,
    acked: u64,
    verifier_runs: u64,
    writer_open_verifications: u64,
    recovered_batches_verified: u64,
    torn_tails_repaired: u64,
}

/// When to kill a writer child.
#[derive(Debug, Clone, Copy)]
#[allow(
    clippy::enum_variant_names,
    reason = "the kill moment reads best as After..."
)]
enum KillAt {
    /// This long after the spawn, whatever the child is doing.
    AfterSpawn(Duration),
    /// This long after it printed OPENING (recovery in progress).
    AfterOpening(Duration),
    /// This long after it printed OPENED (writing).
    AfterOpened(Duration),
}

/// Runs one writer child until the kill; returns its acks, or a violation.
fn writer_round(
    dir: &Path,
    acks_file: &Path,
    stderr: &Path,
    generator_seed: u64,
    round_seed: u64,
    kill_at: KillAt,
    figures: &mut Figures,
) -> Result<Vec<Ack>, Violation> {
    let (mut child, events) = spawn_child(
        "torture_writer_child",
        &[
            (ENV_WRITER_DIR, dir.display().to_string()),
            (ENV_GENERATOR_SEED, generator_seed.to_string()),
            (ENV_ROUND_SEED, round_seed.to_string()),
            (ENV_ACKS, acks_file.display().to_string()),
        ],
        stderr,
    );
    let spawned = Instant::now();
    let mut state = RoundState::default();
    let (mut trigger, mut kill_time): (Option<&str>, Option<Instant>) = match kill_at {
        KillAt::AfterSpawn(delay) => (None, Some(spawned + delay)),
        KillAt::AfterOpening(_) => (Some("OPENING"), None),
        KillAt::AfterOpened(_) => (Some("OPENED"), None),
    };
    let give_up = spawned + Duration::from_secs(60);
    // Wait for the moment, handling events meanwhile.
    loop {
        let now = Instant::now();
        if kill_time.is_some_and(|at| now >= at) {
            break;
        }
        if now >= give_up {
            state.problems.push(format!("no {trigger:?} within 60 s"));
            break;
        }
        let wait = kill_time.unwrap_or(give_up).saturating_duration_since(now);
        match events.recv_timeout(wait) {
            Ok(event) => {
                let is_trigger = matches!(
                    (&event, trigger),
                    (Event::Opening, Some("OPENING")) | (Event::Opened { .. }, Some("OPENED"))
                );
                let eof = matches!(event, Event::Eof);
                state.handle(event, figures);
                if is_trigger {
                    let delay = match kill_at {
                        KillAt::AfterOpening(delay) | KillAt::AfterOpened(delay) => delay,
                        KillAt::AfterSpawn(_) => Duration::ZERO,
                    };
                    kill_time = Some(Instant::now() + delay);
                    trigger = None;
                }
                if eof {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    // Collect what the child printed before it died.
    for event in events.iter() {
        if !matches!(event, Event::Eof) {
            state.handle(event, figures);
        }
    }
    figures.acked += state.acks.len() as u64;
    if status.signal() != Some(9) {
        state
            .problems
            .push(format!("the writer was not killed by SIGKILL: {status}"));
    }
    if !state.problems.is_empty() {
        return Err(Violation::new(
            kind_of(&state.problems),
            format!(
                "writer child (kill {kill_at:?}): {}; its stderr ends with:\n{}",
                state.problems.join("; "),
                stderr_of(stderr)
            ),
        ));
    }
    match kill_at {
        KillAt::AfterSpawn(_) if !state.opened => figures.kills_before_open += 1,
        KillAt::AfterOpening(_) => figures.kills_during_open += 1,
        _ => figures.kills_while_writing += 1,
    }
    figures.kills += 1;
    Ok(state.acks)
}

/// Runs the verifier child on `dir`.
fn verify_round(
    dir: &Path,
    acks_file: &Path,
    stderr: &Path,
    generator_seed: u64,
    figures: &mut Figures,
) -> Result<(), Violation> {
    let (mut child, events) = spawn_child(
        "torture_verifier_child",
        &[
            (ENV_VERIFY_DIR, dir.display().to_string()),
            (ENV_GENERATOR_SEED, generator_seed.to_string()),
            (ENV_ACKS, acks_file.display().to_string()),
        ],
        stderr,
    );
    let status = child.wait().unwrap();
    let mut verified = None;
    let mut problems = Vec::new();
    for event in events.iter() {
        match event {
            Event::Verified { batches, torn } => verified = Some((batches, torn)),
            Event::Bad(text) => problems.push(text),
            Event::Eof => break,
            _ => {}
        }
    }
    match verified {
        Some((batches, torn)) if problems.is_empty() && status.success() => {
            figures.verifier_runs += 1;
            figures.recovered_batches_verified += batches;
            if torn {
                figures.torn_tails_repaired += 1;
            }
            Ok(())
        }
        _ => Err(Violation::new(
            kind_of(&problems),
            format!(
                "verifier child ({status}): {}; its stderr ends with:\n{}",
                problems.join("; "),
                stderr_of(stderr)
            ),
        )),
    }
}

#[test]
fn sigkill_torture() {
    if std::env::var(ENV_WRITER_DIR).is_ok() || std::env::var(ENV_VERIFY_DIR).is_ok() {
        return; // a child process: only its own test runs
    }
    let kills = env_count("STRATA_TORTURE_KILLS", 100);
    let per_dir = env_count("STRATA_TORTURE_KILLS_PER_DIR", 20).max(1);
    let seed = torture_seed();
    let mut rng = SmallRng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut figures = Figures::default();
    let mut tally = Tally::new();
    let mut epoch = 0u64;
    while figures.kills < kills {
        epoch += 1;
        figures.directories += 1;
        let epoch_dir: PathBuf = root.path().join(format!("epoch-{epoch}"));
        std::fs::create_dir_all(&epoch_dir).unwrap();
        let dir = epoch_dir.join("wal");
        let acks_file = epoch_dir.join("acks");
        let stderr = epoch_dir.join("child-stderr");
        let generator_seed = sub_seed(seed, epoch);
        let mut acked: Vec<Ack> = Vec::new();
        let rounds = per_dir.min(kills - figures.kills);
        let mut broken = false;
        for round in 0..rounds {
            let context = format!(
                "seed {seed:#x} directory {epoch} kill {round} (STRATA_TORTURE_SEED={seed:#x})"
            );
            write_acks(&acks_file, &acked);
            let choice = rng.random_range(0..100);
            let kill_at = if choice < 10 {
                KillAt::AfterSpawn(Duration::from_micros(rng.random_range(0..5000)))
            } else if choice < 25 {
                KillAt::AfterOpening(Duration::from_micros(rng.random_range(0..3000)))
            } else {
                KillAt::AfterOpened(Duration::from_millis(rng.random_range(5..=80)))
            };
            match writer_round(
                &dir,
                &acks_file,
                &stderr,
                generator_seed,
                rng.random(),
                kill_at,
                &mut figures,
            ) {
                Ok(acks) => acked.extend(acks),
                Err(violation) => {
                    tally.record(&violation, &context);
                    broken = true;
                    break;
                }
            }
            let last = round + 1 == rounds;
            if last || rng.random_bool(0.5) {
                write_acks(&acks_file, &acked);
                if let Err(violation) =
                    verify_round(&dir, &acks_file, &stderr, generator_seed, &mut figures)
                {
                    tally.record(&violation, &context);
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            // Keep going in a fresh directory; the tally fails the test.
            figures.kills += 1;
        }
        let _ = std::fs::remove_dir_all(&epoch_dir);
    }
    println!(
        "sigkill torture: seed={seed:#x} kills={} (before open {}, during open {}, while writing {}) directories={} acked={} verifier_runs={} (batches verified {}) writer_open_verifications={} torn_tails_repaired={} {} wall={:.1}s",
        figures.kills,
        figures.kills_before_open,
        figures.kills_during_open,
        figures.kills_while_writing,
        figures.directories,
        figures.acked,
        figures.verifier_runs,
        figures.recovered_batches_verified,
        figures.writer_open_verifications,
        figures.torn_tails_repaired,
        tally.figures(),
        started.elapsed().as_secs_f64(),
    );
    tally.assert_clean();
    assert!(figures.acked > 0, "no acknowledgement in the whole run");
    assert!(figures.verifier_runs > 0);
}
