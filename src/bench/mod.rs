//! `plinth bench`: measurements against a running `plinth dev`, printed as tables of ratios
//! against a baseline taken in the same run (shared machines are noisy).

mod access;
mod archive;
mod codec;
mod metrics;
mod namespaces;
mod proxy;

use std::time::Duration;

use anyhow::{Context, bail};
use temporalio_client::Connection;

use crate::home::Home;

pub use access::{AccessBenchArgs, access};
pub use archive::{ArchiveBenchArgs, archive};
pub use codec::{CodecBenchArgs, codec};
pub use metrics::{MetricsBenchArgs, metrics};
pub use namespaces::{BenchArgs, namespaces};
pub use proxy::{ProxyBenchArgs, proxy};

/// The parts of a running `plinth dev` a benchmark needs, from its `dev.json`.
struct DevStack {
    /// Temporal's gRPC `host:port`.
    temporal: String,
    /// The control plane's Temporal namespace.
    control_namespace: String,
    worker_pid: u64,
}

impl DevStack {
    fn read(home: &Home) -> anyhow::Result<Self> {
        let dev = running_dev(home)?;
        Ok(Self {
            temporal: dev_text(&dev, "temporal", "grpc_address")?,
            control_namespace: dev_text(&dev, "temporal", "namespace")?,
            worker_pid: dev_pid(&dev, "worker")?,
        })
    }
}

/// The `dev.json` of the running `plinth dev` every benchmark measures.
fn running_dev(home: &Home) -> anyhow::Result<serde_json::Value> {
    home.running_dev()
        .context("no running plinth dev here: start one (PLINTH_HOME=/tmp/bench plinth dev)")
}

/// `dev.json`'s `section.key`, a string.
fn dev_text(dev: &serde_json::Value, section: &str, key: &str) -> anyhow::Result<String> {
    Ok(dev[section][key]
        .as_str()
        .with_context(|| format!("dev.json has no {section}.{key}"))?
        .to_owned())
}

/// The pid of `role` in `dev.json`.
fn dev_pid(dev: &serde_json::Value, role: &str) -> anyhow::Result<u64> {
    dev["pids"][role]
        .as_u64()
        .with_context(|| format!("dev.json has no pids.{role}"))
}

/// A plain connection to the dev server.
async fn connect(temporal: &str) -> anyhow::Result<Connection> {
    let url: temporalio_client::Url = format!("http://{temporal}").parse()?;
    Ok(plinth_control::connect(temporalio_client::ConnectionOptions::new(url).build()).await?)
}

/// How many workflows of `namespace` Temporal's visibility lists for `query`.
async fn count_workflows(
    connection: &Connection,
    namespace: &str,
    query: String,
) -> anyhow::Result<i64> {
    let request =
        temporalio_common::protos::temporal::api::workflowservice::v1::CountWorkflowExecutionsRequest {
            namespace: namespace.to_owned(),
            query,
        };
    Ok(connection
        .workflow_service()
        .count_workflow_executions(tonic::Request::new(request))
        .await
        .with_context(|| format!("count workflows in {namespace}"))?
        .into_inner()
        .count)
}

/// What concurrent callers measured.
struct Load {
    p50: Duration,
    p99: Duration,
    /// Calls per second.
    rate: f64,
    calls: usize,
}

/// Waits for every caller (each returns its latencies) and summarizes them, timed from
/// `started`; the first failure fails the whole load.
async fn gather(
    mut tasks: tokio::task::JoinSet<anyhow::Result<Vec<Duration>>>,
    started: std::time::Instant,
) -> anyhow::Result<Load> {
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    let elapsed = started.elapsed();
    if all.is_empty() {
        bail!("no call finished");
    }
    all.sort();
    let at = |p: usize| all[(all.len() * p / 100).min(all.len() - 1)];
    Ok(Load {
        p50: at(50),
        p99: at(99),
        rate: all.len() as f64 / elapsed.as_secs_f64(),
        calls: all.len(),
    })
}

/// The nearest-rank `p`th percentile of `sorted` (ascending); the default when it is empty.
fn percentile<T: Copy + Default>(sorted: &[T], p: usize) -> T {
    let index = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted.get(index).copied().unwrap_or_default()
}

/// User plus system CPU time of this process so far.
pub(super) fn cpu_time() -> anyhow::Result<Duration> {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    Ok(micros(usage.user_time()) + micros(usage.system_time()))
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64().max(1e-9))
}

/// Resident and peak resident memory of a process, MiB (from /proc).
fn memory_of(pid: u64) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("worker pid {pid}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .context(name.to_owned())?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context(name.to_owned())?
            .parse()?;
        Ok(kib / 1024)
    };
    let (rss, peak) = (field("VmRSS:")?, field("VmHWM:")?);
    if rss == 0 {
        bail!("worker pid {pid} reports no memory");
    }
    Ok((rss, peak))
}

/// Linux's clock tick, the unit of /proc/<pid>/stat CPU times.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// A process's CPU time at one moment, read twice over: in clock ticks, which a few hundred
/// calls at a low rate span only a dozen of, and per live thread to the nanosecond.
struct CpuReading {
    /// User plus system time, threads that have exited included (/proc/<pid>/stat).
    ticks: f64,
    /// Run time of each live thread in nanoseconds (/proc/<pid>/task/<tid>/schedstat).
    threads: std::collections::HashMap<u64, u64>,
}

impl CpuReading {
    fn of(pid: u64) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("pid {pid}"))?;
        // Fields after the command name (which may hold spaces): state is field 3, utime 14.
        let after = stat.rsplit_once(") ").context("/proc stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        let mut threads = std::collections::HashMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let task = task?;
            // A thread that exits between listing and reading is left out, as if gone before.
            let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            let tid = task.file_name().to_string_lossy().parse()?;
            let ran = schedstat
                .split_whitespace()
                .next()
                .context("/proc schedstat")?
                .parse()?;
            threads.insert(tid, ran);
        }
        Ok(Self {
            ticks: ticks / CLOCK_TICKS_PER_SECOND,
            threads,
        })
    }

    /// CPU seconds used since `earlier`: to the nanosecond when every thread read then is still
    /// there, else (a thread's time went with it) in clock ticks.
    fn since(&self, earlier: &CpuReading) -> f64 {
        if !earlier
            .threads
            .keys()
            .all(|tid| self.threads.contains_key(tid))
        {
            return self.ticks - earlier.ticks;
        }
        let nanos: u64 = self
            .threads
            .iter()
            .map(|(tid, ran)| ran - earlier.threads.get(tid).copied().unwrap_or_default())
            .sum();
        nanos as f64 / 1e9
    }
}

/// A port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A process a benchmark measures against (nginx, Prometheus, an endpoint), stopped when
/// dropped.
struct Helper {
    child: std::process::Child,
}

impl Helper {
    /// Starts `command` (`what` names it in errors) and waits until it listens on `address`;
    /// if it exits first, the error carries `log()`.
    fn start(
        what: &str,
        command: &mut std::process::Command,
        address: &str,
        log: impl Fn() -> String,
    ) -> anyhow::Result<Helper> {
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("start {what}"))?;
        let mut helper = Helper { child };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(address).is_err() {
            if let Some(status) = helper.child.try_wait()? {
                bail!("{what} exited ({status}): {}", log());
            }
            if std::time::Instant::now() > deadline {
                bail!("{what} did not listen on {address}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(helper)
    }

    fn pid(&self) -> u64 {
        u64::from(self.child.id())
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
