//! The namespace of a request: the first byte picks the RPC.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((rpc, message)) = data.split_first() {
        plinth_proxy::fuzzing::namespace(*rpc, message);
    }
});
