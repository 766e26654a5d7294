//! Fail-stop: a bug stops the process loudly, and a journal that can no
//! longer write says so — never a server that answers `ok` while writes fail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::Server;

/// A panic while applying a command (injected before the record with a
/// given sequence) ends the whole process with a non-zero status; a restart
/// recovers everything it acknowledged, and the command that panicked too
/// (it was durable before it was applied).
#[test]
fn a_panic_in_apply_stops_the_process_and_a_restart_recovers() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let (payee_id, payee) = server.user("payee");
    let (_, payer) = server.user("payer");
    server.top_up(&payer, 10_000);
    let sequence = server.get("/healthz", None).1["sequence"].as_u64().unwrap();
    // The next start panics before applying the second command from now.
    let panic_at = (sequence + 2).to_string();
    let mut server = server.restart_with(&["--clock", "simulated", "--fault-panic-at-sequence", &panic_at]);
    let transfer = |server: &Server| {
        server
            .client
            .post(format!("{}/v1/transfers", server.base))
            .bearer_auth(&payer)
            .json(&json!({ "to": payee_id, "amount": 100 }))
            .send()
    };
    assert_eq!(transfer(&server).unwrap().status(), StatusCode::CREATED);
    let panicked = transfer(&server);
    assert!(panicked.is_err(), "no answer for the command that panicked: {panicked:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.exited() {
            break status;
        }
        assert!(Instant::now() < deadline, "the process is still running after the panic");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{status}");
    let log = std::fs::read_to_string(server.data_dir.with_extension("log")).unwrap_or_default();
    assert!(log.contains("fault injected") && log.contains("zhifu: stopping"), "a clear line in the log:\n{log}");
    drop(server);
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    assert_eq!(server.available(&payee), 200, "both transfers: the second was durable before it panicked");
    server.assert_balanced();
}

/// A tiny tmpfs, unmounted when dropped (mounting needs root: CI runs as root).
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// A tmpfs of `bytes` mounted at `path` (created).
    fn mount(path: PathBuf, bytes: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(&path).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            assert!(std::env::var("CI").is_err(), "CI runs as root and must be able to mount a tmpfs");
            eprintln!("skipped: cannot mount a tmpfs (not root)");
            return None;
        }
        Some(SmallDisk { path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A full disk latches the journal: writes answer `503 unavailable`,
/// `/healthz` and `/readyz` answer 503 with the reason (and a log that can
/// no longer be written does not stop the server), and once space is freed
/// a restart recovers everything acknowledged.
#[test]
fn a_full_disk_latches_the_journal_and_healthz_says_so() {
    // The data directory and the server's log both on the small disk.
    let directory = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(directory.path().join("disk"), 3 << 20) else { return };
    let server = Server::start(&disk.path, &["--snapshot-every", "1000000", "--clock", "simulated"]);
    let (payee_id, payee) = server.user("payee");
    let (_, payer) = server.user("payer");
    server.top_up(&payer, 1_000_000_000);
    // Fill the disk but for a little room.
    let filler = disk.path.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "status=none"])
        .arg(format!("of={}", filler.display()))
        .status();
    let mut acknowledged = 0u64;
    let mut refused = None;
    for n in 0..20_000 {
        let body = json!({ "to": payee_id, "amount": 1, "memo": "x".repeat(150) });
        let (status, answer) =
            server.call_with(reqwest::Method::POST, "/v1/transfers", Some(&payer), Some(body), Some(&format!("f-{n}")));
        match status {
            StatusCode::CREATED => acknowledged += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                refused = Some(answer);
                break;
            }
            other => panic!("{other}: {answer}"),
        }
    }
    let refused = refused.expect("the disk filled up");
    assert_eq!(Server::error_code(&refused), "unavailable", "{refused}");
    let health = |path: &str| {
        let response = server.client.get(format!("{}{path}", server.base)).send().unwrap();
        (response.status(), response.json::<Value>().unwrap())
    };
    let (status, body) = health("/healthz");
    assert_eq!((status, body["status"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("failed")), "{body}");
    assert!(body["reason"].as_str().is_some_and(|reason| !reason.is_empty()), "{body}");
    assert_eq!(health("/readyz").0, StatusCode::SERVICE_UNAVAILABLE);
    // Every later write is refused, and says nothing was done.
    let (status, _) = server.post("/v1/topups", Some(&payer), json!({ "amount": 1, "bank": "ICBC" }));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Space freed and the node restarted: it recovers by itself, nothing acknowledged lost.
    std::fs::remove_file(&filler).unwrap();
    let mut server = server;
    server.restart();
    assert_eq!(server.get("/healthz", None).1["status"].as_str(), Some("ok"));
    assert!(server.available(&payee) >= acknowledged, "{} < {acknowledged}", server.available(&payee));
    server.assert_balanced();
}
