//! The `plinth.v1` API: resource messages and `PlatformService`, generated from `proto/`, plus
//! the one place resources are parsed and validated.
//!
//! The generated messages double as the resource model: they carry serde derives in the
//! resource's camelCase shape, so the same type is read from YAML, sent over gRPC, and passed to
//! the `ProvisionNamespace` workflow as JSON.

mod documents;
mod validation;

pub use documents::{DocumentError, parse_documents};
pub use validation::{FieldError, ValidationRules, check_update, validate_namespace};

/// Generated `plinth.v1` messages and service.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("plinth.v1");
}

/// `apiVersion` of every Plinth resource.
pub const API_VERSION: &str = "temporal.plinth.dev/v1beta1";
/// `kind` of namespace resources.
pub const KIND_NAMESPACE: &str = "Namespace";

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
    /// The namespace is gone.
    pub const DELETED: &str = "Deleted";
}

/// Outcome of an apply, as `plinth apply` prints it.
pub mod outcome {
    /// The resource did not exist.
    pub const CREATED: &str = "created";
    /// The spec changed.
    pub const CONFIGURED: &str = "configured";
    /// Nothing changed; nothing was written.
    pub const UNCHANGED: &str = "unchanged";
}
