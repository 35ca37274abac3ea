//! The `plinth.v1` API: resource messages and `PlatformService`, generated from `proto/`, plus
//! the one place resources are parsed and validated.
//!
//! The generated messages double as the resource model: they carry serde derives in the
//! resource's camelCase shape, so the same type is read from YAML, sent over gRPC, and passed to
//! the `ProvisionNamespace` workflow as JSON.

pub mod audit;
mod documents;
pub mod policy;
mod validation;

pub use documents::{DocumentError, Resource, parse_documents};
pub use validation::{
    FieldError, SEARCH_ATTRIBUTE_TYPES, TEMPORAL_SYSTEM, ValidationRules, check_dns_label,
    check_update, validate_metrics_target, validate_namespace,
};

/// Generated `plinth.v1` messages and service.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("plinth.v1");
}

/// `apiVersion` of every Plinth resource.
pub const API_VERSION: &str = "temporal.plinth.dev/v1beta1";
/// `kind` of namespace resources.
pub const KIND_NAMESPACE: &str = "Namespace";
/// `kind` of policy resources.
pub const KIND_POLICY: &str = "Policy";
/// `kind` of metrics target resources.
pub const KIND_METRICS_TARGET: &str = "MetricsTarget";
/// Seconds between scrapes of a metrics target that names no interval.
pub const DEFAULT_SCRAPE_INTERVAL_SECS: u64 = 60;

fn metadata_name(metadata: Option<&v1::ObjectMeta>) -> &str {
    metadata.map_or("", |m| m.name.as_str())
}

impl v1::Namespace {
    /// `metadata.name`, or empty.
    pub fn name(&self) -> &str {
        metadata_name(self.metadata.as_ref())
    }

    /// `metadata.namespace`, the owning application's group of resources, or empty.
    pub fn group(&self) -> &str {
        self.metadata.as_ref().map_or("", |m| m.namespace.as_str())
    }

    /// `metadata.generation`, or 0.
    pub fn generation(&self) -> i64 {
        self.metadata.as_ref().map_or(0, |m| m.generation)
    }

    /// The spec, or an empty one.
    pub fn spec_or_default(&self) -> v1::NamespaceSpec {
        self.spec.clone().unwrap_or_default()
    }

    /// One row of `plinth get namespaces`; a resource not yet published reads as Pending.
    pub fn summary(&self) -> v1::NamespaceSummary {
        let spec = self.spec_or_default();
        let phase = self.status.as_ref().map(|s| s.phase.clone());
        let temporal_name = self
            .status
            .as_ref()
            .map(|s| s.temporal_namespace.clone())
            .filter(|name| !name.is_empty())
            .unwrap_or(spec.name);
        v1::NamespaceSummary {
            name: self.name().to_owned(),
            temporal_name,
            owner: spec.owner,
            phase: phase.unwrap_or_else(|| phase::PENDING.into()),
            retention_days: spec.retention_days,
        }
    }

    /// Whether applying `other` over `self` would change nothing: same spec and group.
    pub fn same_desired_state(&self, other: &v1::Namespace) -> bool {
        self.spec_or_default() == other.spec_or_default() && self.group() == other.group()
    }
}

impl v1::MetricsTarget {
    /// `metadata.name`, or empty.
    pub fn name(&self) -> &str {
        metadata_name(self.metadata.as_ref())
    }

    /// The spec, or an empty one.
    pub fn spec_or_default(&self) -> v1::MetricsTargetSpec {
        self.spec.clone().unwrap_or_default()
    }
}

impl v1::MetricsTargetSpec {
    /// Seconds between scrapes: `intervalSeconds`, or the default when it is 0.
    pub fn interval_secs(&self) -> u64 {
        match u64::try_from(self.interval_seconds) {
            Ok(0) | Err(_) => DEFAULT_SCRAPE_INTERVAL_SECS,
            Ok(seconds) => seconds,
        }
    }
}

/// A namespace resource named `name` (in the resource group `group`) with `spec`.
pub fn namespace_resource(name: &str, group: &str, spec: v1::NamespaceSpec) -> v1::Namespace {
    v1::Namespace {
        api_version: API_VERSION.into(),
        kind: KIND_NAMESPACE.into(),
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            namespace: group.into(),
            generation: 0,
        }),
        spec: Some(spec),
        status: None,
    }
}

/// Values of `status.phase`.
pub mod phase {
    /// Accepted, not reconciled yet.
    pub const PENDING: &str = "Pending";
    /// The backend is being brought to the spec.
    pub const PROVISIONING: &str = "Provisioning";
    /// The backend matches the spec.
    pub const READY: &str = "Ready";
    /// The spec cannot be reconciled; `status.message` says why.
    pub const FAILED: &str = "Failed";
    /// Deletion in progress.
    pub const DELETING: &str = "Deleting";
    /// The namespace is gone; for a metrics target, scraping has stopped.
    pub const DELETED: &str = "Deleted";
    /// A metrics target is being scraped.
    pub const SCRAPING: &str = "Scraping";
}

/// Outcome of an apply, as `plinth apply` prints it.
pub mod outcome {
    /// The resource did not exist.
    pub const CREATED: &str = "created";
    /// The spec changed.
    pub const CONFIGURED: &str = "configured";
    /// Nothing changed; nothing was written.
    pub const UNCHANGED: &str = "unchanged";
    /// A call refused for want of access (an audit record's outcome).
    pub const DENIED: &str = "denied";
}
