//! Calls tried first in the workflow task that needs them, then by an activity.
//!
//! A local activity answers without a round trip through the task queue, but holds one of the
//! worker's few workflow-task slots while it runs. A slow call would keep that slot from every
//! other workflow, the ones it may itself wait on included (the audit trail's, a policy's), so
//! it gets one short try in the task and is then left to an activity, which holds no slot.

use std::time::Duration;

use temporalio_common::ActivityDefinition;
use temporalio_common::data_converters::TemporalDeserializable;
use temporalio_common::protos::temporal::api::common::v1::RetryPolicy;
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, LocalActivityOptions, WorkflowContext,
};

use crate::audit::forever;

/// How long a call is tried in the workflow task: a backend or trail that answers at all
/// answers in seconds.
const IN_TASK_PATIENCE: Duration = Duration::from_secs(10);

/// `activity` with `input`, tried once in the task for [`IN_TASK_PATIENCE`], then as an
/// activity with `options`. The activity must be safe to run twice: a try that timed out may
/// still finish.
pub(crate) async fn in_task_then_activity<W, AD>(
    ctx: &mut WorkflowContext<W>,
    activity: AD,
    input: AD::Input,
    options: ActivityOptions,
) -> Result<AD::Output, ActivityExecutionError>
where
    AD: ActivityDefinition + Clone,
    AD::Input: Clone,
    AD::Output: TemporalDeserializable,
{
    // One try: a local activity's retries (and a timeout that falls between them) would hold
    // the task longer.
    let once = RetryPolicy {
        maximum_attempts: 1,
        ..forever(Duration::from_secs(1))
    };
    let in_task = LocalActivityOptions::builder()
        .start_to_close_timeout(IN_TASK_PATIENCE)
        .schedule_to_close_timeout(IN_TASK_PATIENCE)
        .retry_policy(once.into())
        .build();
    match ctx
        .execute_local_activity(activity.clone(), input.clone(), in_task)
        .await
    {
        Ok(output) => Ok(output),
        Err(_) => ctx.execute_activity(activity, input, options).await,
    }
}
