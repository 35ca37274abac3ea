//! The authorization questions the data plane asks: may this identity read or write this
//! namespace, answered from the access lists the access runs last wrote to the backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{AccessLevel, BackendError, NamespaceBackend};
use plinth_identity::Identity;

/// What a caller needs on the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Decode: reading the namespace's data.
    Read,
    /// Encode: writing into the namespace.
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

/// The effective access lists, read at most every [`ACCESS_TTL`] per namespace.
#[derive(Debug)]
pub struct AccessLists {
    backend: Arc<dyn NamespaceBackend>,
    cache: Mutex<HashMap<String, Cached>>,
}

/// One namespace's list, and the lock its reads take.
#[derive(Debug, Default)]
struct Cached {
    /// When it was read, and the list.
    read: Option<(Instant, Arc<AccessList>)>,
    /// Held while the list is read, so that the calls that find it stale together wait for
    /// one read instead of each making its own.
    reading: Arc<tokio::sync::Mutex<()>>,
}

impl AccessLists {
    /// Lists read from `backend`.
    pub fn new(backend: Arc<dyn NamespaceBackend>) -> Self {
        Self {
            backend,
            cache: Mutex::default(),
        }
    }

    async fn list(&self, namespace: &str) -> Result<Arc<AccessList>, BackendError> {
        let reading = match self.fresh(namespace) {
            Ok(list) => return Ok(list),
            Err(reading) => reading,
        };
        let _reading = reading.lock().await;
        let reading = match self.fresh(namespace) {
            Ok(list) => return Ok(list),
            Err(reading) => reading,
        };
        let list = match self.backend.list_access(namespace).await {
            Ok(list) => Arc::new(list),
            // An unknown namespace grants nothing.
            Err(BackendError::Rejected(_)) => Arc::default(),
            Err(e) => return Err(e),
        };
        self.cache.lock().expect("access cache lock").insert(
            namespace.to_owned(),
            Cached {
                read: Some((Instant::now(), list.clone())),
                reading,
            },
        );
        Ok(list)
    }

    /// The list of `namespace` if it is fresh, else the lock to read it under.
    fn fresh(&self, namespace: &str) -> Result<Arc<AccessList>, Arc<tokio::sync::Mutex<()>>> {
        let mut cache = self.cache.lock().expect("access cache lock");
        if let Some(Cached {
            read: Some((read, list)),
            ..
        }) = cache.get(namespace)
            && read.elapsed() < ACCESS_TTL
        {
            return Ok(list.clone());
        }
        Err(cache
            .entry(namespace.to_owned())
            .or_default()
            .reading
            .clone())
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
    use crate::backend::memory::MemoryBackend;
    use plinth_proto::v1::NamespaceSpec;

    #[tokio::test]
    async fn calls_that_find_a_list_stale_together_read_it_once() {
        let backend = Arc::new(MemoryBackend::default());
        let spec = NamespaceSpec {
            name: "orders".into(),
            ..Default::default()
        };
        backend.register(&spec).await.unwrap();
        backend
            .grant("orders", "user:alice@example.com", AccessLevel::Write)
            .await
            .unwrap();
        let lists = AccessLists::new(backend.clone());
        let alice = Identity::User {
            email: "alice@example.com".into(),
        };

        let checks = (0..64).map(|_| lists.allows("orders", &alice, Need::Write));
        let answers = futures::future::join_all(checks).await;

        assert!(answers.into_iter().all(|answer| matches!(answer, Ok(true))));
        let reads = backend
            .calls()
            .iter()
            .filter(|call| *call == "list_access orders")
            .count();
        assert_eq!(reads, 1);
    }
}
