//! `[metrics]` as the worker's scraping settings (tokens read, endpoints and rules checked),
//! and the worker's own HTTP endpoints.

use std::collections::HashMap;

use anyhow::{Context, bail};
use plinth_activities::ScrapeTargetSettings;
use plinth_metrics::{
    DropRule, LatestSamples, RemoteWrite, Scraper, SendSettings, read_bearer_token,
};
use plinth_worker::MetricsSettings;

use crate::config::MetricsConfig;

/// The scraping settings `config` describes; an error names the key at fault.
pub fn settings(config: &MetricsConfig) -> anyhow::Result<MetricsSettings> {
    let mut targets = HashMap::new();
    for target in &config.targets {
        let key = format!("[[metrics.targets]] {:?}", target.name);
        let valid = !target.name.is_empty()
            && target
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            bail!("{key}: name must be letters, digits, '-', '_' or '.'");
        }
        let token = read_bearer_token(target.token_file.as_deref(), target.token_env.as_deref())
            .with_context(|| key.clone())?;
        let scraper = Scraper::new(&target.url, token.as_deref(), config.scrape_timeout)
            .with_context(|| key.clone())?;
        let interval = target.interval.unwrap_or(config.interval);
        if interval.as_secs() < 1 {
            bail!("{key}: interval must be at least 1s");
        }
        let settings = ScrapeTargetSettings {
            scraper,
            interval,
            temporal_cloud: target.temporal_cloud,
        };
        if targets.insert(target.name.clone(), settings).is_some() {
            bail!("{key}: two targets have this name");
        }
    }
    let sink = match &config.remote_write_url {
        Some(url) => {
            let token = read_bearer_token(
                config.remote_write_token_file.as_deref(),
                config.remote_write_token_env.as_deref(),
            )
            .context("[metrics] remote_write_token")?;
            Some(
                RemoteWrite::new(url, token.as_deref(), SendSettings::default())
                    .context("[metrics] remote_write_url")?,
            )
        }
        None => None,
    };
    let drop = config
        .drop
        .iter()
        .map(|rule| {
            let label = match (&rule.label, &rule.matches) {
                (Some(label), Some(matches)) => Some((label.as_str(), matches.as_str())),
                (None, None) => None,
                _ => bail!(
                    "[[metrics.drop]] {:?}: label and matches go together",
                    rule.metric
                ),
            };
            Ok(DropRule::new(&rule.metric, label)?)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(MetricsSettings {
        targets,
        scrape_timeout: config.scrape_timeout,
        sink,
        latest: LatestSamples::default(),
        drop,
    })
}

/// The worker's HTTP endpoints: `/metrics`, its own; `/export`, every target's last scrape
/// with the samples' timestamps (OpenMetrics when the scraper asks for it, else Prometheus
/// text), for a Prometheus that scrapes with `honor_labels` and `honor_timestamps`.
pub fn worker_app(latest: LatestSamples) -> axum::Router {
    use axum::http::{HeaderMap, header};
    use axum::routing::get;
    use plinth_metrics::Format;

    axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, Format::Prometheus.content_type())],
                    plinth_activities::telemetry::render(),
                )
            }),
        )
        .route(
            "/export",
            get(move |headers: HeaderMap| async move {
                let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                let format = Format::of_accept(accept);
                (
                    [(header::CONTENT_TYPE, format.content_type())],
                    latest.render(format),
                )
            }),
        )
}
