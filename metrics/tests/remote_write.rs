//! Remote write into a real Prometheus (Debian's, with its remote-write receiver on).

use std::time::Duration;

use plinth_metrics::{Label, RemoteWrite, Sample, SendSettings, TimeSeries};
use plinth_test_support::{Prometheus, free_port, unix_now};

fn series(name: &str, labels: &[(&str, &str)], value: f64, timestamp: i64) -> TimeSeries {
    let mut labels: Vec<Label> = labels
        .iter()
        .map(|(name, value)| Label {
            name: (*name).into(),
            value: (*value).into(),
        })
        .chain([Label {
            name: "__name__".into(),
            value: name.into(),
        }])
        .collect();
    labels.sort();
    TimeSeries {
        labels,
        samples: vec![Sample { value, timestamp }],
    }
}

#[tokio::test]
async fn series_reach_prometheus_with_their_timestamps_in_batches_and_refusals_are_counted() {
    let prometheus = Prometheus::start().unwrap();
    let settings = SendSettings {
        max_samples_per_request: 2000,
        ..SendSettings::default()
    };
    let sink = RemoteWrite::new(&prometheus.remote_write_url(), None, settings).unwrap();

    // Two minutes late, as Temporal Cloud's per-minute aggregates are.
    let late = (unix_now() * 1000.0) as i64 - 120_000;
    let gauge = series(
        "temporal_cloud_v1_workflow_success_count",
        &[
            ("plinth_namespace", "orders"),
            ("temporal_namespace", "orders.acct"),
        ],
        42.5,
        late,
    );
    let many: Vec<TimeSeries> = (0..5000)
        .map(|i| series("plinth_test_many", &[("i", &i.to_string())], i as f64, late))
        .collect();
    let report = sink.send(&[vec![gauge], many].concat()).await;
    assert_eq!(report.samples_sent, 5001, "{report:?}");
    assert_eq!(report.samples_dropped, 0);
    assert_eq!(report.requests, 3, "5001 samples at 2000 a request");

    let stored = prometheus
        .query(r#"temporal_cloud_v1_workflow_success_count{plinth_namespace="orders"}[5m]"#)
        .unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let values = &stored[0]["values"];
    assert_eq!(values.as_array().unwrap().len(), 1, "{values}");
    assert_eq!(
        values[0][0].as_f64().unwrap(),
        late as f64 / 1000.0,
        "timestamp kept"
    );
    assert_eq!(values[0][1], "42.5");
    let count = prometheus.query("count(plinth_test_many)").unwrap();
    assert_eq!(count[0]["value"][1], "5000", "{count:?}");

    // Older than what Prometheus holds for the series: refused for good, not retried.
    let stale = series(
        "temporal_cloud_v1_workflow_success_count",
        &[
            ("plinth_namespace", "orders"),
            ("temporal_namespace", "orders.acct"),
        ],
        1.0,
        late - 60_000,
    );
    let report = sink.send(&[stale]).await;
    assert_eq!(
        (report.samples_sent, report.samples_dropped),
        (0, 1),
        "{report:?}"
    );
    assert_eq!(report.requests, 1, "a 4xx is final");
    let error = report.error.unwrap();
    assert!(
        error.contains("400") && error.contains("out of order"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_retried_then_counted_as_dropped() {
    let settings = SendSettings {
        attempts: 3,
        first_backoff: Duration::from_millis(10),
        ..SendSettings::default()
    };
    let url = format!("http://127.0.0.1:{}/api/v1/write", free_port());
    let sink = RemoteWrite::new(&url, Some("secret-token"), settings).unwrap();
    let report = sink
        .send(&[series(
            "plinth_test",
            &[],
            1.0,
            (unix_now() * 1000.0) as i64,
        )])
        .await;
    assert_eq!((report.samples_sent, report.samples_dropped), (0, 1));
    assert_eq!(report.requests, 3);
    let error = report.error.unwrap();
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert!(
        error.to_lowercase().contains("connection refused"),
        "{error}"
    );
    assert!(!error.contains("secret-token"), "{error}");
}
