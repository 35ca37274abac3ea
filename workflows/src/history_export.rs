use std::time::{Duration, SystemTime};

use plinth_control::contract::HistoryExportState;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::audit::forever;
use crate::contracts::{ExportHistories, ExportWindow, LoadExportSettings};
use crate::handover::{hand_over_when_long, wait_for_handlers};
use crate::provision_namespace::{UpdateError, local_activity};

/// The export of one namespace's closed workflows to `[export] destination`: workflow id
/// `history-export/<namespace>`, started when `spec.export.enabled` is applied. Every
/// `[export] interval` it exports the workflows that closed since the last export (all that
/// Temporal still keeps, the first time), and only then moves its mark, so a failed or
/// interrupted export is retried until it succeeds and no window is skipped. The `finish`
/// update (export disabled, namespace deleted) exports up to that moment and ends it.
#[workflow]
#[derive(Debug)]
pub struct HistoryExport {
    state: HistoryExportState,
    /// When `finish` was asked for (unix seconds).
    finish_at: Option<i64>,
    finished: bool,
}

#[workflow_methods]
impl HistoryExport {
    /// Starts from where the previous run stopped.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, state: HistoryExportState) -> Self {
        Self {
            state,
            finish_at: None,
            finished: false,
        }
    }

    /// Exports every interval until finished; returns where it stopped.
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<HistoryExportState> {
        let settings = ctx
            .execute_local_activity(LoadExportSettings, (), local_activity())
            .await?;
        let interval = Duration::from_secs(settings.interval_secs.max(1));
        let lag = Duration::from_secs(settings.lag_secs);
        loop {
            temporalio_sdk::workflows::select! {
                _ = ctx.timer(interval) => {},
                _ = ctx.wait_condition(|s| s.finish_at.is_some()) => {},
            };
            let through = match ctx.state(|s| s.finish_at) {
                Some(at) => {
                    // A workflow that closed just before the finish shows in visibility
                    // only after the lag.
                    if !lag.is_zero() {
                        ctx.timer(lag).await;
                    }
                    at
                }
                None => unix(ctx.workflow_time()) - lag.as_secs() as i64,
            };
            export_through(ctx, through).await?;
            // A finish asked for while that export ran is exported up to next, at once.
            let finishing = ctx.state(|s| s.finish_at);
            if let Some(at) = finishing {
                if ctx.state(|s| s.state.exported_through) < at {
                    continue;
                }
                ctx.state_mut(|s| s.finished = true);
                wait_for_handlers(ctx).await?;
                return Ok(ctx.state(|s| s.state.clone()));
            }
            hand_over_when_long(ctx, |s| s.state.clone()).await?;
        }
    }

    /// Exports every workflow closed until now, then ends the export; answers where it
    /// stopped.
    #[update]
    pub async fn finish(
        ctx: &mut WorkflowContext<Self>,
        _input: (),
    ) -> Result<HistoryExportState, UpdateError> {
        let now = unix(ctx.workflow_time());
        ctx.state_mut(|s| {
            s.finish_at.get_or_insert(now);
        });
        ctx.wait_condition(|s| s.finished).await?;
        Ok(ctx.state(|s| s.state.clone()))
    }
}

/// Exports the workflows closed between the mark and `through`, and moves the mark.
async fn export_through(
    ctx: &mut WorkflowContext<HistoryExport>,
    through: i64,
) -> WorkflowResult<()> {
    let window = ctx.state(|s| ExportWindow {
        namespace: s.state.temporal_namespace.clone(),
        from: s.state.exported_through,
        to: through,
    });
    if window.to <= window.from {
        return Ok(());
    }
    let report = ctx
        .execute_activity(ExportHistories, window, export_activity())
        .await?;
    ctx.state_mut(|s| {
        s.state.exported_through = through;
        s.state.workflows += report.workflows;
        s.state.objects += report.objects;
        s.state.bytes += report.bytes;
    });
    Ok(())
}

/// Retried until it succeeds: the mark does not move past a window not written. The
/// heartbeat carries the page reached, so a retry resumes there.
fn export_activity() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(3600))
        .heartbeat_timeout(Duration::from_secs(60))
        .retry_policy(forever(Duration::from_secs(300)))
        .build()
}

pub(crate) fn unix(time: Option<SystemTime>) -> i64 {
    time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}
