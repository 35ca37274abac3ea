//! Access end to end: seeded policies, rule edits through `plinth policy`, the `users/<ns>`
//! schedule and its runs, and the directory following the company, through real `plinth
//! worker` and `plinth proxy` processes on a real Temporal dev server. The tests share one
//! stack, each changing only namespaces of its own; those that rewrite the directory, which
//! every namespace of a stack reads, start a stack of their own.

use std::process::Output;
use std::sync::OnceLock;
use std::time::SystemTime;

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

/// A stack whose access runs come once a day: a run within a test was asked for.
fn daily_runs_stack() -> PlinthStack {
    PlinthStack::start_with(DevServer::shared(), PLINTH.as_ref(), "10m", "24h")
        .expect("start the stack")
}

/// The stack the tests share, a payments namespace nobody changes and one of another team.
struct Fixture {
    stack: PlinthStack,
    seeded: Namespace,
    search: Namespace,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let stack = stack().shared().unwrap();
        let seeded = Namespace::provision(&stack, PAYMENTS_MEMBER, "acc", PAYMENTS_TEAM);
        let search = Namespace::provision(&stack, ADMIN, "acc-search", SEARCH_TEAM);
        Fixture {
            stack,
            seeded,
            search,
        }
    })
}

/// A Namespace resource, its Temporal namespace and the policies of its writers and readers.
struct Namespace {
    name: &'static str,
    temporal: String,
    writers: String,
    readers: String,
}

impl Namespace {
    /// Provisions `name` for `owner` as `user`, with 7 days' retention.
    fn provision(stack: &PlinthStack, user: &str, name: &'static str, owner: &str) -> Namespace {
        let temporal = format!("{name}-{}", std::process::id());
        let namespace = Namespace {
            name,
            writers: format!("TEMPORAL-ns-{temporal}"),
            readers: format!("TEMPORAL-ns-{temporal}-readers"),
            temporal,
        };
        namespace.apply(stack, user, owner, 7);
        namespace
    }

    /// Applies the resource as `user` and waits until it is provisioned.
    fn apply(&self, stack: &PlinthStack, user: &str, owner: &str, retention: u32) {
        let yaml = namespace_yaml(
            self.name,
            &self.temporal,
            owner,
            retention,
            "  allowDeletion: true\n",
        );
        ok(stack.apply_as(user, &yaml, &["--wait"]));
    }
}

/// An editor's rules: the payments team (with its nested on-call group) writes, a user reads.
/// Returns what adding the first printed.
fn add_rules(stack: &PlinthStack, namespace: &Namespace) -> Output {
    let added = ok(stack.plinth_as(
        PAYMENTS_MEMBER,
        &[
            "policy",
            "add-rule",
            &namespace.writers,
            "--group",
            PAYMENTS_TEAM,
        ],
    ));
    ok(stack.plinth_as(
        PAYMENTS_MEMBER,
        &[
            "policy",
            "add-rule",
            &namespace.readers,
            "--user",
            "Mallory@Example.com",
        ],
    ));
    added
}

/// The access [`add_rules`] grants under the stack's first directory.
fn team_access() -> Vec<(String, String)> {
    grants(&[
        ("user:alice@example.com", "write"),
        ("user:bob@example.com", "write"),
        ("user:frank@example.com", "write"),
        ("user:mallory@example.com", "read"),
    ])
}

/// `identity → access` of the namespace's effective access list, and its last run.
fn access(stack: &PlinthStack, namespace: &str) -> (Vec<(String, String)>, Value) {
    let list = stack.get_json(&["access", namespace]);
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

/// The first run to report after `previous` that started after `since`: runs may overlap, so
/// one started earlier (and planned from what was in force then) can report later.
fn run_started_after(
    stack: &PlinthStack,
    namespace: &str,
    previous: &Value,
    since: SystemTime,
) -> Value {
    let mut run = previous.clone();
    loop {
        run = next_run(stack, namespace, &run);
        if started(stack, &run) > since {
            return run;
        }
    }
}

/// When access run `run` started.
fn started(stack: &PlinthStack, run: &Value) -> SystemTime {
    stack.started(run["workflowId"].as_str().expect("a run"))
}

/// Waits until the namespace has `expected` and a finished run found all of it in place, and
/// returns that run. Runs may overlap: one started before it can still report after it.
fn settled(stack: &PlinthStack, namespace: &str, expected: &[(String, String)]) -> Value {
    let mut run = Value::Null;
    wait_for("a run that found the access in place", || {
        let (now, last) = access(stack, namespace);
        run = last;
        now == expected && count(&run, "unchanged") == expected.len() as i64
    });
    run
}

#[test]
fn a_new_namespace_has_policies_owned_by_the_admins_and_edited_by_its_owner_group() {
    let Fixture { stack, seeded, .. } = fixture();
    for (name, level) in [(&seeded.writers, "write"), (&seeded.readers, "read")] {
        let policy = stack.get_json(&["policy", name]);
        assert_eq!(policy["owner"], "temporal-dev", "{policy}");
        assert_eq!(policy["editors"], serde_json::json!([PAYMENTS_TEAM]));
        assert_eq!(policy["access"], level);
        assert_eq!(policy["namespace"], seeded.temporal.as_str());
        assert!(rules(&policy).is_empty(), "{policy}");
    }
}

#[test]
fn an_editors_rules_grant_write_to_the_group_with_its_nested_group_and_read_to_the_user() {
    let Fixture { stack, .. } = fixture();
    let namespace = Namespace::provision(stack, PAYMENTS_MEMBER, "acc-rules", PAYMENTS_TEAM);
    let added = add_rules(stack, &namespace);
    assert!(stdout(&added).contains("added to"), "{}", text(&added));
    // A run publishes its summary after its changes: the access may show before "last run".
    let table = || {
        stdout(&ok(
            stack.plinth_as(OUTSIDER, &["get", "access", &namespace.temporal])
        ))
    };
    // The table that showed both: a run the next rule starts hides "last run" while it runs.
    let mut shown = String::new();
    wait_for("access from the new rules, and its run", || {
        shown = table();
        access(stack, &namespace.temporal).0 == team_access() && shown.contains("last run")
    });
    let table = shown;
    assert!(
        table.contains("user:bob@example.com") && table.contains("last run"),
        "{table}"
    );
}

#[test]
fn reprovisioning_a_namespace_leaves_the_editors_rules_alone() {
    let Fixture { stack, .. } = fixture();
    let namespace = Namespace::provision(stack, PAYMENTS_MEMBER, "acc-respec", PAYMENTS_TEAM);
    add_rules(stack, &namespace);
    namespace.apply(stack, PAYMENTS_MEMBER, PAYMENTS_TEAM, 8);
    let resource = stack.get_json(&["namespace", namespace.name]);
    let update = &resource["status"]["events"][0];
    assert_eq!(update["message"], "retention 7d → 8d", "{resource}");
    assert_eq!(
        rules(&stack.get_json(&["policy", &namespace.writers])).len(),
        1
    );
    assert_eq!(
        rules(&stack.get_json(&["policy", &namespace.readers]))[0]["user"],
        "mallory@example.com"
    );
}

#[test]
fn only_editors_and_admins_change_rules_and_only_of_their_own_namespaces() {
    // Attempts go to the other team's namespace, so a wrongly allowed one changes nothing
    // another test reads.
    let Fixture { stack, search, .. } = fixture();
    let denied = stack.plinth_as(
        OUTSIDER,
        &["policy", "add-rule", &search.writers, "--user", OUTSIDER],
    );
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("may not add a rule to policy"),
        "{}",
        text(&denied)
    );
    let foreign = stack.plinth_as(
        PAYMENTS_MEMBER,
        &[
            "policy",
            "add-rule",
            &search.writers,
            "--group",
            PAYMENTS_TEAM,
        ],
    );
    assert!(!foreign.status.success());
    assert!(stderr(&foreign).contains("may not"), "{}", text(&foreign));
}

#[test]
fn a_rule_naming_a_group_not_in_the_directory_is_refused() {
    let Fixture { stack, search, .. } = fixture();
    let bad = stack.plinth_as(
        ADMIN,
        &["policy", "add-rule", &search.writers, "--group", "nope"],
    );
    assert!(stderr(&bad).contains("rule.group"), "{}", text(&bad));
}

#[test]
fn removing_a_rule_the_policy_does_not_have_is_refused_by_name() {
    let Fixture { stack, seeded, .. } = fixture();
    let absent = stack.plinth_as(
        PAYMENTS_MEMBER,
        &["policy", "remove-rule", &seeded.readers, "--user", OUTSIDER],
    );
    assert!(
        stderr(&absent).contains("has no rule user:mallory@example.com"),
        "{}",
        text(&absent)
    );
}

#[test]
fn the_editors_follow_a_namespace_to_its_new_owner_group_and_the_rules_stay() {
    let Fixture { stack, .. } = fixture();
    let namespace = Namespace::provision(stack, PAYMENTS_MEMBER, "acc-moved", PAYMENTS_TEAM);
    add_rules(stack, &namespace);
    namespace.apply(stack, ADMIN, SEARCH_TEAM, 7);
    let policy = stack.get_json(&["policy", &namespace.writers]);
    assert_eq!(
        policy["editors"],
        serde_json::json!([SEARCH_TEAM]),
        "{policy}"
    );
    assert_eq!(rules(&policy).len(), 1, "{policy}");
    let former = stack.plinth_as(
        PAYMENTS_MEMBER,
        &["policy", "add-rule", &namespace.writers, "--app", "billing"],
    );
    assert!(stderr(&former).contains("may not"), "{}", text(&former));
}

#[test]
fn a_namespaces_access_schedule_is_created_and_deleted_with_it() {
    let Fixture { stack, search, .. } = fixture();
    let namespace = Namespace::provision(stack, PAYMENTS_MEMBER, "acc-gone", PAYMENTS_TEAM);
    let schedule = format!("users/{}", namespace.temporal);
    let listed = schedules(stack);
    assert!(listed.contains(&schedule), "{listed}");
    ok(stack.plinth_as(ADMIN, &["delete", "namespace", namespace.name, "--wait"]));
    let listed = schedules(stack);
    assert!(!listed.contains(&schedule), "{listed}");
    assert!(
        listed.contains(&format!("users/{}", search.temporal)),
        "{listed}"
    );
}

/// The `temporal` CLI's JSON answer to `args` in the control plane's namespace.
fn temporal_json(stack: &PlinthStack, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--namespace", &stack.control_namespace, "-o", "json"]);
    let output = ok(temporal(&all, &stack.temporal_address));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// `temporal schedule describe` of the namespace's access schedule.
fn access_schedule(stack: &PlinthStack, namespace: &Namespace) -> Value {
    let schedule = format!("users/{}", namespace.temporal);
    temporal_json(stack, &["schedule", "describe", "--schedule-id", &schedule])
}

fn run_queue(schedule: &Value) -> &Value {
    &schedule["schedule"]["action"]["startWorkflow"]["taskQueue"]["name"]
}

#[test]
fn an_access_schedule_written_before_access_runs_had_their_own_queue_is_moved_to_it_once() {
    let Fixture { stack, .. } = fixture();
    let namespace = Namespace::provision(stack, PAYMENTS_MEMBER, "acc-older", PAYMENTS_TEAM);
    let schedule = format!("users/{}", namespace.temporal);
    let written = access_schedule(stack, &namespace);
    assert_eq!(run_queue(&written), "plinth-access", "{written}");
    // As a release before the access runs' queue wrote it: the same times and run, on the
    // queue every other workflow takes.
    let every = &written["schedule"]["spec"]["interval"][0];
    let interval = match every["phase"].as_str() {
        Some(phase) => format!("{}/{phase}", every["interval"].as_str().unwrap()),
        None => every["interval"].as_str().unwrap().to_owned(),
    };
    let start = &written["schedule"]["action"]["startWorkflow"];
    let input = serde_json::to_string(&namespace.temporal).unwrap();
    let args = [
        "schedule",
        "update",
        "--schedule-id",
        &schedule,
        "--namespace",
        &stack.control_namespace,
        "--interval",
        &interval,
        "--overlap-policy",
        "Skip",
        "--workflow-id",
        &schedule,
        "--type",
        start["workflowType"]["name"].as_str().unwrap(),
        "--task-queue",
        "plinth",
        "--input",
        &input,
    ];
    ok(temporal(&args, &stack.temporal_address));
    let older = access_schedule(stack, &namespace);
    assert_eq!(run_queue(&older), "plinth", "{older}");

    namespace.apply(stack, PAYMENTS_MEMBER, PAYMENTS_TEAM, 8);
    let moved = access_schedule(stack, &namespace);
    assert_eq!(run_queue(&moved), "plinth-access", "{moved}");
    assert_eq!(
        moved["schedule"]["spec"], written["schedule"]["spec"],
        "{moved}"
    );
    // Plinth's own upkeep, not a change to the resource: the status tells of the retention only.
    let resource = stack.get_json(&["namespace", namespace.name]);
    assert_eq!(
        resource["status"]["events"][0]["message"], "retention 7d → 8d",
        "{resource}"
    );
    // Its runs go on there (a run started before the move may still finish on the other).
    let moved_at = SystemTime::now();
    let last = access(stack, &namespace.temporal).1;
    let run = run_started_after(stack, &namespace.temporal, &last, moved_at);
    let id = run["workflowId"].as_str().expect("a run");
    let described = temporal_json(stack, &["workflow", "describe", "-w", id]);
    assert_eq!(
        described["executionConfig"]["taskQueue"]["name"], "plinth-access",
        "{described}"
    );
    // Once: the next reconcile finds it as asked and leaves it alone.
    namespace.apply(stack, PAYMENTS_MEMBER, PAYMENTS_TEAM, 9);
    let after = access_schedule(stack, &namespace);
    assert_eq!(
        after["info"]["updateTime"], moved["info"]["updateTime"],
        "{after}"
    );
}

#[test]
fn a_new_namespace_nobody_holds_access_to_starts_no_run_until_a_change_asks() {
    let stack = daily_runs_stack();
    let namespace = Namespace::provision(&stack, PAYMENTS_MEMBER, "acc-quiet", PAYMENTS_TEAM);
    let ns = &namespace.temporal;
    let rule = ["policy", "add-rule", &namespace.readers, "--user", OUTSIDER];
    ok(stack.plinth_as(PAYMENTS_MEMBER, &rule));
    let read = grants(&[("user:mallory@example.com", "read")]);
    wait_for("the rule's run", || {
        let (now, run) = access(&stack, ns);
        now == read && !run.is_null()
    });
    // The rule's run is the schedule's only one: none started when it was created.
    let schedule = access_schedule(&stack, &namespace);
    let actions = schedule["info"]["recentActions"].as_array();
    assert_eq!(actions.map(Vec::len), Some(1), "{schedule}");
}

#[test]
fn a_namespace_adopted_with_access_already_in_it_is_reconciled_at_once() {
    let stack = daily_runs_stack();
    let temporal_name = format!("acc-adopted-{}", std::process::id());
    // Access given in the namespace before Plinth managed it, which no policy gives.
    let create = [
        "operator",
        "namespace",
        "create",
        "--namespace",
        &temporal_name,
        "--data",
        "plinth.access/user:mallory@example.com=write",
    ];
    ok(temporal(&create, &stack.temporal_address));
    let namespace = Namespace::provision(&stack, PAYMENTS_MEMBER, "acc-adopted", PAYMENTS_TEAM);
    assert_eq!(namespace.temporal, temporal_name);
    wait_for("mallory's access to go", || {
        let (now, run) = access(&stack, &temporal_name);
        now.is_empty() && !run.is_null()
    });
    let run = access(&stack, &temporal_name).1;
    assert_eq!(count(&run, "revoked"), 1, "{run}");
}

#[test]
fn people_who_leave_the_company_or_a_group_lose_access_on_the_next_run() {
    let stack = stack();
    let namespace = Namespace::provision(&stack, PAYMENTS_MEMBER, "acc-leavers", PAYMENTS_TEAM);
    let ns = &namespace.temporal;
    add_rules(&stack, &namespace);
    let before = settled(&stack, ns, &team_access());
    let moved = DIRECTORY
        .replace(
            "  - email: bob@example.com\n",
            "  - email: bob@example.com\n    status: departed\n",
        )
        .replace(", frank@example.com]", "]");
    let written = SystemTime::now();
    stack.write_directory(&moved).unwrap();
    let remaining = grants(&[
        ("user:alice@example.com", "write"),
        ("user:mallory@example.com", "read"),
    ]);
    // The change starts a run while scheduled ones keep coming, so the run that revokes can
    // be followed by another before it is read: every run seen after `before` is kept.
    let mut runs: Vec<Value> = Vec::new();
    wait_for("bob and frank to lose access", || {
        let (now, run) = access(&stack, ns);
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
        last = next_run(&stack, ns, &last);
        runs.push(last.clone());
    }
    let revoked: i64 = runs.iter().map(|run| count(run, "revoked")).sum();
    assert!(revoked <= 2, "{runs:?}");
    // Runs may overlap: one started before the change (planned from the old directory) can
    // report after it. None started since may grant again.
    let grants_nothing_again = |run: &Value| {
        let granted = count(run, "granted") + count(run, "changed") > 0;
        assert!(!granted || started(&stack, run) < written, "{run}");
    };
    for run in &runs {
        grants_nothing_again(run);
    }
    // The first run started once the revocation was seen finds nothing to do.
    let revoked_at = SystemTime::now();
    let mut quiet = next_run(&stack, ns, &last);
    while started(&stack, &quiet) < revoked_at {
        grants_nothing_again(&quiet);
        quiet = next_run(&stack, ns, &quiet);
    }
    assert_eq!(count(&quiet, "backendWrites"), 0, "{quiet}");
    assert_eq!(count(&quiet, "unchanged"), 2, "{quiet}");
}

/// Takes frank out of the payments team in the directory file, keeping the file's time and
/// size, as `cp -p` or `rsync -t` leave it: only `plinth directory reload` tells the worker.
fn take_frank_out_keeping_time_and_size(stack: &PlinthStack) {
    let path = stack.home().join("directory.yaml");
    let before = std::fs::metadata(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let moved = text.replace(", frank@example.com]", "]");
    assert_ne!(moved, text);
    let moved = format!("{moved}#{}\n", " ".repeat(text.len() - moved.len() - 2));
    let staged = stack.home().join("directory.yaml.copied");
    std::fs::write(&staged, &moved).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&staged)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    std::fs::rename(&staged, &path).unwrap();
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (after.modified().unwrap(), after.len()),
        (before.modified().unwrap(), before.len())
    );
}

/// The payments team's grants once frank is out.
fn team_access_without_frank() -> Vec<(String, String)> {
    grants(&[
        ("user:alice@example.com", "write"),
        ("user:bob@example.com", "write"),
        ("user:mallory@example.com", "read"),
    ])
}

/// Provisions `name` for the payments team, takes frank out of the directory keeping the
/// file's time and size, asks for a reload and waits for frank to lose access.
fn reload_takes_frank_out(stack: &PlinthStack, name: &'static str) {
    let namespace = Namespace::provision(stack, PAYMENTS_MEMBER, name, PAYMENTS_TEAM);
    let ns = &namespace.temporal;
    add_rules(stack, &namespace);
    wait_for("the team's access", || access(stack, ns).0 == team_access());
    take_frank_out_keeping_time_and_size(stack);
    ok(stack.plinth_as(ADMIN, &["directory", "reload"]));
    wait_for("frank to lose access", || {
        access(stack, ns).0 == team_access_without_frank()
    });
}

#[test]
fn a_reload_runs_access_though_the_file_keeps_its_time_and_size() {
    reload_takes_frank_out(&daily_runs_stack(), "acc-reload");
}

#[test]
fn a_reload_the_worker_failed_to_read_is_read_again() {
    // The proxy's read of the reload succeeds; the worker's first two fail, as a briefly
    // unreadable file would. Its runs must not go on granting by the version before.
    let mut stack = daily_runs_stack();
    stack.kill_worker();
    stack
        .start_worker_with(&[("PLINTH_FAULT_FAILED_RELOADS", "2")])
        .unwrap();
    reload_takes_frank_out(&stack, "acc-reread");
    let failed = stack
        .log("worker")
        .matches("directory reload asked for failed")
        .count();
    assert_eq!(failed, 2, "{}", stack.log("worker"));
}

#[test]
fn a_malformed_directory_is_refused_by_name_and_the_last_good_one_stays_in_force() {
    let stack = stack();
    let namespace = Namespace::provision(&stack, PAYMENTS_MEMBER, "acc-malformed", PAYMENTS_TEAM);
    let ns = &namespace.temporal;
    add_rules(&stack, &namespace);
    let before = settled(&stack, ns, &team_access());
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
    // Who is an admin still comes from the last good directory.
    let refused = stack.plinth_as(PAYMENTS_MEMBER, &["directory", "reload"]);
    assert!(
        stderr(&refused).contains("may not reload"),
        "{}",
        text(&refused)
    );
    // The worker reads the file every few seconds: once it has refused it, its runs still go
    // by the last good one.
    wait_for("the worker to report the bad file", || {
        stack.log("worker").contains("previous one stays in force")
    });
    let after = run_started_after(&stack, ns, &before, SystemTime::now());
    assert_eq!(count(&after, "backendWrites"), 0, "{after}");
    assert_eq!(access(&stack, ns).0, team_access());

    // Removing a rule takes effect at once too, with the groups of the last good directory.
    ok(stack.plinth_as(
        PAYMENTS_MEMBER,
        &[
            "policy",
            "remove-rule",
            &namespace.readers,
            "--user",
            OUTSIDER,
        ],
    ));
    wait_for("mallory's read access to go", || {
        access(&stack, ns).0
            == grants(&[
                ("user:alice@example.com", "write"),
                ("user:bob@example.com", "write"),
                ("user:frank@example.com", "write"),
            ])
    });
}
