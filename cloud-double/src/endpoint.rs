//! The namespaces' gRPC endpoint: TLS in front of the backing Temporal that, as Cloud's mTLS
//! endpoints do, accepts only client certificates chaining to a CA some namespace accepts
//! (`mtls_auth.accepted_client_ca`), read at each handshake so a namespace's CA applies as
//! soon as it is set.

use std::sync::{Arc, Mutex, PoisonError};

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
            let config = match server_config(&identity, &cas) {
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

/// Server settings with `identity` that demand a client certificate from one of `cas` (PEM).
fn server_config(
    identity: &EndpointIdentity,
    cas: &[Vec<u8>],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in cas {
        for cert in CertificateDer::pem_slice_iter(pem).flatten() {
            let _ = roots.add(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| e.to_string())?;
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key =
        PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
