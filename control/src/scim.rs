//! SCIM resources kept in Temporal: one `ScimResource` workflow each, the resource in its
//! memo, found by kind and name digest in visibility. Durable, and shared by every proxy and
//! worker of the installation with nothing else to run.

use std::collections::HashMap;
use std::time::Duration;

use plinth_scim::{Kind, Resource, ScimStore, StoreError};
use temporalio_client::errors::{WorkflowStartError, WorkflowUpdateError};
use temporalio_client::{WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions};
use temporalio_common::MemoValues;
use temporalio_common::search_attributes::SearchAttributes;

use crate::ControlPlane;
use crate::contract::{
    DeleteScim, KIND_ATTRIBUTE, NAME_ATTRIBUTE, RESOURCE_MEMO, ReplaceScim, ScimReplace,
    ScimResourceStart, ScimWritten, scim_kind, scim_name_digest, scim_refused_at, scim_workflow_id,
};

/// How long a write waits for visibility to show it, so a list right after finds it.
const VISIBLE_WITHIN: Duration = Duration::from_secs(10);

/// What a write that was not made means.
fn made(written: ScimWritten) -> Result<(), StoreError> {
    match written {
        ScimWritten { done: true, .. } => Ok(()),
        ScimWritten { current: 0, .. } => Err(StoreError::NotFound),
        ScimWritten { current, .. } => Err(StoreError::Stale { current }),
    }
}

/// The [`ScimStore`] of the control plane.
#[derive(Clone, Debug)]
pub struct ScimResources {
    plane: ControlPlane,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("control plane: {e}"))
}

impl ScimResources {
    pub fn new(plane: ControlPlane) -> Self {
        Self { plane }
    }

    /// Running resources of `kind` matching the visibility clause `and`. A resource listed
    /// twice (visibility may show both runs of a hand-over) counts once, at its latest
    /// version; one whose memo does not read fails the read, since leaving it out could
    /// hide a departure.
    async fn find(&self, kind: Kind, and: &str) -> Result<Vec<Resource>, StoreError> {
        let found = self
            .plane
            .running_where::<Resource>(scim_kind(kind), and, usize::MAX)
            .await
            .map_err(unavailable)?;
        let mut latest: HashMap<String, Resource> = HashMap::with_capacity(found.len());
        for (workflow_id, resource) in found {
            let resource = resource.ok_or_else(|| {
                StoreError::Unavailable(format!("{workflow_id}: its resource does not read"))
            })?;
            match latest.get(&resource.id) {
                Some(seen) if seen.version >= resource.version => {}
                _ => {
                    latest.insert(resource.id.clone(), resource);
                }
            }
        }
        Ok(latest.into_values().collect())
    }

    /// Another resource of the kind named like `resource`, if any.
    async fn taken(&self, resource: &Resource) -> Result<(), StoreError> {
        let named = self.list(resource.kind, Some(resource.name())).await?;
        if named.iter().any(|other| other.id != resource.id) {
            return Err(StoreError::Taken(resource.name().to_owned()));
        }
        Ok(())
    }

    /// Waits (a little) until visibility lists the resource at `version`, or no longer lists
    /// it with `None`: the directory is read from visibility, so a change is read once it
    /// shows. Looks less often the longer it takes (visibility calls are rate-limited).
    async fn until_visible(&self, kind: Kind, id: &str, version: Option<u64>) {
        let clause = format!(" AND WorkflowId = '{}'", scim_workflow_id(kind, id));
        let deadline = tokio::time::Instant::now() + VISIBLE_WITHIN;
        let mut pause = Duration::from_millis(20);
        while tokio::time::Instant::now() < deadline {
            if let Ok(found) = self.find(kind, &clause).await
                && found.first().map(|r| r.version) == version
            {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        tracing::warn!(kind = kind.name(), %id, "a SCIM change is not yet listed by visibility");
    }

    async fn update<U>(
        &self,
        kind: Kind,
        id: &str,
        update: U,
        input: U::Input,
    ) -> Result<ScimWritten, StoreError>
    where
        U: temporalio_common::UpdateDefinition<Workflow = ScimResourceStart, Output = ScimWritten>
            + Send,
        U::Input: Send,
    {
        let handle = self
            .plane
            .client()
            .get_workflow_handle::<ScimResourceStart>(scim_workflow_id(kind, id));
        handle
            .execute_update(update, input, Default::default())
            .await
            .map_err(|e| match e {
                WorkflowUpdateError::NotFound(_) => StoreError::NotFound,
                WorkflowUpdateError::Failed(failure) => match scim_refused_at(&failure.message) {
                    Some(0) => StoreError::NotFound,
                    Some(current) => StoreError::Stale { current },
                    None => unavailable(failure.message),
                },
                e => unavailable(e),
            })
    }
}

#[async_trait::async_trait]
impl ScimStore for ScimResources {
    async fn create(&self, resource: &Resource) -> Result<(), StoreError> {
        self.taken(resource).await?;
        let mut memo = MemoValues::new();
        memo.insert(RESOURCE_MEMO, resource.clone());
        let attributes = SearchAttributes::new([
            KIND_ATTRIBUTE.value_set(scim_kind(resource.kind).to_owned()),
            NAME_ATTRIBUTE.value_set(scim_name_digest(resource.name())),
        ]);
        let options = WorkflowStartOptions::new(
            self.plane.task_queue().to_owned(),
            scim_workflow_id(resource.kind, &resource.id),
        )
        .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .memo(memo)
        .search_attributes(attributes)
        .build();
        self.plane
            .client()
            .start_workflow(ScimResourceStart, resource.clone(), options)
            .await
            .map_err(|e| match e {
                WorkflowStartError::AlreadyStarted { .. } => {
                    StoreError::Unavailable(format!("id {} was used before", resource.id))
                }
                e => unavailable(e),
            })?;
        // A list right after finds it, and the reload a new Group starts reads its members.
        self.until_visible(resource.kind, &resource.id, Some(resource.version))
            .await;
        Ok(())
    }

    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Resource>, StoreError> {
        let found = self
            .plane
            .running::<Resource>(scim_workflow_id(kind, id))
            .await
            .map_err(unavailable)?;
        Ok(found.filter(|r| r.kind == kind && r.id == id))
    }

    async fn replace(&self, resource: &Resource, current: &Resource) -> Result<(), StoreError> {
        // Visibility is rate-limited: names are looked up only when one changes. Should
        // `current` be out of date, the version check below refuses the change.
        if current.name_key() != resource.name_key() {
            self.taken(resource).await?;
        }
        let change = ScimReplace {
            resource: resource.clone(),
            expected: current.version,
        };
        let written = self
            .update(resource.kind, &resource.id, ReplaceScim, change)
            .await?;
        made(written)?;
        self.until_visible(resource.kind, &resource.id, Some(resource.version))
            .await;
        Ok(())
    }

    async fn delete(&self, kind: Kind, id: &str, expected: Option<u64>) -> Result<(), StoreError> {
        made(self.update(kind, id, DeleteScim, expected).await?)?;
        self.until_visible(kind, id, None).await;
        Ok(())
    }

    async fn list(&self, kind: Kind, name: Option<&str>) -> Result<Vec<Resource>, StoreError> {
        let Some(name) = name else {
            return self.find(kind, "").await;
        };
        let clause = format!(
            " AND {} = '{}'",
            NAME_ATTRIBUTE.name(),
            scim_name_digest(name)
        );
        let named = self.find(kind, &clause).await?;
        // A digest that matched another name is no match.
        let key = name.to_lowercase();
        Ok(named.into_iter().filter(|r| r.name_key() == key).collect())
    }
}
