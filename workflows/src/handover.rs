use std::convert::Infallible;

use temporalio_common::MemoValues;
use temporalio_common::WorkflowDefinition;
use temporalio_common::data_converters::RawValue;
use temporalio_sdk::workflows::WorkflowImplementation;
use temporalio_sdk::{ContinueAsNewOptions, WorkflowContext, WorkflowResult};

/// History length at which a long-lived workflow hands over to a new run.
const MAX_HISTORY_EVENTS: u32 = 2_000;

/// Hands over (see [`hand_over`]) once Temporal suggests it or the history has grown long;
/// otherwise returns.
pub(crate) async fn hand_over_when_long<W: WorkflowImplementation>(
    ctx: &mut WorkflowContext<W>,
    handover: impl FnOnce(&W) -> <W::Run as WorkflowDefinition>::Input,
) -> WorkflowResult<()> {
    if !ctx.continue_as_new_suggested() && ctx.history_length() <= MAX_HISTORY_EVENTS {
        return Ok(());
    }
    match hand_over(ctx, handover).await? {}
}

/// Continues as new with the input `handover` derives from the state, once in-flight updates
/// have answered. The memo and search attributes are carried over: Temporal starts the next
/// run without them, so until its first workflow task published them again the resource would
/// read as missing.
pub(crate) async fn hand_over<W: WorkflowImplementation>(
    ctx: &mut WorkflowContext<W>,
    handover: impl FnOnce(&W) -> <W::Run as WorkflowDefinition>::Input,
) -> WorkflowResult<Infallible> {
    wait_for_handlers(ctx).await?;
    let input = ctx.state(handover);
    let mut memo = MemoValues::new();
    for (key, payload) in &ctx.memo().raw().fields {
        memo.insert(key.clone(), RawValue::new(vec![payload.clone()]));
    }
    let options = ContinueAsNewOptions::builder()
        .memo(memo)
        .search_attributes(ctx.search_attributes())
        .build();
    ctx.continue_as_new(input, options)
}

/// Lets in-flight updates answer before the run ends or hands over.
pub(crate) async fn wait_for_handlers<W>(ctx: &mut WorkflowContext<W>) -> WorkflowResult<()> {
    let view = ctx.clone();
    ctx.wait_condition(move |_| view.all_handlers_finished())
        .await?;
    Ok(())
}
