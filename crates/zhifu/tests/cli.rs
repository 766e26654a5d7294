//! The binary as a newcomer runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::process::Command;

fn zhifu(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_zhifu")).args(args).output().expect("zhifu runs")
}

#[test]
fn bench_ledger_reports_both_workloads_on_a_small_run() {
    let output = zhifu(&["bench", "ledger", "--transfers", "50000", "--memory-accounts", "1000"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("uniform") && stdout.contains("hot (90% to 10 accounts)"), "{stdout}");
    assert!(stdout.contains("memory per account"), "{stdout}");
}

#[test]
fn bench_ledger_refuses_a_batch_over_the_maximum() {
    let output = zhifu(&["bench", "ledger", "--batch", "9000"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--batch must be between 1 and 8189"));
}

/// The load generator's own connections carry every phase without an error
/// (each request's status is checked: 201 for a transfer or a trade, 200 for
/// a payment), and the server's ledger is checked balanced at the end.
#[test]
fn bench_http_drives_every_phase_without_errors() {
    let directory = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_zhifu"))
        .args(["bench", "http", "--requests", "400", "--trades", "60", "--users", "8", "--merchants", "2"])
        .args(["--connections", "4", "--data-dir"])
        .arg(directory.path())
        .output()
        .expect("zhifu runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let phases: Vec<&str> = stdout
        .lines()
        .filter(|line| ["GET /healthz", "POST /v1/transfers", "trade created"].iter().any(|p| line.starts_with(p)))
        .collect();
    assert_eq!(phases.len(), 3, "{stdout}");
    for line in phases {
        assert_eq!(line.split_whitespace().last(), Some("0"), "errors in: {line}");
    }
    assert!(stdout.contains("of which POST …/pay"), "{stdout}");
}
