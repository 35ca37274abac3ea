//! The mTLS listener: every connection that completes a handshake carries the caller it proved.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{ClientVerifier, Identity, identity_from_certificate};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// How many TLS handshakes a listener runs at once, and for how long each may take: a client
/// that connects and sends nothing holds a place only until its time is up, and one address
/// cannot hold more than its share.
#[derive(Clone)]
pub struct HandshakeLimits {
    /// Handshakes under way at once, from all clients.
    pub max_concurrent: usize,
    /// Handshakes under way at once from one IP address.
    pub max_per_peer: usize,
    /// A handshake not finished within this is dropped.
    pub timeout: Duration,
    /// Called for each connection dropped at a limit (for a counter).
    pub on_refused: Arc<dyn Fn() + Send + Sync>,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 1024,
            max_per_peer: 64,
            timeout: Duration::from_secs(10),
            on_refused: Arc::new(|| {}),
        }
    }
}

impl std::fmt::Debug for HandshakeLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeLimits")
            .field("max_concurrent", &self.max_concurrent)
            .field("max_per_peer", &self.max_per_peer)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Handshakes under way, by peer address; a place is given back when its guard drops.
#[derive(Default)]
struct InFlight(Mutex<HashMap<IpAddr, usize>>);

struct Place {
    in_flight: Arc<InFlight>,
    peer: IpAddr,
    _global: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut peers = self.in_flight.0.lock().expect("handshakes lock");
        if let Some(count) = peers.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// The address a peer's handshakes are counted under: an IPv6 peer by its /64, which one
/// host usually holds whole.
fn peer_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

/// A place for one more handshake from `peer`, unless a limit is reached.
fn take_place(
    in_flight: &Arc<InFlight>,
    global: &Arc<tokio::sync::Semaphore>,
    peer: IpAddr,
    max_per_peer: usize,
) -> Option<Place> {
    let permit = global.clone().try_acquire_owned().ok()?;
    let mut peers = in_flight.0.lock().expect("handshakes lock");
    let count = peers.get(&peer).copied().unwrap_or(0);
    if count >= max_per_peer {
        return None;
    }
    peers.insert(peer, count + 1);
    Some(Place {
        in_flight: in_flight.clone(),
        peer,
        _global: permit,
    })
}

/// Why the TLS listener cannot be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA bundle is not usable PEM.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The caller of a connection: its identity, or why its certificate names none.
#[derive(Clone, Debug)]
pub struct Caller(pub Result<Identity, String>);

impl Caller {
    /// The identity the connection certified; without one, `UNAUTHENTICATED` saying why.
    pub fn identity(&self) -> Result<&Identity, tonic::Status> {
        self.0
            .as_ref()
            .map_err(|reason| tonic::Status::unauthenticated(reason.clone()))
    }
}

/// The identity a request's connection certified, from the request's extensions; without one,
/// `UNAUTHENTICATED` saying why.
pub fn caller(extensions: &tonic::codegen::http::Extensions) -> Result<Identity, tonic::Status> {
    match extensions.get::<Caller>() {
        Some(caller) => caller.identity().cloned(),
        None => Err(tonic::Status::unauthenticated(
            "a client certificate is required",
        )),
    }
}

/// A server configuration verifying client certificates with `verifier`: required, or
/// optional when callers may authenticate otherwise. `alpn` lists the protocols offered.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    verifier: &ClientVerifier,
    client_certificate_required: bool,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("server certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Pem(format!("server key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier.rustls_verifier(client_certificate_required))
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A TLS connection and the caller its client certificate names.
#[derive(Debug)]
pub struct AuthenticatedStream {
    inner: TlsStream<TcpStream>,
    caller: Caller,
    peer: std::net::SocketAddr,
}

impl AuthenticatedStream {
    /// Who the client certificate names.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The remote address.
    pub fn peer_address(&self) -> std::net::SocketAddr {
        self.peer
    }
}

impl Connected for AuthenticatedStream {
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        self.caller.clone()
    }
}

impl AsyncRead for AuthenticatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AuthenticatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    // HTTP/2 hands over frame headers and bodies as separate buffers: one TLS write for all.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener`, handshakes each on its own task (a slow client holds up
/// no one), and yields those that present a trusted certificate.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    verifier: ClientVerifier,
    limits: HandshakeLimits,
) -> ReceiverStream<io::Result<AuthenticatedStream>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let in_flight = Arc::new(InFlight::default());
    let global = Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent));
    tokio::spawn(async move {
        loop {
            // Once the stream is dropped the listener closes, so new connections are refused
            // (a balancer tries elsewhere) rather than accepted and dropped.
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            if sender.is_closed() {
                return;
            }
            let Some(place) = take_place(
                &in_flight,
                &global,
                peer_key(peer.ip()),
                limits.max_per_peer,
            ) else {
                (limits.on_refused)();
                tracing::debug!(%peer, "connection dropped: too many TLS handshakes under way");
                continue;
            };
            // gRPC writes small frames and waits for answers: Nagle's algorithm would hold
            // them back behind delayed ACKs.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(%peer, error = %e, "TCP_NODELAY not set");
            }
            let (acceptor, sender, verifier) = (acceptor.clone(), sender.clone(), verifier.clone());
            let timeout = limits.timeout;
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                drop(place);
                let tls = match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let caller = caller_of(&tls, &verifier);
                let _ = sender
                    .send(Ok(AuthenticatedStream {
                        inner: tls,
                        caller,
                        peer,
                    }))
                    .await;
            });
        }
    });
    ReceiverStream::new(receiver)
}

fn caller_of(tls: &TlsStream<TcpStream>, verifier: &ClientVerifier) -> Caller {
    let (_, connection) = tls.get_ref();
    let identity = match connection.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => {
            identity_from_certificate(leaf, verifier.trust_domain()).map_err(|e| e.to_string())
        }
        None => Err("no client certificate".to_owned()),
    };
    Caller(identity)
}

/// The TLS client configuration Plinth dials its own dependencies with: rustls on ring,
/// trusting the certificates of the PEM bundle `ca_pem`, or the system's roots when none.
pub fn client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TlsError::Pem(format!("CA bundle: {e}")))?;
                roots.add(cert)?;
            }
            if roots.is_empty() {
                return Err(TlsError::Pem("CA bundle holds no certificate".into()));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshakes_are_counted_by_ipv4_address_and_ipv6_slash_64() {
        let key = |text: &str| peer_key(text.parse().unwrap());
        assert_eq!(key("192.0.2.7"), key("::ffff:192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
