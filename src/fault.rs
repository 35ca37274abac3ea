//! Fault injection for crash tests. `PLINTH_FAULT_PAUSE_AFTER_REGISTER=3s` makes the worker
//! pause after each namespace registration, and before adding search attributes (where a
//! reconcile taken over by an activity goes on), so a test can kill it mid-provisioning.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use plinth_control::{
    AccessChange, AccessLevel, BackendError, NamespaceBackend, ObservedNamespace,
};
use plinth_proto::v1::NamespaceSpec;

const PAUSE_VAR: &str = "PLINTH_FAULT_PAUSE_AFTER_REGISTER";

/// The pause `PLINTH_FAULT_PAUSE_AFTER_REGISTER` asks for, if set.
pub fn pause_after_register() -> anyhow::Result<Option<Duration>> {
    std::env::var(PAUSE_VAR)
        .ok()
        .map(|value| humantime::parse_duration(&value).with_context(|| PAUSE_VAR.to_owned()))
        .transpose()
}

/// A backend that stalls after registering and before adding search attributes, as a slow or
/// crashing worker would.
#[derive(Debug)]
pub struct PauseAfterRegister {
    inner: Arc<dyn NamespaceBackend>,
    pause: Duration,
}

impl PauseAfterRegister {
    pub fn new(inner: Arc<dyn NamespaceBackend>, pause: Duration) -> Self {
        Self { inner, pause }
    }
}

#[async_trait::async_trait]
impl NamespaceBackend for PauseAfterRegister {
    async fn describe(&self, name: &str) -> Result<Option<ObservedNamespace>, BackendError> {
        self.inner.describe(name).await
    }

    async fn register(&self, spec: &NamespaceSpec) -> Result<(), BackendError> {
        self.inner.register(spec).await?;
        tokio::time::sleep(self.pause).await;
        Ok(())
    }

    async fn update(&self, spec: &NamespaceSpec) -> Result<(), BackendError> {
        self.inner.update(spec).await
    }

    async fn add_search_attributes(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<(), BackendError> {
        tokio::time::sleep(self.pause).await;
        self.inner.add_search_attributes(name, attributes).await
    }

    async fn delete(&self, name: &str) -> Result<(), BackendError> {
        self.inner.delete(name).await
    }

    async fn list_access(&self, name: &str) -> Result<BTreeMap<String, AccessLevel>, BackendError> {
        self.inner.list_access(name).await
    }

    async fn apply_access(
        &self,
        name: &str,
        changes: &[AccessChange],
    ) -> Result<u32, BackendError> {
        self.inner.apply_access(name, changes).await
    }

    async fn endpoint(&self, name: &str) -> Result<String, BackendError> {
        self.inner.endpoint(name).await
    }

    fn has_long_operations(&self) -> bool {
        self.inner.has_long_operations()
    }

    fn temporal_name(&self, name: &str) -> String {
        self.inner.temporal_name(name)
    }
}
