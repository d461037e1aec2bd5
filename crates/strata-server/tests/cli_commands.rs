//! The data commands as a user runs them: `strata serve` with no config
//! (a primary on ./strata-data at the default addresses), then `put`,
//! `delete`, `delete-range` and `scan` (forward, reverse, prefix, limit,
//! at a commit token) against it; `dump` of the stopped node's directory,
//! `load` into a new directory and into a running node, and the dumps
//! compared byte for byte (range deletions and empty values included).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn strata_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = strata_in(dir, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "strata {args:?}: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Keeps asking until the node answers `status` (it is starting).
fn wait_up(dir: &Path, node: &str) {
    for _ in 0..300 {
        if strata_in(dir, &["status", "--node", node]).status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the node at {node} never answered");
}

fn stop(mut child: Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        child.wait().unwrap().success(),
        "the node did not stop cleanly"
    );
}

/// The entries lines of a scan (without the summary line).
fn entries(scan: &str) -> Vec<&str> {
    scan.lines().filter(|l| !l.starts_with('(')).collect()
}

fn seq_of(answer: &str) -> u64 {
    answer.trim().strip_prefix("seq ").unwrap().parse().unwrap()
}

#[test]
fn serve_without_config_then_every_data_command() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(cwd)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = "127.0.0.1:7001";
    wait_up(cwd, node);
    // The documented defaults: data in ./strata-data, metrics on 9101.
    assert!(cwd.join("strata-data").is_dir());
    let metrics = std::net::TcpStream::connect("127.0.0.1:9101");
    assert!(metrics.is_ok(), "no metrics on 127.0.0.1:9101");

    for (key, value) in [
        ("a", "1"),
        ("ab", ""),
        ("abc", "3"),
        ("b", "4"),
        ("c1", "5"),
        ("c2", "6"),
        ("d", "7"),
    ] {
        ok(cwd, &["put", key, value]);
    }
    let deleted = ok(cwd, &["delete", "b"]);
    let token = seq_of(&ok(cwd, &["delete-range", "--sync", "c", "d"]));
    assert!(seq_of(&deleted) < token);

    let all = ok(cwd, &["scan", "--min-seq", &token.to_string()]);
    assert_eq!(entries(&all), ["a\t1", "ab\t", "abc\t3", "d\t7"]);
    assert!(
        all.contains(&format!("(4 entries at seq {token})")),
        "{all}"
    );
    let reverse = ok(cwd, &["scan", "--reverse"]);
    assert_eq!(entries(&reverse), ["d\t7", "abc\t3", "ab\t", "a\t1"]);
    let prefix = ok(cwd, &["scan", "--prefix", "ab"]);
    assert_eq!(entries(&prefix), ["ab\t", "abc\t3"]);
    let limited = ok(cwd, &["scan", "--limit", "2"]);
    assert_eq!(entries(&limited), ["a\t1", "ab\t"]);
    assert!(limited.contains("more left out by --limit"), "{limited}");
    let reverse_limited = ok(cwd, &["scan", "--reverse", "--limit", "1", "--end", "d"]);
    assert_eq!(entries(&reverse_limited), ["abc\t3"]);
    let bounded = ok(cwd, &["scan", "--start", "ab", "--end", "d"]);
    assert_eq!(entries(&bounded), ["ab\t", "abc\t3"]);
    // A commit token the node has not reached: refused after the wait.
    let ahead = strata_in(
        cwd,
        &["scan", "--min-seq", "1000000", "--timeout-ms", "100"],
    );
    assert!(!ahead.status.success());
    // An empty or inverted range is refused before anything is written.
    let inverted = strata_in(cwd, &["delete-range", "d", "a"]);
    assert!(!inverted.status.success());
    stop(child);

    // dump -> load -> dump gives the same file.
    let first = cwd.join("first.dump");
    ok(
        cwd,
        &["dump", "--data-dir", "strata-data", "--out", "first.dump"],
    );
    let text = std::fs::read_to_string(&first).unwrap();
    assert!(text.starts_with("strata-dump 1\n"), "{text}");
    assert!(text.contains("6162\t\n"), "the empty value of ab: {text}");
    assert!(!text.contains("\n62\t"), "b was deleted: {text}");
    assert!(!text.contains("6331"), "c1 was range-deleted: {text}");
    ok(
        cwd,
        &["load", "--file", "first.dump", "--data-dir", "loaded"],
    );
    ok(
        cwd,
        &["dump", "--data-dir", "loaded", "--out", "second.dump"],
    );
    let second = std::fs::read_to_string(cwd.join("second.dump")).unwrap();
    let body = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&text), body(&second));
    // A dump is never written over, a load never into a used directory.
    assert!(
        !strata_in(
            cwd,
            &["dump", "--data-dir", "loaded", "--out", "second.dump"]
        )
        .status
        .success()
    );
    assert!(
        !strata_in(
            cwd,
            &["load", "--file", "first.dump", "--data-dir", "loaded"]
        )
        .status
        .success()
    );

    // load into a running node: the same entries come back from a scan.
    let child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .current_dir(cwd)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_up(cwd, node);
    // The node still has its data; delete it all, then load the dump.
    ok(cwd, &["delete-range", "--sync", "", "\u{7f}"]);
    assert_eq!(entries(&ok(cwd, &["scan"])), Vec::<&str>::new());
    ok(cwd, &["load", "--file", "first.dump", "--node", node]);
    assert_eq!(
        entries(&ok(cwd, &["scan"])),
        ["a\t1", "ab\t", "abc\t3", "d\t7"]
    );
    stop(child);
}
