use std::time::{Duration, SystemTime};

use plinth_control::contract::{
    KIND_ATTRIBUTE, NAME_ATTRIBUTE, OWNER_ATTRIBUTE, PHASE_ATTRIBUTE, RESOURCE_MEMO,
};
use plinth_proto::v1::{Condition, Event, Namespace, NamespaceStatus};
use plinth_proto::{FieldError, check_update, outcome, phase};
use serde::{Deserialize, Serialize};
use temporalio_common::ActivityDefinition;
use temporalio_common::data_converters::TemporalDeserializable;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, LocalActivityOptions, SyncWorkflowContext,
    WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::audit::{self, AUDIT_PATCH, By, Deleter, spec_json};
use crate::contracts::{
    AccessSeed, DeleteNamespace, HistoryExportSetting, LoadPlatformSettings, ReconcileNamespace,
    ReconcileReport, RemoveAccessSchedule, ScheduleShred, SeedAccess, SetHistoryExport, ShredKeys,
    ShredRequest, ValidateNamespace,
};
use crate::handover::{hand_over_when_long, wait_for_handlers};
use crate::in_task::in_task_then_activity;

const MAX_EVENTS: usize = 10;
/// Namespaces set up their history export as they are reconciled and finish it as they are
/// deleted.
const EXPORT_PATCH: &str = "history-export";
/// Access is seeded in the workflow task that learns the namespace was reconciled.
const SEED_LOCALLY_PATCH: &str = "seed-access-locally";
/// A backend whose calls end within seconds is reconciled after an apply in the workflow task
/// that took it.
const IN_TASK_PATCH: &str = "reconcile-in-task";
/// An apply is recorded in the workflow task that took it, for a while, then by an activity.
const RECORD_IN_TASK_PATCH: &str = "record-apply-in-task";
/// Backend calls in the workflow task get one short try there, then an activity.
const ONCE_IN_TASK_PATCH: &str = "backend-once-in-task";

fn export_enabled(spec: &plinth_proto::v1::NamespaceSpec) -> bool {
    spec.export.is_some_and(|export| export.enabled)
}

/// What an `apply` update answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// `created`, `configured` or `unchanged`.
    pub outcome: String,
    /// The resource after the apply (status as of acceptance).
    pub resource: Namespace,
}

/// Why an update was refused; the message reaches the caller.
pub(crate) type UpdateError = Box<dyn std::error::Error + Send + Sync>;

/// One Namespace resource, for its whole life: workflow id `namespace/<metadata.name>`.
///
/// Apply and delete are Updates, status is a Query. Every change and every resync timer
/// reconciles the backend to the spec; differences found on a resync are drift made behind
/// Plinth's back and are counted in the status.
#[workflow]
#[derive(Debug)]
pub struct ProvisionNamespace {
    resource: Namespace,
    /// A spec change waits for the run loop to reconcile it.
    dirty: bool,
    /// The spec the workflow was started with failed validation.
    spec_invalid: bool,
    delete_requested: bool,
    /// Who asked for the deletion.
    deleted_by: Option<String>,
    /// What search attributes and memo last showed; unchanged state is not written again.
    published: Option<Namespace>,
    /// The namespace's history export runs (as the spec last reconciled asked; a new run
    /// starts from the spec).
    exporting: bool,
}

#[workflow_methods]
impl ProvisionNamespace {
    /// Starts from a resource document, or from the state a previous run handed over.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, resource: Namespace) -> Self {
        Self::from_resource(resource)
    }

    /// Reconciles on every change and resync until deleted; returns the final resource.
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<Namespace> {
        let settings = ctx
            .execute_local_activity(LoadPlatformSettings, (), local_activity())
            .await?;
        let resync = Duration::from_secs(settings.resync_interval_secs.max(1));
        let in_task = settings.reconcile_in_task;
        let initial = ctx.state(|s| s.resource.clone());
        let report = ctx
            .execute_local_activity(ValidateNamespace, initial, local_activity())
            .await?;
        if let Some(error) = report.error {
            let now = now(ctx);
            ctx.state_mut(|s| {
                s.dirty = false;
                s.spec_invalid = true;
                s.set_failed(&now, "Invalid", &error);
            });
        }
        publish(ctx);
        loop {
            let changed = temporalio_sdk::workflows::select! {
                _ = ctx.wait_condition(|s| s.dirty || s.delete_requested) => true,
                _ = ctx.timer(resync) => false,
            };
            if ctx.state(|s| s.delete_requested) {
                return delete(ctx).await;
            }
            // An invalid spec is not reconciled until an apply replaces it; everything else,
            // a failed reconcile included, is retried on every resync.
            if changed || !ctx.state(|s| s.spec_invalid) {
                reconcile(ctx, !changed, in_task).await;
            }
            hand_over_when_long(ctx, |s| s.resource.clone()).await?;
        }
    }

    /// Creates or changes the resource, as `applying.by` asks. Answers once the change is
    /// accepted and in the audit trail; the run loop then reconciles it (watch `status` for
    /// Ready).
    #[update]
    pub async fn apply(
        ctx: &mut WorkflowContext<Self>,
        applying: By<Namespace>,
    ) -> Result<ApplyResult, UpdateError> {
        let By { input: desired, by } = applying;
        let report = ctx
            .execute_local_activity(ValidateNamespace, desired.clone(), local_activity())
            .await?;
        if let Some(error) = report.error {
            return Err(error.into());
        }
        let now = now(ctx);
        let before = ctx.state(|s| s.resource.spec.clone());
        let result = ctx.state_mut(|s| s.accept(desired, &now))?;
        publish(ctx);
        // An unchanged apply changes nothing, and is not recorded: no one fills the trail
        // by applying the same spec over and over.
        if result.outcome != outcome::UNCHANGED && audit::records(ctx, by.as_deref()) {
            let spec = result.resource.spec_or_default();
            let before = before.filter(|_| result.outcome != outcome::CREATED);
            let actor = audit::actor(ctx, by.as_deref());
            let record = audit::new_record(
                ctx,
                actor,
                "namespace.applied",
                format!("namespace/{}", result.resource.name()),
                &result.outcome,
            )
            .in_namespace(spec.name.clone())
            .change(before.map(spec_json), Some(spec_json(spec)));
            // In the task: the apply answers without a round trip through the task queue.
            if ctx.patched(RECORD_IN_TASK_PATCH) {
                audit::record_in_task(ctx, vec![record]).await?;
            } else {
                audit::record(ctx, vec![record]).await?;
            }
        }
        Ok(result)
    }

    /// Deletes the namespace, unless the spec keeps deletion protection on; `by` is who
    /// asked, recorded with a key shredding.
    #[update]
    pub fn delete(
        &mut self,
        ctx: &mut SyncWorkflowContext<Self>,
        by: Deleter,
    ) -> Result<Namespace, UpdateError> {
        let spec = self.resource.spec_or_default();
        if !spec.allow_deletion {
            return Err(format!(
                "namespace {:?} has deletion protection: set spec.allowDeletion: true and apply it first",
                spec.name
            )
            .into());
        }
        let now = ctx.workflow_time().map(rfc3339).unwrap_or_default();
        if self.delete_requested {
            return Ok(self.resource.clone());
        }
        self.delete_requested = true;
        self.deleted_by = by.0;
        self.set_phase(
            phase::DELETING,
            &now,
            "DeleteRequested",
            "deletion requested",
        );
        Ok(self.resource.clone())
    }

    /// The resource: metadata, spec and status.
    #[query]
    pub fn status(&self, _ctx: &WorkflowContextView) -> Namespace {
        self.resource.clone()
    }
}

impl ProvisionNamespace {
    fn from_resource(mut resource: Namespace) -> Self {
        let metadata = resource.metadata.get_or_insert_default();
        metadata.generation = metadata.generation.max(1);
        resource.status.get_or_insert_with(|| NamespaceStatus {
            phase: phase::PENDING.into(),
            ..Default::default()
        });
        let exporting = export_enabled(&resource.spec_or_default());
        Self {
            resource,
            dirty: true,
            spec_invalid: false,
            delete_requested: false,
            deleted_by: None,
            exporting,
            published: None,
        }
    }

    fn current_status(&self) -> &NamespaceStatus {
        self.resource
            .status
            .as_ref()
            .expect("status is set at init")
    }

    fn status_mut(&mut self) -> &mut NamespaceStatus {
        self.resource.status.get_or_insert_default()
    }

    /// Accepts a validated desired resource: decides the outcome and bumps the generation on
    /// a real change.
    fn accept(&mut self, desired: Namespace, now: &str) -> Result<ApplyResult, FieldError> {
        if desired.name() != self.resource.name() {
            return Err(FieldError {
                field: "metadata.name".into(),
                message: format!(
                    "{:?} sent to the workflow of {:?}",
                    desired.name(),
                    self.resource.name()
                ),
            });
        }
        if self.delete_requested {
            return Err(FieldError {
                field: "metadata.name".into(),
                message: "is being deleted".into(),
            });
        }
        check_update(&self.resource.spec_or_default(), &desired.spec_or_default())?;
        let same = self.resource.same_desired_state(&desired);
        let never_reconciled =
            self.current_status().observed_generation == 0 && self.resource.generation() == 1;
        let outcome = if same && never_reconciled {
            outcome::CREATED
        } else if same {
            outcome::UNCHANGED
        } else {
            let group = desired.group().to_owned();
            let metadata = self.resource.metadata.get_or_insert_default();
            metadata.generation += 1;
            metadata.namespace = group;
            self.resource.spec = Some(desired.spec_or_default());
            self.dirty = true;
            self.spec_invalid = false;
            self.set_phase(
                phase::PENDING,
                now,
                "SpecChanged",
                "new generation accepted",
            );
            outcome::CONFIGURED
        };
        Ok(ApplyResult {
            outcome: outcome.into(),
            resource: self.resource.clone(),
        })
    }

    fn set_phase(&mut self, new_phase: &str, now: &str, reason: &str, message: &str) {
        let status = self.status_mut();
        status.phase = new_phase.into();
        status.message = String::new();
        record(status, now, reason, message);
    }

    fn set_failed(&mut self, now: &str, reason: &str, message: &str) {
        let status = self.status_mut();
        status.phase = phase::FAILED.into();
        status.message = message.into();
        set_condition(status, "Ready", "False", reason, message, now);
        record(status, now, reason, message);
    }

    /// Records a finished reconcile of `generation`.
    fn reconciled(
        &mut self,
        generation: i64,
        report: ReconcileReport,
        drift_check: bool,
        now: &str,
    ) {
        let temporal_namespace = if report.temporal_namespace.is_empty() {
            self.resource.spec_or_default().name
        } else {
            report.temporal_namespace.clone()
        };
        let status = self.status_mut();
        status.temporal_namespace = temporal_namespace;
        if !report.encryption_key.is_empty() {
            status.encryption_key = report.encryption_key.clone();
        }
        // A retry after a crash may find the namespace already registered: the first
        // successful reconcile is the creation all the same.
        let first = status.observed_generation == 0;
        status.observed_generation = generation;
        status.phase = phase::READY.into();
        status.message = String::new();
        status.endpoint = report.endpoint;
        status.last_reconcile_time = now.into();
        let changes = report.changes.join("; ");
        if first {
            record(status, now, "Created", "namespace registered");
        } else if drift_check && (report.created || !report.changes.is_empty()) {
            status.drift_repairs += 1;
            record(status, now, "DriftRepaired", &changes);
        } else if !report.changes.is_empty() {
            record(status, now, "Updated", &changes);
        }
        set_condition(
            status,
            "Ready",
            "True",
            "Reconciled",
            "backend matches the spec",
            now,
        );
    }
}

async fn reconcile(
    ctx: &mut WorkflowContext<ProvisionNamespace>,
    drift_check: bool,
    in_task: bool,
) {
    let (generation, spec) = ctx.state(|s| (s.resource.generation(), s.resource.spec_or_default()));
    if !drift_check {
        let now = now(ctx);
        ctx.state_mut(|s| {
            s.set_phase(
                phase::PROVISIONING,
                &now,
                "Reconciling",
                "bringing the backend to the spec",
            )
        });
        publish(ctx);
    }
    let temporal_name = spec.name.clone();
    let seed = AccessSeed {
        namespace: spec.name.clone(),
        owner: spec.owner.clone(),
    };
    // In the task: no round trip through the task queue (and, while applies come in bursts,
    // no wait in its backlog) between the apply and Ready. A resync, which nobody waits on,
    // keeps to an activity and holds no workflow task while the backend is slow.
    let mut result = if in_task && !drift_check && ctx.patched(IN_TASK_PATCH) {
        backend_in_task(ctx, ReconcileNamespace, spec).await
    } else {
        ctx.execute_activity(ReconcileNamespace, spec, backend_activity())
            .await
    };
    // Access follows the namespace: its policies (created if absent) and its schedule.
    if let Ok(report) = &mut result {
        // Seeding is a few calls (to Temporal, and a read of the backend's access list): as a
        // local activity it runs in the task that got the reconcile's result, a round trip
        // through the task queue (and, while applies come in bursts, a wait in its backlog)
        // fewer before Ready.
        let seeded = if ctx.patched(SEED_LOCALLY_PATCH) {
            backend_in_task(ctx, SeedAccess, seed).await
        } else {
            ctx.execute_activity(SeedAccess, seed, backend_activity())
                .await
        };
        match seeded {
            Ok(setup) => {
                let seeded = setup.policies_created.iter();
                report
                    .changes
                    .extend(seeded.map(|name| format!("policy {name} seeded")));
                let moved = setup.editors_changed.iter();
                report
                    .changes
                    .extend(moved.map(|name| format!("policy {name} editors set to the owner")));
                if setup.schedule_written {
                    report.changes.push("access schedule written".into());
                }
            }
            Err(e) => result = Err(e),
        }
    }
    // Export follows the namespace too (histories recorded before it replay without): set
    // up while enabled, finished once when it no longer is.
    let enabled = ctx.state(|s| export_enabled(&s.resource.spec_or_default()));
    if ctx.patched(EXPORT_PATCH)
        && (enabled || ctx.state(|s| s.exporting))
        && let Ok(report) = &mut result
    {
        let setting = HistoryExportSetting {
            name: ctx.state(|s| s.resource.name().to_owned()),
            enabled,
            namespace: temporal_name,
            deleted: false,
        };
        match ctx
            .execute_activity(SetHistoryExport, setting, backend_activity())
            .await
        {
            Ok(change) => {
                ctx.state_mut(|s| s.exporting = enabled);
                if !change.is_empty() {
                    report.changes.push(change);
                }
            }
            Err(e) => result = Err(e),
        }
    }
    let now = now(ctx);
    ctx.state_mut(|s| {
        // A newer generation accepted meanwhile stays dirty and is reconciled next.
        s.dirty = s.resource.generation() != generation;
        match result {
            Ok(report) => s.reconciled(generation, report, drift_check, &now),
            Err(e) => s.set_failed(&now, "ReconcileFailed", &failure_reason(&e)),
        }
    });
    publish(ctx);
}

/// What made an activity fail: the innermost cause, which Temporal wraps in "Activity task
/// failed".
fn failure_reason(error: &ActivityExecutionError) -> String {
    let mut message = error.to_string();
    let mut failure = error.failure();
    while let Some(f) = failure {
        message.clone_from(&f.message);
        failure = f.cause.as_deref();
    }
    message
}

async fn delete(ctx: &mut WorkflowContext<ProvisionNamespace>) -> WorkflowResult<Namespace> {
    publish(ctx);
    let name = ctx.state(|s| s.resource.spec_or_default().name);
    // No access run may start against a namespace on its way out.
    ctx.execute_activity(RemoveAccessSchedule, name.clone(), backend_activity())
        .await?;
    // Every workflow closed until now is exported before the namespace goes.
    if ctx.patched(EXPORT_PATCH) && ctx.state(|s| s.exporting) {
        let setting = HistoryExportSetting {
            name: ctx.state(|s| s.resource.name().to_owned()),
            namespace: name.clone(),
            enabled: false,
            deleted: true,
        };
        ctx.execute_activity(SetHistoryExport, setting, backend_activity())
            .await?;
    }
    ctx.execute_activity(DeleteNamespace, name.clone(), backend_activity())
        .await?;
    if ctx.patched(AUDIT_PATCH) {
        let (by, resource, spec) = ctx.state(|s| {
            (
                s.deleted_by.clone(),
                format!("namespace/{}", s.resource.name()),
                s.resource.spec_or_default(),
            )
        });
        let actor = audit::actor(ctx, by.as_deref());
        let record = audit::new_record(ctx, actor, "namespace.deleted", resource, "deleted")
            .in_namespace(name.clone())
            .change(Some(spec_json(spec)), None);
        audit::record(ctx, vec![record]).await?;
    }
    if ctx.state(|s| s.resource.spec_or_default().shred_on_delete) {
        shred_keys(ctx, name).await?;
    } else {
        let now = now(ctx);
        ctx.state_mut(|s| s.set_phase(phase::DELETED, &now, "Deleted", "namespace deleted"));
    }
    publish(ctx);
    wait_for_handlers(ctx).await?;
    Ok(ctx.state(|s| s.resource.clone()))
}

/// Marks the deleted namespace's own keys for destruction and says so (phase Deleted: the
/// namespace is gone), waits out `[keys] shred_delay` (in which `plinth keys restore` takes
/// it back), then has them destroyed.
async fn shred_keys(
    ctx: &mut WorkflowContext<ProvisionNamespace>,
    name: String,
) -> WorkflowResult<()> {
    let by = ctx
        .state(|s| s.deleted_by.clone())
        .unwrap_or_else(|| "unknown".into());
    let mut plan = ctx
        .execute_activity(
            ScheduleShred,
            ShredRequest {
                name: name.clone(),
                by,
            },
            backend_activity(),
        )
        .await?;
    let scheduled = now(ctx);
    if plan.keys.is_empty() {
        ctx.state_mut(|s| {
            s.set_phase(
                phase::DELETED,
                &scheduled,
                "NothingToShred",
                "namespace deleted; it had no key of its own to shred",
            )
        });
        return Ok(());
    }
    let message = format!(
        "namespace deleted; its {} key(s) are shredded at {}; until then `plinth keys restore \
         --namespace {}` keeps them",
        plan.keys.len(),
        plan.due,
        plan.namespace
    );
    ctx.state_mut(|s| {
        s.set_phase(phase::DELETED, &scheduled, "ShredScheduled", &message);
        s.status_mut().message.clone_from(&message);
    });
    publish(ctx);
    loop {
        if plan.wait_secs > 0 {
            ctx.timer(Duration::from_secs(plan.wait_secs)).await;
        }
        plan = ctx
            .execute_activity(ShredKeys, name.clone(), backend_activity())
            .await?;
        if plan.wait_secs == 0 {
            break;
        }
    }
    let now = now(ctx);
    let (reason, message) = if plan.restored {
        (
            "KeysRestored",
            format!("keys of {} restored; nothing was shredded", plan.namespace),
        )
    } else {
        (
            "KeysShredded",
            format!("keys {} shredded", plan.keys.join(", ")),
        )
    };
    ctx.state_mut(|s| {
        s.status_mut().message.clone_from(&message);
        record(s.status_mut(), &now, reason, &message);
    });
    if ctx.patched(AUDIT_PATCH) {
        let (action, result) = if plan.restored {
            ("keys.restored", "restored")
        } else {
            ("keys.shredded", "shredded")
        };
        let actor = audit::actor(ctx, None);
        let record = audit::new_record(ctx, actor, action, format!("keys/{name}"), result)
            .in_namespace(name)
            .detail(message);
        audit::record(ctx, vec![record]).await?;
    }
    Ok(())
}

/// Keeps search attributes and memo in step with the state, so reads are a describe or a
/// visibility query.
fn publish(ctx: &mut WorkflowContext<ProvisionNamespace>) {
    if ctx.state(|s| s.published.as_ref() == Some(&s.resource)) {
        return;
    }
    let (spec, current_phase, resource) = ctx.state(|s| {
        (
            s.resource.spec_or_default(),
            s.current_status().phase.clone(),
            s.resource.clone(),
        )
    });
    ctx.upsert_search_attributes([
        KIND_ATTRIBUTE.value_set(plinth_proto::KIND_NAMESPACE.to_owned()),
        OWNER_ATTRIBUTE.value_set(spec.owner),
        PHASE_ATTRIBUTE.value_set(current_phase),
        NAME_ATTRIBUTE.value_set(spec.name),
    ]);
    let _ = ctx.upsert_memo([(
        RESOURCE_MEMO,
        Some(temporalio_common::MemoValue::new(resource.clone())),
    )]);
    ctx.state_mut(|s| s.published = Some(resource));
}

fn record(status: &mut NamespaceStatus, now: &str, reason: &str, message: &str) {
    status.events.insert(
        0,
        Event {
            time: now.into(),
            reason: reason.into(),
            message: message.into(),
        },
    );
    status.events.truncate(MAX_EVENTS);
}

fn set_condition(
    status: &mut NamespaceStatus,
    kind: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    let conditions = &mut status.conditions;
    let index = match conditions.iter().position(|c| c.r#type == kind) {
        Some(i) => i,
        None => {
            conditions.push(Condition {
                r#type: kind.into(),
                ..Default::default()
            });
            conditions.len() - 1
        }
    };
    let condition = &mut conditions[index];
    if condition.status != value {
        condition.last_transition_time = now.into();
    }
    condition.status = value.into();
    condition.reason = reason.into();
    condition.message = message.into();
}

/// The workflow's time, RFC 3339 to the second.
pub(crate) fn now<W>(ctx: &WorkflowContext<W>) -> String {
    ctx.workflow_time().map(rfc3339).unwrap_or_default()
}

pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Settings and validation read only the worker's own memory: local activities, no round
/// trip through a task queue.
pub(crate) fn local_activity() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(10))
        .build()
}

/// A backend call in the workflow task (seeding access; reconciling where calls end within
/// seconds): one short try, then an activity, so a slow backend holds no task slot. Histories
/// from before tried it there for up to 15 minutes.
async fn backend_in_task<AD>(
    ctx: &mut WorkflowContext<ProvisionNamespace>,
    activity: AD,
    input: AD::Input,
) -> Result<AD::Output, ActivityExecutionError>
where
    AD: ActivityDefinition + Clone,
    AD::Input: Clone,
    AD::Output: TemporalDeserializable,
{
    if ctx.patched(ONCE_IN_TASK_PATCH) {
        in_task_then_activity(ctx, activity, input, backend_activity()).await
    } else {
        ctx.execute_local_activity(activity, input, backend_local_activity())
            .await
    }
}

/// Backend calls in the workflow task before [`ONCE_IN_TASK_PATCH`], each of which may wait
/// while Temporal or the backend is busy, or a new namespace while the cluster learns of it;
/// retried for as long as an activity's single try may take (the SDK would stop at 100 s).
fn backend_local_activity() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(120))
        .schedule_to_close_timeout(Duration::from_secs(15 * 60))
        .build()
}

/// Backend calls: retried with Temporal's default backoff until they succeed or are refused;
/// a worker that dies mid-call is noticed after the timeout and the call runs again.
/// Backend calls that wait on long operations (Temporal Cloud's) heartbeat while they do;
/// one whose worker died is retried after the heartbeat timeout and resumes what it waited on.
fn backend_activity() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(15 * 60))
        .heartbeat_timeout(Duration::from_secs(30))
        .build()
}

#[cfg(test)]
mod tests {
    use plinth_proto::v1::NamespaceSpec;

    use super::*;

    fn resource(retention: i32) -> Namespace {
        plinth_proto::namespace_resource(
            "fancy",
            "payments",
            NamespaceSpec {
                name: "fancy-test".into(),
                owner: "payments-team@example.com".into(),
                regions: vec!["us-east-1".into()],
                retention_days: retention,
                ..Default::default()
            },
        )
    }

    fn report() -> ReconcileReport {
        ReconcileReport {
            created: true,
            changes: vec!["registered".into()],
            endpoint: "127.0.0.1:7233".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_data_path_name_is_the_backends_or_else_the_specs() {
        let mut state = ProvisionNamespace::from_resource(resource(30));
        state.reconciled(1, report(), false, "t1");
        assert_eq!(state.current_status().temporal_namespace, "fancy-test");
        let cloud = ReconcileReport {
            temporal_namespace: "fancy-test.acct".into(),
            ..report()
        };
        state.reconciled(1, cloud, true, "t2");
        assert_eq!(state.current_status().temporal_namespace, "fancy-test.acct");
    }

    #[test]
    fn first_apply_creates_then_unchanged_then_configured() {
        let mut state = ProvisionNamespace::from_resource(resource(30));
        assert_eq!(
            state.accept(resource(30), "t0").unwrap().outcome,
            outcome::CREATED
        );
        state.dirty = false;
        state.reconciled(1, report(), false, "t1");
        assert_eq!(state.current_status().phase, phase::READY);
        assert_eq!(state.current_status().events[0].reason, "Created");

        let again = state.accept(resource(30), "t2").unwrap();
        assert_eq!(again.outcome, outcome::UNCHANGED);
        assert!(!state.dirty, "unchanged triggers no reconcile");

        let changed = state.accept(resource(60), "t3").unwrap();
        assert_eq!(changed.outcome, outcome::CONFIGURED);
        assert_eq!(state.resource.generation(), 2);
        assert!(state.dirty);
        assert_eq!(state.current_status().phase, phase::PENDING);
    }

    #[test]
    fn renaming_the_temporal_namespace_is_refused() {
        let mut state = ProvisionNamespace::from_resource(resource(30));
        let mut renamed = resource(30);
        renamed.spec.as_mut().unwrap().name = "other".into();
        assert_eq!(state.accept(renamed, "t").unwrap_err().field, "spec.name");
        assert_eq!(state.resource.generation(), 1);
    }

    #[test]
    fn drift_found_on_resync_is_counted() {
        let mut state = ProvisionNamespace::from_resource(resource(30));
        state.reconciled(1, report(), false, "t1");
        let drift = ReconcileReport {
            created: false,
            changes: vec!["retention 10d → 30d".into()],
            endpoint: "e".into(),
            ..Default::default()
        };
        state.reconciled(1, drift, true, "t2");
        let status = state.current_status();
        assert_eq!(status.drift_repairs, 1);
        assert_eq!(status.events[0].reason, "DriftRepaired");
        assert_eq!(status.events[0].message, "retention 10d → 30d");
    }

    #[test]
    fn events_are_bounded() {
        let mut state = ProvisionNamespace::from_resource(resource(30));
        for i in 0..(MAX_EVENTS + 5) {
            state.set_phase(phase::PENDING, &format!("t{i}"), "SpecChanged", "x");
        }
        assert_eq!(state.current_status().events.len(), MAX_EVENTS);
    }
}
