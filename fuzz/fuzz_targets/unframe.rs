//! gRPC framing and gzip decompression of a request body: the first byte picks gzip or none.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((gzip, body)) = data.split_first() {
        plinth_proxy::fuzzing::unframe(body, gzip & 1 == 1);
    }
});
