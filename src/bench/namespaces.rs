//! `plinth bench namespaces`: apply-to-Ready through Plinth against bare `RegisterNamespace`
//! calls on the same Temporal, in one run, as ratios (shared machines are noisy).

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use plinth_proto::phase;
use plinth_proto::v1::{ApplyNamespaceRequest, Namespace, NamespaceSpec, WatchNamespaceRequest};
use temporalio_client::tonic::Request;
use temporalio_common::protos::temporal::api::workflowservice::v1::RegisterNamespaceRequest;
use tokio::task::JoinSet;

use super::{DevStack, memory_of, ms, percentile, ratio};
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
}

/// Runs against the `plinth dev` of `$PLINTH_HOME`; use a fresh home, it leaves its
/// namespaces behind.
pub async fn namespaces(
    config: &Config,
    home: &Home,
    args: &BenchArgs,
) -> anyhow::Result<ExitCode> {
    let DevStack {
        temporal,
        worker_pid,
    } = DevStack::read(home)?;
    let run = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();

    let api = crate::client::connect(config, home).await?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..args.count {
        let mut api = api.clone();
        let resource = resource(&format!("bench-{run}-{i}"), &args.owner);
        tasks.spawn(async move {
            let begin = Instant::now();
            let name = resource
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            api.apply_namespace(ApplyNamespaceRequest {
                namespace: Some(resource),
                dry_run: false,
            })
            .await?;
            let mut stream = api
                .watch_namespace(WatchNamespaceRequest { name: name.clone() })
                .await?
                .into_inner();
            while let Some(update) = stream.message().await? {
                match update.status.map(|s| s.phase).as_deref() {
                    Some(phase::READY) => return Ok(begin.elapsed()),
                    Some(phase::FAILED) => break,
                    _ => {}
                }
            }
            Err(tonic::Status::internal(format!(
                "{name} did not become Ready"
            )))
        });
    }
    let plinth = collect(&mut tasks).await.context("plinth apply → Ready")?;
    let plinth_total = started.elapsed();

    let connection = super::connect(&temporal).await?;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..args.count {
        let mut service = connection.workflow_service();
        let request = RegisterNamespaceRequest {
            namespace: format!("bench-bare-{run}-{i}"),
            workflow_execution_retention_period: Some(Duration::from_secs(86_400).try_into()?),
            ..Default::default()
        };
        tasks.spawn(async move {
            let begin = Instant::now();
            // The frontend rate-limits bursts; a client retries, and so the wait counts.
            loop {
                match service
                    .register_namespace(Request::new(request.clone()))
                    .await
                {
                    Ok(_) => return Ok(begin.elapsed()),
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(status) => return Err(status),
                }
            }
        });
    }
    let bare = collect(&mut tasks)
        .await
        .context("bare RegisterNamespace")?;
    let bare_total = started.elapsed();

    let (rss, peak) = memory_of(worker_pid)?;
    let (p50, p99) = (percentile(&plinth, 50), percentile(&plinth, 99));
    let (bare_p50, bare_p99) = (percentile(&bare, 50), percentile(&bare, 99));
    println!("{} namespaces, all at once, on {temporal}\n", args.count);
    println!("{:<34} {:>10} {:>10} {:>10}", "", "p50", "p99", "total");
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "plinth apply → Ready",
        ms(p50),
        ms(p99),
        ms(plinth_total)
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "bare RegisterNamespace",
        ms(bare_p50),
        ms(bare_p99),
        ms(bare_total)
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "ratio (plinth / bare)",
        ratio(p50, bare_p50),
        ratio(p99, bare_p99),
        ratio(plinth_total, bare_total)
    );
    println!("\nworker RSS {rss} MiB now, {peak} MiB peak (pid {worker_pid})");
    Ok(ExitCode::SUCCESS)
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

async fn collect(
    tasks: &mut JoinSet<Result<Duration, tonic::Status>>,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies.push(result?.map_err(|s| anyhow::anyhow!("{}", s.message()))?);
    }
    latencies.sort();
    Ok(latencies)
}
