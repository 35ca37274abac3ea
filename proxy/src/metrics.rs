//! The proxy's Prometheus metrics, rendered in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 90.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyMetrics {
    /// (namespace, class, gRPC code) to count.
    requests: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
    /// Class to latency.
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// (namespace, missing access) to count.
    denials: Mutex<BTreeMap<(String, &'static str), u64>>,
    encrypted_bytes: AtomicU64,
    decrypted_bytes: AtomicU64,
    undecryptable: AtomicU64,
}

impl ProxyMetrics {
    /// Counts one finished request.
    pub fn request(&self, namespace: &str, class: &'static str, code: tonic::Code, took: Duration) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((namespace.to_owned(), class, code_name(code)))
            .or_default() += 1;
        let seconds = took.as_secs_f64();
        let mut latency = self.latency.lock().expect("metrics lock");
        let histogram = latency.entry(class).or_default();
        for (count, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// Counts one refused request.
    pub fn denial(&self, namespace: &str, missing: &'static str) {
        *self
            .denials
            .lock()
            .expect("metrics lock")
            .entry((namespace.to_owned(), missing))
            .or_default() += 1;
    }

    /// Counts payload bytes sealed on the way in.
    pub fn encrypted(&self, bytes: u64) {
        self.encrypted_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts payload bytes opened on the way out, and payloads that could not be.
    pub fn decrypted(&self, bytes: u64, undecryptable: u64) {
        self.decrypted_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.undecryptable
            .fetch_add(undecryptable, Ordering::Relaxed);
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP plinth_proxy_requests_total Temporal RPCs through the proxy.\n\
             # TYPE plinth_proxy_requests_total counter\n",
        );
        for ((namespace, class, code), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "plinth_proxy_requests_total{{namespace=\"{}\",class=\"{class}\",code=\"{code}\"}} {n}",
                escape(namespace)
            );
        }
        out.push_str(
            "# HELP plinth_proxy_request_duration_seconds Time from request to answer, upstream included.\n\
             # TYPE plinth_proxy_request_duration_seconds histogram\n",
        );
        for (class, histogram) in self.latency.lock().expect("metrics lock").iter() {
            for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
                let _ = writeln!(
                    out,
                    "plinth_proxy_request_duration_seconds_bucket{{class=\"{class}\",le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "plinth_proxy_request_duration_seconds_bucket{{class=\"{class}\",le=\"+Inf\"}} {}\n\
                 plinth_proxy_request_duration_seconds_sum{{class=\"{class}\"}} {}\n\
                 plinth_proxy_request_duration_seconds_count{{class=\"{class}\"}} {}",
                histogram.count, histogram.sum, histogram.count
            );
        }
        out.push_str(
            "# HELP plinth_proxy_denials_total Requests refused for missing access.\n\
             # TYPE plinth_proxy_denials_total counter\n",
        );
        for ((namespace, missing), n) in self.denials.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "plinth_proxy_denials_total{{namespace=\"{}\",access=\"{missing}\"}} {n}",
                escape(namespace)
            );
        }
        let _ = write!(
            out,
            "# HELP plinth_proxy_payload_bytes_total Payload bytes encrypted in requests and decrypted in responses.\n\
             # TYPE plinth_proxy_payload_bytes_total counter\n\
             plinth_proxy_payload_bytes_total{{direction=\"encrypt\"}} {}\n\
             plinth_proxy_payload_bytes_total{{direction=\"decrypt\"}} {}\n\
             # HELP plinth_proxy_undecryptable_payloads_total Response payloads passed on still encrypted.\n\
             # TYPE plinth_proxy_undecryptable_payloads_total counter\n\
             plinth_proxy_undecryptable_payloads_total {}\n",
            self.encrypted_bytes.load(Ordering::Relaxed),
            self.decrypted_bytes.load(Ordering::Relaxed),
            self.undecryptable.load(Ordering::Relaxed),
        );
        out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

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
