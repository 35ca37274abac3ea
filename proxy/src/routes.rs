//! Which upstream each namespace lives on, learned from the control plane's Namespace
//! resources and refreshed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use plinth_control::{BackendError, ControlPlane};
use plinth_identity::Identity;
use plinth_proto::phase;
use plinth_proto::v1::Namespace;

/// An unknown namespace triggers a refresh at most this often, so a stream of calls naming
/// one cannot flood the control plane.
const MISS_REFRESH: Duration = Duration::from_secs(1);
/// A refresh that has not answered within this has failed; calls naming new namespaces wait
/// on it.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many namespaces still being provisioned are read directly on a miss.
const MAX_UNSETTLED_READS: usize = 16;
/// Reads of the resource an unknown name may belong to, per [`MISS_REFRESH`]: in all, and
/// for one caller, so one that makes names up cannot spend the others' share.
const DIRECT_READS: u32 = 16;
const DIRECT_READS_PER_CALLER: u32 = 4;
/// At most this many resources a lookup by an unknown name finds (those started before
/// resources carried their name match any) are read directly.
const NAMING_READS: usize = 4;

/// The workflow ids of the namespace resources a Temporal namespace name can belong to: its
/// own, and, for a Cloud name (`orders.<account>`), the part before the account. None for a
/// name no resource can have.
fn resource_ids(temporal_name: &str) -> Vec<String> {
    let plausible = !temporal_name.is_empty()
        && temporal_name.len() <= 255
        && temporal_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !plausible {
        return Vec::new();
    }
    let mut ids = vec![plinth_control::contract::workflow_id(temporal_name)];
    if let Some((name, _account)) = temporal_name.split_once('.') {
        ids.push(plinth_control::contract::workflow_id(name));
    }
    ids
}

/// Direct reads granted in the current [`MISS_REFRESH`] window, in all and by caller.
#[derive(Debug)]
struct Window {
    started: Instant,
    total: u32,
    /// At most [`DIRECT_READS`] entries: only callers granted a read are kept.
    by_caller: HashMap<String, u32>,
}

/// Direct reads, refilled every [`MISS_REFRESH`].
#[derive(Debug)]
struct Budget {
    window: std::sync::Mutex<Window>,
}

impl Budget {
    fn new() -> Self {
        Self {
            window: std::sync::Mutex::new(Window {
                started: Instant::now(),
                total: 0,
                by_caller: HashMap::new(),
            }),
        }
    }

    /// Whether `caller` may make one more direct read in this window.
    fn take(&self, caller: &str) -> bool {
        let mut window = self.window.lock().expect("budget lock");
        if window.started.elapsed() >= MISS_REFRESH {
            *window = Window {
                started: Instant::now(),
                total: 0,
                by_caller: HashMap::new(),
            };
        }
        if window.total >= DIRECT_READS
            || window.by_caller.get(caller).copied().unwrap_or_default() >= DIRECT_READS_PER_CALLER
        {
            return false;
        }
        window.total += 1;
        *window.by_caller.entry(caller.to_owned()).or_default() += 1;
        true
    }
}

/// Temporal namespace name to upstream endpoint.
#[derive(Debug)]
pub struct Routes {
    control: ControlPlane,
    /// Sends every namespace here instead of the endpoint its status names.
    upstream_override: Option<String>,
    table: RwLock<Arc<HashMap<String, String>>>,
    /// Workflow ids of namespaces the last refresh listed without a route: visibility can lag
    /// a status that is already Ready.
    unsettled: std::sync::Mutex<Vec<String>>,
    /// Direct reads of the resource an unknown name belongs to, left this second.
    direct_reads: Budget,
    /// When the last refresh started; serializes refreshes.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    loaded: AtomicBool,
}

impl Routes {
    /// Routes read from `control`; `upstream_override` replaces every endpoint.
    pub fn new(control: ControlPlane, upstream_override: Option<String>) -> Self {
        Self {
            control,
            upstream_override,
            table: RwLock::default(),
            unsettled: std::sync::Mutex::default(),
            direct_reads: Budget::new(),
            refreshed: tokio::sync::Mutex::new(None),
            loaded: AtomicBool::new(false),
        }
    }

    /// Whether a refresh has succeeded.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// The upstream of `namespace`, refreshing once (at most every second) when it is unknown.
    /// A namespace still being provisioned in that listing, and the one asked for, are read
    /// directly, so one that became Ready a moment ago is served though visibility does not
    /// show it yet, even right after another refresh; those direct reads count against
    /// `caller`'s share.
    pub async fn endpoint(
        &self,
        namespace: &str,
        caller: &Identity,
    ) -> Result<Option<String>, BackendError> {
        if let Some(endpoint) = self.lookup(namespace) {
            return Ok(Some(endpoint));
        }
        let mut refreshed = self.refreshed.lock().await;
        // Another call may have found it while this one waited.
        if let Some(endpoint) = self.lookup(namespace) {
            return Ok(Some(endpoint));
        }
        if refreshed.is_none_or(|at| at.elapsed() >= MISS_REFRESH) {
            self.load(&mut refreshed).await?;
        }
        // Direct reads go on without the lock: a slow one would hold every call naming a new
        // namespace, and the certificate reload, behind it.
        drop(refreshed);
        if self.lookup(namespace).is_none() {
            self.settle(namespace, &caller.to_string()).await;
        }
        Ok(self.lookup(namespace))
    }

    /// Reads from their workflows the namespaces the last listing showed unprovisioned, and
    /// the resources `asked` may name: by their id, and by the name they were started with
    /// (within `caller`'s share: callers make names up). Routes those that are provisioned.
    /// A read that fails skips only its namespace.
    async fn settle(&self, asked: &str, caller: &str) {
        let mut ids = std::mem::take(&mut *self.unsettled.lock().expect("unsettled lock"));
        ids.truncate(MAX_UNSETTLED_READS);
        let own = resource_ids(asked);
        // A name no resource can have is looked up no further.
        let plausible = !own.is_empty();
        for id in own {
            if !ids.contains(&id) && self.direct_reads.take(caller) {
                ids.push(id);
            }
        }
        // A resource named otherwise than its Temporal namespace, started after the last
        // listing (refreshes come at most every second).
        if plausible && self.direct_reads.take(caller) {
            let naming = self
                .control
                .namespaces_naming::<Namespace>(asked, NAMING_READS);
            match with_timeout(naming).await {
                Ok(naming) => {
                    for (id, _) in naming {
                        if !id.is_empty() && !ids.contains(&id) && self.direct_reads.take(caller) {
                            ids.push(id);
                        }
                    }
                }
                Err(error) => tracing::debug!(asked, %error, "namespace not looked up by name"),
            }
        }
        // At once: one after another, reads that time out would add up.
        let reads = ids.into_iter().map(|id| async move {
            match with_timeout(self.control.running::<Namespace>(id.clone())).await {
                Ok(resource) => resource.and_then(|r| self.route(r)),
                Err(error) => {
                    tracing::debug!(id, %error, "namespace not read directly");
                    None
                }
            }
        });
        let found: Vec<_> = futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect();
        if !found.is_empty() {
            let mut table = self.table.write().expect("routes lock");
            let mut updated = HashMap::clone(&table);
            updated.extend(found);
            *table = Arc::new(updated);
        }
    }

    fn lookup(&self, namespace: &str) -> Option<String> {
        self.table
            .read()
            .expect("routes lock")
            .get(namespace)
            .cloned()
    }

    /// Re-reads the table; returns the endpoints in use.
    pub async fn refresh(&self) -> Result<HashSet<String>, BackendError> {
        let mut refreshed = self.refreshed.lock().await;
        self.load(&mut refreshed).await
    }

    async fn load(&self, refreshed: &mut Option<Instant>) -> Result<HashSet<String>, BackendError> {
        *refreshed = Some(Instant::now());
        let listing = self
            .control
            .running_resources::<Namespace>(plinth_proto::KIND_NAMESPACE);
        let mut table = HashMap::new();
        let mut unsettled = Vec::new();
        for (id, resource) in with_timeout(listing).await? {
            let leaving = resource
                .as_ref()
                .and_then(|r| r.status.as_ref())
                .is_some_and(|s| [phase::DELETING, phase::DELETED].contains(&s.phase.as_str()));
            match resource.and_then(|r| self.route(r)) {
                Some((name, endpoint)) => {
                    table.insert(name, endpoint);
                }
                None if !leaving => unsettled.push(id),
                None => {}
            }
        }
        *self.unsettled.lock().expect("unsettled lock") = unsettled;
        let endpoints = table.values().cloned().collect();
        *self.table.write().expect("routes lock") = Arc::new(table);
        self.loaded.store(true, Ordering::Relaxed);
        Ok(endpoints)
    }

    /// A namespace takes traffic once provisioned (its status names an endpoint) until its
    /// deletion starts; a failed later update does not cut it off.
    fn route(&self, resource: Namespace) -> Option<(String, String)> {
        let spec = resource.spec?;
        let status = resource.status?;
        if status.endpoint.is_empty()
            || [phase::DELETING, phase::DELETED].contains(&status.phase.as_str())
        {
            return None;
        }
        let endpoint = self.upstream_override.clone().unwrap_or(status.endpoint);
        let name = if status.temporal_namespace.is_empty() {
            spec.name
        } else {
            status.temporal_namespace
        };
        Some((name, endpoint))
    }
}

async fn with_timeout<T>(
    read: impl std::future::Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(LOAD_TIMEOUT, read)
        .await
        .map_err(|_| BackendError::Unavailable("control plane: no answer in time".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_name_is_looked_up_as_its_own_resource_and_as_a_cloud_name() {
        assert_eq!(resource_ids("orders"), ["namespace/orders"]);
        assert_eq!(
            resource_ids("orders.acct"),
            ["namespace/orders.acct", "namespace/orders"]
        );
        assert!(resource_ids("").is_empty());
        assert!(resource_ids("a/b").is_empty(), "no id of another kind");
        assert!(resource_ids(&"x".repeat(256)).is_empty());
    }

    #[test]
    fn direct_reads_stop_when_the_budget_of_the_second_is_spent() {
        let budget = Budget::new();
        let granted = (0..DIRECT_READS + 5)
            .filter(|i| budget.take(&format!("caller-{i}")))
            .count();
        assert_eq!(granted, DIRECT_READS as usize);
    }

    #[test]
    fn a_caller_that_makes_names_up_spends_only_its_own_share() {
        let budget = Budget::new();
        let spent = (0..100).filter(|_| budget.take("mallory")).count();
        assert_eq!(spent, DIRECT_READS_PER_CALLER as usize);
        assert!(budget.take("alice"), "another caller still reads");
    }
}
