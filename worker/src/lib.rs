//! The Plinth worker: connects to Temporal, makes sure the control-plane namespace exists,
//! registers every Plinth workflow and activity, and polls until shut down.

use std::time::Duration;

use plinth_activities::WorkerActivities;
use plinth_workflows::Canary;
use plinth_workflows::contracts::WorkerInfo;
use temporalio_client::NamespacedClient;
use temporalio_client::tonic::{Code, Request};
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    CountWorkflowExecutionsRequest, DescribeNamespaceRequest, RegisterNamespaceRequest,
};
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

/// The control-plane namespace Plinth's own workflows run in, unless configured otherwise.
pub const DEFAULT_NAMESPACE: &str = "plinth-system";
/// The task queue Plinth's worker polls, unless configured otherwise.
pub const DEFAULT_TASK_QUEUE: &str = "plinth";
/// Retention of closed control-plane workflows in a namespace the worker creates.
pub const CONTROL_NAMESPACE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a newly registered namespace may take to become usable.
const NAMESPACE_VISIBLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the worker polls.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Namespace to poll (created when missing).
    pub namespace: String,
    /// Task queue to poll.
    pub task_queue: String,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            task_queue: DEFAULT_TASK_QUEUE.to_owned(),
        }
    }
}

/// Why the worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Temporal could not be reached or refused the connection.
    #[error("cannot connect to Temporal at {target}: {source}")]
    Connect {
        /// The address dialled.
        target: String,
        /// The client's error.
        source: temporalio_client::errors::ClientConnectError,
    },
    /// A namespace call (describe or register) failed.
    #[error("namespace {namespace:?}: {status}")]
    Namespace {
        /// The namespace involved.
        namespace: String,
        /// Temporal's answer.
        status: Box<temporalio_client::tonic::Status>,
    },
    /// The SDK refused the worker's configuration.
    #[error("worker setup failed: {0}")]
    Setup(String),
    /// The worker stopped with an error while running.
    #[error("worker stopped: {0}")]
    Run(#[from] temporalio_sdk::error::WorkerRunError),
}

/// Connects to Temporal (the SDK checks the server answers `GetSystemInfo`). Without an explicit
/// identity the connection is named `pid@host`, as other SDKs do.
pub async fn connect(mut options: ConnectionOptions) -> Result<Connection, WorkerError> {
    if options.identity.is_empty() {
        let host = gethostname::gethostname();
        options.identity = format!("{}@{}", std::process::id(), host.to_string_lossy());
    }
    let target = options.target.to_string();
    Connection::connect(options)
        .await
        .map_err(|source| WorkerError::Connect { target, source })
}

/// Registers `namespace` unless it exists. Returns true when this call created it.
pub async fn ensure_namespace(
    connection: &Connection,
    namespace: &str,
) -> Result<bool, WorkerError> {
    let mut service = connection.workflow_service();
    let err = |status| WorkerError::Namespace {
        namespace: namespace.to_owned(),
        status: Box::new(status),
    };
    let describe = DescribeNamespaceRequest {
        namespace: namespace.to_owned(),
        ..Default::default()
    };
    match service.describe_namespace(Request::new(describe)).await {
        Ok(_) => return Ok(false),
        Err(status) if status.code() == Code::NotFound => {}
        Err(status) => return Err(err(status)),
    }
    let register = RegisterNamespaceRequest {
        namespace: namespace.to_owned(),
        description: "Plinth control plane".to_owned(),
        workflow_execution_retention_period: Some(
            CONTROL_NAMESPACE_RETENTION
                .try_into()
                .expect("retention fits a protobuf duration"),
        ),
        ..Default::default()
    };
    let created = match service.register_namespace(Request::new(register)).await {
        Ok(_) => true,
        // Another worker registered it between our describe and register.
        Err(status) if status.code() == Code::AlreadyExists => false,
        Err(status) => return Err(err(status)),
    };
    // Frontends learn of a new namespace on their next registry refresh; until then calls in
    // it fail with NotFound. Return only once it is usable.
    let deadline = tokio::time::Instant::now() + NAMESPACE_VISIBLE_TIMEOUT;
    loop {
        let count = CountWorkflowExecutionsRequest {
            namespace: namespace.to_owned(),
            ..Default::default()
        };
        match service.count_workflow_executions(Request::new(count)).await {
            Ok(_) => return Ok(created),
            Err(status)
                if status.code() == Code::NotFound && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => return Err(err(status)),
        }
    }
}

/// A configured Plinth worker. [`PlinthWorker::run`] is not `Send`: drive it on a `LocalSet`
/// or with `select!`.
pub struct PlinthWorker {
    // Declared before the runtime so it is dropped first.
    worker: Worker,
    _runtime: Runtime,
}

impl std::fmt::Debug for PlinthWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlinthWorker")
            .field("task_queue", &self.worker.task_queue())
            .finish_non_exhaustive()
    }
}

impl PlinthWorker {
    /// Ensures the namespace exists and builds a worker for it. Must be called inside a Tokio
    /// runtime.
    pub async fn start(
        connection: Connection,
        settings: &WorkerSettings,
    ) -> Result<Self, WorkerError> {
        ensure_namespace(&connection, &settings.namespace).await?;
        let setup = |e: &dyn std::fmt::Display| WorkerError::Setup(e.to_string());
        let runtime =
            Runtime::from_current_tokio(RuntimeOptions::default()).map_err(|e| setup(&e))?;
        let client = Client::new(
            connection,
            ClientOptions::new(settings.namespace.clone()).build(),
        )
        .map_err(|e| setup(&e))?;
        let info = WorkerInfo {
            identity: client.identity(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            namespace: settings.namespace.clone(),
            task_queue: settings.task_queue.clone(),
        };
        let options = WorkerOptions::new(settings.task_queue.clone())
            .register_workflow::<Canary>()
            .map_err(|e| setup(&e))?
            .register_activities(WorkerActivities::new(info))
            .build();
        let worker = Worker::new(&runtime, client, options).map_err(|e| setup(&e))?;
        Ok(Self {
            worker,
            _runtime: runtime,
        })
    }

    /// A function that asks the worker to finish in-flight tasks and stop.
    pub fn shutdown_handle(&self) -> impl Fn() + use<> {
        self.worker.shutdown_handle()
    }

    /// Polls until shut down.
    pub async fn run(&mut self) -> Result<(), WorkerError> {
        self.worker.run().await?;
        Ok(())
    }
}

/// Why a canary run did not prove the worker healthy.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    /// The client could not be built.
    #[error("client setup failed: {0}")]
    Client(String),
    /// Temporal refused to start the workflow.
    #[error("cannot start the Canary workflow: {0}")]
    Start(String),
    /// The workflow failed or its result could not be read.
    #[error("Canary workflow did not complete: {0}")]
    Result(String),
}

/// Runs the `Canary` workflow on `settings` and returns the report of the worker that ran it.
/// It completes only once a worker polls that task queue; bound it with a timeout.
pub async fn run_canary(
    connection: Connection,
    settings: &WorkerSettings,
    workflow_id: &str,
    token: &str,
) -> Result<plinth_workflows::contracts::CanaryReport, CanaryError> {
    use temporalio_client::{
        WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowStartOptions,
    };

    let client = Client::new(
        connection,
        ClientOptions::new(settings.namespace.clone()).build(),
    )
    .map_err(|e| CanaryError::Client(e.to_string()))?;
    let options = WorkflowStartOptions::new(settings.task_queue.clone(), workflow_id.to_owned())
        .id_conflict_policy(WorkflowIdConflictPolicy::TerminateExisting)
        .build();
    let handle = client
        .start_workflow(Canary::run, token.to_owned(), options)
        .await
        .map_err(|e| CanaryError::Start(e.to_string()))?;
    handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(|e| CanaryError::Result(e.to_string()))
}
