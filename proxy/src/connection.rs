//! One client connection, served on h2 directly: its calls run inside the connection's own
//! task, so a call's request, answer and flush need no hand-off between tasks.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use h2::server::SendResponse;
use http_body::{Body as _, Frame};
use plinth_identity::{AuthenticatedStream, Caller};
use tokio::sync::watch;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use crate::forward::{FrontDoor, body_of, method_name};
use crate::frame::{GRPC_STATUS, frame};
use crate::keepalive::keep_alive;
use crate::limits::{Admission, InFlight, Kind};
use crate::request::ConnectionBudget;

/// A client that connects must start HTTP/2 within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that stops answering pings is dropped, and its long polls with it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Flow-control windows for requests, as hyper's server sets them.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 1 << 20;

const WORKFLOW_SERVICE: &str = "temporal.api.workflowservice.v1.WorkflowService";
const OPERATOR_SERVICE: &str = "temporal.api.operatorservice.v1.OperatorService";

/// A gRPC service answered in the proxy itself, beside the forwarded ones, at the paths its
/// name starts: the platform API, which the binary mounts.
pub trait LocalService:
    Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = std::convert::Infallible,
        Future: Send,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> LocalService for S where
    S: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
            Future: Send,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// What every connection serves.
#[derive(Clone)]
pub(crate) struct Services<L> {
    pub door: Arc<FrontDoor>,
    pub local: L,
    /// Calls in flight, against the door's limits.
    pub in_flight: Arc<InFlight>,
}

/// Where the proxy is in its life; each step follows the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Serving,
    /// Shutting down: connections are sent GOAWAY and calls in flight may finish.
    Draining,
    /// The shutdown grace is over: calls still in flight are answered at once.
    Ending,
}

/// Serves `stream` until the client closes it, or, once `phase` leaves `Serving`, until its
/// calls in flight have finished.
pub(crate) async fn serve<L: LocalService>(
    stream: AuthenticatedStream,
    services: Services<L>,
    mut phase: watch::Receiver<Phase>,
) {
    let caller = Arc::new(stream.caller().clone());
    let budget = services.door.budgets.connection();
    let max_streams = services.door.settings.max_streams_per_connection;
    // Counted once each time the connection reaches its stream limit: h2 itself refuses the
    // streams past it.
    let mut at_limit = false;
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(max_streams)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(stream);
    let mut connection = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("no HTTP/2 preface within {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    let keepalive = keep_alive(
        connection.ping_pong(),
        KEEPALIVE_INTERVAL,
        KEEPALIVE_TIMEOUT,
    );
    tokio::pin!(keepalive);
    let mut calls = FuturesUnordered::new();
    let mut closing = *phase.borrow() != Phase::Serving;
    if closing {
        connection.graceful_shutdown();
    }
    loop {
        tokio::select! {
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    calls.push(call(services.clone(), caller.clone(), budget.clone(), request, respond, phase.clone()));
                    let full = calls.len() >= max_streams as usize;
                    if full && !at_limit {
                        services.door.metrics.limited("streams");
                        tracing::warn!(max_streams, "a client connection reached its stream limit");
                    }
                    at_limit = full;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "client connection failed");
                    return;
                }
                None => return,
            },
            Some(()) = calls.next(), if !calls.is_empty() => {}
            reason = &mut keepalive => {
                tracing::info!(reason, "client connection dropped");
                return;
            }
            _ = phase.changed(), if !closing => {
                closing = true;
                connection.graceful_shutdown();
            }
        }
    }
}

/// What a call still under way when the shutdown grace is over is told.
const SHUTTING_DOWN: &str = "the proxy is shutting down; call again";

/// Resolves when the shutdown grace is over.
async fn grace_over(phase: &mut watch::Receiver<Phase>) {
    if phase
        .wait_for(|phase| *phase == Phase::Ending)
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}

/// Long polls: `Poll*` RPCs, held until work arrives or Temporal's poll timeout.
fn kind_of(method: &str) -> Kind {
    if method.starts_with("Poll") {
        Kind::LongPoll
    } else {
        Kind::Call
    }
}

fn polls_a_task_queue(method: &str) -> bool {
    method.starts_with("Poll") && method.ends_with("TaskQueue")
}

/// The answer to a call still in flight when the shutdown grace is over. A task queue poll
/// gets what Temporal answers when no task came in time, which workers take as routine and
/// poll again (elsewhere, after GOAWAY); its upstream poll is withdrawn as the call is dropped.
/// Any other call gets `UNAVAILABLE`, which clients retry.
fn shutdown_answer(task_queue_poll: bool) -> http::Response<Body> {
    if !task_queue_poll {
        return Status::unavailable(SHUTTING_DOWN).into_http();
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert(GRPC_STATUS, http::HeaderValue::from_static("0"));
    let mut response = http::Response::new(body_of([
        Frame::data(frame(&[])),
        Frame::trailers(trailers),
    ]));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Platform API calls answered from the archive (audit trail, history export), which may
/// serve while Temporal is down.
fn reads_archive(path: &str) -> bool {
    ["/QueryAudit", "/ListHistories", "/GetHistory"]
        .iter()
        .any(|method| path.ends_with(method))
}

/// Which service a call's path names.
enum Route {
    /// Temporal's `WorkflowService` or `OperatorService`: forwarded.
    Temporal,
    /// The local service: answered here.
    Local,
    /// Anything else.
    Nowhere,
}

impl Route {
    fn of(path: &str, local: &str) -> Route {
        let service = path
            .strip_prefix('/')
            .and_then(|path| path.split_once('/'))
            .map(|(service, _)| service);
        match service {
            Some(WORKFLOW_SERVICE | OPERATOR_SERVICE) => Route::Temporal,
            Some(service) if service == local => Route::Local,
            _ => Route::Nowhere,
        }
    }
}

/// Answers one call, or drops it (which resets it upstream) when the client resets it. A call
/// past a limit on calls in flight is refused at once; one still in flight when the shutdown
/// grace is over is answered then.
async fn call<L: LocalService>(
    mut services: Services<L>,
    caller: Arc<Caller>,
    budget: ConnectionBudget,
    request: http::Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    mut phase: watch::Receiver<Phase>,
) {
    let (parts, body) = request.into_parts();
    let request = http::Request::from_parts(parts, RecvBody(body));
    let method = method_name(request.uri().path());
    let task_queue_poll = polls_a_task_queue(method);
    // Counted until the answer is handed to the connection; callers without an identity are
    // refused before they count against anyone's limits.
    let admitted = caller.identity().map(drop).and_then(|()| {
        services
            .in_flight
            .admit(&caller, kind_of(method))
            .map_err(|refused| {
                services.door.metrics.limited(refused.label());
                refused.status()
            })
    });
    let _admission: Admission = match admitted {
        Ok(admission) => admission,
        Err(status) => {
            if let Err(e) = send(status.into_http(), &mut respond, &mut phase).await {
                tracing::debug!(error = %e, "refusal not delivered: the client went away");
            }
            return;
        }
    };
    let body_timeout = services.door.settings.request_body_timeout;
    let answer = async {
        match Route::of(request.uri().path(), L::NAME) {
            Route::Temporal => services.door.call(request, &caller, &budget).await,
            Route::Local => {
                // Said at once, not after a deadline; what the archive answers is still read.
                if !reads_archive(request.uri().path())
                    && let Some(why) = services.door.temporal.unreachable()
                {
                    return Status::unavailable(why).into_http();
                }
                let mut request = request.map(|body| Body::new(Deadline::new(body, body_timeout)));
                request.extensions_mut().insert(Caller::clone(&caller));
                let local = &mut services.local;
                let Ok(()) = std::future::poll_fn(|cx| local.poll_ready(cx)).await;
                let Ok(response) = local.call(request).await;
                response
            }
            Route::Nowhere => {
                Status::unimplemented(format!("{}: no such service here", request.uri().path()))
                    .into_http()
            }
        }
    };
    let response = tokio::select! {
        // An answer already here is delivered, even at the end of the grace.
        biased;
        response = answer => response,
        _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => return,
        () = grace_over(&mut phase) => shutdown_answer(task_queue_poll),
    };
    if let Err(e) = send(response, &mut respond, &mut phase).await {
        tracing::debug!(error = %e, "answer not delivered: the client went away");
    }
}

/// Sends `response` on its stream: headers, data and trailers in one go when the body has
/// them all at hand, which is every unary answer. A streamed answer (a watch) ends when the
/// client resets it, and with `UNAVAILABLE` when the shutdown grace is over.
async fn send(
    response: http::Response<Body>,
    respond: &mut SendResponse<Bytes>,
    phase: &mut watch::Receiver<Phase>,
) -> Result<(), h2::Error> {
    let (parts, mut body) = response.into_parts();
    let head = http::Response::from_parts(parts, ());
    let mut stream = respond.send_response(head, body.is_end_stream())?;
    if body.is_end_stream() {
        return Ok(());
    }
    let mut body = Pin::new(&mut body);
    loop {
        let next = std::future::poll_fn(|cx| {
            if let Poll::Ready(frame) = body.as_mut().poll_frame(cx) {
                return Poll::Ready(Next::Frame(frame));
            }
            stream.poll_reset(cx).map(|_| Next::Reset)
        });
        let next = tokio::select! {
            biased;
            next = next => next,
            () = grace_over(phase) => Next::GraceOver,
        };
        let frame = match next {
            Next::Frame(Some(Ok(frame))) => frame,
            Next::Frame(Some(Err(status))) => {
                return stream.send_trailers(status.into_http::<Body>().into_parts().0.headers);
            }
            Next::Frame(None) => return stream.send_data(Bytes::new(), true),
            // The body (a watch, say) is dropped with the call.
            Next::Reset => return Ok(()),
            Next::GraceOver => {
                let status = Status::unavailable(SHUTTING_DOWN);
                return stream.send_trailers(status.into_http::<Body>().into_parts().0.headers);
            }
        };
        match frame.into_data() {
            Ok(data) => {
                let last = body.is_end_stream();
                stream.send_data(data, last)?;
                if last {
                    return Ok(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return stream.send_trailers(trailers);
                }
            }
        }
    }
}

/// What ended the wait for an answer's next frame.
enum Next {
    Frame(Option<Result<Frame<Bytes>, Status>>),
    Reset,
    GraceOver,
}

/// A request body that must arrive whole within a time: the platform API's, which tonic reads
/// whole before answering.
struct Deadline<B> {
    body: B,
    expires: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Deadline<B> {
    fn new(body: B, within: Duration) -> Self {
        Self {
            body,
            expires: Box::pin(tokio::time::sleep(within)),
        }
    }
}

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        ready!(self.expires.as_mut().poll(cx));
        let late = Status::deadline_exceeded(
            "the request body did not arrive whole within [proxy] request_body_timeout",
        );
        Poll::Ready(Some(Err(Box::new(late))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

/// A request body read from h2, giving back flow-control capacity as it is read.
struct RecvBody(h2::RecvStream);

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let stream = &mut self.0;
        if let Some(data) = ready!(stream.poll_data(cx)) {
            let data = data?;
            let _ = stream.flow_control().release_capacity(data.len());
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(
            ready!(stream.poll_trailers(cx))
                .transpose()
                .map(|trailers| trailers.map(Frame::trailers)),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "plinth.v1.PlatformService";

    fn route(path: &str) -> &'static str {
        match Route::of(path, LOCAL) {
            Route::Temporal => "temporal",
            Route::Local => "local",
            Route::Nowhere => "nowhere",
        }
    }

    #[test]
    fn a_path_reaches_a_service_only_by_its_exact_name() {
        assert_eq!(
            route(&format!("/{WORKFLOW_SERVICE}/StartWorkflowExecution")),
            "temporal"
        );
        assert_eq!(
            route(&format!("/{OPERATOR_SERVICE}/ListSearchAttributes")),
            "temporal"
        );
        assert_eq!(route(&format!("/{LOCAL}/ApplyNamespace")), "local");
        for elsewhere in [
            "/temporal.api.workflowservice.v1.workflowservice/StartWorkflowExecution",
            "//ApplyNamespace",
            &format!("/{LOCAL}"),
            &format!("{LOCAL}/ApplyNamespace"),
            "/plinth.v1.PlatformServiceX/ApplyNamespace",
            "/",
            "",
        ] {
            assert_eq!(route(elsewhere), "nowhere", "{elsewhere}");
        }
    }
}
