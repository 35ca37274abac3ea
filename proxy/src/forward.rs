//! Temporal's `WorkflowService` and `OperatorService`, served by forwarding: every call is
//! authorized, its payloads sealed, sent to its namespace's upstream, and the answer's payloads
//! opened. Methods are routed by path, so RPCs newer than the table are forwarded too. Calls
//! are relayed as HTTP/2 exchanges: a message is decoded only to read its namespace or change
//! its payloads, and goes on as the bytes it came as otherwise.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::StreamBody;
use plinth_codec::Codec;
use plinth_control::{AccessCheck, Admins, AuditSink, Need};
use plinth_identity::{Caller, Identity};
use plinth_proto::audit::AuditRecord;
use tonic::codegen::http::{self, HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use tonic::{Code, Status, body::Body};

use crate::frame::{GRPC_ENCODING, MAX_RESPONSE_BYTES, frame, unframe};
use crate::health::TemporalHealth;
use crate::metrics::ProxyMetrics;
use crate::nexus::{NexusEndpoints, Target};
use crate::payloads::{self, Named, Transformed};
use crate::request::{Budgets, ConnectionBudget, Message, RequestBody};
use crate::routes::Routes;
use crate::rpc::{Class, Rpc, conventional_namespace};
use crate::schema::{SCHEMA, STATUS};
use crate::upstream::{Reply, Upstreams};

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
    /// Where Nexus endpoints send operations.
    pub nexus: NexusEndpoints,
    /// What the front door accepts.
    pub settings: DoorSettings,
    /// Request bytes it may hold while reading them: see [`DoorSettings`].
    pub budgets: Budgets,
    /// Where its refusals are recorded.
    pub audit: Arc<dyn AuditSink>,
    /// Whether the platform's Temporal answers.
    pub temporal: Arc<TemporalHealth>,
    /// Set once the proxy is shutting down: readiness is false from then on.
    pub draining: std::sync::atomic::AtomicBool,
}

/// What the front door accepts from clients.
#[derive(Debug, Clone)]
pub struct DoorSettings {
    /// Forward RPCs missing from the reviewed table (as writes, their payloads unencrypted)
    /// instead of refusing them with `UNIMPLEMENTED`.
    pub forward_unknown_rpcs: bool,
    /// The largest request message, before and after decompression.
    pub max_message_bytes: usize,
    /// Calls one client connection may have open at once: each long poll holds one.
    pub max_streams_per_connection: u32,
    /// Request bytes all connections' calls may hold at once while they are read, decompressed
    /// and sealed (a compressed one counts as what it may decompress to).
    pub max_buffered_bytes: usize,
    /// The same, for one connection's calls.
    pub max_buffered_bytes_per_connection: usize,
    /// TLS handshakes under way at once, from all clients and from one IP address; a
    /// connection past either is dropped.
    pub max_handshakes: usize,
    /// See `max_handshakes`.
    pub max_handshakes_per_peer: usize,
    /// A TLS handshake not finished within this is dropped.
    pub handshake_timeout: std::time::Duration,
    /// A request whose body has not arrived whole within this is refused, and gives back what
    /// it reserved of the budgets.
    pub request_body_timeout: std::time::Duration,
    /// Calls in flight at once, in all and of one caller.
    pub limits: crate::CallLimits,
    /// On shutdown, how long the proxy reports not ready while it still accepts connections,
    /// so a load balancer stops sending it new ones first.
    pub shutdown_delay: std::time::Duration,
    /// Then, how long calls in flight have to finish after GOAWAY; long polls still waiting
    /// are answered as Temporal answers a poll that found no task, other calls `UNAVAILABLE`.
    pub shutdown_grace: std::time::Duration,
}

impl Default for DoorSettings {
    fn default() -> Self {
        Self {
            forward_unknown_rpcs: false,
            // What Temporal's frontend accepts: gRPC-Go's default receive limit, which it does
            // not raise (measured on the dev server: 4,300,000 bytes are refused with "larger
            // than max 4194304").
            max_message_bytes: 4 << 20,
            max_streams_per_connection: 1024,
            max_buffered_bytes: 256 << 20,
            max_buffered_bytes_per_connection: 32 << 20,
            max_handshakes: 1024,
            max_handshakes_per_peer: 64,
            handshake_timeout: std::time::Duration::from_secs(10),
            request_body_timeout: std::time::Duration::from_secs(10),
            limits: crate::CallLimits::default(),
            shutdown_delay: std::time::Duration::ZERO,
            shutdown_grace: std::time::Duration::from_secs(20),
        }
    }
}

/// Who a call is from, and where it goes.
struct Admitted {
    identity: Identity,
    /// The upstream endpoint.
    endpoint: String,
}

/// A call's outcome, and the namespace label it is counted under.
struct Outcome {
    namespace: String,
    result: Result<Answer, Status>,
}

/// Upstream's answer: its status code, and the response that carries it back.
struct Answer {
    code: Code,
    response: http::Response<Body>,
}

impl FrontDoor {
    /// Forwards one call of `caller`'s connection, which spends `budget`.
    pub(crate) async fn call<B>(
        &self,
        request: http::Request<B>,
        caller: &Caller,
        budget: &ConnectionBudget,
    ) -> http::Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let started = Instant::now();
        let rpc = Rpc::at(request.uri().path());
        let class = rpc.map_or(Class::Write, |rpc| rpc.class);
        let outcome = self.forward(rpc, class, request, caller, budget).await;
        let (code, response) = match outcome.result {
            Ok(answer) => (answer.code, answer.response),
            Err(status) => (status.code(), status.into_http()),
        };
        self.metrics
            .request(&outcome.namespace, class.as_str(), code, started.elapsed());
        response
    }

    async fn forward<B>(
        &self,
        rpc: Option<&'static Rpc>,
        class: Class,
        request: http::Request<B>,
        caller: &Caller,
        budget: &ConnectionBudget,
    ) -> Outcome
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let (parts, body) = request.into_parts();
        let http::request::Parts { uri, headers, .. } = parts;
        let path = uri.path();
        let method = method_name(path);
        let unnamed = |status| Outcome {
            namespace: String::new(),
            result: Err(status),
        };
        // Who calls, and whether the RPC is understood, before a byte of the body is read.
        let identity = match caller.identity() {
            Ok(identity) => identity,
            Err(status) => return unnamed(status),
        };
        if rpc.is_none() && !self.settings.forward_unknown_rpcs {
            tracing::warn!(path, "RPC unknown to this proxy: refused");
            return unnamed(Status::unimplemented(format!(
                "{path}: this proxy does not know this RPC, so it can neither authorize it nor \
                 encrypt its payloads ([proxy] unknown_rpcs = \"forward\" passes it on as a write)"
            )));
        }
        let encoding = headers.get(&GRPC_ENCODING);
        let mut body = RequestBody::new(
            method,
            body,
            self.settings.max_message_bytes,
            self.settings.request_body_timeout,
            &self.metrics,
        );
        if let Err(status) = body.head(&self.budgets, Some(budget)).await {
            return unnamed(status);
        }
        // Where its first bytes name the namespace, the caller's access to it is checked
        // before the rest is read.
        let early = match rpc {
            Some(rpc) => match body.peek_namespace(rpc, encoding).await {
                Ok(early) => early,
                Err(status) => return unnamed(status),
            },
            None => None,
        };
        let admitted_early = match &early {
            Some(namespace) => match self.admit(method, class, namespace, identity).await {
                Ok(admitted) => Some(admitted),
                Err(status) => return self.refused(namespace.clone(), status),
            },
            None => None,
        };
        let message = match body.finish(encoding).await {
            Ok(message) => message,
            Err(status) => return unnamed(status),
        };
        let namespace = match namespace_of(rpc, path, method, &message.message) {
            Ok(namespace) => namespace,
            Err(status) => return unnamed(status),
        };
        let admitted = match (admitted_early, early) {
            (Some(admitted), Some(early)) if early == namespace => admitted,
            // The last occurrence counts, as upstream: a request naming one namespace first
            // and another later is refused.
            (Some(_), Some(early)) => {
                return unnamed(Status::invalid_argument(format!(
                    "{method}: the request names namespace {early:?} and then {namespace:?}"
                )));
            }
            _ => match self.admit(method, class, &namespace, identity).await {
                Ok(admitted) => admitted,
                Err(status) => return self.refused(namespace, status),
            },
        };
        let result = self
            .exchange(&uri, headers, rpc, &admitted, &namespace, message)
            .await;
        Outcome { namespace, result }
    }

    /// The outcome of a call refused by `admit`.
    fn refused(&self, namespace: String, status: Status) -> Outcome {
        // Names clients made up stay out of the metrics' label values.
        let known = status.code() == Code::PermissionDenied;
        Outcome {
            namespace: if known { namespace } else { String::new() },
            result: Err(status),
        }
    }

    /// Authorizes the call and finds its upstream.
    async fn admit(
        &self,
        method: &str,
        class: Class,
        namespace: &str,
        identity: &Identity,
    ) -> Result<Admitted, Status> {
        let admitted = |endpoint| Admitted {
            identity: identity.clone(),
            endpoint,
        };
        let need = match class {
            Class::Open => return Ok(admitted(self.default_upstream.clone())),
            Class::Admin if self.admins.include(identity) => {
                tracing::info!(%identity, method, decision = "allow", "admin RPC");
                return Ok(admitted(self.default_upstream.clone()));
            }
            Class::Admin => {
                let message = format!(
                    "{identity} may not call {method}: it changes the cluster or a namespace's \
                     registration, which needs membership of {:?}",
                    self.admins.group()
                );
                return Err(self.deny(identity, method, namespace, "admin", message));
            }
            Class::Read => Need::Read,
            Class::Write => Need::Write,
        };
        if namespace.is_empty() {
            return Err(Status::invalid_argument(format!(
                "{method}: the request names no namespace"
            )));
        }
        let endpoint = self.route(namespace, identity).await?.ok_or_else(|| {
            Status::not_found(format!(
                "namespace {namespace:?} is not served here: no Ready Plinth namespace has that name"
            ))
        })?;
        // Before the access list, which is read from there too.
        if let Some(why) = self.temporal.unreachable_at(&endpoint) {
            return Err(Status::unavailable(why));
        }
        let allowed = self.allows(namespace, identity, need).await?;
        if !allowed {
            return Err(self.deny(
                identity,
                method,
                namespace,
                need.as_str(),
                format!(
                    "{identity} has no {} access to namespace {namespace:?} ({method} needs it)",
                    need.as_str()
                ),
            ));
        }
        Ok(admitted(endpoint))
    }

    /// Authorizes write on every namespace a request acts on besides its own (child workflows,
    /// external signals and cancels, Nexus operations through their endpoint's target); returns
    /// each Nexus endpoint's target namespace, for sealing.
    async fn admit_elsewhere(
        &self,
        message: &[u8],
        carrier: crate::schema::Carrier,
        identity: &Identity,
        namespace: &str,
        endpoint: &str,
        method: &str,
    ) -> Result<HashMap<String, String>, Status> {
        let named = payloads::named(message, carrier)
            .map_err(|e| Status::invalid_argument(format!("{method}: {e}")))?;
        let mut targets = HashMap::new();
        let mut namespaces = BTreeSet::new();
        for name in named {
            match name {
                Named::Namespace(other) => {
                    namespaces.insert(other);
                }
                Named::NexusEndpoint(name) => {
                    let upstream = self.upstream(endpoint)?;
                    if let Target::Namespace(other) =
                        self.nexus.target(&upstream, endpoint, &name).await?
                    {
                        namespaces.insert(other.clone());
                        targets.insert(name, other);
                    }
                }
            }
        }
        for other in namespaces.iter().filter(|other| *other != namespace) {
            // Names a client made up are not looked up, cached or counted.
            if self.route(other, identity).await?.is_none() {
                return Err(Status::not_found(format!(
                    "{method} acts on namespace {other:?}, which is not served here: no Ready \
                     Plinth namespace has that name"
                )));
            }
            if !self.allows(other, identity, Need::Write).await? {
                return Err(self.deny(
                    identity,
                    method,
                    other,
                    "write",
                    format!(
                        "{identity} has no write access to namespace {other:?}, which this \
                         {method} acts on"
                    ),
                ));
            }
        }
        Ok(targets)
    }

    /// Opens `message`'s payloads for `namespace`, and for the other namespaces they were
    /// sealed for that `identity` may read (a child's result in its parent's history).
    async fn open(
        &self,
        message: Bytes,
        carrier: crate::schema::Carrier,
        identity: &Identity,
        namespace: &str,
    ) -> Result<Transformed, payloads::TransformError> {
        let first = {
            let (codec, message, namespace) =
                (self.codec.clone(), message.clone(), namespace.to_owned());
            off_thread(codec_work(&codec, message.len()), move || {
                payloads::open(&message, carrier, &codec, &namespace, &BTreeSet::new())
            })
            .await?
        };
        if first.foreign.is_empty() {
            return Ok(first);
        }
        let mut readable = BTreeSet::new();
        for other in &first.foreign {
            // A namespace that cannot be checked stays closed.
            if matches!(self.route(other, identity).await, Ok(Some(_)))
                && matches!(self.allows(other, identity, Need::Read).await, Ok(true))
            {
                readable.insert(other.clone());
            }
        }
        if readable.is_empty() {
            return Ok(first);
        }
        // Again from the answer as it came, so that only its own payloads are opened, never
        // one that the first pass found inside another.
        let (codec, namespace) = (self.codec.clone(), namespace.to_owned());
        off_thread(codec_work(&codec, message.len()), move || {
            payloads::open(&message, carrier, &codec, &namespace, &readable)
        })
        .await
    }

    /// The upstream of `namespace`, when it is a Ready Plinth namespace this proxy routes;
    /// looking up a name it does not know counts against `caller`'s share.
    async fn route(&self, namespace: &str, caller: &Identity) -> Result<Option<String>, Status> {
        self.routes
            .endpoint(namespace, caller)
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the namespace table: {e}")))
    }

    /// Whether `identity` has `need` on `namespace`.
    async fn allows(
        &self,
        namespace: &str,
        identity: &Identity,
        need: Need,
    ) -> Result<bool, Status> {
        self.access
            .allows(namespace, identity, need)
            .await
            .map_err(|e| {
                Status::unavailable(format!("cannot read the access list of {namespace:?}: {e}"))
            })
    }

    /// The client of upstream `endpoint`; none while that is the platform's Temporal and it
    /// does not answer, so calls fail at once instead of each waiting out its deadline.
    fn upstream(&self, endpoint: &str) -> Result<Arc<crate::upstream::Upstream>, Status> {
        if let Some(why) = self.temporal.unreachable_at(endpoint) {
            return Err(Status::unavailable(why));
        }
        self.upstreams
            .client(endpoint)
            .map_err(|e| Status::unavailable(e.to_string()))
    }

    /// Opens the payloads in an error's details (a failed query's failure, say).
    async fn open_details(
        &self,
        headers: &mut HeaderMap,
        identity: &Identity,
        namespace: &str,
    ) -> Result<(), Status> {
        use base64::Engine as _;
        let Some(details) = headers.get(&DETAILS) else {
            return Ok(());
        };
        let Some(carrier) = SCHEMA.carrier(STATUS) else {
            return Ok(());
        };
        // Malformed details go on as they came: the client's decoder reports them.
        let Ok(status) = DETAILS_BASE64.decode(details.as_bytes()) else {
            return Ok(());
        };
        match self.open(status.into(), carrier, identity, namespace).await {
            Ok(opened) => {
                self.metrics
                    .decrypted(opened.payload_bytes, opened.undecryptable);
                if let Some(status) = opened.message {
                    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status);
                    if let Ok(value) = HeaderValue::try_from(encoded) {
                        headers.insert(DETAILS, value);
                    }
                }
            }
            // Left sealed, the details would reach a client that cannot read them.
            Err(error) if payloads::provider_down(&error) => {
                return Err(Status::unavailable(format!("error details: {error}")));
            }
            Err(error) => tracing::warn!(namespace, %error, "error details left as they came"),
        }
        Ok(())
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
        self.audit.record(
            AuditRecord::now(
                identity.to_string(),
                "proxy.refused",
                format!("rpc/{method}"),
                plinth_proto::outcome::DENIED,
            )
            .in_namespace(namespace)
            .detail(format!("needs {missing} access")),
        );
        Status::permission_denied(message)
    }

    /// Seals, sends, opens.
    async fn exchange(
        &self,
        uri: &http::Uri,
        headers: HeaderMap,
        rpc: Option<&'static Rpc>,
        admitted: &Admitted,
        namespace: &str,
        message: Message,
    ) -> Result<Answer, Status> {
        let Admitted { identity, endpoint } = admitted;
        let method = method_name(uri.path());
        let mut body = message.body;
        let mut plain = message.message;
        if let Some(field) = rpc.and_then(|rpc| rpc.identity_field) {
            let stamped = crate::wire::replace_field(&plain, field, |claimed| {
                recorded_identity(identity, claimed)
            })
            .map_err(|e| Status::invalid_argument(format!("{method}: malformed request: {e}")))?;
            plain = Bytes::from(stamped);
            body = frame(&plain);
        }
        if let Some(carrier) = rpc.and_then(|rpc| rpc.request_payloads)
            && !namespace.is_empty()
        {
            let targets = if SCHEMA.acts_elsewhere(carrier) {
                self.admit_elsewhere(&plain, carrier, identity, namespace, endpoint, method)
                    .await?
            } else {
                HashMap::new()
            };
            let sealed = {
                let (codec, plain, namespace, caller) = (
                    self.codec.clone(),
                    plain.clone(),
                    namespace.to_owned(),
                    identity.clone(),
                );
                let held = message.reserved.clone();
                off_thread(codec_work(&codec, plain.len()), move || {
                    let _held = held;
                    payloads::seal(&plain, carrier, &codec, &namespace, &targets, Some(&caller))
                })
                .await
            }
            .map_err(|e| {
                if payloads::provider_down(&e) {
                    Status::unavailable(format!("{method}: {e}"))
                } else {
                    Status::invalid_argument(format!("{method}: {e}"))
                }
            })?;
            self.metrics.encrypted(sealed.payload_bytes);
            self.metrics.unknown(&sealed);
            if let Some(message) = sealed.message {
                body = frame(&message);
            }
        }
        let upstream = self.upstream(endpoint)?;
        // The path alone, without a query: it is what was authorized.
        let path = match uri.path_and_query() {
            Some(path) if path.query().is_none() => path.clone(),
            _ => uri
                .path()
                .parse()
                .map_err(|e| Status::invalid_argument(format!("{method}: bad path: {e}")))?,
        };
        // Read and sealed: what it held of the budgets goes back.
        drop(message.reserved);
        let headers = upstream_headers(&headers, namespace);
        let reply = upstream
            .call(Some(&path), headers, body)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let unavailable = |why: String| Status::unavailable(format!("upstream {endpoint}: {why}"));
        if reply.head.status != StatusCode::OK {
            return Err(unavailable(format!(
                "answered HTTP {} instead of a gRPC response",
                reply.head.status
            )));
        }
        // The code alone: the message and details go on to the client as they came.
        let code = reply
            .code()
            .ok_or_else(|| unavailable("answered without a grpc-status".into()))?;
        let Reply {
            head: mut parts,
            mut body,
            mut trailers,
        } = reply;
        if code != Code::Ok && !namespace.is_empty() {
            let headers = trailers.as_mut().unwrap_or(&mut parts.headers);
            self.open_details(headers, identity, namespace).await?;
        }
        if let Some((rpc, carrier)) = rpc
            .and_then(|rpc| Some((rpc, rpc.response_payloads?)))
            .filter(|_| code == Code::Ok && !namespace.is_empty())
        {
            let bad = |e: &dyn std::fmt::Display| {
                Status::internal(format!(
                    "{method}: upstream answered a bad {}: {e}",
                    rpc.response_type
                ))
            };
            let unframed = unframe(&body, parts.headers.get(&GRPC_ENCODING), MAX_RESPONSE_BYTES)
                .map_err(|e| bad(&e))?;
            if let Some((message, compressed)) = unframed {
                let opened = self
                    .open(message.clone(), carrier, identity, namespace)
                    .await
                    .map_err(|e| {
                        if payloads::provider_down(&e) {
                            Status::unavailable(format!("{method}: {e}"))
                        } else {
                            bad(&e)
                        }
                    })?;
                self.metrics
                    .decrypted(opened.payload_bytes, opened.undecryptable);
                self.metrics.unknown(&opened);
                if opened.message.is_some() || compressed {
                    body = frame(opened.message.as_deref().unwrap_or(&message));
                }
                parts.headers.remove(&GRPC_ENCODING);
                parts.headers.remove(header::CONTENT_LENGTH);
            }
        }
        parts
            .headers
            .insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        // A trailers-only answer (every error) stays one HEADERS frame: Go's clients read the
        // status nowhere else.
        let body = if body.is_empty() && trailers.is_none() {
            Body::empty()
        } else {
            let frames = [
                (!body.is_empty()).then(|| Frame::data(body)),
                trailers.map(Frame::trailers),
            ];
            body_of(frames.into_iter().flatten())
        };
        Ok(Answer {
            code,
            response: http::Response::from_parts(parts, body),
        })
    }
}

/// The identity Temporal records for a call: the certified caller first, then what the client
/// called itself, so history shows who did it and no client can claim to be someone else.
pub(crate) fn recorded_identity(caller: &Identity, claimed: &[u8]) -> Vec<u8> {
    let claimed = String::from_utf8_lossy(claimed);
    match claimed.trim() {
        "" => caller.to_string().into_bytes(),
        claimed => format!("{caller} {claimed}").into_bytes(),
    }
}

/// Request headers that go upstream. Every other one stays here: `authorization` and the like
/// are for the proxy, `caller-type` would change how Temporal treats the call, and
/// `grpc-encoding` no longer applies (the body goes on uncompressed, and comes back so).
const FORWARDED_HEADERS: [&str; 9] = [
    "te",
    "grpc-timeout",
    "user-agent",
    "client-name",
    "client-version",
    "supported-server-versions",
    "traceparent",
    "tracestate",
    "grpc-trace-bin",
];

/// The headers of a call to an upstream: the client's that are allowed, and the namespace the
/// call was authorized for.
fn upstream_headers(client: &HeaderMap, namespace: &str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(FORWARDED_HEADERS.len() + 2);
    // The body is protobuf, as the proxy read it, whatever the client said.
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    // One pass over what the client sent: a lookup by name for each allowed header would
    // parse and hash every name, which costs more than the rest of this call's headers.
    for (name, value) in client {
        if FORWARDED_HEADERS.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(namespace) = HeaderValue::from_str(namespace)
        && !namespace.is_empty()
    {
        headers.insert(TEMPORAL_NAMESPACE, namespace);
    }
    headers
}

/// The header Temporal's frontend reads a call's namespace from.
const TEMPORAL_NAMESPACE: HeaderName = HeaderName::from_static("temporal-namespace");

/// gRPC's binary error details: a `google.rpc.Status`.
const DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");
/// Set on every answer.
const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
/// gRPC writes binary headers in base64 without padding and reads them either way.
const DETAILS_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Messages larger than this are decompressed, sealed and opened off the serving thread, so a
/// large one does not hold up other calls.
const OFFLOAD_BYTES: usize = 64 << 10;

/// The size codec work on `len` bytes counts as: with a remote key provider any of it may
/// wait milliseconds for a call, so all of it leaves the serving thread.
fn codec_work(codec: &Codec, len: usize) -> usize {
    if codec.provider_is_remote() {
        usize::MAX
    } else {
        len
    }
}

/// Runs `work` on the blocking pool when `size` is large, else here.
pub(crate) async fn off_thread<T: Send + 'static>(
    size: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    if size <= OFFLOAD_BYTES {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .expect("payload work does not panic")
}

/// An answer's body made of frames already at hand.
pub(crate) fn body_of<I>(frames: I) -> Body
where
    I: IntoIterator<Item = Frame<Bytes>>,
    I::IntoIter: Send + 'static,
{
    Body::new(StreamBody::new(futures::stream::iter(
        frames.into_iter().map(Ok::<_, Infallible>),
    )))
}

/// `StartWorkflowExecution` of `/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution`.
pub(crate) fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The namespace a request names: from the table's field for known RPCs, else by convention.
fn namespace_of(
    rpc: Option<&Rpc>,
    path: &str,
    method: &str,
    message: &[u8],
) -> Result<String, Status> {
    match rpc {
        Some(rpc) => rpc
            .namespace(message)
            .map_err(|e| Status::invalid_argument(format!("{method}: {e}"))),
        None => {
            tracing::warn!(
                path,
                "RPC unknown to this proxy: forwarded as a write, its payloads unencrypted"
            );
            Ok(conventional_namespace(message).unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_headers_go_upstream_with_the_authorized_namespace() {
        let mut client = HeaderMap::new();
        client.insert(
            "content-type",
            HeaderValue::from_static("application/grpc+json"),
        );
        client.insert("authorization", HeaderValue::from_static("Bearer secret"));
        client.insert("caller-type", HeaderValue::from_static("operator"));
        client.insert(
            "temporal-namespace",
            HeaderValue::from_static("someone-else"),
        );
        client.insert("client-name", HeaderValue::from_static("temporal-python"));
        client.append("caller-type", HeaderValue::from_static("background"));
        client.append("traceparent", HeaderValue::from_static("00-a-b-01"));
        client.append("traceparent", HeaderValue::from_static("00-c-d-01"));
        let upstream = upstream_headers(&client, "orders");
        let mut names: Vec<&str> = upstream.keys().map(|name| name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "client-name",
                "content-type",
                "temporal-namespace",
                "traceparent"
            ]
        );
        assert_eq!(upstream.get_all("traceparent").iter().count(), 2);
        assert_eq!(upstream["content-type"], "application/grpc");
        assert_eq!(upstream["temporal-namespace"], "orders");
    }
}
