//! `plinth bench metrics`: one scrape, parse, relabel and remote write of a Temporal Cloud-sized
//! body (30,000 samples), next to Prometheus scraping the same body from the same endpoint. The
//! endpoint is a separate process, so the CPU measured is the pipeline's alone.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use plinth_metrics::{Managed, Relabel, RemoteWrite, Scraper, SendSettings};

use super::{CpuReading, Helper, free_port, ms};

/// What to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsBenchArgs {
    /// Samples in the body.
    #[arg(long, default_value_t = 30_000)]
    samples: usize,
    /// Scrapes the pipeline makes.
    #[arg(long, default_value_t = 10)]
    scrapes: u32,
}

/// Debian's Prometheus scraping the endpoint and receiving remote writes.
struct Prometheus {
    _process: Helper,
    address: String,
    _dir: tempfile::TempDir,
}

pub async fn metrics(args: &MetricsBenchArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let body = cloud_body(args.samples);
    std::fs::write(dir.path().join("metrics"), &body)?;
    let (_endpoint, url) = serve(dir.path())?;
    let prometheus = start_prometheus(&url)?;
    let scraper = Scraper::new(&url, None, Duration::from_secs(30))?;
    let sink = RemoteWrite::new(
        &format!("http://{}/api/v1/write", prometheus.address),
        None,
        SendSettings::default(),
    )?;
    let relabel = Relabel {
        target: "bench".into(),
        managed: (0..50)
            .map(|i| {
                let managed = Managed {
                    resource: format!("team-{i}"),
                    owner: format!("group-{i}"),
                };
                (format!("ns-{i}"), managed)
            })
            .collect::<HashMap<_, _>>(),
        drop: Vec::new(),
    };

    let mut times = Vec::new();
    let cpu_before = CpuReading::of(u64::from(std::process::id()))?;
    for _ in 0..args.scrapes {
        let started = Instant::now();
        let scraped = scraper.scrape(&[]).await?;
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
        let relabelled = relabel.apply(scraped.samples, now_ms);
        let report = sink.send(&relabelled.series).await;
        if report.samples_sent != args.samples as u64 {
            bail!(
                "Prometheus accepted {} of {} samples: {:?}",
                report.samples_sent,
                args.samples,
                report.error
            );
        }
        times.push(started.elapsed());
    }
    let cpu =
        CpuReading::of(u64::from(std::process::id()))?.since(&cpu_before) / f64::from(args.scrapes);
    times.sort();
    let median = times[times.len() / 2];
    let prometheus_scrape = prometheus_scrape_time(&prometheus.address).await?;

    let samples = args.samples as f64;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<44} {:>8} {:>12} {:>12} {:>14}",
        "pipeline", "samples", "per scrape", "samples/s", "CPU s/scrape"
    );
    let _ = writeln!(
        table,
        "{:<44} {:>8} {:>12} {:>12.0} {:>14.3}",
        "plinth: scrape, parse, relabel, remote write",
        args.samples,
        ms(median),
        samples / median.as_secs_f64(),
        cpu
    );
    let _ = writeln!(
        table,
        "{:<44} {:>8} {:>12} {:>12.0} {:>14}",
        "prometheus: scrape, parse, store",
        args.samples,
        ms(prometheus_scrape),
        samples / prometheus_scrape.as_secs_f64(),
        "-"
    );
    let _ = writeln!(
        table,
        "\nplinth takes {:.1}x Prometheus' time; at one scrape a minute it uses {:.2}% of one core \
         (target: under 10%)",
        median.as_secs_f64() / prometheus_scrape.as_secs_f64(),
        cpu / 60.0 * 100.0
    );
    print!("{table}");
    Ok(ExitCode::SUCCESS)
}

/// `samples` gauges in Temporal Cloud's shape, two minutes old, over 50 namespaces.
fn cloud_body(samples: usize) -> String {
    let names = [
        "temporal_cloud_v1_service_request_count",
        "temporal_cloud_v1_service_error_count",
        "temporal_cloud_v1_service_latency_p99",
        "temporal_cloud_v1_workflow_success_count",
        "temporal_cloud_v1_approximate_backlog_count",
    ];
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        / 60
        * 60
        - 120;
    let per_name = samples.div_ceil(names.len());
    let mut body = String::with_capacity(samples * 200);
    let mut written = 0;
    for name in names {
        let _ = writeln!(body, "# TYPE {name} gauge");
        for i in 0..per_name.min(samples - written) {
            let _ = writeln!(
                body,
                "{name}{{temporal_account=\"acct1\",temporal_namespace=\"ns-{}.acct1\",\
                 operation=\"Operation{}\",temporal_task_queue=\"queue-{i}\",region=\"aws-us-east-1\"}} \
                 {}.5 {at}.000",
                i % 50,
                i % 40,
                i % 1000
            );
            written += 1;
        }
    }
    body.push_str("# EOF\n");
    body
}

/// A Python HTTP server answering every GET with `dir/metrics` as OpenMetrics, and its URL.
fn serve(dir: &std::path::Path) -> anyhow::Result<(Helper, String)> {
    let port = free_port()?;
    let script = r#"
import http.server, sys
body = open(sys.argv[1], "rb").read()
class Metrics(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Metrics).serve_forever()
"#;
    let address = format!("127.0.0.1:{port}");
    let process = Helper::start(
        "the endpoint (python3)",
        Command::new("python3")
            .args(["-c", script])
            .arg(dir.join("metrics"))
            .arg(port.to_string()),
        &address,
        String::new,
    )?;
    Ok((process, format!("http://{address}/v1/metrics")))
}

/// Prometheus scraping `url` every 5 s, with its remote-write receiver on.
fn start_prometheus(url: &str) -> anyhow::Result<Prometheus> {
    let dir = tempfile::tempdir()?;
    let target: axum::http::Uri = url.parse()?;
    let config = format!(
        "global:\n  scrape_interval: 5s\nscrape_configs:\n  - job_name: bench\n    \
         metrics_path: {}\n    static_configs:\n      - targets: ['{}']\n",
        target.path(),
        target.authority().context("endpoint URL")?
    );
    std::fs::write(dir.path().join("prometheus.yml"), config)?;
    let address = format!("127.0.0.1:{}", free_port()?);
    let process = Helper::start(
        "prometheus (Debian package `prometheus`)",
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .args(["--web.enable-remote-write-receiver", "--log.level=warn"]),
        &address,
        String::new,
    )?;
    Ok(Prometheus {
        _process: process,
        address,
        _dir: dir,
    })
}

/// Prometheus' own median scrape of the endpoint, once it has scraped it whole three times.
async fn prometheus_scrape_time(address: &str) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let scrapes = query(
            address,
            "count_over_time(scrape_samples_scraped{job=\"bench\"}[2m])",
        )
        .await?;
        let samples = query(
            address,
            "min_over_time(scrape_samples_scraped{job=\"bench\"}[2m])",
        )
        .await?;
        if scrapes.is_some_and(|n| n >= 3.0) && samples.is_some_and(|n| n > 0.0) {
            break;
        }
        if Instant::now() > deadline {
            bail!("Prometheus did not scrape the endpoint three times in a minute");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let seconds = query(
        address,
        "quantile_over_time(0.5, scrape_duration_seconds{job=\"bench\"}[2m])",
    )
    .await?
    .context("no scrape_duration_seconds")?;
    Ok(Duration::from_secs_f64(seconds))
}

/// The single value of an instant query, if it has one.
async fn query(address: &str, promql: &str) -> anyhow::Result<Option<f64>> {
    let encoded: String = promql
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let answer = super::codec::get(address, &format!("/api/v1/query?query={encoded}")).await?;
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    Ok(answer["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|value| value.parse().ok()))
}
