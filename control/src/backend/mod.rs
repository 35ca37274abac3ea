//! Where namespaces live. One implementation per real system, each in its own module:
//! [`SelfHosted`] talks to a Temporal cluster's own APIs, [`Cloud`] to Temporal Cloud's Ops
//! API; [`memory::MemoryBackend`] keeps them in memory for tests.

use std::collections::BTreeMap;
use std::time::Duration;

use plinth_proto::SEARCH_ATTRIBUTE_TYPES;
use plinth_proto::policy::access;
use plinth_proto::v1::{ExportedWorkflow, NamespaceSpec};
use serde::{Deserialize, Serialize};
use temporalio_client::tonic::{Code, Status};
use temporalio_common::protos::temporal::api::history::v1::History;

mod cloud;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
pub mod progress;
mod self_hosted;

pub use cloud::{
    Cloud, CloudExportSink, CloudPrincipal, CloudSettings, SecretSource, UpstreamAuth,
    check_proxy_key,
};
pub use self_hosted::{DEFAULT_REGISTRY_REFRESH, MAX_HISTORY_BYTES, SelfHosted};

/// A namespace as the backend reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedNamespace {
    /// Retention of closed workflows, whole days.
    pub retention_days: i32,
    /// Free-text description; `None` where the backend keeps none.
    pub description: Option<String>,
    /// Owner e-mail (Plinth writes the owner group); `None` where the backend keeps none.
    pub owner_email: Option<String>,
    /// Custom search attributes, name to type.
    pub search_attributes: BTreeMap<String, String>,
    /// Whether the backend refuses to delete the namespace; `None` where it has no such
    /// protection.
    pub delete_protection: Option<bool>,
    /// Settings the platform's configuration decides (not the spec) that differ from it,
    /// each as `what observed → desired`.
    pub platform_drift: Vec<String>,
}

impl ObservedNamespace {
    /// How retention, description and owner differ from `spec`, each as
    /// `what observed → desired`. Search attributes are compared by
    /// [`missing_search_attributes`]: ones beyond the spec are not drift, Temporal cannot
    /// remove them.
    pub fn setting_differences(&self, spec: &NamespaceSpec) -> Vec<String> {
        let mut changes = Vec::new();
        if self.retention_days != spec.retention_days {
            changes.push(format!(
                "retention {}d → {}d",
                self.retention_days, spec.retention_days
            ));
        }
        if let Some(description) = &self.description
            && *description != spec.description
        {
            changes.push(format!(
                "description {description:?} → {:?}",
                spec.description
            ));
        }
        if let Some(owner) = &self.owner_email
            && *owner != spec.owner
        {
            changes.push(format!("owner {owner:?} → {:?}", spec.owner));
        }
        if let Some(protected) = self.delete_protection
            && protected == spec.allow_deletion
        {
            changes.push(format!(
                "delete protection {} → {}",
                on_off(protected),
                on_off(!spec.allow_deletion)
            ));
        }
        changes.extend(self.platform_drift.iter().cloned());
        changes
    }
}

/// The name of search attribute type `value`.
pub(crate) fn attribute_type_name(value: i32) -> &'static str {
    usize::try_from(value - 1)
        .ok()
        .and_then(|i| SEARCH_ATTRIBUTE_TYPES.get(i))
        .copied()
        .unwrap_or("Unspecified")
}

/// The number of search attribute type `name`; an unknown name is `Rejected`.
pub(crate) fn attribute_type_value(name: &str) -> Result<i32, BackendError> {
    SEARCH_ATTRIBUTE_TYPES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as i32 + 1)
        .ok_or_else(|| BackendError::Rejected(format!("unknown search attribute type {name}")))
}

/// Calls until the answer is none of `codes`, backing off (with jitter, so contending
/// callers spread out) from 20 ms up to `max_delay`, for at most `patience`.
pub(crate) async fn retry_while<T, F, Fut>(
    codes: &[Code],
    patience: Duration,
    max_delay: Duration,
    mut call: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = Duration::from_millis(20);
    loop {
        match call().await {
            Err(status)
                if codes.contains(&status.code()) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(delay.mul_f64(0.5 + jitter())).await;
                delay = (delay * 2).min(max_delay);
            }
            result => return result,
        }
    }
}

/// A fraction in [0, 1) that differs between callers and calls, to spread retries.
pub(crate) fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// Search attributes the spec names that `existing` lacks.
pub fn missing_search_attributes(
    existing: &BTreeMap<String, String>,
    spec: &NamespaceSpec,
) -> BTreeMap<String, String> {
    spec.search_attributes
        .iter()
        .filter(|(name, _)| !existing.contains_key(*name))
        .map(|(name, kind)| (name.clone(), kind.clone()))
        .collect()
}

/// What a namespace lets an identity do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessLevel {
    /// Describe, list, query, read history.
    Read,
    /// Everything but administration.
    Write,
    /// Administration; held by other means, never granted by Plinth.
    Admin,
}

impl AccessLevel {
    /// The level as written in policies and access lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => access::READ,
            Self::Write => access::WRITE,
            Self::Admin => access::ADMIN,
        }
    }

    /// Parses `read`, `write` or `admin`.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Read, Self::Write, Self::Admin]
            .into_iter()
            .find(|level| level.as_str() == text)
    }
}

/// One change to a namespace's access list; identities are written `user:<email>` or
/// `app:<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessChange {
    /// The identity had no access.
    Grant(String, AccessLevel),
    /// The identity had another level.
    Change(String, AccessLevel),
    /// The identity loses its access.
    Revoke(String),
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A passing fault (unreachable, overloaded, timed out): worth retrying.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the request: retrying the same request will not help.
    #[error("backend refused: {0}")]
    Rejected(String),
    /// What the backend holds is larger than Plinth reads (a history over Temporal's own
    /// limits): asking again will not help, and nothing else is wrong.
    #[error("too large: {0}")]
    TooLarge(String),
}

/// Namespace operations. Every method is idempotent: calling it again after a crash at any
/// point leaves the same end state.
#[async_trait::async_trait]
pub trait NamespaceBackend: Send + Sync + std::fmt::Debug {
    /// The namespace, or `None` when it does not exist.
    async fn describe(&self, name: &str) -> Result<Option<ObservedNamespace>, BackendError>;
    /// Creates the namespace (retention, description, owner); a namespace that already exists
    /// is left as it is. Returns once the namespace is usable. Long waits report to
    /// [`progress`].
    async fn register(&self, spec: &NamespaceSpec) -> Result<(), BackendError>;
    /// Sets retention, description and owner to the spec's.
    async fn update(&self, spec: &NamespaceSpec) -> Result<(), BackendError>;
    /// Adds search attributes (name to type) the namespace lacks.
    async fn add_search_attributes(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<(), BackendError>;
    /// Deletes the namespace; one already gone is fine.
    async fn delete(&self, name: &str) -> Result<(), BackendError>;
    /// Where clients reach the namespace.
    async fn endpoint(&self, name: &str) -> Result<String, BackendError>;
    /// The namespace's name on the data path: what clients send, and Temporal stores.
    fn temporal_name(&self, name: &str) -> String {
        name.to_owned()
    }

    /// Who may use namespace `name`, and how. An unknown namespace is `Rejected`.
    async fn list_access(&self, name: &str) -> Result<BTreeMap<String, AccessLevel>, BackendError>;
    /// Applies `changes` to namespace `name` (each identity at most once); returns how many
    /// backend writes that took.
    async fn apply_access(&self, name: &str, changes: &[AccessChange])
    -> Result<u32, BackendError>;

    /// Makes the backend export namespace `name`'s closed workflows itself when `enabled`
    /// (Temporal Cloud's export sink). False where Plinth exports them (a `HistoryExport`
    /// workflow reading [`Self::closed_workflows`]).
    async fn export_by_backend(&self, _name: &str, _enabled: bool) -> Result<bool, BackendError> {
        Ok(false)
    }

    /// A page of the workflows of namespace `name` that closed in `[from, to)` (unix
    /// seconds), from `page` (empty: the first).
    async fn closed_workflows(
        &self,
        _name: &str,
        _from: i64,
        _to: i64,
        _page: Vec<u8>,
    ) -> Result<ClosedPage, BackendError> {
        Err(BackendError::Rejected(
            "this backend keeps no closed workflows Plinth can read".into(),
        ))
    }

    /// Whether creating or changing a namespace waits on operations that take minutes
    /// (Temporal Cloud's): an activity follows them by heartbeats and resumes them after a
    /// crash. A backend whose calls end within seconds is reconciled in the workflow's task.
    fn has_long_operations(&self) -> bool {
        false
    }

    /// Whether the backend keeps an audit log of its own, which [`Self::account_audit`] reads
    /// (a self-hosted cluster keeps none: Plinth's trail is the whole record).
    fn keeps_account_audit(&self) -> bool {
        false
    }

    /// The account's own audit log after `cursor` (from the oldest the backend keeps when
    /// `None`), as Plinth's records, oldest first, at most `max`; `None` where the backend keeps
    /// no audit log of its own.
    async fn account_audit(
        &self,
        _cursor: Option<AccountAuditCursor>,
        _max: usize,
    ) -> Result<Option<AccountAudit>, BackendError> {
        Ok(None)
    }

    /// The whole history of one run of namespace `name`, or `None` once it is gone (past
    /// retention, or deleted).
    async fn history(
        &self,
        _name: &str,
        _workflow_id: &str,
        _run_id: &str,
    ) -> Result<Option<History>, BackendError> {
        Err(BackendError::Rejected(
            "this backend keeps no histories Plinth can read".into(),
        ))
    }
}

/// Where reading an account's audit log stopped: the emit time (RFC 3339, nanoseconds) and
/// log id of the last record taken, in the log's own order.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountAuditCursor {
    /// When the last record taken was emitted.
    pub time: String,
    /// Its log id.
    pub log_id: String,
}

/// Records of an account's audit log, and where the next read starts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountAudit {
    /// Oldest first, each with id `cloud:<log id>`.
    pub records: Vec<plinth_proto::audit::AuditRecord>,
    /// After the last of them; unchanged when there were none.
    pub cursor: Option<AccountAuditCursor>,
}

/// One page of closed workflows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClosedPage {
    /// The workflows, `key` and `item` unset.
    pub workflows: Vec<ExportedWorkflow>,
    /// Where the next page starts; empty after the last.
    pub next_page: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test]
    async fn a_call_is_tried_again_while_unanswered() {
        let calls = Cell::new(0);
        let answered = retry_while(
            &[Code::Cancelled],
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                calls.set(calls.get() + 1);
                let call = calls.get();
                async move {
                    if call < 3 {
                        Err(Status::cancelled("Timeout expired"))
                    } else {
                        Ok(call)
                    }
                }
            },
        )
        .await;
        assert_eq!(answered.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_refusal_is_not_tried_again() {
        let calls = Cell::new(0);
        let refused: Result<(), Status> = retry_while(
            &[Code::Cancelled],
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                calls.set(calls.get() + 1);
                async { Err(Status::permission_denied("no")) }
            },
        )
        .await;
        assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
        assert_eq!(calls.get(), 1);
    }
}
