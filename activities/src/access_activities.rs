use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use plinth_identity::Identity;
use plinth_proto::policy::{readers_policy_name, seeded_policies, writers_policy_name};
use plinth_proto::v1::{AccessSummary, Policy, Rule};
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
        ctx: ActivityContext,
        namespace: String,
    ) -> Result<AccessSummary, ActivityError> {
        let run = reconcile_access(
            &namespace,
            &self.control,
            self.backend.as_ref(),
            self.directory.as_ref(),
            &self.admin_group,
        );
        let summary = crate::heartbeat::with_heartbeat(ctx, run)
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

/// One access run of Temporal namespace `namespace`: reads its two policies and applies them
/// with [`apply_policies`].
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
    apply_policies(namespace, &policies, backend, directory, admin_group).await
}

/// Resolves `policies` through `directory` and applies only the difference to `backend`'s
/// access list of `namespace`. Members of `admin_group` keep whatever access they hold.
pub async fn apply_policies(
    namespace: &str,
    policies: &[Policy],
    backend: &dyn NamespaceBackend,
    directory: &dyn Directory,
    admin_group: &str,
) -> Result<AccessSummary, BackendError> {
    let desired = effective_access(policies, directory);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use plinth_control::directory::FileDirectory;
    use plinth_control::memory::MemoryBackend;
    use plinth_control::{AccessChange, AccessLevel};
    use plinth_proto::v1::NamespaceSpec;

    const DIRECTORY: &str = "
users:
  - email: dev@example.com
  - email: alice@example.com
  - email: bob@example.com
groups:
  - name: admins
    members: [dev@example.com]
  - name: payments
    members: [alice@example.com, bob@example.com]
";

    /// Namespace `orders`, whose writers' policy names the payments group.
    async fn setup() -> (Arc<MemoryBackend>, FileDirectory, Vec<Policy>) {
        let backend = Arc::new(MemoryBackend::default());
        let spec = NamespaceSpec {
            name: "orders".into(),
            ..Default::default()
        };
        backend.register(&spec).await.unwrap();
        let [mut writers, readers] = seeded_policies("orders", "admins", "payments");
        writers.rules.push(Rule {
            group: "payments".into(),
            ..Default::default()
        });
        let directory = FileDirectory::parse(DIRECTORY).unwrap();
        (backend, directory, vec![writers, readers])
    }

    async fn run(
        backend: &MemoryBackend,
        directory: &FileDirectory,
        policies: &[Policy],
    ) -> Result<AccessSummary, BackendError> {
        apply_policies("orders", policies, backend, directory, "admins").await
    }

    fn writers() -> BTreeMap<String, AccessLevel> {
        ["user:alice@example.com", "user:bob@example.com"]
            .map(|identity| (identity.to_owned(), AccessLevel::Write))
            .into()
    }

    #[tokio::test]
    async fn an_access_run_grants_what_the_policies_give() {
        let (backend, directory, policies) = setup().await;
        let summary = run(&backend, &directory, &policies).await.unwrap();
        assert_eq!((summary.granted, summary.backend_writes), (2, 2));
        assert_eq!(backend.list_access("orders").await.unwrap(), writers());
    }

    #[tokio::test]
    async fn a_second_access_run_writes_nothing() {
        let (backend, directory, policies) = setup().await;
        run(&backend, &directory, &policies).await.unwrap();
        let writes = backend.writes().len();
        let summary = run(&backend, &directory, &policies).await.unwrap();
        assert_eq!((summary.unchanged, summary.backend_writes), (2, 0));
        assert_eq!(backend.writes().len(), writes);
    }

    #[tokio::test]
    async fn access_granted_behind_plinths_back_is_revoked() {
        let (backend, directory, policies) = setup().await;
        run(&backend, &directory, &policies).await.unwrap();
        backend
            .apply_access(
                "orders",
                &[AccessChange::Grant(
                    "user:mallory@example.com".into(),
                    AccessLevel::Write,
                )],
            )
            .await
            .unwrap();
        let summary = run(&backend, &directory, &policies).await.unwrap();
        assert_eq!(summary.revoked, 1);
        assert_eq!(backend.list_access("orders").await.unwrap(), writers());
    }

    #[tokio::test]
    async fn an_access_run_that_failed_between_two_grants_is_finished_by_the_next() {
        let (backend, directory, policies) = setup().await;
        backend.fail_after("grant", 1);
        assert!(run(&backend, &directory, &policies).await.is_err());
        assert_eq!(backend.list_access("orders").await.unwrap().len(), 1);
        let summary = run(&backend, &directory, &policies).await.unwrap();
        assert_eq!((summary.granted, summary.unchanged), (1, 1));
        assert_eq!(backend.list_access("orders").await.unwrap(), writers());
    }
}
