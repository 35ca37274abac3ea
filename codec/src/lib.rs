//! Envelope encryption of Temporal payloads, so Temporal stores only ciphertext.
//!
//! Each namespace encrypts with its own random 256-bit data key, rotated by age and use count;
//! data keys travel with each payload wrapped by a key encryption key (KEK) from a
//! [`KekProvider`]: the file [`KeyRing`], or a hardware security module through PKCS#11
//! ([`Pkcs11Provider`]), whose keys never leave it. Payloads are sealed with
//! AES-256-GCM under a random 96-bit nonce, with the namespace and key id as associated data.
//! The Temporal samples' plain format (one key, no data key) is read too.

mod aead;
mod data_keys;
mod envelope;
mod error;
mod hsm;
mod json;
mod keyring;
pub mod server;
pub mod tokens;

pub use aead::{Aead, SEAL_OVERHEAD};
pub use data_keys::{DataKeyPolicy, wrap_aad, wrap_binding};
pub use envelope::{Codec, CodecSettings, SealedParts, is_encrypted, metadata};
pub use error::CodecError;
pub use hsm::{HsmError, Pkcs11Provider, Pkcs11Settings, SOFTHSM_MODULE};
pub use json::{payloads_from_json, payloads_to_json};
pub use keyring::{
    CountingProvider, KEY_BYTES, KekProvider, KeyInfo, KeyPurpose, KeyRing, KeyRingError,
    KeyRingNamespaceKeys, KeyState, NamespaceKeys, RESTORE_MARGIN, ShredMark, ShredOutcome,
    ShredSchedule, WatchedKeyRing, being_shredded, nothing_to_restore, rfc3339,
};

/// The Temporal payload type the codec reads and writes.
pub use temporalio_common::protos::temporal::api::common::v1::{Payload, Payloads};
