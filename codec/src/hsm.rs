//! Key encryption keys held in a hardware security module, through PKCS#11: AES-256 keys
//! generated inside the token, sensitive and never extractable. Data keys are sealed and
//! opened with AES-GCM inside it, so no KEK ever reaches Plinth's memory or disk.
//!
//! The token's Plinth keys are the ring: each key's label is its id, ids sort by creation
//! time, and the newest is active. `plinth keys rotate` makes a new one; every proxy and
//! codec server reads the token's keys again within [`RELIST_AFTER`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use crate::keyring::new_key_id;
use crate::{CodecError, KEY_BYTES, KekProvider, KeyInfo, KeyPurpose, KeyState};

/// How long a listing of the token's keys is trusted before it is read again.
pub const RELIST_AFTER: Duration = Duration::from_secs(1);
/// What Plinth's keys carry in `CKA_ID`, telling them from the token's other objects.
const PLINTH_KEY_ID: &[u8] = b"plinth-kek";
/// AES-GCM's nonce and tag lengths.
const NONCE_BYTES: usize = 12;
const TAG_BITS: u64 = 128;

/// Where the module and the token are.
#[derive(Clone)]
pub struct Pkcs11Settings {
    /// The PKCS#11 library, such as SoftHSM2's `libsofthsm2.so`.
    pub module: PathBuf,
    /// The label of the token holding Plinth's keys.
    pub token: String,
    /// The token's user PIN.
    pub pin: String,
}

impl std::fmt::Debug for Pkcs11Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Settings")
            .field("module", &self.module)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// Why the token could not be used; no variant carries the PIN or key material.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The module could not be loaded or initialised.
    #[error("PKCS#11 module {}: {reason}", module.display())]
    Module {
        /// The library.
        module: PathBuf,
        /// What failed.
        reason: String,
    },
    /// No slot holds a token with this label.
    #[error("PKCS#11: no token labelled {0:?}")]
    NoToken(String),
    /// Logging in, or an operation on the token, failed.
    #[error("PKCS#11 token {token:?}: {operation}: {reason}")]
    Token {
        /// The token.
        token: String,
        /// What was being done.
        operation: &'static str,
        /// The module's answer.
        reason: String,
    },
    /// The token holds no Plinth key.
    #[error("PKCS#11 token {0:?} holds no Plinth key: run `plinth keys init`")]
    Empty(String),
}

/// The token's Plinth keys as last listed.
#[derive(Default)]
struct Listing {
    /// Key id (label) to object handle, oldest first.
    keys: BTreeMap<String, ObjectHandle>,
    at: Option<Instant>,
}

/// KEKs in a PKCS#11 token.
pub struct Pkcs11Provider {
    token: String,
    /// One logged-in session: PKCS#11 sessions serve one call at a time.
    session: Mutex<Session>,
    listing: Mutex<Listing>,
    _context: Pkcs11,
}

impl std::fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Provider {
    /// Loads the module, finds the token and logs in.
    pub fn open(settings: &Pkcs11Settings) -> Result<Self, HsmError> {
        let module_error = |reason: String| HsmError::Module {
            module: settings.module.clone(),
            reason,
        };
        let context = Pkcs11::new(&settings.module).map_err(|e| module_error(e.to_string()))?;
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| module_error(e.to_string()))?;
        let token_error = |operation| {
            let token = settings.token.clone();
            move |e: cryptoki::error::Error| HsmError::Token {
                token,
                operation,
                reason: e.to_string(),
            }
        };
        let slot = context
            .get_slots_with_token()
            .map_err(token_error("list slots"))?
            .into_iter()
            .find(|slot| {
                context
                    .get_token_info(*slot)
                    .is_ok_and(|info| info.label() == settings.token)
            })
            .ok_or_else(|| HsmError::NoToken(settings.token.clone()))?;
        let session = context
            .open_rw_session(slot)
            .map_err(token_error("open a session"))?;
        session
            .login(
                UserType::User,
                Some(&AuthPin::new(settings.pin.clone().into())),
            )
            .map_err(token_error("log in"))?;
        Ok(Self {
            token: settings.token.clone(),
            session: Mutex::new(session),
            listing: Mutex::default(),
            _context: context,
        })
    }

    /// Generates a new key in the token, which becomes the active one; returns its id.
    pub fn generate(&self) -> Result<String, HsmError> {
        let id = new_key_id().map_err(|_| HsmError::Token {
            token: self.token.clone(),
            operation: "name a key",
            reason: "the system random source failed".into(),
        })?;
        let template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::ValueLen((KEY_BYTES as u64).into()),
            Attribute::Label(id.clone().into_bytes()),
            Attribute::Id(PLINTH_KEY_ID.to_vec()),
        ];
        self.session
            .lock()
            .expect("session lock")
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| self.token_error("generate a key", e))?;
        self.listing.lock().expect("listing lock").at = None;
        Ok(id)
    }

    /// Every Plinth key in the token, oldest first; the newest is active.
    pub fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        let keys = self.keys(true)?;
        let newest = keys.keys().next_back().cloned();
        Ok(keys
            .into_keys()
            .map(|id| KeyInfo {
                created: created_of(&id),
                state: if Some(&id) == newest.as_ref() {
                    KeyState::Active
                } else {
                    KeyState::DecryptOnly
                },
                purpose: KeyPurpose::Kek,
                id,
            })
            .collect())
    }

    /// The token's Plinth keys.
    fn keys(&self, fresh: bool) -> Result<BTreeMap<String, ObjectHandle>, HsmError> {
        self.with_keys(fresh, BTreeMap::clone)
    }

    /// `f` of the token's Plinth keys, listed again when `fresh` or when the listing is
    /// older than [`RELIST_AFTER`]; every payload asks, so nothing is copied otherwise.
    fn with_keys<T>(
        &self,
        fresh: bool,
        f: impl FnOnce(&BTreeMap<String, ObjectHandle>) -> T,
    ) -> Result<T, HsmError> {
        let mut listing = self.listing.lock().expect("listing lock");
        if !fresh && listing.at.is_some_and(|at| at.elapsed() < RELIST_AFTER) {
            return Ok(f(&listing.keys));
        }
        let session = self.session.lock().expect("session lock");
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Id(PLINTH_KEY_ID.to_vec()),
        ];
        let handles = session
            .find_objects(&template)
            .map_err(|e| self.token_error("list keys", e))?;
        let mut keys = BTreeMap::new();
        for handle in handles {
            let attributes = session
                .get_attributes(handle, &[AttributeType::Label])
                .map_err(|e| self.token_error("read a key's label", e))?;
            for attribute in attributes {
                if let Attribute::Label(label) = attribute
                    && let Ok(label) = String::from_utf8(label)
                {
                    keys.insert(label, handle);
                }
            }
        }
        *listing = Listing {
            keys,
            at: Some(Instant::now()),
        };
        Ok(f(&listing.keys))
    }

    /// The handle of key `id`; the token is listed again once when it is not known, at most
    /// every [`RELIST_AFTER`], so made-up ids cost no more than that.
    fn handle(&self, id: &str) -> Result<ObjectHandle, CodecError> {
        let known = self
            .with_keys(false, |keys| keys.get(id).copied())
            .map_err(|e| self.unavailable(id, e))?;
        if let Some(handle) = known {
            return Ok(handle);
        }
        let stale = self
            .listing
            .lock()
            .expect("listing lock")
            .at
            .is_some_and(|at| at.elapsed() >= RELIST_AFTER / 4);
        if stale {
            let found = self
                .with_keys(true, |keys| keys.get(id).copied())
                .map_err(|e| self.unavailable(id, e))?;
            if let Some(handle) = found {
                return Ok(handle);
            }
        }
        Err(CodecError::UnknownKey(id.to_owned()))
    }

    fn token_error(&self, operation: &'static str, e: cryptoki::error::Error) -> HsmError {
        HsmError::Token {
            token: self.token.clone(),
            operation,
            reason: e.to_string(),
        }
    }

    fn unavailable(&self, key: &str, e: HsmError) -> CodecError {
        CodecError::Provider {
            provider: "pkcs11",
            key: key.to_owned(),
            reason: e.to_string(),
        }
    }

    fn gcm(
        &self,
        kek_id: &str,
        nonce: &mut [u8; NONCE_BYTES],
        aad: &[u8],
        input: &[u8],
        seal: bool,
    ) -> Result<Vec<u8>, CodecError> {
        let handle = self.handle(kek_id)?;
        let params = GcmParams::new(nonce, aad, TAG_BITS.into())
            .map_err(|_| CodecError::Crypto("AES-GCM parameters"))?;
        let mechanism = Mechanism::AesGcm(params);
        let session = self.session.lock().expect("session lock");
        let result = if seal {
            session.encrypt(&mechanism, handle, input)
        } else {
            session.decrypt(&mechanism, handle, input)
        };
        use cryptoki::error::{Error, RvError};
        result.map_err(|e| match e {
            // A tag that does not verify is an altered key, not an outage (SoftHSM says so
            // with a general error). Either way nothing is opened.
            Error::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError,
                _,
            ) if !seal => CodecError::Tampered {
                key_id: kek_id.to_owned(),
            },
            e => self.unavailable(kek_id, self.token_error("AES-GCM", e)),
        })
    }
}

impl KekProvider for Pkcs11Provider {
    fn active_kek(&self) -> Result<String, CodecError> {
        self.with_keys(false, |keys| keys.keys().next_back().cloned())
            .map_err(|e| self.unavailable("(active)", e))?
            .ok_or(CodecError::NoActiveKey)
    }

    fn wrap(&self, kek_id: &str, dek: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        let mut nonce = [0u8; NONCE_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| CodecError::Crypto("random nonce"))?;
        let sealed = self.gcm(kek_id, &mut nonce.clone(), aad, dek, true)?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&sealed);
        Ok(wrapped)
    }

    fn unwrap(&self, kek_id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        let Some((nonce, sealed)) = wrapped.split_first_chunk::<NONCE_BYTES>() else {
            return Err(CodecError::Truncated { len: wrapped.len() });
        };
        self.gcm(kek_id, &mut nonce.to_owned(), aad, sealed, false)
    }
}

/// The creation time a key id carries, RFC 3339.
fn created_of(id: &str) -> String {
    let digits = id.strip_prefix("kek-").unwrap_or_default();
    let d = |range: std::ops::Range<usize>| digits.get(range).unwrap_or("??");
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        d(0..4),
        d(4..6),
        d(6..8),
        d(8..10),
        d(10..12),
        d(12..14)
    )
}

/// Where Debian's SoftHSM2 installs its module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling test's provider, on a SoftHSM token of its own. SoftHSM reads
    /// `SOFTHSM2_CONF` when its module loads, and a test may not set its own process's
    /// environment: so the test runs again in a child process that has it, and `None` here
    /// means the child ran it and passed.
    fn own_token(test: &str) -> Option<Pkcs11Provider> {
        const PIN: &str = "PLINTH_TEST_SOFTHSM_PIN";
        if let Ok(pin) = std::env::var(PIN) {
            return Some(
                Pkcs11Provider::open(&Pkcs11Settings {
                    module: SOFTHSM_MODULE.into(),
                    token: "unit".into(),
                    pin,
                })
                .unwrap(),
            );
        }
        let hsm = plinth_test_support::SoftHsm::new("unit").unwrap();
        let (name, value) = hsm.env();
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([&format!("hsm::tests::{test}"), "--exact", "--nocapture"])
            .env(name, value)
            .env(PIN, &hsm.pin)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && out.contains("1 passed"),
            "{out}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        None
    }

    #[test]
    fn a_data_key_wrapped_in_the_token_opens_only_with_its_associated_data() {
        let Some(token) =
            own_token("a_data_key_wrapped_in_the_token_opens_only_with_its_associated_data")
        else {
            return;
        };
        let id = token.generate().unwrap();
        assert_eq!(token.active_kek().unwrap(), id);
        let dek = [9u8; KEY_BYTES];
        let wrapped = token.wrap(&id, &dek, b"orders").unwrap();
        assert_eq!(token.unwrap(&id, &wrapped, b"orders").unwrap(), dek);
        let wrong = token.unwrap(&id, &wrapped, b"payments");
        assert!(
            matches!(wrong, Err(CodecError::Tampered { .. })),
            "{wrong:?}"
        );
        let mut altered = wrapped.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            token.unwrap(&id, &altered, b"orders"),
            Err(CodecError::Tampered { .. })
        ));
    }

    #[test]
    fn the_newest_key_is_active_and_older_ones_still_open() {
        let Some(token) = own_token("the_newest_key_is_active_and_older_ones_still_open") else {
            return;
        };
        let old = token.generate().unwrap();
        let wrapped = token.wrap(&old, &[1u8; KEY_BYTES], b"aad").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let new = token.generate().unwrap();
        assert_eq!(token.active_kek().unwrap(), new);
        let states: Vec<_> = token
            .list()
            .unwrap()
            .into_iter()
            .map(|k| (k.id, k.state))
            .collect();
        assert_eq!(
            states,
            [
                (old.clone(), KeyState::DecryptOnly),
                (new, KeyState::Active)
            ]
        );
        assert_eq!(
            token.unwrap(&old, &wrapped, b"aad").unwrap(),
            [1u8; KEY_BYTES]
        );
        assert!(matches!(
            token.unwrap("kek-made-up", &wrapped, b"aad"),
            Err(CodecError::UnknownKey(_))
        ));
    }

    #[test]
    fn the_token_never_gives_out_a_keys_value() {
        let Some(token) = own_token("the_token_never_gives_out_a_keys_value") else {
            return;
        };
        let id = token.generate().unwrap();
        let handle = token.keys(true).unwrap()[&id];
        let session = token.session.lock().unwrap();
        let read = session.get_attributes(handle, &[AttributeType::Value]);
        assert!(
            !matches!(read.as_deref(), Ok([Attribute::Value(_)])),
            "the key's value was readable"
        );
        let flags = session
            .get_attributes(
                handle,
                &[AttributeType::Sensitive, AttributeType::Extractable],
            )
            .unwrap();
        assert!(flags.contains(&Attribute::Sensitive(true)), "{flags:?}");
        assert!(flags.contains(&Attribute::Extractable(false)), "{flags:?}");
    }
}
