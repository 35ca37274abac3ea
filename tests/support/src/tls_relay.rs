//! An mTLS front for a plaintext Temporal, as a company's load balancer or Temporal Cloud
//! would be: it has its own CA, demands a client certificate signed by it, and records which
//! certificate each connection presented.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

/// A running relay; stops when dropped.
#[derive(Debug)]
pub struct TlsRelay {
    /// `host:port` clients connect to.
    pub address: String,
    ca_cert_pem: String,
    ca: (CertificateParams, KeyPair),
    presented: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TlsRelay {
    /// Relays to `target` (plaintext `host:port`).
    pub fn start(target: String) -> anyhow::Result<TlsRelay> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "upstream test CA");
        let ca_cert = ca_params.clone().self_signed(&ca_key)?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let server_key = KeyPair::generate()?;
        let server_cert =
            CertificateParams::new(vec!["localhost".into()])?.signed_by(&server_key, &issuer)?;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?.to_string();
        let presented = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let seen = presented.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                let relay = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        let (acceptor, seen, target) =
                            (acceptor.clone(), seen.clone(), target.clone());
                        tokio::spawn(async move {
                            let Ok(mut tls) = acceptor.accept(client).await else {
                                return;
                            };
                            if let Some(leaf) =
                                tls.get_ref().1.peer_certificates().and_then(|c| c.first())
                            {
                                seen.lock().unwrap().push(leaf.to_vec());
                            }
                            let Ok(mut upstream) = TcpStream::connect(&target).await else {
                                return;
                            };
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                        });
                    }
                };
                tokio::select! {
                    _ = relay => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(TlsRelay {
            address,
            ca_cert_pem: ca_cert.pem(),
            ca: (ca_params, ca_key),
            presented,
            stop: Some(stop),
        })
    }

    /// Writes the CA clients must trust.
    pub fn write_ca(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, &self.ca_cert_pem).with_context(|| path.display().to_string())
    }

    /// Writes a new client certificate named `name` (staged, then renamed into place, as
    /// certificate agents do) and returns its DER.
    pub fn issue_client(&self, name: &str, cert: &Path, key: &Path) -> anyhow::Result<Vec<u8>> {
        let issuer = Issuer::from_params(&self.ca.0, &self.ca.1);
        let client_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        let issued = params.signed_by(&client_key, &issuer)?;
        for (path, pem) in [(key, client_key.serialize_pem()), (cert, issued.pem())] {
            let staged = path.with_extension("staged");
            std::fs::write(&staged, pem)?;
            std::fs::rename(&staged, path)?;
        }
        Ok(issued.der().to_vec())
    }

    /// The client certificate (DER) of each connection accepted so far, in order.
    pub fn presented(&self) -> Vec<Vec<u8>> {
        self.presented.lock().unwrap().clone()
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
