use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use plinth_proto::v1::{Namespace, NamespaceSpec};
use plinth_proto::{ValidationRules, validate_namespace};
use plinth_workflows::contracts::{
    DeleteNamespace, LoadPlatformSettings, ReconcileNamespace, ReconcileReport, ResyncSettings,
    ValidateNamespace, ValidationReport,
};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::access_activities::failure;
use plinth_codec::{CodecError, NamespaceKeys};
use plinth_control::directory::Directory;
use plinth_control::{NamespaceBackend, missing_search_attributes};
use temporalio_common::error::ApplicationFailure;

/// The activities of `ProvisionNamespace`.
#[derive(Debug, Clone)]
pub struct NamespaceActivities {
    backend: Arc<dyn NamespaceBackend>,
    directory: Arc<dyn Directory>,
    rules: ValidationRules,
    resync_interval: Duration,
    /// Makes each namespace's own key encryption key, when namespaces have their own.
    keys: Option<Arc<dyn NamespaceKeys>>,
}

impl NamespaceActivities {
    /// Activities reconciling on `backend`, validating with `rules` and `directory`.
    pub fn new(
        backend: Arc<dyn NamespaceBackend>,
        directory: Arc<dyn Directory>,
        rules: ValidationRules,
        resync_interval: Duration,
    ) -> Self {
        Self {
            backend,
            directory,
            rules,
            resync_interval,
            keys: None,
        }
    }

    /// Gives each namespace a key encryption key of its own from `keys` as it is reconciled.
    pub fn with_namespace_keys(mut self, keys: Arc<dyn NamespaceKeys>) -> Self {
        self.keys = Some(keys);
        self
    }
}

#[activities]
impl NamespaceActivities {
    /// The worker's platform settings.
    #[activity(definition = LoadPlatformSettings)]
    pub async fn load_platform_settings(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<ResyncSettings, ActivityError> {
        Ok(ResyncSettings {
            resync_interval_secs: self.resync_interval.as_secs().max(1),
        })
    }

    /// Validates a resource exactly as the platform API does.
    #[activity(definition = ValidateNamespace)]
    pub async fn validate_namespace(
        self: Arc<Self>,
        _ctx: ActivityContext,
        resource: Namespace,
    ) -> Result<ValidationReport, ActivityError> {
        let directory = self.directory.clone();
        let error = validate_namespace(&resource, &self.rules, &|group| {
            directory.group_exists(group)
        })
        .err()
        .map(|e| e.to_string());
        Ok(ValidationReport { error })
    }

    /// Brings the namespace to the spec; every write follows from what `describe` observed.
    #[activity(definition = ReconcileNamespace)]
    pub async fn reconcile_namespace(
        self: Arc<Self>,
        ctx: ActivityContext,
        spec: NamespaceSpec,
    ) -> Result<ReconcileReport, ActivityError> {
        let started = std::time::Instant::now();
        let result = crate::heartbeat::with_heartbeat(ctx, self.reconcile(&spec)).await;
        crate::telemetry::reconciled(result.is_ok(), started.elapsed());
        result
    }

    /// Deletes the Temporal namespace.
    #[activity(definition = DeleteNamespace)]
    pub async fn delete_namespace(
        self: Arc<Self>,
        ctx: ActivityContext,
        name: String,
    ) -> Result<(), ActivityError> {
        crate::heartbeat::with_heartbeat(ctx, self.backend.delete(&name))
            .await
            .map_err(failure)
    }
}

impl NamespaceActivities {
    /// Registers or updates the namespace until it matches `spec`.
    async fn reconcile(&self, spec: &NamespaceSpec) -> Result<ReconcileReport, ActivityError> {
        let backend = &self.backend;
        let temporal_namespace = backend.temporal_name(&spec.name);
        // Before the namespace exists: nothing is sealed for it without its key.
        let encryption_key = match &self.keys {
            Some(keys) => {
                // Files and tokens block: off the runtime, so the heartbeat goes on.
                let (keys, namespace) = (keys.clone(), temporal_namespace.clone());
                tokio::task::spawn_blocking(move || keys.ensure(&namespace))
                    .await
                    .unwrap_or_else(|e| {
                        Err(CodecError::Provider {
                            provider: "namespace keys",
                            key: temporal_namespace.clone(),
                            reason: e.to_string(),
                        })
                    })
                    .map_err(key_failure)?
            }
            None => String::new(),
        };
        let observed = backend.describe(&spec.name).await.map_err(failure)?;
        let created = observed.is_none();
        let (settings, existing_attributes) = match observed {
            None => {
                backend.register(spec).await.map_err(failure)?;
                (Vec::new(), BTreeMap::new())
            }
            Some(observed) => (
                observed.setting_differences(spec),
                observed.search_attributes,
            ),
        };
        if !settings.is_empty() {
            backend.update(spec).await.map_err(failure)?;
        }
        let missing = missing_search_attributes(&existing_attributes, spec);
        if !missing.is_empty() {
            backend
                .add_search_attributes(&spec.name, &missing)
                .await
                .map_err(failure)?;
        }
        let mut changes = if created {
            vec!["registered".to_owned()]
        } else {
            settings
        };
        changes.extend(
            missing
                .keys()
                .map(|name| format!("search attribute {name} added")),
        );
        Ok(ReconcileReport {
            created,
            changes,
            endpoint: backend.endpoint(&spec.name).await.map_err(failure)?,
            temporal_namespace,
            encryption_key,
        })
    }
}

/// Making a namespace's key fails only while its provider cannot be used: retried.
fn key_failure(error: CodecError) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plinth_control::directory::FileDirectory;
    use plinth_control::memory::MemoryBackend;

    fn spec() -> NamespaceSpec {
        NamespaceSpec {
            name: "orders".into(),
            owner: "payments".into(),
            retention_days: 7,
            description: "orders".into(),
            search_attributes: [("CustomerId".to_owned(), "Keyword".to_owned())].into(),
            ..Default::default()
        }
    }

    fn activities(backend: &Arc<MemoryBackend>) -> NamespaceActivities {
        let directory = FileDirectory::parse("users: []\ngroups: []\n").unwrap();
        NamespaceActivities::new(
            backend.clone(),
            Arc::new(directory),
            ValidationRules::default(),
            Duration::from_secs(300),
        )
    }

    #[tokio::test]
    async fn a_missing_namespace_is_registered_with_its_search_attributes() {
        let backend = Arc::new(MemoryBackend::default());
        let report = activities(&backend).reconcile(&spec()).await.unwrap();
        assert!(report.created);
        assert_eq!(
            backend.writes(),
            ["register orders", "add_search_attributes orders"]
        );
        let observed = backend.describe("orders").await.unwrap().unwrap();
        assert_eq!(observed.retention_days, 7);
        assert_eq!(observed.search_attributes["CustomerId"], "Keyword");
    }

    #[tokio::test]
    async fn a_second_run_writes_nothing() {
        let backend = Arc::new(MemoryBackend::default());
        let activities = activities(&backend);
        activities.reconcile(&spec()).await.unwrap();
        let writes = backend.writes().len();
        let report = activities.reconcile(&spec()).await.unwrap();
        assert!(!report.created);
        assert!(report.changes.is_empty(), "{:?}", report.changes);
        assert_eq!(backend.writes().len(), writes);
    }

    #[tokio::test]
    async fn drift_is_repaired_and_reported() {
        let backend = Arc::new(MemoryBackend::default());
        let activities = activities(&backend);
        activities.reconcile(&spec()).await.unwrap();
        let drifted = NamespaceSpec {
            retention_days: 3,
            ..spec()
        };
        backend.update(&drifted).await.unwrap();
        let report = activities.reconcile(&spec()).await.unwrap();
        assert_eq!(report.changes, ["retention 3d → 7d"]);
        let observed = backend.describe("orders").await.unwrap().unwrap();
        assert_eq!(observed.retention_days, 7);
    }

    #[tokio::test]
    async fn a_run_that_failed_between_two_writes_is_finished_by_the_next() {
        let backend = Arc::new(MemoryBackend::default());
        let activities = activities(&backend);
        backend.fail_after("add_search_attributes", 0);
        assert!(activities.reconcile(&spec()).await.is_err());
        let report = activities.reconcile(&spec()).await.unwrap();
        assert!(!report.created, "registered once, by the first run");
        assert_eq!(report.changes, ["search attribute CustomerId added"]);
        let registers = backend
            .writes()
            .iter()
            .filter(|w| w.starts_with("register"))
            .count();
        assert_eq!(registers, 1);
        let observed = backend.describe("orders").await.unwrap().unwrap();
        assert_eq!(observed.search_attributes["CustomerId"], "Keyword");
    }
}
