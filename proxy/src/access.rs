//! Who may read or write a namespace, as the access runs last wrote it to the backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plinth_activities::{AccessLevel, BackendError, NamespaceBackend};
use plinth_codec::server::{AccessCheck, Need};
use plinth_identity::Identity;

/// How long an access list read from the backend is trusted: a revocation reaches callers
/// within this of the access run that made it.
pub const ACCESS_TTL: Duration = Duration::from_secs(5);

/// Identity (`user:<email>`) to access level.
type AccessList = BTreeMap<String, AccessLevel>;

/// The effective access lists, read at most every [`ACCESS_TTL`] per namespace.
#[derive(Debug)]
pub struct AccessLists {
    backend: Arc<dyn NamespaceBackend>,
    /// Per namespace: when it was read, and the list.
    cache: Mutex<HashMap<String, (Instant, Arc<AccessList>)>>,
}

impl AccessLists {
    /// Lists read from `backend`.
    pub fn new(backend: Arc<dyn NamespaceBackend>) -> Self {
        Self {
            backend,
            cache: Mutex::default(),
        }
    }

    async fn list(&self, namespace: &str) -> Result<Arc<AccessList>, String> {
        let cached = self
            .cache
            .lock()
            .expect("access cache lock")
            .get(namespace)
            .filter(|(read, _)| read.elapsed() < ACCESS_TTL)
            .map(|(_, list)| list.clone());
        if let Some(list) = cached {
            return Ok(list);
        }
        let list = match self.backend.list_access(namespace).await {
            Ok(list) => Arc::new(list),
            // An unknown namespace grants nothing.
            Err(BackendError::Rejected(_)) => Arc::default(),
            Err(e) => return Err(e.to_string()),
        };
        self.cache
            .lock()
            .expect("access cache lock")
            .insert(namespace.to_owned(), (Instant::now(), list.clone()));
        Ok(list)
    }
}

#[async_trait::async_trait]
impl AccessCheck for AccessLists {
    async fn allows(
        &self,
        namespace: &str,
        identity: &Identity,
        need: Need,
    ) -> Result<bool, String> {
        let list = self.list(namespace).await?;
        let held = list.get(&identity.to_string()).copied();
        Ok(match need {
            Need::Read => held.is_some(),
            Need::Write => held.is_some_and(|level| level >= AccessLevel::Write),
        })
    }
}
