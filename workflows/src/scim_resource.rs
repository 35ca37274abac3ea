use plinth_control::contract::{
    KIND_ATTRIBUTE, NAME_ATTRIBUTE, RESOURCE_MEMO, ScimReplace, ScimWritten, scim_kind,
    scim_name_digest, scim_refusal,
};
use plinth_scim::Resource;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::handover::{hand_over_when_long, wait_for_handlers};
use crate::provision_namespace::UpdateError;

/// One User or Group pushed over SCIM, for its whole life: workflow id
/// `scim/<Users|Groups>/<id>`. It keeps the resource in its memo (where the SCIM service and
/// the directory read it) and its kind and name digest in search attributes. `replace` and
/// `delete` change it only at the version they name, so concurrent writers never lose a
/// change; `delete` ends it.
#[workflow]
#[derive(Debug)]
pub struct ScimResourceWorkflow {
    resource: Resource,
    /// A change not yet published.
    pending: bool,
    deleted: bool,
}

#[workflow_methods]
impl ScimResourceWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, resource: Resource) -> Self {
        Self {
            resource,
            pending: true,
            deleted: false,
        }
    }

    /// Publishes each change until the resource is deleted.
    #[run(name = "ScimResource")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<()> {
        loop {
            ctx.wait_condition(|s| s.pending || s.deleted).await?;
            if ctx.state(|s| s.deleted) {
                wait_for_handlers(ctx).await?;
                return Ok(());
            }
            ctx.state_mut(|s| s.pending = false);
            let resource = ctx.state(|s| s.resource.clone());
            ctx.upsert_search_attributes([
                KIND_ATTRIBUTE.value_set(scim_kind(resource.kind).to_owned()),
                NAME_ATTRIBUTE.value_set(scim_name_digest(resource.name())),
            ]);
            let _ = ctx.upsert_memo([(
                RESOURCE_MEMO,
                Some(temporalio_common::MemoValue::new(resource)),
            )]);
            hand_over_when_long(ctx, |s| s.resource.clone()).await?;
        }
    }

    /// Refuses, before it enters the history, a change of another resource or of another
    /// version than the one in force: stale writes cannot fill the history up.
    #[update_validator(replace)]
    pub fn validate_replace(
        &self,
        _ctx: &WorkflowContextView,
        change: &ScimReplace,
    ) -> Result<(), UpdateError> {
        self.of_this(change)?;
        self.at(Some(change.expected))
    }

    /// Replaces the resource if it is at `change.expected`; the version goes up by one.
    #[update]
    pub fn replace(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        change: ScimReplace,
    ) -> Result<ScimWritten, UpdateError> {
        self.of_this(&change)?;
        if self.deleted || change.expected != self.resource.version {
            return Ok(self.written(false));
        }
        let version = self.resource.version + 1;
        let created = std::mem::take(&mut self.resource.created);
        self.resource = Resource {
            version,
            created,
            ..change.resource
        };
        self.pending = true;
        Ok(self.written(true))
    }

    #[update_validator(delete)]
    pub fn validate_delete(
        &self,
        _ctx: &WorkflowContextView,
        expected: &Option<u64>,
    ) -> Result<(), UpdateError> {
        self.at(*expected)
    }

    /// Deletes the resource if it is at `expected` (or at any version with none).
    #[update]
    pub fn delete(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        expected: Option<u64>,
    ) -> Result<ScimWritten, UpdateError> {
        if self.deleted || expected.is_some_and(|v| v != self.resource.version) {
            return Ok(self.written(false));
        }
        self.deleted = true;
        Ok(ScimWritten {
            done: true,
            current: 0,
        })
    }
}

impl ScimResourceWorkflow {
    /// Refuses a change naming another resource.
    fn of_this(&self, change: &ScimReplace) -> Result<(), UpdateError> {
        let same =
            change.resource.kind == self.resource.kind && change.resource.id == self.resource.id;
        if !same {
            return Err(format!("not resource {}", self.resource.id).into());
        }
        Ok(())
    }

    /// Whether the resource stands at `expected` (any version with `None`).
    fn at(&self, expected: Option<u64>) -> Result<(), UpdateError> {
        if self.deleted || expected.is_some_and(|v| v != self.resource.version) {
            return Err(scim_refusal(self.written(false).current).into());
        }
        Ok(())
    }

    fn written(&self, done: bool) -> ScimWritten {
        let current = if self.deleted {
            0
        } else {
            self.resource.version
        };
        ScimWritten { done, current }
    }
}
