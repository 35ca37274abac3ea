//! `plinth bench proxy`: the same client and workload against Temporal directly, through nginx
//! (TLS termination only) and through `plinth proxy` (mTLS, authorization, encryption).

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use temporalio_common::protos::temporal::api::common::v1::{
    Payload, Payloads, WorkflowExecution, WorkflowType,
};
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::workflow_service_client::WorkflowServiceClient;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    GetWorkflowExecutionHistoryRequest, PollActivityTaskQueueRequest, StartWorkflowExecutionRequest,
};
use tokio::task::JoinSet;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::home::Home;

#[derive(Debug, clap::Args)]
pub struct ProxyBenchArgs {
    /// A Ready Plinth namespace the [dev] user may write (see `plinth policy add-rule`).
    #[arg(long, default_value = "fancy-test")]
    namespace: String,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Times each measurement is repeated, the three paths taking turns within a round and
    /// each round starting with the next path; each figure printed is the median over rounds.
    /// The machine's noise moves single rounds by tens of percent.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Long polls held open through the proxy for the memory figure (0: skip it).
    #[arg(long, default_value_t = 2000)]
    long_polls: usize,
    /// The RPCs measured, e.g. one alone to profile it.
    #[arg(long, value_enum, default_values_t = [Op::Start, Op::History])]
    rpc: Vec<Op>,
}

#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum Op {
    Start,
    History,
}

/// Where each path stands in the table.
const DIRECT: usize = 0;
const NGINX: usize = 1;
const PROXY: usize = 2;

struct Path {
    name: &'static str,
    channel: Channel,
    /// The process doing the proxying, whose CPU is charged to it.
    pid: Option<u64>,
}

struct Measured {
    load: super::Load,
    cpu_per_thousand: Option<f64>,
}

pub async fn proxy(home: &Home, args: &ProxyBenchArgs) -> anyhow::Result<ExitCode> {
    let dev = super::running_dev(home)?;
    let field = |section: &str, key: &str| super::dev_text(&dev, section, key);
    let temporal = field("temporal", "grpc_address")?;
    let proxy_address = field("proxy", "address")?;
    let proxy_pid = super::dev_pid(&dev, "proxy")?;
    let ca = std::fs::read(field("identity", "ca")?)?;
    let identity = Identity::from_pem(
        std::fs::read(field("identity", "cert")?)?,
        std::fs::read(field("identity", "key")?)?,
    );

    let nginx = Nginx::start(home, &temporal)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca))
        .domain_name("localhost");
    let paths = [
        Path {
            name: "direct",
            channel: Channel::from_shared(format!("http://{temporal}"))?
                .connect()
                .await?,
            pid: None,
        },
        Path {
            name: "nginx (TLS)",
            channel: Channel::from_shared(format!("https://{}", nginx.address))?
                .tls_config(tls.clone())?
                .connect()
                .await
                .context("connect to nginx")?,
            pid: Some(nginx.pid()),
        },
        Path {
            name: "plinth proxy",
            channel: Channel::from_shared(format!("https://{proxy_address}"))?
                .tls_config(tls.identity(identity))?
                .connect()
                .await?,
            pid: Some(proxy_pid),
        },
    ];
    let namespace = args.namespace.clone();
    // The workflow each path reads the history of, started through that path.
    let histories: Vec<String> = (0..paths.len())
        .map(|i| format!("bench-history-{}-{i}", std::process::id()))
        .collect();
    for (path, workflow_id) in paths.iter().zip(&histories) {
        first_start(path, &namespace, workflow_id)
            .await
            .with_context(|| format!("{}: StartWorkflowExecution in {namespace}", path.name))?;
    }
    let window = Duration::from_secs(args.seconds);
    println!(
        "{:<14} {:<8} {:>5} {:>10} {:>10} {:>9} {:>16} {:>15} {:>13}",
        "path",
        "rpc",
        "conc",
        "p50",
        "p99",
        "rpc/s",
        "CPU s/1000 rpc",
        "p50 over direct",
        "CPU vs nginx"
    );
    for &op in &args.rpc {
        for concurrency in [1, 64] {
            let mut rounds = Vec::new();
            for r in 0..args.rounds as usize {
                // Each round starts with the next path: every start adds a workflow to the dev
                // server, so a fixed order would always measure the same path on the fullest one.
                let mut round = Vec::new();
                for i in (0..paths.len()).map(|k| (k + r) % paths.len()) {
                    let (path, history_of) = (&paths[i], &histories[i]);
                    let measured =
                        measure(path, &namespace, op, concurrency, window, history_of).await?;
                    round.push((i, measured));
                }
                round.sort_by_key(|(i, _)| *i);
                rounds.push(round.into_iter().map(|(_, measured)| measured).collect());
            }
            print_rows(&paths, op, concurrency, &rounds);
        }
    }
    if args.long_polls > 0 {
        let (held, rss) =
            hold_long_polls(&paths[PROXY], &namespace, args.long_polls, proxy_pid).await?;
        println!(
            "\nplinth proxy RSS holding {held} of {} long polls: {rss} MiB",
            args.long_polls
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One row per path: each figure the median over `rounds`. The added p50 and the CPU ratio
/// are taken within each round before the median, so drift between rounds cancels out.
fn print_rows(paths: &[Path], op: Op, concurrency: usize, rounds: &[Vec<Measured>]) {
    let millis = |d: Duration| d.as_secs_f64() * 1e3;
    let show =
        |value: Option<f64>, format: &dyn Fn(f64) -> String| value.map_or("-".to_owned(), format);
    for (i, path) in paths.iter().enumerate() {
        let median = |of: &dyn Fn(&[Measured]) -> Option<f64>| {
            let mut values: Vec<f64> = rounds.iter().filter_map(|round| of(round)).collect();
            values.sort_by(f64::total_cmp);
            (!values.is_empty()).then(|| super::percentile(&values, 50))
        };
        let added = match i {
            DIRECT => None,
            _ => median(&|r| Some(millis(r[i].load.p50) - millis(r[DIRECT].load.p50))),
        };
        let cpu_vs_nginx = match i {
            PROXY => median(&|r| Some(r[PROXY].cpu_per_thousand? / r[NGINX].cpu_per_thousand?)),
            _ => None,
        };
        println!(
            "{:<14} {:<8} {:>5} {:>7.2} ms {:>7.2} ms {:>9.0} {:>16} {:>15} {:>13}",
            path.name,
            if op == Op::Start { "start" } else { "history" },
            concurrency,
            median(&|r| Some(millis(r[i].load.p50))).unwrap_or_default(),
            median(&|r| Some(millis(r[i].load.p99))).unwrap_or_default(),
            median(&|r| Some(r[i].load.rate)).unwrap_or_default(),
            show(median(&|r| r[i].cpu_per_thousand), &|cpu| format!(
                "{cpu:.3}"
            )),
            show(added, &|ms| format!("{ms:+.2} ms")),
            show(cpu_vs_nginx, &|ratio| format!("{ratio:.2}x")),
        );
    }
}

/// Makes `call` again once when it failed as a closing connection fails calls: Temporal's
/// frontend closes each connection at its maximum age (5 minutes), and a call sent just then
/// never reaches it. SDKs retry these too; a start carries its request id, so it is not doubled.
async fn retried<F: Future<Output = Result<(), tonic::Status>>>(
    call: impl Fn() -> F,
) -> Result<(), tonic::Status> {
    match call().await {
        Err(status) if matches!(status.code(), Code::Unavailable | Code::Cancelled) => call().await,
        done => done,
    }
}

/// How long the first start through the proxy waits for write access: a rule added just
/// before reaches the proxy after its access run and the proxy's
/// [`ACCESS_TTL`](plinth_control::ACCESS_TTL).
const ACCESS_WAIT: Duration = Duration::from_secs(60);

/// The first start on `path`, which waits out an access run still granting the dev user.
async fn first_start(path: &Path, namespace: &str, workflow_id: &str) -> Result<(), tonic::Status> {
    let deadline = Instant::now() + ACCESS_WAIT;
    let mut told = false;
    loop {
        match start(&path.channel, namespace, workflow_id).await {
            Err(status) if status.code() == Code::PermissionDenied && Instant::now() < deadline => {
                if !std::mem::replace(&mut told, true) {
                    eprintln!(
                        "{}: no write access to {namespace} yet; waiting up to {ACCESS_WAIT:?} \
                         for an access run to grant it",
                        path.name
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            done => return done,
        }
    }
}

async fn start(channel: &Channel, namespace: &str, workflow_id: &str) -> Result<(), tonic::Status> {
    let request = StartWorkflowExecutionRequest {
        namespace: namespace.to_owned(),
        workflow_id: workflow_id.to_owned(),
        workflow_type: Some(WorkflowType {
            name: "BenchNothing".into(),
        }),
        task_queue: Some(TaskQueue {
            name: "bench-nobody-polls".into(),
            ..Default::default()
        }),
        input: Some(Payloads {
            payloads: vec![Payload {
                metadata: [("encoding".to_owned(), b"binary/plain".to_vec())].into(),
                data: vec![b'x'; 1024],
                ..Default::default()
            }],
        }),
        request_id: workflow_id.to_owned(),
        identity: "plinth-bench".into(),
        ..Default::default()
    };
    WorkflowServiceClient::new(channel.clone())
        .start_workflow_execution(request)
        .await?;
    Ok(())
}

async fn history(
    channel: &Channel,
    namespace: &str,
    workflow_id: &str,
) -> Result<(), tonic::Status> {
    let request = GetWorkflowExecutionHistoryRequest {
        namespace: namespace.to_owned(),
        execution: Some(WorkflowExecution {
            workflow_id: workflow_id.to_owned(),
            run_id: String::new(),
        }),
        ..Default::default()
    };
    WorkflowServiceClient::new(channel.clone())
        .get_workflow_execution_history(request)
        .await?;
    Ok(())
}

async fn measure(
    path: &Path,
    namespace: &str,
    op: Op,
    concurrency: usize,
    window: Duration,
    history_of: &str,
) -> anyhow::Result<Measured> {
    static IDS: AtomicU64 = AtomicU64::new(0);
    let cpu_before = path.pid.map(super::CpuReading::of).transpose()?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let run = Arc::new(format!("bench-{}", std::process::id()));
    for _ in 0..concurrency {
        let (channel, namespace, history_of, run) = (
            path.channel.clone(),
            namespace.to_owned(),
            history_of.to_owned(),
            run.clone(),
        );
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < window {
                let begin = Instant::now();
                match op {
                    Op::Start => {
                        let id = format!("{run}-{}", IDS.fetch_add(1, Ordering::Relaxed));
                        retried(|| start(&channel, &namespace, &id)).await?;
                    }
                    Op::History => retried(|| history(&channel, &namespace, &history_of)).await?,
                }
                latencies.push(begin.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let load = super::gather(tasks, started)
        .await
        .with_context(|| path.name)?;
    let cpu = match (path.pid, cpu_before) {
        (Some(pid), Some(before)) => Some(super::CpuReading::of(pid)?.since(&before)),
        _ => None,
    };
    Ok(Measured {
        cpu_per_thousand: cpu.map(|cpu| cpu * 1000.0 / load.calls as f64),
        load,
    })
}

/// Opens `count` activity-task long polls through `path` (spread over task queues), waits for
/// them to settle, and returns how many are still held and the proxy's RSS in MiB.
async fn hold_long_polls(
    path: &Path,
    namespace: &str,
    count: usize,
    pid: u64,
) -> anyhow::Result<(usize, u64)> {
    let finished = Arc::new(AtomicU64::new(0));
    let mut polls = JoinSet::new();
    for i in 0..count {
        let (channel, namespace, finished) =
            (path.channel.clone(), namespace.to_owned(), finished.clone());
        polls.spawn(async move {
            let request = PollActivityTaskQueueRequest {
                namespace,
                task_queue: Some(TaskQueue {
                    name: format!("bench-poll-{}", i % 100),
                    ..Default::default()
                }),
                identity: "plinth-bench".into(),
                ..Default::default()
            };
            let mut request = tonic::Request::new(request);
            request.set_timeout(Duration::from_secs(60));
            let _ = WorkflowServiceClient::new(channel)
                .poll_activity_task_queue(request)
                .await;
            finished.fetch_add(1, Ordering::Relaxed);
        });
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, _) = super::memory_of(pid)?;
    let held = count - finished.load(Ordering::Relaxed) as usize;
    polls.abort_all();
    Ok((held, rss))
}

/// nginx (Debian's) terminating TLS with the dev server certificate and passing gRPC on.
struct Nginx {
    process: super::Helper,
    address: String,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(home: &Home, temporal: &str) -> anyhow::Result<Nginx> {
        let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .context("nginx is not installed: sudo apt-get install -y nginx-light (or nginx)")?;
        let dir = tempfile::tempdir()?;
        let address = format!("127.0.0.1:{}", super::free_port()?);
        let d = dir.path().display();
        let conf = format!(
            "master_process off;\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
               upstream temporal {{ server {temporal}; keepalive 128; }}\n\
               server {{\n    listen {address} ssl http2;\n\
                 ssl_certificate {cert};\n    ssl_certificate_key {key};\n\
                 keepalive_requests 100000000;\n    http2_max_concurrent_streams 4096;\n\
                 grpc_read_timeout 300s;\n    grpc_send_timeout 300s;\n\
                 location / {{ grpc_pass grpc://temporal; }}\n  }}\n}}\n",
            cert = home.server_cert().display(),
            key = home.server_key().display(),
        );
        std::fs::write(dir.path().join("nginx.conf"), conf)?;
        let error_log = dir.path().join("error.log");
        let process = super::Helper::start(
            "nginx",
            Command::new(binary)
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(&error_log),
            &address,
            || std::fs::read_to_string(&error_log).unwrap_or_default(),
        )?;
        Ok(Nginx {
            process,
            address,
            _dir: dir,
        })
    }

    fn pid(&self) -> u64 {
        self.process.pid()
    }
}
