//! The latest samples of every target, for companies that scrape instead of receive: served
//! as OpenMetrics (timestamps in seconds) or Prometheus text (milliseconds) with the samples'
//! own timestamps, so a Prometheus with `honor_timestamps` and `honor_labels` stores them as
//! they were scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::exposition::Format;
use crate::registry::escape;
use crate::remote_write::TimeSeries;

/// Each target's series from its last scrape; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct LatestSamples {
    by_target: Arc<Mutex<BTreeMap<String, Arc<Vec<TimeSeries>>>>>,
}

impl LatestSamples {
    /// Replaces what `target` last had.
    pub fn set(&self, target: &str, series: Vec<TimeSeries>) {
        self.by_target
            .lock()
            .expect("latest samples lock")
            .insert(target.to_owned(), Arc::new(series));
    }

    /// Every target's latest series in `format`.
    pub fn render(&self, format: Format) -> String {
        let targets: Vec<Arc<Vec<TimeSeries>>> = self
            .by_target
            .lock()
            .expect("latest samples lock")
            .values()
            .cloned()
            .collect();
        let mut out = String::new();
        for series in targets.iter().flat_map(|series| series.iter()) {
            let name = series
                .labels
                .iter()
                .find(|label| label.name == "__name__")
                .map_or("", |label| label.value.as_str());
            let labels: Vec<String> = series
                .labels
                .iter()
                .filter(|label| label.name != "__name__")
                .map(|label| format!("{}=\"{}\"", label.name, escape(&label.value)))
                .collect();
            for sample in &series.samples {
                let timestamp = match format {
                    Format::Prometheus => sample.timestamp.to_string(),
                    Format::OpenMetrics => format!("{:.3}", sample.timestamp as f64 / 1000.0),
                };
                let _ = writeln!(
                    out,
                    "{name}{{{}}} {} {timestamp}",
                    labels.join(","),
                    sample.value
                );
            }
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::parse;
    use crate::remote_write::{Label, Sample};

    #[test]
    fn the_latest_samples_read_back_with_their_labels_and_timestamps_in_both_formats() {
        let latest = LatestSamples::default();
        let series = |value: f64| TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "temporal_cloud_v1_workflow_success_count".into(),
                },
                Label {
                    name: "plinth_namespace".into(),
                    value: "a \"quoted\" name".into(),
                },
            ],
            samples: vec![Sample {
                value,
                timestamp: 1_700_000_000_500,
            }],
        };
        latest.set("cloud", vec![series(1.0)]);
        latest.set("cloud", vec![series(2.0)]);
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let samples = parse(&latest.render(format), format).unwrap();
            assert_eq!(samples.len(), 1, "the last scrape replaces the one before");
            assert_eq!(samples[0].value, 2.0);
            assert_eq!(samples[0].timestamp, Some(1_700_000_000_500));
            assert_eq!(samples[0].labels[0].1, "a \"quoted\" name");
        }
    }
}
