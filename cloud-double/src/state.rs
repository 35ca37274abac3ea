//! What the double remembers, and Cloud's rules for changing it. Every mutation is checked
//! first and refused whole (nothing changes), then applied at once with the resource in a
//! transitional state under a new operation, which finishes after a number of polls.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use temporalio_common::protos::temporal::api::cloud::identity::v1::{
    Access, NamespaceAccess, ServiceAccount, ServiceAccountSpec, User, UserSpec, namespace_access,
};
use temporalio_common::protos::temporal::api::cloud::namespace::v1::{
    Endpoints, Namespace, NamespaceSpec,
};
use temporalio_common::protos::temporal::api::cloud::operation::v1::{
    AsyncOperation, async_operation,
};
use temporalio_common::protos::temporal::api::cloud::resource::v1::ResourceState;
use tonic::{Code, Status};

use crate::Settings;
use temporalio_common::protos::temporal::api::cloud::auditlog::v1::{
    LogRecord, Principal as LogPrincipal,
};
use temporalio_common::protos::temporal::api::cloud::namespace::v1::{
    ExportSink, ExportSinkSpec, export_sink,
};

use temporalio_common::protos::temporal::api::cloud::cloudservice::v1::get_current_identity_response::Principal;

/// `google.rpc.RetryInfo`: how long a client should wait before retrying, carried in the
/// details of a `RESOURCE_EXHAUSTED` status.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    /// The wait.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<prost_wkt_types::Duration>,
}

/// The type URL `RetryInfo` travels under in `google.rpc.Status.details`.
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// Whose namespace assignments are asked for.
#[derive(Clone, Copy)]
pub(crate) enum Principals {
    Users,
    ServiceAccounts,
}

/// One principal's access to a namespace: id, e-mail or name, access, version.
pub(crate) struct Assignment {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) access: NamespaceAccess,
    pub(crate) resource_version: String,
}

/// A change made to a namespace from outside the API.
pub(crate) type Edit = Box<dyn FnOnce(&mut Namespace) + Send>;

/// Methods a read permission allows through the API-key endpoint, by name prefix.
const READING_METHODS: [&str; 6] = ["Describe", "Get", "List", "Count", "Scan", "Query"];

/// Cloud's page size when none is asked for, and the most it serves.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub(crate) struct State {
    pub(crate) settings: Settings,
    /// By full name, `<name>.<account>`.
    namespaces: BTreeMap<String, Namespace>,
    /// By id.
    users: BTreeMap<String, User>,
    /// Lowercased e-mail to user id.
    emails: HashMap<String, String>,
    service_accounts: BTreeMap<String, ServiceAccount>,
    /// API keys for the namespaces' endpoint, to the user or service account owning each.
    api_keys: HashMap<String, String>,
    operations: HashMap<String, Operation>,
    next_id: u64,
    version: u64,
    pub(crate) fail_next: Option<String>,
    pub(crate) calls: BTreeMap<String, u64>,
    pub(crate) throttled: u64,
    pub(crate) mutations: u64,
    /// The account's audit log: one record per mutation, in the order made.
    audit_log: Vec<LogRecord>,
    /// Namespaces' export sinks, by namespace full name and sink name.
    export_sinks: BTreeMap<(String, String), ExportSink>,
    /// Applied to a namespace just before the next update of it is checked, as another
    /// writer's change that lands between the caller's read and write.
    pub(crate) interference: Option<Edit>,
    /// Namespaces registered on the backing Temporal ([`Settings::temporal`]).
    served: std::collections::HashSet<String>,
    tokens: f64,
    refilled: Instant,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("namespaces", &self.namespaces.len())
            .field("users", &self.users.len())
            .field("operations", &self.operations.len())
            .finish_non_exhaustive()
    }
}

/// An operation and what finishing it does.
#[derive(Debug)]
struct Operation {
    operation: AsyncOperation,
    polls_left: u32,
    /// Set when the operation is to fail: the reason.
    failure: Option<String>,
    target: Target,
    /// The resource before the mutation, restored when the operation fails.
    before: Option<Before>,
}

#[derive(Debug, Clone)]
enum Target {
    Namespace(String),
    User(String),
    ServiceAccount(String),
    /// A namespace's export sink: namespace full name, sink name.
    ExportSink(String, String),
}

#[derive(Debug)]
enum Before {
    Namespace(Box<Namespace>),
    User(Box<User>),
    ServiceAccount(Box<ServiceAccount>),
}

/// What a mutation is called in `AsyncOperation.operation_type`, and the state its resource
/// takes while it runs.
#[derive(Clone, Copy)]
enum Kind {
    Create,
    Update,
    Delete,
}

impl State {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            tokens: f64::from(settings.burst),
            settings,
            namespaces: BTreeMap::new(),
            users: BTreeMap::new(),
            emails: HashMap::new(),
            service_accounts: BTreeMap::new(),
            api_keys: HashMap::new(),
            operations: HashMap::new(),
            next_id: 1,
            version: 1,
            fail_next: None,
            calls: BTreeMap::new(),
            throttled: 0,
            mutations: 0,
            audit_log: Vec::new(),
            export_sinks: BTreeMap::new(),
            interference: None,
            served: std::collections::HashSet::new(),
            refilled: Instant::now(),
        }
    }

    /// Counts the call and takes a token; `RESOURCE_EXHAUSTED` with a retry delay when none
    /// is left.
    pub(crate) fn admit(&mut self, method: &str) -> Result<(), Status> {
        *self.calls.entry(method.to_owned()).or_default() += 1;
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64()
            * f64::from(self.settings.calls_per_second);
        self.tokens = (self.tokens + refill).min(f64::from(self.settings.burst));
        self.refilled = now;
        if self.tokens < 1.0 {
            self.throttled += 1;
            return Err(exhausted(self.settings.retry_delay));
        }
        self.tokens -= 1.0;
        Ok(())
    }

    pub(crate) fn set_polls_to_complete(&mut self, polls: u32) {
        self.settings.polls_to_complete = polls;
        for operation in self.operations.values_mut() {
            operation.polls_left = operation.polls_left.min(polls.max(1));
        }
    }

    fn full_name(&self, name: &str) -> String {
        format!("{name}.{}", self.settings.account)
    }

    /// The namespace `name` names, short (`orders`) or full (`orders.<account>`).
    pub(crate) fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespace_key(name).map(|key| &self.namespaces[&key])
    }

    /// As the API reads names: only the full name.
    pub(crate) fn namespace_by_id(&self, id: &str) -> Option<&Namespace> {
        self.namespaces.get(id)
    }

    pub(crate) fn namespaces(&self) -> Vec<Namespace> {
        self.namespaces.values().cloned().collect()
    }

    pub(crate) fn edit_namespace(&mut self, name: &str, edit: impl FnOnce(&mut Namespace)) -> bool {
        let version = self.next_version();
        let key = self.namespace_key(name);
        match key.and_then(|key| self.namespaces.get_mut(&key)) {
            Some(namespace) => {
                edit(namespace);
                namespace.resource_version = version;
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove_namespace(&mut self, name: &str) -> bool {
        let Some(key) = self.namespace_key(name) else {
            return false;
        };
        self.namespaces.remove(&key);
        // Its export sinks go with it.
        self.export_sinks
            .retain(|(namespace, _), _| *namespace != key);
        for user in self.users.values_mut() {
            if let Some(access) = user.spec.as_mut().and_then(|s| s.access.as_mut()) {
                access.namespace_accesses.remove(&key);
            }
        }
        for account in self.service_accounts.values_mut() {
            if let Some(access) = account.spec.as_mut().and_then(|s| s.access.as_mut()) {
                access.namespace_accesses.remove(&key);
            }
        }
        true
    }

    fn namespace_key(&self, name: &str) -> Option<String> {
        let full = self.full_name(name);
        [name.to_owned(), full]
            .into_iter()
            .find(|key| self.namespaces.contains_key(key))
    }

    pub(crate) fn add_user(&mut self, email: &str) -> String {
        let id = self.next("u");
        let user = User {
            id: id.clone(),
            resource_version: self.next_version(),
            spec: Some(UserSpec {
                email: email.to_owned(),
                access: Some(Default::default()),
            }),
            state: ResourceState::Active as i32,
            created_time: Some(SystemTime::now().into()),
            ..Default::default()
        };
        self.emails.insert(email.to_lowercase(), id.clone());
        self.users.insert(id.clone(), user);
        id
    }

    pub(crate) fn user_by_email(&self, email: &str) -> Option<&User> {
        self.users.get(self.emails.get(&email.to_lowercase())?)
    }

    pub(crate) fn user(&self, id: &str) -> Option<&User> {
        self.users.get(id)
    }

    pub(crate) fn remove_user(&mut self, email: &str) -> bool {
        let id = self.user_by_email(email).map(|u| u.id.clone());
        self.emails.remove(&email.to_lowercase());
        id.is_some_and(|id| self.users.remove(&id).is_some())
    }

    pub(crate) fn add_service_account(&mut self, spec: ServiceAccountSpec) -> String {
        let id = self.next("sa");
        let account = ServiceAccount {
            id: id.clone(),
            resource_version: self.next_version(),
            spec: Some(ServiceAccountSpec {
                access: Some(spec.access.unwrap_or_default()),
                ..spec
            }),
            state: ResourceState::Active as i32,
            created_time: Some(SystemTime::now().into()),
            ..Default::default()
        };
        self.service_accounts.insert(id.clone(), account);
        id
    }

    pub(crate) fn service_account_by_name(&self, name: &str) -> Option<&ServiceAccount> {
        self.service_accounts
            .values()
            .find(|a| a.spec.as_ref().is_some_and(|s| s.name == name))
    }

    pub(crate) fn service_account(&self, id: &str) -> Option<&ServiceAccount> {
        self.service_accounts.get(id)
    }

    /// Users matching the optional filters, a page at a time.
    pub(crate) fn users_page(
        &self,
        email: &str,
        namespace: &str,
        page_size: i32,
        token: &str,
    ) -> Result<(Vec<User>, String), Status> {
        let matching: Vec<User> = self
            .users
            .values()
            .filter(|u| {
                let spec = u.spec.clone().unwrap_or_default();
                (email.is_empty() || spec.email.eq_ignore_ascii_case(email))
                    && (namespace.is_empty()
                        || access_of(spec.access.as_ref(), namespace).is_some())
            })
            .cloned()
            .collect();
        page_of(matching, page_size, token)
    }

    pub(crate) fn service_accounts_page(
        &self,
        page_size: i32,
        token: &str,
    ) -> Result<(Vec<ServiceAccount>, String), Status> {
        page_of(
            self.service_accounts.values().cloned().collect(),
            page_size,
            token,
        )
    }

    /// The users or service accounts with access to `namespace`.
    pub(crate) fn assignments(
        &self,
        namespace: &str,
        principals: Principals,
    ) -> Result<Vec<Assignment>, Status> {
        let key = self.existing_namespace(namespace)?;
        let all: Vec<(&String, &String, Option<&Access>, &String)> = match principals {
            Principals::Users => self
                .users
                .values()
                .filter_map(|u| {
                    let spec = u.spec.as_ref()?;
                    Some((
                        &u.id,
                        &spec.email,
                        spec.access.as_ref(),
                        &u.resource_version,
                    ))
                })
                .collect(),
            Principals::ServiceAccounts => self
                .service_accounts
                .values()
                .filter_map(|a| {
                    let spec = a.spec.as_ref()?;
                    Some((&a.id, &spec.name, spec.access.as_ref(), &a.resource_version))
                })
                .collect(),
        };
        Ok(all
            .into_iter()
            .filter_map(|(id, name, access, version)| {
                Some(Assignment {
                    id: id.clone(),
                    name: name.clone(),
                    access: NamespaceAccess {
                        permission: access_of(access, &key)?,
                        ..Default::default()
                    },
                    resource_version: version.clone(),
                })
            })
            .collect())
    }

    /// The API names namespaces by full name only.
    fn existing_namespace(&self, namespace: &str) -> Result<String, Status> {
        if self.namespaces.contains_key(namespace) {
            Ok(namespace.to_owned())
        } else {
            Err(not_found("namespace", namespace))
        }
    }

    /// `GetAsyncOperation`: each poll brings the operation closer to its end.
    pub(crate) fn poll(&mut self, id: &str) -> Result<AsyncOperation, Status> {
        let operation = self
            .operations
            .get_mut(id)
            .ok_or_else(|| not_found("async operation", id))?;
        if is_finished(&operation.operation) {
            return Ok(operation.operation.clone());
        }
        operation.polls_left = operation.polls_left.saturating_sub(1);
        if operation.polls_left > 0 {
            operation.operation.state = async_operation::State::InProgress as i32;
            return Ok(operation.operation.clone());
        }
        let id = id.to_owned();
        self.finish(&id);
        Ok(self.operations[&id].operation.clone())
    }

    /// The namespace (full name, retention days) operation `id` created, once it is
    /// fulfilled and until [`State::served`] records it on the backing Temporal.
    pub(crate) fn to_serve(&self, id: &str) -> Option<(String, i32)> {
        let operation = self.operations.get(id)?;
        let Target::Namespace(key) = &operation.target else {
            return None;
        };
        let fulfilled = operation.operation.state == async_operation::State::Fulfilled as i32;
        if !fulfilled
            || operation.operation.operation_type != "CreateNamespace"
            || self.served.contains(key)
        {
            return None;
        }
        let retention = self.namespaces.get(key)?.spec.as_ref()?.retention_days;
        Some((key.clone(), retention))
    }

    /// The client CAs (PEM) of namespaces that are up and accept mTLS.
    pub(crate) fn accepted_client_cas(&self) -> Vec<Vec<u8>> {
        self.namespaces
            .values()
            .filter(|n| n.state != ResourceState::Deleting as i32)
            .filter_map(|n| n.spec.as_ref()?.mtls_auth.as_ref())
            .filter(|m| m.enabled)
            .map(|m| m.accepted_client_ca.clone())
            .collect()
    }

    /// Where namespace `full` is reached: an address per way of authenticating it accepts.
    fn endpoints(&self, full: &str, spec: &NamespaceSpec) -> Endpoints {
        let mtls = spec.mtls_auth.as_ref().is_some_and(|m| m.enabled);
        let api_key = spec.api_key_auth.as_ref().is_some_and(|a| a.enabled);
        Endpoints {
            web_address: format!("https://cloud.temporal.io/namespaces/{full}"),
            mtls_grpc_address: if mtls {
                self.settings.grpc_address.clone()
            } else {
                String::new()
            },
            grpc_address: if api_key {
                self.settings.api_key_address.clone()
            } else {
                String::new()
            },
        }
    }

    /// Sets a service account's permission on namespace `name` outside the API: no
    /// operation, a new resource version.
    pub(crate) fn set_service_account_permission(
        &mut self,
        id: &str,
        name: &str,
        permission: namespace_access::Permission,
    ) {
        let key = self.full_name(name);
        let version = self.next_version();
        if let Some(account) = self.service_accounts.get_mut(id) {
            set_permission(
                &mut account.spec.get_or_insert_with(Default::default).access,
                key,
                permission as i32,
            );
            account.resource_version = version;
        }
    }

    pub(crate) fn rename_service_account(&mut self, id: &str, name: &str) {
        let version = self.next_version();
        if let Some(account) = self.service_accounts.get_mut(id) {
            account.spec.get_or_insert_with(Default::default).name = name.to_owned();
            account.resource_version = version;
        }
    }

    /// A new API key of user or service account `owner`, for the namespaces' endpoint.
    pub(crate) fn create_api_key(&mut self, owner: &str) -> String {
        let token = format!("{}-{}", self.next("key"), self.next_version());
        self.api_keys.insert(token.clone(), owner.to_owned());
        token
    }

    /// The user or service account that owns API key `key`, as `GetCurrentIdentity` names it.
    pub(crate) fn api_key_owner(&self, key: &str) -> Option<Principal> {
        let owner = self.api_keys.get(key)?;
        self.users
            .get(owner)
            .map(|user| Principal::User(user.clone()))
            .or_else(|| {
                self.service_accounts
                    .get(owner)
                    .map(|account| Principal::ServiceAccount(account.clone()))
            })
    }

    pub(crate) fn delete_api_key(&mut self, key: &str) -> bool {
        self.api_keys.remove(key).is_some()
    }

    /// Whether a call to `method` (`/package.Service/Method`) carrying `authorization` on
    /// the API-key endpoint is let through to namespace `namespace` (its
    /// `temporal-namespace` header), as Cloud decides: a known key, a namespace that accepts
    /// API keys, and the key owner's access to it (write, or read for reading methods).
    pub(crate) fn admit_api_key(
        &self,
        authorization: Option<&str>,
        namespace: Option<&str>,
        method: &str,
    ) -> Result<(), Status> {
        let owner = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .and_then(|token| self.api_keys.get(token))
            .ok_or_else(|| Status::unauthenticated("Request unauthorized: unknown API key"))?;
        let namespace = namespace.filter(|n| !n.is_empty()).ok_or_else(|| {
            Status::permission_denied("API key calls name their namespace (temporal-namespace)")
        })?;
        let accepts_keys = self
            .namespaces
            .get(namespace)
            .and_then(|n| n.spec.as_ref()?.api_key_auth.as_ref())
            .is_some_and(|a| a.enabled);
        if !accepts_keys {
            return Err(Status::permission_denied(format!(
                "namespace {namespace:?} does not accept API keys"
            )));
        }
        let access = self
            .users
            .get(owner)
            .and_then(|u| u.spec.as_ref()?.access.as_ref())
            .or_else(|| {
                self.service_accounts
                    .get(owner)
                    .and_then(|a| a.spec.as_ref()?.access.as_ref())
            })
            .and_then(|a| a.namespace_accesses.get(namespace))
            .map_or(0, |a| a.permission);
        let reading = method
            .rsplit('/')
            .next()
            .is_some_and(|m| READING_METHODS.iter().any(|p| m.starts_with(p)));
        let enough = access == namespace_access::Permission::Admin as i32
            || access == namespace_access::Permission::Write as i32
            || (reading && access == namespace_access::Permission::Read as i32);
        if !enough {
            return Err(Status::permission_denied(format!(
                "the API key's owner may not call {method} on {namespace:?}"
            )));
        }
        Ok(())
    }

    pub(crate) fn served(&mut self, name: String) {
        self.served.insert(name);
    }

    fn finish(&mut self, id: &str) {
        let version = self.next_version();
        let operation = self.operations.get_mut(id).expect("operation exists");
        operation.operation.finished_time = Some(SystemTime::now().into());
        let failed = operation.failure.clone();
        let kind = operation.operation.operation_type.clone();
        let target = operation.target.clone();
        let before = operation.before.take();
        operation.operation.state = if failed.is_some() {
            async_operation::State::Failed as i32
        } else {
            async_operation::State::Fulfilled as i32
        };
        operation.operation.failure_reason = failed.clone().unwrap_or_default();
        let deleting = kind.starts_with("Delete");
        let end_state = match (&failed, kind.starts_with("Create"), deleting) {
            (None, _, _) => ResourceState::Active,
            (Some(_), true, _) => ResourceState::ActivationFailed,
            (Some(_), _, true) => ResourceState::DeleteFailed,
            (Some(_), _, _) => ResourceState::UpdateFailed,
        };
        match target {
            Target::Namespace(key) => {
                if failed.is_none() && deleting {
                    self.remove_namespace(&key);
                    return;
                }
                if let (Some(Before::Namespace(before)), Some(_)) = (before, &failed)
                    && !kind.starts_with("Create")
                {
                    self.namespaces.insert(key.clone(), *before);
                }
                if let Some(namespace) = self.namespaces.get_mut(&key) {
                    namespace.state = end_state as i32;
                    namespace.resource_version = version;
                }
            }
            Target::User(id) => {
                if let (Some(Before::User(before)), Some(_)) = (before, &failed) {
                    self.users.insert(id.clone(), *before);
                }
                if let Some(user) = self.users.get_mut(&id) {
                    user.state = end_state as i32;
                    user.resource_version = version;
                }
            }
            Target::ExportSink(namespace, name) => {
                let key = (namespace, name);
                if failed.is_none() && deleting {
                    self.export_sinks.remove(&key);
                    return;
                }
                if let Some(sink) = self.export_sinks.get_mut(&key) {
                    sink.state = end_state as i32;
                    sink.resource_version = version;
                }
            }
            Target::ServiceAccount(id) => {
                if let (Some(Before::ServiceAccount(before)), Some(_)) = (before, &failed) {
                    self.service_accounts.insert(id.clone(), *before);
                }
                if let Some(account) = self.service_accounts.get_mut(&id) {
                    account.state = end_state as i32;
                    account.resource_version = version;
                }
            }
        }
    }

    /// A repeated `async_operation_id` answers with the operation it started; nothing runs
    /// twice.
    fn replayed(&self, requested: &str, kind: &str) -> Result<Option<AsyncOperation>, Status> {
        match self.operations.get(requested) {
            None => Ok(None),
            Some(op) if op.operation.operation_type == kind => Ok(Some(op.operation.clone())),
            Some(op) => Err(Status::already_exists(format!(
                "async_operation_id {requested:?} already names a {} operation",
                op.operation.operation_type
            ))),
        }
    }

    fn start_operation(
        &mut self,
        requested: &str,
        kind: &str,
        target: Target,
        before: Option<Before>,
    ) -> AsyncOperation {
        let id = if requested.is_empty() {
            self.next("op")
        } else {
            requested.to_owned()
        };
        let operation = AsyncOperation {
            id: id.clone(),
            state: async_operation::State::Pending as i32,
            check_duration: Some(prost_wkt_types::Duration {
                seconds: 0,
                nanos: 100_000_000,
            }),
            operation_type: kind.to_owned(),
            started_time: Some(SystemTime::now().into()),
            ..Default::default()
        };
        self.mutations += 1;
        // Ids that sort as the log does.
        self.next_id += 1;
        let log_id = format!("log-{:012}", self.next_id);
        let detail = match &target {
            Target::Namespace(name) => ("namespace", name.clone()),
            Target::User(id) => ("user", id.clone()),
            Target::ServiceAccount(id) => ("service_account", id.clone()),
            Target::ExportSink(namespace, _) => ("namespace", namespace.clone()),
        };
        self.audit_log.push(LogRecord {
            emit_time: Some(SystemTime::now().into()),
            operation: kind.to_owned(),
            status: "OK".into(),
            version: 1,
            log_id,
            principal: Some(LogPrincipal {
                r#type: "serviceaccount".into(),
                id: "sa-plinth".into(),
                name: "plinth".into(),
                ..Default::default()
            }),
            raw_details: Some(prost_wkt_types::Struct {
                fields: [(
                    detail.0.to_owned(),
                    prost_wkt_types::Value {
                        kind: Some(prost_wkt_types::value::Kind::StringValue(detail.1)),
                    },
                )]
                .into(),
            }),
            async_operation_id: id.clone(),
            ..Default::default()
        });
        self.operations.insert(
            id,
            Operation {
                operation: operation.clone(),
                polls_left: self.settings.polls_to_complete.max(1),
                failure: self.fail_next.take(),
                target,
                before,
            },
        );
        operation
    }

    /// The export sink `name` of namespace `namespace`.
    pub(crate) fn export_sink(&self, namespace: &str, name: &str) -> Result<ExportSink, Status> {
        let key = self.existing_namespace(namespace)?;
        self.export_sinks
            .get(&(key, name.to_owned()))
            .cloned()
            .ok_or_else(|| not_found("export sink", name))
    }

    /// Creates (no `resource_version`) or updates an export sink, as an async operation.
    pub(crate) fn write_export_sink(
        &mut self,
        namespace: &str,
        spec: Option<ExportSinkSpec>,
        resource_version: Option<&str>,
        requested: &str,
    ) -> Result<AsyncOperation, Status> {
        let spec = spec.ok_or_else(|| Status::invalid_argument("spec: required"))?;
        let kind = if resource_version.is_none() {
            "CreateNamespaceExportSink"
        } else {
            "UpdateNamespaceExportSink"
        };
        if let Some(operation) = self.replayed(requested, kind)? {
            return Ok(operation);
        }
        let key = self.existing_namespace(namespace)?;
        validate_export_sink(&spec)?;
        let sink_key = (key.clone(), spec.name.clone());
        match (self.export_sinks.get(&sink_key), resource_version) {
            (Some(_), None) => {
                return Err(Status::already_exists(format!(
                    "export sink {:?} already exists",
                    spec.name
                )));
            }
            (None, Some(_)) => return Err(not_found("export sink", &spec.name)),
            (Some(current), Some(version)) => {
                check_version("export sink", &current.resource_version, version)?;
                check_idle("export sink", &spec.name, current.state)?;
            }
            (None, None) => {}
        }
        let operation = self.start_operation(
            requested,
            kind,
            Target::ExportSink(key, spec.name.clone()),
            None,
        );
        let state = if resource_version.is_none() {
            transitional(Kind::Create)
        } else {
            transitional(Kind::Update)
        };
        let version = self.next_version();
        self.export_sinks.insert(
            sink_key,
            ExportSink {
                name: spec.name.clone(),
                resource_version: version,
                state: state as i32,
                spec: Some(spec),
                health: export_sink::Health::Ok as i32,
                ..Default::default()
            },
        );
        Ok(operation)
    }

    pub(crate) fn create_namespace(
        &mut self,
        spec: NamespaceSpec,
        tags: HashMap<String, String>,
        requested: &str,
    ) -> Result<(String, AsyncOperation), Status> {
        const KIND: &str = "CreateNamespace";
        let full = self.full_name(&spec.name);
        if let Some(operation) = self.replayed(requested, KIND)? {
            return Ok((full, operation));
        }
        self.validate_spec(&spec, None)?;
        if self.namespaces.contains_key(&full) {
            return Err(Status::already_exists(format!(
                "namespace {full:?} already exists"
            )));
        }
        let operation =
            self.start_operation(requested, KIND, Target::Namespace(full.clone()), None);
        let endpoints = self.endpoints(&full, &spec);
        let namespace = Namespace {
            namespace: full.clone(),
            resource_version: self.next_version(),
            spec: Some(spec),
            state: transitional(Kind::Create) as i32,
            async_operation_id: operation.id.clone(),
            endpoints: Some(endpoints),
            created_time: Some(SystemTime::now().into()),
            tags,
            ..Default::default()
        };
        self.namespaces.insert(full.clone(), namespace);
        Ok((full, operation))
    }

    pub(crate) fn update_namespace(
        &mut self,
        name: &str,
        spec: NamespaceSpec,
        resource_version: &str,
        requested: &str,
    ) -> Result<AsyncOperation, Status> {
        const KIND: &str = "UpdateNamespace";
        if let Some(operation) = self.replayed(requested, KIND)? {
            return Ok(operation);
        }
        let key = self.existing_namespace(name)?;
        if let Some(edit) = self.interference.take() {
            self.edit_namespace(&key, edit);
        }
        let current = self.namespaces[&key].clone();
        check_version("namespace", &current.resource_version, resource_version)?;
        check_idle("namespace", &key, current.state)?;
        self.validate_spec(&spec, current.spec.as_ref())?;
        let before = Before::Namespace(Box::new(current));
        let operation = self.start_operation(
            requested,
            KIND,
            Target::Namespace(key.clone()),
            Some(before),
        );
        let version = self.next_version();
        let endpoints = self.endpoints(&key, &spec);
        let namespace = self.namespaces.get_mut(&key).expect("checked above");
        namespace.endpoints = Some(endpoints);
        namespace.spec = Some(spec);
        namespace.state = transitional(Kind::Update) as i32;
        namespace.async_operation_id = operation.id.clone();
        namespace.resource_version = version;
        Ok(operation)
    }

    pub(crate) fn delete_namespace(
        &mut self,
        name: &str,
        resource_version: &str,
        requested: &str,
    ) -> Result<AsyncOperation, Status> {
        const KIND: &str = "DeleteNamespace";
        if let Some(operation) = self.replayed(requested, KIND)? {
            return Ok(operation);
        }
        let key = self.existing_namespace(name)?;
        let current = self.namespaces[&key].clone();
        check_version("namespace", &current.resource_version, resource_version)?;
        check_idle("namespace", &key, current.state)?;
        let protected = current
            .spec
            .as_ref()
            .and_then(|s| s.lifecycle.as_ref())
            .is_some_and(|l| l.enable_delete_protection);
        if protected {
            return Err(Status::failed_precondition(format!(
                "namespace {key:?} has delete protection enabled: disable it first"
            )));
        }
        let before = Before::Namespace(Box::new(current));
        let operation = self.start_operation(
            requested,
            KIND,
            Target::Namespace(key.clone()),
            Some(before),
        );
        let version = self.next_version();
        let namespace = self.namespaces.get_mut(&key).expect("checked above");
        namespace.state = transitional(Kind::Delete) as i32;
        namespace.async_operation_id = operation.id.clone();
        namespace.resource_version = version;
        Ok(operation)
    }

    pub(crate) fn create_user(
        &mut self,
        spec: UserSpec,
        requested: &str,
    ) -> Result<(String, AsyncOperation), Status> {
        const KIND: &str = "CreateUser";
        if let Some(operation) = self.replayed(requested, KIND)? {
            let id = match &self.operations[&operation.id].target {
                Target::User(id) => id.clone(),
                _ => String::new(),
            };
            return Ok((id, operation));
        }
        if !valid_email(&spec.email) {
            return Err(Status::invalid_argument(format!(
                "spec.email: {:?} is not an e-mail address",
                spec.email
            )));
        }
        if self.user_by_email(&spec.email).is_some() {
            return Err(Status::already_exists(format!(
                "a user with e-mail {:?} already exists",
                spec.email
            )));
        }
        for namespace in spec.access.iter().flat_map(|a| a.namespace_accesses.keys()) {
            self.existing_namespace(namespace)?;
        }
        let email = spec.email.to_lowercase();
        let id = self.next("u");
        let operation = self.start_operation(requested, KIND, Target::User(id.clone()), None);
        let user = User {
            id: id.clone(),
            resource_version: self.next_version(),
            spec: Some(UserSpec {
                access: Some(spec.access.unwrap_or_default()),
                ..spec
            }),
            state: transitional(Kind::Create) as i32,
            async_operation_id: operation.id.clone(),
            invitation: Some(Default::default()),
            created_time: Some(SystemTime::now().into()),
            ..Default::default()
        };
        self.emails.insert(email, id.clone());
        self.users.insert(id.clone(), user);
        Ok((id, operation))
    }

    /// `SetUserNamespaceAccess`: an access without a permission removes the namespace from
    /// the user's access.
    pub(crate) fn set_user_access(
        &mut self,
        namespace: &str,
        user_id: &str,
        access: Option<NamespaceAccess>,
        resource_version: &str,
        requested: &str,
    ) -> Result<AsyncOperation, Status> {
        const KIND: &str = "SetUserNamespaceAccess";
        if let Some(operation) = self.replayed(requested, KIND)? {
            return Ok(operation);
        }
        let key = self.existing_namespace(namespace)?;
        let permission = checked_permission(access)?;
        let current = self
            .users
            .get(user_id)
            .cloned()
            .ok_or_else(|| not_found("user", user_id))?;
        check_version("user", &current.resource_version, resource_version)?;
        let before = Before::User(Box::new(current));
        let operation = self.start_operation(
            requested,
            KIND,
            Target::User(user_id.to_owned()),
            Some(before),
        );
        let version = self.next_version();
        let user = self.users.get_mut(user_id).expect("checked above");
        set_permission(
            &mut user.spec.get_or_insert_with(Default::default).access,
            key,
            permission,
        );
        user.state = transitional(Kind::Update) as i32;
        user.async_operation_id = operation.id.clone();
        user.resource_version = version;
        Ok(operation)
    }

    pub(crate) fn set_service_account_access(
        &mut self,
        namespace: &str,
        account_id: &str,
        access: Option<NamespaceAccess>,
        resource_version: &str,
        requested: &str,
    ) -> Result<AsyncOperation, Status> {
        const KIND: &str = "SetServiceAccountNamespaceAccess";
        if let Some(operation) = self.replayed(requested, KIND)? {
            return Ok(operation);
        }
        let key = self.existing_namespace(namespace)?;
        let permission = checked_permission(access)?;
        let current = self
            .service_accounts
            .get(account_id)
            .cloned()
            .ok_or_else(|| not_found("service account", account_id))?;
        check_version(
            "service account",
            &current.resource_version,
            resource_version,
        )?;
        let before = Before::ServiceAccount(Box::new(current));
        let target = Target::ServiceAccount(account_id.to_owned());
        let operation = self.start_operation(requested, KIND, target, Some(before));
        let version = self.next_version();
        let account = self
            .service_accounts
            .get_mut(account_id)
            .expect("checked above");
        set_permission(
            &mut account.spec.get_or_insert_with(Default::default).access,
            key,
            permission,
        );
        account.state = transitional(Kind::Update) as i32;
        account.async_operation_id = operation.id.clone();
        account.resource_version = version;
        Ok(operation)
    }

    /// Cloud's rules for a namespace spec; `current` is the spec being updated.
    fn validate_spec(
        &self,
        spec: &NamespaceSpec,
        current: Option<&NamespaceSpec>,
    ) -> Result<(), Status> {
        let invalid = |field: &str, why: String| {
            Err(Status::invalid_argument(format!("spec.{field}: {why}")))
        };
        if let Some(current) = current
            && current.name != spec.name
        {
            return invalid(
                "name",
                format!(
                    "is immutable ({:?} cannot become {:?})",
                    current.name, spec.name
                ),
            );
        }
        if !valid_namespace_name(&spec.name) {
            return invalid(
                "name",
                format!(
                    "{:?} must be 2-39 characters of lowercase letters, digits and hyphens, starting with a letter and ending with a letter or digit",
                    spec.name
                ),
            );
        }
        if !(1..=90).contains(&spec.retention_days) {
            return invalid(
                "retention_days",
                format!("{} is not between 1 and 90", spec.retention_days),
            );
        }
        #[allow(deprecated)]
        let regions: Vec<&String> = spec
            .replicas
            .iter()
            .map(|r| &r.region)
            .chain(spec.regions.iter())
            .collect();
        if regions.is_empty() {
            return invalid("replicas", "at least one region is required".into());
        }
        for region in regions {
            if !self.settings.regions.contains(region) {
                return invalid(
                    "replicas.region",
                    format!(
                        "{region:?} is not a region GetRegions lists ({})",
                        self.settings.regions.join(", ")
                    ),
                );
            }
        }
        let mtls = spec.mtls_auth.as_ref().is_some_and(|m| m.enabled);
        let api_key = spec.api_key_auth.as_ref().is_some_and(|a| a.enabled);
        if !mtls && !api_key {
            return invalid("mtls_auth", "enable mTLS or API key authentication".into());
        }
        if let Some(mtls_auth) = spec.mtls_auth.as_ref().filter(|m| m.enabled) {
            check_ca_bundle(&mtls_auth.accepted_client_ca)
                .or_else(|why| invalid("mtls_auth.accepted_client_ca", why))?;
        }
        if let Some(codec) = &spec.codec_server
            && !codec.endpoint.is_empty()
            && !codec.endpoint.starts_with("https://")
        {
            return invalid(
                "codec_server.endpoint",
                format!("{:?} must be an https URL", codec.endpoint),
            );
        }
        for (name, kind) in &spec.search_attributes {
            if *kind == 0 {
                return invalid("search_attributes", format!("{name:?} has no type"));
            }
        }
        if let Some(current) = current {
            for (name, kind) in &current.search_attributes {
                match spec.search_attributes.get(name) {
                    None => {
                        return invalid("search_attributes", format!("{name:?} cannot be removed"));
                    }
                    Some(new) if new != kind => {
                        return invalid(
                            "search_attributes",
                            format!("{name:?} cannot change type"),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// A page of the audit log from `start` (inclusive, default 30 days ago) to `end`
    /// (exclusive, default now), ordered by emit time and log id, as `GetAuditLogs` answers.
    pub(crate) fn audit_logs(
        &self,
        page_size: i32,
        page_token: &str,
        start: Option<SystemTime>,
        end: Option<SystemTime>,
    ) -> Result<(Vec<LogRecord>, String), Status> {
        let start = start.unwrap_or_else(|| SystemTime::now() - Duration::from_secs(30 * 86_400));
        let end = end.unwrap_or_else(SystemTime::now);
        let at = |log: &LogRecord| {
            log.emit_time
                .and_then(|t| SystemTime::try_from(t).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        let mut matching: Vec<LogRecord> = self
            .audit_log
            .iter()
            .filter(|log| at(log) >= start && at(log) < end)
            .cloned()
            .collect();
        // Ordered by emit time, then log id, as the API answers.
        matching.sort_by(|a, b| at(a).cmp(&at(b)).then_with(|| a.log_id.cmp(&b.log_id)));
        page_of(matching, page_size, page_token)
    }

    fn next(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", self.next_id)
    }

    fn next_version(&mut self) -> String {
        self.version += 1;
        format!("v{}", self.version)
    }
}

fn transitional(kind: Kind) -> ResourceState {
    match kind {
        Kind::Create => ResourceState::Activating,
        Kind::Update => ResourceState::Updating,
        Kind::Delete => ResourceState::Deleting,
    }
}

fn is_finished(operation: &AsyncOperation) -> bool {
    ![
        async_operation::State::Pending as i32,
        async_operation::State::InProgress as i32,
    ]
    .contains(&operation.state)
}

fn check_version(what: &str, current: &str, sent: &str) -> Result<(), Status> {
    if sent != current {
        return Err(Status::new(
            Code::Aborted,
            format!(
                "{what} resource_version {sent:?} is not the current {current:?}: read it again"
            ),
        ));
    }
    Ok(())
}

fn check_idle(what: &str, key: &str, state: i32) -> Result<(), Status> {
    let busy = [
        ResourceState::Activating,
        ResourceState::Updating,
        ResourceState::Deleting,
    ]
    .map(|s| s as i32);
    if busy.contains(&state) {
        return Err(Status::failed_precondition(format!(
            "{what} {key:?} has an operation in progress"
        )));
    }
    Ok(())
}

fn checked_permission(access: Option<NamespaceAccess>) -> Result<i32, Status> {
    let permission = access.map_or(0, |a| a.permission);
    if namespace_access::Permission::try_from(permission).is_err() {
        return Err(Status::invalid_argument(format!(
            "access.permission: {permission} is not a permission"
        )));
    }
    Ok(permission)
}

fn set_permission(access: &mut Option<Access>, namespace: String, permission: i32) {
    let accesses = &mut access
        .get_or_insert_with(Default::default)
        .namespace_accesses;
    if permission == namespace_access::Permission::Unspecified as i32 {
        accesses.remove(&namespace);
    } else {
        accesses.insert(
            namespace,
            NamespaceAccess {
                permission,
                ..Default::default()
            },
        );
    }
}

fn access_of(access: Option<&Access>, namespace: &str) -> Option<i32> {
    access?
        .namespace_accesses
        .get(namespace)
        .map(|a| a.permission)
}

/// What Cloud checks of an S3 export sink before it assumes the role: each field present, and
/// the AWS account a 12-digit id.
fn validate_export_sink(spec: &ExportSinkSpec) -> Result<(), Status> {
    if spec.name.is_empty() {
        return Err(Status::invalid_argument("spec.name: required"));
    }
    let Some(s3) = &spec.s3 else {
        return Err(Status::invalid_argument(
            "spec.s3: required (GCS sinks are not offered)",
        ));
    };
    for (field, value) in [
        ("spec.s3.bucket_name", &s3.bucket_name),
        ("spec.s3.role_name", &s3.role_name),
        ("spec.s3.region", &s3.region),
    ] {
        if value.is_empty() {
            return Err(Status::invalid_argument(format!("{field}: required")));
        }
    }
    if s3.aws_account_id.len() != 12 || !s3.aws_account_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Status::invalid_argument(
            "spec.s3.aws_account_id: a 12-digit AWS account id",
        ));
    }
    Ok(())
}

/// One page of `items` and the token of the next (empty after the last).
pub(crate) fn page_of<T>(
    items: Vec<T>,
    page_size: i32,
    token: &str,
) -> Result<(Vec<T>, String), Status> {
    let size = match usize::try_from(page_size) {
        Ok(0) => DEFAULT_PAGE,
        Ok(size) if size <= MAX_PAGE => size,
        _ => {
            return Err(Status::invalid_argument(format!(
                "page_size: {page_size} is not between 0 and {MAX_PAGE}"
            )));
        }
    };
    let start = if token.is_empty() {
        0
    } else {
        token
            .parse::<usize>()
            .map_err(|_| Status::invalid_argument("page_token: not a token this API issued"))?
    };
    let end = start.saturating_add(size).min(items.len());
    let next = if end < items.len() {
        end.to_string()
    } else {
        String::new()
    };
    Ok((
        items
            .into_iter()
            .skip(start)
            .take(end.saturating_sub(start))
            .collect(),
        next,
    ))
}

/// Cloud's namespace names: 2-39 characters, lowercase letters, digits and hyphens, a letter
/// first and no hyphen last.
fn valid_namespace_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (2..=39).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn valid_email(email: &str) -> bool {
    email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !email.contains(char::is_whitespace)
    })
}

/// One or more PEM certificates, each a CA.
fn check_ca_bundle(pem: &[u8]) -> Result<(), String> {
    let mut count = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "holds a {:?} block, not only certificates",
                block.label
            ));
        }
        let certificate = block
            .parse_x509()
            .map_err(|e| format!("a certificate does not parse: {e}"))?;
        if !certificate.is_ca() {
            return Err(format!("{} is not a CA certificate", certificate.subject()));
        }
        count += 1;
    }
    if count == 0 {
        return Err("no PEM certificate".into());
    }
    Ok(())
}

fn not_found(what: &str, name: &str) -> Status {
    Status::not_found(format!("{what} {name:?} not found"))
}

/// `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo` detail.
fn exhausted(delay: Duration) -> Status {
    use prost::Message;
    let info = RetryInfo {
        retry_delay: Some(prost_wkt_types::Duration {
            seconds: i64::try_from(delay.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(delay.subsec_nanos()).unwrap_or(0),
        }),
    };
    let status = temporalio_common::protos::google::rpc::Status {
        code: Code::ResourceExhausted as i32,
        message: "rate limit exceeded".into(),
        details: vec![prost_wkt_types::Any {
            type_url: RETRY_INFO_TYPE.into(),
            value: info.encode_to_vec(),
        }],
    };
    Status::with_details(
        Code::ResourceExhausted,
        "rate limit exceeded",
        status.encode_to_vec().into(),
    )
}

#[cfg(test)]
mod tests {
    use temporalio_common::protos::temporal::api::cloud::namespace::v1::{
        CodecServerSpec, MtlsAuthSpec, ReplicaSpec,
    };

    use super::*;

    /// A self-signed CA certificate, PEM, made for these tests.
    const CA: &str = include_str!("../testdata/ca.pem");

    fn state() -> State {
        State::new(Settings::default())
    }

    fn spec(name: &str) -> NamespaceSpec {
        NamespaceSpec {
            name: name.into(),
            retention_days: 7,
            replicas: vec![ReplicaSpec {
                region: "aws-us-east-1".into(),
            }],
            mtls_auth: Some(MtlsAuthSpec {
                accepted_client_ca: CA.as_bytes().to_vec(),
                enabled: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn create(
        state: &mut State,
        spec: NamespaceSpec,
        requested: &str,
    ) -> Result<(String, AsyncOperation), Status> {
        state.create_namespace(spec, HashMap::new(), requested)
    }

    fn refused(result: Result<(String, AsyncOperation), Status>) -> Status {
        result.expect_err("refused")
    }

    /// Creates `name` and polls its operation to the end; returns the full name.
    fn created(state: &mut State, name: &str) -> String {
        let (full, operation) = create(state, spec(name), "").unwrap();
        while !is_finished(&state.poll(&operation.id).unwrap()) {}
        full
    }

    #[test]
    fn names_cloud_cannot_hold_are_refused_naming_the_field() {
        let mut state = state();
        for name in [
            "a",
            "Orders",
            "9lives",
            "ends-",
            "under_score",
            &"x".repeat(40),
        ] {
            let status = refused(create(&mut state, spec(name), ""));
            assert_eq!(status.code(), Code::InvalidArgument, "{name}");
            assert!(
                status.message().starts_with("spec.name"),
                "{}",
                status.message()
            );
        }
        assert_eq!(state.mutations, 0);
    }

    #[test]
    fn retention_outside_one_to_ninety_days_is_refused() {
        let mut state = state();
        for days in [0, 91] {
            let status = refused(create(
                &mut state,
                NamespaceSpec {
                    retention_days: days,
                    ..spec("orders")
                },
                "",
            ));
            assert!(
                status.message().starts_with("spec.retention_days"),
                "{}",
                status.message()
            );
        }
    }

    #[test]
    fn a_region_get_regions_does_not_list_is_refused() {
        let mut state = state();
        let status = refused(create(
            &mut state,
            NamespaceSpec {
                replicas: vec![ReplicaSpec {
                    region: "us-east-1".into(),
                }],
                ..spec("orders")
            },
            "",
        ));
        assert!(
            status.message().contains("GetRegions"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn an_accepted_ca_that_is_not_pem_ca_certificates_is_refused() {
        let mut state = state();
        for bundle in [b"not pem".to_vec(), Vec::new()] {
            let mut spec = spec("orders");
            spec.mtls_auth.as_mut().unwrap().accepted_client_ca = bundle;
            let status = refused(create(&mut state, spec, ""));
            assert!(
                status
                    .message()
                    .starts_with("spec.mtls_auth.accepted_client_ca"),
                "{}",
                status.message()
            );
        }
    }

    #[test]
    fn a_codec_server_must_be_https() {
        let mut state = state();
        let spec = NamespaceSpec {
            codec_server: Some(CodecServerSpec {
                endpoint: "http://codec.example.com".into(),
                ..Default::default()
            }),
            ..spec("orders")
        };
        let status = refused(create(&mut state, spec, ""));
        assert!(status.message().starts_with("spec.codec_server.endpoint"));
    }

    #[test]
    fn an_update_from_a_stale_version_is_aborted_and_changes_nothing() {
        let mut state = state();
        let full = created(&mut state, "orders");
        let stale = state
            .namespace_by_id(&full)
            .unwrap()
            .resource_version
            .clone();
        state.edit_namespace(&full, |n| n.spec.as_mut().unwrap().retention_days = 3);
        let longer = NamespaceSpec {
            retention_days: 30,
            ..spec("orders")
        };
        let status = state
            .update_namespace(&full, longer, &stale, "")
            .unwrap_err();
        assert_eq!(status.code(), Code::Aborted);
        assert_eq!(
            state
                .namespace_by_id(&full)
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .retention_days,
            3
        );
    }

    #[test]
    fn a_namespace_with_an_operation_running_takes_no_other() {
        let mut state = state();
        let (full, _) = create(&mut state, spec("orders"), "").unwrap();
        let version = state
            .namespace_by_id(&full)
            .unwrap()
            .resource_version
            .clone();
        let status = state
            .update_namespace(&full, spec("orders"), &version, "")
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
    }

    #[test]
    fn a_repeated_operation_id_answers_with_the_first_operation_and_runs_once() {
        let mut state = state();
        let (_, first) = create(&mut state, spec("orders"), "op-plinth-1").unwrap();
        let (_, again) = create(&mut state, spec("orders"), "op-plinth-1").unwrap();
        assert_eq!(first.id, again.id);
        assert_eq!(state.mutations, 1);
    }

    #[test]
    fn a_failed_update_leaves_the_namespace_as_it_was() {
        let mut state = state();
        let full = created(&mut state, "orders");
        let version = state
            .namespace_by_id(&full)
            .unwrap()
            .resource_version
            .clone();
        state.fail_next = Some("capacity".into());
        let longer = NamespaceSpec {
            retention_days: 30,
            ..spec("orders")
        };
        let operation = state.update_namespace(&full, longer, &version, "").unwrap();
        let mut polled = state.poll(&operation.id).unwrap();
        while !is_finished(&polled) {
            polled = state.poll(&operation.id).unwrap();
        }
        assert_eq!(polled.state, async_operation::State::Failed as i32);
        assert_eq!(polled.failure_reason, "capacity");
        let namespace = state.namespace_by_id(&full).unwrap();
        assert_eq!(namespace.spec.as_ref().unwrap().retention_days, 7);
        assert_eq!(namespace.state, ResourceState::UpdateFailed as i32);
    }

    #[test]
    fn the_rate_limit_refuses_past_the_burst_with_a_retry_delay() {
        let mut state = State::new(Settings {
            burst: 2,
            calls_per_second: 1,
            ..Settings::default()
        });
        assert!(state.admit("GetNamespace").is_ok());
        assert!(state.admit("GetNamespace").is_ok());
        let status = state.admit("GetNamespace").unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        use prost::Message;
        let details =
            temporalio_common::protos::google::rpc::Status::decode(status.details()).unwrap();
        assert_eq!(details.details[0].type_url, RETRY_INFO_TYPE);
        assert_eq!(state.throttled, 1);
    }

    #[test]
    fn the_api_key_endpoint_admits_only_what_the_keys_owner_may_do_on_the_named_namespace() {
        use temporalio_common::protos::temporal::api::cloud::namespace::v1::ApiKeyAuthSpec;
        let mut state = state();
        let keyed = NamespaceSpec {
            api_key_auth: Some(ApiKeyAuthSpec { enabled: true }),
            ..spec("keyed")
        };
        let (keyed, _) = create(&mut state, keyed, "").unwrap();
        let (certs_only, _) = create(&mut state, spec("certs"), "").unwrap();
        assert!(
            state.namespaces[&certs_only]
                .endpoints
                .as_ref()
                .unwrap()
                .grpc_address
                .is_empty(),
            "no API-key endpoint without API-key auth"
        );
        let account = state.add_service_account(ServiceAccountSpec {
            name: "proxy".into(),
            ..Default::default()
        });
        let key = format!("Bearer {}", state.create_api_key(&account));
        const START: &str =
            "/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution";
        const DESCRIBE: &str =
            "/temporal.api.workflowservice.v1.WorkflowService/DescribeWorkflowExecution";
        let admit = |state: &State, key: &str, namespace: &str, method: &str| {
            state
                .admit_api_key(Some(key), Some(namespace), method)
                .map_err(|s| s.code())
        };

        assert_eq!(
            admit(&state, "Bearer made-up", &keyed, START),
            Err(Code::Unauthenticated)
        );
        assert_eq!(
            admit(&state, &key, &keyed, START),
            Err(Code::PermissionDenied),
            "no access"
        );
        state.set_service_account_permission(&account, "keyed", namespace_access::Permission::Read);
        assert_eq!(admit(&state, &key, &keyed, DESCRIBE), Ok(()));
        assert_eq!(
            admit(&state, &key, &keyed, START),
            Err(Code::PermissionDenied),
            "read only"
        );
        state.set_service_account_permission(
            &account,
            "keyed",
            namespace_access::Permission::Write,
        );
        assert_eq!(admit(&state, &key, &keyed, START), Ok(()));
        state.set_service_account_permission(
            &account,
            "certs",
            namespace_access::Permission::Write,
        );
        assert_eq!(
            admit(&state, &key, &certs_only, START),
            Err(Code::PermissionDenied),
            "the namespace accepts no API keys"
        );
        assert_eq!(
            state
                .admit_api_key(Some(&key), None, START)
                .map_err(|s| s.code()),
            Err(Code::PermissionDenied),
            "no namespace named"
        );
    }
}
