//! Inputs the fuzzers in `fuzz/` found (docs/testing.md), kept as tests:
//! each must now come back as an error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

fn input(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions").join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A snapshot body whose transfers in memory start mid-chunk: the ledger's
/// restore asserted on it, so a damaged snapshot (decoded before its digest
/// is checked) stopped the start instead of being passed over.
#[test]
fn a_snapshot_body_with_a_window_mid_chunk_is_an_error() {
    let bytes = input("snapshot_body-window-start");
    let error = journal::fuzzing::snapshot_body::<ledger::Ledger>(&bytes).err().expect("refused");
    assert!(error.contains("chunk"), "{error}");
}
