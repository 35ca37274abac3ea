//! Reaching Temporal: the connection every Plinth process makes, and the control-plane
//! namespace Plinth's own workflows run in.

use temporalio_client::{Connection, ConnectionOptions};

use plinth_proto::v1::NamespaceSpec;

use crate::backend::{BackendError, NamespaceBackend as _, SelfHosted};
use crate::contract::{KIND_ATTRIBUTE, NAME_ATTRIBUTE, OWNER_ATTRIBUTE, PHASE_ATTRIBUTE};

/// The control-plane namespace Plinth's own workflows run in, unless configured otherwise.
pub const DEFAULT_NAMESPACE: &str = "plinth-system";
/// The task queue Plinth's worker polls, unless configured otherwise.
pub const DEFAULT_TASK_QUEUE: &str = "plinth";
/// Retention of closed control-plane workflows in a namespace the worker creates, days.
pub const CONTROL_NAMESPACE_RETENTION_DAYS: i32 = 7;

/// Where Plinth's own workflows run: the control-plane namespace and the task queue the
/// worker polls and the platform API starts workflows on.
#[derive(Clone, Debug)]
pub struct ControlSettings {
    /// Namespace to poll (created when missing).
    pub namespace: String,
    /// Task queue to poll.
    pub task_queue: String,
}

impl ControlSettings {
    /// The task queue access runs go to: their own, so their tasks and those of applies never
    /// queue behind each other.
    pub fn access_task_queue(&self) -> String {
        access_task_queue(&self.task_queue)
    }
}

/// The access runs' task queue beside `task_queue`.
pub(crate) fn access_task_queue(task_queue: &str) -> String {
    format!("{task_queue}-access")
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            task_queue: DEFAULT_TASK_QUEUE.to_owned(),
        }
    }
}

/// Why Temporal could not be reached or the control-plane namespace prepared.
#[derive(Debug, thiserror::Error)]
pub enum TemporalError {
    /// Temporal could not be reached or refused the connection.
    #[error("cannot connect to Temporal at {target}: {source}")]
    Connect {
        /// The address dialled.
        target: String,
        /// The client's error.
        source: temporalio_client::errors::ClientConnectError,
    },
    /// Describing, registering or preparing the control-plane namespace failed.
    #[error("namespace {namespace:?}: {source}")]
    Namespace {
        /// The namespace involved.
        namespace: String,
        /// The backend's error.
        source: BackendError,
    },
}

/// Connects to Temporal (the SDK checks the server answers `GetSystemInfo`). Without an explicit
/// identity the connection is named `pid@host`, as other SDKs do.
pub async fn connect(mut options: ConnectionOptions) -> Result<Connection, TemporalError> {
    if options.identity.is_empty() {
        let host = gethostname::gethostname();
        options.identity = format!("{}@{}", std::process::id(), host.to_string_lossy());
    }
    let target = options.target.to_string();
    Connection::connect(options)
        .await
        .map_err(|source| TemporalError::Connect { target, source })
}

/// Registers `namespace` unless it exists and adds the control-plane search attributes.
/// Returns true when this call created the namespace.
pub async fn ensure_namespace(
    connection: &Connection,
    namespace: &str,
) -> Result<bool, TemporalError> {
    let err = |source| TemporalError::Namespace {
        namespace: namespace.to_owned(),
        source,
    };
    let backend = SelfHosted::new(connection.clone(), String::new());
    let exists = backend.describe(namespace).await.map_err(err)?.is_some();
    if !exists {
        let spec = NamespaceSpec {
            name: namespace.to_owned(),
            description: "Plinth control plane".to_owned(),
            retention_days: CONTROL_NAMESPACE_RETENTION_DAYS,
            ..Default::default()
        };
        backend.register(&spec).await.map_err(err)?;
    }
    let attributes = [
        KIND_ATTRIBUTE,
        OWNER_ATTRIBUTE,
        PHASE_ATTRIBUTE,
        NAME_ATTRIBUTE,
    ]
    .iter()
    .map(|key| (key.name().to_owned(), "Keyword".to_owned()))
    .collect();
    backend
        .add_search_attributes(namespace, &attributes)
        .await
        .map_err(err)?;
    Ok(!exists)
}
