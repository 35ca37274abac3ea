//! Temporal's `WorkflowService` and `OperatorService`, served by forwarding: every call is
//! authorized, its payloads sealed, sent to its namespace's upstream, and the answer's payloads
//! opened. Methods are routed by path, so RPCs newer than the table are forwarded too.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf as _, BufMut as _, Bytes};
use plinth_codec::Codec;
use plinth_codec::server::{AccessCheck, Need};
use plinth_identity::Identity;
use tonic::codec::{CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::{Status, body::Body};

use crate::admins::Admins;
use crate::metrics::ProxyMetrics;
use crate::routes::Routes;
use crate::rpc::{Class, Rpc, conventional_namespace};
use crate::upstream::Upstreams;

/// Temporal's own limit on a gRPC message; histories can be large.
const MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;

/// What every forwarded call needs.
#[derive(Debug)]
pub struct FrontDoor {
    /// Seals and opens payloads.
    pub codec: Arc<Codec>,
    /// Who may read and write each namespace.
    pub access: Arc<dyn AccessCheck>,
    /// Who may call `Admin` RPCs.
    pub admins: Admins,
    /// Namespace to upstream.
    pub routes: Arc<Routes>,
    /// Channels to upstreams.
    pub upstreams: Arc<Upstreams>,
    /// Where namespace-less and admin RPCs go.
    pub default_upstream: String,
    /// What the proxy counts.
    pub metrics: Arc<ProxyMetrics>,
}

/// A call's outcome, and the namespace label it is counted under.
struct Outcome {
    namespace: String,
    result: Result<tonic::Response<Bytes>, Status>,
}

impl FrontDoor {
    async fn call(
        &self,
        path: &str,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<Bytes>, Status> {
        let started = Instant::now();
        let rpc = Rpc::at(path);
        let class = rpc.map_or(Class::Write, |rpc| rpc.class);
        let outcome = self.forward(path, rpc, class, request).await;
        let code = outcome
            .result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics
            .request(&outcome.namespace, class.as_str(), code, started.elapsed());
        outcome.result
    }

    async fn forward(
        &self,
        path: &str,
        rpc: Option<&'static Rpc>,
        class: Class,
        request: tonic::Request<Bytes>,
    ) -> Outcome {
        let method = path.rsplit('/').next().unwrap_or(path);
        let namespace = match namespace_of(rpc, path, method, request.get_ref()) {
            Ok(namespace) => namespace,
            Err(status) => {
                return Outcome {
                    namespace: String::new(),
                    result: Err(status),
                };
            }
        };
        let routed = match self.admit(method, class, &namespace, &request).await {
            Ok(endpoint) => endpoint,
            Err(status) => {
                // Names clients made up stay out of the metrics' label values.
                let known = status.code() == tonic::Code::PermissionDenied;
                return Outcome {
                    namespace: if known { namespace } else { String::new() },
                    result: Err(status),
                };
            }
        };
        let result = self
            .exchange(path, method, rpc, &namespace, &routed, request)
            .await;
        Outcome { namespace, result }
    }

    /// Authorizes the call and finds its upstream.
    async fn admit(
        &self,
        method: &str,
        class: Class,
        namespace: &str,
        request: &tonic::Request<Bytes>,
    ) -> Result<String, Status> {
        let identity = crate::platform::caller(request)?;
        let need = match class {
            Class::Open => return Ok(self.default_upstream.clone()),
            Class::Admin if self.admins.include(&identity) => {
                tracing::info!(%identity, method, decision = "allow", "admin RPC");
                return Ok(self.default_upstream.clone());
            }
            Class::Admin => {
                let message = format!(
                    "{identity} may not call {method}: it changes the cluster or a namespace's \
                     registration, which needs membership of {:?}",
                    self.admins.group()
                );
                return Err(self.deny(&identity, method, namespace, "admin", message));
            }
            Class::Read => Need::Read,
            Class::Write => Need::Write,
        };
        if namespace.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{method}: the request names no namespace"
            )));
        }
        let endpoint = self
            .routes
            .endpoint(namespace)
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the namespace table: {e}")))?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "namespace {namespace:?} is not served here: no Ready Plinth namespace has that name"
                ))
            })?;
        let allowed = self
            .access
            .allows(namespace, &identity, need)
            .await
            .map_err(|e| {
                Status::unavailable(format!("cannot read the access list of {namespace:?}: {e}"))
            })?;
        if !allowed {
            return Err(self.deny(
                &identity,
                method,
                namespace,
                need.as_str(),
                format!(
                    "{identity} has no {} access to namespace {namespace:?} ({method} needs it)",
                    need.as_str()
                ),
            ));
        }
        Ok(endpoint)
    }

    fn deny(
        &self,
        identity: &Identity,
        method: &str,
        namespace: &str,
        missing: &'static str,
        message: String,
    ) -> Status {
        tracing::warn!(%identity, method, namespace, missing, decision = "deny", "authorization");
        self.metrics.denial(namespace, missing);
        Status::permission_denied(message)
    }

    /// Seals, sends, opens.
    async fn exchange(
        &self,
        path: &str,
        method: &str,
        rpc: Option<&'static Rpc>,
        namespace: &str,
        endpoint: &str,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<Bytes>, Status> {
        let (mut metadata, _, mut body) = request.into_parts();
        // The body goes on uncompressed, whatever the client sent.
        metadata.remove("grpc-encoding");
        metadata.remove("grpc-accept-encoding");
        if let Some(seal) = rpc.and_then(|rpc| rpc.seal_request)
            && !namespace.is_empty()
        {
            let sealed = seal(&body, &self.codec, namespace)
                .map_err(|e| Status::invalid_argument(format!("{method}: {e}")))?;
            self.metrics.encrypted(sealed.payload_bytes);
            if let Some(message) = sealed.message {
                body = Bytes::from(message);
            }
        }
        let upstream = self
            .upstreams
            .client(endpoint)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut grpc = tonic::client::Grpc::with_origin(upstream.client, upstream.origin)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("upstream {endpoint}: {e}")))?;
        let path = http::uri::PathAndQuery::try_from(path)
            .map_err(|e| Status::invalid_argument(format!("{path}: {e}")))?;
        let request = tonic::Request::from_parts(metadata, Default::default(), body);
        let response = grpc
            .unary(request, path, RawCodec)
            .await
            .map_err(|status| upstream_status(endpoint, status))?;
        let Some((rpc, open)) = rpc
            .and_then(|rpc| Some((rpc, rpc.open_response?)))
            .filter(|_| !namespace.is_empty())
        else {
            return Ok(response);
        };
        let (metadata, body, extensions) = response.into_parts();
        let opened = open(&body, &self.codec, namespace).map_err(|e| {
            Status::internal(format!(
                "{method}: upstream answered a bad {}: {e}",
                rpc.response_type
            ))
        })?;
        self.metrics
            .decrypted(opened.payload_bytes, opened.undecryptable);
        let body = opened.message.map_or(body, Bytes::from);
        Ok(tonic::Response::from_parts(metadata, body, extensions))
    }
}

/// The namespace a request names: from the table's field for known RPCs, else by convention.
fn namespace_of(
    rpc: Option<&Rpc>,
    path: &str,
    method: &str,
    body: &[u8],
) -> Result<String, Status> {
    match rpc {
        Some(rpc) => (rpc.namespace)(body)
            .map_err(|e| Status::invalid_argument(format!("{method}: malformed request: {e}"))),
        None => {
            tracing::warn!(
                path,
                "RPC unknown to this proxy: forwarded as a write, its payloads unencrypted"
            );
            Ok(conventional_namespace(body).unwrap_or_default())
        }
    }
}

/// Transport failures reach clients as `UNAVAILABLE` (which SDKs retry), whatever layer
/// noticed them; Temporal's own answers pass unchanged.
fn upstream_status(endpoint: &str, status: Status) -> Status {
    let transport = status.metadata().is_empty()
        && matches!(status.code(), tonic::Code::Unknown | tonic::Code::Internal)
        && std::error::Error::source(&status).is_some();
    if transport {
        return Status::unavailable(format!("upstream {endpoint}: {}", status.message()));
    }
    status
}

/// Messages as the bytes they arrived as.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The names the forwarded services are served under.
pub trait ServiceName: Send + Sync + 'static {
    /// Fully qualified gRPC service name.
    const NAME: &'static str;
}

/// `temporal.api.workflowservice.v1.WorkflowService`.
#[derive(Debug)]
pub enum WorkflowService {}

impl ServiceName for WorkflowService {
    const NAME: &'static str = "temporal.api.workflowservice.v1.WorkflowService";
}

/// `temporal.api.operatorservice.v1.OperatorService`.
#[derive(Debug)]
pub enum OperatorService {}

impl ServiceName for OperatorService {
    const NAME: &'static str = "temporal.api.operatorservice.v1.OperatorService";
}

/// One Temporal service, forwarded through `door`.
#[derive(Debug)]
pub struct Forwarded<N> {
    door: Arc<FrontDoor>,
    name: PhantomData<fn() -> N>,
}

impl<N> Forwarded<N> {
    /// The service, forwarding through `door`.
    pub fn new(door: Arc<FrontDoor>) -> Self {
        Self {
            door,
            name: PhantomData,
        }
    }
}

impl<N> Clone for Forwarded<N> {
    fn clone(&self) -> Self {
        Self::new(self.door.clone())
    }
}

impl<N: ServiceName> NamedService for Forwarded<N> {
    const NAME: &'static str = N::NAME;
}

/// One call, as tonic's server machinery drives it.
struct Call {
    door: Arc<FrontDoor>,
    path: String,
}

impl tonic::server::UnaryService<Bytes> for Call {
    type Response = Bytes;
    type Future = tonic::codegen::BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let door = self.door.clone();
        let path = std::mem::take(&mut self.path);
        Box::pin(async move { door.call(&path, request).await })
    }
}

impl<N, B> tonic::codegen::Service<http::Request<B>> for Forwarded<N>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = Call {
            door: self.door.clone(),
            path: request.uri().path().to_owned(),
        };
        Box::pin(async move {
            // SDKs (Go's, so the CLI's) compress requests; answers go back plain.
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .apply_max_message_size_config(Some(MAX_MESSAGE_BYTES), Some(MAX_MESSAGE_BYTES));
            Ok(grpc.unary(call, request).await)
        })
    }
}
