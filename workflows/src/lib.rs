//! Plinth's workflows: deterministic code only (no I/O, clocks or randomness).
//!
//! Workflows call activities by name through the contracts in [`contracts`]; the
//! implementations live in `plinth-activities`, so no backend is linked into workflow code.

mod canary;
pub mod contracts;
mod handover;
mod policy;
mod provision_namespace;
mod scrape_metrics;
mod users;

pub use canary::Canary;
pub use policy::{PolicyWorkflow, RuleChange, policy_workflow_id};
pub use provision_namespace::{
    ApplyResult, KIND_ATTRIBUTE, OWNER_ATTRIBUTE, PHASE_ATTRIBUTE, ProvisionNamespace,
    RESOURCE_MEMO, namespace_name_of, workflow_id,
};
pub use scrape_metrics::{
    MetricsTargetApplied, SCRAPES_PER_RUN, ScrapeMetricsWorkflow, ScrapeTarget, scrape_target_of,
    scrape_workflow_id,
};
pub use users::{UsersWorkflow, access_schedule_id};
