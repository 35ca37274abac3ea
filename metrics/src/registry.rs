//! Plinth's own metrics: counters, gauges and histograms with labels, rendered in the
//! Prometheus text format. Names follow Prometheus conventions: `plinth_<component>_…`, base
//! units (`_seconds`, `_bytes`), `_total` on counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Separates label values inside a key; no label value holds it.
const SEPARATOR: char = '\u{1f}';

/// Latency buckets for calls and runs, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 90.0,
];

/// Something `/metrics` shows.
pub trait Metric {
    /// Appends its exposition.
    fn render(&self, out: &mut String);
}

/// `metrics` in the Prometheus text format, in order.
pub fn exposition(metrics: &[&dyn Metric]) -> String {
    let mut out = String::new();
    for metric in metrics {
        metric.render(&mut out);
    }
    out
}

/// What every metric kind shares: name, help, label names, values by label values.
#[derive(Debug)]
struct Family<V> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<Values<V>>,
}

/// A family's series, and room to build a key in, so that counting an existing series
/// allocates nothing (the proxy counts several per call).
#[derive(Debug)]
struct Values<V> {
    /// Label values joined by [`SEPARATOR`], to the value.
    series: BTreeMap<String, V>,
    key: String,
}

impl<V: Default> Family<V> {
    const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            values: Mutex::new(Values {
                series: BTreeMap::new(),
                key: String::new(),
            }),
        }
    }

    fn with(&self, values: &[&str], change: impl FnOnce(&mut V)) {
        debug_assert_eq!(
            values.len(),
            self.labels.len(),
            "{}: label count",
            self.name
        );
        let mut guard = self.values.lock().expect("metrics lock");
        let Values { series, key } = &mut *guard;
        key.clear();
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                key.push(SEPARATOR);
            }
            key.extend(value.chars().filter(|c| *c != SEPARATOR));
        }
        match series.get_mut(key.as_str()) {
            Some(value) => change(value),
            None => change(series.entry(key.clone()).or_default()),
        }
    }

    fn header(&self, out: &mut String, kind: &str) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
    }

    /// `{a="x",b="y"}` for the label values in `key`, with `le` last when given; empty when
    /// there are no labels at all.
    fn label_text(&self, key: &str, le: Option<&str>) -> String {
        let mut pairs: Vec<String> = self
            .labels
            .iter()
            .zip(key.split(SEPARATOR))
            .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
            .collect();
        pairs.extend(le.map(|bound| format!("le=\"{bound}\"")));
        if pairs.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", pairs.join(","))
        }
    }
}

impl Family<f64> {
    fn render(&self, out: &mut String, kind: &str) {
        self.header(out, kind);
        for (key, value) in self.values.lock().expect("metrics lock").series.iter() {
            let _ = writeln!(out, "{}{} {value}", self.name, self.label_text(key, None));
        }
    }
}

/// A value that only goes up.
#[derive(Debug)]
pub struct Counter(Family<f64>);

impl Counter {
    /// A counter; its name should end in `_total`.
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self(Family::new(name, help, labels))
    }

    /// Adds one to the series of `labels` (values in the order of the label names).
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1.0);
    }

    /// Adds `amount`.
    pub fn add(&self, labels: &[&str], amount: f64) {
        self.0.with(labels, |value| *value += amount);
    }
}

impl Metric for Counter {
    /// A counter without labels shows 0 before its first count.
    fn render(&self, out: &mut String) {
        if self.0.labels.is_empty() {
            self.add(&[], 0.0);
        }
        self.0.render(out, "counter");
    }
}

/// A value that is set.
#[derive(Debug)]
pub struct Gauge(Family<f64>);

impl Gauge {
    /// A gauge.
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self(Family::new(name, help, labels))
    }

    /// Sets the series of `labels`.
    pub fn set(&self, labels: &[&str], value: f64) {
        self.0.with(labels, |current| *current = value);
    }
}

impl Metric for Gauge {
    fn render(&self, out: &mut String) {
        self.0.render(out, "gauge");
    }
}

#[derive(Debug, Default)]
struct Buckets {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

/// Observations counted into cumulative buckets.
#[derive(Debug)]
pub struct Histogram {
    family: Family<Buckets>,
    bounds: &'static [f64],
}

impl Histogram {
    /// A histogram with upper bounds `bounds` (ascending).
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Self {
        Self {
            family: Family::new(name, help, labels),
            bounds,
        }
    }

    /// Counts `value` in the series of `labels`.
    pub fn observe(&self, labels: &[&str], value: f64) {
        self.family.with(labels, |buckets| {
            buckets.counts.resize(self.bounds.len(), 0);
            for (count, bound) in buckets.counts.iter_mut().zip(self.bounds) {
                if value <= *bound {
                    *count += 1;
                }
            }
            buckets.count += 1;
            buckets.sum += value;
        });
    }
}

impl Metric for Histogram {
    fn render(&self, out: &mut String) {
        let family = &self.family;
        let name = family.name;
        family.header(out, "histogram");
        for (key, buckets) in family.values.lock().expect("metrics lock").series.iter() {
            for (bound, count) in self.bounds.iter().zip(&buckets.counts) {
                let labels = family.label_text(key, Some(&bound.to_string()));
                let _ = writeln!(out, "{name}_bucket{labels} {count}");
            }
            let labels = family.label_text(key, Some("+Inf"));
            let _ = writeln!(out, "{name}_bucket{labels} {}", buckets.count);
            let labels = family.label_text(key, None);
            let _ = writeln!(out, "{name}_sum{labels} {}", buckets.sum);
            let _ = writeln!(out, "{name}_count{labels} {}", buckets.count);
        }
    }
}

/// A label value as the text formats write it.
pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{Format, parse};

    #[test]
    fn the_exposition_reads_back_with_every_series() {
        let requests = Counter::new("t_requests_total", "Requests.", &["namespace", "code"]);
        requests.inc(&["orders", "OK"]);
        requests.add(&["a \"quoted\"\nname", "OK"], 2.0);
        let errors = Counter::new("t_errors_total", "Errors.", &[]);
        let last = Gauge::new("t_last_seconds", "Last.", &[]);
        last.set(&[], 5.5);
        let took = Histogram::new("t_seconds", "Took.", &["class"], &[0.1, 1.0]);
        took.observe(&["read"], 0.05);
        took.observe(&["read"], 0.5);
        let text = exposition(&[&requests, &errors, &last, &took]);
        let samples = parse(&text, Format::Prometheus).unwrap();
        let value = |name: &str, labels: &[(&str, &str)]| {
            samples
                .iter()
                .find(|s| {
                    s.name == name
                        && labels
                            .iter()
                            .all(|(n, v)| s.labels.contains(&((*n).into(), (*v).into())))
                })
                .map(|s| s.value)
        };
        assert_eq!(
            value("t_requests_total", &[("namespace", "orders")]),
            Some(1.0)
        );
        assert_eq!(
            value("t_requests_total", &[("namespace", "a \"quoted\"\nname")]),
            Some(2.0)
        );
        assert_eq!(
            value("t_errors_total", &[]),
            Some(0.0),
            "shown before the first error"
        );
        assert_eq!(value("t_last_seconds", &[]), Some(5.5));
        assert_eq!(value("t_seconds_bucket", &[("le", "0.1")]), Some(1.0));
        assert_eq!(value("t_seconds_bucket", &[("le", "+Inf")]), Some(2.0));
        assert_eq!(value("t_seconds_count", &[("class", "read")]), Some(2.0));
        assert!(text.contains("# TYPE t_seconds histogram"));
    }
}
