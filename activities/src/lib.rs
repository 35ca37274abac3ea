//! Every side effect Plinth's workflows need, implemented against the contracts in
//! `plinth_workflows::contracts`: Temporal backends, the directory, and the worker itself.

mod backend;
pub mod directory;
mod namespaces;
mod self_hosted;
mod worker_info;

pub use backend::{BackendError, NamespaceBackend, ObservedNamespace, missing_search_attributes};
pub use namespaces::NamespaceActivities;
pub use self_hosted::SelfHosted;
pub use worker_info::WorkerActivities;
