//! One scrape of a metrics endpoint: a GET with the target's bearer token, bounded by a
//! timeout. A 429 says when to come back; `X-Completeness` other than `complete` is passed on
//! so the caller can warn.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, StatusCode};

use crate::exposition::{ExpositionError, Format, parse};
use crate::http::{Endpoint, EndpointError, retry_after};
use crate::relabel::ScrapedSample;

/// Bodies larger than this are refused: Temporal Cloud's limit of 30,000 samples is a few MiB.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// A metrics endpoint.
#[derive(Debug, Clone)]
pub struct Scraper {
    endpoint: Endpoint,
    timeout: Duration,
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
    /// 429: the endpoint limits how often it may be scraped.
    #[error("{endpoint} is rate limiting scrapes (429){}", .retry_after.map(|after| format!("; retry after {after:?}")).unwrap_or_default())]
    RateLimited {
        /// The endpoint.
        endpoint: String,
        /// Its `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Any other answer than 200.
    #[error("{answer}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The endpoint, the status and the start of the body.
        answer: String,
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
    #[error("{reason}")]
    Transport {
        /// The endpoint and what failed.
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
    ) -> Result<Self, EndpointError> {
        Ok(Self {
            endpoint: Endpoint::new(url, bearer_token)?,
            timeout,
        })
    }

    /// Reads the endpoint once, with `query` parameters added to the URL's (Temporal Cloud's
    /// `namespaces` filter).
    pub async fn scrape(&self, query: &[(&str, &str)]) -> Result<Scraped, ScrapeError> {
        tokio::time::timeout(self.timeout, self.read(query))
            .await
            .map_err(|_| ScrapeError::Timeout {
                endpoint: self.endpoint.shown.clone(),
                timeout: self.timeout,
            })?
    }

    async fn read(&self, query: &[(&str, &str)]) -> Result<Scraped, ScrapeError> {
        let endpoint = || self.endpoint.shown.clone();
        let accept = [(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )];
        let response = self
            .endpoint
            .send(Method::GET, query, &accept, Bytes::new())
            .await
            .map_err(|reason| ScrapeError::Transport { reason })?;
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
            .map_err(|e| ScrapeError::Transport {
                reason: format!("{}: reading the body: {e}", self.endpoint.shown),
            })?
            .to_bytes();
        if parts.status != StatusCode::OK {
            return Err(ScrapeError::Status {
                status: parts.status,
                answer: self.endpoint.answered(parts.status, &body),
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
