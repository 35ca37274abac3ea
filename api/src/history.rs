//! `ListHistories` and `GetHistory`: closed workflows' histories, from Temporal while it keeps
//! them and from the history export after, to those who may read the namespace.

use std::sync::Arc;
use std::time::SystemTime;

use plinth_archive::Archive;
use plinth_archive::history;
use plinth_control::{AccessCheck, Admins, NamespaceBackend, Need};
use plinth_identity::Identity;
use plinth_proto::v1::{
    GetHistoryRequest, GetHistoryResponse, ListHistoriesRequest, ListHistoriesResponse,
};
use prost::Message as _;
use tonic::Status;

use crate::audit::{MAX_RANGE, limit, range};

/// Bytes of indexes one call reads at most.
const MAX_INDEX_READ: u64 = 64 << 20;
/// Calls answered at once by one proxy: a history read holds an export object in memory.
const CALLS_AT_ONCE: usize = 2;

/// Where the API reads the export, and who may read which namespace's.
#[derive(Clone, Debug)]
pub struct HistoryReader {
    archive: Archive,
    access: Arc<dyn AccessCheck>,
    backend: Arc<dyn NamespaceBackend>,
    running: Arc<tokio::sync::Semaphore>,
}

impl HistoryReader {
    /// Reads `archive`; a namespace's export is shown to who `access` lets read the
    /// namespace, under the name `backend` gives it in Temporal.
    pub fn new(
        archive: Archive,
        access: Arc<dyn AccessCheck>,
        backend: Arc<dyn NamespaceBackend>,
    ) -> Self {
        Self {
            archive,
            access,
            backend,
            running: Arc::new(tokio::sync::Semaphore::new(CALLS_AT_ONCE)),
        }
    }

    pub(crate) async fn list(
        &self,
        admins: &Admins,
        identity: &Identity,
        request: ListHistoriesRequest,
    ) -> Result<ListHistoriesResponse, Status> {
        let (since, until) = range(&request.since, "since", &request.until, "until")?;
        let limit = limit(request.limit)?;
        let namespace = self.readable(admins, identity, &request.namespace).await?;
        let _running = self.turn()?;
        let since = self.floor(admins, identity, &namespace, since).await?;
        let mut listing = history::list(&self.archive, &namespace, since, until, MAX_INDEX_READ)
            .await
            .map_err(unavailable)?;
        if !request.workflow_id.is_empty() {
            listing
                .workflows
                .retain(|w| w.workflow_id == request.workflow_id);
        }
        let truncated = listing.exhausted || listing.workflows.len() > limit;
        listing.workflows.truncate(limit);
        Ok(ListHistoriesResponse {
            workflows: listing.workflows,
            truncated,
        })
    }

    pub(crate) async fn get(
        &self,
        admins: &Admins,
        identity: &Identity,
        request: GetHistoryRequest,
    ) -> Result<GetHistoryResponse, Status> {
        if request.workflow_id.is_empty() {
            return Err(Status::invalid_argument("workflow_id: missing"));
        }
        let (since, until) = if request.since.is_empty() {
            let until = SystemTime::now();
            (until - MAX_RANGE, until)
        } else {
            range(&request.since, "since", "", "until")?
        };
        let namespace = self.readable(admins, identity, &request.namespace).await?;
        let _running = self.turn()?;
        // While Temporal keeps it, Temporal's copy; an outage there falls back to the export.
        match self
            .backend
            .history(&namespace, &request.workflow_id, &request.run_id)
            .await
        {
            Ok(Some(history)) => {
                return Ok(GetHistoryResponse {
                    workflow: None,
                    history: history.encode_to_vec(),
                    temporal_namespace: namespace,
                    source: "temporal".into(),
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::info!(error = %e, "history not read from Temporal; reading the export")
            }
        }
        let since = self.floor(admins, identity, &namespace, since).await?;
        let listing = history::list(&self.archive, &namespace, since, until, MAX_INDEX_READ)
            .await
            .map_err(unavailable)?;
        // Newest close first: with no run named, the run that closed last.
        let entry = listing
            .workflows
            .into_iter()
            .find(|w| {
                w.workflow_id == request.workflow_id
                    && (request.run_id.is_empty() || w.run_id == request.run_id)
            })
            .ok_or_else(|| {
                Status::not_found(format!(
                    "workflow {:?}{} is not in the history export of {:?}{}",
                    request.workflow_id,
                    if request.run_id.is_empty() {
                        String::new()
                    } else {
                        format!(" run {:?}", request.run_id)
                    },
                    request.namespace,
                    if listing.exhausted {
                        " (the search stopped at its budget: give --since)"
                    } else {
                        ""
                    }
                ))
            })?;
        let history = history::read(&self.archive, &namespace, &entry)
            .await
            .map_err(unavailable)?;
        Ok(GetHistoryResponse {
            workflow: Some(entry),
            history: history.encode_to_vec(),
            temporal_namespace: namespace,
            source: "export".into(),
        })
    }

    /// Where a reader's view of `namespace`'s export starts: for anyone but admins, not
    /// before the name was last deleted, so whoever re-creates a name reads nothing of the
    /// namespace that held it before.
    async fn floor(
        &self,
        admins: &Admins,
        identity: &Identity,
        namespace: &str,
        since: SystemTime,
    ) -> Result<SystemTime, Status> {
        if admins.include(identity) {
            return Ok(since);
        }
        let deleted = history::deleted_at(&self.archive, namespace)
            .await
            .map_err(unavailable)?;
        Ok(deleted.map_or(since, |deleted| since.max(deleted)))
    }

    /// The Temporal name of `namespace` if `identity` may read it: admins any, others where
    /// the access list lets them read.
    async fn readable(
        &self,
        admins: &Admins,
        identity: &Identity,
        namespace: &str,
    ) -> Result<String, Status> {
        plinth_proto::check_dns_label("namespace", namespace)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !admins.include(identity) {
            let allowed = self
                .access
                .allows(namespace, identity, Need::Read)
                .await
                .unwrap_or(false);
            if !allowed {
                tracing::warn!(%identity, namespace, decision = "deny", "history export read");
                return Err(Status::permission_denied(format!(
                    "{identity} has no read access to namespace {namespace:?}"
                )));
            }
        }
        tracing::info!(%identity, namespace, decision = "allow", "history export read");
        Ok(self.backend.temporal_name(namespace))
    }

    fn turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.running.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{CALLS_AT_ONCE} history export reads are running; try again shortly"
            ))
        })
    }
}

/// The store's own words stay in the proxy's log: they may name credentials' ids.
fn unavailable(e: plinth_archive::ArchiveError) -> Status {
    tracing::warn!(error = %e, "history export not read");
    Status::unavailable("the history export cannot be read now; the proxy's log says why")
}
