//! Resources in memory, for tests and fuzzing: the same checks as a real store.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Kind, Resource, ScimStore, StoreError};

#[derive(Debug, Default)]
pub struct MemoryStore {
    resources: Mutex<HashMap<(Kind, String), Resource>>,
}

impl MemoryStore {
    fn taken(
        resources: &HashMap<(Kind, String), Resource>,
        resource: &Resource,
    ) -> Result<(), StoreError> {
        let key = resource.name_key();
        let taken = resources
            .values()
            .any(|r| r.kind == resource.kind && r.id != resource.id && r.name_key() == key);
        if taken {
            return Err(StoreError::Taken(resource.name().to_owned()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ScimStore for MemoryStore {
    async fn create(&self, resource: &Resource) -> Result<(), StoreError> {
        let mut resources = self.resources.lock().expect("store lock");
        Self::taken(&resources, resource)?;
        resources.insert((resource.kind, resource.id.clone()), resource.clone());
        Ok(())
    }

    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Resource>, StoreError> {
        let resources = self.resources.lock().expect("store lock");
        Ok(resources.get(&(kind, id.to_owned())).cloned())
    }

    async fn replace(&self, resource: &Resource, read: &Resource) -> Result<(), StoreError> {
        let mut resources = self.resources.lock().expect("store lock");
        let key = (resource.kind, resource.id.clone());
        let current = resources.get(&key).ok_or(StoreError::NotFound)?.version;
        if current != read.version {
            return Err(StoreError::Stale { current });
        }
        Self::taken(&resources, resource)?;
        resources.insert(key, resource.clone());
        Ok(())
    }

    async fn delete(&self, kind: Kind, id: &str, expected: Option<u64>) -> Result<(), StoreError> {
        let mut resources = self.resources.lock().expect("store lock");
        let key = (kind, id.to_owned());
        let current = resources.get(&key).ok_or(StoreError::NotFound)?.version;
        if expected.is_some_and(|expected| expected != current) {
            return Err(StoreError::Stale { current });
        }
        resources.remove(&key);
        Ok(())
    }

    async fn list(&self, kind: Kind, name: Option<&str>) -> Result<Vec<Resource>, StoreError> {
        let resources = self.resources.lock().expect("store lock");
        let name = name.map(str::to_lowercase);
        Ok(resources
            .values()
            .filter(|r| r.kind == kind && name.as_ref().is_none_or(|n| r.name_key() == *n))
            .cloned()
            .collect())
    }
}
