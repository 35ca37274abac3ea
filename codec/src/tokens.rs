//! Bearer tokens: JWTs verified against a JWKS (file or URL), with issuer, audience and
//! expiry required and checked, the caller named by one configured claim.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use plinth_identity::Identity;

/// How often an unknown key id may make the verifier fetch the JWKS again.
const REFETCH_AFTER: Duration = Duration::from_secs(60);

/// Where the signing keys are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS JSON file.
    File(PathBuf),
    /// An `http://` or `https://` URL (https verified against the system's roots).
    Url(String),
}

impl JwksSource {
    /// `http(s)://...` is a URL, anything else a file path.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("http://") || text.starts_with("https://") {
            Self::Url(text.to_owned())
        } else {
            Self::File(PathBuf::from(text))
        }
    }
}

/// Why a token was refused; the token itself never appears.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The JWKS could not be read or parsed.
    #[error("JWKS {source_name}: {message}")]
    Jwks {
        /// File or URL.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// The token is not a well-formed, correctly signed, current JWT for this audience.
    #[error("bearer token refused: {0}")]
    Invalid(String),
    /// The configured claim holds no e-mail address usable as an identity.
    #[error("bearer token names no user: its `{0}` claim holds no e-mail address")]
    NoIdentity(String),
    /// The identity is an e-mail address the identity provider has not verified.
    #[error("bearer token names an e-mail address that is not verified (`email_verified`)")]
    UnverifiedEmail,
}

/// What a token must say to be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Required `iss`.
    pub issuer: String,
    /// Required in `aud`.
    pub audience: String,
    /// The claim holding the caller's e-mail address. When it is `email`, the token must also
    /// say `email_verified: true`.
    pub identity_claim: String,
}

/// Verifies bearer tokens.
#[derive(Debug)]
pub struct TokenVerifier {
    source: JwksSource,
    policy: TokenPolicy,
    keys: Mutex<(JwkSet, Instant)>,
}

impl TokenVerifier {
    /// Loads the JWKS now.
    pub async fn new(source: JwksSource, policy: TokenPolicy) -> Result<Self, TokenError> {
        let keys = fetch(&source).await?;
        Ok(Self {
            source,
            policy,
            keys: Mutex::new((keys, Instant::now())),
        })
    }

    /// The user a valid token names.
    pub async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let kid = header
            .kid
            .clone()
            .ok_or_else(|| TokenError::Invalid("no `kid` in the header".into()))?;
        let mut jwk = self.keys.lock().expect("jwks lock").0.find(&kid).cloned();
        if jwk.is_none() && self.keys.lock().expect("jwks lock").1.elapsed() > REFETCH_AFTER {
            // Keys rotate: an unknown id may be new.
            let keys = fetch(&self.source).await?;
            jwk = keys.find(&kid).cloned();
            *self.keys.lock().expect("jwks lock") = (keys, Instant::now());
        }
        let jwk = jwk.ok_or_else(|| TokenError::Invalid(format!("unknown key id {kid:?}")))?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&self.policy.issuer]);
        validation.set_audience(&[&self.policy.audience]);
        let claims = decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?
            .claims;
        let claim = &self.policy.identity_claim;
        let identity = claims
            .get(claim)
            .and_then(serde_json::Value::as_str)
            .and_then(|value| Identity::user(value).ok())
            .ok_or_else(|| TokenError::NoIdentity(claim.clone()))?;
        // Some identity providers send the flag as a string.
        let verified = matches!(
            claims.get("email_verified"),
            Some(serde_json::Value::Bool(true))
        ) || claims
            .get("email_verified")
            .and_then(serde_json::Value::as_str)
            == Some("true");
        if claim == "email" && !verified {
            return Err(TokenError::UnverifiedEmail);
        }
        Ok(identity)
    }
}

async fn fetch(source: &JwksSource) -> Result<JwkSet, TokenError> {
    let (name, text) = match source {
        JwksSource::File(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|e| e.to_string()),
        ),
        JwksSource::Url(url) => (url.clone(), get(url).await),
    };
    let error = |message: String| TokenError::Jwks {
        source_name: name.clone(),
        message,
    };
    serde_json::from_str(&text.map_err(error)?).map_err(|e| error(e.to_string()))
}

/// One HTTP/1.1 GET; https is verified against the system's trust roots.
async fn get(url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().ok_or("no host")?.to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, host.as_str())
        .body(Empty::<hyper::body::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = if https {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name =
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        send(hyper_util::rt::TokioIo::new(tls), request).await?
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), request).await?
    };
    Ok(response)
}

async fn send<T>(
    io: T,
    request: hyper::Request<Empty<hyper::body::Bytes>>,
) -> Result<String, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A P-256 key as a JWKS document, and its PKCS#8 for signing.
    fn jwks() -> (String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = key.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "k1",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        }]});
        (jwks.to_string(), key.serialize_der())
    }

    fn token(key: &[u8], claims: serde_json::Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(key),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// Serves `body` once per connection over plain HTTP/1.1 on a free loopback port.
    async fn serve_once(body: String) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        format!("http://{address}/.well-known/jwks.json")
    }

    #[tokio::test]
    async fn tokens_from_a_jwks_url_are_checked_for_issuer_audience_and_expiry() {
        let (jwks, key) = jwks();
        let url = serve_once(jwks).await;
        let verifier = TokenVerifier::new(JwksSource::parse(&url), policy("email"))
            .await
            .unwrap();
        let claims = |iss: &str, aud: &str, exp: u64| serde_json::json!({"email": "Alice@Example.com", "email_verified": true, "iss": iss, "aud": aud, "exp": exp});
        let good = token(&key, claims("https://idp", "ui", now() + 60));
        assert_eq!(
            verifier.verify(&good).await.unwrap(),
            Identity::user("alice@example.com").unwrap()
        );
        for bad in [
            claims("https://other", "ui", now() + 60),
            claims("https://idp", "other", now() + 60),
            claims("https://idp", "ui", now() - 600),
        ] {
            let err = verifier.verify(&token(&key, bad)).await.unwrap_err();
            assert!(matches!(err, TokenError::Invalid(_)), "{err}");
        }
        let last = if good.ends_with('A') { 'B' } else { 'A' };
        let forged = format!("{}{last}", &good[..good.len() - 1]);
        assert!(verifier.verify(&forged).await.is_err(), "signature checked");
        let no_issuer = serde_json::json!({"email": "alice@example.com", "email_verified": true, "aud": "ui", "exp": now() + 60});
        let err = verifier.verify(&token(&key, no_issuer)).await.unwrap_err();
        assert!(
            matches!(err, TokenError::Invalid(_)),
            "issuer required: {err}"
        );
    }

    fn policy(claim: &str) -> TokenPolicy {
        TokenPolicy {
            issuer: "https://idp".into(),
            audience: "ui".into(),
            identity_claim: claim.into(),
        }
    }

    #[tokio::test]
    async fn an_unverified_email_is_refused_and_another_claim_can_name_the_caller() {
        let (jwks, key) = jwks();
        let url = serve_once(jwks).await;
        let claims = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({"email": "alice@example.com", "iss": "https://idp", "aud": "ui", "exp": now() + 60});
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            token(&key, claims)
        };
        let by_email = TokenVerifier::new(JwksSource::parse(&url), policy("email"))
            .await
            .unwrap();
        for unverified in [
            serde_json::json!({}),
            serde_json::json!({"email_verified": false}),
        ] {
            let err = by_email.verify(&claims(unverified)).await.unwrap_err();
            assert!(matches!(err, TokenError::UnverifiedEmail), "{err}");
        }
        let verified = by_email
            .verify(&claims(serde_json::json!({"email_verified": "true"})))
            .await
            .unwrap();
        assert_eq!(verified, Identity::user("alice@example.com").unwrap());

        let by_upn = TokenVerifier::new(JwksSource::parse(&url), policy("upn"))
            .await
            .unwrap();
        let named = by_upn
            .verify(&claims(serde_json::json!({"upn": "bob@example.com"})))
            .await
            .unwrap();
        assert_eq!(named, Identity::user("bob@example.com").unwrap());
        let err = by_upn
            .verify(&claims(serde_json::json!({})))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bearer token names no user: its `upn` claim holds no e-mail address"
        );
    }
}
