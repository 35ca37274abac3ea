use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use plinth_identity::Identity;
use plinth_proto::policy::{readers_policy_name, seeded_policies, writers_policy_name};
use plinth_proto::v1::{AccessRequest, AccessSummary, Policy, Rule};
use plinth_workflows::contracts::{
    AccessApplied, AccessPlan, AccessSeed, AccessSetup, AccessStep, ApplyAccess, ApplyAccessSteps,
    GrantChange, PlanAccess, ReconcileAccess, RemoveAccessSchedule, RuleCheck, SeedAccess,
    TriggerAccessRun, TriggerGrantRun, ValidateRule,
};
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use plinth_control::access::{effective_access, plan_access, validate_rule};
use plinth_control::contract::ACCESS_GRANTED;
use plinth_control::directory::Directory;
use plinth_control::{AccessChange, AccessLevel, BackendError, NamespaceBackend};
use plinth_control::{ControlPlane, PolicySeeding, ScheduleWrite};

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
        let seeded = seeded_policies(&seed.namespace, &self.admin_group, &seed.owner);
        let seeding = seeded.len();
        for policy in seeded {
            let name = policy.name.clone();
            match self.control.ensure_policy(policy).await.map_err(failure)? {
                PolicySeeding::Created => setup.policies_created.push(name),
                PolicySeeding::EditorsChanged => setup.editors_changed.push(name),
                PolicySeeding::Unchanged => {}
            }
        }
        // Each run is a workflow, which a burst of new namespaces would otherwise start all at
        // once: with policies only now started, the schedule is created without a run, and
        // one is asked for below if there is anything to apply.
        let started = setup.policies_created.len() == seeding;
        let schedule = self
            .control
            .ensure_access_schedule(&seed.namespace, self.interval, !started)
            .await
            .map_err(failure)?;
        setup.schedule_written =
            !matches!(schedule, ScheduleWrite::Unchanged | ScheduleWrite::Moved);
        // A new policy starts quiet (its memo already shows it): one run applies the new
        // policies, the schedule's first if it was just created. Read after the schedule
        // exists, so a rule or grant that came meanwhile, whose own trigger found no schedule,
        // is seen here.
        let run = match schedule {
            ScheduleWrite::Created => started && self.first_run_applies(&seed.namespace).await,
            _ => !setup.policies_created.is_empty(),
        };
        if run {
            self.control
                .trigger_access_run(&seed.namespace)
                .await
                .map_err(failure)?;
        }
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

    /// Waits (up to a minute, heartbeating) until the grant reads as in force or gone, then
    /// starts the namespace's access run. A grant that never showed is applied by the
    /// scheduled runs once it does (false); one that still reads as in force after its end
    /// fails the try, which is retried.
    #[activity(definition = TriggerGrantRun)]
    pub async fn trigger_grant_run(
        self: Arc<Self>,
        ctx: ActivityContext,
        change: GrantChange,
    ) -> Result<bool, ActivityError> {
        let mut shown = false;
        for _ in 0..60 {
            // A grant revoked before it showed never will.
            if change.granted {
                let open = self
                    .control
                    .open_access_request(&change.id)
                    .await
                    .map_err(failure)?;
                if open.is_none_or(|request| request.state != ACCESS_GRANTED) {
                    break;
                }
            }
            let live = self
                .control
                .live_grants(&change.namespace, SystemTime::now())
                .await
                .map_err(failure)?;
            shown = live.iter().any(|grant| grant.id == change.id) == change.granted;
            if shown {
                break;
            }
            let _ = ctx.record_heartbeat(change.id.clone()).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // A run that still found the grant would apply it again: try again later.
        if !shown && !change.granted {
            return Err(failure(BackendError::Unavailable(format!(
                "grant {} of {} still reads as in force",
                change.id, change.namespace
            ))));
        }
        let state = if change.granted { "in force" } else { "ended" };
        tracing::info!(
            namespace = %change.namespace,
            request = %change.id,
            visible = shown,
            "access grant {state}: access run started"
        );
        self.control
            .trigger_access_run(&change.namespace)
            .await
            .map_err(failure)?;
        Ok(shown)
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
        reconciled(&namespace, &summary);
        Ok(summary)
    }

    /// What an access run of `namespace` changes, changing nothing.
    #[activity(definition = PlanAccess)]
    pub async fn plan_access(
        self: Arc<Self>,
        ctx: ActivityContext,
        namespace: String,
    ) -> Result<AccessPlan, ActivityError> {
        let plan = async {
            let policies = policies_of(&namespace, &self.control).await?;
            plan_policies(
                &namespace,
                &policies,
                self.backend.as_ref(),
                self.directory.as_ref(),
                &self.admin_group,
            )
            .await
        };
        let plan = crate::heartbeat::with_heartbeat(ctx, plan)
            .await
            .inspect_err(|_| crate::telemetry::access_run(None))
            .map_err(failure)?;
        // A plan of no change is the whole run: no apply follows it.
        if plan.steps.is_empty() {
            reconciled(&namespace, &plan.summary);
        }
        Ok(plan)
    }

    /// Makes what the policies give now, for the run that planned `plan`.
    #[activity(definition = ApplyAccess)]
    pub async fn apply_access(
        self: Arc<Self>,
        ctx: ActivityContext,
        plan: AccessPlan,
    ) -> Result<AccessSummary, ActivityError> {
        Ok(self.apply_fresh(ctx, plan).await?.summary)
    }

    /// As `apply_access`, answering the steps made.
    #[activity(definition = ApplyAccessSteps)]
    pub async fn apply_access_steps(
        self: Arc<Self>,
        ctx: ActivityContext,
        plan: AccessPlan,
    ) -> Result<AccessApplied, ActivityError> {
        self.apply_fresh(ctx, plan).await
    }
}

impl AccessActivities {
    /// Whether a first run of `namespace` has anything to apply: what it reads gives someone
    /// access (rules of a policy restarted from its last state, a grant on request), or
    /// someone holds access already. When that cannot be read, true: the run finds out.
    async fn first_run_applies(&self, namespace: &str) -> bool {
        match policies_of(namespace, &self.control).await {
            Ok(policies) if policies.iter().all(|policy| policy.rules.is_empty()) => {}
            _ => return true,
        }
        self.backend
            .list_access(namespace)
            .await
            .map_or(true, |held| !held.is_empty())
    }

    /// What is applied is planned afresh, as a whole run did before runs were planned first:
    /// a plan made before a change of policy or directory (or by an overlapping run) must not
    /// give back what a later run took away. `plan` tells which steps in effect an earlier
    /// attempt of this run made.
    async fn apply_fresh(
        &self,
        ctx: ActivityContext,
        plan: AccessPlan,
    ) -> Result<AccessApplied, ActivityError> {
        let namespace = plan.namespace.clone();
        let run = async {
            let policies = policies_of(&namespace, &self.control).await?;
            let fresh = plan_policies(
                &namespace,
                &policies,
                self.backend.as_ref(),
                self.directory.as_ref(),
                &self.admin_group,
            )
            .await?;
            apply_plan(fresh, &plan.steps, self.backend.as_ref()).await
        };
        let applied = crate::heartbeat::with_heartbeat(ctx, run)
            .await
            .inspect_err(|_| crate::telemetry::access_run(None))
            .map_err(failure)?;
        reconciled(&namespace, &applied.summary);
        Ok(applied)
    }
}

/// Counts and logs a finished access run.
fn reconciled(namespace: &str, summary: &AccessSummary) {
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
}

/// The two policies of Temporal namespace `namespace`, and one for each grant on request in
/// force: the access run applies both alike, so a grant never lowers what a policy gives.
async fn policies_of(namespace: &str, control: &ControlPlane) -> Result<Vec<Policy>, BackendError> {
    let mut policies = Vec::new();
    for name in [
        writers_policy_name(namespace),
        readers_policy_name(namespace),
    ] {
        policies.extend(control.policy(&name).await?);
    }
    // Without visibility the grants are left out: they fail closed, while the policies (and
    // departures from them) still apply.
    match control.live_grants(namespace, SystemTime::now()).await {
        Ok(grants) => policies.extend(grants.iter().filter_map(grant_policy)),
        Err(e) => {
            tracing::warn!(namespace, error = %e, "grants on request not read; applied without them")
        }
    }
    Ok(policies)
}

/// A grant on request as a policy of one person; only people ask, so another requester
/// grants nothing.
fn grant_policy(grant: &AccessRequest) -> Option<Policy> {
    let email = grant.requester.strip_prefix("user:")?;
    Some(Policy {
        name: format!("access-request/{}", grant.id),
        namespace: grant.namespace.clone(),
        access: grant.access.clone(),
        rules: vec![Rule {
            user: email.to_owned(),
            ..Rule::default()
        }],
        ..Policy::default()
    })
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
    let policies = policies_of(namespace, control).await?;
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
    let plan = plan_policies(namespace, policies, backend, directory, admin_group).await?;
    Ok(apply_plan(plan, &[], backend).await?.summary)
}

/// What applying `policies` to `namespace` would change, changing nothing.
async fn plan_policies(
    namespace: &str,
    policies: &[Policy],
    backend: &dyn NamespaceBackend,
    directory: &dyn Directory,
    admin_group: &str,
) -> Result<AccessPlan, BackendError> {
    let desired = effective_access(policies, directory);
    let current = backend.list_access(namespace).await?;
    let admins: BTreeSet<String> = directory
        .active_members(admin_group)
        .into_iter()
        .map(|email| Identity::User { email }.to_string())
        .collect();
    let keeps_access = |identity: &str| admins.contains(identity);
    let (changes, summary) = plan_access(&current, &desired, &keeps_access);
    let held = |identity: &str| current.get(identity).map(|level| level.as_str().to_owned());
    let steps = changes
        .into_iter()
        .map(|change| match change {
            AccessChange::Grant(identity, level) | AccessChange::Change(identity, level) => {
                AccessStep {
                    before: held(&identity),
                    after: Some(level.as_str().to_owned()),
                    identity,
                }
            }
            AccessChange::Revoke(identity) => AccessStep {
                before: held(&identity),
                after: None,
                identity,
            },
        })
        .collect();
    Ok(AccessPlan {
        namespace: namespace.to_owned(),
        steps,
        summary,
    })
}

/// Makes the steps of `plan` not in effect yet; the summary counts the plan, and the
/// backend's writes.
async fn apply_plan(
    plan: AccessPlan,
    planned: &[AccessStep],
    backend: &dyn NamespaceBackend,
) -> Result<AccessApplied, BackendError> {
    let current = backend.list_access(&plan.namespace).await?;
    let held = |identity: &str| current.get(identity).map(|level| level.as_str().to_owned());
    let mut changes = Vec::new();
    let mut steps = Vec::new();
    for step in &plan.steps {
        let before = held(&step.identity);
        if before == step.after {
            continue;
        }
        changes.push(match (before.as_deref(), step.after.as_deref()) {
            (_, None) => AccessChange::Revoke(step.identity.clone()),
            (None, Some(level)) => AccessChange::Grant(step.identity.clone(), level_of(level)?),
            (Some(_), Some(level)) => AccessChange::Change(step.identity.clone(), level_of(level)?),
        });
        steps.push(AccessStep {
            identity: step.identity.clone(),
            before,
            after: step.after.clone(),
        });
    }
    // Planned steps in effect now that the fresh plan leaves as they are: an earlier attempt
    // of this run made them (or an overlapping run did, which records them too).
    for step in planned {
        let replanned = plan.steps.iter().any(|s| s.identity == step.identity);
        if !replanned && held(&step.identity) == step.after {
            steps.push(step.clone());
        }
    }
    let writes = backend.apply_access(&plan.namespace, &changes).await?;
    Ok(AccessApplied {
        summary: AccessSummary {
            backend_writes: i32::try_from(writes).unwrap_or(i32::MAX),
            ..plan.summary
        },
        steps,
    })
}

/// The level a plan names.
fn level_of(name: &str) -> Result<AccessLevel, BackendError> {
    [AccessLevel::Read, AccessLevel::Write]
        .into_iter()
        .find(|level| level.as_str() == name)
        .ok_or_else(|| BackendError::Rejected(format!("access plan: no level {name:?}")))
}

/// Refusals fail the activity for good; passing faults are retried by Temporal.
pub(crate) fn failure(error: BackendError) -> ActivityError {
    match error {
        BackendError::Rejected(_) | BackendError::TooLarge(_) => {
            ActivityError::application(ApplicationFailure::non_retryable(error))
        }
        BackendError::Unavailable(_) => ActivityError::application(ApplicationFailure::new(error)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use plinth_control::directory::Snapshot;
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
    async fn setup() -> (Arc<MemoryBackend>, Snapshot, Vec<Policy>) {
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
        let directory = Snapshot::from_yaml(DIRECTORY).unwrap();
        (backend, directory, vec![writers, readers])
    }

    async fn run(
        backend: &MemoryBackend,
        directory: &Snapshot,
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

    fn identities(applied: &AccessApplied) -> Vec<&str> {
        let mut identities: Vec<&str> = applied.steps.iter().map(|s| s.identity.as_str()).collect();
        identities.sort_unstable();
        identities
    }

    #[tokio::test]
    async fn an_apply_retried_after_failing_halfway_makes_what_is_missing_and_answers_both() {
        let (backend, directory, policies) = setup().await;
        let planned = plan_policies("orders", &policies, backend.as_ref(), &directory, "admins")
            .await
            .unwrap();
        let steps: Vec<(&str, Option<&str>, Option<&str>)> = planned
            .steps
            .iter()
            .map(|s| (s.identity.as_str(), s.before.as_deref(), s.after.as_deref()))
            .collect();
        assert_eq!(
            steps,
            [
                ("user:alice@example.com", None, Some("write")),
                ("user:bob@example.com", None, Some("write")),
            ]
        );
        assert!(
            backend.list_access("orders").await.unwrap().is_empty(),
            "a plan changes nothing"
        );
        backend.fail_after("grant", 1);
        let fresh = || plan_policies("orders", &policies, backend.as_ref(), &directory, "admins");
        let first = fresh().await.unwrap();
        assert!(
            apply_plan(first, &planned.steps, backend.as_ref())
                .await
                .is_err()
        );
        let writes = backend.writes().len();
        // The retry plans afresh: it grants only the one the failure left out, and answers
        // the grant the failed attempt made too.
        let applied = apply_plan(fresh().await.unwrap(), &planned.steps, backend.as_ref())
            .await
            .unwrap();
        assert_eq!(backend.writes().len(), writes + 1);
        assert_eq!(backend.list_access("orders").await.unwrap(), writers());
        assert_eq!(
            identities(&applied),
            ["user:alice@example.com", "user:bob@example.com"]
        );
    }

    #[tokio::test]
    async fn a_planned_grant_the_policies_no_longer_give_is_neither_made_nor_answered() {
        let (backend, directory, policies) = setup().await;
        let planned = plan_policies("orders", &policies, backend.as_ref(), &directory, "admins")
            .await
            .unwrap();
        // Bob leaves the payments group between the plan and the apply.
        let directory = Snapshot::from_yaml(&DIRECTORY.replace(
            "members: [alice@example.com, bob@example.com]",
            "members: [alice@example.com]",
        ))
        .unwrap();
        let fresh = plan_policies("orders", &policies, backend.as_ref(), &directory, "admins")
            .await
            .unwrap();
        let applied = apply_plan(fresh, &planned.steps, backend.as_ref())
            .await
            .unwrap();
        assert_eq!(identities(&applied), ["user:alice@example.com"]);
        assert!(
            !backend
                .list_access("orders")
                .await
                .unwrap()
                .contains_key("user:bob@example.com")
        );
    }
}
