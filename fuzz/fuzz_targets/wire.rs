//! The protobuf wire walker, over any bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plinth_proxy::fuzzing::walk(data));
