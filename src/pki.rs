//! `plinth pki`: the local CA, the server certificate and client certificates on disk.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use plinth_identity::{CertificateAuthority, Identity, IssuedCertificate, TrustDomain};

use crate::config::PkiConfig;
use crate::home::Home;

/// A certificate is renewed when it has less than this left.
const RENEW_BEFORE: Duration = Duration::from_secs(3600);

/// Files of one issued certificate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl CertFiles {
    fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
        }
    }
}

/// What `init` did.
#[derive(Debug)]
pub struct InitReport {
    pub ca_created: bool,
    pub server_issued: bool,
}

pub fn trust_domain(config: &PkiConfig) -> anyhow::Result<TrustDomain> {
    config.trust_domain.parse().context("[pki] trust_domain")
}

/// Creates the CA if missing and (re)issues the server certificate when missing or expiring.
pub fn init(home: &Home, config: &PkiConfig) -> anyhow::Result<InitReport> {
    let (ca, ca_created) =
        CertificateAuthority::load_or_create(&home.pki_dir(), "Plinth local CA")?;
    // The proxy's own certificates to Temporal Cloud come from a CA of their own, which the
    // front door never trusts and Cloud namespaces trust alone: a person's certificate does
    // not open a namespace around the proxy, and the proxy never holds the people's CA key.
    CertificateAuthority::load_or_create(&home.upstream_pki_dir(), "Plinth upstream CA")?;
    let server_issued = ca_created || needs_renewal(&home.server_cert());
    if server_issued {
        ca.issue_server(&config.server_names, config.server_cert_ttl)?
            .write(&home.server_cert(), &home.server_key())?;
    }
    Ok(InitReport {
        ca_created,
        server_issued,
    })
}

/// Whom a client certificate names.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "who", multiple = false)]
pub struct Who {
    /// A person, by e-mail: spiffe://<trust-domain>/user/<email>.
    #[arg(long)]
    user: Option<String>,
    /// A workload, by name: spiffe://<trust-domain>/app/<name>.
    #[arg(long)]
    app: Option<String>,
}

impl Who {
    /// The identity named, else the user `default`; an error when neither is given.
    pub fn identity(&self, default: Option<&str>) -> anyhow::Result<Identity> {
        match (&self.user, &self.app, default) {
            (Some(user), _, _) => Identity::user(user).context("--user"),
            (_, Some(app), _) => Identity::app(app).context("--app"),
            (None, None, Some(user)) => Identity::user(user).context("[dev] user"),
            (None, None, None) => anyhow::bail!("--user or --app is required"),
        }
    }
}

/// Issues a client certificate for `identity` into `out` (cert.pem, key.pem, ca.pem).
pub fn issue(
    home: &Home,
    config: &PkiConfig,
    identity: &Identity,
    ttl: Duration,
    out: &Path,
) -> anyhow::Result<(CertFiles, IssuedCertificate)> {
    let ca = load_ca(home)?;
    let issued = ca.issue_client(identity, &trust_domain(config)?, ttl)?;
    let files = CertFiles::in_dir(out);
    issued.write(&files.cert, &files.key)?;
    std::fs::write(&files.ca, ca.cert_pem()).with_context(|| files.ca.display().to_string())?;
    Ok((files, issued))
}

/// The default certificate of `identity` under `$PLINTH_HOME`, issued or renewed as needed.
pub fn ensure_client(
    home: &Home,
    config: &PkiConfig,
    identity: &Identity,
) -> anyhow::Result<CertFiles> {
    let dir = home.client_dir(identity);
    let files = CertFiles::in_dir(&dir);
    if needs_renewal(&files.cert) || !files.key.exists() {
        issue(home, config, identity, config.client_cert_ttl, &dir)?;
    }
    Ok(files)
}

fn load_ca(home: &Home) -> anyhow::Result<CertificateAuthority> {
    let dir = home.pki_dir();
    if !CertificateAuthority::cert_path(&dir).exists() {
        bail!(
            "no CA in {}: run `plinth pki init` (or `plinth dev`) first",
            dir.display()
        );
    }
    Ok(CertificateAuthority::load(&dir)?)
}

fn needs_renewal(cert: &Path) -> bool {
    match IssuedCertificate::not_after_of(cert) {
        Ok(not_after) => not_after < SystemTime::now() + RENEW_BEFORE,
        Err(_) => true,
    }
}
