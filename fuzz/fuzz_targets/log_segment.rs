//! A log segment of any bytes: its records up to a torn tail, or a clear error.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let _ = journal::fuzzing::log_segment(bytes);
});
