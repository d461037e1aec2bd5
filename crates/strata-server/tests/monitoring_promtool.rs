//! The shipped alert rules pass Prometheus' own checker, and their unit
//! tests (`examples/monitoring/strata-alerts.test.yml`: every alert fires
//! on a series that should fire it and stays silent on one that should
//! not) pass `promtool test rules`. Needs `promtool` (Debian's
//! `prometheus` package): without it the test fails, naming the install
//! command.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::Command;

fn monitoring() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/monitoring")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): install it with `apt-get install -y prometheus`")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
#[ignore = "needs Prometheus (apt-get install -y prometheus); .ci/run runs it with --ignored"]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "strata-alerts.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "strata-alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every alert has a unit test, and the CPU one checks "over 80% for
    // 5 minutes" (silent at 4 minutes, firing after).
    let rules = std::fs::read_to_string(monitoring().join("strata-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(monitoring().join("strata-alerts.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "alert {alert} has no promtool unit test"
        );
    }
    assert!(rules.contains("rate(process_cpu_seconds_total[1m]) / strata_cpu_cores > 0.8"));
}
