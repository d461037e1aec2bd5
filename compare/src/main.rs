//! `compare`: db_bench-style workloads on Strata, fjall, redb and (with the
//! `rocksdb` feature) RocksDB, in one process, so engines are compared
//! within one run. Keys are 16 bytes (the index as 16 decimal digits),
//! values 100 random (incompressible) bytes. Each workload of each engine
//! runs in a fresh directory under `--dir`, removed afterwards.
//!
//! ```text
//! cargo run --release -- --engines strata,fjall,redb --workloads fillrandom,readrandom --keys 200000
//! ```
//!
//! Prints a markdown table (workload × engine) and the same figures as CSV
//! on stdout; progress goes to stderr. See docs/benchmarks.md.

mod engines;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use engines::{Engine, Result};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};

const VALUE_BYTES: usize = 100;
const KEY_BYTES: usize = 16;

const WORKLOADS: &[&str] = &[
    "fillseq",
    "fillrandom",
    "overwrite",
    "readrandom",
    "readwhilewriting",
    "scan",
    "batch_sync",
    "sync_writers_1",
    "sync_writers_4",
    "sync_writers_16",
    "recovery",
];

#[derive(Parser, Debug, Clone)]
#[command(about = "db_bench-style workloads on Strata and its peers")]
struct Args {
    /// Engines, comma-separated: strata, fjall, redb, rocksdb,
    /// rocksdb-tuned (the last two need the `rocksdb` feature).
    #[arg(long, value_delimiter = ',', default_value = "strata,fjall,redb")]
    engines: Vec<String>,
    /// Workloads, comma-separated, or `all`. `sync_writers` stands for
    /// sync_writers_1,sync_writers_4,sync_writers_16.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    workloads: Vec<String>,
    /// Keys in the data set.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Overwrite puts per key of the data set (the issue's targets use 5).
    #[arg(long, default_value_t = 5)]
    overwrite_factor: u64,
    /// Scans in the scan workload.
    #[arg(long, default_value_t = 10_000)]
    scans: u64,
    /// Entries per scan.
    #[arg(long, default_value_t = 100)]
    scan_length: usize,
    /// Keys per batch (batch_sync, and loading before read workloads).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Seconds each sync_writers workload runs.
    #[arg(long, default_value_t = 5.0)]
    sync_secs: f64,
    /// Where the temporary database directories go (use a real disk).
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Internal: load the data set into this directory, print `loaded`,
    /// and wait to be killed (the recovery workload's child).
    #[arg(long, hide = true)]
    child_load: Option<PathBuf>,
}

/// One measured figure.
struct Outcome {
    engine: String,
    workload: String,
    rate: f64,
    unit: &'static str,
    ops: u64,
    seconds: f64,
    /// Bytes passed to `write` per user byte put (from /proc/self/io).
    wchar_amp: Option<f64>,
    notes: String,
}

// ------------------------------------------------------------ data shape

fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut key = [b'0'; KEY_BYTES];
    let mut n = i;
    for slot in key.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    key
}

struct Values(Vec<u8>);

impl Values {
    fn new() -> Self {
        let mut bytes = vec![0u8; 1 << 20];
        SmallRng::seed_from_u64(42).fill_bytes(&mut bytes);
        Self(bytes)
    }

    fn get(&self, i: u64) -> &[u8] {
        let span = (self.0.len() - VALUE_BYTES) as u64;
        let at = (i.wrapping_mul(2_654_435_761) % span) as usize;
        &self.0[at..at + VALUE_BYTES]
    }
}

/// Bytes this process passed to write syscalls so far.
fn wchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("wchar:").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

fn user_bytes(puts: u64) -> f64 {
    (puts * (KEY_BYTES + VALUE_BYTES) as u64) as f64
}

/// Loads every key once, in random order, in unsynced batches (synced for
/// redb in the recovery child, whose unsynced commits would not survive).
fn load(engine: &dyn Engine, keys: u64, batch: usize, values: &Values, sync: bool) -> Result<()> {
    let mut order: Vec<u64> = (0..keys).collect();
    order.shuffle(&mut SmallRng::seed_from_u64(1));
    for chunk in order.chunks(batch) {
        let owned: Vec<[u8; KEY_BYTES]> = chunk.iter().map(|&i| key(i)).collect();
        let entries: Vec<(&[u8], &[u8])> = owned
            .iter()
            .zip(chunk)
            .map(|(k, &i)| (k.as_slice(), values.get(i)))
            .collect();
        engine.write_batch(&entries, sync)?;
    }
    Ok(())
}

// ------------------------------------------------------------- workloads

struct Ctx<'a> {
    args: &'a Args,
    values: Values,
}

impl Ctx<'_> {
    fn fresh_dir(&self, engine: &str, workload: &str) -> Result<tempfile::TempDir> {
        Ok(tempfile::Builder::new()
            .prefix(&format!("compare-{engine}-{workload}-"))
            .tempdir_in(&self.args.dir)?)
    }

    fn run(&self, engine_name: &str, workload: &str) -> Result<Outcome> {
        let dir = self.fresh_dir(engine_name, workload)?;
        if workload == "recovery" {
            return self.recovery(engine_name, dir.path());
        }
        let wchar_start = wchar();
        let engine = engines::open(engine_name, dir.path())?;
        let keys = self.args.keys;
        let mut outcome = Outcome {
            engine: engine_name.to_string(),
            workload: workload.to_string(),
            rate: 0.0,
            unit: "ops/s",
            ops: 0,
            seconds: 0.0,
            wchar_amp: None,
            notes: String::new(),
        };
        let mut puts_for_amp = 0;
        match workload {
            "fillseq" | "fillrandom" => {
                let mut rng = SmallRng::seed_from_u64(2);
                let start = Instant::now();
                for n in 0..keys {
                    let i = if workload == "fillseq" {
                        n
                    } else {
                        rng.random_range(0..keys)
                    };
                    engine.put(&key(i), self.values.get(i ^ n), false)?;
                }
                outcome.seconds = start.elapsed().as_secs_f64();
                outcome.ops = keys;
                let settle = Instant::now();
                engine.settle()?;
                outcome.notes = format!(
                    "background work after the last put: {:.1} s",
                    settle.elapsed().as_secs_f64()
                );
                puts_for_amp = keys;
            }
            "overwrite" => {
                load(&*engine, keys, self.args.batch, &self.values, false)?;
                engine.settle()?;
                let puts = keys * self.args.overwrite_factor;
                let mut rng = SmallRng::seed_from_u64(3);
                let start = Instant::now();
                for n in 0..puts {
                    let i = rng.random_range(0..keys);
                    engine.put(&key(i), self.values.get(i ^ n), false)?;
                }
                outcome.seconds = start.elapsed().as_secs_f64();
                outcome.ops = puts;
                let settle = Instant::now();
                engine.settle()?;
                outcome.notes = format!(
                    "{} puts over {keys} loaded keys; background work after the last put: {:.1} s",
                    puts,
                    settle.elapsed().as_secs_f64()
                );
                puts_for_amp = keys + puts;
            }
            "readrandom" => {
                load(&*engine, keys, self.args.batch, &self.values, false)?;
                engine.settle()?;
                let mut reader = engine.reader()?;
                let mut rng = SmallRng::seed_from_u64(4);
                let start = Instant::now();
                let mut found = 0;
                for n in 0..keys {
                    if n % 10_000 == 0 {
                        reader.refresh()?;
                    }
                    found += u64::from(reader.get(&key(rng.random_range(0..keys)))?);
                }
                outcome.seconds = start.elapsed().as_secs_f64();
                outcome.ops = keys;
                check(found == keys, || format!("readrandom found {found} of {keys}"))?;
            }
            "readwhilewriting" => {
                load(&*engine, keys, self.args.batch, &self.values, false)?;
                engine.settle()?;
                let done = AtomicBool::new(false);
                let writes = AtomicU64::new(0);
                let engine_ref: &dyn Engine = &*engine;
                let (seconds, found) = std::thread::scope(|scope| -> Result<(f64, u64)> {
                    let writer = scope.spawn(|| -> Result<()> {
                        let mut rng = SmallRng::seed_from_u64(5);
                        let mut n = 0u64;
                        while !done.load(Ordering::Relaxed) {
                            let i = rng.random_range(0..keys);
                            engine_ref.put(&key(i), self.values.get(i ^ n), false)?;
                            n += 1;
                        }
                        writes.store(n, Ordering::Relaxed);
                        Ok(())
                    });
                    let result = (|| -> Result<(f64, u64)> {
                        let mut reader = engine_ref.reader()?;
                        let mut rng = SmallRng::seed_from_u64(6);
                        let start = Instant::now();
                        let mut found = 0;
                        for n in 0..keys {
                            if n % 1000 == 0 {
                                reader.refresh()?;
                            }
                            found += u64::from(reader.get(&key(rng.random_range(0..keys)))?);
                        }
                        Ok((start.elapsed().as_secs_f64(), found))
                    })();
                    done.store(true, Ordering::Relaxed);
                    writer.join().map_err(|_| "writer panicked")??;
                    result
                })?;
                outcome.seconds = seconds;
                outcome.ops = keys;
                check(found == keys, || {
                    format!("readwhilewriting found {found} of {keys}")
                })?;
                let written = writes.load(Ordering::Relaxed);
                outcome.notes = format!(
                    "reader rate; the writer did {written} puts meanwhile ({:.0} puts/s)",
                    written as f64 / seconds
                );
            }
            "scan" => {
                load(&*engine, keys, self.args.batch, &self.values, false)?;
                engine.settle()?;
                let length = self.args.scan_length;
                let mut reader = engine.reader()?;
                let mut rng = SmallRng::seed_from_u64(7);
                let start = Instant::now();
                let mut entries = 0;
                for _ in 0..self.args.scans {
                    let from = rng.random_range(0..keys.saturating_sub(length as u64).max(1));
                    entries += reader.scan(&key(from), length)? as u64;
                }
                outcome.seconds = start.elapsed().as_secs_f64();
                outcome.ops = self.args.scans;
                outcome.unit = "scans/s";
                check(entries == self.args.scans * length as u64, || {
                    format!("scan read {entries} entries")
                })?;
                outcome.notes = format!(
                    "{} scans of {length} entries: {:.0} entries/s",
                    self.args.scans,
                    entries as f64 / outcome.seconds
                );
            }
            "batch_sync" => {
                let batch = self.args.batch;
                let mut rng = SmallRng::seed_from_u64(8);
                let batches = keys.div_ceil(batch as u64);
                let start = Instant::now();
                for b in 0..batches {
                    let owned: Vec<(u64, [u8; KEY_BYTES])> = (0..batch)
                        .map(|_| {
                            let i = rng.random_range(0..keys);
                            (i, key(i))
                        })
                        .collect();
                    let entries: Vec<(&[u8], &[u8])> = owned
                        .iter()
                        .map(|(i, k)| (k.as_slice(), self.values.get(i ^ b)))
                        .collect();
                    engine.write_batch(&entries, true)?;
                }
                outcome.seconds = start.elapsed().as_secs_f64();
                outcome.ops = batches * batch as u64;
                outcome.unit = "keys/s";
                outcome.notes = format!(
                    "{batches} synced batches of {batch} keys: {:.0} batches/s",
                    batches as f64 / outcome.seconds
                );
                puts_for_amp = outcome.ops;
            }
            w if w.starts_with("sync_writers_") => {
                let threads: u64 = w["sync_writers_".len()..].parse()?;
                let deadline = Duration::from_secs_f64(self.args.sync_secs);
                let total = AtomicU64::new(0);
                let engine_ref: &dyn Engine = &*engine;
                let start = Instant::now();
                std::thread::scope(|scope| -> Result<()> {
                    let handles: Vec<_> = (0..threads)
                        .map(|t| {
                            let total = &total;
                            scope.spawn(move || -> Result<()> {
                                let mut rng = SmallRng::seed_from_u64(100 + t);
                                let mut n = 0u64;
                                while start.elapsed() < deadline {
                                    let i = rng.random_range(0..keys);
                                    engine_ref.put(&key(i), self.values.get(i ^ n), true)?;
                                    n += 1;
                                }
                                total.fetch_add(n, Ordering::Relaxed);
                                Ok(())
                            })
                        })
                        .collect();
                    for handle in handles {
                        handle.join().map_err(|_| "sync writer panicked")??;
                    }
                    Ok(())
                })?;
                outcome.seconds = start.elapsed().as_secs_f64();
                outcome.ops = total.load(Ordering::Relaxed);
                outcome.notes = format!("{threads} threads, synced single puts");
            }
            other => return Err(format!("unknown workload {other:?}; known: {WORKLOADS:?}").into()),
        }
        if outcome.unit != "s" {
            outcome.rate = outcome.ops as f64 / outcome.seconds;
        }
        let engine_notes = engine.notes();
        let mapped = engine.mapped_write_bytes();
        // Counted after the clean close: redb's unsynced commits, and
        // the memtables Strata flushes on close, are written only then.
        engine.close()?;
        if puts_for_amp > 0 {
            let written = wchar() - wchar_start + mapped;
            outcome.wchar_amp = Some(written as f64 / user_bytes(puts_for_amp));
            if !engine_notes.is_empty() {
                outcome.notes = format!("{}; {engine_notes}", outcome.notes);
            }
        }
        Ok(outcome)
    }

    /// Starts a child that loads the data set and is SIGKILLed once done,
    /// then times the reopen.
    fn recovery(&self, engine_name: &str, dir: &Path) -> Result<Outcome> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("--engines")
            .arg(engine_name)
            .arg("--keys")
            .arg(self.args.keys.to_string())
            .arg("--batch")
            .arg(self.args.batch.to_string())
            .arg("--child-load")
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        child.kill()?; // SIGKILL
        let status = child.wait()?;
        check(line.trim() == "loaded", || {
            format!("recovery child failed before loading ({status})")
        })?;
        let start = Instant::now();
        let engine = engines::open(engine_name, dir)?;
        let seconds = start.elapsed().as_secs_f64();
        // Every key must have survived the kill: check a sample.
        let mut reader = engine.reader()?;
        let mut rng = SmallRng::seed_from_u64(9);
        let sample = 10_000.min(self.args.keys);
        let mut found = 0;
        for _ in 0..sample {
            found += u64::from(reader.get(&key(rng.random_range(0..self.args.keys)))?);
        }
        drop(reader);
        check(found == sample, || {
            format!("after the kill, {found} of {sample} sampled keys were found")
        })?;
        engine.close()?;
        Ok(Outcome {
            engine: engine_name.to_string(),
            workload: "recovery".to_string(),
            rate: seconds,
            unit: "s",
            ops: self.args.keys,
            seconds,
            wchar_amp: None,
            notes: format!(
                "reopen after a SIGKILL following a {}-key unsynced load{}; {sample} sampled keys all found",
                self.args.keys,
                if engine_name == "redb" {
                    " (redb: Durability::Immediate batches, its unsynced commits would not survive)"
                } else {
                    ""
                }
            ),
        })
    }
}

fn check(ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok { Ok(()) } else { Err(message().into()) }
}

fn child_load(args: &Args, dir: &Path) -> Result<()> {
    let name = args.engines.first().ok_or("no engine")?;
    let engine = engines::open(name, dir)?;
    load(&*engine, args.keys, args.batch, &Values::new(), name == "redb")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "loaded")?;
    stdout.flush()?;
    drop(stdout);
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

// ---------------------------------------------------------------- output

fn human(rate: f64, unit: &str) -> String {
    if unit == "s" {
        format!("{rate:.2} s")
    } else if rate >= 1e6 {
        format!("{:.2}M {unit}", rate / 1e6)
    } else if rate >= 1e4 {
        format!("{:.0}k {unit}", rate / 1e3)
    } else {
        format!("{rate:.0} {unit}")
    }
}

fn print_results(engines: &[String], workloads: &[String], results: &[Outcome]) {
    let find = |e: &str, w: &str| results.iter().find(|o| o.engine == e && o.workload == w);
    let mut out = String::new();
    out.push_str(&format!("| workload | {} |\n", engines.join(" | ")));
    out.push_str(&format!("|---|{}\n", "---:|".repeat(engines.len())));
    for w in workloads {
        let cells: Vec<String> = engines
            .iter()
            .map(|e| match find(e, w) {
                Some(o) => human(o.rate, o.unit),
                None => "failed".to_string(),
            })
            .collect();
        out.push_str(&format!("| {w} | {} |\n", cells.join(" | ")));
    }
    let amps: Vec<&Outcome> = results.iter().filter(|o| o.wchar_amp.is_some()).collect();
    if !amps.is_empty() {
        out.push_str("\nBytes passed to write() per user byte put (16 + 100 per put), whole workload incl. background work and the clean close:\n\n");
        out.push_str(&format!("| workload | {} |\n", engines.join(" | ")));
        out.push_str(&format!("|---|{}\n", "---:|".repeat(engines.len())));
        for w in workloads {
            if !amps.iter().any(|o| &o.workload == w) {
                continue;
            }
            let cells: Vec<String> = engines
                .iter()
                .map(|e| {
                    find(e, w)
                        .and_then(|o| o.wchar_amp)
                        .map_or("-".to_string(), |a| format!("{a:.2}"))
                })
                .collect();
            out.push_str(&format!("| {w} | {} |\n", cells.join(" | ")));
        }
    }
    out.push_str("\nNotes:\n\n");
    for o in results {
        if !o.notes.is_empty() {
            out.push_str(&format!("- {} / {}: {}\n", o.engine, o.workload, o.notes));
        }
    }
    out.push_str("\n```csv\nengine,workload,rate,unit,ops,seconds,write_bytes_per_user_byte\n");
    for o in results {
        out.push_str(&format!(
            "{},{},{:.2},{},{},{:.3},{}\n",
            o.engine,
            o.workload,
            o.rate,
            o.unit,
            o.ops,
            o.seconds,
            o.wchar_amp.map_or(String::new(), |a| format!("{a:.3}"))
        ));
    }
    out.push_str("```\n");
    print!("{out}");
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.child_load {
        return child_load(&args, dir);
    }
    let mut workloads = Vec::new();
    for w in &args.workloads {
        match w.as_str() {
            "all" => workloads.extend(WORKLOADS.iter().map(|w| w.to_string())),
            "sync_writers" => workloads.extend(
                ["sync_writers_1", "sync_writers_4", "sync_writers_16"].map(String::from),
            ),
            "sync1" | "sync4" | "sync16" => workloads.push(format!("sync_writers_{}", &w[4..])),
            other if WORKLOADS.contains(&other) => workloads.push(other.to_string()),
            other => return Err(format!("unknown workload {other:?}; known: {WORKLOADS:?}").into()),
        }
    }
    for e in &args.engines {
        check(engines::ENGINES.contains(&e.as_str()), || {
            format!("unknown engine {e:?}; known: {:?}", engines::ENGINES)
        })?;
    }
    let ctx = Ctx {
        args: &args,
        values: Values::new(),
    };
    let mut results = Vec::new();
    // Engines interleave within each workload, so a burst of load from
    // elsewhere on the machine touches all of them alike.
    for w in &workloads {
        for e in &args.engines {
            eprintln!("[{}] {e} / {w} ...", load_average());
            let start = Instant::now();
            match ctx.run(e, w) {
                Ok(o) => {
                    eprintln!(
                        "    {} ({:.1} s wall){}",
                        human(o.rate, o.unit),
                        start.elapsed().as_secs_f64(),
                        o.wchar_amp
                            .map_or(String::new(), |a| format!(", write bytes/user byte {a:.2}"))
                    );
                    results.push(o);
                }
                Err(err) => eprintln!("    FAILED: {err}"),
            }
        }
    }
    eprintln!("[{}] done", load_average());
    print_results(&args.engines, &workloads, &results);
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
