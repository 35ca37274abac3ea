//! Channels to the Temporal frontends namespaces live on: one per endpoint, with the proxy's
//! own client certificate, re-read from disk when it changes.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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

/// Why an upstream channel cannot be made.
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

/// One channel per upstream endpoint.
#[derive(Debug)]
pub struct Upstreams {
    tls: Option<UpstreamTls>,
    /// The TLS settings channels are built with now; replaced when the certificate changes.
    client_tls: RwLock<Option<ClientTlsConfig>>,
    /// Modification times of the client certificate and key the current settings were read at.
    client_files: Mutex<Option<(SystemTime, SystemTime)>>,
    channels: RwLock<HashMap<String, Channel>>,
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
            channels: RwLock::default(),
        };
        upstreams.reload_tls()?;
        Ok(upstreams)
    }

    /// The channel to `endpoint` (`host:port`), made on first use.
    pub fn channel(&self, endpoint: &str) -> Result<Channel, UpstreamError> {
        if let Some(channel) = self.channels.read().expect("channels lock").get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = self.connect(endpoint)?;
        Ok(self
            .channels
            .write()
            .expect("channels lock")
            .entry(endpoint.to_owned())
            .or_insert(channel)
            .clone())
    }

    /// Drops the channels of endpoints no namespace uses any more.
    pub fn retain(&self, endpoints: &HashSet<String>) {
        self.channels
            .write()
            .expect("channels lock")
            .retain(|endpoint, _| endpoints.contains(endpoint));
    }

    /// Endpoints with a channel now.
    pub fn endpoints(&self) -> Vec<String> {
        self.channels
            .read()
            .expect("channels lock")
            .keys()
            .cloned()
            .collect()
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
        self.channels.write().expect("channels lock").clear();
        Ok(true)
    }

    fn reload_tls(&self) -> Result<(), UpstreamError> {
        let Some(tls) = &self.tls else { return Ok(()) };
        let mut config = ClientTlsConfig::new();
        config = match &tls.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &tls.client {
            // Timestamps first: a write after this read is seen on the next check.
            let stamps = (modified(cert)?, modified(key)?);
            let (cert_pem, key_pem) = (read(cert)?, read(key)?);
            check_identity(cert, &cert_pem, key, &key_pem)?;
            config = config.identity(Identity::from_pem(cert_pem, key_pem));
            *self.client_files.lock().expect("files lock") = Some(stamps);
        }
        if let Some(name) = &tls.server_name {
            config = config.domain_name(name.clone());
        }
        *self.client_tls.write().expect("tls lock") = Some(config);
        Ok(())
    }

    fn connect(&self, endpoint: &str) -> Result<Channel, UpstreamError> {
        let invalid = |reason: String| UpstreamError::Endpoint {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let tls = self.client_tls.read().expect("tls lock").clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut builder = Endpoint::from_shared(format!("{scheme}://{endpoint}"))
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .map_err(|e| invalid(e.to_string()))?;
        }
        Ok(builder.connect_lazy())
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, UpstreamError> {
    std::fs::read(path).map_err(|e| UpstreamError::File {
        path: path.clone(),
        reason: e.to_string(),
    })
}

fn modified(path: &PathBuf) -> Result<SystemTime, UpstreamError> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| UpstreamError::File {
            path: path.clone(),
            reason: e.to_string(),
        })
}

/// A half-written or mismatched pair is refused here, so the previous one stays in use.
fn check_identity(
    cert: &PathBuf,
    cert_pem: &[u8],
    key: &PathBuf,
    key_pem: &[u8],
) -> Result<(), UpstreamError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &PathBuf, reason: String| UpstreamError::File {
        path: path.clone(),
        reason,
    };
    let chain: Vec<CertificateDer> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(key, e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| bad(key, e.to_string()))?;
    rustls::sign::CertifiedKey::new(chain, signing)
        .keys_match()
        .map_err(|e| bad(key, format!("does not match the certificate: {e}")))
}
