//! Scraped samples to remote-write series: each sample gains the Plinth namespace that owns its
//! Temporal namespace and that namespace's owner, plus the target it came from; configured rules
//! drop series nobody wants stored.

use std::collections::HashMap;

use regex::Regex;

use crate::remote_write::{Label, Sample, TimeSeries};

/// Label naming the Plinth namespace resource a series belongs to.
pub const NAMESPACE_LABEL: &str = "plinth_namespace";
/// Label naming that namespace's owner group.
pub const OWNER_LABEL: &str = "plinth_owner";
/// Label naming the scrape target a series came from.
pub const TARGET_LABEL: &str = "plinth_target";

/// Labels that name a Temporal namespace: Temporal Cloud's (`<name>.<account>`) and a
/// self-hosted server's.
const TEMPORAL_NAMESPACE_LABELS: [&str; 2] = ["temporal_namespace", "namespace"];

/// One sample as a parser reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapedSample {
    /// Metric name.
    pub name: String,
    /// Its labels, in any order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// Milliseconds since the Unix epoch, when the exposition gave one.
    pub timestamp: Option<i64>,
}

/// The Plinth namespace behind a Temporal namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    /// The Namespace resource's name.
    pub resource: String,
    /// Its owner group.
    pub owner: String,
}

/// Series to leave out: those whose metric name matches `metric`, and, when `label` is given,
/// whose label of that name matches its pattern too. Patterns match whole values.
#[derive(Debug, Clone)]
pub struct DropRule {
    metric: Regex,
    label: Option<(String, Regex)>,
}

/// Why a drop rule is refused.
#[derive(Debug, thiserror::Error)]
#[error("drop rule {field} {pattern:?}: {reason}")]
pub struct DropRuleError {
    /// `metric` or `label`.
    pub field: &'static str,
    /// As configured.
    pub pattern: String,
    /// The regex parser's complaint.
    pub reason: String,
}

impl DropRule {
    /// A rule on metric names matching `metric`, optionally narrowed to a label's values.
    pub fn new(metric: &str, label: Option<(&str, &str)>) -> Result<Self, DropRuleError> {
        let anchored = |field: &'static str, pattern: &str| {
            Regex::new(&format!("^(?:{pattern})$")).map_err(|e| DropRuleError {
                field,
                pattern: pattern.to_owned(),
                reason: e.to_string(),
            })
        };
        Ok(Self {
            metric: anchored("metric", metric)?,
            label: label
                .map(|(name, pattern)| Ok((name.to_owned(), anchored("label", pattern)?)))
                .transpose()?,
        })
    }

    fn drops(&self, sample: &ScrapedSample) -> bool {
        self.metric.is_match(&sample.name)
            && self.label.as_ref().is_none_or(|(name, pattern)| {
                sample
                    .labels
                    .iter()
                    .any(|(label, value)| label == name && pattern.is_match(value))
            })
    }
}

/// How samples of one target are relabelled.
#[derive(Debug, Clone, Default)]
pub struct Relabel {
    /// Target name, the value of [`TARGET_LABEL`].
    pub target: String,
    /// Temporal namespace name to the Plinth namespace that manages it.
    pub managed: HashMap<String, Managed>,
    /// Series left out.
    pub drop: Vec<DropRule>,
}

/// What relabelling kept and left out.
#[derive(Debug, Default)]
pub struct Relabelled {
    /// Series to send, labels sorted.
    pub series: Vec<TimeSeries>,
    /// Samples a drop rule matched.
    pub dropped_by_rule: u64,
}

impl Relabel {
    /// `samples` as series; a sample without its own timestamp takes `scraped_at` (ms).
    pub fn apply(&self, samples: Vec<ScrapedSample>, scraped_at: i64) -> Relabelled {
        let sanitized = self.sanitized();
        let mut out = Relabelled::default();
        for sample in samples {
            if self.drop.iter().any(|rule| rule.drops(&sample)) {
                out.dropped_by_rule += 1;
                continue;
            }
            let managed = self.managed_of(&sample, &sanitized);
            let mut labels: Vec<Label> = sample
                .labels
                .into_iter()
                .filter(|(name, _)| {
                    // Plinth's labels are Plinth's to set.
                    ![NAMESPACE_LABEL, OWNER_LABEL, TARGET_LABEL, "__name__"]
                        .contains(&name.as_str())
                })
                .map(|(name, value)| Label { name, value })
                .collect();
            labels.push(label("__name__", sample.name));
            labels.push(label(TARGET_LABEL, self.target.clone()));
            if let Some(managed) = managed {
                labels.push(label(NAMESPACE_LABEL, managed.resource.clone()));
                labels.push(label(OWNER_LABEL, managed.owner.clone()));
            }
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            out.series.push(TimeSeries {
                labels,
                samples: vec![Sample {
                    value: sample.value,
                    timestamp: sample.timestamp.unwrap_or(scraped_at),
                }],
            });
        }
        out
    }

    fn managed_of<'a>(
        &'a self,
        sample: &ScrapedSample,
        sanitized: &HashMap<String, Option<&'a Managed>>,
    ) -> Option<&'a Managed> {
        TEMPORAL_NAMESPACE_LABELS.iter().find_map(|wanted| {
            let (_, value) = sample.labels.iter().find(|(name, _)| name == wanted)?;
            self.managed
                .get(value)
                .or_else(|| {
                    // Temporal Cloud names namespaces `<name>.<account>`.
                    let (name, _account) = value.rsplit_once('.')?;
                    self.managed.get(name)
                })
                .or_else(|| sanitized.get(value).copied().flatten())
        })
    }

    /// The managed namespaces by the name a self-hosted server's Prometheus reporter shows,
    /// which turns every character but letters, digits and `_` into `_` (`orders-eu` becomes
    /// `orders_eu`). Names two namespaces share that way map to neither.
    fn sanitized(&self) -> HashMap<String, Option<&Managed>> {
        let mut index: HashMap<String, Option<&Managed>> = HashMap::new();
        for (name, managed) in &self.managed {
            let shown: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            index
                .entry(shown)
                .and_modify(|seen| *seen = None)
                .or_insert(Some(managed));
        }
        index
    }
}

fn label(name: &str, value: String) -> Label {
    Label {
        name: name.to_owned(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)]) -> ScrapedSample {
        ScrapedSample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(n, v)| ((*n).into(), (*v).into()))
                .collect(),
            value: 1.0,
            timestamp: None,
        }
    }

    fn relabel() -> Relabel {
        Relabel {
            target: "cloud".into(),
            managed: HashMap::from([
                (
                    "orders".to_owned(),
                    Managed {
                        resource: "orders-prod".into(),
                        owner: "team-orders".into(),
                    },
                ),
                (
                    "ledger-eu".to_owned(),
                    Managed {
                        resource: "ledger".into(),
                        owner: "team-ledger".into(),
                    },
                ),
                (
                    "a-b".to_owned(),
                    Managed {
                        resource: "ab-dash".into(),
                        owner: "team-a".into(),
                    },
                ),
                (
                    "a.b".to_owned(),
                    Managed {
                        resource: "ab-dot".into(),
                        owner: "team-a".into(),
                    },
                ),
            ]),
            drop: vec![
                DropRule::new("temporal_cloud_v1_.*_p50", None).unwrap(),
                DropRule::new("service_requests", Some(("operation", "Poll.*"))).unwrap(),
            ],
        }
    }

    fn labels(series: &TimeSeries) -> Vec<(String, String)> {
        series
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect()
    }

    #[test]
    fn managed_namespaces_gain_their_resource_owner_and_target_and_labels_are_sorted() {
        let cloud = sample(
            "temporal_cloud_v1_workflow_success_count",
            &[("temporal_namespace", "orders.acct1"), ("region", "eu")],
        );
        let self_hosted = sample("service_requests", &[("namespace", "orders")]);
        let unmanaged = sample("service_requests", &[("namespace", "plinth-system")]);
        let out = relabel().apply(vec![cloud, self_hosted, unmanaged], 1_000);
        assert_eq!(out.series.len(), 3);
        let first = labels(&out.series[0]);
        assert_eq!(
            first,
            [
                ("__name__", "temporal_cloud_v1_workflow_success_count"),
                ("plinth_namespace", "orders-prod"),
                ("plinth_owner", "team-orders"),
                ("plinth_target", "cloud"),
                ("region", "eu"),
                ("temporal_namespace", "orders.acct1"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert_eq!(
            out.series[0].samples[0].timestamp, 1_000,
            "scrape time fills in"
        );
        assert!(
            labels(&out.series[1]).contains(&("plinth_namespace".into(), "orders-prod".into()))
        );
        assert!(
            !labels(&out.series[2])
                .iter()
                .any(|(n, _)| n == "plinth_namespace")
        );
    }

    #[test]
    fn names_a_self_hosted_reporter_sanitized_still_find_their_namespace_unless_ambiguous() {
        let out = relabel().apply(
            vec![
                sample("service_requests", &[("namespace", "ledger_eu")]),
                sample("service_requests", &[("namespace", "a_b")]),
                sample("service_requests", &[("namespace", "a-b")]),
            ],
            0,
        );
        let namespace = |series: &TimeSeries| {
            series
                .labels
                .iter()
                .find(|l| l.name == NAMESPACE_LABEL)
                .map(|l| l.value.clone())
        };
        assert_eq!(namespace(&out.series[0]).as_deref(), Some("ledger"));
        assert_eq!(
            namespace(&out.series[1]),
            None,
            "a-b and a.b both show as a_b"
        );
        assert_eq!(namespace(&out.series[2]).as_deref(), Some("ab-dash"));
    }

    #[test]
    fn own_timestamps_stay_and_spoofed_plinth_labels_are_replaced() {
        let mut spoofed = sample(
            "service_requests",
            &[("namespace", "orders"), ("plinth_owner", "intruders")],
        );
        spoofed.timestamp = Some(42);
        let out = relabel().apply(vec![spoofed], 1_000);
        let labels = labels(&out.series[0]);
        assert!(labels.contains(&("plinth_owner".into(), "team-orders".into())));
        assert!(!labels.contains(&("plinth_owner".into(), "intruders".into())));
        assert_eq!(out.series[0].samples[0].timestamp, 42);
    }

    #[test]
    fn drop_rules_match_whole_names_and_label_values() {
        let out = relabel().apply(
            vec![
                sample("temporal_cloud_v1_service_latency_p50", &[]),
                sample("temporal_cloud_v1_service_latency_p500x", &[]),
                sample(
                    "service_requests",
                    &[("operation", "PollActivityTaskQueue")],
                ),
                sample(
                    "service_requests",
                    &[("operation", "StartWorkflowExecution")],
                ),
            ],
            0,
        );
        assert_eq!(out.dropped_by_rule, 2);
        assert_eq!(out.series.len(), 2);
        let error = DropRule::new("(", None).unwrap_err();
        assert!(
            error.to_string().starts_with("drop rule metric \"(\""),
            "{error}"
        );
    }
}
