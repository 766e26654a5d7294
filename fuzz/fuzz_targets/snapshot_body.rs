//! A snapshot body of any bytes (past the checksums random bytes never
//! pass), rebuilt as the platform and as the bare ledger: a machine or an
//! error, and no allocation beyond what the bytes could hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let _ = journal::fuzzing::snapshot_body::<platform::Platform>(bytes);
    let _ = journal::fuzzing::snapshot_body::<ledger::Ledger>(bytes);
});
