//! Sealing and opening payloads in a message's bytes: the first byte picks the RPC.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((rpc, message)) = data.split_first() {
        plinth_proxy::fuzzing::rewrite(*rpc, message);
    }
});
