//! Metrics scraping end to end: a real `plinth worker` runs the `ScrapeMetrics` workflows
//! against the Temporal dev server's own `/metrics` (a target in its configuration) and a
//! Temporal Cloud-format OpenMetrics test double (a `MetricsTarget` resource applied with
//! `plinth apply`), and a real Prometheus receives the samples by remote write.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plinth_test_harness::cli::{namespace_yaml, ok, temporal, wait_for};
use plinth_test_harness::cli::{stderr, stdout};
use plinth_test_harness::{
    ADMIN, DevServer, PAYMENTS_MEMBER, PAYMENTS_TEAM, PlinthStack, Prometheus, StubAnswer,
    serve_http, unix_now,
};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");
const API_KEY: &str = "cloud-metrics-api-key-7f3a";
const INTERVAL_SECS: u64 = 2;
const RETRY_AFTER_SECS: u64 = 6;

/// What the double serves next.
const SERVE_METRICS: u8 = 0;
const SERVE_429: u8 = 1;
const SERVE_MALFORMED: u8 = 2;

/// When a request reached the Cloud test double, and the namespaces it asked for.
type CloudRequest = (Instant, Vec<String>);

/// A namespace of the Cloud account that Plinth does not manage.
const UNMANAGED_NAMESPACE: &str = "payroll";

/// Stands in for `https://metrics.temporal.io/v1/metrics`, which tests cannot reach: serves
/// OpenMetrics in Temporal Cloud's shape (gauges, per-minute samples two minutes old, the
/// namespace as `<name>.<account>`) for the namespaces the `namespaces` query parameters name
/// (all without one), requires the bearer API key, and on demand answers 429 with
/// `Retry-After` or a malformed body. Records when each request arrived and which namespaces
/// it asked for.
struct CloudMetricsTestDouble {
    url: String,
    mode: Arc<AtomicU8>,
    requests: Arc<Mutex<Vec<CloudRequest>>>,
    /// The sample timestamp served, Unix seconds.
    sample_time: u64,
}

impl CloudMetricsTestDouble {
    fn start(temporal_namespace: &str) -> CloudMetricsTestDouble {
        let sample_time = unix_now() as u64 / 60 * 60 - 120;
        let account = [
            temporal_namespace.to_owned(),
            UNMANAGED_NAMESPACE.to_owned(),
        ];
        let body_for = move |asked: &[String]| {
            let mut successes = String::new();
            let mut limits = String::new();
            for namespace in &account {
                if !asked.is_empty() && !asked.contains(namespace) {
                    continue;
                }
                let labels =
                    format!("temporal_account=\"acct1\",temporal_namespace=\"{namespace}.acct1\"");
                successes += &format!(
                    "temporal_cloud_v1_workflow_success_count{{{labels},region=\"aws-us-east-1\"}} 17 {sample_time}.000\n"
                );
                limits +=
                    &format!("temporal_cloud_v1_action_limit{{{labels}}} 500 {sample_time}.000\n");
            }
            format!(
                "# TYPE temporal_cloud_v1_workflow_success_count gauge\n\
                 # HELP temporal_cloud_v1_workflow_success_count Workflows completed in the minute.\n\
                 {successes}\
                 # TYPE temporal_cloud_v1_action_limit gauge\n\
                 {limits}\
                 # EOF\n"
            )
        };
        let mode = Arc::new(AtomicU8::new(SERVE_METRICS));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (serving_mode, log) = (mode.clone(), requests.clone());
        let address = serve_http(move |request| {
            let asked = request.query("namespaces");
            log.lock().unwrap().push((Instant::now(), asked.clone()));
            let openmetrics =
                |extra: &str| format!("application/openmetrics-text; version=1.0.0{extra}");
            let (status, headers, body) = match serving_mode.load(Ordering::SeqCst) {
                _ if !request.has_header("authorization", &format!("Bearer {API_KEY}")) => {
                    ("401 Unauthorized", vec![], "no API key".to_owned())
                }
                SERVE_429 => (
                    "429 Too Many Requests",
                    vec![("Retry-After", RETRY_AFTER_SECS.to_string())],
                    "rate limited".to_owned(),
                ),
                SERVE_MALFORMED => (
                    "200 OK",
                    vec![("Content-Type", openmetrics(""))],
                    "temporal_cloud_v1_workflow_success_count{temporal_namespace=\"x 1\n# EOF\n"
                        .to_owned(),
                ),
                _ => (
                    "200 OK",
                    vec![
                        ("Content-Type", openmetrics("; charset=utf-8")),
                        ("X-Completeness", "limited".to_owned()),
                    ],
                    body_for(&asked),
                ),
            };
            StubAnswer {
                status,
                headers,
                body,
            }
        });
        CloudMetricsTestDouble {
            url: format!("http://{address}/v1/metrics"),
            mode,
            requests,
            sample_time,
        }
    }

    fn serve(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<Instant> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| *at)
            .collect()
    }

    /// The `namespaces` each request asked for.
    fn filters(&self) -> Vec<Vec<String>> {
        let requests = self.requests.lock().unwrap();
        requests.iter().map(|(_, asked)| asked.clone()).collect()
    }

    /// Waits for `n` more requests than now and returns when the last one arrived.
    fn wait_for_requests(&self, n: usize) -> Instant {
        let before = self.requests().len();
        wait_for("scrapes of the cloud test double", || {
            self.requests().len() >= before + n
        });
        self.requests()[before + n - 1]
    }
}

/// The worker's own /metrics.
fn worker_metrics(stack: &PlinthStack) -> String {
    curl(
        &[],
        &format!("http://{}/metrics", stack.worker_metrics_address),
    )
}

/// GETs `url` with curl; `options` go before it.
fn curl(options: &[&str], url: &str) -> String {
    let out = ok(Command::new("curl")
        .arg("-sf")
        .args(options)
        .arg(url)
        .output()
        .unwrap());
    String::from_utf8(out.stdout).unwrap()
}

/// The series names a Prometheus exposition declares with `# TYPE`, histogram parts included.
fn declared_names(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .flat_map(|(name, kind)| match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .map(|part| format!("{name}{part}"))
                .to_vec(),
            _ => vec![name],
        })
        .collect()
}

/// `observability/metric-names.txt`: names documented but not observable in a test run.
fn documented_names() -> Vec<String> {
    std::fs::read_to_string(observability().join("metric-names.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn observability() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("observability")
}

/// Every PromQL expression of the dashboards and the alert rules, with its file.
fn observability_queries() -> Vec<(String, String)> {
    fn exprs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                        _ => exprs(value, out),
                    }
                }
            }
            serde_json::Value::Array(values) => values.iter().for_each(|v| exprs(v, out)),
            _ => {}
        }
    }
    let mut queries = Vec::new();
    for file in [
        "dashboards/namespaces.json",
        "dashboards/platform.json",
        "alerts.yml",
    ] {
        let text = std::fs::read_to_string(observability().join(file)).unwrap();
        let document: serde_json::Value = if file.ends_with(".json") {
            serde_json::from_str(&text).unwrap()
        } else {
            serde_yaml::from_str(&text).unwrap()
        };
        let mut found = Vec::new();
        exprs(&document, &mut found);
        assert!(!found.is_empty(), "{file} has no queries");
        queries.extend(found.into_iter().map(|expr| (file.to_owned(), expr)));
    }
    queries
}

/// The metric names of selectors in `expr`: by the files' convention, each is written with
/// braces (`name{...}`).
fn metric_names(expr: &str) -> Vec<String> {
    let names: Vec<String> = expr
        .match_indices('{')
        .filter_map(|(at, _)| {
            let before = &expr[..at];
            let start = before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(0, |i| i + 1);
            let name = &before[start..];
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect();
    assert!(!names.is_empty(), "no metric selector in {expr}");
    names
}

#[test]
fn the_scrape_workflows_send_dev_server_and_cloud_metrics_to_prometheus_and_survive_faults() {
    let server = DevServer::shared();
    let prometheus = Prometheus::start().unwrap();
    let temporal_namespace = format!("ledger-{}", std::process::id());
    let cloud = CloudMetricsTestDouble::start(&temporal_namespace);
    let home = tempfile::tempdir().unwrap();
    let key_file = home.path().join("cloud-api-key");
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    let metrics = format!(
        "[metrics]\ninterval = \"{INTERVAL_SECS}s\"\nscrape_timeout = \"5s\"\n\
         remote_write_url = \"{}\"\n\n\
         [[metrics.targets]]\nname = \"dev\"\nurl = \"{}\"\n\n\
         [[metrics.drop]]\nmetric = \"temporal_cloud_v1_action_limit\"\n",
        prometheus.remote_write_url(),
        server.metrics_url(),
    );
    let mut stack =
        PlinthStack::start_configured(server, PLINTH.as_ref(), "10m", "5m", "", &metrics)
            .expect("start the stack");
    let yaml = namespace_yaml("ledger", &temporal_namespace, PAYMENTS_TEAM, 3, "");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));

    // The Cloud endpoint is a MetricsTarget resource. It names the worker's key file, so only
    // platform admins may apply it; a bad field is named; neither changes anything.
    let target_yaml = |interval: u64, token_file: &str| {
        format!(
            "apiVersion: temporal.plinth.dev/v1beta1\nkind: MetricsTarget\n\
             metadata:\n  name: cloud\nspec:\n  url: {}\n  temporalCloud: true\n\
             \x20 tokenFile: {token_file}\n  intervalSeconds: {interval}\n",
            cloud.url
        )
    };
    let key_path = key_file.to_str().unwrap();
    let denied = stack.apply_as(PAYMENTS_MEMBER, &target_yaml(INTERVAL_SECS, key_path), &[]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("may not apply metrics target \"cloud\""),
        "{}",
        stderr(&denied)
    );
    let invalid = stack.apply_as(ADMIN, &target_yaml(INTERVAL_SECS, "cloud-api-key"), &[]);
    assert!(
        stderr(&invalid).contains("spec.tokenFile: must be an absolute path"),
        "{}",
        stderr(&invalid)
    );
    let none = ok(stack.plinth_as(ADMIN, &["get", "metricstargets", "-o", "json"]));
    assert_eq!(stdout(&none).trim(), "[]");
    let created = ok(stack.apply_as(ADMIN, &target_yaml(INTERVAL_SECS, key_path), &[]));
    assert_eq!(stdout(&created).trim(), "metricstarget/cloud created");
    let again = ok(stack.apply_as(ADMIN, &target_yaml(INTERVAL_SECS, key_path), &[]));
    assert_eq!(stdout(&again).trim(), "metricstarget/cloud unchanged");
    // Configured targets and resources share names: the configured one keeps its own.
    let taken = stack.apply_as(
        ADMIN,
        &target_yaml(INTERVAL_SECS, key_path).replace("name: cloud", "name: dev"),
        &[],
    );
    assert!(
        stderr(&taken).contains("\"dev\" is declared in the worker's configuration"),
        "{}",
        stderr(&taken)
    );
    // Traffic in the namespace, so the dev server reports series naming it.
    ok(temporal(
        &[
            "workflow",
            "start",
            "--namespace",
            &temporal_namespace,
            "--type",
            "Ledger",
            "--task-queue",
            "ledger",
            "--workflow-id",
            "ledger-1",
        ],
        &server.address(),
    ));

    // 1. The dev server's metrics reach Prometheus, labelled with the Plinth namespace.
    let query = r#"service_requests{plinth_target="dev",plinth_namespace="ledger",operation="StartWorkflowExecution"}"#;
    wait_for("dev server metrics in Prometheus", || {
        !prometheus.query(query).unwrap().is_empty()
    });
    let series = prometheus.query(query).unwrap();
    assert_eq!(
        series[0]["metric"]["plinth_owner"], PAYMENTS_TEAM,
        "{series:?}"
    );
    // The server's reporter shows `ledger-<pid>` as `ledger_<pid>`.
    assert_eq!(
        series[0]["metric"]["namespace"],
        temporal_namespace.replace('-', "_").as_str()
    );

    // 2. Cloud-format samples keep their timestamps, two minutes old; drop rules apply.
    let cloud_query = r#"temporal_cloud_v1_workflow_success_count{plinth_target="cloud",plinth_namespace="ledger"}[10m]"#;
    wait_for("cloud metrics in Prometheus", || {
        !prometheus.query(cloud_query).unwrap().is_empty()
    });
    let stored = prometheus.query(cloud_query).unwrap();
    assert_eq!(
        stored[0]["metric"]["plinth_owner"], PAYMENTS_TEAM,
        "{stored:?}"
    );
    assert_eq!(
        stored[0]["values"][0][0].as_f64().unwrap(),
        cloud.sample_time as f64
    );
    assert_eq!(stored[0]["values"][0][1], "17");
    let dropped = prometheus
        .query("temporal_cloud_v1_action_limit[10m]")
        .unwrap();
    assert!(dropped.is_empty(), "a drop rule matched it: {dropped:?}");
    // Each scrape asked Temporal Cloud for the Ready namespace Plinth manages, and only that.
    let filters = cloud.filters();
    assert!(
        filters
            .iter()
            .all(|asked| *asked == [temporal_namespace.clone()]),
        "{filters:?}"
    );
    let unmanaged = prometheus
        .query(&format!(
            "{{temporal_namespace=\"{UNMANAGED_NAMESPACE}.acct1\"}}[10m]"
        ))
        .unwrap();
    assert!(unmanaged.is_empty(), "{unmanaged:?}");
    let listed = stdout(&ok(stack.plinth_as(ADMIN, &["get", "metricstargets"])));
    assert!(
        listed.lines().any(|line| line.starts_with("cloud ")
            && line.contains(&cloud.url)
            && line.contains("Scraping")),
        "{listed}"
    );
    // The same samples, re-exported for a Prometheus that scrapes instead of receiving.
    let export = format!("http://{}/export", stack.worker_metrics_address);
    let openmetrics = curl(&["-H", "Accept: application/openmetrics-text"], &export);
    assert!(openmetrics.ends_with("# EOF\n"));
    assert!(
        openmetrics.lines().any(|line| line
            .starts_with("temporal_cloud_v1_workflow_success_count{")
            && line.contains("plinth_namespace=\"ledger\"")
            && line.ends_with(&format!(" 17 {}.000", cloud.sample_time))),
        "{openmetrics}"
    );
    let scraper = Prometheus::start_scraping(&export).unwrap();
    let exported_query =
        r#"temporal_cloud_v1_workflow_success_count{job="export",plinth_namespace="ledger"}[10m]"#;
    wait_for("the export scraped by Prometheus", || {
        !scraper.query(exported_query).unwrap().is_empty()
    });
    let scraped = scraper.query(exported_query).unwrap();
    assert_eq!(
        scraped[0]["values"][0][0].as_f64().unwrap(),
        cloud.sample_time as f64
    );
    assert_eq!(scraped[0]["metric"]["plinth_target"], "cloud");
    drop(scraper);

    wait_for("the incomplete answer reported", || {
        stack.log("worker").contains("completeness=limited")
    });
    assert!(
        !stack.log("worker").contains(API_KEY),
        "the API key is never logged"
    );

    // A 429 puts the next scrape off by its Retry-After.
    cloud.serve(SERVE_429);
    let limited = cloud.wait_for_requests(1);
    cloud.serve(SERVE_METRICS);
    let next = cloud.wait_for_requests(1);
    assert!(
        next - limited >= Duration::from_secs(RETRY_AFTER_SECS) - Duration::from_millis(500),
        "next scrape {:?} after the 429",
        next - limited
    );

    // A malformed body is reported and scraping goes on.
    cloud.serve(SERVE_MALFORMED);
    cloud.wait_for_requests(1);
    cloud.serve(SERVE_METRICS);
    wait_for("the malformed body reported", || {
        stack
            .log("worker")
            .contains("served a malformed body: line 1")
    });
    cloud.wait_for_requests(2);

    // The worker's own metrics count what happened.
    let own = worker_metrics(&stack);
    for (series, at_least) in [
        (
            "plinth_scrapes_total{target=\"cloud\",outcome=\"rate_limited\"}",
            1.0,
        ),
        (
            "plinth_scrapes_total{target=\"cloud\",outcome=\"failed\"}",
            1.0,
        ),
        ("plinth_scrapes_total{target=\"dev\",outcome=\"ok\"}", 1.0),
        (
            "plinth_scrape_samples_total{target=\"cloud\",fate=\"filtered\"}",
            1.0,
        ),
        (
            "plinth_scrape_samples_total{target=\"dev\",fate=\"sent\"}",
            100.0,
        ),
        ("plinth_reconciles_total{outcome=\"ok\"}", 1.0),
        ("plinth_access_runs_total{outcome=\"ok\"}", 1.0),
    ] {
        let value = own
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok());
        assert!(
            value.is_some_and(|v| v >= at_least),
            "{series} is {value:?}, expected at least {at_least}:\n{own}"
        );
    }
    assert!(own.contains("plinth_scrape_last_success_timestamp_seconds{target=\"dev\"}"));

    // 4. Every metric the dashboards and alert rules name is one that is exported.
    let mut exported: BTreeSet<String> = prometheus
        .query(r#"group by (__name__) ({plinth_target="dev"})"#)
        .unwrap()
        .iter()
        .filter_map(|series| Some(series["metric"]["__name__"].as_str()?.to_owned()))
        .collect();
    let proxy = curl(
        &[],
        &format!("http://{}/metrics", stack.proxy_metrics_address),
    );
    stack.start_codec().unwrap();
    let codec_port = stack.codec_address.rsplit(':').next().unwrap();
    let ca = stack.home().join("pki/ca.pem");
    let codec = curl(
        &[
            "--cacert",
            ca.to_str().unwrap(),
            "--resolve",
            &format!("localhost:{codec_port}:127.0.0.1"),
        ],
        &format!("https://localhost:{codec_port}/metrics"),
    );
    for exposition in [own.as_str(), proxy.as_str(), codec.as_str()] {
        exported.extend(declared_names(exposition));
    }
    exported.extend(documented_names());
    for (file, expr) in observability_queries() {
        for name in metric_names(&expr) {
            assert!(
                exported.contains(&name),
                "{file} queries {name}, which nothing exports: {expr}"
            );
        }
    }

    // 3. The worker dies mid-run; after it is back, scraping resumes at once.
    stack.kill_worker();
    let killed = Instant::now();
    let last_before = *cloud.requests().last().unwrap();
    // Longer than the workflow's heartbeat timeout, so the run is retried while it is down.
    std::thread::sleep(Duration::from_secs(12));
    // The restarted worker's configuration also names `cloud`: the resource keeps the name.
    let config = stack.home().join("plinth.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!(
        "\n[[metrics.targets]]\nname = \"cloud\"\nurl = \"{}\"\n",
        cloud.url
    );
    std::fs::write(&config, text).unwrap();
    stack.start_worker().unwrap();
    let back = Instant::now();
    let resumed = cloud.wait_for_requests(1);
    let downtime = back - killed;
    let gap = resumed - last_before;
    assert!(
        gap <= downtime + Duration::from_secs(INTERVAL_SECS) * 2 + Duration::from_secs(3),
        "scraping resumed {gap:?} after the last scrape; the worker was down {downtime:?}"
    );
    wait_for("dev server metrics after the restart", || {
        let now = unix_now();
        prometheus
            .query(&format!("timestamp({query})"))
            .unwrap()
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .is_some_and(|sampled| sampled > now - 5.0)
    });

    assert!(
        stack
            .log("worker")
            .contains("a MetricsTarget resource has this [[metrics.targets]] entry's name"),
        "the shadowed entry is reported"
    );

    // A changed spec takes effect: the run in progress stops and the next uses it.
    let changed = ok(stack.apply_as(ADMIN, &target_yaml(INTERVAL_SECS + 1, key_path), &[]));
    assert_eq!(stdout(&changed).trim(), "metricstarget/cloud configured");
    wait_for("generation 2 observed", || {
        let json = stdout(&ok(
            stack.plinth_as(ADMIN, &["get", "metricstarget", "cloud", "-o", "json"])
        ));
        let target: serde_json::Value = serde_json::from_str(&json).unwrap();
        target["metadata"]["generation"] == 2 && target["status"]["observedGeneration"] == 2
    });
    // The run that took over started with the resource already published (memo and kind), so
    // `get` and `list` never lose the target between runs.
    let shown = stdout(&ok(temporal(
        &[
            "workflow",
            "show",
            "--namespace",
            &stack.control_namespace,
            "--workflow-id",
            "metrics/cloud",
            "--output",
            "json",
        ],
        &server.address(),
    )));
    let history: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let started = &history["events"][0]["workflowExecutionStartedEventAttributes"];
    assert!(
        started["continuedExecutionRunId"].is_string(),
        "the latest run continued an earlier one: {started}"
    );
    assert!(
        started["memo"]["fields"]["resource"].is_object(),
        "{started}"
    );
    assert!(
        started["searchAttributes"]["indexedFields"]["PlinthKind"].is_object(),
        "{started}"
    );
    cloud.wait_for_requests(1);

    // Deleted, it stops being scraped.
    let refused = stack.plinth_as(PAYMENTS_MEMBER, &["delete", "metricstarget", "cloud"]);
    assert!(!refused.status.success());
    ok(stack.plinth_as(ADMIN, &["delete", "metricstarget", "cloud"]));
    wait_for("the target gone", || {
        let gone = stack.plinth_as(ADMIN, &["get", "metricstarget", "cloud"]);
        stderr(&gone).contains("metrics target \"cloud\" not found")
    });
    let after_delete = cloud.requests().len();
    std::thread::sleep(Duration::from_secs(INTERVAL_SECS * 3));
    assert_eq!(
        cloud.requests().len(),
        after_delete,
        "scraped after deletion"
    );
}

#[test]
fn the_alert_rules_pass_promtool_and_every_alert_fires_in_its_unit_test() {
    let promtool = |args: &[&str]| {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(observability())
            .output()
            .expect("run promtool (Debian package `prometheus`; scripts/test installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}: {text}");
        text
    };
    assert!(promtool(&["check", "rules", "alerts.yml"]).contains("SUCCESS: 11 rules found"));
    promtool(&["test", "rules", "alerts.test.yml"]);
    // Each alert has a case in which it fires.
    let rules: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(observability().join("alerts.yml")).unwrap())
            .unwrap();
    let tests = std::fs::read_to_string(observability().join("alerts.test.yml")).unwrap();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let alert = rule["alert"].as_str().unwrap();
            assert!(
                tests.contains(&format!(
                    "alertname: {alert}\n        exp_alerts:\n          - "
                )),
                "no test case fires {alert}"
            );
        }
    }
}
