//! The Prometheus text exposition format (0.0.4) and OpenMetrics text (1.0), read into samples.
//! Label values keep their escapes' meaning, `+Inf`/`NaN` are values, and timestamps are
//! milliseconds in the first format and seconds in the second. A body that breaks the format is
//! refused whole, naming the line, as Prometheus refuses a scrape.
//!
//! Written here because no permissively licensed crate reads both formats right
//! (`openmetrics-parser` is LGPL-3.0; `prometheus-parse` reads OpenMetrics' seconds as
//! milliseconds and splits label values on commas). `tests/exposition_conformance.rs` holds
//! it to Prometheus itself: a real Prometheus scrapes the same bodies and must store what this
//! reads, and refuse what this refuses.

use crate::relabel::ScrapedSample;

/// Which text format a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: timestamps in milliseconds.
    Prometheus,
    /// `application/openmetrics-text`: timestamps in seconds, ends with `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format a scraper's `Accept` prefers: OpenMetrics when it lists it.
    pub fn of_accept(accept: Option<&str>) -> Format {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The format a `Content-Type` names; Prometheus text when it names neither.
    pub fn of_content_type(content_type: Option<&str>) -> Format {
        match content_type {
            Some(value)
                if value
                    .trim_start()
                    .starts_with("application/openmetrics-text") =>
            {
                Format::OpenMetrics
            }
            _ => Format::Prometheus,
        }
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ExpositionError {
    /// 1-based.
    pub line: usize,
    /// What is wrong there.
    pub reason: String,
}

/// Every sample of `body`.
pub fn parse(body: &str, format: Format) -> Result<Vec<ScrapedSample>, ExpositionError> {
    let mut samples = Vec::new();
    let mut ended = false;
    for (index, line) in body.lines().enumerate() {
        let error = |reason: String| ExpositionError {
            line: index + 1,
            reason,
        };
        if ended {
            if line.trim().is_empty() {
                continue;
            }
            return Err(error("content after # EOF".into()));
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if format == Format::OpenMetrics && comment.trim() == "EOF" {
                ended = true;
            }
            continue;
        }
        samples.push(sample(line, format).map_err(error)?);
    }
    if format == Format::OpenMetrics && !ended {
        return Err(ExpositionError {
            line: body.lines().count(),
            reason: "OpenMetrics body without # EOF: it was cut short".into(),
        });
    }
    Ok(samples)
}

fn sample(line: &str, format: Format) -> Result<ScrapedSample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("expected a metric name at {:?}", clip(line)));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = read_labels(after_brace, &mut labels)?;
    }
    // OpenMetrics exemplars follow ` # `; they are not stored.
    let rest = match format {
        Format::OpenMetrics => rest.split(" # ").next().unwrap_or(rest),
        Format::Prometheus => rest,
    };
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or_else(|| format!("{name}: no value"))?;
    let value: f64 = value
        .parse()
        .map_err(|_| format!("{name}: value {value:?} is not a number"))?;
    let timestamp = fields
        .next()
        .map(|text| {
            timestamp(text, format)
                .ok_or_else(|| format!("{name}: timestamp {text:?} is not a number"))
        })
        .transpose()?;
    if let Some(extra) = fields.next() {
        return Err(format!("{name}: unexpected {extra:?} after the timestamp"));
    }
    Ok(ScrapedSample {
        name: name.to_owned(),
        labels,
        value,
        timestamp,
    })
}

/// Reads `name="value",...}` into `labels`; returns what follows the brace.
fn read_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("labels are not closed")?;
        let name = &rest[..name_end];
        if name.is_empty() {
            return Err(format!("expected a label name at {:?}", clip(rest)));
        }
        rest = rest[name_end..].trim_start();
        rest = rest
            .strip_prefix('=')
            .map(str::trim_start)
            .and_then(|value| value.strip_prefix('"'))
            .ok_or_else(|| format!("label {name}: expected =\" at {:?}", clip(rest)))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((at, '"')) => break at,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => return Err(format!("label {name}: value is not closed")),
                },
                Some((_, c)) => value.push(c),
                None => return Err(format!("label {name}: value is not closed")),
            }
        };
        if labels.iter().any(|(seen, _)| seen == name) {
            return Err(format!("label {name} appears twice"));
        }
        // An empty value is no label at all, as Prometheus stores it.
        if !value.is_empty() {
            labels.push((name.to_owned(), value));
        }
        // Prometheus reads labels without the comma between them too.
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Milliseconds since the epoch.
fn timestamp(text: &str, format: Format) -> Option<i64> {
    match format {
        Format::Prometheus => text.parse().ok(),
        Format::OpenMetrics => {
            let seconds: f64 = text.parse().ok()?;
            seconds
                .is_finite()
                .then(|| (seconds * 1000.0).round() as i64)
        }
    }
}

fn clip(text: &str) -> &str {
    let end = text.char_indices().nth(40).map_or(text.len(), |(at, _)| at);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_with_escapes_specials_and_millisecond_timestamps() {
        let body = "# HELP service_requests Requests.\n\
                    # TYPE service_requests counter\n\
                    service_requests{namespace=\"orders\",operation=\"Start\"} 12 1700000000123\n\
                    service_errors{error=\"a \\\"quoted\\\", b=c\\\\d\\nnext\"} +Inf\n\
                    \n\
                    up NaN\n";
        let samples = parse(body, Format::Prometheus).unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].name, "service_requests");
        assert_eq!(
            samples[0].labels,
            vec![
                ("namespace".into(), "orders".into()),
                ("operation".into(), "Start".into())
            ]
        );
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[0].timestamp, Some(1_700_000_000_123));
        assert_eq!(samples[1].labels[0].1, "a \"quoted\", b=c\\d\nnext");
        assert!(samples[1].value.is_infinite());
        assert!(samples[2].value.is_nan() && samples[2].timestamp.is_none());
    }

    #[test]
    fn openmetrics_timestamps_are_seconds_and_the_body_must_end_with_eof() {
        let body = "# TYPE temporal_cloud_v1_workflow_success_count gauge\n\
                    temporal_cloud_v1_workflow_success_count{temporal_namespace=\"orders.a1\"} 3 1700000000.5\n\
                    requests_total{a=\"b\",} 1 1700000000 # {trace_id=\"x\"} 1\n\
                    # EOF\n";
        let samples = parse(body, Format::OpenMetrics).unwrap();
        assert_eq!(samples[0].timestamp, Some(1_700_000_000_500));
        assert_eq!(samples[1].labels, vec![("a".into(), "b".into())]);
        let cut = parse(&body[..body.len() - 6], Format::OpenMetrics).unwrap_err();
        assert!(cut.reason.contains("# EOF"), "{cut}");
        let trailing = parse(&format!("{body}x 1\n"), Format::OpenMetrics).unwrap_err();
        assert_eq!(trailing.line, 5);
    }

    #[test]
    fn malformed_lines_are_named() {
        let cases = [
            ("ok 1\n{a=\"b\"} 1\n", 2, "expected a metric name"),
            ("m{a=\"b} 1\n", 1, "not closed"),
            ("m{a=b} 1\n", 1, "expected =\""),
            ("m{a=\"1\",a=\"2\"} 1\n", 1, "appears twice"),
            ("m one\n", 1, "is not a number"),
            ("m 1 soon\n", 1, "timestamp"),
            ("m\n", 1, "no value"),
            ("m 1 2 3\n", 1, "unexpected"),
        ];
        for (body, line, reason) in cases {
            let error = parse(body, Format::Prometheus).unwrap_err();
            assert_eq!(error.line, line, "{body:?}: {error}");
            assert!(error.reason.contains(reason), "{body:?}: {error}");
        }
    }

    #[test]
    fn the_content_type_chooses_the_format() {
        let openmetrics = Some("application/openmetrics-text; version=1.0.0; charset=utf-8");
        assert_eq!(Format::of_content_type(openmetrics), Format::OpenMetrics);
        assert_eq!(
            Format::of_content_type(Some("text/plain; version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(Format::of_content_type(None), Format::Prometheus);
        for format in [Format::Prometheus, Format::OpenMetrics] {
            assert_eq!(Format::of_content_type(Some(format.content_type())), format);
        }
        let scraper = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        assert_eq!(Format::of_accept(Some(scraper)), Format::OpenMetrics);
        assert_eq!(Format::of_accept(Some("*/*")), Format::Prometheus);
    }
}
