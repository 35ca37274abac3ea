use std::sync::Arc;

use prost::Message;

use crate::data_keys::{DataKeyPolicy, DataKeys, SealingKey};
use crate::keyring::KekProvider;
use crate::{Aead, CodecError, Payload};

/// Metadata keys and values of encrypted payloads.
pub mod metadata {
    /// Key of the payload's encoding.
    pub const ENCODING: &str = "encoding";
    /// Encoding of every encrypted payload (Plinth's and the Temporal samples').
    pub const ENCRYPTED: &[u8] = b"binary/encrypted";
    /// The key that sealed the payload: the KEK that wrapped its data key, or in the samples'
    /// format the key itself.
    pub const KEY_ID: &str = "encryption-key-id";
    /// The wrapped data key (as temporalio/temporal-proxy names it); absent in the samples'
    /// format.
    pub const DATA_KEY: &str = "encryption-dek";
    /// The namespace the payload was sealed for.
    pub const NAMESPACE: &str = "encryption-namespace";
    /// Present when the sealed payload was compressed first.
    pub const COMPRESSION: &str = "encryption-compression";
    /// The only compression: Snappy raw format.
    pub const SNAPPY: &[u8] = b"snappy";
}

/// How payloads are sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecSettings {
    /// When data keys are replaced.
    pub data_keys: DataKeyPolicy,
    /// Serialized payloads larger than this many bytes are compressed before sealing.
    pub compress_above: usize,
}

impl Default for CodecSettings {
    fn default() -> Self {
        Self {
            data_keys: DataKeyPolicy::default(),
            compress_above: 4096,
        }
    }
}

/// Whether `payload` is encrypted (in Plinth's or the samples' format).
pub fn is_encrypted(payload: &Payload) -> bool {
    payload.metadata.get(metadata::ENCODING).map(Vec::as_slice) == Some(metadata::ENCRYPTED)
}

/// Encrypts and decrypts payloads of any namespace.
#[derive(Debug)]
pub struct Codec {
    keys: DataKeys,
    compress_above: usize,
}

/// What opening a sealed payload reads of it: its encryption metadata and its data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealedParts<'a> {
    /// [`metadata::KEY_ID`].
    pub key_id: Option<&'a [u8]>,
    /// [`metadata::DATA_KEY`]: absent in the Temporal samples' format.
    pub data_key: Option<&'a [u8]>,
    /// [`metadata::NAMESPACE`].
    pub namespace: Option<&'a [u8]>,
    /// [`metadata::COMPRESSION`].
    pub compression: Option<&'a [u8]>,
    /// The ciphertext.
    pub data: &'a [u8],
}

impl<'a> SealedParts<'a> {
    /// The parts of a decoded payload.
    pub fn of(payload: &'a Payload) -> Self {
        let get = |key: &str| payload.metadata.get(key).map(Vec::as_slice);
        SealedParts {
            key_id: get(metadata::KEY_ID),
            data_key: get(metadata::DATA_KEY),
            namespace: get(metadata::NAMESPACE),
            compression: get(metadata::COMPRESSION),
            data: &payload.data,
        }
    }
}

impl Codec {
    /// A codec whose data keys are wrapped by `provider`.
    pub fn new(provider: Arc<dyn KekProvider>, settings: CodecSettings) -> Self {
        Self {
            keys: DataKeys::new(provider, settings.data_keys),
            compress_above: settings.compress_above,
        }
    }

    /// Whether its key provider's calls leave the process (a KMS), taking milliseconds: work
    /// that may call it belongs off a serving thread.
    pub fn provider_is_remote(&self) -> bool {
        self.keys.provider().remote()
    }

    /// Seals each payload for `namespace`; payloads already encrypted pass through.
    pub fn encode(
        &self,
        namespace: &str,
        payloads: Vec<Payload>,
    ) -> Result<Vec<Payload>, CodecError> {
        payloads
            .into_iter()
            .map(|p| self.encode_payload(namespace, p))
            .collect()
    }

    /// Opens each payload sealed for `namespace`; payloads not encrypted pass through.
    pub fn decode(
        &self,
        namespace: &str,
        payloads: Vec<Payload>,
    ) -> Result<Vec<Payload>, CodecError> {
        payloads
            .into_iter()
            .map(|p| self.decode_payload(namespace, p))
            .collect()
    }

    /// Seals one payload: the whole original `Payload` (metadata included) is the plaintext.
    pub fn encode_payload(&self, namespace: &str, payload: Payload) -> Result<Payload, CodecError> {
        if is_encrypted(&payload) {
            return Ok(payload);
        }
        let sealed = self.seal(namespace, &payload.encode_to_vec())?;
        let metadata = sealed
            .metadata(namespace)
            .map(|(name, value)| (name.to_owned(), value.to_vec()))
            .collect();
        Ok(Payload {
            metadata,
            data: sealed.data,
            ..Default::default()
        })
    }

    /// Seals one serialized `Payload` that is not encrypted into a serialized sealed one. The
    /// bytes given are the plaintext, so they come back from [`Codec::open_encoded`] as they
    /// were, fields of newer APIs included.
    pub fn seal_encoded(&self, namespace: &str, encoded: &[u8]) -> Result<Vec<u8>, CodecError> {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        let sealed = self.seal(namespace, encoded)?;
        let field_len = |len: usize| 1 + encoded_len_varint(len as u64) as usize + len;
        let mut out = Vec::with_capacity(field_len(sealed.data.len()) + 256);
        let field = |number: u32, value: &[u8], out: &mut Vec<u8>| {
            encode_key(number, WireType::LengthDelimited, out);
            encode_varint(value.len() as u64, out);
            out.extend_from_slice(value);
        };
        // Payload: 1 metadata (map entries: 1 key, 2 value), 2 data.
        for (name, value) in sealed.metadata(namespace) {
            encode_key(1, WireType::LengthDelimited, &mut out);
            encode_varint(
                (field_len(name.len()) + field_len(value.len())) as u64,
                &mut out,
            );
            field(1, name.as_bytes(), &mut out);
            field(2, value, &mut out);
        }
        field(2, &sealed.data, &mut out);
        Ok(out)
    }

    /// Compresses `plaintext` when it is large, and seals it under `namespace`'s data key.
    fn seal(&self, namespace: &str, plaintext: &[u8]) -> Result<Sealed, CodecError> {
        let compressed = plaintext.len() > self.compress_above;
        let snappy;
        let plaintext = if compressed {
            snappy = snap::raw::Encoder::new()
                .compress_vec(plaintext)
                .map_err(|_| CodecError::Crypto("compression"))?;
            &snappy
        } else {
            plaintext
        };
        let key = self.keys.for_sealing(namespace)?;
        let data = key
            .key
            .seal(plaintext, &key.payload_aad[usize::from(compressed)])?;
        Ok(Sealed {
            key,
            compressed,
            data,
        })
    }

    /// Opens one payload sealed by [`Codec::encode_payload`] or by the Temporal samples;
    /// payloads not encrypted pass through.
    pub fn decode_payload(&self, namespace: &str, payload: Payload) -> Result<Payload, CodecError> {
        if !is_encrypted(&payload) {
            return Ok(payload);
        }
        self.open_payload(namespace, &payload)
    }

    /// Opens one payload that [`is_encrypted`] says is encrypted, leaving it as it is.
    pub fn open_payload(&self, namespace: &str, payload: &Payload) -> Result<Payload, CodecError> {
        let plaintext = self.open_encoded(namespace, payload)?;
        Payload::decode(plaintext.as_slice())
            .map_err(|e| CodecError::Malformed(format!("sealed payload: {e}")))
    }

    /// Opens one payload that [`is_encrypted`] says is encrypted into the serialized `Payload`
    /// that was sealed.
    pub fn open_encoded(&self, namespace: &str, payload: &Payload) -> Result<Vec<u8>, CodecError> {
        self.open_parts(namespace, SealedParts::of(payload))
    }

    /// [`Codec::open_encoded`] of a payload read in place (the proxy reads payloads off the
    /// wire without decoding them).
    pub fn open_parts(
        &self,
        namespace: &str,
        sealed: SealedParts<'_>,
    ) -> Result<Vec<u8>, CodecError> {
        fn text<'v>(key: &str, value: Option<&'v [u8]>) -> Result<&'v str, CodecError> {
            let value =
                value.ok_or_else(|| CodecError::Malformed(format!("metadata {key} is missing")))?;
            std::str::from_utf8(value)
                .map_err(|_| CodecError::Malformed(format!("metadata {key} is not text")))
        }
        let key_id = text(metadata::KEY_ID, sealed.key_id)?;
        let Some(wrapped) = sealed.data_key else {
            return self.open_samples_format(namespace, key_id, sealed.data);
        };
        let sealed_for = text(metadata::NAMESPACE, sealed.namespace)?;
        if sealed_for != namespace {
            return Err(CodecError::WrongNamespace {
                expected: namespace.to_owned(),
                found: sealed_for.to_owned(),
            });
        }
        let compressed = match sealed.compression {
            None => false,
            Some(value) if value == metadata::SNAPPY => true,
            Some(_) => {
                return Err(CodecError::Malformed(format!(
                    "metadata {} names an unknown compression",
                    metadata::COMPRESSION
                )));
            }
        };
        let key = self.keys.for_opening(namespace, key_id, wrapped)?;
        let aad = payload_aad(namespace, key_id, wrapped, compressed);
        let plaintext = key.open(sealed.data, &aad, key_id)?;
        if !compressed {
            return Ok(plaintext);
        }
        snap::raw::Decoder::new()
            .decompress_vec(&plaintext)
            .map_err(|e| CodecError::Malformed(format!("compressed payload: {e}")))
    }

    /// The samples' format: `nonce || ciphertext || tag` under key `key_id` itself, no
    /// associated data; only a key imported for that format and `namespace` opens it.
    fn open_samples_format(
        &self,
        namespace: &str,
        key_id: &str,
        data: &[u8],
    ) -> Result<Vec<u8>, CodecError> {
        let raw = self
            .keys
            .provider()
            .direct_key(key_id, namespace)
            .ok_or_else(|| CodecError::UnknownKey(key_id.to_owned()))?;
        Aead::new(&raw)?.open(data, b"", key_id)
    }
}

/// A sealed plaintext, and what its payload's metadata names.
struct Sealed {
    key: Arc<SealingKey>,
    compressed: bool,
    data: Vec<u8>,
}

impl Sealed {
    /// The metadata of the payload that carries it, sealed for `namespace`.
    fn metadata<'a>(
        &'a self,
        namespace: &'a str,
    ) -> impl Iterator<Item = (&'static str, &'a [u8])> {
        [
            (metadata::ENCODING, metadata::ENCRYPTED),
            (metadata::KEY_ID, self.key.kek_id.as_bytes()),
            (metadata::DATA_KEY, &self.key.wrapped),
            (metadata::NAMESPACE, namespace.as_bytes()),
        ]
        .into_iter()
        .chain(
            self.compressed
                .then_some((metadata::COMPRESSION, metadata::SNAPPY)),
        )
    }
}

/// Binds the ciphertext to its namespace, KEK, data key and compression.
pub(crate) fn payload_aad(
    namespace: &str,
    kek_id: &str,
    wrapped: &[u8],
    compressed: bool,
) -> Vec<u8> {
    let compressed: &[u8] = if compressed { b"true" } else { b"false" };
    [
        b"plinth/payload/v1\0",
        namespace.as_bytes(),
        b"\0",
        kek_id.as_bytes(),
        b"\0",
        compressed,
        b"\0",
        wrapped,
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::{CountingProvider, KeyRing};

    fn codec(dir: &std::path::Path, settings: CodecSettings) -> (Codec, Arc<KeyRing>) {
        let (ring, _) = KeyRing::init(&dir.join("keyring.json")).unwrap();
        let ring = Arc::new(ring);
        (Codec::new(ring.clone(), settings), ring)
    }

    /// A counted key ring that can be taken down, as a KMS or HSM outage would.
    #[derive(Debug)]
    struct Flaky {
        ring: CountingProvider,
        down: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn new(dir: &std::path::Path) -> Arc<Self> {
            let (ring, _) = KeyRing::init(&dir.join("keyring.json")).unwrap();
            Arc::new(Self {
                ring: CountingProvider::new(Arc::new(ring)),
                down: Default::default(),
            })
        }

        fn set_down(&self, down: bool) {
            self.down.store(down, std::sync::atomic::Ordering::Relaxed);
        }

        fn up(&self) -> Result<(), CodecError> {
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(CodecError::Provider {
                    provider: "test",
                    key: "any".into(),
                    reason: "down".into(),
                });
            }
            Ok(())
        }
    }

    impl KekProvider for Flaky {
        fn active_kek(&self) -> Result<String, CodecError> {
            self.ring.active_kek()
        }
        fn wrap(&self, kek_id: &str, dek: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
            self.up()?;
            self.ring.wrap(kek_id, dek, aad)
        }
        fn unwrap(&self, kek_id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
            self.up()?;
            self.ring.unwrap(kek_id, wrapped, aad)
        }
    }

    #[test]
    fn with_keys_per_namespace_a_namespace_seals_under_its_own_key_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (mut ring, _) = KeyRing::init(&path).unwrap();
        let (orders, _) = ring.ensure_namespace("orders").unwrap();
        let settings = CodecSettings {
            data_keys: DataKeyPolicy {
                per_namespace: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let codec = Codec::new(Arc::new(KeyRing::load(&path).unwrap()), settings);
        let sealed = codec.encode("orders", vec![payload(b"1")]).unwrap();
        assert_eq!(sealed[0].metadata[metadata::KEY_ID], orders.as_bytes());
        let refused = codec.encode("payments", vec![payload(b"2")]).unwrap_err();
        assert!(
            matches!(refused, CodecError::NoNamespaceKey(_)),
            "{refused}"
        );
    }

    #[test]
    fn the_provider_is_called_once_per_data_key_not_per_payload() {
        let dir = tempfile::tempdir().unwrap();
        let provider = Flaky::new(dir.path());
        let sealer = Codec::new(provider.clone(), CodecSettings::default());
        let opener = Codec::new(provider.clone(), CodecSettings::default());
        for namespace in ["payments", "orders"] {
            let sealed = sealer
                .encode(namespace, (0..500).map(|i| payload(&[i as u8])).collect())
                .unwrap();
            opener.decode(namespace, sealed).unwrap();
        }
        assert_eq!(
            provider.ring.calls(),
            (2, 2),
            "one wrap and one unwrap per namespace"
        );
    }

    #[test]
    fn while_the_provider_is_down_cached_keys_serve_and_a_new_data_key_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let provider = Flaky::new(dir.path());
        let codec = Codec::new(provider.clone(), CodecSettings::default());
        let sealed = codec.encode("payments", vec![payload(b"1")]).unwrap();
        codec.decode("payments", sealed.clone()).unwrap();
        provider.set_down(true);
        assert_eq!(codec.decode("payments", sealed).unwrap(), [payload(b"1")]);
        codec.encode("payments", vec![payload(b"2")]).unwrap();
        let refused = codec.encode("orders", vec![payload(b"3")]).unwrap_err();
        assert!(matches!(refused, CodecError::Provider { .. }), "{refused}");
    }

    #[test]
    fn an_unwrapped_key_past_its_cache_lifetime_is_unwrapped_again() {
        let dir = tempfile::tempdir().unwrap();
        let provider = Flaky::new(dir.path());
        let settings = CodecSettings {
            data_keys: DataKeyPolicy {
                cache_lifetime: std::time::Duration::ZERO,
                ..Default::default()
            },
            ..Default::default()
        };
        let sealer = Codec::new(provider.clone(), CodecSettings::default());
        let opener = Codec::new(provider.clone(), settings);
        let sealed = sealer.encode("payments", vec![payload(b"1")]).unwrap();
        for _ in 0..3 {
            opener.decode("payments", sealed.clone()).unwrap();
        }
        assert_eq!(provider.ring.calls().1, 3);
    }

    fn payload(data: &[u8]) -> Payload {
        Payload {
            metadata: HashMap::from([("encoding".to_owned(), b"json/plain".to_vec())]),
            data: data.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn every_shape_round_trips_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let (codec, _) = codec(dir.path(), CodecSettings::default());
        let large = "marker ".repeat(10_000).into_bytes();
        let shapes = vec![
            vec![payload(b"\"single\"")],
            (0..20)
                .map(|i| payload(format!("{i}").as_bytes()))
                .collect(),
            vec![payload(b"")],
            vec![payload(&large)],
            vec![],
        ];
        for original in shapes {
            let sealed = codec.encode("payments", original.clone()).unwrap();
            assert!(sealed.iter().all(is_encrypted));
            for s in &sealed {
                assert!(!s.data.windows(6).any(|w| w == b"marker" || w == b"single"));
            }
            assert_eq!(codec.decode("payments", sealed).unwrap(), original);
        }
        let sealed = codec.encode_payload("payments", payload(&large)).unwrap();
        assert_eq!(sealed.metadata[metadata::COMPRESSION], metadata::SNAPPY);
        assert!(
            sealed.data.len() < large.len() / 10,
            "compressed before sealing"
        );
        let twice = codec.encode_payload("payments", sealed.clone()).unwrap();
        assert_eq!(twice, sealed, "encrypted payloads pass through");
        assert_eq!(
            codec.decode_payload("payments", payload(b"1")).unwrap(),
            payload(b"1")
        );
    }

    #[test]
    fn a_serialized_payload_opens_to_the_bytes_that_were_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let (codec, _) = codec(dir.path(), CodecSettings::default());
        // A field from a newer API (9999, length-delimited), after the payload's own.
        let newer = [0xfa, 0xf0, 0x04, 3, b'n', b'e', b'w'];
        // The second is compressed before sealing.
        for data in [&b"\"secret\""[..], &[b'x'; 8192]] {
            let plaintext = [payload(data).encode_to_vec(), newer.to_vec()].concat();
            let sealed =
                Payload::decode(&codec.seal_encoded("payments", &plaintext).unwrap()[..]).unwrap();
            assert!(is_encrypted(&sealed));
            let direct = codec
                .encode_payload("payments", Payload::decode(&plaintext[..]).unwrap())
                .unwrap();
            assert_eq!(
                sealed.metadata, direct.metadata,
                "the same metadata either way"
            );
            assert!(!sealed.data.windows(6).any(|w| w == b"secret"));
            assert_eq!(codec.open_encoded("payments", &sealed).unwrap(), plaintext);
        }
    }

    #[test]
    fn each_fault_has_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let (codec, _) = codec(dir.path(), CodecSettings::default());
        let sealed = codec
            .encode_payload("payments", payload(b"\"secret\""))
            .unwrap();

        let moved = codec.decode_payload("search", sealed.clone()).unwrap_err();
        assert!(
            matches!(moved, CodecError::WrongNamespace { .. }),
            "{moved}"
        );

        let mut relabelled = sealed.clone();
        relabelled
            .metadata
            .insert(metadata::NAMESPACE.into(), b"search".to_vec());
        let err = codec.decode_payload("search", relabelled).unwrap_err();
        assert!(matches!(err, CodecError::Tampered { .. }), "{err}");

        let mut flipped = sealed.clone();
        flipped.data[20] ^= 1;
        let err = codec.decode_payload("payments", flipped).unwrap_err();
        assert!(matches!(err, CodecError::Tampered { .. }), "{err}");

        let mut unknown = sealed.clone();
        unknown
            .metadata
            .insert(metadata::KEY_ID.into(), b"kek-gone".to_vec());
        let err = codec.decode_payload("payments", unknown).unwrap_err();
        assert_eq!(err, CodecError::UnknownKey("kek-gone".into()));

        let mut truncated = sealed;
        truncated.data.truncate(10);
        let err = codec.decode_payload("payments", truncated).unwrap_err();
        assert_eq!(err, CodecError::Truncated { len: 10 });
    }

    #[test]
    fn rotation_seals_with_the_new_key_and_opens_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        drop(KeyRing::init(&path).unwrap());
        let ring = KeyRing::load(&path).unwrap();
        let before = Codec::new(Arc::new(ring), CodecSettings::default());
        let old = before.encode_payload("payments", payload(b"old")).unwrap();
        let mut ring = KeyRing::load_for_change(&path).unwrap();
        let new_id = ring.rotate().unwrap();
        let after = Codec::new(Arc::new(ring), CodecSettings::default());
        let new = after.encode_payload("payments", payload(b"new")).unwrap();
        assert_eq!(new.metadata[metadata::KEY_ID], new_id.as_bytes());
        assert_ne!(
            old.metadata[metadata::KEY_ID],
            new.metadata[metadata::KEY_ID]
        );
        assert_eq!(
            after.decode_payload("payments", old).unwrap(),
            payload(b"old")
        );
    }

    #[test]
    fn data_keys_rotate_after_their_use_limit() {
        let dir = tempfile::tempdir().unwrap();
        let settings = CodecSettings {
            data_keys: DataKeyPolicy {
                max_uses: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let (codec, _) = codec(dir.path(), settings);
        let sealed = codec
            .encode("payments", (0..7).map(|i| payload(&[i])).collect())
            .unwrap();
        let keys: Vec<&Vec<u8>> = sealed
            .iter()
            .map(|p| &p.metadata[metadata::DATA_KEY])
            .collect();
        assert_eq!(keys[0], keys[2]);
        assert_ne!(keys[2], keys[3]);
        assert_eq!(keys[3], keys[5]);
        assert_ne!(keys[5], keys[6]);
        let other = codec.encode_payload("search", payload(b"x")).unwrap();
        assert_ne!(
            &other.metadata[metadata::DATA_KEY],
            keys[6],
            "one data key per namespace"
        );
        let opened = codec.decode("payments", sealed).unwrap();
        assert_eq!(opened[6], payload(&[6]));
    }

    #[test]
    fn no_nonce_repeats_under_a_data_key() {
        let dir = tempfile::tempdir().unwrap();
        let (codec, _) = codec(dir.path(), CodecSettings::default());
        let same = payload(b"the same plaintext every time");
        let sealed = codec.encode("payments", vec![same.clone(); 1000]).unwrap();
        let data_keys: HashSet<&Vec<u8>> = sealed
            .iter()
            .map(|p| &p.metadata[metadata::DATA_KEY])
            .collect();
        assert_eq!(data_keys.len(), 1, "one data key sealed them all");
        let nonces: HashSet<&[u8]> = sealed.iter().map(|p| &p.data[..12]).collect();
        assert_eq!(nonces.len(), sealed.len());
        for opened in codec.decode("payments", sealed).unwrap() {
            assert_eq!(opened, same);
        }
    }
}
