//! The proxy's Prometheus metrics.

use std::time::Duration;

use plinth_metrics::{Counter, DURATION_BUCKETS, Histogram, exposition};

/// Counters of what the proxy did.
#[derive(Debug)]
pub struct ProxyMetrics {
    requests: Counter,
    latency: Histogram,
    denials: Counter,
    payload_bytes: Counter,
    undecryptable: Counter,
    unknown_fields: Counter,
    unknown_anys: Counter,
    limited: Counter,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        let metrics = Self {
            requests: Counter::new(
                "plinth_proxy_requests_total",
                "Temporal RPCs through the proxy.",
                &["namespace", "class", "code"],
            ),
            latency: Histogram::new(
                "plinth_proxy_request_duration_seconds",
                "Time from request to answer, upstream included.",
                &["class"],
                DURATION_BUCKETS,
            ),
            denials: Counter::new(
                "plinth_proxy_denials_total",
                "Requests refused for missing access.",
                &["namespace", "access"],
            ),
            payload_bytes: Counter::new(
                "plinth_proxy_payload_bytes_total",
                "Payload bytes encrypted in requests and decrypted in responses.",
                &["direction"],
            ),
            undecryptable: Counter::new(
                "plinth_proxy_undecryptable_payloads_total",
                "Response payloads passed on still encrypted.",
                &[],
            ),
            unknown_fields: Counter::new(
                "plinth_proxy_unknown_fields_total",
                "Fields Plinth's protos lack, in messages that carry payloads, by message type: \
                 what they hold goes on unencrypted.",
                &["message"],
            ),
            limited: Counter::new(
                "plinth_proxy_limited_total",
                "Requests and connections refused at a limit, by limit: message_size, \
                 body_time, connection_bytes, total_bytes, streams (a connection reached its \
                 stream limit), handshakes, calls, calls_per_identity, long_polls, \
                 long_polls_per_identity.",
                &["limit"],
            ),
            unknown_anys: Counter::new(
                "plinth_proxy_unknown_any_total",
                "google.protobuf.Any values of types Plinth's protos lack: what they hold goes \
                 on unencrypted.",
                &[],
            ),
        };
        metrics.unknown_anys.add(&[], 0.0);
        for limit in LIMITS {
            metrics.limited.add(&[limit], 0.0);
        }
        for direction in ["encrypt", "decrypt"] {
            metrics.payload_bytes.add(&[direction], 0.0);
        }
        metrics
    }
}

impl ProxyMetrics {
    /// Counts one finished request.
    pub fn request(&self, namespace: &str, class: &'static str, code: tonic::Code, took: Duration) {
        self.requests.inc(&[namespace, class, code_name(code)]);
        self.latency.observe(&[class], took.as_secs_f64());
    }

    /// Counts one refused request.
    pub fn denial(&self, namespace: &str, missing: &'static str) {
        self.denials.inc(&[namespace, missing]);
    }

    /// Counts payload bytes sealed on the way in.
    pub fn encrypted(&self, bytes: u64) {
        self.payload_bytes.add(&["encrypt"], bytes as f64);
    }

    /// Counts payload bytes opened on the way out, and payloads that could not be.
    pub fn decrypted(&self, bytes: u64, undecryptable: u64) {
        self.payload_bytes.add(&["decrypt"], bytes as f64);
        if undecryptable > 0 {
            self.undecryptable.add(&[], undecryptable as f64);
        }
    }

    /// Counts one refusal at `limit`, one of [`LIMITS`].
    pub(crate) fn limited(&self, limit: &'static str) {
        self.limited.inc(&[limit]);
    }

    /// Counts what sealing or opening met that Plinth's protos do not describe.
    pub(crate) fn unknown(&self, transformed: &crate::payloads::Transformed) {
        for message in &transformed.unknown_fields {
            self.unknown_fields.inc(&[message]);
        }
        if transformed.unknown_anys > 0 {
            self.unknown_anys.add(&[], transformed.unknown_anys as f64);
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        exposition(&[
            &self.requests,
            &self.latency,
            &self.denials,
            &self.payload_bytes,
            &self.undecryptable,
            &self.unknown_fields,
            &self.unknown_anys,
            &self.limited,
        ])
    }
}

/// The limits the proxy counts refusals at.
pub(crate) const LIMITS: [&str; 10] = [
    "message_size",
    "body_time",
    "connection_bytes",
    "total_bytes",
    "streams",
    "handshakes",
    "calls",
    "calls_per_identity",
    "long_polls",
    "long_polls_per_identity",
];

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_by_namespace_class_and_code() {
        let metrics = ProxyMetrics::default();
        metrics.request("orders", "write", tonic::Code::Ok, Duration::from_millis(3));
        metrics.request(
            "orders",
            "write",
            tonic::Code::Ok,
            Duration::from_millis(300),
        );
        metrics.denial("orders", "write");
        metrics.encrypted(1024);
        let text = metrics.render();
        assert!(text.contains(
            "plinth_proxy_requests_total{namespace=\"orders\",class=\"write\",code=\"OK\"} 2"
        ));
        assert!(text.contains(
            "plinth_proxy_request_duration_seconds_bucket{class=\"write\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "plinth_proxy_request_duration_seconds_bucket{class=\"write\",le=\"0.5\"} 2"
        ));
        assert!(
            text.contains("plinth_proxy_denials_total{namespace=\"orders\",access=\"write\"} 1")
        );
        assert!(text.contains("plinth_proxy_payload_bytes_total{direction=\"encrypt\"} 1024"));
    }
}
