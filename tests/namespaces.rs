//! Namespace resources end to end: `plinth apply/get/describe/delete` through `plinth proxy`
//! and `plinth worker` processes, against a real Temporal dev server; Temporal itself checked
//! with the `temporal` CLI.

use std::time::Duration;

use std::process::Command;

use plinth_test_harness::cli::{namespace_yaml, ok, stderr, stdout, temporal, text, wait_for};
use plinth_test_harness::{
    ADMIN, DevServer, OUTSIDER, PAYMENTS_MEMBER, PAYMENTS_TEAM, PlinthStack,
};

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

/// The seed's resource, with a resource name and Temporal namespace of the test's own.
fn resource(name: &str, temporal_name: &str, retention: u32, extra_spec: &str) -> String {
    namespace_yaml(name, temporal_name, PAYMENTS_TEAM, retention, extra_spec)
}

/// `temporal workflow start` of a `ProvisionNamespace` workflow in the control plane,
/// around Plinth, with `more` arguments.
fn start_provisioning(
    stack: &PlinthStack,
    workflow_id: &str,
    task_queue: &str,
    more: &[&str],
) -> std::process::Output {
    let args = [
        "workflow",
        "start",
        "--type",
        "ProvisionNamespace",
        "--workflow-id",
        workflow_id,
        "--task-queue",
        task_queue,
        "-n",
        &stack.control_namespace,
    ];
    temporal(&[&args[..], more].concat(), &stack.temporal_address)
}

fn stack(resync: &str) -> PlinthStack {
    PlinthStack::start(DevServer::shared(), PLINTH.as_ref(), resync).expect("start the stack")
}

fn get_json(stack: &PlinthStack, name: &str) -> Option<serde_json::Value> {
    let output = stack.plinth_as(ADMIN, &["get", "namespace", name, "-o", "json"]);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("JSON resource"))
}

/// What Temporal itself says about a namespace (`temporal operator namespace describe`).
fn temporal_namespace(stack: &PlinthStack, name: &str) -> Option<serde_json::Value> {
    let output = temporal(
        &[
            "operator",
            "namespace",
            "describe",
            "-n",
            name,
            "-o",
            "json",
        ],
        &stack.temporal_address,
    );
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("JSON namespace"))
}

/// An apply refused because Namespace resource `holder` holds its Temporal namespace.
fn refused_as_held_by(refused: &std::process::Output, holder: &str) {
    assert!(!refused.status.success());
    assert!(
        stderr(refused).contains(&format!("belongs to namespace/{holder}")),
        "{}",
        text(refused)
    );
}

fn retention_of(namespace: &serde_json::Value) -> String {
    namespace["config"]["workflowExecutionRetentionTtl"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn events(resource: &serde_json::Value) -> Vec<String> {
    resource["status"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn seed_example_provisions_and_reapplying_changes_nothing() {
    let stack = stack("10m");
    let yaml = resource(
        "fancy",
        "fancy-test",
        30,
        "  searchAttributes: {CustomerId: Keyword}\n",
    );

    let applied = ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    let out = stdout(&applied);
    assert!(out.contains("namespace/fancy created"), "{out}");
    assert!(out.contains("namespace/fancy Ready"), "{out}");

    let temporal = temporal_namespace(&stack, "fancy-test").expect("namespace exists in Temporal");
    assert_eq!(retention_of(&temporal), "2592000s", "{temporal}");
    assert_eq!(temporal["namespaceInfo"]["ownerEmail"], PAYMENTS_TEAM);

    let list = stdout(&ok(stack.plinth_as(OUTSIDER, &["get", "namespaces"])));
    let row = list
        .lines()
        .find(|l| l.starts_with("fancy "))
        .expect("listed");
    assert!(
        row.contains("fancy-test") && row.contains("Ready") && row.contains("30d"),
        "{list}"
    );

    let before = get_json(&stack, "fancy").unwrap();
    let dry = ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--dry-run"]));
    assert!(
        stdout(&dry).contains("namespace/fancy unchanged (dry run)"),
        "{}",
        text(&dry)
    );
    let again = ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &[]));
    assert!(
        stdout(&again).contains("namespace/fancy unchanged"),
        "{}",
        text(&again)
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = get_json(&stack, "fancy").unwrap();
    assert_eq!(after["metadata"]["generation"], 1);
    assert_eq!(
        events(&after),
        events(&before),
        "no reconcile, no backend write"
    );

    let described = stdout(&ok(
        stack.plinth_as(ADMIN, &["describe", "namespace", "fancy"])
    ));
    assert!(
        described.contains("Phase:               Ready"),
        "{described}"
    );
    assert!(
        described.contains("Search attribute:   CustomerId (Keyword)"),
        "{described}"
    );
}

#[test]
fn changes_reach_temporal_and_the_temporal_name_is_immutable() {
    let stack = stack("10m");
    ok(stack.apply_as(
        PAYMENTS_MEMBER,
        &resource("changing", "changing-ns", 30, ""),
        &["--wait"],
    ));

    let changed = resource(
        "changing",
        "changing-ns",
        60,
        "  description: now with more days\n",
    );
    let out = stdout(&ok(stack.apply_as(PAYMENTS_MEMBER, &changed, &["--wait"])));
    assert!(out.contains("namespace/changing configured"), "{out}");
    let temporal = temporal_namespace(&stack, "changing-ns").unwrap();
    assert_eq!(retention_of(&temporal), "5184000s");
    assert_eq!(
        temporal["namespaceInfo"]["description"],
        "now with more days"
    );
    let resource_now = get_json(&stack, "changing").unwrap();
    assert_eq!(resource_now["metadata"]["generation"], 2);
    assert_eq!(resource_now["status"]["observedGeneration"], 2);

    let renamed = resource(
        "changing",
        "another-name",
        60,
        "  description: now with more days\n",
    );
    let refused = stack.apply_as(PAYMENTS_MEMBER, &renamed, &[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("spec.name: immutable"),
        "{}",
        text(&refused)
    );
    assert!(
        temporal_namespace(&stack, "another-name").is_none(),
        "nothing created"
    );
    assert_eq!(
        get_json(&stack, "changing").unwrap()["metadata"]["generation"],
        2
    );
}

#[test]
fn drift_made_behind_plinths_back_is_repaired() {
    let stack = stack("2s");
    ok(stack.apply_as(
        PAYMENTS_MEMBER,
        &resource("drifting", "drifting-ns", 30, ""),
        &["--wait"],
    ));

    let updated = temporal(
        &[
            "operator",
            "namespace",
            "update",
            "-n",
            "drifting-ns",
            "--retention",
            "10d",
        ],
        &stack.temporal_address,
    );
    assert!(updated.status.success(), "{}", text(&updated));

    wait_for("the drift repair", || {
        get_json(&stack, "drifting").unwrap()["status"]["driftRepairs"] == 1
    });
    let temporal = temporal_namespace(&stack, "drifting-ns").unwrap();
    assert_eq!(retention_of(&temporal), "2592000s", "retention restored");
    let repaired = get_json(&stack, "drifting").unwrap();
    let message = repaired["status"]["events"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(repaired["status"]["events"][0]["reason"], "DriftRepaired");
    assert!(message.contains("retention 10d → 30d"), "{repaired}");
}

#[test]
fn invalid_documents_are_named_and_a_bad_file_applies_nothing() {
    let stack = stack("10m");
    let good = resource("valid-one", "valid-one-ns", 30, "");
    let cases = [
        (resource("Bad Name", "x-ns", 30, ""), "metadata.name"),
        (resource("zero", "zero-ns", 0, ""), "spec.retentionDays"),
        (resource("huge", "huge-ns", 400, ""), "spec.retentionDays"),
        (
            resource("mars", "mars-ns", 30, "").replace("us-east-1", "mars-1"),
            "spec.regions[0]",
        ),
        (
            resource("orphan", "orphan-ns", 30, "").replace(PAYMENTS_TEAM, "ghosts@example.com"),
            "spec.owner",
        ),
        (
            resource("db", "db-ns", 30, "").replace("kind: Namespace", "kind: Database"),
            "kind: unknown kind",
        ),
        (
            "apiVersion: temporal.plinth.dev/v1beta1\nkind: Namespace\nmetadata:\n  name: nospec\n"
                .to_owned(),
            "spec: missing",
        ),
        ("kind: [Namespace\n".to_owned(), "malformed YAML"),
    ];
    for (bad, field) in cases {
        let file = format!("{good}\n---\n{bad}");
        let output = stack.apply_as(PAYMENTS_MEMBER, &file, &[]);
        assert!(!output.status.success(), "accepted: {bad}");
        let err = stderr(&output);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains("-: document 2"), "names the document: {err}");
        assert!(err.contains(field), "names {field}: {err}");
    }
    assert!(
        get_json(&stack, "valid-one").is_none(),
        "the good document was not applied"
    );
    assert!(temporal_namespace(&stack, "valid-one-ns").is_none());
}

/// `temporal workflow show` of resource `name`'s workflow, as JSON.
fn resource_history(stack: &PlinthStack, name: &str) -> std::process::Output {
    temporal(
        &[
            "workflow",
            "show",
            "-w",
            &format!("namespace/{name}"),
            "-n",
            &stack.control_namespace,
            "-o",
            "json",
        ],
        &stack.temporal_address,
    )
}

/// Replaces the worker with one whose backend stalls for `pause` after each registration
/// (and before adding search attributes).
fn restart_worker_pausing_after_register(stack: &mut PlinthStack, pause: &str) {
    stack.kill_worker();
    stack
        .start_worker_with(&[("PLINTH_FAULT_PAUSE_AFTER_REGISTER", pause)])
        .unwrap();
}

#[test]
fn on_a_self_hosted_cluster_an_apply_takes_no_activity_task() {
    let stack = stack("10m");
    let yaml = resource("prompt", "prompt-ns", 7, "");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    let shown = resource_history(&stack, "prompt");
    let history = stdout(&shown);
    // Reconciled and recorded by local activities, in the task that took the apply.
    assert!(
        history.contains("EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED"),
        "{}",
        text(&shown)
    );
    assert!(
        !history.contains("EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"),
        "{history}"
    );
}

#[test]
fn a_reconcile_slower_than_its_try_in_the_task_is_finished_by_an_activity() {
    let mut stack = stack("10m");
    // Registering takes 30 s: past the try in the workflow task, which would hold that
    // task's slot from every other workflow of the worker.
    restart_worker_pausing_after_register(&mut stack, "30s");
    let yaml = resource("slow", "slow-ns", 7, "");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    let ready = get_json(&stack, "slow").unwrap();
    assert_eq!(ready["status"]["phase"], "Ready", "{ready}");
    let created = events(&ready).iter().filter(|e| *e == "Created").count();
    assert_eq!(created, 1, "registered once: {ready}");
    let shown = resource_history(&stack, "slow");
    let history: serde_json::Value = serde_json::from_str(&stdout(&shown)).expect("history");
    let scheduled: Vec<&str> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|event| {
            event["activityTaskScheduledEventAttributes"]["activityType"]["name"].as_str()
        })
        .collect();
    assert!(scheduled.contains(&"ReconcileNamespace"), "{history}");
}

#[test]
fn worker_killed_mid_provisioning_finishes_after_restart() {
    let mut stack = stack("10m");
    // A worker that stalls right after registering: the search attribute is not added yet.
    restart_worker_pausing_after_register(&mut stack, "10m");
    let yaml = resource(
        "crashy",
        "crashy-ns",
        21,
        "  searchAttributes: {OrderId: Keyword}\n",
    );
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &[]));
    wait_for("the registration", || {
        temporal_namespace(&stack, "crashy-ns").is_some()
    });
    assert_eq!(
        get_json(&stack, "crashy").unwrap()["status"]["phase"],
        "Provisioning"
    );

    stack.kill_worker();
    stack.start_worker().unwrap();

    wait_for("Ready after the restart", || {
        get_json(&stack, "crashy").unwrap()["status"]["phase"] == "Ready"
    });
    let described = temporal_namespace(&stack, "crashy-ns").unwrap();
    assert_eq!(retention_of(&described), "1814400s");
    let ready = get_json(&stack, "crashy").unwrap();
    let created = events(&ready).iter().filter(|e| *e == "Created").count();
    assert_eq!(created, 1, "registered once: {ready}");

    let attributes = temporal(
        &[
            "operator",
            "search-attribute",
            "list",
            "-n",
            "crashy-ns",
            "-o",
            "json",
        ],
        &stack.temporal_address,
    );
    assert!(
        String::from_utf8_lossy(&attributes.stdout).contains("OrderId"),
        "{}",
        text(&attributes)
    );
}

#[test]
fn only_owners_change_only_admins_delete_and_strangers_cannot_connect() {
    let stack = stack("10m");
    let yaml = resource("guarded", "guarded-ns", 30, "  allowDeletion: true\n");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));

    let takeover = stack.apply_as(
        OUTSIDER,
        &yaml.replace("retentionDays: 30", "retentionDays: 1"),
        &[],
    );
    assert!(!takeover.status.success());
    assert!(
        stderr(&takeover).contains("user:mallory@example.com may not apply"),
        "{}",
        text(&takeover)
    );
    assert_eq!(
        get_json(&stack, "guarded").unwrap()["spec"]["retentionDays"],
        30
    );

    let member_delete = stack.plinth_as(PAYMENTS_MEMBER, &["delete", "namespace", "guarded"]);
    assert!(!member_delete.status.success());
    assert!(
        stderr(&member_delete).contains("may not delete"),
        "{}",
        text(&member_delete)
    );
    assert!(temporal_namespace(&stack, "guarded-ns").is_some());

    let stranger = tempfile::tempdir().unwrap();
    let foreign = Command::new(PLINTH)
        .arg("--home")
        .arg(stranger.path())
        .args(["pki", "init"])
        .output()
        .unwrap();
    ok(foreign);
    let issued = Command::new(PLINTH)
        .arg("--home")
        .arg(stranger.path())
        .args(["pki", "issue", "--user", ADMIN, "--out"])
        .arg(stranger.path().join("me"))
        .output()
        .unwrap();
    ok(issued);
    let (_, _, real_ca) = stack.credentials(ADMIN);
    let untrusted = Command::new(PLINTH)
        .arg("--home")
        .arg(stack.home())
        .env("PLINTH_CLIENT_CERT", stranger.path().join("me/cert.pem"))
        .env("PLINTH_CLIENT_KEY", stranger.path().join("me/key.pem"))
        .env("PLINTH_CLIENT_CA", real_ca)
        .args(["get", "namespaces"])
        .output()
        .unwrap();
    assert!(!untrusted.status.success(), "{}", text(&untrusted));

    let deleted = ok(stack.plinth_as(ADMIN, &["delete", "namespace", "guarded", "--wait"]));
    assert!(
        stdout(&deleted).contains("namespace/guarded Deleted"),
        "{}",
        text(&deleted)
    );
    assert!(get_json(&stack, "guarded").is_none());
    wait_for("the Temporal namespace to go", || {
        temporal_namespace(&stack, "guarded-ns").is_none()
    });
}

/// Frontends cache namespaces by name: until their next refresh after a deletion, a
/// namespace registered under the same name is served the old one's workflows. `--wait`
/// outlasts that, on a server refreshing slowly enough to see it.
#[test]
fn a_deleted_namespaces_workflows_are_not_served_to_whoever_takes_its_name() {
    let server = DevServer::start_with(&[r#"system.namespaceCacheRefreshInterval="10s""#]).unwrap();
    let stack = PlinthStack::start_configured(
        &server,
        PLINTH.as_ref(),
        "10m",
        "5m",
        "",
        "[backend]\nnamespace_cache_refresh = \"10s\"\n",
    )
    .expect("start the stack");
    let yaml = resource("reborn", "reborn-ns", 30, "  allowDeletion: true\n");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));
    let temporal_in = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-n", "reborn-ns"]);
        temporal(&all, &stack.temporal_address)
    };
    ok(temporal_in(&[
        "workflow",
        "start",
        "--type",
        "Old",
        "--task-queue",
        "nobody",
        "-w",
        "before",
    ]));
    ok(stack.plinth_as(ADMIN, &["delete", "namespace", "reborn", "--wait"]));
    ok(temporal_in(&["operator", "namespace", "create"]));
    let described = temporal_in(&["workflow", "describe", "-w", "before"]);
    assert!(!described.status.success(), "{}", text(&described));
    assert!(
        stderr(&described).contains("not found"),
        "{}",
        text(&described)
    );
}

#[test]
fn deletion_protection_is_on_by_default() {
    let stack = stack("10m");
    ok(stack.apply_as(
        PAYMENTS_MEMBER,
        &resource("kept", "kept-ns", 30, ""),
        &["--wait"],
    ));
    let refused = stack.plinth_as(ADMIN, &["delete", "namespace", "kept"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("deletion protection"),
        "{}",
        text(&refused)
    );
    assert!(temporal_namespace(&stack, "kept-ns").is_some());
}

#[test]
fn a_resource_not_yet_published_holds_its_temporal_namespace() {
    let stack = stack("10m");
    // A resource whose first workflow task has not run: started with its search attributes,
    // on a queue no worker polls, so it never publishes its spec.
    let started = start_provisioning(
        &stack,
        "namespace/early",
        "nobody",
        &[
            "--search-attribute",
            "PlinthKind=\"Namespace\"",
            "--search-attribute",
            "PlinthName=\"early-ns\"",
        ],
    );
    assert!(started.status.success(), "{}", text(&started));
    wait_for("visibility to list it", || {
        let counted = temporal(
            &[
                "workflow",
                "count",
                "-n",
                &stack.control_namespace,
                "--query",
                "PlinthName = 'early-ns'",
            ],
            &stack.temporal_address,
        );
        stdout(&counted).contains("Total: 1")
    });
    let refused = stack.apply_as(PAYMENTS_MEMBER, &resource("late", "early-ns", 7, ""), &[]);
    refused_as_held_by(&refused, "early");
    assert!(get_json(&stack, "late").is_none(), "nothing created");
    assert!(temporal_namespace(&stack, "early-ns").is_none());
}

#[test]
fn temporal_cli_can_start_provisioning_directly() {
    let stack = stack("10m");
    let input = serde_json::json!({
        "apiVersion": "temporal.plinth.dev/v1beta1",
        "kind": "Namespace",
        "metadata": {"name": "from-cli", "namespace": "payments"},
        "spec": {"name": "from-cli-ns", "owner": PAYMENTS_TEAM, "regions": ["us-east-1"], "retentionDays": 14}
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ns.json");
    std::fs::write(&file, input.to_string()).unwrap();
    let started = start_provisioning(
        &stack,
        "namespace/from-cli",
        "plinth",
        &["--input-file", file.to_str().unwrap()],
    );
    assert!(started.status.success(), "{}", text(&started));

    wait_for("Ready", || {
        get_json(&stack, "from-cli").is_some_and(|r| r["status"]["phase"] == "Ready")
    });
    let temporal = temporal_namespace(&stack, "from-cli-ns").unwrap();
    assert_eq!(retention_of(&temporal), "1209600s");
}

#[test]
fn a_second_resource_for_the_same_temporal_namespace_is_refused() {
    let stack = stack("10m");
    let first = resource("owned", "owned-ns", 7, "");
    ok(stack.apply_as(PAYMENTS_MEMBER, &first, &["--wait"]));
    let second = resource("takeover", "owned-ns", 7, "  allowDeletion: true\n");
    let refused = stack.apply_as(ADMIN, &second, &[]);
    refused_as_held_by(&refused, "owned");
    assert!(get_json(&stack, "takeover").is_none(), "nothing created");
}
