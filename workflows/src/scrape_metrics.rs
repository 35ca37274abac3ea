use std::time::Duration;

use plinth_control::contract::{KIND_ATTRIBUTE, PHASE_ATTRIBUTE, RESOURCE_MEMO, ScrapeTarget};
use plinth_proto::v1::{MetricsTarget, MetricsTargetStatus};
use plinth_proto::{FieldError, outcome, phase, validate_metrics_target};
use serde::{Deserialize, Serialize};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityCancellationType, ActivityOptions, CancellableFuture, SyncWorkflowContext,
    WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::audit::{self, By, Deleter, spec_json};
use crate::contracts::{ScrapeMetrics, ScrapeRun, ScrapeSummary};
use crate::handover::{hand_over, wait_for_handlers};
use crate::provision_namespace::UpdateError;

/// Scrapes per run: an hour of history per run at the default interval.
pub const SCRAPES_PER_RUN: u32 = 60;

/// A scrape run that stops heartbeating (its worker died) is retried after this.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// What an `apply` of a metrics target answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsTargetApplied {
    /// `created`, `configured` or `unchanged`.
    pub outcome: String,
    /// The resource after the apply.
    pub resource: MetricsTarget,
}

/// Scrapes one target for as long as it exists: runs of [`SCRAPES_PER_RUN`] scrapes, each a
/// heartbeating activity, then continues as new so history stays short.
///
/// A target applied as a `MetricsTarget` resource is changed and deleted by Updates: the run
/// in progress is cancelled and the next starts from the new spec; its resource, with status,
/// is published in the memo. A target from the worker's configuration follows that
/// configuration instead.
#[workflow]
#[derive(Debug)]
pub struct ScrapeMetricsWorkflow {
    target: ScrapeTarget,
    /// Started by the apply now answering: that apply created the resource.
    fresh: bool,
    /// The resource changed: the run in progress stops and the next uses the new spec.
    restart: bool,
    deleted: bool,
    /// Who asked for the deletion.
    deleted_by: Option<String>,
}

#[workflow_methods]
impl ScrapeMetricsWorkflow {
    /// `target` is what to scrape.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, mut target: ScrapeTarget) -> Self {
        let mut fresh = false;
        if let Some(resource) = &mut target.resource {
            let metadata = resource.metadata.get_or_insert_default();
            metadata.generation = metadata.generation.max(1);
            let generation = metadata.generation;
            fresh = resource.status.is_none();
            let status = resource.status.get_or_insert_default();
            status.phase = phase::SCRAPING.into();
            status.observed_generation = generation;
        }
        Self {
            target,
            fresh,
            restart: false,
            deleted: false,
            deleted_by: None,
        }
    }

    /// Scrapes, then continues as new. Ends when its resource is deleted, or when the
    /// activity refuses for good (a configured target no longer is), with that failure.
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<ScrapeSummary> {
        publish(ctx);
        let target = ctx.state(|s| s.target.clone());
        let run = ScrapeRun {
            target: target.name.clone(),
            spec: target.resource.as_ref().map(MetricsTarget::spec_or_default),
            scrapes: SCRAPES_PER_RUN,
        };
        let interval = Duration::from_secs(target.interval_secs.max(1));
        // Room for every scrape of the run, with retries of the sink in between.
        let timeout = interval * SCRAPES_PER_RUN * 2 + Duration::from_secs(600);
        let options = ActivityOptions::with_start_to_close_timeout(timeout)
            .heartbeat_timeout(HEARTBEAT_TIMEOUT)
            // The next run must not start while this one still scrapes.
            .cancellation_type(ActivityCancellationType::WaitCancellationCompleted)
            .build();
        let summary = {
            let mut scraping = std::pin::pin!(ctx.execute_activity(ScrapeMetrics, run, options));
            let finished = temporalio_sdk::workflows::select! {
                summary = scraping.as_mut() => Some(summary),
                _ = ctx.wait_condition(|s| s.restart || s.deleted) => None,
            };
            match finished {
                Some(summary) => Some(summary?),
                None => {
                    scraping.cancel();
                    let _ = scraping.as_mut().await;
                    None
                }
            }
        };
        if let Some(summary) = &summary {
            ctx.state_mut(|s| s.ran(summary));
        }
        if ctx.state(|s| s.deleted) {
            ctx.state_mut(|s| s.set_phase(phase::DELETED, "scraping stopped"));
            publish(ctx);
            let by = ctx.state(|s| s.deleted_by.clone());
            if audit::records(ctx, by.as_deref()) {
                let (name, spec) = ctx.state(|s| {
                    let resource = s.target.resource.clone().unwrap_or_default();
                    (s.target.name.clone(), resource.spec_or_default())
                });
                let actor = audit::actor(ctx, by.as_deref());
                let record = audit::new_record(
                    ctx,
                    actor,
                    "metrics_target.deleted",
                    format!("metrics_target/{name}"),
                    "deleted",
                )
                .change(Some(spec_json(spec)), None);
                audit::record(ctx, vec![record]).await?;
            }
            wait_for_handlers(ctx).await?;
            return Ok(summary.unwrap_or_default());
        }
        match hand_over(ctx, |s| s.target.clone()).await? {}
    }

    /// Creates or changes the resource, as `applying.by` asks; a changed spec takes effect
    /// within a heartbeat. Answers once the change is in the audit trail.
    #[update]
    pub async fn apply(
        ctx: &mut WorkflowContext<Self>,
        applying: By<MetricsTarget>,
    ) -> Result<MetricsTargetApplied, UpdateError> {
        let By { input: desired, by } = applying;
        let before = ctx.state(|s| s.target.resource.as_ref().and_then(|r| r.spec.clone()));
        let applied = ctx.state_mut(|s| s.accept(desired))?;
        if applied.outcome != outcome::UNCHANGED && audit::records(ctx, by.as_deref()) {
            let before = before.filter(|_| applied.outcome != outcome::CREATED);
            let actor = audit::actor(ctx, by.as_deref());
            let record = audit::new_record(
                ctx,
                actor,
                "metrics_target.applied",
                format!("metrics_target/{}", applied.resource.name()),
                &applied.outcome,
            )
            .change(
                before.map(spec_json),
                Some(spec_json(applied.resource.spec_or_default())),
            );
            audit::record(ctx, vec![record]).await?;
        }
        Ok(applied)
    }

    /// Stops scraping the resource and ends the workflow; `by` is who asks.
    #[update]
    pub fn delete(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        by: Deleter,
    ) -> Result<MetricsTarget, UpdateError> {
        if self.target.resource.is_none() {
            return Err(format!(
                "metrics target {:?} is declared in the worker's configuration: remove it there",
                self.target.name
            )
            .into());
        }
        self.deleted = true;
        self.deleted_by = by.0;
        self.set_phase(phase::DELETING, "deletion requested");
        Ok(self.target.resource.clone().unwrap_or_default())
    }
}

impl ScrapeMetricsWorkflow {
    /// Takes a desired resource: decides the outcome, and restarts scraping on a change.
    fn accept(&mut self, desired: MetricsTarget) -> Result<MetricsTargetApplied, UpdateError> {
        validate_metrics_target(&desired)?;
        let name = self.target.name.clone();
        let Some(resource) = &mut self.target.resource else {
            return Err(format!(
                "metrics target {name:?} is declared in the worker's configuration \
                 ([[metrics.targets]]): give the resource another name"
            )
            .into());
        };
        if desired.name() != name {
            return Err(FieldError {
                field: "metadata.name".into(),
                message: format!("{:?} sent to the workflow of {name:?}", desired.name()),
            }
            .into());
        }
        if self.deleted {
            return Err(format!("metrics target {name:?} is being deleted").into());
        }
        let same = resource.spec == desired.spec;
        let outcome = if same && std::mem::take(&mut self.fresh) {
            outcome::CREATED
        } else if same {
            outcome::UNCHANGED
        } else {
            let metadata = resource.metadata.get_or_insert_default();
            metadata.generation += 1;
            if let Some(group) = desired.metadata.map(|m| m.namespace) {
                metadata.namespace = group;
            }
            resource.spec = desired.spec;
            self.target.interval_secs = resource.spec_or_default().interval_secs();
            self.restart = true;
            outcome::CONFIGURED
        };
        Ok(MetricsTargetApplied {
            outcome: outcome.into(),
            resource: resource.clone(),
        })
    }

    fn status_mut(&mut self) -> Option<&mut MetricsTargetStatus> {
        let resource = self.target.resource.as_mut()?;
        Some(resource.status.get_or_insert_default())
    }

    fn set_phase(&mut self, new_phase: &str, message: &str) {
        if let Some(status) = self.status_mut() {
            status.phase = new_phase.into();
            status.message = message.into();
        }
    }

    /// Records a finished run: its last failure, if any, is what the status says.
    fn ran(&mut self, summary: &ScrapeSummary) {
        if let Some(status) = self.status_mut() {
            status.message = summary.last_error.clone().unwrap_or_default();
        }
    }
}

/// Publishes a resource target for `plinth get metricstargets`: search attributes and memo.
fn publish(ctx: &mut WorkflowContext<ScrapeMetricsWorkflow>) {
    let Some(resource) = ctx.state(|s| s.target.resource.clone()) else {
        return;
    };
    let current_phase = resource.status.as_ref().map(|s| s.phase.clone());
    ctx.upsert_search_attributes([
        KIND_ATTRIBUTE.value_set(plinth_proto::KIND_METRICS_TARGET.to_owned()),
        PHASE_ATTRIBUTE.value_set(current_phase.unwrap_or_default()),
    ]);
    let _ = ctx.upsert_memo([(
        RESOURCE_MEMO,
        Some(temporalio_common::MemoValue::new(resource)),
    )]);
}
