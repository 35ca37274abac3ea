use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use plinth_proto::v1::{ExportedWorkflow, NamespaceSpec};
use temporalio_client::Connection;
use temporalio_client::tonic::{Code, Request, Status};
use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use temporalio_common::protos::temporal::api::history::v1::History;
use temporalio_common::protos::temporal::api::namespace::v1::{
    NamespaceConfig, UpdateNamespaceInfo,
};
use temporalio_common::protos::temporal::api::operatorservice::v1::{
    AddSearchAttributesRequest, DeleteNamespaceRequest, ListSearchAttributesRequest,
};
use temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    CountWorkflowExecutionsRequest, DescribeNamespaceRequest, DescribeNamespaceResponse,
    GetWorkflowExecutionHistoryRequest, ListWorkflowExecutionsRequest, RegisterNamespaceRequest,
    UpdateNamespaceRequest,
};

use crate::backend::{
    AccessChange, AccessLevel, BackendError, ClosedPage, NamespaceBackend, ObservedNamespace,
    attribute_type_name, attribute_type_value, retry_while,
};

const DAY: u64 = 24 * 3600;
/// How long a newly registered namespace may take to become usable.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Temporal's `system.namespaceCacheRefreshInterval` by default.
pub const DEFAULT_REGISTRY_REFRESH: Duration = Duration::from_secs(2);
/// How long a call waits out rate limiting before failing to Temporal's retry.
const THROTTLE_PATIENCE: Duration = Duration::from_secs(10);

/// Namespaces of a self-hosted Temporal cluster (or the dev server), through its
/// WorkflowService and OperatorService.
#[derive(Clone)]
pub struct SelfHosted {
    connection: Connection,
    endpoint: String,
    /// Temporal versions all namespace metadata with one cluster-wide counter, so concurrent
    /// namespace updates fail each other ("conditional update error"). One at a time per
    /// process; other processes' collisions are retried.
    namespace_writes: Arc<tokio::sync::Mutex<()>>,
    /// How often the cluster's frontends refresh their namespace registry.
    registry_refresh: Duration,
}

impl std::fmt::Debug for SelfHosted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfHosted")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl SelfHosted {
    /// A backend on `connection`; `endpoint` is the frontend address clients use.
    pub fn new(connection: Connection, endpoint: String) -> Self {
        Self {
            connection,
            endpoint,
            namespace_writes: Arc::default(),
            registry_refresh: DEFAULT_REGISTRY_REFRESH,
        }
    }

    /// The cluster's `system.namespaceCacheRefreshInterval`, when not the default.
    #[must_use]
    pub fn registry_refresh(mut self, interval: Duration) -> Self {
        self.registry_refresh = interval;
        self
    }

    /// The connection to the cluster.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Frontends learn of a new namespace on their next registry refresh; until then calls in
    /// it fail with NotFound.
    async fn wait_until_usable(&self, name: &str) -> Result<(), BackendError> {
        // Backs off: hundreds of registrations at once must not flood the frontend.
        retry_while(
            &[Code::NotFound],
            VISIBLE_TIMEOUT,
            Duration::from_secs(1),
            || self.count(name),
        )
        .await
        .map_err(classify)?;
        Ok(())
    }

    /// Frontends learn of a deletion on their registry's next refresh too, and until then
    /// serve the deleted namespace's workflows by its name to whoever re-creates that name.
    /// Waits here rather than failing: a retry would delete by name again, perhaps a namespace
    /// registered under it meanwhile.
    async fn wait_until_gone(&self, name: &str) -> Result<(), BackendError> {
        tokio::time::sleep(self.registry_refresh * 2).await;
        let deadline = tokio::time::Instant::now() + VISIBLE_TIMEOUT;
        let mut said = false;
        loop {
            match self.count(name).await {
                Err(status) if status.code() == Code::NotFound => return Ok(()),
                Err(status) if tokio::time::Instant::now() >= deadline => {
                    return Err(classify(status));
                }
                Ok(()) if tokio::time::Instant::now() >= deadline => {
                    return Err(BackendError::Unavailable(format!(
                        "namespace {name:?} is still served {VISIBLE_TIMEOUT:?} after its deletion"
                    )));
                }
                Ok(()) if !said => {
                    said = true;
                    tracing::error!(
                        namespace = name,
                        assumed = ?self.registry_refresh,
                        "a deleted namespace is still served: the cluster refreshes its namespace \
                         registry more slowly than [backend] namespace_cache_refresh says"
                    );
                }
                _ => {}
            }
            tokio::time::sleep(self.registry_refresh).await;
        }
    }

    async fn count(&self, name: &str) -> Result<(), Status> {
        let request = CountWorkflowExecutionsRequest {
            namespace: name.to_owned(),
            ..Default::default()
        };
        self.connection
            .workflow_service()
            .count_workflow_executions(Request::new(request))
            .await
            .map(drop)
    }

    async fn search_attributes(
        &self,
        name: &str,
    ) -> Result<BTreeMap<String, String>, BackendError> {
        let request = ListSearchAttributesRequest {
            namespace: name.to_owned(),
        };
        let response = self
            .connection
            .operator_service()
            .list_search_attributes(Request::new(request))
            .await
            .map_err(classify)?
            .into_inner();
        Ok(response
            .custom_attributes
            .into_iter()
            .map(|(name, kind)| (name, attribute_type_name(kind).to_owned()))
            .collect())
    }

    async fn describe_namespace(
        &self,
        name: &str,
    ) -> Result<Option<DescribeNamespaceResponse>, BackendError> {
        let request = DescribeNamespaceRequest {
            namespace: name.to_owned(),
            ..Default::default()
        };
        let describe = || {
            let mut service = self.connection.workflow_service();
            let request = request.clone();
            async move { service.describe_namespace(Request::new(request)).await }
        };
        match retry_throttled(describe).await {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(classify(status)),
        }
    }

    async fn update_namespace(&self, request: UpdateNamespaceRequest) -> Result<(), BackendError> {
        let update = || {
            let mut service = self.connection.workflow_service();
            let request = request.clone();
            async move { service.update_namespace(Request::new(request)).await }
        };
        let _turn = self.namespace_writes.lock().await;
        retry_throttled(update).await.map_err(classify)?;
        Ok(())
    }

    /// Merges `entries` into the namespace's data map; an empty value means no access.
    async fn write_access(
        &self,
        name: &str,
        entries: HashMap<String, String>,
    ) -> Result<(), BackendError> {
        let request = UpdateNamespaceRequest {
            namespace: name.to_owned(),
            update_info: Some(UpdateNamespaceInfo {
                data: entries,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.update_namespace(request).await
    }
}

/// The data key of `identity`'s access. Temporal has no users, so Plinth keeps the list with
/// the namespace it governs, where `temporal operator namespace describe` shows it.
fn access_key(identity: &str) -> String {
    format!("{ACCESS_KEY_PREFIX}{identity}")
}

const ACCESS_KEY_PREFIX: &str = "plinth.access/";

fn access_entry(change: &AccessChange) -> (String, String) {
    match change {
        AccessChange::Grant(identity, level) | AccessChange::Change(identity, level) => {
            (access_key(identity), level.as_str().to_owned())
        }
        // Namespace data merges and cannot drop a key: empty is "no access".
        AccessChange::Revoke(identity) => (access_key(identity), String::new()),
    }
}

#[async_trait::async_trait]
impl NamespaceBackend for SelfHosted {
    async fn describe(&self, name: &str) -> Result<Option<ObservedNamespace>, BackendError> {
        let Some(response) = self.describe_namespace(name).await? else {
            return Ok(None);
        };
        let info = response.namespace_info.unwrap_or_default();
        let retention = response
            .config
            .and_then(|c| c.workflow_execution_retention_ttl)
            .map_or(0, |d| d.seconds);
        Ok(Some(ObservedNamespace {
            retention_days: i32::try_from(retention / DAY as i64).unwrap_or(i32::MAX),
            description: Some(info.description),
            owner_email: Some(info.owner_email),
            search_attributes: self.search_attributes(name).await?,
            delete_protection: None,
            platform_drift: Vec::new(),
        }))
    }

    async fn register(&self, spec: &NamespaceSpec) -> Result<(), BackendError> {
        let request = RegisterNamespaceRequest {
            namespace: spec.name.clone(),
            description: spec.description.clone(),
            owner_email: spec.owner.clone(),
            workflow_execution_retention_period: Some(
                retention(spec)
                    .try_into()
                    .expect("retention fits a protobuf duration"),
            ),
            ..Default::default()
        };
        let register = || {
            let mut service = self.connection.workflow_service();
            let request = request.clone();
            async move { service.register_namespace(Request::new(request)).await }
        };
        match retry_throttled(register).await {
            Ok(_) => {}
            Err(status) if status.code() == Code::AlreadyExists => {}
            Err(status) => return Err(classify(status)),
        }
        self.wait_until_usable(&spec.name).await
    }

    async fn update(&self, spec: &NamespaceSpec) -> Result<(), BackendError> {
        let request = UpdateNamespaceRequest {
            namespace: spec.name.clone(),
            update_info: Some(UpdateNamespaceInfo {
                description: spec.description.clone(),
                owner_email: spec.owner.clone(),
                ..Default::default()
            }),
            config: Some(NamespaceConfig {
                workflow_execution_retention_ttl: Some(
                    retention(spec)
                        .try_into()
                        .expect("retention fits a protobuf duration"),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.update_namespace(request).await
    }

    async fn add_search_attributes(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        let existing = self.search_attributes(name).await?;
        let mut missing = HashMap::new();
        for (attribute, kind) in attributes {
            if !existing.contains_key(attribute) {
                missing.insert(attribute.clone(), attribute_type_value(kind)?);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let request = AddSearchAttributesRequest {
            search_attributes: missing,
            namespace: name.to_owned(),
        };
        let add = || {
            let mut service = self.connection.operator_service();
            let request = request.clone();
            async move { service.add_search_attributes(Request::new(request)).await }
        };
        match retry_throttled(add).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => Ok(()),
            Err(status) => Err(classify(status)),
        }
    }

    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        let request = DeleteNamespaceRequest {
            namespace: name.to_owned(),
            ..Default::default()
        };
        match self
            .connection
            .operator_service()
            .delete_namespace(Request::new(request))
            .await
        {
            Ok(_) => {}
            Err(status) if status.code() == Code::NotFound => {}
            Err(status) => return Err(classify(status)),
        }
        self.wait_until_gone(name).await
    }

    async fn endpoint(&self, _name: &str) -> Result<String, BackendError> {
        Ok(self.endpoint.clone())
    }

    async fn list_access(&self, name: &str) -> Result<BTreeMap<String, AccessLevel>, BackendError> {
        let response = self
            .describe_namespace(name)
            .await?
            .ok_or_else(|| BackendError::Rejected(format!("namespace {name:?} does not exist")))?;
        let data = response.namespace_info.unwrap_or_default().data;
        Ok(data
            .into_iter()
            .filter_map(|(key, value)| {
                let identity = key.strip_prefix(ACCESS_KEY_PREFIX)?.to_owned();
                Some((identity, AccessLevel::parse(&value)?))
            })
            .collect())
    }

    /// One namespace update carries every change.
    async fn apply_access(
        &self,
        name: &str,
        changes: &[AccessChange],
    ) -> Result<u32, BackendError> {
        if changes.is_empty() {
            return Ok(0);
        }
        self.write_access(name, changes.iter().map(access_entry).collect())
            .await?;
        Ok(1)
    }

    async fn closed_workflows(
        &self,
        name: &str,
        from: i64,
        to: i64,
        page: Vec<u8>,
    ) -> Result<ClosedPage, BackendError> {
        let request = ListWorkflowExecutionsRequest {
            namespace: name.to_owned(),
            page_size: CLOSED_PAGE,
            next_page_token: page,
            query: format!(
                "ExecutionStatus != 'Running' AND CloseTime >= '{}' AND CloseTime < '{}'",
                rfc3339(from),
                rfc3339(to)
            ),
        };
        let list = || {
            let mut service = self.connection.workflow_service();
            let request = request.clone();
            async move {
                service
                    .list_workflow_executions(Request::new(request))
                    .await
            }
        };
        let response = match retry_throttled(list).await {
            Ok(response) => response.into_inner(),
            // A namespace removed behind Plinth's back has nothing left to export.
            Err(status) if status.code() == Code::NotFound => return Ok(ClosedPage::default()),
            Err(status) => return Err(classify(status)),
        };
        Ok(ClosedPage {
            workflows: response.executions.iter().map(exported).collect(),
            next_page: response.next_page_token,
        })
    }

    async fn history(
        &self,
        name: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<Option<History>, BackendError> {
        let mut history = History::default();
        let mut bytes = 0;
        let mut page = Vec::new();
        loop {
            let request = GetWorkflowExecutionHistoryRequest {
                namespace: name.to_owned(),
                execution: Some(WorkflowExecution {
                    workflow_id: workflow_id.to_owned(),
                    run_id: run_id.to_owned(),
                }),
                maximum_page_size: HISTORY_PAGE,
                next_page_token: page,
                ..Default::default()
            };
            let get = || {
                let mut service = self.connection.workflow_service();
                let request = request.clone();
                async move {
                    service
                        .get_workflow_execution_history(Request::new(request))
                        .await
                }
            };
            let response = match retry_throttled(get).await {
                Ok(response) => response.into_inner(),
                Err(status) if status.code() == Code::NotFound => return Ok(None),
                Err(status) => return Err(classify(status)),
            };
            let events = response.history.map(|h| h.events).unwrap_or_default();
            bytes += events
                .iter()
                .map(prost::Message::encoded_len)
                .sum::<usize>();
            if bytes > MAX_HISTORY_BYTES {
                return Err(BackendError::TooLarge(format!(
                    "workflow {workflow_id:?} run {run_id:?}: history over {MAX_HISTORY_BYTES} bytes"
                )));
            }
            history.events.extend(events);
            if response.next_page_token.is_empty() {
                return Ok(Some(history));
            }
            page = response.next_page_token;
        }
    }
}

/// Closed workflows listed at a time.
const CLOSED_PAGE: i32 = 200;
/// History events fetched at a time.
const HISTORY_PAGE: i32 = 1_000;
/// The largest history read: over Temporal's own 50 MB limit, so only a history Temporal
/// would not keep is refused.
pub const MAX_HISTORY_BYTES: usize = 64 << 20;

fn rfc3339(unix_secs: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

fn timestamp(time: Option<&prost_wkt_types::Timestamp>) -> String {
    time.and_then(|t| {
        let nanos = u32::try_from(t.nanos).ok()?;
        let secs = u64::try_from(t.seconds).ok()?;
        let at = std::time::UNIX_EPOCH + Duration::new(secs, nanos);
        Some(humantime::format_rfc3339_nanos(at).to_string())
    })
    .unwrap_or_default()
}

/// A closed workflow as the export lists it.
fn exported(info: &WorkflowExecutionInfo) -> ExportedWorkflow {
    let execution = info.execution.clone().unwrap_or_default();
    let status = WorkflowExecutionStatus::try_from(info.status)
        .map(|s| {
            let name = s
                .as_str_name()
                .trim_start_matches("WORKFLOW_EXECUTION_STATUS_");
            let mut words = String::new();
            for word in name.split('_') {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    words.push(first);
                    words.extend(chars.flat_map(char::to_lowercase));
                }
            }
            words
        })
        .unwrap_or_else(|_| info.status.to_string());
    ExportedWorkflow {
        workflow_id: execution.workflow_id,
        run_id: execution.run_id,
        workflow_type: info
            .r#type
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default(),
        start_time: timestamp(info.start_time.as_ref()),
        close_time: timestamp(info.close_time.as_ref()),
        status,
        ..Default::default()
    }
}

/// Frontends shed bursts with ResourceExhausted, and namespace writes from many callers at
/// once lose a cluster-wide version check with Unavailable ("conditional update error").
/// Waiting briefly here costs milliseconds; failing the activity costs Temporal's retry
/// backoff of seconds.
async fn retry_throttled<T, F, Fut>(call: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    retry_while(
        &[Code::ResourceExhausted, Code::Unavailable],
        THROTTLE_PATIENCE,
        Duration::from_millis(500),
        call,
    )
    .await
}

fn retention(spec: &NamespaceSpec) -> Duration {
    Duration::from_secs(u64::try_from(spec.retention_days).unwrap_or(0) * DAY)
}

fn classify(status: Status) -> BackendError {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled
        // A namespace registered moments ago may not be visible to every frontend yet.
        | Code::NotFound => BackendError::Unavailable(message),
        _ => BackendError::Rejected(message),
    }
}
