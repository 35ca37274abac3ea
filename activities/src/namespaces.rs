use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use plinth_proto::v1::{Namespace, NamespaceSpec};
use plinth_proto::{ValidationRules, validate_namespace};
use plinth_workflows::contracts::{
    DeleteNamespace, LoadPlatformSettings, PlatformSettings, ReconcileNamespace, ReconcileReport,
    ValidateNamespace, ValidationReport,
};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::access_activities::failure;
use crate::backend::{NamespaceBackend, missing_search_attributes};
use crate::directory::Directory;

/// The activities of `ProvisionNamespace`.
#[derive(Debug, Clone)]
pub struct NamespaceActivities {
    backend: Arc<dyn NamespaceBackend>,
    directory: Arc<dyn Directory>,
    rules: ValidationRules,
    resync_interval: Duration,
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
        }
    }
}

#[activities]
impl NamespaceActivities {
    /// The worker's platform settings.
    #[activity(definition = LoadPlatformSettings)]
    pub async fn load_platform_settings(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<PlatformSettings, ActivityError> {
        Ok(PlatformSettings {
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
        _ctx: ActivityContext,
        spec: NamespaceSpec,
    ) -> Result<ReconcileReport, ActivityError> {
        let started = std::time::Instant::now();
        let result = self.reconcile(&spec).await;
        crate::telemetry::reconciled(result.is_ok(), started.elapsed());
        result
    }

    /// Deletes the Temporal namespace.
    #[activity(definition = DeleteNamespace)]
    pub async fn delete_namespace(
        self: Arc<Self>,
        _ctx: ActivityContext,
        name: String,
    ) -> Result<(), ActivityError> {
        self.backend.delete(&name).await.map_err(failure)
    }
}

impl NamespaceActivities {
    /// Registers or updates the namespace until it matches `spec`.
    async fn reconcile(&self, spec: &NamespaceSpec) -> Result<ReconcileReport, ActivityError> {
        let backend = &self.backend;
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
            endpoint: backend.endpoint(&spec.name),
        })
    }
}
