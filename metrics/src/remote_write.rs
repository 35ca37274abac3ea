//! Prometheus remote write 1.0: batches of series as snappy-compressed protobuf
//! `prometheus.WriteRequest`s, POSTed with retries. Server errors, 429 and transport failures
//! are retried with backoff; other refusals are final. Nothing is queued beyond the batch in
//! flight, so memory stays bounded however long the database is away; samples not accepted when
//! the attempts run out are reported as dropped, never silently lost.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{Method, StatusCode};

use crate::http::{Endpoint, EndpointError, retry_after};

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    /// Label name; `__name__` holds the metric name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.TimeSeries`: labels sorted by name, samples by time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// The series' identity.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Its samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.WriteRequest`, the body of one remote-write request before compression.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series sent.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// How series are sent.
#[derive(Debug, Clone)]
pub struct SendSettings {
    /// Samples per request, at most (a series with more goes alone).
    pub max_samples_per_request: usize,
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled after each.
    pub first_backoff: Duration,
    /// Longest wait between attempts. A `Retry-After` longer than this gives the batch up.
    pub max_backoff: Duration,
    /// How long one attempt may take.
    pub request_timeout: Duration,
}

impl Default for SendSettings {
    fn default() -> Self {
        Self {
            max_samples_per_request: 2000,
            attempts: 5,
            first_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What one [`RemoteWrite::send`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Samples the database accepted.
    pub samples_sent: u64,
    /// Samples given up on: refused, or not accepted within the attempts.
    pub samples_dropped: u64,
    /// HTTP requests made, retries included.
    pub requests: u32,
    /// Why the last batch given up on was, if any was.
    pub error: Option<String>,
}

/// A Prometheus remote-write endpoint.
#[derive(Debug, Clone)]
pub struct RemoteWrite {
    endpoint: Endpoint,
    settings: SendSettings,
}

/// Why one attempt failed.
enum Attempt {
    /// Worth retrying, not before `after` when the server says so.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Retrying would fail the same way.
    Final(String),
}

impl RemoteWrite {
    /// A sink POSTing to `url`, with `Authorization: Bearer <token>` when a token is given.
    pub fn new(
        url: &str,
        bearer_token: Option<&str>,
        settings: SendSettings,
    ) -> Result<Self, EndpointError> {
        Ok(Self {
            endpoint: Endpoint::new(url, bearer_token)?,
            settings,
        })
    }

    /// Sends `series` in batches; each batch is retried on its own, so one refused batch does
    /// not cost the others.
    pub async fn send(&self, series: &[TimeSeries]) -> SendReport {
        let mut report = SendReport::default();
        for batch in batches(series, self.settings.max_samples_per_request) {
            let samples: u64 = batch.iter().map(|s| s.samples.len() as u64).sum();
            let (requests, outcome) = self.post(Bytes::from(encode(batch))).await;
            report.requests += requests;
            match outcome {
                Ok(()) => report.samples_sent += samples,
                Err(reason) => {
                    tracing::error!(endpoint = %self.endpoint.shown, samples, %reason, "remote write gave a batch up");
                    report.samples_dropped += samples;
                    report.error = Some(reason);
                }
            }
        }
        report
    }

    /// POSTs one body until it is accepted, refused for good, or the attempts run out; returns
    /// the requests made.
    async fn post(&self, body: Bytes) -> (u32, Result<(), String>) {
        let settings = &self.settings;
        let mut backoff = settings.first_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome =
                tokio::time::timeout(settings.request_timeout, self.attempt(body.clone()))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Attempt::Retry {
                            reason: format!("no answer within {:?}", settings.request_timeout),
                            after: None,
                        })
                    });
            let (reason, after) = match outcome {
                Ok(()) => return (attempt, Ok(())),
                Err(Attempt::Final(reason)) => return (attempt, Err(reason)),
                Err(Attempt::Retry { reason, after }) => (reason, after),
            };
            if attempt >= settings.attempts {
                return (
                    attempt,
                    Err(format!("{reason} (gave up after {attempt} attempts)")),
                );
            }
            let wait = match after {
                Some(after) if after > settings.max_backoff => {
                    return (
                        attempt,
                        Err(format!(
                            "{reason}; asked to retry after {after:?}, longer than the {:?} this \
                             sink waits",
                            settings.max_backoff
                        )),
                    );
                }
                Some(after) => after.max(backoff),
                None => backoff,
            };
            tracing::warn!(endpoint = %self.endpoint.shown, attempt, %reason, ?wait, "remote write will retry");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(settings.max_backoff);
        }
    }

    async fn attempt(&self, body: Bytes) -> Result<(), Attempt> {
        let headers = [
            ("content-encoding", "snappy"),
            ("content-type", "application/x-protobuf"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ];
        let response = self
            .endpoint
            .send(Method::POST, &[], &headers, body)
            .await
            .map_err(|reason| Attempt::Retry {
                reason,
                after: None,
            })?;
        let status = response.status();
        let after = retry_after(response.headers());
        let answer = response
            .into_body()
            .collect()
            .await
            .map(|body| body.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        let reason = self.endpoint.answered(status, &answer);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(Attempt::Retry { reason, after })
        } else {
            Err(Attempt::Final(reason))
        }
    }
}

/// Consecutive runs of `series` holding at most `max_samples` samples (a larger series alone).
fn batches(series: &[TimeSeries], max_samples: usize) -> impl Iterator<Item = &[TimeSeries]> {
    let mut rest = series;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut samples = 0;
        let end = rest
            .iter()
            .position(|series| {
                samples += series.samples.len();
                samples > max_samples
            })
            .unwrap_or(rest.len())
            .max(1);
        let (batch, after) = rest.split_at(end);
        rest = after;
        Some(batch)
    })
}

/// A `WriteRequest` of `batch`, snappy-compressed (the block format, as remote write wants).
fn encode(batch: &[TimeSeries]) -> Vec<u8> {
    let mut message = Vec::new();
    for series in batch {
        prost::encoding::message::encode(1, series, &mut message);
    }
    snap::raw::Encoder::new()
        .compress_vec(&message)
        .expect("batches are far below snappy's 4 GiB limit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn series(name: &str, samples: usize) -> TimeSeries {
        TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: name.into(),
            }],
            samples: (0..samples)
                .map(|i| Sample {
                    value: i as f64,
                    timestamp: 1_700_000_000_000 + i as i64,
                })
                .collect(),
        }
    }

    #[test]
    fn a_batch_decodes_as_the_write_request_it_stands_for() {
        let batch = vec![series("a", 2), series("b", 1)];
        let compressed = encode(&batch);
        let message = snap::raw::Decoder::new()
            .decompress_vec(&compressed)
            .unwrap();
        let decoded = WriteRequest::decode(message.as_slice()).unwrap();
        assert_eq!(decoded.timeseries, batch);
    }

    #[test]
    fn batches_hold_at_most_the_sample_limit_and_lose_nothing() {
        let all: Vec<_> = [3, 1, 5, 2, 2].iter().map(|&n| series("x", n)).collect();
        let sizes: Vec<Vec<usize>> = batches(&all, 4)
            .map(|batch| batch.iter().map(|s| s.samples.len()).collect())
            .collect();
        assert_eq!(sizes, vec![vec![3, 1], vec![5], vec![2, 2]]);
        assert_eq!(batches(&[], 4).count(), 0);
    }

    #[test]
    fn only_http_urls_are_accepted_and_tokens_stay_out_of_debug_output() {
        let error =
            RemoteWrite::new("ftp://tsdb/api/v1/write", None, SendSettings::default()).unwrap_err();
        assert!(error.to_string().contains("http:// or https://"), "{error}");
        let sink = RemoteWrite::new(
            "https://user:pw@tsdb.example.com:9090/api/v1/write?x=1",
            Some("s3cr3t"),
            SendSettings::default(),
        )
        .unwrap();
        let shown = format!("{sink:?}");
        assert!(
            shown.contains("https://tsdb.example.com:9090/api/v1/write"),
            "{shown}"
        );
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("pw"),
            "{shown}"
        );
    }
}
