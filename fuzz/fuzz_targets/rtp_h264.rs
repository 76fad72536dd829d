#![no_main]
//! H.264 RTP packets (2-byte length each): parse, reassemble, decode, compose.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera_server::fuzzing::rtp_video(tessera_types::VideoCodec::H264, data);
});
