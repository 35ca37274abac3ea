//! The Ops API connection: the API key (re-read when its file changes, never shown), the
//! headers every call carries, retries of rate limits and outages, and waiting on the
//! asynchronous operations every mutation starts.

use std::time::Duration;

use plinth_identity::{Secret, SecretSource};

use temporalio_client::tonic::metadata::MetadataValue;
use temporalio_client::tonic::service::interceptor::InterceptedService;
use temporalio_client::tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use temporalio_client::tonic::{Code, Request, Status};
use temporalio_common::protos::temporal::api::cloud::cloudservice::v1::GetAsyncOperationRequest;
use temporalio_common::protos::temporal::api::cloud::cloudservice::v1::cloud_service_client::CloudServiceClient;
use temporalio_common::protos::temporal::api::cloud::operation::v1::{
    AsyncOperation, async_operation,
};

use crate::backend::{BackendError, progress};

/// The API version of the vendored protos (`api_cloud_upstream/VERSION`).
pub const API_VERSION: &str = "v0.17.0";
const API_VERSION_HEADER: &str = "temporal-cloud-api-version";
/// How long a call waits out rate limits and outages before failing to Temporal's retry.
const RETRY_PATIENCE: Duration = Duration::from_secs(60);
/// The longest pause between polls of an operation, and between retries.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// A call with no answer by then has failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Adds the API key and version to every call.
#[derive(Clone)]
pub(super) struct Credentials {
    authorization: MetadataValue<temporalio_client::tonic::metadata::Ascii>,
}

impl temporalio_client::tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        metadata.insert(API_VERSION_HEADER, MetadataValue::from_static(API_VERSION));
        Ok(request)
    }
}

pub(super) type Client = CloudServiceClient<InterceptedService<Channel, Credentials>>;

/// The Ops API at one endpoint, with one account's key.
#[derive(Debug)]
pub(super) struct Ops {
    channel: Channel,
    key: Secret,
}

impl Ops {
    /// Connects lazily to `endpoint` (`https://…`, or `http://…` for a local stand-in).
    pub(super) fn new(endpoint: &str, key: SecretSource) -> Result<Self, BackendError> {
        let invalid = |e: &dyn std::fmt::Display| {
            BackendError::Rejected(format!("[backend] endpoint {endpoint:?}: {e}"))
        };
        let mut builder = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| invalid(&e))?
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(10));
        if endpoint.starts_with("https://") {
            builder = builder
                .tls_config(ClientTlsConfig::new().with_enabled_roots())
                .map_err(|e| invalid(&e))?;
        }
        Ok(Self {
            channel: builder.connect_lazy(),
            key: Secret::new("[backend] api_key", key),
        })
    }

    fn client(&self) -> Result<Client, BackendError> {
        let rejected = |e: plinth_identity::SecretError| {
            BackendError::Rejected(format!("the Temporal Cloud API key: {e}"))
        };
        let bearer = self.key.bearer().map_err(rejected)?;
        let mut authorization =
            MetadataValue::try_from(bearer).expect("bearer() holds visible ASCII only");
        authorization.set_sensitive(true);
        Ok(CloudServiceClient::with_interceptor(
            self.channel.clone(),
            Credentials { authorization },
        ))
    }

    /// Calls `f` until it is neither rate-limited nor unavailable, waiting what the server
    /// asks (`google.rpc.RetryInfo`) or backing off, for at most [`RETRY_PATIENCE`].
    pub(super) async fn call<T, F, Fut>(&self, method: &str, mut f: F) -> Result<T, BackendError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        self.call_status(method, &mut f)
            .await?
            .map_err(|status| classify(method, status))
    }

    /// Like [`Ops::call`], but gives back the final status for the caller to interpret.
    pub(super) async fn call_status<T, F, Fut>(
        &self,
        method: &str,
        f: &mut F,
    ) -> Result<Result<T, Status>, BackendError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let deadline = tokio::time::Instant::now() + RETRY_PATIENCE;
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = f(self.client()?).await;
            let status = match result {
                Err(status)
                    if matches!(status.code(), Code::ResourceExhausted | Code::Unavailable) =>
                {
                    status
                }
                result => return Ok(result),
            };
            let wait = retry_delay(&status).unwrap_or(backoff);
            if tokio::time::Instant::now() + wait > deadline {
                return Err(BackendError::Unavailable(format!(
                    "Temporal Cloud {method}: still {:?} after {}s: {}",
                    status.code(),
                    RETRY_PATIENCE.as_secs(),
                    status.message()
                )));
            }
            tracing::debug!(method, code = ?status.code(), wait_ms = wait.as_millis() as u64, "Ops API asked to wait");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_DELAY);
        }
    }

    /// Polls `operation` until it ends, recording it with the caller's progress; a failed,
    /// rejected or cancelled operation is `Rejected` with Cloud's reason.
    pub(super) async fn wait(
        &self,
        operation: AsyncOperation,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let id = operation.id.clone();
        let mut operation = operation;
        loop {
            progress::record(&id).await;
            match async_operation::State::try_from(operation.state) {
                Ok(async_operation::State::Fulfilled) => return Ok(()),
                Ok(
                    state @ (async_operation::State::Failed
                    | async_operation::State::Rejected
                    | async_operation::State::Cancelled),
                ) => {
                    return Err(BackendError::Rejected(format!(
                        "Temporal Cloud operation {id} ({}) {}: {}",
                        operation.operation_type,
                        state
                            .as_str_name()
                            .trim_start_matches("STATE_")
                            .to_lowercase(),
                        operation.failure_reason
                    )));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::Unavailable(format!(
                    "Temporal Cloud operation {id} ({}) still running after {}s",
                    operation.operation_type,
                    timeout.as_secs()
                )));
            }
            let pause = operation
                .check_duration
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(50), MAX_DELAY);
            tokio::time::sleep(pause).await;
            operation = self.operation(&id).await?.ok_or_else(|| {
                BackendError::Unavailable(format!("Temporal Cloud operation {id}: not found"))
            })?;
        }
    }

    /// Operation `id` as Cloud reports it now; `None` when Cloud knows no such operation.
    pub(super) async fn operation(&self, id: &str) -> Result<Option<AsyncOperation>, BackendError> {
        let request = GetAsyncOperationRequest {
            async_operation_id: id.to_owned(),
        };
        let response = self
            .found("GetAsyncOperation", &mut |mut client| {
                let request = request.clone();
                async move { client.get_async_operation(request).await }
            })
            .await?;
        Ok(response.and_then(|r| r.async_operation))
    }

    /// Like [`Ops::call`] for a read of one resource: `None` when Cloud has no such resource.
    pub(super) async fn found<T, F, Fut>(
        &self,
        method: &str,
        f: &mut F,
    ) -> Result<Option<T>, BackendError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<temporalio_client::tonic::Response<T>, Status>>,
    {
        match self.call_status(method, f).await? {
            Ok(response) => Ok(Some(response.into_inner())),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(classify(method, status)),
        }
    }
}

/// `google.rpc.RetryInfo`, as servers attach it to a `RESOURCE_EXHAUSTED` status.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<prost_wkt_types::Duration>,
}

/// The wait the server asked for, if it did.
fn retry_delay(status: &Status) -> Option<Duration> {
    use prost::Message;
    let details = temporalio_common::protos::google::rpc::Status::decode(status.details()).ok()?;
    let info = details
        .details
        .iter()
        .find(|any| any.type_url.ends_with("/google.rpc.RetryInfo"))?;
    let delay = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
    Duration::try_from(delay).ok().map(|d| d.min(MAX_DELAY * 6))
}

/// Passing faults are worth retrying; anything else is a refusal, named with the method.
pub(super) fn classify(method: &str, status: Status) -> BackendError {
    let message = format!(
        "Temporal Cloud {method}: {:?}: {}",
        status.code(),
        status.message()
    );
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => BackendError::Unavailable(message),
        _ => BackendError::Rejected(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_delay_is_read_from_the_status_details() {
        use prost::Message;
        let info = RetryInfo {
            retry_delay: Some(prost_wkt_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
        };
        let details = temporalio_common::protos::google::rpc::Status {
            code: Code::ResourceExhausted as i32,
            message: "slow down".into(),
            details: vec![prost_wkt_types::Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info.encode_to_vec(),
            }],
        };
        let status = Status::with_details(
            Code::ResourceExhausted,
            "slow down",
            details.encode_to_vec().into(),
        );
        assert_eq!(retry_delay(&status), Some(Duration::from_secs(2)));
    }
}
