//! Who is calling Plinth.
//!
//! Callers present X.509 client certificates carrying one SPIFFE URI SAN
//! (`spiffe://<trust-domain>/user/<email>` or `/app/<name>`), or failing that one e-mail SAN.
//! [`ClientVerifier`] checks a presented chain against the CA and turns it into an
//! [`Identity`]; [`CertificateAuthority`] is the local CA that `plinth pki` and `plinth dev`
//! use to issue such certificates. [`Secret`] reads the API keys and PINs Plinth presents
//! where certificates are not used.

mod authority;
mod identity;
mod secret;
mod tls;
mod verify;

pub use authority::{
    CertificateAuthority, IssuedCertificate, PkiError, read_private, write_private,
};
pub use identity::{Identity, IdentityError, TrustDomain, identity_from_certificate};
pub use secret::{Secret, SecretError, SecretSource};
pub use tls::{
    AuthenticatedStream, Caller, HandshakeLimits, TlsError, caller, client_config, incoming,
    server_config,
};
pub use verify::ClientVerifier;

/// Re-exported so callers name certificates with the same types the TLS stack uses.
pub use rustls::pki_types;
