//! The namespaces' gRPC endpoints, in front of the backing Temporal. The mTLS endpoint, as
//! Cloud's does, accepts only client certificates chaining to a CA some namespace accepts
//! (`mtls_auth.accepted_client_ca`), read at each handshake so a namespace's CA applies as
//! soon as it is set. The API-key endpoint reads each call and lets through only those whose
//! `authorization: Bearer` key's owner may make them on the namespace they name.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::{Either, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::state::State;

/// The endpoint's own certificate (PEM), which callers verify against their `upstream_ca`.
#[derive(Clone)]
pub struct EndpointIdentity {
    /// Certificate chain.
    pub cert_pem: String,
    /// Private key.
    pub key_pem: String,
}

impl std::fmt::Debug for EndpointIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointIdentity").finish_non_exhaustive()
    }
}

/// Relays TLS connections accepted on `listener` to `temporal` (plaintext `host:port`),
/// recording the leaf certificate each presented.
pub(crate) fn serve(
    listener: TcpListener,
    identity: EndpointIdentity,
    temporal: String,
    state: Arc<Mutex<State>>,
    presented: Arc<Mutex<Vec<Vec<u8>>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let cas = state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .accepted_client_cas();
            let config = match server_config(&identity, Some(&cas)) {
                Ok(config) => config,
                Err(error) => {
                    tracing::warn!(%error, "cloud double endpoint: no namespace accepts a CA yet");
                    continue;
                }
            };
            let (temporal, presented) = (temporal.clone(), presented.clone());
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    presented
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(leaf.to_vec());
                }
                let Ok(mut upstream) = TcpStream::connect(&temporal).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    })
}

/// Relays the calls of TLS connections accepted on `listener` to `temporal` (plaintext
/// `host:port`) when [`State::admit_api_key`] lets them through, without their key.
pub(crate) fn serve_api_keys(
    listener: TcpListener,
    identity: EndpointIdentity,
    temporal: String,
    state: Arc<Mutex<State>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let config = match server_config(&identity, None) {
            Ok(config) => config,
            Err(error) => {
                tracing::warn!(%error, "cloud double API-key endpoint: bad certificate");
                return;
            }
        };
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let (config, temporal, state) = (config.clone(), temporal.clone(), state.clone());
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let Ok(tls) = acceptor.accept(client).await else {
                    return;
                };
                let Ok(upstream) = TcpStream::connect(&temporal).await else {
                    return;
                };
                let Ok((sender, connection)) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(upstream),
                )
                .await
                else {
                    return;
                };
                tokio::spawn(connection);
                let service = hyper::service::service_fn(move |request| {
                    relay(request, sender.clone(), state.clone())
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}

type Answer = Response<Either<Incoming, Empty<Bytes>>>;

/// One call on the API-key endpoint: refused as Cloud would, or sent on without its key.
async fn relay(
    mut request: Request<Incoming>,
    mut temporal: SendRequest<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Answer, Infallible> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
    let admitted = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .admit_api_key(
            header("authorization"),
            header("temporal-namespace"),
            request.uri().path(),
        );
    if let Err(status) = admitted {
        return Ok(status.into_http::<Empty<Bytes>>().map(Either::Right));
    }
    request.headers_mut().remove("authorization");
    Ok(match temporal.send_request(request).await {
        Ok(answer) => answer.map(Either::Left),
        Err(e) => tonic::Status::unavailable(e.to_string())
            .into_http::<Empty<Bytes>>()
            .map(Either::Right),
    })
}

/// Server settings with `identity` that, given `cas` (PEM), demand a client certificate
/// from one of them.
fn server_config(
    identity: &EndpointIdentity,
    cas: Option<&[Vec<u8>]>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match cas {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            for pem in cas {
                for cert in CertificateDer::pem_slice_iter(pem).flatten() {
                    let _ = roots.add(cert);
                }
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key =
        PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
