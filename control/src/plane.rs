//! Plinth's own records in the control-plane namespace: policy workflows, access schedules
//! and their runs, and metrics scraping. Reads come from workflow memos, so no worker is needed to answer them.

use std::time::{Duration, SystemTime};

use plinth_proto::audit::AuditRecord;
use plinth_proto::v1::{AccessRequest, AccessSummary, MetricsTarget, Policy};
use serde::de::DeserializeOwned;
use temporalio_client::errors::{
    ClientNewError, WorkflowGetResultError, WorkflowInteractionError, WorkflowStartError,
    WorkflowUpdateError,
};
use temporalio_client::schedules::{
    CreateScheduleOptions, DeleteScheduleOptions, ListSchedulesOptions, ScheduleAction,
    ScheduleDescriptionAction, ScheduleError, ScheduleIntervalSpec, ScheduleOverlapPolicy,
    ScheduleSpec, TriggerScheduleOptions,
};
use temporalio_client::tonic::Code;
use temporalio_client::{
    Client, ClientOptions, Connection, NamespacedClient, WorkflowDescribeOptions,
    WorkflowExecuteUpdateOptions, WorkflowExecutionInfo, WorkflowGetResultOptions, WorkflowHandle,
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
    WorkflowUpdateWithStartOptions,
};
use temporalio_common::protos::temporal::api::common::v1::Memo;
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo as ExecutionInfo;
use temporalio_common::search_attributes::SearchAttributes;
use temporalio_common::{
    HasWorkflowDefinition, MemoValues, UntypedWorkflow, UpdateDefinition, WorkflowDefinition,
};
use tokio_stream::StreamExt;

use crate::backend::{BackendError, retry_while};
use crate::contract::{
    ACCESS_GRANTED, AccessRequestStart, AccessRunStart, AppendAudit, Appended, AuditExportStart,
    AuditExportState, DIRECTORY_RELOAD_WORKFLOW_ID, DirectoryReloadStart, FinishHistoryExport,
    HistoryExportStart, HistoryExportState, KIND_ACCESS_REQUEST, KIND_ATTRIBUTE, MAX_OPEN_REQUESTS,
    NAME_ATTRIBUTE, OWNER_ATTRIBUTE, PHASE_ATTRIBUTE, PolicyStart, RESOURCE_MEMO, ReloadRequest,
    ScrapeStart, ScrapeTarget, SetPolicyEditors, access_request_workflow_id, access_schedule_id,
    audit_workflow_id, history_export_workflow_id, policy_workflow_id, scrape_workflow_id,
};

/// What a schedule call tried again meets: no answer in time, or a server too busy to take it.
const UNANSWERED: &[Code] = &[
    Code::Cancelled,
    Code::DeadlineExceeded,
    Code::Unavailable,
    Code::ResourceExhausted,
];
/// How long each trigger after a directory change is tried again: longer than a call's own
/// timeout (the client's 30 s), so one that timed out is tried once more. A single trigger is
/// not: its caller (an activity, with a timeout of its own) tries again.
const TRIGGER_ALL_PATIENCE: Duration = Duration::from_secs(75);
/// What [`ControlPlane::ensure_policy`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicySeeding {
    /// The policy did not exist (or its workflow had closed) and was started.
    Created,
    /// The policy existed with other editors; they were replaced, rules untouched.
    EditorsChanged,
    /// The policy existed as seeded.
    Unchanged,
}

/// What [`ControlPlane::ensure_access_schedule`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleWrite {
    /// The schedule did not exist and was created, here or by a seeder racing this one; its
    /// first run starts at once when its creator asked, after the policies it seeded.
    Created,
    /// The schedule existed with another interval or run, which was corrected.
    Corrected,
    /// The schedule existed as asked but for the task queue its runs go to (a release before
    /// access runs had a queue of their own wrote it), which was moved; not a change to report.
    Moved,
    /// The schedule existed as asked.
    Unchanged,
}

/// The value a Plinth workflow keeps under memo `key`.
fn memo_value<T: DeserializeOwned>(memo: Option<&Memo>, key: &str) -> Option<T> {
    let payload = memo?.fields.get(key)?;
    serde_json::from_slice(&payload.data).ok()
}

/// A client of the control-plane namespace and the task queue Plinth's worker polls.
#[derive(Clone)]
pub struct ControlPlane {
    client: Client,
    task_queue: String,
    access_task_queue: String,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("task_queue", &self.task_queue)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// The client it records and reads through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn task_queue(&self) -> &str {
        &self.task_queue
    }

    /// Records in `client`'s namespace, run on `task_queue`; access runs on the queue beside it.
    pub fn new(client: Client, task_queue: String) -> Self {
        Self {
            client,
            access_task_queue: crate::temporal::access_task_queue(&task_queue),
            task_queue,
        }
    }

    /// [`Self::new`] with a client of `namespace` over `connection`.
    pub fn connect(
        connection: Connection,
        namespace: &str,
        task_queue: &str,
    ) -> Result<Self, ClientNewError> {
        let client = Client::new(connection, ClientOptions::new(namespace.to_owned()).build())?;
        Ok(Self::new(client, task_queue.to_owned()))
    }

    /// A handle on run `run_id` of workflow `workflow_id`, or on its latest run when `None`.
    fn run_handle<W: HasWorkflowDefinition>(
        &self,
        workflow_id: String,
        run_id: Option<String>,
    ) -> WorkflowHandle<Client, W> {
        WorkflowHandle::new(
            self.client.clone(),
            WorkflowExecutionInfo::builder()
                .namespace(self.client.namespace())
                .workflow_id(workflow_id)
                .maybe_run_id(run_id)
                .build(),
        )
    }

    /// Run `run_id` of workflow `workflow_id` (the latest run when `None`), by a describe;
    /// `None` when there is no such run.
    async fn execution(
        &self,
        workflow_id: String,
        run_id: Option<String>,
    ) -> Result<Option<ExecutionInfo>, BackendError> {
        let handle = self.run_handle::<UntypedWorkflow>(workflow_id, run_id);
        match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(description) => Ok(description.raw_description.workflow_execution_info),
            Err(WorkflowInteractionError::NotFound(_)) => Ok(None),
            Err(e) => Err(BackendError::Unavailable(format!("control plane: {e}"))),
        }
    }

    /// Whether Temporal's frontend answers at all, asked by its gRPC health check. Any
    /// answer counts, `NOT_SERVING` from a draining frontend and `UNIMPLEMENTED` from a
    /// balancer that does not route health checks included: only no answer is down.
    pub async fn answers(&self) -> Result<(), BackendError> {
        use temporalio_common::protos::grpc::health::v1::HealthCheckRequest;
        let request = HealthCheckRequest {
            service: "temporal.api.workflowservice.v1.WorkflowService".into(),
        };
        match self
            .client
            .connection()
            .health_service()
            .check(temporalio_client::tonic::Request::new(request))
            .await
        {
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
                ) =>
            {
                Err(BackendError::Unavailable(status.message().to_owned()))
            }
            _ => Ok(()),
        }
    }

    /// The resource workflow `workflow_id` keeps in its memo, and whether that workflow is
    /// running; `None` when there never was one or it has published nothing yet. A closed
    /// workflow still reads as its last published state.
    pub async fn published<T: DeserializeOwned>(
        &self,
        workflow_id: String,
    ) -> Result<Option<(T, bool)>, BackendError> {
        let Some(info) = self.execution(workflow_id, None).await? else {
            return Ok(None);
        };
        let running = info.status == WorkflowExecutionStatus::Running as i32;
        Ok(memo_value(info.memo.as_ref(), RESOURCE_MEMO).map(|resource| (resource, running)))
    }

    /// The resource workflow `workflow_id` publishes, while that workflow runs.
    pub async fn running<T: DeserializeOwned>(
        &self,
        workflow_id: String,
    ) -> Result<Option<T>, BackendError> {
        let published = self.running_run(workflow_id, None).await?;
        Ok(published.map(|(resource, _)| resource))
    }

    /// [`Self::running`], with the run that publishes it. Given `run_id`, asks that run only,
    /// which Temporal answers from its cache without looking up the workflow's current run
    /// (a watch asks every half second): `None` once that run has ended.
    pub async fn running_run<T: DeserializeOwned>(
        &self,
        workflow_id: String,
        run_id: Option<String>,
    ) -> Result<Option<(T, String)>, BackendError> {
        let Some(info) = self.execution(workflow_id, run_id).await? else {
            return Ok(None);
        };
        if info.status != WorkflowExecutionStatus::Running as i32 {
            return Ok(None);
        }
        let run = info.execution.map(|e| e.run_id).unwrap_or_default();
        Ok(memo_value(info.memo.as_ref(), RESOURCE_MEMO).map(|resource| (resource, run)))
    }

    /// Every running workflow managing a resource of `kind`, by workflow id, with the
    /// resource it published (`None` until its first workflow task has run).
    pub async fn running_resources<T: DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<(String, Option<T>)>, BackendError> {
        self.running_where(kind, "", usize::MAX).await
    }

    /// The running Namespace resources that may name Temporal namespace `temporal_name`:
    /// those whose `PlinthName` says so, and those of workflows started before Namespace
    /// resources carried it (until they next publish). A query for one name, where a listing
    /// of every resource took longer than a burst of applies could wait with thousands of them.
    /// At most `limit` of them.
    pub async fn namespaces_naming<T: DeserializeOwned>(
        &self,
        temporal_name: &str,
        limit: usize,
    ) -> Result<Vec<(String, Option<T>)>, BackendError> {
        // Temporal namespace names are letters, digits, '.', '-' and '_': nothing to quote.
        if temporal_name.is_empty()
            || !temporal_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(BackendError::Rejected(format!(
                "{temporal_name:?} is not a Temporal namespace name"
            )));
        }
        let clause = format!(
            " AND ({name} = '{temporal_name}' OR {name} IS NULL)",
            name = NAME_ATTRIBUTE.name()
        );
        self.running_where(plinth_proto::KIND_NAMESPACE, &clause, limit)
            .await
    }

    /// [`Self::running_resources`], narrowed by `and` (a visibility clause or nothing),
    /// at most `limit` of them.
    pub(crate) async fn running_where<T: DeserializeOwned>(
        &self,
        kind: &str,
        and: &str,
        limit: usize,
    ) -> Result<Vec<(String, Option<T>)>, BackendError> {
        let query = format!(
            "{} = '{kind}' AND ExecutionStatus = 'Running'{and}",
            KIND_ATTRIBUTE.name()
        );
        let mut stream = self.client.list_workflows(query, Default::default());
        let mut resources = Vec::new();
        while resources.len() < limit
            && let Some(execution) = stream.next().await
        {
            let raw = execution
                .map_err(|e| BackendError::Unavailable(format!("visibility: {e}")))?
                .into_raw();
            let id = raw.execution.map(|e| e.workflow_id).unwrap_or_default();
            resources.push((id, memo_value(raw.memo.as_ref(), RESOURCE_MEMO)));
        }
        Ok(resources)
    }

    /// The policy named `name`, or `None` when it does not exist.
    pub async fn policy(&self, name: &str) -> Result<Option<Policy>, BackendError> {
        let published = self.published(policy_workflow_id(name)).await?;
        Ok(published.map(|(policy, _)| policy))
    }

    /// Every policy with a running workflow, by name.
    pub async fn policies(&self) -> Result<Vec<Policy>, BackendError> {
        let running = self.running_resources(plinth_proto::KIND_POLICY).await?;
        let mut policies: Vec<Policy> = running.into_iter().filter_map(|(_, p)| p).collect();
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(policies)
    }

    /// Starts `seed`'s workflow unless the policy exists; an existing one keeps its rules
    /// and takes `seed`'s editors. A policy whose workflow closed is restarted from its last
    /// state, so its rules survive.
    pub async fn ensure_policy(&self, seed: Policy) -> Result<PolicySeeding, BackendError> {
        let policy = match self
            .published::<Policy>(policy_workflow_id(&seed.name))
            .await?
        {
            Some((current, true)) if current.editors == seed.editors => {
                return Ok(PolicySeeding::Unchanged);
            }
            Some((_, true)) => {
                self.client
                    .get_workflow_handle::<PolicyStart>(policy_workflow_id(&seed.name))
                    .execute_update(
                        SetPolicyEditors,
                        seed.editors,
                        WorkflowExecuteUpdateOptions::default(),
                    )
                    .await
                    .map_err(|e| BackendError::Unavailable(format!("policy editors: {e}")))?;
                return Ok(PolicySeeding::EditorsChanged);
            }
            Some((last, false)) => Policy {
                editors: seed.editors,
                ..last
            },
            None => seed,
        };
        let attributes = SearchAttributes::new([
            KIND_ATTRIBUTE.value_set(plinth_proto::KIND_POLICY.to_owned()),
            OWNER_ATTRIBUTE.value_set(policy.owner.clone()),
        ]);
        // Readable from the start, before a worker has run the first task.
        let mut memo = MemoValues::new();
        memo.insert(RESOURCE_MEMO, policy.clone());
        let options =
            WorkflowStartOptions::new(self.task_queue.clone(), policy_workflow_id(&policy.name))
                // Two seeders racing: the second finds the first's workflow and changes nothing.
                .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                .search_attributes(attributes)
                .memo(memo)
                // In a worker, its first task comes back with the start instead of waiting
                // for a poll of the shared queue, which a burst of applies fills.
                .enable_eager_workflow_start(true)
                .build();
        self.client
            .start_workflow(PolicyStart, policy, options)
            .await
            .map_err(|e| BackendError::Unavailable(format!("start policy workflow: {e}")))?;
        Ok(PolicySeeding::Created)
    }

    /// Starts the scraping workflow of configured `target` unless one runs. False when a
    /// running `MetricsTarget` resource holds the name, so the workflow scrapes that instead.
    pub async fn ensure_scraping(&self, target: ScrapeTarget) -> Result<bool, BackendError> {
        let id = scrape_workflow_id(&target.name);
        if self.running::<MetricsTarget>(id.clone()).await?.is_some() {
            return Ok(false);
        }
        let options = WorkflowStartOptions::new(self.task_queue.clone(), id.clone())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .build();
        self.client
            .start_workflow(ScrapeStart, target, options)
            .await
            .map_err(|e| BackendError::Unavailable(format!("start workflow {id}: {e}")))?;
        Ok(true)
    }

    /// Starts the audit trail's shipping of `stream` to destination `name` unless it runs.
    pub async fn ensure_audit_export(&self, name: &str, stream: &str) -> Result<(), BackendError> {
        let id = audit_workflow_id(name, stream);
        let options = WorkflowStartOptions::new(self.task_queue.clone(), id.clone())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .build();
        self.client
            .start_workflow(
                AuditExportStart,
                AuditExportState::new(name, stream),
                options,
            )
            .await
            .map_err(|e| BackendError::Unavailable(format!("start workflow {id}: {e}")))?;
        Ok(())
    }

    /// Starts the history export of namespace resource `name` (Temporal namespace
    /// `temporal_namespace`) unless it runs. True when it started it.
    pub async fn ensure_history_export(
        &self,
        name: &str,
        temporal_namespace: &str,
    ) -> Result<bool, BackendError> {
        let id = history_export_workflow_id(name);
        let handle = self
            .client
            .get_workflow_handle::<UntypedWorkflow>(id.clone());
        match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(description)
                if description
                    .raw_description
                    .workflow_execution_info
                    .as_ref()
                    .is_some_and(|info| info.status == WorkflowExecutionStatus::Running as i32) =>
            {
                return Ok(false);
            }
            Ok(_) | Err(WorkflowInteractionError::NotFound(_)) => {}
            Err(e) => return Err(BackendError::Unavailable(format!("control plane: {e}"))),
        }
        // A finished export's successor starts where it stopped.
        let last = self.finished_history_export(&id).await?;
        let state = HistoryExportState {
            namespace: name.to_owned(),
            temporal_namespace: temporal_namespace.to_owned(),
            ..last.unwrap_or_default()
        };
        let options = WorkflowStartOptions::new(self.task_queue.clone(), id.clone())
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .build();
        self.client
            .start_workflow(HistoryExportStart, state, options)
            .await
            .map_err(|e| BackendError::Unavailable(format!("start workflow {id}: {e}")))?;
        Ok(true)
    }

    /// What the last, finished, run of history export `id` handed on.
    async fn finished_history_export(
        &self,
        id: &str,
    ) -> Result<Option<HistoryExportState>, BackendError> {
        let handle = self
            .client
            .get_workflow_handle::<HistoryExportStart>(id.to_owned());
        match handle.get_result(WorkflowGetResultOptions::default()).await {
            Ok(state) => Ok(Some(state)),
            Err(e) => {
                tracing::debug!(workflow = id, error = %e, "no finished history export to resume");
                Ok(None)
            }
        }
    }

    /// Ends the history export of namespace resource `name` once every workflow closed until
    /// now is exported; one not running is fine. Returns where it stopped.
    pub async fn finish_history_export(
        &self,
        name: &str,
    ) -> Result<Option<HistoryExportState>, BackendError> {
        let id = history_export_workflow_id(name);
        let handle = self
            .client
            .get_workflow_handle::<HistoryExportStart>(id.clone());
        match handle
            .execute_update(
                FinishHistoryExport,
                (),
                // Asked again (a retried deletion), the same update: they never pile up.
                WorkflowExecuteUpdateOptions::builder()
                    .update_id("finish".to_owned())
                    .build(),
            )
            .await
        {
            Ok(state) => Ok(Some(state)),
            // Never started, or already finished.
            Err(WorkflowUpdateError::NotFound(_)) => Ok(None),
            Err(e) => Err(BackendError::Unavailable(format!("finish {id}: {e}"))),
        }
    }

    /// Hands `records` to the audit trail's shipping of `stream` to destination `name`,
    /// starting it if need be. Delivering the same records again keeps them once. Refused
    /// (`Unavailable`, worth retrying) while the destination has too many records waiting.
    pub async fn append_audit(
        &self,
        name: &str,
        stream: &str,
        records: Vec<AuditRecord>,
    ) -> Result<Appended, BackendError> {
        let id = audit_workflow_id(name, stream);
        // One delivery of these records is one update: Temporal keeps a repeat of it once.
        let mut ids = String::new();
        for record in &records {
            ids.push_str(&record.id);
            ids.push('\n');
        }
        let options = WorkflowUpdateWithStartOptions::new(
            self.task_queue.clone(),
            id.clone(),
            WorkflowIdConflictPolicy::UseExisting,
        )
        .update_id(format!("append-{}", plinth_proto::audit::digest(&ids)))
        .build();
        self.client
            .execute_update_with_start_workflow(
                AuditExportStart,
                AuditExportState::new(name, stream),
                AppendAudit,
                records,
                options,
            )
            .await
            .map_err(|e| BackendError::Unavailable(format!("audit trail {id}: {e}")))
    }

    /// Hands `record`, a change made outside any workflow (a directory reload, a key
    /// rotation), to the audit trail of every destination in `destinations`; returns once
    /// each has taken it, or the first refusal.
    pub async fn record_change(
        &self,
        destinations: &[String],
        record: AuditRecord,
    ) -> Result<(), BackendError> {
        for destination in destinations {
            self.append_audit(destination, "", vec![record.clone()])
                .await?;
        }
        Ok(())
    }

    /// Creates the access schedule of `namespace`, with a run at once if `first_run`, or
    /// corrects what it runs, when, and on which task queue.
    pub async fn ensure_access_schedule(
        &self,
        namespace: &str,
        every: Duration,
        first_run: bool,
    ) -> Result<ScheduleWrite, BackendError> {
        let id = access_schedule_id(namespace);
        let handle = self.client.get_schedule_handle(id.clone());
        let spec = access_schedule_spec(namespace, every);
        let action = ScheduleAction::start_workflow(
            AccessRunStart,
            namespace.to_owned(),
            self.access_task_queue.clone(),
            id.clone(),
        );
        match handle.describe(Default::default()).await {
            // The SDK refuses a description without its schedule or action.
            Ok(description) => {
                let current = description
                    .raw()
                    .schedule
                    .as_ref()
                    .and_then(|s| s.spec.as_ref())
                    .and_then(|spec| spec.interval.first())
                    .map(|i| {
                        let seconds = (i.interval.map(|d| d.seconds), i.phase.map(|d| d.seconds));
                        (seconds.0.unwrap_or(0), seconds.1.unwrap_or(0))
                    });
                let whole = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let wanted = spec
                    .intervals
                    .first()
                    .map(|i| (whole(i.every), i.offset.map_or(0, whole)));
                let (same_run, same_queue) = match description.action() {
                    ScheduleDescriptionAction::StartWorkflow(start) => {
                        let input = start
                            .args::<<AccessRunStart as WorkflowDefinition>::Input>()
                            .await
                            .ok()
                            .flatten();
                        (
                            start.workflow_type() == AccessRunStart.name()
                                && start.workflow_id() == id
                                && input.as_deref() == Some(namespace),
                            // Schedules of releases before access runs had a queue of their
                            // own start them on the shared one.
                            start.task_queue() == self.access_task_queue,
                        )
                    }
                    _ => (false, false),
                };
                let write = match (same_run && current == wanted, same_queue) {
                    (true, true) => return Ok(ScheduleWrite::Unchanged),
                    (true, false) => ScheduleWrite::Moved,
                    (false, _) => ScheduleWrite::Corrected,
                };
                handle
                    .update(
                        move |update| {
                            update.set_spec(spec).set_action(action);
                        },
                        Default::default(),
                    )
                    .await
                    .map_err(schedule_error)?;
                if write == ScheduleWrite::Moved {
                    tracing::info!(schedule = id, "access runs moved to their own task queue");
                }
                Ok(write)
            }
            Err(ScheduleError::Rpc(status)) if status.code() == Code::NotFound => {
                let options = CreateScheduleOptions::builder()
                    .action(action)
                    .spec(spec)
                    .overlap_policy(ScheduleOverlapPolicy::Skip)
                    .trigger_immediately(first_run)
                    .build();
                match self.client.create_schedule(id, options).await {
                    Ok(_) => Ok(ScheduleWrite::Created),
                    // Another seeder created it.
                    Err(ScheduleError::Rpc(status)) if status.code() == Code::AlreadyExists => {
                        Ok(ScheduleWrite::Created)
                    }
                    Err(e) => Err(schedule_error(e)),
                }
            }
            Err(e) => Err(schedule_error(e)),
        }
    }

    /// Deletes the access schedule of `namespace`; one already gone is fine.
    pub async fn delete_access_schedule(&self, namespace: &str) -> Result<(), BackendError> {
        let handle = self
            .client
            .get_schedule_handle(access_schedule_id(namespace));
        match handle.delete(DeleteScheduleOptions::default()).await {
            Ok(()) => Ok(()),
            Err(ScheduleError::Rpc(status)) if status.code() == Code::NotFound => Ok(()),
            Err(e) => Err(schedule_error(e)),
        }
    }

    /// Runs `namespace`'s access schedule now, or right after the run in progress. False
    /// when it has no schedule.
    pub async fn trigger_access_run(&self, namespace: &str) -> Result<bool, BackendError> {
        self.trigger(access_schedule_id(namespace), Duration::ZERO)
            .await
    }

    async fn trigger(&self, schedule_id: String, patience: Duration) -> Result<bool, BackendError> {
        let handle = self.client.get_schedule_handle(schedule_id);
        // A run in progress may have read the old state: buffer one more after it. A trigger
        // tried again that took the first time buffers that one run, no more.
        let trigger = || {
            handle.trigger(
                ScheduleOverlapPolicy::BufferOne,
                TriggerScheduleOptions::default(),
            )
        };
        match retry_unanswered(patience, trigger).await {
            Ok(()) => Ok(true),
            Err(ScheduleError::Rpc(status)) if status.code() == Code::NotFound => Ok(false),
            Err(e) => Err(BackendError::Unavailable(format!(
                "trigger access schedule {}: {e}",
                handle.schedule_id()
            ))),
        }
    }

    /// Leaves the mark that tells every worker to read the directory again: a new
    /// `DirectoryReload` run (ending one not yet ended), with the request in its memo.
    pub async fn request_directory_reload(
        &self,
        request: ReloadRequest,
    ) -> Result<(), BackendError> {
        let mut memo = MemoValues::new();
        memo.insert(RESOURCE_MEMO, request.clone());
        let options = WorkflowStartOptions::new(
            self.task_queue.clone(),
            DIRECTORY_RELOAD_WORKFLOW_ID.to_owned(),
        )
        .id_conflict_policy(WorkflowIdConflictPolicy::TerminateExisting)
        .memo(memo)
        .build();
        self.client
            .start_workflow(DirectoryReloadStart, request, options)
            .await
            .map_err(|e| {
                BackendError::Unavailable(format!(
                    "start workflow {DIRECTORY_RELOAD_WORKFLOW_ID}: {e}"
                ))
            })?;
        Ok(())
    }

    /// When the latest directory reload was asked for, and what it asked; `None` before the
    /// first.
    pub async fn last_directory_reload(
        &self,
    ) -> Result<Option<(SystemTime, ReloadRequest)>, BackendError> {
        let handle = self
            .client
            .get_workflow_handle::<UntypedWorkflow>(DIRECTORY_RELOAD_WORKFLOW_ID.to_owned());
        let description = match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(description) => description,
            Err(WorkflowInteractionError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(BackendError::Unavailable(format!("control plane: {e}"))),
        };
        let memo = description
            .raw_description
            .workflow_execution_info
            .as_ref()
            .and_then(|info| info.memo.as_ref());
        let request = memo_value(memo, RESOURCE_MEMO).unwrap_or_default();
        Ok(description.start_time().map(|started| (started, request)))
    }

    /// Starts access request `request` in the slot workflow `slot` (see
    /// [`access_request_slot`]), readable at once; false when the slot holds an open request.
    pub async fn start_access_request(
        &self,
        slot: &str,
        request: AccessRequest,
    ) -> Result<bool, BackendError> {
        let attributes = SearchAttributes::new([
            KIND_ATTRIBUTE.value_set(KIND_ACCESS_REQUEST.to_owned()),
            OWNER_ATTRIBUTE.value_set(request.namespace.clone()),
            PHASE_ATTRIBUTE.value_set(request.state.clone()),
        ]);
        let mut memo = MemoValues::new();
        memo.insert(RESOURCE_MEMO, request.clone());
        let options = WorkflowStartOptions::new(self.task_queue.clone(), slot.to_owned())
            .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
            .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
            .search_attributes(attributes)
            .memo(memo)
            .build();
        match self
            .client
            .start_workflow(AccessRequestStart, request, options)
            .await
        {
            Ok(_) => Ok(true),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(false),
            Err(e) => Err(BackendError::Unavailable(format!(
                "start workflow {slot}: {e}"
            ))),
        }
    }

    /// Access request `id` as its workflow last published it; `None` when there is none.
    /// Read by a describe, so a change just made shows.
    pub async fn access_request(&self, id: &str) -> Result<Option<AccessRequest>, BackendError> {
        let Some(workflow_id) = access_request_workflow_id(id) else {
            return Ok(None);
        };
        let published = self.published::<AccessRequest>(workflow_id).await?;
        Ok(published
            .map(|(request, _)| request)
            .filter(|request| request.id == id))
    }

    /// Access request `id` while its workflow runs, with that run's id: a later request in
    /// the same slot is another run, never taken for it.
    async fn open_request(
        &self,
        id: &str,
    ) -> Result<Option<(AccessRequest, String)>, BackendError> {
        let Some(workflow_id) = access_request_workflow_id(id) else {
            return Ok(None);
        };
        let found = self.running_run::<AccessRequest>(workflow_id, None).await?;
        Ok(found.filter(|(request, _)| request.id == id))
    }

    /// Access request `id` while it is open.
    pub async fn open_access_request(
        &self,
        id: &str,
    ) -> Result<Option<AccessRequest>, BackendError> {
        Ok(self.open_request(id).await?.map(|(request, _)| request))
    }

    /// The open request in slot workflow `slot`, if any.
    pub async fn access_request_in(
        &self,
        slot: &str,
    ) -> Result<Option<AccessRequest>, BackendError> {
        self.running(slot.to_owned()).await
    }

    /// Sends `answer` (approve, deny, revoke) from `by` to request `id`; gives the request as
    /// it then stands. A request that cannot take it (answered already, the requester
    /// approving) is `Rejected` with the workflow's reason.
    pub async fn answer_access_request<U>(
        &self,
        id: &str,
        answer: U,
        by: &str,
    ) -> Result<AccessRequest, BackendError>
    where
        U: UpdateDefinition<Workflow = AccessRequestStart, Input = String, Output = AccessRequest>,
    {
        let (_, run_id) = self
            .open_request(id)
            .await?
            .ok_or_else(|| BackendError::Rejected(format!("access request {id} has ended")))?;
        let workflow_id = access_request_workflow_id(id).unwrap_or_default();
        let handle = self.run_handle::<AccessRequestStart>(workflow_id, Some(run_id));
        handle
            .execute_update(answer, by.to_owned(), Default::default())
            .await
            .map_err(|e| match e {
                WorkflowUpdateError::Failed(failure) => BackendError::Rejected(failure.message),
                WorkflowUpdateError::NotFound(_) => {
                    BackendError::Rejected(format!("no access request {id}"))
                }
                e => BackendError::Unavailable(format!("access request {id}: {e}")),
            })
    }

    /// Open requests in `state`, of `namespace` or of all, at most `limit`: from visibility,
    /// so one just changed may show as it was.
    pub async fn access_requests_in_state(
        &self,
        state: &str,
        namespace: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AccessRequest>, BackendError> {
        // States and namespace names hold no quotes; one that did would match nothing.
        if state.contains(['\'', '\\']) || namespace.is_some_and(|n| n.contains(['\'', '\\'])) {
            return Ok(Vec::new());
        }
        let mut and = format!(" AND {} = '{state}'", PHASE_ATTRIBUTE.name());
        if let Some(namespace) = namespace {
            and += &format!(" AND {} = '{namespace}'", OWNER_ATTRIBUTE.name());
        }
        let open = self.running_where(KIND_ACCESS_REQUEST, &and, limit).await?;
        Ok(open
            .into_iter()
            .filter_map(|(_, request)| request)
            .collect())
    }

    /// The grants on request in force for `namespace` at `now`. Visibility finds them; each
    /// is then read from its open workflow, so one revoked or ended a moment ago does not
    /// count, nor one whose time is up by the clock, whether or not its timer has fired.
    pub async fn live_grants(
        &self,
        namespace: &str,
        now: SystemTime,
    ) -> Result<Vec<AccessRequest>, BackendError> {
        let found = self
            .access_requests_in_state(ACCESS_GRANTED, Some(namespace), MAX_OPEN_REQUESTS)
            .await?;
        if found.len() == MAX_OPEN_REQUESTS {
            tracing::warn!(
                namespace,
                "over {MAX_OPEN_REQUESTS} grants on request: those past them are not applied"
            );
        }
        let mut live = Vec::new();
        for candidate in found {
            let Some(grant) = self.open_access_request(&candidate.id).await? else {
                continue;
            };
            let in_force = grant.state == ACCESS_GRANTED
                && grant.namespace == namespace
                && humantime::parse_rfc3339(&grant.expires_at).is_ok_and(|end| end > now);
            if in_force {
                live.push(grant);
            }
        }
        Ok(live)
    }

    /// Runs every namespace's access schedule now; returns how many were started.
    pub async fn trigger_all_access_runs(&self) -> Result<u32, BackendError> {
        // A page Temporal did not answer in time lists again from the start: the ids are
        // collected before any trigger, so a second listing repeats nothing.
        let list = || async {
            let mut schedules = self.client.list_schedules(ListSchedulesOptions::default());
            let mut ids = Vec::new();
            while let Some(schedule) = schedules.next().await {
                let schedule = schedule?;
                if schedule.workflow_type() == Some(AccessRunStart.name()) {
                    ids.push(schedule.schedule_id().to_owned());
                }
            }
            Ok(ids)
        };
        let ids = retry_unanswered(TRIGGER_ALL_PATIENCE, list)
            .await
            .map_err(|e| BackendError::Unavailable(format!("list access schedules: {e}")))?;
        let mut triggered = 0;
        for id in ids {
            triggered += u32::from(self.trigger(id, TRIGGER_ALL_PATIENCE).await?);
        }
        Ok(triggered)
    }

    /// The summary of `namespace`'s most recent finished access run.
    pub async fn last_access_run(
        &self,
        namespace: &str,
    ) -> Result<Option<AccessSummary>, BackendError> {
        let handle = self
            .client
            .get_schedule_handle(access_schedule_id(namespace));
        let description = match handle.describe(Default::default()).await {
            Ok(description) => description,
            Err(ScheduleError::Rpc(status)) if status.code() == Code::NotFound => return Ok(None),
            Err(e) => return Err(schedule_error(e)),
        };
        let running: Vec<String> = description
            .running_actions()
            .into_iter()
            .map(|action| action.workflow_id)
            .collect();
        let mut recent = description.recent_actions();
        recent.sort_by_key(|action| std::cmp::Reverse(action.actual_time));
        for action in recent {
            if running.contains(&action.workflow_id) {
                continue;
            }
            let handle = self
                .client
                .get_workflow_handle::<AccessRunStart>(action.workflow_id);
            match handle.get_result(WorkflowGetResultOptions::default()).await {
                Ok(summary) => return Ok(Some(summary)),
                // Temporal did not answer: an older run's record would pass for the last one.
                Err(e @ (WorkflowGetResultError::Rpc(_) | WorkflowGetResultError::Other(_))) => {
                    return Err(BackendError::Unavailable(format!("last access run: {e}")));
                }
                // A failed run, or one whose history retention removed, has no summary: go back.
                Err(_) => {}
            }
        }
        Ok(None)
    }
}

/// Every `every`, at an offset derived from the name: interval schedules are aligned to the
/// epoch, so without it every namespace's run would start in the same second.
fn access_schedule_spec(namespace: &str, every: Duration) -> ScheduleSpec {
    // FNV-1a: stable across processes and releases, unlike the std hasher.
    let hash = namespace.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let seconds = every.as_secs().max(1);
    let offset = Duration::from_secs(hash % seconds);
    ScheduleSpec::builder()
        .intervals(vec![ScheduleIntervalSpec::new(every, Some(offset))])
        .build()
}

fn schedule_error(error: ScheduleError) -> BackendError {
    BackendError::Unavailable(format!("access schedule: {error}"))
}

/// `call`, tried again while Temporal does not answer it in time or is too busy to, for
/// `patience`.
async fn retry_unanswered<T, F, Fut>(patience: Duration, mut call: F) -> Result<T, ScheduleError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ScheduleError>>,
{
    let rpc = || {
        let answer = call();
        async move {
            match answer.await {
                Err(ScheduleError::Rpc(status)) => Err(status),
                other => Ok(other),
            }
        }
    };
    retry_while(UNANSWERED, patience, Duration::from_secs(1), rpc)
        .await
        .unwrap_or_else(|status| Err(ScheduleError::Rpc(status)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_spread_over_the_interval() {
        let every = Duration::from_secs(300);
        let offset = |name: &str| access_schedule_spec(name, every).intervals[0].offset;
        assert_eq!(offset("payments"), offset("payments"), "stable");
        let offsets: std::collections::BTreeSet<_> =
            (0..50).map(|i| offset(&format!("ns-{i}"))).collect();
        assert!(offsets.len() > 40, "{offsets:?}");
        assert!(offsets.iter().all(|o| o.is_some_and(|o| o < every)));
    }
}
