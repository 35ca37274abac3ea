use std::time::Duration;

use plinth_proto::v1::AccessSummary;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::audit::{self, AUDIT_PATCH};
use crate::contracts::{ApplyAccess, ApplyAccessSteps, PlanAccess, ReconcileAccess};

/// Access runs record the steps their apply made, not the steps planned before it.
const APPLIED_STEPS_PATCH: &str = "access-applied-steps";

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
        // Backends whose writes are long operations heartbeat while they wait.
        let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15 * 60))
            .heartbeat_timeout(Duration::from_secs(30))
            .build();
        let mut summary = if ctx.patched(AUDIT_PATCH) {
            // Planned, applied, then recorded: a retried apply finishes the same plan, so
            // every change it made is recorded however often the worker dies.
            let plan = ctx
                .execute_activity(PlanAccess, namespace.clone(), options.clone())
                .await?;
            if plan.steps.is_empty() {
                plan.summary
            } else {
                // Runs recorded before the apply answered its steps keep recording the plan's.
                let (summary, steps) = if ctx.patched(APPLIED_STEPS_PATCH) {
                    let applied = ctx
                        .execute_activity(ApplyAccessSteps, plan, options)
                        .await?;
                    (applied.summary, applied.steps)
                } else {
                    let steps = plan.steps.clone();
                    (
                        ctx.execute_activity(ApplyAccess, plan, options).await?,
                        steps,
                    )
                };
                let actor = audit::actor(ctx, None);
                let records = steps
                    .into_iter()
                    .map(|step| {
                        let (action, outcome) = match (&step.before, &step.after) {
                            (None, _) => ("access.granted", "granted"),
                            (_, None) => ("access.revoked", "revoked"),
                            _ => ("access.changed", "changed"),
                        };
                        let level = |level: &Option<String>| {
                            level
                                .as_ref()
                                .map(|level| serde_json::json!({ "access": level }))
                        };
                        audit::new_record(
                            ctx,
                            actor.clone(),
                            action,
                            format!("access/{namespace}"),
                            outcome,
                        )
                        .in_namespace(namespace.clone())
                        .change(level(&step.before), level(&step.after))
                        .detail(step.identity)
                    })
                    .collect();
                audit::record(ctx, records).await?;
                summary
            }
        } else {
            ctx.execute_activity(ReconcileAccess, namespace, options)
                .await?
        };
        summary.workflow_id = ctx.workflow_id().to_owned();
        summary.time = ctx
            .workflow_time()
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
            .unwrap_or_default();
        Ok(summary)
    }
}
