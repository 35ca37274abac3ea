//! Plinth's workflows: deterministic code only (no I/O, clocks or randomness).
//!
//! Workflows call activities by name through the contracts in [`contracts`]; the
//! implementations live in `plinth-activities`, so no backend is linked into workflow code.

mod access_run;
mod canary;
pub mod contracts;
mod handover;
mod policy;
mod provision_namespace;
mod scrape_metrics;

pub use access_run::{AccessRunWorkflow, access_schedule_id};
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

/// Registers every Plinth workflow type on `$options`, a worker's or a workflow replayer's
/// options builder; gives the builder, or the SDK's registration error. The worker and the
/// replay test both register through this list, so neither can miss a type.
#[macro_export]
macro_rules! register_workflows {
    ($options:expr) => {
        $options
            .register_workflow::<$crate::Canary>()
            .and_then(|options| options.register_workflow::<$crate::ProvisionNamespace>())
            .and_then(|options| options.register_workflow::<$crate::PolicyWorkflow>())
            .and_then(|options| options.register_workflow::<$crate::AccessRunWorkflow>())
            .and_then(|options| options.register_workflow::<$crate::ScrapeMetricsWorkflow>())
    };
}
