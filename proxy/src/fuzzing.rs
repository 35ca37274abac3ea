//! Entry points for the fuzz targets in `fuzz/`: every parser of a client's bytes that runs
//! before authorization or on the payload path, reachable without a socket. Each must return,
//! never panic or hang, whatever the bytes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use tonic::codegen::http::HeaderValue;

use crate::rpc::{Rpc, all};
use crate::schema::SCHEMA;

/// Every RPC of the table, by index.
static RPCS: LazyLock<Vec<&'static Rpc>> = LazyLock::new(|| {
    all()
        .iter()
        .filter_map(|rpc| Rpc::at(&rpc.path()))
        .collect()
});

/// A codec with a throwaway key ring.
static CODEC: LazyLock<plinth_codec::Codec> = LazyLock::new(|| {
    let path = std::env::temp_dir().join(format!("plinth-fuzz-{}.json", std::process::id()));
    let (ring, _) = plinth_codec::KeyRing::init(&path).expect("a key ring in the temp dir");
    plinth_codec::Codec::new(Arc::new(ring), Default::default())
});

/// The RPC `selector` picks.
fn rpc(selector: u8) -> &'static Rpc {
    RPCS[usize::from(selector) % RPCS.len()]
}

/// gRPC framing and gzip decompression of a request body, as `grpc-encoding: gzip` or none.
pub fn unframe(body: &[u8], gzip: bool) {
    let encoding = gzip.then(|| HeaderValue::from_static("gzip"));
    let _ = crate::frame::unframe(&Bytes::copy_from_slice(body), encoding.as_ref(), 1 << 20);
}

/// The wire walker over any bytes, and the replacement of a top-level field.
pub fn walk(bytes: &[u8]) {
    for field in crate::wire::fields(bytes) {
        if field.is_err() {
            break;
        }
    }
    let _ = crate::wire::replace_field(bytes, 2, |held| held.to_vec());
}

/// The namespace of a request of the RPC `selector` picks, whole and from a prefix.
pub fn namespace(selector: u8, message: &[u8]) {
    let rpc = rpc(selector);
    let _ = rpc.namespace(message);
    let _ = rpc.namespace_in_prefix(message);
}

/// Sealing a request and opening a response of the RPC `selector` picks, in place in their
/// bytes (payloads, `Any` values, failures, namespaces acted on); and what sealing made opens.
pub fn rewrite(selector: u8, message: &[u8]) {
    let rpc = rpc(selector);
    if let Some(carrier) = rpc.request_payloads {
        let _ = crate::payloads::named(message, carrier);
        if let Ok(sealed) =
            crate::payloads::seal(message, carrier, &CODEC, "fuzz", &HashMap::new(), None)
        {
            let sealed = sealed.message.as_deref().unwrap_or(message);
            let opened = crate::payloads::open(sealed, carrier, &CODEC, "fuzz", &BTreeSet::new());
            assert!(opened.is_ok(), "what sealing made opens: {opened:?}");
        }
    }
    if let Some(carrier) = rpc.response_payloads {
        let _ = crate::payloads::open(message, carrier, &CODEC, "fuzz", &BTreeSet::new());
    }
    if let Some(status) = SCHEMA.carrier(crate::schema::STATUS) {
        let _ = crate::payloads::open(message, status, &CODEC, "fuzz", &BTreeSet::new());
    }
}
