//! The front door: one mTLS listener that names every caller by its certificate and serves the
//! platform API (later, Temporal's own services too).

mod platform;

use std::net::SocketAddr;

use plinth_identity::ClientVerifier;
use plinth_proto::v1::platform_service_server::PlatformServiceServer;
use tokio::net::TcpListener;

pub use platform::PlatformApi;

/// Serves `api` on `listener` over mTLS until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    verifier: ClientVerifier,
    api: PlatformApi,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?address, "platform API listening (mTLS)");
    tonic::transport::Server::builder()
        .add_service(PlatformServiceServer::new(api))
        .serve_with_incoming_shutdown(plinth_identity::incoming(listener, tls, verifier), shutdown)
        .await
}
