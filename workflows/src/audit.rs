//! How workflows record what they change in the audit trail: each change names who asked
//! ([`By`]), and its record is handed over by an activity that is retried until the trail has
//! taken it (an apply's is tried once in the workflow task first). A workflow waits for its
//! update handlers before it hands over to a new run, so no record is left behind.

use std::time::Duration;

use plinth_proto::audit::AuditRecord;
use serde::Serialize;
use serde::de::DeserializeOwned;
use temporalio_common::data_converters::{
    PayloadConversionError, SerializationContext, TemporalDeserializable, TemporalSerializable,
};
use temporalio_common::protos::temporal::api::common::v1::{Payload, RetryPolicy};
use temporalio_sdk::{ActivityExecutionError, ActivityOptions, WorkflowContext};

use crate::contracts::RecordAudit;
use crate::in_task::in_task_then_activity;

/// An update's input and who asked for it, as the platform API identified them: one JSON
/// payload, then the asker as a second when known. Histories and callers that send one
/// payload (the `temporal` CLI, or the API before it named the asker) read as nobody named.
#[derive(Clone, Debug, PartialEq)]
pub struct By<T> {
    /// What the update asks for.
    pub input: T,
    /// Who asks: `user:…` or `app:…`.
    pub by: Option<String>,
}

impl<T> By<T> {
    /// `input`, asked for by `by`.
    pub fn new(input: T, by: impl Into<String>) -> Self {
        Self {
            input,
            by: Some(by.into()),
        }
    }
}

fn json(value: &impl Serialize) -> Result<Payload, PayloadConversionError> {
    Ok(Payload {
        metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
        data: serde_json::to_vec(value)
            .map_err(|e| PayloadConversionError::EncodingError(e.into()))?,
        ..Default::default()
    })
}

fn from_json<T: DeserializeOwned>(payload: &Payload) -> Result<T, PayloadConversionError> {
    serde_json::from_slice(&payload.data)
        .map_err(|e| PayloadConversionError::EncodingError(e.into()))
}

impl<T: Serialize> TemporalSerializable for By<T> {
    fn to_payload(&self, _: &SerializationContext<'_>) -> Result<Payload, PayloadConversionError> {
        json(&self.input)
    }

    fn to_payloads(
        &self,
        ctx: &SerializationContext<'_>,
    ) -> Result<Vec<Payload>, PayloadConversionError> {
        let mut payloads = vec![self.to_payload(ctx)?];
        if let Some(by) = &self.by {
            payloads.push(json(by)?);
        }
        Ok(payloads)
    }
}

impl<T: DeserializeOwned> TemporalDeserializable for By<T> {
    fn from_payloads(
        _: &SerializationContext<'_>,
        payloads: Vec<Payload>,
    ) -> Result<Self, PayloadConversionError> {
        match payloads.as_slice() {
            [input] => Ok(Self {
                input: from_json(input)?,
                by: None,
            }),
            [input, by] => Ok(Self {
                input: from_json(input)?,
                by: from_json(by)?,
            }),
            _ => Err(PayloadConversionError::WrongEncoding),
        }
    }
}

/// Input of a `delete` update: who asks, as the platform API identified them. Histories
/// recorded before it existed carry no input at all (the update took `()`), read as nobody
/// named; so it is (de)serialized by hand, as one JSON payload or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deleter(pub Option<String>);

impl TemporalSerializable for Deleter {
    fn to_payload(&self, _: &SerializationContext<'_>) -> Result<Payload, PayloadConversionError> {
        // JSON even for `None`: no payload at all is what histories before it hold.
        json(&self.0)
    }
}

impl TemporalDeserializable for Deleter {
    fn from_payloads(
        _: &SerializationContext<'_>,
        payloads: Vec<Payload>,
    ) -> Result<Self, PayloadConversionError> {
        match payloads.as_slice() {
            [] => Ok(Self(None)),
            [payload]
                if payload.metadata.get("encoding").map(Vec::as_slice) == Some(b"binary/null") =>
            {
                Ok(Self(None))
            }
            [payload] => from_json(payload).map(Self),
            _ => Err(PayloadConversionError::WrongEncoding),
        }
    }
}

/// Marks histories whose changes are recorded in the audit trail: those recorded before
/// replay without the recording.
pub(crate) const AUDIT_PATCH: &str = "audit-trail";

/// Whether a change asked for by `by` is recorded. An asker is named only by callers since
/// the audit trail, so a named one is recorded whatever [`AUDIT_PATCH`] answered earlier
/// in a run that began before it (the SDK keeps a patch's first answer for the whole run).
pub(crate) fn records<W>(ctx: &WorkflowContext<W>, by: Option<&str>) -> bool {
    // Asked every time, so the patch's marker is where the histories have it.
    let patched = ctx.patched(AUDIT_PATCH);
    by.is_some() || patched
}

/// A spec as the audit trail shows it: `{"spec": …}` in the resource's own JSON shape, so
/// changes are named `spec.retentionDays` and the like.
pub(crate) fn spec_json(spec: impl Serialize) -> serde_json::Value {
    serde_json::json!({ "spec": spec })
}

/// Who a record names as the actor: the asker, else the workflow itself.
pub(crate) fn actor<W>(ctx: &WorkflowContext<W>, by: Option<&str>) -> String {
    match by {
        Some(by) if !by.is_empty() => by.to_owned(),
        _ => format!("workflow:{}", ctx.workflow_id()),
    }
}

/// A record of `action` on `resource` now, with an id that is the same on every replay.
pub(crate) fn new_record<W>(
    ctx: &WorkflowContext<W>,
    actor: String,
    action: &str,
    resource: String,
    outcome: &str,
) -> AuditRecord {
    let id = format!("{}@{}/{}", ctx.workflow_id(), ctx.run_id(), ctx.uuid4());
    let time = ctx
        .workflow_time()
        .map(|t| humantime::format_rfc3339_millis(t).to_string())
        .unwrap_or_default();
    AuditRecord::new(id, time, actor, action, resource, outcome)
}

/// Records handed over at once: well inside what the trail takes in one `append`.
const RECORDS_PER_CALL: usize = 200;

/// Options of an audit activity that is retried until it succeeds (a full trail or a store
/// that is down refuses for a while, then takes it), at least once a minute, each try given
/// `try_for`.
pub(crate) fn until_done(try_for: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(try_for)
        .retry_policy(forever(Duration::from_secs(60)))
        .build()
}

/// Retries without end, backing off from a second up to `at_most` between tries.
pub(crate) fn forever(at_most: Duration) -> RetryPolicy {
    RetryPolicy {
        initial_interval: Some(Duration::from_secs(1).try_into().expect("fits")),
        backoff_coefficient: 2.0,
        maximum_interval: Some(at_most.try_into().expect("fits")),
        maximum_attempts: 0,
        non_retryable_error_types: Vec::new(),
    }
}

/// Hands `records` to the audit trail, retrying until it has taken them.
pub(crate) async fn record<W>(
    ctx: &mut WorkflowContext<W>,
    records: Vec<AuditRecord>,
) -> Result<(), ActivityExecutionError> {
    let options = until_done(Duration::from_secs(30));
    for chunk in records.chunks(RECORDS_PER_CALL) {
        ctx.execute_activity(RecordAudit, chunk.to_vec(), options.clone())
            .await?;
    }
    Ok(())
}

/// [`record`], each chunk tried first in the workflow task that makes the records (no round
/// trip through the task queue): the trail's own workflow may need a task of this worker
/// meanwhile, so the try is short ([`in_task_then_activity`]).
pub(crate) async fn record_in_task<W>(
    ctx: &mut WorkflowContext<W>,
    records: Vec<AuditRecord>,
) -> Result<(), ActivityExecutionError> {
    let options = until_done(Duration::from_secs(30));
    for chunk in records.chunks(RECORDS_PER_CALL) {
        in_task_then_activity(ctx, RecordAudit, chunk.to_vec(), options.clone()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_asker_travels_as_a_second_payload_and_one_payload_reads_as_nobody() {
        use temporalio_common::data_converters::{PayloadConverter, SerializationContextData};
        let converter = PayloadConverter::default();
        let context = || SerializationContext::new(&SerializationContextData::None, &converter);
        let asked = By::new("x".to_owned(), "user:alice@example.com");
        let payloads = asked.to_payloads(&context()).unwrap();
        assert_eq!(payloads.len(), 2);
        let read = By::<String>::from_payloads(&context(), payloads.clone()).unwrap();
        assert_eq!(read, asked);
        let old = By::<String>::from_payloads(&context(), payloads[..1].to_vec()).unwrap();
        assert_eq!(old.by, None);
        assert_eq!(old.input, "x");
    }
}
