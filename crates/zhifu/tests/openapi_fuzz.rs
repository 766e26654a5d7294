//! The API fuzzed from its own OpenAPI document with schemathesis (PyPI):
//! generated requests, as the admin and as a user with money, must never get
//! a 5xx, a crash, or a response that disagrees with the schema. `.ci/run`
//! installs schemathesis; elsewhere the test says it skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::process::Command;

use support::{ADMIN_KEY, Server};

/// Examples per operation and phase: enough to find what is broken in
/// seconds, bounded so that CI stays fast.
const EXAMPLES: &str = "30";

#[test]
fn schemathesis_finds_no_failure() {
    if Command::new("st").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "CI must install schemathesis (pip install schemathesis)");
        eprintln!("skipped: schemathesis (st) is not installed");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let server = Server::start(directory.path(), &["--clock", "simulated", "--rate-limit", "100000"]);
    let (_, user) = server.user("fuzzer");
    server.top_up(&user, 1_000_000_000);
    // The user's pass leaves out rolling its own key: a roll that ends the
    // key at once would leave the rest of the pass answering 401.
    for (key, excluded) in [(ADMIN_KEY, "/none"), (user.as_str(), "/v1/api-keys/roll")] {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
        let output = Command::new("st")
            .args(["--config-file", config, "run", &format!("{}/openapi.json", server.base)])
            .args(["--header", &format!("Authorization: Bearer {key}")])
            .args(["--exclude-path", excluded])
            // One worker: schemathesis' generator (hypothesis on CPython 3.11) parses
            // lambdas with `ast.parse`, which is not thread-safe and fails at random
            // ("AST constructor recursion depth mismatch") with more.
            .args(["--max-examples", EXAMPLES, "--checks", "all", "--generation-deterministic", "--workers", "1"])
            .env("NO_COLOR", "1")
            .current_dir(directory.path())
            .output()
            .expect("st runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "schemathesis found failures:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    server.assert_balanced();
}
