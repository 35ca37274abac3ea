//! Closed workflows' histories in Temporal Cloud's export format: binary
//! `temporal.api.export.v1.WorkflowExecutions` objects under
//! `temporal-workflow-history/export/<namespace>/YYYY/MM/DD/HH/00/<id>`, partitioned by the hour
//! the workflows closed in, payloads as Temporal stores them (encrypted). Beside each, an index
//! object under `plinth/history-index/v1/<namespace>/YYYY/MM/DD/HH/<id>.json` lists what it holds,
//! so listing and finding a history read the small indexes, not the histories.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use plinth_proto::v1::ExportedWorkflow;
use prost::Message as _;
use temporalio_common::protos::temporal::api::history::v1::{History, HistoryEvent};

use crate::{Archive, ArchiveError, hours};

/// Where exported histories start in a destination: Temporal Cloud's layout.
pub const PREFIX: &str = "temporal-workflow-history/export";
/// Where the indexes start.
const INDEX: &str = "plinth/history-index/v1";
/// Where namespaces' deletions are marked.
const DELETED: &str = "plinth/history-deleted/v1";
/// The largest index object read: an export object lists at most a few thousand workflows.
const MAX_INDEX_BYTES: u64 = 4 << 20;
/// How long after a workflow closes Temporal Cloud may export it, and an hour.
const EXPORT_DELAY: std::time::Duration = std::time::Duration::from_secs(25 * 3600);
/// Items one export object may hold, and events one history: Temporal ends a workflow at
/// 51,200 events, and Plinth cuts its objects at [`CUT_AT_BYTES`].
const MAX_ITEMS: usize = 100_000;
const MAX_EVENTS: usize = 100_000;
/// The largest export object read: the writer cuts objects at [`CUT_AT_BYTES`], and one
/// history may add Temporal's 50 MB history limit on top.
pub const MAX_OBJECT_BYTES: u64 = 128 << 20;
/// An export object is closed once it holds this many bytes of histories.
pub const CUT_AT_BYTES: usize = 32 << 20;

/// One closed workflow, as the export format holds it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkflowExecution {
    /// Its whole history.
    #[prost(message, optional, tag = "1")]
    pub history: Option<History>,
}

/// The contents of one export object: `temporal.api.export.v1.WorkflowExecutions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkflowExecutions {
    /// The workflows, in the order the index lists them.
    #[prost(message, repeated, tag = "1")]
    pub items: Vec<WorkflowExecution>,
}

/// What one call to [`write`] stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Export objects written.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Writes `workflows` of Temporal namespace `namespace`: one export object (and its index) per
/// hour they closed in, each named `id`, so the same call made again writes the same objects.
/// Each workflow's `key` and `item` are set to where it was written. `id` names one part of one
/// export run.
pub async fn write(
    archive: &Archive,
    namespace: &str,
    id: &str,
    workflows: Vec<(ExportedWorkflow, History)>,
) -> Result<Written, ArchiveError> {
    check_name(archive, "namespace", namespace)?;
    check_name(archive, "id", id)?;
    let mut by_hour: BTreeMap<String, (Vec<ExportedWorkflow>, WorkflowExecutions)> =
        BTreeMap::new();
    for (mut entry, history) in workflows {
        let closed = humantime::parse_rfc3339(&entry.close_time).map_err(|e| {
            archive.malformed(
                namespace,
                format!("workflow {:?} close time: {e}", entry.workflow_id),
            )
        })?;
        let hour = hours::path(&format!("{PREFIX}/{namespace}"), closed);
        let (entries, executions) = by_hour.entry(hour.clone()).or_default();
        entry.key = format!("{hour}/00/{id}");
        entry.item = executions.items.len() as u32;
        entries.push(entry);
        executions.items.push(WorkflowExecution {
            history: Some(history),
        });
    }
    let mut written = Written::default();
    for (hour, (entries, executions)) in by_hour {
        let bytes = executions.encode_to_vec();
        written.objects += 1;
        written.bytes += bytes.len() as u64;
        archive
            .put(&format!("{hour}/00/{id}"), bytes.into())
            .await?;
        // The index follows the object it lists: an index names only what is there.
        let index_hour = hour.replacen(PREFIX, INDEX, 1);
        let index = serde_json::to_vec(&entries).expect("entries serialize");
        archive
            .put(&format!("{index_hour}/{id}.json"), Bytes::from(index))
            .await?;
    }
    Ok(written)
}

/// What the export of `namespace` holds of workflows closed in `[since, until)`.
#[derive(Debug, Default)]
pub struct Listing {
    /// Newest close first; a workflow exported twice is listed once.
    pub workflows: Vec<ExportedWorkflow>,
    /// Reading stopped at its budget: older workflows may be missing.
    pub exhausted: bool,
    /// Objects left out: larger than Plinth reads, or not an export.
    pub skipped: u64,
}

/// Lists what the export holds, reading at most `budget` bytes of indexes, newest hours first.
pub async fn list(
    archive: &Archive,
    namespace: &str,
    since: SystemTime,
    until: SystemTime,
    mut budget: u64,
) -> Result<Listing, ArchiveError> {
    check_name(archive, "namespace", namespace)?;
    let index = format!("{INDEX}/{namespace}");
    let (indexes, exhausted) = hours::keys_by_hour(archive, &index, since, until).await?;
    if indexes.is_empty() && !exhausted {
        return scan(archive, namespace, since, until, budget).await;
    }
    let mut gathered = Gathered::new(since, until, exhausted);
    'hours: for keys in indexes.into_values().rev() {
        for key in keys {
            if budget == 0 {
                gathered.listing.exhausted = true;
                break 'hours;
            }
            let Some(bytes) = archive.get_at_most(&key, MAX_INDEX_BYTES).await? else {
                continue;
            };
            budget = budget.saturating_sub(bytes.len() as u64);
            for (entry, closed) in decode_index(archive, &key, &bytes)? {
                gathered.add(entry, closed);
            }
        }
    }
    Ok(gathered.done())
}

/// A listing being gathered: workflows closed in its range, each once.
struct Gathered {
    listing: Listing,
    since: SystemTime,
    until: SystemTime,
    seen: std::collections::HashSet<(String, String)>,
}

impl Gathered {
    fn new(since: SystemTime, until: SystemTime, exhausted: bool) -> Self {
        Self {
            listing: Listing {
                exhausted,
                ..Listing::default()
            },
            since,
            until,
            seen: std::collections::HashSet::new(),
        }
    }

    /// Keeps `entry`, closed at `closed`, if in range and not kept before.
    fn add(&mut self, entry: ExportedWorkflow, closed: SystemTime) {
        if closed >= self.since
            && closed < self.until
            && self
                .seen
                .insert((entry.workflow_id.clone(), entry.run_id.clone()))
        {
            self.listing.workflows.push(entry);
        }
    }

    /// The listing, newest close first.
    fn done(mut self) -> Listing {
        self.listing
            .workflows
            .sort_by(|a, b| b.close_time.cmp(&a.close_time));
        self.listing
    }
}

/// Lists an export no index describes (Temporal Cloud's own): each object read, each workflow
/// listed from its first and last events. Cloud files an object under the hour it was
/// written, up to a day after its workflows closed, so the day after `until` is read too.
async fn scan(
    archive: &Archive,
    namespace: &str,
    since: SystemTime,
    until: SystemTime,
    mut budget: u64,
) -> Result<Listing, ArchiveError> {
    let prefix = format!("{PREFIX}/{namespace}");
    let (objects, exhausted) =
        hours::keys_by_hour(archive, &prefix, since, until + EXPORT_DELAY).await?;
    let mut gathered = Gathered::new(since, until, exhausted);
    'hours: for keys in objects.into_values().rev() {
        for key in keys {
            if budget == 0 {
                gathered.listing.exhausted = true;
                break 'hours;
            }
            // No object is read past what the budget has left.
            let bytes = match archive
                .get_at_most(&key, MAX_OBJECT_BYTES.min(budget))
                .await
            {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                Err(ArchiveError::Malformed { .. }) => {
                    gathered.listing.skipped += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            budget = budget.saturating_sub(bytes.len() as u64);
            let Ok(items) = listed_items(&bytes, &key) else {
                gathered.listing.skipped += 1;
                continue;
            };
            for entry in items.into_iter().flatten() {
                if let Ok(closed) = humantime::parse_rfc3339(&entry.close_time) {
                    gathered.add(entry, closed);
                }
            }
        }
    }
    Ok(gathered.done())
}

/// Each item of an export object as [`list`] shows it, read from the wire without decoding
/// more than each history's first and last events: `None` for an item that does not start and
/// close. An object of more than [`MAX_ITEMS`] items, or a history of more than
/// [`MAX_EVENTS`] events, is refused.
pub fn listed_items(bytes: &[u8], key: &str) -> Result<Vec<Option<ExportedWorkflow>>, String> {
    let mut items = Vec::new();
    let mut failed = None;
    each_field(bytes, 1, |item| {
        if items.len() >= MAX_ITEMS {
            failed = Some(format!("more than {MAX_ITEMS} items"));
            return false;
        }
        match item_history(item).and_then(ends) {
            Ok(ends) => {
                let index = items.len() as u32;
                items.push(ends.and_then(|(first, last)| listed(&first, &last, key, index)));
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    failed.map_or(Ok(items), Err)
}

/// The history of item `index` of an export object, refused past [`MAX_EVENTS`] events.
pub fn item(bytes: &[u8], index: u32) -> Result<History, String> {
    let mut found = None;
    let mut at = 0;
    each_field(bytes, 1, |item| {
        if at == index {
            found = Some(item);
            return false;
        }
        at += 1;
        true
    })?;
    let history = item_history(found.ok_or_else(|| format!("holds no item {index}"))?)?;
    let mut events = 0;
    each_field(history, 1, |_| {
        events += 1;
        events <= MAX_EVENTS
    })?;
    if events > MAX_EVENTS {
        return Err(format!("a history of more than {MAX_EVENTS} events"));
    }
    History::decode(history).map_err(|e| e.to_string())
}

/// The encoded history of an encoded `WorkflowExecution` (empty when it has none).
fn item_history(item: &[u8]) -> Result<&[u8], String> {
    let mut history: &[u8] = &[];
    each_field(item, 1, |h| {
        history = h;
        true
    })?;
    Ok(history)
}

/// The first and last events of an encoded history, decoding no other.
fn ends(history: &[u8]) -> Result<Option<(HistoryEvent, HistoryEvent)>, String> {
    let (mut first, mut last, mut events) = (None, None, 0);
    each_field(history, 1, |event| {
        first.get_or_insert(event);
        last = Some(event);
        events += 1;
        events <= MAX_EVENTS
    })?;
    if events > MAX_EVENTS {
        return Err(format!("a history of more than {MAX_EVENTS} events"));
    }
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(None);
    };
    let decode = |event: &[u8]| HistoryEvent::decode(event).map_err(|e| e.to_string());
    Ok(Some((decode(first)?, decode(last)?)))
}

/// Calls `f` with each length-delimited value of field `tag` in an encoded message, in order,
/// until it answers false; other fields are stepped over.
fn each_field<'a>(
    mut buf: &'a [u8],
    tag: u32,
    mut f: impl FnMut(&'a [u8]) -> bool,
) -> Result<(), String> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    while !buf.is_empty() {
        let (field, wire) = decode_key(&mut buf).map_err(|e| e.to_string())?;
        if field == tag && wire == WireType::LengthDelimited {
            let len = decode_varint(&mut buf).map_err(|e| e.to_string())?;
            let len = usize::try_from(len)
                .ok()
                .filter(|len| *len <= buf.len())
                .ok_or("a field longer than its message")?;
            let (value, rest) = buf.split_at(len);
            buf = rest;
            if !f(value) {
                return Ok(());
            }
        } else {
            skip_field(wire, field, &mut buf, DecodeContext::default())
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// A closed workflow as its first and last events tell it: started (id, type, run), closed
/// (time, status); `None` unless it starts and closes.
fn listed(
    first: &HistoryEvent,
    last: &HistoryEvent,
    key: &str,
    item: u32,
) -> Option<ExportedWorkflow> {
    use temporalio_common::protos::temporal::api::enums::v1::EventType;
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    let Attributes::WorkflowExecutionStartedEventAttributes(started) = first.attributes.as_ref()?
    else {
        return None;
    };
    let status = match EventType::try_from(last.event_type).ok()? {
        EventType::WorkflowExecutionCompleted => "Completed",
        EventType::WorkflowExecutionFailed => "Failed",
        EventType::WorkflowExecutionTimedOut => "TimedOut",
        EventType::WorkflowExecutionCanceled => "Canceled",
        EventType::WorkflowExecutionTerminated => "Terminated",
        EventType::WorkflowExecutionContinuedAsNew => "ContinuedAsNew",
        _ => return None,
    };
    let time = |t: Option<&prost_wkt_types::Timestamp>| {
        t.and_then(|t| SystemTime::try_from(*t).ok())
            .map(|t| humantime::format_rfc3339_nanos(t).to_string())
    };
    Some(ExportedWorkflow {
        workflow_id: started.workflow_id.clone(),
        run_id: started.original_execution_run_id.clone(),
        workflow_type: started
            .workflow_type
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default(),
        start_time: time(first.event_time.as_ref()).unwrap_or_default(),
        close_time: time(last.event_time.as_ref())?,
        status: status.into(),
        key: key.to_owned(),
        item,
    })
}

/// The history `entry` (as [`list`] gave it) names, from the export of `namespace`.
pub async fn read(
    archive: &Archive,
    namespace: &str,
    entry: &ExportedWorkflow,
) -> Result<History, ArchiveError> {
    check_name(archive, "namespace", namespace)?;
    // The index is trusted no further than the namespace's own part of the export.
    if !entry.key.starts_with(&format!("{PREFIX}/{namespace}/")) || entry.key.contains("..") {
        return Err(archive.malformed(&entry.key, "outside the namespace's export".into()));
    }
    let bytes = archive
        .get_at_most(&entry.key, MAX_OBJECT_BYTES)
        .await?
        .ok_or_else(|| archive.malformed(&entry.key, "listed in the index, but missing".into()))?;
    let history = item(&bytes, entry.item).map_err(|e| archive.malformed(&entry.key, e))?;
    // An object rewritten by a retry, or an index tampered with, must not answer with
    // another workflow's history.
    if started_workflow_id(&history).is_some_and(|id| id != entry.workflow_id) {
        return Err(archive.malformed(
            &entry.key,
            format!(
                "item {} is not workflow {:?}",
                entry.item, entry.workflow_id
            ),
        ));
    }
    Ok(history)
}

/// The workflow id the first event names, when it is a start that names one.
fn started_workflow_id(history: &History) -> Option<&str> {
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    match history.events.first()?.attributes.as_ref()? {
        Attributes::WorkflowExecutionStartedEventAttributes(started)
            if !started.workflow_id.is_empty() =>
        {
            Some(&started.workflow_id)
        }
        _ => None,
    }
}

/// Marks namespace `namespace` deleted at `at`: a namespace re-created under its name later
/// is another, whose readers are not shown what the export kept of this one.
pub async fn mark_deleted(
    archive: &Archive,
    namespace: &str,
    at: SystemTime,
) -> Result<(), ArchiveError> {
    check_name(archive, "namespace", namespace)?;
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    archive
        .put(&format!("{DELETED}/{namespace}/{secs:020}"), Bytes::new())
        .await
}

/// When namespace `namespace` was last deleted, if it was.
pub async fn deleted_at(
    archive: &Archive,
    namespace: &str,
) -> Result<Option<SystemTime>, ArchiveError> {
    check_name(archive, "namespace", namespace)?;
    let prefix = format!("{DELETED}/{namespace}/");
    let (marks, _) = archive.list_at_most(&prefix, hours::MAX_KEYS).await?;
    Ok(marks
        .iter()
        .filter_map(|key| key.rsplit('/').next()?.parse::<u64>().ok())
        .max()
        .map(|secs| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)))
}

/// An index object's entries, each with its close time.
pub fn decode_index(
    archive: &Archive,
    key: &str,
    bytes: &[u8],
) -> Result<Vec<(ExportedWorkflow, SystemTime)>, ArchiveError> {
    let entries: Vec<ExportedWorkflow> =
        serde_json::from_slice(bytes).map_err(|e| archive.malformed(key, e.to_string()))?;
    entries
        .into_iter()
        .map(|entry| {
            let closed = humantime::parse_rfc3339(&entry.close_time)
                .map_err(|e| archive.malformed(key, format!("close time: {e}")))?;
            Ok((entry, closed))
        })
        .collect()
}

/// A name that becomes one part of a key.
fn check_name(archive: &Archive, what: &str, name: &str) -> Result<(), ArchiveError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(archive.malformed(name, format!("{what} is not one part of a key")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(time: &str) -> SystemTime {
        humantime::parse_rfc3339(time).unwrap()
    }

    fn workflow(id: &str, closed: &str) -> (ExportedWorkflow, History) {
        let entry = ExportedWorkflow {
            workflow_id: id.into(),
            run_id: format!("run-{id}"),
            workflow_type: "Greet".into(),
            start_time: "2026-12-04T09:00:00Z".into(),
            close_time: closed.into(),
            status: "Completed".into(),
            ..Default::default()
        };
        let history = History {
            events: vec![HistoryEvent {
                event_id: 1,
                task_id: id.len() as i64,
                ..Default::default()
            }],
        };
        (entry, history)
    }

    fn archive() -> (tempfile::TempDir, Archive) {
        let dir = tempfile::tempdir().unwrap();
        let archive = Archive::open(&format!("file://{}", dir.path().display())).unwrap();
        (dir, archive)
    }

    /// What the export of `namespace` holds of workflows closed in `[since, until)`, unbudgeted.
    async fn listing_of(archive: &Archive, namespace: &str, since: &str, until: &str) -> Listing {
        list(archive, namespace, at(since), at(until), u64::MAX)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn workflows_are_written_by_the_hour_they_closed_in_cloud_layout() {
        let (_dir, archive) = archive();
        let workflows = vec![
            workflow("a", "2026-12-04T10:59:59Z"),
            workflow("b", "2026-12-04T11:00:01Z"),
        ];
        let written = write(&archive, "payments", "run-1", workflows.clone())
            .await
            .unwrap();
        assert_eq!(written.objects, 2);
        let mut keys = archive.list(PREFIX).await.unwrap();
        keys.sort();
        assert_eq!(
            keys,
            [
                "temporal-workflow-history/export/payments/2026/12/04/10/00/run-1",
                "temporal-workflow-history/export/payments/2026/12/04/11/00/run-1"
            ]
        );
        let bytes = archive.get(&keys[1]).await.unwrap().unwrap();
        let decoded = WorkflowExecutions::decode(bytes).unwrap();
        assert_eq!(decoded.items.len(), 1);
        assert_eq!(decoded.items[0].history.as_ref(), Some(&workflows[1].1));
        // Written again, the same objects.
        write(&archive, "payments", "run-1", workflows)
            .await
            .unwrap();
        assert_eq!(archive.list(PREFIX).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_listed_workflow_reads_back_and_duplicates_are_listed_once() {
        let (_dir, archive) = archive();
        write(
            &archive,
            "payments",
            "run-1",
            vec![
                workflow("a", "2026-12-04T10:10:00Z"),
                workflow("bb", "2026-12-04T10:20:00Z"),
            ],
        )
        .await
        .unwrap();
        // Exported again by a retried run under another id.
        write(
            &archive,
            "payments",
            "run-2",
            vec![workflow("bb", "2026-12-04T10:20:00Z")],
        )
        .await
        .unwrap();
        let listing = listing_of(
            &archive,
            "payments",
            "2026-12-04T00:00:00Z",
            "2026-12-05T00:00:00Z",
        )
        .await;
        let ids: Vec<&str> = listing
            .workflows
            .iter()
            .map(|w| w.workflow_id.as_str())
            .collect();
        assert_eq!(ids, ["bb", "a"], "newest close first, once each");
        let history = read(&archive, "payments", &listing.workflows[1])
            .await
            .unwrap();
        assert_eq!(history, workflow("a", "").1);
        // Another namespace's listing is empty; the range is honoured.
        let other = listing_of(
            &archive,
            "orders",
            "2026-12-04T00:00:00Z",
            "2026-12-05T00:00:00Z",
        )
        .await;
        assert!(other.workflows.is_empty());
        let later = listing_of(
            &archive,
            "payments",
            "2026-12-04T10:15:00Z",
            "2026-12-05T00:00:00Z",
        )
        .await;
        assert_eq!(later.workflows.len(), 1);
    }

    /// A history as Temporal Cloud's export holds it: started, then terminated.
    fn cloud_history(id: &str, closed: &str) -> History {
        use temporalio_common::protos::temporal::api::enums::v1::EventType;
        use temporalio_common::protos::temporal::api::history::v1::WorkflowExecutionStartedEventAttributes;
        use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
        let time = |t: &str| Some(prost_wkt_types::Timestamp::from(at(t)));
        History {
            events: vec![
                HistoryEvent {
                    event_id: 1,
                    event_time: time("2026-12-04T09:00:00Z"),
                    event_type: EventType::WorkflowExecutionStarted as i32,
                    attributes: Some(Attributes::WorkflowExecutionStartedEventAttributes(
                        WorkflowExecutionStartedEventAttributes {
                            workflow_id: id.into(),
                            original_execution_run_id: format!("run-{id}"),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
                HistoryEvent {
                    event_id: 2,
                    event_time: time(closed),
                    event_type: EventType::WorkflowExecutionTerminated as i32,
                    ..Default::default()
                },
            ],
        }
    }

    #[tokio::test]
    async fn an_export_without_indexes_is_listed_from_its_histories() {
        let (_dir, archive) = archive();
        // Written by Temporal Cloud, in the hour after the workflows closed.
        let executions = WorkflowExecutions {
            items: vec![
                WorkflowExecution {
                    history: Some(cloud_history("a", "2026-12-04T10:50:00Z")),
                },
                WorkflowExecution {
                    history: Some(cloud_history("b", "2026-12-04T10:55:00Z")),
                },
            ],
        };
        let key = format!("{PREFIX}/payments.acct/2026/12/04/11/05/cloud-export-1");
        archive
            .put(&key, executions.encode_to_vec().into())
            .await
            .unwrap();
        let listing = listing_of(
            &archive,
            "payments.acct",
            "2026-12-04T10:00:00Z",
            "2026-12-04T11:00:00Z",
        )
        .await;
        let found: Vec<(&str, &str, u32)> = listing
            .workflows
            .iter()
            .map(|w| (w.workflow_id.as_str(), w.status.as_str(), w.item))
            .collect();
        assert_eq!(found, [("b", "Terminated", 1), ("a", "Terminated", 0)]);
        assert_eq!(listing.skipped, 0);
        let history = read(&archive, "payments.acct", &listing.workflows[0])
            .await
            .unwrap();
        assert_eq!(history, cloud_history("b", "2026-12-04T10:55:00Z"));
    }

    #[tokio::test]
    async fn an_object_that_is_not_an_export_is_skipped_and_the_rest_listed() {
        let (_dir, archive) = archive();
        let good = WorkflowExecutions {
            items: vec![WorkflowExecution {
                history: Some(cloud_history("a", "2026-12-04T10:50:00Z")),
            }],
        };
        let hour = format!("{PREFIX}/payments.acct/2026/12/04/11/05");
        archive
            .put(&format!("{hour}/good"), good.encode_to_vec().into())
            .await
            .unwrap();
        // Someone with write access to the bucket left this.
        archive
            .put(
                &format!("{hour}/junk"),
                Bytes::from_static(&[0x0a, 0xff, 0xff, 0x01]),
            )
            .await
            .unwrap();
        let listing = listing_of(
            &archive,
            "payments.acct",
            "2026-12-04T10:00:00Z",
            "2026-12-04T11:00:00Z",
        )
        .await;
        assert_eq!(listing.workflows.len(), 1);
        assert_eq!(listing.skipped, 1);
    }

    #[tokio::test]
    async fn the_last_deletion_of_a_name_is_what_counts() {
        let (_dir, archive) = archive();
        assert_eq!(deleted_at(&archive, "payments").await.unwrap(), None);
        mark_deleted(&archive, "payments", at("2026-12-01T00:00:00Z"))
            .await
            .unwrap();
        mark_deleted(&archive, "payments", at("2026-12-03T00:00:00Z"))
            .await
            .unwrap();
        mark_deleted(&archive, "pay", at("2026-12-05T00:00:00Z"))
            .await
            .unwrap();
        assert_eq!(
            deleted_at(&archive, "payments").await.unwrap(),
            Some(at("2026-12-03T00:00:00Z"))
        );
    }

    /// `bytes` as length-delimited field `tag`.
    fn field(tag: u32, bytes: &[u8]) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint};
        let mut out = Vec::new();
        encode_key(tag, WireType::LengthDelimited, &mut out);
        encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn a_history_of_more_events_than_temporal_keeps_is_refused_before_it_is_decoded() {
        // Two bytes an event: a few hundred kilobytes that would decode to tens of megabytes.
        let history = field(1, &[]).repeat(MAX_EVENTS + 1);
        let object = field(1, &field(1, &history));
        assert!(item(&object, 0).unwrap_err().contains("more than"));
        assert!(
            listed_items(&object, "key")
                .unwrap_err()
                .contains("more than")
        );
        let fine = field(1, &field(1, &field(1, &[]).repeat(3)));
        assert_eq!(item(&fine, 0).unwrap().events.len(), 3);
        assert!(item(&fine, 1).unwrap_err().contains("no item 1"));
    }

    #[tokio::test]
    async fn an_index_naming_another_namespaces_object_is_refused() {
        let (_dir, archive) = archive();
        write(
            &archive,
            "orders",
            "run-1",
            vec![workflow("a", "2026-12-04T10:10:00Z")],
        )
        .await
        .unwrap();
        let mut entry = workflow("a", "2026-12-04T10:10:00Z").0;
        entry.key = "temporal-workflow-history/export/orders/2026/12/04/10/00/run-1".into();
        let refused = read(&archive, "payments", &entry).await.unwrap_err();
        assert!(refused.to_string().contains("outside"), "{refused}");
        assert!(
            list(&archive, "..", SystemTime::UNIX_EPOCH, SystemTime::now(), 1)
                .await
                .is_err()
        );
    }
}
