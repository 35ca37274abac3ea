//! `plinth bench archive`: the audit trail's shipping through the running `plinth dev`
//! (records per second, next to writing the same batches straight to storage), and the cost
//! of exporting closed workflows' histories (next to only reading them from Temporal).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use futures::StreamExt as _;
use plinth_archive::Archive;
use plinth_control::{ControlPlane, NamespaceBackend, SelfHosted};
use plinth_proto::audit::AuditRecord;
use plinth_proto::v1::NamespaceSpec;
use plinth_workflows::contracts::ExportWindow;
use temporalio_client::{Client, UntypedWorkflow, WorkflowTerminateOptions};
use temporalio_common::protos::temporal::api::common::v1::{
    Payload, Payloads, WorkflowExecution, WorkflowType,
};
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    StartWorkflowExecutionRequest, TerminateWorkflowExecutionRequest,
};
use tokio::task::JoinSet;

use super::{DevStack, connect, count_workflows, cpu_time, ms};
use crate::config::Config;
use crate::home::Home;

#[derive(Debug, clap::Args)]
pub struct ArchiveBenchArgs {
    /// Audit records shipped.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Closed workflows exported.
    #[arg(long, default_value_t = 10_000)]
    workflows: usize,
    /// Callers at once, appending records and making workflows.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// Records handed to the trail at once, as the data path's sender does.
const RECORDS_PER_APPEND: usize = 200;
/// The share of records that must be in storage to stop the clock: the last partial batch
/// waits for the destination's interval, which is no measure of throughput.
const SHIPPED_SHARE: f64 = 0.9;

pub async fn archive(
    config: &Config,
    home: &Home,
    args: &ArchiveBenchArgs,
) -> anyhow::Result<ExitCode> {
    let dev = DevStack::read(home)?;
    let connection = connect(&dev.temporal).await?;
    let control = ControlPlane::connect(
        connection.clone(),
        &config.temporal.namespace,
        &config.temporal.task_queue,
    )?;
    let client = control.client().clone();
    println!(
        "plinth bench archive: {} audit records, {} closed workflows\n",
        args.records, args.workflows
    );
    audit(home, &control, &client, args).await?;
    let backend = SelfHosted::new(connection, dev.temporal.clone());
    export(&backend, args).await?;
    Ok(ExitCode::SUCCESS)
}

async fn audit(
    home: &Home,
    control: &ControlPlane,
    client: &Client,
    args: &ArchiveBenchArgs,
) -> anyhow::Result<()> {
    let run = format!("bench-{}", std::process::id());
    let records: Vec<AuditRecord> = (0..args.records)
        .map(|i| {
            AuditRecord::now(
                "user:bench@example.com",
                "bench.recorded",
                "bench",
                "recorded",
            )
            .detail(format!("{run} record {i} {}", "x".repeat(200)))
        })
        .collect();
    // Baseline: the same batches written straight to a local directory.
    let scratch = tempfile::tempdir()?;
    let direct = Archive::open(&format!("file://{}", scratch.path().display()))?;
    let started = Instant::now();
    for (batch, chunk) in records.chunks(RECORDS_PER_APPEND).enumerate() {
        plinth_archive::audit::write_batch(&direct, "", batch as u64, chunk).await?;
    }
    let written = started.elapsed();
    // Through the trail: appended to the running worker's exporter, shipped by it to the dev
    // archive (stream `bench-<pid>`, apart from real records).
    let archive = Archive::open(
        &plinth_archive::directory_url(&home.archive_dir()).context("the dev archive")?,
    )?;
    let stream = run.clone();
    let started = Instant::now();
    let mut callers = JoinSet::new();
    let chunks: Vec<Vec<AuditRecord>> = records
        .chunks(RECORDS_PER_APPEND)
        .map(<[_]>::to_vec)
        .collect();
    let per_caller = chunks.len().div_ceil(args.concurrency.max(1));
    for share in chunks.chunks(per_caller.max(1)) {
        let share = share.to_vec();
        let control = control.clone();
        let stream = stream.clone();
        callers.spawn(async move {
            for chunk in share {
                // Refused while the exporter holds all it may: wait, and hand it over again.
                while control
                    .append_audit("local", &stream, chunk.clone())
                    .await
                    .is_err()
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done?;
    }
    let appended = started.elapsed();
    let want = (args.records as f64 * SHIPPED_SHARE) as usize;
    let shipped = loop {
        let count = shipped_records(&archive, &stream).await?;
        if count >= want {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "only {count} of {} records shipped after 10 minutes",
                args.records
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let id = plinth_control::contract::audit_workflow_id("local", &stream);
    let _ = client
        .get_workflow_handle::<UntypedWorkflow>(id)
        .terminate(WorkflowTerminateOptions::default())
        .await;
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "audit trail, {} records of {} bytes each (as JSON)",
        args.records,
        serde_json::to_vec(&records[0])?.len()
    );
    println!("| path | records/s | vs direct |");
    println!("|---|---:|---:|");
    let direct_rate = rate(args.records, written);
    println!(
        "| write_batch to a local directory (baseline) | {:.0} | 1.00 |",
        direct_rate
    );
    let appended_rate = rate(args.records, appended);
    println!(
        "| appended to the trail (taken, durable in Temporal) | {appended_rate:.0} | {:.2} |",
        appended_rate / direct_rate
    );
    let shipped_rate = rate(want, shipped);
    println!(
        "| shipped by AuditExport to the dev archive ({:.0}% in storage) | {shipped_rate:.0} | {:.2} |\n",
        SHIPPED_SHARE * 100.0,
        shipped_rate / direct_rate
    );
    Ok(())
}

/// Records of `stream` in `archive`'s trail.
async fn shipped_records(archive: &Archive, stream: &str) -> anyhow::Result<usize> {
    let mut count = 0;
    let marker = format!("/{stream}-");
    for key in archive.list(plinth_archive::audit::PREFIX).await? {
        if !key.contains(&marker) {
            continue;
        }
        if let Some(bytes) = archive.get(&key).await? {
            count += plinth_archive::audit::decode(archive, &key, &bytes)?.len();
        }
    }
    Ok(count)
}

async fn export(backend: &SelfHosted, args: &ArchiveBenchArgs) -> anyhow::Result<()> {
    let namespace = format!("bench-export-{}", std::process::id());
    backend
        .register(&NamespaceSpec {
            name: namespace.clone(),
            owner: "bench@example.com".into(),
            retention_days: 1,
            description: "plinth bench archive".into(),
            ..Default::default()
        })
        .await?;
    let from = unix(SystemTime::now()) - 1;
    make_closed_workflows(backend, &namespace, args).await?;
    let to = unix(SystemTime::now()) + 1;
    let window = ExportWindow {
        namespace: namespace.clone(),
        from,
        to,
    };
    // Baseline: every closed workflow listed and its history read, nothing written.
    let (wall, cpu) = (Instant::now(), cpu_time()?);
    let mut page = Vec::new();
    let mut fetched = 0;
    let mut read_bytes = 0;
    loop {
        let listed = backend.closed_workflows(&namespace, from, to, page).await?;
        // As many at once as the export reads.
        let mut reads = futures::stream::iter(listed.workflows)
            .map(|workflow| {
                let namespace = namespace.clone();
                async move {
                    backend
                        .history(&namespace, &workflow.workflow_id, &workflow.run_id)
                        .await
                }
            })
            .buffered(plinth_activities::FETCHES_AT_ONCE);
        while let Some(read) = reads.next().await {
            let history = read?.context("a history gone while read")?;
            read_bytes += prost::Message::encoded_len(&history);
            fetched += 1;
        }
        page = listed.next_page;
        if page.is_empty() {
            break;
        }
    }
    let (fetch_wall, fetch_cpu) = (wall.elapsed(), cpu_time()? - cpu);
    let scratch = tempfile::tempdir()?;
    let destination = Archive::open(&format!("file://{}", scratch.path().display()))?;
    let (wall, cpu) = (Instant::now(), cpu_time()?);
    let report = plinth_activities::export_histories(backend, &destination, window)
        .await
        .map_err(|e| anyhow::anyhow!("export: {e:?}"))?;
    let (export_wall, export_cpu) = (wall.elapsed(), cpu_time()? - cpu);
    backend.delete(&namespace).await?;
    if report.workflows as usize != args.workflows || fetched != args.workflows {
        bail!(
            "exported {} and read {fetched} of {} closed workflows",
            report.workflows,
            args.workflows
        );
    }
    println!(
        "history export, {} closed workflows (this process's CPU; Temporal's is not counted)",
        args.workflows
    );
    println!("| path | wall | CPU | bytes | objects | wall vs read-only | CPU vs read-only |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| list + read every history (baseline) | {} | {} | {read_bytes} | 0 | 1.00 | 1.00 |",
        ms(fetch_wall),
        ms(fetch_cpu)
    );
    println!(
        "| ExportHistories to a local directory | {} | {} | {} | {} | {:.2} | {:.2} |",
        ms(export_wall),
        ms(export_cpu),
        report.bytes,
        report.objects,
        export_wall.as_secs_f64() / fetch_wall.as_secs_f64().max(1e-9),
        export_cpu.as_secs_f64() / fetch_cpu.as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// Starts `args.workflows` workflows of 1 KiB input in `namespace` and terminates each, then
/// waits until visibility lists them all closed.
async fn make_closed_workflows(
    backend: &SelfHosted,
    namespace: &str,
    args: &ArchiveBenchArgs,
) -> anyhow::Result<()> {
    let connection = backend.connection().clone();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut callers = JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let connection = connection.clone();
        let next = next.clone();
        let namespace = namespace.to_owned();
        let total = args.workflows;
        callers.spawn(async move {
            let mut service = connection.workflow_service();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                let id = format!("bench-{i}");
                service
                    .start_workflow_execution(tonic::Request::new(StartWorkflowExecutionRequest {
                        namespace: namespace.clone(),
                        workflow_id: id.clone(),
                        workflow_type: Some(WorkflowType {
                            name: "Bench".into(),
                        }),
                        task_queue: Some(TaskQueue {
                            name: "nobody".into(),
                            ..Default::default()
                        }),
                        input: Some(Payloads {
                            payloads: vec![Payload {
                                metadata: [("encoding".to_owned(), b"binary/plain".to_vec())]
                                    .into(),
                                data: vec![7; 1024],
                                ..Default::default()
                            }],
                        }),
                        request_id: format!("bench-{i}"),
                        ..Default::default()
                    }))
                    .await?;
                service
                    .terminate_workflow_execution(tonic::Request::new(
                        TerminateWorkflowExecutionRequest {
                            namespace: namespace.clone(),
                            workflow_execution: Some(WorkflowExecution {
                                workflow_id: id,
                                run_id: String::new(),
                            }),
                            reason: "bench".into(),
                            ..Default::default()
                        },
                    ))
                    .await?;
            }
        });
    }
    while let Some(done) = callers.join_next().await {
        done??;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let count = count_workflows(
            &connection,
            namespace,
            "ExecutionStatus != 'Running'".into(),
        )
        .await?;
        if count as usize >= args.workflows {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "visibility lists {count} of {} closed workflows",
                args.workflows
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn unix(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
