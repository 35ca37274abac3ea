use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::CodecError;

/// AES-256-GCM under one key, with a random 96-bit nonce per seal. Sealed form:
/// `nonce(12) || ciphertext || tag(16)`, as the Temporal samples write it.
pub struct Aead {
    key: LessSafeKey,
}

impl std::fmt::Debug for Aead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aead(AES-256-GCM)")
    }
}

/// Bytes a sealed value adds: nonce and tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 16;

impl Aead {
    /// A cipher with a 32-byte `key`.
    pub fn new(key: &[u8]) -> Result<Self, CodecError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| CodecError::Crypto("key"))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Encrypts `plaintext`, binding `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CodecError::Crypto("random nonce"))?;
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| CodecError::Crypto("seal"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts what [`Aead::seal`] produced; `key_id` names the key in errors.
    pub fn open(&self, sealed: &[u8], aad: &[u8], key_id: &str) -> Result<Vec<u8>, CodecError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CodecError::Truncated { len: sealed.len() });
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| CodecError::Crypto("nonce"))?;
        let mut buffer = body.to_vec();
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| CodecError::Tampered {
                key_id: key_id.to_owned(),
            })?
            .len();
        buffer.truncate(len);
        Ok(buffer)
    }
}
