//! The exposition parser against the reference implementation: a real Prometheus (Debian's)
//! scrapes the same bodies, and must store exactly the series, values and timestamps the
//! parser reads; a body Prometheus refuses, the parser refuses too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use plinth_metrics::exposition::{Format, parse};
use plinth_test_support::wait_for;
use plinth_test_support::{Prometheus, StubAnswer, serve_http, unix_now};

/// Serves whatever body it is given, in its format, to every GET.
struct BodyServer {
    url: String,
    served: Arc<Mutex<(Format, String)>>,
}

impl BodyServer {
    fn start() -> BodyServer {
        let served = Arc::new(Mutex::new((Format::Prometheus, String::new())));
        let serving = served.clone();
        let address = serve_http(move |_| {
            let (format, body) = serving.lock().unwrap().clone();
            StubAnswer {
                status: "200 OK",
                headers: vec![("Content-Type", format.content_type().to_owned())],
                body,
            }
        });
        BodyServer {
            url: format!("http://{address}/metrics"),
            served,
        }
    }

    fn serve(&self, format: Format, body: &str) {
        *self.served.lock().unwrap() = (format, body.to_owned());
    }
}

/// A series as both sides see it: name and labels, without the `job` and `instance` labels
/// Prometheus adds.
type SeriesKey = BTreeMap<String, String>;

fn value(text: &serde_json::Value) -> f64 {
    text.as_str().unwrap().parse().unwrap()
}

/// What Prometheus holds from the last scrape of the body: each series' value and the
/// timestamp it was stored at, seconds.
fn stored(prometheus: &Prometheus) -> BTreeMap<SeriesKey, (f64, f64)> {
    let recent = r#"{job="export",__name__!~"up|scrape_.*"}[3m]"#;
    prometheus
        .query(recent)
        .unwrap()
        .iter()
        .map(|series| {
            let mut labels: SeriesKey = serde_json::from_value(series["metric"].clone()).unwrap();
            labels.remove("job");
            labels.remove("instance");
            let last = series["values"].as_array().unwrap().last().unwrap();
            (labels, (value(&last[1]), last[0].as_f64().unwrap()))
        })
        .collect()
}

/// The latest value of the one series `selector` names.
fn latest(prometheus: &Prometheus, selector: &str) -> Option<f64> {
    let result = prometheus.query(selector).unwrap();
    result.first().map(|series| value(&series["value"][1]))
}

/// What the parser reads from `body`, keyed the same way; explicit timestamps in seconds.
fn parsed(body: &str, format: Format) -> BTreeMap<SeriesKey, (f64, Option<f64>)> {
    parse(body, format)
        .unwrap()
        .into_iter()
        .map(|sample| {
            let mut key: SeriesKey = sample.labels.into_iter().collect();
            key.insert("__name__".into(), sample.name);
            (
                key,
                (sample.value, sample.timestamp.map(|ms| ms as f64 / 1000.0)),
            )
        })
        .collect()
}

fn same_value(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Serves `body` until Prometheus has scraped it whole, then checks the parser reads the
/// same series, values and timestamps.
fn agree(server: &BodyServer, prometheus: &Prometheus, format: Format, body: &str) {
    let ours = parsed(body, format);
    server.serve(format, body);
    let started = unix_now();
    wait_for("Prometheus to scrape the body", || {
        let scraped = latest(prometheus, r#"scrape_samples_scraped{job="export"}"#);
        let fresh = stored(prometheus)
            .values()
            .filter(|(_, at)| *at >= started - 120.0)
            .count();
        if latest(prometheus, r#"up{job="export"}"#) == Some(0.0) {
            panic!("Prometheus refused the body:\n{}", prometheus.log());
        }
        scraped == Some(ours.len() as f64) && fresh >= ours.len()
    });
    let theirs = stored(prometheus);
    for (series, (value, timestamp)) in &ours {
        let Some((stored_value, stored_at)) = theirs.get(series) else {
            panic!("Prometheus has no {series:?}; it has {:?}", theirs.keys());
        };
        assert!(
            same_value(*value, *stored_value),
            "{series:?}: parsed {value}, stored {stored_value}"
        );
        if let Some(timestamp) = timestamp {
            assert!(
                (timestamp - stored_at).abs() < 0.001,
                "{series:?}: parsed at {timestamp}, stored at {stored_at}"
            );
        }
    }
}

/// Serves `body`, waits until Prometheus reports the scrape failed, and checks the parser
/// refuses it too; then serves `healthy` until a scrape succeeds again.
fn both_refuse(
    server: &BodyServer,
    prometheus: &Prometheus,
    format: Format,
    body: &str,
    healthy: &str,
) {
    let up = || latest(prometheus, r#"up{job="export"}"#);
    server.serve(format, body);
    wait_for(&format!("Prometheus to refuse {body:?}"), || {
        up() == Some(0.0)
    });
    assert!(
        parse(body, format).is_err(),
        "Prometheus refuses {body:?}; the parser read it"
    );
    server.serve(format, healthy);
    wait_for("a good scrape again", || up() == Some(1.0));
}

#[test]
fn the_parser_reads_what_prometheus_stores_and_refuses_what_it_refuses() {
    let server = BodyServer::start();
    let prometheus = Prometheus::start_scraping(&server.url).unwrap();
    let now = unix_now() as i64;
    let (ms, seconds) = ((now - 60) * 1000 + 123, now - 60);
    let text = format!(
        "# HELP http_requests_total The total number of HTTP requests.\n\
         # TYPE http_requests_total counter\n\
         http_requests_total{{method=\"post\",code=\"200\"}} 1027 {ms}\n\
         http_requests_total{{method=\"post\",code=\"400\"}}    3 {ms}\n\
         msdos_file_access_time_seconds{{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"}} 1.458255915e9\n\
         metric_without_timestamp_and_labels 12.47\n\
         something_weird{{problem=\"division by zero\"}} +Inf {ms}\n\
         odd_label_values{{a=\"x,y=z\",b=\"}}{{\",c=\" spaced \"}} -Inf\n\
         not_a_number NaN\n\
         trailing_comma{{a=\"1\",}} 2\n\
         empty_braces{{}} 5\n\
         spaced_labels{{ a = \"1\" , b=\"2\" }} 6\n\
         no_comma{{a=\"1\" b=\"2\"}} 7\n\
         empty_value{{a=\"\",b=\"x\"}} 8\n\
         \n\
         # TYPE http_request_duration_seconds histogram\n\
         http_request_duration_seconds_bucket{{le=\"0.05\"}} 24054\n\
         http_request_duration_seconds_bucket{{le=\"+Inf\"}} 144320\n\
         http_request_duration_seconds_sum 53423\n\
         http_request_duration_seconds_count 144320\n\
         # TYPE rpc_duration_seconds summary\n\
         rpc_duration_seconds{{quantile=\"0.99\"}} 76656\n\
         rpc_duration_seconds_sum 1.7560473e+07\n\
         rpc_duration_seconds_count 2693\n\
         exponent_value -3.5E-2\n"
    );
    agree(&server, &prometheus, Format::Prometheus, &text);

    let openmetrics = format!(
        "# TYPE temporal_cloud_v1_workflow_success_count gauge\n\
         # HELP temporal_cloud_v1_workflow_success_count Workflows completed per second.\n\
         temporal_cloud_v1_workflow_success_count{{temporal_namespace=\"orders.acct1\",region=\"aws-us-east-1\"}} 0.25 {seconds}.250\n\
         temporal_cloud_v1_action_limit{{temporal_namespace=\"orders.acct1\"}} 500 {seconds}\n\
         # TYPE requests counter\n\
         requests_total{{path=\"/a\"}} 17 {seconds}.5 # {{trace_id=\"4bf92f3577b34da6\"}} 1.0 {seconds}.1\n\
         # TYPE latency_seconds histogram\n\
         latency_seconds_bucket{{le=\"0.1\"}} 8 # {{trace_id=\"a1\"}} 0.05\n\
         latency_seconds_bucket{{le=\"+Inf\"}} 9\n\
         latency_seconds_count 9\n\
         latency_seconds_sum 1.5\n\
         # EOF\n"
    );
    agree(&server, &prometheus, Format::OpenMetrics, &openmetrics);

    for broken in [
        "m{a=\"b} 1\n",
        "m one\n",
        "m{a=b} 1\n",
        "{a=\"b\"} 1\n",
        "m 1 2 3\n",
        "m\n",
        "m{a=\"1\",a=\"2\"} 1\n",
        "m{a=\"1\"} 1 soon\n",
    ] {
        both_refuse(&server, &prometheus, Format::Prometheus, broken, &text);
    }
    for broken in ["# TYPE m gauge\nm 1\n", "# TYPE m gauge\nm 1\n# EOF\nm 2\n"] {
        both_refuse(
            &server,
            &prometheus,
            Format::OpenMetrics,
            broken,
            &openmetrics,
        );
    }
}
