//! `plinth worker`: the control-plane worker against any Temporal.

use std::sync::Arc;

use anyhow::Context;
use plinth_worker::PlinthWorker;

use crate::config::Config;
use crate::connect::ConnectArgs;
use crate::home::Home;
use crate::signals::shutdown_signal;

/// `plinth worker`: where Temporal is, and where to serve the worker's metrics.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Address of the worker's /metrics (overrides [worker] metrics_listen).
    #[arg(long)]
    metrics_listen: Option<String>,
    #[command(flatten)]
    temporal: ConnectArgs,
}

/// The longest `[worker] shutdown_grace`.
const MAX_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Runs the worker until SIGINT or SIGTERM, then lets in-flight tasks finish within
/// `[worker] shutdown_grace`.
pub async fn run(config: &Config, home: &Home, args: &WorkerArgs) -> anyhow::Result<()> {
    let (options, address, settings) = args.temporal.resolve(&config.temporal)?;
    anyhow::ensure!(
        config.worker.shutdown_grace <= MAX_SHUTDOWN_GRACE,
        "[worker] shutdown_grace: {} is longer than the {} allowed",
        humantime::format_duration(config.worker.shutdown_grace),
        humantime::format_duration(MAX_SHUTDOWN_GRACE)
    );
    let (listener, metrics_address) = crate::proxy::bind(
        args.metrics_listen.as_ref(),
        &config.worker.metrics_listen,
        "[worker] metrics_listen",
    )
    .await?;
    let metrics = crate::metrics::settings(&config.metrics)?;
    let app = crate::metrics::worker_app(metrics.latest.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(address = %metrics_address, "worker metrics listening (HTTP)");
    if config.backend.kind == crate::config::BackendKind::Cloud {
        // A missing or refused API key stops the worker here, not in every reconcile.
        let cloud = crate::platform::cloud(config, home)?;
        let identity = cloud.identity().await.context(
            "Temporal Cloud refused the worker's API key ([backend] api_key_file / api_key_env)",
        )?;
        // So is a proxy service account the account lacks.
        cloud.check_upstream().await?;
        tracing::info!(%identity, account = %config.backend.account, "Temporal Cloud backend");
        if config.backend.api_key_auth {
            tracing::warn!(
                "[backend] api_key_auth: namespaces accept API keys, so anyone Cloud gives access to \
                 a namespace can make a key and call it without the proxy (unencrypted, unchecked)"
            );
        }
    }
    let target = options.target.to_string();
    let connection = plinth_control::connect(options).await?;
    let directory_read_at = std::time::SystemTime::now();
    let (mut platform, _, _) =
        crate::platform::settings(config, home, &connection, &address, &settings).await?;
    if let Some(failures) = crate::fault::failed_reloads()? {
        tracing::warn!(
            failures,
            "fault injection: failing the first directory reloads"
        );
        platform.directory = Arc::new(crate::fault::FailedReloads::new(
            platform.directory,
            failures,
        ));
    }
    if config.keys.shred_delay.is_zero() {
        anyhow::bail!(
            "[keys] shred_delay: 0 would leave no time for `plinth keys restore` before a deleted \
             namespace's keys are destroyed; give it a duration (7d by default)"
        );
    }
    let keys = crate::codec::namespace_keys(config, home)?.map(|keys| {
        plinth_worker::NamespaceKeySettings {
            keys,
            shred_delay: config.keys.shred_delay,
        }
    });
    if config.audit.interval.is_zero() {
        anyhow::bail!("[audit] interval: must be more than 0");
    }
    let audit = plinth_worker::AuditShipping {
        destinations: config.audit.destinations(home)?.into_iter().collect(),
        interval: config.audit.interval,
    };
    for (name, destination) in &audit.destinations {
        tracing::info!(
            destination = name,
            url = destination.url(),
            "audit trail shipped"
        );
    }
    if config.export.interval.is_zero() {
        anyhow::bail!("[export] interval: must be more than 0");
    }
    let export = plinth_worker::HistoryExportSettings {
        destination: config.export.destination(home)?,
        interval: config.export.interval,
        visibility_lag: config.export.visibility_lag,
    };
    tracing::info!(url = export.destination.url(), "histories exported");
    let mut worker = PlinthWorker::start(
        connection, &settings, platform, metrics, keys, audit, export,
    )
    .await?;
    tokio::spawn(worker.follow_directory(crate::platform::DIRECTORY_POLL, directory_read_at));
    let shutdown = worker.shutdown_handle();
    let (signalled, on_signal) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no more polls; finishing in-flight tasks");
        shutdown();
        let _ = signalled.send(());
    });
    tracing::info!(
        temporal = %target,
        namespace = %settings.namespace,
        task_queue = %settings.task_queue,
        access_task_queue = %settings.access_task_queue(),
        "worker polling"
    );
    let grace = config.worker.shutdown_grace;
    let grace_over = async {
        match on_signal.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        ran = worker.run() => ran?,
        () = grace_over => {
            tracing::warn!(
                ?grace,
                "[worker] shutdown_grace is over with tasks still running; exiting (Temporal \
                 retries their activities when their timeouts expire)"
            );
            // Returning would wait for the runtime's blocking tasks (a hung KMS call, say).
            std::process::exit(0);
        }
    }
    tracing::info!("worker stopped");
    Ok(())
}
