use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use plinth_proto::v1::{Namespace, NamespaceSpec};
use plinth_proto::{ValidationRules, validate_namespace};
use plinth_workflows::contracts::{
    DeleteNamespace, LoadPlatformSettings, PlatformSettings, ReconcileNamespace, ReconcileReport,
    ValidateNamespace, ValidationReport,
};
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::backend::{BackendError, NamespaceBackend, missing_search_attributes};
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
        let backend = &self.backend;
        let wanted: BTreeMap<String, String> = spec
            .search_attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let report = match backend.describe(&spec.name).await.map_err(failure)? {
            None => {
                backend.register(&spec).await.map_err(failure)?;
                backend
                    .add_search_attributes(&spec.name, &wanted)
                    .await
                    .map_err(failure)?;
                ReconcileReport {
                    created: true,
                    changes: vec!["registered".into()],
                    endpoint: String::new(),
                }
            }
            Some(observed) => {
                let changes = observed.differences(&spec);
                let settings_differ = observed.retention_days != spec.retention_days
                    || observed.description != spec.description
                    || observed.owner_email != spec.owner;
                if settings_differ {
                    backend.update(&spec).await.map_err(failure)?;
                }
                let missing = missing_search_attributes(&observed.search_attributes, &spec);
                if !missing.is_empty() {
                    backend
                        .add_search_attributes(&spec.name, &missing)
                        .await
                        .map_err(failure)?;
                }
                ReconcileReport {
                    created: false,
                    changes,
                    endpoint: String::new(),
                }
            }
        };
        Ok(ReconcileReport {
            endpoint: backend.endpoint(&spec.name),
            ..report
        })
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

/// Refusals fail the activity for good; passing faults are retried by Temporal.
fn failure(error: BackendError) -> ActivityError {
    match error {
        BackendError::Rejected(_) => {
            ActivityError::application(ApplicationFailure::non_retryable(error))
        }
        BackendError::Unavailable(_) => ActivityError::application(ApplicationFailure::new(error)),
    }
}
