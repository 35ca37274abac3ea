//! Clients of the Temporal frontends namespaces live on: one HTTP/2 connection per endpoint,
//! with the proxy's own client certificate or API key, re-read from disk when it changes. A call goes
//! onto the connection from the calling task (h2, no dispatch queue or body task in between),
//! so its headers and message leave in one write.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use h2::client::SendRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::codegen::http::{self, HeaderMap, HeaderValue, Method, Uri, uri::PathAndQuery};

use crate::frame::{GRPC_STATUS, HEADER_BYTES, MAX_RESPONSE_BYTES};
use crate::keepalive::keep_alive;

/// How the proxy reaches upstreams over TLS.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// CA bundle the upstream's certificate chains to; system roots when `None`.
    pub ca: Option<PathBuf>,
    /// The proxy's client certificate (mTLS), if it presents one.
    pub client: Option<ClientIdentity>,
    /// Name to verify the upstream's certificate against, when not the endpoint's host.
    pub server_name: Option<String>,
    /// An API key every call carries as `authorization: Bearer …`.
    pub api_key: Option<Arc<plinth_identity::Secret>>,
    /// Vets each new version of the API key before a call carries it.
    pub api_key_check: Option<Arc<dyn KeyCheck>>,
}

/// Vets the API key its source holds now, before any call carries it: a key rotated into
/// the file is held to what the one the proxy started with was.
pub trait KeyCheck: Send + Sync + std::fmt::Debug {
    /// `Err` with why the key must not be used.
    fn check(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>>;
}

/// Where the proxy's client certificate comes from.
#[derive(Debug, Clone)]
pub enum ClientIdentity {
    /// Certificate and key files, re-read when either changes.
    Files(PathBuf, PathBuf),
    /// A certificate the proxy issues itself, its key never on disk, renewed at two thirds
    /// of its life.
    Issued(Arc<SelfIssued>),
}

/// What the proxy issues its own certificates with.
pub struct SelfIssued {
    /// The CA that signs them (the upstream trusts it).
    pub authority: plinth_identity::CertificateAuthority,
    /// Whom they name.
    pub identity: plinth_identity::Identity,
    /// The trust domain of the identity's SPIFFE ID.
    pub trust_domain: plinth_identity::TrustDomain,
    /// How long each is valid.
    pub lifetime: Duration,
}

impl std::fmt::Debug for SelfIssued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfIssued")
            .field("identity", &self.identity)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
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
    /// No connection could be made: refused, timed out, or the TLS handshake failed.
    #[error("upstream {endpoint}: cannot connect: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The API key cannot be read.
    #[error(transparent)]
    ApiKey(#[from] plinth_identity::SecretError),
    /// A new API key was refused; the previous one stays in use.
    #[error("new upstream API key refused, the previous one stays in use: {0}")]
    KeyRefused(String),
    /// The connection or the call's stream broke before the answer was whole.
    #[error("upstream {endpoint}: {reason}")]
    Call {
        /// The endpoint.
        endpoint: String,
        /// What broke.
        reason: String,
    },
}

/// A unary call's answer, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status and headers.
    pub head: http::response::Parts,
    /// The body: the framed message, or nothing for an error.
    pub body: Bytes,
    /// `grpc-status` and the rest, unless the answer was trailers-only.
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// The gRPC status code, from the trailers or a trailers-only answer's headers.
    pub fn code(&self) -> Option<tonic::Code> {
        self.trailers
            .as_ref()
            .unwrap_or(&self.head.headers)
            .get(&GRPC_STATUS)
            .map(|code| tonic::Code::from_bytes(code.as_bytes()))
    }
}

/// The client of one upstream endpoint: one HTTP/2 connection shared by all calls, made on
/// first use and again after it closes.
#[derive(Debug)]
pub struct Upstream {
    endpoint: String,
    /// `http://host:port`, or `https://` when upstreams are reached over TLS.
    origin: http::uri::Parts,
    /// The TLS settings and the name the upstream's certificate is checked against.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// `Bearer <API key>`, when calls carry one.
    authorization: Option<HeaderValue>,
    connection: Mutex<Option<Connection>>,
    /// Serializes connecting; the time and reason of the last failed attempt.
    connecting: tokio::sync::Mutex<Option<(Instant, String)>>,
}

#[derive(Debug, Clone)]
struct Connection {
    sender: SendRequest<Bytes>,
    /// Cleared when the connection ends.
    open: Arc<AtomicBool>,
}

/// What an upstream connection runs over.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// One client per upstream endpoint.
#[derive(Debug)]
pub struct Upstreams {
    /// TLS to the platform's own Temporal (and self-hosted namespaces); plaintext when `None`.
    tls: Option<Tls>,
    /// TLS to the namespaces of another backend (Temporal Cloud): every endpoint but the
    /// platform's own, which is named here.
    managed: Option<(String, Tls)>,
    clients: RwLock<HashMap<String, Arc<Upstream>>>,
}

/// One set of TLS settings, and the client configuration made from them now.
#[derive(Debug)]
struct Tls {
    settings: UpstreamTls,
    /// Replaced when the client certificate changes.
    config: RwLock<Arc<rustls::ClientConfig>>,
    /// Modification times of the client certificate and key the configuration was read at.
    client_files: Mutex<Option<(SystemTime, SystemTime)>>,
    /// When the current self-issued certificate was issued: wall-clock time, as its
    /// validity is, so a machine that was suspended renews on waking.
    issued_at: Mutex<Option<SystemTime>>,
    /// `Bearer <API key>` in use.
    bearer: Mutex<Option<HeaderValue>>,
    /// The last key [`UpstreamTls::api_key_check`] refused: not checked again.
    refused: Mutex<Option<HeaderValue>>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A dead upstream connection is noticed within interval + timeout, even while calls wait on it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Flow-control windows for answers: a history page arrives without waiting on window updates.
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 5 << 20;

impl Upstreams {
    /// Upstreams reached in plaintext (`tls: None`) or over TLS; reads the certificate now.
    pub fn new(tls: Option<UpstreamTls>) -> Result<Self, UpstreamError> {
        Ok(Self {
            tls: tls.map(Tls::load).transpose()?,
            managed: None,
            clients: RwLock::default(),
        })
    }

    /// Reaches every endpoint but `own` (the platform's Temporal) with `tls`: the namespaces
    /// of a backend with an access of its own, such as Temporal Cloud.
    pub fn with_managed(mut self, own: String, tls: UpstreamTls) -> Result<Self, UpstreamError> {
        self.managed = Some((own, Tls::load(tls)?));
        Ok(self)
    }

    /// The client of `endpoint` (`host:port`), made on first use; it connects on its first call.
    pub fn client(&self, endpoint: &str) -> Result<Arc<Upstream>, UpstreamError> {
        if let Some(upstream) = self.clients.read().expect("clients lock").get(endpoint) {
            return Ok(upstream.clone());
        }
        let upstream = Arc::new(self.upstream(endpoint)?);
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

    /// Re-reads a client certificate or API key whose files changed, or issues a new
    /// certificate at two thirds of the current one's life. New calls then go over new
    /// connections made with them; calls in flight finish on the connections they started
    /// on. Returns whether any changed.
    pub async fn reload_if_changed(&self) -> Result<bool, UpstreamError> {
        // Each set on its own: a broken file for one must not stop the other's renewal.
        let mut changed = false;
        let mut failed = None;
        for tls in self
            .tls
            .iter()
            .chain(self.managed.iter().map(|(_, tls)| tls))
        {
            match tls.reload_if_changed().await {
                Ok(renewed) => changed |= renewed,
                Err(e) => failed = Some(e),
            }
        }
        if changed {
            self.clients.write().expect("clients lock").clear();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(changed),
        }
    }

    fn upstream(&self, endpoint: &str) -> Result<Upstream, UpstreamError> {
        let invalid = |reason: String| UpstreamError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let tls = match &self.managed {
            Some((own, tls)) if own != endpoint => Some(tls),
            _ => self.tls.as_ref(),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let origin: Uri = format!("{scheme}://{endpoint}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
        let authorization = tls.and_then(|tls| tls.bearer.lock().expect("bearer lock").clone());
        let tls = match tls {
            None => None,
            Some(tls) => {
                let name = match tls.settings.server_name.clone() {
                    Some(name) => name,
                    None => origin.host().unwrap_or_default().to_owned(),
                };
                let name = ServerName::try_from(name).map_err(|e| invalid(e.to_string()))?;
                Some((tls.config.read().expect("tls lock").clone(), name))
            }
        };
        Ok(Upstream {
            endpoint: endpoint.to_owned(),
            origin: origin.into_parts(),
            tls,
            authorization,
            connection: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
        })
    }
}

impl Tls {
    fn load(settings: UpstreamTls) -> Result<Self, UpstreamError> {
        let built = Self::build(&settings)?;
        let bearer = Mutex::new(bearer(&settings)?);
        Ok(Self {
            settings,
            config: RwLock::new(built.config),
            client_files: Mutex::new(built.files),
            issued_at: Mutex::new(built.issued_at),
            bearer,
            refused: Mutex::new(None),
        })
    }

    async fn reload_if_changed(&self) -> Result<bool, UpstreamError> {
        let key = self.reload_key_if_changed().await;
        let certificate = self.reload_certificate_if_changed();
        Ok(key? | certificate?)
    }

    /// Takes a changed API key once [`UpstreamTls::api_key_check`] passes it.
    async fn reload_key_if_changed(&self) -> Result<bool, UpstreamError> {
        let now = bearer(&self.settings)?;
        if *self.bearer.lock().expect("bearer lock") == now
            || (now.is_some() && *self.refused.lock().expect("refused lock") == now)
        {
            return Ok(false);
        }
        if let (Some(check), Some(_)) = (&self.settings.api_key_check, &now)
            && let Err(reason) = check.check().await
        {
            *self.refused.lock().expect("refused lock") = now;
            return Err(UpstreamError::KeyRefused(reason));
        }
        *self.bearer.lock().expect("bearer lock") = now;
        Ok(true)
    }

    fn reload_certificate_if_changed(&self) -> Result<bool, UpstreamError> {
        match &self.settings.client {
            None => return Ok(false),
            Some(ClientIdentity::Files(cert, key)) => {
                let now = (modified(cert)?, modified(key)?);
                if *self.client_files.lock().expect("files lock") == Some(now) {
                    return Ok(false);
                }
            }
            Some(ClientIdentity::Issued(issuer)) => {
                let renew_after = issuer.lifetime * 2 / 3;
                let issued_at = *self.issued_at.lock().expect("issued lock");
                // A clock set back (issued "in the future") is not a reason to renew.
                let fresh = |at: SystemTime| at.elapsed().map_or(true, |age| age < renew_after);
                if issued_at.is_some_and(fresh) {
                    return Ok(false);
                }
            }
        }
        let built = Self::build(&self.settings)?;
        *self.config.write().expect("tls lock") = built.config;
        *self.client_files.lock().expect("files lock") = built.files;
        *self.issued_at.lock().expect("issued lock") = built.issued_at;
        Ok(true)
    }

    /// The client configuration, with the file stamps or issue time of its certificate.
    fn build(tls: &UpstreamTls) -> Result<Built, UpstreamError> {
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
        let (mut config, files, issued) = match &tls.client {
            Some(ClientIdentity::Files(cert, key)) => {
                // Timestamps first: a write after this read is seen on the next check.
                let stamps = (modified(cert)?, modified(key)?);
                let (chain, private_key) = read_identity(cert, key)?;
                let config = builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|e| file_error(key, format!("does not match the certificate: {e}")))?;
                (config, Some(stamps), None)
            }
            Some(ClientIdentity::Issued(issuer)) => {
                let issued_at = SystemTime::now();
                let (chain, private_key) = issue(issuer)?;
                let config = builder
                    .with_client_auth_cert(chain, private_key)
                    .map_err(|e| issue_error(e.to_string()))?;
                (config, None, Some(issued_at))
            }
            None => (builder.with_no_client_auth(), None, None),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Built {
            config: Arc::new(config),
            files,
            issued_at: issued,
        })
    }
}

/// The `authorization` value of `tls`'s API key, hidden from `Debug`.
fn bearer(tls: &UpstreamTls) -> Result<Option<HeaderValue>, UpstreamError> {
    let Some(key) = &tls.api_key else {
        return Ok(None);
    };
    let mut value =
        HeaderValue::try_from(key.bearer()?).expect("bearer() holds visible ASCII only");
    value.set_sensitive(true);
    Ok(Some(value))
}

/// A client configuration and where its certificate came from.
struct Built {
    config: Arc<rustls::ClientConfig>,
    files: Option<(SystemTime, SystemTime)>,
    issued_at: Option<SystemTime>,
}

impl Upstream {
    /// Sends one unary call (`headers` as the client sent them, `body` its framed message)
    /// and reads the answer whole. Dropping the future resets the call upstream.
    pub async fn call(
        &self,
        path: Option<&PathAndQuery>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Reply, UpstreamError> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = self.origin.scheme.clone();
        uri.authority = self.origin.authority.clone();
        uri.path_and_query = path.cloned();
        let mut request = http::Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from_parts(uri).map_err(|e| self.broken(e))?;
        *request.headers_mut() = headers;
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, authorization.clone());
        }
        let connection = self.connection().await?;
        let mut sender = match connection.sender.ready().await {
            Ok(sender) => sender,
            // A connection that was told to go away (or broke) takes no new calls; this one
            // was not sent, so it goes on a new connection. Calls in flight finish on the old.
            Err(_) => {
                connection.open.store(false, Ordering::Release);
                let connection = self.connection().await?;
                connection
                    .sender
                    .ready()
                    .await
                    .map_err(|e| self.broken(e))?
            }
        };
        let (response, mut stream) = sender
            .send_request(request, body.is_empty())
            .map_err(|e| self.broken(e))?;
        if !body.is_empty() {
            stream.send_data(body, true).map_err(|e| self.broken(e))?;
        }
        let (head, mut received) = response.await.map_err(|e| self.broken(e))?.into_parts();
        let (mut chunks, mut length) = (Vec::new(), 0);
        while let Some(chunk) = received.data().await {
            let chunk = chunk.map_err(|e| self.broken(e))?;
            let _ = received.flow_control().release_capacity(chunk.len());
            length += chunk.len();
            if length > HEADER_BYTES + MAX_RESPONSE_BYTES {
                return Err(UpstreamError::Call {
                    endpoint: self.endpoint.clone(),
                    reason: format!("answered more than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            chunks.push(chunk);
        }
        let trailers = received.trailers().await.map_err(|e| self.broken(e))?;
        let body = match <[Bytes; 1]>::try_from(chunks) {
            Ok([chunk]) => chunk,
            Err(chunks) => chunks.concat().into(),
        };
        Ok(Reply {
            head,
            body,
            trailers,
        })
    }

    /// The open connection, or a new one. Callers that waited on a failed attempt share its
    /// failure instead of each trying again in turn.
    async fn connection(&self) -> Result<Connection, UpstreamError> {
        if let Some(connection) = self.open_connection() {
            return Ok(connection);
        }
        let asked = Instant::now();
        let mut last_failure = self.connecting.lock().await;
        if let Some(connection) = self.open_connection() {
            return Ok(connection);
        }
        if let Some((at, reason)) = last_failure.as_ref()
            && *at >= asked
        {
            return Err(self.unreachable(reason.clone()));
        }
        match self.connect().await {
            Ok(connection) => {
                *self.connection.lock().expect("connection lock") = Some(connection.clone());
                Ok(connection)
            }
            Err(reason) => {
                *last_failure = Some((Instant::now(), reason.clone()));
                Err(self.unreachable(reason))
            }
        }
    }

    fn open_connection(&self) -> Option<Connection> {
        self.connection
            .lock()
            .expect("connection lock")
            .as_ref()
            .filter(|connection| connection.open.load(Ordering::Acquire))
            .cloned()
    }

    async fn connect(&self) -> Result<Connection, String> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.endpoint))
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        // gRPC writes small frames and waits for answers: Nagle's algorithm would hold them.
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let transport: Box<dyn Transport> = match &self.tls {
            None => Box::new(tcp),
            Some((config, name)) => Box::new(
                tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio_rustls::TlsConnector::from(config.clone()).connect(name.clone(), tcp),
                )
                .await
                .map_err(|_| format!("no TLS handshake within {CONNECT_TIMEOUT:?}"))?
                .map_err(|e| format!("TLS handshake: {e}"))?,
            ),
        };
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .enable_push(false)
            .handshake::<_, Bytes>(transport)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        let open = Arc::new(AtomicBool::new(true));
        let pings = connection.ping_pong();
        let (endpoint, still_open) = (self.endpoint.clone(), open.clone());
        tokio::spawn(async move {
            let ended = tokio::select! {
                ended = connection => ended.map_err(|e| error_chain(&e)),
                reason = keep_alive(pings, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT) => Err(reason),
            };
            still_open.store(false, Ordering::Release);
            if let Err(reason) = ended {
                tracing::warn!(endpoint, reason, "upstream connection closed");
            }
        });
        Ok(Connection { sender, open })
    }

    fn broken(&self, error: impl std::error::Error) -> UpstreamError {
        UpstreamError::Call {
            endpoint: self.endpoint.clone(),
            reason: error_chain(&error),
        }
    }

    fn unreachable(&self, reason: String) -> UpstreamError {
        UpstreamError::Connect {
            endpoint: self.endpoint.clone(),
            reason,
        }
    }
}

/// An error and its causes, which say what actually failed (refused, reset, timed out).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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

/// A new certificate and key from `issuer`.
fn issue(
    issuer: &SelfIssued,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), UpstreamError> {
    let issued = issuer
        .authority
        .issue_client(&issuer.identity, &issuer.trust_domain, issuer.lifetime)
        .map_err(|e| issue_error(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| issue_error(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
        .map_err(|e| issue_error(e.to_string()))?;
    Ok((chain, key))
}

fn issue_error(reason: String) -> UpstreamError {
    file_error(Path::new("(self-issued upstream certificate)"), reason)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Notify;

    fn self_issued(lifetime: Duration) -> UpstreamTls {
        UpstreamTls {
            ca: None,
            client: Some(ClientIdentity::Issued(Arc::new(SelfIssued {
                authority: plinth_identity::CertificateAuthority::generate("test upstream CA")
                    .unwrap(),
                identity: plinth_identity::Identity::app("plinth-proxy").unwrap(),
                trust_domain: "plinth.local".parse().unwrap(),
                lifetime,
            }))),
            server_name: None,
            api_key: None,
            api_key_check: None,
        }
    }

    #[tokio::test]
    async fn a_self_issued_certificate_is_renewed_at_two_thirds_of_its_life_only() {
        let tls = Tls::load(self_issued(Duration::from_secs(3600))).unwrap();
        assert!(!tls.reload_if_changed().await.unwrap(), "fresh");
        let old = SystemTime::now() - Duration::from_secs(2401);
        *tls.issued_at.lock().unwrap() = Some(old);
        assert!(tls.reload_if_changed().await.unwrap(), "past two thirds");
        // A clock set back makes the certificate look issued in the future: no churn.
        *tls.issued_at.lock().unwrap() = Some(SystemTime::now() + Duration::from_secs(3600));
        assert!(!tls.reload_if_changed().await.unwrap());
    }

    #[tokio::test]
    async fn only_managed_upstreams_carry_the_api_key_and_a_rotated_key_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "first\n").unwrap();
        let key = plinth_identity::Secret::new(
            "[backend] upstream_api_key",
            plinth_identity::SecretSource::File(key_file.clone()),
        );
        let tls = UpstreamTls {
            api_key: Some(Arc::new(key)),
            ..UpstreamTls::default()
        };
        let upstreams = Upstreams::new(None)
            .unwrap()
            .with_managed("own:7233".into(), tls)
            .unwrap();
        let carried = |endpoint: &str| {
            upstreams
                .client(endpoint)
                .unwrap()
                .authorization
                .as_ref()
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            carried("ns.acct.tmprl.cloud:7233").as_deref(),
            Some("Bearer first")
        );
        assert_eq!(
            carried("own:7233"),
            None,
            "the platform's Temporal gets no key"
        );
        assert!(!upstreams.reload_if_changed().await.unwrap(), "unchanged");

        std::fs::write(&key_file, "second-key\n").unwrap();
        assert!(upstreams.reload_if_changed().await.unwrap());
        assert_eq!(
            carried("ns.acct.tmprl.cloud:7233").as_deref(),
            Some("Bearer second-key")
        );
        let shown = format!(
            "{:?}",
            upstreams.client("ns.acct.tmprl.cloud:7233").unwrap()
        );
        assert!(!shown.contains("second-key"), "{shown}");
    }

    /// Passes keys while `pass` is set.
    #[derive(Debug, Default)]
    struct Vetting {
        pass: AtomicBool,
    }

    impl KeyCheck for Vetting {
        fn check(
            &self,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>>
        {
            let pass = self.pass.load(Ordering::SeqCst);
            Box::pin(async move {
                if pass {
                    Ok(())
                } else {
                    Err("not the proxy's".into())
                }
            })
        }
    }

    #[tokio::test]
    async fn a_rotated_key_the_check_refuses_is_not_used_and_the_previous_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "first\n").unwrap();
        let vetting = Arc::new(Vetting::default());
        let tls = UpstreamTls {
            api_key: Some(Arc::new(plinth_identity::Secret::new(
                "[backend] upstream_api_key",
                plinth_identity::SecretSource::File(key_file.clone()),
            ))),
            api_key_check: Some(vetting.clone()),
            ..UpstreamTls::default()
        };
        let upstreams = Upstreams::new(None)
            .unwrap()
            .with_managed("own:7233".into(), tls)
            .unwrap();
        let carried = || {
            upstreams
                .client("ns.acct.tmprl.cloud:7233")
                .unwrap()
                .authorization
                .as_ref()
                .map(|v| v.to_str().unwrap().to_owned())
        };
        std::fs::write(&key_file, "an-admins-key\n").unwrap();
        let refused = upstreams.reload_if_changed().await.unwrap_err();
        assert!(matches!(refused, UpstreamError::KeyRefused(_)), "{refused}");
        assert_eq!(carried().as_deref(), Some("Bearer first"));
        assert!(
            !upstreams.reload_if_changed().await.unwrap(),
            "refused once"
        );

        std::fs::write(&key_file, "the-proxys-new-key\n").unwrap();
        vetting.pass.store(true, Ordering::SeqCst);
        assert!(upstreams.reload_if_changed().await.unwrap());
        assert_eq!(carried().as_deref(), Some("Bearer the-proxys-new-key"));
    }

    /// An HTTP/2 server that holds `/hold` until `release` and answers everything else at
    /// once; it tells its first connection to go away as soon as that connection's first call
    /// arrives, as a server does at its maximum connection age, and refuses any other call on it.
    async fn upstream_that_goes_away(
        connections: Arc<AtomicUsize>,
        release: Arc<Notify>,
    ) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
                let release = release.clone();
                tokio::spawn(async move {
                    let mut connection = h2::server::handshake(tcp).await.unwrap();
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        if first {
                            connection.graceful_shutdown();
                        }
                        let hold = request.uri().path() == "/hold";
                        if first && !hold {
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                            continue;
                        }
                        let release = release.clone();
                        tokio::spawn(async move {
                            if hold {
                                release.notified().await;
                            }
                            let answer = http::Response::builder()
                                .header("grpc-status", "0")
                                .body(())
                                .unwrap();
                            respond.send_response(answer, true).unwrap();
                        });
                    }
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn a_connection_told_to_go_away_is_replaced_while_its_calls_finish() {
        let connections = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let address = upstream_that_goes_away(connections.clone(), release.clone()).await;
        let upstreams = Upstreams::new(None).unwrap();
        let upstream = upstreams.client(&address).unwrap();
        let call = |path: &'static str| {
            let upstream = upstream.clone();
            async move {
                upstream
                    .call(
                        Some(&PathAndQuery::from_static(path)),
                        HeaderMap::new(),
                        Bytes::new(),
                    )
                    .await
            }
        };

        let held = tokio::spawn(call("/hold"));
        // Until the client has read the GOAWAY, a call may still go on the old connection and
        // be refused; after it, calls go on a new one.
        let mut answered = None;
        for _ in 0..50 {
            match call("/now").await {
                Ok(reply) => {
                    answered = Some(reply);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let answered = answered.expect("a call after the GOAWAY is answered");
        assert_eq!(answered.head.headers["grpc-status"], "0");
        assert_eq!(connections.load(Ordering::SeqCst), 2, "a second connection");
        assert!(!held.is_finished(), "the held call is still in flight");

        release.notify_one();
        let held = held
            .await
            .unwrap()
            .expect("the held call finishes on the old connection");
        assert_eq!(held.head.headers["grpc-status"], "0");
        for _ in 0..3 {
            call("/now").await.expect("later calls keep working");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    }
}
