#![no_main]
//! Opus RTP packets (2-byte length each): parse, decode, conceal.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera_server::fuzzing::rtp_audio(data);
});
