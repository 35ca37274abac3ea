//! The worker's own metrics: reconciles, access runs and their changes, and scrapes. Process
//! wide, as the activities that record them are; `plinth worker` serves [`render`] at
//! `/metrics`.

use std::time::Duration;

use plinth_metrics::{Counter, DURATION_BUCKETS, Gauge, Histogram, exposition};

static RECONCILES: Counter = Counter::new(
    "plinth_reconciles_total",
    "Namespace reconciles by outcome (ok, failed).",
    &["outcome"],
);
static RECONCILE_DURATION: Histogram = Histogram::new(
    "plinth_reconcile_duration_seconds",
    "Time one namespace reconcile took.",
    &[],
    DURATION_BUCKETS,
);
static ACCESS_RUNS: Counter = Counter::new(
    "plinth_access_runs_total",
    "Access runs by outcome (ok, failed).",
    &["outcome"],
);
static ACCESS_CHANGES: Counter = Counter::new(
    "plinth_access_changes_total",
    "Identities whose access an access run granted, changed or revoked.",
    &["change"],
);
static SCRAPES: Counter = Counter::new(
    "plinth_scrapes_total",
    "Scrapes by target and outcome (ok, failed, rate_limited, skipped).",
    &["target", "outcome"],
);
static SCRAPE_SAMPLES: Counter = Counter::new(
    "plinth_scrape_samples_total",
    "Scraped samples by target and fate (sent, dropped after retries, filtered by a drop rule).",
    &["target", "fate"],
);
static SCRAPE_LAST_SUCCESS: Gauge = Gauge::new(
    "plinth_scrape_last_success_timestamp_seconds",
    "When a target was last scraped and sent in full, Unix seconds.",
    &["target"],
);
static SCRAPE_DURATION: Histogram = Histogram::new(
    "plinth_scrape_duration_seconds",
    "Time one scrape, relabelling and send took.",
    &["target"],
    DURATION_BUCKETS,
);

fn outcome(ok: bool) -> &'static str {
    if ok { "ok" } else { "failed" }
}

/// Counts a namespace reconcile.
pub(crate) fn reconciled(ok: bool, took: Duration) {
    RECONCILES.inc(&[outcome(ok)]);
    RECONCILE_DURATION.observe(&[], took.as_secs_f64());
}

/// Counts an access run and what it changed.
pub(crate) fn access_run(changes: Option<(i32, i32, i32)>) {
    ACCESS_RUNS.inc(&[outcome(changes.is_some())]);
    if let Some((granted, changed, revoked)) = changes {
        for (change, n) in [
            ("granted", granted),
            ("changed", changed),
            ("revoked", revoked),
        ] {
            ACCESS_CHANGES.add(&[change], f64::from(n));
        }
    }
}

/// How one scrape ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ScrapeOutcome {
    /// Read, relabelled and sent.
    #[default]
    Ok,
    /// Read nothing: unreachable, refused, malformed, timed out.
    Failed,
    /// Answered 429.
    RateLimited,
    /// Not attempted: a Temporal Cloud target with no Ready namespace to ask for.
    Skipped,
}

impl ScrapeOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::RateLimited => "rate_limited",
            Self::Skipped => "skipped",
        }
    }

    /// A scrape that should have read something and did not.
    pub(crate) fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::RateLimited)
    }
}

/// What one scrape came to.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    pub outcome: ScrapeOutcome,
    pub sent: u64,
    pub dropped: u64,
    pub filtered: u64,
}

/// Counts a scrape of `target`; one whose samples all went out marks the target fresh.
pub(crate) fn scraped(target: &str, scrape: &Scrape, took: Duration, unix_seconds: f64) {
    SCRAPES.inc(&[target, scrape.outcome.as_str()]);
    for (fate, n) in [
        ("sent", scrape.sent),
        ("dropped", scrape.dropped),
        ("filtered", scrape.filtered),
    ] {
        SCRAPE_SAMPLES.add(&[target, fate], n as f64);
    }
    SCRAPE_DURATION.observe(&[target], took.as_secs_f64());
    if scrape.outcome == ScrapeOutcome::Ok && scrape.dropped == 0 {
        SCRAPE_LAST_SUCCESS.set(&[target], unix_seconds);
    }
}

/// The worker's metrics in Prometheus text format.
pub fn render() -> String {
    exposition(&[
        &RECONCILES,
        &RECONCILE_DURATION,
        &ACCESS_RUNS,
        &ACCESS_CHANGES,
        &SCRAPES,
        &SCRAPE_SAMPLES,
        &SCRAPE_LAST_SUCCESS,
        &SCRAPE_DURATION,
    ])
}
