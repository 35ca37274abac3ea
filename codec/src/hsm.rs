//! Key encryption keys held in a hardware security module, through PKCS#11: AES-256 keys
//! generated inside the token, sensitive and never extractable. Data keys are sealed and
//! opened with AES-GCM inside it, so no KEK ever reaches Plinth's memory or disk.
//!
//! The token's Plinth keys are the ring: each key's label is its id, ids sort by creation
//! time (a new one always after the newest), and the newest is active. `plinth keys rotate`
//! makes a new one; every proxy and codec server lists the token's keys again within
//! [`RELIST_AFTER`], on one thread while the others go on with the listing they have.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use std::time::SystemTime;

use crate::keyring::{
    NOTHING_TO_ROTATE, being_shredded, created_of, new_key_id, nothing_to_restore, rfc3339,
};
use crate::{
    CodecError, KEY_BYTES, KekProvider, KeyInfo, KeyPurpose, KeyState, NamespaceKeys,
    RESTORE_MARGIN, ShredMark, ShredOutcome, ShredSchedule,
};

/// How long a listing of the token's keys is trusted before it is read again.
const RELIST_AFTER: Duration = Duration::from_secs(1);
/// A key id the listing does not know makes it be read again only when it is older than
/// this, so made-up ids cost at most a few listings a second.
const RELIST_ON_MISS_AFTER: Duration = Duration::from_millis(250);
/// What Plinth's keys carry in `CKA_ID`, telling them from the token's other objects.
const PLINTH_KEY_ID: &[u8] = b"plinth-kek";
/// AES-GCM's nonce and tag lengths.
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// A wrapped data key: nonce, sealed key, tag.
const WRAPPED_BYTES: usize = NONCE_BYTES + KEY_BYTES + TAG_BYTES;

/// Where Debian's SoftHSM2 installs its module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

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
    /// The token would lock the PIN after one more wrong try, or has: Plinth does not try.
    #[error(
        "PKCS#11 token {0:?}: its user PIN is locked or one wrong try from it; Plinth will not log in"
    )]
    PinAtRisk(String),
    /// A namespace to rotate has no key of its own in the token.
    #[error("namespace {0:?} {NOTHING_TO_ROTATE}")]
    NoSuchNamespace(String),
    /// A namespace's keys cannot be changed or kept as asked, given their shredding.
    #[error("{0}")]
    Shredding(String),
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
}

/// `CKA_APPLICATION` of the data objects that mark a key's destruction, labelled with the
/// key's id. A shredded key's mark outlives it, saying when and by whom.
const SHRED_MARK: &str = "plinth-shred";

/// A shred mark's value.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredMark {
    namespace: String,
    due: String,
    by: String,
    #[serde(default)]
    shredded: Option<String>,
}

impl StoredMark {
    /// What opening with key `id`, which this marks, answers once it is gone.
    fn refusal(&self, id: &str) -> CodecError {
        self.mark().refusal(id, &self.namespace)
    }

    fn mark(&self) -> ShredMark {
        ShredMark {
            due: self.due.clone(),
            by: self.by.clone(),
            shredded: self.shredded.clone(),
        }
    }
}

/// The token's Plinth keys as last listed: key id (label) to the namespace whose own key it
/// is (`None`: the installation's) and its object handle, oldest first.
struct Listing {
    keys: BTreeMap<String, (Option<String>, ObjectHandle)>,
    /// Shred marks by key id, with their objects' handles.
    marks: HashMap<String, (StoredMark, ObjectHandle)>,
    /// The newest key of the installation and of each namespace, the active ones: found
    /// once per listing, asked for by every payload sealed.
    installation: Option<String>,
    namespaces: HashMap<String, String>,
    at: Instant,
}

impl Listing {
    fn new(
        keys: BTreeMap<String, (Option<String>, ObjectHandle)>,
        marks: HashMap<String, (StoredMark, ObjectHandle)>,
    ) -> Self {
        // Ids sort by creation: the last of each scope wins.
        let (mut installation, mut namespaces) = (None, HashMap::new());
        for (id, (scope, _)) in &keys {
            match scope {
                None => installation = Some(id.clone()),
                Some(namespace) => {
                    namespaces.insert(namespace.clone(), id.clone());
                }
            }
        }
        Self {
            keys,
            marks,
            installation,
            namespaces,
            at: Instant::now(),
        }
    }

    /// The active key of `scope`.
    fn active(&self, scope: Option<&str>) -> Option<&String> {
        match scope {
            None => self.installation.as_ref(),
            Some(namespace) => self.namespaces.get(namespace),
        }
    }
}

/// `CKA_ID` of a key of `scope`: [`PLINTH_KEY_ID`], then `:<namespace>` for a namespace's.
fn object_id(scope: Option<&str>) -> Vec<u8> {
    let mut id = PLINTH_KEY_ID.to_vec();
    if let Some(namespace) = scope {
        id.push(b':');
        id.extend_from_slice(namespace.as_bytes());
    }
    id
}

/// The scope an object's `CKA_ID` names; `None` when it is not one of Plinth's keys.
fn scope_of(object_id: &[u8]) -> Option<Option<String>> {
    let rest = object_id.strip_prefix(PLINTH_KEY_ID)?;
    match rest {
        [] => Some(None),
        [b':', namespace @ ..] => String::from_utf8(namespace.to_vec()).ok().map(Some),
        _ => None,
    }
}

/// KEKs in a PKCS#11 token.
pub struct Pkcs11Provider {
    settings: Pkcs11Settings,
    context: Pkcs11,
    slot: Slot,
    /// One logged-in session: PKCS#11 sessions serve one call at a time. Opened again when
    /// the token drops it.
    session: Mutex<Session>,
    /// The latest listing, replaced whole; readers never wait for a listing in progress.
    listing: RwLock<Arc<Listing>>,
    /// Held by the one thread listing the token again.
    relisting: Mutex<()>,
    /// Held while a namespace's key is looked for and made.
    making: Mutex<()>,
}

impl std::fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("token", &self.settings.token)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Provider {
    /// Loads the module, finds the token, logs in and lists its keys.
    pub fn open(settings: &Pkcs11Settings) -> Result<Self, HsmError> {
        let module_error = |reason: String| HsmError::Module {
            module: settings.module.clone(),
            reason,
        };
        let context = Pkcs11::new(&settings.module).map_err(|e| module_error(e.to_string()))?;
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| module_error(e.to_string()))?;
        let failed = |operation| {
            let token = settings.token.clone();
            move |e: Error| token_error(&token, operation, e)
        };
        let slot = context
            .get_slots_with_token()
            .map_err(failed("list slots"))?
            .into_iter()
            .find(|slot| {
                context
                    .get_token_info(*slot)
                    .is_ok_and(|info| info.label() == settings.token)
            })
            .ok_or_else(|| HsmError::NoToken(settings.token.clone()))?;
        let session = login(&context, slot, settings)?;
        let provider = Self {
            settings: settings.clone(),
            context,
            slot,
            session: Mutex::new(session),
            listing: RwLock::new(Arc::new(Listing::new(BTreeMap::new(), HashMap::new()))),
            relisting: Mutex::new(()),
            making: Mutex::new(()),
        };
        provider.relist()?;
        Ok(provider)
    }

    /// Generates a new key of the installation in the token, which becomes the active one;
    /// returns its id.
    pub fn generate(&self) -> Result<String, HsmError> {
        self.generate_for(None)
    }

    /// [`Self::generate`] for namespace `namespace`'s own key, which it must have: a key for
    /// a name nothing seals for would protect nothing.
    pub fn rotate_namespace(&self, namespace: &str) -> Result<String, HsmError> {
        let _making = self.making.lock().expect("making lock");
        let listing = self.relist()?;
        if listing.active(Some(namespace)).is_none() {
            return Err(HsmError::NoSuchNamespace(namespace.to_owned()));
        }
        if let Some(stored) = pending_mark(&listing, namespace) {
            return Err(HsmError::Shredding(being_shredded(
                namespace,
                &stored.mark(),
            )));
        }
        let id = self.generate_for(Some(namespace))?;
        // A shredding another process scheduled while the key was made covers it too.
        let listing = self.relist()?;
        if let Some(stored) = pending_mark(&listing, namespace) {
            self.write_mark(&id, stored)?;
        }
        Ok(id)
    }

    /// Generates a new key of `scope` (a namespace's own, or the installation's).
    fn generate_for(&self, scope: Option<&str>) -> Result<String, HsmError> {
        let newest = self.relist()?.keys.keys().next_back().cloned();
        let id = new_key_id(newest.as_deref()).map_err(|_| HsmError::Token {
            token: self.settings.token.clone(),
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
            Attribute::Id(object_id(scope)),
        ];
        self.with_session("generate a key", |session| {
            session.generate_key(&Mechanism::AesKeyGen, &template)
        })?;
        self.relist()?;
        Ok(id)
    }

    /// Every Plinth key in the token, and every one shredded, oldest first; the newest of
    /// each scope is active.
    pub fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        let listing = self.relist()?;
        let mut keys: Vec<KeyInfo> = listing
            .keys
            .iter()
            .map(|(id, (namespace, _))| KeyInfo {
                id: id.clone(),
                created: created_of(id).unwrap_or_default(),
                state: if listing.active(namespace.as_deref()) == Some(id) {
                    KeyState::Active
                } else {
                    KeyState::DecryptOnly
                },
                purpose: KeyPurpose::Kek,
                namespace: namespace.clone(),
                shred: listing.marks.get(id).map(|(m, _)| m.mark()),
            })
            .collect();
        keys.extend(
            listing
                .marks
                .iter()
                .filter(|(id, _)| !listing.keys.contains_key(*id))
                .map(|(id, (stored, _))| KeyInfo {
                    id: id.clone(),
                    created: created_of(id).unwrap_or_default(),
                    state: KeyState::DecryptOnly,
                    purpose: KeyPurpose::Kek,
                    namespace: Some(stored.namespace.clone()),
                    shred: Some(stored.mark()),
                }),
        );
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(keys)
    }

    /// Writes `stored` as key `id`'s shred mark; returns its object.
    fn write_mark(&self, id: &str, stored: &StoredMark) -> Result<ObjectHandle, HsmError> {
        let value = serde_json::to_vec(stored).expect("a mark serializes");
        let template = [
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Application(SHRED_MARK.as_bytes().to_vec()),
            Attribute::Label(id.as_bytes().to_vec()),
            Attribute::Value(value),
        ];
        self.with_session("write a shred mark", |session| {
            session.create_object(&template)
        })
    }

    /// The listing, read again first when it is older than `max_age` and no other thread is
    /// reading it (which then leaves this one the listing it has).
    fn listing(&self, max_age: Duration) -> Result<Arc<Listing>, HsmError> {
        let current = self.listing.read().expect("listing lock").clone();
        if current.at.elapsed() < max_age {
            return Ok(current);
        }
        match self.relisting.try_lock() {
            Ok(_relisting) => {
                let current = self.listing.read().expect("listing lock").clone();
                if current.at.elapsed() < max_age {
                    return Ok(current);
                }
                self.list_token()
            }
            Err(_) => Ok(current),
        }
    }

    /// The listing, read again now (after any listing in progress).
    fn relist(&self) -> Result<Arc<Listing>, HsmError> {
        let _relisting = self.relisting.lock().expect("relisting lock");
        self.list_token()
    }

    fn list_token(&self) -> Result<Arc<Listing>, HsmError> {
        // Only keys as Plinth makes them: a key someone else planted in the token with a
        // Plinth id, but whose value can be read, never wraps a data key.
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ];
        let marks = self.with_session("list shred marks", |session| {
            let mut marks = HashMap::new();
            let template = [
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Application(SHRED_MARK.as_bytes().to_vec()),
            ];
            for handle in session.find_objects(&template)? {
                let (mut label, mut value) = (None, None);
                let wanted = [AttributeType::Label, AttributeType::Value];
                for attribute in session.get_attributes(handle, &wanted)? {
                    match attribute {
                        Attribute::Label(bytes) => label = String::from_utf8(bytes).ok(),
                        Attribute::Value(bytes) => {
                            value = serde_json::from_slice::<StoredMark>(&bytes).ok();
                        }
                        _ => {}
                    }
                }
                // A try that stopped between writing a key's shredded mark and removing its
                // pending one leaves both: the shredded one stands.
                if let (Some(label), Some(value)) = (label, value)
                    && marks
                        .get(&label)
                        .is_none_or(|(kept, _): &(StoredMark, _)| kept.shredded.is_none())
                {
                    marks.insert(label, (value, handle));
                }
            }
            Ok(marks)
        })?;
        let keys = self.with_session("list keys", |session| {
            let mut keys = BTreeMap::new();
            for handle in session.find_objects(&template)? {
                let (mut label, mut scope) = (None, None);
                let wanted = [AttributeType::Label, AttributeType::Id];
                for attribute in session.get_attributes(handle, &wanted)? {
                    match attribute {
                        Attribute::Label(bytes) => label = String::from_utf8(bytes).ok(),
                        Attribute::Id(bytes) => scope = scope_of(&bytes),
                        _ => {}
                    }
                }
                if let (Some(label), Some(scope)) = (label, scope)
                    && created_of(&label).is_some()
                {
                    keys.insert(label, (scope, handle));
                }
            }
            Ok(keys)
        })?;
        let listing = Arc::new(Listing::new(keys, marks));
        *self.listing.write().expect("listing lock") = listing.clone();
        Ok(listing)
    }

    /// Runs `call` on the session; a session the token dropped (closed, logged out, the
    /// token reinserted) is opened again once and `call` repeated.
    fn with_session<T>(
        &self,
        operation: &'static str,
        mut call: impl FnMut(&Session) -> Result<T, Error>,
    ) -> Result<T, HsmError> {
        let mut session = self.session.lock().expect("session lock");
        match call(&session) {
            Err(Error::Pkcs11(
                RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
                _,
            )) => {
                *session = login(&self.context, self.slot, &self.settings)?;
                call(&session).map_err(|e| token_error(&self.settings.token, operation, e))
            }
            result => result.map_err(|e| token_error(&self.settings.token, operation, e)),
        }
    }

    /// The handle of key `id`.
    fn handle(&self, id: &str) -> Result<ObjectHandle, CodecError> {
        let unavailable = |e| provider_error(id, e);
        if let Some(handle) = self
            .listing(RELIST_AFTER)
            .map_err(unavailable)?
            .keys
            .get(id)
        {
            return Ok(handle.1);
        }
        let listing = self.listing(RELIST_ON_MISS_AFTER).map_err(unavailable)?;
        match listing.keys.get(id) {
            Some((_, handle)) => Ok(*handle),
            None => Err(match listing.marks.get(id) {
                Some((stored, _)) => stored.refusal(id),
                None => CodecError::UnknownKey(id.to_owned()),
            }),
        }
    }
}

impl NamespaceKeys for Pkcs11Provider {
    /// Made at most once by this process; should another make one at the same time, both
    /// report the newest, the one that seals.
    fn ensure(&self, namespace: &str) -> Result<String, CodecError> {
        let failed = |e| provider_error(&format!("(namespace {namespace})"), e);
        let _making = self.making.lock().expect("making lock");
        if let Some(id) = self.relist().map_err(failed)?.active(Some(namespace)) {
            return Ok(id.clone());
        }
        self.generate_for(Some(namespace)).map_err(failed)?;
        self.relist()
            .map_err(failed)?
            .active(Some(namespace))
            .cloned()
            .ok_or_else(|| CodecError::NoNamespaceKey(namespace.to_owned()))
    }

    fn schedule_shred(
        &self,
        namespace: &str,
        by: &str,
        due: SystemTime,
    ) -> Result<ShredSchedule, CodecError> {
        let failed = |e| provider_error(&format!("(namespace {namespace})"), e);
        let _making = self.making.lock().expect("making lock");
        let listing = self.relist().map_err(failed)?;
        let mut schedule = ShredSchedule {
            keys: Vec::new(),
            due: rfc3339(due),
        };
        for (id, (scope, _)) in &listing.keys {
            if scope.as_deref() != Some(namespace) {
                continue;
            }
            match listing.marks.get(id) {
                Some((stored, _)) => schedule.due.clone_from(&stored.due),
                None => {
                    let stored = StoredMark {
                        namespace: namespace.to_owned(),
                        due: rfc3339(due),
                        by: by.to_owned(),
                        shredded: None,
                    };
                    self.write_mark(id, &stored).map_err(failed)?;
                }
            }
            schedule.keys.push(id.clone());
        }
        self.relist().map_err(failed)?;
        Ok(schedule)
    }

    /// Writes each due key a mark saying when it was shredded and removes its pending one (a
    /// pending mark a restore removed first leaves the key living), then destroys the key
    /// object: a try that stops on the way leaves a shredded mark that the next completes.
    fn shred_due(&self, namespace: &str) -> Result<ShredOutcome, CodecError> {
        let failed = |e| provider_error(&format!("(namespace {namespace})"), e);
        let _making = self.making.lock().expect("making lock");
        let listing = self.relist().map_err(failed)?;
        let now = SystemTime::now();
        let mut shredded = Vec::new();
        let mut now_shredded = false;
        let mut live = listing.keys.iter().any(|(id, (scope, _))| {
            scope.as_deref() == Some(namespace) && !listing.marks.contains_key(id)
        });
        for (id, (stored, mark_handle)) in &listing.marks {
            if stored.namespace != namespace {
                continue;
            }
            if stored.shredded.is_none() {
                match stored.mark().is_due(now) {
                    Some(true) => {}
                    Some(false) => return Ok(ShredOutcome::NotYet(stored.due.clone())),
                    None => return Err(failed(unreadable_due(&self.settings.token, id))),
                }
                let done = StoredMark {
                    shredded: Some(rfc3339(now)),
                    namespace: stored.namespace.clone(),
                    due: stored.due.clone(),
                    by: stored.by.clone(),
                };
                let written = self.write_mark(id, &done).map_err(failed)?;
                let replaced = {
                    let session = self.session.lock().expect("session lock");
                    session.destroy_object(*mark_handle)
                };
                match replaced {
                    Ok(()) => {}
                    // A restore removed it first: the key lives. Any other failure stops the
                    // shredding, to be tried again; the shredded mark written stands.
                    Err(Error::Pkcs11(RvError::ObjectHandleInvalid, _)) => {
                        self.with_session("remove a shred mark", |session| {
                            session.destroy_object(written)
                        })
                        .map_err(failed)?;
                        live = true;
                        continue;
                    }
                    Err(e) => {
                        return Err(failed(token_error(
                            &self.settings.token,
                            "remove a pending shred mark",
                            e,
                        )));
                    }
                }
                now_shredded = true;
            }
            if let Some((scope, key)) = listing.keys.get(id)
                && scope.as_deref() == Some(namespace)
            {
                self.with_session("destroy a key", |session| session.destroy_object(*key))
                    .map_err(failed)?;
            }
            shredded.push(id.clone());
        }
        self.relist().map_err(failed)?;
        shredded.sort();
        // Nothing was due and a key lives: the deletion was restored.
        Ok(if shredded.is_empty() || (live && !now_shredded) {
            ShredOutcome::Restored
        } else {
            ShredOutcome::Shredded(shredded)
        })
    }

    fn restore(&self, namespace: &str) -> Result<Vec<String>, CodecError> {
        let failed = |e| provider_error(&format!("(namespace {namespace})"), e);
        let _making = self.making.lock().expect("making lock");
        let listing = self.relist().map_err(failed)?;
        let (mut restored, mut gone) = (Vec::new(), None);
        for (id, (stored, handle)) in &listing.marks {
            if stored.namespace != namespace {
                continue;
            }
            if stored.shredded.is_some() {
                gone = Some(stored.mark());
                continue;
            }
            // Its time has come, or nearly (clocks differ): the worker may be shredding it.
            if stored.mark().is_due(SystemTime::now() + RESTORE_MARGIN) != Some(false) {
                return Err(failed(HsmError::Shredding(format!(
                    "namespace {namespace:?}: its keys were due to be shredded at {}; a key \
                     being shredded cannot be restored",
                    stored.due
                ))));
            }
            self.with_session("remove a shred mark", |session| {
                session.destroy_object(*handle)
            })
            .map_err(failed)?;
            restored.push(id.clone());
        }
        self.relist().map_err(failed)?;
        if restored.is_empty() {
            return Err(provider_error(
                &format!("(namespace {namespace})"),
                HsmError::Token {
                    token: self.settings.token.clone(),
                    operation: "restore",
                    reason: nothing_to_restore(namespace, gone.as_ref()),
                },
            ));
        }
        restored.sort();
        Ok(restored)
    }
}

/// Opens a session on `slot` and logs in, unless the token is about to lock its PIN.
fn login(context: &Pkcs11, slot: Slot, settings: &Pkcs11Settings) -> Result<Session, HsmError> {
    let failed = |operation| move |e: Error| token_error(&settings.token, operation, e);
    let info = context
        .get_token_info(slot)
        .map_err(failed("read the token's state"))?;
    if info.user_pin_locked() || info.user_pin_final_try() {
        return Err(HsmError::PinAtRisk(settings.token.clone()));
    }
    let session = context
        .open_rw_session(slot)
        .map_err(failed("open a session"))?;
    session
        .login(
            UserType::User,
            Some(&AuthPin::new(settings.pin.clone().into())),
        )
        .map_err(failed("log in"))?;
    Ok(session)
}

/// A mark of `namespace` whose shredding is scheduled and not yet done.
fn pending_mark<'a>(listing: &'a Listing, namespace: &str) -> Option<&'a StoredMark> {
    listing
        .marks
        .values()
        .map(|(stored, _)| stored)
        .find(|stored| stored.namespace == namespace && stored.shredded.is_none())
}

fn unreadable_due(token: &str, id: &str) -> HsmError {
    HsmError::Token {
        token: token.to_owned(),
        operation: "shred",
        reason: format!("the shred mark of key {id} has a due time that does not read"),
    }
}

fn token_error(token: &str, operation: &'static str, e: Error) -> HsmError {
    HsmError::Token {
        token: token.to_owned(),
        operation,
        reason: e.to_string(),
    }
}

fn provider_error(key: &str, e: HsmError) -> CodecError {
    CodecError::Provider {
        provider: "pkcs11",
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

impl KekProvider for Pkcs11Provider {
    fn shredded(&self, kek_id: &str) -> Option<CodecError> {
        let listing = self.listing(RELIST_AFTER).ok()?;
        let (stored, _) = listing.marks.get(kek_id)?;
        stored.shredded.as_ref()?;
        Some(stored.refusal(kek_id))
    }

    fn active_kek(&self) -> Result<String, CodecError> {
        self.listing(RELIST_AFTER)
            .map_err(|e| provider_error("(active)", e))?
            .active(None)
            .cloned()
            .ok_or(CodecError::NoActiveKey)
    }

    fn kek_namespace(&self, kek_id: &str) -> Result<Option<String>, CodecError> {
        let listing = self
            .listing(RELIST_AFTER)
            .map_err(|e| provider_error(kek_id, e))?;
        Ok(match listing.keys.get(kek_id) {
            Some((namespace, _)) => namespace.clone(),
            None => listing
                .marks
                .get(kek_id)
                .map(|(stored, _)| stored.namespace.clone()),
        })
    }

    fn namespace_kek(&self, namespace: &str) -> Result<String, CodecError> {
        self.listing(RELIST_AFTER)
            .map_err(|e| provider_error(&format!("(namespace {namespace})"), e))?
            .active(Some(namespace))
            .cloned()
            .ok_or_else(|| CodecError::NoNamespaceKey(namespace.to_owned()))
    }

    fn wrap(&self, kek_id: &str, dek: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        let handle = self.handle(kek_id)?;
        let mut nonce = [0u8; NONCE_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| CodecError::Crypto("random nonce"))?;
        let sealed = self
            .with_session("seal a data key", |session| {
                // A module may write the nonce it used back: the one stored is the one read.
                let params = GcmParams::new(&mut nonce, aad, ((TAG_BYTES * 8) as u64).into())?;
                session.encrypt(&Mechanism::AesGcm(params), handle, dek)
            })
            .map_err(|e| provider_error(kek_id, e))?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&sealed);
        Ok(wrapped)
    }

    fn unwrap(&self, kek_id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
        let tampered = || CodecError::Tampered {
            key_id: kek_id.to_owned(),
        };
        if wrapped.len() != WRAPPED_BYTES {
            return Err(tampered());
        }
        let handle = self.handle(kek_id)?;
        let (nonce, sealed) = wrapped.split_at(NONCE_BYTES);
        let mut nonce = <[u8; NONCE_BYTES]>::try_from(nonce).expect("split at its length");
        let session = self.session.lock().expect("session lock");
        let opened = GcmParams::new(&mut nonce, aad, ((TAG_BYTES * 8) as u64).into())
            .and_then(|params| session.decrypt(&Mechanism::AesGcm(params), handle, sealed));
        let error = match opened {
            Ok(key) => return Ok(key),
            // Modules say "the tag does not verify" in different words (SoftHSM: a general
            // error). If the token still answers, the wrapped key was altered.
            Err(Error::Pkcs11(_, Function::Decrypt)) if healthy(&session) => {
                return Err(tampered());
            }
            Err(e) => e,
        };
        drop(session);
        // The token may have dropped the session: opened again for the next call.
        let _ = self.with_session("check the session", |s| s.get_session_info());
        Err(provider_error(
            kek_id,
            token_error(&self.settings.token, "open a data key", error),
        ))
    }
}

/// Whether the token still answers on `session` (asked without needing its random source,
/// which not every token has).
fn healthy(session: &Session) -> bool {
    session.get_session_info().is_ok()
}

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
        plinth_test_support::rerun_with_env(
            &format!("hsm::tests::{test}"),
            [(name, value), (PIN, hsm.pin.clone())],
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
        // Made within the same second: still after the other.
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
    fn a_namespaces_own_key_is_made_once_beside_the_installations() {
        let Some(token) = own_token("a_namespaces_own_key_is_made_once_beside_the_installations")
        else {
            return;
        };
        let installation = token.generate().unwrap();
        let orders = token.ensure("orders").unwrap();
        assert_eq!(token.ensure("orders").unwrap(), orders, "made once");
        assert_eq!(token.namespace_kek("orders").unwrap(), orders);
        assert_eq!(
            token.active_kek().unwrap(),
            installation,
            "still the installation's"
        );
        let scopes: Vec<_> = token
            .list()
            .unwrap()
            .into_iter()
            .map(|k| (k.namespace, k.state))
            .collect();
        assert_eq!(
            scopes,
            [
                (None, KeyState::Active),
                (Some("orders".into()), KeyState::Active)
            ]
        );
    }

    #[test]
    fn a_shredded_key_leaves_the_token_and_its_mark_says_when_and_by_whom() {
        let Some(token) =
            own_token("a_shredded_key_leaves_the_token_and_its_mark_says_when_and_by_whom")
        else {
            return;
        };
        token.generate().unwrap();
        let kek = token.ensure("doomed").unwrap();
        let aad = crate::wrap_aad("doomed", &kek);
        let wrapped = token.wrap(&kek, &[5; KEY_BYTES], &aad).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        let scheduled = token.schedule_shred("doomed", "user:ops", later).unwrap();
        assert_eq!(scheduled.keys, std::slice::from_ref(&kek));
        assert!(
            matches!(token.shred_due("doomed").unwrap(), ShredOutcome::NotYet(_)),
            "not before it is due"
        );
        assert_eq!(token.restore("doomed").unwrap(), std::slice::from_ref(&kek));
        token
            .schedule_shred("doomed", "user:ops", SystemTime::now())
            .unwrap();
        assert_eq!(
            token.shred_due("doomed").unwrap(),
            ShredOutcome::Shredded(vec![kek.clone()])
        );
        let refused = token.unwrap(&kek, &wrapped, &aad).unwrap_err();
        assert!(
            matches!(&refused, CodecError::Shredded { by, .. } if by == "user:ops"),
            "{refused}"
        );
        let listed = token.list().unwrap();
        let gone = listed.iter().find(|k| k.id == kek).expect("still listed");
        assert!(gone.shred.as_ref().is_some_and(|m| m.shredded.is_some()));
        assert_ne!(
            token.ensure("doomed").unwrap(),
            kek,
            "a new key for the name"
        );
    }

    #[test]
    fn a_key_planted_with_a_plinth_id_but_a_readable_value_is_never_used() {
        let Some(token) =
            own_token("a_key_planted_with_a_plinth_id_but_a_readable_value_is_never_used")
        else {
            return;
        };
        let ours = token.generate().unwrap();
        let planted = [
            Attribute::Token(true),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::ValueLen((KEY_BYTES as u64).into()),
            Attribute::Label(b"kek-99991231235959-000000".to_vec()),
            Attribute::Id(PLINTH_KEY_ID.to_vec()),
        ];
        token
            .with_session("plant a key", |session| {
                session.generate_key(&Mechanism::AesKeyGen, &planted)
            })
            .unwrap();
        assert_eq!(token.list().unwrap().len(), 1, "listed afresh");
        assert_eq!(token.active_kek().unwrap(), ours);
    }

    #[test]
    fn the_token_never_gives_out_a_keys_value() {
        let Some(token) = own_token("the_token_never_gives_out_a_keys_value") else {
            return;
        };
        let id = token.generate().unwrap();
        let handle = token.relist().unwrap().keys[&id].1;
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
