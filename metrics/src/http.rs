//! What scraping and remote write share: one HTTP client kind, endpoints shown without
//! credentials, and `Retry-After`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Uri;
use hyper::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// HTTP/1.1 over plain TCP or TLS (system roots).
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client for http and https URLs.
pub(crate) fn client() -> std::io::Result<HttpClient> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// A URL, and how messages show it: scheme, host, port and path only, so credentials in it
/// never reach a log.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub uri: Uri,
    pub shown: String,
}

impl Endpoint {
    /// An absolute http or https URL naming a host.
    pub fn parse(url: &str) -> Result<Endpoint, &'static str> {
        let uri: Uri = url.parse().map_err(|_| "not a URL")?;
        let (Some(scheme @ ("http" | "https")), Some(authority)) =
            (uri.scheme_str(), uri.authority())
        else {
            return Err("must start with http:// or https:// and name a host");
        };
        let port = authority
            .port_u16()
            .map(|port| format!(":{port}"))
            .unwrap_or_default();
        let shown = format!("{scheme}://{}{port}{}", authority.host(), uri.path());
        Ok(Endpoint { uri, shown })
    }
}

/// `Authorization: Bearer <token>`, marked sensitive; `None` when the token cannot be a header.
pub(crate) fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
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

/// An error and its causes, which say what actually failed (refused, reset, timed out).
pub(crate) fn causes(error: &dyn std::error::Error) -> String {
    std::iter::successors(Some(error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}
