//! The codec's envelope parsing: a serialized payload opened as the proxy and the codec server
//! open one, and the codec server's JSON body.
#![no_main]
use std::sync::{Arc, LazyLock};

use prost::Message as _;

static CODEC: LazyLock<plinth_codec::Codec> = LazyLock::new(|| {
    let path =
        std::env::temp_dir().join(format!("plinth-fuzz-envelope-{}.json", std::process::id()));
    let (ring, _) = plinth_codec::KeyRing::init(&path).expect("a key ring in the temp dir");
    plinth_codec::Codec::new(Arc::new(ring), Default::default())
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = plinth_codec::Payload::decode(data) {
        let _ = CODEC.decode("fuzz", vec![payload]);
    }
    if let Ok(payloads) = plinth_codec::payloads_from_json(data) {
        let _ = CODEC.decode("fuzz", payloads);
    }
});
