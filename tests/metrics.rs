//! Metrics scraping end to end: a real `plinth worker` runs the `ScrapeMetrics` workflows
//! against the Temporal dev server's own `/metrics` (a target in its configuration) and a
//! Temporal Cloud-format OpenMetrics test double (a `MetricsTarget` resource applied with
//! `plinth apply`), and a real Prometheus receives the samples by remote write. Most tests
//! share one stack; those that kill its worker, or need one without resources, start their own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

/// The dev server's count of `StartWorkflowExecution` calls in `ledger`, as target `dev` sent it.
const LEDGER_STARTS: &str = r#"service_requests{plinth_target="dev",plinth_namespace="ledger",operation="StartWorkflowExecution"}"#;

/// What the `cloud` target stored for `ledger`.
const CLOUD_SUCCESSES: &str = r#"temporal_cloud_v1_workflow_success_count{plinth_target="cloud",plinth_namespace="ledger"}[10m]"#;

/// A stack whose worker scrapes the dev server as the configured target `dev`, drops Cloud's
/// action limit, and sends the samples to `prometheus` when there is one.
fn start_stack(prometheus: Option<&Prometheus>) -> anyhow::Result<PlinthStack> {
    let server = DevServer::shared();
    let remote_write = prometheus.map_or_else(String::new, |prometheus| {
        format!("remote_write_url = \"{}\"\n", prometheus.remote_write_url())
    });
    let metrics = format!(
        "[metrics]\ninterval = \"{INTERVAL_SECS}s\"\nscrape_timeout = \"5s\"\n{remote_write}\n\
         [[metrics.targets]]\nname = \"dev\"\nurl = \"{}\"\n\n\
         [[metrics.drop]]\nmetric = \"temporal_cloud_v1_action_limit\"\n",
        server.metrics_url(),
    );
    PlinthStack::start_configured(server, PLINTH.as_ref(), "10m", "5m", "", &metrics)
}

/// Makes `stack` manage `ledger` as `temporal_namespace`, and starts a workflow there so the
/// dev server reports series naming it.
fn manage_ledger(stack: &PlinthStack, temporal_namespace: &str) {
    let yaml = namespace_yaml("ledger", temporal_namespace, PAYMENTS_TEAM, 3, "");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    // A rule, so an access run comes now (a new namespace with nothing to apply has none).
    let readers = format!("TEMPORAL-ns-{temporal_namespace}-readers");
    ok(stack.plinth_as(
        PAYMENTS_MEMBER,
        &["policy", "add-rule", &readers, "--group", PAYMENTS_TEAM],
    ));
    ok(temporal(
        &[
            "workflow",
            "start",
            "--namespace",
            temporal_namespace,
            "--type",
            "Ledger",
            "--task-queue",
            "ledger",
            "--workflow-id",
            "ledger-1",
        ],
        &stack.temporal_address,
    ));
}

/// Writes the Cloud API key into the stack's home and returns the file, for `tokenFile`.
fn write_api_key(stack: &PlinthStack) -> PathBuf {
    let path = stack.home().join("cloud-api-key");
    std::fs::write(&path, format!("{API_KEY}\n")).unwrap();
    path
}

/// A `MetricsTarget` resource for the Cloud endpoint at `url`, with its API key in `token_file`.
fn target_yaml(name: &str, url: &str, interval: u64, token_file: &str) -> String {
    format!(
        "apiVersion: temporal.plinth.dev/v1beta1\nkind: MetricsTarget\n\
         metadata:\n  name: {name}\nspec:\n  url: {url}\n  temporalCloud: true\n\
         \x20 tokenFile: {token_file}\n  intervalSeconds: {interval}\n"
    )
}

/// `plinth apply` as an admin of the target `name` for `cloud`, with the API key in `key_file`.
fn apply_target(
    stack: &PlinthStack,
    name: &str,
    cloud: &CloudMetricsTestDouble,
    interval: u64,
    key_file: &Path,
) -> Output {
    let yaml = target_yaml(name, &cloud.url, interval, key_file.to_str().unwrap());
    stack.apply_as(ADMIN, &yaml, &[])
}

/// Waits until `promql` finds series in `prometheus`, and returns them.
#[track_caller]
fn wait_for_series(prometheus: &Prometheus, what: &str, promql: &str) -> Vec<serde_json::Value> {
    let mut series = Vec::new();
    wait_for(what, || {
        series = prometheus.query(promql).unwrap();
        !series.is_empty()
    });
    series
}

/// Waits until the worker's own `series` (name and labels, as exposed) is at least `at_least`.
#[track_caller]
fn wait_for_count(stack: &PlinthStack, series: &str, at_least: f64) {
    wait_for(&format!("{series} to reach {at_least}"), || {
        worker_metrics(stack)
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
            .is_some_and(|value| value >= at_least)
    });
}

/// The stack most tests share: it manages `ledger` and scrapes the dev server (`dev`) and a
/// Cloud test double (`cloud`, a resource) into `prometheus`. A test that needs a target of
/// its own adds one under another name with a double of its own; none applies a namespace,
/// since every Cloud scrape asks for all the Ready ones.
struct Fixture {
    stack: PlinthStack,
    prometheus: Prometheus,
    cloud: CloudMetricsTestDouble,
    temporal_namespace: String,
    key_file: PathBuf,
}

impl Fixture {
    /// A stack sending to a Prometheus of its own, managing `ledger` as `temporal_namespace`,
    /// with the resource `cloud` scraping a Cloud test double.
    fn start(temporal_namespace: String) -> Fixture {
        let prometheus = Prometheus::start().unwrap();
        let stack = start_stack(Some(&prometheus)).expect("start the stack");
        manage_ledger(&stack, &temporal_namespace);
        let cloud = CloudMetricsTestDouble::start(&temporal_namespace);
        let key_file = write_api_key(&stack);
        ok(apply_target(
            &stack,
            "cloud",
            &cloud,
            INTERVAL_SECS,
            &key_file,
        ));
        Fixture {
            stack,
            prometheus,
            cloud,
            temporal_namespace,
            key_file,
        }
    }
}

/// The fixture most tests share, with the codec server started too.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let fixture = Fixture::start(format!("ledger-{}", std::process::id()));
        let mut stack = fixture.stack.shared().unwrap();
        stack.start_codec().unwrap();
        Fixture { stack, ..fixture }
    })
}

#[test]
fn dev_server_metrics_reach_prometheus_labelled_with_the_plinth_namespace_and_owner() {
    let Fixture {
        prometheus,
        temporal_namespace,
        ..
    } = fixture();
    let series = wait_for_series(
        prometheus,
        "dev server metrics in Prometheus",
        LEDGER_STARTS,
    );
    assert_eq!(
        series[0]["metric"]["plinth_owner"], PAYMENTS_TEAM,
        "{series:?}"
    );
    // The server's reporter shows `ledger-<pid>` as `ledger_<pid>`.
    assert_eq!(
        series[0]["metric"]["namespace"],
        temporal_namespace.replace('-', "_").as_str()
    );
}

#[test]
fn cloud_samples_reach_prometheus_with_their_own_timestamps_two_minutes_old() {
    let Fixture {
        prometheus, cloud, ..
    } = fixture();
    let stored = wait_for_series(prometheus, "cloud metrics in Prometheus", CLOUD_SUCCESSES);
    assert_eq!(
        stored[0]["metric"]["plinth_owner"], PAYMENTS_TEAM,
        "{stored:?}"
    );
    assert_eq!(
        stored[0]["values"][0][0].as_f64().unwrap(),
        cloud.sample_time as f64
    );
    assert_eq!(stored[0]["values"][0][1], "17");
}

#[test]
fn a_drop_rule_keeps_matching_series_out_of_prometheus_and_counts_them_filtered() {
    let Fixture {
        stack, prometheus, ..
    } = fixture();
    wait_for_series(prometheus, "cloud metrics in Prometheus", CLOUD_SUCCESSES);
    let dropped = prometheus
        .query("temporal_cloud_v1_action_limit[10m]")
        .unwrap();
    assert!(dropped.is_empty(), "a drop rule matched it: {dropped:?}");
    wait_for_count(
        stack,
        "plinth_scrape_samples_total{target=\"cloud\",fate=\"filtered\"}",
        1.0,
    );
}

#[test]
fn each_cloud_scrape_asks_only_for_the_ready_namespaces_plinth_manages() {
    let Fixture {
        prometheus,
        cloud,
        temporal_namespace,
        ..
    } = fixture();
    wait_for_series(prometheus, "cloud metrics in Prometheus", CLOUD_SUCCESSES);
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
}

#[test]
fn plinth_get_lists_the_cloud_target_as_scraping_its_url() {
    let Fixture { stack, cloud, .. } = fixture();
    // Listing reads Temporal's visibility, which follows the apply.
    wait_for("the target listed as scraping", || {
        let listed = stdout(&ok(stack.plinth_as(ADMIN, &["get", "metricstargets"])));
        listed.lines().any(|line| {
            line.starts_with("cloud ") && line.contains(&cloud.url) && line.contains("Scraping")
        })
    });
}

#[test]
fn the_last_cloud_samples_are_re_exported_with_their_timestamps_for_a_scraping_prometheus() {
    let Fixture { stack, cloud, .. } = fixture();
    let export = format!("http://{}/export", stack.worker_metrics_address);
    let mut openmetrics = String::new();
    wait_for("the cloud samples in the export", || {
        openmetrics = curl(&["-H", "Accept: application/openmetrics-text"], &export);
        openmetrics.lines().any(|line| {
            line.starts_with("temporal_cloud_v1_workflow_success_count{")
                && line.contains("plinth_target=\"cloud\"")
                && line.contains("plinth_namespace=\"ledger\"")
                && line.ends_with(&format!(" 17 {}.000", cloud.sample_time))
        })
    });
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    let scraper = Prometheus::start_scraping(&export).unwrap();
    // Found only if the export kept the `plinth_target` label.
    let scraped = wait_for_series(
        &scraper,
        "the export scraped by Prometheus",
        r#"temporal_cloud_v1_workflow_success_count{job="export",plinth_target="cloud",plinth_namespace="ledger"}[10m]"#,
    );
    assert_eq!(
        scraped[0]["values"][0][0].as_f64().unwrap(),
        cloud.sample_time as f64
    );
}

#[test]
fn the_worker_logs_an_incomplete_cloud_answer_but_never_the_api_key() {
    let Fixture { stack, .. } = fixture();
    wait_for("the incomplete answer reported", || {
        stack.log("worker").lines().any(|line| {
            line.contains("completeness=limited")
                && line.split_whitespace().any(|word| word == "target=cloud")
        })
    });
    assert!(
        !stack.log("worker").contains(API_KEY),
        "the API key is never logged"
    );
}

#[test]
fn the_worker_counts_its_scrapes_reconciles_and_access_runs() {
    let Fixture { stack, .. } = fixture();
    for (series, at_least) in [
        ("plinth_scrapes_total{target=\"dev\",outcome=\"ok\"}", 1.0),
        (
            "plinth_scrape_samples_total{target=\"dev\",fate=\"sent\"}",
            100.0,
        ),
        ("plinth_reconciles_total{outcome=\"ok\"}", 1.0),
        ("plinth_access_runs_total{outcome=\"ok\"}", 1.0),
    ] {
        wait_for_count(stack, series, at_least);
    }
    wait_for("a full scrape of dev marked", || {
        worker_metrics(stack)
            .contains("plinth_scrape_last_success_timestamp_seconds{target=\"dev\"}")
    });
}

#[test]
fn every_metric_the_dashboards_and_alert_rules_query_is_exported() {
    let Fixture {
        stack, prometheus, ..
    } = fixture();
    wait_for_series(
        prometheus,
        "dev server metrics in Prometheus",
        LEDGER_STARTS,
    );
    // The server counts successes once a workflow has succeeded: the canary's.
    let canary = [
        "workflow",
        "execute",
        "--type",
        "Canary",
        "--task-queue",
        "plinth",
        "--namespace",
        &stack.control_namespace,
        "--input",
        "\"metrics\"",
    ];
    ok(temporal(&canary, &stack.temporal_address));
    wait_for_series(
        prometheus,
        "a workflow's success in Prometheus",
        r#"workflow_success{plinth_target="dev"}"#,
    );
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
    for exposition in [worker_metrics(stack), proxy, codec] {
        exported.extend(declared_names(&exposition));
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
}

#[test]
fn applying_a_metrics_target_creates_it_and_applying_it_again_changes_nothing() {
    let Fixture {
        stack,
        temporal_namespace,
        key_file,
        ..
    } = fixture();
    let cloud = CloudMetricsTestDouble::start(temporal_namespace);
    let created = ok(apply_target(
        stack,
        "reapplied",
        &cloud,
        INTERVAL_SECS,
        key_file,
    ));
    assert_eq!(stdout(&created).trim(), "metricstarget/reapplied created");
    let again = ok(apply_target(
        stack,
        "reapplied",
        &cloud,
        INTERVAL_SECS,
        key_file,
    ));
    assert_eq!(stdout(&again).trim(), "metricstarget/reapplied unchanged");
}

#[test]
fn a_resource_may_not_take_the_name_of_a_target_in_the_worker_configuration() {
    let Fixture {
        stack,
        cloud,
        key_file,
        ..
    } = fixture();
    let taken = apply_target(stack, "dev", cloud, INTERVAL_SECS, key_file);
    assert!(
        stderr(&taken).contains("\"dev\" is declared in the worker's configuration"),
        "{}",
        stderr(&taken)
    );
}

#[test]
fn a_target_from_a_non_admin_or_with_a_bad_field_is_refused_saying_why_and_changes_nothing() {
    // A stack of its own: the shared one has targets, and this one must list none.
    let stack = start_stack(None).expect("start the stack");
    let cloud = CloudMetricsTestDouble::start("ledger");
    let key_file = write_api_key(&stack);
    // The resource names the worker's key file, so only platform admins may apply it.
    let yaml = target_yaml(
        "cloud",
        &cloud.url,
        INTERVAL_SECS,
        key_file.to_str().unwrap(),
    );
    let denied = stack.apply_as(PAYMENTS_MEMBER, &yaml, &[]);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("may not apply metrics target \"cloud\""),
        "{}",
        stderr(&denied)
    );
    let relative = target_yaml("cloud", &cloud.url, INTERVAL_SECS, "cloud-api-key");
    let invalid = stack.apply_as(ADMIN, &relative, &[]);
    assert!(
        stderr(&invalid).contains("spec.tokenFile: must be an absolute path"),
        "{}",
        stderr(&invalid)
    );
    let none = ok(stack.plinth_as(ADMIN, &["get", "metricstargets", "-o", "json"]));
    assert_eq!(stdout(&none).trim(), "[]");
}

/// A Cloud target named `name` of the calling test's own on the shared stack, with a double
/// of its own serving `mode` at first: what it is served reaches no other test.
fn own_target(name: &str, mode: u8) -> CloudMetricsTestDouble {
    let Fixture {
        stack,
        temporal_namespace,
        key_file,
        ..
    } = fixture();
    let cloud = CloudMetricsTestDouble::start(temporal_namespace);
    cloud.serve(mode);
    ok(apply_target(stack, name, &cloud, INTERVAL_SECS, key_file));
    cloud
}

#[test]
fn a_429_puts_the_next_scrape_off_by_its_retry_after() {
    let Fixture { stack, .. } = fixture();
    let cloud = own_target("rate-limited", SERVE_429);
    let limited = cloud.wait_for_requests(1);
    cloud.serve(SERVE_METRICS);
    let next = cloud.wait_for_requests(1);
    assert!(
        next - limited >= Duration::from_secs(RETRY_AFTER_SECS) - Duration::from_millis(500),
        "next scrape {:?} after the 429",
        next - limited
    );
    wait_for_count(
        stack,
        "plinth_scrapes_total{target=\"rate-limited\",outcome=\"rate_limited\"}",
        1.0,
    );
}

#[test]
fn a_malformed_body_is_reported_and_scraping_goes_on() {
    let Fixture { stack, .. } = fixture();
    let cloud = own_target("malformed", SERVE_MALFORMED);
    cloud.wait_for_requests(1);
    cloud.serve(SERVE_METRICS);
    wait_for("the malformed body reported", || {
        stack
            .log("worker")
            .contains("served a malformed body: line 1")
    });
    cloud.wait_for_requests(2);
    wait_for_count(
        stack,
        "plinth_scrapes_total{target=\"malformed\",outcome=\"failed\"}",
        1.0,
    );
}

#[test]
fn a_changed_spec_takes_effect_in_a_new_run_that_starts_with_the_resource_published() {
    let Fixture {
        stack, key_file, ..
    } = fixture();
    let cloud = own_target("changing", SERVE_METRICS);
    let changed = ok(apply_target(
        stack,
        "changing",
        &cloud,
        INTERVAL_SECS + 1,
        key_file,
    ));
    assert_eq!(stdout(&changed).trim(), "metricstarget/changing configured");
    wait_for("generation 2 observed", || {
        let json = stdout(&ok(
            stack.plinth_as(ADMIN, &["get", "metricstarget", "changing", "-o", "json"])
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
            "metrics/changing",
            "--output",
            "json",
        ],
        &stack.temporal_address,
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
}

#[test]
fn only_an_admin_may_delete_a_target_and_once_deleted_it_is_no_longer_scraped() {
    let Fixture { stack, .. } = fixture();
    let cloud = own_target("retired", SERVE_METRICS);
    cloud.wait_for_requests(1);
    let refused = stack.plinth_as(PAYMENTS_MEMBER, &["delete", "metricstarget", "retired"]);
    assert!(!refused.status.success());
    ok(stack.plinth_as(ADMIN, &["delete", "metricstarget", "retired"]));
    wait_for("the target gone", || {
        let gone = stack.plinth_as(ADMIN, &["get", "metricstarget", "retired"]);
        stderr(&gone).contains("metrics target \"retired\" not found")
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
fn once_a_killed_worker_is_back_scraping_resumes_at_once() {
    // A fixture of its own: the worker dies here.
    let Fixture {
        mut stack,
        prometheus,
        cloud,
        ..
    } = Fixture::start(format!("ledger-{}-restart", std::process::id()));
    cloud.wait_for_requests(1);

    stack.kill_worker();
    let killed = Instant::now();
    let last_before = *cloud.requests().last().unwrap();
    // Longer than the workflow's heartbeat timeout, so the run is retried while it is down.
    std::thread::sleep(Duration::from_secs(12));
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
            .query(&format!("timestamp({LEDGER_STARTS})"))
            .unwrap()
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .is_some_and(|sampled| sampled > now - 5.0)
    });
}

#[test]
fn a_configured_target_named_like_a_resource_is_reported_as_shadowed() {
    // A stack of its own: its worker restarts with another configuration.
    let mut stack = start_stack(None).expect("start the stack");
    let cloud = CloudMetricsTestDouble::start("ledger");
    let key_file = write_api_key(&stack);
    ok(apply_target(
        &stack,
        "cloud",
        &cloud,
        INTERVAL_SECS,
        &key_file,
    ));
    stack.kill_worker();
    let config = stack.home().join("plinth.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!(
        "\n[[metrics.targets]]\nname = \"cloud\"\nurl = \"{}\"\n",
        cloud.url
    );
    std::fs::write(&config, text).unwrap();
    stack.start_worker().unwrap();
    assert!(
        stack
            .log("worker")
            .contains("a MetricsTarget resource has this [[metrics.targets]] entry's name"),
        "the shadowed entry is reported"
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
