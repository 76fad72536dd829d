#![no_main]
//! An SDP offer: our section reader, webrtc-rs's parser, candidate rewriting.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera_server::fuzzing::sdp(data);
});
