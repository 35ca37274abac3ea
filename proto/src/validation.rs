use std::collections::HashMap;

use crate::v1::{MetricsTarget, Namespace, NamespaceSpec, ObjectMeta};

/// Region names Temporal Cloud offers, written as the seed writes them.
const CLOUD_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "ca-central-1",
    "sa-east-1",
    "eu-central-1",
    "eu-west-1",
    "eu-west-2",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "us-central1",
    "us-east4",
    "us-west1",
    "europe-west3",
    "asia-south1",
];

/// Search attribute types, in the order of their numbers in Temporal's `IndexedValueType`
/// and Cloud's `SearchAttributeType` (1 to 7).
pub const SEARCH_ATTRIBUTE_TYPES: [&str; 7] = [
    "Text",
    "Keyword",
    "Int",
    "Double",
    "Bool",
    "Datetime",
    "KeywordList",
];

/// What a valid namespace resource looks like in this installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationRules {
    /// Regions a namespace may name.
    pub regions: Vec<String>,
    /// Shortest retention, days.
    pub min_retention_days: i32,
    /// Longest retention, days.
    pub max_retention_days: i32,
    /// Temporal namespaces no resource may name: Plinth's control plane and Temporal's own.
    /// Owning one would give a team's group access to them through the proxy.
    pub reserved_names: Vec<String>,
}

impl Default for ValidationRules {
    fn default() -> Self {
        Self {
            regions: CLOUD_REGIONS.iter().map(|r| (*r).to_owned()).collect(),
            min_retention_days: 1,
            max_retention_days: 90,
            reserved_names: vec![TEMPORAL_SYSTEM.to_owned()],
        }
    }
}

/// A field of a resource that is not acceptable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the field as written in the resource, e.g. `spec.retentionDays`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn invalid<T>(field: &str, message: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError {
        field: field.to_owned(),
        message: message.into(),
    })
}

/// Temporal's own namespace.
pub const TEMPORAL_SYSTEM: &str = "temporal-system";

/// Checks a namespace resource against `rules`; `group_known` answers whether the directory
/// knows an owner group.
pub fn validate_namespace(
    resource: &Namespace,
    rules: &ValidationRules,
    group_known: &dyn Fn(&str) -> bool,
) -> Result<(), FieldError> {
    let spec = check_envelope(
        &resource.api_version,
        &resource.kind,
        crate::KIND_NAMESPACE,
        resource.metadata.as_ref(),
        resource.spec.as_ref(),
    )?;
    check_dns_label("spec.name", &spec.name)?;
    if rules.reserved_names.contains(&spec.name) {
        return invalid(
            "spec.name",
            format!(
                "{:?} is reserved: it is Plinth's control-plane namespace or Temporal's own",
                spec.name
            ),
        );
    }
    if spec.owner.is_empty() {
        return invalid("spec.owner", "missing: name the owner group");
    }
    if !group_known(&spec.owner) {
        return invalid(
            "spec.owner",
            format!("{:?} is not a group in the directory", spec.owner),
        );
    }
    if spec.regions.is_empty() {
        return invalid("spec.regions", "name at least one region");
    }
    for (i, region) in spec.regions.iter().enumerate() {
        if !rules.regions.contains(region) {
            return invalid(
                &format!("spec.regions[{i}]"),
                format!(
                    "unknown region {region:?}; known: {}",
                    rules.regions.join(", ")
                ),
            );
        }
    }
    let (min, max) = (rules.min_retention_days, rules.max_retention_days);
    if !(min..=max).contains(&spec.retention_days) {
        return invalid(
            "spec.retentionDays",
            format!("{} is outside {min}..={max} days", spec.retention_days),
        );
    }
    check_search_attributes(&spec.search_attributes)
}

/// Longest interval between scrapes a target may ask for: a day.
const MAX_SCRAPE_INTERVAL_SECS: i32 = 86_400;

/// Checks a metrics target resource. The URL is checked for shape only (the worker that
/// scrapes it checks the rest); credentials must not be in it, since the resource is kept in
/// Temporal.
pub fn validate_metrics_target(resource: &MetricsTarget) -> Result<(), FieldError> {
    let spec = check_envelope(
        &resource.api_version,
        &resource.kind,
        crate::KIND_METRICS_TARGET,
        resource.metadata.as_ref(),
        resource.spec.as_ref(),
    )?;
    let Some((_, rest)) = spec
        .url
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
    else {
        return invalid("spec.url", "must start with http:// or https://");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || spec.url.chars().any(char::is_whitespace) {
        return invalid("spec.url", "must name a host and hold no spaces");
    }
    if authority.contains('@') {
        return invalid(
            "spec.url",
            "credentials do not belong in the URL: use tokenFile or tokenEnv",
        );
    }
    match (spec.token_file.as_str(), spec.token_env.as_str()) {
        ("", _) | (_, "") => {}
        _ => return invalid("spec.tokenEnv", "set tokenFile or tokenEnv, not both"),
    }
    if !spec.token_file.is_empty() && !spec.token_file.starts_with('/') {
        return invalid("spec.tokenFile", "must be an absolute path on the worker");
    }
    let env_ok = spec
        .token_env
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !env_ok {
        return invalid(
            "spec.tokenEnv",
            "an environment variable name: upper-case letters, digits, '_'",
        );
    }
    if !(0..=MAX_SCRAPE_INTERVAL_SECS).contains(&spec.interval_seconds) {
        return invalid(
            "spec.intervalSeconds",
            format!(
                "{} is outside 1..={MAX_SCRAPE_INTERVAL_SECS} (0 for the default, {})",
                spec.interval_seconds,
                crate::DEFAULT_SCRAPE_INTERVAL_SECS
            ),
        );
    }
    Ok(())
}

/// Checks that an update to an existing resource leaves immutable fields alone.
pub fn check_update(current: &NamespaceSpec, desired: &NamespaceSpec) -> Result<(), FieldError> {
    if current.name != desired.name {
        return invalid(
            "spec.name",
            format!(
                "immutable: this resource manages {:?}; create a new resource for {:?}",
                current.name, desired.name
            ),
        );
    }
    for (name, kind) in &current.search_attributes {
        match desired.search_attributes.get(name) {
            Some(new_kind) if new_kind != kind => {
                return invalid(
                    &format!("spec.searchAttributes.{name}"),
                    format!("type is immutable ({kind}); Temporal cannot change it"),
                );
            }
            None => {
                return invalid(
                    &format!("spec.searchAttributes.{name}"),
                    "search attributes cannot be removed from a namespace",
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// What every resource shares: `apiVersion`, a `kind` that must be `expected_kind`,
/// `metadata`, and a spec, which is returned.
fn check_envelope<'a, S>(
    api_version: &str,
    kind: &str,
    expected_kind: &str,
    metadata: Option<&ObjectMeta>,
    spec: Option<&'a S>,
) -> Result<&'a S, FieldError> {
    if api_version != crate::API_VERSION {
        return invalid("apiVersion", format!("must be {}", crate::API_VERSION));
    }
    if kind != expected_kind {
        return invalid("kind", format!("must be {expected_kind}"));
    }
    let Some(metadata) = metadata else {
        return invalid("metadata", "missing");
    };
    check_dns_label("metadata.name", &metadata.name)?;
    if !metadata.namespace.is_empty() {
        check_dns_label("metadata.namespace", &metadata.namespace)?;
    }
    spec.map_or_else(|| invalid("spec", "missing"), Ok)
}

/// `value` is a DNS label (lowercase letters, digits and dashes, at most 63); else an error
/// naming `field`.
pub fn check_dns_label(field: &str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return invalid(field, "missing");
    }
    let ok = value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        invalid(
            field,
            format!(
                "{value:?} must be 1-63 lower-case letters, digits or '-', starting with a letter"
            ),
        )
    }
}

fn check_search_attributes(attributes: &HashMap<String, String>) -> Result<(), FieldError> {
    for (name, kind) in attributes {
        let field = format!("spec.searchAttributes.{name}");
        let name_ok = name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return invalid(
                &field,
                "names start with a letter and use letters, digits, '_'",
            );
        }
        if !SEARCH_ATTRIBUTE_TYPES.contains(&kind.as_str()) {
            return invalid(
                &field,
                format!(
                    "unknown type {kind:?}; use one of {}",
                    SEARCH_ATTRIBUTE_TYPES.join(", ")
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Namespace {
        crate::namespace_resource(
            "my-fancy-namespace",
            "payments",
            NamespaceSpec {
                name: "fancy-test".into(),
                owner: "payments-team@example.com".into(),
                regions: vec!["us-east-1".into()],
                retention_days: 30,
                ..Default::default()
            },
        )
    }

    fn check(resource: &Namespace) -> Result<(), FieldError> {
        validate_namespace(resource, &ValidationRules::default(), &|g| {
            g == "payments-team@example.com"
        })
    }

    fn field_of(edit: impl FnOnce(&mut NamespaceSpec)) -> String {
        let mut resource = seed();
        edit(resource.spec.as_mut().unwrap());
        check(&resource).unwrap_err().field
    }

    #[test]
    fn seed_example_is_valid() {
        assert_eq!(check(&seed()), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of(|s| s.name = "Fancy Test".into()), "spec.name");
        assert_eq!(field_of(|s| s.name = TEMPORAL_SYSTEM.into()), "spec.name");
        assert_eq!(field_of(|s| s.retention_days = 0), "spec.retentionDays");
        assert_eq!(field_of(|s| s.retention_days = 400), "spec.retentionDays");
        assert_eq!(
            field_of(|s| s.regions = vec!["mars-1".into()]),
            "spec.regions[0]"
        );
        assert_eq!(field_of(|s| s.regions.clear()), "spec.regions");
        assert_eq!(
            field_of(|s| s.owner = "nobody@example.com".into()),
            "spec.owner"
        );
        assert_eq!(
            field_of(|s| {
                s.search_attributes
                    .insert("CustomerId".into(), "Blob".into());
            }),
            "spec.searchAttributes.CustomerId"
        );
        let mut no_spec = seed();
        no_spec.spec = None;
        assert_eq!(check(&no_spec).unwrap_err().field, "spec");
        let mut bad_name = seed();
        bad_name.metadata.as_mut().unwrap().name = "-x".into();
        assert_eq!(check(&bad_name).unwrap_err().field, "metadata.name");
    }

    fn cloud_target() -> MetricsTarget {
        MetricsTarget {
            api_version: crate::API_VERSION.into(),
            kind: crate::KIND_METRICS_TARGET.into(),
            metadata: Some(crate::v1::ObjectMeta {
                name: "cloud".into(),
                ..Default::default()
            }),
            spec: Some(crate::v1::MetricsTargetSpec {
                url: "https://metrics.temporal.io/v1/metrics".into(),
                temporal_cloud: true,
                token_file: "/etc/plinth/cloud-metrics.key".into(),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn each_bad_metrics_target_field_is_named() {
        assert_eq!(validate_metrics_target(&cloud_target()), Ok(()));
        let field_of = |edit: &dyn Fn(&mut crate::v1::MetricsTargetSpec)| {
            let mut target = cloud_target();
            edit(target.spec.as_mut().unwrap());
            validate_metrics_target(&target).map_err(|e| e.field)
        };
        let err = |field: &str| Err(field.to_owned());
        assert_eq!(
            field_of(&|s| s.url = "ftp://x/metrics".into()),
            err("spec.url")
        );
        assert_eq!(
            field_of(&|s| s.url = "http:///metrics".into()),
            err("spec.url")
        );
        assert_eq!(
            field_of(&|s| s.url = "https://key:secret@metrics.temporal.io/v1/metrics".into()),
            err("spec.url")
        );
        assert_eq!(
            field_of(&|s| s.token_env = "CLOUD_KEY".into()),
            err("spec.tokenEnv")
        );
        assert_eq!(
            field_of(&|s| s.token_file = "cloud.key".into()),
            err("spec.tokenFile")
        );
        assert_eq!(
            field_of(&|s| {
                s.token_file.clear();
                s.token_env = "cloud-key".into();
            }),
            err("spec.tokenEnv")
        );
        assert_eq!(
            field_of(&|s| s.interval_seconds = -5),
            err("spec.intervalSeconds")
        );
        assert_eq!(field_of(&|s| s.interval_seconds = 30), Ok(()));
        let mut unnamed = cloud_target();
        unnamed.metadata.as_mut().unwrap().name = "Cloud Metrics".into();
        assert_eq!(
            validate_metrics_target(&unnamed).unwrap_err().field,
            "metadata.name"
        );
    }

    #[test]
    fn immutable_fields_are_refused() {
        let current = seed().spec.unwrap();
        let mut renamed = current.clone();
        renamed.name = "other".into();
        assert_eq!(
            check_update(&current, &renamed).unwrap_err().field,
            "spec.name"
        );
        let mut longer = current.clone();
        longer.retention_days = 60;
        assert_eq!(check_update(&current, &longer), Ok(()));
    }
}
