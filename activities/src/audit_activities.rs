use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use plinth_archive::Archive;
use plinth_control::{AccountAudit, AuditGatherer, ControlPlane, NamespaceBackend};
use plinth_proto::audit::AuditRecord;
use plinth_workflows::contracts::{
    AccountAuditPull, AuditBatch, AuditSettings, LoadAuditSettings, PullAccountAudit, RecordAudit,
    ShipAudit,
};
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// Where the audit trail goes (`[audit] destinations`), and how often.
#[derive(Debug, Clone)]
pub struct AuditActivities {
    destinations: Arc<HashMap<String, Archive>>,
    /// Where changes are handed to each destination's trail, by name (sorted).
    trails: Arc<BTreeMap<String, AuditGatherer>>,
    interval: Duration,
    /// Whose own audit log is pulled into the trail, where it keeps one.
    backend: Arc<dyn NamespaceBackend>,
}

impl AuditActivities {
    /// Ships to `destinations` by name, every `interval`; records reach each destination's
    /// shipping workflow through `control`. Must be called inside a Tokio runtime: each
    /// destination's gathering of records runs as a task until this is dropped.
    pub fn new(
        destinations: HashMap<String, Archive>,
        interval: Duration,
        control: ControlPlane,
        backend: Arc<dyn NamespaceBackend>,
    ) -> Self {
        let trails = destinations
            .keys()
            .map(|name| {
                let (gatherer, delivery) = AuditGatherer::new(control.clone(), name.clone());
                tokio::spawn(delivery);
                (name.clone(), gatherer)
            })
            .collect();
        Self {
            destinations: Arc::new(destinations),
            trails: Arc::new(trails),
            interval,
            backend,
        }
    }

    fn destination(&self, name: &str) -> Result<&Archive, ActivityError> {
        // Retried: the destination may be configured on a worker that takes the task later.
        self.destinations.get(name).ok_or_else(|| {
            ActivityError::application(ApplicationFailure::new(UnknownDestination(name.to_owned())))
        })
    }
}

/// The most a pulled record may take as JSON: the room `AuditExport` gives each.
const PULLED_RECORD_BYTES: usize = 8 << 10;

/// Destinations that did not take the records, and why.
#[derive(Debug, thiserror::Error)]
#[error("audit records not taken by {0}")]
struct UndeliveredAudit(String);

/// A destination this worker's configuration does not name.
#[derive(Debug, thiserror::Error)]
#[error("audit destination {0:?} is not in this worker's [audit] destinations")]
struct UnknownDestination(String);

#[activities]
impl AuditActivities {
    /// The worker's `[audit]` settings.
    #[activity(definition = LoadAuditSettings)]
    pub async fn load_audit_settings(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _destination: String,
    ) -> Result<AuditSettings, ActivityError> {
        Ok(AuditSettings {
            interval_secs: self.interval.as_secs().max(1),
            account_audit: self.backend.keeps_account_audit(),
        })
    }

    /// What the backend's own audit log added after the cursor.
    #[activity(definition = PullAccountAudit)]
    pub async fn pull_account_audit(
        self: Arc<Self>,
        _ctx: ActivityContext,
        pull: AccountAuditPull,
    ) -> Result<AccountAudit, ActivityError> {
        let mut pulled = self
            .backend
            .account_audit(pull.cursor, pull.max as usize)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "the backend's audit log not pulled; tried again at the next shipment");
                ActivityError::application(ApplicationFailure::new(e))
            })?
            .unwrap_or_default();
        // What the trail could not write, or would not have room for, stays out of it.
        pulled.records.retain(|record| {
            let fits =
                serde_json::to_vec(record).is_ok_and(|json| json.len() <= PULLED_RECORD_BYTES);
            let whole = record.check().is_ok();
            if !(fits && whole) {
                tracing::warn!(
                    id = record.id,
                    "a record of the backend's audit log left out: malformed or too large"
                );
            }
            fits && whole
        });
        Ok(pulled)
    }

    /// Hands records to every destination's shipping; a refusal (too many waiting) or an
    /// outage is retried by the workflow until every destination took them.
    #[activity(definition = RecordAudit)]
    pub async fn record_audit(
        self: Arc<Self>,
        _ctx: ActivityContext,
        records: Vec<AuditRecord>,
    ) -> Result<(), ActivityError> {
        for record in &records {
            tracing::info!(
                actor = %record.actor,
                action = %record.action,
                resource = %record.resource,
                outcome = %record.outcome,
                "change recorded"
            );
        }
        // Each destination on its own: one refusing holds the others up no longer than a try.
        let mut failed = Vec::new();
        for (name, trail) in self.trails.iter() {
            if let Err(e) = trail.append(records.clone()).await {
                failed.push(format!("{name}: {e}"));
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        // Retried whole: the destinations that took the records keep them once.
        Err(ActivityError::application(ApplicationFailure::new(
            UndeliveredAudit(failed.join("; ")),
        )))
    }

    /// Writes one batch; a failure is retried by the workflow until it succeeds.
    #[activity(definition = ShipAudit)]
    pub async fn ship_audit(
        self: Arc<Self>,
        _ctx: ActivityContext,
        batch: AuditBatch,
    ) -> Result<Vec<String>, ActivityError> {
        let archive = self.destination(&batch.destination)?;
        let keys =
            plinth_archive::audit::write_batch(archive, &batch.stream, batch.batch, &batch.records)
                .await
                .map_err(|e| ActivityError::application(ApplicationFailure::new(e)))?;
        tracing::info!(
            destination = batch.destination,
            batch = batch.batch,
            records = batch.records.len(),
            "audit batch written"
        );
        Ok(keys)
    }
}
