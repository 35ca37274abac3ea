//! The activities Plinth's workflows call: name, input and output of each. Implementations
//! bind to these with `#[activity(definition = ...)]`, so a mismatch fails to compile.

use serde::{Deserialize, Serialize};
use temporalio_common::ActivityDefinition;

/// What a worker says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's Temporal identity (`pid@host`).
    pub identity: String,
    /// Plinth version the worker runs.
    pub version: String,
    /// Namespace the worker polls.
    pub namespace: String,
    /// Task queue the worker polls.
    pub task_queue: String,
}

/// Result of a canary run: the token sent, echoed by the worker that ran the activity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryReport {
    /// The token the caller sent, returned unchanged.
    pub token: String,
    /// The worker that executed the activity.
    pub worker: WorkerInfo,
}

/// Activity `DescribeWorker`: echoes a token with the executing worker's details.
#[derive(Clone, Copy, Debug)]
pub struct DescribeWorker;

impl ActivityDefinition for DescribeWorker {
    type Input = String;
    type Output = CanaryReport;

    fn name(&self) -> &str {
        "DescribeWorker"
    }
}
