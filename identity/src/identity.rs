use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// A verified caller: a person or an application.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// A person, named by e-mail address.
    User {
        /// Lower-cased e-mail address.
        email: String,
    },
    /// A workload, named by its application name.
    App {
        /// Application name as it appears in the SPIFFE path.
        name: String,
    },
}

impl Identity {
    /// A user identity, after checking the address.
    pub fn user(email: &str) -> Result<Self, IdentityError> {
        validate_email(email)?;
        Ok(Self::User {
            email: email.to_ascii_lowercase(),
        })
    }

    /// An application identity, after checking the name.
    pub fn app(name: &str) -> Result<Self, IdentityError> {
        validate_app_name(name)?;
        Ok(Self::App {
            name: name.to_owned(),
        })
    }

    /// The SPIFFE ID that names this identity in `trust_domain`.
    pub fn spiffe_id(&self, trust_domain: &TrustDomain) -> String {
        match self {
            Self::User { email } => format!("spiffe://{trust_domain}/user/{email}"),
            Self::App { name } => format!("spiffe://{trust_domain}/app/{name}"),
        }
    }

    /// Parses `spiffe://<trust-domain>/user/<email>` or `.../app/<name>`.
    pub fn from_spiffe_id(uri: &str, trust_domain: &TrustDomain) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdentityError::NotSpiffe(uri.to_owned()))?;
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !domain.eq_ignore_ascii_case(trust_domain.as_str()) {
            return Err(IdentityError::ForeignTrustDomain {
                expected: trust_domain.to_string(),
                found: domain.to_owned(),
            });
        }
        let malformed = || IdentityError::MalformedPath(format!("/{path}"));
        let (kind, name) = path.split_once('/').ok_or_else(malformed)?;
        match kind {
            "user" => Self::user(name).map_err(|_| malformed()),
            "app" => Self::app(name).map_err(|_| malformed()),
            _ => Err(malformed()),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User { email } => write!(f, "user:{email}"),
            Self::App { name } => write!(f, "app:{name}"),
        }
    }
}

/// Why a certificate does not name a caller Plinth accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The certificate's validity period has ended.
    #[error("client certificate has expired")]
    Expired,
    /// The certificate's validity period has not started.
    #[error("client certificate is not valid yet")]
    NotYetValid,
    /// The certificate was not issued by a CA that Plinth trusts.
    #[error("client certificate was not issued by a trusted CA")]
    UnknownIssuer,
    /// The certificate is not usable for client authentication for another reason.
    #[error("client certificate rejected: {0}")]
    Invalid(String),
    /// Neither a URI SAN nor an e-mail SAN names the caller.
    #[error("client certificate names no identity: it needs one SPIFFE URI SAN or an e-mail SAN")]
    NoIdentity,
    /// More than one URI SAN: the caller would be ambiguous.
    #[error("client certificate has {0} URI SANs; exactly one SPIFFE ID is allowed")]
    SeveralUriSans(usize),
    /// More than one e-mail SAN and no URI SAN: the caller would be ambiguous.
    #[error("client certificate has {0} e-mail SANs and no SPIFFE ID; exactly one is allowed")]
    SeveralEmailSans(usize),
    /// The URI SAN is not a SPIFFE ID.
    #[error("URI SAN {0:?} is not a spiffe:// ID")]
    NotSpiffe(String),
    /// The SPIFFE ID belongs to another trust domain.
    #[error("SPIFFE ID is in trust domain {found:?}, expected {expected:?}")]
    ForeignTrustDomain {
        /// The trust domain Plinth is configured with.
        expected: String,
        /// The trust domain the certificate names.
        found: String,
    },
    /// The SPIFFE path is not `/user/<email>` or `/app/<name>`.
    #[error("SPIFFE path {0:?} is not /user/<email> or /app/<name>")]
    MalformedPath(String),
    /// An e-mail address is not of the form `local@domain`.
    #[error("{0:?} is not an e-mail address")]
    InvalidEmail(String),
    /// An application name uses characters outside `[a-z0-9._-]` or is empty or too long.
    #[error("{0:?} is not an application name: use 1-63 characters of a-z, 0-9, '.', '_', '-'")]
    InvalidAppName(String),
    /// A trust domain uses characters outside `[a-z0-9._-]` or is empty.
    #[error("{0:?} is not a trust domain: use lower-case letters, digits, '.', '_', '-'")]
    InvalidTrustDomain(String),
}

/// A SPIFFE trust domain such as `plinth.local`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The trust domain as written in SPIFFE IDs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrustDomain {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdentityError::InvalidTrustDomain(s.to_owned()))
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn validate_email(email: &str) -> Result<(), IdentityError> {
    let invalid = || IdentityError::InvalidEmail(email.to_owned());
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let allowed = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
    };
    if local.is_empty() || domain.is_empty() || !domain.contains('.') {
        return Err(invalid());
    }
    if !allowed(local) || !allowed(domain) || domain.starts_with('.') || domain.ends_with('.') {
        return Err(invalid());
    }
    Ok(())
}

fn validate_app_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidAppName(name.to_owned()))
    }
}

/// The identity a certificate names. Only call this on a certificate the TLS stack (or
/// [`crate::ClientVerifier`]) has already verified: it checks names, not signatures.
pub fn identity_from_certificate(
    cert: &CertificateDer<'_>,
    trust_domain: &TrustDomain,
) -> Result<Identity, IdentityError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| IdentityError::Invalid(format!("unparseable certificate: {e}")))?;
    let names = parsed
        .subject_alternative_name()
        .map_err(|e| IdentityError::Invalid(format!("bad subjectAltName extension: {e}")))?
        .map(|ext| ext.value.general_names.as_slice())
        .unwrap_or_default();
    let uris: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [uri] => return Identity::from_spiffe_id(uri, trust_domain),
        [] => {}
        several => return Err(IdentityError::SeveralUriSans(several.len())),
    }
    let emails: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::RFC822Name(email) => Some(*email),
            _ => None,
        })
        .collect();
    match emails.as_slice() {
        [email] => Identity::user(email),
        [] => Err(IdentityError::NoIdentity),
        several => Err(IdentityError::SeveralEmailSans(several.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td() -> TrustDomain {
        "plinth.local".parse().unwrap()
    }

    #[test]
    fn spiffe_ids_round_trip() {
        for id in [
            Identity::user("Alice@Example.com").unwrap(),
            Identity::app("billing-worker").unwrap(),
        ] {
            assert_eq!(
                Identity::from_spiffe_id(&id.spiffe_id(&td()), &td()),
                Ok(id)
            );
        }
    }

    #[test]
    fn spiffe_id_errors_name_the_cause() {
        let cases = [
            ("https://plinth.local/user/a@b.c", "NotSpiffe"),
            ("spiffe://other.org/user/a@b.c", "ForeignTrustDomain"),
            ("spiffe://plinth.local/user", "MalformedPath"),
            ("spiffe://plinth.local/user/not-an-email", "MalformedPath"),
            ("spiffe://plinth.local/app/Upper", "MalformedPath"),
            ("spiffe://plinth.local/robot/x", "MalformedPath"),
            ("spiffe://plinth.local/app/a/b", "MalformedPath"),
        ];
        for (uri, want) in cases {
            let err = Identity::from_spiffe_id(uri, &td()).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{uri}: {err:?}");
        }
    }

    #[test]
    fn trust_domain_and_names_are_checked() {
        assert!("Bad Domain".parse::<TrustDomain>().is_err());
        assert!(Identity::user("@example.com").is_err());
        assert!(Identity::user("a@localhost").is_err());
        assert!(Identity::app("").is_err());
        assert!(Identity::app(&"a".repeat(64)).is_err());
    }
}
