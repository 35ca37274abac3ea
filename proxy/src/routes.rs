//! Which upstream each namespace lives on, learned from the control plane's Namespace
//! resources and refreshed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use plinth_control::{BackendError, ControlPlane};
use plinth_proto::phase;
use plinth_proto::v1::Namespace;

/// An unknown namespace triggers a refresh at most this often, so a stream of calls naming
/// one cannot flood the control plane.
const MISS_REFRESH: Duration = Duration::from_secs(1);

/// Temporal namespace name to upstream endpoint.
#[derive(Debug)]
pub struct Routes {
    control: ControlPlane,
    /// Sends every namespace here instead of the endpoint its status names.
    upstream_override: Option<String>,
    table: RwLock<Arc<HashMap<String, String>>>,
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
            refreshed: tokio::sync::Mutex::new(None),
            loaded: AtomicBool::new(false),
        }
    }

    /// Whether a refresh has succeeded.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    /// The upstream of `namespace`, refreshing once (at most every second) when it is unknown.
    pub async fn endpoint(&self, namespace: &str) -> Result<Option<String>, BackendError> {
        if let Some(endpoint) = self.lookup(namespace) {
            return Ok(Some(endpoint));
        }
        let mut refreshed = self.refreshed.lock().await;
        if refreshed.is_none_or(|at| at.elapsed() >= MISS_REFRESH) {
            self.load(&mut refreshed).await?;
        }
        Ok(self.lookup(namespace))
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
        let resources = self
            .control
            .running_resources::<Namespace>(plinth_proto::KIND_NAMESPACE)
            .await?;
        let table: HashMap<String, String> = resources
            .into_iter()
            .filter_map(|(_, resource)| self.route(resource?))
            .collect();
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
        Some((spec.name, endpoint))
    }
}
