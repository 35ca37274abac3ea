use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plinth_metrics::{
    DropRule, LatestSamples, Managed, Relabel, RemoteWrite, ScrapeError, Scraper, SendReport,
};
use plinth_proto::v1::Namespace;
use plinth_workflows::contracts::{ScrapeMetrics, ScrapeRun, ScrapeSummary};
use serde::{Deserialize, Serialize};
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::control::ControlPlane;
use crate::telemetry::{self, Scrape};

/// How often a waiting scrape run tells Temporal it is alive (well inside the workflow's
/// heartbeat timeout).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// One configured target.
#[derive(Debug, Clone)]
pub struct ScrapeTargetSettings {
    /// Reads the endpoint (its token stays inside).
    pub scraper: Scraper,
    /// Time between scrapes.
    pub interval: Duration,
}

/// The activities of metrics scraping.
#[derive(Debug, Clone)]
pub struct MetricsActivities {
    targets: Arc<HashMap<String, ScrapeTargetSettings>>,
    sink: Option<Arc<RemoteWrite>>,
    latest: LatestSamples,
    drop: Arc<Vec<DropRule>>,
    control: ControlPlane,
}

impl MetricsActivities {
    /// Scrapes `targets` by name, drops series matching `drop`, sends to `sink` (when there
    /// is one) and keeps each target's last scrape in `latest`; Plinth namespaces (for the
    /// `plinth_namespace` label) come from `control`. Scraping workflows of targets since
    /// removed end.
    pub fn new(
        targets: HashMap<String, ScrapeTargetSettings>,
        sink: Option<RemoteWrite>,
        latest: LatestSamples,
        drop: Vec<DropRule>,
        control: ControlPlane,
    ) -> Self {
        Self {
            targets: Arc::new(targets),
            sink: sink.map(Arc::new),
            latest,
            drop: Arc::new(drop),
            control,
        }
    }
}

/// What a scrape run heartbeats: a retry resumes with these totals and this schedule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ScrapeProgress {
    summary: ScrapeSummary,
    /// When the next scrape is due, ms since the epoch; 0 for at once.
    next_due_ms: i64,
}

#[activities]
impl MetricsActivities {
    /// Scrapes `run.target` `run.scrapes` times on its interval, relabels and sends each.
    /// Failures of one scrape are counted and logged, never fatal; an unknown target is.
    #[activity(definition = ScrapeMetrics)]
    pub async fn scrape_metrics(
        self: Arc<Self>,
        ctx: ActivityContext,
        run: ScrapeRun,
    ) -> Result<ScrapeSummary, ActivityError> {
        let Some(target) = self.targets.get(&run.target) else {
            return Err(ActivityError::application(
                ApplicationFailure::non_retryable(UnknownTarget(run.target)),
            ));
        };
        let mut progress: ScrapeProgress = ctx
            .heartbeat_details()
            .deserialize()
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut relabel = Relabel {
            target: run.target.clone(),
            managed: HashMap::new(),
            drop: self.drop.as_ref().clone(),
        };
        let interval_ms = i64::try_from(target.interval.as_millis()).unwrap_or(i64::MAX);
        while progress.summary.scrapes < run.scrapes {
            wait_until(&ctx, progress.next_due_ms, &progress).await?;
            let started = now_ms();
            let clock = std::time::Instant::now();
            let outcome = self.scrape_once(target, &mut relabel).await;
            telemetry::scraped(
                &run.target,
                &outcome.scrape,
                clock.elapsed(),
                now_ms() as f64 / 1000.0,
            );
            let retry_after = outcome.add_to(&mut progress.summary);
            let due = progress.next_due_ms.max(0) + interval_ms;
            // After downtime, scrape at once and then keep the interval, not catch up.
            let next = if due <= started {
                started + interval_ms
            } else {
                due
            };
            let retry_after_ms = retry_after.map_or(0, |after| after.as_millis() as i64);
            progress.next_due_ms = next.max(started + retry_after_ms);
            progress.summary.scrapes += 1;
            heartbeat(&ctx, &progress).await;
        }
        Ok(progress.summary)
    }
}

impl MetricsActivities {
    /// One scrape, relabelled and sent.
    async fn scrape_once(&self, target: &ScrapeTargetSettings, relabel: &mut Relabel) -> Outcome {
        let name = relabel.target.clone();
        match self.managed().await {
            Ok(managed) => relabel.managed = managed,
            Err(e) => {
                tracing::warn!(target = %name, error = %e, "Plinth namespaces not read; labelling with the last known")
            }
        }
        let scraped = match target.scraper.scrape().await {
            Ok(scraped) => scraped,
            Err(e) => {
                tracing::warn!(target = %name, error = %e, "scrape failed");
                let (outcome, retry_after) = match &e {
                    ScrapeError::RateLimited { retry_after, .. } => ("rate_limited", *retry_after),
                    _ => ("failed", None),
                };
                return Outcome {
                    scrape: Scrape {
                        outcome,
                        ..Scrape::default()
                    },
                    retry_after,
                    error: Some(e.to_string()),
                };
            }
        };
        if let Some(completeness) = &scraped.incomplete {
            tracing::warn!(target = %name, %completeness, "the endpoint says this scrape is not complete");
        }
        let relabelled = relabel.apply(scraped.samples, now_ms());
        let report = match &self.sink {
            Some(sink) => sink.send(&relabelled.series).await,
            None => SendReport::default(),
        };
        self.latest.set(&name, relabelled.series);
        tracing::debug!(target = %name, bytes = scraped.bytes, sent = report.samples_sent, dropped = report.samples_dropped, "scraped");
        Outcome {
            scrape: Scrape {
                outcome: "ok",
                sent: report.samples_sent,
                dropped: report.samples_dropped,
                filtered: relabelled.dropped_by_rule,
            },
            retry_after: None,
            error: report.error,
        }
    }

    /// Temporal namespace to the Plinth namespace managing it, for every provisioned one.
    async fn managed(&self) -> Result<HashMap<String, Managed>, crate::BackendError> {
        let resources = self
            .control
            .running_resources::<Namespace>(plinth_proto::KIND_NAMESPACE)
            .await?;
        Ok(resources
            .into_iter()
            .filter_map(|(_, resource)| {
                let resource = resource?;
                let spec = resource.spec?;
                let name = resource.metadata?.name;
                Some((
                    spec.name,
                    Managed {
                        resource: name,
                        owner: spec.owner,
                    },
                ))
            })
            .collect())
    }
}

/// What one scrape came to, and what it asks of the schedule.
struct Outcome {
    scrape: Scrape,
    /// A 429's `Retry-After`.
    retry_after: Option<Duration>,
    error: Option<String>,
}

impl Outcome {
    /// Adds this scrape to the run's totals; returns how long a 429 asked to wait.
    fn add_to(self, summary: &mut ScrapeSummary) -> Option<Duration> {
        summary.samples_sent += self.scrape.sent;
        summary.samples_dropped += self.scrape.dropped;
        summary.samples_filtered += self.scrape.filtered;
        if self.scrape.outcome != "ok" {
            summary.failures += 1;
        }
        if self.error.is_some() {
            summary.last_error = self.error;
        }
        self.retry_after
    }
}

/// The workflow asked for a target this worker's configuration does not have.
#[derive(Debug, thiserror::Error)]
#[error("metrics target {0:?} is not configured on this worker ([[metrics.targets]])")]
struct UnknownTarget(String);

/// Sleeps until `due_ms`, heartbeating; ends early with an error when the run is cancelled.
async fn wait_until(
    ctx: &ActivityContext,
    due_ms: i64,
    progress: &ScrapeProgress,
) -> Result<(), ActivityError> {
    loop {
        let left = due_ms - now_ms();
        if left <= 0 {
            return Ok(());
        }
        let nap = Duration::from_millis(left as u64).min(HEARTBEAT_EVERY);
        tokio::select! {
            () = tokio::time::sleep(nap) => heartbeat(ctx, progress).await,
            () = ctx.cancelled() => return Err(ActivityError::cancelled()),
        }
    }
}

async fn heartbeat(ctx: &ActivityContext, progress: &ScrapeProgress) {
    if let Err(e) = ctx.record_heartbeat(progress.clone()).await {
        tracing::warn!(error = %e, "scrape progress not recorded");
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
