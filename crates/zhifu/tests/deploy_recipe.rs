//! The deployment recipe of `docs/deploy/` (etcd, three PostgreSQL nodes
//! under Patroni in strict synchronous mode, two zhifu nodes, HAProxy
//! routing by /readyz), run from its own files by its test script, which
//! kills the PostgreSQL primary's machine and then the zhifu leader under
//! load: every acknowledged payment must be there exactly once.

use std::process::Command;

#[test]
fn the_deployment_recipe_survives_its_primary_and_its_leader() {
    let tools = ["patroni", "etcd", "haproxy"];
    let missing: Vec<&str> = tools
        .into_iter()
        .filter(|tool| Command::new("which").arg(tool).output().map_or(true, |o| !o.status.success()))
        .collect();
    if !missing.is_empty() {
        assert!(std::env::var("CI").is_err(), "CI must install {missing:?} (see .ci/run)");
        eprintln!("skipped: {missing:?} not installed");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/deploy/test-recipe.sh");
    let output = Command::new("bash").arg(script).arg(env!("CARGO_BIN_EXE_zhifu")).output().expect("the script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("PASS"), "{stdout}");
    eprintln!("{stdout}");
}
