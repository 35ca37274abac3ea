//! Temporal Cloud through its Ops API (`temporal.api.cloud.cloudservice.v1`). A Plinth
//! namespace `orders` is Cloud's `orders.<account>`. Every mutation is an asynchronous
//! operation, waited on with its id recorded ([`super::progress`]), sent with the
//! `resource_version` it was planned from and an operation id derived from that plan, so a
//! retry after a crash neither repeats it nor overwrites a change made meanwhile: a conflict
//! re-reads and plans again.

mod ops;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use plinth_proto::v1::NamespaceSpec;
use temporalio_client::tonic::{Code, Status};
use temporalio_common::protos::temporal::api::cloud::cloudservice::v1::{
    CreateNamespaceExportSinkRequest, CreateNamespaceRequest, CreateUserRequest,
    DeleteNamespaceRequest, GetAuditLogsRequest, GetCurrentIdentityRequest,
    GetNamespaceExportSinkRequest, GetNamespaceRequest, GetRegionsRequest,
    GetServiceAccountNamespaceAssignmentsRequest, GetServiceAccountRequest,
    GetServiceAccountsRequest, GetUserNamespaceAssignmentsRequest, GetUserRequest, GetUsersRequest,
    SetServiceAccountNamespaceAccessRequest, SetUserNamespaceAccessRequest,
    UpdateNamespaceExportSinkRequest, UpdateNamespaceRequest,
    get_current_identity_response::Principal,
};
use temporalio_common::protos::temporal::api::cloud::identity::v1::{
    Access, NamespaceAccess, ServiceAccount, UserSpec, account_access::Role,
    namespace_access::Permission,
};
use temporalio_common::protos::temporal::api::cloud::namespace::v1::{
    ApiKeyAuthSpec, CodecServerSpec, ExportSinkSpec, LifecycleSpec, MtlsAuthSpec, Namespace,
    NamespaceSpec as CloudSpec, ReplicaSpec, export_sink,
};
use temporalio_common::protos::temporal::api::cloud::operation::v1::AsyncOperation;
use temporalio_common::protos::temporal::api::cloud::resource::v1::ResourceState;

use plinth_proto::audit::AuditRecord;
use temporalio_common::protos::temporal::api::cloud::auditlog::v1::LogRecord;
use temporalio_common::protos::temporal::api::cloud::sink::v1::S3Spec;

use crate::backend::{
    AccessChange, AccessLevel, AccountAudit, AccountAuditCursor, BackendError, NamespaceBackend,
    ObservedNamespace, attribute_type_name, attribute_type_value, jitter, progress,
};
use ops::Ops;

/// Audit log records asked for at once.
const AUDIT_PAGE: i32 = 200;

/// One record of the account's audit log in Plinth's schema: id `cloud:<log id>`, the
/// principal as actor, the operation as action (`cloud.<operation>`), and the rest as detail.
/// Its namespace is left empty: the account's log is for platform admins.
fn log_record(account: &str, log: LogRecord) -> AuditRecord {
    // The trail's times are to the millisecond; the cursor keeps Cloud's own precision.
    let time = log
        .emit_time
        .and_then(|t| std::time::SystemTime::try_from(t).ok())
        .map(|t| humantime::format_rfc3339_millis(t).to_string())
        .unwrap_or_default();
    let actor = match &log.principal {
        Some(p) if !p.name.is_empty() => format!("cloud:{}:{}", p.r#type, p.name),
        Some(p) if !p.id.is_empty() => format!("cloud:{}:{}", p.r#type, p.id),
        _ => "cloud:unknown".to_owned(),
    };
    let details = log
        .raw_details
        .as_ref()
        .and_then(|d| serde_json::to_string(d).ok())
        .unwrap_or_default();
    let outcome = if log.status.is_empty() {
        "unknown".to_owned()
    } else {
        log.status.to_lowercase()
    };
    let mut detail = details;
    if !log.async_operation_id.is_empty() {
        detail = format!("operation {}: {detail}", log.async_operation_id);
    }
    AuditRecord::new(
        format!("cloud:{}", log.log_id),
        time,
        actor,
        format!("cloud.{}", log.operation),
        format!("account/{account}"),
        outcome,
    )
    .detail(detail)
    .bounded()
}
pub use plinth_identity::SecretSource;

/// The tag Plinth puts on the namespaces it creates: it changes and deletes no others.
const MANAGED_TAG: &str = "managed-by";
const MANAGER: &str = "plinth";
/// Reads of a namespace that is still changing before a call gives up (and is retried).
const SETTLE_ROUNDS: usize = 60;
/// How many times a mutation is planned again after losing a `resource_version` race.
const CONFLICT_RETRIES: usize = 5;
/// Access writes of one run in flight at once: each is an operation that takes a while.
const ACCESS_WRITES_AT_ONCE: usize = 8;
/// Past this many principals, the turns nobody holds are forgotten.
const PRUNE_TURNS_ABOVE: usize = 1024;
/// Pages of one listing at most: 1,000 × 1,000 principals.
const MAX_PAGES: usize = 1000;
/// The most Cloud serves in one page.
const PAGE_SIZE: i32 = 1000;

/// A Temporal Cloud account, as `[backend] kind = "cloud"` configures it.
#[derive(Clone, Debug)]
pub struct CloudSettings {
    /// The Ops API, `https://saas-api.tmprl.cloud:443` on real Cloud.
    pub endpoint: String,
    /// The account id: namespaces are named `<name>.<account>`.
    pub account: String,
    /// Where the API key is read from.
    pub api_key: SecretSource,
    /// PEM CA bundle namespaces accept client certificates from ([`UpstreamAuth::Mtls`]).
    pub accepted_client_ca: Vec<u8>,
    /// Whether namespaces also accept API keys.
    pub api_key_auth: bool,
    /// The codec server Cloud's Web UI decrypts through (`https://…`), if any.
    pub codec_endpoint: Option<String>,
    /// How long one operation may run before the call gives up (and is retried).
    pub operation_timeout: Duration,
    /// Invite people a policy grants access who are not users of the account yet (Cloud
    /// e-mails them); otherwise they are reported.
    pub invite_users: bool,
    /// How `plinth proxy` reaches the namespaces.
    pub upstream: UpstreamAuth,
    /// Where Cloud exports the closed workflows of namespaces with `spec.export.enabled`.
    pub export_sink: Option<CloudExportSink>,
}

/// An S3 bucket Temporal Cloud's export writes to, through a role it assumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudExportSink {
    /// The bucket's name.
    pub bucket: String,
    /// Its AWS region.
    pub region: String,
    /// The IAM role Cloud assumes to write there.
    pub role: String,
    /// The AWS account holding the bucket and the role.
    pub aws_account_id: String,
    /// The KMS key the bucket encrypts with, if any.
    pub kms_arn: Option<String>,
}

/// The name of the export sink Plinth gives each namespace.
const EXPORT_SINK: &str = "plinth";

/// Whom an API key belongs to, as `GetCurrentIdentity` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudPrincipal {
    /// `user <email>` or `service account <name>`.
    pub description: String,
    /// The service account's name, when a service account owns the key.
    pub service_account: Option<String>,
    /// Its role on the whole account.
    pub account_role: Role,
}

impl CloudPrincipal {
    /// Whether the account role reaches namespaces the principal was not given: owner and
    /// admin reach every one, a developer those it creates.
    pub fn reaches_beyond_its_namespaces(&self) -> bool {
        matches!(
            self.account_role,
            Role::Owner | Role::Admin | Role::Developer
        )
    }
}

impl std::fmt::Display for CloudPrincipal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// Who the key `ops` calls with belongs to.
async fn principal_of(ops: &Ops) -> Result<CloudPrincipal, BackendError> {
    let response = ops
        .call("GetCurrentIdentity", |mut client| async move {
            client
                .get_current_identity(GetCurrentIdentityRequest {})
                .await
        })
        .await?
        .into_inner();
    let role = |access: Option<Access>| {
        access
            .and_then(|a| a.account_access)
            .and_then(|a| Role::try_from(a.role).ok())
            .unwrap_or(Role::Unspecified)
    };
    Ok(match response.principal {
        Some(Principal::User(user)) => {
            let spec = user.spec.unwrap_or_default();
            CloudPrincipal {
                description: format!("user {}", spec.email),
                service_account: None,
                account_role: role(spec.access),
            }
        }
        Some(Principal::ServiceAccount(account)) => {
            let spec = account.spec.unwrap_or_default();
            CloudPrincipal {
                description: format!("service account {}", spec.name),
                service_account: Some(spec.name),
                account_role: role(spec.access),
            }
        }
        None => CloudPrincipal {
            description: "an unnamed principal".into(),
            service_account: None,
            account_role: Role::Unspecified,
        },
    })
}

/// Refuses a key for `plinth proxy` to reach namespaces with that is not service account
/// `expected`'s, or whose owner's account role reaches namespaces beyond those Plinth gives
/// it (such as the Ops API's own key). Asks the Ops API at `endpoint`.
pub async fn check_proxy_key(
    endpoint: &str,
    key: SecretSource,
    expected: &str,
) -> Result<(), BackendError> {
    let owner = principal_of(&Ops::new(endpoint, key)?).await.map_err(|e| {
        BackendError::Rejected(format!(
            "[backend] upstream_api_key: Temporal Cloud would not say whose key it is: {e}"
        ))
    })?;
    if owner.service_account.as_deref() != Some(expected) {
        return Err(BackendError::Rejected(format!(
            "[backend] upstream_api_key: the key belongs to {owner}, not to service account \
             {expected} (upstream_service_account), which Plinth gives access to namespaces"
        )));
    }
    if owner.reaches_beyond_its_namespaces() {
        return Err(BackendError::Rejected(format!(
            "[backend] upstream_api_key: {owner} has account role {:?}, which reaches \
             namespaces Plinth did not give it; give the proxy a service account with the read \
             role",
            owner.account_role
        )));
    }
    Ok(())
}

/// How `plinth proxy` reaches Cloud namespaces, which decides the endpoint Plinth records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamAuth {
    /// mTLS, with certificates from Plinth's upstream CA: the namespaces' mTLS endpoint.
    Mtls,
    /// An API key of this service account: the namespaces' API-key endpoint. Plinth gives
    /// the account write on every namespace it manages and keeps it out of access runs.
    ApiKey {
        /// The service account's name.
        service_account: String,
    },
}

/// Namespaces and access on Temporal Cloud.
#[derive(Debug)]
pub struct Cloud {
    ops: Ops,
    settings: CloudSettings,
    /// Region ids `GetRegions` listed, read once.
    regions: tokio::sync::OnceCell<Vec<String>>,
    /// The id of the proxy's service account ([`UpstreamAuth::ApiKey`]), once found.
    proxy_account: std::sync::Mutex<Option<String>>,
    /// One access write at a time per user or service account in this process: access runs
    /// of different namespaces change the same people, and each write needs the version the
    /// one before it left.
    principal_turns: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Cloud {
    /// A backend for the account `settings` names; connects on first use.
    pub fn new(settings: CloudSettings) -> Result<Self, BackendError> {
        Ok(Self {
            ops: Ops::new(&settings.endpoint, settings.api_key.clone())?,
            settings,
            regions: tokio::sync::OnceCell::new(),
            proxy_account: std::sync::Mutex::default(),
            principal_turns: std::sync::Mutex::default(),
        })
    }

    /// Who the API key belongs to (`GetCurrentIdentity`); a missing or refused key is
    /// `Rejected` with what to fix.
    pub async fn identity(&self) -> Result<CloudPrincipal, BackendError> {
        principal_of(&self.ops).await
    }

    /// Whether the proxy can be given access: the service account its API key belongs to
    /// exists ([`UpstreamAuth::ApiKey`]).
    pub async fn check_upstream(&self) -> Result<(), BackendError> {
        self.proxy_identity().await.map(drop)
    }

    /// Cloud's name of Plinth namespace `name`.
    pub fn full_name(&self, name: &str) -> String {
        format!("{name}.{}", self.settings.account)
    }

    async fn get(&self, name: &str) -> Result<Option<Namespace>, BackendError> {
        let request = GetNamespaceRequest {
            namespace: self.full_name(name),
        };
        let response = self
            .ops
            .found("GetNamespace", &mut |mut client| {
                let request = request.clone();
                async move { client.get_namespace(request).await }
            })
            .await?;
        Ok(response
            .and_then(|r| r.namespace)
            .filter(|n| n.state != ResourceState::Deleted as i32))
    }

    /// The namespace once no operation runs on it (finishing what a previous attempt, or
    /// anyone, started); `None` when it does not exist.
    async fn settled(&self, name: &str) -> Result<Option<Namespace>, BackendError> {
        if let Some(operation) = progress::resumed() {
            self.wait_for(&operation).await?;
        }
        for round in 0..SETTLE_ROUNDS {
            if round > 0 {
                // The operation ended but the namespace has not caught up yet.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let Some(namespace) = self.get(name).await? else {
                return Ok(None);
            };
            if namespace.tags.get(MANAGED_TAG).map(String::as_str) != Some(MANAGER) {
                return Err(BackendError::Rejected(format!(
                    "Temporal Cloud namespace {} was not created by Plinth (no tag \
                     {MANAGED_TAG}={MANAGER}): Plinth takes over no namespace it did not create",
                    namespace.namespace
                )));
            }
            match ResourceState::try_from(namespace.state) {
                // A failed update leaves the namespace usable; the next update may succeed.
                Ok(ResourceState::Active | ResourceState::UpdateFailed) => {
                    return Ok(Some(namespace));
                }
                Ok(
                    ResourceState::Activating | ResourceState::Updating | ResourceState::Deleting,
                ) => {
                    if !namespace.async_operation_id.is_empty() {
                        self.wait_for(&namespace.async_operation_id).await?;
                    }
                }
                Ok(state) => {
                    return Err(BackendError::Rejected(format!(
                        "Temporal Cloud reports namespace {} as {}",
                        namespace.namespace,
                        state_name(state)
                    )));
                }
                Err(_) => {
                    return Err(BackendError::Rejected(format!(
                        "Temporal Cloud reports namespace {} in state {}, which Plinth does not know",
                        namespace.namespace, namespace.state
                    )));
                }
            }
        }
        Err(BackendError::Unavailable(format!(
            "Temporal Cloud namespace {} is still changing after {SETTLE_ROUNDS} rounds",
            self.full_name(name)
        )))
    }

    /// Waits for operation `id`, one that may be gone or have failed already: what matters
    /// after it is the state it left, which the caller reads next.
    async fn wait_for(&self, id: &str) -> Result<(), BackendError> {
        match self.ops.operation(id).await? {
            Some(operation) => match self
                .ops
                .wait(operation, self.settings.operation_timeout)
                .await
            {
                Err(BackendError::Rejected(reason)) => {
                    tracing::warn!(%reason, "an earlier Temporal Cloud operation failed");
                    Ok(())
                }
                other => other,
            },
            None => Ok(()),
        }
    }

    /// Brings namespace `name` to what `plan` makes of its current spec: reads it, plans,
    /// and sends the update with the version it planned from; a lost race plans again.
    async fn mutate(
        &self,
        name: &str,
        plan: impl Fn(&CloudSpec) -> Result<CloudSpec, BackendError>,
    ) -> Result<(), BackendError> {
        for _ in 0..CONFLICT_RETRIES {
            let namespace = self.settled(name).await?.ok_or_else(|| {
                BackendError::Rejected(format!(
                    "Temporal Cloud has no namespace {}",
                    self.full_name(name)
                ))
            })?;
            let current = namespace.spec.clone().unwrap_or_default();
            let desired = plan(&current)?;
            if desired == current {
                return Ok(());
            }
            let request = UpdateNamespaceRequest {
                namespace: namespace.namespace.clone(),
                // The plan is in the id: a retry of a failed update with a corrected spec is
                // a new operation, not the failed one answered again.
                async_operation_id: operation_id(
                    "update",
                    &namespace.namespace,
                    &format!("{}\0{}", namespace.resource_version, fingerprint(&desired)),
                ),
                spec: Some(desired),
                resource_version: namespace.resource_version.clone(),
            };
            let result = self
                .ops
                .call_status("UpdateNamespace", &mut |mut client| {
                    let request = request.clone();
                    async move { client.update_namespace(request).await }
                })
                .await?;
            match result {
                Ok(response) => return self.finish(response.into_inner().async_operation).await,
                Err(status) if lost_race(&status) => continue,
                Err(status) => return Err(ops::classify("UpdateNamespace", status)),
            }
        }
        Err(BackendError::Unavailable(format!(
            "namespace {} kept changing under Plinth's update ({CONFLICT_RETRIES} tries)",
            self.full_name(name)
        )))
    }

    async fn finish(&self, operation: Option<AsyncOperation>) -> Result<(), BackendError> {
        match operation {
            Some(operation) => {
                self.ops
                    .wait(operation, self.settings.operation_timeout)
                    .await
            }
            None => Ok(()),
        }
    }

    /// The spec a new namespace is created with.
    async fn create_spec(&self, spec: &NamespaceSpec) -> Result<CloudSpec, BackendError> {
        let available = self.regions().await?;
        let mut replicas = Vec::new();
        for region in &spec.regions {
            let id = available
                .iter()
                .find(|id| *id == region || id.ends_with(&format!("-{region}")))
                .ok_or_else(|| {
                    BackendError::Rejected(format!(
                        "spec.regions: {region:?} is not a Temporal Cloud region (available: {})",
                        available.join(", ")
                    ))
                })?;
            replicas.push(ReplicaSpec { region: id.clone() });
        }
        if replicas.is_empty() {
            return Err(BackendError::Rejected(
                "spec.regions: Temporal Cloud needs a region".into(),
            ));
        }
        let base = CloudSpec {
            name: spec.name.clone(),
            replicas,
            ..Default::default()
        };
        self.desired(&base, spec)
    }

    /// `current` with everything Plinth decides set from `spec` and the configuration, and
    /// everything else (certificate filters, connectivity, capacity…) left as it is.
    fn desired(
        &self,
        current: &CloudSpec,
        spec: &NamespaceSpec,
    ) -> Result<CloudSpec, BackendError> {
        let mut desired = self.platform_settings(current);
        desired.retention_days = spec.retention_days;
        desired.lifecycle = Some(LifecycleSpec {
            enable_delete_protection: !spec.allow_deletion,
        });
        desired.search_attributes =
            merged_attributes(&current.search_attributes, &spec.search_attributes)?;
        Ok(desired)
    }

    /// `current` with the settings the configuration decides: accepted CA, API key auth, the
    /// codec server.
    fn platform_settings(&self, current: &CloudSpec) -> CloudSpec {
        let mut desired = current.clone();
        let filters = current
            .mtls_auth
            .as_ref()
            .map(|m| m.certificate_filters.clone())
            .unwrap_or_default();
        // A proxy that uses an API key leaves no client certificate any use: none is accepted.
        let mtls = self.settings.upstream == UpstreamAuth::Mtls;
        desired.mtls_auth = Some(MtlsAuthSpec {
            accepted_client_ca: if mtls {
                self.settings.accepted_client_ca.clone()
            } else {
                Vec::new()
            },
            certificate_filters: filters,
            enabled: mtls,
            ..Default::default()
        });
        desired.api_key_auth = Some(ApiKeyAuthSpec {
            enabled: self.settings.api_key_auth,
        });
        desired.codec_server =
            self.settings
                .codec_endpoint
                .as_ref()
                .map(|endpoint| CodecServerSpec {
                    endpoint: endpoint.clone(),
                    pass_access_token: true,
                    ..Default::default()
                });
        desired
    }

    async fn regions(&self) -> Result<&Vec<String>, BackendError> {
        self.regions
            .get_or_try_init(|| async {
                let response = self
                    .ops
                    .call("GetRegions", |mut client| async move {
                        client.get_regions(GetRegionsRequest {}).await
                    })
                    .await?
                    .into_inner();
                Ok(response.regions.into_iter().map(|r| r.id).collect())
            })
            .await
    }

    /// Everyone with access to `name`: people as `user:<email>` and service accounts as
    /// `app:<name>`, with their ids and versions.
    async fn assignments(&self, name: &str) -> Result<BTreeMap<String, Assignee>, BackendError> {
        let namespace = self.full_name(name);
        let mut found = BTreeMap::new();
        let mut token = String::new();
        let mut pages = Pages::default();
        loop {
            let request = GetUserNamespaceAssignmentsRequest {
                namespace: namespace.clone(),
                page_size: PAGE_SIZE,
                page_token: token.clone(),
            };
            let page = self
                .ops
                .call("GetUserNamespaceAssignments", |mut client| {
                    let request = request.clone();
                    async move { client.get_user_namespace_assignments(request).await }
                })
                .await?
                .into_inner();
            for user in page.users.into_iter().filter(|u| !u.inherited_access) {
                let permission = user.namespace_access.map_or(0, |a| a.permission);
                found.insert(
                    format!("user:{}", user.email.to_ascii_lowercase()),
                    Assignee {
                        kind: Kind::User,
                        id: user.id,
                        version: user.resource_version,
                        permission,
                    },
                );
            }
            match pages.next("GetUserNamespaceAssignments", page.next_page_token)? {
                Some(next) => token = next,
                None => break,
            }
        }
        let mut pages = Pages::default();
        token = String::new();
        loop {
            let request = GetServiceAccountNamespaceAssignmentsRequest {
                namespace: namespace.clone(),
                page_size: PAGE_SIZE,
                page_token: token.clone(),
            };
            let page = self
                .ops
                .call("GetServiceAccountNamespaceAssignments", |mut client| {
                    let request = request.clone();
                    async move {
                        client
                            .get_service_account_namespace_assignments(request)
                            .await
                    }
                })
                .await?
                .into_inner();
            for account in page
                .service_accounts
                .into_iter()
                .filter(|a| !a.inherited_access)
            {
                let permission = account.namespace_access.map_or(0, |a| a.permission);
                found.insert(
                    format!("app:{}", account.name),
                    Assignee {
                        kind: Kind::ServiceAccount,
                        id: account.id,
                        version: account.resource_version,
                        permission,
                    },
                );
            }
            match pages.next(
                "GetServiceAccountNamespaceAssignments",
                page.next_page_token,
            )? {
                Some(next) => token = next,
                None => break,
            }
        }
        Ok(found)
    }

    /// The Cloud principal `identity` names, when it has no access to the namespace yet:
    /// people are looked up by e-mail, apps among the account's service `accounts`.
    async fn find(
        &self,
        identity: &str,
        accounts: &ServiceAccounts,
    ) -> Result<Assignee, BackendError> {
        if let Some(email) = identity.strip_prefix("user:") {
            let request = GetUsersRequest {
                email: email.to_owned(),
                ..Default::default()
            };
            let users = self
                .ops
                .call("GetUsers", |mut client| {
                    let request = request.clone();
                    async move { client.get_users(request).await }
                })
                .await?
                .into_inner()
                .users;
            let user = users.into_iter().next().ok_or_else(|| {
                BackendError::Rejected(format!(
                    "{email} is not a user of the Temporal Cloud account {}",
                    self.settings.account
                ))
            })?;
            return Ok(Assignee {
                kind: Kind::User,
                id: user.id,
                version: user.resource_version,
                permission: 0,
            });
        }
        let name = identity.strip_prefix("app:").unwrap_or(identity);
        accounts
            .named(name, &self.settings.account)
            .cloned()
            .map_err(|why| BackendError::Rejected(format!("app {name}: {why}")))
    }

    async fn service_accounts(&self) -> Result<ServiceAccounts, BackendError> {
        let mut found = ServiceAccounts::default();
        let mut token = String::new();
        let mut pages = Pages::default();
        loop {
            let request = GetServiceAccountsRequest {
                page_size: PAGE_SIZE,
                page_token: token.clone(),
            };
            let page = self
                .ops
                .call("GetServiceAccounts", |mut client| {
                    let request = request.clone();
                    async move { client.get_service_accounts(request).await }
                })
                .await?
                .into_inner();
            for account in page.service_account {
                let name = account.spec.map(|s| s.name).unwrap_or_default();
                let assignee = Assignee {
                    kind: Kind::ServiceAccount,
                    id: account.id,
                    version: account.resource_version,
                    permission: 0,
                };
                if found.by_name.insert(name.clone(), assignee).is_some() {
                    found.ambiguous.insert(name);
                }
            }
            match pages.next("GetServiceAccounts", page.next_page_token)? {
                Some(next) => token = next,
                None => return Ok(found),
            }
        }
    }

    /// Sets `who`'s permission on namespace `name` (unspecified: none), re-reading its
    /// version after a lost race.
    async fn set_access(
        &self,
        name: &str,
        mut who: Assignee,
        permission: Permission,
    ) -> Result<(), BackendError> {
        let namespace = self.full_name(name);
        let _turn = self.turn_of(&who.id).await;
        for _ in 0..CONFLICT_RETRIES {
            let access = Some(NamespaceAccess {
                permission: permission as i32,
                ..Default::default()
            });
            let operation_id = operation_id(
                &format!("access-{}", permission.as_str_name()),
                &format!("{namespace}/{}", who.id),
                &who.version,
            );
            let result = match who.kind {
                Kind::User => {
                    let request = SetUserNamespaceAccessRequest {
                        namespace: namespace.clone(),
                        user_id: who.id.clone(),
                        access,
                        resource_version: who.version.clone(),
                        async_operation_id: operation_id,
                    };
                    self.ops
                        .call_status("SetUserNamespaceAccess", &mut |mut client| {
                            let request = request.clone();
                            async move { client.set_user_namespace_access(request).await }
                        })
                        .await?
                        .map(|r| r.into_inner().async_operation)
                }
                Kind::ServiceAccount => {
                    let request = SetServiceAccountNamespaceAccessRequest {
                        namespace: namespace.clone(),
                        service_account_id: who.id.clone(),
                        access,
                        resource_version: who.version.clone(),
                        async_operation_id: operation_id,
                    };
                    self.ops
                        .call_status("SetServiceAccountNamespaceAccess", &mut |mut client| {
                            let request = request.clone();
                            async move { client.set_service_account_namespace_access(request).await }
                        })
                        .await?
                        .map(|r| r.into_inner().async_operation)
                }
            };
            match result {
                Ok(operation) => return self.finish(operation).await,
                Err(status) if lost_race(&status) => {
                    // Runs of other namespaces change the same person: spread the retries.
                    tokio::time::sleep(Duration::from_millis(50).mul_f64(0.2 + jitter())).await;
                    who.version = self.version_of(&who).await?;
                }
                Err(status) => return Err(ops::classify("SetNamespaceAccess", status)),
            }
        }
        Err(BackendError::Unavailable(format!(
            "{} kept changing under Plinth's access update ({CONFLICT_RETRIES} tries)",
            who.id
        )))
    }

    /// Invites `email` to the account with `permission` on namespace `name`: one mutation.
    async fn invite(
        &self,
        name: &str,
        email: &str,
        permission: Permission,
    ) -> Result<(), BackendError> {
        let namespace = self.full_name(name);
        let access = Access {
            namespace_accesses: [(
                namespace.clone(),
                NamespaceAccess {
                    permission: permission as i32,
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        };
        let request = CreateUserRequest {
            spec: Some(UserSpec {
                email: email.to_owned(),
                access: Some(access),
            }),
            async_operation_id: operation_id("invite", &format!("{namespace}/{email}"), &attempt()),
        };
        let result = self
            .ops
            .call_status("CreateUser", &mut |mut client| {
                let request = request.clone();
                async move { client.create_user(request).await }
            })
            .await?;
        match result {
            Ok(response) => self.finish(response.into_inner().async_operation).await,
            // Invited meanwhile (or by an attempt that died): give the user the access.
            Err(status) if status.code() == Code::AlreadyExists => {
                let who = self
                    .find(&format!("user:{email}"), &ServiceAccounts::default())
                    .await?;
                self.set_access(name, who, permission).await
            }
            Err(status) => Err(ops::classify("CreateUser", status)),
        }
    }

    /// Waits for the turn of principal `id` to be written; the map keeps only principals
    /// someone is writing or waiting for, once it grows.
    async fn turn_of(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = {
            let mut turns = self
                .principal_turns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if turns.len() > PRUNE_TURNS_ABOVE {
                turns.retain(|_, turn| Arc::strong_count(turn) > 1);
            }
            turns.entry(id.to_owned()).or_default().clone()
        };
        turn.lock_owned().await
    }

    async fn version_of(&self, who: &Assignee) -> Result<String, BackendError> {
        match who.kind {
            Kind::User => {
                let request = GetUserRequest {
                    user_id: who.id.clone(),
                };
                let user = self
                    .ops
                    .call("GetUser", |mut client| {
                        let request = request.clone();
                        async move { client.get_user(request).await }
                    })
                    .await?
                    .into_inner()
                    .user
                    .unwrap_or_default();
                if !user.async_operation_id.is_empty() {
                    self.wait_for(&user.async_operation_id).await?;
                }
                Ok(user.resource_version)
            }
            Kind::ServiceAccount => Ok(self
                .service_account(&who.id)
                .await?
                .unwrap_or_default()
                .resource_version),
        }
    }
}

/// The account's service accounts by name, and the names more than one bears.
#[derive(Default)]
struct ServiceAccounts {
    by_name: HashMap<String, Assignee>,
    ambiguous: std::collections::HashSet<String>,
}

impl ServiceAccounts {
    /// The one service account named `name` in `account`; why there is none to take.
    fn named(&self, name: &str, account: &str) -> Result<&Assignee, String> {
        if self.ambiguous.contains(name) {
            return Err(format!(
                "the Temporal Cloud account {account} has several service accounts named {name}: \
                 Plinth cannot tell which is meant"
            ));
        }
        self.by_name.get(name).ok_or_else(|| {
            format!("the Temporal Cloud account {account} has no service account named {name}")
        })
    }
}

/// The page tokens of one listing: one repeated, or more pages than any account has, means
/// the listing would not end.
#[derive(Default)]
struct Pages {
    seen: std::collections::HashSet<String>,
}

impl Pages {
    /// The token of the next page, or `None` after the last.
    fn next(&mut self, method: &str, token: String) -> Result<Option<String>, BackendError> {
        if token.is_empty() {
            return Ok(None);
        }
        if self.seen.len() >= MAX_PAGES || !self.seen.insert(token.clone()) {
            return Err(BackendError::Unavailable(format!(
                "Temporal Cloud {method}: the listing does not end (a page token repeated, or \
                 over {MAX_PAGES} pages)"
            )));
        }
        Ok(Some(token))
    }
}

/// A user or service account and what it holds on one namespace.
#[derive(Clone, Debug)]
struct Assignee {
    kind: Kind,
    id: String,
    version: String,
    permission: i32,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    User,
    ServiceAccount,
}

/// Another writer changed the resource since it was read, or an operation still runs on it.
fn lost_race(status: &Status) -> bool {
    matches!(status.code(), Code::Aborted | Code::FailedPrecondition)
}

/// Cloud's namespace names: 2-39 lowercase letters, digits and hyphens, a letter first.
fn could_be_cloud_namespace(name: &str) -> bool {
    let bytes = name.as_bytes();
    (2..=39).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// `spec` in a form equal specs share (its maps in order).
fn fingerprint(spec: &CloudSpec) -> String {
    let mut rest = spec.clone();
    let attributes: BTreeMap<String, i32> = rest.search_attributes.drain().collect();
    #[allow(deprecated)]
    let legacy: BTreeMap<String, String> = rest.custom_search_attributes.drain().collect();
    format!("{rest:?}{attributes:?}{legacy:?}")
}

/// What tells creations apart: a resource has no version before it exists, and one deleted
/// and created again must not be taken for its earlier creation. A second create of the same
/// name is refused as existing, so a retry cannot create twice.
fn attempt() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

/// The same plan from the same version gets the same id, which Cloud runs once.
fn operation_id(action: &str, resource: &str, version: &str) -> String {
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{action}\0{resource}\0{version}").bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("plinth-{}-{hash:016x}", action.to_lowercase())
}

fn state_name(state: ResourceState) -> String {
    state
        .as_str_name()
        .trim_start_matches("RESOURCE_STATE_")
        .to_lowercase()
        .replace('_', " ")
}

/// `current` plus what `wanted` (name to type name) lacks; Cloud cannot remove attributes.
fn merged_attributes<'a>(
    current: &HashMap<String, i32>,
    wanted: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<HashMap<String, i32>, BackendError> {
    let mut merged = current.clone();
    for (name, kind) in wanted {
        merged
            .entry(name.clone())
            .or_insert(attribute_type_value(kind)?);
    }
    Ok(merged)
}

fn level_of(permission: i32) -> Option<AccessLevel> {
    match Permission::try_from(permission).ok()? {
        Permission::Read => Some(AccessLevel::Read),
        Permission::Write => Some(AccessLevel::Write),
        Permission::Admin => Some(AccessLevel::Admin),
        Permission::Unspecified => None,
    }
}

fn permission_of(level: AccessLevel) -> Permission {
    match level {
        AccessLevel::Read => Permission::Read,
        AccessLevel::Write => Permission::Write,
        AccessLevel::Admin => Permission::Admin,
    }
}

#[async_trait::async_trait]
impl NamespaceBackend for Cloud {
    async fn describe(&self, name: &str) -> Result<Option<ObservedNamespace>, BackendError> {
        let Some(namespace) = self.settled(name).await? else {
            return Ok(None);
        };
        let spec = namespace.spec.unwrap_or_default();
        let configured = self.platform_settings(&spec);
        let mut platform_drift = Vec::new();
        if configured.mtls_auth != spec.mtls_auth {
            platform_drift.push(match self.settings.upstream {
                UpstreamAuth::Mtls => "accepted client CA → Plinth's".to_owned(),
                UpstreamAuth::ApiKey { .. } => "client certificates → refused".to_owned(),
            });
        }
        if configured.api_key_auth != spec.api_key_auth {
            platform_drift.push(format!(
                "API key auth → {}",
                if self.settings.api_key_auth {
                    "on"
                } else {
                    "off"
                }
            ));
        }
        if configured.codec_server != spec.codec_server {
            platform_drift.push(format!(
                "codec server {:?} → {:?}",
                spec.codec_server.map(|c| c.endpoint).unwrap_or_default(),
                self.settings.codec_endpoint.clone().unwrap_or_default()
            ));
        }
        if let Some(proxy) = self.proxy_access(name).await?
            && !proxy_can_write(proxy.permission)
        {
            platform_drift.push(format!(
                "write for {}, the proxy's service account",
                self.proxy_account_name().unwrap_or_default()
            ));
        }
        Ok(Some(ObservedNamespace {
            retention_days: spec.retention_days,
            description: None,
            owner_email: None,
            search_attributes: spec
                .search_attributes
                .iter()
                .map(|(name, kind)| (name.clone(), attribute_type_name(*kind).to_owned()))
                .collect(),
            delete_protection: Some(spec.lifecycle.is_some_and(|l| l.enable_delete_protection)),
            platform_drift,
        }))
    }

    async fn register(&self, spec: &NamespaceSpec) -> Result<(), BackendError> {
        // A namespace the proxy could not be given access to is not worth creating.
        self.check_upstream().await?;
        if self.settled(&spec.name).await?.is_none() {
            self.create(spec).await?;
        }
        self.ensure_proxy_access(&spec.name).await
    }

    async fn update(&self, spec: &NamespaceSpec) -> Result<(), BackendError> {
        self.mutate(&spec.name, |current| self.desired(current, spec))
            .await?;
        self.ensure_proxy_access(&spec.name).await
    }

    async fn add_search_attributes(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        self.mutate(name, |current| {
            let mut desired = current.clone();
            desired.search_attributes = merged_attributes(&current.search_attributes, attributes)?;
            Ok(desired)
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        // Plinth deletes only what the spec allows to; Cloud's protection follows the spec,
        // and is lifted first should the delete outrun the reconcile that lifts it.
        self.mutate(name, |current| {
            let mut desired = current.clone();
            desired.lifecycle = Some(LifecycleSpec {
                enable_delete_protection: false,
            });
            Ok(desired)
        })
        .await
        .or_else(|e| match e {
            BackendError::Rejected(m) if m.contains("has no namespace") => Ok(()),
            e => Err(e),
        })?;
        for _ in 0..CONFLICT_RETRIES {
            let Some(namespace) = self.settled(name).await? else {
                return Ok(());
            };
            let request = DeleteNamespaceRequest {
                namespace: namespace.namespace.clone(),
                resource_version: namespace.resource_version.clone(),
                async_operation_id: operation_id(
                    "delete",
                    &namespace.namespace,
                    &namespace.resource_version,
                ),
            };
            let result = self
                .ops
                .call_status("DeleteNamespace", &mut |mut client| {
                    let request = request.clone();
                    async move { client.delete_namespace(request).await }
                })
                .await?;
            match result {
                Ok(response) => return self.finish(response.into_inner().async_operation).await,
                Err(status) if status.code() == Code::NotFound => return Ok(()),
                Err(status) if lost_race(&status) => continue,
                Err(status) => return Err(ops::classify("DeleteNamespace", status)),
            }
        }
        Err(BackendError::Unavailable(format!(
            "namespace {} kept changing under Plinth's delete",
            self.full_name(name)
        )))
    }

    fn temporal_name(&self, name: &str) -> String {
        self.full_name(name)
    }

    /// The namespace's export sink `plinth`, made to match `[backend] export_sink` and the spec.
    async fn export_by_backend(&self, name: &str, enabled: bool) -> Result<bool, BackendError> {
        let Some(sink) = &self.settings.export_sink else {
            if enabled {
                return Err(BackendError::Rejected(
                    "spec.export.enabled: on Temporal Cloud, Cloud exports histories itself to \
                     an S3 bucket: set [backend] export_bucket, export_region, export_role and \
                     export_aws_account_id"
                        .into(),
                ));
            }
            return Ok(true);
        };
        let namespace = self.full_name(name);
        let desired = ExportSinkSpec {
            name: EXPORT_SINK.into(),
            enabled,
            s3: Some(S3Spec {
                role_name: sink.role.clone(),
                bucket_name: sink.bucket.clone(),
                region: sink.region.clone(),
                kms_arn: sink.kms_arn.clone().unwrap_or_default(),
                aws_account_id: sink.aws_account_id.clone(),
            }),
            gcs: None,
        };
        let request = GetNamespaceExportSinkRequest {
            namespace: namespace.clone(),
            name: EXPORT_SINK.into(),
        };
        let current = self
            .ops
            .found("GetNamespaceExportSink", &mut |mut client| {
                let request = request.clone();
                async move { client.get_namespace_export_sink(request).await }
            })
            .await?
            .and_then(|r| r.sink);
        if let Some(current) = &current {
            let state = ResourceState::try_from(current.state).unwrap_or_default();
            if matches!(
                state,
                ResourceState::Activating | ResourceState::Updating | ResourceState::Deleting
            ) {
                return Err(BackendError::Unavailable(format!(
                    "export sink of {namespace}: {} by another operation; waiting for it",
                    state_name(state)
                )));
            }
            let failed = matches!(
                state,
                ResourceState::ActivationFailed | ResourceState::UpdateFailed
            );
            let healthy = current.health == export_sink::Health::Ok as i32
                || current.health == export_sink::Health::Unspecified as i32;
            if current.spec.as_ref() == Some(&desired) && !failed {
                if !healthy && enabled {
                    return Err(BackendError::Rejected(format!(
                        "export sink of {namespace}: Cloud reports it unhealthy: {}",
                        current.error_message
                    )));
                }
                return Ok(true);
            }
        }
        let operation = match current {
            None if !enabled => return Ok(true),
            None => {
                let request = CreateNamespaceExportSinkRequest {
                    async_operation_id: operation_id("CreateExportSink", &namespace, ""),
                    namespace,
                    spec: Some(desired),
                };
                self.ops
                    .call("CreateNamespaceExportSink", |mut client| {
                        let request = request.clone();
                        async move { client.create_namespace_export_sink(request).await }
                    })
                    .await?
                    .into_inner()
                    .async_operation
            }
            Some(current) => {
                let request = UpdateNamespaceExportSinkRequest {
                    async_operation_id: operation_id(
                        "UpdateExportSink",
                        &namespace,
                        &current.resource_version,
                    ),
                    namespace,
                    spec: Some(desired),
                    resource_version: current.resource_version,
                };
                self.ops
                    .call("UpdateNamespaceExportSink", |mut client| {
                        let request = request.clone();
                        async move { client.update_namespace_export_sink(request).await }
                    })
                    .await?
                    .into_inner()
                    .async_operation
            }
        };
        if let Some(operation) = operation {
            self.ops
                .wait(operation, self.settings.operation_timeout)
                .await?;
        }
        Ok(true)
    }

    fn has_long_operations(&self) -> bool {
        true
    }

    fn keeps_account_audit(&self) -> bool {
        true
    }

    /// `GetAuditLogs`, a page at a time from the cursor's emit time, keeping what comes after
    /// the cursor in the log's order (emit time, then log id).
    async fn account_audit(
        &self,
        cursor: Option<AccountAuditCursor>,
        max: usize,
    ) -> Result<Option<AccountAudit>, BackendError> {
        let start = cursor
            .as_ref()
            .and_then(|c| humantime::parse_rfc3339(&c.time).ok())
            .map(prost_wkt_types::Timestamp::from);
        let mut audit = AccountAudit {
            records: Vec::new(),
            cursor: cursor.clone(),
        };
        let mut page_token = String::new();
        loop {
            let request = GetAuditLogsRequest {
                page_size: AUDIT_PAGE,
                page_token: page_token.clone(),
                start_time_inclusive: start,
                end_time_exclusive: None,
            };
            let response = self
                .ops
                .call("GetAuditLogs", |mut client| {
                    let request = request.clone();
                    async move { client.get_audit_logs(request).await }
                })
                .await?
                .into_inner();
            for log in response.logs {
                // A record with no time cannot be placed in the log's order, nor the trail.
                let Some(time) = log
                    .emit_time
                    .and_then(|t| std::time::SystemTime::try_from(t).ok())
                else {
                    tracing::warn!(
                        log_id = log.log_id,
                        "Cloud audit log record without a time left out"
                    );
                    continue;
                };
                let at = AccountAuditCursor {
                    time: humantime::format_rfc3339_nanos(time).to_string(),
                    log_id: log.log_id.clone(),
                };
                if cursor.as_ref().is_some_and(|c| at <= *c) {
                    continue;
                }
                if audit.records.len() >= max {
                    return Ok(Some(audit));
                }
                audit.records.push(log_record(&self.settings.account, log));
                audit.cursor = Some(at);
            }
            if response.next_page_token.is_empty() {
                return Ok(Some(audit));
            }
            page_token = response.next_page_token;
        }
    }

    async fn endpoint(&self, name: &str) -> Result<String, BackendError> {
        let namespace = self.get(name).await?.ok_or_else(|| {
            BackendError::Rejected(format!(
                "Temporal Cloud has no namespace {}",
                self.full_name(name)
            ))
        })?;
        let endpoints = namespace.endpoints.unwrap_or_default();
        let (address, kind) = match self.settings.upstream {
            UpstreamAuth::Mtls => (endpoints.mtls_grpc_address, "mTLS"),
            UpstreamAuth::ApiKey { .. } => (endpoints.grpc_address, "API key"),
        };
        if address.is_empty() {
            return Err(BackendError::Rejected(format!(
                "Temporal Cloud namespace {} has no {kind} endpoint, which the proxy reaches it on",
                self.full_name(name)
            )));
        }
        Ok(address)
    }

    /// Accepts the data-path name too (`orders.<account>`): the proxy and the codec server
    /// ask about the namespace that calls name, as Cloud's Web UI does.
    async fn list_access(&self, name: &str) -> Result<BTreeMap<String, AccessLevel>, BackendError> {
        let suffix = format!(".{}", self.settings.account);
        let name = name.strip_suffix(&suffix).unwrap_or(name);
        // Names Cloud cannot hold cost no Ops API call: callers make names up.
        if !could_be_cloud_namespace(name) {
            return Err(BackendError::Rejected(format!(
                "{name:?} cannot name a Temporal Cloud namespace"
            )));
        }
        let proxy = self.proxy_identity().await?;
        Ok(self
            .assignments(name)
            .await?
            .into_iter()
            .filter(|(identity, who)| !is_proxy(proxy.as_ref(), identity, &who.id))
            .filter_map(|(identity, who)| Some((identity, level_of(who.permission)?)))
            .collect())
    }

    /// One read of who has access, then one write per change, a few at once; people not in
    /// the account are reported together after the others are applied.
    async fn apply_access(
        &self,
        name: &str,
        changes: &[AccessChange],
    ) -> Result<u32, BackendError> {
        if changes.is_empty() {
            return Ok(0);
        }
        // Access to a namespace Plinth did not create is not Plinth's to change.
        self.settled(name).await?.ok_or_else(|| {
            BackendError::Rejected(format!(
                "Temporal Cloud has no namespace {}",
                self.full_name(name)
            ))
        })?;
        let proxy = self.proxy_identity().await?;
        let current = self.assignments(name).await?;
        let unknown_app =
            |identity: &String| identity.starts_with("app:") && !current.contains_key(identity);
        let accounts = if changes.iter().any(|c| match c {
            AccessChange::Grant(identity, _) | AccessChange::Change(identity, _) => {
                unknown_app(identity)
            }
            AccessChange::Revoke(_) => false,
        }) {
            self.service_accounts().await?
        } else {
            ServiceAccounts::default()
        };
        type Work<'a> = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Applied, BackendError>> + Send + 'a>,
        >;
        let work: Vec<Work<'_>> = changes
            .iter()
            .map(|change| -> Work<'_> {
                Box::pin(self.apply_change(name, change, &current, &accounts, proxy.as_ref()))
            })
            .collect();
        let outcomes: Vec<Result<Applied, BackendError>> = futures::stream::iter(work)
            .buffer_unordered(ACCESS_WRITES_AT_ONCE)
            .collect()
            .await;
        let mut writes = 0u32;
        let mut missing = Vec::new();
        for outcome in outcomes {
            match outcome? {
                Applied::Wrote => writes += 1,
                Applied::Nothing => {}
                Applied::Missing(why) => missing.push(why),
            }
        }
        if !missing.is_empty() {
            missing.sort();
            return Err(BackendError::Rejected(missing.join("; ")));
        }
        Ok(writes)
    }
}

impl Cloud {
    /// Service account `id`; `None` when Cloud has none.
    async fn service_account(&self, id: &str) -> Result<Option<ServiceAccount>, BackendError> {
        let request = GetServiceAccountRequest {
            service_account_id: id.to_owned(),
        };
        let response = self
            .ops
            .found("GetServiceAccount", &mut |mut client| {
                let request = request.clone();
                async move { client.get_service_account(request).await }
            })
            .await?;
        Ok(response.and_then(|r| r.service_account))
    }

    /// Creates namespace `spec` and waits for the operation.
    async fn create(&self, spec: &NamespaceSpec) -> Result<(), BackendError> {
        let request = CreateNamespaceRequest {
            spec: Some(self.create_spec(spec).await?),
            tags: [(MANAGED_TAG.to_owned(), MANAGER.to_owned())].into(),
            async_operation_id: operation_id("create", &self.full_name(&spec.name), &attempt()),
        };
        let result = self
            .ops
            .call_status("CreateNamespace", &mut |mut client| {
                let request = request.clone();
                async move { client.create_namespace(request).await }
            })
            .await?;
        match result {
            Ok(response) => self.finish(response.into_inner().async_operation).await,
            // Someone else's create, or our own from before a crash: wait for it to settle.
            Err(status) if status.code() == Code::AlreadyExists => {
                self.settled(&spec.name).await.map(drop)
            }
            Err(status) => Err(ops::classify("CreateNamespace", status)),
        }
    }

    /// The name of the service account the proxy's API key belongs to, if it uses one.
    fn proxy_account_name(&self) -> Option<&str> {
        match &self.settings.upstream {
            UpstreamAuth::ApiKey { service_account } => Some(service_account),
            UpstreamAuth::Mtls => None,
        }
    }

    fn cached_proxy_account(&self) -> Option<String> {
        self.proxy_account
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn remember_proxy_account(&self, id: Option<String>) {
        *self
            .proxy_account
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = id;
    }

    /// The id of the one service account named `name`, looked up once.
    async fn proxy_account_id(&self, name: &str) -> Result<String, BackendError> {
        if let Some(id) = self.cached_proxy_account() {
            return Ok(id);
        }
        let accounts = self.service_accounts().await?;
        let id = accounts
            .named(name, &self.settings.account)
            .map_err(|why| {
                BackendError::Rejected(format!("[backend] upstream_service_account: {why}"))
            })?
            .id
            .clone();
        self.remember_proxy_account(Some(id.clone()));
        Ok(id)
    }

    /// How access runs know the proxy's service account: `app:<name>`, and its id (which a
    /// rename keeps); `None` when the proxy uses no API key.
    async fn proxy_identity(&self) -> Result<Option<(String, String)>, BackendError> {
        match self.proxy_account_name() {
            None => Ok(None),
            Some(name) => Ok(Some((
                format!("app:{name}"),
                self.proxy_account_id(name).await?,
            ))),
        }
    }

    /// The proxy's service account, with its permission on namespace `name`; `None` when
    /// the proxy uses no API key. An account that was deleted or renamed since its id was
    /// looked up is looked up by name again: the name may now be another account's.
    async fn proxy_access(&self, name: &str) -> Result<Option<Assignee>, BackendError> {
        let Some(account_name) = self.proxy_account_name() else {
            return Ok(None);
        };
        for _ in 0..2 {
            let id = self.proxy_account_id(account_name).await?;
            let account = match self.service_account(&id).await? {
                Some(account)
                    if account
                        .spec
                        .as_ref()
                        .is_some_and(|s| s.name == account_name) =>
                {
                    account
                }
                _ => {
                    self.remember_proxy_account(None);
                    continue;
                }
            };
            let permission = account
                .spec
                .and_then(|s| s.access)
                .and_then(|a| a.namespace_accesses.get(&self.full_name(name)).cloned())
                .map_or(0, |a| a.permission);
            return Ok(Some(Assignee {
                kind: Kind::ServiceAccount,
                id: account.id,
                version: account.resource_version,
                permission,
            }));
        }
        Err(BackendError::Unavailable(format!(
            "service account {account_name} changed while Plinth read it"
        )))
    }

    /// Gives the proxy's service account write on namespace `name` when it has less.
    async fn ensure_proxy_access(&self, name: &str) -> Result<(), BackendError> {
        match self.proxy_access(name).await? {
            Some(who) if !proxy_can_write(who.permission) => {
                self.set_access(name, who, Permission::Write).await
            }
            _ => Ok(()),
        }
    }
}

/// Whether the principal `identity` (Cloud id `id`) is the proxy's service account, known
/// by `proxy`'s label and id: by either, so a renamed account stays the proxy's.
fn is_proxy(proxy: Option<&(String, String)>, identity: &str, id: &str) -> bool {
    proxy.is_some_and(|(label, proxy_id)| identity == label || id == proxy_id)
}

/// Whether `permission` lets the proxy make every call a caller it admits may make.
fn proxy_can_write(permission: i32) -> bool {
    permission == Permission::Write as i32 || permission == Permission::Admin as i32
}

/// What one access change came to.
enum Applied {
    Wrote,
    Nothing,
    /// The principal is not in the account: why.
    Missing(String),
}

impl Cloud {
    async fn apply_change(
        &self,
        name: &str,
        change: &AccessChange,
        current: &BTreeMap<String, Assignee>,
        accounts: &ServiceAccounts,
        proxy: Option<&(String, String)>,
    ) -> Result<Applied, BackendError> {
        let (identity, permission) = match change {
            AccessChange::Grant(identity, level) | AccessChange::Change(identity, level) => {
                (identity, permission_of(*level))
            }
            AccessChange::Revoke(identity) => (identity, Permission::Unspecified),
        };
        let id = current.get(identity).map_or("", |who| who.id.as_str());
        if is_proxy(proxy, identity, id) {
            return Ok(Applied::Missing(format!(
                "{identity} is the service account the proxy reaches Temporal Cloud with: \
                 Plinth keeps its access itself"
            )));
        }
        let who = match current.get(identity) {
            Some(who) if who.permission == permission as i32 => return Ok(Applied::Nothing),
            Some(who) => who.clone(),
            None if permission == Permission::Unspecified => return Ok(Applied::Nothing),
            None => match self.find(identity, accounts).await {
                Ok(who) => who,
                Err(BackendError::Rejected(_))
                    if self.settings.invite_users && identity.starts_with("user:") =>
                {
                    self.invite(name, identity.trim_start_matches("user:"), permission)
                        .await?;
                    return Ok(Applied::Wrote);
                }
                Err(BackendError::Rejected(why)) => return Ok(Applied::Missing(why)),
                Err(e) => return Err(e),
            },
        };
        self.set_access(name, who, permission).await?;
        Ok(Applied::Wrote)
    }
}

#[cfg(test)]
mod tests;
