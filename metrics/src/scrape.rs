//! One scrape of a metrics endpoint: a GET with the target's bearer token, bounded by a
//! timeout. A 429 says when to come back; `X-Completeness` other than `complete` is passed on
//! so the caller can warn.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode};

use crate::exposition::{ExpositionError, Format, parse};
use crate::http::{Endpoint, HttpClient, bearer, causes, retry_after};
use crate::relabel::ScrapedSample;

/// Bodies larger than this are refused: Temporal Cloud's limit of 30,000 samples is a few MiB.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A metrics endpoint.
#[derive(Clone)]
pub struct Scraper {
    client: HttpClient,
    endpoint: Endpoint,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper")
            .field("endpoint", &self.endpoint.shown)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What one scrape read.
#[derive(Debug)]
pub struct Scraped {
    /// Every sample of the body.
    pub samples: Vec<ScrapedSample>,
    /// Size of the body.
    pub bytes: usize,
    /// `X-Completeness` when the endpoint says the answer is not complete (`limited`, `unknown`).
    pub incomplete: Option<String>,
}

/// Why a scrape read nothing.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The URL is not an absolute http or https URL.
    #[error("scrape URL {url:?}: {reason}")]
    Url {
        /// As configured.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The bearer token cannot go in an HTTP header (its value is not shown).
    #[error("the scrape bearer token holds characters an HTTP header cannot carry")]
    Token,
    /// The system's CA certificates cannot be read.
    #[error("cannot load the system's CA certificates: {0}")]
    Roots(String),
    /// 429: the endpoint limits how often it may be scraped.
    #[error("{endpoint} is rate limiting scrapes (429){}", .retry_after.map(|after| format!("; retry after {after:?}")).unwrap_or_default())]
    RateLimited {
        /// The endpoint.
        endpoint: String,
        /// Its `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Any other answer than 200.
    #[error("{endpoint} answered {status}: {body}")]
    Status {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status.
        status: StatusCode,
        /// The start of its body.
        body: String,
    },
    /// No whole answer within the timeout.
    #[error("{endpoint} did not answer within {timeout:?}")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The limit.
        timeout: Duration,
    },
    /// Connecting or reading failed.
    #[error("{endpoint}: {reason}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        reason: String,
    },
    /// The body is not in the format its `Content-Type` names.
    #[error("{endpoint} served a malformed body: {source}")]
    Malformed {
        /// The endpoint.
        endpoint: String,
        /// Where and why.
        source: ExpositionError,
    },
}

impl Scraper {
    /// Scrapes `url` with `Authorization: Bearer <token>` when a token is given; a scrape takes
    /// at most `timeout`.
    pub fn new(
        url: &str,
        bearer_token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ScrapeError> {
        let endpoint = Endpoint::parse(url).map_err(|reason| ScrapeError::Url {
            url: url.to_owned(),
            reason,
        })?;
        let authorization = bearer_token
            .map(|token| bearer(token).ok_or(ScrapeError::Token))
            .transpose()?;
        Ok(Self {
            client: crate::http::client().map_err(|e| ScrapeError::Roots(e.to_string()))?,
            endpoint,
            authorization,
            timeout,
        })
    }

    /// Reads the endpoint once.
    pub async fn scrape(&self) -> Result<Scraped, ScrapeError> {
        let endpoint = || self.endpoint.shown.clone();
        tokio::time::timeout(self.timeout, self.read())
            .await
            .map_err(|_| ScrapeError::Timeout {
                endpoint: endpoint(),
                timeout: self.timeout,
            })?
    }

    async fn read(&self) -> Result<Scraped, ScrapeError> {
        let endpoint = || self.endpoint.shown.clone();
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(self.endpoint.uri.clone())
            .header(
                ACCEPT,
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .header(USER_AGENT, concat!("plinth/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::new()))
            .expect("a request from a parsed URL and constant headers");
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(AUTHORIZATION, authorization.clone());
        }
        let transport = |reason: String| ScrapeError::Transport {
            endpoint: endpoint(),
            reason,
        };
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| transport(causes(&e)))?;
        let (parts, body) = response.into_parts();
        if parts.status == StatusCode::TOO_MANY_REQUESTS {
            return Err(ScrapeError::RateLimited {
                endpoint: endpoint(),
                retry_after: retry_after(&parts.headers),
            });
        }
        let body = Limited::new(body, MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| transport(format!("reading the body: {e}")))?
            .to_bytes();
        if parts.status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            return Err(ScrapeError::Status {
                endpoint: endpoint(),
                status: parts.status,
                body: text.trim().chars().take(300).collect(),
            });
        }
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let malformed = |source| ScrapeError::Malformed {
            endpoint: endpoint(),
            source,
        };
        let text = std::str::from_utf8(&body).map_err(|e| {
            malformed(ExpositionError {
                line: 0,
                reason: format!("the body is not UTF-8: {e}"),
            })
        })?;
        let samples = parse(text, Format::of_content_type(content_type)).map_err(malformed)?;
        let incomplete = parts
            .headers
            .get("x-completeness")
            .and_then(|v| v.to_str().ok())
            .filter(|value| !value.eq_ignore_ascii_case("complete"))
            .map(str::to_owned);
        Ok(Scraped {
            samples,
            bytes: body.len(),
            incomplete,
        })
    }
}
