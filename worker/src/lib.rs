//! The Plinth worker: connects to Temporal, makes sure the control-plane namespace exists,
//! registers every Plinth workflow and activity, and polls until shut down.

mod reloads;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use plinth_activities::{
    AccessActivities, AuditActivities, HistoryActivities, MetricsActivities, NamespaceActivities,
    ScrapeTargetSettings, WorkerActivities,
};
use plinth_control::contract::{DATA_STREAM, ScrapeTarget};
use plinth_control::directory::Directory;
use plinth_control::{
    BackendError, ControlPlane, ControlSettings, PlatformSettings, TemporalError, ensure_namespace,
};
use plinth_metrics::{DropRule, LatestSamples, RemoteWrite};
use plinth_proto::audit::AuditRecord;
use plinth_workflows::contracts::WorkerInfo;
use plinth_workflows::{AccessRunWorkflow, Canary, register_workflows};
use temporalio_client::NamespacedClient;
use temporalio_client::{Client, ClientOptions, Connection};
use temporalio_sdk::runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder};
use temporalio_sdk::runtime::{PollerBehavior, RuntimeOptions};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::reloads::Reloads;

/// Namespaces' own keys (`[keys] per_namespace`).
#[derive(Clone, Debug)]
pub struct NamespaceKeySettings {
    /// Where the keys are made and destroyed.
    pub keys: Arc<dyn plinth_codec::NamespaceKeys>,
    /// How long a namespace deleted with `spec.shredOnDelete` keeps its keys.
    pub shred_delay: Duration,
}

/// Metrics scraping: the targets by name, where their samples go, and what is left out.
#[derive(Clone, Debug, Default)]
pub struct MetricsSettings {
    /// Endpoints to scrape, each with its interval.
    pub targets: std::collections::HashMap<String, ScrapeTargetSettings>,
    /// A scrape without a whole answer by then is abandoned (resource targets; configured
    /// ones carry their own).
    pub scrape_timeout: Duration,
    /// The remote-write endpoint, if samples are sent anywhere.
    pub sink: Option<RemoteWrite>,
    /// Where each target's last scrape is kept for re-export.
    pub latest: LatestSamples,
    /// Series not to store.
    pub drop: Vec<DropRule>,
}

/// The audit trail's destinations by name (`[audit] destinations`), and how often each is
/// written to.
#[derive(Clone, Debug, Default)]
pub struct AuditShipping {
    /// Destinations by name.
    pub destinations: std::collections::HashMap<String, plinth_archive::Archive>,
    /// Time between shipments.
    pub interval: Duration,
}

/// Where closed workflows' histories are exported (`[export]`), and how often.
#[derive(Clone, Debug)]
pub struct HistoryExportSettings {
    /// The destination.
    pub destination: plinth_archive::Archive,
    /// Time between exports of a namespace.
    pub interval: Duration,
    /// How long a closed workflow takes to show in visibility.
    pub visibility_lag: Duration,
}

/// Polls of the access runs' queue, for workflow and for activity tasks each.
const ACCESS_RUN_POLLS: usize = 1;
/// Access runs' workflow tasks one worker runs at once. However many runs are due (every
/// namespace's, after a directory change), the rest wait in Temporal's backlog.
const ACCESS_RUN_TASKS: usize = 2;
/// Access runs' activities one worker runs at once: most plan no change and end within a
/// read, but an apply on a slow backend holds its slot for as long as it writes, so there are
/// enough that a few long applies leave room for every other namespace's runs.
const ACCESS_RUN_ACTIVITIES: usize = 32;

/// How long after a failed start of every access run it is tried again: each try starts
/// from the first schedule, so those started already buffer one more run each.
const RUNS_RETRY: Duration = Duration::from_secs(60);

/// Directory reloads the worker holds for the audit trail while it is out of reach; a process
/// that dies meanwhile loses them (the reload itself is in the worker's log).
const UNRECORDED_RELOADS: usize = 100;

/// Why the worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Connecting to Temporal or preparing the control-plane namespace failed.
    #[error(transparent)]
    Temporal(#[from] TemporalError),
    /// A destination's audit shipping workflow could not be started.
    #[error("audit destination {destination:?}: {source}")]
    Audit {
        /// The destination's name.
        destination: String,
        /// The control plane's error.
        source: BackendError,
    },
    /// A target's scraping workflow could not be started.
    #[error("metrics target {target:?}: {source}")]
    Scraping {
        /// The target.
        target: String,
        /// The control plane's error.
        source: BackendError,
    },
    /// The SDK refused the worker's configuration.
    #[error("worker setup failed: {0}")]
    Setup(String),
    /// The worker stopped with an error while running.
    #[error("worker stopped: {0}")]
    Run(#[from] temporalio_sdk::error::WorkerRunError),
}

/// A configured Plinth worker. [`PlinthWorker::run`] is not `Send`: drive it on a `LocalSet`
/// or with `select!`.
pub struct PlinthWorker {
    // Declared before the runtime so they are dropped first.
    worker: Worker,
    access_runs: Worker,
    _runtime: Runtime,
    directory: Arc<dyn Directory>,
    control: ControlPlane,
    /// The audit trail's destinations, and who this worker is in its records.
    trail: Vec<String>,
    actor: String,
}

impl std::fmt::Debug for PlinthWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlinthWorker")
            .field("task_queue", &self.worker.task_queue())
            .finish_non_exhaustive()
    }
}

impl PlinthWorker {
    /// Ensures the namespace exists, builds a worker for it and makes sure every metrics
    /// target is being scraped. Must be called inside a Tokio runtime.
    pub async fn start(
        connection: Connection,
        settings: &ControlSettings,
        platform: PlatformSettings,
        metrics: MetricsSettings,
        namespace_keys: Option<NamespaceKeySettings>,
        audit: AuditShipping,
        export: HistoryExportSettings,
    ) -> Result<Self, WorkerError> {
        ensure_namespace(&connection, &settings.namespace).await?;
        let setup = |e: &dyn std::fmt::Display| WorkerError::Setup(e.to_string());
        let runtime =
            Runtime::from_current_tokio(RuntimeOptions::default()).map_err(|e| setup(&e))?;
        let client = Client::new(
            connection,
            ClientOptions::new(settings.namespace.clone()).build(),
        )
        .map_err(|e| setup(&e))?;
        let actor = format!("worker:{}", client.identity());
        let info = WorkerInfo {
            identity: client.identity(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            namespace: settings.namespace.clone(),
            task_queue: settings.task_queue.clone(),
        };
        let control = ControlPlane::new(client.clone(), settings.task_queue.clone());
        let access = AccessActivities::new(
            platform.backend.clone(),
            platform.directory.clone(),
            control.clone(),
            platform.admin_group,
            platform.access_interval,
        );
        let directory = platform.directory.clone();
        let histories = HistoryActivities::new(
            platform.backend.clone(),
            control.clone(),
            export.destination,
            export.interval,
            export.visibility_lag,
        );
        let mut namespaces = NamespaceActivities::new(
            platform.backend.clone(),
            platform.directory,
            platform.rules,
            platform.resync_interval,
        );
        if let Some(NamespaceKeySettings { keys, shred_delay }) = namespace_keys {
            namespaces = namespaces.with_namespace_keys(keys, shred_delay);
        }
        let targets: Vec<ScrapeTarget> = metrics
            .targets
            .iter()
            .map(|(name, target)| ScrapeTarget {
                name: name.clone(),
                interval_secs: target.interval.as_secs(),
                resource: None,
            })
            .collect();
        let scraping = MetricsActivities::new(
            metrics.targets,
            metrics.scrape_timeout,
            metrics.sink,
            metrics.latest,
            metrics.drop,
            control.clone(),
        );
        let destinations: Vec<String> = audit.destinations.keys().cloned().collect();
        let destinations_kept = destinations.clone();
        let shipping = AuditActivities::new(
            audit.destinations,
            audit.interval,
            control.clone(),
            platform.backend.clone(),
        );
        // Registers the access runs too: runs a schedule started before it was moved to their
        // queue (or one not reconciled since) still come here.
        // Every new workflow's first task comes from the shared (not the sticky) queue, which
        // gets a fifth of the polls: two of them (of ten) admit a burst of applies about as
        // fast as Temporal finishes them (`plinth bench namespaces`); six, or autoscaled
        // polls, let more of the burst run at once, and each finished later.
        let options = register_workflows!(
            WorkerOptions::new(settings.task_queue.clone())
                .workflow_task_poller_behavior(PollerBehavior::SimpleMaximum(10))
        )
        .map_err(|e| setup(&e))?
        .register_activities(WorkerActivities::new(info))
        .register_activities(namespaces)
        .register_activities(access.clone())
        .register_activities(scraping)
        .register_activities(shipping.clone())
        .register_activities(histories)
        .build();
        let worker = Worker::new(&runtime, client.clone(), options).map_err(|e| setup(&e))?;
        // Access runs are a few events long: replayed whole, they need no cache and no sticky
        // queue of their own.
        let options = WorkerOptions::new(settings.access_task_queue())
            .max_cached_workflows(0)
            .workflow_task_poller_behavior(PollerBehavior::SimpleMaximum(ACCESS_RUN_POLLS))
            .activity_task_poller_behavior(PollerBehavior::SimpleMaximum(ACCESS_RUN_POLLS))
            .tuner(
                TunerHolder::builder()
                    .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(ACCESS_RUN_TASKS))
                    .activity_task_slot_supplier(FixedSizeSlotSupplier::new(ACCESS_RUN_ACTIVITIES))
                    .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(1))
                    .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(1))
                    .build(),
            )
            .register_workflow::<AccessRunWorkflow>()
            .map_err(|e| setup(&e))?
            .register_activities(access)
            .register_activities(shipping)
            .build();
        let access_runs = Worker::new(&runtime, client, options).map_err(|e| setup(&e))?;
        for target in targets {
            let name = target.name.clone();
            let scraped =
                control
                    .ensure_scraping(target)
                    .await
                    .map_err(|source| WorkerError::Scraping {
                        target: name.clone(),
                        source,
                    })?;
            if !scraped {
                tracing::warn!(target = %name, "a MetricsTarget resource has this [[metrics.targets]] entry's name and is scraped instead; rename the entry");
            }
        }
        for destination in destinations {
            for stream in ["", DATA_STREAM] {
                control
                    .ensure_audit_export(&destination, stream)
                    .await
                    .map_err(|source| WorkerError::Audit {
                        destination: destination.clone(),
                        source,
                    })?;
            }
        }
        Ok(Self {
            worker,
            access_runs,
            _runtime: runtime,
            directory,
            control,
            trail: destinations_kept,
            actor,
        })
    }

    /// Checks the directory for changes every `every`, and reads it again when someone ran
    /// `plinth directory reload` after (or about when) this worker first read it, at
    /// `read_at`, trying a failed read again until it succeeds. Each new version, and each
    /// reload read, starts every namespace's access run at once, tried again every
    /// [`RUNS_RETRY`] until Temporal takes them. An invalid version is logged once and the
    /// last good one stays in force. Runs until dropped; it is `Send`, so spawn it.
    pub fn follow_directory(
        &self,
        every: Duration,
        read_at: SystemTime,
    ) -> impl Future<Output = ()> + Send + use<> {
        let directory = self.directory.clone();
        let control = self.control.clone();
        let trail = self.trail.clone();
        let actor = self.actor.clone();
        async move {
            let mut ticks = tokio::time::interval(every);
            // A slow read delays the checks after it rather than bunching them.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Reloads the trail has not taken yet, tried again every tick (the same record, so
            // it is kept once).
            let mut unrecorded: std::collections::VecDeque<AuditRecord> = Default::default();
            let latest = control.last_directory_reload().await.ok().flatten();
            let mut reloads = Reloads::new(every, read_at, latest);
            // When the runs of a version Temporal did not take were last tried.
            let mut runs_owed: Option<tokio::time::Instant> = None;
            loop {
                ticks.tick().await;
                match control.last_directory_reload().await {
                    Ok(latest) => reloads.asked(latest),
                    Err(e) => tracing::debug!(error = %e, "directory reloads not checked"),
                }
                // A reload takes up the version it reads, which `refresh` then does not report
                // as new, so a reload read starts the runs itself.
                let reloaded = reloads.read_if_due(directory.as_ref()).await;
                for _ in 0..unrecorded.len() {
                    let Some(record) = unrecorded.pop_front() else {
                        break;
                    };
                    if control.record_change(&trail, record.clone()).await.is_err() {
                        unrecorded.push_back(record);
                    }
                }
                let refreshed = directory.refresh().unwrap_or_else(|e| {
                    tracing::error!(error = %e, "directory not reloaded; the previous one stays in force");
                    false
                });
                let changed = reloaded || refreshed;
                let retry = runs_owed.is_some_and(|tried| tried.elapsed() >= RUNS_RETRY);
                if !changed && !retry {
                    continue;
                }
                let detail = match control.trigger_all_access_runs().await {
                    Ok(runs) => {
                        runs_owed = None;
                        tracing::info!(runs, "directory changed: access runs started");
                        format!("{runs} access runs started")
                    }
                    Err(e) => {
                        runs_owed = Some(tokio::time::Instant::now());
                        tracing::warn!(error = %e, "directory changed: access runs not started; tried again in a minute");
                        "access runs not started yet; tried again every minute".to_owned()
                    }
                };
                if !changed {
                    continue;
                }
                let record =
                    AuditRecord::now(actor.clone(), "directory.reloaded", "directory", "reloaded")
                        .detail(detail);
                if let Err(e) = control.record_change(&trail, record.clone()).await {
                    tracing::error!(error = %e, "directory reload not recorded in the audit trail yet; tried again");
                    if unrecorded.len() == UNRECORDED_RELOADS {
                        unrecorded.pop_front();
                    }
                    unrecorded.push_back(record);
                }
            }
        }
    }

    /// A function that asks the worker to finish in-flight tasks and stop.
    pub fn shutdown_handle(&self) -> impl Fn() + use<> {
        let (worker, access_runs) = (
            self.worker.shutdown_handle(),
            self.access_runs.shutdown_handle(),
        );
        move || {
            worker();
            access_runs();
        }
    }

    /// Polls both task queues until shut down. When one stops with an error, the other is
    /// told to stop and the error returned at once: the process ends as it did with one queue.
    pub async fn run(&mut self) -> Result<(), WorkerError> {
        let stop_worker = self.worker.shutdown_handle();
        let stop_access_runs = self.access_runs.shutdown_handle();
        tokio::try_join!(
            run_or_stop(&mut self.worker, stop_access_runs),
            run_or_stop(&mut self.access_runs, stop_worker),
        )?;
        Ok(())
    }
}

/// Polls `worker`'s task queue until shut down; when it stops with an error, calls `stop_other`.
async fn run_or_stop(
    worker: &mut Worker,
    stop_other: impl Fn(),
) -> Result<(), temporalio_sdk::error::WorkerRunError> {
    let ran = worker.run().await;
    if let Err(e) = &ran {
        let task_queue = worker.task_queue().to_owned();
        tracing::error!(error = %e, task_queue, "a task queue stopped; the worker stops polling the other too");
        stop_other();
    }
    ran
}

/// Why a canary run did not prove the worker healthy.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    /// The client could not be built.
    #[error("client setup failed: {0}")]
    Client(String),
    /// Temporal refused to start the workflow.
    #[error("cannot start the Canary workflow: {0}")]
    Start(String),
    /// The workflow failed or its result could not be read.
    #[error("Canary workflow did not complete: {0}")]
    Result(String),
}

/// Runs the `Canary` workflow on `settings` and returns the report of the worker that ran it.
/// It completes only once a worker polls that task queue; bound it with a timeout.
pub async fn run_canary(
    connection: Connection,
    settings: &ControlSettings,
    workflow_id: &str,
    token: &str,
) -> Result<plinth_workflows::contracts::CanaryReport, CanaryError> {
    use temporalio_client::{
        WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowStartOptions,
    };

    let client = Client::new(
        connection,
        ClientOptions::new(settings.namespace.clone()).build(),
    )
    .map_err(|e| CanaryError::Client(e.to_string()))?;
    let options = WorkflowStartOptions::new(settings.task_queue.clone(), workflow_id.to_owned())
        .id_conflict_policy(WorkflowIdConflictPolicy::TerminateExisting)
        .build();
    let handle = client
        .start_workflow(Canary::run, token.to_owned(), options)
        .await
        .map_err(|e| CanaryError::Start(e.to_string()))?;
    handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .map_err(|e| CanaryError::Result(e.to_string()))
}
