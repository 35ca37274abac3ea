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
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

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

    /// A `method` request to the URL, with `query` parameters added to any it has, `headers`,
    /// `body` and the token.
    pub async fn send(
        &self,
        method: Method,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(with_query(&self.uri, query))
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

/// `uri` with `query` appended, each name and value percent-encoded.
fn with_query(uri: &Uri, query: &[(&str, &str)]) -> Uri {
    if query.is_empty() {
        return uri.clone();
    }
    let mut path_and_query = uri.path().to_owned();
    let mut separator = '?';
    if let Some(existing) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(existing);
        separator = '&';
    }
    for (name, value) in query {
        path_and_query.push(separator);
        path_and_query.extend(utf8_percent_encode(name, QUERY_ENCODED));
        path_and_query.push('=');
        path_and_query.extend(utf8_percent_encode(value, QUERY_ENCODED));
        separator = '&';
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .expect("a parsed path with percent-encoded parameters"),
    );
    Uri::from_parts(parts).expect("the parts of a parsed URI")
}

/// Percent-encoded but RFC 3986's unreserved characters and `*` (a wildcard to the endpoints
/// that take one).
const QUERY_ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'*');

/// Why a bearer token cannot be read; the token itself is never in the message.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Both a file and a variable were named.
    #[error("a token file and a token variable are both set: set one")]
    Ambiguous,
    /// The token file cannot be read.
    #[error("token file {path}: {source}")]
    File {
        /// As configured.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The variable is not set (or not UTF-8).
    #[error("token variable {0} is not set")]
    Env(String),
}

/// A bearer token from a file (trimmed) or an environment variable of this process; `None`
/// when neither is named.
pub fn read_bearer_token(
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> Result<Option<String>, TokenError> {
    match (file, env) {
        (Some(_), Some(_)) => Err(TokenError::Ambiguous),
        (Some(path), None) => std::fs::read_to_string(path)
            .map(|text| Some(text.trim().to_owned()))
            .map_err(|source| TokenError::File {
                path: path.display().to_string(),
                source,
            }),
        (None, Some(var)) => std::env::var(var)
            .map(|value| Some(value.trim().to_owned()))
            .map_err(|_| TokenError::Env(var.to_owned())),
        (None, None) => Ok(None),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_added_encoded_after_any_the_url_has() {
        let plain: Uri = "https://metrics.temporal.io/v1/metrics".parse().unwrap();
        let filtered = with_query(
            &plain,
            &[("namespaces", "ledger"), ("namespaces", "prod-*")],
        );
        assert_eq!(
            filtered.to_string(),
            "https://metrics.temporal.io/v1/metrics?namespaces=ledger&namespaces=prod-*"
        );
        let with_labels: Uri = "http://127.0.0.1:9/v1/metrics?labels=temporal_task_queue"
            .parse()
            .unwrap();
        assert_eq!(
            with_query(&with_labels, &[("namespaces", "a b&c")]).to_string(),
            "http://127.0.0.1:9/v1/metrics?labels=temporal_task_queue&namespaces=a%20b%26c"
        );
        assert_eq!(with_query(&with_labels, &[]), with_labels);
    }
}
