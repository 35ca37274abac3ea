use std::time::Duration;

use plinth_proto::v1::AccessSummary;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::contracts::ReconcileAccess;

/// One access run of a namespace, started by its `users/<namespace>` schedule: resolves the
/// policies into the effective access list and applies the difference. The summary is the
/// result: no memo upsert, which would cost one more Temporal action per namespace per run.
#[workflow]
#[derive(Debug)]
pub struct AccessRunWorkflow {
    namespace: String,
}

#[workflow_methods]
impl AccessRunWorkflow {
    /// `namespace` is the Temporal namespace.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, namespace: String) -> Self {
        Self { namespace }
    }

    /// Reconciles access once. Registered under its first name, which the schedules and the
    /// histories of running deployments carry.
    #[run(name = "UsersWorkflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<AccessSummary> {
        let namespace = ctx.state(|s| s.namespace.clone());
        // Each retry re-derives the difference from what the backend holds then. Backends
        // whose writes are long operations heartbeat while they wait.
        let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15 * 60))
            .heartbeat_timeout(Duration::from_secs(30))
            .build();
        let mut summary = ctx
            .execute_activity(ReconcileAccess, namespace, options)
            .await?;
        summary.workflow_id = ctx.workflow_id().to_owned();
        summary.time = ctx
            .workflow_time()
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default();
        Ok(summary)
    }
}
