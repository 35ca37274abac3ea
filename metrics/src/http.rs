//! What scraping and remote write share: an HTTP endpoint with its client and bearer token,
//! shown without credentials, and how its answers are read.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why an endpoint cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The URL is not an absolute http or https URL.
    #[error("URL {url:?}: {reason}")]
    Url {
        /// As configured.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The bearer token cannot go in an HTTP header (its value is not shown).
    #[error("the bearer token holds characters an HTTP header cannot carry")]
    Token,
    /// The system's CA certificates cannot be read.
    #[error("cannot load the system's CA certificates: {0}")]
    Roots(String),
}

/// An http or https URL, the client that reaches it, and the bearer token every request
/// carries. Messages show it as scheme, host, port and path only, so credentials in the URL
/// never reach a log.
#[derive(Clone)]
pub(crate) struct Endpoint {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    authorization: Option<HeaderValue>,
    pub shown: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Endpoint {
    /// `url`, with `Authorization: Bearer <token>` when a token is given.
    pub fn new(url: &str, bearer_token: Option<&str>) -> Result<Endpoint, EndpointError> {
        let invalid = |reason| EndpointError::Url {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let (Some(scheme @ ("http" | "https")), Some(authority)) =
            (uri.scheme_str(), uri.authority())
        else {
            return Err(invalid(
                "must start with http:// or https:// and name a host",
            ));
        };
        let port = authority
            .port_u16()
            .map(|port| format!(":{port}"))
            .unwrap_or_default();
        let shown = format!("{scheme}://{}{port}{}", authority.host(), uri.path());
        let authorization = bearer_token
            .map(|token| {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| EndpointError::Token)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| EndpointError::Roots(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Endpoint {
            client: Client::builder(TokioExecutor::new()).build(https),
            uri,
            authorization,
            shown,
        })
    }

    /// A `method` request to the URL with `headers` and `body`, and the token.
    pub async fn send(
        &self,
        method: Method,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(self.uri.clone())
            .header(USER_AGENT, concat!("plinth/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(body))
            .expect("a request from a parsed URL and constant headers");
        self.client.request(request).await.map_err(|e| {
            let causes: Vec<String> =
                std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                    .map(ToString::to_string)
                    .collect();
            format!("{}: {}", self.shown, causes.join(": "))
        })
    }

    /// What an answer of `status` with `body` says, for messages.
    pub fn answered(&self, status: hyper::StatusCode, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let start: String = text.trim().chars().take(300).collect();
        format!("{} answered {status}: {start}", self.shown)
    }
}

/// `Retry-After` in seconds (metrics endpoints do not send the HTTP-date form).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}
