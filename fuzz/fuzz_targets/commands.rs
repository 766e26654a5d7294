//! A logged command of any bytes, as the platform and the bare ledger decode
//! them: an error, or a command that encodes back to bytes that decode to it.
#![no_main]

use journal::StateMachine;
use platform::Platform;

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    if let Ok(command) = Platform::decode_command(bytes) {
        let mut again = Vec::new();
        Platform::encode_command(&command, &mut again);
        let decoded = Platform::decode_command(&again).expect("an encoded command decodes");
        assert_eq!(format!("{decoded:?}"), format!("{command:?}"));
    }
    if let Ok(batch) = journal::codec::decode_batch(bytes) {
        let mut again = Vec::new();
        journal::codec::encode_batch(&batch, &mut again);
        assert_eq!(journal::codec::decode_batch(&again).expect("an encoded batch decodes"), batch);
    }
});
