//! History export: real `plinth` processes in front of a Temporal dev server write closed
//! workflows' histories to a real S3-compatible server (`s3s-fs`) in Temporal Cloud's export
//! format, which the Python SDK's own protos decode; `plinth history` finds one there after
//! Temporal has let it go, decrypted for whoever may read the namespace.

use std::process::Output;
use std::sync::{Mutex, OnceLock};

use plinth_test_harness::cli::{ok, stderr, stdout, temporal, temporal_as, text, wait_for};
use plinth_test_harness::{ADMIN, OUTSIDER, PAYMENTS_MEMBER, PlinthStack, S3Server, sealed};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");
const BUCKET: &str = "plinth-history";

struct Fixture {
    s3: S3Server,
    /// Locked for each use: one test restarts its worker.
    stack: Mutex<PlinthStack>,
    temporal_address: String,
    /// A namespace with `spec.export.enabled`, owned by the payments team.
    ns: String,
    /// The payments member's temporal.toml profile for it.
    profile: std::path::PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let s3 = S3Server::start(BUCKET).unwrap();
        let export = format!(
            "[export]\ninterval = \"2s\"\nvisibility_lag = \"1s\"\n\
             destination = \"s3://{BUCKET}/exports\"\n"
        );
        let mut stack = PlinthStack::start_shared(PLINTH.as_ref(), &export, &s3.env()).unwrap();
        stack.start_codec().unwrap();
        let ns = format!("exported-{}", std::process::id());
        stack
            .provision_for_team_with("exported", &ns, "  export:\n    enabled: true\n")
            .unwrap();
        let profile = stack.profile(PAYMENTS_MEMBER, &ns).unwrap();
        Fixture {
            s3,
            temporal_address: stack.temporal_address.clone(),
            stack: Mutex::new(stack),
            ns,
            profile,
        }
    })
}

/// `plinth args` as `user`.
fn plinth_as(f: &Fixture, user: &str, args: &[&str]) -> Output {
    let stack = f
        .stack
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    stack.plinth_as(user, args)
}

/// Starts workflow `id` through the proxy with input `input`, and terminates it: closed.
fn closed_workflow(f: &Fixture, id: &str, input: &str) {
    closed_workflow_as(&f.profile, id, input);
}

/// [`closed_workflow`] in the namespace of `profile`.
fn closed_workflow_as(profile: &std::path::Path, id: &str, input: &str) {
    sealed::start(profile, id, input);
    ok(temporal_as(
        profile,
        &["workflow", "terminate", "-w", id, "--reason", "done"],
    ));
}

/// The workflow ids `user` sees in the export of `namespace` from the last hour.
fn listed_ids(f: &Fixture, user: &str, namespace: &str) -> Vec<String> {
    let listed = ok(plinth_as(
        f,
        user,
        &["history", "list", namespace, "--since", "1h", "-o", "json"],
    ));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout(&listed)).unwrap();
    listed
        .iter()
        .map(|w| w["workflowId"].as_str().unwrap().to_owned())
        .collect()
}

/// Every workflow in the bucket's export of the namespace, decoded by the Python SDK's
/// `temporalio.api.export.v1` protos: key, workflow id, and its first input payload.
fn exported(f: &Fixture) -> Vec<serde_json::Value> {
    let prefix = format!("exports/temporal-workflow-history/export/{}/", f.ns);
    let printed = f
        .s3
        .boto3(&format!(
            "from temporalio.api.export.v1 import WorkflowExecutions\n\
             keys = []\n\
             for page in s3.get_paginator('list_objects_v2').paginate(Bucket={BUCKET:?}, Prefix={prefix:?}):\n\
             \x20   keys += [o['Key'] for o in page.get('Contents', [])]\n\
             for key in sorted(keys):\n\
             \x20   executions = WorkflowExecutions()\n\
             \x20   executions.ParseFromString(s3.get_object(Bucket={BUCKET:?}, Key=key)['Body'].read())\n\
             \x20   for item in executions.items:\n\
             \x20       started = item.history.events[0].workflow_execution_started_event_attributes\n\
             \x20       payload = started.input.payloads[0]\n\
             \x20       print(json.dumps({{'key': key, 'workflow_id': started.workflow_id,\n\
             \x20           'events': len(item.history.events),\n\
             \x20           'encoding': payload.metadata['encoding'].decode(),\n\
             \x20           'data': base64.b64encode(payload.data).decode()}}))\n"
        ))
        .unwrap();
    printed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn exported_workflow(f: &Fixture, id: &str) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    wait_for(&format!("workflow {id} in the export"), || {
        found = exported(f)
            .into_iter()
            .filter(|w| w["workflow_id"] == id)
            .collect();
        !found.is_empty()
    });
    found
}

/// The first input of a history printed as proto3 JSON, decoded from base64.
fn first_input(history: &str) -> String {
    use base64::Engine;
    let history: serde_json::Value = serde_json::from_str(history).unwrap();
    let data = history["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"]
        [0]["data"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_default(),
    )
    .unwrap()
}

#[test]
fn a_closed_workflow_is_exported_in_clouds_format_still_encrypted() {
    let f = fixture();
    closed_workflow(f, "export-format", "card 4111-1111");
    let found = exported_workflow(f, "export-format");
    let workflow = &found[0];
    // exports/temporal-workflow-history/export/<namespace>/YYYY/MM/DD/HH/MM/<id>
    let key = workflow["key"].as_str().unwrap();
    let parts: Vec<&str> = key.split('/').collect();
    assert_eq!(parts.len(), 10, "{key}");
    assert!(
        parts[4..9].iter().all(|p| p.parse::<u32>().is_ok()),
        "{key}"
    );
    // Started, terminated: the whole history.
    assert!(workflow["events"].as_u64().unwrap() >= 2, "{workflow}");
    // As Temporal stored it: sealed by the proxy, the plaintext nowhere.
    assert_eq!(workflow["encoding"], "binary/encrypted");
    assert!(!workflow["data"].as_str().unwrap().contains("4111-1111"));
}

#[test]
fn history_get_reads_a_retained_workflow_from_temporal_decrypted() {
    let f = fixture();
    closed_workflow(f, "export-retained", "kept in temporal");
    let shown = ok(plinth_as(
        f,
        PAYMENTS_MEMBER,
        &["history", "get", &f.ns, "export-retained"],
    ));
    assert!(stderr(&shown).contains("from Temporal"), "{}", text(&shown));
    assert_eq!(first_input(&stdout(&shown)), "\"kept in temporal\"");
}

#[test]
fn history_get_finds_a_deleted_workflow_in_the_export_and_decrypts_it() {
    let f = fixture();
    closed_workflow(f, "export-deleted", "gone from temporal");
    exported_workflow(f, "export-deleted");
    let listed = ok(plinth_as(
        f,
        PAYMENTS_MEMBER,
        &["history", "list", &f.ns, "--since", "1h", "-o", "json"],
    ));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout(&listed)).unwrap();
    let entry = listed
        .iter()
        .find(|w| w["workflowId"] == "export-deleted")
        .unwrap_or_else(|| panic!("{listed:#?}"));
    assert_eq!(entry["status"], "Terminated");
    assert_eq!(entry["workflowType"], "Kept");
    // Temporal lets it go (as retention would): the export still has it.
    ok(temporal(
        &[
            "workflow",
            "delete",
            "--yes",
            "-w",
            "export-deleted",
            "--namespace",
            &f.ns,
        ],
        &f.temporal_address,
    ));
    wait_for("the workflow gone from Temporal", || {
        !temporal(
            &[
                "workflow",
                "describe",
                "-w",
                "export-deleted",
                "--namespace",
                &f.ns,
            ],
            &f.temporal_address,
        )
        .status
        .success()
    });
    let shown = ok(plinth_as(
        f,
        PAYMENTS_MEMBER,
        &["history", "get", &f.ns, "export-deleted"],
    ));
    assert!(
        stderr(&shown).contains("from the history export"),
        "{}",
        text(&shown)
    );
    let history = stdout(&shown);
    assert_eq!(first_input(&history), "\"gone from temporal\"");
    let parsed: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(
        parsed["events"][0]["eventType"],
        "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED"
    );
}

#[test]
fn someone_who_may_not_read_the_namespace_gets_nothing_of_its_export() {
    let f = fixture();
    closed_workflow(f, "export-private", "not for outsiders");
    exported_workflow(f, "export-private");
    for args in [
        vec!["history", "list", &f.ns],
        vec!["history", "get", &f.ns, "export-private"],
    ] {
        let refused = plinth_as(f, OUTSIDER, &args);
        assert!(!refused.status.success(), "{}", text(&refused));
        assert!(
            text(&refused).contains("has no read access"),
            "{}",
            text(&refused)
        );
        assert!(!text(&refused).contains("not for outsiders"));
    }
}

#[test]
fn workflows_closed_while_the_worker_is_down_are_exported_when_it_returns() {
    let f = fixture();
    let lock = || {
        f.stack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    lock().kill_worker();
    closed_workflow(f, "export-while-down", "closed while down");
    lock().start_worker().unwrap();
    let found = exported_workflow(f, "export-while-down");
    assert_eq!(found[0]["encoding"], "binary/encrypted");
}

#[test]
fn whoever_recreates_a_deleted_namespaces_name_reads_nothing_of_its_export() {
    let f = fixture();
    let ns = format!("reused-{}", std::process::id());
    let spec = "  allowDeletion: true\n  export:\n    enabled: true\n";
    let provision = || {
        let stack = f
            .stack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stack.provision_for_team_with("reused", &ns, spec).unwrap();
        stack.profile(PAYMENTS_MEMBER, &ns).unwrap()
    };
    let profile = provision();
    closed_workflow_as(&profile, "before-deletion", "the old namespace's");
    wait_for("the old namespace's workflow in its export", || {
        listed_ids(f, PAYMENTS_MEMBER, &ns).contains(&"before-deletion".to_owned())
    });
    ok(plinth_as(
        f,
        ADMIN,
        &["delete", "namespace", "reused", "--wait"],
    ));
    // The name taken again: its readers see nothing the old namespace left.
    provision();
    assert!(listed_ids(f, PAYMENTS_MEMBER, &ns).is_empty());
    let refused = plinth_as(
        f,
        PAYMENTS_MEMBER,
        &["history", "get", &ns, "before-deletion"],
    );
    assert!(!refused.status.success(), "{}", text(&refused));
    // Platform admins still read what the export kept.
    assert!(listed_ids(f, ADMIN, &ns).contains(&"before-deletion".to_owned()));
}
