use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::{Aead, CodecError};

/// Length of every key: AES-256.
pub const KEY_BYTES: usize = 32;

/// Where key encryption keys live: wraps and unwraps data keys. A cloud KMS implements this
/// in place of the file [`KeyRing`].
pub trait KekProvider: Send + Sync + std::fmt::Debug {
    /// The id of the KEK that wraps new data keys.
    fn active_kek(&self) -> Result<String, CodecError>;
    /// Seals `dek` under KEK `kek_id`, binding `aad`.
    fn wrap(&self, kek_id: &str, dek: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError>;
    /// Opens a data key wrapped by [`KekProvider::wrap`].
    fn unwrap(&self, kek_id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError>;
    /// The id of namespace `namespace`'s own active KEK (`[keys] per_namespace`).
    fn namespace_kek(&self, namespace: &str) -> Result<String, CodecError> {
        Err(CodecError::NoNamespaceKey(namespace.to_owned()))
    }
    /// The namespace whose own key KEK `kek_id` is; `None` for the installation's, or a key
    /// this provider does not know.
    fn kek_namespace(&self, kek_id: &str) -> Result<Option<String>, CodecError> {
        let _ = kek_id;
        Ok(None)
    }
    /// The raw key `id`, for payloads of `namespace` in the Temporal samples' format, which
    /// encrypt with the key itself: only a key imported for that format and that namespace,
    /// never a key encryption key. Providers that never release key material have none.
    fn direct_key(&self, id: &str, namespace: &str) -> Option<[u8; KEY_BYTES]> {
        let _ = (id, namespace);
        None
    }
    /// Whether calls go over the network (a KMS) rather than to memory or a local module.
    fn remote(&self) -> bool {
        false
    }
    /// The refusal for KEK `kek_id` when it is known, cheaply, to be shredded: asked on every
    /// open served from memory. Providers that cannot tell cheaply say `None`.
    fn shredded(&self, kek_id: &str) -> Option<CodecError> {
        let _ = kek_id;
        None
    }
}

/// A provider that counts the wraps and unwraps it passes on: how benchmarks and tests see
/// that providers are called per data key, not per payload.
#[derive(Debug)]
pub struct CountingProvider {
    inner: Arc<dyn KekProvider>,
    wraps: std::sync::atomic::AtomicU64,
    unwraps: std::sync::atomic::AtomicU64,
}

impl CountingProvider {
    /// Counts the calls to `inner`.
    pub fn new(inner: Arc<dyn KekProvider>) -> Self {
        Self {
            inner,
            wraps: Default::default(),
            unwraps: Default::default(),
        }
    }

    /// Wraps and unwraps so far.
    pub fn calls(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.wraps.load(Relaxed), self.unwraps.load(Relaxed))
    }
}

impl KekProvider for CountingProvider {
    fn active_kek(&self) -> Result<String, CodecError> {
        self.inner.active_kek()
    }

    fn wrap(&self, kek_id: &str, dek: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.wraps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.wrap(kek_id, dek, aad)
    }

    fn unwrap(&self, kek_id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.unwraps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.unwrap(kek_id, wrapped, aad)
    }

    fn namespace_kek(&self, namespace: &str) -> Result<String, CodecError> {
        self.inner.namespace_kek(namespace)
    }

    fn kek_namespace(&self, kek_id: &str) -> Result<Option<String>, CodecError> {
        self.inner.kek_namespace(kek_id)
    }

    fn direct_key(&self, id: &str, namespace: &str) -> Option<[u8; KEY_BYTES]> {
        self.inner.direct_key(id, namespace)
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }

    fn shredded(&self, kek_id: &str) -> Option<CodecError> {
        self.inner.shredded(kek_id)
    }
}

/// Makes and finds namespaces' own key encryption keys (`[keys] per_namespace`): what the
/// control plane does as it provisions a namespace.
pub trait NamespaceKeys: Send + Sync + std::fmt::Debug {
    /// The id of `namespace`'s own active KEK, made now when it has none.
    fn ensure(&self, namespace: &str) -> Result<String, CodecError>;
    /// Marks `namespace`'s own keys for destruction at `due`, by `by` (who deleted it); a
    /// key marked already keeps its first mark.
    fn schedule_shred(
        &self,
        namespace: &str,
        by: &str,
        due: SystemTime,
    ) -> Result<ShredSchedule, CodecError>;
    /// Destroys `namespace`'s keys whose destruction is due.
    fn shred_due(&self, namespace: &str) -> Result<ShredOutcome, CodecError>;
    /// Takes back the destruction of `namespace`'s keys not yet destroyed; returns them.
    fn restore(&self, namespace: &str) -> Result<Vec<String>, CodecError>;
}

/// The namespaces' own keys in the key ring file at a path.
#[derive(Debug)]
pub struct KeyRingNamespaceKeys(pub PathBuf);

impl NamespaceKeys for KeyRingNamespaceKeys {
    fn ensure(&self, namespace: &str) -> Result<String, CodecError> {
        // Read first: the change lock is taken only to make a key.
        let ring = KeyRing::load(&self.0).map_err(|e| ring_error(namespace, e))?;
        if let Ok(id) = ring.namespace_kek(namespace) {
            return Ok(id);
        }
        KeyRing::load_for_change(&self.0)
            .and_then(|mut ring| ring.ensure_namespace(namespace))
            .map(|(id, _)| id)
            .map_err(|e| ring_error(namespace, e))
    }

    fn schedule_shred(
        &self,
        namespace: &str,
        by: &str,
        due: SystemTime,
    ) -> Result<ShredSchedule, CodecError> {
        KeyRing::load_for_change(&self.0)
            .and_then(|mut ring| ring.schedule_shred(namespace, by, due))
            .map_err(|e| ring_error(namespace, e))
    }

    fn shred_due(&self, namespace: &str) -> Result<ShredOutcome, CodecError> {
        KeyRing::load_for_change(&self.0)
            .and_then(|mut ring| ring.shred_due(namespace, SystemTime::now()))
            .map_err(|e| ring_error(namespace, e))
    }

    fn restore(&self, namespace: &str) -> Result<Vec<String>, CodecError> {
        KeyRing::load_for_change(&self.0)
            .and_then(|mut ring| ring.restore(namespace))
            .map_err(|e| ring_error(namespace, e))
    }
}

fn ring_error(namespace: &str, e: KeyRingError) -> CodecError {
    CodecError::Provider {
        provider: "file",
        key: format!("(namespace {namespace})"),
        reason: e.to_string(),
    }
}

/// Whether a key wraps new data keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// Wraps new data keys; exactly one key is active.
    Active,
    /// Kept to decrypt what older keys sealed; never deleted by Plinth.
    DecryptOnly,
}

/// What a key may do. A key is only ever used one way.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum KeyPurpose {
    /// Wraps and unwraps data keys.
    #[default]
    Kek,
    /// Opens payloads in the Temporal samples' format, which encrypt with the key itself,
    /// for these namespaces only.
    Samples {
        /// The namespaces whose payloads it may open.
        namespaces: Vec<String>,
    },
}

/// A key as `plinth keys list` shows it (never its material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Immutable id, written into every payload it protects.
    pub id: String,
    /// RFC 3339.
    pub created: String,
    /// Active or decrypt-only.
    pub state: KeyState,
    /// What it may do.
    pub purpose: KeyPurpose,
    /// The namespace whose own key it is; `None` for the installation's.
    pub namespace: Option<String>,
    /// Its destruction, once its namespace was deleted with `spec.shredOnDelete`.
    pub shred: Option<ShredMark>,
}

/// A namespace key on its way to destruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShredMark {
    /// When it is destroyed unless restored first (RFC 3339).
    pub due: String,
    /// Who deleted its namespace.
    pub by: String,
    /// When it was destroyed (RFC 3339); absent while `plinth keys restore` can keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shredded: Option<String>,
}

/// What scheduling a namespace's keys for destruction marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShredSchedule {
    /// The keys marked.
    pub keys: Vec<String>,
    /// When they are destroyed (RFC 3339): the first schedule's, should it be asked again.
    pub due: String,
}

/// What a due shredding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShredOutcome {
    /// These keys were destroyed (now, or by an earlier try).
    Shredded(Vec<String>),
    /// The keys were restored before they were due: nothing was destroyed.
    Restored,
    /// Not due until this time (RFC 3339).
    NotYet(String),
}

/// How close to its due time a shredding can no longer be restored: the worker may be at
/// it already, and clocks differ.
pub const RESTORE_MARGIN: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The RFC 3339 text of `at`, to the second, as shred marks hold times.
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

impl ShredMark {
    /// What opening with key `key_id` of `namespace`, which this marks, answers once it is
    /// gone.
    pub fn refusal(&self, key_id: &str, namespace: &str) -> CodecError {
        CodecError::Shredded {
            key_id: key_id.to_owned(),
            namespace: namespace.to_owned(),
            at: self.shredded.clone().unwrap_or_else(|| self.due.clone()),
            by: self.by.clone(),
        }
    }

    /// Whether its due time has come by `now`; `None` when the time does not read, which is
    /// never taken for "now".
    pub fn is_due(&self, now: SystemTime) -> Option<bool> {
        humantime::parse_rfc3339(&self.due)
            .ok()
            .map(|due| due <= now)
    }
}

/// Why a namespace's keys cannot be rotated: their shredding is scheduled or done.
pub fn being_shredded(namespace: &str, mark: &ShredMark) -> String {
    format!(
        "namespace {namespace:?}: its keys are {} (deleted by {}); run `plinth keys restore \
         --namespace {namespace}` first if it is to live on",
        match &mark.shredded {
            Some(at) => format!("shredded since {at}"),
            None => format!("to be shredded at {}", mark.due),
        },
        mark.by
    )
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRingFile {
    keys: Vec<StoredKey>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredKey {
    id: String,
    created: String,
    state: KeyState,
    /// Absent in a key ring written before purposes existed: read as a key encryption key,
    /// with a warning for decrypt-only keys, which may be imported samples keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    purpose: Option<KeyPurpose>,
    /// The namespace whose own key it is; absent for the installation's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    /// Its destruction, scheduled or done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shred: Option<ShredMark>,
    /// Base64 of the 32 key bytes; empty once shredded.
    material: String,
}

struct Key {
    info: KeyInfo,
    /// `None` once shredded: the entry stays to say when and by whom.
    material: Option<[u8; KEY_BYTES]>,
}

/// Why the key ring file was refused; no variant ever carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// The file could not be read or written.
    #[error("key ring {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Others may read or write the file.
    #[error("key ring {path} has mode {mode:o}: it must be readable by its owner only (chmod 600)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not a valid key ring.
    #[error("key ring {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A key id is already taken: ids are immutable.
    #[error("key id {0:?} already exists; key ids never change or get reused")]
    DuplicateId(String),
    /// Imported material is not 32 bytes.
    #[error("key material must be {KEY_BYTES} bytes, got {0}")]
    KeyLength(usize),
    /// The random source failed.
    #[error("no randomness for a new key")]
    Random,
    /// The lock that changes hold could not be taken.
    #[error("key ring lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Another change held the lock for all of [`LOCK_WAIT`].
    #[error(
        "another plinth keys command has been changing the key ring for {LOCK_WAIT:?} (lock \
         {0}); try again once it has finished"
    )]
    Busy(PathBuf),
    /// A change to a ring loaded to be read.
    #[error("key ring {0} was loaded to be read; a change needs KeyRing::load_for_change")]
    ReadOnly(PathBuf),
    /// A namespace to rotate has no key of its own.
    #[error("namespace {0:?} {NOTHING_TO_ROTATE}")]
    NoSuchNamespace(String),
    /// A samples key imported for no namespace would open nothing.
    #[error("a samples key needs at least one namespace (--namespace) whose payloads it opens")]
    NoNamespaces,
    /// A namespace's keys cannot be rotated while their shredding is scheduled.
    #[error("{0}")]
    Shredding(String),
    /// `plinth keys restore` found no key of the namespace waiting to be shredded.
    #[error("{}", nothing_to_restore(namespace, shredded.as_ref()))]
    NothingToRestore {
        /// The namespace.
        namespace: String,
        /// The mark of a key already destroyed, if one was.
        shredded: Option<ShredMark>,
    },
}

/// Why there is nothing to restore: the keys are gone already, or were never scheduled.
pub fn nothing_to_restore(namespace: &str, shredded: Option<&ShredMark>) -> String {
    match shredded {
        Some(mark) => format!(
            "namespace {namespace:?}: its keys were shredded at {} (deleted by {}); a shredded \
             key cannot be restored",
            mark.shredded.as_deref().unwrap_or(&mark.due),
            mark.by
        ),
        None => format!("namespace {namespace:?} has no keys waiting to be shredded"),
    }
}

/// Key encryption keys in a JSON file of mode 0600: one active, older ones decrypt-only.
pub struct KeyRing {
    path: PathBuf,
    keys: Vec<Key>,
    /// Held by a ring that may change: an exclusive lock on `<file>.lock`.
    change_lock: Option<std::fs::File>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.info.id.as_str()).collect();
        f.debug_struct("KeyRing")
            .field("path", &self.path)
            .field("keys", &ids)
            .finish()
    }
}

impl KeyRing {
    /// Reads `path`; refuses a file others may read, duplicate ids, and anything but exactly
    /// one active key.
    pub fn load(path: &Path) -> Result<Self, KeyRingError> {
        let io = |source| KeyRingError::Io {
            path: path.to_owned(),
            source,
        };
        let invalid = |message: String| KeyRingError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mode = owner_only_mode(path).map_err(io)?;
        if mode & 0o077 != 0 {
            return Err(KeyRingError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let file: KeyRingFile = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let mut keys: Vec<Key> = Vec::new();
        for (i, stored) in file.keys.into_iter().enumerate() {
            if keys.iter().any(|k| k.info.id == stored.id) {
                return Err(invalid(format!(
                    "keys[{i}]: id {:?} appears twice",
                    stored.id
                )));
            }
            let shredded = stored.shred.as_ref().is_some_and(|m| m.shredded.is_some());
            let material =
                if shredded {
                    if !stored.material.is_empty() {
                        return Err(invalid(format!(
                            "keys[{i}].material: a shredded key keeps none"
                        )));
                    }
                    None
                } else {
                    let bytes = BASE64
                        .decode(&stored.material)
                        .map_err(|_| invalid(format!("keys[{i}].material: not base64")))?;
                    Some(bytes.try_into().map_err(|_| {
                        invalid(format!("keys[{i}].material: not {KEY_BYTES} bytes"))
                    })?)
                };
            let purpose = stored.purpose.unwrap_or_else(|| {
                if stored.state == KeyState::DecryptOnly {
                    tracing::warn!(
                        key = stored.id,
                        "key ring entry has no purpose: taken as a key encryption key; if it \
                         is a Temporal samples key, import it again with plinth keys import \
                         --namespace"
                    );
                }
                KeyPurpose::Kek
            });
            keys.push(Key {
                info: KeyInfo {
                    id: stored.id,
                    created: stored.created,
                    state: stored.state,
                    purpose,
                    namespace: stored.namespace,
                    shred: stored.shred,
                },
                material,
            });
        }
        if let Some(key) = keys
            .iter()
            .find(|k| k.info.state == KeyState::Active && k.info.purpose != KeyPurpose::Kek)
        {
            return Err(invalid(format!(
                "key {:?} is active but not a key encryption key",
                key.info.id
            )));
        }
        let mut active: HashMap<Option<&str>, usize> = HashMap::new();
        for key in keys.iter().filter(|k| k.info.state == KeyState::Active) {
            *active.entry(key.info.namespace.as_deref()).or_default() += 1;
        }
        let installation = active.get(&None).copied().unwrap_or_default();
        if installation != 1 {
            return Err(invalid(format!(
                "{installation} active keys of the installation; exactly one is needed"
            )));
        }
        if let Some((Some(namespace), _)) = active.iter().find(|(_, n)| **n > 1) {
            return Err(invalid(format!(
                "namespace {namespace:?} has more than one active key"
            )));
        }
        Ok(Self {
            path: path.to_owned(),
            keys,
            change_lock: None,
        })
    }

    /// Loads `path` to change it, holding its change lock until the ring is dropped: two
    /// `plinth keys` commands at once apply one after the other, neither losing the other's key.
    pub fn load_for_change(path: &Path) -> Result<Self, KeyRingError> {
        Self::load_holding(path, change_lock(path)?)
    }

    /// Loads `path`, whose change lock `lock` is held.
    fn load_holding(path: &Path, lock: std::fs::File) -> Result<Self, KeyRingError> {
        Ok(Self {
            change_lock: Some(lock),
            ..Self::load(path)?
        })
    }

    /// Loads `path` to change it (see [`Self::load_for_change`]), or creates it with one new
    /// active key. True when it was created.
    pub fn init(path: &Path) -> Result<(Self, bool), KeyRingError> {
        let lock = change_lock(path)?;
        if path.exists() {
            return Ok((Self::load_holding(path, lock)?, false));
        }
        let mut ring = Self {
            path: path.to_owned(),
            keys: Vec::new(),
            change_lock: Some(lock),
        };
        ring.add_new_active(None)?;
        Ok((ring, true))
    }

    /// Makes a new key active; the previous one becomes decrypt-only. Returns the new id.
    /// Changes are saved at once, to a ring from [`Self::init`] or [`Self::load_for_change`].
    pub fn rotate(&mut self) -> Result<String, KeyRingError> {
        self.changeable()?;
        self.add_new_active(None)
    }

    /// [`Self::rotate`] for namespace `namespace`'s own key, which it must have: a key for a
    /// name nothing seals for would protect nothing.
    pub fn rotate_namespace(&mut self, namespace: &str) -> Result<String, KeyRingError> {
        self.changeable()?;
        if self.namespace_kek(namespace).is_err() {
            return Err(KeyRingError::NoSuchNamespace(namespace.to_owned()));
        }
        if let Some(mark) = self
            .keys
            .iter()
            .filter(|k| k.info.namespace.as_deref() == Some(namespace))
            .find_map(|k| k.info.shred.as_ref().filter(|m| m.shredded.is_none()))
        {
            return Err(KeyRingError::Shredding(being_shredded(namespace, mark)));
        }
        self.add_new_active(Some(namespace))
    }

    /// Namespace `namespace`'s own active key, made now when it has none; whether it was.
    pub fn ensure_namespace(&mut self, namespace: &str) -> Result<(String, bool), KeyRingError> {
        if let Ok(id) = self.namespace_kek(namespace) {
            return Ok((id, false));
        }
        self.changeable()?;
        Ok((self.add_new_active(Some(namespace))?, true))
    }

    /// Adds existing key material, decrypt-only, for `purpose` (a Temporal samples' key for
    /// its namespaces, or a key encryption key of an older ring): 32 raw bytes, or their
    /// base64.
    pub fn import(
        &mut self,
        id: &str,
        material: &[u8],
        purpose: KeyPurpose,
    ) -> Result<(), KeyRingError> {
        if matches!(&purpose, KeyPurpose::Samples { namespaces } if namespaces.is_empty()) {
            return Err(KeyRingError::NoNamespaces);
        }
        let decoded;
        let raw = if material.len() == KEY_BYTES {
            material
        } else {
            let text = String::from_utf8_lossy(material);
            decoded = BASE64
                .decode(text.trim())
                .map_err(|_| KeyRingError::KeyLength(material.len()))?;
            &decoded
        };
        let material: [u8; KEY_BYTES] = raw
            .try_into()
            .map_err(|_| KeyRingError::KeyLength(raw.len()))?;
        self.changeable()?;
        self.insert(
            id.to_owned(),
            KeyState::DecryptOnly,
            purpose,
            None,
            material,
        )
    }

    /// Marks namespace `namespace`'s own keys for destruction at `due`, by `by`. A key
    /// marked already keeps its first mark, so a retried schedule moves nothing.
    pub fn schedule_shred(
        &mut self,
        namespace: &str,
        by: &str,
        due: SystemTime,
    ) -> Result<ShredSchedule, KeyRingError> {
        self.changeable()?;
        let mark = ShredMark {
            due: rfc3339(due),
            by: by.to_owned(),
            shredded: None,
        };
        let mut schedule = ShredSchedule {
            keys: Vec::new(),
            due: mark.due.clone(),
        };
        for key in self.namespace_keys_mut(namespace) {
            if key.material.is_none() {
                continue;
            }
            let kept = key.info.shred.get_or_insert_with(|| mark.clone());
            schedule.due.clone_from(&kept.due);
            schedule.keys.push(key.info.id.clone());
        }
        if !schedule.keys.is_empty() {
            self.save()?;
        }
        Ok(schedule)
    }

    /// Takes back the destruction of `namespace`'s keys that are not yet destroyed; returns
    /// them.
    pub fn restore(&mut self, namespace: &str) -> Result<Vec<String>, KeyRingError> {
        self.changeable()?;
        let mut restored = Vec::new();
        let mut shredded = None;
        for key in self.namespace_keys_mut(namespace) {
            match &key.info.shred {
                Some(mark) if mark.shredded.is_some() => shredded = Some(mark.clone()),
                Some(_) => {
                    key.info.shred = None;
                    restored.push(key.info.id.clone());
                }
                None => {}
            }
        }
        if restored.is_empty() {
            return Err(KeyRingError::NothingToRestore {
                namespace: namespace.to_owned(),
                shredded,
            });
        }
        self.save()?;
        Ok(restored)
    }

    /// Destroys `namespace`'s keys whose destruction is due by `now`: their material leaves
    /// the file, which is written anew; the entries stay to say when and by whom.
    pub fn shred_due(
        &mut self,
        namespace: &str,
        now: SystemTime,
    ) -> Result<ShredOutcome, KeyRingError> {
        self.changeable()?;
        let path = self.path.clone();
        let mut shredded = Vec::new();
        let (mut waiting, mut live, mut now_shredded) = (None, false, false);
        for key in self.namespace_keys_mut(namespace) {
            let Some(mark) = &mut key.info.shred else {
                live = true;
                continue;
            };
            if mark.shredded.is_none() {
                match mark.is_due(now) {
                    Some(true) => {}
                    Some(false) => {
                        waiting = Some(mark.due.clone());
                        continue;
                    }
                    None => {
                        return Err(KeyRingError::Invalid {
                            path,
                            message: format!(
                                "key {:?}: shred.due {:?} is not an RFC 3339 time",
                                key.info.id, mark.due
                            ),
                        });
                    }
                }
                mark.shredded = Some(rfc3339(now));
                key.material = None;
                key.info.state = KeyState::DecryptOnly;
                now_shredded = true;
            }
            shredded.push(key.info.id.clone());
        }
        if let Some(due) = waiting {
            self.save()?;
            return Ok(ShredOutcome::NotYet(due));
        }
        // Nothing was due and a key lives: the deletion was restored.
        if shredded.is_empty() || (live && !now_shredded) {
            return Ok(ShredOutcome::Restored);
        }
        self.save()?;
        Ok(ShredOutcome::Shredded(shredded))
    }

    fn namespace_keys_mut<'a>(
        &'a mut self,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a mut Key> + 'a {
        self.keys.iter_mut().filter(move |k| {
            k.info.purpose == KeyPurpose::Kek && k.info.namespace.as_deref() == Some(namespace)
        })
    }

    fn changeable(&self) -> Result<(), KeyRingError> {
        match self.change_lock {
            Some(_) => Ok(()),
            None => Err(KeyRingError::ReadOnly(self.path.clone())),
        }
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.keys.iter().map(|k| k.info.clone()).collect()
    }

    /// A new active key for `namespace` (the installation's when `None`); the scope's
    /// previous one becomes decrypt-only.
    fn add_new_active(&mut self, namespace: Option<&str>) -> Result<String, KeyRingError> {
        let mut material = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut material)
            .map_err(|_| KeyRingError::Random)?;
        let id = new_key_id(None)?;
        for key in &mut self.keys {
            if key.info.namespace.as_deref() == namespace {
                key.info.state = KeyState::DecryptOnly;
            }
        }
        let scope = namespace.map(str::to_owned);
        self.insert(
            id.clone(),
            KeyState::Active,
            KeyPurpose::Kek,
            scope,
            material,
        )?;
        Ok(id)
    }

    fn insert(
        &mut self,
        id: String,
        state: KeyState,
        purpose: KeyPurpose,
        namespace: Option<String>,
        material: [u8; KEY_BYTES],
    ) -> Result<(), KeyRingError> {
        if self.keys.iter().any(|k| k.info.id == id) {
            return Err(KeyRingError::DuplicateId(id));
        }
        self.keys.push(Key {
            info: KeyInfo {
                id,
                created: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                state,
                purpose,
                namespace,
                shred: None,
            },
            material: Some(material),
        });
        self.save()
    }

    /// Writes a 0600 temporary file and renames it over the ring: never a partial file.
    fn save(&self) -> Result<(), KeyRingError> {
        let io = |source| KeyRingError::Io {
            path: self.path.clone(),
            source,
        };
        let file = KeyRingFile {
            keys: self
                .keys
                .iter()
                .map(|k| StoredKey {
                    id: k.info.id.clone(),
                    created: k.info.created.clone(),
                    state: k.info.state,
                    purpose: Some(k.info.purpose.clone()),
                    namespace: k.info.namespace.clone(),
                    shred: k.info.shred.clone(),
                    material: k.material.map(|m| BASE64.encode(m)).unwrap_or_default(),
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).expect("key ring serializes");
        let staged = self.path.with_extension("tmp");
        write_owner_only(&staged, text.as_bytes()).map_err(io)?;
        std::fs::rename(&staged, &self.path).map_err(io)?;
        // The rename is durable only once the directory is: a crash must not bring back a
        // ring without the key the servers have begun sealing with.
        let dir = self.path.parent().filter(|dir| !dir.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(Path::new(".")))
            .and_then(|dir| dir.sync_all())
            .map_err(io)
    }

    /// The material of key encryption key `id` (a samples key is never one); a shredded
    /// key says when and by whom.
    fn kek(&self, id: &str) -> Result<&[u8; KEY_BYTES], CodecError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.info.id == id && k.info.purpose == KeyPurpose::Kek)
            .ok_or_else(|| CodecError::UnknownKey(id.to_owned()))?;
        key.material.as_ref().ok_or_else(|| shredded(&key.info))
    }
}

impl KekProvider for KeyRing {
    fn active_kek(&self) -> Result<String, CodecError> {
        self.keys
            .iter()
            .find(|k| k.info.state == KeyState::Active && k.info.namespace.is_none())
            .map(|k| k.info.id.clone())
            .ok_or(CodecError::NoActiveKey)
    }

    fn namespace_kek(&self, namespace: &str) -> Result<String, CodecError> {
        self.keys
            .iter()
            .find(|k| {
                k.info.state == KeyState::Active && k.info.namespace.as_deref() == Some(namespace)
            })
            .map(|k| k.info.id.clone())
            .ok_or_else(|| CodecError::NoNamespaceKey(namespace.to_owned()))
    }

    fn kek_namespace(&self, kek_id: &str) -> Result<Option<String>, CodecError> {
        Ok(self
            .keys
            .iter()
            .find(|k| k.info.id == kek_id && k.info.purpose == KeyPurpose::Kek)
            .and_then(|k| k.info.namespace.clone()))
    }

    fn wrap(&self, kek_id: &str, dek: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        Aead::new(self.kek(kek_id)?)?.seal(dek, aad)
    }

    fn unwrap(&self, kek_id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        Aead::new(self.kek(kek_id)?)?.open(wrapped, aad, kek_id)
    }

    fn direct_key(&self, id: &str, namespace: &str) -> Option<[u8; KEY_BYTES]> {
        self.keys
            .iter()
            .find(|k| {
                k.info.id == id
                    && matches!(&k.info.purpose, KeyPurpose::Samples { namespaces }
                        if namespaces.iter().any(|n| n == namespace))
            })
            .and_then(|k| k.material)
    }

    fn shredded(&self, kek_id: &str) -> Option<CodecError> {
        self.kek(kek_id)
            .err()
            .filter(|e| matches!(e, CodecError::Shredded { .. }))
    }
}

/// The error opening with a shredded key gives.
fn shredded(info: &KeyInfo) -> CodecError {
    let namespace = info.namespace.as_deref().unwrap_or_default();
    match &info.shred {
        Some(mark) => mark.refusal(&info.id, namespace),
        None => CodecError::Shredded {
            key_id: info.id.clone(),
            namespace: namespace.to_owned(),
            at: String::new(),
            by: "unknown".into(),
        },
    }
}

/// A new key id, `kek-<UTC time>-<random>`. Ids sort by creation time, and a new one sorts
/// after `after` (the newest so far), even made in the same second or on a clock behind.
pub(crate) fn new_key_id(after: Option<&str>) -> Result<String, KeyRingError> {
    let mut suffix = [0u8; 3];
    SystemRandom::new()
        .fill(&mut suffix)
        .map_err(|_| KeyRingError::Random)?;
    let mut at = SystemTime::now();
    if let Some(newest) = after
        .and_then(created_of)
        .and_then(|t| humantime::parse_rfc3339(&t).ok())
    {
        at = at.max(newest + std::time::Duration::from_secs(1));
    }
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    let compact: String = stamp.chars().filter(char::is_ascii_digit).collect();
    Ok(format!(
        "kek-{compact}-{:02x}{:02x}{:02x}",
        suffix[0], suffix[1], suffix[2]
    ))
}

/// The creation time (RFC 3339) a key id [`new_key_id`] made carries.
pub(crate) fn created_of(id: &str) -> Option<String> {
    let digits = id.strip_prefix("kek-")?.get(..14)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let d = |range: std::ops::Range<usize>| &digits[range];
    Some(format!(
        "{}-{}-{}T{}:{}:{}Z",
        d(0..4),
        d(4..6),
        d(6..8),
        d(8..10),
        d(10..12),
        d(12..14)
    ))
}

/// Why a namespace's key cannot be rotated, said by every provider.
pub(crate) const NOTHING_TO_ROTATE: &str = "has no key of its own to rotate: name it as payloads \
     do (its Temporal namespace, `<name>.<account>` on Temporal Cloud), once it is provisioned";

/// How long a change waits for another one to finish.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes the exclusive lock on `<path>.lock` that every change holds, waiting up to
/// [`LOCK_WAIT`] for another process's change, or this process's own, to finish.
fn change_lock(path: &Path) -> Result<std::fs::File, KeyRingError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let failed = |source| KeyRingError::Lock {
        path: lock_path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(failed)?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(KeyRingError::Busy(lock_path)),
            Err(std::fs::TryLockError::Error(source)) => return Err(failed(source)),
        }
    }
}

fn owner_only_mode(path: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A [`KeyRing`] that follows its file: after `plinth keys rotate` a running server seals
/// with the new key within a second. A file that stops loading keeps the last good ring.
#[derive(Debug)]
pub struct WatchedKeyRing {
    path: PathBuf,
    /// The ring in force, and the modification time of the last version tried.
    state: std::sync::RwLock<(Arc<KeyRing>, Option<SystemTime>)>,
    checked: std::sync::Mutex<std::time::Instant>,
}

/// How often the key ring file's modification time is looked at.
const KEYRING_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl WatchedKeyRing {
    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Self, KeyRingError> {
        let modified = modified(path);
        Ok(Self {
            path: path.to_owned(),
            state: std::sync::RwLock::new((Arc::new(KeyRing::load(path)?), modified)),
            checked: std::sync::Mutex::new(std::time::Instant::now()),
        })
    }

    fn current(&self) -> Arc<KeyRing> {
        let due = {
            let mut checked = self.checked.lock().expect("key ring lock");
            let due = checked.elapsed() >= KEYRING_CHECK;
            if due {
                *checked = std::time::Instant::now();
            }
            due
        };
        if due {
            let now = modified(&self.path);
            let stale = self.state.read().expect("key ring lock").1 != now;
            if stale {
                let mut state = self.state.write().expect("key ring lock");
                // The version is marked tried either way: a bad file is reported once.
                state.1 = now;
                match KeyRing::load(&self.path) {
                    Ok(ring) => state.0 = Arc::new(ring),
                    Err(e) => {
                        tracing::error!(error = %e, "key ring not reloaded; the previous one stays in force")
                    }
                }
            }
        }
        self.state.read().expect("key ring lock").0.clone()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl KekProvider for WatchedKeyRing {
    fn active_kek(&self) -> Result<String, CodecError> {
        self.current().active_kek()
    }

    fn namespace_kek(&self, namespace: &str) -> Result<String, CodecError> {
        self.current().namespace_kek(namespace)
    }

    fn kek_namespace(&self, kek_id: &str) -> Result<Option<String>, CodecError> {
        self.current().kek_namespace(kek_id)
    }

    fn wrap(&self, kek_id: &str, dek: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.current().wrap(kek_id, dek, aad)
    }

    fn unwrap(&self, kek_id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        self.current().unwrap(kek_id, wrapped, aad)
    }

    fn direct_key(&self, id: &str, namespace: &str) -> Option<[u8; KEY_BYTES]> {
        self.current().direct_key(id, namespace)
    }

    fn shredded(&self, kek_id: &str) -> Option<CodecError> {
        self.current().shredded(kek_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shredded_key_leaves_the_file_and_opening_says_when_and_by_whom() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (mut ring, _) = KeyRing::init(&path).unwrap();
        let (kek, _) = ring.ensure_namespace("doomed").unwrap();
        let aad = crate::wrap_aad("doomed", &kek);
        let wrapped = ring.wrap(&kek, &[5; KEY_BYTES], &aad).unwrap();
        let material =
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&path).unwrap())
                .unwrap()["keys"][1]["material"]
                .as_str()
                .unwrap()
                .to_owned();
        let now = SystemTime::now();
        ring.schedule_shred("doomed", "user:ops", now).unwrap();
        assert_eq!(
            ring.shred_due("doomed", now).unwrap(),
            ShredOutcome::Shredded(vec![kek.clone()])
        );
        drop(ring);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&material),
            "the key's material left the file"
        );
        let ring = KeyRing::load(&path).unwrap();
        let refused = ring.unwrap(&kek, &wrapped, &aad).unwrap_err();
        assert!(
            matches!(&refused, CodecError::Shredded { by, namespace, .. }
                if by == "user:ops" && namespace == "doomed"),
            "{refused}"
        );
        let mut ring = KeyRing::load_for_change(&path).unwrap();
        let refused = ring.restore("doomed").unwrap_err();
        assert!(
            refused.to_string().contains("cannot be restored"),
            "{refused}"
        );
        assert_ne!(ring.ensure_namespace("doomed").unwrap().0, kek);
    }

    #[test]
    fn a_restored_key_is_not_shredded_when_its_time_comes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (mut ring, _) = KeyRing::init(&path).unwrap();
        let (kek, _) = ring.ensure_namespace("kept").unwrap();
        let now = SystemTime::now();
        let first = ring.schedule_shred("kept", "user:ops", now).unwrap();
        let again = ring
            .schedule_shred(
                "kept",
                "user:other",
                now + std::time::Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(first, again, "a retried schedule keeps the first mark");
        assert_eq!(ring.restore("kept").unwrap(), std::slice::from_ref(&kek));
        assert_eq!(ring.shred_due("kept", now).unwrap(), ShredOutcome::Restored);
        let aad = crate::wrap_aad("kept", &kek);
        let wrapped = ring.wrap(&kek, &[1; KEY_BYTES], &aad).unwrap();
        assert!(ring.unwrap(&kek, &wrapped, &aad).is_ok());
    }

    #[test]
    fn a_namespaces_own_key_is_made_once_and_rotates_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (mut ring, _) = KeyRing::init(&path).unwrap();
        let installation = ring.active_kek().unwrap();
        let (orders, made) = ring.ensure_namespace("orders").unwrap();
        assert!(made);
        assert_eq!(
            ring.ensure_namespace("orders").unwrap(),
            (orders.clone(), false)
        );
        assert!(matches!(
            ring.rotate_namespace("nowhere"),
            Err(KeyRingError::NoSuchNamespace(_))
        ));
        let rotated = ring.rotate_namespace("orders").unwrap();
        let reloaded = KeyRing::load(&path).unwrap();
        assert_eq!(reloaded.namespace_kek("orders").unwrap(), rotated);
        assert_eq!(reloaded.active_kek().unwrap(), installation, "untouched");
        let old = reloaded
            .list()
            .into_iter()
            .find(|k| k.id == orders)
            .unwrap();
        assert_eq!(
            (old.state, old.namespace.as_deref()),
            (KeyState::DecryptOnly, Some("orders"))
        );
        assert!(matches!(
            reloaded.namespace_kek("payments"),
            Err(CodecError::NoNamespaceKey(_))
        ));
    }

    #[test]
    fn a_ring_with_two_active_keys_of_one_namespace_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (mut ring, _) = KeyRing::init(&path).unwrap();
        ring.ensure_namespace("orders").unwrap();
        ring.rotate_namespace("orders").unwrap();
        drop(ring);
        let mut file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for key in file["keys"].as_array_mut().unwrap() {
            if key["namespace"] == "orders" {
                key["state"] = "active".into();
            }
        }
        write_owner_only(&path, file.to_string().as_bytes()).unwrap();
        let error = KeyRing::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("\"orders\" has more than one active key"),
            "{error}"
        );
    }

    #[test]
    fn rotation_keeps_old_keys_for_decryption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (mut ring, created) = KeyRing::init(&path).unwrap();
        assert!(created);
        let first = ring.active_kek().unwrap();
        let wrapped = ring.wrap(&first, &[7; 32], b"aad").unwrap();
        let second = ring.rotate().unwrap();
        assert_ne!(first, second);
        let reloaded = KeyRing::load(&path).unwrap();
        assert_eq!(reloaded.active_kek().unwrap(), second);
        assert_eq!(reloaded.unwrap(&first, &wrapped, b"aad").unwrap(), [7; 32]);
        let states: Vec<KeyState> = reloaded.list().iter().map(|k| k.state).collect();
        assert_eq!(states, [KeyState::DecryptOnly, KeyState::Active]);
        let stored: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let material = stored["keys"][0]["material"].as_str().unwrap();
        assert!(
            !format!("{reloaded:?}").contains(material),
            "Debug shows no key"
        );
    }

    #[test]
    fn changes_made_at_once_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        drop(KeyRing::init(&path).unwrap());
        std::thread::scope(|scope| {
            for i in 0..8u8 {
                let path = &path;
                scope.spawn(move || {
                    let mut ring = KeyRing::load_for_change(path).unwrap();
                    ring.import(&format!("imported-{i}"), &[i; 32], KeyPurpose::Kek)
                        .unwrap();
                });
            }
        });
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.list().len(), 9, "{ring:?}");
    }

    #[test]
    fn a_ring_loaded_to_be_read_refuses_changes_and_stays_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        drop(KeyRing::init(&path).unwrap());
        let before = std::fs::read(&path).unwrap();
        let mut ring = KeyRing::load(&path).unwrap();
        assert!(matches!(ring.rotate(), Err(KeyRingError::ReadOnly(_))));
        assert!(matches!(
            ring.import("late", &[5; 32], KeyPurpose::Kek),
            Err(KeyRingError::ReadOnly(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_change_waits_for_one_under_way_and_gives_up_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (held, _) = KeyRing::init(&path).unwrap();
        let err = KeyRing::load_for_change(&path).unwrap_err();
        assert!(matches!(err, KeyRingError::Busy(_)), "{err}");
        assert!(err.to_string().contains("keyring.json.lock"), "{err}");
        drop(held);
        KeyRing::load_for_change(&path).unwrap();
    }

    #[test]
    fn a_readable_key_ring_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        KeyRing::init(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyRing::load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ring, _) = KeyRing::init(&dir.path().join("k.json")).unwrap();
        ring.import("legacy", &[1; 32], KeyPurpose::Kek).unwrap();
        assert!(matches!(
            ring.import("legacy", &[2; 32], KeyPurpose::Kek),
            Err(KeyRingError::DuplicateId(_))
        ));
        assert!(matches!(
            ring.import("short", &[2; 5], KeyPurpose::Kek),
            Err(KeyRingError::KeyLength(5))
        ));
    }

    #[test]
    fn a_key_serves_one_purpose_and_a_samples_key_its_namespaces_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let (mut ring, _) = KeyRing::init(&path).unwrap();
        let samples = KeyPurpose::Samples {
            namespaces: vec!["orders".into()],
        };
        ring.import("samples", &[3; 32], samples).unwrap();
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.direct_key("samples", "orders"), Some([3; 32]));
        assert_eq!(
            ring.direct_key("samples", "billing"),
            None,
            "another namespace"
        );
        assert!(
            matches!(
                ring.wrap("samples", &[0; 32], b""),
                Err(CodecError::UnknownKey(_))
            ),
            "a samples key wraps nothing"
        );
        let kek = ring.active_kek().unwrap();
        assert_eq!(
            ring.direct_key(&kek, "orders"),
            None,
            "a KEK is never a direct key"
        );
        let mut ring = ring;
        assert!(matches!(
            ring.import("none", &[4; 32], KeyPurpose::Samples { namespaces: vec![] }),
            Err(KeyRingError::NoNamespaces)
        ));
    }
}
