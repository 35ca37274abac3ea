//! A real Prometheus (Debian's package) on a free port with the remote-write receiver on,
//! storing in a temporary directory; stopped and removed when dropped, or when the test process
//! ends for one shared through a static.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{Guarded, Janitor, free_port};

/// A running `prometheus`.
#[derive(Debug)]
pub struct Prometheus {
    _process: Guarded,
    address: String,
    dir: tempfile::TempDir,
    _janitor: Janitor,
}

impl Prometheus {
    /// Starts it and waits until `/-/ready` answers.
    pub fn start() -> anyhow::Result<Prometheus> {
        Self::start_with("global:\n  scrape_interval: 1m\n")
    }

    /// Starts one that also scrapes `url` every second, keeping the labels and timestamps it
    /// finds there (as for a re-export endpoint).
    pub fn start_scraping(url: &str) -> anyhow::Result<Prometheus> {
        let (scheme, rest) = url.split_once("://").context("scrape URL")?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        Self::start_with(&format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: export\n    \
             scheme: {scheme}\n    metrics_path: {path}\n    honor_labels: true\n    \
             honor_timestamps: true\n    static_configs:\n      - targets: ['{host}']\n"
        ))
    }

    fn start_with(config_text: &str) -> anyhow::Result<Prometheus> {
        let dir = tempfile::Builder::new()
            .prefix("plinth-test-prometheus-")
            .tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_text)?;
        let address = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new("prometheus");
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn");
        let process = Guarded::spawn(&command, &dir.path().join("prometheus.log"))
            .context("start prometheus (Debian package `prometheus`; scripts/test installs it)")?;
        let prometheus = Prometheus {
            _process: process,
            address,
            _janitor: Janitor::remove_at_exit(dir.path())?,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !prometheus
            .get("/-/ready", &[])
            .is_ok_and(|body| body.contains("Ready"))
        {
            if Instant::now() > deadline {
                bail!("prometheus not ready in 60 s: {}", prometheus.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(prometheus)
    }

    /// `http://host:port/api/v1/write`.
    pub fn remote_write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.address)
    }

    /// The instant query `promql` now, as Prometheus' JSON `data.result`.
    pub fn query(&self, promql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let body = self.get("/api/v1/query", &[("query", promql)])?;
        let answer: serde_json::Value = serde_json::from_str(&body).context(body.clone())?;
        if answer["status"] != "success" {
            bail!("query {promql:?} failed: {body}");
        }
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    /// GET `path` with URL-encoded `params`, through curl.
    fn get(&self, path: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut curl = Command::new("curl");
        curl.args(["-sfG", &format!("http://{}{path}", self.address)]);
        for (name, value) in params {
            curl.args(["--data-urlencode", &format!("{name}={value}")]);
        }
        let output = curl.output().context("run curl")?;
        if !output.status.success() {
            bail!("GET {path}: curl exited {}", output.status);
        }
        Ok(String::from_utf8(output.stdout)?)
    }
}
