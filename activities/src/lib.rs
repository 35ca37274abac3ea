//! Every side effect Plinth's workflows need, implemented against the contracts in
//! `plinth_workflows::contracts`: Temporal backends, the directory, metrics
//! endpoints, and the worker itself.

pub mod access;
mod access_activities;
mod backend;
mod control;
pub mod directory;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
mod metrics_activities;
mod namespaces;
mod self_hosted;
pub mod telemetry;
mod worker_info;

pub use access_activities::{AccessActivities, reconcile_access};
pub use backend::{
    AccessChange, AccessLevel, BackendError, NamespaceBackend, ObservedNamespace,
    missing_search_attributes,
};
pub use control::{ControlPlane, PolicySeeding};
pub use metrics_activities::{MetricsActivities, ScrapeTargetSettings};
pub use namespaces::NamespaceActivities;
pub use self_hosted::SelfHosted;
pub use worker_info::WorkerActivities;
