use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plinth_metrics::{
    DropRule, LatestSamples, Managed, Relabel, RemoteWrite, ScrapeError, Scraper, SendReport,
    read_bearer_token,
};
use plinth_proto::phase;
use plinth_proto::v1::{MetricsTargetSpec, Namespace};
use plinth_workflows::contracts::{ScrapeMetrics, ScrapeRun, ScrapeSummary};
use serde::{Deserialize, Serialize};
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::telemetry::{self, Scrape, ScrapeOutcome};
use plinth_control::ControlPlane;

/// How often a waiting scrape run tells Temporal it is alive (well inside the workflow's
/// heartbeat timeout).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// One target, ready to scrape.
#[derive(Debug, Clone)]
pub struct ScrapeTargetSettings {
    /// Reads the endpoint (its token stays inside).
    pub scraper: Scraper,
    /// Time between scrapes.
    pub interval: Duration,
    /// Temporal Cloud: each scrape asks only for the Ready namespaces Plinth manages.
    pub temporal_cloud: bool,
}

impl ScrapeTargetSettings {
    /// The target a `MetricsTarget` resource describes, its token read from this worker's
    /// file or environment; an error says why it cannot be scraped, never showing the token.
    pub fn from_spec(spec: &MetricsTargetSpec, timeout: Duration) -> Result<Self, String> {
        fn given(value: &str) -> Option<&str> {
            Some(value).filter(|value| !value.is_empty())
        }
        let token_file = given(&spec.token_file).map(std::path::Path::new);
        let token =
            read_bearer_token(token_file, given(&spec.token_env)).map_err(|e| e.to_string())?;
        let scraper =
            Scraper::new(&spec.url, token.as_deref(), timeout).map_err(|e| e.to_string())?;
        Ok(Self {
            scraper,
            interval: Duration::from_secs(spec.interval_secs()),
            temporal_cloud: spec.temporal_cloud,
        })
    }
}

/// The activities of metrics scraping.
#[derive(Debug, Clone)]
pub struct MetricsActivities {
    targets: Arc<HashMap<String, ScrapeTargetSettings>>,
    scrape_timeout: Duration,
    sink: Option<Arc<RemoteWrite>>,
    latest: LatestSamples,
    drop: Arc<Vec<DropRule>>,
    control: ControlPlane,
}

impl MetricsActivities {
    /// Scrapes configured `targets` by name and resource targets by their spec (each scrape
    /// taking at most `scrape_timeout`), drops series matching `drop`, sends to `sink` (when
    /// there is one) and keeps each target's last scrape in `latest`; Plinth namespaces (for
    /// the `plinth_namespace` label and Temporal Cloud's filter) come from `control`.
    /// Scraping workflows of configured targets since removed end.
    pub fn new(
        targets: HashMap<String, ScrapeTargetSettings>,
        scrape_timeout: Duration,
        sink: Option<RemoteWrite>,
        latest: LatestSamples,
        drop: Vec<DropRule>,
        control: ControlPlane,
    ) -> Self {
        Self {
            targets: Arc::new(targets),
            scrape_timeout,
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
        // A resource's target that cannot be set up (its token file missing, say) fails each
        // scrape with the reason, so the run keeps its schedule and recovers once it is fixed.
        let (target, interval) = match (&run.spec, self.targets.get(&run.target)) {
            (Some(spec), _) => (
                ScrapeTargetSettings::from_spec(spec, self.scrape_timeout),
                Duration::from_secs(spec.interval_secs()),
            ),
            (None, Some(target)) => (Ok(target.clone()), target.interval),
            (None, None) => {
                return Err(ActivityError::application(
                    ApplicationFailure::non_retryable(UnknownTarget(run.target)),
                ));
            }
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
        let mut ready = Vec::new();
        let interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        while progress.summary.scrapes < run.scrapes {
            wait_until(&ctx, progress.next_due_ms, &progress).await?;
            let started = now_ms();
            let clock = std::time::Instant::now();
            let outcome = match &target {
                Ok(target) => self.scrape_once(target, &mut relabel, &mut ready).await,
                Err(reason) => {
                    Outcome::failed(&run.target, ScrapeOutcome::Failed, reason.clone(), None)
                }
            };
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
    /// One scrape, relabelled and sent. `ready` holds the Ready namespaces last read, for
    /// Temporal Cloud's filter.
    async fn scrape_once(
        &self,
        target: &ScrapeTargetSettings,
        relabel: &mut Relabel,
        ready: &mut Vec<String>,
    ) -> Outcome {
        let name = relabel.target.clone();
        match self.managed().await {
            Ok(namespaces) => (relabel.managed, *ready) = namespaces,
            Err(e) => {
                tracing::warn!(target = %name, error = %e, "Plinth namespaces not read; using the last known")
            }
        }
        let query: Vec<(&str, &str)> = if target.temporal_cloud {
            ready.iter().map(|ns| ("namespaces", ns.as_str())).collect()
        } else {
            Vec::new()
        };
        if target.temporal_cloud && query.is_empty() {
            // Without a filter Temporal Cloud would answer for every namespace of the account.
            tracing::info!(target = %name, "no Plinth namespace is Ready: nothing to ask Temporal Cloud for");
            return Outcome::skipped();
        }
        let scraped = match target.scraper.scrape(&query).await {
            Ok(scraped) => scraped,
            Err(e) => {
                let (outcome, retry_after) = match &e {
                    ScrapeError::RateLimited { retry_after, .. } => {
                        (ScrapeOutcome::RateLimited, *retry_after)
                    }
                    _ => (ScrapeOutcome::Failed, None),
                };
                return Outcome::failed(&name, outcome, e.to_string(), retry_after);
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
                outcome: ScrapeOutcome::Ok,
                sent: report.samples_sent,
                dropped: report.samples_dropped,
                filtered: relabelled.dropped_by_rule,
            },
            retry_after: None,
            error: report.error,
        }
    }

    /// Temporal namespace to the Plinth namespace managing it, for every provisioned one;
    /// and the Temporal namespaces of those that are Ready, sorted.
    async fn managed(
        &self,
    ) -> Result<(HashMap<String, Managed>, Vec<String>), plinth_control::BackendError> {
        let resources = self
            .control
            .running_resources::<Namespace>(plinth_proto::KIND_NAMESPACE)
            .await?;
        let mut managed = HashMap::new();
        let mut ready = Vec::new();
        for resource in resources.into_iter().filter_map(|(_, resource)| resource) {
            let spec = resource.spec_or_default();
            if resource
                .status
                .as_ref()
                .is_some_and(|s| s.phase == phase::READY)
            {
                ready.push(spec.name.clone());
            }
            let name = resource.name().to_owned();
            managed.insert(
                spec.name,
                Managed {
                    resource: name,
                    owner: spec.owner,
                },
            );
        }
        ready.sort();
        Ok((managed, ready))
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
    /// A scrape not made, which is no failure.
    fn skipped() -> Self {
        Outcome {
            scrape: Scrape {
                outcome: ScrapeOutcome::Skipped,
                ..Scrape::default()
            },
            retry_after: None,
            error: None,
        }
    }

    /// A scrape of `target` that read nothing (`outcome`), for `reason`.
    fn failed(
        target: &str,
        outcome: ScrapeOutcome,
        reason: String,
        retry_after: Option<Duration>,
    ) -> Self {
        tracing::warn!(%target, error = %reason, "scrape failed");
        Outcome {
            scrape: Scrape {
                outcome,
                ..Scrape::default()
            },
            retry_after,
            error: Some(reason),
        }
    }

    /// Adds this scrape to the run's totals; returns how long a 429 asked to wait.
    fn add_to(self, summary: &mut ScrapeSummary) -> Option<Duration> {
        summary.samples_sent += self.scrape.sent;
        summary.samples_dropped += self.scrape.dropped;
        summary.samples_filtered += self.scrape.filtered;
        if self.scrape.outcome.is_failure() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_counts_failed_and_rate_limited_scrapes_as_failures_not_skipped_ones() {
        let mut summary = ScrapeSummary::default();
        assert_eq!(Outcome::skipped().add_to(&mut summary), None);
        let after = Some(Duration::from_secs(6));
        let limited = Outcome::failed("cloud", ScrapeOutcome::RateLimited, "429".into(), after);
        assert_eq!(limited.add_to(&mut summary), after);
        Outcome::failed("cloud", ScrapeOutcome::Failed, "refused".into(), None)
            .add_to(&mut summary);
        assert_eq!(summary.failures, 2);
        assert_eq!(summary.last_error.as_deref(), Some("refused"));
    }
}
