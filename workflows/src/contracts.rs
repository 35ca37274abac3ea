//! The activities Plinth's workflows call: name, input and output of each. Implementations
//! bind to these with `#[activity(definition = ...)]`, so a mismatch fails to compile.

use plinth_proto::v1::{Namespace, NamespaceSpec};
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

/// Installation-wide settings the namespace workflows follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformSettings {
    /// How often a namespace is re-checked for drift made behind Plinth's back.
    pub resync_interval_secs: u64,
}

/// Activity `LoadPlatformSettings`: the worker's settings, read at the start of every run.
#[derive(Clone, Copy, Debug)]
pub struct LoadPlatformSettings;

impl ActivityDefinition for LoadPlatformSettings {
    type Input = ();
    type Output = PlatformSettings;

    fn name(&self) -> &str {
        "LoadPlatformSettings"
    }
}

/// Outcome of validating a resource: `None` when valid, else `field: message`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The first problem found, naming the field.
    pub error: Option<String>,
}

/// Activity `ValidateNamespace`: the same validation the platform API runs, with the worker's
/// directory, so resources started directly with the `temporal` CLI are held to it too.
#[derive(Clone, Copy, Debug)]
pub struct ValidateNamespace;

impl ActivityDefinition for ValidateNamespace {
    type Input = Namespace;
    type Output = ValidationReport;

    fn name(&self) -> &str {
        "ValidateNamespace"
    }
}

/// What reconciling a namespace did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// The namespace did not exist and was registered.
    pub created: bool,
    /// Each difference found and repaired, `what: before → after`.
    pub changes: Vec<String>,
    /// Where clients reach the namespace.
    pub endpoint: String,
}

/// Activity `ReconcileNamespace`: brings the backend to the spec, deriving every write from
/// what it observes, so a retry after a crash repeats nothing that already happened.
#[derive(Clone, Copy, Debug)]
pub struct ReconcileNamespace;

impl ActivityDefinition for ReconcileNamespace {
    type Input = NamespaceSpec;
    type Output = ReconcileReport;

    fn name(&self) -> &str {
        "ReconcileNamespace"
    }
}

/// Activity `DeleteNamespace`: removes the Temporal namespace named by the input.
#[derive(Clone, Copy, Debug)]
pub struct DeleteNamespace;

impl ActivityDefinition for DeleteNamespace {
    type Input = String;
    type Output = ();

    fn name(&self) -> &str {
        "DeleteNamespace"
    }
}
