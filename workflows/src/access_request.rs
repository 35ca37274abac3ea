use std::time::Duration;

use plinth_control::contract::{
    ACCESS_GRANTED, ACCESS_PENDING, ACCESS_REVOKED, KIND_ACCESS_REQUEST, KIND_ATTRIBUTE,
    OWNER_ATTRIBUTE, PHASE_ATTRIBUTE, RESOURCE_MEMO,
};
use plinth_proto::v1::AccessRequest;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::audit::{self, forever};
use crate::contracts::{GrantChange, TriggerGrantRun};
use crate::handover::wait_for_handlers;
use crate::provision_namespace::{UpdateError, now, rfc3339};

/// One request for temporary access, from asking to its end: workflow id
/// `access-request/<id>`. It waits for `approve` or `deny` from a member of an approver group
/// (never the requester) until its time to answer runs out. An approved grant lasts its
/// duration on a durable timer, or until `revoke`. Each step is published to the memo and
/// search attributes, which access runs read, and starts the namespace's access run once
/// visibility shows it; each is an audit record.
#[workflow]
#[derive(Debug)]
pub struct AccessRequestWorkflow {
    request: AccessRequest,
    /// The answer (`granted` or `denied`), once one came.
    decision: Option<String>,
    /// When a grant ends, in the workflow's clock (unix seconds).
    expires_unix: u64,
    /// Who revoked a grant, once someone did.
    revoked_by: Option<String>,
    /// The access run that takes a revoked grant away has started.
    ended: bool,
}

#[workflow_methods]
impl AccessRequestWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, request: AccessRequest) -> Self {
        Self {
            request,
            decision: None,
            expires_unix: 0,
            revoked_by: None,
            ended: false,
        }
    }

    /// Runs the request to its end; returns it as it ended.
    #[run(name = "AccessRequest")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<AccessRequest> {
        let (requester, ttl) = ctx.state(|s| {
            (
                s.request.requester.clone(),
                Duration::from_secs(u64::try_from(s.request.ttl_seconds).unwrap_or(0)),
            )
        });
        record(ctx, requester, "access_request.requested", "pending").await?;
        temporalio_sdk::workflows::select! {
            _ = ctx.timer(ttl) => {},
            _ = ctx.wait_condition(|s| s.decision.is_some()) => {},
        };
        if ctx.state(|s| s.decision.is_none()) {
            let now = now(ctx);
            ctx.state_mut(|s| {
                s.request.state = "unanswered".into();
                s.request.decided_at = now;
            });
            let actor = format!("workflow:{}", ctx.workflow_id());
            publish(ctx);
            record(ctx, actor, "access_request.unanswered", "unanswered").await?;
            wait_for_handlers(ctx).await?;
            return Ok(ctx.state(|s| s.request.clone()));
        }
        publish(ctx);
        let decided_by = ctx.state(|s| s.request.decided_by.clone());
        if ctx.state(|s| s.decision.as_deref() != Some(ACCESS_GRANTED)) {
            record(ctx, decided_by, "access_request.denied", "denied").await?;
            wait_for_handlers(ctx).await?;
            return Ok(ctx.state(|s| s.request.clone()));
        }
        record(ctx, decided_by, "access_request.approved", ACCESS_GRANTED).await?;
        if ctx.state(|s| s.revoked_by.is_none()) {
            change_access(ctx, true).await?;
        }
        // Until the end the approval set, however long applying took.
        let left = ctx
            .state(|s| s.expires_unix)
            .saturating_sub(unix(ctx.workflow_time()));
        let lasts = Duration::from_secs(left.max(1));
        temporalio_sdk::workflows::select! {
            _ = ctx.timer(lasts) => {},
            _ = ctx.wait_condition(|s| s.revoked_by.is_some()) => {},
        };
        let (state, actor) = match ctx.state(|s| s.revoked_by.clone()) {
            Some(by) => (ACCESS_REVOKED, by),
            None => ("expired", format!("workflow:{}", ctx.workflow_id())),
        };
        ctx.state_mut(|s| s.request.state = state.into());
        publish(ctx);
        change_access(ctx, false).await?;
        ctx.state_mut(|s| s.ended = true);
        record(ctx, actor, &format!("access_request.{state}"), state).await?;
        wait_for_handlers(ctx).await?;
        Ok(ctx.state(|s| s.request.clone()))
    }

    /// Grants the access for its duration from now.
    #[update]
    pub async fn approve(
        ctx: &mut WorkflowContext<Self>,
        by: String,
    ) -> Result<AccessRequest, UpdateError> {
        decide(ctx, by, ACCESS_GRANTED)
    }

    /// Ends the request; nothing is granted.
    #[update]
    pub async fn deny(
        ctx: &mut WorkflowContext<Self>,
        by: String,
    ) -> Result<AccessRequest, UpdateError> {
        decide(ctx, by, "denied")
    }

    /// Ends a grant now; answers once the access run that takes it away has started.
    #[update]
    pub async fn revoke(
        ctx: &mut WorkflowContext<Self>,
        by: String,
    ) -> Result<AccessRequest, UpdateError> {
        let request = ctx.state(|s| s.request.clone());
        if request.state != ACCESS_GRANTED || ctx.state(|s| s.revoked_by.is_some()) {
            return Err(format!(
                "access request {} is {}: only a grant in force is revoked",
                request.id, request.state
            )
            .into());
        }
        // Published at once: access runs read a grant from its workflow, so none applies it
        // from here on.
        ctx.state_mut(|s| {
            s.request.state = ACCESS_REVOKED.into();
            s.request.revoked_by = by.clone();
            s.revoked_by = Some(by);
        });
        publish(ctx);
        ctx.wait_condition(|s| s.ended).await?;
        Ok(ctx.state(|s| s.request.clone()))
    }
}

/// Answers a pending request with `state`; the requester never answers their own.
fn decide(
    ctx: &mut WorkflowContext<AccessRequestWorkflow>,
    by: String,
    state: &str,
) -> Result<AccessRequest, UpdateError> {
    let request = ctx.state(|s| s.request.clone());
    if request.state != ACCESS_PENDING {
        return Err(format!(
            "access request {} is {}, no longer pending",
            request.id, request.state
        )
        .into());
    }
    if by == request.requester {
        return Err(format!(
            "{by} asked for access request {}, and may not answer it",
            request.id
        )
        .into());
    }
    let now = ctx.workflow_time();
    let lasts = Duration::from_secs(u64::try_from(request.duration_seconds).unwrap_or(0));
    ctx.state_mut(|s| {
        s.decision = Some(state.into());
        s.request.state = state.into();
        s.request.decided_by = by;
        s.request.decided_at = now.map(rfc3339).unwrap_or_default();
        if state == ACCESS_GRANTED {
            s.request.expires_at = now.map(|t| rfc3339(t + lasts)).unwrap_or_default();
            s.expires_unix = unix(now) + lasts.as_secs();
        }
    });
    Ok(ctx.state(|s| s.request.clone()))
}

/// Shows the request as it stands to visibility, where access runs and listings read it.
fn publish(ctx: &mut WorkflowContext<AccessRequestWorkflow>) {
    let request = ctx.state(|s| s.request.clone());
    ctx.upsert_search_attributes([
        KIND_ATTRIBUTE.value_set(KIND_ACCESS_REQUEST.to_owned()),
        OWNER_ATTRIBUTE.value_set(request.namespace.clone()),
        PHASE_ATTRIBUTE.value_set(request.state.clone()),
    ]);
    let _ = ctx.upsert_memo([(
        RESOURCE_MEMO,
        Some(temporalio_common::MemoValue::new(request)),
    )]);
}

/// Starts the namespace's access run once visibility shows the grant in force (`granted`)
/// or gone; retried until it is done.
async fn change_access(
    ctx: &mut WorkflowContext<AccessRequestWorkflow>,
    granted: bool,
) -> WorkflowResult<()> {
    let change = ctx.state(|s| GrantChange {
        namespace: s.request.namespace.clone(),
        id: s.request.id.clone(),
        granted,
    });
    let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(90))
        .heartbeat_timeout(Duration::from_secs(20))
        .retry_policy(forever(Duration::from_secs(60)))
        .build();
    ctx.execute_activity(TriggerGrantRun, change, options)
        .await?;
    Ok(())
}

/// Records `action` on the namespace's access by `actor` in the audit trail.
async fn record(
    ctx: &mut WorkflowContext<AccessRequestWorkflow>,
    actor: String,
    action: &str,
    outcome: &str,
) -> WorkflowResult<()> {
    let request = ctx.state(|s| s.request.clone());
    let detail = format!(
        "request {}: {} for {} of {} ({}s): {}",
        request.id,
        request.access,
        request.requester,
        request.namespace,
        request.duration_seconds,
        request.reason
    );
    let entry = audit::new_record(
        ctx,
        actor,
        action,
        format!("access/{}", request.namespace),
        outcome,
    )
    .detail(detail);
    audit::record(ctx, vec![entry]).await?;
    Ok(())
}

/// The workflow's time in unix seconds.
fn unix(time: Option<std::time::SystemTime>) -> u64 {
    u64::try_from(crate::history_export::unix(time)).unwrap_or(0)
}
