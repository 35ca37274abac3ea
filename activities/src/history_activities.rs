use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use plinth_archive::Archive;
use plinth_archive::history::{self, CUT_AT_BYTES};
use plinth_control::{BackendError, ControlPlane, NamespaceBackend, progress};
use plinth_proto::v1::ExportedWorkflow;
use plinth_workflows::contracts::{
    ExportHistories, ExportReport, ExportSettings, ExportWindow, HistoryExportSetting,
    LoadExportSettings, SetHistoryExport,
};
use serde::{Deserialize, Serialize};
use temporalio_common::error::ApplicationFailure;
use temporalio_common::protos::temporal::api::history::v1::History;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::access_activities::failure;
use crate::heartbeat::with_heartbeat;

/// An export failure, retried whatever its cause: the export's mark must not move past a
/// window not written, and the workflow must not end over it.
fn retried(error: impl std::error::Error + Send + Sync + 'static) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(error))
}

/// Histories fetched at once while exporting.
pub const FETCHES_AT_ONCE: usize = 4;

/// The activities of `HistoryExport`, and of the namespace setting it up.
#[derive(Debug, Clone)]
pub struct HistoryActivities {
    backend: Arc<dyn NamespaceBackend>,
    control: ControlPlane,
    destination: Archive,
    interval: Duration,
    lag: Duration,
}

impl HistoryActivities {
    /// Exports the closed workflows `backend` keeps to `destination`, every `interval`, each
    /// once it has been closed for `lag`; exports are started and finished through `control`.
    pub fn new(
        backend: Arc<dyn NamespaceBackend>,
        control: ControlPlane,
        destination: Archive,
        interval: Duration,
        lag: Duration,
    ) -> Self {
        Self {
            backend,
            control,
            destination,
            interval,
            lag,
        }
    }
}

/// How far an export got: the heartbeat's detail, from which a retry resumes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Reached {
    /// The page to list next.
    page: Vec<u8>,
    /// The number of the next object part.
    part: u32,
    report: ExportReport,
}

#[activities]
impl HistoryActivities {
    /// The worker's `[export]` settings.
    #[activity(definition = LoadExportSettings)]
    pub async fn load_export_settings(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<ExportSettings, ActivityError> {
        Ok(ExportSettings {
            interval_secs: self.interval.as_secs().max(1),
            lag_secs: self.lag.as_secs(),
        })
    }

    /// Starts or finishes the namespace's export (on Temporal Cloud, its export sink).
    #[activity(definition = SetHistoryExport)]
    pub async fn set_history_export(
        self: Arc<Self>,
        ctx: ActivityContext,
        setting: HistoryExportSetting,
    ) -> Result<String, ActivityError> {
        let temporal = self.backend.temporal_name(&setting.namespace);
        let work = async {
            if self
                .backend
                .export_by_backend(&setting.namespace, setting.enabled)
                .await?
            {
                // The backend's export is in a bucket Plinth only reads.
                return Ok((String::new(), false));
            }
            if setting.enabled {
                let started = self
                    .control
                    .ensure_history_export(&setting.name, &temporal)
                    .await?;
                let change = if started {
                    "history export started".to_owned()
                } else {
                    String::new()
                };
                return Ok((change, true));
            }
            let finished = self.control.finish_history_export(&setting.name).await?;
            let change = finished.map_or(String::new(), |state| {
                format!(
                    "history export finished: {} workflows exported",
                    state.workflows
                )
            });
            Ok((change, true))
        };
        let (change, plinths) = with_heartbeat(ctx, work).await.map_err(failure)?;
        if setting.deleted && plinths {
            history::mark_deleted(&self.destination, &temporal, std::time::SystemTime::now())
                .await
                .map_err(retried)?;
        }
        Ok(change)
    }

    /// Writes the histories of the workflows that closed in the window, a page at a time.
    #[activity(definition = ExportHistories)]
    pub async fn export_histories(
        self: Arc<Self>,
        ctx: ActivityContext,
        window: ExportWindow,
    ) -> Result<ExportReport, ActivityError> {
        with_heartbeat(
            ctx,
            export_histories(self.backend.as_ref(), &self.destination, window),
        )
        .await
    }
}

/// Writes the histories of the workflows of `window` that `backend` keeps to `destination`, a
/// page at a time; in an activity, each page reached is its heartbeat, and a retry resumes
/// from the last.
pub async fn export_histories(
    backend: &dyn NamespaceBackend,
    destination: &Archive,
    window: ExportWindow,
) -> Result<ExportReport, ActivityError> {
    let export = Export {
        backend,
        destination,
    };
    export.run(window).await
}

struct Export<'a> {
    backend: &'a dyn NamespaceBackend,
    destination: &'a Archive,
}

impl Export<'_> {
    async fn run(&self, window: ExportWindow) -> Result<ExportReport, ActivityError> {
        let mut reached: Reached = progress::resumed()
            .and_then(|detail| serde_json::from_str(&detail).ok())
            .unwrap_or_default();
        loop {
            let page = self
                .backend
                .closed_workflows(
                    &window.namespace,
                    window.from,
                    window.to,
                    reached.page.clone(),
                )
                .await
                .map_err(retried)?;
            // Histories are written as they arrive: at most a few fetched and one object's
            // worth held at once, however large the page's histories are.
            let mut fetched = futures::stream::iter(page.workflows)
                .map(|entry| self.fetch(&window.namespace, entry))
                .buffered(FETCHES_AT_ONCE);
            let mut part = Vec::new();
            let mut bytes = 0;
            while let Some(result) = fetched.next().await {
                let Some((entry, history)) = result? else {
                    reached.report.skipped += 1;
                    continue;
                };
                bytes += prost::Message::encoded_len(&history);
                part.push((entry, history));
                if bytes >= CUT_AT_BYTES {
                    self.write(&window, &mut reached, std::mem::take(&mut part))
                        .await?;
                    bytes = 0;
                }
            }
            self.write(&window, &mut reached, part).await?;
            reached.page = page.next_page;
            // A retry goes on from the next page: what is written stays written.
            let detail = serde_json::to_string(&reached).expect("progress serializes");
            progress::record(&detail).await;
            if reached.page.is_empty() {
                return Ok(reached.report);
            }
        }
    }

    /// One workflow's history; `None` when it is gone (deleted since it was listed) or larger
    /// than Temporal keeps, which is logged and skipped rather than holding every later
    /// workflow back. Any other refusal is retried: the mark never moves past it.
    async fn fetch(
        &self,
        namespace: &str,
        entry: ExportedWorkflow,
    ) -> Result<Option<(ExportedWorkflow, History)>, ActivityError> {
        match self
            .backend
            .history(namespace, &entry.workflow_id, &entry.run_id)
            .await
        {
            Ok(history) => Ok(history.map(|history| (entry, history))),
            Err(BackendError::TooLarge(reason)) => {
                tracing::error!(
                    namespace,
                    workflow_id = entry.workflow_id,
                    run_id = entry.run_id,
                    %reason,
                    "history not exported"
                );
                Ok(None)
            }
            Err(e) => Err(retried(e)),
        }
    }

    async fn write(
        &self,
        window: &ExportWindow,
        reached: &mut Reached,
        part: Vec<(ExportedWorkflow, History)>,
    ) -> Result<(), ActivityError> {
        if part.is_empty() {
            return Ok(());
        }
        let count = part.len() as u64;
        // The same window and part always make the same name: a rewrite replaces.
        let id = format!("plinth-{}-{}-{:05}", window.from, window.to, reached.part);
        let written = history::write(self.destination, &window.namespace, &id, part)
            .await
            .map_err(retried)?;
        tracing::info!(
            namespace = window.namespace,
            workflows = count,
            objects = written.objects,
            bytes = written.bytes,
            "histories exported"
        );
        reached.part += 1;
        reached.report.workflows += count;
        reached.report.objects += written.objects;
        reached.report.bytes += written.bytes;
        Ok(())
    }
}
