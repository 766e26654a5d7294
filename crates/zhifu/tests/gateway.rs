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
    drive(Command::new(python).arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/alipay_sdk/python_sdk.py")));
}

/// Runs an SDK script against a fresh server on the simulated clock: it
/// must pass every check, and the server's ledger must balance after.
fn drive(script: &mut Command) {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated"]);
    let output = script.args([&server.base, ADMIN_KEY]).output().unwrap();
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
    drive(Command::new("node").current_dir(directory).arg("node_sdk.mjs"));
}

/// What no SDK sends still gets Alipay's answer shape, signed — never a 5xx
/// (these run without the SDKs installed).
#[test]
fn malformed_gateway_requests_get_alipay_errors_never_a_server_error() {
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &[]);
    let form = |body: &str| {
        server
            .client
            .post(format!("{}/gateway.do", server.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let cases = [
        ("", "error_response", "40001", "isv.missing-app-id"),
        ("app_id=2013000000000001", "error_response", "40001", "isv.missing-method"),
        (
            "app_id=1&method=alipay.trade.query&sign=x&sign_type=RSA2&timestamp=2013-11-11+00:00:00",
            "alipay_trade_query_response",
            "40002",
            "isv.invalid-app-id",
        ),
        (
            "app_id=2013000000000001&method=alipay.trade.query&sign_type=RSA2&timestamp=x",
            "alipay_trade_query_response",
            "40001",
            "isv.missing-signature",
        ),
        ("method=alipay.nope&app_id=2013000000000001", "error_response", "40001", "isv.missing-signature"),
        // Broken percent-encoding is decoded leniently, as form decoders do.
        ("%ZZ=%&app_id=%FF%FE", "error_response", "40001", "isv.missing-method"),
    ];
    for (body, name, code, sub_code) in cases {
        let response = form(body);
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{body}");
        let answer: serde_json::Value = response.json().unwrap();
        assert_eq!(answer[name]["code"], code, "{body}: {answer}");
        assert_eq!(answer[name]["sub_code"], sub_code, "{body}: {answer}");
        assert!(answer["sign"].as_str().is_some_and(|sign| sign.len() > 300), "signed: {answer}");
    }
    // A GET with a query string works the same; an oversized body gets
    // Alipay's signed answer too, not a plain-text 413.
    let response = server.client.get(format!("{}/gateway.do?method=alipay.trade.query", server.base)).send().unwrap();
    let answer: serde_json::Value = response.json().unwrap();
    assert_eq!(answer["alipay_trade_query_response"]["sub_code"], "isv.missing-app-id");
    let huge = format!("method=alipay.trade.query&biz_content={}", "x".repeat(200_000));
    let response = form(&huge);
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let answer: serde_json::Value = response.json().unwrap();
    assert_eq!(answer["error_response"]["sub_code"], "isv.invalid-parameter", "{answer}");
    assert!(answer["sign"].as_str().is_some_and(|sign| sign.len() > 300), "signed: {answer}");
    assert!(server.terminate());
}
