use std::sync::Arc;

use plinth_workflows::contracts::{CanaryReport, DescribeWorker, WorkerInfo};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// Activities that report on the worker itself.
#[derive(Debug, Clone)]
pub struct WorkerActivities {
    info: WorkerInfo,
}

impl WorkerActivities {
    /// Activities answering with `info` about this worker.
    pub fn new(info: WorkerInfo) -> Self {
        Self { info }
    }
}

#[activities]
impl WorkerActivities {
    /// Echoes `token` with this worker's details.
    #[activity(definition = DescribeWorker)]
    pub async fn describe_worker(
        self: Arc<Self>,
        _ctx: ActivityContext,
        token: String,
    ) -> Result<CanaryReport, ActivityError> {
        Ok(CanaryReport {
            token,
            worker: self.info.clone(),
        })
    }
}
