//! The authorization questions the proxy and the codec server ask: may this identity read or
//! write this namespace, answered from the access lists the access runs last wrote to the
//! backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{AccessLevel, BackendError, NamespaceBackend};
use plinth_identity::Identity;

/// What a caller needs on the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reading the namespace's data: read RPCs, decoding payloads.
    Read,
    /// Writing into the namespace: write RPCs, encoding payloads.
    Write,
}

impl Need {
    /// "read" or "write".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// Who may read or write a namespace; as the access runs made it.
#[async_trait::async_trait]
pub trait AccessCheck: Send + Sync + std::fmt::Debug {
    /// Whether `identity` has `need` on `namespace`; `Err` when that cannot be known now.
    async fn allows(
        &self,
        namespace: &str,
        identity: &Identity,
        need: Need,
    ) -> Result<bool, BackendError>;
}

/// How long an access list read from the backend is trusted: a revocation reaches callers
/// within this of the access run that made it.
pub const ACCESS_TTL: Duration = Duration::from_secs(5);

/// Identity (`user:<email>`) to access level.
type AccessList = BTreeMap<String, AccessLevel>;

/// A read of an access list that has not answered within this has failed.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
// A call that waited on a read takes its list however long it took: the read must not
// outlast the TTL, or a revocation would reach that call later than promised.
const _: () = assert!(READ_TIMEOUT.as_nanos() <= ACCESS_TTL.as_nanos());
/// Past this many namespaces, only the entries being read stay, so that names made up by
/// callers (the codec server asks about any) cannot pile up, and clearing is rare.
const PRUNE_ABOVE: usize = 4096;
/// Temporal's default `limit.maxIDLength`, which namespace names are held to.
const MAX_NAME_BYTES: usize = 1000;

/// Whether `namespace` could name a namespace at all: names callers make up otherwise (the
/// codec server asks about any) would be kept and read, however long.
fn could_be_namespace(namespace: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&namespace.len())
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The effective access lists, read at most every [`ACCESS_TTL`] per namespace.
#[derive(Debug)]
pub struct AccessLists {
    backend: Arc<dyn NamespaceBackend>,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

/// One namespace's list, and the lock its reads take.
#[derive(Debug, Default)]
struct Cached {
    /// When the read that gave it started and when it ended, and the list.
    read: Option<(Instant, Instant, Arc<AccessList>)>,
    /// When the last failed read ended, and why it failed: calls that asked before then share
    /// the failure.
    failed: Option<(Instant, String)>,
    /// Held while the list is read: the calls that find it stale together wait for one read
    /// and share its outcome, a failure included, instead of each making its own.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl AccessLists {
    /// Lists read from `backend`.
    pub fn new(backend: Arc<dyn NamespaceBackend>) -> Self {
        Self {
            backend,
            cache: Arc::default(),
        }
    }

    async fn list(&self, namespace: &str) -> Result<Arc<AccessList>, BackendError> {
        if !could_be_namespace(namespace) {
            return Ok(Arc::default());
        }
        let asked = Instant::now();
        let reading = match self.find(namespace, asked) {
            Ok(answer) => return answer,
            Err(reading) => reading,
        };
        let reading = reading.lock_owned().await;
        if let Ok(answer) = self.find(namespace, asked) {
            return answer;
        }
        // The read runs on its own task, holding the lock: a caller that goes away does not
        // end it, and the calls waiting behind it get its outcome.
        let (backend, cache, namespace) = (
            self.backend.clone(),
            self.cache.clone(),
            namespace.to_owned(),
        );
        tokio::spawn(async move {
            let _reading = reading;
            Self::read(backend.as_ref(), &cache, &namespace).await
        })
        .await
        .unwrap_or_else(|e| Err(BackendError::Unavailable(format!("access list read: {e}"))))
    }

    /// Reads the list of `namespace` from `backend` into `cache`.
    async fn read(
        backend: &dyn NamespaceBackend,
        cache: &Mutex<HashMap<String, Cached>>,
        namespace: &str,
    ) -> Result<Arc<AccessList>, BackendError> {
        // Stamped before the read: a revocation written during it is seen within the TTL.
        let started = Instant::now();
        let read = tokio::time::timeout(READ_TIMEOUT, backend.list_access(namespace))
            .await
            .unwrap_or_else(|_| {
                Err(BackendError::Unavailable(format!(
                    "no answer within {READ_TIMEOUT:?}"
                )))
            });
        let outcome = match read {
            Ok(list) => Ok(Arc::new(list)),
            // An unknown namespace grants nothing.
            Err(BackendError::Rejected(_)) => Ok(Arc::default()),
            Err(e) => Err(e),
        };
        let mut cache = cache.lock().expect("access cache lock");
        if cache.len() > PRUNE_ABOVE {
            cache.retain(|_, cached| Arc::strong_count(&cached.reading) > 1);
        }
        let cached = cache.entry(namespace.to_owned()).or_default();
        match outcome {
            Ok(list) => {
                cached.read = Some((started, Instant::now(), list.clone()));
                Ok(list)
            }
            Err(e) => {
                cached.failed = Some((Instant::now(), e.to_string()));
                Err(e)
            }
        }
    }

    /// The answer for `namespace` to a call that asked at `asked`: its list while fresh, or
    /// the outcome of a read that ended since, success or failure; else the lock to read it
    /// under.
    fn find(
        &self,
        namespace: &str,
        asked: Instant,
    ) -> Result<Result<Arc<AccessList>, BackendError>, Arc<tokio::sync::Mutex<()>>> {
        let mut cache = self.cache.lock().expect("access cache lock");
        // The name is copied only the first time it is asked about.
        if !cache.contains_key(namespace) {
            cache.insert(namespace.to_owned(), Cached::default());
        }
        let cached = &cache[namespace];
        if let Some((started, ended, list)) = &cached.read
            && (started.elapsed() < ACCESS_TTL || *ended >= asked)
        {
            return Ok(Ok(list.clone()));
        }
        if let Some((failed, why)) = &cached.failed
            && *failed >= asked
        {
            return Ok(Err(BackendError::Unavailable(why.clone())));
        }
        Err(cached.reading.clone())
    }
}

#[async_trait::async_trait]
impl AccessCheck for AccessLists {
    async fn allows(
        &self,
        namespace: &str,
        identity: &Identity,
        need: Need,
    ) -> Result<bool, BackendError> {
        let list = self.list(namespace).await?;
        let held = list.get(&identity.to_string()).copied();
        Ok(match need {
            Need::Read => held.is_some(),
            Need::Write => held.is_some_and(|level| level >= AccessLevel::Write),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::AccessChange;
    use crate::backend::memory::MemoryBackend;
    use plinth_proto::v1::NamespaceSpec;

    /// A backend where alice may write `orders`.
    async fn orders() -> Arc<MemoryBackend> {
        let backend = Arc::new(MemoryBackend::default());
        let spec = NamespaceSpec {
            name: "orders".into(),
            ..Default::default()
        };
        backend.register(&spec).await.unwrap();
        backend
            .apply_access(
                "orders",
                &[AccessChange::Grant(
                    "user:alice@example.com".into(),
                    AccessLevel::Write,
                )],
            )
            .await
            .unwrap();
        backend
    }

    fn alice() -> Identity {
        Identity::User {
            email: "alice@example.com".into(),
        }
    }

    fn reads(backend: &MemoryBackend) -> usize {
        backend
            .calls()
            .iter()
            .filter(|call| *call == "list_access orders")
            .count()
    }

    #[tokio::test]
    async fn calls_that_find_a_list_stale_together_read_it_once() {
        let backend = orders().await;
        let lists = AccessLists::new(backend.clone());
        let alice = alice();

        let checks = (0..64).map(|_| lists.allows("orders", &alice, Need::Write));
        let answers = futures::future::join_all(checks).await;

        assert!(answers.into_iter().all(|answer| matches!(answer, Ok(true))));
        assert_eq!(reads(&backend), 1);
    }

    #[tokio::test]
    async fn calls_waiting_on_a_read_that_fails_share_its_failure_and_later_ones_read_again() {
        let backend = orders().await;
        backend.fail_after("list_access", 0);
        let lists = AccessLists::new(backend.clone());
        let alice = alice();

        let checks = (0..64).map(|_| lists.allows("orders", &alice, Need::Write));
        let answers = futures::future::join_all(checks).await;

        assert!(
            answers
                .iter()
                .all(|answer| matches!(answer, Err(BackendError::Unavailable(_))))
        );
        assert_eq!(reads(&backend), 1);
        assert!(matches!(
            lists.allows("orders", &alice, Need::Write).await,
            Ok(true)
        ));
        assert_eq!(reads(&backend), 2);
    }

    #[tokio::test]
    async fn names_callers_make_up_do_not_pile_up() {
        let lists = AccessLists::new(Arc::new(MemoryBackend::default()));
        for i in 0..2 * PRUNE_ABOVE {
            let made_up = format!("made-up-{i}");
            let answer = lists.allows(&made_up, &alice(), Need::Read).await;
            assert!(matches!(answer, Ok(false)));
        }
        assert!(lists.cache.lock().unwrap().len() <= PRUNE_ABOVE + 1);
    }

    #[tokio::test]
    async fn a_name_no_namespace_can_have_grants_nothing_and_is_neither_read_nor_kept() {
        let backend = orders().await;
        let lists = AccessLists::new(backend.clone());
        for name in [
            "x".repeat(300_000),
            "orders/../orders".into(),
            String::new(),
        ] {
            let answer = lists.allows(&name, &alice(), Need::Read).await;
            assert!(matches!(answer, Ok(false)));
        }
        let reads = backend.calls();
        assert!(
            !reads.iter().any(|call| call.starts_with("list_access")),
            "{reads:?}"
        );
        assert!(lists.cache.lock().unwrap().is_empty());
    }

    #[test]
    fn a_call_that_waited_on_a_read_takes_its_list_though_the_read_outlasted_the_ttl() {
        let lists = AccessLists::new(Arc::new(MemoryBackend::default()));
        let asked = Instant::now();
        let started = asked.checked_sub(ACCESS_TTL * 2).unwrap_or(asked);
        let list = Arc::new(AccessList::from([(
            "user:alice@example.com".to_owned(),
            AccessLevel::Write,
        )]));
        lists.cache.lock().unwrap().insert(
            "orders".into(),
            Cached {
                read: Some((started, Instant::now(), list.clone())),
                ..Cached::default()
            },
        );
        assert!(matches!(lists.find("orders", asked), Ok(Ok(found)) if found == list));
        let later = Instant::now() + Duration::from_millis(1);
        assert!(
            lists.find("orders", later).is_err(),
            "a later call reads again"
        );
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_end_the_read_others_wait_for() {
        let backend = orders().await;
        backend.slow_down(Duration::from_millis(300));
        let lists = Arc::new(AccessLists::new(backend.clone()));
        let check = || {
            let lists = lists.clone();
            tokio::spawn(async move { lists.allows("orders", &alice(), Need::Write).await })
        };
        let first = check();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = check();
        tokio::time::sleep(Duration::from_millis(50)).await;
        first.abort();
        assert!(matches!(second.await.unwrap(), Ok(true)));
        assert_eq!(reads(&backend), 1);
    }
}
