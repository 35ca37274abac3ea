//! Which upstream each namespace lives on, learned from the control plane's Namespace
//! resources and refreshed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// At most this many namespaces still being provisioned are read directly on a miss (each
/// once more if a listing comes while it is out).
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

/// What the last listing said, with what direct reads added since.
#[derive(Debug, Default)]
struct Table {
    /// Temporal namespace name to upstream endpoint.
    routes: HashMap<String, String>,
    /// Counts listings, so a read can tell whether one came while it was out.
    listing: u64,
}

impl Table {
    /// This table with the routes direct reads found, made since listing `since`; `None` when
    /// a listing came while they were out. That listing is the newer word on every name: one
    /// it routes otherwise, shows being deleted, or no longer shows (its workflow ended) is
    /// not routed from an older read.
    fn with_read(
        &self,
        found: impl IntoIterator<Item = (String, String)>,
        since: u64,
    ) -> Option<Self> {
        if self.listing != since {
            return None;
        }
        let mut routes = self.routes.clone();
        routes.extend(found);
        Some(Self {
            routes,
            listing: self.listing,
        })
    }
}

/// When the last refresh ended, and whether it failed.
#[derive(Debug, Clone, Copy)]
struct Refreshed {
    at: Instant,
    failed: bool,
}

/// Temporal namespace name to upstream endpoint.
#[derive(Debug)]
pub struct Routes {
    control: ControlPlane,
    /// Sends every namespace here instead of the endpoint its status names.
    upstream_override: Option<String>,
    table: RwLock<Arc<Table>>,
    /// Workflow ids of namespaces the last refresh listed without a route: visibility can lag
    /// a status that is already Ready.
    unsettled: std::sync::Mutex<Vec<String>>,
    /// Direct reads of the resource an unknown name belongs to, left this second.
    direct_reads: Budget,
    /// How the last refresh ended; serializes refreshes.
    refreshed: tokio::sync::Mutex<Option<Refreshed>>,
    /// Refreshes ended, whatever their outcome: a call that waited on one does not start
    /// another.
    attempts: AtomicU64,
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
            attempts: AtomicU64::new(0),
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
    /// `caller`'s share (reading again what they found, when a listing came meanwhile, does
    /// not).
    pub async fn endpoint(
        &self,
        namespace: &str,
        caller: &Identity,
    ) -> Result<Option<String>, BackendError> {
        if let Some(endpoint) = self.lookup(namespace) {
            return Ok(Some(endpoint));
        }
        let attempts = self.attempts.load(Ordering::Acquire);
        let mut refreshed = self.refreshed.lock().await;
        // Another call may have found it while this one waited.
        if let Some(endpoint) = self.lookup(namespace) {
            return Ok(Some(endpoint));
        }
        // One refresh serves every call that waited on it, and the next comes a second after
        // it ended: calls naming made-up names while listings time out do not queue a
        // listing each.
        let waited_on_one = self.attempts.load(Ordering::Acquire) != attempts;
        if !waited_on_one && refreshed.is_none_or(|last| last.at.elapsed() >= MISS_REFRESH) {
            self.load(&mut refreshed).await?;
        }
        let failed = refreshed.is_some_and(|last| last.failed);
        // Direct reads go on without the lock: a slow one would hold every call naming a new
        // namespace, and the certificate reload, behind it.
        drop(refreshed);
        if self.lookup(namespace).is_none() {
            self.settle(namespace, &caller.to_string()).await;
        }
        match self.lookup(namespace) {
            // Not known for not served while the control plane does not answer: the caller
            // tries again.
            None if failed => Err(BackendError::Unavailable(
                "control plane: the namespaces could not be listed".into(),
            )),
            endpoint => Ok(endpoint),
        }
    }

    /// Reads from their workflows the namespaces the last listing showed unprovisioned, and
    /// the resources `asked` may name: by their id, and by the name they were started with
    /// (within `caller`'s share: callers make names up). Routes those that are provisioned.
    /// A read that fails skips only its namespace.
    async fn settle(&self, asked: &str, caller: &str) {
        let mut listing = self.table.read().expect("routes lock").listing;
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
        // A listing that comes while the reads are out (the periodic one, say) makes them
        // stale: what they found is read again after it, once, without spending the
        // caller's share, as it names real namespaces.
        for _ in 0..2 {
            // At once: one after another, reads that time out would add up.
            let reads = ids.iter().map(|id| async move {
                match with_timeout(self.control.running::<Namespace>(id.clone())).await {
                    Ok(resource) => resource.and_then(|r| self.route(r)).map(|r| (id, r)),
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
            if found.is_empty() {
                return;
            }
            let mut table = self.table.write().expect("routes lock");
            if let Some(newer) = table.with_read(found.iter().map(|(_, r)| r.clone()), listing) {
                *table = Arc::new(newer);
                return;
            }
            listing = table.listing;
            // What the newer listing routes, it routes its way.
            ids = found
                .into_iter()
                .filter(|(_, (name, _))| !table.routes.contains_key(name))
                .map(|(id, _)| id.clone())
                .collect();
        }
    }

    fn lookup(&self, namespace: &str) -> Option<String> {
        self.table
            .read()
            .expect("routes lock")
            .routes
            .get(namespace)
            .cloned()
    }

    /// Re-reads the table; returns the endpoints in use.
    pub async fn refresh(&self) -> Result<HashSet<String>, BackendError> {
        let mut refreshed = self.refreshed.lock().await;
        self.load(&mut refreshed).await
    }

    async fn load(
        &self,
        refreshed: &mut Option<Refreshed>,
    ) -> Result<HashSet<String>, BackendError> {
        let listing = self
            .control
            .running_resources::<Namespace>(plinth_proto::KIND_NAMESPACE);
        let listed = with_timeout(listing).await;
        *refreshed = Some(Refreshed {
            at: Instant::now(),
            failed: listed.is_err(),
        });
        self.attempts.fetch_add(1, Ordering::Release);
        let mut routes = HashMap::new();
        let mut unsettled = Vec::new();
        for (id, resource) in listed? {
            let Some(resource) = resource else {
                unsettled.push(id);
                continue;
            };
            if is_leaving(&resource) {
                continue;
            }
            match self.route(resource) {
                Some((name, endpoint)) => {
                    routes.insert(name, endpoint);
                }
                None => unsettled.push(id),
            }
        }
        *self.unsettled.lock().expect("unsettled lock") = unsettled;
        let endpoints = routes.values().cloned().collect();
        let mut table = self.table.write().expect("routes lock");
        *table = Arc::new(Table {
            routes,
            listing: table.listing + 1,
        });
        self.loaded.store(true, Ordering::Relaxed);
        Ok(endpoints)
    }

    /// A namespace takes traffic once provisioned (its status names an endpoint) until its
    /// deletion starts; a failed later update does not cut it off.
    fn route(&self, resource: Namespace) -> Option<(String, String)> {
        let name = temporal_name(&resource)?;
        if is_leaving(&resource) {
            return None;
        }
        let status = resource.status?;
        if status.endpoint.is_empty() {
            return None;
        }
        let endpoint = self.upstream_override.clone().unwrap_or(status.endpoint);
        Some((name, endpoint))
    }
}

fn is_leaving(resource: &Namespace) -> bool {
    resource
        .status
        .as_ref()
        .is_some_and(|status| [phase::DELETING, phase::DELETED].contains(&status.phase.as_str()))
}

/// The Temporal namespace a resource serves: the one its status names, else its own name.
fn temporal_name(resource: &Namespace) -> Option<String> {
    let spec = resource.spec.as_ref()?;
    let status = resource.status.as_ref()?;
    Some(if status.temporal_namespace.is_empty() {
        spec.name.clone()
    } else {
        status.temporal_namespace.clone()
    })
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

    fn listed(routes: &[(&str, &str)], listing: u64) -> Table {
        Table {
            routes: routes
                .iter()
                .map(|(n, e)| (n.to_string(), e.to_string()))
                .collect(),
            listing,
        }
    }

    fn found(name: &str, endpoint: &str) -> Vec<(String, String)> {
        vec![(name.to_owned(), endpoint.to_owned())]
    }

    #[test]
    fn a_read_routes_a_namespace_the_listing_it_followed_missed() {
        let table = listed(&[], 7).with_read(found("orders", "a:7233"), 7);
        assert_eq!(table.unwrap().routes["orders"], "a:7233");
    }

    #[test]
    fn a_read_older_than_the_listing_routes_nothing() {
        // Being deleted, or deleted with its workflow ended: the listing leaves it out, or
        // names another endpoint.
        let table = listed(&[("orders", "b:7233")], 8).with_read(found("orders", "a:7233"), 7);
        assert!(table.is_none());
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
