use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use crate::Aead;
use crate::CodecError;
use crate::envelope::payload_aad;
use crate::keyring::{KEY_BYTES, KekProvider};

/// When a namespace's data key is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataKeyPolicy {
    /// A data key older than this seals nothing more.
    pub max_age: Duration,
    /// Payloads one data key may seal: random 96-bit nonces allow 2^32 per key (NIST SP
    /// 800-38D), and this stays far below.
    pub max_uses: u64,
    /// How long an unwrapped data key is kept for opening; then the provider unwraps it
    /// again. It bounds how long a key the provider revoked still opens here, and how long
    /// opening rides out a provider outage.
    pub cache_lifetime: Duration,
    /// Each namespace's data keys are wrapped by a KEK of its own, not the installation's.
    pub per_namespace: bool,
}

impl Default for DataKeyPolicy {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(24 * 3600),
            max_uses: 1 << 24,
            cache_lifetime: Duration::from_secs(3600),
            per_namespace: false,
        }
    }
}

/// How many unwrapped data keys stay in memory.
const UNWRAPPED_CAPACITY: usize = 4096;
/// The longest wrapped data key any provider makes (a KMS ciphertext of a 32-byte key is
/// under 256 bytes): anything longer is not one, and is neither sent to a provider nor kept.
const MAX_WRAPPED_BYTES: usize = 1024;
/// Data keys not in memory that one namespace's payloads may send to the provider a second:
/// payloads name their own keys, so one namespace's made-up ones must not use up the
/// provider (its quota, its calls in flight) for every other.
const MISSES_PER_NAMESPACE_PER_SECOND: u32 = 64;

/// A data key ready to seal, with the wrapped form that travels in each payload.
pub(crate) struct SealingKey {
    pub(crate) key: Aead,
    pub(crate) kek_id: String,
    pub(crate) wrapped: Vec<u8>,
    /// What each payload sealed with this key binds, uncompressed (`[0]`) and compressed.
    pub(crate) payload_aad: [Vec<u8>; 2],
    created: Instant,
    /// Payloads sealed so far (and attempts past the limit, which replace the key).
    uses: AtomicU64,
}

/// A wrapped data key once unwrapped, as what it was unwrapped for: a hit must match all of
/// it. `key` is the refusal when the provider's answer was final (the wrapped key altered,
/// its KEK shredded): payloads that repeat it cost the provider one call, not one each.
struct Unwrapped {
    key: Result<Arc<Aead>, CodecError>,
    kek_id: String,
    namespace: String,
    at: Instant,
}

/// Unwrapped data keys by wrapped form, and their insertion order for eviction. Keyed by the
/// wrapped bytes alone so that a lookup allocates nothing.
type UnwrappedKeys = (HashMap<Vec<u8>, Unwrapped>, VecDeque<Vec<u8>>);

/// Per-namespace data keys and a bounded cache of unwrapped ones.
pub(crate) struct DataKeys {
    provider: Arc<dyn KekProvider>,
    policy: DataKeyPolicy,
    current: Mutex<HashMap<String, Arc<SealingKey>>>,
    unwrapped: Mutex<UnwrappedKeys>,
    /// Each namespace's provider calls for data keys not in memory, this second.
    misses: Mutex<HashMap<String, (Instant, u32)>>,
}

impl std::fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeys")
            .field("provider", &self.provider)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Associated data of a wrapped data key: it belongs to one namespace and one KEK.
pub fn wrap_aad(namespace: &str, kek_id: &str) -> Vec<u8> {
    format!("{WRAP_AAD_PREFIX}{namespace}\0{kek_id}").into_bytes()
}

const WRAP_AAD_PREFIX: &str = "plinth/dek/v1\0";

/// The namespace and KEK id a wrapped data key's associated data binds, for providers that
/// bind them their own way (a KMS encryption context); `None` for anything else.
pub fn wrap_binding(aad: &[u8]) -> Option<(&str, &str)> {
    let rest = std::str::from_utf8(aad)
        .ok()?
        .strip_prefix(WRAP_AAD_PREFIX)?;
    rest.split_once('\0')
}

impl DataKeys {
    pub(crate) fn new(provider: Arc<dyn KekProvider>, policy: DataKeyPolicy) -> Self {
        Self {
            provider,
            policy,
            current: Mutex::default(),
            unwrapped: Mutex::default(),
            misses: Mutex::default(),
        }
    }

    /// Takes one of `namespace`'s provider calls for this second, or says there are none left.
    fn take_miss(&self, namespace: &str) -> Result<(), CodecError> {
        let mut misses = self.misses.lock().expect("miss lock");
        if misses.len() >= UNWRAPPED_CAPACITY {
            misses.retain(|_, (at, _)| at.elapsed() < Duration::from_secs(1));
        }
        let entry = misses
            .entry(namespace.to_owned())
            .or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Duration::from_secs(1) {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= MISSES_PER_NAMESPACE_PER_SECOND {
            return Err(CodecError::Provider {
                provider: "codec",
                key: format!("(namespace {namespace})"),
                reason: format!(
                    "more than {MISSES_PER_NAMESPACE_PER_SECOND} data keys not in memory asked \
                     for this second; try again"
                ),
            });
        }
        entry.1 += 1;
        Ok(())
    }

    pub(crate) fn provider(&self) -> &dyn KekProvider {
        self.provider.as_ref()
    }

    /// The namespace's data key for one more payload; a new one when the current is too old,
    /// used up, or wrapped by a KEK that is no longer active (the installation's, or the
    /// namespace's own).
    pub(crate) fn for_sealing(&self, namespace: &str) -> Result<Arc<SealingKey>, CodecError> {
        let active = if self.policy.per_namespace {
            self.provider.namespace_kek(namespace)?
        } else {
            self.provider.active_kek()?
        };
        if let Some(entry) = self.current.lock().expect("data key lock").get(namespace)
            && entry.kek_id == active
            && entry.created.elapsed() < self.policy.max_age
            && entry.uses.fetch_add(1, Ordering::Relaxed) < self.policy.max_uses
        {
            return Ok(entry.clone());
        }
        // Wrapped without the lock: a provider that hangs holds up this namespace's new data
        // key alone. First payloads of one namespace at once may each wrap one; the last stays.
        let mut raw = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| CodecError::Crypto("random data key"))?;
        let wrapped = self
            .provider
            .wrap(&active, &raw, &wrap_aad(namespace, &active))?;
        let key = Arc::new(SealingKey {
            key: Aead::new(&raw)?,
            payload_aad: [false, true]
                .map(|compressed| payload_aad(namespace, &active, &wrapped, compressed)),
            kek_id: active,
            wrapped,
            created: Instant::now(),
            uses: AtomicU64::new(1),
        });
        self.current
            .lock()
            .expect("data key lock")
            .insert(namespace.to_owned(), key.clone());
        Ok(key)
    }

    /// The data key wrapped as `wrapped` under `kek_id` for `namespace`, unwrapped once and
    /// then served from memory.
    pub(crate) fn for_opening(
        &self,
        namespace: &str,
        kek_id: &str,
        wrapped: &[u8],
    ) -> Result<Arc<Aead>, CodecError> {
        let hit = self
            .unwrapped
            .lock()
            .expect("cache lock")
            .0
            .get(wrapped)
            .filter(|hit| {
                hit.kek_id == kek_id
                    && hit.namespace == namespace
                    && hit.at.elapsed() < self.policy.cache_lifetime
            })
            .map(|hit| hit.key.clone());
        if let Some(key) = hit {
            // A key shredded since stops opening at once where the provider can tell.
            return match self.provider.shredded(kek_id) {
                Some(refusal) => Err(refusal),
                None => key,
            };
        }
        if wrapped.len() > MAX_WRAPPED_BYTES {
            return Err(CodecError::Tampered {
                key_id: kek_id.to_owned(),
            });
        }
        self.take_miss(namespace)?;
        // Another namespace's own key opens nothing of this one, whoever wrapped with it. A
        // key's namespace never changes, so a hit above was checked when it was unwrapped.
        if let Some(owner) = self.provider.kek_namespace(kek_id)?
            && owner != namespace
        {
            return Err(CodecError::WrongNamespace {
                expected: namespace.to_owned(),
                found: owner,
            });
        }
        let key = match self
            .provider
            .unwrap(kek_id, wrapped, &wrap_aad(namespace, kek_id))
        {
            Ok(raw) => Ok(Arc::new(Aead::new(&raw)?)),
            // Only a final refusal is kept: an unknown key may yet arrive, an outage pass.
            Err(e @ (CodecError::Tampered { .. } | CodecError::Shredded { .. })) => Err(e),
            Err(e) => return Err(e),
        };
        let mut cache = self.unwrapped.lock().expect("cache lock");
        if cache.0.len() >= UNWRAPPED_CAPACITY
            && let Some(oldest) = cache.1.pop_front()
        {
            cache.0.remove(&oldest);
        }
        let entry = Unwrapped {
            key: key.clone(),
            kek_id: kek_id.to_owned(),
            namespace: namespace.to_owned(),
            at: Instant::now(),
        };
        if cache.0.insert(wrapped.to_vec(), entry).is_none() {
            cache.1.push_back(wrapped.to_vec());
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyRing;

    #[test]
    fn a_wrapped_keys_binding_reads_back_as_written() {
        let aad = wrap_aad("orders.acme", "alias/plinth");
        assert_eq!(wrap_binding(&aad), Some(("orders.acme", "alias/plinth")));
        assert_eq!(wrap_binding(b"plinth/dek/v2\0orders\0k"), None);
    }

    #[test]
    fn a_data_key_in_memory_stops_opening_once_its_key_is_shredded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring.json");
        let (mut ring, _) = KeyRing::init(&path).unwrap();
        let (kek, _) = ring.ensure_namespace("doomed").unwrap();
        drop(ring);
        let watched = Arc::new(crate::WatchedKeyRing::load(&path).unwrap());
        let keys = DataKeys::new(
            watched,
            DataKeyPolicy {
                per_namespace: true,
                ..DataKeyPolicy::default()
            },
        );
        let sealing = keys.for_sealing("doomed").unwrap();
        keys.for_opening("doomed", &kek, &sealing.wrapped).unwrap();
        let mut ring = KeyRing::load_for_change(&path).unwrap();
        let now = std::time::SystemTime::now();
        ring.schedule_shred("doomed", "user:ops", now).unwrap();
        ring.shred_due("doomed", now).unwrap();
        drop(ring);
        plinth_test_support::wait_for("the running ring to see the shredding", || {
            matches!(
                keys.for_opening("doomed", &kek, &sealing.wrapped),
                Err(CodecError::Shredded { .. })
            )
        });
    }

    #[test]
    fn an_oversized_wrapped_key_is_refused_without_the_provider_or_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, _) = KeyRing::init(&dir.path().join("keyring.json")).unwrap();
        let kek = ring.active_kek().unwrap();
        let counted = Arc::new(crate::CountingProvider::new(Arc::new(ring)));
        let keys = DataKeys::new(counted.clone(), DataKeyPolicy::default());
        let refused = keys
            .for_opening("orders", &kek, &vec![0x5a; 3 << 20])
            .unwrap_err();
        assert!(matches!(refused, CodecError::Tampered { .. }), "{refused}");
        assert_eq!(counted.calls().1, 0, "no unwrap");
        assert!(keys.unwrapped.lock().unwrap().0.is_empty(), "nothing kept");
    }

    #[test]
    fn one_namespaces_made_up_data_keys_leave_the_others_their_provider_calls() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, _) = KeyRing::init(&dir.path().join("keyring.json")).unwrap();
        let kek = ring.active_kek().unwrap();
        let counted = Arc::new(crate::CountingProvider::new(Arc::new(ring)));
        let keys = DataKeys::new(counted.clone(), DataKeyPolicy::default());
        let sealed = keys.for_sealing("payments").unwrap();
        let mut limited = None;
        for n in 0..2 * MISSES_PER_NAMESPACE_PER_SECOND {
            let forged = [n.to_le_bytes().as_slice(), &[0x5a; 56]].concat();
            if let Err(e @ CodecError::Provider { .. }) = keys.for_opening("orders", &kek, &forged)
            {
                limited = Some(e);
                break;
            }
        }
        assert!(limited.is_some(), "made-up keys are limited");
        assert!(counted.calls().1 <= u64::from(MISSES_PER_NAMESPACE_PER_SECOND));
        keys.for_opening("payments", &sealed.kek_id, &sealed.wrapped)
            .unwrap();
    }

    #[test]
    fn a_forged_data_key_repeated_costs_the_provider_one_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, _) = KeyRing::init(&dir.path().join("keyring.json")).unwrap();
        let kek = ring.active_kek().unwrap();
        let counted = Arc::new(crate::CountingProvider::new(Arc::new(ring)));
        let keys = DataKeys::new(counted.clone(), DataKeyPolicy::default());
        let forged = [0x5a; 60];
        for _ in 0..1000 {
            let refused = keys.for_opening("orders", &kek, &forged).unwrap_err();
            assert!(matches!(refused, CodecError::Tampered { .. }), "{refused}");
        }
        assert_eq!(counted.calls().1, 1, "one unwrap");
    }

    /// A provider whose wraps for `orders` wait until released, as a hung HSM would.
    #[derive(Debug)]
    struct Hanging {
        ring: KeyRing,
        release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl KekProvider for Hanging {
        fn active_kek(&self) -> Result<String, CodecError> {
            self.ring.active_kek()
        }
        fn wrap(&self, kek_id: &str, dek: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
            if aad == wrap_aad("orders", kek_id) {
                let _ = self.release.lock().unwrap().recv();
            }
            self.ring.wrap(kek_id, dek, aad)
        }
        fn unwrap(&self, kek_id: &str, wrapped: &[u8], aad: &[u8]) -> Result<Vec<u8>, CodecError> {
            self.ring.unwrap(kek_id, wrapped, aad)
        }
    }

    #[test]
    fn a_wrap_that_hangs_for_one_namespace_holds_up_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, _) = KeyRing::init(&dir.path().join("keyring.json")).unwrap();
        let (release, released) = std::sync::mpsc::channel();
        let keys = Arc::new(DataKeys::new(
            Arc::new(Hanging {
                ring,
                release: std::sync::Mutex::new(released),
            }),
            DataKeyPolicy::default(),
        ));
        keys.for_sealing("payments").unwrap();
        let hung = {
            let keys = keys.clone();
            std::thread::spawn(move || keys.for_sealing("orders").map(drop))
        };
        // Deadlock detection, not timing: payments' key is cached and needs no provider.
        let (done, finished) = std::sync::mpsc::channel();
        let sealer = keys.clone();
        std::thread::spawn(move || done.send(sealer.for_sealing("payments").map(drop)));
        let sealed = finished.recv_timeout(std::time::Duration::from_secs(30));
        release.send(()).unwrap();
        assert!(
            matches!(sealed, Ok(Ok(()))),
            "payments waited on orders' wrap"
        );
        hung.join().unwrap().unwrap();
    }

    #[test]
    fn a_data_key_wrapped_with_another_namespaces_own_key_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ring, _) = KeyRing::init(&dir.path().join("keyring.json")).unwrap();
        let (orders, _) = ring.ensure_namespace("orders").unwrap();
        // Whoever holds orders' key wraps a data key for payments with it.
        let forged = ring
            .wrap(&orders, &[7; KEY_BYTES], &wrap_aad("payments", &orders))
            .unwrap();
        let keys = DataKeys::new(Arc::new(ring), DataKeyPolicy::default());
        let refused = keys.for_opening("payments", &orders, &forged).unwrap_err();
        assert!(
            matches!(refused, CodecError::WrongNamespace { .. }),
            "{refused}"
        );
    }
}
