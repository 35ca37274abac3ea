use std::time::Duration;

use serde::{Deserialize, Serialize};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ContinueAsNewOptions, WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::contracts::{ScrapeMetrics, ScrapeRun, ScrapeSummary};

/// Scrapes per run: an hour of history per run at the default interval.
pub const SCRAPES_PER_RUN: u32 = 60;

/// A scrape run that stops heartbeating (its worker died) is retried after this.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Workflow id of a target's scraping.
pub fn scrape_workflow_id(target: &str) -> String {
    format!("metrics/{target}")
}

/// A target to scrape and how often.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrapeTarget {
    /// `[[metrics.targets]] name`.
    pub name: String,
    /// Seconds between scrapes.
    pub interval_secs: u64,
}

/// Scrapes one target for as long as it is configured: runs of [`SCRAPES_PER_RUN`] scrapes,
/// each a heartbeating activity, then continues as new so history stays short.
#[workflow]
#[derive(Debug)]
pub struct ScrapeMetricsWorkflow {
    target: ScrapeTarget,
}

#[workflow_methods]
impl ScrapeMetricsWorkflow {
    /// `target` is what to scrape.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, target: ScrapeTarget) -> Self {
        Self { target }
    }

    /// Scrapes, then continues as new; ends only when the activity refuses for good (the
    /// target is no longer configured), with that failure.
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<ScrapeSummary> {
        let target = ctx.state(|s| s.target.clone());
        let run = ScrapeRun {
            target: target.name.clone(),
            scrapes: SCRAPES_PER_RUN,
        };
        let interval = Duration::from_secs(target.interval_secs.max(1));
        // Room for every scrape of the run, with retries of the sink in between.
        let timeout = interval * SCRAPES_PER_RUN * 2 + Duration::from_secs(600);
        let options = ActivityOptions::with_start_to_close_timeout(timeout)
            .heartbeat_timeout(HEARTBEAT_TIMEOUT)
            .build();
        ctx.execute_activity(ScrapeMetrics, run, options).await?;
        match ctx.continue_as_new(target, ContinueAsNewOptions::default())? {}
    }
}
