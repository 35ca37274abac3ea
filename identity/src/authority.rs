use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;
use x509_parser::pem::parse_x509_pem;

use crate::{Identity, TrustDomain};

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Issued certificates start a little in the past so a peer with a slow clock accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why a certificate could not be created, loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A private key file can be read by other users.
    #[error("{path} has mode {mode:o}; private keys must be 0600 (run: chmod 600 {path})")]
    KeyTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A certificate or key on disk is not valid PEM of the expected kind.
    #[error("{path}: not a usable certificate or key: {reason}")]
    Malformed {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The requested lifetime is zero or longer than the CA's own.
    #[error("certificate lifetime {0:?} must be between 1 second and the CA's 10 years")]
    InvalidTtl(Duration),
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM. Never log it.
    pub key_pem: String,
    /// When the certificate stops being valid.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl IssuedCertificate {
    /// Writes the certificate (mode 0644) and the key (mode 0600), each atomically.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), PkiError> {
        write_atomic(cert_path, self.cert_pem.as_bytes(), 0o644)?;
        write_private(key_path, self.key_pem.as_bytes())
    }

    /// Reads the expiry of a PEM certificate file.
    pub fn not_after_of(cert_path: &Path) -> Result<SystemTime, PkiError> {
        let pem = read(cert_path)?;
        let malformed = |reason: String| PkiError::Malformed {
            path: cert_path.to_owned(),
            reason,
        };
        let (_, pem) = parse_x509_pem(pem.as_bytes()).map_err(|e| malformed(e.to_string()))?;
        let cert = pem.parse_x509().map_err(|e| malformed(e.to_string()))?;
        let secs = cert.validity().not_after.timestamp();
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
    }
}

/// The local certificate authority (ECDSA P-256) that issues Plinth's server and client
/// certificates. Production deployments use the company's CA instead; Plinth then needs only
/// the trust bundle.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new CA valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA from `dir/ca.pem` and `dir/ca.key`; the key must be mode 0600.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read(&cert_path)?;
        let key_pem = read_private(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Malformed {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| PkiError::Malformed {
            path: cert_path,
            reason: e.to_string(),
        })?;
        Ok(Self { cert_pem, issuer })
    }

    /// Loads the CA in `dir`, or creates and saves one there. The flag is true when created.
    pub fn load_or_create(dir: &Path, common_name: &str) -> Result<(Self, bool), PkiError> {
        if dir.join(CA_CERT_FILE).exists() {
            return Ok((Self::load(dir)?, false));
        }
        let ca = Self::generate(common_name)?;
        ca.save(dir)?;
        Ok((ca, true))
    }

    /// Writes `dir/ca.pem` and `dir/ca.key` (mode 0600).
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        create_dir(dir)?;
        write_atomic(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        write_private(
            &dir.join(CA_KEY_FILE),
            self.issuer.key().serialize_pem().as_bytes(),
        )
    }

    /// Path of the CA certificate inside a PKI directory.
    pub fn cert_path(dir: &Path) -> PathBuf {
        dir.join(CA_CERT_FILE)
    }

    /// The CA certificate, PEM: the trust bundle clients and servers need.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a server certificate for DNS names and IP addresses.
    pub fn issue_server(
        &self,
        names: &[String],
        ttl: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("plinth", String::as_str),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, ttl)
    }

    /// Issues a client certificate whose only SAN is the identity's SPIFFE ID.
    pub fn issue_client(
        &self,
        identity: &Identity,
        trust_domain: &TrustDomain,
        ttl: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, identity.to_string());
        params.subject_alt_names = vec![SanType::URI(identity.spiffe_id(trust_domain).try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, ttl)
    }

    /// Signs arbitrary parameters with a fresh P-256 key; `ttl` bounds the validity.
    pub(crate) fn sign(
        &self,
        mut params: CertificateParams,
        ttl: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        if ttl.is_zero() || ttl > CA_VALIDITY {
            return Err(PkiError::InvalidTtl(ttl));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, ttl);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: params.not_after.into(),
        })
    }
}

fn set_validity(params: &mut CertificateParams, ttl: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + ttl;
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads a secret file, refused when other users may read it.
pub fn read_private(path: &Path) -> Result<String, PkiError> {
    let meta = fs::metadata(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PkiError::KeyTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    read(path)
}

/// Writes a secret file with mode 0600, atomically (readers never see a partial key).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_atomic(path, contents, 0o600)
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir(parent)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_ca_reloads_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, created) = CertificateAuthority::load_or_create(dir.path(), "test CA").unwrap();
        assert!(created);
        let mode = fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let (again, created) = CertificateAuthority::load_or_create(dir.path(), "test CA").unwrap();
        assert!(!created);
        assert_eq!(again.cert_pem(), ca.cert_pem());
    }

    #[test]
    fn world_readable_ca_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::generate("t")
            .unwrap()
            .save(dir.path())
            .unwrap();
        let key = dir.path().join(CA_KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = CertificateAuthority::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, PkiError::KeyTooOpen { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("ca.key"));
    }

    #[test]
    fn issued_expiry_is_readable_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate("t").unwrap();
        let td: TrustDomain = "plinth.local".parse().unwrap();
        let cert = ca
            .issue_client(&Identity::app("x").unwrap(), &td, Duration::from_secs(3600))
            .unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        cert.write(&c, &k).unwrap();
        let read_back = IssuedCertificate::not_after_of(&c).unwrap();
        let diff = read_back
            .duration_since(cert.not_after)
            .unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_secs(1));
        assert_eq!(
            fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn zero_ttl_is_refused() {
        let ca = CertificateAuthority::generate("t").unwrap();
        let err = ca
            .issue_server(&["localhost".into()], Duration::ZERO)
            .unwrap_err();
        assert!(matches!(err, PkiError::InvalidTtl(_)));
    }
}
