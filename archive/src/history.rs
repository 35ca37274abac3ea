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
use temporalio_common::protos::temporal::api::history::v1::History;

use crate::{Archive, ArchiveError, hours};

/// Where exported histories start in a destination: Temporal Cloud's layout.
pub const PREFIX: &str = "temporal-workflow-history/export";
/// Where the indexes start.
const INDEX: &str = "plinth/history-index/v1";
/// Index objects one listing considers at most: a bucket filled beyond what Plinth writes
/// in the range cannot make a listing hold every key.
const MAX_KEYS: usize = 200_000;
/// The largest index object read: an export object lists at most a few thousand workflows.
const MAX_INDEX_BYTES: u64 = 4 << 20;
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
    let prefix = format!("{INDEX}/{namespace}");
    let mut hours_found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut listed = 0;
    let mut listing = Listing::default();
    for month in hours::months(&prefix, since, until) {
        let keys = archive.list(&month).await?;
        listed += keys.len();
        if listed > MAX_KEYS {
            listing.exhausted = true;
            break;
        }
        for key in keys {
            let Some((hour, _)) = key.rsplit_once('/') else {
                continue;
            };
            let Some(start) = hours::start(&prefix, hour) else {
                continue;
            };
            if start + hours::HOUR > since && start < until {
                hours_found.entry(hour.to_owned()).or_default().push(key);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    'hours: for keys in hours_found.into_values().rev() {
        for key in keys {
            if budget == 0 {
                listing.exhausted = true;
                break 'hours;
            }
            let Some(bytes) = archive.get_at_most(&key, MAX_INDEX_BYTES).await? else {
                continue;
            };
            budget = budget.saturating_sub(bytes.len() as u64);
            for (entry, closed) in decode_index(archive, &key, &bytes)? {
                if closed >= since
                    && closed < until
                    && seen.insert((entry.workflow_id.clone(), entry.run_id.clone()))
                {
                    listing.workflows.push(entry);
                }
            }
        }
    }
    listing
        .workflows
        .sort_by(|a, b| b.close_time.cmp(&a.close_time));
    Ok(listing)
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
    let executions = decode(archive, &entry.key, &bytes)?;
    let history = executions
        .items
        .into_iter()
        .nth(entry.item as usize)
        .and_then(|item| item.history)
        .ok_or_else(|| {
            archive.malformed(
                &entry.key,
                format!("holds no item {} the index lists", entry.item),
            )
        })?;
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

/// An export object's contents.
pub fn decode(
    archive: &Archive,
    key: &str,
    bytes: &[u8],
) -> Result<WorkflowExecutions, ArchiveError> {
    WorkflowExecutions::decode(bytes).map_err(|e| archive.malformed(key, e.to_string()))
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
    use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;

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
        let decoded = decode(&archive, &keys[1], &bytes).unwrap();
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
        let listing = list(
            &archive,
            "payments",
            at("2026-12-04T00:00:00Z"),
            at("2026-12-05T00:00:00Z"),
            u64::MAX,
        )
        .await
        .unwrap();
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
        let other = list(
            &archive,
            "orders",
            at("2026-12-04T00:00:00Z"),
            at("2026-12-05T00:00:00Z"),
            u64::MAX,
        )
        .await
        .unwrap();
        assert!(other.workflows.is_empty());
        let later = list(
            &archive,
            "payments",
            at("2026-12-04T10:15:00Z"),
            at("2026-12-05T00:00:00Z"),
            u64::MAX,
        )
        .await
        .unwrap();
        assert_eq!(later.workflows.len(), 1);
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
