//! The Alipay-compatible gateway driven by Alipay's official SDKs against a
//! real `zhifu serve`: `alipay-sdk-python` (PyPI) and `alipay-sdk` (npm),
//! both installed by `.ci/run`; elsewhere a test says it skipped.
//!
//! `tests/alipay_sdk/python_sdk.py`: till payments with payment codes
//! (fresh, reused, expired), precreate then pay, query, partial and repeated
//! refunds, a refund over the paid amount, close, cancel, a transfer, odd
//! amounts, a foreign signature, malformed and unsigned requests, and a
//! notification refused once, retried 4 minutes later and verified with the
//! SDK's functions. `tests/alipay_sdk/node_sdk.mjs`: the same ground with
//! the Node.js SDK, its notification checked by `checkNotifySignV2`. Every
//! answer's signature is verified by the SDK itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::process::Command;

use support::{ADMIN_KEY, Server};

fn python_with_sdk() -> Option<String> {
    let python = std::env::var("ZHIFU_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let found = Command::new(&python).args(["-c", "import alipay.aop.api, Crypto"]).output();
    found.is_ok_and(|output| output.status.success()).then_some(python)
}

#[test]
fn the_official_python_sdk_pays_refunds_and_verifies_every_answer() {
    let Some(python) = python_with_sdk() else {
        assert!(std::env::var("CI").is_err(), "CI must install alipay-sdk-python (see .ci/run)");
        eprintln!("skipped: alipay-sdk-python is not installed (pip install alipay-sdk-python)");
        return;
    };
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/alipay_sdk/python_sdk.py");
    let output = Command::new(python).args([script, &server.base, ADMIN_KEY]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("all gateway checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, check) = server.get("/v1/admin/ledger/check", Some(ADMIN_KEY));
    assert_eq!(check["balanced"], true);
    assert!(server.terminate());
}

#[test]
fn the_official_node_sdk_pays_refunds_and_checks_a_notification() {
    let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/alipay_sdk");
    let installed = std::path::Path::new(directory).join("node_modules/alipay-sdk/package.json").exists();
    let node = Command::new("node").arg("--version").output().is_ok_and(|output| output.status.success());
    if !installed || !node {
        assert!(std::env::var("CI").is_err(), "CI must install alipay-sdk (npm ci in tests/alipay_sdk, see .ci/run)");
        eprintln!("skipped: run `npm ci` in crates/zhifu/tests/alipay_sdk to install alipay-sdk");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--clock", "simulated"]);
    let output =
        Command::new("node").current_dir(directory).args(["node_sdk.mjs", &server.base, ADMIN_KEY]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("all gateway checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (_, check) = server.get("/v1/admin/ledger/check", Some(ADMIN_KEY));
    assert_eq!(check["balanced"], true);
    assert!(server.terminate());
}
