use crate::v1::{MetricsTarget, Namespace};
use crate::{API_VERSION, KIND_METRICS_TARGET, KIND_NAMESPACE};

/// One document of a file `plinth apply` reads. A file holds a few: the size of the larger
/// variant costs nothing worth a box.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Resource {
    /// kind: Namespace.
    Namespace(Namespace),
    /// kind: MetricsTarget.
    MetricsTarget(MetricsTarget),
}

impl Resource {
    /// `metadata.name`, or empty.
    pub fn name(&self) -> &str {
        match self {
            Resource::Namespace(namespace) => namespace.name(),
            Resource::MetricsTarget(target) => target.name(),
        }
    }

    /// How `plinth` prints the resource: `namespace/<name>`, `metricstarget/<name>`.
    pub fn reference(&self) -> String {
        let kind = match self {
            Resource::Namespace(_) => "namespace",
            Resource::MetricsTarget(_) => "metricstarget",
        };
        format!("{kind}/{}", self.name())
    }
}

const KNOWN_KINDS: &str = "known kinds: Namespace, MetricsTarget";

/// A document that is not a resource Plinth accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{source_name}: document {index}{name}: {message}")]
pub struct DocumentError {
    /// File name or `-`.
    pub source_name: String,
    /// 1-based position of the document in the source.
    pub index: usize,
    /// ` (metadata.name)` when known.
    pub name: String,
    /// What is wrong, naming the field.
    pub message: String,
}

/// Parses every YAML or JSON document in `text` (separated by `---`). Empty documents are
/// skipped. Any bad document fails the whole parse, so nothing from a broken file is applied.
pub fn parse_documents(text: &str, source_name: &str) -> Result<Vec<Resource>, DocumentError> {
    let mut resources = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let error = |name: &str, message: String| DocumentError {
            source_name: source_name.to_owned(),
            index: i + 1,
            name: if name.is_empty() {
                String::new()
            } else {
                format!(" ({name})")
            },
            message: one_line(&message),
        };
        let value: serde_yaml::Value = serde::Deserialize::deserialize(document)
            .map_err(|e| error("", format!("malformed YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        let Some(map) = value.as_mapping() else {
            return Err(error(
                "",
                "expected a mapping with apiVersion, kind, metadata, spec".into(),
            ));
        };
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_owned();
        let field = |key: &str| map.get(key).and_then(|v| v.as_str()).unwrap_or_default();
        match field("apiVersion") {
            API_VERSION => {}
            "" => {
                return Err(error(
                    &name,
                    format!("apiVersion: missing; use {API_VERSION}"),
                ));
            }
            other => {
                return Err(error(
                    &name,
                    format!("apiVersion: unknown {other:?}; use {API_VERSION}"),
                ));
            }
        }
        let kind = field("kind");
        if kind.is_empty() {
            return Err(error(&name, format!("kind: missing; {KNOWN_KINDS}")));
        }
        if ![KIND_NAMESPACE, KIND_METRICS_TARGET].contains(&kind) {
            return Err(error(
                &name,
                format!("kind: unknown kind {kind:?}; {KNOWN_KINDS}"),
            ));
        }
        if map.contains_key("status") {
            return Err(error(
                &name,
                "status: set by Plinth, remove it from the document".into(),
            ));
        }
        let field_error = |e: serde_path_to_error::Error<serde_yaml::Error>| {
            let path = e.path().to_string();
            error(&name, format!("{path}: {}", e.into_inner()))
        };
        let resource = if kind == KIND_NAMESPACE {
            Resource::Namespace(
                serde_path_to_error::deserialize(value.clone()).map_err(field_error)?,
            )
        } else {
            Resource::MetricsTarget(
                serde_path_to_error::deserialize(value.clone()).map_err(field_error)?,
            )
        };
        resources.push(resource);
    }
    Ok(resources)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
apiVersion: temporal.plinth.dev/v1beta1
kind: Namespace
metadata:
  name: my-fancy-namespace
  namespace: payments
spec:
  name: fancy-test
  owner: payments-team@example.com
  regions: [us-east-1]
  retentionDays: 30
  searchAttributes: {CustomerId: Keyword}
"#;

    #[test]
    fn seed_example_parses() {
        let docs = parse_documents(SEED, "ns.yaml").unwrap();
        let Resource::Namespace(namespace) = &docs[0] else {
            panic!("{docs:?}")
        };
        let spec = namespace.spec.as_ref().unwrap();
        assert_eq!(spec.name, "fancy-test");
        assert_eq!(spec.retention_days, 30);
        assert_eq!(spec.search_attributes["CustomerId"], "Keyword");
        assert_eq!(namespace.group(), "payments");
    }

    #[test]
    fn several_documents_and_json() {
        let json = r#"{"apiVersion":"temporal.plinth.dev/v1beta1","kind":"Namespace","metadata":{"name":"b"},"spec":{"name":"b"}}"#;
        let text = format!("{SEED}\n---\n{json}\n---\n");
        let docs = parse_documents(&text, "x").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].reference(), "namespace/b");
    }

    #[test]
    fn the_examples_are_valid_resources() {
        let examples = [
            include_str!("../../examples/namespace.yaml"),
            include_str!("../../examples/metrics-target.yaml"),
        ];
        for example in examples {
            match &parse_documents(example, "example").unwrap()[..] {
                [Resource::Namespace(namespace)] => {
                    let known = |group: &str| group == "payments-team@example.com";
                    crate::validate_namespace(namespace, &Default::default(), &known).unwrap();
                }
                [Resource::MetricsTarget(target)] => {
                    crate::validate_metrics_target(target).unwrap();
                }
                other => panic!("one resource per example: {other:?}"),
            }
        }
    }

    #[test]
    fn metrics_targets_parse_beside_namespaces() {
        let target = r#"
apiVersion: temporal.plinth.dev/v1beta1
kind: MetricsTarget
metadata:
  name: cloud
spec:
  url: https://metrics.temporal.io/v1/metrics
  temporalCloud: true
  tokenFile: /etc/plinth/cloud-metrics.key
  intervalSeconds: 120
"#;
        let docs = parse_documents(&format!("{SEED}\n---\n{target}"), "all.yaml").unwrap();
        let Resource::MetricsTarget(parsed) = &docs[1] else {
            panic!("{docs:?}")
        };
        assert_eq!(docs[1].reference(), "metricstarget/cloud");
        let spec = parsed.spec_or_default();
        assert!(spec.temporal_cloud);
        assert_eq!(spec.interval_secs(), 120);
        assert_eq!(spec.token_file, "/etc/plinth/cloud-metrics.key");
        let typo = target.replace("tokenFile", "token_file");
        let err = parse_documents(&typo, "t.yaml").unwrap_err().to_string();
        assert!(
            err.contains("(cloud): spec.token_file: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn bad_documents_name_document_and_field() {
        let cases = [
            (
                SEED.replace("kind: Namespace", "kind: Database"),
                "document 1 (my-fancy-namespace): kind: unknown kind \"Database\"",
            ),
            (
                SEED.replace("retentionDays", "retentionDay"),
                "unknown field `retentionDay`",
            ),
            ("apiVersion: [\n".to_owned(), "document 1: malformed YAML"),
            (
                SEED.replace("temporal.plinth.dev/v1beta1", "v1"),
                "apiVersion: unknown \"v1\"",
            ),
            (
                SEED.replace("retentionDays: 30", "retentionDays: thirty"),
                "retentionDays",
            ),
        ];
        for (text, want) in cases {
            let err = parse_documents(&text, "ns.yaml").unwrap_err().to_string();
            assert!(err.starts_with("ns.yaml: document 1"), "{err}");
            assert!(err.contains(want), "want {want:?} in {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn a_bad_second_document_fails_the_whole_file() {
        let text = format!("{SEED}\n---\nkind: Namespace\n");
        let err = parse_documents(&text, "f").unwrap_err();
        assert_eq!(err.index, 2);
    }
}
