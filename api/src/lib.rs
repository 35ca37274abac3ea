//! `plinth.v1.PlatformService`: namespace resources and access policies over the control
//! plane's workflows, the audit trail and the history export.

mod audit;
mod history;
mod listing;
mod requests;

use std::sync::Arc;
use std::time::Duration;

pub use audit::AuditReader;
pub use history::HistoryReader;
use plinth_control::access::validate_rule;
use plinth_control::contract::{
    KIND_ATTRIBUTE, NAME_ATTRIBUTE, OWNER_ATTRIBUTE, PHASE_ATTRIBUTE, ReloadRequest, ScrapeTarget,
    namespace_name_of, policy_workflow_id, scrape_target_of, scrape_workflow_id, workflow_id,
};
use plinth_control::directory::{Directory, Size};
use plinth_control::{Admins, BackendError, ControlPlane, NamespaceBackend};
use plinth_identity::{Identity, caller};
use plinth_proto::audit::AuditRecord;
use plinth_proto::v1::platform_service_server::PlatformService;
use plinth_proto::v1::{
    AccessGrant, AccessList, AccessRequest, AccessRequestId, ApplyMetricsTargetRequest,
    ApplyMetricsTargetResponse, ApplyNamespaceRequest, ApplyNamespaceResponse,
    DeleteMetricsTargetRequest, DeleteNamespaceRequest, DeleteNamespaceResponse, GetAccessRequest,
    GetHistoryRequest, GetHistoryResponse, GetMetricsTargetRequest, GetNamespaceRequest,
    GetPolicyRequest, ListAccessRequestsRequest, ListAccessRequestsResponse, ListHistoriesRequest,
    ListHistoriesResponse, ListMetricsTargetsRequest, ListMetricsTargetsResponse,
    ListNamespacesRequest, ListNamespacesResponse, ListPoliciesRequest, ListPoliciesResponse,
    MetricsTarget, MetricsTargetStatus, Namespace, NamespaceSummary, ObjectMeta, Policy,
    PolicyRuleRequest, QueryAuditRequest, QueryAuditResponse, ReloadDirectoryRequest,
    ReloadDirectoryResponse, RequestAccessRequest, Rule, WatchNamespaceRequest,
};
use plinth_proto::{
    ValidationRules, check_update, outcome, phase, validate_metrics_target, validate_namespace,
};
use plinth_workflows::{By, Deleter, PolicyWorkflow, ProvisionNamespace, ScrapeMetricsWorkflow};
use requests::AccessRequests;
pub use requests::RequestSettings;
use temporalio_client::errors::{WorkflowUpdateError, WorkflowUpdateWithStartError};
use temporalio_client::{
    Client, WorkflowExecuteUpdateOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
    WorkflowUpdateWithStartOptions,
};
use temporalio_common::HasWorkflowDefinition;
use temporalio_common::search_attributes::SearchAttributes;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Each poll is a query (a workflow task on a worker): often enough for a person watching,
/// rare enough for hundreds of watches at once.
const WATCH_POLL: Duration = Duration::from_millis(500);

/// The platform API, backed by the control-plane namespace.
#[derive(Clone)]
pub struct PlatformApi {
    client: Client,
    task_queue: String,
    control: ControlPlane,
    backend: Arc<dyn NamespaceBackend>,
    admins: Admins,
    rules: ValidationRules,
    audit: Option<AuditReader>,
    /// The audit trail's destinations, for changes the API makes itself.
    trail: Vec<String>,
    histories: Option<HistoryReader>,
    requests: AccessRequests,
    /// Running Namespace resources, listed once for concurrent callers.
    listing: Arc<listing::SharedListing>,
}

impl std::fmt::Debug for PlatformApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformApi")
            .field("task_queue", &self.task_queue)
            .field("admins", &self.admins)
            .finish_non_exhaustive()
    }
}

impl PlatformApi {
    /// The API on `client` (a client of the control-plane namespace), with the worker's task
    /// queue, backend, directory and rules.
    pub fn new(
        client: Client,
        task_queue: String,
        backend: Arc<dyn NamespaceBackend>,
        directory: Arc<dyn Directory>,
        rules: ValidationRules,
        admin_group: String,
    ) -> Self {
        let control = ControlPlane::new(client.clone(), task_queue.clone());
        let admins = Admins::new(directory, admin_group);
        Self {
            requests: AccessRequests::new(
                control.clone(),
                admins.clone(),
                RequestSettings::default(),
            ),
            control,
            client,
            task_queue,
            backend,
            admins,
            rules,
            audit: None,
            trail: Vec::new(),
            histories: None,
            listing: Default::default(),
        }
    }

    /// Access requests wait and last as `settings` say.
    pub fn with_request_settings(mut self, settings: RequestSettings) -> Self {
        self.requests = AccessRequests::new(self.control.clone(), self.admins.clone(), settings);
        self
    }

    /// Answers `QueryAudit` from `reader`; changes the API makes itself (a directory reload)
    /// are recorded to `destinations`.
    pub fn with_audit(mut self, reader: AuditReader, destinations: Vec<String>) -> Self {
        self.audit = Some(reader);
        self.trail = destinations;
        self
    }

    /// Answers `ListHistories` and `GetHistory` from `reader`.
    pub fn with_histories(mut self, reader: HistoryReader) -> Self {
        self.histories = Some(reader);
        self
    }

    fn histories(&self) -> Result<&HistoryReader, Status> {
        self.histories
            .as_ref()
            .ok_or_else(|| Status::unavailable("this proxy reads no history export ([export])"))
    }

    /// Who may change what: the admin group and the directory.
    pub fn admins(&self) -> &Admins {
        &self.admins
    }

    /// The namespace resource `name`, or `None` when no open workflow manages it. Read from the
    /// workflow's memo by a describe: no worker is involved, so hundreds of watches stay cheap.
    async fn current(&self, name: &str) -> Result<Option<Namespace>, Status> {
        self.control
            .running(workflow_id(name))
            .await
            .map_err(backend_status)
    }

    /// [`Self::current`] with the run that publishes it, asking `run` (the one a watch saw
    /// last) first: the current run is looked up only once that one has ended.
    async fn current_from(
        &self,
        name: &str,
        run: Option<String>,
    ) -> Result<Option<(Namespace, String)>, Status> {
        let read = |run| async move {
            self.control
                .running_run(workflow_id(name), run)
                .await
                .map_err(backend_status)
        };
        if let Some(run) = run
            && let Some(found) = read(Some(run)).await?
        {
            return Ok(Some(found));
        }
        read(None).await
    }

    /// The Namespace resource, if any, whose spec names Temporal namespace `temporal_name`.
    /// A running one that has not published its spec yet counts as holding it: the query
    /// found it by that name, or it predates the name in its search attributes (fail closed).
    async fn holder_of(&self, temporal_name: &str) -> Result<Option<String>, Status> {
        let resources = self
            .control
            .namespaces_naming::<Namespace>(temporal_name, usize::MAX)
            .await
            .map_err(backend_status)?;
        Ok(resources.iter().find_map(|(id, resource)| match resource {
            Some(resource) => (resource.spec_or_default().name == temporal_name)
                .then(|| resource.name().to_owned()),
            None => namespace_name_of(id).map(str::to_owned),
        }))
    }

    /// The metrics target resource `name`, while its workflow runs.
    async fn current_target(&self, name: &str) -> Result<Option<MetricsTarget>, Status> {
        self.control
            .running(scrape_workflow_id(name))
            .await
            .map_err(backend_status)
    }

    /// Lets platform admins only do `action` to `resource`; `needing` says what needs it.
    fn admins_only(
        &self,
        identity: &Identity,
        action: &str,
        resource: &str,
        needing: &str,
    ) -> Result<(), Status> {
        if !self.admins.include(identity) {
            let why = format!("{needing} needs membership of {:?}", self.admins.group());
            return Err(denied(identity, action, resource, why));
        }
        allowed(identity, action, resource);
        Ok(())
    }

    /// Options of an update-with-start of the resource workflow `workflow_id`: the running
    /// one takes the update; a closed one is replaced.
    fn resource_workflow(
        &self,
        workflow_id: String,
        attributes: SearchAttributes,
    ) -> WorkflowUpdateWithStartOptions {
        WorkflowUpdateWithStartOptions::new(
            self.task_queue.clone(),
            workflow_id,
            WorkflowIdConflictPolicy::UseExisting,
        )
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .search_attributes(attributes)
        .build()
    }

    async fn policy(&self, name: &str) -> Result<Policy, Status> {
        self.control
            .policy(name)
            .await
            .map_err(backend_status)?
            .ok_or_else(|| Status::not_found(format!("policy {name:?} not found")))
    }

    /// Checks the caller may edit `request`'s policy, checks the rule with `rule`, and sends
    /// `update` to the policy's workflow.
    async fn change_rules<U>(
        &self,
        request: Request<PolicyRuleRequest>,
        action: &str,
        update: U,
        rule: impl FnOnce(&Rule) -> Result<Rule, Status>,
    ) -> Result<Response<Policy>, Status>
    where
        U: temporalio_common::UpdateDefinition<
                Workflow = <PolicyWorkflow as HasWorkflowDefinition>::Run,
                Input = By<Rule>,
                Output = plinth_workflows::RuleChange,
            >,
    {
        let identity = caller(request.extensions())?;
        let PolicyRuleRequest {
            policy,
            rule: wanted,
        } = request.into_inner();
        let wanted = wanted.ok_or_else(|| Status::invalid_argument("rule: missing"))?;
        let wanted = rule(&wanted)?;
        let current = self.policy(&policy).await?;
        let resource = format!("policy {policy:?}");
        if !self
            .admins
            .may_change(&identity, current.editors.iter().chain([&current.owner]))
        {
            let why = format!(
                "not a member of its editors {:?}, its owner {:?} or {:?}",
                current.editors,
                current.owner,
                self.admins.group()
            );
            return Err(denied(&identity, action, &resource, why));
        }
        allowed(&identity, action, &resource);
        let change = self
            .client
            .get_workflow_handle::<PolicyWorkflow>(policy_workflow_id(&policy))
            .execute_update(
                update,
                By::new(wanted, identity.to_string()),
                WorkflowExecuteUpdateOptions::default(),
            )
            .await
            .map_err(update_error)?;
        tracing::info!(%identity, policy, changed = change.changed, action, "policy rules");
        Ok(Response::new(change.policy))
    }
}

fn backend_status(error: BackendError) -> Status {
    match error {
        BackendError::Rejected(message) => Status::not_found(message),
        BackendError::Unavailable(message) => Status::unavailable(message),
        BackendError::TooLarge(message) => Status::resource_exhausted(message),
    }
}

/// The caller of a call about one access request, and the request's id.
fn asked_about(request: Request<AccessRequestId>) -> Result<(Identity, String), Status> {
    let identity = caller(request.extensions())?;
    Ok((identity, request.into_inner().id))
}

/// `resource` as written in messages, e.g. `namespace "fancy"`.
fn denied(identity: &Identity, action: &str, resource: &str, why: String) -> Status {
    tracing::warn!(%identity, action, resource, decision = "deny", %why, "authorization");
    Status::permission_denied(format!("{identity} may not {action} {resource}: {why}"))
}

fn allowed(identity: &Identity, action: &str, resource: &str) {
    tracing::info!(%identity, action, resource, decision = "allow", "authorization");
}

fn namespace_resource(name: &str) -> String {
    format!("namespace {name:?}")
}

/// Why only platform admins change metrics targets: a target names a file or variable the
/// worker reads its token from, and the URL the token is sent to.
const TARGET_CHANGES: &str = "metrics targets send the worker's secrets; changing them";

fn target_resource(name: &str) -> String {
    format!("metrics target {name:?}")
}

fn target_not_found(name: &str) -> Status {
    Status::not_found(format!("metrics target {name:?} not found"))
}

fn update_with_start_error(e: WorkflowUpdateWithStartError) -> Status {
    match e {
        WorkflowUpdateWithStartError::Update(update) => update_error(update),
        other => Status::unavailable(format!("control plane: {other}")),
    }
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
        let identity = caller(request.extensions())?;
        let ApplyNamespaceRequest { namespace, dry_run } = request.into_inner();
        let mut desired =
            namespace.ok_or_else(|| Status::invalid_argument("namespace: missing"))?;
        desired.status = None;
        let directory = self.admins.directory();
        validate_namespace(&desired, &self.rules, &|group| {
            directory.group_exists(group)
        })
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let name = desired.name().to_owned();
        let spec = desired.spec_or_default();
        let current = self.current(&name).await?;
        if !self.admins.may_change(&identity, [&spec.owner]) {
            let why = format!(
                "not a member of owner group {:?} or of {:?}",
                spec.owner,
                self.admins.group()
            );
            return Err(denied(&identity, "apply", &namespace_resource(&name), why));
        }
        if let Some(current) = &current {
            let current_spec = current.spec_or_default();
            if !self.admins.may_change(&identity, [&current_spec.owner]) {
                let why = format!("owned by {:?}", current_spec.owner);
                return Err(denied(&identity, "apply", &namespace_resource(&name), why));
            }
            check_update(&current_spec, &spec)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        } else if let Some(other) = self.holder_of(&spec.name).await? {
            // Another resource would reach the same Temporal namespace, its policies and its
            // deletion: refused, whoever asks.
            return Err(Status::already_exists(format!(
                "spec.name: Temporal namespace {:?} belongs to namespace/{other}",
                spec.name
            )));
        }
        allowed(&identity, "apply", &namespace_resource(&name));
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
        let attributes = SearchAttributes::new([
            KIND_ATTRIBUTE.value_set(plinth_proto::KIND_NAMESPACE.to_owned()),
            OWNER_ATTRIBUTE.value_set(spec.owner.clone()),
            PHASE_ATTRIBUTE.value_set(phase::PENDING.to_owned()),
            NAME_ATTRIBUTE.value_set(spec.name.clone()),
        ]);
        let options = self.resource_workflow(workflow_id(&name), attributes);
        let result = self
            .client
            .execute_update_with_start_workflow(
                ProvisionNamespace::run,
                desired.clone(),
                ProvisionNamespace::apply,
                By::new(desired, identity.to_string()),
                options,
            )
            .await
            .map_err(update_with_start_error)?;
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
        caller(request.extensions())?;
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
        caller(request.extensions())?;
        let running = self.listing.running(&self.control).await?;
        let mut namespaces = Vec::new();
        for (id, resource) in running.iter() {
            let Some(name) = namespace_name_of(id) else {
                continue;
            };
            // Started moments ago, its first workflow task has not published it yet: the
            // name comes from the workflow id.
            namespaces.push(NamespaceSummary {
                name: name.to_owned(),
                ..resource.clone().unwrap_or_default().summary()
            });
        }
        namespaces.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    async fn delete_namespace(
        &self,
        request: Request<DeleteNamespaceRequest>,
    ) -> Result<Response<DeleteNamespaceResponse>, Status> {
        let identity = caller(request.extensions())?;
        let name = request.into_inner().name;
        self.admins_only(&identity, "delete", &namespace_resource(&name), "deleting")?;
        if self.current(&name).await?.is_none() {
            return Err(Status::not_found(format!(
                "namespace resource {name:?} not found"
            )));
        }
        let resource = self
            .client
            .get_workflow_handle::<ProvisionNamespace>(workflow_id(&name))
            .execute_update(
                ProvisionNamespace::delete,
                Deleter(Some(identity.to_string())),
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
        caller(request.extensions())?;
        let name = request.into_inner().name;
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            let mut last: Option<Namespace> = None;
            let mut run = None;
            loop {
                let current = match api.current_from(&name, run.take()).await {
                    Ok(current) => current.map(|(resource, seen)| {
                        run = Some(seen);
                        resource
                    }),
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

    async fn get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> Result<Response<Policy>, Status> {
        caller(request.extensions())?;
        Ok(Response::new(
            self.policy(&request.into_inner().name).await?,
        ))
    }

    async fn list_policies(
        &self,
        request: Request<ListPoliciesRequest>,
    ) -> Result<Response<ListPoliciesResponse>, Status> {
        caller(request.extensions())?;
        let policies = self.control.policies().await.map_err(backend_status)?;
        Ok(Response::new(ListPoliciesResponse { policies }))
    }

    async fn add_policy_rule(
        &self,
        request: Request<PolicyRuleRequest>,
    ) -> Result<Response<Policy>, Status> {
        let directory = self.admins.directory();
        self.change_rules(request, "add a rule to", PolicyWorkflow::add_rule, |rule| {
            validate_rule(rule, directory.as_ref())
                .map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .await
    }

    async fn remove_policy_rule(
        &self,
        request: Request<PolicyRuleRequest>,
    ) -> Result<Response<Policy>, Status> {
        // A rule naming a group since removed from the directory must still be removable.
        self.change_rules(
            request,
            "remove a rule from",
            PolicyWorkflow::remove_rule,
            |rule| Ok(rule.canonical()),
        )
        .await
    }

    async fn get_access(
        &self,
        request: Request<GetAccessRequest>,
    ) -> Result<Response<AccessList>, Status> {
        caller(request.extensions())?;
        let namespace = request.into_inner().namespace;
        let on_request = self
            .control
            .live_grants(&namespace, std::time::SystemTime::now())
            .await
            .map_err(backend_status)?;
        let grants = self
            .backend
            .list_access(&namespace)
            .await
            .map_err(backend_status)?
            .into_iter()
            .map(|(identity, level)| {
                // The grant on request that ends last, if it is what gives this level.
                let asked = on_request
                    .iter()
                    .filter(|g| g.requester == identity && g.access == level.as_str())
                    .max_by(|a, b| a.expires_at.cmp(&b.expires_at));
                AccessGrant {
                    access: level.as_str().to_owned(),
                    expires: asked.map(|g| g.expires_at.clone()).unwrap_or_default(),
                    request: asked.map(|g| g.id.clone()).unwrap_or_default(),
                    identity,
                }
            })
            .collect();
        let last_run = self
            .control
            .last_access_run(&namespace)
            .await
            .map_err(backend_status)?;
        Ok(Response::new(AccessList {
            namespace,
            grants,
            last_run,
        }))
    }

    async fn reload_directory(
        &self,
        request: Request<ReloadDirectoryRequest>,
    ) -> Result<Response<ReloadDirectoryResponse>, Status> {
        let identity = caller(request.extensions())?;
        let force = request.into_inner().force;
        self.admins_only(&identity, "reload", "the directory", "reloading")?;
        let floor = force.then_some(Size::default());
        let size = self.admins.reload(floor).await.map_err(|e| {
            Status::failed_precondition(format!("{e}; the previous directory stays in force"))
        })?;
        self.control
            .request_directory_reload(ReloadRequest {
                by: identity.to_string(),
                floor: force.then_some(size),
            })
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "the directory was read again here, but the workers were not told ({e}); \
                     reload again"
                ))
            })?;
        // Each worker starts every namespace's access run once it has read the directory
        // again: runs started from here could run on a worker that has not yet.
        tracing::info!(%identity, "directory reloaded");
        let record = AuditRecord::now(
            identity.to_string(),
            "directory.reloaded",
            "directory",
            "reloaded",
        )
        .detail("each worker reads it again, then starts every namespace's access runs");
        self.control
            .record_change(&self.trail, record)
            .await
            .map_err(|e| {
                Status::unavailable(format!(
                    "the directory was reloaded, but the audit trail did not take its record \
                     ({e}); reload again to record it"
                ))
            })?;
        Ok(Response::new(ReloadDirectoryResponse {}))
    }

    async fn query_audit(
        &self,
        request: Request<QueryAuditRequest>,
    ) -> Result<Response<QueryAuditResponse>, Status> {
        let identity = caller(request.extensions())?;
        let reader = self.audit.as_ref().ok_or_else(|| {
            Status::unavailable("this proxy reads no audit destination ([audit] destinations)")
        })?;
        let answer = reader
            .query(&self.admins, &identity, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn request_access(
        &self,
        request: Request<RequestAccessRequest>,
    ) -> Result<Response<AccessRequest>, Status> {
        let identity = caller(request.extensions())?;
        let started = self
            .requests
            .request(&identity, request.into_inner())
            .await?;
        Ok(Response::new(started))
    }

    async fn list_access_requests(
        &self,
        request: Request<ListAccessRequestsRequest>,
    ) -> Result<Response<ListAccessRequestsResponse>, Status> {
        let identity = caller(request.extensions())?;
        Ok(Response::new(self.requests.list(&identity).await?))
    }

    async fn approve_access_request(
        &self,
        request: Request<AccessRequestId>,
    ) -> Result<Response<AccessRequest>, Status> {
        let (identity, id) = asked_about(request)?;
        let answered = self.requests.answer(&identity, &id, true).await?;
        Ok(Response::new(answered))
    }

    async fn deny_access_request(
        &self,
        request: Request<AccessRequestId>,
    ) -> Result<Response<AccessRequest>, Status> {
        let (identity, id) = asked_about(request)?;
        let answered = self.requests.answer(&identity, &id, false).await?;
        Ok(Response::new(answered))
    }

    async fn revoke_access_request(
        &self,
        request: Request<AccessRequestId>,
    ) -> Result<Response<AccessRequest>, Status> {
        let (identity, id) = asked_about(request)?;
        Ok(Response::new(self.requests.revoke(&identity, &id).await?))
    }

    async fn list_histories(
        &self,
        request: Request<ListHistoriesRequest>,
    ) -> Result<Response<ListHistoriesResponse>, Status> {
        let identity = caller(request.extensions())?;
        let answer = self
            .histories()?
            .list(&self.admins, &identity, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_history(
        &self,
        request: Request<GetHistoryRequest>,
    ) -> Result<Response<GetHistoryResponse>, Status> {
        let identity = caller(request.extensions())?;
        let answer = self
            .histories()?
            .get(&self.admins, &identity, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn apply_metrics_target(
        &self,
        request: Request<ApplyMetricsTargetRequest>,
    ) -> Result<Response<ApplyMetricsTargetResponse>, Status> {
        let identity = caller(request.extensions())?;
        let ApplyMetricsTargetRequest { target, dry_run } = request.into_inner();
        let mut desired = target.ok_or_else(|| Status::invalid_argument("target: missing"))?;
        desired.status = None;
        validate_metrics_target(&desired).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let name = desired.name().to_owned();
        self.admins_only(&identity, "apply", &target_resource(&name), TARGET_CHANGES)?;
        if dry_run {
            let current = self.current_target(&name).await?;
            let result = match &current {
                None => outcome::CREATED,
                Some(c) if c.spec == desired.spec => outcome::UNCHANGED,
                Some(_) => outcome::CONFIGURED,
            };
            return Ok(Response::new(ApplyMetricsTargetResponse {
                outcome: result.into(),
                target: Some(current.unwrap_or(desired)),
            }));
        }
        let attributes = SearchAttributes::new([
            KIND_ATTRIBUTE.value_set(plinth_proto::KIND_METRICS_TARGET.to_owned()),
            PHASE_ATTRIBUTE.value_set(phase::SCRAPING.to_owned()),
        ]);
        let options = self.resource_workflow(scrape_workflow_id(&name), attributes);
        let result = self
            .client
            .execute_update_with_start_workflow(
                ScrapeMetricsWorkflow::run,
                ScrapeTarget::from_resource(desired.clone()),
                ScrapeMetricsWorkflow::apply,
                By::new(desired, identity.to_string()),
                options,
            )
            .await
            .map_err(update_with_start_error)?;
        tracing::info!(%identity, resource = %target_resource(&name), outcome = result.outcome, "applied");
        Ok(Response::new(ApplyMetricsTargetResponse {
            outcome: result.outcome,
            target: Some(result.resource),
        }))
    }

    async fn get_metrics_target(
        &self,
        request: Request<GetMetricsTargetRequest>,
    ) -> Result<Response<MetricsTarget>, Status> {
        caller(request.extensions())?;
        let name = request.into_inner().name;
        match self.current_target(&name).await? {
            Some(target) => Ok(Response::new(target)),
            None => Err(target_not_found(&name)),
        }
    }

    async fn list_metrics_targets(
        &self,
        request: Request<ListMetricsTargetsRequest>,
    ) -> Result<Response<ListMetricsTargetsResponse>, Status> {
        caller(request.extensions())?;
        let running = self
            .control
            .running_resources::<MetricsTarget>(plinth_proto::KIND_METRICS_TARGET)
            .await
            .map_err(backend_status)?;
        let mut targets: Vec<MetricsTarget> = running
            .into_iter()
            .filter_map(|(id, resource)| {
                let name = scrape_target_of(&id)?.to_owned();
                // Started moments ago, its first workflow task has not published it yet.
                Some(resource.unwrap_or_else(|| MetricsTarget {
                    metadata: Some(ObjectMeta {
                        name,
                        ..Default::default()
                    }),
                    status: Some(MetricsTargetStatus {
                        phase: phase::PENDING.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }))
            })
            .collect();
        targets.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(Response::new(ListMetricsTargetsResponse { targets }))
    }

    async fn delete_metrics_target(
        &self,
        request: Request<DeleteMetricsTargetRequest>,
    ) -> Result<Response<MetricsTarget>, Status> {
        let identity = caller(request.extensions())?;
        let name = request.into_inner().name;
        self.admins_only(&identity, "delete", &target_resource(&name), TARGET_CHANGES)?;
        if self.current_target(&name).await?.is_none() {
            return Err(target_not_found(&name));
        }
        let target = self
            .client
            .get_workflow_handle::<ScrapeMetricsWorkflow>(scrape_workflow_id(&name))
            .execute_update(
                ScrapeMetricsWorkflow::delete,
                Deleter(Some(identity.to_string())),
                WorkflowExecuteUpdateOptions::default(),
            )
            .await
            .map_err(update_error)?;
        tracing::info!(%identity, resource = %target_resource(&name), "deleting");
        Ok(Response::new(target))
    }
}

/// Ready or Failed at the current generation: nothing more will happen without a change.
fn is_settled(resource: &Namespace) -> bool {
    let generation = resource.generation();
    resource.status.as_ref().is_some_and(|s| {
        (s.phase == phase::READY && s.observed_generation >= generation)
            || s.phase == phase::FAILED
            // Its workflow may stay to shred its keys later.
            || s.phase == phase::DELETED
    })
}
