//! A stand-in for Temporal Cloud's Ops API, which cannot be reached from here: a real gRPC
//! server of `temporal.api.cloud.cloudservice.v1.CloudService`, generated from the same protos
//! the client in `temporalio-client` speaks. It keeps state and holds callers to the public
//! contract: API key and version header on every call, Cloud's validation, `resource_version`
//! on every update, mutations as asynchronous operations that finish after a number of polls,
//! idempotent `async_operation_id`s, and a rate limit that answers `RESOURCE_EXHAUSTED` with a
//! retry delay. Tests steer it through [`Double`]: fail the next operation, restart, change
//! things behind the caller's back, count calls.

mod backing;
mod endpoint;
mod service;
mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use temporalio_common::protos::temporal::api::cloud::identity::v1::{
    ServiceAccount, ServiceAccountSpec, User, namespace_access::Permission,
};
use temporalio_common::protos::temporal::api::cloud::namespace::v1::Namespace;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use endpoint::EndpointIdentity;
pub use state::RetryInfo;

/// The API version the vendored protos describe; callers must name one.
pub const API_VERSION_HEADER: &str = "temporal-cloud-api-version";

/// How the double behaves.
#[derive(Clone)]
pub struct Settings {
    /// The account id: namespaces are named `<name>.<account>`.
    pub account: String,
    /// API keys accepted as `Authorization: Bearer <key>`.
    pub api_keys: Vec<String>,
    /// `GetAsyncOperation` calls an operation stays in progress for before it finishes.
    pub polls_to_complete: u32,
    /// Calls allowed at once before the rate limit answers `RESOURCE_EXHAUSTED`.
    pub burst: u32,
    /// Calls per second the limit refills.
    pub calls_per_second: u32,
    /// The delay the rate limit asks callers to wait.
    pub retry_delay: Duration,
    /// The mTLS gRPC address namespaces that accept client certificates report; the
    /// double's own mTLS endpoint's when it serves one.
    pub grpc_address: String,
    /// The gRPC address namespaces that accept API keys report; the double's own API-key
    /// endpoint's when it serves one.
    pub api_key_address: String,
    /// Region ids `GetRegions` lists, such as `aws-us-east-1`.
    pub regions: Vec<String>,
    /// A Temporal frontend (`http://host:port`) on which each namespace is registered as its
    /// creation completes, so that its data path works; real Cloud runs its own.
    pub temporal: Option<String>,
    /// Serve the namespaces' endpoints with this certificate, in front of `temporal` (which
    /// it then requires): over mTLS, accepting only client certificates from a CA some
    /// namespace accepts, and over TLS with an API key, accepting only calls a key's owner
    /// may make on the namespace they name.
    pub endpoint: Option<EndpointIdentity>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("account", &self.account)
            .field("api_keys", &self.api_keys.len())
            .field("grpc_address", &self.grpc_address)
            .field("api_key_address", &self.api_key_address)
            .finish_non_exhaustive()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            account: "plinth-dev".into(),
            api_keys: Vec::new(),
            polls_to_complete: 2,
            burst: 50,
            calls_per_second: 50,
            retry_delay: Duration::from_millis(200),
            grpc_address: "127.0.0.1:7233".into(),
            api_key_address: "127.0.0.1:7234".into(),
            regions: [
                "aws-us-east-1",
                "aws-us-west-2",
                "aws-eu-west-1",
                "gcp-us-central1",
            ]
            .map(String::from)
            .to_vec(),
            temporal: None,
            endpoint: None,
        }
    }
}

/// Why the double could not start.
#[derive(Debug, thiserror::Error)]
pub enum DoubleError {
    /// `endpoint` is set without the `temporal` it would lead to.
    #[error("cloud double: an endpoint needs the Temporal it leads to (Settings::temporal)")]
    EndpointWithoutTemporal,
    /// The listening address could not be bound.
    #[error("cloud double: cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// A running double; dropping it stops the server.
#[derive(Debug)]
pub struct Double {
    address: SocketAddr,
    state: Arc<Mutex<state::State>>,
    server: Mutex<Option<Server>>,
    endpoint: Option<[JoinHandle<()>; 2]>,
    presented: Arc<Mutex<Vec<Vec<u8>>>>,
}

#[derive(Debug)]
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Double {
    /// Starts the double on `address` (port 0 picks a free one).
    pub async fn start(address: &str, mut settings: Settings) -> Result<Self, DoubleError> {
        let listener = bind(address).await?;
        let local = |listener: &TcpListener| {
            listener.local_addr().map_err(|source| DoubleError::Listen {
                address: address.to_owned(),
                source,
            })
        };
        let bound = local(&listener)?;
        let endpoint = match settings.endpoint.clone() {
            None => None,
            Some(identity) => {
                let temporal = settings
                    .temporal
                    .as_ref()
                    .ok_or(DoubleError::EndpointWithoutTemporal)?;
                let temporal = temporal
                    .strip_prefix("http://")
                    .unwrap_or(temporal)
                    .to_owned();
                let mtls = bind(&format!("{}:0", bound.ip())).await?;
                settings.grpc_address = local(&mtls)?.to_string();
                let api_keys = bind(&format!("{}:0", bound.ip())).await?;
                settings.api_key_address = local(&api_keys)?.to_string();
                Some((mtls, api_keys, identity, temporal))
            }
        };
        let state = Arc::new(Mutex::new(state::State::new(settings)));
        let presented = Arc::new(Mutex::new(Vec::new()));
        let endpoint = endpoint.map(|(mtls, api_keys, identity, temporal)| {
            [
                endpoint::serve(
                    mtls,
                    identity.clone(),
                    temporal.clone(),
                    state.clone(),
                    presented.clone(),
                ),
                endpoint::serve_api_keys(api_keys, identity, temporal, state.clone()),
            ]
        });
        let server = serve(listener, state.clone());
        Ok(Self {
            address: bound,
            state,
            server: Mutex::new(Some(server)),
            endpoint,
            presented,
        })
    }

    /// The address namespaces report as their endpoint.
    pub fn grpc_address(&self) -> String {
        self.with(|state| state.settings.grpc_address.clone())
    }

    /// The address namespaces that accept API keys report.
    pub fn api_key_address(&self) -> String {
        self.with(|state| state.settings.api_key_address.clone())
    }

    /// A new API key of the user or service account `owner` (an id) for the namespaces'
    /// endpoint, as Cloud's `CreateApiKey` hands out once.
    pub fn create_api_key(&self, owner: &str) -> String {
        self.with(|state| state.create_api_key(owner))
    }

    /// Renames service account `id` at once, as someone in Cloud's console would.
    pub fn rename_service_account(&self, id: &str, name: &str) {
        self.with(|state| state.rename_service_account(id, name));
    }

    /// Revokes API key `key`; whether it existed.
    pub fn delete_api_key(&self, key: &str) -> bool {
        self.with(|state| state.delete_api_key(key))
    }

    /// Gives the service account `id` `permission` on namespace `<name>.<account>` at once,
    /// as someone in Cloud's console would.
    pub fn set_service_account_permission(&self, id: &str, name: &str, permission: Permission) {
        self.with(|state| state.set_service_account_permission(id, name, permission));
    }

    /// The client certificate (DER) of each connection the endpoint accepted, in order.
    pub fn presented(&self) -> Vec<Vec<u8>> {
        self.presented
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where the double listens (plaintext HTTP/2).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The account's id.
    pub fn account(&self) -> String {
        self.with(|state| state.settings.account.clone())
    }

    /// Stops serving for `down`, keeping every resource and operation, then serves again on
    /// the same address: callers in between see the connection refused.
    pub async fn restart(&self, down: Duration) -> Result<(), DoubleError> {
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            let _ = server.stop.send(());
            server.task.abort();
            let _ = server.task.await;
        }
        tokio::time::sleep(down).await;
        let listener = bind(&self.address.to_string()).await?;
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(serve(listener, self.state.clone()));
        Ok(())
    }

    /// The next operation any mutation starts fails with `reason`.
    pub fn fail_next_operation(&self, reason: &str) {
        self.with(|state| state.fail_next = Some(reason.to_owned()));
    }

    /// Sets how many polls operations take from now on, running ones included.
    pub fn set_polls_to_complete(&self, polls: u32) {
        self.with(|state| state.set_polls_to_complete(polls));
    }

    /// The namespace `<name>.<account>`, as `GetNamespace` would answer.
    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        self.with(|state| state.namespace(name).cloned())
    }

    /// Export sink `name` of namespace `namespace`, short (`orders`) or full.
    pub fn export_sink(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<temporalio_common::protos::temporal::api::cloud::namespace::v1::ExportSink> {
        self.with(|state| {
            let key = state.namespace(namespace)?.namespace.clone();
            state.export_sink(&key, name).ok()
        })
    }

    /// Changes a namespace the way someone in Cloud's console would: no operation, a new
    /// resource version.
    pub fn edit_namespace(&self, name: &str, edit: impl FnOnce(&mut Namespace)) -> bool {
        self.with(|state| state.edit_namespace(name, edit))
    }

    /// Removes a namespace at once, as if deleted outside Plinth.
    pub fn remove_namespace(&self, name: &str) -> bool {
        self.with(|state| state.remove_namespace(name))
    }

    /// Adds an active user with no access; returns its id.
    pub fn add_user(&self, email: &str) -> String {
        self.with(|state| state.add_user(email))
    }

    /// The user with `email`.
    pub fn user(&self, email: &str) -> Option<User> {
        self.with(|state| state.user_by_email(email).cloned())
    }

    /// Removes the user with `email`, as if deleted outside Plinth.
    pub fn remove_user(&self, email: &str) -> bool {
        self.with(|state| state.remove_user(email))
    }

    /// Adds a service account named `name` with no access; returns its id.
    pub fn add_service_account(&self, name: &str) -> String {
        self.with(|state| {
            state.add_service_account(ServiceAccountSpec {
                name: name.to_owned(),
                ..Default::default()
            })
        })
    }

    /// The service account named `name`.
    pub fn service_account(&self, name: &str) -> Option<ServiceAccount> {
        self.with(|state| state.service_account_by_name(name).cloned())
    }

    /// Calls answered so far, by method name, rate-limited and refused ones included.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.with(|state| state.calls.clone())
    }

    /// Calls refused by the rate limit so far.
    pub fn throttled(&self) -> u64 {
        self.with(|state| state.throttled)
    }

    /// Makes `edit` land on a namespace between the caller's read and its next update, as
    /// another writer's would: the update then carries a stale `resource_version`.
    pub fn interfere_with_next_update(&self, edit: impl FnOnce(&mut Namespace) + Send + 'static) {
        self.with(|state| state.interference = Some(Box::new(edit)));
    }

    /// Mutations accepted so far (each started an operation).
    pub fn mutations(&self) -> u64 {
        self.with(|state| state.mutations)
    }

    fn with<T>(&self, f: impl FnOnce(&mut state::State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        if let Some(server) = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            server.task.abort();
        }
        for endpoint in self.endpoint.iter().flatten() {
            endpoint.abort();
        }
    }
}

async fn bind(address: &str) -> Result<TcpListener, DoubleError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| DoubleError::Listen {
            address: address.to_owned(),
            source,
        })
}

fn serve(listener: TcpListener, state: Arc<Mutex<state::State>>) -> Server {
    let (stop, stopped) = oneshot::channel::<()>();
    let service = service::server(state);
    let task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let result = tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(service, incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "cloud double stopped");
        }
    });
    Server { stop, task }
}
