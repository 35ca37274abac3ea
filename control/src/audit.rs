//! Audit records from the data path (the proxy's refusals, the codec server's decodes): held
//! in a bounded queue and handed to the audit trail's data stream in batches, so a burst of
//! calls neither waits for the trail nor makes the process grow. What the queue cannot hold is
//! counted, and the count becomes a record of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plinth_proto::audit::AuditRecord;
use tokio::sync::mpsc;

use crate::ControlPlane;
use crate::contract::DATA_STREAM;

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
