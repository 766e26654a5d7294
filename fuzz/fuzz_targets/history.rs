//! A history file and index of any bytes, opened as holding some count of
//! transfers and read back: transfers or errors.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Some((head, rest)) = bytes.split_first_chunk::<10>() else { return };
    let count = u64::from(u16::from_le_bytes([head[0], head[1]]));
    let split = usize::from(u16::from_le_bytes([head[2], head[3]])).min(rest.len());
    let (log, index) = rest.split_at(split);
    let _ = journal::fuzzing::history(log, index, count);
});
