//! `plinth bench namespaces`: apply-to-Ready through Plinth against bare `RegisterNamespace`
//! calls on the same Temporal, in one run, as ratios (shared machines are noisy).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use plinth_control::ControlPlane;
use plinth_control::contract::AccessRunStart;
use plinth_proto::phase;
use plinth_proto::v1::{ApplyNamespaceRequest, Namespace, NamespaceSpec, WatchNamespaceRequest};
use temporalio_client::Connection;
use temporalio_client::tonic::Request;
use temporalio_common::WorkflowDefinition as _;
use temporalio_common::protos::temporal::api::workflowservice::v1::RegisterNamespaceRequest;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{DevStack, memory_of, ms, percentile, ratio};
use crate::client::Api;
use crate::config::Config;
use crate::home::Home;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// How many namespaces each side creates, all at once.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Owner group of the resources (must be in the directory).
    #[arg(long, default_value = "payments-team@example.com")]
    owner: String,
    /// Namespaces that exist before the measured ones (`bench-existing-<i>`, applied first
    /// when missing). The measured applies then run three times: alone, while every
    /// namespace's access run is started (as a worker does when the directory changes), and
    /// alone again once those runs have ended.
    #[arg(long, default_value_t = 0)]
    existing: usize,
}

/// How many applies of existing namespaces are in flight at once: well under the proxy's
/// calls per caller.
const EXISTING_AT_ONCE: usize = 100;
/// Tries of an apply Temporal did not answer in time, the first included.
const APPLY_TRIES: u32 = 5;

/// Runs against the `plinth dev` of `$PLINTH_HOME`; use a fresh home, it leaves its
/// namespaces behind.
pub async fn namespaces(
    config: &Config,
    home: &Home,
    args: &BenchArgs,
) -> anyhow::Result<ExitCode> {
    let DevStack {
        temporal,
        control_namespace,
        worker_pid,
    } = DevStack::read(home)?;
    let run = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    let api = crate::client::connect(config, home).await?;
    let connection = super::connect(&temporal).await?;

    let existing: Vec<String> = (0..args.existing)
        .map(|i| format!("bench-existing-{i}"))
        .collect();
    if !existing.is_empty() {
        let started = Instant::now();
        apply_all(&api, &existing, &args.owner, EXISTING_AT_ONCE)
            .await
            .context("existing namespaces")?;
        println!(
            "{} existing namespaces Ready in {}\n",
            existing.len(),
            ms(started.elapsed())
        );
    }

    let names = |tag: &str| -> Vec<String> {
        (0..args.count)
            .map(|i| format!("bench-{run}{tag}-{i}"))
            .collect()
    };
    let alone = apply_all(&api, &names(""), &args.owner, args.count)
        .await
        .context("plinth apply → Ready")?;
    let busy = if existing.is_empty() {
        None
    } else {
        let measured = names("-busy");
        let running_before = running_access_runs(&connection, &control_namespace).await?;
        // What a worker does when the directory changes.
        let control = ControlPlane::connect(
            connection.clone(),
            &control_namespace,
            &config.temporal.task_queue,
        )?;
        let triggers = async {
            let started = Instant::now();
            let runs = control.trigger_all_access_runs().await;
            (runs, started.elapsed())
        };
        let ((triggered, took), busy) = tokio::join!(
            triggers,
            apply_all(&api, &measured, &args.owner, args.count),
        );
        let runs = triggered.context("start every access run")?;
        let during = busy.context("plinth apply → Ready during access runs")?;
        // Alone again once the runs have ended, on a Temporal that now carries the busy
        // side's namespaces too: each namespace makes Temporal slower, so the busy side is
        // compared with the mean of one side measured before it and one after. The bare
        // registers come last, on the most namespaces.
        let drained = drain_access_runs(
            &connection,
            &control_namespace,
            running_before + DRAIN_SLACK,
        )
        .await;
        let after = apply_all(&api, &names("-after"), &args.owner, args.count)
            .await
            .context("plinth apply → Ready after the access runs")?;
        Some(Busy {
            runs,
            took,
            drained,
            during,
            after,
        })
    };
    let bare = bare_registers(&connection, run, args.count).await?;

    let (rss, peak) = memory_of(worker_pid)?;
    println!("{} namespaces, all at once, on {temporal}\n", args.count);
    let row = |label: &str, cells: [String; 3]| {
        let [p50, p99, total] = cells;
        println!("{label:<38} {p50:>10} {p99:>10} {total:>10}");
    };
    row("", ["p50", "p99", "total"].map(str::to_owned));
    let times = |timed: &Timed| [ms(timed.p50()), ms(timed.p99()), ms(timed.total)];
    let ratios = |a: &Timed, b: &Timed| {
        [
            ratio(a.p50(), b.p50()),
            ratio(a.p99(), b.p99()),
            ratio(a.total, b.total),
        ]
    };
    row("plinth apply → Ready", times(&alone));
    if let Some(busy) = &busy {
        row(
            &format!("… while {} access runs start", busy.runs),
            times(&busy.during),
        );
        row("… alone again, after them", times(&busy.after));
    }
    row("bare RegisterNamespace", times(&bare));
    row("ratio (plinth / bare)", ratios(&alone, &bare));
    if let Some(busy) = &busy {
        let mean = |a: Duration, b: Duration| (a + b) / 2;
        let (during, before, after) = (&busy.during, &alone, &busy.after);
        row(
            "ratio (during / mean of alone sides)",
            [
                ratio(during.p50(), mean(before.p50(), after.p50())),
                ratio(during.p99(), mean(before.p99(), after.p99())),
                ratio(during.total, mean(before.total, after.total)),
            ],
        );
        println!(
            "\n{} access runs started, one after another, in {}",
            busy.runs,
            ms(busy.took),
        );
        match busy.drained {
            Some(drained) => println!(
                "then {} until at most {DRAIN_SLACK} more ran than before them",
                ms(drained)
            ),
            None => println!(
                "still more than {DRAIN_SLACK} more running than before them after {}: \
                 the last side was measured while they ran",
                ms(DRAIN_PATIENCE)
            ),
        }
    }
    let retried = [
        ("plinth apply (UNAVAILABLE)", Some(&alone)),
        (
            "… while access runs start",
            busy.as_ref().map(|busy| &busy.during),
        ),
        ("… alone again", busy.as_ref().map(|busy| &busy.after)),
        ("bare RegisterNamespace (RESOURCE_EXHAUSTED)", Some(&bare)),
    ];
    for (label, timed) in retried {
        if let Some(timed) = timed.filter(|timed| timed.retried > 0) {
            println!("{label}: tried again {} times", timed.retried);
        }
    }
    println!("\nworker RSS {rss} MiB now, {peak} MiB peak (pid {worker_pid})");
    Ok(ExitCode::SUCCESS)
}

/// The applies made while every access run starts, and those made once they have ended.
struct Busy {
    /// Access runs started.
    runs: u32,
    /// How long starting them took.
    took: Duration,
    /// From the last start (or the busy side's last apply, if later) until they had ended
    /// (see [`DRAIN_SLACK`]), or `None` when they had not within [`DRAIN_PATIENCE`].
    drained: Option<Duration>,
    /// The applies made while the runs start.
    during: Timed,
    /// The applies made once the runs have ended.
    after: Timed,
}

/// How long the access runs the busy side started may take to end; the last side is then
/// measured anyway, and the bench says so.
const DRAIN_PATIENCE: Duration = Duration::from_secs(900);
/// Access runs counted as ended with this many more running than before they were started:
/// the count of the schedules' own runs moves from moment to moment, and the busy side's
/// namespaces add schedules of their own.
const DRAIN_SLACK: i64 = 10;

/// Access runs Temporal's visibility lists as running.
async fn running_access_runs(connection: &Connection, namespace: &str) -> anyhow::Result<i64> {
    let query = format!(
        "WorkflowType = '{}' AND ExecutionStatus = 'Running'",
        AccessRunStart.name()
    );
    super::count_workflows(connection, namespace, query).await
}

/// Waits until no more than `at_most` access runs are running; a count Temporal does not
/// answer is asked again. `None` when [`DRAIN_PATIENCE`] ran out first.
async fn drain_access_runs(
    connection: &Connection,
    namespace: &str,
    at_most: i64,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < DRAIN_PATIENCE {
        match running_access_runs(connection, namespace).await {
            Ok(running) if running <= at_most => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format_args!("{e:#}"), "counting access runs; asking again")
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    None
}

/// Latencies of one side's calls (ascending) and the time all of them took.
struct Timed {
    latencies: Vec<Duration>,
    total: Duration,
    /// Tries made again after `UNAVAILABLE`.
    retried: u32,
}

impl Timed {
    fn p50(&self) -> Duration {
        percentile(&self.latencies, 50)
    }

    fn p99(&self) -> Duration {
        percentile(&self.latencies, 99)
    }
}

/// Applies a namespace of each name, `at_once` at a time, each timed until it is Ready.
async fn apply_all(
    api: &Api,
    names: &[String],
    owner: &str,
    at_once: usize,
) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(at_once.max(1)));
    let mut tasks = JoinSet::new();
    for name in names {
        let mut api = api.clone();
        let resource = resource(name, owner);
        let permits = permits.clone();
        let name = name.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let begin = Instant::now();
            let mut tries = 1;
            loop {
                match apply_until_ready(&mut api, &resource, &name).await {
                    Ok(()) => return Ok((begin.elapsed(), tries - 1)),
                    // An apply is idempotent: one Temporal did not answer in time is made
                    // again, timed from its first try.
                    Err(status)
                        if status.code() == tonic::Code::Unavailable && tries < APPLY_TRIES =>
                    {
                        tries += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(status) => return Err(status),
                }
            }
        });
    }
    let (latencies, retried) = collect(&mut tasks).await?;
    Ok(Timed {
        latencies,
        total: started.elapsed(),
        retried,
    })
}

/// Applies `resource` and watches it until Ready.
async fn apply_until_ready(
    api: &mut Api,
    resource: &Namespace,
    name: &str,
) -> Result<(), tonic::Status> {
    api.apply_namespace(ApplyNamespaceRequest {
        namespace: Some(resource.clone()),
        dry_run: false,
    })
    .await?;
    let mut stream = api
        .watch_namespace(WatchNamespaceRequest {
            name: name.to_owned(),
        })
        .await?
        .into_inner();
    while let Some(update) = stream.message().await? {
        match update.status.map(|s| s.phase).as_deref() {
            Some(phase::READY) => return Ok(()),
            Some(phase::FAILED) => break,
            _ => {}
        }
    }
    Err(tonic::Status::internal(format!(
        "{name} did not become Ready"
    )))
}

async fn bare_registers(connection: &Connection, run: u64, count: usize) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let mut service = connection.workflow_service();
        let request = RegisterNamespaceRequest {
            namespace: format!("bench-bare-{run}-{i}"),
            workflow_execution_retention_period: Some(Duration::from_secs(86_400).try_into()?),
            ..Default::default()
        };
        tasks.spawn(async move {
            let begin = Instant::now();
            let mut again = 0;
            // The frontend rate-limits bursts; a client retries, and so the wait counts.
            loop {
                match service
                    .register_namespace(Request::new(request.clone()))
                    .await
                {
                    Ok(_) => return Ok((begin.elapsed(), again)),
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        again += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(status) => return Err(status),
                }
            }
        });
    }
    let (latencies, retried) = collect(&mut tasks)
        .await
        .context("bare RegisterNamespace")?;
    Ok(Timed {
        latencies,
        total: started.elapsed(),
        retried,
    })
}

fn resource(name: &str, owner: &str) -> Namespace {
    let spec = NamespaceSpec {
        name: name.into(),
        owner: owner.into(),
        regions: vec!["us-east-1".into()],
        retention_days: 1,
        ..Default::default()
    };
    plinth_proto::namespace_resource(name, "bench", spec)
}

/// Each call's latency (ascending) and how many tries beyond the first they took in all.
async fn collect(
    tasks: &mut JoinSet<Result<(Duration, u32), tonic::Status>>,
) -> anyhow::Result<(Vec<Duration>, u32)> {
    let mut latencies = Vec::new();
    let mut retried = 0;
    while let Some(result) = tasks.join_next().await {
        let (latency, again) = result?.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        latencies.push(latency);
        retried += again;
    }
    latencies.sort();
    Ok((latencies, retried))
}
