//! Plinth's workflows: deterministic code only (no I/O, clocks or randomness).
//!
//! Workflows call activities by name through the contracts in [`contracts`]; the
//! implementations live in `plinth-activities`, so no backend is linked into workflow code.

mod access_request;
mod access_run;
mod audit;
mod audit_export;
mod canary;
pub mod contracts;
mod directory_reload;
mod handover;
mod history_export;
mod in_task;
mod policy;
mod provision_namespace;
mod scim_resource;
mod scrape_metrics;

pub use access_request::AccessRequestWorkflow;
pub use access_run::AccessRunWorkflow;
pub use audit::{By, Deleter};
pub use audit_export::AuditExport;
pub use canary::Canary;
pub use directory_reload::DirectoryReload;
pub use history_export::HistoryExport;
pub use policy::{PolicyWorkflow, RuleChange};
pub use provision_namespace::{ApplyResult, ProvisionNamespace};
pub use scim_resource::ScimResourceWorkflow;
pub use scrape_metrics::{MetricsTargetApplied, SCRAPES_PER_RUN, ScrapeMetricsWorkflow};

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
            .and_then(|options| options.register_workflow::<$crate::AuditExport>())
            .and_then(|options| options.register_workflow::<$crate::HistoryExport>())
            .and_then(|options| options.register_workflow::<$crate::DirectoryReload>())
            .and_then(|options| options.register_workflow::<$crate::AccessRequestWorkflow>())
            .and_then(|options| options.register_workflow::<$crate::ScimResourceWorkflow>())
    };
}

#[cfg(test)]
mod tests {
    use plinth_control::contract::{
        AccessRequestStart, AccessRunStart, AppendAudit, ApproveAccess, AuditExportStart,
        DeleteScim, DenyAccess, DirectoryReloadStart, FinishHistoryExport, HistoryExportStart,
        PolicyStart, ReplaceScim, RevokeAccess, ScimResourceStart, ScrapeStart, SetPolicyEditors,
    };
    use temporalio_common::{UpdateDefinition, WorkflowDefinition};

    use super::*;

    /// `ours` is started as `theirs` says: same name, same input (checked by the compiler).
    fn starts_as<W, C>(ours: W, theirs: C)
    where
        W: WorkflowDefinition,
        C: WorkflowDefinition<Input = W::Input>,
    {
        assert_eq!(ours.name(), theirs.name());
    }

    #[test]
    fn the_workflows_answer_to_the_names_and_inputs_the_control_plane_starts() {
        starts_as(PolicyWorkflow::run, PolicyStart);
        starts_as(AccessRunWorkflow::run, AccessRunStart);
        starts_as(ScrapeMetricsWorkflow::run, ScrapeStart);
        starts_as(AuditExport::run, AuditExportStart);
        starts_as(HistoryExport::run, HistoryExportStart);
        starts_as(DirectoryReload::run, DirectoryReloadStart);
        starts_as(AccessRequestWorkflow::run, AccessRequestStart);
        starts_as(ScimResourceWorkflow::run, ScimResourceStart);
        // The control plane reads an access run's summary, and where a finished export
        // stopped: the compiler holds the types.
        fn ends_with<W: WorkflowDefinition, C: WorkflowDefinition<Output = W::Output>>(_: W, _: C) {
        }
        ends_with(AccessRunWorkflow::run, AccessRunStart);
        ends_with(HistoryExport::run, HistoryExportStart);
        ends_with(AccessRequestWorkflow::run, AccessRequestStart);
    }

    #[test]
    fn the_updates_answer_to_the_names_and_inputs_the_control_plane_sends() {
        fn takes_as<U: UpdateDefinition, C: UpdateDefinition<Input = U::Input>>(
            ours: U,
            theirs: C,
        ) {
            assert_eq!(ours.name(), theirs.name());
        }
        takes_as(PolicyWorkflow::set_editors, SetPolicyEditors);
        takes_as(AuditExport::append, AppendAudit);
        takes_as(HistoryExport::finish, FinishHistoryExport);
        takes_as(AccessRequestWorkflow::approve, ApproveAccess);
        takes_as(AccessRequestWorkflow::deny, DenyAccess);
        takes_as(AccessRequestWorkflow::revoke, RevokeAccess);
        takes_as(ScimResourceWorkflow::replace, ReplaceScim);
        takes_as(ScimResourceWorkflow::delete, DeleteScim);
    }
}
