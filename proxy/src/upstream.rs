//! Clients of the Temporal frontends namespaces live on: one per endpoint, with the proxy's
//! own client certificate, re-read from disk when it changes. Each is a hyper HTTP/2 client
//! driven straight from the calling task, with no queue in between.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

/// How the proxy reaches upstreams over TLS.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// CA bundle the upstream's certificate chains to; system roots when `None`.
    pub ca: Option<PathBuf>,
    /// The proxy's client certificate and key (mTLS), re-read when either file changes.
    pub client: Option<(PathBuf, PathBuf)>,
    /// Name to verify the upstream's certificate against, when not the endpoint's host.
    pub server_name: Option<String>,
}

/// Why an upstream client cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A certificate, key or CA file cannot be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint is not a valid address.
    #[error("upstream endpoint {endpoint}: {reason}")]
    Endpoint {
        /// As the namespace's status or `[proxy] upstream` gives it.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A client of one upstream endpoint and the origin its requests are addressed to.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Shares one HTTP/2 connection among all calls.
    pub client: Client<Connector, Full<Bytes>>,
    /// `http://host:port`.
    pub origin: Uri,
}

/// One client per upstream endpoint.
#[derive(Debug)]
pub struct Upstreams {
    tls: Option<UpstreamTls>,
    /// The TLS settings clients are built with now; replaced when the certificate changes.
    client_tls: RwLock<Option<Arc<rustls::ClientConfig>>>,
    /// Modification times of the client certificate and key the current settings were read at.
    client_files: Mutex<Option<(SystemTime, SystemTime)>>,
    clients: RwLock<HashMap<String, Upstream>>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A dead upstream connection is noticed within interval + timeout, even while calls wait on it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

impl Upstreams {
    /// Upstreams reached in plaintext (`tls: None`) or over TLS; reads the certificate now.
    pub fn new(tls: Option<UpstreamTls>) -> Result<Self, UpstreamError> {
        let upstreams = Self {
            tls,
            client_tls: RwLock::new(None),
            client_files: Mutex::new(None),
            clients: RwLock::default(),
        };
        upstreams.reload_tls()?;
        Ok(upstreams)
    }

    /// The client of `endpoint` (`host:port`), made on first use.
    pub fn client(&self, endpoint: &str) -> Result<Upstream, UpstreamError> {
        if let Some(upstream) = self.clients.read().expect("clients lock").get(endpoint) {
            return Ok(upstream.clone());
        }
        let upstream = self.connect(endpoint)?;
        Ok(self
            .clients
            .write()
            .expect("clients lock")
            .entry(endpoint.to_owned())
            .or_insert(upstream)
            .clone())
    }

    /// Drops the clients of endpoints no namespace uses any more; returns those endpoints.
    pub fn retain(&self, endpoints: &HashSet<String>) -> Vec<String> {
        let mut dropped = Vec::new();
        self.clients
            .write()
            .expect("clients lock")
            .retain(|endpoint, _| {
                let used = endpoints.contains(endpoint);
                if !used {
                    dropped.push(endpoint.clone());
                }
                used
            });
        dropped
    }

    /// Re-reads the client certificate if its files changed. New calls then go over new
    /// connections made with it; calls in flight finish on the connections they started on.
    /// Returns whether it changed.
    pub fn reload_if_changed(&self) -> Result<bool, UpstreamError> {
        let Some((cert, key)) = self.tls.as_ref().and_then(|tls| tls.client.as_ref()) else {
            return Ok(false);
        };
        let now = (modified(cert)?, modified(key)?);
        if *self.client_files.lock().expect("files lock") == Some(now) {
            return Ok(false);
        }
        self.reload_tls()?;
        self.clients.write().expect("clients lock").clear();
        Ok(true)
    }

    fn reload_tls(&self) -> Result<(), UpstreamError> {
        let Some(tls) = &self.tls else { return Ok(()) };
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca {
            Some(ca) => {
                for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
                    let cert = cert.map_err(|e| file_error(ca, e.to_string()))?;
                    roots.add(cert).map_err(|e| file_error(ca, e.to_string()))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(Path::new("(TLS settings)"), e.to_string()))?
        .with_root_certificates(roots);
        let mut config = match &tls.client {
            Some((cert, key)) => {
                // Timestamps first: a write after this read is seen on the next check.
                let stamps = (modified(cert)?, modified(key)?);
                let (chain, private_key) = read_identity(cert, key)?;
                let config = builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|e| file_error(key, format!("does not match the certificate: {e}")))?;
                *self.client_files.lock().expect("files lock") = Some(stamps);
                config
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        *self.client_tls.write().expect("tls lock") = Some(Arc::new(config));
        Ok(())
    }

    fn connect(&self, endpoint: &str) -> Result<Upstream, UpstreamError> {
        let invalid = |reason: String| UpstreamError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let origin: Uri = format!("http://{endpoint}")
            .parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(e.to_string()))?;
        let host = origin.host().unwrap_or_default().to_owned();
        let tls = match self.client_tls.read().expect("tls lock").clone() {
            Some(config) => {
                let name = self
                    .tls
                    .as_ref()
                    .and_then(|tls| tls.server_name.clone())
                    .unwrap_or(host);
                let name = ServerName::try_from(name).map_err(|e| invalid(e.to_string()))?;
                Some((config, name))
            }
            None => None,
        };
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .build(Connector { tls });
        Ok(Upstream { client, origin })
    }
}

/// Opens TCP (and TLS) connections to an upstream.
#[derive(Clone)]
pub struct Connector {
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .finish()
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<UpstreamIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in URI"))?
                .to_string();
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&authority))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect to {authority} timed out"),
                    )
                })??;
            tcp.set_nodelay(true)?;
            let stream: Box<dyn Io> = match tls {
                None => Box::new(tcp),
                Some((config, name)) => Box::new(
                    tokio_rustls::TlsConnector::from(config)
                        .connect(name, tcp)
                        .await?,
                ),
            };
            Ok(UpstreamIo(TokioIo::new(stream)))
        })
    }
}

/// A byte stream to an upstream: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An upstream connection as hyper drives it.
pub struct UpstreamIo(TokioIo<Box<dyn Io>>);

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn file_error(path: &Path, reason: String) -> UpstreamError {
    UpstreamError::File {
        path: path.to_owned(),
        reason,
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, UpstreamError> {
    std::fs::read(path).map_err(|e| file_error(path, e.to_string()))
}

fn modified(path: &PathBuf) -> Result<SystemTime, UpstreamError> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| file_error(path, e.to_string()))
}

/// A half-written pair is refused here, so the previous one stays in use.
fn read_identity(
    cert: &PathBuf,
    key: &PathBuf,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), UpstreamError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no certificate in the file".into()));
    }
    let private_key =
        PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| file_error(key, e.to_string()))?;
    Ok((chain, private_key))
}
