use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore};

use crate::{Identity, IdentityError, TrustDomain, identity_from_certificate};

/// Verifies client certificate chains against a trust bundle and names the caller.
///
/// The same `rustls` verifier backs the TLS listeners, so what this accepts is exactly what a
/// Plinth server accepts.
#[derive(Debug, Clone)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// The same checks, but a connection without a certificate is let through (for servers
    /// that also accept bearer tokens).
    optional: Arc<dyn ClientCertVerifier>,
    trust_domain: TrustDomain,
}

impl ClientVerifier {
    /// A verifier trusting every certificate in the PEM bundle `trust_bundle_pem`.
    pub fn new(trust_bundle_pem: &[u8], trust_domain: TrustDomain) -> Result<Self, IdentityError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(trust_bundle_pem) {
            let cert = cert.map_err(|e| IdentityError::Invalid(format!("trust bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| IdentityError::Invalid(format!("trust bundle: {e}")))?;
        }
        if roots.is_empty() {
            return Err(IdentityError::Invalid(
                "trust bundle holds no certificate".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let invalid = |e: rustls::server::VerifierBuilderError| {
            IdentityError::Invalid(format!("trust bundle: {e}"))
        };
        let inner = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(invalid)?;
        let optional = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .allow_unauthenticated()
            .build()
            .map_err(invalid)?;
        Ok(Self {
            inner,
            optional,
            trust_domain,
        })
    }

    /// The `rustls` verifier, for TLS server configurations; with `required` false a client
    /// may present no certificate (one it presents is still verified).
    pub fn rustls_verifier(&self, required: bool) -> Arc<dyn ClientCertVerifier> {
        match required {
            true => self.inner.clone(),
            false => self.optional.clone(),
        }
    }

    /// The trust domain SPIFFE IDs must belong to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Checks the chain (leaf first) at `now` and returns the identity it names.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Identity, IdentityError> {
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| IdentityError::Invalid("no certificate presented".into()))?;
        self.inner
            .verify_client_cert(leaf, intermediates, now)
            .map_err(classify)?;
        identity_from_certificate(leaf, &self.trust_domain)
    }

    /// Parses a PEM chain and verifies it now.
    pub fn verify_pem(&self, chain_pem: &[u8]) -> Result<Identity, IdentityError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| IdentityError::Invalid(format!("certificate PEM: {e}")))?;
        self.verify(&chain, UnixTime::now())
    }
}

fn classify(err: rustls::Error) -> IdentityError {
    match err {
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => IdentityError::Expired,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => IdentityError::NotYetValid,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            IdentityError::UnknownIssuer
        }
        other => IdentityError::Invalid(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{CertificateParams, SanType};

    use super::*;
    use crate::CertificateAuthority;

    const HOUR: Duration = Duration::from_secs(3600);

    struct Fixture {
        ca: CertificateAuthority,
        verifier: ClientVerifier,
        td: TrustDomain,
    }

    fn fixture() -> Fixture {
        let ca = CertificateAuthority::generate("Plinth test CA").unwrap();
        let td: TrustDomain = "plinth.local".parse().unwrap();
        let verifier = ClientVerifier::new(ca.cert_pem().as_bytes(), td.clone()).unwrap();
        Fixture { ca, verifier, td }
    }

    fn with_sans(sans: Vec<SanType>) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn issued_user_and_app_certificates_name_their_identity() {
        let f = fixture();
        for id in [
            Identity::user("alice@example.com").unwrap(),
            Identity::app("billing-worker").unwrap(),
        ] {
            let cert = f.ca.issue_client(&id, &f.td, HOUR).unwrap();
            assert_eq!(f.verifier.verify_pem(cert.cert_pem.as_bytes()), Ok(id));
        }
    }

    #[test]
    fn email_san_is_accepted_when_there_is_no_uri() {
        let f = fixture();
        let params = with_sans(vec![SanType::Rfc822Name(
            "bob@example.com".try_into().unwrap(),
        )]);
        let cert = f.ca.sign(params, HOUR).unwrap();
        assert_eq!(
            f.verifier.verify_pem(cert.cert_pem.as_bytes()),
            Identity::user("bob@example.com")
        );
    }

    #[test]
    fn expired_certificate_is_rejected() {
        let f = fixture();
        let id = Identity::user("alice@example.com").unwrap();
        let cert = f.ca.issue_client(&id, &f.td, HOUR).unwrap();
        let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()];
        let later = UnixTime::since_unix_epoch(
            cert.not_after
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                + HOUR,
        );
        assert_eq!(
            f.verifier.verify(&chain, later),
            Err(IdentityError::Expired)
        );
    }

    #[test]
    fn foreign_ca_is_rejected() {
        let f = fixture();
        let other = CertificateAuthority::generate("someone else").unwrap();
        let cert = other
            .issue_client(&Identity::user("eve@example.com").unwrap(), &f.td, HOUR)
            .unwrap();
        assert_eq!(
            f.verifier.verify_pem(cert.cert_pem.as_bytes()),
            Err(IdentityError::UnknownIssuer)
        );
    }

    #[test]
    fn certificate_without_identity_is_rejected() {
        let f = fixture();
        let cert = f.ca.sign(with_sans(vec![]), HOUR).unwrap();
        assert_eq!(
            f.verifier.verify_pem(cert.cert_pem.as_bytes()),
            Err(IdentityError::NoIdentity)
        );
    }

    #[test]
    fn two_uri_sans_are_rejected() {
        let f = fixture();
        let params = with_sans(vec![
            uri("spiffe://plinth.local/user/a@example.com"),
            uri("spiffe://plinth.local/app/b"),
        ]);
        let cert = f.ca.sign(params, HOUR).unwrap();
        assert_eq!(
            f.verifier.verify_pem(cert.cert_pem.as_bytes()),
            Err(IdentityError::SeveralUriSans(2))
        );
    }

    #[test]
    fn foreign_trust_domain_is_rejected() {
        let f = fixture();
        let cert =
            f.ca.sign(
                with_sans(vec![uri("spiffe://evil.example/user/a@example.com")]),
                HOUR,
            )
            .unwrap();
        assert_eq!(
            f.verifier.verify_pem(cert.cert_pem.as_bytes()),
            Err(IdentityError::ForeignTrustDomain {
                expected: "plinth.local".into(),
                found: "evil.example".into()
            })
        );
    }

    #[test]
    fn malformed_spiffe_path_is_rejected() {
        let f = fixture();
        let cert =
            f.ca.sign(
                with_sans(vec![uri("spiffe://plinth.local/team/payments")]),
                HOUR,
            )
            .unwrap();
        assert_eq!(
            f.verifier.verify_pem(cert.cert_pem.as_bytes()),
            Err(IdentityError::MalformedPath("/team/payments".into()))
        );
    }

    #[test]
    fn server_certificate_is_not_a_client_certificate() {
        let f = fixture();
        let cert = f.ca.issue_server(&["localhost".into()], HOUR).unwrap();
        let err = f.verifier.verify_pem(cert.cert_pem.as_bytes()).unwrap_err();
        assert!(matches!(err, IdentityError::Invalid(_)), "{err:?}");
    }
}
