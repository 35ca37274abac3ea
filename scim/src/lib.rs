//! SCIM 2.0 (RFC 7643, RFC 7644): identity providers push people and groups to `/scim/v2`.
//!
//! The service ([`app`]) checks a bearer token, validates what is pushed against a small
//! schema, applies filters and PATCH operations, and keeps each resource in a [`ScimStore`]
//! with a version that is its ETag. [`ScimDirectory`] reads the store back as the platform's
//! directory.

#![forbid(unsafe_code)]

pub mod filter;
mod http;
#[cfg(any(test, feature = "memory"))]
mod memory;
pub mod patch;
pub mod schema;
mod source;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use http::{ChangeListener, MAX_BODY_BYTES, MAX_RESOURCE_BYTES, ScimService, new_token};
#[cfg(any(test, feature = "memory"))]
pub use memory::MemoryStore;
pub use schema::Kind;
pub use source::ScimDirectory;

/// One User or Group as kept: its attributes under their schema names, and what the server
/// assigns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub kind: Kind,
    /// Assigned by Plinth when the resource is created; never changes.
    pub id: String,
    /// Starts at 1 and grows by one with each change: the ETag.
    pub version: u64,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339.
    pub modified: String,
    pub attributes: Map<String, Value>,
}

impl Resource {
    /// The unique name (`userName` or `displayName`) as stored.
    pub fn name(&self) -> &str {
        self.attributes
            .get(self.kind.name_attribute())
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The name as uniqueness compares it.
    pub fn name_key(&self) -> String {
        self.name().to_lowercase()
    }

    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }

    /// The resource as served, its URIs under `base` (`https://host/scim/v2`).
    pub fn render(&self, base: &str) -> Map<String, Value> {
        let mut shown = Map::new();
        shown.insert("schemas".into(), json!([self.kind.schema()]));
        shown.insert("id".into(), json!(self.id));
        for (key, value) in &self.attributes {
            shown.insert(key.clone(), value.clone());
        }
        if let Some(Value::Array(members)) = shown.get_mut("members") {
            for member in members.iter_mut().filter_map(Value::as_object_mut) {
                let endpoint = match member.get("type").and_then(Value::as_str) {
                    Some("Group") => "Groups",
                    _ => "Users",
                };
                if let Some(id) = member.get("value").and_then(Value::as_str) {
                    let uri = format!("{base}/{endpoint}/{id}");
                    member.insert("$ref".into(), json!(uri));
                }
            }
        }
        shown.insert(
            "meta".into(),
            json!({
                "resourceType": self.kind.name(),
                "created": self.created,
                "lastModified": self.modified,
                "version": self.etag(),
                "location": format!("{base}/{}/{}", self.kind.endpoint(), self.id),
            }),
        );
        shown
    }
}

/// Why a store did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No resource has that id (or it was deleted).
    #[error("not found")]
    NotFound,
    /// The resource changed since the version the change was based on.
    #[error("changed meanwhile: version {current} is current")]
    Stale {
        /// The version now stored.
        current: u64,
    },
    /// Another resource of the kind already has the name.
    #[error("{0} is taken by another resource")]
    Taken(String),
    /// The storage could not be reached or failed.
    #[error("{0}")]
    Unavailable(String),
}

/// Where resources are kept. Each write is checked against the version it was based on.
#[async_trait::async_trait]
pub trait ScimStore: Send + Sync + std::fmt::Debug + 'static {
    /// Keeps a new resource; `Taken` when another of its kind has its name.
    async fn create(&self, resource: &Resource) -> Result<(), StoreError>;
    /// The resource, if it exists.
    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Resource>, StoreError>;
    /// Replaces `current`, as read, with `resource`, if it is still at `current`'s version.
    async fn replace(&self, resource: &Resource, current: &Resource) -> Result<(), StoreError>;
    /// Deletes the resource, if stored at version `expected` when one is given.
    async fn delete(&self, kind: Kind, id: &str, expected: Option<u64>) -> Result<(), StoreError>;
    /// Every resource of `kind`, or those whose name is `name` (without case).
    async fn list(&self, kind: Kind, name: Option<&str>) -> Result<Vec<Resource>, StoreError>;
}

/// A SCIM error response (RFC 7644 §3.12).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {}: {detail}", scim_type.unwrap_or("error"))]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    pub fn bad_request(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self::new(400, Some(scim_type), detail)
    }

    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad_request("invalidValue", detail)
    }

    pub fn body(&self) -> Value {
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = json!(scim_type);
        }
        body
    }
}
