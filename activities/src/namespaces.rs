use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use plinth_proto::v1::{Namespace, NamespaceSpec};
use plinth_proto::{ValidationRules, validate_namespace};
use plinth_workflows::contracts::{
    DeleteNamespace, LoadPlatformSettings, ReconcileNamespace, ReconcileReport, ResyncSettings,
    ScheduleShred, ShredKeys, ShredPlan, ShredRequest, ValidateNamespace, ValidationReport,
};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::access_activities::failure;
use plinth_codec::{CodecError, NamespaceKeys, ShredOutcome};
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
    /// How long a deleted namespace's keys wait before they are shredded.
    shred_delay: Duration,
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
            shred_delay: Duration::ZERO,
        }
    }

    /// Gives each namespace a key encryption key of its own from `keys` as it is reconciled;
    /// a namespace deleted with `spec.shredOnDelete` has them destroyed `shred_delay` later.
    pub fn with_namespace_keys(
        mut self,
        keys: Arc<dyn NamespaceKeys>,
        shred_delay: Duration,
    ) -> Self {
        self.keys = Some(keys);
        self.shred_delay = shred_delay;
        self
    }

    /// Runs `call` on the namespace keys off the runtime (files, tokens and KMS calls block),
    /// heartbeating meanwhile.
    async fn on_keys<T: Send + 'static>(
        &self,
        ctx: ActivityContext,
        namespace: &str,
        call: impl FnOnce(&dyn NamespaceKeys) -> Result<T, CodecError> + Send + 'static,
    ) -> Result<T, ActivityError> {
        let Some(keys) = self.keys.clone() else {
            return Err(ActivityError::application(
                ApplicationFailure::non_retryable(CodecError::NoNamespaceKey(namespace.to_owned())),
            ));
        };
        let work = async move {
            tokio::task::spawn_blocking(move || call(keys.as_ref()))
                .await
                .unwrap_or_else(|e| {
                    Err(CodecError::Provider {
                        provider: "namespace keys",
                        key: namespace.to_owned(),
                        reason: e.to_string(),
                    })
                })
                .map_err(key_failure)
        };
        crate::heartbeat::with_heartbeat(ctx, work).await
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
            reconcile_in_task: !self.backend.has_long_operations(),
        })
    }

    /// Validates a resource exactly as the platform API does.
    #[activity(definition = ValidateNamespace)]
    pub async fn validate_namespace(
        self: Arc<Self>,
        _ctx: ActivityContext,
        resource: Namespace,
    ) -> Result<ValidationReport, ActivityError> {
        Ok(ValidationReport {
            error: self.validation_error(&resource),
        })
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

    /// Marks the deleted namespace's own keys for destruction after `[keys] shred_delay`.
    #[activity(definition = ScheduleShred)]
    pub async fn schedule_shred(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: ShredRequest,
    ) -> Result<ShredPlan, ActivityError> {
        let namespace = self.backend.temporal_name(&request.name);
        let due = std::time::SystemTime::now() + self.shred_delay;
        let (name, by) = (namespace.clone(), request.by);
        let schedule = self
            .on_keys(ctx, &namespace, move |keys| {
                keys.schedule_shred(&name, &by, due)
            })
            .await?;
        tracing::info!(
            target: "plinth::audit",
            namespace,
            keys = ?schedule.keys,
            due = schedule.due,
            "namespace keys scheduled for shredding"
        );
        Ok(ShredPlan {
            wait_secs: seconds_until(&schedule.due),
            namespace,
            keys: schedule.keys,
            due: schedule.due,
            restored: false,
        })
    }

    /// Destroys the deleted namespace's keys whose time has come, unless restored.
    #[activity(definition = ShredKeys)]
    pub async fn shred_keys(
        self: Arc<Self>,
        ctx: ActivityContext,
        name: String,
    ) -> Result<ShredPlan, ActivityError> {
        let namespace = self.backend.temporal_name(&name);
        let ns = namespace.clone();
        let outcome = self
            .on_keys(ctx, &namespace, move |keys| keys.shred_due(&ns))
            .await?;
        let mut plan = ShredPlan {
            namespace: namespace.clone(),
            ..ShredPlan::default()
        };
        match outcome {
            ShredOutcome::Shredded(keys) => {
                tracing::info!(target: "plinth::audit", namespace, ?keys, "namespace keys shredded");
                plan.keys = keys;
            }
            ShredOutcome::Restored => plan.restored = true,
            ShredOutcome::NotYet(due) => {
                plan.wait_secs = seconds_until(&due).max(1);
                plan.due = due;
            }
        }
        Ok(plan)
    }
}

/// Whole seconds from now until `due` (RFC 3339), rounded up; 0 when past or unreadable.
fn seconds_until(due: &str) -> u64 {
    humantime::parse_rfc3339(due)
        .ok()
        .and_then(|due| due.duration_since(std::time::SystemTime::now()).ok())
        .map_or(0, |left| {
            left.as_secs() + u64::from(left.subsec_nanos() > 0)
        })
}

impl NamespaceActivities {
    /// What is wrong with `resource`, as the platform API says it, and what this installation
    /// cannot do of it.
    fn validation_error(&self, resource: &Namespace) -> Option<String> {
        let directory = self.directory.clone();
        if let Err(e) = validate_namespace(resource, &self.rules, &|group| {
            directory.group_exists(group)
        }) {
            return Some(e.to_string());
        }
        (resource.spec_or_default().shred_on_delete && self.keys.is_none()).then(|| {
            "spec.shredOnDelete: needs [keys] per_namespace = true; with one key for every \
             namespace, one namespace's key cannot be destroyed alone"
                .into()
        })
    }

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
    use plinth_control::directory::Snapshot;
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

    #[test]
    fn shredding_on_delete_is_refused_without_keys_of_each_namespaces_own() {
        let resource = |shred_on_delete| Namespace {
            api_version: "temporal.plinth.dev/v1beta1".into(),
            kind: "Namespace".into(),
            metadata: Some(plinth_proto::v1::ObjectMeta {
                name: "orders".into(),
                namespace: "payments".into(),
                ..Default::default()
            }),
            spec: Some(NamespaceSpec {
                shred_on_delete,
                regions: vec!["us-east-1".into()],
                ..spec()
            }),
            ..Default::default()
        };
        let directory = "users: []\ngroups:\n  - name: payments\n    members: []\n";
        let activities = || {
            NamespaceActivities::new(
                Arc::new(MemoryBackend::default()),
                Arc::new(Snapshot::from_yaml(directory).unwrap()),
                ValidationRules::default(),
                Duration::from_secs(300),
            )
        };
        let without = activities();
        assert_eq!(without.validation_error(&resource(false)), None);
        let refused = without
            .validation_error(&resource(true))
            .unwrap_or_default();
        assert!(refused.starts_with("spec.shredOnDelete:"), "{refused}");
        let dir = tempfile::tempdir().unwrap();
        let ring = dir.path().join("keyring.json");
        plinth_codec::KeyRing::init(&ring).unwrap();
        let with = activities().with_namespace_keys(
            Arc::new(plinth_codec::KeyRingNamespaceKeys(ring)),
            Duration::from_secs(60),
        );
        assert_eq!(with.validation_error(&resource(true)), None);
    }

    fn activities(backend: &Arc<MemoryBackend>) -> NamespaceActivities {
        let directory = Snapshot::from_yaml("users: []\ngroups: []\n").unwrap();
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
