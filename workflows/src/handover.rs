use temporalio_common::WorkflowDefinition;
use temporalio_sdk::workflows::WorkflowImplementation;
use temporalio_sdk::{ContinueAsNewOptions, WorkflowContext, WorkflowResult};

/// History length at which a long-lived workflow hands over to a new run.
const MAX_HISTORY_EVENTS: u32 = 2_000;

/// Continues as new with the input `handover` derives from the state, once Temporal suggests
/// it or the history has grown long; in-flight updates answer first. Otherwise returns.
pub(crate) async fn hand_over_when_long<W: WorkflowImplementation>(
    ctx: &mut WorkflowContext<W>,
    handover: impl FnOnce(&W) -> <W::Run as WorkflowDefinition>::Input,
) -> WorkflowResult<()> {
    if !ctx.continue_as_new_suggested() && ctx.history_length() <= MAX_HISTORY_EVENTS {
        return Ok(());
    }
    wait_for_handlers(ctx).await?;
    let input = ctx.state(handover);
    ctx.continue_as_new(input, ContinueAsNewOptions::default())?;
    Ok(())
}

/// Lets in-flight updates answer before the run ends or hands over.
pub(crate) async fn wait_for_handlers<W>(ctx: &mut WorkflowContext<W>) -> WorkflowResult<()> {
    let view = ctx.clone();
    ctx.wait_condition(move |_| view.all_handlers_finished())
        .await?;
    Ok(())
}
