#![no_main]
//! One WebSocket signalling message (JSON text), as the server reads it.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera_server::fuzzing::signalling(data);
});
