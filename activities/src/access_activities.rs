use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use plinth_identity::Identity;
use plinth_proto::policy::{readers_policy_name, seeded_policies, writers_policy_name};
use plinth_proto::v1::{AccessSummary, Rule};
use plinth_workflows::contracts::{
    AccessSeed, AccessSetup, ReconcileAccess, RemoveAccessSchedule, RuleCheck, SeedAccess,
    TriggerAccessRun, ValidateRule,
};
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use plinth_control::access::{effective_access, plan_access, validate_rule};
use plinth_control::directory::Directory;
use plinth_control::{BackendError, NamespaceBackend};
use plinth_control::{ControlPlane, PolicySeeding};

/// The activities of policies and access runs.
#[derive(Debug, Clone)]
pub struct AccessActivities {
    backend: Arc<dyn NamespaceBackend>,
    directory: Arc<dyn Directory>,
    control: ControlPlane,
    admin_group: String,
    interval: Duration,
}

impl AccessActivities {
    /// Access kept on `backend`, resolved through `directory`; policies and schedules in
    /// `control`; members of `admin_group` never lose access; runs every `interval`.
    pub fn new(
        backend: Arc<dyn NamespaceBackend>,
        directory: Arc<dyn Directory>,
        control: ControlPlane,
        admin_group: String,
        interval: Duration,
    ) -> Self {
        Self {
            backend,
            directory,
            control,
            admin_group,
            interval,
        }
    }
}

#[activities]
impl AccessActivities {
    /// Seeds the namespace's two policies (if absent) and its access schedule.
    #[activity(definition = SeedAccess)]
    pub async fn seed_access(
        self: Arc<Self>,
        _ctx: ActivityContext,
        seed: AccessSeed,
    ) -> Result<AccessSetup, ActivityError> {
        let mut setup = AccessSetup::default();
        for policy in seeded_policies(&seed.namespace, &self.admin_group, &seed.owner) {
            let name = policy.name.clone();
            match self.control.ensure_policy(policy).await.map_err(failure)? {
                PolicySeeding::Created => setup.policies_created.push(name),
                PolicySeeding::EditorsChanged => setup.editors_changed.push(name),
                PolicySeeding::Unchanged => {}
            }
        }
        setup.schedule_written = self
            .control
            .ensure_access_schedule(&seed.namespace, self.interval)
            .await
            .map_err(failure)?;
        Ok(setup)
    }

    /// Deletes the namespace's access schedule.
    #[activity(definition = RemoveAccessSchedule)]
    pub async fn remove_access_schedule(
        self: Arc<Self>,
        _ctx: ActivityContext,
        namespace: String,
    ) -> Result<(), ActivityError> {
        self.control
            .delete_access_schedule(&namespace)
            .await
            .map_err(failure)
    }

    /// Starts the namespace's access run now.
    #[activity(definition = TriggerAccessRun)]
    pub async fn trigger_access_run(
        self: Arc<Self>,
        _ctx: ActivityContext,
        namespace: String,
    ) -> Result<bool, ActivityError> {
        self.control
            .trigger_access_run(&namespace)
            .await
            .map_err(failure)
    }

    /// Checks a rule against the worker's directory.
    #[activity(definition = ValidateRule)]
    pub async fn validate_rule(
        self: Arc<Self>,
        _ctx: ActivityContext,
        rule: Rule,
    ) -> Result<RuleCheck, ActivityError> {
        Ok(validate_rule(&rule, self.directory.as_ref()).map_err(|e| e.to_string()))
    }

    /// Resolves the namespace's policies through the directory and applies the difference.
    #[activity(definition = ReconcileAccess)]
    pub async fn reconcile_access(
        self: Arc<Self>,
        _ctx: ActivityContext,
        namespace: String,
    ) -> Result<AccessSummary, ActivityError> {
        let summary = reconcile_access(
            &namespace,
            &self.control,
            self.backend.as_ref(),
            self.directory.as_ref(),
            &self.admin_group,
        )
        .await
        .inspect_err(|_| crate::telemetry::access_run(None))
        .map_err(failure)?;
        crate::telemetry::access_run(Some((summary.granted, summary.changed, summary.revoked)));
        tracing::info!(
            namespace,
            granted = summary.granted,
            changed = summary.changed,
            revoked = summary.revoked,
            unchanged = summary.unchanged,
            backend_writes = summary.backend_writes,
            "access reconciled"
        );
        Ok(summary)
    }
}

/// One access run of Temporal namespace `namespace`: reads its two policies, resolves them
/// through `directory`, and applies only the difference to `backend`. Members of
/// `admin_group` keep whatever access they hold.
pub async fn reconcile_access(
    namespace: &str,
    control: &ControlPlane,
    backend: &dyn NamespaceBackend,
    directory: &dyn Directory,
    admin_group: &str,
) -> Result<AccessSummary, BackendError> {
    let mut policies = Vec::new();
    for name in [
        writers_policy_name(namespace),
        readers_policy_name(namespace),
    ] {
        policies.extend(control.policy(&name).await?);
    }
    let desired = effective_access(&policies, directory);
    let current = backend.list_access(namespace).await?;
    let admins: BTreeSet<String> = directory
        .active_members(admin_group)
        .into_iter()
        .map(|email| Identity::User { email }.to_string())
        .collect();
    let keeps_access = |identity: &str| admins.contains(identity);
    let (changes, mut summary) = plan_access(&current, &desired, &keeps_access);
    let writes = backend.apply_access(namespace, &changes).await?;
    summary.backend_writes = i32::try_from(writes).unwrap_or(i32::MAX);
    Ok(summary)
}

/// Refusals fail the activity for good; passing faults are retried by Temporal.
pub(crate) fn failure(error: BackendError) -> ActivityError {
    match error {
        BackendError::Rejected(_) => {
            ActivityError::application(ApplicationFailure::non_retryable(error))
        }
        BackendError::Unavailable(_) => ActivityError::application(ApplicationFailure::new(error)),
    }
}
