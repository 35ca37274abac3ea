//! The platform's domain: where namespaces live (the backend trait and one module per
//! backend), people and groups (the directory), who gets which access (access planning), who
//! may do what (authorization), Plinth's own records in the control plane, and reaching
//! Temporal. Workflows, activities, the worker, the platform API and the data plane all build
//! on it; it depends on none of them, and starts workflows by the names in [`contract`].

pub mod access;
mod admins;
mod audit;
mod authorization;
mod backend;
pub mod contract;
mod plane;
mod scim;
mod temporal;

use std::sync::Arc;
use std::time::Duration;

use plinth_proto::ValidationRules;

/// People and groups; re-exported so the rest of the platform names one directory.
pub use plinth_directory as directory;

pub use admins::Admins;
pub use audit::{AuditGatherer, AuditSender, AuditSink};
pub use authorization::{ACCESS_TTL, AccessCheck, AccessLists, Need};
#[cfg(any(test, feature = "memory"))]
pub use backend::memory;
pub use backend::{
    AccessChange, AccessLevel, AccountAudit, AccountAuditCursor, BackendError, ClosedPage, Cloud,
    CloudExportSink, CloudPrincipal, CloudSettings, DEFAULT_REGISTRY_REFRESH, MAX_HISTORY_BYTES,
    NamespaceBackend, ObservedNamespace, SecretSource, SelfHosted, UpstreamAuth, check_proxy_key,
    missing_search_attributes, progress,
};
pub use plane::{ControlPlane, PolicySeeding, ScheduleWrite};
pub use scim::ScimResources;
pub use temporal::{
    CONTROL_NAMESPACE_RETENTION_DAYS, ControlSettings, DEFAULT_NAMESPACE, DEFAULT_TASK_QUEUE,
    TemporalError, connect, ensure_namespace,
};

/// Installation-wide rules of the namespace workflows.
#[derive(Clone, Debug)]
pub struct PlatformSettings {
    /// People and groups, for owner checks.
    pub directory: Arc<dyn directory::Directory>,
    /// What a valid resource looks like.
    pub rules: ValidationRules,
    /// How often each namespace is checked for drift.
    pub resync_interval: Duration,
    /// Where managed namespaces live.
    pub backend: Arc<dyn NamespaceBackend>,
    /// Group whose members administer every namespace and never lose access.
    pub admin_group: String,
    /// How often each namespace's access is recomputed.
    pub access_interval: Duration,
}
