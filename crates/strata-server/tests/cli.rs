//! The `strata` binary's offline commands and config refusals, as a user
//! runs them: exit codes and messages.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::{Command, Output};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn make_db(dir: &Path) {
    let db = strata::Db::open(dir, strata::Options::default()).unwrap();
    for i in 0..100u32 {
        db.put(format!("k{i:03}").as_bytes(), &[7u8; 50]).unwrap();
    }
    db.close().unwrap(); // flushed into a table
}

#[test]
fn verify_passes_a_healthy_directory_and_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    make_db(&data);
    let ok = strata(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("verified"));
    let copy = dir.path().join("copy");
    let cp = strata(&[
        "checkpoint",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        copy.to_str().unwrap(),
    ]);
    assert!(cp.status.success(), "{}", text(&cp));
    let again = strata(&["verify", "--data-dir", copy.to_str().unwrap()]);
    assert!(again.status.success(), "{}", text(&again));
}

#[test]
fn verify_names_a_damaged_table_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    make_db(&data);
    let table = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sst"))
        .unwrap();
    let mut bytes = std::fs::read(&table).unwrap();
    if let Some(b) = bytes.get_mut(20) {
        *b ^= 0xff;
    }
    std::fs::write(&table, bytes).unwrap();
    let out = strata(&["verify", "--data-dir", data.to_str().unwrap()]);
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains(table.file_name().unwrap().to_str().unwrap()),
        "{message}"
    );
}

#[test]
fn verify_of_a_missing_directory_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = strata(&["verify", "--data-dir", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("no database"), "{}", text(&out));
    assert!(!missing.exists());
}

#[test]
fn serve_refuses_a_bad_config_before_touching_data() {
    let dir = tempfile::tempdir().unwrap();
    for (body, needle) in [
        (
            "role = \"primary\"\ndata_dir = \"d\"\nlisten = \"127.0.0.1:7001\"\ncolour = 1\n",
            "colour",
        ),
        (
            "role = \"replica\"\ndata_dir = \"d\"\nlisten = \"127.0.0.1:7002\"\n[replica]\nupstream = \"http://127.0.0.1:7002\"\nid = \"r\"\n",
            "itself",
        ),
        (
            "role = \"primary\"\ndata_dir = \"d\"\nlisten = \"127.0.0.1:99999\"\n",
            "listen",
        ),
    ] {
        let config = dir.path().join("node.toml");
        std::fs::write(&config, body).unwrap();
        let out = strata(&["serve", "--config", config.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(text(&out).contains(needle), "{needle}: {}", text(&out));
        assert!(!dir.path().join("d").exists(), "nothing created");
    }
    let out = strata(&[
        "serve",
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("missing.toml"));
}

#[test]
fn bench_runs_a_fill_then_reads_and_reports_percentiles() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bench");
    let data = data.to_str().unwrap();
    let fill = strata(&[
        "bench",
        "--data-dir",
        data,
        "--workload",
        "fillrandom",
        "--num",
        "2000",
        "--threads",
        "2",
    ]);
    assert!(fill.status.success(), "{}", text(&fill));
    assert!(
        text(&fill).contains("ops/s") && text(&fill).contains("p99"),
        "{}",
        text(&fill)
    );
    let read = strata(&[
        "bench",
        "--data-dir",
        data,
        "--workload",
        "readrandom",
        "--num",
        "2000",
    ]);
    assert!(read.status.success(), "{}", text(&read));
    let bad = strata(&["bench", "--data-dir", data, "--workload", "nope"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("unknown workload"));
}

#[test]
fn inspect_decodes_a_log_segment_a_table_and_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    make_db(&data); // a table and a manifest
    {
        let db = strata::Db::open(&data, strata::Options::default()).unwrap();
        let mut batch = strata::WriteBatch::new();
        batch.put(b"in-the-log", b"v");
        batch.delete_range(b"a", b"b");
        db.write(batch, &strata::WriteOptions { sync: true })
            .unwrap();
        drop(db); // no flush: the batch stays in the log
    }
    let find = |dir: &Path, pred: &dyn Fn(&str) -> bool| {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| pred(&p.file_name().unwrap().to_string_lossy()))
            .unwrap()
    };
    let segment = find(&data.join("wal"), &|n| n.ends_with(".wal"));
    let out = strata(&["inspect", "--verbose", segment.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("put \"in-the-log\"") && text(&out).contains("delete_range"),
        "{}",
        text(&out)
    );
    let table = find(&data, &|n| n.ends_with(".sst"));
    let out = strata(&["inspect", table.to_str().unwrap()]);
    assert!(
        out.status.success() && text(&out).contains("every block checks out"),
        "{}",
        text(&out)
    );
    let manifest = find(&data, &|n| n.starts_with("MANIFEST-"));
    let out = strata(&["inspect", manifest.to_str().unwrap()]);
    assert!(
        out.status.success() && text(&out).contains("VersionEdit"),
        "{}",
        text(&out)
    );
    let out = strata(&["inspect", data.join("CURRENT").to_str().unwrap()]);
    assert!(!out.status.success());
}

#[test]
fn serve_refuses_an_unwritable_data_dir_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    // data_dir under a regular file: nothing can be created there.
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "role = \"primary\"\ndata_dir = \"file/d\"\nlisten = \"127.0.0.1:7399\"\n",
    )
    .unwrap();
    let out = strata(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("file/d"), "{}", text(&out));
}

#[test]
fn serve_refuses_a_config_that_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        b"role = \"primary\"\ndata_dir = \"\xff\xfe\"\nlisten = \"127.0.0.1:7001\"\n",
    )
    .unwrap();
    let out = strata(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("node.toml"), "{}", text(&out));
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let port = |p: u16| {
        let config = dir.path().join(format!("n{p}.toml"));
        std::fs::write(
            &config,
            format!("role = \"primary\"\ndata_dir = \"shared\"\nlisten = \"127.0.0.1:{p}\"\n"),
        )
        .unwrap();
        config
    };
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let first_config = port(free());
    let mut first = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--config", first_config.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first holds the lock (its CURRENT exists).
    let started = std::time::Instant::now();
    while !dir.path().join("shared/CURRENT").exists() {
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = strata(&["serve", "--config", port(free()).to_str().unwrap()]);
    let _ = first.kill();
    let _ = first.wait();
    assert!(!second.status.success());
    assert!(text(&second).contains("locked"), "{}", text(&second));
}
