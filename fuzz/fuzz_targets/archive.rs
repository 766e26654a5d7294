//! An archive file and index of any bytes, opened as holding some length of
//! records, walked and read back: records or errors.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let Some((head, rest)) = bytes.split_first_chunk::<10>() else { return };
    let length = u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
    let split = usize::from(u16::from_le_bytes([head[4], head[5]])).min(rest.len());
    let (log, index) = rest.split_at(split);
    let _ = journal::fuzzing::archive(log, index, length);
});
