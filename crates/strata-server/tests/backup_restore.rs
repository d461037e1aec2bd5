//! Backups and point-in-time restore, as an operator runs them against a
//! real node process: writes (puts, empty values, deletes, range deletes)
//! keep going while `strata backup` takes a base backup and the node
//! archives its log; `strata restore` then rebuilds the database at the
//! backup's sequence number, at one in the middle of the archived log and
//! at the end, and each restored database equals a model of the writes up
//! to that point. A gap in the archive is refused, naming the missing
//! segment. A kill -9 of the node during a backup and during archiving
//! leaves a backup set that restores, and the restarted node goes on
//! archiving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "common/node.rs"]
mod common_node;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common_node::free_port;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::{Operation, WriteRequest, operation};

/// One write of the model: its commit token and its operations.
#[derive(Clone, Debug)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    DeleteRange(Vec<u8>, Vec<u8>),
}

struct Model {
    batches: Vec<(u64, Vec<Op>)>,
}

impl Model {
    /// The state once every batch with a commit token up to `seq` applied.
    fn at(&self, seq: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut state = BTreeMap::new();
        for (last, ops) in &self.batches {
            if *last > seq {
                break;
            }
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        state.insert(k.clone(), v.clone());
                    }
                    Op::Delete(k) => {
                        state.remove(k);
                    }
                    Op::DeleteRange(s, e) => {
                        state.retain(|k, _| k < s || k >= e);
                    }
                }
            }
        }
        state
    }

    fn last(&self) -> u64 {
        self.batches.last().map_or(0, |b| b.0)
    }
}

/// Batch number `n` of a deterministic workload over 64 keys.
fn batch_ops(n: u64) -> Vec<Op> {
    let key = |i: u64| format!("k{:02}", i % 64).into_bytes();
    let mut ops = vec![Op::Put(key(n * 7), format!("v{n}").repeat(8).into_bytes())];
    match n % 10 {
        3 => ops.push(Op::Put(key(n * 3), Vec::new())),
        5 => ops.push(Op::Delete(key(n * 5))),
        7 => ops.push(Op::DeleteRange(key(n % 60), key(n % 60 + 4))),
        _ => ops.push(Op::Put(key(n + 1), vec![b'x'; 200])),
    }
    ops
}

fn to_wire(ops: &[Op]) -> Vec<Operation> {
    ops.iter()
        .map(|op| match op {
            Op::Put(k, v) => Operation {
                kind: operation::Kind::Put as i32,
                key: k.clone(),
                value: v.clone(),
            },
            Op::Delete(k) => Operation {
                kind: operation::Kind::Delete as i32,
                key: k.clone(),
                value: Vec::new(),
            },
            Op::DeleteRange(s, e) => Operation {
                kind: operation::Kind::DeleteRange as i32,
                key: s.clone(),
                value: e.clone(),
            },
        })
        .collect()
}

struct Node {
    dir: PathBuf,
    config: PathBuf,
    addr: String,
    metrics: String,
    child: Option<Child>,
}

impl Node {
    fn new(dir: &Path) -> Self {
        Self::with_config(dir, "")
    }

    /// A node whose config ends with `extra` (inside `[backup]` unless it
    /// opens a section).
    fn with_config(dir: &Path, extra: &str) -> Self {
        let (port, metrics_port) = (free_port(), free_port());
        let config = dir.join("node.toml");
        std::fs::write(
            &config,
            format!(
                "role = \"primary\"\ndata_dir = \"data\"\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n[backup]\ndir = \"backup\"\narchive_interval_ms = 50\nsegment_bytes = 8192\n{extra}"
            ),
        )
        .unwrap();
        Self {
            dir: dir.to_path_buf(),
            config,
            addr: format!("127.0.0.1:{port}"),
            metrics: format!("127.0.0.1:{metrics_port}"),
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_strata"))
                .args(["serve", "--config", self.config.to_str().unwrap()])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
        for _ in 0..400 {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("the node never listened: {}", self.log());
    }

    fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    fn backup_dir(&self) -> PathBuf {
        self.dir.join("backup")
    }

    /// `strata_archive_last_seq` from a scrape.
    fn archived_seq(&self) -> u64 {
        let text = common_node::scrape_text(&self.metrics);
        text.lines()
            .find_map(|l| l.strip_prefix("strata_archive_last_seq "))
            .map_or(0, |v| v.parse::<f64>().unwrap() as u64)
    }

    /// A counter or gauge from a scrape (0 when absent).
    fn metric(&self, name: &str) -> f64 {
        let text = common_node::scrape_text(&self.metrics);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    }

    /// Waits until the archive holds everything up to `seq`.
    fn wait_archived(&self, seq: u64) {
        for _ in 0..2000 {
            if self.archived_seq() >= seq {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the archive never reached seq {seq}: {}", self.log());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_9();
    }
}

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `strata backup --node`; returns the backup's sequence number.
fn backup(node: &Node) -> u64 {
    let out = strata(&["backup", "--node", &node.addr]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    t.split("up to seq ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// Restores to `seq` (`None`: the end) into `to`; returns the restored
/// sequence number.
fn restore(archive: &Path, to: &Path, seq: Option<u64>) -> Result<u64, String> {
    let mut args = vec![
        "restore".to_string(),
        "--archive".into(),
        archive.display().to_string(),
        "--to".into(),
        to.display().to_string(),
    ];
    if let Some(seq) = seq {
        args.push("--to-seq".into());
        args.push(seq.to_string());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(&args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(text(&out));
    }
    let t = text(&out);
    Ok(t.split(" to seq ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap())
}

/// Every key and value of the database in `dir`.
fn contents(dir: &Path) -> (u64, BTreeMap<Vec<u8>, Vec<u8>>) {
    let db = strata::Db::open(
        dir,
        strata::Options {
            create_if_missing: false,
            ..strata::Options::default()
        },
    )
    .unwrap();
    let seq = db.last_seq().get();
    let all = db.scan(..).unwrap().map(Result::unwrap).collect();
    db.close().unwrap();
    (seq, all)
}

fn write_batches(
    runtime: &tokio::runtime::Runtime,
    node: &Node,
    model: &mut Model,
    from: u64,
    count: u64,
) {
    runtime.block_on(async {
        let mut kv = KvClient::connect(format!("http://{}", node.addr))
            .await
            .unwrap();
        for n in from..from + count {
            let ops = batch_ops(n);
            let seq = kv
                .write(WriteRequest {
                    operations: to_wire(&ops),
                    sync: n % 16 == 0,
                    ..WriteRequest::default()
                })
                .await
                .unwrap()
                .into_inner()
                .seq;
            model.batches.push((seq, ops));
        }
    });
}

#[test]
fn backup_while_writing_then_restore_to_three_points_and_refuse_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut node = Node::new(dir.path());
    node.start();
    let mut model = Model {
        batches: Vec::new(),
    };
    write_batches(&runtime, &node, &mut model, 0, 300);
    // A moment between two writes, for --to-time: everything before it is
    // archived (read by the archiver) before it, nothing after.
    let before_moment = model.last();
    node.wait_archived(before_moment);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let moment_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(std::time::Duration::from_millis(5));

    // A backup while a second client keeps writing.
    let addr = node.addr.clone();
    let during = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let writer = Node {
            dir: PathBuf::new(),
            config: PathBuf::new(),
            addr,
            metrics: String::new(),
            child: None,
        };
        let mut model = Model {
            batches: Vec::new(),
        };
        write_batches(&runtime, &writer, &mut model, 300, 300);
        model
    });
    let base_seq = backup(&node);
    let concurrent = during.join().unwrap();
    model.batches.extend(concurrent.batches);
    model.batches.sort_by_key(|b| b.0);
    // Then more writes, all archived.
    write_batches(&runtime, &node, &mut model, 600, 300);
    let end = model.last();
    node.wait_archived(end);
    let archive = node.backup_dir();
    let segments = std::fs::read_dir(archive.join("log")).unwrap().count();
    assert!(segments > 3, "only {segments} archive segments");

    // Three points: the backup, a batch boundary in the middle, the end.
    let middle = model
        .batches
        .iter()
        .map(|b| b.0)
        .find(|&s| s > base_seq + (end - base_seq) / 2)
        .unwrap();
    for (name, point) in [("at-backup", base_seq), ("middle", middle), ("end", end)] {
        let to = dir.path().join(name);
        let restored = restore(&archive, &to, Some(point)).unwrap();
        assert_eq!(restored, point, "{name}");
        let (seq, state) = contents(&to);
        assert_eq!(seq, point, "{name}");
        assert_eq!(
            state,
            model.at(point),
            "{name}: restored state differs from the model"
        );
    }
    // --to-time: before the first base backup, so from an empty database
    // and the archive from seq 1.
    let at_time = dir.path().join("at-time");
    let out = strata(&[
        "restore",
        "--archive",
        archive.to_str().unwrap(),
        "--to",
        at_time.to_str().unwrap(),
        "--to-time",
        &moment_ms.to_string(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("base backup at seq 0"),
        "{}",
        text(&out)
    );
    let (seq, state) = contents(&at_time);
    assert_eq!(seq, before_moment);
    assert_eq!(state, model.at(before_moment));
    // The end without --to-seq too, and never into a used directory.
    let latest = dir.path().join("latest");
    assert_eq!(restore(&archive, &latest, None).unwrap(), end);
    let refused = restore(&archive, &latest, None).unwrap_err();
    assert!(refused.contains("not empty"), "{refused}");
    // Past the archive's end: refused, naming where it ends.
    let past = restore(&archive, &dir.path().join("past"), Some(end + 1000)).unwrap_err();
    assert!(past.contains(&format!("ends at seq {end}")), "{past}");
    assert!(!dir.path().join("past").exists());

    // A gap: one archived segment after the backup removed from a copy.
    let copy = dir.path().join("gap-archive");
    std::fs::create_dir_all(copy.join("log")).unwrap();
    copy_dir(&archive.join("base"), &copy.join("base"));
    let mut names: Vec<String> = std::fs::read_dir(archive.join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let after_base: Vec<&String> = names
        .iter()
        .filter(|n| n.split('-').next().unwrap().parse::<u64>().unwrap() > base_seq + 1)
        .collect();
    let missing = after_base[after_base.len() / 2].clone();
    for name in &names {
        if *name != missing {
            std::fs::copy(archive.join("log").join(name), copy.join("log").join(name)).unwrap();
        }
    }
    let missing_first = missing.split('-').next().unwrap().parse::<u64>().unwrap();
    let gap = restore(&copy, &dir.path().join("gap"), Some(end)).unwrap_err();
    assert!(gap.contains("gap"), "{gap}");
    assert!(
        gap.contains(&format!("no segment holds seq {missing_first}")),
        "{gap}"
    );
    assert!(gap.contains(&format!("{missing_first:020}-")), "{gap}");
    assert!(
        !dir.path().join("gap").exists(),
        "a refused restore left a directory"
    );
    // Up to just before the gap still restores.
    let before = restore(
        &copy,
        &dir.path().join("before-gap"),
        Some(missing_first - 1),
    )
    .unwrap();
    assert_eq!(contents(&dir.path().join("before-gap")).1, model.at(before));

    // A damaged segment (before the gap) is refused, naming it.
    assert!(after_base.len() >= 3);
    let damaged_name = after_base[0];
    let path = copy.join("log").join(damaged_name);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let damaged = restore(&copy, &dir.path().join("damaged"), Some(missing_first - 1)).unwrap_err();
    assert!(damaged.contains(damaged_name.as_str()), "{damaged}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn kill_9_during_a_backup_and_during_archiving_leaves_a_usable_set() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut node = Node::new(dir.path());
    node.start();
    let mut model = Model {
        batches: Vec::new(),
    };
    write_batches(&runtime, &node, &mut model, 0, 200);
    let first_base = backup(&node);
    write_batches(&runtime, &node, &mut model, 200, 200);
    node.wait_archived(model.last());
    // Killed while a backup and the archiver run and writes continue
    // (the kill lands at a different moment each round): the backup
    // command fails or finishes, the archiver stops mid-round. Each time
    // the set restores as it is, to a point at or after the first backup
    // and at or before the last acknowledged write, equal to the model;
    // the node restarts and archives on from where the archive ends.
    let archive = node.backup_dir();
    let mut next_batch = 400;
    for (round, writes_before_kill) in [0u64, 5, 20, 60].into_iter().enumerate() {
        let backup_process = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["backup", "--node", &node.addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        write_batches(&runtime, &node, &mut model, next_batch, writes_before_kill);
        next_batch += writes_before_kill;
        node.kill_9();
        let backup_output = backup_process.wait_with_output().unwrap();
        let partial = std::fs::read_dir(archive.join("base")).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".partial-")
        });
        eprintln!(
            "round {round}: backup {} ({}), a partial backup left: {partial}",
            if backup_output.status.success() {
                "finished"
            } else {
                "cut off"
            },
            text(&backup_output).trim()
        );
        let to = dir.path().join(format!("after-kill-{round}"));
        let restored = restore(&archive, &to, None).unwrap();
        assert!(
            restored >= first_base && restored <= model.last(),
            "round {round}"
        );
        assert_eq!(contents(&to).1, model.at(restored), "round {round}");
        node.start();
        write_batches(&runtime, &node, &mut model, next_batch, 30);
        next_batch += 30;
    }
    node.wait_archived(model.last());
    let second_base = backup(&node);
    write_batches(&runtime, &node, &mut model, next_batch, 50);
    node.wait_archived(model.last());
    assert!(second_base > first_base);
    for (name, point) in [
        ("across-crashes", first_base),
        ("second-base", second_base),
        ("final", model.last()),
    ] {
        let to = dir.path().join(name);
        assert_eq!(
            restore(&archive, &to, Some(point)).unwrap(),
            point,
            "{name}"
        );
        assert_eq!(contents(&to).1, model.at(point), "{name}");
    }
    // Retention: keep the newest base backup and the log after it.
    let out = strata(&[
        "prune",
        "--archive",
        archive.to_str().unwrap(),
        "--keep",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let bases = std::fs::read_dir(archive.join("base"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(bases, 1);
    let pruned = dir.path().join("after-prune");
    assert_eq!(restore(&archive, &pruned, None).unwrap(), model.last());
    assert_eq!(contents(&pruned).1, model.at(model.last()));
    let too_old = restore(&archive, &dir.path().join("too-old"), Some(first_base)).unwrap_err();
    assert!(too_old.contains("no base backup"), "{too_old}");
    // Nothing left half-made is ever read: no temporary segment or
    // partial backup under a final name.
    for entry in std::fs::read_dir(archive.join("base")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".partial-") || name.parse::<u64>().is_ok(),
            "{name}"
        );
    }
}

#[test]
fn an_offline_backup_of_a_stopped_node_restores_and_a_running_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = strata::Db::open(&data, strata::Options::default()).unwrap();
    let mut model = Model {
        batches: Vec::new(),
    };
    for n in 0..200 {
        let mut batch = strata::WriteBatch::new();
        let ops = batch_ops(n);
        for op in &ops {
            match op {
                Op::Put(k, v) => batch.put(k, v),
                Op::Delete(k) => batch.delete(k),
                Op::DeleteRange(s, e) => batch.delete_range(s, e),
            }
        }
        let seq = db.write(batch, &strata::WriteOptions::default()).unwrap();
        model.batches.push((seq.get(), ops));
    }
    db.flush().unwrap(); // some of it in tables, the rest in the log
    for n in 200..250 {
        let ops = batch_ops(n);
        let mut batch = strata::WriteBatch::new();
        for op in &ops {
            if let Op::Put(k, v) = op {
                batch.put(k, v);
            }
        }
        let ops: Vec<Op> = ops
            .into_iter()
            .filter(|o| matches!(o, Op::Put(..)))
            .collect();
        let seq = db.write(batch, &strata::WriteOptions::default()).unwrap();
        model.batches.push((seq.get(), ops));
    }
    // While the database is open (a running node holds its lock): refused.
    let backups = dir.path().join("backups");
    let refused = strata(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        backups.to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("LOCK"), "{}", text(&refused));
    db.close().unwrap();
    let out = strata(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        backups.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("up to seq {}", model.last())),
        "{}",
        text(&out)
    );
    let to = dir.path().join("restored");
    assert_eq!(restore(&backups, &to, None).unwrap(), model.last());
    assert_eq!(contents(&to).1, model.at(model.last()));
    // No checkpoint is left beside the data directory.
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.backup-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_failing_archiver_lets_go_of_the_log_past_its_bound_and_a_new_backup_heals() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut node = Node::with_config(
        dir.path(),
        "log_hold_bytes_max = 1048576\n[engine]\nmemtable_bytes = 65536\nwal_segment_bytes = 1048576\n",
    );
    node.start();
    let mut model = Model {
        batches: Vec::new(),
    };
    write_batches(&runtime, &node, &mut model, 0, 100);
    let first_base = backup(&node);
    node.wait_archived(model.last());
    let archived_before = model.last();
    // The archive's log directory becomes a file: every segment write fails.
    let log = node.backup_dir().join("log");
    let saved = node.backup_dir().join("log.saved");
    std::fs::rename(&log, &saved).unwrap();
    std::fs::write(&log, b"not a directory").unwrap();
    // Far more than the bound of log while it fails (about 4 MiB).
    let mut n = 100;
    while !node.log().contains("no longer holding the log") {
        write_batches(&runtime, &node, &mut model, n, 500);
        n += 500;
        assert!(n < 40_000, "the archiver never let go: {}", node.log());
    }
    assert!(node.metric("strata_archive_errors_total") > 0.0);
    // Writes go on (flushes release the log once nothing holds it: the
    // node's digest points hold about 10 s of it) until the log no longer
    // holds what the archive lacks: a gap, counted.
    while node.metric("strata_archive_gaps_total") < 1.0 {
        write_batches(&runtime, &node, &mut model, n, 50);
        n += 50;
        assert!(n < 100_000, "the log was never released: {}", node.log());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Archiving works again and goes on after the gap.
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(&saved, &log).unwrap();
    write_batches(&runtime, &node, &mut model, n, 50);
    n += 50;
    node.wait_archived(model.last());
    // Restores up to the gap still work; across it they are refused;
    // a new base backup makes everything after it restorable.
    let before = dir.path().join("before-gap");
    assert_eq!(
        restore(&node.backup_dir(), &before, Some(archived_before)).unwrap(),
        archived_before
    );
    assert_eq!(contents(&before).1, model.at(archived_before));
    let across = restore(
        &node.backup_dir(),
        &dir.path().join("across"),
        Some(model.last()),
    )
    .unwrap_err();
    assert!(across.contains("gap"), "{across}");
    let second_base = backup(&node);
    assert!(second_base > first_base);
    write_batches(&runtime, &node, &mut model, n, 50);
    node.wait_archived(model.last());
    let healed = dir.path().join("healed");
    assert_eq!(
        restore(&node.backup_dir(), &healed, None).unwrap(),
        model.last()
    );
    assert_eq!(contents(&healed).1, model.at(model.last()));
}
