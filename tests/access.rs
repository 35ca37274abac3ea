//! Access end to end: seeded policies, rule edits through `plinth policy`, the `users/<ns>`
//! schedule and its runs, and the directory following the company, through real `plinth
//! worker` and `plinth proxy` processes on a real Temporal dev server.

use plinth_test_harness::cli::{namespace_yaml, ok, stderr, stdout, temporal, text, wait_for};
use plinth_test_harness::{
    ADMIN, DIRECTORY, DevServer, OUTSIDER, PAYMENTS_MEMBER, PAYMENTS_TEAM, PlinthStack, SEARCH_TEAM,
};
use serde_json::Value;

const PLINTH: &str = env!("CARGO_BIN_EXE_plinth");

/// Access runs every 4 s, so "the next run" comes quickly even without a trigger.
fn stack() -> PlinthStack {
    PlinthStack::start_with(DevServer::shared(), PLINTH.as_ref(), "10m", "4s")
        .expect("start the stack")
}

fn get_json(stack: &PlinthStack, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend(args);
    all.extend(["-o", "json"]);
    let output = ok(stack.plinth_as(OUTSIDER, &all));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// `identity → access` of the namespace's effective access list, and its last run.
fn access(stack: &PlinthStack, namespace: &str) -> (Vec<(String, String)>, Value) {
    let list = get_json(stack, &["access", namespace]);
    let grants = list["grants"]
        .as_array()
        .map(|grants| {
            grants
                .iter()
                .map(|g| {
                    let field = |k: &str| g[k].as_str().unwrap_or_default().to_owned();
                    (field("identity"), field("access"))
                })
                .collect()
        })
        .unwrap_or_default();
    (grants, list["lastRun"].clone())
}

fn grants(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(i, a)| ((*i).to_owned(), (*a).to_owned()))
        .collect()
}

fn rules(policy: &Value) -> Vec<Value> {
    policy["rules"].as_array().cloned().unwrap_or_default()
}

fn count(run: &Value, field: &str) -> i64 {
    run[field].as_i64().unwrap_or(0)
}

fn schedules(stack: &PlinthStack) -> String {
    let output = temporal(
        &["schedule", "list", "--namespace", &stack.control_namespace],
        &stack.temporal_address,
    );
    stdout(&ok(output))
}

/// Waits for a run that started after `previous` (a workflow id) and returns it.
fn next_run(stack: &PlinthStack, namespace: &str, previous: &Value) -> Value {
    let mut run = Value::Null;
    wait_for("the next access run", || {
        run = access(stack, namespace).1;
        !run.is_null() && run["workflowId"] != previous["workflowId"]
    });
    run
}

#[test]
fn policies_drive_access_and_access_follows_the_directory() {
    let stack = stack();
    let ns = format!("acc-{}", std::process::id());
    let writers = format!("TEMPORAL-ns-{ns}");
    let readers = format!("TEMPORAL-ns-{ns}-readers");
    let yaml = namespace_yaml("acc", &ns, PAYMENTS_TEAM, 7, "  allowDeletion: true\n");
    ok(stack.apply_as(PAYMENTS_MEMBER, &yaml, &["--wait"]));

    // 1. Seeded: owned by the admin group, edited by the owner group, no rules.
    for (name, level) in [(&writers, "write"), (&readers, "read")] {
        let policy = get_json(&stack, &["policy", name]);
        assert_eq!(policy["owner"], "temporal-dev", "{policy}");
        assert_eq!(policy["editors"], serde_json::json!([PAYMENTS_TEAM]));
        assert_eq!(policy["access"], level);
        assert_eq!(policy["namespace"], ns.as_str());
        assert!(rules(&policy).is_empty(), "{policy}");
    }
    // 6. The schedule exists with the namespace.
    assert!(
        schedules(&stack).contains(&format!("users/{ns}")),
        "{}",
        schedules(&stack)
    );

    // 2. An editor's rules: the group (with its nested on-call group) writes, a user reads.
    let added = ok(stack.plinth_as(
        PAYMENTS_MEMBER,
        &["policy", "add-rule", &writers, "--group", PAYMENTS_TEAM],
    ));
    assert!(stdout(&added).contains("added to"), "{}", text(&added));
    ok(stack.plinth_as(
        PAYMENTS_MEMBER,
        &[
            "policy",
            "add-rule",
            &readers,
            "--user",
            "Mallory@Example.com",
        ],
    ));
    let expected = grants(&[
        ("user:alice@example.com", "write"),
        ("user:bob@example.com", "write"),
        ("user:frank@example.com", "write"),
        ("user:mallory@example.com", "read"),
    ]);
    wait_for("access from the new rules", || {
        access(&stack, &ns).0 == expected
    });
    let table = stdout(&ok(stack.plinth_as(OUTSIDER, &["get", "access", &ns])));
    assert!(
        table.contains("user:bob@example.com") && table.contains("last run"),
        "{table}"
    );

    // 1. Re-provisioning (a changed spec) leaves the editors' rules alone.
    let changed = namespace_yaml("acc", &ns, PAYMENTS_TEAM, 8, "  allowDeletion: true\n");
    ok(stack.apply_as(PAYMENTS_MEMBER, &changed, &["--wait"]));
    let resource = get_json(&stack, &["namespace", "acc"]);
    let update = &resource["status"]["events"][0];
    assert_eq!(update["message"], "retention 7d → 8d", "{resource}");
    assert_eq!(rules(&get_json(&stack, &["policy", &writers])).len(), 1);
    assert_eq!(
        rules(&get_json(&stack, &["policy", &readers]))[0]["user"],
        "mallory@example.com"
    );

    // 4. Only editors and admins change rules, and only of their own namespaces.
    let denied = stack.plinth_as(
        OUTSIDER,
        &["policy", "add-rule", &writers, "--user", OUTSIDER],
    );
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("may not add a rule to policy"),
        "{}",
        text(&denied)
    );
    let other = format!("acc-search-{}", std::process::id());
    let search = namespace_yaml("acc-search", &other, SEARCH_TEAM, 7, "");
    ok(stack.apply_as(ADMIN, &search, &["--wait"]));
    let foreign = stack.plinth_as(
        PAYMENTS_MEMBER,
        &[
            "policy",
            "add-rule",
            &format!("TEMPORAL-ns-{other}"),
            "--group",
            PAYMENTS_TEAM,
        ],
    );
    assert!(!foreign.status.success());
    assert!(stderr(&foreign).contains("may not"), "{}", text(&foreign));
    let bad = stack.plinth_as(ADMIN, &["policy", "add-rule", &writers, "--group", "nope"]);
    assert!(stderr(&bad).contains("rule.group"), "{}", text(&bad));

    // 3. Bob leaves the company and Frank leaves the group: both lose access on the next run.
    let before = access(&stack, &ns).1;
    let moved = DIRECTORY
        .replace(
            "  - email: bob@example.com\n",
            "  - email: bob@example.com\n    status: departed\n",
        )
        .replace(", frank@example.com]", "]");
    stack.write_directory(&moved).unwrap();
    let remaining = grants(&[
        ("user:alice@example.com", "write"),
        ("user:mallory@example.com", "read"),
    ]);
    // The change starts a run while scheduled ones keep coming, so the run that revokes can
    // be followed by another before it is read: every run seen after `before` is kept.
    let mut runs: Vec<Value> = Vec::new();
    wait_for("bob and frank to lose access", || {
        let (now, run) = access(&stack, &ns);
        if !run.is_null() && run["workflowId"] != before["workflowId"] && runs.last() != Some(&run)
        {
            runs.push(run);
        }
        now == remaining
    });
    // A run publishes its record after its changes, so the run that revoked may still be
    // finishing: then the next run is it (or, if it was superseded unseen, a quiet one).
    let mut last = runs.last().cloned().unwrap_or(before);
    if !runs.iter().any(|run| count(run, "revoked") > 0) {
        last = next_run(&stack, &ns, &last);
        runs.push(last.clone());
    }
    let revoked: i64 = runs.iter().map(|run| count(run, "revoked")).sum();
    assert!(revoked <= 2, "{runs:?}");
    for run in &runs {
        assert_eq!(count(run, "granted") + count(run, "changed"), 0, "{run}");
    }
    let quiet = next_run(&stack, &ns, &last);
    assert_eq!(count(&quiet, "backendWrites"), 0, "{quiet}");
    assert_eq!(count(&quiet, "unchanged"), 2, "{quiet}");

    // 5. A malformed directory is refused by name and changes nobody's access.
    stack
        .write_directory("users: [this is not: a directory")
        .unwrap();
    let reload = stack.plinth_as(ADMIN, &["directory", "reload"]);
    assert!(!reload.status.success());
    let message = stderr(&reload);
    assert!(
        message.contains("directory.yaml") && message.contains("previous directory stays"),
        "{}",
        text(&reload)
    );
    let refused = stack.plinth_as(PAYMENTS_MEMBER, &["directory", "reload"]);
    assert!(
        stderr(&refused).contains("may not reload"),
        "{}",
        text(&refused)
    );
    let after = next_run(&stack, &ns, &quiet);
    let after = next_run(&stack, &ns, &after);
    assert_eq!(count(&after, "backendWrites"), 0, "{after}");
    assert_eq!(access(&stack, &ns).0, remaining);
    assert!(
        stack.log("worker").contains("previous one stays in force"),
        "the worker reports the bad file"
    );

    // Removing a rule takes effect at once too, under the last good directory.
    ok(stack.plinth_as(
        PAYMENTS_MEMBER,
        &["policy", "remove-rule", &readers, "--user", OUTSIDER],
    ));
    wait_for("mallory's read access to go", || {
        access(&stack, &ns).0 == grants(&[("user:alice@example.com", "write")])
    });
    let absent = stack.plinth_as(
        PAYMENTS_MEMBER,
        &["policy", "remove-rule", &readers, "--user", OUTSIDER],
    );
    assert!(
        stderr(&absent).contains("has no rule user:mallory@example.com"),
        "{}",
        text(&absent)
    );

    // The editors follow the namespace to a new owner group; the rules stay.
    let moved = namespace_yaml("acc", &ns, SEARCH_TEAM, 8, "  allowDeletion: true\n");
    ok(stack.apply_as(ADMIN, &moved, &["--wait"]));
    let policy = get_json(&stack, &["policy", &writers]);
    assert_eq!(
        policy["editors"],
        serde_json::json!([SEARCH_TEAM]),
        "{policy}"
    );
    assert_eq!(rules(&policy).len(), 1, "{policy}");
    let former = stack.plinth_as(
        PAYMENTS_MEMBER,
        &["policy", "add-rule", &writers, "--app", "billing"],
    );
    assert!(stderr(&former).contains("may not"), "{}", text(&former));

    // 6. Deleting the namespace deletes its schedule.
    ok(stack.plinth_as(ADMIN, &["delete", "namespace", "acc", "--wait"]));
    let listed = schedules(&stack);
    assert!(!listed.contains(&format!("users/{ns}")), "{listed}");
    assert!(listed.contains(&format!("users/{other}")), "{listed}");
}
