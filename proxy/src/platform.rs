//! `plinth.v1.PlatformService`: namespace resources over the control plane's workflows.

use std::sync::Arc;
use std::time::Duration;

use plinth_activities::directory::Directory;
use plinth_identity::Identity;
use plinth_proto::v1::platform_service_server::PlatformService;
use plinth_proto::v1::{
    ApplyNamespaceRequest, ApplyNamespaceResponse, DeleteNamespaceRequest, DeleteNamespaceResponse,
    GetNamespaceRequest, ListNamespacesRequest, ListNamespacesResponse, Namespace,
    NamespaceSummary, WatchNamespaceRequest,
};
use plinth_proto::{ValidationRules, check_update, outcome, phase, validate_namespace};
use plinth_workflows::{
    KIND_ATTRIBUTE, OWNER_ATTRIBUTE, PHASE_ATTRIBUTE, ProvisionNamespace, RESOURCE_MEMO,
    workflow_id,
};
use temporalio_client::errors::{
    WorkflowInteractionError, WorkflowUpdateError, WorkflowUpdateWithStartError,
};
use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowExecuteUpdateOptions, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowListOptions, WorkflowUpdateWithStartOptions,
};
use temporalio_common::protos::temporal::api::common::v1::Memo;
use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::tls::Caller;

/// Each poll is a query (a workflow task on a worker): often enough for a person watching,
/// rare enough for hundreds of watches at once.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// The platform API, backed by the control-plane namespace.
#[derive(Clone)]
pub struct PlatformApi {
    client: Client,
    task_queue: String,
    directory: Arc<dyn Directory>,
    rules: ValidationRules,
    admin_group: String,
}

impl std::fmt::Debug for PlatformApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformApi")
            .field("task_queue", &self.task_queue)
            .field("admin_group", &self.admin_group)
            .finish_non_exhaustive()
    }
}

impl PlatformApi {
    /// The API on `client` (a client of the control-plane namespace), with the worker's task
    /// queue, and the same directory and rules as the worker.
    pub fn new(
        client: Client,
        task_queue: String,
        directory: Arc<dyn Directory>,
        rules: ValidationRules,
        admin_group: String,
    ) -> Self {
        Self {
            client,
            task_queue,
            directory,
            rules,
            admin_group,
        }
    }

    fn is_admin(&self, identity: &Identity) -> bool {
        self.directory.is_member(identity, &self.admin_group)
    }

    /// May `identity` change a resource owned by `owner`?
    fn may_change(&self, identity: &Identity, owner: &str) -> bool {
        self.is_admin(identity) || self.directory.is_member(identity, owner)
    }

    /// The resource, or `None` when no open workflow manages `name`. Read from the workflow's
    /// memo by a describe: no worker is involved, so hundreds of watches stay cheap.
    async fn current(&self, name: &str) -> Result<Option<Namespace>, Status> {
        let handle = self
            .client
            .get_workflow_handle::<ProvisionNamespace>(workflow_id(name));
        let description = match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(description) => description.raw_description,
            Err(WorkflowInteractionError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(Status::unavailable(format!("control plane: {e}"))),
        };
        let Some(info) = description.workflow_execution_info else {
            return Ok(None);
        };
        if info.status != WorkflowExecutionStatus::Running as i32 {
            return Ok(None);
        }
        Ok(resource_in(info.memo.as_ref()))
    }
}

fn caller<T>(request: &Request<T>) -> Result<Identity, Status> {
    match request.extensions().get::<Caller>() {
        Some(Caller(Ok(identity))) => Ok(identity.clone()),
        Some(Caller(Err(reason))) => Err(Status::unauthenticated(reason.clone())),
        None => Err(Status::unauthenticated("a client certificate is required")),
    }
}

fn denied(identity: &Identity, action: &str, name: &str, why: String) -> Status {
    tracing::warn!(%identity, action, resource = name, decision = "deny", %why, "authorization");
    Status::permission_denied(format!(
        "{identity} may not {action} namespace {name:?}: {why}"
    ))
}

fn allowed(identity: &Identity, action: &str, name: &str) {
    tracing::info!(%identity, action, resource = name, decision = "allow", "authorization");
}

fn update_error(e: WorkflowUpdateError) -> Status {
    match e {
        WorkflowUpdateError::Failed(failure) => Status::failed_precondition(failure.message),
        WorkflowUpdateError::NotFound(_) => Status::not_found("resource not found"),
        other => Status::unavailable(format!("control plane: {other}")),
    }
}

#[tonic::async_trait]
impl PlatformService for PlatformApi {
    async fn apply_namespace(
        &self,
        request: Request<ApplyNamespaceRequest>,
    ) -> Result<Response<ApplyNamespaceResponse>, Status> {
        let identity = caller(&request)?;
        let ApplyNamespaceRequest { namespace, dry_run } = request.into_inner();
        let mut desired =
            namespace.ok_or_else(|| Status::invalid_argument("namespace: missing"))?;
        desired.status = None;
        let directory = self.directory.clone();
        validate_namespace(&desired, &self.rules, &|group| {
            directory.group_exists(group)
        })
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let name = desired.name().to_owned();
        let spec = desired.spec_or_default();
        let current = self.current(&name).await?;
        if !self.may_change(&identity, &spec.owner) {
            let why = format!(
                "not a member of owner group {:?} or of {:?}",
                spec.owner, self.admin_group
            );
            return Err(denied(&identity, "apply", &name, why));
        }
        if let Some(current) = &current {
            let current_spec = current.spec_or_default();
            if !self.may_change(&identity, &current_spec.owner) {
                let why = format!("owned by {:?}", current_spec.owner);
                return Err(denied(&identity, "apply", &name, why));
            }
            check_update(&current_spec, &spec)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        allowed(&identity, "apply", &name);
        if dry_run {
            let result = match &current {
                None => outcome::CREATED,
                Some(c) if c.same_desired_state(&desired) => outcome::UNCHANGED,
                Some(_) => outcome::CONFIGURED,
            };
            return Ok(Response::new(ApplyNamespaceResponse {
                outcome: result.into(),
                namespace: Some(current.unwrap_or(desired)),
            }));
        }
        let attributes = temporalio_common::search_attributes::SearchAttributes::new([
            KIND_ATTRIBUTE.value_set(plinth_proto::KIND_NAMESPACE.to_owned()),
            OWNER_ATTRIBUTE.value_set(spec.owner.clone()),
            PHASE_ATTRIBUTE.value_set(phase::PENDING.to_owned()),
        ]);
        let options = WorkflowUpdateWithStartOptions::new(
            self.task_queue.clone(),
            workflow_id(&name),
            WorkflowIdConflictPolicy::UseExisting,
        )
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .search_attributes(attributes)
        .build();
        let result = self
            .client
            .execute_update_with_start_workflow(
                ProvisionNamespace::run,
                desired.clone(),
                ProvisionNamespace::apply,
                desired,
                options,
            )
            .await
            .map_err(|e| match e {
                WorkflowUpdateWithStartError::Update(update) => update_error(update),
                other => Status::unavailable(format!("control plane: {other}")),
            })?;
        tracing::info!(%identity, resource = name, outcome = result.outcome, "applied");
        Ok(Response::new(ApplyNamespaceResponse {
            outcome: result.outcome,
            namespace: Some(result.resource),
        }))
    }

    async fn get_namespace(
        &self,
        request: Request<GetNamespaceRequest>,
    ) -> Result<Response<Namespace>, Status> {
        caller(&request)?;
        let name = request.into_inner().name;
        match self.current(&name).await? {
            Some(resource) => Ok(Response::new(resource)),
            None => Err(Status::not_found(format!(
                "namespace resource {name:?} not found"
            ))),
        }
    }

    async fn list_namespaces(
        &self,
        request: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        caller(&request)?;
        let query = format!(
            "{} = '{}' AND ExecutionStatus = 'Running'",
            KIND_ATTRIBUTE.name(),
            plinth_proto::KIND_NAMESPACE
        );
        let mut stream = self
            .client
            .list_workflows(query, WorkflowListOptions::default());
        let mut namespaces = Vec::new();
        while let Some(execution) = stream.next().await {
            let execution =
                execution.map_err(|e| Status::unavailable(format!("visibility: {e}")))?;
            let raw = execution.into_raw();
            let Some(name) = raw
                .execution
                .as_ref()
                .and_then(|e| e.workflow_id.strip_prefix("namespace/"))
                .map(str::to_owned)
            else {
                continue;
            };
            // Started moments ago, its first workflow task has not published it yet: the
            // name comes from the workflow id.
            let resource = resource_in(raw.memo.as_ref()).unwrap_or_default();
            namespaces.push(NamespaceSummary {
                name,
                ..resource.summary()
            });
        }
        namespaces.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    async fn delete_namespace(
        &self,
        request: Request<DeleteNamespaceRequest>,
    ) -> Result<Response<DeleteNamespaceResponse>, Status> {
        let identity = caller(&request)?;
        let name = request.into_inner().name;
        if !self.is_admin(&identity) {
            let why = format!("deleting needs membership of {:?}", self.admin_group);
            return Err(denied(&identity, "delete", &name, why));
        }
        if self.current(&name).await?.is_none() {
            return Err(Status::not_found(format!(
                "namespace resource {name:?} not found"
            )));
        }
        allowed(&identity, "delete", &name);
        let resource = self
            .client
            .get_workflow_handle::<ProvisionNamespace>(workflow_id(&name))
            .execute_update(
                ProvisionNamespace::delete,
                (),
                WorkflowExecuteUpdateOptions::default(),
            )
            .await
            .map_err(update_error)?;
        Ok(Response::new(DeleteNamespaceResponse {
            namespace: Some(resource),
        }))
    }

    type WatchNamespaceStream = ReceiverStream<Result<Namespace, Status>>;

    async fn watch_namespace(
        &self,
        request: Request<WatchNamespaceRequest>,
    ) -> Result<Response<Self::WatchNamespaceStream>, Status> {
        caller(&request)?;
        let name = request.into_inner().name;
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            let mut last: Option<Namespace> = None;
            loop {
                let current = match api.current(&name).await {
                    Ok(current) => current,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
                let Some(resource) = current else {
                    // Gone: deletion finished.
                    if let Some(mut gone) = last {
                        gone.status.get_or_insert_default().phase = phase::DELETED.into();
                        let _ = sender.send(Ok(gone)).await;
                    } else {
                        let _ = sender
                            .send(Err(Status::not_found(format!(
                                "namespace resource {name:?} not found"
                            ))))
                            .await;
                    }
                    return;
                };
                if last.as_ref() != Some(&resource) {
                    let settled = is_settled(&resource);
                    if sender.send(Ok(resource.clone())).await.is_err() || settled {
                        return;
                    }
                    last = Some(resource);
                }
                tokio::time::sleep(WATCH_POLL).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Ready or Failed at the current generation: nothing more will happen without a change.
fn is_settled(resource: &Namespace) -> bool {
    let generation = resource.generation();
    resource.status.as_ref().is_some_and(|s| {
        (s.phase == phase::READY && s.observed_generation >= generation) || s.phase == phase::FAILED
    })
}

/// The resource a `ProvisionNamespace` workflow keeps in its memo.
fn resource_in(memo: Option<&Memo>) -> Option<Namespace> {
    let payload = memo?.fields.get(RESOURCE_MEMO)?;
    serde_json::from_slice(&payload.data).ok()
}
