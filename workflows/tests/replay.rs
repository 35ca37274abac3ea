//! Every workflow type's recorded histories, taken from real runs on a Temporal dev server and
//! kept in `tests/histories/`, replay against today's workflow code: a change that would break
//! workflows already running (a command added, removed or reordered) fails here first.
//!
//! To record them again: run `plinth dev`, exercise each workflow (apply a namespace, add a
//! policy rule, apply and delete a namespace and a metrics target), list [`RECORDED`]'s ids,
//! and run `cargo test -p plinth-workflows --test replay -- --ignored record`
//! (`PLINTH_RECORD_FROM` names the Temporal address when it is not `127.0.0.1:7233`;
//! `PLINTH_RECORD_ONLY` the files to write, comma-separated, when not all: histories of older
//! code are kept, so later code is still held to them). The files
//! are in the SDK's history JSON, which `temporal workflow show -o json` does not write.

use std::collections::BTreeSet;
use std::path::Path;

use plinth_workflows::register_workflows;
use temporalio_client::{
    Client, ClientOptions, ConnectionOptions, UntypedWorkflow, WorkflowFetchHistoryOptions,
    WorkflowHistory,
};
use temporalio_common::protos::temporal::api::history::v1::History;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// Each recorded history's file and the workflow it was taken from, in `plinth-system`.
const RECORDED: [(&str, &str); 24] = [
    ("canary.json", "plinth-dev-canary"),
    (
        "policy-with-added-rule.json",
        "policy/TEMPORAL-ns-fancy-test",
    ),
    ("provision-then-delete.json", "namespace/short-lived"),
    ("provision-running.json", "namespace/my-fancy-namespace"),
    ("scrape-then-delete.json", "metrics/proxy"),
    (
        "access-run.json",
        "users/short-lived-test-2026-12-03T12:45:25Z",
    ),
    // Since the audit trail: each change recorded.
    ("audit-export.json", "audit/local"),
    ("policy-audited.json", "policy/TEMPORAL-ns-fancy-test"),
    ("provision-audited.json", "namespace/my-fancy-namespace"),
    (
        "provision-then-delete-audited.json",
        "namespace/short-lived",
    ),
    ("scrape-then-delete-audited.json", "metrics/cloud"),
    (
        "access-run-audited.json",
        "users/fancy-test-2026-12-04T18:46:21Z",
    ),
    // Since the history export: exported, then finished by the namespace's deletion.
    ("history-export.json", "history-export/exported-ns"),
    (
        "provision-then-delete-exported.json",
        "namespace/exported-ns",
    ),
    // Since access runs record the steps their apply made, and Cloud's audit log is pulled
    // (both from `plinth dev --backend cloud-double`).
    (
        "access-run-applied-steps.json",
        "users/fancy-test-2026-12-04T21:41:00Z",
    ),
    ("audit-export-cloud.json", "audit/local"),
    // Since directory sources and access on request: a reload's mark, a grant that ran its
    // time, and one revoked.
    ("directory-reload.json", "directory-reload"),
    (
        "access-request-expired.json",
        "access-request/ar-eb2b6c0d061bbd5c-0",
    ),
    (
        "access-request-revoked.json",
        "access-request/ar-eb2b6c0d061bbd5c-1",
    ),
    // Since SCIM: a User created, deactivated by PATCH, refused a stale PUT, and deleted.
    (
        "scim-user-deleted.json",
        "scim/Users/df5d004ad032c23dacde49470b52a91d",
    ),
    // Since a seeded policy starts quiet: seeded, then a rule added.
    ("policy-quiet-start.json", "policy/TEMPORAL-ns-fancy-test"),
    // Since access is seeded in the task that learns the namespace was reconciled.
    (
        "provision-seeded-in-task.json",
        "namespace/my-fancy-namespace",
    ),
    // Since a self-hosted namespace is reconciled after an apply, and the apply recorded, in
    // the task that takes it: created, then its description changed.
    (
        "provision-reconciled-in-task.json",
        "namespace/my-fancy-namespace",
    ),
    // Since a backend call in the task gets one short try there, then an activity.
    (
        "provision-once-in-task.json",
        "namespace/my-fancy-namespace",
    ),
];

fn histories_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories")
}

/// The recorded histories: file name, workflow type, and the history.
fn recorded() -> Vec<(String, String, WorkflowHistory)> {
    let dir = histories_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/histories")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("a recorded history");
            let history: History =
                serde_json::from_slice(&bytes).expect("a history in the SDK's JSON");
            let kind = match history
                .events
                .first()
                .and_then(|event| event.attributes.as_ref())
            {
                Some(Attributes::WorkflowExecutionStartedEventAttributes(started)) => {
                    started.workflow_type.as_ref().map(|t| t.name.clone())
                }
                _ => None,
            }
            .expect("the history starts with WorkflowExecutionStarted");
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let history = WorkflowHistory::from(history);
            (name, kind, history)
        })
        .collect()
}

/// Every workflow type the worker registers, through the same list.
fn options() -> WorkflowReplayerOptions {
    register_workflows!(WorkflowReplayerOptions::new())
        .expect("workflows register")
        .build()
}

#[test]
fn every_workflow_type_has_a_recorded_history() {
    let recorded: BTreeSet<String> = recorded().into_iter().map(|(_, kind, _)| kind).collect();
    let registered: BTreeSet<String> = options()
        .workflows()
        .workflow_definitions()
        .map(|definition| definition.workflow_type.clone())
        .collect();
    assert_eq!(recorded, registered);
}

#[tokio::test]
async fn recorded_histories_replay_without_nondeterminism() {
    let replayer = WorkflowReplayer::new(options()).expect("a replayer");
    let (names, histories): (Vec<String>, Vec<WorkflowHistory>) = recorded()
        .into_iter()
        .map(|(name, _, history)| (name, history))
        .unzip();
    let results = replayer
        .replay_workflows(histories)
        .await
        .expect("the replay runs");
    let failures: Vec<String> = names
        .iter()
        .zip(&results)
        .filter_map(|(name, result)| Some(format!("{name}: {}", result.replay_failure.as_ref()?)))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(results.len(), names.len());
}

#[tokio::test]
#[ignore = "records the histories again from a running `plinth dev`"]
async fn record() {
    let address = std::env::var("PLINTH_RECORD_FROM").unwrap_or("127.0.0.1:7233".into());
    let url: temporalio_client::Url = format!("http://{address}")
        .parse()
        .expect("a Temporal address");
    let connection = temporalio_client::Connection::connect(ConnectionOptions::new(url).build())
        .await
        .expect("connect to Temporal");
    let client =
        Client::new(connection, ClientOptions::new("plinth-system").build()).expect("a client");
    let only = std::env::var("PLINTH_RECORD_ONLY").ok();
    for (file, workflow_id) in RECORDED {
        if only
            .as_deref()
            .is_some_and(|only| !only.split(',').any(|name| name == file))
        {
            continue;
        }
        let json = client
            .get_workflow_handle::<UntypedWorkflow>(workflow_id)
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .to_json()
            .await
            .expect("the workflow's history");
        std::fs::write(histories_dir().join(file), json).expect("write the history");
    }
}
