//! The front door, Plinth's data plane: one mTLS listener that names every caller by its
//! certificate and forwards Temporal's own services to each namespace's upstream with
//! authorization and payload encryption on the way. A service answered locally (the platform
//! API) is mounted beside them by whoever starts it.

mod connection;
mod forward;
mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod keepalive;
mod limits;
mod metrics;
mod nexus;
mod payloads;
mod request;
mod routes;
mod rpc;
mod schema;
mod upstream;
mod wire;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plinth_identity::ClientVerifier;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::StreamExt as _;

use connection::{Phase, Services};

pub use connection::LocalService;

/// The descriptor set of the Temporal protos this proxy was built with.
pub fn temporal_descriptors() -> &'static [u8] {
    schema::DESCRIPTORS
}
pub use forward::{DoorSettings, FrontDoor};
pub use health::TemporalHealth;
pub use limits::CallLimits;
pub use metrics::ProxyMetrics;
pub use nexus::NexusEndpoints;
pub use request::Budgets;
pub use routes::Routes;
pub use upstream::{
    ClientIdentity, KeyCheck, Reply, SelfIssued, Upstream, UpstreamError, UpstreamTls, Upstreams,
};

/// How often the client certificate files are checked for a new certificate.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(1);
/// After the shutdown grace, how long the last answers have to reach clients before their
/// connections are closed regardless.
const LAST_ANSWERS: Duration = Duration::from_secs(2);

/// Serves Temporal's services and `local` on `listener` over mTLS until `shutdown` resolves;
/// keeps the namespace table (every `refresh`) and the upstream certificate fresh. Then shuts
/// down as [`DoorSettings`] says: not ready but still accepting for `shutdown_delay`, then
/// GOAWAY to every connection and `shutdown_grace` for the calls in flight.
pub async fn serve<L: LocalService>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    verifier: ClientVerifier,
    local: L,
    door: Arc<FrontDoor>,
    refresh: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    rpc::load();
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?address, "proxy listening (mTLS)");
    let upkeep = tokio::spawn(keep_fresh(door.clone(), refresh));
    let probe = {
        let door = door.clone();
        tokio::spawn(async move { door.temporal.watch().await })
    };
    let in_flight = Arc::new(limits::InFlight::new(door.settings.limits));
    let services = Services {
        door,
        local,
        in_flight,
    };
    let (phase, phases) = watch::channel(Phase::Serving);
    let mut connections = JoinSet::new();
    let settings = &services.door.settings;
    let metrics = services.door.metrics.clone();
    let limits = plinth_identity::HandshakeLimits {
        max_concurrent: settings.max_handshakes,
        max_per_peer: settings.max_handshakes_per_peer,
        timeout: settings.handshake_timeout,
        on_refused: Arc::new(move || metrics.limited("handshakes")),
    };
    let mut incoming = plinth_identity::incoming(listener, tls, verifier, limits);
    let (delay, grace) = (settings.shutdown_delay, settings.shutdown_grace);
    let mut stop_accepting = None;
    tokio::pin!(shutdown);
    loop {
        let delay_over = async {
            match stop_accepting {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = incoming.next() => match accepted {
                Some(Ok(stream)) => {
                    connections.spawn(connection::serve(stream, services.clone(), phases.clone()));
                }
                Some(Err(e)) => tracing::warn!(error = %e, "connection not accepted"),
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown, if stop_accepting.is_none() => {
                services.door.draining.store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(?delay, "shutting down: not ready; still accepting connections for the shutdown delay");
                stop_accepting = Some(tokio::time::Instant::now() + delay);
            }
            () = delay_over => break,
        }
    }
    drop(incoming);
    services
        .door
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = phase.send(Phase::Draining);
    tracing::info!(
        connections = connections.len(),
        ?grace,
        "shutting down: no new connections; GOAWAY sent, calls in flight finishing"
    );
    if !drained(&mut connections, grace).await {
        tracing::info!(
            connections = connections.len(),
            "shutdown grace over: long polls answered as empty, other calls still in flight UNAVAILABLE"
        );
        let _ = phase.send(Phase::Ending);
        if !drained(&mut connections, LAST_ANSWERS).await {
            tracing::warn!(
                connections = connections.len(),
                "connections not drained in time were closed"
            );
        }
    }
    upkeep.abort();
    probe.abort();
}

/// Whether every connection ended within `within`.
async fn drained(connections: &mut JoinSet<()>, within: Duration) -> bool {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, connections.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// Refreshes the namespace table and drops clients nothing routes to; reloads the upstream
/// certificate and API key when their files change. Failures keep the previous state and are logged once.
async fn keep_fresh(door: Arc<FrontDoor>, refresh: Duration) {
    let mut routes_failing = false;
    let mut certificate_failing = false;
    let mut next_refresh = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(CERTIFICATE_CHECK);
    loop {
        ticks.tick().await;
        match door.upstreams.reload_if_changed().await {
            Ok(true) => {
                certificate_failing = false;
                tracing::info!("upstream credentials reloaded; new calls use them");
            }
            Ok(false) => certificate_failing = false,
            Err(e) if !certificate_failing => {
                certificate_failing = true;
                tracing::error!(error = %e, "upstream credentials not reloaded; the previous ones stay in use");
            }
            Err(_) => {}
        }
        if tokio::time::Instant::now() < next_refresh {
            continue;
        }
        next_refresh += refresh;
        match door.routes.refresh().await {
            Ok(mut endpoints) => {
                routes_failing = false;
                endpoints.insert(door.default_upstream.clone());
                retain(&door, &endpoints);
            }
            Err(e) if !routes_failing => {
                routes_failing = true;
                tracing::error!(error = %e, "namespace table not refreshed; the previous one stays in use");
            }
            Err(_) => {}
        }
    }
}

/// One client per endpoint in use: made for new ones, dropped for ones no namespace uses.
fn retain(door: &FrontDoor, endpoints: &HashSet<String>) {
    for endpoint in endpoints {
        if let Err(e) = door.upstreams.client(endpoint) {
            tracing::error!(error = %e, "no client for an upstream");
        }
    }
    let dropped = door.upstreams.retain(endpoints);
    if !dropped.is_empty() {
        tracing::info!(?dropped, "upstreams no namespace uses any more");
    }
}

/// `/metrics`, `/healthz` and `/readyz` for `door`.
pub fn monitoring(door: Arc<FrontDoor>) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(door): axum::extract::State<Arc<FrontDoor>>| async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            plinth_metrics::Format::Prometheus.content_type(),
                        )],
                        door.metrics.render(),
                    )
                },
            ),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(
                |axum::extract::State(door): axum::extract::State<Arc<FrontDoor>>| async move {
                    if door.draining.load(std::sync::atomic::Ordering::Relaxed) {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "shutting down\n".to_owned(),
                        )
                    } else if let Some(why) = door.temporal.not_ready() {
                        (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"))
                    } else if door.routes.loaded() {
                        (StatusCode::OK, "ready\n".to_owned())
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the namespace table is not loaded yet\n".to_owned(),
                        )
                    }
                },
            ),
        )
        .with_state(door)
}
