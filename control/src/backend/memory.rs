//! A backend held in memory, for tests of what runs against [`NamespaceBackend`]: it keeps
//! namespaces and access lists as a real backend does, records every call made to it, and
//! lets other tasks run during each call, as a call over the network does; a test can make a
//! chosen call fail, as a crash or an outage there would.

use std::collections::BTreeMap;
use std::sync::Mutex;

use plinth_proto::v1::NamespaceSpec;

use crate::{AccessChange, AccessLevel, BackendError, NamespaceBackend, ObservedNamespace};

/// Namespaces and their access lists in memory.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
    /// How long each call takes; none is a turn of the scheduler.
    latency: Mutex<Option<std::time::Duration>>,
}

#[derive(Debug, Default)]
struct State {
    namespaces: BTreeMap<String, Stored>,
    /// Each call, as `method namespace`.
    calls: Vec<String>,
    /// Calls to fail, as a crash or an outage there would: the method, and how many of its
    /// calls succeed first.
    failing: Vec<(&'static str, usize)>,
}

#[derive(Debug, Default)]
struct Stored {
    observed: ObservedNamespace,
    access: BTreeMap<String, AccessLevel>,
}

impl MemoryBackend {
    /// Every call made so far, as `method namespace`, in order.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// Makes every later call take `latency`, as a slow backend's would.
    pub fn slow_down(&self, latency: std::time::Duration) {
        *self.latency.lock().expect("memory backend lock") = Some(latency);
    }

    /// Lets other tasks run, for as long as a call takes.
    async fn turn(&self) {
        let latency = *self.latency.lock().expect("memory backend lock");
        match latency {
            Some(latency) => tokio::time::sleep(latency).await,
            None => tokio::task::yield_now().await,
        }
    }

    /// Makes a call of `method` fail as unavailable, changing nothing, once `succeeding` more
    /// of its calls have succeeded.
    pub fn fail_after(&self, method: &'static str, succeeding: usize) {
        self.state().failing.push((method, succeeding));
    }

    /// The calls that changed something, as `method namespace`.
    pub fn writes(&self) -> Vec<String> {
        const READS: [&str; 2] = ["describe", "list_access"];
        self.calls()
            .into_iter()
            .filter(|call| {
                call.split_once(' ')
                    .is_none_or(|(method, _)| !READS.contains(&method))
            })
            .collect()
    }

    /// Records a call of `method` on `name`; fails it when [`Self::fail_after`] asked.
    fn record(
        &self,
        method: &'static str,
        name: &str,
    ) -> Result<std::sync::MutexGuard<'_, State>, BackendError> {
        let mut state = self.state();
        state.calls.push(format!("{method} {name}"));
        if let Some(at) = state
            .failing
            .iter()
            .position(|(failing, _)| *failing == method)
        {
            if state.failing[at].1 == 0 {
                state.failing.remove(at);
                return Err(BackendError::Unavailable(format!(
                    "{method}: injected fault"
                )));
            }
            state.failing[at].1 -= 1;
        }
        Ok(state)
    }

    /// Gives `identity` `level` on namespace `name`.
    fn set(
        &self,
        method: &'static str,
        name: &str,
        identity: &str,
        level: AccessLevel,
    ) -> Result<(), BackendError> {
        self.on(method, name, |stored| {
            stored.access.insert(identity.to_owned(), level);
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory backend lock")
    }

    /// Records the call, and runs `f` on namespace `name`, which must exist.
    fn on<T>(
        &self,
        method: &'static str,
        name: &str,
        f: impl FnOnce(&mut Stored) -> T,
    ) -> Result<T, BackendError> {
        self.record(method, name)?
            .namespaces
            .get_mut(name)
            .map(f)
            .ok_or_else(|| BackendError::Rejected(format!("namespace {name:?} does not exist")))
    }
}

#[async_trait::async_trait]
impl NamespaceBackend for MemoryBackend {
    async fn describe(&self, name: &str) -> Result<Option<ObservedNamespace>, BackendError> {
        self.turn().await;
        match self.on("describe", name, |stored| stored.observed.clone()) {
            Ok(observed) => Ok(Some(observed)),
            Err(BackendError::Rejected(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn register(&self, spec: &NamespaceSpec) -> Result<(), BackendError> {
        self.turn().await;
        self.record("register", &spec.name)?
            .namespaces
            .entry(spec.name.clone())
            .or_insert_with(|| Stored {
                observed: ObservedNamespace {
                    retention_days: spec.retention_days,
                    description: Some(spec.description.clone()),
                    owner_email: Some(spec.owner.clone()),
                    ..Default::default()
                },
                access: BTreeMap::new(),
            });
        Ok(())
    }

    async fn update(&self, spec: &NamespaceSpec) -> Result<(), BackendError> {
        self.turn().await;
        self.on("update", &spec.name, |stored| {
            stored.observed.retention_days = spec.retention_days;
            stored.observed.description = Some(spec.description.clone());
            stored.observed.owner_email = Some(spec.owner.clone());
        })
    }

    async fn add_search_attributes(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        self.turn().await;
        self.on("add_search_attributes", name, |stored| {
            for (attribute, kind) in attributes {
                stored
                    .observed
                    .search_attributes
                    .entry(attribute.clone())
                    .or_insert_with(|| kind.clone());
            }
        })
    }

    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        self.turn().await;
        self.record("delete", name)?.namespaces.remove(name);
        Ok(())
    }

    async fn endpoint(&self, _name: &str) -> Result<String, BackendError> {
        Ok("memory".to_owned())
    }

    async fn list_access(&self, name: &str) -> Result<BTreeMap<String, AccessLevel>, BackendError> {
        self.turn().await;
        self.on("list_access", name, |stored| stored.access.clone())
    }

    /// One write per change, recorded as `grant`, `change_access` or `revoke`.
    async fn apply_access(
        &self,
        name: &str,
        changes: &[AccessChange],
    ) -> Result<u32, BackendError> {
        for change in changes {
            self.turn().await;
            match change {
                AccessChange::Grant(identity, level) => {
                    self.set("grant", name, identity, *level)?
                }
                AccessChange::Change(identity, level) => {
                    self.set("change_access", name, identity, *level)?
                }
                AccessChange::Revoke(identity) => self.on("revoke", name, |stored| {
                    stored.access.remove(identity);
                })?,
            }
        }
        Ok(u32::try_from(changes.len()).unwrap_or(u32::MAX))
    }
}
