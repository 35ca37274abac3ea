//! Audit records from the data path (the proxy's refusals, the codec server's decodes): held
//! in a bounded queue and handed to the audit trail's data stream in batches, so a burst of
//! calls neither waits for the trail nor makes the process grow. What the queue cannot hold is
//! counted, and the count becomes a record of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plinth_proto::audit::AuditRecord;
use tokio::sync::{mpsc, oneshot};

use crate::contract::DATA_STREAM;
use crate::{BackendError, ControlPlane};

/// Records waiting at most; more are dropped and counted.
const QUEUE: usize = 10_000;
/// Records handed to the trail at once, and their bytes (as JSON) at most: well inside what
/// the trail takes in one `append`, so a batch is never refused for its size.
const BATCH: usize = 200;
const BATCH_BYTES: usize = 128 << 10;
/// A batch not full by then goes as it is.
const GATHER: Duration = Duration::from_secs(1);
/// A refused or failed hand-over is tried again after this, doubling, up to `MAX_RETRY`.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Where the data path puts its records.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Takes `record` for the trail without waiting; one the queue has no room for is
    /// counted as dropped.
    fn record(&self, record: AuditRecord);
}

/// An [`AuditSink`] whose records go to the audit trail's data stream of every destination,
/// each through a queue of its own: a destination that takes nothing holds no other up.
#[derive(Clone, Debug)]
pub struct AuditSender {
    queues: Vec<Queue>,
}

/// One destination's records waiting, and how many found no room since the last batch.
#[derive(Clone, Debug)]
struct Queue {
    records: mpsc::Sender<AuditRecord>,
    dropped: Arc<AtomicU64>,
}

impl AuditSink for AuditSender {
    fn record(&self, record: AuditRecord) {
        let record = record.bounded();
        // Refusals cost the caller nothing to provoke: they may fill half a queue, so a flood
        // of them never crowds out the records of what was done (decodes).
        let refusal = record.outcome == plinth_proto::outcome::DENIED;
        for queue in &self.queues {
            let kept_free = if refusal {
                queue.records.max_capacity() / 2
            } else {
                0
            };
            let room = queue.records.capacity() > kept_free;
            if !room || queue.records.try_send(record.clone()).is_err() {
                queue.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl AuditSender {
    /// A sender for records of `source` (`proxy`, `codec`), to `destinations` through
    /// `control`, and the delivery that must be spawned for them to leave; it ends when every
    /// sender is dropped and the queues are delivered.
    pub fn new(
        control: ControlPlane,
        destinations: Vec<String>,
        source: &'static str,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let mut queues = Vec::new();
        let mut deliveries = Vec::new();
        for destination in destinations {
            let (records, received) = mpsc::channel(QUEUE);
            let dropped = Arc::new(AtomicU64::new(0));
            deliveries.push(deliver(
                control.clone(),
                destination,
                source,
                received,
                dropped.clone(),
            ));
            queues.push(Queue { records, dropped });
        }
        let delivery = async move {
            futures::future::join_all(deliveries).await;
        };
        (Self { queues }, delivery)
    }
}

/// Gathers batches from `received` and hands each to `destination`, retrying until taken.
async fn deliver(
    control: ControlPlane,
    destination: String,
    source: &'static str,
    mut received: mpsc::Receiver<AuditRecord>,
    dropped: Arc<AtomicU64>,
) {
    while let Some(batch) = gather(&mut received, &dropped, source).await {
        let mut wait = FIRST_RETRY;
        let mut told = false;
        while let Err(e) = control
            .append_audit(&destination, DATA_STREAM, batch.clone())
            .await
        {
            if !std::mem::replace(&mut told, true) {
                tracing::warn!(destination, error = %e, "audit records wait: the trail did not take them");
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RETRY);
        }
    }
}

/// Records of changes, handed to one destination's trail together: what callers give while
/// an `append` is under way goes in one next `append`. The trail's workflow takes a few
/// updates at a time (Temporal bounds those in flight per workflow), so one update per change
/// made a burst of applies back off for seconds.
#[derive(Clone, Debug)]
pub struct AuditGatherer {
    calls: mpsc::Sender<Call>,
}

/// One caller's records, and where it waits for the outcome.
#[derive(Debug)]
struct Call {
    records: Vec<AuditRecord>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Callers waiting at most for the next `append`; more wait to be taken.
const CALLS: usize = 1_024;
/// An `append` unanswered by then fails its callers (a `RecordAudit` activity's try lasts
/// 30 s; one in a workflow task gives up after 10 s and leaves it to the activity), so a
/// stuck trail holds up no later records for longer.
const APPEND_TIMEOUT: Duration = Duration::from_secs(25);

impl AuditGatherer {
    /// A gatherer for `destination`'s trail through `control`, and the delivery that must be
    /// spawned; it ends when every clone of the gatherer is dropped.
    pub fn new(
        control: ControlPlane,
        destination: String,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        Self::appending(move |records| {
            let control = control.clone();
            let destination = destination.clone();
            async move {
                match control.append_audit(&destination, "", records).await {
                    Ok(_) => Ok(()),
                    Err(BackendError::Unavailable(why)) => Err(why),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
    }

    fn appending<F, A>(append: F) -> (Self, impl Future<Output = ()> + Send + 'static)
    where
        F: Fn(Vec<AuditRecord>) -> A + Send + 'static,
        A: Future<Output = Result<(), String>> + Send,
    {
        let (calls, mut received) = mpsc::channel::<Call>(CALLS);
        let delivery = async move {
            let mut next = None;
            loop {
                let first = match next.take() {
                    Some(call) => call,
                    None => match received.recv().await {
                        Some(call) => call,
                        None => return,
                    },
                };
                if first.done.is_closed() {
                    continue;
                }
                let mut batch;
                (batch, next) = calls_with(first, &mut received);
                let records = batch
                    .iter_mut()
                    .flat_map(|c| std::mem::take(&mut c.records))
                    .collect();
                let outcome = tokio::time::timeout(APPEND_TIMEOUT, append(records))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("the trail took no answer in {APPEND_TIMEOUT:?}"))
                    });
                for call in batch {
                    // A caller that stopped waiting is retried by its workflow: the trail
                    // keeps its records once.
                    let _ = call.done.send(outcome.clone());
                }
            }
        };
        (Self { calls }, delivery)
    }

    /// Hands `records` to the trail; answers once they are in it, or why they are not (worth
    /// retrying: a repeat is kept once).
    pub async fn append(&self, records: Vec<AuditRecord>) -> Result<(), BackendError> {
        let stopped = || BackendError::Unavailable("the audit delivery stopped".into());
        let (done, outcome) = oneshot::channel();
        self.calls
            .send(Call { records, done })
            .await
            .map_err(|_| stopped())?;
        outcome
            .await
            .map_err(|_| stopped())?
            .map_err(BackendError::Unavailable)
    }
}

/// `first` and the calls already waiting behind it, up to [`BATCH`] records and
/// [`BATCH_BYTES`], and the call that no longer fitted.
fn calls_with(first: Call, received: &mut mpsc::Receiver<Call>) -> (Vec<Call>, Option<Call>) {
    let mut count = first.records.len();
    let mut bytes: usize = first.records.iter().map(json_bytes).sum();
    let mut batch = vec![first];
    while let Ok(call) = received.try_recv() {
        // Its activity timed out: the retry brings the same records again.
        if call.done.is_closed() {
            continue;
        }
        let more: usize = call.records.iter().map(json_bytes).sum();
        if count + call.records.len() > BATCH || bytes + more > BATCH_BYTES {
            return (batch, Some(call));
        }
        count += call.records.len();
        bytes += more;
        batch.push(call);
    }
    (batch, None)
}

fn json_bytes(record: &AuditRecord) -> usize {
    serde_json::to_vec(record).map_or(0, |json| json.len())
}

/// The next batch: what arrives within [`GATHER`] of its first record, up to [`BATCH`], and a
/// record of how many were dropped since the last. `None` once no sender is left.
async fn gather(
    received: &mut mpsc::Receiver<AuditRecord>,
    dropped: &AtomicU64,
    source: &str,
) -> Option<Vec<AuditRecord>> {
    let first = received.recv().await?;
    let mut bytes = json_bytes(&first);
    let mut batch = vec![first];
    let until = tokio::time::Instant::now() + GATHER;
    while batch.len() < BATCH && bytes < BATCH_BYTES {
        match tokio::time::timeout_at(until, received.recv()).await {
            Ok(Some(record)) => {
                bytes += json_bytes(&record);
                batch.push(record);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let lost = dropped.swap(0, Ordering::Relaxed);
    if lost > 0 {
        batch.push(
            AuditRecord::now(
                format!("plinth:{source}"),
                "audit.dropped",
                format!("audit/{source}"),
                "dropped",
            )
            .detail(format!(
                "{lost} records dropped: more than {QUEUE} waited for the trail"
            )),
        );
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> AuditRecord {
        AuditRecord::now("user:a", "codec.decoded", format!("payload/{n}"), "decoded")
    }

    fn refusal(n: usize) -> AuditRecord {
        AuditRecord::now("user:m", "proxy.refused", format!("rpc/{n}"), "denied")
    }

    /// A gatherer whose appends answer `outcome` at once, and the records of each append.
    fn recording(
        outcome: fn(&[AuditRecord]) -> Result<(), String>,
    ) -> (
        AuditGatherer,
        impl Future<Output = ()> + Send + 'static,
        mpsc::UnboundedReceiver<Vec<AuditRecord>>,
    ) {
        let (appended, appends) = mpsc::unbounded_channel();
        let (gatherer, delivery) = AuditGatherer::appending(move |records: Vec<AuditRecord>| {
            let answer = outcome(&records);
            appended.send(records).unwrap();
            async move { answer }
        });
        (gatherer, delivery, appends)
    }

    #[tokio::test]
    async fn changes_given_while_an_append_is_under_way_go_together_in_the_next() {
        let (appended, mut appends) = mpsc::unbounded_channel();
        let (gate, opened) = tokio::sync::watch::channel(false);
        let (gatherer, delivery) = AuditGatherer::appending(move |records: Vec<AuditRecord>| {
            let appended = appended.clone();
            let mut opened = opened.clone();
            async move {
                appended.send(records.len()).unwrap();
                opened.wait_for(|open| *open).await.unwrap();
                Ok(())
            }
        });
        tokio::spawn(delivery);
        let first = tokio::spawn({
            let gatherer = gatherer.clone();
            async move { gatherer.append(vec![record(0)]).await }
        });
        assert_eq!(appends.recv().await, Some(1), "the first goes at once");
        let mut waiting = Vec::new();
        for n in 1..=5 {
            let gatherer = gatherer.clone();
            waiting.push(tokio::spawn(async move {
                gatherer.append(vec![record(n), record(n + 100)]).await
            }));
        }
        // Each caller's records are queued before the first append is let through.
        while gatherer.calls.capacity() > CALLS - 5 {
            tokio::task::yield_now().await;
        }
        gate.send(true).unwrap();
        assert_eq!(appends.recv().await, Some(10), "five callers, one append");
        first.await.unwrap().unwrap();
        for caller in waiting {
            caller.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn each_caller_gets_the_outcome_of_the_append_that_carried_its_records() {
        // The full batch is refused, the one after it taken.
        let (gatherer, delivery, mut appends) = recording(|records| {
            if records.len() == BATCH {
                Err("refused: too many records wait".to_owned())
            } else {
                Ok(())
            }
        });
        let full = gatherer.append((0..BATCH).map(record).collect());
        let next = gatherer.append(vec![record(BATCH)]);
        // Both queued before the delivery starts: they cannot share one append.
        let (full, next, ()) = tokio::join!(full, next, async {
            tokio::task::yield_now().await;
            tokio::spawn(delivery);
        });
        let error = full.unwrap_err().to_string();
        assert!(error.contains("too many records wait"), "{error}");
        next.unwrap();
        assert_eq!(appends.recv().await.map(|r| r.len()), Some(BATCH));
        assert_eq!(appends.recv().await.map(|r| r.len()), Some(1));
    }

    #[tokio::test]
    async fn records_of_a_caller_that_stopped_waiting_are_left_to_its_retry() {
        let (gatherer, delivery, mut appends) = recording(|_| Ok(()));
        let (done, gone) = oneshot::channel();
        drop(gone);
        let call = Call {
            records: vec![record(0)],
            done,
        };
        gatherer.calls.send(call).await.unwrap();
        tokio::spawn(delivery);
        gatherer.append(vec![record(1)]).await.unwrap();
        let sent = appends.recv().await.unwrap();
        let resources: Vec<&str> = sent.iter().map(|r| r.resource.as_str()).collect();
        assert_eq!(resources, ["payload/1"]);
    }

    #[tokio::test]
    async fn a_batch_is_what_arrived_within_a_second_of_its_first_record() {
        let (queue, mut received) = mpsc::channel(QUEUE);
        let dropped = AtomicU64::new(0);
        for n in 0..3 {
            queue.send(record(n)).await.unwrap();
        }
        let batch = gather(&mut received, &dropped, "proxy").await.unwrap();
        assert_eq!(batch.len(), 3);
        drop(queue);
        assert!(gather(&mut received, &dropped, "proxy").await.is_none());
    }

    #[tokio::test]
    async fn a_flood_of_refusals_leaves_room_for_what_was_done() {
        let (records, mut received) = mpsc::channel(QUEUE);
        let sender = AuditSender {
            queues: vec![Queue {
                records,
                dropped: Arc::new(AtomicU64::new(0)),
            }],
        };
        for n in 0..QUEUE {
            sender.record(refusal(n));
        }
        let decoded = record(QUEUE);
        sender.record(decoded.clone());
        drop(sender);
        let mut kept = Vec::new();
        while let Some(record) = received.recv().await {
            kept.push(record);
        }
        assert_eq!(kept.len(), QUEUE / 2 + 1);
        assert_eq!(kept.last(), Some(&decoded));
    }

    #[tokio::test]
    async fn what_the_queue_cannot_hold_is_counted_and_reported_in_the_next_batch() {
        let (records, mut received) = mpsc::channel(2);
        let dropped = Arc::new(AtomicU64::new(0));
        let sender = AuditSender {
            queues: vec![Queue {
                records,
                dropped: dropped.clone(),
            }],
        };
        for n in 0..5 {
            sender.record(record(n));
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        let batch = gather(&mut received, &dropped, "proxy").await.unwrap();
        assert_eq!(batch.len(), 3, "two records and the count");
        let report = batch.last().unwrap();
        assert_eq!(report.action, "audit.dropped");
        assert!(
            report.detail.starts_with("3 records dropped"),
            "{}",
            report.detail
        );
        assert_eq!(report.check(), Ok(()));
        assert_eq!(dropped.load(Ordering::Relaxed), 0, "reported once");
    }

    #[tokio::test]
    async fn records_with_names_a_caller_made_huge_make_batches_the_trail_takes() {
        let (records, mut received) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let sender = AuditSender {
            queues: vec![Queue {
                records,
                dropped: dropped.clone(),
            }],
        };
        for n in 0..BATCH {
            sender.record(record(n).in_namespace("x".repeat(300_000)));
        }
        let batch = gather(&mut received, &dropped, "codec").await.unwrap();
        let bytes: usize = batch.iter().map(json_bytes).sum();
        assert!(
            bytes <= BATCH_BYTES + 2 * plinth_proto::audit::MAX_FIELD_BYTES,
            "{bytes}"
        );
        assert!(batch.len() > 50, "each one small: {}", batch.len());
    }

    #[tokio::test]
    async fn a_destination_whose_queue_is_full_leaves_the_others_every_record() {
        let (full, _held) = mpsc::channel(1);
        let (open, mut received) = mpsc::channel(10);
        let queue = |records| Queue {
            records,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let sender = AuditSender {
            queues: vec![queue(full), queue(open)],
        };
        for n in 0..3 {
            sender.record(record(n));
        }
        assert_eq!(sender.queues[0].dropped.load(Ordering::Relaxed), 2);
        assert_eq!(sender.queues[1].dropped.load(Ordering::Relaxed), 0);
        let batch = gather(&mut received, &sender.queues[1].dropped, "proxy")
            .await
            .unwrap();
        assert_eq!(batch.len(), 3);
    }
}
