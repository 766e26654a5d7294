//! The operator console and the merchant portal in a real browser: Debian's
//! Chromium, driven by Playwright (`tests/browser/desk_browser.py` lists what
//! it checks), against a real `zhifu serve`. Screenshots of each page are
//! kept in `target/tmp/desk-screenshots/` (docs/screenshots/ has them too).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::path::Path;
use std::process::Command;

use support::{ADMIN_KEY, Server};

#[test]
fn staff_and_merchants_work_in_chromium_through_the_console_and_the_portal() {
    let python = std::env::var("ZHIFU_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let modules = Command::new(&python).args(["-c", "import playwright"]).output();
    let chromium = std::env::var("ZHIFU_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    if !modules.is_ok_and(|output| output.status.success()) || !Path::new(&chromium).exists() {
        assert!(std::env::var("CI").is_err(), "CI must install chromium and playwright (scripts/test-all)");
        eprintln!("skipped: Chromium or Playwright is not installed (apt install chromium; pip install playwright)");
        return;
    }
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("desk-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/desk_browser.py");
    let output = Command::new(python)
        .arg(script)
        .args([server.base.as_str(), ADMIN_KEY, shots.to_str().unwrap()])
        .env("ZHIFU_CHROMIUM", &chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("all desk checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    server.assert_balanced();
}
