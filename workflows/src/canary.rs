use std::time::Duration;

use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

use crate::contracts::{CanaryReport, DescribeWorker};

/// Proves a Plinth worker is polling: one activity round trip that echoes `token`.
///
/// `plinth dev` runs it to know the stack is up; operators can start it with the `temporal`
/// CLI (`--type Canary`) to check any deployment.
#[workflow]
#[derive(Default, Debug)]
pub struct Canary;

#[workflow_methods]
impl Canary {
    /// Runs `DescribeWorker(token)` and returns its report.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        token: String,
    ) -> WorkflowResult<CanaryReport> {
        let report = ctx
            .execute_activity(
                DescribeWorker,
                token,
                ActivityOptions::start_to_close_timeout(Duration::from_secs(10)),
            )
            .await?;
        Ok(report)
    }
}
