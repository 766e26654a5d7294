//! A gateway request's query and form body of any bytes, read as the
//! gateway reads them before it touches any state: the signed text, the
//! timestamp and the amounts, each exact (an amount prints back to itself).
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let split = bytes.iter().position(|&byte| byte == 0).unwrap_or(bytes.len());
    let (query, body) = bytes.split_at(split);
    let Ok(query) = std::str::from_utf8(query) else { return };
    if let Some((_, _, amounts)) = server::gateway::read_parameters_for_fuzzing(query, body.get(1..).unwrap_or_default()) {
        for fen in amounts {
            let yuan = server::gateway::params::fen_to_yuan(fen);
            assert_eq!(server::gateway::params::yuan_to_fen(&yuan), Some(fen));
        }
    }
});
