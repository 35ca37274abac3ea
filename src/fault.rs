//! Fault injection for crash tests. `PLINTH_FAULT_PAUSE_AFTER_REGISTER=3s` makes the worker
//! pause after each namespace registration, and before adding search attributes (where a
//! reconcile taken over by an activity goes on), so a test can kill it mid-provisioning.
//! `PLINTH_FAULT_FAILED_RELOADS=2` makes the worker's first two directory reloads fail, as a
//! transient read error would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use plinth_control::directory::{Directory, DirectoryError, Size};
use plinth_control::{
    AccessChange, AccessLevel, BackendError, NamespaceBackend, ObservedNamespace,
};
use plinth_identity::Identity;
use plinth_proto::v1::NamespaceSpec;

const PAUSE_VAR: &str = "PLINTH_FAULT_PAUSE_AFTER_REGISTER";
const FAILED_RELOADS_VAR: &str = "PLINTH_FAULT_FAILED_RELOADS";

/// The value of fault variable `name` read by `parse`, if set.
fn fault<T, E>(name: &str, parse: impl FnOnce(&str) -> Result<T, E>) -> anyhow::Result<Option<T>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    std::env::var(name)
        .ok()
        .map(|value| parse(&value).with_context(|| name.to_owned()))
        .transpose()
}

/// The pause `PLINTH_FAULT_PAUSE_AFTER_REGISTER` asks for, if set.
pub fn pause_after_register() -> anyhow::Result<Option<Duration>> {
    fault(PAUSE_VAR, humantime::parse_duration)
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

/// How many reloads `PLINTH_FAULT_FAILED_RELOADS` asks to fail, if set.
pub fn failed_reloads() -> anyhow::Result<Option<u32>> {
    fault(FAILED_RELOADS_VAR, str::parse)
}

/// A directory whose first reloads fail without reading, as when the file is briefly
/// unreadable; everything else goes to the directory it wraps.
#[derive(Debug)]
pub struct FailedReloads {
    inner: Arc<dyn Directory>,
    left: AtomicU32,
}

impl FailedReloads {
    pub fn new(inner: Arc<dyn Directory>, failures: u32) -> Self {
        Self {
            inner,
            left: AtomicU32::new(failures),
        }
    }
}

#[async_trait::async_trait]
impl Directory for FailedReloads {
    fn group_exists(&self, group: &str) -> bool {
        self.inner.group_exists(group)
    }

    fn is_member(&self, identity: &Identity, group: &str) -> bool {
        self.inner.is_member(identity, group)
    }

    fn active_members(&self, group: &str) -> BTreeSet<String> {
        self.inner.active_members(group)
    }

    fn is_active(&self, email: &str) -> bool {
        self.inner.is_active(email)
    }

    fn refresh(&self) -> Result<bool, DirectoryError> {
        self.inner.refresh()
    }

    async fn reload(&self, floor: Option<Size>) -> Result<Size, DirectoryError> {
        let failing = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(DirectoryError::Read {
                path: "(fault injection)".into(),
                source: std::io::Error::other("injected read failure"),
            });
        }
        self.inner.reload(floor).await
    }
}
