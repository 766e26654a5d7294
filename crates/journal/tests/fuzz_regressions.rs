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

/// An archive index that places a frame past any frame's size (its next
/// entry's offset far beyond): a read allocated what the index said and
/// the process died; now it is damage, named.
#[test]
fn an_archive_index_placing_a_frame_larger_than_any_is_an_error() {
    let bytes = input("archive-frame-size");
    // As the fuzz target splits its input: length, split, then the two files.
    let (head, rest) = bytes.split_first_chunk::<10>().unwrap();
    let length = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    let split = usize::from(u16::from_le_bytes([head[4], head[5]])).min(rest.len());
    let (log, index) = rest.split_at(split);
    let error = journal::fuzzing::archive(log, index, length).expect_err("refused");
    assert!(matches!(error, journal::JournalError::Corrupt { .. }), "{error}");
}
