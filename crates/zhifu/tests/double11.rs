//! `zhifu double11` end to end: small days through the real binary, their
//! reports checked against the ledger they leave behind, the same seed giving
//! the same day, a crash in the middle resumed, and a day over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use journal::{Durable, Options, StateMachine};
use ledger::LedgerConfig;
use platform::Platform;
use platform::accounts::REVENUE;
use serde_json::Value;

const SCALE: &str = "0.0002";

fn double11(directory: &Path, name: &str, extra: &[&str]) -> (Output, Option<Value>) {
    let report_dir = directory.join(format!("{name}-report"));
    let scale = if extra.contains(&"--scale") { &[][..] } else { &["--scale", SCALE][..] };
    let output = Command::new(env!("CARGO_BIN_EXE_zhifu"))
        .arg("double11")
        .args(scale)
        .args(["--quiet", "--data-dir"])
        .arg(directory.join(format!("{name}-data")))
        .arg("--report-dir")
        .arg(&report_dir)
        .args(extra)
        .output()
        .expect("zhifu runs");
    let report =
        std::fs::read_to_string(report_dir.join("report.json")).ok().map(|text| serde_json::from_str(&text).unwrap());
    (output, report)
}

fn succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "zhifu double11 failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn fen(value: &Value) -> u128 {
    value.as_str().map(|text| text.parse().unwrap()).or_else(|| value.as_u64().map(u128::from)).unwrap()
}

#[test]
fn a_small_day_reconciles_with_the_ledger_and_the_same_seed_gives_the_same_day() {
    let directory = tempfile::tempdir().unwrap();
    let (output, report) = double11(directory.path(), "first", &["--seed", "7"]);
    succeeded(&output);
    let report = report.unwrap();
    assert!(report["checks"].as_array().unwrap().iter().all(|check| check["passed"] == true), "{report:#}");
    let acknowledged = &report["acknowledged"];
    let payments = acknowledged["payments"].as_u64().unwrap();
    assert!(payments > 30_000, "most of the 37,600 planned payments are paid: {payments}");
    assert!(acknowledged["refunds"].as_u64().unwrap() > 0 && acknowledged["red_packet_claims"].as_u64().unwrap() > 0);

    // The ledger left behind, read independently of the run.
    let options = Options { ledger: LedgerConfig { id_horizon_ns: Some(3_600_000_000_000) }, ..Options::default() };
    let (store, _) = Durable::<Platform>::open(&directory.path().join("first-data"), options).unwrap();
    let (gmv, settled, closed, paid, fees, revenue, auto_confirmed) = store.read_with_archive(|platform, archive| {
        let mut paid = Vec::new();
        platform
            .for_each_trade(archive, |t| {
                if t.paid_at.is_some() {
                    paid.push(t.clone());
                }
            })
            .unwrap();
        let gmv: u128 = paid.iter().map(|t| u128::from(t.amount)).sum();
        let settled: u128 = paid.iter().filter(|t| t.settled_at.is_some()).map(|t| u128::from(t.amount)).sum();
        let closed: u128 = paid.iter().filter(|t| t.settled_at.is_none()).map(|t| u128::from(t.amount)).sum();
        let fees: u128 = paid.iter().map(|t| u128::from(t.fee)).sum();
        // Settled when (or after) the confirmation fell due: by the clock.
        let auto_confirmed = paid
            .iter()
            .filter(|t| t.confirm_due_at.is_some_and(|due| t.settled_at.is_some_and(|at| at >= due)))
            .count();
        let revenue = platform.ledger().account(REVENUE).unwrap();
        platform.ledger().check_conservation().unwrap();
        (gmv, settled, closed, paid.len() as u64, fees, revenue.credits_posted - revenue.debits_posted, auto_confirmed)
    });
    assert!(auto_confirmed > 0, "escrow trades their buyers did not confirm");
    assert_eq!(acknowledged["auto_confirmed"].as_u64().unwrap(), auto_confirmed as u64, "the clock's confirmations");
    assert_eq!(gmv, u128::from(acknowledged["gmv_fen"].as_u64().unwrap()), "GMV is what the ledger's trades were paid");
    assert_eq!(paid, payments);
    assert_eq!(settled + closed, gmv, "every payment settled, or refunded in full before it could");
    let transfer_and_withdrawal_fees =
        acknowledged["transfer_fees_fen"].as_u64().unwrap() + acknowledged["withdrawal_fees_fen"].as_u64().unwrap();
    assert_eq!(fees + u128::from(transfer_and_withdrawal_fees), revenue, "fees are the revenue account");
    assert_eq!(fen(&report["ledger"]["revenue_fen"]), revenue);
    let ledger = &report["ledger"];
    assert_eq!(fen(&ledger["debits_posted_fen"]), fen(&ledger["credits_posted_fen"]));
    store.shutdown();

    // The charts and the page.
    let report_dir = directory.path().join("first-report");
    for chart in ["payments.png", "throughput.png", "latency.png", "gmv.png"] {
        let bytes = std::fs::read(report_dir.join(chart)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{chart}");
    }
    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    assert_eq!(html.matches("data:image/png;base64,").count(), 4);

    // The same seed: the same day, to the digest, here in the same data
    // directory (a finished run starts again: its checkpoint and archive
    // index go with its log). Another seed: another day.
    assert!(directory.path().join("first-data/double11.progress").exists(), "the run left a checkpoint");
    assert!(directory.path().join("first-data/archive.idx").exists(), "the run left an archive index");
    let (output, again) = double11(directory.path(), "first", &["--seed", "7"]);
    succeeded(&output);
    let again = again.unwrap();
    assert_eq!(again["digest"], report["digest"]);
    assert_eq!(again["acknowledged"]["gmv_fen"], report["acknowledged"]["gmv_fen"]);
    assert_eq!(again["ledger"], report["ledger"]);
    let (output, other) = double11(directory.path(), "other", &["--seed", "8"]);
    succeeded(&output);
    assert_ne!(other.unwrap()["digest"], report["digest"]);

    // A crash halfway, resumed from what is durable, ends where the
    // uninterrupted day ended: nothing acknowledged lost, nothing twice.
    // (Checkpoints every 20 ms: the resumed run skips to the last by count.)
    let crash = ["--seed", "7", "--crash-at", "50", "--checkpoint-every-ms", "20"];
    let (crashed, _) = double11(directory.path(), "crash", &crash);
    assert!(!crashed.status.success());
    let stderr = String::from_utf8_lossy(&crashed.stderr);
    let acknowledged_before: u64 = stderr
        .lines()
        .find_map(|line| line.split("; ").nth(1)?.strip_suffix(" commands acknowledged")?.parse().ok())
        .unwrap_or_else(|| panic!("the crash says what was acknowledged: {stderr}"));
    let (resumed, report_after) = double11(directory.path(), "crash", &["--seed", "7"]);
    succeeded(&resumed);
    let report_after = report_after.unwrap();
    let durable = report_after["resumed_after_commands"].as_u64().unwrap();
    assert!(durable >= acknowledged_before, "durable {durable} < acknowledged {acknowledged_before}");
    let skipped = report_after["resume_skipped_operations"].as_u64().unwrap();
    assert!(skipped > 0, "the resumed run skipped operations by count");
    assert_eq!(report_after["digest"], report["digest"]);
    assert_eq!(report_after["ledger"], report["ledger"]);
    assert!(report_after["checks"].as_array().unwrap().iter().all(|check| check["passed"] == true));

    // A crash in the settlement, after a tick and before the checkpoint past
    // it: the resumed run counts the journal's last commands as that tick's.
    // Then a crash after a tick sent without a wait (nothing was due by its
    // time), the last checkpoint ticks before it: the resumed run counts the
    // journal's ticks past the checkpoint one by one, sending none twice.
    let commands = |report: &Value| report["journal"]["commands"].as_u64().unwrap();
    let crashes = [
        ("settling", "100", "20", "after settlement tick 100\n"),
        ("quiet", "1000", "60000", "after settlement tick 1000 (sent without a wait)"),
    ];
    for (name, tick, checkpoint_every_ms, says) in crashes {
        let crash = ["--seed", "7", "--crash-in-settlement", tick, "--checkpoint-every-ms", checkpoint_every_ms];
        let (crashed, _) = double11(directory.path(), name, &crash);
        assert!(!crashed.status.success());
        assert!(String::from_utf8_lossy(&crashed.stderr).contains(says), "{name}");
        let (resumed, report_after) = double11(directory.path(), name, &["--seed", "7"]);
        succeeded(&resumed);
        let report_after = report_after.unwrap();
        assert_eq!(report_after["digest"], report["digest"], "{name}");
        assert_eq!(report_after["ledger"], report["ledger"], "{name}");
        let resumed_after = report_after["resumed_after_commands"].as_u64().unwrap();
        assert_eq!(resumed_after + commands(&report_after), commands(&report), "{name}: no command sent twice");
    }

    // Killed once the day is over (the fund's yield, which comes at the last
    // tick's time after ticks sent without a wait, is durable; the checks
    // and the report are not done): the resumed run sends nothing again.
    let mut killed = Command::new(env!("CARGO_BIN_EXE_zhifu"))
        .args(["double11", "--scale", SCALE, "--seed", "7", "--data-dir"])
        .arg(directory.path().join("yield-data"))
        .arg("--report-dir")
        .arg(directory.path().join("yield-report"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let progress = std::io::BufReader::new(killed.stderr.take().unwrap());
    assert!(progress.lines().any(|line| line.unwrap().starts_with("the day is over")), "the day ends");
    killed.kill().unwrap();
    assert!(!killed.wait().unwrap().success());
    assert!(!directory.path().join("yield-report/report.json").exists(), "killed before its report");
    let (resumed, report_after) = double11(directory.path(), "yield", &["--seed", "7"]);
    succeeded(&resumed);
    let report_after = report_after.unwrap();
    assert_eq!(report_after["digest"], report["digest"]);
    assert_eq!(report_after["resumed_after_commands"].as_u64().unwrap(), commands(&report), "all were durable");
    assert_eq!(commands(&report_after), 0, "none sent again");

    // Another seed in the same data directory is refused, not mixed in.
    let (crashed, _) = double11(directory.path(), "mixed", &["--seed", "7", "--crash-at", "10"]);
    assert!(!crashed.status.success());
    let (refused, _) = double11(directory.path(), "mixed", &["--seed", "9"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--fresh"));
}

#[test]
fn a_day_over_http_leaves_the_server_balanced() {
    let directory = tempfile::tempdir().unwrap();
    let server = support::Server::start(directory.path(), &["--rate-limit", "0", "--rate-limit-per-address", "0"]);
    let (output, report) = double11(
        directory.path(),
        "http",
        &["--scale", "0.00002", "--target", &server.base, "--admin-key", support::ADMIN_KEY, "--connections", "16"],
    );
    succeeded(&output);
    let report = report.unwrap();
    assert!(report["checks"].as_array().unwrap().iter().all(|check| check["passed"] == true), "{report:#}");
    let payments = report["acknowledged"]["payments"].as_u64().unwrap();
    assert!(payments > 3_000, "{payments} of 3,760 paid");
    // The server agrees on what was paid.
    let (status, check) = server.get("/v1/admin/ledger/check", Some(support::ADMIN_KEY));
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(check["balanced"], true);
    assert!(server.terminate());
}

#[test]
fn bad_options_get_clear_messages() {
    let directory = tempfile::tempdir().unwrap();
    for (args, message) in [
        (vec!["--scale", "0"], "scale must be between"),
        (vec!["--scale", "2"], "scale must be between"),
        (vec!["--crash-at", "150"], "--crash-at must be a percentage"),
        (vec!["--target", "http://127.0.0.1:9"], "--admin-key"),
    ] {
        let (output, _) = double11(directory.path(), "bad", &args);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"));
    }
}

/// Without a terminal (a log, `nohup`), progress comes as plain lines on
/// stderr rather than a bar drawn for no one; `--quiet` keeps it silent.
#[test]
fn progress_without_a_terminal_is_written_as_lines() {
    let directory = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_zhifu"))
        .args(["double11", "--scale", SCALE, "--data-dir"])
        .arg(directory.path().join("data"))
        .arg("--report-dir")
        .arg(directory.path().join("report"))
        .output()
        .expect("zhifu runs");
    succeeded(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("setup done in") && stderr.contains("the day begins"), "{stderr}");
    assert!(!stderr.contains('\r') && !stderr.contains("\u{1b}["), "no bar drawing: {stderr:?}");

    let (quiet, _) = double11(directory.path(), "quiet", &[]);
    succeeded(&quiet);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("setup done"));
}

/// `--fresh` discards a run only under the journal's lock: a run still
/// going in another process keeps its files and goes on.
#[test]
fn fresh_does_not_discard_a_run_that_is_still_going() {
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("going-data");
    let mut going = Command::new(env!("CARGO_BIN_EXE_zhifu"))
        .args(["double11", "--scale", "0.001", "--quiet", "--data-dir"])
        .arg(&data)
        .arg("--report-dir")
        .arg(directory.path().join("going-report"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("zhifu runs");
    let started = std::time::Instant::now();
    let has_log = || {
        std::fs::read_dir(&data)
            .is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("wal-")))
    };
    while !has_log() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "the run never opened its journal");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (fresh, _) = double11(directory.path(), "going", &["--scale", "0.001", "--fresh"]);
    let still_going = going.try_wait().unwrap().is_none();
    going.kill().ok();
    going.wait().ok();
    assert!(still_going, "the first run was still going when --fresh was tried (make it longer)");
    assert!(!fresh.status.success());
    assert!(String::from_utf8_lossy(&fresh.stderr).contains("in use by another process"));
    assert!(data.join("LOCK").exists() && has_log(), "the run's files are kept");
}
