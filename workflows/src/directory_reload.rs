use plinth_control::contract::ReloadRequest;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

/// The mark a `plinth directory reload` leaves: its start time tells every worker to read
/// the directory again. It does nothing and ends at once; what was asked is its input and
/// memo.
#[workflow]
#[derive(Default, Debug)]
pub struct DirectoryReload;

#[workflow_methods]
impl DirectoryReload {
    /// Ends.
    #[run]
    pub async fn run(
        _ctx: &mut WorkflowContext<Self>,
        _request: ReloadRequest,
    ) -> WorkflowResult<()> {
        Ok(())
    }
}
