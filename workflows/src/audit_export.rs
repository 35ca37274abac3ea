use std::time::Duration;

use plinth_control::contract::{Appended, AuditExportState};
use plinth_proto::audit::{AuditRecord, digest};
use temporalio_common::data_converters::RawValue;
use temporalio_common::protos::temporal::api::common::v1::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::audit::until_done;
use crate::contracts::{
    AccountAuditPull, AuditBatch, LoadAuditSettings, PullAccountAudit, ShipAudit,
};
use crate::handover::hand_over_when_long;
use crate::provision_namespace::{UpdateError, local_activity};

/// Bytes of records (as JSON) waiting at most: an `append` past it is refused whole, and its
/// sender retries. Well under Temporal's 2 MiB payload limit, which the state handed over to
/// the next run must fit.
pub(crate) const MAX_PENDING_BYTES: usize = 512 << 10;
/// Records waiting that make a shipment start before the interval is up.
const SHIP_AT_BYTES: usize = MAX_PENDING_BYTES / 4;
/// Records pulled from the backend's own log at once, and the room each is given (a pulled
/// record is bounded, each field at most 1 KiB).
const PULLED_AT_ONCE: usize = 500;
const PULLED_RECORD_BYTES: usize = 8 << 10;
/// Ids remembered, so a record delivered again is kept once.
const RECENT_IDS: usize = 4_096;

/// The audit trail's shipping of one stream to one destination, for as long as the
/// installation lives: workflow id `audit/<destination>` for changes, and
/// `audit/<destination>/data` for the data path's records. Records arrive by the `append` update (refused while
/// [`MAX_PENDING_BYTES`] wait, so nothing is dropped here) and are written as numbered batches
/// every `[audit] interval`, or sooner when many wait; a failed write is retried until it
/// succeeds, and the next batch waits for it, so none is skipped.
#[workflow]
#[derive(Debug)]
pub struct AuditExport {
    state: AuditExportState,
    /// Bytes of `state.pending`, as JSON.
    pending_bytes: usize,
}

#[workflow_methods]
impl AuditExport {
    /// Starts from nothing, or from what the previous run handed over.
    #[init]
    pub fn new(_ctx: &WorkflowContextView, state: AuditExportState) -> Self {
        let pending_bytes = state.pending.iter().map(json_bytes).sum();
        Self {
            state,
            pending_bytes,
        }
    }

    /// Ships batches; never returns on its own.
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<RawValue> {
        let destination = ctx.state(|s| s.state.destination.clone());
        let settings = ctx
            .execute_local_activity(LoadAuditSettings, destination.clone(), local_activity())
            .await?;
        let interval = Duration::from_secs(settings.interval_secs.max(1));
        let options = until_done(Duration::from_secs(120));
        // Only the changes stream takes the backend's own log, once per destination.
        let pull = settings.account_audit && ctx.state(|s| s.state.stream.is_empty());
        loop {
            temporalio_sdk::workflows::select! {
                _ = ctx.timer(interval) => {},
                _ = ctx.wait_condition(|s| s.pending_bytes >= SHIP_AT_BYTES) => {},
            };
            if pull {
                pull_account_audit(ctx).await;
            }
            let batch = ctx.state(|s| AuditBatch {
                destination: destination.clone(),
                stream: s.state.stream.clone(),
                batch: s.state.next_batch,
                records: s.state.pending.clone(),
            });
            if !batch.records.is_empty() {
                let shipped = batch.records.len();
                ctx.execute_activity(ShipAudit, batch, options.clone())
                    .await?;
                ctx.state_mut(|s| s.shipped(shipped));
            }
            hand_over_when_long(ctx, |s| s.state.clone()).await?;
        }
    }

    /// Refuses records that are not whole, and all of them while too many wait.
    #[update_validator(append)]
    #[allow(clippy::ptr_arg)] // The SDK hands validators a reference to the update's input.
    pub fn validate_append(
        &self,
        _ctx: &WorkflowContextView,
        records: &Vec<AuditRecord>,
    ) -> Result<(), UpdateError> {
        self.check(records).map_err(Into::into)
    }

    /// Takes records to ship; one whose id was taken lately is left out.
    #[update]
    pub fn append(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        records: Vec<AuditRecord>,
    ) -> Result<Appended, UpdateError> {
        Ok(self.take(records))
    }
}

/// Takes what the backend's own audit log added since the last pull, as much as fits. A pull
/// that fails is tried again at the next shipment, from the same place: the trail's own
/// records never wait for it.
async fn pull_account_audit(ctx: &mut WorkflowContext<AuditExport>) {
    let (cursor, room) = ctx.state(|s| {
        (
            s.state.account_cursor.clone(),
            MAX_PENDING_BYTES.saturating_sub(s.pending_bytes) / PULLED_RECORD_BYTES,
        )
    });
    let max = room.min(PULLED_AT_ONCE) as u32;
    if max == 0 {
        return;
    }
    let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
        .retry_policy(RetryPolicy {
            maximum_attempts: 1,
            ..Default::default()
        })
        .build();
    let pulled = ctx
        .execute_activity(PullAccountAudit, AccountAuditPull { cursor, max }, options)
        .await;
    if let Ok(pulled) = pulled {
        ctx.state_mut(|s| {
            s.take(pulled.records);
            if pulled.cursor.is_some() {
                s.state.account_cursor = pulled.cursor;
            }
        });
    }
}

impl AuditExport {
    fn check(&self, records: &[AuditRecord]) -> Result<(), String> {
        for (i, record) in records.iter().enumerate() {
            record.check().map_err(|e| format!("records[{i}].{e}"))?;
        }
        let adding: usize = records.iter().map(json_bytes).sum();
        if self.pending_bytes + adding > MAX_PENDING_BYTES {
            return Err(format!(
                "audit destination {:?} has {} bytes of records waiting to be written; try \
                 again later",
                self.state.destination, self.pending_bytes
            ));
        }
        Ok(())
    }

    fn take(&mut self, records: Vec<AuditRecord>) -> Appended {
        let mut answer = Appended::default();
        for record in records {
            let digest = digest(&record.id);
            if self.state.recent.contains(&digest) {
                answer.duplicates += 1;
                continue;
            }
            if self.state.recent.len() >= RECENT_IDS {
                self.state.recent.pop_front();
            }
            self.state.recent.push_back(digest);
            self.pending_bytes += json_bytes(&record);
            self.state.pending.push(record);
            answer.accepted += 1;
        }
        answer
    }

    /// The first `count` records are written: the next batch has the next number.
    fn shipped(&mut self, count: usize) {
        let shipped: Vec<AuditRecord> = self.state.pending.drain(..count).collect();
        self.pending_bytes -= shipped.iter().map(json_bytes).sum::<usize>();
        self.state.next_batch += 1;
    }
}

fn json_bytes(record: &AuditRecord) -> usize {
    serde_json::to_vec(record).map_or(0, |json| json.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> AuditRecord {
        AuditRecord::new(id, "2026-12-04T10:00:00Z", "user:a", "x.y", "r", "o")
    }

    fn export() -> AuditExport {
        AuditExport {
            state: AuditExportState {
                destination: "local".into(),
                ..Default::default()
            },
            pending_bytes: 0,
        }
    }

    #[test]
    fn a_record_delivered_again_is_kept_once() {
        let mut export = export();
        let first = export.take(vec![record("a"), record("b")]);
        assert_eq!((first.accepted, first.duplicates), (2, 0));
        let again = export.take(vec![record("b"), record("c")]);
        assert_eq!((again.accepted, again.duplicates), (1, 1));
        let ids: Vec<&str> = export.state.pending.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn records_arriving_while_a_batch_is_written_wait_for_the_next() {
        let mut export = export();
        export.take(vec![record("a"), record("b")]);
        // Batch 0 holds a and b; c arrives while it is written.
        export.take(vec![record("c")]);
        export.shipped(2);
        assert_eq!(export.state.next_batch, 1);
        assert_eq!(export.state.pending, [record("c")]);
        assert_eq!(export.pending_bytes, json_bytes(&record("c")));
    }

    #[test]
    fn appends_past_the_limit_are_refused_whole_and_bad_records_by_field() {
        let mut export = export();
        let big = record(&"x".repeat(2_000));
        let many: Vec<AuditRecord> = (0..MAX_PENDING_BYTES / 2_000 + 1)
            .map(|i| AuditRecord {
                id: format!("{i}{}", big.id),
                ..big.clone()
            })
            .collect();
        let refused = export.check(&many).unwrap_err();
        assert!(refused.contains("try again later"), "{refused}");
        // What fits is taken; then what fitted before no longer does.
        let fits = &many[..many.len() / 2];
        assert_eq!(export.check(fits), Ok(()));
        export.take(fits.to_vec());
        assert!(export.check(fits).is_err());
        let mut bad = record("d");
        bad.actor.clear();
        let refused = export.check(&[record("e"), bad]).unwrap_err();
        assert_eq!(refused, "records[1].actor: missing");
    }

    #[test]
    fn the_remembered_ids_are_bounded() {
        let mut export = export();
        for i in 0..RECENT_IDS + 10 {
            export.take(vec![record(&i.to_string())]);
        }
        assert_eq!(export.state.recent.len(), RECENT_IDS);
        // The oldest is forgotten: delivered again, it is taken.
        assert_eq!(export.take(vec![record("0")]).accepted, 1);
    }
}
