//! Checkout from a merchant's website: Alipay's official Python SDK makes
//! the signed `page.pay` / `wap.pay` URLs, and a buyer's HTTP session
//! follows them through zhifu's cashier (sign-in, pay, the signed return to
//! `return_url`, verified by the SDK). `tests/alipay_sdk/cashier_sdk.py`
//! lists what it checks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::process::Command;

use support::{ADMIN_KEY, Server};

#[test]
fn a_website_takes_a_page_pay_payment_through_the_cashier() {
    let python = std::env::var("ZHIFU_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let found = Command::new(&python).args(["-c", "import alipay.aop.api, Crypto"]).output();
    if !found.is_ok_and(|output| output.status.success()) {
        assert!(std::env::var("CI").is_err(), "CI must install alipay-sdk-python (see scripts/test-all)");
        eprintln!("skipped: alipay-sdk-python is not installed (pip install alipay-sdk-python)");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/alipay_sdk/cashier_sdk.py");
    let output = Command::new(python).arg(script).args([&server.base, ADMIN_KEY]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("all cashier checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    server.assert_balanced();
}
