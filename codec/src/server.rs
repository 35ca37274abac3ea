//! `plinth codec`: the Web UI's remote codec (`POST [/<namespace>]/encode|decode`, proto3 JSON
//! `Payloads`), with authentication, per-namespace authorization and an audit line per decode.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use plinth_control::{AccessCheck, AuditSink, Need};
use plinth_identity::{AuthenticatedStream, Caller, Identity};
use plinth_metrics::{Counter, DURATION_BUCKETS, Format, Histogram, exposition};
use plinth_proto::audit::AuditRecord;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::json::{payloads_from_json, payloads_to_json};
use crate::tokens::TokenVerifier;
use crate::{Codec, CodecError};

/// The headers the Web UI sends (REFERENCE.md, samples-go codec-server).
const ALLOWED_HEADERS: &str = "Authorization,Authorization-Extras,Content-Type,X-Namespace";

/// Where a request came from: the socket peer, and the client certificate's caller on TLS.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Remote address.
    pub address: SocketAddr,
    /// Who the client certificate names, if the connection is TLS and presented one.
    pub caller: Option<Caller>,
}

/// The codec server's configuration and collaborators.
#[derive(Debug)]
pub struct CodecServer {
    /// Seals and opens payloads.
    pub codec: Arc<Codec>,
    /// Authorization.
    pub access: Arc<dyn AccessCheck>,
    /// Bearer tokens, when configured.
    pub tokens: Option<TokenVerifier>,
    /// Exact origins allowed to call from a browser.
    pub allowed_origins: Vec<String>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Unauthenticated calls from loopback are allowed (for `plinth dev` only).
    pub dev_mode: bool,
    /// What it counts, served at `/metrics`.
    pub metrics: CodecMetrics,
    /// Where its refusals and decodes are recorded.
    pub audit: Arc<dyn AuditSink>,
    /// Set once the server is shutting down: `/readyz` fails from then on.
    pub draining: std::sync::atomic::AtomicBool,
}

/// How the server stops: not ready but still serving for `delay`, so a load balancer takes it
/// out first; then no new connections, and `grace` for the requests in flight.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// See above.
    pub delay: std::time::Duration,
    /// See above.
    pub grace: std::time::Duration,
}

/// The codec server's metrics. No label names a namespace: callers choose those.
#[derive(Debug)]
pub struct CodecMetrics {
    requests: Counter,
    duration: Histogram,
    denials: Counter,
    payloads: Counter,
}

impl Default for CodecMetrics {
    fn default() -> Self {
        Self {
            requests: Counter::new(
                "plinth_codec_requests_total",
                "Encode and decode requests by operation and HTTP status.",
                &["op", "status"],
            ),
            duration: Histogram::new(
                "plinth_codec_request_duration_seconds",
                "Time from request to answer.",
                &["op"],
                DURATION_BUCKETS,
            ),
            denials: Counter::new(
                "plinth_codec_denials_total",
                "Requests refused for missing access, by the access missing.",
                &["access"],
            ),
            payloads: Counter::new(
                "plinth_codec_payloads_total",
                "Payloads encoded or decoded.",
                &["op"],
            ),
        }
    }
}

impl CodecMetrics {
    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        exposition(&[
            &self.requests,
            &self.duration,
            &self.denials,
            &self.payloads,
        ])
    }
}

/// The routes, testable without a socket (put a `ConnectInfo<Peer>` in the request's
/// extensions).
pub fn app(server: Arc<CodecServer>) -> Router {
    Router::new()
        .route("/encode", post(|s, r| handle(s, Op::Encode, None, r)))
        .route("/decode", post(|s, r| handle(s, Op::Decode, None, r)))
        .route(
            "/{namespace}/encode",
            post(
                |s, axum::extract::Path(ns): axum::extract::Path<String>, r| {
                    handle(s, Op::Encode, Some(ns), r)
                },
            ),
        )
        .route(
            "/{namespace}/decode",
            post(
                |s, axum::extract::Path(ns): axum::extract::Path<String>, r| {
                    handle(s, Op::Decode, Some(ns), r)
                },
            ),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(|State(server): State<Arc<CodecServer>>| async move {
                if server.draining.load(std::sync::atomic::Ordering::Relaxed) {
                    (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                } else {
                    (StatusCode::OK, "ready\n")
                }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(|State(server): State<Arc<CodecServer>>| async move {
                (
                    [(header::CONTENT_TYPE, Format::Prometheus.content_type())],
                    server.metrics.render(),
                )
            }),
        )
        .layer(middleware::from_fn_with_state(server.clone(), cors))
        .with_state(server)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Encode,
    Decode,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Encode => "encode",
            Self::Decode => "decode",
        }
    }

    fn need(self) -> Need {
        match self {
            Self::Encode => Need::Write,
            Self::Decode => Need::Read,
        }
    }
}

/// Who is calling, after authentication.
enum Principal {
    User(Identity),
    /// Unauthenticated, from loopback, in dev mode.
    Dev,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn handle(
    State(server): State<Arc<CodecServer>>,
    op: Op,
    path_namespace: Option<String>,
    request: Request,
) -> Response {
    let started = std::time::Instant::now();
    let response = respond(&server, op, path_namespace, request).await;
    let metrics = &server.metrics;
    metrics
        .requests
        .inc(&[op.as_str(), response.status().as_str()]);
    metrics
        .duration
        .observe(&[op.as_str()], started.elapsed().as_secs_f64());
    response
}

async fn respond(
    server: &CodecServer,
    op: Op,
    path_namespace: Option<String>,
    request: Request,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(peer)| peer.clone());
    let (parts, body) = request.into_parts();
    let principal = match authenticate(server, &parts.headers, peer.as_ref()).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let namespace = path_namespace.or_else(|| {
        parts
            .headers
            .get("x-namespace")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    });
    let Some(namespace) = namespace else {
        return error(
            StatusCode::BAD_REQUEST,
            "namespace: give it in the path (/<namespace>/decode) or the X-Namespace header",
        );
    };
    // Authorized before the body is read: a refused caller costs no parsing.
    let identity = match &principal {
        Principal::User(identity) => {
            let need = op.need();
            match server.access.allows(&namespace, identity, need).await {
                Ok(true) => identity.to_string(),
                Ok(false) => {
                    tracing::warn!(%identity, namespace, ?need, decision = "deny", "codec authorization");
                    server.metrics.denials.inc(&[need.as_str()]);
                    server.audit.record(
                        AuditRecord::now(
                            identity.to_string(),
                            "codec.refused",
                            format!("codec/{}", op.as_str()),
                            plinth_proto::outcome::DENIED,
                        )
                        .in_namespace(namespace.clone())
                        .detail(format!("needs {} access", need.as_str())),
                    );
                    return error(
                        StatusCode::FORBIDDEN,
                        format!(
                            "{identity} has no {} access to namespace {namespace:?}",
                            need.as_str()
                        ),
                    );
                }
                Err(e) => {
                    return error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("access lists: {e}"),
                    );
                }
            }
        }
        Principal::Dev => "dev-mode (unauthenticated loopback)".to_owned(),
    };
    let bytes = match axum::body::to_bytes(body, server.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body exceeds {} bytes", server.max_body_bytes),
            );
        }
    };
    let payloads = match payloads_from_json(&bytes) {
        Ok(payloads) => payloads,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body: not proto3 JSON Payloads: {e}"),
            );
        }
    };
    let count = payloads.len();
    let result = match op {
        Op::Encode => server.codec.encode(&namespace, payloads),
        Op::Decode => server.codec.decode(&namespace, payloads),
    };
    match result {
        Ok(payloads) => {
            server.metrics.payloads.add(&[op.as_str()], count as f64);
            if op == Op::Decode {
                tracing::info!(target: "plinth::audit", identity, namespace, payloads = count, "decode");
                server.audit.record(
                    AuditRecord::now(identity, "codec.decoded", "codec/decode", "decoded")
                        .in_namespace(namespace)
                        .detail(format!("{count} payloads")),
                );
            }
            let body = payloads_to_json(&payloads);
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e @ (CodecError::Provider { .. } | CodecError::NoNamespaceKey(_))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn authenticate(
    server: &CodecServer,
    headers: &HeaderMap,
    peer: Option<&Peer>,
) -> Result<Principal, Response> {
    if let Some(Caller(Ok(identity))) = peer.and_then(|p| p.caller.as_ref()) {
        return Ok(Principal::User(identity.clone()));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (bearer, &server.tokens) {
        (Some(token), Some(tokens)) => {
            return tokens
                .verify(token)
                .await
                .map(Principal::User)
                .map_err(|e| {
                    tracing::warn!(error = %e, "codec authentication refused");
                    unauthorized(e.to_string())
                });
        }
        (Some(_), None) => {
            return Err(unauthorized(
                "bearer tokens are not configured ([codec] jwks)",
            ));
        }
        (None, _) => {}
    }
    let loopback = peer.is_some_and(|p| p.address.ip().is_loopback());
    if server.dev_mode && loopback {
        // A page from elsewhere whose name resolves to 127.0.0.1 (DNS rebinding) would send
        // its own host name.
        if !loopback_host(headers) {
            return Err(error(
                StatusCode::FORBIDDEN,
                "dev mode answers requests for localhost or a loopback address only; the Host \
                 header names another (DNS rebinding?)",
            ));
        }
        return Ok(Principal::Dev);
    }
    Err(unauthorized(
        "authenticate with a client certificate or an Authorization: Bearer token",
    ))
}

/// Whether the `Host` header names this machine's loopback: `localhost` or a loopback address,
/// with any port.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn unauthorized(message: impl Into<String>) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Exact-origin CORS with credentials; preflights answered here.
async fn cors(State(server): State<Arc<CodecServer>>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| server.allowed_origins.iter().any(|a| a == o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        if preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
    }
    response
}

/// Serves `server` on `listener` until `shutdown`, then stops as `drain` says: over TLS
/// (client certificates optional, verified when presented) when `tls` is given, else plain
/// HTTP.
pub async fn serve(
    listener: TcpListener,
    tls: Option<(Arc<rustls::ServerConfig>, plinth_identity::ClientVerifier)>,
    server: Arc<CodecServer>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: Drain,
) -> std::io::Result<()> {
    let (stopped, on_stop) = tokio::sync::oneshot::channel();
    let signal = {
        let server = server.clone();
        async move {
            shutdown.await;
            server
                .draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(delay = ?drain.delay, "shutting down: not ready; still serving for the shutdown delay");
            tokio::time::sleep(drain.delay).await;
            tracing::info!(grace = ?drain.grace, "shutting down: no new connections; requests in flight finishing");
            let _ = stopped.send(());
        }
    };
    let app = app(server).into_make_service_with_connect_info::<Peer>();
    let serving = async move {
        match tls {
            None => {
                axum::serve(PlainListener(listener), app)
                    .with_graceful_shutdown(signal)
                    .await
            }
            Some((config, verifier)) => {
                axum::serve(TlsListener::new(listener, config, verifier), app)
                    .with_graceful_shutdown(signal)
                    .await
            }
        }
    };
    let grace_over = async move {
        match on_stop.await {
            Ok(()) => tokio::time::sleep(drain.grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = serving => served,
        () = grace_over => {
            tracing::warn!("[codec] shutdown_grace is over with requests in flight; stopping");
            Ok(())
        }
    }
}

/// Plain TCP connections, named like TLS ones but with no client certificate.
struct PlainListener(TcpListener);

impl axum::serve::Listener for PlainListener {
    type Io = tokio::net::TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, address) = axum::serve::Listener::accept(&mut self.0).await;
        let peer = Peer {
            address,
            caller: None,
        };
        (io, peer)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        let address = self.0.local_addr()?;
        Ok(Peer {
            address,
            caller: None,
        })
    }
}

/// TLS connections from [`plinth_identity::incoming`] as an axum listener; the SCIM
/// service is served on one too.
pub struct TlsListener {
    connections: ReceiverStream<std::io::Result<AuthenticatedStream>>,
}

impl TlsListener {
    /// Connections accepted on `listener`, client certificates checked as `verifier` says.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        verifier: plinth_identity::ClientVerifier,
    ) -> Self {
        let connections = plinth_identity::incoming(
            listener,
            config,
            verifier,
            plinth_identity::HandshakeLimits::default(),
        );
        Self { connections }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = AuthenticatedStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.next().await {
                Some(Ok(stream)) => {
                    let peer = Peer {
                        address: stream.peer_address(),
                        caller: Some(stream.caller().clone()),
                    };
                    return (stream, peer);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "TLS connection failed"),
                // The accept loop only ends with the process.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Err(std::io::Error::other("TLS listener"))
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, PlainListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, PlainListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_host_names_are_loopback() {
        let host = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static(value));
            loopback_host(&headers)
        };
        for loopback in [
            "localhost:7280",
            "LOCALHOST",
            "127.0.0.1:7280",
            "127.1.2.3",
            "[::1]:7280",
        ] {
            assert!(host(loopback), "{loopback}");
        }
        for other in [
            "rebind.example:7280",
            "localhost.example",
            "10.0.0.1:7280",
            "[::2]:7280",
        ] {
            assert!(!host(other), "{other}");
        }
        assert!(!loopback_host(&HeaderMap::new()), "no Host at all");
    }
}
