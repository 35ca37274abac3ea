//! Clients of the Temporal frontends namespaces live on: one per endpoint, with the proxy's
//! own client certificate, re-read from disk when it changes. Each is a hyper HTTP/2 client
//! (hyper-rustls for TLS) driven straight from the calling task, with no queue in between.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
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
    pub client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `http://host:port`, or `https://` when upstreams are reached over TLS.
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
        let config = match &tls.client {
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
        *self.client_tls.write().expect("tls lock") = Some(Arc::new(config));
        Ok(())
    }

    fn connect(&self, endpoint: &str) -> Result<Upstream, UpstreamError> {
        let invalid = |reason: String| UpstreamError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let tls = self.client_tls.read().expect("tls lock").clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let origin: Uri = format!("{scheme}://{endpoint}")
            .parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(e.to_string()))?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // An `http://` origin never makes a TLS connection, whatever configuration it carries.
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(tls.map_or_else(plaintext_only, |config| (*config).clone()))
            .https_or_http();
        let builder = match self.tls.as_ref().and_then(|tls| tls.server_name.clone()) {
            Some(name) => {
                let name = ServerName::try_from(name).map_err(|e| invalid(e.to_string()))?;
                builder.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .build(builder.enable_http2().wrap_connector(tcp));
        Ok(Upstream { client, origin })
    }
}

/// The TLS configuration of a connector that only ever makes plaintext connections.
fn plaintext_only() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
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
